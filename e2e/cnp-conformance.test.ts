/**
 * The upstream ClusterNetworkPolicy conformance suite (kubernetes-sigs/network-policy-api,
 * conformance/tests/*.go, standard and experimental profiles, Admin and Baseline tiers, and the
 * integration test with NetworkPolicy), transcribed as data in e2e/conformance and run through the
 * podwall CLI as operators run it:
 *  - simulate mode: `podwall simulate -f DIR -o json --port ...`, IPv4 and IPv6, every case;
 *  - lab mode: `podwall lab probe -f DIR --dataplane iptables|nfqueue -o json --port ...` (real
 *    packets in a lab node), on LAB_CASES below;
 *  - self-check: every expected cell equals the answer of test/support/tiered-reference.ts, a plain
 *    tiered evaluator that shares nothing with src/.
 * Every PokeServer assertion upstream is one expected cell; "connected: false" means upstream expects
 * a timeout (dropped), which is what a denied probe gets here too.
 *
 * DATA FORMAT
 *
 * e2e/conformance/cluster.yaml: the base cluster (upstream conformance/base/manifests.yaml).
 *   hostNetworkPorts: the 8 ports upstream templates as HostNetworkPorts (its default range).
 *   variants: {ipv4: {family: ipv4}, ipv6: {family: ipv6}}: each run picks one address family.
 *   nodes: [{name, labels, addresses: {ipv4, ipv6}}]: become Node objects (status.addresses).
 *   namespaces: [{name, labels}]: kubernetes.io/metadata.name is added, as the API server does.
 *   pods: [{namespace, name, labels, node, hostNetwork?, addresses?: {ipv4, ipv6},
 *           containerPorts: [{name?, port, protocol}], serves: ["80/TCP", ...]}]
 *     containerPorts are declared in the pod spec (named ports resolve against them); serves lists
 *     every listener the pod runs (upstream's agnhost containers); a cell may only probe those. A
 *     hostNetwork pod has no addresses of its own: it takes its node's.
 *
 * e2e/conformance/cases/<upstream test file>.yaml: the tests of one upstream file.
 *   anchors: YAML anchors for repeated selectors (not read).
 *   cases:
 *     - name: the upstream ShortName (a derived, non-upstream case says so with `derived: true`)
 *       features: the upstream features it needs (ClusterNetworkPolicy = standard profile;
 *         ClusterNetworkPolicyNamedPorts, ClusterNetworkPolicyEgressNodePeers = experimental)
 *       objects: Kubernetes manifests created before the first step (upstream's test manifests)
 *       steps: one per upstream t.Run, split where it changes objects between probes ("(1/3)"):
 *         - name: the t.Run name
 *           changes: applied in order, to the objects in force (base cluster included); each is one of
 *             {apply: MANIFEST}                       create or replace
 *             {delete: REF}                           REF: Kind/name, or Kind/namespace/name if namespaced
 *             {in: REF, set: POINTER, value: V}       replace one field (POINTER: RFC 6901, /spec/priority)
 *             {in: REF, swap: [POINTER, POINTER]}     swap two elements of one list (upstream's rule swaps)
 *             {in: REF, insert: POINTER, value: V}    insert into a list before that index
 *             Strings may hold ${podCIDR:POD}: POD's address in the run's family with a /32 or /128.
 *           expect: [{from: POD, to: POD, port: "80/TCP", connected: true|false}]
 *             POD is a pod name (unique in the cluster) or namespace/name; `to` stands for its podIP.
 * Consecutive steps without changes see the same objects: each such group is one simulate or lab run.
 */
import { execFile, spawnSync } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { TieredReference } from "../test/support/tiered-reference.js";
import {
  type Cell,
  type Family,
  loadCases,
  loadCluster,
  type PortProto,
  portLabel,
  type StateGroup,
  stateGroups,
  writeManifestDir,
} from "./support/cnp-conformance.js";

/**
 * The lab-mode subset. One `lab probe -f` builds, programs, probes and removes a lab node: 2-4 s
 * here, so all 64 object states of one family in both dataplanes would take 4-8 minutes. These 24
 * states per dataplane cover each tier and action: Admin Accept/Deny/Pass both ways on TCP, UDP and
 * SCTP with rule order (AdminTierGress), Pass into NetworkPolicy and into Baseline (Integration),
 * priorities (PriorityField), networks peers and a namespace relabel (InlineCIDRPeers, also IPv6),
 * named ports on ingress and egress, Baseline Accept/Deny both ways (BaselineTierGress). Node peers
 * are simulate-only: the lab builds no hostNetwork pods, so nothing listens on the node's address.
 */
const LAB_CASES: Record<Family, readonly string[]> = {
  ipv4: [
    "CNPAdminTierGress",
    "CNPAdminTierIntegration",
    "CNPAdminTierIntegration/NetworkPolicyTierAlone",
    "CNPAdminTierPriorityField",
    "CNPAdminTierEgressInlineCIDRPeers",
    "CNPAdminTierIngressNamedPort",
    "CNPBaselineTierGress",
    "CNPBaselineTierEgressNamedPort",
  ],
  ipv6: ["CNPAdminTierEgressInlineCIDRPeers"],
};

/** PokeServer assertions in upstream conformance/tests at the transcribed commit (0eec1b0e, 2026-07-01). */
const UPSTREAM_ASSERTIONS = 301;

const CLI = join(import.meta.dirname, "..", "dist", "cli", "main.js");
const cluster = loadCluster();
const cases = loadCases(cluster);
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

interface MatrixJson {
  results: { from: string; to: string; port: number; protocol: string; allowed: boolean }[];
}

const portArgs = (ports: readonly PortProto[]) => ports.flatMap((p) => ["--port", portLabel(p)]);
const cellName = (c: Cell) => `${c.from} -> ${c.to} ${c.port}/${c.protocol}`;

function dirFor(g: StateGroup): string {
  const d = writeManifestDir(g.objects);
  dirs.push(d);
  return d;
}

/** Every expected cell of the group's steps that the matrix contradicts or lacks. */
function mismatches(g: StateGroup, m: MatrixJson): string[] {
  const got = new Map(m.results.map((r) => [`${r.from} -> ${r.to} ${r.port}/${r.protocol}`, r.allowed]));
  const out: string[] = [];
  for (const step of g.steps)
    for (const c of step.expect) {
      const allowed = got.get(cellName(c));
      if (allowed === c.connected) continue;
      const want = c.connected ? "connected" : "not connected";
      const saw = allowed === undefined ? "no such cell" : allowed ? "connected" : "not connected";
      out.push(`${step.name}: ${cellName(c)}: want ${want}, got ${saw}`);
    }
  return out;
}

const execFileP = promisify(execFile);

async function simulate(g: StateGroup): Promise<MatrixJson> {
  const args = [CLI, "simulate", "-f", dirFor(g), "-o", "json", ...portArgs(g.ports)];
  const r = await execFileP(process.execPath, args, { maxBuffer: 64 << 20 });
  return JSON.parse(r.stdout) as MatrixJson;
}

function labProbe(g: StateGroup, dataplane: string): MatrixJson {
  const args = [
    "lab",
    "probe",
    "-f",
    dirFor(g),
    "--dataplane",
    dataplane,
    "-o",
    "json",
    ...portArgs(g.ports),
  ];
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 120_000 });
  if (r.status !== 0) throw new Error(`podwall ${args.join(" ")} exited ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout) as MatrixJson;
}

/** `f` over `items`, at most `limit` at a time (simulate runs are separate processes; 2 cores). */
async function eachLimited<T>(items: readonly T[], limit: number, f: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await f(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

describe("the transcribed suite", () => {
  it("holds every upstream assertion, and the expected cells agree with the tiered reference evaluator", () => {
    const upstream = cases.filter((k) => !k.derived);
    expect(upstream.flatMap((k) => k.steps.flatMap((s) => s.expect))).toHaveLength(UPSTREAM_ASSERTIONS);
    const wrong: string[] = [];
    let checked = 0;
    for (const family of cluster.variants)
      for (const k of cases)
        for (const g of stateGroups(cluster, k, family)) {
          const ref = new TieredReference(g.objects);
          for (const step of g.steps)
            for (const c of step.expect) {
              checked++;
              const v = ref.decide(c);
              if (v.allowed !== c.connected)
                wrong.push(
                  `${family} ${k.name}: ${step.name}: ${cellName(c)}: data says ${c.connected}, reference ${JSON.stringify(v)}`,
                );
            }
        }
    expect(wrong).toEqual([]);
    expect(checked).toBe(
      cluster.variants.length * cases.reduce((n, k) => n + k.steps.flatMap((s) => s.expect).length, 0),
    );
  });

  it("the reference evaluator and podwall simulate agree on every pod pair and port without cluster policies", async () => {
    // Only NetworkPolicy and the base cluster: the one tier podwall already has. Every port any pod
    // serves, every ordered pair (hostNetwork pods included), both families.
    const k = cases.find((x) => x.name === "CNPAdminTierIntegration/NetworkPolicyTierAlone")!;
    const ports = [...new Map(cluster.pods.flatMap((p) => p.serves).map((p) => [portLabel(p), p])).values()];
    let cells = 0;
    let denied = 0;
    for (const family of cluster.variants)
      for (const g of stateGroups(cluster, k, family)) {
        const m = await simulate({ ...g, ports });
        const ref = new TieredReference(g.objects);
        const wrong = m.results.filter(
          (r) => ref.decide({ ...r, protocol: r.protocol as Cell["protocol"] }).allowed !== r.allowed,
        );
        expect(wrong).toEqual([]);
        denied += m.results.filter((r) => !r.allowed).length;
        cells += m.results.length;
      }
    expect(cells).toBe(cluster.variants.length * 2 * cluster.pods.length ** 2 * ports.length);
    expect(denied).toBeGreaterThan(0);
  });
});

describe.each(cluster.variants)("podwall simulate (%s)", (family) => {
  for (const k of cases) {
    it(k.name, async () => {
      const wrong: string[] = [];
      await eachLimited(stateGroups(cluster, k, family), 2, async (g) => {
        wrong.push(...mismatches(g, await simulate(g)));
      });
      expect(wrong).toEqual([]);
    });
  }
});

describe.each(["iptables", "nfqueue"])("podwall lab probe --dataplane %s", (dataplane) => {
  for (const family of cluster.variants)
    for (const name of LAB_CASES[family]) {
      const k = cases.find((x) => x.name === name);
      if (!k) throw new Error(`LAB_CASES: no case ${name}`);
      it(`${name} (${family})`, () => {
        const wrong: string[] = [];
        for (const g of stateGroups(cluster, k, family)) wrong.push(...mismatches(g, labProbe(g, dataplane)));
        expect(wrong).toEqual([]);
      }, 120_000);
    }
});
