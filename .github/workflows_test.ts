/**
 * Tests of what runs around the code, where it cannot run here: the GitHub
 * Actions workflows (schema and pinned actions), the shell scripts
 * (shellcheck), and the end-to-end suite's tie to the README.
 */
import assert from "node:assert/strict";
import { validateWorkflow } from "@action-validator/core";
import { parse } from "yaml";
import { ignoreWithout, repoDir } from "../testing/support.ts";

const decoder = new TextDecoder();
const WORKFLOWS = [
  ".github/workflows/ci.yml",
  ".github/workflows/e2e.yml",
  ".github/workflows/release.yml",
];

/** A step's `uses:` line: an action pinned to a full commit, its version in the comment. */
const PINNED_USES = /^\s*(?:- )?uses: ([\w.-]+\/[\w.-]+)@([0-9a-f]{40}) # (v\d+\.\d+\.\d+)$/;

Deno.test("workflows: valid against the GitHub Actions schema, every action pinned to a version", async (t) => {
  for (const file of WORKFLOWS) {
    await t.step(file, async () => {
      const text = await Deno.readTextFile(`${repoDir}${file}`);
      assert.deepEqual(validateWorkflow(text).errors, [], file);
      const uses = text.split("\n").filter((line) => /^\s*(- )?uses: /.test(line));
      assert.ok(uses.length > 0);
      for (const line of uses) assert.match(line, PINNED_USES, `${file}: ${line.trim()}`);
    });
  }
  await t.step("a broken workflow is caught", () => {
    const broken = "on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    stepz: []\n";
    assert.notDeepEqual(validateWorkflow(broken).errors, []);
  });
});

Deno.test({
  name:
    "workflows: e2e's matrix is every Istio release e2e/versions.json pins, read by jq as the runner does",
  ignore: await ignoreWithout("jq", "running the pins job's jq"),
  async fn() {
    const e2e = parse(await Deno.readTextFile(`${repoDir}.github/workflows/e2e.yml`));
    const read = e2e.jobs.pins.steps.find((s: { id?: string }) => s.id === "read");
    const output = await new Deno.Command("bash", {
      args: ["-c", read.run],
      cwd: repoDir,
      env: { GITHUB_OUTPUT: "/dev/stdout" },
    }).output();
    assert.ok(output.success);
    const pins = JSON.parse(await Deno.readTextFile(`${repoDir}e2e/versions.json`));
    const versions = pins.istio.map((pin: { version: string }) => pin.version);
    assert.equal(new TextDecoder().decode(output.stdout), `istio=${JSON.stringify(versions)}\n`);
  },
});

Deno.test("workflows: ci runs .ci/run with CI=true; e2e runs deno task e2e and a two-platform build", async () => {
  const ci = parse(await Deno.readTextFile(`${repoDir}.github/workflows/ci.yml`));
  const ciRun = ci.jobs.ci.steps.find((s: { name?: string }) => s.name === ".ci/run");
  assert.match(ciRun.run, /bash \.ci\/run$/);
  assert.equal(ciRun.env.CI, "true");
  assert.deepEqual(Object.keys(ci.on).sort(), ["pull_request", "push"]);
  const e2e = parse(await Deno.readTextFile(`${repoDir}.github/workflows/e2e.yml`));
  assert.deepEqual(e2e.on.push.branches, ["main"]);
  assert.ok("workflow_dispatch" in e2e.on);
  assert.ok(
    e2e.jobs.e2e.steps.some((s: { run?: string; env?: Record<string, string> }) =>
      s.run === 'deno task e2e --istio "$ISTIO"' && s.env?.ISTIO === "${{ matrix.istio }}"
    ),
  );
  assert.equal(e2e.jobs.e2e.strategy.matrix.istio, "${{ fromJSON(needs.pins.outputs.istio) }}");

  const build = e2e.jobs.image.steps.find((s: { uses?: string }) =>
    s.uses?.startsWith("docker/build-push-action@")
  );
  assert.equal(build.with.platforms, "linux/amd64,linux/arm64");
  assert.equal(build.with.push, false);
  const denoVersions = [ci, e2e].map((w) =>
    Object.values<{ steps: { with?: { "deno-version"?: string } }[] }>(w.jobs)
      .flatMap((job) => job.steps).find((s) => s.with?.["deno-version"])?.with?.["deno-version"]
  );
  const ciRunScript = await Deno.readTextFile(`${repoDir}.ci/run`);
  const pinned = /^DENO_VERSION=(\S+)$/m.exec(ciRunScript)![1];
  assert.deepEqual(denoVersions, [`v${pinned}`, `v${pinned}`], "the Deno version CI uses");
});

Deno.test("workflows: each action at one version in every workflow", async () => {
  const versions = new Map<string, Set<string>>();
  for (const file of WORKFLOWS) {
    for (const line of (await Deno.readTextFile(`${repoDir}${file}`)).split("\n")) {
      const match = PINNED_USES.exec(line);
      if (!match) continue;
      const [, action, commit, version] = match;
      versions.set(action, (versions.get(action) ?? new Set()).add(`${version} ${commit}`));
    }
  }
  for (const [action, pins] of versions) assert.equal(pins.size, 1, `${action}: ${[...pins]}`);
});

Deno.test("release: a version tag pushes both platforms to the image the manifests name, with provenance and an SBOM", async () => {
  const release = parse(await Deno.readTextFile(`${repoDir}.github/workflows/release.yml`));
  assert.deepEqual(release.on, { push: { tags: ["v*.*.*"] } });
  const job = release.jobs.image;
  assert.equal(job.permissions.packages, "write");
  assert.equal(release.permissions.contents, "read");
  const build = job.steps.find((s: { uses?: string }) =>
    s.uses?.startsWith("docker/build-push-action@")
  );
  assert.equal(build.with.platforms, "linux/amd64,linux/arm64");
  assert.equal(build.with.push, true);
  assert.equal(build.with.provenance, "mode=max");
  assert.equal(build.with.sbom, true);
  const [base] = parse(await Deno.readTextFile(`${repoDir}k8s/base/kustomization.yaml`)).images;
  assert.equal(base.newName, release.env.IMAGE, "the manifests' image is the one published");
  const denoJson = JSON.parse(await Deno.readTextFile(`${repoDir}deno.json`));
  assert.equal(base.newTag, denoJson.version, "the manifests name this version's image");
});

Deno.test({
  name: "shell scripts pass shellcheck",
  ignore: await ignoreWithout("shellcheck", "the shell script check"),
  async fn() {
    const output = await new Deno.Command("shellcheck", {
      args: ["--shell=bash", ".ci/run"],
      cwd: repoDir,
    }).output();
    assert.equal(output.code, 0, decoder.decode(output.stdout));
  },
});

Deno.test({
  name: "workflows pass yamllint",
  ignore: await ignoreWithout("yamllint", "the workflow lint"),
  async fn() {
    const output = await new Deno.Command("yamllint", {
      args: ["--strict", "-c", ".yamllint", ".github/workflows"],
      cwd: repoDir,
    }).output();
    assert.equal(output.code, 0, decoder.decode(output.stdout));
  },
});
