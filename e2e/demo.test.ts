/**
 * The README's "run it" command: `podwall demo` builds a lab, runs the real agent on a folder,
 * follows edits to that folder within about a second, serves metrics, and leaves nothing behind.
 */
import { spawn } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, it } from "vitest";
import { run } from "../src/dataplane/exec.js";

const DMT = `dmt${process.pid.toString(36)}`.slice(0, 12);
const DM2 = `dm2${process.pid.toString(36)}`.slice(0, 12);

const ROOT = join(import.meta.dirname, "..");

it("demo: live matrix follows a policy file edit; metrics served; lab and rules removed at the end", async () => {
  const dir = mkdtempSync(join(tmpdir(), "pw-demo-test-"));
  cpSync(join(ROOT, "examples/demo"), dir, { recursive: true });
  const port = 19000 + (process.pid % 500);
  const child = spawn(
    process.execPath,
    [
      join(ROOT, "dist/cli/main.js"),
      "demo",
      "--dir",
      dir,
      "--name",
      DMT,
      "--rounds",
      "8",
      "--metrics-addr",
      `127.0.0.1:${port}`,
    ],
    {
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let out = "";
  child.stdout.on("data", (b) => {
    out += String(b);
  });
  child.stderr.on("data", (b) => {
    out += String(b);
  });
  const exited = new Promise<number | null>((r) => child.on("exit", r));
  // Frames with colours stripped and the header (which itself says "X denied") cut off.
  const frames = () =>
    out
      .replace(new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, "g"), "")
      .split("podwall demo: lab node")
      .slice(1)
      .map((f) => f.slice(f.indexOf("real packets)") + 1));
  const denied = (f: string) => /^\s+\S+\/\S+\s+.*\bX\b/m.test(f);
  const waitFor = async (pred: () => boolean, ms: number) => {
    const end = Date.now() + ms;
    while (!pred() && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    return pred();
  };
  try {
    expect(await waitFor(() => frames().length >= 1, 30_000)).toBe(true);
    // dev/debug may not reach shop/db (column 5) on 5432: its egress ipBlock excepts the db.
    expect(frames()[0]).toMatch(/5432\/TCP\n.*\n\s+dev\/debug\s+(\S+\s+){4}X/);
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(metrics).toContain("podwall_syncs_total");
    expect(metrics).toMatch(/podwall_isolated_local_pods\{direction="ingress"\} 4/);
    const n = frames().length;
    const edited = Date.now();
    for (const f of [
      "10-default-deny.yaml",
      "20-shop-tiers.yaml",
      "30-allow-monitoring.yaml",
      "40-dev-egress.yaml",
      "50-cluster-guardrails.yaml",
    ])
      rmSync(join(dir, f));
    // The first frame drawn after the edit that has no X shows the change.
    expect(
      await waitFor(
        () =>
          frames()
            .slice(n)
            .some((f) => !denied(f)),
        10_000,
      ),
    ).toBe(true);
    const latency = Date.now() - edited;
    expect(latency).toBeLessThan(3000);
  } finally {
    expect(await exited).toBe(0);
  }
  expect(out).toContain("stopping: removing podwall's rules and the lab");
  const left = await run("ip", ["netns", "list"]);
  expect(left.stdout).not.toContain(`pwl-${DMT}-`);
}, 90_000);

it("demo without --dir removes its copy of the example cluster when it stops", async () => {
  const r = await run(
    process.execPath,
    [
      join(ROOT, "dist/cli/main.js"),
      "demo",
      "--name",
      DM2,
      "--rounds",
      "1",
      "--metrics-addr",
      `127.0.0.1:${19500 + (process.pid % 400)}`,
    ],
    { timeoutMs: 60_000 },
  );
  const dir = new RegExp(`building lab ${DM2} from (\\S+) \\.\\.\\.`).exec(r.stdout)?.[1];
  expect(dir, r.stdout).toMatch(/podwall-demo-/);
  expect(existsSync(dir!)).toBe(false);
  expect((await run("ip", ["netns", "list"])).stdout).not.toContain(`pwl-${DM2}-`);
}, 90_000);
