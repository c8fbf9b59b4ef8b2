/**
 * `probe`: connections one after another (or a few at a time), each reading
 * whatever banner comes, sending a payload, half-closing and checking that
 * the echo came back whole; and the report of who answered, what failed and
 * why, and how fast.
 *
 * @module
 */
import {
  type BannerValues,
  closeQuietly,
  concatBytes,
  parseBannerText,
  parseTlsBannerText,
  writeAll,
} from "../src/wire.ts";
import {
  addressOf,
  chosenFamily,
  type ClientConn,
  type Connector,
  connectWithin,
  withTimeout,
  writeWhileReading,
} from "./connection.ts";
import { familyName, type IpVersion } from "./family.ts";
import {
  echoHint,
  type Failure,
  failureOf,
  type FailureSummary,
  FailureTally,
  type HintContext,
} from "./failures.ts";
import type { ClientOptions } from "./options.ts";
import { endsWith, type Exchange, makeExchange, quoteStart } from "./payloads.ts";
import { type Percentiles, summarize } from "./percentiles.ts";

const decoder = new TextDecoder();

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

/** One probe connection's outcome; `address`: the IP it went to, when it opened. */
export type ProbeOutcome =
  | {
    readonly ok: true;
    readonly identity: ServerIdentity;
    readonly address?: string;
    readonly connectMs: number;
    readonly firstByteMs: number;
    readonly roundTripMs: number;
  }
  | (
    & { readonly ok: false; readonly identity: ServerIdentity; readonly address?: string }
    & Failure
  );

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
    conn = await connectWithin(connect, options.timeoutMs);
    const connected = performance.now();
    conn.setNoDelay(true);
    const times = await exchangeBytes(conn, exchange.payload, received, options.timeoutMs);
    const all = concatBytes(received);
    const bannerLength = Math.max(0, all.length - exchange.expected.length);
    const identity = parseBanner(decoder.decode(all.subarray(0, bannerLength)));
    const failure = judgeEcho(all, exchange, options);
    const address = addressOf(conn);
    if (failure) return { ok: false, identity, address, ...failure };
    return {
      ok: true,
      identity,
      address,
      connectMs: connected - started,
      firstByteMs: times.firstByteAt - connected,
      roundTripMs: times.lastByteAt - times.sentAt,
    };
  } catch (error) {
    const all = concatBytes(received);
    const identity = parseBanner(decoder.decode(all));
    const address = conn && addressOf(conn);
    return { ok: false, identity, address, ...failureOnTheWay(error, all, exchange, options) };
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

/**
 * What is wrong with everything received, if anything: it must end with the
 * expected echo (what came before is the banner). The detail quotes what
 * came; the hint says what it looks like.
 */
function judgeEcho(all: Uint8Array, exchange: Exchange, context: HintContext): Failure | undefined {
  const { payload, expected } = exchange;
  if (endsWith(all, expected)) return undefined;
  const hint = echoHint(all, payload, context);
  if (all.length < expected.length) {
    const quoted = all.length > 0 ? `: ${quoteStart(all)}` : "";
    return {
      reason: "short",
      detail: `${all.length} of ${expected.length} bytes came${quoted}`,
      hint,
    };
  }
  return {
    reason: "mismatch",
    detail: `the echo differs from what was sent; ${all.length} bytes came: ${quoteStart(all)}`,
    hint,
  };
}

/**
 * A probe that failed while connecting or exchanging. A timeout after the
 * whole echo came is a server that does not close after the half-close.
 */
function failureOnTheWay(
  error: unknown,
  received: Uint8Array,
  exchange: Exchange,
  context: HintContext,
): Failure {
  const failure = failureOf(error, context);
  if (failure.reason !== "timeout" || failure.detail.startsWith("no connection")) return failure;
  if (endsWith(received, exchange.expected)) {
    return {
      reason: "timeout",
      detail: "the echo came back whole, but the connection stayed open " +
        `${context.timeoutMs} ms after the client's half-close`,
      hint: "a probe needs a server that closes once it has echoed what came before the " +
        "half-close; load --mode rr does not",
    };
  }
  return { ...failure, detail: `${failure.detail} (${received.length} bytes came)` };
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

/**
 * The probe report: who answered, what failed (by reason, with the first
 * detail and hint of each), how fast.
 */
export interface ProbeReport extends FailureSummary, WhereConnected {
  /** Connections (this report), not datagrams. */
  readonly transport: "tcp";
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
  /** Echoes that were wrong or short. */
  readonly integrityFailures: number;
  /** Milliseconds. */
  readonly connectMs: Percentiles;
  /** Milliseconds from connect to the first byte received. */
  readonly firstByteMs: Percentiles;
  /** Milliseconds from sending to the last byte of the echo. */
  readonly roundTripMs: Percentiles;
}

/** Where a run connected: the target as given, the family asked for, the addresses used. */
export interface WhereConnected {
  /** `HOST:PORT` as given. */
  readonly target: string;
  /** The family `-4`/`-6` asked for; absent without them. */
  readonly family?: "IPv4" | "IPv6";
  /** The IP addresses connected (or sent) to, in the order first used. */
  readonly addresses: readonly string[];
}

/** Where a run connected, from the addresses its connections went to (`undefined`: none). */
export function whereConnected(
  target: string,
  family: IpVersion | undefined,
  addresses: Iterable<string | undefined>,
): WhereConnected {
  const used = [...new Set(addresses)].filter((a): a is string => a !== undefined);
  return family === undefined
    ? { target, addresses: used }
    : { target, family: familyName(family), addresses: used };
}

/** `n` of `total` in percent, to a tenth (`digits` 2: a hundredth, for losses). */
export function percentOf(n: number, total: number, digits = 1): number {
  const scale = 10 ** digits;
  return total > 0 ? Math.round((n / total) * 100 * scale) / scale : 0;
}

/** Builds the probe report from outcomes (pure); `family`: the one `-4`/`-6` asked for. */
export function probeReport(
  target: string,
  outcomes: readonly ProbeOutcome[],
  elapsedMs: number,
  family?: IpVersion,
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
  const tally = new FailureTally();
  for (const o of outcomes) if (!o.ok) tally.add(o);
  return {
    transport: "tcp",
    ...whereConnected(target, family, outcomes.map((o) => o.address)),
    connections: outcomes.length,
    succeeded: ok.length,
    successPercent: percentOf(ok.length, outcomes.length),
    connectionsPerSecond: elapsedMs > 0 ? ok.length / (elapsedMs / 1_000) : 0,
    answeredBy: [...counts.values()]
      .sort((a, b) => b.count - a.count || a.row.server.localeCompare(b.row.server))
      .map(({ row, count }) => ({ ...row, count, percent: percentOf(count, outcomes.length) })),
    ...tally.summary(),
    integrityFailures: (tally.failures.mismatch ?? 0) + (tally.failures.short ?? 0),
    connectMs: summarize(ok.map((o) => o.connectMs)),
    firstByteMs: summarize(ok.map((o) => o.firstByteMs)),
    roundTripMs: summarize(ok.map((o) => o.roundTripMs)),
  };
}

/** Runs `--count` probes, `--concurrency` at a time; `progress` is told how far it got. */
export async function runProbe(
  options: ClientOptions,
  connect: Connector,
  target: string,
  progress: (text: () => string) => void,
): Promise<ProbeReport> {
  const exchange = makeExchange(options.size, options.message, options.prefix);
  const outcomes: ProbeOutcome[] = [];
  let next = 0;
  const started = performance.now();
  const worker = async () => {
    while (next < options.count) {
      next++;
      outcomes.push(await probeOnce(options, exchange, connect));
      progress(() => `probe: ${outcomes.length}/${options.count} connections`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency, options.count) }, worker));
  return probeReport(target, outcomes, performance.now() - started, chosenFamily(options));
}
