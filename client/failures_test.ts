import assert from "node:assert/strict";
import { TlsHandshakeError } from "../src/tls_stream.ts";
import { TimeoutError } from "./connection.ts";
import { LookupError } from "./family.ts";
import {
  ConnectionFailure,
  echoHint,
  failureOf,
  FailureTally,
  type HintContext,
  hintFor,
  prefixHint,
} from "./failures.ts";
import { encoder } from "../testing/support.ts";

const plain: HintContext = {
  hostname: "10.0.0.1",
  port: 31400,
  tls: undefined,
  timeoutMs: 5_000,
  prefix: undefined,
};

Deno.test("client failures: each error's reason, with its words as the detail", () => {
  const cases: [unknown, string][] = [
    [new Error("failed to lookup address information: Name or service not known"), "dns"],
    [
      new Error("failed to lookup address information: Temporary failure in name resolution"),
      "dns",
    ],
    [new Deno.errors.ConnectionRefused("Connection refused (os error 111)"), "refused"],
    [new Deno.errors.ConnectionReset("Connection reset by peer (os error 104)"), "reset"],
    [new Deno.errors.BrokenPipe("Broken pipe (os error 32)"), "reset"],
    [new TimeoutError("no connection within 5000 ms"), "timeout"],
    [new TlsHandshakeError("self-signed certificate"), "tls"],
    [new Error("something else"), "error"],
  ];
  for (const [error, reason] of cases) {
    const failure = failureOf(error, plain);
    assert.equal(failure.reason, reason, String(error));
    assert.equal(failure.detail, (error as Error).message);
  }
  const found = { reason: "short", detail: "3 of 64 bytes came", hint: "h" } as const;
  assert.deepEqual(failureOf(new ConnectionFailure(found), plain), found);
});

Deno.test("client failure hints: what to check, by reason and by what the TLS stack said", () => {
  const tls = {
    ...plain,
    tls: {
      serverName: undefined,
      alpn: undefined,
      caFile: undefined,
      certFile: undefined,
      keyFile: undefined,
      insecure: false,
    },
  };
  const untrusted = "the server's certificate is not trusted: pass --ca FILE with its CA, " +
    "or --insecure for a test server's self-signed one";
  const cases: [Parameters<typeof hintFor>, string | undefined][] = [
    [
      ["dns", "failed to lookup address information: x", { ...plain, hostname: "echo.svc" }],
      '"echo.svc" does not resolve here: check the name (a cluster\'s NAME.NAMESPACE.svc names resolve only inside the cluster)',
    ],
    [
      ["refused", "Connection refused", plain],
      "nothing listens at 10.0.0.1:31400: is the server running, and is that its port? (tcp-echo: TCP_PORT, default 3333)",
    ],
    [
      ["refused", "Connection refused", tls],
      "nothing listens at 10.0.0.1:31400: is the server running, and is that its port? (tcp-echo: TCP_PORT, default 3333; TLS_PORT for --tls)",
    ],
    [
      ["timeout", "no connection within 5000 ms", plain],
      "nothing answered at 10.0.0.1:31400: a wrong address, or a firewall that drops the packets",
    ],
    [["tls", "self-signed certificate", tls], untrusted],
    [["tls", "unable to verify the first certificate", tls], untrusted],
    [
      [
        "tls",
        "Hostname/IP does not match certificate's altnames: Host: a.example. is not in the cert's altnames: DNS:localhost",
        tls,
      ],
      "the server's certificate is not for the name checked (--sni, default the host): pass --sni NAME with a name it is for",
    ],
    [
      ["tls", "received fatal alert: NoApplicationProtocol", tls],
      "the server accepts none of the --alpn protocols offered (tcp-echo: TLS_ALPN, default echo)",
    ],
    [
      [
        "tls",
        "received corrupt message of type InvalidContentType (SSL routines:ssl3_get_record:wrong version number)",
        tls,
      ],
      "10.0.0.1:31400 did not answer in TLS: is it a TLS port (tcp-echo: TLS_PORT)? Without --tls for a plain port",
    ],
    [["tls", "something new", tls], undefined],
    [["mismatch", "the echo differs", plain], undefined],
    [["error", "something else", plain], undefined],
  ];
  for (const [args, hint] of cases) assert.equal(hintFor(...args), hint, args[1]);

  assert.equal(
    prefixHint("hello", undefined),
    'it looks like line mode with prefix "hello" (ECHO_PREFIX): pass --prefix hello',
  );
  assert.equal(
    prefixHint("it's", "one"),
    `it looks like line mode with prefix "it's" (ECHO_PREFIX): pass --prefix 'it'\\''s'`,
  );
  assert.equal(
    prefixHint("", "one"),
    "the server echoes byte for byte, not by lines: drop --prefix",
  );
  assert.equal(prefixHint("one", "one"), undefined);
  assert.equal(prefixHint(undefined, undefined), undefined);
  const alert = Uint8Array.of(0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46);
  assert.equal(
    echoHint(alert, encoder.encode("abc"), plain),
    "the server answered in TLS: pass --tls",
  );
  assert.equal(echoHint(alert, encoder.encode("abc"), tls), undefined);
});

Deno.test("client failure tally: counts by reason, the first detail and hint of each", () => {
  const tally = new FailureTally();
  tally.add({ reason: "refused", detail: "first" });
  tally.add({ reason: "refused", detail: "second", hint: "a hint" });
  tally.add({ reason: "tls", detail: "self-signed certificate", hint: "trust it" });
  tally.add({ reason: "tls", detail: "later", hint: "later hint" });
  assert.deepEqual(tally.summary(), {
    failures: { refused: 2, tls: 2 },
    failureDetails: { refused: "first", tls: "self-signed certificate" },
    failureHints: { refused: "a hint", tls: "trust it" },
  });
});

Deno.test("client failures: a name without an address of the family -4/-6 asked for is dns, with what to do", () => {
  const detail =
    '"echo.default.svc" has no IPv6 address (getaddrinfo ENOTFOUND echo.default.svc); ' +
    "it has 10.96.0.10";
  assert.deepEqual(failureOf(new LookupError(detail), { ...plain, hostname: "echo.default.svc" }), {
    reason: "dns",
    detail,
    hint: "drop -6, or give the name an AAAA record (a cluster's Service: ipFamilyPolicy " +
      "PreferDualStack or RequireDualStack; this machine: a line in /etc/hosts)",
  });
  const v4 = failureOf(
    new LookupError(
      '"v6only.example" has no IPv4 address (getaddrinfo ENOTFOUND v6only.example); it has fd00::1',
    ),
    plain,
  );
  assert.match(v4.hint!, /^drop -4, or give the name an A record /);
  const unknown = failureOf(
    new LookupError("failed to lookup address information: getaddrinfo ENOTFOUND nope.invalid"),
    { ...plain, hostname: "nope.invalid" },
  );
  assert.equal(unknown.reason, "dns");
  assert.match(unknown.hint!, /^"nope\.invalid" does not resolve here: /);
});
