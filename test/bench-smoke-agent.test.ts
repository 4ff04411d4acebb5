/**
 * The agent benchmark still runs end to end (quick mode) and reports its JSON object last.
 */
import { expect, it } from "vitest";
import { runQuickBench } from "./support/bench-run.js";

it("bench/agent.ts --quick --json reports latency, CPU and RSS", () => {
  const r = runQuickBench("agent", 180_000);
  expect(r.status, r.stderr).toBe(0);
  const out = r.json();
  for (const k of [
    "policyAddP50Ms",
    "policyAddP99Ms",
    "podLabelP50Ms",
    "podLabelP99Ms",
    "cpuSecPer1kEvents",
    "rssMBAt10kPods",
  ]) {
    expect(out[k], k).toBeGreaterThan(0);
  }
  expect(out.rssMBAt10kPods).toBeLessThan(400);
}, 200_000);
