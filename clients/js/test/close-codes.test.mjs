// What the client does after each kind of close, driven through a scripted fake WebSocket
// (the real gateway is exercised in the other files; some codes, like 1013, are hard to
// provoke from a well-behaved client).
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { connect } from "../wsgate.js";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A JWT-shaped token (unsigned: the fake socket checks nothing); a token that is not a JWT fails on its own. */
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
const jwt = (sub, exp = Math.floor(Date.now() / 1000) + 3600) => `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, exp })}.c2ln`;
const STATIC = jwt("static");
const tokenOf = (sock) => new URL(sock.url).searchParams.get("token");

/** A fake WebSocket class; `sockets` collects the instances so a test can script them. */
function fakeSocketClass() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.sent = [];
      this.closedWith = null;
      sockets.push(this);
    }
    send(data) {
      this.sent.push(data);
    }
    close(code, reason) {
      this.closedWith = { code, reason };
    }
    // scripting
    open(frame = { type: "connected", connection_id: "c", user: "u", instance_id: "fake" }) {
      this.onopen?.({});
      this.onmessage?.({ data: JSON.stringify(frame) });
    }
    message(obj) {
      this.onmessage?.({ data: typeof obj === "string" ? obj : JSON.stringify(obj) });
    }
    serverClose(code, reason = "") {
      this.onclose?.({ code, reason, wasClean: code !== 1006 });
    }
    errorOnly() {
      this.onerror?.({ message: "Received network error or non-101 status code." });
    }
    refuse(message) {
      this.onerror?.(message ? { message } : {});
      this.onclose?.({ code: 1006, reason: "", wasClean: false });
    }
  }
  return { FakeWebSocket, sockets };
}

// Every client a test opens is closed after it, pass or fail, so no retry loop outlives a test.
const opened = new Set();
afterEach(() => {
  for (const c of opened) c.close();
  opened.clear();
});

function client(opts = {}) {
  const { FakeWebSocket, sockets } = fakeSocketClass();
  const rec = { closes: [], errors: [], states: [] };
  const c = connect("ws://gateway.test/ws/tasks", {
    token: STATIC,
    WebSocket: FakeWebSocket,
    backoff: { initialMs: 10, maxMs: 40 },
    pingIntervalMs: 0,
    onClose: (i) => rec.closes.push(i),
    onError: (e) => rec.errors.push(e),
    onStateChange: (s) => rec.states.push(s),
    ...opts,
  });
  opened.add(c);
  return { c, sockets, rec };
}

const until = async (fn, ms = 2000) => {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error("timed out");
    await sleep(5);
  }
};

for (const code of [1001, 1002, 1007, 1013, 1009, 1000, 1006, 1011, 1012, 4000]) {
  test(`close ${code} after connecting → reconnect with the same token`, async () => {
    const { c, sockets, rec } = client();
    await until(() => sockets.length === 1);
    sockets[0].open();
    assert.equal(c.state, "open");
    sockets[0].serverClose(code, "x");
    assert.equal(c.state, "reconnecting");
    assert.equal(rec.closes[0].code, code);
    assert.equal(rec.closes[0].willReconnect, true);
    assert.ok(rec.closes[0].delayMs >= 0 && rec.closes[0].delayMs < 10, "first retry within initialMs");
    await until(() => sockets.length === 2);
    assert.equal(tokenOf(sockets[1]), STATIC);
    c.close();
  });
}

test("1008 with only a static token → stops with token_expired", async () => {
  const { c, sockets, rec } = client();
  await until(() => sockets.length === 1);
  sockets[0].open();
  sockets[0].serverClose(1008, "token_expired");
  assert.equal(c.state, "closed");
  assert.equal(rec.errors.at(-1).code, "token_expired");
  assert.equal(rec.errors.at(-1).fatal, true);
  await sleep(60);
  assert.equal(sockets.length, 1, "no reconnect");
});

for (const reason of ["message_rate", "policy", ""]) {
  test(`1008 with reason ${JSON.stringify(reason)} (not the token) → reconnect with the same token, no getToken(), a non-fatal policy error`, async () => {
    let calls = 0;
    const { c, sockets, rec } = client({ getToken: () => (calls++, jwt("fresh")) });
    await until(() => sockets.length === 1);
    sockets[0].open();
    sockets[0].serverClose(1008, reason);
    assert.equal(c.state, "reconnecting");
    assert.deepEqual(rec.errors.map((e) => [e.code, e.fatal, e.reason]), [["policy", false, reason]]);
    await until(() => sockets.length === 2);
    assert.equal(tokenOf(sockets[1]), STATIC);
    assert.equal(calls, 0);
    c.close();
  });
}

test("1008 without a reason but with an expired token → the token path (getToken)", async () => {
  let calls = 0;
  const { c, sockets } = client({ token: jwt("old", Math.floor(Date.now() / 1000) - 5), getToken: () => (calls++, jwt("fresh")) });
  await until(() => sockets.length === 1);
  sockets[0].open();
  sockets[0].serverClose(1008, "");
  await until(() => sockets.length === 2);
  assert.equal(calls, 1);
  assert.equal(tokenOf(sockets[1]), jwt("fresh"));
  c.close();
});

// getToken() only when the gateway points at the token: counted over every other kind of end.
test("getToken() is not called after 1001, 1002, 1006, 1007, 1009, 1012, 1013, 1008 message_rate, a ping timeout or a failed upgrade with no status", async () => {
  let calls = 0;
  const { c, sockets, rec } = client({ getToken: () => (calls++, jwt("fresh")), onError: () => {}, pingIntervalMs: 20, pongTimeoutMs: 60 });
  await until(() => sockets.length === 1);
  const ends = [
    (s) => s.serverClose(1001, "shutdown"),
    (s) => s.serverClose(1002, "protocol_error"),
    (s) => s.serverClose(1006),
    (s) => s.serverClose(1007, "invalid_payload"),
    (s) => s.serverClose(1009, "message_too_big"),
    (s) => s.serverClose(1012, "reconnect"),
    (s) => s.serverClose(1013, "slow"),
    (s) => s.serverClose(1008, "message_rate"),
    null, // silence: the ping times out
  ];
  for (const [i, end] of ends.entries()) {
    sockets[i].open();
    if (end) end(sockets[i]);
    await until(() => sockets.length === i + 2);
    assert.equal(tokenOf(sockets[i + 1]), STATIC, `attempt ${i + 1}`);
  }
  sockets.at(-1).refuse(); // an upgrade that failed, nothing known: the gateway is away
  await until(() => sockets.length === ends.length + 2);
  assert.equal(tokenOf(sockets.at(-1)), STATIC);
  assert.equal(calls, 0);
  assert.equal(rec.closes.filter((x) => !x.willReconnect).length, 0);
  c.close();
});

test("4001 → stops for good: state closed, onRevoked (option, then handlers), a fatal `revoked` error, no getToken, no reconnect", async () => {
  let calls = 0;
  const order = [];
  const { c, sockets, rec } = client({
    getToken: () => (calls++, jwt("fresh")),
    onRevoked: (info) => order.push(["option", info.code, info.reason, info.user, c.state]),
    onError: (e) => order.push(["error", e.code, e.fatal]),
    onClose: (i) => order.push(["close", i.code, i.willReconnect]),
  });
  const off = c.onRevoked((info) => order.push(["handler", info.connection.connection_id, info.error.code]));
  c.onRevoked(() => order.push(["second"]));
  assert.throws(() => c.onRevoked(null), TypeError);
  const pending = c.subscribe("news").catch((e) => e.code);
  await until(() => sockets.length === 1);
  sockets[0].open({ type: "connected", connection_id: "c-9", user: "alice", instance_id: "fake" });
  sockets[0].serverClose(4001, "revoked");
  assert.equal(c.state, "closed");
  assert.deepEqual(order, [
    ["close", 4001, false],
    ["option", 4001, "revoked", "alice", "closed"],
    ["handler", "c-9", "revoked"],
    ["second"],
    ["error", "revoked", true],
  ]);
  assert.equal(await pending, "revoked", "a pending subscribe rejects with the revocation");
  off();
  await sleep(100); // backoff 10..40 ms: a reconnect would have come
  assert.equal(sockets.length, 1);
  assert.equal(calls, 0);
  assert.deepEqual(rec.states.slice(-1), ["closed"]);
});

test("4001 with onRevoked but no onError: nothing on the console; a throwing onRevoked handler is reported", async () => {
  const { FakeWebSocket, sockets } = fakeSocketClass();
  const logged = [];
  const orig = console.error;
  console.error = (...a) => logged.push(a.join(" "));
  try {
    const c = connect("ws://gateway.test/ws/tasks", { token: STATIC, WebSocket: FakeWebSocket, pingIntervalMs: 0, onRevoked: () => {} });
    opened.add(c);
    await until(() => sockets.length === 1);
    sockets[0].open();
    sockets[0].serverClose(4001, "revoked");
    assert.equal(c.state, "closed");
    assert.deepEqual(logged, []);
  } finally {
    console.error = orig;
  }
  const errors = [];
  const { c, sockets: s2 } = client({ onError: (e) => errors.push(e.code) });
  c.onRevoked(() => {
    throw new Error("boom");
  });
  await until(() => s2.length === 1);
  s2[0].open();
  s2[0].serverClose(4001, "revoked");
  assert.deepEqual(errors, ["handler_error", "revoked"]);
});

test("1012 → reconnects within the first backoff step with the same token and since=, even after failed attempts", async () => {
  let calls = 0;
  const { c, sockets, rec } = client({ getToken: () => (calls++, jwt("fresh")), backoff: { initialMs: 10, maxMs: 10000 } });
  await until(() => sockets.length === 1);
  sockets[0].open();
  sockets[0].message({ id: "9-1", type: "e", data: null, ts: 1 });
  sockets[0].serverClose(1012, "reconnect");
  assert.ok(rec.closes[0].delayMs < 10, `delay ${rec.closes[0].delayMs}`);
  await until(() => sockets.length === 2);
  assert.equal(tokenOf(sockets[1]), STATIC);
  assert.equal(new URL(sockets[1].url).searchParams.get("since"), "9-1");
  assert.equal(calls, 0);
  c.close();
});

test("1008 with getToken → a fresh token, then reconnect", async () => {
  let n = 0;
  const { c, sockets } = client({ token: "t0", getToken: async () => `t${++n}` });
  await until(() => sockets.length === 1);
  assert.match(sockets[0].url, /token=t0/);
  sockets[0].open();
  sockets[0].serverClose(1001, "shutdown"); // not 1008: keeps its token
  await until(() => sockets.length === 2);
  assert.equal(n, 0);
  assert.match(sockets[1].url, /token=t0/);
  sockets[1].open();
  sockets[1].serverClose(1008, "token_expired");
  await until(() => sockets.length === 3);
  assert.equal(n, 1);
  assert.match(sockets[2].url, /token=t1/);
  c.close();
});

test("first attempts failing (no status, as in a browser, with a token that looks fine) → retried with backoff until one connects", async () => {
  let calls = 0;
  const { c, sockets, rec } = client({ getToken: () => (calls++, jwt("fresh")) });
  for (let i = 0; i < 3; i++) {
    await until(() => sockets.length === i + 1);
    sockets[i].refuse();
    assert.equal(c.state, "reconnecting");
  }
  const caps = [10, 20, 40];
  rec.closes.forEach((x, i) => {
    assert.equal(x.upgradeFailed, true);
    assert.equal(x.willReconnect, true);
    assert.ok(x.delayMs >= 0 && x.delayMs < caps[i], `delay ${i} = ${x.delayMs} < ${caps[i]}`);
  });
  await until(() => sockets.length === 4);
  sockets[3].open();
  assert.equal(c.state, "open");
  assert.deepEqual(rec.errors, []);
  assert.equal(calls, 0, "no status: the token is not blamed");
  assert.ok(sockets.every((s) => tokenOf(s) === STATIC));
  c.close();
});

test("retryFirstConnection: false → the first failed upgrade stops the client (the old rule)", async () => {
  const { c, sockets, rec } = client({ retryFirstConnection: false });
  await until(() => sockets.length === 1);
  sockets[0].refuse();
  assert.equal(c.state, "closed");
  assert.equal(rec.errors.length, 1);
  assert.equal(rec.errors[0].code, "upgrade_refused");
  assert.equal(rec.errors[0].fatal, true);
  assert.equal(rec.errors[0].status, undefined);
  await sleep(60);
  assert.equal(sockets.length, 1);
});

test("retryFirstConnection: false still retries after the client has been connected once", async () => {
  const { c, sockets } = client({ retryFirstConnection: false });
  await until(() => sockets.length === 1);
  sockets[0].open();
  sockets[0].serverClose(1006);
  await until(() => sockets.length === 2);
  sockets[1].refuse();
  await until(() => sockets.length === 3);
  assert.notEqual(c.state, "closed");
  c.close();
});

test("a token that is not a JWT, upgrade failed with no status → stops at once (nothing could make it pass)", async () => {
  const { c, sockets, rec } = client({ token: "not-a-jwt" });
  await until(() => sockets.length === 1);
  sockets[0].refuse();
  assert.equal(c.state, "closed");
  assert.deepEqual(rec.errors.map((e) => [e.code, e.fatal]), [["upgrade_refused", true]]);
  assert.match(rec.errors[0].message, /refused.*not a JWT/);
  await sleep(60);
  assert.equal(sockets.length, 1);
});

test("a known 401 on the first attempt with getToken → one fresh token; refused too → stop (no loop)", async () => {
  let calls = 0;
  const { c, sockets, rec } = client({ getToken: () => jwt(`fresh${++calls}`) });
  await until(() => sockets.length === 1);
  sockets[0].refuse("Unexpected server response: 401");
  await until(() => sockets.length === 2);
  assert.equal(calls, 1);
  assert.equal(tokenOf(sockets[1]), jwt("fresh1"));
  assert.deepEqual([rec.closes[0].upgradeFailed, rec.closes[0].status, rec.closes[0].willReconnect], [true, 401, true]);
  sockets[1].refuse("Unexpected server response: 401");
  assert.equal(c.state, "closed");
  assert.deepEqual(rec.errors.map((e) => [e.code, e.status, e.fatal]), [["upgrade_refused", 401, true]]);
  assert.match(rec.errors[0].message, /fresh token from getToken\(\) was refused too/);
  await sleep(60);
  assert.equal(sockets.length, 2);
  assert.equal(calls, 1);
});

for (const status of [403, 404, 400]) {
  test(`a known ${status} → stops at once, no getToken() (a new token cannot fix it)`, async () => {
    let calls = 0;
    const { c, sockets, rec } = client({ getToken: () => (calls++, jwt("fresh")) });
    await until(() => sockets.length === 1);
    sockets[0].refuse(`Unexpected server response: ${status}`);
    assert.equal(c.state, "closed");
    assert.deepEqual(rec.errors.map((e) => [e.code, e.status]), [["upgrade_refused", status]]);
    await sleep(60);
    assert.equal(sockets.length, 1);
    assert.equal(calls, 0);
  });
}

for (const status of [429, 503, 502]) {
  test(`a known ${status} → retried with backoff and the same token`, async () => {
    let calls = 0;
    const { c, sockets, rec } = client({ getToken: () => (calls++, jwt("fresh")) });
    await until(() => sockets.length === 1);
    sockets[0].refuse(`Unexpected server response: ${status}`);
    await until(() => sockets.length === 2);
    assert.equal(rec.closes[0].status, status);
    assert.equal(tokenOf(sockets[1]), STATIC);
    sockets[1].open();
    assert.equal(c.state, "open");
    assert.equal(calls, 0);
    assert.deepEqual(rec.errors, []);
    c.close();
  });
}

test("an error with no close event after it (Node 20's WebSocket on a refused upgrade) still ends the attempt", async () => {
  const { c, sockets, rec } = client({ retryFirstConnection: false });
  await until(() => sockets.length === 1);
  sockets[0].errorOnly();
  assert.equal(c.state, "connecting");
  await until(() => c.state === "closed", 3000);
  assert.equal(rec.errors[0].code, "upgrade_refused");
  assert.equal(sockets[0].closedWith?.code, 4000, "the stuck socket was closed");
  sockets[0].serverClose(1006); // a late close event changes nothing
  assert.equal(rec.closes.length, 1);
});

test("an error with no close event after it, with retries on → the next attempt follows", async () => {
  const { c, sockets, rec } = client();
  await until(() => sockets.length === 1);
  sockets[0].errorOnly();
  await until(() => sockets.length === 2, 3000);
  assert.equal(sockets[0].closedWith?.code, 4000, "the stuck socket was closed");
  assert.equal(rec.closes[0].upgradeFailed, true);
  sockets[0].serverClose(1006); // a late close event changes nothing
  assert.equal(rec.closes.length, 1);
  c.close();
});

test("a failed upgrade after a good connection → the gateway is away: retry with backoff", async () => {
  const { c, sockets, rec } = client();
  await until(() => sockets.length === 1);
  sockets[0].open();
  sockets[0].serverClose(1006);
  for (let i = 1; i <= 4; i++) {
    await until(() => sockets.length === i + 1);
    sockets[i].refuse(); // like ECONNREFUSED while the gateway restarts
  }
  assert.equal(rec.errors.length, 0);
  const delays = rec.closes.map((x) => x.delayMs);
  const caps = [10, 20, 40, 40, 40]; // min(maxMs 40, initialMs 10 · 2^attempt)
  delays.forEach((d, i) => assert.ok(d >= 0 && d < caps[i], `delay ${i} = ${d} < ${caps[i]}`));
  await until(() => sockets.length === 6);
  sockets[5].open();
  sockets[5].serverClose(1001);
  assert.ok(rec.closes.at(-1).delayMs < 10, "backoff reset after connected");
  c.close();
});

test("a later upgrade refused with a known 401 → stops (static token) instead of looping", async () => {
  const { c, sockets, rec } = client();
  await until(() => sockets.length === 1);
  sockets[0].open();
  sockets[0].serverClose(1001);
  await until(() => sockets.length === 2);
  sockets[1].refuse("Unexpected server response: 401");
  assert.equal(c.state, "closed");
  assert.equal(rec.errors.at(-1).code, "upgrade_refused");
  assert.equal(rec.errors.at(-1).status, 401);
});

test("a later failure with an expired static token → stops with token_expired", async () => {
  const expired = `${b64({ alg: "HS256" })}.${b64({ sub: "u", exp: Math.floor(Date.now() / 1000) - 10 })}.sig`;
  const { c, sockets, rec } = client({ token: expired });
  await until(() => sockets.length === 1);
  sockets[0].open();
  sockets[0].serverClose(1006);
  await until(() => sockets.length === 2);
  sockets[1].refuse();
  assert.equal(c.state, "closed");
  assert.equal(rec.errors.at(-1).code, "token_expired");
});

test("getToken failing is reported and retried", async () => {
  let calls = 0;
  const { c, sockets, rec } = client({
    token: undefined,
    getToken: async () => {
      if (++calls < 3) throw new Error("auth service down");
      return "good";
    },
  });
  await until(() => sockets.length === 1);
  assert.equal(calls, 3);
  assert.deepEqual(rec.errors.map((e) => e.code), ["token_refresh_failed", "token_refresh_failed"]);
  assert.match(sockets[0].url, /token=good/);
  c.close();
});

test("ping: sends {type:ping}; silence after it → drop and reconnect; any frame counts as alive", async () => {
  const { c, sockets, rec } = client({ pingIntervalMs: 40, pongTimeoutMs: 200 });
  await until(() => sockets.length === 1);
  sockets[0].open();
  await until(() => sockets[0].sent.length >= 1);
  assert.equal(sockets[0].sent[0], '{"type":"ping"}');
  sockets[0].message({ type: "pong" });
  await until(() => sockets[0].sent.length >= 2);
  sockets[0].message({ id: "1", type: "e", data: null, ts: 1 }); // an event answers too
  await until(() => sockets[0].sent.length >= 3);
  // now stay silent
  await until(() => sockets.length === 2);
  assert.equal(rec.errors.at(-1).code, "ping_timeout");
  assert.deepEqual(sockets[0].closedWith?.code, 4000);
  c.close();
});

test("close() while waiting to reconnect cancels the attempt", async () => {
  const { c, sockets } = client({ backoff: { initialMs: 200, maxMs: 200 } });
  await until(() => sockets.length === 1);
  sockets[0].open();
  sockets[0].serverClose(1001);
  assert.equal(c.state, "reconnecting");
  c.close();
  assert.equal(c.state, "closed");
  await sleep(250);
  assert.equal(sockets.length, 1);
});

test("handlers: per type, '*', off, unsubscribe; a throwing handler is reported, others still run", async () => {
  const { c, sockets, rec } = client();
  await until(() => sockets.length === 1);
  const seen = [];
  const offA = c.on("a", (e) => seen.push(`a:${e.id}`));
  c.on("b", () => {
    throw new Error("boom");
  });
  const star = (e) => seen.push(`*:${e.id}`);
  c.on("*", star);
  sockets[0].open();
  sockets[0].message({ id: "1", type: "a", data: 1, ts: 1 });
  sockets[0].message({ id: "2", type: "b", data: 2, ts: 2 });
  offA();
  sockets[0].message({ id: "3", type: "a", data: 3, ts: 3 });
  c.off("*", star);
  sockets[0].message({ id: "4", type: "a", data: 4, ts: 4 });
  assert.deepEqual(seen, ["a:1", "*:1", "*:2", "*:3"]);
  assert.equal(rec.errors[0].code, "handler_error");
  assert.equal(c.lastEventId, "4");
  // resume: the next attempt carries since=<last id>
  sockets[0].serverClose(1001);
  await until(() => sockets.length === 2);
  assert.match(sockets[1].url, /since=4/);
  c.close();
});

// ---- resume: lastEventId, since=, onResumed / onResync ----

const hello = (extra = {}) => ({ type: "connected", connection_id: "c", user: "u", instance_id: "fake", ...extra });

test("lastEventId moves only on event frames, never on connected, pong, error or other control frames", async () => {
  const { c, sockets } = client({ onError: () => {} });
  await until(() => sockets.length === 1);
  sockets[0].open();
  assert.equal(c.lastEventId, null);
  sockets[0].message({ id: "1700000000000-0", type: "e", data: 1, ts: 1 });
  sockets[0].message({ type: "pong" });
  sockets[0].message({ type: "error", error: "forbidden", channel: "x" });
  sockets[0].message({ type: "subscribed", channel: "x" });
  sockets[0].message("not json");
  assert.equal(c.lastEventId, "1700000000000-0");
  sockets[0].message({ id: "1700000000000-1", type: "e", data: 2, ts: 2 });
  assert.equal(c.lastEventId, "1700000000000-1");
  c.close();
});

test("recovered: true → no onResync; a ping marks the end of the replay; onResumed counts the missed events", async () => {
  const resumed = [];
  const resyncs = [];
  const events = [];
  const { c, sockets } = client({ onResumed: (i) => resumed.push(i), onResync: (i) => resyncs.push(i), onEvent: (e) => events.push(e.id) });
  await until(() => sockets.length === 1);
  sockets[0].open();
  sockets[0].message({ id: "5-0", type: "e", data: null, ts: 1 });
  sockets[0].serverClose(1006);
  await until(() => sockets.length === 2);
  assert.equal(new URL(sockets[1].url).searchParams.get("since"), "5-0");
  sockets[1].open(hello({ recovered: true }));
  assert.deepEqual(sockets[1].sent, ['{"type":"ping"}'], "a ping right after a recovered `connected`");
  sockets[1].message({ id: "6-0", type: "e", data: null, ts: 2 });
  sockets[1].message({ id: "6-1", type: "e", data: null, ts: 3 });
  assert.equal(resumed.length, 0, "not before the pong");
  sockets[1].message({ type: "pong" });
  sockets[1].message({ id: "7-0", type: "e", data: null, ts: 4 }); // live
  assert.equal(resumed.length, 1);
  assert.equal(resumed[0].since, "5-0");
  assert.equal(resumed[0].missed, 2);
  assert.equal(resumed[0].frame.recovered, true);
  assert.deepEqual(resyncs, []);
  assert.deepEqual(events, ["5-0", "6-0", "6-1", "7-0"]);
  assert.equal(c.lastEventId, "7-0");
  c.close();
});

test("recovered: false → onResync (not_recovered) after onOpen; live events follow", async () => {
  const order = [];
  const { c, sockets } = client({
    onOpen: (f) => order.push(["open", f.recovered]),
    onResync: (i) => order.push(["resync", i.reason, i.since, i.frame.recovered]),
    onResumed: () => order.push(["resumed"]),
  });
  await until(() => sockets.length === 1);
  sockets[0].open();
  sockets[0].message({ id: "5-0", type: "e", data: null, ts: 1 });
  sockets[0].serverClose(1001);
  await until(() => sockets.length === 2);
  sockets[1].open(hello({ recovered: false }));
  assert.deepEqual(sockets[1].sent, [], "no replay to wait for");
  assert.deepEqual(order, [["open", undefined], ["open", false], ["resync", "not_recovered", "5-0", false]]);
  c.close();
});

test("options.since is sent on the first connection; a gateway without `recovered` → onResync (unsupported)", async () => {
  const resyncs = [];
  const { c, sockets } = client({ since: "1700000000000-7", onResync: (i) => resyncs.push(i) });
  assert.equal(c.lastEventId, "1700000000000-7");
  await until(() => sockets.length === 1);
  assert.equal(new URL(sockets[0].url).searchParams.get("since"), "1700000000000-7");
  sockets[0].open(hello());
  assert.deepEqual(resyncs.map((i) => [i.reason, i.since]), [["unsupported", "1700000000000-7"]]);
  c.close();
});

test("a reconnection with no event received yet → no since=, onResync (no_position); the first connection → none", async () => {
  const resyncs = [];
  const { c, sockets } = client({ onResync: (i) => resyncs.push(i) });
  await until(() => sockets.length === 1);
  sockets[0].open();
  assert.deepEqual(resyncs, []);
  sockets[0].serverClose(1006);
  await until(() => sockets.length === 2);
  assert.equal(new URL(sockets[1].url).searchParams.get("since"), null);
  sockets[1].open();
  assert.deepEqual(resyncs.map((i) => [i.reason, i.since]), [["no_position", null]]);
  c.close();
});

test("resume: false → no since= even with options.since or a last event id", async () => {
  const { c, sockets } = client({ resume: false, since: "1-0" });
  await until(() => sockets.length === 1);
  assert.doesNotMatch(sockets[0].url, /since=/);
  sockets[0].open();
  sockets[0].message({ id: "2-0", type: "e", data: null, ts: 1 });
  sockets[0].serverClose(1001);
  await until(() => sockets.length === 2);
  assert.doesNotMatch(sockets[1].url, /since=/);
  c.close();
});

test("options.since must be a string", () => {
  assert.throws(() => connect("ws://gateway.test/ws/tasks", { token: "t", since: 42, WebSocket: class {} }), TypeError);
});
