/**
 * `hold`: connections held open to see what becomes of them. This module is
 * the I/O: opening them at a bounded rate (each greets with heartbeat 0 and
 * reads the banner before its echo), one timer whose tick walks the slice
 * of connections due a heartbeat and expires the unanswered ones, a read
 * loop per connection that checks each echo byte for byte, and the endings
 * (with `--reconnect`, a replacement queued). What is recorded and judged is
 * in hold_record.ts; the text for people in report.ts.
 *
 * Cheap by construction, for 10,000 connections and more: per connection one
 * small answer buffer, its record, and one pending read; one timer for all,
 * and the unanswered heartbeats in one queue in the order they were sent, so
 * a tick looks only at the oldest.
 *
 * @example
 * ```ts
 * import { makeConnector } from "./connection.ts";
 * import { runHold } from "./hold.ts";
 * import { parseClientArgs } from "./options.ts";
 *
 * const options = parseClientArgs(["127.0.0.1:3333", "hold", "--duration", "10s"]);
 * const report = await runHold(options, await makeConnector(options), "127.0.0.1:3333");
 * report.backends; // one row per backend: opened, open, ended by fin, rst, ...
 * ```
 *
 * @module
 */
import { closeQuietly, indexOfBytes, writeAll } from "../src/wire.ts";
import { type ClientConn, type Connector, connectWithin, withTimeout } from "./connection.ts";
import {
  ConnectionFailure,
  echoHint,
  failureOf,
  type HintContext,
  prefixHint,
} from "./failures.ts";
import {
  addStall,
  heartbeatEcho,
  heartbeatLineStart,
  type HeldRecord,
  type HoldEndedBy,
  type HoldEnding,
  type HoldReport,
  HoldTally,
  judgeExpectations,
  LAST_HEARTBEAT,
  readAnswer,
  type Replaced,
  setHeartbeatNumber,
} from "./hold_record.ts";
import type { ClientOptions } from "./options.ts";
import { quoteStart } from "./payloads.ts";
import { identityKey, parseBanner } from "./probe.ts";

const decoder = new TextDecoder();
const NEWLINE = 0x0a;

/** The one timer's period: heartbeats due in it go out together. */
const TICK_MS = 10;
/** Room for a banner and the greeting's echo. */
const GREETING_BYTES = 4_096;
/** Room for an echo and a drain notice: what a held connection keeps to read into. */
const ANSWER_BYTES = 256;
/** Connections being opened at once, at most. */
const MAX_OPENING = 256;
/** A failed attempt (with --reconnect) is tried again this much later. */
const RETRY_MS = 100;
/** Records a report keeps; past them, connections are counted only. */
const MAX_RECORDS = 200_000;

/** What the live line shows: how it is going, now. */
export interface HoldStatus {
  /** Milliseconds since the start. */
  readonly elapsedMs: number;
  /** `--connections`. */
  readonly connections: number;
  /** Open connections per backend, the most first. */
  readonly openByBackend: readonly (readonly [backend: string, open: number])[];
  /** Open connections. */
  readonly open: number;
  /** Connections that ended. */
  readonly lost: number;
  /** Replacements that opened. */
  readonly reconnected: number;
  /** The longest stall so far, the ongoing ones too. */
  readonly worstStallMs: number;
  /** When every first connection had opened or failed to; `undefined` until then. */
  readonly allOpenAtMs: number | undefined;
  /** First connections that did not open. */
  readonly notOpened: number;
}

/** A place to fill: a first connection, or the replacement of a lost one. */
interface OpenRequest {
  readonly slot: number;
  readonly generation: number;
  readonly replaces: Omit<Replaced, "gapMs"> | undefined;
  /** When the first attempt began. */
  firstAt: number;
  attempts: number;
  /** Not to be tried before (a retry). */
  notBefore: number;
}

/** A FIFO that drops from the front without moving the rest each time. */
class Queue<T> {
  #items: T[] = [];
  #head = 0;

  get length(): number {
    return this.#items.length - this.#head;
  }

  push(item: T): void {
    this.#items.push(item);
  }

  peek(): T | undefined {
    return this.#items[this.#head];
  }

  shift(): T | undefined {
    if (this.#head === this.#items.length) return undefined;
    const item = this.#items[this.#head++];
    if (this.#head > 1_024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return item;
  }
}

/** One open connection: its socket, its record, and what it waits for. */
class HeldConnection {
  /** What came and is not read yet. */
  readonly buffer: Uint8Array;
  filled = 0;
  /** When the heartbeat out was sent; NaN when none is out. */
  sentAt = NaN;
  /** The number of the last heartbeat sent. */
  heartbeat = 0;
  /** Closed: by its end, or by the hold's. */
  ended = false;
  /** The line sent: the end of `expected`, renumbered for each heartbeat. */
  readonly line: Uint8Array;

  constructor(
    readonly conn: ClientConn,
    readonly record: HeldRecord,
    /** The echo of the heartbeat out (`PREFIX ` and the line). */
    readonly expected: Uint8Array,
  ) {
    this.buffer = new Uint8Array(ANSWER_BYTES + expected.length);
    this.line = expected.subarray(heartbeatLineStart(expected));
  }

  /** Drops the first `count` bytes read. */
  consume(count: number): void {
    this.buffer.copyWithin(0, count, this.filled);
    this.filled -= count;
  }
}

function mismatch(detail: string, hint?: string): ConnectionFailure {
  return new ConnectionFailure({ reason: "mismatch", detail, hint });
}

/**
 * Sends heartbeat 0 and reads until its echo; returns what came before it
 * (the banner: sent on connect, or just before the first echo, or none). The
 * echo must start a line and, without `--prefix`, not come as `X hb ...`.
 */
async function greet(conn: ClientConn, expected: Uint8Array, context: HintContext) {
  const lineStart = heartbeatLineStart(expected);
  const line = expected.subarray(lineStart);
  const head = decoder.decode(expected.subarray(0, lineStart));
  await writeAll(conn, line);
  const buffer = new Uint8Array(GREETING_BYTES);
  let filled = 0;
  while (true) {
    if (filled === buffer.length) {
      throw mismatch(`no echo of heartbeat 0 in ${GREETING_BYTES} bytes: ${quoteStart(buffer)}`);
    }
    const n = await conn.read(buffer.subarray(filled));
    const received = buffer.subarray(0, filled + (n ?? 0));
    if (n === null) {
      const quoted = filled > 0 ? `; ${filled} bytes came: ${quoteStart(received)}` : "";
      throw new ConnectionFailure({
        reason: "short",
        detail: `closed before echoing heartbeat 0${quoted}`,
        hint: echoHint(received, line, context),
      });
    }
    filled += n;
    const at = indexOfBytes(received, line);
    if (at < 0) continue;
    const start = at === 0 ? 0 : received.lastIndexOf(NEWLINE, at - 1) + 1;
    const seen = decoder.decode(received.subarray(start, at));
    if (seen !== head) {
      const seenPrefix = /^.+ $/.test(seen) ? seen.slice(0, -1) : undefined;
      throw mismatch(
        `heartbeat 0 came back as ${quoteStart(received.subarray(start))}`,
        prefixHint(seenPrefix, context.prefix),
      );
    }
    if (at + line.length !== filled) {
      throw mismatch(`bytes came after the echo of heartbeat 0: ${quoteStart(received)}`);
    }
    return buffer.slice(0, start);
  }
}

/** Milliseconds rounded to the microsecond: what a record keeps of a time. */
function toMicroseconds(ms: number): number {
  return Math.round(ms * 1_000) / 1_000;
}

/** How an error of a held connection's read or write ends it. */
function endingOf(error: unknown): { reason: HoldEnding; detail: string } {
  const detail = error instanceof Error ? error.message : String(error);
  const code = (error as { code?: unknown } | undefined)?.code;
  if (
    error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.BrokenPipe ||
    error instanceof Deno.errors.ConnectionAborted || code === "ECONNRESET" || code === "EPIPE"
  ) return { reason: "rst", detail };
  if (error instanceof Deno.errors.TimedOut || code === "ETIMEDOUT") {
    return { reason: "timeout", detail };
  }
  return { reason: "error", detail };
}

/** What an EOF says, by what was waiting for more. */
function finDetail(held: HeldConnection): string {
  const out = Number.isNaN(held.sentAt) ? "" : ` while heartbeat ${held.heartbeat} was out`;
  if (held.filled === 0) return `the peer closed the connection (EOF)${out}`;
  return `the peer closed the connection (EOF) after ${held.filled} bytes of an answer${out}: ` +
    quoteStart(held.buffer.subarray(0, held.filled));
}

/**
 * A hold: its connections, their records, the counts, and the one timer.
 * {@linkcode run} runs it to the end and returns the report.
 */
export class Hold {
  readonly #options: ClientOptions;
  readonly #connect: Connector;
  readonly #target: string;
  readonly #onTick: (status: () => HoldStatus) => void;
  readonly #start = performance.now();
  readonly #startedAt = new Date().toISOString();
  readonly #deadline: number;
  /** Each place's open connection. */
  readonly #slots: (HeldConnection | undefined)[];
  readonly #tally = new HoldTally();
  readonly #records: HeldRecord[] = [];
  #recordsNotKept = 0;
  /** Read loops still running (they never reject). */
  readonly #readings = new Set<Promise<void>>();
  /** Attempts under way (they never reject), and the connections of those greeting. */
  readonly #openings = new Set<Promise<void>>();
  readonly #greeting = new Set<ClientConn>();
  /** Places to fill now, and those to try again later (in the order they are due). */
  readonly #toOpen = new Queue<OpenRequest>();
  readonly #retries = new Queue<OpenRequest>();
  #openTokens = 1;
  #tokensAt: number;
  /** First attempts not yet done; when 0, every first connection opened or failed. */
  #firstAttemptsLeft: number;
  #allOpenAtMs: number | undefined;
  #notOpened = 0;
  #open = 0;
  /** Slot visits made by the heartbeat walk since the start. */
  #visits = 0;
  /** Heartbeats out, in the order sent; a tick expires those past --timeout. */
  readonly #outstanding = new Queue<{ held: HeldConnection; sentAt: number }>();
  readonly #done = Promise.withResolvers<HoldEndedBy>();
  #endedBy: HoldEndedBy | undefined;

  /** A hold of `options.connections` connections opened with `connect`; {@linkcode Hold.run} starts it. */
  constructor(
    options: ClientOptions,
    connect: Connector,
    target: string,
    onTick: (status: () => HoldStatus) => void = () => {},
  ) {
    this.#options = options;
    this.#connect = connect;
    this.#target = target;
    this.#onTick = onTick;
    this.#deadline = this.#start + options.durationMs;
    this.#slots = new Array(options.connections).fill(undefined);
    this.#firstAttemptsLeft = options.connections;
    this.#tokensAt = this.#start;
    for (let slot = 0; slot < options.connections; slot++) {
      this.#toOpen.push({
        slot,
        generation: 0,
        replaces: undefined,
        firstAt: NaN,
        attempts: 0,
        notBefore: 0,
      });
    }
  }

  /** Milliseconds since the start, to the microsecond. */
  #sinceStart(now: number): number {
    return toMicroseconds(now - this.#start);
  }

  /** Runs until --duration, `stop`, or (without --reconnect) every connection lost. */
  async run(stop?: AbortSignal): Promise<HoldReport> {
    const interrupt = () => this.#finish("interrupt");
    stop?.addEventListener("abort", interrupt, { once: true });
    if (stop?.aborted) interrupt();
    const timer = setInterval(() => this.#tick(), TICK_MS);
    let endedBy: HoldEndedBy;
    try {
      this.#tick();
      endedBy = await this.#done.promise;
    } finally {
      clearInterval(timer);
      stop?.removeEventListener("abort", interrupt);
    }
    const endedAt = performance.now();
    for (const held of this.#slots) if (held) this.#closeAtEnd(held, endedAt);
    for (const conn of this.#greeting) closeQuietly(conn);
    await Promise.all([...this.#readings, ...this.#openings]);
    return this.#report(endedBy, endedAt);
  }

  /** What the live line shows. */
  status(): HoldStatus {
    const now = performance.now();
    return {
      elapsedMs: this.#sinceStart(now),
      connections: this.#options.connections,
      openByBackend: this.#tally.openByBackend(),
      open: this.#open,
      lost: this.#tally.lost,
      reconnected: this.#tally.replaced,
      worstStallMs: Math.max(this.#tally.worstStallMs(), this.#ongoingStallMs(now)),
      allOpenAtMs: this.#allOpenAtMs,
      notOpened: this.#notOpened,
    };
  }

  #finish(endedBy: HoldEndedBy): void {
    if (this.#endedBy !== undefined) return;
    this.#endedBy = endedBy;
    this.#done.resolve(endedBy);
  }

  #tick(): void {
    if (this.#endedBy !== undefined) return;
    const now = performance.now();
    if (now >= this.#deadline) return this.#finish("duration");
    this.#expire(now);
    this.#sendDue(now);
    this.#openDue(now);
    this.#onTick(() => this.status());
    const allTried = this.#firstAttemptsLeft === 0 && this.#openings.size === 0;
    if (!this.#options.reconnect && allTried && this.#open === 0) this.#finish("all-lost");
  }

  // -------------------------------------------------------------------------
  // Heartbeats
  // -------------------------------------------------------------------------

  /**
   * Sends the heartbeats due: slot `s` is due at `s / connections` of each
   * interval, so a tick walks the slice of slots whose moment has come.
   */
  #sendDue(now: number): void {
    const count = this.#slots.length;
    const due = Math.floor(this.#sinceStart(now) * count / this.#options.intervalMs);
    // Late by more than an interval: one heartbeat each, not one per interval missed.
    if (due - this.#visits > count) this.#visits = due - count;
    for (; this.#visits < due; this.#visits++) {
      const held = this.#slots[this.#visits % count];
      if (held !== undefined && Number.isNaN(held.sentAt)) this.#sendHeartbeat(held, now);
    }
  }

  #sendHeartbeat(held: HeldConnection, now: number): void {
    held.heartbeat = held.heartbeat >= LAST_HEARTBEAT ? 1 : held.heartbeat + 1;
    setHeartbeatNumber(held.expected, held.heartbeat);
    held.sentAt = now;
    this.#outstanding.push({ held, sentAt: now });
    writeAll(held.conn, held.line).catch((error) => {
      if (!held.ended) this.#end(held, endingOf(error), performance.now());
    });
  }

  /** The oldest heartbeat still out, past those answered (or whose connection ended). */
  #oldestOut(): { held: HeldConnection; sentAt: number } | undefined {
    while (true) {
      const oldest = this.#outstanding.peek();
      if (oldest === undefined || (!oldest.held.ended && oldest.held.sentAt === oldest.sentAt)) {
        return oldest;
      }
      this.#outstanding.shift();
    }
  }

  /** Ends the connections whose heartbeat went unanswered for --timeout. */
  #expire(now: number): void {
    while (true) {
      const oldest = this.#oldestOut();
      if (oldest === undefined || now - oldest.sentAt < this.#options.timeoutMs) return;
      const { held } = oldest;
      this.#outstanding.shift();
      this.#end(held, {
        reason: "timeout",
        detail: `heartbeat ${held.heartbeat} was not answered within ${this.#options.timeoutMs} ms`,
      }, now);
    }
  }

  /** How long the oldest heartbeat out has waited, when that is a stall; else 0. */
  #ongoingStallMs(now: number): number {
    const oldest = this.#oldestOut();
    const waited = oldest === undefined ? 0 : now - oldest.sentAt;
    return waited > this.#options.stallMs ? waited : 0;
  }

  #answered(held: HeldConnection, now: number): void {
    const ms = toMicroseconds(now - held.sentAt);
    if (ms > this.#options.stallMs) {
      const at = this.#sinceStart(held.sentAt);
      addStall(held.record, { atMs: at, ms, heartbeat: held.heartbeat });
      this.#tally.stalled(held.record, ms);
    }
    held.sentAt = NaN;
    held.record.heartbeats++;
    this.#tally.heartbeats++;
  }

  // -------------------------------------------------------------------------
  // Reading and endings
  // -------------------------------------------------------------------------

  async #read(held: HeldConnection): Promise<void> {
    try {
      while (!held.ended) {
        const n = await held.conn.read(held.buffer.subarray(held.filled));
        const now = performance.now();
        if (n === null) {
          if (!held.ended) this.#end(held, { reason: "fin", detail: finDetail(held) }, now);
          return;
        }
        held.filled += n;
        this.#take(held, now);
      }
    } catch (error) {
      if (!held.ended) this.#end(held, endingOf(error), performance.now());
    }
  }

  /** Reads what came: echoes, a drain notice, or what ends the connection as a mismatch. */
  #take(held: HeldConnection, now: number): void {
    while (held.filled > 0 && !held.ended) {
      const received = held.buffer.subarray(0, held.filled);
      const waiting = !Number.isNaN(held.sentAt);
      const answer = readAnswer(received, waiting ? held.expected : undefined);
      if (answer.kind === "echo") {
        held.consume(held.expected.length);
        this.#answered(held, now);
      } else if (answer.kind === "drain") {
        this.#end(held, { reason: "drain", detail: answer.line }, now);
      } else if (answer.kind === "partial" && held.filled < held.buffer.length) {
        return;
      } else {
        const what = waiting
          ? `heartbeat ${held.heartbeat}: expected ${quoteStart(held.expected)}, came`
          : "bytes came with no heartbeat out:";
        this.#end(held, { reason: "mismatch", detail: `${what} ${quoteStart(received)}` }, now);
      }
    }
  }

  /** Ends a connection before the hold's end: recorded, counted, and replaced with --reconnect. */
  #end(held: HeldConnection, end: { reason: HoldEnding; detail: string }, now: number): void {
    if (held.ended) return;
    held.ended = true;
    closeQuietly(held.conn);
    const { record } = held;
    record.end = { reason: end.reason, atMs: this.#sinceStart(now), detail: end.detail };
    this.#tally.ended(record, end.reason);
    this.#open--;
    this.#slots[record.slot] = undefined;
    if (!this.#options.reconnect || this.#endedBy !== undefined) return;
    this.#toOpen.push({
      slot: record.slot,
      generation: record.generation + 1,
      replaces: {
        backend: record.backend,
        generation: record.generation,
        lostAtMs: record.end.atMs,
      },
      firstAt: NaN,
      attempts: 0,
      notBefore: 0,
    });
  }

  /** Closes a connection still open when the hold ends; an answer overdue is a stall still on. */
  #closeAtEnd(held: HeldConnection, now: number): void {
    if (held.ended) return;
    held.ended = true;
    const waited = toMicroseconds(now - held.sentAt);
    if (waited > this.#options.stallMs) {
      const atMs = this.#sinceStart(held.sentAt);
      addStall(held.record, { atMs, ms: waited, heartbeat: held.heartbeat, ongoing: true });
      this.#tally.stalled(held.record, waited);
    }
    closeQuietly(held.conn);
  }

  // -------------------------------------------------------------------------
  // Opening
  // -------------------------------------------------------------------------

  /** Starts the attempts that --open-rate and the cap on attempts at once allow. */
  #openDue(now: number): void {
    const rate = this.#options.openRate;
    // At most a tick's worth saved up (and one): the rate holds over any stretch.
    const most = Math.max(1, (rate * TICK_MS) / 1_000);
    this.#openTokens = Math.min(most, this.#openTokens + (now - this.#tokensAt) * rate / 1_000);
    this.#tokensAt = now;
    while (this.#openTokens >= 1 && this.#openings.size < MAX_OPENING) {
      const retry = this.#retries.peek();
      const request = this.#toOpen.shift() ??
        (retry !== undefined && retry.notBefore <= now ? this.#retries.shift() : undefined);
      if (request === undefined) return;
      this.#openTokens--;
      const opening = this.#attempt(request, now);
      this.#openings.add(opening);
      opening.finally(() => this.#openings.delete(opening));
    }
  }

  /** One attempt to fill a place; never rejects. */
  async #attempt(request: OpenRequest, began: number): Promise<void> {
    if (Number.isNaN(request.firstAt)) request.firstAt = began;
    request.attempts++;
    const first = request.generation === 0 && request.attempts === 1;
    let conn: ClientConn | undefined;
    try {
      conn = await connectWithin(this.#connect, this.#options.timeoutMs);
      if (this.#endedBy !== undefined) return closeQuietly(conn);
      conn.setNoDelay(true);
      const opened = conn;
      const expected = heartbeatEcho(this.#options.prefix, 0);
      // The hold's end closes a greeting under way rather than wait for it.
      this.#greeting.add(opened);
      const banner = await withTimeout(
        this.#options.timeoutMs,
        greet(opened, expected, this.#options),
        () => opened.close(),
      );
      if (this.#endedBy !== undefined) return closeQuietly(opened);
      this.#opened(request, opened, banner, expected, performance.now());
    } catch (error) {
      if (conn) closeQuietly(conn);
      if (this.#endedBy === undefined) this.#openFailed(request, error, first, performance.now());
    } finally {
      if (conn) this.#greeting.delete(conn);
      if (first) this.#firstAttemptDone(performance.now());
    }
  }

  #firstAttemptDone(now: number): void {
    this.#firstAttemptsLeft--;
    if (this.#firstAttemptsLeft === 0) this.#allOpenAtMs = this.#sinceStart(now);
  }

  #opened(
    request: OpenRequest,
    conn: ClientConn,
    banner: Uint8Array,
    expected: Uint8Array,
    now: number,
  ): void {
    const server = parseBanner(decoder.decode(banner));
    const openedAtMs = this.#sinceStart(now);
    const replaces = request.replaces;
    const record: HeldRecord = {
      slot: request.slot,
      generation: request.generation,
      openedAtMs,
      connectMs: toMicroseconds(now - request.firstAt),
      attempts: request.attempts,
      server,
      backend: identityKey(server),
      ...(replaces
        ? { replaces: { ...replaces, gapMs: toMicroseconds(openedAtMs - replaces.lostAtMs) } }
        : {}),
      heartbeats: 0,
      stalls: [],
      stallsNotKept: 0,
      worstStallMs: 0,
      end: null,
    };
    if (this.#records.length < MAX_RECORDS) this.#records.push(record);
    else this.#recordsNotKept++;
    this.#tally.opened(record);
    this.#open++;
    const held = new HeldConnection(conn, record, expected);
    this.#slots[request.slot] = held;
    const reading = this.#read(held);
    this.#readings.add(reading);
    reading.finally(() => this.#readings.delete(reading));
  }

  #openFailed(request: OpenRequest, error: unknown, first: boolean, now: number): void {
    this.#tally.openFailed(this.#sinceStart(now), failureOf(error, this.#options));
    if (first) this.#notOpened++;
    if (!this.#options.reconnect) return;
    request.notBefore = now + RETRY_MS;
    this.#retries.push(request);
  }

  // -------------------------------------------------------------------------
  // The report
  // -------------------------------------------------------------------------

  #report(endedBy: HoldEndedBy, endedAt: number): HoldReport {
    const options = this.#options;
    const backends = this.#tally.rows();
    const missingAtEnd = this.#slots.length - this.#open;
    const facts = {
      backends,
      lost: this.#tally.lost,
      replaced: this.#tally.replaced,
      missingAtEnd,
    };
    const openFailures = this.#tally.openFailures.summary();
    const mismatches = backends.reduce((sum, row) => sum + row.ended.mismatch, 0) +
      (openFailures.failures.mismatch ?? 0);
    return {
      command: "hold",
      target: this.#target,
      tls: options.tls !== undefined,
      startedAt: this.#startedAt,
      ranMs: this.#sinceStart(endedAt),
      endedBy,
      allOpenAtMs: this.#allOpenAtMs ?? null,
      settings: {
        connections: options.connections,
        intervalMs: options.intervalMs,
        stallMs: options.stallMs,
        timeoutMs: options.timeoutMs,
        durationMs: Number.isFinite(options.durationMs) ? options.durationMs : null,
        reconnect: options.reconnect,
        openRate: options.openRate,
      },
      ...facts,
      heartbeats: this.#tally.heartbeats,
      integrityFailures: mismatches,
      openFailures,
      failedAttempts: this.#tally.openFailureEvents,
      connections: this.#records,
      recordsNotKept: this.#recordsNotKept,
      expectations: judgeExpectations(options.expectations, facts),
    };
  }
}

/**
 * Runs a hold to its end ({@linkcode Hold.run}); `onTick` is given the live
 * status at every tick (as a function: it costs only when called).
 */
export function runHold(
  options: ClientOptions,
  connect: Connector,
  target: string,
  onTick?: (status: () => HoldStatus) => void,
  stop?: AbortSignal,
): Promise<HoldReport> {
  return new Hold(options, connect, target, onTick).run(stop);
}
