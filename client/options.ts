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
 * clientCommand("/tcp-echo"); // "tcp-echo client"
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";
import { DURATION_FORMS, parseDuration } from "../src/wire.ts";

/** What to measure and how. */
export interface ClientOptions {
  /** Where to connect. */
  readonly hostname: string;
  /** The port to connect to. */
  readonly port: number;
  /** Probe one connection at a time, or load for a duration. */
  readonly command: ClientCommand;
  /** probe: connections in all. */
  readonly count: number;
  /** probe: connections at a time. */
  readonly concurrency: number;
  /** Payload bytes (probe: per connection; load: per request or written chunk). */
  readonly size: number;
  /** probe: send this text instead of random bytes. */
  readonly message: string | undefined;
  /** The server answers each line as `PREFIX LINE` (tcp-echo's ECHO_PREFIX, Istio's server). */
  readonly prefix: string | undefined;
  /** load: connections kept busy. */
  readonly connections: number;
  /** load: how long. */
  readonly durationMs: number;
  /** load: request/response, streaming, or a new connection per operation. */
  readonly mode: LoadMode;
  /** Speak TLS, with these settings; `undefined` = plain TCP. */
  readonly tls: ClientTlsOptions | undefined;
  /** Per-operation timeout (connect, a whole probe, one load request). */
  readonly timeoutMs: number;
  /** Print one JSON object instead of the report for people. */
  readonly json: boolean;
  /** Thresholds that make the exit code 1 when missed. */
  readonly failUnder: Readonly<FailUnder>;
}

/** `probe` or `load`. */
export type ClientCommand = "probe" | "load";

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
 * help (a `\n` continues it on the next line), and the one command it
 * belongs to, if only one.
 */
interface Flag {
  readonly value?: string;
  readonly help: string;
  readonly only?: ClientCommand;
}

/** Every option, in `--help` order. */
const FLAGS = {
  count: { value: "N", help: "probe: connections in all (default 20)", only: "probe" },
  concurrency: { value: "N", help: "probe: connections at a time (default 1)", only: "probe" },
  size: {
    value: "BYTES",
    help:
      "payload: per probe connection, per request, or per written chunk\n(default 64; stream: 65536)",
  },
  message: { value: "TEXT", help: "probe: send TEXT instead of random bytes", only: "probe" },
  prefix: { value: "TEXT", help: 'the server answers each line as "TEXT LINE" (ECHO_PREFIX)' },
  connections: { value: "N", help: "load: connections (default 1)", only: "load" },
  duration: {
    value: "D",
    help: "load: how long, e.g. 500ms, 10s, 1m (default 5s)",
    only: "load",
  },
  mode: {
    value: "M",
    help: "load: rr (request/response, default), stream or connect",
    only: "load",
  },
  timeout: { value: "D", help: "per operation (default 5s)" },
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
  },
  json: { help: "print one JSON object instead of the human report" },
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
    ([name, { value, help }]) => {
      const [first, ...more] = help.split("\n");
      const flag = `--${name}${value ? ` ${value}` : ""}`;
      return [
        `  ${flag.padEnd(width - 2)}${first}`,
        ...more.map((line) => " ".repeat(width) + line),
      ];
    },
  );
  return `Usage: ${command} HOST:PORT [probe|load] [options]

probe (default): open --count connections (--concurrency at a time); each reads the
banner, sends a payload, checks the echo byte for byte and closes. Reports who
answered (version, pod, node), failures by reason with the first detail of each and
a hint, and latency percentiles.

load: keep --connections busy for --duration, --mode rr (request/response of --size
bytes), --mode stream (writer and reader in parallel) or --mode connect (a new
connection, banner and echo each time: connections/s, with --tls handshakes/s);
every byte is verified.

Options:
${options.join("\n")}
  -h, --help         print this text

Failure reasons: dns (the host does not resolve), refused, reset, timeout, tls (the
handshake failed), mismatch (the echo differs), short (it stopped early), error (any
other; its detail says what).

Exit status: 0 all good; 1 an echo was wrong, a load connection failed or completed
nothing, or a threshold was missed; 2 bad usage.
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

/** The options and positionals of the command line. */
function readFlags(args: readonly string[]): { values: FlagValues; positionals: string[] } {
  const { tokens } = parseArgs({
    args: [...args],
    strict: false,
    allowPositionals: true,
    tokens: true,
    options: Object.fromEntries(
      Object.entries(FLAG_TABLE).map(([name, flag]) => [
        name,
        { type: flag.value === undefined ? "boolean" : "string" },
      ]),
    ),
  });
  const values: Record<string, string | boolean> = {};
  const positionals: string[] = [];
  for (const token of tokens) {
    if (token.kind === "positional") positionals.push(token.value);
    else if (token.kind === "option") values[token.name] = readFlag(token);
  }
  return { values: values as FlagValues, positionals };
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

/** A flag of the other command would be ignored without a word: it is a usage error. */
function checkFlagsBelong(values: FlagValues, command: ClientCommand): void {
  for (const name of Object.keys(values)) {
    const only = FLAG_TABLE[name].only;
    if (only !== undefined && only !== command) {
      throw new UsageError(
        only === "load"
          ? `--${name} is an option of load (HOST:PORT load --${name} ...), not of probe`
          : `--${name} is an option of probe, not of load`,
      );
    }
  }
}

/** Parses the client's command line. Throws {@linkcode UsageError}. */
export function parseClientArgs(args: readonly string[]): ClientOptions {
  const { values, positionals } = readFlags(args);
  if (positionals.length === 0) throw new UsageError("the target HOST:PORT is missing");
  const [targetText, command = "probe", ...extra] = positionals;
  if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}`);
  if (command !== "probe" && command !== "load") {
    throw new UsageError(`the command is probe or load, not ${JSON.stringify(command)}`);
  }
  checkFlagsBelong(values, command);
  const mode = (values.mode ?? "rr") as LoadMode;
  if (!LOAD_MODES.includes(mode)) {
    throw new UsageError(`--mode is rr, stream or connect, not ${JSON.stringify(mode)}`);
  }
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
  return {
    ...parseTarget(targetText),
    command,
    count: parseCount(values.count, "--count", 20),
    concurrency: parseCount(values.concurrency, "--concurrency", 1),
    size: parseCount(values.size, "--size", mode === "stream" && command === "load" ? 65_536 : 64),
    message: values.message,
    prefix: values.prefix,
    connections: parseCount(values.connections, "--connections", 1),
    durationMs: values.duration === undefined
      ? 5_000
      : parseDurationMs(values.duration, "--duration"),
    mode,
    tls: readTlsFlags(values),
    timeoutMs: values.timeout === undefined ? 5_000 : parseDurationMs(values.timeout, "--timeout"),
    json: values.json ?? false,
    failUnder: {
      success: command === "probe" ? 100 : undefined,
      ...parseFailUnder(values["fail-under"], command),
    },
  };
}
