/**
 * kube/kinds/namespace: Namespaces, normalized to NamespaceInfo (name and labels).
 * May not: judge policy.
 */
import type { NamespaceInfo } from "../../../../compiler/model.js";
import { namespaceFromK8s } from "../../../../compiler/normalize.js";
import type { KindHandler } from "../kind.js";

export const namespaceKind: KindHandler = {
  kind: "Namespace",
  path: "/api/v1/namespaces",
  convert: namespaceFromK8s,
  upsert: (ctx, value) => ctx.sink.upsertNamespace(value as NamespaceInfo),
  remove: (ctx, id) => ctx.sink.deleteNamespace(id.name),
};
