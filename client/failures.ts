/**
 * Why a connection (or a datagram) failed, in the report's words: a reason
 * (`dns`, `refused`, `reset`, `timeout`, `lost`, `tls`, `mismatch`, `short`,
 * `error`), the error's own detail, and a hint of what to do where one
 * helps; and the failures of a run counted by reason with the first detail
 * and hint of each.
 *
 * @example
 * ```ts
 * import { hintFor } from "./failures.ts";
 *
 * hintFor("refused", "Connection refused (os error 111)", {
 *   hostname: "127.0.0.1", port: 3333, tls: undefined, timeoutMs: 5_000, prefix: undefined,
 * }); // "nothing listens at 127.0.0.1:3333: is the server running, and is that its port? ..."
 * ```
 *
 * @module
 */
import { TlsHandshakeError } from "../src/tls_stream.ts";
import { formatHostPort } from "../src/wire.ts";
import { TimeoutError } from "./connection.ts";
import { LookupError } from "./family.ts";
import type { ClientOptions } from "./options.ts";
import { echoPrefixOf, looksLikeTls } from "./payloads.ts";

/** Every failure reason, in the order reports list them. */
export const FAILURE_REASONS = [
  "dns",
  "refused",
  "reset",
  "timeout",
  "lost",
  "tls",
  "mismatch",
  "short",
  "error",
] as const;

/** Why a connection failed. */
export type FailureReason = typeof FAILURE_REASONS[number];

/** One connection's failure: why, the error's words, and what to do about it. */
export interface Failure {
  /** The reason it is counted under. */
  readonly reason: FailureReason;
  /** What the error said, or what came back. */
  readonly detail: string;
  /** What to check or pass, where the detail suggests something. */
  readonly hint?: string;
}

/** A failure found by the client itself (an echo that differs, that stopped short), thrown. */
export class ConnectionFailure extends Error {
  /** Names the error in a stack trace. */
  override name = "ConnectionFailure";

  /** The failure, its detail as the message. */
  constructor(readonly failure: Failure) {
    super(failure.detail);
  }
}

/** What the hints name: where the client connected, how, and what it expected. */
export type HintContext = Pick<ClientOptions, "hostname" | "port" | "tls" | "timeoutMs" | "prefix">;

/** Deno's words for a name that does not resolve (`getaddrinfo` failed), whatever the cause. */
const LOOKUP_FAILED = /^failed to lookup address information/;

function reasonOf(error: unknown): FailureReason {
  if (error instanceof TlsHandshakeError) return "tls";
  if (error instanceof LookupError) return "dns";
  if (error instanceof Deno.errors.ConnectionRefused) return "refused";
  if (
    error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.BrokenPipe ||
    error instanceof Deno.errors.ConnectionAborted
  ) return "reset";
  if (error instanceof Deno.errors.TimedOut || error instanceof TimeoutError) return "timeout";
  // Deno 2.9.6 throws a plain Error for a failed lookup.
  if (error instanceof Error && LOOKUP_FAILED.test(error.message)) return "dns";
  return "error";
}

/** Classifies an error of a connection as a failure, with its detail and a hint. */
export function failureOf(error: unknown, context: HintContext): Failure {
  if (error instanceof ConnectionFailure) return error.failure;
  const reason = reasonOf(error);
  const detail = error instanceof Error ? error.message : String(error);
  return { reason, detail, hint: hintFor(reason, detail, context) };
}

/** How family.ts says a name has addresses of the other family only. */
const FAMILY_MISSING = /^"[^"]*" has no IPv([46]) address /;

/** What to do about a name without an address of the family `-4`/`-6` asked for. */
function familyHint(detail: string): string {
  const [flag, record] = FAMILY_MISSING.exec(detail)![1] === "6" ? ["-6", "AAAA"] : ["-4", "A"];
  return `drop ${flag}, or give the name an ${record} record (a cluster's Service: ` +
    "ipFamilyPolicy PreferDualStack or RequireDualStack; this machine: a line in /etc/hosts)";
}

/** The hint of an untrusted server certificate. */
const UNTRUSTED_HINT = "the server's certificate is not trusted: pass --ca FILE with its CA, " +
  "or --insecure for a test server's self-signed one";

/** A failed handshake's hint, by what node:tls said. */
const TLS_HINTS: readonly (readonly [RegExp, (context: HintContext) => string])[] = [
  [
    /self[- ]signed|unable to verify|unable to get (local )?issuer|UnknownIssuer/i,
    () => UNTRUSTED_HINT,
  ],
  [
    /certificate has expired|not yet valid/i,
    () => "the server's certificate is out of date (or this machine's clock is)",
  ],
  [
    /does not match certificate|altnames|NotValidForName/i,
    () =>
      "the server's certificate is not for the name checked (--sni, default the host): " +
      "pass --sni NAME with a name it is for",
  ],
  [
    /NoApplicationProtocol|no_application_protocol/i,
    () =>
      "the server accepts none of the --alpn protocols offered (tcp-echo: TLS_ALPN, default echo)",
  ],
  [
    /wrong version number|InvalidContentType|packet length too long|unknown protocol/i,
    (c) =>
      `${targetOf(c)} did not answer in TLS: is it a TLS port (tcp-echo: TLS_PORT)? ` +
      "Without --tls for a plain port",
  ],
  [
    /closed during the handshake/,
    () =>
      "the server closed during the handshake: is it a TLS port, and does it need a client " +
      "certificate (--cert FILE --key FILE)?",
  ],
];

function targetOf(context: HintContext): string {
  return formatHostPort(context.hostname, context.port);
}

/** What to do about a failure with `reason` and `detail`, where something is known to help. */
export function hintFor(
  reason: FailureReason,
  detail: string,
  context: HintContext,
): string | undefined {
  switch (reason) {
    case "dns":
      return FAMILY_MISSING.test(detail)
        ? familyHint(detail)
        : `${JSON.stringify(context.hostname)} does not resolve here: check the name ` +
          "(a cluster's NAME.NAMESPACE.svc names resolve only inside the cluster)";
    case "refused":
      return `nothing listens at ${targetOf(context)}: is the server running, and is that its ` +
        `port? (tcp-echo: TCP_PORT, default 3333${context.tls ? "; TLS_PORT for --tls" : ""})`;
    case "reset":
      return "the server, or a proxy on the way (one with no ready backend does), reset the " +
        "connection";
    case "timeout":
      return detail.startsWith("no connection")
        ? `nothing answered at ${targetOf(context)}: a wrong address, or a firewall that drops ` +
          "the packets"
        : "the server did not answer in time: a slow server or proxy, or give it a longer --timeout";
    case "tls":
      return TLS_HINTS.find(([pattern]) => pattern.test(detail))?.[1](context);
    default:
      return undefined;
  }
}

/**
 * What a wrong or short echo suggests: a TLS server (without `--tls`), a
 * line-mode server with another prefix than `--prefix` (none given: the
 * server's), or a byte-for-byte echo although `--prefix` was given.
 */
export function echoHint(
  received: Uint8Array,
  payload: Uint8Array,
  context: HintContext,
): string | undefined {
  if (!context.tls && looksLikeTls(received)) return "the server answered in TLS: pass --tls";
  return prefixHint(echoPrefixOf(received, payload), context.prefix);
}

/** A hint from the prefix the echo came with (`""`: none) against `--prefix` (`undefined`: none). */
export function prefixHint(
  seen: string | undefined,
  prefix: string | undefined,
): string | undefined {
  if (seen === undefined || seen === (prefix ?? "")) return undefined;
  if (seen === "") return "the server echoes byte for byte, not by lines: drop --prefix";
  return `it looks like line mode with prefix ${JSON.stringify(seen)} (ECHO_PREFIX): ` +
    `pass --prefix ${shellWord(seen)}`;
}

/** `text` as one shell word: as it is when it is safe, else in single quotes. */
function shellWord(text: string): string {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replaceAll("'", `'\\''`)}'`;
}

/** Failures by reason, with the first detail and the first hint seen of each reason. */
export interface FailureSummary {
  /** Failed connections by reason. */
  readonly failures: Readonly<Partial<Record<FailureReason, number>>>;
  /** The first detail seen of each reason. */
  readonly failureDetails: Readonly<Partial<Record<FailureReason, string>>>;
  /** The first hint seen of each reason that had one. */
  readonly failureHints: Readonly<Partial<Record<FailureReason, string>>>;
}

/** Counts failures as they come into a {@linkcode FailureSummary}. */
export class FailureTally implements FailureSummary {
  /** Failed connections by reason. */
  readonly failures: Partial<Record<FailureReason, number>> = {};
  /** The first detail seen of each reason. */
  readonly failureDetails: Partial<Record<FailureReason, string>> = {};
  /** The first hint seen of each reason that had one. */
  readonly failureHints: Partial<Record<FailureReason, string>> = {};

  /** Counts one failure. */
  add({ reason, detail, hint }: Failure): void {
    this.failures[reason] = (this.failures[reason] ?? 0) + 1;
    this.failureDetails[reason] ??= detail;
    if (hint !== undefined) this.failureHints[reason] ??= hint;
  }

  /** The counts, details and hints as plain objects (for a report). */
  summary(): FailureSummary {
    return {
      failures: { ...this.failures },
      failureDetails: { ...this.failureDetails },
      failureHints: { ...this.failureHints },
    };
  }
}
