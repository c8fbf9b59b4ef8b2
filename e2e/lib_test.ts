import assert from "node:assert/strict";
import {
  binomialBounds,
  parseProbeReport,
  parseVersions,
  sectionCommands,
  WALKTHROUGH_SECTIONS,
  walkthroughCommands,
} from "./lib.ts";
import { AUTHORIZATION_STEPS, needsReplacement, REPLACEMENTS } from "./walkthroughs.ts";
import { repoDir, startTestServer } from "../testing/support.ts";

const readme = await Deno.readTextFile(`${repoDir}README.md`);

Deno.test("e2e: the pinned versions parse, and a bad one is refused", async () => {
  const versions = parseVersions(await Deno.readTextFile(`${repoDir}e2e/versions.json`));
  assert.match(versions.kindNodeImage, /@sha256:/);
  assert.throws(() => parseVersions('{"kind":"latest"}'), /kind is "latest"/);
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

Deno.test("e2e: every README walkthrough command is run as written or has a replacement", () => {
  const commands = walkthroughCommands(readme);
  for (const section of WALKTHROUGH_SECTIONS) {
    assert.ok(sectionCommands(readme, section).length > 0, section);
  }
  for (const command of commands) {
    if (needsReplacement(command)) assert.ok(command in REPLACEMENTS, `no replacement: ${command}`);
  }
  for (const command of Object.keys(REPLACEMENTS)) {
    assert.ok(
      commands.includes(command),
      `a replacement for a command the README no longer has: ${command}`,
    );
  }
  for (const command of Object.keys(AUTHORIZATION_STEPS)) {
    assert.ok(
      commands.includes(command),
      `an authorization step the README does not have: ${command}`,
    );
  }
  assert.ok(commands.includes("kubectl apply -k k8s"));
  assert.ok(commands.includes("nc $INGRESS_HOST 31401"));
});
