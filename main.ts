/**
 * tcp-echo: a TCP echo server for learning, testing and debugging TCP
 * networking on Kubernetes and Istio.
 *
 * Every connection gets a banner naming the node, pod, namespace, IP,
 * service account and version that answered, then every byte it sends is
 * echoed back unchanged. Each connection is logged under its own UUID.
 *
 * This module is the connection's path (accept → PROXY header → banner →
 * echo → close) and the server's lifecycle (listen, drain, signals, `main`).
 * The server's other concerns (configuration, log output, admin and
 * metrics, PROXY protocol, line mode, TLS, the wire format) each live in a
 * module of their own under `src/`; the client program is `client/`.
 *
 * @example Start a server on an ephemeral loopback port
 * ```ts
 * import { startServer } from "./main.ts";
 * import { loadConfig } from "./src/config.ts";
 * const config = loadConfig({ HOST: "127.0.0.1", ADMIN_PORT: "off" });
 * const server = startServer(config, { ports: [0] });
 * console.log(server.addresses[0].port);
 * await server.shutdown();
 * ```
 *
 * @module
 */
import {
  ACCEPT_ERROR_KINDS,
  type AcceptErrorKind,
  AdminConnections,
  type CloseReason,
  createMetricsExporter,
  type MetricsExporter,
  type PendingStage,
  type PortStats,
  type RejectReason,
  ServerStats,
} from "./src/admin.ts";
import {
  applyArguments,
  type Config,
  ConfigError,
  loadConfig,
  readEnvironment,
  renderHelp,
  REPEATED_SIGNAL_WINDOW_MS,
} from "./src/config.ts";
import {
  createStdoutSink,
  log,
  logConnectionRecord,
  logReceived,
  setupLogging,
} from "./src/log_output.ts";
import { LineAnswerer } from "./src/line_mode.ts";
import { BufferPool, ReadBuffer } from "./src/read_buffers.ts";
import { UdpEchoPort, type UdpTestHooks } from "./src/udp.ts";
import { Admission, type AdmissionRefusal, BannerWrites } from "./src/admission.ts";
import {
  CONNECTION_COST_BYTES,
  connectionsAdmitted,
  containerMemoryLimit,
  MemoryBudget,
  type MemoryPlan,
  planMemory,
} from "./src/memory.ts";
import {
  isTrusted,
  parseProxyHeader,
  type ProxyTlvFacts,
  V2_MAX_BYTES,
} from "./src/proxy_protocol.ts";
import {
  acceptTls,
  CLIENT_HELLO_SNIFF_BYTES,
  clientHelloRecordLength,
  clientHelloServerName,
  looksLikeClientHello,
  mayStartClientHello,
  renderTlsBanner,
  TLS_HANDSHAKE_RECORD,
  TLS_HANDSHAKE_TIMEOUT_MS,
  TlsCredentials,
  TlsFileError,
  tlsRecordFields,
  type TlsRefusal,
} from "./src/tls.ts";
import { TLS_READ_BYTES, type TlsFacts } from "./src/tls_stream.ts";
import {
  closeQuietly,
  concatBytes,
  drainNotice,
  formatAddress,
  formatHostPort,
  ipFamily,
  renderBannerText,
} from "./src/wire.ts";

// ---------------------------------------------------------------------------
// Types and constants
// ---------------------------------------------------------------------------

/**
 * How long the rest of a ClientHello on a plain port is waited for: the bytes
 * that tell it is one, then the record, to log its server name.
 */
const CLIENT_HELLO_WAIT_MS = 1_000;

/** How long a PROXY header may take to arrive. */
export const PROXY_HEADER_TIMEOUT_MS = 5_000;

/** The buffers lent for bursts ({@linkcode BufferPool}): the size of each. */
const BURST_BUFFER_BYTES = 65_536;
/**
 * Their size when data records are on: each read costs two records, so
 * fewer, larger reads keep logging's share of a busy stream small. Without
 * logging, 64 KiB was faster (docs/performance.md).
 */
const BURST_BUFFER_BYTES_LOGGING = 262_144;

/** Banners being written at most before the echo ports' accept loops wait ({@linkcode BannerWrites}). */
const BANNER_WRITES_MAX = 64;
/** How long an accept loop waits for banner writes at most before it stops waiting for them. */
const BANNER_WRITES_WAIT_MS = 100;

/** Admin connections accepted in a row before the accept loop yields a turn (as nginx does). */
const ADMIN_ACCEPTS_PER_TURN = 16;

const ACCEPT_BACKOFF_MIN_MS = 5;
const ACCEPT_BACKOFF_MAX_MS = 1_000;
/** Refusals at the connection limit are reported at most this often, each report counting all. */
const REFUSAL_REPORT_INTERVAL_MS = 1_000;

const PEER_GONE_ERRORS = [
  Deno.errors.ConnectionReset,
  Deno.errors.BrokenPipe,
  Deno.errors.ConnectionAborted,
  Deno.errors.UnexpectedEof,
];

/** Errors of one queued connection that its client reset before it was accepted. */
const GONE_BEFORE_ACCEPT_ERRORS = [
  Deno.errors.NotConnected,
  Deno.errors.ConnectionReset,
  Deno.errors.ConnectionAborted,
];

const encoder = new TextEncoder();
const NO_BYTES = new Uint8Array(0);

/**
 * Hooks for tests only, never read from the environment: listening on port 0
 * (a free port) and a shorter PROXY header wait.
 */
export interface TestHooks {
  /** Echo ports to listen on instead of `config.ports`; 0 picks a free one. */
  readonly ports?: readonly number[];
  /** Admin port instead of `config.adminPort`; 0 picks a free one. */
  readonly adminPort?: number;
  /** How long a PROXY header may take, instead of {@linkcode PROXY_HEADER_TIMEOUT_MS}. */
  readonly proxyHeaderTimeoutMs?: number;
  /** TLS ports to listen on instead of `config.tls.ports`; 0 picks a free one. */
  readonly tlsPorts?: readonly number[];
  /** How long a TLS handshake may take, instead of {@linkcode TLS_HANDSHAKE_TIMEOUT_MS}. */
  readonly tlsHandshakeTimeoutMs?: number;
  /** The memory limit instead of `MEMORY_LIMIT`'s (bytes). */
  readonly memoryLimitBytes?: number;
  /** The process's own memory, instead of its resident size at start (bytes). */
  readonly baseMemoryBytes?: number;
  /** UDP ports to listen on instead of `config.udp.ports`; 0 picks a free one. */
  readonly udpPorts?: readonly number[];
  /** The UDP ports' random source and sweep interval. */
  readonly udp?: UdpTestHooks;
}

/** What the server is given besides its configuration, each made once by `main`. */
export interface ServerResources {
  /** The certificate of the TLS ports ({@linkcode TlsCredentials.load}); needed when there are any. */
  readonly tls?: TlsCredentials;
  /** The memory limit ({@linkcode resolveMemoryLimit}); when absent, the server resolves it. */
  readonly memoryLimitBytes?: number | undefined;
}

/** How {@linkcode EchoServer.shutdown} stops; defaults come from the config. */
export interface ShutdownOptions {
  /** Readiness fails and accepting goes on this long. */
  readonly drainDelayMs?: number;
  /** Open connections may go on this long after accepting stopped. */
  readonly graceMs?: number;
}

/** An address the server could not listen on; the message names it and says why. */
export class ListenError extends Error {
  /** Names the error in a stack trace. */
  override name = "ListenError";
  /**
   * `where` names the address (`TCP port 0.0.0.0:3333`), `variable` the
   * setting that chose it; `cause` is the error from listen.
   */
  constructor(where: string, variable: string, cause: unknown) {
    const alternative = variable === "ADMIN_PORT" ? ", or off" : "";
    super(
      `cannot listen on ${where}: ${
        (cause as Error).message
      }; set ${variable} to a free port${alternative}`,
      { cause },
    );
  }
}

// ---------------------------------------------------------------------------
// Pure helpers
// ---------------------------------------------------------------------------

/**
 * Renders the banner sent right after accept: one line per set field, in a
 * fixed order. The first five lines are byte-identical to the original Go
 * server's. With no field set, the banner is empty.
 */
export function renderBanner(banner: Config["banner"]): Uint8Array {
  return encoder.encode(renderBannerText(banner));
}

/**
 * Sorts an `accept()` error: `connection` when only that queued connection
 * is gone (a health checker's RST: accept the next one at once), else
 * `resources` (out of descriptors or memory: back off and retry).
 */
export function classifyAcceptError(error: unknown): AcceptErrorKind {
  return GONE_BEFORE_ACCEPT_ERRORS.some((type) => error instanceof type)
    ? ACCEPT_ERROR_KINDS[0]
    : ACCEPT_ERROR_KINDS[1];
}

// ---------------------------------------------------------------------------
// One connection: PROXY header, banner, echo, close
// ---------------------------------------------------------------------------

/** What the connection handler needs from its server, computed once. */
interface ConnectionContext {
  readonly config: Config;
  /** The banner lines that do not depend on the connection. */
  readonly banner: Uint8Array;
  /** `ECHO_PREFIX` and a space, encoded; `undefined` for byte-exact echo. */
  readonly linePrefix: Uint8Array | undefined;
  readonly metrics: MetricsExporter;
  /** Open and closed records are on (`LOG_LEVEL` debug or info). */
  readonly logConnections: boolean;
  /** Data records are on (and not filtered out by the level). */
  readonly logData: boolean;
  /** The large buffers connections borrow for bursts. */
  readonly burstBuffers: BufferPool;
  /** The buffers TLS connections borrow to read bursts of encrypted bytes. */
  readonly tlsReadBuffers: BufferPool;
  /** The banners being written on connect, which the accept loops wait for. */
  readonly bannerWrites: BannerWrites;
  /** Echoed bytes after which a connection is closed (`CLOSE_AFTER_BYTES`), else Infinity. */
  readonly echoLimit: number;
  /** How long a PROXY header may take. */
  readonly proxyHeaderTimeoutMs: number;
  /** The certificate of TLS ports, when there are any. */
  readonly tls: TlsCredentials | undefined;
  /** How long a TLS handshake may take. */
  readonly tlsHandshakeTimeoutMs: number;
  /** No line mode, delay, echo limit or idle timeout: chunks go straight back ({@linkcode echoChunk}). */
  readonly plainEcho: boolean;
  /** Opens a pending connection; throws {@linkcode Refusal} at the connection limit. */
  readonly promote: (connection: EchoConnection) => void;
  /** Tells the server a connection is closed and counted. */
  readonly closed: (connection: EchoConnection) => void;
}

/** What the echo path uses of a connection: a `Deno.TcpConn`, or a `TlsStream` over one. */
type EchoStream = Pick<Deno.TcpConn, "read" | "write" | "close" | "remoteAddr" | "setNoDelay">;

/** One accepted echo connection and what is known about it. */
class EchoConnection {
  readonly id = crypto.randomUUID();
  readonly startedAt = performance.now();
  /** When a byte last moved either way (kept only with `IDLE_TIMEOUT`). */
  lastActiveAt = this.startedAt;
  /** A write is waiting for the client to take the bytes: the connection is not idle. */
  writing = false;
  bytesIn = 0;
  bytesOut = 0;
  /** Echoed bytes (not the banner), for `CLOSE_AFTER_BYTES`. */
  bytesEchoed = 0;
  /** Set when the server closes the socket from outside (idle, shutdown). */
  closedBy: CloseReason | undefined;
  /** The client's address as logged and shown (the original one, behind a PROXY header). */
  client = "";
  /** The source identity a PROXY header carried (Istio's ztunnel: a SPIFFE ID), for the banner. */
  sourceIdentity: string | undefined;
  /** The banner is still to be sent (`BANNER_MODE` connect or first-data). */
  bannerDue = false;
  /** Line mode's state, when `ECHO_PREFIX` is set. */
  lineMode: LineAnswerer | undefined;
  /** The `IDLE_TIMEOUT` timer, when set. */
  idleTimer: ReturnType<typeof setTimeout> | undefined;
  /** What the TLS handshake carried, on a TLS port. */
  tls: TlsFacts | undefined;
  /** The socket; on a TLS port, the TLS stream once the handshake is done. */
  conn: EchoStream;
  /** Where the echo loop reads into. */
  readonly reads: ReadBuffer;
  /** What a pending connection is waiting for, as the metrics count it. */
  stage: PendingStage | undefined;

  constructor(
    readonly tcp: Deno.TcpConn,
    readonly port: number,
    /** The counters of the port it came in on. */
    readonly stats: PortStats,
    /** It came in on a TLS port. */
    readonly tlsPort: boolean,
    burstBuffers: BufferPool,
    /** Its PROXY header or TLS handshake is still ahead: admission counts it as pending. */
    public pending: boolean,
    /** The memory it is charged from accept to end ({@linkcode CONNECTION_COST_BYTES}). */
    readonly costBytes: number,
  ) {
    this.conn = tcp;
    this.reads = new ReadBuffer(burstBuffers);
  }

  /** Counts `count` bytes received, for the connection and its port. */
  received(count: number): void {
    this.bytesIn += count;
    this.stats.bytesReceived += count;
  }

  /** Counts `n` bytes the socket took, for the connection and its port; returns `n`. */
  wrote(n: number): number {
    this.bytesOut += n;
    this.stats.bytesSent += n;
    if (this.idleTimer !== undefined) this.lastActiveAt = performance.now();
    return n;
  }

  /**
   * Writes all of `bytes`; meanwhile the connection is not idle. The socket's
   * writes are awaited here rather than in helpers: every async frame that
   * waits for a write is garbage the young generation may promote (issue 22).
   */
  async send(bytes: Uint8Array): Promise<void> {
    this.writing = true;
    try {
      let written = 0;
      while (written < bytes.length) {
        const rest = written === 0 ? bytes : bytes.subarray(written);
        written += this.wrote(await this.conn.write(rest));
      }
    } finally {
      this.writing = false;
    }
  }

  /** Moves the connection to `stage` (`undefined`: not pending), counted per port. */
  enterStage(stage: PendingStage | undefined): void {
    if (this.stage !== undefined) this.stats.pending[this.stage]--;
    if (stage !== undefined) this.stats.pending[stage]++;
    this.stage = stage;
  }

  /**
   * Writes `line` to the client, unless an echo is being written (it would
   * cut into it), for {@linkcode DRAIN_NOTICE_WRITE_MS} at most. Never throws.
   */
  async tell(line: Uint8Array): Promise<void> {
    if (this.writing || this.closedBy !== undefined) return;
    const written = this.send(line).catch(() => {});
    await Promise.race([written, pause(DRAIN_NOTICE_WRITE_MS)]);
  }

  /** Closes the socket from outside; the pending read or write then fails. */
  closeFor(reason: CloseReason): void {
    if (this.closedBy !== undefined) return;
    this.closedBy = reason;
    closeQuietly(this.conn);
  }
}

/** A connection refused after accept: its PROXY header (or lack of one), or the connection limit. */
class Refusal extends Error {
  constructor(readonly reason: RejectReason, readonly detail: string) {
    super(detail);
  }
}

/** Signals that `CLOSE_AFTER_BYTES` was reached. */
class FaultClose extends Error {}

/** Signals that a TLS ClientHello came to a plain port. */
class ClientHelloOnPlainPort extends Error {}

/** Where a connection comes from, once any PROXY header is read. */
interface ConnectionOrigin {
  /** The original client (from the header), else the socket's peer. */
  readonly client: Deno.NetAddr;
  /** The proxy's address, when a header named another client. */
  readonly proxy: Deno.NetAddr | undefined;
  /** Bytes that came after the header: the first data to echo. */
  readonly firstData: Uint8Array;
  /** A read still pending when an optional header's wait ran out. */
  readonly pendingRead: Promise<Uint8Array | null> | undefined;
  /** What the PROXY header's TLVs said (a mesh's source identity, the service), if any. */
  readonly tlvs?: ProxyTlvFacts;
}

/** What a race against a {@linkcode deadlineIn} resolves with when the deadline wins. */
const TIMED_OUT = Symbol("timed out");

/** A promise of {@linkcode TIMED_OUT} in `ms`, to race reads against; `cancel` stops its timer. */
function deadlineIn(ms: number): { reached: Promise<typeof TIMED_OUT>; cancel(): void } {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const reached = new Promise<typeof TIMED_OUT>((resolve) => {
    timer = setTimeout(() => resolve(TIMED_OUT), ms);
  });
  return { reached, cancel: () => clearTimeout(timer) };
}

/**
 * Where the connection comes from: the socket's peer, or the client a PROXY
 * header names when the configuration asks for one. Throws
 * {@linkcode Refusal} when the connection must be refused.
 */
async function readOrigin(
  connection: EchoConnection,
  context: ConnectionContext,
): Promise<ConnectionOrigin> {
  const peer = connection.conn.remoteAddr;
  const { proxyProtocol: mode, proxyTrusted } = context.config;
  if (mode === "off") {
    return { client: peer, proxy: undefined, firstData: NO_BYTES, pendingRead: undefined };
  }
  const trusted = proxyTrusted === undefined || isTrusted(peer.hostname, proxyTrusted);
  if (!trusted && mode !== "optional") {
    throw new Refusal("proxy_untrusted", "peer not in PROXY_PROTOCOL_TRUSTED");
  }
  try {
    return await readProxyHeader(connection, context, mode === "optional" ? "any" : mode, trusted);
  } catch (error) {
    if (error instanceof Refusal) throw error;
    const detail = `connection failed before a PROXY header: ${(error as Error).message}`;
    throw new Refusal("proxy_missing", detail);
  }
}

/** Reads bytes until they make a PROXY header, show there is none, or the wait runs out. */
async function readProxyHeader(
  connection: EchoConnection,
  context: ConnectionContext,
  accept: "v1" | "v2" | "any",
  trusted: boolean,
): Promise<ConnectionOrigin> {
  const peer = connection.conn.remoteAddr;
  const optional = context.config.proxyProtocol === "optional";
  const waitMs = context.proxyHeaderTimeoutMs;
  const buffer = new Uint8Array(V2_MAX_BYTES);
  let filled = 0;
  const deadline = deadlineIn(waitMs);
  const asData = (pendingRead?: Promise<Uint8Array | null>): ConnectionOrigin => ({
    client: peer,
    proxy: undefined,
    firstData: buffer.slice(0, filled),
    pendingRead,
  });
  try {
    while (true) {
      const result = parseProxyHeader(buffer.subarray(0, filled), accept);
      if (result.status === "ok") {
        if (!trusted) {
          throw new Refusal("proxy_untrusted", "PROXY header from an untrusted peer");
        }
        const { source, tlvs } = result.header;
        return {
          client: source ? { transport: "tcp", ...source } : peer,
          proxy: source ? peer : undefined,
          firstData: buffer.slice(result.length, filled),
          pendingRead: undefined,
          tlvs,
        };
      }
      if (result.status === "invalid") throw new Refusal("proxy_invalid", result.reason);
      if (result.status === "absent") {
        if (optional) return asData();
        throw new Refusal("proxy_missing", "no PROXY header");
      }
      const read = connection.conn.read(buffer.subarray(filled));
      const outcome = await Promise.race([read, deadline.reached]);
      if (outcome === TIMED_OUT) {
        // Optional: no complete header in time, so what came is data and the read goes on.
        const at = filled;
        if (optional) return asData(read.then((n) => n === null ? null : buffer.slice(at, at + n)));
        read.catch(() => {}); // It fails when the socket is closed just below.
        connection.closeFor("error");
        throw new Refusal("proxy_timeout", `no complete PROXY header in ${waitMs} ms`);
      }
      if (outcome === null) {
        throw new Refusal("proxy_missing", "connection ended before a PROXY header");
      }
      filled += outcome;
    }
  } finally {
    deadline.cancel();
  }
}

/**
 * Serves one connection: PROXY header (if configured), banner, then a
 * read/echo loop on one buffer, so at most one buffer of data is in flight
 * (a client that never reads stops the server from reading). Never throws:
 * every ending is logged with a reason.
 */
function serveConnection(connection: EchoConnection, context: ConnectionContext): void {
  // Chained, and no step returns the next one's promise: an idle connection then
  // holds its echo loop's suspended read and nothing else of its own (issue 22).
  admit(connection, context)
    .then((origin) => origin !== undefined && echoFirstBytes(connection, context, origin))
    .then((open) => {
      if (open) echoLoop(connection, context);
    });
}

/** Why a connection ended, from what its echo loop threw. */
function closeReason(connection: EchoConnection, error: unknown): CloseReason {
  if (error instanceof FaultClose) return "fault";
  if (error instanceof ClientHelloOnPlainPort) return "tls_on_plain_port";
  if (connection.closedBy !== undefined) return connection.closedBy;
  if (PEER_GONE_ERRORS.some((type) => error instanceof type)) return "reset";
  return "error";
}

/** Closes the socket, then counts and logs the ending. */
function endConnection(
  connection: EchoConnection,
  context: ConnectionContext,
  reason: CloseReason,
  error: unknown,
): void {
  clearTimeout(connection.idleTimer);
  connection.closeFor(reason);
  connection.reads.release();
  connection.stats.active--;
  logClosed(connection, context, reason, reason === "error" ? error : undefined);
  context.closed(connection);
}

/**
 * Reads the connection's origin and opens it (counted, logged, timers set);
 * or refuses it (counted, logged, closed) and returns `undefined`.
 */
async function admit(
  connection: EchoConnection,
  context: ConnectionContext,
): Promise<ConnectionOrigin | undefined> {
  const { conn, stats } = connection;
  let origin: ConnectionOrigin;
  try {
    // A socket already gone fails here; the first read says how it ended.
    conn.setNoDelay(true);
  } catch {
    // Nagle only matters to a socket that is still there.
  }
  try {
    if (context.config.proxyProtocol !== "off") connection.enterStage("proxy_header");
    origin = await readOrigin(connection, context);
    if (connection.tlsPort) {
      connection.enterStage("tls_handshake");
      origin = await startTls(connection, context, origin);
    }
    if (connection.pending) context.promote(connection);
  } catch (error) {
    const refusal = error as Refusal | TlsRefusal;
    stats.rejected[refusal.reason]++;
    log.info("Connection refused: {detail}", {
      id: connection.id,
      peer: formatAddress(conn.remoteAddr),
      port: connection.port,
      reason: refusal.reason,
      detail: refusal.detail,
    });
    connection.closeFor("error");
    context.closed(connection);
    return undefined;
  }
  stats.accepted++;
  stats.active++;
  connection.client = formatAddress(origin.client);
  connection.sourceIdentity = bannerSafe(origin.tlvs?.sourceIdentity);
  if (context.logConnections) {
    const opened: Record<string, unknown> = {
      id: connection.id,
      client: connection.client,
      port: connection.port,
      family: ipFamily(origin.client.hostname),
    };
    if (origin.proxy) opened.peer = formatAddress(origin.proxy);
    if (origin.tlvs) Object.assign(opened, tlvRecordFields(origin.tlvs));
    if (connection.tls) Object.assign(opened, tlsRecordFields(connection.tls));
    logConnectionRecord("TCP connection open.", opened);
  }
  // Everything per connection lives in `connection`; the helpers are shared,
  // so an idle connection holds no closures of its own.
  const { config } = context;
  connection.bannerDue = config.bannerMode !== "off";
  if (context.linePrefix) connection.lineMode = new LineAnswerer(context.linePrefix);
  if (config.idleTimeoutMs > 0) {
    connection.idleTimer = setTimeout(checkIdle, config.idleTimeoutMs, connection, config);
  }
  return origin;
}

/**
 * Runs the TLS handshake on a TLS port's connection, fed first with what came
 * after the PROXY header; from then on the connection reads and writes the
 * TLS stream. Throws {@linkcode TlsRefusal}.
 */
async function startTls(
  connection: EchoConnection,
  context: ConnectionContext,
  origin: ConnectionOrigin,
): Promise<ConnectionOrigin> {
  const more = await origin.pendingRead?.catch(() => null);
  const head = more ? concatBytes([origin.firstData, more]) : origin.firstData;
  const stream = await acceptTls(
    connection.tcp,
    head,
    context.tls!,
    context.tlsHandshakeTimeoutMs,
    context.tlsReadBuffers,
  );
  connection.conn = stream;
  connection.tls = stream.facts;
  return { ...origin, firstData: NO_BYTES, pendingRead: undefined };
}

/**
 * The banner (when due on connect) and the bytes that came with the
 * connection's origin; true while the connection stays open for
 * {@linkcode echoLoop}, else its ending is counted and logged. Never throws.
 */
async function echoFirstBytes(
  connection: EchoConnection,
  context: ConnectionContext,
  origin: ConnectionOrigin,
): Promise<boolean> {
  try {
    // A ClientHello right after a PROXY header is refused before the banner. (A read the
    // header's wait left pending comes after bytes that cannot begin a ClientHello.)
    const sniffed = origin.firstData.length > 0
      ? await sniffFirstBytes(connection, origin.firstData)
      : undefined;
    const start = { chunk: origin.firstData, next: sniffed?.next ?? origin.pendingRead };
    if (sniffed) start.chunk = sniffed.chunk;
    if (connection.bannerDue && context.config.bannerMode === "connect") {
      context.bannerWrites.begin();
      try {
        await sendBanner(connection, context);
      } finally {
        context.bannerWrites.end();
      }
    }
    if (!await onFirstBytes(connection, context, start)) return true;
    await endOfStream(connection, context);
  } catch (error) {
    endConnection(connection, context, closeReason(connection, error), error);
    return false;
  }
  endConnection(connection, context, "eof", undefined);
  return false;
}

/**
 * Everything received, echoed, until the client ends; then the ending is
 * counted and logged. Never throws. An idle connection waits here, so this
 * frame holds no more than the loop needs.
 */
async function echoLoop(connection: EchoConnection, context: ConnectionContext): Promise<void> {
  const { conn, reads } = connection;
  try {
    let ended = false;
    while (!ended) {
      const buffer = reads.current;
      const n = await conn.read(buffer);
      if (n === null) break;
      // The chunk is no local of this loop: a local would keep the last one alive while idle.
      // A plain port's first chunk is looked at only when it may begin a ClientHello.
      if (connection.bytesIn === 0 && !connection.tlsPort && buffer[0] === TLS_HANDSHAKE_RECORD) {
        ended = await onFirstBytes(
          connection,
          context,
          await sniffFirstBytes(connection, bytesRead(buffer, n)),
        );
      } else if (context.plainEcho && !connection.bannerDue) {
        await echoChunk(connection, context, bytesRead(buffer, n));
      } else await onChunk(connection, context, bytesRead(buffer, n));
      reads.settle(n);
    }
    await endOfStream(connection, context);
  } catch (error) {
    return endConnection(connection, context, closeReason(connection, error), error);
  }
  endConnection(connection, context, "eof", undefined);
}

/** The `n` bytes a read put at the start of `buffer`. */
function bytesRead(buffer: Uint8Array, n: number): Uint8Array {
  return n === buffer.length ? buffer : buffer.subarray(0, n);
}

/** After the client's end: tells a reset from a FIN (throws on a reset), answers a last partial line. */
async function endOfStream(connection: EchoConnection, context: ConnectionContext): Promise<void> {
  // Deno reports a reset during read as end of stream. A zero-length
  // write sends nothing, succeeds after a FIN and fails after a RST.
  await connection.conn.write(NO_BYTES);
  if (connection.lineMode) await answer(connection, context, connection.lineMode.finish());
}

/**
 * The common case of {@linkcode onChunk}, kept short because it runs for
 * every read: count, echo, and log the data records while the write is on
 * its way (they read the buffer; nothing writes it before the next read).
 */
async function echoChunk(
  connection: EchoConnection,
  context: ConnectionContext,
  chunk: Uint8Array,
): Promise<void> {
  connection.received(chunk.length);
  const writing = connection.conn.write(chunk);
  if (context.logData) logReceived(connection.id, chunk, context.config.logDataBytes);
  const written = connection.wrote(await writing);
  if (written < chunk.length) await connection.send(chunk.subarray(written));
}

/** A connection's first bytes, and a read still pending after them, if any. */
interface FirstBytes {
  readonly chunk: Uint8Array;
  /** What the read in progress brings: the next bytes, or `null` at the end. */
  readonly next: Promise<Uint8Array | null> | undefined;
}

/** Echoes the first bytes and what the pending read brings; true when that was the end. */
async function onFirstBytes(
  connection: EchoConnection,
  context: ConnectionContext,
  first: FirstBytes,
): Promise<boolean> {
  if (first.chunk.length > 0) await onChunk(connection, context, first.chunk);
  if (first.next === undefined) return false;
  const more = await first.next;
  if (more === null) return true;
  await onChunk(connection, context, more);
  return false;
}

/**
 * Looks at a plain port's first bytes: a TLS ClientHello is refused (throws
 * {@linkcode ClientHelloOnPlainPort}), whatever the segments it came in.
 * Bytes that could be the start of one are completed up to the 6 bytes that
 * tell, for {@linkcode CLIENT_HELLO_WAIT_MS} at most; a read still pending
 * then is handed on, so no byte is lost. Other bytes pass as they are.
 */
async function sniffFirstBytes(connection: EchoConnection, chunk: Uint8Array): Promise<FirstBytes> {
  if (looksLikeClientHello(chunk)) await refuseClientHello(connection, chunk);
  if (!mayStartClientHello(chunk)) return { chunk, next: undefined };
  const bytes = new Uint8Array(CLIENT_HELLO_SNIFF_BYTES);
  bytes.set(chunk);
  let filled = chunk.length;
  const deadline = deadlineIn(CLIENT_HELLO_WAIT_MS);
  try {
    while (filled < bytes.length) {
      const at = filled;
      const read = connection.conn.read(bytes.subarray(at));
      const outcome = await Promise.race([read, deadline.reached]);
      if (outcome === TIMED_OUT) {
        const next = read.then((n) => n === null ? null : bytes.slice(at, at + n));
        return { chunk: bytes.slice(0, at), next };
      }
      if (outcome === null) return { chunk: bytes.slice(0, at), next: Promise.resolve(null) };
      filled += outcome;
    }
  } finally {
    deadline.cancel();
  }
  if (looksLikeClientHello(bytes)) await refuseClientHello(connection, bytes);
  return { chunk: bytes, next: undefined };
}

/**
 * Refuses a TLS ClientHello on a plain port: a client that meant a TLS port
 * gets a clear reason in the log, with the server name it asked for (read
 * from the rest of the record, waiting at most {@linkcode CLIENT_HELLO_WAIT_MS}),
 * instead of an echo its TLS library cannot read. Throws
 * {@linkcode ClientHelloOnPlainPort}.
 */
async function refuseClientHello(
  connection: EchoConnection,
  firstBytes: Uint8Array,
): Promise<never> {
  const hello = await readUpTo(connection, firstBytes, clientHelloRecordLength(firstBytes)!);
  connection.received(hello.length);
  const facts: Record<string, unknown> = {
    id: connection.id,
    client: connection.client,
    port: connection.port,
  };
  const serverName = clientHelloServerName(hello);
  if (serverName !== undefined) facts.server_name = serverName;
  log.info(
    "A TLS ClientHello came to plain port {port}: connect to a TLS_PORT, or without TLS.",
    facts,
  );
  throw new ClientHelloOnPlainPort();
}

/** Reads on after `start` until `length` bytes or {@linkcode CLIENT_HELLO_WAIT_MS}; what came. */
async function readUpTo(
  connection: EchoConnection,
  start: Uint8Array,
  length: number,
): Promise<Uint8Array> {
  const bytes = new Uint8Array(length);
  let filled = Math.min(start.length, length);
  bytes.set(start.subarray(0, filled));
  const deadline = deadlineIn(CLIENT_HELLO_WAIT_MS);
  try {
    while (filled < length) {
      const read = connection.conn.read(bytes.subarray(filled));
      const outcome = await Promise.race([read, deadline.reached]);
      if (outcome === TIMED_OUT) {
        read.catch(() => {}); // It fails when the connection is closed, just after.
        break;
      }
      if (outcome === null) break;
      filled += outcome;
    }
  } catch {
    // What came before the failure is all there is.
  } finally {
    deadline.cancel();
  }
  return bytes.subarray(0, filled);
}

/** Handles bytes received: count, log, banner if due, delay fault, answer. */
async function onChunk(
  connection: EchoConnection,
  context: ConnectionContext,
  chunk: Uint8Array,
): Promise<void> {
  const { config } = context;
  connection.received(chunk.length);
  if (connection.idleTimer !== undefined) connection.lastActiveAt = performance.now();
  if (context.logData) logReceived(connection.id, chunk, config.logDataBytes);
  if (connection.bannerDue) await sendBanner(connection, context);
  if (config.echoDelayMs > 0) await pause(config.echoDelayMs);
  const lineMode = connection.lineMode;
  await answer(connection, context, lineMode ? lineMode.push(chunk) : chunk);
}

/**
 * Sends the banner: identity lines, then the client's address when on, the
 * source identity a PROXY header carried, the connection's id when on, and
 * the TLS facts. Not an async function: the caller awaits the write itself.
 */
function sendBanner(
  connection: EchoConnection,
  context: ConnectionContext,
): Promise<void> | undefined {
  connection.bannerDue = false;
  let banner = context.banner;
  const { sourceIdentity } = connection;
  const clientAddress = context.config.showClientAddress ? connection.client : undefined;
  const connectionId = context.config.showConnectionId ? connection.id : undefined;
  if (clientAddress || sourceIdentity || connectionId || connection.tls) {
    const tls = connection.tls ? renderTlsBanner(connection.tls) : "";
    const perConnection = renderBannerText({ clientAddress, sourceIdentity, connectionId }) + tls;
    banner = concatBytes([banner, encoder.encode(perConnection)]);
  }
  return banner.length > 0 ? connection.send(banner) : undefined;
}

/** A peer's text for a banner line: printable ASCII only (a SPIFFE ID is), else not shown. */
function bannerSafe(text: string | undefined): string | undefined {
  return text !== undefined && /^[\x21-\x7e]{1,2048}$/.test(text) ? text : undefined;
}

/** What a PROXY header's TLVs said, as open record fields (escaped by the log, as all are). */
function tlvRecordFields(tlvs: ProxyTlvFacts): Record<string, string> {
  const fields: Record<string, string> = {};
  if (tlvs.sourceIdentity !== undefined) fields.source_identity = tlvs.sourceIdentity;
  if (tlvs.service !== undefined) fields.service = tlvs.service;
  if (tlvs.authority !== undefined) fields.authority = tlvs.authority;
  if (tlvs.uniqueId !== undefined) fields.proxy_unique_id = tlvs.uniqueId;
  return fields;
}

/** Writes an answer, stopping at `CLOSE_AFTER_BYTES` (then throws {@linkcode FaultClose}). */
async function answer(
  connection: EchoConnection,
  context: ConnectionContext,
  bytes: Uint8Array,
): Promise<void> {
  if (bytes.length === 0) return;
  const allowed = Math.min(bytes.length, context.echoLimit - connection.bytesEchoed);
  await connection.send(allowed < bytes.length ? bytes.subarray(0, allowed) : bytes);
  connection.bytesEchoed += allowed;
  if (connection.bytesEchoed >= context.echoLimit) throw new FaultClose();
}

/**
 * Closes a connection once no byte moved either way for `IDLE_TIMEOUT`, else
 * re-arms for the rest. A pending write counts as moving: the kernel wakes a
 * blocked writer only after a third of its send buffer drained, which takes
 * seconds for a slow reader that is reading all the while.
 */
function checkIdle(connection: EchoConnection, config: Config): void {
  const now = performance.now();
  if (connection.writing) connection.lastActiveAt = now;
  const idleMs = now - connection.lastActiveAt;
  if (idleMs >= config.idleTimeoutMs) connection.closeFor("idle");
  else {
    connection.idleTimer = setTimeout(
      checkIdle,
      config.idleTimeoutMs - idleMs,
      connection,
      config,
    );
  }
}

/** Counts how a connection ended, and logs it when connection records are on. */
function logClosed(
  connection: EchoConnection,
  context: ConnectionContext,
  reason: CloseReason,
  failure: unknown,
): void {
  const durationMs = performance.now() - connection.startedAt;
  connection.stats.closed[reason]++;
  context.metrics.observeDuration(connection.port, durationMs / 1_000);
  if (!context.logConnections) return;
  const facts: Record<string, unknown> = {
    id: connection.id,
    reason,
    bytes_in: connection.bytesIn,
    bytes_out: connection.bytesOut,
    duration_ms: Math.round(durationMs),
    port: connection.port,
  };
  if (failure !== undefined) facts.error = failure;
  logConnectionRecord("TCP connection closed.", facts);
}

// ---------------------------------------------------------------------------
// The server: listeners, accept loops, drain
// ---------------------------------------------------------------------------

/** A pool of buffers of `bufferBytes` that takes `poolBytes` at most. */
function poolOf(bufferBytes: number, poolBytes: number): BufferPool {
  return new BufferPool(bufferBytes, Math.max(1, Math.floor(poolBytes / bufferBytes)));
}

/**
 * The memory limit to admit within, in bytes: `MEMORY_LIMIT` as a size, the
 * container's (`auto`), or none (`off`, or the limit cannot be read: then
 * `onUnreadable` hears why).
 */
export function resolveMemoryLimit(
  config: Config,
  onUnreadable: (error: unknown) => void = warnUnreadableLimit,
): number | undefined {
  if (typeof config.memoryLimit === "number") return config.memoryLimit;
  if (config.memoryLimit === "off") return undefined;
  try {
    return containerMemoryLimit();
  } catch (error) {
    onUnreadable(error);
    return undefined;
  }
}

function warnUnreadableLimit(error: unknown): void {
  log.warn("Cannot read the container's memory limit; admitting without a memory budget.", {
    error,
  });
}

/** Logs, at start, what the memory limit leaves for connections. */
function logMemoryPlan(plan: MemoryPlan): void {
  if (plan.limitBytes === undefined) {
    log.info("No memory limit: connections are bounded by MAX_CONNECTIONS only.");
    return;
  }
  log.info("Memory limit {limit}: room for {plain} plain or {tls} TLS connections.", {
    limit: formatMiB(plan.limitBytes),
    plain: connectionsAdmitted(plan, "plain"),
    tls: connectionsAdmitted(plan, "tls"),
    connection_budget: formatMiB(plan.connectionBytes),
  });
}

function formatMiB(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(bytes % 2 ** 20 === 0 ? 0 : 1)}MiB`;
}

/** Which families a listener on `hostname` takes: `::` both (Linux's dual-stack default). */
function listenFamilies(hostname: string): string {
  return hostname === "::"
    ? "IPv4,IPv6"
    : ipFamily(hostname === "localhost" ? "127.0.0.1" : hostname);
}

/** The listen address: `HOST`, else dual-stack `::` where the host has IPv6, else `0.0.0.0`. */
function chooseHostname(config: Config): string {
  if (config.host !== undefined) return config.host;
  try {
    Deno.listen({ hostname: "::", port: 0 }).close();
    return "::";
  } catch {
    return "0.0.0.0";
  }
}

/**
 * Opens one listener per echo port, then the admin listener, or none: on
 * failure the ones opened are closed.
 */
function listenAll(
  hostname: string,
  ports: { readonly tcp: readonly number[]; readonly tls: readonly number[] },
  adminPort: number | undefined,
): { echo: Deno.TcpListener[]; admin: Deno.TcpListener | undefined } {
  const opened: Deno.TcpListener[] = [];
  const open = (port: number, what: string, variable: string) => {
    try {
      opened.push(Deno.listen({ hostname, port }));
      return opened[opened.length - 1];
    } catch (error) {
      for (const listener of opened) listener.close();
      throw new ListenError(`${what} ${formatHostPort(hostname, port)}`, variable, error);
    }
  };
  const echo = [
    ...ports.tcp.map((port) => open(port, "TCP port", "TCP_PORT")),
    ...ports.tls.map((port) => open(port, "TLS port", "TLS_PORT")),
  ];
  const admin = adminPort === undefined ? undefined : open(adminPort, "admin port", "ADMIN_PORT");
  return { echo, admin };
}

/** Waits `ms`, or less when `signal` aborts. */
function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
  });
}

/** What one accept loop does with its listener's connections. */
interface AcceptLoop {
  readonly listener: Deno.TcpListener;
  readonly port: number;
  /** Aborted when this loop is to stop. */
  readonly signal: AbortSignal;
  /** Before each accept: a promise to wait for first, or `undefined` to accept at once. */
  readonly beforeAccept?: () => Promise<void> | undefined;
  /** Takes each accepted connection. */
  onConnection(conn: Deno.TcpConn): void;
  /** Frees a descriptor for an immediate retry after a resource error; false when it cannot. */
  freeDescriptor(): boolean;
}

/**
 * Starts listening and serving (and the admin server, unless it is off).
 * TLS ports need `tls`, the certificate ({@linkcode TlsCredentials.load}),
 * which the caller closes after the shutdown. Throws {@linkcode ListenError} if an address cannot be bound (nothing is
 * left open then); everything after that is logged, never thrown.
 */
export function startServer(
  config: Config,
  testHooks: TestHooks = {},
  resources: ServerResources = {},
): EchoServer {
  return new EchoServer(config, testHooks, resources);
}

/**
 * A running echo server: its listeners, their connections, the admin server
 * and the drain. Made by {@linkcode startServer}.
 */
export class EchoServer {
  /** The addresses it listens on (with the real port when `port` was 0). */
  readonly addresses: readonly Deno.NetAddr[];
  /** The admin HTTP server's address, when it runs. */
  readonly adminAddress: Deno.NetAddr | undefined;
  /** The counters, as the metrics endpoint reports them. */
  readonly stats: ServerStats = new ServerStats();
  readonly #config: Config;
  readonly #context: ConnectionContext;
  readonly #listeners: readonly Deno.TcpListener[];
  /** The listeners of {@linkcode TlsSettings.ports}. */
  readonly #tlsListeners: ReadonlySet<Deno.TcpListener>;
  readonly #adminListener: Deno.TcpListener | undefined;
  readonly #connections = new Set<EchoConnection>();
  /** Resolved when the last connection closes, once the drain waits for it. */
  #allClosed: PromiseWithResolvers<void> | undefined;
  #admin: AdminConnections | undefined;
  readonly #stopping = new AbortController();
  readonly #adminStopping = new AbortController();
  /** Echo listeners whose accepts fail for want of resources. */
  readonly #backingOff = new Set<Deno.TcpListener>();
  readonly #accepting: Promise<unknown>;
  readonly #adminAccepting: Promise<unknown>;
  /** The UDP ports, once bound (they bind asynchronously). */
  readonly #udp: Promise<UdpEchoPort[]>;
  /**
   * Resolves when every port listens, UDP ones included; rejects with a
   * {@linkcode ListenError} when a UDP port cannot be bound (the TCP ones
   * are bound by then, and {@linkcode EchoServer.shutdown} closes them).
   */
  readonly listening: Promise<void>;
  #draining = false;
  #shutdown: Promise<void> | undefined;
  readonly #admission: Admission;
  /** Refusals at the limits not yet reported, by reason; reported at most once a second. */
  readonly #unreported: Record<AdmissionRefusal, number> = { max_connections: 0, memory: 0 };
  #refusalTimer: ReturnType<typeof setTimeout> | undefined;
  /** The ports with a pending stage are waiting for the pending share to have room. */
  #pendingWaitReported = false;

  /** Listens as `config` says (or `testHooks`); throws {@linkcode ListenError}. */
  constructor(config: Config, testHooks: TestHooks, resources: ServerResources) {
    const { tls } = resources;
    const hostname = chooseHostname(config);
    const plainPorts = testHooks.ports ?? config.ports;
    const tlsPorts = testHooks.tlsPorts ?? config.tls.ports;
    if (tlsPorts.length > 0 && tls === undefined) {
      throw new Error("TLS ports need the certificate: pass TlsCredentials.load(...)'s result");
    }
    const listeners = listenAll(
      hostname,
      { tcp: plainPorts, tls: tlsPorts },
      testHooks.adminPort ?? config.adminPort,
    );
    this.#config = config;
    this.#listeners = listeners.echo;
    this.#tlsListeners = new Set(listeners.echo.slice(plainPorts.length));
    this.#adminListener = listeners.admin;
    this.addresses = this.#listeners.map((listener) => listener.addr);
    this.adminAddress = this.#adminListener?.addr;
    const metrics = createMetricsExporter(this.stats);
    const logConnections = log.isEnabledFor("info");
    const logData = config.logDataBytes > 0 && logConnections;
    const memory = planMemory(
      testHooks.memoryLimitBytes ??
        ("memoryLimitBytes" in resources ? resources.memoryLimitBytes : resolveMemoryLimit(config)),
      testHooks.baseMemoryBytes ?? Deno.memoryUsage().rss,
    );
    this.#admission = new Admission(config, new MemoryBudget(memory));
    const burstBytes = logData ? BURST_BUFFER_BYTES_LOGGING : BURST_BUFFER_BYTES;
    this.#context = {
      config,
      banner: renderBanner(config.banner),
      linePrefix: config.echoPrefix === undefined
        ? undefined
        : encoder.encode(`${config.echoPrefix} `),
      metrics,
      logConnections,
      logData,
      burstBuffers: poolOf(burstBytes, memory.burstPoolBytes),
      tlsReadBuffers: poolOf(TLS_READ_BYTES, memory.tlsReadPoolBytes),
      bannerWrites: new BannerWrites(BANNER_WRITES_MAX, BANNER_WRITES_WAIT_MS),
      echoLimit: config.closeAfterBytes > 0 ? config.closeAfterBytes : Infinity,
      proxyHeaderTimeoutMs: testHooks.proxyHeaderTimeoutMs ?? PROXY_HEADER_TIMEOUT_MS,
      tls,
      tlsHandshakeTimeoutMs: testHooks.tlsHandshakeTimeoutMs ?? TLS_HANDSHAKE_TIMEOUT_MS,
      plainEcho: config.echoPrefix === undefined && config.echoDelayMs === 0 &&
        config.closeAfterBytes === 0 && config.idleTimeoutMs === 0,
      promote: (connection) => {
        if (this.#admission.promote() !== undefined) {
          throw new Refusal("max_connections", `MAX_CONNECTIONS=${config.maxConnections} are open`);
        }
        connection.pending = false;
        connection.enterStage(undefined);
      },
      closed: (connection) => {
        this.#admission.end(connection.costBytes, connection.pending);
        connection.enterStage(undefined);
        this.#connections.delete(connection);
        if (this.#connections.size === 0) this.#allClosed?.resolve();
      },
    };
    for (const { port } of this.addresses) this.stats.forPort(port);
    for (const listener of [...this.#listeners, ...listeners.admin ? [listeners.admin] : []]) {
      this.stats.acceptErrorsOf(listener.addr.port);
    }
    const { budget } = this.#admission;
    this.stats.memory = () => ({
      limit: memory.limitBytes,
      budget: memory.limitBytes === undefined ? undefined : Math.floor(memory.connectionBytes),
      charged: budget.chargedBytes,
      resident: Deno.memoryUsage().rss,
    });
    for (const listener of this.#tlsListeners) this.stats.tlsPorts.add(listener.addr.port);
    this.#adminAccepting = this.#startAdmin(metrics);
    for (const listener of this.#listeners) {
      const kind = this.#tlsListeners.has(listener) ? "TLS" : "TCP";
      log.info(`Listening on ${kind} port {port}`, {
        port: listener.addr.port,
        address: formatAddress(listener.addr),
        families: listenFamilies(hostname),
      });
    }
    logActiveFaults(config);
    logMemoryPlan(memory);
    this.#udp = openUdpPorts(
      hostname,
      testHooks.udpPorts ?? config.udp.ports,
      config,
      this.stats,
      testHooks.udp,
    );
    this.listening = this.#udp.then(() => {});
    this.#accepting = Promise.all(
      this.#listeners.map((listener) => this.#acceptLoop(this.#echoLoop(listener))),
    );
  }

  /** Connections open right now. */
  get activeConnections(): number {
    return this.#connections.size;
  }

  /** True while every listener accepts and no drain has begun. */
  get ready(): boolean {
    return !this.#draining && this.#backingOff.size === 0;
  }

  /**
   * Drains and stops: readiness fails at once; accepting goes on for
   * `drainDelayMs`, then stops; open connections may go on for `graceMs`,
   * then the rest are closed (reason `shutdown`); then the admin server stops.
   * Resolves when all is closed. Calling it again returns the same promise.
   */
  shutdown(options: ShutdownOptions = {}): Promise<void> {
    this.#shutdown ??= this.#drain(
      options.drainDelayMs ?? this.#config.drainDelayMs,
      options.graceMs ?? this.#config.shutdownGraceMs,
    );
    return this.#shutdown;
  }

  #echoLoop(listener: Deno.TcpListener): AcceptLoop {
    const port = listener.addr.port;
    const stats = this.stats.forPort(port);
    const tls = this.#tlsListeners.has(listener);
    // Connections with a PROXY header or a handshake ahead are pending until it is done.
    const pending = tls || this.#config.proxyProtocol !== "off";
    const costBytes = CONNECTION_COST_BYTES[tls ? "tls" : "plain"];
    return {
      listener,
      port,
      signal: this.#stopping.signal,
      // While many banners are being written, the loop waits for them first (issue 22).
      beforeAccept: () => {
        const banners = this.#context.bannerWrites.room();
        if (!pending) return banners;
        return banners ? banners.then(() => this.#pendingSlot()) : this.#pendingSlot();
      },
      onConnection: (conn) => {
        const refusal = this.#admission.accept(costBytes, pending);
        if (refusal !== undefined) {
          closeQuietly(conn);
          stats.rejected[refusal]++;
          this.#refuse(refusal);
          return;
        }
        const { burstBuffers } = this.#context;
        const connection = new EchoConnection(
          conn,
          port,
          stats,
          tls,
          burstBuffers,
          pending,
          costBytes,
        );
        this.#connections.add(connection);
        serveConnection(connection, this.#context);
      },
      freeDescriptor: () => false,
    };
  }

  /** Resolves once a pending connection may be accepted; says so once per wait that is not short. */
  #pendingSlot(): Promise<void> | undefined {
    if (!this.#admission.pendingFull) {
      this.#pendingWaitReported = false;
      return undefined;
    }
    if (!this.#pendingWaitReported) {
      this.#pendingWaitReported = true;
      log.warn("Pending connections at their limit: TLS and PROXY ports wait before accepting.", {
        limit: this.#config.maxPendingConnections,
      });
    }
    return this.#admission.pendingSlot(this.#stopping.signal);
  }

  /** Logs the admin port and starts its accept loop; resolves when the loop ends. */
  #startAdmin(metrics: MetricsExporter): Promise<void> {
    const listener = this.#adminListener;
    if (listener === undefined) return Promise.resolve();
    const admin = new AdminConnections({ isReady: () => this.ready, metrics });
    this.#admin = admin;
    // The reserve is what keeps probes answered when echo connections take every descriptor.
    log.info("Admin HTTP on port {port}", {
      port: listener.addr.port,
      address: formatAddress(listener.addr),
      reserved_descriptors: admin.reservedDescriptors,
    });
    let accepted = 0;
    return this.#acceptLoop({
      listener,
      port: listener.addr.port,
      signal: this.#adminStopping.signal,
      // A burst of queued connections is accepted before any read completes; a turn of the
      // event loop now and then lets probes' requests be read before later ones evict them.
      beforeAccept: () => ++accepted % ADMIN_ACCEPTS_PER_TURN === 0 ? pause(0) : undefined,
      onConnection: (conn) => admin.serve(conn),
      freeDescriptor: () => admin.freeDescriptor(),
    });
  }

  /**
   * Accepts until the loop's signal aborts. A connection reset while queued
   * is counted and skipped; running out of descriptors or memory backs off
   * (5 ms doubling to 1 s), with one warning per streak and readiness failing
   * for echo ports meanwhile.
   */
  async #acceptLoop(loop: AcceptLoop): Promise<void> {
    const { listener, port, signal } = loop;
    const isEcho = listener !== this.#adminListener;
    let backoffMs = ACCEPT_BACKOFF_MIN_MS;
    let failures = 0;
    while (!signal.aborted) {
      const waiting = loop.beforeAccept?.();
      if (waiting) {
        await waiting;
        if (signal.aborted) break;
      }
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (signal.aborted) break;
        const kind = classifyAcceptError(error);
        this.stats.countAcceptError(port, kind);
        if (kind === "connection") {
          log.debug("A queued connection was gone before it was accepted.", { port, error });
          continue;
        }
        if (loop.freeDescriptor()) continue;
        failures++;
        if (isEcho) this.#backingOff.add(listener);
        if (failures === 1) {
          log.warn("Accept failed, backing off.", { error, retry_ms: backoffMs, port });
        } else log.debug("Accept failed again.", { error, retry_ms: backoffMs, port });
        await pause(backoffMs, signal);
        backoffMs = Math.min(backoffMs * 2, ACCEPT_BACKOFF_MAX_MS);
        continue;
      }
      if (failures > 0) log.info("Accepting again.", { failed_attempts: failures, port });
      failures = 0;
      backoffMs = ACCEPT_BACKOFF_MIN_MS;
      this.#backingOff.delete(listener);
      loop.onConnection(conn);
    }
  }

  /** Counts a refusal at a limit; the first of a burst is reported at once, the rest each second. */
  #refuse(reason: AdmissionRefusal): void {
    this.#unreported[reason]++;
    if (this.#refusalTimer === undefined) this.#reportRefusals();
  }

  /** Reports the refusals not yet reported; with `rearm`, looks again in a second. */
  #reportRefusals(rearm = true): void {
    clearTimeout(this.#refusalTimer);
    this.#refusalTimer = undefined;
    const { max_connections: atLimit, memory: overBudget } = this.#unreported;
    if (atLimit + overBudget === 0) return;
    if (atLimit > 0) {
      log.warn("Connection limit reached, refusing connections.", {
        limit: this.#config.maxConnections,
        refused: atLimit,
      });
    }
    if (overBudget > 0) {
      const { budget } = this.#admission;
      log.warn("Memory budget reached, refusing connections.", {
        budget_bytes: Math.floor(budget.plan.connectionBytes),
        charged_bytes: budget.chargedBytes,
        refused: overBudget,
      });
    }
    this.#unreported.max_connections = 0;
    this.#unreported.memory = 0;
    if (rearm) {
      this.#refusalTimer = setTimeout(() => this.#reportRefusals(), REFUSAL_REPORT_INTERVAL_MS);
    }
  }

  async #drain(drainDelayMs: number, graceMs: number): Promise<void> {
    this.#draining = true;
    if (drainDelayMs > 0) {
      log.info("Draining: readiness fails, still accepting.", {
        drain_delay_ms: drainDelayMs,
        open_connections: this.#connections.size,
      });
      await pause(drainDelayMs);
    }
    this.#stopping.abort();
    for (const listener of this.#listeners) listener.close();
    const udp = await this.#udp.catch(() => []);
    await Promise.all(udp.map((port) => port.close()));
    await this.#accepting;
    this.#reportRefusals(false);
    log.info("Shutting down: stopped accepting.", {
      open_connections: this.#connections.size,
      grace_ms: graceMs,
    });
    await this.#closeConnections(graceMs);
    this.#adminStopping.abort();
    this.#adminListener?.close();
    await this.#adminAccepting;
    await this.#admin?.close();
    const served = Array.from(this.stats.entries()).reduce(
      (total, [, port]) => total + port.accepted,
      0,
    );
    log.info("Shutdown complete.", { connections_served: served });
  }

  /** Lets open connections go on for `graceMs`, then closes the rest (reason `shutdown`). */
  async #closeConnections(graceMs: number): Promise<void> {
    if (this.#connections.size === 0) return;
    this.#allClosed = Promise.withResolvers();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const graceOver = new Promise<void>((resolve) => timer = setTimeout(resolve, graceMs));
    await Promise.race([this.#allClosed.promise, graceOver]);
    clearTimeout(timer);
    if (this.#connections.size > 0) {
      log.info("Shutting down: grace period over, closing connections.", {
        open_connections: this.#connections.size,
      });
      if (this.#config.drainNotice) {
        const notice = encoder.encode(drainNotice(graceMs));
        await Promise.all([...this.#connections].map((connection) => connection.tell(notice)));
      }
      for (const connection of this.#connections) connection.closeFor("shutdown");
      await this.#allClosed.promise;
    }
  }
}

/** How long a connection is given to take the drain notice before it is closed anyway. */
const DRAIN_NOTICE_WRITE_MS = 200;

/**
 * Binds the UDP ports and says so; on a failure, closes those bound and
 * rejects with a {@linkcode ListenError}.
 */
async function openUdpPorts(
  hostname: string,
  ports: readonly number[],
  config: Config,
  stats: ServerStats,
  hooks: UdpTestHooks | undefined,
): Promise<UdpEchoPort[]> {
  const opened: UdpEchoPort[] = [];
  for (const port of ports) {
    try {
      // Port 0 (tests) is known only once bound: its counters are kept by the bound port.
      const udp = UdpEchoPort.open(
        hostname,
        port,
        config,
        (bound) => stats.forUdpPort(bound),
        hooks,
      );
      opened.push(udp);
      log.info("Listening on UDP port {port}", {
        port: udp.port,
        address: udp.address,
        families: listenFamilies(hostname),
      });
    } catch (error) {
      await Promise.all(opened.map((udp) => udp.close()));
      throw new ListenError(`UDP port ${formatHostPort(hostname, port)}`, "UDP_PORT", error);
    }
  }
  return opened;
}

/** Logs, at start, the faults `ECHO_DELAY` and `CLOSE_AFTER_BYTES` inject. */
function logActiveFaults(config: Config): void {
  const faults: Record<string, number> = {};
  if (config.echoDelayMs > 0) faults.echo_delay_ms = config.echoDelayMs;
  if (config.closeAfterBytes > 0) faults.close_after_bytes = config.closeAfterBytes;
  if (Object.keys(faults).length > 0) log.warn("Fault injection active.", faults);
}

// ---------------------------------------------------------------------------
// Program entry: signals and main
// ---------------------------------------------------------------------------

const SHUTDOWN_SIGNALS = ["SIGTERM", "SIGINT"] as const;
const SIGNAL_EXIT_CODES = { SIGINT: 130, SIGTERM: 143 } as const;
/** How long a forced exit waits for the log to be written. */
const FORCED_EXIT_FLUSH_MS = 1_000;

/**
 * Resolves with the first SIGTERM/SIGINT. A later one, from a person
 * pressing again, calls `forceExit` with its exit code, once; a repeat within
 * {@linkcode REPEATED_SIGNAL_WINDOW_MS} of the first is ignored, and so is
 * every signal once the exit is under way (the second press arrives twice too).
 */
function firstShutdownSignal(
  forceExit: (signal: Deno.Signal, code: number) => void,
): Promise<Deno.Signal> {
  return new Promise((resolve) => {
    let firstAt: number | undefined;
    let exiting = false;
    for (const signal of SHUTDOWN_SIGNALS) {
      Deno.addSignalListener(signal, () => {
        const now = performance.now();
        if (firstAt === undefined) {
          firstAt = now;
          resolve(signal);
        } else if (exiting || now - firstAt < REPEATED_SIGNAL_WINDOW_MS) {
          log.debug("Ignored {signal}: a repeat, or the exit is under way.", {
            signal,
            window_ms: REPEATED_SIGNAL_WINDOW_MS,
          });
        } else {
          exiting = true;
          forceExit(signal, SIGNAL_EXIT_CODES[signal]);
        }
      });
    }
  });
}

/**
 * Runs the program: `--help`, configuration, logging, server, and a graceful
 * shutdown on SIGTERM/SIGINT. `args` are `--help`, the ports and prefix of
 * {@linkcode applyArguments}, or `client ...` to run the client (client.ts).
 * Returns the exit code: 0 after a clean shutdown, 2 for bad arguments or
 * configuration, 1 when it cannot listen.
 */
export async function main(args: readonly string[]): Promise<number> {
  if (args[0] === "client") {
    // The client is a program of its own, loaded only when asked for.
    const { runClient } = await import("./client/client.ts");
    return await runClient(args.slice(1));
  }
  if (args.includes("--help") || args.includes("-h")) {
    await Deno.stdout.write(encoder.encode(renderHelp()));
    return 0;
  }
  let config: Config;
  try {
    config = loadConfig(applyArguments(args, readEnvironment()));
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(`tcp-echo: ${error.message}`);
    return 2;
  }
  let unreadableLimit: unknown;
  const memoryLimitBytes = resolveMemoryLimit(config, (error) => unreadableLimit = error);
  const sink = createStdoutSink(
    config.logFormat,
    planMemory(memoryLimitBytes, 0).logQueueBytes / 2,
  );
  const detachLogging = await setupLogging(config.logLevel, sink);
  if (unreadableLimit !== undefined) warnUnreadableLimit(unreadableLimit);
  const closeLog = async () => {
    await detachLogging();
    await sink[Symbol.asyncDispose]();
  };
  let server: EchoServer | undefined;
  const signal = firstShutdownSignal(async (again, code) => {
    log.warn("Received {signal} again, exiting now without draining.", {
      signal: again,
      open_connections: server?.activeConnections ?? 0,
      exit_code: code,
    });
    await Promise.race([sink.flush(), pause(FORCED_EXIT_FLUSH_MS)]);
    Deno.exit(code);
  });
  let tls: TlsCredentials | undefined;
  try {
    if (config.tls.ports.length > 0) {
      tls = await TlsCredentials.load(config.tls, {
        pod: { name: config.banner.pod, ip: config.banner.ip },
      });
    }
    server = startServer(config, {}, { tls, memoryLimitBytes });
    await server.listening;
  } catch (error) {
    await server?.shutdown({ drainDelayMs: 0, graceMs: 0 });
    tls?.close();
    await closeLog();
    if (error instanceof TlsFileError) {
      console.error(`tcp-echo: invalid ${error.message}`);
      return 2;
    }
    if (!(error instanceof ListenError)) throw error;
    console.error(`tcp-echo: ${error.message}`);
    return 1;
  }
  log.info("Received {signal}, shutting down.", { signal: await signal });
  await server.shutdown();
  tls?.close();
  await closeLog();
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
