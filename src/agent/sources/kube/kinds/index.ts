/**
 * kube/kinds/index: the kinds the kube source watches, in start-up order (namespaces before pods and
 * policies, so the first sync sees labelled namespaces). A new kind is one module here and one line.
 * May not: hold per-kind logic.
 */
import type { KindHandler } from "../kind.js";
import { namespaceKind } from "./namespace.js";
import { networkPolicyKind } from "./network-policy.js";
import { nodeKind } from "./node.js";
import { podKind } from "./pod.js";

export const WATCHED_KINDS: readonly KindHandler[] = [namespaceKind, podKind, networkPolicyKind, nodeKind];
