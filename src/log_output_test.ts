import assert from "node:assert/strict";
import type { LogRecord } from "./log_output.ts";
import {
  BatchingSink,
  DataText,
  escapeData,
  formatGoTimestamp,
  formatJsonRecord,
  formatRawBytes,
  formatTextRecord,
  RawBytes,
} from "./log_output.ts";
import { decoder, encoder, within } from "../testing/support.ts";

Deno.test("log formatting helpers", async (t) => {
  await t.step("escapeData cannot forge a line and keeps valid UTF-8", () => {
    const cases: [number[] | string, string][] = [
      ["hello\n", "hello"],
      ["hello\n\n", "hello\\n"],
      ["a\r\nFAKE", "a\\r\\nFAKE"],
      ["tab\there\\x41", "tab\\there\\\\x41"],
      ["héllo → 世界 😀", "héllo → 世界 😀"],
      [[0x00, 0x1b, 0x7f], "\\x00\\x1b\\x7f"],
      [[0xff, 0xc0, 0x80, 0xed, 0xa0, 0x80], "\\xff\\xc0\\x80\\xed\\xa0\\x80"],
      [[0xe4, 0xb8], "\\xe4\\xb8"],
      [[0xc2, 0x85, 0xe2, 0x80, 0xa8], "\\u0085\\u2028"],
      ["", ""],
    ];
    for (const [input, expected] of cases) {
      const bytes = typeof input === "string" ? encoder.encode(input) : new Uint8Array(input);
      assert.equal(escapeData(bytes), expected, JSON.stringify(input));
    }
    const everyByte = escapeData(Uint8Array.from({ length: 256 }, (_, i) => i));
    const controls = [...everyByte].filter((c) => /\p{Cc}|\u2028|\u2029/u.test(c));
    assert.deepEqual(controls, [], everyByte);
  });

  await t.step("formatRawBytes is Go's []byte form", () => {
    assert.equal(formatRawBytes(encoder.encode("hello\n")), "[104 101 108 108 111 10]");
    assert.equal(formatRawBytes(new Uint8Array()), "[]");
  });

  await t.step("formatGoTimestamp is UTC YYYY/MM/DD HH:MM:SS", () => {
    assert.equal(formatGoTimestamp(Date.UTC(2026, 10, 5, 7, 2, 9, 999)), "2026/11/05 07:02:09");
  });
});

Deno.test("BatchingSink: one write per batch, in order, drops counted when output falls behind", async () => {
  const writes: string[] = [];
  let release = () => {};
  let wrote = Promise.withResolvers<void>();
  const sink = new BatchingSink(
    (bytes) => {
      writes.push(decoder.decode(bytes));
      wrote.resolve();
      return new Promise<void>((resolve) => release = resolve);
    },
    (record) =>
      record.properties.dropped_records === undefined
        ? `${record.properties.n}\n`
        : `dropped ${record.properties.dropped_records}\n`,
    3,
  );
  const record = (n: number): LogRecord => ({
    level: "info",
    timestamp: 0,
    rawMessage: "r",
    properties: { n },
  });
  for (let n = 1; n <= 2; n++) sink.sink(record(n));
  await within(1_000, "first write", wrote.promise);
  assert.deepEqual(writes, ["1\n2\n"], "records of one task go out in one write");
  // While that write is pending, 3 records fit and 2 are dropped.
  wrote = Promise.withResolvers<void>();
  for (let n = 3; n <= 7; n++) sink.sink(record(n));
  release();
  await within(1_000, "second write", wrote.promise);
  assert.deepEqual(writes, ["1\n2\n", "3\n4\n5\ndropped 2\n"]);
  const flushed = sink.flush();
  release();
  await flushed;
  assert.equal(writes.length, 2, "nothing was left to write");
});

Deno.test("data records formatted straight from the buffer are byte for byte LogTape's", async (t) => {
  const chunks: [string, Uint8Array][] = [
    ["text with a newline", encoder.encode("hello, app1\n")],
    ["CRLF and a forged line", encoder.encode("a\r\nFAKE 2026/11/25 line\r\n")],
    ["every byte value", Uint8Array.from({ length: 256 }, (_, i) => i)],
    [
      "UTF-8, C1 controls, line separators",
      encoder.encode('héllo → 世界 😀 \u0085 \u009b \u2028 \u2029 "q" \\'),
    ],
    ["broken UTF-8", Uint8Array.of(0xff, 0xc0, 0x80, 0xed, 0xa0, 0x80, 0xe4, 0xb8, 0xf4, 0x90)],
    ["empty", new Uint8Array(0)],
    ["only a newline", Uint8Array.of(0x0a)],
    ["random", crypto.getRandomValues(new Uint8Array(4_000))],
  ];
  const id = crypto.randomUUID();
  for (const format of ["text", "json"] as const) {
    for (const limit of [1024, 3, 0x10000]) {
      await t.step(`${format}, LOG_DATA_BYTES=${limit}`, async () => {
        for (const [what, chunk] of chunks) {
          const formatter = format === "json" ? formatJsonRecord : formatTextRecord;
          let direct = "";
          const sink = new BatchingSink(
            (bytes) => Promise.resolve(direct += decoder.decode(bytes)),
            formatter,
            100,
            () => true,
            format,
          );
          const before = Date.now();
          sink.appendDataRecords(id, chunk, limit);
          await sink.flush();
          const shown = chunk.slice(0, limit);
          const omitted = chunk.length - shown.length;
          const facts = omitted > 0 ? { omitted_bytes: omitted } : {};
          const record = (rawMessage: string, properties: Record<string, unknown>) => ({
            level: "info" as const,
            timestamp: before,
            rawMessage,
            properties: { id, ...properties, ...facts },
          });
          const expected =
            formatter(record("Received Raw Data: {raw}", { raw: new RawBytes(shown) })) +
            formatter(
              record("Received Data (converted to string): {data}", { data: new DataText(shown) }),
            );
          // The timestamps are taken a moment apart: compare the rest of each line.
          const strip = (text: string) =>
            text.replace(/^\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d /gm, "").replace(/"ts":"[^"]+"/g, "");
          assert.equal(strip(direct), strip(expected), what);
          assert.equal(direct.split("\n").length, 3, `${what}: two lines`);
        }
      });
    }
  }
});
