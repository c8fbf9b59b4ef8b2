/**
 * What the tests (and the benchmark) share: a server on a free loopback port
 * with its log records captured, socket helpers with timeouts, `main.ts` run
 * as a subprocess, loopback port helpers, and the rule for tests that need a
 * tool from Debian.
 *
 * @module
 */
import assert from "node:assert/strict";
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import type { LogRecord, Sink } from "../src/log_output.ts";
import { concatBytes, writeAll } from "../src/wire.ts";
import { connectTls, type ConnectTlsOptions, type TlsStream } from "../src/tls_stream.ts";
import { type EchoServer, startServer, type TestHooks } from "../main.ts";
import { type Environment, loadConfig } from "../src/config.ts";
import { formatTextRecord, setupLogging } from "../src/log_output.ts";
import { privateKeyPem, TlsCredentials } from "../src/tls.ts";

export { writeAll };

/** Encodes test text. */
export const encoder: TextEncoder = new TextEncoder();
/** Decodes received bytes. */
export const decoder: TextDecoder = new TextDecoder();
/** The repository's directory, with a trailing slash. */
export const repoDir: string = new URL("..", import.meta.url).pathname;

/** Rejects with `what` when `promise` takes longer than `ms`; always clears its timer. */
export async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Every banner variable set, as the manifests set them. */
export const ALL_BANNER_ENV = {
  NODE_NAME: "node-1",
  POD_NAME: "tcp-echo-v1-7c775f57c9-frprp",
  POD_NAMESPACE: "default",
  POD_IP: "172.16.2.90",
  SERVICE_ACCOUNT: "default",
  SERVICE_VERSION: "v1",
};

/** The banner {@linkcode ALL_BANNER_ENV} gives, byte for byte. */
export const ALL_BANNER_TEXT: string = "Welcome, you are connected to node node-1.\n" +
  "Running on Pod tcp-echo-v1-7c775f57c9-frprp.\n" +
  "In namespace default.\n" +
  "With IP address 172.16.2.90.\n" +
  "Service default.\n" +
  "Version v1.\n";

/** GETs (or sends `method` to) an admin path; returns status, content type and body. */
export async function adminRequest(
  address: Deno.NetAddr,
  path: string,
  method = "GET",
): Promise<{ status: number; type: string | null; body: string }> {
  const response = await fetch(`http://127.0.0.1:${address.port}${path}`, { method });
  return {
    status: response.status,
    type: response.headers.get("content-type"),
    body: await response.text(),
  };
}

/** A text record or output line without its timestamp (`2026/11/25 07:32:29 `). */
export function withoutTimestamp(line: string): string {
  return line.slice(20);
}

/** Collects log records and lets a test await the one it expects. */
export class LogCapture {
  /** Every record so far, in order. */
  readonly records: LogRecord[] = [];
  #waiters: { match: (r: LogRecord) => boolean; resolve: (r: LogRecord) => void }[] = [];

  /** The sink to give {@linkcode setupLogging}. */
  readonly sink: Sink = (record) => {
    this.records.push(record);
    this.#waiters = this.#waiters.filter((w) => !(w.match(record) && (w.resolve(record), true)));
  };

  /** Resolves with the first record (already seen or coming) that matches. */
  waitFor(match: (r: LogRecord) => boolean, what: string, ms = 5_000): Promise<LogRecord> {
    const seen = this.records.find(match);
    if (seen) return Promise.resolve(seen);
    return within(ms, what, new Promise((resolve) => this.#waiters.push({ match, resolve })));
  }

  /** Records of one connection, formatted as text lines. */
  linesOf(id: string): string[] {
    return this.records.filter((r) => r.properties.id === id).map(formatTextRecord);
  }
}

/** Whether a record is a connection's open record. */
export const isOpen = (r: LogRecord): boolean => r.rawMessage === "TCP connection open.";
/** A matcher for the closed record of connection `id`. */
export const isClosedRecord = (id: string): (r: LogRecord) => boolean => (r: LogRecord) =>
  r.rawMessage === "TCP connection closed." && r.properties.id === id;

/** A server started by {@linkcode startTestServer}; dispose of it to stop it. */
export interface TestServer extends AsyncDisposable {
  /** The server. */
  readonly server: EchoServer;
  /** Its (first) echo port on 127.0.0.1. */
  readonly port: number;
  /** Its log records. */
  readonly logs: LogCapture;
  /** Connects to the echo port. */
  connect(): Promise<Deno.TcpConn>;
  /** Its TLS port on 127.0.0.1, when `TLS_PORT: "any"` asked for one. */
  readonly tlsPort: number;
  /** Connects to the TLS port. */
  connectTls(options?: ConnectTlsOptions): Promise<TlsStream>;
  /** Id of the n-th (0-based) connection the server logged as open. */
  connectionId(n: number): Promise<string>;
  /** Its UDP port on 127.0.0.1, when `UDP_PORT: "any"` asked for one. */
  readonly udpPort: number;
}

/**
 * Starts a server on 127.0.0.1, port 0, with logs captured in memory.
 * `ADMIN_PORT: "any"` starts the admin server on a free port too, and
 * `TLS_PORT: "any"` a TLS port (its certificate files are read again every
 * `tlsReloadIntervalMs`), and `UDP_PORT: "any"` a UDP port.
 */
export async function startTestServer(
  env: Environment = {},
  hooks: TestHooks = {},
  tlsReloadIntervalMs?: number,
): Promise<TestServer> {
  const wantsAdmin = env.ADMIN_PORT === "any";
  const wantsTls = env.TLS_PORT === "any";
  const wantsUdp = env.UDP_PORT === "any";
  const config = loadConfig({
    HOST: "127.0.0.1",
    ...env,
    ADMIN_PORT: "off",
    TLS_PORT: wantsTls ? "65535" : env.TLS_PORT,
    UDP_PORT: wantsUdp ? "65535" : env.UDP_PORT,
  });
  const logs = new LogCapture();
  const detach = await setupLogging(config.logLevel, logs.sink);
  let tls: TlsCredentials | undefined;
  let server: EchoServer;
  try {
    tls = wantsTls
      ? await TlsCredentials.load(config.tls, {
        pod: { name: config.banner.pod, ip: config.banner.ip },
        reloadIntervalMs: tlsReloadIntervalMs,
      })
      : undefined;
    server = startServer(config, {
      ports: [0],
      tlsPorts: wantsTls ? [0] : [],
      udpPorts: wantsUdp ? [0] : [],
      adminPort: wantsAdmin ? 0 : undefined,
      ...hooks,
    }, { tls });
    await server.listening.catch(async (error) => {
      await server.shutdown({ graceMs: 0, drainDelayMs: 0 });
      throw error;
    });
  } catch (error) {
    tls?.close();
    await detach();
    throw error;
  }
  const port = server.addresses[0].port;
  const tlsPort = wantsTls ? server.addresses[server.addresses.length - 1].port : 0;
  const udpPort = wantsUdp ? server.stats.udpPorts.keys().next().value! : 0;
  return {
    server,
    port,
    tlsPort,
    udpPort,
    logs,
    connect: () => Deno.connect({ hostname: "127.0.0.1", port }),
    connectTls: (options) => connectTls("127.0.0.1", tlsPort, options),
    async connectionId(n) {
      const nth = (r: LogRecord) => isOpen(r) && logs.records.filter(isOpen).indexOf(r) === n;
      return String((await logs.waitFor(nth, `connection ${n} open`)).properties.id);
    },
    async [Symbol.asyncDispose]() {
      await server.shutdown({ graceMs: 0 });
      tls?.close();
      await detach();
    },
  };
}

/** PEM files of a test PKI in a temporary directory; dispose of it to delete them. */
export interface TestPki extends AsyncDisposable {
  /** The directory. */
  readonly dir: string;
  /** The CA certificate's PEM text (the trust root of both sides). */
  readonly caPem: string;
  /** Paths of each certificate's `NAME.pem` and its key's `NAME.key`. */
  path(name: string): string;
  /** `TLS_CERT_FILE` and `TLS_KEY_FILE` for the `server` certificate. */
  readonly serverFiles: { readonly TLS_CERT_FILE: string; readonly TLS_KEY_FILE: string };
  /** A file's text. */
  read(file: string): Promise<string>;
}

/** What {@linkcode makeTestPki} makes besides its usual certificates. */
export interface TestPkiOptions {
  /**
   * Also certificates made by `openssl req` and `openssl x509`, as other
   * tools issue them (the test must need openssl: {@linkcode ignoreWithout}).
   */
  readonly openssl?: boolean;
}

const ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
const DAY_MS = 86_400_000;
const UID = "0.9.2342.19200300.100.1.1";

/** One certificate to issue: its subject, SANs, validity, and whether the test CA signs it. */
interface Issue {
  readonly file: string;
  /**
   * Text as @peculiar/x509 reads it (RDNs in DER order: most significant
   * first), a JSON name with typed values, or a Name's DER.
   */
  readonly subject: string | x509.JsonNameParams | Uint8Array;
  readonly dns?: readonly string[];
  readonly ips?: readonly string[];
  readonly uris?: readonly string[];
  readonly notAfterDays?: number;
  /** The test CA by default; `other-ca`, or the file of a certificate issued before. */
  readonly signedBy?: string;
  readonly usage: "server" | "client" | "ca";
}

/** A one-attribute Name's DER with a TeletexString (T61) value, which @peculiar/x509 cannot write. */
function teletexName(type: string, latin1: string): Uint8Array {
  const tlv = (tag: number, body: number[]) => [tag, body.length, ...body];
  const oid = new x509.Name([{ [type]: ["x"] }]).toArrayBuffer(); // borrow the type's encoding
  const typeTlv = Array.from(new Uint8Array(oid).subarray(6, 6 + 2 + new Uint8Array(oid)[7]));
  const value = tlv(0x14, Array.from(latin1, (char) => char.charCodeAt(0)));
  return Uint8Array.from(tlv(0x30, tlv(0x31, tlv(0x30, [...typeTlv, ...value]))));
}

/** The certificates every PKI has, in issue order (an issuer before what it signs). */
function testPkiSpecs(): Issue[] {
  const servers = { dns: ["localhost", "v1.example.com", "v2.example.com"], ips: ["127.0.0.1"] };
  const client = (file: string, subject: Issue["subject"], more: Partial<Issue> = {}): Issue => ({
    file,
    subject,
    usage: "client",
    ...more,
  });
  return [
    { file: "server", subject: "CN=tcp-echo test server", ...servers, usage: "server" },
    { file: "server2", subject: "CN=tcp-echo rotated server", ...servers, usage: "server" },
    { file: "san-only-server", subject: [], ...servers, usage: "server" },
    client("client", "O=test, CN=client"),
    client("expired-client", "CN=expired", { notAfterDays: -1 }),
    client("stranger-client", "CN=stranger", { signedBy: "other-ca" }),
    { file: "intermediate", subject: "CN=tcp-echo test intermediate", usage: "ca" },
    client("chained-client", "O=test, CN=chained", { signedBy: "intermediate" }),
    {
      file: "bmp-intermediate",
      subject: [{ CN: [{ bmpString: "név intermediate" }] }],
      usage: "ca",
    },
    client("bmp-chained-client", "CN=bmp-chained", { signedBy: "bmp-intermediate" }),
    client("leaf-signed-client", "CN=leaf-signed", { signedBy: "client" }),
    client("spiffe-client", "O=tcp-echo test", {
      uris: ["https://example.com/not-an-id", "spiffe://cluster.local/ns/default/sa/sleep"],
    }),
    client("san-only-client", [], { dns: ["sleep.default.svc"] }),
    client("bmp-client", [{ CN: [{ bmpString: "bmp-név" }] }]),
    client("utf8-client", [{ O: [{ utf8String: "Ünïcødé ✓" }] }, { CN: [{ utf8String: "név" }] }]),
    client("printable-client", [{ C: [{ printableString: "NL" }] }, {
      CN: [{ printableString: "printable" }],
    }]),
    client("t61-client", teletexName("CN", "t61-caf\u00e9")),
    client("multi-client", [{ O: ["test"] }, { CN: ["a"], [UID]: ["b"] }]),
    client("comma-client", [{ CN: ["a,O=forged"] }]),
    client("newline-client", [{ CN: ["a\nO=forged"] }]),
    client("cr-client", [{ CN: ["a\r"] }]),
    client("esc-client", [{ CN: ["\u001b[31mred\u001b[0m"] }]),
  ];
}

/**
 * Makes a CA (`ca`, its key in `ca.key`), and certificates it signs:
 * `server` (localhost, 127.0.0.1, v1/v2.example.com), `server2` (the same
 * names, a new key: a rotation), `san-only-server` (the same names, an empty
 * subject), `client` (CN=client,O=test), `expired-client`, `intermediate`
 * (a CA under the CA) and `chained-client` (signed by `intermediate`; its
 * `.pem` holds both, as a client sends them; `chained-client-alone.pem` only
 * its own), `bmp-chained-client` the same through `bmp-intermediate` (a
 * BMPString name), `leaf-signed-client` (signed by `client`, which is no
 * CA); and `stranger-client`, signed by another CA. Client certificates
 * of every shape issued in the wild: `spiffe-client` (a SPIFFE ID among its
 * URI SANs), `san-only-client` (empty subject, a DNS SAN), `bmp-client`,
 * `utf8-client`, `printable-client`, `t61-client` (each string type),
 * `multi-client` (`CN=a+UID=b`), and hostile CNs: `comma-client`
 * (`a,O=forged`), `newline-client` (`a\nO=forged`), `cr-client` (`a\r`) and
 * `esc-client` (ANSI colour escapes).
 *
 * With `openssl: true`, also `cert-manager-server` (made as cert-manager
 * issues one without a commonName: empty subject, critical SANs) and
 * `istio-client` (an Istio workload's: empty subject, the URI SAN
 * `spiffe://cluster.local/ns/default/sa/sleep`, 24 h, EC P-256), both by
 * `openssl req` and `openssl x509`, signed by the CA.
 */
export async function makeTestPki(options: TestPkiOptions = {}): Promise<TestPki> {
  const dir = await Deno.makeTempDir({ prefix: "tcp-echo-pki-" });
  const now = Date.now();
  const newKeys = () => crypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
  const authority = async (name: string) => {
    const keys = await newKeys();
    const certificate = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: "01",
      name,
      notBefore: new Date(now - DAY_MS),
      notAfter: new Date(now + 30 * DAY_MS),
      keys,
      signingAlgorithm: ALGORITHM,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
      ],
    });
    return { keys, certificate };
  };
  const ca = await authority("CN=tcp-echo test CA");
  const otherCa = await authority("CN=someone else's CA");
  const issued = new Map<string, Awaited<ReturnType<typeof authority>>>();
  const issue = async (spec: Issue, serial: number) => {
    const keys = await newKeys();
    const issuer = spec.signedBy === undefined || spec.signedBy === "ca"
      ? ca
      : spec.signedBy === "other-ca"
      ? otherCa
      : issued.get(spec.signedBy)!;
    const names = [
      ...(spec.dns ?? []).map((value) => ({ type: "dns" as const, value })),
      ...(spec.ips ?? []).map((value) => ({ type: "ip" as const, value })),
      ...(spec.uris ?? []).map((value) => ({ type: "url" as const, value })),
    ];
    const notAfterDays = spec.notAfterDays ?? 30;
    const subject = new x509.Name(spec.subject as x509.JsonNameParams);
    const certificate = await x509.X509CertificateGenerator.create({
      serialNumber: (serial + 2).toString(16).padStart(2, "0"),
      subject,
      // The issuer's subject as its DER has it (a string would be encoded anew, maybe otherwise).
      issuer: issuer.certificate.subjectName,
      notBefore: new Date(now + Math.min(0, notAfterDays - 2) * DAY_MS),
      notAfter: new Date(now + notAfterDays * DAY_MS),
      publicKey: keys.publicKey,
      signingKey: issuer.keys.privateKey,
      signingAlgorithm: ALGORITHM,
      extensions: spec.usage === "ca"
        ? [
          new x509.BasicConstraintsExtension(true, 0, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
        ]
        : [
          // RFC 5280 §4.2.1.6: with an empty subject, the SANs are critical.
          ...(names.length > 0
            ? [new x509.SubjectAlternativeNameExtension(names, subject.toString() === "")]
            : []),
          new x509.ExtendedKeyUsageExtension([
            spec.usage === "server"
              ? x509.ExtendedKeyUsage.serverAuth
              : x509.ExtendedKeyUsage.clientAuth,
          ]),
        ],
    });
    issued.set(spec.file, { keys, certificate });
    const pem = certificate.toString("pem") + "\n";
    const chain = issued.has(spec.signedBy ?? "")
      ? pem + issued.get(spec.signedBy!)!.certificate.toString("pem") + "\n"
      : pem;
    await Deno.writeTextFile(`${dir}/${spec.file}.pem`, chain);
    if (chain !== pem) await Deno.writeTextFile(`${dir}/${spec.file}-alone.pem`, pem);
    await Deno.writeTextFile(`${dir}/${spec.file}.key`, await privateKeyPem(keys.privateKey));
  };
  for (const [i, spec] of testPkiSpecs().entries()) await issue(spec, i);
  const caPem = ca.certificate.toString("pem") + "\n";
  await Deno.writeTextFile(`${dir}/ca.pem`, caPem);
  await Deno.writeTextFile(`${dir}/ca.key`, await privateKeyPem(ca.keys.privateKey));
  if (options.openssl) {
    await opensslIssue(dir, "cert-manager-server", [
      "subjectAltName=critical,DNS:localhost,DNS:v1.example.com,IP:127.0.0.1",
      "keyUsage=critical,digitalSignature,keyEncipherment",
      "extendedKeyUsage=serverAuth",
      "basicConstraints=critical,CA:FALSE",
    ]);
    await opensslIssue(dir, "istio-client", [
      "subjectAltName=critical,URI:spiffe://cluster.local/ns/default/sa/sleep",
      "keyUsage=critical,digitalSignature,keyEncipherment",
      "extendedKeyUsage=serverAuth,clientAuth",
      "basicConstraints=critical,CA:FALSE",
    ]);
  }
  return {
    dir,
    caPem,
    path: (name) => `${dir}/${name}`,
    serverFiles: { TLS_CERT_FILE: `${dir}/server.pem`, TLS_KEY_FILE: `${dir}/server.key` },
    read: (file) => Deno.readTextFile(`${dir}/${file}`),
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

/**
 * Issues `NAME.pem` and `NAME.key` in `dir` with openssl, signed by the CA
 * there: an EC P-256 key and a request with an empty subject (`openssl req`),
 * then a certificate for 24 h with `extensions` (`openssl x509 -req`).
 */
async function opensslIssue(dir: string, name: string, extensions: readonly string[]) {
  const run = async (args: string[]) => {
    const output = await new Deno.Command("openssl", { args, cwd: dir, stdin: "null" }).output();
    if (!output.success) {
      throw new Error(`openssl ${args.join(" ")}: ${new TextDecoder().decode(output.stderr)}`);
    }
  };
  await Deno.writeTextFile(`${dir}/${name}.ext`, extensions.join("\n") + "\n");
  await run([
    "req",
    "-new",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-subj",
    "/",
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.csr`,
  ]);
  await run([
    "x509",
    "-req",
    "-in",
    `${name}.csr`,
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-set_serial",
    `0x${
      Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0"))
        .join("")
    }`,
    "-days",
    "1",
    "-extfile",
    `${name}.ext`,
    "-out",
    `${name}.pem`,
  ]);
}

/** What the socket helpers read from: a `Deno.Conn` or a `TlsStream`. */
export type Readable = Pick<Deno.Conn, "read">;
/** What they write to. */
export type Writable = Pick<Deno.Conn, "write">;

/** Reads exactly `length` bytes; fails on EOF or after `ms`. */
export function readExactly(conn: Readable, length: number, ms = 5_000): Promise<Uint8Array> {
  return within(
    ms,
    `reading ${length} bytes`,
    (async () => {
      const out = new Uint8Array(length);
      let filled = 0;
      while (filled < length) {
        const n = await conn.read(out.subarray(filled));
        if (n === null) throw new Error(`EOF after ${filled} of ${length} bytes`);
        filled += n;
      }
      return out;
    })(),
  );
}

/** Reads until EOF. */
export function readToEnd(conn: Readable, ms = 5_000): Promise<Uint8Array> {
  return within(
    ms,
    "reading to EOF",
    (async () => {
      const chunks: Uint8Array[] = [];
      const buffer = new Uint8Array(65_536);
      while (true) {
        const n = await conn.read(buffer);
        if (n === null) break;
        chunks.push(buffer.slice(0, n));
      }
      return concatBytes(chunks);
    })(),
  );
}

/** The first record a real TLS client sends (its ClientHello): connectTls against a listener that only reads. */
export async function captureClientHello(serverName?: string): Promise<Uint8Array> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const connecting = connectTls("127.0.0.1", listener.addr.port, { insecure: true, serverName });
  using conn = await listener.accept();
  const head = await readExactly(conn, 5);
  const length = 5 + ((head[3] << 8) | head[4]);
  const hello = concatBytes([head, await readExactly(conn, length - 5)]);
  conn.close();
  await connecting.then(() => assert.fail("a handshake with a listener that only reads"), () => {});
  return hello;
}

/** `length` random bytes. */
export function randomBytes(length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let offset = 0; offset < length; offset += 65_536) {
    crypto.getRandomValues(out.subarray(offset, Math.min(offset + 65_536, length)));
  }
  return out;
}

/** Sends `payload` and reads the same number of bytes back, concurrently. */
export async function roundTrip(
  conn: Readable & Writable,
  payload: Uint8Array,
): Promise<Uint8Array> {
  const [, echoed] = await Promise.all([
    writeAll(conn, payload),
    readExactly(conn, payload.length),
  ]);
  return echoed;
}

/** A deno.json task's command line, minus the leading `deno`: what to run with `Deno.execPath()`. */
export async function taskArgs(name: string): Promise<string[]> {
  const denoJson = JSON.parse(await Deno.readTextFile(`${repoDir}deno.json`));
  const task = denoJson.tasks[name];
  const words = String(typeof task === "string" ? task : task.command).split(/\s+/);
  assert.equal(words[0], "deno");
  return words.slice(1);
}

/** The start task's command line from deno.json, minus the leading `deno`. */
export function startTaskArgs(): Promise<string[]> {
  return taskArgs("start");
}

/** A port that was free a moment ago, for subprocesses that cannot take port 0. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

/** Splits a byte stream into lines; `next()` waits for the next one. */
export class LineReader {
  #reader: ReadableStreamDefaultReader<string>;
  #pending = "";
  /** The lines read so far. */
  readonly lines: string[] = [];

  /** Reads `stream` as it is asked to. */
  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** Resolves with the first line (from now on) that matches; null at EOF. */
  async waitFor(match: (line: string) => boolean, what: string, ms = 10_000): Promise<string> {
    return await within(
      ms,
      what,
      (async () => {
        while (true) {
          const newline = this.#pending.indexOf("\n");
          if (newline >= 0) {
            const line = this.#pending.slice(0, newline);
            this.#pending = this.#pending.slice(newline + 1);
            this.lines.push(line);
            if (match(line)) return line;
            continue;
          }
          const { value, done } = await this.#reader.read();
          if (done) throw new Error(`output ended before: ${what}`);
          this.#pending += value;
        }
      })(),
    );
  }

  /** Reads the rest of the stream without keeping it; resolves with how many lines it had. */
  async count(): Promise<number> {
    let lines = 0;
    while (true) {
      const { value, done } = await this.#reader.read();
      if (done) return lines;
      lines += value.split("\n").length - 1;
    }
  }

  /** Reads the rest of the stream into `lines`. */
  async rest(): Promise<string[]> {
    while (true) {
      const { value, done } = await this.#reader.read();
      if (done) break;
      this.#pending += value;
    }
    if (this.#pending) this.lines.push(...this.#pending.replace(/\n$/, "").split("\n"));
    this.#pending = "";
    return this.lines;
  }
}

/** The program running as a subprocess; dispose of it to kill its process group. */
export interface ServerProcess extends AsyncDisposable {
  /** The process (the group's leader). */
  readonly child: Deno.ChildProcess;
  /** Its standard output, line by line. */
  readonly stdout: LineReader;
  /** Its echo port on 127.0.0.1. */
  readonly port: number;
  /** Sends `signal` to the whole process group, as a terminal's Ctrl-C does. */
  signalGroup(signal: Deno.Signal): void;
}

/** How {@linkcode spawnServer} runs the program. */
export interface SpawnOptions {
  /** Words put before the program, e.g. `["prlimit", "--nofile=300"]`. */
  readonly prefix?: readonly string[];
  /** The command after the prefix; by default main.ts exactly as `deno task start` runs it. */
  readonly command?: readonly string[];
  /** Extra arguments after the command. */
  readonly args?: readonly string[];
}

/**
 * Runs main.ts exactly as `deno task start` does, on a free loopback port, in
 * a session of its own (`setsid`), so disposing of it kills the whole process
 * group: a failing test leaves nothing running.
 */
export async function spawnServer(
  env: Record<string, string>,
  options: SpawnOptions = {},
): Promise<ServerProcess> {
  const port = freePort();
  const command = options.command ?? [Deno.execPath(), ...await startTaskArgs()];
  const child = new Deno.Command("setsid", {
    args: [...options.prefix ?? [], ...command, ...options.args ?? []],
    cwd: repoDir,
    env: { HOST: "127.0.0.1", TCP_PORT: String(port), ADMIN_PORT: "off", NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = new LineReader(child.stdout);
  // setsid runs the command in place (it forks only when it leads a group already).
  const signalGroup = (signal: Deno.Signal) => Deno.kill(-child.pid, signal);
  return {
    child,
    stdout,
    port,
    signalGroup,
    async [Symbol.asyncDispose]() {
      try {
        signalGroup("SIGKILL");
      } catch {
        // Every process of the group has exited.
      }
      await child.status;
      await stdout.rest().catch(() => {});
      await child.stderr.cancel().catch(() => {});
    },
  };
}

/**
 * Whether a test that needs `tool` must be ignored: locally it is, with a
 * printed reason; under CI (`CI=true`) it runs and fails, so CI cannot skip it.
 */
export async function ignoreWithout(tool: string, why: string): Promise<boolean> {
  if (await isInstalled(tool) || Deno.env.get("CI") === "true") return false;
  console.warn(`ignored: ${why} needs ${tool}, which is not installed (.ci/run installs it)`);
  return true;
}

/** Whether `tool` runs. A missing one throws from `output()` itself, not as a rejection. */
export async function isInstalled(tool: string): Promise<boolean> {
  try {
    await new Deno.Command(tool, { args: ["--version"], stdout: "null", stderr: "null" }).output();
    return true;
  } catch {
    return false;
  }
}

/** Tries to connect until `port` accepts: HAProxy writes nothing when it is ready. */
export async function waitForPort(port: number, attempts = 200): Promise<void> {
  for (let i = 0; i < attempts; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }
  throw new Error(`port ${port} never opened`);
}

/** A HAProxy in front of loopback servers, in TCP mode; dispose it to stop it. */
export interface Haproxy extends AsyncDisposable {
  /** The port clients connect to. */
  readonly port: number;
}

/**
 * Starts HAProxy (`-db`, configuration on stdin: nothing is written to disk)
 * with one `listen` section on a free loopback port; `lines` add to it
 * (`server ...`, `balance ...`), `sections` come after it (`backend ...`).
 * Resolves once the port accepts.
 */
export async function startHaproxy(
  lines: readonly string[],
  sections: readonly string[] = [],
): Promise<Haproxy> {
  const port = freePort();
  const config = [
    "defaults",
    "  mode tcp",
    "  timeout connect 2s",
    "  timeout client 10s",
    "  timeout server 10s",
    "listen front",
    `  bind 127.0.0.1:${port}`,
    ...lines,
    ...sections,
    "",
  ].join("\n");
  const child = new Deno.Command("haproxy", {
    args: ["-db", "-f", "/dev/stdin"],
    stdin: "piped",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // Already gone.
    }
    await child.status;
  };
  try {
    const stdin = child.stdin.getWriter();
    await stdin.write(encoder.encode(config));
    await stdin.close();
    await waitForPort(port);
  } catch (error) {
    await stop();
    throw error;
  }
  return { port, [Symbol.asyncDispose]: stop };
}
