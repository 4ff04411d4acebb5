/**
 * Smoke test of bench/nfqueue.ts: the quick run completes (it builds and removes its own lab,
 * needs root) and its last stdout line is the JSON summary with sane numbers.
 */
import { describe, expect, it } from "vitest";
import { runQuickBench } from "./support/bench-run.js";

describe("bench/nfqueue.ts --quick --json", () => {
  it("prints a JSON summary as its last line", () => {
    const res = runQuickBench("nfqueue", 110_000);
    expect(res.status, `${res.stderr}\n${res.stdout}`).toBe(0);
    const out = res.json() as Record<string, unknown>;
    for (const k of ["addedP50Us", "verdictP99Us"]) {
      expect(typeof out[k], k).toBe("number");
      expect(out[k] as number, k).toBeGreaterThan(0);
    }
    for (const k of [
      "plainConnectP50Us",
      "queuedConnectP50Us",
      "losslessFlowsPerSec",
      "saturatedFlowsPerSec",
    ]) {
      expect(Number.isFinite(out[k]), k).toBe(true);
    }
  }, 120_000);
});
