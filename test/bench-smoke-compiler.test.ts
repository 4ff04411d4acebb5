/**
 * The compiler benchmark still runs end to end (quick mode: 1k pods, without and with cluster
 * policies) and reports its JSON object last; the engine agrees with the plain evaluators there.
 */
import { expect, it } from "vitest";
import { runQuickBench } from "./support/bench-run.js";

it("bench/compiler.ts --quick --json measures both clusters and agrees with the plain evaluators", () => {
  const r = runQuickBench("compiler", 180_000);
  expect(r.status, r.stderr).toBe(0);
  const out = r.json();
  expect(out.clusters.map((c: { clusterPolicies: number }) => c.clusterPolicies)).toEqual([0, 12]);
  for (const c of out.clusters) {
    expect(c.plainMismatches).toBe(0);
    for (const k of ["compileMs", "uncachedP99Us", "cachedLookupsPerSec", "plainMeanUs", "speedupVsPlain"])
      expect(c[k], k).toBeGreaterThan(0);
  }
}, 200_000);
