import assert from "node:assert/strict";
import { compileArgs, compileHint, runFlags } from "./compile.ts";
import { decoder, repoDir, taskArgs } from "../testing/support.ts";

Deno.test("compile: the start task's flags, deno.json's unstable features, the binary ./tcp-echo, no code cache", () => {
  const start = "deno run --v8-flags=--max-semi-space-size=1 --allow-net --allow-env=A,B main.ts";
  assert.deepEqual(compileArgs(start, ["net"], "tcp-echo"), [
    "compile",
    "--v8-flags=--max-semi-space-size=1",
    "--allow-net",
    "--allow-env=A,B",
    "--unstable-net",
    "--no-code-cache",
    "--output",
    "tcp-echo",
    "main.ts",
  ]);
  assert.throws(() => runFlags("deno test --allow-all"), /not a "deno run \.\.\. main\.ts" task/);
});

Deno.test("deno task compile: a failed compile ends with the likely why, not a bare download error", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: await taskArgs("compile"),
    cwd: repoDir,
    env: { DENORT_BIN: "/nonexistent/denort", NO_COLOR: "1" },
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.notEqual(output.code, 0);
  const lines = decoder.decode(output.stderr).trimEnd().split("\n");
  assert.equal(lines.at(-1), compileHint("/nonexistent/denort"));
  assert.equal(await Deno.stat(`${repoDir}tcp-echo`).then(() => true, () => false), false);
});
