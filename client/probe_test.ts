import assert from "node:assert/strict";
import { identityKey, parseBanner, type ProbeOutcome, probeReport } from "./probe.ts";

Deno.test("client banner parsing: tcp-echo's lines, partial banners, other banners", () => {
  const full = "Welcome, you are connected to node node-a.\nRunning on Pod tcp-echo-v1-abc.\n" +
    "In namespace default.\nWith IP address 10.0.0.5.\nService tcp-echo.\nVersion v1.\n" +
    "Your address is 10.0.0.9:51000.\n";
  assert.deepEqual(parseBanner(full), {
    node: "node-a",
    pod: "tcp-echo-v1-abc",
    namespace: "default",
    ip: "10.0.0.5",
    serviceAccount: "tcp-echo",
    version: "v1",
    clientAddress: "10.0.0.9:51000",
  });
  assert.equal(identityKey(parseBanner(full)), "version v1, pod tcp-echo-v1-abc, node node-a");
  assert.deepEqual(parseBanner("Version v2.\r\n"), { version: "v2" });
  assert.deepEqual(parseBanner("220 smtp.example.com ESMTP ready\r\n"), {});
  assert.equal(identityKey({}), "(no banner)");
});

Deno.test("client probe report: who answered, failures with the first detail and hint", () => {
  const ok = (version: string, ms: number): ProbeOutcome => ({
    ok: true,
    identity: { version, pod: `pod-${version}`, node: "n" },
    connectMs: ms,
    firstByteMs: ms * 2,
    roundTripMs: ms * 3,
  });
  const report = probeReport("10.0.0.1:31400", [
    ...[1, 2, 3, 4, 5, 6, 7].map((ms) => ok("v1", ms)),
    ok("v2", 8),
    { ok: false, reason: "mismatch", identity: {}, detail: "first", hint: "pass --prefix hello" },
    { ok: false, reason: "mismatch", identity: {}, detail: "second" },
  ], 2_000);
  assert.deepEqual(report.answeredBy, [
    { server: "version v1, pod pod-v1, node n", count: 7, percent: 70 },
    { server: "version v2, pod pod-v2, node n", count: 1, percent: 10 },
  ]);
  assert.deepEqual(report.failures, { mismatch: 2 });
  assert.deepEqual(report.failureDetails, { mismatch: "first" });
  assert.deepEqual(report.failureHints, { mismatch: "pass --prefix hello" });
  assert.equal(report.integrityFailures, 2);
  assert.equal(report.successPercent, 80);
  assert.equal(report.connectionsPerSecond, 4);
  assert.deepEqual(report.roundTripMs, { p50: 12, p90: 24, p99: 24, max: 24 });
});
