/**
 * render-sets: the ipsets a node's rules match against, built from the compiled table.
 *
 * Owns: one hash:ip set per selector (its member pods' addresses) and per `nodes` peer (the
 * addresses of its nodes), one hash:net set per ipBlock with excepts (the excepts as nomatch
 * entries, so one peer's except never leaks into another peer), one hash:ip,port set per egress
 * named port (each destination pod's own port of that name). Names are stable hashes of what the set
 * stands for, within the kernel's 31 characters. Sets are shared by every rule that uses them.
 * May not: run commands.
 */

import type { DomainSetEntry } from "../compiler/domains.js";
import type { Family } from "../compiler/ip.js";
import { PROTO, protoToolName } from "../compiler/model.js";
import type { NodeSelectorEntry } from "../compiler/nodes.js";
import { ANY_PROTO, type PortSpec } from "../compiler/ports.js";
import type { CompiledPeer, PodRecord, PolicyTable, SelectorEntry } from "../compiler/table.js";
import { shortHash } from "./rule-layer.js";

export const PREFIX = "PODWALL-";

export type SetType = "hash:ip" | "hash:net" | "hash:ip,port";

export interface RenderedSet {
  name: string;
  family: Family;
  type: SetType;
  /** Sorted member lines as `ipset add` takes them ("10.0.0.1", "10.0.0.0/8", "10.1.0.0/16 nomatch"). */
  members: string[];
  /**
   * Members come and go outside the sync (DNS answers, each with its own timeout): the set is created
   * with timeout support and its members are the DNS path's to manage, never diffed by the applier.
   */
  dynamic?: boolean;
}

export type NamedPort = Extract<PortSpec, { name: string }>;

/** Sorted member IPs per selector entry and family, valid while the entry's version is unchanged. */
const memberCache = new WeakMap<SelectorEntry, { version: number; 4: string[]; 6: string[] }>();

/** hash:net cannot hold a /0; two halves cover the same addresses exactly (::/0 included). */
function splitZero(text: string, prefix: number, family: Family): string[] {
  if (prefix !== 0) return [text];
  return family === 4 ? ["0.0.0.0/1", "128.0.0.0/1"] : ["::/1", "8000::/1"];
}

export class FamilySets {
  constructor(
    readonly family: Family,
    private readonly table: PolicyTable,
    private readonly sets: Map<string, RenderedSet>,
  ) {}

  private get fam(): string {
    return this.family === 4 ? "4" : "6";
  }

  /** hash:ip set of the selector's member pod IPs in this family. */
  selectorSet(sel: SelectorEntry): string {
    const name = `${PREFIX}S${this.fam}-${shortHash(sel.spec.key)}`;
    if (!this.sets.has(name)) {
      // Member lists are recomputed only when the selector's version moved (membership or IPs).
      let cached = memberCache.get(sel);
      if (!cached || cached.version !== sel.version) {
        const v4 = new Set<string>();
        const v6 = new Set<string>();
        for (const pod of this.table.selectorPods(sel))
          for (const ip of pod.parsedIPs) (ip.family === 4 ? v4 : v6).add(ip.text);
        cached = { version: sel.version, 4: [...v4].sort(), 6: [...v6].sort() };
        memberCache.set(sel, cached);
      }
      this.sets.set(name, { name, family: this.family, type: "hash:ip", members: cached[this.family] });
    }
    return name;
  }

  /** hash:ip set of the addresses of the nodes a `nodes` peer selects, in this family. */
  nodeSet(nodes: NodeSelectorEntry): string {
    const name = `${PREFIX}D${this.fam}-${shortHash(nodes.spec.key)}`;
    if (!this.sets.has(name)) {
      const members = this.table.nodeIndex
        .addressesOf(nodes)
        .filter((a) => (a.includes(":") ? 6 : 4) === this.family);
      this.sets.set(name, { name, family: this.family, type: "hash:ip", members });
    }
    return name;
  }

  /**
   * hash:ip set (with per-entry timeouts) of the addresses `pod` learned from DNS answers for the
   * names of one domainNames peer; filled by the DNS path before each answer reaches the pod.
   */
  domainSet(pod: PodRecord, set: DomainSetEntry): string {
    const name = domainSetName(this.family, pod.key, set.names);
    if (!this.sets.has(name))
      this.sets.set(name, { name, family: this.family, type: "hash:ip", members: [], dynamic: true });
    return name;
  }

  /** hash:net set of one ipBlock: its CIDR, minus its own excepts (nomatch entries). */
  blockSet(peer: Extract<CompiledPeer, { kind: "block" }>): string {
    const spec = peer.block.spec;
    const name = `${PREFIX}B${this.fam}-${shortHash(spec.key)}`;
    if (!this.sets.has(name)) {
      const members = splitZero(spec.cidr.text, spec.cidr.prefix, this.family);
      for (const e of spec.excepts) members.push(`${e.text} nomatch`);
      this.sets.set(name, { name, family: this.family, type: "hash:net", members: members.sort() });
    }
    return name;
  }

  /**
   * hash:ip,port set of (pod IP, proto:port) for every pod the peer covers that names this port
   * (over the port's protocol, or any protocol for the cluster kinds' named ports). Returns the set
   * and the protocols its members use, one rule each.
   */
  namedPortSet(peer: CompiledPeer | null, port: NamedPort): { name: string; protos: string[] } {
    const peerKey =
      peer === null
        ? "*"
        : peer.kind === "sel"
          ? peer.sel.spec.key
          : peer.kind === "block"
            ? `ip:${peer.block.spec.key}`
            : `${peer.kind}`;
    const name = `${PREFIX}N${this.fam}-${shortHash(`${peerKey}|${port.name}|${port.proto}`)}`;
    const existing = this.sets.get(name);
    if (existing) return { name, protos: protosOf(existing) };
    const members = new Set<string>();
    const consider = (pod: PodRecord) => {
      for (const c of pod.ports) {
        if (c.name !== port.name || (port.proto !== ANY_PROTO && PROTO[c.protocol] !== port.proto)) continue;
        for (const ip of pod.parsedIPs) {
          if (ip.family !== this.family) continue;
          if (peer?.kind === "block" && !this.table.blocksFor(ip.text).includes(peer.id)) continue;
          members.add(`${ip.text},${protoToolName(PROTO[c.protocol])}:${c.port}`);
        }
      }
    };
    if (peer?.kind === "sel") for (const pod of this.table.selectorPods(peer.sel)) consider(pod);
    else if (peer === null || peer.kind === "block")
      for (const pod of this.table.allPods()) if (pod.identity) consider(pod);
    const set: RenderedSet = {
      name,
      family: this.family,
      type: "hash:ip,port",
      members: [...members].sort(),
    };
    this.sets.set(name, set);
    return { name, protos: protosOf(set) };
  }
}

function protosOf(s: RenderedSet): string[] {
  return [...new Set(s.members.map((m) => m.slice(m.indexOf(",") + 1, m.lastIndexOf(":"))))].sort();
}

/** The name of a pod's learned-addresses set for one domainNames peer (the DNS path writes to it). */
export function domainSetName(family: Family, podKey: string, names: readonly string[]): string {
  return `${PREFIX}F${family === 4 ? "4" : "6"}-${shortHash(`${podKey}|${JSON.stringify(names)}`)}`;
}

export function createLine(s: RenderedSet, name = s.name): string {
  const family = s.family === 4 ? "inet" : "inet6";
  const timeout = s.dynamic ? " timeout 0" : "";
  return `create ${name} ${s.type} family ${family} hashsize 1024 maxelem 1048576${timeout} -exist`;
}
