// End to end: examples/task-progress in Debian's headless Chromium. The gateway (harness) and the
// example's Python backend run on ephemeral loopback ports; two users sign in on two pages;
// alice starts a job and sees every step in order, then "done"; bob sees none of it.
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { REPO_ROOT, SECRET, spawn, startGateway } from "../../js/testing/harness.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = resolve(here, "../artifacts");
const APP = resolve(REPO_ROOT, "examples/task-progress/app.py");
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
// The Python that has the wsgate client installed (clients/test.sh sets WSGATE_PYTHON).
const VENV_PYTHON = resolve(REPO_ROOT, "clients/python/.venv/bin/python");
const PYTHON = process.env.WSGATE_PYTHON ?? (existsSync(VENV_PYTHON) ? VENV_PYTHON : "python3");
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];
const STEPS = 6;

let gw;
let backend;
let browser;

/** Starts the example's backend on port 0; resolves once it prints its address. */
async function startBackend(gatewayUrl) {
  const env = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    JWT_SECRET: SECRET,
    WSGATE_URL: gatewayUrl,
    PORT: "0",
    PYTHONUNBUFFERED: "1",
  };
  const child = spawn(PYTHON, [APP], { env, stdio: ["ignore", "pipe", "pipe"] });
  // Last resort if the test crashes: kill it by PID (it also dies with this process: setpriv).
  const killIt = () => {
    try {
      process.kill(child.pid, "SIGKILL");
    } catch {
      /* gone */
    }
  };
  process.once("exit", killIt);
  let out = "";
  const url = await new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`the backend did not start within 20 s; output:\n${out}`)), 20000);
    const onData = (chunk) => {
      out += chunk;
      if (out.length > 200000) out = out.slice(-100000);
      const m = /task-progress listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        res(m[1]);
      }
    };
    child.stdout.setEncoding("utf8").on("data", onData);
    child.stderr.setEncoding("utf8").on("data", onData);
    child.once("exit", (code, sig) => {
      clearTimeout(timer);
      rej(new Error(`the backend exited (${code ?? sig}) before listening (python: ${PYTHON}); output:\n${out}`));
    });
  });
  const exited = new Promise((res) => child.once("exit", res));
  return {
    url,
    output: () => out,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      process.kill(child.pid, "SIGTERM");
      const t = setTimeout(killIt, 5000);
      await exited;
      clearTimeout(t);
    },
  };
}

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y chromium (clients/test.sh does)`);
  gw = await startGateway({ instanceId: "gw-tasks" });
  backend = await startBackend(gw.http);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true, timeout: 30000 });
});

after(async () => {
  await browser?.close().catch(() => {});
  await backend?.stop();
  await gw?.stop("SIGTERM");
});

/** A fresh browser context (its own storage) with `user` signed in and the page connected. */
async function signIn(user) {
  const context = await browser.newContext({ viewport: { width: 900, height: 760 } });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
  page.on("requestfailed", (r) => problems.push(`requestfailed: ${r.url()}`));
  page.on("response", (r) => r.status() >= 400 && problems.push(`HTTP ${r.status()}: ${r.url()}`));
  // The page talks to its backend and to the gateway's WebSocket, nothing else (no CDN).
  page.on("request", (r) => {
    const u = r.url();
    if (!u.startsWith(backend.url) && !u.startsWith(gw.wsUrl)) problems.push(`unexpected request: ${u}`);
  });
  await page.goto(`${backend.url}/?delay_ms=150`);
  await page.locator("#name").fill(user);
  await page.locator("#login").click();
  await page.locator("#who").filter({ hasText: new RegExp(`^${user}$`) }).waitFor({ timeout: 10000 });
  await page.locator("#state").filter({ hasText: /^open$/ }).waitFor({ timeout: 15000 });
  assert.equal(await page.locator("#start").isEnabled(), true);
  // Every change of the status line, with the progress bar as it stood then: a step lasts
  // 150 ms, too short to be sure to catch each one by polling the page.
  await page.evaluate(() => {
    const status = document.getElementById("status");
    const bar = document.getElementById("bar");
    window.statusSeen = [];
    new MutationObserver(() => window.statusSeen.push(`${status.textContent} [${bar.value}/${bar.max}]`)).observe(status, {
      childList: true,
      characterData: true,
      subtree: true,
    });
  });
  return { context, page, problems };
}

const logOf = (page) =>
  page.locator("#log li").evaluateAll((lis) => lis.map((li) => ({ type: li.dataset.type, job: li.dataset.job, step: li.dataset.step ?? null })));

async function runJob(page, steps) {
  await page.locator("#steps").fill(String(steps));
  await page.locator("#start").click();
  await page.locator('#status[data-done="true"]').filter({ hasText: /^done$/ }).waitFor({ timeout: 20000 });
  return page.locator("#status").getAttribute("data-job");
}

test("alice's job: every step in order, then done; bob's page gets none of it", { timeout: 90000 }, async () => {
  const alice = await signIn("alice");
  const bob = await signIn("bob");

  // While alice's job runs, her page shows each step as it comes.
  await alice.page.locator("#steps").fill(String(STEPS));
  await alice.page.locator("#start").click();
  assert.equal(await alice.page.locator("#start").isDisabled(), true, "one job at a time");
  await alice.page.locator('#status[data-done="true"]').filter({ hasText: /^done$/ }).waitFor({ timeout: 20000 });
  // The bar moved one step per event, in order, then "done" (a "job … started" line may come
  // first, or not, depending on whether the POST's answer beat the first event).
  const seen = (await alice.page.evaluate(() => window.statusSeen)).filter((s) => !/^job .* started/.test(s));
  assert.deepEqual(seen, [
    ...Array.from({ length: STEPS }, (_, i) => `step ${i + 1} of ${STEPS} [${i + 1}/${STEPS}]`),
    `done [${STEPS}/${STEPS}]`,
  ]);
  const aliceJob = await alice.page.locator("#status").getAttribute("data-job");
  assert.match(aliceJob, /^job-[0-9a-f]{8}$/);

  const expected = (job, n) => [
    ...Array.from({ length: n }, (_, i) => ({ type: "job.progress", job, step: String(i + 1) })),
    { type: "job.done", job, step: null },
  ];
  assert.deepEqual(await logOf(alice.page), expected(aliceJob, STEPS));
  assert.equal(await alice.page.locator("#bar").evaluate((b) => [b.value, b.max].join("/")), `${STEPS}/${STEPS}`);
  assert.equal(await alice.page.locator("#start").isEnabled(), true);

  // Bob's page is connected and works (his own job comes through: the marker), and of alice's
  // events it got none, before or after it.
  const bobJob = await runJob(bob.page, 3);
  assert.notEqual(bobJob, aliceJob);
  assert.deepEqual(await logOf(bob.page), expected(bobJob, 3));
  // ...and bob's job did not reach alice.
  await alice.page.waitForTimeout(500);
  assert.deepEqual(await logOf(alice.page), expected(aliceJob, STEPS));

  mkdirSync(ARTIFACTS, { recursive: true });
  await alice.page.screenshot({ path: resolve(ARTIFACTS, "task-progress-alice.png"), fullPage: true, animations: "disabled" });
  await bob.page.screenshot({ path: resolve(ARTIFACTS, "task-progress-bob.png"), fullPage: true, animations: "disabled" });
  assert.deepEqual(alice.problems, []);
  assert.deepEqual(bob.problems, []);
  await alice.context.close();
  await bob.context.close();
});

test("the backend: jobs need a token it minted, names are checked", { timeout: 20000 }, async () => {
  const post = (path, body, token) =>
    fetch(`${backend.url}${path}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify(body),
    });
  assert.equal((await post("/jobs", { steps: 1 })).status, 401);
  assert.equal((await post("/jobs", { steps: 1 }, "not-a-token")).status, 401);
  assert.equal((await post("/login", { name: "no spaces please" })).status, 400);
  const session = await (await post("/login", { name: "carol" })).json();
  assert.equal(session.user, "carol");
  assert.equal(session.ws_url, gw.wsUrl);
  assert.equal((await post("/jobs", { steps: 0 }, session.token)).status, 400);
  const ok = await post("/jobs", { steps: 1, delay_ms: 0 }, session.token);
  assert.equal(ok.status, 202);
  assert.match((await ok.json()).job_id, /^job-/);
  // The page's JS client, served by the backend (the gateway's /demo/wsgate.js has no CORS headers).
  const js = await fetch(`${backend.url}/wsgate.js`);
  assert.equal(js.status, 200);
  assert.match(await js.text(), /export function connect/);
});
