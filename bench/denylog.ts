/**
 * bench/denylog: what deny logging costs in the iptables dataplane under a flood of denied
 * connections: the real agent (`node dist/cli/main.js agent --source DIR --lab L`) programming a lab
 * node, real packets.
 *
 *   npx tsx bench/denylog.ts [--json] [--quick]     (root; builds lab dlb<pid>, removes it after)
 *
 * Five pods: an attacker, a client, an allowed server, a denied victim, and a pod whose policy keeps
 * changing. The agent renders its deny logs (per-pod kernel limit, NFLOG, its own reader, one JSON line
 * per record through its line limit; here 100/s, burst 100 per pod and 1,000 lines/s, so the reader's
 * load is visible) and the victim's NetworkPolicy denies everything. A C helper
 * (bench/support/netbench.c, compiled here) offers the flood (raw UDP, every packet a new flow to the
 * victim, paced) and times sequential TCP connects client -> server. Throughout every arm a policy
 * file changes every 250 ms (4 syncs a second), so sync latency is measured under the same load.
 * Arms, in the same run: quiet (no flood), flood; then the agent is restarted with deny logs off
 * (`--deny-log-pod-rate 0`: a plain DROP) for the flood again: the flood's own cost without logging.
 * Once, in round 1: the agent with a kernel limit above the flood (100,000/s), to show what the
 * limit protects the agent from.
 * Reported: offered denied flows/s, records and lines/s, what the kernel limit dropped, the agent
 * process's CPU (cores, all its threads) during the flood, allowed-connection p50/p99 per arm, and
 * the agent's own sync time (render + apply, its "sync" log line) p99 during the flood and quiet.
 * --quick: 50k flows/s for 2 s, one round. --json: the LAST stdout line is one JSON object.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { readDenyLimitedPackets } from "../src/dataplane/deny-log-counters.js";
import { run } from "../src/dataplane/exec.js";
import { type LabState, labDown, labUp } from "../src/dataplane/lab/lab.js";
import { AgentUnderTest, metricValue } from "../test/support/agent-process.js";
import { compileNetbench } from "./support/netbench.js";

const args = new Set(process.argv.slice(2));
const JSON_OUT = args.has("--json");
const QUICK = args.has("--quick");

const ROOT = join(import.meta.dirname, "..");
const LAB = `dlb${process.pid.toString(36)}`.slice(0, 12);
const ATTACKER_IP = "10.253.0.2";
const CLIENT_IP = "10.253.0.3";
const SERVER_IP = "10.253.0.4";
const VICTIM_IP = "10.253.0.5";
const CHURN_IP = "10.253.0.6";
const TCP_PORT = 8080;
/** The kernel limit per pod, and the agent's node-wide line limit (above it: the kernel decides). */
const KERNEL_RATE = 100;
const KERNEL_BURST = 100;
const LINES_PER_SEC = 1000;
const CHURN_MS = 250;

const CFG = QUICK
  ? { pps: 50_000, secs: 2, rounds: 1, gapUs: 500, calibrate: 200 }
  : { pps: 100_000, secs: 10, rounds: 2, gapUs: 300, calibrate: 500 };
const GOALS = { agentCpuCores: 0.5, p99WithinPct: 10, syncP99Ms: 200 };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
function log(msg: string): void {
  process.stderr.write(`${msg}\n`);
}

function pct(samples: ArrayLike<number>, p: number): number {
  const s = Float64Array.from(samples).sort();
  if (s.length === 0) return Number.NaN;
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}
const r1 = (x: number) => Math.round(x * 10) / 10;
const r3 = (x: number) => Math.round(x * 1000) / 1000;

// ------------------------------------------------------------------ the cluster (a folder)

const pod = (name: string, ip: string) => `apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: bench, labels: { app: ${name} } }
spec: { nodeName: lab, containers: [{ name: c, image: x, ports: [{ containerPort: ${TCP_PORT} }] }] }
status: { phase: Running, podIP: ${ip}, podIPs: [{ ip: ${ip} }] }
`;
const CLUSTER = [
  "apiVersion: v1\nkind: Namespace\nmetadata: { name: bench }\n",
  pod("attacker", ATTACKER_IP),
  pod("client", CLIENT_IP),
  pod("server", SERVER_IP),
  pod("victim", VICTIM_IP),
  pod("churn", CHURN_IP),
].join("---\n");
const POLICIES = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: victim-deny-all, namespace: bench }
spec: { podSelector: { matchLabels: { app: victim } }, policyTypes: [Ingress] }
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: server-from-client, namespace: bench }
spec:
  podSelector: { matchLabels: { app: server } }
  ingress: [{ from: [{ podSelector: { matchLabels: { app: client } } }], ports: [{ port: ${TCP_PORT} }] }]
`;
/** The changing policy: one of four files, each holding one port that moves on every write. */
const churnPolicy = (k: number, port: number) => `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: churn-${k}, namespace: bench }
spec:
  podSelector: { matchLabels: { app: churn } }
  ingress: [{ from: [{ podSelector: { matchLabels: { app: client } } }], ports: [{ port: ${port} }] }]
`;

// ------------------------------------------------------------------ the agent

interface AgentRun {
  agent: AgentUnderTest;
  /** "sync" log lines with events: when (the line's own time, epoch ms) and the agent's render + apply time. */
  syncs: { at: number; ms: number }[];
  /** Deny lines for the victim, and how many of them named a policy. */
  lines: number;
  attributed: number;
}

async function startAgent(dir: string, rate: number, burst: number): Promise<AgentRun> {
  const agent = await AgentUnderTest.start([
    ...["--source", dir, "--lab", LAB, "--node-name", "lab"],
    ...["--deny-log-pod-rate", String(rate), "--deny-log-pod-burst", String(burst)],
    ...["--deny-logs-per-second", String(LINES_PER_SEC)],
  ]);
  const r: AgentRun = { agent, syncs: [], lines: 0, attributed: 0 };
  // The log is parsed as it arrives; only counts are kept.
  const lines = agent.lines;
  let seen = 0;
  const drain = () => {
    for (; seen < lines.length; seen++) {
      const l = lines[seen];
      if (l.msg === "sync" && (l.events as number) > 0)
        r.syncs.push({ at: l.time as number, ms: l.syncMs as number });
      else if (l.event === "deny" && l.dstIP === VICTIM_IP) {
        r.lines++;
        if ((l.policies as string[]).length > 0) r.attributed++;
      }
    }
    lines.length = 0;
    seen = 0;
  };
  agent.child.stderr!.on("data", () => setImmediate(drain));
  return r;
}

/** utime + stime of the agent process (every thread), in microseconds. */
function agentCpuUs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(f[11]) + Number(f[12])) * 1e6) / CLK_TCK;
}
let CLK_TCK = 100;

async function agentMetric(a: AgentRun, name: string, labels: Record<string, string> = {}): Promise<number> {
  return metricValue((await a.agent.get("/metrics")).body, name, labels) ?? 0;
}

/** Packets that entered the victim's chain (its dispatch rule's counter). */
async function victimEntered(lab: LabState): Promise<number> {
  const victimIf = lab.pods.find((p) => p.key === "bench/victim")!.hostIf;
  const out = (await run("iptables-save", ["-c", "-t", "filter"], { netns: lab.nodeNetns })).stdout;
  let n = 0;
  for (const line of out.split("\n"))
    if (line.includes(`-A PODWALL-FORWARD -o ${victimIf} `) && line.includes("-j PODWALL-ING-"))
      n += Number(/^\[(\d+):/.exec(line)?.[1] ?? 0);
  return n;
}

// ------------------------------------------------------------------ load

const LAST_CPU = availableParallelism() - 1;

function podNetns(lab: LabState, key: string): string {
  return lab.pods.find((p) => p.key === key)!.netns;
}

async function connlat(lab: LabState, bin: string, n: number): Promise<{ samples: number[]; fail: number }> {
  // The client on CPU 0, the flood on the last CPU: the flood's softirq work stays on its own CPU.
  const res = await run(
    "taskset",
    ["-c", "0", bin, "connlat", SERVER_IP, String(TCP_PORT), String(n), String(CFG.gapUs)],
    { netns: podNetns(lab, "bench/client"), timeoutMs: 300_000 },
  );
  const all = res.stdout.trim().split("\n").map(Number);
  return { samples: all.filter((x) => x >= 0), fail: all.filter((x) => x < 0).length };
}

async function flood(lab: LabState, bin: string): Promise<{ sent: number; secs: number }> {
  const res = await run(
    "taskset",
    [
      ...["-c", String(LAST_CPU), bin, "flood", ATTACKER_IP, VICTIM_IP, "9000", "64"],
      ...[String(CFG.pps), String(CFG.secs)],
    ],
    { netns: podNetns(lab, "bench/attacker"), timeoutMs: 300_000 },
  );
  return JSON.parse(res.stdout.trim()) as { sent: number; secs: number };
}

interface FloodArm {
  samples: number[];
  fail: number;
  sent: number;
  secs: number;
  entered: number;
  cpuUs: number;
  records: number;
  attributed: number;
  lines: number;
  limited: number;
  lost: number;
  /** The agent's sync times (ms) while the flood ran. */
  syncMs: number[];
}

interface Mark {
  records: number;
  lost: number;
  limited: number;
  entered: number;
  lines: number;
  attributed: number;
}

async function mark(lab: LabState, a: AgentRun): Promise<Mark> {
  const [attr, unattr, lost, limited, entered] = await Promise.all([
    agentMetric(a, "podwall_deny_log_records_total", { result: "attributed" }),
    agentMetric(a, "podwall_deny_log_records_total", { result: "unattributed" }),
    agentMetric(a, "podwall_deny_log_records_lost_total"),
    readDenyLimitedPackets({ netns: lab.nodeNetns }),
    victimEntered(lab),
  ]);
  return {
    records: attr + unattr,
    lost,
    limited: limited.v4 ?? 0,
    entered,
    lines: a.lines,
    attributed: a.attributed,
  };
}

async function floodArm(lab: LabState, bin: string, a: AgentRun, n: number): Promise<FloodArm> {
  const m0 = await mark(lab, a);
  const pid = a.agent.child.pid!;
  const cpu0 = agentCpuUs(pid);
  const t0 = Date.now();
  const fl = flood(lab, bin);
  await sleep(300);
  const c = await connlat(lab, bin, n);
  const f = await fl;
  const cpu1 = agentCpuUs(pid);
  const t1 = Date.now();
  // The kernel's flush timeout, the reader's last batch, the agent's loss export (every 2 s).
  await sleep(2500);
  const m1 = await mark(lab, a);
  return {
    samples: c.samples,
    fail: c.fail,
    sent: f.sent,
    secs: f.secs,
    entered: m1.entered - m0.entered,
    cpuUs: cpu1 - cpu0,
    records: m1.records - m0.records,
    attributed: m1.attributed - m0.attributed,
    lines: m1.lines - m0.lines,
    limited: m1.limited - m0.limited,
    lost: m1.lost - m0.lost,
    syncMs: a.syncs.filter((x) => x.at >= t0 && x.at <= t1).map((x) => x.ms),
  };
}

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  const started = performance.now();
  log(`podwall deny-log benchmark (${QUICK ? "quick" : "full"}, node ${process.version}), the real agent`);
  await run("npx", ["tsc", "-p", join(ROOT, "tsconfig.json")], { timeoutMs: 300_000 });
  CLK_TCK = Number((await run("getconf", ["CLK_TCK"])).stdout.trim()) || 100;
  const dir = mkdtempSync(join(tmpdir(), "podwall-dlb-"));
  const src = join(dir, "cluster");
  let lab: LabState | undefined;
  let server: ChildProcess | undefined;
  let agent: AgentRun | undefined;
  let churn: NodeJS.Timeout | undefined;
  const cleanup = async () => {
    if (churn) clearInterval(churn);
    if (server && server.exitCode === null) server.kill("SIGKILL");
    await agent?.agent.kill("SIGKILL").catch(() => {});
    agent = undefined;
    await labDown(LAB).catch((e) => log(`lab down: ${(e as Error).message}`));
    rmSync(dir, { recursive: true, force: true });
  };
  const onSignal = () => void cleanup().finally(() => process.exit(130));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  const quiet: number[] = [];
  const quietSyncMs: number[] = [];
  let quietCpuUs = 0;
  let quietSecs = 0;
  const plain: number[] = [];
  const plainSyncMs: number[] = [];
  const logged: FloodArm[] = [];
  let unlimited: FloodArm | undefined;
  let failures = 0;
  let perConnectUs = 0;
  let n = 0;
  try {
    const bin = await compileNetbench(dir);
    await run("mkdir", ["-p", src]);
    writeFileSync(join(src, "00-cluster.yaml"), CLUSTER);
    writeFileSync(join(src, "10-policies.yaml"), POLICIES);
    for (let k = 0; k < 4; k++) writeFileSync(join(src, `20-churn-${k}.yaml`), churnPolicy(k, 9000 + k));
    lab = await labUp(LAB, [
      { key: "bench/attacker", ips: [ATTACKER_IP], serve: [] },
      { key: "bench/client", ips: [CLIENT_IP], serve: [] },
      { key: "bench/server", ips: [SERVER_IP], serve: [] },
      { key: "bench/victim", ips: [VICTIM_IP], serve: [] },
      { key: "bench/churn", ips: [CHURN_IP], serve: [] },
    ]);
    server = spawn(
      "ip",
      ["netns", "exec", podNetns(lab, "bench/server"), "taskset", "-c", "0", bin, "server", String(TCP_PORT)],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    await new Promise<void>((resolve, reject) => {
      server!.stdout!.once("data", () => resolve());
      server!.once("exit", (c) => reject(new Error(`bench server exited (${c})`)));
    });
    // A policy change every CHURN_MS, each file rewritten every 4 x CHURN_MS (a file is read once it
    // has been stable for 300 ms). Paused while an agent starts: its first read waits for a still folder.
    let writes = 0;
    const churnOn = () => {
      churn = setInterval(() => {
        const k = writes % 4;
        // Never the port the file already holds, so every write is a change.
        writeFileSync(join(src, `20-churn-${k}.yaml`), churnPolicy(k, 9100 + (writes % 900)));
        writes++;
      }, CHURN_MS);
    };
    const restart = async (rate: number, burst: number) => {
      if (churn) clearInterval(churn);
      await agent?.agent.kill("SIGTERM");
      await sleep(400);
      agent = await startAgent(src, rate, burst);
      churnOn();
      await sleep(1000); // the first changes are read and synced: measure in steady state
      return agent;
    };
    agent = await restart(KERNEL_RATE, KERNEL_BURST);

    // Size the connect runs to fit inside the flood (with its first 300 ms left out).
    const t0 = performance.now();
    await connlat(lab, bin, CFG.calibrate);
    perConnectUs = ((performance.now() - t0) * 1000) / CFG.calibrate;
    n = Math.max(200, Math.floor((0.75 * (CFG.secs - 0.3) * 1e6) / perConnectUs));
    log(`  ${r1(perConnectUs)} us per connect with a ${CFG.gapUs} us gap: ${n} connects per arm`);

    for (let round = 0; round < CFG.rounds; round++) {
      const pid = agent.agent.child.pid!;
      const c0 = agentCpuUs(pid);
      const q0 = Date.now();
      const q = await connlat(lab, bin, n);
      const q1 = Date.now();
      quietCpuUs += agentCpuUs(pid) - c0;
      quietSecs += (q1 - q0) / 1000;
      quietSyncMs.push(...agent.syncs.filter((x) => x.at >= q0 && x.at <= q1).map((x) => x.ms));
      quiet.push(...q.samples);
      failures += q.fail;
      const a = await floodArm(lab, bin, agent, n);
      logged.push(a);
      failures += a.fail;
      log(
        `  round ${round + 1}: quiet p99 ${r1(pct(q.samples, 99))} us; flood ${Math.round(a.sent / a.secs)}/s: p99 ${r1(pct(a.samples, 99))} us, ${a.records} records, ${a.lines} lines, ${a.limited} limited by the kernel, agent CPU ${r3(a.cpuUs / 1e6 / a.secs)} cores, ${a.syncMs.length} syncs (p99 ${r1(pct(a.syncMs, 99))} ms)`,
      );
      // The same flood against a plain DROP: the agent with deny logs off.
      const p = await floodArm(lab, bin, await restart(0, 1), n);
      plain.push(...p.samples);
      plainSyncMs.push(...p.syncMs);
      failures += p.fail;
      log(
        `  round ${round + 1}: flood with a plain DROP: p99 ${r1(pct(p.samples, 99))} us, ${p.records} records`,
      );
      if (round === 0) {
        // What the kernel limit protects the agent from: (almost) every denied packet copied to it.
        unlimited = await floodArm(lab, bin, await restart(100_000, 100_000), n);
        failures += unlimited.fail;
        log(
          `  round 1: flood with a kernel limit above it: p99 ${r1(pct(unlimited.samples, 99))} us, ${unlimited.records} records, ${unlimited.lost} lost, agent CPU ${r3(unlimited.cpuUs / 1e6 / unlimited.secs)} cores`,
        );
      }
      agent = await restart(KERNEL_RATE, KERNEL_BURST);
    }
  } finally {
    await cleanup();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }

  const sum = (k: keyof FloodArm) => logged.reduce((s, a) => s + (a[k] as number), 0);
  const secs = sum("secs");
  const floodSamples = logged.flatMap((a) => a.samples);
  const floodSyncMs = logged.flatMap((a) => a.syncMs);
  const out = {
    offeredDeniedPerSec: Math.round(sum("sent") / secs),
    loggedPerSec: r1(sum("lines") / secs),
    agentCpuCores: r3(sum("cpuUs") / 1e6 / secs),
    allowedP99UsFlood: r1(pct(floodSamples, 99)),
    allowedP99UsQuiet: r1(pct(quiet, 99)),
    syncP99MsFlood: r1(pct(floodSyncMs, 99)),
    // Beyond the fields:
    syncP99MsQuiet: r1(pct(quietSyncMs, 99)),
    syncP99MsFloodPlainDrop: r1(pct(plainSyncMs, 99)),
    syncP50MsFlood: r1(pct(floodSyncMs, 50)),
    syncsDuringFlood: floodSyncMs.length,
    agentCpuCoresQuiet: r3(quietCpuUs / 1e6 / Math.max(quietSecs, 1e-9)),
    recordsPerSec: r1(sum("records") / secs),
    kernelLimitedPerSec: Math.round(sum("limited") / secs),
    deniedEnteredPerSec: Math.round(sum("entered") / secs),
    attributedPct: r1((100 * sum("attributed")) / Math.max(1, sum("lines"))),
    readerLost: sum("lost"),
    allowedP50UsFlood: r1(pct(floodSamples, 50)),
    allowedP50UsQuiet: r1(pct(quiet, 50)),
    allowedP99UsFloodPlainDrop: r1(pct(plain, 99)),
    allowedP50UsFloodPlainDrop: r1(pct(plain, 50)),
    // One run of the flood with the kernel limit above it (round 1).
    unlimited: unlimited && {
      offeredPerSec: Math.round(unlimited.sent / unlimited.secs),
      recordsPerSec: Math.round(unlimited.records / unlimited.secs),
      lostPerSec: Math.round(unlimited.lost / unlimited.secs),
      linesPerSec: r1(unlimited.lines / unlimited.secs),
      agentCpuCores: r3(unlimited.cpuUs / 1e6 / unlimited.secs),
      allowedP99Us: r1(pct(unlimited.samples, 99)),
      syncP99Ms: r1(pct(unlimited.syncMs, 99)),
    },
    targetDeniedPerSec: CFG.pps,
    connectsPerArm: n * CFG.rounds,
    connectFailures: failures,
    kernelRatePerPod: KERNEL_RATE,
    kernelBurstPerPod: KERNEL_BURST,
    linesPerSecLimit: LINES_PER_SEC,
    quick: QUICK,
  };
  const p99Pct = r1((100 * (out.allowedP99UsFlood - out.allowedP99UsQuiet)) / out.allowedP99UsQuiet);
  const ok = (b: boolean) => (b ? "ok" : "MISSED");
  const rows: [string, string, string][] = [
    ["metric", "this run", "goal"],
    [`offered denied new flows/s (one pod; sender asked for ${CFG.pps})`, `${out.offeredDeniedPerSec}`, ""],
    ["  reached the pod's deny chain /s", `${out.deniedEnteredPerSec}`, ""],
    ["  dropped by the kernel limit /s", `${out.kernelLimitedPerSec}`, ""],
    [
      `  records read /s (limit ${KERNEL_RATE}/s, burst ${KERNEL_BURST}, per pod)`,
      `${out.recordsPerSec}`,
      "",
    ],
    ["  lines logged /s", `${out.loggedPerSec}`, ""],
    ["  lines naming the deciding policy", `${out.attributedPct}%`, "100%"],
    ["  records lost between kernel and agent", `${out.readerLost}`, ""],
    [
      "agent CPU during the flood (cores) / quiet",
      `${out.agentCpuCores} / ${out.agentCpuCoresQuiet}`,
      `< ${GOALS.agentCpuCores} ${ok(out.agentCpuCores < GOALS.agentCpuCores)}`,
    ],
    [
      "allowed connect p50 quiet / flood / flood, plain DROP (us)",
      `${out.allowedP50UsQuiet} / ${out.allowedP50UsFlood} / ${out.allowedP50UsFloodPlainDrop}`,
      "",
    ],
    [
      "allowed connect p99 quiet / flood / flood, plain DROP (us)",
      `${out.allowedP99UsQuiet} / ${out.allowedP99UsFlood} / ${out.allowedP99UsFloodPlainDrop}`,
      "",
    ],
    [
      "allowed p99, flood vs quiet",
      `${p99Pct > 0 ? "+" : ""}${p99Pct}%`,
      `within ${GOALS.p99WithinPct}% ${ok(p99Pct <= GOALS.p99WithinPct)}`,
    ],
    [
      `agent sync (render + apply) p99 flood / quiet / flood, plain DROP (ms; ${out.syncsDuringFlood} syncs in the flood)`,
      `${out.syncP99MsFlood} / ${out.syncP99MsQuiet} / ${out.syncP99MsFloodPlainDrop}`,
      `< ${GOALS.syncP99Ms} ${ok(out.syncP99MsFlood < GOALS.syncP99Ms)}`,
    ],
    [
      "kernel limit above the flood: records / lost /s",
      `${out.unlimited?.recordsPerSec} / ${out.unlimited?.lostPerSec}`,
      "",
    ],
    [
      "kernel limit above the flood: agent CPU (cores), allowed p99 (us), sync p99 (ms)",
      `${out.unlimited?.agentCpuCores}, ${out.unlimited?.allowedP99Us}, ${out.unlimited?.syncP99Ms}`,
      "",
    ],
  ];
  const w = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i].length)));
  const lines = rows.map((r) =>
    r
      .map((c, i) => c.padEnd(w[i]))
      .join("  ")
      .trimEnd(),
  );
  lines.splice(1, 0, w.map((x) => "-".repeat(x)).join("  "));
  process.stdout.write(
    `\npodwall deny-log benchmark (${QUICK ? "quick" : "full"}), ${((performance.now() - started) / 1000).toFixed(0)} s, ${out.connectsPerArm} connects per arm, ${out.connectFailures} failed\n${lines.join("\n")}\n`,
  );
  if (JSON_OUT) process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((e) => {
  log(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  process.exit(1);
});
