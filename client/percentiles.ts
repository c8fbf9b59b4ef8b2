/**
 * Latency percentiles: nearest rank over the probe's milliseconds, and an
 * HDR histogram's over load's microseconds. Pure.
 *
 * @module
 */

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

/** Nearest-rank percentile of ascending `sorted` values; `NaN` when empty. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
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
