/**
 * tiered-reference: a plain evaluator of Kubernetes network policy in its three tiers, written from
 * the API references: networking.k8s.io/v1 NetworkPolicy, policy.networking.k8s.io/v1alpha2
 * ClusterNetworkPolicy and its predecessors v1alpha1 AdminNetworkPolicy / BaselineAdminNetworkPolicy.
 * It is the oracle for the CNP conformance data (e2e/conformance) and for differential tests.
 *
 * Owns: raw objects in, one verdict per flow out. It shares nothing with src/ and indexes nothing:
 * every decision walks every pod and every policy. It assumes objects the API server would admit
 * (one subject kind, one peer kind per peer, valid CIDRs); it does not validate them.
 *
 * The decision, per direction (egress at the source pod, ingress at the destination pod; an end that
 * is no pod has nothing to evaluate):
 *  1. Admin tier: ClusterNetworkPolicies of tier Admin and AdminNetworkPolicies whose subject selects
 *     the pod, by priority (lower first), equal priorities by name, then kind.
 *     Within a policy, that direction's rules in written order. The first rule
 *     that matches decides: Accept (ANP: Allow) and Deny are final; Pass leaves the tier.
 *  2. NetworkPolicy tier: a pod some NetworkPolicy selects for the direction gets its final answer
 *     here: allowed when one of those policies' rules matches, else denied.
 *  3. Baseline tier: ClusterNetworkPolicies of tier Baseline the same way as Admin, then the
 *     BaselineAdminNetworkPolicy named "default" (Allow / Deny). A Pass here goes to the default.
 *  4. Default: allowed.
 * A connection is allowed when both directions allow it.
 *
 * Matching. A rule without protocols (v1alpha1: ports) matches every protocol and port. Named ports
 * resolve on the destination pod's container (and init container) ports, name and protocol. Peers:
 * `namespaces` / `pods` match pods only; `nodes` matches the addresses in a selected Node's
 * status.addresses; `networks` matches any address (pods and nodes included); `domainNames` matches
 * nothing here (no DNS). A peer with no field this code knows fails closed as the API says: an Accept
 * rule then matches nothing, a Deny or Pass rule becomes "deny all".
 *
 * Implementation-defined choices, as podwall makes them (docs/design/policy-model.md): hostNetwork
 * pods and terminal (Succeeded, Failed) pods are no pods for policy (never subjects, never
 * `namespaces`/`pods` peers; their address is a plain address); a pod talking to its own address is
 * never filtered; the destination pod's own node may always reach it (ingress only: an address is the
 * node's when its Node object lists it, when a live pod on that node reports it as status.hostIP(s),
 * or when a hostNetwork pod on that node has it); equal priorities are ordered by name, then kind
 * (AdminNetworkPolicy before ClusterNetworkPolicy).
 */
import { isIP } from "node:net";
import { parseAllDocuments } from "yaml";

export type Protocol = "TCP" | "UDP" | "SCTP";

/** One connection attempt. `from` / `to`: "namespace/pod" or an IP address. */
export interface ReferenceFlow {
  from: string;
  to: string;
  protocol: Protocol;
  port: number;
}

export type ReferenceTier = "admin" | "networkpolicy" | "baseline" | "default";

export interface ReferenceSide {
  allowed: boolean;
  /**
   * The tier that answered; "none" when that end is no pod for policy, for a pod's own traffic, and
   * when the node exemption allowed it.
   */
  tier: ReferenceTier | "none";
  /** The destination's own node reached it: allowed whatever policy says (ingress only). */
  exempt?: "node";
  /** The deciding policy ("ClusterNetworkPolicy/x", "NetworkPolicy/ns/x", ...), when one rule decided. */
  policy?: string;
  /** Index of the deciding rule among that direction's rules, and its name when it has one. */
  rule?: number;
  ruleName?: string;
  /** The policies whose Pass rule sent evaluation on to the next tier (at most one per tier). */
  passedBy: string[];
}

export interface ReferenceVerdict {
  allowed: boolean;
  /** The addresses judged (a pod given by name talks over its first address; see `decide`). */
  src: string;
  dst: string;
  egress: ReferenceSide;
  ingress: ReferenceSide;
}

/** Every object of a multi-document YAML (or JSON) text; `kind: *List` objects are flattened. */
export function parseObjects(text: string): unknown[] {
  const out: unknown[] = [];
  const add = (o: unknown) => {
    if (o === null || o === undefined) return;
    const items = (o as Any).items;
    if (typeof (o as Any).kind === "string" && (o as Any).kind.endsWith("List") && Array.isArray(items))
      items.forEach(add);
    else out.push(o);
  };
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`parseObjects: ${doc.errors[0].message}`);
    add(doc.toJS({ maxAliasCount: -1 }));
  }
  return out;
}

// biome-ignore lint/suspicious/noExplicitAny: raw API objects, read field by field
type Any = any;

// ---- addresses ---------------------------------------------------------------------------------

interface Addr {
  v6: boolean;
  n: bigint;
}

function parseAddr(text: string): Addr | undefined {
  let s = text.trim();
  const fam = isIP(s);
  if (fam === 4) return { v6: false, n: s.split(".").reduce((a, o) => (a << 8n) | BigInt(Number(o)), 0n) };
  if (fam !== 6) return undefined;
  // A dotted IPv4 tail (::ffff:1.2.3.4) is two more 16-bit groups.
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (dotted) {
    const v4 = parseAddr(dotted[1])!.n;
    s = `${s.slice(0, dotted.index)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const groups = (g: string) => (g === "" ? [] : g.split(":").map((x) => BigInt(`0x${x}`)));
  const [left, right] = s.split("::");
  const l = groups(left);
  const r = right === undefined ? [] : groups(right);
  const zeros = right === undefined ? [] : new Array<bigint>(8 - l.length - r.length).fill(0n);
  return { v6: true, n: [...l, ...zeros, ...r].reduce((a, g) => (a << 16n) | g, 0n) };
}

function inCidr(addr: Addr, cidr: string): boolean {
  const slash = cidr.lastIndexOf("/");
  const net = parseAddr(slash < 0 ? cidr : cidr.slice(0, slash));
  if (!net || net.v6 !== addr.v6) return false;
  const bits = addr.v6 ? 128n : 32n;
  const len = slash < 0 ? bits : BigInt(Number(cidr.slice(slash + 1)));
  return addr.n >> (bits - len) === net.n >> (bits - len);
}

function sameAddr(a: string, b: Addr): boolean {
  const x = parseAddr(a);
  return x !== undefined && x.v6 === b.v6 && x.n === b.n;
}

function podIPs(pod: Any): string[] {
  return [...(pod.status?.podIPs ?? []).map((e: Any) => e.ip), pod.status?.podIP].filter(
    (x): x is string => typeof x === "string",
  );
}

// ---- selectors -----------------------------------------------------------------------------------

/** LabelSelector: absent or empty selects everything; matchLabels and matchExpressions all hold. */
function selects(selector: Any, labels: Record<string, string>): boolean {
  if (selector === undefined || selector === null) return true;
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    const values: string[] = e.values ?? [];
    if (e.operator === "In" && !(has && values.includes(labels[e.key]))) return false;
    if (e.operator === "NotIn" && has && values.includes(labels[e.key])) return false;
    if (e.operator === "Exists" && !has) return false;
    if (e.operator === "DoesNotExist" && has) return false;
  }
  return true;
}

// ---- the evaluator -------------------------------------------------------------------------------

type Action = "Accept" | "Deny" | "Pass";
const INGRESS_PEERS = ["namespaces", "pods"];
const EGRESS_PEERS = ["namespaces", "pods", "nodes", "networks", "domainNames"];
type Direction = "ingress" | "egress";

interface End {
  addr: Addr;
  /** The pod for policy at this address, if any (never a hostNetwork or terminal pod). */
  pod: Any | undefined;
}

interface TierPolicy {
  id: string;
  obj: Any;
  /** CNP: `protocols`; v1alpha1: `ports`. */
  v1alpha1: boolean;
}

/** Equal priority and name within a tier: AdminNetworkPolicy first (podwall orders by kind after name). */
const KIND_RANK: Record<string, number> = { AdminNetworkPolicy: 0, ClusterNetworkPolicy: 1 };

/** The rule that decided within a tier. */
interface RuleHit {
  action: Action;
  policy: string;
  rule: number;
  ruleName?: string;
}

export class TieredReference {
  private readonly pods: Any[] = [];
  private readonly namespaces = new Map<string, Any>();
  private readonly nodes: Any[] = [];
  private readonly networkPolicies: Any[] = [];
  private readonly admin: TierPolicy[] = [];
  private readonly baseline: TierPolicy[] = [];

  /** Objects of any kind; the ones no policy reads (Services, ...) are ignored. */
  constructor(objects: readonly unknown[]) {
    for (const o of objects as Any[]) {
      const name = o?.metadata?.name;
      switch (o?.kind) {
        case "Pod":
          this.pods.push(o);
          break;
        case "Namespace":
          this.namespaces.set(name, o);
          break;
        case "Node":
          this.nodes.push(o);
          break;
        case "NetworkPolicy":
          this.networkPolicies.push(o);
          break;
        case "ClusterNetworkPolicy": {
          const p = { id: `ClusterNetworkPolicy/${name}`, obj: o, v1alpha1: false };
          if (o.spec?.tier === "Admin") this.admin.push(p);
          if (o.spec?.tier === "Baseline") this.baseline.push(p);
          break;
        }
        case "AdminNetworkPolicy":
          this.admin.push({ id: `AdminNetworkPolicy/${name}`, obj: o, v1alpha1: true });
          break;
      }
    }
    const order = (a: TierPolicy, b: TierPolicy) =>
      (a.obj.spec?.priority ?? 0) - (b.obj.spec?.priority ?? 0) ||
      (a.obj.metadata.name < b.obj.metadata.name ? -1 : a.obj.metadata.name > b.obj.metadata.name ? 1 : 0) ||
      KIND_RANK[a.obj.kind] - KIND_RANK[b.obj.kind];
    this.admin.sort(order);
    this.baseline.sort(order);
    // The one BaselineAdminNetworkPolicy the API admits is named "default"; it comes after every
    // Baseline-tier ClusterNetworkPolicy.
    const banp = (objects as Any[]).find(
      (o) => o?.kind === "BaselineAdminNetworkPolicy" && o.metadata?.name === "default",
    );
    if (banp) this.baseline.push({ id: "BaselineAdminNetworkPolicy/default", obj: banp, v1alpha1: true });
  }

  /**
   * The verdict for one flow. A pod given by name talks over its first address (the destination)
   * and its first address of the same family (the source), as `podwall simulate` pairs them.
   */
  decide(flow: ReferenceFlow): ReferenceVerdict {
    const { src, dst } = this.addresses(flow.from, flow.to);
    const s: End = { addr: parseAddr(src)!, pod: this.podAt(src) };
    const d: End = { addr: parseAddr(dst)!, pod: this.podAt(dst) };
    const none: ReferenceSide = { allowed: true, tier: "none", passedBy: [] };
    if (s.pod && s.pod === d.pod) return { allowed: true, src, dst, egress: none, ingress: none };
    const egress = s.pod ? this.side("egress", s.pod, d, d, flow) : none;
    let ingress = d.pod ? this.side("ingress", d.pod, s, d, flow) : none;
    if (!ingress.allowed && this.isOwnNode(s.addr, d.pod.spec?.nodeName))
      ingress = { allowed: true, tier: "none", exempt: "node", passedBy: [] };
    return { allowed: egress.allowed && ingress.allowed, src, dst, egress, ingress };
  }

  private addresses(from: string, to: string): { src: string; dst: string } {
    const ipsOf = (who: string): string[] => {
      if (isIP(who)) return [who];
      const [ns, name] = who.split("/");
      const pod = this.pods.find(
        (p) => (p.metadata.namespace ?? "default") === ns && p.metadata.name === name,
      );
      if (!pod) throw new Error(`TieredReference: no pod ${who}`);
      const ips: string[] = (pod.status?.podIPs ?? []).map((e: Any) => e.ip);
      if (ips.length === 0 && pod.status?.podIP) ips.push(pod.status.podIP);
      if (ips.length === 0) throw new Error(`TieredReference: pod ${who} has no address`);
      return ips;
    };
    const froms = ipsOf(from);
    for (const dst of ipsOf(to)) {
      const src = froms.find((f) => isIP(f) === isIP(dst));
      if (src) return { src, dst };
    }
    throw new Error(`TieredReference: ${from} and ${to} share no address family`);
  }

  /** Is `addr` an address of the node named `nodeName` (see the node exemption above)? */
  private isOwnNode(addr: Addr, nodeName: unknown): boolean {
    if (typeof nodeName !== "string" || nodeName === "") return false;
    const listed = (list: unknown[]) => list.some((ip) => typeof ip === "string" && sameAddr(ip, addr));
    const node = this.nodes.find((n) => n.metadata?.name === nodeName);
    if (node && listed((node.status?.addresses ?? []).map((a: Any) => a.address))) return true;
    return this.pods.some(
      (p) =>
        p.spec?.nodeName === nodeName &&
        p.status?.phase !== "Succeeded" &&
        p.status?.phase !== "Failed" &&
        (listed([...(p.status?.hostIPs ?? []).map((e: Any) => e.ip), p.status?.hostIP]) ||
          (p.spec?.hostNetwork === true && listed(podIPs(p)))),
    );
  }

  private podAt(ip: string): Any | undefined {
    const a = parseAddr(ip)!;
    const live = this.pods.filter(
      (p) =>
        p.spec?.hostNetwork !== true &&
        p.status?.phase !== "Succeeded" &&
        p.status?.phase !== "Failed" &&
        podIPs(p).some((x) => sameAddr(x, a)),
    );
    return live.find((p) => (p.status?.phase ?? "Running") === "Running") ?? live[0];
  }

  private nsLabels(ns: string): Record<string, string> {
    return {
      ...(this.namespaces.get(ns)?.metadata?.labels ?? {}),
      "kubernetes.io/metadata.name": ns,
    };
  }

  private podNs(pod: Any): string {
    return pod.metadata.namespace ?? "default";
  }

  /** `namespaces` (a selector of namespaces) or `pods` (namespaceSelector AND podSelector). */
  private podPeer(peer: Any, pod: Any | undefined): boolean {
    if (!pod) return false;
    if (peer.namespaces) return selects(peer.namespaces, this.nsLabels(this.podNs(pod)));
    return (
      selects(peer.pods.namespaceSelector, this.nsLabels(this.podNs(pod))) &&
      selects(peer.pods.podSelector, pod.metadata.labels ?? {})
    );
  }

  private side(dir: Direction, self: Any, other: End, dst: End, flow: ReferenceFlow): ReferenceSide {
    const passedBy: string[] = [];
    const decided = (tier: ReferenceTier, hit: RuleHit): ReferenceSide => {
      const { action, ...rule } = hit;
      return { allowed: action === "Accept", tier, ...rule, passedBy };
    };
    const admin = this.tier(this.admin, dir, self, other, dst, flow);
    if (admin?.action === "Pass") passedBy.push(admin.policy);
    else if (admin) return decided("admin", admin);

    const np = this.networkPolicyTier(dir, self, other, dst, flow);
    if (np) return { ...np, passedBy };

    const base = this.tier(this.baseline, dir, self, other, dst, flow);
    if (base?.action === "Pass") passedBy.push(base.policy);
    else if (base) return decided("baseline", base);
    return { allowed: true, tier: "default", passedBy };
  }

  /** The first matching rule among a tier's policies that select `self`, if any. */
  private tier(
    policies: readonly TierPolicy[],
    dir: Direction,
    self: Any,
    other: End,
    dst: End,
    flow: ReferenceFlow,
  ): RuleHit | undefined {
    for (const p of policies) {
      const subject = p.obj.spec?.subject ?? {};
      const selected = subject.namespaces
        ? selects(subject.namespaces, this.nsLabels(this.podNs(self)))
        : subject.pods
          ? this.podPeer({ pods: subject.pods }, self)
          : false;
      if (!selected) continue;
      const rules: Any[] = p.obj.spec?.[dir] ?? [];
      for (let i = 0; i < rules.length; i++) {
        const action = this.ruleAction(p, rules[i], dir, other, dst, flow);
        if (action)
          return { action, policy: p.id, rule: i, ...(rules[i].name ? { ruleName: rules[i].name } : {}) };
      }
    }
    return undefined;
  }

  /** The action a rule takes on this flow, or undefined when it does not match. */
  private ruleAction(
    p: TierPolicy,
    rule: Any,
    dir: Direction,
    other: End,
    dst: End,
    flow: ReferenceFlow,
  ): Action | undefined {
    const action: Action = rule.action === "Allow" ? "Accept" : rule.action;
    const peers: Any[] = (dir === "ingress" ? rule.from : rule.to) ?? [];
    const known = dir === "ingress" ? INGRESS_PEERS : EGRESS_PEERS;
    const unknownPeer = peers.some(
      (peer) => !known.some((k) => peer?.[k] !== undefined && peer?.[k] !== null),
    );
    // Fail closed: such a peer matches nothing in an Accept rule, and makes a Deny or Pass rule "deny all".
    if (unknownPeer && action !== "Accept") return "Deny";
    if (!this.portsMatch(p.v1alpha1 ? rule.ports : rule.protocols, p.v1alpha1, dst, flow)) return undefined;
    const hit = peers.some((peer) => {
      if (peer?.namespaces || peer?.pods) return this.podPeer(peer, other.pod);
      if (peer?.nodes)
        return this.nodes.some(
          (n) =>
            selects(peer.nodes, n.metadata?.labels ?? {}) &&
            (n.status?.addresses ?? []).some((a: Any) => sameAddr(String(a.address), other.addr)),
        );
      if (peer?.networks) return (peer.networks as string[]).some((c) => inCidr(other.addr, c));
      return false; // domainNames, or a peer we do not know
    });
    return hit ? action : undefined;
  }

  private portsMatch(list: Any[] | undefined, v1alpha1: boolean, dst: End, flow: ReferenceFlow): boolean {
    if (!list || list.length === 0) return true;
    return list.some((e) => {
      if (v1alpha1) {
        if (e.namedPort !== undefined) return this.namedPort(e.namedPort, dst, flow);
        const r = e.portNumber ?? e.portRange;
        if (!r || (r.protocol ?? "TCP") !== flow.protocol) return false;
        return e.portNumber ? r.port === flow.port : flow.port >= r.start && flow.port <= r.end;
      }
      if (e.destinationNamedPort !== undefined) return this.namedPort(e.destinationNamedPort, dst, flow);
      const proto = e[flow.protocol.toLowerCase()];
      if (!proto) return false;
      const dp = proto.destinationPort;
      if (!dp) return true;
      if (dp.range) return flow.port >= dp.range.start && flow.port <= dp.range.end;
      return dp.number === flow.port;
    });
  }

  /** A named port, looked up on the destination pod: same name, same protocol, same number. */
  private namedPort(name: string, dst: End, flow: ReferenceFlow): boolean {
    if (!dst.pod) return false;
    const containers: Any[] = [...(dst.pod.spec?.containers ?? []), ...(dst.pod.spec?.initContainers ?? [])];
    return containers.some((c) =>
      (c.ports ?? []).some(
        (cp: Any) =>
          cp.name === name && (cp.protocol ?? "TCP") === flow.protocol && cp.containerPort === flow.port,
      ),
    );
  }

  // ---- NetworkPolicy v1 ----

  private networkPolicyTier(
    dir: Direction,
    self: Any,
    other: End,
    dst: End,
    flow: ReferenceFlow,
  ): ReferenceSide | undefined {
    const type = dir === "ingress" ? "Ingress" : "Egress";
    let isolated = false;
    for (const np of this.networkPolicies) {
      const ns = np.metadata?.namespace ?? "default";
      if (ns !== this.podNs(self) || !selects(np.spec?.podSelector, self.metadata.labels ?? {})) continue;
      const types: string[] =
        Array.isArray(np.spec?.policyTypes) && np.spec.policyTypes.length > 0
          ? np.spec.policyTypes
          : ["Ingress", ...((np.spec?.egress ?? []).length > 0 ? ["Egress"] : [])];
      if (!types.includes(type)) continue;
      isolated = true;
      const rules: Any[] = np.spec?.[dir] ?? [];
      for (let i = 0; i < rules.length; i++) {
        const peers: Any[] = (dir === "ingress" ? rules[i]?.from : rules[i]?.to) ?? [];
        const portsOk =
          (rules[i]?.ports ?? []).length === 0 ||
          (rules[i].ports as Any[]).some((e) => this.npPort(e, dst, flow));
        const peerOk = peers.length === 0 || peers.some((peer) => this.npPeer(peer, ns, other));
        if (portsOk && peerOk)
          return {
            allowed: true,
            tier: "networkpolicy",
            policy: `NetworkPolicy/${ns}/${np.metadata.name}`,
            rule: i,
            passedBy: [],
          };
      }
    }
    return isolated ? { allowed: false, tier: "networkpolicy", passedBy: [] } : undefined;
  }

  private npPort(e: Any, dst: End, flow: ReferenceFlow): boolean {
    const protocol = e.protocol ?? "TCP";
    if (protocol !== flow.protocol) return false;
    if (e.port === undefined || e.port === null) return true;
    if (typeof e.port === "string") return this.namedPort(e.port, dst, flow);
    return flow.port >= e.port && flow.port <= (e.endPort ?? e.port);
  }

  private npPeer(peer: Any, policyNs: string, other: End): boolean {
    if (peer.ipBlock) {
      return (
        inCidr(other.addr, peer.ipBlock.cidr) &&
        !(peer.ipBlock.except ?? []).some((c: string) => inCidr(other.addr, c))
      );
    }
    if (!other.pod) return false;
    if (peer.namespaceSelector)
      return (
        selects(peer.namespaceSelector, this.nsLabels(this.podNs(other.pod))) &&
        selects(peer.podSelector, other.pod.metadata.labels ?? {})
      );
    return this.podNs(other.pod) === policyNs && selects(peer.podSelector, other.pod.metadata.labels ?? {});
  }
}
