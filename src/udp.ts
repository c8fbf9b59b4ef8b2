/**
 * UDP echo ports (`UDP_PORT`): every datagram is answered with the same
 * bytes. A peer (address and port) not seen for `UDP_FLOW_TIMEOUT` first gets
 * the banner as a datagram of its own, so `nc -u` shows who answered just as
 * on TCP. Each flow (a peer, until it falls silent) has its own UUID, an open
 * and a closed record with its counts, and data records as on TCP; the flow
 * table is bounded (`UDP_MAX_FLOWS`: past it a new peer's datagrams are
 * dropped, counted). Faults that mean something for datagrams: drop a
 * fraction, delay, duplicate, reorder.
 *
 * The socket is `Deno.listenDatagram`'s (deno.json enables `unstable: net`),
 * bound as the TCP listener is (on `::` both families, as Linux does unless
 * `net.ipv6.bindv6only` is 1), read one datagram at a time into one buffer.
 * `node:dgram` would need no flag, but Deno's implementation of it allocates
 * a fresh 64 KiB buffer for every datagram: under load V8 then runs a full
 * garbage collection every few tens of milliseconds, and the port answered a
 * quarter as many datagrams (docs/performance.md).
 *
 * @module
 */
import type { Config, UdpSettings } from "./config.ts";
import { log, logConnectionRecord, logReceived } from "./log_output.ts";
import { formatHostPort, ipFamily, receiveDatagrams, renderBannerText, unmapIPv4 } from "./wire.ts";

/** Why a datagram was not echoed, as `tcp_echo_udp_dropped_total{reason}` counts it. */
export const UDP_DROP_REASONS = ["fault", "flow_limit", "send_failed"] as const;
/** A {@linkcode UDP_DROP_REASONS} value. */
export type UdpDropReason = typeof UDP_DROP_REASONS[number];

/** One UDP port's counters, as plain numbers the metrics read. */
export class UdpPortStats {
  /** Datagrams received. */
  datagramsReceived = 0;
  /** Datagrams sent: banners, echoes and duplicates. */
  datagramsSent = 0;
  /** Bytes received. */
  bytesReceived = 0;
  /** Bytes sent. */
  bytesSent = 0;
  /** Flows begun. */
  flows = 0;
  /** Flows open now. */
  activeFlows = 0;
  /** Datagrams not echoed, by reason. */
  readonly dropped: Record<UdpDropReason, number> = { fault: 0, flow_limit: 0, send_failed: 0 };
}

/** A peer's flow: the datagrams from one address and port until it falls silent. */
interface Flow {
  readonly id: string;
  readonly client: string;
  readonly startedAt: number;
  lastSeenAt: number;
  datagramsIn: number;
  datagramsOut: number;
  bytesIn: number;
  bytesOut: number;
  /** A reordered echo held back until this flow's next echo (or its timer). */
  held?: { readonly bytes: Uint8Array; readonly timer: ReturnType<typeof setTimeout> };
}

/** Where a datagram came from. */
type Peer = Deno.NetAddr;

/** How long the port waits after a failed receive before the next (not a closed socket's). */
const RECEIVE_RETRY_MS = 100;

/** What happens to one datagram's echo, decided before it is sent (pure, given the random draws). */
export interface EchoPlan {
  /** Not echoed (the drop fault). */
  readonly drop: boolean;
  /** Echoed twice (the duplicate fault). */
  readonly duplicate: boolean;
  /** Held back and sent after the flow's next echo (the reorder fault). */
  readonly reorder: boolean;
}

/** Decides a datagram's faults from `random` (one draw per fault that is on). */
export function planEcho(faults: UdpSettings["faults"], random: () => number): EchoPlan {
  const draw = (fraction: number) => fraction > 0 && random() < fraction;
  const drop = draw(faults.dropFraction);
  return {
    drop,
    duplicate: !drop && draw(faults.duplicateFraction),
    reorder: !drop && draw(faults.reorderFraction),
  };
}

/** How long a reordered echo waits for the flow's next datagram before it goes anyway. */
const REORDER_HOLD_MS = 100;
/** How often the flow table is swept for silent peers. */
const SWEEP_INTERVAL_MS = 1_000;

/** Hooks for tests only: the random source of the faults, and the sweep interval. */
export interface UdpTestHooks {
  /** Draws for the faults; default Math.random. */
  readonly random?: () => number;
  /** How often silent flows are looked for; default {@linkcode SWEEP_INTERVAL_MS}. */
  readonly sweepIntervalMs?: number;
}

/**
 * One UDP echo port: its socket, its flows, its counters. {@linkcode UdpEchoPort.open}
 * binds it; {@linkcode UdpEchoPort.close} closes the flows (reason `shutdown`) and the socket.
 */
export class UdpEchoPort {
  readonly #socket: Deno.DatagramConn;
  readonly #flows = new Map<string, Flow>();
  /** `UDP_DELAY`'s echoes still waiting, cleared when the port closes. */
  readonly #delayed = new Set<ReturnType<typeof setTimeout>>();
  /** Sends begun outside the receive loop (delayed and reordered echoes), awaited at close. */
  readonly #sending = new Set<Promise<void>>();
  readonly #receiving: Promise<void>;
  #closing = false;
  readonly #config: Config;
  readonly #banner: Uint8Array | undefined;
  readonly #random: () => number;
  readonly #sweep: ReturnType<typeof setInterval>;
  readonly #logConnections = log.isEnabledFor("info");
  readonly #logData: boolean;
  #flowLimitReported = false;

  private constructor(
    socket: Deno.DatagramConn,
    readonly port: number,
    readonly stats: UdpPortStats,
    config: Config,
    hooks: UdpTestHooks,
  ) {
    this.#socket = socket;
    this.#config = config;
    const banner = renderBannerText(config.banner);
    this.#banner = config.bannerMode === "off" ? undefined : new TextEncoder().encode(banner);
    this.#random = hooks.random ?? Math.random;
    this.#logData = config.logDataBytes > 0 && this.#logConnections;
    this.#sweep = setInterval(
      () => this.#closeSilent(),
      hooks.sweepIntervalMs ?? SWEEP_INTERVAL_MS,
    );
    // Each datagram is answered before the next is read into the buffer: an echo sent
    // from it is on its way before it is reused, and what must wait is copied.
    this.#receiving = receiveDatagrams(
      socket,
      (message, peer) => this.#answer(message, peer),
      () => this.#closing,
      (error) => this.#receiveFailed(error),
    );
  }

  /** Binds a UDP port on `hostname` (`::` binds both families); throws when it cannot. */
  static open(
    hostname: string,
    port: number,
    config: Config,
    statsOf: (boundPort: number) => UdpPortStats,
    hooks: UdpTestHooks = {},
  ): UdpEchoPort {
    if (typeof Deno.listenDatagram !== "function") {
      throw new Error("Deno.listenDatagram needs --unstable-net (deno.json has unstable: net)");
    }
    const socket = Deno.listenDatagram({ transport: "udp", hostname, port });
    const bound = (socket.addr as Deno.NetAddr).port;
    return new UdpEchoPort(socket, bound, statsOf(bound), config, hooks);
  }

  /** Where it listens, as text. */
  get address(): string {
    const { hostname, port } = this.#socket.addr as Deno.NetAddr;
    return formatHostPort(hostname, port);
  }

  /** Closes every flow (reason `shutdown`) and the socket; echoes still delayed are dropped. */
  async close(): Promise<void> {
    this.#closing = true;
    clearInterval(this.#sweep);
    for (const timer of this.#delayed) clearTimeout(timer);
    this.#delayed.clear();
    for (const [key, flow] of this.#flows) this.#closeFlow(key, flow, "shutdown");
    this.#socket.close();
    await Promise.all([this.#receiving, ...this.#sending]);
  }

  /** Answers one datagram; a failure is logged, and the port goes on with the next. */
  async #answer(message: Uint8Array, peer: Peer): Promise<void> {
    try {
      await this.#onDatagram(message, peer);
    } catch (error) {
      log.warn("A UDP datagram could not be answered.", { port: this.port, error });
    }
  }

  /** A failed receive (not a closed socket's): logged, and the next comes after a pause. */
  async #receiveFailed(error: unknown): Promise<boolean> {
    log.warn("UDP socket error.", { port: this.port, error });
    await new Promise((resolve) => setTimeout(resolve, RECEIVE_RETRY_MS));
    return true;
  }

  async #onDatagram(message: Uint8Array, peer: Peer): Promise<void> {
    const { stats } = this;
    stats.datagramsReceived++;
    stats.bytesReceived += message.length;
    const key = `${peer.hostname}|${peer.port}`;
    let flow = this.#flows.get(key);
    const now = performance.now();
    if (flow === undefined) {
      flow = await this.#openFlow(key, peer, now);
      // The port may have closed (and closed this flow) while its banner was sent.
      if (flow === undefined || this.#closing) return;
    }
    flow.lastSeenAt = now;
    flow.datagramsIn++;
    flow.bytesIn += message.length;
    if (this.#logData) logReceived(flow.id, message, this.#config.logDataBytes);
    const plan = planEcho(this.#config.udp.faults, this.#random);
    if (plan.drop) {
      stats.dropped.fault++;
      return;
    }
    const delayMs = this.#config.udp.faults.delayMs;
    // An echo that waits (delayed, or held back to reorder) must outlive the receive buffer.
    const echoed = delayMs > 0 || plan.reorder ? message.slice() : message;
    if (delayMs === 0) return await this.#echo(flow, peer, echoed, plan);
    const timer = setTimeout(() => {
      this.#delayed.delete(timer);
      this.#track(this.#echo(flow, peer, echoed, plan));
    }, delayMs);
    this.#delayed.add(timer);
  }

  /** A new peer's flow, with its banner sent; `undefined` when the table is full. */
  async #openFlow(key: string, peer: Peer, now: number): Promise<Flow | undefined> {
    if (this.#flows.size >= this.#config.udp.maxFlows) {
      this.stats.dropped.flow_limit++;
      if (!this.#flowLimitReported) {
        this.#flowLimitReported = true;
        log.warn("UDP flow table full: datagrams of new peers are dropped.", {
          port: this.port,
          limit: this.#config.udp.maxFlows,
        });
      }
      return undefined;
    }
    const client = formatHostPort(unmapIPv4(peer.hostname), peer.port);
    const flow: Flow = {
      id: crypto.randomUUID(),
      client,
      startedAt: now,
      lastSeenAt: now,
      datagramsIn: 0,
      datagramsOut: 0,
      bytesIn: 0,
      bytesOut: 0,
    };
    this.#flows.set(key, flow);
    this.stats.flows++;
    this.stats.activeFlows++;
    if (this.#logConnections) {
      logConnectionRecord("UDP flow open.", {
        id: flow.id,
        client,
        port: this.port,
        family: ipFamily(peer.hostname),
      });
    }
    const banner = this.#bannerFor(flow);
    if (banner !== undefined) await this.#send(flow, peer, banner);
    return flow;
  }

  /** The banner datagram of a new flow: identity lines, the client's address and the flow's id when on. */
  #bannerFor(flow: Flow): Uint8Array | undefined {
    if (this.#banner === undefined) return undefined;
    const { showClientAddress, showConnectionId } = this.#config;
    const extra = renderBannerText({
      clientAddress: showClientAddress ? flow.client : undefined,
      connectionId: showConnectionId ? flow.id : undefined,
    });
    if (extra === "") return this.#banner.length > 0 ? this.#banner : undefined;
    const encoded = new TextEncoder().encode(extra);
    const banner = new Uint8Array(this.#banner.length + encoded.length);
    banner.set(this.#banner);
    banner.set(encoded, this.#banner.length);
    return banner;
  }

  /**
   * Sends `message` (and its duplicate), or holds it back (reorder: the
   * caller gives a copy of its own then); then what was held.
   */
  async #echo(flow: Flow, peer: Peer, message: Uint8Array, plan: EchoPlan): Promise<void> {
    const held = flow.held;
    if (plan.reorder && held === undefined) {
      const timer = setTimeout(() => this.#track(this.#releaseHeld(flow, peer)), REORDER_HOLD_MS);
      flow.held = { bytes: message, timer };
      return;
    }
    await this.#send(flow, peer, message);
    if (plan.duplicate) await this.#send(flow, peer, message);
    if (held !== undefined) await this.#releaseHeld(flow, peer);
  }

  async #releaseHeld(flow: Flow, peer: Peer): Promise<void> {
    const held = flow.held;
    if (held === undefined) return;
    clearTimeout(held.timer);
    flow.held = undefined;
    await this.#send(flow, peer, held.bytes);
  }

  /** Keeps a send begun by a timer until it settles, so that {@linkcode close} can await it. */
  #track(sending: Promise<void>): void {
    this.#sending.add(sending);
    sending.finally(() => this.#sending.delete(sending));
  }

  /** Sends one datagram and counts it; a failure is counted and logged, not thrown. */
  async #send(flow: Flow, peer: Peer, bytes: Uint8Array): Promise<void> {
    const { stats } = this;
    try {
      await this.#socket.send(bytes, peer);
    } catch (error) {
      if (this.#closing) return;
      stats.dropped.send_failed++;
      log.info("A UDP echo could not be sent: {detail}", {
        id: flow.id,
        detail: error instanceof Error ? error.message : String(error),
        bytes: bytes.length,
      });
      return;
    }
    stats.datagramsSent++;
    stats.bytesSent += bytes.length;
    flow.datagramsOut++;
    flow.bytesOut += bytes.length;
  }

  /** Closes the flows silent for `UDP_FLOW_TIMEOUT` (reason `idle`). */
  #closeSilent(): void {
    const cutoff = performance.now() - this.#config.udp.flowTimeoutMs;
    for (const [key, flow] of this.#flows) {
      if (flow.lastSeenAt <= cutoff && flow.held === undefined) this.#closeFlow(key, flow, "idle");
    }
  }

  #closeFlow(key: string, flow: Flow, reason: "idle" | "shutdown"): void {
    if (flow.held) clearTimeout(flow.held.timer);
    this.#flows.delete(key);
    this.stats.activeFlows--;
    if (this.#flows.size < this.#config.udp.maxFlows) this.#flowLimitReported = false;
    if (!this.#logConnections) return;
    logConnectionRecord("UDP flow closed.", {
      id: flow.id,
      reason,
      datagrams_in: flow.datagramsIn,
      datagrams_out: flow.datagramsOut,
      bytes_in: flow.bytesIn,
      bytes_out: flow.bytesOut,
      duration_ms: Math.round(performance.now() - flow.startedAt),
      port: this.port,
    });
  }
}
