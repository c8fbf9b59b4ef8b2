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
  await t.step("errors", () => {
    const cases: [string[], string][] = [
      [[], "the target HOST:PORT is missing"],
      [
        ["localhost"],
        'the target is HOST:PORT (e.g. 127.0.0.1:3333 or [::1]:3333), not "localhost"',
      ],
      [["h:70000"], 'the target is HOST:PORT (e.g. 127.0.0.1:3333 or [::1]:3333), not "h:70000"'],
      [["h:1", "soak"], 'the command is probe or load, not "soak"'],
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
        "--duration is an option of load (HOST:PORT load --duration ...), not of probe",
      ],
      [["h:1", "load", "--count", "5"], "--count is an option of probe, not of load"],
      [["h:1", "--message", ""], "--message needs at least one character"],
      [
        ["h:1", "load", "--mode", "stream", "--prefix", "one"],
        "--mode stream needs a byte-exact echo; it cannot be used with --prefix",
      ],
      [["h:1", "probe", "extra"], 'unexpected argument "extra"'],
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
  assert.ok(usage.startsWith("Usage: tcp-echo client HOST:PORT [probe|load] [options]\n"));
  assert.match(usage, /\n {2}--count N {10}probe: connections in all \(default 20\)\n/);
  assert.match(usage, /\n {2}--fail-under K=V {3}exit 1 .+\n {21}ops=N \(load rr\)/);
  assert.match(usage, /\nFailure reasons: dns \(the host does not resolve\), refused,/);
});
