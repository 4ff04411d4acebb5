/**
 * cni-conflist: chaining podwall-cni into the node's CNI network configuration, and keeping it there.
 *
 * Owns: the edit of the first .conflist in lexical order (the one the container runtime uses):
 * podwall-cni appended last, written by write-then-rename so the runtime never reads half a file.
 * The agent re-checks it, because a network plugin may rewrite its file (on its own restart, say)
 * and drop the entry, which would silently reopen the window the plugin closes.
 * May not: change any other plugin's configuration.
 */
import { chmodSync, copyFileSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export const PLUGIN_TYPE = "podwall-cni";

type Plugin = { type?: string };

function conflistPath(dir: string): string {
  const names = readdirSync(dir)
    .filter((n) => n.endsWith(".conflist"))
    .sort();
  if (!names.length)
    throw new Error(`no .conflist in ${dir}: podwall-cni chains after a network plugin's list`);
  return join(dir, names[0]);
}

function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.podwall-tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

/** Apply `edit` to the plugin list; writes only when it changed something. */
function editConflist(
  dir: string,
  edit: (plugins: Plugin[]) => Plugin[],
): { path: string; changed: boolean } {
  const path = conflistPath(dir);
  const text = readFileSync(path, "utf8");
  let conf: { plugins?: Plugin[] };
  try {
    conf = JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: not JSON: ${(e as Error).message}`);
  }
  if (!Array.isArray(conf.plugins)) throw new Error(`${path}: no "plugins" list`);
  const next = edit(conf.plugins);
  if (JSON.stringify(next) === JSON.stringify(conf.plugins)) return { path, changed: false };
  conf.plugins = next;
  writeAtomic(path, `${JSON.stringify(conf, null, 2)}\n`);
  return { path, changed: true };
}

/** podwall-cni last in the node's conflist (idempotent). */
export function chainPlugin(confDir: string): { path: string; changed: boolean } {
  return editConflist(confDir, (plugins) => [
    ...plugins.filter((p) => p?.type !== PLUGIN_TYPE),
    { type: PLUGIN_TYPE },
  ]);
}

export function unchainPlugin(confDir: string): { path: string; changed: boolean } {
  return editConflist(confDir, (plugins) => plugins.filter((p) => p?.type !== PLUGIN_TYPE));
}

export function installPluginBinary(plugin: string, binDir: string): string {
  const target = join(binDir, PLUGIN_TYPE);
  const tmp = `${target}.podwall-tmp`;
  copyFileSync(plugin, tmp);
  chmodSync(tmp, 0o755);
  renameSync(tmp, target);
  return target;
}
