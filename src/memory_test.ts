import assert from "node:assert/strict";
import { Admission, BannerWrites } from "./admission.ts";
import {
  CONNECTION_COST_BYTES,
  connectionsAdmitted,
  HEADROOM_SHARE,
  MemoryBudget,
  planMemory,
} from "./memory.ts";

const MiB = 2 ** 20;

Deno.test("memory plan: the limit less the process, the headroom, the pools and the log queue", () => {
  const plan = planMemory(256 * MiB, 60 * MiB);
  assert.equal(plan.burstPoolBytes, 16 * MiB);
  assert.equal(plan.tlsReadPoolBytes, 4 * MiB);
  assert.equal(plan.logQueueBytes, 16 * MiB);
  assert.equal(plan.connectionBytes, 256 * MiB * (1 - HEADROOM_SHARE) - 96 * MiB);
  assert.equal(connectionsAdmitted(plan, "plain"), Math.floor(plan.connectionBytes / 12_288));
  const small = planMemory(64 * MiB, 60 * MiB);
  assert.equal(small.connectionBytes, 0, "a limit below the process's own size admits nothing");
  const none = planMemory(undefined, 60 * MiB);
  assert.equal(none.connectionBytes, Infinity);
});

Deno.test("admission: open and pending connections, each against its own limit; memory charged", async (t) => {
  const costs = CONNECTION_COST_BYTES;
  const withBudget = (connectionBytes: number) =>
    new MemoryBudget({ ...planMemory(undefined, 0), connectionBytes });

  await t.step("MAX_CONNECTIONS counts open connections only", () => {
    const admission = new Admission(
      { maxConnections: 2, maxPendingConnections: 1 },
      withBudget(Infinity),
    );
    assert.equal(admission.accept(costs.tls, true), undefined);
    assert.equal(admission.pendingFull, true);
    assert.equal(admission.accept(costs.plain, false), undefined);
    assert.equal(admission.accept(costs.plain, false), undefined);
    assert.equal(admission.accept(costs.plain, false), "max_connections");
    assert.equal(admission.promote(), "max_connections", "a pending one cannot open past it");
    assert.equal(admission.accept(costs.tls, true), "max_connections", "nor be accepted");
    admission.end(costs.plain, false);
    assert.equal(admission.promote(), undefined);
    assert.deepEqual([admission.open, admission.pending, admission.pendingFull], [2, 0, false]);
  });

  await t.step(
    "memory: a connection that does not fit is refused, and fits again after an end",
    () => {
      const admission = new Admission(
        { maxConnections: 0, maxPendingConnections: 0 },
        withBudget(2 * costs.plain + costs.plain / 2),
      );
      assert.equal(admission.accept(costs.plain, false), undefined);
      assert.equal(admission.accept(costs.plain, false), undefined);
      assert.equal(admission.accept(costs.plain, false), "memory");
      assert.equal(admission.accept(costs.tls, true), "memory");
      assert.equal(admission.budget.chargedBytes, 2 * costs.plain, "a refusal charges nothing");
      admission.end(costs.plain, false);
      assert.equal(admission.accept(costs.plain, false), undefined);
    },
  );

  await t.step("accept loops wait for a pending slot, and stop waiting on abort", async () => {
    const admission = new Admission(
      { maxConnections: 0, maxPendingConnections: 1 },
      withBudget(Infinity),
    );
    admission.accept(costs.tls, true);
    const stop = new AbortController();
    let freed = false;
    const waiting = admission.pendingSlot(stop.signal).then(() => freed = true);
    await Promise.resolve();
    assert.equal(freed, false);
    admission.end(costs.tls, true);
    await waiting;
    assert.equal(freed, true);
    admission.accept(costs.tls, true);
    const aborted = admission.pendingSlot(stop.signal);
    stop.abort();
    await aborted;
  });
});

Deno.test("banner writes: accepting waits while max are under way, until half are done", async (t) => {
  await t.step("waits at max, resumes at half", async () => {
    const writes = new BannerWrites(4, 60_000);
    for (let i = 0; i < 3; i++) writes.begin();
    assert.equal(writes.room(), undefined, "below max: no wait");
    writes.begin();
    const room = writes.room();
    assert.ok(room !== undefined);
    assert.equal(writes.room(), room, "one wait for all the loops");
    let resumed = false;
    const waiting = room.then(() => resumed = true);
    writes.end();
    await Promise.resolve();
    assert.equal(resumed, false, "3 of 4 under way: still waiting");
    writes.end();
    await waiting;
    assert.deepEqual([resumed, writes.underWay, writes.room()], [true, 2, undefined]);
    writes.end();
    writes.end();
  });

  await t.step("a wait that runs out lifts the bound until half are done", async () => {
    const writes = new BannerWrites(2, 1);
    writes.begin();
    writes.begin();
    await writes.room();
    writes.begin();
    assert.equal(writes.room(), undefined, "lifted: writes that do not complete stop no accept");
    writes.end();
    writes.end();
    writes.begin();
    assert.ok(writes.room() !== undefined, "down to half: bounded again");
    writes.end();
    writes.end();
  });
});
