/**
 * The diff benchmark still runs end to end (quick mode: the 1k-pod cluster in a child process) and
 * reports its JSON object last: the diff agrees with the naive way on the sampled rows, and the
 * change it measures really opens and closes cells.
 */
import { expect, it } from "vitest";
import { runQuickBench } from "./support/bench-run.js";

it("bench/diff.ts --quick --json reports time, RSS and the naive baseline", () => {
  const r = runQuickBench("diff", 180_000);
  expect(r.status, r.stderr).toBe(0);
  const [c] = r.json().clusters;
  expect(c).toMatchObject({ pods: 1000, policies: 100, naiveMismatches: 0 });
  for (const k of ["diffMs", "rssMB", "naiveMs", "opened", "closed", "decisions"])
    expect(c[k], k).toBeGreaterThan(0);
  expect(c.naiveMs).toBeGreaterThan(c.diffMs);
  expect(c.rssMB).toBeLessThan(1024);
}, 200_000);
