// The gateway's `resync` frame ({"type":"resync","reason":...}: Redis lost events this open
// connection may not have received) against a small local `ws` server that plays the gateway:
// onResync (option and handlers) gets it, event handlers never do, lastEventId does not move,
// and the connection stays open. The same against the real gateway: resync-e2e.test.mjs.
import assert from "node:assert/strict";
import { after, afterEach, test } from "node:test";
import { WebSocketServer } from "ws";
import { waitFor } from "../testing/harness.mjs";
import { closeAllClients, openClient } from "../testing/recorder.mjs";

const servers = [];
afterEach(() => closeAllClients());
after(async () => {
  closeAllClients();
  for (const s of servers) {
    for (const ws of s.wss.clients) ws.terminate();
    await new Promise((r) => s.wss.close(r));
  }
});

/** A one-socket-at-a-time stand-in for the gateway: sends `connected`, then what the test says. */
async function fakeGateway() {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((r) => wss.once("listening", r));
  const srv = { wss, sockets: [], urls: [] };
  wss.on("connection", (ws, req) => {
    srv.urls.push(req.url);
    srv.sockets.push(ws);
    ws.on("message", (raw) => {
      if (JSON.parse(String(raw)).type === "ping") ws.send('{"type":"pong"}');
    });
    ws.send(JSON.stringify({ type: "connected", connection_id: `c${srv.sockets.length}`, user: "alice", instance_id: "fake-gw" }));
  });
  srv.url = `ws://127.0.0.1:${wss.address().port}/ws/tasks`;
  srv.send = (frame) => srv.sockets.at(-1).send(JSON.stringify(frame));
  servers.push(srv);
  return srv;
}

const event = (n, extra = {}) => ({ id: `1700000000000-${n}`, type: "task.updated", data: { n }, ts: 1700000000000, ...extra });

test("a resync frame → onResync({reason, since: null, frame}) and onResync() handlers; not an event; lastEventId unchanged; still open", { timeout: 20000 }, async () => {
  const srv = await fakeGateway();
  const order = [];
  const { client, rec } = openClient(srv.url, {
    token: "t",
    onResync: (info) => order.push(["option", info]),
  });
  const typed = [];
  client.on("task.updated", (e) => typed.push(e));
  client.on("resync", (e) => order.push(["on(resync)", e]));
  const off = client.onResync((info) => order.push(["handler", info]));
  await waitFor(() => client.state === "open", "connected");

  srv.send(event(1));
  await waitFor(() => rec.events.length === 1, "the first event");
  srv.send({ type: "resync", reason: "redis_data_lost" });
  await waitFor(() => order.length === 2, "onResync");
  const frame = { type: "resync", reason: "redis_data_lost" };
  assert.deepEqual(order, [
    ["option", { reason: "redis_data_lost", since: null, frame }],
    ["handler", { reason: "redis_data_lost", since: null, frame }],
  ]);
  assert.equal(rec.events.length, 1, "the resync frame is not an event");
  assert.equal(typed.length, 1);
  assert.equal(client.lastEventId, event(1).id, "lastEventId unchanged");
  assert.equal(client.state, "open");

  // Live events follow on the same connection; an unknown reason is passed on as it came.
  srv.send(event(2));
  srv.send({ type: "resync", reason: "some_future_reason", detail: 1 });
  await waitFor(() => rec.events.length === 2 && order.length === 4, "the next event and resync");
  assert.equal(rec.events[1].id, event(2).id);
  assert.equal(client.lastEventId, event(2).id);
  assert.deepEqual(order.slice(2).map(([who, i]) => [who, i.reason, i.frame.detail]), [
    ["option", "some_future_reason", 1],
    ["handler", "some_future_reason", 1],
  ]);

  // The remover works; a frame without a reason says "unknown".
  off();
  srv.send({ type: "resync" });
  await waitFor(() => order.length === 5, "onResync without a reason");
  assert.deepEqual(order[4], ["option", { reason: "unknown", since: null, frame: { type: "resync" } }]);

  assert.equal(rec.opens.length, 1, "no reconnection");
  assert.equal(srv.sockets.length, 1);
  assert.deepEqual(rec.closes, []);
  assert.deepEqual(rec.errors, []);
});

test("an application event whose type is \"resync\" (it has an id) is an event: on(\"resync\")/onEvent get it, onResync does not", { timeout: 20000 }, async () => {
  const srv = await fakeGateway();
  const resyncs = [];
  const { client, rec } = openClient(srv.url, { token: "t", onResync: (i) => resyncs.push(i) });
  client.onResync((i) => resyncs.push(i));
  const typed = [];
  client.on("resync", (e) => typed.push(e));
  await waitFor(() => client.state === "open", "connected");
  const appEvent = event(7, { type: "resync", data: { reason: "the app's own" } });
  srv.send(appEvent);
  await waitFor(() => rec.events.length === 1, "the application event");
  assert.deepEqual(typed, [appEvent]);
  assert.deepEqual(rec.events, [appEvent]);
  assert.equal(client.lastEventId, appEvent.id);
  assert.deepEqual(resyncs, []);
});

test("onResync() handlers also get the resyncs of a connection that could not resume (recovered: false)", { timeout: 20000 }, async () => {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((r) => wss.once("listening", r));
  servers.push({ wss });
  wss.on("connection", (ws) => ws.send(JSON.stringify({ type: "connected", connection_id: "c", user: "alice", instance_id: "fake-gw", recovered: false })));
  const got = [];
  const { client } = openClient(`ws://127.0.0.1:${wss.address().port}/ws/tasks`, { token: "t", since: "5-0", onResync: (i) => got.push(["option", i.reason]) });
  client.onResync((i) => got.push(["handler", i.reason, i.since, i.frame.type]));
  await waitFor(() => got.length === 2, "both");
  assert.deepEqual(got, [["option", "not_recovered"], ["handler", "not_recovered", "5-0", "connected"]]);
});

test("a throwing onResync() handler is reported as handler_error; the others still run", { timeout: 20000 }, async () => {
  const srv = await fakeGateway();
  const { client, rec } = openClient(srv.url, { token: "t" });
  const got = [];
  client.onResync(() => {
    throw new Error("boom");
  });
  client.onResync((i) => got.push(i.reason));
  assert.throws(() => client.onResync("not a function"), TypeError);
  await waitFor(() => client.state === "open", "connected");
  srv.send({ type: "resync", reason: "history_trimmed" });
  await waitFor(() => got.length === 1, "the second handler");
  assert.deepEqual(got, ["history_trimmed"]);
  assert.deepEqual(rec.errors.map((e) => [e.code, e.fatal]), [["handler_error", false]]);
  assert.match(rec.errors[0].message, /onResync handler threw: boom/);
  assert.equal(client.state, "open");
});
