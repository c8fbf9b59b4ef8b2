/**
 * Read buffers that give memory back after a burst. Each connection owns a
 * small buffer (64 bytes, growing ×4 while reads fill it, up to 1 KiB); a
 * read that fills it at its largest borrows a large buffer from a shared,
 * bounded {@linkcode BufferPool} for the next reads, and the first read that
 * does not fill the large one gives it back. So an idle connection holds its
 * small buffer only, whatever it echoed before, and the memory that bursts
 * take together is the pool's, at most: when every large buffer is lent, a
 * connection goes on reading with its own (more, smaller reads; no data waits).
 *
 * Used by the server's echo loop and, for the bytes under TLS, by
 * {@linkcode TcpDuplex}; no server state, no logging.
 *
 * @module
 */

/** A connection's first read buffer. V8 keeps typed arrays of up to 64 bytes inside its heap. */
export const OWN_BUFFER_FIRST_BYTES = 64;
/** A connection's own buffer grows to this at most: what an idle connection may keep. */
export const OWN_BUFFER_MAX_BYTES = 1_024;

/**
 * Large buffers lent for bursts, at most `capacity` at once, each of
 * `bufferBytes`. Given-back buffers are kept for the next burst, so the pool
 * holds at most `capacity × bufferBytes` bytes.
 */
export class BufferPool {
  readonly #free: Uint8Array[] = [];
  #lent = 0;

  /** A pool of up to `capacity` buffers of `bufferBytes` each. */
  constructor(readonly bufferBytes: number, readonly capacity: number) {}

  /** A buffer to read into, or `undefined` while all `capacity` are lent. */
  take(): Uint8Array | undefined {
    if (this.#lent >= this.capacity) return undefined;
    this.#lent++;
    return this.#free.pop() ?? new Uint8Array(this.bufferBytes);
  }

  /** Takes back a buffer from {@linkcode BufferPool.take}, once nothing reads it any more. */
  give(buffer: Uint8Array): void {
    this.#lent--;
    this.#free.push(buffer);
  }

  /** Buffers lent now. */
  get lent(): number {
    return this.#lent;
  }

  /** Bytes the pool's buffers take, lent or kept. */
  get heldBytes(): number {
    return (this.#lent + this.#free.length) * this.bufferBytes;
  }
}

/**
 * One connection's read buffer: {@linkcode ReadBuffer.current} to read into,
 * then {@linkcode ReadBuffer.settle} with the count once the bytes are used
 * (echoed, copied), which picks the next buffer. Without a pool, the own
 * buffer grows up to `ownMaxBytes` and stays.
 */
export class ReadBuffer {
  #own: Uint8Array = new Uint8Array(OWN_BUFFER_FIRST_BYTES);
  #borrowed: Uint8Array | undefined;

  /** Borrows from `pool` (when given) past `ownMaxBytes` of its own. */
  constructor(
    readonly pool: BufferPool | undefined,
    readonly ownMaxBytes: number = OWN_BUFFER_MAX_BYTES,
  ) {}

  /** The buffer for the next read. */
  get current(): Uint8Array {
    return this.#borrowed ?? this.#own;
  }

  /** After a read of `count` bytes into {@linkcode ReadBuffer.current}, whose bytes are no longer needed. */
  settle(count: number): void {
    const borrowed = this.#borrowed;
    if (borrowed !== undefined) {
      if (count < borrowed.length) this.release();
      return;
    }
    if (count < this.#own.length) return;
    if (this.#own.length < this.ownMaxBytes) {
      this.#own = new Uint8Array(Math.min(this.#own.length * 4, this.ownMaxBytes));
    } else this.#borrowed = this.pool?.take();
  }

  /** Gives a borrowed buffer back (at the connection's end, or after a burst). */
  release(): void {
    if (this.#borrowed === undefined) return;
    this.pool!.give(this.#borrowed);
    this.#borrowed = undefined;
  }
}
