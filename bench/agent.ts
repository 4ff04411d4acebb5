/**
 * bench/agent: the whole agent process, end to end: an API server double (the real list/watch
 * protocol over HTTP) feeding `podwall agent --lab`, which programs a lab node with 100 local pods.
 *
 * - policy-to-enforced latency: from the API write (double.create/update, epoch ms) to the agent's
 *   "sync" log line that carried it (pino's `time` field, epoch ms, written after the kernel apply
 *   returned). Samples are spaced so each lands in its own sync.
 * - CPU per 1k events: utime+stime of the agent (/proc/PID/stat) across a burst of 1000 events.
 * - RSS: VmRSS of the agent after the cluster grew to 10k pods.
 * Prints a table; with --json the last line is one JSON object. --quick: a small, fast run.
 */
import type { ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import type { PodInfo } from "../src/compiler/model.js";
import { labDown, labUp } from "../src/dataplane/lab/lab.js";
import { spawnKubeAgent, until } from "../test/support/agent-process.js";
import { ApiServerDouble } from "../test/support/apiserver-double.js";
import { syntheticCluster } from "../test/support/cluster-gen.js";

const QUICK = process.argv.includes("--quick");
const JSON_OUT = process.argv.includes("--json");
const CFG = QUICK
  ? { pods: 200, local: 20, policies: 50, samples: 10, rssPods: 2000, burst: 1000 }
  : // 200 samples: with 50, "p99" was the single slowest write.
    { pods: 1000, local: 100, policies: 500, samples: 200, rssPods: 10000, burst: 1000 };
const LAB = `ab${process.pid.toString(36)}`.slice(0, 12);
const PORT = 19900 + (process.pid % 90);
const log = (s: string) => process.stderr.write(`${s}\n`);

function podObject(p: PodInfo) {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: p.name, namespace: p.namespace, labels: { ...p.labels } },
    spec: {
      nodeName: "other-node",
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

function pct(sorted: number[], q: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : Number.NaN;
}

function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

function rssMB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

async function main() {
  const c = syntheticCluster(CFG.pods, CFG.policies, 3);
  const live = c.pods.filter((p) => p.phase === "Running" && p.ips.length > 0 && !p.hostNetwork);
  const local = live.slice(0, CFG.local);
  const api = new ApiServerDouble({ historyLimit: 100_000 });
  await api.start();
  for (const ns of c.namespaces)
    api.create("Namespace", {
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name: ns.name, labels: { ...ns.labels } },
    });
  for (const p of c.pods) api.create("Pod", podObject(p));
  for (const pol of c.policies) api.create("NetworkPolicy", pol as Record<string, unknown>);
  log(
    `cluster: ${c.pods.length} pods, ${c.policies.length} policies, ${local.length} local; building lab ${LAB} ...`,
  );
  await labUp(
    LAB,
    local.map((p) => ({ key: `${p.namespace}/${p.name}`, ips: [...p.ips], serve: [] })),
  );
  const syncs: { time: number; events: number; chainsWritten: number; membersAdded: number }[] = [];
  let agent: ChildProcess | undefined;
  try {
    agent = spawnKubeAgent({
      kubeconfig: api.kubeconfigFile(),
      lab: LAB,
      metricsPort: PORT,
      onLine: (o) => {
        if (o.msg === "sync") syncs.push(o as unknown as (typeof syncs)[number]);
      },
    });
    if (!(await until(() => syncs.length > 0, 60_000))) throw new Error("the agent never synced");
    const first = syncs[0] as unknown as Record<string, number>;
    log(`first sync: ${first.rules} rules, ${first.ipsets} ipsets, apply ${first.applyMs} ms`);
    await new Promise((r) => setTimeout(r, 500));

    /** Latency of one write: the first sync after it that carried events. */
    const measure = async (write: () => void): Promise<number> => {
      const n = syncs.length;
      const t0 = Date.now();
      write();
      if (!(await until(() => syncs.slice(n).some((s) => s.events > 0), 10_000, 2)))
        throw new Error("no sync after a write");
      const s = syncs.slice(n).find((x) => x.events > 0)!;
      await new Promise((r) => setTimeout(r, 60));
      return s.time - t0;
    };

    // Policy adds: each selects one local pod's labels and allows a port from its namespace.
    const policyAdd: number[] = [];
    for (let i = 0; i < CFG.samples; i++) {
      const p = local[i % local.length];
      policyAdd.push(
        await measure(() =>
          api.create("NetworkPolicy", {
            apiVersion: "networking.k8s.io/v1",
            kind: "NetworkPolicy",
            metadata: { name: `bench-add-${i}`, namespace: p.namespace },
            spec: {
              podSelector: { matchLabels: { app: p.labels.app } },
              ingress: [{ from: [{ podSelector: {} }], ports: [{ port: 10000 + i }] }],
            },
          }),
        ),
      );
    }
    // Pod label changes: a local pod flips in and out of a label set the bench policies use.
    const podLabel: number[] = [];
    for (let i = 0; i < CFG.samples; i++) {
      // Each pod moves out (even sample) and back (odd sample): every write changes its labels.
      const p = local[Math.floor(i / 2) % local.length];
      const o = api.get("Pod", p.name, p.namespace)!;
      o.metadata.labels = { ...o.metadata.labels, app: i % 2 ? p.labels.app : `${p.labels.app}-moved` };
      podLabel.push(await measure(() => api.update("Pod", o)));
    }

    // CPU per 1k events: a burst of pod label flips on remote pods and policy updates.
    const remote = live.slice(CFG.local);
    const cpu0 = cpuSeconds(agent.pid!);
    const events0 = syncs.reduce((a, s) => a + s.events, 0);
    for (let i = 0; i < CFG.burst; i++) {
      const p = remote[i % remote.length];
      const o = api.get("Pod", p.name, p.namespace)!;
      o.metadata.labels = { ...o.metadata.labels, burst: String(i) };
      api.update("Pod", o);
      if (i % 50 === 49) await new Promise((r) => setTimeout(r, 5));
    }
    await until(() => syncs.reduce((a, s) => a + s.events, 0) - events0 >= CFG.burst * 0.95, 30_000, 20);
    await new Promise((r) => setTimeout(r, 300));
    const cpuPer1k = ((cpuSeconds(agent.pid!) - cpu0) * 1000) / CFG.burst;

    // RSS with the cluster grown to rssPods pods.
    const extra = syntheticCluster(CFG.rssPods, 0, 9).pods;
    let added = 0;
    for (const p of extra) {
      if (added >= CFG.rssPods - c.pods.length) break;
      api.create(
        "Pod",
        podObject({ ...p, name: `${p.name}-x`, ips: [`10.200.${(added >> 8) & 255}.${added & 255}`] }),
      );
      added++;
      if (added % 500 === 0) await new Promise((r) => setTimeout(r, 5));
    }
    const target = c.pods.length + added;
    await until(
      async () => {
        const m = await fetch(`http://127.0.0.1:${PORT}/metrics`).then(
          (r) => r.text(),
          () => "",
        );
        const v = /^podwall_pods (\d+)/m.exec(m);
        return v !== null && Number(v[1]) >= target;
      },
      60_000,
      200,
    );
    // V8 gives memory back to the OS a while after a burst (its memory reducer runs when idle):
    // report the settled value, and show the curve.
    const heap = async () => {
      const m = await fetch(`http://127.0.0.1:${PORT}/metrics`).then(
        (r) => r.text(),
        () => "",
      );
      const v = /^podwall_nodejs_heap_size_used_bytes (\S+)/m.exec(m);
      return v ? Math.round(Number(v[1]) / 1048576) : Number.NaN;
    };
    const curve: string[] = [];
    let rss = Number.NaN;
    for (const at of [2, 10, 20]) {
      await new Promise((r) =>
        setTimeout(r, (at - (curve.length ? [2, 10, 20][curve.length - 1] : 0)) * 1000),
      );
      rss = rssMB(agent.pid!);
      curve.push(`${at}s: RSS ${rss.toFixed(0)} MB, heap used ${await heap()} MB`);
    }
    log(`after loading ${CFG.rssPods} pods: ${curve.join("; ")}`);
    if (process.env.AGENT_HEAP_SNAPSHOT) {
      agent.kill("SIGUSR2");
      await new Promise((r) => setTimeout(r, 8000));
    }

    const pa = [...policyAdd].sort((a, b) => a - b);
    const pl = [...podLabel].sort((a, b) => a - b);
    log(
      `slowest policy adds: ${pa.slice(-5).join(", ")} ms; slowest label changes: ${pl.slice(-5).join(", ")} ms`,
    );
    const out = {
      policyAddP50Ms: pct(pa, 0.5),
      policyAddP99Ms: pct(pa, 0.99),
      podLabelP50Ms: pct(pl, 0.5),
      podLabelP99Ms: pct(pl, 0.99),
      cpuSecPer1kEvents: Math.round(cpuPer1k * 1000) / 1000,
      rssMBAt10kPods: Math.round(rss * 10) / 10,
      clusterPods: c.pods.length,
      localPods: local.length,
      policies: c.policies.length,
      samples: CFG.samples,
      rssPods: target,
      firstSyncRules: first.rules,
    };
    const rows: [string, string, string][] = [
      [
        "policy add -> enforced, p50 / p99 (ms)",
        `${out.policyAddP50Ms} / ${out.policyAddP99Ms}`,
        "p99 < 200",
      ],
      [
        "pod label change -> enforced, p50 / p99 (ms)",
        `${out.podLabelP50Ms} / ${out.podLabelP99Ms}`,
        "p99 < 200",
      ],
      [`agent CPU per 1k events (s)`, String(out.cpuSecPer1kEvents), ""],
      [`agent RSS at ${target} pods (MB)`, String(out.rssMBAt10kPods), "< 200"],
    ];
    process.stdout.write(
      `podwall agent benchmark: ${out.clusterPods} pods (${out.localPods} local), ${out.policies} policies\n`,
    );
    for (const [k, v, g] of rows) process.stdout.write(`${k.padEnd(48)} ${v.padEnd(16)} ${g}\n`);
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
