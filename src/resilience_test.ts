/**
 * What real networks, clusters and terminals do to the server, run against
 * the program as `deno task start` runs it: connections reset before accept,
 * descriptor exhaustion with probes, Ctrl-C through `deno task`, a memory
 * cgroup as the manifests configure it.
 */
import assert from "node:assert/strict";
import net from "node:net";
import {
  decoder,
  encoder,
  freePort,
  ignoreWithout,
  LineReader,
  randomBytes,
  readExactly,
  readToEnd,
  repoDir,
  roundTrip,
  spawnServer,
  within,
  writeAll,
} from "../testing/support.ts";
import { parseAllDocuments } from "yaml";
import { connectTls } from "./tls_stream.ts";
import { parseMemorySize, REPEATED_SIGNAL_WINDOW_MS } from "./config.ts";

/** GETs an admin path of a server on loopback; returns the status and body. */
async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: response.status, body: await response.text() };
}

/** The value of one sample of `/metrics` text, e.g. `name{a="b"}`; NaN when absent. */
function sample(metrics: string, series: string): number {
  const line = metrics.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? NaN : Number(line.slice(series.length + 1));
}

/** Opens `count` connections and resets each (SO_LINGER 0) once the handshake is done. */
async function resetConnections(port: number, count: number): Promise<void> {
  const sockets = await Promise.all(
    Array.from({ length: count }, () =>
      new Promise<net.Socket>((resolve, reject) => {
        const socket = net.connect(port, "127.0.0.1", () => resolve(socket));
        socket.once("error", reject);
      })),
  );
  for (const socket of sockets) socket.resetAndDestroy();
  await Promise.all(
    sockets.map((socket) => new Promise((resolve) => socket.once("close", resolve))),
  );
}

const NODE_BANNER = "Welcome, you are connected to node n.\n";

Deno.test("connections reset before accept are skipped at once: a fresh client is served, /readyz stays 200", async () => {
  const adminPort = freePort();
  await using p = await spawnServer({ ADMIN_PORT: String(adminPort), NODE_NAME: "n" });
  await p.stdout.waitFor((l) => l.includes("Listening on TCP port"), "listening");
  const queued = 450; // Most of Deno's listen backlog (511).
  Deno.kill(p.child.pid, "SIGSTOP");
  try {
    await resetConnections(p.port, queued);
  } finally {
    Deno.kill(p.child.pid, "SIGCONT");
  }
  const started = performance.now();
  using fresh = await Deno.connect({ hostname: "127.0.0.1", port: p.port });
  assert.equal(decoder.decode(await readExactly(fresh, NODE_BANNER.length, 1_000)), NODE_BANNER);
  const bannerMs = performance.now() - started;
  console.log(`fresh banner ${bannerMs.toFixed(1)} ms after ${queued} queued resets`);
  for (let i = 0; i < 20; i++) assert.equal((await get(adminPort, "/readyz")).status, 200);
  const metrics = (await get(adminPort, "/metrics")).body;
  const series = `tcp_echo_accept_errors_total{port="${p.port}",kind="connection"}`;
  assert.equal(sample(metrics, series), queued, metrics);
  assert.equal(
    sample(metrics, `tcp_echo_accept_errors_total{port="${p.port}",kind="resources"}`),
    0,
  );
  assert.equal(decoder.decode(await roundTrip(fresh, encoder.encode("ok"))), "ok");
  assert.ok(!p.stdout.lines.some((l) => l.includes("backing off")), "no back-off");
});

Deno.test({
  name:
    "out of descriptors with probes: the process lives, probes are answered, it recovers and exits 0",
  ignore: await ignoreWithout("prlimit", "the descriptor exhaustion test"),
  async fn() {
    const adminPort = freePort();
    await using p = await spawnServer(
      { ADMIN_PORT: String(adminPort), NODE_NAME: "n", LOG_DATA_BYTES: "0" },
      { prefix: ["prlimit", "--nofile=300:300"] },
    );
    await p.stdout.waitFor((l) => l.includes("Listening on TCP port"), "listening");
    const held: Deno.TcpConn[] = [];
    try {
      for (let i = 0; i < 400; i++) {
        held.push(await Deno.connect({ hostname: "127.0.0.1", port: p.port }));
      }
      await p.stdout.waitFor(
        (l) => l.includes("Accept failed, backing off."),
        "out of descriptors",
      );
      let answered = 0;
      for (let round = 0; round < 20; round++) {
        assert.deepEqual(await get(adminPort, "/healthz"), { status: 200, body: "ok\n" });
        assert.equal((await get(adminPort, "/readyz")).status, 503, "not ready while out of fds");
        const metrics = await get(adminPort, "/metrics");
        assert.equal(metrics.status, 200);
        const kind = `{port="${p.port}",kind="resources"}`;
        assert.ok(sample(metrics.body, `tcp_echo_accept_errors_total${kind}`) >= 1);
        answered += 3;
      }
      console.log(`${answered} admin requests answered while out of descriptors`);
      for (const conn of held.splice(0)) conn.close();
      let ready = 0;
      for (let i = 0; i < 100 && ready !== 200; i++) {
        ready = (await get(adminPort, "/readyz")).status;
        if (ready !== 200) await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.equal(ready, 200, "ready again once the load fell");
      using conn = await Deno.connect({ hostname: "127.0.0.1", port: p.port });
      assert.equal(decoder.decode(await readExactly(conn, NODE_BANNER.length)), NODE_BANNER);
      assert.equal(decoder.decode(await roundTrip(conn, encoder.encode("ok"))), "ok");
      conn.close();
      p.child.kill("SIGTERM");
      const output = p.stdout.rest(); // Read on: a full pipe would block the last records.
      assert.equal((await within(10_000, "exit", p.child.status)).code, 0);
      assert.ok((await output).at(-1)!.includes("Shutdown complete."));
    } finally {
      held.forEach((conn) => conn.close());
    }
  },
});

Deno.test("Ctrl-C on `deno task start` (SIGINT to the whole group) drains like SIGTERM", async () => {
  await using p = await spawnServer({ NODE_NAME: "n", SHUTDOWN_GRACE: "5s" }, {
    command: [Deno.execPath(), "task", "start"],
  });
  await p.stdout.waitFor((l) => l.includes("Listening on TCP port"), "listening");
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: p.port });
  assert.equal(decoder.decode(await readExactly(conn, NODE_BANNER.length)), NODE_BANNER);
  p.signalGroup("SIGINT");
  await p.stdout.waitFor((l) => l.includes("Shutting down: stopped accepting."), "draining");
  assert.equal(decoder.decode(await roundTrip(conn, encoder.encode("still"))), "still");
  await conn.closeWrite();
  await readToEnd(conn);
  assert.equal((await within(5_000, "exit", p.child.status)).code, 0);
  const lines = await p.stdout.rest();
  assert.equal(lines.filter((l) => l.endsWith("Received SIGINT, shutting down.")).length, 1);
  assert.ok(lines.some((l) => l.includes("TCP connection closed. reason=eof")), lines.join("\n"));
  assert.ok(lines.at(-1)!.endsWith("Shutdown complete. connections_served=1"), lines.join("\n"));
});

Deno.test("a second signal after the repeat window exits at once, and says so", async () => {
  await using p = await spawnServer({ SHUTDOWN_GRACE: "1m" });
  await p.stdout.waitFor((l) => l.includes("Listening on TCP port"), "listening");
  using _conn = await Deno.connect({ hostname: "127.0.0.1", port: p.port });
  await p.stdout.waitFor((l) => l.includes("TCP connection open."), "open");
  p.child.kill("SIGTERM");
  const firstAt = performance.now();
  await p.stdout.waitFor((l) => l.includes("Shutting down: stopped accepting."), "draining");
  p.child.kill("SIGTERM"); // The same event delivered twice: ignored.
  // The window is the behaviour under test: a person presses again later.
  const rest = REPEATED_SIGNAL_WINDOW_MS + 100 - (performance.now() - firstAt);
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, rest)));
  p.child.kill("SIGINT");
  assert.equal((await within(5_000, "exit", p.child.status)).code, 130);
  const lines = await p.stdout.rest();
  assert.ok(
    lines.at(-1)!.endsWith(
      "Received SIGINT again, exiting now without draining. open_connections=1 exit_code=130 level=warn",
    ),
    lines.join("\n"),
  );
});

Deno.test({
  name: "Ctrl-C twice in a real terminal: one record for the second press, exit 130",
  ignore: await ignoreWithout("script", "the terminal test"),
  async fn() {
    // Each press signals the whole group and `deno task` forwards it too: the
    // second press arrives twice, like the first. Pressed several times over,
    // since a repeat only shows when it arrives before the exit.
    for (let round = 0; round < 4; round++) {
      const lines = await pressCtrlCTwice();
      const again = lines.filter((l) => l.includes("Received SIGINT again"));
      assert.equal(again.length, 1, lines.join("\n"));
    }
  },
});

/** Runs `deno task start` in a pseudo-terminal, presses Ctrl-C, and again after the window; its lines. */
async function pressCtrlCTwice(): Promise<string[]> {
  const port = freePort();
  const child = new Deno.Command("script", {
    args: ["-qfec", `${Deno.execPath()} task start`, "/dev/null"],
    cwd: repoDir,
    env: { HOST: "127.0.0.1", TCP_PORT: String(port), ADMIN_PORT: "off", SHUTDOWN_GRACE: "1m" },
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const terminal = child.stdin.getWriter();
  const output = new LineReader(child.stdout);
  try {
    await output.waitFor((l) => l.includes("Listening on TCP port"), "listening");
    using _held = await Deno.connect({ hostname: "127.0.0.1", port });
    await output.waitFor((l) => l.includes("TCP connection open."), "open");
    await terminal.write(encoder.encode("\x03"));
    const firstAt = performance.now();
    await output.waitFor((l) => l.includes("Shutting down: stopped accepting."), "draining");
    // The window is the behaviour under test: a person presses again later.
    const rest = REPEATED_SIGNAL_WINDOW_MS + 100 - (performance.now() - firstAt);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, rest)));
    await terminal.write(encoder.encode("\x03"));
    assert.equal((await within(5_000, "exit", child.status)).code, 130);
    return (await output.rest()).map((l) => l.replace(/\r$/, ""));
  } finally {
    await terminal.close().catch(() => {});
    try {
      child.kill("SIGKILL");
    } catch {
      // Exited.
    }
    await child.status;
  }
}

/** Where a memory cgroup's files are, in cgroup v1 (this machine) and v2 (most others). */
interface MemoryCgroup {
  readonly root: string;
  readonly limit: string;
  readonly peak: string;
  /** The file with the `oom_kill N` line. */
  readonly events: string;
}

const CGROUP_V1: MemoryCgroup = {
  root: "/sys/fs/cgroup/memory",
  limit: "memory.limit_in_bytes",
  peak: "memory.max_usage_in_bytes",
  events: "memory.oom_control",
};
const CGROUP_V2: MemoryCgroup = {
  root: "/sys/fs/cgroup",
  limit: "memory.max",
  peak: "memory.peak",
  events: "memory.events",
};

/** The memory cgroup this machine lets root make, if any. */
const memoryCgroup = await (async () => {
  const check = (script: string) =>
    new Deno.Command("sh", { args: ["-c", script] }).output().then((o) => o.success, () => false);
  if (!await check('[ "$(id -u)" = 0 ]')) return undefined;
  if (await check(`[ -w ${CGROUP_V1.root}/${CGROUP_V1.limit} ]`)) return CGROUP_V1;
  const v2 = await check(`grep -qw memory ${CGROUP_V2.root}/cgroup.subtree_control`);
  return v2 ? CGROUP_V2 : undefined;
})();

/** Runs a shell command line; fails on a non-zero exit. */
async function sh(script: string, ...args: string[]): Promise<string> {
  const output = await new Deno.Command("sh", { args: ["-c", script, "sh", ...args] }).output();
  assert.equal(output.code, 0, `${script}: ${decoder.decode(output.stderr)}`);
  return decoder.decode(output.stdout).trim();
}

/** What the manifests ship: the echo container's literal environment and its memory limit. */
async function shippedSettings(
  component?: "tls",
): Promise<{ env: Record<string, string>; limitBytes: number }> {
  const read = async (path: string) =>
    parseAllDocuments(await Deno.readTextFile(`${repoDir}${path}`)).map((d) => d.toJS());
  const base = (await read("k8s/base/deployment.yml")).find((m) => m.kind === "Deployment");
  const layers = [base.spec.template.spec.containers[0]];
  if (component) {
    const [patch] = await read(`k8s/components/${component}/deployment-tls.yaml`);
    layers.push(patch.spec.template.spec.containers[0]);
  }
  const env: Record<string, string> = {};
  let limit = "";
  for (const container of layers) {
    for (const { name, value } of container.env ?? []) if (value !== undefined) env[name] = value;
    limit = container.resources?.limits?.memory ?? limit;
  }
  const limitBytes = parseMemorySize(limit);
  assert.ok(limitBytes, `a memory limit in the manifests (${limit})`);
  return { env, limitBytes };
}

/** The echo socket of one client of the load test. */
type LoadConn = Pick<Deno.Conn, "read" | "write" | "close">;

/** How one connection of a load test went. */
type LoadOutcome = "echoed" | "refused";

/**
 * Reads a banner up to its line that starts with `last`; `false` when the
 * server closed the connection first without a byte (a refusal).
 */
async function readBannerOrRefusal(conn: LoadConn, last: string): Promise<boolean> {
  const byte = new Uint8Array(1);
  let text = "";
  while (!text.endsWith(".\n") || !text.split("\n").at(-2)!.startsWith(last)) {
    const n = await conn.read(byte).catch(() => null);
    if (n === null) {
      assert.equal(text, "", "a refusal closes before the banner");
      return false;
    }
    text += String.fromCharCode(byte[0]);
  }
  return true;
}

/** Sends `payload` and reads its echo, comparing every byte as it comes. */
async function echoExactly(conn: LoadConn, payload: Uint8Array): Promise<void> {
  const buffer = new Uint8Array(65_536);
  const reading = async () => {
    let at = 0;
    while (at < payload.length) {
      const n = await conn.read(buffer);
      if (n === null) throw new Error(`EOF after ${at} of ${payload.length} echoed bytes`);
      for (let i = 0; i < n; i++) {
        if (buffer[i] !== payload[at + i]) throw new Error(`byte ${at + i} differs`);
      }
      at += n;
    }
  };
  await Promise.all([writeAll(conn, payload), reading()]);
}

/** A memory cgroup of `limitBytes` for one server process; dispose of it to remove it. */
async function memoryCgroupOf(limitBytes: number): Promise<AsyncDisposable & { path: string }> {
  assert.ok(memoryCgroup, "no memory cgroup can be made here (needed under CI)");
  const path = `${memoryCgroup.root}/tcp-echo-test-${Deno.pid}-${limitBytes}`;
  await sh('mkdir "$1" && echo "$3" > "$1/$2"', path, memoryCgroup.limit, String(limitBytes));
  return { path, [Symbol.asyncDispose]: () => sh('rmdir "$1"', path).then(() => {}) };
}

/**
 * How the admitted clients of {@linkcode loadInCgroup} behave, all at once:
 * `echo`, each echoes 64 KiB (every 50th 1 MiB); `stream`, each echoes
 * {@linkcode STREAM_BYTES}, so every connection is busy at the same time.
 */
type LoadMode = "echo" | "stream";

/** What each client of a `stream` load echoes: long enough that all stream together. */
const STREAM_BYTES = 512 * 1024;

/**
 * The load test the issue describes, inside a real memory cgroup: the
 * server with the shipped settings and memory limit; 5% more clients than
 * its `MAX_CONNECTIONS` connect at once, and every admitted one does what
 * `mode` says, all at the same time. The process must live, every admitted
 * echo come back exactly, the others be refused with reason memory or
 * max_connections, and the cgroup's peak stay under the limit.
 */
async function loadInCgroup(component: "tls" | undefined, mode: LoadMode): Promise<void> {
  const { env: { TCP_PORT: _port, UDP_PORT: _udp, ...env }, limitBytes } = await shippedSettings(
    component,
  );
  const connections = Math.round(Number(env.MAX_CONNECTIONS) * 1.05);
  const open = (port: number): Promise<LoadConn> =>
    component === "tls"
      ? connectTls("127.0.0.1", port, { insecure: true, alpn: ["echo"] })
      : Deno.connect({ hostname: "127.0.0.1", port });
  await using cgroup = await memoryCgroupOf(limitBytes);
  const adminPort = freePort();
  const tlsPort = component === "tls" ? freePort() : undefined;
  // The shell moves itself into the cgroup and becomes the server (exec):
  // only the server's own PID is ever in it, from its first instruction.
  await using p = await spawnServer(
    {
      ...env,
      ...(tlsPort ? { TLS_PORT: String(tlsPort) } : {}),
      TLS_CERT_FILE: "",
      TLS_KEY_FILE: "",
      DENO_USE_CGROUPS: "1",
      NODE_NAME: "n",
      ADMIN_PORT: String(adminPort),
      DRAIN_DELAY: "0s",
    },
    { prefix: ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup.path] },
  );
  const port = tlsPort ?? p.port;
  await p.stdout.waitFor((l) => l.includes(`port ${port}`), "listening");
  const logLines = p.stdout.count();
  const conns: LoadConn[] = [];
  const outcomes: LoadOutcome[] = [];
  const started = performance.now();
  try {
    for (let i = 0; i < connections; i += 200) {
      const batch = Math.min(200, connections - i);
      await Promise.all(Array.from({ length: batch }, async () => {
        const conn = await open(port).catch(() => undefined);
        const last = component === "tls" ? "TLS " : "Your address is ";
        if (conn === undefined || !await readBannerOrRefusal(conn, last)) {
          conn?.close();
          outcomes.push("refused");
        } else conns.push(conn);
      }));
    }
    const small = randomBytes(mode === "stream" ? STREAM_BYTES : 64 * 1024);
    const large = mode === "stream" ? small : randomBytes(1024 * 1024);
    await Promise.all(conns.map(async (conn, i) => {
      await echoExactly(conn, i % 50 === 0 ? large : small);
      outcomes.push("echoed");
    }));
    const metrics = (await get(adminPort, "/metrics")).body;
    const rejected = (reason: string) =>
      sample(metrics, `tcp_echo_connections_rejected_total{port="${port}",reason="${reason}"}`);
    const peakBytes = Number(await sh('cat "$1/$2"', cgroup.path, memoryCgroup!.peak));
    const oomKills = await sh(
      'grep -E "^oom_kill " "$1/$2" || echo "oom_kill 0"',
      cgroup.path,
      memoryCgroup!.events,
    );
    const refused = outcomes.filter((o) => o === "refused").length;
    console.log(
      `${component ?? "plain"}: ${conns.length} admitted and echoed ` +
        `${
          mode === "stream" ? "512 KiB each" : "64 KiB each (every 50th 1 MiB)"
        }, ${refused} refused ` +
        `(memory ${rejected("memory")}, max_connections ${rejected("max_connections")}) in ` +
        `${((performance.now() - started) / 1000).toFixed(1)} s; peak cgroup memory ` +
        `${(peakBytes / 2 ** 20).toFixed(1)} MiB of ${limitBytes / 2 ** 20} MiB, ${oomKills}`,
    );
    assert.equal(oomKills, "oom_kill 0");
    assert.ok(peakBytes < limitBytes, "the peak stayed under the limit");
    assert.ok(peakBytes > 16 * 2 ** 20, "the server ran inside the cgroup");
    assert.ok(refused > 0, "the load went past what the limit admits");
    assert.equal(rejected("memory") + rejected("max_connections"), refused);
    assert.equal(outcomes.length, connections);
  } finally {
    conns.forEach((conn) => conn.close());
  }
  p.child.kill("SIGTERM");
  assert.equal((await within(20_000, "exit", p.child.status)).code, 0, "not killed");
  await logLines;
}

const memoryCgroupIgnored = memoryCgroup === undefined && Deno.env.get("CI") !== "true" &&
  (console.warn("ignored: the memory cgroup tests need root and a cgroup memory controller"), true);

const CGROUP_LOADS: readonly [name: string, component: "tls" | undefined, mode: LoadMode][] = [
  [
    "memory cgroup with the TLS component: a TLS load test past what it admits, every admitted echo exact, no OOM kill",
    "tls",
    "echo",
  ],
  [
    "memory cgroup with the TLS component: every admitted TLS connection streaming at once, no OOM kill",
    "tls",
    "stream",
  ],
  [
    "memory cgroup as the manifests ship it: a load test past what it admits, every admitted echo exact, no OOM kill",
    undefined,
    "echo",
  ],
  [
    "memory cgroup as the manifests ship it: every admitted connection streaming at once, no OOM kill",
    undefined,
    "stream",
  ],
];

for (const [name, component, mode] of CGROUP_LOADS) {
  Deno.test({ name, ignore: memoryCgroupIgnored, fn: () => loadInCgroup(component, mode) });
}

Deno.test("ignoreWithout: a tool missing from PATH is ignored locally and required under CI", async () => {
  const script = `
    import { ignoreWithout } from "./testing/support.ts";
    console.log(await ignoreWithout("haproxy", "this check"));
  `;
  for (const [ci, expected] of [["", "true"], ["true", "false"]]) {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--quiet", script],
      cwd: repoDir,
      env: { PATH: "/nonexistent", CI: ci, NO_COLOR: "1" },
      clearEnv: true,
    }).output();
    assert.equal(output.code, 0, decoder.decode(output.stderr));
    assert.equal(decoder.decode(output.stdout).trim(), expected, `CI=${ci}`);
    if (ci === "") {
      assert.equal(
        decoder.decode(output.stderr).trim(),
        "ignored: this check needs haproxy, which is not installed (.ci/run installs it)",
      );
    }
  }
});
