/**
 * `deno task bench`: measures tcp-echo against a reference echo server in one
 * run, on this machine's loopback.
 *
 * The reference is an echo server written the way a Node.js user would
 * (`net.createServer((s) => s.pipe(s))`, run with `node`). tcp-echo runs as it
 * is deployed: banner on, open/close records on, metrics on; data records off,
 * then on. Servers are pinned to core 0 and the client (`tcp-echo client`) to
 * core 1 (`taskset`), or the client's share of a shared core would hide the
 * servers' differences. Each scenario is run on every server in turn
 * (A B C A B C ...), for several rounds; the table shows medians and their
 * ratios to the reference.
 *
 * A program of its own (it starts servers and clients as subprocesses); it
 * prints figures and asserts nothing: performance is measured here, never in
 * a test.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { freePort, isInstalled, waitForPort } from "./test_support.ts";

const repoDir = new URL(".", import.meta.url).pathname;
const decoder = new TextDecoder();

/** One server under measurement. */
interface BenchServer {
  readonly name: string;
  readonly port: number;
  readonly child: Deno.ChildProcess;
  /** Bytes the server sends before echoing (its banner). */
  readonly bannerBytes: number;
  /** Where its log goes, for the log volume (tcp-echo only). */
  readonly logFile?: string;
}

/** One measurement: the client's arguments and the figures taken from its JSON report. */
interface Scenario {
  readonly name: string;
  readonly args: readonly string[];
  readonly figures: readonly {
    label: string;
    pick: (report: ClientReport) => number;
    higherIsBetter: boolean;
  }[];
}

// deno-lint-ignore no-explicit-any
type ClientReport = Record<string, any>;

const REFERENCE_SOURCE = "require('net').createServer((s) => s.pipe(s))" +
  ".listen(Number(process.argv[1]), '127.0.0.1')";

const BANNER_ENV = {
  NODE_NAME: "bench-node",
  POD_NAME: "tcp-echo-v1-7c775f57c9-frprp",
  POD_NAMESPACE: "default",
  POD_IP: "10.0.0.1",
  SERVICE_ACCOUNT: "tcp-echo",
  SERVICE_VERSION: "v1",
};

async function startReference(): Promise<BenchServer> {
  const port = freePort();
  const child = new Deno.Command("taskset", {
    args: ["-c", "0", "node", "-e", REFERENCE_SOURCE, String(port)],
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  await waitForPort(port);
  return { name: "node reference", port, child, bannerBytes: 0 };
}

async function startTcpEcho(name: string, env: Record<string, string>): Promise<BenchServer> {
  const port = freePort();
  const denoJson = JSON.parse(await Deno.readTextFile(`${repoDir}deno.json`));
  const startArgs = String(denoJson.tasks.start).split(/\s+/).slice(1);
  const logFile = await Deno.makeTempFile({ prefix: "tcp-echo-bench-", suffix: ".log" });
  const log = await Deno.open(logFile, { write: true });
  // The log goes to a file, as a container runtime keeps it.
  const child = new Deno.Command("taskset", {
    args: ["-c", "0", Deno.execPath(), ...startArgs],
    cwd: repoDir,
    env: {
      HOST: "127.0.0.1",
      TCP_PORT: String(port),
      ADMIN_PORT: String(freePort()),
      ...BANNER_ENV,
      ...env,
    },
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  // Copy the log to the file without this process reading it line by line.
  child.stdout.pipeTo(log.writable).catch(() => {});
  await waitForPort(port);
  const bannerBytes = new TextEncoder().encode(
    `Welcome, you are connected to node ${BANNER_ENV.NODE_NAME}.\n` +
      `Running on Pod ${BANNER_ENV.POD_NAME}.\nIn namespace ${BANNER_ENV.POD_NAMESPACE}.\n` +
      `With IP address ${BANNER_ENV.POD_IP}.\nService ${BANNER_ENV.SERVICE_ACCOUNT}.\n` +
      `Version ${BANNER_ENV.SERVICE_VERSION}.\n`,
  ).length;
  return { name, port, child, bannerBytes, logFile };
}

async function stop(server: BenchServer): Promise<void> {
  try {
    server.child.kill("SIGTERM");
  } catch {
    // Already gone.
  }
  await server.child.status;
}

/** The server's resident memory, as `ps` reports it (Deno reads /proc only with --allow-all). */
async function rssBytes(pid: number): Promise<number> {
  const output = await new Deno.Command("ps", { args: ["-o", "rss=", "-p", String(pid)] }).output();
  const kib = Number(decoder.decode(output.stdout).trim());
  if (!output.success || !(kib > 0)) throw new Error(`no RSS for process ${pid}`);
  return kib * 1024;
}

/**
 * Opens `count` connections to `server`, each echoing one byte so the server
 * has really taken it up, and returns the growth of the server's RSS per
 * connection.
 */
async function memoryPerConnection(server: BenchServer, count: number): Promise<number> {
  const before = await rssBytes(server.child.pid);
  const conns: Deno.TcpConn[] = [];
  try {
    for (let batch = 0; batch < count; batch += 250) {
      const opened = await Promise.all(
        Array.from(
          { length: Math.min(250, count - batch) },
          () => Deno.connect({ hostname: "127.0.0.1", port: server.port }),
        ),
      );
      conns.push(...opened);
      await Promise.all(opened.map(async (conn) => {
        await conn.write(Uint8Array.of(0x2a));
        const want = server.bannerBytes + 1;
        const buffer = new Uint8Array(want);
        let got = 0;
        while (got < want) {
          const n = await conn.read(buffer.subarray(got));
          if (n === null) throw new Error("closed while opening idle connections");
          got += n;
        }
      }));
    }
    // Let the server settle (its log flushes every 50 ms) before reading RSS.
    await new Promise((resolve) => setTimeout(resolve, 500));
    return (await rssBytes(server.child.pid) - before) / count;
  } finally {
    for (const conn of conns) conn.close();
  }
}

async function runClient(server: BenchServer, args: readonly string[]): Promise<ClientReport> {
  const output = await new Deno.Command("taskset", {
    args: [
      "-c",
      "1",
      Deno.execPath(),
      "run",
      "--allow-net",
      "main.ts",
      "client",
      `127.0.0.1:${server.port}`,
      ...args,
      "--json",
    ],
    cwd: repoDir,
    stdin: "null",
  }).output();
  const text = decoder.decode(output.stdout);
  if (!output.success) {
    throw new Error(`client failed on ${server.name}: ${text}${decoder.decode(output.stderr)}`);
  }
  return JSON.parse(text);
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};

function format(value: number): string {
  if (value >= 10_000) return `${(value / 1_000).toFixed(1)}k`;
  if (value >= 100) return value.toFixed(0);
  return value.toFixed(2);
}

/** The command line: rounds, seconds per measurement, idle connections for the memory figure. */
interface BenchOptions {
  readonly rounds: number;
  readonly seconds: number;
  readonly idleConnections: number;
}

function parseOptions(args: readonly string[]): BenchOptions {
  const { values } = parseArgs({
    args: [...args],
    options: { rounds: { type: "string" }, seconds: { type: "string" }, idle: { type: "string" } },
  });
  return {
    rounds: Number(values.rounds ?? 5),
    seconds: Number(values.seconds ?? 2),
    idleConnections: Number(values.idle ?? 5_000),
  };
}

/** The workloads, each a `tcp-echo client` command line and the figures read from its report. */
function scenarios(seconds: number): Scenario[] {
  const duration = `${Math.round(seconds * 1_000)}ms`;
  const load = (mode: string, connections: number, size: number) => [
    "load",
    "--mode",
    mode,
    "--connections",
    String(connections),
    "--size",
    String(size),
    "--duration",
    duration,
  ];
  return [
    {
      name: "rr 1 conn × 64 B",
      args: load("rr", 1, 64),
      figures: [
        { label: "ops/s", pick: (r) => r.opsPerSecond, higherIsBetter: true },
        { label: "p50 µs", pick: (r) => r.latencyUs.p50, higherIsBetter: false },
        { label: "p99 µs", pick: (r) => r.latencyUs.p99, higherIsBetter: false },
      ],
    },
    {
      name: "rr 50 conns × 64 B",
      args: load("rr", 50, 64),
      figures: [
        { label: "ops/s", pick: (r) => r.opsPerSecond, higherIsBetter: true },
        { label: "p99 µs", pick: (r) => r.latencyUs.p99, higherIsBetter: false },
      ],
    },
    {
      name: "stream 4 conns × 64 KiB",
      args: load("stream", 4, 65_536),
      figures: [{ label: "MB/s", pick: (r) => r.megabytesPerSecond, higherIsBetter: true }],
    },
    {
      name: "connection rate",
      args: ["probe", "--count", String(Math.round(8_000 * seconds)), "--concurrency", "8"],
      figures: [{ label: "conn/s", pick: (r) => r.connectionsPerSecond, higherIsBetter: true }],
    },
  ];
}

/** Exits 2 with a line naming what is missing when taskset or node is not installed. */
async function requireTools(): Promise<string> {
  for (const tool of ["taskset", "node"]) {
    if (!await isInstalled(tool)) {
      console.error(`bench: ${tool} is needed (taskset: util-linux; node: nodejs)`);
      Deno.exit(2);
    }
  }
  const node = await new Deno.Command("node", { args: ["--version"] }).output();
  return decoder.decode(node.stdout).trim();
}

/** Every scenario on every server in turn (A B C A B C ...), `rounds` times: figure → values. */
async function runRounds(
  servers: readonly BenchServer[],
  all: readonly Scenario[],
  rounds: number,
): Promise<Map<string, number[]>> {
  const results = new Map<string, number[]>(); // `${scenario}|${figure}|${server}` -> values
  for (let round = 1; round <= rounds; round++) {
    for (const scenario of all) {
      for (const server of servers) {
        const report = await runClient(server, scenario.args);
        if (report.integrityFailures > 0) {
          throw new Error(`${server.name}: integrity failure in ${scenario.name}`);
        }
        for (const figure of scenario.figures) {
          const key = `${scenario.name}|${figure.label}|${server.name}`;
          results.set(key, [...(results.get(key) ?? []), figure.pick(report)]);
        }
      }
    }
    console.log(`  round ${round}/${rounds} done`);
  }
  return results;
}

/** The table: medians per server and their ratios to the first (the reference). */
function renderTable(
  servers: readonly BenchServer[],
  all: readonly Scenario[],
  results: Map<string, number[]>,
  memory: { readonly connections: number; readonly bytesPerConnection: readonly number[] },
): string {
  const header = [
    "scenario",
    "figure",
    ...servers.map((s) => s.name),
    ...servers.slice(1).map((s) => `ratio ${s.name.replace("tcp-echo, ", "")}`),
  ];
  const rows: string[][] = [];
  for (const scenario of all) {
    for (const figure of scenario.figures) {
      const medians = servers.map((s) =>
        median(results.get(`${scenario.name}|${figure.label}|${s.name}`)!)
      );
      const ratios = medians.slice(1).map((m) =>
        figure.higherIsBetter ? m / medians[0] : medians[0] / m
      );
      rows.push([
        scenario.name,
        figure.label,
        ...medians.map(format),
        ...ratios.map((r) => `${r.toFixed(2)}×`),
      ]);
    }
  }
  const kib = memory.bytesPerConnection.map((bytes) => bytes / 1024);
  rows.push([
    `idle memory (${memory.connections} conns)`,
    "KiB/conn",
    ...kib.map((m) => m.toFixed(2)),
    ...kib.slice(1).map((m) => `${(kib[0] / m).toFixed(2)}×`),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i])).join("  ");
  return [line(header), ...rows.map(line)].join("\n");
}

async function main(): Promise<void> {
  const options = parseOptions(Deno.args);
  const nodeVersion = await requireTools();
  const all = scenarios(options.seconds);
  console.log(
    `tcp-echo bench: ${options.rounds} rounds of ${options.seconds} s per scenario, ` +
      `servers on core 0, client on core 1 (Deno ${Deno.version.deno}, node ${nodeVersion})`,
  );
  const servers = [
    await startReference(),
    await startTcpEcho("tcp-echo, data records off", { LOG_DATA_BYTES: "0" }),
    await startTcpEcho("tcp-echo, data records on", {}),
  ];
  try {
    const bytesPerConnection: number[] = [];
    for (const server of servers) {
      bytesPerConnection.push(await memoryPerConnection(server, options.idleConnections));
    }
    const results = await runRounds(servers, all, options.rounds);
    const memory = { connections: options.idleConnections, bytesPerConnection };
    console.log(`\n${renderTable(servers, all, results, memory)}`);
    console.log(
      `\nmedians of ${options.rounds} rounds; ratios > 1× mean tcp-echo did better than ` +
        `${servers[0].name} (higher rates, lower latency and memory).`,
    );
    for (const server of servers.slice(1)) {
      const size = (await Deno.stat(server.logFile!)).size;
      console.log(`log volume, ${server.name}: ${(size / 1e6).toFixed(1)} MB`);
    }
  } finally {
    for (const server of servers) await stop(server);
    for (const server of servers) {
      if (server.logFile) await Deno.remove(server.logFile).catch(() => {});
    }
  }
}

if (import.meta.main) await main();
