/**
 * bench/denylog: what deny logging costs in the iptables dataplane under a flood of denied
 * connections, with real packets in a lab node.
 *
 *   npx tsx bench/denylog.ts [--json] [--quick]     (root; builds lab dlb<pid>, removes it after)
 *
 * Four pods: an attacker, a client, an allowed server, a denied victim. The node's FORWARD chain
 * holds podwall's shape: ESTABLISHED accepted, then per-pod chains; the victim's (and the server's)
 * deny goes through deny-log-rules (per-pod hashlimit to PODWALL-DENY-LIMITED, NFLOG, DROP). The
 * deny-log path of the agent runs alone in its own process (bench/support/denylog-reader.ts:
 * NflogReader, prefix -> id, DenyLog lines into /dev/null), so its CPU is what the agent would add.
 * A C helper (bench/support/netbench.c, compiled here) offers the flood (raw UDP, every packet a new
 * flow to the victim, paced) and times sequential TCP connects client -> server.
 * Arms, alternated in the same run: quiet (no flood), flood (the rules above), and flood with a plain
 * DROP for the victim (no hashlimit, no NFLOG): the flood's own cost, without the logging. Once, in
 * round 1: the flood with NFLOG but no limit, to show what the limit protects the reader from.
 * Reported: offered denied flows/s, records and lines/s, what the kernel limit dropped, the reader
 * process's CPU (cores) during the flood, allowed-connection p50/p99 per arm. syncP99MsFlood is null:
 * the agent does not run the reader yet (issue 11 integration).
 * --quick: 50k flows/s for 2 s, one round. --json: the LAST stdout line is one JSON object.
 */
import { type ChildProcess, fork, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { readDenyLimitedPackets } from "../src/dataplane/deny-log-counters.js";
import {
  DENY_LIMITED_CHAIN,
  denyLimitedChainRules,
  denyLogRuleArgs,
} from "../src/dataplane/deny-log-rules.js";
import { run } from "../src/dataplane/exec.js";
import { type LabState, labDown, labUp } from "../src/dataplane/lab/lab.js";
import type { FromReader, Mark, ToReader } from "./support/denylog-reader.js";
import { compileNetbench } from "./support/netbench.js";

const args = new Set(process.argv.slice(2));
const JSON_OUT = args.has("--json");
const QUICK = args.has("--quick");

const LAB = `dlb${process.pid.toString(36)}`.slice(0, 12);
const ATTACKER_IP = "10.253.0.2";
const CLIENT_IP = "10.253.0.3";
const SERVER_IP = "10.253.0.4";
const VICTIM_IP = "10.253.0.5";
const TCP_PORT = 8080;
const GROUP = 100;
/** The kernel limit per pod, and the agent's node-wide line limit (above it: the kernel decides). */
const KERNEL_RATE = 100;
const KERNEL_BURST = 100;
const LINES_PER_SEC = 1000;

const CFG = QUICK
  ? { pps: 50_000, secs: 2, rounds: 1, gapUs: 500, calibrate: 200 }
  : { pps: 100_000, secs: 10, rounds: 2, gapUs: 300, calibrate: 500 };
const GOALS = { agentCpuCores: 0.5, p99WithinPct: 10 };

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

// ------------------------------------------------------------------ rules

type VictimRules = "logged" | "plain" | "unlimited";

function rules(lab: LabState, victim: VictimRules): string {
  const ifOf = (key: string) => lab.pods.find((p) => p.key === key)!.hostIf;
  const deny = (chain: string, id: string, limited = true) => {
    const [limit, nflog] = denyLogRuleArgs(id, {
      group: GROUP,
      direction: "ingress",
      ratePerSec: KERNEL_RATE,
      burst: KERNEL_BURST,
    });
    return [...(limited ? [`-A ${chain} ${limit}`] : []), `-A ${chain} ${nflog}`, `-A ${chain} -j DROP`];
  };
  return [
    "*filter",
    ":PODWALL-FORWARD - [0:0]",
    ":PODWALL-ING-SERVER - [0:0]",
    ":PODWALL-ING-VICTIM - [0:0]",
    `:${DENY_LIMITED_CHAIN} - [0:0]`,
    "-A FORWARD -j PODWALL-FORWARD",
    "-A PODWALL-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    "-A PODWALL-FORWARD -m conntrack --ctstate INVALID -j DROP",
    `-A PODWALL-FORWARD -o ${ifOf("bench/victim")} -j PODWALL-ING-VICTIM`,
    `-A PODWALL-FORWARD -o ${ifOf("bench/server")} -j PODWALL-ING-SERVER`,
    `-A PODWALL-ING-SERVER -s ${CLIENT_IP}/32 -p tcp -m tcp --dport ${TCP_PORT} -j RETURN`,
    ...deny("PODWALL-ING-SERVER", "np/bench/server"),
    ...(victim === "plain"
      ? ["-A PODWALL-ING-VICTIM -j DROP"]
      : deny("PODWALL-ING-VICTIM", "np/bench/victim", victim === "logged")),
    ...denyLimitedChainRules("DROP").map((r) => `-A ${DENY_LIMITED_CHAIN} ${r}`),
    "COMMIT",
    "",
  ].join("\n");
}

async function program(lab: LabState, victim: VictimRules): Promise<void> {
  await run("iptables-restore", [], { netns: lab.nodeNetns, input: rules(lab, victim) });
}

/** Packets that entered the victim's chain (the dispatch rule's counter). */
async function victimEntered(lab: LabState): Promise<number> {
  const out = (
    await run("iptables", ["-w", "-n", "-v", "-x", "-L", "PODWALL-FORWARD"], { netns: lab.nodeNetns })
  ).stdout;
  const line = out.split("\n").find((l) => l.includes("PODWALL-ING-VICTIM"));
  return line ? Number(line.trim().split(/\s+/)[0]) : 0;
}

// ------------------------------------------------------------------ the reader process

class ReaderProcess {
  private readonly child: ChildProcess;
  private waiters: ((m: FromReader) => void)[] = [];
  private lastError?: string;

  constructor() {
    this.child = fork(join(import.meta.dirname, "support", "denylog-reader.ts"), [], {
      execArgv: ["--import", "tsx"],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    this.child.on("message", (m: FromReader) => {
      if (m.type === "error") {
        this.lastError = m.message;
        log(`  reader: ${m.message}`);
      }
      this.waiters.shift()?.(m);
    });
  }

  private ask(m: ToReader): Promise<FromReader> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`reader: no answer to ${m.type}`)), 20_000);
      this.waiters.push((a) => {
        clearTimeout(timer);
        resolve(a);
      });
      this.child.send(m);
    });
  }

  async start(netns: string): Promise<void> {
    const a = await this.ask({ type: "start", group: GROUP, netns, linesPerSec: LINES_PER_SEC });
    if (a.type !== "ready") throw new Error(`reader did not start: ${this.lastError ?? a.type}`);
  }

  async mark(): Promise<Mark> {
    const a = await this.ask({ type: "mark" });
    if (a.type !== "mark") throw new Error(`reader: ${this.lastError ?? a.type}`);
    return a;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || !this.child.connected) return;
    await this.ask({ type: "stop" }).catch(() => {});
    if (this.child.exitCode === null) this.child.kill("SIGKILL");
  }
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
  seqLost: number;
  overflowDropped: number;
}

async function floodArm(lab: LabState, bin: string, reader: ReaderProcess, n: number): Promise<FloodArm> {
  const [m0, l0, e0] = await Promise.all([
    reader.mark(),
    readDenyLimitedPackets({ netns: lab.nodeNetns }),
    victimEntered(lab),
  ]);
  const fl = flood(lab, bin);
  await sleep(300);
  const c = await connlat(lab, bin, n);
  const f = await fl;
  await sleep(300); // the kernel's flush timeout and the reader's last batch
  const [m1, l1, e1] = await Promise.all([
    reader.mark(),
    readDenyLimitedPackets({ netns: lab.nodeNetns }),
    victimEntered(lab),
  ]);
  return {
    samples: c.samples,
    fail: c.fail,
    sent: f.sent,
    secs: f.secs,
    entered: e1 - e0,
    cpuUs: m1.cpuUs - m0.cpuUs,
    records: m1.records - m0.records,
    attributed: m1.attributed - m0.attributed,
    lines: m1.lines - m0.lines,
    limited: (l1.v4 ?? 0) - (l0.v4 ?? 0),
    seqLost: m1.reader.seqLost - m0.reader.seqLost,
    overflowDropped: m1.reader.overflowDropped - m0.reader.overflowDropped,
  };
}

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  const started = performance.now();
  log(`podwall deny-log benchmark (${QUICK ? "quick" : "full"}, node ${process.version})`);
  const dir = mkdtempSync(join(tmpdir(), "podwall-dlb-"));
  let lab: LabState | undefined;
  let server: ChildProcess | undefined;
  let reader: ReaderProcess | undefined;
  const cleanup = async () => {
    if (server && server.exitCode === null) server.kill("SIGKILL");
    await reader?.stop().catch(() => {});
    reader = undefined;
    await labDown(LAB).catch((e) => log(`lab down: ${(e as Error).message}`));
    rmSync(dir, { recursive: true, force: true });
  };
  const onSignal = () => void cleanup().finally(() => process.exit(130));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  const quiet: number[] = [];
  const plain: number[] = [];
  const logged: FloodArm[] = [];
  let unlimited: FloodArm | undefined;
  let failures = 0;
  let perConnectUs = 0;
  let n = 0;
  try {
    const bin = await compileNetbench(dir);
    lab = await labUp(LAB, [
      { key: "bench/attacker", ips: [ATTACKER_IP], serve: [] },
      { key: "bench/client", ips: [CLIENT_IP], serve: [] },
      { key: "bench/server", ips: [SERVER_IP], serve: [] },
      { key: "bench/victim", ips: [VICTIM_IP], serve: [] },
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
    await program(lab, "logged");
    reader = new ReaderProcess();
    await reader.start(lab.nodeNetns);

    // Size the connect runs to fit inside the flood (with its first 300 ms left out).
    const t0 = performance.now();
    await connlat(lab, bin, CFG.calibrate);
    perConnectUs = ((performance.now() - t0) * 1000) / CFG.calibrate;
    n = Math.max(200, Math.floor((0.75 * (CFG.secs - 0.3) * 1e6) / perConnectUs));
    log(`  ${r1(perConnectUs)} us per connect with a ${CFG.gapUs} us gap: ${n} connects per arm`);

    for (let round = 0; round < CFG.rounds; round++) {
      const q = await connlat(lab, bin, n);
      quiet.push(...q.samples);
      failures += q.fail;
      const a = await floodArm(lab, bin, reader, n);
      logged.push(a);
      failures += a.fail;
      log(
        `  round ${round + 1}: quiet p99 ${r1(pct(q.samples, 99))} us; flood ${Math.round(a.sent / a.secs)}/s: p99 ${r1(pct(a.samples, 99))} us, ${a.records} records, ${a.lines} lines, ${a.limited} limited by the kernel, reader CPU ${r3(a.cpuUs / 1e6 / a.secs)} cores`,
      );
      await program(lab, "plain");
      const p = await floodArm(lab, bin, reader, n);
      plain.push(...p.samples);
      failures += p.fail;
      log(
        `  round ${round + 1}: flood with a plain DROP: p99 ${r1(pct(p.samples, 99))} us, ${p.records} records`,
      );
      if (round === 0) {
        // What the kernel limit protects from: every denied packet copied to the reader.
        await program(lab, "unlimited");
        unlimited = await floodArm(lab, bin, reader, n);
        failures += unlimited.fail;
        log(
          `  round 1: flood with NFLOG and no limit: p99 ${r1(pct(unlimited.samples, 99))} us, ${unlimited.records} records, ${unlimited.seqLost} lost on the socket, reader CPU ${r3(unlimited.cpuUs / 1e6 / unlimited.secs)} cores`,
        );
      }
      await program(lab, "logged");
    }
  } finally {
    await cleanup();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }

  const sum = (k: keyof FloodArm) => logged.reduce((s, a) => s + (a[k] as number), 0);
  const secs = sum("secs");
  const floodSamples = logged.flatMap((a) => a.samples);
  const out = {
    offeredDeniedPerSec: Math.round(sum("sent") / secs),
    loggedPerSec: r1(sum("lines") / secs),
    agentCpuCores: r3(sum("cpuUs") / 1e6 / secs),
    allowedP99UsFlood: r1(pct(floodSamples, 99)),
    allowedP99UsQuiet: r1(pct(quiet, 99)),
    syncP99MsFlood: null as number | null,
    // Beyond the fields:
    recordsPerSec: r1(sum("records") / secs),
    kernelLimitedPerSec: Math.round(sum("limited") / secs),
    deniedEnteredPerSec: Math.round(sum("entered") / secs),
    attributedPct: r1((100 * sum("attributed")) / Math.max(1, sum("records"))),
    readerLost: sum("seqLost") + sum("overflowDropped"),
    allowedP50UsFlood: r1(pct(floodSamples, 50)),
    allowedP50UsQuiet: r1(pct(quiet, 50)),
    allowedP99UsFloodPlainDrop: r1(pct(plain, 99)),
    allowedP50UsFloodPlainDrop: r1(pct(plain, 50)),
    // One run of the flood with NFLOG but without the kernel limit (round 1).
    unlimited: unlimited && {
      offeredPerSec: Math.round(unlimited.sent / unlimited.secs),
      recordsPerSec: Math.round(unlimited.records / unlimited.secs),
      lostPerSec: Math.round((unlimited.seqLost + unlimited.overflowDropped) / unlimited.secs),
      linesPerSec: r1(unlimited.lines / unlimited.secs),
      readerCpuCores: r3(unlimited.cpuUs / 1e6 / unlimited.secs),
      allowedP99Us: r1(pct(unlimited.samples, 99)),
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
    ["  lines attributed to a rule", `${out.attributedPct}%`, "100%"],
    ["  records lost between kernel and reader", `${out.readerLost}`, ""],
    [
      "deny-log reader CPU during the flood (cores)",
      `${out.agentCpuCores}`,
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
    ["sync p99 during the flood (ms)", "n/a (reader not in the agent yet)", "< 200"],
    [
      "without the kernel limit: records / lost on the socket /s",
      `${out.unlimited?.recordsPerSec} / ${out.unlimited?.lostPerSec}`,
      "",
    ],
    [
      "without the kernel limit: reader CPU (cores), allowed p99 (us)",
      `${out.unlimited?.readerCpuCores}, ${out.unlimited?.allowedP99Us}`,
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
