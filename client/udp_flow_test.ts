import assert from "node:assert/strict";
import { encoder } from "../testing/support.ts";
import { renderUdpFlowReport } from "./report.ts";
import { FlowRecorder } from "./udp_flow.ts";

const where = { target: "10.96.0.10:5353", addresses: ["10.96.0.10"] };
const settings = { sourcePort: 40_000, intervalMs: 100, endedBy: "count" as const };
const bytes = (text: string) => encoder.encode(text);
const BANNER_V1 = bytes("Running on Pod pod-a.\nVersion v1.\n");
const BANNER_V2 = bytes("Running on Pod pod-b.\nVersion v2.\n");

/** A flow of 8 datagrams: v1 answers 1-3, 4 and 5 are lost, v2 greets and answers the rest. */
function recordedFlow(): FlowRecorder {
  const flow = new FlowRecorder(300, where.target);
  const at = (ms: number) => 1_000 + ms;
  const send = (n: number) => flow.sent(n, bytes(`d${n}`), at((n - 1) * 100));
  const come = (text: Uint8Array | string, ms: number, stray?: string) =>
    flow.received({ bytes: typeof text === "string" ? bytes(text) : text, atMs: at(ms), stray });
  send(1);
  assert.equal(come(BANNER_V1, 1), undefined, "a banner settles no datagram");
  assert.equal(come("d1", 2), 1);
  send(2);
  assert.equal(come("d2", 102), 2);
  assert.equal(come("d2", 103), undefined, "a duplicate");
  send(3);
  assert.equal(come("d3", 202), 3);
  send(4);
  send(5);
  flow.timedOut(4);
  send(6);
  flow.timedOut(5);
  assert.equal(come(BANNER_V2, 501), undefined);
  assert.equal(come("d6", 502), 6);
  send(7);
  assert.equal(come("dX", 650), 7, "wrong: the datagram out of its length");
  assert.equal(come("d7", 655, "10.0.0.9:5353"), undefined, "from elsewhere: no datagram's");
  send(8);
  assert.equal(come("d8", 702), 8);
  assert.equal(come("d4", 900), undefined, "late");
  flow.timedOut(6);
  return flow;
}

Deno.test("client one-flow record: who answered which datagram, the change, losses, late and duplicate echoes", () => {
  const report = recordedFlow().report(where, settings);
  const { roundTripMs, failureHints, ...rest } = report;
  assert.deepEqual(rest, {
    transport: "udp",
    oneFlow: true,
    ...where,
    ...settings,
    datagrams: 8,
    succeeded: 5,
    successPercent: 62.5,
    lost: 2,
    lostPercent: 25,
    wrong: 1,
    failed: 0,
    late: 1,
    duplicates: 1,
    answeredBy: [
      { server: "version v1, pod pod-a", count: 3, percent: 37.5 },
      { server: "version v2, pod pod-b", count: 2, percent: 25 },
    ],
    changes: [{
      atMs: 501,
      datagram: 6,
      from: "version v1, pod pod-a",
      to: "version v2, pod pod-b",
      lostBetween: [4, 5],
    }],
    lostDatagrams: [4, 5],
    timeline: [
      {
        outcome: "echoed",
        first: 1,
        last: 3,
        firstMs: 0,
        lastMs: 200,
        server: "version v1, pod pod-a",
      },
      { outcome: "lost", first: 4, last: 5, firstMs: 300, lastMs: 400 },
      {
        outcome: "echoed",
        first: 6,
        last: 6,
        firstMs: 500,
        lastMs: 500,
        server: "version v2, pod pod-b",
      },
      { outcome: "wrong", first: 7, last: 7, firstMs: 600, lastMs: 600 },
      {
        outcome: "echoed",
        first: 8,
        last: 8,
        firstMs: 700,
        lastMs: 700,
        server: "version v2, pod pod-b",
      },
    ],
    failures: { lost: 2, mismatch: 2 },
    failureDetails: {
      lost: "no echo within 300 ms",
      mismatch: 'the echo differs from what was sent; 2 bytes came: "dX"',
    },
    integrityFailures: 2,
  });
  assert.deepEqual(roundTripMs, { p50: 2, p90: 2, p99: 2, max: 2 });
  assert.deepEqual(Object.keys(failureHints), ["lost"]);
});

Deno.test("client one-flow report: the text, word for word", () => {
  assert.equal(
    renderUdpFlowReport(recordedFlow().report(where, settings)),
    `probe udp 10.96.0.10:5353: one flow from port 40000, a datagram every 100ms
5 of 8 datagrams echoed correctly (62.5%), 2 lost (25%), 1 wrong, 1 late (after --timeout), 1 echo twice

answered by              count  share
  version v1, pod pod-a      3  37.5%
  version v2, pod pod-b      2  25.0%

answer changes: 1
  at 0.501 s, datagram 6: version v1, pod pod-a → version v2, pod pod-b; lost in between: 4–5

timeline (datagrams by number; sent at, in seconds since the first)
  1–3  0.000–0.200  echoed   version v1, pod pod-a
  4–5  0.300–0.400  lost
       0.501        changed  version v1, pod pod-a → version v2, pod pod-b
  6    0.500        echoed   version v2, pod pod-b
  7    0.600        wrong
  8    0.700        echoed   version v2, pod pod-b

failures
  lost      2  no echo within 300 ms
               hint: the flow's backend did not answer them: a fault (tcp-echo: UDP_DROP), loss on the way, or a backend that is gone while the flow still goes to it (a stale conntrack entry: another backend's banner ends it, see the answer changes)
  mismatch  2  the echo differs from what was sent; 2 bytes came: "dX"

latency (ms)        p50      p90      p99      max
  round trip         2.00     2.00     2.00     2.00
`,
  );
});

Deno.test("client one-flow record: a backend that greets again, echoes without a banner, nothing sent", async (t) => {
  await t.step("the same backend again (its flow expired): a change to itself, said so", () => {
    const flow = new FlowRecorder(300, where.target);
    flow.sent(1, bytes("a"), 0);
    flow.received({ bytes: BANNER_V1, atMs: 1 });
    flow.received({ bytes: bytes("a"), atMs: 2 });
    flow.sent(2, bytes("b"), 40_000);
    flow.received({ bytes: BANNER_V1, atMs: 40_001 });
    flow.received({ bytes: bytes("b"), atMs: 40_002 });
    const report = flow.report(where, settings);
    assert.deepEqual(report.changes, [{
      atMs: 40_001,
      datagram: 2,
      from: "version v1, pod pod-a",
      to: "version v1, pod pod-a",
      lostBetween: [],
    }]);
    assert.match(
      renderUdpFlowReport(report),
      /\n {2}at 40\.001 s, datagram 2: version v1, pod pod-a → version v1, pod pod-a \(the same backend greeted again: its flow had expired, or it restarted\); none lost in between\n/,
    );
  });
  await t.step("a server without a banner: its echoes count for (no banner)", () => {
    const flow = new FlowRecorder(300, where.target);
    flow.sent(1, bytes("a"), 0);
    flow.received({ bytes: bytes("a"), atMs: 1 });
    flow.sent(2, bytes("a"), 100);
    flow.timedOut(2);
    const report = flow.report(where, settings);
    assert.deepEqual(report.answeredBy, [{ server: "(no banner)", count: 1, percent: 50 }]);
    assert.deepEqual(report.changes, []);
    assert.match(report.failureHints.lost!, /^nothing came back from 10\.96\.0\.10:5353: /);
  });
  await t.step("a banner after echoes without one is a change from (no banner)", () => {
    const flow = new FlowRecorder(300, where.target);
    flow.sent(1, bytes("a"), 0);
    flow.received({ bytes: bytes("a"), atMs: 1 });
    flow.received({ bytes: BANNER_V2, atMs: 50 });
    assert.deepEqual(flow.report(where, settings).changes, [{
      atMs: 50,
      from: "(no banner)",
      to: "version v2, pod pod-b",
      lostBetween: [],
    }]);
  });
  await t.step("a datagram that could not be sent: failed, with the error's words", () => {
    const flow = new FlowRecorder(300, where.target);
    flow.sent(1, bytes("a"), 0);
    flow.failed(1, { reason: "error", detail: "send EMSGSIZE 10.96.0.10:5353" });
    const report = flow.report(where, { ...settings, endedBy: "interrupt" });
    assert.deepEqual([report.failed, report.failures], [1, { error: 1 }]);
    assert.deepEqual(report.timeline, [
      { outcome: "failed", first: 1, last: 1, firstMs: 0, lastMs: 0 },
    ]);
    assert.match(
      renderUdpFlowReport(report),
      /^probe udp 10\.96\.0\.10:5353: one flow from port 40000, a datagram every 100ms; stopped by Ctrl-C\n0 of 1 datagrams echoed correctly \(0%\), none lost, 0 wrong, 1 not sent\n/,
    );
  });
});
