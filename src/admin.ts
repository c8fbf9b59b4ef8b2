/**
 * The admin side: the server's counters (per port, as plain numbers the echo
 * path adds to), their Prometheus exposition, and the HTTP endpoints
 * `/healthz`, `/readyz` and `/metrics`, served one request per connection on
 * the server's own accept loop, with bounds that keep probes answered
 * whatever other clients hold there ({@linkcode ADMIN_MAX_CONNECTIONS} and
 * the other `ADMIN_*` limits). The only module that imports prom-client.
 *
 * @module
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import denoConfig from "../deno.json" with { type: "json" };
import { log } from "./log_output.ts";
import { UDP_DROP_REASONS, UdpPortStats } from "./udp.ts";
import { closeQuietly, concatBytes, writeAll } from "./wire.ts";

/** This build's version (deno.json's `version`), as `tcp_echo_build_info` reports it. */
export const VERSION: string = denoConfig.version;

/** Why `accept()` failed, as counted in `tcp_echo_accept_errors_total{kind}`. */
export const ACCEPT_ERROR_KINDS = ["connection", "resources"] as const;
/** An {@linkcode ACCEPT_ERROR_KINDS} value. */
export type AcceptErrorKind = typeof ACCEPT_ERROR_KINDS[number];

const encoder = new TextEncoder();
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
  "memory",
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

/** What a pending connection is waiting for, as `tcp_echo_connections_pending{stage}` says. */
export const PENDING_STAGES = ["proxy_header", "tls_handshake"] as const;
/** A {@linkcode PENDING_STAGES} value. */
export type PendingStage = typeof PENDING_STAGES[number];

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
  /** Connections accepted and not yet open, by what they wait for (see admission.ts). */
  readonly pending: Record<PendingStage, number> = zeroes(PENDING_STAGES);
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

  /** The failed accepts of `port`, all 0 until one fails (so a `rate()` has a series from the start). */
  acceptErrorsOf(port: number): Record<AcceptErrorKind, number> {
    let counts = this.acceptErrors.get(port);
    if (!counts) {
      counts = zeroes(ACCEPT_ERROR_KINDS);
      this.acceptErrors.set(port, counts);
    }
    return counts;
  }

  /** Counts a failed `accept()` on `port`. */
  countAcceptError(port: number, kind: AcceptErrorKind): void {
    this.acceptErrorsOf(port)[kind]++;
  }

  /** The memory figures `/metrics` shows, when the server has a budget. */
  memory: (() => MemoryFigures) | undefined;

  /** The counters of each UDP port. */
  readonly udpPorts: Map<number, UdpPortStats> = new Map();

  /** The counters of UDP `port`, created on first use. */
  forUdpPort(port: number): UdpPortStats {
    let stats = this.udpPorts.get(port);
    if (!stats) {
      stats = new UdpPortStats();
      this.udpPorts.set(port, stats);
    }
    return stats;
  }

  /** Every port with its counters, in the order the ports were added. */
  entries(): IterableIterator<[number, PortStats]> {
    return this.#ports.entries();
  }
}

/** The memory the server admits connections within, in bytes (src/memory.ts). */
export interface MemoryFigures {
  /** The container's limit; absent when there is none. */
  readonly limit?: number;
  /** What connections may be charged together (absent without a limit). */
  readonly budget?: number;
  /** What open and pending connections are charged now. */
  readonly charged: number;
  /** The process's resident size now. */
  readonly resident: number;
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
    kind: "gauge",
    name: "tcp_echo_connections_pending",
    help: "Connections accepted and still waiting for their PROXY header or TLS handshake.",
    labelNames: ["stage"],
    source: byPort,
    samples: (p) => PENDING_STAGES.map((stage) => [{ stage }, p.pending[stage]]),
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

const byUdpPort = (stats: ServerStats) => stats.udpPorts.entries();

/** The metrics of the UDP ports. */
const UDP_METRICS: readonly PortMetric<UdpPortStats>[] = [
  {
    kind: "counter",
    name: "tcp_echo_udp_datagrams_received_total",
    help: "UDP datagrams received.",
    labelNames: [],
    source: byUdpPort,
    samples: (p) => [[{}, p.datagramsReceived]],
  },
  {
    kind: "counter",
    name: "tcp_echo_udp_datagrams_sent_total",
    help: "UDP datagrams sent: banners, echoes and duplicates.",
    labelNames: [],
    source: byUdpPort,
    samples: (p) => [[{}, p.datagramsSent]],
  },
  {
    kind: "counter",
    name: "tcp_echo_udp_received_bytes_total",
    help: "Bytes of UDP datagrams received.",
    labelNames: [],
    source: byUdpPort,
    samples: (p) => [[{}, p.bytesReceived]],
  },
  {
    kind: "counter",
    name: "tcp_echo_udp_sent_bytes_total",
    help: "Bytes of UDP datagrams sent.",
    labelNames: [],
    source: byUdpPort,
    samples: (p) => [[{}, p.bytesSent]],
  },
  {
    kind: "counter",
    name: "tcp_echo_udp_flows_total",
    help: "UDP flows begun: a peer's first datagram, or its first after it fell silent.",
    labelNames: [],
    source: byUdpPort,
    samples: (p) => [[{}, p.flows]],
  },
  {
    kind: "gauge",
    name: "tcp_echo_udp_flows_active",
    help: "UDP flows tracked now.",
    labelNames: [],
    source: byUdpPort,
    samples: (p) => [[{}, p.activeFlows]],
  },
  {
    kind: "counter",
    name: "tcp_echo_udp_dropped_total",
    help: "UDP datagrams not echoed, by reason: fault, flow_limit, send_failed.",
    labelNames: ["reason"],
    source: byUdpPort,
    samples: (p) => UDP_DROP_REASONS.map((reason) => [{ reason }, p.dropped[reason]]),
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
  for (const metric of UDP_METRICS) register(registry, stats, metric);
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
    name: "tcp_echo_memory_bytes",
    help:
      "Memory: the limit, the budget for connections, what they are charged, the resident size.",
    labelNames: ["kind"],
    registers: [registry],
    collect() {
      this.reset();
      const figures = stats.memory?.();
      if (figures === undefined) return;
      for (const [kind, bytes] of Object.entries(figures)) {
        if (bytes !== undefined) this.set({ kind }, bytes);
      }
    },
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

/**
 * Admin connections open at once at most: the bound on what idle, slow or
 * hostile clients can hold there (256 descriptors, 256 KiB of read buffers,
 * and the request targets read so far). When every one is taken, the
 * oldest connection that has not delivered a whole request is closed to
 * make room for the newcomer (as nginx reuses its oldest waiting
 * connections), so held connections cannot starve probes; one being
 * answered is never cut. Probes, scrapes and people need a handful; the
 * rest is headroom because main.ts's accept loop takes every queued
 * connection before any read runs, and a probe accepted in such a burst
 * must not be pushed out by the ones behind it before its request is read.
 * Measured: with 320 clients re-connecting as fast as they were dropped,
 * every probe was answered; with 400, a few were not.
 */
export const ADMIN_MAX_CONNECTIONS = 256;

/**
 * How long a connection may stay silent after accept. The kubelet,
 * Prometheus and curl write their request as soon as they connect, so a
 * second without a byte is far beyond a round trip plus one retransmission
 * (Linux's minimum RTO is 200 ms), and under the kubelet's default 1 s probe
 * timeout a probe that slow has failed already.
 */
export const ADMIN_IDLE_TIMEOUT_MS = 1_000;

/**
 * How long after accept the whole request head must have arrived. Real
 * clients send it in one segment; 2 s allows a slow link while a trickling
 * client (a byte every 200 ms) cannot hold a slot for long.
 */
export const ADMIN_HEAD_TIMEOUT_MS = 2_000;

/**
 * How long writing an answer may take once the request is in; a client that
 * does not read it is dropped then. The largest answer, `/metrics`, is a few
 * KiB and fits in a socket's send buffer, so this bound is only met by a
 * client that stopped reading.
 */
export const ADMIN_WRITE_TIMEOUT_MS = 5_000;

/**
 * The largest request head accepted (request line and header fields); past
 * it the answer is 400 at once. 8 KiB is nginx's and Node's default header
 * limit; probes send about 150 bytes.
 */
export const ADMIN_MAX_HEAD_BYTES = 8_192;

/**
 * Each connection's read buffer. The head is parsed as it comes, one pass
 * over each byte, so it is never buffered whole: a connection holds this
 * buffer and the request target read so far (under
 * {@linkcode ADMIN_MAX_HEAD_BYTES}). A probe's head fits in one read.
 */
export const ADMIN_READ_BUFFER_BYTES = 1_024;

/** Longer than any method IANA registers (UPDATEREDIRECTREF has 17 letters). */
const MAX_METHOD_LENGTH = 20;

/** Why a request head is answered 400, as the debug record's `reason` says. */
export const BAD_REQUEST_REASONS = [
  "method",
  "target",
  "version",
  "field_name",
  "field_value",
  "line_ending",
  "too_large",
] as const;
/** A {@linkcode BAD_REQUEST_REASONS} value. */
export type BadRequestReason = typeof BAD_REQUEST_REASONS[number];

/** How much of a request head {@linkcode RequestHeadParser} has seen, and what it is. */
export type HeadProgress =
  | { readonly state: "partial" }
  | { readonly state: "complete"; readonly method: string; readonly target: string }
  | { readonly state: "invalid"; readonly reason: BadRequestReason };

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HTAB = 0x09;
const COLON = 0x3a;
const HTTP_1 = "HTTP/1.";
const PARTIAL: HeadProgress = { state: "partial" };

/** RFC 9110 §5.6.2 `tchar`: the bytes of a method and a field name. */
const TOKEN_BYTES = new Set(
  encoder.encode("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"),
);
const isToken = (byte: number) => TOKEN_BYTES.has(byte);
/** A visible ASCII character (`VCHAR`): the bytes of a request target. */
const isVisible = (byte: number) => byte > SP && byte < 0x7f;
/** RFC 9110 §5.5 field-value bytes: visible, space, tab, and obs-text (0x80–0xFF). */
const isFieldValue = (byte: number) => byte === HTAB || (byte >= SP && byte !== 0x7f);

/** Where the parser is in a request head. */
type HeadPhase =
  | "before_request_line"
  | "method"
  | "target"
  | "version"
  | "field_start"
  | "field_name"
  | "field_value"
  | "after_cr"
  | "done";

/**
 * Reads an HTTP/1.x request head (RFC 9112) as its bytes arrive, one pass
 * over each byte, and says at the first byte that breaks the grammar that it
 * is invalid: a client sending garbage is answered 400 without waiting for a
 * line end or a timeout. Lines may end in CRLF or a bare LF (§2.2); empty
 * lines before the request line are skipped (§2.2); a bare CR, an obsolete
 * line folding and whitespace before a field's colon are invalid (§2.2,
 * §5.1, §5.2). Bytes after the head are not read.
 *
 * @example
 * ```ts
 * const parser = new RequestHeadParser();
 * parser.push(new TextEncoder().encode("GET /healthz HT")); // { state: "partial" }
 * parser.push(new TextEncoder().encode("TP/1.1\n\n")); // { state: "complete", method: "GET", target: "/healthz" }
 * ```
 */
export class RequestHeadParser {
  #phase: HeadPhase = "before_request_line";
  /** Where a line's LF goes on after its CR. */
  #afterLine: HeadPhase = "before_request_line";
  #method = "";
  #target = "";
  #version = "";
  #length = 0;
  #progress: HeadProgress = PARTIAL;

  /** Reads `bytes`, the next part of the stream; once complete or invalid, ignores the rest. */
  push(bytes: Uint8Array): HeadProgress {
    for (const byte of bytes) {
      if (this.#progress.state !== "partial") break;
      this.#length++;
      const invalid = this.#length > ADMIN_MAX_HEAD_BYTES ? "too_large" : this.#step(byte);
      if (invalid) this.#progress = { state: "invalid", reason: invalid };
    }
    return this.#progress;
  }

  /** Takes one byte; the reason when it breaks the grammar. */
  #step(byte: number): BadRequestReason | undefined {
    switch (this.#phase) {
      case "before_request_line":
        if (byte === LF) return;
        if (byte === CR) return this.#expectLf("before_request_line");
        this.#phase = "method";
        return this.#step(byte);
      case "method":
        if (byte === SP && this.#method.length > 0) return this.#to("target");
        if (!isToken(byte) || this.#method.length >= MAX_METHOD_LENGTH) return "method";
        this.#method += String.fromCharCode(byte);
        return;
      case "target":
        if (byte === SP && this.#target.length > 0) return this.#to("version");
        if (!isVisible(byte)) return "target";
        this.#target += String.fromCharCode(byte);
        return;
      case "version":
        return this.#versionByte(byte);
      case "field_start":
        if (byte === LF) return this.#complete();
        if (byte === CR) return this.#expectLf("done");
        // A line that starts with a space or tab (obs-fold) has no field name: invalid.
        return isToken(byte) ? this.#to("field_name") : "field_name";
      case "field_name":
        if (byte === COLON) return this.#to("field_value");
        return isToken(byte) ? undefined : "field_name";
      case "field_value":
        if (byte === LF) return this.#to("field_start");
        if (byte === CR) return this.#expectLf("field_start");
        return isFieldValue(byte) ? undefined : "field_value";
      case "after_cr":
        if (byte !== LF) return "line_ending";
        return this.#afterLine === "done" ? this.#complete() : this.#to(this.#afterLine);
      case "done":
        return;
    }
  }

  #to(phase: HeadPhase): undefined {
    this.#phase = phase;
  }

  /** A CR was read: only an LF may follow it, and then the parser goes on to `next`. */
  #expectLf(next: HeadPhase): undefined {
    this.#phase = "after_cr";
    this.#afterLine = next;
  }

  /** One byte of `HTTP/1.0` or `HTTP/1.1`, or the line end after it. */
  #versionByte(byte: number): BadRequestReason | undefined {
    const length = this.#version.length;
    if (length === HTTP_1.length + 1) {
      if (byte === LF) return this.#to("field_start");
      return byte === CR ? this.#expectLf("field_start") : "version";
    }
    const fits = length < HTTP_1.length
      ? byte === HTTP_1.charCodeAt(length)
      : byte === 0x30 || byte === 0x31;
    if (!fits) return "version";
    this.#version += String.fromCharCode(byte);
  }

  #complete(): undefined {
    this.#phase = "done";
    this.#progress = { state: "complete", method: this.#method, target: this.#target };
  }
}

/**
 * The path a request target names, without its query: origin form
 * (`/readyz?x`) or absolute form (`http://host/readyz`); `undefined` for
 * the others (`*`, `host:port`).
 */
export function targetPath(target: string): string | undefined {
  const path = target.startsWith("/") ? target : URL.parse(target)?.pathname;
  return path?.replace(/\?.*$/, "");
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

/** How an admin connection ended, as its debug record's `reason` says. */
type AdminEnd =
  | "answered"
  | "bad_request"
  | "eof"
  | "idle"
  | "head_timeout"
  | "write_timeout"
  | "evicted"
  | "shutdown"
  | "error";

/**
 * One admin connection: read a request head under the idle and head
 * deadlines, answer it, close. Its timers, its close and its record are
 * here, in one place.
 */
class AdminConnection {
  readonly #conn: Deno.TcpConn;
  readonly #state: AdminState;
  readonly #openedMs = performance.now();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #answering = false;
  #ended: AdminEnd | undefined;

  /** Serves `conn` from `state` once {@linkcode AdminConnection.serve} is called. */
  constructor(conn: Deno.TcpConn, state: AdminState) {
    this.#conn = conn;
    this.#state = state;
  }

  /** Whether it may be closed for a newcomer: it has not delivered a whole request yet. */
  get waiting(): boolean {
    return !this.#answering && this.#ended === undefined;
  }

  /** Closes it now for `reason`; its pending read or write ends. */
  end(reason: AdminEnd): void {
    this.#ended ??= reason;
    clearTimeout(this.#timer);
    closeQuietly(this.#conn);
  }

  /** Reads one request, answers it and closes. Never throws. */
  async serve(): Promise<void> {
    this.#arm(ADMIN_IDLE_TIMEOUT_MS, "idle");
    try {
      const head = await this.#readHead();
      if (head === undefined) return;
      this.#answering = true;
      this.#arm(ADMIN_WRITE_TIMEOUT_MS, "write_timeout");
      await this.#answer(head);
    } catch (error) {
      // A closed connection's read or write fails: that is the end already recorded.
      if (this.#ended === undefined) log.debug("Admin connection failed.", { error });
      this.#ended ??= "error";
    } finally {
      this.end(this.#ended ?? "error");
      if (this.#ended !== "answered" && this.#ended !== "bad_request") this.#logEnd();
    }
  }

  /** Closes the connection for `reason` after `ms`, unless re-armed first. */
  #arm(ms: number, reason: AdminEnd): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.end(reason), ms);
  }

  /** The head, complete or invalid; `undefined` at EOF before it. */
  async #readHead(): Promise<HeadProgress | undefined> {
    const parser = new RequestHeadParser();
    const buffer = new Uint8Array(ADMIN_READ_BUFFER_BYTES);
    let silent = true;
    while (true) {
      const n = await this.#conn.read(buffer);
      if (n === null) {
        this.#ended ??= "eof";
        return undefined;
      }
      if (silent) {
        silent = false;
        const leftMs = ADMIN_HEAD_TIMEOUT_MS - (performance.now() - this.#openedMs);
        this.#arm(leftMs, "head_timeout");
      }
      const progress = parser.push(buffer.subarray(0, n));
      if (progress.state !== "partial") return progress;
    }
  }

  /** Writes the answer to `head`: 400 for an invalid one. */
  async #answer(head: HeadProgress): Promise<void> {
    const path = head.state === "complete" ? targetPath(head.target) : undefined;
    const request = head.state === "complete" && path !== undefined
      ? { method: head.method, path }
      : undefined;
    const response = request === undefined
      ? textResponse(400, "bad request\n")
      : await handleAdminRequest(request.method, request.path, this.#state);
    await writeAll(this.#conn, renderResponse(response, request?.method !== "HEAD"));
    this.#ended ??= request === undefined ? "bad_request" : "answered";
    // Probes come every few seconds: build nothing for a record the level filters out.
    if (log.isEnabledFor("debug")) {
      log.debug("Admin request.", {
        method: request?.method ?? "-",
        path: request?.path ?? "-",
        status: response.status,
        ...head.state === "invalid" ? { reason: head.reason } : {},
        ...head.state === "complete" && path === undefined ? { reason: "target" } : {},
      });
    }
  }

  /** The record of a connection closed without an answer. */
  #logEnd(): void {
    if (!log.isEnabledFor("debug")) return;
    log.debug("Admin connection closed unanswered.", {
      reason: this.#ended,
      duration_ms: Math.round(performance.now() - this.#openedMs),
    });
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

/**
 * The admin server's side of its accept loop (the loop itself is main.ts's,
 * shared with the echo ports): it serves each connection, at most
 * {@linkcode ADMIN_MAX_CONNECTIONS} at once, closing the oldest that has not
 * delivered a request to make room for a newcomer; keeps descriptors in
 * reserve for probes; and on close, drops the connections still waiting
 * for a request and waits for the ones being answered.
 */
export class AdminConnections {
  /** Connections open now, oldest first (a Set keeps insertion order). */
  readonly #open = new Set<AdminConnection>();
  readonly #served = new Set<Promise<void>>();
  readonly #reserve = new DescriptorReserve(RESERVED_DESCRIPTORS);

  /** Answers from `state`. */
  constructor(readonly state: AdminState) {}

  /**
   * Serves one accepted connection. When {@linkcode ADMIN_MAX_CONNECTIONS}
   * are open, the oldest one still waiting for its request is closed first;
   * when every one is being answered, `conn` is closed instead.
   */
  serve(conn: Deno.TcpConn): void {
    if (this.#open.size >= ADMIN_MAX_CONNECTIONS && !this.#evictOldestWaiting()) {
      log.debug("Admin connection refused: every connection is being answered.", {
        limit: ADMIN_MAX_CONNECTIONS,
      });
      return closeQuietly(conn);
    }
    const connection = new AdminConnection(conn, this.state);
    this.#open.add(connection);
    const served: Promise<void> = connection.serve().finally(() => {
      this.#open.delete(connection);
      this.#served.delete(served);
      this.#reserve.refill();
    });
    this.#served.add(served);
  }

  /** Closes the oldest connection that has not delivered a request; false when none is waiting. */
  #evictOldestWaiting(): boolean {
    for (const connection of this.#open) {
      if (!connection.waiting) continue;
      this.#open.delete(connection);
      connection.end("evicted");
      return true;
    }
    return false;
  }

  /** Descriptors held in reserve for probes right now. */
  get reservedDescriptors(): number {
    return this.#reserve.held;
  }

  /** Gives a reserved descriptor back to the process, so the next accept can succeed. */
  freeDescriptor(): boolean {
    return this.#reserve.release();
  }

  /** Closes the connections waiting for a request, waits for those being answered, then lets the reserve go. */
  async close(): Promise<void> {
    for (const connection of this.#open) if (connection.waiting) connection.end("shutdown");
    await Promise.all(this.#served);
    this.#reserve.close();
  }
}
