/**
 * `deno task bench`: tcp-echo against reference echo servers in one run, on
 * this machine's loopback, servers pinned to core 0 and clients to core 1.
 *
 * Servers: `cecho` (C, epoll: the one-core limit, a sanity row), a Go
 * `io.Copy` server, a Node `s.pipe(s)` server, tcp-echo with data records
 * off, `go-logging-echo` (what the seed's Go server does per read: two `log`
 * records) and tcp-echo as shipped (data records on). Logging servers write
 * to a pipe read by `cat` into a file, as a container runtime keeps stdout.
 *
 * Clients: `cload` (C, epoll) for request/response and the connection rate,
 * `go-load` (Go) for the stream, and tcp-echo's own client for latency
 * percentiles. The references are built from `bench/` and `../shared/bench/`
 * with `gcc` and `go`; a reference that cannot be built is left out with a
 * printed reason.
 *
 * Each round runs every scenario on every server in turn (A B C ... A B C);
 * rounds go on until the medians settle. The table shows medians and ratios:
 * tcp-echo with data records off against Go `io.Copy` (and Node), tcp-echo
 * as shipped against `go-logging-echo`. When cecho, Go and tcp-echo give the
 * same figure, the figure is the client's, and the table says so. After the
 * run, the log of tcp-echo as shipped is checked: every byte received is in
 * its data records and no record was dropped.
 *
 * Then TLS: tcp-echo's TLS port (data records off) against the Go echo's
 * `crypto/tls` port with the same ECDSA P-256 certificate, measured by
 * `go-load ... tls` (handshakes per second, a new connection and full TLS 1.3
 * handshake each; and the stream inside TLS), which also reports its own CPU
 * share so a client-bound figure shows.
 *
 * A program of its own; it prints figures and asserts nothing: performance is
 * measured here, never in a test.
 *
 * @module
 */
import dgram from "node:dgram";
import { parseArgs } from "node:util";
import {
  freePort,
  isInstalled,
  makeTestPki,
  taskArgs,
  waitForPort,
  writeAll,
} from "../testing/support.ts";
import { connectTls } from "../src/tls_stream.ts";
import { DATA_MESSAGES } from "../src/log_output.ts";

const repoDir = new URL("..", import.meta.url).pathname;
/** Where a raw data record's bytes begin in a text record. */
const RAW_RECORD = ` - ${DATA_MESSAGES.raw}: [`;
const sharedBench = `${repoDir}../shared/bench/`;
const decoder = new TextDecoder();

/** One server under measurement. */
interface BenchServer {
  readonly name: string;
  readonly port: number;
  /** The server's own process (for its memory), inside a process group led by `group`. */
  readonly pid: () => Promise<number>;
  readonly group: Deno.ChildProcess;
  /** Bytes the server sends before echoing (its banner). */
  readonly bannerBytes: number;
  /** Where its log goes (logging servers). */
  readonly logFile?: string;
  /** Its admin port (tcp-echo). */
  readonly adminPort?: number;
  /** Its TLS port (TLS servers): where the TLS scenarios connect. */
  readonly tlsPort?: number;
  /** Its UDP port (UDP servers): where the UDP scenarios send. */
  readonly udpPort?: number;
}

/** How to start one kind of server. */
interface ServerKind {
  readonly name: string;
  /** The command; `TCP_PORT` is set in its environment. */
  readonly command: readonly string[];
  readonly env?: Record<string, string>;
  readonly logs: boolean;
  readonly bannerBytes: number;
  readonly tcpEcho: boolean;
  /** Also listen with TLS (`TLS_PORT`, with `TLS_CERT_FILE` and `TLS_KEY_FILE` in `env`). */
  readonly tls?: boolean;
  /** Also echo UDP (`UDP_PORT`). */
  readonly udp?: boolean;
}

/** One measurement: a client command and the figures read from its JSON line. */
interface Scenario {
  readonly name: string;
  readonly client: (port: number) => string[];
  readonly figures: readonly Figure[];
}

interface Figure {
  readonly label: string;
  readonly pick: (report: Report) => number;
  readonly higherIsBetter: boolean;
  /** Per second of the server's CPU: the server's own cost, which a client at its limit does not hide. */
  readonly perServerCpu?: true;
}

// deno-lint-ignore no-explicit-any
type Report = Record<string, any>;

const BANNER_ENV = {
  NODE_NAME: "bench-node",
  POD_NAME: "tcp-echo-v1-7c775f57c9-frprp",
  POD_NAMESPACE: "default",
  POD_IP: "10.0.0.1",
  SERVICE_ACCOUNT: "tcp-echo",
  SERVICE_VERSION: "v1",
};

// A reset from a client ends only its socket (unhandled, the error would end the process).
const NODE_SOURCE = "require('net').createServer((s) => { s.on('error', () => {}); s.pipe(s); })" +
  ".listen(Number(process.env.TCP_PORT), '127.0.0.1')";

/** The command line: rounds, seconds per measurement, idle connections, JSON output. */
export interface BenchOptions {
  /** Rounds at least (`--rounds`). */
  readonly minRounds: number;
  /** Rounds at most, while the medians move (`--max-rounds`). */
  readonly maxRounds: number;
  /** Seconds per measurement (`--seconds`). */
  readonly seconds: number;
  /** Plain connections the memory rows open (`--idle`). */
  readonly idleConnections: number;
  /** TLS connections the TLS memory rows open. */
  readonly tlsConnections: number;
  /** One JSON object instead of the tables. */
  readonly json: boolean;
  /** The sections to run (`--only`), in the order they run. */
  readonly sections: readonly BenchSection[];
}

/** The bench's parts, in the order they run. */
export const BENCH_SECTIONS = ["plain", "tls", "udp", "hold"] as const;
/** One of {@linkcode BENCH_SECTIONS}. */
export type BenchSection = typeof BENCH_SECTIONS[number];

/** What `deno task bench --help` prints. */
export const BENCH_USAGE =
  `Usage: deno task bench [--rounds N] [--max-rounds N] [--seconds S] [--idle N]
                       [--tls-idle N] [--only SECTIONS] [--json]

Measures tcp-echo against C (epoll), Go and Node echo servers on this machine's
loopback, servers on core 0 and clients on core 1, round after round until the
medians settle (plain); then TLS against Go crypto/tls and Deno.listenTls, per
second and per server CPU-second (tls), UDP against a Go UDP echo (udp), and
10,000 connections held by the client (hold). Takes 10 to 15
minutes with the defaults; --rounds 1 --max-rounds 1 --seconds 1 is a quick look.
Needs gcc, taskset (util-linux) and node; Go (golang-go) for the Go references.

  --rounds N       rounds at least (default 3)
  --max-rounds N   rounds at most, while the medians move (default 7)
  --seconds S      seconds per measurement (default 2)
  --idle N         connections opened for the memory rows (default 5000)
  --tls-idle N     TLS connections opened for the TLS memory rows (default 1000)
  --only SECTIONS  a comma list of plain, tls, udp, hold (default: all)
  --json           one JSON object instead of the tables
`;

/** A bench command line that cannot be used; the message says why. */
class BenchUsageError extends Error {}

/** Reads the command line (pure); `undefined` for --help. Throws {@linkcode BenchUsageError}. */
export function parseOptions(args: readonly string[]): BenchOptions | undefined {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...args],
      options: {
        rounds: { type: "string" },
        "max-rounds": { type: "string" },
        seconds: { type: "string" },
        idle: { type: "string" },
        "tls-idle": { type: "string" },
        only: { type: "string" },
        json: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (error) {
    const option = /option '([^']+)'/.exec((error as Error).message)?.[1];
    throw new BenchUsageError(
      option ? `unknown option ${option}` : (error as Error).message.split("\n")[0],
    );
  }
  if (values.help) return undefined;
  const count = (name: string, fallback: number) => {
    const text = values[name as keyof typeof values] as string | undefined;
    const value = text === undefined ? fallback : Number(text);
    if (!Number.isInteger(value) || value < 1) {
      throw new BenchUsageError(`--${name} takes a whole number of at least 1, not ${text}`);
    }
    return value;
  };
  const minRounds = count("rounds", 3);
  const named = values.only?.split(",") ?? [...BENCH_SECTIONS];
  const unknown = named.find((name) => !(BENCH_SECTIONS as readonly string[]).includes(name));
  if (unknown !== undefined) {
    throw new BenchUsageError(
      `--only takes a comma list of ${BENCH_SECTIONS.join(", ")}, not ${JSON.stringify(unknown)}`,
    );
  }
  return {
    minRounds,
    maxRounds: Math.max(minRounds, count("max-rounds", 7)),
    seconds: count("seconds", 2),
    idleConnections: count("idle", 5_000),
    tlsConnections: count("tls-idle", 1_000),
    json: values.json ?? false,
    sections: BENCH_SECTIONS.filter((section) => named.includes(section)),
  };
}

/** Whether a file or directory is there. */
const exists = (path: string) => Deno.stat(path).then(() => true, () => false);

/** Builds the references into `dir`; returns the paths built and why the others were not. */
async function buildReferences(
  dir: string,
): Promise<{ built: Map<string, string>; missing: string[] }> {
  const built = new Map<string, string>();
  const missing: string[] = [];
  const build = async (name: string, tool: string, args: string[], cwd = repoDir) => {
    if (!await isInstalled(tool)) return missing.push(`${name}: ${tool} is not installed`);
    const source = tool === "go" ? cwd : args.at(-1)!;
    if (!await exists(source)) return missing.push(`${name}: ${source} is not there`);
    const output = await new Deno.Command(tool, { args, cwd, stdout: "null", stderr: "piped" })
      .output();
    if (!output.success) return missing.push(`${name}: ${decoder.decode(output.stderr).trim()}`);
    built.set(name, `${dir}/${name}`);
  };
  await build("cecho", "gcc", ["-O2", "-o", `${dir}/cecho`, `${sharedBench}cecho/cecho.c`]);
  await build("cload", "gcc", ["-O2", "-o", `${dir}/cload`, `${sharedBench}cload/cload.c`]);
  await build("cudp-load", "gcc", [
    "-O2",
    "-o",
    `${dir}/cudp-load`,
    `${repoDir}bench/cudp-load/cudpload.c`,
  ]);
  for (
    const [name, source] of [
      ["go-copy-echo", `${repoDir}bench/go-copy-echo`],
      ["go-load", `${repoDir}bench/go-load`],
      ["go-logging-echo", `${sharedBench}go-logging-echo`],
    ]
  ) {
    await build(name, "go", ["build", "-o", `${dir}/${name}`, "."], source);
  }
  return { built, missing };
}

/** tcp-echo exactly as `deno task start` runs it. */
async function tcpEchoCommand(): Promise<string[]> {
  return [Deno.execPath(), ...await taskArgs("start")];
}

/**
 * The runtime's ceilings (bench/deno-echo): on TCP_PORT a bare Deno.listen
 * echo, with TLS_PORT also Deno.listenTls.
 */
const DENO_ECHO_COMMAND = [
  Deno.execPath(),
  "run",
  "--allow-net=127.0.0.1",
  "--allow-read",
  "--allow-env",
  `${repoDir}bench/deno-echo/main.ts`,
];
/** The bare Deno.listen echo with tcp-echo's banner: the socket operations of its connection and nothing else. */
const DENO_LOOP = "deno loop";

/** The servers to measure, in table order, from what could be built. */
async function serverKinds(built: Map<string, string>): Promise<ServerKind[]> {
  const command = await tcpEchoCommand();
  const banner = bannerText();
  const bannerBytes = new TextEncoder().encode(banner).length;
  const tcpEcho = (name: string, env: Record<string, string>): ServerKind => ({
    name,
    command,
    env: { HOST: "127.0.0.1", ...BANNER_ENV, ...env },
    logs: true,
    bannerBytes,
    tcpEcho: true,
  });
  const goLogBanner = `Welcome, you are connected to node ${BANNER_ENV.NODE_NAME}.\n` +
    `Running on Pod ${BANNER_ENV.POD_NAME}.\n`;
  const kinds: (ServerKind | undefined)[] = [
    built.has("cecho")
      ? {
        name: "cecho",
        command: [built.get("cecho")!],
        logs: false,
        bannerBytes: 0,
        tcpEcho: false,
      }
      : undefined,
    built.has("go-copy-echo")
      ? {
        name: "go io.Copy",
        command: [built.get("go-copy-echo")!],
        logs: false,
        bannerBytes: 0,
        tcpEcho: false,
      }
      : undefined,
    {
      name: "node pipe",
      command: ["node", "-e", NODE_SOURCE],
      logs: false,
      bannerBytes: 0,
      tcpEcho: false,
    },
    {
      name: DENO_LOOP,
      command: DENO_ECHO_COMMAND,
      // tcp-echo's banner, so that the loop makes every socket call tcp-echo's connection makes.
      env: { BANNER: banner },
      logs: false,
      bannerBytes,
      tcpEcho: false,
    },
    tcpEcho("tcp-echo, data off", { LOG_DATA_BYTES: "0" }),
    built.has("go-logging-echo")
      ? {
        name: "go-logging-echo",
        command: [built.get("go-logging-echo")!],
        env: BANNER_ENV,
        logs: true,
        bannerBytes: new TextEncoder().encode(goLogBanner).length,
        tcpEcho: false,
      }
      : undefined,
    tcpEcho("tcp-echo, defaults", {}),
  ];
  return kinds.filter((kind) => kind !== undefined);
}

function bannerText(): string {
  return `Welcome, you are connected to node ${BANNER_ENV.NODE_NAME}.\n` +
    `Running on Pod ${BANNER_ENV.POD_NAME}.\nIn namespace ${BANNER_ENV.POD_NAMESPACE}.\n` +
    `With IP address ${BANNER_ENV.POD_IP}.\nService ${BANNER_ENV.SERVICE_ACCOUNT}.\n` +
    `Version ${BANNER_ENV.SERVICE_VERSION}.\n`;
}

/**
 * Starts a server on core 0 in a process group of its own; a logging
 * server's output goes through a pipe to `cat` (core 1) into a file.
 */
async function startServer(kind: ServerKind): Promise<BenchServer> {
  const port = freePort();
  const tlsPort = kind.tls ? freePort() : undefined;
  const udpPort = kind.udp ? freePort() : undefined;
  const adminPort = kind.tcpEcho ? freePort() : undefined;
  const logFile = kind.logs
    ? await Deno.makeTempFile({ prefix: "tcp-echo-bench-", suffix: ".log" })
    : undefined;
  const quoted = kind.command.map((word) => `'${word.replaceAll("'", "'\\''")}'`).join(" ");
  const script = logFile
    ? `taskset -c 0 ${quoted} 2>&1 | taskset -c 1 cat > '${logFile}'`
    : `exec taskset -c 0 ${quoted} > /dev/null 2>&1`;
  const group = new Deno.Command("setsid", {
    args: ["sh", "-c", script],
    cwd: repoDir,
    env: {
      ...kind.env,
      TCP_PORT: String(port),
      ...(adminPort ? { ADMIN_PORT: String(adminPort) } : {}),
      ...(tlsPort ? { TLS_PORT: String(tlsPort) } : {}),
      ...(udpPort ? { UDP_PORT: String(udpPort) } : {}),
    },
    stdin: "null",
  }).spawn();
  await waitForPort(port);
  if (tlsPort) await waitForPort(tlsPort);
  if (udpPort) await waitForUdpEcho(udpPort);
  let serverPid: Promise<number> | undefined;
  // Found once: the server is the group's process that listens, the largest RSS of them.
  const pid = () =>
    serverPid ??= (async () => {
      const output = await new Deno.Command("pgrep", { args: ["-g", String(group.pid)] })
        .output();
      const pids = decoder.decode(output.stdout).trim().split("\n").map(Number);
      const sizes = await Promise.all(pids.map((p) => rssBytes(p).catch(() => 0)));
      return pids[sizes.indexOf(Math.max(...sizes))];
    })();
  return {
    name: kind.name,
    port,
    pid,
    group,
    bannerBytes: kind.bannerBytes,
    logFile,
    adminPort,
    tlsPort,
    udpPort,
  };
}

async function stop(server: BenchServer): Promise<void> {
  try {
    Deno.kill(-server.group.pid, "SIGTERM");
  } catch {
    // Already gone.
  }
  await server.group.status;
}

/** A process's resident memory, as `ps` reports it (Deno reads /proc only with --allow-all). */
async function rssBytes(pid: number): Promise<number> {
  const output = await new Deno.Command("ps", { args: ["-o", "rss=", "-p", String(pid)] }).output();
  const kib = Number(decoder.decode(output.stdout).trim());
  if (!output.success || !(kib > 0)) throw new Error(`no RSS for process ${pid}`);
  return kib * 1024;
}

/** Clock ticks per second of /proc's CPU times. */
const CLOCK_TICKS = await (async () => {
  const output = await new Deno.Command("getconf", { args: ["CLK_TCK"] }).output();
  return Number(decoder.decode(output.stdout).trim()) || 100;
})();

/** CPU seconds a process has used, all its threads, user and system (/proc/PID/stat). */
async function cpuSeconds(pid: number): Promise<number> {
  const output = await new Deno.Command("cat", { args: [`/proc/${pid}/stat`] }).output();
  // Fields after the command's closing parenthesis: state is the 3rd, utime the 14th, stime the 15th.
  const stat = decoder.decode(output.stdout);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/** What a server's memory grows by per connection: idle, and after each echoed 64 KiB once. */
interface MemoryFigures {
  readonly idleKiB: number;
  readonly afterEchoKiB: number;
}

/** The bytes each connection echoes once for {@linkcode MemoryFigures.afterEchoKiB}. */
const MEMORY_ECHO_BYTES = 65_536;

/**
 * Opens `count` connections to `server` (TLS ones to its TLS port), each
 * echoing one byte so the server has really taken it up, and reads the
 * growth of the server's RSS per connection; then each echoes 64 KiB once,
 * 100 at a time, and the growth is read again, the connections still open.
 */
async function memoryPerConnection(
  server: BenchServer,
  count: number,
  tls: boolean,
): Promise<MemoryFigures> {
  const pid = await server.pid();
  const before = await rssBytes(pid);
  const conns: BenchConn[] = [];
  const perConnectionKiB = async () => (await rssBytes(pid) - before) / count / 1024;
  try {
    for (let batch = 0; batch < count; batch += 250) {
      const opened = await Promise.all(
        Array.from({ length: Math.min(250, count - batch) }, () => openBenchConn(server, tls)),
      );
      conns.push(...opened);
      await Promise.all(opened.map((conn) => echoBytes(conn, 1, server.bannerBytes)));
    }
    // Let the server settle (its log flushes within milliseconds) before reading RSS.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const idleKiB = await perConnectionKiB();
    for (let batch = 0; batch < conns.length; batch += 100) {
      await Promise.all(
        conns.slice(batch, batch + 100).map((conn) => echoBytes(conn, MEMORY_ECHO_BYTES, 0)),
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
    return { idleKiB, afterEchoKiB: await perConnectionKiB() };
  } finally {
    for (const conn of conns) conn.close();
  }
}

/** A client connection of the memory measurement: TCP, or TLS without checking the certificate. */
type BenchConn = Pick<Deno.Conn, "read" | "write" | "close">;

function openBenchConn(server: BenchServer, tls: boolean): Promise<BenchConn> {
  return tls
    ? connectTls("127.0.0.1", server.tlsPort!, { insecure: true, alpn: ["echo"] })
    : Deno.connect({ hostname: "127.0.0.1", port: server.port });
}

/** Sends `size` bytes and reads them back, after `skip` bytes of banner. */
async function echoBytes(conn: BenchConn, size: number, skip: number): Promise<void> {
  const writing = writeAll(conn, new Uint8Array(size).fill(0x2a));
  const buffer = new Uint8Array(Math.min(65_536, skip + size));
  let got = 0;
  while (got < skip + size) {
    const n = await conn.read(buffer.subarray(0, Math.min(buffer.length, skip + size - got)));
    if (n === null) throw new Error("closed while measuring memory");
    got += n;
  }
  await writing;
}

/** tcp-echo's own client with `args`, against a server on loopback. */
const tcpEchoClient = (port: number, args: string[]) => [
  Deno.execPath(),
  "run",
  "--allow-net",
  `${repoDir}main.ts`,
  "client",
  `127.0.0.1:${port}`,
  ...args,
  "--json",
];

/** The workloads: a client on core 1 and the figures read from its JSON report. */
/** A client's `rate` divided by the server's CPU share in that run. */
function perServerCpu(label: string, rate: (report: Report) => number): Figure {
  return { label, pick: (r) => rate(r) / r.server_cpu, higherIsBetter: true, perServerCpu: true };
}

function scenarios(seconds: number, built: Map<string, string>): Scenario[] {
  const cload = built.get("cload")!;
  const load = built.get("go-load");
  const ops: Figure = { label: "ops/s", pick: (r) => r.ops_per_sec, higherIsBetter: true };
  return [
    {
      name: "rr 1 × 64 B",
      client: (p) => [cload, String(p), "rr", "1", "64", String(seconds)],
      figures: [ops],
    },
    {
      name: "rr 1 × 64 B latency",
      client: (p) =>
        tcpEchoClient(p, [
          "load",
          "--mode",
          "rr",
          "--connections",
          "1",
          "--duration",
          `${Math.round(seconds * 1_000)}ms`,
        ]),
      figures: [
        { label: "p50 µs", pick: (r) => r.latencyUs.p50, higherIsBetter: false },
        { label: "p99 µs", pick: (r) => r.latencyUs.p99, higherIsBetter: false },
      ],
    },
    {
      name: "rr 50 × 64 B",
      client: (p) => [cload, String(p), "rr", "50", "64", String(seconds)],
      figures: [ops, perServerCpu("ops per server CPU-s", (r) => r.ops_per_sec)],
    },
    {
      name: "connections, 8 at a time",
      client: (p) => [cload, String(p), "conn", "8", "1", String(seconds)],
      figures: [
        { label: "conn/s", pick: (r) => r.ops_per_sec, higherIsBetter: true },
        perServerCpu("conn per server CPU-s", (r) => r.ops_per_sec),
      ],
    },
    {
      name: "stream 4 × 64 KiB",
      client: (p) =>
        load ? [load, String(p), "stream", "4", "65536", String(seconds)] : tcpEchoClient(p, [
          "load",
          "--mode",
          "stream",
          "--connections",
          "4",
          "--duration",
          `${Math.round(seconds * 1_000)}ms`,
        ]),
      figures: [{
        label: "MB/s",
        pick: (r) => r.mb_per_sec ?? r.megabytesPerSecond,
        higherIsBetter: true,
      }],
    },
  ];
}

/** Runs a client pinned to core 1; returns its JSON report. */
async function runClient(server: BenchServer, command: readonly string[]): Promise<Report> {
  const output = await new Deno.Command("taskset", {
    args: ["-c", "1", ...command],
    cwd: repoDir,
    stdin: "null",
  }).output();
  const text = decoder.decode(output.stdout);
  if (!output.success) {
    throw new Error(`client failed on ${server.name}: ${text}${decoder.decode(output.stderr)}`);
  }
  const report = JSON.parse(text.trim().split("\n").at(-1)!);
  // go-load and cload count failures; tcp-echo's client counts them by reason.
  const failures = typeof report.failures === "object"
    ? Object.values(report.failures as Record<string, number>).reduce((a, b) => a + b, 0)
    : report.failures ?? 0;
  if (failures > 0 || (report.integrityFailures ?? 0) > 0) {
    throw new Error(`${server.name}: the client saw failures: ${text}`);
  }
  return report;
}

const median = (values: readonly number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};

/** Figure values by `${scenario}|${figure}|${server}`. */
type Results = Map<string, number[]>;

/** One round: every scenario on every server in turn (A B C ... A B C). */
async function runRound(
  servers: readonly BenchServer[],
  all: readonly Scenario[],
  results: Results,
): Promise<void> {
  for (const scenario of all) {
    for (const server of servers) {
      const port = server.udpPort ?? server.tlsPort ?? server.port;
      const pid = await server.pid();
      const [cpuBefore, started] = [await cpuSeconds(pid), performance.now()];
      const report = await runClient(server, scenario.client(port));
      const elapsed = (performance.now() - started) / 1000;
      report.server_cpu = (await cpuSeconds(pid) - cpuBefore) / elapsed;
      for (const figure of scenario.figures) {
        const key = `${scenario.name}|${figure.label}|${server.name}`;
        results.set(key, [...(results.get(key) ?? []), figure.pick(report)]);
      }
    }
  }
}

/** Rounds until every median moved less than 3% in the last round (at least `minRounds`). */
async function runRounds(
  servers: readonly BenchServer[],
  all: readonly Scenario[],
  options: BenchOptions,
): Promise<{ results: Results; rounds: number }> {
  const results: Results = new Map();
  let previous: number[] = [];
  for (let round = 1; round <= options.maxRounds; round++) {
    await runRound(servers, all, results);
    const medians = [...results.values()].map(median);
    const settled = round >= options.minRounds &&
      medians.every((m, i) => Math.abs(m - previous[i]) <= 0.03 * Math.abs(previous[i]));
    console.error(`  round ${round} done${settled ? ": medians settled" : ""}`);
    if (settled) return { results, rounds: round };
    previous = medians;
  }
  return { results, rounds: options.maxRounds };
}

/** A row of the table: a figure's medians and the ratios that matter for it. */
interface Row {
  readonly scenario: string;
  readonly figure: string;
  readonly medians: Record<string, number>;
  readonly ratios: Record<string, number | string>;
}

/** The memory rows of the tables: the figure each shows. */
const MEMORY_ROWS: readonly [scenario: string, pick: (m: MemoryFigures) => number][] = [
  ["memory per connection, idle", (m) => m.idleKiB],
  ["memory per connection, after a 64 KiB echo", (m) => m.afterEchoKiB],
];

/** The comparisons the table makes: tcp-echo's variant against its reference. */
const RATIOS: readonly [label: string, ours: string, reference: string][] = [
  ["data off / go io.Copy", "tcp-echo, data off", "go io.Copy"],
  ["data off / node", "tcp-echo, data off", "node pipe"],
  ["data off / deno loop", "tcp-echo, data off", DENO_LOOP],
  ["defaults / go-logging-echo", "tcp-echo, defaults", "go-logging-echo"],
];

function tableRows(
  servers: readonly BenchServer[],
  all: readonly Scenario[],
  results: Results,
  memory: Record<string, MemoryFigures>,
): Row[] {
  const rows: Row[] = [];
  for (const scenario of all) {
    for (const figure of scenario.figures) {
      const medians = Object.fromEntries(servers.map((s) => [
        s.name,
        median(results.get(`${scenario.name}|${figure.label}|${s.name}`)!),
      ]));
      rows.push({
        scenario: scenario.name,
        figure: figure.label,
        medians,
        ratios: ratiosOf(medians, figure),
      });
    }
  }
  for (const [scenario, pick] of MEMORY_ROWS) {
    const medians = Object.fromEntries(Object.entries(memory).map(([n, m]) => [n, pick(m)]));
    rows.push({
      scenario,
      figure: "KiB",
      medians,
      ratios: ratiosOf(medians, { higherIsBetter: false }),
    });
  }
  return rows;
}

/**
 * The ratios of a row (above 1× is tcp-echo doing better); "client-bound"
 * where cecho, Go and tcp-echo give the same rate within 5%.
 */
function ratiosOf(
  medians: Record<string, number>,
  figure: Pick<Figure, "higherIsBetter" | "perServerCpu">,
) {
  const { higherIsBetter } = figure;
  const ratios: Record<string, number | string> = {};
  const same = ["cecho", "go io.Copy", "tcp-echo, data off"].map((name) => medians[name]);
  const clientBound = same.every((v) => v !== undefined) &&
    Math.max(...same) <= 1.05 * Math.min(...same) && higherIsBetter && !figure.perServerCpu;
  for (const [label, ours, reference] of RATIOS) {
    if (medians[ours] === undefined || medians[reference] === undefined) continue;
    const ratio = higherIsBetter
      ? medians[ours] / medians[reference]
      : medians[reference] / medians[ours];
    ratios[label] = clientBound && label.startsWith("data off") ? "client-bound" : ratio;
  }
  return ratios;
}

function format(value: number): string {
  if (value >= 10_000) return `${(value / 1_000).toFixed(1)}k`;
  if (value >= 100) return value.toFixed(0);
  return value.toFixed(2);
}

/** The table as Markdown, to paste into the README. */
function renderTable(servers: readonly BenchServer[], rows: readonly Row[]): string {
  const ratioLabels = RATIOS.map(([label]) => label).filter((label) =>
    rows.some((row) => row.ratios[label] !== undefined)
  );
  const header = ["scenario", "figure", ...servers.map((s) => s.name), ...ratioLabels];
  const cells = rows.map((row) => [
    row.scenario,
    row.figure,
    ...servers.map((s) => format(row.medians[s.name])),
    ...ratioLabels.map((label) => {
      const ratio = row.ratios[label];
      return typeof ratio === "number" ? `${ratio.toFixed(2)}×` : ratio ?? "";
    }),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i].length)));
  const line = (values: string[]) =>
    `| ${values.map((c, i) => i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i])).join(" | ")} |`;
  const rule = `| ${
    widths.map((w, i) => i < 2 ? "-".repeat(w) : "-".repeat(w - 1) + ":").join(" | ")
  } |`;
  return [line(header), rule, ...cells.map(line)].join("\n");
}

/**
 * Checks the log of tcp-echo as shipped: no record dropped, as many closed
 * records as open ones, and the data records hold every byte the server
 * counted as received (shown bytes plus `omitted_bytes`).
 */
async function checkRecords(server: BenchServer): Promise<string> {
  const metrics = await (await fetch(`http://127.0.0.1:${server.adminPort}/metrics`)).text();
  const received = metrics.split("\n").filter((l) => l.startsWith("tcp_echo_received_bytes_total{"))
    .reduce((sum, l) => sum + Number(l.split(" ").at(-1)), 0);
  await stop(server); // Everything is written once it exits.
  let opened = 0, closed = 0, rawBytes = 0, dropped = 0, records = 0;
  const file = await Deno.open(server.logFile!);
  let rest = "";
  for await (const chunk of file.readable.pipeThrough(new TextDecoderStream())) {
    const lines = (rest + chunk).split("\n");
    rest = lines.pop()!;
    for (const line of lines) {
      records++;
      if (line.includes(" - TCP connection open.")) opened++;
      else if (line.includes(" - TCP connection closed.")) closed++;
      else if (line.includes("records dropped")) dropped++;
      const at = line.indexOf(RAW_RECORD);
      if (at < 0) continue;
      const inside = line.slice(at + RAW_RECORD.length, line.indexOf("]", at));
      rawBytes += inside === "" ? 0 : inside.split(" ").length;
      const omitted = /omitted_bytes=(\d+)/.exec(line);
      if (omitted) rawBytes += Number(omitted[1]);
    }
  }
  const ok = dropped === 0 && opened === closed && rawBytes === received;
  return `${ok ? "ok" : "FAILED"}: ${records} records, ${opened} connections opened and closed, ` +
    `${rawBytes} bytes in data records of ${received} received, ${dropped} drop reports`;
}

// ---------------------------------------------------------------------------
// TLS: tcp-echo's TLS port against Go crypto/tls
// ---------------------------------------------------------------------------

const TLS_REFERENCE = "go crypto/tls";
/** Deno's own TLS server: what the runtime can do, with none of the facts the banner tells. */
const TLS_CEILING = "Deno.listenTls";
/** A client busier than this share of its core may be what limited the figure: the row says so. */
const CLIENT_LIMITED_SHARE = 0.8;

/** A figure's median by scenario, figure label and server. */
type MedianAt = (scenario: string, figure: string, server: string) => number;

function medianAt(results: Results): MedianAt {
  return (scenario, figure, server) => median(results.get(`${scenario}|${figure}|${server}`)!);
}

/**
 * A cell of CPU shares (or losses), `servers` in order; a client share over
 * {@linkcode CLIENT_LIMITED_SHARE} is marked, since that figure is partly the client's.
 */
function sharesCell(
  at: MedianAt,
  scenario: string,
  figure: string,
  servers: readonly string[],
): string {
  const shares = servers.map((server) => at(scenario, figure, server));
  const limited = figure === "client CPU" && shares.some((share) => share > CLIENT_LIMITED_SHARE);
  return shares.map((share) => share.toFixed(2)).join(", ") + (limited ? " (client-limited)" : "");
}
const TLS_OURS = "tcp-echo TLS, data off";
const TLS_SERVERS = [TLS_REFERENCE, TLS_CEILING, TLS_OURS] as const;

/** The TLS servers, in {@linkcode TLS_SERVERS} order, with one certificate (ECDSA P-256). */
async function tlsKinds(
  built: Map<string, string>,
  files: Record<string, string>,
): Promise<ServerKind[]> {
  const reference = { env: files, logs: false, bannerBytes: 0, tcpEcho: false, tls: true };
  return [
    { ...reference, name: TLS_REFERENCE, command: [built.get("go-copy-echo")!] },
    {
      ...reference,
      name: TLS_CEILING,
      command: DENO_ECHO_COMMAND,
    },
    {
      name: TLS_OURS,
      command: await tcpEchoCommand(),
      env: { HOST: "127.0.0.1", ...BANNER_ENV, LOG_DATA_BYTES: "0", ADMIN_PORT: "off", ...files },
      logs: true,
      bannerBytes: 0,
      tcpEcho: false,
      tls: true,
    },
  ];
}

/**
 * TLS workloads, with go-load on core 1. Its CPU share tells who limited a
 * figure; the server's CPU share gives the figure per server CPU-second, the
 * server's own cost, which a client at its limit does not hide.
 */
function tlsScenarios(seconds: number, load: string): Scenario[] {
  const cpu: Figure[] = [
    { label: "client CPU", pick: (r) => r.client_cpu, higherIsBetter: false },
    { label: "server CPU", pick: (r) => r.server_cpu, higherIsBetter: false },
  ];
  return [
    {
      name: "TLS handshakes, 8 at a time",
      client: (p) => [load, String(p), "connect", "8", String(seconds), "tls"],
      figures: [
        { label: "hs/s", pick: (r) => r.connections_per_sec, higherIsBetter: true },
        perServerCpu("hs per server CPU-s", (r) => r.connections_per_sec),
        ...cpu,
      ],
    },
    {
      name: "TLS stream 4 × 64 KiB",
      client: (p) => [load, String(p), "stream", "4", "65536", String(seconds), "tls"],
      figures: [
        { label: "MB/s", pick: (r) => r.mb_per_sec, higherIsBetter: true },
        perServerCpu("MB per server CPU-s", (r) => r.mb_per_sec),
        ...cpu,
      ],
    },
  ];
}

/**
 * The TLS rows: each rate and rate per server CPU-second, the three
 * servers' medians, tcp-echo's ratio to Go and to `Deno.listenTls`, and
 * the client's and the server's CPU shares of that scenario.
 */
function renderTlsTable(
  all: readonly Scenario[],
  results: Results,
  memory: ReadonlyMap<string, MemoryFigures>,
): string {
  const at = medianAt(results);
  const lines = [
    `| scenario | figure | ${
      TLS_SERVERS.join(" | ")
    } | tcp-echo / go | tcp-echo / ${TLS_CEILING} ` +
    "| client CPU | server CPU |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  const shares = (scenario: string, label: string) => sharesCell(at, scenario, label, TLS_SERVERS);
  for (const scenario of all) {
    for (const { label } of scenario.figures.slice(0, 2)) {
      const [go, deno, ours] = TLS_SERVERS.map((server) => at(scenario.name, label, server));
      const rate = !label.includes("CPU-s");
      lines.push(
        `| ${scenario.name} | ${label} | ${format(go)} | ${format(deno)} | ${format(ours)} | ${
          (ours / go).toFixed(2)
        }× | ${(ours / deno).toFixed(2)}× | ${rate ? shares(scenario.name, "client CPU") : ""} | ${
          rate ? shares(scenario.name, "server CPU") : ""
        } |`,
      );
    }
  }
  for (const [scenario, pick] of MEMORY_ROWS) {
    const [go, deno, ours] = TLS_SERVERS.map((name) => pick(memory.get(name)!));
    lines.push(
      `| ${scenario} | KiB | ${format(go)} | ${format(deno)} | ${format(ours)} | ${
        (go / ours).toFixed(2)
      }× | ${(deno / ours).toFixed(2)}× | | |`,
    );
  }
  return lines.join("\n");
}

/** Runs the TLS comparison; returns its table, or why it could not run. */
async function runTls(built: Map<string, string>, options: BenchOptions): Promise<string> {
  if (!built.has("go-copy-echo") || !built.has("go-load")) {
    return "TLS: left out: the Go echo or the Go client could not be built";
  }
  await using pki = await makeTestPki();
  const all = tlsScenarios(options.seconds, built.get("go-load")!);
  const servers: BenchServer[] = [];
  try {
    for (const kind of await tlsKinds(built, pki.serverFiles)) {
      servers.push(await startServer(kind));
    }
    const memory = new Map<string, MemoryFigures>();
    for (const server of servers) {
      memory.set(server.name, await memoryPerConnection(server, options.tlsConnections, true));
    }
    const { results, rounds } = await runRounds(servers, all, options);
    return `TLS (${rounds} rounds; CPU shares in the order of the servers; "client-limited": ` +
      `a client used over ${CLIENT_LIMITED_SHARE} of its core, so that figure is partly the ` +
      `client's, and the figure per server CPU-second is the one to compare):\n\n` +
      renderTlsTable(all, results, memory);
  } finally {
    await stopAll(servers);
  }
}

/** Stops every server and deletes their logs. */
async function stopAll(servers: readonly BenchServer[]): Promise<void> {
  for (const server of servers) await stop(server);
  for (const server of servers) {
    if (server.logFile) await Deno.remove(server.logFile).catch(() => {});
  }
}

// ---------------------------------------------------------------------------
// UDP: tcp-echo's UDP port against a Go UDP echo
// ---------------------------------------------------------------------------

const UDP_REFERENCE = "go UDP echo";
const UDP_SERVERS = [UDP_REFERENCE, "tcp-echo UDP, data off", "tcp-echo UDP, defaults"] as const;
/** Flows the memory-per-flow row opens. */
const UDP_MEMORY_FLOWS = 2_000;

/** A UDP socket bound on loopback (the bench may use 127.0.0.1 only). */
async function loopbackSocket(): Promise<dgram.Socket> {
  const socket = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  return socket;
}

/** Sends a datagram until one comes back (the port is bound and echoing), for 10 s at most. */
async function waitForUdpEcho(port: number): Promise<void> {
  const socket = await loopbackSocket();
  try {
    const answered = new Promise<void>((resolve) => socket.once("message", () => resolve()));
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      socket.send(new Uint8Array([0x2a]), port, "127.0.0.1");
      const outcome = await Promise.race([
        answered.then(() => true),
        new Promise((resolve) => setTimeout(resolve, 100, false)),
      ]);
      if (outcome) return;
    }
    throw new Error(`nothing echoed on UDP port ${port}`);
  } finally {
    await new Promise<void>((resolve) => socket.close(() => resolve()));
  }
}

/** The UDP servers: the Go reference and tcp-echo with data records off and on. */
function udpKinds(built: Map<string, string>, tcpEcho: string[]): ServerKind[] {
  const ours = (name: string, env: Record<string, string>): ServerKind => ({
    name,
    command: tcpEcho,
    env: { HOST: "127.0.0.1", ...BANNER_ENV, ADMIN_PORT: "off", ...env },
    logs: true,
    bannerBytes: 0,
    tcpEcho: false,
    udp: true,
  });
  return [
    {
      name: UDP_REFERENCE,
      command: [built.get("go-copy-echo")!],
      logs: false,
      bannerBytes: 0,
      tcpEcho: false,
      udp: true,
    },
    ours(UDP_SERVERS[1], { LOG_DATA_BYTES: "0" }),
    ours(UDP_SERVERS[2], {}),
  ];
}

/**
 * UDP workloads with cudp-load on core 1: round trips per second, per server
 * CPU-second, losses, and both CPU shares (a client over
 * {@linkcode CLIENT_LIMITED_SHARE} of its core may be what limited a rate).
 */
function udpScenarios(seconds: number, load: string): Scenario[] {
  const figures: Figure[] = [
    { label: "datagrams/s", pick: (r) => r.connections_per_sec, higherIsBetter: true },
    perServerCpu("datagrams per server CPU-s", (r) => r.connections_per_sec),
    { label: "lost", pick: (r) => r.lost, higherIsBetter: false },
    { label: "client CPU", pick: (r) => r.client_cpu, higherIsBetter: false },
    { label: "server CPU", pick: (r) => r.server_cpu, higherIsBetter: false },
  ];
  const run = (flows: number, size: number): Scenario => ({
    name: `UDP rr ${flows} flow${flows === 1 ? "" : "s"} × ${size} B`,
    client: (p) => [load, String(p), "udp", String(flows), String(size), String(seconds)],
    figures,
  });
  return [run(1, 64), run(8, 64), run(8, 1_400)];
}

/**
 * What tcp-echo keeps per UDP flow: `count` sockets on this side (a flow
 * each) send one datagram and wait for its echo; the server's RSS growth per
 * flow, the flows still in its table (UDP_FLOW_TIMEOUT is 30 s).
 */
async function memoryPerFlow(server: BenchServer, count: number): Promise<number> {
  const pid = await server.pid();
  const before = await rssBytes(pid);
  const sockets: dgram.Socket[] = [];
  try {
    for (let batch = 0; batch < count; batch += 250) {
      const opened = Array.from({ length: Math.min(250, count - batch) }, async () => {
        const socket = await loopbackSocket();
        sockets.push(socket);
        const echoed = new Promise<void>((resolve) =>
          socket.on("message", (message: Uint8Array) => {
            if (message.length === 1 && message[0] === 0x2a) resolve();
          })
        );
        socket.send(new Uint8Array([0x2a]), server.udpPort!, "127.0.0.1");
        await echoed;
      });
      await Promise.all(opened);
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
    return (await rssBytes(pid) - before) / count / 1024;
  } finally {
    await Promise.all(
      sockets.map((socket) => new Promise<void>((resolve) => socket.close(() => resolve()))),
    );
  }
}

/** The UDP rows: each server's medians, tcp-echo's against Go's, and the memory per flow. */
function renderUdpTable(
  all: readonly Scenario[],
  results: Results,
  perFlowKiB: ReadonlyMap<string, number>,
): string {
  const at = medianAt(results);
  const lines = [
    `| scenario | figure | ${UDP_SERVERS.join(" | ")} | data off / go | defaults / go | lost | ` +
    "client CPU | server CPU |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const scenario of all) {
    for (const { label } of scenario.figures.slice(0, 2)) {
      const [go, off, shipped] = UDP_SERVERS.map((server) => at(scenario.name, label, server));
      const rate = !label.includes("CPU-s");
      const perRate = (figure: string) =>
        rate ? sharesCell(at, scenario.name, figure, UDP_SERVERS) : "";
      lines.push(
        `| ${scenario.name} | ${label} | ${format(go)} | ${format(off)} | ${format(shipped)} | ${
          (off / go).toFixed(2)
        }× | ${(shipped / go).toFixed(2)}× | ${perRate("lost")} | ${perRate("client CPU")} | ${
          perRate("server CPU")
        } |`,
      );
    }
  }
  const flows = UDP_SERVERS.slice(1).map((server) => format(perFlowKiB.get(server)!));
  lines.push(`| memory per flow | KiB | (no flows) | ${flows.join(" | ")} | | | | | |`);
  return lines.join("\n");
}

/** Runs the UDP comparison; returns its table, or why it could not run. */
async function runUdp(built: Map<string, string>, options: BenchOptions): Promise<string> {
  if (!built.has("go-copy-echo") || !built.has("cudp-load")) {
    return "UDP: left out: the Go echo or the C client (cudp-load) could not be built";
  }
  const all = udpScenarios(options.seconds, built.get("cudp-load")!);
  const servers: BenchServer[] = [];
  try {
    for (const kind of udpKinds(built, await tcpEchoCommand())) {
      servers.push(await startServer(kind));
    }
    const perFlow = new Map<string, number>();
    for (const server of servers.slice(1)) {
      perFlow.set(server.name, await memoryPerFlow(server, UDP_MEMORY_FLOWS));
    }
    const { results, rounds } = await runRounds(servers, all, options);
    return `UDP (${rounds} rounds; cudp-load: each flow sends a datagram and waits for its ` +
      `echo, 250 ms at most; lost and CPU shares in the order of the servers; ` +
      `"client-limited": a client used over ${CLIENT_LIMITED_SHARE} of its core; memory per ` +
      `flow over ${UDP_MEMORY_FLOWS} flows):\n\n` +
      renderUdpTable(all, results, perFlow);
  } finally {
    await stopAll(servers);
  }
}

// ---------------------------------------------------------------------------
// Held connections: the client's `hold` at 10,000 connections
// ---------------------------------------------------------------------------

/** Connections the held-connections row holds, each with a heartbeat a second. */
const HELD_CONNECTIONS = 10_000;

/**
 * The held-connections row: tcp-echo's own client (`hold`, on core 1) holds
 * {@linkcode HELD_CONNECTIONS} connections to tcp-echo with data records off
 * (core 0, no connection or memory limit), a heartbeat on each every second.
 * Once all are open and two seconds have settled, the client's CPU share
 * (of one core) and RSS are read over a window of five times --seconds (at
 * least 10 s); then Ctrl-C (SIGINT) ends the hold and its JSON gives the
 * heartbeats per second it kept up (each connection's answered heartbeats
 * over the time it was open, summed), its stalls and losses. Returns the
 * row as one line of text, or why it could not be measured.
 */
async function benchHeldConnections(options: BenchOptions): Promise<string> {
  const label = `held connections (client hold, ${HELD_CONNECTIONS} × a heartbeat a second)`;
  const server = await startServer({
    name: "tcp-echo, data off, for hold",
    command: await tcpEchoCommand(),
    env: {
      HOST: "127.0.0.1",
      ...BANNER_ENV,
      LOG_DATA_BYTES: "0",
      MAX_CONNECTIONS: "0",
      MEMORY_LIMIT: "off",
    },
    logs: false,
    bannerBytes: 0,
    tcpEcho: true,
  });
  const client = new Deno.Command("taskset", {
    args: [
      "-c",
      "1",
      ...tcpEchoClient(server.port, [
        "hold",
        "--connections",
        String(HELD_CONNECTIONS),
        "--interval",
        "1s",
        "--open-rate",
        "2500",
      ]),
    ],
    cwd: repoDir,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = new Response(client.stdout).text();
  const cpuTicks = async () => {
    const stat = await new Deno.Command("cat", { args: [`/proc/${client.pid}/stat`] }).output();
    const fields = decoder.decode(stat.stdout).split(") ")[1].split(" ");
    return Number(fields[11]) + Number(fields[12]); // utime and stime
  };
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  try {
    // The client says once on stderr that every connection opened.
    let stderr = "";
    const lines = client.stderr.pipeThrough(new TextDecoderStream()).getReader();
    const opened = /hold: (\d+) of \d+ connections opened in ([^\n(]+)/;
    const deadline = performance.now() + 120_000;
    while (!opened.test(stderr) && performance.now() < deadline) {
      const { value, done } = await lines.read();
      if (done) break;
      stderr += value;
    }
    const [, openCount, openTime] = opened.exec(stderr) ?? [];
    // Go on reading (and dropping) its live lines, or the client would block on a full pipe.
    const draining = (async () => {
      while (!(await lines.read()).done);
    })().catch(() => {});
    if (openCount === undefined) {
      client.kill("SIGKILL");
      await draining;
      return `${label}: left out: not every connection opened in 120 s: ${stderr.trim()}`;
    }
    await sleep(2_000);
    const clockTicks = Number(
      decoder.decode((await new Deno.Command("getconf", { args: ["CLK_TCK"] }).output()).stdout),
    );
    const windowMs = Math.max(10_000, options.seconds * 5_000);
    const [ticksBefore, startedAt] = [await cpuTicks(), performance.now()];
    await sleep(windowMs);
    const [ticksAfter, endedAt] = [await cpuTicks(), performance.now()];
    const rss = await rssBytes(client.pid);
    client.kill("SIGINT");
    const [status, text] = await Promise.all([client.status, stdout]);
    await draining;
    if (status.code !== 0) return `${label}: left out: the hold ended with ${status.code}: ${text}`;
    const report = JSON.parse(text) as Report;
    const connections = report.connections as {
      heartbeats: number;
      openedAtMs: number;
      stalls: { ms: number }[];
    }[];
    const rate = connections.reduce(
      (sum, c) => sum + c.heartbeats / ((report.ranMs - c.openedAtMs) / 1_000),
      0,
    );
    const stalls = connections.flatMap((c) => c.stalls.map((s) => s.ms));
    const cpu = (ticksAfter - ticksBefore) / clockTicks / ((endedAt - startedAt) / 1_000);
    return `${label}: ${openCount} held (opened in ${openTime.trim()} at --open-rate 2500), ` +
      `${Math.round(rate)} heartbeats/s answered, client CPU ${(cpu * 100).toFixed(0)}% of a ` +
      `core and RSS ${(rss / 2 ** 20).toFixed(0)} MiB (${
        (rss / 1024 / HELD_CONNECTIONS).toFixed(1)
      } ` +
      `KiB a connection) over ${windowMs / 1_000} s; ${stalls.length} stalls over 500 ms ` +
      `(worst ${Math.round(Math.max(0, ...stalls))} ms), ${report.lost} lost`;
  } finally {
    try {
      client.kill("SIGKILL");
    } catch {
      // It has exited.
    }
    await client.status;
    await stdout.catch(() => "");
    await stop(server);
  }
}

async function main(): Promise<void> {
  let options: BenchOptions | undefined;
  try {
    options = parseOptions(Deno.args);
  } catch (error) {
    if (!(error instanceof BenchUsageError)) throw error;
    console.error(`bench: ${error.message}; see deno task bench --help`);
    Deno.exit(2);
  }
  if (options === undefined) {
    console.log(BENCH_USAGE);
    return;
  }
  const dir = await Deno.makeTempDir({ prefix: "tcp-echo-bench-" });
  const { built, missing } = await buildReferences(dir);
  for (const reason of missing) console.error(`left out: ${reason}`);
  if (!built.has("cload") || !await isInstalled("taskset") || !await isInstalled("node")) {
    console.error("bench: needs cload (gcc and ../shared/bench/), taskset (util-linux) and node");
    Deno.exit(2);
  }
  try {
    const report: Record<string, unknown> = { seconds: options.seconds, missing };
    const texts: string[] = [];
    for (const section of options.sections) {
      console.error(`bench: ${section}`);
      if (section === "plain") {
        const plain = await runPlain(built, options);
        Object.assign(report, plain.json);
        texts.push(plain.text);
      } else if (section === "tls") texts.push(report.tls = await runTls(built, options));
      else if (section === "udp") texts.push(report.udp = await runUdp(built, options));
      else texts.push(report.held = await benchHeldConnections(options));
    }
    console.log(options.json ? JSON.stringify(report) : texts.join("\n\n"));
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/**
 * The plain rows: every server on its port, the memory rows, the rounds,
 * and the record check of the shipped settings.
 */
async function runPlain(
  built: Map<string, string>,
  options: BenchOptions,
): Promise<{ text: string; json: Record<string, unknown> }> {
  const all = scenarios(options.seconds, built);
  const servers: BenchServer[] = [];
  try {
    for (const kind of await serverKinds(built)) servers.push(await startServer(kind));
    const memory: Record<string, MemoryFigures> = {};
    for (const server of servers) {
      memory[server.name] = await memoryPerConnection(server, options.idleConnections, false);
    }
    const { results, rounds } = await runRounds(servers, all, options);
    const rows = tableRows(servers, all, results, memory);
    const shipped = servers.find((s) => s.name === "tcp-echo, defaults")!;
    const records = await checkRecords(shipped);
    const text =
      `tcp-echo bench: ${rounds} rounds of ${options.seconds} s per run, medians; servers on core 0, ` +
      `clients on core 1; Deno ${Deno.version.deno}; ratios above 1× mean tcp-echo did better\n\n` +
      `${renderTable(servers, rows)}\n\nrecord check (tcp-echo, defaults): ${records}`;
    return { text, json: { rounds, rows, records } };
  } finally {
    await stopAll(servers);
  }
}

if (import.meta.main) await main();
