/**
 * reach-classes: the pods of a reachability matrix grouped into classes that every verdict treats
 * alike, on one table (a `simulate` picture) or on two (a `diff`), so a matrix is decided once per
 * class pair and port instead of once per pod pair.
 *
 * Why it is exact: a matrix cell is decide(table, flow) over the addresses the pair talks over
 * (matrix.ts's pairAddresses: the destination's first address of the first family the source also
 * has). decide reads those addresses only through:
 *   - at the source address: the identity of the pod owning it (its egress plan, and its membership
 *     in ingress peers), the ipBlocks and `nodes` peers containing it, the nodes it is an address of
 *     (the node exemption), and the names that pod learned from DNS (`domainNames` peers: a pod
 *     that learned any is a class of its own);
 *   - at the destination address: the owner's identity (ingress plan, membership in egress peers),
 *     its container ports (named ports), its node (the exemption), the ipBlocks and `nodes` peers
 *     containing the address;
 *   - and whether both addresses belong to one pod (a pod talking to itself: always allowed).
 * The first two are a pod's source and destination *signature* per family. Pods whose signatures
 * agree on every table compared, and whose families line up the same way, form one row (column)
 * class. Every pair of a row and a column class then gets the same verdict, except pairs whose two
 * addresses have one owner (loopback): those are listed per table (`loopPairs`, a handful: the
 * diagonal, and terminal or hostNetwork pods whose IP a live pod owns) and decided one by one.
 * A node is part of a destination signature only when some matrix address is an address of that
 * node (hostNetwork pods); otherwise the exemption can never apply and the node is left out, so
 * replicas spread over many nodes still share one class.
 *
 * Owns: addresses per family, signatures, classes, loopback pairs, and the memo of direction
 * verdicts keyed by what each direction reads (directionVerdicts).
 * May not: decide anything itself: every direction verdict is the engine's `decide` on real
 * addresses, and the peer matching that keys the memo is the engine's own peerIndex.
 */
import { bothAllow, type DirectionVerdict, decide, peerIndex, type Verdict } from "./engine.js";
import { type Family, parseIP } from "./ip.js";
import type { PortProto } from "./matrix.js";
import { type Direction, type PodInfo, PROTO } from "./model.js";
import type { Identity, Plan, PodRecord, PolicyTable } from "./table.js";

/** A pod's addresses: the first of each family, and its families in the order it lists its IPs. */
export interface PodAddresses {
  readonly order: readonly Family[];
  readonly v4: string | undefined;
  readonly v6: string | undefined;
}

export function podAddresses(p: PodInfo): PodAddresses {
  const order: Family[] = [];
  let v4: string | undefined;
  let v6: string | undefined;
  for (const ip of p.ips) {
    const f = parseIP(ip)?.family;
    if (f === 4 && v4 === undefined) {
      v4 = ip;
      order.push(4);
    } else if (f === 6 && v6 === undefined) {
      v6 = ip;
      order.push(6);
    }
  }
  return { order, v4, v6 };
}

export function addressOf(a: PodAddresses, f: Family): string | undefined {
  return f === 4 ? a.v4 : a.v6;
}

/** The family a pair talks over, as pairAddresses picks it; undefined when they share none. */
export function pairFamily(from: PodAddresses, to: PodAddresses): Family | undefined {
  for (const f of to.order) if (addressOf(from, f) !== undefined) return f;
  return undefined;
}

/**
 * Table-independent names for what a signature means, so two tables can be compared: policies by
 * key and fingerprint, selectors, ipBlocks and node selectors by key. Only keys both tables hold
 * are compared (a key only one table holds is used only by policies that differ, whose plans
 * differ anyway).
 */
export interface ContentKeys {
  /** Interned "policy key + fingerprint" -> small number, shared by both tables. */
  readonly policyIds: Map<string, number>;
  readonly selectors: ReadonlySet<string>;
  readonly blocks: ReadonlySet<string>;
  readonly nodeSels: ReadonlySet<string>;
}

export function commonKeys(tables: readonly PolicyTable[]): ContentKeys {
  const inter = (sets: Set<string>[]) => new Set([...sets[0]].filter((k) => sets.every((s) => s.has(k))));
  const sels = tables.map((t) => new Set([...t.allSelectors()].map((s) => s.spec.key)));
  const blocks = tables.map((t) => {
    const out = new Set<string>();
    for (const p of t.allPolicies())
      for (const rules of [p.ingress, p.egress])
        for (const r of rules ?? [])
          for (const peer of r.peers ?? []) if (peer.kind === "block") out.add(peer.block.spec.key);
    return out;
  });
  const nodeSels = tables.map((t) => new Set([...t.nodeIndex.allSelectors()].map((s) => s.spec.key)));
  return { policyIds: new Map(), selectors: inter(sels), blocks: inter(blocks), nodeSels: inter(nodeSels) };
}

/** One table's view of the matrix pods: signatures per pod and family. */
export class SideIndex {
  readonly addrs: PodAddresses[];
  /** Per pod, the signature id of its IPv4 / IPv6 address as a source and as a destination; -1 = none. */
  readonly src4: Int32Array;
  readonly src6: Int32Array;
  readonly dst4: Int32Array;
  readonly dst6: Int32Array;
  /** Per pod, the key of the pod owning its IPv4 / IPv6 address ("" = none). */
  readonly owner4: string[];
  readonly owner6: string[];
  /** Signature id -> the address it was first seen on (content is computed from it). */
  private readonly srcAddr: string[] = [];
  private readonly dstAddr: string[] = [];
  private readonly nodesOfAddr = new Map<string, string[]>();
  /** Engine decisions made. */
  decisions = 0;
  private static unique = 0;

  constructor(
    readonly table: PolicyTable,
    readonly pods: readonly PodInfo[],
    /** Nodes that some matrix address belongs to, on any table compared (see the module comment). */
    readonly relevantNodes: ReadonlySet<string>,
  ) {
    for (const [ip, node] of table.nodeIndex.addressPairs()) {
      const list = this.nodesOfAddr.get(ip);
      if (list) list.push(node);
      else this.nodesOfAddr.set(ip, [node]);
    }
    for (const l of this.nodesOfAddr.values()) l.sort();
    const n = pods.length;
    this.addrs = pods.map(podAddresses);
    this.src4 = new Int32Array(n).fill(-1);
    this.src6 = new Int32Array(n).fill(-1);
    this.dst4 = new Int32Array(n).fill(-1);
    this.dst6 = new Int32Array(n).fill(-1);
    this.owner4 = new Array(n).fill("");
    this.owner6 = new Array(n).fill("");
    const srcIds = new Map<string, number>();
    const dstIds = new Map<string, number>();
    const portKeys = new WeakMap<object, string>();
    const portsKey = (o: PodRecord) => {
      let k = portKeys.get(o.ports);
      if (k === undefined) portKeys.set(o.ports, (k = JSON.stringify(o.ports)));
      return k;
    };
    const intern = (ids: Map<string, number>, reps: string[], key: string, ip: string) => {
      let id = ids.get(key);
      if (id === undefined) {
        ids.set(key, (id = reps.length));
        reps.push(ip);
      }
      return id;
    };
    for (let i = 0; i < n; i++) {
      for (const f of this.addrs[i].order) {
        const ip = addressOf(this.addrs[i], f)!;
        const o = table.endpoint(ip);
        const blocks = [...table.blocksFor(ip)].sort((a, b) => a - b).join(",");
        const nsels = [...table.nodeSelsFor(ip)].sort((a, b) => a - b).join(",");
        const nodes = (this.nodesOfAddr.get(ip) ?? []).join(",");
        const id = o ? o.identityId : 0;
        // A pod that learned names from DNS matches `domainNames` peers on its own: its own class.
        const learned = o !== undefined && table.domainIndex.hasLearned(o.key) ? o.key : "";
        const src = intern(srcIds, this.srcAddr, `${id}|${blocks}|${nsels}|${nodes}|${learned}`, ip);
        const node = o && relevantNodes.has(o.node) ? o.node : "";
        const dst = intern(
          dstIds,
          this.dstAddr,
          `${id}|${o ? portsKey(o) : "-"}|${node}|${blocks}|${nsels}`,
          ip,
        );
        if (f === 4) {
          this.src4[i] = src;
          this.dst4[i] = dst;
          this.owner4[i] = o?.key ?? "";
        } else {
          this.src6[i] = src;
          this.dst6[i] = dst;
          this.owner6[i] = o?.key ?? "";
        }
      }
    }
  }

  get srcSignatures(): number {
    return this.srcAddr.length;
  }

  get dstSignatures(): number {
    return this.dstAddr.length;
  }

  srcSig(i: number, f: Family): number {
    return f === 4 ? this.src4[i] : this.src6[i];
  }

  dstSig(i: number, f: Family): number {
    return f === 4 ? this.dst4[i] : this.dst6[i];
  }

  owner(i: number, f: Family): string {
    return f === 4 ? this.owner4[i] : this.owner6[i];
  }

  /** Row key part: the source signature per family (the order of a source's families never matters). */
  rowKey(i: number): string {
    return `${this.src4[i]}/${this.src6[i]}`;
  }

  /** Column key part: the destination's family order and signature per family. */
  colKey(i: number): string {
    return `${this.addrs[i].order.join("")}:${this.dst4[i]}/${this.dst6[i]}`;
  }

  /** Is (i -> j) a pod talking to itself on this table (both addresses owned by one pod)? */
  isLoop(i: number, j: number): boolean {
    const f = pairFamily(this.addrs[i], this.addrs[j]);
    if (f === undefined) return false;
    const o = this.owner(i, f);
    return o !== "" && o === this.owner(j, f);
  }

  /** Every (from, to) pair whose addresses one pod owns, as [from, to] indexes. */
  loopPairs(): [number, number][] {
    const byOwner = new Map<string, number[]>();
    for (let i = 0; i < this.pods.length; i++) {
      for (const o of [this.owner4[i], this.owner6[i]]) {
        if (o === "") continue;
        const list = byOwner.get(o);
        if (!list) byOwner.set(o, [i]);
        else if (list[list.length - 1] !== i) list.push(i);
      }
    }
    const out: [number, number][] = [];
    for (const group of byOwner.values())
      for (const i of group) for (const j of group) if (this.isLoop(i, j)) out.push([i, j]);
    return out;
  }

  /** The verdict of the real pair (i -> j) on `pp`, or undefined when they share no family. */
  decidePair(i: number, j: number, pp: PortProto): Verdict | undefined {
    const f = pairFamily(this.addrs[i], this.addrs[j]);
    if (f === undefined) return undefined;
    this.decisions++;
    return decide(this.table, {
      src: addressOf(this.addrs[i], f)!,
      dst: addressOf(this.addrs[j], f)!,
      proto: PROTO[pp.protocol],
      port: pp.port,
    });
  }

  /**
   * One direction's verdicts for every non-loopback pair of (row members x column members), one
   * per port, written to `out` (null where every pair of them is loopback); false when the
   * classes share no family on this table (no cell).
   *
   * Each direction is memoized on what it reads (see the module comment):
   *   egress  = f(the source's egress plan, the destination's match of each of that plan's rules'
   *              peers (the engine's own peerIndex), the destination's container ports, port);
   *   ingress = f(the destination's ingress plan, its ports and node, the source's match of each of
   *              that plan's rules' peers, the nodes the source address belongs to, port).
   * So a policy that selects every pod costs engine decisions per (plan x match pattern), not per
   * class pair. A miss is decided by the engine on a representative pair of real addresses.
   */
  directionVerdicts(
    dir: Direction,
    rows: readonly number[],
    cols: readonly number[],
    ports: readonly PortProto[],
    out: (DirectionVerdict | null)[],
  ): boolean {
    const f = pairFamily(this.addrs[rows[0]], this.addrs[cols[0]]);
    if (f === undefined) return false;
    const s = this.srcSig(rows[0], f);
    const d = this.dstSig(cols[0], f);
    const memo =
      dir === "egress"
        ? (this.egressMemo[this.egressContext(s, d)] ??= new Array(ports.length))
        : (this.ingressMemo[this.ingressContext(s, d)] ??= new Array(ports.length));
    for (let pi = 0; pi < ports.length; pi++) {
      let v = memo[pi];
      if (v === undefined) {
        const full = this.decideAny(rows, cols, f, ports[pi]);
        if (!full) {
          out[pi] = null;
          continue;
        }
        memo[pi] = v = full[dir];
      }
      out[pi] = v;
    }
    return true;
  }

  /** Both directions joined into verdicts, as decide joins them (bothAllow); see directionVerdicts. */
  classVerdicts(
    rows: readonly number[],
    cols: readonly number[],
    ports: readonly PortProto[],
    out: (Verdict | null)[],
  ): boolean {
    this.egBuf.length = this.inBuf.length = ports.length;
    if (!this.directionVerdicts("egress", rows, cols, ports, this.egBuf)) return false;
    this.directionVerdicts("ingress", rows, cols, ports, this.inBuf);
    for (let pi = 0; pi < ports.length; pi++) {
      const e = this.egBuf[pi];
      const i = this.inBuf[pi];
      out[pi] = e && i ? this.join(e, i) : null;
    }
    return true;
  }

  private readonly egBuf: (DirectionVerdict | null)[] = [];
  private readonly inBuf: (DirectionVerdict | null)[] = [];

  /** The verdict of a (non-loopback) pair from its two sides; one object per pair of sides. */
  join(e: DirectionVerdict, i: DirectionVerdict): Verdict {
    let byI = this.joined.get(e);
    if (!byI) this.joined.set(e, (byI = new Map()));
    let v = byI.get(i);
    if (!v) byI.set(i, (v = { allowed: bothAllow(e, i), egress: e, ingress: i }));
    return v;
  }

  /** The engine's verdict on the first non-loopback pair of rows x cols (over family f). */
  private decideAny(
    rows: readonly number[],
    cols: readonly number[],
    f: Family,
    pp: PortProto,
  ): Verdict | undefined {
    for (const i of rows) {
      const o = this.owner(i, f);
      for (const j of cols) {
        if (o === "" || o !== this.owner(j, f)) {
          this.decisions++;
          return decide(this.table, {
            src: addressOf(this.addrs[i], f)!,
            dst: addressOf(this.addrs[j], f)!,
            proto: PROTO[pp.protocol],
            port: pp.port,
          });
        }
      }
    }
    return undefined;
  }

  /** Direction verdicts per context id, one slot per port. */
  private readonly egressMemo: DirectionVerdict[][] = [];
  private readonly ingressMemo: DirectionVerdict[][] = [];
  private readonly joined = new Map<DirectionVerdict, Map<DirectionVerdict, Verdict>>();
  /** Plans by content (the policies in them), within this table. */
  private readonly planIds = new Map<string, number>();
  private readonly planById: Plan[] = [];
  private readonly planIdOfPlan = new Map<Plan, number>();
  private readonly ids = new Map<string, number>();
  private srcPlan: Int32Array | undefined;
  private dstPlan: Int32Array | undefined;
  private dstKey: Int32Array | undefined;
  private readonly egressCtx = new Map<number, number>();
  private readonly ingressCtx = new Map<number, number>();

  private intern(k: string): number {
    let id = this.ids.get(k);
    if (id === undefined) this.ids.set(k, (id = this.ids.size));
    return id;
  }

  private planId(o: PodRecord | undefined, dir: Direction): number {
    if (!o?.identity) return -1;
    const plan = this.table.plan(o.identity, dir);
    let id = this.planIdOfPlan.get(plan);
    if (id === undefined) {
      const k = `${dir}:${[plan.admin, plan.namespaced, plan.baseline].map((l) => l.map((p) => p.key).join(",")).join(";")}`;
      id = this.planIds.get(k);
      if (id === undefined) {
        this.planIds.set(k, (id = this.planById.length));
        this.planById.push(plan);
      }
      this.planIdOfPlan.set(plan, id);
    }
    return id;
  }

  /** Which peer of each of the plan's rules (in `dir`) the endpoint matches: the engine's peerIndex. */
  private matches(
    planId: number,
    dir: Direction,
    other: PodRecord | undefined,
    ip: string,
    self?: PodRecord,
  ): string {
    if (planId < 0) return "";
    const plan = this.planById[planId];
    let k = "";
    for (const list of [plan.admin, plan.namespaced, plan.baseline])
      for (const pol of list)
        for (const rule of pol[dir] ?? []) k += `${peerIndex(rule.peers, other, ip, this.table, self)},`;
    return k;
  }

  /** The pod owning source signature `s` when it learned names from DNS. */
  private learnedOwner(s: number): PodRecord | undefined {
    const o = this.table.endpoint(this.srcAddr[s]);
    return o && this.table.domainIndex.hasLearned(o.key) ? o : undefined;
  }

  /** Id of what an egress side reads: the source's plan, and the destination's matches and ports. */
  private egressContext(s: number, d: number): number {
    this.srcPlan ??= new Int32Array(this.srcAddr.length).fill(-2);
    if (this.srcPlan[s] === -2) this.srcPlan[s] = this.planId(this.table.endpoint(this.srcAddr[s]), "egress");
    const plan = this.srcPlan[s];
    // A source that learned names reads them itself (domainNames peers): keyed by the source then.
    const self = this.learnedOwner(s);
    const memoKey = self ? -1 - (s * this.dstAddr.length + d) : (plan + 1) * this.dstAddr.length + d;
    let id = this.egressCtx.get(memoKey);
    if (id === undefined) {
      const ip = this.dstAddr[d];
      const o = this.table.endpoint(ip);
      const who = self ? `S${s}` : "";
      id = this.intern(
        `E${plan}${who}|${this.matches(plan, "egress", o, ip, self)}|${o ? JSON.stringify(o.ports) : "-"}`,
      );
      this.egressCtx.set(memoKey, id);
    }
    return id;
  }

  /** Id of what an ingress side reads: the destination's plan, ports and node, and the source's matches and nodes. */
  private ingressContext(s: number, d: number): number {
    if (!this.dstKey) {
      this.dstKey = new Int32Array(this.dstAddr.length).fill(-1);
      this.dstPlan = new Int32Array(this.dstAddr.length).fill(-2);
    }
    if (this.dstKey[d] < 0) {
      const o = this.table.endpoint(this.dstAddr[d]);
      this.dstPlan![d] = this.planId(o, "ingress");
      const node = o && this.relevantNodes.has(o.node) ? o.node : "";
      this.dstKey[d] = this.intern(`D${this.dstPlan![d]}|${o ? JSON.stringify(o.ports) : "-"}|${node}`);
    }
    const memoKey = this.dstKey[d] * this.srcAddr.length + s;
    let id = this.ingressCtx.get(memoKey);
    if (id === undefined) {
      const ip = this.srcAddr[s];
      const o = this.table.endpoint(ip);
      const nodes = (this.nodesOfAddr.get(ip) ?? []).join(",");
      id = this.intern(`I${this.dstKey[d]}|${this.matches(this.dstPlan![d], "ingress", o, ip)}|${nodes}`);
      this.ingressCtx.set(memoKey, id);
    }
    return id;
  }

  // ------------------------------------------------------------ content (comparing two tables)

  private readonly planKeys = new Map<Identity, Record<Direction, string | undefined>>();
  private readonly memberKeys = new Map<Identity, string>();
  private nodeSelKeys: Map<number, string> | undefined;

  private planKey(identity: Identity, dir: Direction, keys: ContentKeys): string {
    let rec = this.planKeys.get(identity);
    if (!rec) this.planKeys.set(identity, (rec = { ingress: undefined, egress: undefined }));
    let k = rec[dir];
    if (k === undefined) {
      const plan = this.table.plan(identity, dir);
      const ids = (list: readonly { key: string; spec: { fingerprint: string } }[]) =>
        list
          .map((p) => {
            const name = `${p.key}\u0000${p.spec.fingerprint}`;
            let id = keys.policyIds.get(name);
            if (id === undefined) keys.policyIds.set(name, (id = keys.policyIds.size));
            return id;
          })
          .join(",");
      rec[dir] = k = `${ids(plan.admin)};${ids(plan.namespaced)};${ids(plan.baseline)}`;
    }
    return k;
  }

  private members(identity: Identity, keys: ContentKeys): string {
    let k = this.memberKeys.get(identity);
    if (k === undefined) {
      k = [...identity.selectors]
        .map((s) => s.spec.key)
        .filter((key) => keys.selectors.has(key))
        .sort()
        .join("\u0000");
      this.memberKeys.set(identity, k);
    }
    return k;
  }

  private addressContent(ip: string, keys: ContentKeys): string {
    if (!this.nodeSelKeys) {
      this.nodeSelKeys = new Map();
      for (const s of this.table.nodeIndex.allSelectors()) this.nodeSelKeys.set(s.id, s.spec.key);
    }
    const blocks = this.table
      .blocksFor(ip)
      .map((id) => this.table.block(id)?.spec.key ?? "")
      .filter((k) => keys.blocks.has(k))
      .sort()
      .join("\u0000");
    const nsels = this.table
      .nodeSelsFor(ip)
      .map((id) => this.nodeSelKeys!.get(id) ?? "")
      .filter((k) => keys.nodeSels.has(k))
      .sort()
      .join("\u0000");
    return `${blocks}|${nsels}`;
  }

  /**
   * What a source signature means, in names two tables share, in two parts: what its egress side
   * reads (the owner's egress plan), and what ingress sides read of it (the owner's selector
   * memberships, the address's ipBlocks, `nodes` peers and nodes). Equal parts on two tables =
   * equal verdicts of that direction against any destination whose matching part is equal too.
   */
  srcContent(sig: number, keys: ContentKeys): { egress: string; peer: string } {
    const ip = this.srcAddr[sig];
    const o = this.table.endpoint(ip);
    const nodes = (this.nodesOfAddr.get(ip) ?? []).join(",");
    // What a pod learned from DNS is not compared across tables: such a source is always dirty.
    const learned = o && this.table.domainIndex.hasLearned(o.key) ? `|L${SideIndex.unique++}` : "";
    return {
      egress: o?.identity ? `E${this.planKey(o.identity, "egress", keys)}${learned}` : "-",
      peer: `${o?.identity ? `M${this.members(o.identity, keys)}` : "-"}|${this.addressContent(ip, keys)}|${nodes}`,
    };
  }

  /**
   * What a destination signature means, in two parts: what its ingress side reads (the ingress
   * plan, container ports and node), and what egress sides read of it (memberships, container
   * ports, the address's ipBlocks and `nodes` peers).
   */
  dstContent(sig: number, keys: ContentKeys): { ingress: string; peer: string } {
    const ip = this.dstAddr[sig];
    const o = this.table.endpoint(ip);
    const ports = o ? JSON.stringify(o.ports) : "-";
    return {
      ingress: o?.identity
        ? `I${this.planKey(o.identity, "ingress", keys)}|P${ports}|D${this.relevantNodes.has(o.node) ? o.node : ""}`
        : "-",
      peer: `${o?.identity ? `M${this.members(o.identity, keys)}` : "-"}|P${ports}|${this.addressContent(ip, keys)}`,
    };
  }
}

/** Nodes that some address of these pods belongs to, on any of the tables. */
export function relevantNodes(
  tables: readonly PolicyTable[],
  pods: readonly (readonly PodInfo[])[],
): Set<string> {
  const out = new Set<string>();
  tables.forEach((t, k) => {
    const byAddr = new Map<string, string[]>();
    for (const [ip, node] of t.nodeIndex.addressPairs()) {
      const l = byAddr.get(ip);
      if (l) l.push(node);
      else byAddr.set(ip, [node]);
    }
    if (byAddr.size === 0) return;
    for (const p of pods[k]) for (const ip of p.ips) for (const n of byAddr.get(ip) ?? []) out.add(n);
  });
  return out;
}

/** Classes of pod indexes with equal keys, in order of first appearance. */
export function classify(n: number, keyOf: (i: number) => string): { of: Int32Array; members: number[][] } {
  const ids = new Map<string, number>();
  const of = new Int32Array(n);
  const members: number[][] = [];
  for (let i = 0; i < n; i++) {
    const k = keyOf(i);
    let id = ids.get(k);
    if (id === undefined) {
      ids.set(k, (id = members.length));
      members.push([]);
    }
    members[id].push(i);
    of[i] = id;
  }
  return { of, members };
}
