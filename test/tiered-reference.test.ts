/**
 * The tiered reference evaluator (test/support/tiered-reference.ts), one rule of the decision order
 * at a time, since the conformance data and the differential tests take its answers as the truth.
 */
import { describe, expect, it } from "vitest";
import { parseObjects, type ReferenceFlow, TieredReference } from "./support/tiered-reference.js";

type Obj = Record<string, unknown>;

const ns = (name: string, labels: Record<string, string> = {}): Obj => ({
  kind: "Namespace",
  metadata: { name, labels },
});
const pod = (
  namespace: string,
  name: string,
  ips: string[],
  labels: Record<string, string> = {},
  extra: Obj = {},
) => ({
  kind: "Pod",
  metadata: { namespace, name, labels },
  spec: {
    containers: [
      {
        name: "c",
        ports: [
          { name: "web", containerPort: 8080 },
          { name: "dns", containerPort: 53, protocol: "UDP" },
        ],
      },
    ],
    ...extra,
  },
  status: { phase: "Running", podIP: ips[0], podIPs: ips.map((ip) => ({ ip })) },
});
const node = (name: string, addresses: string[], labels: Record<string, string> = {}) => ({
  kind: "Node",
  metadata: { name, labels },
  status: { addresses: addresses.map((address) => ({ type: "InternalIP", address })) },
});
const cnp = (name: string, tier: string, priority: number, spec: Obj): Obj => ({
  apiVersion: "policy.networking.k8s.io/v1alpha2",
  kind: "ClusterNetworkPolicy",
  metadata: { name },
  spec: { tier, priority, ...spec },
});
const inNs = (n: string) => ({ matchLabels: { "kubernetes.io/metadata.name": n } });
const all = {};

/** a/x, a/y in namespace a; b/z in namespace b; host/h a hostNetwork pod on node n1 (10.0.9.1). */
const base = (): Obj[] => [
  ns("a", { team: "red" }),
  ns("b", { team: "blue" }),
  ns("host"),
  pod("a", "x", ["10.0.0.1", "fd00::1"], { app: "x" }),
  pod("a", "y", ["10.0.0.2", "fd00::2"], { app: "y" }),
  pod("b", "z", ["10.0.1.1", "fd00:1::1"], { app: "z" }),
  pod("host", "h", ["10.0.9.1"], { app: "h" }, { hostNetwork: true }),
  node("n1", ["10.0.9.1"], { "kubernetes.io/os": "linux" }),
];

const tcp = (from: string, to: string, port = 8080): ReferenceFlow => ({ from, to, port, protocol: "TCP" });
const allowed = (objs: Obj[], flow: ReferenceFlow) =>
  new TieredReference([...base(), ...objs]).decide(flow).allowed;

describe("tiered reference: order of the tiers", () => {
  it("Admin: the lower priority number decides first; equal priorities go by name", () => {
    const deny = (name: string, p: number) =>
      cnp(name, "Admin", p, {
        subject: { namespaces: inNs("b") },
        ingress: [{ action: "Deny", from: [{ namespaces: all }] }],
      });
    const accept = (name: string, p: number) =>
      cnp(name, "Admin", p, {
        subject: { namespaces: inNs("b") },
        ingress: [{ action: "Accept", from: [{ namespaces: all }] }],
      });
    expect(allowed([deny("d", 10), accept("a", 20)], tcp("a/x", "b/z"))).toBe(false);
    expect(allowed([deny("d", 20), accept("a", 10)], tcp("a/x", "b/z"))).toBe(true);
    expect(allowed([deny("d", 10), accept("a", 10)], tcp("a/x", "b/z"))).toBe(true);
    expect(allowed([deny("a", 10), accept("d", 10)], tcp("a/x", "b/z"))).toBe(false);
  });

  it("within a policy the first matching rule decides, and names the rule", () => {
    const p = cnp("p", "Admin", 1, {
      subject: { namespaces: inNs("b") },
      ingress: [
        { name: "other", action: "Deny", from: [{ namespaces: inNs("b") }] },
        { name: "first", action: "Accept", from: [{ namespaces: inNs("a") }] },
        { name: "second", action: "Deny", from: [{ namespaces: inNs("a") }] },
      ],
    });
    const v = new TieredReference([...base(), p]).decide(tcp("a/x", "b/z"));
    expect(v.ingress).toEqual({
      allowed: true,
      tier: "admin",
      policy: "ClusterNetworkPolicy/p",
      rule: 1,
      ruleName: "first",
      passedBy: [],
    });
    expect(v.egress.tier).toBe("default");
  });

  it("Pass leaves the Admin tier: NetworkPolicy decides, else Baseline, else the default", () => {
    const pass = cnp("pass", "Admin", 1, {
      subject: { namespaces: inNs("b") },
      ingress: [
        { action: "Pass", from: [{ namespaces: all }] },
        { action: "Accept", from: [{ namespaces: all }] },
      ],
    });
    const later = cnp("later", "Admin", 2, {
      subject: { namespaces: inNs("b") },
      ingress: [{ action: "Accept", from: [{ namespaces: all }] }],
    });
    const np = {
      kind: "NetworkPolicy",
      metadata: { namespace: "b", name: "np" },
      spec: {
        podSelector: {},
        ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: "blue" } } }] }],
      },
    };
    const baselineDeny = cnp("bl", "Baseline", 1, {
      subject: { namespaces: inNs("b") },
      ingress: [{ action: "Deny", from: [{ namespaces: all }] }],
    });
    expect(allowed([pass, later, np], tcp("a/x", "b/z"))).toBe(false); // the NetworkPolicy admits only blue
    const v = new TieredReference([...base(), pass, later, baselineDeny]).decide(tcp("a/x", "b/z"));
    expect(v.ingress).toMatchObject({
      allowed: false,
      tier: "baseline",
      passedBy: ["ClusterNetworkPolicy/pass"],
    });
    expect(new TieredReference([...base(), pass, later]).decide(tcp("a/x", "b/z")).ingress).toMatchObject({
      allowed: true,
      tier: "default",
    });
  });

  it("a NetworkPolicy that selects the pod is final: Baseline only applies to pods it does not select", () => {
    const np = {
      kind: "NetworkPolicy",
      metadata: { namespace: "b", name: "np" },
      spec: { podSelector: {}, policyTypes: ["Ingress"] },
    };
    const baselineAccept = cnp("bl", "Baseline", 1, {
      subject: { namespaces: all },
      ingress: [{ action: "Accept", from: [{ namespaces: all }] }],
    });
    const baselineDeny = cnp("bd", "Baseline", 1, {
      subject: { namespaces: all },
      ingress: [{ action: "Deny", from: [{ namespaces: all }] }],
    });
    expect(allowed([np, baselineAccept], tcp("a/x", "b/z"))).toBe(false);
    expect(allowed([np, baselineDeny], tcp("b/z", "a/x"))).toBe(false);
    const overriding = {
      kind: "NetworkPolicy",
      metadata: { namespace: "a", name: "open" },
      spec: { podSelector: {}, ingress: [{}] },
    };
    expect(allowed([overriding, baselineDeny], tcp("b/z", "a/x"))).toBe(true);
    // Baseline Pass goes to the default.
    const basePass = cnp("bp", "Baseline", 0, {
      subject: { namespaces: all },
      ingress: [{ action: "Pass", from: [{ namespaces: all }] }],
    });
    expect(allowed([basePass, baselineDeny], tcp("b/z", "a/x"))).toBe(true);
  });

  it("a connection needs egress allowed at the source and ingress allowed at the destination", () => {
    const egressAccept = cnp("e", "Admin", 1, {
      subject: { namespaces: inNs("a") },
      egress: [{ action: "Accept", to: [{ namespaces: all }] }],
    });
    const ingressDeny = cnp("i", "Baseline", 1, {
      subject: { namespaces: inNs("b") },
      ingress: [{ action: "Deny", from: [{ namespaces: inNs("a") }] }],
    });
    const v = new TieredReference([...base(), egressAccept, ingressDeny]).decide(tcp("a/x", "b/z"));
    expect(v).toMatchObject({
      allowed: false,
      egress: { allowed: true, tier: "admin" },
      ingress: { allowed: false, tier: "baseline" },
    });
    expect(allowed([egressAccept, ingressDeny], tcp("a/x", "a/y"))).toBe(true);
  });

  it("the destination's own node may always reach it (ingress only): Node addresses, hostIPs, hostNetwork pods", () => {
    const onN1 = pod("b", "w", ["10.0.1.2"], { app: "w" }, { nodeName: "n1" });
    const onN2 = {
      ...pod("b", "v", ["10.0.1.3"], { app: "v" }, { nodeName: "n2" }),
      status: { phase: "Running", podIP: "10.0.1.3", hostIP: "10.0.8.2" },
    };
    // A NetworkPolicy that admits nothing into b (node addresses included), and no egress to n1.
    const isolate = {
      kind: "NetworkPolicy",
      metadata: { namespace: "b", name: "none" },
      spec: { podSelector: {} },
    };
    const noEgress = cnp("e", "Admin", 0, {
      subject: { namespaces: all },
      egress: [{ action: "Deny", to: [{ networks: ["10.0.9.1/32"] }] }],
    });
    const ref = new TieredReference([...base(), onN1, onN2, isolate, noEgress]);
    expect(ref.decide(tcp("10.0.9.1", "b/w")).ingress).toEqual({
      allowed: true,
      tier: "none",
      exempt: "node",
      passedBy: [],
    });
    expect(ref.decide(tcp("host/h", "b/w")).allowed).toBe(true); // h is hostNetwork on n1, with n1's address
    expect(ref.decide(tcp("10.0.8.2", "b/v")).allowed).toBe(true); // n2's address, known from v's hostIP
    expect(ref.decide(tcp("10.0.8.2", "b/w")).allowed).toBe(false); // another node's
    expect(ref.decide(tcp("10.0.9.1", "b/v")).allowed).toBe(false);
    expect(ref.decide(tcp("b/w", "10.0.9.1")).allowed).toBe(false); // egress to the node is policed
  });

  it("a pod's own traffic is never filtered", () => {
    const denyAll = cnp("d", "Admin", 0, {
      subject: { namespaces: all },
      ingress: [{ action: "Deny", from: [{ namespaces: all }] }],
      egress: [{ action: "Deny", to: [{ networks: ["0.0.0.0/0"] }] }],
    });
    expect(allowed([denyAll], tcp("a/x", "a/x"))).toBe(true);
    expect(allowed([denyAll], tcp("a/x", "a/y"))).toBe(false);
  });
});

describe("tiered reference: peers and ports", () => {
  it("hostNetwork pods are never subjects nor namespaces/pods peers, but are nodes and networks peers", () => {
    const ingressDenyAll = cnp("d", "Admin", 0, {
      subject: { namespaces: all },
      ingress: [{ action: "Deny", from: [{ namespaces: all }] }],
    });
    expect(allowed([ingressDenyAll], tcp("a/x", "host/h"))).toBe(true); // h is no subject
    expect(allowed([ingressDenyAll], tcp("host/h", "a/x"))).toBe(true); // nor a namespaces peer
    const toNodes = (sel: Obj) =>
      cnp("n", "Admin", 0, {
        subject: { namespaces: inNs("a") },
        egress: [{ action: "Deny", to: [{ nodes: sel }] }],
      });
    expect(allowed([toNodes({ matchLabels: { "kubernetes.io/os": "linux" } })], tcp("a/x", "host/h"))).toBe(
      false,
    );
    expect(allowed([toNodes({ matchLabels: { "kubernetes.io/os": "windows" } })], tcp("a/x", "host/h"))).toBe(
      true,
    );
    expect(allowed([toNodes(all)], tcp("a/x", "b/z"))).toBe(true); // a pod address is no node address
    const toNet = cnp("c", "Admin", 0, {
      subject: { namespaces: inNs("a") },
      egress: [{ action: "Deny", to: [{ networks: ["10.0.9.0/24"] }] }],
    });
    expect(allowed([toNet], tcp("a/x", "host/h"))).toBe(false);
  });

  it("pods peers need both selectors; networks match pod addresses, per family", () => {
    const podsPeer = cnp("p", "Admin", 0, {
      subject: { namespaces: all },
      ingress: [
        {
          action: "Deny",
          from: [
            {
              pods: {
                namespaceSelector: { matchLabels: { team: "red" } },
                podSelector: { matchLabels: { app: "y" } },
              },
            },
          ],
        },
      ],
    });
    expect(allowed([podsPeer], tcp("a/y", "b/z"))).toBe(false);
    expect(allowed([podsPeer], tcp("a/x", "b/z"))).toBe(true);
    const v6 = cnp("v6", "Admin", 0, {
      subject: { namespaces: inNs("a") },
      egress: [{ action: "Deny", to: [{ networks: ["fd00:1::/64"] }] }],
    });
    expect(allowed([v6], tcp("a/x", "fd00:1::1"))).toBe(false);
    expect(allowed([v6], tcp("a/x", "fd00::2"))).toBe(true);
    expect(allowed([v6], tcp("a/x", "10.0.1.1"))).toBe(true);
    const mapped = cnp("m", "Admin", 0, {
      subject: { namespaces: inNs("a") },
      egress: [{ action: "Deny", to: [{ networks: ["::ffff:10.0.1.0/120"] }] }],
    });
    expect(allowed([mapped], tcp("a/x", "::ffff:10.0.1.1"))).toBe(false);
    expect(allowed([mapped], tcp("a/x", "10.0.1.1"))).toBe(true); // an IPv4 packet is no IPv6 address
    const everything = cnp("e", "Admin", 0, {
      subject: { namespaces: inNs("a") },
      egress: [{ action: "Deny", to: [{ networks: ["::/0"] }] }],
    });
    expect(allowed([everything], tcp("a/x", "b/z"))).toBe(true); // a/x -> b/z talks IPv4
    expect(allowed([everything], tcp("a/x", "fd00:1::1"))).toBe(false);
  });

  it("protocols: number, inclusive range, a protocol without port, named ports on the destination pod", () => {
    const rule = (protocols: unknown[]) =>
      cnp("r", "Admin", 0, {
        subject: { namespaces: inNs("b") },
        ingress: [{ action: "Deny", from: [{ namespaces: all }], protocols }],
      });
    expect(allowed([rule([{ tcp: { destinationPort: { number: 8080 } } }])], tcp("a/x", "b/z", 8080))).toBe(
      false,
    );
    expect(allowed([rule([{ udp: { destinationPort: { number: 8080 } } }])], tcp("a/x", "b/z", 8080))).toBe(
      true,
    );
    const range = rule([{ tcp: { destinationPort: { range: { start: 100, end: 200 } } } }]);
    expect([99, 100, 200, 201].map((p) => allowed([range], tcp("a/x", "b/z", p)))).toEqual([
      true,
      false,
      false,
      true,
    ]);
    expect(allowed([rule([{ sctp: {} }])], { ...tcp("a/x", "b/z"), protocol: "SCTP" })).toBe(false);
    const named = (name: string) => rule([{ destinationNamedPort: name }]);
    expect(allowed([named("web")], tcp("a/x", "b/z", 8080))).toBe(false);
    expect(allowed([named("web")], tcp("a/x", "b/z", 80))).toBe(true);
    expect(allowed([named("dns")], tcp("a/x", "b/z", 53))).toBe(true); // dns is UDP
    expect(allowed([named("dns")], { ...tcp("a/x", "b/z", 53), protocol: "UDP" })).toBe(false);
    // Egress: the named port is the peer's; a destination that is no pod has none.
    const egressNamed = cnp("en", "Admin", 0, {
      subject: { namespaces: inNs("a") },
      egress: [
        {
          action: "Deny",
          to: [{ networks: ["0.0.0.0/0"] }, { namespaces: all }],
          protocols: [{ destinationNamedPort: "web" }],
        },
      ],
    });
    expect(allowed([egressNamed], tcp("a/x", "b/z", 8080))).toBe(false);
    expect(allowed([egressNamed], tcp("a/x", "host/h", 8080))).toBe(true);
  });

  it("fails closed on a peer it does not know, and domainNames match nothing", () => {
    const rule = (action: string, peer: Obj) =>
      cnp("r", "Admin", 0, { subject: { namespaces: inNs("a") }, egress: [{ action, to: [peer] }] });
    expect(allowed([rule("Pass", { fromTheFuture: {} })], tcp("a/x", "b/z"))).toBe(false);
    expect(allowed([rule("Deny", { fromTheFuture: {} })], tcp("a/x", "b/z"))).toBe(false);
    const baselineDeny = cnp("bd", "Baseline", 0, {
      subject: { namespaces: all },
      egress: [{ action: "Deny", to: [{ namespaces: all }] }],
    });
    expect(allowed([rule("Accept", { fromTheFuture: {} }), baselineDeny], tcp("a/x", "b/z"))).toBe(false);
    expect(allowed([rule("Accept", { domainNames: ["example.com"] }), baselineDeny], tcp("a/x", "b/z"))).toBe(
      false,
    );
    expect(allowed([rule("Accept", { namespaces: all }), baselineDeny], tcp("a/x", "b/z"))).toBe(true);
  });
});

describe("tiered reference: AdminNetworkPolicy and BaselineAdminNetworkPolicy (v1alpha1)", () => {
  const anp = (name: string, priority: number, spec: Obj): Obj => ({
    kind: "AdminNetworkPolicy",
    metadata: { name },
    spec: { priority, ...spec },
  });
  const banp = (name: string, spec: Obj): Obj => ({
    kind: "BaselineAdminNetworkPolicy",
    metadata: { name },
    spec,
  });

  it("ANP Allow/Deny/Pass sit in the Admin tier by priority; ports are portNumber, portRange (TCP default) and namedPort", () => {
    const a = (priority: number, action: string, ports?: unknown[]) =>
      anp(`p${priority}`, priority, {
        subject: { namespaces: inNs("b") },
        ingress: [{ action, from: [{ namespaces: all }], ...(ports ? { ports } : {}) }],
      });
    const c = cnp("c", "Admin", 5, {
      subject: { namespaces: inNs("b") },
      ingress: [{ action: "Deny", from: [{ namespaces: all }] }],
    });
    expect(allowed([a(1, "Allow"), c], tcp("a/x", "b/z"))).toBe(true);
    expect(allowed([a(9, "Allow"), c], tcp("a/x", "b/z"))).toBe(false);
    expect(allowed([a(1, "Pass"), c], tcp("a/x", "b/z"))).toBe(true);
    expect(allowed([a(1, "Deny", [{ portNumber: { port: 8080 } }])], tcp("a/x", "b/z", 8080))).toBe(false);
    expect(
      allowed([a(1, "Deny", [{ portNumber: { protocol: "UDP", port: 8080 } }])], tcp("a/x", "b/z", 8080)),
    ).toBe(true);
    expect(
      allowed([a(1, "Deny", [{ portRange: { start: 8000, end: 8080 } }])], tcp("a/x", "b/z", 8080)),
    ).toBe(false);
    expect(
      allowed([a(1, "Deny", [{ portRange: { start: 8000, end: 8079 } }])], tcp("a/x", "b/z", 8080)),
    ).toBe(true);
    expect(allowed([a(1, "Deny", [{ namedPort: "web" }])], tcp("a/x", "b/z", 8080))).toBe(false);
    // Equal priority and name: the AdminNetworkPolicy first, as podwall orders them.
    const same = cnp("p1", "Admin", 1, {
      subject: { namespaces: inNs("b") },
      ingress: [{ action: "Accept", from: [{ namespaces: all }] }],
    });
    expect(allowed([a(1, "Deny"), same], tcp("a/x", "b/z"))).toBe(false);
    expect(
      allowed(
        [
          a(1, "Allow"),
          {
            ...same,
            spec: { ...(same.spec as Obj), ingress: [{ action: "Deny", from: [{ namespaces: all }] }] },
          },
        ],
        tcp("a/x", "b/z"),
      ),
    ).toBe(true);
  });

  it("the BANP named default sits in the Baseline tier after every Baseline ClusterNetworkPolicy; others are ignored", () => {
    const b = (name: string, action: string) =>
      banp(name, { subject: { namespaces: inNs("b") }, ingress: [{ action, from: [{ namespaces: all }] }] });
    expect(allowed([b("default", "Deny")], tcp("a/x", "b/z"))).toBe(false);
    expect(allowed([b("other", "Deny")], tcp("a/x", "b/z"))).toBe(true);
    const bl = cnp("zz", "Baseline", 1000, {
      subject: { namespaces: inNs("b") },
      ingress: [{ action: "Accept", from: [{ namespaces: all }] }],
    });
    expect(allowed([b("default", "Deny"), bl], tcp("a/x", "b/z"))).toBe(true);
    const np = {
      kind: "NetworkPolicy",
      metadata: { namespace: "b", name: "open" },
      spec: { podSelector: {}, ingress: [{}] },
    };
    expect(allowed([b("default", "Deny"), np], tcp("a/x", "b/z"))).toBe(true);
  });
});

describe("tiered reference: input", () => {
  it("reads multi-document YAML and List objects; names pods or takes addresses; refuses unknown pods", () => {
    const objs = parseObjects(
      "kind: List\nitems:\n  - {kind: Namespace, metadata: {name: a}}\n---\nkind: Pod\nmetadata: {namespace: a, name: x}\nstatus: {podIP: 10.1.0.1}\n",
    );
    expect(objs).toHaveLength(2);
    const ref = new TieredReference(objs);
    expect(ref.decide(tcp("a/x", "10.9.9.9"))).toMatchObject({
      allowed: true,
      src: "10.1.0.1",
      dst: "10.9.9.9",
    });
    expect(() => ref.decide(tcp("a/nope", "a/x"))).toThrow(/no pod a\/nope/);
    expect(() => ref.decide(tcp("a/x", "fd00::1"))).toThrow(/share no address family/);
    // Dual-stack pods talk over the destination's first address.
    expect(new TieredReference(base()).decide(tcp("a/x", "b/z"))).toMatchObject({
      src: "10.0.0.1",
      dst: "10.0.1.1",
    });
  });
});
