import assert from "node:assert/strict";
import {
  binomialBounds,
  gatewayApiInstallUrl,
  parseE2eArgs,
  parseProbeReport,
  parseVersions,
  sectionCommands,
  WALKTHROUGH_PAGE,
  WALKTHROUGH_SECTIONS,
  walkthroughCommands,
} from "./lib.ts";
import { AUTHORIZATION_STEPS, needsReplacement, REPLACEMENTS } from "./walkthroughs.ts";
import { parse } from "yaml";
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
