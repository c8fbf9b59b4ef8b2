/**
 * The pure parts of the end-to-end suite (`deno task e2e`): the pinned
 * versions, the cluster walkthroughs of docs/walkthroughs.md as commands, the binomial
 * bound for the traffic-shifting split, and reading the client's JSON. They
 * are unit-tested with the other tests; the suite itself needs Docker and
 * kind (e2e/run.ts).
 *
 * @module
 */
import { parseArgs } from "node:util";

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

/** The sections of {@linkcode WALKTHROUGH_PAGE} whose commands the suite runs, in order. */
export const WALKTHROUGH_SECTIONS = [
  "## Any cluster: v1 and v2 behind one Service",
  "## Istio: port 31400 reaches v1, port 31401 reaches v2",
  "## Istio with the Kubernetes Gateway API",
  "## TLS passthrough and SNI routing",
  "## Istio's TCP Traffic Shifting task, with this image",
  "## Istio's Authorization for TCP traffic task, with this image",
  "## Ambient mode: L4 policy, a waypoint and an 80/20 TCPRoute",
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
 * The commands of one section (`## ` heading to the next) of a Markdown page's
 * `sh` and `console` blocks, as {@linkcode walkthroughCommands} reads them.
 */
export function sectionCommands(page: string, section: string): string[] {
  const start = page.indexOf(`\n${section}\n`);
  if (start < 0) throw new Error(`the page has no section "${section}"`);
  const end = page.indexOf("\n## ", start + section.length + 2);
  const text = page.slice(start, end < 0 ? undefined : end);
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
