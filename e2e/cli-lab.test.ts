/**
 * The CLI path the conformance corpus uses: `podwall lab probe -f ... -o json` (real packets, both
 * dataplanes) must match `podwall simulate -f ... -o json` in every cell, and leave no namespace.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { run } from "../src/dataplane/exec.js";

const ROOT = join(import.meta.dirname, "..");
const CLI = join(ROOT, "dist/cli/main.js");

/** The pid of the last command run: `lab probe -f` names its temporary lab after it. */
let lastPid = 0;

function json(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 120_000 });
  lastPid = r.pid;
  if (r.status !== 0) throw new Error(`podwall ${args.join(" ")} exited ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout) as {
    pods: string[];
    ports: string[];
    results: { from: string; to: string; port: number; protocol: string; allowed: boolean }[];
  };
}

describe.each(["iptables", "nfqueue"])("podwall lab probe --dataplane %s", (dataplane) => {
  it("equals podwall simulate on the demo cluster, cell by cell", async () => {
    const sim = json(["simulate", "-f", join(ROOT, "examples/demo"), "-o", "json"]);
    const probe = json([
      "lab",
      "probe",
      "-f",
      join(ROOT, "examples/demo"),
      "--dataplane",
      dataplane,
      "-o",
      "json",
    ]);
    expect(probe.pods).toEqual(sim.pods);
    expect(probe.ports).toEqual(sim.ports);
    const key = (r: (typeof sim.results)[number]) => `${r.from}>${r.to}>${r.port}/${r.protocol}`;
    const observed = new Map(probe.results.map((r) => [key(r), r.allowed]));
    const wrong = sim.results.filter((r) => observed.get(key(r)) !== r.allowed).map(key);
    expect(wrong).toEqual([]);
    expect(sim.results.some((r) => !r.allowed)).toBe(true);
    // Its own temporary lab is gone (other processes may run labs of their own meanwhile).
    const own = `pwl-${`pr${lastPid.toString(36)}`.slice(0, 12)}-`;
    expect((await run("ip", ["netns", "list"])).stdout).not.toContain(own);
  }, 150_000);
});

describe("podwall lab up / probe --name / down", () => {
  it("probes a running lab like simulate, and down leaves no namespace and no state behind", async () => {
    const name = `cl${process.pid.toString(36)}`.slice(0, 12);
    const demo = join(ROOT, "examples/demo");
    const up = spawnSync(process.execPath, [CLI, "lab", "up", "-f", demo, "--name", name], {
      encoding: "utf8",
    });
    try {
      expect(up.status, up.stderr).toBe(0);
      // No rules programmed: a bare lab lets everything through, whatever the policies say.
      const probe = json(["lab", "probe", "--name", name, "--port", "5432/TCP", "-o", "json"]);
      expect(probe.results.length).toBeGreaterThan(0);
      expect(probe.results.every((r) => r.allowed)).toBe(true);
    } finally {
      const down = spawnSync(process.execPath, [CLI, "lab", "down", "--name", name], { encoding: "utf8" });
      expect(down.status, down.stderr).toBe(0);
    }
    expect((await run("ip", ["netns", "list"])).stdout).not.toContain(`pwl-${name}-`);
    const state = "/run/podwall/lab";
    const left = existsSync(state) ? readdirSync(state).filter((f) => f.startsWith(`${name}.`)) : [];
    expect(left).toEqual([]);
  }, 60_000);
});
