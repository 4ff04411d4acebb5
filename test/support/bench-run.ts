/**
 * bench-run: run one benchmark the way its npm script does (`node --expose-gc --import tsx
 * bench/NAME.ts`) in quick mode with --json, for the bench smoke tests. The caller asserts on the
 * exit status and on `json()`, the benchmark's last stdout line.
 */
import { spawnSync } from "node:child_process";
import { join } from "node:path";

const ROOT = join(import.meta.dirname, "..", "..");

export function runQuickBench(name: string, timeoutMs: number) {
  const r = spawnSync(
    process.execPath,
    ["--expose-gc", "--import", "tsx", join(ROOT, "bench", `${name}.ts`), "--quick", "--json"],
    { cwd: ROOT, encoding: "utf8", timeout: timeoutMs, maxBuffer: 16 << 20 },
  );
  return {
    status: r.status,
    stdout: r.stdout,
    stderr: r.stderr,
    // biome-ignore lint/suspicious/noExplicitAny: each benchmark has its own JSON shape
    json: (): any => JSON.parse(r.stdout.trim().split("\n").pop()!),
  };
}
