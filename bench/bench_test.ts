import assert from "node:assert/strict";
import { BENCH_USAGE, parseOptions } from "./bench.ts";
import { decoder, repoDir, taskArgs } from "../testing/support.ts";

Deno.test("deno task bench --help prints its usage and runs nothing; a bad option is one line, exit 2", async () => {
  const run = async (...args: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: [...await taskArgs("bench"), ...args],
      cwd: repoDir,
      env: { NO_COLOR: "1" },
    }).output();
  for (const flag of ["--help", "-h"]) {
    const output = await run(flag);
    assert.equal(output.code, 0);
    assert.equal(decoder.decode(output.stdout), BENCH_USAGE + "\n");
  }
  const bad = await run("--nope");
  assert.equal(bad.code, 2);
  assert.equal(
    decoder.decode(bad.stderr),
    "bench: unknown option --nope; see deno task bench --help\n",
  );
});

Deno.test("bench options: defaults, and whole numbers only", () => {
  assert.deepEqual(parseOptions([]), {
    minRounds: 3,
    maxRounds: 7,
    seconds: 2,
    idleConnections: 5_000,
    tlsConnections: 1_000,
    json: false,
    sections: ["plain", "tls", "udp", "hold"],
  });
  assert.deepEqual(parseOptions(["--only", "udp,plain"])?.sections, ["plain", "udp"]);
  assert.throws(
    () => parseOptions(["--only", "plain,tcp"]),
    /^Error: --only takes a comma list of plain, tls, udp, hold, not "tcp"$/,
  );
  assert.equal(parseOptions(["--rounds", "5"])?.maxRounds, 7);
  assert.equal(parseOptions(["--rounds", "9"])?.maxRounds, 9, "at least the minimum");
  assert.throws(() => parseOptions(["--seconds", "0.5"]), /--seconds takes a whole number/);
});
