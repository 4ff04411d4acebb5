/**
 * bench/compiler: compile time, incremental event latency, cached and uncached verdict cost and
 * heap of the compiled PolicyTable on synthetic clusters, against the plain evaluator baseline.
 *
 *   npx tsx bench/compiler.ts [--json] [--quick]
 *
 * --quick runs only the smallest clusters (with and without ClusterNetworkPolicies); --json prints
 * one JSON object as the last line.
 * Latencies are process.hrtime.bigint() around the single table/engine call (timer overhead, ~40 ns
 * here, is included). Heap is measured after a forced GC (global.gc, or one obtained via v8 flags).
 */
import { isIP } from "node:net";
import { performance } from "node:perf_hooks";
import v8 from "node:v8";
import vm from "node:vm";
import { decide } from "../src/compiler/engine.js";
import { type Flow, type PodInfo, PROTO_NAMES, type ProtoNum } from "../src/compiler/model.js";
import { PolicyTable } from "../src/compiler/table.js";
import { VerdictCache } from "../src/compiler/verdict-cache.js";
import {
  mkPod,
  namespaceObject,
  nodeObject,
  podObject,
  rng,
  type SyntheticCluster,
  syntheticCluster,
} from "../test/support/cluster-gen.js";
import { plainDecide } from "../test/support/plain-evaluator.js";
import { type Protocol, TieredReference } from "../test/support/tiered-reference.js";

const args = new Set(process.argv.slice(2));
const JSON_OUT = args.has("--json");
const QUICK = args.has("--quick");

interface Size {
  pods: number;
  policies: number;
  /** ClusterNetworkPolicies (both tiers, every action); the baseline is then the tiered reference. */
  clusterPolicies?: number;
  /** Plain-evaluator samples: it walks every pod and policy per call. */
  plainSamples: number;
}

const SIZES: Size[] = [
  { pods: 1_000, policies: 100, plainSamples: 3_000 },
  { pods: 10_000, policies: 1_000, plainSamples: 400 },
  { pods: 10_000, policies: 1_000, clusterPolicies: 100, plainSamples: 300 },
  { pods: 50_000, policies: 5_000, plainSamples: 60 },
];

const EVENT_SAMPLES = 1_000;
const FLOW_COUNT = 10_000;
const UNCACHED_SAMPLES = 30_000;
const CACHED_SECONDS = 1;

export interface ClusterResult {
  pods: number;
  policies: number;
  /** ClusterNetworkPolicies in the cluster (0: NetworkPolicies only). */
  clusterPolicies: number;
  compileMs: number;
  podEventP50Us: number;
  podEventP99Us: number;
  podLabelP50Us: number;
  podLabelP99Us: number;
  podDeleteP99Us: number;
  policyAddP50Us: number;
  policyAddP99Us: number;
  cachedLookupsPerSec: number;
  /** Machine baseline, same run: a plain Map keyed by the flow's text, over the same flows. */
  mapLookupsPerSec: number;
  /** cachedLookupsPerSec / mapLookupsPerSec: compare this across machines, not the absolute rate. */
  cachedVsMapRatio: number;
  uncachedP50Us: number;
  uncachedP99Us: number;
  uncachedMeanUs: number;
  /** Mean of a back-to-back loop over the same flows: no per-call timer in the number. */
  uncachedLoopUs: number;
  plainP50Us: number;
  plainMeanUs: number;
  speedupVsPlain: number;
  plainMismatches: number;
  heapMB: number;
  identities: number;
  selectors: number;
}

// ------------------------------------------------------------------ helpers

function obtainGC(): (() => void) | undefined {
  const g = (globalThis as { gc?: () => void }).gc;
  if (typeof g === "function") return g;
  try {
    v8.setFlagsFromString("--expose-gc");
    return vm.runInNewContext("gc") as () => void;
  } catch {
    return undefined;
  }
}
const gc = obtainGC();

async function settle(): Promise<void> {
  if (gc) {
    gc();
    gc();
  } else {
    await new Promise((r) => setTimeout(r, 500));
  }
}

const heapMB = () => process.memoryUsage().heapUsed / (1 << 20);

function timeUs(fn: () => unknown): number {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1000;
}

function pct(samples: number[], p: number): number {
  const s = Float64Array.from(samples).sort();
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

const mean = (samples: number[]) => samples.reduce((a, b) => a + b, 0) / samples.length;

function log(msg: string): void {
  process.stderr.write(`${msg}\n`);
}

function build(c: SyntheticCluster): PolicyTable {
  const t = new PolicyTable();
  for (const ns of c.namespaces) t.upsertNamespace(ns);
  for (const n of c.nodes) t.upsertNode(n);
  for (const p of c.pods) t.upsertPod(p);
  for (const pol of c.policies) t.upsertPolicy(pol);
  return t;
}

/** Random flows: mostly pod to pod on a port the destination declares, some to other ports/addresses. */
function makeFlows(c: SyntheticCluster, n: number, seed: number): Flow[] {
  const rand = rng(seed);
  const live = c.pods.filter((p) => p.phase === "Running");
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rand() * a.length)];
  const flows: Flow[] = [];
  for (let i = 0; i < n; i++) {
    const src = pick(live);
    const r = rand();
    let dst: PodInfo | undefined = pick(live);
    let dstIP: string;
    let srcIP = src.ips[0];
    if (r < 0.05 && src.ips.length > 1 && dst.ips.length > 1) {
      srcIP = src.ips[1];
      dstIP = dst.ips[1];
    } else if (r < 0.1) {
      dst = undefined;
      dstIP =
        rand() < 0.5 ? `198.51.100.${Math.floor(rand() * 250) + 1}` : `10.250.${Math.floor(rand() * 250)}.9`;
    } else if (r < 0.15) {
      // Inbound from outside the cluster.
      srcIP = `203.0.113.${Math.floor(rand() * 250) + 1}`;
      dstIP = dst.ips[0];
    } else {
      dstIP = dst.ips[0];
    }
    let proto: ProtoNum = 6;
    let port: number;
    if (dst && dst.ports.length > 0 && rand() < 0.75) {
      const cp = pick(dst.ports);
      port = cp.port;
      proto = cp.protocol === "UDP" ? 17 : cp.protocol === "SCTP" ? 132 : 6;
    } else {
      port = pick([53, 80, 443, 5432, 6379, 8080, 8085, 9100, 9150, 9300, 31000]);
      const q = rand();
      proto = q < 0.85 ? 6 : q < 0.97 ? 17 : 132;
    }
    flows.push({ src: srcIP, dst: dstIP, proto, port });
  }
  return flows;
}

// ------------------------------------------------------------------ one cluster

async function runCluster(size: Size, seed: number): Promise<ClusterResult> {
  const cnps = size.clusterPolicies ?? 0;
  log(`\n== ${size.pods} pods / ${size.policies} policies / ${cnps} cluster policies`);
  const c = syntheticCluster(size.pods, size.policies, seed, cnps);
  const rand = rng(seed * 7 + 1);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rand() * a.length)];

  await settle();
  const heapBefore = heapMB();
  const t0 = performance.now();
  const table = build(c);
  const compileMs = performance.now() - t0;
  await settle();
  const tableMB = heapMB() - heapBefore;
  const stats = table.stats();
  log(`compile ${compileMs.toFixed(0)} ms, heap +${tableMB.toFixed(1)} MB, ${JSON.stringify(stats)}`);

  // Pod add with an existing label set (a new replica of an existing deployment), then its delete.
  const addSamples: number[] = [];
  const delSamples: number[] = [];
  const added: PodInfo[] = [];
  for (let i = 0; i < EVENT_SAMPLES; i++) {
    const d = pick(c.deployments);
    const pod = mkPod(d.namespace, `bench-add-${i}`, d.labels, `10.251.${i >> 8}.${i & 255}`, {
      ports: d.ports,
    });
    added.push(pod);
    addSamples.push(timeUs(() => table.upsertPod(pod)));
  }
  for (const p of added) delSamples.push(timeUs(() => table.deletePod(p.namespace, p.name)));

  // Pod label change to a label set nobody has (a new identity), restored afterwards (untimed).
  const labelSamples: number[] = [];
  const changed: PodInfo[] = [];
  const live = c.pods.filter((p) => p.phase === "Running");
  for (let i = 0; i < EVENT_SAMPLES; i++) {
    const p = pick(live);
    changed.push(p);
    const next = { ...p, labels: { ...p.labels, version: `canary-${i}` } };
    labelSamples.push(timeUs(() => table.upsertPod(next)));
    table.upsertPod(p);
  }

  // Policy add (a realistic shape in a random namespace), deleted afterwards (untimed).
  const policySamples: number[] = [];
  for (let i = 0; i < EVENT_SAMPLES; i++) {
    const template = pick(c.policies);
    const ns = pick(c.namespaces).name;
    const pol = { ...template, metadata: { namespace: ns, name: `bench-policy-${i}` } };
    policySamples.push(timeUs(() => table.upsertPolicy(pol)));
  }
  for (let i = 0; i < EVENT_SAMPLES; i++) {
    for (const ns of c.namespaces) if (table.deletePolicy(ns.name, `bench-policy-${i}`)) break;
  }
  log(
    `pod add p99 ${pct(addSamples, 99).toFixed(1)} us, label p99 ${pct(labelSamples, 99).toFixed(1)} us, policy add p99 ${pct(policySamples, 99).toFixed(1)} us`,
  );

  const flows = makeFlows(c, FLOW_COUNT, seed + 11);

  // Warm-cache lookups.
  const cache = new VerdictCache(table);
  for (const f of flows) cache.lookup(f.src, f.dst, f.proto, f.port);
  const srcs = flows.map((f) => f.src);
  const dsts = flows.map((f) => f.dst);
  const protos = flows.map((f) => f.proto);
  const ports = flows.map((f) => f.port);
  let lookups = 0;
  let allowedCount = 0;
  const tEnd = performance.now() + CACHED_SECONDS * 1000;
  const c0 = performance.now();
  while (performance.now() < tEnd) {
    for (let i = 0; i < srcs.length; i++) {
      if (cache.lookup(srcs[i], dsts[i], protos[i], ports[i]).allowed) allowedCount++;
    }
    lookups += srcs.length;
  }
  const cachedLookupsPerSec = lookups / ((performance.now() - c0) / 1000);
  // The machine baseline: the same flows answered from a plain Map keyed by the flow's text (what a
  // naive cache would do), for the same time. Its rate moves with the machine, not with podwall.
  const plainMap = new Map<string, boolean>();
  for (const f of flows)
    plainMap.set(
      `${f.src}|${f.dst}|${f.proto}|${f.port}`,
      cache.lookup(f.src, f.dst, f.proto, f.port).allowed,
    );
  let mapLookups = 0;
  let mapAllowed = 0;
  const mEnd = performance.now() + CACHED_SECONDS * 1000;
  const m0 = performance.now();
  while (performance.now() < mEnd) {
    for (let i = 0; i < srcs.length; i++) {
      if (plainMap.get(`${srcs[i]}|${dsts[i]}|${protos[i]}|${ports[i]}`)) mapAllowed++;
    }
    mapLookups += srcs.length;
  }
  const mapLookupsPerSec = mapLookups / ((performance.now() - m0) / 1000);
  log(
    `cached ${(cachedLookupsPerSec / 1e6).toFixed(2)} M lookups/s (${((100 * allowedCount) / lookups).toFixed(0)}% allowed); plain Map ${(mapLookupsPerSec / 1e6).toFixed(2)} M/s (${((100 * mapAllowed) / mapLookups).toFixed(0)}% allowed)`,
  );

  // Uncached decide.
  for (let i = 0; i < 2000; i++) decide(table, flows[i % flows.length]); // warm the JIT on this table
  const uncached: number[] = [];
  for (let i = 0; i < UNCACHED_SAMPLES; i++) {
    const f = flows[i % flows.length];
    uncached.push(timeUs(() => decide(table, f)));
  }

  const l0 = process.hrtime.bigint();
  for (let i = 0; i < UNCACHED_SAMPLES; i++) decide(table, flows[i % flows.length]);
  const uncachedLoopUs = Number(process.hrtime.bigint() - l0) / 1000 / UNCACHED_SAMPLES;

  // Plain evaluator on the same flows (fewer samples), and agreement with the engine. With cluster
  // policies it is the plain tiered reference (test/support/tiered-reference.ts).
  const cluster = { pods: c.pods, namespaces: c.namespaces, policies: c.policies, nodes: c.nodes };
  const reference =
    cnps > 0
      ? new TieredReference([
          ...c.namespaces.map(namespaceObject),
          ...c.nodes.map(nodeObject),
          ...c.pods.map(podObject),
          ...c.policies,
        ])
      : undefined;
  const plain: number[] = [];
  let plainMismatches = 0;
  for (let i = 0; i < size.plainSamples; i++) {
    const f = flows[i % flows.length];
    const e = decide(table, f);
    if (reference) {
      if (isIP(f.src) !== isIP(f.dst)) continue;
      let r: ReturnType<TieredReference["decide"]> | undefined;
      const flow = { from: f.src, to: f.dst, protocol: PROTO_NAMES[f.proto] as Protocol, port: f.port };
      plain.push(timeUs(() => (r = reference.decide(flow))));
      if (
        r!.allowed !== e.allowed ||
        r!.ingress.allowed !== (e.ingress.result !== "denied") ||
        r!.egress.allowed !== (e.egress.result !== "denied")
      )
        plainMismatches++;
      continue;
    }
    let v: ReturnType<typeof plainDecide> | undefined;
    plain.push(timeUs(() => (v = plainDecide(cluster, f))));
    if (v!.allowed !== e.allowed || v!.ingress !== e.ingress.result || v!.egress !== e.egress.result) {
      plainMismatches++;
    }
  }
  const uncachedMeanUs = mean(uncached);
  const plainMeanUs = mean(plain);
  log(
    `uncached p50 ${pct(uncached, 50).toFixed(2)} us p99 ${pct(uncached, 99).toFixed(2)} us; plain p50 ${pct(plain, 50).toFixed(0)} us; mismatches ${plainMismatches}`,
  );

  return {
    pods: size.pods,
    policies: size.policies,
    clusterPolicies: cnps,
    compileMs: round(compileMs, 1),
    podEventP50Us: round(pct(addSamples, 50)),
    podEventP99Us: round(pct(addSamples, 99)),
    podLabelP50Us: round(pct(labelSamples, 50)),
    podLabelP99Us: round(pct(labelSamples, 99)),
    podDeleteP99Us: round(pct(delSamples, 99)),
    policyAddP50Us: round(pct(policySamples, 50)),
    policyAddP99Us: round(pct(policySamples, 99)),
    cachedLookupsPerSec: Math.round(cachedLookupsPerSec),
    mapLookupsPerSec: Math.round(mapLookupsPerSec),
    cachedVsMapRatio: round(cachedLookupsPerSec / mapLookupsPerSec),
    uncachedP50Us: round(pct(uncached, 50)),
    uncachedP99Us: round(pct(uncached, 99)),
    uncachedMeanUs: round(uncachedMeanUs),
    uncachedLoopUs: round(uncachedLoopUs, 3),
    plainP50Us: round(pct(plain, 50), 1),
    plainMeanUs: round(plainMeanUs, 1),
    speedupVsPlain: round(plainMeanUs / uncachedMeanUs, 0),
    plainMismatches,
    heapMB: round(tableMB, 1),
    identities: stats.identities,
    selectors: stats.selectors,
  };
}

function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

// ------------------------------------------------------------------ report

const ROWS: [keyof ClusterResult, string, string][] = [
  ["compileMs", "full compile", "ms"],
  ["podEventP50Us", "pod add (existing labels) p50", "us"],
  ["podEventP99Us", "pod add (existing labels) p99", "us"],
  ["podLabelP50Us", "pod label change (new set) p50", "us"],
  ["podLabelP99Us", "pod label change (new set) p99", "us"],
  ["podDeleteP99Us", "pod delete p99", "us"],
  ["policyAddP50Us", "policy add p50", "us"],
  ["policyAddP99Us", "policy add p99", "us"],
  ["cachedLookupsPerSec", "warm cache lookups", "/s"],
  ["mapLookupsPerSec", "baseline: plain Map lookups, same flows", "/s"],
  ["cachedVsMapRatio", "warm cache vs plain Map", "x"],
  ["uncachedP50Us", "uncached decide p50", "us"],
  ["uncachedP99Us", "uncached decide p99", "us"],
  ["uncachedMeanUs", "uncached decide mean", "us"],
  ["uncachedLoopUs", "uncached decide, untimed loop mean", "us"],
  ["plainP50Us", "plain evaluator p50", "us"],
  ["plainMeanUs", "plain evaluator mean", "us"],
  ["speedupVsPlain", "speedup vs plain (mean)", "x"],
  ["plainMismatches", "verdicts differing from plain", ""],
  ["heapMB", "heap used by the table", "MB"],
  ["identities", "identities", ""],
  ["selectors", "selector cache entries", ""],
];

function fmt(v: number): string {
  if (v >= 1e6) return `${(v / 1e6).toFixed(2)}M`;
  if (Number.isInteger(v)) return String(v);
  return v >= 100 ? v.toFixed(0) : v.toFixed(2);
}

function table(results: ClusterResult[]): string {
  const head = [
    "metric",
    ...results.map(
      (r) =>
        `${r.pods / 1000}k pods/${r.policies} pol${r.clusterPolicies ? `/${r.clusterPolicies} cnp` : ""}`,
    ),
  ];
  const rows = ROWS.map(([k, label, unit]) => [
    `${label}${unit ? ` (${unit})` : ""}`,
    ...results.map((r) => fmt(r[k] as number)),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  return [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

function goals(results: ClusterResult[]): string[] {
  const out: string[] = [];
  const check = (ok: boolean, text: string) => out.push(`${ok ? "PASS" : "MISS"}  ${text}`);
  for (const r of results.filter((x) => x.pods === 10_000))
    check(
      r.compileMs < 1000,
      `10k pods/1k policies${r.clusterPolicies ? `/${r.clusterPolicies} cluster policies` : ""} compile < 1 s (${r.compileMs} ms)`,
    );
  for (const r of results) {
    const tag = `${r.pods / 1000}k${r.clusterPolicies ? `+${r.clusterPolicies}cnp` : ""}`;
    check(r.podEventP99Us < 1000, `${tag}: pod event p99 < 1 ms (${r.podEventP99Us} us)`);
    check(r.cachedLookupsPerSec >= 5e6, `${tag}: warm lookups >= 5M/s (${fmt(r.cachedLookupsPerSec)})`);
    check(r.uncachedP99Us < 10, `${tag}: uncached p99 < 10 us (${r.uncachedP99Us} us)`);
    check(r.speedupVsPlain >= 100, `${tag}: >= 100x faster than plain (${r.speedupVsPlain}x)`);
    check(
      r.plainMismatches === 0,
      `${tag}: engine agrees with the plain evaluator (${r.plainMismatches} differ)`,
    );
  }
  return out;
}

/** p50/p99 of a fixed ~20 us busy loop: how much a loaded machine inflates tail latencies. */
function noiseFloor(): { p50: number; p99: number } {
  let x = 0;
  const s: number[] = [];
  for (let i = 0; i < 1000; i++) {
    s.push(
      timeUs(() => {
        for (let j = 0; j < 20_000; j++) x += j % 7;
      }),
    );
  }
  if (x < 0) log(String(x));
  return { p50: pct(s, 50), p99: pct(s, 99) };
}

async function main(): Promise<void> {
  if (!gc) log("note: no GC access; heap figures are approximate");
  // Warm the JIT on a small cluster so the first measured compile is not a cold-start number.
  build(syntheticCluster(1_000, 100, 99));
  const sizes = QUICK
    ? [SIZES[0], { pods: 1_000, policies: 100, clusterPolicies: 12, plainSamples: 500 }]
    : SIZES;
  const results: ClusterResult[] = [];
  const started = performance.now();
  for (const [i, size] of sizes.entries()) results.push(await runCluster(size, i + 1));
  const noise = noiseFloor();
  console.log(
    `\npodwall compiler benchmark (node ${process.version}, ${((performance.now() - started) / 1000).toFixed(0)} s; ` +
      `noise floor: a fixed ${noise.p50.toFixed(0)} us loop has p99 ${noise.p99.toFixed(0)} us)\n`,
  );
  console.log(table(results));
  console.log(`\n${goals(results).join("\n")}`);
  if (JSON_OUT) console.log(JSON.stringify({ clusters: results }));
}

await main();
