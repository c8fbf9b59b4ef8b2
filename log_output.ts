/**
 * Log output: how records look (Go-style text or JSON, received data escaped
 * so it cannot forge a line) and how they reach standard output (a batching
 * LogTape sink that never makes echoing wait and drops data records first
 * when the reader falls behind).
 *
 * @module
 */
import { configure, getLogger, reset as resetLogging } from "@logtape/logtape";

/** LogTape's levels (its own type is not exported in a documentable form). */
export type LogLevel = "trace" | "debug" | "info" | "warning" | "error" | "fatal";

/**
 * What the formatters and the sink read of a LogTape record (a LogTape
 * `LogRecord` is one): the level, the time, the message template and the facts.
 */
export interface LogRecord {
  /** The record's level. */
  readonly level: LogLevel;
  /** When it was logged, in milliseconds since the epoch. */
  readonly timestamp: number;
  /** The message template as written, `{name}` where a fact goes. */
  readonly rawMessage: string | TemplateStringsArray;
  /** The facts: the template's values and the others. */
  readonly properties: Record<string, unknown>;
}

/** A LogTape sink, as far as this module gives and takes one. */
export type Sink = (record: LogRecord) => void;
import type { LogFormat, LogLevelName } from "./config.ts";
import { writeAll } from "./wire.ts";

const encoder = new TextEncoder();
const pad2 = (n: number) => String(n).padStart(2, "0");

/** Records of one second share their timestamp text. */
const lastTimestamp = { second: NaN, text: "" };

/** Formats a time as the Go `log` package does, in UTC: `2026/11/25 07:32:29`. */
export function formatGoTimestamp(epochMs: number): string {
  const second = Math.floor(epochMs / 1_000);
  if (second !== lastTimestamp.second) {
    const d = new Date(second * 1_000);
    lastTimestamp.second = second;
    lastTimestamp.text =
      `${d.getUTCFullYear()}/${pad2(d.getUTCMonth() + 1)}/${pad2(d.getUTCDate())} ` +
      `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())}`;
  }
  return lastTimestamp.text;
}

const DECIMAL_BYTE = Array.from({ length: 256 }, (_, b) => String(b));
const HEX_BYTE = Array.from({ length: 256 }, (_, b) => `\\x${b.toString(16).padStart(2, "0")}`);

/** The ASCII digits of each byte value, for {@linkcode formatRawBytes}. */
const DECIMAL_DIGITS = DECIMAL_BYTE.map((text) => Uint8Array.from(text, (c) => c.charCodeAt(0)));
const latin1 = new TextDecoder("latin1");

/** Formats bytes as Go prints a `[]byte`: `[104 101 108 108 111]`. */
export function formatRawBytes(bytes: Uint8Array): string {
  // Digits go straight into one byte array, decoded once: a 1 KiB chunk
  // would otherwise make a thousand small strings.
  const out = new Uint8Array(2 + bytes.length * 4);
  let o = 0;
  out[o++] = 0x5b;
  for (let i = 0; i < bytes.length; i++) {
    if (i > 0) out[o++] = 0x20;
    const digits = DECIMAL_DIGITS[bytes[i]];
    for (let k = 0; k < digits.length; k++) out[o++] = digits[k];
  }
  out[o++] = 0x5d;
  return latin1.decode(out.subarray(0, o));
}

/** Length of the valid UTF-8 sequence starting at `i`, or 0 if it is invalid. */
function utf8SequenceLength(bytes: Uint8Array, i: number, end: number): number {
  const b = bytes[i];
  let length: number;
  let lo = 0x80; // Range of the second byte: excludes overlongs, surrogates, > U+10FFFF.
  let hi = 0xbf;
  if (b >= 0xc2 && b <= 0xdf) length = 2;
  else if (b >= 0xe0 && b <= 0xef) {
    length = 3;
    if (b === 0xe0) lo = 0xa0;
    if (b === 0xed) hi = 0x9f;
  } else if (b >= 0xf0 && b <= 0xf4) {
    length = 4;
    if (b === 0xf0) lo = 0x90;
    if (b === 0xf4) hi = 0x8f;
  } else return 0;
  if (i + length > end || bytes[i + 1] < lo || bytes[i + 1] > hi) return 0;
  for (let k = 2; k < length; k++) if (bytes[i + k] < 0x80 || bytes[i + k] > 0xbf) return 0;
  return length;
}

/** How each byte below 0x80 is shown, and each invalid byte from 0x80 up: one table lookup. */
const SINGLE_BYTE_TEXT = Array.from({ length: 256 }, (_, b) => {
  if (b === 0x09) return "\\t";
  if (b === 0x0a) return "\\n";
  if (b === 0x0d) return "\\r";
  if (b === 0x5c) return "\\\\";
  if (b >= 0x20 && b < 0x7f) return String.fromCharCode(b);
  return HEX_BYTE[b];
});

/** The code point of the valid UTF-8 sequence of `length` bytes at `i`. */
function decodeCodePoint(bytes: Uint8Array, i: number, length: number): number {
  if (length === 2) return ((bytes[i] & 0x1f) << 6) | (bytes[i + 1] & 0x3f);
  if (length === 3) {
    return ((bytes[i] & 0x0f) << 12) | ((bytes[i + 1] & 0x3f) << 6) | (bytes[i + 2] & 0x3f);
  }
  return ((bytes[i] & 0x07) << 18) | ((bytes[i + 1] & 0x3f) << 12) |
    ((bytes[i + 2] & 0x3f) << 6) | (bytes[i + 3] & 0x3f);
}

/**
 * Shows received bytes as one line of text that cannot forge a log line:
 * one trailing `\n` is dropped (as the original server showed it), a
 * backslash becomes `\\`, `\t` `\n` `\r` are written so, every other control
 * character and every invalid UTF-8 byte becomes `\xNN`, and Unicode control
 * and line-separator characters become `\uNNNN`. Valid UTF-8 text is kept.
 *
 * @example
 * ```ts
 * escapeData(new TextEncoder().encode("a\r\nFAKE\n")); // "a\\r\\nFAKE"
 * ```
 */
export function escapeData(bytes: Uint8Array): string {
  const end = bytes.length > 0 && bytes[bytes.length - 1] === 0x0a
    ? bytes.length - 1
    : bytes.length;
  let out = "";
  let i = 0;
  while (i < end) {
    const b = bytes[i];
    const length = b < 0x80 ? 0 : utf8SequenceLength(bytes, i, end);
    if (length === 0) {
      out += SINGLE_BYTE_TEXT[b];
      i++;
      continue;
    }
    const codePoint = decodeCodePoint(bytes, i, length);
    out += codePoint < 0xa0 || codePoint === 0x2028 || codePoint === 0x2029
      ? `\\u${codePoint.toString(16).padStart(4, "0")}`
      : String.fromCodePoint(codePoint);
    i += length;
  }
  return out;
}

/**
 * Received bytes in a log record, rendered only when the record is written
 * (off the echo path): Go's `[104 101]` form in text, an array of numbers in
 * JSON.
 */
export class RawBytes {
  /** `bytes` as received; the caller copies them when its buffer is reused. */
  constructor(readonly bytes: Uint8Array) {}
  /** The text form. */
  toString(): string {
    return formatRawBytes(this.bytes);
  }
  /** The JSON form: an array of byte values. */
  toJSON(): number[] {
    return Array.from(this.bytes);
  }
}

/** Received bytes shown as escaped text ({@linkcode escapeData}), rendered lazily. */
export class DataText {
  /** `bytes` as received; the caller copies them when its buffer is reused. */
  constructor(readonly bytes: Uint8Array) {}
  /** The text form. */
  toString(): string {
    return escapeData(this.bytes);
  }
  /** The JSON form: the same escaped text. */
  toJSON(): string {
    return this.toString();
  }
}

const LEVEL_NAMES: Readonly<Record<LogLevel, string>> = {
  trace: "debug",
  debug: "debug",
  info: "info",
  warning: "warn",
  error: "error",
  fatal: "error",
};

/** A message template split once: `texts[0] {keys[0]} texts[1] ...`. */
interface ParsedTemplate {
  readonly texts: readonly string[];
  readonly keys: readonly string[];
}

const templateCache = new Map<string, ParsedTemplate>();

/** Splits a message template at its `{name}` placeholders (cached: templates are constants). */
function parseTemplate(template: string): ParsedTemplate {
  let parsed = templateCache.get(template);
  if (!parsed) {
    const parts = template.split(/\{(\w+)\}/);
    parsed = {
      texts: parts.filter((_, i) => i % 2 === 0),
      keys: parts.filter((_, i) => i % 2 === 1),
    };
    templateCache.set(template, parsed);
  }
  return parsed;
}

/** Quotes a text-format fact when it is empty or has spaces, quotes or controls. */
function formatFactValue(value: unknown): string {
  const text = value instanceof Error ? value.message : String(value);
  if (text !== "" && /^[\x21-\x7e]+$/.test(text) && !text.includes('"')) return text;
  return JSON.stringify(text);
}

function templateText(record: LogRecord): string {
  return typeof record.rawMessage === "string" ? record.rawMessage : record.rawMessage.join("");
}

/**
 * Formats a record as one text line: a Go-style UTC timestamp, the
 * connection id (when there is one) and ` - `, the message with its inline
 * values, then the other facts as ` key=value`, then `level=` for warnings
 * and errors.
 */
export function formatTextRecord(record: LogRecord): string {
  const { texts, keys } = parseTemplate(templateText(record));
  const props = record.properties;
  let line = formatGoTimestamp(record.timestamp) + " ";
  if (props.id !== undefined) line += `${props.id} - `;
  line += texts[0];
  for (let i = 0; i < keys.length; i++) line += String(props[keys[i]]) + texts[i + 1];
  for (const key in props) {
    if (key === "id" || keys.includes(key)) continue;
    line += ` ${key}=${formatFactValue(props[key])}`;
  }
  const level = LEVEL_NAMES[record.level];
  if (level === "warn" || level === "error") line += ` level=${level}`;
  return line + "\n";
}

/**
 * Formats a record as one JSON object on one line: `ts` (RFC 3339), `level`,
 * `msg` (the message without its inline values), `id` when there is one, and
 * every fact as a field.
 */
export function formatJsonRecord(record: LogRecord): string {
  const msg = templateText(record).replace(/:? *\{\w+\}/g, "").trim();
  const object: Record<string, unknown> = {
    ts: new Date(record.timestamp).toISOString(),
    level: LEVEL_NAMES[record.level],
    msg,
  };
  for (const [key, value] of Object.entries(record.properties)) {
    object[key] = value instanceof Error ? value.message : value;
  }
  return JSON.stringify(object) + "\n";
}

// ---------------------------------------------------------------------------
// Logging setup
// ---------------------------------------------------------------------------

/** LogTape category of every record the server writes. */
export const LOG_CATEGORY = ["tcp-echo"];
/** What the server's modules use of a LogTape logger. */
export interface ServerLogger {
  /** Logs a debug record: a message template and its facts. */
  debug(message: string, properties?: Record<string, unknown>): void;
  /** Logs an info record. */
  info(message: string, properties?: Record<string, unknown>): void;
  /** Logs a warning record. */
  warn(message: string, properties?: Record<string, unknown>): void;
  /** Logs an error record. */
  error(message: string, properties?: Record<string, unknown>): void;
  /** Whether records of `level` are written: build nothing for a record that is filtered out. */
  isEnabledFor(level: LogLevel): boolean;
}

/** The logger every module of the server writes through. */
export const log: ServerLogger = getLogger(LOG_CATEGORY);

const LOGTAPE_LEVEL: Readonly<Record<LogLevelName, LogLevel>> = {
  debug: "debug",
  info: "info",
  warn: "warning",
  error: "error",
};

/** Records waiting for output at most; more are dropped (and counted) until it catches up. */
export const MAX_PENDING_RECORDS = 20_000;
/** Bytes of received data held by waiting data records at most (each holds up to `LOG_DATA_BYTES`). */
export const MAX_PENDING_DATA_BYTES = 32 * 1024 * 1024;

/**
 * A LogTape sink that batches: records wait in memory and are formatted and
 * written together, in one write, once the current task is done (and again
 * whenever a write completes), so echoing never waits for the log and a busy
 * connection costs one write per batch, not one per record. (LogTape's own
 * non-blocking stream sink writes records one by one and silently drops the
 * oldest once 2,000 wait, which lost records under data-heavy streams.) When
 * `maxPending` records wait, newer records that `isExpendable` are dropped;
 * the others (connection and lifecycle records) only beyond twice that. A
 * record then says how many were dropped. Dispose it to flush.
 */
export class BatchingSink implements AsyncDisposable {
  /** Records, and where dropping began, the count of records dropped since. */
  #pending: (LogRecord | DropCount)[] = [];
  #dropCount: DropCount | undefined;
  #writing: Promise<void> | undefined;
  #scheduled = false;
  #buffer = new Uint8Array(65_536);

  /** `write` takes each batch; `format` makes a record's line; the limits are as above. */
  constructor(
    readonly write: (bytes: Uint8Array) => Promise<unknown>,
    readonly format: (record: LogRecord) => string,
    readonly maxPending: number = MAX_PENDING_RECORDS,
    readonly isExpendable: (record: LogRecord) => boolean = () => true,
  ) {}

  /** The sink to give LogTape. */
  readonly sink: Sink = (record) => {
    const limit = this.isExpendable(record) ? this.maxPending : 2 * this.maxPending;
    if (this.#pending.length >= limit) {
      if (this.#dropCount === undefined) {
        // The report goes where the gap is.
        this.#dropCount = { dropped: 0 };
        this.#pending.push(this.#dropCount);
      }
      this.#dropCount.dropped++;
      return;
    }
    this.#pending.push(record);
    if (!this.#scheduled && this.#writing === undefined) {
      this.#scheduled = true;
      setTimeout(() => this.#flushBatch(), 0);
    }
  };

  #flushBatch(): void {
    this.#scheduled = false;
    if (this.#writing !== undefined || this.#pending.length === 0) return;
    const entries = this.#pending;
    this.#pending = [];
    this.#dropCount = undefined;
    let length = 0;
    for (const entry of entries) {
      const text = this.format("dropped" in entry ? dropRecord(entry.dropped) : entry);
      // Encoded into one reused buffer: no write is in flight while it fills.
      if (this.#buffer.length - length < text.length * 3) {
        const grown = new Uint8Array(Math.max(this.#buffer.length * 2, length + text.length * 3));
        grown.set(this.#buffer.subarray(0, length));
        this.#buffer = grown;
      }
      length += encoder.encodeInto(text, this.#buffer.subarray(length)).written;
    }
    this.#writing = this.write(this.#buffer.subarray(0, length)).then(
      () => {},
      () => {}, // Nowhere left to report a failing log output.
    ).finally(() => {
      this.#writing = undefined;
      if (this.#pending.length > 0) this.#flushBatch();
    });
  }

  /** Writes everything still waiting. */
  async flush(): Promise<void> {
    while (this.#writing !== undefined || this.#pending.length > 0) {
      if (this.#writing === undefined) this.#flushBatch();
      await this.#writing;
    }
  }

  /** Flushes: everything still waiting is written. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.flush();
  }
}

/** How many records a {@linkcode BatchingSink} dropped at one point of its output. */
interface DropCount {
  dropped: number;
}

function dropRecord(dropped: number): LogRecord {
  return {
    level: "warning",
    timestamp: Date.now(),
    rawMessage: "Log output fell behind; records dropped.",
    properties: { dropped_records: dropped },
  };
}

/** Data records are the ones to drop first when the log output falls behind. */
const isDataRecord = (record: LogRecord) =>
  record.properties.raw instanceof RawBytes || record.properties.data instanceof DataText;

/**
 * The production sink: records formatted as configured, written to standard
 * output in batches. Fewer records may wait when each can hold more data, so
 * a slow log reader costs at most {@linkcode MAX_PENDING_DATA_BYTES} of data;
 * data records are dropped first, so connection and lifecycle records survive.
 */
export function createStdoutSink(format: LogFormat, logDataBytes: number): BatchingSink {
  const perRecord = logDataBytes + 256;
  return new BatchingSink(
    (bytes) => writeAll(Deno.stdout, bytes),
    format === "json" ? formatJsonRecord : formatTextRecord,
    Math.max(100, Math.min(MAX_PENDING_RECORDS, Math.floor(MAX_PENDING_DATA_BYTES / perRecord))),
    isDataRecord,
  );
}

/**
 * Points LogTape at `sink` for the server's category at the configured level
 * (and LogTape's own warnings). Returns a function that flushes and detaches.
 */
export async function setupLogging(
  level: LogLevelName,
  sink: Sink,
): Promise<() => Promise<void>> {
  await configure({
    reset: true,
    sinks: { main: sink },
    loggers: [
      { category: LOG_CATEGORY, lowestLevel: LOGTAPE_LEVEL[level], sinks: ["main"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["main"] },
    ],
  });
  return resetLogging;
}
