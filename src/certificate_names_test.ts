import assert from "node:assert/strict";
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import {
  CertificateFormatError,
  certificateName,
  derFromPem,
  EMPTY_NAME,
  escapeNameValue,
  isSpiffeId,
  readCertificateNames,
  renderAltNames,
  renderName,
} from "./certificate_names.ts";

// ---------------------------------------------------------------------------
// DER written by hand, for values no certificate library writes
// ---------------------------------------------------------------------------

function tlv(tag: number, contents: Uint8Array): Uint8Array {
  const n = contents.length;
  const length = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
  return Uint8Array.from([tag, ...length, ...contents]);
}

function oid(text: string): Uint8Array {
  const [a, b, ...rest] = text.split(".").map(BigInt);
  const bytes = [Number(a * 40n + b)];
  for (const arc of rest) {
    const groups = [Number(arc & 0x7fn)];
    for (let v = arc >> 7n; v > 0n; v >>= 7n) groups.unshift(Number(v & 0x7fn) | 0x80);
    bytes.push(...groups);
  }
  return tlv(0x06, Uint8Array.from(bytes));
}

const UTF8 = 0x0c, PRINTABLE = 0x13, T61 = 0x14, IA5 = 0x16, UNIVERSAL = 0x1c, BMP = 0x1e;
const CN = "2.5.4.3", O = "2.5.4.10", C = "2.5.4.6", UID = "0.9.2342.19200300.100.1.1";

/** The bytes of `text` as a string of type `tag`. */
function encode(tag: number, text: string): Uint8Array {
  const points = Array.from(text, (char) => char.codePointAt(0)!);
  switch (tag) {
    case UTF8:
      return new TextEncoder().encode(text);
    case BMP:
      return Uint8Array.from(
        text.split("").map((unit) => unit.charCodeAt(0)).flatMap((unit) => [
          unit >> 8,
          unit & 0xff,
        ]),
      );
    case UNIVERSAL:
      return Uint8Array.from(
        points.flatMap((p) => [p >>> 24, (p >> 16) & 0xff, (p >> 8) & 0xff, p & 0xff]),
      );
    default:
      return Uint8Array.from(points);
  }
}

type Attribute = readonly [type: string, tag: number, value: string | Uint8Array];

/** A Name's DER: RDNs in DER order, each a set of attributes. */
function nameDer(rdns: readonly (readonly Attribute[])[]): Uint8Array {
  const concat = (parts: Uint8Array[]) => Uint8Array.from(parts.flatMap((part) => [...part]));
  return tlv(
    0x30,
    concat(rdns.map((rdn) =>
      tlv(
        0x31,
        concat(rdn.map(([type, tag, value]) =>
          tlv(
            0x30,
            concat([oid(type), tlv(tag, typeof value === "string" ? encode(tag, value) : value)]),
          )
        )),
      )
    )),
  );
}

const one = (type: string, tag: number, value: string | Uint8Array) =>
  nameDer([[[type, tag, value]]]);

// ---------------------------------------------------------------------------
// Distinguished names
// ---------------------------------------------------------------------------

Deno.test("a name reads most significant RDN last (RFC 4514), multi-valued RDNs joined by +", () => {
  assert.equal(
    renderName(nameDer([[[C, PRINTABLE, "US"]], [[O, UTF8, "Acme"]], [[CN, UTF8, "web"]]])),
    "CN=web,O=Acme,C=US",
  );
  assert.equal(renderName(nameDer([[[CN, UTF8, "a"], [UID, UTF8, "b"]]])), "CN=a+UID=b");
  assert.equal(
    renderName(nameDer([[[O, UTF8, "test"]], [[CN, UTF8, "a"], [UID, UTF8, "b"]]])),
    "CN=a+UID=b,O=test",
  );
  assert.equal(renderName(nameDer([])), "", "an empty subject");
});

Deno.test("every string type a certificate uses reads as its text", () => {
  const cases: [number, string][] = [
    [UTF8, "név ✓ 𝄞"],
    [BMP, "bmp-név"],
    [BMP, "𝄞 surrogates"],
    [UNIVERSAL, "ünï 𝄞"],
    [T61, "t61-café"], // as Latin-1, as OpenSSL and Go read TeletexString
    [PRINTABLE, "Printable 1"],
    [IA5, "ia5@example.com"],
  ];
  for (const [tag, text] of cases) {
    assert.equal(renderName(one(CN, tag, text)), `CN=${text}`, `tag ${tag}`);
  }
  assert.equal(renderName(one("1.2.840.113549.1.9.1", IA5, "a@b.c")), "emailAddress=a@b.c");
});

Deno.test("values that are not strings, or not valid ones, and unknown types read as # and hex", () => {
  assert.equal(renderName(one("1.2.3.4", UTF8, "x")), "1.2.3.4=#0c0178", "an unknown type");
  assert.equal(renderName(one(CN, 0x02, Uint8Array.of(1))), "CN=#020101", "an INTEGER");
  assert.equal(renderName(one(CN, UTF8, Uint8Array.of(0xc3))), "CN=#0c01c3", "invalid UTF-8");
  assert.equal(renderName(one(CN, BMP, Uint8Array.of(0, 0x41, 0))), "CN=#1e03004100", "odd BMP");
  assert.equal(
    renderName(one("2.25.329800735698586629295641978511506172918", UTF8, "u")).split("=")[0],
    "2.25.329800735698586629295641978511506172918",
    "a UUID arc past 2^53",
  );
});

Deno.test("values are escaped as RFC 4514 §2.4 says, so one value never reads as two", () => {
  const cases: [string, string][] = [
    ["a,O=forged", "a\\,O=forged"],
    ["a+UID=forged", "a\\+UID=forged"],
    ['say "hi"; <x>', 'say \\"hi\\"\\; \\<x\\>'],
    ["back\\slash", "back\\\\slash"],
    ["#hash", "\\#hash"],
    ["in#side", "in#side"],
    [" lead", "\\ lead"],
    ["trail ", "trail\\ "],
    [" ", "\\ "],
    ["in side", "in side"],
    ["a=b", "a=b"],
    ["nul\0", "nul\\00"],
    // Control characters stay as they are: the log formatter escapes them, and RFC 4514 does
    // not ask for it. A newline is inside the one value, not a second attribute.
    ["a\nO=forged", "a\nO=forged"],
    ["a\r", "a\r"],
    ["x\u001b[2Jy", "x\u001b[2Jy"],
  ];
  for (const [value, escaped] of cases) {
    assert.equal(escapeNameValue(value), escaped, JSON.stringify(value));
    assert.equal(renderName(one(CN, UTF8, value)), `CN=${escaped}`);
  }
});

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

const ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
const keys = await crypto.subtle.generateKey(ALGORITHM, false, ["sign", "verify"]);

async function certificate(
  name: x509.JsonNameParams | Uint8Array,
  sans: x509.JsonGeneralName[] = [],
): Promise<Uint8Array> {
  const created = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: "01",
    name: new x509.Name(name as x509.JsonNameParams),
    notBefore: new Date(),
    notAfter: new Date(Date.now() + 86_400_000),
    keys,
    signingAlgorithm: ALGORITHM,
    extensions: sans.length > 0 ? [new x509.SubjectAlternativeNameExtension(sans)] : [],
  });
  return new Uint8Array(created.rawData);
}

Deno.test("a certificate's names: subject, issuer, SANs in order, and the SPIFFE ID", async () => {
  const der = await certificate([{ O: ["SPIRE"] }], [
    { type: "dns", value: "sleep.default.svc" },
    { type: "ip", value: "10.1.2.3" },
    { type: "ip", value: "2001:db8::1" },
    { type: "email", value: "ops@example.com" },
    { type: "url", value: "https://example.com/not-spiffe" },
    { type: "url", value: "spiffe://cluster.local/ns/default/sa/sleep" },
  ]);
  const names = readCertificateNames(der);
  assert.equal(names.subject, "O=SPIRE");
  assert.equal(names.issuer, "O=SPIRE");
  assert.equal(
    renderAltNames(names.altNames),
    "DNS:sleep.default.svc, IP Address:10.1.2.3, IP Address:2001:db8::1, email:ops@example.com, " +
      "URI:https://example.com/not-spiffe, URI:spiffe://cluster.local/ns/default/sa/sleep",
  );
  assert.equal(names.spiffeId, "spiffe://cluster.local/ns/default/sa/sleep");
  assert.equal(certificateName(names), "spiffe://cluster.local/ns/default/sa/sleep");
  assert.deepEqual(names.subjectDer, names.issuerDer);
});

Deno.test("a certificate's name: SPIFFE ID, else subject, else first SAN, else (empty subject)", async () => {
  const named = readCertificateNames(
    await certificate([{ CN: ["web"] }], [{ type: "dns", value: "a" }]),
  );
  assert.equal(certificateName(named), "CN=web");
  const sanOnly = readCertificateNames(
    await certificate([], [{ type: "dns", value: "web.example" }]),
  );
  assert.equal(sanOnly.subject, "");
  assert.equal(certificateName(sanOnly), "DNS:web.example");
  assert.equal(certificateName(readCertificateNames(await certificate([]))), EMPTY_NAME);
  // A URI that starts like one but is no SPIFFE ID does not name the certificate.
  const forged = readCertificateNames(
    await certificate([{ CN: ["real"] }], [{ type: "url", value: "spiffe://x/a\nVersion v9" }]),
  );
  assert.equal(forged.spiffeId, undefined);
  assert.equal(certificateName(forged), "CN=real");
});

Deno.test("SPIFFE IDs: the standard's form, and nothing else", () => {
  for (
    const id of [
      "spiffe://cluster.local/ns/default/sa/sleep",
      "spiffe://example.org",
      "spiffe://trust_domain-1.example/a.b/c-d/E_F",
    ]
  ) assert.equal(isSpiffeId(id), true, id);
  for (
    const id of [
      "SPIFFE://cluster.local/ns/default",
      "spiffe://Cluster.local/ns",
      "spiffe://cluster.local/ns/",
      "spiffe://cluster.local//ns",
      "spiffe://cluster.local/ns/../sa",
      "spiffe://cluster.local/./sa",
      "spiffe://cluster.local/ns?x=1",
      "spiffe://cluster.local/n%41",
      "spiffe://",
      "spiffe://user@cluster.local/ns",
      "spiffe://cluster.local:8080/ns",
      "spiffe://cluster.local/ns\n",
      `spiffe://cluster.local/${"a".repeat(2048)}`,
    ]
  ) assert.equal(isSpiffeId(id), false, id);
});

Deno.test("bytes that are no certificate are refused with CertificateFormatError, never another error", async () => {
  const der = await certificate([{ CN: ["cut"] }], [{ type: "dns", value: "cut.example" }]);
  for (let cut = 0; cut < der.length; cut++) {
    assert.throws(
      () => readCertificateNames(der.subarray(0, cut)),
      CertificateFormatError,
      `cut ${cut}`,
    );
  }
  for (let i = 0; i < der.length; i++) {
    const flipped = der.slice();
    flipped[i] ^= 0xff;
    try {
      readCertificateNames(flipped);
    } catch (error) {
      assert.ok(error instanceof CertificateFormatError, `byte ${i}: ${error}`);
    }
  }
  assert.throws(
    () => readCertificateNames(new TextEncoder().encode("hello")),
    CertificateFormatError,
  );
});

Deno.test("PEM to DER", async () => {
  const der = await certificate([{ CN: ["pem"] }]);
  const pem = x509.PemConverter.encode(der.buffer as ArrayBuffer, "CERTIFICATE");
  assert.deepEqual(derFromPem(pem), der);
  assert.throws(
    () => derFromPem("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----"),
    CertificateFormatError,
  );
});
