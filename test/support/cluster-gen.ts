/**
 * cluster-gen: builders for hand-written test clusters, fast-check arbitraries for random clusters
 * and event sequences (property tests), and a seeded synthetic large-cluster generator (bench).
 */
import fc from "fast-check";
import { canonicalIP } from "../../src/compiler/ip.js";
import type {
  ContainerPort,
  Flow,
  NamespaceInfo,
  NodeInfo,
  PodInfo,
  ProtoName,
  ProtoNum,
} from "../../src/compiler/model.js";
import { podKey } from "../../src/compiler/model.js";
import type { PolicyTable } from "../../src/compiler/table.js";
import type { PlainCluster } from "./plain-evaluator.js";

// biome-ignore lint/suspicious/noExplicitAny: raw NetworkPolicy objects
export type RawPolicy = any;

// ------------------------------------------------------------------ builders

export interface PodOpts {
  phase?: string;
  hostNetwork?: boolean;
  ports?: ContainerPort[];
  nodeName?: string;
}

export function mkPod(
  namespace: string,
  name: string,
  labels: Record<string, string>,
  ips: string | string[],
  opts: PodOpts = {},
): PodInfo {
  return {
    namespace,
    name,
    labels,
    ips: (Array.isArray(ips) ? ips : [ips]).map((ip) => canonicalIP(ip) ?? ip),
    nodeName: opts.nodeName ?? "node-1",
    hostNetwork: opts.hostNetwork ?? false,
    phase: opts.phase ?? "Running",
    ports: opts.ports ?? [],
  };
}

export function mkNs(name: string, labels: Record<string, string> = {}): NamespaceInfo {
  return { name, labels };
}

export function mkPolicy(namespace: string, name: string, spec: Record<string, unknown>): RawPolicy {
  return { apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: { namespace, name }, spec };
}

export function cport(name: string, port: number, protocol: ProtoName = "TCP"): ContainerPort {
  return { name, port, protocol };
}

export function mkFlow(src: string, dst: string, port = 80, proto: ProtoNum = 6): Flow {
  return { src, dst, proto, port };
}

// ------------------------------------------------------------------ cluster state + events

export interface ClusterState {
  pods: Map<string, PodInfo>;
  namespaces: Map<string, NamespaceInfo>;
  policies: Map<string, RawPolicy>;
}

export type ClusterEvent =
  | { kind: "pod"; pod: PodInfo }
  | { kind: "podDelete"; namespace: string; name: string }
  | { kind: "ns"; ns: NamespaceInfo }
  | { kind: "nsDelete"; name: string }
  | { kind: "policy"; policy: RawPolicy }
  | { kind: "policyDelete"; namespace: string; name: string };

export function emptyState(): ClusterState {
  return { pods: new Map(), namespaces: new Map(), policies: new Map() };
}

export function cloneState(s: ClusterState): ClusterState {
  return { pods: new Map(s.pods), namespaces: new Map(s.namespaces), policies: new Map(s.policies) };
}

export function applyToState(s: ClusterState, ev: ClusterEvent): void {
  switch (ev.kind) {
    case "pod":
      // Re-inserting moves the pod to the end: "later in the array" = most recently changed.
      s.pods.delete(podKey(ev.pod));
      s.pods.set(podKey(ev.pod), ev.pod);
      break;
    case "podDelete":
      s.pods.delete(`${ev.namespace}/${ev.name}`);
      break;
    case "ns":
      s.namespaces.set(ev.ns.name, ev.ns);
      break;
    case "nsDelete":
      s.namespaces.delete(ev.name);
      break;
    case "policy":
      s.policies.set(`${ev.policy.metadata.namespace}/${ev.policy.metadata.name}`, ev.policy);
      break;
    case "policyDelete":
      s.policies.delete(`${ev.namespace}/${ev.name}`);
      break;
  }
}

export function applyToTable(t: PolicyTable, ev: ClusterEvent): void {
  switch (ev.kind) {
    case "pod":
      t.upsertPod(ev.pod);
      break;
    case "podDelete":
      t.deletePod(ev.namespace, ev.name);
      break;
    case "ns":
      t.upsertNamespace(ev.ns);
      break;
    case "nsDelete":
      t.deleteNamespace(ev.name);
      break;
    case "policy":
      t.upsertPolicy(ev.policy);
      break;
    case "policyDelete":
      t.deletePolicy(ev.namespace, ev.name);
      break;
  }
}

/** Build a table from a state in one pass (namespaces, pods, policies). */
export function loadTable(t: PolicyTable, s: ClusterState): PolicyTable {
  for (const ns of s.namespaces.values()) t.upsertNamespace(ns);
  for (const p of s.pods.values()) t.upsertPod(p);
  for (const pol of s.policies.values()) t.upsertPolicy(pol);
  return t;
}

export function toPlain(s: ClusterState): PlainCluster {
  return {
    pods: [...s.pods.values()],
    namespaces: [...s.namespaces.values()],
    policies: [...s.policies.values()],
  };
}

function isLive(p: PodInfo): boolean {
  return !p.hostNetwork && p.phase !== "Succeeded" && p.phase !== "Failed";
}

/** True when two live (policy-relevant) pods hold the same IP: which one owns it is implementation-defined. */
export function hasLiveIPConflict(s: ClusterState): boolean {
  const seen = new Set<string>();
  for (const p of s.pods.values()) {
    if (!isLive(p)) continue;
    for (const ip of new Set(p.ips)) {
      if (seen.has(ip)) return true;
      seen.add(ip);
    }
  }
  return false;
}

// ------------------------------------------------------------------ fast-check arbitraries

export const NAMESPACES = ["alpha", "beta", "gamma", "delta"] as const;
const POD_NAMES = ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9"];
const POLICY_NAMES = ["np0", "np1", "np2", "np3", "np4", "np5", "np6"];

export const POD_IPS = [
  ...Array.from({ length: 12 }, (_, i) => `10.0.0.${i + 1}`),
  ...Array.from({ length: 8 }, (_, i) => `10.1.2.${i + 1}`),
  "10.1.9.9",
  ...Array.from({ length: 4 }, (_, i) => `10.2.0.${i + 1}`),
  // IPv6 (from index V6_START on)
  ...Array.from({ length: 8 }, (_, i) => `fd00::${i + 1}`),
  "fd00::1:0:0:1",
  "fd00::ab",
];
const V6_START = 25;
export const NODE_IPS = ["192.168.0.10", "192.168.0.11"];
/** Addresses that are never pod IPs (but some fall inside policy CIDRs). */
export const EXTERNAL_IPS = [
  "10.0.0.200",
  "10.1.200.1",
  "10.3.0.1",
  "8.8.8.8",
  "192.168.0.99",
  "2001:db8::1",
  "fd00::ff",
  "fe80::1",
  "::ffff:10.1.2.3",
  "::1",
].map((ip) => canonicalIP(ip)!);

const POD_PORTS: ContainerPort[] = [
  cport("http", 8080),
  cport("http", 9090),
  cport("http", 80),
  cport("http", 53, "UDP"),
  cport("dns", 53, "UDP"),
  cport("dns", 53),
  cport("metrics", 9090),
  cport("", 81),
  cport("assoc", 80, "SCTP"),
  cport("", 81, "UDP"),
];

/** Ports flows probe: every declared number, range edges, and a few nobody declares. */
export const FLOW_PORTS = [53, 79, 80, 81, 82, 443, 8080, 8081, 9090, 9091, 1234, 65535];

/** A pod's container ports, as podArb draws them. */
export const podPortsArb: fc.Arbitrary<ContainerPort[]> = fc.subarray(POD_PORTS, { maxLength: 4 });

const podLabelsArb: fc.Arbitrary<Record<string, string>> = fc.record(
  {
    app: fc.constantFrom("web", "db", "api"),
    tier: fc.constantFrom("fe", "be"),
    env: fc.constantFrom("prod", "dev"),
  },
  { requiredKeys: [] },
);

const nsLabelsArb: fc.Arbitrary<Record<string, string>> = fc.record(
  { team: fc.constantFrom("red", "blue"), env: fc.constantFrom("prod", "dev") },
  { requiredKeys: [] },
);

const phaseArb = fc.constantFrom(
  "Running",
  "Running",
  "Running",
  "Running",
  "Pending",
  "Succeeded",
  "Failed",
);

const podIPsArb = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...POD_IPS).map((ip) => [ip]) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.constantFrom(...POD_IPS.slice(0, V6_START)), fc.constantFrom(...POD_IPS.slice(V6_START)))
      .map(([a, b]) => [a, b]),
  },
  { weight: 1, arbitrary: fc.constant([] as string[]) },
);

export const podArb: fc.Arbitrary<PodInfo> = fc
  .record({
    namespace: fc.constantFrom(...NAMESPACES),
    name: fc.constantFrom(...POD_NAMES),
    labels: podLabelsArb,
    ips: podIPsArb,
    phase: phaseArb,
    hostNetwork: fc.constantFrom(false, false, false, false, false, true),
    ports: fc.subarray(POD_PORTS, { maxLength: 4 }),
  })
  .map(
    (r): PodInfo =>
      r.hostNetwork
        ? mkPod(r.namespace, r.name, r.labels, [NODE_IPS[r.name.length % 2]], {
            hostNetwork: true,
            phase: r.phase,
            ports: r.ports,
          })
        : mkPod(r.namespace, r.name, r.labels, r.ips, { phase: r.phase, ports: r.ports }),
  );

export const podSelectorArb = fc.oneof(
  fc.constant({}),
  fc.constantFrom("web", "db", "api").map((app) => ({ matchLabels: { app } })),
  fc.constantFrom("fe", "be").map((tier) => ({ matchLabels: { app: "web", tier } })),
  fc.subarray(["web", "db", "api"], { minLength: 1 }).map((values) => ({
    matchExpressions: [{ key: "app", operator: "In", values }],
  })),
  fc.subarray(["web", "db", "api"], { minLength: 1 }).map((values) => ({
    matchExpressions: [{ key: "app", operator: "NotIn", values }],
  })),
  fc.constantFrom("app", "tier", "env").map((key) => ({ matchExpressions: [{ key, operator: "Exists" }] })),
  fc.constantFrom("app", "tier", "env").map((key) => ({
    matchExpressions: [{ key, operator: "DoesNotExist" }],
  })),
  fc.constant({
    matchLabels: { env: "prod" },
    matchExpressions: [{ key: "tier", operator: "In", values: ["fe", "be"] }],
  }),
);

export const nsSelectorArb = fc.oneof(
  fc.constant({}),
  fc.constantFrom("red", "blue").map((team) => ({ matchLabels: { team } })),
  fc.constantFrom(...NAMESPACES).map((n) => ({ matchLabels: { "kubernetes.io/metadata.name": n } })),
  fc.constantFrom(...NAMESPACES).map((n) => ({
    matchExpressions: [{ key: "kubernetes.io/metadata.name", operator: "NotIn", values: [n] }],
  })),
  fc.constant({ matchExpressions: [{ key: "env", operator: "Exists" }] }),
  fc.constant({ matchExpressions: [{ key: "team", operator: "DoesNotExist" }] }),
);

const ipBlockArb = fc.constantFrom(
  { cidr: "10.0.0.0/8", except: ["10.1.0.0/16"] },
  { cidr: "10.1.0.0/16" },
  { cidr: "10.1.2.3/16", except: ["10.1.2.0/24"] },
  { cidr: "10.0.0.5/32" },
  { cidr: "10.0.0.0/29", except: ["10.0.0.4/30", "10.0.0.1/32"] },
  { cidr: "0.0.0.0/0" },
  { cidr: "0.0.0.0/0", except: ["10.0.0.0/8", "192.168.0.0/16"] },
  { cidr: "::/0" },
  { cidr: "fd00::/64", except: ["fd00::/126"] },
  { cidr: "fd00::1:0:0:1/128" },
  { cidr: "192.168.0.0/24" },
);

const peerArb = fc.oneof(
  { weight: 3, arbitrary: podSelectorArb.map((podSelector) => ({ podSelector })) },
  { weight: 2, arbitrary: nsSelectorArb.map((namespaceSelector) => ({ namespaceSelector })) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(podSelectorArb, nsSelectorArb)
      .map(([podSelector, namespaceSelector]) => ({ podSelector, namespaceSelector })),
  },
  { weight: 2, arbitrary: ipBlockArb.map((ipBlock) => ({ ipBlock })) },
);

const protoArb = fc.constantFrom(undefined, "TCP", "UDP", "SCTP");

const portEntryArb = fc.oneof(
  fc
    .tuple(fc.constantFrom(53, 80, 81, 443, 8080, 9090), protoArb)
    .map(([port, protocol]) => (protocol ? { port, protocol } : { port })),
  fc
    .tuple(fc.constantFrom(53, 80, 81, 8080), fc.constantFrom(0, 1, 10, 1000), protoArb)
    .map(([port, span, protocol]) => ({ port, endPort: port + span, ...(protocol ? { protocol } : {}) })),
  fc
    .tuple(fc.constantFrom("http", "dns", "metrics", "assoc", "nope"), protoArb)
    .map(([port, protocol]) => (protocol ? { port, protocol } : { port })),
  protoArb.map((protocol) => (protocol ? { protocol } : {})),
);

function optionalList<T>(item: fc.Arbitrary<T>, max: number, listWeight = 4): fc.Arbitrary<T[] | undefined> {
  return fc.oneof(
    { weight: 2, arbitrary: fc.constant(undefined) },
    { weight: 1, arbitrary: fc.constant([] as T[]) },
    { weight: listWeight, arbitrary: fc.array(item, { minLength: 1, maxLength: max }) },
  );
}

function ruleArb(peerField: "from" | "to") {
  return fc.record({ peers: optionalList(peerArb, 3, 8), ports: optionalList(portEntryArb, 3) }).map((r) => {
    const rule: Record<string, unknown> = {};
    if (r.peers !== undefined) rule[peerField] = r.peers;
    if (r.ports !== undefined) rule.ports = r.ports;
    return rule;
  });
}

export const policyArb: fc.Arbitrary<RawPolicy> = fc
  .record({
    namespace: fc.constantFrom(...NAMESPACES),
    name: fc.constantFrom(...POLICY_NAMES),
    podSelector: podSelectorArb,
    policyTypes: fc.constantFrom(
      undefined,
      [],
      ["Ingress"],
      ["Egress"],
      ["Ingress", "Egress"],
      ["Egress", "Ingress"],
    ),
    ingress: optionalList(ruleArb("from"), 3),
    egress: optionalList(ruleArb("to"), 3),
  })
  .map((r) => {
    const spec: Record<string, unknown> = { podSelector: r.podSelector };
    if (r.policyTypes !== undefined) spec.policyTypes = r.policyTypes;
    if (r.ingress !== undefined) spec.ingress = r.ingress;
    if (r.egress !== undefined) spec.egress = r.egress;
    return mkPolicy(r.namespace, r.name, spec);
  });

// ------------------------------------------------------------------ cluster-scoped policies, nodes

const CNP_NAMES = ["c0", "c1", "c2", "c3", "c4"];

/** Nodes holding the hostNetwork pods' addresses, with labels `nodes` peers select on. */
export const nodeArb: fc.Arbitrary<NodeInfo> = fc
  .record({
    name: fc.constantFrom("node-1", "node-2"),
    labels: fc.record(
      { role: fc.constantFrom("infra", "worker"), zone: fc.constantFrom("a", "b") },
      { requiredKeys: [] },
    ),
    addresses: fc.subarray([...NODE_IPS, "192.168.0.20"], { minLength: 1, maxLength: 2 }),
  })
  .map((r) => ({ name: r.name, labels: r.labels, addresses: r.addresses }));

const cnpSubjectArb = fc.oneof(
  nsSelectorArb.map((namespaces) => ({ namespaces })),
  fc
    .tuple(nsSelectorArb, podSelectorArb)
    .map(([namespaceSelector, podSelector]) => ({ pods: { namespaceSelector, podSelector } })),
);

const cnpProtocolArb = fc.oneof(
  fc
    .tuple(fc.constantFrom("tcp", "udp", "sctp"), fc.constantFrom(53, 80, 81, 8080, 9090))
    .map(([p, n]) => ({ [p]: { destinationPort: { number: n } } })),
  fc
    .tuple(fc.constantFrom("tcp", "udp"), fc.constantFrom(53, 79, 80), fc.constantFrom(1, 2, 1000))
    .map(([p, start, span]) => ({ [p]: { destinationPort: { range: { start, end: start + span } } } })),
  fc.constantFrom("http", "dns", "metrics", "nope").map((destinationNamedPort) => ({ destinationNamedPort })),
);

function cnpRuleArb(dir: "ingress" | "egress") {
  const selPeer = fc.oneof(
    nsSelectorArb.map((namespaces) => ({ namespaces })),
    fc
      .tuple(nsSelectorArb, podSelectorArb)
      .map(([namespaceSelector, podSelector]) => ({ pods: { namespaceSelector, podSelector } })),
  );
  const peer =
    dir === "ingress"
      ? selPeer
      : fc.oneof(
          { weight: 3, arbitrary: selPeer },
          {
            weight: 1,
            arbitrary: fc
              .constantFrom({ matchLabels: { role: "infra" } }, {}, { matchLabels: { zone: "b" } })
              .map((nodes) => ({ nodes })),
          },
          {
            weight: 1,
            arbitrary: fc
              .subarray(["10.0.0.0/30", "10.1.0.0/16", "0.0.0.0/0", "fd00::/126", "192.168.0.0/24"], {
                minLength: 1,
              })
              .map((networks) => ({ networks })),
          },
        );
  return fc
    .record({
      name: fc.constantFrom(undefined, "r"),
      action: fc.constantFrom("Accept", "Deny", "Pass"),
      peers: fc.array(peer, { minLength: 1, maxLength: 2 }),
      protocols: fc.option(fc.array(cnpProtocolArb, { minLength: 1, maxLength: 2 }), { nil: undefined }),
    })
    .map((r) => {
      // A named port cannot go with nodes or networks peers (the API refuses it).
      const plain = r.peers.some((p) => "nodes" in p || "networks" in p);
      const protocols = plain ? r.protocols?.filter((p) => !("destinationNamedPort" in p)) : r.protocols;
      const rule: Record<string, unknown> = {
        action: r.action,
        [dir === "ingress" ? "from" : "to"]: r.peers,
      };
      if (r.name) rule.name = r.name;
      if (protocols && protocols.length > 0) rule.protocols = protocols;
      return rule;
    });
}

/** Random ClusterNetworkPolicies: both tiers, all actions, every peer kind; few priorities (ties). */
export const clusterPolicyArb: fc.Arbitrary<RawPolicy> = fc
  .record({
    name: fc.constantFrom(...CNP_NAMES),
    tier: fc.constantFrom("Admin", "Baseline"),
    priority: fc.constantFrom(0, 5, 5, 10),
    subject: cnpSubjectArb,
    ingress: fc.option(fc.array(cnpRuleArb("ingress"), { minLength: 1, maxLength: 3 }), { nil: undefined }),
    egress: fc.option(fc.array(cnpRuleArb("egress"), { minLength: 1, maxLength: 3 }), { nil: undefined }),
  })
  .map((r) => {
    const spec: Record<string, unknown> = { tier: r.tier, priority: r.priority, subject: r.subject };
    if (r.ingress) spec.ingress = r.ingress;
    if (r.egress) spec.egress = r.egress;
    return {
      apiVersion: "policy.networking.k8s.io/v1alpha2",
      kind: "ClusterNetworkPolicy",
      metadata: { name: r.name },
      spec,
    };
  });

/** A PodInfo as the API object a plain evaluator reads. */
export function podObject(p: PodInfo): RawPolicy {
  const containers = [
    {
      name: "c",
      ports: p.ports.map((c) => ({
        ...(c.name ? { name: c.name } : {}),
        containerPort: c.port,
        protocol: c.protocol,
      })),
    },
  ];
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: p.name, namespace: p.namespace, labels: { ...p.labels } },
    spec: { nodeName: p.nodeName, hostNetwork: p.hostNetwork, containers },
    status: {
      phase: p.phase,
      podIPs: p.ips.map((ip) => ({ ip })),
      ...(p.ips[0] ? { podIP: p.ips[0] } : {}),
      ...(p.hostIPs ? { hostIPs: p.hostIPs.map((ip) => ({ ip })) } : {}),
    },
  };
}

export function namespaceObject(n: NamespaceInfo): RawPolicy {
  return { apiVersion: "v1", kind: "Namespace", metadata: { name: n.name, labels: { ...n.labels } } };
}

export function nodeObject(n: NodeInfo): RawPolicy {
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: { name: n.name, labels: { ...n.labels } },
    status: { addresses: n.addresses.map((address) => ({ type: "InternalIP", address })) },
  };
}

/** An event "intent": resolved against the current state into a concrete ClusterEvent. */
export type EventIntent =
  | { kind: "pod"; pod: PodInfo }
  | { kind: "relabel"; index: number; labels: Record<string, string> }
  | { kind: "phase"; index: number; phase: string }
  | { kind: "ips"; index: number; ips: string[] }
  | { kind: "podDelete"; index: number }
  | { kind: "ns"; ns: NamespaceInfo }
  | { kind: "nsDelete"; name: string }
  | { kind: "policy"; policy: RawPolicy }
  | { kind: "policyDelete"; index: number };

export const nsArb = fc
  .record({ name: fc.constantFrom(...NAMESPACES), labels: nsLabelsArb })
  .map((r) => mkNs(r.name, r.labels));

export const eventIntentArb: fc.Arbitrary<EventIntent> = fc.oneof(
  { weight: 3, arbitrary: podArb.map((pod) => ({ kind: "pod" as const, pod })) },
  {
    weight: 3,
    arbitrary: fc
      .record({ index: fc.nat(), labels: podLabelsArb })
      .map((r) => ({ kind: "relabel" as const, ...r })),
  },
  {
    weight: 1,
    arbitrary: fc.record({ index: fc.nat(), phase: phaseArb }).map((r) => ({ kind: "phase" as const, ...r })),
  },
  {
    weight: 1,
    arbitrary: fc.record({ index: fc.nat(), ips: podIPsArb }).map((r) => ({ kind: "ips" as const, ...r })),
  },
  { weight: 2, arbitrary: fc.nat().map((index) => ({ kind: "podDelete" as const, index })) },
  { weight: 2, arbitrary: nsArb.map((ns) => ({ kind: "ns" as const, ns })) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(...NAMESPACES).map((name) => ({ kind: "nsDelete" as const, name })),
  },
  { weight: 3, arbitrary: policyArb.map((policy) => ({ kind: "policy" as const, policy })) },
  { weight: 2, arbitrary: fc.nat().map((index) => ({ kind: "policyDelete" as const, index })) },
);

export const initialIntentsArb: fc.Arbitrary<EventIntent[]> = fc
  .tuple(
    fc.array(nsArb, { maxLength: 3 }),
    fc.array(podArb, { minLength: 5, maxLength: 30, size: "max" }),
    fc.array(policyArb, { minLength: 1, maxLength: 10, size: "medium" }),
  )
  .map(([nss, pods, pols]) => [
    ...nss.map((ns) => ({ kind: "ns" as const, ns })),
    ...pods.map((pod) => ({ kind: "pod" as const, pod })),
    ...pols.map((policy) => ({ kind: "policy" as const, policy })),
  ]);

function nth<T>(m: Map<string, T>, index: number): T | undefined {
  if (m.size === 0) return undefined;
  let i = index % m.size;
  for (const v of m.values()) if (i-- === 0) return v;
  return undefined;
}

export function resolveIntent(s: ClusterState, it: EventIntent): ClusterEvent | undefined {
  switch (it.kind) {
    case "pod":
      return { kind: "pod", pod: it.pod };
    case "relabel": {
      const p = nth(s.pods, it.index);
      return p && { kind: "pod", pod: { ...p, labels: it.labels } };
    }
    case "phase": {
      const p = nth(s.pods, it.index);
      return p && { kind: "pod", pod: { ...p, phase: it.phase } };
    }
    case "ips": {
      const p = nth(s.pods, it.index);
      return p && !p.hostNetwork ? { kind: "pod", pod: { ...p, ips: it.ips } } : undefined;
    }
    case "podDelete": {
      const p = nth(s.pods, it.index);
      return p && { kind: "podDelete", namespace: p.namespace, name: p.name };
    }
    case "ns":
      return { kind: "ns", ns: it.ns };
    case "nsDelete":
      return { kind: "nsDelete", name: it.name };
    case "policy":
      return { kind: "policy", policy: it.policy };
    case "policyDelete": {
      const p = nth(s.policies, it.index);
      return p && { kind: "policyDelete", namespace: p.metadata.namespace, name: p.metadata.name };
    }
  }
}

export interface FlowIntent {
  src: number;
  dst: number;
  srcExternal: boolean;
  dstExternal: boolean;
  proto: ProtoNum;
  port: number;
}

export const flowIntentArb: fc.Arbitrary<FlowIntent> = fc.record({
  src: fc.nat(),
  dst: fc.nat(),
  srcExternal: fc.boolean().chain((b) => (b ? fc.boolean() : fc.constant(false))),
  dstExternal: fc.constantFrom(false, false, true),
  proto: fc.constantFrom(6, 6, 17, 132) as fc.Arbitrary<ProtoNum>,
  port: fc.constantFrom(...FLOW_PORTS),
});

/** Addresses of every pod in the state (live or not), in a stable order. */
export function stateIPs(s: ClusterState): string[] {
  const out: string[] = [];
  for (const p of s.pods.values()) out.push(...p.ips);
  return out;
}

export function resolveFlow(podIPs: readonly string[], f: FlowIntent): Flow {
  const pick = (external: boolean, i: number) =>
    external || podIPs.length === 0 ? EXTERNAL_IPS[i % EXTERNAL_IPS.length] : podIPs[i % podIPs.length];
  return { src: pick(f.srcExternal, f.src), dst: pick(f.dstExternal, f.dst), proto: f.proto, port: f.port };
}

// ------------------------------------------------------------------ synthetic large clusters (bench)

/** mulberry32: small seeded PRNG so benchmark clusters are identical run to run. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface SyntheticCluster {
  namespaces: NamespaceInfo[];
  pods: PodInfo[];
  policies: RawPolicy[];
  /** Nodes (labels and addresses) for `nodes` peers. */
  nodes: NodeInfo[];
  /** Deployments (namespace + template labels) so benchmarks can add realistic replicas. */
  deployments: { namespace: string; labels: Record<string, string>; ports: ContainerPort[] }[];
}

const APPS: { app: string; tier: string; ports: ContainerPort[] }[] = [
  { app: "frontend", tier: "web", ports: [cport("http", 8080), cport("metrics", 9090)] },
  { app: "gateway", tier: "web", ports: [cport("http", 8000), cport("https", 8443)] },
  { app: "api", tier: "api", ports: [cport("http", 8080), cport("grpc", 9000)] },
  { app: "orders", tier: "api", ports: [cport("http", 8081), cport("metrics", 9090)] },
  { app: "payments", tier: "api", ports: [cport("http", 8082), cport("grpc", 9001)] },
  { app: "worker", tier: "backend", ports: [cport("metrics", 9090)] },
  { app: "cache", tier: "data", ports: [cport("redis", 6379)] },
  { app: "postgres", tier: "data", ports: [cport("pg", 5432)] },
  { app: "search", tier: "data", ports: [cport("http", 9200), cport("transport", 9300)] },
  { app: "dns", tier: "infra", ports: [cport("dns", 53, "UDP"), cport("dns-tcp", 53)] },
];

function v4(n: number): string {
  return `10.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
}

/**
 * A cluster of `pods` pods in pods/100 namespaces: each namespace runs deployments of the APPS
 * (replicas share app/tier/version/pod-template-hash), 10% of pods are dual-stack, a few pods are
 * Succeeded jobs. Policies rotate through realistic shapes until `policies` exist.
 */
export function syntheticCluster(
  podCount: number,
  policyCount: number,
  seed = 1,
  clusterPolicyCount = 0,
): SyntheticCluster {
  const rand = rng(seed);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rand() * a.length)];
  const nsCount = Math.max(1, Math.round(podCount / 100));
  const teams = ["payments", "search", "platform", "growth", "data", "identity", "ml", "core"];
  const namespaces: NamespaceInfo[] = [];
  for (let i = 0; i < nsCount; i++) {
    namespaces.push(
      mkNs(`ns-${i}`, {
        team: teams[i % teams.length],
        env: i % 3 === 0 ? "prod" : i % 3 === 1 ? "staging" : "dev",
        "kubernetes.io/metadata.name": `ns-${i}`,
      }),
    );
  }
  const deployments: SyntheticCluster["deployments"] = [];
  const pods: PodInfo[] = [];
  let ipSeq = 0x000101;
  for (let i = 0; i < podCount; i++) {
    const ns = namespaces[i % nsCount].name;
    const slot = Math.floor(i / nsCount); // pod index within its namespace
    const appIdx = slot % APPS.length;
    const a = APPS[appIdx];
    const version = slot % 20 < 15 ? "v1" : "v2";
    const labels = {
      app: a.app,
      tier: a.tier,
      version,
      "pod-template-hash": `${a.app}-${version}-${(i % nsCount) % 7}`,
    };
    if (slot < APPS.length * 2) deployments.push({ namespace: ns, labels, ports: a.ports });
    const ips = [v4(ipSeq++)];
    if (i % 10 === 0) ips.push(`fd00::${(ipSeq & 0xffff).toString(16)}:${(ipSeq >>> 16).toString(16)}`);
    const phase = i % 97 === 0 ? "Succeeded" : "Running";
    pods.push(
      mkPod(ns, `${a.app}-${version}-${i}`, labels, ips, {
        phase,
        ports: a.ports,
        nodeName: `node-${i % 50}`,
      }),
    );
  }
  const policies: RawPolicy[] = [];
  const shapes: ((ns: string, k: number) => RawPolicy)[] = [
    (ns, k) => mkPolicy(ns, `default-deny-${k}`, { podSelector: {}, policyTypes: ["Ingress"] }),
    (ns, k) =>
      mkPolicy(ns, `allow-frontend-to-api-${k}`, {
        podSelector: { matchLabels: { app: "api" } },
        ingress: [
          { from: [{ podSelector: { matchLabels: { app: "frontend" } } }], ports: [{ port: "http" }] },
        ],
      }),
    (ns, k) =>
      mkPolicy(ns, `allow-team-${k}`, {
        podSelector: { matchLabels: { tier: "api" } },
        ingress: [
          {
            from: [{ namespaceSelector: { matchLabels: { team: pick(teams) } } }],
            ports: [{ port: 8080, endPort: 8090 }],
          },
        ],
      }),
    (ns, k) =>
      mkPolicy(ns, `allow-prod-web-${k}`, {
        podSelector: { matchLabels: { app: "gateway" } },
        ingress: [
          {
            from: [
              {
                namespaceSelector: { matchLabels: { env: "prod" } },
                podSelector: { matchLabels: { tier: "web" } },
              },
              { ipBlock: { cidr: "10.0.0.0/8", except: ["10.0.0.0/16", `10.${(k % 200) + 1}.0.0/16`] } },
            ],
            ports: [{ port: "https" }, { port: "http" }],
          },
        ],
      }),
    (ns, k) =>
      mkPolicy(ns, `db-egress-${k}`, {
        podSelector: { matchLabels: { tier: "api" } },
        policyTypes: ["Egress"],
        egress: [
          { to: [{ podSelector: { matchLabels: { app: "postgres" } } }], ports: [{ port: "pg" }] },
          {
            to: [{ podSelector: { matchLabels: { app: "cache" } } }],
            ports: [{ port: 6379, protocol: "TCP" }],
          },
          {
            to: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "ns-0" } } }],
            ports: [
              { port: 53, protocol: "UDP" },
              { port: 53, protocol: "TCP" },
            ],
          },
        ],
      }),
    (ns, k) =>
      mkPolicy(ns, `data-ingress-${k}`, {
        podSelector: { matchExpressions: [{ key: "tier", operator: "In", values: ["data"] }] },
        ingress: [
          {
            from: [
              {
                podSelector: {
                  matchExpressions: [
                    { key: "tier", operator: "In", values: ["api", "backend"] },
                    { key: "version", operator: "NotIn", values: ["canary"] },
                  ],
                },
              },
            ],
          },
        ],
      }),
    (ns, k) =>
      mkPolicy(ns, `metrics-${k}`, {
        podSelector: { matchExpressions: [{ key: "app", operator: "Exists" }] },
        ingress: [
          {
            from: [{ namespaceSelector: { matchLabels: { team: "platform" } }, podSelector: {} }],
            ports: [{ port: "metrics" }, { port: 9100, endPort: 9199 }],
          },
        ],
      }),
    (ns, k) =>
      mkPolicy(ns, `egress-external-${k}`, {
        podSelector: { matchLabels: { app: "payments" } },
        egress: [
          { to: [{ ipBlock: { cidr: "0.0.0.0/0", except: ["10.0.0.0/8", "169.254.169.254/32"] } }] },
          { to: [{ ipBlock: { cidr: "::/0", except: ["fd00::/8"] } }], ports: [{ port: 443 }] },
        ],
      }),
    (ns, k) =>
      mkPolicy(ns, `worker-${k}`, {
        podSelector: { matchLabels: { app: "worker", version: pick(["v1", "v2"]) } },
        policyTypes: ["Ingress", "Egress"],
        ingress: [],
        egress: [
          { to: [{ podSelector: { matchLabels: { tier: "data" } } }] },
          { ports: [{ port: 53, protocol: "UDP" }] },
        ],
      }),
    (ns, k) =>
      mkPolicy(ns, `cross-ns-${k}`, {
        podSelector: { matchLabels: { app: "search" } },
        ingress: [
          {
            from: [
              {
                namespaceSelector: {
                  matchExpressions: [{ key: "env", operator: "NotIn", values: ["dev"] }],
                },
                podSelector: { matchLabels: { tier: "api" } },
              },
            ],
            ports: [{ port: "http" }, { port: 9300, protocol: "TCP" }],
          },
        ],
      }),
  ];
  for (let k = 0; k < policyCount; k++) {
    const ns = namespaces[k % nsCount].name;
    policies.push(shapes[Math.floor(k / nsCount) % shapes.length](ns, k));
  }
  const nodes: NodeInfo[] = Array.from({ length: 50 }, (_, i) => ({
    name: `node-${i}`,
    labels: { role: i < 5 ? "infra" : "worker", zone: `z${i % 3}` },
    addresses: [`172.20.${i >> 8}.${i & 255}`],
  }));
  const clusterPolicies = syntheticClusterPolicies(clusterPolicyCount, namespaces.length, teams, rand);
  return { namespaces, pods, policies: [...policies, ...clusterPolicies], deployments, nodes };
}

/**
 * ClusterNetworkPolicies of realistic shapes, both tiers, every action, mixed peers (namespaces by
 * label, pods, nodes, networks) and protocols, rotating until `count` exist; priorities spread with
 * some ties.
 */
function syntheticClusterPolicies(
  count: number,
  nsCount: number,
  teams: string[],
  rand: () => number,
): RawPolicy[] {
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rand() * a.length)];
  const nsName = (k: number) => ({ matchLabels: { "kubernetes.io/metadata.name": `ns-${k % nsCount}` } });
  const cnp = (name: string, tier: string, priority: number, spec: Record<string, unknown>): RawPolicy => ({
    apiVersion: "policy.networking.k8s.io/v1alpha2",
    kind: "ClusterNetworkPolicy",
    metadata: { name },
    spec: { tier, priority, ...spec },
  });
  const tcp = (n: number) => ({ tcp: { destinationPort: { number: n } } });
  const shapes: ((k: number) => RawPolicy)[] = [
    (k) =>
      cnp(`prod-no-dev-${k}`, "Admin", 10 + (k % 50), {
        subject: { namespaces: { matchLabels: { env: "prod", team: pick(teams) } } },
        ingress: [
          { name: "no-dev", action: "Deny", from: [{ namespaces: { matchLabels: { env: "dev" } } }] },
        ],
      }),
    (k) =>
      cnp(`monitoring-in-${k}`, "Admin", 5, {
        subject: { namespaces: nsName(k) },
        ingress: [
          {
            name: "scrape",
            action: "Accept",
            from: [
              {
                pods: {
                  namespaceSelector: { matchLabels: { team: "platform" } },
                  podSelector: { matchLabels: { app: "worker" } },
                },
              },
            ],
            protocols: [{ destinationNamedPort: "metrics" }, tcp(9100)],
          },
        ],
      }),
    (k) =>
      cnp(`team-pass-${k}`, "Admin", 100 + (k % 20), {
        subject: { namespaces: { matchLabels: { team: pick(teams) } } },
        egress: [
          { name: "own-team", action: "Pass", to: [{ namespaces: { matchLabels: { team: pick(teams) } } }] },
          {
            name: "metadata",
            action: "Deny",
            to: [{ networks: ["169.254.169.254/32", "fd00:ec2::254/128"] }],
          },
        ],
      }),
    (k) =>
      cnp(`kubelet-${k}`, "Admin", 20, {
        subject: { pods: { namespaceSelector: {}, podSelector: { matchLabels: { tier: "infra" } } } },
        egress: [
          {
            name: "to-kubelet",
            action: "Accept",
            to: [{ nodes: { matchLabels: { role: "infra" } } }],
            protocols: [tcp(10250)],
          },
        ],
      }),
    (k) =>
      cnp(`baseline-deny-${k}`, "Baseline", k % 30, {
        subject: { namespaces: nsName(k * 7) },
        ingress: [
          {
            name: "same-team",
            action: "Accept",
            from: [{ namespaces: { matchLabels: { team: pick(teams) } } }],
          },
          { name: "rest", action: "Deny", from: [{ namespaces: {} }] },
        ],
      }),
    (k) =>
      cnp(`baseline-dns-${k}`, "Baseline", 50, {
        subject: { namespaces: { matchLabels: { env: pick(["prod", "staging", "dev"]) } } },
        egress: [
          {
            name: "dns",
            action: "Accept",
            to: [{ pods: { namespaceSelector: nsName(0), podSelector: { matchLabels: { app: "dns" } } } }],
            protocols: [{ udp: { destinationPort: { number: 53 } } }, tcp(53)],
          },
          {
            name: "egress-range",
            action: "Pass",
            to: [{ networks: ["10.0.0.0/8"] }],
            protocols: [{ tcp: { destinationPort: { range: { start: 8000, end: 8999 } } } }],
          },
        ],
      }),
  ];
  const out: RawPolicy[] = [];
  for (let k = 0; k < count; k++) out.push(shapes[k % shapes.length](k));
  return out;
}

// ------------------------------------------------------------------ nodes for diff property tests

/** Nodes for random clusters: their addresses are the ones hostNetwork pods of podArb take. */
export const RANDOM_NODES = [
  { name: "node-1", labels: { role: "infra" }, addresses: [NODE_IPS[0]] },
  { name: "node-2", labels: { role: "worker" }, addresses: [NODE_IPS[1]] },
];
