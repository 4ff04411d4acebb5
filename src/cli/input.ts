/**
 * cli/input: where a command's cluster comes from: manifest files (`-f`) or a live cluster read once
 * through a kubeconfig (`--kubeconfig`, list only). Both give the same ManifestSet.
 *
 * Owns: the two options, choosing exactly one, and printing what the reader warns about.
 * May not: compile or decide anything.
 */
import type { Command } from "commander";
import { readClusterSnapshot } from "../agent/sources/cluster-snapshot.js";
import { loadManifestFiles, type ManifestSet } from "../agent/sources/manifests.js";
import { collect, UsageError } from "./errors.js";

export interface InputOpts {
  file?: string[];
  kubeconfig?: string;
}

export function addInputOptions(cmd: Command, what = "manifest file or directory (repeatable)"): Command {
  return cmd
    .option("-f, --file <path>", what, collect)
    .option(
      "--kubeconfig <path>",
      "read the cluster through this kubeconfig instead (list only, never writes)",
    );
}

export function loadForCli(files: readonly string[] | undefined): ManifestSet {
  if (!files || files.length === 0) throw new UsageError("give at least one manifest with -f PATH");
  const set = loadManifestFiles(files);
  for (const w of set.warnings) process.stderr.write(`podwall: warning: ${w}\n`);
  return set;
}

export async function loadInput(opts: InputOpts): Promise<ManifestSet> {
  if (opts.kubeconfig !== undefined && opts.file?.length)
    throw new UsageError("give either -f PATH or --kubeconfig FILE, not both");
  if (opts.kubeconfig === undefined) {
    if (!opts.file?.length)
      throw new UsageError("give the cluster: -f PATH (manifests) or --kubeconfig FILE (a live cluster)");
    return loadForCli(opts.file);
  }
  const snap = await readClusterSnapshot({ kubeconfig: opts.kubeconfig });
  for (const w of snap.set.warnings) process.stderr.write(`podwall: warning: ${w}\n`);
  if (snap.absent.length > 0)
    process.stderr.write(
      `podwall: note: ${snap.server} does not serve ${snap.absent.join(", ")} (CRDs not installed): none read\n`,
    );
  return snap.set;
}
