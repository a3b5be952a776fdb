// Channels against the real gateway (memory mode): subscribe()/unsubscribe() and their answers,
// per-channel handlers, refusals, and the rejoin on reconnection (`channels=` with `since=`:
// the channel events missed meanwhile are replayed exactly once).
import assert from "node:assert/strict";
import { after, afterEach, test } from "node:test";
import WebSocket from "ws";
import { mintToken, sleep, startGateway, startRedis, waitFor } from "../testing/harness.mjs";
import { closeAllClients, openClient } from "../testing/recorder.mjs";

const gateways = []; // and redis-servers
async function gateway(opts) {
  const gw = await startGateway(opts);
  gateways.push(gw);
  return gw;
}
afterEach(() => closeAllClients());
after(async () => {
  closeAllClients();
  for (const gw of gateways) await gw.stop("SIGKILL");
});

const aliceToken = () => mintToken({ sub: "alice", channels: ["project:*", "news"] });

/** Settles `p` and returns ["ok"] or ["err", error]. */
const outcome = (p) => p.then(() => ["ok"], (err) => ["err", err]);

test("subscribe → subscribed; channel events reach onChannel, on(type) and '*'; unsubscribe stops them", { timeout: 30000 }, async () => {
  const gw = await gateway({ instanceId: "gw-ch" });
  const { client, rec } = openClient(gw.wsUrl, { token: aliceToken() });
  const other = openClient(gw.wsUrl, { token: mintToken({ sub: "bob", channels: ["project:*"] }) });
  const perChannel = [];
  const perType = [];
  const order = [];
  const offChannel = client.onChannel("project:42", (e) => {
    perChannel.push(e);
    order.push("channel");
  });
  client.on("task.updated", (e) => {
    perType.push(e);
    order.push("type");
  });
  client.on("*", () => order.push("*"));

  // Before the connection is open: joined once it is (a frame after `connected`).
  await client.subscribe("project:42");
  assert.equal(client.state, "open");
  assert.deepEqual(client.channels, ["project:42"]);
  await waitFor(() => other.client.state === "open", "bob connected");

  const id = await gw.publish({ type: "task.updated", data: { id: 42 }, channel: "project:42" });
  await gw.publish({ type: "task.updated", data: "elsewhere", channel: "project:7" });
  await waitFor(() => rec.events.length >= 1, "the channel event");
  await sleep(150); // project:7 must not arrive
  assert.deepEqual(rec.events.map((e) => [e.id, e.channel, e.data]), [[id, "project:42", { id: 42 }]]);
  assert.deepEqual(perChannel.map((e) => e.id), [id]);
  assert.deepEqual(perType.map((e) => e.id), [id]);
  assert.deepEqual(order, ["type", "channel", "*"]);
  assert.equal(client.lastEventId, id);
  assert.deepEqual(other.rec.events, [], "bob did not join: nothing for him");

  // Already joined: resolves at once; a subscribe while open is answered on the same socket.
  await client.subscribe("project:42");
  await client.subscribe("news");
  assert.deepEqual(client.channels, ["project:42", "news"]);
  const newsId = await gw.publish({ type: "headline", channel: "news" });
  await waitFor(() => rec.events.length === 2, "the news event");
  assert.equal(rec.events[1].id, newsId);
  assert.equal(perChannel.length, 1, "onChannel is per channel");

  await client.unsubscribe("project:42");
  assert.deepEqual(client.channels, ["news"]);
  await gw.publish({ type: "task.updated", data: "after unsubscribe", channel: "project:42" });
  const last = await gw.publish({ type: "broadcast" });
  await waitFor(() => rec.events.some((e) => e.id === last), "the broadcast after unsubscribe");
  await sleep(500); // the broadcast came after it: a copy of the left channel's event would be in by now
  assert.ok(!rec.events.some((e) => e.data === "after unsubscribe"), "no event of a channel left");
  assert.equal(rec.urls.length, 1, "one connection throughout");
  offChannel();
  assert.deepEqual(rec.errors, []);
});

test("refusals reject with the gateway's code and leave the connection open", { timeout: 30000 }, async () => {
  const gw = await gateway({ instanceId: "gw-refuse", env: { MAX_CHANNELS_PER_CONNECTION: "2" } });
  const sent = [];
  class Spy extends WebSocket {
    send(data, ...rest) {
      sent.push(String(data));
      return super.send(data, ...rest);
    }
  }
  const { client, rec } = openClient(gw.wsUrl, { token: aliceToken() }, Spy);
  await waitFor(() => client.state === "open", "connected");

  const [kind, err] = await outcome(client.subscribe("secret:1"));
  assert.equal(kind, "err");
  assert.equal(err.name, "WsgateError");
  assert.equal(err.code, "forbidden");
  assert.equal(err.channel, "secret:1");
  assert.equal(err.frame.error, "forbidden");
  assert.deepEqual(client.channels, [], "a refused channel is not rejoined");

  // A bad name is refused before anything is sent.
  const before = sent.length;
  const bad = await outcome(client.subscribe("no spaces,or commas"));
  assert.equal(bad[1].code, "invalid_channel");
  assert.equal(sent.length, before, "nothing sent for a malformed name");

  // user:<sub> is always allowed; then the per-connection limit (2 here).
  await client.subscribe("user:alice");
  await client.subscribe("project:1");
  const [, tooMany] = await outcome(client.subscribe("project:2"));
  assert.equal(tooMany.code, "too_many_channels");
  assert.deepEqual(client.channels, ["user:alice", "project:1"]);

  assert.equal(client.state, "open");
  assert.equal(rec.urls.length, 1, "the refusals did not close the connection");
  assert.deepEqual(rec.errors, [], "awaited refusals are not also reported to onError");
  const id = await gw.publish({ type: "still.here", channel: "project:1" });
  await waitFor(() => rec.events.some((e) => e.id === id), "an event after the refusals");
});

test("options.channels joins at connect; a refused one goes to onError", { timeout: 30000 }, async () => {
  const gw = await gateway({ instanceId: "gw-opt" });
  const { client, rec } = openClient(gw.wsUrl, { token: aliceToken(), channels: ["news", "secret"] });
  await waitFor(() => rec.errors.length === 1, "the refusal of `secret`");
  assert.deepEqual(new URL(rec.urls[0]).searchParams.get("channels"), "news,secret");
  assert.equal(rec.errors[0].code, "forbidden");
  assert.equal(rec.errors[0].channel, "secret");
  assert.deepEqual(client.channels, ["news"]);
  const id = await gw.publish({ type: "headline", channel: "news" });
  await waitFor(() => rec.events.length === 1, "the news event");
  assert.equal(rec.events[0].id, id);
  assert.throws(() => openClient(gw.wsUrl, { token: aliceToken(), channels: "news" }), TypeError);
  assert.throws(() => openClient(gw.wsUrl, { token: aliceToken(), channels: ["a,b"] }), TypeError);
});

for (const mode of ["memory", "redis"]) test(`${mode}: a dropped client rejoins its channels and gets the missed channel events exactly once, in order`, { timeout: 60000 }, async () => {
  let gw; // where events are published and the client first connects
  let back; // where the client reconnects: in Redis mode, another instance
  if (mode === "memory") {
    gw = back = await gateway({ instanceId: "gw-rejoin" });
  } else {
    const redis = await startRedis();
    gateways.push(redis);
    gw = await gateway({ redisUrl: redis.url, instanceId: "gw-rejoin-a" });
    back = await gateway({ redisUrl: redis.url, instanceId: "gw-rejoin-b" });
    for (const g of [gw, back]) await waitFor(async () => (await g.stats()).redis_state === "connected", "Redis connected");
  }
  // A `ws` WebSocket the test can cut off: drop() kills the socket (no close frame); while `down`,
  // attempts go to a port where nothing listens; after it, to `back`.
  const ctl = { down: false, sockets: [] };
  class Switchable extends WebSocket {
    constructor(url, ...rest) {
      const u = new URL(url);
      if (ctl.down) u.port = "1";
      else if (ctl.sockets.length > 0) u.port = String(back.port);
      super(u.toString(), ...rest);
      ctl.sockets.push(this);
    }
  }
  const resumed = [];
  const resyncs = [];
  const { client, rec } = openClient(
    gw.wsUrl,
    { token: aliceToken(), onResumed: (i) => resumed.push(i), onResync: (i) => resyncs.push(i) },
    Switchable,
  );
  const perChannel = [];
  client.onChannel("project:42", (e) => perChannel.push(e.id));
  await client.subscribe("project:42");
  const expected = [await gw.publish({ type: "before", channel: "project:42" })];
  await waitFor(() => rec.events.length === 1, "the first channel event");

  ctl.down = true;
  ctl.sockets.at(-1).terminate();
  await waitFor(() => rec.closes.length >= 1, "the client noticed the loss");
  expected.push(await gw.publish({ type: "missed", data: 1, channel: "project:42" }));
  await gw.publish({ type: "missed", data: "other channel", channel: "project:7" });
  expected.push(await gw.publish({ type: "missed", data: 2, users: ["alice"] }));
  expected.push(await gw.publish({ type: "missed", data: 3, channel: "project:42" }));
  // Joined while disconnected: it goes in the next connection's channels= (nothing to replay yet).
  const joinNews = client.subscribe("news");
  await waitFor(() => rec.urls.length >= 3, "refused attempts while cut off");

  ctl.down = false;
  await joinNews;
  await waitFor(() => rec.opens.length === 2, "reconnected");
  assert.equal(rec.opens[1].instance_id, mode === "redis" ? "gw-rejoin-b" : "gw-rejoin");
  const url = new URL(rec.urls.at(-1));
  assert.equal(url.searchParams.get("since"), expected[0]);
  assert.equal(url.searchParams.get("channels"), "project:42,news");
  assert.equal(rec.opens[1].recovered, true);
  await waitFor(() => resumed.length === 1, "onResumed");

  const live = [
    await gw.publish({ type: "live", channel: "project:42" }),
    await gw.publish({ type: "live", channel: "news" }),
  ];
  expected.push(...live);
  await waitFor(() => rec.events.some((e) => e.id === live[1]), "the live events");
  await sleep(300); // a late duplicate would show up now

  const got = rec.events.map((e) => e.id);
  assert.equal(new Set(got).size, got.length, "no duplicate");
  assert.deepEqual(got, expected, "the missed channel and user events, then live ones; nothing of project:7");
  assert.deepEqual(perChannel, [expected[0], expected[1], expected[3], live[0]]);
  assert.equal(resumed[0].missed, 3);
  assert.deepEqual(resyncs, []);
  assert.deepEqual(client.channels, ["project:42", "news"]);
  assert.deepEqual(rec.errors.filter((e) => e.code !== "ping_timeout"), []);
});

test("unsubscribe while disconnected: not rejoined; close() rejects a pending subscribe", { timeout: 30000 }, async () => {
  const gw = await gateway({ instanceId: "gw-unsub" });
  const { client, rec } = openClient(gw.wsUrl, { token: aliceToken(), channels: ["news", "project:1"] });
  await waitFor(() => client.state === "open", "connected");
  await gw.stop("SIGKILL");
  await waitFor(() => client.state === "reconnecting", "reconnecting");
  await client.unsubscribe("news"); // nobody holds it: resolves at once
  const gw2 = await gateway({ port: gw.port, instanceId: "gw-unsub-2" });
  await waitFor(() => rec.opens.length === 2, "reconnected", 15000);
  assert.equal(new URL(rec.urls.at(-1)).searchParams.get("channels"), "project:1");
  await gw2.publish({ type: "headline", channel: "news" });
  const id = await gw2.publish({ type: "task", channel: "project:1" });
  await waitFor(() => rec.events.some((e) => e.id === id), "the project:1 event");
  assert.ok(!rec.events.some((e) => e.channel === "news"));

  await gw2.stop("SIGKILL");
  await waitFor(() => client.state === "reconnecting", "reconnecting again");
  const pending = outcome(client.subscribe("project:2"));
  client.close();
  const [kind, err] = await pending;
  assert.equal(kind, "err");
  assert.equal(err.code, "closed");
  assert.equal((await outcome(client.subscribe("project:3")))[1].code, "closed");
});
