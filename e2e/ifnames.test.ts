/**
 * Real-kernel e2e for odd host interface names (src/dataplane/ifname.ts). In a lab node whose pod
 * veths are all named `pw<hex>`, one pod's veth is renamed `pw+` (iptables' wildcard: written as is,
 * it would match every neighbour) and another's `pw"x` (a quote: written as is, it breaks the
 * restore input). Enforcement must still equal `simulate` cell by cell, in both dataplanes: `pw"x`
 * matched exactly by name, the `pw+` pod by its address. The real agent on the same lab reports the
 * rejected name in a metric and one log line, and keeps syncing.
 * Runs as root; the labs, the agent and the temporary folder are removed in afterAll.
 */
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { run } from "../src/dataplane/exec.js";
import { interfaceArg, interfaceNameProblem } from "../src/dataplane/ifname.js";
import type { LabState } from "../src/dataplane/lab/lab.js";
import { freePort, spawnAgent, tearDown, until } from "../test/support/agent-process.js";
import { LabHarness, type Mode } from "./support/harness.js";
import { IP, type Obj, policy, sel, xyzModel } from "./support/model.js";

const TCP80 = { port: 80, protocol: "TCP" as const };
const PLUS = "pw+";
const QUOTE = 'pw"x';

/** Rename a routed lab pod's host veth, restoring what the kernel drops while it is down. */
async function renameHostIf(lab: LabState, key: string, to: string): Promise<void> {
  const p = lab.pods.find((x) => x.key === key)!;
  const ns = lab.nodeNetns;
  const mac = JSON.parse((await run("ip", ["-j", "neigh", "show", "dev", p.hostIf], { netns: ns })).stdout)[0]
    .lladdr as string;
  await run("ip", ["link", "set", p.hostIf, "down"], { netns: ns });
  await run("ip", ["link", "set", p.hostIf, "name", to], { netns: ns });
  await run("ip", ["link", "set", to, "up"], { netns: ns });
  for (const ip of p.ips) {
    await run("ip", ["route", "replace", `${ip}/32`, "dev", to, "scope", "link"], { netns: ns });
    await run("ip", ["neigh", "replace", ip, "lladdr", mac, "dev", to, "nud", "permanent"], { netns: ns });
  }
  p.hostIf = to;
}

/** x/a behind `pw+`, y/b behind `pw"x`; both isolated both ways, the rest partly. */
const POLICIES: Obj[] = [
  policy("x", "a-from-b", {
    podSelector: sel({ pod: "a" }),
    policyTypes: ["Ingress", "Egress"],
    ingress: [{ from: [{ podSelector: sel({ pod: "b" }) }] }],
    egress: [{ to: [{ namespaceSelector: sel({ ns: "z" }) }] }],
  }),
  policy("y", "b-from-c", {
    podSelector: sel({ pod: "b" }),
    policyTypes: ["Ingress", "Egress"],
    ingress: [{ from: [{ podSelector: sel({ pod: "c" }) }] }],
    egress: [{ to: [{ podSelector: sel({ pod: "c" }) }] }],
  }),
  policy("z", "deny", { podSelector: sel({ pod: "c" }) }),
];

describe("interface names", () => {
  it("accepts exactly what the kernel names and iptables matches exactly", () => {
    for (const n of ["eth0", "veth1a2b3c4d", "cali-1.2", 'pw"x', "pw\\x", "!pw", "-pw", "é1", "a".repeat(15)])
      expect([n, interfaceNameProblem(n)]).toEqual([n, undefined]);
    for (const n of [
      "",
      ".",
      "..",
      "a/b",
      "a:b",
      "a b",
      "a\tb",
      "a".repeat(16),
      "pw+",
      "a+b",
      "x\u0001",
      "\ufffd",
    ])
      expect(interfaceNameProblem(n)).toBeDefined();
    expect(interfaceArg("eth0")).toBe("eth0");
    expect(interfaceArg('pw"x')).toBe('"pw\\"x"');
    expect(interfaceArg("pw\\x")).toBe('"pw\\\\x"');
    expect(() => interfaceArg("pw+")).toThrow();
  });
});

describe.each(["iptables", "nfqueue"] as Mode[])(
  "odd pod interface names, %s: enforcement equals simulate",
  (mode) => {
    let h: LabHarness;
    beforeAll(async () => {
      h = await LabHarness.up(`if${mode[0]}${process.pid.toString(36)}`.slice(0, 12), xyzModel(), mode);
    }, 90_000);
    afterAll(async () => {
      await h?.down();
    });

    it("`pw+` matches no neighbour (its pod is matched by address)", async () => {
      await renameHostIf(h.lab, "x/a", PLUS);
      expect((await h.compare([TCP80])).wrong).toEqual([]); // the lab itself is sound
      h.setPolicies(POLICIES);
      await h.sync();
      expect((await h.compare([TCP80])).wrong).toEqual([]);
      const save = (await run("iptables-save", ["-t", "filter"], { netns: h.lab.nodeNetns })).stdout;
      expect(save).not.toContain(PLUS);
      expect(save).toContain(`-d ${IP("x", "a")}/32 -m comment`);
      expect(save).toContain(`-s ${IP("x", "a")}/32 -m comment`);
    });

    it('`pw"x` matches itself exactly, and every later sync succeeds', async () => {
      await renameHostIf(h.lab, "y/b", QUOTE);
      h.applier.invalidate();
      await h.sync();
      expect((await h.compare([TCP80])).wrong).toEqual([]);
      const save = (await run("iptables-save", ["-t", "filter"], { netns: h.lab.nodeNetns })).stdout;
      expect(save).toContain(`-o ${QUOTE} `);
      // A later change still programs (nothing left the kernel in a state the next restore trips on).
      h.setPolicies(POLICIES.slice(1));
      const s = await h.sync();
      expect(s.chainsWritten).toBeGreaterThan(0);
      expect((await h.compare([TCP80])).wrong).toEqual([]);
    });
  },
);

describe("the agent reports a pod interface iptables cannot name", () => {
  let h: LabHarness | undefined;
  let agent: ChildProcess | undefined;
  let dir: string | undefined;
  const logs: Record<string, unknown>[] = [];
  afterAll(async () => {
    await tearDown({ processes: [agent], dir });
    await h?.down();
  }, 30_000);

  it("logs it once, counts it, and keeps enforcing", async () => {
    const objs = [...xyzModel(), ...POLICIES];
    const lab = `ifa${process.pid.toString(36)}`.slice(0, 12);
    h = await LabHarness.up(lab, objs, "iptables");
    await renameHostIf(h.lab, "x/a", PLUS);
    await renameHostIf(h.lab, "y/b", QUOTE);
    dir = mkdtempSync(join(tmpdir(), "podwall-ifnames-"));
    writeFileSync(join(dir, "cluster.json"), JSON.stringify({ kind: "List", items: objs }));
    const port = await freePort();
    agent = spawnAgent(
      ["--source", dir, "--lab", lab, "--metrics-addr", `127.0.0.1:${port}`, "--resync-seconds", "1"],
      (l) => logs.push(l),
    );
    const metric = async () =>
      /^podwall_rejected_interfaces (\d+)$/m.exec(
        await (await fetch(`http://127.0.0.1:${port}/metrics`)).text(),
      )?.[1];
    expect(await until(() => logs.filter((l) => l.msg === "sync").length >= 3, 20_000)).toBe(true);
    expect(await metric()).toBe("1");
    const warned = logs.filter((l) => String(l.msg).startsWith("pod interface name cannot be matched"));
    expect(warned).toEqual([expect.objectContaining({ pod: "x/a", interface: PLUS })]);
    expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(200);
    // The agent programs the lab; the harness's table only computes what simulate expects.
    h.setPolicies(POLICIES);
    expect((await h.compare([TCP80])).wrong).toEqual([]);
  }, 60_000);
});
