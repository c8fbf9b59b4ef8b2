import assert from "node:assert/strict";
import {
  addStall,
  type BackendRow,
  heartbeatEcho,
  heartbeatLineStart,
  type HeldRecord,
  holdExitCode,
  HoldTally,
  holdTimeline,
  judgeExpectations,
  MAX_STALLS_KEPT,
  readAnswer,
  setHeartbeatNumber,
} from "./hold_record.ts";
import { parseBanner } from "./probe.ts";

const text = new TextEncoder();
const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

Deno.test("hold heartbeats: numbered lines, renumbered in place, with a line-mode prefix", () => {
  const echo = heartbeatEcho(undefined, 42);
  assert.equal(decode(echo), "hb 000042\n");
  assert.equal(heartbeatLineStart(echo), 0);
  setHeartbeatNumber(echo, 999_999);
  assert.equal(decode(echo), "hb 999999\n");
  const prefixed = heartbeatEcho("hello", 7);
  assert.equal(decode(prefixed), "hello hb 000007\n");
  assert.equal(decode(prefixed.subarray(heartbeatLineStart(prefixed))), "hb 000007\n");
});

Deno.test("hold answers: the echo, a start of one, tcp-echo's drain notice, anything else", async (t) => {
  const expected = heartbeatEcho(undefined, 3);
  const notice = "tcp-echo: closing this connection: the server is shutting down and its grace " +
    "of 1s is over";
  await t.step("the echo, whole or begun", () => {
    assert.deepEqual(readAnswer(text.encode("hb 000003\nmore"), expected), { kind: "echo" });
    assert.deepEqual(readAnswer(text.encode("hb 00"), expected), { kind: "partial" });
  });
  await t.step("the drain notice, whole or begun, with a heartbeat out or none", () => {
    for (const out of [expected, undefined]) {
      assert.deepEqual(readAnswer(text.encode(`${notice}\n`), out), {
        kind: "drain",
        line: notice,
      });
      assert.deepEqual(readAnswer(text.encode("tcp-echo: clos"), out), { kind: "partial" });
      assert.deepEqual(readAnswer(text.encode(notice), out), { kind: "partial" }, "no newline yet");
    }
  });
  await t.step("anything else", () => {
    assert.deepEqual(readAnswer(text.encode("hb 000004\n"), expected), { kind: "unexpected" });
    assert.deepEqual(readAnswer(text.encode("hb 000003\n"), undefined), { kind: "unexpected" });
    assert.deepEqual(readAnswer(text.encode("tcp-echo: other\n"), expected), {
      kind: "unexpected",
    });
  });
});

/** A record as the hold makes one. */
function record(
  banner: string,
  fields: Partial<HeldRecord> & { slot?: number } = {},
): HeldRecord {
  const server = parseBanner(banner);
  const backend = [
    server.version && `version ${server.version}`,
    server.pod && `pod ${server.pod}`,
  ].filter(Boolean).join(", ");
  return {
    slot: 0,
    generation: 0,
    openedAtMs: 10,
    connectMs: 2,
    attempts: 1,
    server,
    backend,
    heartbeats: 0,
    stalls: [],
    stallsNotKept: 0,
    worstStallMs: 0,
    end: null,
    ...fields,
  };
}

const V1 = "Running on Pod a.\nVersion v1.\n";
const V2 = "Running on Pod b.\nVersion v2.\n";
const V1_OTHER_POD = "Running on Pod c.\nVersion v1.\n";

Deno.test("hold stalls: a record keeps the first ones and counts the rest; the worst is kept", () => {
  const r = record(V1);
  for (let i = 0; i < MAX_STALLS_KEPT + 2; i++) addStall(r, { atMs: i, ms: 600 + i, heartbeat: i });
  assert.equal(r.stalls.length, MAX_STALLS_KEPT);
  assert.equal(r.stallsNotKept, 2);
  assert.equal(r.worstStallMs, 600 + MAX_STALLS_KEPT + 1);
});

/** The tally of: 2 on v1 (one lost by fin, replaced on v2), `replacedOn` for the replacement. */
function rolloutTally(replacedOn: string): { tally: HoldTally; records: HeldRecord[] } {
  const tally = new HoldTally();
  const kept = record(V1, { slot: 0 });
  const lost = record(V1, { slot: 1 });
  tally.opened(kept);
  tally.opened(lost);
  lost.end = { reason: "fin", atMs: 1_000, detail: "the peer closed the connection (EOF)" };
  tally.ended(lost, "fin");
  const replacement = record(replacedOn, {
    slot: 1,
    generation: 1,
    openedAtMs: 1_003,
    replaces: { backend: lost.backend, generation: 0, lostAtMs: 1_000, gapMs: 3 },
  });
  tally.opened(replacement);
  return { tally, records: [kept, lost, replacement] };
}

Deno.test("hold tally: counts per backend as events come, and where replacements landed", () => {
  const { tally } = rolloutTally(V2);
  tally.stalled(record(V1), 700);
  assert.deepEqual(
    tally.rows(),
    [
      {
        backend: "version v1, pod a",
        version: "v1",
        opened: 2,
        open: 1,
        ended: { fin: 1, rst: 0, timeout: 0, mismatch: 0, drain: 0, error: 0 },
        worstStallMs: 700,
        replacedTo: { "version v2, pod b": 1 },
      },
      {
        backend: "version v2, pod b",
        version: "v2",
        opened: 1,
        open: 1,
        ended: { fin: 0, rst: 0, timeout: 0, mismatch: 0, drain: 0, error: 0 },
        worstStallMs: 0,
        replacedTo: {},
      },
    ] satisfies BackendRow[],
  );
  assert.equal(tally.lost, 1);
  assert.equal(tally.replaced, 1);
  assert.deepEqual(tally.gapsMs, [3]);
  assert.deepEqual(tally.openByBackend(), [["version v1, pod a", 1], ["version v2, pod b", 1]]);
  assert.equal(tally.worstStallMs(), 700);
});

Deno.test("hold expectations: no-loss, moved-to and stays-on, met and not, with why", async (t) => {
  const facts = (replacedOn: string, missingAtEnd = 0) => {
    const { tally } = rolloutTally(replacedOn);
    return { backends: tally.rows(), lost: tally.lost, replaced: tally.replaced, missingAtEnd };
  };
  const judge = (expect: Parameters<typeof judgeExpectations>[0][0], f = facts(V2)) =>
    judgeExpectations([expect], f)[0];
  await t.step("no-loss", () => {
    assert.deepEqual(judge({ kind: "no-loss" }), {
      expect: "no-loss",
      met: false,
      why: "1 connection lost",
    });
    assert.deepEqual(
      judge({ kind: "no-loss" }, { backends: [], lost: 0, replaced: 0, missingAtEnd: 2 }),
      { expect: "no-loss", met: false, why: "2 of the places without one at the end" },
    );
    assert.equal(
      judge({ kind: "no-loss" }, { backends: [], lost: 0, replaced: 0, missingAtEnd: 0 }).met,
      true,
    );
  });
  await t.step("moved-to: every replacement on the version, none missing at the end", () => {
    const moved = { kind: "moved-to", version: "v2" } as const;
    assert.deepEqual(judge(moved), {
      expect: "moved-to v2",
      met: true,
      why: "the replacement landed on v2",
    });
    assert.deepEqual(judge(moved, facts(V1_OTHER_POD)), {
      expect: "moved-to v2",
      met: false,
      why: "of 1 replacement, 1 on v1",
    });
    assert.equal(judge(moved, facts(V2, 1)).met, false, "a place left without a connection");
    assert.deepEqual(
      judge(moved, { backends: [], lost: 0, replaced: 0, missingAtEnd: 0 }).why,
      "no connection was replaced",
    );
  });
  await t.step("stays-on: every connection on the version, no replacement elsewhere", () => {
    const stays = { kind: "stays-on", version: "v1" } as const;
    assert.deepEqual(judge(stays), {
      expect: "stays-on v1",
      met: false,
      why: "of 3 connections, 1 on v2",
    });
    assert.deepEqual(judge(stays, facts(V1_OTHER_POD)), {
      expect: "stays-on v1",
      met: false,
      why: "1 replacement landed on another backend",
    });
    assert.deepEqual(judge(stays, facts(V1)), {
      expect: "stays-on v1",
      met: true,
      why: "all 3 connections on v1",
    });
  });
});

Deno.test("hold exit code: a wrong echo is 1 whatever is expected; --expect decides; else losses", () => {
  const met = { expect: "moved-to v2", met: true, why: "" };
  const missed = { ...met, met: false };
  const code = (fields: Partial<Parameters<typeof holdExitCode>[0]>) =>
    holdExitCode({ integrityFailures: 0, expectations: [], lost: 0, missingAtEnd: 0, ...fields });
  assert.equal(code({}), 0);
  assert.equal(code({ lost: 1 }), 1);
  assert.equal(code({ missingAtEnd: 1 }), 1);
  assert.equal(code({ lost: 3, expectations: [met] }), 0);
  assert.equal(code({ expectations: [met, missed] }), 1);
  assert.equal(code({ integrityFailures: 1, expectations: [met] }), 1);
});

Deno.test("hold timeline: events in time order, those of a kind on a backend within 1 s as one line", () => {
  const { records } = rolloutTally(V2);
  addStall(records[0], { atMs: 2_000, ms: 800, heartbeat: 2 });
  addStall(records[0], { atMs: 2_500, ms: 900, heartbeat: 3 });
  addStall(records[0], { atMs: 4_000, ms: 600, heartbeat: 5 });
  const failures = [{ atMs: 1_001, reason: "refused" as const, detail: "Connection refused" }];
  assert.deepEqual(holdTimeline(records, failures), [
    {
      kind: "opened",
      backend: "version v1, pod a",
      count: 2,
      firstMs: 10,
      lastMs: 10,
      least: 2,
      most: 2,
    },
    {
      kind: "fin",
      backend: "version v1, pod a",
      count: 1,
      firstMs: 1_000,
      lastMs: 1_000,
      least: 990,
      most: 990,
      detail: "the peer closed the connection (EOF)",
    },
    {
      kind: "open failed",
      backend: "refused",
      count: 1,
      firstMs: 1_001,
      lastMs: 1_001,
      least: 0,
      most: 0,
      detail: "Connection refused",
    },
    {
      kind: "replaced",
      backend: "version v2, pod b",
      from: "version v1, pod a",
      count: 1,
      firstMs: 1_003,
      lastMs: 1_003,
      least: 3,
      most: 3,
    },
    {
      kind: "stall",
      backend: "version v1, pod a",
      count: 2,
      firstMs: 2_000,
      lastMs: 2_500,
      least: 800,
      most: 900,
    },
    {
      kind: "stall",
      backend: "version v1, pod a",
      count: 1,
      firstMs: 4_000,
      lastMs: 4_000,
      least: 600,
      most: 600,
    },
  ]);
});
