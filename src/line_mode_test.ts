import assert from "node:assert/strict";
import { LineAnswerer } from "./line_mode.ts";
import { decoder, encoder } from "../testing/support.ts";

Deno.test("LineAnswerer: lines, CRLF, long lines as one answer, partial last line", () => {
  const answerer = new LineAnswerer(encoder.encode("one "), 8);
  const push = (text: string) => decoder.decode(answerer.push(encoder.encode(text)));
  assert.equal(push("hel"), "");
  assert.equal(push("lo\nworld\r\n\n"), "one hello\none world\r\none \n");
  assert.equal(push("0123456789"), "one 0123456789", "a line past the bound goes on as it comes");
  assert.equal(push("ab\n"), "ab\n", "and ends as one line, with no second prefix");
  assert.equal(push("01234567"), "one 01234567", "a line at the bound");
  assert.equal(push("\n"), "\n", "no phantom empty line after it");
  assert.equal(push("0123456\r"), "one 0123456", "a CR at the bound is held back");
  assert.equal(push("\n"), "\r\n", "so CRLF goes out together");
  assert.equal(push("0123456789"), "one 0123456789");
  assert.equal(decoder.decode(answerer.finish()), "\n");
  assert.equal(push("89"), "");
  assert.equal(decoder.decode(answerer.finish()), "one 89\n");
  assert.equal(decoder.decode(answerer.finish()), "");
});
