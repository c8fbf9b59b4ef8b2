/**
 * `deno task compile`: the one binary of the image, made with `deno compile`
 * and the very flags `deno task start` runs the server with (its permissions
 * and V8 settings are baked into the binary) and the unstable features
 * deno.json enables (`"unstable"`), read from deno.json, so they are written
 * once. When the compile fails, says the likely why: `deno
 * compile` downloads the runtime it embeds (denort) the first time.
 *
 * @module
 */

/** The flags of a `deno run FLAGS... main.ts` task line: its words between `run` and `main.ts`. */
export function runFlags(task: string): string[] {
  const words = task.trim().split(/\s+/);
  if (words[0] !== "deno" || words[1] !== "run" || words.at(-1) !== "main.ts") {
    throw new Error(`not a "deno run ... main.ts" task: ${task}`);
  }
  return words.slice(2, -1);
}

/**
 * The `deno` arguments that compile main.ts to `output` with the start task's
 * flags and an `--unstable-NAME` flag for each of `unstable` (deno.json's list).
 */
export function compileArgs(
  startTask: string,
  unstable: readonly string[],
  output: string,
): string[] {
  return [
    "compile",
    ...runFlags(startTask),
    ...unstable.map((feature) => `--unstable-${feature}`),
    "--no-code-cache",
    "--output",
    output,
    "main.ts",
  ];
}

/** What a failed compile probably needs, printed after deno's own error; `denortBin` is `DENORT_BIN`. */
export function compileHint(denortBin: string | undefined): string {
  if (denortBin) {
    return `tcp-echo: deno compile failed with DENORT_BIN=${denortBin}: it must be the denort ` +
      `binary of Deno ${Deno.version.deno} for this platform.`;
  }
  return "tcp-echo: deno compile failed. It downloads the runtime it embeds (denort) from " +
    "dl.deno.land the first time: without that network, set DENORT_BIN to a denort binary of " +
    `Deno ${Deno.version.deno}, or build the image where the network allows it (docker build .).`;
}

if (import.meta.main) {
  const root = new URL("..", import.meta.url);
  const denoJson = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
  const start = denoJson.tasks.start;
  const startTask = typeof start === "string" ? start : start.command;
  const { code } = await new Deno.Command(Deno.execPath(), {
    args: compileArgs(startTask, denoJson.unstable ?? [], "tcp-echo"),
    cwd: root,
  }).spawn().status;
  if (code !== 0) console.error(compileHint(Deno.env.get("DENORT_BIN")));
  Deno.exit(code);
}
