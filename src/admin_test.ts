import assert from "node:assert/strict";
import {
  ADMIN_HEAD_TIMEOUT_MS,
  ADMIN_IDLE_TIMEOUT_MS,
  ADMIN_MAX_CONNECTIONS,
  ADMIN_MAX_HEAD_BYTES,
  type BadRequestReason,
  REJECT_REASONS,
  RequestHeadParser,
  targetPath,
  VERSION,
} from "./admin.ts";
import { loadConfig } from "./config.ts";
import { renderBanner } from "../main.ts";
import {
  adminRequest,
  decoder,
  encoder,
  ignoreWithout,
  isClosedRecord,
  randomBytes,
  readExactly,
  readToEnd,
  roundTrip,
  startTestServer,
  within,
  writeAll,
} from "../testing/support.ts";
import { closeQuietly, concatBytes } from "./wire.ts";

/** One sample as the official Python client's parser reads it. */
interface ParsedSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const PROMETHEUS_PARSER = `
import json, sys
from prometheus_client.parser import text_string_to_metric_families
print(json.dumps([
  {"name": s.name, "labels": s.labels, "value": s.value}
  for family in text_string_to_metric_families(sys.stdin.read()) for s in family.samples
]))
`;

/** Pipes `text` through `command` and returns its stdout; fails on a non-zero exit. */
async function pipeThrough(command: string, args: string[], text: string): Promise<string> {
  const child = new Deno.Command(command, {
    args,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(encoder.encode(text));
  await writer.close();
  const output = await child.output();
  const all = decoder.decode(output.stdout) + decoder.decode(output.stderr);
  assert.equal(output.code, 0, `${command} ${args.join(" ")}: ${all}`);
  return decoder.decode(output.stdout);
}

/** Parses Prometheus text with the official Python client (Debian python3-prometheus-client). */
async function parsePrometheus(text: string): Promise<ParsedSample[]> {
  return JSON.parse(await pipeThrough("/usr/bin/python3", ["-c", PROMETHEUS_PARSER], text));
}

const pythonParserMissing = await new Deno.Command("/usr/bin/python3", {
  args: ["-c", "import prometheus_client"],
  stdout: "null",
  stderr: "null",
}).output().then((o) => !o.success, () => true);

Deno.test("admin HTTP: healthz, readyz, 404 and 405", async () => {
  await using s = await startTestServer({ ADMIN_PORT: "any" });
  const admin = s.server.adminAddress!;
  assert.deepEqual(await adminRequest(admin, "/healthz"), {
    status: 200,
    type: "text/plain; charset=utf-8",
    body: "ok\n",
  });
  assert.equal((await adminRequest(admin, "/readyz")).status, 200);
  assert.equal((await adminRequest(admin, "/readyz", "HEAD")).status, 200);
  assert.equal((await adminRequest(admin, "/nope")).status, 404);
  const post = await fetch(`http://127.0.0.1:${admin.port}/healthz`, { method: "POST" });
  await post.body?.cancel();
  assert.equal(post.status, 405);
  assert.equal(post.headers.get("allow"), "GET, HEAD");
  const probes = s.logs.records.filter((r) => r.rawMessage === "Admin request.");
  assert.ok(probes.every((r) => r.level === "debug"), "probe requests are not info records");
  assert.deepEqual(
    s.logs.records.filter((r) => r.level === "info" && String(r.rawMessage).startsWith("Admin"))
      .map((r) => String(r.rawMessage)),
    ["Admin HTTP on port {port}"],
  );
  const started = s.logs.records.find((r) => r.rawMessage === "Admin HTTP on port {port}")!;
  assert.equal(started.properties.reserved_descriptors, 4, "descriptors kept for probes");
});

Deno.test("metrics: exact values after a known set of connections, read by real parsers", async (t) => {
  await using s = await startTestServer({ ADMIN_PORT: "any", NODE_NAME: "m" });
  const bannerLength = renderBanner(loadConfig({ NODE_NAME: "m" }).banner).length;
  // Three connections that echo 5 bytes and close, one that resets, one still open.
  for (let i = 0; i < 3; i++) {
    const conn = await s.connect();
    await readExactly(conn, bannerLength);
    await roundTrip(conn, encoder.encode("12345"));
    await conn.closeWrite();
    await readToEnd(conn);
    conn.close();
    await s.logs.waitFor(isClosedRecord(await s.connectionId(i)), `connection ${i} closed`);
  }
  using open = await s.connect();
  await readExactly(open, bannerLength);
  await roundTrip(open, encoder.encode("abc"));

  const response = await fetch(`http://127.0.0.1:${s.server.adminAddress!.port}/metrics`);
  assert.equal(response.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  const text = await response.text();
  const port = String(s.port);

  await t.step("exact values (official Python client parser)", async () => {
    if (pythonParserMissing && Deno.env.get("CI") !== "true") {
      console.warn("ignored step: needs Debian's python3-prometheus-client (.ci/run installs it)");
      return;
    }
    const samples = await parsePrometheus(text);
    const value = (name: string, labels: Record<string, string> = {}) => {
      const sorted = (l: Record<string, string>) => JSON.stringify(Object.entries(l).sort());
      const found = samples.filter((x) => x.name === name && sorted(x.labels) === sorted(labels));
      assert.equal(found.length, 1, `${name} ${JSON.stringify(labels)}`);
      return found[0].value;
    };
    assert.equal(value("tcp_echo_connections_total", { port }), 4);
    assert.equal(value("tcp_echo_connections_active", { port }), 1);
    for (const reason of REJECT_REASONS) {
      assert.equal(value("tcp_echo_connections_rejected_total", { port, reason }), 0, reason);
    }
    assert.equal(value("tcp_echo_connections_closed_total", { port, reason: "eof" }), 3);
    for (const reason of ["reset", "idle", "shutdown", "fault", "error"]) {
      assert.equal(value("tcp_echo_connections_closed_total", { port, reason }), 0, reason);
    }
    assert.equal(value("tcp_echo_received_bytes_total", { port }), 3 * 5 + 3);
    assert.equal(value("tcp_echo_sent_bytes_total", { port }), 4 * bannerLength + 3 * 5 + 3);
    assert.equal(value("tcp_echo_connection_duration_seconds_count", { port }), 3);
    assert.equal(value("tcp_echo_connection_duration_seconds_bucket", { port, le: "+Inf" }), 3);
    assert.equal(value("tcp_echo_build_info", { version: VERSION, deno: Deno.version.deno }), 1);
  });

  await t.step("promtool check metrics finds no problem", async () => {
    if (await ignoreWithout("promtool", "promtool's metrics lint")) return;
    await pipeThrough("promtool", ["check", "metrics"], text);
  });
});

// ---------------------------------------------------------------------------
// Probes that cannot be starved: idle, slow and garbage clients on the admin port.

/** Resolves after `ms`, or at once when `signal` aborts; always clears its timer. */
function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
  });
}

/** What a holding client does on each connection it opens, until the server closes it. */
type Behaviour = (conn: Deno.TcpConn, closed: AbortSignal) => Promise<void>;

const PROBE_HEAD = "HTTP/1.1\r\nHost: 10.0.0.1:8080\r\nUser-Agent: kube-probe/1.31\r\n" +
  "Accept: */*\r\nConnection: close\r\n\r\n";

const TRICKLE = "trickles a request one byte every 200 ms";

/** Clients that hold admin connections the way a bad neighbour does. */
const BEHAVIOURS: Readonly<Record<string, Behaviour>> = {
  "sends nothing": async () => {},
  [TRICKLE]: async (conn, closed) => {
    for (const byte of encoder.encode(`GET /healthz ${PROBE_HEAD}`)) {
      await writeAll(conn, Uint8Array.of(byte));
      await pause(200, closed);
      if (closed.aborted) return;
    }
  },
  // Waiting before the first write too: re-connecting at once after each 400 would make a
  // connect storm (60 000 in 10 s) that runs loopback out of ports, which is another test.
  "sends random bytes every 200 ms": async (conn, closed) => {
    while (!closed.aborted) {
      await pause(200, closed);
      if (!closed.aborted) await writeAll(conn, randomBytes(64));
    }
  },
  "sent a partial request line, then nothing": async (conn) => {
    await writeAll(conn, encoder.encode("GET /healthz HTT"));
  },
};

/** How the holding clients fared. */
interface HoldTally {
  /** Connections opened. */
  opened: number;
  /** Connections the server closed while the client held them. */
  dropped: number;
}

/**
 * `count` clients that each keep one admin connection open, doing `behaviour`
 * on it, and open a new one as soon as the server drops it; `ready` resolves
 * once every client has connected once; `stop()` closes them all.
 */
function holdConnections(port: number, count: number, behaviour: Behaviour) {
  const stopping = new AbortController();
  const tally: HoldTally = { opened: 0, dropped: 0 };
  const connected = Promise.withResolvers<void>();
  let firstConnects = 0;
  const holdOne = async () => {
    let first = true;
    while (!stopping.signal.aborted) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      tally.opened++;
      if (first && ++firstConnects === count) connected.resolve();
      first = false;
      if (!await holdUntilClosed(conn, behaviour, stopping.signal)) tally.dropped++;
    }
  };
  const clients = Promise.all(Array.from({ length: count }, holdOne));
  clients.catch(connected.reject);
  return {
    tally,
    ready: connected.promise,
    async stop(): Promise<HoldTally> {
      stopping.abort();
      await clients;
      return tally;
    },
  };
}

/** Does `behaviour` on `conn` until the server closes it (false) or `stop` aborts (true). */
async function holdUntilClosed(
  conn: Deno.TcpConn,
  behaviour: Behaviour,
  stop: AbortSignal,
): Promise<boolean> {
  const closed = new AbortController();
  const close = () => closeQuietly(conn);
  stop.addEventListener("abort", close, { once: true });
  const reading = (async () => {
    const buffer = new Uint8Array(1_024);
    try {
      while (await conn.read(buffer) !== null);
    } catch {
      // Reset by the server, or closed by `stop`.
    }
    closed.abort();
  })();
  try {
    await behaviour(conn, closed.signal).catch(() => {}); // Writes fail once the server closes.
    await reading;
  } finally {
    stop.removeEventListener("abort", close);
    close();
  }
  return stop.aborted;
}

/** One probe as the kubelet sends it, on a new connection: the status, body and milliseconds taken. */
async function probe(
  port: number,
  path: string,
): Promise<{ status: number; body: string; ms: number }> {
  const started = performance.now();
  try {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(conn, encoder.encode(`GET ${path} ${PROBE_HEAD}`));
    const answer = decoder.decode(await readToEnd(conn, 3_000));
    const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(answer)?.[1] ?? 0);
    return {
      status,
      body: answer.slice(answer.indexOf("\r\n\r\n") + 4),
      ms: performance.now() - started,
    };
  } catch {
    return { status: 0, body: "", ms: performance.now() - started };
  }
}

/** The minimum, median and maximum of `values`, for a report line. */
function spread(values: readonly number[]): string {
  const sorted = values.toSorted((a, b) => a - b);
  const ms = (v: number | undefined) => `${(v ?? NaN).toFixed(1)} ms`;
  return `min ${ms(sorted[0])}, median ${ms(sorted[sorted.length >> 1])}, max ${ms(sorted.at(-1))}`;
}

const PROBE_PATHS = ["/healthz", "/readyz", "/healthz"] as const;
const PROBE_BOUND_MS = 1_000;

/**
 * Holds `clients` connections doing `behaviour` while 24 probes are made,
 * three at a time, a round every 500 ms (several seconds in all), and checks
 * every probe was answered 200 within {@linkcode PROBE_BOUND_MS}; resolves
 * with how the clients fared.
 */
async function assertProbesAnswered(
  what: string,
  clients: number,
  behaviour: Behaviour,
): Promise<HoldTally> {
  await using s = await startTestServer({ ADMIN_PORT: "any" });
  const port = s.server.adminAddress!.port;
  const holders = holdConnections(port, clients, behaviour);
  const results: Awaited<ReturnType<typeof probe>>[] = [];
  try {
    await within(10_000, `${clients} clients connected`, holders.ready);
    for (let round = 0; round < 8; round++) {
      const pace = pause(500);
      results.push(...await Promise.all(PROBE_PATHS.map((path) => probe(port, path))));
      await pace;
    }
  } finally {
    const tally = await holders.stop();
    const answered = results.filter((r) => r.status === 200);
    console.log(
      `${clients} clients that ${what}: ${answered.length} of ${results.length} probes answered ` +
        `200; latency ${spread(results.map((r) => r.ms))}; ` +
        `${tally.opened} connections opened, ${tally.dropped} dropped by the server`,
    );
  }
  for (const [i, result] of results.entries()) {
    assert.equal(result.status, 200, `probe ${i} (${PROBE_PATHS[i % 3]}) answered`);
    assert.equal(result.body, PROBE_PATHS[i % 3] === "/healthz" ? "ok\n" : "ready\n");
    assert.ok(result.ms < PROBE_BOUND_MS, `probe ${i} took ${result.ms.toFixed(1)} ms`);
  }
  assert.equal(results.length, 24);
  return holders.tally;
}

Deno.test("admin probes: 200 idle connections held and re-opened do not starve /healthz and /readyz", async () => {
  await assertProbesAnswered("send nothing", 200, BEHAVIOURS["sends nothing"]);
});

Deno.test(`admin probes: more idle clients than ADMIN_MAX_CONNECTIONS are evicted oldest first, probes answered`, async () => {
  const clients = ADMIN_MAX_CONNECTIONS + 64;
  const tally = await assertProbesAnswered("send nothing", clients, BEHAVIOURS["sends nothing"]);
  // The idle timeout alone would drop each client about 5 times in the run.
  assert.ok(tally.dropped > 20 * clients, `${tally.dropped} dropped: evicted for newcomers`);
});

Deno.test("admin probes: trickling, random-byte and half-request clients do not starve probes", async (t) => {
  for (
    const [what, behaviour] of Object.entries(BEHAVIOURS).filter(([w]) => w !== "sends nothing")
  ) {
    await t.step(`200 clients that ${what}`, async () => {
      await assertProbesAnswered(what, 200, behaviour);
    });
  }
});

/** Sends `request` on a new admin connection; the whole answer and the milliseconds it took. */
async function exchange(
  port: number,
  request: Uint8Array,
): Promise<{ answer: string; ms: number }> {
  const started = performance.now();
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(conn, request);
  const answer = decoder.decode(await readToEnd(conn, ADMIN_HEAD_TIMEOUT_MS + 1_000));
  return { answer, ms: performance.now() - started };
}

const OK_ANSWER = "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\n" +
  "content-length: 3\r\nconnection: close\r\n\r\nok\n";
const BAD_REQUEST_ANSWER =
  "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n" +
  "content-length: 12\r\nconnection: close\r\n\r\nbad request\n";
/** An answer "at once": well before the first timeout the server has. */
const AT_ONCE_MS = ADMIN_IDLE_TIMEOUT_MS / 5;

Deno.test("admin HTTP: bare LF answered; garbage and oversized heads get 400 at once", async (t) => {
  await using s = await startTestServer({ ADMIN_PORT: "any" });
  const port = s.server.adminAddress!.port;

  await t.step("bare LF line endings", async () => {
    assert.equal(
      (await exchange(port, encoder.encode("GET /healthz HTTP/1.1\n\n"))).answer,
      OK_ANSWER,
    );
    const readyz = await exchange(port, encoder.encode("\nGET /readyz HTTP/1.0\nHost: x\r\n\n"));
    assert.equal(
      readyz.answer,
      "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\n" +
        "content-length: 6\r\nconnection: close\r\n\r\nready\n",
    );
  });

  await t.step("garbage: 400 at once", async () => {
    const garbage: Record<string, Uint8Array> = {
      "random bytes": Uint8Array.of(0x00, ...randomBytes(63)),
      "a TLS ClientHello": Uint8Array.of(0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1),
      "an SSH banner": encoder.encode("SSH-2.0-OpenSSH_9.6\r\n"),
      "HTTP/2's preface": encoder.encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
      "a space in the target": encoder.encode("GET /heal thz HTTP/1.1\r\n\r\n"),
      "a bare CR": encoder.encode("GET /healthz HTTP/1.1\rHost: x\r\n\r\n"),
      "a space before a colon": encoder.encode("GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n"),
      "an obsolete line folding": encoder.encode("GET /healthz HTTP/1.1\r\nA: b\r\n c\r\n\r\n"),
      "a NUL in a field": encoder.encode("GET /healthz HTTP/1.1\r\nA: b\0c\r\n\r\n"),
      // Not even a line end: the first bad byte is enough.
      "half a bad request line": encoder.encode("GET /healthz HTTP/3"),
    };
    for (const [what, bytes] of Object.entries(garbage)) {
      const { answer, ms } = await exchange(port, bytes);
      assert.equal(answer, BAD_REQUEST_ANSWER, what);
      assert.ok(ms < AT_ONCE_MS, `${what}: answered after ${ms.toFixed(1)} ms`);
    }
  });

  await t.step("oversized head: 400 at the first byte past the limit", async () => {
    const line = "GET /healthz HTTP/1.1\r\nX-Padding: ";
    const pad = (length: number) => encoder.encode(line + "a".repeat(length - line.length));
    const atLimit = concatBytes([pad(ADMIN_MAX_HEAD_BYTES - 4), encoder.encode("\r\n\r\n")]);
    assert.equal(atLimit.length, ADMIN_MAX_HEAD_BYTES);
    assert.equal((await exchange(port, atLimit)).answer, OK_ANSWER, "a head of the limit is read");
    const { answer, ms } = await exchange(port, pad(ADMIN_MAX_HEAD_BYTES + 1));
    assert.equal(answer, BAD_REQUEST_ANSWER);
    assert.ok(ms < AT_ONCE_MS, `answered after ${ms.toFixed(1)} ms`);
  });
});

Deno.test("admin connections: idle and head deadlines, the oldest waiting one makes room", async (t) => {
  await using s = await startTestServer({ ADMIN_PORT: "any" });
  const port = s.server.adminAddress!.port;
  const connect = () => Deno.connect({ hostname: "127.0.0.1", port });

  await t.step(`a silent connection is closed after ${ADMIN_IDLE_TIMEOUT_MS} ms`, async () => {
    const started = performance.now();
    using conn = await connect();
    assert.equal((await readToEnd(conn)).length, 0);
    const ms = performance.now() - started;
    assert.ok(ms > ADMIN_IDLE_TIMEOUT_MS - 50 && ms < ADMIN_IDLE_TIMEOUT_MS + 500, `${ms} ms`);
  });

  await t.step(`a head still coming after ${ADMIN_HEAD_TIMEOUT_MS} ms is dropped`, async () => {
    const started = performance.now();
    using conn = await connect();
    const stop = new AbortController();
    assert.equal(await holdUntilClosed(conn, BEHAVIOURS[TRICKLE], stop.signal), false);
    const ms = performance.now() - started;
    assert.ok(ms > ADMIN_HEAD_TIMEOUT_MS - 50 && ms < ADMIN_HEAD_TIMEOUT_MS + 500, `${ms} ms`);
  });

  await t.step(
    `past ${ADMIN_MAX_CONNECTIONS}, the oldest without a request is closed`,
    async () => {
      const held: Deno.TcpConn[] = [];
      try {
        for (let i = 0; i < ADMIN_MAX_CONNECTIONS; i++) held.push(await connect());
        using newcomer = await connect();
        assert.equal((await readToEnd(held[0], AT_ONCE_MS)).length, 0, "the oldest is closed");
        for (const conn of [held[1], newcomer]) {
          await writeAll(conn, encoder.encode(`GET /healthz ${PROBE_HEAD}`));
          assert.equal(decoder.decode(await readToEnd(conn)), OK_ANSWER, "the others are served");
        }
      } finally {
        held.forEach((conn) => conn.close());
      }
    },
  );

  await t.step("shutdown closes the connections waiting for a request at once", async () => {
    await using server = await startTestServer({ ADMIN_PORT: "any" });
    const adminPort = server.server.adminAddress!.port;
    using waiting = await Deno.connect({ hostname: "127.0.0.1", port: adminPort });
    // Answered after `waiting` was accepted: the accept loop takes connections in order.
    assert.equal((await probe(adminPort, "/healthz")).status, 200);
    const started = performance.now();
    await server.server.shutdown({ graceMs: 0 });
    assert.equal((await readToEnd(waiting, AT_ONCE_MS)).length, 0);
    assert.ok(performance.now() - started < AT_ONCE_MS);
  });
});

Deno.test("request heads: parsed as they come, invalid at the first bad byte", async (t) => {
  const parse = (text: string | Uint8Array, bytewise = false) => {
    const bytes = typeof text === "string" ? encoder.encode(text) : text;
    const parser = new RequestHeadParser();
    if (!bytewise) return parser.push(bytes);
    let progress = parser.push(new Uint8Array(0));
    for (const byte of bytes) progress = parser.push(Uint8Array.of(byte));
    return progress;
  };
  const complete = (method: string, target: string) => ({ state: "complete", method, target });

  await t.step("complete heads", () => {
    const heads: [string | Uint8Array, ReturnType<typeof complete>][] = [
      [`GET /healthz ${PROBE_HEAD}`, complete("GET", "/healthz")],
      ["GET /healthz HTTP/1.1\n\n", complete("GET", "/healthz")],
      ["\r\n\nHEAD /readyz?verbose HTTP/1.0\nA: b\r\n\n", complete("HEAD", "/readyz?verbose")],
      ["GET http://pod:8080/metrics HTTP/1.1\r\n\r\n", complete("GET", "http://pod:8080/metrics")],
      ["UPDATEREDIRECTREF / HTTP/1.1\r\nEmpty:\r\n\r\n", complete("UPDATEREDIRECTREF", "/")],
      [
        Uint8Array.of(...encoder.encode("GET / HTTP/1.1\r\nA: \t\x80\xff v\r\n\r\n"), 0xfe),
        complete("GET", "/"),
      ],
    ];
    for (const [head, expected] of heads) {
      assert.deepEqual(parse(head), expected, String(head));
      assert.deepEqual(parse(head, true), expected, `${head}, a byte at a time`);
    }
    assert.deepEqual(parse("GET /healthz HTTP/1.1\r\nHost: x\r\n\r"), { state: "partial" });
  });

  await t.step("invalid heads, with the reason", () => {
    const heads: [string, BadRequestReason][] = [
      ["\x16", "method"],
      ["SSH-2.0-OpenSSH_9.6\r", "method"],
      ["A".repeat(21), "method"],
      [" ", "method"],
      ["GET  ", "target"],
      ["GET /\x7f", "target"],
      ["GET /a b", "version"],
      ["PRI * HTTP/2", "version"],
      ["GET / HTTP/1.1 ", "version"],
      ["GET / h", "version"],
      ["GET / HTTP/1.1\r\r", "line_ending"],
      ["GET / HTTP/1.1\r\nA: b\rc", "line_ending"],
      ["GET / HTTP/1.1\r\n\rx", "line_ending"],
      ["GET / HTTP/1.1\r\nHost ", "field_name"],
      ["GET / HTTP/1.1\r\nA: b\r\n ", "field_name"],
      ["GET / HTTP/1.1\r\n:", "field_name"],
      ["GET / HTTP/1.1\r\nNoColon\r", "field_name"],
      ["GET / HTTP/1.1\r\nA: b\0", "field_value"],
      [`GET /${"a".repeat(ADMIN_MAX_HEAD_BYTES - 4)}`, "too_large"],
    ];
    for (const [head, reason] of heads) {
      const expected = { state: "invalid", reason };
      assert.deepEqual(parse(head), expected, JSON.stringify(head));
      assert.deepEqual(parse(head, true), expected, `${JSON.stringify(head)}, a byte at a time`);
      // Invalid at its last byte: all before it is a valid beginning.
      assert.deepEqual(parse(head.slice(0, -1)), { state: "partial" }, JSON.stringify(head));
    }
  });

  await t.step("the path of a target", () => {
    assert.equal(targetPath("/readyz?verbose"), "/readyz");
    assert.equal(targetPath("http://pod:8080/metrics?x=1"), "/metrics");
    assert.equal(targetPath("*"), undefined);
  });
});
