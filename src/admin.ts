/**
 * The admin side: the server's counters (per port, as plain numbers the echo
 * path adds to), their Prometheus exposition, and the HTTP endpoints
 * `/healthz`, `/readyz` and `/metrics`, served one request per connection on
 * the server's own accept loop. The only module that imports prom-client.
 *
 * @module
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import denoConfig from "../deno.json" with { type: "json" };
import { log } from "./log_output.ts";
import { closeQuietly, concatBytes, indexOfBytes, writeAll } from "./wire.ts";

/** This build's version (deno.json's `version`), as `tcp_echo_build_info` reports it. */
export const VERSION: string = denoConfig.version;

/** Why `accept()` failed, as counted in `tcp_echo_accept_errors_total{kind}`. */
export const ACCEPT_ERROR_KINDS = ["connection", "resources"] as const;
/** An {@linkcode ACCEPT_ERROR_KINDS} value. */
export type AcceptErrorKind = typeof ACCEPT_ERROR_KINDS[number];

const encoder = new TextEncoder();
const latin1 = new TextDecoder("latin1");
const NO_BYTES = new Uint8Array(0);

/** Why a connection ended, as logged in `reason=` and counted in metrics. */
export const CLOSE_REASONS = [
  "eof",
  "reset",
  "idle",
  "shutdown",
  "fault",
  "error",
  "tls_on_plain_port",
] as const;
/** A {@linkcode CLOSE_REASONS} value. */
export type CloseReason = typeof CLOSE_REASONS[number];

/** Why a connection was closed right after accept, without a banner. */
export const REJECT_REASONS = [
  "max_connections",
  "proxy_untrusted",
  "proxy_invalid",
  "proxy_missing",
  "proxy_timeout",
  "tls_plaintext",
  "tls_handshake_failed",
  "tls_handshake_timeout",
  "tls_client_certificate",
] as const;
/** A {@linkcode REJECT_REASONS} value. */
export type RejectReason = typeof REJECT_REASONS[number];

/** Upper bounds (seconds) of the connection duration histogram. */
const DURATION_BUCKETS_S = [0.001, 0.01, 0.1, 1, 10, 60, 300, 1_800, 3_600];

/**
 * One listening port's counters as plain numbers: the echo path only adds
 * to them; the Prometheus exporter reads them when scraped.
 */
export class PortStats {
  /** Connections admitted to echo (past the limit and any PROXY header). */
  accepted = 0;
  /** Echo connections open now. */
  active = 0;
  /** Connections closed right after accept, by reason. */
  readonly rejected: Record<RejectReason, number> = zeroes(REJECT_REASONS);
  /** Echo connections ended, by reason. */
  readonly closed: Record<CloseReason, number> = zeroes(CLOSE_REASONS);
  /** Bytes received from clients. */
  bytesReceived = 0;
  /** Bytes sent to clients: banners and echoes. */
  bytesSent = 0;
}

/** A counter per key, all 0. */
function zeroes<K extends string>(keys: readonly K[]): Record<K, number> {
  return Object.fromEntries(keys.map((key) => [key, 0])) as Record<K, number>;
}

/** The server's counters, one {@linkcode PortStats} per listening port. */
export class ServerStats {
  readonly #ports = new Map<number, PortStats>();
  /** Ports whose listeners speak TLS. */
  readonly tlsPorts: Set<number> = new Set();

  /** The counters of `port`, created on first use. */
  forPort(port: number): PortStats {
    let stats = this.#ports.get(port);
    if (!stats) {
      stats = new PortStats();
      this.#ports.set(port, stats);
    }
    return stats;
  }

  /** Failed accepts by listening port (echo and admin) and kind. */
  readonly acceptErrors: Map<number, Record<AcceptErrorKind, number>> = new Map();

  /** Counts a failed `accept()` on `port`. */
  countAcceptError(port: number, kind: AcceptErrorKind): void {
    let counts = this.acceptErrors.get(port);
    if (!counts) {
      counts = { connection: 0, resources: 0 };
      this.acceptErrors.set(port, counts);
    }
    counts[kind]++;
  }

  /** Every port with its counters, in the order the ports were added. */
  entries(): IterableIterator<[number, PortStats]> {
    return this.#ports.entries();
  }
}

/** The Prometheus side of the metrics: a registry whose values come from `stats`. */
export interface MetricsExporter {
  /** The exposition, in Prometheus text format. */
  render(): Promise<string>;
  /** The Content-Type of {@linkcode MetricsExporter.render}'s text. */
  readonly contentType: string;
  /** Records one finished connection's duration. */
  observeDuration(port: number, seconds: number): void;
}

/** A metric read from per-port numbers at each scrape: one sample per port and label set. */
interface PortMetric<T> {
  readonly kind: "counter" | "gauge";
  readonly name: string;
  readonly help: string;
  /** Labels besides `port`. */
  readonly labelNames: readonly string[];
  /** Where the numbers are, by port. */
  readonly source: (stats: ServerStats) => Iterable<[number, T]>;
  /** A port's samples: labels besides `port`, and the value. */
  readonly samples: (numbers: T) => [Record<string, string>, number][];
}

const byPort = (stats: ServerStats) => stats.entries();

/** The metrics the echo path counts, in the order `/metrics` shows them. */
const PORT_METRICS: readonly PortMetric<PortStats>[] = [
  {
    kind: "counter",
    name: "tcp_echo_connections_total",
    help: "Echo connections admitted.",
    labelNames: [],
    source: byPort,
    samples: (p) => [[{}, p.accepted]],
  },
  {
    kind: "gauge",
    name: "tcp_echo_connections_active",
    help: "Echo connections open now.",
    labelNames: [],
    source: byPort,
    samples: (p) => [[{}, p.active]],
  },
  {
    kind: "counter",
    name: "tcp_echo_connections_rejected_total",
    help: "Connections closed right after accept, by reason.",
    labelNames: ["reason"],
    source: byPort,
    samples: (p) => REJECT_REASONS.map((reason) => [{ reason }, p.rejected[reason]]),
  },
  {
    kind: "counter",
    name: "tcp_echo_connections_closed_total",
    help: "Echo connections ended, by reason.",
    labelNames: ["reason"],
    source: byPort,
    samples: (p) => CLOSE_REASONS.map((reason) => [{ reason }, p.closed[reason]]),
  },
  {
    kind: "counter",
    name: "tcp_echo_received_bytes_total",
    help: "Bytes received from clients.",
    labelNames: [],
    source: byPort,
    samples: (p) => [[{}, p.bytesReceived]],
  },
  {
    kind: "counter",
    name: "tcp_echo_sent_bytes_total",
    help: "Bytes sent to clients (banners and echoes).",
    labelNames: [],
    source: byPort,
    samples: (p) => [[{}, p.bytesSent]],
  },
];

const ACCEPT_ERRORS_METRIC: PortMetric<Record<AcceptErrorKind, number>> = {
  kind: "counter",
  name: "tcp_echo_accept_errors_total",
  help: "Failed accepts by listening port: connection (reset while queued) or resources.",
  labelNames: ["kind"],
  source: (stats) => stats.acceptErrors.entries(),
  samples: (counts) => ACCEPT_ERROR_KINDS.map((kind) => [{ kind }, counts[kind]]),
};

const PORT_INFO_METRIC: PortMetric<boolean> = {
  kind: "gauge",
  name: "tcp_echo_port_info",
  help: "Always 1 per echo port; tls says whether the port speaks TLS.",
  labelNames: ["tls"],
  source: (stats) => Array.from(stats.entries(), ([port]) => [port, stats.tlsPorts.has(port)]),
  samples: (tls) => [[{ tls: String(tls) }, 1]],
};

/** Registers `metric` so that each scrape reads its values from `stats`; nothing is counted twice. */
function register<T>(registry: Registry, stats: ServerStats, metric: PortMetric<T>): void {
  const options = {
    name: metric.name,
    help: metric.help,
    labelNames: ["port", ...metric.labelNames],
    registers: [registry],
    collect,
  };
  const made = metric.kind === "counter" ? new Counter(options) : new Gauge(options);
  function collect() {
    made.reset();
    for (const [port, numbers] of metric.source(stats)) {
      for (const [labels, value] of metric.samples(numbers)) {
        const all = { port: String(port), ...labels };
        if (made instanceof Counter) made.inc(all, value);
        else made.set(all, value);
      }
    }
  }
}

/** Builds the exporter (prom-client) over `stats`; nothing is counted twice. */
export function createMetricsExporter(stats: ServerStats): MetricsExporter {
  const registry = new Registry();
  for (const metric of PORT_METRICS) register(registry, stats, metric);
  register(registry, stats, ACCEPT_ERRORS_METRIC);
  register(registry, stats, PORT_INFO_METRIC);
  const duration = new Histogram({
    name: "tcp_echo_connection_duration_seconds",
    help: "How long echo connections stayed open.",
    buckets: DURATION_BUCKETS_S,
    labelNames: ["port"],
    registers: [registry],
  });
  new Gauge({
    name: "tcp_echo_build_info",
    help: "Always 1; the labels say which build runs.",
    labelNames: ["version", "deno"],
    registers: [registry],
  }).set({ version: VERSION, deno: Deno.version.deno }, 1);
  return {
    render: () => registry.metrics(),
    contentType: registry.contentType,
    observeDuration: (port, seconds) => duration.observe({ port }, seconds),
  };
}

/** What the admin endpoints report on. */
export interface AdminState {
  /** Whether `/readyz` answers 200. */
  isReady(): boolean;
  /** What `/metrics` renders. */
  readonly metrics: MetricsExporter;
}

/** An admin answer: status, headers and body. */
export interface AdminResponse {
  /** The HTTP status. */
  readonly status: number;
  /** Response headers, lower case. */
  readonly headers: Readonly<Record<string, string>>;
  /** The body (sent for GET, its length only for HEAD). */
  readonly body: string;
}

const textResponse = (
  status: number,
  body: string,
  headers: Record<string, string> = {},
): AdminResponse => ({
  status,
  headers: { "content-type": "text/plain; charset=utf-8", ...headers },
  body,
});

/**
 * Answers one admin request: `GET /healthz` (200 while the process works),
 * `GET /readyz` (200 while accepting and not draining, else 503),
 * `GET /metrics` (Prometheus text). Other paths 404, other methods 405.
 */
export async function handleAdminRequest(
  method: string,
  path: string,
  state: AdminState,
): Promise<AdminResponse> {
  if (!["/healthz", "/readyz", "/metrics"].includes(path)) {
    return textResponse(404, "not found\n");
  }
  if (method !== "GET" && method !== "HEAD") {
    return textResponse(405, "method not allowed\n", { allow: "GET, HEAD" });
  }
  if (path === "/healthz") return textResponse(200, "ok\n");
  if (path === "/readyz") {
    return state.isReady() ? textResponse(200, "ready\n") : textResponse(503, "not ready\n");
  }
  return {
    status: 200,
    headers: { "content-type": state.metrics.contentType },
    body: await state.metrics.render(),
  };
}

/** The method and path of an HTTP/1.x request head, or `undefined` when it is not one. */
export function parseRequestHead(head: string): { method: string; path: string } | undefined {
  const match = /^([A-Z]{1,16}) (\S+) HTTP\/1\.[01]\r?\n/.exec(head);
  if (!match) return undefined;
  const target = match[2];
  const path = target.startsWith("/") ? target : URL.parse(target)?.pathname;
  return path === undefined ? undefined : { method: match[1], path: path.replace(/\?.*$/, "") };
}

const STATUS_TEXT: Readonly<Record<number, string>> = {
  200: "OK",
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  503: "Service Unavailable",
};

/** An admin answer as HTTP/1.1 bytes; the connection closes after it. */
export function renderResponse(response: AdminResponse, withBody: boolean): Uint8Array {
  const body = encoder.encode(response.body);
  const headers = {
    ...response.headers,
    "content-length": String(body.length),
    connection: "close",
  };
  const head = `HTTP/1.1 ${response.status} ${STATUS_TEXT[response.status] ?? ""}\r\n` +
    Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join("") + "\r\n";
  return concatBytes([encoder.encode(head), withBody ? body : NO_BYTES]);
}

/** A request head larger than this is answered 400. */
const ADMIN_MAX_HEAD_BYTES = 8_192;
/** A request that has not arrived whole by then is dropped. */
const ADMIN_REQUEST_TIMEOUT_MS = 5_000;
const HEAD_END = encoder.encode("\r\n\r\n");

/** Reads an HTTP request head (up to its blank line); `undefined` when it is too large or cut. */
async function readRequestHead(conn: Deno.Conn): Promise<string | undefined> {
  const buffer = new Uint8Array(ADMIN_MAX_HEAD_BYTES);
  let filled = 0;
  while (filled < buffer.length) {
    const n = await conn.read(buffer.subarray(filled));
    if (n === null) return undefined;
    filled += n;
    const head = buffer.subarray(0, filled);
    if (indexOfBytes(head, HEAD_END) >= 0) return latin1.decode(head);
  }
  return undefined;
}

/** Serves one admin request on `conn` and closes it. Never throws. */
export async function serveAdminConnection(conn: Deno.TcpConn, state: AdminState): Promise<void> {
  const timer = setTimeout(closeQuietly, ADMIN_REQUEST_TIMEOUT_MS, conn);
  try {
    const head = await readRequestHead(conn);
    const request = head === undefined ? undefined : parseRequestHead(head);
    const response = request === undefined
      ? textResponse(400, "bad request\n")
      : await handleAdminRequest(request.method, request.path, state);
    await writeAll(conn, renderResponse(response, request?.method !== "HEAD"));
    // Probes come every few seconds: build nothing for a record the level filters out.
    if (log.isEnabledFor("debug")) {
      log.debug("Admin request.", {
        method: request?.method ?? "-",
        path: request?.path ?? "-",
        status: response.status,
      });
    }
  } catch (error) {
    log.debug("Admin connection failed.", { error });
  } finally {
    clearTimeout(timer);
    closeQuietly(conn);
  }
}

/**
 * Descriptors held in reserve, the way libuv keeps one for EMFILE: when the
 * process runs out, the admin server closes one to accept a probe, and takes
 * it back once the probe is answered. Deno cannot read the descriptor limit
 * without `--allow-all`, so a cap below it cannot be computed; a reserve
 * works whatever the limit is.
 */
export class DescriptorReserve {
  readonly #files: Deno.FsFile[] = [];

  /** Holds `size` descriptors, as far as the process can open them now. */
  constructor(readonly size: number) {
    this.refill();
  }

  /** Opens descriptors until `size` are held, while the process can. */
  refill(): void {
    try {
      while (this.#files.length < this.size) this.#files.push(Deno.openSync("/dev/null"));
    } catch {
      // Out of descriptors (or no permission): try again after the next probe.
    }
  }

  /** How many descriptors are held now. */
  get held(): number {
    return this.#files.length;
  }

  /** Gives one descriptor back to the process; false when none is held. */
  release(): boolean {
    const file = this.#files.pop();
    file?.close();
    return file !== undefined;
  }

  /** Closes every descriptor held. */
  close(): void {
    for (const file of this.#files.splice(0)) file.close();
  }
}

/** Descriptors kept for probes: a liveness, a readiness and a metrics request at once, and one spare. */
export const RESERVED_DESCRIPTORS = 4;
/** Admin connections served at once at most; more are closed at once. */
export const ADMIN_MAX_CONNECTIONS = 32;

/**
 * The admin server's side of its accept loop (the loop itself is main.ts's,
 * shared with the echo ports): it serves each connection, keeps descriptors
 * in reserve for probes, and waits for requests in progress when it closes.
 */
export class AdminConnections {
  readonly #served = new Set<Promise<void>>();
  readonly #reserve = new DescriptorReserve(RESERVED_DESCRIPTORS);

  /** Answers from `state`. */
  constructor(readonly state: AdminState) {}

  /** Serves one accepted connection, or closes it at once past {@linkcode ADMIN_MAX_CONNECTIONS}. */
  serve(conn: Deno.TcpConn): void {
    if (this.#served.size >= ADMIN_MAX_CONNECTIONS) return closeQuietly(conn);
    const served: Promise<void> = serveAdminConnection(conn, this.state).finally(() => {
      this.#served.delete(served);
      this.#reserve.refill();
    });
    this.#served.add(served);
  }

  /** Descriptors held in reserve for probes right now. */
  get reservedDescriptors(): number {
    return this.#reserve.held;
  }

  /** Gives a reserved descriptor back to the process, so the next accept can succeed. */
  freeDescriptor(): boolean {
    return this.#reserve.release();
  }

  /** Waits for the requests in progress, then lets the reserve go. */
  async close(): Promise<void> {
    await Promise.all(this.#served);
    this.#reserve.close();
  }
}
