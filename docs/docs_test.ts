/**
 * Tests of the pages a reader walks through: the README's table of the
 * variables people set first says what the code says, its examples are valid
 * configuration, every link between README.md and docs/ lands on a page and
 * a heading that exist, and every page of docs/ opens with its contents.
 */
import assert from "node:assert/strict";
import { CONFIG_VARIABLES, ConfigError, loadConfig } from "../src/config.ts";
import { tableCells } from "./generated.ts";
import { repoDir } from "../testing/support.ts";

const readme = await Deno.readTextFile(`${repoDir}README.md`);
const docsPages = Array.from(Deno.readDirSync(`${repoDir}docs`))
  .filter((entry) => entry.isFile && entry.name.endsWith(".md"))
  .map((entry) => `docs/${entry.name}`)
  .sort();

/** A page's text without its fenced code blocks: a `#` line in a shell block is no heading. */
function prose(page: string): string {
  return page.replace(/^```[^\n]*\n[\s\S]*?^```$/gm, "");
}

/** The `## `…`###### ` headings of a page, as written. */
function headings(page: string, level = /#{2,6}/): string[] {
  const pattern = new RegExp(`^${level.source} (.+)$`, "gm");
  return Array.from(prose(page).matchAll(pattern), ([, text]) => text.trim());
}

/**
 * The anchor GitHub gives a heading: lower case, the characters that are not
 * letters, digits, spaces, `-` or `_` dropped, spaces made `-`.
 */
function slug(heading: string): string {
  return heading.toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, "").replace(/\s/g, "-");
}

/** Every anchor of a page; a repeated heading's gets `-1`, `-2`, … as on GitHub. */
function anchors(page: string): Set<string> {
  const seen = new Map<string, number>();
  const result = new Set<string>();
  for (const heading of headings(page, /#{1,6}/)) {
    const base = slug(heading);
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    result.add(count === 0 ? base : `${base}-${count}`);
  }
  return result;
}

Deno.test("README: every variable it names exists with the default the code has", async (t) => {
  const rows = tableCells(readme).filter(([first]) => /^`[A-Z][A-Z0-9_]+`/.test(first));
  const byName = new Map(CONFIG_VARIABLES.map((variable) => [variable.name, variable]));

  await t.step("its table: each name is a variable, each default the code's", () => {
    assert.ok(rows.length >= 5, `${rows.length} rows`);
    for (const [names, defaultText] of rows) {
      for (const [, name] of names.matchAll(/`([A-Z][A-Z0-9_]+)`/g)) {
        const variable = byName.get(name);
        assert.ok(variable, `${name} is not a variable the program reads`);
        assert.equal(defaultText.replaceAll("`", ""), variable.defaultText, `${name}'s default`);
      }
    }
  });

  await t.step("its examples (NAME=value) are variables, and valid values", () => {
    const settings = Array.from(
      readme.matchAll(/(?:^|[\s`$])([A-Z][A-Z0-9_]{2,})=([^\s`\\]*)/gm),
      ([, name, value]) => ({ name, value }),
    );
    assert.ok(settings.length >= 5, `${settings.length} settings`);
    for (const { name, value } of settings) {
      assert.ok(byName.has(name), `${name}=${value}: not a variable the program reads`);
      assert.doesNotThrow(() => loadConfig({ [name]: value }), ConfigError, `${name}=${value}`);
    }
  });
});

Deno.test("docs: every link between the pages lands on a page and a heading that exist", async () => {
  let links = 0;
  for (const file of ["README.md", ...docsPages]) {
    const page = await Deno.readTextFile(`${repoDir}${file}`);
    const folder = file.includes("/") ? file.slice(0, file.lastIndexOf("/") + 1) : "";
    for (const [, target] of prose(page).matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/.test(target)) continue; // https:, mailto:
      links++;
      const [path, anchor] = target.split("#");
      const linked = path === "" ? file : new URL(path, `file:///${folder}`).pathname.slice(1);
      const text = await Deno.readTextFile(`${repoDir}${linked}`).catch(() => undefined);
      assert.ok(text !== undefined, `${file}: ${target}: no file ${linked}`);
      if (anchor !== undefined) {
        assert.ok(anchors(text).has(anchor), `${file}: ${target}: no such heading in ${linked}`);
      }
    }
  }
  assert.ok(links > 30, `${links} links`);
});

Deno.test("docs: every page opens with its contents, a link to each of its sections", async () => {
  assert.ok(docsPages.length >= 9, docsPages.join(" "));
  for (const file of docsPages) {
    const page = await Deno.readTextFile(`${repoDir}${file}`);
    const [first, ...sections] = headings(page, /##/);
    assert.equal(first, "Contents", `${file}: its first section is its contents`);
    const contents = prose(page).split(/^## /m)[1];
    for (const section of sections) {
      assert.ok(contents.includes(`](#${slug(section)})`), `${file}: contents lack "${section}"`);
    }
  }
});

Deno.test("every kubectl logs that selects pods by label says how much of each log (--tail)", async () => {
  // With a selector, kubectl logs shows each pod's last 10 lines unless --tail says otherwise:
  // a command that greps for records would find only the newest few.
  const lines = [readme, ...await Promise.all(docsPages.map((p) => Deno.readTextFile(repoDir + p)))]
    .flatMap((page) => page.split("\n"))
    .filter((line) => /kubectl logs\b/.test(line) && /\s(-l|--selector)[\s=]/.test(line));
  assert.ok(lines.length > 0, "the pages select pods by label somewhere");
  assert.deepEqual(lines.filter((line) => !line.includes("--tail")), []);
  const run = await Deno.readTextFile(`${repoDir}e2e/run.ts`);
  const calls = Array.from(run.matchAll(/"logs",[^)\]]*/g), ([call]) => call)
    .filter((call) => call.includes('"-l"'));
  assert.ok(calls.length > 0, "the e2e selects pods by label somewhere");
  assert.deepEqual(calls.filter((call) => !call.includes('"--tail=')), []);
});

/** The paths a layout table's first column names (`dir/` for a whole directory). */
function layoutPaths(page: string): string[] {
  const section = page.slice(page.indexOf("## Layout"));
  const table = section.slice(0, section.indexOf("\n## "));
  return tableCells(table).slice(1).flatMap(([paths]) =>
    Array.from(paths.matchAll(/`([^`]+)`/g), ([, path]) => path)
  );
}

/** Whether `path` is one of `listed`, inside a listed `dir/`, or the test beside a listed module. */
function inLayout(path: string, listed: readonly string[]): boolean {
  return listed.some((entry) =>
    entry.endsWith("/")
      ? path.startsWith(entry)
      : path === entry || path === entry.replace(/\.ts$/, "_test.ts")
  );
}

Deno.test("layout rule: a directory covers its files, a module its test", () => {
  const listed = ["main.ts", "client/", ".ci/run"];
  assert.ok(inLayout("main_test.ts", listed));
  assert.ok(inLayout("client/udp.ts", listed));
  assert.ok(inLayout(".ci/run", listed));
  assert.ok(!inLayout("clientele.ts", listed));
  assert.ok(!inLayout("isolate-0x55af68dcb000-21171-v8.log", listed));
  assert.ok(!inLayout("src/udp.ts", listed));
});

const gitCheckout = await Deno.stat(`${repoDir}.git`).then(() => true, () => false);
if (!gitCheckout) {
  console.warn("ignored: the layout test reads git ls-files; this is not a git checkout");
}

Deno.test({
  name: "development.md's layout names every file the repository holds",
  ignore: !gitCheckout,
  fn: async () => {
    const output = await new Deno.Command("git", { args: ["ls-files"], cwd: repoDir }).output();
    assert.ok(output.success, "git ls-files");
    const files = new TextDecoder().decode(output.stdout).split("\n").filter(Boolean);
    assert.ok(files.includes("main.ts"), "git ls-files lists the repository");
    const listed = layoutPaths(await Deno.readTextFile(`${repoDir}docs/development.md`));
    assert.deepEqual(files.filter((file) => !inLayout(file, listed)), []);
  },
});

/** The first table after a page's `heading` line, as rows of cells (the header row first). */
function tableAfter(page: string, heading: string): string[][] {
  const at = page.indexOf(`\n${heading}\n`);
  assert.ok(at >= 0, `no heading "${heading}"`);
  const rest = page.slice(at + heading.length + 2);
  const start = rest.indexOf("\n|") + 1;
  const end = rest.indexOf("\n\n", start);
  return tableCells(rest.slice(start, end === -1 ? undefined : end));
}

/** The cell under `column` in the row that begins with `scenario` and `figure`. */
function cellOf(table: string[][], scenario: string, figure: string, column: string): string {
  const index = table[0].indexOf(column);
  const row = table.find((cells) => cells[0] === scenario && cells[1] === figure);
  assert.ok(index >= 0, `no column "${column}"`);
  assert.ok(row, `no row "${scenario}" / "${figure}"`);
  return row[index];
}

Deno.test("README: the How fast table says what performance.md's latest run measured", async () => {
  const page = await Deno.readTextFile(`${repoDir}docs/performance.md`);
  const latest = tableAfter(page, "## Latest figures");
  const tls = tableAfter(page, "## TLS ports");
  const udp = tableAfter(page, "## UDP");
  const shipped = "defaults / go-logging-echo";
  const off = "data off / go io.Copy";
  const plain = (scenario: string, figure: string) => [
    cellOf(latest, scenario, figure, shipped),
    cellOf(latest, scenario, figure, off),
  ];
  const idle = "memory per connection, idle";
  const expected: Record<string, string[]> = {
    "rr 50 × 64 B": plain("rr 50 × 64 B", "ops/s"),
    "connections, 8 at a time": plain("connections, 8 at a time", "conn/s"),
    "connections per server CPU-second": plain("connections, 8 at a time", "conn per server CPU-s"),
    "stream 4 × 64 KiB": plain("stream 4 × 64 KiB", "MB/s"),
    "idle memory per connection": [
      `${cellOf(latest, idle, "KiB", "tcp-echo, defaults")} KiB`,
      `${cellOf(latest, idle, "KiB", "tcp-echo, data off")} KiB`,
    ],
    "TLS handshakes, TLS stream": [
      "",
      `${cellOf(tls, "TLS handshakes, 8 at a time", "hs/s", "tcp-echo / go")}, ${
        cellOf(tls, "TLS stream 4 × 64 KiB", "MB/s", "tcp-echo / go")
      } (Go \`crypto/tls\`)`,
    ],
    "UDP, 8 flows × 64 B": ["defaults / go", "data off / go"].map((ratio) =>
      `${cellOf(udp, "UDP rr 8 flows × 64 B", "datagrams/s", ratio)} (Go UDP echo)`
    ),
  };
  const summary = tableAfter(readme, "## How fast").slice(1);
  assert.deepEqual(Object.fromEntries(summary.map(([row, ...cells]) => [row, cells])), expected);
});
