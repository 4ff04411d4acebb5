/**
 * Deny logs and audit mode with real packets, both dataplanes: the real agent process
 * (`node dist/cli/main.js agent --source DIR --lab L`) programming a lab node, policies rewritten in
 * its folder between probes. Checked per mode:
 *  - a denied probe gives exactly one deny line naming the deciding policy, tier, rule and action; an
 *    allowed probe gives none; a policy changed between two probes is named correctly each time
 *    (NetworkPolicy default deny, then an Admin ClusterNetworkPolicy rule, then an egress deny);
 *  - per-policy verdict counters (iptables: from the kernel's rule counters);
 *  - audit mode: audit policies log would-be denies (a NetworkPolicy and an Admin rule) while the
 *    probe still succeeds, counted per policy; removing the annotation enforces the policy;
 *  - a flood of denied new flows is rate-limited and counted (iptables: the kernel's per-pod limit;
 *    nfqueue: the agent's line limit);
 *  - the agent answers ready throughout.
 * Runs as root; the lab (dl*) and the agent are removed in afterAll, also on failure.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { run } from "../src/dataplane/exec.js";
import { type LabState, labUp, type ProbeRequest, probe } from "../src/dataplane/lab/lab.js";
import { AgentUnderTest, type LogLine, metricValue, tearDown, until } from "../test/support/agent-process.js";

const ROOT = join(import.meta.dirname, "..");
const SERVER = "10.96.7.10";
const CLIENT = "10.96.7.11";
const INTRUDER = "10.96.7.12";

const CLUSTER = `
apiVersion: v1
kind: Namespace
metadata: { name: web, labels: { team: web } }
---
apiVersion: v1
kind: Namespace
metadata: { name: other, labels: { team: other } }
---
apiVersion: v1
kind: Pod
metadata: { name: server, namespace: web, labels: { app: server } }
spec: { nodeName: lab, containers: [{ name: c, image: x, ports: [{ containerPort: 80 }] }] }
status: { phase: Running, podIP: ${SERVER}, podIPs: [{ ip: ${SERVER} }] }
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: web, labels: { app: client } }
spec: { nodeName: lab, containers: [{ name: c, image: x }] }
status: { phase: Running, podIP: ${CLIENT}, podIPs: [{ ip: ${CLIENT} }] }
---
apiVersion: v1
kind: Pod
metadata: { name: intruder, namespace: other, labels: { app: intruder } }
spec: { nodeName: lab, containers: [{ name: c, image: x }] }
status: { phase: Running, podIP: ${INTRUDER}, podIPs: [{ ip: ${INTRUDER} }] }
`;

const ONLY_CLIENT = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: only-client, namespace: web }
spec:
  podSelector: { matchLabels: { app: server } }
  ingress: [{ from: [{ podSelector: { matchLabels: { app: client } } }], ports: [{ port: 80 }] }]
`;

const NO_OTHER = `
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: { name: no-other }
spec:
  tier: Admin
  priority: 10
  subject: { namespaces: { matchLabels: { team: web } } }
  ingress:
  - { name: block-other, action: Deny, from: [{ namespaces: { matchLabels: { team: other } } }] }
`;

const LOCKDOWN = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: lockdown, namespace: other }
spec: { podSelector: {}, policyTypes: [Egress] }
`;

const audit = (yes: boolean) => (yes ? `, annotations: { podwall.io/enforcement: audit }` : "");
/** Server ingress only from the other namespace; client -> server is its would-be deny. */
const TRIAL = (yes: boolean) => `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: trial, namespace: web${audit(yes)} }
spec:
  podSelector: { matchLabels: { app: server } }
  ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: other } } }] }]
`;
/**
 * Audited Admin rules: the client is passed on to the NetworkPolicy tier (where the audit trial
 * denies it); the other namespace is denied: intruder -> server is this policy's would-be deny.
 */
const TRIAL_ADMIN = `
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: { name: trial-admin${audit(true)} }
spec:
  tier: Admin
  priority: 5
  subject: { namespaces: { matchLabels: { team: web } } }
  ingress:
  - { name: pass-client, action: Pass, from: [{ pods: { namespaceSelector: {}, podSelector: { matchLabels: { app: client } } } }] }
  - { name: no-other, action: Deny, from: [{ namespaces: { matchLabels: { team: other } } }] }
`;

const tcp = (from: string, toIp: string, port = 80): ProbeRequest => ({ from, toIp, port, protocol: "TCP" });
const INTRUDER_TO_SERVER = tcp("other/intruder", SERVER);
const CLIENT_TO_SERVER = tcp("web/client", SERVER);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.each(["iptables", "nfqueue"] as const)("deny logs and audit mode with real packets, %s", (mode) => {
  const LAB = `dl${mode[0]}${process.pid.toString(36)}`.slice(0, 12);
  let lab: LabState;
  let dir = "";
  let agent: AgentUnderTest | undefined;
  /** /readyz answers seen other than 200 while the agent ran. */
  const notReady: string[] = [];
  let readyPoll: NodeJS.Timeout | undefined;

  // Lines about the probes (all to the server): a pod's own IPv6 chatter at start-up is denied too,
  // as a pod without an address in that family ("no-address"), and is not what these tests count.
  const denyLines = (from: number) =>
    agent!.lines.slice(from).filter((l) => l.event === "deny" && l.dstIP === SERVER);
  const auditLines = (from: number) =>
    agent!.lines.slice(from).filter((l) => l.event === "audit-deny" && l.dstIP === SERVER);

  /** Write the policies file and wait until the agent's sync that follows is in force. */
  async function setPolicies(...docs: string[]): Promise<void> {
    const from = agent!.lines.length;
    writeFileSync(join(dir, "policies.yaml"), docs.join("\n---\n"));
    const synced = await agent!.waitLog((l) => l.msg === "sync" && (l.events as number) > 0, 10_000, from);
    expect(synced, agent!.tail()).toBeDefined();
    // nfqueue: the worker takes the table over IPC just before the apply; give it a moment.
    await sleep(mode === "nfqueue" ? 400 : 100);
  }

  /** Probe once (a TCP connect times out before its first SYN retransmit) and wait out late records. */
  async function probeOnce(req: ProbeRequest): Promise<{ ok: boolean; from: number }> {
    const from = agent!.lines.length;
    const [ok] = await probe(lab, [req], { timeoutMs: 300 });
    // NFLOG batches for up to 100 ms, the reader posts every 50 ms; the worker flushes every 20 ms.
    await sleep(600);
    return { ok, from };
  }

  async function metrics(): Promise<string> {
    return (await agent!.get("/metrics")).body;
  }

  /** Wait for a counter to reach `min` (iptables counters are read every second). */
  async function counterAtLeast(name: string, labels: Record<string, string>, min: number): Promise<number> {
    let v = 0;
    await until(async () => (v = metricValue(await metrics(), name, labels) ?? 0) >= min, 8000, 200);
    return v;
  }

  beforeAll(async () => {
    await run("npx", ["tsc", "-p", join(ROOT, "tsconfig.json")], { allowFail: true, timeoutMs: 120_000 });
    dir = mkdtempSync(join(tmpdir(), "podwall-dl-"));
    writeFileSync(join(dir, "cluster.yaml"), CLUSTER);
    writeFileSync(join(dir, "policies.yaml"), ONLY_CLIENT);
    lab = await labUp(LAB, [
      { key: "web/server", ips: [SERVER], serve: [{ port: 80, protocol: "TCP" }] },
      { key: "web/client", ips: [CLIENT], serve: [] },
      { key: "other/intruder", ips: [INTRUDER], serve: [] },
    ]);
    const args = ["--source", dir, "--lab", LAB, "--node-name", "lab", "--dataplane", mode];
    args.push("--deny-logs-per-second", "20", "--kernel-counters-seconds", "1");
    if (mode === "nfqueue") args.push("--queue-num", "300");
    agent = await AgentUnderTest.start(args);
    readyPoll = setInterval(() => {
      void agent!.get("/readyz", 3000).then((r) => {
        if (r.status !== 200 && agent!.alive) notReady.push(`${r.status} ${r.body}`);
      });
    }, 250);
  }, 120_000);

  afterAll(async () => {
    if (readyPoll) clearInterval(readyPoll);
    await tearDown({ processes: [agent?.child], lab: LAB, dir });
  }, 30_000);

  it("a denied probe gives one deny line naming the NetworkPolicy tier's default deny; an allowed one none", async () => {
    expect(await probe(lab, [INTRUDER_TO_SERVER, CLIENT_TO_SERVER], { timeoutMs: 300 })).toEqual([
      false,
      true,
    ]);
    await sleep(1100); // the line bucket refills; earlier lines are out of the way

    const denied = await probeOnce(INTRUDER_TO_SERVER);
    expect(denied.ok).toBe(false);
    const lines = denyLines(denied.from);
    expect(lines, agent!.tail()).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      event: "deny",
      src: "other/intruder",
      srcIP: INTRUDER,
      dst: "web/server",
      dstIP: SERVER,
      port: 80,
      protocol: "TCP",
      direction: "ingress",
      policies: ["web/only-client"],
      tier: "namespaced",
      action: "deny",
      suppressedSinceLast: 0,
    });
    expect(lines[0].rule).toBeUndefined();
    expect(typeof lines[0].srcPort).toBe("number");

    const allowed = await probeOnce(CLIENT_TO_SERVER);
    expect(allowed.ok).toBe(true);
    expect(denyLines(allowed.from)).toEqual([]);
    expect(auditLines(allowed.from)).toEqual([]);
  });

  it("per-policy verdict counters count the allow and the deny", async () => {
    const labels = { policy: "web/only-client", direction: "ingress" };
    expect(
      await counterAtLeast("podwall_policy_verdicts_total", { ...labels, result: "deny" }, 1),
    ).toBeGreaterThan(0);
    expect(
      await counterAtLeast("podwall_policy_verdicts_total", { ...labels, result: "allow" }, 1),
    ).toBeGreaterThan(0);
  });

  it("a policy changed between two probes is named correctly each time", async () => {
    // An Admin rule now decides before the NetworkPolicy tier.
    await setPolicies(ONLY_CLIENT, NO_OTHER);
    const first = await probeOnce(INTRUDER_TO_SERVER);
    expect(first.ok).toBe(false);
    const a = denyLines(first.from);
    expect(a, agent!.tail()).toHaveLength(1);
    expect(a[0]).toMatchObject({
      direction: "ingress",
      policies: ["no-other"],
      tier: "admin",
      rule: { index: 0, name: "block-other" },
      action: "deny",
    });

    // The intruder's own egress is shut: its egress side denies first.
    await setPolicies(ONLY_CLIENT, NO_OTHER, LOCKDOWN);
    const second = await probeOnce(INTRUDER_TO_SERVER);
    expect(second.ok).toBe(false);
    const b = denyLines(second.from);
    expect(b, agent!.tail()).toHaveLength(1);
    expect(b[0]).toMatchObject({
      src: "other/intruder",
      dst: "web/server",
      direction: "egress",
      policies: ["other/lockdown"],
      tier: "namespaced",
      action: "deny",
    });

    // And back: the NetworkPolicy decides again.
    await setPolicies(ONLY_CLIENT);
    const third = await probeOnce(INTRUDER_TO_SERVER);
    expect(denyLines(third.from).map((l) => [l.policies, l.tier])).toEqual([
      [["web/only-client"], "namespaced"],
    ]);
  });

  it("audit mode logs would-be denies while the probes succeed, per audit policy; removing the annotation enforces", async () => {
    await setPolicies(TRIAL(true), TRIAL_ADMIN);
    await sleep(1100);
    // client -> server: allowed (nothing enforced), the audit NetworkPolicy would deny it.
    const c = await probeOnce(CLIENT_TO_SERVER);
    expect(c.ok).toBe(true);
    expect(denyLines(c.from)).toEqual([]);
    const ca = auditLines(c.from);
    expect(ca, agent!.tail()).toHaveLength(1);
    expect(ca[0]).toMatchObject({
      event: "audit-deny",
      src: "web/client",
      dst: "web/server",
      port: 80,
      protocol: "TCP",
      direction: "ingress",
      policies: ["web/trial"],
      tier: "namespaced",
      action: "deny",
    });

    // intruder -> server: allowed, and the audit Admin rule would deny it first.
    const i = await probeOnce(INTRUDER_TO_SERVER);
    expect(i.ok).toBe(true);
    const ia = auditLines(i.from);
    expect(ia, agent!.tail()).toHaveLength(1);
    expect(ia[0]).toMatchObject({
      event: "audit-deny",
      src: "other/intruder",
      direction: "ingress",
      policies: ["trial-admin"],
      tier: "admin",
      rule: { index: 1, name: "no-other" },
      action: "deny",
    });
    expect(denyLines(i.from)).toEqual([]);

    expect(
      await counterAtLeast("podwall_audit_denials_total", { policy: "web/trial", direction: "ingress" }, 1),
    ).toBeGreaterThan(0);
    expect(
      await counterAtLeast("podwall_audit_denials_total", { policy: "trial-admin", direction: "ingress" }, 1),
    ).toBeGreaterThan(0);

    // The annotation goes: enforced at the next sync.
    await setPolicies(TRIAL(false));
    await sleep(1100);
    const enforced = await probeOnce(CLIENT_TO_SERVER);
    expect(enforced.ok).toBe(false);
    const d = denyLines(enforced.from);
    expect(d, agent!.tail()).toHaveLength(1);
    expect(d[0]).toMatchObject({ src: "web/client", policies: ["web/trial"], tier: "namespaced" });
    expect(auditLines(enforced.from)).toEqual([]);
  });

  it("a flood of denied new flows is rate-limited and counted", async () => {
    await setPolicies(ONLY_CLIENT);
    await sleep(2100); // the per-pod kernel bucket and the agent's line bucket refill
    const limitedBefore =
      metricValue(await metrics(), "podwall_deny_log_kernel_limited_total", { event: "deny" }) ?? 0;
    const suppressedBefore = metricValue(await metrics(), "podwall_deny_logs_suppressed_total") ?? 0;
    const from = agent!.lines.length;
    const N = 3000;
    const intruderNs = lab.pods.find((p) => p.key === "other/intruder")!.netns;
    // Every datagram from its own source port: a new connection each (an ephemeral port could repeat).
    const py = `import socket\nfor i in range(${N}):\n  s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n  s.bind(("${INTRUDER}",20000+i))\n  s.sendto(b"x",("${SERVER}",9999))\n  s.close()\n`;
    const t0 = performance.now();
    await run("python3", ["-c", py], { netns: intruderNs, timeoutMs: 60_000 });
    const secs = (performance.now() - t0) / 1000;
    await sleep(1500);
    const flood = denyLines(from).filter((l) => l.protocol === "UDP" && l.dstIP === SERVER);
    expect(flood.every((l) => (l.policies as string[])[0] === "web/only-client")).toBe(true);
    if (mode === "iptables") {
      // The kernel let through at most its burst (20) plus 10/s; the rest is counted.
      expect(flood.length).toBeGreaterThan(0);
      expect(flood.length).toBeLessThanOrEqual(20 + Math.ceil(10 * (secs + 1)));
      const limited = await counterAtLeast(
        "podwall_deny_log_kernel_limited_total",
        { event: "deny" },
        limitedBefore + N - flood.length,
      );
      expect(limited - limitedBefore).toBe(N - flood.length);
    } else {
      // Every packet is queued and reported; the agent's line limit (20/s) writes a few.
      expect(flood.length).toBeGreaterThan(0);
      expect(flood.length).toBeLessThanOrEqual(20 + Math.ceil(20 * (secs + 2)));
      const suppressed = await counterAtLeast("podwall_deny_logs_suppressed_total", {}, suppressedBefore + 1);
      expect(suppressed - suppressedBefore + flood.length).toBe(N);
    }
    // Still enforcing, and the agent answered ready all along.
    expect(await probe(lab, [INTRUDER_TO_SERVER, CLIENT_TO_SERVER], { timeoutMs: 300 })).toEqual([
      false,
      true,
    ]);
    expect((await agent!.get("/readyz")).status).toBe(200);
    expect(notReady).toEqual([]);
  });

  it("exports the deny-log and audit series the dashboards use", async () => {
    const text = await metrics();
    for (const name of [
      "podwall_ready",
      "podwall_audit_denials_total",
      "podwall_deny_log_kernel_limited_total",
    ])
      expect(text).toContain(`# TYPE ${name} `);
    expect(metricValue(text, "podwall_ready")).toBe(1);
    const lines: LogLine[] = agent!.lines.filter(
      (l) => (l.event === "deny" || l.event === "audit-deny") && l.dstIP === SERVER,
    );
    // Every line named a policy (none of these were unattributed).
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.filter((l) => (l.policies as string[]).length === 0)).toEqual([]);
  });
});
