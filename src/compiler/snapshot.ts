/**
 * snapshot: a structured-clone-able copy of the table for the NFQUEUE worker thread, and the
 * DecisionSource that answers from it.
 *
 * Owns: flattening identities, selectors, ipBlocks and policies into plain arrays, and rebuilding
 * Maps/Sets and a CIDR trie on the other side so `decide` runs unchanged in the worker. The main
 * thread posts a fresh snapshot on every change; the worker swaps it in between packets.
 * May not: be mutated after construction (the worker replaces it whole).
 */
import { BlockMatcher } from "./cidr-trie.js";
import {
  type DecisionSource,
  type EndpointView,
  type PeerView,
  type PolicyView,
  prepare,
  type RuleView,
} from "./engine.js";
import { parseCIDR } from "./ip.js";
import type { ContainerPort } from "./model.js";
import type { PortSpec } from "./ports.js";
import type { PolicyTable } from "./table.js";

type RuleData = { i: number; peers: ({ s: number } | { b: number })[] | null; ports: PortSpec[] | null };

export interface TableSnapshot {
  generation: number;
  /** [ip, pod key, identity id, port list index] */
  endpoints: [string, string, number, number][];
  portLists: ContainerPort[][];
  /** [selector id, member identity ids] */
  selectors: [number, number[]][];
  /** [block id, cidr, excepts] */
  blocks: [number, string, string[]][];
  policies: { key: string; ingress: RuleData[] | null; egress: RuleData[] | null }[];
  /** [identity id, ingress policy indexes, egress policy indexes] */
  identities: [number, number[], number[]][];
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
      if (table.endpoint(ip.text) === pod) endpoints.push([ip.text, pod.key, pod.identityId, pi]);
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
            ports: r.ports as PortSpec[] | null,
            peers:
              r.peers === null
                ? null
                : r.peers.map((p) => {
                    if (p.kind === "sel") {
                      if (!seenSel.has(p.sel.id)) {
                        seenSel.add(p.sel.id);
                        selectors.push([p.sel.id, [...p.sel.members]]);
                      }
                      return { s: p.sel.id };
                    }
                    const b = p.block.spec;
                    blocks.set(p.id, [p.id, b.cidr.text, b.excepts.map((e) => e.text)]);
                    return { b: p.id };
                  }),
          }));
    polIdx.set(pol.key, policies.length);
    policies.push({ key: pol.key, ingress: rules(pol.ingress), egress: rules(pol.egress) });
  }
  const identities: TableSnapshot["identities"] = [];
  const seenId = new Set<number>();
  for (const pod of table.allPods()) {
    const id = pod.identity;
    if (!id || seenId.has(id.id)) continue;
    seenId.add(id.id);
    const ing = table.isolating(id, "ingress").map((p) => polIdx.get(p.key)!);
    const eg = table.isolating(id, "egress").map((p) => polIdx.get(p.key)!);
    if (ing.length || eg.length) identities.push([id.id, ing, eg]);
  }
  return {
    generation: table.generation,
    endpoints,
    portLists,
    selectors,
    blocks: [...blocks.values()],
    policies,
    identities,
  };
}

const NONE: readonly PolicyView[] = [];

/** A read-only DecisionSource over a snapshot (what the NFQUEUE worker decides from). */
export class SnapshotSource implements DecisionSource {
  readonly generation: number;
  private readonly eps = new Map<string, EndpointView>();
  private readonly ingress = new Map<number, PolicyView[]>();
  private readonly egress = new Map<number, PolicyView[]>();
  private readonly blocks = new BlockMatcher();

  constructor(s: TableSnapshot) {
    this.generation = s.generation;
    for (const [ip, key, identityId, pi] of s.endpoints)
      this.eps.set(ip, { key, identityId, ports: s.portLists[pi] });
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
    const rules = (list: RuleData[] | null): RuleView[] | null =>
      list === null
        ? null
        : list.map((r) => ({
            index: r.i,
            ports: r.ports,
            peers:
              r.peers === null
                ? null
                : r.peers.map(
                    (p): PeerView =>
                      "s" in p ? { kind: "sel", members: sels.get(p.s)! } : { kind: "block", id: p.b },
                  ),
          }));
    const pols: PolicyView[] = s.policies.map((p) => ({
      key: p.key,
      ingress: rules(p.ingress),
      egress: rules(p.egress),
    }));
    // Identities isolated by the same policies share one array, so they share its rule index too.
    const sets = new Map<string, PolicyView[]>();
    const shared = (idx: number[]) => {
      const k = idx.join(",");
      let arr = sets.get(k);
      if (!arr) {
        sets.set(k, (arr = idx.map((i) => pols[i])));
        prepare(arr);
      }
      return arr;
    };
    for (const [id, ing, eg] of s.identities) {
      if (ing.length) this.ingress.set(id, shared(ing));
      if (eg.length) this.egress.set(id, shared(eg));
    }
    // Pod addresses are the peers almost every packet names: match them against the ipBlocks now.
    if (this.blocks.trie.size > 0) for (const ip of this.eps.keys()) this.blocks.blocksFor(ip);
  }

  endpoint(ip: string): EndpointView | undefined {
    return this.eps.get(ip);
  }

  isolatingById(identityId: number, dir: "ingress" | "egress"): readonly PolicyView[] {
    return (dir === "ingress" ? this.ingress : this.egress).get(identityId) ?? NONE;
  }

  blocksFor(ip: string): readonly number[] {
    return this.blocks.blocksFor(ip);
  }
}
