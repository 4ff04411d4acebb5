/**
 * kube/kinds/pod: Pods, normalized to PodInfo the moment they are parsed (the cache keeps no V1Pod).
 * May not: judge policy; a pod that cannot be normalized is rejected by its stream.
 */
import type { PodInfo } from "../../../../compiler/model.js";
import { podFromK8s } from "../../../../compiler/normalize.js";
import type { KindHandler } from "../kind.js";

export const podKind: KindHandler = {
  kind: "Pod",
  path: "/api/v1/pods",
  convert: podFromK8s,
  upsert: (ctx, value) => ctx.sink.upsertPod(value as PodInfo),
  remove: (ctx, id) => ctx.sink.deletePod(id.namespace ?? "", id.name),
};
