/**
 * What the client sends and how it checks what comes back: random payloads,
 * the echo expected (byte for byte, or `PREFIX LINE` in line mode), byte
 * comparisons, and what a wrong echo looks like it came from (a line-mode
 * server's prefix). Pure.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { concatBytes } from "../src/wire.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const HEX = "0123456789abcdef";
const NEWLINE = 0x0a;

/** Random printable bytes (hex digits): safe inside a line. */
export function randomLine(length: number): Uint8Array {
  const random = crypto.getRandomValues(new Uint8Array(length));
  return random.map((b) => HEX.charCodeAt(b & 15));
}

/** Random bytes, any length (getRandomValues fills 64 KiB at a time). */
export function randomBytes(length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let offset = 0; offset < length; offset += 65_536) {
    crypto.getRandomValues(out.subarray(offset, Math.min(length, offset + 65_536)));
  }
  return out;
}

/** A payload and the exact bytes an echo server answers to it. */
export interface Exchange {
  /** What to send. */
  readonly payload: Uint8Array;
  /** What must come back, after any banner. */
  readonly expected: Uint8Array;
}

/**
 * Builds what to send and what must come back: the message or `size` random
 * bytes; with a prefix, one line (random hex, newline-terminated) answered as
 * `PREFIX LINE`.
 */
export function makeExchange(
  size: number,
  message: string | undefined,
  prefix: string | undefined,
): Exchange {
  let payload: Uint8Array;
  if (prefix === undefined) {
    payload = message === undefined ? randomBytes(size) : encoder.encode(message);
  } else {
    const line = message === undefined
      ? randomLine(Math.max(1, size - 1))
      : encoder.encode(message);
    payload = concatBytes([line, encoder.encode("\n")]);
  }
  return { payload, expected: prefix === undefined ? payload : lineAnswers(prefix, payload) };
}

/**
 * What a line-mode server with `prefix` answers to `payload`: each line as
 * `PREFIX LINE`, a last line without `\n` given one (tcp-echo's ECHO_PREFIX,
 * Istio's tcp-echo).
 */
export function lineAnswers(prefix: string, payload: Uint8Array): Uint8Array {
  const head = encoder.encode(`${prefix} `);
  return concatBytes(linesOf(payload).flatMap((line) => [head, line]));
}

/** `payload`'s lines, each ending in `\n` (one added to a last line without). */
function linesOf(payload: Uint8Array): Uint8Array[] {
  const lines: Uint8Array[] = [];
  for (let start = 0; start < payload.length;) {
    const newline = payload.indexOf(NEWLINE, start);
    if (newline < 0) {
      lines.push(concatBytes([payload.subarray(start), Uint8Array.of(NEWLINE)]));
      break;
    }
    lines.push(payload.subarray(start, newline + 1));
    start = newline + 1;
  }
  return lines;
}

/**
 * What `received` (banner and all) says of how the server echoed `payload`:
 * `""` when it ends with `payload` byte for byte; `X` when it ends with the
 * answer of a line-mode server with prefix `X` (read back from the start of
 * the last answered line); `undefined` when neither.
 *
 * @example
 * ```ts
 * const text = new TextEncoder();
 * echoPrefixOf(text.encode("Version v1.\nhello abc\n"), text.encode("abc")); // "hello"
 * ```
 */
export function echoPrefixOf(received: Uint8Array, payload: Uint8Array): string | undefined {
  if (payload.length === 0) return undefined;
  const lines = linesOf(payload);
  const last = lines[lines.length - 1];
  const space = received.length - last.length - 1;
  if (space >= 1 && received[space] === 0x20 && endsWith(received, last)) {
    const start = received.lastIndexOf(NEWLINE, space - 1) + 1;
    const prefix = decoder.decode(received.subarray(start, space));
    // A prefix is text of one line: not control bytes, not what was not UTF-8.
    const text = prefix !== "" && !/[\p{Cc}\uFFFD]/u.test(prefix);
    if (text && endsWith(received, lineAnswers(prefix, payload))) return prefix;
  }
  // After the line-mode check: a line-mode answer ends with the payload too.
  return endsWith(received, payload) ? "" : undefined;
}

/** Whether two byte arrays are equal (a native memcmp: fast enough to check every byte). */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

/** Whether `bytes` ends with `suffix`. */
export function endsWith(bytes: Uint8Array, suffix: Uint8Array): boolean {
  return suffix.length <= bytes.length &&
    equalBytes(bytes.subarray(bytes.length - suffix.length), suffix);
}

/** Where `received` first differs from the cyclic `pattern` read from stream offset `at`, or -1. */
export function firstDifference(received: Uint8Array, pattern: Uint8Array, at: number): number {
  for (let i = 0; i < received.length;) {
    const offset = (at + i) % pattern.length;
    const run = Math.min(received.length - i, pattern.length - offset);
    const a = received.subarray(i, i + run);
    const b = pattern.subarray(offset, offset + run);
    if (!equalBytes(a, b)) return i + a.findIndex((byte, k) => byte !== b[k]);
    i += run;
  }
  return -1;
}

/** Whether `bytes` start as a TLS record does (a handshake or an alert, TLS 1.x). */
export function looksLikeTls(bytes: Uint8Array): boolean {
  return (bytes[0] === 0x15 || bytes[0] === 0x16) && bytes[1] === 0x03;
}

/**
 * The start of `bytes` as a quoted, escaped text of at most about
 * `maxChars` characters, `…` when cut: what a failure's detail shows of what
 * came back.
 */
export function quoteStart(bytes: Uint8Array, maxChars = 80): string {
  const text = decoder.decode(bytes.subarray(0, maxChars * 2));
  const quoted = JSON.stringify(text);
  if (quoted.length - 2 <= maxChars && bytes.length <= maxChars * 2) return quoted;
  // Not in the middle of an escape such as \u0000.
  const cut = quoted.slice(0, maxChars + 1).replace(/\\(u[0-9a-fA-F]{0,3})?$/, "");
  return `${cut}"…`;
}
