/**
 * The dataplane benchmark still runs end to end (quick mode) and reports its JSON object last.
 */
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { expect, it } from "vitest";

it("bench/dataplane.ts --quick --json prints a run with rules, sets and timings", () => {
  const root = join(import.meta.dirname, "..");
  const r = spawnSync(
    process.execPath,
    ["--import", "tsx", join(root, "bench/dataplane.ts"), "--quick", "--json"],
    {
      cwd: root,
      encoding: "utf8",
      timeout: 180_000,
    },
  );
  expect(r.status, r.stderr).toBe(0);
  const last = JSON.parse(r.stdout.trim().split("\n").pop()!);
  const run = last.runs[0];
  expect(run.rules).toBeGreaterThan(0);
  expect(run.ipsets).toBeGreaterThan(0);
  for (const k of ["fullApplyMs", "policyChangeMs", "podAddMs", "plainRestoreMs", "ratioVsPlainRestore"])
    expect(run[k]).toBeGreaterThan(0);
  for (const k of ["tcpLossPct", "udpLossPct", "tcpLossVsBarePct", "udpLossVsBarePct"])
    expect(Number.isFinite(run[k]), k).toBe(true);
  for (const arm of ["bare", "node", "ours"]) expect(run.detail.tcpGbps[arm][0]).toBeGreaterThan(0);
}, 200_000);
