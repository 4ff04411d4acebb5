/**
 * bench/agent-memory: the agent's peak memory under a flood of pod events, to size the DaemonSet's
 * memory request and limit (deploy/kind/podwall.yaml). An API server double (the real list/watch
 * protocol over HTTP) holds 2k pods and 200 policies; `podwall agent --lab` programs a lab node
 * with 100 of them local. Then 20 rounds of 10k pod updates, each round released to the watch at
 * once, a second apart (or as soon as it is made, when the generator falls behind): label flips
 * cluster-wide (new label-set identities, selector re-evaluation) and on local pods (rules
 * rewritten). $PODWALL_AGENT_NODE runs the agent on another Node.js (see test/support).
 * Same-run baseline: the agent's RSS settled after its first sync, before the flood.
 * Measured: RSS sampled every 50 ms, and VmHWM (the kernel's exact RSS high-water mark) at the end.
 * Prints a table; with --json the last line is one JSON object. --quick: a small, short run.
 */
import type { ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import type { PodInfo } from "../src/compiler/model.js";
import { labDown, labUp } from "../src/dataplane/lab/lab.js";
import { freePort, spawnKubeAgent, until } from "../test/support/agent-process.js";
import { ApiServerDouble } from "../test/support/apiserver-double.js";
import { syntheticCluster } from "../test/support/cluster-gen.js";

const QUICK = process.argv.includes("--quick");
const JSON_OUT = process.argv.includes("--json");
const CFG = QUICK
  ? { pods: 500, local: 20, policies: 50, rate: 2000, seconds: 3 }
  : { pods: 2000, local: 100, policies: 200, rate: 10_000, seconds: 20 };
const LAB = `am${process.pid.toString(36)}`.slice(0, 12);
const log = (s: string) => process.stderr.write(`${s}\n`);

function podObject(p: PodInfo, nodeName: string) {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: p.name, namespace: p.namespace, labels: { ...p.labels } },
    spec: {
      nodeName,
      containers: [
        {
          name: "c",
          image: "i",
          ports: p.ports.map((c) => ({
            name: c.name || undefined,
            containerPort: c.port,
            protocol: c.protocol,
          })),
        },
      ],
    },
    status: { phase: p.phase, podIP: p.ips[0], podIPs: p.ips.map((ip) => ({ ip })) },
  };
}

function statusKB(pid: number, field: "VmRSS" | "VmHWM"): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : Number.NaN;
}

const mib = (kb: number) => Math.round(kb / 102.4) / 10;

async function main() {
  const c = syntheticCluster(CFG.pods, CFG.policies, 5);
  const live = c.pods.filter((p) => p.phase === "Running" && p.ips.length > 0 && !p.hostNetwork);
  const local = live.slice(0, CFG.local);
  const localKeys = new Set(local.map((p) => `${p.namespace}/${p.name}`));
  const api = new ApiServerDouble({ historyLimit: 50_000 });
  await api.start();
  for (const ns of c.namespaces)
    api.create("Namespace", {
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name: ns.name, labels: { ...ns.labels } },
    });
  const objects = new Map<PodInfo, ReturnType<typeof podObject>>();
  for (const p of c.pods) {
    const o = podObject(p, localKeys.has(`${p.namespace}/${p.name}`) ? "lab" : "other-node");
    objects.set(p, o);
    api.create("Pod", o);
  }
  for (const pol of c.policies) api.create("NetworkPolicy", pol as Record<string, unknown>);
  log(`cluster: ${c.pods.length} pods, ${c.policies.length} policies, ${local.length} local; lab ${LAB} ...`);
  await labUp(
    LAB,
    local.map((p) => ({ key: `${p.namespace}/${p.name}`, ips: [...p.ips], serve: [] })),
  );
  let syncs = 0;
  let events = 0;
  let failed = 0;
  let agent: ChildProcess | undefined;
  try {
    agent = spawnKubeAgent({
      kubeconfig: api.kubeconfigFile(),
      lab: LAB,
      metricsPort: await freePort(),
      onLine: (o) => {
        if (o.msg === "sync") {
          syncs++;
          events += Number(o.events);
        } else if (Number(o.level) >= 50) failed++;
      },
    });
    if (!(await until(() => syncs > 0, 60_000))) throw new Error("the agent never synced");
    await new Promise((r) => setTimeout(r, 3000));
    const pid = agent.pid!;
    const baseline = statusKB(pid, "VmRSS");
    const events0 = events;

    // The flood: each second, `rate` pod updates, each flipping a label between a few values (so
    // identities come and go and the selectors that match them are re-evaluated). The watch is held
    // while a second's updates are made and released on the second, so the agent receives `rate`
    // events a second even when this shared machine leaves the generator less than a CPU.
    const samples: number[] = [];
    const sampler = setInterval(() => samples.push(statusKB(pid, "VmRSS")), 50);
    const t0 = performance.now();
    let sent = 0;
    for (let sec = 1; sec <= CFG.seconds; sec++) {
      api.stallWatches();
      for (let i = 0; i < CFG.rate; i++, sent++) {
        const p = live[sent % live.length];
        const o = objects.get(p)!;
        o.metadata.labels = { ...p.labels, flood: String(((sent / live.length) % 4) | 0) };
        api.update("Pod", o);
      }
      await new Promise((r) => setTimeout(r, Math.max(0, t0 + sec * 1000 - performance.now())));
      api.resumeWatches();
    }
    const floodS = (performance.now() - t0) / 1000;
    // Let the agent catch up (its events drain), then read the kernel's high-water mark.
    await until(() => events - events0 >= sent * 0.99, 60_000, 50);
    const drainedS = (performance.now() - t0) / 1000;
    await new Promise((r) => setTimeout(r, 2000));
    clearInterval(sampler);
    const hwm = statusKB(pid, "VmHWM");
    const settled = statusKB(pid, "VmRSS");
    const out = {
      pods: c.pods.length,
      localPods: local.length,
      policies: c.policies.length,
      eventsSent: sent,
      ratePerS: Math.round(sent / floodS),
      eventsSynced: events - events0,
      drainedAfterS: Math.round(drainedS * 10) / 10,
      syncErrors: failed,
      baselineRssMiB: mib(baseline),
      peakRssSampledMiB: mib(Math.max(...samples)),
      peakRssHwmMiB: mib(hwm),
      settledRssMiB: mib(settled),
    };
    const rows: [string, string][] = [
      ["events sent (rate)", `${out.eventsSent} (${out.ratePerS}/s for ${CFG.seconds} s)`],
      ["events the agent synced (drained after)", `${out.eventsSynced} (${out.drainedAfterS} s)`],
      ["RSS before the flood, settled (baseline)", `${out.baselineRssMiB} MiB`],
      ["peak RSS, sampled every 50 ms", `${out.peakRssSampledMiB} MiB`],
      ["peak RSS, VmHWM", `${out.peakRssHwmMiB} MiB`],
      ["RSS 2 s after the flood drained", `${out.settledRssMiB} MiB`],
    ];
    process.stdout.write(
      `podwall agent memory under a pod-event flood: ${out.pods} pods (${out.localPods} local), ${out.policies} policies\n`,
    );
    for (const [k, v] of rows) process.stdout.write(`${k.padEnd(44)} ${v}\n`);
    if (JSON_OUT) process.stdout.write(`${JSON.stringify(out)}\n`);
  } finally {
    if (agent && agent.exitCode === null) {
      const done = new Promise((r) => agent!.once("exit", r));
      agent.kill("SIGKILL");
      await done;
    }
    await labDown(LAB);
    await api.close();
  }
}

await main();
