/**
 * `tcp-echo client`: probes and load-tests any TCP echo endpoint.
 *
 * `probe` (the default) opens connections one after another (or a few at a
 * time), reads whatever banner the server sends, sends a payload, checks that
 * every byte comes back, and reports who answered (version, pod, node from the
 * banner), what failed and why, and latency percentiles. `load` keeps
 * connections busy for a while, request/response (`rr`) or streaming
 * (`stream`), verifying every echoed byte, and reports throughput and
 * latency percentiles at microsecond resolution.
 *
 * It is a program of its own (run as `tcp-echo client ...`, so one image
 * carries both), kept apart from the server in main.ts. Pure parts
 * (arguments, banners, percentiles, reports) are exported for the tests.
 *
 * @example
 * ```sh
 * deno task client -- 127.0.0.1:3333 --count 100 --concurrency 10
 * deno task client -- 127.0.0.1:3333 load --mode rr --connections 50 --duration 10s
 * ```
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { parseArgs } from "node:util";
import * as hdr from "hdr-histogram-js";
import { connectTls, type ConnectTlsOptions, TlsHandshakeError } from "../src/tls_stream.ts";
import {
  type BannerValues,
  closeQuietly,
  concatBytes,
  DURATION_FORMS,
  formatHostPort,
  indexOfBytes,
  parseBannerText,
  parseDuration,
  parseTlsBannerText,
  writeAll,
} from "../src/wire.ts";

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/** What to measure and how. */
export interface ClientOptions {
  /** Where to connect. */
  readonly hostname: string;
  /** The port to connect to. */
  readonly port: number;
  /** Probe one connection at a time, or load for a duration. */
  readonly command: "probe" | "load";
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

/** The `tcp-echo client --help` text. */
export const CLIENT_USAGE = `Usage: tcp-echo client HOST:PORT [probe|load] [options]

probe (default): open --count connections (--concurrency at a time); each reads the
banner, sends a payload, checks the echo byte for byte and closes. Reports who
answered (version, pod, node), failures by reason, and latency percentiles.

load: keep --connections busy for --duration, --mode rr (request/response of --size
bytes), --mode stream (writer and reader in parallel) or --mode connect (a new
connection, banner and echo each time: connections/s, with --tls handshakes/s);
every byte is verified.

Options:
  --count N          probe: connections in all (default 20)
  --concurrency N    probe: connections at a time (default 1)
  --size BYTES       payload: per probe connection, per request, or per written chunk
                     (default 64; stream: 65536)
  --message TEXT     probe: send TEXT instead of random bytes
  --prefix TEXT      the server answers each line as "TEXT LINE" (ECHO_PREFIX)
  --connections N    load: connections (default 1)
  --duration D       load: how long, e.g. 500ms, 10s, 1m (default 5s)
  --mode M           load: rr (request/response, default), stream or connect
  --timeout D        per operation (default 5s)
  --tls              speak TLS (to a TLS_PORT); the report adds server name and TLS version
  --sni NAME         TLS server name to send (default: the host, none for an IP address)
  --alpn P[,P]       ALPN protocols to offer (tcp-echo accepts "echo")
  --ca FILE          PEM CA certificates to verify the server with (default: system's)
  --cert FILE        PEM client certificate (with --key), for TLS_CLIENT_CA servers
  --key FILE         PEM key of --cert
  --insecure         accept any server certificate (self-signed test servers)
  --fail-under K=V   exit 1 below a threshold: success=PCT (probe, default 100),
                     ops=N (load rr), mbps=N (load stream); comma-separated
  --json             print one JSON object instead of the human report
  -h, --help         print this text

Exit status: 0 all good; 1 an echo was wrong, a load connection failed or completed
nothing, or a threshold was missed; 2 bad usage.
`;

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

function parseFailUnder(text: string | undefined): FailUnder {
  const thresholds: FailUnder = {};
  if (text === undefined) return thresholds;
  for (const part of text.split(",")) {
    const [key, value] = part.split("=");
    const number = Number(value);
    if (!["success", "ops", "mbps"].includes(key) || value === undefined || !(number >= 0)) {
      throw new UsageError(
        `--fail-under takes success=PCT, ops=N or mbps=N, not ${JSON.stringify(part)}`,
      );
    }
    thresholds[key as keyof FailUnder] = number;
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

/** The flags and positionals of the command line, as node's parseArgs reads them. */
function readFlags(args: readonly string[]) {
  try {
    return parseArgs({
      args: [...args],
      allowPositionals: true,
      options: {
        count: { type: "string" },
        concurrency: { type: "string" },
        size: { type: "string" },
        message: { type: "string" },
        prefix: { type: "string" },
        connections: { type: "string" },
        duration: { type: "string" },
        mode: { type: "string" },
        timeout: { type: "string" },
        "fail-under": { type: "string" },
        json: { type: "boolean" },
        tls: { type: "boolean" },
        sni: { type: "string" },
        alpn: { type: "string" },
        ca: { type: "string" },
        cert: { type: "string" },
        key: { type: "string" },
        insecure: { type: "boolean" },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message.split("\n")[0]);
  }
}

/** The TLS flags, checked together: each needs `--tls`, `--cert` needs `--key`. */
function readTlsFlags(
  values: ReturnType<typeof readFlags>["values"],
): ClientTlsOptions | undefined {
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

/** Parses the client's command line. Throws {@linkcode UsageError}. */
export function parseClientArgs(args: readonly string[]): ClientOptions {
  const { values, positionals } = readFlags(args);
  if (positionals.length === 0) throw new UsageError("the target HOST:PORT is missing");
  const [targetText, command = "probe", ...extra] = positionals;
  if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}`);
  if (command !== "probe" && command !== "load") {
    throw new UsageError(`the command is probe or load, not ${JSON.stringify(command)}`);
  }
  const mode = (values.mode ?? "rr") as LoadMode;
  if (!LOAD_MODES.includes(mode)) {
    throw new UsageError(`--mode is rr, stream or connect, not ${JSON.stringify(mode)}`);
  }
  if (mode === "stream" && values.prefix !== undefined) {
    throw new UsageError("--mode stream needs a byte-exact echo; it cannot be used with --prefix");
  }
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
      ...parseFailUnder(values["fail-under"]),
    },
  };
}

// ---------------------------------------------------------------------------
// Pure helpers: banners, payloads, percentiles
// ---------------------------------------------------------------------------

/**
 * What a banner said about the server that answered (the banner's field table
 * is in wire.ts), and on a TLS port the TLS version and server name it saw.
 */
export interface ServerIdentity extends BannerValues {
  /** The TLS version the server named, as `TLSv1.3`. */
  readonly tls?: string;
  /** The server name (SNI) the server saw, or `none`. */
  readonly serverName?: string;
}

/** Reads tcp-echo's banner lines (any order, unknown lines ignored), TLS line included. */
export function parseBanner(text: string): ServerIdentity {
  const identity: ServerIdentity = parseBannerText(text);
  const tls = parseTlsBannerText(text);
  return tls ? { ...identity, tls: tls.protocol, serverName: tls.serverName ?? "none" } : identity;
}

/** How one server is named in the "who answered" table. */
export function identityKey(identity: ServerIdentity): string {
  const parts = [
    identity.version && `version ${identity.version}`,
    identity.pod && `pod ${identity.pod}`,
    identity.node && `node ${identity.node}`,
  ].filter(Boolean);
  return parts.length > 0 ? parts.join(", ") : "(no banner)";
}

/** Nearest-rank percentile of ascending `sorted` values; `NaN` when empty. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

/** p50, p90, p99 and max of some values, in their unit. */
export interface Percentiles {
  /** The median. */
  readonly p50: number;
  /** The 90th percentile. */
  readonly p90: number;
  /** The 99th percentile. */
  readonly p99: number;
  /** The largest value. */
  readonly max: number;
}

/** Summarizes values with nearest-rank percentiles. */
export function summarize(values: readonly number[]): Percentiles {
  const sorted = [...values].sort((a, b) => a - b);
  return {
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: sorted.length ? sorted[sorted.length - 1] : NaN,
  };
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const HEX = "0123456789abcdef";

/** Random printable bytes (hex digits): safe inside a line. */
function randomLine(length: number): Uint8Array {
  const random = crypto.getRandomValues(new Uint8Array(length));
  return random.map((b) => HEX.charCodeAt(b & 15));
}

function randomBytes(length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let offset = 0; offset < length; offset += 65_536) {
    crypto.getRandomValues(out.subarray(offset, Math.min(length, offset + 65_536)));
  }
  return out;
}

/** A payload and the exact bytes an echo server answers to it. */
export interface Exchange {
  /** What to send. */
  readonly payload: Uint8Array;
  /** What must come back, after any banner. */
  readonly expected: Uint8Array;
}

/**
 * Builds what to send and what must come back: the message or `size` random
 * bytes; with a prefix, one line (random hex, newline-terminated) answered as
 * `PREFIX LINE`.
 */
export function makeExchange(
  size: number,
  message: string | undefined,
  prefix: string | undefined,
): Exchange {
  let payload: Uint8Array;
  if (prefix === undefined) {
    payload = message === undefined ? randomBytes(size) : encoder.encode(message);
  } else {
    const line = message === undefined
      ? randomLine(Math.max(1, size - 1))
      : encoder.encode(message);
    payload = concatBytes([line, encoder.encode("\n")]);
  }
  const expected = prefix === undefined
    ? payload
    : concatBytes([encoder.encode(`${prefix} `), payload]);
  return { payload, expected };
}

function endsWith(bytes: Uint8Array, suffix: Uint8Array): boolean {
  return suffix.length <= bytes.length &&
    equalBytes(bytes.subarray(bytes.length - suffix.length), suffix);
}

// ---------------------------------------------------------------------------
// Probe
// ---------------------------------------------------------------------------

/** Why a probe connection failed. */
export type FailureReason =
  | "refused"
  | "reset"
  | "timeout"
  | "tls"
  | "mismatch"
  | "short"
  | "error";

/** One probe connection's outcome. */
export type ProbeOutcome =
  | {
    readonly ok: true;
    readonly identity: ServerIdentity;
    readonly connectMs: number;
    readonly firstByteMs: number;
    readonly roundTripMs: number;
  }
  | {
    readonly ok: false;
    readonly reason: FailureReason;
    readonly identity: ServerIdentity;
    readonly detail: string;
  };

/** Classifies a socket error as a probe failure reason. */
function failureOf(error: unknown): FailureReason {
  if (error instanceof TlsHandshakeError) return "tls";
  if (error instanceof Deno.errors.ConnectionRefused) return "refused";
  if (
    error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.BrokenPipe ||
    error instanceof Deno.errors.ConnectionAborted
  ) return "reset";
  if (error instanceof Deno.errors.TimedOut || error instanceof TimeoutError) return "timeout";
  return "error";
}

class TimeoutError extends Error {}

/** Runs `work`, closing `onTimeout`'s resource and rejecting when it takes longer than `ms`. */
async function withTimeout<T>(ms: number, work: Promise<T>, onTimeout: () => void): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout();
      reject(new TimeoutError(`no answer within ${ms} ms`));
    }, ms);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** What the probe and load use of a connection: a `Deno.TcpConn` or a TLS stream. */
export type ClientConn = Pick<
  Deno.TcpConn,
  "read" | "write" | "close" | "closeWrite" | "setNoDelay"
>;

/** Opens a connection to the target: TCP, or TLS with `tls`'s settings. */
export type Connector = () => Promise<ClientConn>;

/** The connector for `options`; reads the `--ca`, `--cert` and `--key` files (throws UsageError). */
export async function makeConnector(options: ClientOptions): Promise<Connector> {
  const { hostname, port, tls } = options;
  if (tls === undefined) return () => Deno.connect({ hostname, port });
  const read = async (flag: string, path: string | undefined) => {
    if (path === undefined) return undefined;
    try {
      return await Deno.readTextFile(path);
    } catch (error) {
      throw new UsageError(`cannot read ${flag} ${path}: ${(error as Error).message}`);
    }
  };
  const settings: ConnectTlsOptions = {
    serverName: tls.serverName,
    alpn: tls.alpn,
    ca: await read("--ca", tls.caFile),
    cert: await read("--cert", tls.certFile),
    key: await read("--key", tls.keyFile),
    insecure: tls.insecure,
  };
  return () => connectTls(hostname, port, settings);
}

/**
 * One probe: connect, send the payload and half-close, read to the end.
 * Everything before the expected echo is the banner. A conforming echo server
 * closes after echoing what it got before the half-close.
 */
export async function probeOnce(
  options: ClientOptions,
  exchange: Exchange,
  connect: Connector,
): Promise<ProbeOutcome> {
  const started = performance.now();
  let conn: ClientConn | undefined;
  const received: Uint8Array[] = [];
  try {
    const connecting = connect();
    // A connection that completes after the timeout is closed when it does.
    conn = await withTimeout(options.timeoutMs, connecting, () => {
      connecting.then(closeQuietly, () => {});
    });
    const connected = performance.now();
    conn.setNoDelay(true);
    const times = await exchangeBytes(conn, exchange.payload, received, options.timeoutMs);
    const outcome = judgeEcho(concatBytes(received), exchange.expected);
    if (!outcome.ok) return outcome;
    return {
      ...outcome,
      connectMs: connected - started,
      firstByteMs: times.firstByteAt - connected,
      roundTripMs: times.lastByteAt - times.sentAt,
    };
  } catch (error) {
    const reason = failureOf(error);
    const identity = parseBanner(decoder.decode(concatBytes(received)));
    return { ok: false, reason, identity, detail: (error as Error).message };
  } finally {
    if (conn) closeQuietly(conn);
  }
}

/**
 * Sends `payload` and half-closes while reading everything into `received`;
 * resolves with when it sent and when the first and last bytes came.
 */
async function exchangeBytes(
  conn: ClientConn,
  payload: Uint8Array,
  received: Uint8Array[],
  timeoutMs: number,
): Promise<{ sentAt: number; firstByteAt: number; lastByteAt: number }> {
  const times = { sentAt: NaN, firstByteAt: NaN, lastByteAt: NaN };
  const buffer = new Uint8Array(65_536);
  const send = async () => {
    times.sentAt = performance.now();
    await writeAll(conn, payload);
    await conn.closeWrite();
  };
  const receive = async () => {
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) break;
      times.lastByteAt = performance.now();
      if (Number.isNaN(times.firstByteAt)) times.firstByteAt = times.lastByteAt;
      received.push(buffer.slice(0, n));
    }
  };
  await withTimeout(timeoutMs, writeWhileReading(conn, send, receive), () => conn.close());
  return times;
}

/** Whether everything received ends with the expected echo; what came before is the banner. */
function judgeEcho(
  all: Uint8Array,
  expected: Uint8Array,
): { ok: true; identity: ServerIdentity } | (ProbeOutcome & { ok: false }) {
  const bannerLength = Math.max(0, all.length - expected.length);
  const identity = parseBanner(decoder.decode(all.subarray(0, bannerLength)));
  if (all.length < expected.length) {
    const detail = `${all.length} of ${expected.length} bytes`;
    return { ok: false, reason: "short", identity, detail };
  }
  if (!endsWith(all, expected)) {
    return {
      ok: false,
      reason: "mismatch",
      identity,
      detail: "the echo differs from what was sent",
    };
  }
  return { ok: true, identity };
}

/** One row of the "answered by" table. */
export interface AnsweredBy {
  /** The server, as {@linkcode identityKey} names it. */
  readonly server: string;
  /** TLS only: the server name (SNI) the server saw, or `none`. */
  readonly serverName?: string;
  /** TLS only: the TLS version. */
  readonly tls?: string;
  /** Connections it answered. */
  readonly count: number;
  /** Their share of all connections, in percent. */
  readonly percent: number;
}

/** The probe report: who answered, what failed, how fast. */
export interface ProbeReport {
  /** `HOST:PORT` as connected to. */
  readonly target: string;
  /** How many connections were used. */
  readonly connections: number;
  /** Connections whose echo was exact. */
  readonly succeeded: number;
  /** `succeeded` as a percentage of `connections`. */
  readonly successPercent: number;
  /** Successful connections per second, over the whole run. */
  readonly connectionsPerSecond: number;
  /**
   * Who answered (from the banners), how often, and what share; on TLS
   * ports also the server name the server saw and the TLS version.
   */
  readonly answeredBy: readonly AnsweredBy[];
  /** Failed connections by reason. */
  readonly failures: Readonly<Partial<Record<FailureReason, number>>>;
  /** Echoes that were wrong or short. */
  readonly integrityFailures: number;
  /** Milliseconds. */
  readonly connectMs: Percentiles;
  /** Milliseconds from connect to the first byte received. */
  readonly firstByteMs: Percentiles;
  /** Milliseconds from sending to the last byte of the echo. */
  readonly roundTripMs: Percentiles;
}

/** Builds the probe report from outcomes (pure). */
export function probeReport(
  target: string,
  outcomes: readonly ProbeOutcome[],
  elapsedMs: number,
): ProbeReport {
  const ok = outcomes.filter((o) => o.ok);
  const counts = new Map<string, { row: Omit<AnsweredBy, "count" | "percent">; count: number }>();
  for (const { identity } of ok) {
    const row = identity.tls === undefined
      ? { server: identityKey(identity) }
      : { server: identityKey(identity), serverName: identity.serverName, tls: identity.tls };
    const key = JSON.stringify(row);
    const seen = counts.get(key);
    if (seen) seen.count++;
    else counts.set(key, { row, count: 1 });
  }
  const failures: Partial<Record<FailureReason, number>> = {};
  for (const o of outcomes) if (!o.ok) failures[o.reason] = (failures[o.reason] ?? 0) + 1;
  const share = (n: number) => outcomes.length ? Math.round((n / outcomes.length) * 1_000) / 10 : 0;
  return {
    target,
    connections: outcomes.length,
    succeeded: ok.length,
    successPercent: share(ok.length),
    connectionsPerSecond: elapsedMs > 0 ? ok.length / (elapsedMs / 1_000) : 0,
    answeredBy: [...counts.values()]
      .sort((a, b) => b.count - a.count || a.row.server.localeCompare(b.row.server))
      .map(({ row, count }) => ({ ...row, count, percent: share(count) })),
    failures,
    integrityFailures: (failures.mismatch ?? 0) + (failures.short ?? 0),
    connectMs: summarize(ok.map((o) => o.connectMs)),
    firstByteMs: summarize(ok.map((o) => o.firstByteMs)),
    roundTripMs: summarize(ok.map((o) => o.roundTripMs)),
  };
}

async function runProbe(
  options: ClientOptions,
  connect: Connector,
  progress: Progress,
): Promise<ProbeReport> {
  const exchange = makeExchange(options.size, options.message, options.prefix);
  const outcomes: ProbeOutcome[] = [];
  let next = 0;
  const started = performance.now();
  const worker = async () => {
    while (next < options.count) {
      next++;
      outcomes.push(await probeOnce(options, exchange, connect));
      progress.update(() => `probe: ${outcomes.length}/${options.count} connections`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency, options.count) }, worker));
  return probeReport(targetText(options), outcomes, performance.now() - started);
}

// ---------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------

/** The load report: throughput, latency (microseconds), integrity. */
export interface LoadReport {
  /** `HOST:PORT` as connected to. */
  readonly target: string;
  /** Request/response, streaming, or a connection per operation. */
  readonly mode: LoadMode;
  /** Whether the connections spoke TLS (connect mode then counts handshakes). */
  readonly tls: boolean;
  /** How many connections were used. */
  readonly connections: number;
  /** How long the load ran, in seconds. */
  readonly durationS: number;
  /** Verified requests (rr), connections streamed to the end (stream), or connections (connect). */
  readonly operations: number;
  /** `operations` per second. */
  readonly opsPerSecond: number;
  /** Echoed bytes compared with what was sent. */
  readonly bytesVerified: number;
  /** `bytesVerified` per second, in MB (10^6 bytes). */
  readonly megabytesPerSecond: number;
  /** Request/response latency (rr), or connect to last echoed byte (connect), in microseconds. */
  readonly latencyUs: Percentiles & { readonly mean: number };
  /** Echoes that were wrong or short. */
  readonly integrityFailures: number;
  /** Failed connections by reason. */
  readonly failures: Readonly<Partial<Record<FailureReason, number>>>;
}

/** Reads until the echo of a fresh token line appears; returns the bytes before it (the banner). */
async function synchronize(conn: ClientConn, options: ClientOptions): Promise<Uint8Array> {
  const token = concatBytes([encoder.encode("sync-"), randomLine(16), encoder.encode("\n")]);
  const expected = options.prefix === undefined
    ? token
    : concatBytes([encoder.encode(`${options.prefix} `), token]);
  await writeAll(conn, token);
  const buffer = new Uint8Array(65_536 + expected.length);
  let filled = 0;
  while (true) {
    if (filled === buffer.length) throw new MismatchError("no echo of the sync token in 64 KiB");
    const n = await conn.read(buffer.subarray(filled));
    if (n === null) throw new ShortError("closed before echoing the sync token");
    filled += n;
    const at = indexOfBytes(buffer.subarray(0, filled), expected);
    if (at >= 0) {
      if (at + expected.length !== filled) {
        throw new MismatchError("unexpected bytes after the sync token");
      }
      return buffer.slice(0, at);
    }
  }
}

class MismatchError extends Error {}
class ShortError extends Error {}

/** A connect-mode probe that failed, with its reason. */
class FailedProbe extends Error {
  constructor(readonly reason: FailureReason, detail: string) {
    super(detail);
  }
}

function loadFailure(error: unknown): FailureReason {
  if (error instanceof MismatchError) return "mismatch";
  if (error instanceof ShortError) return "short";
  if (error instanceof FailedProbe) return error.reason;
  return failureOf(error);
}

async function readExactly(conn: ClientConn, into: Uint8Array): Promise<void> {
  let filled = 0;
  while (filled < into.length) {
    const n = await conn.read(into.subarray(filled));
    if (n === null) throw new ShortError(`closed after ${filled} of ${into.length} bytes`);
    filled += n;
  }
}

interface LoadTally {
  operations: number;
  bytesVerified: number;
  failures: Partial<Record<FailureReason, number>>;
  histogram: hdr.Histogram;
}

/** Connects, synchronizes on a token line, runs `work`, and closes the connection. */
async function onSynchronizedConnection(
  options: ClientOptions,
  connect: Connector,
  work: (conn: ClientConn) => Promise<void>,
): Promise<void> {
  const conn = await connect();
  try {
    conn.setNoDelay(true);
    await withTimeout(options.timeoutMs, synchronize(conn, options), () => conn.close());
    await work(conn);
  } finally {
    closeQuietly(conn);
  }
}

/** One load connection's work until `deadline`, counted in `tally`; throws on a failure. */
type LoadWorker = (
  options: ClientOptions,
  connect: Connector,
  deadline: number,
  tally: LoadTally,
) => Promise<void>;

const rrConnection: LoadWorker = (options, connect, deadline, tally) => {
  return onSynchronizedConnection(options, connect, async (conn) => {
    const { payload, expected } = makeExchange(options.size, undefined, options.prefix);
    const answer = new Uint8Array(expected.length);
    while (performance.now() < deadline) {
      const sent = performance.now();
      await writeAll(conn, payload);
      await withTimeout(options.timeoutMs, readExactly(conn, answer), () => conn.close());
      tally.histogram.recordValue(Math.max(1, Math.round((performance.now() - sent) * 1_000)));
      if (!equalBytes(answer, expected)) {
        throw new MismatchError("the echo differs from what was sent");
      }
      tally.operations++;
      tally.bytesVerified += expected.length;
    }
  });
};

/**
 * Connect mode: a new connection each time (with TLS, a full handshake),
 * banner, a payload echoed and verified, closed; until `deadline`.
 */
const connectionAfterConnection: LoadWorker = async (options, connect, deadline, tally) => {
  const exchange = makeExchange(options.size, undefined, options.prefix);
  while (performance.now() < deadline) {
    const started = performance.now();
    const outcome = await probeOnce(options, exchange, connect);
    if (!outcome.ok) throw new FailedProbe(outcome.reason, outcome.detail);
    tally.histogram.recordValue(Math.max(1, Math.round((performance.now() - started) * 1_000)));
    tally.operations++;
    tally.bytesVerified += exchange.expected.length;
  }
};

/** A 1 MiB random pattern, written in a cycle and checked on the way back. */
const STREAM_PATTERN_BYTES = 1 << 20;

const streamConnection: LoadWorker = (options, connect, deadline, tally) => {
  return onSynchronizedConnection(options, connect, async (conn) => {
    const pattern = randomBytes(STREAM_PATTERN_BYTES);
    const chunk = Math.min(options.size, STREAM_PATTERN_BYTES);
    let sent = 0;
    let checked = 0;
    const buffer = new Uint8Array(65_536);
    await writeWhileReading(
      conn,
      async () => {
        while (performance.now() < deadline) {
          const offset = sent % STREAM_PATTERN_BYTES;
          const piece = pattern.subarray(offset, Math.min(offset + chunk, STREAM_PATTERN_BYTES));
          await writeAll(conn, piece);
          sent += piece.length;
        }
        await conn.closeWrite();
      },
      () =>
        withTimeout(
          options.durationMs + options.timeoutMs,
          (async () => {
            while (true) {
              const n = await conn.read(buffer);
              if (n === null) break;
              const differs = firstDifference(buffer.subarray(0, n), pattern, checked);
              if (differs >= 0) throw new MismatchError(`byte ${checked + differs} differs`);
              checked += n;
              tally.bytesVerified += n;
            }
          })(),
          () => conn.close(),
        ),
    );
    if (checked !== sent) throw new ShortError(`${checked} of ${sent} bytes came back`);
    tally.operations++;
  });
};

/**
 * Runs a connection's writer and reader together and settles both: when one
 * fails, the connection is closed so the other ends too, and the first
 * failure is thrown (the other's is its echo, never an unhandled rejection).
 */
async function writeWhileReading(
  conn: ClientConn,
  write: () => Promise<void>,
  read: () => Promise<void>,
): Promise<void> {
  let firstFailure: { error: unknown } | undefined;
  const settle = (work: () => Promise<void>) =>
    work().catch((error) => {
      firstFailure ??= { error };
      closeQuietly(conn);
    });
  await Promise.all([settle(write), settle(read)]);
  if (firstFailure) throw firstFailure.error;
}

/** What {@linkcode latencySummary} reads of an HDR histogram. */
export interface LatencyHistogram {
  /** Values recorded. */
  readonly totalCount: number;
  /** The largest value recorded. */
  readonly maxValue: number;
  /** The mean of the values recorded. */
  readonly mean: number;
  /** The value at percentile `p` (a bucket's upper edge). */
  getValueAtPercentile(p: number): number;
}

/** p50, p90, p99, max and mean of a latency histogram; NaN when it is empty. */
export function latencySummary(h: LatencyHistogram): Percentiles & { readonly mean: number } {
  if (h.totalCount === 0) return { p50: NaN, p90: NaN, p99: NaN, max: NaN, mean: NaN };
  // A bucket's upper edge can lie above the largest value recorded.
  const at = (p: number) => Math.min(h.getValueAtPercentile(p), h.maxValue);
  return { p50: at(50), p90: at(90), p99: at(99), max: h.maxValue, mean: h.mean };
}

/** Whether two byte arrays are equal (a native memcmp: fast enough to check every byte). */
function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

/** Where `received` first differs from the cyclic `pattern` read from stream offset `at`, or -1. */
export function firstDifference(received: Uint8Array, pattern: Uint8Array, at: number): number {
  for (let i = 0; i < received.length;) {
    const offset = (at + i) % pattern.length;
    const run = Math.min(received.length - i, pattern.length - offset);
    const a = received.subarray(i, i + run);
    const b = pattern.subarray(offset, offset + run);
    if (!equalBytes(a, b)) return i + a.findIndex((byte, k) => byte !== b[k]);
    i += run;
  }
  return -1;
}

const LOAD_WORKERS: Readonly<Record<LoadMode, LoadWorker>> = {
  rr: rrConnection,
  stream: streamConnection,
  connect: connectionAfterConnection,
};

async function runLoad(
  options: ClientOptions,
  connect: Connector,
  progress: Progress,
): Promise<LoadReport> {
  const tally: LoadTally = {
    operations: 0,
    bytesVerified: 0,
    failures: {},
    histogram: hdr.build({
      lowestDiscernibleValue: 1,
      highestTrackableValue: 3_600_000_000,
      numberOfSignificantValueDigits: 3,
    }),
  };
  const started = performance.now();
  const deadline = started + options.durationMs;
  const one = LOAD_WORKERS[options.mode];
  const ticker = setInterval(() => {
    const seconds = (performance.now() - started) / 1_000;
    progress.update(() =>
      `load ${options.mode}: ${seconds.toFixed(1)}s, ${
        Math.round(tally.operations / seconds)
      } ops/s, ` +
      `${(tally.bytesVerified / seconds / 1e6).toFixed(1)} MB/s`
    );
  }, 500);
  try {
    await Promise.all(Array.from({ length: options.connections }, async () => {
      try {
        await one(options, connect, deadline, tally);
      } catch (error) {
        const reason = loadFailure(error);
        tally.failures[reason] = (tally.failures[reason] ?? 0) + 1;
      }
    }));
  } finally {
    clearInterval(ticker);
  }
  const seconds = (performance.now() - started) / 1_000;
  const failures = tally.failures;
  return {
    target: targetText(options),
    mode: options.mode,
    tls: options.tls !== undefined,
    connections: options.connections,
    durationS: Math.round(seconds * 1_000) / 1_000,
    operations: tally.operations,
    opsPerSecond: tally.operations / seconds,
    bytesVerified: tally.bytesVerified,
    megabytesPerSecond: tally.bytesVerified / seconds / 1e6,
    latencyUs: latencySummary(tally.histogram),
    integrityFailures: (failures.mismatch ?? 0) + (failures.short ?? 0),
    failures,
  };
}

// ---------------------------------------------------------------------------
// Output and entry
// ---------------------------------------------------------------------------

function targetText(options: ClientOptions): string {
  return formatHostPort(options.hostname, options.port);
}

/** A one-line progress display on a terminal, for runs over 2 s; silent otherwise. */
class Progress {
  #lastAt = 0;
  #shown = false;
  readonly #enabled: boolean;
  readonly #startedAt = performance.now();

  constructor(enabled: boolean) {
    this.#enabled = enabled;
  }

  update(text: () => string): void {
    const now = performance.now();
    if (!this.#enabled || now - this.#startedAt < 2_000 || now - this.#lastAt < 250) return;
    this.#lastAt = now;
    this.#shown = true;
    Deno.stderr.writeSync(encoder.encode(`\r\x1b[2K${text()}`));
  }

  clear(): void {
    if (this.#shown) Deno.stderr.writeSync(encoder.encode("\r\x1b[2K"));
  }
}

const ms = (value: number) =>
  Number.isNaN(value) ? "-" : value < 10 ? value.toFixed(2) : value.toFixed(1);
const us = (value: number) => Number.isNaN(value) ? "-" : String(Math.round(value));

/** Renders the probe report for people. */
export function renderProbeReport(report: ProbeReport): string {
  const lines = [
    `probe ${report.target}: ${report.succeeded} of ${report.connections} connections echoed correctly ` +
    `(${report.successPercent}%), ${report.connectionsPerSecond.toFixed(1)} connections/s`,
    "",
  ];
  const tls = report.answeredBy.some((row) => row.tls !== undefined);
  const tlsColumns = (serverName: string, version: string) =>
    tls ? ` ${serverName.padEnd(24)} ${version.padEnd(8)}` : "";
  lines.push(`answered by${" ".repeat(45)}${tlsColumns("server name", "TLS")} count  share`);
  for (const { server, serverName, tls: version, count, percent } of report.answeredBy) {
    lines.push(
      `  ${server.padEnd(54)}${tlsColumns(serverName ?? "-", version ?? "-")} ${
        String(count).padStart(5)
      }  ${percent.toFixed(1).padStart(5)}%`,
    );
  }
  if (report.answeredBy.length === 0) lines.push("  (nobody)");
  const failed = Object.entries(report.failures);
  lines.push("", failed.length ? "failures" : "failures: none");
  for (const [reason, count] of failed) lines.push(`  ${reason.padEnd(10)} ${count}`);
  lines.push("", "latency (ms)        p50      p90      p99      max");
  for (
    const [name, p] of [["connect", report.connectMs], ["first byte", report.firstByteMs], [
      "round trip",
      report.roundTripMs,
    ]] as const
  ) {
    lines.push(
      `  ${name.padEnd(14)} ${
        [p.p50, p.p90, p.p99, p.max].map((v) => ms(v).padStart(8)).join(" ")
      }`,
    );
  }
  return lines.join("\n") + "\n";
}

const LOAD_HEADLINES: Readonly<Record<LoadMode, (report: LoadReport) => string>> = {
  rr: (r) => `  ${Math.round(r.opsPerSecond)} requests/s, ${r.operations} verified`,
  stream: (r) => `  ${r.megabytesPerSecond.toFixed(1)} MB/s, ${r.bytesVerified} bytes verified`,
  connect: (r) =>
    `  ${Math.round(r.opsPerSecond)} ${r.tls ? "handshakes" : "connections"}/s, ${r.operations} ` +
    "verified (connect, banner, echo, close)",
};

/** Renders the load report for people. */
export function renderLoadReport(report: LoadReport): string {
  const lines = [
    `load ${report.mode} ${report.target}: ${report.connections} connections, ${report.durationS} s`,
    LOAD_HEADLINES[report.mode](report),
  ];
  if (report.mode !== "stream") {
    const l = report.latencyUs;
    lines.push(
      "  latency (µs)      p50      p90      p99      max     mean",
      `  ${"".padEnd(12)} ${
        [l.p50, l.p90, l.p99, l.max, l.mean].map((v) => us(v).padStart(8)).join(" ")
      }`,
    );
  }
  const failed = Object.entries(report.failures);
  lines.push(
    failed.length
      ? `  failures: ${failed.map(([r, n]) => `${r} ${n}`).join(", ")}`
      : "  failures: none",
  );
  return lines.join("\n") + "\n";
}

/** Which `--fail-under` thresholds a report misses, as sentences. */
export function missedThresholds(report: ProbeReport | LoadReport, failUnder: FailUnder): string[] {
  const missed: string[] = [];
  if (
    "successPercent" in report && failUnder.success !== undefined &&
    report.successPercent < failUnder.success
  ) {
    missed.push(`success ${report.successPercent}% < ${failUnder.success}%`);
  }
  if ("opsPerSecond" in report) {
    if (failUnder.ops !== undefined && report.opsPerSecond < failUnder.ops) {
      missed.push(`ops ${Math.round(report.opsPerSecond)}/s < ${failUnder.ops}/s`);
    }
    if (failUnder.mbps !== undefined && report.megabytesPerSecond < failUnder.mbps) {
      missed.push(`${report.megabytesPerSecond.toFixed(1)} MB/s < ${failUnder.mbps} MB/s`);
    }
  }
  return missed;
}

/**
 * Runs the client with its command-line arguments; returns the exit code:
 * 0 all good, 1 integrity failure or missed threshold, 2 bad usage.
 */
export async function runClient(args: readonly string[]): Promise<number> {
  // `deno task client -- HOST:PORT ...` passes the `--` along.
  if (args[0] === "--") args = args.slice(1);
  if (args.includes("--help") || args.includes("-h")) {
    await Deno.stdout.write(encoder.encode(CLIENT_USAGE));
    return 0;
  }
  let options: ClientOptions;
  try {
    options = parseClientArgs(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`tcp-echo client: ${error.message}; see tcp-echo client --help`);
    return 2;
  }
  const longRun = options.command === "load" && options.durationMs > 2_000;
  const progress = new Progress(
    !options.json && Deno.stderr.isTerminal() && (longRun || options.command === "probe"),
  );
  let connect: Connector;
  try {
    connect = await makeConnector(options);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`tcp-echo client: ${error.message}`);
    return 2;
  }
  const report = options.command === "probe"
    ? await runProbe(options, connect, progress)
    : await runLoad(options, connect, progress);
  progress.clear();
  const missed = missedThresholds(report, options.failUnder);
  if (options.json) {
    console.log(JSON.stringify({ ...report, missedThresholds: missed }));
  } else {
    await Deno.stdout.write(encoder.encode(
      "successPercent" in report ? renderProbeReport(report) : renderLoadReport(report),
    ));
    for (const sentence of missed) console.log(`threshold missed: ${sentence}`);
  }
  return loadFailed(report) || report.integrityFailures > 0 || missed.length > 0 ? 1 : 0;
}

/** A load fails when any connection failed or nothing completed; a probe by its thresholds. */
export function loadFailed(report: ProbeReport | LoadReport): boolean {
  if (!("opsPerSecond" in report)) return false;
  return report.operations === 0 || Object.keys(report.failures).length > 0;
}
