/**
 * Real-kernel e2e for the NFQUEUE dataplane driven by the real agent process
 * (`node dist/cli/main.js agent --source DIR --lab L --dataplane nfqueue`) on a lab built from the
 * demo cluster: fail-open vs fail-closed once the verdict program is gone (SIGKILL), exact
 * enforcement after a restart, policy edits in force for new connections within about a second,
 * deny logs with rate limiting, and the userspace metrics.
 * Runs as root; the lab (nq*) and every agent it starts are removed in afterAll, also on failure.
 */
import type { ChildProcess } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadManifestFiles } from "../src/agent/sources/manifests.js";
import { labPodsFor } from "../src/cli/lab.js";
import { declaredPorts } from "../src/compiler/matrix.js";
import { run } from "../src/dataplane/exec.js";
import { type LabState, labDown, labUp, type ProbeRequest, probe } from "../src/dataplane/lab/lab.js";
import { defaultQueueThreads, readAllQueueProcStats } from "../src/dataplane/nfqueue/queue.js";
import { freePort, spawnAgent } from "../test/support/agent-process.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const CLI = join(ROOT, "dist", "cli", "main.js");
const DEMO = join(ROOT, "examples", "demo");
const LAB = `nq${process.pid.toString(36)}`.slice(0, 12);
const QUEUE = 100;
const IP = { frontend: "10.244.1.10", backend: "10.244.1.11", db: "10.244.1.12", debug: "10.244.1.30" };

/** shop/db takes 5432 from shop/backend only: frontend -> db is denied (ingress), backend -> db allowed. */
const DENIED: ProbeRequest = { from: "shop/frontend", toIp: IP.db, port: 5432, protocol: "TCP" };
const ALLOWED: ProbeRequest = { from: "shop/backend", toIp: IP.db, port: 5432, protocol: "TCP" };
/** Neither end is isolated: never queued, so it passes whatever the verdict program does. */
const OPEN: ProbeRequest = { from: "monitoring/prometheus", toIp: IP.debug, port: 80, protocol: "TCP" };

type LogLine = Record<string, unknown> & { msg?: string; event?: string };

class AgentProc {
  private readonly closed: Promise<void>;

  private constructor(
    readonly child: ChildProcess,
    readonly metricsAddr: string,
    readonly lines: LogLine[],
  ) {
    this.closed = new Promise((resolve) => child.on("close", () => resolve()));
  }

  static async start(sourceDir: string, extra: string[] = []): Promise<AgentProc> {
    const metricsAddr = `127.0.0.1:${await freePort()}`;
    const args = ["--source", sourceDir, "--lab", LAB, "--dataplane", "nfqueue"];
    args.push("--queue-num", String(QUEUE), "--metrics-addr", metricsAddr, ...extra);
    const lines: LogLine[] = [];
    const child = spawnAgent(args, (l) => lines.push(l as LogLine));
    const a = new AgentProc(child, metricsAddr, lines);
    running.add(a);
    await a.waitReady();
    return a;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  private async waitReady(timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.alive) throw new Error(`agent exited before ready: ${this.tail()}`);
      const res = await fetch(`http://${this.metricsAddr}/readyz`).catch(() => undefined);
      if (res?.status === 200) {
        // publish() hands the table to the worker asynchronously (IPC); give it a moment.
        await sleep(300);
        return;
      }
      await sleep(50);
    }
    throw new Error(`agent not ready after ${timeoutMs} ms: ${this.tail()}`);
  }

  tail(): string {
    return this.lines
      .slice(-8)
      .map((l) => JSON.stringify(l))
      .join("\n");
  }

  denies(from = 0): LogLine[] {
    return this.lines.slice(from).filter((l) => l.event === "deny");
  }

  async waitFor<T>(fn: () => T | undefined, timeoutMs: number): Promise<T | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = fn();
      if (v !== undefined || Date.now() > deadline) return v;
      await sleep(25);
    }
  }

  async metrics(): Promise<string> {
    return (await fetch(`http://${this.metricsAddr}/metrics`)).text();
  }

  async kill(signal: NodeJS.Signals): Promise<void> {
    if (this.alive) this.child.kill(signal);
    await this.closed;
    running.delete(this);
  }
}

const running = new Set<AgentProc>();
let lab: LabState | undefined;
let src = "";

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function probeAll(reqs: ProbeRequest[], timeoutMs = 500): Promise<boolean[]> {
  return probe(lab!, reqs, { timeoutMs });
}

/**
 * After the agent dies its runner child sees the IPC channel close and unbinds its queues. There is
 * one queue per verdict thread (QUEUE, QUEUE+1, ...), and a packet fanned out to one still bound
 * would get a real verdict, so wait for all of them.
 */
async function waitQueuesUnbound(timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let bound: number[] = [];
  while (Date.now() < deadline) {
    const stats = await readAllQueueProcStats(lab!.nodeNetns);
    bound = stats.map((s) => s.queueNum).filter((n) => n >= QUEUE && n < QUEUE + defaultQueueThreads());
    if (bound.length === 0) return;
    await sleep(50);
  }
  throw new Error(`queues ${bound.join(",")} still bound ${timeoutMs} ms after the agent died`);
}

/** The NFQUEUE jump rules in the lab node (iptables-save lines). */
async function queueRules(): Promise<string[]> {
  const text = (await run("iptables-save", ["-t", "filter"], { netns: lab!.nodeNetns })).stdout;
  return text.split("\n").filter((l) => l.startsWith("-A PODWALL-") && l.includes("-j NFQUEUE"));
}

function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split("\n")) {
    if (!line.startsWith(name) || (line[name.length] !== "{" && line[name.length] !== " ")) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    return Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return undefined;
}

beforeAll(async () => {
  // The agent under test is the compiled CLI; build it so it matches the tree.
  await run("npx", ["tsc", "-p", join(ROOT, "tsconfig.json")], { allowFail: true, timeoutMs: 60_000 });
  if (!existsSync(CLI)) throw new Error(`${CLI} missing: run npm run build`);
  src = mkdtempSync(join(tmpdir(), "podwall-nq-"));
  cpSync(DEMO, src, { recursive: true });
  const set = loadManifestFiles([src]);
  lab = await labUp(LAB, labPodsFor(set, declaredPorts(set.pods)));
}, 60_000);

afterAll(async () => {
  try {
    await Promise.all([...running].map((a) => a.kill("SIGKILL")));
  } finally {
    try {
      await labDown(LAB);
    } finally {
      if (src) rmSync(src, { recursive: true, force: true });
    }
  }
}, 30_000);

describe("nfqueue dataplane with the real agent process", () => {
  it("fail-closed: after SIGKILL the rules stay and isolated pods get no new connections; a restart restores exact enforcement", async () => {
    let agent = await AgentProc.start(src, ["--fail-closed"]);
    expect(await probeAll([DENIED, ALLOWED, OPEN])).toEqual([false, true, true]);
    const before = await queueRules();
    expect(before.length).toBeGreaterThan(0);
    expect(before.some((l) => l.includes("--queue-bypass"))).toBe(false);

    await agent.kill("SIGKILL");
    await waitQueuesUnbound();
    expect(await queueRules()).toEqual(before);
    // No verdict program: every queued packet is dropped, including what policy allows.
    expect(await probeAll([DENIED, ALLOWED, OPEN])).toEqual([false, false, true]);

    agent = await AgentProc.start(src, ["--fail-closed"]);
    expect(await probeAll([DENIED, ALLOWED, OPEN])).toEqual([false, true, true]);
    await agent.kill("SIGTERM");
  });

  let agent: AgentProc;

  it("fail-open: after SIGKILL the rules stay (with --queue-bypass) and new connections pass; a restart restores exact enforcement", async () => {
    let a = await AgentProc.start(src, ["--deny-logs-per-second", "5"]);
    expect(await probeAll([DENIED, ALLOWED, OPEN])).toEqual([false, true, true]);
    const before = await queueRules();
    expect(before.length).toBeGreaterThan(0);
    expect(before.every((l) => l.includes("--queue-bypass"))).toBe(true);

    await a.kill("SIGKILL");
    await waitQueuesUnbound();
    expect(await queueRules()).toEqual(before);
    // Bypass: with nobody bound to the queue, the denied pair gets through too.
    expect(await probeAll([DENIED, ALLOWED, OPEN])).toEqual([true, true, true]);

    a = await AgentProc.start(src, ["--deny-logs-per-second", "5"]);
    agent = a;
    expect(await probeAll([DENIED, ALLOWED, OPEN])).toEqual([false, true, true]);
  });

  it("a denied connection is logged as one JSON deny line with both pods, port, protocol, direction and policies", async () => {
    await sleep(1100); // refill the deny-log bucket (5/s)
    const from = agent.lines.length;
    expect(await probeAll([DENIED], 300)).toEqual([false]);
    const line = await agent.waitFor(
      () => agent.denies(from).find((l) => l.src === "shop/frontend" && l.dst === "shop/db"),
      3000,
    );
    expect(line, agent.tail()).toBeDefined();
    expect(line).toMatchObject({
      event: "deny",
      src: "shop/frontend",
      srcIP: IP.frontend,
      dst: "shop/db",
      dstIP: IP.db,
      port: 5432,
      protocol: "TCP",
      direction: "ingress",
    });
    expect([...(line!.policies as string[])].sort()).toEqual([
      "shop/allow-monitoring",
      "shop/db-from-backend",
      "shop/default-deny-ingress",
    ]);
    expect(typeof line!.srcPort).toBe("number");
  });

  it("a burst of denies beyond --deny-logs-per-second is logged in part and the rest counted", async () => {
    await sleep(1100);
    const from = agent.lines.length;
    const burst = 40;
    const got = await probeAll(
      Array.from({ length: burst }, () => DENIED),
      300,
    );
    expect(got.every((x) => !x)).toBe(true);
    await sleep(300);
    const burstLines = agent.denies(from).length;
    expect(burstLines).toBeGreaterThan(0);
    expect(burstLines).toBeLessThan(burst);
    // Once the bucket refills, the next line reports what was suppressed in between.
    await sleep(500);
    const mark = agent.lines.length;
    expect(await probeAll([DENIED], 300)).toEqual([false]);
    const next = await agent.waitFor(() => agent.denies(mark)[0], 3000);
    expect(next, agent.tail()).toBeDefined();
    expect(next!.suppressedSinceLast as number).toBeGreaterThan(0);
    const m = await agent.metrics();
    expect(metricValue(m, "podwall_deny_logs_suppressed_total")).toBeGreaterThanOrEqual(burst - burstLines);
  });

  it("/metrics: verdict time histogram, verdicts, per-policy allow and deny counters, queue depth", async () => {
    expect(await probeAll([ALLOWED, DENIED], 300)).toEqual([true, false]);
    // Verdict counters are polled every 2 s and policy counters drained every second.
    let text = "";
    const deadline = Date.now() + 6000;
    const want = () =>
      (metricValue(text, "podwall_verdicts_total", { result: "accept", protocol: "tcp" }) ?? 0) > 0 &&
      (metricValue(text, "podwall_verdicts_total", { result: "drop", protocol: "tcp" }) ?? 0) > 0 &&
      (metricValue(text, "podwall_policy_verdicts_total", {
        policy: "shop/db-from-backend",
        result: "allow",
      }) ?? 0) > 0 &&
      (metricValue(text, "podwall_policy_verdicts_total", {
        policy: "shop/default-deny-ingress",
        result: "deny",
      }) ?? 0) > 0 &&
      metricValue(text, "podwall_nfqueue_queue_depth", { queue: String(QUEUE) }) !== undefined;
    do {
      text = await agent.metrics();
      if (want()) break;
      await sleep(200);
    } while (Date.now() < deadline);
    expect(
      want(),
      text
        .split("\n")
        .filter((l) => l.startsWith("podwall_") && !l.includes("process_"))
        .join("\n"),
    ).toBe(true);
    expect(metricValue(text, "podwall_nfqueue_queue_depth", { queue: String(QUEUE) })).toBeGreaterThanOrEqual(
      0,
    );
    const inf = metricValue(text, "podwall_verdict_duration_microseconds_bucket", { le: "+Inf" });
    expect(inf).toBeGreaterThan(0);
    expect(
      metricValue(text, "podwall_verdict_duration_microseconds_bucket", { le: "1024" }),
    ).toBeLessThanOrEqual(inf!);
    expect(metricValue(text, "podwall_verdict_duration_microseconds_count")).toBe(inf);
  });

  it("a policy edit in the source folder decides new connections within about a second, both ways", async () => {
    const file = join(src, "20-shop-tiers.yaml");
    const original = readFileSync(file, "utf8");
    const edited = original.replace(
      /(name: db-from-backend[\s\S]*?from: \[\{ podSelector: \{ matchLabels: \{ app: )backend/,
      "$1frontend",
    );
    expect(edited).not.toBe(original);
    expect(await probeAll([DENIED, ALLOWED], 300)).toEqual([false, true]);

    /** ms from `t0` until `req` first probes as `want` (a denied probe starts after the change). */
    const until = async (req: ProbeRequest, want: boolean, t0: number, limitMs: number): Promise<number> => {
      for (;;) {
        const start = Date.now();
        const [got] = await probeAll([req], 250);
        if (got === want) return (want ? Date.now() : start) - t0;
        if (Date.now() - t0 > limitMs) return Number.POSITIVE_INFINITY;
        await sleep(20);
      }
    };

    let t0 = Date.now();
    writeFileSync(file, edited);
    // frontend -> db was denied and becomes allowed; backend -> db the reverse.
    const [opened, closed] = await Promise.all([
      until(DENIED, true, t0, 3000),
      until(ALLOWED, false, t0, 3000),
    ]);
    expect(opened).toBeLessThan(1000);
    expect(closed).toBeLessThan(1000);

    t0 = Date.now();
    writeFileSync(file, original);
    const [reopened, reclosed] = await Promise.all([
      until(ALLOWED, true, t0, 3000),
      until(DENIED, false, t0, 3000),
    ]);
    console.info(
      `policy edit in force after: opened ${opened} ms, closed ${closed} ms; revert: ${reopened} ms, ${reclosed} ms`,
    );
    expect(reopened).toBeLessThan(1000);
    expect(reclosed).toBeLessThan(1000);
    await agent.kill("SIGTERM");
  });
});
