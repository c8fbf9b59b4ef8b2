import assert from "node:assert/strict";
import {
  clientCommand,
  type ClientOptions,
  clientUsage,
  parseClientArgs,
  UsageError,
} from "./options.ts";

Deno.test("client arguments: defaults, options and one-line usage errors", async (t) => {
  await t.step("defaults", () => {
    const options = parseClientArgs(["127.0.0.1:3333"]);
    assert.deepEqual(
      options,
      {
        hostname: "127.0.0.1",
        port: 3333,
        command: "probe",
        udp: false,
        oneFlow: false,
        families: [],
        count: 20,
        concurrency: 1,
        size: 64,
        message: undefined,
        prefix: undefined,
        connections: 1,
        durationMs: 5_000,
        mode: "rr",
        tls: undefined,
        timeoutMs: 5_000,
        intervalMs: 1_000,
        stallMs: 500,
        reconnect: false,
        openRate: 1_000,
        expectations: [],
        json: false,
        failUnder: { success: 100 },
      } satisfies ClientOptions,
    );
  });
  await t.step("options", () => {
    const options = parseClientArgs([
      "[::1]:9000",
      "load",
      "--mode",
      "stream",
      "--connections",
      "4",
      "--duration",
      "2m",
      "--timeout=250ms",
      "--fail-under",
      "mbps=100,ops=5",
      "--json",
    ]);
    assert.equal(options.hostname, "::1");
    assert.equal(options.port, 9000);
    assert.equal(options.command, "load");
    assert.equal(options.mode, "stream");
    assert.equal(options.size, 65_536, "stream writes 64 KiB chunks by default");
    assert.equal(options.durationMs, 120_000);
    assert.equal(options.timeoutMs, 250);
    assert.deepEqual(options.failUnder, { success: undefined, mbps: 100, ops: 5 });
    assert.equal(options.json, true);
    assert.equal(options.tls, undefined);
    assert.equal(parseClientArgs(["h:1", "--message=-x"]).message, "-x");
    assert.deepEqual(
      parseClientArgs([
        "h:1",
        "--tls",
        "--sni",
        "v2.example.com",
        "--alpn",
        "echo,h2",
        "--ca",
        "ca.pem",
        "--cert",
        "c.pem",
        "--key",
        "c.key",
      ]).tls,
      {
        serverName: "v2.example.com",
        alpn: ["echo", "h2"],
        caFile: "ca.pem",
        certFile: "c.pem",
        keyFile: "c.key",
        insecure: false,
      },
    );
    assert.equal(
      parseClientArgs(["h:1", "load", "--mode", "connect", "--tls", "--insecure"]).tls
        ?.insecure,
      true,
    );
  });
  await t.step("hold: defaults, options, and --expect in one word or two", () => {
    const defaults = parseClientArgs(["h:1", "hold"]);
    assert.equal(defaults.command, "hold");
    assert.equal(defaults.connections, 10);
    assert.equal(defaults.durationMs, Infinity, "until Ctrl-C");
    assert.equal(defaults.intervalMs, 1_000);
    assert.equal(defaults.stallMs, 500);
    assert.equal(defaults.timeoutMs, 5_000);
    assert.equal(defaults.reconnect, false);
    assert.equal(defaults.openRate, 1_000);
    assert.deepEqual(defaults.expectations, []);
    assert.deepEqual(defaults.failUnder, { success: undefined });
    const options = parseClientArgs([
      "h:1",
      "hold",
      "--connections",
      "10000",
      "--interval",
      "250ms",
      "--stall",
      "100ms",
      "--timeout",
      "2s",
      "--duration",
      "1m",
      "--reconnect",
      "--open-rate",
      "200",
      "--expect",
      "moved-to",
      "v2",
      "--expect=no-loss",
      "--expect",
      "stays-on=v1",
      "--tls",
      "--insecure",
    ]);
    assert.equal(options.connections, 10_000);
    assert.equal(options.intervalMs, 250);
    assert.equal(options.stallMs, 100);
    assert.equal(options.timeoutMs, 2_000);
    assert.equal(options.durationMs, 60_000);
    assert.equal(options.reconnect, true);
    assert.equal(options.openRate, 200);
    assert.deepEqual(options.expectations, [
      { kind: "moved-to", version: "v2" },
      { kind: "no-loss" },
      { kind: "stays-on", version: "v1" },
    ]);
    assert.equal(options.tls?.insecure, true);
    assert.equal(parseClientArgs(["h:1", "hold", "--expect", "stays-on", "v1"]).command, "hold");
  });
  await t.step("--udp, --one-flow, -4 and -6", () => {
    const flow = parseClientArgs([
      "h:1",
      "--udp",
      "--one-flow",
      "--interval",
      "200ms",
      "--count",
      "300",
      "-4",
    ]);
    assert.deepEqual(
      [flow.udp, flow.oneFlow, flow.intervalMs, flow.count, flow.families],
      [true, true, 200, 300, [4]],
    );
    assert.deepEqual(parseClientArgs(["h:1", "-6", "-4"]).families, [4, 6], "IPv4 first");
    assert.deepEqual(parseClientArgs(["h:1", "-46"]).families, [4, 6]);
    assert.deepEqual(parseClientArgs(["h:1", "--ipv6"]).families, [6]);
    assert.deepEqual(parseClientArgs(["[::1]:1", "hold", "-6"]).families, [6]);
    const load = parseClientArgs(["h:1", "load", "--udp", "--mode", "rr", "--size", "65527"]);
    assert.deepEqual([load.udp, load.mode, load.size], [true, "rr", 65_527]);
    assert.equal(parseClientArgs(["10.0.0.1:1", "--udp", "--size", "65507"]).size, 65_507);
  });
  await t.step("errors", () => {
    const cases: [string[], string][] = [
      [[], "the target HOST:PORT is missing"],
      [
        ["localhost"],
        'the target is HOST:PORT (e.g. 127.0.0.1:3333 or [::1]:3333), not "localhost"',
      ],
      [["h:70000"], 'the target is HOST:PORT (e.g. 127.0.0.1:3333 or [::1]:3333), not "h:70000"'],
      [["h:1", "soak"], 'the command is probe, load or hold, not "soak"'],
      [["h:1", "load", "--mode", "udp"], '--mode is rr, stream or connect, not "udp"'],
      [["h:1", "--foo"], "unknown option --foo"],
      [["h:1", "--foo=1"], "unknown option --foo"],
      [["h:1", "-c", "5"], "unknown option -c"],
      [["h:1", "--count"], "--count needs a value (--count N)"],
      [["h:1", "--sni", "--tls"], "--sni needs a value (--sni NAME) before --tls"],
      [
        ["h:1", "--message", "-x"],
        '--message takes a value that starts with "-" only as --message=-x',
      ],
      [["h:1", "--json=yes"], "--json takes no value"],
      [["h:1", "--sni", "a.b"], "--sni needs --tls"],
      [["h:1", "--insecure"], "--insecure needs --tls"],
      [["h:1", "--tls", "--cert", "c.pem"], "--cert and --key go together"],
      [
        ["h:1", "--tls", "--insecure", "--ca", "ca.pem"],
        "--insecure accepts any certificate; --ca would not be used",
      ],
      [["h:1", "--tls", "--alpn", "echo,"], '--alpn takes a comma list of protocols, not "echo,"'],
      [["h:1", "--count", "0"], '--count takes a whole number of at least 1, not "0"'],
      [
        ["h:1", "load", "--duration", "5"],
        '--duration takes a whole number with ms, s, m or h, e.g. 500ms, 10s, 2m, not "5"',
      ],
      [
        ["h:1", "--fail-under", "speed=1"],
        '--fail-under takes success=PCT (0 to 100), ops=N or mbps=N, not "speed=1"',
      ],
      [
        ["h:1", "--fail-under", "success="],
        '--fail-under takes success=PCT (0 to 100), ops=N or mbps=N, not "success="',
      ],
      [
        ["h:1", "--fail-under", "success=150"],
        '--fail-under takes success=PCT (0 to 100), ops=N or mbps=N, not "success=150"',
      ],
      [["h:1", "--fail-under", "ops=10"], "--fail-under ops is for load, not probe"],
      [
        ["h:1", "load", "--fail-under", "success=90"],
        "--fail-under success is for probe, not load",
      ],
      [
        ["h:1", "--duration", "10s"],
        "--duration is an option of load and hold (HOST:PORT load --duration ...), not of probe",
      ],
      [
        ["h:1", "--mode", "rr"],
        "--mode is an option of load (HOST:PORT load --mode ...), not of probe",
      ],
      [["h:1", "load", "--count", "5"], "--count is an option of probe, not of load"],
      [["h:1", "load", "--reconnect"], "--reconnect is an option of hold, not of load"],
      [["h:1", "hold", "--size", "5"], "--size is an option of probe and load, not of hold"],
      [
        ["h:1", "hold", "--fail-under", "ops=1"],
        "--fail-under is an option of probe and load, not of hold",
      ],
      [
        ["h:1", "hold", "--expect", "sideways"],
        '--expect takes no-loss, moved-to VERSION or stays-on VERSION, not "sideways"',
      ],
      [
        ["h:1", "hold", "--expect", "moved-to"],
        "--expect moved-to needs a version (--expect moved-to v2)",
      ],
      [
        ["h:1", "hold", "--expect", "stays-on", "--reconnect"],
        "--expect stays-on needs a version (--expect stays-on v2)",
      ],
      [["h:1", "hold", "--expect", "no-loss=v1"], "--expect no-loss takes no version"],
      [
        ["h:1", "hold", "--expect", "moved-to", "v2"],
        "--expect moved-to judges replacements: it needs --reconnect",
      ],
      [["h:1", "hold", "--interval", "5ms"], "--interval is at least 10ms, not 5ms"],
      [
        ["h:1", "hold", "--stall", "5s"],
        "--stall (5s) must be shorter than --timeout (5s): an answer later than --timeout ends " +
        "the connection",
      ],
      [
        ["h:1", "hold", "--open-rate", "0"],
        '--open-rate takes a whole number of at least 1, not "0"',
      ],
      [["h:1", "hold", "--prefix", "a\nb"], "--prefix is one line"],
      [["h:1", "--message", ""], "--message needs at least one character"],
      [
        ["h:1", "load", "--mode", "stream", "--prefix", "one"],
        "--mode stream needs a byte-exact echo; it cannot be used with --prefix",
      ],
      [["h:1", "probe", "extra"], 'unexpected argument "extra"'],
      [["h:1", "hold", "--udp"], "--udp is an option of probe and load, not of hold"],
      [["h:1", "load", "--one-flow"], "--one-flow is an option of probe, not of load"],
      [["h:1", "--one-flow"], "--one-flow needs --udp (a TCP connection is one flow already)"],
      [
        ["h:1", "--interval", "1s"],
        "--interval of probe is for --udp --one-flow (a datagram each --interval)",
      ],
      [
        ["h:1", "--udp", "--interval", "1s"],
        "--interval of probe is for --udp --one-flow (a datagram each --interval)",
      ],
      [
        ["h:1", "--udp", "--one-flow", "--concurrency", "4"],
        "--one-flow sends from one socket, a datagram each --interval: --concurrency does not apply",
      ],
      [["h:1", "--udp", "--one-flow", "--interval", "1ms"], "--interval is at least 10ms, not 1ms"],
      [
        ["h:1", "load", "--udp", "--mode", "stream"],
        "--mode stream is for TCP; load --udp is request/response (a datagram, its echo, the next)",
      ],
      [
        ["h:1", "load", "--udp", "--mode", "connect"],
        "--mode connect is for TCP; load --udp is request/response (a datagram, its echo, the next)",
      ],
      [["h:1", "--udp", "--tls"], "--tls is a TLS option; there is no TLS over --udp"],
      [["h:1", "--udp", "--sni", "a.b"], "--sni is a TLS option; there is no TLS over --udp"],
      [["h:1", "--udp", "--insecure"], "--insecure is a TLS option; there is no TLS over --udp"],
      [
        ["h:1", "--udp", "--prefix", "hello"],
        "--prefix is for line-mode TCP servers; a UDP echo is byte for byte",
      ],
      [
        ["h:1", "--udp", "--size", "65528"],
        "--size over UDP is at most 65527 bytes (65507 over IPv4), not 65528",
      ],
      [
        ["h:1", "--udp", "-4", "--size", "65508"],
        "--size over IPv4 UDP is at most 65507 bytes, not 65508",
      ],
      [
        ["10.0.0.1:1", "--udp", "--size", "65508"],
        "--size over IPv4 UDP is at most 65507 bytes, not 65508",
      ],
      [["127.0.0.1:1", "-6"], "-6 asks for IPv6, but 127.0.0.1 is an IPv4 address"],
      [["[::1]:1", "-4"], "-4 asks for IPv4, but ::1 is an IPv6 address"],
      [["[::1]:1", "-4", "-6"], "-4 asks for IPv4, but ::1 is an IPv6 address"],
      [
        ["h:1", "load", "-4", "-6"],
        "-4 and -6 together are for probe (a report for each family); load takes one of them",
      ],
      [
        ["h:1", "hold", "--ipv4", "--ipv6"],
        "-4 and -6 together are for probe (a report for each family); hold takes one of them",
      ],
      [["h:1", "-5"], "unknown option -5"],
    ];
    for (const [args, message] of cases) {
      assert.throws(
        () => parseClientArgs(args),
        (e: unknown) => e instanceof UsageError && e.message === message,
        args.join(" "),
      );
    }
  });
});

Deno.test("client command: the way it was started, for --help and usage errors", () => {
  assert.equal(clientCommand("/usr/local/bin/deno"), "deno task client --");
  assert.equal(clientCommand("C:\\Users\\me\\.deno\\bin\\deno.exe"), "deno task client --");
  assert.equal(clientCommand("/tcp-echo"), "tcp-echo client");
  assert.equal(clientCommand("/usr/local/bin/echo-check"), "echo-check client");
  assert.equal(clientCommand("C:\\tools\\tcp-echo.exe"), "tcp-echo client");
  const usage = clientUsage("tcp-echo client");
  assert.ok(usage.startsWith("Usage: tcp-echo client HOST:PORT [probe|load|hold] [options]\n"));
  assert.match(
    usage,
    /\n {2}--count N {10}probe: connections \(--udp: datagrams\) in all \(default 20\)\n/,
  );
  assert.match(usage, /\n {2}--fail-under K=V {3}exit 1 .+\n {21}ops=N \(load rr\)/);
  assert.match(
    usage,
    /\nFailure reasons \(probe, load, a hold connection that could not open\): dns/,
  );
  assert.match(
    usage,
    /\n {2}--expect E {9}hold: exit 0 only if E holds: no-loss, moved-to VERSION or\n/,
  );
  assert.match(
    usage,
    /\nHow a held connection ends: fin \(the peer closed it: EOF\), rst \(reset\),/,
  );
  assert.match(
    usage,
    /\n {2}moved-to VERSION {2}with --reconnect: at least one connection was replaced/,
  );
  assert.match(usage, /\n {2}--udp {14}probe and load a UDP port \(tcp-echo: UDP_PORT\)/);
  assert.match(usage, /\n {2}-4, --ipv4 {9}IPv4 only: /);
  assert.match(
    usage,
    /\n {2}-6, --ipv6 {9}IPv6 only; probe -4 -6: each family, a report for each\n/,
  );
  assert.match(usage, /\nprobe --udp --one-flow: every datagram from one source port, /);
});
