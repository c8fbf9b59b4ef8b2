/**
 * What the server and the client share: the banner's field table (the
 * server renders from it, the client parses with it), addresses as text,
 * byte joining, write-all, the datagram receive loop, and the one duration
 * grammar.
 *
 * It imports nothing of the program: main.ts loads the client while its own
 * top-level `await main()` is pending, so a module the client imports must
 * not import main.ts (the import would wait for main.ts forever).
 *
 * @module
 */
import ipaddr from "ipaddr.js";

/** One banner line: the key it is known by, its environment variable, its text. */
export interface BannerField {
  /** The key in {@linkcode BannerValues} and in the client's JSON. */
  readonly key: BannerKey;
  /** The environment variable that sets it; the client address has none (it is per connection). */
  readonly variable: string | undefined;
  /** The line, with `{}` where the value goes (newline not included). */
  readonly template: string;
}

/** The keys of the banner's lines, in banner order. */
export type BannerKey =
  | "node"
  | "pod"
  | "namespace"
  | "ip"
  | "ips"
  | "serviceAccount"
  | "version"
  | "clientAddress"
  | "sourceIdentity"
  | "connectionId";

/**
 * The banner's lines in the order the server sends them. The first five are
 * byte-identical to the original Go server's.
 */
export const BANNER_FIELDS: readonly BannerField[] = [
  { key: "node", variable: "NODE_NAME", template: "Welcome, you are connected to node {}." },
  { key: "pod", variable: "POD_NAME", template: "Running on Pod {}." },
  { key: "namespace", variable: "POD_NAMESPACE", template: "In namespace {}." },
  { key: "ip", variable: "POD_IP", template: "With IP address {}." },
  { key: "serviceAccount", variable: "SERVICE_ACCOUNT", template: "Service {}." },
  { key: "version", variable: "SERVICE_VERSION", template: "Version {}." },
  { key: "ips", variable: "POD_IPS", template: "With IP addresses {}." },
  { key: "clientAddress", variable: undefined, template: "Your address is {}." },
  { key: "sourceIdentity", variable: undefined, template: "Source identity {}." },
  { key: "connectionId", variable: undefined, template: "Connection id {}." },
];

/** What a banner says, field by field; an absent field has no line. */
export type BannerValues = Readonly<Partial<Record<BannerKey, string>>>;

/**
 * Renders the banner lines of the fields that have a value, in
 * {@linkcode BANNER_FIELDS} order, each ending in `\n`. No field, no banner.
 *
 * @example
 * ```ts
 * renderBannerText({ node: "EchoNode" }); // "Welcome, you are connected to node EchoNode.\n"
 * ```
 */
export function renderBannerText(values: BannerValues): string {
  let text = "";
  for (const { key, template } of BANNER_FIELDS) {
    const value = values[key];
    if (value) text += template.replace("{}", value) + "\n";
  }
  return text;
}

/** Each field's line as a pattern that captures the value. */
const BANNER_PATTERNS = BANNER_FIELDS.map(({ key, template }) => {
  const [before, after] = template.split("{}").map((part) =>
    part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
  );
  return [key, new RegExp(`^${before}(.*)${after}$`)] as const;
});

/** Reads banner lines (any order, unknown lines ignored; the first of a field counts). */
export function parseBannerText(text: string): BannerValues {
  const values: Partial<Record<BannerKey, string>> = {};
  for (const line of text.split(/\r?\n/)) {
    for (const [key, pattern] of BANNER_PATTERNS) {
      const match = pattern.exec(line);
      if (match && values[key] === undefined) values[key] = match[1];
    }
  }
  return values;
}

/** What the banner's TLS lines say: the handshake's facts, `undefined` for none. */
export interface TlsBannerValues {
  /** Protocol version, as `TLSv1.3`. */
  readonly protocol: string;
  /** Cipher suite, by its standard name. */
  readonly cipher: string;
  /** The SNI the client sent. */
  readonly serverName?: string;
  /** The protocol ALPN settled on. */
  readonly alpn?: string;
  /** The verified client certificate's name: its SPIFFE ID, else its subject. */
  readonly clientCertificate?: string;
}

/** How the banner says a TLS fact is absent. */
export const TLS_NONE = "none";

/**
 * The lines a TLS port adds to the banner, `{name}` where a value goes; the
 * client certificate's line only when there is one. The server renders them
 * and the client parses them from this one table.
 */
const TLS_BANNER_LINES = [
  "TLS {protocol} {cipher}, server name {serverName}, ALPN {alpn}.",
  "Client certificate {clientCertificate}.",
] as const;

type TlsKey = keyof TlsBannerValues;

/** A line of {@linkcode TLS_BANNER_LINES} as a pattern with a group per value (no spaces in values but the last). */
const TLS_LINE_PATTERNS = TLS_BANNER_LINES.map((template) => {
  const keys = Array.from(template.matchAll(/\{(\w+)\}/g), (match) => match[1] as TlsKey);
  const source = template.split(/\{\w+\}/).map(escapeRegExp).reduce((pattern, text, i) =>
    i === 0 ? text : `${pattern}(${i === keys.length ? ".+" : "\\S+"})${text}`
  );
  return { keys, pattern: new RegExp(`^${source}$`, "m") };
});

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * Renders the banner's TLS lines, for example
 * `TLS TLSv1.3 TLS_AES_256_GCM_SHA384, server name v2.example.com, ALPN echo.`
 * and, with a client certificate, `Client certificate spiffe://cluster.local/ns/default/sa/sleep.`
 */
export function renderTlsBannerText(values: TlsBannerValues): string {
  const fill = (template: string) =>
    template.replace(/\{(\w+)\}/g, (_, key: TlsKey) => values[key] ?? TLS_NONE) + "\n";
  const [tls, client] = TLS_BANNER_LINES;
  return fill(tls) + (values.clientCertificate === undefined ? "" : fill(client));
}

/** Reads the banner's TLS lines back; `undefined` when there is no TLS line. */
export function parseTlsBannerText(text: string): TlsBannerValues | undefined {
  const values: Partial<Record<TlsKey, string>> = {};
  for (const { keys, pattern } of TLS_LINE_PATTERNS) {
    const match = pattern.exec(text);
    if (!match) continue;
    keys.forEach((key, i) => values[key] = match[i + 1] === TLS_NONE ? undefined : match[i + 1]);
  }
  return values.protocol === undefined ? undefined : values as TlsBannerValues;
}

/** Shows an IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) as plain IPv4; other text as it is. */
export function unmapIPv4(hostname: string): string {
  if (!hostname.includes(":") || !ipaddr.IPv6.isValid(hostname)) return hostname;
  const address = ipaddr.IPv6.parse(hostname);
  return address.isIPv4MappedAddress() ? address.toIPv4Address().toString() : hostname;
}

/** The IP family of an address as text (IPv4-mapped IPv6 counts as IPv4): `IPv4` or `IPv6`. */
export function ipFamily(hostname: string): "IPv4" | "IPv6" {
  return unmapIPv4(hostname).includes(":") ? "IPv6" : "IPv4";
}

/** `host:port`, with an IPv6 host in brackets: `[::1]:80`. */
export function formatHostPort(hostname: string, port: number): string {
  return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}

/** Formats a network address as `1.2.3.4:80` or `[::1]:80` (IPv4-mapped shown as IPv4). */
export function formatAddress(addr: Deno.Addr): string {
  if (addr.transport !== "tcp" && addr.transport !== "udp") return addr.transport;
  return formatHostPort(unmapIPv4(addr.hostname), addr.port);
}

/** Joins byte arrays into one. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** Where `needle` first starts in `haystack` at or after `from`, or -1. */
export function indexOfBytes(haystack: Uint8Array, needle: Uint8Array, from = 0): number {
  outer: for (let i = from; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** Closes a socket or file that may be closed already. */
export function closeQuietly(closable: { close(): void }): void {
  try {
    closable.close();
  } catch {
    // Closed already.
  }
}

/** Anything with a `write` that may take only part of the bytes: a socket, stdout. */
export interface PartialWriter {
  /** Writes some of `bytes`; resolves with how many. */
  write(bytes: Uint8Array): Promise<number>;
}

/** Room for the largest UDP datagram (65,527 bytes over IPv6), so that none is cut short. */
export const DATAGRAM_BUFFER_BYTES = 65_536;

/**
 * Receives on `socket` one datagram at a time into one buffer and hands each
 * to `take`, awaited: the buffer is read into again once `take` settles, so
 * `take` copies what it keeps. Ends once `closed()` (a datagram received as
 * it closes is not taken), or when a receive fails and `failed` says not to
 * go on.
 */
export async function receiveDatagrams(
  socket: Deno.DatagramConn,
  take: (bytes: Uint8Array, peer: Deno.NetAddr) => unknown,
  closed: () => boolean,
  failed: (error: unknown) => boolean | Promise<boolean>,
): Promise<void> {
  const buffer = new Uint8Array(DATAGRAM_BUFFER_BYTES);
  while (!closed()) {
    let received: [Uint8Array, Deno.Addr];
    try {
      received = await socket.receive(buffer);
    } catch (error) {
      if (closed() || !await failed(error)) return;
      continue;
    }
    if (closed()) return;
    await take(received[0], received[1] as Deno.NetAddr);
  }
}

/** Writes all of `bytes`; `onWritten` hears of every part the target took. */
export async function writeAll(
  target: PartialWriter,
  bytes: Uint8Array,
  onWritten?: (count: number) => void,
): Promise<void> {
  let written = 0;
  while (written < bytes.length) {
    const n = await target.write(bytes.subarray(written));
    written += n;
    onWritten?.(n);
  }
}

const DURATION_UNIT_MS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
};

/** How a duration is written, for error messages. */
export const DURATION_FORMS = "a whole number with ms, s, m or h, e.g. 500ms, 10s, 2m";

/**
 * Parses a duration written as a whole number and a unit (`500ms`, `10s`,
 * `2m`, `1h`). Returns milliseconds, or `undefined` when the text is not a
 * duration.
 */
export function parseDuration(text: string): number | undefined {
  const match = /^(\d{1,9})(ms|s|m|h)$/.exec(text.trim());
  if (!match) return undefined;
  return Number(match[1]) * DURATION_UNIT_MS[match[2]];
}

/** A duration as {@linkcode parseDuration} reads it, in the largest unit that is whole: `10s`, `1500ms`. */
export function formatDuration(ms: number): string {
  for (const [unit, size] of Object.entries(DURATION_UNIT_MS).reverse()) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

/** How the line `DRAIN_NOTICE` sends starts: what a client looks for. */
export const DRAIN_NOTICE_PREFIX = "tcp-echo: closing this connection:";

/** The line `DRAIN_NOTICE` sends a connection the shutdown closes. */
export function drainNotice(graceMs: number): string {
  return `${DRAIN_NOTICE_PREFIX} the server is shutting down and its grace of ` +
    `${formatDuration(graceMs)} is over\n`;
}
