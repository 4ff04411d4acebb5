/**
 * render: compiled table + this node's local pods -> the kernel state podwall wants (chains, rules,
 * ipsets) for IPv4 and IPv6. Pure: the applier diffs and programs it, `podwall render` prints it.
 *
 * Layout (filter table; every object is ours by its PODWALL- prefix):
 *   FORWARD -> PODWALL-FORWARD: ESTABLISHED,RELATED accepted, INVALID dropped, then dispatch on the
 *     pod's interface (routed veth: -i/-o; bridged pod: physdev-in for egress, -d podIP for ingress;
 *     a name iptables cannot match exactly, such as `pw+`, never reaches a rule: -s/-d podIP, ifname.ts)
 *     into per-pod chains PODWALL-EGR-<h>/PODWALL-ING-<h>, which RETURN when a rule allows and DROP
 *     otherwise, so same-node traffic passes the source's egress AND the destination's ingress.
 *   INPUT -> PODWALL-INPUT: pod -> node traffic is egress-policed (node IPs are reachable only via
 *     ipBlock, as the API says); IPv6 neighbour discovery is always let through.
 *   OUTPUT -> PODWALL-OUTPUT: node-originated traffic to a pod is allowed (kubelet probes: the pod's
 *     own node is exempt on ingress only). Anything else leaving through a pod interface here was
 *     forwarded by IPVS after translation, so ingress (and, by source IP, egress) is judged on the
 *     backend address. FORWARD runs after nat PREROUTING, so iptables-mode kube-proxy DNAT is already
 *     applied there too: every check sees the backend pod, never the ClusterIP.
 * Peers live in ipsets shared by every rule using the same selector; each ipBlock with excepts gets
 * its own hash:net set (excepts as nomatch), so one peer's except never leaks into another peer.
 * Names are stable (hash of pod key / selector / block), within the kernel's limits (chains 28,
 * sets 31), and every rule carries a comment with a hash of its content for later diffs.
 * May not: run commands, or decide policy differently from the engine.
 */
import { createHash } from "node:crypto";
import { type Family, parseIP } from "../compiler/ip.js";
import { type ContainerPort, PROTO, PROTO_NAMES } from "../compiler/model.js";
import type { PortSpec } from "../compiler/ports.js";
import type {
  CompiledPeer,
  CompiledRule,
  PodRecord,
  PolicyRecord,
  PolicyTable,
  SelectorEntry,
} from "../compiler/table.js";
import { interfaceArg, interfaceNameProblem } from "./ifname.js";

export const PREFIX = "PODWALL-";
export const TOP_CHAINS = {
  FORWARD: "PODWALL-FORWARD",
  INPUT: "PODWALL-INPUT",
  OUTPUT: "PODWALL-OUTPUT",
} as const;
export type Builtin = keyof typeof TOP_CHAINS;

export interface LocalPod {
  key: string;
  /** Host-side interface of the pod (veth peer), or the bridge port for bridged pods. */
  hostIf: string;
  /** Bridged pods (a cni0-style bridge) are dispatched with physdev and by address. */
  bridged?: boolean;
}

export interface RenderOptions {
  dataplane: "iptables" | "nfqueue";
  queueNum?: number;
  /**
   * nfqueue: queues queueNum .. queueNum+queueCount-1, chosen by the CPU that handles the packet
   * (`--queue-balance --queue-cpu-fanout`), so the verdict thread woken runs on that CPU. Default 1.
   */
  queueCount?: number;
  /** nfqueue: `--queue-bypass`, packets pass while no verdict program is bound (fail-open). */
  queueBypass?: boolean;
  denyAction?: "DROP" | "REJECT";
  /** ClusterIP ranges that IPVS owns: pod -> these in INPUT is judged later, in OUTPUT, after translation. */
  serviceCIDRs?: string[];
}

export type SetType = "hash:ip" | "hash:net" | "hash:ip,port";

export interface RenderedSet {
  name: string;
  family: Family;
  type: SetType;
  /** Sorted member lines as `ipset add` takes them ("10.0.0.1", "10.0.0.0/8", "10.1.0.0/16 nomatch"). */
  members: string[];
}

export interface RenderedFamily {
  /** Chain name -> rule argument strings (what follows `-A CHAIN`), in order. */
  chains: Map<string, string[]>;
}

export interface DesiredState {
  v4: RenderedFamily;
  v6: RenderedFamily;
  sets: Map<string, RenderedSet>;
  /** Local pods isolated per direction, for metrics. */
  isolated: { ingress: number; egress: number; pods: number };
}

const hashMemo = new Map<string, string>();

/** sha256 prefix, memoized: the same names and rules come back on every sync. */
export function shortHash(s: string, len = 16): string {
  let h = hashMemo.get(s);
  if (h === undefined) {
    h = createHash("sha256").update(s).digest("hex");
    if (hashMemo.size >= 200_000) hashMemo.clear();
    hashMemo.set(s, h);
  }
  return h.slice(0, len);
}

/** The rule comment: "pw:<hash> <what>"; the hash covers the rule text so diffs can read it back. */
export function withComment(rule: string, what: string): string {
  const h = shortHash(rule, 8);
  const text = `pw:${h} ${what}`.slice(0, 250).replace(/"/g, "'");
  return `${rule} -m comment --comment "${text}"`;
}

/** Where pods isolated in a direction go in a family they have no address in: nothing is allowed. */
export const NOADDR_CHAIN = "PODWALL-NOADDR";

export function ruleHashOf(line: string): string | undefined {
  return /--comment "?pw:([0-9a-f]{8})/.exec(line)?.[1];
}

function portArgs(p: PortSpec, port: { from: number; to: number } | undefined): string {
  const proto = PROTO_NAMES[p.proto].toLowerCase();
  if (!port || (port.from === 0 && port.to === 65535)) return `-p ${proto}`;
  const range = port.from === port.to ? `${port.from}` : `${port.from}:${port.to}`;
  return `-p ${proto} -m ${proto} --dport ${range}`;
}

/** Sorted member IPs per selector entry and family, valid while the entry's version is unchanged. */
const memberCache = new WeakMap<SelectorEntry, { version: number; 4: string[]; 6: string[] }>();

class FamilyRenderer {
  readonly chains = new Map<string, string[]>();

  constructor(
    readonly family: Family,
    private readonly table: PolicyTable,
    private readonly sets: Map<string, RenderedSet>,
    private readonly opts: RenderOptions,
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

  /** hash:ip,port set of (pod IP, proto:port) for every pod the peer selects that names this port. */
  namedPortSet(peer: CompiledPeer | null, port: Extract<PortSpec, { name: string }>): string {
    const peerKey =
      peer === null ? "*" : peer.kind === "sel" ? peer.sel.spec.key : `ip:${peer.block.spec.key}`;
    const name = `${PREFIX}N${this.fam}-${shortHash(`${peerKey}|${port.name}|${port.proto}`)}`;
    if (this.sets.has(name)) return name;
    const members = new Set<string>();
    const proto = PROTO_NAMES[port.proto].toLowerCase();
    const consider = (pod: PodRecord) => {
      for (const c of pod.ports) {
        if (c.name !== port.name || PROTO[c.protocol] !== port.proto) continue;
        for (const ip of pod.parsedIPs) {
          if (ip.family !== this.family) continue;
          if (peer?.kind === "block" && !this.table.blocksFor(ip.text).includes(peer.id)) continue;
          members.add(`${ip.text},${proto}:${c.port}`);
        }
      }
    };
    if (peer?.kind === "sel") for (const pod of this.table.selectorPods(peer.sel)) consider(pod);
    else for (const pod of this.table.allPods()) if (pod.identity) consider(pod);
    this.sets.set(name, { name, family: this.family, type: "hash:ip,port", members: [...members].sort() });
    return name;
  }

  /** Match args for one peer on one side ("src" for ingress, "dst" for egress); null = cannot match here. */
  peerArgs(peer: CompiledPeer, side: "src" | "dst"): string | null {
    if (peer.kind === "sel") return `-m set --match-set ${this.selectorSet(peer.sel)} ${side}`;
    const spec = peer.block.spec;
    if (spec.cidr.family !== this.family) return null;
    if (spec.excepts.length === 0) {
      if (spec.cidr.prefix === 0) return "";
      return `${side === "src" ? "-s" : "-d"} ${spec.cidr.text}`;
    }
    return `-m set --match-set ${this.blockSet(peer)} ${side}`;
  }

  /** Rules of one policy rule for a pod: peers x ports, RETURN on match. */
  ruleLines(pol: PolicyRecord, dir: "ingress" | "egress", rule: CompiledRule, self: PodRecord): string[] {
    const side = dir === "ingress" ? "src" : "dst";
    const what = `${pol.key} ${dir}[${rule.index}]`;
    const peers: (CompiledPeer | null)[] = rule.peers === null ? [null] : [...rule.peers];
    const ports: (PortSpec | null)[] = rule.ports === null ? [null] : [...rule.ports];
    const out: string[] = [];
    for (const peer of peers) {
      const peerMatch = peer === null ? "" : this.peerArgs(peer, side);
      if (peerMatch === null) continue;
      for (const port of ports) {
        if (port === null) {
          out.push(withComment(`${peerMatch} -j RETURN`.trim(), what));
          continue;
        }
        if (port.name === undefined) {
          out.push(withComment(`${peerMatch} ${portArgs(port, port)} -j RETURN`.trim(), what));
          continue;
        }
        if (dir === "ingress") {
          // Named ports on ingress resolve against this (destination) pod's own containers.
          for (const c of resolveNamed(self.ports, port)) {
            out.push(
              withComment(
                `${peerMatch} ${portArgs(port, { from: c.port, to: c.port })} -j RETURN`.trim(),
                what,
              ),
            );
          }
        } else {
          // On egress they resolve against each destination pod: an ip,port set replaces the peer match.
          const set = this.namedPortSet(peer, port);
          const proto = PROTO_NAMES[port.proto].toLowerCase();
          out.push(withComment(`-p ${proto} -m set --match-set ${set} dst,dst -j RETURN`, what));
        }
      }
    }
    return out;
  }

  podChain(pod: PodRecord, dir: "ingress" | "egress", pols: readonly PolicyRecord[]): string {
    const name = `${PREFIX}${dir === "ingress" ? "ING" : "EGR"}-${shortHash(pod.key)}`;
    const lines: string[] = [];
    if (this.opts.dataplane === "nfqueue") {
      const bypass = this.opts.queueBypass ? " --queue-bypass" : "";
      const first = this.opts.queueNum ?? 100;
      const count = Math.max(1, this.opts.queueCount ?? 1);
      const target =
        count > 1
          ? `--queue-balance ${first}:${first + count - 1}${bypass} --queue-cpu-fanout`
          : `--queue-num ${first}${bypass}`;
      lines.push(withComment(`-j NFQUEUE ${target}`, `${pod.key} ${dir} verdict in userspace`));
    } else {
      for (const pol of pols)
        for (const rule of pol[dir]!) lines.push(...this.ruleLines(pol, dir, rule, pod));
      const deny = this.opts.denyAction === "REJECT" ? "REJECT" : "DROP";
      lines.push(withComment(`-j ${deny}`, `${pod.key} ${dir} default deny`));
    }
    this.chains.set(name, lines);
    return name;
  }
}

function resolveNamed(
  ports: readonly ContainerPort[],
  p: Extract<PortSpec, { name: string }>,
): ContainerPort[] {
  const seen = new Set<number>();
  return ports.filter(
    (c) => c.name === p.name && PROTO[c.protocol] === p.proto && !seen.has(c.port) && seen.add(c.port),
  );
}

/** hash:net cannot hold a /0; two halves cover the same addresses exactly (::/0 included). */
function splitZero(text: string, prefix: number, family: Family): string[] {
  if (prefix !== 0) return [text];
  return family === 4 ? ["0.0.0.0/1", "128.0.0.0/1"] : ["::/1", "8000::/1"];
}

export function renderNode(
  table: PolicyTable,
  localPods: readonly LocalPod[],
  opts: RenderOptions,
): DesiredState {
  const sets = new Map<string, RenderedSet>();
  const isolated = { ingress: 0, egress: 0, pods: 0 };
  const fams = ([4, 6] as const).map((f) => new FamilyRenderer(f, table, sets, opts));
  const sorted = [...localPods].sort((a, b) => a.key.localeCompare(b.key));
  for (const r of fams) {
    const fwd: string[] = [
      withComment(
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "established traffic stays in the kernel",
      ),
      withComment("-m conntrack --ctstate INVALID -j DROP", "invalid packets"),
    ];
    const input: string[] = [
      withComment("-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN", "established"),
    ];
    const output: string[] = [
      withComment("-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN", "established"),
    ];
    if (r.family === 6) {
      // Neighbour discovery and router solicitation must never be policed, or IPv6 stops working.
      for (const t of [133, 134, 135, 136, 137]) {
        const rule = `-p ipv6-icmp -m icmp6 --icmpv6-type ${t} -j RETURN`;
        input.push(withComment(rule, "IPv6 neighbour discovery"));
        output.push(withComment(rule, "IPv6 neighbour discovery"));
      }
    }
    for (const cidr of opts.serviceCIDRs ?? []) {
      const fam = parseIP(cidr.split("/")[0])?.family;
      if (fam === r.family)
        input.push(
          withComment(`-d ${cidr} -j RETURN`, "IPVS service range: judged after translation in OUTPUT"),
        );
    }
    for (const lp of sorted) {
      const pod = table.pod(lp.key);
      if (!pod?.identity) continue;
      const ing = table.isolating(pod.identity, "ingress");
      const eg = table.isolating(pod.identity, "egress");
      if (r.family === 4 && (ing.length || eg.length)) {
        isolated.pods++;
        if (ing.length) isolated.ingress++;
        if (eg.length) isolated.egress++;
      }
      const ips = pod.parsedIPs.filter((p) => p.family === r.family).map((p) => p.text);
      const dispatch = interfaceMatch(lp);
      if (ips.length === 0) {
        // No address in this family: the pod can only spoof, so an isolated direction allows nothing.
        // One static chain keeps policy changes from rewriting this family at all.
        if (!r.chains.has(NOADDR_CHAIN))
          r.chains.set(NOADDR_CHAIN, [withComment("-j DROP", "isolated pod, no address in this family")]);
        // Without a name iptables matches exactly, nothing reaches the pod in this family anyway, and
        // what it might spoof cannot be told apart: leave it.
        if (!dispatch.named) continue;
        if (eg.length) {
          fwd.push(withComment(`${dispatch.from} -j ${NOADDR_CHAIN}`, `${pod.key} egress`));
          input.push(withComment(`${dispatch.from} -j ${NOADDR_CHAIN}`, `${pod.key} egress`));
        }
        if (ing.length && !lp.bridged)
          fwd.push(withComment(`${dispatch.to} -j ${NOADDR_CHAIN}`, `${pod.key} ingress`));
        continue;
      }
      if (eg.length) {
        const chain = r.podChain(pod, "egress", eg);
        const what = `${pod.key} egress`;
        // An interface iptables cannot name exactly: the pod's own source addresses instead.
        const from = dispatch.named ? [dispatch.from] : ips.map((ip) => `-s ${ip}`);
        for (const m of from) fwd.push(withComment(`${m} -j ${chain}`, what));
        for (const m of from) input.push(withComment(`${m} -j ${chain}`, what));
        for (const ip of ips) output.push(withComment(`-s ${ip} -j ${chain}`, `${what} (IPVS-forwarded)`));
      }
      if (ing.length) {
        const chain = r.podChain(pod, "ingress", ing);
        const what = `${pod.key} ingress`;
        // Bridged pods, and pods whose interface iptables cannot name exactly, by destination address.
        const to = lp.bridged || !dispatch.named ? ips.map((ip) => `-d ${ip}`) : [dispatch.to];
        for (const m of to) fwd.push(withComment(`${m} -j ${chain}`, what));
        for (const m of to) {
          output.push(
            withComment(
              `${m} -m addrtype --src-type LOCAL -j RETURN`,
              `${pod.key} from its own node (probes)`,
            ),
          );
          output.push(withComment(`${m} -j ${chain}`, `${what} (IPVS-forwarded)`));
        }
      }
    }
    r.chains.set(TOP_CHAINS.FORWARD, fwd);
    r.chains.set(TOP_CHAINS.INPUT, input);
    r.chains.set(TOP_CHAINS.OUTPUT, output);
  }
  return { v4: { chains: fams[0].chains }, v6: { chains: fams[1].chains }, sets, isolated };
}

/**
 * How rules name a local pod's interface: `from` matches its packets coming in, `to` those going
 * out to it (routed pods only). named=false when iptables cannot match the name exactly (ifname.ts).
 */
function interfaceMatch(lp: LocalPod): { named: boolean; from: string; to: string } {
  if (interfaceNameProblem(lp.hostIf) !== undefined) return { named: false, from: "", to: "" };
  const name = interfaceArg(lp.hostIf);
  return {
    named: true,
    from: lp.bridged ? `-m physdev --physdev-in ${name}` : `-i ${name}`,
    to: `-o ${name}`,
  };
}

/** The jump rule we own in each built-in chain. */
export function jumpRule(builtin: Builtin): string {
  return withComment(`-j ${TOP_CHAINS[builtin]}`, "podwall policy dispatch");
}

/** Full restore texts, as `podwall render` prints them (a dry run of a first apply). */
export function restoreTexts(d: DesiredState): { ipset: string; iptables: string; ip6tables: string } {
  const ipset: string[] = [];
  for (const s of [...d.sets.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    ipset.push(createLine(s));
    for (const m of s.members) ipset.push(`add ${s.name} ${m} -exist`);
  }
  const tables = (f: RenderedFamily) => {
    const lines = ["*filter"];
    for (const name of f.chains.keys()) lines.push(`:${name} - [0:0]`);
    for (const [name, rules] of f.chains) for (const r of rules) lines.push(`-A ${name} ${r}`);
    for (const b of Object.keys(TOP_CHAINS) as Builtin[]) lines.push(`-I ${b} 1 ${jumpRule(b)}`);
    lines.push("COMMIT", "");
    return lines.join("\n");
  };
  return { ipset: `${ipset.join("\n")}\n`, iptables: tables(d.v4), ip6tables: tables(d.v6) };
}

export function createLine(s: RenderedSet, name = s.name): string {
  const family = s.family === 4 ? "inet" : "inet6";
  return `create ${name} ${s.type} family ${family} hashsize 1024 maxelem 1048576 -exist`;
}
