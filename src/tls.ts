/**
 * The server's side of TLS ports (`TLS_PORT`): its certificate (from files,
 * reloaded when they change, or generated at start), client certificate
 * checks, the handshake over an accepted `Deno.TcpConn` (after any PROXY
 * header), its refusals, and what it carried as record fields. The stream
 * after the handshake is tls_stream.ts's; certificate names are
 * certificate_names.ts's. Deno's own `Deno.listenTls` tells none of these
 * facts, so the handshake is `node:tls`'s.
 *
 * Refusals a client can read: plain text gets one plain line, and a
 * ClientHello that offers no TLS version or no ALPN protocol the server
 * speaks gets its fatal alert (`protocol_version`, RFC 8446 §6.2;
 * `no_application_protocol`, RFC 7301 §3.2), decided here from the first
 * record before the TLS engine starts. Deno 2.9.6's node:tls makes the
 * alert itself but loses it: on a handshake error it destroys the socket and
 * the stream under it at once, and writes the alert a microtask later, to a
 * destroyed stream; and for a TLS 1.1 ClientHello its engine (rustls) makes
 * `handshake_failure`, not `protocol_version`.
 *
 * @module
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { nextTick } from "node:process";
import nodeTls from "node:tls";
import { log } from "./log_output.ts";
import type { RejectReason } from "./admin.ts";
import { TLS_RELOAD_INTERVAL_MS, type TlsSettings } from "./config.ts";
import {
  certificateName,
  type CertificateNames,
  derFromPem,
  readCertificateNames,
  renderAltNames,
} from "./certificate_names.ts";
import {
  type ClientCertificate,
  handshakeDone,
  handshakeFacts,
  isIpAddress,
  MAX_INTERMEDIATES,
  stringOrUndefined,
  TcpDuplex,
  type TlsFacts,
  TlsStream,
} from "./tls_stream.ts";
import type { BufferPool } from "./read_buffers.ts";
import { closeQuietly, concatBytes, renderTlsBannerText, TLS_NONE, writeAll } from "./wire.ts";

/** How long a TLS handshake may take after the PROXY header (if any). */
export const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;

/** A certificate and key, as PEM text, and what the logs say of them. */
interface ServedCertificate {
  readonly certPem: string;
  readonly keyPem: string;
  readonly context: nodeTls.SecureContext;
  readonly fingerprint: string;
  /** RFC 4514; `""` for a certificate named by its SANs only. */
  readonly subject: string;
  readonly names: string;
  readonly notAfter: string;
}

/**
 * A TLS failure that closes a connection before its banner: a reason to
 * count, a detail to log, and what the client is told (the detail, unless
 * it holds more than the client should learn).
 */
export class TlsRefusal extends Error {
  /** Makes a refusal. */
  constructor(
    readonly reason: Extract<RejectReason, `tls_${string}`>,
    readonly detail: string,
    readonly told: string = detail,
  ) {
    super(detail);
  }
}

// ---------------------------------------------------------------------------
// Pure parts: facts as text, ClientHello reading and refusals
// ---------------------------------------------------------------------------

/**
 * The names a generated certificate is for: `localhost` and the loopback
 * addresses, the pod's name and IP when known, and `TLS_SERVER_NAMES`,
 * without repeats, in that order.
 */
export function generatedCertificateNames(
  pod: { name?: string; ip?: string },
  serverNames: readonly string[],
): string[] {
  const names = ["localhost", "127.0.0.1", "::1"];
  if (pod.name) names.push(pod.name);
  if (pod.ip) names.push(pod.ip);
  names.push(...serverNames);
  return [...new Set(names)];
}

/**
 * The banner's TLS lines for what a handshake carried ({@linkcode renderTlsBannerText});
 * the client certificate by its name, on one line ({@linkcode bannerName}).
 */
export function renderTlsBanner(facts: TlsFacts): string {
  const name = facts.clientCertificate?.name;
  return renderTlsBannerText({
    ...facts,
    clientCertificate: name === undefined ? undefined : bannerName(name),
  });
}

// deno-lint-ignore no-control-regex
const LINE_BREAKING = /[\x00-\x1f\x7f-\x9f\u2028\u2029]/g;

/**
 * A certificate name for a line of the banner: control characters (C0, DEL,
 * C1) and the line separators written as RFC 4514 hex pairs of their UTF-8
 * bytes, as RFC 4514 allows for any character of a value (`CN=a\nb` reads
 * `CN=a\0Ab`). A SPIFFE ID or a SAN has none that matter.
 */
export function bannerName(name: string): string {
  return name.replace(
    LINE_BREAKING,
    (char) => Array.from(new TextEncoder().encode(char), (byte) => `\\${hexByte(byte)}`).join(""),
  );
}

/**
 * The same facts as record fields (`tls=TLSv1.3 sni=… alpn=…`), for the open
 * record; with a client certificate, `client_cert` (its name: SPIFFE ID, else
 * subject), `client_cert_subject`, `client_cert_issuer` (RFC 4514) and
 * `client_cert_sha256`, always all four.
 */
export function tlsRecordFields(facts: TlsFacts): Record<string, string> {
  const fields: Record<string, string> = {
    tls: facts.protocol,
    cipher: facts.cipher,
    // As the banner says it: a name that was not sent is `none`, not an empty value.
    sni: facts.serverName ?? TLS_NONE,
    alpn: facts.alpn ?? TLS_NONE,
  };
  const certificate = facts.clientCertificate;
  if (certificate) {
    fields.client_cert = certificate.name;
    fields.client_cert_subject = certificate.subject;
    fields.client_cert_issuer = certificate.issuer;
    fields.client_cert_sha256 = certificate.fingerprint;
  }
  return fields;
}

/** The bytes {@linkcode looksLikeClientHello} needs to tell. */
export const CLIENT_HELLO_SNIFF_BYTES = 6;

/** The content type of a TLS handshake record (22), the first byte of every ClientHello. */
export const TLS_HANDSHAKE_RECORD = 0x16;

/**
 * Whether `bytes` start like a TLS ClientHello: a handshake record (22) of
 * TLS 1.0 to 1.3 whose first message is a ClientHello (1). Needs 6 bytes.
 */
export function looksLikeClientHello(bytes: Uint8Array): boolean {
  return bytes.length >= CLIENT_HELLO_SNIFF_BYTES && bytes[0] === TLS_HANDSHAKE_RECORD &&
    bytes[1] === 0x03 &&
    bytes[2] <= 0x04 && bytes[5] === 0x01;
}

/** Whether `bytes`, fewer than {@linkcode looksLikeClientHello} needs, could begin a ClientHello. */
export function mayStartClientHello(bytes: Uint8Array): boolean {
  const n = bytes.length;
  return n > 0 && n < CLIENT_HELLO_SNIFF_BYTES && bytes[0] === TLS_HANDSHAKE_RECORD &&
    (n < 2 || bytes[1] === 0x03) && (n < 3 || bytes[2] <= 0x04);
}

/** Bytes a ClientHello's first record takes: its header and its length; `undefined` until known. */
export function clientHelloRecordLength(bytes: Uint8Array): number | undefined {
  return bytes.length >= 5 ? 5 + ((bytes[3] << 8) | bytes[4]) : undefined;
}

/** The largest record a ClientHello may come in (RFC 8446 §5.1), with its header. */
const MAX_RECORD_BYTES = 5 + 16_384;

const EXTENSION = { serverName: 0, alpn: 16, supportedVersions: 43 } as const;

/**
 * The extensions of a ClientHello's first record by type, each one whose
 * bytes are all there; `undefined` when the bytes end before the list.
 */
function helloExtensions(record: Uint8Array): Map<number, Uint8Array> | undefined {
  const view = new DataView(record.buffer, record.byteOffset, record.byteLength);
  const u8 = (at: number) => at < record.length ? view.getUint8(at) : undefined;
  const u16 = (at: number) => at + 1 < record.length ? view.getUint16(at) : undefined;
  // Record header (5), handshake header (4), version (2), random (32).
  let at = 5 + 4 + 2 + 32;
  const sessionId = u8(at);
  if (sessionId === undefined) return undefined;
  at += 1 + sessionId;
  const suites = u16(at);
  if (suites === undefined) return undefined;
  at += 2 + suites;
  const compression = u8(at);
  if (compression === undefined) return undefined;
  at += 1 + compression;
  const length = u16(at);
  // No extensions at all (as TLS 1.0 and 1.1 allow) when the bytes end here.
  if (length === undefined) return at === record.length ? new Map() : undefined;
  const end = Math.min(record.length, at + 2 + length);
  const extensions = new Map<number, Uint8Array>();
  for (at += 2; at + 4 <= end;) {
    const type = u16(at)!;
    const bodyEnd = at + 4 + u16(at + 2)!;
    if (bodyEnd > end) break;
    if (!extensions.has(type)) extensions.set(type, record.subarray(at + 4, bodyEnd));
    at = bodyEnd;
  }
  return extensions;
}

/**
 * The server name (SNI) a ClientHello asks for, read from its first record;
 * `undefined` when it has none, or the bytes end before it. Only a host name
 * of letters, digits, dots, hyphens and underscores is returned.
 */
export function clientHelloServerName(record: Uint8Array): string | undefined {
  const sni = helloExtensions(record)?.get(EXTENSION.serverName);
  // List length (2), name type (1) = host_name (0), name length (2), name.
  if (sni === undefined || sni.length < 5 || sni[2] !== 0) return undefined;
  const nameLength = (sni[3] << 8) | sni[4];
  if (5 + nameLength > sni.length) return undefined;
  const name = String.fromCharCode(...sni.subarray(5, 5 + nameLength));
  return /^[A-Za-z0-9._-]{1,253}$/.test(name) ? name : undefined;
}

/** What a ClientHello offers, read from its first record. */
export interface ClientHelloOffer {
  /** TLS versions (`0x0303` is TLS 1.2): `supported_versions`, else the hello's own; no GREASE. */
  readonly versions: readonly number[];
  /** ALPN protocols, in the client's order; none when it offers none. */
  readonly alpn: readonly string[];
}

/** Whether a version or extension value is GREASE (RFC 8701): `0x?A?A`. */
const isGrease = (value: number) => (value & 0x0f0f) === 0x0a0a;

/**
 * What a ClientHello offers, when all of it is in its first record (as with
 * every client seen: a ClientHello that spans records is left to the TLS
 * engine); `undefined` otherwise.
 */
export function readClientHello(record: Uint8Array): ClientHelloOffer | undefined {
  const recordLength = clientHelloRecordLength(record);
  if (!looksLikeClientHello(record) || recordLength === undefined || record.length < 11) {
    return undefined;
  }
  const helloLength = (record[6] << 16) | (record[7] << 8) | record[8];
  if (9 + helloLength > Math.min(record.length, recordLength)) return undefined;
  const extensions = helloExtensions(record.subarray(0, 9 + helloLength));
  if (extensions === undefined) return undefined;
  const listed = extensions.get(EXTENSION.supportedVersions);
  const versions: number[] = [];
  if (listed === undefined) versions.push((record[9] << 8) | record[10]);
  else {
    for (let at = 1; at + 1 < Math.min(listed.length, 1 + listed[0]); at += 2) {
      versions.push((listed[at] << 8) | listed[at + 1]);
    }
  }
  const alpn: string[] = [];
  const protocols = extensions.get(EXTENSION.alpn);
  for (let at = 2; protocols !== undefined && at < protocols.length;) {
    const end = Math.min(protocols.length, at + 1 + protocols[at]);
    alpn.push(String.fromCharCode(...protocols.subarray(at + 1, end)));
    at = end;
  }
  return { versions: versions.filter((version) => !isGrease(version)), alpn };
}

/** Why a ClientHello is refused before the handshake, and the alert that says so. */
export interface HelloRefusal {
  /** The refusal record's detail. */
  readonly detail: string;
  /** The fatal alert's description: 70 `protocol_version`, 120 `no_application_protocol`. */
  readonly alert: number;
}

/** The TLS versions node:tls speaks in Deno 2.9.6 (rustls). */
const SPOKEN_VERSIONS = [0x0303, 0x0304];

/** A version number as people write it: `TLS 1.1`, `SSL 3.0`. */
export function tlsVersionName(version: number): string {
  if (version === 0x0300) return "SSL 3.0";
  if (version >= 0x0301 && version <= 0x0304) return `TLS 1.${version - 0x0301}`;
  return `0x${version.toString(16).padStart(4, "0")}`;
}

/**
 * Why the server refuses what a ClientHello offers, if it does: no version
 * it speaks, or ALPN protocols none of which is in `alpn` (`TLS_ALPN`; a
 * client that offers none, or `TLS_ALPN=off`, is no mismatch).
 */
export function clientHelloRefusal(
  offer: ClientHelloOffer,
  alpn: readonly string[],
): HelloRefusal | undefined {
  if (!offer.versions.some((version) => SPOKEN_VERSIONS.includes(version))) {
    const offered = offer.versions.length === 0
      ? "no TLS version"
      : `${tlsVersionName(Math.max(...offer.versions))} at most`;
    return {
      alert: 70,
      detail: `the client offered ${offered}; allowed: ${
        SPOKEN_VERSIONS.map(tlsVersionName).join(", ")
      }`,
    };
  }
  if (alpn.length > 0 && offer.alpn.length > 0 && !offer.alpn.some((p) => alpn.includes(p))) {
    return {
      alert: 120,
      detail: `no common ALPN protocol: the client offered ${offer.alpn.join(",")}, none of ` +
        `TLS_ALPN=${alpn.join(",")}`,
    };
  }
  return undefined;
}

/** A fatal alert record (in the clear, as before a ServerHello), in `hello`'s record version. */
export function alertRecord(description: number, hello: Uint8Array): Uint8Array {
  const minor = Math.min(Math.max(hello[2] ?? 3, 1), 3);
  return Uint8Array.of(0x15, 0x03, minor, 0x00, 0x02, 0x02, description);
}

/**
 * What a client that sent plain text to TLS port `port` reads: one line, for
 * a person at `nc` or `telnet`.
 */
export function plaintextAnswer(port: number): string {
  return `tcp-echo: port ${port} speaks TLS: connect with a TLS client (e.g. openssl s_client ` +
    `-connect HOST:${port}), or without TLS to a plain port\n`;
}

/** At most this many bytes of a non-TLS start are quoted in a refusal's detail. */
const QUOTED_BYTES = 32;

/** How the first bytes of a failed handshake read in a record: quoted, cut short (escaped by the record). */
export function quoteStart(bytes: Uint8Array): string {
  // As UTF-8 text, raw: the record's formatter escapes what could forge a line.
  const text = new TextDecoder().decode(bytes.subarray(0, QUOTED_BYTES));
  return `"${text}"${bytes.length > QUOTED_BYTES ? "…" : ""}`;
}

/** Every PEM certificate block in `text`. */
export function pemCertificates(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
}

function hexByte(byte: number): string {
  return byte.toString(16).padStart(2, "0").toUpperCase();
}

/** A time in certificate messages: RFC 3339, to the second. */
function timeText(time: Date): string {
  return time.toISOString().replace(/\.\d{3}Z$/, "Z");
}

// ---------------------------------------------------------------------------
// Client certificate chains (@peculiar/x509 and WebCrypto)
// ---------------------------------------------------------------------------

type X509Module = typeof import("@peculiar/x509");
let x509Module: Promise<X509Module> | undefined;

/**
 * @peculiar/x509, loaded on first use (after the Reflect polyfill it needs):
 * for a generated certificate, and for client certificates, when
 * TLS_CLIENT_CA is set. Plain handshakes never load it.
 */
function loadX509(): Promise<X509Module> {
  x509Module ??= (async () => {
    await import("reflect-metadata");
    return await import("@peculiar/x509");
  })();
  return x509Module;
}

/**
 * A certificate of a client's chain or of `TLS_CLIENT_CA`, read for the
 * chain check by @peculiar/x509 (validity, CA flag, signatures with
 * WebCrypto) and certificate_names.ts (names): node:crypto's
 * `X509Certificate` cannot name many valid ones.
 */
export class ChainCertificate {
  readonly #certificate: InstanceType<X509Module["X509Certificate"]>;
  /** Signature checks done, by issuer: the same bytes and key always give the same answer. */
  readonly #issuers = new WeakMap<ChainCertificate, boolean>();

  private constructor(
    certificate: InstanceType<X509Module["X509Certificate"]>,
    /** Its names. */
    readonly names: CertificateNames,
    /** Its SHA-256 fingerprint, colon-separated upper-case hex (as node writes it). */
    readonly fingerprint: string,
    /** Whether its basicConstraints say it is a CA. */
    readonly isCa: boolean,
  ) {
    this.#certificate = certificate;
  }

  /** Reads a DER certificate; throws when it cannot be read. */
  static async read(der: Uint8Array<ArrayBuffer>): Promise<ChainCertificate> {
    const x509 = await loadX509();
    const certificate = new x509.X509Certificate(der);
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", der));
    return new ChainCertificate(
      certificate,
      readCertificateNames(der),
      Array.from(digest, hexByte).join(":"),
      certificate.getExtension(x509.BasicConstraintsExtension)?.ca === true,
    );
  }

  /** What the banner and the logs call it ({@linkcode certificateName}). */
  get name(): string {
    return certificateName(this.names);
  }

  /** When it starts being valid. */
  get notBefore(): Date {
    return this.#certificate.notBefore;
  }

  /** When it stops being valid. */
  get notAfter(): Date {
    return this.#certificate.notAfter;
  }

  /**
   * Whether `issuer` issued it: its issuer is `issuer`'s subject (byte for
   * byte, as node's `checkIssued`), and `issuer`'s key verifies its signature.
   * Throws when the signature's algorithm cannot be verified.
   */
  async issuedBy(issuer: ChainCertificate): Promise<boolean> {
    const [name, subject] = [this.names.issuerDer, issuer.names.subjectDer];
    if (name.length !== subject.length || name.some((byte, i) => byte !== subject[i])) {
      return false;
    }
    let signed = this.#issuers.get(issuer);
    if (signed === undefined) {
      signed = await this.#certificate.verify({
        publicKey: issuer.#certificate.publicKey,
        signatureOnly: true,
      });
      this.#issuers.set(issuer, signed);
    }
    return signed;
  }
}

/**
 * Why a client's certificate chain (its certificate first, then the
 * intermediates it sent) cannot be accepted, or `undefined` when every
 * certificate on the path is in date, each intermediate is a CA, and the
 * path leads, each signed by the next, to one issued by (or being) one of
 * `authorities`. Throws when a signature cannot be verified at all.
 */
export async function clientCertificateProblem(
  chain: readonly ChainCertificate[],
  authorities: readonly ChainCertificate[],
  now: Date,
): Promise<string | undefined> {
  const [leaf] = chain;
  const trusted = async (certificate: ChainCertificate) => {
    for (const authority of authorities) {
      if (authority.fingerprint === certificate.fingerprint) return true;
      if (await certificate.issuedBy(authority)) return true;
    }
    return false;
  };
  for (const [i, certificate] of chain.slice(0, MAX_INTERMEDIATES + 1).entries()) {
    const what = `${i === 0 ? "client" : "intermediate"} certificate ${certificate.name}`;
    if (now < certificate.notBefore) {
      return `${what} is not valid before ${timeText(certificate.notBefore)}`;
    }
    if (now > certificate.notAfter) return `${what} expired on ${timeText(certificate.notAfter)}`;
    if (i > 0 && !certificate.isCa) return `${what} is not a CA certificate`;
    if (await trusted(certificate)) return undefined;
    const next = chain[i + 1];
    if (!next || !await certificate.issuedBy(next)) break;
  }
  return `client certificate ${leaf.name} (issuer ${leaf.names.issuer}) is not issued by a ` +
    "TLS_CLIENT_CA certificate";
}

/** The DER of the peer's certificate and of the intermediates it sent, as node:tls links them. */
function peerCertificateDers(socket: nodeTls.TLSSocket): Uint8Array<ArrayBuffer>[] {
  const ders: Uint8Array<ArrayBuffer>[] = [];
  let peer: nodeTls.DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  while (peer?.raw && ders.length <= MAX_INTERMEDIATES) {
    ders.push(new Uint8Array(peer.raw));
    if (peer.issuerCertificate === peer) break;
    peer = peer.issuerCertificate;
  }
  return ders;
}

// ---------------------------------------------------------------------------
// Certificates: from files (reloaded) or generated
// ---------------------------------------------------------------------------

/**
 * Thrown for certificate files that cannot be used; the message, one line,
 * names the variable, the file, what is wrong and what is allowed.
 */
export class TlsFileError extends Error {
  /** Makes the error; line breaks in what a library said become spaces. */
  constructor(message: string) {
    super(message.replace(/\s*[\r\n]+\s*/g, " "));
  }
}

const CERT_ALLOWED = "allowed: a PEM certificate file, the server's certificate first";
const KEY_ALLOWED = "allowed: the private key of TLS_CERT_FILE's certificate";

/**
 * Builds the identity from PEM text, checking that the key belongs to the
 * certificate; `paths` name the files in errors. Every failure is a
 * {@linkcode TlsFileError}.
 */
function identityFromPem(
  certPem: string,
  keyPem: string,
  paths: { cert: string; key: string },
): ServedCertificate {
  const certError = (message: string) =>
    new TlsFileError(`TLS_CERT_FILE=${JSON.stringify(paths.cert)}: ${message}; ${CERT_ALLOWED}`);
  const leafPem = pemCertificates(certPem)[0];
  if (leafPem === undefined) throw certError("no PEM certificate in it");
  let leaf: X509Certificate;
  let names: CertificateNames;
  try {
    leaf = new X509Certificate(leafPem);
    names = readCertificateNames(new Uint8Array(leaf.raw));
  } catch (error) {
    throw certError((error as Error).message);
  }
  let matches: boolean;
  try {
    matches = leaf.checkPrivateKey(createPrivateKey(keyPem));
  } catch (error) {
    throw new TlsFileError(
      `TLS_KEY_FILE=${JSON.stringify(paths.key)}: not a PEM private key (${
        (error as Error).message
      }); ${KEY_ALLOWED}`,
    );
  }
  if (!matches) {
    throw new TlsFileError(
      `TLS_KEY_FILE=${
        JSON.stringify(paths.key)
      }: the key does not belong to TLS_CERT_FILE; ${KEY_ALLOWED}`,
    );
  }
  let context: nodeTls.SecureContext;
  try {
    context = nodeTls.createSecureContext({ cert: certPem, key: keyPem });
  } catch (error) {
    throw certError(
      `the TLS library refuses it with TLS_KEY_FILE=${JSON.stringify(paths.key)}: ${
        (error as Error).message
      }`,
    );
  }
  return {
    certPem,
    keyPem,
    context,
    fingerprint: leaf.fingerprint256,
    subject: names.subject,
    names: renderAltNames(names.altNames),
    notAfter: leaf.validTo,
  };
}

/** Generates a self-signed ECDSA P-256 certificate for `names`, valid for a year. */
async function generateIdentity(names: readonly string[]): Promise<ServedCertificate> {
  const x509 = await loadX509();
  const algorithm = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const keys = await crypto.subtle.generateKey(algorithm, true, ["sign", "verify"]);
  const now = Date.now();
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Array.from(crypto.getRandomValues(new Uint8Array(8)), hexByte).join(""),
    name: `CN=${names.find((name) => !isIpAddress(name) && name !== "localhost") ?? "localhost"}`,
    notBefore: new Date(now - 3_600_000),
    notAfter: new Date(now + 365 * 86_400_000),
    keys,
    signingAlgorithm: algorithm,
    extensions: [
      new x509.SubjectAlternativeNameExtension(
        names.map((name) => ({
          type: isIpAddress(name) ? "ip" as const : "dns" as const,
          value: name,
        })),
      ),
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
    ],
  });
  return identityFromPem(certificate.toString("pem"), await privateKeyPem(keys.privateKey), {
    cert: "(generated)",
    key: "(generated)",
  });
}

/** A private key as PKCS #8 PEM, as `TLS_KEY_FILE` holds it. */
export async function privateKeyPem(key: CryptoKey): Promise<string> {
  const der = new Uint8Array(await crypto.subtle.exportKey("pkcs8", key));
  const base64 = btoa(String.fromCharCode(...der)).match(/.{1,64}/g)!.join("\n");
  return `-----BEGIN PRIVATE KEY-----\n${base64}\n-----END PRIVATE KEY-----\n`;
}

/** Options of {@linkcode TlsCredentials.load}. */
export interface LoadOptions {
  /** The pod's name and IP (the banner's), for a generated certificate's names. */
  readonly pod: { name?: string; ip?: string };
  /** How often the files are read again; default {@linkcode TLS_RELOAD_INTERVAL_MS}. */
  readonly reloadIntervalMs?: number;
}

/** What a client whose certificate could not be read at all is told (the log has why). */
const UNREADABLE_CLIENT_CERTIFICATE = "client certificate could not be read";
/**
 * Client certificates kept read (about 9 KiB each), so that a client that
 * connects again is not parsed and verified again: reading one with
 * @peculiar/x509 and checking its signature took about 1.3 ms.
 */
const KEPT_CLIENT_CERTIFICATES = 128;
/** A one-to-one decoding of bytes to text (each byte one character), for map keys. */
const DER_AS_TEXT = new TextDecoder("windows-1252");

/**
 * The server's certificate, key and client CAs. Files are read again every
 * few seconds; a changed pair that is valid replaces the old one for new
 * handshakes (open connections keep theirs); an invalid one is logged and
 * the old pair stays.
 */
export class TlsCredentials {
  #identity: ServedCertificate;
  readonly #settings: TlsSettings;
  readonly #clientAuthorities: readonly ChainCertificate[];
  /** Client certificates read lately, by their DER (as text), oldest first. */
  readonly #recentClientCertificates = new Map<string, ChainCertificate>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** What was last reported about the files; each problem is reported once, not every round. */
  #problem = "";

  private constructor(
    identity: ServedCertificate,
    settings: TlsSettings,
    clientAuthorities: readonly ChainCertificate[],
  ) {
    this.#identity = identity;
    this.#settings = settings;
    this.#clientAuthorities = clientAuthorities;
  }

  /**
   * Reads the files (or generates a certificate) and starts watching the
   * files. Throws {@linkcode TlsFileError} when they cannot be used.
   */
  static async load(settings: TlsSettings, options: LoadOptions): Promise<TlsCredentials> {
    let identity: ServedCertificate;
    if (settings.certFile !== undefined && settings.keyFile !== undefined) {
      const [certPem, keyPem] = await readPair(settings);
      identity = identityFromPem(certPem, keyPem, filePaths(settings));
    } else {
      identity = await generateIdentity(
        generatedCertificateNames(options.pod, settings.serverNames),
      );
    }
    const authorities = settings.clientCaFile === undefined
      ? []
      : await readAuthorities(settings.clientCaFile);
    const credentials = new TlsCredentials(identity, settings, authorities);
    log.info("TLS certificate {subject}", {
      subject: identity.subject,
      source: settings.certFile ?? "generated",
      sha256: identity.fingerprint,
      names: identity.names,
      not_after: identity.notAfter,
    });
    if (settings.certFile !== undefined) {
      credentials.#watch(options.reloadIntervalMs ?? TLS_RELOAD_INTERVAL_MS);
    }
    return credentials;
  }

  /** The current certificate's SHA-256 fingerprint. */
  get fingerprint(): string {
    return this.#identity.fingerprint;
  }

  /** The ALPN protocols accepted (`TLS_ALPN`). */
  get alpn(): readonly string[] {
    return this.#settings.alpn;
  }

  /** Whether client certificates are asked for. */
  get requestsClientCertificate(): boolean {
    return this.#clientAuthorities.length > 0;
  }

  /** Stops watching the files. */
  close(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** The options of a server-side `TLSSocket` for the next handshake. */
  socketOptions(): nodeTls.TLSSocketOptions {
    const requestCert = this.requestsClientCertificate;
    return {
      isServer: true,
      secureContext: this.#identity.context,
      ALPNProtocols: this.#settings.alpn.length > 0 ? [...this.#settings.alpn] : undefined,
      requestCert,
      // Deno's node:tls does not verify client certificates itself: verifyClient does.
      rejectUnauthorized: false,
    };
  }

  /**
   * Checks the client certificate a handshake carried; throws
   * {@linkcode TlsRefusal} when it is missing but required, cannot be
   * trusted, or cannot be read at all (then the client is told only that).
   */
  async verifyClient(socket: nodeTls.TLSSocket): Promise<ClientCertificate | undefined> {
    if (!this.requestsClientCertificate) return undefined;
    let chain: ChainCertificate[];
    let problem: string | undefined;
    try {
      chain = await Promise.all(
        peerCertificateDers(socket).map((der) => this.#readClient(der)),
      );
      if (chain.length === 0) {
        if (this.#settings.clientAuth !== "require") return undefined;
        problem = "no client certificate (TLS_CLIENT_AUTH=require)";
      } else problem = await clientCertificateProblem(chain, this.#clientAuthorities, new Date());
    } catch (error) {
      throw new TlsRefusal(
        "tls_client_certificate",
        `${UNREADABLE_CLIENT_CERTIFICATE}: ${(error as Error).message}`,
        UNREADABLE_CLIENT_CERTIFICATE,
      );
    }
    if (problem !== undefined) throw new TlsRefusal("tls_client_certificate", problem);
    const [leaf] = chain;
    return {
      name: leaf.name,
      subject: leaf.names.subject,
      issuer: leaf.names.issuer,
      fingerprint: leaf.fingerprint,
    };
  }

  /** A client's certificate, read again only when it has not been seen lately. */
  async #readClient(der: Uint8Array<ArrayBuffer>): Promise<ChainCertificate> {
    const recent = this.#recentClientCertificates;
    const key = DER_AS_TEXT.decode(der);
    const known = recent.get(key);
    recent.delete(key);
    const certificate = known ?? await ChainCertificate.read(der);
    recent.set(key, certificate);
    if (recent.size > KEPT_CLIENT_CERTIFICATES) recent.delete(recent.keys().next().value!);
    return certificate;
  }

  #report(problem: string): void {
    if (problem === this.#problem) return;
    this.#problem = problem;
    log.warn("TLS files changed but cannot be used, keeping the loaded certificate: {detail}", {
      detail: problem,
    });
  }

  #watch(intervalMs: number): void {
    this.#timer = setTimeout(async () => {
      await this.#reloadIfChanged();
      if (this.#timer !== undefined) this.#watch(intervalMs);
    }, intervalMs);
  }

  async #reloadIfChanged(): Promise<void> {
    let pair: [string, string];
    try {
      pair = await readPair(this.#settings);
    } catch (error) {
      this.#report(`unreadable: ${(error as Error).message}`);
      return;
    }
    const [certPem, keyPem] = pair;
    if (certPem === this.#identity.certPem && keyPem === this.#identity.keyPem) {
      this.#problem = "";
      return;
    }
    // cert-manager and the kubelet may write the two files one at a time: a mismatched
    // pair is reported once and looked at again on the next round.
    try {
      this.#identity = identityFromPem(certPem, keyPem, filePaths(this.#settings));
    } catch (error) {
      this.#report((error as Error).message);
      return;
    }
    this.#problem = "";
    log.info("TLS certificate reloaded: {subject}", {
      subject: this.#identity.subject,
      sha256: this.#identity.fingerprint,
      names: this.#identity.names,
      not_after: this.#identity.notAfter,
    });
  }
}

function filePaths(settings: TlsSettings): { cert: string; key: string } {
  return { cert: settings.certFile!, key: settings.keyFile! };
}

async function readPair(settings: TlsSettings): Promise<[string, string]> {
  const read = async (name: string, path: string) => {
    try {
      return await Deno.readTextFile(path);
    } catch (error) {
      throw new TlsFileError(
        `${name}=${JSON.stringify(path)}: ${
          (error as Error).message
        }; allowed: a readable PEM file`,
      );
    }
  };
  return await Promise.all([
    read("TLS_CERT_FILE", settings.certFile!),
    read("TLS_KEY_FILE", settings.keyFile!),
  ]);
}

async function readAuthorities(path: string): Promise<ChainCertificate[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw new TlsFileError(
      `TLS_CLIENT_CA=${JSON.stringify(path)}: ${
        (error as Error).message
      }; allowed: a readable PEM file`,
    );
  }
  const allowed = "allowed: a PEM file of CA certificates";
  const blocks = pemCertificates(text);
  if (blocks.length === 0) {
    throw new TlsFileError(
      `TLS_CLIENT_CA=${JSON.stringify(path)}: no PEM certificate in it; ${allowed}`,
    );
  }
  const authorities: ChainCertificate[] = [];
  for (const [i, block] of blocks.entries()) {
    try {
      authorities.push(await ChainCertificate.read(derFromPem(block)));
    } catch (error) {
      throw new TlsFileError(
        `TLS_CLIENT_CA=${JSON.stringify(path)}: certificate ${i + 1}: ${
          (error as Error).message
        }; ${allowed}`,
      );
    }
  }
  return authorities;
}

// ---------------------------------------------------------------------------
// The handshake
// ---------------------------------------------------------------------------

const NO_BYTES = new Uint8Array(0);

/** What a race against a {@linkcode HandshakeDeadline} resolves with when the deadline wins. */
const TIMED_OUT = Symbol("timed out");

/** The one deadline of a handshake, from its first byte to its end. */
class HandshakeDeadline {
  readonly reached: Promise<typeof TIMED_OUT>;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(readonly ms: number) {
    this.reached = new Promise((resolve) => this.#timer = setTimeout(resolve, ms, TIMED_OUT));
  }

  /** `promise`'s outcome; a {@linkcode TlsRefusal} when the deadline comes first. */
  async race<T>(promise: Promise<T>): Promise<T> {
    const outcome = await Promise.race([promise, this.reached]);
    if (outcome === TIMED_OUT) {
      throw new TlsRefusal("tls_handshake_timeout", `no TLS handshake in ${this.ms} ms`);
    }
    return outcome as T;
  }

  cancel(): void {
    clearTimeout(this.#timer);
  }
}

/**
 * Runs the server side of a TLS handshake on `conn`, whose first bytes may
 * already be in `head`. Resolves with the stream to echo on; throws
 * {@linkcode TlsRefusal} (the connection then closed) when the client sent
 * plain text, offered what the server does not speak, or the handshake
 * fails, times out, or the client certificate cannot be accepted. The
 * client is told why whenever TLS lets it be: a plain line, a fatal alert,
 * or a line inside TLS.
 */
export async function acceptTls(
  conn: Deno.TcpConn,
  head: Uint8Array,
  credentials: TlsCredentials,
  timeoutMs: number,
  pool?: BufferPool,
): Promise<TlsStream> {
  const deadline = new HandshakeDeadline(timeoutMs);
  try {
    const start = await readFirstRecord(conn, head, deadline);
    await refuseFromFirstRecord(conn, start, credentials);
    return await handshake(conn, start, credentials, deadline, pool);
  } catch (error) {
    closeQuietly(conn);
    if (error instanceof TlsRefusal) throw error;
    throw new TlsRefusal("tls_handshake_failed", (error as Error).message);
  } finally {
    deadline.cancel();
  }
}

/**
 * Reads until the bytes hold a ClientHello's first record (16 KiB at most),
 * or show they are none (not a handshake record); the engine is fed them
 * all. Throws {@linkcode TlsRefusal} when the client ends first, or the
 * deadline passes.
 */
async function readFirstRecord(
  conn: Deno.TcpConn,
  head: Uint8Array,
  deadline: HandshakeDeadline,
): Promise<Uint8Array> {
  let bytes = head;
  while (true) {
    if (bytes.length > 0 && bytes[0] !== TLS_HANDSHAKE_RECORD) return bytes;
    if (bytes.length >= 6 && !looksLikeClientHello(bytes)) return bytes;
    const wanted = Math.min(clientHelloRecordLength(bytes) ?? 5, MAX_RECORD_BYTES);
    if (bytes.length >= wanted) return bytes;
    const buffer = new Uint8Array(Math.max(wanted - bytes.length, 1_024));
    const n = await deadline.race(conn.read(buffer));
    if (n === null) {
      throw new TlsRefusal("tls_handshake_failed", "the connection ended during the handshake");
    }
    bytes = concatBytes([bytes, buffer.subarray(0, n)]);
  }
}

/**
 * Refuses, before the TLS engine, a client that sent plain text (one plain
 * line) or a ClientHello offering no version or ALPN protocol the server
 * speaks (the fatal alert); throws {@linkcode TlsRefusal} then.
 */
async function refuseFromFirstRecord(
  conn: Deno.TcpConn,
  start: Uint8Array,
  credentials: TlsCredentials,
): Promise<void> {
  if (start[0] !== TLS_HANDSHAKE_RECORD) {
    await sayAndClose(conn, new TextEncoder().encode(plaintextAnswer(conn.localAddr.port)));
    throw new TlsRefusal(
      "tls_plaintext",
      `not TLS: the client sent plain text ${
        quoteStart(start)
      }; connect with TLS, or to a TCP_PORT`,
    );
  }
  const offer = readClientHello(start);
  const refusal = offer && clientHelloRefusal(offer, credentials.alpn);
  if (refusal === undefined) return;
  await sayAndClose(conn, alertRecord(refusal.alert, start));
  throw new TlsRefusal("tls_handshake_failed", refusal.detail);
}

/** The handshake itself, then the client certificate check; see {@linkcode acceptTls}. */
async function handshake(
  conn: Deno.TcpConn,
  start: Uint8Array,
  credentials: TlsCredentials,
  deadline: HandshakeDeadline,
  pool: BufferPool | undefined,
): Promise<TlsStream> {
  const raw = new TcpDuplex(conn, NO_BYTES, { pool });
  const socket = new nodeTls.TLSSocket(raw, credentials.socketOptions());
  // Deno 2.9.6's TLSSocket takes in what its stream holds before it starts, and when those
  // bytes fail the handshake, its start throws (uncaught: the process would end). So the
  // first record goes in after the start, which is a tick away (unless the client has gone).
  nextTick(() => {
    if (!raw.destroyed && !raw.readableEnded) raw.unshift(start);
  });
  try {
    await deadline.race(
      handshakeDone(socket, "secure", "the connection ended during the handshake"),
    );
    let clientCertificate: ClientCertificate | undefined;
    try {
      clientCertificate = await credentials.verifyClient(socket);
    } catch (error) {
      // Said to the client too, inside TLS: a refused client sees why, not just a close.
      await sayRefused(socket, (error as TlsRefusal).told);
      throw error;
    }
    const serverName = stringOrUndefined((socket as { servername?: unknown }).servername);
    return new TlsStream(socket, conn, raw, handshakeFacts(socket, serverName, clientCertificate));
  } catch (error) {
    socket.destroy();
    if (error instanceof TlsRefusal) throw error;
    throw new TlsRefusal("tls_handshake_failed", handshakeFailure(error as Error, credentials));
  }
}

/** A failed handshake's detail: the TLS library's words, with what the server offered. */
function handshakeFailure(error: Error, credentials: TlsCredentials): string {
  if (/known protocol/.test(error.message)) {
    return `no common ALPN protocol: the client offered none of TLS_ALPN=${
      credentials.alpn.join(",")
    }`;
  }
  return error.message;
}

/** How long a refused client is given to take what says why. */
const REFUSAL_WRITE_MS = 1_000;

/** Writes `tcp-echo: refused: TOLD` to a client whose handshake finished, then ends. */
function sayRefused(socket: nodeTls.TLSSocket, told: string): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, REFUSAL_WRITE_MS);
    socket.end(`tcp-echo: refused: ${told}\n`, () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * Sends a refused client its last bytes (a line, an alert) and a FIN, then
 * reads until it closes (1 s at most) before closing: closed with unread
 * bytes, the connection would end in a reset, which can lose what was said.
 */
async function sayAndClose(conn: Deno.TcpConn, bytes: Uint8Array): Promise<void> {
  const deadline = new HandshakeDeadline(REFUSAL_WRITE_MS);
  try {
    await deadline.race(writeAll(conn, bytes));
    await conn.closeWrite();
    const sink = new Uint8Array(1_024);
    while (await deadline.race(conn.read(sink)) !== null) {
      // What the client still sends is not looked at.
    }
  } catch {
    // The client is gone, or took too long: the close follows.
  } finally {
    deadline.cancel();
    closeQuietly(conn);
  }
}
