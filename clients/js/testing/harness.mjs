// Test harness shared by the client tests (clients/js/test) and the end-to-end test
// (clients/e2e): mints HS256 tokens, starts the real gateway binary and redis-server on
// loopback ports, and stops exactly the processes it started (by PID).
//
// Kept outside test/ because `node --test test/` runs every .mjs file under test/.

import { spawn as spawnChild } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = resolve(here, "../../..");
export const GATEWAY_BIN = process.env.WSGATE_BIN ?? resolve(REPO_ROOT, "target/debug/wsgate");
export const SECRET = "wsgate-client-test-secret-0123456789abcdef";

const b64url = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

/** An HS256 JWT. `exp` defaults to an hour from now; pass `exp` (unix seconds) to override. */
export function mintToken(claims = {}, secret = SECRET) {
  const body = { sub: "alice", exp: Math.floor(Date.now() / 1000) + 3600, ...claims };
  const head = b64url({ alg: "HS256", typ: "JWT" });
  const payload = b64url(body);
  const sig = createHmac("sha256", secret).update(`${head}.${payload}`).digest("base64url");
  return `${head}.${payload}.${sig}`;
}

export const publishToken = () => mintToken({ sub: "test-publisher", scope: "publish" });

/**
 * A port that was free a moment ago on 127.0.0.1: racy, anyone may bind it first. Node cannot
 * hold a port without listening on it, so startRedis treats a taken port as a collision to
 * retry (Redis says "Address already in use"), and gateways bind port 0 and report it.
 */
export function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", rej);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value; throws `what` after `timeoutMs`. */
export async function waitFor(fn, what = "condition", timeoutMs = 10000, everyMs = 20) {
  const until = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last.message}` : ""}`);
    await sleep(everyMs);
  }
}

// Children die with this process, however it dies: each is started through
// `setpriv --pdeathsig KILL` (prctl(PR_SET_PDEATHSIG) before exec; Node forks on its main
// thread, which lives as long as the process). And this process dies with its runner: when
// its parent (`node --test`, which runs each test file in a child process) is gone, it exits.
// test/orphans.test.mjs proves both.
const SETPRIV = ["/usr/bin/setpriv", "/bin/setpriv"].find((p) => existsSync(p));

/** `child_process.spawn` for a child that cannot outlive this process. */
export function spawn(cmd, args, options) {
  if (!SETPRIV) throw new Error("setpriv (util-linux) is missing: it ties the test's children to its life");
  return spawnChild(SETPRIV, ["--pdeathsig", "KILL", "--", cmd, ...args], options);
}

const runner = process.ppid;
setInterval(() => {
  if (process.ppid !== runner) {
    process.stderr.write(`harness: the runner (pid ${runner}) is gone; exiting\n`);
    process.exit(1);
  }
}, 250).unref();

const live = new Set();
process.on("exit", () => {
  // Last resort if a test crashed: kill what we started, by PID, nothing else.
  for (const child of live) {
    try {
      process.kill(child.pid, "SIGKILL");
    } catch {
      /* gone */
    }
  }
});

function track(child) {
  live.add(child);
  child.once("exit", () => live.delete(child));
  return child;
}

function waitExit(child, ms) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((res) => {
    const t = setTimeout(() => res(false), ms);
    child.once("exit", () => {
      clearTimeout(t);
      res(true);
    });
  });
}

/** Sends `signal` to the child (by its PID) and waits for it to exit; SIGKILL after `graceMs`. */
async function stopChild(child, signal = "SIGTERM", graceMs = 5000) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(child.pid, "SIGCONT"); // in case a test stopped it
    process.kill(child.pid, signal);
  } catch {
    return;
  }
  if (!(await waitExit(child, graceMs))) {
    try {
      process.kill(child.pid, "SIGKILL");
    } catch {
      /* gone */
    }
    await waitExit(child, 5000);
  }
}

/**
 * Starts target/debug/wsgate on 127.0.0.1 (port 0 = ephemeral) and resolves once it logs
 * `listening on http://127.0.0.1:PORT`.
 */
export async function startGateway({ port = 0, redisUrl, instanceId, env = {}, secret = SECRET } = {}) {
  if (!existsSync(GATEWAY_BIN)) {
    throw new Error(`${GATEWAY_BIN} is missing: run \`cargo build -p wsgate\` first (clients/test.sh does)`);
  }
  const childEnv = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    LISTEN_ADDR: `127.0.0.1:${port}`,
    JWT_SECRET: secret,
    RUST_LOG: "info",
    ...(redisUrl ? { REDIS_URL: redisUrl } : {}),
    ...(instanceId ? { INSTANCE_ID: instanceId } : {}),
    ...env,
  };
  const child = track(spawn(GATEWAY_BIN, [], { env: childEnv, stdio: ["ignore", "ignore", "pipe"] }));
  let log = "";
  const boundPort = await new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`gateway did not start within 20 s; log:\n${log}`)), 20000);
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      log += chunk;
      if (log.length > 200000) log = log.slice(-100000);
      const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(log);
      if (m) {
        clearTimeout(timer);
        res(Number(m[1]));
      }
    });
    child.once("exit", (code, sig) => {
      clearTimeout(timer);
      rej(new Error(`gateway exited (${code ?? sig}) before listening; log:\n${log}`));
    });
  });
  const http = `http://127.0.0.1:${boundPort}`;
  return {
    child,
    pid: child.pid,
    port: boundPort,
    http,
    wsUrl: `ws://127.0.0.1:${boundPort}/ws/tasks`,
    log: () => log,
    /** SIGTERM (graceful: sockets get 1001) or SIGKILL, by PID; waits for the exit. */
    stop: (signal = "SIGTERM") => stopChild(child, signal),
    /** Freezes / thaws the process (SIGSTOP / SIGCONT) to simulate a dead peer. */
    freeze: () => process.kill(child.pid, "SIGSTOP"),
    thaw: () => process.kill(child.pid, "SIGCONT"),
    publish: (body, token = publishToken()) => publish(http, body, token),
    stats: async () => (await fetch(`${http}/ws/stats`)).json(),
    metrics: async () => (await fetch(`${http}/metrics`)).text(),
  };
}

/** POST /api/events; resolves to the event id (throws unless 202). */
export async function publish(http, body, token = publishToken()) {
  const r = await fetch(`${http}/api/events`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await r.text();
  if (r.status !== 202) throw new Error(`POST /api/events answered ${r.status}: ${text}`);
  return JSON.parse(text).id;
}

/**
 * A private redis-server on a free loopback port (never 6379), nothing kept on disk. With
 * `port`, on that port (e.g. a fresh, empty Redis where a killed one was).
 */
export async function startRedis({ port: wanted } = {}) {
  let out = "";
  for (let tries = 0; tries < 5; tries++) {
    const port = wanted ?? (await freePort());
    if (port === 6379) continue;
    const child = track(
      spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
        stdio: ["ignore", "pipe", "pipe"],
      }),
    );
    out = "";
    const ok = await new Promise((res) => {
      const timer = setTimeout(() => res(false), 10000);
      const onData = (c) => {
        out += c;
        if (/Ready to accept connections/i.test(out)) {
          clearTimeout(timer);
          res(true);
        }
      };
      child.stdout.setEncoding("utf8").on("data", onData);
      child.stderr.setEncoding("utf8").on("data", onData);
      child.once("exit", () => {
        clearTimeout(timer);
        res(false);
      });
    });
    if (ok) {
      // stop("SIGKILL"): Redis dies at once, losing everything (it keeps nothing on disk anyway).
      return { child, pid: child.pid, port, url: `redis://127.0.0.1:${port}`, stop: (signal = "SIGTERM") => stopChild(child, signal) };
    }
    await stopChild(child, "SIGKILL");
    // Only a taken port is worth another try: a fresh port, or (a restart on a given port)
    // the same one a moment later. Anything else is an error to show.
    if (!/Address already in use/.test(out)) break;
    if (wanted != null) await sleep(200);
  }
  throw new Error(`could not start redis-server${wanted != null ? ` on port ${wanted}` : ""}; its output:\n${out}`);
}
