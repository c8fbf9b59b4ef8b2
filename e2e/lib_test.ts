import assert from "node:assert/strict";
import {
  binomialBounds,
  delayedChange,
  drainMs,
  gatewayApiInstallUrl,
  holdSummary,
  judgeProxyRestartHold,
  judgeRolloutHold,
  judgeShiftHold,
  OPEN_CONNECTIONS_SECTION,
  parseE2eArgs,
  parseHoldReport,
  parseProbeReport,
  parseVersions,
  sectionCommands,
  WALKTHROUGH_PAGE,
  WALKTHROUGH_SECTIONS,
  walkthroughCommands,
} from "./lib.ts";
import {
  AUTHORIZATION_STEPS,
  HOLD_COMMANDS,
  HOLD_REPORT_FILE,
  needsReplacement,
  REPLACEMENTS,
} from "./walkthroughs.ts";
import type { HeldRecord, HoldEnd, HoldReport } from "../client/hold_record.ts";
import { parse, parseAllDocuments } from "yaml";
import { repoDir, startTestServer } from "../testing/support.ts";

const page = await Deno.readTextFile(`${repoDir}${WALKTHROUGH_PAGE}`);
const readme = await Deno.readTextFile(`${repoDir}README.md`);
/** The README's section that goes from nothing to `nc` on kind. */
const README_KIND_SECTION = "## On kind, from zero";

Deno.test("e2e: the pinned versions parse, and a bad one is refused by name", async () => {
  const versions = parseVersions(await Deno.readTextFile(`${repoDir}e2e/versions.json`));
  assert.match(versions.kindNodeImage, /@sha256:[0-9a-f]{64}$/);
  assert.ok(versions.istio.length >= 2, "the newest Istio line and the one before it");
  const good = {
    kind: "v0.33.0",
    kindNodeImage: `kindest/node:v1.36.4@sha256:${"0".repeat(64)}`,
    gatewayApi: "v1.6.1",
    istio: [{ version: "1.31.1", gatewayApiChannel: "standard" }],
  };
  assert.deepEqual(parseVersions(JSON.stringify(good)), good);
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ kind: "latest" }, /kind is "latest"/],
    [{ kindNodeImage: "kindest/node:v1.36.4" }, /kindNodeImage is "kindest\/node:v1.36.4"/],
    [{ istio: "1.31.1" }, /istio is "1.31.1"/],
    [{ istio: [] }, /istio is \[\]/],
    [
      { istio: [{ version: "1.31", gatewayApiChannel: "standard" }] },
      /istio\[0\]\.version is "1.31"/,
    ],
    [
      { istio: [{ version: "1.31.1", gatewayApiChannel: "beta" }] },
      /istio\[0\]\.gatewayApiChannel is "beta"/,
    ],
  ];
  for (const [change, message] of cases) {
    assert.throws(() => parseVersions(JSON.stringify({ ...good, ...change })), message);
  }
});

Deno.test("e2e: the command line picks a pinned Istio, and bad usage is one line", async () => {
  const versions = parseVersions(await Deno.readTextFile(`${repoDir}e2e/versions.json`));
  assert.deepEqual(parseE2eArgs([], versions), {
    help: false,
    keep: false,
    istio: versions.istio[0],
  });
  const last = versions.istio.at(-1)!;
  assert.deepEqual(parseE2eArgs(["--istio", last.version, "--keep"], versions), {
    help: false,
    keep: true,
    istio: last,
  });
  assert.deepEqual(parseE2eArgs(["-h"], versions), { help: true });
  assert.throws(
    () => parseE2eArgs(["--istio", "1.22.0"], versions),
    /^Error: --istio takes a pinned release \(1\.\d+\.\d+, /,
  );
  assert.throws(() => parseE2eArgs(["--bogus"], versions), /^Error: Unknown option '--bogus'$/);
  assert.throws(() => parseE2eArgs(["extra"], versions), /^Error: [^\n]*extra[^\n]*$/);
});

Deno.test("e2e: the page installs the Gateway API release and channel the suite pins for the newest Istio", async () => {
  const versions = parseVersions(await Deno.readTextFile(`${repoDir}e2e/versions.json`));
  const newest = versions.istio[0];
  const url = gatewayApiInstallUrl(versions.gatewayApi, newest.gatewayApiChannel);
  assert.ok(
    sectionCommands(page, "## Before the Istio walkthroughs").includes(
      `kubectl apply --server-side -f ${url}`,
    ),
    `${WALKTHROUGH_PAGE} installs ${url}`,
  );
  const minor = newest.version.split(".").slice(0, 2).join(".");
  assert.match(page, new RegExp(`with \`istioctl\` ${minor.replace(".", "\\.")} or later`));
});

Deno.test("e2e: the binomial bound fails a correct 80/20 split less than once in 1,000", () => {
  const n = 200, p = 0.2;
  const { low, high } = binomialBounds(n, p, 0.001);
  assert.deepEqual({ low, high }, { low: 22, high: 59 });
  // The probability of a correct mesh landing outside, computed directly.
  let outside = 0;
  for (let k = 0; k <= n; k++) {
    if (k >= low && k <= high) continue;
    let logP = k * Math.log(p) + (n - k) * Math.log(1 - p);
    for (let i = 1; i <= k; i++) logP += Math.log(n - k + i) - Math.log(i);
    outside += Math.exp(logP);
  }
  assert.ok(outside < 0.001, `${outside}`);
  assert.ok(outside > 0.0001, "and the bound is not needlessly wide");
  assert.ok(high < n / 2, "all-v1 or 50/50 would fail it");
});

Deno.test("e2e: the client's probe JSON is read as versions and failures", async () => {
  await using s = await startTestServer({ SERVICE_VERSION: "v2", POD_NAME: "p" });
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "main.ts",
      "client",
      `127.0.0.1:${s.port}`,
      "--count",
      "3",
      "--json",
    ],
    cwd: repoDir,
  }).output();
  const summary = parseProbeReport(new TextDecoder().decode(output.stdout));
  assert.deepEqual(summary, { succeeded: 3, connections: 3, versions: { v2: 3 }, failures: {} });
  assert.throws(() => parseProbeReport('{"mode":"rr"}'), /not a probe report/);
});

Deno.test("e2e: every walkthrough command of the page is run as written or has a replacement", () => {
  const commands = walkthroughCommands(page);
  for (const section of WALKTHROUGH_SECTIONS) {
    assert.ok(sectionCommands(page, section).length > 0, section);
  }
  for (const command of commands) {
    if (needsReplacement(command)) assert.ok(command in REPLACEMENTS, `no replacement: ${command}`);
  }
  for (const command of Object.keys(REPLACEMENTS)) {
    assert.ok(
      commands.includes(command),
      `a replacement for a command the page no longer has: ${command}`,
    );
  }
  for (const command of Object.keys(AUTHORIZATION_STEPS)) {
    assert.ok(
      commands.includes(command),
      `an authorization step the page does not have: ${command}`,
    );
  }
  assert.ok(commands.includes("kubectl apply -k k8s"));
  assert.ok(commands.includes("nc $INGRESS_HOST 31401"));
  const istio = sectionCommands(page, "## Istio: port 31400 reaches v1, port 31401 reaches v2");
  assert.ok(
    istio.includes("kubectl apply -k k8s/istio"),
    "the Istio walkthrough applies k8s/istio",
  );
  assert.throws(() => sectionCommands(page, "## No such section"), /no section/);
});

Deno.test("e2e: every kit and file a command of the page or the README's kind path applies exists", async () => {
  // Every section of the page, those the suite does not run too.
  const sections = Array.from(page.matchAll(/^## .+$/gm), ([heading]) => heading);
  const commands = [
    ...sections.flatMap((section) => sectionCommands(page, section)),
    ...sectionCommands(readme, README_KIND_SECTION),
  ];
  const paths = commands.flatMap((command) =>
    Array.from(command.matchAll(/(?:^|\s)-([kf]) (\S+)/g), ([, flag, path]) => ({ flag, path }))
  ).filter(({ path }) => !/^https?:/.test(path));
  assert.ok(paths.length > 10, `${paths.length} paths`);
  for (const { flag, path } of paths) {
    const file = flag === "k" ? `${path}/kustomization.yaml` : path;
    assert.ok((await Deno.stat(`${repoDir}${file}`)).isFile, `${flag} ${path}`);
  }
});

Deno.test("README: its kind path is the walkthrough page's first section, which the suite runs", async () => {
  const path = sectionCommands(readme, README_KIND_SECTION);
  // The image the manifests name: the path builds it under that name.
  const kustomization = parse(await Deno.readTextFile(`${repoDir}k8s/base/kustomization.yaml`));
  const [{ newName, newTag }] = kustomization.images;
  const image = `${newName}:${newTag}`;
  for (const command of ["kind create cluster", `docker build -t ${image} .`]) {
    assert.ok(path.includes(command), command);
  }
  assert.ok(path.includes(`kind load docker-image ${image}`));
  const onCluster = path.filter((command) => !/^(kind|docker) /.test(command));
  const first = sectionCommands(page, WALKTHROUGH_SECTIONS[0]);
  let from = 0;
  for (const command of onCluster) {
    const at = first.indexOf(command, from);
    assert.ok(at >= 0, `${command}: not in ${WALKTHROUGH_SECTIONS[0]}, in this order`);
    from = at + 1;
  }
  assert.ok(onCluster.includes("kubectl apply -k k8s") && onCluster.includes("nc localhost 3333"));
});

Deno.test("e2e: a section runs to the next heading of its level or above, not to a # in a code block", () => {
  const fence = "```";
  const text = [
    "# Page",
    "## One",
    `${fence}sh`,
    "one-a",
    `${fence}`,
    "### One, first",
    `${fence}sh`,
    "# a comment, not a heading",
    "first-a",
    `${fence}`,
    `${fence}console`,
    "$ first-b",
    "output",
    `${fence}`,
    "### One, second",
    `${fence}sh`,
    "second-a",
    `${fence}`,
    "## Two",
    `${fence}sh`,
    "two-a",
    `${fence}`,
  ].join("\n");
  assert.deepEqual(sectionCommands(text, "## One"), ["one-a", "first-a", "first-b", "second-a"]);
  assert.deepEqual(sectionCommands(text, "### One, first"), ["first-a", "first-b"]);
  assert.deepEqual(sectionCommands(text, "### One, second"), ["second-a"]);
  assert.deepEqual(sectionCommands(text, "## Two"), ["two-a"]);
  assert.throws(() => sectionCommands(text, "### One"), /no section "### One"/);
  assert.throws(() => sectionCommands(text, "One"), /is not a heading/);
});

Deno.test("e2e: every hold of the open-connections section runs, with --json, after the one change it holds through", () => {
  const subsections = WALKTHROUGH_SECTIONS.filter((section) => section.startsWith("### "));
  assert.deepEqual(subsections, [
    "### Through a rollout restart",
    "### Through a traffic shift",
    "### Through a ztunnel restart",
  ]);
  // The section is nothing but its subsections: no command outside them goes unrun.
  assert.deepEqual(
    sectionCommands(page, OPEN_CONNECTIONS_SECTION),
    subsections.flatMap((section) => sectionCommands(page, section)),
  );
  const holds = Object.values(HOLD_COMMANDS);
  for (const [i, section] of subsections.entries()) {
    const commands = sectionCommands(page, section);
    const change = delayedChange(commands);
    assert.equal(change.delayMs, 10_000, `${section}: the text says 10 s in`);
    const at = commands.findIndex((command) => /^sleep \d+ && /.test(command));
    assert.equal(commands[at + 1], holds[i], `${section}: its hold right after the change`);
    assert.ok(needsReplacement(holds[i]), holds[i]);
    const { run, why } = REPLACEMENTS[holds[i]];
    assert.ok(run.startsWith(`${holds[i]} --json > ${HOLD_REPORT_FILE}`), run);
    assert.ok(why.length > 0);
  }
  // The holds the page says exit 1 (connections lost, each replaced) are let through with 1 only.
  assert.match(REPLACEMENTS[HOLD_COMMANDS.rollout].run, / \|\| test \$\? -eq 1$/);
  assert.match(REPLACEMENTS[HOLD_COMMANDS.ztunnel].run, / \|\| test \$\? -eq 1$/);
  assert.doesNotMatch(REPLACEMENTS[HOLD_COMMANDS.shift].run, /\|\|/);
  assert.match(HOLD_COMMANDS.shift, /--expect stays-on v1$/);
});

Deno.test("e2e: a delayed change is read from its sleep, and there must be one", () => {
  assert.deepEqual(
    delayedChange([
      "kubectl get pods",
      "sleep 10 && kubectl rollout restart deployment/tcp-echo-v1 &",
    ]),
    { delayMs: 10_000, command: "kubectl rollout restart deployment/tcp-echo-v1" },
  );
  assert.throws(() => delayedChange(["kubectl get pods"]), /found 0/);
  assert.throws(() => delayedChange(["sleep 1 && a &", "sleep 2 && b &"]), /found 2/);
  assert.throws(() => delayedChange(["sleep 10 && a"]), /found 0/, "not in the background");
});

Deno.test("e2e: the drain of the base's pods is read from the manifest: DRAIN_DELAY + SHUTDOWN_GRACE", async () => {
  const manifest = await Deno.readTextFile(`${repoDir}k8s/base/deployment.yml`);
  const documents = parseAllDocuments(manifest).map((document) => document.toJS());
  assert.equal(drainMs(documents, "tcp-echo-v1"), 15_000);
  assert.equal(drainMs(documents, "tcp-echo-v2"), 15_000);
  assert.throws(() => drainMs(documents, "tcp-echo-v3"), /no Deployment tcp-echo-v3/);
  const bare = [{
    kind: "Deployment",
    metadata: { name: "x" },
    spec: { template: { spec: { containers: [{ env: [{ name: "DRAIN_DELAY", value: "5s" }] }] } } },
  }];
  assert.throws(() => drainMs(bare, "x"), /x: SHUTDOWN_GRACE is undefined/);
});

Deno.test("e2e: the client's hold JSON is read as a report", async () => {
  await using s = await startTestServer({ SERVICE_VERSION: "v1", POD_NAME: "p" });
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "main.ts",
      "client",
      `127.0.0.1:${s.port}`,
      "hold",
      "--connections",
      "2",
      "--duration",
      "300ms",
      "--json",
    ],
    cwd: repoDir,
    stderr: "null",
  }).output();
  const report = parseHoldReport(new TextDecoder().decode(output.stdout));
  assert.equal(report.connections.length, 2);
  assert.deepEqual(report.connections.map((c) => [c.backend, c.end]), [
    ["version v1, pod p", null],
    ["version v1, pod p", null],
  ]);
  assert.deepEqual(holdSummary(report), ["version v1, pod p: 2 opened, 2 open at the end"]);
  assert.deepEqual(judgeShiftHold(report, { version: "v1", openUntilMs: 0 }), []);
  assert.throws(() => parseHoldReport('{"command":"probe"}'), /not a hold report/);
  assert.throws(() => parseHoldReport("hold 127.0.0.1:3333: 2 connections"), /not a hold report/);
});

// ---------------------------------------------------------------------------
// Judging holds: crafted reports, one per outcome the page states and one per way to miss it
// ---------------------------------------------------------------------------

const OLD_V1 = "version v1, pod tcp-echo-v1-old, node n";
const NEW_V1 = "version v1, pod tcp-echo-v1-new, node n";
const V2 = "version v2, pod tcp-echo-v2-a, node n";

/** A held connection's record: on `backend`, ended as `end` (or open at the end). */
function held(
  slot: number,
  backend: string,
  end: Partial<HoldEnd> | null = null,
  replaces?: { backend: string; lostAtMs: number },
): HeldRecord {
  const [, version] = /^version (\S+?),/.exec(backend)!;
  return {
    slot,
    generation: replaces === undefined ? 0 : 1,
    openedAtMs: replaces === undefined ? 20 : replaces.lostAtMs + 5,
    connectMs: 5,
    attempts: 1,
    server: { version, pod: backend.split("pod ")[1].split(",")[0], node: "n" },
    backend,
    ...(replaces === undefined ? {} : {
      replaces: {
        backend: replaces.backend,
        generation: 0,
        lostAtMs: replaces.lostAtMs,
        gapMs: 5,
      },
    }),
    heartbeats: 30,
    stalls: [],
    stallsNotKept: 0,
    worstStallMs: 0,
    end: end === null ? null : { reason: "fin", atMs: 34_750, detail: "EOF", ...end },
  };
}

/** A report of `records`, as the hold prints it (only what the judges read is filled in). */
function holdReport(
  records: HeldRecord[],
  facts: Partial<Pick<HoldReport, "missingAtEnd" | "integrityFailures" | "expectations">> = {},
): HoldReport {
  return {
    command: "hold",
    target: "tcp-echo:3333",
    tls: false,
    startedAt: "2026-11-25T07:50:12.431Z",
    ranMs: 90_000,
    endedBy: "duration",
    allOpenAtMs: 35,
    settings: {
      connections: new Set(records.map((r) => r.slot)).size,
      intervalMs: 1_000,
      stallMs: 500,
      timeoutMs: 5_000,
      durationMs: 90_000,
      reconnect: true,
      openRate: 1_000,
    },
    backends: [],
    lost: records.filter((r) => r.end !== null).length,
    replaced: records.filter((r) => r.generation > 0).length,
    missingAtEnd: 0,
    heartbeats: 0,
    integrityFailures: 0,
    openFailures: { failures: {}, failureDetails: {}, failureHints: {} },
    failedAttempts: [],
    connections: records,
    recordsNotKept: 0,
    expectations: [],
    ...facts,
  };
}

Deno.test("e2e: a hold through a rollout restart is judged as the page states it", async (t) => {
  const expected = { version: "v1", notBeforeMs: 22_000 };
  /** The page's table: 2 on the old v1 pod end by FIN together, replaced on v2 and the new v1. */
  const asStated = () => [
    held(0, OLD_V1, {}),
    held(1, V2),
    held(2, OLD_V1, { atMs: 34_751 }),
    held(3, V2),
    held(0, V2, null, { backend: OLD_V1, lostAtMs: 34_750 }),
    held(2, NEW_V1, null, { backend: OLD_V1, lostAtMs: 34_751 }),
  ];
  await t.step("as stated: nothing to say (RST counts as a peer's close too)", () => {
    assert.deepEqual(judgeRolloutHold(holdReport(asStated()), expected), []);
    const reset = asStated();
    reset[2].end = { reason: "rst", atMs: 34_800, detail: "Connection reset by peer" };
    assert.deepEqual(judgeRolloutHold(holdReport(reset), expected), []);
  });
  await t.step("an old pod's connection still open, or ended by a timeout, or too soon", () => {
    const records = asStated();
    records[0].end = null;
    records[2].end = { reason: "timeout", atMs: 34_751, detail: "heartbeat 30 was not answered" };
    records.splice(4, 2);
    assert.deepEqual(judgeRolloutHold(holdReport(records), expected), [
      `connection 0 on ${OLD_V1} was still open at the end`,
      `connection 2 on ${OLD_V1} ended by timeout: heartbeat 30 was not answered`,
    ]);
    const early = asStated();
    early[0].end = { reason: "fin", atMs: 12_000, detail: "EOF" };
    assert.deepEqual(judgeRolloutHold(holdReport(early), expected), [
      `connection 0 on ${OLD_V1} ended at 12.0 s, before 22.0 s`,
      `the restarted pods' connections ended from 12.0 s to 34.8 s, not together`,
    ]);
  });
  await t.step("a v2 connection lost, a replacement on the old pod, a place left empty", () => {
    const records = asStated();
    records[1].end = { reason: "rst", atMs: 34_752, detail: "reset" };
    records[4] = held(0, OLD_V1, { atMs: 34_900 }, { backend: OLD_V1, lostAtMs: 34_750 });
    assert.deepEqual(judgeRolloutHold(holdReport(records, { missingAtEnd: 2 }), expected), [
      `connection 1 on ${V2} ended by rst at 34.8 s`,
      `connection 0 (replacement 1) on ${OLD_V1}: a replacement on a restarted pod`,
      "2 places had no connection at the end",
    ]);
  });
  await t.step(
    "no connection on v1 to begin with, a wrong echo, a first connection that never opened",
    () => {
      const records = [held(1, V2), held(3, V2)];
      const report = holdReport(records, { integrityFailures: 1 });
      const oneNeverOpened = { ...report, settings: { ...report.settings, connections: 3 } };
      assert.deepEqual(judgeRolloutHold(oneNeverOpened, expected), [
        "1 wrong echoes",
        "2 of 3 connections opened",
        "no connection landed on v1",
      ]);
    },
  );
});

Deno.test("e2e: a hold through a traffic shift is judged as the page states it", async (t) => {
  const expected = { version: "v1", openUntilMs: 25_000 };
  const met = [{ expect: "stays-on v1", met: true, why: "all 2 connections on v1" }];
  await t.step(
    "as stated: on v1, open past the shift, then closed by the drain (or still open)",
    () => {
      const records = [held(0, OLD_V1, { atMs: 55_653 }), held(1, OLD_V1)];
      assert.deepEqual(judgeShiftHold(holdReport(records, { expectations: met }), expected), []);
    },
  );
  await t.step("cut at the shift, by a timeout, on v2, or the expectation missed", () => {
    const records = [
      held(0, OLD_V1, { atMs: 11_000 }),
      held(1, OLD_V1, { reason: "timeout", atMs: 60_000, detail: "heartbeat 58 was not answered" }),
      held(2, V2),
    ];
    const missed = [{ expect: "stays-on v1", met: false, why: "of 3 connections, 1 on v2" }];
    assert.deepEqual(judgeShiftHold(holdReport(records, { expectations: missed }), expected), [
      `connection 0 on ${OLD_V1} ended at 11.0 s, before 25.0 s`,
      `connection 1 on ${OLD_V1} ended by timeout: heartbeat 58 was not answered`,
      `connection 2 on ${V2}: not v1`,
      "--expect stays-on v1: of 3 connections, 1 on v2",
    ]);
  });
});

Deno.test("e2e: a hold through a ztunnel restart is judged as the page states it", async (t) => {
  const expected = { notBeforeMs: 17_000 };
  const reset = { reason: "rst" as const, atMs: 43_596, detail: "Connection reset by peer" };
  await t.step(
    "as stated: every first connection reset after the drain, each replaced and open",
    () => {
      const records = [
        held(0, OLD_V1, reset),
        held(1, V2, reset),
        held(0, V2, null, { backend: OLD_V1, lostAtMs: 43_596 }),
        held(1, OLD_V1, null, { backend: V2, lostAtMs: 43_596 }),
      ];
      assert.deepEqual(judgeProxyRestartHold(holdReport(records), expected), []);
    },
  );
  await t.step("one untouched, one cut at once, a replacement lost, a place left empty", () => {
    const records = [
      held(0, OLD_V1),
      held(1, V2, { ...reset, atMs: 10_500 }),
      held(1, OLD_V1, { reason: "fin", atMs: 50_000, detail: "EOF" }, {
        backend: V2,
        lostAtMs: 10_500,
      }),
    ];
    assert.deepEqual(judgeProxyRestartHold(holdReport(records, { missingAtEnd: 1 }), expected), [
      `connection 0 on ${OLD_V1} was still open at the end`,
      `connection 1 on ${V2} ended at 10.5 s, before 17.0 s`,
      `connection 1 (replacement 1) on ${OLD_V1} ended by fin at 50.0 s`,
      "1 places had no connection at the end",
    ]);
  });
});
