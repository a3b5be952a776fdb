// wsgate.d.ts checked by the TypeScript compiler (the devDependency pinned in package-lock.json):
// test/types/usage.ts uses every option, handler, event field and close code, and the typed
// event map; its `@ts-expect-error` lines must fail to compile (tsc reports an unused one), so
// the typing is checked to be strict, not only permissive. It imports "wsgate-client" by name,
// as a user does: package.json's "exports" (self-reference) leads to wsgate.d.ts.
import assert from "node:assert/strict";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { tsc } from "../testing/tsc.mjs";

const PROJECT = fileURLToPath(new URL("./types/tsconfig.json", import.meta.url));

for (const [name, flags] of [
  ["nodenext (Node, ESM)", []],
  ["bundler (Vite, webpack, esbuild)", ["--module", "esnext", "--moduleResolution", "bundler"]],
]) {
  test(`tsc --noEmit on a typed usage file, module resolution ${name}`, { timeout: 120000 }, async () => {
    const { code, out } = await tsc(["--noEmit", "-p", PROJECT, ...flags]);
    assert.equal(code, 0, `tsc failed:\n${out}`);
  });
}

test("tsc catches a misuse (a handler for an event type the map lacks)", { timeout: 120000 }, async () => {
  // Guards the guard: a declaration file that typed everything as `any` would pass the test above
  // only if the @ts-expect-error lines still failed; this shows tsc's error text for one.
  const { writeFileSync, mkdtempSync, rmSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const dir = mkdtempSync(join(tmpdir(), "wsgate-types-"));
  try {
    const wsgate = fileURLToPath(new URL("../wsgate.js", import.meta.url));
    writeFileSync(join(dir, "bad.ts"), `import { connect } from ${JSON.stringify(wsgate)};\nconnect<{ a: number }>("/ws", { token: "t" }).on("b", () => {});\n`);
    const { code, out } = await tsc(["--noEmit", "--strict", "--target", "es2022", "--lib", "es2022,dom", "--module", "nodenext", "--moduleResolution", "nodenext", "bad.ts"], dir);
    assert.notEqual(code, 0);
    assert.match(out, /bad\.ts\(2,\d+\): error TS2769: No overload matches this call/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
