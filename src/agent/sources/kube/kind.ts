/**
 * kube/kind: the contract of one watched kind, and what the informer cache holds per object.
 *
 * Owns: `KindHandler` (where the kind lives in the API, how a raw object becomes the value the sink
 * takes, how an upsert or delete reaches the sink) and `CachedObject` (identity, resourceVersion and
 * the converted value or the reason it was rejected). Adding a kind is one module under kinds/ plus
 * its line in kinds/index.ts.
 * May not: do I/O.
 */
import type { KubernetesObject } from "@kubernetes/client-node";
import type { ClusterSink, ObjectKind } from "../../cluster-events.js";
import { isObj } from "./list-reader.js";

export interface ObjectIdentity {
  name: string;
  namespace?: string;
  resourceVersion?: string;
}

/** What the informer cache holds per object: identity, RV, and the converted value or why not. */
export interface CachedObject extends KubernetesObject {
  metadata: ObjectIdentity;
  value?: unknown;
}

export interface KindLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** What a kind's handlers may use besides the sink. */
export interface KindContext {
  sink: ClusterSink;
  log: KindLogger | undefined;
  /** This node's name (the Node kind watches only it). */
  nodeName: string;
  /** This node's Node object exists in the API, as of the last event (the Node kind keeps it). */
  nodeSeen: boolean;
}

export interface KindHandler {
  kind: ObjectKind;
  /** Collection path, e.g. /api/v1/pods. */
  path: string;
  fieldSelector?(ctx: KindContext): string;
  /**
   * Served only where a CRD is installed: "not found" means an empty kind (logged once), looked for
   * again every little while, and picked up when it appears.
   */
  optional?: boolean;
  /** The value the cache keeps; thrown errors and returned Errors reject the object. Optional: identity only. */
  convert?(raw: unknown): unknown;
  upsert(ctx: KindContext, value: unknown, id: ObjectIdentity): void;
  remove(ctx: KindContext, id: ObjectIdentity): void;
}

export function identityOf(raw: unknown): ObjectIdentity {
  const meta = isObj(raw) && isObj(raw.metadata) ? raw.metadata : {};
  const out: ObjectIdentity = { name: typeof meta.name === "string" ? meta.name : "" };
  if (typeof meta.namespace === "string") out.namespace = meta.namespace;
  if (typeof meta.resourceVersion === "string") out.resourceVersion = meta.resourceVersion;
  return out;
}

/** "ns/name" or "name", for logs and `rejected`. */
export function keyOf(id: ObjectIdentity): string {
  return id.namespace ? `${id.namespace}/${id.name}` : id.name;
}

export function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

/** Convert a raw API object into its cache entry; a conversion failure is kept as the value. */
export function toCached(handler: KindHandler, raw: unknown): CachedObject {
  const entry: CachedObject = { metadata: identityOf(raw) };
  if (!handler.convert) return entry;
  try {
    entry.value = handler.convert(raw);
  } catch (e) {
    entry.value = asError(e);
  }
  return entry;
}
