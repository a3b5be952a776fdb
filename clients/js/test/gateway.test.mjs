// The client against the real gateway binary (target/debug/wsgate) on loopback ports.
import assert from "node:assert/strict";
import { after, afterEach, test } from "node:test";
import { mintToken, startGateway, waitFor, sleep, SECRET } from "../testing/harness.mjs";
import { BrowserLikeWebSocket, closeAllClients, openClient } from "../testing/recorder.mjs";

const gateways = [];
async function gateway(opts) {
  const gw = await startGateway(opts);
  gateways.push(gw);
  return gw;
}
// Pass or fail, no client outlives its test and no gateway outlives the file.
afterEach(() => closeAllClients());
after(async () => {
  closeAllClients();
  for (const gw of gateways) await gw.stop("SIGKILL");
});

test("receives events; handlers per type and '*' fire; lastEventId follows", { timeout: 30000 }, async () => {
  const gw = await gateway({ instanceId: "gw-events" });
  const { client, rec } = openClient(gw.wsUrl, { token: mintToken({ sub: "alice" }) });
  const updated = [];
  const notices = [];
  const all = [];
  client.on("task.updated", (e) => updated.push(e));
  const offNotice = client.on("notice", (e) => notices.push(e));
  client.on("*", (e) => all.push(e));
  try {
    await waitFor(() => client.state === "open", "state open");
    assert.deepEqual(rec.states.slice(0, 2), ["connecting", "open"].slice(rec.states[0] === "connecting" ? 0 : 1));
    assert.equal(rec.opens.length, 1);
    assert.equal(rec.opens[0].type, "connected");
    assert.equal(rec.opens[0].user, "alice");
    assert.equal(rec.opens[0].instance_id, "gw-events");
    assert.equal(client.connection.instance_id, "gw-events");

    const data = { id: 42, state: "done", nested: [1, "two", null, { ok: true }] };
    const id1 = await gw.publish({ type: "task.updated", data });
    const id2 = await gw.publish({ type: "notice", data: "hi", users: ["alice"] });
    const id3 = await gw.publish({ type: "notice", data: "not for alice", users: ["bob"] });
    const id4 = await gw.publish({ type: "other" });
    await waitFor(() => all.length >= 3, "three events");
    await sleep(500); // the one for bob must not arrive (id4, published after it, did)
    assert.deepEqual(all.map((e) => e.id), [id1, id2, id4]);
    assert.ok(!all.some((e) => e.id === id3));
    assert.deepEqual(updated.map((e) => e.id), [id1]);
    assert.deepEqual(updated[0].data, data);
    assert.equal(typeof updated[0].ts, "number");
    assert.deepEqual(notices.map((e) => [e.id, e.data]), [[id2, "hi"]]);
    assert.equal(all[2].data, null);
    assert.equal(client.lastEventId, id4);

    offNotice();
    const id5 = await gw.publish({ type: "notice", data: 5 });
    await waitFor(() => all.length === 4, "fourth event");
    assert.equal(all[3].id, id5);
    assert.equal(notices.length, 1, "off() removed the handler");
    assert.equal(rec.errors.length, 0, `no errors: ${rec.errors.map((e) => e.message)}`);
  } finally {
    client.close();
  }
});

test("reconnects after the gateway restarts (SIGTERM → 1001, SIGKILL → 1006), with jittered backoff", { timeout: 60000 }, async () => {
  const gw1 = await gateway({ instanceId: "gw-one" });
  const port = gw1.port;
  const { client, rec } = openClient(gw1.wsUrl, { token: mintToken({ sub: "carol" }) });
  try {
    await waitFor(() => client.state === "open", "first connection");
    const idA = await gw1.publish({ type: "before", data: 1 });
    await waitFor(() => rec.events.length === 1, "event before the restart");

    // 1. graceful shutdown: close 1001, then the port is dead for a while.
    await gw1.stop("SIGTERM");
    await waitFor(() => rec.closes.length >= 1, "close after SIGTERM");
    assert.equal(rec.closes[0].code, 1001);
    assert.equal(rec.closes[0].willReconnect, true);
    await sleep(1200); // several refused attempts while nothing listens
    assert.notEqual(client.state, "closed");
    assert.equal(rec.errors.filter((e) => e.fatal).length, 0);
    const attemptsWhileDown = rec.urls.length - 1;
    assert.ok(attemptsWhileDown >= 3, `kept retrying while down (${attemptsWhileDown} attempts)`);

    const gw2 = await gateway({ port, instanceId: "gw-two" });
    await waitFor(() => rec.opens.length === 2, "reconnected to the new instance", 5000);
    assert.equal(client.connection.instance_id, "gw-two");
    assert.equal(client.state, "open");
    // the reconnect carries the resume parameter
    assert.match(rec.urls.at(-1), new RegExp(`since=${idA}`));
    const idB = await gw2.publish({ type: "after", data: 2 });
    await waitFor(() => rec.events.some((e) => e.id === idB), "event after the restart");

    // Backoff while down: full jitter, each delay in [0, min(400, 50·2^i)).
    const delays = rec.closes.map((c) => c.delayMs);
    delays.forEach((d, i) => {
      const cap = Math.min(400, 50 * 2 ** i);
      assert.ok(d >= 0 && d < cap, `delay #${i} = ${d} ms outside [0, ${cap})`);
    });
    assert.ok(new Set(delays).size > 1, `delays vary: ${delays}`);

    // 2. abrupt death: no close frame (1006); the backoff starts again from initialMs.
    const before = rec.closes.length;
    await gw2.stop("SIGKILL");
    await waitFor(() => rec.closes.length > before, "close after SIGKILL");
    assert.equal(rec.closes[before].code, 1006);
    assert.ok(rec.closes[before].delayMs < 50, "backoff was reset by the successful connection");
    await sleep(300);
    await gateway({ port, instanceId: "gw-three" });
    await waitFor(() => rec.opens.length === 3, "reconnected after SIGKILL", 5000);
    assert.equal(client.connection.instance_id, "gw-three");
  } finally {
    client.close();
  }
});

test("1008 on token expiry: getToken() gives a fresh token and the client reconnects with it", { timeout: 30000 }, async () => {
  const gw = await gateway({ instanceId: "gw-expiry", env: { JWT_LEEWAY_SECS: "0" } });
  const first = mintToken({ sub: "dave", exp: Math.floor(Date.now() / 1000) + 2 });
  const fresh = [];
  const { client, rec } = openClient(gw.wsUrl, {
    token: first,
    getToken: async () => {
      const t = mintToken({ sub: "dave" });
      fresh.push(t);
      return t;
    },
  });
  try {
    await waitFor(() => client.state === "open", "first connection");
    assert.equal(fresh.length, 0, "a static token is used first");
    await waitFor(() => rec.closes.length >= 1, "close at exp", 8000);
    assert.equal(rec.closes[0].code, 1008);
    assert.equal(rec.closes[0].reason, "token_expired");
    assert.equal(rec.closes[0].willReconnect, true);
    await waitFor(() => rec.opens.length === 2, "reconnected with the fresh token");
    assert.equal(fresh.length, 1);
    assert.equal(new URL(rec.urls[1]).searchParams.get("token"), fresh[0]);
    const id = await gw.publish({ type: "after.refresh" });
    await waitFor(() => rec.events.some((e) => e.id === id), "event after refresh");
    assert.equal(rec.errors.length, 0);
  } finally {
    client.close();
  }
});

test("1008 with only a static token: stops and reports token_expired", { timeout: 30000 }, async () => {
  const gw = await gateway({ instanceId: "gw-expiry-static", env: { JWT_LEEWAY_SECS: "0" } });
  const { client, rec } = openClient(gw.wsUrl, { token: mintToken({ sub: "erin", exp: Math.floor(Date.now() / 1000) + 2 }) });
  await waitFor(() => client.state === "open", "connection");
  await waitFor(() => client.state === "closed", "stopped at exp", 8000);
  assert.equal(rec.errors.length, 1);
  assert.equal(rec.errors[0].code, "token_expired");
  assert.equal(rec.errors[0].fatal, true);
  await sleep(1000); // a reconnect would come within initialMs (500 ms) plus a handshake
  assert.equal(rec.urls.length, 1, "no reconnect");
});

test("getToken alone is called for the first connection", { timeout: 30000 }, async () => {
  const gw = await gateway({ instanceId: "gw-gettoken" });
  let calls = 0;
  const { client, rec } = openClient(gw.wsUrl, { getToken: () => (calls++, mintToken({ sub: "frank" })) });
  try {
    await waitFor(() => client.state === "open", "connection");
    assert.equal(calls, 1);
    assert.equal(rec.opens[0].user, "frank");
  } finally {
    client.close();
  }
});

const authFailures = async (gw) =>
  (await gw.metrics())
    .split("\n")
    .filter((l) => l.startsWith("wsgate_auth_failures_total{"))
    .reduce((sum, l) => sum + Number(l.split(" ").at(-1)), 0);

for (const [name, token, code] of [
  ["a badly signed token", () => mintToken({ sub: "mallory" }, `${SECRET}-wrong`), "upgrade_refused"],
  ["an expired token", () => mintToken({ sub: "mallory", exp: Math.floor(Date.now() / 1000) - 3600 }), "token_expired"],
  ["a malformed token", () => "not-a-jwt", "upgrade_refused"],
]) {
  test(`a refused upgrade (${name}), no getToken: stops after one attempt instead of looping`, { timeout: 30000 }, async () => {
    const gw = await gateway({});
    const { client, rec } = openClient(gw.wsUrl, { token: token() });
    await waitFor(() => client.state === "closed", "stopped");
    assert.equal(rec.errors.length, 1);
    assert.equal(rec.errors[0].code, code);
    assert.equal(rec.errors[0].fatal, true);
    assert.equal(rec.errors[0].status, 401, "the ws package reports the HTTP status");
    assert.deepEqual([rec.closes.at(-1).willReconnect, rec.closes.at(-1).upgradeFailed, rec.closes.at(-1).status], [false, true, 401]);
    await sleep(800); // with backoff 50..400 ms a loop would have retried several times
    assert.equal(rec.urls.length, 1, "exactly one attempt");
    assert.equal(await authFailures(gw), 1, "the gateway saw one refused upgrade");
  });

  test(`a refused upgrade (${name}) with getToken: HTTP 401 → one fresh token, connected`, { timeout: 30000 }, async () => {
    const gw = await gateway({});
    let calls = 0;
    const { client, rec } = openClient(gw.wsUrl, { token: token(), getToken: () => (calls++, mintToken({ sub: "x" })) });
    await waitFor(() => client.state === "open", "connected with the fresh token");
    assert.equal(calls, 1);
    assert.equal(rec.opens[0].user, "x");
    assert.equal(rec.urls.length, 2);
    assert.deepEqual(rec.errors, []);
    assert.deepEqual([rec.closes[0].status, rec.closes[0].willReconnect], [401, true]);
  });
}

test("a refused upgrade whose fresh token is refused too: two attempts, then stop (no loop)", { timeout: 30000 }, async () => {
  const gw = await gateway({});
  let calls = 0;
  const bad = () => mintToken({ sub: "mallory" }, `${SECRET}-wrong`);
  const { client, rec } = openClient(gw.wsUrl, { token: bad(), getToken: () => (calls++, bad()) });
  await waitFor(() => client.state === "closed", "stopped");
  assert.deepEqual(rec.errors.map((e) => [e.code, e.status, e.fatal]), [["upgrade_refused", 401, true]]);
  await sleep(800); // with backoff 50..400 ms a loop would have retried several times
  assert.equal(calls, 1);
  assert.equal(rec.urls.length, 2);
  assert.equal(await authFailures(gw), 2);
});

test("a refused upgrade with a browser-like WebSocket (no HTTP status) and a token that is not a JWT stops at once too", { timeout: 30000 }, async () => {
  const gw = await gateway({});
  const { client, rec } = openClient(gw.wsUrl, { token: "bad" }, BrowserLikeWebSocket);
  await waitFor(() => client.state === "closed", "stopped");
  assert.equal(rec.errors[0].code, "upgrade_refused");
  assert.equal(rec.errors[0].status, undefined);
  await sleep(1000); // a reconnect would come within initialMs (500 ms) plus a handshake
  assert.equal(rec.urls.length, 1);
});

test("application ping keeps a live connection; a frozen gateway is detected and left", { timeout: 40000 }, async () => {
  const gw = await gateway({ instanceId: "gw-ping" });
  const { client, rec } = openClient(gw.wsUrl, {
    token: mintToken({ sub: "gina" }),
    pingIntervalMs: 200,
    pongTimeoutMs: 400,
    connectTimeoutMs: 1000,
  });
  let frozen = false;
  try {
    await waitFor(() => client.state === "open", "connection");
    await sleep(1500); // ~7 pings answered by pongs
    assert.equal(rec.opens.length, 1);
    assert.equal(rec.errors.length, 0);

    gw.freeze(); // SIGSTOP: the TCP connection stays up but nothing answers
    frozen = true;
    await waitFor(() => rec.errors.some((e) => e.code === "ping_timeout"), "ping timeout", 5000);
    assert.notEqual(client.state, "open");
    assert.notEqual(client.state, "closed");
    gw.thaw();
    frozen = false;
    await waitFor(() => rec.opens.length === 2, "reconnected after the thaw", 10000);
    assert.equal(client.state, "open");
  } finally {
    if (frozen) gw.thaw();
    client.close();
  }
});

test("close() stops everything: the socket goes, no reconnect follows", { timeout: 30000 }, async () => {
  const gw = await gateway({ instanceId: "gw-close" });
  const { client, rec } = openClient(gw.wsUrl, { token: mintToken({ sub: "hank" }) });
  await waitFor(() => client.state === "open", "connection");
  await waitFor(async () => (await gw.stats()).local_connections === 1, "gateway sees the connection");
  client.close();
  assert.equal(client.state, "closed");
  assert.equal(rec.closes.at(-1).willReconnect, false);
  await waitFor(async () => (await gw.stats()).local_connections === 0, "gateway sees it gone");
  const id = await gw.publish({ type: "after.close" });
  await sleep(1000); // a reconnect would come within initialMs (500 ms) plus a handshake
  assert.equal(rec.urls.length, 1, "no reconnect");
  assert.ok(!rec.events.some((e) => e.id === id));
  client.close(); // idempotent

  // close() while the client is waiting to reconnect also stops it
  const gw2 = await gateway({ instanceId: "gw-close-2" });
  const { client: c2, rec: r2 } = openClient(gw2.wsUrl, { token: mintToken({ sub: "hank" }), backoff: { initialMs: 300, maxMs: 300 } });
  await waitFor(() => c2.state === "open", "second client open");
  await gw2.stop("SIGKILL");
  await waitFor(() => c2.state === "reconnecting" || r2.urls.length > 1, "reconnecting");
  c2.close();
  const n = r2.urls.length;
  await sleep(800);
  assert.equal(r2.urls.length, n, "no attempt after close()");
  assert.equal(c2.state, "closed");
});

test("works on the runtime's own WebSocket too (undici in Node), not only the ws package", { timeout: 60000 }, async () => {
  const { execFile } = await import("node:child_process");
  const { fileURLToPath } = await import("node:url");
  const script = fileURLToPath(new URL("../testing/native-websocket-check.mjs", import.meta.url));
  // Node 22+ has a global WebSocket; Node 20 has it behind a flag.
  const flags = typeof globalThis.WebSocket === "function" ? [] : ["--experimental-websocket", "--no-warnings"];
  const stdout = await new Promise((res, rej) =>
    execFile(process.execPath, [...flags, script], { timeout: 50000 }, (err, out, errOut) =>
      err ? rej(new Error(`${err.message}\n${errOut}`)) : res(out),
    ),
  );
  const r = JSON.parse(stdout.trim().split("\n").at(-1));
  assert.equal(r.websocket, "function");
  assert.equal(r.instance, "native-1");
  assert.deepEqual(r.data, { n: 1 });
  assert.deepEqual(r.refused, { errors: ["upgrade_refused"], attempts: 1 });
  assert.deepEqual(r.closes[0], [1001, "shutdown", true]);
  assert.equal(r.reconnectedTo, "native-2");
  assert.equal(r.finalState, "closed");
});
