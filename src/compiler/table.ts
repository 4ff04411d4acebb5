/**
 * table: the incrementally maintained compiled policy table, the one truth every consumer reads
 * (simulate, explain, the verdict engine and cache, the iptables renderer, the NFQUEUE snapshot).
 *
 * Owns: label-set identities (pods with equal namespace+labels share one), the selector cache (one
 * entry per distinct selector with its member identities, shared by all policies of every kind), the
 * ipBlock registry and CIDR tries, the node index (nodes.ts), the IP -> pod index, and per identity
 * and direction the policies that apply to it, arranged by tier into its evaluation plan (see
 * rule-model.ts for the model and the order).
 * Every event touches only what it changes: a pod label change re-evaluates the selectors of that
 * pod's namespace and the namespace-selecting ones; a policy change recompiles that policy only.
 * May not: do I/O, or import the dataplane or the agent. Bad policies throw InputError before any
 * state changes, so a rejected update leaves the last good version in force.
 */
import { BlockMatcher } from "./cidr-trie.js";
import { DomainIndex, type DomainSetEntry } from "./domains.js";
import { type ParsedIP, parseIP } from "./ip.js";
import { compilePolicyObject, FROM_API, isPolicyKind, type ParseOptions } from "./kinds/index.js";
import {
  type ContainerPort,
  type Direction,
  defaultNamespace,
  isTerminalPhase,
  type NamespaceInfo,
  type NodeInfo,
  NS_NAME_LABEL,
  type PodInfo,
  podKey,
} from "./model.js";
import { NodeIndex, type NodeSelectorEntry } from "./nodes.js";
import type { PortMatcher } from "./ports.js";
import {
  type Action,
  type BlockSpec,
  type PeerSpec,
  type PolicyKind,
  type PolicySpec,
  policyKey,
  type SelectorSpec,
  type Tier,
} from "./rule-model.js";

export interface Identity {
  readonly id: number;
  readonly key: string;
  readonly namespace: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly pods: Set<PodRecord>;
  /** Selectors this identity is a member of. */
  readonly selectors: Set<SelectorEntry>;
  /** Policies whose subject selects this identity and that have rules for the direction. */
  readonly applied: Record<Direction, Set<PolicyRecord>>;
  /** Evaluation plans, rebuilt lazily after a change: what is enforced, and with audit policies too. */
  plans: Record<Direction, Plan | null>;
  auditPlans: Record<Direction, Plan | null>;
}

/**
 * What applies to one identity in one direction, by tier, in evaluation order: admin and baseline
 * by (priority, name), NetworkPolicies by key (they form a union, the order only names the first).
 */
export interface Plan {
  readonly admin: readonly PolicyRecord[];
  readonly namespaced: readonly PolicyRecord[];
  readonly baseline: readonly PolicyRecord[];
  /** No policy applies: every flow in this direction is allowed. */
  readonly empty: boolean;
  /** Some policy here is audit-only (only in audit plans). */
  readonly audited: boolean;
}

export interface SelectorEntry {
  readonly id: number;
  readonly spec: SelectorSpec;
  /** Member identity ids: the hot-path membership test. */
  readonly members: Set<number>;
  readonly memberIdentities: Set<Identity>;
  /** Policies whose spec.podSelector this is. */
  readonly targetOf: Set<PolicyRecord>;
  refs: number;
  /** Bumped whenever the member set or a member pod's IPs/ports change (renderers diff on it). */
  version: number;
}

export interface BlockEntry {
  readonly id: number;
  readonly spec: BlockSpec;
  refs: number;
}

export type CompiledPeer =
  | { kind: "sel"; sel: SelectorEntry; members: Set<number>; spec: PeerSpec }
  | { kind: "block"; block: BlockEntry; id: number; spec: PeerSpec }
  | { kind: "nodes"; nodes: NodeSelectorEntry; id: number; spec: PeerSpec }
  | { kind: "domains"; domains: DomainSetEntry; id: number; spec: PeerSpec }
  | { kind: "none"; spec: PeerSpec };

export interface CompiledRule {
  readonly index: number;
  readonly name: string;
  readonly action: Action;
  /** null = every peer. */
  readonly peers: readonly CompiledPeer[] | null;
  readonly ports: PortMatcher;
}

export interface PolicyRecord {
  readonly key: string;
  readonly spec: PolicySpec;
  readonly tier: Tier;
  readonly priority: number;
  readonly target: SelectorEntry;
  readonly ingress: readonly CompiledRule[] | null;
  readonly egress: readonly CompiledRule[] | null;
}

export interface PodRecord {
  readonly key: string;
  /** Replaced in place when only the uid changes: nothing a verdict reads differs. */
  info: PodInfo;
  /** identity?.id, or 0: what the engine compares against selector members. */
  readonly identityId: number;
  /** spec.nodeName ("" when unscheduled): the node that may always reach this pod. */
  readonly node: string;
  readonly ports: readonly ContainerPort[];
  /** Undefined for pods policy never selects: hostNetwork and terminal (Succeeded/Failed) pods. */
  readonly identity: Identity | undefined;
  readonly parsedIPs: readonly ParsedIP[];
  /** Insertion order, to break ties between live pods that transiently share an IP. */
  readonly seq: number;
}

export interface TableStats {
  pods: number;
  namespaces: number;
  nodes: number;
  policies: number;
  clusterPolicies: number;
  identities: number;
  selectors: number;
  ipBlocks: number;
}

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const byKey = (a: PolicyRecord, b: PolicyRecord) => cmp(a.key, b.key);
/** Admin and baseline order: priority, then name (equal priorities are ours to order), then kind. */
const byPriority = (a: PolicyRecord, b: PolicyRecord) =>
  a.priority - b.priority || cmp(a.spec.name, b.spec.name) || cmp(a.key, b.key);

const NO_RECORDS: readonly PolicyRecord[] = Object.freeze([]);
export const EMPTY_PLAN: Plan = Object.freeze({
  admin: NO_RECORDS,
  namespaced: NO_RECORDS,
  baseline: NO_RECORDS,
  empty: true,
  audited: false,
});

function buildPlan(set: ReadonlySet<PolicyRecord>, withAudit: boolean): Plan {
  const admin: PolicyRecord[] = [];
  const namespaced: PolicyRecord[] = [];
  const baseline: PolicyRecord[] = [];
  let audited = false;
  for (const p of set) {
    if (p.spec.audit) {
      if (!withAudit) continue;
      audited = true;
    }
    (p.tier === "admin" ? admin : p.tier === "baseline" ? baseline : namespaced).push(p);
  }
  if (admin.length + namespaced.length + baseline.length === 0) return EMPTY_PLAN;
  admin.sort(byPriority);
  baseline.sort(byPriority);
  namespaced.sort(byKey);
  return { admin, namespaced, baseline, empty: false, audited };
}

function labelsKey(labels: Readonly<Record<string, string>>): string {
  const keys = Object.keys(labels).sort();
  let s = "";
  for (const k of keys) s += `${k}=${labels[k]}\u0000`;
  return s;
}

function samePod(a: PodInfo, b: PodInfo): boolean {
  return (
    a.phase === b.phase &&
    a.hostNetwork === b.hostNetwork &&
    a.nodeName === b.nodeName &&
    labelsKey(a.labels) === labelsKey(b.labels) &&
    a.ips.join(",") === b.ips.join(",") &&
    (a.hostIPs ?? []).join(",") === (b.hostIPs ?? []).join(",") &&
    JSON.stringify(a.ports) === JSON.stringify(b.ports)
  );
}

/** The addresses a pod reports for its node: its hostIPs, and its own IPs when it is hostNetwork. */
function nodeAddressesOf(info: PodInfo): string[] {
  const out = [...(info.hostIPs ?? [])];
  if (info.hostNetwork && !isTerminalPhase(info.phase))
    for (const ip of info.ips) if (!out.includes(ip)) out.push(ip);
  return out;
}

export class PolicyTable {
  /** Bumped on every change that can alter a verdict; caches compare against it. */
  generation = 0;

  private nextId = 1;
  private podSeq = 0;
  private readonly pods = new Map<string, PodRecord>();
  private readonly namespaces = new Map<string, NamespaceInfo>();
  private readonly identities = new Map<string, Identity>();
  private readonly identitiesById = new Map<number, Identity>();
  private readonly identitiesByNs = new Map<string, Set<Identity>>();
  private readonly selectors = new Map<string, SelectorEntry>();
  /** Namespace-scoped selectors by namespace, and the namespaceSelector ones that span namespaces. */
  private readonly selectorsByNs = new Map<string, Set<SelectorEntry>>();
  private readonly globalSelectors = new Set<SelectorEntry>();
  private readonly blocks = new Map<string, BlockEntry>();
  private readonly blocksById = new Map<number, BlockEntry>();
  private readonly blockMatcher = new BlockMatcher();
  private readonly policies = new Map<string, PolicyRecord>();
  private readonly byIP = new Map<string, PodRecord[]>();
  readonly nodeIndex = new NodeIndex();
  readonly domainIndex = new DomainIndex();
  private readonly newId = () => this.nextId++;

  /** `now` is the clock learned DNS answers expire by (tests pass their own). */
  constructor(readonly now: () => number = Date.now) {}

  // ---------------------------------------------------------------- reads

  stats(): TableStats {
    let clusterPolicies = 0;
    for (const p of this.policies.values()) if (p.tier !== "namespaced") clusterPolicies++;
    return {
      pods: this.pods.size,
      namespaces: this.namespaces.size,
      nodes: this.nodeIndex.size,
      policies: this.policies.size,
      clusterPolicies,
      identities: this.identities.size,
      selectors: this.selectors.size,
      ipBlocks: this.blocks.size,
    };
  }

  namespaceLabels(name: string): Readonly<Record<string, string>> {
    return (this.namespaces.get(name) ?? defaultNamespace(name)).labels;
  }

  hasNamespace(name: string): boolean {
    return this.namespaces.has(name);
  }

  pod(key: string): PodRecord | undefined {
    return this.pods.get(key);
  }

  allPods(): IterableIterator<PodRecord> {
    return this.pods.values();
  }

  policy(key: string): PolicyRecord | undefined {
    return this.policies.get(key);
  }

  allPolicies(): IterableIterator<PolicyRecord> {
    return this.policies.values();
  }

  allSelectors(): IterableIterator<SelectorEntry> {
    return this.selectors.values();
  }

  identityById(id: number): Identity | undefined {
    return this.identitiesById.get(id);
  }

  block(id: number): BlockEntry | undefined {
    return this.blocksById.get(id);
  }

  /** The live, policy-relevant pod that owns `ip` (hostNetwork and terminal pods never do). */
  endpoint(ip: string): PodRecord | undefined {
    const list = this.byIP.get(ip);
    return list ? list[0] : undefined;
  }

  /** ipBlocks (by id) containing the address, memoized per address until the blocks change. */
  blocksFor(ip: string): readonly number[] {
    return this.blockMatcher.blocksFor(ip);
  }

  /** What is enforced on an identity in a direction (audit-only policies left out). */
  plan(identity: Identity, dir: Direction): Plan {
    return (identity.plans[dir] ??= buildPlan(identity.applied[dir], false));
  }

  /** The plan with audit-only policies in force, as if enforced (the same object when none applies). */
  auditPlan(identity: Identity, dir: Direction): Plan {
    let p = identity.auditPlans[dir];
    if (!p) {
      const enforced = this.plan(identity, dir);
      let any = false;
      for (const r of identity.applied[dir]) if (r.spec.audit) any = true;
      identity.auditPlans[dir] = p = any ? buildPlan(identity.applied[dir], true) : enforced;
    }
    return p;
  }

  planById(identityId: number, dir: Direction): Plan {
    const identity = this.identitiesById.get(identityId);
    return identity ? this.plan(identity, dir) : EMPTY_PLAN;
  }

  auditPlanById(identityId: number, dir: Direction): Plan {
    const identity = this.identitiesById.get(identityId);
    return identity ? this.auditPlan(identity, dir) : EMPTY_PLAN;
  }

  /** NetworkPolicies isolating this identity in a direction, sorted by key; empty = not isolated by one. */
  isolating(identity: Identity, dir: Direction): readonly PolicyRecord[] {
    return this.plan(identity, dir).namespaced;
  }

  /** Live pods currently selected by a selector entry (for ipset rendering). */
  *selectorPods(sel: SelectorEntry): Generator<PodRecord> {
    for (const id of sel.memberIdentities) yield* id.pods;
  }

  /** Node selector ids whose nodes hold this address (`nodes` peers). */
  nodeSelsFor(ip: string): readonly number[] {
    return this.nodeIndex.selectorsFor(ip);
  }

  /** Ids of the domain peers `ip` matches for pod `pod`: names it learned from DNS, unexpired. */
  domainSetsFor(pod: string, ip: string): readonly number[] {
    return this.domainIndex.setsFor(pod, ip, this.now());
  }

  /**
   * A pod received a DNS answer: `names` (the query and its CNAME chain) resolve to `ips` for
   * `ttlSeconds`. Returns true when a verdict may change.
   */
  learnAddresses(pod: string, names: readonly string[], ips: readonly string[], ttlSeconds: number): boolean {
    if (!this.domainIndex.learn(pod, names, ips, ttlSeconds * 1000, this.now())) return false;
    this.changed();
    return true;
  }

  /** Forget answers whose TTL ran out; true (and a new generation) when any did. */
  expireLearned(): boolean {
    if (!this.domainIndex.expire(this.now())) return false;
    this.changed();
    return true;
  }

  /** Is `ip` an address of node `node` (the node may always reach its own pods)? */
  isNodeAddress(ip: string, node: string): boolean {
    return this.nodeIndex.isNodeAddress(ip, node);
  }

  private changed(): void {
    this.generation++;
  }

  // ---------------------------------------------------------------- nodes

  upsertNode(info: NodeInfo): boolean {
    if (!this.nodeIndex.upsert(info)) return false;
    this.changed();
    return true;
  }

  deleteNode(name: string): boolean {
    if (!this.nodeIndex.delete(name)) return false;
    this.changed();
    return true;
  }

  // ---------------------------------------------------------------- namespaces

  upsertNamespace(ns: NamespaceInfo): boolean {
    const labels = { ...ns.labels, [NS_NAME_LABEL]: ns.name };
    const prev = this.namespaces.get(ns.name);
    const prevLabels = prev?.labels ?? defaultNamespace(ns.name).labels;
    this.namespaces.set(ns.name, { name: ns.name, labels });
    if (labelsKey(prevLabels) === labelsKey(labels)) return false;
    this.relabelNamespace(ns.name);
    this.changed();
    return true;
  }

  deleteNamespace(name: string): boolean {
    const prev = this.namespaces.get(name);
    if (!prev) return false;
    this.namespaces.delete(name);
    // Pods still listed in a deleted namespace fall back to the default labels until they go too.
    if (labelsKey(prev.labels) !== labelsKey(defaultNamespace(name).labels)) this.relabelNamespace(name);
    this.changed();
    return true;
  }

  private relabelNamespace(name: string): void {
    const ids = this.identitiesByNs.get(name);
    if (!ids) return;
    for (const identity of ids) {
      for (const sel of this.globalSelectors) this.reevaluate(sel, identity);
    }
  }

  // ---------------------------------------------------------------- pods

  upsertPod(info: PodInfo): boolean {
    const key = podKey(info);
    const prev = this.pods.get(key);
    if (prev && samePod(prev.info, info)) {
      if (prev.info.uid !== info.uid) prev.info = info;
      return false;
    }
    // Detach without releasing the identity: an IP or phase change keeps the same label set, and
    // re-creating the identity would re-evaluate every selector for nothing.
    if (prev) this.detachPod(prev, false);
    this.attachPod(key, info);
    const old = prev?.identity;
    if (old && old.pods.size === 0 && this.identities.get(old.key) === old) this.releaseIdentity(old);
    this.changed();
    return true;
  }

  deletePod(namespace: string, name: string): boolean {
    const prev = this.pods.get(`${namespace}/${name}`);
    if (!prev) return false;
    this.detachPod(prev);
    this.pods.delete(prev.key);
    this.domainIndex.forgetPod(prev.key);
    this.changed();
    return true;
  }

  private attachPod(key: string, info: PodInfo): void {
    for (const ip of nodeAddressesOf(info)) this.nodeIndex.addPodAddress(ip, info.nodeName);
    const selectable = !info.hostNetwork && !isTerminalPhase(info.phase);
    const parsedIPs = info.ips.map((s) => parseIP(s)).filter((p): p is ParsedIP => p !== undefined);
    const identity = selectable ? this.acquireIdentity(info.namespace, info.labels) : undefined;
    const rec: PodRecord = {
      key,
      info,
      identity,
      identityId: identity?.id ?? 0,
      node: info.nodeName,
      ports: info.ports,
      parsedIPs,
      seq: this.podSeq++,
    };
    this.pods.set(key, rec);
    if (!identity) return;
    identity.pods.add(rec);
    for (const ip of parsedIPs) {
      const list = this.byIP.get(ip.text);
      if (!list) this.byIP.set(ip.text, [rec]);
      else {
        list.push(rec);
        // A Running pod wins an IP over a Pending one; among equals the newest wins.
        list.sort((a, b) => rank(b) - rank(a) || b.seq - a.seq);
      }
    }
    for (const sel of identity.selectors) sel.version++;
  }

  private detachPod(rec: PodRecord, release = true): void {
    for (const ip of nodeAddressesOf(rec.info)) this.nodeIndex.removePodAddress(ip, rec.info.nodeName);
    const identity = rec.identity;
    if (!identity) return;
    for (const ip of rec.parsedIPs) {
      const list = this.byIP.get(ip.text);
      if (!list) continue;
      const i = list.indexOf(rec);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) this.byIP.delete(ip.text);
    }
    identity.pods.delete(rec);
    for (const sel of identity.selectors) sel.version++;
    if (release && identity.pods.size === 0) this.releaseIdentity(identity);
  }

  private acquireIdentity(namespace: string, labels: Readonly<Record<string, string>>): Identity {
    const key = `${namespace}\u0001${labelsKey(labels)}`;
    let identity = this.identities.get(key);
    if (identity) return identity;
    identity = {
      id: this.nextId++,
      key,
      namespace,
      labels: { ...labels },
      pods: new Set(),
      selectors: new Set(),
      applied: { ingress: new Set(), egress: new Set() },
      plans: { ingress: null, egress: null },
      auditPlans: { ingress: null, egress: null },
    };
    this.identities.set(key, identity);
    this.identitiesById.set(identity.id, identity);
    let nsSet = this.identitiesByNs.get(namespace);
    if (!nsSet) this.identitiesByNs.set(namespace, (nsSet = new Set()));
    nsSet.add(identity);
    // Only selectors that can possibly match: this namespace's own, and the cross-namespace ones.
    const local = this.selectorsByNs.get(namespace);
    if (local) for (const sel of local) this.reevaluate(sel, identity);
    for (const sel of this.globalSelectors) this.reevaluate(sel, identity);
    return identity;
  }

  private releaseIdentity(identity: Identity): void {
    for (const sel of [...identity.selectors]) this.setMember(sel, identity, false);
    this.identities.delete(identity.key);
    this.identitiesById.delete(identity.id);
    const nsSet = this.identitiesByNs.get(identity.namespace);
    nsSet?.delete(identity);
    if (nsSet?.size === 0) this.identitiesByNs.delete(identity.namespace);
  }

  // ---------------------------------------------------------------- selector cache

  private selectorMatches(spec: SelectorSpec, identity: Identity): boolean {
    if (spec.namespace !== null) {
      if (identity.namespace !== spec.namespace) return false;
    } else if (!spec.nsSel!.matches(this.namespaceLabels(identity.namespace))) {
      return false;
    }
    return spec.podSel.matches(identity.labels);
  }

  private reevaluate(sel: SelectorEntry, identity: Identity): void {
    this.setMember(sel, identity, this.selectorMatches(sel.spec, identity));
  }

  private setMember(sel: SelectorEntry, identity: Identity, member: boolean): void {
    if (member === sel.members.has(identity.id)) return;
    if (member) {
      sel.members.add(identity.id);
      sel.memberIdentities.add(identity);
      identity.selectors.add(sel);
      for (const pol of sel.targetOf) this.attachPolicyToIdentity(pol, identity);
    } else {
      sel.members.delete(identity.id);
      sel.memberIdentities.delete(identity);
      identity.selectors.delete(sel);
      for (const pol of sel.targetOf) this.detachPolicyFromIdentity(pol, identity);
    }
    sel.version++;
  }

  private acquireSelector(spec: SelectorSpec): SelectorEntry {
    let sel = this.selectors.get(spec.key);
    if (sel) {
      sel.refs++;
      return sel;
    }
    sel = {
      id: this.nextId++,
      spec,
      members: new Set(),
      memberIdentities: new Set(),
      targetOf: new Set(),
      refs: 1,
      version: 0,
    };
    this.selectors.set(spec.key, sel);
    if (spec.namespace !== null) {
      let set = this.selectorsByNs.get(spec.namespace);
      if (!set) this.selectorsByNs.set(spec.namespace, (set = new Set()));
      set.add(sel);
      const ids = this.identitiesByNs.get(spec.namespace);
      if (ids) for (const identity of ids) this.reevaluate(sel, identity);
    } else {
      this.globalSelectors.add(sel);
      // Match namespaces first, then only the identities living in the matching ones.
      for (const [ns, ids] of this.identitiesByNs) {
        if (!spec.nsSel!.matches(this.namespaceLabels(ns))) continue;
        for (const identity of ids)
          if (spec.podSel.matches(identity.labels)) this.setMember(sel, identity, true);
      }
    }
    return sel;
  }

  private releaseSelector(sel: SelectorEntry): void {
    if (--sel.refs > 0) return;
    for (const identity of [...sel.memberIdentities]) this.setMember(sel, identity, false);
    this.selectors.delete(sel.spec.key);
    if (sel.spec.namespace !== null) {
      const set = this.selectorsByNs.get(sel.spec.namespace);
      set?.delete(sel);
      if (set?.size === 0) this.selectorsByNs.delete(sel.spec.namespace);
    } else {
      this.globalSelectors.delete(sel);
    }
  }

  private acquireBlock(spec: BlockSpec): BlockEntry {
    let b = this.blocks.get(spec.key);
    if (b) {
      b.refs++;
      return b;
    }
    b = { id: this.nextId++, spec, refs: 1 };
    this.blocks.set(spec.key, b);
    this.blocksById.set(b.id, b);
    this.blockMatcher.trie.add(b.id, spec.cidr, spec.excepts);
    this.blockMatcher.changed();
    return b;
  }

  private releaseBlock(b: BlockEntry): void {
    if (--b.refs > 0) return;
    this.blocks.delete(b.spec.key);
    this.blocksById.delete(b.id);
    this.blockMatcher.trie.remove(b.id, b.spec.cidr, b.spec.excepts);
    this.blockMatcher.changed();
  }

  // ---------------------------------------------------------------- policies

  /**
   * Compile and install a policy object of any kind (by its `kind`, NetworkPolicy when absent);
   * throws InputError (state unchanged) if invalid.
   */
  upsertPolicy(raw: unknown, opts: ParseOptions = FROM_API, kind?: PolicyKind): boolean {
    const k = kind ?? (raw as { kind?: unknown } | null)?.kind;
    return this.upsertPolicySpec(compilePolicyObject(isPolicyKind(k) ? k : "NetworkPolicy", raw, opts));
  }

  upsertPolicySpec(spec: PolicySpec): boolean {
    const prev = this.policies.get(spec.key);
    if (prev && prev.spec.fingerprint === spec.fingerprint) {
      // Same semantics; keep the newest object (its notes and names) without touching the kernel.
      (prev as { spec: PolicySpec }).spec = spec;
      return false;
    }
    // Acquire the new version's selectors before releasing the old ones so shared entries survive.
    const rec = this.buildPolicy(spec);
    if (prev) this.uninstallPolicy(prev);
    this.policies.set(spec.key, rec);
    rec.target.targetOf.add(rec);
    for (const identity of rec.target.memberIdentities) this.attachPolicyToIdentity(rec, identity);
    this.changed();
    return true;
  }

  deletePolicy(namespace: string, name: string, kind: PolicyKind = "NetworkPolicy"): boolean {
    return this.deletePolicyKey(policyKey(kind, namespace, name));
  }

  deletePolicyKey(key: string): boolean {
    const prev = this.policies.get(key);
    if (!prev) return false;
    this.uninstallPolicy(prev);
    this.policies.delete(prev.key);
    this.changed();
    return true;
  }

  private compilePeer(p: PeerSpec): CompiledPeer {
    switch (p.kind) {
      case "sel": {
        const sel = this.acquireSelector(p.sel);
        return { kind: "sel", sel, members: sel.members, spec: p };
      }
      case "block": {
        const block = this.acquireBlock(p.block);
        return { kind: "block", block, id: block.id, spec: p };
      }
      case "nodes": {
        const nodes = this.nodeIndex.acquire(p.nodes, this.newId);
        return { kind: "nodes", nodes, id: nodes.id, spec: p };
      }
      case "domains": {
        const domains = this.domainIndex.acquire(p.names, this.newId);
        return { kind: "domains", domains, id: domains.id, spec: p };
      }
      case "none":
        return { kind: "none", spec: p };
    }
  }

  private buildPolicy(spec: PolicySpec): PolicyRecord {
    const target = this.acquireSelector(spec.subject);
    const rules = (list: PolicySpec["ingress"]): CompiledRule[] | null =>
      list === null
        ? null
        : list.map((r) => ({
            index: r.index,
            name: r.name,
            action: r.action,
            ports: r.ports,
            peers: r.peers === null ? null : r.peers.map((p) => this.compilePeer(p)),
          }));
    return {
      key: spec.key,
      spec,
      tier: spec.tier,
      priority: spec.priority,
      target,
      ingress: rules(spec.ingress),
      egress: rules(spec.egress),
    };
  }

  private uninstallPolicy(rec: PolicyRecord): void {
    rec.target.targetOf.delete(rec);
    for (const identity of rec.target.memberIdentities) this.detachPolicyFromIdentity(rec, identity);
    for (const rules of [rec.ingress, rec.egress]) {
      for (const r of rules ?? []) {
        for (const p of r.peers ?? []) {
          if (p.kind === "sel") this.releaseSelector(p.sel);
          else if (p.kind === "block") this.releaseBlock(p.block);
          else if (p.kind === "nodes") this.nodeIndex.release(p.nodes);
          else if (p.kind === "domains") this.domainIndex.release(p.domains);
        }
      }
    }
    this.releaseSelector(rec.target);
  }

  private attachPolicyToIdentity(pol: PolicyRecord, identity: Identity): void {
    for (const dir of DIRECTIONS) {
      if (pol[dir] !== null && !identity.applied[dir].has(pol)) {
        identity.applied[dir].add(pol);
        identity.plans[dir] = null;
        identity.auditPlans[dir] = null;
      }
    }
  }

  private detachPolicyFromIdentity(pol: PolicyRecord, identity: Identity): void {
    for (const dir of DIRECTIONS) {
      if (identity.applied[dir].delete(pol)) {
        identity.plans[dir] = null;
        identity.auditPlans[dir] = null;
      }
    }
  }
}

const DIRECTIONS: readonly Direction[] = ["ingress", "egress"];

function rank(p: PodRecord): number {
  return p.info.phase === "Running" ? 1 : 0;
}

export type { ContainerPort };
