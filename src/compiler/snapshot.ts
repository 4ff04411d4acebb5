/**
 * snapshot: a structured-clone-able copy of the table for the NFQUEUE worker thread, and the
 * DecisionSource that answers from it.
 *
 * Owns: flattening identities, selectors, ipBlocks, node selectors, node addresses, policies and
 * per-identity tiered plans into plain arrays, and rebuilding Maps/Sets and a CIDR trie on the other
 * side so `decide` runs unchanged in the worker. Identities with equal plans share one plan object,
 * and so one rule index per tier list. The main thread posts a fresh snapshot on every change; the
 * worker swaps it in between packets.
 * May not: be mutated after construction (the worker replaces it whole).
 */
import { BlockMatcher } from "./cidr-trie.js";
import {
  type DecisionSource,
  type EndpointView,
  type PeerView,
  type PlanView,
  type PolicyView,
  prepare,
  type RuleView,
} from "./engine.js";
import { parseCIDR } from "./ip.js";
import type { ContainerPort, Direction } from "./model.js";
import type { PortSpec } from "./ports.js";
import type { Action, Tier } from "./rule-model.js";
import type { Plan, PolicyTable } from "./table.js";

type PeerData = { s: number } | { b: number } | { n: number } | { d: number } | { x: 1 };
type RuleData = { i: number; n: string; a: Action; peers: PeerData[] | null; ports: PortSpec[] | null };
/** Policy indexes per tier: [admin, namespaced, baseline]. */
type PlanData = [number[], number[], number[]];

export interface TableSnapshot {
  generation: number;
  /** [ip, pod key, identity id, port list index, node name] */
  endpoints: [string, string, number, number, string][];
  portLists: ContainerPort[][];
  /** [selector id, member identity ids] */
  selectors: [number, number[]][];
  /** [block id, cidr, excepts] */
  blocks: [number, string, string[]][];
  /** [address, ids of the node selectors whose nodes hold it] */
  nodeSels: [string, number[]][];
  /** [address, node names it belongs to] (the node exemption) */
  nodeAddrs: [string, string[]][];
  /** [pod key, address, [domain peer id, expiry ms]...]: what pods learned from DNS answers */
  learned: [string, string, [number, number][]][];
  policies: {
    key: string;
    tier: Tier;
    priority: number;
    ingress: RuleData[] | null;
    egress: RuleData[] | null;
  }[];
  plans: PlanData[];
  /** [identity id, ingress plan index or -1, egress plan index or -1] */
  identities: [number, number, number][];
}

export function takeSnapshot(table: PolicyTable): TableSnapshot {
  const portLists: ContainerPort[][] = [];
  const portIdx = new Map<string, number>();
  const endpoints: TableSnapshot["endpoints"] = [];
  for (const pod of table.allPods()) {
    if (!pod.identity) continue;
    const k = JSON.stringify(pod.ports);
    let pi = portIdx.get(k);
    if (pi === undefined) {
      pi = portLists.length;
      portLists.push(pod.ports as ContainerPort[]);
      portIdx.set(k, pi);
    }
    // Only the winner of a shared IP answers, exactly as the live table does.
    for (const ip of pod.parsedIPs)
      if (table.endpoint(ip.text) === pod) endpoints.push([ip.text, pod.key, pod.identityId, pi, pod.node]);
  }
  const selectors: TableSnapshot["selectors"] = [];
  const blocks = new Map<number, [number, string, string[]]>();
  const policies: TableSnapshot["policies"] = [];
  const polIdx = new Map<string, number>();
  const seenSel = new Set<number>();
  for (const pol of table.allPolicies()) {
    const rules = (list: typeof pol.ingress): RuleData[] | null =>
      list === null
        ? null
        : list.map((r) => ({
            i: r.index,
            n: r.name,
            a: r.action,
            ports: r.ports as PortSpec[] | null,
            peers:
              r.peers === null
                ? null
                : r.peers.map((p): PeerData => {
                    switch (p.kind) {
                      case "sel":
                        if (!seenSel.has(p.sel.id)) {
                          seenSel.add(p.sel.id);
                          selectors.push([p.sel.id, [...p.sel.members]]);
                        }
                        return { s: p.sel.id };
                      case "block": {
                        const b = p.block.spec;
                        blocks.set(p.id, [p.id, b.cidr.text, b.excepts.map((e) => e.text)]);
                        return { b: p.id };
                      }
                      case "nodes":
                        return { n: p.id };
                      case "domains":
                        return { d: p.id };
                      default:
                        return { x: 1 };
                    }
                  }),
          }));
    polIdx.set(pol.key, policies.length);
    policies.push({
      key: pol.key,
      tier: pol.tier,
      priority: pol.priority,
      ingress: rules(pol.ingress),
      egress: rules(pol.egress),
    });
  }
  const plans: PlanData[] = [];
  const planIdx = new Map<string, number>();
  const planOf = (plan: Plan): number => {
    if (plan.empty) return -1;
    const data: PlanData = [
      plan.admin.map((p) => polIdx.get(p.key)!),
      plan.namespaced.map((p) => polIdx.get(p.key)!),
      plan.baseline.map((p) => polIdx.get(p.key)!),
    ];
    const k = JSON.stringify(data);
    let i = planIdx.get(k);
    if (i === undefined) {
      planIdx.set(k, (i = plans.length));
      plans.push(data);
    }
    return i;
  };
  const identities: TableSnapshot["identities"] = [];
  const seenId = new Set<number>();
  for (const pod of table.allPods()) {
    const id = pod.identity;
    if (!id || seenId.has(id.id)) continue;
    seenId.add(id.id);
    const ing = planOf(table.plan(id, "ingress"));
    const eg = planOf(table.plan(id, "egress"));
    if (ing >= 0 || eg >= 0) identities.push([id.id, ing, eg]);
  }
  // Node facts for the addresses that matter: every node address (nodes peers, the node exemption).
  const nodeAddrMap = new Map<string, string[]>();
  for (const [ip, node] of table.nodeIndex.addressPairs()) {
    let l = nodeAddrMap.get(ip);
    if (!l) nodeAddrMap.set(ip, (l = []));
    l.push(node);
  }
  const nodeSels: TableSnapshot["nodeSels"] = [];
  for (const ip of nodeAddrMap.keys()) {
    const ids = table.nodeSelsFor(ip);
    if (ids.length) nodeSels.push([ip, [...ids]]);
  }
  return {
    generation: table.generation,
    endpoints,
    portLists,
    selectors,
    blocks: [...blocks.values()],
    nodeSels,
    nodeAddrs: [...nodeAddrMap],
    learned: [...table.domainIndex.entries(table.now())],
    policies,
    plans,
    identities,
  };
}

const EMPTY: PlanView = Object.freeze({ admin: [], namespaced: [], baseline: [], empty: true });
const NONE: readonly number[] = Object.freeze([]);

/** A read-only DecisionSource over a snapshot (what the NFQUEUE worker decides from). */
export class SnapshotSource implements DecisionSource {
  readonly generation: number;
  private readonly eps = new Map<string, EndpointView>();
  private readonly ingress = new Map<number, PlanView>();
  private readonly egress = new Map<number, PlanView>();
  private readonly blocks = new BlockMatcher();
  private readonly nodeSels: Map<string, readonly number[]>;
  private readonly nodeAddrs: Map<string, readonly string[]>;
  /** "pod|ip" -> [domain peer id, expiry ms] */
  private readonly learned = new Map<string, [number, number][]>();

  constructor(
    s: TableSnapshot,
    private readonly now: () => number = Date.now,
  ) {
    this.generation = s.generation;
    for (const [ip, key, identityId, pi, node] of s.endpoints)
      this.eps.set(ip, { key, identityId, ports: s.portLists[pi], node });
    const sels = new Map<number, ReadonlySet<number>>(s.selectors.map(([id, m]) => [id, new Set(m)]));
    for (const [id, cidr, excepts] of s.blocks) {
      const c = parseCIDR(cidr);
      if (c)
        this.blocks.trie.add(
          id,
          c,
          excepts.map((e) => parseCIDR(e)!),
        );
    }
    this.nodeSels = new Map(s.nodeSels);
    this.nodeAddrs = new Map(s.nodeAddrs);
    for (const [pod, ip, sets] of s.learned ?? []) this.learned.set(`${pod}|${ip}`, sets);
    const none: PeerView = { kind: "none" };
    const rules = (list: RuleData[] | null): RuleView[] | null =>
      list === null
        ? null
        : list.map((r) => ({
            index: r.i,
            name: r.n,
            action: r.a,
            ports: r.ports,
            peers:
              r.peers === null
                ? null
                : r.peers.map((p): PeerView => {
                    if ("s" in p) return { kind: "sel", members: sels.get(p.s)! };
                    if ("b" in p) return { kind: "block", id: p.b };
                    if ("n" in p) return { kind: "nodes", id: p.n };
                    if ("d" in p) return { kind: "domains", id: p.d };
                    return none;
                  }),
          }));
    const pols: PolicyView[] = s.policies.map((p) => ({
      key: p.key,
      tier: p.tier,
      priority: p.priority,
      ingress: rules(p.ingress),
      egress: rules(p.egress),
    }));
    // Tier lists equal across plans are one array, so they share one rule index.
    const lists = new Map<string, PolicyView[]>();
    const list = (idx: number[]) => {
      const k = idx.join(",");
      let arr = lists.get(k);
      if (!arr) lists.set(k, (arr = idx.map((i) => pols[i])));
      return arr;
    };
    const plans: PlanView[] = s.plans.map(([a, n, b]) => {
      const plan = { admin: list(a), namespaced: list(n), baseline: list(b), empty: false };
      prepare(plan);
      return plan;
    });
    for (const [id, ing, eg] of s.identities) {
      if (ing >= 0) this.ingress.set(id, plans[ing]);
      if (eg >= 0) this.egress.set(id, plans[eg]);
    }
    // Pod addresses are the peers almost every packet names: match them against the ipBlocks now.
    if (this.blocks.trie.size > 0) for (const ip of this.eps.keys()) this.blocks.blocksFor(ip);
  }

  endpoint(ip: string): EndpointView | undefined {
    return this.eps.get(ip);
  }

  planById(identityId: number, dir: Direction): PlanView {
    return (dir === "ingress" ? this.ingress : this.egress).get(identityId) ?? EMPTY;
  }

  blocksFor(ip: string): readonly number[] {
    return this.blocks.blocksFor(ip);
  }

  nodeSelsFor(ip: string): readonly number[] {
    return this.nodeSels.get(ip) ?? NONE;
  }

  domainSetsFor(pod: string, ip: string): readonly number[] {
    const sets = this.learned.get(`${pod}|${ip}`);
    if (!sets) return NONE;
    const now = this.now();
    const out: number[] = [];
    for (const [id, expires] of sets) if (expires > now) out.push(id);
    return out;
  }

  isNodeAddress(ip: string, node: string): boolean {
    return node !== "" && this.nodeAddrs.get(ip)?.includes(node) === true;
  }
}
