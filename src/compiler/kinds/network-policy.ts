/**
 * kinds/network-policy: a NetworkPolicy (networking.k8s.io/v1) -> the tiered rule model.
 *
 * Owns: the API server's defaulting and validation of this kind (a missing spec is the empty spec,
 * which isolates every pod of the namespace for ingress; policyTypes defaulting; peer shapes; the
 * legacy ipBlock CIDR syntax; port, endPort and protocol rules), with errors naming the field.
 * In the model: tier "namespaced"; every rule an accept; a non-null direction isolates its subject.
 * May not: look at pods or other policies; membership is the table's job.
 */
import { InputError } from "../errors.js";
import { cidrContains, type ParsedCIDR, parseLegacyCIDR, unmapV4 } from "../ip.js";
import {
  eachObject,
  isObj,
  type KindInfo,
  type Obj,
  own,
  portName,
  present,
  readList,
  readObjectMeta,
  unknownFields,
} from "../k8s-meta.js";
import { protoNum } from "../model.js";
import type { PortSpec } from "../ports.js";
import {
  type BlockSpec,
  ENFORCEMENT_ANNOTATION,
  fingerprintOf,
  type PeerSpec,
  type PolicySpec,
  policyKey,
  type RuleSpec,
  selectorSpec,
} from "../rule-model.js";
import { compileSelector } from "../selectors.js";
import { isStrict, type ParseOptions } from "./options.js";

export const NETWORK_POLICY: KindInfo = {
  kind: "NetworkPolicy",
  apiVersion: "networking.k8s.io/v1",
  namespaced: true,
  nameRule: "subdomain",
};

/** NetworkPolicyPort: protocol (default TCP), port (number or name), endPort. */
export function compileNpPorts(
  raw: unknown,
  object: string,
  field: string,
  strict: boolean,
): PortSpec[] | null {
  const list = eachObject(raw, object, field, (p, f): PortSpec => {
    unknownFields(p, ["protocol", "port", "endPort"], object, f, strict);
    const protoName = own(p, "protocol") ?? "TCP";
    const proto = typeof protoName === "string" ? protoNum(protoName) : undefined;
    if (proto === undefined) {
      throw new InputError(
        object,
        `${f}.protocol`,
        `unknown protocol ${JSON.stringify(protoName)} (TCP, UDP or SCTP)`,
      );
    }
    const port = own(p, "port");
    const endPort = own(p, "endPort");
    const hasEnd = endPort !== undefined && endPort !== null;
    if (port === undefined || port === null) {
      if (hasEnd) throw new InputError(object, `${f}.endPort`, "requires port");
      return { proto, from: 0, to: 65535 };
    }
    if (typeof port === "string") {
      if (/^\d+$/.test(port))
        throw new InputError(
          object,
          `${f}.port`,
          `a quoted number ${JSON.stringify(port)} is not a valid port name; write it unquoted`,
        );
      const e = portName(port);
      if (e) throw new InputError(object, `${f}.port`, `invalid port name ${JSON.stringify(port)}: ${e}`);
      if (hasEnd) throw new InputError(object, `${f}.endPort`, "is not allowed with a named port");
      return { proto, name: port };
    }
    if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw new InputError(
        object,
        `${f}.port`,
        `must be 1-65535 or a port name, got ${JSON.stringify(port)}`,
      );
    }
    if (!hasEnd) return { proto, from: port, to: port };
    if (typeof endPort !== "number" || !Number.isInteger(endPort) || endPort < port || endPort > 65535) {
      throw new InputError(
        object,
        `${f}.endPort`,
        `must be an integer from port (${port}) to 65535, got ${JSON.stringify(endPort)}`,
      );
    }
    return { proto, from: port, to: endPort };
  });
  return list.length === 0 ? null : list;
}

function compileBlock(raw: unknown, object: string, field: string, strict: boolean): BlockSpec {
  if (!isObj(raw)) throw new InputError(object, field, "must be an object");
  unknownFields(raw, ["cidr", "except"], object, field, strict);
  const rawCidr = own(raw, "cidr");
  const cidr = typeof rawCidr === "string" ? parseLegacyCIDR(rawCidr) : undefined;
  if (!cidr) throw new InputError(object, `${field}.cidr`, `invalid CIDR ${JSON.stringify(rawCidr)}`);
  const excepts: ParsedCIDR[] = [];
  readList(own(raw, "except"), object, `${field}.except`).forEach((e: unknown, i: number) => {
    let c = typeof e === "string" ? parseLegacyCIDR(e) : undefined;
    if (!c) throw new InputError(object, `${field}.except[${i}]`, `invalid CIDR ${JSON.stringify(e)}`);
    // The API server reads an IPv4-mapped except (::ffff:a.b.c.d/n, n >= 96) inside an IPv4 block as
    // the IPv4 range it maps, and stores the policy: so does podwall, or it would enforce less.
    if (cidr.family === 4) c = unmapV4(c) ?? c;
    if (!cidrContains(cidr, c) || c.prefix <= cidr.prefix) {
      throw new InputError(
        object,
        `${field}.except[${i}]`,
        `${c.text} must be a strict subset of cidr ${cidr.text}`,
      );
    }
    excepts.push(c);
  });
  const exceptTexts = [...new Set(excepts.map((e) => e.text))].sort();
  return { key: `${cidr.text} except [${exceptTexts.join(",")}]`, cidr, excepts };
}

function compilePeers(
  raw: unknown,
  namespace: string,
  object: string,
  field: string,
  strict: boolean,
): PeerSpec[] | null {
  const list = eachObject(raw, object, field, (p, f): PeerSpec => {
    const unknown = unknownFields(p, ["podSelector", "namespaceSelector", "ipBlock"], object, f, strict);
    const hasPod = present(p, "podSelector");
    const hasNs = present(p, "namespaceSelector");
    const hasBlock = present(p, "ipBlock");
    if (hasBlock && (hasPod || hasNs)) {
      throw new InputError(object, f, "ipBlock cannot be combined with podSelector or namespaceSelector");
    }
    // A peer with a field of a newer API version: fail closed (an accept that matches nothing).
    if (unknown.length > 0) return { kind: "none", why: `unknown field ${unknown.join(", ")}` };
    if (hasBlock)
      return { kind: "block", block: compileBlock(own(p, "ipBlock"), object, `${f}.ipBlock`, strict) };
    if (!hasPod && !hasNs)
      throw new InputError(object, f, "must set podSelector, namespaceSelector or ipBlock");
    const podSel = compileSelector(own(p, "podSelector"), object, `${f}.podSelector`);
    if (!hasNs) return { kind: "sel", sel: selectorSpec(namespace, null, podSel) };
    const nsSel = compileSelector(own(p, "namespaceSelector"), object, `${f}.namespaceSelector`);
    return { kind: "sel", sel: selectorSpec(null, nsSel, podSel) };
  });
  return list.length === 0 ? null : list;
}

function compileRules(
  raw: unknown,
  peerField: "from" | "to",
  namespace: string,
  object: string,
  field: string,
  strict: boolean,
  notEnforced: string[],
  salvage: boolean,
): RuleSpec[] {
  if (salvage && !Array.isArray(raw) && raw !== undefined && raw !== null) {
    notEnforced.push(`${field}: must be a list; nothing is allowed in this direction`);
    return [
      { index: 0, name: "", action: "accept", peers: [{ kind: "none", why: "not a list" }], ports: null },
    ];
  }
  return readList(raw, object, field).map((r: unknown, index: number): RuleSpec => {
    if (!salvage) return compileRule(r, index, peerField, namespace, object, field, strict, notEnforced);
    try {
      return compileRule(r, index, peerField, namespace, object, field, strict, notEnforced);
    } catch (e) {
      if (!(e instanceof InputError)) throw e;
      notEnforced.push(`${e.field}: ${e.detail}; the rule allows nothing`);
      return { index, name: "", action: "accept", peers: [{ kind: "none", why: e.detail }], ports: null };
    }
  });
}

function compileRule(
  r: unknown,
  index: number,
  peerField: "from" | "to",
  namespace: string,
  object: string,
  field: string,
  strict: boolean,
  notEnforced: string[],
): RuleSpec {
  {
    const f = `${field}[${index}]`;
    const rule: RuleSpec = { index, name: "", action: "accept", peers: null, ports: null };
    if (r === null || r === undefined) return rule;
    if (!isObj(r)) throw new InputError(object, f, "must be an object");
    const unknown = unknownFields(r, [peerField, "ports"], object, f, strict);
    rule.peers = compilePeers(own(r, peerField), namespace, object, `${f}.${peerField}`, strict);
    rule.ports = compileNpPorts(own(r, "ports"), object, `${f}.ports`, strict);
    if (unknown.length > 0) {
      // A match field podwall cannot read: the rule allows nothing rather than more than written.
      notEnforced.push(`${f}: unknown field ${unknown.join(", ")}; the rule allows nothing`);
      rule.peers = [{ kind: "none", why: `unknown field ${unknown.join(", ")}` }];
    }
    return rule;
  }
}

export function compileNetworkPolicy(raw: unknown, opts: ParseOptions): PolicySpec {
  const strict = isStrict(opts);
  const meta = readObjectMeta(raw, NETWORK_POLICY, { requireTypeMeta: strict });
  const { namespace, name } = meta;
  const object = `NetworkPolicy ${namespace}/${name}`;
  const o = raw as Obj;
  unknownFields(o, ["apiVersion", "kind", "metadata", "spec", "status"], object, "", strict);
  // The API server stores an object without spec as the empty spec: every pod of the namespace
  // isolated for ingress, nothing allowed.
  const rawSpec = own(o, "spec") ?? {};
  if (!isObj(rawSpec)) throw new InputError(object, "spec", "must be an object");
  const notEnforced: string[] = [];
  const unknownSpec = unknownFields(
    rawSpec,
    ["podSelector", "ingress", "egress", "policyTypes"],
    object,
    "spec",
    strict,
  );
  for (const u of unknownSpec) notEnforced.push(`${u}: unknown field, ignored`);
  const subject = selectorSpec(
    namespace,
    null,
    compileSelector(own(rawSpec, "podSelector"), object, "spec.podSelector"),
  );
  const salvage = opts.salvage === true;
  const ingressRules = compileRules(
    own(rawSpec, "ingress"),
    "from",
    namespace,
    object,
    "spec.ingress",
    strict,
    notEnforced,
    salvage,
  );
  const egressRules = compileRules(
    own(rawSpec, "egress"),
    "to",
    namespace,
    object,
    "spec.egress",
    strict,
    notEnforced,
    salvage,
  );
  const rawTypes = own(rawSpec, "policyTypes");
  let types: unknown[];
  if (rawTypes === undefined || rawTypes === null || (Array.isArray(rawTypes) && rawTypes.length === 0)) {
    // API defaulting: Ingress always; Egress only when egress rules are present.
    types = ["Ingress", ...(egressRules.length > 0 ? ["Egress"] : [])];
  } else {
    try {
      types = readList(rawTypes, object, "spec.policyTypes", 2);
      types.forEach((t: unknown, i: number) => {
        if (t !== "Ingress" && t !== "Egress") {
          throw new InputError(
            object,
            `spec.policyTypes[${i}]`,
            `unknown policy type ${JSON.stringify(t)} (Ingress or Egress)`,
          );
        }
      });
    } catch (e) {
      if (!salvage || !(e instanceof InputError)) throw e;
      notEnforced.push(`${e.field}: ${e.detail}; the policy isolates both directions`);
      types = ["Ingress", "Egress"];
    }
  }
  const base = {
    tier: "namespaced" as const,
    priority: 0,
    subject,
    ingress: types.includes("Ingress") ? ingressRules : null,
    egress: types.includes("Egress") ? egressRules : null,
    audit: meta.annotations[ENFORCEMENT_ANNOTATION] === "audit",
    notEnforced,
  };
  return {
    key: policyKey("NetworkPolicy", namespace, name),
    kind: "NetworkPolicy",
    namespace,
    name,
    ...base,
    fingerprint: fingerprintOf(base),
  };
}
