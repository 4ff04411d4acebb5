/**
 * The agent benchmark still runs end to end (quick mode) and reports its JSON object last.
 */
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { expect, it } from "vitest";

it("bench/agent.ts --quick --json reports latency, CPU and RSS", () => {
  const root = join(import.meta.dirname, "..");
  const r = spawnSync(
    process.execPath,
    ["--expose-gc", "--import", "tsx", join(root, "bench/agent.ts"), "--quick", "--json"],
    {
      cwd: root,
      encoding: "utf8",
      timeout: 180_000,
    },
  );
  expect(r.status, r.stderr).toBe(0);
  const out = JSON.parse(r.stdout.trim().split("\n").pop()!);
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
