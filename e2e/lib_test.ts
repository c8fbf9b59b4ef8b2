import assert from "node:assert/strict";
import {
  binomialBounds,
  byFamily,
  countOf,
  delayedChange,
  drainMs,
  DUAL_STACK_SECTION,
  ENDPOINT_REMOVAL_MS,
  firstAnswer,
  gatewayApiInstallUrl,
  holdSummary,
  judgeAllAnswered,
  judgeBannerAddresses,
  judgeDualStackService,
  judgeFamilyRecords,
  judgeFlowThroughDelete,
  judgeMeshRecords,
  judgeProxyRestartHold,
  judgeRolloutHold,
  judgeShiftHold,
  OPEN_CONNECTIONS_SECTION,
  type OpenRecord,
  parseE2eArgs,
  parseFamilyProbes,
  parseFlowReport,
  parseHoldReport,
  parseOpenRecords,
  parseProbeCounts,
  parseProbeReport,
  parseVersions,
  podOf,
  sectionCommands,
  SIDECAR_INBOUND_SOURCE,
  terminationGraceMs,
  UDP_MESH_SECTION,
  WALKTHROUGH_PAGE,
  WALKTHROUGH_SECTIONS,
  walkthroughCommands,
} from "./lib.ts";
import {
  AUTHORIZATION_STEPS,
  DUAL_STACK_COMMANDS,
  DUAL_STACK_KIND_CONFIG,
  HOLD_COMMANDS,
  HOLD_REPORT_FILE,
  needsReplacement,
  REPLACEMENTS,
  REPORT_FILES,
  UDP_COMMANDS,
} from "./walkthroughs.ts";
import type { HeldRecord, HoldEnd, HoldReport } from "../client/hold_record.ts";
import { FlowRecorder, type UdpFlowReport } from "../client/udp_flow.ts";
import { formatTextRecord } from "../src/log_output.ts";
import { parseDuration } from "../src/wire.ts";
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

// ---------------------------------------------------------------------------
// UDP in a mesh and dual-stack: the page's commands, the reports and records the suite reads
// ---------------------------------------------------------------------------

/** Runs the repository's client with `args`; resolves with its standard output. */
async function client(args: string[]): Promise<string> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-read", "main.ts", "client", ...args],
    cwd: repoDir,
    stderr: "null",
  }).output();
  return new TextDecoder().decode(output.stdout);
}

Deno.test("e2e: UDP in a mesh probes with --json, reads the records after, and deletes the flow's pod just before the flow", () => {
  const commands = sectionCommands(page, UDP_MESH_SECTION);
  const order = [UDP_COMMANDS.tcp, UDP_COMMANDS.udp, UDP_COMMANDS.records, UDP_COMMANDS.flow];
  const at = order.map((command) => commands.indexOf(command));
  assert.ok(at.every((i) => i >= 0), `the page's section has ${JSON.stringify(order)}`);
  assert.deepEqual([...at].sort((a, b) => a - b), at, "in this order");
  const change = delayedChange(commands);
  assert.equal(change.delayMs, 10_000, "the text says 10 s in");
  assert.match(change.command, /^kubectl delete pod --wait=false \$\(flow_pod\)$/);
  assert.equal(
    commands[commands.indexOf(UDP_COMMANDS.flow) - 1],
    `sleep 10 && ${change.command} &`,
  );
  assert.ok(commands.some((command) => command.startsWith("flow_pod() { kubectl logs ")));
  for (
    const [command, file] of [
      [UDP_COMMANDS.tcp, REPORT_FILES.meshTcp],
      [UDP_COMMANDS.udp, REPORT_FILES.meshUdp],
    ]
  ) {
    assert.equal(REPLACEMENTS[command].run, `${command} --json > ${file}`);
  }
  assert.equal(
    REPLACEMENTS[UDP_COMMANDS.flow].run,
    `${UDP_COMMANDS.flow} --json > ${REPORT_FILES.flow} || test $? -eq 1`,
  );
  assert.ok(needsReplacement(UDP_COMMANDS.flow));
  assert.equal(
    REPLACEMENTS[UDP_COMMANDS.records],
    undefined,
    "the records command runs as written",
  );
  assert.match(UDP_COMMANDS.records, / --tail=-1 /, "every line of each pod, not the last 10");
  assert.equal(countOf(UDP_COMMANDS.tcp), countOf(UDP_COMMANDS.udp));
  assert.throws(() => countOf("kubectl get pods"), /no --count/);
});

Deno.test("e2e: the flow outlasts the latest change the page allows, with echoes after it", async () => {
  const manifest = await Deno.readTextFile(`${repoDir}k8s/base/deployment.yml`);
  const documents = parseAllDocuments(manifest).map((document) => document.toJS());
  assert.equal(terminationGraceMs(documents, "tcp-echo-v1"), 20_000);
  assert.equal(terminationGraceMs(documents, "tcp-echo-v2"), 20_000);
  const bare = [{
    kind: "Deployment",
    metadata: { name: "x" },
    spec: { template: { spec: { containers: [] } } },
  }];
  assert.throws(
    () => terminationGraceMs(bare, "x"),
    /x: terminationGracePeriodSeconds is undefined/,
  );
  const intervalMs = parseDuration(/--interval (\S+)/.exec(UDP_COMMANDS.flow)![1])!;
  const latestChangeMs = 10_000 + 20_000 + ENDPOINT_REMOVAL_MS;
  assert.ok(countOf(UDP_COMMANDS.flow) * intervalMs >= latestChangeMs + 5 * intervalMs);
});

Deno.test("e2e: the dual-stack section makes its cluster from the committed kind configuration, and is run last", async () => {
  const config = parse(await Deno.readTextFile(`${repoDir}${DUAL_STACK_KIND_CONFIG}`));
  assert.deepEqual(config, {
    kind: "Cluster",
    apiVersion: "kind.x-k8s.io/v1alpha4",
    networking: { ipFamily: "dual" },
  });
  assert.equal(WALKTHROUGH_SECTIONS.at(-1), DUAL_STACK_SECTION);
  const commands = sectionCommands(page, DUAL_STACK_SECTION);
  const order = [
    DUAL_STACK_COMMANDS.create,
    DUAL_STACK_COMMANDS.load,
    "kubectl apply -k k8s/dual-stack",
    DUAL_STACK_COMMANDS.tcp,
    DUAL_STACK_COMMANDS.udp,
    "nc localhost 3333",
  ];
  const at = order.map((command) => commands.indexOf(command));
  assert.ok(at.every((i) => i >= 0), `the section has ${JSON.stringify(order)}`);
  assert.deepEqual([...at].sort((a, b) => a - b), at, "in this order");
  assert.ok(DUAL_STACK_COMMANDS.create.endsWith(`--config ${DUAL_STACK_KIND_CONFIG}`));
  for (const command of [DUAL_STACK_COMMANDS.create, DUAL_STACK_COMMANDS.load]) {
    assert.ok(needsReplacement(command), command);
    assert.equal(REPLACEMENTS[command].run, "", "the suite makes and loads its own cluster");
    assert.match(REPLACEMENTS[command].why, /the suite/);
  }
  assert.equal(
    REPLACEMENTS[DUAL_STACK_COMMANDS.tcp].run,
    `${DUAL_STACK_COMMANDS.tcp} --json > ${REPORT_FILES.dualStackTcp}`,
  );
  assert.equal(
    REPLACEMENTS[DUAL_STACK_COMMANDS.udp].run,
    `${DUAL_STACK_COMMANDS.udp} --json > ${REPORT_FILES.dualStackUdp}`,
  );
  assert.equal(countOf(DUAL_STACK_COMMANDS.tcp), countOf(DUAL_STACK_COMMANDS.udp));
});

Deno.test("e2e: open records are read from kubectl logs as the server writes them, and a data record cannot pass for one", async () => {
  await using s = await startTestServer({ UDP_PORT: "any", SERVICE_VERSION: "v1", POD_NAME: "p" });
  await client([`127.0.0.1:${s.port}`, "--count", "2"]);
  await client([`127.0.0.1:${s.udpPort}`, "--udp", "--count", "2"]);
  const forged = " - TCP connection open. client=6.6.6.6:1 port=3333 family=IPv4";
  const conn = await s.connect();
  await conn.write(new TextEncoder().encode(`${forged}\n`));
  await conn.closeWrite();
  await new Response(conn.readable).arrayBuffer();
  await s.logs.waitFor(
    (r) =>
      r.rawMessage === "TCP connection closed." &&
      s.logs.records.filter((x) => x.rawMessage === "TCP connection closed.").length === 3,
    "three closed",
  );
  const lines = s.logs.records.map(formatTextRecord);
  assert.ok(lines.some((line) => line.includes(`Received Data (converted to string): ${forged}`)));
  // As kubectl logs --prefix --timestamps prints them, and without either.
  const prefixed = lines.map((line) =>
    `[pod/tcp-echo-v1-abc/tcp-echo-container] 2026-12-02T03:12:40.123456789Z ${line}`
  );
  for (const logs of [lines.join("\n"), prefixed.join("\n")]) {
    const records = parseOpenRecords(logs);
    assert.deepEqual(records.map((r) => [r.transport, r.clientIp, r.port, r.family]), [
      ["tcp", "127.0.0.1", s.port, "IPv4"],
      ["tcp", "127.0.0.1", s.port, "IPv4"],
      ["udp", "127.0.0.1", s.udpPort, "IPv4"],
      ["udp", "127.0.0.1", s.udpPort, "IPv4"],
      ["tcp", "127.0.0.1", s.port, "IPv4"],
    ]);
  }
  assert.deepEqual(
    new Set(parseOpenRecords(prefixed.join("\n")).map((r) => r.pod)),
    new Set(["tcp-echo-v1-abc"]),
  );
  const v6 = "2026/12/02 04:20:12 2b4d6f8a-0c2e-4a6c-9e1b-3d5f7a9c1e3b - UDP flow open. " +
    "client=[fd00:10:244::9]:51872 port=3333 family=IPv6";
  assert.deepEqual(parseOpenRecords(v6), [{
    transport: "udp",
    clientIp: "fd00:10:244::9",
    clientPort: 51872,
    port: 3333,
    family: "IPv6",
  }]);
});

Deno.test("e2e: the client's probe JSON is read as counts, TCP and UDP, one family or both", async (t) => {
  await using s = await startTestServer({ UDP_PORT: "any", SERVICE_VERSION: "v2", POD_NAME: "p" });
  await t.step("TCP and UDP reports, judged against the page's count", async () => {
    const tcp = parseProbeCounts(await client([`127.0.0.1:${s.port}`, "--count", "3", "--json"]));
    assert.deepEqual(tcp, {
      transport: "tcp",
      addresses: ["127.0.0.1"],
      sent: 3,
      succeeded: 3,
      versions: { v2: 3 },
      failures: {},
    });
    const udp = parseProbeCounts(
      await client([`127.0.0.1:${s.udpPort}`, "--udp", "--count", "3", "--json"]),
    );
    assert.deepEqual({ ...udp, failures: {} }, { ...tcp, transport: "udp" });
    assert.deepEqual(judgeAllAnswered(udp, { transport: "udp", count: 3 }, "UDP"), []);
    assert.deepEqual(
      judgeAllAnswered(udp, { transport: "tcp", count: 4, family: "IPv6", address: "::1" }, "UDP"),
      [
        "UDP: a udp report, not tcp",
        "UDP: 3 of 3 datagrams echoed correctly, expected 4 of 4",
        "UDP: over either family, not IPv6",
        "UDP: sent to 127.0.0.1, not ::1",
      ],
    );
    assert.throws(() => parseProbeCounts('{"transport":"udp"}'), /not a probe report/);
    assert.throws(() => parseProbeCounts("probe 127.0.0.1:3333: 3 of 3"), /not a probe report/);
  });
  await t.step("-4 -6: a report per family", async () => {
    const both = parseFamilyProbes(
      await client([`127.0.0.1:${s.port}`, "-4", "--count", "2", "--json"]).then((text) =>
        JSON.stringify({
          target: "x",
          families: { IPv4: JSON.parse(text), IPv6: JSON.parse(text) },
        })
      ),
    );
    assert.equal(both.IPv4.family, "IPv4");
    assert.deepEqual(
      judgeAllAnswered(both.IPv4, {
        transport: "tcp",
        count: 2,
        family: "IPv4",
        address: "127.0.0.1",
      }, "TCP over IPv4"),
      [],
    );
    const real = parseFamilyProbes(
      await client([`localhost:${s.port}`, "-4", "-6", "--count", "2", "--json"]),
    );
    assert.deepEqual(
      judgeAllAnswered(real.IPv4, { transport: "tcp", count: 2, family: "IPv4" }, "IPv4"),
      [],
    );
    // The test server listens on 127.0.0.1 only: over IPv6 nothing answers (no AAAA, or refused).
    const v6 = judgeAllAnswered(real.IPv6, { transport: "tcp", count: 2, family: "IPv6" }, "IPv6");
    assert.equal(v6.length, 1);
    assert.match(v6[0], /^IPv6: 0 of 2 connections echoed correctly, expected 2 of 2 \(2 \w+\)$/);
    assert.throws(() => parseFamilyProbes('{"target":"x","families":{"IPv4":{}}}'), /per family/);
  });
});

const CLIENT_IP = "10.244.0.31";

/** Open records of `transport` from `clientIp`, `count` of them, over `family`. */
function opens(
  transport: "tcp" | "udp",
  clientIp: string,
  count: number,
  family: "IPv4" | "IPv6" = "IPv4",
): OpenRecord[] {
  return Array.from(
    { length: count },
    (_, i) => ({ transport, clientIp, clientPort: 40_000 + i, port: 3333, family }),
  );
}

Deno.test("e2e: the mesh's records are judged as UDP in a mesh states them", () => {
  const asStated = [...opens("tcp", SIDECAR_INBOUND_SOURCE, 4), ...opens("udp", CLIENT_IP, 4)];
  assert.deepEqual(judgeMeshRecords(asStated, { clientIp: CLIENT_IP, count: 4 }), []);
  // Datagrams through a proxy (they would come from its address), TCP past the sidecar, one flow short.
  const missed = [
    ...opens("tcp", CLIENT_IP, 4),
    ...opens("udp", CLIENT_IP, 2),
    ...opens("udp", "10.244.0.40", 1),
  ];
  assert.deepEqual(judgeMeshRecords(missed, { clientIp: CLIENT_IP, count: 4 }), [
    "3 UDP flows open, expected at least 4",
    "UDP flows from 10.244.0.40, not only 10.244.0.31 (the client pod's own address)",
    `TCP connections from ${CLIENT_IP}, not only 127.0.0.6 (the server's sidecar)`,
  ]);
  assert.deepEqual(judgeMeshRecords([], { clientIp: CLIENT_IP, count: 1 }), [
    "0 UDP flows open, expected at least 1",
    "0 TCP connections open, expected at least 1",
  ]);
});

Deno.test("e2e: the dual-stack Service, records and banners are judged as the section states them", async (t) => {
  const clientIps = { IPv4: "10.244.0.9", IPv6: "fd00:10:244::9" };
  await t.step("the Service: PreferDualStack, a ClusterIP of each family", () => {
    const dual = {
      spec: {
        ipFamilyPolicy: "PreferDualStack",
        ipFamilies: ["IPv4", "IPv6"],
        clusterIPs: ["10.96.201.7", "fd00:10:96::c4f1"],
      },
    };
    assert.deepEqual(judgeDualStackService(dual), []);
    assert.deepEqual(byFamily(dual.spec.clusterIPs), {
      IPv4: "10.96.201.7",
      IPv6: "fd00:10:96::c4f1",
    });
    const single = {
      spec: { ipFamilyPolicy: "SingleStack", ipFamilies: ["IPv4"], clusterIPs: ["10.96.0.7"] },
    };
    assert.deepEqual(judgeDualStackService(single), [
      "ipFamilyPolicy is SingleStack, not PreferDualStack",
      'clusterIPs are ["10.96.0.7"], not one of each family',
      'ipFamilies are ["IPv4"], not IPv4 and IPv6',
    ]);
  });
  await t.step("the records: each family from the client's address of that family", () => {
    const asStated = [
      ...opens("tcp", clientIps.IPv4, 10),
      ...opens("tcp", clientIps.IPv6, 10, "IPv6"),
      ...opens("udp", clientIps.IPv4, 10),
      ...opens("udp", clientIps.IPv6, 10, "IPv6"),
    ];
    assert.deepEqual(judgeFamilyRecords(asStated, { clientIps, count: 10 }), []);
    const missed = [
      ...opens("tcp", clientIps.IPv4, 10),
      ...opens("tcp", clientIps.IPv4, 10, "IPv6"),
      ...opens("udp", clientIps.IPv4, 10),
      ...opens("udp", clientIps.IPv6, 9, "IPv6"),
    ];
    assert.deepEqual(judgeFamilyRecords(missed, { clientIps, count: 10 }), [
      "TCP connections over IPv6 from 10.244.0.9, not the client pod's fd00:10:244::9",
      "9 UDP flows over IPv6 open, expected at least 10",
    ]);
  });
  await t.step("the banner: both of the pod's addresses", async () => {
    await using s = await startTestServer({
      POD_NAME: "tcp-echo-v1-abc",
      POD_IP: "10.244.0.6",
      POD_IPS: "10.244.0.6,fd00:10:244::6",
    });
    const conn = await s.connect();
    await conn.closeWrite();
    const banner = new TextDecoder().decode(await new Response(conn.readable).arrayBuffer());
    assert.match(banner, /^With IP addresses 10\.244\.0\.6,fd00:10:244::6\.$/m);
    assert.deepEqual(judgeBannerAddresses(banner, ["10.244.0.6", "fd00:10:244::6"], "p"), []);
    assert.deepEqual(judgeBannerAddresses(banner, ["10.244.0.6"], "p"), [
      "p: the banner says With IP addresses 10.244.0.6,fd00:10:244::6, the pod has 10.244.0.6",
      "p: the pod's addresses 10.244.0.6 are not one of each family",
    ]);
    assert.deepEqual(judgeBannerAddresses("Version v1.\n", ["10.244.0.6", "fd00::6"], "p"), [
      "p: the banner says With IP addresses (no such line), the pod has 10.244.0.6,fd00::6",
    ]);
  });
});

// ---------------------------------------------------------------------------
// Judging a flow through a delete: reports the client's own recorder makes of crafted datagrams
// ---------------------------------------------------------------------------

const POD_A = ["v1", "tcp-echo-v1-5d8f9b6c4d-x7k2p"] as const;
const POD_B = ["v2", "tcp-echo-v2-6bcfd7dcf4-2sqhf"] as const;
const POD_C = ["v1", "tcp-echo-v1-5d8f9b6c4d-q4w8e"] as const;
const name = ([version, pod]: readonly [string, string]) =>
  `version ${version}, pod ${pod}, node kind-control-plane`;

/**
 * The one-flow report of `count` datagrams sent a second apart: `greeted`
 * maps a datagram to the pod whose banner comes just before its echo;
 * `lost` get no echo, `wrong` other bytes of their length.
 */
function flowReport(
  count: number,
  greeted: Record<number, readonly [string, string]>,
  { lost = [], wrong = [] }: { lost?: number[]; wrong?: number[] } = {},
): UdpFlowReport {
  const encoder = new TextEncoder();
  const recorder = new FlowRecorder(5_000, "tcp-echo:3333");
  for (let n = 1; n <= count; n++) {
    const atMs = (n - 1) * 1_000;
    const payload = encoder.encode(`datagram ${n}`.padEnd(32, "."));
    recorder.sent(n, payload, atMs);
    const greeter = greeted[n];
    if (greeter !== undefined) {
      const [version, pod] = greeter;
      const banner = `Welcome, you are connected to node kind-control-plane.\n` +
        `Running on Pod ${pod}.\nVersion ${version}.\n`;
      recorder.received({ bytes: encoder.encode(banner), atMs: atMs + 1 });
    }
    if (lost.includes(n)) recorder.timedOut(n);
    else if (wrong.includes(n)) {
      recorder.received({ bytes: payload.map((byte) => byte ^ 1), atMs: atMs + 2 });
    } else recorder.received({ bytes: payload, atMs: atMs + 2 });
  }
  return recorder.report({ target: "tcp-echo:3333", addresses: ["10.96.146.210"] }, {
    sourcePort: 41236,
    intervalMs: 1_000,
    endedBy: "count",
  });
}

Deno.test("e2e: a flow through the delete of its pod is judged as UDP in a mesh states it", async (t) => {
  const window = { notBeforeMs: 7_000, notAfterMs: 35_000 };
  await t.step("as stated: one change to another pod, none lost or some lost in between", () => {
    const none = flowReport(20, { 1: POD_A, 13: POD_B });
    assert.equal(firstAnswer(none), name(POD_A));
    assert.equal(podOf(name(POD_B)), POD_B[1]);
    assert.deepEqual(judgeFlowThroughDelete(none, window), []);
    const some = flowReport(20, { 1: POD_A, 13: POD_B }, { lost: [10, 11, 12] });
    assert.deepEqual(some.changes.map((c) => c.lostBetween), [[10, 11, 12]]);
    assert.deepEqual(judgeFlowThroughDelete(some, window), []);
  });
  await t.step("the pod never left, or the flow moved twice", () => {
    assert.deepEqual(judgeFlowThroughDelete(flowReport(20, { 1: POD_A }), window), [
      `the answer never changed: every echo counted for ${name(POD_A)} (was its pod deleted?)`,
    ]);
    assert.deepEqual(
      judgeFlowThroughDelete(flowReport(20, { 1: POD_A, 9: POD_B, 15: POD_C }), window),
      [
        `the answer changed 2 times: ${name(POD_A)} → ${name(POD_B)} at 8.0 s; ` +
        `${name(POD_B)} → ${name(POD_C)} at 14.0 s`,
      ],
    );
  });
  await t.step("the same pod greeting again, too soon, after a loss before the delete", () => {
    const report = flowReport(20, { 1: POD_A, 5: POD_A }, { lost: [2] });
    assert.deepEqual(judgeFlowThroughDelete(report, window), [
      "datagram 2, sent at 1.0 s, was lost before the delete (7.0 s)",
      `the flow went from ${name(POD_A)} to ${name(POD_A)}: not to another pod`,
      "the answer changed at 4.0 s, before the delete (7.0 s)",
      "datagrams lost away from the change: 2",
    ]);
  });
  await t.step("too late, a loss after the change, a wrong datagram", () => {
    const report = flowReport(45, { 1: POD_A, 40: POD_B }, { lost: [44], wrong: [3] });
    assert.deepEqual(judgeFlowThroughDelete(report, window), [
      "1 wrong datagrams (neither an echo nor a banner)",
      "the answer changed at 39.0 s, later than 35.0 s",
      "datagrams lost away from the change: 44",
    ]);
  });
  await t.step("the new pod greeted but echoed nothing after", () => {
    const report = flowReport(12, { 1: POD_A, 10: POD_B }, { lost: [10, 11, 12] });
    assert.deepEqual(judgeFlowThroughDelete(report, window), [
      "no datagram was echoed after the change",
    ]);
  });
  await t.step("the client's own --json, read as a one-flow report", async () => {
    await using s = await startTestServer({
      UDP_PORT: "any",
      SERVICE_VERSION: "v1",
      POD_NAME: "p",
    });
    const report = parseFlowReport(
      await client([
        `127.0.0.1:${s.udpPort}`,
        "--udp",
        "--one-flow",
        "--count",
        "3",
        "--interval",
        "50ms",
        "--json",
      ]),
    );
    assert.equal(report.succeeded, 3);
    assert.equal(firstAnswer(report), "version v1, pod p");
    assert.deepEqual(judgeFlowThroughDelete(report, window), [
      "the answer never changed: every echo counted for version v1, pod p (was its pod deleted?)",
    ]);
    assert.throws(() => parseFlowReport('{"oneFlow":false}'), /not a one-flow report/);
    assert.throws(() => parseFlowReport(""), /not a one-flow report/);
  });
});
