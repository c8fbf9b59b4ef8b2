/**
 * The bench's ceiling for TLS on Deno: an echo on `Deno.listenTls` (rustls
 * inside the runtime, no JavaScript between the socket and the TLS engine),
 * on `TLS_PORT` with `TLS_CERT_FILE` and `TLS_KEY_FILE`, and a plain echo on
 * `TCP_PORT` (the bench waits for that port first). It can report none of
 * what tcp-echo's banner says of a handshake (server name, version, cipher,
 * client certificate), nor read a PROXY header before it: a reference, not
 * a design.
 *
 * @module
 */

/** Echoes until the peer ends or fails; then closes. */
async function echo(conn: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(65_536);
  try {
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

const env = (name: string) => {
  const value = Deno.env.get(name);
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};

await Promise.all([
  serve(Deno.listen({ hostname: "127.0.0.1", port: Number(env("TCP_PORT")) })),
  serve(Deno.listenTls({
    hostname: "127.0.0.1",
    port: Number(env("TLS_PORT")),
    cert: await Deno.readTextFile(env("TLS_CERT_FILE")),
    key: await Deno.readTextFile(env("TLS_KEY_FILE")),
    alpnProtocols: ["echo"],
  })),
]);
