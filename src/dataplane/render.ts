/**
 * render: compiled table + this node's local pods -> the kernel state podwall wants (chains of
 * rules from the rule layer, and ipsets) for IPv4 and IPv6. Pure: the applier diffs and programs it,
 * `podwall render` prints it. docs/design/dataplane.md draws the layout; in short (filter table,
 * every object ours by its PODWALL- prefix):
 *   FORWARD -> PODWALL-FORWARD: ESTABLISHED,RELATED accepted, INVALID dropped, then dispatch on the
 *     pod's interface (routed veth: -i/-o; bridged pod: physdev-in for egress, -d podIP for ingress;
 *     a name iptables cannot match exactly, such as `pw+`, never reaches a rule: -s/-d podIP, ifname.ts)
 *     into the per-pod chains of each direction that has a plan, so same-node traffic passes the
 *     source's egress AND the destination's ingress. A pod chain RETURNs to allow and DROPs to deny.
 *   INPUT -> PODWALL-INPUT: pod -> node traffic is egress-policed (node IPs are reachable only when
 *     a rule allows them); IPv6 neighbour discovery is always let through.
 *   OUTPUT -> PODWALL-OUTPUT: node-originated traffic to a pod is allowed (the pod's own node is
 *     exempt on ingress); anything else leaving through a pod interface here was forwarded by IPVS
 *     after translation, so ingress (and, by source IP, egress) is judged on the backend address.
 * A pod's chains per direction follow the tiers of its plan:
 *   PODWALL-ING-<h>    admin rules in order (accept: RETURN, deny: DROP, pass: goto the next tier),
 *                      then on to the next tier; or, without admin rules, the next tier itself;
 *   PODWALL-INGN-<h>   NetworkPolicy tier: accept rules RETURN, then DROP;
 *   PODWALL-INGB-<h>   baseline (only when no NetworkPolicy isolates the pod): as admin, a pass
 *                      RETURNs (the default allows), and the chain's end RETURNs.
 * May not: run commands, or decide policy differently from the engine (it spells the same plan).
 */
import { type Family, parseIP } from "../compiler/ip.js";
import { type ContainerPort, type Direction, PROTO, protoToolName } from "../compiler/model.js";
import { ANY_PROTO, type PortSpec } from "../compiler/ports.js";
import type { Action as PolicyAction } from "../compiler/rule-model.js";
import type {
  CompiledPeer,
  CompiledRule,
  Plan,
  PodRecord,
  PolicyRecord,
  PolicyTable,
} from "../compiler/table.js";
import { interfaceNameProblem } from "./ifname.js";
import { createLine, FamilySets, type NamedPort, PREFIX, type RenderedSet } from "./render-sets.js";
import {
  type Action,
  type Match,
  type ProtoMatch,
  type Rule,
  shortHash,
  toIptables,
  withComment,
} from "./rule-layer.js";

export { createLine, PREFIX, type RenderedSet, type SetType } from "./render-sets.js";
export { ruleHashOf, shortHash, withComment } from "./rule-layer.js";

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

export interface RenderedFamily {
  /** Chain name -> rule argument strings (what follows `-A CHAIN`), in order. */
  chains: Map<string, string[]>;
}

export interface DesiredState {
  v4: RenderedFamily;
  v6: RenderedFamily;
  sets: Map<string, RenderedSet>;
  /** Local pods with a plan per direction (isolated or governed by a cluster policy), for metrics. */
  isolated: { ingress: number; egress: number; pods: number };
}

/** Where pods with a plan go in a family they have no address in: nothing is allowed. */
export const NOADDR_CHAIN = "PODWALL-NOADDR";

const DEFAULT_QUEUE = 100;

function resolveNamed(ports: readonly ContainerPort[], p: NamedPort): ContainerPort[] {
  const seen = new Set<string>();
  return ports.filter((c) => {
    if (c.name !== p.name || (p.proto !== ANY_PROTO && PROTO[c.protocol] !== p.proto)) return false;
    const k = `${c.protocol}/${c.port}`;
    return !seen.has(k) && !!seen.add(k);
  });
}

class FamilyRenderer {
  readonly chains = new Map<string, string[]>();
  readonly sets: FamilySets;

  constructor(
    readonly family: Family,
    table: PolicyTable,
    sets: Map<string, RenderedSet>,
    private readonly opts: RenderOptions,
  ) {
    this.sets = new FamilySets(family, table, sets);
  }

  /** Match for one peer on one side ("src" for ingress, "dst" for egress); null = cannot match here. */
  peerMatch(peer: CompiledPeer, side: "src" | "dst", self: PodRecord): Match | null {
    switch (peer.kind) {
      case "domains":
        // What this pod learned from DNS answers: a per-pod set the DNS path fills (with timeouts).
        return side === "dst"
          ? { set: { name: this.sets.domainSet(self, peer.domains), flags: "dst" } }
          : null;
      case "sel":
        return { set: { name: this.sets.selectorSet(peer.sel), flags: side } };
      case "nodes":
        return { set: { name: this.sets.nodeSet(peer.nodes), flags: side } };
      case "none":
        return null;
      case "block": {
        const spec = peer.block.spec;
        if (spec.cidr.family !== this.family) return null;
        if (spec.excepts.length === 0) {
          if (spec.cidr.prefix === 0) return {};
          return side === "src" ? { src: spec.cidr.text } : { dst: spec.cidr.text };
        }
        return { set: { name: this.sets.blockSet(peer), flags: side } };
      }
    }
  }

  /** Rules of one policy rule for a pod: peers x ports, each ending in `action`. */
  ruleRules(pol: PolicyRecord, dir: Direction, rule: CompiledRule, self: PodRecord, action: Action): Rule[] {
    const side = dir === "ingress" ? "src" : "dst";
    const comment = `${pol.key} ${dir}[${rule.index}]${rule.name ? ` ${rule.name}` : ""} ${rule.action}`;
    const peers: (CompiledPeer | null)[] = rule.peers === null ? [null] : [...rule.peers];
    const ports: (PortSpec | null)[] = rule.ports === null ? [null] : [...rule.ports];
    const out: Rule[] = [];
    const add = (match: Match) => out.push({ match, action, comment });
    for (const peer of peers) {
      const pm = peer === null ? {} : this.peerMatch(peer, side, self);
      if (pm === null) continue;
      for (const port of ports) {
        if (port === null) add(pm);
        else if (port.name === undefined)
          add({
            ...pm,
            proto: protoToolName(port.proto) as ProtoMatch,
            dport: { from: port.from, to: port.to },
          });
        else if (dir === "ingress") {
          // Named ports on ingress resolve against this (destination) pod's own containers.
          for (const c of resolveNamed(self.ports, port))
            add({
              ...pm,
              proto: protoToolName(PROTO[c.protocol]) as ProtoMatch,
              dport: { from: c.port, to: c.port },
            });
        } else {
          // On egress they resolve against each destination pod: an ip,port set replaces the peer match.
          const set = this.sets.namedPortSet(peer, port);
          for (const proto of set.protos)
            add({ proto: proto as ProtoMatch, set: { name: set.name, flags: "dst,dst" } });
        }
      }
    }
    return out;
  }

  private deny(): Action {
    return this.opts.denyAction === "REJECT" ? { kind: "reject" } : { kind: "drop" };
  }

  private actionOf(a: PolicyAction, next: Action): Action {
    return a === "accept" ? { kind: "return" } : a === "deny" ? this.deny() : next;
  }

  private setChain(name: string, rules: Rule[]): void {
    this.chains.set(name, rules.map(toIptables));
  }

  /** The tier chains of one pod and direction; returns the entry chain. */
  podChains(pod: PodRecord, dir: Direction, plan: Plan): string {
    const tag = dir === "ingress" ? "ING" : "EGR";
    const entry = `${PREFIX}${tag}-${shortHash(pod.key)}`;
    if (this.opts.dataplane === "nfqueue") {
      const first = this.opts.queueNum ?? DEFAULT_QUEUE;
      const count = Math.max(1, this.opts.queueCount ?? 1);
      this.setChain(entry, [
        {
          match: {},
          action: { kind: "queue", first, count, bypass: this.opts.queueBypass === true },
          comment: `${pod.key} ${dir} verdict in userspace`,
        },
      ]);
      return entry;
    }
    const sub = (t: string) => `${PREFIX}${tag}${t}-${shortHash(pod.key, 15)}`;
    const hasAdmin = plan.admin.length > 0;
    const npChain = plan.namespaced.length > 0 ? (hasAdmin ? sub("N") : entry) : undefined;
    const baseChain = !npChain && plan.baseline.length > 0 ? (hasAdmin ? sub("B") : entry) : undefined;
    const next = npChain ?? baseChain;
    const toNext: Action = next ? { kind: "goto", chain: next } : { kind: "return" };
    const ordered = (list: readonly PolicyRecord[], passTo: Action): Rule[] => {
      const rules: Rule[] = [];
      for (const pol of list)
        for (const r of pol[dir] ?? [])
          rules.push(...this.ruleRules(pol, dir, r, pod, this.actionOf(r.action, passTo)));
      return rules;
    };
    if (hasAdmin) {
      const rules = ordered(plan.admin, toNext);
      if (next) rules.push({ match: {}, action: toNext, comment: `${pod.key} ${dir} admin tier: no match` });
      this.setChain(entry, rules);
    }
    if (npChain) {
      const rules = ordered(plan.namespaced, { kind: "return" });
      rules.push({ match: {}, action: this.deny(), comment: `${pod.key} ${dir} default deny` });
      this.setChain(npChain, rules);
    }
    if (baseChain) this.setChain(baseChain, ordered(plan.baseline, { kind: "return" }));
    return entry;
  }
}

const ESTABLISHED: Match = { ctstate: "RELATED,ESTABLISHED" };

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
    const fwd: Rule[] = [
      { match: ESTABLISHED, action: { kind: "accept" }, comment: "established traffic stays in the kernel" },
      { match: { ctstate: "INVALID" }, action: { kind: "drop" }, comment: "invalid packets" },
    ];
    const input: Rule[] = [{ match: ESTABLISHED, action: { kind: "return" }, comment: "established" }];
    const output: Rule[] = [{ match: ESTABLISHED, action: { kind: "return" }, comment: "established" }];
    if (r.family === 6) {
      // Neighbour discovery and router solicitation must never be policed, or IPv6 stops working.
      for (const t of [133, 134, 135, 136, 137]) {
        const rule: Rule = {
          match: { proto: "ipv6-icmp", icmp6Type: t },
          action: { kind: "return" },
          comment: "IPv6 neighbour discovery",
        };
        input.push(rule);
        output.push(rule);
      }
    }
    for (const cidr of opts.serviceCIDRs ?? []) {
      if (parseIP(cidr.split("/")[0])?.family === r.family)
        input.push({
          match: { dst: cidr },
          action: { kind: "return" },
          comment: "IPVS service range: judged after translation in OUTPUT",
        });
    }
    for (const lp of sorted) {
      const pod = table.pod(lp.key);
      if (!pod?.identity) continue;
      const ing = table.plan(pod.identity, "ingress");
      const eg = table.plan(pod.identity, "egress");
      if (r.family === 4 && (!ing.empty || !eg.empty)) {
        isolated.pods++;
        if (!ing.empty) isolated.ingress++;
        if (!eg.empty) isolated.egress++;
      }
      const ips = pod.parsedIPs.filter((p) => p.family === r.family).map((p) => p.text);
      // An interface iptables cannot name exactly (ifname.ts) never reaches a rule: by address instead.
      const named = interfaceNameProblem(lp.hostIf) === undefined;
      const fromPod: Match = lp.bridged ? { physdevIn: lp.hostIf } : { inIf: lp.hostIf };
      if (ips.length === 0) {
        // No address in this family: the pod can only spoof, so a governed direction allows nothing.
        // One static chain keeps policy changes from rewriting this family at all.
        if (!r.chains.has(NOADDR_CHAIN))
          r.chains.set(NOADDR_CHAIN, [withComment("-j DROP", "governed pod, no address in this family")]);
        // Without a name iptables matches exactly, nothing reaches the pod in this family anyway, and
        // what it might spoof cannot be told apart: leave it.
        if (!named) continue;
        const to: Action = { kind: "jump", chain: NOADDR_CHAIN };
        if (!eg.empty) {
          fwd.push({ match: fromPod, action: to, comment: `${pod.key} egress` });
          input.push({ match: fromPod, action: to, comment: `${pod.key} egress` });
        }
        if (!ing.empty && !lp.bridged)
          fwd.push({ match: { outIf: lp.hostIf }, action: to, comment: `${pod.key} ingress` });
        continue;
      }
      if (!eg.empty) {
        const chain: Action = { kind: "jump", chain: r.podChains(pod, "egress", eg) };
        const what = `${pod.key} egress`;
        const from: Match[] = named ? [fromPod] : ips.map((ip) => ({ src: ip }));
        for (const m of from) fwd.push({ match: m, action: chain, comment: what });
        for (const m of from) input.push({ match: m, action: chain, comment: what });
        for (const ip of ips)
          output.push({ match: { src: ip }, action: chain, comment: `${what} (IPVS-forwarded)` });
      }
      if (!ing.empty) {
        const chain: Action = { kind: "jump", chain: r.podChains(pod, "ingress", ing) };
        const what = `${pod.key} ingress`;
        // Bridged pods, and pods whose interface iptables cannot name exactly, by destination address.
        const toPod: Match[] = lp.bridged || !named ? ips.map((ip) => ({ dst: ip })) : [{ outIf: lp.hostIf }];
        for (const m of toPod) fwd.push({ match: m, action: chain, comment: what });
        for (const m of toPod) {
          output.push({
            match: { ...m, srcTypeLocal: true },
            action: { kind: "return" },
            comment: `${pod.key} from its own node (probes)`,
          });
          output.push({ match: m, action: chain, comment: `${what} (IPVS-forwarded)` });
        }
      }
    }
    r.chains.set(TOP_CHAINS.FORWARD, fwd.map(toIptables));
    r.chains.set(TOP_CHAINS.INPUT, input.map(toIptables));
    r.chains.set(TOP_CHAINS.OUTPUT, output.map(toIptables));
  }
  return { v4: { chains: fams[0].chains }, v6: { chains: fams[1].chains }, sets, isolated };
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
