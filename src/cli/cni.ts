/**
 * cli/cni: `podwall cni install|uninstall`, run by the DaemonSet's init container on each node.
 *
 * Owns: copying the podwall-cni binary into the node's CNI bin directory and chaining it as the
 * last plugin of the node's network configuration (the first .conflist in lexical order, the one
 * the container runtime uses), both by write-then-rename so the runtime never reads half a file.
 * May not: change any other plugin's configuration.
 */
import { chmodSync, copyFileSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { action, UsageError } from "./errors.js";

export const PLUGIN_TYPE = "podwall-cni";

interface ConfList {
  plugins?: { type?: string }[];
}

function conflistPath(dir: string): string {
  let names: string[];
  try {
    names = readdirSync(dir)
      .filter((n) => n.endsWith(".conflist"))
      .sort();
  } catch (e) {
    throw new UsageError(`cannot read ${dir}: ${(e as Error).message}`);
  }
  if (!names.length)
    throw new UsageError(`no .conflist in ${dir}: podwall-cni chains after a network plugin's list`);
  return join(dir, names[0]);
}

function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.podwall-tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

function editConflist(dir: string, edit: (plugins: { type?: string }[]) => { type?: string }[]): string {
  const path = conflistPath(dir);
  let conf: ConfList;
  try {
    conf = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new UsageError(`${path}: not JSON: ${(e as Error).message}`);
  }
  if (!Array.isArray(conf.plugins)) throw new UsageError(`${path}: no "plugins" list`);
  conf.plugins = edit(conf.plugins);
  writeAtomic(path, `${JSON.stringify(conf, null, 2)}\n`);
  return path;
}

/** Copy the plugin and chain it last; idempotent. Returns the conflist it edited. */
export function installCni(plugin: string, binDir: string, confDir: string): string {
  const target = join(binDir, PLUGIN_TYPE);
  const tmp = `${target}.podwall-tmp`;
  copyFileSync(plugin, tmp);
  chmodSync(tmp, 0o755);
  renameSync(tmp, target);
  return editConflist(confDir, (plugins) => [
    ...plugins.filter((p) => p?.type !== PLUGIN_TYPE),
    { type: PLUGIN_TYPE },
  ]);
}

/** Unchain the plugin (the binary may stay: nothing calls it). Returns the conflist it edited. */
export function uninstallCni(confDir: string): string {
  return editConflist(confDir, (plugins) => plugins.filter((p) => p?.type !== PLUGIN_TYPE));
}

export function registerCni(program: Command): void {
  const cni = program.command("cni").description("install the chained CNI plugin on this node");
  cni
    .command("install")
    .description("copy podwall-cni into the CNI bin directory and chain it after the node's network plugin")
    .requiredOption("--plugin <path>", "the podwall-cni binary to install")
    .option("--bin-dir <dir>", "CNI plugin directory", "/opt/cni/bin")
    .option("--conf-dir <dir>", "CNI configuration directory", "/etc/cni/net.d")
    .action(
      action((o: { plugin: string; binDir: string; confDir: string }) => {
        const path = installCni(o.plugin, o.binDir, o.confDir);
        process.stdout.write(`podwall-cni installed in ${o.binDir} and chained in ${path}\n`);
      }),
    );
  cni
    .command("uninstall")
    .description("remove podwall-cni from the node's network configuration")
    .option("--conf-dir <dir>", "CNI configuration directory", "/etc/cni/net.d")
    .action(
      action((o: { confDir: string }) => {
        process.stdout.write(`podwall-cni unchained from ${uninstallCni(o.confDir)}\n`);
      }),
    );
}
