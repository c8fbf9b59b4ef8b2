import assert from "node:assert/strict";
import net from "node:net";
import * as hdr from "hdr-histogram-js";
import {
  type ClientOptions,
  firstDifference,
  identityKey,
  latencySummary,
  makeExchange,
  parseBanner,
  parseClientArgs,
  percentile,
  type ProbeOutcome,
  probeReport,
  renderProbeReport,
  summarize,
  UsageError,
} from "./client.ts";
import { loadConfig } from "../src/config.ts";
import { startServer } from "../main.ts";
import {
  decoder,
  encoder,
  freePort,
  ignoreWithout,
  makeTestPki,
  repoDir,
  startHaproxy,
  startTestServer,
  taskArgs,
} from "../testing/support.ts";

/** Runs `tcp-echo client ARGS` as `deno task client` does; returns exit code and output. */
async function runClientProcess(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [...await taskArgs("client"), ...args],
    cwd: repoDir,
    env: { NO_COLOR: "1" },
    stdin: "null",
  }).output();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** A TCP server that echoes everything but flips the bits of byte `corruptAt` of each connection's stream. */
function startCorruptingEcho(corruptAt: number): { port: number; close(): Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const handlers: Promise<void>[] = [];
  const serve = async (conn: Deno.Conn) => {
    const buffer = new Uint8Array(65_536);
    let offset = 0;
    try {
      while (true) {
        const n = await conn.read(buffer);
        if (n === null) break;
        const chunk = buffer.subarray(0, n);
        if (corruptAt >= offset && corruptAt < offset + n) chunk[corruptAt - offset] ^= 0xff;
        offset += n;
        let written = 0;
        while (written < n) written += await conn.write(chunk.subarray(written));
      }
    } catch {
      // The client went away.
    } finally {
      conn.close();
    }
  };
  const accepting = (async () => {
    try {
      for await (const conn of listener) handlers.push(serve(conn));
    } catch {
      // Closed.
    }
  })();
  return {
    port: listener.addr.port,
    async close() {
      listener.close();
      await accepting;
      await Promise.all(handlers);
    },
  };
}

Deno.test("client arguments: defaults, options and one-line usage errors", async (t) => {
  await t.step("defaults", () => {
    const options = parseClientArgs(["127.0.0.1:3333"]);
    assert.deepEqual(
      options,
      {
        hostname: "127.0.0.1",
        port: 3333,
        command: "probe",
        count: 20,
        concurrency: 1,
        size: 64,
        message: undefined,
        prefix: undefined,
        connections: 1,
        durationMs: 5_000,
        mode: "rr",
        tls: undefined,
        timeoutMs: 5_000,
        json: false,
        failUnder: { success: 100 },
      } satisfies ClientOptions,
    );
  });
  await t.step("options", () => {
    const options = parseClientArgs([
      "[::1]:9000",
      "load",
      "--mode",
      "stream",
      "--connections",
      "4",
      "--duration",
      "2m",
      "--timeout",
      "250ms",
      "--fail-under",
      "mbps=100,ops=5",
      "--json",
    ]);
    assert.equal(options.hostname, "::1");
    assert.equal(options.port, 9000);
    assert.equal(options.command, "load");
    assert.equal(options.mode, "stream");
    assert.equal(options.size, 65_536, "stream writes 64 KiB chunks by default");
    assert.equal(options.durationMs, 120_000);
    assert.equal(options.timeoutMs, 250);
    assert.deepEqual(options.failUnder, { success: undefined, mbps: 100, ops: 5 });
    assert.equal(options.json, true);
    assert.equal(options.tls, undefined);
    assert.deepEqual(
      parseClientArgs([
        "h:1",
        "--tls",
        "--sni",
        "v2.example.com",
        "--alpn",
        "echo,h2",
        "--ca",
        "ca.pem",
        "--cert",
        "c.pem",
        "--key",
        "c.key",
      ]).tls,
      {
        serverName: "v2.example.com",
        alpn: ["echo", "h2"],
        caFile: "ca.pem",
        certFile: "c.pem",
        keyFile: "c.key",
        insecure: false,
      },
    );
    assert.equal(
      parseClientArgs(["h:1", "load", "--mode", "connect", "--tls", "--insecure"]).tls
        ?.insecure,
      true,
    );
  });
  await t.step("errors", () => {
    const cases: [string[], string][] = [
      [[], "the target HOST:PORT is missing"],
      [
        ["localhost"],
        'the target is HOST:PORT (e.g. 127.0.0.1:3333 or [::1]:3333), not "localhost"',
      ],
      [["h:70000"], 'the target is HOST:PORT (e.g. 127.0.0.1:3333 or [::1]:3333), not "h:70000"'],
      [["h:1", "soak"], 'the command is probe or load, not "soak"'],
      [["h:1", "load", "--mode", "udp"], '--mode is rr, stream or connect, not "udp"'],
      [["h:1", "--sni", "a.b"], "--sni needs --tls"],
      [["h:1", "--insecure"], "--insecure needs --tls"],
      [["h:1", "--tls", "--cert", "c.pem"], "--cert and --key go together"],
      [
        ["h:1", "--tls", "--insecure", "--ca", "ca.pem"],
        "--insecure accepts any certificate; --ca would not be used",
      ],
      [["h:1", "--tls", "--alpn", "echo,"], '--alpn takes a comma list of protocols, not "echo,"'],
      [["h:1", "--count", "0"], '--count takes a whole number of at least 1, not "0"'],
      [
        ["h:1", "--duration", "5"],
        '--duration takes a whole number with ms, s, m or h, e.g. 500ms, 10s, 2m, not "5"',
      ],
      [
        ["h:1", "--fail-under", "speed=1"],
        '--fail-under takes success=PCT, ops=N or mbps=N, not "speed=1"',
      ],
      [
        ["h:1", "load", "--mode", "stream", "--prefix", "one"],
        "--mode stream needs a byte-exact echo; it cannot be used with --prefix",
      ],
      [["h:1", "probe", "extra"], 'unexpected argument "extra"'],
    ];
    for (const [args, message] of cases) {
      assert.throws(
        () => parseClientArgs(args),
        (e) => e instanceof UsageError && e.message === message,
        args.join(" "),
      );
    }
  });
});

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

Deno.test("client payloads and integrity checks", () => {
  const line = makeExchange(10, undefined, "one");
  assert.equal(line.payload.length, 10);
  assert.match(decoder.decode(line.payload), /^[0-9a-f]{9}\n$/);
  assert.equal(decoder.decode(line.expected), `one ${decoder.decode(line.payload)}`);
  const message = makeExchange(64, "hello", undefined);
  assert.deepEqual(message.payload, encoder.encode("hello"));
  assert.equal(message.expected, message.payload);
  assert.equal(makeExchange(1000, undefined, undefined).payload.length, 1000);

  const pattern = Uint8Array.from({ length: 16 }, (_, i) => i);
  const stream = Uint8Array.from({ length: 40 }, (_, i) => (i + 5) % 16); // starts at offset 5, wraps twice
  assert.equal(firstDifference(stream, pattern, 5), -1);
  stream[30] ^= 1;
  assert.equal(firstDifference(stream, pattern, 5), 30);
  assert.equal(firstDifference(pattern.subarray(0, 3), pattern, 1), 0);
});

Deno.test("client probe report: who answered, failures, exact human text", () => {
  const ok = (version: string, ms: number): ProbeOutcome => ({
    ok: true,
    identity: { version, pod: `pod-${version}`, node: "n" },
    connectMs: ms,
    firstByteMs: ms * 2,
    roundTripMs: ms * 3,
  });
  const outcomes: ProbeOutcome[] = [
    ...[1, 2, 3, 4, 5, 6, 7].map((ms) => ok("v1", ms)),
    ok("v2", 8),
    { ok: false, reason: "mismatch", identity: {}, detail: "" },
    { ok: false, reason: "refused", identity: {}, detail: "" },
  ];
  const report = probeReport("10.0.0.1:31400", outcomes, 2_000);
  assert.deepEqual(report.answeredBy, [
    { server: "version v1, pod pod-v1, node n", count: 7, percent: 70 },
    { server: "version v2, pod pod-v2, node n", count: 1, percent: 10 },
  ]);
  assert.deepEqual(report.failures, { mismatch: 1, refused: 1 });
  assert.equal(report.integrityFailures, 1);
  assert.equal(report.successPercent, 80);
  assert.equal(report.connectionsPerSecond, 4);
  assert.equal(
    renderProbeReport(report),
    `probe 10.0.0.1:31400: 8 of 10 connections echoed correctly (80%), 4.0 connections/s

answered by                                              count  share
  version v1, pod pod-v1, node n                             7   70.0%
  version v2, pod pod-v2, node n                             1   10.0%

failures
  mismatch   1
  refused    1

latency (ms)        p50      p90      p99      max
  connect            4.00     8.00     8.00     8.00
  first byte         8.00     16.0     16.0     16.0
  round trip         12.0     24.0     24.0     24.0
`,
  );
});

Deno.test("client against tcp-echo: probe JSON, load rr and stream, prefix mode", async (t) => {
  await t.step("probe --json", async () => {
    await using s = await startTestServer({
      NODE_NAME: "n1",
      POD_NAME: "p1",
      SERVICE_VERSION: "v1",
    });
    const { code, stdout } = await runClientProcess([
      `127.0.0.1:${s.port}`,
      "--count",
      "6",
      "--concurrency",
      "3",
      "--json",
    ]);
    assert.equal(code, 0);
    const report = JSON.parse(stdout);
    assert.equal(report.succeeded, 6);
    assert.deepEqual(report.answeredBy, [{
      server: "version v1, pod p1, node n1",
      count: 6,
      percent: 100,
    }]);
    assert.deepEqual(report.failures, {});
    assert.ok(report.roundTripMs.p50 > 0 && report.roundTripMs.max >= report.roundTripMs.p99);
    assert.deepEqual(report.missedThresholds, []);
  });

  await t.step("load rr and stream verify every byte", async () => {
    await using s = await startTestServer({ NODE_NAME: "n1", LOG_DATA_BYTES: "0" });
    const rr = await runClientProcess([
      `127.0.0.1:${s.port}`,
      "load",
      "--connections",
      "3",
      "--duration",
      "300ms",
      "--json",
    ]);
    assert.equal(rr.code, 0, rr.stderr);
    const rrReport = JSON.parse(rr.stdout);
    assert.ok(rrReport.operations > 0);
    assert.equal(rrReport.bytesVerified, rrReport.operations * 64);
    assert.ok(rrReport.latencyUs.p50 >= 1 && rrReport.latencyUs.p99 >= rrReport.latencyUs.p50);
    const stream = await runClientProcess([
      `127.0.0.1:${s.port}`,
      "load",
      "--mode",
      "stream",
      "--connections",
      "2",
      "--duration",
      "300ms",
      "--json",
    ]);
    assert.equal(stream.code, 0, stream.stderr);
    const streamReport = JSON.parse(stream.stdout);
    assert.equal(streamReport.operations, 2, "both streams came back whole");
    assert.ok(streamReport.bytesVerified > 65_536);
    assert.equal(streamReport.integrityFailures, 0);
  });

  await t.step("a server that answers by lines, with --prefix", async () => {
    await using s = await startTestServer({ ECHO_PREFIX: "one" });
    const probe = await runClientProcess([
      `127.0.0.1:${s.port}`,
      "--count",
      "3",
      "--prefix",
      "one",
      "--json",
    ]);
    assert.equal(probe.code, 0, probe.stdout);
    assert.deepEqual(JSON.parse(probe.stdout).answeredBy, [{
      server: "(no banner)",
      count: 3,
      percent: 100,
    }]);
    const load = await runClientProcess([
      `127.0.0.1:${s.port}`,
      "load",
      "--prefix",
      "one",
      "--duration",
      "200ms",
      "--json",
    ]);
    assert.equal(load.code, 0, load.stdout);
    assert.ok(JSON.parse(load.stdout).operations > 0);
  });
});

/** A TCP server that echoes `resetAfter` bytes of each connection, then resets it (SO_LINGER 0). */
async function startResettingServer(
  resetAfter: number,
): Promise<{ port: number; close(): Promise<void> }> {
  const server = net.createServer((socket) => {
    let seen = 0;
    socket.on("data", (chunk: Uint8Array) => {
      seen += chunk.length;
      if (seen >= resetAfter) socket.resetAndDestroy();
      else socket.write(chunk);
    });
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

Deno.test("client integrity: a server that corrupts one byte makes it fail with exit 1", async (t) => {
  await t.step("probe", async () => {
    const server = startCorruptingEcho(10);
    try {
      const { code, stdout } = await runClientProcess([
        `127.0.0.1:${server.port}`,
        "--count",
        "3",
        "--json",
      ]);
      assert.equal(code, 1);
      const report = JSON.parse(stdout);
      assert.deepEqual(report.failures, { mismatch: 3 });
      assert.equal(report.integrityFailures, 3);
    } finally {
      await server.close();
    }
  });
  await t.step("load rr (the 5th request is corrupted)", async () => {
    // The sync token line is 22 bytes; then 64-byte requests.
    const server = startCorruptingEcho(22 + 4 * 64 + 7);
    try {
      const { code, stdout } = await runClientProcess([
        `127.0.0.1:${server.port}`,
        "load",
        "--duration",
        "300ms",
        "--json",
      ]);
      assert.equal(code, 1);
      const report = JSON.parse(stdout);
      assert.equal(report.integrityFailures, 1);
      assert.equal(report.operations, 4);
    } finally {
      await server.close();
    }
  });
  await t.step("load stream: a corrupted byte is a mismatch, reported, exit 1", async () => {
    const server = startCorruptingEcho(22 + 100_000);
    try {
      const { code, stdout, stderr } = await runClientProcess([
        `127.0.0.1:${server.port}`,
        "load",
        "--mode",
        "stream",
        "--duration",
        "300ms",
        "--json",
      ]);
      assert.equal(stderr, "");
      assert.equal(code, 1);
      const report = JSON.parse(stdout);
      assert.deepEqual(report.failures, { mismatch: 1 });
      assert.equal(report.integrityFailures, 1);
    } finally {
      await server.close();
    }
  });
  await t.step(
    "load stream and rr: a server that resets the connection is a failure, exit 1",
    async () => {
      for (const mode of ["stream", "rr"]) {
        const server = await startResettingServer(22 + 1_000);
        try {
          const { code, stdout, stderr } = await runClientProcess([
            `127.0.0.1:${server.port}`,
            "load",
            "--mode",
            mode,
            "--duration",
            "300ms",
            "--json",
          ]);
          assert.equal(stderr, "");
          assert.equal(code, 1, mode);
          const report = JSON.parse(stdout);
          assert.equal(Object.values(report.failures).reduce((a, b) => Number(a) + Number(b)), 1);
        } finally {
          await server.close();
        }
      }
    },
  );
  await t.step("load with nothing listening: refused, exit 1", async () => {
    const port = freePort();
    const { code, stdout } = await runClientProcess([
      `127.0.0.1:${port}`,
      "load",
      "--duration",
      "100ms",
      "--json",
    ]);
    assert.equal(code, 1);
    const report = JSON.parse(stdout);
    assert.deepEqual(report.failures, { refused: 1 });
    assert.equal(report.operations, 0);
  });
  await t.step("a threshold missed is exit 1 too, refused connections are counted", async () => {
    const port = freePort();
    const { code, stdout } = await runClientProcess([`127.0.0.1:${port}`, "--count", "2"]);
    assert.equal(code, 1);
    assert.match(stdout, /failures\n {2}refused {4}2\n/);
    assert.match(stdout, /threshold missed: success 0% < 100%/);
  });
  await t.step("usage errors are exit 2", async () => {
    const { code, stderr } = await runClientProcess(["--", "nowhere"]);
    assert.equal(code, 2);
    assert.equal(
      stderr,
      'tcp-echo client: the target is HOST:PORT (e.g. 127.0.0.1:3333 or [::1]:3333), not "nowhere"; see tcp-echo client --help\n',
    );
  });
});

Deno.test({
  name: "client probe through a weighted load balancer shows the v1/v2 split (HAProxy 80/20)",
  ignore: await ignoreWithout("haproxy", "the version-split test"),
  async fn() {
    const v1 = startServer({
      ...loadConfig({
        HOST: "127.0.0.1",
        ADMIN_PORT: "off",
        LOG_LEVEL: "error",
        SERVICE_VERSION: "v1",
        POD_NAME: "a",
      }),
      ports: [0],
    });
    const v2 = startServer({
      ...loadConfig({
        HOST: "127.0.0.1",
        ADMIN_PORT: "off",
        LOG_LEVEL: "error",
        SERVICE_VERSION: "v2",
        POD_NAME: "b",
      }),
      ports: [0],
    });
    try {
      await using haproxy = await startHaproxy([
        "  balance roundrobin",
        `  server v1 127.0.0.1:${v1.addresses[0].port} weight 4`,
        `  server v2 127.0.0.1:${v2.addresses[0].port} weight 1`,
      ]);
      const { code, stdout } = await runClientProcess([
        `127.0.0.1:${haproxy.port}`,
        "--count",
        "20",
      ]);
      assert.equal(code, 0, stdout);
      assert.match(
        stdout,
        /^probe 127\.0\.0\.1:\d+: 20 of 20 connections echoed correctly \(100%\)/,
      );
      assert.match(
        stdout,
        /\n {2}version v1, pod a +16 +80\.0%\n {2}version v2, pod b +4 +20\.0%\n/,
      );
    } finally {
      await v1.shutdown({ graceMs: 0 });
      await v2.shutdown({ graceMs: 0 });
    }
  },
});

Deno.test("client probe report with TLS: server name and TLS version columns", () => {
  const outcome = (version: string, serverName: string): ProbeOutcome => ({
    ok: true,
    identity: parseBanner(
      `Version ${version}.\nTLS TLSv1.3 TLS_AES_256_GCM_SHA384, server name ${serverName}, ` +
        "ALPN echo.\n",
    ),
    connectMs: 1,
    firstByteMs: 1,
    roundTripMs: 1,
  });
  const report = probeReport("10.0.0.1:31443", [
    outcome("v1", "v1.example.com"),
    outcome("v2", "v2.example.com"),
    outcome("v2", "v2.example.com"),
  ], 1_000);
  assert.deepEqual(report.answeredBy, [
    { server: "version v2", serverName: "v2.example.com", tls: "TLSv1.3", count: 2, percent: 66.7 },
    { server: "version v1", serverName: "v1.example.com", tls: "TLSv1.3", count: 1, percent: 33.3 },
  ]);
  const table = renderProbeReport(report).split("\n").slice(2, 5).join("\n");
  assert.equal(
    table,
    "answered by                                              server name              TLS      " +
      "count  share\n" +
      "  version v2                                             v2.example.com           TLSv1.3  " +
      "    2   66.7%\n" +
      "  version v1                                             v1.example.com           TLSv1.3  " +
      "    1   33.3%",
  );
});

Deno.test("client --tls against a TLS port: probe with SNI, load rr, stream and connect, client certificates", async (t) => {
  await using pki = await makeTestPki();
  await using s = await startTestServer({
    SERVICE_VERSION: "v2",
    TLS_PORT: "any",
    ...pki.serverFiles,
    TLS_CLIENT_CA: pki.path("ca.pem"),
    LOG_DATA_BYTES: "0",
  });
  const target = `127.0.0.1:${s.tlsPort}`;
  const tls = ["--tls", "--ca", pki.path("ca.pem")];

  await t.step("probe --sni --alpn --json: the server name and version it saw", async () => {
    const { code, stdout } = await runClientProcess([
      target,
      ...tls,
      "--sni",
      "v2.example.com",
      "--alpn",
      "echo",
      "--count",
      "4",
      "--json",
    ]);
    assert.equal(code, 0, stdout);
    assert.deepEqual(JSON.parse(stdout).answeredBy, [{
      server: "version v2",
      serverName: "v2.example.com",
      tls: "TLSv1.3",
      count: 4,
      percent: 100,
    }]);
  });

  await t.step("load rr and stream over TLS verify every byte", async () => {
    for (const mode of ["rr", "stream"]) {
      const { code, stdout } = await runClientProcess([
        target,
        "load",
        ...tls,
        "--mode",
        mode,
        "--connections",
        "2",
        "--duration",
        "300ms",
        "--json",
      ]);
      assert.equal(code, 0, stdout);
      const report = JSON.parse(stdout);
      assert.equal(report.tls, true);
      assert.ok(report.operations > 0 && report.bytesVerified > 0, stdout);
      assert.deepEqual(report.failures, {});
    }
  });

  await t.step("load --mode connect reports handshakes per second", async () => {
    const { code, stdout } = await runClientProcess([
      target,
      "load",
      "--mode",
      "connect",
      ...tls,
      "--duration",
      "300ms",
    ]);
    assert.equal(code, 0, stdout);
    const handshakes = /^ {2}(\d+) handshakes\/s, (\d+) verified \(connect, banner, echo, close\)$/m
      .exec(stdout);
    assert.ok(handshakes && Number(handshakes[2]) > 0, stdout);
  });

  await t.step(
    "--cert/--key: the server shows the client certificate; a stranger's fails",
    async () => {
      const good = await runClientProcess([
        target,
        ...tls,
        "--cert",
        pki.path("client.pem"),
        "--key",
        pki.path("client.key"),
        "--count",
        "1",
      ]);
      assert.equal(good.code, 0, good.stdout);
      const open = await s.logs.waitFor(
        (r) => r.rawMessage === "TCP connection open." && r.properties.client_cert !== undefined,
        "an open record with the client certificate",
      );
      assert.equal(open.properties.client_cert, "CN=client,O=test");
      const stranger = await runClientProcess([
        target,
        ...tls,
        "--cert",
        pki.path("stranger-client.pem"),
        "--key",
        pki.path("stranger-client.key"),
        "--count",
        "1",
      ]);
      assert.equal(stranger.code, 1, stranger.stdout);
      assert.match(stranger.stdout, /0 of 1 connections echoed correctly/);
    },
  );

  await t.step(
    "an untrusted server certificate fails; a missing --ca file is a usage error",
    async () => {
      const untrusted = await runClientProcess([target, "--tls", "--count", "1", "--json"]);
      assert.equal(untrusted.code, 1);
      assert.deepEqual(JSON.parse(untrusted.stdout).failures, { tls: 1 });
      const missing = await runClientProcess([target, "--tls", "--ca", `${pki.dir}/nope.pem`]);
      assert.equal(missing.code, 2);
      assert.match(
        missing.stderr,
        /^tcp-echo client: cannot read --ca .+\/nope\.pem: No such file or directory .+\n$/,
      );
    },
  );
});
