/**
 * The lab: real namespaces, real packets. Proves probes succeed with no rules (TCP, UDP, SCTP; v4 and v6;
 * from pods and from the node), that they fail when the node netns drops them, and that labDown leaves
 * nothing. Every lab here is named tl*, and afterAll tears all of them down even when a test fails.
 */
import { existsSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { run } from "../src/dataplane/exec.js";
import {
  type LabPodSpec,
  type LabState,
  labAddPod,
  labDown,
  labRemovePod,
  labUp,
  loadLab,
  type ProbeRequest,
  probe,
} from "../src/dataplane/lab/lab.js";

const PID = process.pid.toString(36);
const LAB = `tl1${PID}`.slice(0, 12);
const MATRIX = `tl9${PID}`.slice(0, 12);
const ORPHAN = `tl3${PID}`.slice(0, 12);
const ALL_LABS = [LAB, MATRIX, ORPHAN];

const SERVE: LabPodSpec["serve"] = [
  { port: 80, protocol: "TCP" },
  { port: 81, protocol: "TCP" },
  { port: 80, protocol: "UDP" },
  { port: 7000, protocol: "SCTP" },
];

function pod(i: number): LabPodSpec {
  return { key: `ns${i % 2}/p${i}`, ips: [`10.77.0.${10 + i}`, `fd00:77::${10 + i}`], serve: SERVE };
}

/** iptables/ip6tables only ever inside a lab netns. */
async function nodeTables(lab: LabState, family: 4 | 6, args: string[]): Promise<void> {
  expect(lab.nodeNetns).toMatch(/^pwl-tl/);
  await run(family === 4 ? "iptables" : "ip6tables", args, { netns: lab.nodeNetns });
}

async function netnsList(): Promise<string[]> {
  const res = await run("ip", ["netns", "list"]);
  return res.stdout
    .split("\n")
    .map((l) => l.split(" ")[0])
    .filter(Boolean);
}

function labNetns(all: string[], name: string): string[] {
  return all.filter((n) => n.startsWith(`pwl-${name}-`));
}

afterAll(async () => {
  for (const name of ALL_LABS) await labDown(name);
  const left = await netnsList();
  for (const name of ALL_LABS) expect(labNetns(left, name)).toEqual([]);
});

describe("lab", () => {
  let lab: LabState;
  const [a, b, c] = [pod(0), pod(1), pod(2)];

  it("builds a node and pods with routed veths", async () => {
    lab = await labUp(LAB, [a, b, c]);
    expect(lab.nodeNetns).toBe(`pwl-${LAB}-node`);
    expect(lab.pods.map((p) => p.netns)).toEqual([0, 1, 2].map((i) => `pwl-${LAB}-${i}`));
    for (const p of lab.pods) expect(p.hostIf.length).toBeLessThanOrEqual(15);
    expect(new Set(lab.pods.map((p) => p.hostIf)).size).toBe(3);
    expect(labNetns(await netnsList(), LAB).sort()).toEqual(
      [...lab.pods.map((p) => p.netns), lab.nodeNetns].sort(),
    );
    expect(await loadLab(LAB)).toEqual(lab);
  });

  it("connects every pair on TCP, UDP and SCTP, over IPv4 and IPv6, from pods and from the node", async () => {
    const reqs: ProbeRequest[] = [];
    for (const from of ["node", a.key, b.key, c.key]) {
      for (const to of [a, b, c]) {
        for (const toIp of to.ips) {
          reqs.push({ from, toIp, port: 80, protocol: "TCP" });
          reqs.push({ from, toIp, port: 80, protocol: "UDP" });
          reqs.push({ from, toIp, port: 7000, protocol: "SCTP" });
        }
      }
    }
    const res = await probe(lab, reqs);
    const failed = reqs.filter((_, i) => !res[i]);
    expect(failed).toEqual([]);
    expect(reqs.length).toBe(4 * 3 * 2 * 3);
  });

  it("reports closed ports as unreachable", async () => {
    const res = await probe(lab, [
      { from: a.key, toIp: b.ips[0], port: 82, protocol: "TCP" },
      { from: a.key, toIp: b.ips[1], port: 81, protocol: "UDP" },
      { from: a.key, toIp: b.ips[0], port: 7001, protocol: "SCTP" },
    ]);
    expect(res).toEqual([false, false, false]);
  });

  it("fails a probe the node netns drops, and only that one", async () => {
    const hostB = lab.pods[1].hostIf;
    const rule = ["FORWARD", "-o", hostB, "-p", "tcp", "--dport", "80", "-j", "DROP"];
    const reqs: ProbeRequest[] = [
      { from: a.key, toIp: b.ips[0], port: 80, protocol: "TCP" },
      { from: a.key, toIp: b.ips[0], port: 80, protocol: "UDP" },
      { from: a.key, toIp: b.ips[0], port: 81, protocol: "TCP" },
      { from: a.key, toIp: c.ips[0], port: 80, protocol: "TCP" },
      { from: a.key, toIp: b.ips[1], port: 80, protocol: "TCP" }, // v6: iptables does not see it
      { from: "node", toIp: b.ips[0], port: 80, protocol: "TCP" }, // OUTPUT, not FORWARD
    ];
    await nodeTables(lab, 4, ["-A", ...rule]);
    try {
      const t0 = Date.now();
      expect(await probe(lab, reqs, { timeoutMs: 700 })).toEqual([false, true, true, true, true, true]);
      expect(Date.now() - t0).toBeLessThan(2000);
    } finally {
      await nodeTables(lab, 4, ["-D", ...rule]);
    }
    await nodeTables(lab, 6, ["-A", ...rule]);
    try {
      expect(await probe(lab, reqs)).toEqual([true, true, true, true, false, true]);
    } finally {
      await nodeTables(lab, 6, ["-D", ...rule]);
    }
    expect(await probe(lab, reqs)).toEqual([true, true, true, true, true, true]);
  });

  it("blocks SCTP only with an sctp rule, and sends INITs conntrack accepts (valid CRC32c)", async () => {
    const reqs: ProbeRequest[] = [
      { from: a.key, toIp: b.ips[0], port: 7000, protocol: "SCTP" },
      { from: a.key, toIp: b.ips[1], port: 7000, protocol: "SCTP" },
      { from: a.key, toIp: b.ips[0], port: 80, protocol: "TCP" },
      { from: a.key, toIp: b.ips[0], port: 80, protocol: "UDP" },
    ];
    // A bad checksum makes conntrack call the INIT invalid; with this rule such a probe would fail.
    const invalid = ["FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"];
    const sctp = ["FORWARD", "-p", "sctp", "--dport", "7000", "-j", "DROP"];
    for (const f of [4, 6] as const) await nodeTables(lab, f, ["-A", ...invalid]);
    try {
      expect(await probe(lab, reqs)).toEqual([true, true, true, true]);
      for (const f of [4, 6] as const) await nodeTables(lab, f, ["-A", ...sctp]);
      expect(await probe(lab, reqs)).toEqual([false, false, true, true]);
    } finally {
      for (const f of [4, 6] as const) {
        await run(f === 4 ? "iptables" : "ip6tables", ["-F", "FORWARD"], { netns: lab.nodeNetns });
      }
    }
    expect(await probe(lab, reqs)).toEqual([true, true, true, true]);
  });

  it("adds and removes pods", async () => {
    const d = pod(3);
    const added = await labAddPod(LAB, d);
    expect(added.netns).toBe(`pwl-${LAB}-3`);
    const links = await run("ip", ["-n", lab.nodeNetns, "-o", "link", "show"]);
    expect(links.stdout).toContain(added.hostIf);
    lab = (await loadLab(LAB))!;
    expect(lab.pods.map((p) => p.key)).toEqual([a.key, b.key, c.key, d.key]);
    await expect(labAddPod(LAB, { ...d, key: "other/x" })).rejects.toThrow(/already used/);

    const both: ProbeRequest[] = [
      { from: a.key, toIp: d.ips[0], port: 80, protocol: "TCP" },
      { from: d.key, toIp: a.ips[1], port: 80, protocol: "UDP" },
      { from: d.key, toIp: b.ips[0], port: 7000, protocol: "SCTP" },
      { from: b.key, toIp: d.ips[1], port: 7000, protocol: "SCTP" },
    ];
    expect(await probe(lab, both)).toEqual([true, true, true, true]);

    await labRemovePod(LAB, d.key);
    expect(await netnsList()).not.toContain(added.netns);
    const after = await run("ip", ["-n", lab.nodeNetns, "-o", "link", "show"]);
    expect(after.stdout).not.toContain(added.hostIf);
    const stale = lab;
    lab = (await loadLab(LAB))!;
    expect(lab.pods.map((p) => p.key)).toEqual([a.key, b.key, c.key]);
    expect(await probe(lab, [{ from: a.key, toIp: d.ips[0], port: 80, protocol: "TCP" }])).toEqual([false]);
    await expect(probe(lab, [{ from: d.key, toIp: a.ips[0], port: 80, protocol: "TCP" }])).rejects.toThrow(
      /unknown source/,
    );
    await expect(probe(stale, both)).rejects.toThrow();
    await expect(labRemovePod(LAB, d.key)).rejects.toThrow(/no pod/);

    // Re-adding the same key reuses its veth name and gets a fresh netns.
    const again = await labAddPod(LAB, d);
    expect(again.hostIf).toBe(added.hostIf);
    expect(again.netns).toBe(`pwl-${LAB}-4`);
    lab = (await loadLab(LAB))!;
    expect(await probe(lab, both)).toEqual([true, true, true, true]);
  });

  it("labDown removes every netns and veth, and a second labDown is a no-op", async () => {
    const hostIfs = lab.pods.map((p) => p.hostIf);
    await labDown(LAB);
    expect(labNetns(await netnsList(), LAB)).toEqual([]);
    // The node-side veths died with the node netns; none leaked into the host netns.
    const hostLinks = await run("ip", ["-o", "link", "show"]);
    for (const h of hostIfs) expect(hostLinks.stdout).not.toContain(h);
    expect(existsSync(`/run/podwall/lab/${LAB}.json`)).toBe(false);
    expect(await loadLab(LAB)).toBeUndefined();
    await labDown(LAB);
    expect(labNetns(await netnsList(), LAB)).toEqual([]);
  });

  it("labDown works without the state file, and agents die with their parent process", async () => {
    // Another process builds the lab and exits without labDown, as a crashed test would.
    const script = [
      `import { labUp } from ${JSON.stringify(new URL("../src/dataplane/lab/lab.ts", import.meta.url).pathname)};`,
      `await labUp(${JSON.stringify(ORPHAN)}, ${JSON.stringify([pod(0), pod(1)])});`,
    ].join("\n");
    await run(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      timeoutMs: 30_000,
    });
    const made = labNetns(await netnsList(), ORPHAN);
    expect(made.length).toBe(3);
    // Agents saw their stdin close and exited: nothing runs in the lab's netns.
    for (let i = 0; ; i++) {
      const pids = await Promise.all(made.map((n) => run("ip", ["netns", "pids", n])));
      if (pids.every((p) => p.stdout.trim() === "")) break;
      expect(i).toBeLessThan(50);
      await new Promise((r) => setTimeout(r, 100));
    }
    // This process can load and probe it (starting its own agents), then tear it down with no state file.
    const orphan = (await loadLab(ORPHAN))!;
    expect(orphan.pods.length).toBe(2);
    const res = await probe(orphan, [
      { from: pod(0).key, toIp: pod(1).ips[0], port: 80, protocol: "TCP" },
      { from: pod(1).key, toIp: pod(0).ips[1], port: 7000, protocol: "SCTP" },
      { from: "node", toIp: pod(1).ips[1], port: 80, protocol: "UDP" },
    ]);
    expect(res).toEqual([true, true, true]);
    await run("rm", ["-f", `/run/podwall/lab/${ORPHAN}.json`]);
    expect(await loadLab(ORPHAN)).toBeUndefined();
    await labDown(ORPHAN);
    expect(labNetns(await netnsList(), ORPHAN)).toEqual([]);
  });

  it("probes a 9x9 matrix on two ports (one blocked everywhere) in a few seconds", async () => {
    const pods = Array.from({ length: 9 }, (_, i) => pod(i));
    const t0 = Date.now();
    const m = await labUp(MATRIX, pods);
    const upMs = Date.now() - t0;
    await nodeTables(m, 4, ["-A", "FORWARD", "-p", "tcp", "--dport", "81", "-j", "DROP"]);
    const reqs: ProbeRequest[] = [];
    for (const from of pods) {
      for (const to of pods)
        for (const port of [80, 81]) reqs.push({ from: from.key, toIp: to.ips[0], port, protocol: "TCP" });
    }
    const t1 = Date.now();
    const res = await probe(m, reqs);
    const probeMs = Date.now() - t1;
    console.log(`lab: 9 pods up in ${upMs} ms; 9x9x2 matrix (${reqs.length} probes) in ${probeMs} ms`);
    // A pod talking to itself never crosses the node's FORWARD chain.
    const want = reqs.map((r) => r.port === 80 || pods.find((p) => p.key === r.from)!.ips[0] === r.toIp);
    expect(res).toEqual(want);
    expect(probeMs).toBeLessThan(6000);
    await labDown(MATRIX);
  });
});
