// End to end: Debian's headless Chromium opens the /demo page on each of two gateway
// instances that share one Redis; an event POSTed to the first reaches both pages.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { REPO_ROOT, SECRET, mintToken, startGateway, startRedis, waitFor } from "../../js/testing/harness.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = resolve(here, "../artifacts");
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
  // A page answered by a route (servePageFromDisk) has no server address, so Chromium's Local
  // Network Access checks would block its WebSocket to 127.0.0.1; the gateway's own pages are
  // on loopback and never hit them.
  "--disable-features=LocalNetworkAccessChecks",
];

// The page and the client it loads, as they are in the work tree.
const PAGE_HTML = readFileSync(resolve(REPO_ROOT, "clients/demo/index.html"), "utf8");
const CLIENT_JS = readFileSync(resolve(REPO_ROOT, "clients/js/wsgate.js"), "utf8");
// The gateway serves the page and the client it was built with. WSGATE_E2E_PAGE_FROM_DISK=1
// serves those of the work tree to the browser instead (a route in front of the gateway), to
// test them with a gateway binary built before they changed; the staleness test is skipped then.
const PAGE_FROM_DISK = process.env.WSGATE_E2E_PAGE_FROM_DISK === "1";

/** Answers the page's requests for `<anything>/demo[/]` and `<anything>/demo/wsgate.js` on `origin` with the work tree's files. */
async function servePageFromDisk(page, origin) {
  await page.route(
    (url) => url.origin === origin && /\/demo(\/|\/wsgate\.js)?$/.test(url.pathname),
    (route) => {
      const js = new URL(route.request().url()).pathname.endsWith("/wsgate.js");
      return route.fulfill({
        status: 200,
        contentType: js ? "text/javascript; charset=utf-8" : "text/html; charset=utf-8",
        body: js ? CLIENT_JS : PAGE_HTML,
      });
    },
  );
}

async function newPage(gw, options) {
  const page = await browser.newPage(options);
  if (PAGE_FROM_DISK) await servePageFromDisk(page, gw.http);
  return page;
}

let redis;
let gwA;
let gwB;
let browser;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y chromium (clients/test.sh does)`);
  redis = await startRedis();
  const env = { HEARTBEAT_INTERVAL_MS: "500" };
  gwA = await startGateway({ redisUrl: redis.url, instanceId: "gw-a", env });
  gwB = await startGateway({ redisUrl: redis.url, instanceId: "gw-b", env });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true, timeout: 30000 });
});

after(async () => {
  await browser?.close().catch(() => {});
  for (const p of [gwA, gwB, redis]) await p?.stop("SIGTERM");
});

async function openDemo(gw, user, setup, path = "/demo") {
  const page = await newPage(gw, { viewport: { width: 1100, height: 860 } });
  await setup?.(page);
  const problems = [];
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
  page.on("requestfailed", (r) => problems.push(`requestfailed: ${r.url()}`));
  page.on("response", (r) => r.status() >= 400 && problems.push(`HTTP ${r.status()}: ${r.url()}`));
  // Nothing but the gateway itself may be asked for (no CDN, no fonts).
  page.on("request", (r) => {
    if (!r.url().startsWith(gw.http) && !r.url().startsWith(gw.http.replace("http", "ws"))) {
      problems.push(`external request: ${r.url()}`);
    }
  });
  await page.goto(`${gw.http}${path}?token=${encodeURIComponent(mintToken({ sub: user }))}`);
  return { page, problems };
}

test("the served client is the one in clients/js (the binary is not stale)", { timeout: 20000, skip: PAGE_FROM_DISK && "WSGATE_E2E_PAGE_FROM_DISK=1: the browser gets the work tree's files, not the binary's" }, async () => {
  const served = await (await fetch(`${gwA.http}/demo/wsgate.js`)).text();
  const onDisk = readFileSync(resolve(REPO_ROOT, "clients/js/wsgate.js"), "utf8");
  assert.ok(served === onDisk, "target/debug/wsgate serves an old clients/js/wsgate.js: run `cargo build -p wsgate`");
  const page = await (await fetch(`${gwA.http}/demo`)).text();
  assert.equal(page, readFileSync(resolve(REPO_ROOT, "clients/demo/index.html"), "utf8"));
});

test("two instances, one page on each: an event POSTed to the first shows on both", { timeout: 90000 }, async () => {
  const a = await openDemo(gwA, "alice");
  const b = await openDemo(gwB, "bob");
  for (const [p, id] of [[a.page, "gw-a"], [b.page, "gw-b"]]) {
    await p.locator("#state").filter({ hasText: /^open$/ }).waitFor({ timeout: 15000 });
    await p.locator("#instance").filter({ hasText: id }).waitFor({ timeout: 5000 });
  }
  // Fleet figures from /ws/stats (polled every second; heartbeats every 500 ms).
  for (const p of [a.page, b.page]) {
    await p.locator("#total-instances").filter({ hasText: /^2$/ }).waitFor({ timeout: 15000 });
    await p.locator("#total-connections").filter({ hasText: /^2$/ }).waitFor({ timeout: 15000 });
    await p.locator("#local-connections").filter({ hasText: /^1$/ }).waitFor({ timeout: 15000 });
  }

  const data = { task: 42, state: "done", by: "e2e" };
  const id = await gwA.publish({ type: "task.updated", data });
  for (const p of [a.page, b.page]) {
    const li = p.locator(`#events li[data-id="${id}"]`);
    await li.waitFor({ timeout: 10000 });
    assert.equal(await li.getAttribute("data-type"), "task.updated");
    assert.deepEqual(JSON.parse(await li.locator(".data").textContent()), data);
  }

  // A few more through either instance, newest first on both pages.
  const id2 = await gwB.publish({ type: "notice", data: "deploy finished" });
  const id3 = await gwA.publish({ type: "task.created", data: { task: 43, title: "write the docs" } });
  for (const p of [a.page, b.page]) {
    await p.locator(`#events li[data-id="${id3}"]`).waitFor({ timeout: 10000 });
    const ids = await p.locator("#events li").evaluateAll((lis) => lis.map((li) => li.dataset.id));
    assert.deepEqual(ids, [id3, id2, id]);
  }
  assert.equal(await a.page.locator("#redis").textContent(), "connected");

  mkdirSync(ARTIFACTS, { recursive: true });
  await a.page.screenshot({ path: resolve(ARTIFACTS, "demo.png"), fullPage: true, animations: "disabled" });
  await b.page.screenshot({ path: resolve(ARTIFACTS, "demo-b.png"), fullPage: true, animations: "disabled" });

  assert.deepEqual(a.problems, []);
  assert.deepEqual(b.problems, []);
  await a.page.close();
  await b.page.close();
});

test("a dropped connection: the page reconnects and says whether it resumed", { timeout: 60000 }, async () => {
  for (const gw of [gwA, gwB]) await waitFor(async () => (await gw.stats()).redis_state === "connected", "Redis connected");
  // An event before the page opens (to nobody it can see), so the stream has a position and
  // `connected` carries `last_id` whatever ran before this test.
  await gwA.publish({ type: "earlier", data: 0, users: ["nobody"] });
  // Every WebSocket of the page goes through this proxy, so the test can cut one off: stop
  // passing the gateway's frames on (those events are missed), then close it.
  const links = [];
  const { page, problems } = await openDemo(gwA, "alice", (p) =>
    p.routeWebSocket(/\/ws\/tasks/, (ws) => {
      const link = { ws, server: ws.connectToServer(), forward: true };
      link.server.onMessage((m) => link.forward && ws.send(m));
      links.push(link);
    }),
  );
  const cut = () => {
    const link = links.at(-1);
    link.forward = false;
    return () => {
      link.ws.close({ code: 1001, reason: "test" });
      link.server.close();
    };
  };
  const state = page.locator("#state");
  const resume = page.locator("#resume");
  await state.filter({ hasText: /^open$/ }).waitFor({ timeout: 15000 });
  assert.equal(await resume.textContent(), "");

  // Cut before any event reached the page: it resumes from the `last_id` of `connected`, so an
  // event published while it is away still arrives.
  const closeFirst = cut();
  const early = await gwB.publish({ type: "missed", data: 1 });
  closeFirst();
  await resume.filter({ hasText: /^resumed \(1 missed event\)$/ }).waitFor({ timeout: 10000 });
  await page.locator(`#events li[data-id="${early}"]`).waitFor({ timeout: 10000 });
  assert.equal(await state.textContent(), "open");
  assert.equal(links.length, 2);

  const first = await gwA.publish({ type: "before", data: 1 });
  await page.locator(`#events li[data-id="${first}"]`).waitFor({ timeout: 10000 });
  const close = cut();
  const missed = [await gwB.publish({ type: "missed", data: 2 }), await gwA.publish({ type: "missed", data: 3, users: ["alice"] })];
  close();
  await resume.filter({ hasText: /^resumed \(2 missed events\)$/ }).waitFor({ timeout: 10000 });
  const ids = await page.locator("#events li").evaluateAll((lis) => lis.map((li) => li.dataset.id));
  assert.deepEqual(ids, [missed[1], missed[0], first, early]);
  assert.equal(await state.textContent(), "open");
  assert.equal(new URL(links.at(-1).ws.url()).searchParams.get("since"), first);
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: resolve(ARTIFACTS, "demo-resumed.png"), animations: "disabled" });
  assert.deepEqual(problems, []);
  await page.close();
});

test("the gateway's resync frame: the page shows a notice, logs it, and stays connected", { timeout: 60000 }, async () => {
  // The frame is injected by a proxy in front of the page's WebSocket, as the gateway sends it
  // when Redis lost events (clients/js/test/resync-e2e.test.mjs provokes the real one).
  const links = [];
  const { page, problems } = await openDemo(gwA, "alice", (p) =>
    p.routeWebSocket(/\/ws\/tasks/, (ws) => {
      const link = { ws, server: ws.connectToServer() };
      link.server.onMessage((m) => ws.send(m));
      links.push(link);
    }),
  );
  const notice = page.locator("#notice");
  await page.locator("#state").filter({ hasText: /^open$/ }).waitFor({ timeout: 15000 });
  const before = await gwA.publish({ type: "before", data: 1 });
  await page.locator(`#events li[data-id="${before}"]`).waitFor({ timeout: 10000 });
  assert.equal(await notice.isVisible(), false);

  links.at(-1).ws.send(JSON.stringify({ type: "resync", reason: "redis_data_lost" }));
  await notice.filter({ hasText: "Events may have been lost (redis_data_lost): reloading state" }).waitFor({ state: "visible", timeout: 5000 });
  assert.equal(await notice.getAttribute("data-kind"), "resync");
  const logged = page.locator('#events li.system[data-kind="resync"]');
  await logged.waitFor({ timeout: 5000 });
  assert.match(await logged.textContent(), /Events may have been lost \(redis_data_lost\): reloading state/);
  assert.equal(await page.locator("#resume").textContent(), "resync needed");
  // Not an event, no reconnection: live events keep coming on the same connection.
  const after = await gwB.publish({ type: "after", data: 2 });
  await page.locator(`#events li[data-id="${after}"]`).waitFor({ timeout: 10000 });
  const rows = await page.locator("#events li").evaluateAll((lis) => lis.map((li) => li.dataset.id ?? li.dataset.kind));
  assert.deepEqual(rows, [after, "resync", before]);
  assert.equal(await page.locator("#state").textContent(), "open");
  assert.equal(links.length, 1);
  assert.equal(await page.evaluate(() => window.wsgateClient.lastEventId), after);
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: resolve(ARTIFACTS, "demo-resync.png"), animations: "disabled" });
  assert.deepEqual(problems, []);
  await page.close();
});

test("a bad token in the page: the client stops and says so (no retry loop)", { timeout: 30000 }, async () => {
  const page = await newPage(gwA);
  let upgrades = 0;
  page.on("websocket", () => upgrades++);
  await page.goto(`${gwA.http}/demo?token=not-a-valid-token`);
  await page.locator("#state").filter({ hasText: /^closed$/ }).waitFor({ timeout: 10000 });
  await page.locator("#notice").filter({ hasText: /refused/ }).waitFor({ timeout: 5000 });
  await page.waitForTimeout(1500);
  assert.equal(upgrades, 1, "exactly one WebSocket attempt");
  await page.close();
});

test("without a token the page explains how to get one", { timeout: 30000 }, async () => {
  const page = await newPage(gwA);
  await page.goto(`${gwA.http}/demo`);
  await page.locator("#notice").filter({ hasText: /No token/ }).waitFor({ timeout: 5000 });
  assert.equal(await page.locator("#state").textContent(), "closed");
  await page.close();
});

test("the page builds every URL on its own origin: opened at //evil.example/demo it loads the client from, and connects to, its own gateway", { timeout: 30000 }, async () => {
  // The gateway does not serve that path; a reverse proxy might. The page comes from the work
  // tree through a route; its script would import //evil.example/demo/wsgate.js if it built
  // URLs from the path (the `problems` of openDemo catch any request off the gateway).
  const evil = `${gwA.http}//evil.example/demo`;
  const asked = [];
  const { page, problems } = await openDemo(gwA, "alice", async (p) => {
    p.on("request", (r) => asked.push(new URL(r.url()).pathname));
    await p.route((url) => url.href.startsWith(evil), (route) => route.fulfill({ status: 200, contentType: "text/html; charset=utf-8", body: PAGE_HTML }));
  }, "//evil.example/demo");
  assert.equal(new URL(page.url()).pathname, "//evil.example/demo");
  await page.locator("#state").filter({ hasText: /^open$/ }).waitFor({ timeout: 15000 });
  await page.locator("#instance").filter({ hasText: "gw-a" }).waitFor({ timeout: 5000 });
  await waitFor(() => asked.includes("/ws/stats"), "the stats poll, at the root of this origin");
  assert.ok(asked.includes("/demo/wsgate.js"), `the client from this origin's /demo/wsgate.js: ${asked}`);
  const id = await gwA.publish({ type: "task.updated", data: { via: "own origin" } });
  await page.locator(`#events li[data-id="${id}"]`).waitFor({ timeout: 10000 });
  assert.deepEqual(problems, []);
  await page.close();
});

test("a page opened while the gateway is down keeps trying, says so, and connects once it is up", { timeout: 60000 }, async () => {
  // A gateway that has come and gone leaves a port with nothing on it; the page (from the work
  // tree, as there is no gateway to serve it) is opened there, then a gateway starts on it.
  const probe = await startGateway({ instanceId: "gw-later-probe" });
  const port = probe.port;
  await probe.stop("SIGTERM");
  const origin = `http://127.0.0.1:${port}`;
  const page = await browser.newPage();
  await servePageFromDisk(page, origin);
  let upgrades = 0;
  page.on("websocket", () => upgrades++);
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  let later;
  try {
    await page.goto(`${origin}/demo?token=${encodeURIComponent(mintToken({ sub: "alice" }))}`);
    const notice = page.locator("#notice");
    await notice.filter({ hasText: /Cannot connect yet \(attempt 2\): the gateway may be starting or being deployed, or it refuses the token/ }).waitFor({ timeout: 15000 });
    assert.equal(await notice.getAttribute("data-kind"), "retry");
    assert.notEqual(await page.locator("#state").textContent(), "closed");
    later = await startGateway({ port, instanceId: "gw-later" });
    await page.locator("#state").filter({ hasText: /^open$/ }).waitFor({ timeout: 20000 });
    await page.locator("#instance").filter({ hasText: "gw-later" }).waitFor({ timeout: 5000 });
    assert.equal(await notice.isVisible(), false, "the notice goes once connected");
    assert.ok(upgrades >= 3, `several attempts (${upgrades})`);
    const id = await later.publish({ type: "task.updated", data: { after: "deploy" } });
    await page.locator(`#events li[data-id="${id}"]`).waitFor({ timeout: 10000 });
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
    await later?.stop("SIGTERM");
  }
});

test("a well-formed token the gateway refuses: the browser cannot see the 401, so the page keeps retrying and says the token may be why", { timeout: 30000 }, async () => {
  const page = await newPage(gwA);
  await page.goto(`${gwA.http}/demo?token=${encodeURIComponent(mintToken({ sub: "alice" }, `${SECRET}-wrong`))}`);
  await page.locator("#notice").filter({ hasText: /Cannot connect yet \(attempt 1\).*refuses the token/ }).waitFor({ timeout: 10000 });
  assert.notEqual(await page.locator("#state").textContent(), "closed");
  await page.close();
});

test("an operator revokes the user (close 4001): the page says so, stops, and does not reconnect", { timeout: 30000 }, async () => {
  let upgrades = 0;
  const { page, problems } = await openDemo(gwA, "revoked-user", (p) => p.on("websocket", () => upgrades++));
  await page.locator("#state").filter({ hasText: /^open$/ }).waitFor({ timeout: 15000 });
  const r = await fetch(`${gwA.http}/api/users/revoked-user/disconnect`, {
    method: "POST",
    headers: { Authorization: `Bearer ${mintToken({ sub: "ops", scope: "admin" })}` },
  });
  assert.deepEqual([r.status, await r.json()], [200, { user: "revoked-user", disconnected: 1 }]);
  const notice = page.locator("#notice");
  await notice.filter({ hasText: "Access revoked by an operator for revoked-user" }).waitFor({ state: "visible", timeout: 5000 });
  assert.equal(await notice.getAttribute("data-kind"), "revoked");
  await page.locator("#state").filter({ hasText: /^closed$/ }).waitFor({ timeout: 5000 });
  await page.locator('#events li.system[data-kind="revoked"]').waitFor({ timeout: 5000 });
  await page.waitForTimeout(1500); // the first retry would come within 500 ms
  assert.equal(upgrades, 1, "no WebSocket after the revoked one");
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: resolve(ARTIFACTS, "demo-revoked.png"), animations: "disabled" });
  assert.deepEqual(problems, []);
  await page.close();
});
