// The gateway's `resync` frame end to end: a gateway in Redis mode with a client connected;
// Redis is killed (SIGKILL) and a fresh one with nothing in it started on the same port. The
// gateway finds that Redis lost its events and tells the open connection
// ({"type":"resync","reason":...}); the client calls onResync, stays connected, and live
// events follow.
//
// Needs a gateway that sends `resync` frames (the contract's "Start-up, Redis data loss and
// `recovered`" section); against an older binary this test fails (no onResync within 10 s).
import assert from "node:assert/strict";
import { after, afterEach, test } from "node:test";
import { mintToken, startGateway, startRedis, waitFor } from "../testing/harness.mjs";
import { closeAllClients, openClient } from "../testing/recorder.mjs";

const started = [];
afterEach(() => closeAllClients());
after(async () => {
  closeAllClients();
  for (const p of started.reverse()) await p.stop("SIGKILL");
});

const redisState = async (gw) => (await gw.stats()).redis_state;

test("resync e2e: Redis restarted empty while a client is connected → onResync with the gateway's resync frame within 10 s; the connection stays open and live events follow", { timeout: 60000 }, async () => {
  let redis = await startRedis();
  started.push(redis);
  const gw = await startGateway({ redisUrl: redis.url, instanceId: "gw-resync-e2e" });
  started.push(gw);
  await waitFor(async () => (await redisState(gw)) === "connected", "Redis connected");

  const resyncs = [];
  const { client, rec } = openClient(gw.wsUrl, {
    token: mintToken({ sub: "alice" }),
    onResync: (info) => resyncs.push({ ...info, at: Date.now() }),
  });
  const handled = [];
  client.onResync((info) => handled.push(info));
  await waitFor(() => client.state === "open", "connected");
  // Events in Redis's stream, which the fresh Redis will not have.
  const ids = [];
  for (let n = 0; n < 3; n++) ids.push(await gw.publish({ type: "before", data: n }));
  await waitFor(() => rec.events.length === 3, "the events published before the loss");
  assert.deepEqual(rec.events.map((e) => e.id), ids);
  assert.deepEqual(resyncs, []);

  // Redis dies with everything in it; a fresh, empty one takes its port.
  await redis.stop("SIGKILL");
  redis = await startRedis({ port: redis.port });
  started.push(redis);
  const restartedAt = Date.now();

  await waitFor(() => resyncs.length >= 1, "onResync after Redis came back empty (needs a gateway that sends `resync` frames)", 10000);
  const info = resyncs[0];
  assert.equal(info.frame.type, "resync", `a resync frame, not a reconnection: ${JSON.stringify(info.frame)}`);
  assert.equal(typeof info.reason, "string");
  assert.ok(info.reason.length > 0);
  assert.equal(info.reason, info.frame.reason, "the gateway's reason, passed on as it came");
  assert.equal(info.since, null);
  assert.ok(info.at - restartedAt <= 10000);
  assert.deepEqual([handled[0]?.reason, handled[0]?.frame.type], [info.reason, "resync"], "onResync() handlers got it too");

  // Not an event, no reconnection: the same connection carries live events.
  assert.equal(rec.events.length, 3, "the resync frame is not delivered as an event");
  assert.equal(client.lastEventId, ids.at(-1), "lastEventId unchanged by the resync frame");
  assert.equal(client.state, "open");
  assert.equal(rec.opens.length, 1, "the connection stayed open (no new `connected`)");
  assert.deepEqual(rec.closes, []);

  await waitFor(async () => (await redisState(gw)) === "connected", "Redis reconnected", 10000);
  const live = await gw.publish({ type: "after", data: "live" });
  await waitFor(() => rec.events.some((e) => e.id === live), "a live event after the resync", 10000);
  assert.equal(client.lastEventId, live);
  assert.equal(rec.opens.length, 1);
  assert.ok(resyncs.every((i) => i.frame.type === "resync"), "no resync from a reconnection");
  assert.deepEqual(rec.errors, []);
});
