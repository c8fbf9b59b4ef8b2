/**
 * The pure parts of the end-to-end suite (`deno task e2e`): the pinned
 * versions, the cluster walkthroughs of docs/walkthroughs.md as commands, the binomial
 * bound for the traffic-shifting split, reading the client's JSON, and judging
 * what a hold saw against what the page says of open connections. They
 * are unit-tested with the other tests; the suite itself needs Docker and
 * kind (e2e/run.ts).
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { HeldRecord, HoldEnding, HoldReport } from "../client/hold_record.ts";
import { parseDuration } from "../src/wire.ts";

/** The Gateway API's release channels: which CRDs and versions an install serves. */
export type GatewayApiChannel = "standard" | "experimental";

/** One Istio release the suite runs against, and the Gateway API channel it needs. */
export interface IstioPin {
  /** Istio's release, e.g. `1.31.1`. */
  readonly version: string;
  /**
   * The channel installed with it: `standard` where Istio reads the routes at
   * `v1`; `experimental` where it reads them only at `v1alpha2`, which that
   * channel still serves.
   */
  readonly gatewayApiChannel: GatewayApiChannel;
}

/** The versions the suite installs, from e2e/versions.json: the one place they are pinned. */
export interface Versions {
  /** kind's release, e.g. `v0.33.0`. */
  readonly kind: string;
  /** The node image of that kind release, with its digest, as its release notes list it. */
  readonly kindNodeImage: string;
  /** The Gateway API release whose CRDs are installed. */
  readonly gatewayApi: string;
  /** The Istio releases, newest first: the first is the default, each is a run of its own. */
  readonly istio: readonly IstioPin[];
}

const VERSION_PATTERNS: Record<"kind" | "kindNodeImage" | "gatewayApi", RegExp> = {
  kind: /^v\d+\.\d+\.\d+$/,
  kindNodeImage: /^kindest\/node:v\d+\.\d+\.\d+@sha256:[0-9a-f]{64}$/,
  gatewayApi: /^v\d+\.\d+\.\d+$/,
};

/** Reads and checks the pinned versions; throws naming the first bad one. */
export function parseVersions(text: string): Versions {
  const value = JSON.parse(text);
  const bad = (key: string, found: unknown) =>
    new Error(`e2e/versions.json: ${key} is ${JSON.stringify(found)}`);
  for (const [key, pattern] of Object.entries(VERSION_PATTERNS)) {
    if (typeof value[key] !== "string" || !pattern.test(value[key])) throw bad(key, value[key]);
  }
  if (!Array.isArray(value.istio) || value.istio.length === 0) throw bad("istio", value.istio);
  for (const [i, pin] of value.istio.entries()) {
    if (typeof pin?.version !== "string" || !/^\d+\.\d+\.\d+$/.test(pin.version)) {
      throw bad(`istio[${i}].version`, pin?.version);
    }
    if (pin.gatewayApiChannel !== "standard" && pin.gatewayApiChannel !== "experimental") {
      throw bad(`istio[${i}].gatewayApiChannel`, pin.gatewayApiChannel);
    }
  }
  return {
    kind: value.kind,
    kindNodeImage: value.kindNodeImage,
    gatewayApi: value.gatewayApi,
    istio: value.istio.map(({ version, gatewayApiChannel }: IstioPin) => ({
      version,
      gatewayApiChannel,
    })),
  };
}

/** The suite's command line, read; throws a one-line message for bad usage. */
export function parseE2eArgs(
  args: readonly string[],
  versions: Versions,
): { help: true } | { help: false; keep: boolean; istio: IstioPin } {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...args],
      options: {
        keep: { type: "boolean" },
        istio: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    throw new Error((error as Error).message.split("\n")[0]);
  }
  if (values.help) return { help: true };
  const pinned = versions.istio.map((pin) => pin.version);
  const istio = values.istio === undefined
    ? versions.istio[0]
    : versions.istio.find((pin) => pin.version === values.istio);
  if (istio === undefined) {
    throw new Error(`--istio takes a pinned release (${pinned.join(", ")}), not ${values.istio}`);
  }
  return { help: false, keep: values.keep ?? false, istio };
}

/** Where the Gateway API release publishes one channel's CRDs in one file. */
export function gatewayApiInstallUrl(release: string, channel: GatewayApiChannel): string {
  return `https://github.com/kubernetes-sigs/gateway-api/releases/download/${release}/${channel}-install.yaml`;
}

/** The page whose walkthrough commands the suite runs, from the repository's root. */
export const WALKTHROUGH_PAGE = "docs/walkthroughs.md";

/** The section of {@linkcode WALKTHROUGH_PAGE} whose subsections hold connections through a change. */
export const OPEN_CONNECTIONS_SECTION = "## What happens to open connections";

/**
 * The sections of {@linkcode WALKTHROUGH_PAGE} whose commands the suite runs,
 * in the order it runs them. The subsections of
 * {@linkcode OPEN_CONNECTIONS_SECTION} each run where the cluster is as they
 * need it: the first two while the ingress gateway is there (the ambient
 * profile removes it), the last after the ambient walkthrough.
 */
export const WALKTHROUGH_SECTIONS = [
  "## Any cluster: v1 and v2 behind one Service",
  "## Istio: port 31400 reaches v1, port 31401 reaches v2",
  "### Through a rollout restart",
  "## Istio with the Kubernetes Gateway API",
  "## TLS passthrough and SNI routing",
  "## Istio's TCP Traffic Shifting task, with this image",
  "### Through a traffic shift",
  "## Istio's Authorization for TCP traffic task, with this image",
  "## Ambient mode: L4 policy, a waypoint and an 80/20 TCPRoute",
  "### Through a ztunnel restart",
] as const;

/**
 * The commands of the page's cluster walkthroughs: every line of their
 * `sh` and `console` blocks that is a command (a `$ ` prompt in console
 * blocks; every line in sh blocks), without the prompt, trailing comments and
 * continuation lines joined.
 */
export function walkthroughCommands(page: string): string[] {
  return WALKTHROUGH_SECTIONS.flatMap((section) => sectionCommands(page, section));
}

/**
 * One section of a Markdown page: from its heading line, `section` as written
 * (`## ` or `### `…), to the next heading of its level or above. A line in a
 * code block is no heading (`# a comment` in a shell block).
 */
function sectionText(page: string, section: string): string {
  const level = /^(#+) /.exec(section)?.[1].length;
  if (level === undefined) throw new Error(`"${section}" is not a heading`);
  const lines = page.split("\n");
  const start = lines.indexOf(section);
  if (start < 0) throw new Error(`the page has no section "${section}"`);
  let fenced = false;
  for (let i = start + 1; i < lines.length; i++) {
    if (lines[i].startsWith("```")) fenced = !fenced;
    const hashes = fenced ? undefined : /^(#+) /.exec(lines[i])?.[1];
    if (hashes !== undefined && hashes.length <= level) return lines.slice(start, i).join("\n");
  }
  return lines.slice(start).join("\n");
}

/**
 * The commands of one section (its heading to the next of its level or
 * above, subsections included) of a Markdown page's `sh` and `console`
 * blocks, as {@linkcode walkthroughCommands} reads them.
 */
export function sectionCommands(page: string, section: string): string[] {
  const text = sectionText(page, section);
  const commands: string[] = [];
  for (const [, kind, body] of text.matchAll(/```(sh|console)\n([\s\S]*?)```/g)) {
    commands.push(...blockCommands(kind as "sh" | "console", body));
  }
  return commands;
}

function blockCommands(kind: "sh" | "console", body: string): string[] {
  const commands: string[] = [];
  let pending: string | undefined;
  for (const line of body.split("\n")) {
    if (pending !== undefined) {
      pending += " " + line.trim();
    } else if (kind === "console" && line.startsWith("$ ")) {
      pending = line.slice(2);
    } else if (kind === "sh" && line.trim() !== "" && !line.startsWith("#")) {
      pending = line;
    } else continue;
    if (pending.endsWith("\\")) {
      pending = pending.slice(0, -1).trimEnd();
      continue;
    }
    commands.push(pending.replace(/\s+#.*$/, "").trim());
    pending = undefined;
  }
  return commands;
}

/** log of n choose k, for the binomial bound. */
function logChoose(n: number, k: number): number {
  let sum = 0;
  for (let i = 1; i <= k; i++) sum += Math.log(n - k + i) - Math.log(i);
  return sum;
}

/**
 * The counts a correct split may give: with `n` independent probes each
 * reaching the version with probability `p`, the count falls outside
 * `[low, high]` with probability at most `failureRate` (half below, half
 * above). The suite fails a mesh whose count is outside.
 *
 * @example
 * ```ts
 * binomialBounds(200, 0.2, 0.001); // { low: 22, high: 59 }
 * ```
 */
export function binomialBounds(
  n: number,
  p: number,
  failureRate: number,
): { low: number; high: number } {
  const pmf = Array.from(
    { length: n + 1 },
    (_, k) => Math.exp(logChoose(n, k) + k * Math.log(p) + (n - k) * Math.log1p(-p)),
  );
  const tail = failureRate / 2;
  let low = 0;
  for (let below = 0; below + pmf[low] <= tail; low++) below += pmf[low];
  let high = n;
  for (let above = 0; above + pmf[high] <= tail; high--) above += pmf[high];
  return { low, high };
}

/** What the suite reads of `tcp-echo client … --json` (probe). */
export interface ProbeSummary {
  /** Connections that echoed correctly. */
  readonly succeeded: number;
  /** Connections made. */
  readonly connections: number;
  /** Who answered: the banner's version (or `(no banner)`) and how often. */
  readonly versions: Readonly<Record<string, number>>;
  /** Failures by reason. */
  readonly failures: Readonly<Record<string, number>>;
}

/** Reads the client's probe report (its last line of output is the JSON object). */
export function parseProbeReport(stdout: string): ProbeSummary {
  const line = stdout.trim().split("\n").at(-1) ?? "";
  const report = JSON.parse(line);
  if (typeof report.succeeded !== "number" || !Array.isArray(report.answeredBy)) {
    throw new Error(`not a probe report: ${line.slice(0, 200)}`);
  }
  const versions: Record<string, number> = {};
  for (const { server, count } of report.answeredBy) {
    const version = /version (\S+?)(,|$)/.exec(server)?.[1] ?? server;
    versions[version] = (versions[version] ?? 0) + count;
  }
  return {
    succeeded: report.succeeded,
    connections: report.connections,
    versions,
    failures: report.failures ?? {},
  };
}

// ---------------------------------------------------------------------------
// Holds: what became of open connections
// ---------------------------------------------------------------------------

/** A change a walkthrough makes while a hold runs, written `sleep N && COMMAND &`. */
export interface DelayedChange {
  /** How long after it is started the change is made (N seconds). */
  readonly delayMs: number;
  /** The change. */
  readonly command: string;
}

/**
 * The one `sleep N && COMMAND &` among a section's commands: the change made
 * while the hold that follows it runs. Throws unless there is exactly one.
 *
 * @example
 * ```ts
 * delayedChange(["sleep 10 && kubectl rollout restart deployment/tcp-echo-v1 &"]);
 * // { delayMs: 10_000, command: "kubectl rollout restart deployment/tcp-echo-v1" }
 * ```
 */
export function delayedChange(commands: readonly string[]): DelayedChange {
  const changes = commands.flatMap((line) => {
    const match = /^sleep (\d+) && (.+) &$/.exec(line);
    return match ? [{ delayMs: Number(match[1]) * 1_000, command: match[2] }] : [];
  });
  if (changes.length !== 1) {
    throw new Error(
      `expected one "sleep N && COMMAND &" among the commands, found ${changes.length}`,
    );
  }
  return changes[0];
}

/** Reads the client's hold report (`hold --json`: one JSON object, its last line of output). */
export function parseHoldReport(stdout: string): HoldReport {
  const line = stdout.trim().split("\n").at(-1) ?? "";
  let report;
  try {
    report = JSON.parse(line);
  } catch {
    report = undefined;
  }
  if (
    report?.command !== "hold" || !Array.isArray(report.connections) ||
    !Array.isArray(report.backends)
  ) {
    throw new Error(`not a hold report: ${line.slice(0, 200)}`);
  }
  return report as HoldReport;
}

/**
 * How long a pod of a Deployment of the base manifests goes on after SIGTERM
 * before tcp-echo closes the connections still open: its `DRAIN_DELAY` plus
 * its `SHUTDOWN_GRACE`, read from the manifest's documents.
 */
export function drainMs(documents: readonly unknown[], deployment: string): number {
  const found = documents.find((document) => {
    const { kind, metadata } = document as { kind?: string; metadata?: { name?: string } };
    return kind === "Deployment" && metadata?.name === deployment;
  }) as
    | {
      spec: { template: { spec: { containers: { env?: { name: string; value?: string }[] }[] } } };
    }
    | undefined;
  if (found === undefined) throw new Error(`no Deployment ${deployment}`);
  const env = found.spec.template.spec.containers.flatMap((container) => container.env ?? []);
  let total = 0;
  for (const name of ["DRAIN_DELAY", "SHUTDOWN_GRACE"]) {
    const text = env.find((variable) => variable.name === name)?.value;
    const ms = text === undefined ? undefined : parseDuration(text);
    if (ms === undefined) throw new Error(`${deployment}: ${name} is ${JSON.stringify(text)}`);
    total += ms;
  }
  return total;
}

/** How a held connection ends when a peer on its path closes it: EOF or a reset. */
const CLOSED_BY_PEER: readonly HoldEnding[] = ["fin", "rst"];

/** Connections whose ends lie further apart than this did not end together. */
const TOGETHER_MS = 5_000;

function seconds(ms: number): string {
  return `${(ms / 1_000).toFixed(1)} s`;
}

/** A connection as a failure names it: its place, its generation, where it landed. */
function label(record: HeldRecord): string {
  const replacement = record.generation > 0 ? ` (replacement ${record.generation})` : "";
  return `connection ${record.slot}${replacement} on ${record.backend}`;
}

/** What every hold must show: nothing echoed wrong, every first connection opened. */
function judgeIntegrity(report: HoldReport): string[] {
  const failures: string[] = [];
  if (report.integrityFailures > 0) failures.push(`${report.integrityFailures} wrong echoes`);
  const first = report.connections.filter((record) => record.generation === 0).length;
  if (first < report.settings.connections) {
    failures.push(`${first} of ${report.settings.connections} connections opened`);
  }
  return failures;
}

/** A connection that must have ended by a peer's close, and not before `notBeforeMs`. */
function judgeEnded(record: HeldRecord, notBeforeMs: number): string | undefined {
  if (record.end === null) return `${label(record)} was still open at the end`;
  if (!CLOSED_BY_PEER.includes(record.end.reason)) {
    return `${label(record)} ended by ${record.end.reason}: ${record.end.detail}`;
  }
  if (record.end.atMs < notBeforeMs) {
    return `${label(record)} ended at ${seconds(record.end.atMs)}, before ${seconds(notBeforeMs)}`;
  }
  return undefined;
}

/**
 * Judges a hold (with `--reconnect`) through a rollout restart of the
 * Deployment of `version`, as the page states it: every connection on the
 * restarted pods ended by FIN or RST, no sooner than `notBeforeMs` (the
 * restart, then the pod's drain) and all within {@linkcode TOGETHER_MS} of
 * each other; every connection elsewhere, the replacements too, is open at
 * the end; no replacement landed on a restarted pod; every place had a
 * connection at the end. Returns what is not so (nothing: all as stated).
 */
export function judgeRolloutHold(
  report: HoldReport,
  expected: { readonly version: string; readonly notBeforeMs: number },
): string[] {
  const failures = judgeIntegrity(report);
  const restarted = new Set(
    report.connections
      .filter((record) => record.generation === 0 && record.server.version === expected.version)
      .map((record) => record.backend),
  );
  if (restarted.size === 0) failures.push(`no connection landed on ${expected.version}`);
  const ends: number[] = [];
  for (const record of report.connections) {
    if (!restarted.has(record.backend)) {
      if (record.end !== null) {
        failures.push(
          `${label(record)} ended by ${record.end.reason} at ${seconds(record.end.atMs)}`,
        );
      }
      continue;
    }
    if (record.replaces !== undefined) {
      failures.push(`${label(record)}: a replacement on a restarted pod`);
    }
    const failure = judgeEnded(record, expected.notBeforeMs);
    if (failure !== undefined) failures.push(failure);
    if (record.end !== null) ends.push(record.end.atMs);
  }
  if (ends.length > 1 && Math.max(...ends) - Math.min(...ends) > TOGETHER_MS) {
    failures.push(
      `the restarted pods' connections ended from ${seconds(Math.min(...ends))} to ` +
        `${seconds(Math.max(...ends))}, not together`,
    );
  }
  if (report.missingAtEnd > 0) {
    failures.push(`${report.missingAtEnd} places had no connection at the end`);
  }
  return failures;
}

/**
 * Judges a hold (without `--reconnect`) through a weight shift away from
 * `version`, as the page states it: every connection answered `version` and
 * was still open at `openUntilMs` (a weight shift moves no open connection);
 * one that ended later did so by FIN or RST (the proxy's drain of its old
 * listener); every `--expect` was met.
 */
export function judgeShiftHold(
  report: HoldReport,
  expected: { readonly version: string; readonly openUntilMs: number },
): string[] {
  const failures = judgeIntegrity(report);
  for (const record of report.connections) {
    if (record.server.version !== expected.version) {
      failures.push(`${label(record)}: not ${expected.version}`);
    }
    if (record.end === null) continue;
    const failure = judgeEnded(record, expected.openUntilMs);
    if (failure !== undefined) failures.push(failure);
  }
  for (const { expect, met, why } of report.expectations) {
    if (!met) failures.push(`--expect ${expect}: ${why}`);
  }
  return failures;
}

/**
 * Judges a hold (with `--reconnect`) through the restart of a proxy that
 * every connection passes (a node's ztunnel), as the page states it: every
 * first connection ended by FIN or RST, no sooner than `notBeforeMs` (the old
 * proxy serves them through its drain); every replacement is open at the end,
 * and every place had a connection at the end.
 */
export function judgeProxyRestartHold(
  report: HoldReport,
  expected: { readonly notBeforeMs: number },
): string[] {
  const failures = judgeIntegrity(report);
  for (const record of report.connections) {
    if (record.generation === 0) {
      const failure = judgeEnded(record, expected.notBeforeMs);
      if (failure !== undefined) failures.push(failure);
    } else if (record.end !== null) {
      failures.push(
        `${label(record)} ended by ${record.end.reason} at ${seconds(record.end.atMs)}`,
      );
    }
  }
  if (report.missingAtEnd > 0) {
    failures.push(`${report.missingAtEnd} places had no connection at the end`);
  }
  return failures;
}

/** One line per backend of a hold, for the suite's log: opened, open, and how the rest ended. */
export function holdSummary(report: HoldReport): string[] {
  return report.backends.map((row) => {
    const ended = Object.entries(row.ended).filter(([, count]) => count > 0)
      .map(([reason, count]) => `${count} ${reason}`);
    return `${row.backend}: ${row.opened} opened, ${row.open} open at the end` +
      (ended.length > 0 ? `, ended ${ended.join(", ")}` : "");
  });
}
