/**
 * rule-model: the one tiered policy model every policy kind compiles into, and every consumer of the
 * table (decide, the verdict cache, the NFQUEUE snapshot, the iptables renderer, explain, deny logs,
 * metrics) reads.
 *
 * A policy is: a tier, a priority within it, a subject (the pods it applies to), and per direction
 * an ordered list of rules, each with an action (accept | deny | pass), peers and ports.
 *
 *   tier        kinds                                        order within the tier
 *   admin       ClusterNetworkPolicy tier Admin,             priority (lower first), then name;
 *               AdminNetworkPolicy (v1alpha1)                rules in written order
 *   namespaced  NetworkPolicy v1                             a union: any accept rule allows
 *   baseline    ClusterNetworkPolicy tier Baseline,          as admin
 *               BaselineAdminNetworkPolicy (v1alpha1)
 *
 * Decision per direction (egress at the source pod AND ingress at the destination pod; see engine.ts):
 *   1. admin rules in order: the first match decides; accept and deny are final, pass skips the rest
 *      of the admin tier;
 *   2. if NetworkPolicies isolate the pod in this direction: allowed if one of their rules matches,
 *      denied otherwise (final either way);
 *   3. baseline rules in order, as admin (a pass skips the rest of the baseline tier);
 *   4. otherwise allowed.
 * Equal priorities in a tier are implementation-defined by the API: podwall orders them by name so
 * the choice is stable, and explain says when it mattered.
 *
 * Owns: the model's types, policy keys, and the canonical text (fingerprint) that lets an update with
 * equal semantics be skipped. May not: look at pods, namespaces or the table.
 */
import type { ParsedCIDR } from "./ip.js";
import { describePort, type PortSpec } from "./ports.js";
import type { LabelMatcher } from "./selectors.js";

export type Tier = "admin" | "namespaced" | "baseline";
export const TIERS: readonly Tier[] = ["admin", "namespaced", "baseline"];
export type Action = "accept" | "deny" | "pass";

export type PolicyKind =
  | "NetworkPolicy"
  | "ClusterNetworkPolicy"
  | "AdminNetworkPolicy"
  | "BaselineAdminNetworkPolicy";

/** Pods matching `podSel` in namespace `namespace`, or in every namespace matching `nsSel`. */
export interface SelectorSpec {
  key: string;
  namespace: string | null;
  nsSel: LabelMatcher | null;
  podSel: LabelMatcher;
}

export interface BlockSpec {
  key: string;
  cidr: ParsedCIDR;
  excepts: ParsedCIDR[];
}

/** Nodes whose labels match: a peer matches the addresses in their status. */
export interface NodeSelectorSpec {
  key: string;
  sel: LabelMatcher;
}

export type PeerSpec =
  | { kind: "sel"; sel: SelectorSpec }
  | { kind: "block"; block: BlockSpec }
  | { kind: "nodes"; nodes: NodeSelectorSpec }
  /** Addresses the subject pod learned for these names from DNS answers (egress, accept rules only). */
  | { kind: "domains"; names: string[] }
  /**
   * Matches nothing: a peer podwall cannot read (a field from a newer API version), the API's
   * "fail closed" for an accept rule. `domains` carries a networks peer's CIDRs while parsing.
   */
  | { kind: "none"; why: string; domains?: string[] };

export interface RuleSpec {
  /** Position in the policy's list for this direction, as written. */
  index: number;
  /** The rule's `name` (cluster kinds), "" when it has none. */
  name: string;
  action: Action;
  /** null = every peer. */
  peers: PeerSpec[] | null;
  /** null = every protocol and port. */
  ports: PortSpec[] | null;
}

export interface PolicySpec {
  /** Unique in the table: "ns/name" for NetworkPolicies, "<kind prefix>:name" for cluster kinds. */
  key: string;
  kind: PolicyKind;
  /** "" for cluster-scoped kinds. */
  namespace: string;
  name: string;
  tier: Tier;
  /** Within the tier, lower first; 0 for NetworkPolicies (a union, unordered). */
  priority: number;
  subject: SelectorSpec;
  /**
   * null = the policy does not apply to this direction. For a NetworkPolicy a non-null list isolates
   * the subject (an empty one allows nothing); for the cluster kinds an empty list is null.
   */
  ingress: RuleSpec[] | null;
  egress: RuleSpec[] | null;
  /** `podwall.io/enforcement: audit`: evaluated and reported, never enforced. */
  audit: boolean;
  /** Fields podwall does not enforce, each as a field path with the reason: reported, fail-closed. */
  notEnforced: string[];
  /** Canonical text of everything that decides: equal text = equal semantics. */
  fingerprint: string;
}

export const ENFORCEMENT_ANNOTATION = "podwall.io/enforcement";

const KEY_PREFIX: Record<PolicyKind, string> = {
  NetworkPolicy: "",
  ClusterNetworkPolicy: "cnp:",
  AdminNetworkPolicy: "anp:",
  BaselineAdminNetworkPolicy: "banp:",
};

/**
 * Policy keys: "ns/name" for a NetworkPolicy, "cnp:name", "anp:name", "banp:name" for the cluster
 * kinds. Valid names hold neither '/' nor ':', so no two objects share a key.
 */
export function policyKey(kind: PolicyKind, namespace: string, name: string): string {
  return kind === "NetworkPolicy" ? `${namespace}/${name}` : `${KEY_PREFIX[kind]}${name}`;
}

/** How logs and metrics name a policy: "ns/name", or the bare name for cluster kinds. */
export function policyDisplay(key: string): string {
  const c = key.indexOf(":");
  return c >= 0 && !key.includes("/") ? key.slice(c + 1) : key;
}

export function kindOfKey(key: string): PolicyKind {
  if (key.includes("/")) return "NetworkPolicy";
  if (key.startsWith("cnp:")) return "ClusterNetworkPolicy";
  if (key.startsWith("anp:")) return "AdminNetworkPolicy";
  return "BaselineAdminNetworkPolicy";
}

export function selectorSpec(
  namespace: string | null,
  nsSel: LabelMatcher | null,
  podSel: LabelMatcher,
): SelectorSpec {
  const key =
    namespace !== null ? `ns:${namespace} pod:${podSel.key}` : `nssel:${nsSel!.key} pod:${podSel.key}`;
  return { key, namespace, nsSel, podSel };
}

export function peerKey(p: PeerSpec): string {
  switch (p.kind) {
    case "sel":
      return p.sel.key;
    case "block":
      return `ip:${p.block.key}`;
    case "nodes":
      return `nodes:${p.nodes.key}`;
    case "domains":
      return `dns:${JSON.stringify(p.names)}`;
    case "none":
      return `none:${JSON.stringify([p.why, p.domains ?? []])}`;
  }
}

function ruleText(r: RuleSpec): string {
  const peers = r.peers ? r.peers.map(peerKey).join(";") : "*";
  const ports = r.ports ? r.ports.map((p) => `${p.proto}:${p.name ?? `${p.from}-${p.to}`}`).join(";") : "*";
  return `[${r.action} ${JSON.stringify(r.name)}|${peers}|${ports}]`;
}

export function fingerprintOf(
  p: Omit<PolicySpec, "fingerprint" | "key" | "kind" | "namespace" | "name">,
): string {
  const dir = (list: RuleSpec[] | null) => (list ? list.map(ruleText).join("") : "-");
  return `${p.tier}@${p.priority}${p.audit ? " audit" : ""} ${p.subject.key} in:${dir(p.ingress)} eg:${dir(p.egress)} ne:${JSON.stringify(p.notEnforced)}`;
}

export function describeSelector(s: SelectorSpec): string {
  if (s.namespace !== null) {
    return s.podSel.empty
      ? `all pods in namespace ${s.namespace}`
      : `pods ${s.podSel.text} in namespace ${s.namespace}`;
  }
  const ns = s.nsSel!.empty ? "all namespaces" : `namespaces ${s.nsSel!.text}`;
  return s.podSel.empty ? `all pods in ${ns}` : `pods ${s.podSel.text} in ${ns}`;
}

export function describePeer(p: PeerSpec): string {
  switch (p.kind) {
    case "sel":
      return describeSelector(p.sel);
    case "block": {
      const ex = p.block.excepts.length ? ` except ${p.block.excepts.map((e) => e.text).join(", ")}` : "";
      return `ipBlock ${p.block.cidr.text}${ex}`;
    }
    case "nodes":
      return p.nodes.sel.empty ? "all nodes" : `nodes ${p.nodes.sel.text}`;
    case "domains":
      return `domain names ${p.names.join(", ")}`;
    case "none":
      return p.domains ? `domain names ${p.domains.join(", ")} (${p.why})` : `nothing (${p.why})`;
  }
}

export function describePorts(ports: readonly PortSpec[] | null): string {
  return ports ? ports.map(describePort).join(", ") : "all ports";
}

const TIER_NAMES: Record<Tier, string> = {
  admin: "Admin",
  namespaced: "NetworkPolicy",
  baseline: "Baseline",
};

export function tierName(t: Tier): string {
  return TIER_NAMES[t];
}

/** "NetworkPolicy x/deny-all", "ClusterNetworkPolicy guard (Admin, priority 10)". */
export function describePolicy(spec: Pick<PolicySpec, "kind" | "key" | "tier" | "priority">): string {
  if (spec.kind === "NetworkPolicy") return `NetworkPolicy ${spec.key}`;
  return `${spec.kind} ${policyDisplay(spec.key)} (${tierName(spec.tier)}, priority ${spec.priority})`;
}
