/**
 * The client's command line: the options (one table that both `--help` and
 * the parser read), their defaults and checks, and usage errors of one line
 * that say how to get `--help` the way the client was started.
 *
 * @example
 * ```ts
 * import { clientCommand, parseClientArgs } from "./options.ts";
 *
 * parseClientArgs(["127.0.0.1:3333", "load", "--duration", "10s"]).durationMs; // 10_000
 * parseClientArgs(["127.0.0.1:3333", "hold", "--expect", "moved-to", "v2"]).expectations;
 * // [{ kind: "moved-to", version: "v2" }]
 * clientCommand("/tcp-echo"); // "tcp-echo client"
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";
import { DURATION_FORMS, formatDuration, parseDuration } from "../src/wire.ts";
import { familyName, type IpVersion, literalFamily } from "./family.ts";

/** What to measure and how. */
export interface ClientOptions {
  /** Where to connect. */
  readonly hostname: string;
  /** The port to connect to. */
  readonly port: number;
  /** Probe one connection at a time, load for a duration, or hold connections open. */
  readonly command: ClientCommand;
  /** probe and load: datagrams to a UDP port instead of TCP connections. */
  readonly udp: boolean;
  /** probe --udp: every datagram from one socket (one flow), one every `intervalMs`. */
  readonly oneFlow: boolean;
  /** `-4`, `-6`: the families to use (both: probe each); none: what the name resolves to. */
  readonly families: readonly IpVersion[];
  /** probe: connections (with `udp`: datagrams) in all. */
  readonly count: number;
  /** probe: connections (with `udp`: datagrams, each from its own socket) at a time. */
  readonly concurrency: number;
  /** Payload bytes (probe: per connection or datagram; load: per request or written chunk). */
  readonly size: number;
  /** probe: send this text instead of random bytes. */
  readonly message: string | undefined;
  /** The server answers each line as `PREFIX LINE` (tcp-echo's ECHO_PREFIX, Istio's server). */
  readonly prefix: string | undefined;
  /** load: connections kept busy; hold: connections held open. */
  readonly connections: number;
  /** load: how long; hold: how long at most (`Infinity`: until Ctrl-C). */
  readonly durationMs: number;
  /** load: request/response, streaming, or a new connection per operation. */
  readonly mode: LoadMode;
  /** Speak TLS, with these settings; `undefined` = plain TCP. */
  readonly tls: ClientTlsOptions | undefined;
  /** Per-operation timeout (connect, a whole probe, one load request, a hold heartbeat). */
  readonly timeoutMs: number;
  /** hold: every connection sends a heartbeat this often; probe --udp --one-flow: a datagram. */
  readonly intervalMs: number;
  /** hold: a heartbeat answered later than this is a stall. */
  readonly stallMs: number;
  /** hold: a lost connection is replaced by a new one. */
  readonly reconnect: boolean;
  /** hold: connections opened per second at most (replacements too). */
  readonly openRate: number;
  /** hold: what the exit code asserts (`--expect`, all of them). */
  readonly expectations: readonly Expectation[];
  /** Print one JSON object instead of the report for people. */
  readonly json: boolean;
  /** Thresholds that make the exit code 1 when missed. */
  readonly failUnder: Readonly<FailUnder>;
}

/** The commands, `probe` first (the default). */
export const CLIENT_COMMANDS = ["probe", "load", "hold"] as const;
/** `probe`, `load` or `hold`. */
export type ClientCommand = typeof CLIENT_COMMANDS[number];

/**
 * An `--expect` of hold: `no-loss`, `moved-to VERSION` or `stays-on
 * VERSION` (hold_record.ts judges them; `--help` says what each means).
 */
export type Expectation =
  | { readonly kind: "no-loss" }
  | { readonly kind: "moved-to" | "stays-on"; readonly version: string };

/** `--mode` values of `load`. */
export const LOAD_MODES = ["rr", "stream", "connect"] as const;
/** A `--mode` value. */
export type LoadMode = typeof LOAD_MODES[number];

/** `--tls` and the options that go with it. */
export interface ClientTlsOptions {
  /** `--sni`: the server name to send; default: the target's host name (none for an IP). */
  readonly serverName: string | undefined;
  /** `--alpn`: protocols to offer, comma-separated. */
  readonly alpn: readonly string[] | undefined;
  /** `--ca`: PEM file of the CAs to trust instead of the system's. */
  readonly caFile: string | undefined;
  /** `--cert`: PEM client certificate file. */
  readonly certFile: string | undefined;
  /** `--key`: PEM key file of `--cert`. */
  readonly keyFile: string | undefined;
  /** `--insecure`: accept any server certificate. */
  readonly insecure: boolean;
}

/** `--fail-under` thresholds. */
export interface FailUnder {
  /** Percentage of successful probe connections (default 100). */
  success?: number;
  /** load rr: operations per second. */
  ops?: number;
  /** load stream: megabytes (10^6) per second. */
  mbps?: number;
}

/** Bad command-line input; the message is one line. */
export class UsageError extends Error {
  /** Names the error in a stack trace. */
  override name = "UsageError";
}

/**
 * One option: the name of its value in `--help` (none for a switch), its
 * help (a `\n` continues it on the next line), and the commands it belongs
 * to, if not all.
 */
interface Flag {
  readonly short?: string;
  readonly value?: string;
  readonly help: string;
  readonly only?: readonly ClientCommand[];
}

/** Every option, in `--help` order. */
const FLAGS = {
  udp: {
    help: "probe and load a UDP port (tcp-echo: UDP_PORT) with datagrams",
    only: ["probe", "load"],
  },
  "one-flow": {
    help: "probe --udp: every datagram from one source port, one each\n" +
      "--interval, to see which backend answers and when that changes",
    only: ["probe"],
  },
  ipv4: { short: "4", help: "IPv4 only: a name's IPv4 address (getaddrinfo, /etc/hosts too)" },
  ipv6: {
    short: "6",
    help: "IPv6 only; probe -4 -6: each family, a report for each",
  },
  count: {
    value: "N",
    help: "probe: connections (--udp: datagrams) in all (default 20)",
    only: ["probe"],
  },
  concurrency: {
    value: "N",
    help:
      "probe: connections (--udp: datagrams, each from a socket of\nits own) at a time (default 1)",
    only: ["probe"],
  },
  size: {
    value: "BYTES",
    help: "payload: per probe connection or datagram, per request, or per\n" +
      "written chunk (default 64; stream: 65536)",
    only: ["probe", "load"],
  },
  message: { value: "TEXT", help: "probe: send TEXT instead of random bytes", only: ["probe"] },
  prefix: { value: "TEXT", help: 'the server answers each line as "TEXT LINE" (ECHO_PREFIX)' },
  connections: {
    value: "N",
    help: "load: connections, --udp: flows (default 1); hold: connections\nheld (default 10)",
    only: ["load", "hold"],
  },
  duration: {
    value: "D",
    help:
      "load: how long, e.g. 500ms, 10s, 1m (default 5s);\nhold: how long at most (default: until Ctrl-C)",
    only: ["load", "hold"],
  },
  mode: {
    value: "M",
    help: "load: rr (request/response, default), stream or connect",
    only: ["load"],
  },
  interval: {
    value: "D",
    help: "hold: a heartbeat on each connection this often; probe --udp\n" +
      "--one-flow: a datagram this often (default 1s, at least 10ms)",
    only: ["hold", "probe"],
  },
  stall: {
    value: "D",
    help: "hold: an answer later than this is a stall (default 500ms)",
    only: ["hold"],
  },
  reconnect: { help: "hold: replace a lost connection with a new one", only: ["hold"] },
  "open-rate": {
    value: "N",
    help: "hold: connections opened per second at most, replacements too\n(default 1000)",
    only: ["hold"],
  },
  expect: {
    value: "E",
    help: "hold: exit 0 only if E holds: no-loss, moved-to VERSION or\n" +
      "stays-on VERSION (see below); may be given more than once",
    only: ["hold"],
  },
  timeout: {
    value: "D",
    help: "per operation: a connect, a probe, a load request, a hold\n" +
      "heartbeat's answer, a datagram's echo (default 5s)",
  },
  tls: { help: "speak TLS (to a TLS_PORT); the report adds server name and TLS version" },
  sni: {
    value: "NAME",
    help: "TLS server name to send (default: the host, none for an IP address)",
  },
  alpn: { value: "P[,P]", help: 'ALPN protocols to offer (tcp-echo accepts "echo")' },
  ca: {
    value: "FILE",
    help: "PEM CA certificates to verify the server with (default: system's)",
  },
  cert: {
    value: "FILE",
    help: "PEM client certificate (with --key), for TLS_CLIENT_CA servers",
  },
  key: { value: "FILE", help: "PEM key of --cert" },
  insecure: { help: "accept any server certificate (self-signed test servers)" },
  "fail-under": {
    value: "K=V",
    help: "exit 1 below a threshold: success=PCT (probe, default 100),\n" +
      "ops=N (load rr), mbps=N (load stream); comma-separated",
    only: ["probe", "load"],
  },
  json: {
    help: "print one JSON object instead of the human report\n(hold: every connection's record)",
  },
} as const satisfies Readonly<Record<string, Flag>>;

type FlagName = keyof typeof FLAGS;

/** {@linkcode FLAGS} read by name. */
const FLAG_TABLE: Readonly<Record<string, Flag>> = FLAGS;

/** The options given: text for those with a value, `true` for switches. */
type FlagValues = {
  readonly [K in FlagName]?: typeof FLAGS[K] extends { readonly value: string } ? string : boolean;
};

/**
 * How the client was started, as a command to repeat with other arguments:
 * under deno the task, `deno task client --`; as a compiled binary (whose
 * `Deno.execPath()` is that binary, not deno), the binary's name and `client`.
 *
 * @example
 * ```ts
 * clientCommand("/usr/local/bin/deno"); // "deno task client --"
 * clientCommand("/tcp-echo"); // "tcp-echo client"
 * ```
 */
export function clientCommand(execPath: string): string {
  const name = execPath.split(/[\\/]/).pop()!.replace(/\.exe$/i, "");
  return name === "deno" ? "deno task client --" : `${name} client`;
}

/** The `--help` text, with `command` ({@linkcode clientCommand}) as the way to run the client. */
export function clientUsage(command: string): string {
  const width = 21;
  const options = Object.entries(FLAG_TABLE).flatMap(
    ([name, { short, value, help }]) => {
      const [first, ...more] = help.split("\n");
      const flag = `${short ? `-${short}, ` : ""}--${name}${value ? ` ${value}` : ""}`;
      return [
        `  ${flag.padEnd(width - 2)}${first}`,
        ...more.map((line) => " ".repeat(width) + line),
      ];
    },
  );
  return `Usage: ${command} HOST:PORT [probe|load|hold] [options]

probe (default): open --count connections (--concurrency at a time); each reads the
banner, sends a payload, checks the echo byte for byte and closes. Reports who
answered (version, pod, node), failures by reason with the first detail of each and
a hint, and latency percentiles.

probe --udp: --count datagrams of --size bytes (or --message), --concurrency at a
time, each from a socket of its own (a new source port is a new flow: like a TCP
probe, each may land on another backend). Each waits --timeout for its echo; a
datagram before it is the banner (tcp-echo greets a peer it has not seen recently with
one). Reports who answered, how many were echoed correctly, lost (no echo in time) or
wrong, and round-trip percentiles; "lost" in the table counts datagrams whose banner
came but not their echo (the server got them).

probe --udp --one-flow: every datagram from one source port, one each --interval, as
a client that keeps its socket sends them (kube-proxy's conntrack keeps such a flow on
one pod, even a deleted one). An echo counts for the backend whose banner came last: a
new backend (or one whose flow expired) greets first, so the report says at which
datagram and when the answer changed, from which backend to which, and which
datagrams were lost in between (a server without a banner hides a change). Ctrl-C
stops the sending; the report follows once the datagrams out are answered or timed
out (a second Ctrl-C exits at once, 130).

load: keep --connections busy for --duration, --mode rr (request/response of --size
bytes), --mode stream (writer and reader in parallel) or --mode connect (a new
connection, banner and echo each time: connections/s, with --tls handshakes/s);
every byte is verified. load --udp: --connections flows (a socket each), each sending
a datagram of --size, waiting for its echo and sending the next, for --duration:
datagrams/s, lost and round-trip percentiles (a lost datagram waits --timeout: give a
short one, e.g. 200ms).

hold: open --connections (at most --open-rate a second) and keep them open, to see what
happens to connections that are already open: a weight shift, a rollout, a policy
change, a proxy's restart. Each one reads the banner (version, pod, node, and the
Connection id of SHOW_CONNECTION_ID=true, to join with the server's log), then sends
a numbered heartbeat line ("hb 000042") every --interval, the connections spread
over the interval, and checks each echo byte for byte. Every connection's record:
when it opened and where it landed, each stall (an answer later than --stall: when
and how long), and how and when it ended. With --reconnect a lost connection is
replaced (an attempt that fails is tried again 100 ms later): where the new one
landed and the gap. It runs for --duration, until Ctrl-C (SIGINT or SIGTERM: the
report, then exit; a second one exits at once, 130), or until every connection is
lost (without --reconnect). On a terminal, one live line on stderr (open per backend,
lost, reconnected, worst stall); otherwise a line when all are open, then every 5 s.
The report: a table per backend (opened, still open, ended by each way, worst stall),
where the replacements landed, and a timeline of endings, stalls and replacements in
seconds since the start; --json gives every connection's record instead.

-4, -6: connect over IPv4 only, or IPv6 only (TCP and UDP, every command). A name is
looked up in that family with getaddrinfo (/etc/hosts counts); a literal address of
the other family is a usage error. probe -4 -6 probes both families at once and prints
a report for each; with --json one object: {"target": ..., "families": {"IPv4":
REPORT, "IPv6": REPORT}}. A report's first line names the address used when it is not
the target's text: probe localhost:3333 (127.0.0.1).

Options:
${options.join("\n")}
  -h, --help         print this text

Failure reasons (probe, load, a hold connection that could not open): dns (the host
does not resolve, or not in the family of -4/-6), refused, reset, timeout, lost (UDP:
no echo within --timeout; UDP has no refusal to see, so a closed port looks like loss),
tls (the handshake failed), mismatch (the echo differs; UDP: a datagram that is neither
the echo nor a banner), short (it stopped early), error (any other; its detail says
what).

How a held connection ends: fin (the peer closed it: EOF), rst (reset), timeout (no
answer within --timeout), mismatch (the echo differs, or other bytes came), drain (the
line "tcp-echo: closing this connection: ..." came first: tcp-echo's DRAIN_NOTICE=true
at the end of its shutdown grace), error (any other). A connection that ended before
the hold did is lost; one open at the end counts as open.

Expectations (hold --expect; with more than one, all must hold):
  no-loss           every connection opened and none was lost
  moved-to VERSION  with --reconnect: at least one connection was replaced, every
                    replacement answered Version VERSION, and every place had a
                    connection at the end (connections never lost are not judged)
  stays-on VERSION  every connection, replacements too, answered Version VERSION, and
                    no replacement landed on another backend (version, pod and node)
                    than the connection it replaced (losses alone are not judged)
VERSION may also be joined on: moved-to=v2.

Exit status: 0 all good; 1 an echo was wrong, a load connection failed or completed
nothing (load --udp: a datagram was lost or answered wrong), or a threshold was missed
(probe: --fail-under success, 100% by default, so a lost datagram misses it); hold: 1
when a connection was lost or never opened, or, with --expect, when an expectation
was not met (an echo that was wrong is 1 whatever is expected); 2 bad usage. Ctrl-C
ends a hold (and probe --udp --one-flow) as --duration does.
`;
}

function parseDurationMs(text: string, flag: string): number {
  const ms = parseDuration(text);
  if (ms === undefined) {
    throw new UsageError(`${flag} takes ${DURATION_FORMS}, not ${JSON.stringify(text)}`);
  }
  return ms;
}

function parseCount(text: string | undefined, flag: string, fallback: number, min = 1): number {
  if (text === undefined) return fallback;
  const value = /^\d{1,9}$/.test(text) ? Number(text) : NaN;
  if (!(value >= min)) {
    throw new UsageError(
      `${flag} takes a whole number of at least ${min}, not ${JSON.stringify(text)}`,
    );
  }
  return value;
}

/** Which command each `--fail-under` key belongs to. */
const THRESHOLD_COMMANDS: Readonly<Record<keyof FailUnder, ClientCommand>> = {
  success: "probe",
  ops: "load",
  mbps: "load",
};

function parseFailUnder(text: string | undefined, command: ClientCommand): FailUnder {
  const thresholds: FailUnder = {};
  if (text === undefined) return thresholds;
  for (const part of text.split(",")) {
    const match = /^(success|ops|mbps)=(\d+(?:\.\d+)?)$/.exec(part);
    const key = match?.[1] as keyof FailUnder | undefined;
    const number = Number(match?.[2]);
    if (!key || (key === "success" && number > 100)) {
      throw new UsageError(
        `--fail-under takes success=PCT (0 to 100), ops=N or mbps=N, not ${JSON.stringify(part)}`,
      );
    }
    if (THRESHOLD_COMMANDS[key] !== command) {
      throw new UsageError(`--fail-under ${key} is for ${THRESHOLD_COMMANDS[key]}, not ${command}`);
    }
    thresholds[key] = number;
  }
  return thresholds;
}

/** Splits `HOST:PORT` (`[::1]:3333` for IPv6). */
export function parseTarget(text: string): { hostname: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (!match || !(port >= 1 && port <= 65_535)) {
    throw new UsageError(
      `the target is HOST:PORT (e.g. 127.0.0.1:3333 or [::1]:3333), not ${JSON.stringify(text)}`,
    );
  }
  return { hostname: match[1] ?? match[2], port };
}

/** One option as node's parseArgs tokenizes it (not strict: the checks and their words are ours). */
interface OptionToken {
  readonly name: string;
  readonly rawName: string;
  readonly value?: string;
  readonly inlineValue?: boolean;
}

/** The value of one option, or a usage error that names it. */
function readFlag(token: OptionToken): string | true {
  if (!Object.hasOwn(FLAG_TABLE, token.name)) {
    throw new UsageError(`unknown option ${token.rawName}`);
  }
  const { value: valueName } = FLAG_TABLE[token.name];
  const flag = token.rawName;
  if (valueName === undefined) {
    if (token.value !== undefined) throw new UsageError(`${flag} takes no value`);
    return true;
  }
  if (token.value === undefined) {
    throw new UsageError(`${flag} needs a value (${flag} ${valueName})`);
  }
  // `--count --json`: an option where the value should be is a value forgotten.
  if (!token.inlineValue && token.value.startsWith("--")) {
    throw new UsageError(`${flag} needs a value (${flag} ${valueName}) before ${token.value}`);
  }
  if (!token.inlineValue && token.value.startsWith("-") && token.value !== "-") {
    throw new UsageError(
      `${flag} takes a value that starts with "-" only as ${flag}=${token.value}`,
    );
  }
  return token.value;
}

/** The expectations `--expect` names, with whether a version follows. */
const EXPECTATION_KINDS: Readonly<Record<Expectation["kind"], boolean>> = {
  "no-loss": false,
  "moved-to": true,
  "stays-on": true,
};

/** One `--expect` value (`no-loss`, `moved-to v2`, `moved-to=v2`); throws UsageError. */
export function parseExpectation(text: string): Expectation {
  const match = /^([a-z-]+)(?:[= ](.*))?$/.exec(text);
  const kind = match?.[1] as Expectation["kind"] | undefined;
  const version = match?.[2];
  if (!kind || !Object.hasOwn(EXPECTATION_KINDS, kind)) {
    throw new UsageError(
      `--expect takes no-loss, moved-to VERSION or stays-on VERSION, not ${JSON.stringify(text)}`,
    );
  }
  if (kind === "no-loss") {
    if (version !== undefined) throw new UsageError("--expect no-loss takes no version");
    return { kind };
  }
  if (version === undefined || !/^\S+$/.test(version)) {
    throw new UsageError(`--expect ${kind} needs a version (--expect ${kind} v2)`);
  }
  return { kind, version };
}

/** The options and positionals of the command line, and every `--expect` given. */
function readFlags(
  args: readonly string[],
): { values: FlagValues; positionals: string[]; expects: string[] } {
  const { tokens } = parseArgs({
    args: [...args],
    strict: false,
    allowPositionals: true,
    tokens: true,
    options: Object.fromEntries(
      Object.entries(FLAG_TABLE).map(([name, flag]) => [
        name,
        {
          type: flag.value === undefined ? "boolean" : "string",
          ...(flag.short ? { short: flag.short } : {}),
        },
      ]),
    ),
  });
  const values: Record<string, string | boolean> = {};
  const positionals: string[] = [];
  const expects: string[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i];
    if (token.kind === "positional") positionals.push(token.value);
    else if (token.kind === "option") {
      values[token.name] = readFlag(token);
      if (token.name !== "expect") continue;
      // `--expect moved-to v2`: the version is the next word.
      let text = String(values.expect);
      const next = tokens[i + 1];
      if (EXPECTATION_KINDS[text as Expectation["kind"]] && next?.kind === "positional") {
        text += ` ${next.value}`;
        i++;
      }
      expects.push(text);
    }
  }
  return { values: values as FlagValues, positionals, expects };
}

/** The TLS flags, checked together: each needs `--tls`, `--cert` needs `--key`. */
function readTlsFlags(values: FlagValues): ClientTlsOptions | undefined {
  const flags = ["sni", "alpn", "ca", "cert", "key", "insecure"] as const;
  if (!values.tls) {
    const stray = flags.find((flag) => values[flag] !== undefined);
    if (stray) throw new UsageError(`--${stray} needs --tls`);
    return undefined;
  }
  if ((values.cert === undefined) !== (values.key === undefined)) {
    throw new UsageError("--cert and --key go together");
  }
  if (values.insecure && values.ca !== undefined) {
    throw new UsageError("--insecure accepts any certificate; --ca would not be used");
  }
  const alpn = values.alpn?.split(",").map((protocol) => protocol.trim());
  if (alpn?.some((protocol) => protocol === "")) {
    throw new UsageError(
      `--alpn takes a comma list of protocols, not ${JSON.stringify(values.alpn)}`,
    );
  }
  return {
    serverName: values.sni,
    alpn,
    caFile: values.ca,
    certFile: values.cert,
    keyFile: values.key,
    insecure: values.insecure ?? false,
  };
}

/** A flag of another command would be ignored without a word: it is a usage error. */
function checkFlagsBelong(values: FlagValues, command: ClientCommand): void {
  for (const name of Object.keys(values)) {
    const only = FLAG_TABLE[name].only;
    if (only === undefined || only.includes(command)) continue;
    const owners = only.join(" and ");
    throw new UsageError(
      command === "probe"
        ? `--${name} is an option of ${owners} (HOST:PORT ${only[0]} --${name} ...), not of probe`
        : `--${name} is an option of ${owners}, not of ${command}`,
    );
  }
}

/** The TLS options, `--tls` first: none of them goes with `--udp`. */
const TLS_FLAGS = ["tls", "sni", "alpn", "ca", "cert", "key", "insecure"] as const;

/** The checks of `--udp` and `--one-flow` against the other options. */
function checkUdpFlags(values: FlagValues, command: ClientCommand): void {
  if (values["one-flow"] && !values.udp) {
    throw new UsageError("--one-flow needs --udp (a TCP connection is one flow already)");
  }
  if (command === "probe" && values.interval !== undefined && !values["one-flow"]) {
    throw new UsageError(
      "--interval of probe is for --udp --one-flow (a datagram each --interval)",
    );
  }
  if (!values.udp) return;
  const tls = TLS_FLAGS.find((flag) => values[flag] !== undefined);
  if (tls) throw new UsageError(`--${tls} is a TLS option; there is no TLS over --udp`);
  if (values.prefix !== undefined) {
    throw new UsageError("--prefix is for line-mode TCP servers; a UDP echo is byte for byte");
  }
  if (values.mode !== undefined && values.mode !== "rr") {
    throw new UsageError(
      `--mode ${values.mode} is for TCP; load --udp is request/response (a datagram, its echo, ` +
        "the next)",
    );
  }
  if (values["one-flow"] && values.concurrency !== undefined) {
    throw new UsageError(
      "--one-flow sends from one socket, a datagram each --interval: --concurrency does not apply",
    );
  }
}

/** The largest UDP payload: an IP packet's 65,535 bytes less the headers (IPv6's is outside). */
const MAX_DATAGRAM_BYTES: Readonly<Record<IpVersion, number>> = { 4: 65_507, 6: 65_527 };

/** `--size` checked against what one datagram of the families in use can carry. */
function checkDatagramSize(size: number, families: readonly IpVersion[], hostname: string): void {
  const literal = literalFamily(hostname);
  const over = families.includes(4) || literal === 4 ? 4 : 6;
  if (size <= MAX_DATAGRAM_BYTES[over]) return;
  throw new UsageError(
    over === 4
      ? `--size over IPv4 UDP is at most ${MAX_DATAGRAM_BYTES[4]} bytes, not ${size}`
      : `--size over UDP is at most ${MAX_DATAGRAM_BYTES[6]} bytes ` +
        `(${MAX_DATAGRAM_BYTES[4]} over IPv4), not ${size}`,
  );
}

/** `-4`/`-6` checked against the command and a literal target address. */
function readFamilies(values: FlagValues, hostname: string, command: ClientCommand): IpVersion[] {
  const families: IpVersion[] = [];
  if (values.ipv4) families.push(4);
  if (values.ipv6) families.push(6);
  if (families.length === 2 && command !== "probe") {
    throw new UsageError(
      `-4 and -6 together are for probe (a report for each family); ${command} takes one of them`,
    );
  }
  const literal = literalFamily(hostname);
  const other = families.find((family) => family !== literal);
  if (literal !== undefined && other !== undefined) {
    throw new UsageError(
      `-${other} asks for ${familyName(other)}, but ${hostname} is an ${
        familyName(literal)
      } address`,
    );
  }
  return families;
}

/** The checks of hold's options against each other. */
function checkHoldFlags(values: FlagValues, expectations: readonly Expectation[]): void {
  if (expectations.some((e) => e.kind === "moved-to") && !values.reconnect) {
    throw new UsageError("--expect moved-to judges replacements: it needs --reconnect");
  }
}

/** Parses the client's command line. Throws {@linkcode UsageError}. */
export function parseClientArgs(args: readonly string[]): ClientOptions {
  const { values, positionals, expects } = readFlags(args);
  if (positionals.length === 0) throw new UsageError("the target HOST:PORT is missing");
  const [targetText, command = "probe", ...extra] = positionals;
  if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}`);
  if (!(CLIENT_COMMANDS as readonly string[]).includes(command)) {
    throw new UsageError(`the command is probe, load or hold, not ${JSON.stringify(command)}`);
  }
  const clientCommand = command as ClientCommand;
  checkFlagsBelong(values, clientCommand);
  const mode = (values.mode ?? "rr") as LoadMode;
  if (!LOAD_MODES.includes(mode)) {
    throw new UsageError(`--mode is rr, stream or connect, not ${JSON.stringify(mode)}`);
  }
  checkUdpFlags(values, clientCommand);
  if (mode === "stream" && values.prefix !== undefined) {
    throw new UsageError("--mode stream needs a byte-exact echo; it cannot be used with --prefix");
  }
  // An empty payload has an empty echo: every probe would pass, whatever came back.
  if (values.message === "") throw new UsageError("--message needs at least one character");
  if (
    values.message !== undefined && /[\r\n]/.test(values.message) && values.prefix !== undefined
  ) {
    throw new UsageError("with --prefix, --message is one line");
  }
  if (values.prefix !== undefined && /[\r\n]/.test(values.prefix)) {
    throw new UsageError("--prefix is one line");
  }
  const expectations = expects.map(parseExpectation);
  checkHoldFlags(values, expectations);
  const hold = clientCommand === "hold";
  const timeoutMs = values.timeout === undefined
    ? 5_000
    : parseDurationMs(values.timeout, "--timeout");
  const intervalMs = values.interval === undefined
    ? 1_000
    : parseDurationMs(values.interval, "--interval");
  if (intervalMs < 10) throw new UsageError(`--interval is at least 10ms, not ${values.interval}`);
  const stallMs = values.stall === undefined ? 500 : parseDurationMs(values.stall, "--stall");
  if (hold && stallMs >= timeoutMs) {
    throw new UsageError(
      `--stall (${formatDuration(stallMs)}) must be shorter than --timeout ` +
        `(${formatDuration(timeoutMs)}): an answer later than --timeout ends the connection`,
    );
  }
  const target = parseTarget(targetText);
  const families = readFamilies(values, target.hostname, clientCommand);
  const size = parseCount(
    values.size,
    "--size",
    mode === "stream" && command === "load" ? 65_536 : 64,
  );
  const udp = values.udp ?? false;
  if (udp) checkDatagramSize(size, families, target.hostname);
  return {
    ...target,
    command: clientCommand,
    udp,
    oneFlow: values["one-flow"] ?? false,
    families,
    count: parseCount(values.count, "--count", 20),
    concurrency: parseCount(values.concurrency, "--concurrency", 1),
    size,
    message: values.message,
    prefix: values.prefix,
    connections: parseCount(values.connections, "--connections", hold ? 10 : 1),
    durationMs: values.duration === undefined
      ? (hold ? Infinity : 5_000)
      : parseDurationMs(values.duration, "--duration"),
    mode,
    tls: readTlsFlags(values),
    timeoutMs,
    intervalMs,
    stallMs,
    reconnect: values.reconnect ?? false,
    openRate: parseCount(values["open-rate"], "--open-rate", 1_000),
    expectations,
    json: values.json ?? false,
    failUnder: {
      success: command === "probe" ? 100 : undefined,
      ...parseFailUnder(values["fail-under"], clientCommand),
    },
  };
}
