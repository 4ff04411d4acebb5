/**
 * kube/kinds/node: this node's own Node object (fieldSelector on its name). Only its presence is
 * tracked (a missing Node object is logged); nothing reaches the sink.
 * May not: watch other nodes.
 */
import type { KindHandler } from "../kind.js";

export const nodeKind: KindHandler = {
  kind: "Node",
  path: "/api/v1/nodes",
  fieldSelector: (ctx) => `metadata.name=${ctx.nodeName}`,
  upsert(ctx, _value, id) {
    if (!ctx.nodeSeen) ctx.log?.info({ node: id.name }, "this node's Node object exists");
    ctx.nodeSeen = true;
  },
  remove(ctx, id) {
    ctx.nodeSeen = false;
    ctx.log?.warn({ node: id.name }, "this node's Node object was deleted");
  },
};
