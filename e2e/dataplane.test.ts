/**
 * Real-kernel e2e: for each dataplane mode, labs programmed by podwall must let through exactly
 * what `simulate` (the compiled table) says, cell by cell, with real TCP/UDP/SCTP packets.
 * Scenarios are applied to a running lab one after another as minimal deltas, so the suite also
 * covers update sequences (policies added, changed, deleted; pod and namespace labels changed).
 * Runs as root; every namespace it builds is removed in afterAll, also when a test fails.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PortProto } from "../src/compiler/matrix.js";
import { run } from "../src/dataplane/exec.js";
import { probe } from "../src/dataplane/lab/lab.js";
import { deletePodChainByHand, LabHarness, type Mode } from "./support/harness.js";
import { IP, ns, type Obj, pod, policy, portsModel, sel, v6Model, xyzModel } from "./support/model.js";

const MODES: Mode[] = (process.env.PODWALL_E2E_MODES ?? "iptables,nfqueue").split(",") as Mode[];
const TCP80: PortProto = { port: 80, protocol: "TCP" };
const TCP81: PortProto = { port: 81, protocol: "TCP" };
const UDP80: PortProto = { port: 80, protocol: "UDP" };

/** [name, policies, ports] applied in order to one running x/y/z lab. */
const XYZ_SCENARIOS: [string, Obj[], PortProto[]][] = [
  ["no policies: everything allowed", [], [TCP80, UDP80]],
  ["default deny ingress in x", [policy("x", "deny", { podSelector: {} })], [TCP80, UDP80]],
  [
    "allow x/a from x/b only (podSelector stays in the policy namespace)",
    [
      policy("x", "deny", { podSelector: {} }),
      policy("x", "a-from-b", {
        podSelector: sel({ pod: "a" }),
        ingress: [{ from: [{ podSelector: sel({ pod: "b" }) }] }],
      }),
    ],
    [TCP80],
  ],
  [
    "allow x/a from namespace y (namespaceSelector)",
    [
      policy("x", "a-from-y", {
        podSelector: sel({ pod: "a" }),
        ingress: [{ from: [{ namespaceSelector: sel({ ns: "y" }) }] }],
      }),
    ],
    [TCP80],
  ],
  [
    "AND: pod b in namespace y; OR: any pod c (own namespace)",
    [
      policy("x", "and-or", {
        podSelector: sel({ pod: "a" }),
        ingress: [
          {
            from: [
              { namespaceSelector: sel({ ns: "y" }), podSelector: sel({ pod: "b" }) },
              { podSelector: sel({ pod: "c" }) },
            ],
          },
        ],
      }),
    ],
    [TCP80],
  ],
  [
    "ports: x/a only on 81/TCP; protocol-only UDP to x/b",
    [
      policy("x", "a-81", { podSelector: sel({ pod: "a" }), ingress: [{ ports: [{ port: 81 }] }] }),
      policy("x", "b-udp", { podSelector: sel({ pod: "b" }), ingress: [{ ports: [{ protocol: "UDP" }] }] }),
    ],
    [TCP80, TCP81, UDP80],
  ],
  [
    "named port serve-81-tcp on ingress",
    [
      policy("x", "named", {
        podSelector: sel({ pod: "a" }),
        ingress: [{ ports: [{ port: "serve-81-tcp" }] }],
      }),
    ],
    [TCP80, TCP81],
  ],
  [
    "egress deny all from x/a; egress from y/a only to z/b on 80 (named serve-80-tcp)",
    [
      policy("x", "a-no-egress", { podSelector: sel({ pod: "a" }), policyTypes: ["Egress"] }),
      policy("y", "a-to-zb", {
        podSelector: sel({ pod: "a" }),
        policyTypes: ["Egress"],
        egress: [
          {
            to: [{ namespaceSelector: sel({ ns: "z" }), podSelector: sel({ pod: "b" }) }],
            ports: [{ port: "serve-80-tcp" }],
          },
        ],
      }),
    ],
    [TCP80, TCP81],
  ],
  [
    "ingress and egress together; egress deny on the client wins over an ingress allow",
    [
      policy("x", "both", {
        podSelector: sel({ pod: "b" }),
        policyTypes: ["Ingress", "Egress"],
        ingress: [{ from: [{ namespaceSelector: {} }] }],
        egress: [{ to: [{ podSelector: sel({ pod: "c" }) }] }],
      }),
      policy("z", "open", { podSelector: {}, ingress: [{}] }),
    ],
    [TCP80],
  ],
  [
    "ipBlock except with an overlapping peer in another policy",
    [
      policy("z", "cidr", {
        podSelector: sel({ pod: "a" }),
        ingress: [
          { from: [{ ipBlock: { cidr: "10.77.0.0/16", except: [`${IP("x", "b")}/32`, "10.77.1.0/24"] } }] },
        ],
      }),
      policy("z", "cidr2", {
        podSelector: sel({ pod: "a" }),
        ingress: [{ from: [{ ipBlock: { cidr: `${IP("y", "c")}/32` } }] }],
      }),
    ],
    [TCP80],
  ],
  [
    "egress ipBlock with except; two ipBlock peers in one rule",
    [
      policy("y", "eg", {
        podSelector: {},
        policyTypes: ["Egress"],
        egress: [
          {
            to: [
              { ipBlock: { cidr: "10.77.0.0/16", except: ["10.77.2.0/24"] } },
              { ipBlock: { cidr: `${IP("z", "a")}/32` } },
            ],
          },
        ],
      }),
    ],
    [TCP80],
  ],
  [
    "namespaceSelector on the default name label, NotIn, egress",
    [
      policy("x", "notin", {
        podSelector: {},
        policyTypes: ["Egress"],
        egress: [
          {
            to: [
              {
                namespaceSelector: {
                  matchExpressions: [
                    { key: "kubernetes.io/metadata.name", operator: "NotIn", values: ["y"] },
                  ],
                },
              },
            ],
          },
        ],
      }),
    ],
    [TCP80],
  ],
  [
    "UDP-only policy isolates TCP too",
    [
      policy("y", "udp-only", {
        podSelector: sel({ pod: "b" }),
        ingress: [{ ports: [{ port: 80, protocol: "UDP" }] }],
      }),
    ],
    [TCP80, UDP80],
  ],
];

describe.each(MODES)("dataplane %s: lab probe equals simulate", (mode) => {
  const suffix = `${mode === "iptables" ? "i" : "q"}${process.pid.toString(36)}`.slice(0, 8);

  describe("x/y/z model, scenarios applied as deltas to one running lab", () => {
    let h: LabHarness;
    beforeAll(async () => {
      h = await LabHarness.up(`e2x${suffix}`, xyzModel(), mode);
    });
    afterAll(async () => {
      await h?.down();
    });

    for (const [name, pols, ports] of XYZ_SCENARIOS) {
      it(name, async () => {
        h.setPolicies(pols);
        await h.sync();
        const { wrong, expected } = await h.compare(ports);
        expect(expected.results.length).toBe(81 * ports.length);
        expect(wrong).toEqual([]);
      });
    }

    it("update: pod label change moves a pod into and out of a policy", async () => {
      h.setPolicies([
        policy("x", "deny", { podSelector: {} }),
        policy("x", "from-b", { podSelector: {}, ingress: [{ from: [{ podSelector: sel({ pod: "b" }) }] }] }),
      ]);
      await h.sync();
      expect((await h.compare([TCP80])).wrong).toEqual([]);
      h.relabelPod(
        pod("x", "c", [IP("x", "c")], { pod: "b" }, [{ name: "serve-80-tcp", containerPort: 80 }]),
      );
      const stats = await h.sync();
      if (mode === "iptables") expect(stats.membersAdded).toBeGreaterThan(0);
      const after = await h.compare([TCP80]);
      expect(after.wrong).toEqual([]);
      // x/c now counts as "b": it may reach x/a.
      expect(after.observed.results.find((r) => r.from === "x/c" && r.to === "x/a")?.allowed).toBe(true);
      h.relabelPod(
        pod("x", "c", [IP("x", "c")], { pod: "c" }, [{ name: "serve-80-tcp", containerPort: 80 }]),
      );
      await h.sync();
      expect((await h.compare([TCP80])).wrong).toEqual([]);
    });

    it("update: namespace label change flips a namespaceSelector; delete restores traffic", async () => {
      h.setPolicies([
        policy("x", "from-ns-y", {
          podSelector: {},
          ingress: [{ from: [{ namespaceSelector: sel({ ns: "y" }) }] }],
        }),
      ]);
      await h.sync();
      expect((await h.compare([TCP80])).wrong).toEqual([]);
      h.relabelNamespace(ns("z", { ns: "y" }));
      await h.sync();
      const m = await h.compare([TCP80]);
      expect(m.wrong).toEqual([]);
      expect(m.observed.results.find((r) => r.from === "z/a" && r.to === "x/a")?.allowed).toBe(true);
      h.relabelNamespace(ns("z", { ns: "z" }));
      h.setPolicies([]);
      const stats = await h.sync();
      if (mode === "iptables") expect(stats.chainsDeleted).toBeGreaterThan(0);
      const open = await h.compare([TCP80]);
      expect(open.wrong).toEqual([]);
      expect(open.observed.results.every((r) => r.allowed)).toBe(true);
    });

    it("the pod's own node may always reach it (ingress exemption for probes)", async () => {
      h.setPolicies([policy("x", "deny-all", { podSelector: {}, policyTypes: ["Ingress", "Egress"] })]);
      await h.sync();
      const [fromNode, fromPod] = await probe(
        h.lab,
        [
          { from: "node", toIp: IP("x", "a"), port: 80, protocol: "TCP" },
          { from: "y/a", toIp: IP("x", "a"), port: 80, protocol: "TCP" },
        ],
        { timeoutMs: 700 },
      );
      expect([fromNode, fromPod]).toEqual([true, false]);
    });

    it("an unchanged table programs nothing", async () => {
      const s = await h.sync();
      expect(s.chainsWritten + s.setsCreated + s.membersAdded + s.membersDeleted).toBe(0);
    });
  });

  describe("bridged pods (cni0-style bridge: physdev dispatch, interfaces found through the FDB)", () => {
    let h: LabHarness;
    beforeAll(async () => {
      h = await LabHarness.up(`e2b${suffix}`, xyzModel(), mode, undefined, { bridged: true });
    });
    afterAll(async () => {
      await h?.down();
    });

    it("local pods resolve to their bridge ports", async () => {
      const { labLocalPods } = await import("../src/dataplane/lab/program.js");
      const local = await labLocalPods(h.lab);
      expect(local).toHaveLength(9);
      expect(local.every((p) => p.bridged)).toBe(true);
      expect(new Set(local.map((p) => p.hostIf))).toEqual(new Set(h.lab.pods.map((p) => p.hostIf)));
    });

    for (const i of [1, 2, 4, 7, 8, 9]) {
      const [name, pols, ports] = XYZ_SCENARIOS[i];
      it(name, async () => {
        h.setPolicies(pols);
        await h.sync();
        const { wrong, observed } = await h.compare(ports);
        expect(wrong).toEqual([]);
        expect(observed.results.some((r) => !r.allowed)).toBe(true);
      });
    }
  });

  describe("named ports per pod, endPort edges, SCTP", () => {
    let h: LabHarness;
    const ports: PortProto[] = [
      { port: 8080, protocol: "TCP" },
      { port: 9090, protocol: "TCP" },
      ...[31999, 32000, 32768, 32769].map((port) => ({ port, protocol: "TCP" as const })),
      { port: 7000, protocol: "TCP" },
      { port: 7000, protocol: "SCTP" },
    ];
    beforeAll(async () => {
      h = await LabHarness.up(`e2p${suffix}`, portsModel(), mode, ports);
    });
    afterAll(async () => {
      await h?.down();
    });

    it("named port http resolves per destination pod (8080 on web1, 9090 on web2)", async () => {
      h.setPolicies([
        policy("n", "http", { podSelector: sel({ app: "web" }), ingress: [{ ports: [{ port: "http" }] }] }),
      ]);
      await h.sync();
      const m = await h.compare(ports.slice(0, 2));
      expect(m.wrong).toEqual([]);
      const cell = (to: string, port: number) =>
        m.observed.results.find((r) => r.from === "n/client" && r.to === to && r.port === port)?.allowed;
      expect([
        cell("n/web1", 8080),
        cell("n/web1", 9090),
        cell("n/web2", 8080),
        cell("n/web2", 9090),
      ]).toEqual([true, false, false, true]);
    });

    it("egress named port with no `to`", async () => {
      h.setPolicies([
        policy("n", "eg-http", {
          podSelector: sel({ app: "client" }),
          policyTypes: ["Egress"],
          egress: [{ ports: [{ port: "http" }] }],
        }),
      ]);
      await h.sync();
      expect((await h.compare(ports.slice(0, 2))).wrong).toEqual([]);
    });

    it("endPort is inclusive at both edges", async () => {
      h.setPolicies([
        policy("n", "range", {
          podSelector: sel({ app: "web" }),
          ingress: [{ ports: [{ port: 32000, endPort: 32768 }] }],
        }),
      ]);
      await h.sync();
      const m = await h.compare(ports.slice(2, 6));
      expect(m.wrong).toEqual([]);
      const to1 = (port: number) =>
        m.observed.results.find((r) => r.from === "n/client" && r.to === "n/web1" && r.port === port)
          ?.allowed;
      expect([to1(31999), to1(32000), to1(32768), to1(32769)]).toEqual([false, true, true, false]);
    });

    it("SCTP-only rule allows SCTP and not TCP on the same port", async () => {
      h.setPolicies([
        policy("n", "sctp", {
          podSelector: sel({ app: "web" }),
          ingress: [{ ports: [{ port: 7000, protocol: "SCTP" }] }],
        }),
      ]);
      await h.sync();
      const m = await h.compare(ports.slice(6));
      expect(m.wrong).toEqual([]);
      const cell = (proto: string) =>
        m.observed.results.find((r) => r.from === "n/client" && r.to === "n/web1" && r.protocol === proto)
          ?.allowed;
      expect([cell("SCTP"), cell("TCP")]).toEqual([true, false]);
    });
  });

  describe("IPv6", () => {
    let h: LabHarness;
    const ports: PortProto[] = [TCP80, UDP80];
    beforeAll(async () => {
      h = await LabHarness.up(`e26${suffix}`, v6Model(), mode, ports);
    });
    afterAll(async () => {
      await h?.down();
    });

    it("ipBlock with except over IPv6, and a namespace selector", async () => {
      h.setPolicies([
        policy("v6", "a-in", {
          podSelector: sel({ pod: "a" }),
          ingress: [{ from: [{ ipBlock: { cidr: "fd00:79::/32", except: ["fd00:79:1::/64"] } }] }],
        }),
        policy("other", "c-in", {
          podSelector: {},
          ingress: [
            {
              from: [{ namespaceSelector: sel({ "kubernetes.io/metadata.name": "v6" }) }],
              ports: [{ port: 80 }],
            },
          ],
        }),
      ]);
      await h.sync();
      const m = await h.compare(ports);
      expect(m.wrong).toEqual([]);
      expect(
        m.observed.results.find((r) => r.from === "other/c" && r.to === "v6/a" && r.protocol === "TCP")
          ?.allowed,
      ).toBe(false);
      expect(
        m.observed.results.find((r) => r.from === "v6/b" && r.to === "v6/a" && r.protocol === "TCP")?.allowed,
      ).toBe(true);
    });

    it("::/0 allows every IPv6 source", async () => {
      h.setPolicies([
        policy("v6", "all6", { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: "::/0" } }] }] }),
      ]);
      await h.sync();
      expect((await h.compare([TCP80])).wrong).toEqual([]);
    });
  });
});

describe("a good neighbour: foreign rules survive, cleanup restores the node exactly", () => {
  let h: LabHarness;
  beforeAll(async () => {
    h = await LabHarness.up(`e2fi${process.pid.toString(36)}`.slice(0, 12), xyzModel(), "iptables");
  });
  afterAll(async () => {
    await h?.down();
  });

  const save = async () =>
    (await run("iptables-save", [], { netns: h.lab.nodeNetns })).stdout
      .split("\n")
      .filter((l) => !l.startsWith("#"))
      .map((l) => l.replace(/\[\d+:\d+\]/, "[0:0]"))
      .join("\n");
  const foreign = (s: string) =>
    s
      .split("\n")
      .filter((l) => !l.includes("PODWALL") && !l.includes("pw:"))
      .join("\n");

  it("keeps another component's chains and rules byte-for-byte across syncs, then cleans up only its own", async () => {
    const nsn = h.lab.nodeNetns;
    await run("iptables", ["-N", "OTHER-CHAIN"], { netns: nsn });
    await run("iptables", ["-A", "OTHER-CHAIN", "-s", "192.0.2.7", "-j", "DROP"], { netns: nsn });
    await run("iptables", ["-A", "FORWARD", "-j", "OTHER-CHAIN"], { netns: nsn });
    await run("iptables", ["-t", "nat", "-A", "POSTROUTING", "-s", "192.0.2.0/24", "-j", "MASQUERADE"], {
      netns: nsn,
    });
    await run("ipset", ["create", "other-set", "hash:ip"], { netns: nsn });
    const before = await save();
    h.setPolicies([policy("x", "deny", { podSelector: {} })]);
    await h.sync();
    h.setPolicies([
      policy("x", "deny", { podSelector: {} }),
      policy("y", "deny", { podSelector: {}, policyTypes: ["Egress"] }),
    ]);
    await h.sync();
    const during = await save();
    expect(during).toContain("PODWALL-FORWARD");
    expect(foreign(during)).toBe(foreign(before));
    expect((await h.compare([TCP80])).wrong).toEqual([]);
    const removed = await h.applier.cleanup();
    expect(removed.chains).toBeGreaterThan(0);
    expect(await save()).toBe(before);
    const sets = (await run("ipset", ["list", "-n"], { netns: nsn })).stdout.trim().split("\n");
    expect(sets).toEqual(["other-set"]);
  });

  it("a hand-deleted chain and a hand-flushed set come back after a re-read", async () => {
    h.setPolicies([
      policy("x", "from-b", { podSelector: {}, ingress: [{ from: [{ podSelector: sel({ pod: "b" }) }] }] }),
    ]);
    await h.sync();
    const nsn = h.lab.nodeNetns;
    // Drift: unhook and delete one pod chain, flush one set.
    await deletePodChainByHand(nsn);
    const set = (await run("ipset", ["list", "-n"], { netns: nsn })).stdout
      .split("\n")
      .find((s) => s.startsWith("PODWALL-S4"))!;
    await run("ipset", ["flush", set], { netns: nsn });
    h.applier.invalidate();
    const s = await h.sync();
    expect(s.chainsWritten).toBeGreaterThanOrEqual(2);
    expect(s.membersAdded).toBeGreaterThan(0);
    expect((await h.compare([TCP80])).wrong).toEqual([]);
  });
});
