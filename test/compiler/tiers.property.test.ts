/**
 * Property: with random NetworkPolicies AND ClusterNetworkPolicies (both tiers, every action, pods,
 * namespaces, nodes and networks peers, protocols, ranges, named ports) and Nodes, after any sequence
 * of events the incrementally maintained table, a table built from scratch, the NFQUEUE snapshot and
 * the plain tiered reference evaluator (test/support/tiered-reference.ts, which shares nothing with
 * src/) agree on every flow.
 */
import { isIP } from "node:net";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decide } from "../../src/compiler/engine.js";
import { FROM_API } from "../../src/compiler/kinds/index.js";
import {
  type NamespaceInfo,
  type NodeInfo,
  type PodInfo,
  PROTO_NAMES,
  podKey,
} from "../../src/compiler/model.js";
import { SnapshotSource, takeSnapshot } from "../../src/compiler/snapshot.js";
import { PolicyTable } from "../../src/compiler/table.js";
import {
  clusterPolicyArb,
  flowIntentArb,
  namespaceObject,
  nodeArb,
  nodeObject,
  nsArb,
  podArb,
  podObject,
  policyArb,
  type RawPolicy,
  resolveFlow,
} from "../support/cluster-gen.js";
import { type Protocol, TieredReference } from "../support/tiered-reference.js";

const RUNS = Number(process.env.PODWALL_PROPERTY_RUNS ?? 150);

type Event =
  | { kind: "pod"; pod: PodInfo }
  | { kind: "podDelete"; index: number }
  | { kind: "ns"; ns: NamespaceInfo }
  | { kind: "node"; node: NodeInfo }
  | { kind: "nodeDelete"; name: string }
  | { kind: "np"; policy: RawPolicy }
  | { kind: "cnp"; policy: RawPolicy }
  | { kind: "policyDelete"; index: number };

const eventArb: fc.Arbitrary<Event> = fc.oneof(
  { weight: 3, arbitrary: podArb.map((pod) => ({ kind: "pod" as const, pod })) },
  { weight: 1, arbitrary: fc.nat().map((index) => ({ kind: "podDelete" as const, index })) },
  { weight: 2, arbitrary: nsArb.map((ns) => ({ kind: "ns" as const, ns })) },
  { weight: 1, arbitrary: nodeArb.map((node) => ({ kind: "node" as const, node })) },
  {
    weight: 1,
    arbitrary: fc.constantFrom("node-1", "node-2").map((name) => ({ kind: "nodeDelete" as const, name })),
  },
  { weight: 2, arbitrary: policyArb.map((policy) => ({ kind: "np" as const, policy })) },
  { weight: 4, arbitrary: clusterPolicyArb.map((policy) => ({ kind: "cnp" as const, policy })) },
  { weight: 2, arbitrary: fc.nat().map((index) => ({ kind: "policyDelete" as const, index })) },
);

interface State {
  pods: Map<string, PodInfo>;
  namespaces: Map<string, NamespaceInfo>;
  nodes: Map<string, NodeInfo>;
  /** Policy key (as the table keys it) -> raw object. */
  policies: Map<string, RawPolicy>;
}

const keyOf = (p: RawPolicy) =>
  p.kind === "ClusterNetworkPolicy" ? `cnp:${p.metadata.name}` : `${p.metadata.namespace}/${p.metadata.name}`;

function liveIPConflict(pods: Iterable<PodInfo>): boolean {
  const seen = new Set<string>();
  for (const p of pods) {
    if (p.hostNetwork || p.phase === "Succeeded" || p.phase === "Failed") continue;
    for (const ip of new Set(p.ips)) {
      if (seen.has(ip)) return true;
      seen.add(ip);
    }
  }
  return false;
}

/** Apply to state and table; false when skipped (an ambiguous IP owner). */
function apply(s: State, t: PolicyTable, ev: Event): boolean {
  switch (ev.kind) {
    case "pod": {
      const next = new Map(s.pods);
      next.delete(podKey(ev.pod));
      next.set(podKey(ev.pod), ev.pod);
      if (liveIPConflict(next.values())) return false;
      s.pods = next;
      t.upsertPod(ev.pod);
      return true;
    }
    case "podDelete": {
      const p = [...s.pods.values()][ev.index % Math.max(1, s.pods.size)];
      if (!p) return false;
      s.pods.delete(podKey(p));
      t.deletePod(p.namespace, p.name);
      return true;
    }
    case "ns":
      s.namespaces.set(ev.ns.name, ev.ns);
      t.upsertNamespace(ev.ns);
      return true;
    case "node":
      s.nodes.set(ev.node.name, ev.node);
      t.upsertNode(ev.node);
      return true;
    case "nodeDelete":
      s.nodes.delete(ev.name);
      t.deleteNode(ev.name);
      return true;
    case "np":
    case "cnp":
      s.policies.set(keyOf(ev.policy), ev.policy);
      t.upsertPolicy(ev.policy, FROM_API); // generated policies are valid: this must not throw
      return true;
    case "policyDelete": {
      const k = [...s.policies.keys()][ev.index % Math.max(1, s.policies.size)];
      if (!k) return false;
      s.policies.delete(k);
      t.deletePolicyKey(k);
      return true;
    }
  }
}

function fresh(s: State): PolicyTable {
  const t = new PolicyTable();
  for (const n of s.namespaces.values()) t.upsertNamespace(n);
  for (const n of s.nodes.values()) t.upsertNode(n);
  for (const p of s.pods.values()) t.upsertPod(p);
  for (const p of s.policies.values()) t.upsertPolicy(p, FROM_API);
  return t;
}

function reference(s: State): TieredReference {
  return new TieredReference([
    ...[...s.namespaces.values()].map(namespaceObject),
    ...[...s.nodes.values()].map(nodeObject),
    ...[...s.pods.values()].map(podObject),
    ...s.policies.values(),
  ]);
}

describe("tiered table vs full rebuild vs snapshot vs the plain tiered reference", () => {
  it(`agree after random event sequences with ClusterNetworkPolicies and Nodes (${RUNS} sequences)`, () => {
    fc.assert(
      fc.property(
        fc.array(eventArb, { minLength: 10, maxLength: 50, size: "max" }),
        fc.array(flowIntentArb, { minLength: 60, maxLength: 120 }),
        (events, flowIntents) => {
          const state: State = {
            pods: new Map(),
            namespaces: new Map(),
            nodes: new Map(),
            policies: new Map(),
          };
          const table = new PolicyTable();
          let applied = 0;
          for (const ev of events) if (apply(state, table, ev)) applied++;
          const full = fresh(state);
          expect(table.stats()).toEqual(full.stats());
          const snap = new SnapshotSource(structuredClone(takeSnapshot(table)));
          const ref = reference(state);
          const ips = [...state.pods.values()].flatMap((p) => p.ips);
          for (const fi of flowIntents) {
            const flow = resolveFlow(ips, fi);
            // A connection has one address family; the reference refuses mixed pairs.
            if (isIP(flow.src) !== isIP(flow.dst)) continue;
            const got = (v: ReturnType<typeof decide>) => ({
              allowed: v.allowed,
              egress: v.egress.result !== "denied",
              ingress: v.ingress.result !== "denied",
            });
            const r = ref.decide({
              from: flow.src,
              to: flow.dst,
              protocol: PROTO_NAMES[flow.proto] as Protocol,
              port: flow.port,
            });
            const oracle = { allowed: r.allowed, egress: r.egress.allowed, ingress: r.ingress.allowed };
            const ctx = JSON.stringify({ flow, applied });
            const inc = decide(table, flow);
            expect(got(inc), `incremental vs reference ${ctx}`).toEqual(oracle);
            expect(got(decide(full, flow)), `full rebuild vs reference ${ctx}`).toEqual(oracle);
            const sv = decide(snap, flow);
            expect({ i: sv.ingress, e: sv.egress }, `snapshot vs table ${ctx}`).toEqual({
              i: inc.ingress,
              e: inc.egress,
            });
            // The deciding policy agrees too, when a cluster policy's rule decided.
            for (const dir of ["egress", "ingress"] as const) {
              const side = r[dir];
              const by = inc[dir].by;
              if (side.policy?.startsWith("ClusterNetworkPolicy/") && by) {
                expect(`cnp:${side.policy.slice("ClusterNetworkPolicy/".length)}/${side.rule}`, ctx).toBe(
                  `${by.policy}/${by.rule}`,
                );
              }
            }
          }
        },
      ),
      { numRuns: RUNS },
    );
  });
});
