/**
 * The memory budget: what the container's limit leaves for connections once
 * the process itself, the shared buffers and the log queue are paid for, and
 * the admission that keeps the connections inside it. Each connection is
 * charged what one of its kind takes at most (measured: docs/operations.md, Memory budget) when
 * it is accepted and credited when it ends, so a load test far past the
 * limit is refused (reason `memory`) instead of killed by the kernel.
 *
 * The process's resident size is not the measure: after a burst the
 * allocator keeps freed memory resident, so admission by it would refuse
 * for good once a load test has passed; the charges fall when connections end.
 *
 * @module
 */
import process from "node:process";

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * What one connection takes at most, by what it is doing, measured with Deno
 * 2.9.6 on x86_64 (docs/operations.md, Memory budget): a plain connection idle is about 7 KiB and
 * keeps its 1 KiB buffer after a burst (the large buffers are the pool's); a
 * TLS connection is about 41 KiB idle, Deno's TLS engine keeps about 125 KiB
 * more once data has flowed, and one whose client sends and does not read
 * holds about 208 KiB at its back-pressure (queued, encrypted and in-flight
 * records): charged from accept, the handshake included.
 */
export const CONNECTION_COST_BYTES = {
  plain: 12 * KiB,
  tls: 224 * KiB,
} as const;

/**
 * The process's own size at start, rounded up from what was measured (about
 * 57 MiB, 70 MiB with a TLS port): what the manifests are sized with. The
 * server itself measures its size at start.
 */
export const PROCESS_BASE_BYTES = { plain: 64 * MiB, tls: 80 * MiB } as const;

/** A kind of {@linkcode CONNECTION_COST_BYTES}. */
export type ConnectionCost = keyof typeof CONNECTION_COST_BYTES;

/** The share of the limit kept free for what no charge counts (V8's heap growth, the kernel's). */
export const HEADROOM_SHARE = 0.1;

/** A limit at or above this is "no limit" (cgroup v1 writes about 2^63 for none). */
const NO_LIMIT_BYTES = 2 ** 60;

/** How the fixed costs scale with the limit: a share of it, within bounds. */
function share(limitBytes: number, divisor: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, Math.floor(limitBytes / divisor)));
}

/** The parts of the budget, in bytes, for a memory limit (`undefined`: none). */
export interface MemoryPlan {
  /** The container's memory limit; `undefined` when there is none. */
  readonly limitBytes: number | undefined;
  /** The large buffers lent for bursts, together ({@linkcode BufferPool}). */
  readonly burstPoolBytes: number;
  /** The buffers TLS connections read encrypted bursts into, together. */
  readonly tlsReadPoolBytes: number;
  /** Log output waiting to be written, at most: the batch being filled and the one being written. */
  readonly logQueueBytes: number;
  /** What connections may be charged together; Infinity without a limit. */
  readonly connectionBytes: number;
}

/**
 * Splits a memory limit (pure): the process as it is at start (`baseBytes`),
 * {@linkcode HEADROOM_SHARE} of the limit, the buffer pools and the log queue
 * (each a sixteenth of the limit or less) come first; connections get the rest.
 */
export function planMemory(limitBytes: number | undefined, baseBytes: number): MemoryPlan {
  if (limitBytes === undefined) {
    return {
      limitBytes,
      burstPoolBytes: 16 * MiB,
      tlsReadPoolBytes: 4 * MiB,
      logQueueBytes: 16 * MiB,
      connectionBytes: Infinity,
    };
  }
  const burstPoolBytes = share(limitBytes, 16, 1 * MiB, 16 * MiB);
  const tlsReadPoolBytes = share(limitBytes, 64, 256 * KiB, 4 * MiB);
  const logQueueBytes = share(limitBytes, 16, 1 * MiB, 16 * MiB);
  const fixed = baseBytes + burstPoolBytes + tlsReadPoolBytes + logQueueBytes;
  const connectionBytes = Math.max(0, limitBytes * (1 - HEADROOM_SHARE) - fixed);
  return { limitBytes, burstPoolBytes, tlsReadPoolBytes, logQueueBytes, connectionBytes };
}

/** How many connections of a kind a plan admits, each charged its {@linkcode CONNECTION_COST_BYTES}. */
export function connectionsAdmitted(plan: MemoryPlan, kind: ConnectionCost): number {
  return Math.floor(plan.connectionBytes / CONNECTION_COST_BYTES[kind]);
}

/**
 * The container's memory limit as the runtime reads it (cgroup v2
 * `memory.max`, v1 `memory.limit_in_bytes`); `undefined` when there is none.
 * Needs `--allow-sys=systemMemoryInfo`.
 */
export function containerMemoryLimit(): number | undefined {
  const limit = process.constrainedMemory();
  return limit > 0 && limit < NO_LIMIT_BYTES ? limit : undefined;
}

/**
 * The charges against {@linkcode MemoryPlan.connectionBytes}: a connection is
 * charged when accepted and credited when it ends.
 */
export class MemoryBudget {
  #chargedBytes = 0;

  /** A budget of `plan.connectionBytes`. */
  constructor(readonly plan: MemoryPlan) {}

  /** Bytes charged now. */
  get chargedBytes(): number {
    return this.#chargedBytes;
  }

  /** Charges `bytes` if they fit; false (nothing charged) when they do not. */
  tryCharge(bytes: number): boolean {
    if (this.#chargedBytes + bytes > this.plan.connectionBytes) return false;
    this.#chargedBytes += bytes;
    return true;
  }

  /** Credits `bytes` charged before. */
  credit(bytes: number): void {
    this.#chargedBytes -= bytes;
  }
}
