/**
 * Real-kernel e2e for the supervision of the NFQUEUE verdict process, in fail-open and fail-closed
 * mode, with the real agent process on a lab built from the demo cluster:
 * - a verdict worker thread that dies (a test-only hook, SIGUSR2 with PODWALL_NFQUEUE_TEST_HOOKS=1)
 *   and a verdict process that is killed are both replaced within about a second, with a log line
 *   and a metric per restart;
 * - a second agent started while the first holds the queues binds once they are free;
 * - throughout, /readyz is never 200 while a queue has had no program bound for longer than the agent
 *   needs to notice (250 ms), and real probes show that a denied connection stays denied (fail-open:
 *   once the new process is bound; fail-closed: always).
 * Runs as root; the lab (ns*), every agent and the folder go in afterAll, also on failure.
 */
import { cpSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { loadManifestFiles } from "../src/agent/sources/manifests.js";
import { declaredPorts } from "../src/compiler/matrix.js";
import { run } from "../src/dataplane/exec.js";
import { type LabState, labUp, type ProbeRequest, probe } from "../src/dataplane/lab/lab.js";
import { labPodsFor } from "../src/dataplane/lab/matrix.js";
import { defaultQueueThreads } from "../src/dataplane/nfqueue/defaults.js";
import { readAllQueueProcStats } from "../src/dataplane/nfqueue/queue.js";
import { AgentUnderTest, tearDown, until } from "../test/support/agent-process.js";

// Inherited by the agents this file starts, and by their verdict processes.
process.env.PODWALL_NFQUEUE_TEST_HOOKS = "1";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const LAB = `ns${process.pid.toString(36)}`.slice(0, 12);
const QUEUE = 100;
const QUEUES = defaultQueueThreads();
const IP = { db: "10.244.1.12", debug: "10.244.1.30" };
const DENIED: ProbeRequest = { from: "shop/frontend", toIp: IP.db, port: 5432, protocol: "TCP" };
const ALLOWED: ProbeRequest = { from: "shop/backend", toIp: IP.db, port: 5432, protocol: "TCP" };
/** Neither end governed by any policy: never queued. */
const OPEN: ProbeRequest = { from: "monitoring/prometheus", toIp: IP.debug, port: 80, protocol: "TCP" };

let lab: LabState | undefined;
let src = "";
const agents: AgentUnderTest[] = [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Agents of the running test: killed when it ends, pass or fail, so the next test can bind. */
const current: AgentUnderTest[] = [];
afterEach(async () => {
  await Promise.all(current.splice(0).map((a) => a.kill("SIGKILL")));
});

async function agent(mode: string[], waitReady = true): Promise<AgentUnderTest> {
  const args = ["--source", src, "--lab", LAB, "--node-name", "lab", "--dataplane", "nfqueue"];
  const a = await AgentUnderTest.start([...args, "--queue-num", String(QUEUE), ...mode], waitReady);
  agents.push(a);
  current.push(a);
  return a;
}

function probeAll(reqs: ProbeRequest[], timeoutMs = 300): Promise<boolean[]> {
  return probe(lab!, reqs, { timeoutMs });
}

/** Netlink port ids bound to our queues, by queue (0 or absent: nobody bound). */
async function boundPorts(): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  for (const s of await readAllQueueProcStats(lab!.nodeNetns))
    if (s.queueNum >= QUEUE && s.queueNum < QUEUE + QUEUES && s.portId !== 0) out.set(s.queueNum, s.portId);
  return out;
}

const allBound = async () => (await boundPorts()).size === QUEUES;

/** How long the agent may take to notice a verdict process is gone (it learns it from the exit). */
const NOTICE_MS = 250;

/**
 * Samples /readyz against the kernel's view until stopped: a 200 while a queue had no program bound
 * both just before and just after the request, for longer than NOTICE_MS already, is a lie.
 * Returns the lies and how many 503s it saw.
 */
function watchReadiness(a: AgentUnderTest): {
  stop: () => Promise<{ lies: number; notReady: number; samples: number }>;
} {
  let on = true;
  let lies = 0;
  let notReady = 0;
  let samples = 0;
  let unboundSince: number | undefined;
  const loop = (async () => {
    while (on) {
      const before = await allBound();
      if (before) unboundSince = undefined;
      else unboundSince ??= performance.now();
      const r = await a.get("/readyz", 1000);
      const after = await allBound();
      samples++;
      const late = unboundSince !== undefined && performance.now() - unboundSince > NOTICE_MS;
      if (r.status === 200 && !before && !after && late) lies++;
      if (r.status === 503) notReady++;
      await sleep(10);
    }
  })();
  return {
    stop: async () => {
      on = false;
      await loop;
      return { lies, notReady, samples };
    },
  };
}

const runningLine = (l: Record<string, unknown>) => l.msg === "NFQUEUE verdict loop running";

beforeAll(async () => {
  await run("npx", ["tsc", "-p", join(ROOT, "tsconfig.json")], { allowFail: true, timeoutMs: 60_000 });
  src = mkdtempSync(join(tmpdir(), "podwall-nqs-"));
  cpSync(join(ROOT, "examples", "demo"), src, { recursive: true });
  const set = loadManifestFiles([src]);
  lab = await labUp(LAB, labPodsFor(set, [...declaredPorts(set.pods)]));
}, 60_000);

afterAll(async () => {
  await tearDown({ processes: agents.map((a) => a.child), lab: LAB, dir: src });
}, 30_000);

for (const [mode, flags] of [
  ["fail-open", []],
  ["fail-closed", ["--fail-closed"]],
] as const) {
  describe(`nfqueue supervision, ${mode}`, () => {
    it("a dead verdict worker, then a killed verdict process, are each replaced within about a second; readiness is truthful and denied stays denied", async () => {
      const a = await agent([...flags]);
      expect(await probeAll([DENIED, ALLOWED, OPEN])).toEqual([false, true, true]);
      const readiness = watchReadiness(a);
      for (const how of ["worker thread dies", "process killed"] as const) {
        const first = await a.waitLog(runningLine);
        const from = a.lines.length;
        const pid = first && (a.lines.filter(runningLine).at(-1)!.pid as number);
        expect(typeof pid, a.tail()).toBe("number");
        const before = await boundPorts();
        const t0 = performance.now();
        process.kill(pid as number, how === "worker thread dies" ? "SIGUSR2" : "SIGKILL");
        // Gone, then bound again by a new process (new netlink port ids).
        const gapProbes: boolean[] = [];
        const back = await until(
          async () => {
            if (mode === "fail-closed") gapProbes.push(...(await probeAll([DENIED], 50)));
            const now = await boundPorts();
            return now.size === QUEUES && [...now].every(([q, port]) => before.get(q) !== port);
          },
          8000,
          10,
        );
        const ms = performance.now() - t0;
        console.info(`${mode}, ${how}: every queue bound again after ${ms.toFixed(0)} ms`);
        expect(back, a.tail()).toBe(true);
        expect(ms).toBeLessThan(2500); // about a second, on a loaded 2-CPU machine
        const restart = await a.waitLog(
          (l) => /NFQUEUE verdict process exited; restarting/.test(String(l.msg)),
          3000,
          from,
        );
        expect(restart, a.tail()).toBeDefined();
        expect(await a.waitLog(runningLine, 3000, from)).toBeDefined();
        expect(gapProbes.filter((x) => x)).toEqual([]); // fail-closed: denied even with no program
        expect(await until(async () => (await a.get("/readyz")).status === 200, 3000)).toBe(true);
        expect(await probeAll([DENIED, ALLOWED, OPEN])).toEqual([false, true, true]);
      }
      const r = await readiness.stop();
      expect(r.lies, `${r.samples} samples`).toBe(0);
      expect(r.notReady).toBeGreaterThan(0);
      expect(await a.metric("podwall_nfqueue_worker_restarts_total")).toBe(2);
      expect(await a.metric("podwall_nfqueue_bound")).toBe(1);
      await a.kill("SIGTERM");
    });

    it("a second agent started while the first holds the queues stays unready until it can bind, then takes over", async () => {
      const a = await agent([...flags]);
      expect(await probeAll([DENIED, ALLOWED, OPEN])).toEqual([false, true, true]);
      const b = await agent([...flags], false);
      const refused = await b.waitLog((l) => /could not start/.test(String(l.msg)), 10_000);
      expect(refused, b.tail()).toBeDefined();
      const readinessB = watchReadiness(b);
      // The first agent's process holds every queue: the second is not ready, the first enforces.
      for (let i = 0; i < 5; i++) {
        expect((await b.get("/readyz")).status).toBe(503);
        expect((await a.get("/readyz")).status).toBe(200);
        expect(await probeAll([DENIED, ALLOWED, OPEN])).toEqual([false, true, true]);
        await sleep(200);
      }
      expect((await b.get("/readyz")).body).toMatch(/nfqueue verdict process (not bound|starting)/);
      const t0 = performance.now();
      await a.kill("SIGKILL"); // its verdict process sees its parent gone and lets the queues go
      expect(await until(async () => (await b.get("/readyz")).status === 200, 5000), b.tail()).toBe(true);
      console.info(
        `${mode}: second agent ready ${(performance.now() - t0).toFixed(0)} ms after the first died`,
      );
      expect(await allBound()).toBe(true);
      expect(await probeAll([DENIED, ALLOWED, OPEN])).toEqual([false, true, true]);
      const r = await readinessB.stop();
      expect(r.lies, `${r.samples} samples`).toBe(0);
      expect(await b.metric("podwall_nfqueue_worker_restarts_total")).toBeGreaterThan(0);
      await b.kill("SIGTERM");
    });
  });
}
