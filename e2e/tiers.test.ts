/**
 * The tiered model with real packets, both dataplanes: ClusterNetworkPolicy Admin and Baseline rules
 * of every action around NetworkPolicies, on the x/y/z model; every cell the lab probes must equal
 * what `simulate` (the compiled table) says.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PortProto } from "../src/compiler/matrix.js";
import { LabHarness, type Mode } from "./support/harness.js";
import { type Obj, policy, sel, xyzModel } from "./support/model.js";

const MODES: Mode[] = ["iptables", "nfqueue"];
const TCP80: PortProto = { port: 80, protocol: "TCP" };
const TCP81: PortProto = { port: 81, protocol: "TCP" };
const UDP80: PortProto = { port: 80, protocol: "UDP" };

const nsSel = (name: string) => ({ namespaces: { matchLabels: { ns: name } } });

function cnp(name: string, tier: "Admin" | "Baseline", priority: number, spec: Obj): Obj {
  return {
    apiVersion: "policy.networking.k8s.io/v1alpha2",
    kind: "ClusterNetworkPolicy",
    metadata: { name },
    spec: { tier, priority, ...spec },
  };
}

const SCENARIOS: [string, Obj[], PortProto[]][] = [
  [
    "Admin Deny overrides a NetworkPolicy that allows",
    [
      policy("x", "allow-y", {
        podSelector: {},
        ingress: [{ from: [{ namespaceSelector: sel({ ns: "y" }) }] }],
      }),
      cnp("no-y-to-x", "Admin", 10, {
        subject: nsSel("x"),
        ingress: [
          {
            action: "Deny",
            from: [{ pods: { namespaceSelector: sel({ ns: "y" }), podSelector: sel({ pod: "a" }) } }],
          },
        ],
      }),
    ],
    [TCP80],
  ],
  [
    "Admin Accept overrides a NetworkPolicy default deny; egress Accept still needs ingress",
    [
      policy("x", "deny-all", { podSelector: {} }),
      cnp("z-in", "Admin", 5, { subject: nsSel("x"), ingress: [{ action: "Accept", from: [nsSel("z")] }] }),
      cnp("y-out", "Admin", 6, { subject: nsSel("y"), egress: [{ action: "Accept", to: [nsSel("x")] }] }),
    ],
    [TCP80],
  ],
  [
    "Admin Pass hands over to the NetworkPolicy tier; priority and rule order",
    [
      policy("x", "only-b", {
        podSelector: {},
        ingress: [{ from: [{ namespaceSelector: {}, podSelector: sel({ pod: "b" }) }] }],
      }),
      cnp("first", "Admin", 1, {
        subject: nsSel("x"),
        ingress: [
          { name: "pass-y", action: "Pass", from: [nsSel("y")] },
          { name: "deny-y", action: "Deny", from: [nsSel("y")] },
        ],
      }),
      cnp("second", "Admin", 2, {
        subject: nsSel("x"),
        ingress: [
          { action: "Deny", from: [nsSel("y")] },
          { action: "Accept", from: [nsSel("z")] },
        ],
      }),
    ],
    [TCP80],
  ],
  [
    "Baseline default deny, overridden by a NetworkPolicy; a baseline Pass allows",
    [
      cnp("deny-z", "Baseline", 10, {
        subject: nsSel("z"),
        ingress: [{ action: "Deny", from: [{ namespaces: {} }] }],
      }),
      cnp("pass-x", "Baseline", 5, {
        subject: nsSel("z"),
        ingress: [{ action: "Pass", from: [nsSel("x")] }],
      }),
      policy("z", "a-from-y", {
        podSelector: sel({ pod: "a" }),
        ingress: [{ from: [{ namespaceSelector: sel({ ns: "y" }) }] }],
      }),
    ],
    [TCP80],
  ],
  [
    "protocols: TCP and UDP numbers, ranges, named ports; networks peers match pods",
    [
      cnp("egress", "Admin", 3, {
        subject: nsSel("y"),
        egress: [
          { action: "Accept", to: [nsSel("x")], protocols: [{ destinationNamedPort: "serve-81-tcp" }] },
          {
            action: "Accept",
            to: [nsSel("x")],
            protocols: [{ udp: { destinationPort: { range: { start: 79, end: 80 } } } }],
          },
          { action: "Deny", to: [{ networks: ["10.77.0.0/24"] }] },
          { action: "Deny", to: [nsSel("z")], protocols: [{ tcp: { destinationPort: { number: 80 } } }] },
        ],
      }),
    ],
    [TCP80, TCP81, UDP80],
  ],
];

describe.each(MODES)("tiers with real packets, %s", (mode) => {
  let h: LabHarness;
  beforeAll(async () => {
    h = await LabHarness.up(`t${mode[0]}${process.pid.toString(36)}`.slice(0, 12), xyzModel(), mode);
  });
  afterAll(async () => {
    await h?.down();
  });

  for (const [name, pols, ports] of SCENARIOS) {
    it(name, async () => {
      h.setPolicies(pols);
      await h.sync();
      const { wrong, expected } = await h.compare(ports);
      expect(expected.results.length).toBe(81 * ports.length);
      // Every scenario denies something and allows something: the cells are not all one answer.
      expect(expected.results.some((r) => r.allowed)).toBe(true);
      expect(expected.results.some((r) => !r.allowed)).toBe(true);
      expect(wrong).toEqual([]);
    });
  }

  it("removing the cluster policies restores every connection", async () => {
    h.setPolicies([]);
    await h.sync();
    const { wrong, observed } = await h.compare([TCP80]);
    expect(wrong).toEqual([]);
    expect(observed.results.every((r) => r.allowed)).toBe(true);
  });
});
