/**
 * Admission: which accepted connections the server takes on, so that no load
 * test, flood of silent clients or burst of data can take the process down.
 *
 * - `MAX_CONNECTIONS` bounds the open connections (past any PROXY header and
 *   TLS handshake); one more is refused with reason `max_connections`.
 * - Connections still in their TLS handshake or waiting for a PROXY header are
 *   *pending*: they have a share of their own (`MAX_PENDING_CONNECTIONS`) and
 *   do not count as open, so silent clients of a TLS port cannot keep the plain
 *   ports from answering. While the share is full, the ports that have such a
 *   stage wait before accepting more (the kernel's queue holds the clients).
 * - Each connection is charged its kind's memory cost ({@linkcode MemoryBudget})
 *   from accept to end; one that does not fit is refused with reason `memory`.
 *
 * No sockets here: main.ts asks and tells; this keeps the counts.
 *
 * @module
 */
import type { MemoryBudget } from "./memory.ts";

/** Why admission turned a connection away, as counted in `tcp_echo_connections_rejected_total`. */
export type AdmissionRefusal = "max_connections" | "memory";

/** The limits admission keeps, from the configuration. */
export interface AdmissionLimits {
  /** Open connections at most; 0 = unlimited. */
  readonly maxConnections: number;
  /** Pending connections at most; 0 = unlimited. */
  readonly maxPendingConnections: number;
}

/** The counts of open and pending connections, and the memory they are charged. */
export class Admission {
  #open = 0;
  #pending = 0;
  /** Resolved (and cleared) when a pending slot frees while accept loops wait for one. */
  #slotFreed: PromiseWithResolvers<void> | undefined;

  /** Keeps `limits`, charging memory to `budget`. */
  constructor(readonly limits: AdmissionLimits, readonly budget: MemoryBudget) {}

  /** Connections open now. */
  get open(): number {
    return this.#open;
  }

  /** Connections pending now. */
  get pending(): number {
    return this.#pending;
  }

  /** Whether the pending share is full: the ports with a pending stage should wait. */
  get pendingFull(): boolean {
    const max = this.limits.maxPendingConnections;
    return max > 0 && this.#pending >= max;
  }

  /**
   * A connection was accepted: it is charged `costBytes` and counted as
   * pending (it has a PROXY header or handshake ahead) or open. Returns why it
   * must be refused instead, having counted nothing: with `MAX_CONNECTIONS`
   * open, a pending one too, as it could not open when its handshake is done.
   */
  accept(costBytes: number, pending: boolean): AdmissionRefusal | undefined {
    if (this.#atConnectionLimit()) return "max_connections";
    if (!this.budget.tryCharge(costBytes)) return "memory";
    if (pending) this.#pending++;
    else this.#open++;
    return undefined;
  }

  /**
   * A pending connection is ready to open. It is open now, or — past
   * `MAX_CONNECTIONS` — returns `max_connections` and stays pending until
   * {@linkcode Admission.end}.
   */
  promote(): AdmissionRefusal | undefined {
    if (this.#atConnectionLimit()) return "max_connections";
    this.#leavePending();
    this.#open++;
    return undefined;
  }

  /** A connection accepted with `costBytes` ended, pending or open. */
  end(costBytes: number, pending: boolean): void {
    this.budget.credit(costBytes);
    if (pending) this.#leavePending();
    else this.#open--;
  }

  /** Resolves once the pending share has room again (at once when it has), or `signal` aborts. */
  async pendingSlot(signal: AbortSignal): Promise<void> {
    while (this.pendingFull && !signal.aborted) {
      this.#slotFreed ??= Promise.withResolvers();
      const aborted = Promise.withResolvers<void>();
      const onAbort = () => aborted.resolve();
      signal.addEventListener("abort", onAbort, { once: true });
      await Promise.race([this.#slotFreed.promise, aborted.promise]);
      signal.removeEventListener("abort", onAbort);
    }
  }

  #atConnectionLimit(): boolean {
    const max = this.limits.maxConnections;
    return max > 0 && this.#open >= max;
  }

  #leavePending(): void {
    this.#pending--;
    if (!this.pendingFull && this.#slotFreed) {
      this.#slotFreed.resolve();
      this.#slotFreed = undefined;
    }
  }
}

/**
 * Bounds the banner writes under way, for the echo ports' accept loops. In a
 * burst of connections Deno resolves each accept at once while the kernel's
 * queue has another, so an accept loop runs through the whole queue before any
 * write completes: thousands of connections then wait for their banner at
 * once (100 ms at the median, measured), long enough for the young
 * generation to promote what each holds meanwhile, which is garbage a moment
 * later — 1.5–2.5 KiB of resident memory per idle connection (issue 22).
 * With `max` writes under way the loops wait ({@linkcode BannerWrites.room})
 * until half of them are done. A wait that lasts `maxWaitMs` (writes that do
 * not complete: a peer that reads nothing, under memory pressure) lifts the
 * bound until the writes under way are down to half again.
 */
export class BannerWrites {
  #underWay = 0;
  #room: PromiseWithResolvers<void> | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #lifted = false;

  /** At most `max` writes under way before accepting waits, for `maxWaitMs` at most. */
  constructor(readonly max: number, readonly maxWaitMs: number) {}

  /** Writes under way now. */
  get underWay(): number {
    return this.#underWay;
  }

  /** A banner write began. */
  begin(): void {
    this.#underWay++;
  }

  /** A banner write ended, written or failed. */
  end(): void {
    this.#underWay--;
    if (this.#underWay <= this.max / 2) {
      this.#lifted = false;
      this.#open();
    }
  }

  /** A promise to wait for before the next accept while `max` writes are under way; else `undefined`. */
  room(): Promise<void> | undefined {
    if (this.#underWay < this.max || this.#lifted) return undefined;
    if (this.#room === undefined) {
      this.#room = Promise.withResolvers();
      this.#timer = setTimeout(() => {
        this.#lifted = true;
        this.#open();
      }, this.maxWaitMs);
    }
    return this.#room.promise;
  }

  #open(): void {
    if (this.#room === undefined) return;
    clearTimeout(this.#timer);
    this.#room.resolve();
    this.#room = undefined;
  }
}
