// Runs the TypeScript compiler of the devDependency (pinned in package-lock.json).
import { execFile } from "node:child_process";
import { createRequire } from "node:module";

const TSC = createRequire(import.meta.url).resolve("typescript/bin/tsc");

/** Runs tsc with `args` in `cwd`; resolves with its exit code and output. */
export function tsc(args, cwd) {
  return new Promise((res) =>
    execFile(process.execPath, [TSC, ...args], { cwd, timeout: 120000 }, (err, stdout, stderr) =>
      res({ code: err ? (err.code ?? 1) : 0, out: `${stdout}${stderr}` }),
    ),
  );
}
