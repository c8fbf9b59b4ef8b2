/**
 * A pure parser of PROXY protocol headers, versions 1 (text) and 2 (binary),
 * as specified by HAProxy ("The PROXY protocol", haproxy.org/download/2.9/doc/proxy-protocol.txt).
 *
 * A proxy sends the header first on a connection to say where the client
 * really came from. This module only looks at bytes: it says whether they
 * hold a complete header (and how long it is), need more bytes, hold no
 * header at all, or hold a broken one, with the reason.
 *
 * It lives apart from main.ts because it is a protocol of its own, with its
 * own exhaustive tests (proxy_protocol_test.ts).
 *
 * @example
 * ```ts
 * const bytes = new TextEncoder().encode("PROXY TCP4 10.0.0.7 10.0.0.1 53422 3333\r\nhello");
 * const result = parseProxyHeader(bytes, "any");
 * // { status: "ok", length: 41, header: { version: 1, command: "proxy",
 * //   source: { hostname: "10.0.0.7", port: 53422 }, destination: {...} } }
 * ```
 *
 * @module
 */
import ipaddr from "ipaddr.js";
import { unmapIPv4 } from "./wire.ts";

/** Which header versions a listener accepts. */
export type ProxyVersions = "v1" | "v2" | "any";

/** One end of a proxied connection, as the header states it. */
export interface ProxyEndpoint {
  /** The address, IPv4-mapped IPv6 shown as IPv4. */
  readonly hostname: string;
  /** The TCP port. */
  readonly port: number;
}

/**
 * What a v2 header's TLVs said that the server shows (spec 2.2.1 ff.), each
 * a UTF-8 text; absent when the header did not carry it.
 */
export interface ProxyTlvFacts {
  /** `0xD0`: the SPIFFE identity of the source workload, as Istio's ztunnel writes it. */
  readonly sourceIdentity?: string;
  /** `0xD1`: the service the connection was for (ztunnel: its FQDN or hostname). */
  readonly service?: string;
  /** `PP2_TYPE_AUTHORITY` (`0x02`): the host name the client asked for (HAProxy: its SNI). */
  readonly authority?: string;
  /** `PP2_TYPE_UNIQUE_ID` (`0x05`): the proxy's id of the connection (HAProxy's `unique-id`). */
  readonly uniqueId?: string;
}

/** The TLV types read into {@linkcode ProxyTlvFacts}. */
export const PROXY_TLV_TYPES = {
  authority: 0x02,
  uniqueId: 0x05,
  sourceIdentity: 0xd0,
  service: 0xd1,
} as const;

/** A header that was read completely and is valid. */
export interface ProxyHeader {
  /** Which version of the protocol the header was. */
  readonly version: 1 | 2;
  /**
   * `proxy`: the connection was relayed for `source`. `local`: the proxy
   * speaks for itself (health checks; v1 `UNKNOWN`, v2 LOCAL, or an address
   * family this server cannot use): use the socket's own addresses.
   */
  readonly command: "proxy" | "local";
  /** The original client; absent for LOCAL, UNKNOWN and UNSPEC. */
  readonly source?: ProxyEndpoint;
  /** The address the client connected to; absent when `source` is. */
  readonly destination?: ProxyEndpoint;
  /** What its TLVs said (v2 only), when they said any of {@linkcode ProxyTlvFacts}. */
  readonly tlvs?: ProxyTlvFacts;
}

/** What {@linkcode parseProxyHeader} found in the bytes received so far. */
export type ProxyParseResult =
  | { readonly status: "ok"; readonly header: ProxyHeader; readonly length: number }
  | { readonly status: "incomplete" }
  | { readonly status: "absent" }
  | { readonly status: "invalid"; readonly reason: string };

/** A v1 header is at most 107 bytes, CRLF included (spec section 2.1). */
export const V1_MAX_BYTES = 107;
/** This server's bound on a whole v2 header (16-byte prefix, addresses and TLVs). */
export const V2_MAX_BYTES = 4_096;

const V1_PREFIX = new TextEncoder().encode("PROXY ");
/** The 12-byte v2 signature: `\r\n\r\n\0\r\nQUIT\n`. */
export const V2_SIGNATURE: Uint8Array = Uint8Array.from([
  0x0d,
  0x0a,
  0x0d,
  0x0a,
  0x00,
  0x0d,
  0x0a,
  0x51,
  0x55,
  0x49,
  0x54,
  0x0a,
]);

/** Address block sizes of the v2 families: INET, INET6, UNIX. */
const V2_ADDRESS_BYTES: Readonly<Record<number, number>> = { 1: 12, 2: 36, 3: 216 };

const ascii = new TextDecoder("latin1");

/**
 * How `bytes` compares with `signature`: `match` when it starts with the
 * whole signature, `prefix` when it is a (possibly empty) start of it, else
 * `differs`.
 */
function compareSignature(
  bytes: Uint8Array,
  signature: Uint8Array,
): "match" | "prefix" | "differs" {
  const n = Math.min(bytes.length, signature.length);
  for (let i = 0; i < n; i++) if (bytes[i] !== signature[i]) return "differs";
  return bytes.length >= signature.length ? "match" : "prefix";
}

const invalid = (reason: string): ProxyParseResult => ({ status: "invalid", reason });

function parsePort(text: string): number | undefined {
  if (!/^(0|[1-9]\d{0,4})$/.test(text)) return undefined;
  const port = Number(text);
  return port <= 65_535 ? port : undefined;
}

function parseV1(bytes: Uint8Array): ProxyParseResult {
  const window = bytes.subarray(0, V1_MAX_BYTES);
  const lineFeed = window.indexOf(0x0a);
  if (lineFeed === -1) {
    return bytes.length >= V1_MAX_BYTES
      ? invalid(`v1 header longer than ${V1_MAX_BYTES} bytes`)
      : { status: "incomplete" };
  }
  if (lineFeed === 0 || window[lineFeed - 1] !== 0x0d) {
    return invalid("v1 header not ended by CRLF");
  }
  const line = ascii.decode(window.subarray(0, lineFeed - 1));
  const length = lineFeed + 1;
  const parts = line.split(" ");
  if (parts[1] === "UNKNOWN") {
    // The rest of an UNKNOWN line is to be ignored (spec 2.1).
    return { status: "ok", length, header: { version: 1, command: "local" } };
  }
  if (parts.length !== 6) return invalid("v1 header does not have 6 fields");
  const [, family, sourceIp, destinationIp, sourcePortText, destinationPortText] = parts;
  const validIp = family === "TCP4"
    ? (ip: string) => ipaddr.IPv4.isValidFourPartDecimal(ip)
    : family === "TCP6"
    ? (ip: string) => ipaddr.IPv6.isValid(ip) && !ip.includes("%")
    : undefined;
  if (!validIp) return invalid(`v1 header has unknown protocol ${JSON.stringify(family)}`);
  if (!validIp(sourceIp) || !validIp(destinationIp)) {
    return invalid(`v1 header has a bad ${family} address`);
  }
  const sourcePort = parsePort(sourcePortText);
  const destinationPort = parsePort(destinationPortText);
  if (sourcePort === undefined || destinationPort === undefined) {
    return invalid("v1 header has a bad port");
  }
  return {
    status: "ok",
    length,
    header: {
      version: 1,
      command: "proxy",
      source: { hostname: addressText(ipaddr.parse(sourceIp)), port: sourcePort },
      destination: { hostname: addressText(ipaddr.parse(destinationIp)), port: destinationPort },
    },
  };
}

/** An address as text, IPv4-mapped IPv6 shown as IPv4 (one rule: {@linkcode unmapIPv4}). */
function addressText(address: ipaddr.IPv4 | ipaddr.IPv6): string {
  return unmapIPv4(address.toString());
}

function v2Endpoint(bytes: Uint8Array, portBytes: Uint8Array): ProxyEndpoint {
  return {
    hostname: addressText(ipaddr.fromByteArray(Array.from(bytes))),
    port: (portBytes[0] << 8) | portBytes[1],
  };
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Reads the TLVs after the address block: each a type, a 16-bit length and
 * that many bytes, exactly filling the header; `undefined` when one overruns
 * it. Only the types of {@linkcode PROXY_TLV_TYPES} are kept, as text (a
 * value that is not UTF-8 is left out); the others are skipped.
 */
function readTlvs(tlvs: Uint8Array): ProxyTlvFacts | undefined {
  const facts: Record<string, string> = {};
  let offset = 0;
  while (offset < tlvs.length) {
    if (offset + 3 > tlvs.length) return undefined;
    const type = tlvs[offset];
    const end = offset + 3 + ((tlvs[offset + 1] << 8) | tlvs[offset + 2]);
    if (end > tlvs.length) return undefined;
    const key = TLV_KEYS.get(type);
    if (key !== undefined && facts[key] === undefined) {
      try {
        facts[key] = utf8.decode(tlvs.subarray(offset + 3, end));
      } catch {
        // Not text: nothing to show.
      }
    }
    offset = end;
  }
  return facts;
}

const TLV_KEYS = new Map<number, keyof ProxyTlvFacts>(
  Object.entries(PROXY_TLV_TYPES).map(([key, type]) => [type, key as keyof ProxyTlvFacts]),
);

function parseV2(bytes: Uint8Array): ProxyParseResult {
  if (bytes.length < 16) return { status: "incomplete" };
  const version = bytes[12] >> 4;
  const command = bytes[12] & 0x0f;
  if (version !== 2) return invalid(`v2 header has version ${version}`);
  if (command > 1) return invalid(`v2 header has unknown command ${command}`);
  const family = bytes[13] >> 4;
  const transport = bytes[13] & 0x0f;
  if (family > 3) return invalid(`v2 header has unknown address family ${family}`);
  if (transport > 2) return invalid(`v2 header has unknown transport ${transport}`);
  const length = 16 + ((bytes[14] << 8) | bytes[15]);
  if (length > V2_MAX_BYTES) return invalid(`v2 header of ${length} bytes is over ${V2_MAX_BYTES}`);
  const addressBytes = V2_ADDRESS_BYTES[family] ?? 0;
  if (length - 16 < addressBytes) return invalid("v2 header too short for its address family");
  if (bytes.length < length) return { status: "incomplete" };
  const facts = readTlvs(bytes.subarray(16 + addressBytes, length));
  if (facts === undefined) return invalid("v2 header has a TLV overrunning it");
  const tlvs = Object.keys(facts).length > 0 ? { tlvs: facts } : {};
  const local = {
    status: "ok",
    length,
    header: { version: 2, command: "local", ...tlvs },
  } as const;
  if (command === 0) return local;
  if (transport === 2) return invalid("v2 header is for a datagram (UDP) connection");
  // UNSPEC and UNIX sources are not network addresses: use the socket's (spec 2.2).
  if (family !== 1 && family !== 2) return local;
  const size = family === 1 ? 4 : 16;
  const a = bytes.subarray(16, 16 + 2 * size + 4);
  return {
    status: "ok",
    length,
    header: {
      version: 2,
      command: "proxy",
      source: v2Endpoint(a.subarray(0, size), a.subarray(2 * size, 2 * size + 2)),
      destination: v2Endpoint(a.subarray(size, 2 * size), a.subarray(2 * size + 2, 2 * size + 4)),
      ...tlvs,
    },
  };
}

/**
 * Looks for a PROXY header at the start of `bytes` (everything received so
 * far). `absent` means the bytes cannot start a header of an accepted
 * version; a header of a version not accepted is `invalid`.
 */
export function parseProxyHeader(bytes: Uint8Array, accept: ProxyVersions): ProxyParseResult {
  const v1 = compareSignature(bytes, V1_PREFIX);
  const v2 = compareSignature(bytes, V2_SIGNATURE);
  if (v1 === "differs" && v2 === "differs") return { status: "absent" };
  if (v1 === "prefix" || v2 === "prefix") return { status: "incomplete" };
  if (v1 === "match") {
    return accept === "v2" ? invalid("v1 header where only v2 is accepted") : parseV1(bytes);
  }
  return accept === "v1" ? invalid("v2 header where only v1 is accepted") : parseV2(bytes);
}

/** A parsed CIDR range (`10.0.0.0/8`, `::1/128`; a bare address is a /32 or /128). */
export type Cidr = [ipaddr.IPv4 | ipaddr.IPv6, number];

/** Parses one CIDR range or address; `undefined` when it is neither. */
export function parseCidr(text: string): Cidr | undefined {
  const [ipText, bitsText, ...rest] = text.trim().split("/");
  const isIPv4 = ipaddr.IPv4.isValidFourPartDecimal(ipText);
  if (rest.length > 0 || !(isIPv4 || ipaddr.IPv6.isValid(ipText))) return undefined;
  const maxBits = isIPv4 ? 32 : 128;
  const bits = bitsText === undefined
    ? maxBits
    : /^\d{1,3}$/.test(bitsText)
    ? Number(bitsText)
    : NaN;
  if (!(bits >= 0 && bits <= maxBits)) return undefined;
  return [ipaddr.parse(ipText), bits];
}

/** Whether `hostname` (an IP address; IPv4-mapped counts as IPv4) is in one of `ranges`. */
export function isTrusted(hostname: string, ranges: readonly Cidr[]): boolean {
  if (!ipaddr.isValid(hostname)) return false;
  const address = ipaddr.process(hostname);
  return ranges.some((range) => address.kind() === range[0].kind() && address.match(range));
}
