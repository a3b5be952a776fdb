// Every wsgate and redis-server the harness starts dies with the test process, also when that
// process is SIGKILLed (no 'exit' handler runs) or its runner (`node --test`) dies: see
// `spawn` and the runner watch in testing/harness.mjs. Each test runs a child Node that starts
// a gateway and a Redis with the harness and reports their PIDs, kills the child (or the shell
// standing in for its runner) with SIGKILL, and insists that all of them are gone within a few
// seconds. Without the mechanism they would live on.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const HARNESS = fileURLToPath(new URL("../testing/harness.mjs", import.meta.url));
const DEATH_MS = 5000;

// The child: starts both, prints `{"helper": pid, "wsgate": pid, "redis": pid}`, then waits
// (60 s at most: it ends on its own too).
const CHILD = `
  const h = await import(${JSON.stringify(HARNESS)});
  const gw = await h.startGateway({ instanceId: "orphan" });
  const redis = await h.startRedis();
  console.log(JSON.stringify({ helper: process.pid, wsgate: gw.pid, redis: redis.pid }));
  setTimeout(() => {}, 60000);
`;

/** Field 22 of /proc/PID/stat (start time): tells a reused PID from the process we saw. */
function startTime(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[22 - 3];
  } catch {
    return null;
  }
}

function running({ pid, start }) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat[stat.lastIndexOf(")") + 2] !== "Z" && startTime(pid) === start;
  } catch {
    return false;
  }
}

/** Starts `argv` (the child, or a shell running it) and resolves with the processes it reports. */
function startHelper(argv) {
  const proc = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  proc.stderr.setEncoding("utf8").on("data", (c) => (err += c));
  return new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`no PIDs within 30 s; stderr:\n${err}`)), 30000);
    proc.stdout.setEncoding("utf8").on("data", (c) => {
      out += c;
      const line = out.split("\n").find((l) => l.startsWith("{"));
      if (line && out.includes("\n")) {
        clearTimeout(timer);
        const pids = JSON.parse(line);
        const procs = Object.entries(pids).map(([what, pid]) => ({ what, pid, start: startTime(pid) }));
        res({ proc, procs });
      }
    });
    proc.once("exit", (code, sig) => {
      clearTimeout(timer);
      rej(new Error(`the helper ended (${code ?? sig}) before reporting; stderr:\n${err}`));
    });
  });
}

async function assertAllDie(procs, context) {
  const until = Date.now() + DEATH_MS;
  while (procs.some(running) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  const survivors = procs.filter(running);
  for (const p of survivors) process.kill(p.pid, "SIGKILL"); // ours: the helper started them
  assert.deepEqual(survivors, [], `still running ${DEATH_MS} ms after ${context}`);
}

function exited(proc) {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((res) => proc.once("exit", res));
}

test("a SIGKILLed test process takes its gateway and Redis with it", { timeout: 60000 }, async () => {
  const { proc, procs } = await startHelper([process.execPath, "--input-type=module", "-e", CHILD]);
  assert.deepEqual(procs.map((p) => p.what), ["helper", "wsgate", "redis"]);
  assert.ok(procs.every(running), JSON.stringify(procs));
  process.kill(proc.pid, "SIGKILL");
  await exited(proc);
  await assertAllDie(procs, "the test process was SIGKILLed");
});

test("a test process whose runner dies exits and takes its children with it", { timeout: 60000 }, async () => {
  // The shell stands in for `node --test`: the helper is its child, and the shell is killed.
  const { proc, procs } = await startHelper(["sh", "-c", '"$@" & wait', "sh", process.execPath, "--input-type=module", "-e", CHILD]);
  assert.deepEqual(procs.map((p) => p.what), ["helper", "wsgate", "redis"]);
  assert.ok(procs.every(running), JSON.stringify(procs));
  process.kill(proc.pid, "SIGKILL");
  await exited(proc);
  await assertAllDie(procs, "the test process's runner was SIGKILLed");
});
