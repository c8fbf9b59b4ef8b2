/**
 * The pure parts of the end-to-end suite (`deno task e2e`): the pinned
 * versions, the cluster walkthroughs of docs/walkthroughs.md as commands, the binomial
 * bound for the traffic-shifting split, reading the client's JSON and the
 * servers' open records, and judging what a hold, a UDP flow and a probe of
 * both families saw against what the page says. They are unit-tested with the
 * other tests; the suite itself needs Docker and kind (e2e/run.ts).
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { HeldRecord, HoldEnding, HoldReport } from "../client/hold_record.ts";
import type { UdpFlowReport } from "../client/udp_flow.ts";
import { parseBannerText, parseDuration } from "../src/wire.ts";

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

/** The section of {@linkcode WALKTHROUGH_PAGE} on UDP past the sidecars and one flow through a delete. */
export const UDP_MESH_SECTION = "## UDP in a mesh";

/** The section of {@linkcode WALKTHROUGH_PAGE} run on a dual-stack kind cluster of its own. */
export const DUAL_STACK_SECTION = "## Dual-stack: IPv4 and IPv6 end to end";

/**
 * The sections of {@linkcode WALKTHROUGH_PAGE} whose commands the suite runs,
 * in the order it runs them. The subsections of
 * {@linkcode OPEN_CONNECTIONS_SECTION} each run where the cluster is as they
 * need it: the first two while the ingress gateway is there (the ambient
 * profile removes it), the last after the ambient walkthrough.
 * {@linkcode UDP_MESH_SECTION} runs where the rollout restart leaves
 * `default` (sidecar injection, the base), before the Gateway API
 * walkthrough replaces the base; {@linkcode DUAL_STACK_SECTION} runs last, on
 * a cluster of its own (kind makes it kubectl's context).
 */
export const WALKTHROUGH_SECTIONS = [
  "## Any cluster: v1 and v2 behind one Service",
  "## Istio: port 31400 reaches v1, port 31401 reaches v2",
  "### Through a rollout restart",
  UDP_MESH_SECTION,
  "## Istio with the Kubernetes Gateway API",
  "## TLS passthrough and SNI routing",
  "## Istio's TCP Traffic Shifting task, with this image",
  "### Through a traffic shift",
  "## Istio's Authorization for TCP traffic task, with this image",
  "## Ambient mode: L4 policy, a waypoint and an 80/20 TCPRoute",
  "### Through a ztunnel restart",
  DUAL_STACK_SECTION,
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

/** Who answered, by the banner's version (or the row's text when it names none), and how often. */
function versionsAnswered(
  answeredBy: readonly { server: string; count: number }[],
): Record<string, number> {
  const versions: Record<string, number> = {};
  for (const { server, count } of answeredBy) {
    const version = /version (\S+?)(,|$)/.exec(server)?.[1] ?? server;
    versions[version] = (versions[version] ?? 0) + count;
  }
  return versions;
}

/** Reads the client's probe report (its last line of output is the JSON object). */
export function parseProbeReport(stdout: string): ProbeSummary {
  const line = stdout.trim().split("\n").at(-1) ?? "";
  const report = JSON.parse(line);
  if (typeof report.succeeded !== "number" || !Array.isArray(report.answeredBy)) {
    throw new Error(`not a probe report: ${line.slice(0, 200)}`);
  }
  return {
    succeeded: report.succeeded,
    connections: report.connections,
    versions: versionsAnswered(report.answeredBy),
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
  const found = findDeployment(documents, deployment);
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

/** The parts of a Deployment the suite reads from the base's manifest. */
interface DeploymentDocument {
  readonly spec: {
    readonly template: {
      readonly spec: {
        readonly terminationGracePeriodSeconds?: number;
        readonly containers: readonly { env?: { name: string; value?: string }[] }[];
      };
    };
  };
}

function findDeployment(documents: readonly unknown[], deployment: string): DeploymentDocument {
  const found = documents.find((document) => {
    const { kind, metadata } = document as { kind?: string; metadata?: { name?: string } };
    return kind === "Deployment" && metadata?.name === deployment;
  });
  if (found === undefined) throw new Error(`no Deployment ${deployment}`);
  return found as DeploymentDocument;
}

/**
 * How long a pod of a Deployment of the base manifests may take to stop
 * once deleted: its `terminationGracePeriodSeconds` (then the kubelet kills
 * what is left), read from the manifest's documents.
 */
export function terminationGraceMs(documents: readonly unknown[], deployment: string): number {
  const seconds = findDeployment(documents, deployment).spec.template.spec
    .terminationGracePeriodSeconds;
  if (typeof seconds !== "number") {
    throw new Error(`${deployment}: terminationGracePeriodSeconds is ${JSON.stringify(seconds)}`);
  }
  return seconds * 1_000;
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

// ---------------------------------------------------------------------------
// UDP and both families: probe reports, the servers' open records, one flow through a delete
// ---------------------------------------------------------------------------

/** An IP family, as the client's reports and the server's records name it. */
export type IpFamily = "IPv4" | "IPv6";

const FAMILIES: readonly IpFamily[] = ["IPv4", "IPv6"];

/** The family of an IP address in text (the server unmaps `::ffff:` addresses before it logs). */
function familyOf(address: string): IpFamily {
  return address.includes(":") ? "IPv6" : "IPv4";
}

/** The last line of a command's output, parsed as the JSON object the client prints there. */
function lastJsonLine(
  stdout: string,
  what: string,
): { line: string; value: Record<string, unknown> } {
  const line = stdout.trim().split("\n").at(-1) ?? "";
  let value;
  try {
    value = JSON.parse(line);
  } catch {
    value = undefined;
  }
  if (typeof value !== "object" || value === null) {
    throw new Error(`not ${what}: ${line.slice(0, 200)}`);
  }
  return { line, value };
}

/** What the suite reads of one probe report, TCP or UDP (`--json`; one family's of `-4 -6`). */
export interface ProbeCounts {
  /** `tcp` (connections) or `udp` (datagrams, each from a socket of its own). */
  readonly transport: "tcp" | "udp";
  /** The family `-4`/`-6` asked for; absent without them. */
  readonly family?: IpFamily;
  /** The IPs connected or sent to. */
  readonly addresses: readonly string[];
  /** Connections (TCP) or datagrams (UDP) sent. */
  readonly sent: number;
  /** Those echoed correctly. */
  readonly succeeded: number;
  /** Who answered: the banner's version (or `(no banner)`) and how often. */
  readonly versions: Readonly<Record<string, number>>;
  /** Failures by reason (`lost`, `mismatch`, `dns`, …). */
  readonly failures: Readonly<Record<string, number>>;
}

function probeCountsOf(report: Record<string, unknown>, line: string): ProbeCounts {
  const { transport, succeeded, answeredBy, addresses, family } = report;
  const sent = transport === "udp" ? report.datagrams : report.connections;
  if (
    (transport !== "tcp" && transport !== "udp") || typeof sent !== "number" ||
    typeof succeeded !== "number" || !Array.isArray(answeredBy) || !Array.isArray(addresses) ||
    (family !== undefined && family !== "IPv4" && family !== "IPv6")
  ) {
    throw new Error(`not a probe report: ${line.slice(0, 200)}`);
  }
  return {
    transport,
    ...(family === undefined ? {} : { family }),
    addresses,
    sent,
    succeeded,
    versions: versionsAnswered(answeredBy),
    failures: (report.failures ?? {}) as Record<string, number>,
  };
}

/** Reads one probe report, TCP or UDP (the client's last line of output with `--json`). */
export function parseProbeCounts(stdout: string): ProbeCounts {
  const { line, value } = lastJsonLine(stdout, "a probe report");
  return probeCountsOf(value, line);
}

/** Reads `probe -4 -6 --json`: one object with a report per family. */
export function parseFamilyProbes(stdout: string): Record<IpFamily, ProbeCounts> {
  const { line, value } = lastJsonLine(stdout, "a report per family");
  const families = value.families as Record<string, Record<string, unknown>> | undefined;
  if (typeof families?.IPv4 !== "object" || typeof families?.IPv6 !== "object") {
    throw new Error(`not a report per family: ${line.slice(0, 200)}`);
  }
  return { IPv4: probeCountsOf(families.IPv4, line), IPv6: probeCountsOf(families.IPv6, line) };
}

/** The `--count N` of a command of the page: how many connections or datagrams it sends. */
export function countOf(command: string): number {
  const match = / --count (\d+)(?: |$)/.exec(command);
  if (match === null) throw new Error(`no --count in: ${command}`);
  return Number(match[1]);
}

/** What a probe of the page must show: every one answered, over the family and to the address given. */
export interface AllAnswered {
  /** The report's transport: the page probed with `--udp` or without. */
  readonly transport: "tcp" | "udp";
  /** The page's `--count`. */
  readonly count: number;
  /** The family the probe must have used (`-4`/`-6`). */
  readonly family?: IpFamily;
  /** The one IP it must have gone to (a Service's ClusterIP of that family). */
  readonly address?: string;
}

/** Judges a probe against {@linkcode AllAnswered}; returns what is not so, each naming `what`. */
export function judgeAllAnswered(
  probe: ProbeCounts,
  expected: AllAnswered,
  what: string,
): string[] {
  const failures: string[] = [];
  const unit = probe.transport === "udp" ? "datagrams" : "connections";
  if (probe.transport !== expected.transport) {
    failures.push(`${what}: a ${probe.transport} report, not ${expected.transport}`);
  }
  if (probe.sent !== expected.count || probe.succeeded !== probe.sent) {
    const failed = Object.entries(probe.failures).map(([reason, n]) => `${n} ${reason}`);
    failures.push(
      `${what}: ${probe.succeeded} of ${probe.sent} ${unit} echoed correctly, expected ` +
        `${expected.count} of ${expected.count}${
          failed.length > 0 ? ` (${failed.join(", ")})` : ""
        }`,
    );
  }
  if (expected.family !== undefined && probe.family !== expected.family) {
    failures.push(`${what}: over ${probe.family ?? "either family"}, not ${expected.family}`);
  }
  if (expected.address !== undefined && probe.addresses.join() !== expected.address) {
    failures.push(
      `${what}: sent to ${probe.addresses.join(", ") || "no address"}, not ${expected.address}`,
    );
  }
  return failures;
}

/** A server's open record, a TCP connection's or a UDP flow's, as `kubectl logs` prints it. */
export interface OpenRecord {
  /** `tcp` for `TCP connection open.`, `udp` for `UDP flow open.` */
  readonly transport: "tcp" | "udp";
  /** The pod whose log it is (`kubectl logs --prefix`), when known. */
  readonly pod?: string;
  /** The address the server saw the client at, without brackets. */
  readonly clientIp: string;
  /** The client's port. */
  readonly clientPort: number;
  /** The server's port. */
  readonly port: number;
  /** The family the client used. */
  readonly family: IpFamily;
}

/**
 * An open record's line: `kubectl logs`' `[pod/NAME/CONTAINER] ` (with
 * `--prefix`) and the runtime's timestamp (with `--timestamps`), then the
 * server's date, time and id and the message. Anchored there, so that the text
 * of a data record (escaped, but the client's own) cannot pass for one.
 */
const OPEN_RECORD = new RegExp(
  String.raw`^(?:\[pod/([^/\]]+)/[^\]]*\] )?(?:\S+Z )?\d{4}/\d\d/\d\d \d\d:\d\d:\d\d ` +
    String.raw`[0-9a-f-]{36} - (TCP connection|UDP flow) open\. ` +
    String.raw`client=(\[[0-9a-fA-F:.]+\]|[0-9.]+):(\d+) port=(\d+) family=(IPv4|IPv6)(?: |$)`,
);

/** The open records among `kubectl logs` lines (text format, as the manifests log). */
export function parseOpenRecords(logs: string): OpenRecord[] {
  const records: OpenRecord[] = [];
  for (const line of logs.split("\n")) {
    const match = OPEN_RECORD.exec(line);
    if (match === null) continue;
    const [, pod, kind, client, clientPort, port, family] = match;
    records.push({
      transport: kind === "UDP flow" ? "udp" : "tcp",
      ...(pod === undefined ? {} : { pod }),
      clientIp: client.replace(/^\[|\]$/g, ""),
      clientPort: Number(clientPort),
      port: Number(port),
      family: family as IpFamily,
    });
  }
  return records;
}

/**
 * Where an app behind an Istio sidecar sees its TCP clients come from: the
 * sidecar ends each inbound connection and opens its own to the app from
 * this address, Istio's `InboundPassthroughBindIpv4` ("6 is the magical
 * number for inbound: 15006, 127.0.0.6, ::6", istio/istio
 * pilot/pkg/networking/core), bound so that its iptables rules let it pass;
 * with the default REDIRECT interception, which "loses source IP addresses"
 * (istio.io, ProxyConfig InboundInterceptionMode).
 */
export const SIDECAR_INBOUND_SOURCE = "127.0.0.6";

const RECORDED = { tcp: "TCP connections", udp: "UDP flows" } as const;

/**
 * Judges the servers' open records of a probe over TCP and one over UDP from
 * a pod in the mesh, as "UDP in a mesh" states: every UDP flow came from the
 * client pod's own address (no proxy on the way), every TCP connection from
 * {@linkcode SIDECAR_INBOUND_SOURCE} (the server's sidecar), at least `count`
 * of each. Returns what is not so (nothing: all as stated).
 */
export function judgeMeshRecords(
  records: readonly OpenRecord[],
  expected: { readonly clientIp: string; readonly count: number },
): string[] {
  const failures: string[] = [];
  const from = {
    udp: [expected.clientIp, "the client pod's own address"],
    tcp: [SIDECAR_INBOUND_SOURCE, "the server's sidecar"],
  } as const;
  for (const transport of ["udp", "tcp"] as const) {
    const seen = records.filter((record) => record.transport === transport);
    if (seen.length < expected.count) {
      failures.push(
        `${seen.length} ${RECORDED[transport]} open, expected at least ${expected.count}`,
      );
    }
    const [source, whose] = from[transport];
    const others = [...new Set(seen.map((r) => r.clientIp).filter((ip) => ip !== source))];
    if (others.length > 0) {
      failures.push(
        `${RECORDED[transport]} from ${others.join(", ")}, not only ${source} (${whose})`,
      );
    }
  }
  return failures;
}

/**
 * Judges the servers' open records of probes of both families from one pod,
 * as the dual-stack section states: over TCP and UDP, at least `count`
 * records of each family, each naming the client pod's address of that family.
 */
export function judgeFamilyRecords(
  records: readonly OpenRecord[],
  expected: { readonly clientIps: Readonly<Record<IpFamily, string>>; readonly count: number },
): string[] {
  const failures: string[] = [];
  for (const transport of ["tcp", "udp"] as const) {
    for (const family of FAMILIES) {
      const what = `${RECORDED[transport]} over ${family}`;
      const seen = records.filter((r) => r.transport === transport && r.family === family);
      if (seen.length < expected.count) {
        failures.push(`${seen.length} ${what} open, expected at least ${expected.count}`);
      }
      const source = expected.clientIps[family];
      const others = [...new Set(seen.map((r) => r.clientIp).filter((ip) => ip !== source))];
      if (others.length > 0) {
        failures.push(`${what} from ${others.join(", ")}, not the client pod's ${source}`);
      }
    }
  }
  return failures;
}

/** The parts of a Service the suite reads (`kubectl get service -o json`). */
export interface ServiceDocument {
  /** The Service's spec: its family policy, families and ClusterIPs. */
  readonly spec: {
    readonly ipFamilyPolicy?: string;
    readonly ipFamilies?: readonly string[];
    readonly clusterIPs?: readonly string[];
  };
}

/** Addresses by family: the first of each (a Service's `clusterIPs`, a pod's `podIPs`). */
export function byFamily(addresses: readonly string[]): Partial<Record<IpFamily, string>> {
  const found: Partial<Record<IpFamily, string>> = {};
  for (const address of addresses) found[familyOf(address)] ??= address;
  return found;
}

/**
 * Judges the dual-stack kit's Service on a dual-stack cluster:
 * `PreferDualStack`, and a ClusterIP of each family.
 */
export function judgeDualStackService(service: ServiceDocument): string[] {
  const failures: string[] = [];
  const { ipFamilyPolicy, ipFamilies = [], clusterIPs = [] } = service.spec;
  if (ipFamilyPolicy !== "PreferDualStack") {
    failures.push(`ipFamilyPolicy is ${ipFamilyPolicy ?? "unset"}, not PreferDualStack`);
  }
  const families = byFamily(clusterIPs);
  if (clusterIPs.length !== 2 || families.IPv4 === undefined || families.IPv6 === undefined) {
    failures.push(`clusterIPs are ${JSON.stringify(clusterIPs)}, not one of each family`);
  }
  if ([...ipFamilies].sort().join() !== FAMILIES.join()) {
    failures.push(`ipFamilies are ${JSON.stringify(ipFamilies)}, not IPv4 and IPv6`);
  }
  return failures;
}

/**
 * Judges a banner on a dual-stack cluster: its `With IP addresses` line
 * (`POD_IPS`, from `status.podIPs`) names the pod's addresses as the API
 * lists them, one of each family.
 */
export function judgeBannerAddresses(
  banner: string,
  podIps: readonly string[],
  what: string,
): string[] {
  const failures: string[] = [];
  const shown = parseBannerText(banner).ips;
  if (shown !== podIps.join(",")) {
    failures.push(
      `${what}: the banner says With IP addresses ${shown ?? "(no such line)"}, ` +
        `the pod has ${podIps.join(",")}`,
    );
  }
  if (new Set(podIps.map(familyOf)).size !== FAMILIES.length || podIps.length !== 2) {
    failures.push(`${what}: the pod's addresses ${podIps.join(",")} are not one of each family`);
  }
  return failures;
}

/** Reads the client's one-flow report (`probe --udp --one-flow --json`: its last line). */
export function parseFlowReport(stdout: string): UdpFlowReport {
  const { line, value } = lastJsonLine(stdout, "a one-flow report");
  if (
    value.oneFlow !== true || !Array.isArray(value.changes) || !Array.isArray(value.timeline) ||
    !Array.isArray(value.lostDatagrams)
  ) {
    throw new Error(`not a one-flow report: ${line.slice(0, 200)}`);
  }
  return value as unknown as UdpFlowReport;
}

/** The pod a backend's name (`version v1, pod P, node N`) names, if any. */
export function podOf(backend: string): string | undefined {
  return /(?:^|, )pod (\S+?)(?:,|$)/.exec(backend)?.[1];
}

/** The backend a flow's first echo counted for. */
export function firstAnswer(report: UdpFlowReport): string | undefined {
  return report.timeline.find((segment) => segment.outcome === "echoed")?.server;
}

/**
 * How long past a deleted pod's termination grace (when the kubelet kills
 * what is left) its endpoint may take to leave kube-proxy's conntrack
 * entries: the kubelet's status update, the EndpointSlice controller and
 * kube-proxy's next sync (at most one a second).
 */
export const ENDPOINT_REMOVAL_MS = 5_000;

/**
 * Judges a one-flow probe (`--udp --one-flow`) through the delete of the pod
 * answering it, as "UDP in a mesh" states: the answer changes once, from that
 * pod to another, no sooner than `notBeforeMs` (the delete) and no later than
 * `notAfterMs` (the pod gone and its endpoint out of kube-proxy's rules);
 * datagrams were lost, if at all, only between the two pods' answers and none
 * before the delete; none was answered wrong or failed to go; the new pod
 * answered after the change. Returns what is not so (nothing: all as stated).
 */
export function judgeFlowThroughDelete(
  report: UdpFlowReport,
  expected: { readonly notBeforeMs: number; readonly notAfterMs: number },
): string[] {
  const failures: string[] = [];
  if (report.integrityFailures > 0) {
    failures.push(`${report.integrityFailures} wrong datagrams (neither an echo nor a banner)`);
  }
  if (report.failed > 0) failures.push(`${report.failed} datagrams could not be sent`);
  const first = firstAnswer(report);
  if (first === undefined || podOf(first) === undefined) {
    failures.push(`the flow's first answer names no pod: ${first ?? "nothing was echoed"}`);
  }
  for (const segment of report.timeline) {
    if (segment.outcome === "lost" && segment.firstMs < expected.notBeforeMs) {
      failures.push(
        `datagram ${segment.first}, sent at ${seconds(segment.firstMs)}, was lost before the ` +
          `delete (${seconds(expected.notBeforeMs)})`,
      );
    }
  }
  if (report.changes.length !== 1) {
    failures.push(
      report.changes.length === 0
        ? `the answer never changed: every echo counted for ${first ?? "nobody"} (was its pod ` +
          "deleted?)"
        : `the answer changed ${report.changes.length} times: ` +
          report.changes.map((c) => `${c.from} → ${c.to} at ${seconds(c.atMs)}`).join("; "),
    );
    return failures;
  }
  const [change] = report.changes;
  if (change.from !== first) {
    failures.push(`the change is from ${change.from}, not from the first answer, ${first}`);
  }
  if (podOf(change.to) === undefined || podOf(change.to) === podOf(change.from)) {
    failures.push(`the flow went from ${change.from} to ${change.to}: not to another pod`);
  }
  if (change.atMs < expected.notBeforeMs) {
    failures.push(
      `the answer changed at ${seconds(change.atMs)}, before the delete ` +
        `(${seconds(expected.notBeforeMs)})`,
    );
  }
  if (change.atMs > expected.notAfterMs) {
    failures.push(
      `the answer changed at ${seconds(change.atMs)}, later than ${seconds(expected.notAfterMs)}`,
    );
  }
  if (change.datagram === undefined) failures.push("no datagram was echoed after the change");
  const between = new Set(change.lostBetween);
  const elsewhere = report.lostDatagrams.filter((n) => !between.has(n));
  if (elsewhere.length > 0) {
    failures.push(`datagrams lost away from the change: ${elsewhere.join(", ")}`);
  }
  return failures;
}
