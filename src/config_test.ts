import assert from "node:assert/strict";
import {
  applyArguments,
  CONFIG_VARIABLES,
  ConfigError,
  type Environment,
  loadConfig,
  renderConfigurationTable,
  renderHelp,
} from "./config.ts";
import {
  decoder,
  encoder,
  freePort,
  LineReader,
  readExactly,
  repoDir,
  startTaskArgs,
  within,
  writeAll,
} from "../testing/support.ts";
import { generatedPart, tableCells } from "../docs/generated.ts";

const PORTS_ALLOWED = "allowed: an integer from 1 to 65535, or a comma list of different ones";
const HOST_ALLOWED = "allowed: an IPv4 or IPv6 address (0.0.0.0, ::, 127.0.0.1), or localhost";

Deno.test("configuration: defaults, values and one-line errors", async (t) => {
  await t.step("defaults", () => {
    const config = loadConfig({});
    assert.deepEqual(config, {
      ports: [3333],
      host: undefined,
      banner: {
        node: undefined,
        pod: undefined,
        namespace: undefined,
        ip: undefined,
        serviceAccount: undefined,
        version: undefined,
        ips: undefined,
      },
      logLevel: "info",
      logFormat: "text",
      logDataBytes: 1024,
      shutdownGraceMs: 10_000,
      adminPort: 8080,
      drainDelayMs: 0,
      maxConnections: 10_000,
      maxPendingConnections: 2_500,
      memoryLimit: "auto",
      idleTimeoutMs: 0,
      showClientAddress: false,
      showConnectionId: false,
      drainNotice: false,
      bannerMode: "connect",
      proxyProtocol: "off",
      proxyTrusted: undefined,
      echoPrefix: undefined,
      echoDelayMs: 0,
      closeAfterBytes: 0,
      tls: {
        ports: [],
        certFile: undefined,
        keyFile: undefined,
        serverNames: [],
        alpn: ["echo"],
        clientCaFile: undefined,
        clientAuth: "optional",
      },
      udp: {
        ports: [],
        flowTimeoutMs: 30_000,
        maxFlows: 10_000,
        faults: { dropFraction: 0, duplicateFraction: 0, reorderFraction: 0, delayMs: 0 },
      },
    });
    assert.ok(Object.isFrozen(config) && Object.isFrozen(config.banner));
    assert.ok(Object.isFrozen(config.tls) && Object.isFrozen(config.tls.alpn));
  });

  await t.step("values", () => {
    const config = loadConfig({
      TCP_PORT: "65535",
      HOST: "[::1]",
      LOG_LEVEL: "WARN",
      LOG_FORMAT: "json",
      LOG_DATA_BYTES: "0",
      SHUTDOWN_GRACE: "2m",
      NODE_NAME: "",
    });
    assert.deepEqual(config.ports, [65535]);
    assert.equal(config.host, "::1");
    assert.equal(config.logLevel, "warn");
    assert.equal(config.logFormat, "json");
    assert.equal(config.logDataBytes, 0);
    assert.equal(config.shutdownGraceMs, 120_000);
    assert.equal(config.banner.node, undefined, "an empty variable counts as unset");
  });

  await t.step("errors name the variable, the value and what is allowed", () => {
    const cases: [Environment, string][] = [
      [{ TCP_PORT: "abc" }, `invalid TCP_PORT="abc": ${PORTS_ALLOWED}`],
      [{ TCP_PORT: "0" }, `invalid TCP_PORT="0": ${PORTS_ALLOWED}`],
      [{ TCP_PORT: "70000" }, `invalid TCP_PORT="70000": ${PORTS_ALLOWED}`],
      [{ TCP_PORT: "80.5" }, `invalid TCP_PORT="80.5": ${PORTS_ALLOWED}`],
      [{ LOG_LEVEL: "loud" }, 'invalid LOG_LEVEL="loud": allowed: debug, info, warn, error'],
      [{ LOG_FORMAT: "xml" }, 'invalid LOG_FORMAT="xml": allowed: text, json'],
      [
        { LOG_DATA_BYTES: "-1" },
        'invalid LOG_DATA_BYTES="-1": allowed: an integer from 0 to 65536',
      ],
      [
        { SHUTDOWN_GRACE: "soon" },
        'invalid SHUTDOWN_GRACE="soon": allowed: a whole number with ms, s, m or h, e.g. 500ms, 10s, 2m',
      ],
      [
        { ADMIN_PORT: "abc" },
        'invalid ADMIN_PORT="abc": allowed: an integer from 1 to 65535, or off',
      ],
      [{ ADMIN_PORT: "0" }, 'invalid ADMIN_PORT="0": allowed: an integer from 1 to 65535, or off'],
      [
        { DRAIN_DELAY: "later" },
        'invalid DRAIN_DELAY="later": allowed: a whole number with ms, s, m or h, e.g. 500ms, 10s, 2m',
      ],
      [
        { MAX_CONNECTIONS: "-1" },
        'invalid MAX_CONNECTIONS="-1": allowed: an integer from 0 to 1000000',
      ],
      [
        { IDLE_TIMEOUT: "forever" },
        'invalid IDLE_TIMEOUT="forever": allowed: a whole number with ms, s, m or h, e.g. 500ms, 10s, 2m',
      ],
      [{ HOST: "a b" }, `invalid HOST="a b": ${HOST_ALLOWED}`],
      [{ HOST: "not-an-ip" }, `invalid HOST="not-an-ip": ${HOST_ALLOWED}`],
      [{ HOST: "1.2.3" }, `invalid HOST="1.2.3": ${HOST_ALLOWED}`],
    ];
    for (const [env, message] of cases) {
      assert.throws(
        () => loadConfig(env),
        (e) => e instanceof ConfigError && e.message === message,
      );
    }
  });
});

Deno.test("program: bad configuration exits 2 with one line on stderr, no stack trace", async (t) => {
  const args = await startTaskArgs();
  const cases: [string, string, string][] = [
    ["TCP_PORT", "abc", "an integer from 1 to 65535"],
    ["TCP_PORT", "0", "an integer from 1 to 65535"],
    ["TCP_PORT", "70000", "an integer from 1 to 65535"],
    ["LOG_LEVEL", "loud", "debug, info, warn, error"],
    ["SHUTDOWN_GRACE", "soon", "e.g. 500ms, 10s, 2m"],
    ["ADMIN_PORT", "http", "an integer from 1 to 65535, or off"],
    ["MAX_CONNECTIONS", "lots", "an integer from 0 to 1000000"],
    ["HOST", "not-an-ip", "an IPv4 or IPv6 address"],
  ];
  for (const [name, value, allowed] of cases) {
    await t.step(`${name}=${value}`, async () => {
      const output = await new Deno.Command(Deno.execPath(), {
        args,
        cwd: repoDir,
        env: { [name]: value, NO_COLOR: "1" },
        stdin: "null",
      }).output();
      const stderr = decoder.decode(output.stderr);
      assert.equal(output.code, 2);
      assert.equal(decoder.decode(output.stdout), "");
      assert.match(stderr, new RegExp(`^tcp-echo: invalid ${name}="${value}": allowed: `));
      assert.ok(stderr.includes(allowed), stderr);
      assert.equal(stderr.split("\n").length, 2, `exactly one line: ${stderr}`);
    });
  }
});

Deno.test("program: a banner variable that is not UTF-8, or an unknown option, exits 2 with one line", async (t) => {
  const args = (await startTaskArgs()).map((arg) => `'${arg}'`).join(" ");
  const cases: [string, string, string][] = [
    [
      "NODE_NAME=caf\\xe9",
      `NODE_NAME="$(printf 'caf\\351')" exec '${Deno.execPath()}' ${args}`,
      "tcp-echo: invalid NODE_NAME: not valid UTF-8; allowed: UTF-8 text\n",
    ],
    [
      "--port 4000",
      `exec '${Deno.execPath()}' ${args} --port 4000`,
      'tcp-echo: unknown option "--port": usage: tcp-echo [--help] [PORTS [PREFIX]]; ' +
      "everything else is set by environment variables, listed by --help\n",
    ],
  ];
  for (const [name, script, stderr] of cases) {
    await t.step(name, async () => {
      const output = await new Deno.Command("sh", {
        args: ["-c", script],
        cwd: repoDir,
        env: { NO_COLOR: "1" },
        stdin: "null",
      }).output();
      assert.equal(decoder.decode(output.stderr), stderr);
      assert.equal(output.code, 2);
      assert.equal(decoder.decode(output.stdout), "");
    });
  }
});

Deno.test("program: --help and -h print the configuration table and exit 0", async () => {
  const args = await startTaskArgs();
  for (const flag of ["--help", "-h"]) {
    const output = await new Deno.Command(Deno.execPath(), {
      args: [...args, flag],
      cwd: repoDir,
      stdin: "null",
    }).output();
    assert.equal(output.code, 0);
    assert.equal(decoder.decode(output.stdout), renderHelp());
  }
  for (const { name, defaultText } of CONFIG_VARIABLES) {
    assert.match(renderHelp(), new RegExp(`\\n  ${name} +${defaultText} `));
  }
});

Deno.test("program: deno.json grants exactly the variables the program reads", async () => {
  const args = await startTaskArgs();
  assert.deepEqual(args.filter((a) => a.startsWith("--allow")).sort(), [
    `--allow-env=${CONFIG_VARIABLES.map((v) => v.name).join(",")}`,
    "--allow-net",
    "--allow-read",
    "--allow-sys=systemMemoryInfo",
  ]);
});

Deno.test("docs/configuration.md: its table is the variables' table, as --help prints it", async () => {
  const page = await Deno.readTextFile(`${repoDir}docs/configuration.md`);
  const part = generatedPart(page);
  assert.ok(part !== undefined, "the page has its generated part");
  assert.deepEqual(tableCells(part), tableCells(renderConfigurationTable()), "run deno task docs");
  const documented = tableCells(part).slice(1).map(([name, defaultText, meaning]) => ({
    name: name.replaceAll("`", ""),
    defaultText: defaultText.replaceAll("`", ""),
    meaning: meaning.replaceAll("\\|", "|"),
  }));
  assert.deepEqual(
    documented,
    CONFIG_VARIABLES.map(({ name, defaultText, meaning }) => ({ name, defaultText, meaning })),
  );
});

Deno.test("README: its first lines give the two commands, and .ci/run runs the test one", async () => {
  const readme = await Deno.readTextFile(`${repoDir}README.md`);
  const firstBlock = readme.slice(0, readme.indexOf("## "));
  assert.ok(firstBlock.includes("deno task start"));
  assert.ok(firstBlock.includes("deno task test"));
  const ci = await Deno.readTextFile(`${repoDir}.ci/run`);
  assert.match(ci, /^[^#\n]*\bdeno task test\b/m, ".ci/run runs the README's test command");
});

Deno.test("positional arguments work as Istio's tcp-echo: PORTS PREFIX", async (t) => {
  await t.step("applyArguments", () => {
    assert.deepEqual(applyArguments(["9000,9001", "hello"], { TCP_PORT: "1" }), {
      TCP_PORT: "9000,9001",
      ECHO_PREFIX: "hello",
    });
    assert.deepEqual(applyArguments([], { TCP_PORT: "1" }), { TCP_PORT: "1" });
    assert.throws(() => applyArguments(["1", "2", "3"], {}), ConfigError);
    assert.equal(applyArguments(["9000", ""], {}).ECHO_PREFIX, "", "an empty prefix, as Istio");
    assert.equal(loadConfig(applyArguments(["9000", ""], {})).echoPrefix, "");
    assert.equal(loadConfig(applyArguments(["9000", "a\tb"], {})).echoPrefix, "a\tb");
    assert.equal(applyArguments(["9000", "-x"], {}).ECHO_PREFIX, "-x");
    assert.equal(applyArguments(["--", "9000", "--x"], {}).ECHO_PREFIX, "--x");
    for (const args of [["--port", "4000"], ["-p"], ["9000", "--verbose"]]) {
      const option = args.find((arg) => arg.startsWith("-"));
      assert.throws(
        () => applyArguments(args, {}),
        (e) => e instanceof ConfigError && e.message.startsWith(`unknown option "${option}"`),
      );
    }
  });

  await t.step("the program on two ports with a prefix", async () => {
    const ports = [freePort(), freePort()];
    const child = new Deno.Command(Deno.execPath(), {
      args: [...await startTaskArgs(), ports.join(","), "hello"],
      cwd: repoDir,
      env: { HOST: "127.0.0.1", ADMIN_PORT: "off", NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const stdout = new LineReader(child.stdout);
    try {
      await stdout.waitFor((l) => l.includes(`Listening on TCP port ${ports[1]}`), "listening");
      for (const port of ports) {
        using conn = await Deno.connect({ hostname: "127.0.0.1", port });
        await writeAll(conn, encoder.encode("world\n"));
        assert.equal(decoder.decode(await readExactly(conn, 12)), "hello world\n");
      }
      child.kill("SIGTERM");
      assert.equal((await within(5_000, "exit", child.status)).code, 0);
    } finally {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      await child.status;
      await stdout.rest();
    }
  });
});
