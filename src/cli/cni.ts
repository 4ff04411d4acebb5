/**
 * cli/cni: `podwall cni install|uninstall`, run by the DaemonSet's init container on each node.
 *
 * Owns: copying the podwall-cni binary into the node's CNI bin directory and chaining it as the
 * last plugin of the node's network configuration (the first .conflist in lexical order, the one
 * the container runtime uses), both by write-then-rename so the runtime never reads half a file.
 * May not: change any other plugin's configuration (see agent/cni-conflist).
 */
import type { Command } from "commander";
import { chainPlugin, installPluginBinary, unchainPlugin } from "../agent/cni-conflist.js";
import { action } from "./errors.js";

/** Copy the plugin and chain it last; idempotent. Returns the conflist it edited. */
export function installCni(plugin: string, binDir: string, confDir: string): string {
  installPluginBinary(plugin, binDir);
  return chainPlugin(confDir).path;
}

/** Unchain the plugin (the binary may stay: nothing calls it). Returns the conflist it edited. */
export function uninstallCni(confDir: string): string {
  return unchainPlugin(confDir).path;
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
