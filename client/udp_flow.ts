/**
 * `probe --udp --one-flow`: every datagram from one source port, one each
 * `--interval`, as a client that keeps its socket sends them; and the record
 * of who answered which and when that changed.
 *
 * On one flow an echo does not say who sent it, but a backend that has not
 * seen the peer greets it first (tcp-echo's banner, a datagram of its own):
 * so each echo counts for the backend whose banner came last, and a banner
 * is the moment the answer changed. This is what shows kube-proxy's
 * conntrack keeping a flow on a pod that is gone: the echoes stop (lost),
 * and when the entry goes, another pod's banner and its echoes come.
 *
 * {@linkcode FlowRecorder} is the record (pure: it is told what was sent,
 * what came and what timed out); {@linkcode runUdpFlow} is the I/O.
 *
 * @example
 * ```ts
 * import { parseClientArgs } from "./options.ts";
 * import { runUdpFlow } from "./udp_flow.ts";
 *
 * const options = parseClientArgs(
 *   ["127.0.0.1:3333", "--udp", "--one-flow", "--count", "60", "--interval", "1s"],
 * );
 * const report = await runUdpFlow(options, "127.0.0.1:3333", () => {}, new AbortController().signal);
 * report.changes; // [{ atMs, datagram, from, to, lostBetween }, ...]
 * ```
 *
 * @module
 */
import { chosenFamily } from "./connection.ts";
import { type Failure, failureOf, type FailureSummary, FailureTally } from "./failures.ts";
import type { ClientOptions } from "./options.ts";
import { equalBytes, makeExchange } from "./payloads.ts";
import { type Percentiles, summarize } from "./percentiles.ts";
import {
  type AnsweredBy,
  identityKey,
  parseBanner,
  percentOf,
  type WhereConnected,
  whereConnected,
} from "./probe.ts";
import {
  type Datagram,
  type DatagramCounts,
  looksLikeBanner,
  lostFailure,
  UdpFlowSocket,
  wrongAnswer,
} from "./udp.ts";

const decoder = new TextDecoder();

/** How the answered-by table names echoes that came before any banner. */
export const NO_BANNER = "(no banner)";

/** The hint of datagrams lost on a flow that had been answered. */
const FLOW_LOST_HINT = "the flow's backend did not answer them: a fault (tcp-echo: UDP_DROP), " +
  "loss on the way, or a backend that is gone while the flow still goes to it (a stale " +
  "conntrack entry: another backend's banner ends it, see the answer changes)";

/** What became of one datagram: `failed` when it could not be sent. */
export type FlowOutcome = "echoed" | "lost" | "wrong" | "failed";

/** One datagram of the flow. */
interface FlowDatagram {
  /** Its number, from 1. */
  readonly n: number;
  /** Milliseconds since the first was sent. */
  readonly sentMs: number;
  readonly expected: Uint8Array;
  outcome: FlowOutcome | "pending";
  roundTripMs?: number;
  /** The backend its echo counted for. */
  server?: string;
}

/** A banner on the flow: the answer changed (or the same backend greeted again). */
export interface FlowChange {
  /** When the banner came, in milliseconds since the first datagram was sent. */
  readonly atMs: number;
  /** The first datagram echoed after the banner; absent when none was. */
  readonly datagram?: number;
  /** The backend that answered before. */
  readonly from: string;
  /** The backend whose banner came. */
  readonly to: string;
  /** Datagrams lost (or answered wrong) between the last echo before and the first after. */
  readonly lostBetween: readonly number[];
}

/** A run of datagrams with the same outcome (and, echoed, the same backend). */
export interface FlowSegment {
  /** What became of them. */
  readonly outcome: FlowOutcome;
  /** The first datagram's number. */
  readonly first: number;
  /** The last datagram's number. */
  readonly last: number;
  /** When the first was sent, in milliseconds since the start. */
  readonly firstMs: number;
  /** When the last was sent. */
  readonly lastMs: number;
  /** Echoed: the backend they counted for. */
  readonly server?: string;
}

/** The one-flow probe report. */
export interface UdpFlowReport extends DatagramCounts, FailureSummary, WhereConnected {
  /** Datagrams (this report), not connections. */
  readonly transport: "udp";
  /** Every datagram from one source port (this report). */
  readonly oneFlow: true;
  /** The flow's source port; absent when the socket did not open. */
  readonly sourcePort?: number;
  /** `--interval`, in milliseconds. */
  readonly intervalMs: number;
  /** `count`: all were sent; `interrupt`: Ctrl-C stopped the sending. */
  readonly endedBy: "count" | "interrupt";
  /** Datagrams that could not be sent. */
  readonly failed: number;
  /** Echoes that came after their datagram's `--timeout` (it stays lost). */
  readonly late: number;
  /** Echoes that came again (the datagram counted once). */
  readonly duplicates: number;
  /** Who answered: echoes counted for the backend whose banner came last. */
  readonly answeredBy: readonly AnsweredBy[];
  /** Each banner after the first echo: when, at which datagram, from whom to whom, lost between. */
  readonly changes: readonly FlowChange[];
  /** The numbers of the lost datagrams. */
  readonly lostDatagrams: readonly number[];
  /** The datagrams in order, in runs of one outcome and backend. */
  readonly timeline: readonly FlowSegment[];
  /** Datagrams answered wrong, and datagrams that were neither an echo nor a banner. */
  readonly integrityFailures: number;
  /** Milliseconds from sending to the echo. */
  readonly roundTripMs: Percentiles;
}

/** A banner as it came, before the report knows the echoes around it. */
interface BannerSeen {
  readonly atMs: number;
  readonly from: string;
  readonly to: string;
  /** The highest datagram echoed when it came (0: none). */
  readonly echoedBefore: number;
  /** The first datagram echoed after it. */
  firstEchoAfter?: number;
}

/**
 * The record of one flow: told what was sent, what came and what timed out,
 * it decides what each datagram's fate was and who answered it (pure; times
 * are `performance.now()` values).
 */
export class FlowRecorder {
  readonly #datagrams: FlowDatagram[] = [];
  /** The datagrams out, oldest first. */
  readonly #pending = new Map<number, FlowDatagram>();
  readonly #banners: BannerSeen[] = [];
  readonly #failures = new FailureTally();
  /** When the first datagram went out: the flow's time zero. */
  #startedAt: number | undefined;
  /** The backend whose banner came last; `undefined` before any. */
  #current: string | undefined;
  #highestEchoed = 0;
  #late = 0;
  #duplicates = 0;

  /** A record of one flow to `target`, whose datagrams are lost after `timeoutMs`. */
  constructor(readonly timeoutMs: number, readonly target: string) {}

  /** Datagram `n` (numbered from 1, in order) went out at `atMs`, expecting `expected` back. */
  sent(n: number, expected: Uint8Array, atMs: number): void {
    this.#startedAt ??= atMs;
    const datagram: FlowDatagram = {
      n,
      sentMs: atMs - this.#startedAt,
      expected,
      outcome: "pending",
    };
    this.#datagrams.push(datagram);
    this.#pending.set(n, datagram);
  }

  /** Datagram `n` could not be sent: it failed with `failure`. */
  failed(n: number, failure: Failure): void {
    this.#settle(this.#datagrams[n - 1], "failed");
    this.#failures.add(failure);
  }

  /** Datagram `n`'s `--timeout` is over: lost, unless answered. */
  timedOut(n: number): void {
    const datagram = this.#datagrams[n - 1];
    if (datagram.outcome !== "pending") return;
    this.#settle(datagram, "lost");
    const lost = lostFailure(this.timeoutMs, false, this.target);
    // A banner came on this flow, but that does not say the server got this datagram.
    this.#failures.add(this.#current === undefined ? lost : { ...lost, hint: FLOW_LOST_HINT });
  }

  #settle(datagram: FlowDatagram, outcome: FlowOutcome): void {
    datagram.outcome = outcome;
    this.#pending.delete(datagram.n);
  }

  /** The oldest datagram out that `matches`. */
  #oldestPending(matches: (d: FlowDatagram) => boolean): FlowDatagram | undefined {
    for (const datagram of this.#pending.values()) if (matches(datagram)) return datagram;
    return undefined;
  }

  /**
   * A datagram came: the echo of the oldest datagram out with its bytes, a
   * banner (the answer changed), a late or duplicated echo, or wrong.
   * Returns the number of the datagram out it settled, if any.
   */
  received(datagram: Datagram): number | undefined {
    const { bytes, stray, atMs } = datagram;
    if (stray === undefined) {
      const echoOf = this.#oldestPending((d) => equalBytes(d.expected, bytes));
      if (echoOf) return this.#echoed(echoOf, atMs);
      if (looksLikeBanner(bytes)) return this.#greeted(bytes, atMs);
      const settled = this.#datagrams.find((d) => equalBytes(d.expected, bytes));
      if (settled?.outcome === "echoed") return void this.#duplicates++;
      if (settled?.outcome === "lost") return void this.#late++;
    }
    this.#failures.add(wrongAnswer(datagram));
    // The likeliest datagram it answered: the oldest out of its length.
    const answered = stray === undefined
      ? this.#oldestPending((d) => d.expected.length === bytes.length)
      : undefined;
    if (answered === undefined) return undefined;
    this.#settle(answered, "wrong");
    return answered.n;
  }

  /** A banner: from now on the echoes count for its backend. */
  #greeted(bytes: Uint8Array, atMs: number): undefined {
    const to = identityKey(parseBanner(decoder.decode(bytes)));
    // The first banner before any echo is the flow's greeting, not a change.
    if (this.#current !== undefined || this.#highestEchoed > 0) {
      this.#banners.push({
        atMs: atMs - (this.#startedAt ?? atMs),
        from: this.#current ?? NO_BANNER,
        to,
        echoedBefore: this.#highestEchoed,
      });
    }
    this.#current = to;
    return undefined;
  }

  #echoed(datagram: FlowDatagram, atMs: number): number {
    this.#settle(datagram, "echoed");
    datagram.roundTripMs = atMs - this.#startedAt! - datagram.sentMs;
    datagram.server = this.#current ?? NO_BANNER;
    this.#highestEchoed = Math.max(this.#highestEchoed, datagram.n);
    for (const banner of this.#banners) banner.firstEchoAfter ??= datagram.n;
    return datagram.n;
  }

  /** How far it got, for the progress line. */
  status(): string {
    const count = (outcome: FlowOutcome) =>
      this.#datagrams.filter((d) => d.outcome === outcome).length;
    return `probe udp one flow: ${this.#datagrams.length} sent, ${count("echoed")} echoed, ` +
      `${count("lost")} lost, answered by ${this.#current ?? NO_BANNER}`;
  }

  /** The report, once nothing is pending. */
  report(where: WhereConnected, settings: FlowSettings): UdpFlowReport {
    const all = this.#datagrams;
    const echoed = all.filter((d) => d.outcome === "echoed");
    const lost = all.filter((d) => d.outcome === "lost").map((d) => d.n);
    const wrong = all.filter((d) => d.outcome === "wrong").length;
    const failed = all.filter((d) => d.outcome === "failed").length;
    const summary = this.#failures.summary();
    return {
      transport: "udp",
      oneFlow: true,
      ...where,
      ...settings,
      datagrams: all.length,
      succeeded: echoed.length,
      successPercent: percentOf(echoed.length, all.length),
      lost: lost.length,
      lostPercent: percentOf(lost.length, all.length, 2),
      wrong,
      failed,
      late: this.#late,
      duplicates: this.#duplicates,
      answeredBy: answeredBy(echoed, all.length),
      changes: this.#banners.map((banner) => this.#change(banner)),
      lostDatagrams: lost,
      timeline: segments(all),
      ...summary,
      integrityFailures: summary.failures.mismatch ?? 0,
      roundTripMs: summarize(echoed.map((d) => d.roundTripMs!)),
    };
  }

  #change(banner: BannerSeen): FlowChange {
    const { atMs, from, to, echoedBefore, firstEchoAfter } = banner;
    const lostBetween = this.#datagrams
      .filter((d) => d.n > echoedBefore && d.n < (firstEchoAfter ?? Infinity))
      .filter((d) => d.outcome !== "echoed")
      .map((d) => d.n);
    return firstEchoAfter === undefined
      ? { atMs, from, to, lostBetween }
      : { atMs, datagram: firstEchoAfter, from, to, lostBetween };
  }
}

/** What the report repeats of how the flow was run. */
export type FlowSettings = Pick<UdpFlowReport, "sourcePort" | "intervalMs" | "endedBy">;

function answeredBy(echoed: readonly FlowDatagram[], total: number): AnsweredBy[] {
  const counts = new Map<string, number>();
  for (const { server } of echoed) counts.set(server!, (counts.get(server!) ?? 0) + 1);
  return [...counts.entries()]
    .sort(([a, x], [b, y]) => y - x || a.localeCompare(b))
    .map(([server, count]) => ({ server, count, percent: percentOf(count, total) }));
}

/** The datagrams in runs of one outcome and backend. */
function segments(datagrams: readonly FlowDatagram[]): FlowSegment[] {
  const runs: FlowSegment[] = [];
  for (const d of datagrams) {
    const outcome = d.outcome as FlowOutcome;
    const last = runs[runs.length - 1];
    if (last && last.outcome === outcome && last.server === d.server && last.last === d.n - 1) {
      runs[runs.length - 1] = { ...last, last: d.n, lastMs: d.sentMs };
      continue;
    }
    const run = { outcome, first: d.n, last: d.n, firstMs: d.sentMs, lastMs: d.sentMs };
    runs.push(d.server === undefined ? run : { ...run, server: d.server });
  }
  return runs;
}

/** Waits until `atMs` (a `performance.now()` value), or until `stop` aborts. */
function sleepUntil(atMs: number, stop: AbortSignal): Promise<void> {
  const ms = atMs - performance.now();
  if (ms <= 0 || stop.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      stop.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    stop.addEventListener("abort", done);
  });
}

/**
 * Runs a one-flow probe: `--count` datagrams from one socket, one each
 * `--interval`, until all are sent or `stop` aborts; then waits for the
 * answers out (each up to its `--timeout`) and reports.
 */
export async function runUdpFlow(
  options: ClientOptions,
  target: string,
  progress: (text: () => string) => void,
  stop: AbortSignal,
): Promise<UdpFlowReport> {
  const family = chosenFamily(options);
  const settings = { intervalMs: options.intervalMs, endedBy: "count" as const };
  let socket: UdpFlowSocket;
  try {
    socket = await UdpFlowSocket.open(options.hostname, options.port, family);
  } catch (error) {
    const recorder = new FlowRecorder(options.timeoutMs, target);
    recorder.sent(1, new Uint8Array(), performance.now());
    recorder.failed(1, failureOf(error, options));
    return recorder.report(whereConnected(target, family, []), settings);
  }
  const timers = new Map<number, ReturnType<typeof setTimeout>>();
  let allSent = false;
  const { promise: settled, resolve: settle } = Promise.withResolvers<void>();
  const settleWhenDone = () => allSent && timers.size === 0 && settle();
  const startedAt = performance.now();
  const recorder = new FlowRecorder(options.timeoutMs, target);
  const done = (n: number | undefined) => {
    if (n === undefined) return;
    clearTimeout(timers.get(n));
    timers.delete(n);
    settleWhenDone();
  };
  socket.onDatagram = (datagram) => done(recorder.received(datagram));
  let sent = 0;
  try {
    for (let n = 1; n <= options.count && !stop.aborted; n++) {
      await sleepUntil(startedAt + (n - 1) * options.intervalMs, stop);
      if (stop.aborted) break;
      const { payload } = makeExchange(options.size, options.message, undefined);
      recorder.sent(n, payload, performance.now());
      sent = n;
      const timeUp = () => {
        recorder.timedOut(n);
        done(n);
      };
      timers.set(n, setTimeout(timeUp, options.timeoutMs));
      await socket.send(payload).catch((error) => {
        recorder.failed(n, failureOf(error, options));
        done(n);
      });
      progress(() => recorder.status());
    }
    allSent = true;
    settleWhenDone();
    await settled;
  } finally {
    for (const timer of timers.values()) clearTimeout(timer);
    await socket.close();
  }
  return recorder.report(whereConnected(target, family, [socket.address]), {
    sourcePort: socket.localPort,
    intervalMs: options.intervalMs,
    endedBy: sent < options.count ? "interrupt" : "count",
  });
}
