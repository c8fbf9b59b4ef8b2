import assert from "node:assert/strict";
import dns from "node:dns";
import { type LogCapture, makeTestPki, startTestServer } from "../testing/support.ts";
import { runClientProcess } from "./client_process.ts";
import { literalFamily, resolveAddress } from "./family.ts";

/** What getaddrinfo gives for `name` in `family` here (/etc/hosts decides localhost's IPv6). */
function lookupHere(name: string, family: 4 | 6): Promise<string | undefined> {
  return new Promise((resolve) =>
    dns.lookup(name, { family }, (error, address) => resolve(error ? undefined : address))
  );
}

/** The families of the server's open records of `message`, in order. */
const familiesSeen = (logs: LogCapture, message: string) =>
  logs.records.filter((r) => r.rawMessage === message).map((r) => r.properties.family);

/** A probe report's first line with its rate made `R`. */
const firstLine = (stdout: string) => stdout.split("\n")[0].replace(/\d+\.\d (\w+)\/s$/, "R $1/s");

const IPV6_OF_LOCALHOST = await lookupHere("localhost", 6);

/** The report's words for localhost without an IPv6 address here. */
const NO_IPV6 =
  `"localhost" has no IPv6 address (getaddrinfo ENOTFOUND localhost); it has 127.0.0.1`;

Deno.test("client family lookups: literals as they are, names by getaddrinfo in the family asked", async () => {
  assert.equal(literalFamily("127.0.0.1"), 4);
  assert.equal(literalFamily("::1"), 6);
  assert.equal(literalFamily("localhost"), undefined);
  assert.deepEqual(await resolveAddress("::1", undefined), { address: "::1", family: 6 });
  assert.deepEqual(await resolveAddress("localhost", 4), { address: "127.0.0.1", family: 4 });
  if (IPV6_OF_LOCALHOST === undefined) {
    await assert.rejects(resolveAddress("localhost", 6), { name: "LookupError", message: NO_IPV6 });
  } else {
    assert.deepEqual(await resolveAddress("localhost", 6), {
      address: IPV6_OF_LOCALHOST,
      family: 6,
    });
  }
  await assert.rejects(resolveAddress("no-such-host.invalid", 4), {
    name: "LookupError",
    message: "failed to lookup address information: getaddrinfo ENOTFOUND no-such-host.invalid",
  });
});

Deno.test("client -4/-6: the family asked for, for TCP and UDP, names and literals, every command", async (t) => {
  await using s = await startTestServer({ HOST: "::", UDP_PORT: "any", SERVICE_VERSION: "v1" });
  await t.step("probe -4 localhost: over IPv4, the address named", async () => {
    const { code, stdout } = await runClientProcess([`localhost:${s.port}`, "-4", "--count", "2"]);
    assert.equal(code, 0, stdout);
    assert.equal(
      firstLine(stdout),
      `probe localhost:${s.port} over IPv4 (127.0.0.1): 2 of 2 connections echoed correctly ` +
        "(100%), R connections/s",
    );
    assert.deepEqual(familiesSeen(s.logs, "TCP connection open."), ["IPv4", "IPv4"]);
  });
  await t.step("probe -6 [::1]: over IPv6; the address is the target's, not repeated", async () => {
    const { code, stdout } = await runClientProcess([`[::1]:${s.port}`, "-6", "--count", "2"]);
    assert.equal(code, 0, stdout);
    assert.equal(
      firstLine(stdout),
      `probe [::1]:${s.port} over IPv6: 2 of 2 connections echoed correctly (100%), ` +
        "R connections/s",
    );
    assert.deepEqual(familiesSeen(s.logs, "TCP connection open.").slice(2), ["IPv6", "IPv6"]);
  });
  await t.step("probe -6 localhost: its IPv6 address, or a dns failure that says why", async () => {
    const { code, stdout } = await runClientProcess([
      `localhost:${s.port}`,
      "-6",
      "--count",
      "1",
      "--json",
    ]);
    const report = JSON.parse(stdout);
    assert.equal(report.family, "IPv6");
    if (IPV6_OF_LOCALHOST === undefined) {
      assert.equal(code, 1);
      assert.deepEqual(report.failures, { dns: 1 });
      assert.deepEqual(report.failureDetails, { dns: NO_IPV6 });
      assert.deepEqual(report.failureHints, {
        dns: "drop -6, or give the name an AAAA record (a cluster's Service: ipFamilyPolicy " +
          "PreferDualStack or RequireDualStack; this machine: a line in /etc/hosts)",
      });
      assert.deepEqual(report.addresses, []);
    } else {
      assert.equal(code, 0, stdout);
      assert.deepEqual(report.addresses, [IPV6_OF_LOCALHOST]);
    }
  });
  await t.step("without -4/-6: the address the name connected to is named", async () => {
    const { code, stdout } = await runClientProcess([`localhost:${s.port}`, "--count", "1"]);
    assert.equal(code, 0, stdout);
    const [open] = s.logs.records.filter((r) => r.rawMessage === "TCP connection open.").slice(-1);
    const seen = String(open.properties.family) === "IPv4" ? "127.0.0.1" : "::1";
    assert.equal(
      firstLine(stdout),
      `probe localhost:${s.port} (${seen}): 1 of 1 connections echoed correctly (100%), ` +
        "R connections/s",
    );
  });
  await t.step("probe --udp -4 localhost and -6 [::1]: flows of each family", async () => {
    const v4 = await runClientProcess([`localhost:${s.udpPort}`, "--udp", "-4", "--json"]);
    assert.equal(v4.code, 0, v4.stdout);
    const r4 = JSON.parse(v4.stdout);
    assert.deepEqual([r4.family, r4.addresses, r4.succeeded], ["IPv4", ["127.0.0.1"], 20]);
    const v6 = await runClientProcess([`[::1]:${s.udpPort}`, "--udp", "-6", "--count", "3"]);
    assert.equal(v6.code, 0, v6.stdout);
    assert.match(v6.stdout, /^probe udp \[::1\]:\d+ over IPv6: 3 of 3 datagrams echoed/);
    assert.deepEqual(familiesSeen(s.logs, "UDP flow open."), [
      ...Array(20).fill("IPv4"),
      ...Array(3).fill("IPv6"),
    ]);
  });
  await t.step("load -6 and load --udp -4, hold -4: each in its family", async () => {
    const before = familiesSeen(s.logs, "TCP connection open.").length;
    const load = await runClientProcess([
      `[::1]:${s.port}`,
      "load",
      "-6",
      "--duration",
      "200ms",
      "--json",
    ]);
    assert.equal(load.code, 0, load.stdout);
    const report = JSON.parse(load.stdout);
    assert.deepEqual([report.family, report.addresses], ["IPv6", ["::1"]]);
    assert.match(load.stdout, /"operations":[1-9]/);
    const udp = await runClientProcess([
      `localhost:${s.udpPort}`,
      "load",
      "--udp",
      "-4",
      "--duration",
      "200ms",
    ]);
    assert.equal(udp.code, 0, udp.stdout);
    assert.match(udp.stdout, /^load udp localhost:\d+ over IPv4 \(127\.0\.0\.1\): 1 flow, /);
    const hold = await runClientProcess([
      `localhost:${s.port}`,
      "hold",
      "-4",
      "--connections",
      "2",
      "--duration",
      "300ms",
      "--interval",
      "100ms",
    ]);
    assert.equal(hold.code, 0, hold.stdout);
    assert.deepEqual(familiesSeen(s.logs, "TCP connection open.").slice(before), [
      "IPv6",
      "IPv4",
      "IPv4",
    ]);
  });
});

Deno.test("client probe -4 -6: both families at once, a report for each (text and JSON)", async (t) => {
  await using s = await startTestServer({ HOST: "::", UDP_PORT: "any", SERVICE_VERSION: "v1" });
  const v6 = IPV6_OF_LOCALHOST;
  await t.step(
    "text: one report per family, the family and the address in its first line",
    async () => {
      const { code, stdout } = await runClientProcess([
        `localhost:${s.port}`,
        "-4",
        "-6",
        "--count",
        "2",
      ]);
      assert.equal(code, v6 === undefined ? 1 : 0, stdout);
      const reports = stdout.split(/\n(?=probe )/);
      assert.equal(reports.length, 2, stdout);
      assert.equal(
        firstLine(reports[0]),
        `probe localhost:${s.port} over IPv4 (127.0.0.1): 2 of 2 connections echoed correctly ` +
          "(100%), R connections/s",
      );
      assert.equal(
        firstLine(reports[1]),
        v6 === undefined
          ? `probe localhost:${s.port} over IPv6: 0 of 2 connections echoed correctly (0%), ` +
            "R connections/s"
          : `probe localhost:${s.port} over IPv6 (${v6}): 2 of 2 connections echoed correctly ` +
            "(100%), R connections/s",
      );
      if (v6 === undefined) {
        assert.ok(reports[1].includes(`\n  dns  2  ${NO_IPV6}\n`), reports[1]);
        assert.ok(reports[1].endsWith("\nthreshold missed (IPv6): success 0% < 100%\n"), stdout);
      }
    },
  );
  await t.step("JSON: {target, families: {IPv4, IPv6}}, --udp too", async () => {
    for (const udp of [[], ["--udp"]]) {
      const port = udp.length > 0 ? s.udpPort : s.port;
      const { stdout } = await runClientProcess([
        `localhost:${port}`,
        ...udp,
        "-6",
        "-4",
        "--count",
        "2",
        "--json",
      ]);
      const report = JSON.parse(stdout);
      assert.deepEqual(Object.keys(report), ["target", "families"]);
      assert.equal(report.target, `localhost:${port}`);
      assert.deepEqual(Object.keys(report.families), ["IPv4", "IPv6"], "IPv4 first");
      const { IPv4, IPv6 } = report.families;
      assert.deepEqual(
        [IPv4.transport, IPv4.family, IPv4.addresses, IPv4.succeeded],
        [udp.length > 0 ? "udp" : "tcp", "IPv4", ["127.0.0.1"], 2],
      );
      assert.deepEqual(IPv4.missedThresholds, []);
      assert.equal(IPv6.family, "IPv6");
      if (v6 === undefined) {
        assert.deepEqual(IPv6.failures, { dns: 2 });
        assert.deepEqual(IPv6.missedThresholds, ["success 0% < 100%"]);
      } else {
        assert.deepEqual([IPv6.addresses, IPv6.succeeded], [[v6], 2]);
      }
    }
  });
});

Deno.test("client -4 --tls to a name: the name is still the server name sent and verified", async () => {
  await using pki = await makeTestPki();
  await using s = await startTestServer({
    HOST: "::",
    TLS_PORT: "any",
    SERVICE_VERSION: "v2",
    ...pki.serverFiles,
  });
  const { code, stdout } = await runClientProcess([
    `localhost:${s.tlsPort}`,
    "--tls",
    "--ca",
    pki.path("ca.pem"),
    "-4",
    "--count",
    "2",
    "--json",
  ]);
  assert.equal(code, 0, stdout);
  const report = JSON.parse(stdout);
  assert.deepEqual(report.addresses, ["127.0.0.1"]);
  assert.deepEqual(report.answeredBy, [{
    server: "version v2",
    serverName: "localhost",
    tls: "TLSv1.3",
    count: 2,
    percent: 100,
  }]);
});
