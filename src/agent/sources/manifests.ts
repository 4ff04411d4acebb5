/**
 * manifests: Kubernetes manifest files (multi-document YAML or JSON, `kind: List`) -> cluster objects.
 *
 * Owns: parsing, splitting and sorting objects into Namespaces, Pods and NetworkPolicies, and errors
 * that name the file, the line, the object and the field. Policies are validated here (compilePolicy)
 * so a bad one is reported with its file before anything is compiled or programmed.
 * May not: build tables or touch the kernel; `simulate`, `render`, the lab and the file source call it.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { LineCounter, parseAllDocuments } from "yaml";
import { InputError } from "../../compiler/errors.js";
import type { NamespaceInfo, PodInfo } from "../../compiler/model.js";
import { namespaceFromK8s, podFromK8s } from "../../compiler/normalize.js";
import { compilePolicy } from "../../compiler/policy.js";

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

export interface ManifestSet {
  namespaces: NamespaceInfo[];
  pods: PodInfo[];
  /** Raw NetworkPolicy objects, already validated. */
  policies: Record<string, unknown>[];
  warnings: string[];
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => v !== null && typeof v === "object" && !Array.isArray(v);

export function emptyManifestSet(): ManifestSet {
  return { namespaces: [], pods: [], policies: [], warnings: [] };
}

/** A bad object met in tolerant mode: which one, so its last good version can be held. */
export interface ObjectProblem {
  kind: string;
  /** "ns/name" (namespaced kinds) or "name"; empty when the object has no name. */
  key: string;
  /** The same identity, unambiguously: "" for cluster-scoped kinds. */
  namespace: string;
  name: string;
  error: ManifestError;
}

/**
 * Parse one file's text into `into`. Throws ManifestError on malformed YAML, and on the first bad
 * object unless `onProblem` is given, in which case bad objects are reported and skipped.
 */
export function parseManifests(
  text: string,
  file: string,
  into: ManifestSet = emptyManifestSet(),
  onProblem?: (p: ObjectProblem) => void,
): ManifestSet {
  const lc = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lc, prettyErrors: false });
  const list = Array.isArray(docs) ? docs : [docs];
  for (const doc of list) {
    if (doc.errors.length > 0) {
      const e = doc.errors[0];
      const line = e.linePos?.[0]?.line ?? lc.linePos(e.pos[0]).line;
      throw new ManifestError(file, line, `malformed YAML: ${e.message.split("\n")[0]}`);
    }
    const line = doc.range ? lc.linePos(doc.contents?.range?.[0] ?? doc.range[0]).line : undefined;
    const value = doc.toJS({ maxAliasCount: 100 });
    if (value === null || value === undefined) continue;
    addObject(value, file, line, into, onProblem);
  }
  return into;
}

function objectIdentity(value: Obj): { key: string; namespace: string; name: string } {
  const meta = isObj(value.metadata) ? value.metadata : {};
  const name = typeof meta.name === "string" ? meta.name : "";
  if (value.kind === "Namespace" || !name) return { key: name, namespace: "", name };
  const namespace = typeof meta.namespace === "string" && meta.namespace ? meta.namespace : "default";
  return { key: `${namespace}/${name}`, namespace, name };
}

function addObject(
  value: unknown,
  file: string,
  line: number | undefined,
  into: ManifestSet,
  onProblem?: (p: ObjectProblem) => void,
): void {
  if (!isObj(value))
    throw new ManifestError(file, line, "a document must be a Kubernetes object (a mapping)");
  const kind = value.kind;
  if (typeof kind !== "string") throw new ManifestError(file, line, "object has no kind");
  if (kind === "List" || kind.endsWith("List")) {
    if (!Array.isArray(value.items)) throw new ManifestError(file, line, `${kind} has no items list`);
    for (const item of value.items) addObject(item, file, line, into, onProblem);
    return;
  }
  try {
    switch (kind) {
      case "Namespace":
        into.namespaces.push(namespaceFromK8s(value));
        return;
      case "Pod":
        into.pods.push(podFromK8s(value));
        return;
      case "NetworkPolicy":
        compilePolicy(value);
        into.policies.push(value);
        return;
      default: {
        const meta = isObj(value.metadata) ? value.metadata : {};
        into.warnings.push(
          `${file}${line ? `:${line}` : ""}: ignoring ${kind} ${String(meta.name ?? "")} (podwall reads Namespaces, Pods and NetworkPolicies)`,
        );
      }
    }
  } catch (e) {
    if (!(e instanceof InputError)) throw e;
    const err = new ManifestError(file, line, e.message);
    if (!onProblem) throw err;
    onProblem({ kind, ...objectIdentity(value), error: err });
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
