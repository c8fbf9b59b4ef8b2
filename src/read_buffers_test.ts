import assert from "node:assert/strict";
import {
  BufferPool,
  OWN_BUFFER_FIRST_BYTES,
  OWN_BUFFER_MAX_BYTES,
  ReadBuffer,
} from "./read_buffers.ts";

Deno.test("read buffers: grow while reads fill them, borrow for bursts, give back after", async (t) => {
  await t.step("the own buffer grows ×4 to 1 KiB, then a full read borrows", () => {
    const pool = new BufferPool(65_536, 2);
    const reads = new ReadBuffer(pool);
    const sizes = [reads.current.length];
    for (let i = 0; i < 4; i++) {
      reads.settle(reads.current.length);
      sizes.push(reads.current.length);
    }
    assert.deepEqual(sizes, [OWN_BUFFER_FIRST_BYTES, 256, OWN_BUFFER_MAX_BYTES, 65_536, 65_536]);
    assert.equal(pool.lent, 1);
  });

  await t.step("a read that does not fill the borrowed buffer gives it back", () => {
    const pool = new BufferPool(65_536, 2);
    const reads = new ReadBuffer(pool);
    while (reads.current.length < 65_536) reads.settle(reads.current.length);
    const borrowed = reads.current;
    reads.settle(1_000);
    assert.equal(reads.current.length, OWN_BUFFER_MAX_BYTES, "back to its own buffer");
    assert.equal(pool.lent, 0);
    reads.settle(OWN_BUFFER_MAX_BYTES);
    assert.equal(reads.current, borrowed, "the pool lends the same buffer again");
  });

  await t.step("with every buffer lent, reads go on in the own buffer", () => {
    const pool = new BufferPool(65_536, 1);
    const [first, second] = [new ReadBuffer(pool), new ReadBuffer(pool)];
    for (const reads of [first, second]) {
      while (reads.current.length < OWN_BUFFER_MAX_BYTES) reads.settle(reads.current.length);
      reads.settle(OWN_BUFFER_MAX_BYTES);
    }
    assert.equal(first.current.length, 65_536);
    assert.equal(second.current.length, OWN_BUFFER_MAX_BYTES);
    assert.equal(pool.heldBytes, 65_536);
    first.release();
    second.release();
    assert.equal(pool.lent, 0);
  });

  await t.step("without a pool, the own buffer grows to its maximum and stays", () => {
    const reads = new ReadBuffer(undefined, 16_640);
    for (let i = 0; i < 10; i++) reads.settle(reads.current.length);
    assert.equal(reads.current.length, 16_640);
    reads.settle(1);
    assert.equal(reads.current.length, 16_640);
  });
});
