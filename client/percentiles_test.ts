import assert from "node:assert/strict";
import * as hdr from "hdr-histogram-js";
import { latencySummary, percentile, summarize } from "./percentiles.ts";

Deno.test("client percentiles: nearest rank", () => {
  const hundred = Array.from({ length: 100 }, (_, i) => i + 1);
  assert.deepEqual(summarize(hundred.toReversed()), { p50: 50, p90: 90, p99: 99, max: 100 });
  assert.deepEqual(summarize([7]), { p50: 7, p90: 7, p99: 7, max: 7 });
  assert.deepEqual(summarize([1, 2, 3, 4]), { p50: 2, p90: 4, p99: 4, max: 4 });
  assert.ok(Number.isNaN(percentile([], 50)));
  assert.equal(percentile([1, 2, 3], 0), 1);
});

Deno.test("client latency summary: no percentile above the largest value recorded", () => {
  const histogram = hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 3_600_000_000,
    numberOfSignificantValueDigits: 3,
  });
  for (const value of [120, 130, 202_814]) histogram.recordValue(value);
  const summary = latencySummary(histogram);
  assert.equal(summary.max, 202_814);
  assert.equal(summary.p99, 202_814);
  assert.ok(summary.p50 <= summary.p90 && summary.p90 <= summary.p99);
  assert.ok(Number.isNaN(latencySummary(hdr.build()).p99));
});
