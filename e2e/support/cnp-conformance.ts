/**
 * cnp-conformance: reads the transcribed ClusterNetworkPolicy conformance suite in e2e/conformance
 * (format: see the top of e2e/cnp-conformance.test.ts) and turns it into what the runners need: the
 * base cluster as Kubernetes objects for one address family, the objects in force after each step,
 * and the cells each step expects.
 *
 * Owns: parsing and checking the data (unknown keys, pods and ports that do not exist, changes that
 * do not apply are errors naming the file, case and step). May not: run podwall or touch the kernel.
 */
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse, stringify } from "yaml";

export const CONFORMANCE_DIR = join(import.meta.dirname, "..", "conformance");

export type Obj = Record<string, unknown>;
export type Family = "ipv4" | "ipv6";
export type Protocol = "TCP" | "UDP" | "SCTP";

export interface PortProto {
  port: number;
  protocol: Protocol;
}

export interface ClusterPod {
  namespace: string;
  name: string;
  labels: Record<string, string>;
  node: string;
  hostNetwork: boolean;
  /** Per family; a hostNetwork pod has its node's. */
  addresses: Record<Family, string>;
  containerPorts: { name?: string; port: number; protocol: Protocol }[];
  serves: PortProto[];
}

export interface Cluster {
  variants: Family[];
  nodes: { name: string; labels: Record<string, string>; addresses: Record<Family, string> }[];
  namespaces: { name: string; labels: Record<string, string> }[];
  pods: ClusterPod[];
}

export interface Cell extends PortProto {
  /** Pod keys, namespace/name. */
  from: string;
  to: string;
  connected: boolean;
}

export type Change =
  | { apply: Obj }
  | { delete: string }
  | { in: string; set: string; value: unknown }
  | { in: string; swap: [string, string] }
  | { in: string; insert: string; value: unknown };

export interface Step {
  name: string;
  changes: Change[];
  expect: Cell[];
}

export interface Case {
  file: string;
  name: string;
  features: string[];
  /** Not an upstream test (see the case's comment in its file). */
  derived: boolean;
  objects: Obj[];
  steps: Step[];
}

/** Steps that see the same objects (no changes in between): one simulate or lab run serves them all. */
export interface StateGroup {
  steps: Step[];
  objects: Obj[];
  cells: Cell[];
  ports: PortProto[];
}

const isObj = (v: unknown): v is Obj => v !== null && typeof v === "object" && !Array.isArray(v);

function keysOnly(o: Obj, allowed: string[], where: string): void {
  for (const k of Object.keys(o))
    if (!allowed.includes(k)) throw new Error(`${where}: unknown key ${JSON.stringify(k)}`);
}

export function parsePortProto(s: unknown, where: string): PortProto {
  const m = typeof s === "string" ? /^(\d+)\/(TCP|UDP|SCTP)$/.exec(s) : null;
  if (!m) throw new Error(`${where}: want PORT/TCP|UDP|SCTP, got ${JSON.stringify(s)}`);
  return { port: Number(m[1]), protocol: m[2] as Protocol };
}

export const portLabel = (p: PortProto) => `${p.port}/${p.protocol}`;

export function loadCluster(): Cluster {
  const file = join(CONFORMANCE_DIR, "cluster.yaml");
  const raw = parse(readFileSync(file, "utf8")) as Obj;
  keysOnly(raw, ["hostNetworkPorts", "variants", "nodes", "namespaces", "pods"], file);
  const nodes = raw.nodes as Cluster["nodes"];
  const pods = (raw.pods as Obj[]).map((p) => {
    const where = `${file}: pod ${p.namespace}/${p.name}`;
    keysOnly(
      p,
      ["namespace", "name", "labels", "node", "hostNetwork", "addresses", "containerPorts", "serves"],
      where,
    );
    const node = nodes.find((n) => n.name === p.node);
    if (!node) throw new Error(`${where}: no node ${p.node}`);
    const hostNetwork = p.hostNetwork === true;
    if (hostNetwork === (p.addresses !== undefined))
      throw new Error(`${where}: a pod has addresses unless it is hostNetwork`);
    return {
      namespace: p.namespace as string,
      name: p.name as string,
      labels: p.labels as Record<string, string>,
      node: node.name,
      hostNetwork,
      addresses: (hostNetwork ? node.addresses : p.addresses) as Record<Family, string>,
      containerPorts: ((p.containerPorts as Obj[]) ?? []).map((c) => ({
        ...(c.name ? { name: c.name as string } : {}),
        port: c.port as number,
        protocol: c.protocol as Protocol,
      })),
      serves: (p.serves as string[]).map((s) => parsePortProto(s, where)),
    };
  });
  return {
    variants: Object.keys(raw.variants as Obj) as Family[],
    nodes,
    namespaces: raw.namespaces as Cluster["namespaces"],
    pods,
  };
}

/** The base cluster as the API server would hold it, for one address family. */
export function baseObjects(c: Cluster, family: Family): Obj[] {
  return [
    ...c.nodes.map((n) => ({
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: n.name, labels: n.labels },
      status: {
        addresses: [
          { type: "InternalIP", address: n.addresses[family] },
          { type: "Hostname", address: n.name },
        ],
      },
    })),
    ...c.namespaces.map((n) => ({
      apiVersion: "v1",
      kind: "Namespace",
      // The API server adds kubernetes.io/metadata.name to every namespace.
      metadata: { name: n.name, labels: { ...n.labels, "kubernetes.io/metadata.name": n.name } },
    })),
    ...c.pods.map((p) => ({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: p.name, namespace: p.namespace, labels: p.labels },
      spec: {
        nodeName: p.node,
        ...(p.hostNetwork ? { hostNetwork: true } : {}),
        containers: [
          {
            name: "agnhost",
            image: "registry.k8s.io/e2e-test-images/agnhost:2.45",
            ports: p.containerPorts.map((cp) => ({
              ...(cp.name ? { name: cp.name } : {}),
              containerPort: cp.port,
              protocol: cp.protocol,
            })),
          },
        ],
      },
      status: {
        phase: "Running",
        hostIP: c.nodes.find((n) => n.name === p.node)!.addresses[family],
        podIP: p.addresses[family],
        podIPs: [{ ip: p.addresses[family] }],
      },
    })),
  ];
}

export const podKeyOf = (p: ClusterPod) => `${p.namespace}/${p.name}`;

function podByName(c: Cluster, name: unknown, where: string): ClusterPod {
  const found = c.pods.filter((p) => p.name === name || podKeyOf(p) === name);
  if (found.length !== 1) throw new Error(`${where}: ${JSON.stringify(name)} names no single pod`);
  return found[0];
}

function parseChange(raw: unknown, where: string): Change {
  if (!isObj(raw)) throw new Error(`${where}: a change is a mapping`);
  const verbs = ["apply", "delete", "set", "swap", "insert"].filter((v) => v in raw);
  if (verbs.length !== 1)
    throw new Error(`${where}: a change has exactly one of apply|delete|set|swap|insert`);
  const verb = verbs[0];
  const allowed = { apply: ["apply"], delete: ["delete"], set: ["in", "set", "value"] }[verb] ?? [
    "in",
    verb,
    "value",
  ];
  keysOnly(raw, allowed, where);
  if (verb === "swap" && !(Array.isArray(raw.swap) && raw.swap.length === 2))
    throw new Error(`${where}: swap takes two paths`);
  if ((verb === "set" || verb === "insert") && !("value" in raw))
    throw new Error(`${where}: ${verb} needs a value`);
  return raw as Change;
}

export function loadCases(c: Cluster): Case[] {
  const dir = join(CONFORMANCE_DIR, "cases");
  const out: Case[] = [];
  for (const f of readdirSync(dir)
    .filter((n) => n.endsWith(".yaml"))
    .sort()) {
    const file = join(dir, f);
    // YAML aliases come back as shared objects: each case is copied through JSON, so no edit made
    // by a step can reach another place (or case) that used the same anchor.
    const raw = parse(readFileSync(file, "utf8"), { maxAliasCount: -1 }) as Obj;
    keysOnly(raw, ["anchors", "cases"], file);
    for (const rc of raw.cases as Obj[]) {
      const where = `${f}: ${rc.name}`;
      keysOnly(rc, ["name", "features", "derived", "objects", "steps"], where);
      const steps = (rc.steps as Obj[]).map((rs) => {
        const sw = `${where}: step ${JSON.stringify(rs.name)}`;
        keysOnly(rs, ["name", "changes", "expect"], sw);
        const expect = (rs.expect as Obj[]).map((cell) => {
          keysOnly(cell, ["from", "to", "port", "connected"], sw);
          const from = podByName(c, cell.from, sw);
          const to = podByName(c, cell.to, sw);
          const pp = parsePortProto(cell.port, sw);
          if (!to.serves.some((s) => s.port === pp.port && s.protocol === pp.protocol))
            throw new Error(`${sw}: ${podKeyOf(to)} serves nothing on ${portLabel(pp)}`);
          if (typeof cell.connected !== "boolean") throw new Error(`${sw}: connected is true or false`);
          return { from: podKeyOf(from), to: podKeyOf(to), ...pp, connected: cell.connected };
        });
        if (expect.length === 0) throw new Error(`${sw}: no expected cells`);
        return {
          name: rs.name as string,
          changes: ((rs.changes as unknown[]) ?? []).map((ch) => parseChange(ch, sw)),
          expect,
        };
      });
      out.push(
        JSON.parse(
          JSON.stringify({
            file: f,
            name: rc.name as string,
            features: rc.features as string[],
            derived: rc.derived === true,
            objects: rc.objects as Obj[],
            steps,
          }),
        ),
      );
    }
  }
  return out;
}

// ---- materializing the objects after each step --------------------------------------------------

const CLUSTER_SCOPED = new Set([
  "Namespace",
  "Node",
  "ClusterNetworkPolicy",
  "AdminNetworkPolicy",
  "BaselineAdminNetworkPolicy",
]);

/** "Kind/name" for cluster-scoped kinds, "Kind/namespace/name" otherwise. */
export function refOf(o: Obj): string {
  const m = o.metadata as Obj;
  return CLUSTER_SCOPED.has(o.kind as string)
    ? `${o.kind}/${m.name}`
    : `${o.kind}/${(m.namespace as string) || "default"}/${m.name}`;
}

/** JSON pointer (RFC 6901) into an object: the parent container and the last key. */
function locate(root: unknown, pointer: string, where: string): { parent: Obj | unknown[]; key: string } {
  if (!pointer.startsWith("/")) throw new Error(`${where}: ${pointer} is not a JSON pointer`);
  const parts = pointer
    .slice(1)
    .split("/")
    .map((p) => p.replaceAll("~1", "/").replaceAll("~0", "~"));
  let cur = root;
  for (const p of parts.slice(0, -1)) {
    cur = (cur as Obj)?.[p];
    if (cur === undefined || cur === null || typeof cur !== "object")
      throw new Error(`${where}: ${pointer}: nothing at ${p}`);
  }
  return { parent: cur as Obj | unknown[], key: parts[parts.length - 1] };
}

function arrayIndex(parent: unknown, key: string, max: number, where: string): number {
  const i = Number(key);
  if (!Array.isArray(parent) || !Number.isInteger(i) || i < 0 || i > max)
    throw new Error(`${where}: ${key} is no index of that list`);
  return i;
}

/**
 * A fresh copy of `v` with `${podCIDR:pod}` replaced by the pod's address in this family and a host
 * mask, as upstream builds it from status.podIP.
 */
function expand(v: unknown, c: Cluster, family: Family, where: string): unknown {
  if (typeof v === "string")
    return v.replace(/\$\{podCIDR:([\w./-]+)\}/g, (_, name) => {
      const ip = podByName(c, name, where).addresses[family];
      return `${ip}/${family === "ipv4" ? 32 : 128}`;
    });
  if (Array.isArray(v)) return v.map((x) => expand(x, c, family, where));
  if (isObj(v))
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, expand(x, c, family, where)]));
  return v;
}

function applyChange(state: Map<string, Obj>, ch: Change, c: Cluster, family: Family, where: string): void {
  if ("apply" in ch) {
    const o = expand(ch.apply, c, family, where) as Obj;
    state.set(refOf(o), o);
    return;
  }
  if ("delete" in ch) {
    if (!state.delete(ch.delete)) throw new Error(`${where}: delete: no ${ch.delete}`);
    return;
  }
  const target = state.get(ch.in);
  if (!target) throw new Error(`${where}: no ${ch.in}`);
  if ("set" in ch) {
    const { parent, key } = locate(target, ch.set, where);
    if (Array.isArray(parent))
      parent[arrayIndex(parent, key, parent.length - 1, where)] = expand(ch.value, c, family, where);
    else parent[key] = expand(ch.value, c, family, where);
  } else if ("swap" in ch) {
    const a = locate(target, ch.swap[0], where);
    const b = locate(target, ch.swap[1], where);
    if (a.parent !== b.parent) throw new Error(`${where}: swap: two elements of one list`);
    const list = a.parent as unknown[];
    const i = arrayIndex(list, a.key, list.length - 1, where);
    const j = arrayIndex(list, b.key, list.length - 1, where);
    [list[i], list[j]] = [list[j], list[i]];
  } else {
    const { parent, key } = locate(target, ch.insert, where);
    (parent as unknown[]).splice(
      arrayIndex(parent, key, (parent as unknown[]).length, where),
      0,
      expand(ch.value, c, family, where),
    );
  }
}

/**
 * The objects in force at each step of a case (the base cluster, the case's objects, every change
 * so far), grouped: a step without changes sees the same objects as the step before it.
 */
export function stateGroups(c: Cluster, k: Case, family: Family): StateGroup[] {
  const state = new Map<string, Obj>();
  for (const o of [...baseObjects(c, family), ...k.objects])
    state.set(refOf(o), expand(o, c, family, k.name) as Obj);
  const groups: StateGroup[] = [];
  for (const step of k.steps) {
    for (const ch of step.changes) applyChange(state, ch, c, family, `${k.file}: ${k.name}: ${step.name}`);
    if (step.changes.length > 0 || groups.length === 0)
      groups.push({ steps: [], objects: structuredClone([...state.values()]), cells: [], ports: [] });
    const g = groups[groups.length - 1];
    g.steps.push(step);
    g.cells.push(...step.expect);
    for (const cell of step.expect)
      if (!g.ports.some((p) => p.port === cell.port && p.protocol === cell.protocol))
        g.ports.push({ port: cell.port, protocol: cell.protocol });
  }
  return groups;
}

/** A fresh directory holding `objects` as one multi-document manifest, for `podwall -f DIR`. */
export function writeManifestDir(objects: readonly Obj[], prefix = "pw-cnp-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  writeFileSync(join(dir, "objects.yaml"), objects.map((o) => stringify(o)).join("---\n"));
  return dir;
}
