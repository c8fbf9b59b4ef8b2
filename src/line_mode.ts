/**
 * Line mode (`ECHO_PREFIX`), the protocol of Istio's tcp-echo: each line is
 * answered as `PREFIX LINE`. Pure: bytes in, answers out; the connection in
 * main.ts writes them.
 *
 * @module
 */
import { concatBytes } from "./wire.ts";

/** Bytes of a line held at most in `ECHO_PREFIX` mode; longer lines are answered as they arrive. */
export const MAX_LINE_BYTES = 65_536;

const NO_BYTES = new Uint8Array(0);
const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;

/**
 * Line mode (`ECHO_PREFIX`): collects received bytes into lines and answers
 * each complete line as `prefix + " " + line` (its `\n` or `\r\n` kept), the
 * bytes Istio's tcp-echo sends. At most {@linkcode MAX_LINE_BYTES} of a line
 * are held: a longer line is answered as it arrives, its prefix first and its
 * newline last, so it still reads as one line (a `\r` is held back, so `\r\n`
 * goes out together). What is left at the end is answered as a line of its own.
 * Pure: bytes in, answers out.
 */
export class LineAnswerer {
  #pending: Uint8Array | undefined;
  #pendingLength = 0;
  /** The current line's prefix and first bytes are already answered. */
  #begun = false;

  /** `prefix` is `ECHO_PREFIX` and a space, encoded. */
  constructor(readonly prefix: Uint8Array, readonly maxLineBytes: number = MAX_LINE_BYTES) {}

  /** The answers to the lines that `chunk` completes or (when too long to hold) continues. */
  push(chunk: Uint8Array): Uint8Array {
    const answers: Uint8Array[] = [];
    let start = 0;
    while (start < chunk.length) {
      const newline = chunk.indexOf(NEWLINE, start);
      if (newline >= 0) {
        answers.push(this.#answer(chunk.subarray(start, newline + 1)));
        this.#begun = false;
        start = newline + 1;
        continue;
      }
      const rest = chunk.subarray(start);
      if (this.#pendingLength + rest.length < this.maxLineBytes) this.#keep(rest);
      else {
        const heldBack = rest[rest.length - 1] === CARRIAGE_RETURN ? 1 : 0;
        answers.push(this.#answer(rest.subarray(0, rest.length - heldBack)));
        this.#begun = true;
        this.#keep(rest.subarray(rest.length - heldBack));
      }
      break;
    }
    return answers.length === 1 ? answers[0] : concatBytes(answers);
  }

  /** The end of a last line without `\n` (at half-close), with one added, else nothing. */
  finish(): Uint8Array {
    if (this.#pendingLength === 0 && !this.#begun) return NO_BYTES;
    const answer = this.#answer(Uint8Array.of(NEWLINE));
    this.#begun = false;
    return answer;
  }

  #keep(bytes: Uint8Array): void {
    this.#pending ??= new Uint8Array(this.maxLineBytes);
    this.#pending.set(bytes, this.#pendingLength);
    this.#pendingLength += bytes.length;
  }

  #answer(rest: Uint8Array): Uint8Array {
    const kept = this.#pending?.subarray(0, this.#pendingLength) ?? NO_BYTES;
    const answer = concatBytes([this.#begun ? NO_BYTES : this.prefix, kept, rest]);
    this.#pendingLength = 0;
    return answer;
  }
}
