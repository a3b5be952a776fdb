// The package as npm would publish it: `npm pack` into a temporary directory, the tarball
// installed offline into a scratch project (it has no dependencies, so nothing is fetched),
// imported from Node as an ES module by its name, and type-checked there by tsc with the same
// usage file as test/types.test.mjs. Also: the metadata a registry page shows, and that the
// tarball holds the module and its declarations and nothing of the tests.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { tsc } from "../testing/tsc.mjs";

const PKG_DIR = fileURLToPath(new URL("..", import.meta.url));
const pkg = JSON.parse(readFileSync(join(PKG_DIR, "package.json"), "utf8"));

function run(cmd, args, cwd) {
  return new Promise((res, rej) =>
    execFile(cmd, args, { cwd, timeout: 120000, env: { ...process.env, npm_config_update_notifier: "false", npm_config_fund: "false", npm_config_audit: "false" } }, (err, stdout, stderr) =>
      err ? rej(new Error(`${cmd} ${args.join(" ")} failed: ${err.message}\n${stdout}\n${stderr}`)) : res(stdout),
    ),
  );
}

let tmp;
let tarball;
let packed; // npm pack --json: the file list
let scratch;
before(async () => {
  tmp = mkdtempSync(join(tmpdir(), "wsgate-pack-"));
  const out = await run("npm", ["pack", "--json", "--pack-destination", tmp], PKG_DIR);
  [packed] = JSON.parse(out);
  tarball = join(tmp, packed.filename);
  scratch = join(tmp, "app");
  const { mkdirSync } = await import("node:fs");
  mkdirSync(scratch);
  writeFileSync(join(scratch, "package.json"), JSON.stringify({ name: "scratch-app", version: "1.0.0", private: true, type: "module" }));
  await run("npm", ["install", "--offline", "--no-audit", "--no-fund", "--loglevel=error", tarball], scratch);
});
after(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test("package.json is ready to publish", () => {
  assert.equal(pkg.private, undefined, "not private");
  assert.equal(pkg.name, "wsgate-client");
  assert.match(pkg.version, /^\d+\.\d+\.\d+(-[\w.]+)?$/);
  assert.ok(pkg.description.length > 20);
  assert.equal(pkg.license, "MIT");
  assert.equal(pkg.repository.url, "git+https://github.com/wsgate/wsgate.git");
  assert.equal(pkg.repository.directory, "clients/js");
  assert.match(pkg.homepage, /^https:\/\/github\.com\/wsgate\/wsgate/);
  assert.equal(pkg.bugs.url, "https://github.com/wsgate/wsgate/issues");
  assert.ok(pkg.keywords.includes("websocket"));
  assert.equal(pkg.type, "module");
  assert.deepEqual(pkg.exports["."], { types: "./wsgate.d.ts", default: "./wsgate.js" });
  assert.equal(pkg.types, "./wsgate.d.ts");
  assert.equal(pkg.sideEffects, false);
  assert.equal(pkg.engines.node, ">=20");
  assert.equal(pkg.dependencies, undefined, "no runtime dependencies");
});

test("the tarball holds the module, its declarations, README and LICENSE, nothing else", () => {
  assert.deepEqual(packed.files.map((f) => f.path).sort(), ["LICENSE", "README.md", "package.json", "wsgate.d.ts", "wsgate.js"]);
  const installed = join(scratch, "node_modules", "wsgate-client");
  assert.deepEqual(readdirSync(installed).sort(), ["LICENSE", "README.md", "package.json", "wsgate.d.ts", "wsgate.js"]);
  assert.equal(readFileSync(join(installed, "wsgate.js"), "utf8"), readFileSync(join(PKG_DIR, "wsgate.js"), "utf8"));
});

test("installed from the tarball, it imports by name from Node (ESM) with every export", { timeout: 60000 }, async () => {
  writeFileSync(
    join(scratch, "check.mjs"),
    `import * as m from "wsgate-client";
     import def from "wsgate-client/package.json" with { type: "json" };
     const c = m.connect("ws://127.0.0.1:9/ws/tasks", { token: "t", WebSocket: class { close() {} } });
     c.close();
     console.log(JSON.stringify({
       names: Object.keys(m).sort(),
       kinds: Object.fromEntries(Object.entries(m).map(([k, v]) => [k, typeof v])),
       revoked: m.CloseCode.REVOKED, reconnect: m.CloseCode.RECONNECT, state: c.state,
       isClient: c instanceof m.WsgateClient, version: def.version,
     }));`,
  );
  const r = JSON.parse((await run(process.execPath, ["check.mjs"], scratch)).trim());
  assert.deepEqual(r.names, ["CloseCode", "State", "WsgateClient", "WsgateError", "backoffDelay", "connect"]);
  assert.deepEqual(r.kinds, { CloseCode: "object", State: "object", WsgateClient: "function", WsgateError: "function", backoffDelay: "function", connect: "function" });
  assert.deepEqual([r.revoked, r.reconnect, r.state, r.isClient, r.version], [4001, 1012, "closed", true, pkg.version]);
});

test("installed from the tarball, its types resolve and the typed usage file compiles (tsc --noEmit)", { timeout: 120000 }, async () => {
  copyFileSync(fileURLToPath(new URL("./types/usage.ts", import.meta.url)), join(scratch, "usage.ts"));
  copyFileSync(fileURLToPath(new URL("./types/tsconfig.json", import.meta.url)), join(scratch, "tsconfig.json"));
  const { code, out } = await tsc(["--noEmit", "-p", join(scratch, "tsconfig.json"), "--traceResolution"], scratch);
  assert.equal(code, 0, `tsc failed:\n${out.split("\n").filter((l) => /error/.test(l)).join("\n")}`);
  assert.match(out, /'wsgate-client' was successfully resolved to '[^']*node_modules\/wsgate-client\/wsgate\.d\.ts'/);
});
