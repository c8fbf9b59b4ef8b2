/**
 * Log output: how records look (Go-style text or JSON, every value escaped
 * so that nothing a peer sends can break a line, forge a record or reach a
 * terminal as a control) and how they reach standard output (a batching
 * LogTape sink that never makes echoing wait and drops data records first
 * when the reader falls behind).
 *
 * @module
 */
import { configure, getLogger, reset as resetLogging } from "@logtape/logtape";
import type { LogFormat, LogLevelName } from "./config.ts";
import { writeAll } from "./wire.ts";

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

/**
 * Code points every format writes `\uNNNN`: the C1 controls (NEL U+0085 ends
 * a line for some readers, CSI U+009B starts a terminal sequence) and the
 * line and paragraph separators U+2028, U+2029.
 */
const escapesAsUnicode = (codePoint: number) =>
  (codePoint >= 0x80 && codePoint < 0xa0) || codePoint === 0x2028 || codePoint === 0x2029;

const unicodeEscape = (unit: number) => `\\u${unit.toString(16).padStart(4, "0")}`;

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
    out += escapesAsUnicode(codePoint) ? unicodeEscape(codePoint) : String.fromCodePoint(codePoint);
    i += length;
  }
  return out;
}

/**
 * Escapes a string by {@linkcode escapeData}'s rules, so that no value can
 * break a log line, forge a record or reach a terminal as a control: `\` is
 * written `\\`; tab, line feed and carriage return `\t` `\n` `\r`; every other
 * C0 control and DEL `\xNN`; the C1 controls (NEL, CSI, …), U+2028, U+2029
 * and lone surrogates `\uNNNN`. Everything else (spaces, quotes, `=`, all
 * printable Unicode) is kept, so ordinary text reads as it is. As every
 * backslash starts an escape, the text reads back exactly. With `quoted`, the
 * text goes in double quotes and `"` is written `\"`: a fact's quoted form.
 *
 * @example
 * ```ts
 * escapeText("CN=a\r\nO=\x1b[31mevil\u0085"); // String.raw`CN=a\r\nO=\x1b[31mevil\u0085`
 * escapeText('say "hi"', true); // String.raw`"say \"hi\""`
 * ```
 */
export function escapeText(text: string, quoted = false): string {
  const quote = quoted ? '"' : "";
  let out = quote;
  let kept = 0; // Where the text not yet copied to `out` starts.
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    let escaped: string;
    if (unit < 0x80) {
      if (unit === 0x22 && quoted) escaped = '\\"';
      else if (SINGLE_BYTE_TEXT[unit].length === 1) continue;
      else escaped = SINGLE_BYTE_TEXT[unit];
    } else if (unit >= 0xd800 && unit <= 0xdfff) {
      const next = text.charCodeAt(i + 1); // NaN past the end.
      if (unit <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        i++; // A surrogate pair: one valid code point, kept.
        continue;
      }
      escaped = unicodeEscape(unit);
    } else if (escapesAsUnicode(unit)) escaped = unicodeEscape(unit);
    else continue;
    out += text.slice(kept, i) + escaped;
    kept = i + 1;
  }
  return out + text.slice(kept) + quote;
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

/** Code units {@linkcode escapeText} may change (a surrogate pair is then looked at as a pair). */
// deno-lint-ignore no-control-regex
const ESCAPED_UNITS = /[\x00-\x1f\\\x7f-\x9f\u2028\u2029\ud800-\udfff]/;
/**
 * An inline value that would read as the record's own structure: a fact
 * (` key=`, keys being lowercase as all the server's are), or a quoted value
 * (a leading `"`, so a bare value never reads as a quoted one).
 */
const READS_AS_STRUCTURE = /(?:^|\s)[a-z_][a-z0-9_]*=|^"/;
/** An inline value without these is written as it is: one test, passed by ordinary text. */
// deno-lint-ignore no-control-regex
const INLINE_NEEDS_LOOK = /[\x00-\x1f"=\\\x7f-\x9f\u2028\u2029\ud800-\udfff]/;
/**
 * A fact value written bare: printable ASCII without a space, `"` or `\`
 * (a loop: it runs for every fact of every connection record, where a
 * regular expression's call cost more than the check).
 */
function isBareFact(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x21 || unit > 0x7e || unit === 0x22 || unit === 0x5c) return false;
  }
  return text.length > 0;
}

/** The text of a value in a record: an error's message, anything else as `String` makes it. */
function valueText(value: unknown): string {
  if (typeof value === "string") return value;
  return value instanceof Error ? value.message : String(value);
}

/**
 * An inline value (and the connection id) in a text record: escaped, and
 * quoted as a fact would be when it reads as structure
 * ({@linkcode READS_AS_STRUCTURE}). Received data ({@linkcode DataText}) is
 * escaped by the same rules already.
 */
function formatInlineValue(value: unknown): string {
  if (typeof value === "number") return String(value);
  if (value instanceof DataText) return value.toString();
  const text = valueText(value);
  if (!INLINE_NEEDS_LOOK.test(text)) return text;
  const quoted = READS_AS_STRUCTURE.test(text);
  return quoted || ESCAPED_UNITS.test(text) ? escapeText(text, quoted) : text;
}

/** A text-format fact's value: bare ({@linkcode isBareFact}), else escaped and quoted. */
function formatFactValue(value: unknown): string {
  if (typeof value === "number") return String(value);
  const text = valueText(value);
  return isBareFact(text) ? text : escapeText(text, true);
}

function templateText(record: LogRecord): string {
  return typeof record.rawMessage === "string" ? record.rawMessage : record.rawMessage.join("");
}

/**
 * Formats a record as one text line: a Go-style UTC timestamp, the
 * connection id (when there is one) and ` - `, the message with its inline
 * values, then the other facts as ` key=value`, then `level=` for warnings
 * and errors. Every value is escaped ({@linkcode escapeText}), so a record is
 * one line whatever its values hold. An inline value stays bare, spaces and
 * all, unless it would read as a ` key=` fact (or starts with `"`): then it
 * is quoted as a fact is. A fact is bare when it is printable ASCII without
 * spaces, quotes or backslashes, else quoted.
 *
 * @example
 * ```ts
 * // 2026/01/01 00:00:00 Refused: CN=a\nO=b "x level=error" sni=""
 * formatTextRecord({
 *   level: "info",
 *   timestamp: Date.UTC(2026, 0, 1),
 *   rawMessage: "Refused: {subject} {detail}",
 *   properties: { subject: "CN=a\nO=b", detail: "x level=error", sni: "" },
 * });
 * ```
 */
export function formatTextRecord(record: LogRecord): string {
  const { texts, keys } = parseTemplate(templateText(record));
  const props = record.properties;
  let line = formatGoTimestamp(record.timestamp) + " ";
  if (props.id !== undefined) line += `${formatInlineValue(props.id)} - `;
  line += texts[0];
  for (let i = 0; i < keys.length; i++) line += formatInlineValue(props[keys[i]]) + texts[i + 1];
  for (const key in props) {
    if (key === "id" || keys.includes(key)) continue;
    line += ` ${key}=${formatFactValue(props[key])}`;
  }
  const level = LEVEL_NAMES[record.level];
  if (level === "warn" || level === "error") line += ` level=${level}`;
  return line + "\n";
}

/** What JSON.stringify leaves raw that a reader may take for a line break or a control. */
const JSON_RAW_CONTROLS = /[\x7f-\x9f\u2028\u2029]/;
const JSON_RAW_CONTROLS_ALL = new RegExp(JSON_RAW_CONTROLS.source, "g");

/**
 * Formats a record as one JSON object on one line: `ts` (RFC 3339), `level`,
 * `msg` (the message without its inline values), `id` when there is one, and
 * every fact as a field (an error as its message). Beyond what JSON.stringify
 * escapes, DEL, the C1 controls, U+2028 and U+2029 are written `\uNNNN` (they
 * only occur inside strings, where the escape means the same character), so
 * the line is valid JSON, one line to every reader, and parses back to the
 * values logged.
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
  const json = JSON.stringify(object);
  if (!JSON_RAW_CONTROLS.test(json)) return json + "\n";
  return json.replace(JSON_RAW_CONTROLS_ALL, (c) => unicodeEscape(c.charCodeAt(0))) + "\n";
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
/**
 * Bytes of formatted records waiting for output at most, beside the batch
 * being written (which was held to the same): the log queue's share of the
 * memory budget (src/memory.ts). A data record of 1 KiB shown takes up to 5 KiB.
 */
export const MAX_PENDING_BYTES = 8 * 1024 * 1024;
/** A buffer a batch was written from is kept for the next batch up to this size. */
const KEPT_BUFFER_BYTES = 1 << 20;
/**
 * How long the first record of a batch waits for others: each write to a
 * pipe costs the log reader a wake-up, and at 5 ms the writes are few
 * (measured: rr 50 with data records, 84k/s flushing every turn, 98k/s at 5 ms).
 */
const BATCH_WINDOW_MS = 5;
/** A batch this large is written at once, whatever the window. */
const BATCH_MAX_BYTES = 256 * 1024;

/**
 * A LogTape sink that batches: each record is formatted as it arrives into
 * one buffer, and the buffer is written in one write once the current task is
 * done (and again whenever a write completes), so echoing never waits for the
 * log and a busy connection costs one write per batch, not one per record.
 * (LogTape's own non-blocking stream sink writes records one by one and
 * silently drops the oldest once 2,000 wait, which lost records under
 * data-heavy streams.) Data records skip LogTape's record objects: they are
 * formatted from the read buffer straight into the batch
 * ({@linkcode BatchingSink.appendDataRecords}). When `maxPending` records or
 * `maxPendingBytes` bytes wait, newer records that `isExpendable` (data
 * records) are dropped; the others (connection and lifecycle records) only
 * beyond twice that. A record then says how many were dropped, where the gap
 * is. Dispose it to flush.
 */
export class BatchingSink implements AsyncDisposable {
  /** The batch being filled, and the other buffer while no write holds it. */
  #filling: Uint8Array<ArrayBuffer> = new Uint8Array(65_536);
  #spare: Uint8Array<ArrayBuffer> | undefined;
  #length = 0;
  #records = 0;
  #dropped = 0;
  #writing: Promise<void> | undefined;
  /** The pending batch window, while one runs. */
  #timer: ReturnType<typeof setTimeout> | undefined;
  readonly #dataFormat: DataRecordFormat;

  /**
   * `write` takes each batch; `format` makes a record's line; the limits are
   * as above; `dataFormat` is how {@linkcode BatchingSink.appendDataRecords}
   * writes (the same lines `format` makes of LogTape's data records).
   */
  constructor(
    readonly write: (bytes: Uint8Array) => Promise<unknown>,
    readonly format: (record: LogRecord) => string,
    readonly maxPending: number = MAX_PENDING_RECORDS,
    readonly isExpendable: (record: LogRecord) => boolean = () => true,
    dataFormat: LogFormat = "text",
    readonly maxPendingBytes: number = MAX_PENDING_BYTES,
  ) {
    this.#dataFormat = dataFormat === "json" ? JSON_DATA_FORMAT : TEXT_DATA_FORMAT;
  }

  /** The sink to give LogTape. */
  readonly sink: Sink = (record) => this.append(record);

  /** Appends one record, formatted, unless too many wait (see the class). */
  append(record: LogRecord): void {
    if (!this.#admit(this.isExpendable(record), 1)) return;
    this.#appendText(this.format(record));
  }

  /**
   * Appends the two data records of a received chunk (its raw bytes, then its
   * escaped text, each capped at `limit` bytes), formatted straight from
   * `chunk` into the batch: byte for byte what `format` makes of the records
   * {@linkcode logReceived} gives LogTape.
   */
  appendDataRecords(id: string, chunk: Uint8Array, limit: number): void {
    if (!this.#admit(true, 2)) return;
    const shown = Math.min(chunk.length, limit);
    this.#reserve(8 * shown + 512);
    const now = Date.now();
    this.#length = putDataRecords(
      this.#dataFormat,
      this.#filling,
      this.#length,
      now,
      id,
      chunk,
      shown,
    );
  }

  /**
   * Appends an info record of a connection (open, closed): written straight
   * into the batch when its message is plain printable ASCII without
   * placeholders, its keys are lowercase names and every fact is a finite
   * number or a string written bare ({@linkcode isBareFact}), byte for byte
   * what `format` makes of it (about 3 µs less a record); else formatted by
   * `format`. Either way it is admitted as a record that is not expendable,
   * as {@linkcode createStdoutSink} counts every record but the data records.
   */
  appendConnectionRecord(message: string, properties: Record<string, unknown>): void {
    const now = Date.now();
    const bytes = messageBytes(message);
    const factBytes = bytes === undefined ? -1 : plainFactsLength(properties);
    if (bytes === undefined || factBytes < 0) {
      return this.append({ level: "info", timestamp: now, rawMessage: message, properties });
    }
    if (!this.#admit(false, 1)) return;
    const messageLength = Math.max(bytes.text.length, bytes.json.length);
    this.#reserve(RECORD_FRAME_BYTES + messageLength + factBytes);
    this.#length = putConnectionRecord(
      this.#dataFormat,
      this.#filling,
      this.#length,
      now,
      bytes,
      properties,
    );
  }

  /** Counts `count` records in, or drops them (counted) when too many wait. */
  #admit(expendable: boolean, count: number): boolean {
    const share = expendable ? 1 : 2;
    if (
      this.#records + count > share * this.maxPending ||
      this.#length >= share * this.maxPendingBytes
    ) {
      this.#dropped += count;
      return false;
    }
    if (this.#dropped > 0) this.#reportDrops();
    if (this.#writing === undefined && this.#length >= BATCH_MAX_BYTES) this.#flushBatch();
    this.#records += count;
    if (this.#writing === undefined && this.#timer === undefined) {
      this.#timer = setTimeout(() => this.#flushBatch(), BATCH_WINDOW_MS);
    }
    return true;
  }

  #reportDrops(): void {
    const dropped = this.#dropped;
    this.#dropped = 0;
    this.#appendText(this.format(dropRecord(dropped)));
  }

  #appendText(text: string): void {
    this.#reserve(text.length * 3);
    this.#length += encoder.encodeInto(text, this.#filling.subarray(this.#length)).written;
  }

  /** Makes room for `bytes` more in the batch being filled. */
  #reserve(bytes: number): void {
    if (this.#filling.length - this.#length >= bytes) return;
    const grown = new Uint8Array(Math.max(this.#filling.length * 2, this.#length + bytes));
    grown.set(this.#filling.subarray(0, this.#length));
    this.#filling = grown;
  }

  #flushBatch(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#dropped > 0) this.#reportDrops();
    if (this.#writing !== undefined || this.#length === 0) return;
    const written = this.#filling;
    const batch = written.subarray(0, this.#length);
    this.#filling = this.#spare ?? new Uint8Array(65_536);
    this.#spare = undefined;
    this.#length = 0;
    this.#records = 0;
    this.#writing = this.write(batch).then(
      () => {},
      () => {}, // Nowhere left to report a failing log output.
    ).finally(() => {
      if (written.length <= KEPT_BUFFER_BYTES) this.#spare = written;
      this.#writing = undefined;
      if (this.#length > 0 || this.#dropped > 0) this.#flushBatch();
    });
  }

  /** Writes everything still waiting. */
  async flush(): Promise<void> {
    while (this.#writing !== undefined || this.#length > 0 || this.#dropped > 0) {
      if (this.#writing === undefined) this.#flushBatch();
      await this.#writing;
    }
  }

  /** Flushes: everything still waiting is written. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.flush();
  }
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
 * output in batches. A slow log reader costs at most `maxPendingBytes` of
 * waiting records (and the batch being written); data records are dropped
 * first, so connection and lifecycle records survive.
 */
export function createStdoutSink(
  format: LogFormat,
  maxPendingBytes: number = MAX_PENDING_BYTES,
): BatchingSink {
  return new BatchingSink(
    (bytes) => writeAll(Deno.stdout, bytes),
    format === "json" ? formatJsonRecord : formatTextRecord,
    MAX_PENDING_RECORDS,
    isDataRecord,
    format,
    maxPendingBytes,
  );
}

/** The sink hot-path records go straight into, when logging was set up with a {@linkcode BatchingSink}. */
let dataRecordSink: BatchingSink | undefined;

/**
 * Logs an info record of a connection (open, closed): formatted straight into
 * the {@linkcode BatchingSink} when logging goes to one, skipping LogTape's
 * record machinery (about 3.5 µs a record, which cost 15% of the connection
 * rate), else through LogTape. The caller checks that info is enabled.
 */
export function logConnectionRecord(message: string, properties: Record<string, unknown>): void {
  if (dataRecordSink === undefined) return log.info(message, properties);
  dataRecordSink.appendConnectionRecord(message, properties);
}

/**
 * The messages of the two data records of each received chunk, as the
 * original server wrote them: its bytes, then the same bytes as text.
 */
export const DATA_MESSAGES = {
  raw: "Received Raw Data",
  text: "Received Data (converted to string)",
} as const;

/**
 * Logs the two data records of a received chunk, as the original server
 * wrote them: its bytes as Go prints a `[]byte`, then as escaped text, each
 * capped at `limit` bytes (`omitted_bytes` says how many were left out).
 * With a {@linkcode BatchingSink} they are formatted straight into its batch;
 * otherwise (tests capturing records) they go through LogTape.
 */
export function logReceived(id: string, chunk: Uint8Array, limit: number): void {
  if (dataRecordSink !== undefined) return dataRecordSink.appendDataRecords(id, chunk, limit);
  const shown = chunk.slice(0, limit);
  const omitted = chunk.length - shown.length;
  const facts = omitted > 0 ? { omitted_bytes: omitted } : {};
  log.info(`${DATA_MESSAGES.raw}: {raw}`, { id, raw: new RawBytes(shown), ...facts });
  log.info(`${DATA_MESSAGES.text}: {data}`, {
    id,
    data: new DataText(shown),
    ...facts,
  });
}

/**
 * Points LogTape at `sink` for the server's category at the configured level
 * (and LogTape's own warnings); data records go straight into a
 * {@linkcode BatchingSink}. Returns a function that flushes and detaches.
 */
export async function setupLogging(
  level: LogLevelName,
  sink: Sink | BatchingSink,
): Promise<() => Promise<void>> {
  dataRecordSink = sink instanceof BatchingSink ? sink : undefined;
  await configure({
    reset: true,
    sinks: { main: sink instanceof BatchingSink ? sink.sink : sink },
    loggers: [
      { category: LOG_CATEGORY, lowestLevel: LOGTAPE_LEVEL[level], sinks: ["main"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["main"] },
    ],
  });
  return async () => {
    dataRecordSink = undefined;
    await resetLogging();
  };
}

// ---------------------------------------------------------------------------
// Data records, formatted from the read buffer straight into bytes
// ---------------------------------------------------------------------------

const ascii = (text: string) => Uint8Array.from(text, (c) => c.charCodeAt(0));
/** The fixed bytes around one data line: before its id, before its body, after its body. */
interface DataLineParts {
  readonly beforeId: Uint8Array;
  readonly beforeBody: Uint8Array;
  readonly afterBody: Uint8Array;
}

/** How one record format writes the two data lines (the same bytes as its LogTape formatter). */
interface DataRecordFormat {
  readonly beforeTimestamp: Uint8Array;
  readonly timestamp: (epochMs: number) => string;
  readonly raw: DataLineParts;
  readonly data: DataLineParts;
  /** Between the raw bytes' values. */
  readonly separator: number;
  /** The escaped text goes inside a JSON string. */
  readonly json: boolean;
  readonly omitted: (count: number) => string;
  readonly end: Uint8Array;
}

const JSON_MESSAGE = (msg: string) => ascii(`","level":"info","msg":"${msg}","id":"`);

const TEXT_DATA_FORMAT: DataRecordFormat = {
  beforeTimestamp: new Uint8Array(0),
  timestamp: (ms) => formatGoTimestamp(ms),
  raw: {
    beforeId: ascii(" "),
    beforeBody: ascii(` - ${DATA_MESSAGES.raw}: [`),
    afterBody: ascii("]"),
  },
  data: {
    beforeId: ascii(" "),
    beforeBody: ascii(` - ${DATA_MESSAGES.text}: `),
    afterBody: new Uint8Array(0),
  },
  separator: 0x20,
  json: false,
  omitted: (count) => ` omitted_bytes=${count}`,
  end: ascii("\n"),
};

const JSON_DATA_FORMAT: DataRecordFormat = {
  beforeTimestamp: ascii('{"ts":"'),
  timestamp: (ms) => isoTimestamp(ms),
  raw: {
    beforeId: JSON_MESSAGE(DATA_MESSAGES.raw),
    beforeBody: ascii('","raw":['),
    afterBody: ascii("]"),
  },
  data: {
    beforeId: JSON_MESSAGE(DATA_MESSAGES.text),
    beforeBody: ascii('","data":"'),
    afterBody: ascii('"'),
  },
  separator: 0x2c,
  json: true,
  omitted: (count) => `,"omitted_bytes":${count}`,
  end: ascii("}\n"),
};

/** Each byte's escaped text ({@linkcode escapeData}), as bytes, and the same inside a JSON string. */
const SINGLE_BYTE_ESCAPED = SINGLE_BYTE_TEXT.map(ascii);
const SINGLE_BYTE_JSON = SINGLE_BYTE_TEXT.map((text) => ascii(JSON.stringify(text).slice(1, -1)));
const HEX_DIGITS = ascii("0123456789abcdef");

/** Writes ASCII `text` at `o`; returns the offset after it. */
function putAscii(out: Uint8Array, o: number, text: string): number {
  for (let i = 0; i < text.length; i++) out[o++] = text.charCodeAt(i);
  return o;
}

function putBytes(out: Uint8Array, o: number, bytes: Uint8Array): number {
  for (let i = 0; i < bytes.length; i++) out[o++] = bytes[i];
  return o;
}

/** The bytes' decimal values, separated by `separator` (Go's `[]byte` form without brackets). */
function putDecimals(out: Uint8Array, o: number, bytes: Uint8Array, n: number, separator: number) {
  for (let i = 0; i < n; i++) {
    if (i > 0) out[o++] = separator;
    o = putBytes(out, o, DECIMAL_DIGITS[bytes[i]]);
  }
  return o;
}

/** {@linkcode escapeData} of `bytes[0..n)` written as bytes; inside a JSON string with `json`. */
function putEscaped(out: Uint8Array, o: number, bytes: Uint8Array, n: number, json: boolean) {
  const table = json ? SINGLE_BYTE_JSON : SINGLE_BYTE_ESCAPED;
  const end = n > 0 && bytes[n - 1] === 0x0a ? n - 1 : n;
  let i = 0;
  while (i < end) {
    const b = bytes[i];
    const length = b < 0x80 ? 0 : utf8SequenceLength(bytes, i, end);
    if (length === 0) {
      o = putBytes(out, o, table[b]);
      i++;
      continue;
    }
    const codePoint = decodeCodePoint(bytes, i, length);
    if (escapesAsUnicode(codePoint)) {
      out[o++] = 0x5c;
      if (json) out[o++] = 0x5c;
      out[o++] = 0x75;
      for (let shift = 12; shift >= 0; shift -= 4) out[o++] = HEX_DIGITS[(codePoint >> shift) & 15];
    } else {
      for (let k = 0; k < length; k++) out[o++] = bytes[i + k];
    }
    i += length;
  }
  return o;
}

/** Writes the two data lines of a chunk (its first `shown` bytes) at `o`; returns the offset after. */
function putDataRecords(
  format: DataRecordFormat,
  out: Uint8Array,
  o: number,
  now: number,
  id: string,
  chunk: Uint8Array,
  shown: number,
): number {
  const timestamp = format.timestamp(now);
  const omitted = chunk.length > shown ? format.omitted(chunk.length - shown) : "";
  o = putLineStart(out, o, format, format.raw, timestamp, id);
  o = putDecimals(out, o, chunk, shown, format.separator);
  o = putLineEnd(out, o, format, format.raw, omitted);
  o = putLineStart(out, o, format, format.data, timestamp, id);
  o = putEscaped(out, o, chunk, shown, format.json);
  o = putLineEnd(out, o, format, format.data, omitted);
  return o;
}

/** A data line up to its body: timestamp, id and the fixed bytes around them. */
function putLineStart(
  out: Uint8Array,
  o: number,
  format: DataRecordFormat,
  parts: DataLineParts,
  timestamp: string,
  id: string,
): number {
  o = putBytes(out, o, format.beforeTimestamp);
  o = putAscii(out, o, timestamp);
  o = putBytes(out, o, parts.beforeId);
  o = putAscii(out, o, id);
  return putBytes(out, o, parts.beforeBody);
}

/** A data line after its body: the closing bytes, `omitted_bytes` if any, the line's end. */
function putLineEnd(
  out: Uint8Array,
  o: number,
  format: DataRecordFormat,
  parts: DataLineParts,
  omitted: string,
): number {
  o = putBytes(out, o, parts.afterBody);
  o = putAscii(out, o, omitted);
  return putBytes(out, o, format.end);
}

/**
 * The bytes {@linkcode putConnectionRecord} writes for `properties` besides
 * the timestamp and the message, at most; or -1 when a fact is not plain.
 * Plain: a key that is a lowercase name other than JSON's own fields, and a
 * finite number or a string that a text record writes bare and JSON quotes
 * with no escape (the id, written inline, also without `=`: it would read as
 * a fact).
 */
function plainFactsLength(properties: Record<string, unknown>): number {
  let length = 0;
  for (const key in properties) {
    if (!isPlainKey(key)) return -1;
    const value = properties[key];
    if (typeof value === "number") {
      if (!Number.isFinite(value)) return -1;
      length += key.length + 30;
    } else if (typeof value !== "string" || !isBareFact(value)) return -1;
    else if (key === "id" && value.includes("=")) return -1;
    else length += key.length + value.length + 6;
  }
  return length;
}

const plainKeys = new Set<string>();
/** JSON's fields that come before a record's facts. */
const JSON_OWN_FIELDS = new Set(["ts", "level", "msg"]);

function isPlainKey(key: string): boolean {
  if (plainKeys.has(key)) return true;
  if (!/^[a-z_][a-z0-9_]*$/.test(key) || JSON_OWN_FIELDS.has(key)) return false;
  plainKeys.add(key);
  return true;
}

/** A plain message, as the text line and as JSON's `msg` write it. */
interface MessageBytes {
  readonly text: Uint8Array;
  readonly json: Uint8Array;
}

/** Each message seen, as bytes, or `null` when it is not plain. */
const messageBytesCache = new Map<string, MessageBytes | null>();

/**
 * A message's bytes when it is printable ASCII without placeholders
 * (`{`, `}`), `"` or `\`, else `undefined`: the formatters would
 * then change it.
 */
function messageBytes(message: string): MessageBytes | undefined {
  let bytes = messageBytesCache.get(message);
  if (bytes === undefined) {
    const plain = /^[\x20\x21\x23-\x5b\x5d-\x7a\x7c\x7e]+$/.test(message);
    bytes = plain ? { text: ascii(message), json: ascii(JSON.stringify(message.trim())) } : null;
    messageBytesCache.set(message, bytes);
  }
  return bytes ?? undefined;
}

/** What a connection record takes besides its message and facts, at most (JSON's frame). */
const RECORD_FRAME_BYTES = 64;
const TEXT_ID_END = ascii(" - ");
const JSON_BEFORE_MSG = ascii('","level":"info","msg":');

/**
 * Writes an info record of plain facts ({@linkcode plainFactsLength}) at `o`,
 * as {@linkcode formatTextRecord} or {@linkcode formatJsonRecord} would;
 * returns the offset after it.
 */
function putConnectionRecord(
  format: DataRecordFormat,
  out: Uint8Array,
  o: number,
  now: number,
  { text, json }: MessageBytes,
  properties: Record<string, unknown>,
): number {
  o = putBytes(out, o, format.beforeTimestamp);
  o = putAscii(out, o, format.timestamp(now));
  if (format.json) {
    o = putBytes(out, o, JSON_BEFORE_MSG);
    o = putBytes(out, o, json);
    for (const key in properties) {
      const value = properties[key];
      out[o++] = 0x2c;
      out[o++] = 0x22;
      o = putAscii(out, o, key);
      out[o++] = 0x22;
      out[o++] = 0x3a;
      if (typeof value === "string") {
        out[o++] = 0x22;
        o = putAscii(out, o, value);
        out[o++] = 0x22;
      } else o = putAscii(out, o, String(value));
    }
    return putBytes(out, o, format.end);
  }
  out[o++] = 0x20;
  const { id } = properties;
  if (id !== undefined) {
    o = putAscii(out, o, String(id));
    o = putBytes(out, o, TEXT_ID_END);
  }
  o = putBytes(out, o, text);
  for (const key in properties) {
    if (key === "id") continue;
    out[o++] = 0x20;
    o = putAscii(out, o, key);
    out[o++] = 0x3d;
    o = putAscii(out, o, String(properties[key]));
  }
  return putBytes(out, o, format.end);
}

/** Records of one millisecond share their RFC 3339 text. */
const lastIso = { ms: NaN, text: "" };

function isoTimestamp(ms: number): string {
  if (ms !== lastIso.ms) {
    lastIso.ms = ms;
    lastIso.text = new Date(ms).toISOString();
  }
  return lastIso.text;
}
