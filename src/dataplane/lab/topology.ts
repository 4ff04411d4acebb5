/**
 * lab/topology: builds and tears down a lab's network namespaces and their veths: routed (ptp-style,
 * a /32 route per pod) or bridged (cni0-style: pod veths are ports of one bridge, br_netfilter on).
 * Owns: every ip/sysctl command of the lab. Each targets a lab netns, never the host's: the veth is created
 * from inside the node netns with its peer placed straight into the pod netns.
 * May not: start long-lived processes or read/write the state file.
 */
import { readdir } from "node:fs/promises";
import { isIPv6 } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { run } from "../exec.js";
import {
  hostIfName,
  LAB_GW_V4,
  LAB_GW_V6,
  LAB_NETNS_PREFIX,
  LAB_NODE_IPV4,
  LAB_NODE_IPV6,
  labNetnsPattern,
  macFor,
  nodeNetnsName,
  podNetnsName,
} from "./names.js";
import type { LabPodSpec, LabPodState } from "./types.js";

function assertLabNetns(netns: string): void {
  // The guard behind the rule that lab code never changes the host netns.
  if (!netns.startsWith(LAB_NETNS_PREFIX)) throw new Error(`refusing to configure non-lab netns ${netns}`);
}

async function sysctl(netns: string, settings: Record<string, string | number>): Promise<void> {
  assertLabNetns(netns);
  const args = Object.entries(settings).map(([k, v]) => `${k}=${v}`);
  await run("sysctl", ["-q", "-w", ...args], { netns });
}

/** `ip -n NETNS -batch -`: one process for a list of ip commands, stopping at the first failure. */
async function ipBatch(netns: string, lines: string[]): Promise<void> {
  assertLabNetns(netns);
  await run("ip", ["-n", netns, "-batch", "-"], { input: `${lines.join("\n")}\n` });
}

/** The bridge of a bridged lab; its MAC is fixed so pods can hold a permanent gateway entry. */
const LAB_BRIDGE = "pwbr0";

export async function createNode(lab: string, bridged = false): Promise<string> {
  const netns = nodeNetnsName(lab);
  await run("ip", ["netns", "add", netns]);
  await sysctl(netns, {
    "net.ipv4.ip_forward": 1,
    "net.ipv6.conf.all.forwarding": 1,
    "net.ipv4.conf.all.rp_filter": 0,
    "net.ipv4.conf.default.rp_filter": 0,
    // Veths created later inherit "default": no DAD, so fe80::1 is usable the moment it is added.
    "net.ipv6.conf.all.accept_dad": 0,
    "net.ipv6.conf.default.accept_dad": 0,
  });
  await ipBatch(netns, [
    "link set lo up",
    // A node IP (as a kubelet has) so "node" probes have a source address pods can answer.
    `addr add ${LAB_NODE_IPV4}/32 dev lo`,
    `addr add ${LAB_NODE_IPV6}/128 dev lo nodad`,
    ...(bridged
      ? [
          // Bridged: the gateway addresses live on the bridge, whose MAC the pods hold permanently.
          `link add ${LAB_BRIDGE} address ${macFor(lab, "_bridge", "host")} type bridge`,
          `link set ${LAB_BRIDGE} up`,
          `addr add ${LAB_GW_V4}/32 dev ${LAB_BRIDGE}`,
          `addr add ${LAB_GW_V6}/64 dev ${LAB_BRIDGE} nodad`,
        ]
      : // Proxy ARP only answers for addresses the node has a route to; there is no default route here.
        [`route add ${LAB_GW_V4}/32 dev lo`]),
  ]);
  // Bridged pods are filtered by iptables only through br_netfilter (per netns; on by default).
  if (bridged)
    await sysctl(netns, {
      "net.bridge.bridge-nf-call-iptables": 1,
      "net.bridge.bridge-nf-call-ip6tables": 1,
    });
  return netns;
}

export async function createPod(
  lab: string,
  nodeNetns: string,
  index: number,
  spec: LabPodSpec,
  bridged = false,
): Promise<LabPodState> {
  const netns = podNetnsName(lab, index);
  const hostIf = hostIfName(lab, spec.key);
  // The pod's gateway is the host veth (routed) or the bridge (bridged).
  const hostMac = bridged ? macFor(lab, "_bridge", "host") : macFor(lab, spec.key, "host");
  const vethMac = macFor(lab, spec.key, "host");
  const podMac = macFor(lab, spec.key, "pod");
  const v4 = spec.ips.filter((ip) => !isIPv6(ip));
  const v6 = spec.ips.filter((ip) => isIPv6(ip));

  await run("ip", ["netns", "add", netns]);
  await sysctl(netns, { "net.ipv6.conf.all.accept_dad": 0, "net.ipv6.conf.default.accept_dad": 0 });
  assertLabNetns(nodeNetns);
  await run("ip", [
    ...["-n", nodeNetns, "link", "add", hostIf, "address", vethMac, "type", "veth"],
    ...["peer", "name", "eth0", "address", podMac, "netns", netns],
  ]);

  // Pod side, as CNI ptp does it: host routes only, default via a gateway that answers on the veth.
  // Permanent neighbour entries on both ends make the first packet as fast as the hundredth.
  await ipBatch(netns, [
    "link set lo up",
    "link set eth0 up",
    ...v4.map((ip) => `addr add ${ip}/32 dev eth0`),
    ...v6.map((ip) => `addr add ${ip}/128 dev eth0 nodad`),
    ...(v4.length
      ? [
          `route add default via ${LAB_GW_V4} dev eth0 onlink`,
          `neigh replace ${LAB_GW_V4} lladdr ${hostMac} dev eth0 nud permanent`,
        ]
      : []),
    ...(v6.length
      ? [
          `route add default via ${LAB_GW_V6} dev eth0`,
          `neigh replace ${LAB_GW_V6} lladdr ${hostMac} dev eth0 nud permanent`,
        ]
      : []),
  ]);

  if (bridged) {
    await ipBatch(nodeNetns, [
      `link set ${hostIf} master ${LAB_BRIDGE}`,
      `link set ${hostIf} up`,
      ...v4.map((ip) => `route add ${ip}/32 dev ${LAB_BRIDGE} scope link`),
      ...v6.map((ip) => `route add ${ip}/128 dev ${LAB_BRIDGE}`),
      ...spec.ips.map((ip) => `neigh replace ${ip} lladdr ${podMac} dev ${LAB_BRIDGE} nud permanent`),
    ]);
    // A static FDB entry: the node knows the pod's port before the pod sends a frame.
    await run("bridge", ["fdb", "replace", podMac, "dev", hostIf, "master", "static"], { netns: nodeNetns });
    return { key: spec.key, netns, hostIf, ips: [...spec.ips] };
  }
  await sysctl(nodeNetns, {
    [`net.ipv4.conf.${hostIf}.proxy_arp`]: 1,
    // Without this the first ARP answer waits up to 0.8 s (and the first probe fails).
    [`net.ipv4.neigh.${hostIf}.proxy_delay`]: 0,
    [`net.ipv4.conf.${hostIf}.rp_filter`]: 0,
  });
  await ipBatch(nodeNetns, [
    `link set ${hostIf} up`,
    `addr add ${LAB_GW_V6}/64 dev ${hostIf} nodad`,
    ...v4.map((ip) => `route add ${ip}/32 dev ${hostIf} scope link`),
    ...v6.map((ip) => `route add ${ip}/128 dev ${hostIf}`),
    ...spec.ips.map((ip) => `neigh replace ${ip} lladdr ${podMac} dev ${hostIf} nud permanent`),
  ]);
  return { key: spec.key, netns, hostIf, ips: [...spec.ips] };
}

/** Named netns live as files in iproute2's run directory; reading it spares a process per call. */
const NETNS_DIR = "/run/netns";

/** Lab netns that exist right now, found by name so a lost state file still leaves nothing behind. */
export async function listLabNetns(lab: string): Promise<string[]> {
  const re = labNetnsPattern(lab);
  let names: string[];
  try {
    names = await readdir(NETNS_DIR);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw e;
  }
  return names.filter((n) => re.test(n));
}

/**
 * Kills what still runs inside a lab netns (agents of this or another process): a live process keeps
 * the netns, and so its veths, alive after `ip netns del`.
 */
async function killNetnsPids(netns: string): Promise<void> {
  assertLabNetns(netns);
  for (let attempt = 0; attempt < 100; attempt++) {
    const res = await run("ip", ["netns", "pids", netns], { allowFail: true });
    const pids = res.stdout.split(/\s+/).filter(Boolean).map(Number);
    if (res.code !== 0 || pids.length === 0) return;
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    await sleep(20);
  }
  throw new Error(`processes in netns ${netns} did not exit`);
}

export async function deleteNetns(netns: string): Promise<void> {
  await killNetnsPids(netns);
  const res = await run("ip", ["netns", "del", netns], { allowFail: true });
  if (res.code !== 0 && !/No such file|Invalid argument|not found/i.test(res.stderr)) {
    throw new Error(`ip netns del ${netns}: ${res.stderr.trim()}`);
  }
}

/** Removes one pod: its node-side veth first (synchronously, so the name is free at once), then its netns. */
export async function destroyPod(
  nodeNetns: string,
  pod: { netns: string; hostIf: string; ips?: readonly string[] },
): Promise<void> {
  assertLabNetns(nodeNetns);
  await run("ip", ["-n", nodeNetns, "link", "del", pod.hostIf], { allowFail: true });
  // Bridged pods' routes and neighbours hang off the bridge, which outlives them.
  for (const ip of pod.ips ?? []) {
    await run("ip", ["-n", nodeNetns, "route", "del", ip, "dev", LAB_BRIDGE], { allowFail: true });
    await run("ip", ["-n", nodeNetns, "neigh", "del", ip, "dev", LAB_BRIDGE], { allowFail: true });
  }
  await deleteNetns(pod.netns);
}
