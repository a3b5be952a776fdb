// What an operator's `POST /api/users/{sub}/disconnect` does to the client, against the real
// gateway: 4001 ("revoked", the default) stops it for good and calls onRevoked; with
// {"reconnect": true}, 1012 makes it reconnect at once with the same token and resume
// (`since=`). And getToken() is asked only when the gateway points at the token: a counter on it
// over every other kind of close the gateway makes (1001, 1006, 1012, 1008 message_rate, 4001).
import assert from "node:assert/strict";
import { after, afterEach, test } from "node:test";
import { mintToken, sleep, startGateway, waitFor } from "../testing/harness.mjs";
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
  for (const gw of started) await gw.stop("SIGKILL");
});

/** POST /api/users/{sub}/disconnect with an admin service token minted with the harness's secret. */
async function disconnect(gw, sub, body) {
  const r = await fetch(`${gw.http}/api/users/${encodeURIComponent(sub)}/disconnect`, {
    method: "POST",
    headers: {
      Authorization: `Bearer ${mintToken({ sub: "ops", scope: "admin" })}`,
      ...(body ? { "Content-Type": "application/json" } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  assert.equal(r.status, 200, `disconnect answered ${r.status}: ${text}`);
  return JSON.parse(text);
}

/** A getToken() that counts its calls and hands out tokens for `sub`. */
function counted(sub) {
  const g = { calls: 0 };
  g.getToken = () => (g.calls++, mintToken({ sub }));
  return g;
}

test("revoked (4001): stops for good, onRevoked (option and handler) once, a fatal `revoked` error, no getToken(), no reconnect; other users untouched", { timeout: 30000 }, async () => {
  const gw = await gateway({ instanceId: "gw-revoke" });
  const tokens = counted("alice");
  const revoked = [];
  const { client, rec } = openClient(gw.wsUrl, { token: mintToken({ sub: "alice" }), getToken: tokens.getToken, onRevoked: (i) => revoked.push(["option", i]) });
  client.onRevoked((i) => revoked.push(["handler", i]));
  const bob = openClient(gw.wsUrl, { token: mintToken({ sub: "bob" }) });
  await waitFor(() => client.state === "open" && bob.client.state === "open", "both connected");

  assert.deepEqual(await disconnect(gw, "alice"), { user: "alice", disconnected: 1 });
  await waitFor(() => client.state === "closed", "alice's client stopped");
  assert.deepEqual(revoked.map(([who, i]) => [who, i.code, i.reason, i.user, i.connection.instance_id, i.error.code]), [
    ["option", 4001, "revoked", "alice", "gw-revoke", "revoked"],
    ["handler", 4001, "revoked", "alice", "gw-revoke", "revoked"],
  ]);
  assert.deepEqual(rec.closes.map((c) => [c.code, c.reason, c.willReconnect]), [[4001, "revoked", false]]);
  assert.deepEqual(rec.errors.map((e) => [e.code, e.fatal]), [["revoked", true]]);
  assert.equal(tokens.calls, 0);

  const id = await gw.publish({ type: "after.revoke" });
  await waitFor(() => bob.rec.events.some((e) => e.id === id), "bob still gets events");
  await sleep(1000); // a reconnect would come within the backoff (50..400 ms) plus a handshake
  assert.equal(rec.urls.length, 1, "no reconnect");
  assert.equal(revoked.length, 2, "onRevoked once each");
  assert.equal((await gw.stats()).local_connections, 1, "only bob is connected");
  assert.equal(bob.rec.opens.length, 1);
  assert.deepEqual(bob.rec.closes, []);
});

test("reconnect (1012): reconnects at once with the same token and since=; resumed, nothing lost or doubled; no getToken()", { timeout: 30000 }, async () => {
  const gw = await gateway({ instanceId: "gw-reconnect" });
  const tokens = counted("carol");
  const resumed = [];
  const resyncs = [];
  const token = mintToken({ sub: "carol" });
  const { client, rec } = openClient(gw.wsUrl, { token, getToken: tokens.getToken, onResumed: (i) => resumed.push(i), onResync: (i) => resyncs.push(i) });
  await waitFor(() => client.state === "open", "connected");
  const first = await gw.publish({ type: "before", data: 1 });
  await waitFor(() => client.lastEventId === first, "the first event");

  assert.deepEqual(await disconnect(gw, "carol", { reconnect: true }), { user: "carol", disconnected: 1 });
  const during = await gw.publish({ type: "during", data: 2 }); // before or after the close: exactly once either way
  await waitFor(() => rec.opens.length === 2, "reconnected");
  assert.deepEqual(rec.closes.map((c) => [c.code, c.reason, c.willReconnect]), [[1012, "reconnect", true]]);
  assert.ok(rec.closes[0].delayMs < 50, `within the first backoff step: ${rec.closes[0].delayMs} ms`);
  assert.equal(new URL(rec.urls[1]).searchParams.get("token"), token, "the same token");
  assert.equal(tokens.calls, 0);
  const since = new URL(rec.urls[1]).searchParams.get("since");
  assert.ok(since === first || since === during, `since= ${since}`);
  assert.equal(rec.opens[1].recovered, true);
  await waitFor(() => resumed.length === 1, "onResumed");
  const last = await gw.publish({ type: "after", data: 3 });
  await waitFor(() => rec.events.some((e) => e.id === last), "a live event");
  assert.deepEqual(rec.events.map((e) => e.id), [first, during, last]);
  assert.deepEqual(resyncs, []);
  assert.deepEqual(rec.errors, []);
});

test("getToken() counted over the gateway's closes that do not point at the token: 1001, 1006, 1012, 4001 → never called", { timeout: 60000 }, async () => {
  const gw1 = await gateway({ instanceId: "gw-count-1" });
  const port = gw1.port;
  const tokens = counted("dave");
  const token = mintToken({ sub: "dave" });
  const { client, rec } = openClient(gw1.wsUrl, { token, getToken: tokens.getToken });
  await waitFor(() => client.state === "open", "connected");

  await gw1.stop("SIGTERM"); // 1001
  await waitFor(() => rec.closes.length === 1, "close 1001");
  const gw2 = await gateway({ port, instanceId: "gw-count-2" });
  await waitFor(() => rec.opens.length === 2, "reconnected after 1001");
  await gw2.stop("SIGKILL"); // 1006
  await waitFor(() => rec.closes.some((c) => c.code === 1006 && !c.upgradeFailed), "close 1006");
  const gw3 = await gateway({ port, instanceId: "gw-count-3" });
  await waitFor(() => rec.opens.length === 3, "reconnected after 1006");
  await disconnect(gw3, "dave", { reconnect: true }); // 1012
  await waitFor(() => rec.opens.length === 4, "reconnected after 1012");
  await disconnect(gw3, "dave"); // 4001
  await waitFor(() => client.state === "closed", "stopped after 4001");

  const codes = rec.closes.filter((c) => !c.upgradeFailed).map((c) => c.code);
  assert.deepEqual(codes, [1001, 1006, 1012, 4001]);
  assert.equal(tokens.calls, 0);
  assert.ok(rec.urls.every((u) => new URL(u).searchParams.get("token") === token), "the first token throughout");
});

test("1008 message_rate (the client sent too fast): reconnects with the same token, no getToken(); a non-fatal `policy` error", { timeout: 30000 }, async () => {
  const gw = await gateway({ instanceId: "gw-rate", env: { CLIENT_MESSAGES_PER_SEC: "1" } });
  const tokens = counted("erin");
  const token = mintToken({ sub: "erin" });
  // A ping every 10 ms is far above 1 message per second (burst 2).
  const { client, rec } = openClient(gw.wsUrl, { token, getToken: tokens.getToken, pingIntervalMs: 10, pongTimeoutMs: 1000 });
  await waitFor(() => rec.opens.length >= 2, "closed for the rate, then reconnected");
  assert.deepEqual([rec.closes[0].code, rec.closes[0].reason, rec.closes[0].willReconnect], [1008, "message_rate", true]);
  assert.deepEqual([rec.errors[0].code, rec.errors[0].fatal, rec.errors[0].reason], ["policy", false, "message_rate"]);
  assert.equal(new URL(rec.urls[1]).searchParams.get("token"), token);
  assert.equal(tokens.calls, 0);
  client.close();
});
