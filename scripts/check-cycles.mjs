#!/usr/bin/env node
// Fails (exit 1) when modules under the given folder import each other in a cycle, type-only imports
// included: a cycle means a module's contract leans on its own dependents. Relative imports only.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const root = resolve(process.argv[2] ?? "src");

function files(dir) {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? files(p) : p.endsWith(".ts") ? [p] : [];
  });
}

const IMPORT = /(?:^|\n)\s*(?:import|export)\b[^;]*?\bfrom\s*"(\.[^"]+)"|\bimport\(\s*"(\.[^"]+)"\s*\)/g;
const graph = new Map();
for (const f of files(root)) {
  const deps = new Set();
  for (const m of readFileSync(f, "utf8").matchAll(IMPORT)) {
    const spec = m[1] ?? m[2];
    deps.add(resolve(dirname(f), spec.replace(/\.js$/, ".ts")));
  }
  graph.set(f, deps);
}

// Tarjan's strongly connected components: any component with more than one module is a cycle.
let index = 0;
const idx = new Map();
const low = new Map();
const stack = [];
const onStack = new Set();
const cycles = [];
function visit(v) {
  idx.set(v, index);
  low.set(v, index++);
  stack.push(v);
  onStack.add(v);
  for (const w of graph.get(v) ?? []) {
    if (!graph.has(w)) continue;
    if (!idx.has(w)) {
      visit(w);
      low.set(v, Math.min(low.get(v), low.get(w)));
    } else if (onStack.has(w)) low.set(v, Math.min(low.get(v), idx.get(w)));
  }
  if (low.get(v) === idx.get(v)) {
    const comp = [];
    let w;
    do {
      w = stack.pop();
      onStack.delete(w);
      comp.push(w);
    } while (w !== v);
    if (comp.length > 1 || graph.get(v).has(v)) cycles.push(comp);
  }
}
for (const v of graph.keys()) if (!idx.has(v)) visit(v);

if (cycles.length) {
  for (const c of cycles)
    console.error(`import cycle: ${c.map((f) => relative(process.cwd(), f)).join(" <-> ")}`);
  process.exit(1);
}
console.log(`no import cycles among ${graph.size} modules under ${relative(process.cwd(), root) || "."}`);
