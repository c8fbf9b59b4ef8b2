import assert from "node:assert/strict";
import {
  isTrusted,
  parseCidr,
  parseProxyHeader,
  type ProxyParseResult,
  V1_MAX_BYTES,
  V2_MAX_BYTES,
  V2_SIGNATURE,
} from "./proxy_protocol.ts";

const encoder = new TextEncoder();
const text = (s: string) => encoder.encode(s);

/** Builds a v2 header: version/command byte, family/transport byte, body. */
function v2(verCmd: number, famTransport: number, body: number[], declaredLength = body.length) {
  return Uint8Array.from([
    ...V2_SIGNATURE,
    verCmd,
    famTransport,
    declaredLength >> 8,
    declaredLength & 0xff,
    ...body,
  ]);
}

const INET_BODY = [10, 0, 0, 7, 10, 0, 0, 1, 0xd0, 0xce, 0x0d, 0x05]; // 10.0.0.7:53454 -> 10.0.0.1:3333
const INET6_BODY = [
  ...[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x07],
  ...[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01],
  0x01,
  0xbb,
  0x0d,
  0x05,
];

const invalidBecause = (reason: string): ProxyParseResult => ({ status: "invalid", reason });

Deno.test("PROXY v1: TCP4, TCP6, UNKNOWN and the bytes after the header", () => {
  const tcp4 = text("PROXY TCP4 10.0.0.7 10.0.0.1 53422 3333\r\nhello");
  assert.deepEqual(parseProxyHeader(tcp4, "v1"), {
    status: "ok",
    length: 41,
    header: {
      version: 1,
      command: "proxy",
      source: { hostname: "10.0.0.7", port: 53422 },
      destination: { hostname: "10.0.0.1", port: 3333 },
    },
  });
  assert.equal(new TextDecoder().decode(tcp4.subarray(41)), "hello");
  assert.deepEqual(parseProxyHeader(text("PROXY TCP6 2001:db8::7 ::1 65535 0\r\n"), "any"), {
    status: "ok",
    length: 36,
    header: {
      version: 1,
      command: "proxy",
      source: { hostname: "2001:db8::7", port: 65535 },
      destination: { hostname: "::1", port: 0 },
    },
  });
  for (const unknown of ["PROXY UNKNOWN\r\n", "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"]) {
    assert.deepEqual(parseProxyHeader(text(unknown), "v1"), {
      status: "ok",
      length: unknown.length,
      header: { version: 1, command: "local" },
    });
  }
  const mapped = parseProxyHeader(text("PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n"), "v1");
  assert.equal(mapped.status === "ok" && mapped.header.source?.hostname, "192.0.2.1");
  const longest = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff " +
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
  assert.equal(longest.length, 104);
  assert.equal(parseProxyHeader(text(longest), "v1").status, "ok");
});

Deno.test("PROXY v1: incomplete, absent and every malformed case", async (t) => {
  await t.step("incomplete until CRLF", () => {
    for (const partial of ["", "P", "PROX", "PROXY ", "PROXY TCP4 10.0.0.7 10.0.0.1 1 2\r"]) {
      assert.deepEqual(parseProxyHeader(text(partial), "any"), { status: "incomplete" }, partial);
    }
  });
  await t.step("absent: data that cannot start a header", () => {
    for (const data of ["hello", "PROXZ", "proxy TCP4", "\r\nx"]) {
      assert.deepEqual(parseProxyHeader(text(data), "any"), { status: "absent" }, data);
    }
  });
  await t.step("malformed", () => {
    const cases: [string, string][] = [
      ["PROXY TCP4 10.0.0.7 10.0.0.1 53422 3333\n", "v1 header not ended by CRLF"],
      ["PROXY TCP4 10.0.0.7 10.0.0.1 53422\r\n", "v1 header does not have 6 fields"],
      ["PROXY TCP4  10.0.0.7 10.0.0.1 1 2\r\n", "v1 header does not have 6 fields"],
      ["PROXY UDP4 10.0.0.7 10.0.0.1 1 2\r\n", 'v1 header has unknown protocol "UDP4"'],
      ["PROXY TCP4 10.0.0.256 10.0.0.1 1 2\r\n", "v1 header has a bad TCP4 address"],
      ["PROXY TCP4 010.0.0.7 10.0.0.1 1 2\r\n", "v1 header has a bad TCP4 address"],
      ["PROXY TCP4 ::1 10.0.0.1 1 2\r\n", "v1 header has a bad TCP4 address"],
      ["PROXY TCP6 10.0.0.7 ::1 1 2\r\n", "v1 header has a bad TCP6 address"],
      ["PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "v1 header has a bad TCP6 address"],
      ["PROXY TCP4 10.0.0.7 10.0.0.1 65536 2\r\n", "v1 header has a bad port"],
      ["PROXY TCP4 10.0.0.7 10.0.0.1 01 2\r\n", "v1 header has a bad port"],
      ["PROXY TCP4 10.0.0.7 10.0.0.1 -1 2\r\n", "v1 header has a bad port"],
      [`PROXY ${"x".repeat(V1_MAX_BYTES)}`, "v1 header longer than 107 bytes"],
    ];
    for (const [header, reason] of cases) {
      assert.deepEqual(parseProxyHeader(text(header), "any"), invalidBecause(reason), header);
    }
  });
  await t.step("a v1 header where only v2 is accepted", () => {
    assert.deepEqual(
      parseProxyHeader(text("PROXY UNKNOWN\r\n"), "v2"),
      invalidBecause("v1 header where only v2 is accepted"),
    );
  });
});

Deno.test("PROXY v2: INET, INET6, LOCAL, UNSPEC, UNIX and TLVs", () => {
  assert.deepEqual(parseProxyHeader(v2(0x21, 0x11, INET_BODY), "v2"), {
    status: "ok",
    length: 28,
    header: {
      version: 2,
      command: "proxy",
      source: { hostname: "10.0.0.7", port: 53454 },
      destination: { hostname: "10.0.0.1", port: 3333 },
    },
  });
  assert.deepEqual(parseProxyHeader(v2(0x21, 0x21, INET6_BODY), "any"), {
    status: "ok",
    length: 52,
    header: {
      version: 2,
      command: "proxy",
      source: { hostname: "2001:db8::7", port: 443 },
      destination: { hostname: "::1", port: 3333 },
    },
  });
  const mappedBody = [...INET6_BODY];
  mappedBody.splice(0, 16, ...[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1]);
  const mapped = parseProxyHeader(v2(0x21, 0x21, mappedBody), "v2");
  assert.equal(mapped.status === "ok" && mapped.header.source?.hostname, "192.0.2.1");
  const local = { version: 2, command: "local" };
  // LOCAL: addresses (if any) are ignored.
  assert.deepEqual(parseProxyHeader(v2(0x20, 0x00, []), "v2"), {
    status: "ok",
    length: 16,
    header: local,
  });
  assert.deepEqual(parseProxyHeader(v2(0x20, 0x11, INET_BODY), "v2"), {
    status: "ok",
    length: 28,
    header: local,
  });
  // PROXY with UNSPEC or UNIX families: use the socket's addresses.
  assert.deepEqual(parseProxyHeader(v2(0x21, 0x00, []), "v2"), {
    status: "ok",
    length: 16,
    header: local,
  });
  assert.deepEqual(parseProxyHeader(v2(0x21, 0x31, new Array(216).fill(0)), "v2"), {
    status: "ok",
    length: 232,
    header: local,
  });
  // TLVs after the addresses (ALPN "h2", and a NOOP with an empty value) are skipped.
  const tlvs = [0x01, 0x00, 0x02, 0x68, 0x32, 0x04, 0x00, 0x00];
  const withTlvs = [...v2(0x21, 0x11, [...INET_BODY, ...tlvs]), ...text("data")];
  const result = parseProxyHeader(Uint8Array.from(withTlvs), "v2");
  assert.equal(result.status === "ok" && result.length, 36);
  assert.equal(result.status === "ok" && result.header.source?.port, 53454);
});

/** A TLV: its type, a 16-bit length, the value's bytes. */
function tlv(type: number, value: Uint8Array | string): number[] {
  const bytes = typeof value === "string" ? text(value) : value;
  return [type, bytes.length >> 8, bytes.length & 0xff, ...bytes];
}

Deno.test("PROXY v2 TLVs: Istio's source identity and service, authority, unique id; the rest skipped", async (t) => {
  const spiffe = "spiffe://cluster.local/ns/default/sa/sleep";
  const header = (...tlvs: number[][]) => v2(0x21, 0x11, [...INET_BODY, ...tlvs.flat()]);
  const tlvsOf = (bytes: Uint8Array) => {
    const result = parseProxyHeader(bytes, "v2");
    assert.equal(result.status, "ok", JSON.stringify(result));
    return result.status === "ok" ? result.header.tlvs : undefined;
  };
  await t.step("as ztunnel writes them: 0xD0 the SPIFFE ID, 0xD1 the service", () => {
    assert.deepEqual(
      tlvsOf(header(tlv(0xd0, spiffe), tlv(0xd1, "tcp-echo.default.svc.cluster.local"))),
      { sourceIdentity: spiffe, service: "tcp-echo.default.svc.cluster.local" },
    );
  });
  await t.step("authority and unique id; ALPN, NOOP, CRC and unknown types skipped", () => {
    assert.deepEqual(
      tlvsOf(header(
        tlv(0x01, "h2"),
        tlv(0x04, ""),
        tlv(0x03, Uint8Array.of(1, 2, 3, 4)),
        tlv(0x02, "v2.example.com"),
        tlv(0xee, "whatever"),
        tlv(0x05, "abc123"),
      )),
      { authority: "v2.example.com", uniqueId: "abc123" },
    );
    assert.equal(tlvsOf(header(tlv(0x01, "h2"))), undefined, "nothing to show: no tlvs");
  });
  await t.step("the first of a type counts; a value that is not UTF-8 is left out", () => {
    assert.deepEqual(tlvsOf(header(tlv(0xd0, spiffe), tlv(0xd0, "spiffe://forged"))), {
      sourceIdentity: spiffe,
    });
    assert.equal(tlvsOf(header(tlv(0xd0, Uint8Array.of(0xff, 0xfe)))), undefined);
  });
  await t.step("on LOCAL headers too, and empty values are values", () => {
    const local = v2(0x20, 0x11, [...INET_BODY, ...tlv(0xd0, "")]);
    const result = parseProxyHeader(local, "v2");
    assert.deepEqual(result.status === "ok" && result.header, {
      version: 2,
      command: "local",
      tlvs: { sourceIdentity: "" },
    });
  });
  await t.step("a TLV that overruns the header, at every length short of it, is invalid", () => {
    const value = tlv(0xd0, spiffe);
    for (let cut = 1; cut < value.length; cut++) {
      const body = [...INET_BODY, ...value.slice(0, cut)];
      assert.deepEqual(
        parseProxyHeader(v2(0x21, 0x11, body), "v2"),
        invalidBecause("v2 header has a TLV overrunning it"),
        `cut at ${cut}`,
      );
    }
  });
});

Deno.test("PROXY v2: incomplete and every malformed case", async (t) => {
  await t.step("incomplete: signature, fixed part, addresses", () => {
    const full = v2(0x21, 0x11, INET_BODY);
    for (const cut of [1, 11, 12, 15, 16, 27]) {
      assert.deepEqual(
        parseProxyHeader(full.subarray(0, cut), "v2"),
        { status: "incomplete" },
        `${cut}`,
      );
    }
  });
  await t.step("bad signature is absent (data), a broken one after the first byte too", () => {
    const badSignature = v2(0x21, 0x11, INET_BODY);
    badSignature[5] = 0x00;
    assert.deepEqual(parseProxyHeader(badSignature, "any"), { status: "absent" });
  });
  await t.step("malformed", () => {
    const cases: [Uint8Array, string][] = [
      [v2(0x11, 0x11, INET_BODY), "v2 header has version 1"],
      [v2(0x31, 0x11, INET_BODY), "v2 header has version 3"],
      [v2(0x22, 0x11, INET_BODY), "v2 header has unknown command 2"],
      [v2(0x21, 0x41, INET_BODY), "v2 header has unknown address family 4"],
      [v2(0x21, 0x13, INET_BODY), "v2 header has unknown transport 3"],
      [v2(0x21, 0x12, INET_BODY), "v2 header is for a datagram (UDP) connection"],
      [v2(0x21, 0x11, INET_BODY.slice(0, 11)), "v2 header too short for its address family"],
      [v2(0x21, 0x21, INET_BODY), "v2 header too short for its address family"],
      [v2(0x21, 0x11, [...INET_BODY, 0x01, 0x00]), "v2 header has a TLV overrunning it"],
      [v2(0x21, 0x11, [...INET_BODY, 0x01, 0x00, 0x05, 1]), "v2 header has a TLV overrunning it"],
      [v2(0x21, 0x11, [], V2_MAX_BYTES), "v2 header of 4112 bytes is over 4096"],
      [v2(0x21, 0x11, [], 0xffff), "v2 header of 65551 bytes is over 4096"],
    ];
    for (const [bytes, reason] of cases) {
      assert.deepEqual(parseProxyHeader(bytes, "any"), invalidBecause(reason), reason);
    }
  });
  await t.step("a v2 header where only v1 is accepted", () => {
    assert.deepEqual(
      parseProxyHeader(v2(0x21, 0x11, INET_BODY), "v1"),
      invalidBecause("v2 header where only v1 is accepted"),
    );
  });
});

Deno.test("trusted proxies: CIDR ranges and addresses, IPv4-mapped peers", () => {
  const ranges = ["10.0.0.0/8", "192.168.1.5", "fd00::/8"].map((c) => parseCidr(c)!);
  assert.ok(isTrusted("10.1.2.3", ranges));
  assert.ok(isTrusted("::ffff:10.1.2.3", ranges));
  assert.ok(isTrusted("192.168.1.5", ranges));
  assert.ok(!isTrusted("192.168.1.6", ranges));
  assert.ok(isTrusted("fd12::1", ranges));
  assert.ok(!isTrusted("2001:db8::1", ranges));
  assert.ok(!isTrusted("not an address", ranges));
  for (
    const bad of [
      "10.0.0.0/33",
      "10.0.0",
      "10.0.0.0/8/8",
      "::1/129",
      "10.0.0.0/x",
      "example.com",
      "",
    ]
  ) {
    assert.equal(parseCidr(bad), undefined, bad);
  }
});
