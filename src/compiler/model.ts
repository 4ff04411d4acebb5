/**
 * model: the normalized cluster objects the compiler consumes, and the flow/verdict shapes it answers.
 *
 * Owns: the few fields of Pods, Namespaces and Nodes that policy semantics depend on, and the one
 * protocol table. Sources (the Kubernetes informers, the manifest loader) convert raw objects into
 * these (normalize.ts); nothing downstream sees a whole Pod. Policies of every kind are compiled
 * into the tiered rule model (rule-model.ts) by their kind's parser (kinds/).
 * May not: do I/O or import anything outside src/compiler.
 */

/** IANA protocol numbers: the kernel, the NFQUEUE parser and the cache key all use these. */
export const PROTO = { TCP: 6, UDP: 17, SCTP: 132 } as const;
export type ProtoName = keyof typeof PROTO;
export type ProtoNum = (typeof PROTO)[ProtoName];

export const PROTO_NAMES: Readonly<Record<number, ProtoName>> = { 6: "TCP", 17: "UDP", 132: "SCTP" };

/** "TCP" -> 6. Own keys only: "constructor" or "__proto__" is not a protocol. */
export function protoNum(name: string): ProtoNum | undefined {
  return Object.hasOwn(PROTO, name) ? PROTO[name as ProtoName] : undefined;
}

/** 6 -> "TCP", or undefined for a protocol policy cannot name. */
export function protoName(num: number): ProtoName | undefined {
  return Object.hasOwn(PROTO_NAMES, num) ? PROTO_NAMES[num] : undefined;
}

/** The lowercase spelling iptables, ipset and conntrack use ("tcp"); the number for others. */
export function protoToolName(num: number): string {
  return protoName(num)?.toLowerCase() ?? String(num);
}

/** A container port that policy may name; `name` is empty for unnamed ports. */
export interface ContainerPort {
  name: string;
  port: number;
  protocol: ProtoName;
}

export interface PodInfo {
  namespace: string;
  name: string;
  labels: Readonly<Record<string, string>>;
  /** Canonical IP strings (IPv4 dotted, IPv6 RFC 5952), from status.podIPs / status.podIP. */
  ips: readonly string[];
  nodeName: string;
  hostNetwork: boolean;
  /** Pending, Running, Succeeded, Failed, Unknown. Terminal pods are ignored by policy. */
  phase: string;
  /** Ports of containers and init containers (native sidecars expose ports too). */
  ports: readonly ContainerPort[];
  /** metadata.uid: tells one incarnation of a name from the next (a StatefulSet pod re-created). */
  uid?: string;
  /** status.hostIPs: addresses of the pod's node (canonical), as the kubelet reports them. */
  hostIPs?: readonly string[];
}

/** A Node: its labels (for `nodes` peers) and its addresses (status.addresses that are IPs). */
export interface NodeInfo {
  name: string;
  labels: Readonly<Record<string, string>>;
  addresses: readonly string[];
}

export interface NamespaceInfo {
  name: string;
  labels: Readonly<Record<string, string>>;
}

export type Direction = "ingress" | "egress";

/** One connection attempt as the dataplane sees it (after service DNAT). */
export interface Flow {
  src: string;
  dst: string;
  proto: ProtoNum;
  port: number;
}

export function podKey(p: { namespace: string; name: string }): string {
  return `${p.namespace}/${p.name}`;
}

export function isTerminalPhase(phase: string): boolean {
  return phase === "Succeeded" || phase === "Failed";
}

/** The label the API server puts on every namespace; selectors may rely on it. */
export const NS_NAME_LABEL = "kubernetes.io/metadata.name";

export function defaultNamespace(name: string): NamespaceInfo {
  return { name, labels: { [NS_NAME_LABEL]: name } };
}
