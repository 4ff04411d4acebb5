/**
 * The dataplane benchmark still runs end to end (quick mode) and reports its JSON object last.
 */
import { expect, it } from "vitest";
import { runQuickBench } from "./support/bench-run.js";

it("bench/dataplane.ts --quick --json prints a run with rules, sets and timings", () => {
  const r = runQuickBench("dataplane", 180_000);
  expect(r.status, r.stderr).toBe(0);
  const last = r.json();
  const run = last.runs[0];
  expect(run.rules).toBeGreaterThan(0);
  expect(run.ipsets).toBeGreaterThan(0);
  expect(run.clusterPolicies).toBeGreaterThan(0);
  for (const k of [
    "fullApplyMs",
    "policyChangeMs",
    "clusterPolicyChangeMs",
    "podAddMs",
    "plainRestoreMs",
    "ratioVsPlainRestore",
  ])
    expect(run[k]).toBeGreaterThan(0);
  for (const k of ["tcpLossPct", "udpLossPct", "tcpLossVsBarePct", "udpLossVsBarePct"])
    expect(Number.isFinite(run[k]), k).toBe(true);
  for (const arm of ["bare", "node", "ours"]) expect(run.detail.tcpGbps[arm][0]).toBeGreaterThan(0);
}, 200_000);
