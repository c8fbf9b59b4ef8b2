/**
 * A TLS connection as both the server and the client use it: a node stream
 * over a Deno TCP connection ({@linkcode TcpDuplex}), the stream the echo loop
 * and the client read and write ({@linkcode TlsStream}), what a completed
 * handshake carried ({@linkcode TlsFacts}), and the client side of the
 * handshake ({@linkcode connectTls}). No logging, no certificates of its own,
 * no server state: the client program loads it without the server's modules.
 *
 * @module
 */
import { X509Certificate } from "node:crypto";
import { Duplex } from "node:stream";
import nodeTls from "node:tls";
import { readCertificateNames } from "./certificate_names.ts";
import { type BufferPool, ReadBuffer } from "./read_buffers.ts";
import { closeQuietly, writeAll } from "./wire.ts";

/** Facts about a verified client certificate. */
export interface ClientCertificate {
  /** What the banner and the logs call it: its SPIFFE ID, else its subject (certificate_names.ts). */
  readonly name: string;
  /** Its subject, RFC 4514 (`CN=client,O=test`); `""` when it is empty. */
  readonly subject: string;
  /** Its issuer, in the same form. */
  readonly issuer: string;
  /** Its SHA-256 fingerprint, colon-separated hex. */
  readonly fingerprint: string;
}

/** What a completed handshake carried. */
export interface TlsFacts {
  /** Protocol version, as `TLSv1.3`. */
  readonly protocol: string;
  /** Cipher suite, by its standard name. */
  readonly cipher: string;
  /** The SNI the client sent, if any. */
  readonly serverName: string | undefined;
  /** The protocol ALPN settled on, if any. */
  readonly alpn: string | undefined;
  /** The client's certificate, when one was asked for and given. */
  readonly clientCertificate: ClientCertificate | undefined;
}

const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

/** Whether `name` is an IP address (then it goes in an IP SAN, not a DNS one). */
export function isIpAddress(name: string): boolean {
  return IPV4.test(name) || name.includes(":");
}

/** Intermediate certificates a chain may have between its first certificate and a CA. */
export const MAX_INTERMEDIATES = 4;

/**
 * The most bytes under TLS read at once: a full record and its header. Fed
 * larger pieces, Deno 2.9.6's TLS engine keeps more memory per connection
 * after a burst (measured: about 10 KiB more with 64 KiB reads).
 */
export const TLS_READ_BYTES: number = 16_384 + 256;
/**
 * Decrypted bytes queued for the echo loop before reading pauses; smaller
 * queues left the TLS engine less memory per connection after a burst.
 */
const QUEUE_HIGH_BYTES = 16_384;

/**
 * A node stream over a Deno TCP connection, starting with `head` (bytes
 * already read, after a PROXY header). Reads only while the TLS engine asks,
 * into a {@linkcode ReadBuffer} that borrows from `pool` (the server's, of
 * {@linkcode TLS_READ_BYTES} buffers) for bursts; `onRead` sees each chunk read.
 */
export class TcpDuplex extends Duplex {
  readonly #conn: Deno.TcpConn;
  readonly #onRead: ((chunk: Uint8Array) => void) | undefined;
  #first: Uint8Array | undefined;
  #pumping = false;
  /** Reading is held back: the decrypted bytes wait for the echo loop. */
  #held = false;
  /** The TLS engine asked for more while reading was held. */
  #wanted = false;
  /** Where reads land; each is pushed as a copy of its size. */
  readonly #reads: ReadBuffer;

  /** Wraps `conn`; its stream starts with `head`. */
  constructor(
    conn: Deno.TcpConn,
    head: Uint8Array,
    options: { onRead?: (chunk: Uint8Array) => void; pool?: BufferPool } = {},
  ) {
    super();
    this.#conn = conn;
    this.#onRead = options.onRead;
    this.#reads = options.pool
      ? new ReadBuffer(options.pool)
      : new ReadBuffer(undefined, TLS_READ_BYTES);
    this.#first = head.length > 0 ? head : undefined;
  }

  /** Reads on from the connection when the TLS engine asks for more. */
  override _read(): void {
    if (this.#first !== undefined) {
      const bytes = this.#first;
      this.#first = undefined;
      if (!this.push(bytes)) return;
    }
    if (this.#held) {
      this.#wanted = true;
      return;
    }
    if (this.#pumping) return;
    this.#pumping = true;
    this.#pump();
  }

  /** Stops reading from the connection until {@linkcode TcpDuplex.release}. */
  hold(): void {
    this.#held = true;
  }

  /** Reads again, if the TLS engine asked for more meanwhile. */
  release(): void {
    this.#held = false;
    if (this.#wanted && !this.#pumping) {
      this.#wanted = false;
      this.#pumping = true;
      this.#pump();
    }
  }

  /** Writes all of a chunk to the connection. */
  override _write(
    chunk: Uint8Array,
    _encoding: string,
    callback: (error?: Error | null) => void,
  ): void {
    writeAll(this.#conn, chunk).then(() => callback(), callback);
  }

  /** Half-closes the connection (FIN). */
  override _final(callback: (error?: Error | null) => void): void {
    this.#conn.closeWrite().then(() => callback(), () => callback());
  }

  /** Closes the connection; a borrowed buffer goes back once no read uses it. */
  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    closeQuietly(this.#conn);
    if (!this.#pumping) this.#reads.release();
    callback(error);
  }

  async #pump(): Promise<void> {
    while (true) {
      if (this.#held) {
        this.#wanted = true;
        this.#pumping = false;
        return;
      }
      let n: number | null;
      try {
        n = await this.#conn.read(this.#reads.current);
      } catch (error) {
        this.#pumping = false;
        this.#reads.release();
        this.destroy(error as Error);
        return;
      }
      if (n === null) {
        this.#pumping = false;
        this.#reads.release();
        this.push(null);
        return;
      }
      // The stream keeps what is pushed until the TLS engine takes it: a copy of what came.
      const chunk = this.#reads.current.slice(0, n);
      this.#reads.settle(n);
      this.#onRead?.(chunk);
      if (!this.push(chunk)) {
        this.#pumping = false;
        return;
      }
    }
  }
}

/**
 * A TLS connection as the echo loop uses a `Deno.TcpConn`: `read` resolves
 * with a count or `null` at the end, `write` when the bytes are taken.
 */
export class TlsStream {
  readonly #socket: nodeTls.TLSSocket;
  readonly #tcp: Deno.TcpConn;
  readonly #raw: TcpDuplex;
  readonly #chunks: Uint8Array[] = [];
  #queued = 0;
  #ended = false;
  #error: Error | undefined;
  #closed = false;
  #wake: (() => void) | undefined;

  /** Wraps a socket whose handshake is done. */
  constructor(
    socket: nodeTls.TLSSocket,
    tcp: Deno.TcpConn,
    raw: TcpDuplex,
    readonly facts: TlsFacts,
    /** The server's certificate, on the client side: subject (RFC 4514) and SHA-256 fingerprint. */
    readonly peerCertificate?: { readonly subject: string; readonly fingerprint: string },
  ) {
    this.#socket = socket;
    this.#tcp = tcp;
    this.#raw = raw;
    socket.on("data", (chunk: Uint8Array) => {
      this.#chunks.push(chunk);
      this.#queued += chunk.length;
      // Back-pressure on the TCP side: a paused TLSSocket of Deno 2.9.6 at times lost the
      // peer's close_notify (a Go client's CloseWrite then hung the stream for good).
      if (this.#queued >= QUEUE_HIGH_BYTES) raw.hold();
      this.#wakeReader();
    });
    const ended = () => {
      this.#ended = true;
      this.#wakeReader();
    };
    socket.on("end", ended);
    socket.on("close", ended);
    socket.on("error", (error: Error) => {
      this.#error = error;
      this.#wakeReader();
    });
    // The TCP connection's own failure (a reset) reaches the TLS socket only as a close.
    raw.on("error", (error: Error) => {
      this.#error ??= error;
      this.#wakeReader();
    });
  }

  /** The peer's address (the TCP connection's). */
  get remoteAddr(): Deno.NetAddr {
    return this.#tcp.remoteAddr;
  }

  /** This side's address (the TCP connection's). */
  get localAddr(): Deno.NetAddr {
    return this.#tcp.localAddr;
  }

  /** Sets `TCP_NODELAY` on the TCP connection. */
  setNoDelay(noDelay = true): void {
    this.#tcp.setNoDelay(noDelay);
  }

  /** Reads decrypted bytes into `into`; `null` at the end of the stream. */
  async read(into: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      // As a closed Deno.TcpConn does: a read pending when `close()` came fails.
      if (this.#closed) throw new Deno.errors.BadResource("the TLS stream is closed");
      if (this.#error) throw this.#error;
      if (this.#ended) return null;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
    let n = 0;
    while (n < into.length && this.#chunks.length > 0) {
      const chunk = this.#chunks[0];
      const take = Math.min(chunk.length, into.length - n);
      into.set(take === chunk.length ? chunk : chunk.subarray(0, take), n);
      n += take;
      if (take === chunk.length) this.#chunks.shift();
      else this.#chunks[0] = chunk.subarray(take);
    }
    this.#queued -= n;
    if (this.#queued < QUEUE_HIGH_BYTES) this.#raw.release();
    return n;
  }

  /** Encrypts and sends all of `bytes`; resolves with their count once the socket took them. */
  write(bytes: Uint8Array): Promise<number> {
    if (this.#closed) {
      return Promise.reject(new Deno.errors.BadResource("the TLS stream is closed"));
    }
    if (this.#error) return Promise.reject(this.#error);
    if (bytes.length === 0) return Promise.resolve(0);
    return new Promise((resolve, reject) => {
      this.#socket.write(bytes, (error) => error ? reject(error) : resolve(bytes.length));
    });
  }

  /** Sends close_notify and a FIN: the peer reads the end; reading goes on. */
  closeWrite(): Promise<void> {
    return new Promise((resolve) => this.#socket.end(resolve));
  }

  /** Closes the connection at once. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#wakeReader();
    // No close_notify: Deno 2.9.6's node:tls sends none, end() or not (checked with openssl
    // s_client -msg), so clients see the TCP close alone.
    this.#socket.destroy();
  }

  #wakeReader(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}

/** What a completed handshake carried, as node:tls reports it on either side. */
export function handshakeFacts(
  socket: nodeTls.TLSSocket,
  serverName: string | undefined,
  clientCertificate: ClientCertificate | undefined,
): TlsFacts {
  const cipher = socket.getCipher();
  return {
    protocol: socket.getProtocol() ?? "unknown",
    cipher: cipher?.standardName ?? cipher?.name ?? "unknown",
    serverName,
    alpn: stringOrUndefined(socket.alpnProtocol),
    clientCertificate,
  };
}

/** The peer's certificate and the intermediates it sent, as node:tls links them. */
export function peerChain(socket: nodeTls.TLSSocket): X509Certificate[] {
  const chain: X509Certificate[] = [];
  let peer: nodeTls.DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  while (peer?.raw && chain.length <= MAX_INTERMEDIATES) {
    chain.push(new X509Certificate(peer.raw));
    if (peer.issuerCertificate === peer) break;
    peer = peer.issuerCertificate;
  }
  return chain;
}

/** node:tls says `false` for "none". */
export function stringOrUndefined(value: unknown): string | undefined {
  return typeof value === "string" && value !== "" ? value : undefined;
}

/** A client-side TLS handshake that failed: an untrusted certificate, a wrong name, no common ALPN. */
export class TlsHandshakeError extends Error {
  /** Names the error in a stack trace. */
  override name = "TlsHandshakeError";
}

/** What a socket's handshake listeners need of it (a `TLSSocket`, an `EventEmitter` in tests). */
export type HandshakeEvents = Pick<nodeTls.TLSSocket, "once" | "on" | "off">;

/** An error after the handshake is the stream's; this only keeps it from ending the process. */
function ignoreLateError(): void {}

/**
 * Resolves once `socket` emits `event` (its handshake is done); rejects with
 * the socket's error, or with `endedMessage` when it ends or closes first.
 * Once settled its listeners are gone: a connection that closes later makes
 * no error and keeps no closures of the handshake. Since a socket can fail a
 * write after its first error, and an error without a listener would end the
 * process, a shared no-op listener stays on the socket instead.
 */
export function handshakeDone(
  socket: HandshakeEvents,
  event: "secure" | "secureConnect",
  endedMessage: string,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const settle = () => {
      socket.off(event, secured);
      socket.off("error", failed);
      socket.off("end", ended);
      socket.off("close", ended);
      socket.on("error", ignoreLateError);
    };
    const secured = () => {
      settle();
      resolve();
    };
    const failed = (error: Error) => {
      settle();
      reject(error);
    };
    const ended = () => failed(new Error(endedMessage));
    socket.once(event, secured);
    socket.on("error", failed);
    socket.once("end", ended);
    socket.once("close", ended);
  });
}

/** Options of {@linkcode connectTls}. */
export interface ConnectTlsOptions {
  /** The SNI to send; default: none for an IP address, else `hostname`. */
  readonly serverName?: string;
  /** ALPN protocols to offer. */
  readonly alpn?: readonly string[];
  /** PEM CA certificates to trust instead of the system's. */
  readonly ca?: string;
  /** PEM client certificate and key. */
  readonly cert?: string;
  /** PEM key of `cert`. */
  readonly key?: string;
  /** Accept any server certificate (for self-signed test servers). */
  readonly insecure?: boolean;
  /** Bytes to send in the clear first, such as a PROXY header. */
  readonly preamble?: Uint8Array;
}

/**
 * The client side: connects over TCP, sends any preamble, runs the
 * handshake, and resolves with the stream. Rejects with the connection's
 * error, or a {@linkcode TlsHandshakeError} when the handshake fails.
 */
export async function connectTls(
  hostname: string,
  port: number,
  options: ConnectTlsOptions = {},
): Promise<TlsStream> {
  const tcp = await Deno.connect({ hostname, port });
  try {
    if (options.preamble) await writeAll(tcp, options.preamble);
    const serverName = options.serverName ?? (isIpAddress(hostname) ? undefined : hostname);
    const raw = new TcpDuplex(tcp, new Uint8Array(0));
    const socket = nodeTls.connect({
      socket: raw,
      servername: serverName,
      ALPNProtocols: options.alpn ? [...options.alpn] : undefined,
      ca: options.ca,
      cert: options.cert,
      key: options.key,
      rejectUnauthorized: !options.insecure,
    });
    await handshakeDone(socket, "secureConnect", "the server closed during the handshake")
      .catch((error: Error) => {
        socket.destroy();
        throw new TlsHandshakeError(error.message);
      });
    const [server] = peerChain(socket);
    return new TlsStream(
      socket,
      tcp,
      raw,
      handshakeFacts(socket, serverName, undefined),
      server && {
        subject: readCertificateNames(new Uint8Array(server.raw)).subject,
        fingerprint: server.fingerprint256,
      },
    );
  } catch (error) {
    closeQuietly(tcp);
    throw error;
  }
}
