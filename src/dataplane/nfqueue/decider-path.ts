/**
 * decider-path: where the production decider module is, as a file URL for the verdict worker:
 * the compiled .js when podwall runs from dist/, the .ts (loaded through tsx) when run from source.
 * May not: load it here; the worker does.
 */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

export function policyDeciderURL(): string {
  const js = new URL("./policy-decider.js", import.meta.url);
  if (existsSync(fileURLToPath(js))) return js.href;
  return new URL("./policy-decider.ts", import.meta.url).href;
}
