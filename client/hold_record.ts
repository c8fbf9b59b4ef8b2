/**
 * What `hold` writes down and reads back, pure: the heartbeat lines and what
 * may come back instead of an echo (tcp-echo's drain notice, other bytes);
 * each connection's record; the counts per backend, kept as events happen;
 * the timeline of the events that mattered; and the expectations and exit
 * code a script asserts.
 *
 * @example
 * ```ts
 * import { heartbeatEcho, readAnswer } from "./hold_record.ts";
 *
 * const expected = heartbeatEcho(undefined, 42); // "hb 000042\n"
 * readAnswer(expected.subarray(0, 4), expected); // { kind: "partial" }
 * ```
 *
 * @module
 */
import { type Failure, type FailureReason, type FailureSummary, FailureTally } from "./failures.ts";
import type { Expectation } from "./options.ts";
import { equalBytes } from "./payloads.ts";
import { DRAIN_NOTICE_PREFIX } from "../src/wire.ts";
import type { ServerIdentity } from "./probe.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const NEWLINE = 0x0a;
const ZERO = 0x30;

// ---------------------------------------------------------------------------
// Heartbeats and answers
// ---------------------------------------------------------------------------

/** `hb NNNNNN\n`: a heartbeat line's bytes before its number. */
const HEARTBEAT_HEAD = encoder.encode("hb ");
/** Digits of a heartbeat's number; it wraps from 999999 to 1 (0 is the greeting's). */
const HEARTBEAT_DIGITS = 6;
/** The largest heartbeat number. */
export const LAST_HEARTBEAT = 10 ** HEARTBEAT_DIGITS - 1;

const DRAIN_NOTICE_BYTES = encoder.encode(DRAIN_NOTICE_PREFIX);

/**
 * The echo of heartbeat `number`: with a `prefix` (a line-mode server's),
 * `PREFIX hb NNNNNN\n`, else the line itself. The line sent is its end,
 * from {@linkcode heartbeatLineStart}; {@linkcode setHeartbeatNumber}
 * renumbers it in place.
 */
export function heartbeatEcho(prefix: string | undefined, number: number): Uint8Array {
  const head = prefix === undefined ? "" : `${prefix} `;
  const echo = encoder.encode(`${head}hb ${"0".repeat(HEARTBEAT_DIGITS)}\n`);
  setHeartbeatNumber(echo, number);
  return echo;
}

/** Where the heartbeat line starts in an echo of {@linkcode heartbeatEcho}. */
export function heartbeatLineStart(echo: Uint8Array): number {
  return echo.length - HEARTBEAT_HEAD.length - HEARTBEAT_DIGITS - 1;
}

/** Writes `number` into the digits of a heartbeat echo (or line), in place. */
export function setHeartbeatNumber(echo: Uint8Array, number: number): void {
  let rest = number;
  for (let at = echo.length - 2; at >= echo.length - 1 - HEARTBEAT_DIGITS; at--) {
    echo[at] = ZERO + (rest % 10);
    rest = Math.floor(rest / 10);
  }
}

/** What the bytes at the front of a held connection's buffer are. */
export type Answer =
  /** The whole echo expected. */
  | { readonly kind: "echo" }
  /** The start of the echo or of a drain notice: more must come. */
  | { readonly kind: "partial" }
  /** tcp-echo's drain notice, the line without its newline. */
  | { readonly kind: "drain"; readonly line: string }
  /** Neither: the echo is wrong, or bytes came with no heartbeat out. */
  | { readonly kind: "unexpected" };

/**
 * Reads the front of `received`: the echo `expected` (`undefined`: no
 * heartbeat is out), a line starting {@linkcode DRAIN_NOTICE_PREFIX}, a start
 * of either, or neither.
 *
 * @example
 * ```ts
 * const text = new TextEncoder();
 * readAnswer(text.encode("tcp-echo: closing this connection: ...\n"), undefined).kind; // "drain"
 * ```
 */
export function readAnswer(received: Uint8Array, expected: Uint8Array | undefined): Answer {
  if (expected !== undefined) {
    const n = Math.min(received.length, expected.length);
    if (equalBytes(received.subarray(0, n), expected.subarray(0, n))) {
      return n === expected.length ? { kind: "echo" } : { kind: "partial" };
    }
  }
  const n = Math.min(received.length, DRAIN_NOTICE_BYTES.length);
  if (!equalBytes(received.subarray(0, n), DRAIN_NOTICE_BYTES.subarray(0, n))) {
    return { kind: "unexpected" };
  }
  const newline = received.indexOf(NEWLINE, n);
  if (n < DRAIN_NOTICE_BYTES.length || newline < 0) return { kind: "partial" };
  return { kind: "drain", line: decoder.decode(received.subarray(0, newline)) };
}

// ---------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------

/** How a held connection ended, in the order reports list them. */
export const HOLD_ENDINGS = ["fin", "rst", "timeout", "mismatch", "drain", "error"] as const;
/** One way a held connection ends. */
export type HoldEnding = typeof HOLD_ENDINGS[number];

/** A heartbeat answered later than `--stall`. */
export interface Stall {
  /** When it was sent, in milliseconds since the hold started. */
  readonly atMs: number;
  /** How long its answer took (so far, when `ongoing`). */
  readonly ms: number;
  /** Its number. */
  readonly heartbeat: number;
  /** Still unanswered when the hold ended. */
  readonly ongoing?: true;
}

/** The end of a connection before the hold's. */
export interface HoldEnd {
  /** How it ended. */
  readonly reason: HoldEnding;
  /** When, in milliseconds since the hold started. */
  readonly atMs: number;
  /** What came, or what the error said. */
  readonly detail: string;
}

/** What a replacement replaced. */
export interface Replaced {
  /** The backend of the connection it replaced. */
  readonly backend: string;
  /** Its generation (0: the slot's first connection). */
  readonly generation: number;
  /** When that connection was lost, in milliseconds since the start. */
  readonly lostAtMs: number;
  /** From that loss to this connection's echoed greeting, in milliseconds. */
  readonly gapMs: number;
}

/**
 * One held connection, as `--json` prints it. The hold fills in
 * `heartbeats`, `stalls` and `end` as the connection lives.
 */
export interface HeldRecord {
  /** Which of the `--connections` places it holds (0-based); replacements keep it. */
  readonly slot: number;
  /** 0 for the slot's first connection, n for its n-th replacement. */
  readonly generation: number;
  /** When its greeting (heartbeat 0) came back, in milliseconds since the start. */
  readonly openedAtMs: number;
  /** From the first connect to that echo (TCP, TLS handshake, banner). */
  readonly connectMs: number;
  /** Connects it took (the failed ones were retried, with --reconnect). */
  readonly attempts: number;
  /** What the banner said: version, pod, node, `connectionId`, TLS facts. */
  readonly server: ServerIdentity;
  /** The backend, as the report's rows name it (version, pod, node). */
  readonly backend: string;
  /** For a replacement: what it replaced. */
  readonly replaces?: Replaced;
  /** Heartbeats answered (not counting the greeting). */
  heartbeats: number;
  /** Its stalls, the first {@linkcode MAX_STALLS_KEPT}. */
  readonly stalls: Stall[];
  /** Stalls past those kept. */
  stallsNotKept: number;
  /** Its longest stall, 0 for none. */
  worstStallMs: number;
  /** How it ended; `null` while (and if, at the end, still) open. */
  end: HoldEnd | null;
}

/** Stalls kept per record: a connection that stalls all day keeps a bounded record. */
export const MAX_STALLS_KEPT = 100;

/** Adds a stall to a record (kept while there is room, always counted in the worst). */
export function addStall(record: HeldRecord, stall: Stall): void {
  if (record.stalls.length < MAX_STALLS_KEPT) record.stalls.push(stall);
  else record.stallsNotKept++;
  record.worstStallMs = Math.max(record.worstStallMs, stall.ms);
}

// ---------------------------------------------------------------------------
// Counts per backend
// ---------------------------------------------------------------------------

/** One backend's row of the report. */
export interface BackendRow {
  /** As {@linkcode HeldRecord.backend}. */
  readonly backend: string;
  /** Its version (the banner's Version line), if it said. */
  readonly version: string | undefined;
  /** Connections that landed on it, replacements too. */
  opened: number;
  /** Of those, open at the end (or now). */
  open: number;
  /** Of those, ended by each way. */
  readonly ended: Record<HoldEnding, number>;
  /** Its connections' longest stall (0: none). */
  worstStallMs: number;
  /** Where the replacements of its lost connections landed, by backend. */
  readonly replacedTo: Record<string, number>;
}

/** A connection attempt that did not open, for the timeline. */
export interface OpenFailureEvent {
  /** When, in milliseconds since the start. */
  readonly atMs: number;
  /** Its failure reason (failures.ts). */
  readonly reason: FailureReason;
  /** The error's words. */
  readonly detail: string;
}

/** Open failures kept for the timeline (all are counted). */
const MAX_OPEN_FAILURE_EVENTS = 1_000;

/** The hold's counts, each kept as its event happens. */
export class HoldTally {
  readonly #backends = new Map<string, BackendRow>();
  /** Connections that ended before the hold did. */
  lost = 0;
  /** Replacements that opened. */
  replaced = 0;
  /** Heartbeats answered, all connections. */
  heartbeats = 0;
  /** The gaps of the replacements, in milliseconds. */
  readonly gapsMs: number[] = [];
  /** Attempts that did not open, by reason. */
  readonly openFailures = new FailureTally();
  /** The first of them, for the timeline. */
  readonly openFailureEvents: OpenFailureEvent[] = [];

  #row(backend: string, version: string | undefined): BackendRow {
    let row = this.#backends.get(backend);
    if (row === undefined) {
      const ended = Object.fromEntries(HOLD_ENDINGS.map((e) => [e, 0])) as Record<
        HoldEnding,
        number
      >;
      row = { backend, version, opened: 0, open: 0, ended, worstStallMs: 0, replacedTo: {} };
      this.#backends.set(backend, row);
    }
    return row;
  }

  /** A connection opened on `record.backend` (a replacement: also where it came from). */
  opened(record: HeldRecord): void {
    const row = this.#row(record.backend, record.server.version);
    row.opened++;
    row.open++;
    if (record.replaces === undefined) return;
    this.replaced++;
    if (this.gapsMs.length < 100_000) this.gapsMs.push(record.replaces.gapMs);
    const from = this.#row(record.replaces.backend, undefined).replacedTo;
    from[record.backend] = (from[record.backend] ?? 0) + 1;
  }

  /** A connection ended before the hold did. */
  ended(record: HeldRecord, reason: HoldEnding): void {
    const row = this.#row(record.backend, record.server.version);
    row.open--;
    row.ended[reason]++;
    this.lost++;
  }

  /** A connection stalled for `ms`. */
  stalled(record: HeldRecord, ms: number): void {
    const row = this.#row(record.backend, record.server.version);
    row.worstStallMs = Math.max(row.worstStallMs, ms);
  }

  /** An attempt did not open. */
  openFailed(atMs: number, failure: Failure): void {
    this.openFailures.add(failure);
    if (this.openFailureEvents.length < MAX_OPEN_FAILURE_EVENTS) {
      this.openFailureEvents.push({ atMs, reason: failure.reason, detail: failure.detail });
    }
  }

  /** The rows, the most opened first. */
  rows(): BackendRow[] {
    return [...this.#backends.values()].filter((row) => row.opened > 0)
      .sort((a, b) => b.opened - a.opened || a.backend.localeCompare(b.backend))
      .map((row) => ({ ...row, ended: { ...row.ended }, replacedTo: { ...row.replacedTo } }));
  }

  /** The worst stall of every backend. */
  worstStallMs(): number {
    return Math.max(0, ...[...this.#backends.values()].map((row) => row.worstStallMs));
  }

  /** Open connections per backend, the most first. */
  openByBackend(): [backend: string, open: number][] {
    return [...this.#backends.values()].filter((row) => row.open > 0)
      .sort((a, b) => b.open - a.open || a.backend.localeCompare(b.backend))
      .map((row) => [row.backend, row.open]);
  }
}

// ---------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------

/** Why the hold ended. */
export type HoldEndedBy = "duration" | "interrupt" | "all-lost";

/** One `--expect`, judged. */
export interface ExpectationResult {
  /** As given: `no-loss`, `moved-to v2`, `stays-on v1`. */
  readonly expect: string;
  /** Whether it held. */
  readonly met: boolean;
  /** Why, in a sentence. */
  readonly why: string;
}

/** The hold's settings, as the report repeats them. */
export interface HoldSettings {
  /** `--connections`. */
  readonly connections: number;
  /** `--interval`. */
  readonly intervalMs: number;
  /** `--stall`. */
  readonly stallMs: number;
  /** `--timeout`. */
  readonly timeoutMs: number;
  /** `--duration`; `null` for until Ctrl-C. */
  readonly durationMs: number | null;
  /** `--reconnect`. */
  readonly reconnect: boolean;
  /** `--open-rate`. */
  readonly openRate: number;
}

/** The hold's report: `--json` prints it as it is. */
export interface HoldReport {
  /** `"hold"`. */
  readonly command: "hold";
  /** `HOST:PORT` as connected to. */
  readonly target: string;
  /** Whether it spoke TLS. */
  readonly tls: boolean;
  /** When it started (ISO 8601, UTC): every `atMs` counts from here. */
  readonly startedAt: string;
  /** How long it ran, in milliseconds. */
  readonly ranMs: number;
  /** Why it ended. */
  readonly endedBy: HoldEndedBy;
  /** When every first connection had opened or failed to, in ms since the start. */
  readonly allOpenAtMs: number | null;
  /** What it was asked to do. */
  readonly settings: HoldSettings;
  /** One row per backend that answered. */
  readonly backends: readonly BackendRow[];
  /** Connections that ended before the hold did. */
  readonly lost: number;
  /** Replacements that opened (with --reconnect). */
  readonly replaced: number;
  /** Places (of --connections) without an open connection at the end. */
  readonly missingAtEnd: number;
  /** Heartbeats answered, all connections. */
  readonly heartbeats: number;
  /** Connections ended by a wrong echo, and greetings whose echo was wrong. */
  readonly integrityFailures: number;
  /** Attempts to connect that did not open, by reason (failures.ts). */
  readonly openFailures: FailureSummary;
  /** The first of those attempts (up to 1,000): when, why. */
  readonly failedAttempts: readonly OpenFailureEvent[];
  /** Every connection's record, in the order they opened. */
  readonly connections: readonly HeldRecord[];
  /** Records past the most a report keeps (they are in the counts). */
  readonly recordsNotKept: number;
  /** The `--expect`s, judged. */
  readonly expectations: readonly ExpectationResult[];
}

/** The facts {@linkcode judgeExpectations} reads of a report. */
export type JudgedFacts = Pick<HoldReport, "backends" | "lost" | "replaced" | "missingAtEnd">;

/** How an expectation is written back. */
function expectationText(expectation: Expectation): string {
  return expectation.kind === "no-loss" ? "no-loss" : `${expectation.kind} ${expectation.version}`;
}

/** `1 connection`, `2 connections`. */
export function plural(count: number, word: string): string {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

/** Versions other than `version` that connections of `rows` answered, with counts. */
function otherVersions(rows: readonly { version?: string; count: number }[], version: string) {
  const others = new Map<string, number>();
  for (const row of rows) {
    if (row.version === version || row.count === 0) continue;
    const name = row.version ?? "(none)";
    others.set(name, (others.get(name) ?? 0) + row.count);
  }
  return [...others].map(([name, count]) => `${count} on ${name}`).join(", ");
}

function judgeNoLoss(facts: JudgedFacts): Omit<ExpectationResult, "expect"> {
  if (facts.lost === 0 && facts.missingAtEnd === 0) {
    return { met: true, why: "no connection was lost" };
  }
  const parts = [
    facts.lost > 0 ? `${plural(facts.lost, "connection")} lost` : "",
    facts.missingAtEnd > 0 ? `${facts.missingAtEnd} of the places without one at the end` : "",
  ].filter(Boolean);
  return { met: false, why: parts.join("; ") };
}

function judgeMovedTo(facts: JudgedFacts, version: string): Omit<ExpectationResult, "expect"> {
  if (facts.replaced === 0) return { met: false, why: "no connection was replaced" };
  const landed = facts.backends.flatMap((from) =>
    Object.entries(from.replacedTo).map(([backend, count]) => ({
      version: facts.backends.find((row) => row.backend === backend)?.version,
      count,
    }))
  );
  const others = otherVersions(landed, version);
  if (others !== "") {
    return { met: false, why: `of ${plural(facts.replaced, "replacement")}, ${others}` };
  }
  if (facts.missingAtEnd > 0) {
    return {
      met: false,
      why: `${facts.missingAtEnd} of the places had no connection at the end (lost, not replaced)`,
    };
  }
  const all = facts.replaced === 1 ? "the replacement" : `all ${facts.replaced} replacements`;
  return { met: true, why: `${all} landed on ${version}` };
}

function judgeStaysOn(facts: JudgedFacts, version: string): Omit<ExpectationResult, "expect"> {
  const opened = facts.backends.reduce((sum, row) => sum + row.opened, 0);
  if (opened === 0) return { met: false, why: "no connection opened" };
  const others = otherVersions(
    facts.backends.map((row) => ({ version: row.version, count: row.opened })),
    version,
  );
  if (others !== "") return { met: false, why: `of ${opened} connections, ${others}` };
  const moved = facts.backends.reduce(
    (sum, from) =>
      sum + Object.entries(from.replacedTo)
        .filter(([backend]) => backend !== from.backend)
        .reduce((n, [, count]) => n + count, 0),
    0,
  );
  if (moved > 0) {
    return { met: false, why: `${plural(moved, "replacement")} landed on another backend` };
  }
  const all = opened === 1 ? "the connection" : `all ${opened} connections`;
  return { met: true, why: `${all} on ${version}` };
}

/** Judges each expectation against the report's facts. */
export function judgeExpectations(
  expectations: readonly Expectation[],
  facts: JudgedFacts,
): ExpectationResult[] {
  return expectations.map((expectation) => ({
    expect: expectationText(expectation),
    ...(expectation.kind === "no-loss"
      ? judgeNoLoss(facts)
      : expectation.kind === "moved-to"
      ? judgeMovedTo(facts, expectation.version)
      : judgeStaysOn(facts, expectation.version)),
  }));
}

/**
 * The exit code of a hold: 1 for a wrong echo, whatever was expected; with
 * `--expect`, 0 exactly when all held; otherwise 1 when a connection was
 * lost or a place had none at the end, else 0.
 */
export function holdExitCode(
  report: Pick<HoldReport, "integrityFailures" | "expectations" | "lost" | "missingAtEnd">,
): 0 | 1 {
  if (report.integrityFailures > 0) return 1;
  if (report.expectations.length > 0) return report.expectations.every((e) => e.met) ? 0 : 1;
  return report.lost > 0 || report.missingAtEnd > 0 ? 1 : 0;
}

// ---------------------------------------------------------------------------
// The timeline
// ---------------------------------------------------------------------------

/** What a timeline line tells of. */
export type TimelineKind = "opened" | "stall" | "replaced" | "open failed" | HoldEnding;

/** Events of one kind on one backend close together, as one line. */
export interface TimelineGroup {
  /** What happened. */
  readonly kind: TimelineKind;
  /** Where (for `replaced`, where the replacements landed; `open failed`: the reason). */
  readonly backend: string;
  /** For `replaced`, the backend of the connections replaced. */
  readonly from?: string;
  /** How many. */
  count: number;
  /** The first's time, in milliseconds since the start. */
  readonly firstMs: number;
  /** The last one's. */
  lastMs: number;
  /** The smallest of what each measured: stall, gap, or time open. */
  least: number;
  /** The largest of it. */
  most: number;
  /** The first one's detail (an ending's, an open failure's). */
  readonly detail?: string;
}

/** Events this close after the last of a group join it. */
const GROUP_WITHIN_MS = 1_000;

interface TimelineEvent {
  readonly kind: TimelineKind;
  readonly atMs: number;
  readonly backend: string;
  readonly from?: string;
  readonly value: number;
  readonly detail?: string;
}

function eventsOf(
  records: readonly HeldRecord[],
  openFailures: readonly OpenFailureEvent[],
): TimelineEvent[] {
  const events: TimelineEvent[] = [];
  for (const record of records) {
    const { backend, replaces, end } = record;
    if (replaces === undefined) {
      events.push({ kind: "opened", atMs: record.openedAtMs, backend, value: record.connectMs });
    } else {
      events.push({
        kind: "replaced",
        atMs: record.openedAtMs,
        backend,
        from: replaces.backend,
        value: replaces.gapMs,
      });
    }
    for (const stall of record.stalls) {
      events.push({ kind: "stall", atMs: stall.atMs, backend, value: stall.ms });
    }
    if (end !== null) {
      events.push({
        kind: end.reason,
        atMs: end.atMs,
        backend,
        value: end.atMs - record.openedAtMs,
        detail: end.detail,
      });
    }
  }
  for (const failure of openFailures) {
    events.push({
      kind: "open failed",
      atMs: failure.atMs,
      backend: failure.reason,
      value: 0,
      detail: failure.detail,
    });
  }
  return events.sort((a, b) => a.atMs - b.atMs);
}

/**
 * The timeline: events (openings, stalls, endings, replacements, attempts
 * that did not open) in time order, those of one kind on one backend within
 * {@linkcode GROUP_WITHIN_MS} of each other as one group.
 */
export function holdTimeline(
  records: readonly HeldRecord[],
  openFailures: readonly OpenFailureEvent[] = [],
): TimelineGroup[] {
  const groups: TimelineGroup[] = [];
  const current = new Map<string, TimelineGroup>();
  for (const event of eventsOf(records, openFailures)) {
    const key = `${event.kind}\n${event.backend}\n${event.from ?? ""}`;
    const group = current.get(key);
    if (group !== undefined && event.atMs - group.lastMs <= GROUP_WITHIN_MS) {
      group.count++;
      group.lastMs = event.atMs;
      group.least = Math.min(group.least, event.value);
      group.most = Math.max(group.most, event.value);
      continue;
    }
    const started: TimelineGroup = {
      kind: event.kind,
      backend: event.backend,
      ...(event.from === undefined ? {} : { from: event.from }),
      count: 1,
      firstMs: event.atMs,
      lastMs: event.atMs,
      least: event.value,
      most: event.value,
      ...(event.detail === undefined ? {} : { detail: event.detail }),
    };
    current.set(key, started);
    groups.push(started);
  }
  return groups;
}
