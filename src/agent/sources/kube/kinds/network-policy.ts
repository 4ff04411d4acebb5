/**
 * kube/kinds/network-policy: NetworkPolicies, shape-checked and trimmed (managedFields, status and
 * kubectl's last-applied copy are dropped); full validation is the compiler's, when the table takes it.
 * May not: compile the policy.
 */
import type { V1NetworkPolicy } from "@kubernetes/client-node";
import type { KindHandler } from "../kind.js";
import { isObj, type Obj } from "../list-reader.js";

const LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration";

/** Shape check and trim of a NetworkPolicy (full validation is the compiler's job). */
function policyValue(raw: unknown): V1NetworkPolicy | Error {
  if (!isObj(raw)) return new Error("not an object");
  const meta = raw.metadata;
  if (!isObj(meta) || typeof meta.name !== "string" || !meta.name) return new Error("metadata.name: missing");
  if (typeof meta.namespace !== "string" || !meta.namespace) return new Error("metadata.namespace: missing");
  const spec = raw.spec;
  if (!isObj(spec)) return new Error("spec: missing or not an object");
  if (!isObj(spec.podSelector)) return new Error("spec.podSelector: missing or not an object");
  for (const f of ["ingress", "egress"] as const) {
    const v = spec[f];
    if (v !== undefined && v !== null && (!Array.isArray(v) || !v.every(isObj))) {
      return new Error(`spec.${f}: must be a list of rules`);
    }
  }
  const types = spec.policyTypes;
  if (
    types !== undefined &&
    types !== null &&
    (!Array.isArray(types) || types.some((t) => typeof t !== "string"))
  ) {
    return new Error("spec.policyTypes: must be a list of strings");
  }
  const m: Obj = { name: meta.name, namespace: meta.namespace };
  for (const k of ["uid", "resourceVersion", "generation", "labels"] as const)
    if (meta[k] !== undefined) m[k] = meta[k];
  if (isObj(meta.annotations)) {
    const { [LAST_APPLIED]: _drop, ...rest } = meta.annotations;
    if (Object.keys(rest).length > 0) m.annotations = rest;
  }
  return { apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: m, spec } as V1NetworkPolicy;
}

export const networkPolicyKind: KindHandler = {
  kind: "NetworkPolicy",
  path: "/apis/networking.k8s.io/v1/networkpolicies",
  convert: policyValue,
  upsert: (ctx, value) => ctx.sink.upsertPolicy(value as V1NetworkPolicy),
  remove: (ctx, id) => ctx.sink.deletePolicy(id.namespace ?? "", id.name),
};
