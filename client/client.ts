/**
 * `tcp-echo client`: probes and load-tests any TCP echo endpoint.
 *
 * `probe` (the default) opens connections one after another (or a few at a
 * time), reads whatever banner the server sends, sends a payload, checks that
 * every byte comes back, and reports who answered (version, pod, node from the
 * banner), what failed and why (the first detail of each reason, and a hint),
 * and latency percentiles. `load` keeps connections busy for a while,
 * request/response (`rr`) or streaming (`stream`), verifying every echoed
 * byte, and reports throughput and latency percentiles at microsecond
 * resolution.
 *
 * It is a program of its own (run as `tcp-echo client ...`, so one image
 * carries both), kept apart from the server in main.ts; this module is its
 * entry, and each concern has a module beside it: options.ts (the command
 * line), connection.ts, payloads.ts, failures.ts (reasons, details, hints),
 * probe.ts, load.ts, percentiles.ts and report.ts (the text for people).
 *
 * @example
 * ```sh
 * deno task client -- 127.0.0.1:3333 --count 100 --concurrency 10
 * deno task client -- 127.0.0.1:3333 load --mode rr --connections 50 --duration 10s
 * ```
 *
 * @module
 */
import { formatHostPort } from "../src/wire.ts";
import { type Connector, makeConnector } from "./connection.ts";
import { runLoad } from "./load.ts";
import {
  clientCommand,
  type ClientOptions,
  clientUsage,
  parseClientArgs,
  UsageError,
} from "./options.ts";
import { runProbe } from "./probe.ts";
import { loadFailed, missedThresholds, renderLoadReport, renderProbeReport } from "./report.ts";

const encoder = new TextEncoder();

/** A one-line progress display on a terminal, for runs over 2 s; silent otherwise. */
class Progress {
  #lastAt = 0;
  #shown = false;
  readonly #enabled: boolean;
  readonly #startedAt = performance.now();

  constructor(enabled: boolean) {
    this.#enabled = enabled;
  }

  update(text: () => string): void {
    const now = performance.now();
    if (!this.#enabled || now - this.#startedAt < 2_000 || now - this.#lastAt < 250) return;
    this.#lastAt = now;
    this.#shown = true;
    Deno.stderr.writeSync(encoder.encode(`\r\x1b[2K${text()}`));
  }

  clear(): void {
    if (this.#shown) Deno.stderr.writeSync(encoder.encode("\r\x1b[2K"));
  }
}

/**
 * Runs the client with its command-line arguments; returns the exit code:
 * 0 all good, 1 integrity failure or missed threshold, 2 bad usage.
 */
export async function runClient(args: readonly string[]): Promise<number> {
  const command = clientCommand(Deno.execPath());
  // `deno task client -- HOST:PORT ...` passes the `--` along.
  if (args[0] === "--") args = args.slice(1);
  if (args.includes("--help") || args.includes("-h")) {
    await Deno.stdout.write(encoder.encode(clientUsage(command)));
    return 0;
  }
  let options: ClientOptions;
  try {
    options = parseClientArgs(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`tcp-echo client: ${error.message}; see ${command} --help`);
    return 2;
  }
  const longRun = options.command === "load" && options.durationMs > 2_000;
  const progress = new Progress(
    !options.json && Deno.stderr.isTerminal() && (longRun || options.command === "probe"),
  );
  let connect: Connector;
  try {
    connect = await makeConnector(options);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`tcp-echo client: ${error.message}`);
    return 2;
  }
  const target = formatHostPort(options.hostname, options.port);
  const report = options.command === "probe"
    ? await runProbe(options, connect, target, (text) => progress.update(text))
    : await runLoad(options, connect, target, (text) => progress.update(text));
  progress.clear();
  const missed = missedThresholds(report, options.failUnder);
  if (options.json) {
    console.log(JSON.stringify({ ...report, missedThresholds: missed }));
  } else {
    await Deno.stdout.write(encoder.encode(
      "successPercent" in report ? renderProbeReport(report) : renderLoadReport(report),
    ));
    for (const sentence of missed) console.log(`threshold missed: ${sentence}`);
  }
  return loadFailed(report) || report.integrityFailures > 0 || missed.length > 0 ? 1 : 0;
}
