/**
 * engine: decide(flow) -> allowed or not, and why: the one decision procedure of the tiered model.
 *
 * Owns, per direction (egress at the source pod AND ingress at the destination pod; a pod talking to
 * its own address is never filtered; the destination's own node may always reach it on ingress):
 *   1. admin rules in (priority, name, rule) order: the first match decides; accept and deny are
 *      final; pass skips the rest of the admin tier;
 *   2. NetworkPolicies isolating the pod in this direction: allowed if any of their rules matches
 *      (a union), denied otherwise, final either way;
 *   3. baseline rules as admin (a pass skips the rest of the baseline tier);
 *   4. no decision: allowed ("not-isolated").
 * Reads through DecisionSource, so the live table and the NFQUEUE worker's snapshot share this code.
 * Each tier's rules are indexed by (protocol, port) per distinct policy list, so a flow visits only
 * rules that can match its port.
 * May not: mutate anything, or allocate on the hot path beyond the first verdict of each rule and
 * peer (verdicts are made once and shared).
 */
import type { ContainerPort, Direction, Flow } from "./model.js";
import { type PortMatcher, portsMatch } from "./ports.js";
import type { Action, Tier } from "./rule-model.js";

export interface EndpointView {
  readonly key: string;
  readonly identityId: number;
  readonly ports: readonly ContainerPort[];
  /** spec.nodeName, "" when unscheduled. */
  readonly node: string;
}

export type PeerView =
  | { readonly kind: "sel"; readonly members: ReadonlySet<number> }
  | { readonly kind: "block"; readonly id: number }
  | { readonly kind: "nodes"; readonly id: number }
  | { readonly kind: "domains"; readonly id: number }
  | { readonly kind: "none" };

export interface RuleView {
  readonly index: number;
  readonly name: string;
  readonly action: Action;
  readonly peers: readonly PeerView[] | null;
  readonly ports: PortMatcher;
}

export interface PolicyView {
  readonly key: string;
  readonly tier: Tier;
  readonly priority: number;
  readonly ingress: readonly RuleView[] | null;
  readonly egress: readonly RuleView[] | null;
}

export interface PlanView {
  readonly admin: readonly PolicyView[];
  readonly namespaced: readonly PolicyView[];
  readonly baseline: readonly PolicyView[];
  readonly empty: boolean;
}

export interface DecisionSource {
  readonly generation: number;
  endpoint(ip: string): EndpointView | undefined;
  /** What is enforced on an identity in a direction. */
  planById(identityId: number, dir: Direction): PlanView;
  blocksFor(ip: string): readonly number[];
  /** Ids of the `nodes` peers whose nodes hold this address. */
  nodeSelsFor(ip: string): readonly number[];
  /** Is `ip` an address of node `node`? */
  isNodeAddress(ip: string, node: string): boolean;
  /** Ids of the `domainNames` peers `ip` matches for pod `pod` (names it learned from DNS, unexpired). */
  domainSetsFor(pod: string, ip: string): readonly number[];
}

export type DirectionResult = "allowed" | "denied" | "not-isolated";

export interface RuleRef {
  policy: string;
  rule: number;
  /** Index of the matching peer in the rule's from/to, or -1 when the rule has no peers list. */
  peer: number;
  action: Action;
  /** The rule's name ("" when it has none). */
  name: string;
}

export interface DirectionVerdict {
  readonly result: DirectionResult;
  /**
   * The policies that decided: the NetworkPolicies isolating this side (sorted) when the
   * NetworkPolicy tier decided; the one cluster policy whose rule decided; empty otherwise.
   */
  readonly policies: readonly string[];
  /** The tier that decided; absent when none did (allowed by default) or the node exemption applied. */
  readonly tier?: Tier;
  /** The rule that decided (absent for a NetworkPolicy default deny). */
  readonly by?: RuleRef;
  /** The destination's own node reached it: allowed whatever policy says (ingress only). */
  readonly exempt?: "node";
}

export interface Verdict {
  readonly allowed: boolean;
  readonly ingress: DirectionVerdict;
  readonly egress: DirectionVerdict;
  /** Pod keys when the addresses belong to known pods. */
  readonly src?: string;
  readonly dst?: string;
  readonly loopback?: boolean;
}

/** Policy-key lists per policy array, so verdicts share them instead of mapping anew. */
const keysOf = new WeakMap<readonly PolicyView[], readonly string[]>();
function policyKeys(pols: readonly PolicyView[]): readonly string[] {
  let k = keysOf.get(pols);
  if (!k) keysOf.set(pols, (k = Object.freeze(pols.map((p) => p.key))));
  return k;
}

const NO_KEYS: readonly string[] = Object.freeze([]);
export const NOT_ISOLATED: DirectionVerdict = Object.freeze({ result: "not-isolated", policies: NO_KEYS });
const NODE_EXEMPT: DirectionVerdict = Object.freeze({ result: "allowed", policies: NO_KEYS, exempt: "node" });

/**
 * Index of the first peer of `peers` that `other` (at `otherIP`) matches, as seen from `self` (whose
 * learned names `domainNames` peers read); -1 when the rule has no peers list (everyone matches),
 * -2 when none matches. Shared with explain.
 */
export function peerIndex(
  peers: readonly PeerView[] | null,
  other: EndpointView | undefined,
  otherIP: string,
  src: DecisionSource,
  self?: EndpointView,
): number {
  if (peers === null) return -1;
  let blocks: readonly number[] | undefined;
  let nodes: readonly number[] | undefined;
  let domains: readonly number[] | undefined;
  for (let i = 0; i < peers.length; i++) {
    const p = peers[i];
    switch (p.kind) {
      case "sel":
        if (other !== undefined && p.members.has(other.identityId)) return i;
        break;
      case "block":
        blocks ??= src.blocksFor(otherIP);
        if (blocks.includes(p.id)) return i;
        break;
      case "nodes":
        nodes ??= src.nodeSelsFor(otherIP);
        if (nodes.includes(p.id)) return i;
        break;
      case "domains":
        if (self === undefined) break;
        domains ??= src.domainSetsFor(self.key, otherIP);
        if (domains.includes(p.id)) return i;
        break;
    }
  }
  return -2;
}

/** A rule of a tier's policy list, with the position of its policy in that list. */
interface Candidate {
  readonly pi: number;
  readonly rule: RuleView;
  /** The verdict this rule gives per matching peer index (+1), made once and shared. */
  readonly verdicts: DirectionVerdict[];
}

/**
 * Rules of one policy list and direction, indexed by (protocol, single port). Ranges, named ports
 * and port-less rules go to `generic`. A flow then visits only rules that can match its port.
 */
interface RuleIndex {
  readonly exact: Map<number, Candidate[]>;
  readonly generic: readonly Candidate[];
  /** The list's "denied" verdict (the NetworkPolicy tier's default deny), shared by every denied flow. */
  readonly denied: DirectionVerdict;
}

const indexes = {
  ingress: new WeakMap<readonly PolicyView[], RuleIndex>(),
  egress: new WeakMap<readonly PolicyView[], RuleIndex>(),
};
const NO_CANDIDATES: readonly Candidate[] = [];

function ruleIndex(pols: readonly PolicyView[], dir: Direction): RuleIndex {
  let idx = indexes[dir].get(pols);
  if (idx) return idx;
  const exact = new Map<number, Candidate[]>();
  const generic: Candidate[] = [];
  // A rule with the same ports and the same peers as an earlier one of the list can never be the
  // first match, whatever its action: leave it out. (Selectors are shared, so equal peers are one object.)
  const seen = new Set<string>();
  const peerIds = new Map<ReadonlySet<number>, number>();
  const shape = (rule: RuleView) =>
    `${JSON.stringify(rule.ports)}|${
      rule.peers === null
        ? "*"
        : rule.peers
            .map((p) => {
              if (p.kind === "block") return `b${p.id}`;
              if (p.kind === "nodes") return `n${p.id}`;
              if (p.kind === "domains") return `d${p.id}`;
              if (p.kind === "none") return "x";
              let id = peerIds.get(p.members);
              if (id === undefined) peerIds.set(p.members, (id = peerIds.size));
              return `s${id}`;
            })
            .join(",")
    }`;
  pols.forEach((pol, pi) => {
    for (const rule of pol[dir] ?? []) {
      if (rule.peers?.every((p) => p.kind === "none")) continue; // matches nothing
      const k = shape(rule);
      if (seen.has(k)) continue;
      seen.add(k);
      const c: Candidate = { pi, rule, verdicts: [] };
      const ports = rule.ports;
      if (ports === null || ports.some((p) => p.name !== undefined || p.from !== p.to)) {
        generic.push(c);
        continue;
      }
      for (const key of new Set(ports.map((p) => p.proto * 65536 + p.from!))) {
        let list = exact.get(key);
        if (!list) exact.set(key, (list = []));
        list.push(c);
      }
    }
  });
  const tier = pols[0]?.tier ?? "namespaced";
  idx = {
    exact,
    generic,
    denied: Object.freeze({ result: "denied", policies: policyKeys(pols), tier }),
  };
  indexes[dir].set(pols, idx);
  return idx;
}

/** Build the per-list indexes ahead of time (the NFQUEUE snapshot does, so no packet pays for it). */
export function prepare(plan: PlanView): void {
  for (const list of [plan.admin, plan.namespaced, plan.baseline]) {
    if (list.length === 0) continue;
    ruleIndex(list, "ingress");
    ruleIndex(list, "egress");
    policyKeys(list);
  }
}

function before(a: Candidate, b: Candidate): boolean {
  return a.pi < b.pi || (a.pi === b.pi && a.rule.index < b.rule.index);
}

const RESULT_OF: Record<Action, DirectionResult> = {
  accept: "allowed",
  deny: "denied",
  pass: "not-isolated",
};

/**
 * The verdict of the first rule of `pols` that matches, or undefined. For the NetworkPolicy tier
 * the verdict names every isolating policy; for the cluster tiers, the deciding policy.
 */
function firstMatch(
  src: DecisionSource,
  pols: readonly PolicyView[],
  dir: Direction,
  other: EndpointView | undefined,
  otherIP: string,
  proto: number,
  port: number,
  dstPorts: readonly ContainerPort[] | undefined,
  self?: EndpointView,
): DirectionVerdict | undefined {
  const idx = ruleIndex(pols, dir);
  const ex = idx.exact.get(proto * 65536 + port) ?? NO_CANDIDATES;
  const gen = idx.generic;
  // Merge the two candidate lists in (policy, rule) order: the same first match as a full scan.
  let a = 0;
  let b = 0;
  while (a < ex.length || b < gen.length) {
    const c = b >= gen.length || (a < ex.length && before(ex[a], gen[b])) ? ex[a++] : gen[b++];
    if (!portsMatch(c.rule.ports, proto, port, dstPorts)) continue;
    const peer = peerIndex(c.rule.peers, other, otherIP, src, self);
    if (peer === -2) continue;
    let v = c.verdicts[peer + 1];
    if (v === undefined) {
      const pol = pols[c.pi];
      c.verdicts[peer + 1] = v = Object.freeze({
        result: RESULT_OF[c.rule.action],
        policies: pol.tier === "namespaced" ? policyKeys(pols) : Object.freeze([pol.key]),
        tier: pol.tier,
        by: Object.freeze({
          policy: pol.key,
          rule: c.rule.index,
          peer,
          action: c.rule.action,
          name: c.rule.name,
        }),
      });
    }
    return v;
  }
  return undefined;
}

/** The first match of one tier's policy list (explain walks the tiers with it). */
export const tierMatch = firstMatch;

/** The NetworkPolicy tier's default deny for a policy list (explain and deny logs name it). */
export function namespacedDenied(pols: readonly PolicyView[], dir: Direction): DirectionVerdict {
  return ruleIndex(pols, dir).denied;
}

function decideSide(
  src: DecisionSource,
  self: EndpointView,
  plan: PlanView,
  dir: Direction,
  other: EndpointView | undefined,
  otherIP: string,
  proto: number,
  port: number,
  dstPorts: readonly ContainerPort[] | undefined,
): DirectionVerdict {
  if (plan.empty) return NOT_ISOLATED;
  if (plan.admin.length > 0) {
    const v = firstMatch(src, plan.admin, dir, other, otherIP, proto, port, dstPorts, self);
    if (v !== undefined && v.by!.action !== "pass") return v;
  }
  if (plan.namespaced.length > 0) {
    return (
      firstMatch(src, plan.namespaced, dir, other, otherIP, proto, port, dstPorts, self) ??
      ruleIndex(plan.namespaced, dir).denied
    );
  }
  if (plan.baseline.length > 0) {
    const v = firstMatch(src, plan.baseline, dir, other, otherIP, proto, port, dstPorts, self);
    if (v !== undefined && v.by!.action !== "pass") return v;
  }
  return NOT_ISOLATED;
}

/** Which plan a side is judged by: what is enforced, or with audit-only policies in force too. */
export type PlanPicker = (src: DecisionSource, identityId: number, dir: Direction) => PlanView;
const enforced: PlanPicker = (src, id, dir) => src.planById(id, dir);

/** A connection needs both: egress allowed at the source AND ingress allowed at the destination. */
export function bothAllow(egress: DirectionVerdict, ingress: DirectionVerdict): boolean {
  return egress.result !== "denied" && ingress.result !== "denied";
}

export function decide(src: DecisionSource, flow: Flow, pick: PlanPicker = enforced): Verdict {
  const s = src.endpoint(flow.src);
  const d = src.endpoint(flow.dst);
  if (s !== undefined && s === d) {
    return {
      allowed: true,
      ingress: NOT_ISOLATED,
      egress: NOT_ISOLATED,
      src: s.key,
      dst: d.key,
      loopback: true,
    };
  }
  const egress = s
    ? decideSide(
        src,
        s,
        pick(src, s.identityId, "egress"),
        "egress",
        d,
        flow.dst,
        flow.proto,
        flow.port,
        d?.ports,
      )
    : NOT_ISOLATED;
  let ingress = d
    ? decideSide(
        src,
        d,
        pick(src, d.identityId, "ingress"),
        "ingress",
        s,
        flow.src,
        flow.proto,
        flow.port,
        d.ports,
      )
    : NOT_ISOLATED;
  // The pod's own node may always reach it (kubelet probes); checked only when policy said no.
  if (ingress.result === "denied" && src.isNodeAddress(flow.src, d!.node)) ingress = NODE_EXEMPT;
  return {
    allowed: bothAllow(egress, ingress),
    ingress,
    egress,
    src: s?.key,
    dst: d?.key,
  };
}
