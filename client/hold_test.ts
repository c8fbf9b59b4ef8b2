import assert from "node:assert/strict";
import { closeQuietly } from "../src/wire.ts";
import {
  ignoreWithout,
  LineReader,
  makeTestPki,
  repoDir,
  type ServerProcess,
  spawnServer,
  startHaproxy,
  startTestServer,
  taskArgs,
  within,
  writeAll,
} from "../testing/support.ts";
import type { HeldRecord, HoldReport } from "./hold_record.ts";

/** A hold run as `deno task client -- HOST:PORT hold ...` runs it; dispose of it to kill it. */
interface HoldProcess extends AsyncDisposable {
  /** Waits for the line that says every first connection opened (or failed to). */
  allOpen(): Promise<string>;
  /** Sends the client a signal, as Ctrl-C or `kill` does. */
  signal(signal: Deno.Signal): void;
  /** Waits (30 s at most) for the exit; its code, stdout and stderr lines. */
  finish(): Promise<{ code: number; stdout: string; stderr: string[] }>;
}

async function startHold(args: readonly string[]): Promise<HoldProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [...await taskArgs("client"), ...args],
    cwd: repoDir,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = new Response(child.stdout).text();
  const stderr = new LineReader(child.stderr);
  return {
    allOpen: () =>
      stderr.waitFor(
        (line) => /^hold: \d+ of \d+ connections opened in /.test(line),
        "the line that every connection opened",
      ),
    signal: (signal) => child.kill(signal),
    async finish() {
      const [status, out] = await within(
        30_000,
        "the hold to exit",
        Promise.all([child.status, stdout]),
      );
      return { code: status.code, stdout: out, stderr: await stderr.rest() };
    },
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch {
        // It has exited.
      }
      await child.status;
      await stdout.catch(() => "");
      await stderr.rest().catch(() => []);
    },
  };
}

/** Waits for a spawned server's "Listening" record. */
async function listening(server: ServerProcess): Promise<void> {
  await server.stdout.waitFor((line) => line.includes("Listening on"), "the server listening");
}

/** The lines of a hold report's timeline. */
function timelineOf(stdout: string): string[] {
  const lines = stdout.split("\n");
  const start = lines.indexOf("timeline (seconds since the start)");
  assert.ok(start > 0, stdout);
  const end = lines.indexOf("", start);
  return lines.slice(start + 1, end < 0 ? undefined : end);
}

/** When a report's line says the hold started, as epoch milliseconds. */
function startedAt(stdout: string): number {
  const started = /\nstarted (\S+), ran /.exec(stdout);
  assert.ok(started, stdout);
  return Date.parse(started[1]);
}

Deno.test("hold: a server's SIGTERM ends each held connection after its grace, drain with DRAIN_NOTICE, fin without", async (t) => {
  const variants: {
    name: string;
    env: Record<string, string>;
    fin: number;
    drain: number;
    kind: string;
    detail: string;
  }[] = [
    {
      name: "DRAIN_NOTICE=true: drain, with the notice",
      env: { DRAIN_NOTICE: "true" },
      fin: 0,
      drain: 50,
      kind: "drain",
      detail: '"tcp-echo: closing this connection: the server is shutting down and its grace of ' +
        '1s is over"',
    },
    {
      name: "without: fin",
      env: {},
      fin: 50,
      drain: 0,
      kind: "fin",
      detail: '"the peer closed the connection (EOF)"',
    },
  ];
  for (const variant of variants) {
    await t.step(variant.name, async () => {
      await using server = await spawnServer({
        SHUTDOWN_GRACE: "1s",
        SERVICE_VERSION: "v1",
        POD_NAME: "pod-a",
        NODE_NAME: "node-1",
        LOG_DATA_BYTES: "0",
        ...variant.env,
      });
      await listening(server);
      // A heartbeat each minute: none but the greeting is under way when the grace ends (one
      // the server has not read makes its kernel answer the close with a reset; one being
      // echoed keeps the notice back), so every connection ends one way.
      await using hold = await startHold([
        `127.0.0.1:${server.port}`,
        "hold",
        "--connections",
        "50",
        "--interval",
        "60s",
      ]);
      await hold.allOpen();
      const sigtermAt = Date.now();
      server.child.kill("SIGTERM");
      const { code, stdout } = await hold.finish();
      assert.equal(code, 1, `connections were lost: exit 1\n${stdout}`);
      assert.match(stdout, /, ended: every connection was lost;/);
      assert.match(
        stdout,
        /\nbackend +opened +open +fin +rst +timeout +mismatch +drain +error +worst stall\n/,
      );
      const row = new RegExp(
        `\n {2}version v1, pod pod-a, node node-1 +50 +0 +${variant.fin} +0 +0 +0 ` +
          `+${variant.drain} +0 +-\n`,
      );
      assert.match(stdout, row);
      const endings = timelineOf(stdout).filter((line) => line.includes(` ${variant.kind} `));
      assert.equal(endings.length, 1, stdout);
      const ending = new RegExp(
        `^ {2}(\\d+\\.\\d{3})(?:–(\\d+\\.\\d{3}))? +${variant.kind} +50 × version v1, ` +
          `pod pod-a, node node-1 +after [\\d.–]+ m?s open: (.+)$`,
      ).exec(endings[0]);
      assert.ok(ending, endings[0]);
      assert.equal(ending[3], variant.detail);
      const graceOverAt = sigtermAt + 1_000 - startedAt(stdout);
      const first = Number(ending[1]) * 1_000;
      const last = Number(ending[2] ?? ending[1]) * 1_000;
      // A millisecond for the report's rounding of the start and of each time.
      assert.ok(
        first >= graceOverAt - 2,
        `ended ${first} ms, the grace was over at ${graceOverAt}`,
      );
      assert.ok(last < graceOverAt + 1_000, `ended ${last} ms, long after the grace`);
    });
  }
});

Deno.test({
  name:
    "hold --reconnect through HAProxy: a backend SIGKILLed, its connections end with fin and are replaced on the other",
  ignore: await ignoreWithout("haproxy", "the HAProxy failover hold test"),
  async fn() {
    await using v1 = await spawnServer({
      SERVICE_VERSION: "v1",
      POD_NAME: "pod-a",
      LOG_DATA_BYTES: "0",
    });
    await using v2 = await spawnServer({
      SERVICE_VERSION: "v2",
      POD_NAME: "pod-b",
      LOG_DATA_BYTES: "0",
    });
    await listening(v1);
    await listening(v2);
    // Without redispatch, HAProxy holds a replacement sent to the dead server while it retries
    // (a second per retry): the gap would be HAProxy's, not the failover's.
    await using haproxy = await startHaproxy([
      "  balance roundrobin",
      "  option redispatch",
      "  retries 1",
      `  server v1 127.0.0.1:${v1.port}`,
      `  server v2 127.0.0.1:${v2.port}`,
    ]);
    // No heartbeat before the end (the first is due at 60 s / 20): nothing is under way at the
    // kill, so the dead server's kernel closes each socket with a FIN, never a reset.
    await using hold = await startHold([
      `127.0.0.1:${haproxy.port}`,
      "hold",
      "--connections",
      "20",
      "--interval",
      "60s",
      "--reconnect",
      "--duration",
      "2500ms",
      "--expect",
      "moved-to",
      "v2",
      "--json",
    ]);
    await hold.allOpen();
    const killedAt = Date.now();
    v1.signalGroup("SIGKILL");
    await v1.child.status;
    const { code, stdout } = await hold.finish();
    assert.equal(code, 0, `every replacement landed on v2: exit 0\n${stdout}`);
    const report: HoldReport = JSON.parse(stdout);
    const killedMs = killedAt - Date.parse(report.startedAt);
    const first = report.connections.filter((c) => c.generation === 0);
    const onV1 = first.filter((c) => c.server.version === "v1");
    assert.equal(onV1.length, 10, "round robin: half on each");
    for (const c of onV1) {
      assert.deepEqual(c.end?.reason, "fin", JSON.stringify(c));
      assert.equal(c.end?.detail, "the peer closed the connection (EOF)");
      assert.ok(c.end!.atMs >= killedMs - 2, `${c.end!.atMs} ms, killed at ${killedMs}`);
    }
    for (const c of first.filter((c) => c.server.version === "v2")) assert.equal(c.end, null);
    const replacements = report.connections.filter((c) => c.generation === 1);
    assert.deepEqual(
      replacements.map((c) => c.slot).sort((a, b) => a - b),
      onV1.map((c) => c.slot).sort((a, b) => a - b),
      "each lost place replaced once",
    );
    for (const c of replacements) {
      assert.equal(c.backend, "version v2, pod pod-b");
      assert.equal(c.replaces?.backend, "version v1, pod pod-a");
      assert.ok(c.replaces!.gapMs > 0 && c.replaces!.gapMs < 1_000, `gap ${c.replaces!.gapMs}`);
      assert.equal(c.end, null);
    }
    assert.deepEqual(
      report.backends.map((b) => [b.backend, b.opened, b.open, b.ended.fin, b.replacedTo]),
      [
        ["version v2, pod pod-b", 20, 20, 0, {}],
        ["version v1, pod pod-a", 10, 0, 10, { "version v2, pod pod-b": 10 }],
      ],
    );
    assert.equal(report.missingAtEnd, 0);
    assert.deepEqual(report.openFailures.failures, {});
    assert.deepEqual(report.expectations, [
      { expect: "moved-to v2", met: true, why: "all 10 replacements landed on v2" },
    ]);
  },
});

Deno.test("hold: a server stopped for 2 s (SIGSTOP, then SIGCONT) is one stall of 2 s on each connection; ids join the server's log", async () => {
  await using server = await spawnServer({
    SERVICE_VERSION: "v1",
    SHOW_CONNECTION_ID: "true",
    LOG_DATA_BYTES: "0",
  });
  await listening(server);
  await using hold = await startHold([
    `127.0.0.1:${server.port}`,
    "hold",
    "--connections",
    "20",
    "--interval",
    "50ms",
    "--duration",
    "5s",
    "--json",
  ]);
  await hold.allOpen();
  const stoppedAt = Date.now();
  server.signalGroup("SIGSTOP");
  // The stop is what is measured: it lasts 2 s.
  await new Promise((resolve) => setTimeout(resolve, 2_000));
  server.signalGroup("SIGCONT");
  const stoppedMs = Date.now() - stoppedAt;
  const { code, stdout } = await hold.finish();
  assert.equal(code, 0, stdout);
  const report: HoldReport = JSON.parse(stdout);
  const stoppedAtMs = stoppedAt - Date.parse(report.startedAt);
  assert.equal(report.connections.length, 20);
  for (const c of report.connections) {
    assert.equal(c.stalls.length, 1, JSON.stringify(c.stalls));
    const [stall] = c.stalls;
    assert.ok(Math.abs(stall.ms - stoppedMs) <= 100, `stall ${stall.ms} ms, stopped ${stoppedMs}`);
    assert.ok(
      Math.abs(stall.atMs - stoppedAtMs) <= 100,
      `at ${stall.atMs}, stopped at ${stoppedAtMs}`,
    );
    assert.equal(c.worstStallMs, stall.ms);
    assert.equal(c.end, null);
    assert.ok(c.heartbeats > 20, `${c.heartbeats} heartbeats`);
  }
  assert.ok(Math.abs(report.backends[0].worstStallMs - stoppedMs) <= 100);
  const ids = new Set<string>();
  while (ids.size < 20) {
    const open = await server.stdout.waitFor(
      (line) => line.includes(" - TCP connection open."),
      "the server's open records",
    );
    ids.add(open.split(" ")[2]);
  }
  assert.deepEqual(new Set(report.connections.map((c) => c.server.connectionId)), ids);
});

Deno.test("hold over TLS, and against a line-mode server with --prefix (without: the hint)", async (t) => {
  await t.step(
    "--tls: each record has the TLS version and server name the banner said",
    async () => {
      await using pki = await makeTestPki();
      await using server = await startTestServer({
        SERVICE_VERSION: "v2",
        SHOW_CONNECTION_ID: "true",
        TLS_PORT: "any",
        LOG_DATA_BYTES: "0",
        ...pki.serverFiles,
      });
      await using hold = await startHold([
        `127.0.0.1:${server.tlsPort}`,
        "hold",
        "--tls",
        "--ca",
        pki.path("ca.pem"),
        "--sni",
        "v2.example.com",
        "--connections",
        "3",
        "--interval",
        "20ms",
        "--duration",
        "500ms",
        "--json",
      ]);
      const { code, stdout } = await hold.finish();
      assert.equal(code, 0, stdout);
      const report: HoldReport = JSON.parse(stdout);
      assert.equal(report.tls, true);
      for (const c of report.connections) {
        assert.equal(c.server.tls, "TLSv1.3");
        assert.equal(c.server.serverName, "v2.example.com");
        assert.match(c.server.connectionId ?? "", /^[0-9a-f-]{36}$/);
        assert.ok(c.heartbeats > 0 && c.end === null, JSON.stringify(c));
      }
    },
  );
  await t.step(
    "ECHO_PREFIX: --prefix holds; without it, the greeting fails with the hint",
    async () => {
      await using server = await startTestServer({ ECHO_PREFIX: "one", LOG_DATA_BYTES: "0" });
      const run = async (args: string[]) => {
        await using hold = await startHold([
          `127.0.0.1:${server.port}`,
          "hold",
          "--connections",
          "2",
          "--interval",
          "20ms",
          "--duration",
          "300ms",
          "--json",
          ...args,
        ]);
        return await hold.finish();
      };
      const prefixed = await run(["--prefix", "one"]);
      assert.equal(prefixed.code, 0, prefixed.stdout);
      const report: HoldReport = JSON.parse(prefixed.stdout);
      assert.ok(report.heartbeats > 0);
      const bare = await run([]);
      assert.equal(bare.code, 1, "a wrong echo: exit 1");
      const failed: HoldReport = JSON.parse(bare.stdout);
      assert.equal(failed.endedBy, "all-lost");
      assert.equal(failed.integrityFailures, 2);
      assert.deepEqual(failed.openFailures, {
        failures: { mismatch: 2 },
        failureDetails: { mismatch: 'heartbeat 0 came back as "one hb 000000\\n"' },
        failureHints: {
          mismatch: 'it looks like line mode with prefix "one" (ECHO_PREFIX): pass --prefix one',
        },
      });
    },
  );
});

/** An echo server without a banner that adds one to byte `corruptAt` of each connection's stream. */
function startCorruptingEcho(corruptAt: number): { port: number; close(): Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const handlers: Promise<void>[] = [];
  const serve = async (conn: Deno.Conn) => {
    const buffer = new Uint8Array(4_096);
    let offset = 0;
    try {
      while (true) {
        const n = await conn.read(buffer);
        if (n === null) break;
        if (corruptAt >= offset && corruptAt < offset + n) buffer[corruptAt - offset]++;
        offset += n;
        await writeAll(conn, buffer.subarray(0, n));
      }
    } catch {
      // The client went away.
    } finally {
      closeQuietly(conn);
    }
  };
  const accepting = (async () => {
    for await (const conn of listener) handlers.push(serve(conn));
  })().catch(() => {});
  return {
    port: listener.addr.port,
    async close() {
      listener.close();
      await accepting;
      await Promise.all(handlers);
    },
  };
}

Deno.test("hold: a server that echoes a wrong byte at heartbeat 3 ends the connection as mismatch, exit 1", async () => {
  // Heartbeats are 10 bytes: heartbeat 3's last digit is byte 38 of the stream.
  const server = startCorruptingEcho(38);
  try {
    await using hold = await startHold([
      `127.0.0.1:${server.port}`,
      "hold",
      "--connections",
      "1",
      "--interval",
      "20ms",
      "--json",
    ]);
    const { code, stdout } = await hold.finish();
    assert.equal(code, 1);
    const report: HoldReport = JSON.parse(stdout);
    assert.equal(report.endedBy, "all-lost");
    assert.equal(report.integrityFailures, 1);
    const [record] = report.connections;
    assert.equal(record.backend, "(no banner)");
    assert.equal(record.heartbeats, 2);
    assert.deepEqual(record.end && { ...record.end, atMs: 0 }, {
      reason: "mismatch",
      atMs: 0,
      detail: 'heartbeat 3: expected "hb 000003\\n", came "hb 000004\\n"',
    });
    assert.equal(report.backends[0].ended.mismatch, 1);
  } finally {
    await server.close();
  }
});

Deno.test("hold: Ctrl-C (SIGINT) ends it with the report, exit 0 when nothing was lost; SIGTERM too", async (t) => {
  await using server = await startTestServer({
    SERVICE_VERSION: "v1",
    POD_NAME: "pod-a",
    LOG_DATA_BYTES: "0",
  });
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    await t.step(signal, async () => {
      await using hold = await startHold([
        `127.0.0.1:${server.port}`,
        "hold",
        "--connections",
        "10",
        "--interval",
        "20ms",
      ]);
      await hold.allOpen();
      hold.signal(signal);
      const { code, stdout } = await hold.finish();
      assert.equal(code, 0, stdout);
      assert.match(
        stdout,
        /\nstarted \S+, ran [\d.]+ m?s, ended: interrupted \(SIGINT\/SIGTERM\);/,
      );
      assert.match(stdout, /\n {2}version v1, pod pod-a +10 +10 +0 +0 +0 +0 +0 +0 +-\n/);
      assert.match(stdout, /\n {2}[\d.–]+ +opened +10 × version v1, pod pod-a +connect /);
    });
  }
});

/** One proxied connection: what its client sent since the last switch, and whether it is newer. */
interface ProxiedPair {
  readonly client: Deno.TcpConn;
  readonly upstream: Deno.TcpConn;
  sent: string;
  fresh: boolean;
}

/**
 * A TCP proxy to one backend at a time, as a mesh's routing is to the
 * client: `switchTo` sends new connections elsewhere (a weight shift), `cut`
 * ends those open (a rollout, a policy change).
 */
class SwitchProxy implements AsyncDisposable {
  readonly #listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  readonly #pairs = new Set<ProxiedPair>();
  readonly #pumps: Promise<void>[] = [];
  readonly #accepting: Promise<void>;
  #waiters: { match: () => boolean; resolve: () => void }[] = [];

  constructor(public targetPort: number) {
    this.#accepting = (async () => {
      for await (const client of this.#listener) this.#pumps.push(this.#serve(client));
    })().catch(() => {});
  }

  get port(): number {
    return this.#listener.addr.port;
  }

  /** New connections go to `port`; what was sent is counted from now. */
  switchTo(port: number): void {
    this.targetPort = port;
    for (const pair of this.#pairs) {
      pair.sent = "";
      pair.fresh = false;
    }
  }

  /**
   * Ends every open connection with a FIN to its client (a close with bytes
   * unread would be a reset): the client reads the end, then closes.
   */
  cut(): void {
    for (const { client } of this.#pairs) client.closeWrite().catch(() => {});
  }

  /** Resolves once `count` connections (opened since the last switch: `fresh`) sent a match. */
  waitForSent(count: number, pattern: RegExp, fresh: boolean): Promise<void> {
    const match = () =>
      [...this.#pairs].filter((p) => (!fresh || p.fresh) && pattern.test(p.sent)).length >= count;
    if (match()) return Promise.resolve();
    return within(
      10_000,
      `${count} connections sending ${pattern}`,
      new Promise((resolve) => this.#waiters.push({ match, resolve })),
    );
  }

  async #serve(client: Deno.TcpConn): Promise<void> {
    let upstream: Deno.TcpConn;
    try {
      upstream = await Deno.connect({ hostname: "127.0.0.1", port: this.targetPort });
    } catch {
      return closeQuietly(client);
    }
    const pair: ProxiedPair = { client, upstream, sent: "", fresh: true };
    this.#pairs.add(pair);
    const copy = async (from: Deno.Conn, to: Deno.Conn, seen?: (text: string) => void) => {
      const buffer = new Uint8Array(4_096);
      try {
        while (true) {
          const n = await from.read(buffer);
          if (n === null) break;
          seen?.(new TextDecoder().decode(buffer.subarray(0, n)));
          await writeAll(to, buffer.subarray(0, n));
        }
      } catch {
        // Cut, or the other side went away.
      } finally {
        closeQuietly(from);
        closeQuietly(to);
      }
    };
    await Promise.all([
      copy(client, upstream, (text) => {
        pair.sent = (pair.sent + text).slice(-64);
        this.#waiters = this.#waiters.filter((w) => !(w.match() && (w.resolve(), true)));
      }),
      copy(upstream, client),
    ]);
    this.#pairs.delete(pair);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    await this.#accepting;
    for (const { client, upstream } of this.#pairs) {
      closeQuietly(client);
      closeQuietly(upstream);
    }
    await Promise.all(this.#pumps);
  }
}

/** Four connections held through `proxy`, open on v1, with `args` (and --json). */
async function holdThrough(proxy: SwitchProxy, args: readonly string[]) {
  const hold = await startHold([
    `127.0.0.1:${proxy.port}`,
    "hold",
    "--connections",
    "4",
    "--interval",
    "20ms",
    ...args,
  ]);
  await hold.allOpen();
  return hold;
}

Deno.test("hold exit codes and --expect: a weight shift, a rollout, every connection lost, bad usage", async (t) => {
  await using v1 = await startTestServer({
    SERVICE_VERSION: "v1",
    POD_NAME: "pod-a",
    LOG_DATA_BYTES: "0",
  });
  await using v2 = await startTestServer({
    SERVICE_VERSION: "v2",
    POD_NAME: "pod-b",
    LOG_DATA_BYTES: "0",
  });

  await t.step("nothing changes: exit 0 at --duration; --expect no-loss is met", async () => {
    await using proxy = new SwitchProxy(v1.port);
    for (const args of [[], ["--expect", "no-loss"]]) {
      await using hold = await holdThrough(proxy, ["--duration", "300ms", ...args]);
      const { code, stdout } = await hold.finish();
      assert.equal(code, 0, stdout);
      assert.match(stdout, /, ended: --duration was over;/);
    }
  });

  await t.step("a weight shift: open connections stay on v1", async () => {
    await using proxy = new SwitchProxy(v1.port);
    const shift = async (args: string[]) => {
      await using hold = await holdThrough(proxy, ["--reconnect", "--json", ...args]);
      proxy.switchTo(v2.port);
      // The connections open before the shift go on: a heartbeat each, after it.
      await proxy.waitForSent(4, /hb \d{6}\n/, false);
      hold.signal("SIGINT");
      return await hold.finish();
    };
    const stays = await shift(["--expect", "stays-on", "v1", "--expect", "no-loss"]);
    assert.equal(stays.code, 0, stays.stdout);
    assert.deepEqual(JSON.parse(stays.stdout).expectations, [
      { expect: "stays-on v1", met: true, why: "all 4 connections on v1" },
      { expect: "no-loss", met: true, why: "no connection was lost" },
    ]);
    proxy.switchTo(v1.port);
    const moved = await shift(["--expect", "moved-to=v2"]);
    assert.equal(moved.code, 1, moved.stdout);
    assert.deepEqual(JSON.parse(moved.stdout).expectations, [
      { expect: "moved-to v2", met: false, why: "no connection was replaced" },
    ]);
  });

  await t.step("a rollout: connections cut, replaced on v2", async () => {
    await using proxy = new SwitchProxy(v1.port);
    const rollout = async (args: string[]) => {
      proxy.switchTo(v1.port);
      await using hold = await holdThrough(proxy, ["--reconnect", ...args]);
      proxy.switchTo(v2.port);
      proxy.cut();
      // A replacement sends heartbeat 1 only once its greeting came back: it is recorded.
      await proxy.waitForSent(4, /hb 000001\n/, true);
      hold.signal("SIGINT");
      return await hold.finish();
    };
    const moved = await rollout(["--expect", "moved-to", "v2"]);
    assert.equal(moved.code, 0, moved.stdout);
    assert.match(moved.stdout, /\nreplacements: 4, gap p50 [\d.]+ m?s, max [\d.]+ m?s\n/);
    assert.match(moved.stdout, /\n {2}version v1, pod pod-a → version v2, pod pod-b {2}4\n/);
    assert.match(
      moved.stdout,
      /\n {2}[\d.–]+ +replaced +4 × version v1, pod pod-a → version v2, pod pod-b +gap /,
    );
    assert.match(moved.stdout, /\nexpect moved-to v2: met \(all 4 replacements landed on v2\)\n$/);
    const stays = await rollout(["--expect", "stays-on", "v1", "--expect", "no-loss", "--json"]);
    assert.equal(stays.code, 1, stays.stdout);
    assert.deepEqual(JSON.parse(stays.stdout).expectations, [
      { expect: "stays-on v1", met: false, why: "of 8 connections, 4 on v2" },
      { expect: "no-loss", met: false, why: "4 connections lost" },
    ]);
    const plain = await rollout(["--json"]);
    assert.equal(plain.code, 1, "a connection was lost: exit 1");
    const report: HoldReport = JSON.parse(plain.stdout);
    assert.deepEqual(
      report.connections.map((c: HeldRecord) => [c.generation, c.server.pod, c.end?.reason]),
      [
        ...[0, 0, 0, 0].map((g) => [g, "pod-a", "fin"]),
        ...[1, 1, 1, 1].map((g) => [g, "pod-b", undefined]),
      ],
    );
  });

  await t.step("every connection lost, without --reconnect: the hold ends, exit 1", async () => {
    await using proxy = new SwitchProxy(v1.port);
    await using hold = await holdThrough(proxy, []);
    proxy.cut();
    const { code, stdout } = await hold.finish();
    assert.equal(code, 1, stdout);
    assert.match(stdout, /, ended: every connection was lost;/);
    assert.match(stdout, /\n {2}version v1, pod pod-a +4 +0 +4 +0 +0 +0 +0 +0 +-\n/);
  });

  await t.step("bad usage: exit 2, one line", async () => {
    await using hold = await startHold(["127.0.0.1:1", "hold", "--expect", "moved-to", "v2"]);
    const { code, stdout, stderr } = await hold.finish();
    assert.equal(code, 2);
    assert.equal(stdout, "");
    assert.deepEqual(stderr, [
      "tcp-echo client: --expect moved-to judges replacements: it needs --reconnect; " +
      "see deno task client -- --help",
    ]);
  });
});
