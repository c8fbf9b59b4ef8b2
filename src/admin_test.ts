import assert from "node:assert/strict";
import { REJECT_REASONS, VERSION } from "./admin.ts";
import { loadConfig } from "./config.ts";
import { renderBanner } from "../main.ts";
import {
  adminRequest,
  decoder,
  encoder,
  ignoreWithout,
  isClosedRecord,
  readExactly,
  readToEnd,
  roundTrip,
  startTestServer,
} from "../testing/support.ts";

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
