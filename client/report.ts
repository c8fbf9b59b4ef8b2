/**
 * The reports for people: tables whose columns are as wide as what they hold,
 * failures with their first detail and hint, latency; and what the exit code
 * reads of a report (missed thresholds, a failed load). Pure.
 *
 * @module
 */
import type { FailureSummary } from "./failures.ts";
import type { LoadReport } from "./load.ts";
import type { FailUnder, LoadMode } from "./options.ts";
import type { ProbeReport } from "./probe.ts";

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
function renderFailures(summary: FailureSummary, indent: string): string[] {
  const reasons = Object.keys(summary.failures) as (keyof FailureSummary["failures"])[];
  if (reasons.length === 0) return [`${indent}failures: none`];
  const leads = renderColumns(
    reasons.map((reason) => [`${indent}  ${reason}`, String(summary.failures[reason])]),
    new Set([1]),
  );
  const lines = [`${indent}failures`];
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

/** The "answered by" table: server, (with TLS) server name and version, count, share. */
function renderAnsweredBy(report: ProbeReport): string[] {
  const tls = report.answeredBy.some((row) => row.tls !== undefined);
  const header = ["answered by", ...(tls ? ["server name", "TLS"] : []), "count", "share"];
  const rows = report.answeredBy.map(({ server, serverName, tls: version, count, percent }) => [
    `  ${server}`,
    ...(tls ? [serverName ?? "-", version ?? "-"] : []),
    String(count),
    `${percent.toFixed(1)}%`,
  ]);
  const lines = renderColumns([header, ...rows], new Set([header.length - 2, header.length - 1]));
  if (rows.length === 0) lines.push("  (nobody)");
  return lines;
}

/** Renders the probe report for people. */
export function renderProbeReport(report: ProbeReport): string {
  const lines = [
    `probe ${report.target}: ${report.succeeded} of ${report.connections} connections echoed correctly ` +
    `(${report.successPercent}%), ${report.connectionsPerSecond.toFixed(1)} connections/s`,
    "",
    ...renderAnsweredBy(report),
    "",
    ...renderFailures(report, ""),
    "",
    "latency (ms)        p50      p90      p99      max",
  ];
  const latencies = [
    ["connect", report.connectMs],
    ["first byte", report.firstByteMs],
    ["round trip", report.roundTripMs],
  ] as const;
  for (const [name, p] of latencies) {
    const values = [p.p50, p.p90, p.p99, p.max].map((v) => ms(v).padStart(8)).join(" ");
    lines.push(`  ${name.padEnd(14)} ${values}`);
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
  lines.push(...renderFailures(report, "  "));
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

/** A load fails when any connection failed or nothing completed; a probe by its thresholds. */
export function loadFailed(report: ProbeReport | LoadReport): boolean {
  if (!("opsPerSecond" in report)) return false;
  return report.operations === 0 || Object.keys(report.failures).length > 0;
}
