/**
 * engine: decide(flow) -> allowed or not, and why, per NetworkPolicy v1.
 *
 * Owns: the decision procedure: egress must be allowed at the source pod AND ingress at the
 * destination pod; a side no policy isolates allows everything; within an isolated side the union
 * of all rules of all isolating policies applies; a pod talking to its own IP is never filtered.
 * Reads through DecisionSource so the live table and the NFQUEUE worker's snapshot share this code.
 * May not: mutate anything or allocate on the allow-nothing/not-isolated paths beyond the result.
 */
import type { ContainerPort, Flow } from "./model.js";
import { type PortMatcher, portsMatch } from "./ports.js";

export interface EndpointView {
  readonly key: string;
  readonly identityId: number;
  readonly ports: readonly ContainerPort[];
}

export type PeerView =
  | { readonly kind: "sel"; readonly members: ReadonlySet<number> }
  | { readonly kind: "block"; readonly id: number };

export interface RuleView {
  readonly index: number;
  readonly peers: readonly PeerView[] | null;
  readonly ports: PortMatcher;
}

export interface PolicyView {
  readonly key: string;
  readonly ingress: readonly RuleView[] | null;
  readonly egress: readonly RuleView[] | null;
}

export interface DecisionSource {
  readonly generation: number;
  endpoint(ip: string): EndpointView | undefined;
  isolatingById(identityId: number, dir: "ingress" | "egress"): readonly PolicyView[];
  blocksFor(ip: string): readonly number[];
}

export type DirectionResult = "allowed" | "denied" | "not-isolated";

export interface RuleRef {
  policy: string;
  rule: number;
  /** Index of the matching peer in the rule's from/to, or -1 when the rule has no peers list. */
  peer: number;
}

export interface DirectionVerdict {
  readonly result: DirectionResult;
  /** Keys of the policies isolating this side, sorted. */
  readonly policies: readonly string[];
  readonly by?: RuleRef;
}

export interface Verdict {
  readonly allowed: boolean;
  readonly ingress: DirectionVerdict;
  readonly egress: DirectionVerdict;
  /** Pod keys when the addresses belong to known pods. */
  readonly src?: string;
  readonly dst?: string;
  readonly loopback?: boolean;
}

/** Policy-name lists per isolating-policy array, so verdicts share them instead of mapping anew. */
const keysOf = new WeakMap<readonly PolicyView[], readonly string[]>();
function policyKeys(pols: readonly PolicyView[]): readonly string[] {
  let k = keysOf.get(pols);
  if (!k) keysOf.set(pols, (k = Object.freeze(pols.map((p) => p.key))));
  return k;
}

const NOT_ISOLATED: DirectionVerdict = Object.freeze({
  result: "not-isolated",
  policies: Object.freeze([]) as readonly string[],
});

/**
 * Index of the first peer of `peers` that `other` (at `otherIP`) matches; -1 when the rule has no
 * peers list (everyone matches), -2 when none matches. Shared with explain.
 */
export function peerIndex(
  peers: readonly PeerView[] | null,
  other: EndpointView | undefined,
  otherIP: string,
  src: DecisionSource,
): number {
  if (peers === null) return -1;
  let blocks: readonly number[] | undefined;
  for (let i = 0; i < peers.length; i++) {
    const p = peers[i];
    if (p.kind === "sel") {
      if (other !== undefined && p.members.has(other.identityId)) return i;
    } else {
      blocks ??= src.blocksFor(otherIP);
      if (blocks.includes(p.id)) return i;
    }
  }
  return -2;
}

/** A rule of an isolating set, with the position of its policy in that (sorted) set. */
interface Candidate {
  readonly pi: number;
  readonly rule: RuleView;
  /** The "allowed by this rule" verdict per matching peer index (+1), made once and shared. */
  readonly allowed: DirectionVerdict[];
}

/**
 * Rules of one isolating set and direction, indexed by (protocol, single port). Ranges, named ports
 * and port-less rules go to `generic`. A flow then visits only rules that can match its port, which
 * keeps denied flows cheap when many policies isolate a pod.
 */
interface RuleIndex {
  readonly exact: Map<number, Candidate[]>;
  readonly generic: readonly Candidate[];
  /** The set's "denied" verdict, shared by every denied flow. */
  readonly denied: DirectionVerdict;
}

const indexes = {
  ingress: new WeakMap<readonly PolicyView[], RuleIndex>(),
  egress: new WeakMap<readonly PolicyView[], RuleIndex>(),
};
const NO_CANDIDATES: readonly Candidate[] = [];

function ruleIndex(pols: readonly PolicyView[], dir: "ingress" | "egress"): RuleIndex {
  let idx = indexes[dir].get(pols);
  if (idx) return idx;
  const exact = new Map<number, Candidate[]>();
  const generic: Candidate[] = [];
  // A rule with the same ports and the same peers as an earlier one of the set can never be the
  // first match: leave it out. (Selectors are shared objects, so equal peers are the same object.)
  const seen = new Set<string>();
  const peerIds = new Map<ReadonlySet<number>, number>();
  const shape = (rule: RuleView) =>
    `${JSON.stringify(rule.ports)}|${
      rule.peers === null
        ? "*"
        : rule.peers
            .map((p) => {
              if (p.kind === "block") return `b${p.id}`;
              let id = peerIds.get(p.members);
              if (id === undefined) peerIds.set(p.members, (id = peerIds.size));
              return `s${id}`;
            })
            .join(",")
    }`;
  pols.forEach((pol, pi) => {
    for (const rule of pol[dir] ?? []) {
      const k = shape(rule);
      if (seen.has(k)) continue;
      seen.add(k);
      const c: Candidate = { pi, rule, allowed: [] };
      const ports = rule.ports;
      if (ports === null || ports.some((p) => p.name !== undefined || p.from !== p.to)) {
        generic.push(c);
        continue;
      }
      for (const k of new Set(ports.map((p) => p.proto * 65536 + p.from!))) {
        let list = exact.get(k);
        if (!list) exact.set(k, (list = []));
        list.push(c);
      }
    }
  });
  idx = { exact, generic, denied: Object.freeze({ result: "denied", policies: policyKeys(pols) }) };
  indexes[dir].set(pols, idx);
  return idx;
}

/** Build the per-set indexes ahead of time (the NFQUEUE snapshot does, so no packet pays for it). */
export function prepare(pols: readonly PolicyView[]): void {
  ruleIndex(pols, "ingress");
  ruleIndex(pols, "egress");
  policyKeys(pols);
}

function before(a: Candidate, b: Candidate): boolean {
  return a.pi < b.pi || (a.pi === b.pi && a.rule.index < b.rule.index);
}

function decideSide(
  src: DecisionSource,
  self: EndpointView,
  dir: "ingress" | "egress",
  other: EndpointView | undefined,
  otherIP: string,
  proto: number,
  port: number,
  dstPorts: readonly ContainerPort[] | undefined,
): DirectionVerdict {
  const pols = src.isolatingById(self.identityId, dir);
  if (pols.length === 0) return NOT_ISOLATED;
  const idx = ruleIndex(pols, dir);
  const ex = idx.exact.get(proto * 65536 + port) ?? NO_CANDIDATES;
  const gen = idx.generic;
  // Merge the two candidate lists in (policy, rule) order: the same first match as a full scan.
  let a = 0;
  let b = 0;
  while (a < ex.length || b < gen.length) {
    const c = b >= gen.length || (a < ex.length && before(ex[a], gen[b])) ? ex[a++] : gen[b++];
    if (!portsMatch(c.rule.ports, proto, port, dstPorts)) continue;
    const peer = peerIndex(c.rule.peers, other, otherIP, src);
    if (peer !== -2) {
      let v = c.allowed[peer + 1];
      if (v === undefined) {
        c.allowed[peer + 1] = v = Object.freeze({
          result: "allowed",
          policies: policyKeys(pols),
          by: Object.freeze({ policy: pols[c.pi].key, rule: c.rule.index, peer }),
        });
      }
      return v;
    }
  }
  return idx.denied;
}

export function decide(src: DecisionSource, flow: Flow): Verdict {
  const s = src.endpoint(flow.src);
  const d = src.endpoint(flow.dst);
  if (s !== undefined && s === d) {
    return {
      allowed: true,
      ingress: NOT_ISOLATED,
      egress: NOT_ISOLATED,
      src: s.key,
      dst: d.key,
      loopback: true,
    };
  }
  const egress = s
    ? decideSide(src, s, "egress", d, flow.dst, flow.proto, flow.port, d?.ports)
    : NOT_ISOLATED;
  const ingress = d
    ? decideSide(src, d, "ingress", s, flow.src, flow.proto, flow.port, d.ports)
    : NOT_ISOLATED;
  return {
    allowed: egress.result !== "denied" && ingress.result !== "denied",
    ingress,
    egress,
    src: s?.key,
    dst: d?.key,
  };
}
