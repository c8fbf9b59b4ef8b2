/**
 * The bench's ceilings on Deno: what the runtime does with no tcp-echo in the
 * way. On `TCP_PORT` a bare `Deno.listen` echo (accept, no-delay, the text of
 * `BANNER` when set, a read and write loop, close: the socket operations
 * tcp-echo does for a connection, with no records, limits or metrics). With
 * `TLS_PORT` also an echo on `Deno.listenTls` (rustls inside the runtime, no
 * JavaScript between the socket and the TLS engine) with `TLS_CERT_FILE` and
 * `TLS_KEY_FILE`. The TLS echo can report none of what tcp-echo's banner says
 * of a handshake (server name, version, cipher, client certificate), nor read
 * a PROXY header before it: a reference, not a design.
 *
 * @module
 */

/** Sent first on each plain connection, as tcp-echo sends its banner. */
const banner = new TextEncoder().encode(Deno.env.get("BANNER") ?? "");

/** Echoes until the peer ends or fails; then closes. */
async function echo(conn: Deno.Conn, first?: Uint8Array): Promise<void> {
  const buffer = new Uint8Array(65_536);
  try {
    if (first?.length) await conn.write(first);
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) break;
      let written = 0;
      while (written < n) written += await conn.write(buffer.subarray(written, n));
    }
  } catch {
    // A reset or a failed handshake ends this connection only.
  } finally {
    try {
      conn.close();
    } catch {
      // Closed already.
    }
  }
}

async function serve(listener: Deno.Listener): Promise<void> {
  for await (const conn of listener) echo(conn);
}

/** As tcp-echo does, every plain connection gets no-delay and the banner. */
async function servePlain(listener: Deno.TcpListener): Promise<void> {
  for await (const conn of listener) {
    conn.setNoDelay(true);
    echo(conn, banner);
  }
}

const env = (name: string) => {
  const value = Deno.env.get(name);
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};

const tlsPort = Deno.env.get("TLS_PORT");
await Promise.all([
  servePlain(Deno.listen({ hostname: "127.0.0.1", port: Number(env("TCP_PORT")) })),
  tlsPort === undefined ? undefined : serve(Deno.listenTls({
    hostname: "127.0.0.1",
    port: Number(tlsPort),
    cert: await Deno.readTextFile(env("TLS_CERT_FILE")),
    key: await Deno.readTextFile(env("TLS_KEY_FILE")),
    alpnProtocols: ["echo"],
  })),
]);
