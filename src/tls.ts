/**
 * The server's side of TLS ports (`TLS_PORT`): its certificate (from files,
 * reloaded when they change, or generated at start), client certificate
 * checks, the handshake over an accepted `Deno.TcpConn` (after any PROXY
 * header), its refusals, and what it carried as record fields. The stream
 * after the handshake is tls_stream.ts's. Deno's own `Deno.listenTls` tells
 * none of these facts, so the handshake is `node:tls`'s.
 *
 * @module
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import nodeTls from "node:tls";
import { log } from "./log_output.ts";
import type { RejectReason } from "./admin.ts";
import type { TlsSettings } from "./config.ts";
import {
  type ClientCertificate,
  handshakeFacts,
  isIpAddress,
  MAX_INTERMEDIATES,
  oneLineName,
  peerChain,
  stringOrUndefined,
  TcpDuplex,
  type TlsFacts,
  TlsStream,
} from "./tls_stream.ts";
import { closeQuietly, concatBytes, renderTlsBannerText } from "./wire.ts";

/** How long a TLS handshake may take after the PROXY header (if any). */
export const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;
/** How often certificate files are read again to see whether they changed. */
export const TLS_RELOAD_INTERVAL_MS = 5_000;

/** A certificate and key, as PEM text, and what the logs say of them. */
interface ServerIdentity {
  readonly certPem: string;
  readonly keyPem: string;
  readonly context: nodeTls.SecureContext;
  readonly fingerprint: string;
  readonly subject: string;
  readonly names: string;
  readonly notAfter: string;
}

/** A TLS failure that closes a connection before its banner: a reason to count and a detail to log. */
export class TlsRefusal extends Error {
  /** Makes a refusal. */
  constructor(readonly reason: Extract<RejectReason, `tls_${string}`>, readonly detail: string) {
    super(detail);
  }
}

// ---------------------------------------------------------------------------
// Pure parts: certificate names, facts as text, ClientHello recognition
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

/** The banner's TLS lines for what a handshake carried ({@linkcode renderTlsBannerText}). */
export function renderTlsBanner(facts: TlsFacts): string {
  return renderTlsBannerText({ ...facts, clientCertificate: facts.clientCertificate?.subject });
}

/** The same facts as record fields (`tls=TLSv1.3 sni=… alpn=…`), for the open record. */
export function tlsRecordFields(facts: TlsFacts): Record<string, string> {
  const fields: Record<string, string> = {
    tls: facts.protocol,
    cipher: facts.cipher,
    sni: facts.serverName ?? "",
    alpn: facts.alpn ?? "",
  };
  if (facts.clientCertificate) {
    fields.client_cert = facts.clientCertificate.subject;
    fields.client_cert_sha256 = facts.clientCertificate.fingerprint;
  }
  return fields;
}

/**
 * Whether `bytes` start like a TLS ClientHello: a handshake record (22) of
 * TLS 1.0 to 1.3 whose first message is a ClientHello (1). Needs 6 bytes.
 */
export function looksLikeClientHello(bytes: Uint8Array): boolean {
  return bytes.length >= 6 && bytes[0] === 0x16 && bytes[1] === 0x03 && bytes[2] <= 0x04 &&
    bytes[5] === 0x01;
}

/** Bytes a ClientHello's first record takes: its header and its length; `undefined` until known. */
export function clientHelloRecordLength(bytes: Uint8Array): number | undefined {
  return bytes.length >= 5 ? 5 + ((bytes[3] << 8) | bytes[4]) : undefined;
}

/**
 * The server name (SNI) a ClientHello asks for, read from its first record;
 * `undefined` when it has none, or the bytes end before it. Only a host name
 * of letters, digits, dots, hyphens and underscores is returned.
 */
export function clientHelloServerName(record: Uint8Array): string | undefined {
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
  const extensions = u16(at);
  if (extensions === undefined) return undefined;
  const end = Math.min(record.length, at + 2 + extensions);
  at += 2;
  while (at + 4 <= end) {
    const type = u16(at)!;
    const length = u16(at + 2)!;
    if (type === 0) {
      // server_name: list length (2), name type (1) = host_name (0), name length (2), name.
      const nameLength = u16(at + 7);
      if (u8(at + 6) !== 0 || nameLength === undefined || at + 9 + nameLength > end) {
        return undefined;
      }
      const name = String.fromCharCode(...record.subarray(at + 9, at + 9 + nameLength));
      return /^[A-Za-z0-9._-]{1,253}$/.test(name) ? name : undefined;
    }
    at += 4 + length;
  }
  return undefined;
}

/** At most this many bytes of a non-TLS start are quoted in a refusal's detail. */
const QUOTED_BYTES = 32;

/** How the first bytes of a failed handshake read in a record: quoted, escaped, cut short. */
export function quoteStart(bytes: Uint8Array): string {
  const text = String.fromCharCode(...bytes.subarray(0, QUOTED_BYTES));
  return JSON.stringify(text) + (bytes.length > QUOTED_BYTES ? "…" : "");
}

/**
 * Why a client's certificate chain (its certificate first, then the
 * intermediates it sent) cannot be accepted, or `undefined` when every
 * certificate on the path is in date and the path leads, each signed by the
 * next, to one issued by (or being) one of `authorities`.
 */
export function clientCertificateProblem(
  chain: readonly X509Certificate[],
  authorities: readonly X509Certificate[],
  now: Date,
): string | undefined {
  const [leaf] = chain;
  const leafName = oneLineName(leaf.subject);
  const trusted = (certificate: X509Certificate) =>
    authorities.some((authority) =>
      authority.fingerprint256 === certificate.fingerprint256 ||
      (certificate.checkIssued(authority) && certificate.verify(authority.publicKey))
    );
  for (const [i, certificate] of chain.slice(0, MAX_INTERMEDIATES + 1).entries()) {
    const what = i === 0 ? "client certificate" : `intermediate certificate`;
    const subject = oneLineName(certificate.subject);
    if (now < new Date(certificate.validFrom)) {
      return `${what} ${subject} is not valid before ${certificate.validFrom}`;
    }
    if (now > new Date(certificate.validTo)) {
      return `${what} ${subject} expired on ${certificate.validTo}`;
    }
    if (i > 0 && !certificate.ca) return `${what} ${subject} is not a CA certificate`;
    if (trusted(certificate)) return undefined;
    const next = chain[i + 1];
    if (!next || !(certificate.checkIssued(next) && certificate.verify(next.publicKey))) break;
  }
  return `client certificate ${leafName} (issuer ${
    oneLineName(leaf.issuer)
  }) is not issued by a TLS_CLIENT_CA certificate`;
}

/** Every PEM certificate block in `text`. */
export function pemCertificates(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
}

// ---------------------------------------------------------------------------
// Certificates: from files (reloaded) or generated
// ---------------------------------------------------------------------------

/** Thrown for certificate files that cannot be used; the message names the variable. */
export class TlsFileError extends Error {}

const CERT_ALLOWED = "allowed: a PEM certificate file, the server's certificate first";
const KEY_ALLOWED = "allowed: the private key of TLS_CERT_FILE's certificate";

/**
 * Builds the identity from PEM text, checking that the key belongs to the
 * certificate; `paths` name the files in errors.
 */
function identityFromPem(
  certPem: string,
  keyPem: string,
  paths: { cert: string; key: string },
): ServerIdentity {
  const leafPem = pemCertificates(certPem)[0];
  if (leafPem === undefined) {
    throw new TlsFileError(
      `TLS_CERT_FILE=${paths.cert}: no PEM certificate in it; ${CERT_ALLOWED}`,
    );
  }
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(leafPem);
  } catch (error) {
    throw new TlsFileError(
      `TLS_CERT_FILE=${paths.cert}: ${(error as Error).message}; ${CERT_ALLOWED}`,
    );
  }
  let matches: boolean;
  try {
    matches = leaf.checkPrivateKey(createPrivateKey(keyPem));
  } catch (error) {
    throw new TlsFileError(
      `TLS_KEY_FILE=${paths.key}: not a PEM private key (${
        (error as Error).message
      }); ${KEY_ALLOWED}`,
    );
  }
  if (!matches) {
    throw new TlsFileError(
      `TLS_KEY_FILE=${paths.key}: the key does not belong to TLS_CERT_FILE; ${KEY_ALLOWED}`,
    );
  }
  return {
    certPem,
    keyPem,
    context: nodeTls.createSecureContext({ cert: certPem, key: keyPem }),
    fingerprint: leaf.fingerprint256,
    subject: oneLineName(leaf.subject),
    names: leaf.subjectAltName ?? "",
    notAfter: leaf.validTo,
  };
}

/** Generates a self-signed ECDSA P-256 certificate for `names`, valid for a year. */
async function generateIdentity(names: readonly string[]): Promise<ServerIdentity> {
  // Loaded only when a certificate is generated; @peculiar/x509 needs the Reflect polyfill.
  await import("reflect-metadata");
  const x509 = await import("@peculiar/x509");
  const algorithm = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const keys = await crypto.subtle.generateKey(algorithm, true, ["sign", "verify"]);
  const now = Date.now();
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Array.from(crypto.getRandomValues(new Uint8Array(8)), hex).join(""),
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

function hex(byte: number): string {
  return byte.toString(16).padStart(2, "0");
}

/** Options of {@linkcode TlsCredentials.load}. */
export interface LoadOptions {
  /** The pod's name and IP (the banner's), for a generated certificate's names. */
  readonly pod: { name?: string; ip?: string };
  /** How often the files are read again; default {@linkcode TLS_RELOAD_INTERVAL_MS}. */
  readonly reloadIntervalMs?: number;
}

/**
 * The server's certificate, key and client CAs. Files are read again every
 * few seconds; a changed pair that is valid replaces the old one for new
 * handshakes (open connections keep theirs); an invalid one is logged and
 * the old pair stays.
 */
export class TlsCredentials {
  #identity: ServerIdentity;
  readonly #settings: TlsSettings;
  readonly #clientAuthorities: readonly X509Certificate[];
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** What was last reported about the files; each problem is reported once, not every round. */
  #problem = "";

  private constructor(
    identity: ServerIdentity,
    settings: TlsSettings,
    clientAuthorities: readonly X509Certificate[],
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
    let identity: ServerIdentity;
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
   * {@linkcode TlsRefusal} when it is missing but required, or cannot be trusted.
   */
  verifyClient(socket: nodeTls.TLSSocket): ClientCertificate | undefined {
    if (!this.requestsClientCertificate) return undefined;
    const chain = peerChain(socket);
    if (chain.length === 0) {
      if (this.#settings.clientAuth === "require") {
        throw new TlsRefusal(
          "tls_client_certificate",
          "no client certificate (TLS_CLIENT_AUTH=require)",
        );
      }
      return undefined;
    }
    const certificate = chain[0];
    const problem = clientCertificateProblem(chain, this.#clientAuthorities, new Date());
    if (problem !== undefined) throw new TlsRefusal("tls_client_certificate", problem);
    return {
      subject: oneLineName(certificate.subject),
      issuer: oneLineName(certificate.issuer),
      fingerprint: certificate.fingerprint256,
    };
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
        `${name}=${path}: ${(error as Error).message}; allowed: a readable PEM file`,
      );
    }
  };
  return await Promise.all([
    read("TLS_CERT_FILE", settings.certFile!),
    read("TLS_KEY_FILE", settings.keyFile!),
  ]);
}

async function readAuthorities(path: string): Promise<X509Certificate[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw new TlsFileError(
      `TLS_CLIENT_CA=${path}: ${(error as Error).message}; allowed: a readable PEM file`,
    );
  }
  const allowed = "allowed: a PEM file of CA certificates";
  const blocks = pemCertificates(text);
  if (blocks.length === 0) {
    throw new TlsFileError(`TLS_CLIENT_CA=${path}: no PEM certificate in it; ${allowed}`);
  }
  try {
    return blocks.map((block) => new X509Certificate(block));
  } catch (error) {
    throw new TlsFileError(`TLS_CLIENT_CA=${path}: ${(error as Error).message}; ${allowed}`);
  }
}

// ---------------------------------------------------------------------------
// The handshake
// ---------------------------------------------------------------------------

/**
 * Runs the server side of a TLS handshake on `conn`, whose first bytes may
 * already be in `head`. Resolves with the stream to echo on; throws
 * {@linkcode TlsRefusal} (the connection then closed) when the handshake
 * fails, times out, or the client certificate cannot be accepted.
 */
export async function acceptTls(
  conn: Deno.TcpConn,
  head: Uint8Array,
  credentials: TlsCredentials,
  timeoutMs: number,
): Promise<TlsStream> {
  const start = new FirstBytes(head);
  const raw = new TcpDuplex(conn, head, (chunk) => start.add(chunk));
  const socket = new nodeTls.TLSSocket(raw, credentials.socketOptions());
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new TlsRefusal("tls_handshake_timeout", `no TLS handshake in ${timeoutMs} ms`),
          ),
        timeoutMs,
      );
      socket.once("secure", resolve);
      socket.once("error", reject);
      const ended = () => reject(new Error("the connection ended during the handshake"));
      socket.once("end", ended);
      socket.once("close", ended);
    });
    let clientCertificate: ClientCertificate | undefined;
    try {
      clientCertificate = credentials.verifyClient(socket);
    } catch (error) {
      // Said to the client too, inside TLS: a refused client sees why, not just a close.
      await sayRefused(socket, (error as Error).message);
      throw error;
    }
    const serverName = stringOrUndefined((socket as { servername?: unknown }).servername);
    return new TlsStream(socket, conn, raw, handshakeFacts(socket, serverName, clientCertificate));
  } catch (error) {
    socket.destroy();
    closeQuietly(conn);
    if (error instanceof TlsRefusal) throw error;
    const bytes = start.bytes();
    if (bytes.length > 0 && bytes[0] !== 0x16) {
      throw new TlsRefusal(
        "tls_plaintext",
        `not TLS: the client sent plain text ${
          quoteStart(bytes)
        }; connect with TLS, or to a TCP_PORT`,
      );
    }
    throw new TlsRefusal("tls_handshake_failed", handshakeFailure(error as Error, credentials));
  } finally {
    clearTimeout(timer);
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

/** How long a refused client is given to take the line that says why. */
const REFUSAL_WRITE_MS = 1_000;

/** Writes `tcp-echo: refused: DETAIL` to a client whose handshake finished, then ends. */
function sayRefused(socket: nodeTls.TLSSocket, detail: string): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, REFUSAL_WRITE_MS);
    socket.end(`tcp-echo: refused: ${detail}\n`, () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Keeps the first bytes a connection sent, to say what it was when a handshake fails. */
class FirstBytes {
  #bytes: Uint8Array;
  constructor(head: Uint8Array) {
    this.#bytes = head.slice(0, QUOTED_BYTES + 1);
  }
  add(chunk: Uint8Array): void {
    if (this.#bytes.length > QUOTED_BYTES) return;
    this.#bytes = concatBytes([this.#bytes, chunk]).slice(0, QUOTED_BYTES + 1);
  }
  bytes(): Uint8Array {
    return this.#bytes;
  }
}
