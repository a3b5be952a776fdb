// The reconnect delay: exponential backoff with full jitter. No network.
import assert from "node:assert/strict";
import { test } from "node:test";
import { backoffDelay, connect } from "../wsgate.js";

const B = { initialMs: 100, maxMs: 3000 };

test("the cap doubles per attempt up to maxMs", () => {
  // random() → just under 1 gives the cap (minus one ms, the range is [0, cap)).
  const top = () => 0.999999999;
  const caps = [0, 1, 2, 3, 4, 5, 6, 10, 60, 5000].map((a) => backoffDelay(a, B, top));
  assert.deepEqual(caps, [99, 199, 399, 799, 1599, 2999, 2999, 2999, 2999, 2999]);
});

test("full jitter: the delay is random * cap, down to zero", () => {
  assert.equal(backoffDelay(3, B, () => 0), 0);
  assert.equal(backoffDelay(3, B, () => 0.5), 400);
  assert.equal(backoffDelay(3, B, () => 0.25), 200);
  assert.equal(backoffDelay(20, B, () => 0.5), 1500);
});

test("with Math.random the delays spread over [0, cap)", () => {
  const n = 4000;
  const cap = 800; // attempt 3
  const xs = Array.from({ length: n }, () => backoffDelay(3, B));
  assert.ok(xs.every((x) => Number.isInteger(x) && x >= 0 && x < cap), "every delay in [0, cap)");
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  assert.ok(Math.abs(mean - cap / 2) < cap * 0.05, `mean ${mean} ≈ ${cap / 2}`);
  // Each quarter of the range gets roughly a quarter of the samples (not all near the cap).
  const quarters = [0, 0, 0, 0];
  for (const x of xs) quarters[Math.floor((x / cap) * 4)]++;
  for (const q of quarters) assert.ok(q > n * 0.2 && q < n * 0.3, `quarters ${quarters}`);
  assert.ok(new Set(xs).size > 300, "many distinct values");
});

test("defaults: 500 ms doubling to 30 s; a huge attempt number stays finite", () => {
  assert.equal(backoffDelay(0, undefined, () => 0.999999), 499);
  assert.equal(backoffDelay(1e9, undefined, () => 0.999999), 29999);
  assert.equal(backoffDelay(-3, undefined, () => 0.5), 250);
});

test("connect() checks its options", () => {
  assert.throws(() => connect("ws://127.0.0.1:1/ws/tasks", {}), /token or options.getToken/);
  assert.throws(() => connect("", { token: "t" }), /needs a url/);
  if (typeof globalThis.WebSocket !== "function") {
    assert.throws(() => connect("ws://127.0.0.1:1/ws/tasks", { token: "t" }), /no WebSocket implementation/);
  }
});
