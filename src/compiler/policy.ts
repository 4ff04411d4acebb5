/**
 * policy: validate one NetworkPolicy object and turn it into a PolicySpec (pure data).
 *
 * Owns: the API's defaulting and validation rules (policyTypes defaulting, peer shapes, ipBlock
 * masking and except containment, port/endPort/protocol rules), with errors naming the field.
 * May not: look at pods or other policies; membership is the table's job.
 */
import { InputError } from "./errors.js";
import { cidrContains, type ParsedCIDR, parseCIDR } from "./ip.js";
import { protoNum } from "./model.js";
import type { PortSpec } from "./ports.js";
import { compileSelector, type LabelMatcher } from "./selectors.js";

/** Pods matching `pod` in namespace `namespace`, or in every namespace matching `nsSel`. */
export interface SelectorSpec {
  key: string;
  namespace: string | null;
  nsSel: LabelMatcher | null;
  podSel: LabelMatcher;
}

export interface BlockSpec {
  key: string;
  cidr: ParsedCIDR;
  excepts: ParsedCIDR[];
}

export type PeerSpec = { kind: "sel"; sel: SelectorSpec } | { kind: "block"; block: BlockSpec };

export interface RuleSpec {
  /** null = every peer (no `from`/`to`, or an empty list). */
  peers: PeerSpec[] | null;
  ports: PortSpec[] | null;
}

export interface PolicySpec {
  key: string;
  namespace: string;
  name: string;
  target: SelectorSpec;
  /** null = the policy does not isolate this direction; [] = isolates and allows nothing. */
  ingress: RuleSpec[] | null;
  egress: RuleSpec[] | null;
  /** Canonical text of everything above: equal text = equal semantics, so updates can be skipped. */
  fingerprint: string;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => v !== null && typeof v === "object" && !Array.isArray(v);

export function selectorSpec(
  namespace: string | null,
  nsSel: LabelMatcher | null,
  podSel: LabelMatcher,
): SelectorSpec {
  const key =
    namespace !== null ? `ns:${namespace} pod:${podSel.key}` : `nssel:${nsSel!.key} pod:${podSel.key}`;
  return { key, namespace, nsSel, podSel };
}

const PORT_NAME = /^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$/;

function compilePorts(raw: unknown, object: string, field: string): PortSpec[] | null {
  if (raw === undefined || raw === null) return null;
  if (!Array.isArray(raw)) throw new InputError(object, field, "must be a list");
  if (raw.length === 0) return null;
  return raw.map((p: unknown, i: number): PortSpec => {
    const f = `${field}[${i}]`;
    if (!isObj(p)) throw new InputError(object, f, "must be an object");
    const protoName = p.protocol ?? "TCP";
    const proto = typeof protoName === "string" ? protoNum(protoName) : undefined;
    if (proto === undefined) {
      throw new InputError(
        object,
        `${f}.protocol`,
        `unknown protocol ${JSON.stringify(protoName)} (TCP, UDP or SCTP)`,
      );
    }
    const port = p.port;
    const endPort = p.endPort;
    if (port === undefined || port === null) {
      if (endPort !== undefined && endPort !== null)
        throw new InputError(object, `${f}.endPort`, "requires port");
      return { proto, from: 0, to: 65535 };
    }
    if (typeof port === "string") {
      if (/^\d+$/.test(port))
        throw new InputError(
          object,
          `${f}.port`,
          `a quoted number ${JSON.stringify(port)} is not a valid port name; write it unquoted`,
        );
      if (!PORT_NAME.test(port) || !/[a-z]/.test(port)) {
        throw new InputError(
          object,
          `${f}.port`,
          `invalid port name ${JSON.stringify(port)} (IANA service name: up to 15 lowercase letters, digits and '-')`,
        );
      }
      if (endPort !== undefined && endPort !== null)
        throw new InputError(object, `${f}.endPort`, "is not allowed with a named port");
      return { proto, name: port };
    }
    if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw new InputError(
        object,
        `${f}.port`,
        `must be 1-65535 or a port name, got ${JSON.stringify(port)}`,
      );
    }
    if (endPort === undefined || endPort === null) return { proto, from: port, to: port };
    if (typeof endPort !== "number" || !Number.isInteger(endPort) || endPort < port || endPort > 65535) {
      throw new InputError(
        object,
        `${f}.endPort`,
        `must be an integer from port (${port}) to 65535, got ${JSON.stringify(endPort)}`,
      );
    }
    return { proto, from: port, to: endPort };
  });
}

function compileBlock(raw: unknown, object: string, field: string): BlockSpec {
  if (!isObj(raw)) throw new InputError(object, field, "must be an object");
  const cidr = typeof raw.cidr === "string" ? parseCIDR(raw.cidr) : undefined;
  if (!cidr) throw new InputError(object, `${field}.cidr`, `invalid CIDR ${JSON.stringify(raw.cidr)}`);
  const excepts: ParsedCIDR[] = [];
  if (raw.except !== undefined && raw.except !== null) {
    if (!Array.isArray(raw.except)) throw new InputError(object, `${field}.except`, "must be a list");
    raw.except.forEach((e: unknown, i: number) => {
      const c = typeof e === "string" ? parseCIDR(e) : undefined;
      if (!c) throw new InputError(object, `${field}.except[${i}]`, `invalid CIDR ${JSON.stringify(e)}`);
      if (!cidrContains(cidr, c) || c.prefix <= cidr.prefix) {
        throw new InputError(
          object,
          `${field}.except[${i}]`,
          `${c.text} must be a strict subset of cidr ${cidr.text}`,
        );
      }
      excepts.push(c);
    });
  }
  const exceptTexts = [...new Set(excepts.map((e) => e.text))].sort();
  return { key: `${cidr.text} except [${exceptTexts.join(",")}]`, cidr, excepts };
}

function compilePeers(raw: unknown, namespace: string, object: string, field: string): PeerSpec[] | null {
  if (raw === undefined || raw === null) return null;
  if (!Array.isArray(raw)) throw new InputError(object, field, "must be a list");
  if (raw.length === 0) return null;
  return raw.map((p: unknown, i: number): PeerSpec => {
    const f = `${field}[${i}]`;
    if (!isObj(p)) throw new InputError(object, f, "must be an object");
    const hasPod = p.podSelector !== undefined && p.podSelector !== null;
    const hasNs = p.namespaceSelector !== undefined && p.namespaceSelector !== null;
    const hasBlock = p.ipBlock !== undefined && p.ipBlock !== null;
    if (hasBlock && (hasPod || hasNs)) {
      throw new InputError(object, f, "ipBlock cannot be combined with podSelector or namespaceSelector");
    }
    if (hasBlock) return { kind: "block", block: compileBlock(p.ipBlock, object, `${f}.ipBlock`) };
    if (!hasPod && !hasNs)
      throw new InputError(object, f, "must set podSelector, namespaceSelector or ipBlock");
    const podSel = compileSelector(p.podSelector, object, `${f}.podSelector`);
    if (!hasNs) return { kind: "sel", sel: selectorSpec(namespace, null, podSel) };
    const nsSel = compileSelector(p.namespaceSelector, object, `${f}.namespaceSelector`);
    return { kind: "sel", sel: selectorSpec(null, nsSel, podSel) };
  });
}

function compileRules(
  raw: unknown,
  peerField: "from" | "to",
  namespace: string,
  object: string,
  field: string,
): RuleSpec[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw new InputError(object, field, "must be a list");
  return raw.map((r: unknown, i: number) => {
    const f = `${field}[${i}]`;
    if (r === null || r === undefined) return { peers: null, ports: null };
    if (!isObj(r)) throw new InputError(object, f, "must be an object");
    return {
      peers: compilePeers(r[peerField], namespace, object, `${f}.${peerField}`),
      ports: compilePorts(r.ports, object, `${f}.ports`),
    };
  });
}

function ruleText(r: RuleSpec): string {
  const peers = r.peers
    ? r.peers.map((p) => (p.kind === "sel" ? p.sel.key : `ip:${p.block.key}`)).join(";")
    : "*";
  const ports = r.ports ? r.ports.map((p) => `${p.proto}:${p.name ?? `${p.from}-${p.to}`}`).join(";") : "*";
  return `[${peers}|${ports}]`;
}

export function compilePolicy(raw: unknown): PolicySpec {
  if (!isObj(raw)) throw new InputError("NetworkPolicy", "", "must be an object");
  const meta = isObj(raw.metadata) ? raw.metadata : {};
  const name = meta.name;
  if (typeof name !== "string" || !name) throw new InputError("NetworkPolicy", "metadata.name", "missing");
  const namespace = typeof meta.namespace === "string" && meta.namespace ? meta.namespace : "default";
  const object = `NetworkPolicy ${namespace}/${name}`;
  const spec = raw.spec;
  if (!isObj(spec)) throw new InputError(object, "spec", "missing");
  const target = selectorSpec(namespace, null, compileSelector(spec.podSelector, object, "spec.podSelector"));
  const ingressRules = compileRules(spec.ingress, "from", namespace, object, "spec.ingress");
  const egressRules = compileRules(spec.egress, "to", namespace, object, "spec.egress");
  let types: string[];
  if (
    spec.policyTypes === undefined ||
    spec.policyTypes === null ||
    (Array.isArray(spec.policyTypes) && spec.policyTypes.length === 0)
  ) {
    // API defaulting: Ingress always; Egress only when egress rules are present.
    types = ["Ingress", ...(egressRules.length > 0 ? ["Egress"] : [])];
  } else {
    if (!Array.isArray(spec.policyTypes)) throw new InputError(object, "spec.policyTypes", "must be a list");
    spec.policyTypes.forEach((t: unknown, i: number) => {
      if (t !== "Ingress" && t !== "Egress") {
        throw new InputError(
          object,
          `spec.policyTypes[${i}]`,
          `unknown policy type ${JSON.stringify(t)} (Ingress or Egress)`,
        );
      }
    });
    types = spec.policyTypes as string[];
  }
  const ingress = types.includes("Ingress") ? ingressRules : null;
  const egress = types.includes("Egress") ? egressRules : null;
  const fingerprint = `${target.key} in:${ingress ? ingress.map(ruleText).join("") : "-"} eg:${egress ? egress.map(ruleText).join("") : "-"}`;
  return { key: `${namespace}/${name}`, namespace, name, target, ingress, egress, fingerprint };
}

export function describeSelector(s: SelectorSpec): string {
  if (s.namespace !== null) {
    return s.podSel.empty
      ? `all pods in namespace ${s.namespace}`
      : `pods ${s.podSel.text} in namespace ${s.namespace}`;
  }
  const ns = s.nsSel!.empty ? "all namespaces" : `namespaces ${s.nsSel!.text}`;
  return s.podSel.empty ? `all pods in ${ns}` : `pods ${s.podSel.text} in ${ns}`;
}

export function describePeer(p: PeerSpec): string {
  if (p.kind === "sel") return describeSelector(p.sel);
  const ex = p.block.excepts.length ? ` except ${p.block.excepts.map((e) => e.text).join(", ")}` : "";
  return `ipBlock ${p.block.cidr.text}${ex}`;
}
