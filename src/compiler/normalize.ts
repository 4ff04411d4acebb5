/**
 * normalize: raw Kubernetes Pod and Namespace objects -> the compiler's PodInfo / NamespaceInfo.
 *
 * Owns: picking the fields policy needs (labels, IPs, phase, node, hostNetwork, container and init
 * container ports) and canonicalizing IPs, so the informers can drop the rest of each object.
 * May not: do I/O. Throws InputError naming the field when an object cannot be understood.
 */
import { InputError } from "./errors.js";
import { canonicalIP } from "./ip.js";
import {
  type ContainerPort,
  type NamespaceInfo,
  NS_NAME_LABEL,
  type PodInfo,
  type ProtoName,
} from "./model.js";

type Obj = Record<string, unknown>;

function asObj(v: unknown): Obj | undefined {
  return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Obj) : undefined;
}

function labelsOf(meta: Obj | undefined, what: string): Record<string, string> {
  const raw = asObj(meta?.labels);
  const out: Record<string, string> = {};
  if (!raw) return out;
  for (const [k, v] of Object.entries(raw)) {
    if (typeof v !== "string")
      throw new InputError(what, `metadata.labels.${k}`, "label values must be strings");
    out[k] = v;
  }
  return out;
}

export function namespaceFromK8s(obj: unknown): NamespaceInfo {
  const meta = asObj(asObj(obj)?.metadata);
  const name = meta?.name;
  if (typeof name !== "string" || !name) throw new InputError("Namespace", "metadata.name", "missing");
  // The API server always sets this label; a manifest may omit it.
  return { name, labels: { ...labelsOf(meta, `Namespace ${name}`), [NS_NAME_LABEL]: name } };
}

const PROTOCOLS = new Set(["TCP", "UDP", "SCTP"]);

function portsOf(spec: Obj | undefined, what: string): ContainerPort[] {
  const out: ContainerPort[] = [];
  for (const listName of ["containers", "initContainers"] as const) {
    const list = spec?.[listName];
    if (!Array.isArray(list)) continue;
    list.forEach((c, ci) => {
      const ports = asObj(c)?.ports;
      if (!Array.isArray(ports)) return;
      ports.forEach((p, pi) => {
        const po = asObj(p);
        const field = `spec.${listName}[${ci}].ports[${pi}]`;
        const num = po?.containerPort;
        if (typeof num !== "number" || !Number.isInteger(num) || num < 1 || num > 65535) {
          throw new InputError(
            what,
            `${field}.containerPort`,
            `must be an integer 1-65535, got ${JSON.stringify(num)}`,
          );
        }
        const protocol = po?.protocol ?? "TCP";
        if (typeof protocol !== "string" || !PROTOCOLS.has(protocol)) {
          throw new InputError(
            what,
            `${field}.protocol`,
            `unknown protocol ${JSON.stringify(protocol)} (TCP, UDP or SCTP)`,
          );
        }
        const name = typeof po?.name === "string" ? po.name : "";
        out.push({ name, port: num, protocol: protocol as ProtoName });
      });
    });
  }
  return out;
}

export function podFromK8s(obj: unknown): PodInfo {
  const o = asObj(obj);
  const meta = asObj(o?.metadata);
  const name = meta?.name;
  const namespace = (meta?.namespace as string | undefined) || "default";
  if (typeof name !== "string" || !name) throw new InputError("Pod", "metadata.name", "missing");
  const what = `Pod ${namespace}/${name}`;
  const spec = asObj(o?.spec);
  const status = asObj(o?.status);
  const rawIPs: { ip: unknown; field: string }[] = [];
  if (Array.isArray(status?.podIPs)) {
    status.podIPs.forEach((e, i) => {
      rawIPs.push({ ip: asObj(e)?.ip, field: `status.podIPs[${i}].ip` });
    });
  }
  if (rawIPs.length === 0 && status?.podIP !== undefined)
    rawIPs.push({ ip: status.podIP, field: "status.podIP" });
  const ips: string[] = [];
  for (const { ip, field } of rawIPs) {
    const c = typeof ip === "string" ? canonicalIP(ip) : undefined;
    if (!c) throw new InputError(what, field, `not an IP address: ${JSON.stringify(ip)}`);
    if (!ips.includes(c)) ips.push(c);
  }
  return {
    namespace,
    name,
    labels: labelsOf(meta, what),
    ips,
    nodeName: typeof spec?.nodeName === "string" ? spec.nodeName : "",
    hostNetwork: spec?.hostNetwork === true,
    phase: typeof status?.phase === "string" ? status.phase : "Running",
    ports: portsOf(spec, what),
    ...(typeof meta?.uid === "string" && meta.uid ? { uid: meta.uid } : {}),
  };
}
