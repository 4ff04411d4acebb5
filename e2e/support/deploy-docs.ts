/**
 * deploy-docs: every Kubernetes object shipped under deploy/, read the way `kubectl apply -f deploy/`
 * reads them (each YAML document of each .yaml/.yml/.json file), with the file it came from.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { parseAllDocuments } from "yaml";

export const DEPLOY = join(import.meta.dirname, "..", "..", "deploy");

export interface DeployDoc {
  file: string;
  // biome-ignore lint/suspicious/noExplicitAny: manifests are free-form JSON
  obj: Record<string, any>;
}

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : /\.(ya?ml|json)$/.test(e.name) ? [join(dir, e.name)] : [],
  );
}

/** Every document of every manifest under deploy/ (or a subfolder), in file order. */
export function deployDocs(sub = ""): DeployDoc[] {
  return files(join(DEPLOY, sub))
    .sort()
    .flatMap((f) =>
      parseAllDocuments(readFileSync(f, "utf8"))
        .map((d) => d.toJS())
        .filter((o) => o && typeof o === "object")
        .map((obj) => ({ file: relative(DEPLOY, f), obj })),
    );
}

/**
 * Paths (a.b[0].c) where `want` has a value that `got` lacks or holds differently: a field the
 * server dropped (unknown to it, so silently pruned in 1.20) or changed. Scalars compare as text,
 * since the server may print a number the manifest quoted.
 */
export function missingFields(want: unknown, got: unknown, path = ""): string[] {
  if (Array.isArray(want)) {
    if (!Array.isArray(got)) return [path || "."];
    return want.flatMap((w, i) => missingFields(w, got[i], `${path}[${i}]`));
  }
  if (want && typeof want === "object") {
    if (!got || typeof got !== "object") return [path || "."];
    return Object.entries(want).flatMap(([k, w]) =>
      missingFields(w, (got as Record<string, unknown>)[k], path ? `${path}.${k}` : k),
    );
  }
  return String(want) === String(got) ? [] : [path];
}
