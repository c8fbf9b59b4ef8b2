/**
 * `--udp`: probe and load with datagrams. A socket per flow
 * (`Deno.listenDatagram`, as the server's port: `node:dgram` allocates 64 KiB
 * for every datagram it receives) that keeps what comes with the time it
 * came; a probe that sends
 * one datagram from a socket of its own and waits for its echo, a datagram
 * before it being the banner that names who answered; and load, flows doing
 * request/response until `--duration`. The one-flow probe is udp_flow.ts.
 *
 * tcp-echo's UDP port greets a peer (address and port) it has not seen
 * recently with the banner as a datagram of its own, then echoes; so a new
 * socket, a new source port, is a new flow that the network may send to
 * another backend, just as a new TCP connection.
 *
 * @example
 * ```ts
 * import { parseClientArgs } from "./options.ts";
 * import { runUdpProbe } from "./udp.ts";
 *
 * const options = parseClientArgs(["127.0.0.1:3333", "--udp", "--count", "10"]);
 * const report = await runUdpProbe(options, "127.0.0.1:3333", () => {});
 * report.lost; // datagrams without an echo within --timeout
 * ```
 *
 * @module
 */
import * as hdr from "hdr-histogram-js";
import { formatHostPort, receiveDatagrams, unmapIPv4 } from "../src/wire.ts";
import { chosenFamily } from "./connection.ts";
import { type IpVersion, resolveAddress } from "./family.ts";
import { type Failure, failureOf, type FailureSummary, FailureTally } from "./failures.ts";
import type { ClientOptions } from "./options.ts";
import { equalBytes, makeExchange, quoteStart, randomBytes } from "./payloads.ts";
import { latencySummary, type Percentiles, summarize } from "./percentiles.ts";
import {
  type AnsweredBy,
  identityKey,
  parseBanner,
  percentOf,
  type ServerIdentity,
  type WhereConnected,
  whereConnected,
} from "./probe.ts";

const decoder = new TextDecoder();

/** A datagram that came: its bytes, when, and from where if not from the address sent to. */
export interface Datagram {
  /** Its bytes. */
  readonly bytes: Uint8Array;
  /** `performance.now()` when it came. */
  readonly atMs: number;
  /** `host:port` it came from, when that is not where the socket sends to. */
  readonly stray?: string;
}

/**
 * A client UDP socket: bound to a port of its own (one flow), sending to
 * one address and port. What comes is queued for {@linkcode UdpFlowSocket.next},
 * or handed to `onDatagram` when that is set.
 */
export class UdpFlowSocket {
  readonly #socket: Deno.DatagramConn;
  readonly #target: Deno.NetAddr;
  readonly #from: string;
  readonly #queue: Datagram[] = [];
  readonly #receiving: Promise<void>;
  #closing = false;
  #waiter: ((datagram: Datagram) => void) | undefined;
  /** Takes every datagram as it comes instead of the queue. */
  onDatagram: ((datagram: Datagram) => void) | undefined;

  private constructor(
    socket: Deno.DatagramConn,
    /** The IP address it sends to. */
    readonly address: string,
    /** The port it sends to. */
    readonly port: number,
    /** Its own (source) port. */
    readonly localPort: number,
  ) {
    this.#socket = socket;
    this.#target = { transport: "udp", hostname: address, port };
    this.#from = unmapIPv4(address);
    // A failed receive ends the flow's reading: what it sent is then counted as lost.
    this.#receiving = receiveDatagrams(
      socket,
      (bytes, peer) => this.#arrived(bytes, peer),
      () => this.#closing,
      () => false,
    );
  }

  /** Queues a datagram with the time it came (a copy: the socket's buffer is read into again). */
  #arrived(bytes: Uint8Array, peer: Deno.NetAddr): void {
    const atMs = performance.now();
    const kept = bytes.slice();
    const from = unmapIPv4(peer.hostname);
    this.#take(
      from === this.#from && peer.port === this.port
        ? { bytes: kept, atMs }
        : { bytes: kept, atMs, stray: formatHostPort(from, peer.port) },
    );
  }

  /**
   * Looks `hostname` up (in `family`), opens a socket of that family on a
   * port of its own. A port in `usedPorts` is not taken (while some are
   * left to try): a port used again soon is the same flow to the server (no
   * banner) and to a NAT; the port taken is added.
   */
  static async open(
    hostname: string,
    port: number,
    family: IpVersion | undefined,
    usedPorts: Set<number> = new Set(),
  ): Promise<UdpFlowSocket> {
    const resolved = await resolveAddress(hostname, family);
    const anyAddress = resolved.family === 6 ? "::" : "0.0.0.0";
    // Those not taken stay bound until one is, so that the kernel picks another each time.
    const refused: Deno.DatagramConn[] = [];
    try {
      for (let attempt = 1;; attempt++) {
        const socket = Deno.listenDatagram({ transport: "udp", hostname: anyAddress, port: 0 });
        const localPort = (socket.addr as Deno.NetAddr).port;
        if (usedPorts.has(localPort) && attempt < FRESH_PORT_ATTEMPTS) {
          refused.push(socket);
          continue;
        }
        usedPorts.add(localPort);
        return new UdpFlowSocket(socket, resolved.address, port, localPort);
      }
    } finally {
      for (const socket of refused) socket.close();
    }
  }

  #take(datagram: Datagram): void {
    if (this.onDatagram) return this.onDatagram(datagram);
    const waiter = this.#waiter;
    this.#waiter = undefined;
    if (waiter) waiter(datagram);
    else this.#queue.push(datagram);
  }

  /** Sends one datagram; rejects when it cannot be sent (too large, no route). */
  async send(bytes: Uint8Array): Promise<void> {
    await this.#socket.send(bytes, this.#target);
  }

  /** The next datagram, or `undefined` when none comes within `ms`. */
  next(ms: number): Promise<Datagram | undefined> {
    const queued = this.#queue.shift();
    if (queued) return Promise.resolve(queued);
    if (ms <= 0) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#waiter = undefined;
        resolve(undefined);
      }, ms);
      this.#waiter = (datagram) => {
        clearTimeout(timer);
        resolve(datagram);
      };
    });
  }

  /** Closes the socket. */
  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    this.#socket.close();
    await this.#receiving;
  }
}

/** Ports tried for a socket before one used already in the run is taken anyway. */
const FRESH_PORT_ATTEMPTS = 16;

/** Whether a datagram's text has a banner line of tcp-echo's (any field). */
export function looksLikeBanner(bytes: Uint8Array): boolean {
  return Object.keys(parseBanner(decoder.decode(bytes))).length > 0;
}

/** What a datagram is to a probe waiting for `expected`. */
export type DatagramKind =
  | { readonly kind: "echo" }
  | { readonly kind: "banner"; readonly identity: ServerIdentity }
  | { readonly kind: "wrong"; readonly failure: Failure };

/**
 * Judges one datagram against the echo expected (pure): the echo itself;
 * before it, a banner (a datagram with a tcp-echo banner line); else wrong,
 * as is anything from another address than the one sent to.
 */
export function judgeDatagram(datagram: Datagram, expected: Uint8Array): DatagramKind {
  const { bytes, stray } = datagram;
  if (stray === undefined && equalBytes(bytes, expected)) return { kind: "echo" };
  if (stray === undefined && looksLikeBanner(bytes)) {
    return { kind: "banner", identity: parseBanner(decoder.decode(bytes)) };
  }
  return { kind: "wrong", failure: wrongAnswer(datagram) };
}

/** The failure of a datagram that is neither the echo nor a banner, or came from elsewhere. */
export function wrongAnswer({ bytes, stray }: Datagram): Failure {
  if (stray !== undefined) {
    // No hint: the first hint of a reason is shown under its first detail, maybe another's.
    return {
      reason: "mismatch",
      detail: `a datagram came from ${stray}, not from the address sent to (a reply that ` +
        `skipped the NAT on its way back?): ${quoteStart(bytes)}`,
    };
  }
  return {
    reason: "mismatch",
    detail: `the echo differs from what was sent; ${bytes.length} bytes came: ${quoteStart(bytes)}`,
  };
}

/**
 * A datagram without its echo within `timeoutMs`; the hint says what it
 * means that the banner came (the server got it) or that nothing did.
 */
export function lostFailure(timeoutMs: number, greeted: boolean, target: string): Failure {
  return {
    reason: "lost",
    detail: `no echo within ${timeoutMs} ms`,
    hint: greeted
      ? "the server got the datagram (its banner came) but no echo came back: a fault " +
        "(tcp-echo: UDP_DROP) or loss on the way back"
      : `nothing came back from ${target}: is a UDP port listening there (tcp-echo: UDP_PORT; ` +
        "a Service's port declared protocol UDP)? UDP has no refusal to see: a closed port, " +
        "a firewall and loss look the same",
  };
}

/** One UDP probe's outcome; `address`: the IP it was sent to; `greeted`: a banner came. */
export type UdpProbeOutcome =
  | {
    readonly ok: true;
    readonly identity: ServerIdentity;
    readonly address: string;
    readonly roundTripMs: number;
  }
  | (
    & {
      readonly ok: false;
      readonly identity: ServerIdentity;
      readonly address?: string;
      readonly greeted: boolean;
    }
    & Failure
  );

/**
 * One UDP probe: a socket of its own, one datagram, and what comes within
 * `--timeout`: the banner (when the server has not seen this port), then
 * the echo.
 */
export async function udpProbeOnce(
  options: ClientOptions,
  payload: Uint8Array,
  target: string,
  usedPorts?: Set<number>,
): Promise<UdpProbeOutcome> {
  let socket: UdpFlowSocket | undefined;
  let identity: ServerIdentity = {};
  let greeted = false;
  try {
    const family = chosenFamily(options);
    socket = await UdpFlowSocket.open(options.hostname, options.port, family, usedPorts);
    const { address } = socket;
    const sentAt = performance.now();
    await socket.send(payload);
    const deadline = sentAt + options.timeoutMs;
    while (true) {
      const datagram = await socket.next(deadline - performance.now());
      if (datagram === undefined) {
        return {
          ok: false,
          identity,
          address,
          greeted,
          ...lostFailure(options.timeoutMs, greeted, target),
        };
      }
      const judged = judgeDatagram(datagram, payload);
      if (judged.kind === "echo") {
        return { ok: true, identity, address, roundTripMs: datagram.atMs - sentAt };
      }
      if (judged.kind === "wrong") {
        return { ok: false, identity, address, greeted, ...judged.failure };
      }
      if (!greeted) identity = judged.identity;
      greeted = true;
    }
  } catch (error) {
    return { ok: false, identity, address: socket?.address, greeted, ...failureOf(error, options) };
  } finally {
    await socket?.close();
  }
}

/** One row of a UDP "answered by" table. */
export interface UdpAnsweredBy {
  /** The server, as {@linkcode identityKey} names it. */
  readonly server: string;
  /** Datagrams it echoed correctly. */
  readonly count: number;
  /** Their share of all datagrams, in percent. */
  readonly percent: number;
  /** Datagrams whose banner came from it but not their echo. */
  readonly lost: number;
}

/** What became of a UDP probe's datagrams, one socket each or one flow. */
export interface DatagramCounts {
  /** Datagrams sent (or tried). */
  readonly datagrams: number;
  /** Datagrams echoed correctly. */
  readonly succeeded: number;
  /** `succeeded` as a percentage of `datagrams`. */
  readonly successPercent: number;
  /** Datagrams without an echo within `--timeout`. */
  readonly lost: number;
  /** `lost` as a percentage of `datagrams`, to a hundredth. */
  readonly lostPercent: number;
  /** Datagrams answered with something else than their echo (or from another address). */
  readonly wrong: number;
}

/** The UDP probe report: who answered, how many of the datagrams were echoed, lost, wrong. */
export interface UdpProbeReport extends DatagramCounts, FailureSummary, WhereConnected {
  /** Datagrams (this report), not connections. */
  readonly transport: "udp";
  /** Each datagram from a socket of its own (this report); see udp_flow.ts for one flow. */
  readonly oneFlow: false;
  /** Datagrams echoed correctly per second, over the whole run. */
  readonly datagramsPerSecond: number;
  /** Who answered (from the banners): echoes, share, and datagrams greeted but lost. */
  readonly answeredBy: readonly UdpAnsweredBy[];
  /** Echoes that were wrong (`wrong`). */
  readonly integrityFailures: number;
  /** Milliseconds from sending to the echo. */
  readonly roundTripMs: Percentiles;
}

/** The answered-by rows of echoes and greeted losses per server, the most echoes first (pure). */
export function udpAnsweredBy(
  echoed: readonly ServerIdentity[],
  lost: readonly ServerIdentity[],
  total: number,
): UdpAnsweredBy[] {
  const rows = new Map<string, { count: number; lost: number }>();
  const row = (identity: ServerIdentity) => {
    const key = identityKey(identity);
    if (!rows.has(key)) rows.set(key, { count: 0, lost: 0 });
    return rows.get(key)!;
  };
  for (const identity of echoed) row(identity).count++;
  for (const identity of lost) row(identity).lost++;
  return [...rows.entries()]
    .sort(([a, x], [b, y]) => y.count - x.count || y.lost - x.lost || a.localeCompare(b))
    .map(([server, { count, lost }]) => ({
      server,
      count,
      percent: percentOf(count, total),
      lost,
    }));
}

/** Builds the UDP probe report from outcomes (pure). */
export function udpProbeReport(
  target: string,
  outcomes: readonly UdpProbeOutcome[],
  elapsedMs: number,
  family?: IpVersion,
): UdpProbeReport {
  const ok = outcomes.filter((o) => o.ok);
  const failed = outcomes.filter((o) => !o.ok);
  const tally = new FailureTally();
  for (const o of failed) tally.add(o);
  const lost = tally.failures.lost ?? 0;
  const wrong = tally.failures.mismatch ?? 0;
  return {
    transport: "udp",
    oneFlow: false,
    ...whereConnected(target, family, outcomes.map((o) => o.address)),
    datagrams: outcomes.length,
    succeeded: ok.length,
    successPercent: percentOf(ok.length, outcomes.length),
    lost,
    lostPercent: percentOf(lost, outcomes.length, 2),
    wrong,
    datagramsPerSecond: elapsedMs > 0 ? ok.length / (elapsedMs / 1_000) : 0,
    answeredBy: udpAnsweredBy(
      ok.map((o) => o.identity),
      failed.filter((o) => o.reason === "lost" && o.greeted).map((o) => o.identity),
      outcomes.length,
    ),
    ...tally.summary(),
    integrityFailures: wrong,
    roundTripMs: summarize(ok.map((o) => o.roundTripMs)),
  };
}

/** Runs `--count` UDP probes, `--concurrency` at a time; `progress` is told how far it got. */
export async function runUdpProbe(
  options: ClientOptions,
  target: string,
  progress: (text: () => string) => void,
): Promise<UdpProbeReport> {
  const { payload } = makeExchange(options.size, options.message, undefined);
  const outcomes: UdpProbeOutcome[] = [];
  // A source port each: a flow each, to the server and to any NAT on the way.
  const usedPorts = new Set<number>();
  let next = 0;
  const started = performance.now();
  const worker = async () => {
    while (next < options.count) {
      next++;
      outcomes.push(await udpProbeOnce(options, payload, target, usedPorts));
      progress(() => `probe udp: ${outcomes.length}/${options.count} datagrams`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency, options.count) }, worker));
  return udpProbeReport(target, outcomes, performance.now() - started, chosenFamily(options));
}

// ---------------------------------------------------------------------------
// load --udp
// ---------------------------------------------------------------------------

/** The load --udp report: round trips per second, loss, latency (microseconds), failures. */
export interface UdpLoadReport extends FailureSummary, WhereConnected {
  /** Datagrams (this report), not connections. */
  readonly transport: "udp";
  /** Request/response: a datagram, its echo, the next. */
  readonly mode: "rr";
  /** How many flows (sockets) were used. */
  readonly flows: number;
  /** How long the load ran, in seconds. */
  readonly durationS: number;
  /** Datagrams sent. */
  readonly sent: number;
  /** Datagrams echoed correctly. */
  readonly operations: number;
  /** `operations` per second. */
  readonly opsPerSecond: number;
  /** Datagrams without an echo within `--timeout`. */
  readonly lost: number;
  /** `lost` as a percentage of `sent`, to a hundredth. */
  readonly lostPercent: number;
  /** Echoes of earlier datagrams (late, or duplicated) that came while waiting for another. */
  readonly late: number;
  /** Echoed bytes compared with what was sent. */
  readonly bytesVerified: number;
  /** `bytesVerified` per second, in MB (10^6 bytes). */
  readonly megabytesPerSecond: number;
  /** Round-trip latency, in microseconds. */
  readonly latencyUs: Percentiles & { readonly mean: number };
  /** Echoes that were wrong. */
  readonly integrityFailures: number;
  /** Flows per server (from each flow's banner), and their share of the flows. */
  readonly answeredBy: readonly AnsweredBy[];
}

/** What load's flows count together. */
interface UdpLoadTally {
  sent: number;
  operations: number;
  lost: number;
  late: number;
  bytesVerified: number;
  readonly histogram: hdr.Histogram;
  readonly failures: FailureTally;
  readonly addresses: Set<string>;
  /** The flows' source ports. */
  readonly ports: Set<number>;
  /** Who answered each flow that had an answer (its banner; `{}`: none came). */
  readonly flowsAnsweredBy: ServerIdentity[];
}

/** One load flow's state while it waits for echoes. */
interface LoadFlowState {
  readonly options: ClientOptions;
  readonly target: string;
  readonly tally: UdpLoadTally;
  /** The banner's identity, once one came. */
  identity: ServerIdentity | undefined;
  /** Anything came back: a banner or an echo. */
  answered: boolean;
}

/** Bytes of a load datagram that carry its number. */
const NUMBER_BYTES = 4;

/** Writes request `n` into the first bytes of `payload` (as many as it has, up to 4). */
function setRequestNumber(payload: Uint8Array, n: number): void {
  for (let i = 0; i < Math.min(NUMBER_BYTES, payload.length); i++) {
    payload[i] = (n >>> (8 * (NUMBER_BYTES - 1 - i))) & 0xff;
  }
}

/** Whether `bytes` is the echo of an earlier request than the one in `payload`. */
function isEarlierEcho(bytes: Uint8Array, payload: Uint8Array): boolean {
  if (bytes.length !== payload.length || payload.length <= NUMBER_BYTES) {
    return bytes.length === payload.length && !equalBytes(bytes, payload);
  }
  return equalBytes(bytes.subarray(NUMBER_BYTES), payload.subarray(NUMBER_BYTES)) &&
    !equalBytes(bytes, payload);
}

/** Waits for request `n`'s echo; counts it, its loss or what came instead. */
async function awaitEcho(
  socket: UdpFlowSocket,
  payload: Uint8Array,
  n: number,
  sentAt: number,
  context: LoadFlowState,
): Promise<void> {
  const { options, tally } = context;
  while (true) {
    const datagram = await socket.next(sentAt + options.timeoutMs - performance.now());
    if (datagram === undefined) {
      tally.lost++;
      const greeted = context.identity !== undefined;
      const lost = lostFailure(options.timeoutMs, greeted, context.target);
      tally.failures.add({ ...lost, detail: `request ${n}: ${lost.detail}` });
      return;
    }
    const judged = judgeDatagram(datagram, payload);
    if (datagram.stray === undefined) context.answered = true;
    if (judged.kind === "echo") {
      tally.histogram.recordValue(Math.max(1, Math.round((datagram.atMs - sentAt) * 1_000)));
      tally.operations++;
      tally.bytesVerified += payload.length;
      return;
    }
    if (datagram.stray === undefined && isEarlierEcho(datagram.bytes, payload)) {
      tally.late++;
    } else if (judged.kind === "banner") {
      context.identity ??= judged.identity;
    } else {
      const { failure } = judged as { failure: Failure };
      tally.failures.add({ ...failure, detail: `request ${n}: ${failure.detail}` });
      return;
    }
  }
}

/** One load flow: request/response datagrams from one socket until `deadline`. */
async function loadFlow(
  options: ClientOptions,
  target: string,
  deadline: number,
  tally: UdpLoadTally,
): Promise<void> {
  const family = chosenFamily(options);
  const socket = await UdpFlowSocket.open(options.hostname, options.port, family, tally.ports);
  tally.addresses.add(socket.address);
  const context: LoadFlowState = {
    options,
    target,
    tally,
    identity: undefined,
    answered: false,
  };
  try {
    const payload = randomBytes(options.size);
    for (let n = 1; performance.now() < deadline; n++) {
      setRequestNumber(payload, n);
      const sentAt = performance.now();
      await socket.send(payload);
      tally.sent++;
      await awaitEcho(socket, payload, n, sentAt, context);
    }
  } finally {
    if (context.answered) tally.flowsAnsweredBy.push(context.identity ?? {});
    await socket.close();
  }
}

/** Runs `--connections` UDP flows for `--duration`; `progress` is told the rates. */
export async function runUdpLoad(
  options: ClientOptions,
  target: string,
  progress: (text: () => string) => void,
): Promise<UdpLoadReport> {
  const tally: UdpLoadTally = {
    sent: 0,
    operations: 0,
    lost: 0,
    late: 0,
    bytesVerified: 0,
    histogram: hdr.build({
      lowestDiscernibleValue: 1,
      highestTrackableValue: 3_600_000_000,
      numberOfSignificantValueDigits: 3,
    }),
    failures: new FailureTally(),
    addresses: new Set(),
    ports: new Set(),
    flowsAnsweredBy: [],
  };
  const started = performance.now();
  const deadline = started + options.durationMs;
  const ticker = setInterval(() => {
    const seconds = (performance.now() - started) / 1_000;
    progress(() =>
      `load udp: ${seconds.toFixed(1)}s, ${Math.round(tally.operations / seconds)} datagrams/s, ` +
      `${tally.lost} lost`
    );
  }, 500);
  try {
    await Promise.all(Array.from({ length: options.connections }, async () => {
      try {
        await loadFlow(options, target, deadline, tally);
      } catch (error) {
        tally.failures.add(failureOf(error, options));
      }
    }));
  } finally {
    clearInterval(ticker);
  }
  const seconds = (performance.now() - started) / 1_000;
  const summary = tally.failures.summary();
  return {
    transport: "udp",
    ...whereConnected(target, chosenFamily(options), tally.addresses),
    mode: "rr",
    flows: options.connections,
    durationS: Math.round(seconds * 1_000) / 1_000,
    sent: tally.sent,
    operations: tally.operations,
    opsPerSecond: tally.operations / seconds,
    lost: tally.lost,
    lostPercent: percentOf(tally.lost, tally.sent, 2),
    late: tally.late,
    bytesVerified: tally.bytesVerified,
    megabytesPerSecond: tally.bytesVerified / seconds / 1e6,
    latencyUs: latencySummary(tally.histogram),
    integrityFailures: summary.failures.mismatch ?? 0,
    answeredBy: udpAnsweredBy(tally.flowsAnsweredBy, [], options.connections)
      .map(({ server, count, percent }) => ({ server, count, percent })),
    ...summary,
  };
}
