import assert from "node:assert/strict";
import dgram from "node:dgram";
import { planEcho } from "./udp.ts";
import { formatTextRecord } from "./log_output.ts";
import {
  adminRequest,
  decoder,
  encoder,
  type LogCapture,
  randomBytes,
  startTestServer,
  withoutTimestamp,
} from "../testing/support.ts";

/** A UDP client socket on loopback whose datagrams can be awaited one by one. */
class UdpClient implements AsyncDisposable {
  readonly #socket: dgram.Socket;
  readonly #queue: Uint8Array[] = [];
  #waiter: ((datagram: Uint8Array) => void) | undefined;

  private constructor(socket: dgram.Socket, readonly host: string, readonly port: number) {
    this.#socket = socket;
    socket.on("message", (message: Uint8Array) => {
      const datagram = new Uint8Array(message);
      const waiter = this.#waiter;
      this.#waiter = undefined;
      if (waiter) waiter(datagram);
      else this.#queue.push(datagram);
    });
  }

  /** A client of `port` on 127.0.0.1 (`udp4`) or ::1 (`udp6`). */
  static async to(port: number, family: "udp4" | "udp6" = "udp4"): Promise<UdpClient> {
    const socket = dgram.createSocket(family);
    await new Promise<void>((resolve) => socket.bind(0, resolve));
    return new UdpClient(socket, family === "udp4" ? "127.0.0.1" : "::1", port);
  }

  send(bytes: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) =>
      this.#socket.send(bytes, this.port, this.host, (error) => error ? reject(error) : resolve())
    );
  }

  /** The next datagram, or `undefined` when none comes within `ms`. */
  next(ms = 2_000): Promise<Uint8Array | undefined> {
    const queued = this.#queue.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#waiter = undefined;
        resolve(undefined);
      }, ms);
      this.#waiter = (datagram) => {
        clearTimeout(timer);
        resolve(datagram);
      };
    });
  }

  /** The next datagram as text; fails when none comes within 2 s. */
  async text(): Promise<string> {
    const datagram = await this.next();
    assert.ok(datagram, "a datagram within 2 s");
    return decoder.decode(datagram);
  }

  /** Every datagram until none comes for `quietMs` (what a fault let through, in order). */
  async drain(quietMs = 400): Promise<string[]> {
    const got: string[] = [];
    for (let datagram = await this.next(quietMs); datagram; datagram = await this.next(quietMs)) {
      got.push(decoder.decode(datagram));
    }
    return got;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await new Promise<void>((resolve) => this.#socket.close(() => resolve()));
  }
}

const BANNER = "Welcome, you are connected to node udp-node.\n";
const flowRecords = (logs: LogCapture, message: string) =>
  logs.records.filter((r) => r.rawMessage === message);

Deno.test("UDP: a new peer gets the banner, then every datagram back byte for byte, IPv4 and IPv6", async (t) => {
  await using s = await startTestServer({ UDP_PORT: "any", HOST: "::", NODE_NAME: "udp-node" });
  for (const [family, max] of [["udp4", 65_507], ["udp6", 65_527]] as const) {
    await t.step(`${family}: sizes 0 to 1500, powers of two either side, and ${max}`, async () => {
      await using client = await UdpClient.to(s.udpPort, family);
      await client.send(encoder.encode("hello\n"));
      assert.equal(await client.text(), BANNER);
      assert.equal(await client.text(), "hello\n");
      const sizes = Array.from({ length: 1_501 }, (_, i) => i);
      for (let bit = 11; 2 ** bit <= max; bit++) sizes.push(2 ** bit - 1, 2 ** bit, 2 ** bit + 1);
      sizes.push(max - 1, max);
      for (const size of sizes.filter((n) => n <= max)) {
        const payload = randomBytes(size);
        await client.send(payload);
        assert.deepEqual(await client.next(), payload, `${size} bytes`);
      }
    });
  }
  const opened = flowRecords(s.logs, "UDP flow open.");
  assert.deepEqual(opened.map((r) => String(r.properties.client).split(":")[0]), [
    "127.0.0.1",
    "[",
  ]);
  const listening = s.logs.records.find((r) => r.rawMessage === "Listening on UDP port {port}")!;
  assert.equal(
    withoutTimestamp(formatTextRecord(listening)),
    `Listening on UDP port ${s.udpPort} address=[::]:${s.udpPort} families=IPv4,IPv6\n`,
  );
});

Deno.test("UDP flows: open and closed records with counts; silent past UDP_FLOW_TIMEOUT, the banner again", async () => {
  await using s = await startTestServer(
    { UDP_PORT: "any", NODE_NAME: "udp-node", UDP_FLOW_TIMEOUT: "300ms", LOG_DATA_BYTES: "8" },
    { udp: { sweepIntervalMs: 50 } },
  );
  await using client = await UdpClient.to(s.udpPort);
  await client.send(encoder.encode("one\n"));
  assert.equal(await client.text(), BANNER);
  assert.equal(await client.text(), "one\n");
  await client.send(encoder.encode("a\r\nFAKE record\u001b"));
  assert.equal(await client.text(), "a\r\nFAKE record\u001b");
  const received = encoder.encode("one\n").length + encoder.encode("a\r\nFAKE record\u001b").length;
  const closed = await s.logs.waitFor((r) => r.rawMessage === "UDP flow closed.", "idle", 3_000);
  const [open] = flowRecords(s.logs, "UDP flow open.");
  assert.equal(closed.properties.id, open.properties.id);
  assert.equal(
    withoutTimestamp(formatTextRecord(closed)).replace(/duration_ms=\d+/, "duration_ms=D"),
    `${open.properties.id} - UDP flow closed. reason=idle datagrams_in=2 datagrams_out=3 ` +
      `bytes_in=${received} bytes_out=${
        BANNER.length + received
      } duration_ms=D port=${s.udpPort}\n`,
  );
  assert.ok(Number(closed.properties.duration_ms) >= 300);
  const data = s.logs.linesOf(String(open.properties.id)).filter((l) => l.includes("Data (conv"));
  assert.deepEqual(data.map(withoutTimestamp), [
    `${open.properties.id} - Received Data (converted to string): one\n`,
    `${open.properties.id} - Received Data (converted to string): a\\r\\nFAKE  omitted_bytes=7\n`,
  ]);
  // Silent past the timeout: a new flow, and the banner first again.
  await client.send(encoder.encode("two\n"));
  assert.equal(await client.text(), BANNER);
  assert.equal(await client.text(), "two\n");
  assert.equal(flowRecords(s.logs, "UDP flow open.").length, 2);
});

Deno.test("UDP_MAX_FLOWS: a new peer past the limit is dropped, counted and reported once", async () => {
  await using s = await startTestServer({
    UDP_PORT: "any",
    UDP_MAX_FLOWS: "2",
    ADMIN_PORT: "any",
    BANNER_MODE: "off",
  });
  const clients = await Promise.all([0, 1, 2].map(() => UdpClient.to(s.udpPort)));
  try {
    for (const client of clients.slice(0, 2)) {
      await client.send(encoder.encode("in"));
      assert.equal(await client.text(), "in");
    }
    for (let i = 0; i < 3; i++) await clients[2].send(encoder.encode("out"));
    assert.equal(await clients[2].next(300), undefined, "no echo past the limit");
    const warnings = s.logs.records.filter((r) => r.level === "warning");
    assert.deepEqual(warnings.map(formatTextRecord).map(withoutTimestamp), [
      `UDP flow table full: datagrams of new peers are dropped. port=${s.udpPort} limit=2 level=warn\n`,
    ]);
    const metrics = (await adminRequest(s.server.adminAddress!, "/metrics")).body;
    const sample = (series: string) =>
      Number(new RegExp(`^${series.replace(/[{}]/g, "\\$&")} (\\d+)$`, "m").exec(metrics)?.[1]);
    const port = `port="${s.udpPort}"`;
    assert.equal(sample(`tcp_echo_udp_dropped_total{${port},reason="flow_limit"}`), 3);
    assert.equal(sample(`tcp_echo_udp_flows_active{${port}}`), 2);
    assert.equal(sample(`tcp_echo_udp_datagrams_received_total{${port}}`), 5);
    assert.equal(sample(`tcp_echo_udp_datagrams_sent_total{${port}}`), 2);
  } finally {
    for (const client of clients) await client[Symbol.asyncDispose]();
  }
});

/** A random source that returns `values` in turn. */
const draws = (...values: number[]) => () => values.shift() ?? 0.99;

Deno.test("UDP faults: drop, duplicate, reorder and delay, each as configured", async (t) => {
  await t.step(
    "planEcho: one draw per fault that is on; a dropped datagram is not duplicated",
    () => {
      const faults = { dropFraction: 0.5, duplicateFraction: 0.5, reorderFraction: 0, delayMs: 0 };
      assert.deepEqual(planEcho(faults, draws(0.4)), {
        drop: true,
        duplicate: false,
        reorder: false,
      });
      assert.deepEqual(planEcho(faults, draws(0.6, 0.4)), {
        drop: false,
        duplicate: true,
        reorder: false,
      });
    },
  );
  const echoes = async (env: Record<string, string>, random: () => number, sent: string[]) => {
    await using s = await startTestServer(
      { UDP_PORT: "any", BANNER_MODE: "off", ...env },
      { udp: { random } },
    );
    await using client = await UdpClient.to(s.udpPort);
    for (const text of sent) await client.send(encoder.encode(text));
    const got = await client.drain();
    return { got, stats: s.server.stats.forUdpPort(s.udpPort) };
  };
  await t.step("UDP_DROP: the datagrams the draws pick are not echoed, and counted", async () => {
    const { got, stats } = await echoes(
      { UDP_DROP: "25%" },
      draws(0.1, 0.9, 0.2, 0.9, 0.9),
      ["1", "2", "3", "4", "5"],
    );
    assert.deepEqual(got, ["2", "4", "5"]);
    assert.equal(stats.dropped.fault, 2);
  });
  await t.step("UDP_DUPLICATE: a picked echo comes twice", async () => {
    const { got } = await echoes({ UDP_DUPLICATE: "0.5" }, draws(0.9, 0.1, 0.9), ["a", "b", "c"]);
    assert.deepEqual(got, ["a", "b", "b", "c"]);
  });
  await t.step("UDP_REORDER: a picked echo comes after the flow's next one", async () => {
    const { got } = await echoes({ UDP_REORDER: "0.5" }, draws(0.1, 0.9, 0.9), ["a", "b", "c"]);
    assert.deepEqual(got, ["b", "a", "c"]);
  });
  await t.step("UDP_REORDER: held alone, the echo still comes", async () => {
    const { got } = await echoes({ UDP_REORDER: "1" }, draws(0.1), ["only"]);
    assert.deepEqual(got, ["only"]);
  });
  await t.step("UDP_DELAY: each echo waits that long", async () => {
    await using s = await startTestServer({
      UDP_PORT: "any",
      BANNER_MODE: "off",
      UDP_DELAY: "200ms",
    });
    await using client = await UdpClient.to(s.udpPort);
    const started = performance.now();
    await client.send(encoder.encode("late"));
    assert.equal(await client.text(), "late");
    assert.ok(performance.now() - started >= 195, `${performance.now() - started} ms`);
  });
  await t.step(
    "UDP_DELAY: datagrams sent together come back each as it was, in order",
    async () => {
      const sent = ["a first datagram, the longer one", "second", "3"];
      const { got } = await echoes({ UDP_DELAY: "100ms" }, Math.random, sent);
      assert.deepEqual(got, sent);
    },
  );
  await t.step(
    "UDP_DELAY: an echo still waiting when the port closes is dropped, not sent",
    async () => {
      const s = await startTestServer({ UDP_PORT: "any", BANNER_MODE: "off", UDP_DELAY: "200ms" });
      await using client = await UdpClient.to(s.udpPort);
      await client.send(encoder.encode("too late"));
      await s.logs.waitFor((r) => r.rawMessage === "UDP flow open.", "flow open");
      await s[Symbol.asyncDispose]();
      // Past the delay: a timer left behind would send on the closed socket and throw.
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(await client.next(50), undefined);
    },
  );
});

Deno.test("UDP configuration: faults and limits need UDP_PORT; fractions are checked", async () => {
  const { loadConfig } = await import("./config.ts");
  assert.throws(() => loadConfig({ UDP_DROP: "0.1" }), {
    message: "UDP_DROP is set but UDP_PORT is not: allowed: set UDP_PORT too",
  });
  assert.throws(() => loadConfig({ UDP_PORT: "5353", UDP_DROP: "1.5" }), {
    message: 'invalid UDP_DROP="1.5": allowed: a fraction from 0 to 1, as 0.1 or 10%',
  });
  assert.equal(
    loadConfig({ UDP_PORT: "5353", UDP_DUPLICATE: "10%" }).udp.faults.duplicateFraction,
    0.1,
  );
});

Deno.test("UDP shutdown: datagrams that come as the port closes open no flow, arm no timer, log nothing after", async () => {
  for (let round = 0; round < 12; round++) {
    const s = await startTestServer({ UDP_PORT: "any", UDP_DELAY: "50ms" });
    const clients = await Promise.all(Array.from({ length: 32 }, () => UdpClient.to(s.udpPort)));
    try {
      await Promise.all(clients.slice(0, 16).map((client) => client.send(encoder.encode("bye"))));
      await s.logs.waitFor((r) => r.rawMessage === "UDP flow open.", "a flow open");
      // Still coming while the port closes: some are received, none answered.
      const late = Promise.all(clients.slice(16).map((client) => client.send(encoder.encode("x"))));
      await s[Symbol.asyncDispose]();
      await late;
      const opened = flowRecords(s.logs, "UDP flow open.").map((r) => r.properties.id);
      const closed = flowRecords(s.logs, "UDP flow closed.").map((r) => r.properties.id);
      assert.deepEqual(
        closed.toSorted(),
        opened.toSorted(),
        `round ${round}: a closed record each`,
      );
      const last = s.logs.records.findLastIndex((r) => r.rawMessage === "UDP flow closed.");
      const after = s.logs.records.slice(last + 1).filter((r) => r.properties.id !== undefined);
      assert.deepEqual(after.map((r) => r.rawMessage), [], `round ${round}: nothing after`);
      assert.equal(s.server.stats.forUdpPort(s.udpPort).activeFlows, 0);
    } finally {
      await Promise.all(clients.map((client) => client[Symbol.asyncDispose]()));
    }
  }
});
