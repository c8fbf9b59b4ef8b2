/**
 * The client's connections: opening one (TCP, or TLS with `--tls`'s
 * settings; with `-4`/`-6` to the name's address in that family) within the
 * timeout, timeouts on any step, and a writer and a reader run together on
 * one connection.
 *
 * @module
 */
import { connectTls, type ConnectTlsOptions, isIpAddress } from "../src/tls_stream.ts";
import { closeQuietly, unmapIPv4 } from "../src/wire.ts";
import { type IpVersion, resolveAddress } from "./family.ts";
import { type ClientOptions, UsageError } from "./options.ts";

/** What the probe and load use of a connection: a `Deno.TcpConn` or a TLS stream. */
export type ClientConn = Pick<
  Deno.TcpConn,
  "read" | "write" | "close" | "closeWrite" | "setNoDelay" | "remoteAddr"
>;

/** Opens a connection to the target: TCP, or TLS with `tls`'s settings. */
export type Connector = () => Promise<ClientConn>;

/** A step that took longer than `--timeout`; the message says which. */
export class TimeoutError extends Error {
  /** Names the error in a stack trace. */
  override name = "TimeoutError";
}

/**
 * Runs `work`, calling `onTimeout` (which closes what `work` waits on) and
 * rejecting with a {@linkcode TimeoutError} (`${what} within ${ms} ms`) when it
 * takes longer than `ms`.
 */
export async function withTimeout<T>(
  ms: number,
  work: Promise<T>,
  onTimeout: () => void,
  what = "no answer",
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout();
      reject(new TimeoutError(`${what} within ${ms} ms`));
    }, ms);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Connects within `timeoutMs` (TCP, and the TLS handshake with `--tls`); a
 * connection that completes after the timeout is closed when it does.
 */
export function connectWithin(connect: Connector, timeoutMs: number): Promise<ClientConn> {
  const connecting = connect();
  return withTimeout(timeoutMs, connecting, () => {
    connecting.then(closeQuietly, () => {});
  }, "no connection");
}

/** The one family `-4` or `-6` asks for; `undefined` for none (or both: a run per family). */
export function chosenFamily(options: Pick<ClientOptions, "families">): IpVersion | undefined {
  return options.families.length === 1 ? options.families[0] : undefined;
}

/** The IP address a connection went to, as text (IPv4-mapped shown as IPv4). */
export function addressOf(conn: ClientConn): string {
  return unmapIPv4(conn.remoteAddr.hostname);
}

/**
 * The connector for `options`: each connection looks the name up anew (with
 * `-4`/`-6` in that family, by getaddrinfo; else as `Deno.connect` does).
 * Reads the `--ca`, `--cert` and `--key` files (throws UsageError).
 */
export async function makeConnector(options: ClientOptions): Promise<Connector> {
  const { hostname, port, tls } = options;
  const family = chosenFamily(options);
  const addressFor = async () =>
    family === undefined ? hostname : (await resolveAddress(hostname, family)).address;
  if (tls === undefined) {
    if (family === undefined) return () => Deno.connect({ hostname, port });
    return async () => Deno.connect({ hostname: await addressFor(), port });
  }
  const read = async (flag: string, path: string | undefined) => {
    if (path === undefined) return undefined;
    try {
      return await Deno.readTextFile(path);
    } catch (error) {
      throw new UsageError(`cannot read ${flag} ${path}: ${(error as Error).message}`);
    }
  };
  const settings: ConnectTlsOptions = {
    // The name's, not the address's: with -4/-6 the connection goes to an address.
    serverName: tls.serverName ?? (isIpAddress(hostname) ? undefined : hostname),
    alpn: tls.alpn,
    ca: await read("--ca", tls.caFile),
    cert: await read("--cert", tls.certFile),
    key: await read("--key", tls.keyFile),
    insecure: tls.insecure,
  };
  return async () => connectTls(await addressFor(), port, settings);
}

/**
 * Runs a connection's writer and reader together and settles both: when one
 * fails, the connection is closed so the other ends too, and the first
 * failure is thrown (the other's is its echo, never an unhandled rejection).
 */
export async function writeWhileReading(
  conn: ClientConn,
  write: () => Promise<void>,
  read: () => Promise<void>,
): Promise<void> {
  let firstFailure: { error: unknown } | undefined;
  const settle = (work: () => Promise<void>) =>
    work().catch((error) => {
      firstFailure ??= { error };
      closeQuietly(conn);
    });
  await Promise.all([settle(write), settle(read)]);
  if (firstFailure) throw firstFailure.error;
}
