import assert from "node:assert/strict";
import dgram from "node:dgram";
import { startTestServer } from "../testing/support.ts";
import { type ClientProcess, runClientProcess, spawnClientProcess } from "./client_process.ts";

/** Binds a UDP socket on `host`, port 0. */
async function bindUdp(host: "127.0.0.1" | "::1" = "127.0.0.1"): Promise<dgram.Socket> {
  const socket = dgram.createSocket(host === "::1" ? "udp6" : "udp4");
  await new Promise<void>((resolve) => socket.bind(0, host, () => resolve()));
  return socket;
}

const portOf = (socket: dgram.Socket) => (socket.address() as { port: number }).port;
const closeUdp = (socket: dgram.Socket) =>
  new Promise<void>((resolve) => socket.close(() => resolve()));

/** A UDP server of the test's own: answers each datagram with what `answer` makes of it. */
async function startUdpServer(
  answer: (bytes: Uint8Array) => Uint8Array,
): Promise<{ port: number } & AsyncDisposable> {
  const socket = await bindUdp();
  socket.on("message", (bytes: Uint8Array, peer: { address: string; port: number }) => {
    socket.send(answer(new Uint8Array(bytes)), peer.port, peer.address);
  });
  return { port: portOf(socket), [Symbol.asyncDispose]: () => closeUdp(socket) };
}

/** A UDP port with nothing behind it: bound a moment ago, then closed. */
async function silentUdpPort(): Promise<number> {
  const socket = await bindUdp();
  const port = portOf(socket);
  await closeUdp(socket);
  return port;
}

/**
 * A UDP forwarder, as kube-proxy's NAT is to a client: the n-th datagram
 * from the client goes to the backend `route(n)` names (an index into
 * `backends`), or nowhere (`"drop"`); each backend sees the forwarder's
 * socket for it as the peer, and its answers go back to the client. `seen`
 * is told each datagram's number before it is routed.
 */
async function startUdpForwarder(
  backends: readonly number[],
  route: (n: number) => number | "drop",
  seen: (n: number) => void = () => {},
): Promise<{ port: number } & AsyncDisposable> {
  const front = await bindUdp();
  const upstreams = await Promise.all(backends.map(() => bindUdp()));
  let client: { address: string; port: number } | undefined;
  let n = 0;
  front.on("message", (bytes: Uint8Array, peer: { address: string; port: number }) => {
    client = peer;
    seen(++n);
    const to = route(n);
    if (to !== "drop") upstreams[to].send(bytes, backends[to], "127.0.0.1");
  });
  for (const upstream of upstreams) {
    upstream.on("message", (bytes: Uint8Array) => front.send(bytes, client!.port, client!.address));
  }
  return {
    port: portOf(front),
    async [Symbol.asyncDispose]() {
      await Promise.all([front, ...upstreams].map(closeUdp));
    },
  };
}

/**
 * The interval [lo, hi] that X ~ Binomial(n, p) falls outside with a
 * probability under 2 × `tail` (exact tails, summed in log space).
 */
function binomialBounds(n: number, p: number, tail = 1e-6): [number, number] {
  const logPmf: number[] = [n * Math.log(1 - p)];
  for (let k = 0; k < n; k++) {
    logPmf.push(logPmf[k] + Math.log((n - k) / (k + 1)) + Math.log(p / (1 - p)));
  }
  const pmf = logPmf.map(Math.exp);
  let lo = 0;
  for (let below = pmf[0]; below < tail; below += pmf[++lo]);
  let hi = n;
  for (let above = pmf[n]; above < tail; above += pmf[--hi]);
  return [lo, hi];
}

/** The human report with the figures that vary from run to run replaced by `R`. */
function steady(report: string): string {
  return report
    .replace(/\d+\.\d datagrams\/s/g, "R datagrams/s")
    .replace(/^( {2}round trip) .*$/gm, "$1 R");
}

Deno.test("client probe --udp against tcp-echo: the banner names who answered, every datagram echoed, IPv4 and IPv6", async (t) => {
  await using s = await startTestServer({
    UDP_PORT: "any",
    HOST: "::",
    SERVICE_VERSION: "v1",
    POD_NAME: "pod-a",
    NODE_NAME: "node-1",
  });
  await t.step("IPv4: the report, word for word", async () => {
    const { code, stdout, stderr } = await runClientProcess([
      `127.0.0.1:${s.udpPort}`,
      "--udp",
      "--count",
      "8",
      "--concurrency",
      "4",
    ]);
    assert.equal(stderr, "");
    assert.equal(code, 0, stdout);
    assert.equal(
      steady(stdout),
      `probe udp 127.0.0.1:${s.udpPort}: 8 of 8 datagrams echoed correctly (100%), none lost, ` +
        `0 wrong, R datagrams/s

answered by                           count   share  lost
  version v1, pod pod-a, node node-1      8  100.0%     0

failures: none

latency (ms)        p50      p90      p99      max
  round trip R
`,
    );
  });
  await t.step("IPv6 with --size and --json: the report's fields", async () => {
    const { code, stdout } = await runClientProcess([
      `[::1]:${s.udpPort}`,
      "--udp",
      "--count",
      "5",
      "--size",
      "1400",
      "--json",
    ]);
    assert.equal(code, 0, stdout);
    const report = JSON.parse(stdout);
    const { roundTripMs, datagramsPerSecond, ...rest } = report;
    assert.deepEqual(rest, {
      transport: "udp",
      oneFlow: false,
      target: `[::1]:${s.udpPort}`,
      addresses: ["::1"],
      datagrams: 5,
      succeeded: 5,
      successPercent: 100,
      lost: 0,
      lostPercent: 0,
      wrong: 0,
      answeredBy: [{
        server: "version v1, pod pod-a, node node-1",
        count: 5,
        percent: 100,
        lost: 0,
      }],
      failures: {},
      failureDetails: {},
      failureHints: {},
      integrityFailures: 0,
      missedThresholds: [],
    });
    assert.ok(roundTripMs.p50 > 0 && roundTripMs.max >= roundTripMs.p99, stdout);
    assert.ok(datagramsPerSecond > 0);
  });
  await t.step("each datagram from a socket of its own: a flow each, of the family used", () => {
    const opened = s.logs.records.filter((r) => r.rawMessage === "UDP flow open.");
    assert.deepEqual(opened.map((r) => r.properties.family), [
      ...Array(8).fill("IPv4"),
      ...Array(5).fill("IPv6"),
    ]);
    assert.equal(new Set(opened.map((r) => r.properties.client)).size, 13, "13 source ports");
  });
});

Deno.test("client probe --udp against UDP_DROP=0.3: the loss is the server's drops, within the binomial bound", async () => {
  await using s = await startTestServer({
    UDP_PORT: "any",
    UDP_DROP: "0.3",
    SERVICE_VERSION: "v1",
  });
  const count = 400;
  const { code, stdout } = await runClientProcess([
    `127.0.0.1:${s.udpPort}`,
    "--udp",
    "--count",
    String(count),
    "--concurrency",
    "50",
    "--timeout",
    "1s",
    "--json",
  ]);
  assert.equal(code, 1, "below 100%: the default threshold is missed");
  const report = JSON.parse(stdout);
  const dropped = s.server.stats.forUdpPort(s.udpPort).dropped.fault;
  assert.equal(report.lost, dropped, "every datagram lost is one the server dropped");
  const [lo, hi] = binomialBounds(count, 0.3);
  assert.ok(lo <= report.lost && report.lost <= hi, `${report.lost} lost, not in [${lo}, ${hi}]`);
  assert.equal(report.succeeded, count - report.lost);
  assert.equal(report.lostPercent, Math.round((report.lost / count) * 10_000) / 100);
  // One row: every probe had a source port of its own (one used twice would get no banner).
  assert.deepEqual(report.answeredBy, [{
    server: "version v1",
    count: count - report.lost,
    percent: report.successPercent,
    lost: report.lost,
  }]);
  assert.deepEqual(report.failures, { lost: report.lost });
  assert.equal(report.failureDetails.lost, "no echo within 1000 ms");
  assert.equal(
    report.failureHints.lost,
    "the server got the datagram (its banner came) but no echo came back: a fault " +
      "(tcp-echo: UDP_DROP) or loss on the way back",
  );
  assert.deepEqual(report.missedThresholds, [`success ${report.successPercent}% < 100%`]);
});

Deno.test("client probe --udp: a wrong echo is wrong, no answer is lost; both exit 1", async (t) => {
  await t.step("a server that flips a byte of each echo", async () => {
    await using server = await startUdpServer((bytes) => {
      bytes[2] ^= 0x20;
      return bytes;
    });
    const { code, stdout } = await runClientProcess([
      `127.0.0.1:${server.port}`,
      "--udp",
      "--count",
      "3",
      "--message",
      "hello",
    ]);
    assert.equal(code, 1);
    assert.equal(
      steady(stdout),
      `probe udp 127.0.0.1:${server.port}: 0 of 3 datagrams echoed correctly (0%), none lost, ` +
        `3 wrong, R datagrams/s

answered by  count  share
  (nobody)

failures
  mismatch  3  the echo differs from what was sent; 5 bytes came: "heLlo"

latency (ms)        p50      p90      p99      max
  round trip R
threshold missed: success 0% < 100%
`,
    );
  });
  await t.step("nothing listening: lost, and the hint says what that can mean", async () => {
    const port = await silentUdpPort();
    const { code, stdout } = await runClientProcess([
      `127.0.0.1:${port}`,
      "--udp",
      "--count",
      "2",
      "--timeout",
      "200ms",
      "--json",
    ]);
    assert.equal(code, 1);
    const report = JSON.parse(stdout);
    assert.deepEqual(report.failures, { lost: 2 });
    assert.equal(
      report.failureHints.lost,
      `nothing came back from 127.0.0.1:${port}: is a UDP port listening there (tcp-echo: ` +
        "UDP_PORT; a Service's port declared protocol UDP)? UDP has no refusal to see: a closed " +
        "port, a firewall and loss look the same",
    );
  });
});

Deno.test("client probe --udp --one-flow: a backend change behind a forwarder, when and where, and what was lost", async (t) => {
  await using v1 = await startTestServer({
    UDP_PORT: "any",
    SERVICE_VERSION: "v1",
    POD_NAME: "pod-a",
  });
  await using v2 = await startTestServer({
    UDP_PORT: "any",
    SERVICE_VERSION: "v2",
    POD_NAME: "pod-b",
  });
  // 1-5 to v1; 6 and 7 to nowhere (the pod is gone, conntrack still sends there); then v2.
  const route = (n: number) => n <= 5 ? 0 : n <= 7 ? "drop" : 1;
  await t.step("the JSON: one change at datagram 8, 6 and 7 lost in between", async () => {
    await using forwarder = await startUdpForwarder([v1.udpPort, v2.udpPort], route);
    const { code, stdout } = await runClientProcess([
      `127.0.0.1:${forwarder.port}`,
      "--udp",
      "--one-flow",
      "--count",
      "12",
      "--interval",
      "40ms",
      "--timeout",
      "300ms",
      "--json",
    ]);
    assert.equal(code, 1, "two lost: below 100%");
    const report = JSON.parse(stdout);
    const { sourcePort, roundTripMs, changes, timeline, failureHints, ...rest } = report;
    assert.equal(typeof sourcePort, "number");
    assert.ok(roundTripMs.p50 > 0, stdout);
    assert.deepEqual(rest, {
      transport: "udp",
      oneFlow: true,
      target: `127.0.0.1:${forwarder.port}`,
      addresses: ["127.0.0.1"],
      intervalMs: 40,
      endedBy: "count",
      datagrams: 12,
      succeeded: 10,
      successPercent: 83.3,
      lost: 2,
      lostPercent: 16.67,
      wrong: 0,
      failed: 0,
      late: 0,
      duplicates: 0,
      answeredBy: [
        { server: "version v1, pod pod-a", count: 5, percent: 41.7 },
        { server: "version v2, pod pod-b", count: 5, percent: 41.7 },
      ],
      lostDatagrams: [6, 7],
      failures: { lost: 2 },
      failureDetails: { lost: "no echo within 300 ms" },
      integrityFailures: 0,
      missedThresholds: ["success 83.3% < 100%"],
    });
    assert.match(failureHints.lost, /^the flow's backend did not answer them: /);
    assert.deepEqual(changes, [{
      atMs: changes[0].atMs,
      datagram: 8,
      from: "version v1, pod pod-a",
      to: "version v2, pod pod-b",
      lostBetween: [6, 7],
    }]);
    assert.deepEqual(
      timeline.map(({ firstMs: _, lastMs: __, ...run }: Record<string, unknown>) => run),
      [
        { outcome: "echoed", first: 1, last: 5, server: "version v1, pod pod-a" },
        { outcome: "lost", first: 6, last: 7 },
        { outcome: "echoed", first: 8, last: 12, server: "version v2, pod pod-b" },
      ],
    );
    // Datagram 8 went out 7 intervals after the first; v2's banner came after it.
    const { atMs } = changes[0];
    assert.ok(atMs >= timeline[2].firstMs, `the banner came at ${atMs} ms, after datagram 8`);
    assert.ok(timeline[2].firstMs >= 7 * 40 - 1, "sent on the schedule");
  });
  await t.step("the text: the change, the lost datagrams, the timeline", async () => {
    await using forwarder = await startUdpForwarder([v1.udpPort, v2.udpPort], route);
    const { stdout } = await runClientProcess([
      `127.0.0.1:${forwarder.port}`,
      "--udp",
      "--one-flow",
      "--count",
      "12",
      "--interval",
      "40ms",
      "--timeout",
      "300ms",
    ]);
    const times = stdout
      .replace(/from port \d+/, "from port P")
      .replace(/\d+\.\d{3}/g, "T");
    assert.equal(
      steady(times),
      `probe udp 127.0.0.1:${forwarder.port}: one flow from port P, a datagram every 40ms
10 of 12 datagrams echoed correctly (83.3%), 2 lost (16.67%), 0 wrong

answered by              count  share
  version v1, pod pod-a      5  41.7%
  version v2, pod pod-b      5  41.7%

answer changes: 1
  at T s, datagram 8: version v1, pod pod-a → version v2, pod pod-b; lost in between: 6–7

timeline (datagrams by number; sent at, in seconds since the first)
  1–5   T–T  echoed   version v1, pod pod-a
  6–7   T–T  lost
        T        changed  version v1, pod pod-a → version v2, pod pod-b
  8–12  T–T  echoed   version v2, pod pod-b

failures
  lost  2  no echo within 300 ms
           hint: the flow's backend did not answer them: a fault (tcp-echo: UDP_DROP), loss on the way, or a backend that is gone while the flow still goes to it (a stale conntrack entry: another backend's banner ends it, see the answer changes)

latency (ms)        p50      p90      p99      max
  round trip R
threshold missed: success 83.3% < 100%
`,
    );
  });
  await t.step("Ctrl-C stops the sending; the report follows", async () => {
    // The forwarder sees the 4th datagram: Ctrl-C, as a person would press it.
    const started: { client?: ClientProcess } = {};
    const interruptAt = (n: number) => n === 4 && started.client!.signal("SIGINT");
    await using forwarder = await startUdpForwarder([v1.udpPort], () => 0, interruptAt);
    await using running = await spawnClientProcess([
      `127.0.0.1:${forwarder.port}`,
      "--udp",
      "--one-flow",
      "--count",
      "1000",
      "--interval",
      "20ms",
      "--json",
    ]);
    started.client = running;
    const { code, stdout } = await running.finish();
    assert.equal(code, 0, stdout);
    const report = JSON.parse(stdout);
    assert.equal(report.endedBy, "interrupt");
    assert.ok(report.datagrams >= 4 && report.datagrams < 1000, `${report.datagrams} sent`);
    assert.equal(report.succeeded, report.datagrams, "each one sent was answered");
  });
});

Deno.test("client load --udp: the figures add up; against UDP_DROP the losses are the server's drops", async (t) => {
  await t.step("a clean port: every datagram sent was verified", async () => {
    await using s = await startTestServer({ UDP_PORT: "any", SERVICE_VERSION: "v1" });
    const { code, stdout } = await runClientProcess([
      `127.0.0.1:${s.udpPort}`,
      "load",
      "--udp",
      "--connections",
      "3",
      "--duration",
      "300ms",
      "--size",
      "100",
      "--json",
    ]);
    assert.equal(code, 0, stdout);
    const report = JSON.parse(stdout);
    assert.equal(report.flows, 3);
    assert.ok(report.operations > 10, stdout);
    assert.equal(report.sent, report.operations);
    assert.equal(report.lost, 0);
    assert.equal(report.bytesVerified, report.operations * 100);
    assert.ok(report.latencyUs.p50 >= 1 && report.latencyUs.p99 >= report.latencyUs.p50, stdout);
    const rate = report.operations / report.durationS;
    assert.ok(Math.abs(report.opsPerSecond - rate) < rate / 100, "ops/s: verified over time");
    assert.deepEqual(report.answeredBy, [{ server: "version v1", count: 3, percent: 100 }]);
    assert.equal(s.server.stats.forUdpPort(s.udpPort).datagramsReceived, report.sent);
  });
  await t.step(
    "UDP_DROP=0.3: lost are the drops (and echoes slower than --timeout), within the binomial bound",
    async () => {
      await using s = await startTestServer({ UDP_PORT: "any", UDP_DROP: "0.3" });
      const { code, stdout } = await runClientProcess([
        `127.0.0.1:${s.udpPort}`,
        "load",
        "--udp",
        "--connections",
        "8",
        "--duration",
        "1s",
        "--timeout",
        "200ms",
        "--json",
      ]);
      assert.equal(code, 1, "lost datagrams are failures");
      const report = JSON.parse(stdout);
      assert.equal(report.sent, report.operations + report.lost);
      // Lost: dropped, or slower than --timeout; a slow echo comes late, or after its flow ended.
      const dropped = s.server.stats.forUdpPort(s.udpPort).dropped.fault;
      assert.ok(dropped <= report.lost && report.lost - report.late - 8 <= dropped, stdout);
      const [lo, hi] = binomialBounds(report.sent, 0.3);
      assert.ok(lo <= report.lost && report.lost <= hi, `${report.lost} of ${report.sent} lost`);
      assert.deepEqual(report.failures, { lost: report.lost });
      assert.match(report.failureDetails.lost, /^request \d+: no echo within 200 ms$/);
    },
  );
  await t.step("the text", async () => {
    await using s = await startTestServer({ UDP_PORT: "any", SERVICE_VERSION: "v1" });
    const { stdout } = await runClientProcess([
      `127.0.0.1:${s.udpPort}`,
      "load",
      "--udp",
      "--duration",
      "200ms",
    ]);
    assert.match(
      stdout,
      new RegExp(
        `^load udp 127\\.0\\.0\\.1:${s.udpPort}: 1 flow, 0\\.2\\d\\d s\\n` +
          " {2}\\d+ datagrams/s echoed, (\\d+) verified of \\1 sent, none lost\\n" +
          " {2}latency \\(µs\\) {6}p50 {6}p90 {6}p99 {6}max {5}mean\\n" +
          " {15}( +\\d+){4} +\\d+\\n" +
          " {2}answered by {3}flows {3}share\\n" +
          " {4}version v1 {6}1  100\\.0%\\n" +
          " {2}failures: none\\n$",
      ),
    );
  });
});

Deno.test("client --udp usage errors: one line, exit 2", async () => {
  const cases: [string[], string][] = [
    [["127.0.0.1:1", "hold", "--udp"], "--udp is an option of probe and load, not of hold"],
    [
      ["127.0.0.1:1", "load", "--udp", "--mode", "stream"],
      "--mode stream is for TCP; load --udp is request/response (a datagram, its echo, the next)",
    ],
    [["127.0.0.1:1", "--udp", "--tls"], "--tls is a TLS option; there is no TLS over --udp"],
    [
      ["127.0.0.1:1", "--one-flow"],
      "--one-flow needs --udp (a TCP connection is one flow already)",
    ],
  ];
  for (const [args, message] of cases) {
    const { code, stdout, stderr } = await runClientProcess(args);
    assert.equal(code, 2, args.join(" "));
    assert.equal(stdout, "");
    assert.equal(stderr, `tcp-echo client: ${message}; see deno task client -- --help\n`);
  }
});
