import assert from "node:assert/strict";
import dgram from "node:dgram";
import { Buffer } from "node:buffer";
import { V2_SIGNATURE } from "./src/proxy_protocol.ts";
import {
  adminRequest,
  ALL_BANNER_ENV,
  ALL_BANNER_TEXT,
  captureClientHello,
  decoder,
  encoder,
  freePort,
  ignoreWithout,
  isClosedRecord,
  isOpen,
  LogCapture,
  randomBytes,
  readExactly,
  readToEnd,
  repoDir,
  roundTrip,
  spawnServer,
  startHaproxy,
  startTaskArgs,
  startTestServer,
  waitForPort,
  within,
  withoutTimestamp,
  writeAll,
} from "./testing/support.ts";
import { concatBytes, drainNotice, formatAddress } from "./src/wire.ts";
import { type EchoServer, renderBanner, startServer } from "./main.ts";
import { type Environment, loadConfig } from "./src/config.ts";
import {
  formatGoTimestamp,
  formatJsonRecord,
  formatTextRecord,
  setupLogging,
} from "./src/log_output.ts";
import { MAX_LINE_BYTES } from "./src/line_mode.ts";
import type { RejectReason } from "./src/admin.ts";
import { CONNECTION_COST_BYTES, planMemory } from "./src/memory.ts";

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

Deno.test("program: a port already in use exits 1 with one line naming it, nothing left open", async (t) => {
  const args = await startTaskArgs();
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const busy = String(taken.addr.port);
  const takenUdp = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => takenUdp.bind(0, "127.0.0.1", resolve));
  const busyUdp = String(takenUdp.address().port);
  const cases: [string, Record<string, string>, string, string][] = [
    [
      "TCP port",
      { TCP_PORT: busy, ADMIN_PORT: "off" },
      `TCP port 127.0.0.1:${busy}`,
      "set TCP_PORT to a free port",
    ],
    [
      "TLS port",
      { TCP_PORT: String(freePort()), TLS_PORT: busy, ADMIN_PORT: "off" },
      `TLS port 127.0.0.1:${busy}`,
      "set TLS_PORT to a free port",
    ],
    [
      "admin port",
      { TCP_PORT: String(freePort()), ADMIN_PORT: busy },
      `admin port 127.0.0.1:${busy}`,
      "set ADMIN_PORT to a free port, or off",
    ],
    [
      "UDP port",
      { TCP_PORT: String(freePort()), UDP_PORT: busyUdp, ADMIN_PORT: "off" },
      `UDP port 127.0.0.1:${busyUdp}`,
      "set UDP_PORT to a free port",
    ],
  ];
  for (const [name, env, where, hint] of cases) {
    await t.step(name, async () => {
      const output = await new Deno.Command(Deno.execPath(), {
        args,
        cwd: repoDir,
        env: { HOST: "127.0.0.1", NO_COLOR: "1", ...env },
        stdin: "null",
      }).output();
      assert.equal(output.code, 1);
      assert.match(
        decoder.decode(output.stderr),
        new RegExp(`^tcp-echo: cannot listen on ${where.replaceAll(".", "\\.")}: .+; ${hint}\n$`),
      );
    });
  }
  await new Promise<void>((resolve) => takenUdp.close(resolve));
});

// ---------------------------------------------------------------------------
// Pure helpers
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Echo over real sockets
// ---------------------------------------------------------------------------

Deno.test("banner over the wire: all, none and some variables", async (t) => {
  const cases: [Environment, string][] = [
    [ALL_BANNER_ENV, ALL_BANNER_TEXT],
    [{}, ""],
    [{ NODE_NAME: "EchoNode" }, "Welcome, you are connected to node EchoNode.\n"],
  ];
  for (const [env, expected] of cases) {
    await t.step(expected.split("\n")[0] || "no banner", async () => {
      await using s = await startTestServer(env);
      using conn = await s.connect();
      // The banner comes first and unasked; a marker byte after it shows where it ends.
      const banner = expected === "" ? new Uint8Array() : await readExactly(conn, expected.length);
      assert.equal(decoder.decode(banner), expected);
      assert.equal(decoder.decode(await roundTrip(conn, encoder.encode("!"))), "!");
    });
  }
});

Deno.test("echo: text, all 256 byte values, 8 MiB random payload", async (t) => {
  await using s = await startTestServer({ NODE_NAME: "n" });
  const bannerLength = renderBanner(loadConfig({ NODE_NAME: "n" }).banner).length;

  await t.step("text", async () => {
    using conn = await s.connect();
    await readExactly(conn, bannerLength);
    assert.equal(decoder.decode(await roundTrip(conn, encoder.encode("hello\n"))), "hello\n");
    assert.equal(decoder.decode(await roundTrip(conn, encoder.encode("again"))), "again");
  });

  await t.step("all 256 byte values", async () => {
    using conn = await s.connect();
    await readExactly(conn, bannerLength);
    const every = Uint8Array.from({ length: 256 }, (_, i) => i);
    assert.deepEqual(await roundTrip(conn, every), every);
  });

  await t.step("8 MiB random, written and read concurrently", async () => {
    using conn = await s.connect();
    await readExactly(conn, bannerLength);
    const payload = randomBytes(8 * 1024 * 1024);
    const echoed = await roundTrip(conn, payload);
    assert.equal(echoed.length, payload.length);
    assert.ok(echoed.every((b, i) => b === payload[i]), "byte-for-byte equal");
  });
});

Deno.test("half-close: everything sent before FIN is echoed, then the server closes", async () => {
  await using s = await startTestServer();
  using conn = await s.connect();
  const payload = randomBytes(300_000);
  await writeAll(conn, payload);
  await conn.closeWrite();
  assert.deepEqual(await readToEnd(conn), payload);
  const id = await s.connectionId(0);
  const closed = await s.logs.waitFor(isClosedRecord(id), "closed record");
  assert.equal(closed.properties.reason, "eof");
  assert.equal(closed.properties.bytes_in, payload.length);
  assert.equal(closed.properties.bytes_out, payload.length);
});

Deno.test("200 concurrent connections each echo their own data", async () => {
  await using s = await startTestServer({ LOG_DATA_BYTES: "0" });
  const conns = await Promise.all(Array.from({ length: 200 }, () => s.connect()));
  try {
    const payloads = conns.map((_, i) => randomBytes(1_000 + i * 37));
    const echoed = await Promise.all(conns.map((c, i) => roundTrip(c, payloads[i])));
    echoed.forEach((bytes, i) => assert.deepEqual(bytes, payloads[i], `connection ${i}`));
    assert.equal(s.server.activeConnections, 200);
  } finally {
    conns.forEach((c) => c.close());
  }
});

Deno.test("a client reset mid-stream ends only its own connection", async () => {
  await using s = await startTestServer();
  using steady = await s.connect();
  const steadyId = await s.connectionId(0);
  assert.equal(decoder.decode(await roundTrip(steady, encoder.encode("before"))), "before");

  const resetting = await s.connect();
  const resettingId = await s.connectionId(1);
  await writeAll(resetting, randomBytes(64 * 1024));
  // Wait until the server has echoed; closing with that data unread makes the kernel send RST.
  await s.logs.waitFor(
    (r) => r.properties.id === resettingId && r.rawMessage.toString().startsWith("Received Raw"),
    "server received the data",
  );
  await readExactly(resetting, 1);
  resetting.close();

  const closed = await s.logs.waitFor(isClosedRecord(resettingId), "reset logged");
  assert.equal(closed.properties.reason, "reset");
  assert.equal(decoder.decode(await roundTrip(steady, encoder.encode("after"))), "after");
  assert.equal(s.logs.records.find(isClosedRecord(steadyId)), undefined);
  const third = await s.connect();
  assert.equal(decoder.decode(await roundTrip(third, encoder.encode("new"))), "new");
  third.close();
});

Deno.test("a client that never reads: the server stops reading, one buffer in flight", async () => {
  await using s = await startTestServer({ LOG_DATA_BYTES: "0" });
  const conn = await s.connect();
  const id = await s.connectionId(0);
  const chunk = randomBytes(1024 * 1024);
  let attempted = 0;
  // Kernel buffers on loopback hold a few MiB each way; 256 MiB can never all be taken.
  const limit = 256 * 1024 * 1024;
  let stalled = false;
  while (attempted < limit) {
    const write = conn.write(chunk);
    const result = await Promise.race([
      write,
      within(1_000, "write", write).catch(() => "stalled" as const),
    ]);
    if (result === "stalled") {
      stalled = true;
      break;
    }
    attempted += result;
  }
  assert.ok(stalled, "writes must stall once the server stops reading");
  conn.close();
  const closed = await s.logs.waitFor(isClosedRecord(id), "closed record");
  const bytesIn = Number(closed.properties.bytes_in);
  const bytesOut = Number(closed.properties.bytes_out);
  assert.ok(bytesIn < 64 * 1024 * 1024, `server read ${bytesIn} bytes`);
  assert.ok(bytesIn - bytesOut <= 65_536, `in flight: ${bytesIn - bytesOut} bytes`);
  assert.equal(closed.properties.reason, "reset");
});

// ---------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------

Deno.test("logs: exact open, raw, string and closed records", async (t) => {
  await t.step("text, with escaping of a\\r\\nFAKE", async () => {
    await using s = await startTestServer();
    const conn = await s.connect();
    const client = formatAddress(conn.localAddr);
    assert.equal(decoder.decode(await roundTrip(conn, encoder.encode("hello\n"))), "hello\n");
    const id = await s.connectionId(0);
    await s.logs.waitFor(
      (r) => r.properties.id === id && String(r.rawMessage).includes("string"),
      "",
    );
    assert.equal(decoder.decode(await roundTrip(conn, encoder.encode("a\r\nFAKE"))), "a\r\nFAKE");
    await conn.closeWrite();
    await readToEnd(conn);
    conn.close();
    const closed = await s.logs.waitFor(isClosedRecord(id), "closed record");
    const lines = s.logs.linesOf(id);
    const ts = (i: number) =>
      formatGoTimestamp(s.logs.records.filter((r) => r.properties.id === id)[i].timestamp);
    assert.deepEqual(lines, [
      `${ts(0)} ${id} - TCP connection open. client=${client} port=${s.port} family=IPv4\n`,
      `${ts(1)} ${id} - Received Raw Data: [104 101 108 108 111 10]\n`,
      `${ts(2)} ${id} - Received Data (converted to string): hello\n`,
      `${ts(3)} ${id} - Received Raw Data: [97 13 10 70 65 75 69]\n`,
      `${ts(4)} ${id} - Received Data (converted to string): a\\r\\nFAKE\n`,
      `${
        ts(5)
      } ${id} - TCP connection closed. reason=eof bytes_in=13 bytes_out=13 duration_ms=${closed.properties.duration_ms} port=${s.port}\n`,
    ]);
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const listening = formatTextRecord(s.logs.records[0]);
    assert.equal(
      withoutTimestamp(listening),
      `Listening on TCP port ${s.port} address=127.0.0.1:${s.port} families=IPv4\n`,
    );
  });

  await t.step("LOG_DATA_BYTES caps each chunk and says what it left out", async () => {
    await using s = await startTestServer({ LOG_DATA_BYTES: "3" });
    using conn = await s.connect();
    await roundTrip(conn, encoder.encode("abcdef"));
    const id = await s.connectionId(0);
    const data = await s.logs.waitFor((r) => r.properties.data !== undefined, "data record");
    const raw = s.logs.records.find((r) => r.properties.raw !== undefined)!;
    assert.equal(
      withoutTimestamp(formatTextRecord(raw)),
      `${id} - Received Raw Data: [97 98 99] omitted_bytes=3\n`,
    );
    assert.equal(
      withoutTimestamp(formatTextRecord(data)),
      `${id} - Received Data (converted to string): abc omitted_bytes=3\n`,
    );
  });

  await t.step("LOG_DATA_BYTES=0 writes no data records", async () => {
    await using s = await startTestServer({ LOG_DATA_BYTES: "0" });
    const conn = await s.connect();
    await roundTrip(conn, encoder.encode("secret"));
    const id = await s.connectionId(0);
    conn.close();
    await s.logs.waitFor(isClosedRecord(id), "closed record");
    assert.deepEqual(
      s.logs.records.filter((r) => r.properties.id === id).map((r) => r.rawMessage),
      ["TCP connection open.", "TCP connection closed."],
    );
  });

  await t.step("LOG_LEVEL=warn filters connection records", async () => {
    await using s = await startTestServer({ LOG_LEVEL: "warn" });
    using conn = await s.connect();
    await roundTrip(conn, encoder.encode("quiet"));
    assert.deepEqual(s.logs.records, []);
  });

  await t.step("JSON records parse, one per line, with the facts as fields", async () => {
    await using s = await startTestServer({ LOG_FORMAT: "json" });
    const conn = await s.connect();
    await roundTrip(conn, encoder.encode("a\r\nFAKE\n"));
    const id = await s.connectionId(0);
    conn.close();
    await s.logs.waitFor(isClosedRecord(id), "closed record");
    const lines = s.logs.records.filter((r) => r.properties.id === id).map(formatJsonRecord);
    assert.ok(lines.every((l) => l.endsWith("\n") && l.indexOf("\n") === l.length - 1));
    const objects = lines.map((l) => JSON.parse(l));
    const { ts: _ts, ...open } = objects[0];
    assert.match(objects[0].ts, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.deepEqual(open, {
      level: "info",
      msg: "TCP connection open.",
      id,
      client: formatAddress(conn.localAddr),
      port: s.port,
      family: "IPv4",
    });
    assert.deepEqual(objects[1].raw, [97, 13, 10, 70, 65, 75, 69, 10]);
    assert.equal(objects[1].msg, "Received Raw Data");
    assert.equal(objects[2].data, "a\\r\\nFAKE");
    assert.equal(objects[2].msg, "Received Data (converted to string)");
    assert.equal(objects[3].reason, "eof");
    assert.equal(objects[3].bytes_in, 8);
  });
});

Deno.test("dual-stack listener shows IPv4-mapped clients as plain IPv4", async () => {
  const logs = new LogCapture();
  const detach = await setupLogging("info", logs.sink);
  let server: EchoServer;
  try {
    server = startServer({ ...loadConfig({ ADMIN_PORT: "off" }), ports: [0] });
  } catch (error) {
    await detach();
    if (error instanceof Deno.errors.AddrNotAvailable) return; // No IPv6 here: nothing to show.
    throw error;
  }
  try {
    assert.equal(server.addresses[0].hostname, "::");
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addresses[0].port });
    const open = await logs.waitFor(isOpen, "open record");
    assert.equal(open.properties.client, `127.0.0.1:${conn.localAddr.port}`);
  } finally {
    await server.shutdown({ graceMs: 0 });
    await detach();
  }
});

// ---------------------------------------------------------------------------
// Shutdown and signals
// ---------------------------------------------------------------------------

Deno.test("shutdown: open connections finish within the grace, the rest are closed", async (t) => {
  await t.step("a connection that ends in time ends with eof", async () => {
    await using s = await startTestServer();
    const conn = await s.connect();
    const id = await s.connectionId(0);
    const done = s.server.shutdown({ graceMs: 5_000 });
    assert.equal(decoder.decode(await roundTrip(conn, encoder.encode("still here"))), "still here");
    await assert.rejects(s.connect(), Deno.errors.ConnectionRefused);
    await conn.closeWrite();
    await readToEnd(conn);
    conn.close();
    await within(2_000, "shutdown", done);
    assert.equal((await s.logs.waitFor(isClosedRecord(id), "closed")).properties.reason, "eof");
  });

  await t.step(
    "a connection still open after the grace is closed with reason shutdown",
    async () => {
      await using s = await startTestServer();
      using conn = await s.connect();
      const id = await s.connectionId(0);
      await within(2_000, "shutdown", s.server.shutdown({ graceMs: 50 }));
      assert.equal(
        (await s.logs.waitFor(isClosedRecord(id), "closed")).properties.reason,
        "shutdown",
      );
      assert.equal(await readToEnd(conn).then((b) => b.length), 0);
      assert.equal(s.server.activeConnections, 0);
    },
  );
});

Deno.test("SIGTERM: data already sent is echoed, then exit 0 within the grace", async () => {
  await using p = await spawnServer({ NODE_NAME: "EchoNode", SHUTDOWN_GRACE: "3s" });
  await p.stdout.waitFor((l) => l.includes("Listening on TCP port"), "listening");
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: p.port });
  const banner = "Welcome, you are connected to node EchoNode.\n";
  assert.equal(decoder.decode(await readExactly(conn, banner.length)), banner);
  await writeAll(conn, encoder.encode("in flight\n"));
  await p.stdout.waitFor(
    (l) => l.includes("Received Data (converted to string): in flight"),
    "data",
  );
  p.child.kill("SIGTERM");
  assert.equal(decoder.decode(await readExactly(conn, 10)), "in flight\n");
  await p.stdout.waitFor((l) => l.includes("Shutting down: stopped accepting."), "draining");
  // Still echoing during the grace.
  assert.equal(decoder.decode(await roundTrip(conn, encoder.encode("more"))), "more");
  await conn.closeWrite();
  await readToEnd(conn);
  const started = performance.now();
  const status = await within(5_000, "exit", p.child.status);
  assert.equal(status.code, 0);
  assert.ok(performance.now() - started < 3_000, "exits when the last connection ends");
  const lines = await p.stdout.rest();
  assert.ok(lines.some((l) => l.endsWith("Received SIGTERM, shutting down.")), lines.join("\n"));
  assert.ok(lines.some((l) => l.includes("TCP connection closed. reason=eof bytes_in=14")));
  assert.ok(lines.at(-1)!.endsWith("Shutdown complete. connections_served=1"), lines.join("\n"));
});

Deno.test("SIGTERM: a connection open past the grace is closed, exit 0", async (t) => {
  await t.step("grace over", async () => {
    await using p = await spawnServer({ SHUTDOWN_GRACE: "300ms" });
    await p.stdout.waitFor((l) => l.includes("Listening on TCP port"), "listening");
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: p.port });
    await p.stdout.waitFor((l) => l.includes("TCP connection open."), "open");
    p.child.kill("SIGTERM");
    assert.equal((await readToEnd(conn)).length, 0);
    assert.equal((await within(5_000, "exit", p.child.status)).code, 0);
    const lines = await p.stdout.rest();
    assert.ok(
      lines.some((l) => l.includes("TCP connection closed. reason=shutdown")),
      lines.join("\n"),
    );
  });
});

Deno.test({
  name: "out of file descriptors: the server warns, backs off and accepts again",
  ignore: await ignoreWithout("prlimit", "the out-of-descriptors test"),
  async fn() {
    await using p = await spawnServer({ NODE_NAME: "n" }, {
      prefix: ["prlimit", "--nofile=64:64"],
    });
    const conns: Deno.TcpConn[] = [];
    try {
      await p.stdout.waitFor((l) => l.includes("Listening on TCP port"), "listening");
      for (let i = 0; i < 80; i++) {
        conns.push(await Deno.connect({ hostname: "127.0.0.1", port: p.port }));
      }
      await p.stdout.waitFor(
        (l) => /Accept failed, backing off\. error=.* port=\d+ level=warn$/.test(l),
        "warn",
      );
      for (const conn of conns.splice(0)) conn.close();
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: p.port });
      conns.push(conn);
      const banner = "Welcome, you are connected to node n.\n";
      assert.equal(decoder.decode(await readExactly(conn, banner.length)), banner);
      assert.equal(decoder.decode(await roundTrip(conn, encoder.encode("ok"))), "ok");
      conn.close();
      conns.pop();
      await p.stdout.waitFor(
        (l) => /Accepting again\. failed_attempts=\d+ port=\d+$/.test(l),
        "recovered",
      );
      p.child.kill("SIGTERM");
      const output = p.stdout.rest();
      assert.equal((await within(5_000, "exit", p.child.status)).code, 0);
      await output;
    } finally {
      conns.forEach((c) => c.close());
    }
  },
});

Deno.test("a TLS ClientHello on a plain port is refused whatever segments its first bytes come in", async (t) => {
  const hello = await captureClientHello("v2.example.com");
  await using s = await startTestServer({ NODE_NAME: "x" });
  const banner = "Welcome, you are connected to node x.\n";
  for (let split = 1; split < 6; split++) {
    await t.step(`${split} + ${hello.length - split} bytes`, async () => {
      using conn = await s.connect();
      await conn.setNoDelay(true);
      assert.equal(decoder.decode(await readExactly(conn, banner.length)), banner);
      await writeAll(conn, hello.subarray(0, split));
      // Long enough for the server to read the first segment alone, and to echo it if it would.
      const early = await Promise.race([
        conn.read(new Uint8Array(16)),
        new Promise<"none">((resolve) => setTimeout(resolve, 200, "none")),
      ]);
      assert.equal(early, "none", "nothing is echoed while the first bytes may be a ClientHello");
      await writeAll(conn, hello.subarray(split));
      assert.equal((await readToEnd(conn)).length, 0, "closed, nothing echoed");
    });
  }
  const closed = s.logs.records.filter((r) => r.properties.reason === "tls_on_plain_port");
  assert.equal(closed.length, 5);
  const refusals = s.logs.records.filter((r) =>
    String(r.rawMessage).startsWith("A TLS ClientHello")
  );
  assert.deepEqual(refusals.map((r) => r.properties.server_name), Array(5).fill("v2.example.com"));
});

Deno.test("first bytes that only begin like a ClientHello are echoed, none lost", async (t) => {
  await using s = await startTestServer({ LOG_DATA_BYTES: "0" });
  await t.step("more bytes that are not a ClientHello", async () => {
    using conn = await s.connect();
    await writeAll(conn, Uint8Array.of(0x16, 0x03));
    await writeAll(conn, encoder.encode("\x00 plain"));
    const sent = concatBytes([Uint8Array.of(0x16, 0x03), encoder.encode("\x00 plain")]);
    assert.deepEqual(await readExactly(conn, sent.length), sent);
    assert.deepEqual(await roundTrip(conn, encoder.encode("more")), encoder.encode("more"));
  });
  await t.step("nothing more for a while: echoed after the wait, then the rest", async () => {
    using conn = await s.connect();
    await writeAll(conn, Uint8Array.of(0x16));
    assert.deepEqual(await readExactly(conn, 1, 3_000), Uint8Array.of(0x16));
    assert.deepEqual(await roundTrip(conn, encoder.encode("later")), encoder.encode("later"));
  });
  await t.step("the end right after", async () => {
    using conn = await s.connect();
    await writeAll(conn, Uint8Array.of(0x16, 0x03, 0x01));
    await conn.closeWrite();
    assert.deepEqual(await readToEnd(conn), Uint8Array.of(0x16, 0x03, 0x01));
  });
});

// ---------------------------------------------------------------------------
// Operations: admin HTTP, metrics, drain, limits, idle timeout
// ---------------------------------------------------------------------------
Deno.test("MAX_CONNECTIONS: the next connection is closed at once, counted, and admitted later", async () => {
  await using s = await startTestServer({
    ADMIN_PORT: "any",
    MAX_CONNECTIONS: "2",
    NODE_NAME: "x",
  });
  const banner = "Welcome, you are connected to node x.\n";
  const first = await s.connect();
  using second = await s.connect();
  assert.equal(decoder.decode(await readExactly(first, banner.length)), banner);
  assert.equal(decoder.decode(await readExactly(second, banner.length)), banner);
  for (let i = 0; i < 2; i++) {
    using refused = await s.connect();
    assert.equal((await readToEnd(refused)).length, 0, "closed with no banner");
  }
  const warnings = s.logs.records.filter((r) => r.level === "warning");
  assert.deepEqual(warnings.map(formatTextRecord).map(withoutTimestamp), [
    "Connection limit reached, refusing connections. limit=2 refused=1 level=warn\n",
  ]);
  assert.equal(s.server.stats.forPort(s.port).rejected.max_connections, 2);
  assert.equal((await adminRequest(s.server.adminAddress!, "/healthz")).status, 200);
  assert.equal(decoder.decode(await roundTrip(second, encoder.encode("still"))), "still");
  first.close();
  await s.logs.waitFor(isClosedRecord(await s.connectionId(0)), "first closed");
  using third = await s.connect();
  assert.equal(decoder.decode(await readExactly(third, banner.length)), banner);
  assert.equal(s.server.activeConnections, 2);
});

Deno.test("memory budget: past it a connection is refused with reason memory, and admitted once one ends", async () => {
  const limitBytes = 64 * 2 ** 20;
  const { plain } = CONNECTION_COST_BYTES;
  // The process's own size set so that three plain connections and a half fit.
  const baseMemoryBytes = planMemory(limitBytes, 0).connectionBytes - 3.5 * plain;
  await using s = await startTestServer({ NODE_NAME: "x", ADMIN_PORT: "any" }, {
    memoryLimitBytes: limitBytes,
    baseMemoryBytes,
  });
  const start = s.logs.records.find((r) => String(r.rawMessage).startsWith("Memory limit"))!;
  assert.equal(
    withoutTimestamp(formatTextRecord(start)),
    `Memory limit 64MiB: room for 3 plain or 0 TLS connections. connection_budget=${
      (3.5 * plain / 2 ** 20).toFixed(1)
    }MiB\n`,
  );
  const banner = "Welcome, you are connected to node x.\n";
  const admitted = await Promise.all([0, 1, 2].map(() => s.connect()));
  for (const conn of admitted) {
    assert.equal(decoder.decode(await readExactly(conn, banner.length)), banner);
  }
  {
    using refused = await s.connect();
    assert.equal((await readToEnd(refused)).length, 0, "closed with no banner");
  }
  const warning = s.logs.records.find((r) => r.level === "warning")!;
  assert.equal(
    withoutTimestamp(formatTextRecord(warning)),
    `Memory budget reached, refusing connections. budget_bytes=${
      Math.floor(3.5 * plain)
    } charged_bytes=${3 * plain} refused=1 level=warn\n`,
  );
  const metrics = (await adminRequest(s.server.adminAddress!, "/metrics")).body;
  assert.match(metrics, new RegExp(`rejected_total\\{port="${s.port}",reason="memory"\\} 1\n`));
  admitted[0].close();
  await s.logs.waitFor(isClosedRecord(await s.connectionId(0)), "first closed");
  using again = await s.connect();
  assert.equal(decoder.decode(await readExactly(again, banner.length)), banner);
  assert.equal(decoder.decode(await roundTrip(admitted[1], encoder.encode("still"))), "still");
  admitted.slice(1).forEach((conn) => conn.close());
});

Deno.test("pending connections: silent clients of a TLS port hold a share of their own; the plain port answers at once", async () => {
  await using s = await startTestServer({
    TLS_PORT: "any",
    MAX_CONNECTIONS: "50",
    NODE_NAME: "x",
    ADMIN_PORT: "any",
  });
  const share = Math.ceil(50 / 4);
  const silent = await Promise.all(
    Array.from({ length: 50 }, () => Deno.connect({ hostname: "127.0.0.1", port: s.tlsPort })),
  );
  try {
    const paused = await s.logs.waitFor(
      (r) => String(r.rawMessage).startsWith("Pending connections at their limit"),
      "the TLS port waits",
    );
    assert.equal(
      withoutTimestamp(formatTextRecord(paused)),
      `Pending connections at their limit: TLS and PROXY ports wait before accepting. limit=${share} level=warn\n`,
    );
    const started = performance.now();
    using plain = await s.connect();
    const banner = "Welcome, you are connected to node x.\n";
    assert.equal(decoder.decode(await readExactly(plain, banner.length, 1_000)), banner);
    console.log(`plain banner in ${(performance.now() - started).toFixed(1)} ms`);
    const metrics = (await adminRequest(s.server.adminAddress!, "/metrics")).body;
    const series = (name: string, labels: string) =>
      Number(new RegExp(`^${name}\\{${labels}\\} (\\d+)$`, "m").exec(metrics)?.[1]);
    assert.equal(
      series("tcp_echo_connections_pending", `port="${s.tlsPort}",stage="tls_handshake"`),
      share,
    );
    assert.equal(series("tcp_echo_connections_active", `port="${s.port}"`), 1);
    assert.equal(series("tcp_echo_connections_active", `port="${s.tlsPort}"`), 0);
    assert.equal(
      series("tcp_echo_connections_rejected_total", `port="${s.tlsPort}",reason="max_connections"`),
      0,
    );
    // A real TLS client waits behind the silent ones, and is served once they are gone.
    const tlsClient = s.connectTls({ insecure: true });
    for (const conn of silent.splice(0)) conn.close();
    const stream = await within(5_000, "the TLS client", tlsClient);
    try {
      assert.equal(decoder.decode(await readExactly(stream, banner.length)), banner);
    } finally {
      stream.close();
    }
    assert.deepEqual(s.server.stats.forPort(s.tlsPort).pending, {
      proxy_header: 0,
      tls_handshake: 0,
    });
  } finally {
    silent.forEach((conn) => conn.close());
  }
});

Deno.test("SHOW_CONNECTION_ID: the banner names the id of the connection's records", async () => {
  await using s = await startTestServer({ NODE_NAME: "n", SHOW_CONNECTION_ID: "true" });
  using conn = await s.connect();
  const id = await s.connectionId(0);
  const banner = `Welcome, you are connected to node n.\nConnection id ${id}.\n`;
  assert.equal(decoder.decode(await readExactly(conn, banner.length)), banner);
  assert.equal(decoder.decode(await roundTrip(conn, encoder.encode("x"))), "x");
});

Deno.test("DRAIN_NOTICE: a connection the shutdown closes is told so in one line, then closed", async (t) => {
  for (const [notice, expected] of [["true", drainNotice(300)], ["false", ""]]) {
    await t.step(`DRAIN_NOTICE=${notice}`, async () => {
      const s = await startTestServer({ DRAIN_NOTICE: notice, SHUTDOWN_GRACE: "300ms" });
      try {
        using conn = await s.connect();
        const id = await s.connectionId(0);
        assert.equal(decoder.decode(await roundTrip(conn, encoder.encode("held"))), "held");
        const stopping = s.server.shutdown({ graceMs: 300 });
        assert.equal(decoder.decode(await readToEnd(conn)), expected);
        await stopping;
        const closed = s.logs.records.find(isClosedRecord(id))!;
        assert.equal(closed.properties.reason, "shutdown");
        assert.equal(closed.properties.bytes_out, 4 + encoder.encode(expected).length);
      } finally {
        await s[Symbol.asyncDispose]();
      }
    });
  }
  assert.equal(
    drainNotice(10_000),
    "tcp-echo: closing this connection: the server is shutting down and its grace of 10s is over\n",
  );
});

Deno.test("IDLE_TIMEOUT closes a silent connection with reason idle, not a talking one", async () => {
  await using s = await startTestServer({ IDLE_TIMEOUT: "600ms" });
  const silent = await s.connect();
  const silentId = await s.connectionId(0);
  using talking = await s.connect();
  const talkingId = await s.connectionId(1);
  const silentClosed = s.logs.waitFor(isClosedRecord(silentId), "silent closed");
  // The talking client sends every 50 ms (a twelfth of the timeout) until the silent one is closed.
  let rounds = 0;
  let closed = false;
  silentClosed.then(() => closed = true, () => {});
  while (!closed && rounds < 100) {
    assert.equal(decoder.decode(await roundTrip(talking, encoder.encode("."))), ".");
    rounds++;
    await new Promise<void>((resolve) => setTimeout(resolve, 50));
  }
  const record = await silentClosed;
  assert.equal(record.properties.reason, "idle");
  assert.ok(
    Number(record.properties.duration_ms) >= 600,
    `closed after ${record.properties.duration_ms} ms`,
  );
  assert.ok(rounds >= 3, `the talking connection outlived the timeout (${rounds} rounds)`);
  assert.equal((await readToEnd(silent)).length, 0);
  silent.close();
  assert.equal(s.logs.records.find(isClosedRecord(talkingId)), undefined);
  assert.equal(decoder.decode(await roundTrip(talking, encoder.encode("alive"))), "alive");
  assert.equal(s.server.stats.forPort(s.port).closed.idle, 1);
});

Deno.test("MAX_CONNECTIONS: a burst of refusals is reported in full, at most once a second", async () => {
  await using s = await startTestServer({ MAX_CONNECTIONS: "1", LOG_LEVEL: "warn" });
  using _held = await s.connect();
  await within(
    2_000,
    "held",
    (async () => {
      while (s.server.activeConnections < 1) await new Promise((r) => setTimeout(r, 5));
    })(),
  );
  const burst = 300;
  const refused = await Promise.all(Array.from({ length: burst }, () => s.connect()));
  await Promise.all(refused.map((conn) => readToEnd(conn).finally(() => conn.close())));
  const refusedTotal = () =>
    s.logs.records.filter((r) => r.rawMessage === "Connection limit reached, refusing connections.")
      .reduce((sum, r) => sum + Number(r.properties.refused), 0);
  const first = s.logs.records.find((r) => r.level === "warning")!;
  await s.logs.waitFor(() => refusedTotal() === burst, "every refusal reported", 3_000);
  const reports = s.logs.records.filter((r) => r.level === "warning");
  assert.ok(reports.length <= 3, `${reports.length} reports`);
  for (let i = 1; i < reports.length; i++) {
    assert.ok(reports[i].timestamp - reports[i - 1].timestamp >= 990, "at most once a second");
  }
  assert.ok(reports.at(-1)!.timestamp - first.timestamp < 2_100, "reported within the second");
  assert.equal(s.server.stats.forPort(s.port).rejected.max_connections, burst);
});

Deno.test("IDLE_TIMEOUT counts bytes moved either way: a slow reader of a long echo is not idle", async () => {
  await using s = await startTestServer({ IDLE_TIMEOUT: "300ms", LOG_DATA_BYTES: "0" });
  using conn = await s.connect();
  const payload = randomBytes(12 * 1024 * 1024);
  const sending = writeAll(conn, payload).then(() => undefined, (error) => error);
  // Reads 2 MB/s: the server spends far longer than the timeout blocked in writes.
  const echoed = new Uint8Array(payload.length);
  let filled = 0;
  const started = performance.now();
  while (filled < payload.length) {
    const n = await within(2_000, "slow read", conn.read(echoed.subarray(filled, filled + 20_000)));
    if (n === null) break;
    filled += n;
    const due = started + filled / 2_000;
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, due - performance.now())));
  }
  assert.equal(await sending, undefined, "the server read everything");
  assert.equal(filled, payload.length, "every byte came back");
  assert.ok(Buffer.compare(echoed, payload) === 0);
  assert.ok(performance.now() - started > 3_000, "the read took many timeouts");
  // Once every echo is handed to the kernel, the server waits for the client: that is idle.
  const closed = s.logs.records.find((r) => r.rawMessage === "TCP connection closed.");
  if (closed) {
    assert.equal(closed.properties.reason, "idle");
    assert.equal(closed.properties.bytes_out, payload.length, "not before the last echo");
  }
});

Deno.test("drain on SIGTERM: readyz 503, accepting during DRAIN_DELAY, grace, exit 0", async () => {
  const adminPort = freePort();
  await using p = await spawnServer({
    ADMIN_PORT: String(adminPort),
    DRAIN_DELAY: "1500ms",
    SHUTDOWN_GRACE: "5s",
    NODE_NAME: "d",
  });
  await p.stdout.waitFor((l) => l.includes("Admin HTTP on port"), "admin listening");
  const admin: Deno.NetAddr = { transport: "tcp", hostname: "127.0.0.1", port: adminPort };
  assert.equal((await adminRequest(admin, "/readyz")).status, 200);
  const banner = "Welcome, you are connected to node d.\n";
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: p.port });
  assert.equal(decoder.decode(await readExactly(conn, banner.length)), banner);

  p.child.kill("SIGTERM");
  await p.stdout.waitFor((l) => l.includes("Draining: readiness fails, still accepting."), "drain");
  assert.deepEqual(await adminRequest(admin, "/readyz"), {
    status: 503,
    type: "text/plain; charset=utf-8",
    body: "not ready\n",
  });
  assert.equal((await adminRequest(admin, "/healthz")).status, 200);
  {
    using during = await Deno.connect({ hostname: "127.0.0.1", port: p.port });
    assert.equal(
      decoder.decode(await readExactly(during, banner.length)),
      banner,
      "still accepting",
    );
  }
  await p.stdout.waitFor((l) => l.includes("Shutting down: stopped accepting."), "stopped");
  await assert.rejects(
    Deno.connect({ hostname: "127.0.0.1", port: p.port }),
    Deno.errors.ConnectionRefused,
  );
  assert.equal(decoder.decode(await roundTrip(conn, encoder.encode("grace"))), "grace");
  await conn.closeWrite();
  await readToEnd(conn);
  assert.equal((await within(5_000, "exit", p.child.status)).code, 0);
  const lines = await p.stdout.rest();
  const phases = lines.map((l) => withoutTimestamp(l).replace(/ \S+=.*/, ""))
    .filter((l) => /^(Received SIG|Draining|Shutting down|Shutdown)/.test(l));
  assert.deepEqual(phases, [
    "Received SIGTERM, shutting down.",
    "Draining: readiness fails, still accepting.",
    "Shutting down: stopped accepting.",
    "Shutdown complete.",
  ]);
  assert.ok(lines.some((l) => l.includes("stopped accepting. open_connections=1 grace_ms=5000")));
});

// ---------------------------------------------------------------------------
// Network testing: client address, banner modes, PROXY protocol, line mode, faults
// ---------------------------------------------------------------------------

Deno.test("SHOW_CLIENT_ADDRESS adds 'Your address is IP:PORT.' after the other lines", async () => {
  await using s = await startTestServer({ NODE_NAME: "n", SHOW_CLIENT_ADDRESS: "true" });
  using conn = await s.connect();
  const expected = "Welcome, you are connected to node n.\n" +
    `Your address is 127.0.0.1:${conn.localAddr.port}.\n`;
  assert.equal(decoder.decode(await readExactly(conn, expected.length)), expected);
  assert.equal(decoder.decode(await roundTrip(conn, encoder.encode("x"))), "x");
});

Deno.test("BANNER_MODE: connect, first-data and off", async (t) => {
  const banner = "Welcome, you are connected to node b.\n";
  /** What a client that sends `data` (maybe nothing) and half-closes receives. */
  async function session(mode: string, data: string): Promise<string> {
    await using s = await startTestServer({ NODE_NAME: "b", BANNER_MODE: mode });
    using conn = await s.connect();
    await writeAll(conn, encoder.encode(data));
    await conn.closeWrite();
    return decoder.decode(await readToEnd(conn));
  }
  await t.step("connect: on accept, even to a client that never speaks", async () => {
    assert.equal(await session("connect", ""), banner);
    assert.equal(await session("connect", "hi"), banner + "hi");
  });
  await t.step("first-data: only just before the first echo", async () => {
    assert.equal(await session("first-data", ""), "");
    assert.equal(await session("first-data", "hi"), banner + "hi");
  });
  await t.step("off: never", async () => {
    assert.equal(await session("off", "hi"), "hi");
  });
});

Deno.test("multiple ports: one listener each, and every connection record names its port", async () => {
  await using s = await startTestServer({ ADMIN_PORT: "any" }, { ports: [0, 0] });
  const [a, b] = s.server.addresses.map((address) => address.port);
  assert.notEqual(a, b);
  for (const port of [a, b, b]) {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
    assert.equal(decoder.decode(await roundTrip(conn, encoder.encode(`to ${port}`))), `to ${port}`);
  }
  const opens = s.logs.records.filter(isOpen).map((r) => r.properties.port);
  assert.deepEqual(opens, [a, b, b]);
  for (const open of s.logs.records.filter(isOpen)) {
    const closed = await s.logs.waitFor(isClosedRecord(String(open.properties.id)), "closed");
    assert.equal(closed.properties.port, open.properties.port);
  }
  assert.deepEqual(
    Array.from(s.server.stats.entries(), ([port, stats]) => [port, stats.accepted]),
    [[a, 1], [b, 2]],
  );
  const listening = s.logs.records.filter((r) => r.rawMessage === "Listening on TCP port {port}");
  assert.deepEqual(listening.map((r) => r.properties.port), [a, b]);
});

Deno.test("ECHO_PREFIX line mode: CRLF, empty lines, partial last line, over-long lines", async (t) => {
  await t.step("over the wire, with a partial last line at half-close", async () => {
    await using s = await startTestServer({ ECHO_PREFIX: "one" });
    using conn = await s.connect();
    assert.equal(
      decoder.decode(await roundTrip(conn, encoder.encode("hello\n"))),
      "one hello\n".slice(0, 6),
    );
    assert.equal(decoder.decode(await readExactly(conn, 4)), "llo\n");
    await writeAll(conn, encoder.encode("a\r\n\nb\nlast"));
    await conn.closeWrite();
    assert.equal(decoder.decode(await readToEnd(conn)), "one a\r\none \none b\none last\n");
  });

  await t.step(
    "lines of 64 KiB and longer come back as Istio answers them, one prefix each",
    async () => {
      await using s = await startTestServer({ ECHO_PREFIX: "p", LOG_DATA_BYTES: "0" });
      const lines = [
        "x".repeat(MAX_LINE_BYTES + 10) + "\n",
        "y".repeat(MAX_LINE_BYTES) + "\n",
        "z".repeat(2 * MAX_LINE_BYTES) + "\n",
        "w".repeat(MAX_LINE_BYTES - 1) + "\r\n",
        "v".repeat(MAX_LINE_BYTES - 2) + "\r\n",
      ];
      for (const line of lines) {
        using conn = await s.connect();
        await writeAll(conn, encoder.encode(line + "next\n"));
        await conn.closeWrite();
        assert.equal(decoder.decode(await readToEnd(conn)), `p ${line}p next\n`, line.slice(-3));
      }
    },
  );

  await t.step("an empty prefix and a prefix with a tab, as Istio takes them", async () => {
    for (const prefix of ["", "a\tb"]) {
      await using s = await startTestServer({ ECHO_PREFIX: prefix });
      using conn = await s.connect();
      await writeAll(conn, encoder.encode("x\n"));
      await conn.closeWrite();
      assert.equal(decoder.decode(await readToEnd(conn)), `${prefix} x\n`);
    }
  });
});

Deno.test("faults: ECHO_DELAY delays each echo, CLOSE_AFTER_BYTES closes with reason fault", async (t) => {
  await t.step("ECHO_DELAY", async () => {
    await using s = await startTestServer({ ECHO_DELAY: "200ms" });
    assert.equal(
      withoutTimestamp(formatTextRecord(s.logs.records.find((r) => r.level === "warning")!)),
      "Fault injection active. echo_delay_ms=200 level=warn\n",
    );
    using conn = await s.connect();
    for (const word of ["slow", "again"]) {
      const started = performance.now();
      assert.equal(decoder.decode(await roundTrip(conn, encoder.encode(word))), word);
      assert.ok(performance.now() - started >= 195, "the echo waited");
    }
  });

  await t.step("CLOSE_AFTER_BYTES", async () => {
    await using s = await startTestServer({ CLOSE_AFTER_BYTES: "5", NODE_NAME: "f" });
    using conn = await s.connect();
    const banner = "Welcome, you are connected to node f.\n";
    await writeAll(conn, encoder.encode("hello world"));
    assert.equal(decoder.decode(await readToEnd(conn)), banner + "hello");
    const closed = await s.logs.waitFor(isClosedRecord(await s.connectionId(0)), "closed");
    assert.equal(closed.properties.reason, "fault");
    assert.equal(s.server.stats.forPort(s.port).closed.fault, 1);
  });
});

/** A v2 PROXY header for a TCP over IPv4 connection from `source` to `destination`. */
function proxyV2(source: [number[], number], destination: [number[], number], command = 0x21) {
  return Uint8Array.from([
    ...V2_SIGNATURE,
    command,
    0x11,
    0,
    12,
    ...source[0],
    ...destination[0],
    source[1] >> 8,
    source[1] & 0xff,
    destination[1] >> 8,
    destination[1] & 0xff,
  ]);
}

Deno.test("PROXY protocol: accepted headers set the client address", async (t) => {
  const expectClient = async (
    env: Environment,
    header: Uint8Array,
    client: (conn: Deno.TcpConn) => string,
    peerLogged: boolean,
  ) => {
    await using s = await startTestServer({ ...env, SHOW_CLIENT_ADDRESS: "true" });
    using conn = await s.connect();
    await writeAll(conn, concatBytes([header, encoder.encode("after header")]));
    const line = `Your address is ${client(conn)}.\n`;
    assert.equal(decoder.decode(await readExactly(conn, line.length)), line);
    assert.equal(decoder.decode(await readExactly(conn, 12)), "after header");
    const open = await s.logs.waitFor(isOpen, "open");
    assert.equal(open.properties.client, client(conn));
    assert.equal(open.properties.peer, peerLogged ? formatAddress(conn.localAddr) : undefined);
    assert.equal(s.server.stats.forPort(s.port).accepted, 1);
  };
  await t.step("v1 TCP4", () =>
    expectClient(
      { PROXY_PROTOCOL: "v1" },
      encoder.encode("PROXY TCP4 203.0.113.7 10.0.0.1 53422 3333\r\n"),
      () => "203.0.113.7:53422",
      true,
    ));
  await t.step("v1 TCP6", () =>
    expectClient(
      { PROXY_PROTOCOL: "any" },
      encoder.encode("PROXY TCP6 2001:db8::7 2001:db8::1 443 3333\r\n"),
      () => "[2001:db8::7]:443",
      true,
    ));
  await t.step("v1 UNKNOWN uses the socket's address", () =>
    expectClient(
      { PROXY_PROTOCOL: "v1" },
      encoder.encode("PROXY UNKNOWN\r\n"),
      (conn) => formatAddress(conn.localAddr),
      false,
    ));
  await t.step("v2 PROXY", () =>
    expectClient(
      { PROXY_PROTOCOL: "v2" },
      proxyV2([[198, 51, 100, 9], 40000], [[10, 0, 0, 1], 3333]),
      () => "198.51.100.9:40000",
      true,
    ));
  await t.step("v2 LOCAL uses the socket's address", () =>
    expectClient(
      { PROXY_PROTOCOL: "v2" },
      proxyV2([[198, 51, 100, 9], 40000], [[10, 0, 0, 1], 3333], 0x20),
      (conn) => formatAddress(conn.localAddr),
      false,
    ));
  await t.step("optional, with a header", () =>
    expectClient(
      { PROXY_PROTOCOL: "optional" },
      encoder.encode("PROXY TCP4 203.0.113.7 10.0.0.1 1 2\r\n"),
      () => "203.0.113.7:1",
      true,
    ));
  await t.step("optional, without a header: the bytes are data", async () => {
    await using s = await startTestServer({ PROXY_PROTOCOL: "optional" });
    using conn = await s.connect();
    assert.equal(decoder.decode(await roundTrip(conn, encoder.encode("plain data"))), "plain data");
  });
  await t.step("optional, a silent client gets its banner after the header wait", async () => {
    await using s = await startTestServer(
      { PROXY_PROTOCOL: "optional", NODE_NAME: "o" },
      { proxyHeaderTimeoutMs: 100 },
    );
    using conn = await s.connect();
    const banner = "Welcome, you are connected to node o.\n";
    assert.equal(decoder.decode(await readExactly(conn, banner.length)), banner);
    assert.equal(decoder.decode(await roundTrip(conn, encoder.encode("then data"))), "then data");
  });
  for (const start of ["\r\n", "\r", "P", "PROXY"]) {
    await t.step(
      `optional, ${JSON.stringify(start)} that stops short of a header is data`,
      async () => {
        await using s = await startTestServer(
          { PROXY_PROTOCOL: "optional", NODE_NAME: "o" },
          { proxyHeaderTimeoutMs: 100 },
        );
        using conn = await s.connect();
        await writeAll(conn, encoder.encode(start));
        const banner = "Welcome, you are connected to node o.\n";
        const expected = banner + start;
        assert.equal(decoder.decode(await readExactly(conn, expected.length)), expected);
        assert.equal(decoder.decode(await roundTrip(conn, encoder.encode("more"))), "more");
        const id = await s.connectionId(0);
        await conn.closeWrite();
        await readToEnd(conn);
        const closed = await s.logs.waitFor(isClosedRecord(id), "closed");
        assert.equal(closed.properties.reason, "eof");
        assert.equal(closed.properties.bytes_in, start.length + 4);
        assert.equal(s.server.stats.forPort(s.port).rejected.proxy_timeout, 0);
      },
    );
  }
  await t.step("trusted peer", () =>
    expectClient(
      { PROXY_PROTOCOL: "v1", PROXY_PROTOCOL_TRUSTED: "10.0.0.0/8,127.0.0.0/8" },
      encoder.encode("PROXY TCP4 203.0.113.7 10.0.0.1 53422 3333\r\n"),
      () => "203.0.113.7:53422",
      true,
    ));
});

Deno.test("PROXY protocol: every bad header closes the connection, is logged and counted", async (t) => {
  const v2Valid = proxyV2([[198, 51, 100, 9], 40000], [[10, 0, 0, 1], 3333]);
  const withByte = (bytes: Uint8Array, index: number, value: number) => {
    const copy = bytes.slice();
    copy[index] = value;
    return copy;
  };
  const cases: {
    name: string;
    env: Environment;
    send: Uint8Array;
    halfClose?: boolean;
    reason: string;
    detail: string;
  }[] = [
    {
      name: "bad signature (no header)",
      env: { PROXY_PROTOCOL: "v2" },
      send: withByte(v2Valid, 5, 0),
      reason: "proxy_missing",
      detail: "no PROXY header",
    },
    {
      name: "wrong version",
      env: { PROXY_PROTOCOL: "v2" },
      send: withByte(v2Valid, 12, 0x11),
      reason: "proxy_invalid",
      detail: "v2 header has version 1",
    },
    {
      name: "v2 where v1 is required",
      env: { PROXY_PROTOCOL: "v1" },
      send: v2Valid,
      reason: "proxy_invalid",
      detail: "v2 header where only v1 is accepted",
    },
    {
      name: "truncated",
      env: { PROXY_PROTOCOL: "any" },
      send: v2Valid.subarray(0, 20),
      halfClose: true,
      reason: "proxy_missing",
      detail: "connection ended before a PROXY header",
    },
    {
      name: "oversized v1",
      env: { PROXY_PROTOCOL: "v1" },
      send: encoder.encode(`PROXY TCP4 ${"1".repeat(200)}`),
      reason: "proxy_invalid",
      detail: "v1 header longer than 107 bytes",
    },
    {
      name: "oversized v2",
      env: { PROXY_PROTOCOL: "v2" },
      send: Uint8Array.from([...v2Valid.subarray(0, 14), 0x20, 0x00]),
      reason: "proxy_invalid",
      detail: "v2 header of 8208 bytes is over 4096",
    },
    {
      name: "unknown family",
      env: { PROXY_PROTOCOL: "v2" },
      send: withByte(v2Valid, 13, 0x51),
      reason: "proxy_invalid",
      detail: "v2 header has unknown address family 5",
    },
    {
      name: "malformed v1",
      env: { PROXY_PROTOCOL: "v1" },
      send: encoder.encode("PROXY TCP4 1.2.3 10.0.0.1 1 2\r\n"),
      reason: "proxy_invalid",
      detail: "v1 header has a bad TCP4 address",
    },
    {
      name: "untrusted peer (required header)",
      env: { PROXY_PROTOCOL: "v1", PROXY_PROTOCOL_TRUSTED: "10.0.0.0/8" },
      send: encoder.encode("PROXY TCP4 203.0.113.7 10.0.0.1 1 2\r\n"),
      reason: "proxy_untrusted",
      detail: "peer not in PROXY_PROTOCOL_TRUSTED",
    },
    {
      name: "untrusted peer (optional header)",
      env: { PROXY_PROTOCOL: "optional", PROXY_PROTOCOL_TRUSTED: "10.0.0.0/8" },
      send: encoder.encode("PROXY TCP4 203.0.113.7 10.0.0.1 1 2\r\n"),
      reason: "proxy_untrusted",
      detail: "PROXY header from an untrusted peer",
    },
    {
      name: "timeout",
      env: { PROXY_PROTOCOL: "v1" },
      send: encoder.encode("PROXY TCP4 "),
      reason: "proxy_timeout",
      detail: "no complete PROXY header in 200 ms",
    },
  ];
  for (const { name, env, send, halfClose, reason, detail } of cases) {
    await t.step(name, async () => {
      await using s = await startTestServer(
        { ...env, NODE_NAME: "never shown" },
        { proxyHeaderTimeoutMs: reason === "proxy_timeout" ? 200 : 5_000 },
      );
      using conn = await s.connect();
      await writeAll(conn, send).catch(() => {}); // The server may close first.
      if (halfClose) await conn.closeWrite();
      assert.equal((await readToEnd(conn).catch(() => new Uint8Array())).length, 0, "no banner");
      const refused = await s.logs.waitFor(
        (r) => r.rawMessage === "Connection refused: {detail}",
        "refusal logged",
      );
      assert.equal(
        withoutTimestamp(formatTextRecord(refused)),
        `${refused.properties.id} - Connection refused: ${detail} peer=${
          formatAddress(conn.localAddr)
        } port=${s.port} reason=${reason}\n`,
      );
      assert.equal(s.server.stats.forPort(s.port).rejected[reason as RejectReason], 1);
      assert.equal(s.server.stats.forPort(s.port).accepted, 0, "not counted as an echo connection");
    });
  }
  await t.step("the server goes on serving after bad headers", async () => {
    await using s = await startTestServer({ PROXY_PROTOCOL: "v1" });
    for (let i = 0; i < 3; i++) {
      using bad = await s.connect();
      await writeAll(bad, encoder.encode("GARBAGE\r\n")).catch(() => {});
      await readToEnd(bad).catch(() => {});
    }
    using good = await s.connect();
    await writeAll(good, encoder.encode("PROXY UNKNOWN\r\nok"));
    assert.equal(decoder.decode(await readExactly(good, 2)), "ok");
    assert.equal(s.server.stats.forPort(s.port).rejected.proxy_missing, 3);
  });
});

Deno.test({
  name: "PROXY protocol behind a real HAProxy: send-proxy and send-proxy-v2",
  ignore: await ignoreWithout("haproxy", "the HAProxy test"),
  async fn(t) {
    for (const [mode, option] of [["v1", "send-proxy"], ["v2", "send-proxy-v2"]]) {
      await t.step(option, async () => {
        await using s = await startTestServer({
          PROXY_PROTOCOL: mode,
          SHOW_CLIENT_ADDRESS: "true",
          NODE_NAME: "behind-haproxy",
        });
        await using haproxy = await startHaproxy([
          `  server tcp_echo 127.0.0.1:${s.port} ${option}`,
        ]);
        using conn = await Deno.connect({ hostname: "127.0.0.1", port: haproxy.port });
        const me = `127.0.0.1:${conn.localAddr.port}`;
        const banner = "Welcome, you are connected to node behind-haproxy.\n" +
          `Your address is ${me}.\n`;
        assert.equal(decoder.decode(await readExactly(conn, banner.length)), banner);
        const payload = randomBytes(256 * 1024);
        assert.deepEqual(await roundTrip(conn, payload), payload);
        const open = await s.logs.waitFor(
          (r) => isOpen(r) && r.properties.client === me,
          "open record with the client's own address",
        );
        assert.match(String(open.properties.peer), /^127\.0\.0\.1:\d+$/);
        assert.notEqual(open.properties.peer, me, "peer is HAProxy's side");
        // (waitForPort's probe may be refused for closing before its header: not checked.)
        assert.equal(s.server.stats.forPort(s.port).rejected.proxy_invalid, 0);
      });
    }
  },
});

/** A v2 PROXY header from 198.51.100.9:40000 to 10.0.0.1:3333 with `tlvs` (type, text value). */
function proxyV2WithTlvs(tlvs: [number, string][]): Uint8Array {
  const base = proxyV2([[198, 51, 100, 9], 40000], [[10, 0, 0, 1], 3333]);
  const extra = tlvs.flatMap(([type, value]) => {
    const bytes = encoder.encode(value);
    return [type, bytes.length >> 8, bytes.length & 0xff, ...bytes];
  });
  const header = concatBytes([base, Uint8Array.from(extra)]);
  const length = header.length - 16;
  header[14] = length >> 8;
  header[15] = length & 0xff;
  return header;
}

Deno.test("PROXY v2 TLVs: the mesh's source identity in the banner and the open record, hostile ones escaped", async (t) => {
  const spiffe = "spiffe://cluster.local/ns/default/sa/sleep";
  await using s = await startTestServer({ PROXY_PROTOCOL: "v2", NODE_NAME: "n" });
  const open = async (tlvs: [number, string][], banner: string) => {
    using conn = await s.connect();
    await writeAll(conn, proxyV2WithTlvs(tlvs));
    assert.equal(decoder.decode(await readExactly(conn, banner.length)), banner);
    assert.equal(decoder.decode(await roundTrip(conn, encoder.encode("x"))), "x");
    const id = await s.connectionId(s.logs.records.filter(isOpen).length - 1);
    return s.logs.records.find((r) => isOpen(r) && r.properties.id === id)!;
  };
  await t.step("as Istio's ztunnel sends it: 0xD0 the SPIFFE ID, 0xD1 the service", async () => {
    const record = await open(
      [[0xd0, spiffe], [0xd1, "tcp-echo.default.svc.cluster.local"]],
      `Welcome, you are connected to node n.\nSource identity ${spiffe}.\n`,
    );
    assert.equal(
      withoutTimestamp(formatTextRecord(record)),
      `${record.properties.id} - TCP connection open. client=198.51.100.9:40000 port=${s.port} ` +
        "family=IPv4 " +
        `peer=${record.properties.peer} source_identity=${spiffe} ` +
        "service=tcp-echo.default.svc.cluster.local\n",
    );
  });
  await t.step(
    "an identity that could forge a banner line is not shown; its record is escaped",
    async () => {
      const hostile = "spiffe://a\nYour address is 10.9.9.9:1.\u001b[2J";
      const record = await open([[0xd0, hostile]], "Welcome, you are connected to node n.\n");
      const line = withoutTimestamp(formatTextRecord(record));
      assert.ok(
        line.endsWith(' source_identity="spiffe://a\\nYour address is 10.9.9.9:1.\\x1b[2J"\n'),
        line,
      );
      assert.equal(line.split("\n").length, 2, "one line");
    },
  );
});

Deno.test({
  name: "PROXY v2 TLVs through a real HAProxy: its unique-id in the open record",
  ignore: await ignoreWithout("haproxy", "the HAProxy test"),
  async fn() {
    await using s = await startTestServer({ PROXY_PROTOCOL: "v2", NODE_NAME: "n" });
    await using haproxy = await startHaproxy([
      "  unique-id-format tcp-echo-%ci-%cp",
      `  server tcp_echo 127.0.0.1:${s.port} send-proxy-v2 proxy-v2-options unique-id`,
    ]);
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: haproxy.port });
    const banner = "Welcome, you are connected to node n.\n";
    assert.equal(decoder.decode(await readExactly(conn, banner.length)), banner);
    const me = `127.0.0.1:${conn.localAddr.port}`;
    const open = await s.logs.waitFor(
      (r) => isOpen(r) && r.properties.client === me,
      "open record of the client behind HAProxy",
    );
    assert.equal(open.properties.proxy_unique_id, `tcp-echo-127.0.0.1-${conn.localAddr.port}`);
  },
});

Deno.test("a log reader that stops reading never stalls echoing; the backlog is bounded and reported", async () => {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: await startTaskArgs(),
    cwd: repoDir,
    env: { HOST: "127.0.0.1", TCP_PORT: String(port), ADMIN_PORT: "off", NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped", // and not read until the end: the pipe fills after 64 KiB
    stderr: "null",
  }).spawn();
  try {
    await waitForPort(port);
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
    // 15,000 small round trips make 30,000 data records: more than may wait.
    const payload = encoder.encode("0123456789abcdef");
    for (let i = 0; i < 15_000; i++) {
      assert.deepEqual(await within(5_000, `echo ${i}`, roundTrip(conn, payload)), payload);
    }
  } finally {
    child.kill("SIGTERM");
  }
  const log = await new Response(child.stdout).text();
  assert.equal((await child.status).code, 0);
  const dropped = /Log output fell behind; records dropped\. dropped_records=(\d+) level=warn\n/
    .exec(log);
  assert.ok(dropped && Number(dropped[1]) > 0, "the drop is reported");
  const kept = log.match(/Received Raw Data/g)?.length ?? 0;
  assert.ok(kept > 5_000 && kept < 15_000, `${kept} raw data records kept`);
  // Connection and lifecycle records are not dropped for data records.
  assert.match(log, /TCP connection closed\. reason=eof bytes_in=240000 /);
  assert.match(log, /Shutdown complete\. connections_served=\d+\n$/);
});
