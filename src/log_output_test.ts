import assert from "node:assert/strict";
import type { LogRecord } from "./log_output.ts";
import {
  BatchingSink,
  DataText,
  escapeData,
  escapeText,
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

Deno.test("BatchingSink: waiting records are held to a byte budget, data records dropped first", async () => {
  let release = () => {};
  let wrote = Promise.withResolvers<void>();
  const writes: string[] = [];
  const format = (record: LogRecord) =>
    `${String(record.rawMessage)} ${JSON.stringify(record.properties)}\n`;
  const maxPendingBytes = 1_000;
  const sink = new BatchingSink(
    (bytes) => {
      writes.push(decoder.decode(bytes));
      wrote.resolve();
      return new Promise<void>((resolve) => release = resolve);
    },
    format,
    1_000_000,
    (record) => record.rawMessage === "data",
    "text",
    maxPendingBytes,
  );
  const record = (rawMessage: string): LogRecord => ({
    level: "info",
    timestamp: 0,
    rawMessage,
    properties: { pad: "x".repeat(90) },
  });
  sink.sink(record("first"));
  await within(1_000, "first write", wrote.promise);
  // While the first batch is being written, the rest waits in the next one.
  wrote = Promise.withResolvers<void>();
  for (let i = 0; i < 50; i++) sink.sink(record("data"));
  for (let i = 0; i < 50; i++) sink.sink(record("connection"));
  release();
  await within(1_000, "second write", wrote.promise);
  const flushed = sink.flush();
  release();
  await flushed;
  const waited = writes[1].split("\n").filter((line) => line !== "");
  const count = (message: string) => waited.filter((l) => l.startsWith(`${message} `)).length;
  // A record is admitted while the batch holds less than the budget (twice it for the others);
  // the first admitted after drops is preceded by the record that says how many.
  const drops = (n: number) => `Log output fell behind; records dropped. {"dropped_records":${n}}`;
  const dataBytes = format(record("data")).length;
  const dataKept = Math.ceil(maxPendingBytes / dataBytes);
  const held = dataKept * dataBytes + drops(50 - dataKept).length + 1;
  const connectionKept = Math.ceil(
    (2 * maxPendingBytes - held) / format(record("connection")).length,
  );
  assert.equal(count("data"), dataKept);
  assert.equal(count("connection"), connectionKept);
  assert.deepEqual(waited.filter((line) => line.startsWith("Log output")), [
    drops(50 - dataKept),
    drops(50 - connectionKept),
  ]);
});

/** A sink writing `format`, whose batches `output()` gives back as text. */
function collectingSink(
  format: "text" | "json",
  formatter: (record: LogRecord) => string,
  maxPending: number,
  isExpendable: (record: LogRecord) => boolean,
  maxPendingBytes?: number,
): { sink: BatchingSink; output: () => string } {
  let out = "";
  const sink = new BatchingSink(
    (bytes) => Promise.resolve(out += decoder.decode(bytes)),
    formatter,
    maxPending,
    isExpendable,
    format,
    maxPendingBytes,
  );
  return { sink, output: () => out };
}

/** A text without its records' timestamps: records formatted a moment apart compare equal. */
const withoutTimestamps = (text: string) =>
  text.replace(/^\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d /gm, "").replace(/"ts":"[^"]+"/g, "");

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
          const { sink, output } = collectingSink(format, formatter, 100, () => true);
          const before = Date.now();
          sink.appendDataRecords(id, chunk, limit);
          await sink.flush();
          const direct = output();
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
          assert.equal(withoutTimestamps(direct), withoutTimestamps(expected), what);
          assert.equal(direct.split("\n").length, 3, `${what}: two lines`);
        }
      });
    }
  }
});

Deno.test("connection records written straight into the batch are byte for byte the formatters'", async (t) => {
  const id = crypto.randomUUID();
  const plain: [string, string, Record<string, unknown>][] = [
    ["open", "TCP connection open.", { id, client: "127.0.0.1:51114", port: 7, family: "IPv4" }],
    ["open, IPv6", "TCP connection open.", { id, client: "[::1]:5000", port: 7, family: "IPv6" }],
    ["closed", "TCP connection closed.", {
      id,
      reason: "eof",
      bytes_in: 3,
      bytes_out: 1e21,
      duration_ms: -0,
      port: 7,
    }],
    ["no id", "UDP flow open.", { client: "10.0.0.1:53", port: 5353 }],
    ["punctuation", "TCP connection open.", { id, sni: "a=b!#$%&'()*+,-./:;<>?@[]^_`{|}~" }],
  ];
  // Facts the direct path must leave to the formatter: each needs quoting or escaping.
  const hostile: [string, Record<string, unknown>][] = [
    ["a newline", { id, sni: "evil\n2026/01/01 00:00:00 forged" }],
    ["a space", { id, client_cert: "CN=a b" }],
    ["a quote", { id, sni: 'say "hi"' }],
    ["a backslash", { id, sni: "a\\b" }],
    ["an empty string", { id, sni: "" }],
    ["non-ASCII", { id, subject: "CN=Bücher" }],
    ["a C1 control", { id, sni: "a\u0085b" }],
    ["NaN", { id, duration_ms: NaN }],
    ["Infinity", { id, bytes_in: Infinity }],
    ["an error", { id, reason: "error", error: new Error("broken\npipe") }],
    ["an id with =", { id: "x=1", port: 7 }],
    ["an id starting with a quote", { id: '"x', port: 7 }],
    ["a boolean", { id, tls: true }],
    ["a key JSON has already", { id, msg: "x" }],
    ["a key with a quote", { id, ['a"b']: 1 }],
    ["a non-ASCII key", { id, ["ü"]: 1 }],
    ["an integer-like key", { id, ["1"]: 1 }],
  ];
  // Messages the formatters change (placeholders, escapes): also through the formatter.
  const unusualMessages = [
    "Open from {client}.",
    "m\u2028x.",
    "\x01".repeat(20) + ".",
    'say "hi".',
    "a\\b.",
    "Bücher.",
  ];
  for (const format of ["text", "json"] as const) {
    const formatter = format === "json" ? formatJsonRecord : formatTextRecord;
    const written = async (
      message: string,
      properties: Record<string, unknown>,
      format_ = formatter,
    ) => {
      const { sink, output } = collectingSink(format, format_, 100, () => false);
      sink.appendConnectionRecord(message, properties);
      await sink.flush();
      return output();
    };
    const expected = (message: string, properties: Record<string, unknown>) =>
      formatter({ level: "info", timestamp: Date.now(), rawMessage: message, properties });
    await t.step(`${format}: plain facts, written directly`, async () => {
      for (const [what, message, properties] of plain) {
        assert.equal(
          withoutTimestamps(await written(message, properties)),
          withoutTimestamps(expected(message, properties)),
          what,
        );
        // A formatter that marks its lines shows the record did not go through it.
        assert.doesNotMatch(
          await written(message, properties, () => "FORMATTER\n"),
          /FORMATTER/,
          what,
        );
      }
    });
    await t.step(`${format}: facts to quote or escape, through the formatter`, async () => {
      for (const [what, properties] of hostile) {
        const message = "TCP connection open.";
        assert.equal(await written(message, properties, () => "FORMATTER\n"), "FORMATTER\n", what);
        assert.equal(
          withoutTimestamps(await written(message, properties)),
          withoutTimestamps(expected(message, properties)),
          what,
        );
        assert.equal(
          (await written(message, properties)).split("\n").length,
          2,
          `${what}: one line`,
        );
      }
      for (const message of unusualMessages) {
        const properties = { id, client: "127.0.0.1:1" };
        assert.equal(
          await written(message, properties, () => "FORMATTER\n"),
          "FORMATTER\n",
          message,
        );
        assert.equal(
          withoutTimestamps(await written(message, properties)),
          withoutTimestamps(expected(message, properties)),
        );
      }
    });
    await t.step(
      `${format}: many records, past the batch's first buffer, as the formatter's`,
      async () => {
        const { sink, output } = collectingSink(
          format,
          formatter,
          100_000,
          () => false,
          2 ** 20 * 100,
        );
        let want = "";
        for (let i = 0; i < 3_000; i++) {
          const properties = {
            id,
            ["k".repeat(i % 97 + 1)]: "v".repeat(i % 301 + 1),
            n: i * 1.5e300,
            port: -i,
          };
          const message = "TCP connection open." + " ".repeat(i % 7);
          sink.appendConnectionRecord(message, properties);
          want += expected(message, properties);
        }
        await sink.flush();
        const out = output();
        assert.equal(withoutTimestamps(out), withoutTimestamps(want));
        if (format === "json") { for (const line of out.trimEnd().split("\n")) JSON.parse(line); }
      },
    );
  }
});

/** A record's time and connection id, fixed so whole lines can be written out. */
const AT = Date.UTC(2026, 0, 1);
const ID = "7c0e2a52-3b1d-4e0f-8a6c-5d4b3a291807";
const TEXT_START = `2026/01/01 00:00:00 ${ID} - `;
const JSON_START = `{"ts":"2026-01-01T00:00:00.000Z","level":"info",`;

/** A refusal with `detail` inline, as main.ts logs one. */
const inlineRecord = (detail: unknown): LogRecord => ({
  level: "info",
  timestamp: AT,
  rawMessage: "Connection refused: {detail}",
  properties: { id: ID, peer: "127.0.0.1:5000", detail },
});

/** An open record with `client_cert` as a key=value fact. */
const factRecord = (subject: unknown): LogRecord => ({
  level: "info",
  timestamp: AT,
  rawMessage: "TCP connection open.",
  properties: { id: ID, client_cert: subject, port: 8443 },
});

/** Reads a value back from a text record: quotes taken off, {@linkcode escapeText}'s escapes undone. */
function readBack(shown: string): string {
  const body = shown.startsWith('"') ? shown.slice(1, -1) : shown;
  const named: Record<string, string> = { t: "\t", n: "\n", r: "\r", "\\": "\\", '"': '"' };
  return body.replace(
    /\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|(.))/g,
    (_, hex2, hex4, char) => char ? named[char] : String.fromCharCode(parseInt(hex2 ?? hex4, 16)),
  );
}

/** Each record is one line: nothing a reader takes for a line break but the final `\n`. */
function assertOneLine(line: string, what: string): void {
  assert.deepEqual(line.split(/[\n\r\u0085\u2028\u2029]/).slice(1), [""], `${what}: one line`);
  assert.ok(line.isWellFormed(), `${what}: no lone surrogate`);
  // deno-lint-ignore no-control-regex
  assert.doesNotMatch(line.slice(0, -1), /[\x00-\x1f\x7f-\x9f]/, `${what}: no raw control`);
}

/**
 * Hostile values (from a peer's certificate or the network) and how each is
 * written: inline in the message, as a key=value fact, and in JSON.
 */
const HOSTILE: { what: string; value: string; inline: string; fact: string; json: string }[] = [
  {
    what: "CRLF and a forged record",
    value: "a\r\nFAKE 2026/01/01 00:00:00 x - forged",
    inline: String.raw`a\r\nFAKE 2026/01/01 00:00:00 x - forged`,
    fact: String.raw`"a\r\nFAKE 2026/01/01 00:00:00 x - forged"`,
    json: String.raw`"a\r\nFAKE 2026/01/01 00:00:00 x - forged"`,
  },
  {
    what: "ESC sequence",
    value: "\x1b[31m",
    inline: String.raw`\x1b[31m`,
    fact: String.raw`"\x1b[31m"`,
    json: String.raw`"\u001b[31m"`,
  },
  {
    what: "NEL (C1)",
    value: "\u0085",
    inline: String.raw`\u0085`,
    fact: String.raw`"\u0085"`,
    json: String.raw`"\u0085"`,
  },
  {
    what: "CSI (C1)",
    value: "\u009b2J",
    inline: String.raw`\u009b2J`,
    fact: String.raw`"\u009b2J"`,
    json: String.raw`"\u009b2J"`,
  },
  {
    what: "line separator",
    value: "\u2028",
    inline: String.raw`\u2028`,
    fact: String.raw`"\u2028"`,
    json: String.raw`"\u2028"`,
  },
  {
    what: "paragraph separator",
    value: "\u2029",
    inline: String.raw`\u2029`,
    fact: String.raw`"\u2029"`,
    json: String.raw`"\u2029"`,
  },
  {
    what: "DEL",
    value: "\x7f",
    inline: String.raw`\x7f`,
    fact: String.raw`"\x7f"`,
    json: String.raw`"\u007f"`,
  },
  {
    what: "lone surrogate",
    value: "\ud800",
    inline: String.raw`\ud800`,
    fact: String.raw`"\ud800"`,
    json: String.raw`"\ud800"`,
  },
  {
    what: "lone surrogates around a pair",
    value: "\udc00😀\ud83d",
    inline: String.raw`\udc00😀\ud83d`,
    fact: String.raw`"\udc00😀\ud83d"`,
    json: String.raw`"\udc00😀\ud83d"`,
  },
  {
    what: "a certificate name with a forged attribute line",
    value: "CN=a\nO=forged",
    inline: String.raw`CN=a\nO=forged`,
    fact: String.raw`"CN=a\nO=forged"`,
    json: String.raw`"CN=a\nO=forged"`,
  },
  {
    what: "a forged fact",
    value: "x level=error",
    inline: String.raw`"x level=error"`,
    fact: String.raw`"x level=error"`,
    json: String.raw`"x level=error"`,
  },
  {
    what: "a forged fact at the start",
    value: "level=error",
    inline: String.raw`"level=error"`,
    fact: String.raw`level=error`,
    json: String.raw`"level=error"`,
  },
  {
    what: "a value that starts like a quoted one",
    value: '"level=error"',
    inline: String.raw`"\"level=error\""`,
    fact: String.raw`"\"level=error\""`,
    json: String.raw`"\"level=error\""`,
  },
  {
    what: "a backslash (the escape character itself)",
    value: String.raw`C:\new\x41`,
    inline: String.raw`C:\\new\\x41`,
    fact: String.raw`"C:\\new\\x41"`,
    json: String.raw`"C:\\new\\x41"`,
  },
];

Deno.test("records are unforgeable: every value is escaped, each record is one line", async (t) => {
  await t.step("hostile inline values (text)", () => {
    for (const { what, value, inline } of HOSTILE) {
      const line = formatTextRecord(inlineRecord(value));
      assert.equal(line, `${TEXT_START}Connection refused: ${inline} peer=127.0.0.1:5000\n`, what);
      assertOneLine(line, what);
    }
  });

  await t.step("hostile facts (text)", () => {
    for (const { what, value, fact } of HOSTILE) {
      const line = formatTextRecord(factRecord(value));
      assert.equal(line, `${TEXT_START}TCP connection open. client_cert=${fact} port=8443\n`, what);
      assertOneLine(line, what);
    }
  });

  await t.step("hostile values (JSON): escaped, one line, parsed back unchanged", () => {
    for (const { what, value, json } of HOSTILE) {
      const refused = formatJsonRecord(inlineRecord(value));
      assert.equal(
        refused,
        `${JSON_START}"msg":"Connection refused","id":"${ID}","peer":"127.0.0.1:5000","detail":${json}}\n`,
        what,
      );
      const open = formatJsonRecord(factRecord(value));
      assert.equal(
        open,
        `${JSON_START}"msg":"TCP connection open.","id":"${ID}","client_cert":${json},"port":8443}\n`,
        what,
      );
      for (const line of [refused, open]) assertOneLine(line, what);
      assert.equal(JSON.parse(refused).detail, value, what);
      assert.equal(JSON.parse(open).client_cert, value, what);
    }
  });

  await t.step("Error values take the same path", () => {
    const error = new Error("bad\u2028cert\x1b[2J");
    const record: LogRecord = {
      level: "warning",
      timestamp: AT,
      rawMessage: "Accept failed: {detail}",
      properties: { detail: error, error },
    };
    assert.equal(
      formatTextRecord(record),
      String
        .raw`2026/01/01 00:00:00 Accept failed: bad\u2028cert\x1b[2J error="bad\u2028cert\x1b[2J" level=warn` +
        "\n",
    );
    const json = formatJsonRecord(record);
    assert.equal(
      json,
      String
        .raw`{"ts":"2026-01-01T00:00:00.000Z","level":"warn","msg":"Accept failed","detail":"bad\u2028cert\u001b[2J","error":"bad\u2028cert\u001b[2J"}` +
        "\n",
    );
    assert.equal(JSON.parse(json).error, error.message);
  });

  await t.step("plain values are written as before, byte for byte", () => {
    const plainInline = [
      "app1.example.com",
      "no TLS handshake in 300 ms",
      "client certificate CN=client.example, O=Acme expired on Jan  1 00:00:00 2026 GMT",
      "unreadable: TLS_KEY_FILE=/etc/tls/key.pem: No such file or directory",
      'not TLS: the client sent plain text "hello"; connect with TLS, or to a TCP_PORT',
      "héllo → 世界 😀",
      "",
    ];
    for (const detail of plainInline) {
      assert.equal(
        formatTextRecord(inlineRecord(detail)),
        `${TEXT_START}Connection refused: ${detail} peer=127.0.0.1:5000\n`,
      );
    }
    const facts = {
      id: ID,
      client: "[2001:db8::1]:5678",
      port: 8080,
      sni: "",
      cipher: "TLS_AES_128_GCM_SHA256",
      names: ["a.example", "b.example"],
      subject: "CN=a b",
      city: "Zürich",
      ok: true,
    };
    const record: LogRecord = {
      level: "info",
      timestamp: AT,
      rawMessage: "TCP connection open.",
      properties: facts,
    };
    assert.equal(
      formatTextRecord(record),
      `${TEXT_START}TCP connection open. client=[2001:db8::1]:5678 port=8080 sni="" ` +
        `cipher=TLS_AES_128_GCM_SHA256 names=a.example,b.example subject="CN=a b" ` +
        `city="Zürich" ok=true\n`,
    );
    assert.equal(
      formatJsonRecord(record),
      JSON.stringify({
        ts: "2026-01-01T00:00:00.000Z",
        level: "info",
        msg: "TCP connection open.",
        ...facts,
      }) + "\n",
    );
  });
});

Deno.test("escapeText: escapeData's rules, for strings", async (t) => {
  await t.step("every code point escapeData treats alike comes out alike", () => {
    const codePoints = [
      ...Array.from({ length: 0x100 }, (_, i) => i),
      ...[0x2027, 0x2028, 0x2029, 0x202a, 0x200b, 0xfeff, 0xfffd, 0x1f600, 0x10ffff],
    ];
    for (const codePoint of codePoints) {
      // "x" after it: escapeData drops one trailing newline, as the original server did.
      const text = String.fromCodePoint(codePoint) + "x";
      assert.equal(escapeText(text), escapeData(encoder.encode(text)), codePoint.toString(16));
    }
  });

  await t.step("lone surrogates (a string's broken UTF-8) are \\uNNNN, pairs are kept", () => {
    assert.equal(escapeText("\ud83d\ude00"), "😀");
    assert.equal(escapeText("a\ud83d"), String.raw`a\ud83d`);
    assert.equal(escapeText("\ude00\ud83d\ude00\ude00"), String.raw`\ude00😀\ude00`);
    assert.equal(escapeText("\ud83d\ud83d\ude00"), String.raw`\ud83d😀`);
  });

  await t.step('quoted: in double quotes, with \\"', () => {
    assert.equal(escapeText('say "hi"\n', true), String.raw`"say \"hi\"\n"`);
    assert.equal(escapeText("", true), '""');
    assert.equal(escapeText('say "hi"'), 'say "hi"', "quotes are kept unquoted");
  });
});

Deno.test("records of random hostile values are one line each and read back exactly", () => {
  const pieces = [
    "a",
    " ",
    "=",
    " level=",
    "CN=",
    '"',
    "\\",
    "\\n",
    "\t",
    "\n",
    "\r",
    "\x00",
    "\x1b[2J",
    "\x7f",
    "\u0085",
    "\u009b",
    "\u00a0",
    "\u2028",
    "\u2029",
    "\ud800",
    "\udfff",
    "😀",
    "é",
  ];
  const random = (n: number) => Math.floor(Math.random() * n);
  for (let round = 0; round < 500; round++) {
    const value = Array.from({ length: random(8) }, () => pieces[random(pieces.length)]).join("");
    const what = JSON.stringify(value);
    const inline = formatTextRecord({
      ...inlineRecord(value),
      properties: { id: ID, detail: value },
    });
    assertOneLine(inline, what);
    assert.equal(
      readBack(inline.slice(`${TEXT_START}Connection refused: `.length, -1)),
      value,
      what,
    );
    const fact = formatTextRecord({ ...factRecord(value), properties: { client_cert: value } });
    assertOneLine(fact, what);
    const prefix = "2026/01/01 00:00:00 TCP connection open. client_cert=";
    assert.equal(readBack(fact.slice(prefix.length, -1)), value, what);
    const json = formatJsonRecord(inlineRecord(value));
    assertOneLine(json, what);
    assert.equal(JSON.parse(json).detail, value, what);
  }
});
