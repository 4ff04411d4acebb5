/**
 * nodes: what the table knows of Nodes: their labels and addresses, the node-selector cache that
 * `nodes` peers share, and which addresses belong to which node.
 *
 * Two questions, two sources:
 *  - "which `nodes` peers match this address" reads Node objects only (status.addresses), as the
 *    ClusterNetworkPolicy API defines the peer;
 *  - "is this address the pod's own node" (the node may always reach its pods: kubelet probes) also
 *    reads what pods report of their node (status.hostIPs, and the addresses of hostNetwork pods),
 *    so a cluster given as manifests without Node objects previews what the node enforces.
 * May not: do I/O or know about policies.
 */
import type { NodeInfo } from "./model.js";
import type { NodeSelectorSpec } from "./rule-model.js";

export interface NodeSelectorEntry {
  readonly id: number;
  readonly spec: NodeSelectorSpec;
  /** Names of the Node objects whose labels match. */
  readonly members: Set<string>;
  refs: number;
  /** Bumped when membership or a member's addresses change (renderers diff on it). */
  version: number;
}

const NONE: readonly number[] = Object.freeze([]);

export class NodeIndex {
  private readonly nodes = new Map<string, NodeInfo>();
  private readonly selectors = new Map<string, NodeSelectorEntry>();
  /** Address -> names of Node objects listing it. */
  private readonly objAddrs = new Map<string, Set<string>>();
  /** Address -> node name -> how many pods report it (hostIPs, hostNetwork pod IPs). */
  private readonly podAddrs = new Map<string, Map<string, number>>();
  private memo = new Map<string, readonly number[]>();

  get size(): number {
    return this.nodes.size;
  }

  node(name: string): NodeInfo | undefined {
    return this.nodes.get(name);
  }

  allNodes(): IterableIterator<NodeInfo> {
    return this.nodes.values();
  }

  /** Returns true when something a verdict reads changed. */
  upsert(info: NodeInfo): boolean {
    const prev = this.nodes.get(info.name);
    if (prev && sameNode(prev, info)) return false;
    if (prev) this.unindex(prev);
    this.nodes.set(info.name, info);
    for (const a of info.addresses) {
      let s = this.objAddrs.get(a);
      if (!s) this.objAddrs.set(a, (s = new Set()));
      s.add(info.name);
    }
    for (const sel of this.selectors.values()) {
      const match = sel.spec.sel.matches(info.labels);
      if (match || sel.members.has(info.name)) sel.version++;
      if (match) sel.members.add(info.name);
      else sel.members.delete(info.name);
    }
    this.memo.clear();
    return true;
  }

  delete(name: string): boolean {
    const prev = this.nodes.get(name);
    if (!prev) return false;
    this.unindex(prev);
    this.nodes.delete(name);
    for (const sel of this.selectors.values()) if (sel.members.delete(name)) sel.version++;
    this.memo.clear();
    return true;
  }

  private unindex(info: NodeInfo): void {
    for (const a of info.addresses) {
      const s = this.objAddrs.get(a);
      s?.delete(info.name);
      if (s?.size === 0) this.objAddrs.delete(a);
    }
  }

  acquire(spec: NodeSelectorSpec, nextId: () => number): NodeSelectorEntry {
    let sel = this.selectors.get(spec.key);
    if (sel) {
      sel.refs++;
      return sel;
    }
    sel = { id: nextId(), spec, members: new Set(), refs: 1, version: 0 };
    for (const n of this.nodes.values()) if (spec.sel.matches(n.labels)) sel.members.add(n.name);
    this.selectors.set(spec.key, sel);
    this.memo.clear();
    return sel;
  }

  release(sel: NodeSelectorEntry): void {
    if (--sel.refs > 0) return;
    this.selectors.delete(sel.spec.key);
    this.memo.clear();
  }

  /** Addresses of the nodes a selector matches, per family text (for ipsets). */
  addressesOf(sel: NodeSelectorEntry): string[] {
    const out = new Set<string>();
    for (const name of sel.members) for (const a of this.nodes.get(name)?.addresses ?? []) out.add(a);
    return [...out].sort();
  }

  /** Ids of the node selectors whose nodes hold this address (memoized until nodes or selectors change). */
  selectorsFor(ip: string): readonly number[] {
    let r = this.memo.get(ip);
    if (r !== undefined) return r;
    const names = this.objAddrs.get(ip);
    if (!names) r = NONE;
    else {
      const ids: number[] = [];
      for (const sel of this.selectors.values()) {
        for (const n of names) {
          if (sel.members.has(n)) {
            ids.push(sel.id);
            break;
          }
        }
      }
      r = ids.length ? ids : NONE;
    }
    if (this.memo.size >= 100_000) this.memo.clear();
    this.memo.set(ip, r);
    return r;
  }

  /** A pod reports `ip` as an address of `node` (its hostIPs, or its own IPs when hostNetwork). */
  addPodAddress(ip: string, node: string): void {
    if (!node) return;
    let m = this.podAddrs.get(ip);
    if (!m) this.podAddrs.set(ip, (m = new Map()));
    m.set(node, (m.get(node) ?? 0) + 1);
  }

  removePodAddress(ip: string, node: string): void {
    const m = this.podAddrs.get(ip);
    if (!m || !node) return;
    const n = (m.get(node) ?? 0) - 1;
    if (n > 0) m.set(node, n);
    else m.delete(node);
    if (m.size === 0) this.podAddrs.delete(ip);
  }

  /** Is `ip` an address of node `node`, by its Node object or by what its pods report? */
  isNodeAddress(ip: string, node: string): boolean {
    if (!node) return false;
    return this.objAddrs.get(ip)?.has(node) === true || this.podAddrs.get(ip)?.has(node) === true;
  }

  /** Every (address, node) pair known, for snapshots. */
  *addressPairs(): Generator<[string, string]> {
    for (const [ip, names] of this.objAddrs) for (const n of names) yield [ip, n];
    for (const [ip, m] of this.podAddrs)
      for (const n of m.keys()) if (!this.objAddrs.get(ip)?.has(n)) yield [ip, n];
  }

  allSelectors(): IterableIterator<NodeSelectorEntry> {
    return this.selectors.values();
  }
}

function sameNode(a: NodeInfo, b: NodeInfo): boolean {
  return (
    JSON.stringify(Object.entries(a.labels).sort()) === JSON.stringify(Object.entries(b.labels).sort()) &&
    a.addresses.join(",") === b.addresses.join(",")
  );
}
