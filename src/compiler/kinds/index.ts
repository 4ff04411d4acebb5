/**
 * kinds: the registry of policy kinds. Adding a kind is one parser module and one line here; every
 * consumer (the table, the sources, simulate) finds it through this list.
 *
 * Owns: the mapping from a manifest's kind to its parser and API facts.
 * May not: hold parsing logic itself.
 */
import type { KindInfo } from "../k8s-meta.js";
import type { PolicyKind, PolicySpec } from "../rule-model.js";
import {
  ADMIN_NETWORK_POLICY,
  BASELINE_ADMIN_NETWORK_POLICY,
  CLUSTER_NETWORK_POLICY,
  compileAdminNetworkPolicy,
  compileBaselineAdminNetworkPolicy,
  compileClusterNetworkPolicy,
} from "./cluster-policy.js";
import { compileNetworkPolicy, NETWORK_POLICY } from "./network-policy.js";
import type { ParseOptions } from "./options.js";

export interface PolicyKindEntry {
  info: KindInfo;
  /** The API resource (plural) the informers list and watch. */
  resource: string;
  compile(raw: unknown, opts: ParseOptions): PolicySpec;
}

export const POLICY_KINDS: Record<PolicyKind, PolicyKindEntry> = {
  NetworkPolicy: { info: NETWORK_POLICY, resource: "networkpolicies", compile: compileNetworkPolicy },
  ClusterNetworkPolicy: {
    info: CLUSTER_NETWORK_POLICY,
    resource: "clusternetworkpolicies",
    compile: compileClusterNetworkPolicy,
  },
  AdminNetworkPolicy: {
    info: ADMIN_NETWORK_POLICY,
    resource: "adminnetworkpolicies",
    compile: compileAdminNetworkPolicy,
  },
  BaselineAdminNetworkPolicy: {
    info: BASELINE_ADMIN_NETWORK_POLICY,
    resource: "baselineadminnetworkpolicies",
    compile: compileBaselineAdminNetworkPolicy,
  },
};

export function isPolicyKind(kind: unknown): kind is PolicyKind {
  return typeof kind === "string" && Object.hasOwn(POLICY_KINDS, kind);
}

/** Compile an object of a known policy kind. */
export function compilePolicyObject(kind: PolicyKind, raw: unknown, opts: ParseOptions): PolicySpec {
  return POLICY_KINDS[kind].compile(raw, opts);
}

export { FROM_API, FROM_MANIFEST, type ParseOptions, SALVAGE_FROM_API } from "./options.js";
