/**
 * `load`: connections kept busy for a while, request/response (`rr`),
 * streaming (`stream`) or a new connection each time (`connect`), every
 * echoed byte verified; and the report of throughput, latency in
 * microseconds and integrity.
 *
 * @module
 */
import * as hdr from "hdr-histogram-js";
import { closeQuietly, concatBytes, indexOfBytes, writeAll } from "../src/wire.ts";
import {
  addressOf,
  chosenFamily,
  type ClientConn,
  type Connector,
  connectWithin,
  withTimeout,
  writeWhileReading,
} from "./connection.ts";
import {
  ConnectionFailure,
  echoHint,
  failureOf,
  type FailureSummary,
  FailureTally,
  prefixHint,
} from "./failures.ts";
import type { ClientOptions, LoadMode } from "./options.ts";
import {
  equalBytes,
  firstDifference,
  makeExchange,
  quoteStart,
  randomBytes,
  randomLine,
} from "./payloads.ts";
import { latencySummary, type Percentiles } from "./percentiles.ts";
import { probeOnce, type WhereConnected, whereConnected } from "./probe.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const NEWLINE = 0x0a;

/** The load report: throughput, latency (microseconds), integrity, failures. */
export interface LoadReport extends FailureSummary, WhereConnected {
  /** Connections (this report), not datagrams. */
  readonly transport: "tcp";
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
}

function mismatch(detail: string, hint?: string): ConnectionFailure {
  return new ConnectionFailure({ reason: "mismatch", detail, hint });
}

function short(detail: string, hint?: string): ConnectionFailure {
  return new ConnectionFailure({ reason: "short", detail, hint });
}

/**
 * Sends a fresh token line and reads until its echo; returns the bytes before
 * it (the banner). The echoed line must start with `--prefix` and a space, or
 * (no `--prefix`) not with what looks like another prefix (`X `).
 */
async function synchronize(conn: ClientConn, options: ClientOptions): Promise<Uint8Array> {
  const token = concatBytes([encoder.encode("sync-"), randomLine(16), encoder.encode("\n")]);
  await writeAll(conn, token);
  const head = options.prefix === undefined ? "" : `${options.prefix} `;
  const buffer = new Uint8Array(65_536 + head.length + token.length);
  let filled = 0;
  while (true) {
    if (filled === buffer.length) {
      throw mismatch(`no echo of the first line in 64 KiB: ${quoteStart(buffer)}`);
    }
    const n = await conn.read(buffer.subarray(filled));
    const received = buffer.subarray(0, filled + (n ?? 0));
    if (n === null) {
      const quoted = filled > 0 ? `; ${filled} bytes came: ${quoteStart(received)}` : "";
      throw short(
        `closed before echoing the first line${quoted}`,
        echoHint(received, token, options),
      );
    }
    filled += n;
    const at = indexOfBytes(received, token);
    if (at < 0) continue;
    if (at + token.length !== filled) {
      throw mismatch("unexpected bytes after the first line's echo");
    }
    const lineStart = received.lastIndexOf(NEWLINE, at - 1) + 1;
    const seen = decoder.decode(received.subarray(lineStart, at));
    // A banner line without its newline would end in a space too: real ones have one.
    const seenPrefix = seen === "" ? "" : /^.+ $/.test(seen) ? seen.slice(0, -1) : undefined;
    if (seen !== head && (options.prefix !== undefined || seenPrefix)) {
      throw mismatch(
        `the first line came back as ${quoteStart(received.subarray(lineStart))}`,
        prefixHint(seenPrefix, options.prefix),
      );
    }
    return buffer.slice(0, options.prefix === undefined ? at : lineStart);
  }
}

async function readExactly(conn: ClientConn, into: Uint8Array): Promise<void> {
  let filled = 0;
  while (filled < into.length) {
    const n = await conn.read(into.subarray(filled));
    if (n === null) throw short(`closed after ${filled} of ${into.length} bytes`);
    filled += n;
  }
}

interface LoadTally {
  operations: number;
  bytesVerified: number;
  histogram: hdr.Histogram;
  /** The addresses connected to. */
  readonly addresses: Set<string>;
}

/** Connects, synchronizes on a token line, runs `work`, and closes the connection. */
async function onSynchronizedConnection(
  options: ClientOptions,
  connect: Connector,
  tally: LoadTally,
  work: (conn: ClientConn) => Promise<void>,
): Promise<void> {
  const conn = await connectWithin(connect, options.timeoutMs);
  tally.addresses.add(addressOf(conn));
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
  return onSynchronizedConnection(options, connect, tally, async (conn) => {
    const { payload, expected } = makeExchange(options.size, undefined, options.prefix);
    const answer = new Uint8Array(expected.length);
    while (performance.now() < deadline) {
      const sent = performance.now();
      await writeAll(conn, payload);
      await withTimeout(options.timeoutMs, readExactly(conn, answer), () => conn.close());
      tally.histogram.recordValue(Math.max(1, Math.round((performance.now() - sent) * 1_000)));
      if (!equalBytes(answer, expected)) {
        const at = firstDifference(answer, expected, 0);
        throw mismatch(
          `request ${tally.operations + 1}: the echo differs from what was sent at byte ${at} ` +
            `of ${expected.length}`,
        );
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
    if (outcome.address !== undefined) tally.addresses.add(outcome.address);
    if (!outcome.ok) throw new ConnectionFailure(outcome);
    tally.histogram.recordValue(Math.max(1, Math.round((performance.now() - started) * 1_000)));
    tally.operations++;
    tally.bytesVerified += exchange.expected.length;
  }
};

/** A 1 MiB random pattern, written in a cycle and checked on the way back. */
const STREAM_PATTERN_BYTES = 1 << 20;

const streamConnection: LoadWorker = (options, connect, deadline, tally) => {
  return onSynchronizedConnection(options, connect, tally, async (conn) => {
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
              if (differs >= 0) throw mismatch(`byte ${checked + differs} of the stream differs`);
              checked += n;
              tally.bytesVerified += n;
            }
          })(),
          () => conn.close(),
        ),
    );
    if (checked !== sent) throw short(`${checked} of ${sent} bytes came back`);
    tally.operations++;
  });
};

const LOAD_WORKERS: Readonly<Record<LoadMode, LoadWorker>> = {
  rr: rrConnection,
  stream: streamConnection,
  connect: connectionAfterConnection,
};

/** Runs `--connections` workers of `--mode` for `--duration`; `progress` is told the rates. */
export async function runLoad(
  options: ClientOptions,
  connect: Connector,
  target: string,
  progress: (text: () => string) => void,
): Promise<LoadReport> {
  const tally: LoadTally = {
    operations: 0,
    bytesVerified: 0,
    histogram: hdr.build({
      lowestDiscernibleValue: 1,
      highestTrackableValue: 3_600_000_000,
      numberOfSignificantValueDigits: 3,
    }),
    addresses: new Set(),
  };
  const failures = new FailureTally();
  const started = performance.now();
  const deadline = started + options.durationMs;
  const one = LOAD_WORKERS[options.mode];
  const ticker = setInterval(() => {
    const seconds = (performance.now() - started) / 1_000;
    progress(() =>
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
        failures.add(failureOf(error, options));
      }
    }));
  } finally {
    clearInterval(ticker);
  }
  const seconds = (performance.now() - started) / 1_000;
  const summary = failures.summary();
  return {
    transport: "tcp",
    ...whereConnected(target, chosenFamily(options), tally.addresses),
    mode: options.mode,
    tls: options.tls !== undefined,
    connections: options.connections,
    durationS: Math.round(seconds * 1_000) / 1_000,
    operations: tally.operations,
    opsPerSecond: tally.operations / seconds,
    bytesVerified: tally.bytesVerified,
    megabytesPerSecond: tally.bytesVerified / seconds / 1e6,
    latencyUs: latencySummary(tally.histogram),
    integrityFailures: (summary.failures.mismatch ?? 0) + (summary.failures.short ?? 0),
    ...summary,
  };
}
