/**
 * For tests: the client run as `deno task client` runs it, in a process of
 * its own (its permissions are the task's), with its exit code and output.
 *
 * @module
 */
import { decoder, repoDir, taskArgs } from "../testing/support.ts";

/** What a client process did: its exit code and its output. */
export interface ClientRun {
  /** The exit code. */
  readonly code: number;
  /** Everything it printed on stdout. */
  readonly stdout: string;
  /** Everything it printed on stderr. */
  readonly stderr: string;
}

/**
 * Runs `tcp-echo client ARGS` as `deno task client` does; returns exit code
 * and output. A client still running after 30 s is killed (a hang fails its
 * test, not the run).
 */
export async function runClientProcess(args: readonly string[]): Promise<ClientRun> {
  const limit = new AbortController();
  const timer = setTimeout(() => limit.abort(), 30_000);
  const output = await new Deno.Command(Deno.execPath(), {
    args: [...await taskArgs("client"), ...args],
    cwd: repoDir,
    env: { NO_COLOR: "1" },
    stdin: "null",
    signal: limit.signal,
  }).output().finally(() => clearTimeout(timer));
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** A client process started by {@linkcode spawnClientProcess}; dispose of it to kill it. */
export interface ClientProcess extends AsyncDisposable {
  /** Sends it a signal, as Ctrl-C or `kill` does. */
  signal(signal: Deno.Signal): void;
  /** Waits (30 s at most) for it to exit; its code and output. */
  finish(): Promise<ClientRun>;
}

/** Starts `tcp-echo client ARGS` as `deno task client` does, to signal it while it runs. */
export async function spawnClientProcess(args: readonly string[]): Promise<ClientProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [...await taskArgs("client"), ...args],
    cwd: repoDir,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = child.output();
  const finish = async () => {
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    const { code, stdout, stderr } = await output.finally(() => clearTimeout(timer));
    return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
  };
  return {
    signal: (signal) => child.kill(signal),
    finish,
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch {
        // It has exited.
      }
      await output;
    },
  };
}
