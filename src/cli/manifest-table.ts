/**
 * cli/manifest-table: the compiled table of a manifest set, for the offline commands (simulate,
 * explain, render, lab probe, the demo's matrix): the same upserts the file source feeds the agent's
 * table, all at once. May not: read files (manifests.ts does) or touch the kernel.
 */
import type { ManifestSet } from "../agent/sources/manifests.js";
import { PolicyTable } from "../compiler/table.js";

export function tableFromManifests(set: ManifestSet): PolicyTable {
  const table = new PolicyTable();
  for (const ns of set.namespaces) table.upsertNamespace(ns);
  for (const pod of set.pods) table.upsertPod(pod);
  for (const pol of set.policies) table.upsertPolicy(pol);
  return table;
}
