import assert from "node:assert/strict";
import {
  echoPrefixOf,
  firstDifference,
  lineAnswers,
  looksLikeTls,
  makeExchange,
  quoteStart,
} from "./payloads.ts";
import { LineAnswerer } from "../src/line_mode.ts";
import { decoder, encoder } from "../testing/support.ts";

Deno.test("client payloads and integrity checks", () => {
  const line = makeExchange(10, undefined, "one");
  assert.equal(line.payload.length, 10);
  assert.match(decoder.decode(line.payload), /^[0-9a-f]{9}\n$/);
  assert.equal(decoder.decode(line.expected), `one ${decoder.decode(line.payload)}`);
  const message = makeExchange(64, "hello", undefined);
  assert.deepEqual(message.payload, encoder.encode("hello"));
  assert.equal(message.expected, message.payload);
  assert.equal(makeExchange(1000, undefined, undefined).payload.length, 1000);

  const pattern = Uint8Array.from({ length: 16 }, (_, i) => i);
  const stream = Uint8Array.from({ length: 40 }, (_, i) => (i + 5) % 16); // starts at offset 5, wraps twice
  assert.equal(firstDifference(stream, pattern, 5), -1);
  stream[30] ^= 1;
  assert.equal(firstDifference(stream, pattern, 5), 30);
  assert.equal(firstDifference(pattern.subarray(0, 3), pattern, 1), 0);
});

Deno.test("client echo prefix: what a wrong echo says of a line-mode server", async (t) => {
  const bytes = (text: string) => encoder.encode(text);
  await t.step("line answers are what tcp-echo's line mode sends", () => {
    for (const payload of ["abc", "abc\n", "a\nb", "a\n\nb\r\n", "\n"]) {
      const answerer = new LineAnswerer(bytes("hello "));
      const server = [answerer.push(bytes(payload)), answerer.finish()];
      assert.deepEqual(
        lineAnswers("hello", bytes(payload)),
        new Uint8Array([...server[0], ...server[1]]),
        JSON.stringify(payload),
      );
    }
  });
  await t.step("the prefix read back, after a banner or none", () => {
    assert.equal(echoPrefixOf(bytes("Version v1.\nhello abc\n"), bytes("abc")), "hello");
    assert.equal(echoPrefixOf(bytes("hello abc\nhello def\n"), bytes("abc\ndef")), "hello");
    assert.equal(echoPrefixOf(bytes("hello world abc\n"), bytes("abc\n")), "hello world");
    assert.equal(echoPrefixOf(bytes("Version v1.\nabc\n"), bytes("abc\n")), "", "byte for byte");
    assert.equal(echoPrefixOf(bytes("abc\n"), bytes("abc\n")), "");
  });
  await t.step("no prefix in what is not a line-mode answer", () => {
    assert.equal(echoPrefixOf(bytes("hello abc\nhi def\n"), bytes("abc\ndef")), undefined);
    assert.equal(echoPrefixOf(bytes(" abc\n"), bytes("abc")), undefined, "an empty prefix");
    assert.equal(echoPrefixOf(bytes("\u0001 abc\n"), bytes("abc")), undefined, "control bytes");
    assert.equal(echoPrefixOf(bytes("HTTP/1.1 400 Bad Request\r\n"), bytes("abc")), undefined);
    assert.equal(echoPrefixOf(bytes(""), bytes("")), undefined);
  });
});

Deno.test("client quotes of what came back: short, escaped, cut", () => {
  assert.equal(quoteStart(encoder.encode("hello\n")), '"hello\\n"');
  assert.equal(quoteStart(encoder.encode("x".repeat(100)), 10), `"${"x".repeat(10)}"…`);
  assert.equal(quoteStart(Uint8Array.of(0, 0, 0, 0), 8), '"\\u0000"…', "not half an escape");
  assert.ok(looksLikeTls(Uint8Array.of(0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46)));
  assert.ok(!looksLikeTls(encoder.encode("Version v1.\n")));
});
