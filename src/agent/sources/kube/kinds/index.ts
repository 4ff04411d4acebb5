/**
 * kube/kinds/index: the kinds the kube source watches, in start-up order (namespaces and nodes before
 * pods and policies, so the first sync sees labelled namespaces). A new kind is one module here and
 * one line.
 * May not: hold per-kind logic.
 */
import type { KindHandler } from "../kind.js";
import { namespaceKind } from "./namespace.js";
import { nodeKind } from "./node.js";
import { podKind } from "./pod.js";
import {
  adminNetworkPolicyKind,
  baselineAdminNetworkPolicyKind,
  clusterNetworkPolicyKind,
  networkPolicyKind,
} from "./policy.js";

export const WATCHED_KINDS: readonly KindHandler[] = [
  namespaceKind,
  nodeKind,
  podKind,
  networkPolicyKind,
  clusterNetworkPolicyKind,
  adminNetworkPolicyKind,
  baselineAdminNetworkPolicyKind,
];
