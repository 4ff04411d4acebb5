/**
 * kube/kinds/node: every Node, reduced to its labels and addresses (nodeFromK8s) for `nodes` peers
 * and the node exemption; this node's own object is also tracked for presence (a missing Node
 * object is logged).
 * May not: keep anything else of a Node (images, conditions: memory).
 */

import type { NodeInfo } from "../../../../compiler/model.js";
import { nodeFromK8s } from "../../../../compiler/normalize.js";
import type { KindHandler } from "../kind.js";

export const nodeKind: KindHandler = {
  kind: "Node",
  path: "/api/v1/nodes",
  convert: (raw) => nodeFromK8s(raw),
  upsert(ctx, value, id) {
    if (id.name === ctx.nodeName) {
      if (!ctx.nodeSeen) ctx.log?.info({ node: id.name }, "this node's Node object exists");
      ctx.nodeSeen = true;
    }
    ctx.sink.upsertNode(value as NodeInfo);
  },
  remove(ctx, id) {
    if (id.name === ctx.nodeName) {
      ctx.nodeSeen = false;
      ctx.log?.warn({ node: id.name }, "this node's Node object was deleted");
    }
    ctx.sink.deleteNode(id.name);
  },
};
