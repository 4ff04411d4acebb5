/**
 * The real agent process (dist/cli/main.js agent) against an API server double speaking the
 * Kubernetes list/watch protocol over HTTP, programming a lab node; real packets show the effect.
 * Covers: readiness, API-driven policy/pod/namespace changes, SIGKILL + restart with a prober
 * running (no window), drift repair at resync, foreign rules, bad objects, an API server outage,
 * and SIGTERM with --cleanup-on-exit.
 */
import type { ChildProcess } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { labPodsFor } from "../src/cli/lab.js";
import { run } from "../src/dataplane/exec.js";
import { type LabState, labDown, labUp, probe } from "../src/dataplane/lab/lab.js";
import { spawnKubeAgent, until } from "../test/support/agent-process.js";
import { ApiServerDouble } from "../test/support/apiserver-double.js";
import { deletePodChainByHand, manifestSet } from "./support/harness.js";
import { IP, type Obj, policy, sel, xyzModel } from "./support/model.js";

const LAB = `agt${process.pid.toString(36)}`.slice(0, 12);
const PORT = 19600 + (process.pid % 300);
const TCP80 = { port: 80, protocol: "TCP" as const };

let api: ApiServerDouble;
let lab: LabState;
let agent: ChildProcess | undefined;
let logs: Record<string, unknown>[] = [];

function startAgent(extra: string[] = []): ChildProcess {
  return spawnKubeAgent({
    kubeconfig: api.kubeconfigFile(),
    lab: LAB,
    metricsPort: PORT,
    extra: ["--resync-seconds", "2", "--batch-delay-ms", "10", ...extra],
    onLine: (l) => logs.push(l),
  });
}

async function http(path: string): Promise<{ status: number; body: string }> {
  try {
    const r = await fetch(`http://127.0.0.1:${PORT}${path}`);
    return { status: r.status, body: await r.text() };
  } catch {
    return { status: 0, body: "" };
  }
}

const reach = async (from: string, to: [string, string]) =>
  (await probe(lab, [{ from, toIp: IP(...to), ...TCP80 }], { timeoutMs: 400 }))[0];

async function stopAgent(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
  if (!agent || agent.exitCode !== null) return;
  const done = new Promise((r) => agent!.once("exit", r));
  agent.kill(signal);
  await done;
}

async function metric(name: string): Promise<number> {
  const m = (await http("/metrics")).body.split("\n").find((l) => l.startsWith(name));
  return m ? Number(m.split(" ").pop()) : Number.NaN;
}

describe("podwall agent against an API server double, programming a lab", () => {
  beforeAll(async () => {
    api = new ApiServerDouble();
    await api.start();
    const objs = xyzModel();
    for (const o of objs) api.create(o.kind as "Namespace" | "Pod", o);
    lab = await labUp(LAB, labPodsFor(manifestSet(objs), [TCP80]));
  }, 60_000);

  afterAll(async () => {
    await stopAgent();
    await labDown(LAB);
    await api?.close();
  });

  it("becomes ready only after its first sync, and serves health and metrics", async () => {
    agent = startAgent();
    expect(await until(async () => (await http("/readyz")).status === 200, 15_000)).toBe(true);
    // The log is written asynchronously: its "sync" line may reach us just after /readyz answers.
    expect(await until(() => logs.some((l) => l.msg === "sync"), 5000)).toBe(true);
    expect((await http("/healthz")).status).toBe(200);
    const m = (await http("/metrics")).body;
    expect(m).toContain("podwall_syncs_total");
    expect(m).toMatch(/podwall_events_received_total\{kind="Pod",type="add"\} 9/);
    expect(m).toContain("podwall_policy_enforced_latency_seconds_bucket");
    expect(m).toMatch(/podwall_api_connected 1/);
  });

  it("applies policies, pod labels and namespace labels changed through the API", async () => {
    expect(await reach("y/a", ["x", "a"])).toBe(true);
    api.create(
      "NetworkPolicy",
      policy("x", "from-b", { podSelector: {}, ingress: [{ from: [{ podSelector: sel({ pod: "b" }) }] }] }),
    );
    expect(await until(async () => !(await reach("y/a", ["x", "a"])), 5000)).toBe(true);
    expect(await reach("x/b", ["x", "a"])).toBe(true);
    // Pod label change: x/c becomes a "b".
    const c = api.get("Pod", "c", "x")!;
    c.metadata.labels = { pod: "b" };
    api.update("Pod", c);
    expect(await until(() => reach("x/c", ["x", "a"]), 5000)).toBe(true);
    c.metadata.labels = { pod: "c" };
    api.update("Pod", c);
    expect(await until(async () => !(await reach("x/c", ["x", "a"])), 5000)).toBe(true);
    // Namespace label change flips a namespaceSelector.
    api.create(
      "NetworkPolicy",
      policy("x", "from-team", {
        podSelector: {},
        ingress: [{ from: [{ namespaceSelector: sel({ team: "blue" }) }] }],
      }),
    );
    const z = api.get("Namespace", "z")!;
    z.metadata.labels = { ...z.metadata.labels, team: "blue" };
    api.update("Namespace", z);
    expect(await until(() => reach("z/a", ["x", "a"]), 5000)).toBe(true);
    expect(await reach("y/a", ["x", "a"])).toBe(false);
    api.delete("NetworkPolicy", { metadata: { name: "from-team", namespace: "x" } });
    expect(await until(async () => !(await reach("z/a", ["x", "a"])), 5000)).toBe(true);
  });

  it("enforces a policy the server holds but podwall cannot read fail-closed: its bad rules allow nothing", async () => {
    api.create(
      "NetworkPolicy",
      policy("y", "broken", { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: "10.0.0.0/33" } }] }] }),
    );
    expect(
      await until(
        async () => (await metric('podwall_rejected_objects_total{kind="NetworkPolicy"}')) >= 1,
        5000,
      ),
    ).toBe(true);
    const line = logs.find((l) => String(l.msg).includes("rejected NetworkPolicy y/broken"));
    expect(line?.field).toBe("spec.ingress[0].from[0].ipBlock.cidr");
    expect(String(line?.msg)).toContain("enforced fail-closed");
    // y is isolated as the server's object says, and its unreadable rule allows nothing.
    expect(await until(async () => !(await reach("z/a", ["y", "a"])), 5000)).toBe(true);
    expect(await reach("y/a", ["x", "a"])).toBe(false);
    // Break the good policy: the new version is enforced, its unreadable rule allowing nothing
    // (the old version would allow x/b, which the object the server now holds no longer says).
    const good = api.get("NetworkPolicy", "from-b", "x")!;
    good.spec.ingress[0].from[0] = { ipBlock: { cidr: "not-a-cidr" } };
    api.update("NetworkPolicy", good);
    expect(
      await until(
        async () => (await metric('podwall_rejected_objects_total{kind="NetworkPolicy"}')) >= 2,
        5000,
      ),
    ).toBe(true);
    expect(await until(async () => !(await reach("x/b", ["x", "a"])), 5000)).toBe(true);
    expect(await reach("y/a", ["x", "a"])).toBe(false);
    api.delete("NetworkPolicy", { metadata: { name: "broken", namespace: "y" } });
    good.spec.ingress[0].from[0] = { podSelector: sel({ pod: "b" }) };
    api.update("NetworkPolicy", good);
    expect(await until(() => reach("x/b", ["x", "a"]), 5000)).toBe(true);
    expect(await until(() => reach("z/a", ["y", "a"]), 5000)).toBe(true);
  });

  it("opens no window when killed with SIGKILL and restarted (prober running throughout)", async () => {
    let deniedSeenOpen = 0;
    let allowedSeenClosed = 0;
    let rounds = 0;
    let stop = false;
    const prober = (async () => {
      while (!stop) {
        const [denied, allowed] = await probe(
          lab,
          [
            { from: "y/a", toIp: IP("x", "a"), ...TCP80 },
            { from: "x/b", toIp: IP("x", "a"), ...TCP80 },
          ],
          { timeoutMs: 300 },
        );
        if (denied) deniedSeenOpen++;
        if (!allowed) allowedSeenClosed++;
        rounds++;
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    await new Promise((r) => setTimeout(r, 500));
    await stopAgent("SIGKILL");
    await new Promise((r) => setTimeout(r, 1000));
    logs = [];
    agent = startAgent();
    expect(await until(async () => (await http("/readyz")).status === 200, 15_000)).toBe(true);
    await new Promise((r) => setTimeout(r, 500));
    stop = true;
    await prober;
    expect(rounds).toBeGreaterThan(5);
    expect(deniedSeenOpen).toBe(0);
    expect(allowedSeenClosed).toBe(0);
    // It adopted the previous run's state: its first sync wrote no chain.
    const first = logs.find((l) => l.msg === "sync") as { chainsWritten: number } | undefined;
    expect(first?.chainsWritten).toBe(0);
  });

  it("restores a hand-deleted chain at the next resync; leaves a foreign rule alone", async () => {
    const ns = lab.nodeNetns;
    await run("iptables", ["-N", "OTHER"], { netns: ns });
    await run("iptables", ["-A", "OTHER", "-s", "192.0.2.9", "-j", "DROP"], { netns: ns });
    await run("iptables", ["-A", "FORWARD", "-j", "OTHER"], { netns: ns });
    const chain = await deletePodChainByHand(ns);
    expect(
      await until(
        async () =>
          (await run("iptables-save", ["-t", "filter"], { netns: ns })).stdout.includes(`:${chain}`),
        6000,
        200,
      ),
    ).toBe(true);
    expect(await reach("y/a", ["x", "a"])).toBe(false);
    const after = (await run("iptables-save", ["-t", "filter"], { netns: ns })).stdout;
    expect(after).toContain("-A OTHER -s 192.0.2.9/32 -j DROP");
    expect(after).toContain("-A FORWARD -j OTHER");
  });

  it("keeps enforcing while the API server is down and catches up when it returns", async () => {
    await api.stop();
    expect(await until(async () => (await metric("podwall_api_connected")) === 0, 10_000, 200)).toBe(true);
    expect(await reach("y/a", ["x", "a"])).toBe(false);
    expect(await reach("x/b", ["x", "a"])).toBe(true);
    // Changed while the agent cannot see it.
    api.delete("NetworkPolicy", { metadata: { name: "from-b", namespace: "x" } });
    await api.start();
    expect(await until(() => reach("y/a", ["x", "a"]), 40_000, 200)).toBe(true);
    expect(await until(async () => (await metric("podwall_api_connected")) === 1, 10_000, 200)).toBe(true);
  }, 60_000);

  it("SIGTERM with --cleanup-on-exit removes podwall's kernel state and nothing else", async () => {
    await stopAgent("SIGKILL");
    agent = startAgent(["--cleanup-on-exit"]);
    api.create("NetworkPolicy", policy("x", "deny", { podSelector: {} } as Obj));
    expect(await until(async () => !(await reach("y/a", ["x", "a"])), 15_000)).toBe(true);
    await stopAgent("SIGTERM");
    expect(agent!.exitCode).toBe(0);
    const save = (await run("iptables-save", [], { netns: lab.nodeNetns })).stdout;
    expect(save).not.toContain("PODWALL");
    expect(save).toContain("-A OTHER -s 192.0.2.9/32 -j DROP");
    expect((await run("ipset", ["list", "-n"], { netns: lab.nodeNetns })).stdout.trim()).toBe("");
    expect(await reach("y/a", ["x", "a"])).toBe(true);
  }, 30_000);
});
