/**
 * tcp-echo: a TCP echo server for learning, testing and debugging TCP
 * networking on Kubernetes and Istio.
 *
 * Every connection gets a banner naming the node, pod, namespace, IP,
 * service account and version that answered, then every byte it sends is
 * echoed back unchanged. Each connection is logged under its own UUID.
 *
 * The module is both the program (`deno task start`) and a library: tests and
 * other code call {@linkcode loadConfig}, {@linkcode renderBanner} and
 * {@linkcode startServer} directly.
 *
 * @example Start a server on an ephemeral loopback port
 * ```ts
 * import { loadConfig, startServer } from "./main.ts";
 * const config = { ...loadConfig({ HOST: "127.0.0.1", ADMIN_PORT: "off" }), ports: [0] };
 * const server = startServer(config);
 * console.log(server.addresses[0].port);
 * await server.shutdown();
 * ```
 *
 * @module
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import denoConfig from "./deno.json" with { type: "json" };
import ipaddr from "ipaddr.js";
import {
  type Cidr,
  isTrusted,
  parseCidr,
  parseProxyHeader,
  V2_MAX_BYTES,
} from "./proxy_protocol.ts";
import {
  configure,
  getLogger,
  type LogLevel,
  type LogRecord,
  reset as resetLogging,
  type Sink,
} from "@logtape/logtape";

// ---------------------------------------------------------------------------
// Types and configuration
// ---------------------------------------------------------------------------

/** This build's version (deno.json's `version`). */
export const VERSION: string = denoConfig.version;

/** Log levels accepted by `LOG_LEVEL`, lowest first. */
export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;
/** A `LOG_LEVEL` value. */
export type LogLevelName = typeof LOG_LEVELS[number];

/** Record formats accepted by `LOG_FORMAT`. */
export const LOG_FORMATS = ["text", "json"] as const;
/** A `LOG_FORMAT` value. */
export type LogFormat = typeof LOG_FORMATS[number];

/** Largest accepted `LOG_DATA_BYTES`: one full read buffer. */
export const MAX_LOG_DATA_BYTES = 65_536;

/** Largest accepted `MAX_CONNECTIONS`. */
export const MAX_CONNECTIONS_LIMIT = 1_000_000;

/** The optional identity lines of the banner, as read from the environment. */
export interface BannerFields {
  readonly nodeName?: string;
  readonly podName?: string;
  readonly podNamespace?: string;
  readonly podIp?: string;
  readonly serviceAccount?: string;
  readonly serviceVersion?: string;
}

/** Values of `PROXY_PROTOCOL`. */
export const PROXY_MODES = ["off", "v1", "v2", "any", "optional"] as const;
/** A `PROXY_PROTOCOL` value. */
export type ProxyMode = typeof PROXY_MODES[number];

/** Values of `BANNER_MODE`. */
export const BANNER_MODES = ["connect", "first-data", "off"] as const;
/** A `BANNER_MODE` value. */
export type BannerMode = typeof BANNER_MODES[number];

/** Bytes of a line held at most in `ECHO_PREFIX` mode; longer lines are answered as they arrive. */
export const MAX_LINE_BYTES = 65_536;

/** How long a PROXY header may take to arrive. */
export const PROXY_HEADER_TIMEOUT_MS = 5_000;

/** The whole configuration of the server: built once, frozen, never re-read. */
export interface Config {
  /** TCP ports to listen on, one listener each; `0` (tests only) picks a free port. */
  readonly ports: readonly number[];
  /** Listen address; `undefined` means dual-stack `::`, else `0.0.0.0`. */
  readonly host: string | undefined;
  readonly banner: BannerFields;
  readonly logLevel: LogLevelName;
  readonly logFormat: LogFormat;
  /** Bytes of each received chunk shown in data records; 0 = no records. */
  readonly logDataBytes: number;
  /** How long open connections may go on after SIGTERM/SIGINT. */
  readonly shutdownGraceMs: number;
  /** Port of the HTTP admin server (health, readiness, metrics); `undefined` = off. */
  readonly adminPort: number | undefined;
  /** After a shutdown signal: how long readiness fails while still accepting. */
  readonly drainDelayMs: number;
  /** Open echo connections at most; 0 = unlimited. */
  readonly maxConnections: number;
  /** Close a connection on which no byte moved either way for this long; 0 = never. */
  readonly idleTimeoutMs: number;
  /** Add `Your address is IP:PORT.` to the banner. */
  readonly showClientAddress: boolean;
  /** When the banner is sent: on connect, just before the first echo, or never. */
  readonly bannerMode: BannerMode;
  /** Which PROXY protocol headers connections must or may start with. */
  readonly proxyProtocol: ProxyMode;
  /** Peers allowed to send a PROXY header; `undefined` = any peer. */
  readonly proxyTrusted: readonly Cidr[] | undefined;
  /** How long a PROXY header may take (not configurable: tests shorten it). */
  readonly proxyHeaderTimeoutMs: number;
  /** Line mode: answer each line as `${prefix} ${line}`; `undefined` = byte-exact echo. */
  readonly echoPrefix: string | undefined;
  /** Fault: wait this long before each echo. */
  readonly echoDelayMs: number;
  /** Fault: close after echoing this many bytes (reason `fault`); 0 = never. */
  readonly closeAfterBytes: number;
}

/** One environment variable the program reads: its name, default, meaning. */
export interface ConfigVariable {
  readonly name: string;
  readonly defaultValue: string;
  readonly meaning: string;
}

/**
 * Every environment variable the program reads. It is the source of `--help`,
 * of the `--allow-env` list the tests check against `deno.json`, and of the
 * README table the tests check.
 */
export const CONFIG_VARIABLES: readonly ConfigVariable[] = [
  {
    name: "TCP_PORT",
    defaultValue: "3333",
    meaning: "port to listen on, 1-65535, or a comma list (9000,9001): one listener each",
  },
  {
    name: "HOST",
    defaultValue: "all interfaces",
    meaning: "listen address (an IP address or localhost); default dual-stack [::], else 0.0.0.0",
  },
  { name: "NODE_NAME", defaultValue: "unset", meaning: "banner: node name" },
  { name: "POD_NAME", defaultValue: "unset", meaning: "banner: pod name" },
  { name: "POD_NAMESPACE", defaultValue: "unset", meaning: "banner: namespace" },
  { name: "POD_IP", defaultValue: "unset", meaning: "banner: pod IP address" },
  { name: "SERVICE_ACCOUNT", defaultValue: "unset", meaning: "banner: service account" },
  { name: "SERVICE_VERSION", defaultValue: "unset", meaning: "banner: version" },
  { name: "LOG_LEVEL", defaultValue: "info", meaning: "debug, info, warn or error" },
  { name: "LOG_FORMAT", defaultValue: "text", meaning: "text or json" },
  {
    name: "LOG_DATA_BYTES",
    defaultValue: "1024",
    meaning:
      `bytes of each received chunk shown in data records, 0-${MAX_LOG_DATA_BYTES}; 0 turns them off`,
  },
  {
    name: "SHUTDOWN_GRACE",
    defaultValue: "10s",
    meaning: "how long open connections may go on after SIGTERM/SIGINT (e.g. 500ms, 10s, 2m)",
  },
  {
    name: "ADMIN_PORT",
    defaultValue: "8080",
    meaning: "HTTP port for /healthz, /readyz, /metrics, 1-65535; off disables it",
  },
  {
    name: "DRAIN_DELAY",
    defaultValue: "0s",
    meaning: "after SIGTERM/SIGINT: /readyz fails at once, accepting goes on this long",
  },
  {
    name: "MAX_CONNECTIONS",
    defaultValue: "10000",
    meaning: `open echo connections at most, 0-${MAX_CONNECTIONS_LIMIT}; 0 = unlimited`,
  },
  {
    name: "IDLE_TIMEOUT",
    defaultValue: "0s",
    meaning: "close a connection on which no byte moved either way for this long; 0s = never",
  },
  {
    name: "SHOW_CLIENT_ADDRESS",
    defaultValue: "false",
    meaning: "true adds the banner line: Your address is IP:PORT.",
  },
  {
    name: "BANNER_MODE",
    defaultValue: "connect",
    meaning: "connect (on accept), first-data (just before the first echo) or off",
  },
  {
    name: "PROXY_PROTOCOL",
    defaultValue: "off",
    meaning: "off, v1, v2, any (a header is required) or optional",
  },
  {
    name: "PROXY_PROTOCOL_TRUSTED",
    defaultValue: "any peer",
    meaning: "comma list of CIDRs allowed to send a PROXY header",
  },
  {
    name: "ECHO_PREFIX",
    defaultValue: "unset",
    meaning: "line mode: answer each line as PREFIX LINE (Istio's tcp-echo)",
  },
  {
    name: "ECHO_DELAY",
    defaultValue: "0s",
    meaning: "fault: wait this long before each echo",
  },
  {
    name: "CLOSE_AFTER_BYTES",
    defaultValue: "0",
    meaning: "fault: close after echoing this many bytes (reason fault); 0 = never",
  },
];

/** The environment as `loadConfig` sees it: variable name to value. */
export type Environment = Readonly<Record<string, string | undefined>>;

/** A configuration value that cannot be used; its message is one line. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

const DURATION_UNIT_MS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
};

/**
 * Parses a duration written as a whole number and a unit (`500ms`, `10s`,
 * `2m`, `1h`). Returns milliseconds, or `undefined` when the text is not a
 * duration.
 */
export function parseDuration(text: string): number | undefined {
  const match = /^(\d{1,9})(ms|s|m|h)$/.exec(text.trim());
  if (!match) return undefined;
  return Number(match[1]) * DURATION_UNIT_MS[match[2]];
}

function invalid(name: string, value: string, allowed: string): ConfigError {
  return new ConfigError(`invalid ${name}=${JSON.stringify(value)}: ${allowed}`);
}

function readInteger(
  env: Environment,
  name: string,
  fallback: number,
  min: number,
  max: number,
): number {
  const text = env[name]?.trim();
  if (text === undefined || text === "") return fallback;
  const value = /^\d{1,9}$/.test(text) ? Number(text) : NaN;
  if (!(value >= min && value <= max)) {
    throw invalid(name, env[name]!, `allowed: an integer from ${min} to ${max}`);
  }
  return value;
}

function readChoice<T extends string>(
  env: Environment,
  name: string,
  choices: readonly T[],
  fallback: T,
): T {
  const text = env[name]?.trim().toLowerCase();
  if (text === undefined || text === "") return fallback;
  if (!(choices as readonly string[]).includes(text)) {
    throw invalid(name, env[name]!, `allowed: ${choices.join(", ")}`);
  }
  return text as T;
}

function readDuration(env: Environment, name: string, fallback: string): number {
  const text = env[name]?.trim() || fallback;
  const ms = parseDuration(text);
  if (ms === undefined) {
    throw invalid(
      name,
      env[name]!,
      "allowed: a whole number with ms, s, m or h, e.g. 500ms, 10s, 2m",
    );
  }
  return ms;
}

function readPortOrOff(env: Environment, name: string, fallback: number): number | undefined {
  if (env[name]?.trim().toLowerCase() === "off") return undefined;
  const text = env[name]?.trim();
  if (text === undefined || text === "") return fallback;
  const value = /^\d{1,9}$/.test(text) ? Number(text) : NaN;
  if (!(value >= 1 && value <= 65_535)) {
    throw invalid(name, env[name]!, "allowed: an integer from 1 to 65535, or off");
  }
  return value;
}

function readPorts(env: Environment): number[] {
  const text = env.TCP_PORT?.trim();
  if (text === undefined || text === "") return [3333];
  const ports = text.split(",").map((part) => /^\d{1,5}$/.test(part.trim()) ? Number(part) : NaN);
  const valid = ports.every((port) => port >= 1 && port <= 65_535);
  if (!valid || new Set(ports).size !== ports.length) {
    throw invalid(
      "TCP_PORT",
      env.TCP_PORT!,
      "allowed: an integer from 1 to 65535, or a comma list of different ones",
    );
  }
  return ports;
}

function readBoolean(env: Environment, name: string, fallback: boolean): boolean {
  const text = env[name]?.trim().toLowerCase();
  if (text === undefined || text === "") return fallback;
  if (text === "true") return true;
  if (text === "false") return false;
  throw invalid(name, env[name]!, "allowed: true, false");
}

function readTrustedRanges(env: Environment): Cidr[] | undefined {
  const text = env.PROXY_PROTOCOL_TRUSTED?.trim();
  if (text === undefined || text === "") return undefined;
  const ranges = text.split(",").map(parseCidr);
  if (ranges.some((range) => range === undefined)) {
    throw invalid(
      "PROXY_PROTOCOL_TRUSTED",
      env.PROXY_PROTOCOL_TRUSTED!,
      "allowed: a comma list of IP addresses or CIDR ranges, e.g. 10.0.0.0/8,::1",
    );
  }
  return ranges as Cidr[];
}

/** `ECHO_PREFIX`: set, even to "" or text with a tab, turns on line mode (Istio takes any prefix). */
function readPrefix(env: Environment): string | undefined {
  return env.ECHO_PREFIX;
}

function readOptional(env: Environment, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value === "" ? undefined : value;
}

function readHost(env: Environment): string | undefined {
  const text = env.HOST?.trim();
  if (text === undefined || text === "") return undefined;
  const host = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  const isAddress = ipaddr.IPv4.isValidFourPartDecimal(host) || ipaddr.IPv6.isValid(host);
  if (!isAddress && host !== "localhost") {
    throw invalid(
      "HOST",
      env.HOST!,
      "allowed: an IPv4 or IPv6 address (0.0.0.0, ::, 127.0.0.1), or localhost",
    );
  }
  return host;
}

/**
 * Builds the frozen configuration from environment variables, validating
 * every value. Throws {@linkcode ConfigError} with a one-line message naming
 * the variable, its bad value and what is allowed.
 *
 * @example
 * ```ts
 * const config = loadConfig({ TCP_PORT: "4000", NODE_NAME: "EchoNode" });
 * ```
 */
export function loadConfig(env: Environment): Config {
  const config: Config = {
    ports: Object.freeze(readPorts(env)),
    host: readHost(env),
    banner: Object.freeze({
      nodeName: readOptional(env, "NODE_NAME"),
      podName: readOptional(env, "POD_NAME"),
      podNamespace: readOptional(env, "POD_NAMESPACE"),
      podIp: readOptional(env, "POD_IP"),
      serviceAccount: readOptional(env, "SERVICE_ACCOUNT"),
      serviceVersion: readOptional(env, "SERVICE_VERSION"),
    }),
    logLevel: readChoice(env, "LOG_LEVEL", LOG_LEVELS, "info"),
    logFormat: readChoice(env, "LOG_FORMAT", LOG_FORMATS, "text"),
    logDataBytes: readInteger(env, "LOG_DATA_BYTES", 1024, 0, MAX_LOG_DATA_BYTES),
    shutdownGraceMs: readDuration(env, "SHUTDOWN_GRACE", "10s"),
    adminPort: readPortOrOff(env, "ADMIN_PORT", 8080),
    drainDelayMs: readDuration(env, "DRAIN_DELAY", "0s"),
    maxConnections: readInteger(env, "MAX_CONNECTIONS", 10_000, 0, MAX_CONNECTIONS_LIMIT),
    idleTimeoutMs: readDuration(env, "IDLE_TIMEOUT", "0s"),
    showClientAddress: readBoolean(env, "SHOW_CLIENT_ADDRESS", false),
    bannerMode: readChoice(env, "BANNER_MODE", BANNER_MODES, "connect"),
    proxyProtocol: readChoice(env, "PROXY_PROTOCOL", PROXY_MODES, "off"),
    proxyTrusted: readTrustedRanges(env),
    proxyHeaderTimeoutMs: PROXY_HEADER_TIMEOUT_MS,
    echoPrefix: readPrefix(env),
    echoDelayMs: readDuration(env, "ECHO_DELAY", "0s"),
    closeAfterBytes: readInteger(env, "CLOSE_AFTER_BYTES", 0, 0, 999_999_999),
  };
  return Object.freeze(config);
}

/**
 * Applies positional arguments as Istio's tcp-echo server takes them:
 * `tcp-echo 9000,9001 hello` means `TCP_PORT=9000,9001 ECHO_PREFIX=hello`.
 * Arguments win over the environment.
 */
export function applyArguments(args: readonly string[], env: Environment): Environment {
  // After "--" every argument is positional; before it, PORTS never starts with "-" and
  // a PREFIX starting with "--" is far likelier a mistyped option.
  const separated = args[0] === "--";
  if (separated) args = args.slice(1);
  const option = separated
    ? undefined
    : args.find((arg, i) => arg.startsWith(i === 0 ? "-" : "--"));
  if (option !== undefined) {
    throw new ConfigError(
      `unknown option ${JSON.stringify(option)}: usage: tcp-echo [--help] [PORTS [PREFIX]]; ` +
        "everything else is set by environment variables, listed by --help",
    );
  }
  if (args.length > 2) {
    throw new ConfigError(
      `unexpected argument ${JSON.stringify(args[2])}: allowed: [PORTS [PREFIX]]; see --help`,
    );
  }
  const [ports, prefix] = args;
  return {
    ...env,
    ...(ports === undefined ? {} : { TCP_PORT: ports }),
    ...(prefix === undefined ? {} : { ECHO_PREFIX: prefix }),
  };
}

/** Renders the `--help` text: usage and the table of variables. */
export function renderHelp(): string {
  const width = Math.max(...CONFIG_VARIABLES.map((v) => v.name.length));
  const defaultWidth = Math.max(...CONFIG_VARIABLES.map((v) => v.defaultValue.length));
  const rows = CONFIG_VARIABLES.map((v) =>
    `  ${v.name.padEnd(width)}  ${v.defaultValue.padEnd(defaultWidth)}  ${v.meaning}`
  );
  return [
    "tcp-echo: a TCP echo server that says which node, pod and version answered.",
    "",
    "Usage: tcp-echo [--help] [PORTS [PREFIX]]",
    "       tcp-echo client HOST:PORT [probe|load] [options]   (see tcp-echo client --help)",
    "",
    "PORTS and PREFIX, as Istio's tcp-echo takes them, set TCP_PORT and ECHO_PREFIX.",
    "",
    "Configuration is read from environment variables:",
    `  ${"VARIABLE".padEnd(width)}  ${"DEFAULT".padEnd(defaultWidth)}  MEANING`,
    ...rows,
    "",
    "Logs go to standard output, one record per line. SIGTERM or SIGINT stops",
    "accepting, lets open connections finish for SHUTDOWN_GRACE, then exits 0;",
    `a second one (${REPEATED_SIGNAL_WINDOW_MS} ms or more after the first) exits at once.`,
    "",
  ].join("\n");
}

// ---------------------------------------------------------------------------
// Pure helpers: banner, addresses, log formatting
// ---------------------------------------------------------------------------

/**
 * Renders the banner sent right after accept: one line per set field, in a
 * fixed order. The first five lines are byte-identical to the original Go
 * server's. With no field set, the banner is empty.
 */
export function renderBanner(banner: BannerFields): Uint8Array {
  const lines = [
    banner.nodeName && `Welcome, you are connected to node ${banner.nodeName}.\n`,
    banner.podName && `Running on Pod ${banner.podName}.\n`,
    banner.podNamespace && `In namespace ${banner.podNamespace}.\n`,
    banner.podIp && `With IP address ${banner.podIp}.\n`,
    banner.serviceAccount && `Service ${banner.serviceAccount}.\n`,
    banner.serviceVersion && `Version ${banner.serviceVersion}.\n`,
  ];
  return new TextEncoder().encode(lines.filter(Boolean).join(""));
}

/** Shows an IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) as plain IPv4. */
export function unmapIPv4(hostname: string): string {
  const match = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(hostname);
  return match ? match[1] : hostname;
}

/** Formats a network address as `1.2.3.4:80` or `[::1]:80`. */
export function formatAddress(addr: Deno.Addr): string {
  if (addr.transport !== "tcp" && addr.transport !== "udp") return addr.transport;
  const host = unmapIPv4(addr.hostname);
  return host.includes(":") ? `[${host}]:${addr.port}` : `${host}:${addr.port}`;
}

const encoder = new TextEncoder();
const pad2 = (n: number) => String(n).padStart(2, "0");

/** Formats a time as the Go `log` package does, in UTC: `2026/11/25 07:32:29`. */
export function formatGoTimestamp(epochMs: number): string {
  const second = Math.floor(epochMs / 1_000);
  if (second !== lastTimestamp.second) {
    const d = new Date(second * 1_000);
    lastTimestamp.second = second;
    lastTimestamp.text =
      `${d.getUTCFullYear()}/${pad2(d.getUTCMonth() + 1)}/${pad2(d.getUTCDate())} ` +
      `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())}`;
  }
  return lastTimestamp.text;
}

/** Records of one second share their timestamp text. */
const lastTimestamp = { second: NaN, text: "" };

const DECIMAL_BYTE = Array.from({ length: 256 }, (_, b) => String(b));
const HEX_BYTE = Array.from({ length: 256 }, (_, b) => `\\x${b.toString(16).padStart(2, "0")}`);

/** The ASCII digits of each byte value, for {@linkcode formatRawBytes}. */
const DECIMAL_DIGITS = DECIMAL_BYTE.map((text) => Uint8Array.from(text, (c) => c.charCodeAt(0)));
const latin1 = new TextDecoder("latin1");

/** Formats bytes as Go prints a `[]byte`: `[104 101 108 108 111]`. */
export function formatRawBytes(bytes: Uint8Array): string {
  // Digits go straight into one byte array, decoded once: a 1 KiB chunk
  // would otherwise make a thousand small strings.
  const out = new Uint8Array(2 + bytes.length * 4);
  let o = 0;
  out[o++] = 0x5b;
  for (let i = 0; i < bytes.length; i++) {
    if (i > 0) out[o++] = 0x20;
    const digits = DECIMAL_DIGITS[bytes[i]];
    for (let k = 0; k < digits.length; k++) out[o++] = digits[k];
  }
  out[o++] = 0x5d;
  return latin1.decode(out.subarray(0, o));
}

/** Length of the valid UTF-8 sequence starting at `i`, or 0 if it is invalid. */
function utf8SequenceLength(bytes: Uint8Array, i: number, end: number): number {
  const b = bytes[i];
  let length: number;
  let lo = 0x80; // Range of the second byte: excludes overlongs, surrogates, > U+10FFFF.
  let hi = 0xbf;
  if (b >= 0xc2 && b <= 0xdf) length = 2;
  else if (b >= 0xe0 && b <= 0xef) {
    length = 3;
    if (b === 0xe0) lo = 0xa0;
    if (b === 0xed) hi = 0x9f;
  } else if (b >= 0xf0 && b <= 0xf4) {
    length = 4;
    if (b === 0xf0) lo = 0x90;
    if (b === 0xf4) hi = 0x8f;
  } else return 0;
  if (i + length > end || bytes[i + 1] < lo || bytes[i + 1] > hi) return 0;
  for (let k = 2; k < length; k++) if (bytes[i + k] < 0x80 || bytes[i + k] > 0xbf) return 0;
  return length;
}

/** How each byte below 0x80 is shown, and each invalid byte from 0x80 up: one table lookup. */
const SINGLE_BYTE_TEXT = Array.from({ length: 256 }, (_, b) => {
  if (b === 0x09) return "\\t";
  if (b === 0x0a) return "\\n";
  if (b === 0x0d) return "\\r";
  if (b === 0x5c) return "\\\\";
  if (b >= 0x20 && b < 0x7f) return String.fromCharCode(b);
  return HEX_BYTE[b];
});

/** The code point of the valid UTF-8 sequence of `length` bytes at `i`. */
function decodeCodePoint(bytes: Uint8Array, i: number, length: number): number {
  if (length === 2) return ((bytes[i] & 0x1f) << 6) | (bytes[i + 1] & 0x3f);
  if (length === 3) {
    return ((bytes[i] & 0x0f) << 12) | ((bytes[i + 1] & 0x3f) << 6) | (bytes[i + 2] & 0x3f);
  }
  return ((bytes[i] & 0x07) << 18) | ((bytes[i + 1] & 0x3f) << 12) |
    ((bytes[i + 2] & 0x3f) << 6) | (bytes[i + 3] & 0x3f);
}

/**
 * Shows received bytes as one line of text that cannot forge a log line:
 * one trailing `\n` is dropped (as the original server showed it), a
 * backslash becomes `\\`, `\t` `\n` `\r` are written so, every other control
 * character and every invalid UTF-8 byte becomes `\xNN`, and Unicode control
 * and line-separator characters become `\uNNNN`. Valid UTF-8 text is kept.
 *
 * @example
 * ```ts
 * escapeData(new TextEncoder().encode("a\r\nFAKE\n")); // "a\\r\\nFAKE"
 * ```
 */
export function escapeData(bytes: Uint8Array): string {
  const end = bytes.length > 0 && bytes[bytes.length - 1] === 0x0a
    ? bytes.length - 1
    : bytes.length;
  let out = "";
  let i = 0;
  while (i < end) {
    const b = bytes[i];
    const length = b < 0x80 ? 0 : utf8SequenceLength(bytes, i, end);
    if (length === 0) {
      out += SINGLE_BYTE_TEXT[b];
      i++;
      continue;
    }
    const codePoint = decodeCodePoint(bytes, i, length);
    out += codePoint < 0xa0 || codePoint === 0x2028 || codePoint === 0x2029
      ? `\\u${codePoint.toString(16).padStart(4, "0")}`
      : String.fromCodePoint(codePoint);
    i += length;
  }
  return out;
}

/**
 * Received bytes in a log record, rendered only when the record is written
 * (off the echo path): Go's `[104 101]` form in text, an array of numbers in
 * JSON.
 */
export class RawBytes {
  constructor(readonly bytes: Uint8Array) {}
  toString(): string {
    return formatRawBytes(this.bytes);
  }
  toJSON(): number[] {
    return Array.from(this.bytes);
  }
}

/** Received bytes shown as escaped text ({@linkcode escapeData}), rendered lazily. */
export class DataText {
  constructor(readonly bytes: Uint8Array) {}
  toString(): string {
    return escapeData(this.bytes);
  }
  toJSON(): string {
    return this.toString();
  }
}

const LEVEL_NAMES: Readonly<Record<LogLevel, string>> = {
  trace: "debug",
  debug: "debug",
  info: "info",
  warning: "warn",
  error: "error",
  fatal: "error",
};

/** A message template split once: `texts[0] {keys[0]} texts[1] ...`. */
interface ParsedTemplate {
  readonly texts: readonly string[];
  readonly keys: readonly string[];
}

const templateCache = new Map<string, ParsedTemplate>();

/** Splits a message template at its `{name}` placeholders (cached: templates are constants). */
function parseTemplate(template: string): ParsedTemplate {
  let parsed = templateCache.get(template);
  if (!parsed) {
    const parts = template.split(/\{(\w+)\}/);
    parsed = {
      texts: parts.filter((_, i) => i % 2 === 0),
      keys: parts.filter((_, i) => i % 2 === 1),
    };
    templateCache.set(template, parsed);
  }
  return parsed;
}

/** Quotes a text-format fact when it is empty or has spaces, quotes or controls. */
function formatFactValue(value: unknown): string {
  const text = value instanceof Error ? value.message : String(value);
  if (text !== "" && /^[\x21-\x7e]+$/.test(text) && !text.includes('"')) return text;
  return JSON.stringify(text);
}

function templateText(record: LogRecord): string {
  return typeof record.rawMessage === "string" ? record.rawMessage : record.rawMessage.join("");
}

/**
 * Formats a record as one text line: a Go-style UTC timestamp, the
 * connection id (when there is one) and ` - `, the message with its inline
 * values, then the other facts as ` key=value`, then `level=` for warnings
 * and errors.
 */
export function formatTextRecord(record: LogRecord): string {
  const { texts, keys } = parseTemplate(templateText(record));
  const props = record.properties;
  let line = formatGoTimestamp(record.timestamp) + " ";
  if (props.id !== undefined) line += `${props.id} - `;
  line += texts[0];
  for (let i = 0; i < keys.length; i++) line += String(props[keys[i]]) + texts[i + 1];
  for (const key in props) {
    if (key === "id" || keys.includes(key)) continue;
    line += ` ${key}=${formatFactValue(props[key])}`;
  }
  const level = LEVEL_NAMES[record.level];
  if (level === "warn" || level === "error") line += ` level=${level}`;
  return line + "\n";
}

/**
 * Formats a record as one JSON object on one line: `ts` (RFC 3339), `level`,
 * `msg` (the message without its inline values), `id` when there is one, and
 * every fact as a field.
 */
export function formatJsonRecord(record: LogRecord): string {
  const msg = templateText(record).replace(/:? *\{\w+\}/g, "").trim();
  const object: Record<string, unknown> = {
    ts: new Date(record.timestamp).toISOString(),
    level: LEVEL_NAMES[record.level],
    msg,
  };
  for (const [key, value] of Object.entries(record.properties)) {
    object[key] = value instanceof Error ? value.message : value;
  }
  return JSON.stringify(object) + "\n";
}

// ---------------------------------------------------------------------------
// Logging setup
// ---------------------------------------------------------------------------

/** LogTape category of every record the server writes. */
export const LOG_CATEGORY = ["tcp-echo"];
const log = getLogger(LOG_CATEGORY);

const LOGTAPE_LEVEL: Readonly<Record<LogLevelName, LogLevel>> = {
  debug: "debug",
  info: "info",
  warn: "warning",
  error: "error",
};

/** Records waiting for output at most; more are dropped (and counted) until it catches up. */
export const MAX_PENDING_RECORDS = 20_000;
/** Bytes of received data held by waiting data records at most (each holds up to `LOG_DATA_BYTES`). */
export const MAX_PENDING_DATA_BYTES = 32 * 1024 * 1024;

/**
 * A LogTape sink that batches: records wait in memory and are formatted and
 * written together, in one write, once the current task is done (and again
 * whenever a write completes), so echoing never waits for the log and a busy
 * connection costs one write per batch, not one per record. (LogTape's own
 * non-blocking stream sink writes records one by one and silently drops the
 * oldest once 2,000 wait, which lost records under data-heavy streams.) When
 * `maxPending` records wait, newer records that `isExpendable` are dropped;
 * the others (connection and lifecycle records) only beyond twice that. A
 * record then says how many were dropped. Dispose it to flush.
 */
export class BatchingSink implements AsyncDisposable {
  /** Records, and where dropping began, the count of records dropped since. */
  #pending: (LogRecord | DropCount)[] = [];
  #dropCount: DropCount | undefined;
  #writing: Promise<void> | undefined;
  #scheduled = false;
  #buffer = new Uint8Array(65_536);

  constructor(
    readonly write: (bytes: Uint8Array) => Promise<unknown>,
    readonly format: (record: LogRecord) => string,
    readonly maxPending: number = MAX_PENDING_RECORDS,
    readonly isExpendable: (record: LogRecord) => boolean = () => true,
  ) {}

  /** The sink to give LogTape. */
  readonly sink: Sink = (record) => {
    const limit = this.isExpendable(record) ? this.maxPending : 2 * this.maxPending;
    if (this.#pending.length >= limit) {
      if (this.#dropCount === undefined) {
        // The report goes where the gap is.
        this.#dropCount = { dropped: 0 };
        this.#pending.push(this.#dropCount);
      }
      this.#dropCount.dropped++;
      return;
    }
    this.#pending.push(record);
    if (!this.#scheduled && this.#writing === undefined) {
      this.#scheduled = true;
      setTimeout(() => this.#drain(), 0);
    }
  };

  #drain(): void {
    this.#scheduled = false;
    if (this.#writing !== undefined || this.#pending.length === 0) return;
    const entries = this.#pending;
    this.#pending = [];
    this.#dropCount = undefined;
    let length = 0;
    for (const entry of entries) {
      const text = this.format("dropped" in entry ? dropRecord(entry.dropped) : entry);
      // Encoded into one reused buffer: no write is in flight while it fills.
      if (this.#buffer.length - length < text.length * 3) {
        const grown = new Uint8Array(Math.max(this.#buffer.length * 2, length + text.length * 3));
        grown.set(this.#buffer.subarray(0, length));
        this.#buffer = grown;
      }
      length += encoder.encodeInto(text, this.#buffer.subarray(length)).written;
    }
    this.#writing = this.write(this.#buffer.subarray(0, length)).then(
      () => {},
      () => {}, // Nowhere left to report a failing log output.
    ).finally(() => {
      this.#writing = undefined;
      if (this.#pending.length > 0) this.#drain();
    });
  }

  /** Writes everything still waiting. */
  async flush(): Promise<void> {
    while (this.#writing !== undefined || this.#pending.length > 0) {
      if (this.#writing === undefined) this.#drain();
      await this.#writing;
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.flush();
  }
}

/** How many records a {@linkcode BatchingSink} dropped at one point of its output. */
interface DropCount {
  dropped: number;
}

function dropRecord(dropped: number): LogRecord {
  return {
    category: LOG_CATEGORY,
    level: "warning",
    timestamp: Date.now(),
    rawMessage: "Log output fell behind; records dropped.",
    message: ["Log output fell behind; records dropped."],
    properties: { dropped_records: dropped },
  };
}

/** Data records are the ones to drop first when the log output falls behind. */
const isDataRecord = (record: LogRecord) =>
  record.properties.raw instanceof RawBytes || record.properties.data instanceof DataText;

/**
 * The production sink: records formatted as configured, written to standard
 * output in batches. Fewer records may wait when each can hold more data, so
 * a slow log reader costs at most {@linkcode MAX_PENDING_DATA_BYTES} of data;
 * data records are dropped first, so connection and lifecycle records survive.
 */
export function createStdoutSink(format: LogFormat, logDataBytes: number): BatchingSink {
  const perRecord = logDataBytes + 256;
  return new BatchingSink(
    (bytes) => writeAllTo(Deno.stdout, bytes),
    format === "json" ? formatJsonRecord : formatTextRecord,
    Math.max(100, Math.min(MAX_PENDING_RECORDS, Math.floor(MAX_PENDING_DATA_BYTES / perRecord))),
    isDataRecord,
  );
}

async function writeAllTo(target: { write(p: Uint8Array): Promise<number> }, bytes: Uint8Array) {
  let written = 0;
  while (written < bytes.length) written += await target.write(bytes.subarray(written));
}

/**
 * Points LogTape at `sink` for the server's category at the configured level
 * (and LogTape's own warnings). Returns a function that flushes and detaches.
 */
export async function setupLogging(
  level: LogLevelName,
  sink: Sink,
): Promise<() => Promise<void>> {
  await configure({
    reset: true,
    sinks: { main: sink },
    loggers: [
      { category: LOG_CATEGORY, lowestLevel: LOGTAPE_LEVEL[level], sinks: ["main"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["main"] },
    ],
  });
  return resetLogging;
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

/** Why a connection ended, as logged in `reason=` and counted in metrics. */
export const CLOSE_REASONS = ["eof", "reset", "idle", "shutdown", "fault", "error"] as const;
/** A {@linkcode CLOSE_REASONS} value. */
export type CloseReason = typeof CLOSE_REASONS[number];

/** Why a connection was closed right after accept, without a banner. */
export const REJECT_REASONS = [
  "max_connections",
  "proxy_untrusted",
  "proxy_invalid",
  "proxy_missing",
  "proxy_timeout",
] as const;
/** A {@linkcode REJECT_REASONS} value. */
export type RejectReason = typeof REJECT_REASONS[number];

/** Upper bounds (seconds) of the connection duration histogram. */
const DURATION_BUCKETS_S = [0.001, 0.01, 0.1, 1, 10, 60, 300, 1_800, 3_600];

/**
 * One listening port's counters as plain numbers: the echo path only adds
 * to them; the Prometheus exporter reads them when scraped.
 */
export class PortStats {
  /** Connections admitted to echo (past the limit and any PROXY header). */
  accepted = 0;
  /** Echo connections open now. */
  active = 0;
  readonly rejected: Record<RejectReason, number> = {
    max_connections: 0,
    proxy_untrusted: 0,
    proxy_invalid: 0,
    proxy_missing: 0,
    proxy_timeout: 0,
  };
  readonly closed: Record<CloseReason, number> = {
    eof: 0,
    reset: 0,
    idle: 0,
    shutdown: 0,
    fault: 0,
    error: 0,
  };
  bytesReceived = 0;
  bytesSent = 0;
}

/** The server's counters, one {@linkcode PortStats} per listening port. */
export class ServerStats {
  readonly #ports = new Map<number, PortStats>();

  /** The counters of `port`, created on first use. */
  forPort(port: number): PortStats {
    let stats = this.#ports.get(port);
    if (!stats) {
      stats = new PortStats();
      this.#ports.set(port, stats);
    }
    return stats;
  }

  /** Failed accepts by listening port (echo and admin) and kind. */
  readonly acceptErrors: Map<number, Record<AcceptErrorKind, number>> = new Map();

  /** Counts a failed `accept()` on `port`. */
  countAcceptError(port: number, kind: AcceptErrorKind): void {
    let counts = this.acceptErrors.get(port);
    if (!counts) {
      counts = { connection: 0, resources: 0 };
      this.acceptErrors.set(port, counts);
    }
    counts[kind]++;
  }

  /** Every port with its counters, in the order the ports were added. */
  entries(): IterableIterator<[number, PortStats]> {
    return this.#ports.entries();
  }
}

/** The Prometheus side of the metrics: a registry whose values come from `stats`. */
export interface MetricsExporter {
  /** The exposition, in Prometheus text format. */
  render(): Promise<string>;
  /** The Content-Type of {@linkcode MetricsExporter.render}'s text. */
  readonly contentType: string;
  /** Records one finished connection's duration. */
  observeDuration(port: number, seconds: number): void;
}

/** Builds the exporter (prom-client) over `stats`; nothing is counted twice. */
export function createMetricsExporter(stats: ServerStats): MetricsExporter {
  const registry = new Registry();
  const registers = [registry];
  /** A counter or gauge whose values are read from `stats` at each scrape. */
  const fromStats = (
    kind: "counter" | "gauge",
    name: string,
    help: string,
    values: (port: PortStats) => [Record<string, string>, number][],
  ): void => {
    const options = { name, help, labelNames: ["port", "reason"], registers, collect };
    const metric = kind === "counter" ? new Counter(options) : new Gauge(options);
    function collect() {
      metric.reset();
      for (const [port, portStats] of stats.entries()) {
        for (const [labels, value] of values(portStats)) {
          const all = { port: String(port), ...labels };
          if (metric instanceof Counter) metric.inc(all, value);
          else metric.set(all, value);
        }
      }
    }
  };
  fromStats("counter", "tcp_echo_connections_total", "Echo connections admitted.", (p) => [
    [{}, p.accepted],
  ]);
  fromStats("gauge", "tcp_echo_connections_active", "Echo connections open now.", (p) => [
    [{}, p.active],
  ]);
  fromStats(
    "counter",
    "tcp_echo_connections_rejected_total",
    "Connections closed right after accept, by reason.",
    (p) => REJECT_REASONS.map((reason) => [{ reason }, p.rejected[reason]]),
  );
  fromStats(
    "counter",
    "tcp_echo_connections_closed_total",
    "Echo connections ended, by reason.",
    (p) => CLOSE_REASONS.map((reason) => [{ reason }, p.closed[reason]]),
  );
  fromStats("counter", "tcp_echo_received_bytes_total", "Bytes received from clients.", (p) => [
    [{}, p.bytesReceived],
  ]);
  fromStats(
    "counter",
    "tcp_echo_sent_bytes_total",
    "Bytes sent to clients (banners and echoes).",
    (p) => [[{}, p.bytesSent]],
  );
  new Counter({
    name: "tcp_echo_accept_errors_total",
    help: "Failed accepts by listening port: connection (reset while queued) or resources.",
    labelNames: ["port", "kind"],
    registers,
    collect(this: Counter) {
      this.reset();
      for (const [port, counts] of stats.acceptErrors) {
        for (const kind of ACCEPT_ERROR_KINDS) this.inc({ port: String(port), kind }, counts[kind]);
      }
    },
  });
  const duration = new Histogram({
    name: "tcp_echo_connection_duration_seconds",
    help: "How long echo connections stayed open.",
    buckets: DURATION_BUCKETS_S,
    labelNames: ["port"],
    registers,
  });
  new Gauge({
    name: "tcp_echo_build_info",
    help: "Always 1; the labels say which build runs.",
    labelNames: ["version", "deno"],
    registers,
  }).set({ version: VERSION, deno: Deno.version.deno }, 1);
  return {
    render: () => registry.metrics(),
    contentType: registry.contentType,
    observeDuration: (port, seconds) => duration.observe({ port }, seconds),
  };
}

// ---------------------------------------------------------------------------
// Connection handling
// ---------------------------------------------------------------------------

/** First read buffer of a connection; idle connections keep only this much. */
const INITIAL_BUFFER_BYTES = 256;
/** Read buffers grow (×4) when a read fills them, up to this size. */
const MAX_BUFFER_BYTES = 65_536;
/**
 * The ceiling when data records are on: each read costs two records, so
 * fewer, larger reads keep logging's share of a busy stream small (measured:
 * 47% of the logging-off throughput with 64 KiB, 84% with 256 KiB). Without
 * logging, 64 KiB was faster.
 */
const MAX_BUFFER_BYTES_LOGGING = 262_144;

const PEER_GONE_ERRORS = [
  Deno.errors.ConnectionReset,
  Deno.errors.BrokenPipe,
  Deno.errors.ConnectionAborted,
  Deno.errors.UnexpectedEof,
];

const NO_BYTES = new Uint8Array(0);
const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;

/** One accepted echo connection and what is known about it. */
class EchoConnection {
  readonly id = crypto.randomUUID();
  readonly startedAt = performance.now();
  /** When a byte last moved either way (kept only with `IDLE_TIMEOUT`). */
  lastActiveAt = this.startedAt;
  /** A write is waiting for the client to take the bytes: the connection is not idle. */
  writing = false;
  bytesIn = 0;
  bytesOut = 0;
  /** Echoed bytes (not the banner), for `CLOSE_AFTER_BYTES`. */
  bytesEchoed = 0;
  /** Set when the server closes the socket from outside (idle, shutdown). */
  closedBy: CloseReason | undefined;
  /** The client's address as logged and shown (the original one, behind a PROXY header). */
  client = "";
  /** The banner is still to be sent (`BANNER_MODE` connect or first-data). */
  bannerDue = false;
  /** Line mode's state, when `ECHO_PREFIX` is set. */
  lines: LineAnswerer | undefined;
  /** The `IDLE_TIMEOUT` timer, when set. */
  idleTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    readonly conn: Deno.TcpConn,
    readonly port: number,
    /** The counters of the port it came in on. */
    readonly stats: PortStats,
  ) {}

  /** Closes the socket from outside; the pending read or write then fails. */
  closeFor(reason: CloseReason): void {
    if (this.closedBy !== undefined) return;
    this.closedBy = reason;
    try {
      this.conn.close();
    } catch {
      // It ended on its own meanwhile.
    }
  }
}

/** What the connection handler needs from its server. */
interface ConnectionContext {
  readonly config: Config;
  /** The banner lines that do not depend on the connection. */
  readonly banner: Uint8Array;
  /** `ECHO_PREFIX` and a space, encoded; `undefined` for byte-exact echo. */
  readonly linePrefix: Uint8Array | undefined;
  readonly metrics: MetricsExporter;
  /** Data records are on (and not filtered out by the level). */
  readonly logData: boolean;
  /** How large a connection's read buffer may grow. */
  readonly maxBufferBytes: number;
  /** Echoed bytes after which a connection is closed (`CLOSE_AFTER_BYTES`), else Infinity. */
  readonly echoLimit: number;
}

/** A connection refused after accept because of its PROXY header (or lack of one). */
class ProxyRefusal extends Error {
  constructor(readonly reason: RejectReason, readonly detail: string) {
    super(detail);
  }
}

/** Where a connection comes from, once any PROXY header is read. */
interface ConnectionOrigin {
  /** The original client (from the header), else the socket's peer. */
  readonly client: Deno.NetAddr;
  /** The proxy's address, when a header named another client. */
  readonly proxy: Deno.NetAddr | undefined;
  /** Bytes that came after the header: the first data to echo. */
  readonly firstData: Uint8Array;
  /** A read still pending when an optional header's wait ran out. */
  readonly pendingRead: Promise<Uint8Array | null> | undefined;
}

/** What a race against the PROXY header deadline resolves with when the deadline wins. */
const TIMED_OUT = Symbol("timed out");

/**
 * Reads the PROXY header the configuration asks for, within
 * `config.proxyHeaderTimeoutMs`. Throws {@linkcode ProxyRefusal} when the
 * connection must be refused.
 */
async function readOrigin(c: EchoConnection, config: Config): Promise<ConnectionOrigin> {
  const peer = c.conn.remoteAddr;
  const mode = config.proxyProtocol;
  if (mode === "off") {
    return { client: peer, proxy: undefined, firstData: NO_BYTES, pendingRead: undefined };
  }
  const trusted = config.proxyTrusted === undefined ||
    isTrusted(peer.hostname, config.proxyTrusted);
  if (!trusted && mode !== "optional") {
    throw new ProxyRefusal("proxy_untrusted", "peer not in PROXY_PROTOCOL_TRUSTED");
  }
  const accept = mode === "optional" ? "any" : mode;
  const buffer = new Uint8Array(V2_MAX_BYTES);
  let filled = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<typeof TIMED_OUT>((resolve) => {
    timer = setTimeout(() => resolve(TIMED_OUT), config.proxyHeaderTimeoutMs);
  });
  try {
    while (true) {
      const result = parseProxyHeader(buffer.subarray(0, filled), accept);
      if (result.status === "ok") {
        if (!trusted) {
          throw new ProxyRefusal("proxy_untrusted", "PROXY header from an untrusted peer");
        }
        const source = result.header.source;
        return {
          client: source ? { transport: "tcp", ...source } : peer,
          proxy: source ? peer : undefined,
          firstData: buffer.slice(result.length, filled),
          pendingRead: undefined,
        };
      }
      if (result.status === "invalid") throw new ProxyRefusal("proxy_invalid", result.reason);
      if (result.status === "absent") {
        if (mode !== "optional") throw new ProxyRefusal("proxy_missing", "no PROXY header");
        return {
          client: peer,
          proxy: undefined,
          firstData: buffer.slice(0, filled),
          pendingRead: undefined,
        };
      }
      const read = c.conn.read(buffer.subarray(filled));
      const outcome = await Promise.race([read, deadline]);
      if (outcome === TIMED_OUT) {
        if (mode === "optional") {
          // No complete header in time: what came (if anything) is data, and the read goes on.
          const at = filled;
          const pendingRead = read.then((n) => n === null ? null : buffer.slice(at, at + n));
          return { client: peer, proxy: undefined, firstData: buffer.slice(0, at), pendingRead };
        }
        read.catch(() => {}); // It fails when the socket is closed just below.
        c.closeFor("error");
        throw new ProxyRefusal(
          "proxy_timeout",
          `no complete PROXY header in ${config.proxyHeaderTimeoutMs} ms`,
        );
      }
      if (outcome === null) {
        throw new ProxyRefusal("proxy_missing", "connection ended before a PROXY header");
      }
      filled += outcome;
    }
  } catch (error) {
    if (error instanceof ProxyRefusal) throw error;
    throw new ProxyRefusal(
      "proxy_missing",
      `connection failed before a PROXY header: ${(error as Error).message}`,
    );
  } finally {
    clearTimeout(timer);
  }
}

async function writeAll(c: EchoConnection, bytes: Uint8Array): Promise<void> {
  let written = 0;
  c.writing = true;
  try {
    while (written < bytes.length) {
      const n = await c.conn.write(bytes.subarray(written));
      written += n;
      c.bytesOut += n;
      c.stats.bytesSent += n;
      if (c.idleTimer !== undefined) c.lastActiveAt = performance.now();
    }
  } finally {
    c.writing = false;
  }
}

function logReceived(id: string, chunk: Uint8Array, limit: number): void {
  const shown = chunk.slice(0, limit);
  const omitted = chunk.length - shown.length;
  const facts = omitted > 0 ? { omitted_bytes: omitted } : {};
  log.info("Received Raw Data: {raw}", { id, raw: new RawBytes(shown), ...facts });
  log.info("Received Data (converted to string): {data}", {
    id,
    data: new DataText(shown),
    ...facts,
  });
}

/** Joins byte arrays into one. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/**
 * Line mode (`ECHO_PREFIX`): collects received bytes into lines and answers
 * each complete line as `prefix + " " + line` (its `\n` or `\r\n` kept), the
 * bytes Istio's tcp-echo sends. At most {@linkcode MAX_LINE_BYTES} of a line
 * are held: a longer line is answered as it arrives, its prefix first and its
 * newline last, so it still reads as one line (a `\r` is held back, so `\r\n`
 * goes out together). What is left at the end is answered as a line of its own.
 * Pure: bytes in, answers out.
 */
export class LineAnswerer {
  #pending: Uint8Array | undefined;
  #pendingLength = 0;
  /** The current line's prefix and first bytes are already answered. */
  #begun = false;

  constructor(readonly prefix: Uint8Array, readonly maxLineBytes: number = MAX_LINE_BYTES) {}

  /** The answers to the lines that `chunk` completes or (when too long to hold) continues. */
  push(chunk: Uint8Array): Uint8Array {
    const answers: Uint8Array[] = [];
    let start = 0;
    while (start < chunk.length) {
      const newline = chunk.indexOf(NEWLINE, start);
      if (newline >= 0) {
        answers.push(this.#answer(chunk.subarray(start, newline + 1)));
        this.#begun = false;
        start = newline + 1;
        continue;
      }
      const rest = chunk.subarray(start);
      if (this.#pendingLength + rest.length < this.maxLineBytes) this.#keep(rest);
      else {
        const heldBack = rest[rest.length - 1] === CARRIAGE_RETURN ? 1 : 0;
        answers.push(this.#answer(rest.subarray(0, rest.length - heldBack)));
        this.#begun = true;
        this.#keep(rest.subarray(rest.length - heldBack));
      }
      break;
    }
    return answers.length === 1 ? answers[0] : concatBytes(answers);
  }

  /** The end of a last line without `\n` (at half-close), with one added, else nothing. */
  finish(): Uint8Array {
    if (this.#pendingLength === 0 && !this.#begun) return NO_BYTES;
    const answer = this.#answer(Uint8Array.of(NEWLINE));
    this.#begun = false;
    return answer;
  }

  #keep(bytes: Uint8Array): void {
    this.#pending ??= new Uint8Array(this.maxLineBytes);
    this.#pending.set(bytes, this.#pendingLength);
    this.#pendingLength += bytes.length;
  }

  #answer(rest: Uint8Array): Uint8Array {
    const kept = this.#pending?.subarray(0, this.#pendingLength) ?? NO_BYTES;
    const answer = concatBytes([this.#begun ? NO_BYTES : this.prefix, kept, rest]);
    this.#pendingLength = 0;
    return answer;
  }
}

/** Signals that `CLOSE_AFTER_BYTES` was reached. */
class FaultClose extends Error {}

/**
 * Serves one connection: PROXY header (if configured), banner, then a
 * read/echo loop on one buffer, so at most one buffer of data is in flight
 * (a client that never reads stops the server from reading). Never throws:
 * every ending is logged with a reason.
 */
async function serveConnection(c: EchoConnection, context: ConnectionContext): Promise<void> {
  const { conn, stats } = c;
  const { config } = context;
  let origin: ConnectionOrigin;
  try {
    conn.setNoDelay(true);
    origin = await readOrigin(c, config);
  } catch (error) {
    const refusal = error instanceof ProxyRefusal
      ? error
      : new ProxyRefusal("proxy_missing", String(error));
    stats.rejected[refusal.reason]++;
    log.info("Connection refused: {detail}", {
      id: c.id,
      peer: formatAddress(conn.remoteAddr),
      port: c.port,
      reason: refusal.reason,
      detail: refusal.detail,
    });
    c.closeFor("error");
    return;
  }
  stats.accepted++;
  stats.active++;
  c.client = formatAddress(origin.client);
  const opened: Record<string, unknown> = { id: c.id, client: c.client, port: c.port };
  if (origin.proxy) opened.peer = formatAddress(origin.proxy);
  log.info("TCP connection open.", opened);

  // Everything per connection lives in `c`; the helpers below are shared,
  // so an idle connection holds no closures of its own.
  c.bannerDue = config.bannerMode !== "off";
  if (context.linePrefix) c.lines = new LineAnswerer(context.linePrefix);
  if (config.idleTimeoutMs > 0) {
    c.idleTimer = setTimeout(checkIdle, config.idleTimeoutMs, c, config.idleTimeoutMs);
  }
  let reason: CloseReason = "eof";
  let failure: unknown;
  try {
    if (c.bannerDue && config.bannerMode === "connect") await sendBanner(c, context);
    if (origin.firstData.length > 0) await received(c, context, origin.firstData);
    let ended = false;
    if (origin.pendingRead) {
      const first = await origin.pendingRead;
      if (first === null) ended = true;
      else await received(c, context, first);
    }
    let buffer = new Uint8Array(INITIAL_BUFFER_BYTES);
    while (!ended) {
      const n = await conn.read(buffer);
      if (n === null) break;
      await received(c, context, buffer.subarray(0, n));
      if (n === buffer.length && buffer.length < context.maxBufferBytes) {
        buffer = new Uint8Array(buffer.length * 4);
      }
    }
    // Deno reports a reset during read as end of stream. A zero-length
    // write sends nothing, succeeds after a FIN and fails after a RST.
    await conn.write(NO_BYTES);
    if (c.lines) await answer(c, context, c.lines.finish());
  } catch (error) {
    if (error instanceof FaultClose) reason = "fault";
    else if (c.closedBy !== undefined) reason = c.closedBy;
    else if (PEER_GONE_ERRORS.some((type) => error instanceof type)) reason = "reset";
    else {
      reason = "error";
      failure = error;
    }
  } finally {
    clearTimeout(c.idleTimer);
    c.closeFor(reason);
    stats.active--;
  }
  const durationMs = performance.now() - c.startedAt;
  stats.closed[reason]++;
  context.metrics.observeDuration(c.port, durationMs / 1_000);
  const facts: Record<string, unknown> = {
    id: c.id,
    reason,
    bytes_in: c.bytesIn,
    bytes_out: c.bytesOut,
    duration_ms: Math.round(durationMs),
    port: c.port,
  };
  if (failure !== undefined) facts.error = failure;
  log.info("TCP connection closed.", facts);
}

/** Handles bytes received: count, log, banner if due, delay fault, answer. */
async function received(
  c: EchoConnection,
  context: ConnectionContext,
  chunk: Uint8Array,
): Promise<void> {
  const { config } = context;
  c.bytesIn += chunk.length;
  c.stats.bytesReceived += chunk.length;
  if (c.idleTimer !== undefined) c.lastActiveAt = performance.now();
  if (context.logData) logReceived(c.id, chunk, config.logDataBytes);
  if (c.bannerDue) await sendBanner(c, context);
  if (config.echoDelayMs > 0) await pause(config.echoDelayMs);
  await answer(c, context, c.lines ? c.lines.push(chunk) : chunk);
}

async function sendBanner(c: EchoConnection, context: ConnectionContext): Promise<void> {
  c.bannerDue = false;
  const banner = context.config.showClientAddress
    ? concatBytes([context.banner, encoder.encode(`Your address is ${c.client}.\n`)])
    : context.banner;
  if (banner.length > 0) await writeAll(c, banner);
}

/** Writes an answer, stopping at `CLOSE_AFTER_BYTES` (then throws {@linkcode FaultClose}). */
async function answer(
  c: EchoConnection,
  context: ConnectionContext,
  bytes: Uint8Array,
): Promise<void> {
  if (bytes.length === 0) return;
  const allowed = Math.min(bytes.length, context.echoLimit - c.bytesEchoed);
  await writeAll(c, allowed < bytes.length ? bytes.subarray(0, allowed) : bytes);
  c.bytesEchoed += allowed;
  if (c.bytesEchoed >= context.echoLimit) throw new FaultClose();
}

/**
 * Closes `c` once no byte moved either way for `timeoutMs`, else re-arms for
 * the rest. A pending write counts as moving: the kernel wakes a blocked
 * writer only after a third of its send buffer drained, which takes seconds
 * for a slow reader that is reading all the while.
 */
function checkIdle(c: EchoConnection, timeoutMs: number): void {
  if (c.writing) c.lastActiveAt = performance.now();
  const idleMs = performance.now() - c.lastActiveAt;
  if (idleMs >= timeoutMs) c.closeFor("idle");
  else c.idleTimer = setTimeout(checkIdle, timeoutMs - idleMs, c, timeoutMs);
}

// ---------------------------------------------------------------------------
// Admin HTTP server: health, readiness, metrics
// ---------------------------------------------------------------------------

/** What the admin endpoints report on. */
interface AdminState {
  isReady(): boolean;
  readonly metrics: MetricsExporter;
}

/** An admin answer: status, headers and body. */
export interface AdminResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

const textResponse = (
  status: number,
  body: string,
  headers: Record<string, string> = {},
): AdminResponse => ({
  status,
  headers: { "content-type": "text/plain; charset=utf-8", ...headers },
  body,
});

/**
 * Answers one admin request: `GET /healthz` (200 while the process works),
 * `GET /readyz` (200 while accepting and not draining, else 503),
 * `GET /metrics` (Prometheus text). Other paths 404, other methods 405.
 */
export async function handleAdminRequest(
  method: string,
  path: string,
  state: AdminState,
): Promise<AdminResponse> {
  if (!["/healthz", "/readyz", "/metrics"].includes(path)) {
    return textResponse(404, "not found\n");
  }
  if (method !== "GET" && method !== "HEAD") {
    return textResponse(405, "method not allowed\n", { allow: "GET, HEAD" });
  }
  if (path === "/healthz") return textResponse(200, "ok\n");
  if (path === "/readyz") {
    return state.isReady() ? textResponse(200, "ready\n") : textResponse(503, "not ready\n");
  }
  return {
    status: 200,
    headers: { "content-type": state.metrics.contentType },
    body: await state.metrics.render(),
  };
}

/** The method and path of an HTTP/1.x request head, or `undefined` when it is not one. */
export function parseRequestHead(head: string): { method: string; path: string } | undefined {
  const match = /^([A-Z]{1,16}) (\S+) HTTP\/1\.[01]\r?\n/.exec(head);
  if (!match) return undefined;
  const target = match[2];
  const path = target.startsWith("/") ? target : URL.parse(target)?.pathname;
  return path === undefined ? undefined : { method: match[1], path: path.replace(/\?.*$/, "") };
}

const STATUS_TEXT: Readonly<Record<number, string>> = {
  200: "OK",
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  503: "Service Unavailable",
};

/** An admin answer as HTTP/1.1 bytes; the connection closes after it. */
export function renderResponse(response: AdminResponse, withBody: boolean): Uint8Array {
  const body = encoder.encode(response.body);
  const headers = {
    ...response.headers,
    "content-length": String(body.length),
    connection: "close",
  };
  const head = `HTTP/1.1 ${response.status} ${STATUS_TEXT[response.status] ?? ""}\r\n` +
    Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join("") + "\r\n";
  return concatBytes([encoder.encode(head), withBody ? body : NO_BYTES]);
}

/** A request head larger than this is answered 400. */
const ADMIN_MAX_HEAD_BYTES = 8_192;
/** A request that has not arrived whole by then is dropped. */
const ADMIN_REQUEST_TIMEOUT_MS = 5_000;
const HEAD_END = encoder.encode("\r\n\r\n");

/** Reads an HTTP request head (up to its blank line); `undefined` when it is too large or cut. */
async function readRequestHead(conn: Deno.Conn): Promise<string | undefined> {
  const buffer = new Uint8Array(ADMIN_MAX_HEAD_BYTES);
  let filled = 0;
  while (filled < buffer.length) {
    const n = await conn.read(buffer.subarray(filled));
    if (n === null) return undefined;
    filled += n;
    const head = buffer.subarray(0, filled);
    if (indexOfBytes(head, HEAD_END) >= 0) return latin1.decode(head);
  }
  return undefined;
}

/** Where `needle` first starts in `haystack`, or -1. */
function indexOfBytes(haystack: Uint8Array, needle: Uint8Array): number {
  for (let i = haystack.indexOf(needle[0]); i >= 0; i = haystack.indexOf(needle[0], i + 1)) {
    if (i + needle.length > haystack.length) return -1;
    if (needle.every((byte, k) => haystack[i + k] === byte)) return i;
  }
  return -1;
}

/** Serves one admin request on `conn` and closes it. Never throws. */
async function serveAdminConnection(conn: Deno.TcpConn, state: AdminState): Promise<void> {
  const timer = setTimeout(closeQuietly, ADMIN_REQUEST_TIMEOUT_MS, conn);
  try {
    const head = await readRequestHead(conn);
    const request = head === undefined ? undefined : parseRequestHead(head);
    const response = request === undefined
      ? textResponse(400, "bad request\n")
      : await handleAdminRequest(request.method, request.path, state);
    await writeAllTo(conn, renderResponse(response, request?.method !== "HEAD"));
    // Probes come every few seconds: build nothing for a record the level filters out.
    if (log.isEnabledFor("debug")) {
      log.debug("Admin request.", {
        method: request?.method ?? "-",
        path: request?.path ?? "-",
        status: response.status,
      });
    }
  } catch (error) {
    log.debug("Admin connection failed.", { error });
  } finally {
    clearTimeout(timer);
    closeQuietly(conn);
  }
}

function closeQuietly(closable: { close(): void }): void {
  try {
    closable.close();
  } catch {
    // Closed already.
  }
}

/**
 * Descriptors held in reserve, the way libuv keeps one for EMFILE: when the
 * process runs out, the admin server closes one to accept a probe, and takes
 * it back once the probe is answered. Deno cannot read the descriptor limit
 * without `--allow-all`, so a cap below it cannot be computed; a reserve
 * works whatever the limit is.
 */
class DescriptorReserve {
  readonly #files: Deno.FsFile[] = [];

  constructor(readonly size: number) {
    this.refill();
  }

  /** Opens descriptors until `size` are held, while the process can. */
  refill(): void {
    try {
      while (this.#files.length < this.size) this.#files.push(Deno.openSync("/dev/null"));
    } catch {
      // Out of descriptors (or no permission): try again after the next probe.
    }
  }

  /** Gives one descriptor back to the process; false when none is held. */
  release(): boolean {
    const file = this.#files.pop();
    file?.close();
    return file !== undefined;
  }

  close(): void {
    for (const file of this.#files.splice(0)) file.close();
  }
}

/** Descriptors kept for probes: a liveness, a readiness and a metrics request at once, and one spare. */
const RESERVED_DESCRIPTORS = 4;
/** Admin connections served at once at most; more are closed at once. */
const ADMIN_MAX_CONNECTIONS = 32;

// ---------------------------------------------------------------------------
// Server lifecycle
// ---------------------------------------------------------------------------

/** How {@linkcode EchoServer.shutdown} stops; defaults come from the config. */
export interface ShutdownOptions {
  /** Readiness fails and accepting goes on this long. */
  readonly drainDelayMs?: number;
  /** Open connections may go on this long after accepting stopped. */
  readonly graceMs?: number;
}

/** A running echo server. */
export interface EchoServer {
  /** The addresses it listens on (with the real port when `port` was 0). */
  readonly addresses: readonly Deno.NetAddr[];
  /** The admin HTTP server's address, when it runs. */
  readonly adminAddress: Deno.NetAddr | undefined;
  /** Connections open right now. */
  readonly activeConnections: number;
  /** True while every listener accepts and no drain has begun. */
  readonly ready: boolean;
  /** The counters, as the metrics endpoint reports them. */
  readonly stats: ServerStats;
  /**
   * Drains and stops: readiness fails at once; accepting goes on for
   * `drainDelayMs`, then stops; open connections may go on for `graceMs`,
   * then the rest are closed (reason `shutdown`); then the admin server stops.
   * Resolves when all is closed. Calling it again returns the same promise.
   */
  shutdown(options?: ShutdownOptions): Promise<void>;
}

const ACCEPT_BACKOFF_MIN_MS = 5;
const ACCEPT_BACKOFF_MAX_MS = 1_000;
/** Refusals at the connection limit are reported at most this often, each report counting all. */
const REFUSAL_REPORT_INTERVAL_MS = 1_000;

/** Why `accept()` failed, as counted in `tcp_echo_accept_errors_total{kind}`. */
export const ACCEPT_ERROR_KINDS = ["connection", "resources"] as const;
/** An {@linkcode ACCEPT_ERROR_KINDS} value. */
export type AcceptErrorKind = typeof ACCEPT_ERROR_KINDS[number];

/** Errors of one queued connection that its client reset before it was accepted. */
const GONE_BEFORE_ACCEPT_ERRORS = [
  Deno.errors.NotConnected,
  Deno.errors.ConnectionReset,
  Deno.errors.ConnectionAborted,
];

/**
 * Sorts an `accept()` error: `connection` when only that queued connection
 * is gone (a health checker's RST: accept the next one at once), else
 * `resources` (out of descriptors or memory: back off and retry).
 */
export function classifyAcceptError(error: unknown): AcceptErrorKind {
  return GONE_BEFORE_ACCEPT_ERRORS.some((type) => error instanceof type)
    ? "connection"
    : "resources";
}

/** The listen address: `HOST`, else dual-stack `::` where the host has IPv6, else `0.0.0.0`. */
function chooseHostname(config: Config): string {
  if (config.host !== undefined) return config.host;
  try {
    Deno.listen({ hostname: "::", port: 0 }).close();
    return "::";
  } catch {
    return "0.0.0.0";
  }
}

/** An address the server could not listen on; the message names it and says why. */
export class ListenError extends Error {
  override name = "ListenError";
  constructor(where: string, cause: unknown) {
    super(`cannot listen on ${where}: ${(cause as Error).message}`, { cause });
  }
}

const hostPort = (hostname: string, port: number) =>
  hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;

/**
 * Opens one listener per echo port, then the admin listener, or none: on
 * failure the ones opened are closed.
 */
function listenAll(
  hostname: string,
  ports: readonly number[],
  adminPort: number | undefined,
): { echo: Deno.TcpListener[]; admin: Deno.TcpListener | undefined } {
  const opened: Deno.TcpListener[] = [];
  const open = (port: number, what: string) => {
    try {
      opened.push(Deno.listen({ hostname, port }));
      return opened[opened.length - 1];
    } catch (error) {
      for (const listener of opened) listener.close();
      throw new ListenError(`${what} ${hostPort(hostname, port)}`, error);
    }
  };
  const echo = ports.map((port) => open(port, "TCP port"));
  const admin = adminPort === undefined ? undefined : open(adminPort, "admin port");
  return { echo, admin };
}

/** Waits `ms`, or less when `signal` aborts. */
function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
  });
}

/** What one accept loop does with its listener's connections. */
interface AcceptLoop {
  readonly listener: Deno.TcpListener;
  readonly port: number;
  /** Aborted when this loop is to stop. */
  readonly signal: AbortSignal;
  /** Takes each accepted connection. */
  onConnection(conn: Deno.TcpConn): void;
  /** Frees a descriptor for an immediate retry after a resource error; false when it cannot. */
  freeDescriptor(): boolean;
}

/**
 * Starts listening and serving (and the admin server, unless it is off).
 * Throws {@linkcode ListenError} if an address cannot be bound (nothing is
 * left open then); everything after that is logged, never thrown.
 */
export function startServer(config: Config): EchoServer {
  return new Server(config);
}

/** The echo listeners, their connections, the admin server and the drain. */
class Server implements EchoServer {
  readonly addresses: readonly Deno.NetAddr[];
  readonly adminAddress: Deno.NetAddr | undefined;
  readonly stats = new ServerStats();
  readonly #config: Config;
  readonly #context: ConnectionContext;
  readonly #listeners: readonly Deno.TcpListener[];
  readonly #adminListener: Deno.TcpListener | undefined;
  readonly #reserve = new DescriptorReserve(RESERVED_DESCRIPTORS);
  readonly #connections = new Map<EchoConnection, Promise<void>>();
  readonly #adminConnections = new Set<Promise<void>>();
  readonly #stopping = new AbortController();
  readonly #adminStopping = new AbortController();
  /** Echo listeners whose accepts fail for want of resources. */
  readonly #backingOff = new Set<Deno.TcpListener>();
  readonly #accepting: Promise<unknown>;
  readonly #adminAccepting: Promise<unknown>;
  #draining = false;
  #shutdown: Promise<void> | undefined;
  #refusedUnreported = 0;
  #refusalTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(config: Config) {
    const hostname = chooseHostname(config);
    const listeners = listenAll(hostname, config.ports, config.adminPort);
    this.#config = config;
    this.#listeners = listeners.echo;
    this.#adminListener = listeners.admin;
    this.addresses = this.#listeners.map((listener) => listener.addr);
    this.adminAddress = this.#adminListener?.addr;
    const metrics = createMetricsExporter(this.stats);
    const logData = config.logDataBytes > 0 && log.isEnabledFor("info");
    this.#context = {
      config,
      banner: renderBanner(config.banner),
      linePrefix: config.echoPrefix === undefined
        ? undefined
        : encoder.encode(`${config.echoPrefix} `),
      metrics,
      logData,
      maxBufferBytes: logData ? MAX_BUFFER_BYTES_LOGGING : MAX_BUFFER_BYTES,
      echoLimit: config.closeAfterBytes > 0 ? config.closeAfterBytes : Infinity,
    };
    for (const { port } of this.addresses) this.stats.forPort(port);
    if (this.adminAddress) {
      log.info("Admin HTTP on port {port}", {
        port: this.adminAddress.port,
        address: formatAddress(this.adminAddress),
      });
    }
    this.#adminAccepting = this.#adminListener
      ? this.#acceptLoop(this.#adminLoop(this.#adminListener, metrics))
      : Promise.resolve();
    for (const address of this.addresses) {
      log.info("Listening on TCP port {port}", {
        port: address.port,
        address: formatAddress(address),
      });
    }
    logActiveFaults(config);
    this.#accepting = Promise.all(
      this.#listeners.map((listener) => this.#acceptLoop(this.#echoLoop(listener))),
    );
  }

  get activeConnections(): number {
    return this.#connections.size;
  }

  get ready(): boolean {
    return !this.#draining && this.#backingOff.size === 0;
  }

  shutdown(options: ShutdownOptions = {}): Promise<void> {
    this.#shutdown ??= this.#drain(
      options.drainDelayMs ?? this.#config.drainDelayMs,
      options.graceMs ?? this.#config.shutdownGraceMs,
    );
    return this.#shutdown;
  }

  #echoLoop(listener: Deno.TcpListener): AcceptLoop {
    const port = listener.addr.port;
    const stats = this.stats.forPort(port);
    const { maxConnections } = this.#config;
    return {
      listener,
      port,
      signal: this.#stopping.signal,
      onConnection: (conn) => {
        if (maxConnections > 0 && this.#connections.size >= maxConnections) {
          closeQuietly(conn);
          stats.rejected.max_connections++;
          this.#countRefusal();
          return;
        }
        const connection = new EchoConnection(conn, port, stats);
        this.#connections.set(
          connection,
          serveConnection(connection, this.#context).finally(() =>
            this.#connections.delete(connection)
          ),
        );
      },
      freeDescriptor: () => false,
    };
  }

  #adminLoop(listener: Deno.TcpListener, metrics: MetricsExporter): AcceptLoop {
    const state: AdminState = { isReady: () => this.ready, metrics };
    return {
      listener,
      port: listener.addr.port,
      signal: this.#adminStopping.signal,
      onConnection: (conn) => {
        if (this.#adminConnections.size >= ADMIN_MAX_CONNECTIONS) return closeQuietly(conn);
        const served: Promise<void> = serveAdminConnection(conn, state).finally(() => {
          this.#adminConnections.delete(served);
          this.#reserve.refill();
        });
        this.#adminConnections.add(served);
      },
      freeDescriptor: () => this.#reserve.release(),
    };
  }

  /**
   * Accepts until the server stops. A connection reset while queued is
   * counted and skipped; running out of descriptors or memory backs off
   * (5 ms doubling to 1 s), with one warning per streak and readiness failing
   * for echo ports meanwhile.
   */
  async #acceptLoop(loop: AcceptLoop): Promise<void> {
    const { listener, port, signal } = loop;
    const isEcho = listener !== this.#adminListener;
    let backoffMs = ACCEPT_BACKOFF_MIN_MS;
    let failures = 0;
    while (!signal.aborted) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (signal.aborted) break;
        const kind = classifyAcceptError(error);
        this.stats.countAcceptError(port, kind);
        if (kind === "connection") {
          log.debug("A queued connection was gone before it was accepted.", { port, error });
          continue;
        }
        if (loop.freeDescriptor()) continue;
        failures++;
        if (isEcho) this.#backingOff.add(listener);
        if (failures === 1) {
          log.warn("Accept failed, backing off.", { error, retry_ms: backoffMs, port });
        } else log.debug("Accept failed again.", { error, retry_ms: backoffMs, port });
        await pause(backoffMs, signal);
        backoffMs = Math.min(backoffMs * 2, ACCEPT_BACKOFF_MAX_MS);
        continue;
      }
      if (failures > 0) log.info("Accepting again.", { failed_attempts: failures, port });
      failures = 0;
      backoffMs = ACCEPT_BACKOFF_MIN_MS;
      this.#backingOff.delete(listener);
      loop.onConnection(conn);
    }
  }

  /** Counts a refusal at the limit; the first of a burst is reported at once, the rest each second. */
  #countRefusal(): void {
    this.#refusedUnreported++;
    if (this.#refusalTimer === undefined) this.#reportRefusals();
  }

  /** Reports the refusals not yet reported; with `rearm`, looks again in a second. */
  #reportRefusals(rearm = true): void {
    clearTimeout(this.#refusalTimer);
    this.#refusalTimer = undefined;
    if (this.#refusedUnreported === 0) return;
    log.warn("Connection limit reached, refusing connections.", {
      limit: this.#config.maxConnections,
      refused: this.#refusedUnreported,
    });
    this.#refusedUnreported = 0;
    if (rearm) {
      this.#refusalTimer = setTimeout(() => this.#reportRefusals(), REFUSAL_REPORT_INTERVAL_MS);
    }
  }

  async #drain(drainDelayMs: number, graceMs: number): Promise<void> {
    this.#draining = true;
    if (drainDelayMs > 0) {
      log.info("Draining: readiness fails, still accepting.", {
        drain_delay_ms: drainDelayMs,
        open_connections: this.#connections.size,
      });
      await pause(drainDelayMs);
    }
    this.#stopping.abort();
    for (const listener of this.#listeners) listener.close();
    await this.#accepting;
    this.#reportRefusals(false);
    log.info("Shutting down: stopped accepting.", {
      open_connections: this.#connections.size,
      grace_ms: graceMs,
    });
    await this.#closeConnections(graceMs);
    this.#adminStopping.abort();
    this.#adminListener?.close();
    await this.#adminAccepting;
    await Promise.all(this.#adminConnections);
    this.#reserve.close();
    const served = Array.from(this.stats.entries()).reduce(
      (total, [, port]) => total + port.accepted,
      0,
    );
    log.info("Shutdown complete.", { connections_served: served });
  }

  /** Lets open connections go on for `graceMs`, then closes the rest (reason `shutdown`). */
  async #closeConnections(graceMs: number): Promise<void> {
    if (this.#connections.size > 0) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const graceOver = new Promise<void>((resolve) => timer = setTimeout(resolve, graceMs));
      await Promise.race([Promise.all(this.#connections.values()), graceOver]);
      clearTimeout(timer);
    }
    if (this.#connections.size > 0) {
      log.info("Shutting down: grace period over, closing connections.", {
        open_connections: this.#connections.size,
      });
      for (const connection of this.#connections.keys()) connection.closeFor("shutdown");
      await Promise.all(this.#connections.values());
    }
  }
}

/** Logs, at start, the faults `ECHO_DELAY` and `CLOSE_AFTER_BYTES` inject. */
function logActiveFaults(config: Config): void {
  const faults: Record<string, number> = {};
  if (config.echoDelayMs > 0) faults.echo_delay_ms = config.echoDelayMs;
  if (config.closeAfterBytes > 0) faults.close_after_bytes = config.closeAfterBytes;
  if (Object.keys(faults).length > 0) log.warn("Fault injection active.", faults);
}

// ---------------------------------------------------------------------------
// Program entry
// ---------------------------------------------------------------------------

/** Reads exactly the variables in {@linkcode CONFIG_VARIABLES} (all `--allow-env` grants). */
export function readEnvironment(): Environment {
  return Object.fromEntries(CONFIG_VARIABLES.map(({ name }) => [name, readVariable(name)]));
}

function readVariable(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch (error) {
    if (!(error instanceof Deno.errors.InvalidData)) throw error;
    throw new ConfigError(`invalid ${name}: not valid UTF-8; allowed: UTF-8 text`);
  }
}

const SHUTDOWN_SIGNALS = ["SIGTERM", "SIGINT"] as const;
const SIGNAL_EXIT_CODES = { SIGINT: 130, SIGTERM: 143 } as const;
/**
 * A repeat of the first signal this soon is the same event arriving twice:
 * Ctrl-C signals the whole process group and `deno task` forwards it too.
 */
export const REPEATED_SIGNAL_WINDOW_MS = 500;

/**
 * Resolves with the first SIGTERM/SIGINT. A later one, from a person
 * pressing again, calls `forceExit` with its exit code; a repeat within
 * {@linkcode REPEATED_SIGNAL_WINDOW_MS} of the first is ignored.
 */
function firstShutdownSignal(
  forceExit: (signal: Deno.Signal, code: number) => void,
): Promise<Deno.Signal> {
  return new Promise((resolve) => {
    let firstAt: number | undefined;
    for (const signal of SHUTDOWN_SIGNALS) {
      Deno.addSignalListener(signal, () => {
        const now = performance.now();
        if (firstAt === undefined) {
          firstAt = now;
          resolve(signal);
        } else if (now - firstAt < REPEATED_SIGNAL_WINDOW_MS) {
          log.debug("Ignored {signal}: a repeat of the first within the window.", {
            signal,
            window_ms: REPEATED_SIGNAL_WINDOW_MS,
          });
        } else forceExit(signal, SIGNAL_EXIT_CODES[signal]);
      });
    }
  });
}

/** How long a forced exit waits for the log to be written. */
const FORCED_EXIT_FLUSH_MS = 1_000;

/**
 * Runs the program: `--help`, configuration, logging, server, and a graceful
 * shutdown on SIGTERM/SIGINT. `args` are `--help`, the ports and prefix of
 * {@linkcode applyArguments}, or `client ...` to run the client (client.ts). Returns the exit code: 0 after a clean
 * shutdown, 2 for bad arguments or configuration, 1 when it cannot listen.
 */
export async function main(args: readonly string[]): Promise<number> {
  if (args[0] === "client") {
    // The client is a program of its own, loaded only when asked for.
    const { runClient } = await import("./client.ts");
    return await runClient(args.slice(1));
  }
  if (args.includes("--help") || args.includes("-h")) {
    await Deno.stdout.write(new TextEncoder().encode(renderHelp()));
    return 0;
  }
  let config: Config;
  try {
    config = loadConfig(applyArguments(args, readEnvironment()));
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(`tcp-echo: ${error.message}`);
    return 2;
  }

  const sink = createStdoutSink(config.logFormat, config.logDataBytes);
  const detachLogging = await setupLogging(config.logLevel, sink.sink);
  const signal = firstShutdownSignal(async (again, code) => {
    log.warn("Received {signal} again, exiting now without draining.", {
      signal: again,
      open_connections: server?.activeConnections ?? 0,
      exit_code: code,
    });
    await Promise.race([sink.flush(), pause(FORCED_EXIT_FLUSH_MS)]);
    Deno.exit(code);
  });
  let server: EchoServer | undefined;
  try {
    server = startServer(config);
  } catch (error) {
    await detachLogging();
    await sink[Symbol.asyncDispose]();
    if (!(error instanceof ListenError)) throw error;
    console.error(`tcp-echo: ${error.message}`);
    return 1;
  }
  const received = await signal;
  log.info("Received {signal}, shutting down.", { signal: received });
  await server.shutdown();
  await detachLogging();
  await sink[Symbol.asyncDispose]();
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
