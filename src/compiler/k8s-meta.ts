/**
 * k8s-meta: the API server's rules for names, labels and object metadata, and strict field checks.
 *
 * Owns: DNS-1123 labels and subdomains, qualified names (label and annotation keys), label values,
 * IANA port names, object metadata as the API server validates it (types, names, labels,
 * annotations), and known-field checks for the objects podwall interprets. Every other module asks
 * here; none re-spells a rule. These checks are what keeps object text out of kernel input: a name
 * that passes them cannot hold a newline, a quote or a space.
 * May not: do I/O. Throws InputError naming the object and the field.
 */
import { InputError } from "./errors.js";

export type Obj = Record<string, unknown>;

export const isObj = (v: unknown): v is Obj => v !== null && typeof v === "object" && !Array.isArray(v);

/** An own property, never one inherited from Object.prototype ("constructor", "toString", ...). */
export function own(o: Obj, key: string): unknown {
  return Object.hasOwn(o, key) ? o[key] : undefined;
}

/** Absent and JSON null read the same, as the API server's decoder reads them. */
export function present(o: Obj, key: string): boolean {
  const v = own(o, key);
  return v !== undefined && v !== null;
}

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const QUALIFIED_NAME_PART = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

/** Each returns an error message, or undefined when the value is valid. */
export function dns1123Label(s: string): string | undefined {
  if (s.length > 63) return "must be no more than 63 characters";
  if (!DNS1123_LABEL.test(s))
    return "must be a lowercase RFC 1123 label (a-z, 0-9 and '-', starting and ending with a letter or digit)";
  return undefined;
}

export function dns1123Subdomain(s: string): string | undefined {
  if (s.length > 253) return "must be no more than 253 characters";
  if (!DNS1123_SUBDOMAIN.test(s))
    return "must be a lowercase RFC 1123 subdomain (a-z, 0-9, '-' and '.', starting and ending with a letter or digit)";
  return undefined;
}

/** Label and annotation keys: `[prefix/]name`, prefix a DNS subdomain, name up to 63 characters. */
export function qualifiedName(s: string): string | undefined {
  const parts = s.split("/");
  let name = s;
  if (parts.length === 2) {
    if (parts[0].length === 0) return "prefix part must be non-empty";
    const e = dns1123Subdomain(parts[0]);
    if (e) return `prefix part ${e}`;
    name = parts[1];
  } else if (parts.length > 2) {
    return "a qualified name may contain at most one '/'";
  }
  if (name.length === 0) return "name part must be non-empty";
  if (name.length > 63) return "name part must be no more than 63 characters";
  if (!QUALIFIED_NAME_PART.test(name))
    return "name part must consist of alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric";
  return undefined;
}

export function labelValue(s: string): string | undefined {
  if (s.length > 63) return "must be no more than 63 characters";
  if (!LABEL_VALUE.test(s))
    return "must be empty or consist of alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric";
  return undefined;
}

/** IANA service names, as container ports and NetworkPolicy ports name them. */
export function portName(s: string): string | undefined {
  if (s.length === 0 || s.length > 15) return "must be 1-15 characters";
  if (!/^[-a-z0-9]+$/.test(s)) return "must contain only lowercase letters, digits and '-'";
  if (!/[a-z]/.test(s)) return "must contain at least one letter";
  if (s.startsWith("-") || s.endsWith("-")) return "must not begin or end with '-'";
  if (s.includes("--")) return "must not contain consecutive '-'";
  return undefined;
}

/** Kubernetes field paths, joined so that odd keys stay readable: `labels["a b"]`. */
export function fieldPath(base: string, key: string): string {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(key) ? `${base}.${key}` : `${base}[${JSON.stringify(key)}]`;
}

/** A string-to-string map of labels, every key and value as the API server requires. */
export function readLabels(raw: unknown, object: string, field: string): Record<string, string> {
  if (raw === undefined || raw === null) return {};
  if (!isObj(raw)) throw new InputError(object, field, "must be a map of strings");
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw)) {
    const f = fieldPath(field, k);
    if (typeof v !== "string") throw new InputError(object, f, "label values must be strings");
    const ke = qualifiedName(k);
    if (ke) throw new InputError(object, f, `invalid label key ${JSON.stringify(k)}: ${ke}`);
    const ve = labelValue(v);
    if (ve) throw new InputError(object, f, `invalid label value ${JSON.stringify(v)}: ${ve}`);
    out[k] = v;
  }
  return out;
}

const MAX_ANNOTATIONS_BYTES = 256 * 1024;

function readAnnotations(raw: unknown, object: string): Record<string, string> {
  if (raw === undefined || raw === null) return {};
  if (!isObj(raw)) throw new InputError(object, "metadata.annotations", "must be a map of strings");
  const out: Record<string, string> = {};
  let size = 0;
  for (const [k, v] of Object.entries(raw)) {
    const f = fieldPath("metadata.annotations", k);
    if (typeof v !== "string") throw new InputError(object, f, "annotation values must be strings");
    const ke = qualifiedName(k.toLowerCase());
    if (ke) throw new InputError(object, f, `invalid annotation key ${JSON.stringify(k)}: ${ke}`);
    size += k.length + v.length;
    out[k] = v;
  }
  if (size > MAX_ANNOTATIONS_BYTES)
    throw new InputError(object, "metadata.annotations", "may not be more than 256 KiB in total");
  return out;
}

/** What the API server knows of a kind: its group/version, scope and name rule. */
export interface KindInfo {
  kind: string;
  apiVersion: string;
  namespaced: boolean;
  /** Namespaces are DNS-1123 labels; most other objects are DNS-1123 subdomains. */
  nameRule: "label" | "subdomain";
}

export interface ObjectMeta {
  name: string;
  /** "" for cluster-scoped kinds. */
  namespace: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  uid?: string;
}

export interface MetaOptions {
  /**
   * Manifests must say apiVersion and kind (kubectl refuses them otherwise); items of an API
   * server's list response carry neither, so the informers pass false.
   */
  requireTypeMeta: boolean;
}

const STRING_META = ["uid", "resourceVersion", "generateName", "selfLink", "creationTimestamp"];

/** Human name of an object for errors: "NetworkPolicy ns/name", "Namespace x". */
export function objectName(kind: string, namespace: string, name: string): string {
  const n = name === "" ? "(no name)" : name;
  return namespace ? `${kind} ${namespace}/${n}` : `${kind} ${n}`;
}

/**
 * Validate type meta and metadata as the API server does (types, name and namespace rules, label
 * and annotation keys and values) and return them. A namespaced object without a namespace is in
 * "default", as kubectl would create it.
 */
export function readObjectMeta(raw: unknown, kind: KindInfo, opts: MetaOptions): ObjectMeta {
  if (!isObj(raw)) throw new InputError(kind.kind, "", "must be an object");
  const av = own(raw, "apiVersion");
  const k = own(raw, "kind");
  const m = own(raw, "metadata");
  const meta = isObj(m) ? m : undefined;
  const rawName = meta ? own(meta, "name") : undefined;
  const rawNs = meta ? own(meta, "namespace") : undefined;
  const name = typeof rawName === "string" ? rawName : "";
  const namespace = !kind.namespaced ? "" : typeof rawNs === "string" && rawNs !== "" ? rawNs : "default";
  const object = objectName(kind.kind, namespace, name);
  if (av !== undefined && typeof av !== "string")
    throw new InputError(object, "apiVersion", "must be a string");
  if (k !== undefined && typeof k !== "string") throw new InputError(object, "kind", "must be a string");
  if (opts.requireTypeMeta && av === undefined) throw new InputError(object, "apiVersion", "missing");
  if (av !== undefined && av !== kind.apiVersion)
    throw new InputError(
      object,
      "apiVersion",
      `${JSON.stringify(av)} is not a version podwall reads for ${kind.kind} (${kind.apiVersion})`,
    );
  if (m === undefined || m === null) throw new InputError(object, "metadata", "missing");
  if (!meta) throw new InputError(object, "metadata", "must be an object");
  if (rawName === undefined || rawName === null || rawName === "")
    throw new InputError(object, "metadata.name", "missing");
  if (typeof rawName !== "string") throw new InputError(object, "metadata.name", "must be a string");
  const ne = kind.nameRule === "label" ? dns1123Label(name) : dns1123Subdomain(name);
  if (ne) throw new InputError(object, "metadata.name", `invalid name ${JSON.stringify(name)}: ${ne}`);
  if (rawNs !== undefined && rawNs !== null) {
    if (typeof rawNs !== "string") throw new InputError(object, "metadata.namespace", "must be a string");
    const e = rawNs === "" ? undefined : dns1123Label(rawNs);
    if (e)
      throw new InputError(object, "metadata.namespace", `invalid namespace ${JSON.stringify(rawNs)}: ${e}`);
  }
  for (const f of STRING_META) {
    const v = own(meta, f);
    if (v !== undefined && v !== null && typeof v !== "string")
      throw new InputError(object, `metadata.${f}`, "must be a string");
  }
  const labels = readLabels(own(meta, "labels"), object, "metadata.labels");
  const annotations = readAnnotations(own(meta, "annotations"), object);
  const uid = own(meta, "uid");
  return {
    name,
    namespace,
    labels,
    annotations,
    ...(typeof uid === "string" && uid ? { uid } : {}),
  };
}

/**
 * Fields of `o` outside `known`. With `strict` (manifests, read as kubectl's default strict field
 * validation reads them) an unknown field is an error; otherwise the caller gets the list, so it
 * can fail closed on a field a newer API version added.
 */
export function unknownFields(
  o: Obj,
  known: readonly string[],
  object: string,
  field: string,
  strict: boolean,
): string[] {
  const out: string[] = [];
  for (const k of Object.keys(o)) {
    if (known.includes(k)) continue;
    if (strict) throw new InputError(object, fieldPath(field, k), "unknown field");
    out.push(fieldPath(field, k));
  }
  return out;
}

/** An integer in [min, max], or an InputError naming the field. */
export function readInt(v: unknown, min: number, max: number, object: string, field: string): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max)
    throw new InputError(object, field, `must be an integer ${min}-${max}, got ${JSON.stringify(v)}`);
  return v;
}

/** A list (absent and null read as empty); `max` as the schema's maxItems. */
export function readList(
  v: unknown,
  object: string,
  field: string,
  max = Number.POSITIVE_INFINITY,
): unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new InputError(object, field, "must be a list");
  if (v.length > max) throw new InputError(object, field, `must have at most ${max} items, has ${v.length}`);
  return v;
}

/** Each item of a list (absent and null read as empty) as an object with its field path. */
export function eachObject<T>(
  v: unknown,
  object: string,
  field: string,
  fn: (o: Obj, f: string, i: number) => T,
  max = Number.POSITIVE_INFINITY,
): T[] {
  return readList(v, object, field, max).map((item, i) => {
    const f = `${field}[${i}]`;
    if (!isObj(item)) throw new InputError(object, f, "must be an object");
    return fn(item, f, i);
  });
}
