// History and resume against the real gateway: a client that loses its connection comes back
// with since=<last id> and gets what it missed exactly once, in order (memory mode, and Redis
// mode across two instances); a `since` the gateway cannot replay from is signalled (onResync).
import assert from "node:assert/strict";
import { after, afterEach, test } from "node:test";
import WebSocket from "ws";
import { mintToken, sleep, startGateway, startRedis, waitFor } from "../testing/harness.mjs";
import { closeAllClients, openClient } from "../testing/recorder.mjs";

const started = [];
async function gateway(opts) {
  const gw = await startGateway(opts);
  started.push(gw);
  return gw;
}
afterEach(() => closeAllClients());
after(async () => {
  closeAllClients();
  for (const p of started.reverse()) await p.stop("SIGKILL");
});

/** `<ms>-<seq>` → [ms, seq] as BigInts; throws on anything else. */
function position(id) {
  const m = /^(\d+)-(\d+)$/.exec(id);
  if (!m) throw new Error(`event id ${JSON.stringify(id)} is not a stream id <ms>-<seq>`);
  return [BigInt(m[1]), BigInt(m[2])];
}
const before = (a, b) => {
  const [x, y] = [position(a), position(b)];
  return x[0] < y[0] || (x[0] === y[0] && x[1] < y[1]);
};

/**
 * A `ws` WebSocket the test can cut off: `ctl.drop()` kills the current socket (no close frame,
 * like a network loss) and, while `ctl.port` is set, attempts go to that port instead (1:
 * nothing listens, the attempt is refused; another gateway's port: the load balancer picked
 * another instance).
 */
function switchableWebSocket() {
  const ctl = { port: null, sockets: [], drop: () => ctl.sockets.at(-1).terminate() };
  class Switchable extends WebSocket {
    constructor(url, ...rest) {
      const u = new URL(url);
      if (ctl.port != null) u.port = String(ctl.port);
      super(u.toString(), ...rest);
      ctl.sockets.push(this);
    }
  }
  return { ctl, Switchable };
}

function hooks() {
  const seen = { resumed: [], resyncs: [] };
  return { seen, options: { onResumed: (i) => seen.resumed.push(i), onResync: (i) => seen.resyncs.push(i) } };
}

for (const mode of ["memory", "redis"]) {
  test(`${mode}: a dropped client reconnects on its own and gets the missed events once, in order (recovered: true)`, { timeout: 60000 }, async () => {
    let gwA;
    let gwB;
    if (mode === "redis") {
      const redis = await startRedis();
      started.push(redis);
      gwA = await gateway({ redisUrl: redis.url, instanceId: "gw-resume-a" });
      gwB = await gateway({ redisUrl: redis.url, instanceId: "gw-resume-b" });
      // Events accepted before an instance's Redis link is up are held in its outbox and carry
      // an id that is not a stream position: a client cannot resume from those.
      for (const gw of [gwA, gwB]) await waitFor(async () => (await gw.stats()).redis_state === "connected", "Redis connected");
    } else {
      gwA = gwB = await gateway({ instanceId: "gw-resume" });
    }
    const { ctl, Switchable } = switchableWebSocket();
    const { seen, options } = hooks();
    const { client, rec } = openClient(gwA.wsUrl, { token: mintToken({ sub: "alice" }), ...options }, Switchable);
    await waitFor(() => client.state === "open", "connected");
    const expected = [await gwA.publish({ type: "before", data: 0 })];
    await waitFor(() => rec.events.length === 1, "the first event");

    // Cut off: the socket dies and every attempt is refused until ctl.port changes.
    ctl.port = 1;
    ctl.drop();
    await waitFor(() => rec.closes.length >= 1, "the client noticed the loss");
    assert.equal(rec.closes[0].willReconnect, true);
    expected.push(await gwA.publish({ type: "missed", data: 1 }));
    expected.push(await gwA.publish({ type: "missed", data: 2, users: ["alice"] }));
    await gwA.publish({ type: "missed", data: "not for alice", users: ["bob"] });
    expected.push(await gwA.publish({ type: "missed", data: 3 }));
    await waitFor(() => rec.urls.length >= 3, "refused attempts while cut off");

    // Publish without pause while the client comes back (to the other instance in Redis mode):
    // the seam between the replay and the live events must have no gap and no duplicate.
    let publishing = true;
    const seam = (async () => {
      const ids = [];
      for (let n = 0; publishing; n++) ids.push(await gwA.publish({ type: "seam", data: n }));
      return ids;
    })();
    await sleep(50);
    ctl.port = gwB.port;
    await waitFor(() => rec.opens.length === 2, "reconnected", 10000);
    await sleep(300);
    publishing = false;
    expected.push(...(await seam));
    const last = await gwA.publish({ type: "live", data: "end" });
    expected.push(last);
    await waitFor(() => rec.events.some((e) => e.id === last), "the last live event", 10000);
    await sleep(500); // a late duplicate would show up now

    assert.equal(client.connection.instance_id, gwB === gwA ? "gw-resume" : "gw-resume-b");
    assert.equal(new URL(rec.urls.at(-1)).searchParams.get("since"), expected[0], "resumed after the last event received");
    assert.equal(rec.opens[0].recovered, undefined, "no `recovered` without since=");
    assert.equal(rec.opens[1].recovered, true);
    const got = rec.events.map((e) => e.id);
    assert.equal(new Set(got).size, got.length, "no duplicate");
    assert.deepEqual(got, expected, "every event for alice, in publish order, nothing else");
    got.slice(1).forEach((id, i) => assert.ok(before(got[i], id), `ids ordered: ${got[i]} < ${id}`));
    assert.deepEqual(rec.events.slice(1, 4).map((e) => e.data), [1, 2, 3]);
    assert.equal(client.lastEventId, last);
    assert.deepEqual(seen.resyncs, []);
    await waitFor(() => seen.resumed.length === 1, "onResumed");
    assert.equal(seen.resumed[0].since, expected[0]);
    assert.ok(seen.resumed[0].missed >= 3, `missed = ${seen.resumed[0].missed}`);
    assert.deepEqual(rec.errors, []);
  });
}

for (const [name, since] of [
  ["malformed", "not-an-id"],
  ["older than the history", "1-0"],
  ["from the future", `${Date.now() + 3600_000}-0`],
]) {
  test(`a since= the gateway cannot replay from (${name}) → recovered: false and onResync; live events follow`, { timeout: 30000 }, async () => {
    const gw = await gateway({ instanceId: "gw-bogus" });
    const { seen, options } = hooks();
    const { client, rec } = openClient(gw.wsUrl, { token: mintToken({ sub: "alice" }), since, ...options });
    await waitFor(() => client.state === "open", "connected");
    assert.equal(new URL(rec.urls[0]).searchParams.get("since"), since);
    assert.equal(rec.opens[0].recovered, false);
    assert.deepEqual(seen.resyncs.map((i) => [i.reason, i.since]), [["not_recovered", since]]);
    const id = await gw.publish({ type: "live" });
    await waitFor(() => rec.events.length === 1, "a live event");
    assert.equal(rec.events[0].id, id);
    assert.equal(client.lastEventId, id);
    assert.deepEqual(seen.resumed, []);
  });
}

test("options.since resumes a new client (e.g. after a page reload) from a saved id", { timeout: 30000 }, async () => {
  const gw = await gateway({ instanceId: "gw-since" });
  const first = openClient(gw.wsUrl, { token: mintToken({ sub: "alice" }) });
  await waitFor(() => first.client.state === "open", "first client");
  const a = await gw.publish({ type: "a" });
  await waitFor(() => first.rec.events.length === 1, "first event");
  const saved = first.client.lastEventId;
  first.client.close();
  const b = await gw.publish({ type: "b" });
  const c = await gw.publish({ type: "c", users: ["alice"] });

  const { seen, options } = hooks();
  const { client, rec } = openClient(gw.wsUrl, { token: mintToken({ sub: "alice" }), since: saved, ...options });
  await waitFor(() => rec.events.length === 2, "the missed events");
  assert.equal(saved, a);
  assert.equal(rec.opens[0].recovered, true);
  assert.deepEqual(rec.events.map((e) => e.id), [b, c]);
  await waitFor(() => seen.resumed.length === 1, "onResumed");
  assert.equal(seen.resumed[0].missed, 2);
  assert.deepEqual(seen.resyncs, []);
  client.close();
});

test("memory mode: after a gateway restart the history is gone → recovered: false and onResync", { timeout: 30000 }, async () => {
  const gw1 = await gateway({ instanceId: "gw-mem-1" });
  const { seen, options } = hooks();
  const { client, rec } = openClient(gw1.wsUrl, { token: mintToken({ sub: "alice" }), ...options });
  await waitFor(() => client.state === "open", "connected");
  const id = await gw1.publish({ type: "before" });
  await waitFor(() => rec.events.length === 1, "event");
  await gw1.stop("SIGTERM");
  await gateway({ port: gw1.port, instanceId: "gw-mem-2" });
  await waitFor(() => rec.opens.length === 2, "reconnected", 10000);
  assert.equal(new URL(rec.urls.at(-1)).searchParams.get("since"), id);
  assert.equal(rec.opens[1].recovered, false);
  assert.deepEqual(seen.resyncs.map((i) => [i.reason, i.since]), [["not_recovered", id]]);
});
