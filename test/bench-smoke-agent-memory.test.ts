/**
 * The agent memory benchmark still runs end to end (quick mode) and reports its JSON object last.
 */
import { expect, it } from "vitest";
import { runQuickBench } from "./support/bench-run.js";

it("bench/agent-memory.ts --quick --json reports the peak RSS under a pod-event flood", () => {
  const r = runQuickBench("agent-memory", 180_000);
  expect(r.status, r.stderr).toBe(0);
  const out = r.json();
  expect(out.eventsSynced).toBe(out.eventsSent);
  expect(out.syncErrors).toBe(0);
  expect(out.baselineRssMiB).toBeGreaterThan(0);
  // The kernel's high-water mark is at least every sample taken, give or take its per-thread RSS
  // counter batching (up to 64 pages per thread are folded in lazily: a few hundred KiB apart).
  expect(out.peakRssHwmMiB).toBeGreaterThanOrEqual(out.peakRssSampledMiB - 2);
  expect(out.peakRssHwmMiB).toBeGreaterThanOrEqual(out.baselineRssMiB - 2);
}, 200_000);
