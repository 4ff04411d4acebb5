/**
 * bench/dataplane: what programming the kernel costs, on a lab node (network namespaces) with 100
 * real local pods (veths, routes) and a synthetic cluster whose other pods exist only in the table.
 *
 *   npx tsx bench/dataplane.ts [--json] [--quick]
 *
 * Per cluster size (2k pods / 1k policies, 10k pods / 5k policies; --quick: the first only):
 *   fullApplyMs     KernelApplier.apply of the whole DesiredState into an empty node (read-back included).
 *                   Median of 7: the lab node itself, then six fresh empty netns, interleaved with
 *   plainRestoreMs  the same texts (ApplyStats.texts) through plain `ipset restore` +
 *                   `ip[6]tables-<backend>-restore --noflush`, each into a fresh empty netns (median of 7).
 *   policyChangeMs  a port added to / removed from a policy that selects a local pod: table upsert +
 *                   renderNode + incremental apply (median / p90 of 20, after 2 warm-ups).
 *   podAddMs        a pod added to the cluster whose labels a peer selector of a local pod's policy
 *                   matches (ipset membership changes): upsert + render + apply (the pod is deleted
 *                   again, unmeasured, before the next repetition).
 *   tcp/udpLossPct  established traffic through our rules: iperf3 between two local pods our rules
 *                   isolate and allow (TCP 2 s; UDP 100-byte datagrams, -b 0, 2 s; received rate;
 *                   client pinned to CPU 0, server to CPU 1). Three arms, rotated each round, medians
 *                   of IPERF_RUNS rounds:
 *                     bare  the lab node with no rules at all (conntrack not even loaded),
 *                     node  the lab node with kube-proxy's filter/nat jumps and its conntrack accept
 *                           (what every Kubernetes node carries; conntrack on), no podwall,
 *                     ours  the same node plus podwall's rules (our jumps go first).
 *                   tcp/udpLossPct = ours vs node: what podwall adds to a Kubernetes node.
 *                   tcp/udpLossVsBarePct = ours vs bare: also conntrack's own cost. Negative = noise.
 * Kernel work only ever happens in netns of the lab `bd<pid>` (pwl-bd...), all removed in finally
 * blocks and on SIGINT/SIGTERM. --json prints one JSON object as the last stdout line.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { availableParallelism } from "node:os";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { decide } from "../src/compiler/engine.js";
import type { PodInfo } from "../src/compiler/model.js";
import { PolicyTable } from "../src/compiler/table.js";
import { type ApplyStats, type Backend, KernelApplier } from "../src/dataplane/apply.js";
import { run } from "../src/dataplane/exec.js";
import { type LabPodState, type LabState, labDown, labUp } from "../src/dataplane/lab/lab.js";
import { labLocalPods } from "../src/dataplane/lab/program.js";
import { type LocalPod, renderNode, shortHash } from "../src/dataplane/render.js";
import { type RawPolicy, rng, type SyntheticCluster, syntheticCluster } from "../test/support/cluster-gen.js";

const args = new Set(process.argv.slice(2));
const JSON_OUT = args.has("--json");
const QUICK = args.has("--quick");

interface Size {
  pods: number;
  policies: number;
  /** ClusterNetworkPolicies (both tiers, every action); a change to one is timed too. */
  clusterPolicies: number;
}

const SIZES: Size[] = QUICK
  ? [{ pods: 2_000, policies: 1_000, clusterPolicies: 12 }]
  : [
      { pods: 2_000, policies: 1_000, clusterPolicies: 0 },
      { pods: 10_000, policies: 5_000, clusterPolicies: 0 },
      { pods: 10_000, policies: 1_000, clusterPolicies: 100 },
    ];
const LOCAL_PODS = 100;
const REPS = QUICK ? 8 : 20;
const WARMUP = 2;
const FULL_SAMPLES = 7;
const IPERF_SECONDS = QUICK ? 1 : 2;
const IPERF_RUNS = QUICK ? 1 : 5;
const LAB_BASE = `bd${process.pid.toString(36)}`.slice(0, 10);

export interface RunResult {
  /** ClusterNetworkPolicies in the cluster, and one changed (render + apply), when there are any. */
  clusterPolicies: number;
  clusterPolicyChangeMs: number | null;
  clusterPolicyChangeP90Ms: number | null;
  policies: number;
  localPods: number;
  clusterPods: number;
  fullApplyMs: number;
  policyChangeMs: number;
  policyChangeP90Ms: number;
  podAddMs: number;
  podAddP90Ms: number;
  plainRestoreMs: number;
  ratioVsPlainRestore: number;
  rules: number;
  ipsets: number;
  tcpLossPct: number;
  udpLossPct: number;
  tcpLossVsBarePct: number;
  udpLossVsBarePct: number;
  detail: Record<string, unknown>;
}

// ------------------------------------------------------------------ helpers

const log = (s: string) => process.stderr.write(`${s}\n`);
const r1 = (n: number) => Math.round(n * 10) / 10;

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function p90(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.max(0, Math.ceil(0.9 * s.length) - 1)];
}

/** Every netns this benchmark programs must be one of its own labs'. */
function assertOurs(netns: string): string {
  if (!netns.startsWith(`pwl-${LAB_BASE}`)) throw new Error(`refusing to program netns ${netns}`);
  return netns;
}

// Everything to remove on exit, also on a signal.
const liveLabs = new Set<string>();
const liveNetns = new Set<string>();
const liveChildren = new Set<ChildProcess>();

async function removeNetns(name: string): Promise<void> {
  assertOurs(name);
  await run("ip", ["netns", "del", name], { allowFail: true });
  liveNetns.delete(name);
}

async function cleanupAll(): Promise<void> {
  for (const c of liveChildren) if (c.pid && c.exitCode === null) c.kill("SIGKILL");
  for (const n of [...liveNetns]) await removeNetns(n).catch(() => {});
  for (const l of [...liveLabs]) {
    await labDown(l).catch((e) => log(`labDown ${l}: ${(e as Error).message}`));
    liveLabs.delete(l);
  }
}

for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    log(`${sig}: removing the benchmark's namespaces`);
    void cleanupAll().finally(() => process.exit(130));
  });
}

/** A fresh, empty netns (named inside the lab's pattern, so labDown would also find a leftover). */
let scratchSeq = 900;
async function withScratch<T>(lab: string, fn: (netns: string) => Promise<T>): Promise<T> {
  const name = assertOurs(`pwl-${lab}-${scratchSeq++}`);
  await run("ip", ["netns", "add", name]);
  liveNetns.add(name);
  try {
    return await fn(name);
  } finally {
    await removeNetns(name);
  }
}

/** The texts of a full apply, fed to the plain tools exactly as the applier does; per-step ms. */
async function plainRestore(netns: string, backend: Backend, texts: ApplyStats["texts"]) {
  assertOurs(netns);
  const t0 = performance.now();
  if (texts.ipsetPre) await run("ipset", ["restore"], { netns, input: `${texts.ipsetPre}\n` });
  const t1 = performance.now();
  if (texts.v4) await run(`iptables-${backend}-restore`, ["--noflush"], { netns, input: texts.v4 });
  const t2 = performance.now();
  if (texts.v6) await run(`ip6tables-${backend}-restore`, ["--noflush"], { netns, input: texts.v6 });
  const t3 = performance.now();
  return { ms: t3 - t0, ipset: t1 - t0, v4: t2 - t1, v6: t3 - t2 };
}

// ------------------------------------------------------------------ cluster + local pods

function isV4(ip: string): boolean {
  return !ip.includes(":");
}

/**
 * 100 local pods: one worker + one cache replica in the same namespace (the iperf pair: data-tier
 * ingress allows backend pods on every port and protocol), the rest a seeded random sample.
 */
function pickLocal(c: SyntheticCluster, seed: number): PodInfo[] {
  const running = c.pods.filter((p) => p.phase === "Running" && p.ips.some(isV4));
  const ns = c.namespaces[Math.min(1, c.namespaces.length - 1)].name;
  const forced = ["worker", "cache"]
    .map((app) => running.find((p) => p.namespace === ns && p.labels.app === app))
    .filter((p): p is PodInfo => p !== undefined);
  const chosen = new Set(forced);
  const rand = rng(seed);
  while (chosen.size < Math.min(LOCAL_PODS, running.length))
    chosen.add(running[Math.floor(rand() * running.length)]);
  return [...chosen];
}

function policyKey(p: RawPolicy): string {
  return p.kind === "ClusterNetworkPolicy"
    ? `cnp:${p.metadata.name}`
    : `${p.metadata.namespace}/${p.metadata.name}`;
}

// ------------------------------------------------------------------ iperf

interface IperfResult {
  tcpGbps: number;
  udpKpps: number;
}

/** Client and server on their own CPUs: on a 2-core VM unpinned runs scatter by +-15%. */
const PIN = availableParallelism() >= 2;
const pinned = (cpu: number, cmd: string, args: string[]): [string, string[]] =>
  PIN ? ["taskset", ["-c", String(cpu), cmd, ...args]] : [cmd, args];

async function iperfClient(from: LabPodState, toIp: string, port: number, udp: boolean): Promise<number> {
  const argv = ["-c", toIp, "-p", String(port), "-t", String(IPERF_SECONDS), "-J"];
  if (udp) argv.push("-u", "-l", "100", "-b", "0");
  const [cmd, cmdArgs] = pinned(0, "iperf3", argv);
  for (let attempt = 0; ; attempt++) {
    const r = await run(cmd, cmdArgs, {
      netns: from.netns,
      allowFail: true,
      timeoutMs: (IPERF_SECONDS + 20) * 1000,
    });
    if (r.code === 0) {
      // biome-ignore lint/suspicious/noExplicitAny: iperf3's JSON report
      let j: any;
      try {
        j = JSON.parse(r.stdout);
      } catch {
        j = undefined;
      }
      if (!udp && j?.end?.sum_received) return j.end.sum_received.bits_per_second / 1e9;
      // Datagrams that arrived, per second, as the server counted them. Under load iperf3 now and
      // then ends a UDP run without the server's summary: that run is repeated like a failed one.
      const s = j?.end?.sum;
      if (udp && s) return (s.packets - s.lost_packets) / s.seconds / 1000;
    }
    if (attempt >= 10) throw new Error(`iperf3 ${argv.join(" ")}: ${r.stdout.slice(0, 400)} ${r.stderr}`);
    await sleep(300);
  }
}

/**
 * What kube-proxy (iptables mode) puts in a node's filter FORWARD and nat POSTROUTING: the baseline
 * node podwall joins. Its nat table alone turns conntrack on, as on every Kubernetes node.
 */
const KUBE_PROXY_RULES = `*filter
:KUBE-FORWARD - [0:0]
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:KUBE-POSTROUTING - [0:0]
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -j MASQUERADE
COMMIT
`;

async function kubeProxyRules(netns: string, backend: Backend, on: boolean): Promise<void> {
  assertOurs(netns);
  if (on) {
    await run(`iptables-${backend}-restore`, ["--noflush"], { netns, input: KUBE_PROXY_RULES });
    return;
  }
  const ipt = `iptables-${backend}`;
  const del = (args: string[]) => run(ipt, args, { netns, allowFail: true });
  await del([
    "-D",
    "FORWARD",
    "-m",
    "comment",
    "--comment",
    "kubernetes forwarding rules",
    "-j",
    "KUBE-FORWARD",
  ]);
  await del(["-F", "KUBE-FORWARD"]);
  await del(["-X", "KUBE-FORWARD"]);
  const nat = ["-t", "nat"];
  await del([
    ...nat,
    "-D",
    "POSTROUTING",
    "-m",
    "comment",
    "--comment",
    "kubernetes postrouting rules",
    "-j",
    "KUBE-POSTROUTING",
  ]);
  await del([...nat, "-F", "KUBE-POSTROUTING"]);
  await del([...nat, "-X", "KUBE-POSTROUTING"]);
}

async function iperfPair(from: LabPodState, toIp: string, port: number): Promise<IperfResult> {
  const tcpGbps = await iperfClient(from, toIp, port, false);
  const udpKpps = await iperfClient(from, toIp, port, true);
  return { tcpGbps, udpKpps };
}

/** Packets counted on the FORWARD dispatch rule into `chain` (proves traffic walked our chains). */
async function dispatchHits(nodeNetns: string, backend: Backend, chain: string): Promise<number> {
  const r = await run(`iptables-${backend}-save`, ["-c", "-t", "filter"], { netns: assertOurs(nodeNetns) });
  let n = 0;
  for (const line of r.stdout.split("\n")) {
    const m = /^\[(\d+):\d+\] -A PODWALL-FORWARD .* -j (\S+)/.exec(line);
    if (m && m[2] === chain) n += Number(m[1]);
  }
  return n;
}

// ------------------------------------------------------------------ one size

async function runSize(size: Size, index: number): Promise<RunResult> {
  const lab = `${LAB_BASE}${index}`;
  const detail: Record<string, unknown> = {};
  const tGen = performance.now();
  const cluster = syntheticCluster(size.pods, size.policies, 7 + index, size.clusterPolicies);
  const localInfos = pickLocal(cluster, 11 + index);
  const localKeys = new Set(localInfos.map((p) => `${p.namespace}/${p.name}`));
  const table = new PolicyTable();
  for (const ns of cluster.namespaces) table.upsertNamespace(ns);
  for (const n of cluster.nodes) table.upsertNode(n);
  for (const p of cluster.pods)
    table.upsertPod(localKeys.has(`${p.namespace}/${p.name}`) ? { ...p, nodeName: "bench-node" } : p);
  for (const pol of cluster.policies) table.upsertPolicy(pol);
  detail.tableMs = r1(performance.now() - tGen);
  detail.namespaces = cluster.namespaces.length;

  const localIds = new Set(localInfos.map((p) => table.pod(`${p.namespace}/${p.name}`)!.identityId));
  const selectsLocal = (key: string) => [...table.policy(key)!.target.members].some((id) => localIds.has(id));
  detail.policiesSelectingLocal = cluster.policies.filter((p) => selectsLocal(policyKey(p))).length;

  log(`[${size.policies} policies] lab ${lab}: building ${localInfos.length} local pods`);
  liveLabs.add(lab);
  try {
    const tLab = performance.now();
    const state: LabState = await labUp(
      lab,
      localInfos.map((p) => ({ key: `${p.namespace}/${p.name}`, ips: [...p.ips], serve: [] })),
    );
    assertOurs(state.nodeNetns);
    const local: LocalPod[] = await labLocalPods(state);
    if (local.length !== localInfos.length) throw new Error(`only ${local.length} local pods have routes`);
    detail.labUpMs = Math.round(performance.now() - tLab);

    // ---- full apply vs. plain restore of the same texts
    const tR = performance.now();
    const desired = renderNode(table, local, { dataplane: "iptables" });
    detail.fullRenderMs = r1(performance.now() - tR);
    detail.isolatedLocalPods = desired.isolated.pods;
    const applier = new KernelApplier({ netns: state.nodeNetns });
    /**
     * One table change, rendered and applied incrementally, WARMUP + REPS times: total and render
     * ms, and what `count` reads from each apply (which must be > 0: the change reached the kernel).
     */
    const timeChanges = async (
      change: (k: number) => void,
      count: (st: ApplyStats) => number,
      noEffect: string,
      undo?: (k: number) => Promise<void>,
    ) => {
      const res = { total: [] as number[], render: [] as number[], counts: [] as number[] };
      for (let k = 0; k < WARMUP + REPS; k++) {
        const t0 = performance.now();
        change(k);
        const d = renderNode(table, local, { dataplane: "iptables" });
        const t1 = performance.now();
        const st = await applier.apply(d);
        const t2 = performance.now();
        if (count(st) === 0) throw new Error(noEffect);
        await undo?.(k);
        if (k < WARMUP) continue;
        res.total.push(t2 - t0);
        res.render.push(t1 - t0);
        res.counts.push(count(st));
      }
      return res;
    };
    const first = await applier.apply(desired);
    const backend = await applier.detectBackend();
    detail.backend = backend;
    const ours = [first.ms];
    const plain: Awaited<ReturnType<typeof plainRestore>>[] = [];
    for (let k = 0; k < FULL_SAMPLES; k++) {
      plain.push(await withScratch(lab, (ns) => plainRestore(ns, backend, first.texts)));
      if (k + 1 < FULL_SAMPLES)
        ours.push((await withScratch(lab, (ns) => new KernelApplier({ netns: ns }).apply(desired))).ms);
    }
    // Where our extra time goes: backend detection + read-back of an empty node, and bare process start.
    detail.readKernelEmptyMs = r1(
      await withScratch(lab, async (ns) => {
        const t = performance.now();
        await new KernelApplier({ netns: ns }).readKernel();
        return performance.now() - t;
      }),
    );
    const spawnMs: number[] = [];
    for (let k = 0; k < 5; k++) {
      const t = performance.now();
      await run("true", [], { netns: state.nodeNetns });
      spawnMs.push(performance.now() - t);
    }
    detail.netnsSpawnMs = r1(median(spawnMs));
    detail.fullApplySamplesMs = ours.map(r1);
    detail.plainRestoreSamplesMs = plain.map((p) => r1(p.ms));
    detail.plainIpsetMs = r1(median(plain.map((p) => p.ipset)));
    detail.plainV4Ms = r1(median(plain.map((p) => p.v4)));
    detail.plainV6Ms = r1(median(plain.map((p) => p.v6)));
    detail.textBytes = first.texts.ipsetPre.length + first.texts.v4.length + first.texts.v6.length;
    detail.setMembers = first.membersAdded;
    const fullApplyMs = median(ours);
    const plainRestoreMs = median(plain.map((p) => p.ms));
    log(
      `  full apply ${ours.map(r1).join("/")} ms, plain restore ${plain.map((p) => r1(p.ms)).join("/")} ms`,
    );

    // ---- one policy changed: a port added to (and removed from) a policy selecting a local pod
    const prefer = [
      "allow-frontend-to-api",
      "cross-ns",
      "allow-team",
      "allow-prod-web",
      "data-ingress",
      "metrics",
    ];
    const candidates = cluster.policies.filter(
      (p) =>
        Array.isArray(p.spec.ingress) &&
        p.spec.ingress.some((r: RawPolicy) => Array.isArray(r.ports)) &&
        selectsLocal(policyKey(p)),
    );
    const rank = (p: RawPolicy) => {
      const i = prefer.findIndex((pre) => p.metadata.name.startsWith(`${pre}-`));
      return i < 0 ? prefer.length : i;
    };
    candidates.sort((a, b) => rank(a) - rank(b));
    const base = candidates[0];
    if (!base) throw new Error("no policy with ingress ports selects a local pod");
    const changed = structuredClone(base);
    const rule = changed.spec.ingress.find((r: RawPolicy) => Array.isArray(r.ports));
    rule.ports.push({ port: 7777, protocol: "TCP" });
    detail.changedPolicy = policyKey(base);
    const pol = await timeChanges(
      (k) => table.upsertPolicy(k % 2 === 0 ? changed : base),
      (st) => st.chainsWritten,
      "policy change wrote no chain",
    );
    const polTimes = pol.total;
    detail.policyChangeRenderMs = r1(median(pol.render));
    detail.policyChangeChainsWritten = median(pol.counts);
    log(
      `  policy change ${detail.changedPolicy}: p50 ${r1(median(polTimes))} ms (render ${detail.policyChangeRenderMs})`,
    );

    // ---- one ClusterNetworkPolicy changed: a rule added to (and removed from) one governing a local pod
    let cnpTimes: number[] = [];
    if (size.clusterPolicies > 0) {
      const cnpBase = cluster.policies.find(
        (p) => p.kind === "ClusterNetworkPolicy" && p.spec.ingress && selectsLocal(policyKey(p)),
      );
      if (!cnpBase) throw new Error("no ClusterNetworkPolicy with ingress rules governs a local pod");
      const cnpChanged = structuredClone(cnpBase);
      cnpChanged.spec.ingress.push({
        name: "bench-extra",
        action: "Accept",
        from: [{ namespaces: {} }],
        protocols: [{ tcp: { destinationPort: { number: 7777 } } }],
      });
      detail.changedClusterPolicy = policyKey(cnpBase);
      const res = await timeChanges(
        (k) => table.upsertPolicy(k % 2 === 0 ? cnpChanged : cnpBase),
        (st) => st.chainsWritten,
        "cluster policy change wrote no chain",
      );
      cnpTimes = res.total;
      detail.clusterPolicyChangeRenderMs = r1(median(res.render));
      detail.clusterPolicyChangeChainsWritten = median(res.counts);
      log(`  cluster policy change ${detail.changedClusterPolicy}: p50 ${r1(median(cnpTimes))} ms`);
    }

    // ---- one pod added whose labels a peer selector of a local pod's ingress policy matches
    let template: PodInfo | undefined;
    search: for (const lp of local) {
      const id = table.pod(lp.key)?.identity;
      if (!id) continue;
      for (const pol of table.isolating(id, "ingress")) {
        for (const r of pol.ingress ?? []) {
          for (const peer of r.peers ?? []) {
            if (peer.kind !== "sel" || peer.sel.spec.namespace === null) continue;
            for (const mid of peer.sel.memberIdentities) {
              for (const pod of mid.pods) {
                if (!localKeys.has(pod.key)) {
                  template = pod.info;
                  detail.podAddSelector = `${pol.key} ingress[${r.index}] (peer of ${lp.key})`;
                  break search;
                }
              }
            }
          }
        }
      }
    }
    if (!template) throw new Error("no remote pod matches a peer selector of a local pod's policy");
    const tpl = template;
    const added = (k: number): PodInfo => ({
      ...tpl,
      name: `bench-added-${k}`,
      ips: [`10.250.${k >> 8}.${(k & 255) + 1}`],
    });
    const add = await timeChanges(
      (k) => table.upsertPod(added(k)),
      (st) => st.membersAdded,
      "pod add changed no ipset",
      // Unmeasured: delete the pod again so every repetition adds one.
      async (k) => {
        table.deletePod(tpl.namespace, added(k).name);
        await applier.apply(renderNode(table, local, { dataplane: "iptables" }));
      },
    );
    const addTimes = add.total;
    detail.podAddRenderMs = r1(median(add.render));
    detail.podAddMembersAdded = median(add.counts);
    log(`  pod add: p50 ${r1(median(addTimes))} ms (render ${detail.podAddRenderMs})`);

    // ---- established traffic: two isolated local pods the policy allows (TCP and UDP on one port)
    let pair: { a: LabPodState; b: LabPodState; ip: string; port: number; score: number } | undefined;
    for (const b of state.pods) {
      const bIp = b.ips.find(isV4);
      if (!bIp) continue;
      for (const a of state.pods) {
        const aIp = a.ips.find(isV4);
        if (a === b || !aIp) continue;
        for (const port of [5201, 15201]) {
          const tcp = decide(table, { src: aIp, dst: bIp, proto: 6, port });
          const udp = decide(table, { src: aIp, dst: bIp, proto: 17, port });
          if (!tcp.allowed || !udp.allowed || tcp.ingress.result !== "allowed") continue;
          const score =
            (tcp.egress.result === "allowed" ? 2 : 0) + (a.key.split("/")[0] === b.key.split("/")[0] ? 1 : 0);
          if (!pair || score > pair.score) pair = { a, b, ip: bIp, port, score };
          break;
        }
      }
    }
    if (!pair) throw new Error("no pair of isolated local pods allowed on TCP and UDP");
    const ingName = `PODWALL-ING-${shortHash(pair.b.key)}`;
    if (!desired.v4.chains.has(ingName)) throw new Error(`${pair.b.key} has no ingress chain`);
    detail.iperfPair = `${pair.a.key} -> ${pair.b.key} (${pair.ip}:${pair.port}, egress ${pair.score >= 2 ? "isolated" : "open"})`;
    const [srvCmd, srvArgs] = pinned(1, "iperf3", ["-s", "-p", String(pair.port)]);
    const server = spawn("ip", ["netns", "exec", assertOurs(pair.b.netns), srvCmd, ...srvArgs], {
      stdio: "ignore",
    });
    liveChildren.add(server);
    type Arm = "bare" | "node" | "ours";
    const arms: Arm[] = ["bare", "node", "ours"];
    const res: Record<Arm, IperfResult[]> = { bare: [], node: [], ours: [] };
    let kube = false;
    let oursOn = true;
    const setArm = async (arm: Arm) => {
      const wantOurs = arm === "ours";
      const wantKube = arm !== "bare";
      if (oursOn && !wantOurs) await applier.cleanup();
      if (kube !== wantKube) await kubeProxyRules(state.nodeNetns, backend, wantKube);
      // Our jumps are inserted at the top, ahead of kube-proxy's, as in a real node.
      if (!oursOn && wantOurs) await applier.apply(desired);
      oursOn = wantOurs;
      kube = wantKube;
    };
    try {
      await sleep(300);
      for (let k = 0; k < IPERF_RUNS; k++) {
        for (let j = 0; j < arms.length; j++) {
          const arm = arms[(j + k) % arms.length];
          await setArm(arm);
          res[arm].push(await iperfPair(pair.a, pair.ip, pair.port));
          if (arm === "ours" && detail.dispatchHits === undefined) {
            detail.dispatchHits = await dispatchHits(state.nodeNetns, backend, ingName);
            if (!(Number(detail.dispatchHits) > 0)) throw new Error(`no packet walked ${ingName}`);
          }
        }
      }
    } finally {
      if (server.exitCode === null) server.kill("SIGKILL");
      liveChildren.delete(server);
    }
    const med = (arm: Arm, f: (x: IperfResult) => number) => median(res[arm].map(f));
    const tcp = (arm: Arm) => med(arm, (x) => x.tcpGbps);
    const udp = (arm: Arm) => med(arm, (x) => x.udpKpps);
    detail.iperfPinned = PIN;
    detail.tcpGbps = Object.fromEntries(arms.map((a) => [a, res[a].map((x) => r1(x.tcpGbps))]));
    detail.udpKpps = Object.fromEntries(arms.map((a) => [a, res[a].map((x) => r1(x.udpKpps))]));
    log(
      `  iperf ${detail.iperfPair}: TCP ${arms.map((a) => `${a} ${r1(tcp(a))}`).join(", ")} Gbit/s; ` +
        `UDP ${arms.map((a) => `${a} ${r1(udp(a))}`).join(", ")} kpps`,
    );
    await setArm("bare");

    return {
      policies: size.policies,
      clusterPolicies: size.clusterPolicies,
      clusterPolicyChangeMs: cnpTimes.length ? r1(median(cnpTimes)) : null,
      clusterPolicyChangeP90Ms: cnpTimes.length ? r1(p90(cnpTimes)) : null,
      localPods: local.length,
      clusterPods: size.pods,
      fullApplyMs: r1(fullApplyMs),
      policyChangeMs: r1(median(polTimes)),
      policyChangeP90Ms: r1(p90(polTimes)),
      podAddMs: r1(median(addTimes)),
      podAddP90Ms: r1(p90(addTimes)),
      plainRestoreMs: r1(plainRestoreMs),
      ratioVsPlainRestore: Math.round((fullApplyMs / plainRestoreMs) * 100) / 100,
      rules: first.rules,
      ipsets: first.ipsets,
      tcpLossPct: r1((1 - tcp("ours") / tcp("node")) * 100),
      udpLossPct: r1((1 - udp("ours") / udp("node")) * 100),
      tcpLossVsBarePct: r1((1 - tcp("ours") / tcp("bare")) * 100),
      udpLossVsBarePct: r1((1 - udp("ours") / udp("bare")) * 100),
      detail,
    };
  } finally {
    await labDown(lab);
    liveLabs.delete(lab);
  }
}

// ------------------------------------------------------------------ main

function printTable(runs: RunResult[]): void {
  const cols: [string, (r: RunResult) => string | number][] = [
    ["policies", (r) => r.policies],
    ["cnps", (r) => r.clusterPolicies],
    ["clusterPods", (r) => r.clusterPods],
    ["localPods", (r) => r.localPods],
    ["rules", (r) => r.rules],
    ["ipsets", (r) => r.ipsets],
    ["fullApply ms", (r) => r.fullApplyMs],
    ["plainRestore ms", (r) => r.plainRestoreMs],
    ["ratio", (r) => r.ratioVsPlainRestore],
    ["policyChg p50/p90", (r) => `${r.policyChangeMs}/${r.policyChangeP90Ms}`],
    [
      "cnpChg p50/p90",
      (r) =>
        r.clusterPolicyChangeMs === null ? "-" : `${r.clusterPolicyChangeMs}/${r.clusterPolicyChangeP90Ms}`,
    ],
    ["podAdd p50/p90", (r) => `${r.podAddMs}/${r.podAddP90Ms}`],
    ["tcp/udpLoss % vs node", (r) => `${r.tcpLossPct}/${r.udpLossPct}`],
    ["vs bare", (r) => `${r.tcpLossVsBarePct}/${r.udpLossVsBarePct}`],
  ];
  const rows = [cols.map(([h]) => h), ...runs.map((r) => cols.map(([, f]) => String(f(r))))];
  const w = cols.map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  for (const row of rows) process.stdout.write(`${row.map((c, i) => c.padStart(w[i])).join("  ")}\n`);
  for (const r of runs) process.stdout.write(`\n[${r.policies} policies] ${JSON.stringify(r.detail)}\n`);
  const last = runs[runs.length - 1];
  process.stdout.write(
    `\ngoals (${last.policies} policies): incremental < 50 ms: ${last.policyChangeMs < 50 && last.podAddMs < 50 ? "yes" : "NO"}; ` +
      `apply <= 1.3x plain restore: ${last.ratioVsPlainRestore <= 1.3 ? "yes" : "NO"}; ` +
      `established loss < 5% (vs a kube-proxy node): ${last.tcpLossPct < 5 && last.udpLossPct < 5 ? "yes" : "NO"}\n`,
  );
  for (const r of runs.filter((x) => x.clusterPolicyChangeMs !== null))
    process.stdout.write(
      `goal (${r.clusterPolicies} cluster policies): one ClusterNetworkPolicy change < 50 ms: ${(r.clusterPolicyChangeMs ?? 99) < 50 ? "yes" : "NO"} (${r.clusterPolicyChangeMs} ms)\n`,
    );
}

async function main(): Promise<void> {
  const runs: RunResult[] = [];
  try {
    for (const [i, size] of SIZES.entries()) runs.push(await runSize(size, i + 1));
  } finally {
    await cleanupAll();
  }
  printTable(runs);
  if (JSON_OUT) process.stdout.write(`${JSON.stringify({ runs })}\n`);
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`bench/dataplane failed: ${(e as Error).stack ?? e}\n`);
    process.exit(1);
  },
);
