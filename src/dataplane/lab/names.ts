/**
 * lab/names: how a lab names its kernel objects (netns, veths, MACs) and which inputs it accepts.
 * Owns: the naming scheme, which lets labDown find a lab's leftovers from its name alone, and input checks.
 * May not: run commands or touch files; everything here is pure.
 */
import { createHash } from "node:crypto";
import { isIP } from "node:net";
import type { LabPodSpec, LabPortSpec } from "./types.js";

/** Every lab netns starts with this, so lab objects never collide with anything else on the machine. */
export const LAB_NETNS_PREFIX = "pwl-";
/** The pods' gateways, as kindnet / CNI ptp use them: answered by proxy ARP and a link-local address. */
export const LAB_GW_V4 = "169.254.1.1";
export const LAB_GW_V6 = "fe80::1";
/** The node's own addresses (on its lo): the source of "node" probes, as a kubelet's IP would be. */
export const LAB_NODE_IPV4 = "172.31.255.254";
export const LAB_NODE_IPV6 = "fd00:ffff::fffe";

const LAB_NAME = /^[a-z0-9][a-z0-9-]{0,11}$/;
const PROTOCOLS: ReadonlySet<string> = new Set(["TCP", "UDP", "SCTP"]);

export function nodeNetnsName(lab: string): string {
  return `${LAB_NETNS_PREFIX}${lab}-node`;
}

export function podNetnsName(lab: string, index: number): string {
  return `${LAB_NETNS_PREFIX}${lab}-${index}`;
}

/** Exactly this lab's netns: lab "a" must not match lab "a-1"'s `pwl-a-1-node`. */
export function labNetnsPattern(lab: string): RegExp {
  return new RegExp(`^${LAB_NETNS_PREFIX}${lab}-(node|\\d+)$`);
}

export function podIndexOf(lab: string, netns: string): number | undefined {
  const m = labNetnsPattern(lab).exec(netns);
  return m && m[1] !== "node" ? Number(m[1]) : undefined;
}

function digest(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** Node-side veth: `pw` + 10 hex digits (12 chars, the kernel allows 15), stable per lab and pod key. */
export function hostIfName(lab: string, key: string): string {
  return `pw${digest(`${lab}\0${key}`).slice(0, 10)}`;
}

/** Fixed, locally administered MACs let both ends get permanent neighbour entries up front. */
export function macFor(lab: string, key: string, side: "host" | "pod"): string {
  const h = digest(`${lab}\0${key}\0${side}`);
  const bytes = [0x02, ...[0, 2, 4, 6, 8].map((i) => Number.parseInt(h.slice(i, i + 2), 16))];
  return bytes.map((b) => b.toString(16).padStart(2, "0")).join(":");
}

export function assertLabName(name: string): void {
  if (!LAB_NAME.test(name)) {
    throw new Error(`lab name ${JSON.stringify(name)}: want 1-12 chars of [a-z0-9-], starting alphanumeric`);
  }
}

function assertPorts(key: string, serve: readonly LabPortSpec[]): void {
  for (const p of serve) {
    if (!PROTOCOLS.has(p.protocol) || !Number.isInteger(p.port) || p.port < 1 || p.port > 65535) {
      throw new Error(`lab pod ${key}: bad port ${JSON.stringify(p)}`);
    }
  }
}

/** Checks one pod against the pods already in the lab (keys and IPs must be unique). */
export function assertPod(pod: LabPodSpec, others: readonly { key: string; ips: readonly string[] }[]): void {
  if (!pod.key) throw new Error("lab pod: empty key");
  if (others.some((o) => o.key === pod.key)) throw new Error(`lab pod ${pod.key}: duplicate key`);
  if (pod.ips.length === 0) throw new Error(`lab pod ${pod.key}: no IPs`);
  const taken = new Set([LAB_NODE_IPV4, LAB_NODE_IPV6, ...others.flatMap((o) => o.ips)]);
  for (const ip of pod.ips) {
    if (!isIP(ip)) throw new Error(`lab pod ${pod.key}: ${JSON.stringify(ip)} is not an IP`);
    if (taken.has(ip)) throw new Error(`lab pod ${pod.key}: IP ${ip} already used`);
    taken.add(ip);
  }
  assertPorts(pod.key, pod.serve);
}

export function assertPods(pods: readonly LabPodSpec[]): void {
  for (const [i, p] of pods.entries()) assertPod(p, pods.slice(0, i));
}
