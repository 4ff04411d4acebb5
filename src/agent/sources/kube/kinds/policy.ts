/**
 * kube/kinds/policy: the policy kinds (NetworkPolicy, and the policy.networking.k8s.io kinds
 * ClusterNetworkPolicy, AdminNetworkPolicy and BaselineAdminNetworkPolicy), one handler each from
 * the compiler's kind registry. Objects are only trimmed here (managedFields, status and kubectl's
 * last-applied copy dropped); validation, defaulting and fail-closed reading are the compiler's, when
 * the table takes the object. The cluster kinds are served only where their CRDs are installed: the
 * stream treats "not found" as an empty kind and looks again (kube/stream.ts).
 * May not: compile the policy.
 */
import { POLICY_KINDS } from "../../../../compiler/kinds/index.js";
import type { PolicyKind } from "../../../../compiler/rule-model.js";
import type { KindHandler } from "../kind.js";
import { isObj, type Obj } from "../list-reader.js";

const LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration";

function trimmed(raw: unknown, kind: PolicyKind, apiVersion: string): Obj | Error {
  if (!isObj(raw)) return new Error("not an object");
  const meta = isObj(raw.metadata) ? raw.metadata : {};
  const m: Obj = {};
  for (const k of ["name", "namespace", "uid", "resourceVersion", "generation", "labels"] as const)
    if (meta[k] !== undefined) m[k] = meta[k];
  if (isObj(meta.annotations)) {
    const { [LAST_APPLIED]: _drop, ...rest } = meta.annotations;
    if (Object.keys(rest).length > 0) m.annotations = rest;
  }
  const out: Obj = { apiVersion, kind, metadata: m };
  if (Object.hasOwn(raw, "spec")) out.spec = raw.spec;
  return out;
}

function policyKind(kind: PolicyKind): KindHandler {
  const entry = POLICY_KINDS[kind];
  const [group, version] = entry.info.apiVersion.split("/");
  const namespaced = entry.info.namespaced;
  return {
    kind,
    path: `/apis/${group}/${version}/${entry.resource}`,
    // The cluster kinds exist only where their CRDs are installed.
    optional: kind !== "NetworkPolicy",
    convert: (raw) => trimmed(raw, kind, entry.info.apiVersion),
    upsert: (ctx, value) => ctx.sink.upsertPolicy(value, kind),
    remove: (ctx, id) => ctx.sink.deletePolicy(namespaced ? (id.namespace ?? "") : "", id.name, kind),
  };
}

export const networkPolicyKind = policyKind("NetworkPolicy");
export const clusterNetworkPolicyKind = policyKind("ClusterNetworkPolicy");
export const adminNetworkPolicyKind = policyKind("AdminNetworkPolicy");
export const baselineAdminNetworkPolicyKind = policyKind("BaselineAdminNetworkPolicy");
