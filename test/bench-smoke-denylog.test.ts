/**
 * Smoke test of bench/denylog.ts: the quick run completes (it builds and removes its own lab and runs
 * the real agent, needs root), its last stdout line is the JSON summary with the fields, and
 * the numbers agree with each other: the kernel limit let through burst + rate x time, the rest was
 * counted as limited, every record became a line naming the policy, and the agent synced meanwhile.
 */
import { describe, expect, it } from "vitest";
import { runQuickBench } from "./support/bench-run.js";

describe("bench/denylog.ts --quick --json", () => {
  it("prints a JSON summary as its last line", () => {
    const res = runQuickBench("denylog", 120_000);
    expect(res.status, `${res.stderr}\n${res.stdout}`).toBe(0);
    const out = res.json() as Record<string, number | null | boolean>;
    for (const k of [
      "offeredDeniedPerSec",
      "loggedPerSec",
      "allowedP99UsFlood",
      "allowedP99UsQuiet",
      "syncP99MsFlood",
    ]) {
      expect(typeof out[k], k).toBe("number");
      expect(out[k] as number, k).toBeGreaterThan(0);
    }
    expect(Number.isFinite(out.agentCpuCores)).toBe(true);
    expect(out.syncsDuringFlood as number).toBeGreaterThan(0);
    const o = out as Record<string, number>;
    // One flooded pod: the kernel passes at most its burst plus its rate per second to the reader.
    expect(o.recordsPerSec).toBeLessThanOrEqual(o.kernelRatePerPod + o.kernelBurstPerPod);
    expect(o.recordsPerSec).toBeGreaterThanOrEqual(o.kernelRatePerPod * 0.9);
    expect(o.loggedPerSec).toBe(o.recordsPerSec); // under the line limit, every record is a line
    expect(o.attributedPct).toBe(100);
    expect(o.readerLost).toBe(0);
    // Every flood packet that reached the deny chain was logged or counted as limited.
    // (Each rate is rounded on its own: up to 1.05 apart.)
    expect(Math.abs(o.kernelLimitedPerSec + o.recordsPerSec - o.deniedEnteredPerSec)).toBeLessThanOrEqual(
      1.5,
    );
    expect(o.connectFailures).toBe(0);
  }, 150_000);
});
