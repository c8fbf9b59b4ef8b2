import assert from "node:assert/strict";
import { parseBanner, type ProbeOutcome, probeReport } from "./probe.ts";
import type { LoadReport } from "./load.ts";
import { renderColumns, renderLoadReport, renderProbeReport } from "./report.ts";

const ok = (banner: string, ms = 1): ProbeOutcome => ({
  ok: true,
  identity: parseBanner(banner),
  connectMs: ms,
  firstByteMs: ms * 2,
  roundTripMs: ms * 3,
});

Deno.test("client probe report: exact human text, failures with detail and hint", () => {
  const outcomes: ProbeOutcome[] = [
    ...[1, 2, 3, 4, 5, 6, 7].map((ms) => ok("Running on Pod pod-v1.\nVersion v1.\n", ms)),
    ok("Running on Pod pod-v2.\nVersion v2.\n", 8),
    {
      ok: false,
      reason: "mismatch",
      identity: {},
      detail: 'the echo differs from what was sent; 71 bytes came: "hello 0f3a…"',
      hint: 'it looks like line mode with prefix "hello" (ECHO_PREFIX): pass --prefix hello',
    },
    { ok: false, reason: "short", identity: {}, detail: "0 of 64 bytes came" },
  ];
  assert.equal(
    renderProbeReport(probeReport("10.0.0.1:31400", outcomes, 2_000)),
    `probe 10.0.0.1:31400: 8 of 10 connections echoed correctly (80%), 4.0 connections/s

answered by               count  share
  version v1, pod pod-v1      7  70.0%
  version v2, pod pod-v2      1  10.0%

failures
  mismatch  1  the echo differs from what was sent; 71 bytes came: "hello 0f3a…"
               hint: it looks like line mode with prefix "hello" (ECHO_PREFIX): pass --prefix hello
  short     1  0 of 64 bytes came

latency (ms)        p50      p90      p99      max
  connect            4.00     8.00     8.00     8.00
  first byte         8.00     16.0     16.0     16.0
  round trip         12.0     24.0     24.0     24.0
`,
  );
});

Deno.test("client probe report columns: as wide as their widest cell, TLS columns too", async (t) => {
  const tlsLine = (serverName: string) =>
    `TLS TLSv1.3 TLS_AES_256_GCM_SHA384, server name ${serverName}, ALPN echo.\n`;
  await t.step("TLS: server name and version", () => {
    const report = probeReport("10.0.0.1:31443", [
      ok(`Version v1.\n${tlsLine("v1.example.com")}`),
      ok(`Version v2.\n${tlsLine("v2.example.com")}`),
      ok(`Version v2.\n${tlsLine("v2.example.com")}`),
    ], 1_000);
    assert.deepEqual(report.answeredBy, [
      {
        server: "version v2",
        serverName: "v2.example.com",
        tls: "TLSv1.3",
        count: 2,
        percent: 66.7,
      },
      {
        server: "version v1",
        serverName: "v1.example.com",
        tls: "TLSv1.3",
        count: 1,
        percent: 33.3,
      },
    ]);
    assert.equal(
      renderProbeReport(report).split("\n").slice(2, 5).join("\n"),
      "answered by   server name     TLS      count  share\n" +
        "  version v2  v2.example.com  TLSv1.3      2  66.7%\n" +
        "  version v1  v1.example.com  TLSv1.3      1  33.3%",
    );
  });
  await t.step("labels of real pods and nodes, longer than any fixed width", () => {
    const pod = "Running on Pod tcp-echo-v1-7c775f57c9-frprp.\nVersion v1.\n";
    const report = probeReport("10.0.0.1:31443", [
      ok(
        `Welcome, you are connected to node gke-prod-pool-1-4f7a1b2c-9x8z.\n${pod}` +
          tlsLine("a-rather-long-server-name.tcp-echo.prod.example.com"),
      ),
      ok(
        "Welcome, you are connected to node gke-prod-europe-west1-highmem-pool-2-0d3e9f1a-k2lm.\n" +
          `Running on Pod tcp-echo-v2-6bcfd7dcf4-2sqhf.\nVersion v2.\n${tlsLine("none")}`,
      ),
      ...Array.from({ length: 100 }, () => ok(`Version v3.\n${tlsLine("v3.example.com")}`)),
    ], 1_000);
    const table = renderProbeReport(report).split("\n").slice(2, 6);
    const header = table[0];
    for (const row of table.slice(1)) {
      assert.equal(row.length, header.length, row);
      for (const column of ["server name", "TLS"]) {
        assert.equal(row[header.indexOf(column) - 1], " ", `${column}: ${row}`);
        assert.notEqual(row[header.indexOf(column)], " ", `${column}: ${row}`);
      }
      const countEnd = header.indexOf("count") + "count".length;
      assert.match(row.slice(0, countEnd), /\s\d+$/, row);
    }
  });
});

Deno.test("client table layout: left text, right numbers, two spaces apart, no trailing spaces", () => {
  assert.deepEqual(renderColumns([["a", "bb", "1"], ["ccc", "", "100"]], new Set([2])), [
    "a    bb    1",
    "ccc      100",
  ]);
});

Deno.test("client load report: failures with their first detail and hint", () => {
  const report: LoadReport = {
    target: "127.0.0.1:1",
    mode: "rr",
    tls: false,
    connections: 2,
    durationS: 0.004,
    operations: 0,
    opsPerSecond: 0,
    bytesVerified: 0,
    megabytesPerSecond: 0,
    latencyUs: { p50: NaN, p90: NaN, p99: NaN, max: NaN, mean: NaN },
    integrityFailures: 0,
    failures: { refused: 2 },
    failureDetails: { refused: "Connection refused (os error 111)" },
    failureHints: { refused: "nothing listens at 127.0.0.1:1" },
  };
  assert.equal(
    renderLoadReport(report),
    `load rr 127.0.0.1:1: 2 connections, 0.004 s
  0 requests/s, 0 verified
  latency (µs)      p50      p90      p99      max     mean
                      -        -        -        -        -
  failures
    refused  2  Connection refused (os error 111)
                hint: nothing listens at 127.0.0.1:1
`,
  );
});
