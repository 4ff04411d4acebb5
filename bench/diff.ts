/**
 * bench/diff: `podwall diff` of one policy change on synthetic clusters of 1k, 10k and 50k pods:
 * time and peak RSS, against the naive way (two full simulate matrices compared cell by cell) in
 * the same run.
 *
 *   node --expose-gc --import tsx bench/diff.ts [--json] [--quick]
 *
 * Each size runs in a fresh child process, so its peak RSS (process.resourceUsage().maxRSS, taken
 * when the diff is done, before the naive way runs) is its own. The child does what the CLI does
 * after reading the manifests (reading them is not timed: see the README): both manifest sets -> two compiled
 * tables, the diff, and every changed cell produced with its reasons (not printed). The change:
 * one `allow-team` NetworkPolicy (tier=api pods, ports 8080-8090, from one team's namespaces) is
 * re-pointed at another team, so it opens and closes real cells.
 * The naive way decides every (from, to, port) cell on both tables. That is hours at 50k pods, so
 * it is timed on a sample of source rows (every destination, every port, both tables, each cell
 * compared) and extrapolated to all rows, plus the same table builds; the sampled rows' changes
 * must equal the diff's changes in those rows (naiveMismatches).
 * The hard case is measured too at 1k and 10k pods: a ClusterNetworkPolicy over every namespace
 * (every class dirty).
 * --quick: the 1k cluster only, fewer sampled rows; --json prints one JSON object as the last line.
 */
import { execFileSync } from "node:child_process";
import { performance } from "node:perf_hooks";
import { applyObjects } from "../src/agent/sources/manifest-edit.js";
import { type ManifestSet, tableFromManifests } from "../src/agent/sources/manifests.js";
import { diffChanges, diffTables, groupCells } from "../src/compiler/diff.js";
import { decide } from "../src/compiler/engine.js";
import { declaredPorts, matrixPods, pairAddresses, verdictToResult } from "../src/compiler/matrix.js";
import { PROTO, podKey } from "../src/compiler/model.js";
import { type RawPolicy, rng, syntheticCluster } from "../test/support/cluster-gen.js";

const args = process.argv.slice(2);
const JSON_OUT = args.includes("--json");
const QUICK = args.includes("--quick");

interface Size {
  pods: number;
  policies: number;
  /** Source rows the naive way is timed on. */
  naiveRows: number;
}

const SIZES: Size[] = [
  { pods: 1_000, policies: 100, naiveRows: 200 },
  { pods: 10_000, policies: 1_000, naiveRows: 20 },
  { pods: 50_000, policies: 5_000, naiveRows: 4 },
];

export interface DiffBenchResult {
  pods: number;
  policies: number;
  /** Both tables built from the two sets, the diff, every changed cell with its reasons. */
  diffMs: number;
  buildMs: number;
  diffCoreMs: number;
  expandMs: number;
  rssMB: number;
  /** Two full matrices compared cell by cell (extrapolated from naiveRowsTimed rows), plus the builds. */
  naiveMs: number;
  naiveRowsTimed: number;
  naiveMismatches: number;
  speedup: number;
  opened: number;
  closed: number;
  cellsCompared: number;
  rowClasses: number;
  colClasses: number;
  dirtyRows: number;
  dirtyCols: number;
  decisions: number;
  change: string;
  /**
   * The hard case, measured too (not at 50k pods): a ClusterNetworkPolicy whose subject is every
   * namespace, so every class is dirty. null where not measured.
   */
  broadDiffMs: number | null;
  broadChanged: number | null;
}

/** An Admin ClusterNetworkPolicy over every namespace: no dev namespace on 8080/TCP. */
const BROAD = {
  apiVersion: "policy.networking.k8s.io/v1alpha2",
  kind: "ClusterNetworkPolicy",
  metadata: { name: "no-dev-8080" },
  spec: {
    tier: "Admin",
    priority: 1,
    subject: { namespaces: {} },
    egress: [
      {
        action: "Deny",
        to: [{ namespaces: { matchLabels: { env: "dev" } } }],
        protocols: [{ tcp: { destinationPort: { number: 8080 } } }],
      },
    ],
  },
};

// ------------------------------------------------------------------ child: one size

function manifestSet(
  namespaces: ManifestSet["namespaces"],
  pods: ManifestSet["pods"],
  policies: RawPolicy[],
): ManifestSet {
  return {
    namespaces,
    pods,
    nodes: [],
    policies: policies.map((p) => ({
      kind: "NetworkPolicy" as const,
      namespace: p.metadata.namespace,
      name: p.metadata.name,
      obj: p,
    })),
    warnings: [],
  };
}

function child(size: Size, quick: boolean): DiffBenchResult {
  const c = syntheticCluster(size.pods, size.policies, 11);
  const base = manifestSet(c.namespaces, c.pods, c.policies);
  // The change: the first allow-team policy now admits another team's namespaces.
  const target = c.policies.find((p) => p.metadata.name.startsWith("allow-team-"))!;
  const from = target.spec.ingress[0].from[0].namespaceSelector.matchLabels.team;
  const to = from === "platform" ? "growth" : "platform";
  const changed = structuredClone(target);
  changed.spec.ingress[0].from[0].namespaceSelector.matchLabels.team = to;
  const overlay = manifestSet([], [], [changed]);
  const after = applyObjects(base, overlay);
  const ports = declaredPorts([...base.pods, ...after.pods]);

  const t0 = performance.now();
  const tb = tableFromManifests(base);
  const ta = tableFromManifests(after);
  const t1 = performance.now();
  const res = diffTables({ table: tb, pods: base.pods }, { table: ta, pods: after.pods }, ports);
  const t2 = performance.now();
  let cells = 0;
  let chars = 0;
  for (const ch of diffChanges(res)) {
    cells++;
    chars += ch.reasonAfter.length; // use the object, so the loop is not optimized away
  }
  const t3 = performance.now();
  // Peak RSS of the process up to here: the cluster objects, both tables and the diff (the naive
  // sampling below allocates on its own and is not part of it).
  const rssMB = Math.round(process.resourceUsage().maxRSS / 1024);
  if (cells !== res.opened + res.closed || (chars === 0) === cells > 0)
    throw new Error("diff count mismatch");

  // The naive way on sampled source rows: half drawn at random, half among the rows that change.
  const mb = new Map(matrixPods(base.pods).map((p) => [podKey(p), p]));
  const ma = new Map(matrixPods(after.pods).map((p) => [podKey(p), p]));
  const keys = [...mb.keys()].filter((k) => ma.has(k));
  const rand = rng(5);
  const changedRows = [...new Set(res.groups.flatMap((g) => g.rows))];
  const rows = new Set<number>();
  const want = quick ? Math.min(size.naiveRows, 40) : size.naiveRows;
  while (rows.size < Math.min(want / 2, changedRows.length))
    rows.add(changedRows[Math.floor(rand() * changedRows.length)]);
  while (rows.size < want) rows.add(Math.floor(rand() * keys.length));
  const sample = [...rows];
  const diffCells = new Set<string>();
  const sampled = new Set(sample);
  for (const g of res.groups)
    for (const [i, j] of groupCells(res, g))
      if (sampled.has(i)) diffCells.add(`${res.pods[i]} ${res.pods[j]} ${g.port.port}/${g.port.protocol}`);
  const naiveCells = new Set<string>();
  const n0 = performance.now();
  for (const i of sample) {
    const fromB = mb.get(keys[i])!;
    const fromA = ma.get(keys[i])!;
    for (const pp of ports) {
      const proto = PROTO[pp.protocol];
      for (const k of keys) {
        const ab = pairAddresses(fromB, mb.get(k)!);
        const aa = pairAddresses(fromA, ma.get(k)!);
        if (!ab || !aa) continue;
        const vb = verdictToResult(keys[i], k, pp, decide(tb, { ...ab, proto, port: pp.port }));
        const va = verdictToResult(keys[i], k, pp, decide(ta, { ...aa, proto, port: pp.port }));
        if (vb.allowed !== va.allowed) naiveCells.add(`${keys[i]} ${k} ${pp.port}/${pp.protocol}`);
      }
    }
  }
  const n1 = performance.now();
  let mismatches = 0;
  for (const k of naiveCells) if (!diffCells.has(k)) mismatches++;
  for (const k of diffCells) if (!naiveCells.has(k)) mismatches++;
  const naiveMs = t1 - t0 + ((n1 - n0) / sample.length) * keys.length;
  const diffMs = t3 - t0;
  let broadDiffMs: number | null = null;
  let broadChanged: number | null = null;
  if (size.pods <= 10_000) {
    const broad = applyObjects(base, {
      ...manifestSet([], [], []),
      policies: [
        {
          kind: "ClusterNetworkPolicy",
          namespace: "",
          name: BROAD.metadata.name,
          obj: structuredClone(BROAD),
        },
      ],
    });
    const b0 = performance.now();
    const bb = tableFromManifests(base);
    const ba = tableFromManifests(broad);
    const br = diffTables({ table: bb, pods: base.pods }, { table: ba, pods: broad.pods }, ports);
    let k = 0;
    for (const _ of diffChanges(br)) k++;
    broadDiffMs = Math.round(performance.now() - b0);
    broadChanged = k;
  }
  return {
    pods: size.pods,
    policies: size.policies,
    diffMs: Math.round(diffMs),
    buildMs: Math.round(t1 - t0),
    diffCoreMs: Math.round(t2 - t1),
    expandMs: Math.round(t3 - t2),
    rssMB,
    naiveMs: Math.round(naiveMs),
    naiveRowsTimed: sample.length,
    naiveMismatches: mismatches,
    speedup: Math.round(naiveMs / diffMs),
    opened: res.opened,
    closed: res.closed,
    cellsCompared: res.cellsCompared,
    rowClasses: res.stats.rowClasses,
    colClasses: res.stats.colClasses,
    dirtyRows: res.stats.dirtyRows,
    dirtyCols: res.stats.dirtyCols,
    decisions: res.stats.decisions,
    change: `${target.metadata.namespace}/${target.metadata.name}: from team=${from} to team=${to}`,
    broadDiffMs,
    broadChanged,
  };
}

// ------------------------------------------------------------------ parent: a child per size

function fmt(v: number): string {
  if (v >= 1e9) return `${(v / 1e9).toFixed(2)}G`;
  if (v >= 1e6) return `${(v / 1e6).toFixed(2)}M`;
  return String(v);
}

const ROWS: [keyof DiffBenchResult, string][] = [
  ["diffMs", "diff, total (ms)"],
  ["buildMs", "  two tables built (ms)"],
  ["diffCoreMs", "  diff on classes (ms)"],
  ["expandMs", "  every changed cell + reasons (ms)"],
  ["rssMB", "peak RSS (MB)"],
  ["naiveMs", "naive: two full matrices (ms, extrapolated)"],
  ["naiveRowsTimed", "  source rows timed"],
  ["speedup", "speedup (x)"],
  ["naiveMismatches", "naive vs diff, sampled rows (cells differing)"],
  ["opened", "cells opened"],
  ["closed", "cells closed"],
  ["cellsCompared", "cells compared"],
  ["rowClasses", "row classes"],
  ["dirtyRows", "  dirty"],
  ["colClasses", "column classes"],
  ["dirtyCols", "  dirty"],
  ["decisions", "engine decisions"],
  ["broadDiffMs", "a ClusterNetworkPolicy over every pod: diff (ms)"],
  ["broadChanged", "  cells changed"],
];

function table(results: DiffBenchResult[]): string {
  const head = ["", ...results.map((r) => `${r.pods / 1000}k pods/${r.policies} pol`)];
  const rows = ROWS.map(([k, label]) => [
    label,
    ...results.map((r) => (r[k] === null ? "-" : fmt(r[k] as number))),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  return [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

function main(): void {
  const sizes = QUICK ? SIZES.slice(0, 1) : SIZES;
  const results: DiffBenchResult[] = [];
  const started = performance.now();
  for (const size of sizes) {
    const out = execFileSync(
      process.execPath,
      [
        "--expose-gc",
        "--max-old-space-size=4096",
        "--import",
        "tsx",
        import.meta.filename,
        "--child",
        JSON.stringify(size),
        ...(QUICK ? ["--quick"] : []),
      ],
      { encoding: "utf8", maxBuffer: 16 << 20, stdio: ["ignore", "pipe", "inherit"] },
    );
    const r = JSON.parse(out.trim().split("\n").pop()!) as DiffBenchResult;
    if (!JSON_OUT || process.stdout.isTTY) process.stderr.write(`${r.pods} pods: diff ${r.diffMs} ms\n`);
    results.push(r);
  }
  console.log(
    `\npodwall diff benchmark (node ${process.version}, ${((performance.now() - started) / 1000).toFixed(0)} s; one child process per size)`,
  );
  for (const r of results) console.log(`  ${r.pods / 1000}k: ${r.change}`);
  console.log(`\n${table(results)}\n`);
  console.log(
    "naive = both tables built + every (from, to, port) cell decided on both and compared; timed on the sampled source rows, extrapolated to all rows.",
  );
  const r10 = results.find((r) => r.pods === 10_000);
  if (r10) {
    const ok = r10.diffMs < 5000 && r10.rssMB < 1024;
    console.log(
      `${ok ? "PASS" : "MISS"}  10k pods/1k policies, one policy change: < 5 s and < 1 GB (${r10.diffMs} ms, ${r10.rssMB} MB)`,
    );
  }
  for (const r of results)
    console.log(
      `${r.naiveMismatches === 0 ? "PASS" : "MISS"}  ${r.pods / 1000}k: diff agrees with the naive way on the sampled rows (${r.naiveMismatches} differ)`,
    );
  if (JSON_OUT) console.log(JSON.stringify({ clusters: results }));
}

const ci = args.indexOf("--child");
if (ci >= 0) console.log(JSON.stringify(child(JSON.parse(args[ci + 1]) as Size, QUICK)));
else main();
