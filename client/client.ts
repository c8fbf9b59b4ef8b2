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
 * resolution. `hold` keeps connections open with a heartbeat on each and
 * records what becomes of them: where each landed, its stalls, how and when
 * it ended, and where its replacement landed. With `--udp`, probe and load
 * send datagrams instead (`--one-flow`: all from one source port, to see
 * when the backend answering it changes); `-4`/`-6` pick the IP family, and
 * probe `-4 -6` reports on each.
 *
 * It is a program of its own (run as `tcp-echo client ...`, so one image
 * carries both), kept apart from the server in main.ts; this module is its
 * entry, and each concern has a module beside it: options.ts (the command
 * line), connection.ts, family.ts (`-4`/`-6`), payloads.ts, failures.ts
 * (reasons, details, hints), probe.ts, load.ts, udp.ts (`--udp`) and
 * udp_flow.ts (`--one-flow`), hold.ts (and its records, hold_record.ts),
 * percentiles.ts and report.ts (the text for people).
 *
 * @example
 * ```sh
 * deno task client -- 127.0.0.1:3333 --count 100 --concurrency 10
 * deno task client -- 127.0.0.1:3333 load --mode rr --connections 50 --duration 10s
 * deno task client -- 127.0.0.1:3333 hold --connections 1000 --reconnect --expect moved-to v2
 * deno task client -- 127.0.0.1:3333 --udp --count 100 --concurrency 10
 * deno task client -- 127.0.0.1:3333 --udp --one-flow --count 300 --interval 1s
 * deno task client -- localhost:3333 -4 -6
 * ```
 *
 * @module
 */
import { formatHostPort } from "../src/wire.ts";
import { type Connector, makeConnector } from "./connection.ts";
import { type HoldStatus, runHold } from "./hold.ts";
import { holdExitCode } from "./hold_record.ts";
import { runLoad } from "./load.ts";
import {
  clientCommand,
  type ClientOptions,
  clientUsage,
  parseClientArgs,
  UsageError,
} from "./options.ts";
import { runProbe } from "./probe.ts";
import {
  type ClientReport,
  loadFailed,
  missedThresholds,
  renderAllOpen,
  renderHoldReport,
  renderHoldStatus,
  renderReport,
} from "./report.ts";
import { runUdpLoad, runUdpProbe } from "./udp.ts";
import { runUdpFlow } from "./udp_flow.ts";

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
 * hold's live display on stderr: on a terminal, one line rewritten in place
 * (cut to the terminal's width); otherwise a line once every first
 * connection opened, then one every {@linkcode PLAIN_EVERY_MS}.
 */
class LiveLine {
  #checkedAt = 0;
  /** When (ms since the start) the last plain line was due. */
  #plainAt = 0;
  #shown = false;
  #toldAllOpen = false;
  readonly #terminal: boolean;

  constructor(terminal: boolean) {
    this.#terminal = terminal;
  }

  update(status: () => HoldStatus): void {
    const now = performance.now();
    if (now - this.#checkedAt < (this.#terminal ? 250 : 100)) return;
    this.#checkedAt = now;
    const current = status();
    if (this.#terminal) {
      const line = renderHoldStatus(current).slice(0, Deno.consoleSize().columns - 1);
      this.#shown = true;
      Deno.stderr.writeSync(encoder.encode(`\r\x1b[2K${line}`));
      return;
    }
    if (!this.#toldAllOpen && current.allOpenAtMs !== undefined) {
      this.#toldAllOpen = true;
      console.error(renderAllOpen(current));
    }
    if (current.elapsedMs - this.#plainAt >= PLAIN_EVERY_MS) {
      this.#plainAt = current.elapsedMs - (current.elapsedMs % PLAIN_EVERY_MS);
      console.error(renderHoldStatus(current));
    }
  }

  clear(): void {
    if (this.#shown) Deno.stderr.writeSync(encoder.encode("\r\x1b[2K"));
  }
}

/** How often the live line is printed anew when stderr is not a terminal. */
const PLAIN_EVERY_MS = 5_000;

/** Exit code of a second Ctrl-C, which does not wait for the report. */
const INTERRUPTED_AGAIN = 130;

/**
 * Runs `work` with SIGINT and SIGTERM aborting its signal, so that it can end
 * with its report; a second one exits at once (130).
 */
async function untilInterrupted<T>(work: (stop: AbortSignal) => Promise<T>): Promise<T> {
  const stop = new AbortController();
  const signals = ["SIGINT", "SIGTERM"] as const;
  const onSignal = () => stop.signal.aborted ? Deno.exit(INTERRUPTED_AGAIN) : stop.abort();
  for (const signal of signals) Deno.addSignalListener(signal, onSignal);
  try {
    return await work(stop.signal);
  } finally {
    for (const signal of signals) Deno.removeSignalListener(signal, onSignal);
  }
}

/** Runs a hold until its end or Ctrl-C; prints the report; returns the exit code. */
async function hold(options: ClientOptions, connect: Connector, target: string): Promise<number> {
  const live = new LiveLine(Deno.stderr.isTerminal());
  let report;
  try {
    report = await untilInterrupted((stop) =>
      runHold(options, connect, target, (status) => live.update(status), stop)
    );
  } finally {
    live.clear();
  }
  await Deno.stdout.write(encoder.encode(
    options.json ? JSON.stringify(report) + "\n" : renderHoldReport(report),
  ));
  return holdExitCode(report);
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
  // probe -4 -6: a run per family, at the same time.
  const runs = options.families.length > 1
    ? options.families.map((family) => ({ ...options, families: [family] }))
    : [options];
  let connectors: (Connector | undefined)[];
  try {
    connectors = await Promise.all(runs.map((run) => run.udp ? undefined : makeConnector(run)));
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`tcp-echo client: ${error.message}`);
    return 2;
  }
  const target = formatHostPort(options.hostname, options.port);
  if (options.command === "hold") return await hold(options, connectors[0]!, target);
  const update = (text: () => string) => progress.update(text);
  const measureAll = (stop?: AbortSignal) =>
    Promise.all(runs.map((run, i) => measure(run, connectors[i], target, update, stop)));
  // Only a one-flow probe ends with its report on Ctrl-C; the others stop as they did.
  const reports = options.oneFlow ? await untilInterrupted(measureAll) : await measureAll();
  progress.clear();
  return await printReports(reports, options);
}

/** Runs one probe or load, TCP or UDP, as `options` say. */
function measure(
  options: ClientOptions,
  connect: Connector | undefined,
  target: string,
  progress: (text: () => string) => void,
  stop = new AbortController().signal,
): Promise<ClientReport> {
  if (options.udp) {
    if (options.command === "load") return runUdpLoad(options, target, progress);
    return options.oneFlow
      ? runUdpFlow(options, target, progress, stop)
      : runUdpProbe(options, target, progress);
  }
  return options.command === "probe"
    ? runProbe(options, connect!, target, progress)
    : runLoad(options, connect!, target, progress);
}

/**
 * Prints the reports (more than one: a report per family; in JSON one
 * object, `{"target", "families": {"IPv4": ..., "IPv6": ...}}`); returns
 * the exit code: 1 when any of them failed.
 */
async function printReports(
  reports: readonly ClientReport[],
  options: ClientOptions,
): Promise<number> {
  const judged = reports.map((report) => {
    const missed = missedThresholds(report, options.failUnder);
    const failed = loadFailed(report) || report.integrityFailures > 0 || missed.length > 0;
    return { report, missed, failed };
  });
  const perFamily = reports.length > 1;
  if (options.json) {
    const withMissed = judged.map(({ report, missed }) => ({
      ...report,
      missedThresholds: missed,
    }));
    console.log(JSON.stringify(
      perFamily
        ? {
          target: reports[0].target,
          families: Object.fromEntries(withMissed.map((report) => [report.family, report])),
        }
        : withMissed[0],
    ));
  } else {
    const texts = judged.map(({ report, missed }) => {
      const which = perFamily ? ` (${report.family})` : "";
      return renderReport(report) +
        missed.map((sentence) => `threshold missed${which}: ${sentence}\n`).join("");
    });
    await Deno.stdout.write(encoder.encode(texts.join("\n")));
  }
  return judged.some(({ failed }) => failed) ? 1 : 0;
}
