/**
 * normalize: raw Kubernetes Pod, Namespace and Node objects -> the compiler's PodInfo, NamespaceInfo
 * and NodeInfo.
 *
 * Owns: picking the fields policy needs (labels, IPs, phase, node, hostNetwork, container and init
 * container ports; node labels and addresses), validating them and their metadata as the API server
 * would (k8s-meta), and canonicalizing IPs, so the informers can drop the rest of each object.
 * Fields policy never reads are not checked.
 * May not: do I/O. Throws InputError naming the field when an object cannot be understood.
 */
import { InputError } from "./errors.js";
import { parseLegacyIP } from "./ip.js";
import {
  dns1123Subdomain,
  isObj,
  type KindInfo,
  type MetaOptions,
  type Obj,
  own,
  portName,
  readList,
  readObjectMeta,
} from "./k8s-meta.js";
import {
  type ContainerPort,
  type NamespaceInfo,
  type NodeInfo,
  NS_NAME_LABEL,
  type PodInfo,
  type ProtoName,
  protoNum,
} from "./model.js";

export const POD: KindInfo = { kind: "Pod", apiVersion: "v1", namespaced: true, nameRule: "subdomain" };
export const NAMESPACE: KindInfo = {
  kind: "Namespace",
  apiVersion: "v1",
  namespaced: false,
  nameRule: "label",
};
export const NODE: KindInfo = { kind: "Node", apiVersion: "v1", namespaced: false, nameRule: "subdomain" };

/** Objects from an API server's list carry no apiVersion/kind; manifests must (kubectl's rule). */
const FROM_API: MetaOptions = { requireTypeMeta: false };

function optionalObj(o: Obj | undefined, key: string, what: string, field: string): Obj | undefined {
  const v = o ? own(o, key) : undefined;
  if (v === undefined || v === null) return undefined;
  if (!isObj(v)) throw new InputError(what, field, "must be an object");
  return v;
}

function optionalString(o: Obj | undefined, key: string, what: string, field: string): string | undefined {
  const v = o ? own(o, key) : undefined;
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw new InputError(what, field, "must be a string");
  return v;
}

export function namespaceFromK8s(obj: unknown, opts: MetaOptions = FROM_API): NamespaceInfo {
  const meta = readObjectMeta(obj, NAMESPACE, opts);
  // The API server always sets this label (1.21+); a manifest or an older server may omit it.
  return { name: meta.name, labels: { ...meta.labels, [NS_NAME_LABEL]: meta.name } };
}

function portsOf(spec: Obj | undefined, what: string): ContainerPort[] {
  const out: ContainerPort[] = [];
  for (const listName of ["containers", "initContainers"] as const) {
    const list = readList(spec ? own(spec, listName) : undefined, what, `spec.${listName}`);
    list.forEach((c, ci) => {
      const cf = `spec.${listName}[${ci}]`;
      if (!isObj(c)) throw new InputError(what, cf, "must be an object");
      readList(own(c, "ports"), what, `${cf}.ports`).forEach((p, pi) => {
        const field = `${cf}.ports[${pi}]`;
        if (!isObj(p)) throw new InputError(what, field, "must be an object");
        const num = own(p, "containerPort");
        if (typeof num !== "number" || !Number.isInteger(num) || num < 1 || num > 65535) {
          throw new InputError(
            what,
            `${field}.containerPort`,
            `must be an integer 1-65535, got ${JSON.stringify(num)}`,
          );
        }
        const protocol = own(p, "protocol") ?? "TCP";
        if (typeof protocol !== "string" || protoNum(protocol) === undefined) {
          throw new InputError(
            what,
            `${field}.protocol`,
            `unknown protocol ${JSON.stringify(protocol)} (TCP, UDP or SCTP)`,
          );
        }
        const name = optionalString(p, "name", what, `${field}.name`) ?? "";
        const e = name === "" ? undefined : portName(name);
        if (e) throw new InputError(what, `${field}.name`, `invalid port name ${JSON.stringify(name)}: ${e}`);
        out.push({ name, port: num, protocol: protocol as ProtoName });
      });
    });
  }
  return out;
}

/** Addresses from a status list of {ip} (podIPs, hostIPs), else its singular field; canonical, unique. */
function ipsOf(status: Obj | undefined, list: string, single: string, what: string): string[] {
  const raw: { ip: unknown; field: string }[] = [];
  readList(status ? own(status, list) : undefined, what, `status.${list}`).forEach((e, i) => {
    if (!isObj(e)) throw new InputError(what, `status.${list}[${i}]`, "must be an object");
    raw.push({ ip: own(e, "ip"), field: `status.${list}[${i}].ip` });
  });
  const one = status ? own(status, single) : undefined;
  if (raw.length === 0 && one !== undefined && one !== null && one !== "")
    raw.push({ ip: one, field: `status.${single}` });
  const ips: string[] = [];
  for (const { ip, field } of raw) {
    const c = typeof ip === "string" ? parseLegacyIP(ip)?.text : undefined;
    if (!c) throw new InputError(what, field, `not an IP address: ${JSON.stringify(ip)}`);
    if (!ips.includes(c)) ips.push(c);
  }
  return ips;
}

export function podFromK8s(obj: unknown, opts: MetaOptions = FROM_API): PodInfo {
  const meta = readObjectMeta(obj, POD, opts);
  const what = `Pod ${meta.namespace}/${meta.name}`;
  const o = obj as Obj;
  const spec = optionalObj(o, "spec", what, "spec");
  const status = optionalObj(o, "status", what, "status");
  const hostNetwork = spec ? own(spec, "hostNetwork") : undefined;
  if (hostNetwork !== undefined && hostNetwork !== null && typeof hostNetwork !== "boolean")
    throw new InputError(what, "spec.hostNetwork", "must be true or false");
  const nodeName = optionalString(spec, "nodeName", what, "spec.nodeName") ?? "";
  const ne = nodeName === "" ? undefined : dns1123Subdomain(nodeName);
  if (ne) throw new InputError(what, "spec.nodeName", `invalid node name ${JSON.stringify(nodeName)}: ${ne}`);
  const hostIPs = ipsOf(status, "hostIPs", "hostIP", what);
  return {
    namespace: meta.namespace,
    name: meta.name,
    labels: meta.labels,
    ips: ipsOf(status, "podIPs", "podIP", what),
    nodeName,
    hostNetwork: hostNetwork === true,
    phase: optionalString(status, "phase", what, "status.phase") ?? "Running",
    ports: portsOf(spec, what),
    ...(meta.uid ? { uid: meta.uid } : {}),
    ...(hostIPs.length > 0 ? { hostIPs } : {}),
  };
}

/** A Node's labels and its IP addresses (status.addresses entries that are IPs: InternalIP, ExternalIP). */
export function nodeFromK8s(obj: unknown, opts: MetaOptions = FROM_API): NodeInfo {
  const meta = readObjectMeta(obj, NODE, opts);
  const what = `Node ${meta.name}`;
  const status = optionalObj(obj as Obj, "status", what, "status");
  const addresses: string[] = [];
  readList(status ? own(status, "addresses") : undefined, what, "status.addresses").forEach((a, i) => {
    if (!isObj(a)) throw new InputError(what, `status.addresses[${i}]`, "must be an object");
    const type = own(a, "type");
    const addr = own(a, "address");
    if (typeof addr !== "string")
      throw new InputError(what, `status.addresses[${i}].address`, "must be a string");
    if (type === "Hostname" || type === "InternalDNS" || type === "ExternalDNS") return;
    const ip = parseLegacyIP(addr)?.text;
    if (ip && !addresses.includes(ip)) addresses.push(ip);
  });
  return { name: meta.name, labels: meta.labels, addresses };
}
