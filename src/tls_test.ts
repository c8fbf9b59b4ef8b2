import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { EventEmitter } from "node:events";
import net from "node:net";
import nodeTls from "node:tls";
import {
  alertRecord,
  bannerName,
  ChainCertificate,
  clientCertificateProblem,
  clientHelloRecordLength,
  clientHelloRefusal,
  clientHelloServerName,
  generatedCertificateNames,
  looksLikeClientHello,
  quoteStart,
  readClientHello,
  renderTlsBanner,
  TlsCredentials,
  tlsRecordFields,
  TlsRefusal,
  tlsVersionName,
} from "./tls.ts";
import { derFromPem } from "./certificate_names.ts";
import { concatBytes, indexOfBytes, parseTlsBannerText } from "./wire.ts";
import { formatTextRecord } from "./log_output.ts";
import { ConfigError, loadConfig } from "./config.ts";
import {
  type ClientCertificate,
  connectTls,
  handshakeDone,
  type HandshakeEvents,
  type TlsFacts,
  type TlsStream,
} from "./tls_stream.ts";
import { V2_SIGNATURE } from "./proxy_protocol.ts";
import {
  adminRequest,
  ALL_BANNER_ENV,
  ALL_BANNER_TEXT,
  decoder,
  encoder,
  freePort,
  ignoreWithout,
  isClosedRecord,
  isOpen,
  makeTestPki,
  randomBytes,
  readExactly,
  readToEnd,
  repoDir,
  roundTrip,
  spawnServer,
  startHaproxy,
  startTaskArgs,
  startTestServer,
  taskArgs,
  type TestPki,
  type TestServer,
  within,
  withoutTimestamp,
  writeAll,
} from "../testing/support.ts";

const FACTS: TlsFacts = {
  protocol: "TLSv1.3",
  cipher: "TLS_AES_256_GCM_SHA384",
  serverName: "v2.example.com",
  alpn: "echo",
  clientCertificate: undefined,
};

/** A ClientHello's first bytes: handshake record, TLS 1.0 record version, length, type 1. */
const CLIENT_HELLO_START = Uint8Array.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01]);

// ---------------------------------------------------------------------------
// Pure parts
// ---------------------------------------------------------------------------

Deno.test("TLS banner lines and record fields say what the handshake carried", () => {
  assert.equal(
    renderTlsBanner(FACTS),
    "TLS TLSv1.3 TLS_AES_256_GCM_SHA384, server name v2.example.com, ALPN echo.\n",
  );
  assert.deepEqual(tlsRecordFields(FACTS), {
    tls: "TLSv1.3",
    cipher: "TLS_AES_256_GCM_SHA384",
    sni: "v2.example.com",
    alpn: "echo",
  });
  const withClient = (clientCertificate: ClientCertificate): TlsFacts => ({
    ...FACTS,
    serverName: undefined,
    alpn: undefined,
    clientCertificate,
  });
  const named = withClient({
    name: "CN=client,O=test",
    subject: "CN=client,O=test",
    issuer: "CN=ca",
    fingerprint: "AB:CD",
  });
  assert.equal(
    renderTlsBanner(named),
    "TLS TLSv1.3 TLS_AES_256_GCM_SHA384, server name none, ALPN none.\n" +
      "Client certificate CN=client,O=test.\n",
  );
  assert.deepEqual(tlsRecordFields(named), {
    tls: "TLSv1.3",
    cipher: "TLS_AES_256_GCM_SHA384",
    sni: "none",
    alpn: "none",
    client_cert: "CN=client,O=test",
    client_cert_subject: "CN=client,O=test",
    client_cert_issuer: "CN=ca",
    client_cert_sha256: "AB:CD",
  });
  // An Istio workload: named by its SPIFFE ID; its (empty) subject kept beside it.
  const workload = withClient({
    name: "spiffe://cluster.local/ns/default/sa/sleep",
    subject: "",
    issuer: "O=cluster.local",
    fingerprint: "EF:01",
  });
  assert.equal(
    renderTlsBanner(workload).split("\n")[1],
    "Client certificate spiffe://cluster.local/ns/default/sa/sleep.",
  );
  assert.deepEqual(tlsRecordFields(workload), {
    tls: "TLSv1.3",
    cipher: "TLS_AES_256_GCM_SHA384",
    sni: "none",
    alpn: "none",
    client_cert: "spiffe://cluster.local/ns/default/sa/sleep",
    client_cert_subject: "",
    client_cert_issuer: "O=cluster.local",
    client_cert_sha256: "EF:01",
  });
  // The banner is lines: control characters in a name are RFC 4514 hex pairs there.
  const hostile = withClient({
    name: "CN=a\r\nVersion v9.\u001b[2J\u0085\u2028",
    subject: "",
    issuer: "",
    fingerprint: "",
  });
  assert.equal(
    renderTlsBanner(hostile).split("\n")[1],
    "Client certificate CN=a\\0D\\0AVersion v9.\\1B[2J\\C2\\85\\E2\\80\\A8.",
  );
  assert.equal(tlsRecordFields(hostile).client_cert, "CN=a\r\nVersion v9.\u001b[2J\u0085\u2028");
  assert.equal(bannerName("CN=név ✓"), "CN=név ✓");
});

Deno.test("the client reads back the TLS line the server writes", () => {
  assert.deepEqual(parseTlsBannerText(`Version v2.\n${renderTlsBanner(FACTS)}hello`), {
    protocol: "TLSv1.3",
    cipher: "TLS_AES_256_GCM_SHA384",
    serverName: "v2.example.com",
    alpn: "echo",
  });
  assert.deepEqual(
    parseTlsBannerText(renderTlsBanner({ ...FACTS, serverName: undefined, alpn: undefined })),
    {
      protocol: "TLSv1.3",
      cipher: "TLS_AES_256_GCM_SHA384",
      serverName: undefined,
      alpn: undefined,
    },
  );
  assert.equal(parseTlsBannerText("Version v2.\nTLS is great.\n"), undefined);
});

Deno.test("a ClientHello is recognised by its first six bytes, and nothing else is", () => {
  assert.equal(looksLikeClientHello(CLIENT_HELLO_START), true);
  assert.equal(looksLikeClientHello(Uint8Array.from([0x16, 0x03, 0x03, 0, 5, 1])), true);
  for (
    const other of [
      CLIENT_HELLO_START.subarray(0, 5), // too short to tell
      encoder.encode("hello\n"),
      encoder.encode("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
      Uint8Array.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x02]), // a ServerHello
      Uint8Array.from([0x17, 0x03, 0x03, 0x00, 0x10, 0x01]), // application data
      Uint8Array.from([0x16, 0x02, 0x00, 0x00, 0x10, 0x01]), // SSL 2 version
    ]
  ) assert.equal(looksLikeClientHello(other), false, JSON.stringify(Array.from(other)));
});

/** The first bytes a real TLS client sends: connectTls against a listener that only reads. */
async function realClientHello(serverName?: string, alpn?: string[]): Promise<Uint8Array> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const connecting = connectTls("127.0.0.1", listener.addr.port, {
    insecure: true,
    serverName,
    alpn,
  });
  using conn = await listener.accept();
  const head = await readExactly(conn, 5);
  const hello = concatBytes([head, await readExactly(conn, clientHelloRecordLength(head)! - 5)]);
  conn.close();
  await assert.rejects(connecting);
  return hello;
}

Deno.test("a ClientHello's server name is read from its record, and nothing but a host name", async () => {
  const hello = await realClientHello("v2.example.com");
  assert.equal(looksLikeClientHello(hello), true);
  assert.equal(clientHelloRecordLength(hello), hello.length);
  assert.equal(clientHelloServerName(hello), "v2.example.com");
  assert.equal(clientHelloServerName(await realClientHello()), undefined, "an IP: no SNI");
  for (let cut = 0; cut < hello.length; cut += 7) {
    const name = clientHelloServerName(hello.subarray(0, cut));
    assert.ok(name === undefined || name === "v2.example.com", `cut at ${cut}`);
  }
  assert.equal(clientHelloRecordLength(hello.subarray(0, 4)), undefined);
  // A name that is not a host name (here with a newline) is not returned, so it is never logged.
  const at = indexOfBytes(hello, encoder.encode("v2.example.com"));
  const forged = hello.slice();
  forged[at + 2] = 0x0a;
  assert.equal(clientHelloServerName(forged), undefined);
});

/** A ClientHello of `version` with `extensions`, in one record, as an old or odd client sends it. */
function forgedHello(version: number, extensions: [number, number[]][]): Uint8Array {
  const u16 = (n: number) => [n >> 8, n & 0xff];
  const body = extensions.flatMap(([type, data]) => [...u16(type), ...u16(data.length), ...data]);
  const hello = [
    ...u16(version),
    ...new Uint8Array(32), // random
    0, // session id
    ...u16(2),
    0x00,
    0x2f, // one cipher suite
    1,
    0, // compression: null
    ...(extensions.length > 0 ? [...u16(body.length), ...body] : []),
  ];
  const handshake = [1, 0, ...u16(hello.length), ...hello];
  return Uint8Array.from([0x16, 0x03, 0x01, ...u16(handshake.length), ...handshake]);
}

Deno.test("what a ClientHello offers (versions, ALPN), and what the server refuses before the handshake", async () => {
  const hello = await realClientHello("v2.example.com", ["h2", "echo"]);
  const offer = readClientHello(hello)!;
  assert.deepEqual(offer, { versions: [0x0304, 0x0303], alpn: ["h2", "echo"] });
  assert.equal(clientHelloRefusal(offer, ["echo"]), undefined);
  assert.equal(clientHelloRefusal(offer, []), undefined, "TLS_ALPN=off");
  assert.deepEqual(clientHelloRefusal(offer, ["x", "y"]), {
    alert: 120,
    detail: "no common ALPN protocol: the client offered h2,echo, none of TLS_ALPN=x,y",
  });
  assert.deepEqual(readClientHello(await realClientHello()), {
    versions: [0x0304, 0x0303],
    alpn: [],
  });
  for (let cut = 0; cut < hello.length; cut++) {
    assert.equal(readClientHello(hello.subarray(0, cut)), undefined, `cut at ${cut}`);
  }
  const versionsRefused: [Uint8Array, string][] = [
    [forgedHello(0x0302, []), "the client offered TLS 1.1 at most"],
    [forgedHello(0x0300, []), "the client offered SSL 3.0 at most"],
    [
      forgedHello(0x0303, [[43, [4, 0x3a, 0x3a, 0x03, 0x02]]]),
      "the client offered TLS 1.1 at most",
    ],
    [forgedHello(0x0303, [[43, [2, 0x7a, 0x7a]]]), "the client offered no TLS version"],
  ];
  for (const [forged, offered] of versionsRefused) {
    assert.deepEqual(clientHelloRefusal(readClientHello(forged)!, ["echo"]), {
      alert: 70,
      detail: `${offered}; allowed: TLS 1.2, TLS 1.3`,
    });
  }
  const tls12 = readClientHello(forgedHello(0x0303, [[16, [0, 3, 2, 0x68, 0x32]]]))!;
  assert.deepEqual(tls12, { versions: [0x0303], alpn: ["h2"] });
  assert.equal(clientHelloRefusal(tls12, ["echo"])?.alert, 120);
  // A ClientHello longer than its record is the TLS engine's to judge.
  const spanning = hello.slice();
  spanning[8] += 1;
  assert.equal(readClientHello(spanning), undefined);
  assert.deepEqual(alertRecord(70, hello), Uint8Array.of(0x15, 3, 1, 0, 2, 2, 70));
  assert.equal(tlsVersionName(0x0304), "TLS 1.3");
  assert.equal(tlsVersionName(0x7f1c), "0x7f1c");
});

Deno.test("the start of a non-TLS stream is quoted as text, cut at 32 bytes, and escaped in its record", () => {
  assert.equal(quoteStart(encoder.encode("hello\n")), '"hello\n"');
  assert.equal(quoteStart(encoder.encode("héllo")), '"héllo"');
  assert.equal(quoteStart(encoder.encode("a".repeat(40))), `"${"a".repeat(32)}"…`);
  const hostile = quoteStart(Uint8Array.of(0x78, 0x1b, 0x5b, 0x32, 0x4a, 0xc2, 0x85, 0x0d, 0x0a));
  const record = formatTextRecord({
    level: "info",
    timestamp: 0,
    rawMessage: "Connection refused: {detail}",
    properties: { detail: `not TLS: the client sent plain text ${hostile}` },
  });
  assert.equal(
    record.slice(20),
    'Connection refused: not TLS: the client sent plain text "x\\x1b[2J\\u0085\\r\\n"\n',
  );
});

Deno.test("a generated certificate's names: localhost, loopback, pod name and IP, TLS_SERVER_NAMES", () => {
  assert.deepEqual(generatedCertificateNames({}, []), ["localhost", "127.0.0.1", "::1"]);
  assert.deepEqual(
    generatedCertificateNames({ name: "tcp-echo-v1-abc", ip: "10.1.2.3" }, [
      "tcp-echo.default.svc",
      "localhost",
    ]),
    ["localhost", "127.0.0.1", "::1", "tcp-echo-v1-abc", "10.1.2.3", "tcp-echo.default.svc"],
  );
});

Deno.test("TLS configuration: valid forms, and one clear line for each mistake", () => {
  const tls = loadConfig({ TLS_PORT: "8443,9443", TLS_ALPN: "echo, h2", TLS_SERVER_NAMES: "a.b" })
    .tls;
  assert.deepEqual(tls.ports, [8443, 9443]);
  assert.deepEqual(tls.alpn, ["echo", "h2"]);
  assert.deepEqual(tls.serverNames, ["a.b"]);
  assert.equal(tls.clientAuth, "optional");
  assert.deepEqual(loadConfig({}).tls.ports, []);
  assert.deepEqual(loadConfig({ TLS_PORT: "8443", TLS_ALPN: "off" }).tls.alpn, []);
  const cases: [Record<string, string>, string][] = [
    [
      { TLS_PORT: "3333" },
      'invalid TLS_PORT="3333": port 3333 is also in TCP_PORT; allowed: ports not in TCP_PORT',
    ],
    [
      { TLS_PORT: "0" },
      'invalid TLS_PORT="0": allowed: an integer from 1 to 65535, or a comma list of different ' +
      "ones, none of them in TCP_PORT",
    ],
    [
      { TLS_PORT: "8443", TLS_CERT_FILE: "/c.pem" },
      "TLS_KEY_FILE is unset: allowed: TLS_CERT_FILE and TLS_KEY_FILE both set, or both unset " +
      "(a generated certificate)",
    ],
    [
      { TLS_PORT: "8443", TLS_CLIENT_AUTH: "require" },
      "TLS_CLIENT_AUTH needs TLS_CLIENT_CA: allowed: set TLS_CLIENT_CA too",
    ],
    [
      { TLS_PORT: "8443", TLS_CLIENT_CA: "/ca.pem", TLS_CLIENT_AUTH: "always" },
      'invalid TLS_CLIENT_AUTH="always": allowed: optional, require',
    ],
    [
      { TLS_CERT_FILE: "/c.pem", TLS_KEY_FILE: "/k.pem" },
      "TLS_CERT_FILE is set but TLS_PORT is not: allowed: set TLS_PORT too",
    ],
    [
      { TLS_PORT: "8443", TLS_SERVER_NAMES: "ok.example.com,bad name" },
      'invalid TLS_SERVER_NAMES="ok.example.com,bad name": allowed: a comma list of DNS names ' +
      "(*.example.com allowed) or IP addresses",
    ],
    [
      { TLS_PORT: "8443", TLS_ALPN: "echo,,h2" },
      'invalid TLS_ALPN="echo,,h2": allowed: a comma list of protocol names (printable ASCII), ' +
      "or off",
    ],
  ];
  for (const [env, message] of cases) {
    assert.throws(() => loadConfig(env), (error) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(error.message, message);
      return true;
    });
  }
});

Deno.test("client certificates: issued by the CA and in date, or the reason why not", async () => {
  await using pki = await makeTestPki();
  const load = async (name: string) =>
    ChainCertificate.read(derFromPem(await pki.read(`${name}.pem`)));
  const authorities = [await load("ca")];
  const now = new Date();
  const client = await load("client");
  assert.equal(await clientCertificateProblem([client], authorities, now), undefined);
  const expired = await load("expired-client");
  assert.equal(
    await clientCertificateProblem([expired], authorities, now),
    `client certificate CN=expired expired on ${expired.notAfter.toISOString().slice(0, 19)}Z`,
  );
  assert.equal(
    await clientCertificateProblem([await load("stranger-client")], authorities, now),
    "client certificate CN=stranger (issuer CN=someone else's CA) is not issued by a " +
      "TLS_CLIENT_CA certificate",
  );
  const early = new Date(client.notBefore.getTime() - 60_000);
  assert.equal(
    await clientCertificateProblem([client], authorities, early),
    `client certificate CN=client,O=test is not valid before ${
      client.notBefore.toISOString().slice(0, 19)
    }Z`,
  );
  // Through an intermediate: the chain the client sends leads to the CA.
  const chained = await load("chained-client-alone");
  const intermediate = await load("intermediate");
  assert.equal(
    await clientCertificateProblem([chained, intermediate], authorities, now),
    undefined,
  );
  assert.equal(
    await clientCertificateProblem([chained, intermediate, authorities[0]], authorities, now),
    undefined,
    "the CA itself sent along",
  );
  assert.equal(
    await clientCertificateProblem([chained], authorities, now),
    "client certificate CN=chained,O=test (issuer CN=tcp-echo test intermediate) is not issued " +
      "by a TLS_CLIENT_CA certificate",
    "without the intermediate",
  );
  assert.equal(
    await clientCertificateProblem([chained, intermediate], [intermediate], now),
    undefined,
    "the intermediate as the CA",
  );
  // A wrong certificate in the middle breaks the path.
  assert.equal(
    await clientCertificateProblem([chained, client], authorities, now),
    "client certificate CN=chained,O=test (issuer CN=tcp-echo test intermediate) is not issued " +
      "by a TLS_CLIENT_CA certificate",
  );
  // Names node:crypto cannot read (BMPString) all along the path: checked all the same.
  const bmpIntermediate = await load("bmp-intermediate");
  const bmpChained = await load("bmp-chained-client-alone");
  assert.equal(bmpChained.names.issuer, "CN=név intermediate");
  assert.equal(
    await clientCertificateProblem([bmpChained, bmpIntermediate], authorities, now),
    undefined,
  );
  assert.equal(
    await clientCertificateProblem([bmpChained, intermediate], authorities, now),
    "client certificate CN=bmp-chained (issuer CN=név intermediate) is not issued by a " +
      "TLS_CLIENT_CA certificate",
  );
  // An intermediate that is no CA does not issue: a client certificate signed "through" another.
  const leafAsIssuer = await load("leaf-signed-client-alone");
  assert.equal(
    await clientCertificateProblem([leafAsIssuer, client], authorities, now),
    "intermediate certificate CN=client,O=test is not a CA certificate",
  );
});

Deno.test("a client certificate that cannot be read is refused without the error's words", async () => {
  await using pki = await makeTestPki();
  const settings = loadConfig({ TLS_PORT: "8443", TLS_CLIENT_CA: pki.path("ca.pem") }).tls;
  const credentials = await TlsCredentials.load(settings, { pod: {} });
  try {
    const sockets: [string, unknown][] = [
      ["getPeerCertificate throws", {
        getPeerCertificate() {
          throw new TypeError("Cannot read properties of undefined (reading 'split')");
        },
      }],
      ["no certificate in the bytes", {
        getPeerCertificate: () => ({ raw: encoder.encode("junk") }),
      }],
    ];
    for (const [what, socket] of sockets) {
      await assert.rejects(credentials.verifyClient(socket as nodeTls.TLSSocket), (error) => {
        assert.ok(error instanceof TlsRefusal, what);
        assert.equal(error.reason, "tls_client_certificate");
        assert.equal(error.told, "client certificate could not be read");
        assert.match(error.detail, /^client certificate could not be read: \S/);
        return true;
      });
    }
  } finally {
    credentials.close();
  }
});

// ---------------------------------------------------------------------------
// Over real sockets
// ---------------------------------------------------------------------------

/** Reads the banner (up to and including its TLS line) from a TLS stream. */
async function readBanner(stream: TlsStream, expected: string): Promise<void> {
  assert.equal(
    decoder.decode(await readExactly(stream, encoder.encode(expected).length)),
    expected,
  );
}

const TLS_LINE = (serverName: string, alpn = "echo") =>
  `TLS TLSv1.3 TLS_AES_256_GCM_SHA384, server name ${serverName}, ALPN ${alpn}.\n`;

Deno.test("TLS port with a generated certificate: banner, TLS line, byte-exact echo, open record", async () => {
  await using s = await startTestServer({
    ...ALL_BANNER_ENV,
    TLS_PORT: "any",
    TLS_SERVER_NAMES: "v2.example.com,10.9.8.7",
  });
  const start = await s.logs.waitFor((r) => r.rawMessage === "TLS certificate {subject}", "cert");
  assert.equal(start.properties.source, "generated");
  assert.equal(
    start.properties.names,
    "DNS:localhost, IP Address:127.0.0.1, IP Address:::1, DNS:tcp-echo-v1-7c775f57c9-frprp, " +
      "IP Address:172.16.2.90, DNS:v2.example.com, IP Address:10.9.8.7",
  );
  assert.match(String(start.properties.sha256), /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);

  const stream = await s.connectTls({
    serverName: "v2.example.com",
    alpn: ["echo"],
    insecure: true,
  });
  try {
    assert.equal(stream.peerCertificate?.fingerprint, start.properties.sha256);
    await readBanner(stream, ALL_BANNER_TEXT + TLS_LINE("v2.example.com"));
    const payload = randomBytes(1024 * 1024);
    assert.deepEqual(await roundTrip(stream, payload), payload);
    const every = Uint8Array.from({ length: 256 }, (_, i) => i);
    assert.deepEqual(await roundTrip(stream, every), every);
  } finally {
    stream.close();
  }
  const open = await s.logs.waitFor(isOpen, "open record");
  assert.deepEqual({ ...open.properties, client: "-" }, {
    id: open.properties.id,
    client: "-",
    port: s.tlsPort,
    family: "IPv4",
    tls: "TLSv1.3",
    cipher: "TLS_AES_256_GCM_SHA384",
    sni: "v2.example.com",
    alpn: "echo",
  });
  const closed = await s.logs.waitFor(isClosedRecord(String(open.properties.id)), "closed");
  assert.equal(closed.properties.bytes_in, 1024 * 1024 + 256);
  // The plain port is unchanged beside it.
  using plain = await s.connect();
  assert.equal(decoder.decode(await readExactly(plain, ALL_BANNER_TEXT.length)), ALL_BANNER_TEXT);
  assert.equal(decoder.decode(await roundTrip(plain, encoder.encode("plain"))), "plain");
});

Deno.test("TLS port: no SNI, unknown SNI (default certificate), no ALPN, ALPN off", async (t) => {
  await using pki = await makeTestPki();
  const files = pki.serverFiles;
  await using s = await startTestServer({ NODE_NAME: "n", TLS_PORT: "any", ...files });
  const banner = "Welcome, you are connected to node n.\n";
  await t.step("SNI v1.example.com, verified against the CA", async () => {
    const stream = await s.connectTls({
      serverName: "v1.example.com",
      alpn: ["echo"],
      ca: pki.caPem,
    });
    try {
      assert.equal(stream.peerCertificate?.subject, "CN=tcp-echo test server");
      await readBanner(stream, banner + TLS_LINE("v1.example.com"));
    } finally {
      stream.close();
    }
  });
  await t.step("no SNI (an IP address), no ALPN offered", async () => {
    const stream = await s.connectTls({ ca: pki.caPem });
    try {
      await readBanner(stream, banner + TLS_LINE("none", "none"));
      assert.equal(decoder.decode(await roundTrip(stream, encoder.encode("x"))), "x");
    } finally {
      stream.close();
    }
  });
  await t.step("an unknown SNI gets the default certificate, and the banner says so", async () => {
    const stream = await s.connectTls({ serverName: "unknown.example.org", insecure: true });
    try {
      assert.equal(stream.peerCertificate?.subject, "CN=tcp-echo test server");
      await readBanner(stream, banner + TLS_LINE("unknown.example.org", "none"));
    } finally {
      stream.close();
    }
    // A client that checks the name refuses that certificate, as it should.
    await assert.rejects(
      s.connectTls({ serverName: "unknown.example.org", ca: pki.caPem }),
      /unknown\.example\.org|certificate|name/i,
    );
    await s.logs.waitFor(
      (r) => r.properties.reason === "tls_handshake_failed",
      "the server's record of that failed handshake",
    );
  });
  await t.step("an ALPN the server does not speak is refused, counted", async () => {
    const rejected = s.server.stats.forPort(s.tlsPort).rejected;
    const before = rejected.tls_handshake_failed;
    await assert.rejects(s.connectTls({ alpn: ["h2"], ca: pki.caPem }));
    await s.logs.waitFor(
      (r) =>
        r.properties.detail ===
          "no common ALPN protocol: the client offered h2, none of TLS_ALPN=echo",
      "the refusal record",
    );
    assert.equal(rejected.tls_handshake_failed, before + 1);
  });
});

Deno.test("TLS port: line mode, idle timeout and drain behave as on plain ports", async (t) => {
  await t.step("ECHO_PREFIX", async () => {
    await using s = await startTestServer({ TLS_PORT: "any", ECHO_PREFIX: "hello" });
    const stream = await s.connectTls({ insecure: true });
    try {
      await readBanner(stream, TLS_LINE("none", "none"));
      await writeAll(stream, encoder.encode("one\ntwo\n"));
      assert.equal(decoder.decode(await readExactly(stream, 20)), "hello one\nhello two\n");
    } finally {
      stream.close();
    }
  });
  await t.step("IDLE_TIMEOUT closes with reason idle", async () => {
    await using s = await startTestServer({ TLS_PORT: "any", IDLE_TIMEOUT: "200ms" });
    const stream = await s.connectTls({ insecure: true });
    try {
      const banner = TLS_LINE("none", "none");
      assert.equal(decoder.decode(await readToEnd(stream)), banner);
    } finally {
      stream.close();
    }
    const id = await s.connectionId(0);
    assert.equal((await s.logs.waitFor(isClosedRecord(id), "closed")).properties.reason, "idle");
  });
  await t.step("shutdown: the grace lets a TLS connection finish, then closes it", async () => {
    await using s = await startTestServer({ TLS_PORT: "any" });
    const stream = await s.connectTls({ insecure: true });
    try {
      await readBanner(stream, TLS_LINE("none", "none"));
      const stopping = s.server.shutdown({ drainDelayMs: 0, graceMs: 300 });
      assert.equal(decoder.decode(await roundTrip(stream, encoder.encode("during"))), "during");
      await stopping;
      assert.equal(await within(1_000, "the end", stream.read(new Uint8Array(1))), null);
    } finally {
      stream.close();
    }
    const id = await s.connectionId(0);
    assert.equal(
      (await s.logs.waitFor(isClosedRecord(id), "closed")).properties.reason,
      "shutdown",
    );
  });
});

/** The refusal record of the n-th refused connection. */
function refusal(s: TestServer, reason: string) {
  return s.logs.waitFor(
    (r) => r.rawMessage === "Connection refused: {detail}" && r.properties.reason === reason,
    `refusal ${reason}`,
  );
}

Deno.test("TLS bad input: each is refused with a reason and counted; the server stays healthy", async (t) => {
  await using s = await startTestServer(
    { TLS_PORT: "any", ADMIN_PORT: "any" },
    { tlsHandshakeTimeoutMs: 300 },
  );
  const rejected = s.server.stats.forPort(s.tlsPort).rejected;
  const rawTls = () => Deno.connect({ hostname: "127.0.0.1", port: s.tlsPort });

  await t.step("plain text to the TLS port", async () => {
    using conn = await rawTls();
    await writeAll(conn, encoder.encode("hello\n"));
    // One line a person reads (nc, telnet), nothing echoed, then the close.
    assert.equal(
      decoder.decode(await readToEnd(conn)),
      `tcp-echo: port ${s.tlsPort} speaks TLS: connect with a TLS client (e.g. openssl s_client ` +
        `-connect HOST:${s.tlsPort}), or without TLS to a plain port\n`,
    );
    const record = await refusal(s, "tls_plaintext");
    assert.equal(
      record.properties.detail,
      'not TLS: the client sent plain text "hello\n"; connect with TLS, or to a TCP_PORT',
    );
    assert.equal(rejected.tls_plaintext, 1);
  });

  await t.step("a TLS ClientHello to the plain port", async () => {
    // A real client's ClientHello: connectTls against the plain port.
    await assert.rejects(
      connectTls("127.0.0.1", s.port, { insecure: true, serverName: "v2.example.com" }),
    );
    const id = await s.connectionId(0);
    const record = await s.logs.waitFor(
      (r) => r.properties.id === id && String(r.rawMessage).startsWith("A TLS ClientHello"),
      "the ClientHello record",
    );
    assert.equal(
      withoutTimestamp(s.logs.linesOf(id).find((line) => line.includes("ClientHello"))!),
      `${id} - A TLS ClientHello came to plain port ${s.port}: connect to a TLS_PORT, or without ` +
        `TLS. client=${record.properties.client} server_name=v2.example.com\n`,
    );
    const closed = await s.logs.waitFor(isClosedRecord(id), "closed");
    assert.equal(closed.properties.reason, "tls_on_plain_port");
    assert.ok(Number(closed.properties.bytes_in) > 64, "the whole first record was read");
    assert.equal(s.server.stats.forPort(s.port).closed.tls_on_plain_port, 1);
  });

  await t.step("a handshake that never starts, and one that stalls, time out", async () => {
    using silent = await rawTls();
    using stalled = await rawTls();
    await writeAll(stalled, CLIENT_HELLO_START);
    assert.equal((await readToEnd(silent)).length, 0);
    assert.equal((await readToEnd(stalled)).length, 0);
    const record = await refusal(s, "tls_handshake_timeout");
    assert.equal(record.properties.detail, "no TLS handshake in 300 ms");
    assert.equal(rejected.tls_handshake_timeout, 2);
  });

  await t.step("a truncated record, then the client's FIN", async () => {
    using conn = await rawTls();
    await writeAll(conn, CLIENT_HELLO_START);
    await conn.closeWrite();
    assert.equal((await readToEnd(conn)).length, 0);
    const record = await refusal(s, "tls_handshake_failed");
    assert.equal(record.properties.detail, "the connection ended during the handshake");
  });

  await t.step("a huge ClientHello is refused at once, not read to its end", async () => {
    const before = rejected.tls_handshake_failed;
    using conn = await rawTls();
    // A ClientHello that claims 16 MiB, sent as 64 full records: 1 MiB in all.
    const record = new Uint8Array(5 + 16_384);
    record.set([0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0xff, 0xff, 0xff, 0x03, 0x03]);
    const sending = (async () => {
      for (let i = 0; i < 64; i++) await writeAll(conn, record);
    })().catch(() => "stopped: the server closed");
    assert.equal((await readToEnd(conn)).length, 0);
    await sending;
    await s.logs.waitFor(
      (r) =>
        r.properties.reason === "tls_handshake_failed" && rejected.tls_handshake_failed > before,
      "the refusal",
    );
    assert.equal(rejected.tls_handshake_timeout, 2, "not cut by the timeout");
  });

  await t.step(
    "healthy after all that: a TLS echo, /healthz and the counters in /metrics",
    async () => {
      const stream = await s.connectTls({ insecure: true });
      try {
        await readBanner(stream, TLS_LINE("none", "none"));
        assert.equal(decoder.decode(await roundTrip(stream, encoder.encode("fine"))), "fine");
      } finally {
        stream.close();
      }
      const admin = s.server.adminAddress!;
      assert.equal((await adminRequest(admin, "/healthz")).status, 200);
      const metrics = (await adminRequest(admin, "/metrics")).body;
      const sample = (name: string, labels: string) => {
        const match = new RegExp(`^${name}\\{${labels}\\} (\\d+)$`, "m").exec(metrics);
        return match ? Number(match[1]) : undefined;
      };
      const port = `port="${s.tlsPort}"`;
      assert.equal(sample("tcp_echo_port_info", `${port},tls="true"`), 1);
      assert.equal(sample("tcp_echo_port_info", `port="${s.port}",tls="false"`), 1);
      assert.equal(
        sample("tcp_echo_connections_rejected_total", `${port},reason="tls_plaintext"`),
        1,
      );
      assert.equal(
        sample("tcp_echo_connections_rejected_total", `${port},reason="tls_handshake_timeout"`),
        2,
      );
      assert.equal(
        sample("tcp_echo_connections_closed_total", `port="${s.port}",reason="tls_on_plain_port"`),
        1,
      );
    },
  );
});

Deno.test("client certificates: shown when verified; missing, expired or untrusted refused", async (t) => {
  await using pki = await makeTestPki();
  const files = {
    ...pki.serverFiles,
    TLS_CLIENT_CA: pki.path("ca.pem"),
  };
  const as = async (name: string) => ({
    cert: await pki.read(`${name}.pem`),
    key: await pki.read(`${name.replace(/-alone$/, "")}.key`),
    ca: pki.caPem,
  });
  for (const mode of ["optional", "require"]) {
    await t.step(`TLS_CLIENT_AUTH=${mode}`, async () => {
      await using s = await startTestServer({
        TLS_PORT: "any",
        TLS_CLIENT_AUTH: mode,
        ...files,
      });
      const rejected = s.server.stats.forPort(s.tlsPort).rejected;
      const verified = await s.connectTls(await as("client"));
      try {
        await readBanner(
          verified,
          TLS_LINE("none", "none") + "Client certificate CN=client,O=test.\n",
        );
        assert.equal(decoder.decode(await roundTrip(verified, encoder.encode("me"))), "me");
      } finally {
        verified.close();
      }
      const open = await s.logs.waitFor(isOpen, "open");
      assert.equal(open.properties.client_cert, "CN=client,O=test");
      assert.match(String(open.properties.client_cert_sha256), /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
      // Issued through an intermediate, which the client sends along.
      const chained = await s.connectTls(await as("chained-client"));
      try {
        await readBanner(
          chained,
          TLS_LINE("none", "none") + "Client certificate CN=chained,O=test.\n",
        );
      } finally {
        chained.close();
      }

      const refusedWith = async (name: string | undefined, detail: RegExp) => {
        const before = rejected.tls_client_certificate;
        const stream = await s.connectTls(name ? await as(name) : { ca: pki.caPem });
        try {
          // TLS 1.3: the client's handshake is done before the server checks its certificate;
          // the server says why inside TLS, then closes.
          const said = decoder.decode(await readToEnd(stream));
          assert.match(said, new RegExp(`^tcp-echo: refused: ${detail.source}\n$`));
        } finally {
          stream.close();
        }
        const record = await s.logs.waitFor(
          (r) =>
            r.properties.reason === "tls_client_certificate" &&
            detail.test(String(r.properties.detail)),
          `refusal of ${name}`,
        );
        assert.match(String(record.properties.detail), detail);
        assert.equal(rejected.tls_client_certificate, before + 1);
      };
      await refusedWith("expired-client", /client certificate CN=expired expired on .+/);
      await refusedWith(
        "chained-client-alone",
        /client certificate CN=chained,O=test \(issuer CN=tcp-echo test intermediate\) is not issued by a TLS_CLIENT_CA certificate/,
      );
      await refusedWith(
        "stranger-client",
        /client certificate CN=stranger \(issuer CN=someone else's CA\) is not issued by a TLS_CLIENT_CA certificate/,
      );
      if (mode === "require") {
        await refusedWith(undefined, /no client certificate \(TLS_CLIENT_AUTH=require\)/);
      } else {
        const anonymous = await s.connectTls({ ca: pki.caPem });
        try {
          await readBanner(anonymous, TLS_LINE("none", "none"));
          assert.equal(decoder.decode(await roundTrip(anonymous, encoder.encode("!"))), "!");
        } finally {
          anonymous.close();
        }
      }
    });
  }
});

/** What the banner and the open record say of a client certificate. */
interface NamedClient {
  /** The certificate's file in the test PKI (`NAME.pem`, `NAME.key`). */
  readonly file: string;
  /** The banner's `Client certificate {}.` value. */
  readonly banner: string;
  /** The record's `client_cert`: the banner's name, control characters as they are. */
  readonly name: string;
  /** The record's `client_cert_subject`. */
  readonly subject: string;
}

const SLEEP_SPIFFE_ID = "spiffe://cluster.local/ns/default/sa/sleep";

/** Client certificates as they are issued in the wild, and what the server calls them. */
const NAMED_CLIENTS: readonly NamedClient[] = [
  {
    file: "client",
    banner: "CN=client,O=test",
    name: "CN=client,O=test",
    subject: "CN=client,O=test",
  },
  {
    file: "spiffe-client",
    banner: SLEEP_SPIFFE_ID,
    name: SLEEP_SPIFFE_ID,
    subject: "O=tcp-echo test",
  },
  {
    file: "san-only-client",
    banner: "DNS:sleep.default.svc",
    name: "DNS:sleep.default.svc",
    subject: "",
  },
  { file: "bmp-client", banner: "CN=bmp-név", name: "CN=bmp-név", subject: "CN=bmp-név" },
  {
    file: "utf8-client",
    banner: "CN=név,O=Ünïcødé ✓",
    name: "CN=név,O=Ünïcødé ✓",
    subject: "CN=név,O=Ünïcødé ✓",
  },
  {
    file: "printable-client",
    banner: "CN=printable,C=NL",
    name: "CN=printable,C=NL",
    subject: "CN=printable,C=NL",
  },
  { file: "t61-client", banner: "CN=t61-café", name: "CN=t61-café", subject: "CN=t61-café" },
  {
    file: "multi-client",
    banner: "CN=a+UID=b,O=test",
    name: "CN=a+UID=b,O=test",
    subject: "CN=a+UID=b,O=test",
  },
  // Hostile CNs: one attribute each, whatever is inside; the banner is one line.
  {
    file: "comma-client",
    banner: "CN=a\\,O=forged",
    name: "CN=a\\,O=forged",
    subject: "CN=a\\,O=forged",
  },
  {
    file: "newline-client",
    banner: "CN=a\\0AO=forged",
    name: "CN=a\nO=forged",
    subject: "CN=a\nO=forged",
  },
  { file: "cr-client", banner: "CN=a\\0D", name: "CN=a\r", subject: "CN=a\r" },
  {
    file: "esc-client",
    banner: "CN=\\1B[31mred\\1B[0m",
    name: "CN=\u001b[31mred\u001b[0m",
    subject: "CN=\u001b[31mred\u001b[0m",
  },
];

/** Connects with `client`'s certificate; checks the banner, the echo and the open record. */
async function assertNamed(s: TestServer, pki: TestPki, client: NamedClient): Promise<void> {
  const pem = await pki.read(`${client.file}.pem`);
  const stream = await s.connectTls({
    cert: pem,
    key: await pki.read(`${client.file}.key`),
    ca: pki.caPem,
  });
  let port: number;
  try {
    port = stream.localAddr.port;
    await readBanner(stream, TLS_LINE("none", "none") + `Client certificate ${client.banner}.\n`);
    assert.equal(decoder.decode(await roundTrip(stream, encoder.encode("me"))), "me");
  } finally {
    stream.close();
  }
  const open = await s.logs.waitFor(
    (r) => isOpen(r) && r.properties.client === `127.0.0.1:${port}`,
    `the open record of ${client.file}`,
  );
  assert.deepEqual({ ...open.properties, id: "-" }, {
    id: "-",
    client: `127.0.0.1:${port}`,
    port: s.tlsPort,
    family: "IPv4",
    tls: "TLSv1.3",
    cipher: "TLS_AES_256_GCM_SHA384",
    sni: "none",
    alpn: "none",
    client_cert: client.name,
    client_cert_subject: client.subject,
    client_cert_issuer: "CN=tcp-echo test CA",
    client_cert_sha256: new X509Certificate(pem).fingerprint256,
  }, client.file);
}

Deno.test("client certificates as issued in the wild: verified, named by SPIFFE ID or RFC 4514 subject", async (t) => {
  await using pki = await makeTestPki();
  await using s = await startTestServer({
    TLS_PORT: "any",
    ...pki.serverFiles,
    TLS_CLIENT_CA: pki.path("ca.pem"),
    TLS_CLIENT_AUTH: "require",
  });
  for (const client of NAMED_CLIENTS) {
    await t.step(client.file, () => assertNamed(s, pki, client));
  }
  const rejected = s.server.stats.forPort(s.tlsPort).rejected;
  assert.equal(rejected.tls_client_certificate, 0);
  assert.equal(rejected.tls_handshake_failed, 0);
});

Deno.test({
  name:
    "an Istio workload's certificate made by openssl (empty subject, SPIFFE ID) is verified and named",
  ignore: await ignoreWithout("openssl", "the openssl-made client certificate test"),
  async fn() {
    await using pki = await makeTestPki({ openssl: true });
    const verify = await new Deno.Command("openssl", {
      args: ["verify", "-CAfile", pki.path("ca.pem"), pki.path("istio-client.pem")],
    }).output();
    assert.equal(decoder.decode(verify.stdout), `${pki.path("istio-client.pem")}: OK\n`);
    await using s = await startTestServer({
      TLS_PORT: "any",
      ...pki.serverFiles,
      TLS_CLIENT_CA: pki.path("ca.pem"),
    });
    await assertNamed(s, pki, {
      file: "istio-client",
      banner: SLEEP_SPIFFE_ID,
      name: SLEEP_SPIFFE_ID,
      subject: "",
    });
  },
});

Deno.test("a SAN-only server certificate (empty subject, as cert-manager issues it) is served and reloaded", async (t) => {
  await using pki = await makeTestPki();
  const serveSanOnly = async (s: TestServer) => {
    const stream = await s.connectTls({ ca: pki.caPem, serverName: "v1.example.com" });
    try {
      assert.equal(stream.peerCertificate?.subject, "");
      assert.equal(
        stream.peerCertificate?.fingerprint,
        new X509Certificate(await pki.read("san-only-server.pem")).fingerprint256,
      );
      await readBanner(stream, TLS_LINE("v1.example.com", "none"));
    } finally {
      stream.close();
    }
  };
  await t.step("from the start", async () => {
    await using s = await startTestServer({
      TLS_PORT: "any",
      TLS_CERT_FILE: pki.path("san-only-server.pem"),
      TLS_KEY_FILE: pki.path("san-only-server.key"),
    });
    const start = await s.logs.waitFor((r) => r.rawMessage === "TLS certificate {subject}", "cert");
    assert.equal(start.properties.subject, "");
    assert.equal(
      start.properties.names,
      "DNS:localhost, DNS:v1.example.com, DNS:v2.example.com, IP Address:127.0.0.1",
    );
    await serveSanOnly(s);
  });
  await t.step("rotated to", async () => {
    const dir = await Deno.makeTempDir({ prefix: "tcp-echo-live-" });
    try {
      const cert = `${dir}/tls.crt`;
      const key = `${dir}/tls.key`;
      await Deno.copyFile(pki.path("server.pem"), cert);
      await Deno.copyFile(pki.path("server.key"), key);
      await using s = await startTestServer(
        { TLS_PORT: "any", TLS_CERT_FILE: cert, TLS_KEY_FILE: key },
        {},
        50,
      );
      await Deno.copyFile(pki.path("san-only-server.key"), key);
      await Deno.copyFile(pki.path("san-only-server.pem"), cert);
      const reloaded = await s.logs.waitFor(
        (r) => r.rawMessage === "TLS certificate reloaded: {subject}",
        "the reload record",
      );
      assert.equal(reloaded.properties.subject, "");
      await serveSanOnly(s);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
});

/** Runs `openssl s_client` against the TLS port with `args`; resolves with what it printed. */
async function opensslClient(s: TestServer, args: readonly string[]): Promise<string> {
  const output = await within(
    5_000,
    "openssl s_client",
    new Deno.Command("openssl", {
      args: ["s_client", "-connect", `127.0.0.1:${s.tlsPort}`, ...args],
      stdin: "null",
    }).output(),
  );
  return decoder.decode(output.stdout) + decoder.decode(output.stderr);
}

Deno.test({
  name: "a client refused for its ALPN or its TLS version reads the fatal alert (openssl s_client)",
  ignore: await ignoreWithout("openssl", "the openssl s_client alert test"),
  async fn(t) {
    await using s = await startTestServer({ TLS_PORT: "any" });
    const rejected = s.server.stats.forPort(s.tlsPort).rejected;
    const cases: [string, string[], RegExp, string][] = [
      [
        "ALPN h2 only, TLS 1.3: no_application_protocol (RFC 7301 §3.2)",
        ["-alpn", "h2"],
        /:tlsv1 alert no application protocol:.*SSL alert number 120/,
        "no common ALPN protocol: the client offered h2, none of TLS_ALPN=echo",
      ],
      [
        "ALPN h2 and http/1.1, TLS 1.2",
        ["-alpn", "h2,http/1.1", "-tls1_2"],
        /:tlsv1 alert no application protocol:.*SSL alert number 120/,
        "no common ALPN protocol: the client offered h2,http/1.1, none of TLS_ALPN=echo",
      ],
      [
        "TLS 1.1 only: protocol_version (RFC 8446 §6.2)",
        ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
        /:tlsv1 alert protocol version:.*SSL alert number 70/,
        "the client offered TLS 1.1 at most; allowed: TLS 1.2, TLS 1.3",
      ],
    ];
    for (const [name, args, alert, detail] of cases) {
      await t.step(name, async () => {
        const before = rejected.tls_handshake_failed;
        assert.match(await opensslClient(s, args), alert);
        await s.logs.waitFor(
          (r) => r.properties.reason === "tls_handshake_failed" && r.properties.detail === detail,
          "the refusal record",
        );
        assert.equal(rejected.tls_handshake_failed, before + 1);
      });
    }
  },
});

Deno.test("certificate files are reloaded when they change; open connections keep going", async () => {
  await using pki = await makeTestPki();
  const dir = await Deno.makeTempDir({ prefix: "tcp-echo-live-" });
  try {
    const cert = `${dir}/tls.crt`;
    const key = `${dir}/tls.key`;
    await Deno.copyFile(pki.path("server.pem"), cert);
    await Deno.copyFile(pki.path("server.key"), key);
    await using s = await startTestServer(
      { TLS_PORT: "any", TLS_CERT_FILE: cert, TLS_KEY_FILE: key },
      {},
      50,
    );
    const before = await s.connectTls({ ca: pki.caPem, serverName: "localhost" });
    try {
      assert.equal(before.peerCertificate?.subject, "CN=tcp-echo test server");
      await readBanner(before, TLS_LINE("localhost", "none"));

      // Half a rotation first (new certificate, old key): reported, the old pair stays.
      await Deno.copyFile(pki.path("server2.pem"), cert);
      const refused = await s.logs.waitFor(
        (r) => String(r.rawMessage).startsWith("TLS files changed but cannot be used"),
        "the mismatch warning",
      );
      assert.equal(
        refused.properties.detail,
        `TLS_KEY_FILE=${
          JSON.stringify(key)
        }: the key does not belong to TLS_CERT_FILE; allowed: the private ` +
          "key of TLS_CERT_FILE's certificate",
      );
      const during = await s.connectTls({ ca: pki.caPem, serverName: "localhost" });
      assert.equal(during.peerCertificate?.subject, "CN=tcp-echo test server");
      during.close();

      // A file gone for a while: one warning, however many rounds it lasts.
      await Deno.rename(key, `${key}.away`);
      await s.logs.waitFor(
        (r) =>
          String(r.properties.detail).startsWith(
            `unreadable: TLS_KEY_FILE=${JSON.stringify(key)}: No such file`,
          ),
        "the unreadable warning",
      );
      const warnings = () =>
        s.logs.records.filter((r) =>
          String(r.rawMessage).startsWith("TLS files changed but cannot be used")
        ).length;
      const seen = warnings();
      await new Promise((resolve) => setTimeout(resolve, 300)); // six rounds of 50 ms
      assert.equal(warnings(), seen, "reported once");
      await Deno.rename(`${key}.away`, key);

      // The key follows, as the kubelet's atomic swap does in one step: the new pair is used.
      await Deno.copyFile(pki.path("server2.key"), key);
      const reloaded = await s.logs.waitFor(
        (r) => r.rawMessage === "TLS certificate reloaded: {subject}",
        "the reload record",
      );
      assert.equal(reloaded.properties.subject, "CN=tcp-echo rotated server");
      const after = await s.connectTls({ ca: pki.caPem, serverName: "localhost" });
      try {
        assert.equal(after.peerCertificate?.subject, "CN=tcp-echo rotated server");
        assert.equal(after.peerCertificate?.fingerprint, reloaded.properties.sha256);
        await readBanner(after, TLS_LINE("localhost", "none"));
      } finally {
        after.close();
      }
      // The connection opened before the rotation still echoes.
      const payload = randomBytes(100_000);
      assert.deepEqual(await roundTrip(before, payload), payload);
    } finally {
      before.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A v2 PROXY header: TCP over IPv4 from 203.0.113.7:40000 to 192.0.2.1:8443. */
const PROXY_V2_HEADER = Uint8Array.from([
  ...V2_SIGNATURE,
  0x21,
  0x11,
  0,
  12,
  203,
  0,
  113,
  7,
  192,
  0,
  2,
  1,
  40000 >> 8,
  40000 & 0xff,
  8443 >> 8,
  8443 & 0xff,
]);

Deno.test("PROXY v2 before the TLS handshake names the client", async () => {
  await using s = await startTestServer({
    TLS_PORT: "any",
    PROXY_PROTOCOL: "v2",
    SHOW_CLIENT_ADDRESS: "true",
  });
  const stream = await s.connectTls({ insecure: true, preamble: PROXY_V2_HEADER });
  try {
    await readBanner(stream, "Your address is 203.0.113.7:40000.\n" + TLS_LINE("none", "none"));
    assert.equal(decoder.decode(await roundTrip(stream, encoder.encode("x"))), "x");
  } finally {
    stream.close();
  }
  const open = await s.logs.waitFor(isOpen, "open");
  assert.equal(open.properties.client, "203.0.113.7:40000");
  assert.equal(open.properties.tls, "TLSv1.3");
});

Deno.test("a PROXY header and a broken ClientHello in one packet are refused, and the server lives on", async () => {
  // The ClientHello arrives with the header, before the TLS engine starts: Deno 2.9.6's node:tls
  // threw from its start (uncaught, ending the process) when such bytes failed the handshake.
  await using s = await startTestServer({ TLS_PORT: "any", PROXY_PROTOCOL: "v1" });
  const hello = new Uint8Array(5 + 300);
  hello.set([0x16, 0x03, 0x01, 0x01, 0x2c, 0x01, 0x00, 0x01, 0x28, 0x03, 0x03]);
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: s.tlsPort });
  await writeAll(
    conn,
    concatBytes([encoder.encode("PROXY TCP4 203.0.113.7 192.0.2.1 40000 8443\r\n"), hello]),
  );
  assert.equal((await readToEnd(conn)).length, 0);
  await refusal(s, "tls_handshake_failed");
  const stream = await s.connectTls({
    insecure: true,
    preamble: encoder.encode("PROXY UNKNOWN\r\n"),
  });
  try {
    await readBanner(stream, TLS_LINE("none", "none"));
  } finally {
    stream.close();
  }
});

Deno.test({
  name: "SNI routing through a real HAProxy (mode tcp, req.ssl_sni), also with send-proxy-v2",
  ignore: await ignoreWithout("haproxy", "the HAProxy SNI routing test"),
  async fn(t) {
    await using pki = await makeTestPki();
    for (const proxy of ["", "send-proxy-v2"]) {
      await t.step(proxy || "no PROXY header", async () => {
        // Two programs, as `deno task start` runs them: v1 and v2, each with a TLS port.
        const start = async (version: string) => {
          const tlsPort = freePort();
          const server = await spawnServer({
            SERVICE_VERSION: version,
            TLS_PORT: String(tlsPort),
            ...pki.serverFiles,
            PROXY_PROTOCOL: proxy ? "v2" : "off",
          });
          await server.stdout.waitFor(
            (line) => line.includes("Listening on TLS port"),
            "listening",
          );
          return Object.assign(server, { tlsPort });
        };
        await using v1 = await start("v1");
        await using v2 = await start("v2");
        await using haproxy = await startHaproxy([
          "  tcp-request inspect-delay 5s",
          "  tcp-request content accept if { req.ssl_hello_type 1 }",
          "  use_backend v1 if { req.ssl_sni -i v1.example.com }",
          "  use_backend v2 if { req.ssl_sni -i v2.example.com }",
        ], [
          "backend v1",
          `  server v1 127.0.0.1:${v1.tlsPort} ${proxy}`,
          "backend v2",
          `  server v2 127.0.0.1:${v2.tlsPort} ${proxy}`,
        ]);
        for (const [version, server] of [["v1", v1], ["v2", v2], ["v1", v1]] as const) {
          const name = `${version}.example.com`;
          const stream = await within(
            5_000,
            `connect ${name}`,
            connectTls("127.0.0.1", haproxy.port, {
              serverName: name,
              alpn: ["echo"],
              ca: pki.caPem,
            }),
          );
          let me: string;
          try {
            me = `127.0.0.1:${stream.localAddr.port}`;
            await readBanner(stream, `Version ${version}.\n` + TLS_LINE(name));
            const payload = randomBytes(200_000);
            assert.deepEqual(await roundTrip(stream, payload), payload);
          } finally {
            stream.close();
          }
          // The server saw the SNI the client sent; behind send-proxy-v2, the client's own
          // address, with HAProxy as the peer.
          const open = await server.stdout.waitFor(
            (line) => line.includes("TCP connection open.") && line.includes(` sni=${name} `),
            `${version} saw the SNI`,
          );
          if (proxy) {
            assert.match(open, new RegExp(` client=${me.replaceAll(".", "\\.")} `));
            assert.match(open, / peer=127\.0\.0\.1:\d+ /);
          } else assert.doesNotMatch(open, / peer=/);
        }
        const opened = (s: typeof v1) =>
          s.stdout.lines.filter((line) => line.includes("TCP connection open.")).length;
        assert.equal(opened(v1), 2, "v1 got exactly the v1.example.com connections");
        assert.equal(opened(v2), 1, "v2 got exactly the v2.example.com connection");
        // The program's own client, as a user runs it: --sni picks the version, every byte checked.
        for (const version of ["v1", "v2"]) {
          const output = await new Deno.Command(Deno.execPath(), {
            args: [
              ...(await taskArgs("client")),
              `127.0.0.1:${haproxy.port}`,
              "--tls",
              "--sni",
              `${version}.example.com`,
              "--ca",
              pki.path("ca.pem"),
              "--count",
              "6",
              "--json",
            ],
            cwd: repoDir,
            stdin: "null",
          }).output();
          assert.equal(output.code, 0, decoder.decode(output.stdout));
          assert.deepEqual(JSON.parse(decoder.decode(output.stdout)).answeredBy, [{
            server: `version ${version}`,
            serverName: `${version}.example.com`,
            tls: "TLSv1.3",
            count: 6,
            percent: 100,
          }]);
        }
      });
    }
  },
});

Deno.test({
  name: "openssl s_client, an independent client: banner, echo, client certificate",
  ignore: await ignoreWithout("openssl", "the openssl s_client test"),
  async fn() {
    await using pki = await makeTestPki();
    await using s = await startTestServer({
      SERVICE_VERSION: "v2",
      TLS_PORT: "any",
      ...pki.serverFiles,
      TLS_CLIENT_CA: pki.path("ca.pem"),
    });
    const child = new Deno.Command("openssl", {
      args: [
        "s_client",
        "-quiet",
        "-no_ign_eof",
        "-connect",
        `127.0.0.1:${s.tlsPort}`,
        "-servername",
        "v2.example.com",
        "-alpn",
        "echo",
        "-CAfile",
        pki.path("ca.pem"),
        "-verify_return_error",
        "-cert",
        pki.path("client.pem"),
        "-key",
        pki.path("client.key"),
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    try {
      const writer = child.stdin.getWriter();
      await writer.write(encoder.encode("through openssl\n"));
      const closed = s.logs.waitFor(
        (r) => r.rawMessage === "TCP connection closed.",
        "the connection's end",
      );
      const opened = await s.logs.waitFor(isOpen, "open");
      await s.logs.waitFor((r) =>
        r.properties.id === opened.properties.id &&
        String(r.rawMessage).startsWith("Received Raw"), "the data");
      await writer.close();
      const output = decoder.decode((await within(5_000, "openssl", child.output())).stdout);
      assert.equal(
        output,
        "Version v2.\n" + TLS_LINE("v2.example.com") + "Client certificate CN=client,O=test.\n" +
          "through openssl\n",
      );
      assert.equal((await closed).properties.reason, "eof");
    } finally {
      try {
        child.kill("SIGKILL");
      } catch {
        // It has exited.
      }
      await child.status;
    }
  },
});

Deno.test("program: TLS as `deno task start` runs it, and unusable files exit 2 with one line", async (t) => {
  await using pki = await makeTestPki();
  await t.step("the start task's permissions read the files and serve TLS", async () => {
    const tlsPort = freePort();
    await using server = await spawnServer({
      TLS_PORT: String(tlsPort),
      ...pki.serverFiles,
      NODE_NAME: "task",
    });
    await server.stdout.waitFor((line) => line.includes("Listening on TLS port"), "listening");
    const stream = await connectTls("127.0.0.1", tlsPort, {
      ca: pki.caPem,
      serverName: "localhost",
    });
    try {
      await readBanner(
        stream,
        "Welcome, you are connected to node task.\n" + TLS_LINE("localhost", "none"),
      );
    } finally {
      stream.close();
    }
  });
  await t.step({
    name: "a SAN-only certificate made by openssl (empty subject, as cert-manager issues it)",
    ignore: await ignoreWithout("openssl", "the openssl-made server certificate step"),
    async fn() {
      await using made = await makeTestPki({ openssl: true });
      const tlsPort = freePort();
      await using server = await spawnServer({
        TLS_PORT: String(tlsPort),
        TLS_CERT_FILE: made.path("cert-manager-server.pem"),
        TLS_KEY_FILE: made.path("cert-manager-server.key"),
      });
      const start = await server.stdout.waitFor(
        (line) => line.includes("TLS certificate"),
        "the certificate record",
      );
      assert.match(
        start,
        / names="DNS:localhost, DNS:v1\.example\.com, IP Address:127\.0\.0\.1" not_after=/,
      );
      await server.stdout.waitFor((line) => line.includes("Listening on TLS port"), "listening");
      const stream = await connectTls("127.0.0.1", tlsPort, {
        ca: made.caPem,
        serverName: "v1.example.com",
      });
      try {
        assert.equal(stream.peerCertificate?.subject, "");
        await readBanner(stream, TLS_LINE("v1.example.com", "none"));
      } finally {
        stream.close();
      }
    },
  });
  const args = await startTaskArgs();
  const garbage = pki.path("garbage.pem");
  await Deno.writeTextFile(
    garbage,
    "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n",
  );
  const cases: [string, Record<string, string>, RegExp][] = [
    [
      "a missing certificate file",
      { TLS_CERT_FILE: `${pki.dir}/missing.pem`, TLS_KEY_FILE: pki.path("server.key") },
      /^tcp-echo: invalid TLS_CERT_FILE=".+\/missing\.pem": No such file or directory .+; allowed: a readable PEM file\n$/,
    ],
    [
      "a key of another certificate",
      { TLS_CERT_FILE: pki.path("server.pem"), TLS_KEY_FILE: pki.path("server2.key") },
      /^tcp-echo: invalid TLS_KEY_FILE=".+\/server2\.key": the key does not belong to TLS_CERT_FILE; allowed: the private key of TLS_CERT_FILE's certificate\n$/,
    ],
    [
      "a certificate file whose certificate cannot be read",
      { TLS_CERT_FILE: garbage, TLS_KEY_FILE: pki.path("server.key") },
      /^tcp-echo: invalid TLS_CERT_FILE=".+\/garbage\.pem": [^\n]+; allowed: a PEM certificate file, the server's certificate first\n$/,
    ],
    [
      "a CA file whose certificate cannot be read",
      { TLS_CLIENT_CA: garbage },
      /^tcp-echo: invalid TLS_CLIENT_CA=".+\/garbage\.pem": certificate 1: [^\n]+; allowed: a PEM file of CA certificates\n$/,
    ],
    [
      "a CA file with no certificate",
      { TLS_CLIENT_CA: pki.path("client.key") },
      /^tcp-echo: invalid TLS_CLIENT_CA=".+\/client\.key": no PEM certificate in it; allowed: a PEM file of CA certificates\n$/,
    ],
  ];
  for (const [name, env, stderr] of cases) {
    await t.step(name, async () => {
      const output = await new Deno.Command(Deno.execPath(), {
        args,
        cwd: repoDir,
        env: {
          HOST: "127.0.0.1",
          TCP_PORT: String(freePort()),
          TLS_PORT: String(freePort()),
          ADMIN_PORT: "off",
          NO_COLOR: "1",
          ...env,
        },
        stdin: "null",
      }).output();
      assert.equal(output.code, 2);
      assert.match(decoder.decode(output.stderr), stderr);
    });
  }
});

Deno.test("a long TLS stream ends cleanly: 100 MB each way, the client's half-close, the server's eof", async () => {
  // Back-pressure by pausing Deno 2.9.6's TLSSocket lost the peer's close_notify at times
  // (7 runs in 8 hung here, server and client in two processes; a Go client's CloseWrite, which
  // sends close_notify and no FIN, hung for good): TlsStream holds the TCP reads instead.
  const tlsPort = freePort();
  await using server = await spawnServer({ TLS_PORT: String(tlsPort), LOG_DATA_BYTES: "0" });
  await server.stdout.waitFor((line) => line.includes("Listening on TLS port"), "listening");
  for (let round = 0; round < 3; round++) {
    const stream = await connectTls("127.0.0.1", tlsPort, { insecure: true });
    try {
      await readBanner(stream, TLS_LINE("none", "none"));
      const chunk = randomBytes(65_536);
      const total = 1_600 * chunk.length;
      let received = 0;
      const reading = (async () => {
        const buffer = new Uint8Array(65_536);
        while (true) {
          const n = await stream.read(buffer);
          if (n === null) return;
          for (let i = 0; i < n; i++) {
            if (buffer[i] !== chunk[(received + i) % 65_536]) {
              throw new Error(`byte ${received + i} differs`);
            }
          }
          received += n;
        }
      })();
      for (let sent = 0; sent < total; sent += chunk.length) await writeAll(stream, chunk);
      await stream.closeWrite();
      await within(5_000, "the end of the echo", reading);
      assert.equal(received, total);
    } finally {
      stream.close();
    }
    const closed = await server.stdout.waitFor(
      (line) => line.includes("TCP connection closed."),
      "the server's closed record",
    );
    assert.match(closed, / reason=eof bytes_in=104857600 bytes_out=\d+ /);
  }
});

Deno.test("MAX_CONNECTIONS counts TLS connections too: one over the limit is refused before its handshake", async () => {
  await using s = await startTestServer({ TLS_PORT: "any", MAX_CONNECTIONS: "1" });
  const first = await s.connectTls({ insecure: true });
  try {
    await readBanner(first, TLS_LINE("none", "none"));
    await assert.rejects(s.connectTls({ insecure: true }), /closed|reset|EOF|socket/i);
    assert.equal(s.server.stats.forPort(s.tlsPort).rejected.max_connections, 1);
    assert.equal(decoder.decode(await roundTrip(first, encoder.encode("still"))), "still");
  } finally {
    first.close();
  }
});

Deno.test("a TLS client that resets its TCP connection is recorded as reset, not eof", async () => {
  await using s = await startTestServer({ TLS_PORT: "any" });
  const tcp = net.connect({ host: "127.0.0.1", port: s.tlsPort });
  const tls = nodeTls.connect({ socket: tcp, rejectUnauthorized: false });
  try {
    const banner = await within(
      5_000,
      "the banner",
      new Promise<string>((resolve) => tls.once("data", (data) => resolve(String(data)))),
    );
    assert.equal(banner, TLS_LINE("none", "none"));
    tcp.resetAndDestroy(); // SO_LINGER 0: a RST, not a FIN
    const id = await s.connectionId(0);
    const closed = await s.logs.waitFor(isClosedRecord(id), "the closed record");
    assert.equal(closed.properties.reason, "reset");
  } finally {
    tls.destroy();
    tcp.destroy();
  }
});

Deno.test("a TLS client that sends and does not read is held back: the server stops reading, then echoes every byte", async () => {
  await using s = await startTestServer({ TLS_PORT: "any" });
  const stream = await s.connectTls({ insecure: true });
  const stats = s.server.stats.forPort(s.tlsPort);
  const piece = randomBytes(1 << 20);
  const offered = 96 << 20;
  try {
    await readBanner(stream, TLS_LINE("none", "none"));
    let written = 0;
    const writing = (async () => {
      while (written < offered) written += await stream.write(piece);
    })();
    // Bounded by the kernel's buffers of both sides (some MiB on loopback) and the queues:
    // without back-pressure the server reads all that is offered and holds its echo.
    let last = -1;
    for (let polls = 0; polls < 100 && stats.bytesReceived !== last; polls++) {
      last = stats.bytesReceived;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    assert.ok(stats.bytesReceived < 40 << 20, `the server read ${stats.bytesReceived} bytes`);
    assert.ok(written < offered, "the client's writes wait too");
    const into = new Uint8Array(1 << 16);
    for (let got = 0; got < offered;) {
      const n = await within(10_000, "the echo", stream.read(into));
      assert.ok(n !== null, `the stream ended after ${got} bytes`);
      for (let i = 0; i < n; i++) {
        if (into[i] !== piece[(got + i) % piece.length]) assert.fail(`byte ${got + i} differs`);
      }
      got += n;
    }
    await writing;
  } finally {
    stream.close();
  }
});

/** The listeners an emitter holds, by event, for the handshake's events. */
function handshakeListeners(socket: EventEmitter): Record<string, number> {
  return Object.fromEntries(
    ["secure", "error", "end", "close"].map((event) => [event, socket.listenerCount(event)]),
  );
}

Deno.test("handshake listeners: gone once the handshake is done, so a later close makes no error", async () => {
  const socket = new EventEmitter();
  const done = handshakeDone(socket as unknown as HandshakeEvents, "secure", "ended early");
  assert.deepEqual(handshakeListeners(socket), { secure: 1, error: 1, end: 1, close: 1 });
  socket.emit("secure");
  await done;
  // One shared no-op for errors stays: an error with no listener would end the process.
  assert.deepEqual(handshakeListeners(socket), { secure: 0, error: 1, end: 0, close: 0 });
  socket.emit("close");
  socket.emit("error", new Error("a late write failed"));
});

Deno.test("handshake listeners: an end or an error first rejects, once, and leaves a no-op for errors", async () => {
  const ended = new EventEmitter();
  const endedFirst = handshakeDone(ended as unknown as HandshakeEvents, "secure", "ended early");
  ended.emit("end");
  ended.emit("close");
  await assert.rejects(endedFirst, { message: "ended early" });
  assert.deepEqual(handshakeListeners(ended), { secure: 0, error: 1, end: 0, close: 0 });

  const failing = new EventEmitter();
  const failed = handshakeDone(failing as unknown as HandshakeEvents, "secure", "ended early");
  const error = new Error("bad record mac");
  failing.emit("error", error);
  failing.emit("error", new Error("a write after the first error"));
  await assert.rejects(failed, (thrown) => thrown === error);
  assert.deepEqual(handshakeListeners(failing), { secure: 0, error: 1, end: 0, close: 0 });
});
