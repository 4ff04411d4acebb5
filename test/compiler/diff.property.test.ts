/**
 * Property: for random clusters (pods, namespaces, Nodes, NetworkPolicies, ClusterNetworkPolicies)
 * and random changes to them (pod adds, relabels, IP and phase changes, deletes; namespace labels;
 * policy upserts and deletes of both kinds), `diffTables` reports exactly the cell-by-cell
 * difference of the two simulate matrices: the same cells, the same before/after, and the very
 * verdicts (tier, policy, rule, peer) the engine gives each cell on each side.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { diffChanges, diffTables, groupCells } from "../../src/compiler/diff.js";
import { decide, type Verdict } from "../../src/compiler/engine.js";
import { summarizeVerdict } from "../../src/compiler/explain.js";
import { FROM_API } from "../../src/compiler/kinds/index.js";
import { declaredPorts, matrixPods, type PortProto, pairAddresses } from "../../src/compiler/matrix.js";
import { type ContainerPort, type NodeInfo, type PodInfo, PROTO, podKey } from "../../src/compiler/model.js";
import { PolicyTable } from "../../src/compiler/table.js";
import {
  applyToState,
  type ClusterState,
  cloneState,
  clusterPolicyArb,
  type EventIntent,
  emptyState,
  eventIntentArb,
  initialIntentsArb,
  loadTable,
  podPortsArb,
  RANDOM_NODES,
  type RawPolicy,
  resolveIntent,
} from "../support/cluster-gen.js";

const RUNS = Number(process.env.PODWALL_PROPERTY_RUNS ?? 200);

interface World {
  state: ClusterState;
  cnps: Map<string, RawPolicy>;
  nodes: NodeInfo[];
}

type Change =
  | EventIntent
  | { kind: "cnp"; policy: RawPolicy }
  | { kind: "cnpDelete"; index: number }
  | { kind: "ports"; index: number; ports: ContainerPort[] }
  | { kind: "move"; index: number; node: string }
  | { kind: "node"; index: number; labels: Record<string, string>; addresses: string[] };

const nodeChangeArb = fc.record({
  index: fc.nat(),
  labels: fc.constantFrom<Record<string, string>[]>({ role: "infra" }, { role: "worker" }, {}),
  // Node addresses that are also pod addresses: the node exemption and `nodes` peers meet pods.
  addresses: fc.subarray(["192.168.0.10", "192.168.0.11", "10.0.0.1", "10.0.0.2", "fd00::1"], {
    maxLength: 2,
  }),
});

const changeArb: fc.Arbitrary<Change> = fc.oneof(
  { weight: 4, arbitrary: eventIntentArb },
  // Label changes (a pod's or a namespace's) move pods between selectors without touching any
  // plan: the subtle case for the dirty-class analysis, so it gets its own weight.
  { weight: 3, arbitrary: eventIntentArb.filter((e) => e.kind === "relabel" || e.kind === "ns") },
  { weight: 2, arbitrary: eventIntentArb.filter((e) => e.kind === "ips" || e.kind === "phase") },
  {
    weight: 1,
    arbitrary: fc
      .record({ index: fc.nat(), ports: podPortsArb })
      .map((r) => ({ kind: "ports" as const, ...r })),
  },
  {
    weight: 1,
    arbitrary: fc
      .record({ index: fc.nat(), node: fc.constantFrom("node-1", "node-2", "") })
      .map((r) => ({ kind: "move" as const, ...r })),
  },
  { weight: 1, arbitrary: nodeChangeArb.map((r) => ({ kind: "node" as const, ...r })) },
  { weight: 2, arbitrary: clusterPolicyArb.map((policy) => ({ kind: "cnp" as const, policy })) },
  { weight: 1, arbitrary: fc.nat().map((index) => ({ kind: "cnpDelete" as const, index })) },
);

function nthPod(w: World, index: number): PodInfo | undefined {
  const pods = [...w.state.pods.values()];
  return pods.length ? pods[index % pods.length] : undefined;
}

function apply(w: World, c: Change): void {
  if (c.kind === "cnp") w.cnps.set(c.policy.metadata.name, c.policy);
  else if (c.kind === "cnpDelete") {
    const names = [...w.cnps.keys()];
    if (names.length) w.cnps.delete(names[c.index % names.length]);
  } else if (c.kind === "ports" || c.kind === "move") {
    const p = nthPod(w, c.index);
    if (p)
      applyToState(w.state, {
        kind: "pod",
        pod: c.kind === "ports" ? { ...p, ports: c.ports } : { ...p, nodeName: c.node },
      });
  } else if (c.kind === "node") {
    const i = c.index % w.nodes.length;
    w.nodes[i] = { ...w.nodes[i], labels: c.labels, addresses: c.addresses };
  } else {
    const ev = resolveIntent(w.state, c);
    if (ev) applyToState(w.state, ev);
  }
}

function build(w: World): { table: PolicyTable; pods: PodInfo[] } {
  const table = loadTable(new PolicyTable(), w.state);
  for (const n of w.nodes) table.upsertNode(n);
  for (const p of w.cnps.values()) table.upsertPolicy(p, FROM_API);
  return { table, pods: [...w.state.pods.values()] };
}

interface Cell {
  before: Verdict;
  after: Verdict;
}

/** The naive way: both matrices cell by cell, over the pods both sides have. */
function naiveDiff(
  b: { table: PolicyTable; pods: PodInfo[] },
  a: { table: PolicyTable; pods: PodInfo[] },
  ports: PortProto[],
) {
  const mb = new Map(matrixPods(b.pods).map((p) => [podKey(p), p]));
  const ma = new Map(matrixPods(a.pods).map((p) => [podKey(p), p]));
  const keys = [...mb.keys()].filter((k) => ma.has(k));
  const changes = new Map<string, Cell>();
  let compared = 0;
  for (const pp of ports) {
    for (const from of keys) {
      for (const to of keys) {
        const ab = pairAddresses(mb.get(from)!, mb.get(to)!);
        const aa = pairAddresses(ma.get(from)!, ma.get(to)!);
        if (!ab || !aa) continue;
        compared++;
        const flow = (x: { src: string; dst: string }) => ({
          ...x,
          proto: PROTO[pp.protocol],
          port: pp.port,
        });
        const before = decide(b.table, flow(ab));
        const after = decide(a.table, flow(aa));
        if (before.allowed !== after.allowed)
          changes.set(`${from} ${to} ${pp.port}/${pp.protocol}`, { before, after });
      }
    }
  }
  return { changes, compared };
}

const side = (v: Verdict) => ({ loopback: v.loopback, ingress: v.ingress, egress: v.egress });

describe("diff equals the cell-by-cell difference of two simulate matrices", () => {
  it(
    `on random clusters and random changes (${RUNS} runs)`,
    () => {
      let changedRuns = 0;
      fc.assert(
        fc.property(
          initialIntentsArb,
          fc.array(clusterPolicyArb, { maxLength: 3 }),
          fc.array(
            fc
              .record({ index: fc.nat(), node: fc.constantFrom("node-1", "node-2") })
              .map((r) => ({ kind: "move" as const, ...r })),
            { maxLength: 6 },
          ),
          fc.array(changeArb, { minLength: 1, maxLength: 4 }),
          (initial, cnps, moves, changes) => {
            const before: World = { state: emptyState(), cnps: new Map(), nodes: [...RANDOM_NODES] };
            for (const it of initial) apply(before, it);
            for (const p of cnps) apply(before, { kind: "cnp", policy: p });
            for (const m of moves) apply(before, m);
            const after: World = {
              state: cloneState(before.state),
              cnps: new Map(before.cnps),
              nodes: [...before.nodes],
            };
            for (const c of changes) apply(after, c);
            const b = build(before);
            const a = build(after);
            const ports = [
              ...new Map(
                [...declaredPorts([...b.pods, ...a.pods]), { port: 8081, protocol: "TCP" as const }].map(
                  (p) => [`${p.port}/${p.protocol}`, p],
                ),
              ).values(),
            ];
            const res = diffTables(b, a, ports);
            const naive = naiveDiff(b, a, ports);
            const got = new Map<string, Cell>();
            for (const g of res.groups)
              for (const [i, j] of groupCells(res, g)) {
                const k = `${res.pods[i]} ${res.pods[j]} ${g.port.port}/${g.port.protocol}`;
                expect(got.has(k), `cell reported twice: ${k}`).toBe(false);
                got.set(k, { before: g.before, after: g.after });
              }
            expect([...got.keys()].sort()).toEqual([...naive.changes.keys()].sort());
            for (const [k, cell] of naive.changes) {
              const g = got.get(k)!;
              expect(side(g.before), `before ${k}`).toEqual(side(cell.before));
              expect(side(g.after), `after ${k}`).toEqual(side(cell.after));
            }
            expect(res.cellsCompared).toBe(naive.compared);
            const list = [...diffChanges(res)];
            expect(list.length).toBe(res.opened + res.closed);
            expect(res.opened).toBe(list.filter((c) => c.after).length);
            for (const c of list) {
              const cell = naive.changes.get(`${c.from} ${c.to} ${c.port}/${c.protocol}`)!;
              expect(c.reasonBefore).toBe(summarizeVerdict(b.table, cell.before));
              expect(c.reasonAfter).toBe(summarizeVerdict(a.table, cell.after));
            }
            if (list.length > 0) changedRuns++;
          },
        ),
        { numRuns: RUNS },
      );
      // The property must not hold vacuously: most random changes change something.
      expect(changedRuns).toBeGreaterThan(RUNS / 4);
    },
    60_000 + RUNS * 300,
  );
});
