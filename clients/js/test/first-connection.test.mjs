// The first connection is retried like any other (a page opened during a deploy connects once
// the gateway is back): the client is pointed at a local TCP proxy in front of the real gateway
// that fails the first attempts as the test says (destroys the socket, or answers an HTTP
// status), then forwards bytes both ways.
import assert from "node:assert/strict";
import { createServer, connect as tcpConnect } from "node:net";
import { after, afterEach, test } from "node:test";
import { SECRET, mintToken, sleep, startGateway, waitFor } from "../testing/harness.mjs";
import { BrowserLikeWebSocket, closeAllClients, openClient } from "../testing/recorder.mjs";

const started = [];
const proxies = [];
afterEach(() => closeAllClients());
after(async () => {
  closeAllClients();
  for (const p of proxies) await p.close();
  for (const gw of started) await gw.stop("SIGKILL");
});

/**
 * A proxy on 127.0.0.1, port 0 (no race for a port). Incoming connection n gets plan[n]:
 * "destroy" (closed at once, like a load balancer with no healthy backend), an HTTP status
 * (answered to the upgrade request, then closed), or, past the plan, forwarding to `port`.
 */
async function proxy(port, plan) {
  const sockets = new Set();
  const p = { accepted: 0 };
  const server = createServer((sock) => {
    sockets.add(sock);
    sock.on("close", () => sockets.delete(sock));
    sock.on("error", () => {});
    const action = plan[p.accepted++];
    if (action === "destroy") return sock.destroy();
    if (typeof action === "number") {
      return sock.once("data", () => {
        const body = JSON.stringify({ error: "test proxy" });
        sock.end(`HTTP/1.1 ${action} Test\r\nRetry-After: 1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
      });
    }
    const up = tcpConnect(port, "127.0.0.1");
    sockets.add(up);
    up.on("close", () => sockets.delete(up));
    up.on("error", () => sock.destroy());
    sock.on("close", () => up.destroy());
    up.on("close", () => sock.destroy());
    sock.pipe(up).pipe(sock);
  });
  await new Promise((res) => server.listen(0, "127.0.0.1", res));
  p.url = `ws://127.0.0.1:${server.address().port}/ws/tasks`;
  p.close = () => {
    for (const s of sockets) s.destroy();
    return new Promise((res) => server.close(res));
  };
  proxies.push(p);
  return p;
}

async function gateway() {
  const gw = await startGateway({ instanceId: "gw-first" });
  started.push(gw);
  return gw;
}

for (const [runtime, Base] of [["ws (knows HTTP statuses)", undefined], ["browser-like (no HTTP status)", BrowserLikeWebSocket]]) {
  test(`${runtime}: the first 2 connections destroyed → retried with backoff, then connected; an event arrives`, { timeout: 30000 }, async () => {
    const gw = await gateway();
    const px = await proxy(gw.port, ["destroy", "destroy"]);
    let calls = 0;
    const { client, rec } = openClient(px.url, { token: mintToken({ sub: "alice" }), getToken: () => (calls++, mintToken({ sub: "alice" })) }, Base);
    await waitFor(() => client.state === "open", "connected through the proxy");
    assert.equal(px.accepted, 3);
    assert.equal(rec.urls.length, 3);
    assert.deepEqual(rec.closes.map((c) => [c.code, c.upgradeFailed, c.willReconnect, c.status]), [
      [1006, true, true, undefined],
      [1006, true, true, undefined],
    ]);
    rec.closes.forEach((c, i) => assert.ok(c.delayMs >= 0 && c.delayMs < 50 * 2 ** i, `delay ${i} = ${c.delayMs}`));
    assert.equal(calls, 0, "a destroyed connection does not point at the token");
    assert.equal(new Set(rec.urls.map((u) => new URL(u).searchParams.get("token"))).size, 1, "the same token every time");
    assert.deepEqual(rec.errors, []);
    const id = await gw.publish({ type: "after.retries", data: { ok: true } });
    await waitFor(() => rec.events.some((e) => e.id === id), "the event");
    assert.deepEqual(rec.events.map((e) => [e.id, e.data]), [[id, { ok: true }]]);
  });
}

test("retryFirstConnection: false → the first destroyed connection stops the client (upgrade_refused)", { timeout: 30000 }, async () => {
  const gw = await gateway();
  const px = await proxy(gw.port, ["destroy"]);
  const { client, rec } = openClient(px.url, { token: mintToken({ sub: "alice" }), retryFirstConnection: false });
  await waitFor(() => client.state === "closed", "stopped");
  assert.deepEqual(rec.errors.map((e) => [e.code, e.fatal]), [["upgrade_refused", true]]);
  await sleep(800); // backoff 50..400 ms: a retry would have reached the proxy by now
  assert.equal(px.accepted, 1);
});

test("an HTTP 503 (draining, limits) on the first attempt → retried with the same token; a 429 too", { timeout: 30000 }, async () => {
  const gw = await gateway();
  const px = await proxy(gw.port, [503, 429]);
  let calls = 0;
  const { client, rec } = openClient(px.url, { token: mintToken({ sub: "alice" }), getToken: () => (calls++, mintToken({ sub: "alice" })) });
  await waitFor(() => client.state === "open", "connected after the 503 and the 429");
  assert.deepEqual(rec.closes.map((c) => [c.status, c.willReconnect]), [[503, true], [429, true]]);
  assert.equal(calls, 0);
  assert.deepEqual(rec.errors, []);
});

test("an HTTP 403 (origin not allowed) on the first attempt → stops at once, no getToken()", { timeout: 30000 }, async () => {
  const gw = await gateway();
  const px = await proxy(gw.port, [403]);
  let calls = 0;
  const { client, rec } = openClient(px.url, { token: mintToken({ sub: "alice" }), getToken: () => (calls++, mintToken({ sub: "alice" })) });
  await waitFor(() => client.state === "closed", "stopped");
  assert.deepEqual(rec.errors.map((e) => [e.code, e.status, e.fatal]), [["upgrade_refused", 403, true]]);
  await sleep(800);
  assert.equal(px.accepted, 1);
  assert.equal(calls, 0);
});

test("browser-like, a JWT the gateway refuses: the client cannot tell it from an outage, so it keeps retrying with backoff (and never asks getToken())", { timeout: 30000 }, async () => {
  const gw = await gateway();
  let calls = 0;
  const { client, rec } = openClient(gw.wsUrl, {
    token: mintToken({ sub: "mallory" }, `${SECRET}-wrong`),
    getToken: () => (calls++, mintToken({ sub: "alice" })),
  }, BrowserLikeWebSocket);
  await waitFor(() => rec.urls.length >= 4, "several attempts");
  assert.notEqual(client.state, "closed");
  assert.equal(calls, 0);
  assert.deepEqual(rec.errors, []);
  assert.ok(rec.closes.every((c) => c.upgradeFailed && c.willReconnect && c.status === undefined));
  client.close();
  assert.equal(client.state, "closed");
});
