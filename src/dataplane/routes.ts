/**
 * routes: which host interface leads to an address, read from the node's routing table.
 *
 * Owns: longest-prefix lookup over `ip -j route show` (both families), and for addresses behind a
 * bridge (cni0-style), the bridge port found through the neighbour table and the bridge's FDB.
 * This is how the agent finds each local pod's interface without knowing the CNI plugin.
 * May not: change routes or links.
 */
import { bitAt, type ParsedCIDR, parseCIDR, parseIP } from "../compiler/ip.js";
import { run } from "./exec.js";

export interface RouteEntry {
  cidr: ParsedCIDR;
  dev: string;
}

export interface PodInterface {
  hostIf: string;
  bridged: boolean;
}

async function ipJson(args: string[], netns?: string): Promise<Record<string, unknown>[]> {
  const r = await run("ip", ["-j", ...args], { netns, allowFail: true });
  if (r.code !== 0 || !r.stdout.trim()) return [];
  try {
    return JSON.parse(r.stdout) as Record<string, unknown>[];
  } catch {
    return [];
  }
}

export async function readRoutes(netns?: string): Promise<RouteEntry[]> {
  const out: RouteEntry[] = [];
  const fams = ["-4", "-6"] as const;
  const tables = await Promise.all(fams.map((f) => ipJson([f, "route", "show", "table", "main"], netns)));
  for (const [i, fam] of fams.entries()) {
    for (const r of tables[i]) {
      const dst = String(r.dst ?? "");
      const dev = typeof r.dev === "string" ? r.dev : "";
      if (!dev || dst === "default") continue;
      const cidr = parseCIDR(dst.includes("/") ? dst : `${dst}/${fam === "-4" ? 32 : 128}`);
      if (cidr) out.push({ cidr, dev });
    }
  }
  return out;
}

function matches(c: ParsedCIDR, bytes: Uint8Array): boolean {
  for (let i = 0; i < c.prefix; i++) if (bitAt(c.bytes, i) !== bitAt(bytes, i)) return false;
  return true;
}

export function lookupRoute(routes: readonly RouteEntry[], ip: string): RouteEntry | undefined {
  const p = parseIP(ip);
  if (!p) return undefined;
  let best: RouteEntry | undefined;
  for (const r of routes) {
    if (r.cidr.family !== p.family || !matches(r.cidr, p.bytes)) continue;
    if (!best || r.cidr.prefix > best.cidr.prefix) best = r;
  }
  return best;
}

/** Resolve the host interface for each address list (one pod each); undefined where none is found. */
export async function podInterfaces(
  podIPs: readonly (readonly string[])[],
  netns?: string,
): Promise<(PodInterface | undefined)[]> {
  // Independent reads: one round of process starts, not three.
  const [routes, links] = await Promise.all([readRoutes(netns), ipJson(["-d", "link", "show"], netns)]);
  const bridges = new Set<string>();
  for (const l of links) {
    const info = l.linkinfo as { info_kind?: string } | undefined;
    if (info?.info_kind === "bridge") bridges.add(String(l.ifname));
  }
  let fdb: Map<string, string> | undefined;
  let neigh: Map<string, string> | undefined;
  const out: (PodInterface | undefined)[] = [];
  for (const ips of podIPs) {
    let found: PodInterface | undefined;
    for (const ip of ips) {
      const route = lookupRoute(routes, ip);
      if (!route) continue;
      if (!bridges.has(route.dev)) {
        found = { hostIf: route.dev, bridged: false };
        break;
      }
      // Behind a bridge: the pod's MAC (neighbour table) tells which bridge port it sits on.
      neigh ??= new Map(
        (await ipJson(["neigh", "show"], netns)).map((n) => [String(n.dst), String(n.lladdr ?? "")]),
      );
      if (!fdb) {
        fdb = new Map();
        const r = await run("bridge", ["-j", "fdb", "show"], { netns, allowFail: true });
        try {
          for (const e of JSON.parse(r.stdout || "[]") as {
            mac: string;
            ifname: string;
            master?: string;
          }[]) {
            if (e.master) fdb.set(e.mac, e.ifname);
          }
        } catch {
          // No FDB: the pod stays unresolved until the next sync.
        }
      }
      const port = fdb.get(neigh.get(ip) ?? "");
      if (port) {
        found = { hostIf: port, bridged: true };
        break;
      }
    }
    out.push(found);
  }
  return out;
}
