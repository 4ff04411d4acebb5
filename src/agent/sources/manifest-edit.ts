/**
 * manifest-edit: a what-if on a cluster as a ManifestSet: objects created or replaced by
 * kind/namespace/name (as `kubectl apply` would leave them), and objects deleted.
 *
 * Owns: object identity across every kind manifests.ts reads (Namespaces, Pods and Nodes, and the
 * policy kinds: NetworkPolicies by namespace, the cluster kinds by name), `Kind/namespace/name`
 * references, and what a delete takes with it: deleting a Namespace deletes its Pods and
 * NetworkPolicies, as the API server's namespace controller does.
 * May not: read files or talk to a cluster; sets are never changed in place.
 */
import { POLICY_KINDS } from "../../compiler/kinds/index.js";
import type { PolicyKind } from "../../compiler/rule-model.js";
import type { ManifestPolicy, ManifestSet } from "./manifests.js";

export type ObjectKind = "Namespace" | "Pod" | "Node" | PolicyKind;

export interface ObjectRef {
  kind: ObjectKind;
  /** "" for cluster-scoped kinds. */
  namespace: string;
  name: string;
}

const CLUSTER_SCOPED = new Set<string>([
  "Namespace",
  "Node",
  ...Object.keys(POLICY_KINDS).filter((k) => k !== "NetworkPolicy"),
]);

/** Spellings a reference may use for a kind: the kind, its plural resource, kubectl's short names. */
const KIND_NAMES = new Map<string, ObjectKind>([
  ["namespace", "Namespace"],
  ["namespaces", "Namespace"],
  ["ns", "Namespace"],
  ["pod", "Pod"],
  ["pods", "Pod"],
  ["po", "Pod"],
  ["node", "Node"],
  ["nodes", "Node"],
  ["no", "Node"],
  ["netpol", "NetworkPolicy"],
  ...Object.entries(POLICY_KINDS).flatMap(([kind, e]): [string, ObjectKind][] => [
    [kind.toLowerCase(), kind as PolicyKind],
    [e.resource, kind as PolicyKind],
  ]),
]);

export function refText(r: ObjectRef): string {
  return r.namespace ? `${r.kind}/${r.namespace}/${r.name}` : `${r.kind}/${r.name}`;
}

/** "Pod/ns/name", "NetworkPolicy/ns/name", "Namespace/name", "ClusterNetworkPolicy/name"; or an error text. */
export function parseObjectRef(s: string): ObjectRef | string {
  const parts = s.split("/");
  const kind = KIND_NAMES.get((parts[0] ?? "").toLowerCase());
  if (!kind)
    return `${JSON.stringify(s)}: unknown kind ${JSON.stringify(parts[0])} (Namespace, Pod, Node, ${Object.keys(POLICY_KINDS).join(", ")})`;
  const scoped = CLUSTER_SCOPED.has(kind);
  const want = scoped ? 2 : 3;
  if (parts.length !== want || parts.slice(1).some((p) => p === ""))
    return `${JSON.stringify(s)}: a ${kind} is named ${scoped ? `${kind}/name` : `${kind}/namespace/name`}`;
  return scoped ? { kind, namespace: "", name: parts[1] } : { kind, namespace: parts[1], name: parts[2] };
}

function policyRef(p: ManifestPolicy): string {
  return refText({ kind: p.kind, namespace: p.namespace, name: p.name });
}

/** Every object of `set`, keyed by its reference text. */
function refsOf(set: ManifestSet): Set<string> {
  const out = new Set<string>();
  for (const n of set.namespaces) out.add(refText({ kind: "Namespace", namespace: "", name: n.name }));
  for (const n of set.nodes) out.add(refText({ kind: "Node", namespace: "", name: n.name }));
  for (const p of set.pods) out.add(refText({ kind: "Pod", namespace: p.namespace, name: p.name }));
  for (const p of set.policies) out.add(policyRef(p));
  return out;
}

/**
 * `base` with every object of `overlay` created or replaced (same kind, namespace and name).
 * Replaced objects keep no trace; new ones come after the base's.
 */
export function applyObjects(base: ManifestSet, overlay: ManifestSet): ManifestSet {
  const replaced = refsOf(overlay);
  const keep = <T>(list: readonly T[], ref: (x: T) => string) => list.filter((x) => !replaced.has(ref(x)));
  return {
    namespaces: [
      ...keep(base.namespaces, (n) => refText({ kind: "Namespace", namespace: "", name: n.name })),
      ...overlay.namespaces,
    ],
    nodes: [
      ...keep(base.nodes, (n) => refText({ kind: "Node", namespace: "", name: n.name })),
      ...overlay.nodes,
    ],
    pods: [
      ...keep(base.pods, (p) => refText({ kind: "Pod", namespace: p.namespace, name: p.name })),
      ...overlay.pods,
    ],
    policies: [...keep(base.policies, policyRef), ...overlay.policies],
    warnings: [...base.warnings, ...overlay.warnings],
  };
}

/**
 * `set` without the referenced objects (a Namespace takes its Pods and NetworkPolicies with it).
 * References to objects `set` does not hold are returned in `missing`, so a typo is never a no-op.
 */
export function deleteObjects(
  set: ManifestSet,
  refs: readonly ObjectRef[],
): { set: ManifestSet; missing: ObjectRef[] } {
  const present = refsOf(set);
  // A namespace that only its pods or policies name exists too (manifests often leave it implied).
  for (const x of [...set.pods, ...set.policies.filter((p) => p.kind === "NetworkPolicy")])
    present.add(refText({ kind: "Namespace", namespace: "", name: x.namespace }));
  const missing = refs.filter((r) => !present.has(refText(r)));
  const gone = new Set(refs.map(refText));
  const goneNs = new Set(refs.filter((r) => r.kind === "Namespace").map((r) => r.name));
  return {
    missing,
    set: {
      namespaces: set.namespaces.filter((n) => !goneNs.has(n.name)),
      nodes: set.nodes.filter((n) => !gone.has(refText({ kind: "Node", namespace: "", name: n.name }))),
      pods: set.pods.filter(
        (p) =>
          !goneNs.has(p.namespace) &&
          !gone.has(refText({ kind: "Pod", namespace: p.namespace, name: p.name })),
      ),
      policies: set.policies.filter(
        (p) => !(p.kind === "NetworkPolicy" && goneNs.has(p.namespace)) && !gone.has(policyRef(p)),
      ),
      warnings: [...set.warnings],
    },
  };
}
