/**
 * manifests: Kubernetes manifest files (multi-document YAML or JSON, `kind: List`) -> cluster objects.
 *
 * Owns: reading YAML exactly where kubectl and podwall agree, and refusing the rest. kubectl reads
 * YAML 1.1 (`0120` is 80, `yes` is true) where a YAML 1.2 reader sees 120 and "yes"; each document
 * is parsed both ways and a document the two read differently is an error naming the field, never a
 * guess. Aliases are bounded (no expansion bombs), cycles refused. Objects are sorted into
 * Namespaces, Pods, Nodes and the policy kinds, each validated as the API server and kubectl would
 * (metadata, strict fields for the policy kinds), with errors naming the file, line, object and field.
 * Also `tableFromManifests`: the one place a whole set becomes a compiled table (simulate, render,
 * the lab, the demo).
 * May not: touch the kernel. Every error it raises is a ManifestError: a bad file is reported, it
 * never escapes as a crash.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { LineCounter, parseAllDocuments } from "yaml";
import { InputError } from "../../compiler/errors.js";
import { isObj, type Obj } from "../../compiler/k8s-meta.js";
import {
  compilePolicyObject,
  FROM_MANIFEST,
  isPolicyKind,
  type ParseOptions,
} from "../../compiler/kinds/index.js";
import type { NamespaceInfo, NodeInfo, PodInfo } from "../../compiler/model.js";
import { namespaceFromK8s, nodeFromK8s, podFromK8s } from "../../compiler/normalize.js";
import type { PolicyKind } from "../../compiler/rule-model.js";
import { PolicyTable } from "../../compiler/table.js";

export class ManifestError extends Error {
  constructor(
    readonly file: string,
    readonly line: number | undefined,
    detail: string,
  ) {
    super(`${file}${line ? `:${line}` : ""}: ${detail}`);
    this.name = "ManifestError";
  }
}

export interface ManifestPolicy {
  kind: PolicyKind;
  /** Namespace ("" for cluster-scoped kinds) and name, as validated. */
  namespace: string;
  name: string;
  obj: Obj;
  /** How it is compiled: as a manifest (the default, strict) or as an API server's object (FROM_API). */
  parse?: ParseOptions;
}

export interface ManifestSet {
  namespaces: NamespaceInfo[];
  pods: PodInfo[];
  nodes: NodeInfo[];
  /** Policy objects of every kind, already validated. */
  policies: ManifestPolicy[];
  warnings: string[];
}

export function emptyManifestSet(): ManifestSet {
  return { namespaces: [], pods: [], nodes: [], policies: [], warnings: [] };
}

/** A bad object met in tolerant mode: which one, so its last good version can be held. */
export interface ObjectProblem {
  kind: string;
  /** "ns/name" (namespaced kinds) or "name"; empty when the object has no name. */
  key: string;
  /** The same identity, unambiguously: namespace "" for cluster-scoped kinds. */
  namespace: string;
  name: string;
  error: ManifestError;
}

const MAX_ALIASES = 100;
const MAX_DEPTH = 64;

/** The first path where two parses differ, or undefined when they agree. */
function firstDifference(a: unknown, b: unknown, path: string): string | undefined {
  if (Object.is(a, b)) return undefined;
  if (Array.isArray(a) && Array.isArray(b)) {
    if (a.length !== b.length) return path || "(document)";
    for (let i = 0; i < a.length; i++) {
      const d = firstDifference(a[i], b[i], `${path}[${i}]`);
      if (d !== undefined) return d;
    }
    return undefined;
  }
  if (isObj(a) && isObj(b)) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    for (const k of keys) {
      const d = firstDifference(a[k], b[k], path ? `${path}.${k}` : k);
      if (d !== undefined) return d;
    }
    return undefined;
  }
  return path || "(document)";
}

function at(v: unknown, path: string): unknown {
  let cur = v;
  for (const m of path.matchAll(/([^.[\]]+)|\[(\d+)\]/g)) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<string, unknown>)[m[1] ?? m[2]];
  }
  return cur;
}

/** Refuse cyclic or absurdly deep values (a self-referencing alias), before anything walks them. */
function checkShape(v: unknown, depth: number, stack: Set<object>): string | undefined {
  if (v === null || typeof v !== "object") return undefined;
  if (depth > MAX_DEPTH) return `nested deeper than ${MAX_DEPTH} levels`;
  if (stack.has(v)) return "an alias refers to itself (a cycle)";
  stack.add(v);
  for (const child of Array.isArray(v) ? v : Object.values(v)) {
    const e = checkShape(child, depth + 1, stack);
    if (e) return e;
  }
  stack.delete(v);
  return undefined;
}

/**
 * Parse one file's text into `into`. Throws ManifestError on malformed or ambiguous YAML, and on the
 * first bad object unless `onProblem` is given, in which case bad objects are reported and skipped.
 */
export function parseManifests(
  text: string,
  file: string,
  into: ManifestSet = emptyManifestSet(),
  onProblem?: (p: ObjectProblem) => void,
): ManifestSet {
  const lc = new LineCounter();
  let docs12: ReturnType<typeof parseAllDocuments>;
  let docs11: ReturnType<typeof parseAllDocuments>;
  try {
    const src = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
    docs12 = parseAllDocuments(src, { lineCounter: lc, prettyErrors: false, merge: true, uniqueKeys: true });
    docs11 = parseAllDocuments(src, { version: "1.1", prettyErrors: false, merge: true, uniqueKeys: true });
  } catch (e) {
    throw new ManifestError(file, undefined, `malformed YAML: ${(e as Error).message.split("\n")[0]}`);
  }
  const list12 = Array.isArray(docs12) ? docs12 : [docs12];
  const list11 = Array.isArray(docs11) ? docs11 : [docs11];
  list12.forEach((doc, i) => {
    if (doc.errors.length > 0) {
      const e = doc.errors[0];
      const line = e.linePos?.[0]?.line ?? lc.linePos(e.pos[0]).line;
      throw new ManifestError(file, line, `malformed YAML: ${e.message.split("\n")[0]}`);
    }
    const line = doc.range ? lc.linePos(doc.contents?.range?.[0] ?? doc.range[0]).line : undefined;
    let value: unknown;
    let value11: unknown;
    try {
      value = doc.toJS({ maxAliasCount: MAX_ALIASES });
      value11 = list11[i]?.toJS({ maxAliasCount: MAX_ALIASES });
    } catch (e) {
      throw new ManifestError(file, line, `malformed YAML: ${(e as Error).message.split("\n")[0]}`);
    }
    const shape = checkShape(value, 0, new Set());
    if (shape) throw new ManifestError(file, line, `malformed YAML: ${shape}`);
    const diff = firstDifference(value, value11, "");
    if (diff !== undefined) {
      const fmt = (v: unknown) =>
        typeof v === "string" ? JSON.stringify(v) : String(JSON.stringify(v) ?? v);
      throw new ManifestError(
        file,
        line,
        `ambiguous YAML at ${diff}: kubectl (YAML 1.1) reads ${fmt(at(value11, diff))} where YAML 1.2 reads ${fmt(at(value, diff))}; write it so both agree (quote a string, drop a leading zero)`,
      );
    }
    if (value === null || value === undefined) return;
    addObject(value, file, line, into, onProblem);
  });
  return into;
}

function objectIdentity(kind: string, value: Obj): { key: string; namespace: string; name: string } {
  const meta = isObj(value.metadata) ? value.metadata : {};
  const name = typeof meta.name === "string" ? meta.name : "";
  if (kind === "Namespace" || kind === "Node" || (isPolicyKind(kind) && kind !== "NetworkPolicy") || !name)
    return { key: name, namespace: "", name };
  const namespace = typeof meta.namespace === "string" && meta.namespace ? meta.namespace : "default";
  return { key: `${namespace}/${name}`, namespace, name };
}

const MANIFEST = { requireTypeMeta: true };

function addObject(
  value: unknown,
  file: string,
  line: number | undefined,
  into: ManifestSet,
  onProblem?: (p: ObjectProblem) => void,
): void {
  if (!isObj(value))
    throw new ManifestError(file, line, "a document must be a Kubernetes object (a mapping)");
  const kind = Object.hasOwn(value, "kind") ? value.kind : undefined;
  if (typeof kind !== "string" || kind === "") throw new ManifestError(file, line, "object has no kind");
  if (kind === "List" || kind.endsWith("List")) {
    if (!Array.isArray(value.items)) throw new ManifestError(file, line, `${kind} has no items list`);
    for (const item of value.items) addObject(item, file, line, into, onProblem);
    return;
  }
  try {
    if (isPolicyKind(kind)) {
      const spec = compilePolicyObject(kind, value, FROM_MANIFEST);
      into.policies.push({ kind, namespace: spec.namespace, name: spec.name, obj: value });
      for (const n of spec.notEnforced)
        into.warnings.push(`${file}${line ? `:${line}` : ""}: ${kind} ${spec.name}: ${n}`);
      return;
    }
    switch (kind) {
      case "Namespace":
        into.namespaces.push(namespaceFromK8s(value, MANIFEST));
        return;
      case "Pod":
        into.pods.push(podFromK8s(value, MANIFEST));
        return;
      case "Node":
        into.nodes.push(nodeFromK8s(value, MANIFEST));
        return;
      default: {
        const meta = isObj(value.metadata) ? value.metadata : {};
        into.warnings.push(
          `${file}${line ? `:${line}` : ""}: ignoring ${kind} ${String(meta.name ?? "")} (podwall reads Namespaces, Pods, Nodes, NetworkPolicies and the ClusterNetworkPolicy kinds)`,
        );
      }
    }
  } catch (e) {
    if (!(e instanceof InputError))
      throw new ManifestError(file, line, `cannot read ${kind}: ${(e as Error).message}`);
    const err = new ManifestError(file, line, e.message);
    if (!onProblem) throw err;
    onProblem({ kind, ...objectIdentity(kind, value), error: err });
  }
}

const MANIFEST_EXT = /\.(ya?ml|json)$/i;

/** Files as given; a directory stands for its *.yaml, *.yml and *.json files, sorted by name. */
export function expandManifestPaths(paths: readonly string[]): string[] {
  const out: string[] = [];
  for (const p of paths) {
    let isDir = false;
    try {
      isDir = statSync(p).isDirectory();
    } catch {
      // Reported by the reader with the file name.
    }
    if (!isDir) out.push(p);
    else
      for (const f of readdirSync(p)
        .filter((n) => MANIFEST_EXT.test(n))
        .sort())
        out.push(join(p, f));
  }
  return out;
}

export function loadManifestFiles(paths: readonly string[]): ManifestSet {
  const set = emptyManifestSet();
  for (const f of expandManifestPaths(paths)) {
    let text: string;
    try {
      text = readFileSync(f, "utf8");
    } catch (e) {
      throw new ManifestError(
        f,
        undefined,
        `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      );
    }
    parseManifests(text, f, set);
  }
  return set;
}

/** Build a compiled table from a manifest set (the same path the file source takes, all at once). */
export function tableFromManifests(set: ManifestSet): PolicyTable {
  const table = new PolicyTable();
  for (const ns of set.namespaces) table.upsertNamespace(ns);
  for (const node of set.nodes) table.upsertNode(node);
  for (const pod of set.pods) table.upsertPod(pod);
  for (const pol of set.policies) table.upsertPolicy(pol.obj, pol.parse ?? FROM_MANIFEST, pol.kind);
  return table;
}
