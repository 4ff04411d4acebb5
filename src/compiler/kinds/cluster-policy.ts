/**
 * kinds/cluster-policy: ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2) and its
 * predecessors AdminNetworkPolicy and BaselineAdminNetworkPolicy (v1alpha1) -> the tiered model.
 *
 * Owns: each kind's schema and rules as its API reference and CRD validation define them (tier,
 * priority 0-1000, one subject kind, one field per peer, rule and peer counts, actions, protocols
 * and port ranges, CIDRs, domain-name syntax, no named port with nodes/networks/domainNames peers),
 * and the API's "fail closed" for what a newer version may add: a peer podwall cannot read makes an
 * accept rule match nothing and a deny or pass rule deny everything it covers.
 * Mapping: ClusterNetworkPolicy tier Admin and AdminNetworkPolicy -> admin; tier Baseline -> baseline;
 * BaselineAdminNetworkPolicy -> baseline after every Baseline ClusterNetworkPolicy (priority 1001).
 * domainNames match the addresses the subject pod learned for those names from DNS answers (the
 * agent's DNS path); with nothing learned (simulate, or no DNS path running) they match nothing.
 * May not: look at pods, nodes or other policies.
 */
import { InputError } from "../errors.js";
import { parseCIDR } from "../ip.js";
import {
  isObj,
  type KindInfo,
  type Obj,
  own,
  portName,
  present,
  readInt,
  readList,
  readObjectMeta,
  unknownFields,
} from "../k8s-meta.js";
import { PROTO, type ProtoNum } from "../model.js";
import type { PortSpec } from "../ports.js";
import {
  type Action,
  ENFORCEMENT_ANNOTATION,
  fingerprintOf,
  type PeerSpec,
  type PolicyKind,
  type PolicySpec,
  policyKey,
  type RuleSpec,
  type SelectorSpec,
  selectorSpec,
  type Tier,
} from "../rule-model.js";
import { compileSelector } from "../selectors.js";
import { isStrict, type ParseOptions } from "./options.js";

const GROUP = "policy.networking.k8s.io";

export const CLUSTER_NETWORK_POLICY: KindInfo = {
  kind: "ClusterNetworkPolicy",
  apiVersion: `${GROUP}/v1alpha2`,
  namespaced: false,
  nameRule: "subdomain",
};
export const ADMIN_NETWORK_POLICY: KindInfo = {
  kind: "AdminNetworkPolicy",
  apiVersion: `${GROUP}/v1alpha1`,
  namespaced: false,
  nameRule: "subdomain",
};
export const BASELINE_ADMIN_NETWORK_POLICY: KindInfo = {
  kind: "BaselineAdminNetworkPolicy",
  apiVersion: `${GROUP}/v1alpha1`,
  namespaced: false,
  nameRule: "subdomain",
};

/** The differences between the three kinds, as data. */
interface Dialect {
  info: KindInfo;
  kind: PolicyKind;
  actions: Record<string, Action>;
  maxRules: number;
  maxPeers: number;
  egressPeers: readonly string[];
  /** v1alpha2 `protocols` entries, or v1alpha1 `ports` entries. */
  portsField: "protocols" | "ports";
}

const CNP: Dialect = {
  info: CLUSTER_NETWORK_POLICY,
  kind: "ClusterNetworkPolicy",
  actions: { Accept: "accept", Deny: "deny", Pass: "pass" },
  maxRules: 25,
  maxPeers: 25,
  egressPeers: ["namespaces", "pods", "nodes", "networks", "domainNames"],
  portsField: "protocols",
};
const ANP: Dialect = {
  info: ADMIN_NETWORK_POLICY,
  kind: "AdminNetworkPolicy",
  actions: { Allow: "accept", Deny: "deny", Pass: "pass" },
  maxRules: 100,
  maxPeers: 100,
  egressPeers: ["namespaces", "pods", "nodes", "networks", "domainNames"],
  portsField: "ports",
};
const BANP: Dialect = {
  info: BASELINE_ADMIN_NETWORK_POLICY,
  kind: "BaselineAdminNetworkPolicy",
  actions: { Allow: "accept", Deny: "deny" },
  maxRules: 100,
  maxPeers: 100,
  egressPeers: ["namespaces", "pods", "nodes", "networks"],
  portsField: "ports",
};

const INGRESS_PEERS = ["namespaces", "pods"] as const;
/** The API's domain-name pattern: an optional "*." prefix and whole labels, an optional final dot. */
const DOMAIN =
  /^(\*\.)?([a-zA-Z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+[a-zA-Z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?$/;

interface Ctx {
  d: Dialect;
  object: string;
  strict: boolean;
  notEnforced: string[];
  /** Fail closed per rule instead of rejecting the object (see ParseOptions.salvage). */
  salvage: boolean;
}

/** `namespaces` (a namespace selector) or `pods` (namespaceSelector AND podSelector). */
function selectorOf(c: Ctx, field: "namespaces" | "pods", raw: unknown, f: string): SelectorSpec {
  if (field === "namespaces") {
    const ns = compileSelector(raw, c.object, `${f}.namespaces`);
    return selectorSpec(null, ns, compileSelector({}, c.object, f));
  }
  if (!isObj(raw)) throw new InputError(c.object, `${f}.pods`, "must be an object");
  unknownFields(raw, ["namespaceSelector", "podSelector"], c.object, `${f}.pods`, true);
  if (!present(raw, "podSelector")) throw new InputError(c.object, `${f}.pods.podSelector`, "missing");
  const ns = compileSelector(own(raw, "namespaceSelector"), c.object, `${f}.pods.namespaceSelector`);
  const pod = compileSelector(own(raw, "podSelector"), c.object, `${f}.pods.podSelector`);
  return selectorSpec(null, ns, pod);
}

/** The one known field set in `o`, of `fields`; an unreadable object yields undefined (fail closed). */
function oneOf(c: Ctx, o: Obj, fields: readonly string[], f: string): string | undefined {
  const unknown = unknownFields(o, fields, c.object, f, c.strict);
  const set = fields.filter((k) => present(o, k));
  if (set.length > 1)
    throw new InputError(c.object, f, `must set exactly one of ${fields.join(", ")}; has ${set.join(", ")}`);
  if (set.length === 1) return set[0];
  if (unknown.length > 0 || !c.strict) return undefined;
  throw new InputError(c.object, f, `must set exactly one of ${fields.join(", ")}`);
}

function compilePeer(c: Ctx, raw: unknown, dir: "ingress" | "egress", f: string): PeerSpec {
  if (!isObj(raw)) throw new InputError(c.object, f, "must be an object");
  const fields = dir === "ingress" ? INGRESS_PEERS : c.d.egressPeers;
  const which = oneOf(c, raw, fields, f);
  if (which === undefined) return { kind: "none", why: `${f}: no peer field podwall can read` };
  const v = own(raw, which);
  switch (which) {
    case "namespaces":
    case "pods":
      return { kind: "sel", sel: selectorOf(c, which, v, f) };
    case "nodes": {
      const sel = compileSelector(v, c.object, `${f}.nodes`);
      return { kind: "nodes", nodes: { key: sel.key, sel } };
    }
    case "networks": {
      const list = readList(v, c.object, `${f}.networks`, 25);
      if (list.length === 0) throw new InputError(c.object, `${f}.networks`, "must have at least 1 item");
      // Several CIDRs of one peer match like several peers: expanded by the caller.
      return { kind: "none", why: "networks", domains: list as string[] };
    }
    default: {
      const list = readList(v, c.object, `${f}.domainNames`, 25);
      if (list.length === 0) throw new InputError(c.object, `${f}.domainNames`, "must have at least 1 item");
      list.forEach((n, i) => {
        if (typeof n !== "string" || !DOMAIN.test(n))
          throw new InputError(
            c.object,
            `${f}.domainNames[${i}]`,
            `invalid domain name ${JSON.stringify(n)}`,
          );
      });
      return { kind: "domains", names: list as string[] };
    }
  }
}

/** A networks peer becomes one block peer per CIDR (no excepts: a network matches every address in it). */
function expandNetworks(c: Ctx, p: PeerSpec, f: string): PeerSpec[] {
  if (p.kind !== "none" || p.why !== "networks") return [p];
  return p.domains!.map((s, i): PeerSpec => {
    const cidr = typeof s === "string" ? parseCIDR(s) : undefined;
    if (!cidr || s.length > 43)
      throw new InputError(c.object, `${f}.networks[${i}]`, `invalid CIDR ${JSON.stringify(s)}`);
    return { kind: "block", block: { key: `${cidr.text} except []`, cidr, excepts: [] } };
  });
}

function portNumber(c: Ctx, v: unknown, f: string): number {
  return readInt(v, 1, 65535, c.object, f);
}

function range(c: Ctx, proto: ProtoNum, raw: unknown, f: string): PortSpec {
  if (!isObj(raw)) throw new InputError(c.object, f, "must be an object");
  unknownFields(
    raw,
    c.d.portsField === "ports" ? ["protocol", "start", "end"] : ["start", "end"],
    c.object,
    f,
    true,
  );
  const start = portNumber(c, own(raw, "start"), `${f}.start`);
  const end = portNumber(c, own(raw, "end"), `${f}.end`);
  if (start >= end) throw new InputError(c.object, f, `start (${start}) must be less than end (${end})`);
  return { proto, from: start, to: end };
}

function protoOf(c: Ctx, v: unknown, f: string): ProtoNum {
  const name = v ?? "TCP";
  if (name === "TCP" || name === "UDP" || name === "SCTP") return PROTO[name];
  throw new InputError(c.object, f, `unknown protocol ${JSON.stringify(name)} (TCP, UDP or SCTP)`);
}

/** v1alpha2 `protocols`: tcp | udp | sctp with destinationPort (number | range), or destinationNamedPort. */
function compileProtocol(c: Ctx, raw: unknown, f: string): PortSpec {
  if (!isObj(raw)) throw new InputError(c.object, f, "must be an object");
  const which = oneOf(c, raw, ["tcp", "udp", "sctp", "destinationNamedPort"], f);
  if (which === undefined) throw new InputError(c.object, f, "no protocol field podwall can read");
  const v = own(raw, which);
  if (which === "destinationNamedPort") {
    const e = typeof v === "string" ? portName(v) : "must be a string";
    if (e)
      throw new InputError(
        c.object,
        `${f}.destinationNamedPort`,
        `invalid port name ${JSON.stringify(v)}: ${e}`,
      );
    // The API's named ports carry no protocol: a container port of that name, over its protocol.
    return { proto: 0 as ProtoNum, name: v as string };
  }
  const proto = PROTO[which.toUpperCase() as "TCP" | "UDP" | "SCTP"];
  const pf = `${f}.${which}`;
  if (!isObj(v)) throw new InputError(c.object, pf, "must be an object");
  unknownFields(v, ["destinationPort"], c.object, pf, true);
  const dp = own(v, "destinationPort");
  if (!isObj(dp)) throw new InputError(c.object, `${pf}.destinationPort`, "missing");
  const kind = oneOf(c, dp, ["number", "range"], `${pf}.destinationPort`);
  if (kind === "number") {
    const n = portNumber(c, own(dp, "number"), `${pf}.destinationPort.number`);
    return { proto, from: n, to: n };
  }
  return range(c, proto, own(dp, "range"), `${pf}.destinationPort.range`);
}

/** v1alpha1 `ports`: portNumber {protocol, port} | namedPort | portRange {protocol, start, end}. */
function compileV1Port(c: Ctx, raw: unknown, f: string): PortSpec {
  if (!isObj(raw)) throw new InputError(c.object, f, "must be an object");
  const which = oneOf(c, raw, ["portNumber", "namedPort", "portRange"], f);
  if (which === undefined) throw new InputError(c.object, f, "no port field podwall can read");
  const v = own(raw, which);
  if (which === "namedPort") {
    const e = typeof v === "string" ? portName(v) : "must be a string";
    if (e) throw new InputError(c.object, `${f}.namedPort`, `invalid port name ${JSON.stringify(v)}: ${e}`);
    return { proto: 0 as ProtoNum, name: v as string };
  }
  const pf = `${f}.${which}`;
  if (!isObj(v)) throw new InputError(c.object, pf, "must be an object");
  const proto = protoOf(c, own(v, "protocol"), `${pf}.protocol`);
  if (which === "portRange") return range(c, proto, v, pf);
  unknownFields(v, ["protocol", "port"], c.object, pf, true);
  const n = portNumber(c, own(v, "port"), `${pf}.port`);
  return { proto, from: n, to: n };
}

function compileRule(c: Ctx, raw: unknown, dir: "ingress" | "egress", index: number, f: string): RuleSpec {
  if (!isObj(raw)) throw new InputError(c.object, f, "must be an object");
  const peerField = dir === "ingress" ? "from" : "to";
  const unknown = unknownFields(raw, ["name", "action", peerField, c.d.portsField], c.object, f, c.strict);
  const name = own(raw, "name") ?? "";
  if (typeof name !== "string" || name.length > 100)
    throw new InputError(c.object, `${f}.name`, "must be a string of at most 100 characters");
  const rawAction = own(raw, "action");
  const action =
    typeof rawAction === "string" && Object.hasOwn(c.d.actions, rawAction)
      ? c.d.actions[rawAction]
      : undefined;
  if (action === undefined)
    throw new InputError(
      c.object,
      `${f}.action`,
      `unknown action ${JSON.stringify(rawAction)} (${Object.keys(c.d.actions).join(", ")})`,
    );
  const rawPeers = readList(own(raw, peerField), c.object, `${f}.${peerField}`, c.d.maxPeers);
  if (rawPeers.length === 0) throw new InputError(c.object, `${f}.${peerField}`, "must have at least 1 item");
  const peers = rawPeers.flatMap((p, i) => {
    const pf = `${f}.${peerField}[${i}]`;
    return expandNetworks(c, compilePeer(c, p, dir, pf), pf);
  });
  const rawPorts = own(raw, c.d.portsField);
  let ports: PortSpec[] | null = null;
  if (rawPorts !== undefined && rawPorts !== null) {
    const list = readList(rawPorts, c.object, `${f}.${c.d.portsField}`, c.d.maxPeers);
    if (list.length === 0)
      throw new InputError(c.object, `${f}.${c.d.portsField}`, "must have at least 1 item");
    ports = list.map((p, i) =>
      c.d.portsField === "protocols"
        ? compileProtocol(c, p, `${f}.protocols[${i}]`)
        : compileV1Port(c, p, `${f}.ports[${i}]`),
    );
  }
  const rawPeerObjs = rawPeers.filter(isObj);
  if (
    ports?.some((p) => p.name !== undefined) &&
    rawPeerObjs.some((p) => present(p, "nodes") || present(p, "networks") || present(p, "domainNames"))
  )
    throw new InputError(
      c.object,
      f,
      "a named port cannot be used with nodes, networks or domainNames peers (they have no named ports)",
    );
  if (peers.some((p) => p.kind === "domains") && action !== "accept")
    throw new InputError(
      c.object,
      f,
      `domainNames are only allowed in ${c.d.kind === "ClusterNetworkPolicy" ? "Accept" : "Allow"} rules`,
    );
  const unreadable = unknown.length > 0 || peers.some((p) => p.kind === "none" && !p.domains);
  if (unreadable) {
    const what = unknown.length > 0 ? `unknown field ${unknown.join(", ")}` : "a peer podwall cannot read";
    if (action === "accept") {
      c.notEnforced.push(`${f}: ${what}; the rule matches nothing`);
      return { index, name, action, peers: [{ kind: "none", why: what }], ports };
    }
    // The API's fail-closed for Deny and Pass: the rule denies everything it could cover.
    c.notEnforced.push(`${f}: ${what}; the rule denies all traffic of its subject in this direction`);
    return { index, name, action: "deny", peers: null, ports: null };
  }
  return { index, name, action, peers, ports };
}

function compileRules(c: Ctx, raw: unknown, dir: "ingress" | "egress"): RuleSpec[] | null {
  const f = `spec.${dir}`;
  const list = readList(raw, c.object, f, c.d.maxRules);
  if (list.length === 0) return null;
  return list.map((r, i) => {
    if (!c.salvage) return compileRule(c, r, dir, i, `${f}[${i}]`);
    try {
      return compileRule(c, r, dir, i, `${f}[${i}]`);
    } catch (e) {
      if (!(e instanceof InputError)) throw e;
      const rawAction = isObj(r) ? own(r, "action") : undefined;
      const action =
        typeof rawAction === "string" && Object.hasOwn(c.d.actions, rawAction)
          ? c.d.actions[rawAction]
          : undefined;
      const name = isObj(r) && typeof own(r, "name") === "string" ? (own(r, "name") as string) : "";
      if (action === "accept") {
        c.notEnforced.push(`${e.field}: ${e.detail}; the rule matches nothing`);
        return { index: i, name, action, peers: [{ kind: "none", why: e.detail }], ports: null };
      }
      c.notEnforced.push(
        `${e.field}: ${e.detail}; the rule denies all traffic of its subject in this direction`,
      );
      return { index: i, name, action: "deny", peers: null, ports: null };
    }
  });
}

function compileSubject(c: Ctx, raw: unknown): SelectorSpec {
  if (!isObj(raw)) throw new InputError(c.object, "spec.subject", "missing");
  // A subject podwall cannot read is an error in both modes: guessing whom a policy covers is never safe.
  unknownFields(raw, ["namespaces", "pods"], c.object, "spec.subject", true);
  const set = ["namespaces", "pods"].filter((k) => present(raw, k));
  if (set.length !== 1)
    throw new InputError(c.object, "spec.subject", "must set exactly one of namespaces, pods");
  return selectorOf(c, set[0] as "namespaces" | "pods", own(raw, set[0]), "spec.subject");
}

function compile(raw: unknown, d: Dialect, opts: ParseOptions): PolicySpec {
  const strict = isStrict(opts);
  const meta = readObjectMeta(raw, d.info, { requireTypeMeta: strict });
  const object = `${d.kind} ${meta.name}`;
  const c: Ctx = { d, object, strict, notEnforced: [], salvage: opts.salvage === true };
  const o = raw as Obj;
  unknownFields(o, ["apiVersion", "kind", "metadata", "spec", "status"], object, "", strict);
  const spec = own(o, "spec");
  if (!isObj(spec)) throw new InputError(object, "spec", "missing");
  const specFields =
    d === CNP
      ? ["tier", "priority", "subject", "ingress", "egress"]
      : d === ANP
        ? ["priority", "subject", "ingress", "egress"]
        : ["subject", "ingress", "egress"];
  for (const u of unknownFields(spec, specFields, object, "spec", strict))
    c.notEnforced.push(`${u}: unknown field, ignored`);
  let tier: Tier;
  let priority: number;
  if (d === CNP) {
    const t = own(spec, "tier");
    if (t !== "Admin" && t !== "Baseline")
      throw new InputError(object, "spec.tier", `must be Admin or Baseline, got ${JSON.stringify(t)}`);
    tier = t === "Admin" ? "admin" : "baseline";
    priority = readInt(own(spec, "priority"), 0, 1000, object, "spec.priority");
  } else if (d === ANP) {
    tier = "admin";
    priority = readInt(own(spec, "priority"), 0, 1000, object, "spec.priority");
  } else {
    if (meta.name !== "default")
      throw new InputError(object, "metadata.name", 'a BaselineAdminNetworkPolicy must be named "default"');
    tier = "baseline";
    priority = 1001;
  }
  const base = {
    tier,
    priority,
    subject: compileSubject(c, own(spec, "subject")),
    ingress: compileRules(c, own(spec, "ingress"), "ingress"),
    egress: compileRules(c, own(spec, "egress"), "egress"),
    audit: meta.annotations[ENFORCEMENT_ANNOTATION] === "audit",
    notEnforced: c.notEnforced,
  };
  return {
    key: policyKey(d.kind, "", meta.name),
    kind: d.kind,
    namespace: "",
    name: meta.name,
    ...base,
    fingerprint: fingerprintOf(base),
  };
}

export function compileClusterNetworkPolicy(raw: unknown, opts: ParseOptions): PolicySpec {
  return compile(raw, CNP, opts);
}

export function compileAdminNetworkPolicy(raw: unknown, opts: ParseOptions): PolicySpec {
  return compile(raw, ANP, opts);
}

export function compileBaselineAdminNetworkPolicy(raw: unknown, opts: ParseOptions): PolicySpec {
  return compile(raw, BANP, opts);
}
