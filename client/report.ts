/**
 * The reports for people: tables whose columns are as wide as what they hold,
 * failures with their first detail and hint, latency, UDP's losses and a
 * flow's answer changes, a hold's table per backend, replacements and
 * timeline, and its live line; and what the exit code reads of a probe or
 * load report (missed thresholds, a failed load). Pure.
 *
 * @module
 */
import { formatDuration } from "../src/wire.ts";
import type { FailureSummary } from "./failures.ts";
import type { HoldStatus } from "./hold.ts";
import {
  HOLD_ENDINGS,
  type HoldEndedBy,
  type HoldReport,
  holdTimeline,
  plural,
  type TimelineGroup,
} from "./hold_record.ts";
import type { LoadReport } from "./load.ts";
import type { FailUnder, LoadMode } from "./options.ts";
import { percentile, type Percentiles } from "./percentiles.ts";
import type { ProbeReport, WhereConnected } from "./probe.ts";
import type { UdpLoadReport, UdpProbeReport } from "./udp.ts";
import type { FlowChange, FlowSegment, UdpFlowReport } from "./udp_flow.ts";

/** A report of probe or load, TCP or UDP (hold's is apart). */
export type ClientReport =
  | ProbeReport
  | LoadReport
  | UdpProbeReport
  | UdpFlowReport
  | UdpLoadReport;

/** The gap between two columns. */
const GAP = "  ";

/**
 * Lays out rows of cells as columns as wide as their widest cell, `GAP`
 * apart; the columns in `right` are aligned right (numbers), the others left.
 */
export function renderColumns(
  rows: readonly (readonly string[])[],
  right: ReadonlySet<number> = new Set(),
): string[] {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => widths[i] = Math.max(widths[i] ?? 0, cell.length));
  }
  return rows.map((row) =>
    row.map((cell, i) => right.has(i) ? cell.padStart(widths[i]) : cell.padEnd(widths[i]))
      .join(GAP).trimEnd()
  );
}

/**
 * The failures block: one row per reason (count, first detail), its hint on
 * the line below, lined up under the detail; every line starts with `indent`.
 */
function renderFailures(summary: FailureSummary, indent: string, title = "failures"): string[] {
  const reasons = Object.keys(summary.failures) as (keyof FailureSummary["failures"])[];
  if (reasons.length === 0) return [`${indent}${title}: none`];
  const leads = renderColumns(
    reasons.map((reason) => [`${indent}  ${reason}`, String(summary.failures[reason])]),
    new Set([1]),
  );
  const lines = [`${indent}${title}`];
  reasons.forEach((reason, i) => {
    const detail = summary.failureDetails[reason];
    lines.push(detail ? `${leads[i]}${GAP}${detail}` : leads[i]);
    const hint = summary.failureHints[reason];
    if (hint !== undefined) lines.push(`${" ".repeat(leads[i].length)}${GAP}hint: ${hint}`);
  });
  return lines;
}

const ms = (value: number) =>
  Number.isNaN(value) ? "-" : value < 10 ? value.toFixed(2) : value.toFixed(1);
const us = (value: number) => Number.isNaN(value) ? "-" : String(Math.round(value));

/** A row of an "answered by" table, TCP's or UDP's. */
interface AnsweredByRow {
  readonly server: string;
  readonly serverName?: string;
  readonly tls?: string;
  readonly count: number;
  readonly percent: number;
  readonly lost?: number;
}

/**
 * The "answered by" table: server, (with TLS) server name and version,
 * count, share, and (UDP probes) datagrams lost after their banner came.
 */
function renderAnsweredBy(
  answeredBy: readonly AnsweredByRow[],
  { indent = "", count = "count" } = {},
): string[] {
  const tls = answeredBy.some((row) => row.tls !== undefined);
  const lost = answeredBy.some((row) => row.lost !== undefined);
  const header = [
    `${indent}answered by`,
    ...(tls ? ["server name", "TLS"] : []),
    count,
    "share",
    ...(lost ? ["lost"] : []),
  ];
  const rows = answeredBy.map((row) => [
    `${indent}  ${row.server}`,
    ...(tls ? [row.serverName ?? "-", row.tls ?? "-"] : []),
    String(row.count),
    `${row.percent.toFixed(1)}%`,
    ...(lost ? [String(row.lost ?? 0)] : []),
  ]);
  const first = tls ? 3 : 1;
  const right = new Set(header.map((_, i) => i).filter((i) => i >= first));
  const lines = renderColumns([header, ...rows], right);
  if (rows.length === 0) lines.push(`${indent}  (nobody)`);
  return lines;
}

/** The host of a `HOST:PORT` target as given (without the brackets of IPv6). */
function hostOf(target: string): string {
  return target.replace(/:\d+$/, "").replace(/^\[(.*)\]$/, "$1");
}

/**
 * Where a report connected, for its first line: the target, the family
 * `-4`/`-6` asked for, and the addresses used when they are not the
 * target's text: `localhost:3333 over IPv6 (::1)`.
 */
export function renderWhere(where: WhereConnected): string {
  const family = where.family === undefined ? "" : ` over ${where.family}`;
  const host = hostOf(where.target);
  const named = where.addresses.length > 0 &&
    !(where.addresses.length === 1 && where.addresses[0] === host);
  return `${where.target}${family}${named ? ` (${where.addresses.join(", ")})` : ""}`;
}

/** The latency block of a probe (milliseconds): a row per measure. */
function renderLatencyMs(rows: readonly (readonly [string, Percentiles])[]): string[] {
  const lines = ["latency (ms)        p50      p90      p99      max"];
  for (const [name, p] of rows) {
    const values = [p.p50, p.p90, p.p99, p.max].map((v) => ms(v).padStart(8)).join(" ");
    lines.push(`  ${name.padEnd(14)} ${values}`);
  }
  return lines;
}

/** Renders any probe or load report for people. */
export function renderReport(report: ClientReport): string {
  if (report.transport === "udp") {
    if (!("oneFlow" in report)) return renderUdpLoadReport(report);
    return report.oneFlow ? renderUdpFlowReport(report) : renderUdpProbeReport(report);
  }
  return "successPercent" in report ? renderProbeReport(report) : renderLoadReport(report);
}

/** Renders the probe report for people. */
export function renderProbeReport(report: ProbeReport): string {
  const lines = [
    `probe ${
      renderWhere(report)
    }: ${report.succeeded} of ${report.connections} connections echoed correctly ` +
    `(${report.successPercent}%), ${report.connectionsPerSecond.toFixed(1)} connections/s`,
    "",
    ...renderAnsweredBy(report.answeredBy),
    "",
    ...renderFailures(report, ""),
    "",
    ...renderLatencyMs([
      ["connect", report.connectMs],
      ["first byte", report.firstByteMs],
      ["round trip", report.roundTripMs],
    ]),
  ];
  return lines.join("\n") + "\n";
}

/** `12 lost (0.5%)`, `1 lost (<0.01%)`, `none lost`. */
function lostText(lost: number, percent: number): string {
  if (lost === 0) return "none lost";
  return `${lost} lost (${percent === 0 ? "<0.01" : percent}%)`;
}

/** Renders the UDP probe report (a socket per datagram) for people. */
export function renderUdpProbeReport(report: UdpProbeReport): string {
  const lines = [
    `probe udp ${renderWhere(report)}: ${report.succeeded} of ${report.datagrams} datagrams ` +
    `echoed correctly (${report.successPercent}%), ${lostText(report.lost, report.lostPercent)}, ` +
    `${report.wrong} wrong, ${report.datagramsPerSecond.toFixed(1)} datagrams/s`,
    "",
    ...renderAnsweredBy(report.answeredBy),
    "",
    ...renderFailures(report, ""),
    "",
    ...renderLatencyMs([["round trip", report.roundTripMs]]),
  ];
  return lines.join("\n") + "\n";
}

/** Datagram numbers as ranges: `21–22, 25`; past `maxRanges`, how many more. */
export function formatNumbers(numbers: readonly number[], maxRanges = 10): string {
  const ranges: string[] = [];
  for (let i = 0; i < numbers.length;) {
    let j = i;
    while (j + 1 < numbers.length && numbers[j + 1] === numbers[j] + 1) j++;
    ranges.push(i === j ? String(numbers[i]) : `${numbers[i]}–${numbers[j]}`);
    i = j + 1;
  }
  const shown = ranges.slice(0, maxRanges).join(", ");
  return ranges.length > maxRanges ? `${shown}, … (${numbers.length} in all)` : shown;
}

/** One answer change, in words. */
function changeText(change: FlowChange): string {
  const at = change.datagram === undefined ? "no echo after it" : `datagram ${change.datagram}`;
  const same = change.from === change.to
    ? " (the same backend greeted again: its flow had expired, or it restarted)"
    : "";
  const lost = change.lostBetween.length === 0
    ? "none lost in between"
    : `lost in between: ${formatNumbers(change.lostBetween)}`;
  return `at ${seconds(change.atMs)} s, ${at}: ${change.from} → ${change.to}${same}; ${lost}`;
}

/** The timeline rows of a flow: its runs of datagrams, the changes where they happened. */
function flowTimeline(timeline: readonly FlowSegment[], changes: readonly FlowChange[]): string[] {
  const changeRow = (change: FlowChange) => [
    "",
    seconds(change.atMs),
    "changed",
    `${change.from} → ${change.to}`,
  ];
  const rows: string[][] = [];
  for (const run of timeline) {
    for (const change of changes) {
      if (change.datagram === run.first) rows.push(changeRow(change));
    }
    const numbers = run.first === run.last ? String(run.first) : `${run.first}–${run.last}`;
    const when = run.first === run.last
      ? seconds(run.firstMs)
      : `${seconds(run.firstMs)}–${seconds(run.lastMs)}`;
    rows.push([numbers, when, run.outcome, run.server ?? ""]);
  }
  for (const change of changes) if (change.datagram === undefined) rows.push(changeRow(change));
  const shown = rows.slice(0, MAX_TIMELINE_LINES);
  const lines = renderColumns(shown.map(([first, ...rest]) => [`  ${first}`, ...rest]));
  if (rows.length > shown.length) {
    lines.push(`  … and ${rows.length - shown.length} more lines (--json has them all)`);
  }
  return lines;
}

/** Renders the one-flow UDP probe report for people. */
export function renderUdpFlowReport(report: UdpFlowReport): string {
  const from = report.sourcePort === undefined ? "" : ` from port ${report.sourcePort}`;
  const extras = [
    report.failed > 0 ? `${report.failed} not sent` : "",
    report.late > 0 ? `${report.late} late (after --timeout)` : "",
    report.duplicates > 0 ? `${plural(report.duplicates, "echo")} twice` : "",
  ].filter(Boolean).map((text) => `, ${text}`).join("");
  const stopped = report.endedBy === "interrupt" ? "; stopped by Ctrl-C" : "";
  const changes = report.changes.length === 0 ? ["answer changes: none"] : [
    `answer changes: ${report.changes.length}`,
    ...report.changes.map((change) => `  ${changeText(change)}`),
  ];
  const lines = [
    `probe udp ${renderWhere(report)}: one flow${from}, a datagram every ` +
    `${formatDuration(report.intervalMs)}${stopped}`,
    `${report.succeeded} of ${report.datagrams} datagrams echoed correctly ` +
    `(${report.successPercent}%), ${lostText(report.lost, report.lostPercent)}, ` +
    `${report.wrong} wrong${extras}`,
    "",
    ...renderAnsweredBy(report.answeredBy),
    "",
    ...changes,
    "",
    "timeline (datagrams by number; sent at, in seconds since the first)",
    ...flowTimeline(report.timeline, report.changes),
    "",
    ...renderFailures(report, ""),
    "",
    ...renderLatencyMs([["round trip", report.roundTripMs]]),
  ];
  return lines.join("\n") + "\n";
}

/** Renders the load --udp report for people. */
export function renderUdpLoadReport(report: UdpLoadReport): string {
  const l = report.latencyUs;
  const late = report.late > 0 ? `, ${report.late} late or duplicated echoes` : "";
  const lines = [
    `load udp ${renderWhere(report)}: ${plural(report.flows, "flow")}, ${report.durationS} s`,
    `  ${Math.round(report.opsPerSecond)} datagrams/s echoed, ${report.operations} verified of ` +
    `${report.sent} sent, ${lostText(report.lost, report.lostPercent)}${late}`,
    "  latency (µs)      p50      p90      p99      max     mean",
    `  ${"".padEnd(12)} ${
      [l.p50, l.p90, l.p99, l.max, l.mean].map((v) => us(v).padStart(8)).join(" ")
    }`,
    ...renderAnsweredBy(report.answeredBy, { indent: "  ", count: "flows" }),
    ...renderFailures(report, "  "),
  ];
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
    `load ${report.mode} ${
      renderWhere(report)
    }: ${report.connections} connections, ${report.durationS} s`,
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
  lines.push(...renderFailures(report, "  "));
  return lines.join("\n") + "\n";
}

/** Which `--fail-under` thresholds a report misses, as sentences. */
export function missedThresholds(report: ClientReport, failUnder: FailUnder): string[] {
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

/** A load fails when any connection failed or nothing completed; a probe by its thresholds. */
export function loadFailed(report: ClientReport): boolean {
  if (!("opsPerSecond" in report)) return false;
  return report.operations === 0 || Object.keys(report.failures).length > 0;
}

// ---------------------------------------------------------------------------
// hold
// ---------------------------------------------------------------------------

/** A duration for people: `0.84 ms`, `12 ms`, `2.01 s`. */
export function formatMs(ms: number): string {
  if (Math.round(ms * 100) < 1_000) return `${ms.toFixed(2)} ms`;
  if (Math.round(ms) < 1_000) return `${Math.round(ms)} ms`;
  return `${(ms / 1_000).toFixed(2)} s`;
}

/** A range of durations, the unit once when both have it: `1.98–2.01 s`. */
function formatMsRange(least: number, most: number): string {
  const [a, b] = [formatMs(least), formatMs(most)];
  if (a === b) return a;
  const unit = (text: string) => text.slice(text.lastIndexOf(" "));
  return unit(a) === unit(b) ? `${a.slice(0, -unit(a).length)}–${b}` : `${a}–${b}`;
}

/** Seconds since the start, to the millisecond: `1.204`. */
const seconds = (ms: number) => (ms / 1_000).toFixed(3);

const ENDED_BY: Readonly<Record<HoldEndedBy, string>> = {
  duration: "--duration was over",
  interrupt: "interrupted (SIGINT/SIGTERM)",
  "all-lost": "every connection was lost",
};

/** The table per backend: opened, open at the end, ended by each way, worst stall. */
function renderBackends(report: HoldReport): string[] {
  const header = ["backend", "opened", "open", ...HOLD_ENDINGS, "worst stall"];
  const rows = report.backends.map((row) => [
    `  ${row.backend}`,
    String(row.opened),
    String(row.open),
    ...HOLD_ENDINGS.map((ending) => String(row.ended[ending])),
    row.worstStallMs > 0 ? formatMs(row.worstStallMs) : "-",
  ]);
  const right = new Set(header.map((_, i) => i).filter((i) => i > 0));
  const lines = renderColumns([header, ...rows], right);
  if (rows.length === 0) lines.push("  (none opened)");
  return lines;
}

/** Where the replacements landed, from which backend, and their gaps. */
function renderReplacements(report: HoldReport, gapsMs: readonly number[]): string[] {
  if (report.replaced === 0) return [];
  const sorted = [...gapsMs].sort((a, b) => a - b);
  const gaps = sorted.length === 0
    ? ""
    : `, gap p50 ${formatMs(percentile(sorted, 50))}, max ${formatMs(sorted[sorted.length - 1])}`;
  const rows = report.backends.flatMap((from) =>
    Object.entries(from.replacedTo).map(([to, count]) => [
      `  ${from.backend} → ${to}`,
      String(count),
    ])
  );
  return ["", `replacements: ${report.replaced}${gaps}`, ...renderColumns(rows, new Set([1]))];
}

/** What a timeline line says after who: the measure of its kind, the detail. */
function timelineWhat(group: TimelineGroup): string {
  const range = formatMsRange(group.least, group.most);
  const detail = group.detail === undefined ? "" : `: ${JSON.stringify(group.detail)}`;
  switch (group.kind) {
    case "opened":
      return `connect ${range}`;
    case "stall":
      return `${range} without an answer`;
    case "replaced":
      return `gap ${range}`;
    case "open failed":
      return detail.slice(2);
    default:
      return `after ${range} open${detail}`;
  }
}

/** Timeline lines shown at most; --json has every record. */
const MAX_TIMELINE_LINES = 100;

function renderTimeline(report: HoldReport): string[] {
  const groups = holdTimeline(report.connections, report.failedAttempts);
  const rows = groups.slice(0, MAX_TIMELINE_LINES).map((group) => {
    const when = group.count === 1 || group.firstMs === group.lastMs
      ? seconds(group.firstMs)
      : `${seconds(group.firstMs)}–${seconds(group.lastMs)}`;
    const who = group.from === undefined
      ? `${group.count} × ${group.backend}`
      : `${group.count} × ${group.from} → ${group.backend}`;
    return [`  ${when}`, group.kind, who, timelineWhat(group)];
  });
  const lines = ["", "timeline (seconds since the start)", ...renderColumns(rows)];
  if (groups.length > MAX_TIMELINE_LINES) {
    lines.push(
      `  … and ${groups.length - MAX_TIMELINE_LINES} more lines (--json has every record)`,
    );
  }
  if (report.recordsNotKept > 0) {
    lines.push(`  (${report.recordsNotKept} connections were counted but their records not kept)`);
  }
  return lines;
}

/** Renders the hold report for people. */
export function renderHoldReport(report: HoldReport): string {
  const { settings } = report;
  const allOpen = report.allOpenAtMs === null
    ? ""
    : `; opening took ${formatMs(report.allOpenAtMs)}`;
  const lines = [
    `hold ${report.target}${report.tls ? " (TLS)" : ""}: ${
      plural(settings.connections, "connection")
    }, ` +
    `a heartbeat every ${formatDuration(settings.intervalMs)}, a stall past ` +
    `${formatDuration(settings.stallMs)}, timeout ${formatDuration(settings.timeoutMs)}` +
    (settings.reconnect ? ", --reconnect" : ""),
    `started ${report.startedAt}, ran ${formatMs(report.ranMs)}, ended: ${
      ENDED_BY[report.endedBy]
    }${allOpen}`,
    `${report.heartbeats} heartbeats answered; ${report.lost} lost, ${report.replaced} replaced, ` +
    `${report.missingAtEnd} of ${settings.connections} places without a connection at the end`,
    "",
    ...renderBackends(report),
    ...renderReplacements(report, report.connections.flatMap((r) => r.replaces?.gapMs ?? [])),
  ];
  if (Object.keys(report.openFailures.failures).length > 0) {
    lines.push("", ...renderFailures(report.openFailures, "", "attempts that did not open"));
  }
  lines.push(...renderTimeline(report));
  if (report.expectations.length > 0) lines.push("");
  for (const { expect, met, why } of report.expectations) {
    lines.push(`expect ${expect}: ${met ? "met" : "NOT met"} (${why})`);
  }
  return lines.join("\n") + "\n";
}

/** A backend's name made short for the live line: `v1/pod-a/node-1`. */
function shortBackend(backend: string): string {
  return backend.replace(/(^|, )(version|pod|node) /g, "$1").replaceAll(", ", "/");
}

/** Backends the live line names before `+N more`. */
const LIVE_BACKENDS = 3;

/** The live line: open per backend, lost, reconnected, worst stall. */
export function renderHoldStatus(status: HoldStatus): string {
  const named = status.openByBackend.slice(0, LIVE_BACKENDS)
    .map(([backend, open]) => `${open} ${shortBackend(backend)}`);
  const more = status.openByBackend.length - LIVE_BACKENDS;
  if (more > 0) named.push(`+${more} more`);
  const where = named.length > 0 ? ` (${named.join(", ")})` : "";
  const stall = status.worstStallMs > 0 ? formatMs(status.worstStallMs) : "none";
  return `hold ${formatMs(status.elapsedMs)}: ${status.open}/${status.connections} open${where}, ` +
    `lost ${status.lost}, reconnected ${status.reconnected}, worst stall ${stall}`;
}

/** The line printed once every first connection opened or failed to. */
export function renderAllOpen(status: HoldStatus): string {
  const opened = status.connections - status.notOpened;
  const where = status.openByBackend.map(([backend, open]) => `${open} ${shortBackend(backend)}`);
  const failed = status.notOpened > 0 ? `; ${status.notOpened} did not open` : "";
  return `hold: ${opened} of ${status.connections} connections opened in ` +
    `${formatMs(status.allOpenAtMs ?? status.elapsedMs)}${
      where.length > 0 ? ` (${where.join(", ")})` : ""
    }${failed}`;
}
