import assert from "node:assert/strict";
import {
  BANNER_FIELDS,
  concatBytes,
  formatAddress,
  formatDuration,
  formatHostPort,
  parseBannerText,
  parseDuration,
  renderBannerText,
  unmapIPv4,
  writeAll,
} from "./wire.ts";
import { type Environment, loadConfig } from "./config.ts";
import { renderBanner } from "../main.ts";
import { ALL_BANNER_ENV, ALL_BANNER_TEXT, decoder } from "../testing/support.ts";

Deno.test("banner: exact bytes for all, none and some fields", () => {
  const banner = (env: Environment) => decoder.decode(renderBanner(loadConfig(env).banner));
  assert.equal(banner(ALL_BANNER_ENV), ALL_BANNER_TEXT);
  assert.equal(banner({}), "");
  assert.equal(
    banner({ NODE_NAME: "EchoNode", POD_IP: "10.0.0.1", POD_NAMESPACE: "" }),
    "Welcome, you are connected to node EchoNode.\nWith IP address 10.0.0.1.\n",
  );
  // As go-echo prints them: a value of spaces, or with spaces around it, is kept as it is.
  assert.equal(
    banner({ POD_IP: "   ", NODE_NAME: " EchoNode " }),
    "Welcome, you are connected to node  EchoNode .\nWith IP address    .\n",
  );
});

Deno.test("banner field table: the server renders what the client parses, field by field", () => {
  const values = {
    node: "n",
    pod: "p",
    namespace: "ns",
    ip: "10.0.0.1",
    serviceAccount: "sa",
    version: "v2",
    ips: "10.244.0.5,fd00:10:244::5",
    clientAddress: "[::1]:5",
    sourceIdentity: "spiffe://cluster.local/ns/default/sa/sleep",
    connectionId: "6c7f4971-40f1-4f72-54c4-e1462a846189",
  };
  const text = renderBannerText(values);
  assert.equal(text.split("\n").length, BANNER_FIELDS.length + 1);
  assert.deepEqual(parseBannerText(text), values);
  assert.deepEqual(parseBannerText(ALL_BANNER_TEXT), {
    node: "node-1",
    pod: "tcp-echo-v1-7c775f57c9-frprp",
    namespace: "default",
    ip: "172.16.2.90",
    serviceAccount: "default",
    version: "v1",
  });
  assert.deepEqual(parseBannerText("Hello.\r\nVersion v1.\r\nVersion v2.\n"), { version: "v1" });
  assert.equal(renderBannerText({}), "");
});

Deno.test("addresses: IPv4-mapped shown as IPv4, IPv6 in brackets", () => {
  assert.equal(unmapIPv4("::ffff:10.0.0.7"), "10.0.0.7");
  assert.equal(unmapIPv4("::1"), "::1");
  const addr = (hostname: string): Deno.NetAddr => ({ transport: "tcp", hostname, port: 53422 });
  assert.equal(formatAddress(addr("::ffff:10.0.0.7")), "10.0.0.7:53422");
  assert.equal(formatAddress(addr("fe80::1")), "[fe80::1]:53422");
  assert.equal(formatAddress(addr("10.0.0.7")), "10.0.0.7:53422");
});

Deno.test("formatHostPort brackets IPv6 only", () => {
  assert.equal(formatHostPort("127.0.0.1", 80), "127.0.0.1:80");
  assert.equal(formatHostPort("::", 8080), "[::]:8080");
  assert.equal(formatHostPort("localhost", 1), "localhost:1");
});

Deno.test("durations: one grammar for the server and the client", () => {
  for (const text of ["0ms", "500ms", "1500ms", "10s", "90s", "2m", "1h"]) {
    assert.equal(formatDuration(parseDuration(text)!), text === "0ms" ? "0ms" : text);
  }
  assert.equal(formatDuration(120_000), "2m");
  assert.equal(parseDuration("500ms"), 500);
  assert.equal(parseDuration("10s"), 10_000);
  assert.equal(parseDuration("2m"), 120_000);
  assert.equal(parseDuration("1h"), 3_600_000);
  assert.equal(parseDuration("0s"), 0);
  for (const bad of ["soon", "10", "1.5s", "-1s", "s", "10 s", "1d"]) {
    assert.equal(parseDuration(bad), undefined, bad);
  }
});

Deno.test("writeAll goes on until a writer that takes a few bytes at a time took them all", async () => {
  const taken: Uint8Array[] = [];
  const counts: number[] = [];
  const writer = {
    write(bytes: Uint8Array) {
      const n = Math.min(3, bytes.length);
      taken.push(bytes.slice(0, n));
      return Promise.resolve(n);
    },
  };
  await writeAll(writer, Uint8Array.of(1, 2, 3, 4, 5, 6, 7), (n) => counts.push(n));
  assert.deepEqual(concatBytes(taken), Uint8Array.of(1, 2, 3, 4, 5, 6, 7));
  assert.deepEqual(counts, [3, 3, 1]);
});
