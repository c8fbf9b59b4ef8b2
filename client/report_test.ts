import assert from "node:assert/strict";
import { parseBanner, type ProbeOutcome, probeReport } from "./probe.ts";
import type { LoadReport } from "./load.ts";
import type { HoldStatus } from "./hold.ts";
import type { HoldReport } from "./hold_record.ts";
import { type UdpLoadReport, type UdpProbeOutcome, udpProbeReport } from "./udp.ts";
import {
  formatMs,
  formatNumbers,
  renderAllOpen,
  renderColumns,
  renderHoldReport,
  renderHoldStatus,
  renderLoadReport,
  renderProbeReport,
  renderUdpLoadReport,
  renderUdpProbeReport,
  renderWhere,
} from "./report.ts";

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
    transport: "tcp",
    target: "127.0.0.1:1",
    addresses: ["127.0.0.1"],
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

Deno.test("client report first lines: the family asked for, and the address used when it is not the target's", () => {
  const cases: [Parameters<typeof renderWhere>[0], string][] = [
    [{ target: "127.0.0.1:3333", addresses: ["127.0.0.1"] }, "127.0.0.1:3333"],
    [{ target: "localhost:3333", addresses: ["127.0.0.1"] }, "localhost:3333 (127.0.0.1)"],
    [
      { target: "localhost:3333", family: "IPv6", addresses: ["::1"] },
      "localhost:3333 over IPv6 (::1)",
    ],
    [{ target: "[::1]:3333", family: "IPv6", addresses: ["::1"] }, "[::1]:3333 over IPv6"],
    [{ target: "localhost:3333", family: "IPv6", addresses: [] }, "localhost:3333 over IPv6"],
    [
      { target: "echo.default.svc:3333", addresses: ["10.96.0.10", "fd00::10"] },
      "echo.default.svc:3333 (10.96.0.10, fd00::10)",
    ],
  ];
  for (const [where, text] of cases) assert.equal(renderWhere(where), text);
  assert.equal(formatNumbers([3, 4, 5, 9, 11, 12]), "3–5, 9, 11–12");
  assert.equal(formatNumbers([1, 3, 5, 7], 2), "1, 3, … (4 in all)");
});

Deno.test("client probe --udp report: echoed, lost after the banner per server, wrong, word for word", () => {
  const v1 = parseBanner("Running on Pod pod-a.\nVersion v1.\n");
  const v2 = parseBanner("Running on Pod pod-b.\nVersion v2.\n");
  const ok = (identity: typeof v1, ms: number): UdpProbeOutcome => ({
    ok: true,
    identity,
    address: "10.96.0.10",
    roundTripMs: ms,
  });
  const lost = (identity: typeof v1, greeted: boolean): UdpProbeOutcome => ({
    ok: false,
    identity,
    address: "10.96.0.10",
    greeted,
    reason: "lost",
    detail: "no echo within 300 ms",
    hint: greeted ? "the server got the datagram (its banner came)" : "nothing came back",
  });
  const report = udpProbeReport("echo.default.svc:5353", [
    ok(v1, 1),
    ok(v1, 2),
    ok(v2, 3),
    lost(v2, true),
    lost(v2, true),
    lost({}, false),
    {
      ok: false,
      identity: v1,
      address: "10.96.0.10",
      greeted: true,
      reason: "mismatch",
      detail: 'the echo differs from what was sent; 5 bytes came: "heLlo"',
    },
    ok(v1, 4),
  ], 1_000);
  assert.deepEqual(report.answeredBy, [
    { server: "version v1, pod pod-a", count: 3, percent: 37.5, lost: 0 },
    { server: "version v2, pod pod-b", count: 1, percent: 12.5, lost: 2 },
  ]);
  assert.deepEqual([report.lost, report.wrong, report.integrityFailures], [3, 1, 1]);
  assert.equal(
    renderUdpProbeReport(report),
    `probe udp echo.default.svc:5353 (10.96.0.10): 4 of 8 datagrams echoed correctly (50%), 3 lost (37.5%), 1 wrong, 4.0 datagrams/s

answered by              count  share  lost
  version v1, pod pod-a      3  37.5%     0
  version v2, pod pod-b      1  12.5%     2

failures
  lost      3  no echo within 300 ms
               hint: the server got the datagram (its banner came)
  mismatch  1  the echo differs from what was sent; 5 bytes came: "heLlo"

latency (ms)        p50      p90      p99      max
  round trip         2.00     4.00     4.00     4.00
`,
  );
});

Deno.test("client load --udp report: datagrams per second, lost, latency, flows per backend", () => {
  const report: UdpLoadReport = {
    transport: "udp",
    target: "localhost:5353",
    family: "IPv4",
    addresses: ["127.0.0.1"],
    mode: "rr",
    flows: 4,
    durationS: 1.002,
    sent: 20_004,
    operations: 20_000,
    opsPerSecond: 19_960.08,
    lost: 4,
    lostPercent: 0.02,
    late: 1,
    bytesVerified: 1_280_000,
    megabytesPerSecond: 1.28,
    latencyUs: { p50: 180, p90: 260, p99: 900, max: 5_100, mean: 199.6 },
    integrityFailures: 0,
    answeredBy: [
      { server: "version v1", count: 3, percent: 75 },
      { server: "version v2", count: 1, percent: 25 },
    ],
    failures: { lost: 4 },
    failureDetails: { lost: "request 812: no echo within 200 ms" },
    failureHints: { lost: "the server got the datagram (its banner came)" },
  };
  assert.equal(
    renderUdpLoadReport(report),
    `load udp localhost:5353 over IPv4 (127.0.0.1): 4 flows, 1.002 s
  19960 datagrams/s echoed, 20000 verified of 20004 sent, 4 lost (0.02%), 1 late or duplicated echoes
  latency (µs)      p50      p90      p99      max     mean
                    180      260      900     5100      200
  answered by   flows  share
    version v1      3  75.0%
    version v2      1  25.0%
  failures
    lost  4  request 812: no echo within 200 ms
             hint: the server got the datagram (its banner came)
`,
  );
});

Deno.test("client hold report: exact human text, replacements, timeline, expectations", () => {
  const server = parseBanner("Running on Pod pod-a.\nVersion v1.\n");
  const replacementServer = parseBanner("Running on Pod pod-b.\nVersion v2.\n");
  const lost = {
    slot: 1,
    generation: 0,
    openedAtMs: 12,
    connectMs: 3.5,
    attempts: 1,
    server,
    backend: "version v1, pod pod-a",
    heartbeats: 4,
    stalls: [{ atMs: 900, ms: 2_010, heartbeat: 2 }],
    stallsNotKept: 0,
    worstStallMs: 2_010,
    end: {
      reason: "drain" as const,
      atMs: 3_204,
      detail: "tcp-echo: closing this connection: the server is shutting down and its grace " +
        "of 1s is over",
    },
  };
  const report: HoldReport = {
    command: "hold",
    target: "10.0.0.1:31400",
    tls: false,
    startedAt: "2026-01-02T03:04:05.678Z",
    ranMs: 5_000,
    endedBy: "interrupt",
    allOpenAtMs: 14,
    settings: {
      connections: 2,
      intervalMs: 1_000,
      stallMs: 500,
      timeoutMs: 5_000,
      durationMs: null,
      reconnect: true,
      openRate: 1_000,
    },
    backends: [
      {
        backend: "version v1, pod pod-a",
        version: "v1",
        opened: 2,
        open: 1,
        ended: { fin: 0, rst: 0, timeout: 0, mismatch: 0, drain: 1, error: 0 },
        worstStallMs: 2_010,
        replacedTo: { "version v2, pod pod-b": 1 },
      },
      {
        backend: "version v2, pod pod-b",
        version: "v2",
        opened: 1,
        open: 1,
        ended: { fin: 0, rst: 0, timeout: 0, mismatch: 0, drain: 0, error: 0 },
        worstStallMs: 0,
        replacedTo: {},
      },
    ],
    lost: 1,
    replaced: 1,
    missingAtEnd: 0,
    heartbeats: 9,
    integrityFailures: 0,
    openFailures: { failures: {}, failureDetails: {}, failureHints: {} },
    failedAttempts: [],
    connections: [
      { ...lost, slot: 0, stalls: [], worstStallMs: 0, end: null, openedAtMs: 14 },
      lost,
      {
        ...lost,
        generation: 1,
        openedAtMs: 3_209.5,
        connectMs: 5.5,
        server: replacementServer,
        backend: "version v2, pod pod-b",
        replaces: { backend: "version v1, pod pod-a", generation: 0, lostAtMs: 3_204, gapMs: 5.5 },
        stalls: [],
        worstStallMs: 0,
        end: null,
      },
    ],
    recordsNotKept: 0,
    expectations: [{ expect: "moved-to v2", met: true, why: "the replacement landed on v2" }],
  };
  assert.equal(
    renderHoldReport(report),
    `hold 10.0.0.1:31400: 2 connections, a heartbeat every 1s, a stall past 500ms, timeout 5s, --reconnect
started 2026-01-02T03:04:05.678Z, ran 5.00 s, ended: interrupted (SIGINT/SIGTERM); opening took 14 ms
9 heartbeats answered; 1 lost, 1 replaced, 0 of 2 places without a connection at the end

backend                  opened  open  fin  rst  timeout  mismatch  drain  error  worst stall
  version v1, pod pod-a       2     1    0    0        0         0      1      0       2.01 s
  version v2, pod pod-b       1     1    0    0        0         0      0      0            -

replacements: 1, gap p50 5.50 ms, max 5.50 ms
  version v1, pod pod-a → version v2, pod pod-b  1

timeline (seconds since the start)
  0.012–0.014  opened    2 × version v1, pod pod-a                          connect 3.50 ms
  0.900        stall     1 × version v1, pod pod-a                          2.01 s without an answer
  3.204        drain     1 × version v1, pod pod-a                          after 3.19 s open: "tcp-echo: closing this connection: the server is shutting down and its grace of 1s is over"
  3.209        replaced  1 × version v1, pod pod-a → version v2, pod pod-b  gap 5.50 ms

expect moved-to v2: met (the replacement landed on v2)
`,
  );
});

Deno.test("client hold live line: open per backend, lost, reconnected, worst stall", () => {
  const status: HoldStatus = {
    elapsedMs: 12_345,
    connections: 10_000,
    openByBackend: [
      ["version v1, pod pod-a, node n1", 5_000],
      ["version v2, pod pod-b", 4_990],
      ["version v2, pod pod-c", 5],
      ["(no banner)", 3],
    ],
    open: 9_998,
    lost: 4,
    reconnected: 2,
    worstStallMs: 1_234,
    allOpenAtMs: 10_010,
    notOpened: 2,
  };
  assert.equal(
    renderHoldStatus(status),
    "hold 12.35 s: 9998/10000 open (5000 v1/pod-a/n1, 4990 v2/pod-b, 5 v2/pod-c, +1 more), " +
      "lost 4, reconnected 2, worst stall 1.23 s",
  );
  assert.equal(
    renderAllOpen({ ...status, openByBackend: status.openByBackend.slice(0, 2) }),
    "hold: 9998 of 10000 connections opened in 10.01 s (5000 v1/pod-a/n1, 4990 v2/pod-b); " +
      "2 did not open",
  );
  assert.equal(formatMs(0.5), "0.50 ms");
  assert.equal(formatMs(9.996), "10 ms");
  assert.equal(formatMs(999.6), "1.00 s");
});
