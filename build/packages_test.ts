/**
 * What a newcomer's first `deno task start` downloads: the packages of the
 * server and the client (build/server.lock), not the test tools'.
 */
import assert from "node:assert/strict";
import { decoder, repoDir, taskArgs } from "../testing/support.ts";

/** The package names of a lockfile's npm section (`name@version` keys). */
function lockedPackages(lock: { npm?: Record<string, unknown> }): string[] {
  return [...new Set(Object.keys(lock.npm ?? {}).map((key) => key.replace(/(?<!^)@.*$/, "")))]
    .sort();
}

/** The packages a Deno cache holds, as `name` or `@scope/name`. */
async function cachedPackages(denoDir: string): Promise<string[]> {
  const registry = `${denoDir}/npm/registry.npmjs.org`;
  const names: string[] = [];
  for await (const entry of Deno.readDir(registry)) {
    if (!entry.name.startsWith("@")) names.push(entry.name);
    else {
      for await (const scoped of Deno.readDir(`${registry}/${entry.name}`)) {
        names.push(`${entry.name}/${scoped.name}`);
      }
    }
  }
  return names.sort();
}

Deno.test("the first deno task start downloads the server's packages only, not the test tools'", async () => {
  const denoDir = await Deno.makeTempDir({ prefix: "tcp-echo-deno-dir-" });
  try {
    const output = await new Deno.Command(Deno.execPath(), {
      args: [...await taskArgs("start"), "--help"],
      cwd: repoDir,
      env: { DENO_DIR: denoDir, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(output.code, 0, decoder.decode(output.stderr));
    const server = JSON.parse(await Deno.readTextFile(`${repoDir}build/server.lock`));
    const downloaded = await cachedPackages(denoDir);
    assert.deepEqual(downloaded, lockedPackages(server));
    const all = JSON.parse(await Deno.readTextFile(`${repoDir}deno.lock`));
    const testTools = lockedPackages(all).filter((name) => !downloaded.includes(name));
    for (const tool of ["yaml", "kubernetes-models", "@action-validator/core"]) {
      assert.ok(testTools.includes(tool), `${tool} is the tests' only`);
    }
  } finally {
    await Deno.remove(denoDir, { recursive: true });
  }
});
