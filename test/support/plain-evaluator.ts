/**
 * plain-evaluator: a deliberately plain NetworkPolicy v1 evaluator written from the API reference,
 * used as the oracle for property tests and as the baseline of bench/compiler.ts.
 *
 * It shares nothing with the compiler's table/engine/selectors code (only ip.ts parsing, for CIDR
 * math): every call walks every pod to find the endpoints and every policy to find the rules.
 * It assumes the policies are valid (the ones the table accepted); it does not validate.
 *
 * Implementation-defined choices it mirrors (documented, not from the spec):
 *  - hostNetwork pods and terminal (Succeeded/Failed) pods are never "pods" for policy: their IPs
 *    are plain addresses, matched only by ipBlock;
 *  - when two live pods hold the same IP, a Running one wins, then the one later in the array;
 *  - a pod talking to its own IP (any of its IPs) is always allowed;
 *  - the destination's own node may always reach it (ingress): an address is the node's when a Node
 *    object lists it, a pod on that node reports it as a hostIP, or a hostNetwork pod there has it.
 */
import { ipInCIDR, parseCIDR, parseIP } from "../../src/compiler/ip.js";
import type { Flow, NamespaceInfo, NodeInfo, PodInfo } from "../../src/compiler/model.js";

export interface PlainCluster {
  pods: readonly PodInfo[];
  namespaces: readonly NamespaceInfo[];
  nodes?: readonly NodeInfo[];
  /** Raw NetworkPolicy objects (networking.k8s.io/v1), as a manifest or the API would give them. */
  policies: readonly unknown[];
}

export type PlainDirection = "allowed" | "denied" | "not-isolated";

export interface PlainVerdict {
  allowed: boolean;
  ingress: PlainDirection;
  egress: PlainDirection;
}

// biome-ignore lint/suspicious/noExplicitAny: raw API objects, read field by field
type Any = any;

const METADATA_NAME = "kubernetes.io/metadata.name";
const PROTO_BY_NUM: Record<number, string> = { 6: "TCP", 17: "UDP", 132: "SCTP" };

/** The live pod owning `ip`, if any (PodInfo IPs are canonical; the flow's address is made so). */
function podAt(cluster: PlainCluster, ip: string): PodInfo | undefined {
  const canonical = parseIP(ip)?.text ?? ip;
  let best: PodInfo | undefined;
  for (const p of cluster.pods) {
    if (p.hostNetwork || p.phase === "Succeeded" || p.phase === "Failed") continue;
    if (!p.ips.includes(canonical)) continue;
    if (best === undefined) best = p;
    else if (best.phase === "Running" && p.phase !== "Running") continue;
    else best = p;
  }
  return best;
}

function namespaceLabels(cluster: PlainCluster, name: string): Record<string, string> {
  const ns = cluster.namespaces.find((n) => n.name === name);
  return { ...(ns ? ns.labels : {}), [METADATA_NAME]: name };
}

/** LabelSelector semantics: every matchLabels pair AND every matchExpression must hold. */
function selectorMatches(selector: Any, labels: Readonly<Record<string, string>>): boolean {
  if (selector === undefined || selector === null) return true;
  const ml = selector.matchLabels ?? {};
  for (const key of Object.keys(ml)) {
    if (labels[key] !== ml[key]) return false;
  }
  for (const expr of selector.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, expr.key);
    const values: string[] = expr.values ?? [];
    if (expr.operator === "In" && !(has && values.includes(labels[expr.key]))) return false;
    if (expr.operator === "NotIn" && has && values.includes(labels[expr.key])) return false;
    if (expr.operator === "Exists" && !has) return false;
    if (expr.operator === "DoesNotExist" && has) return false;
  }
  return true;
}

function policyNamespace(policy: Any): string {
  return policy?.metadata?.namespace || "default";
}

/** policyTypes as the API server defaults them. */
function policyTypes(policy: Any): string[] {
  const spec = policy.spec ?? {};
  if (Array.isArray(spec.policyTypes) && spec.policyTypes.length > 0) return spec.policyTypes;
  const types = ["Ingress"];
  if (Array.isArray(spec.egress) && spec.egress.length > 0) types.push("Egress");
  return types;
}

function policySelectsPod(policy: Any, pod: PodInfo): boolean {
  return policyNamespace(policy) === pod.namespace && selectorMatches(policy.spec?.podSelector, pod.labels);
}

function ipBlockMatches(block: Any, ip: string): boolean {
  const addr = parseIP(ip);
  const cidr = parseCIDR(block.cidr);
  if (!addr || !cidr || !ipInCIDR(addr, cidr)) return false;
  for (const e of block.except ?? []) {
    const ex = parseCIDR(e);
    if (ex && ipInCIDR(addr, ex)) return false;
  }
  return true;
}

/** Does one from/to entry match the other end of the connection? */
function peerMatches(
  cluster: PlainCluster,
  peer: Any,
  policyNs: string,
  otherPod: PodInfo | undefined,
  otherIP: string,
): boolean {
  if (peer.ipBlock) return ipBlockMatches(peer.ipBlock, otherIP);
  if (otherPod === undefined) return false;
  if (peer.namespaceSelector) {
    // namespaceSelector AND podSelector (absent podSelector = all pods of those namespaces).
    return (
      selectorMatches(peer.namespaceSelector, namespaceLabels(cluster, otherPod.namespace)) &&
      selectorMatches(peer.podSelector, otherPod.labels)
    );
  }
  // podSelector alone: pods of the policy's own namespace.
  return otherPod.namespace === policyNs && selectorMatches(peer.podSelector, otherPod.labels);
}

/** Does one `ports` entry admit the connection? Named ports are looked up on the destination pod. */
function portMatches(entry: Any, flow: Flow, dstPod: PodInfo | undefined): boolean {
  const protocol = entry.protocol ?? "TCP";
  if (protocol !== PROTO_BY_NUM[flow.proto]) return false;
  if (entry.port === undefined || entry.port === null) return true;
  if (typeof entry.port === "number") {
    const end = typeof entry.endPort === "number" ? entry.endPort : entry.port;
    return flow.port >= entry.port && flow.port <= end;
  }
  if (dstPod === undefined) return false;
  return dstPod.ports.some((c) => c.name === entry.port && c.protocol === protocol && c.port === flow.port);
}

function ruleAllows(
  cluster: PlainCluster,
  rule: Any,
  peersField: "from" | "to",
  policyNs: string,
  flow: Flow,
  otherPod: PodInfo | undefined,
  otherIP: string,
  dstPod: PodInfo | undefined,
): boolean {
  const ports: Any[] = rule?.ports ?? [];
  if (ports.length > 0 && !ports.some((e) => portMatches(e, flow, dstPod))) return false;
  const peers: Any[] = rule?.[peersField] ?? [];
  if (peers.length === 0) return true;
  return peers.some((p) => peerMatches(cluster, p, policyNs, otherPod, otherIP));
}

function evaluateSide(
  cluster: PlainCluster,
  self: PodInfo,
  type: "Ingress" | "Egress",
  flow: Flow,
  otherPod: PodInfo | undefined,
  otherIP: string,
  dstPod: PodInfo | undefined,
): PlainDirection {
  let isolated = false;
  let allowed = false;
  for (const policy of cluster.policies as Any[]) {
    if (!policySelectsPod(policy, self)) continue;
    if (!policyTypes(policy).includes(type)) continue;
    isolated = true;
    const rules: Any[] = (type === "Ingress" ? policy.spec?.ingress : policy.spec?.egress) ?? [];
    const field = type === "Ingress" ? "from" : "to";
    for (const rule of rules) {
      if (ruleAllows(cluster, rule, field, policyNamespace(policy), flow, otherPod, otherIP, dstPod)) {
        allowed = true;
      }
    }
  }
  if (!isolated) return "not-isolated";
  return allowed ? "allowed" : "denied";
}

function isAddressOfNode(cluster: PlainCluster, ip: string, node: string): boolean {
  if (!node) return false;
  const canonical = parseIP(ip)?.text ?? ip;
  if ((cluster.nodes ?? []).some((n) => n.name === node && n.addresses.includes(canonical))) return true;
  return cluster.pods.some(
    (p) =>
      p.nodeName === node &&
      ((p.hostIPs ?? []).includes(canonical) ||
        (p.hostNetwork && p.phase !== "Succeeded" && p.phase !== "Failed" && p.ips.includes(canonical))),
  );
}

export function plainDecide(cluster: PlainCluster, flow: Flow): PlainVerdict {
  const srcPod = podAt(cluster, flow.src);
  const dstPod = podAt(cluster, flow.dst);
  if (srcPod !== undefined && srcPod === dstPod) {
    return { allowed: true, ingress: "not-isolated", egress: "not-isolated" };
  }
  const egress = srcPod
    ? evaluateSide(cluster, srcPod, "Egress", flow, dstPod, flow.dst, dstPod)
    : "not-isolated";
  let ingress = dstPod
    ? evaluateSide(cluster, dstPod, "Ingress", flow, srcPod, flow.src, dstPod)
    : "not-isolated";
  if (ingress === "denied" && dstPod && isAddressOfNode(cluster, flow.src, dstPod.nodeName))
    ingress = "allowed";
  return { allowed: egress !== "denied" && ingress !== "denied", ingress, egress };
}
