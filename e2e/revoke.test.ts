/**
 * Real-kernel e2e for `podwall agent --revoke-established`: long-lived TCP and UDP connections that a
 * policy allowed stop the moment a policy edit denies them, because their conntrack entries go and
 * their next packets are judged as new. A connection from the node's own address (exempt on
 * ingress, as kubelet probes are) is spared.
 * Runs as root; the lab (rv*), the agent, the clients and the temporary folder go in afterAll.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadManifestFiles } from "../src/agent/sources/manifests.js";
import { labPodsFor } from "../src/cli/lab.js";
import { declaredPorts } from "../src/compiler/matrix.js";
import { run } from "../src/dataplane/exec.js";
import { pythonExecutable } from "../src/dataplane/lab/agent.js";
import { type LabState, labUp } from "../src/dataplane/lab/lab.js";
import { freePort, spawnAgent, tearDown, until } from "../test/support/agent-process.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const LAB = `rv${process.pid.toString(36)}`.slice(0, 12);
const A = "10.250.0.2";
const B = "10.250.0.3";

const CLUSTER = `
apiVersion: v1
kind: Namespace
metadata: { name: x }
---
apiVersion: v1
kind: Pod
metadata: { name: a, namespace: x, labels: { app: a } }
spec: { nodeName: node-1, containers: [{ name: c }] }
status: { phase: Running, podIP: ${A} }
---
apiVersion: v1
kind: Pod
metadata: { name: b, namespace: x, labels: { app: b } }
spec:
  nodeName: node-1
  containers: [{ name: c, ports: [{ containerPort: 80 }, { containerPort: 5353, protocol: UDP }] }]
status: { phase: Running, podIP: ${B} }
`;

const policy = (ports: string) => `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: b-in, namespace: x }
spec:
  podSelector: { matchLabels: { app: b } }
  ingress: [{ from: [{ podSelector: { matchLabels: { app: a } } }], ports: [${ports}] }]
`;
const OPEN = "{ port: 5353, protocol: UDP }, { port: 8080, protocol: TCP }, { port: 80 }";
const CLOSED = "{ port: 80 }";

/** One UDP and one TCP connection kept open, one exchange each per 100 ms: "<name> <0|1>" lines. */
const CLIENT = `
import socket, sys, time
b, udp = sys.argv[1], sys.argv[2] == "udp"
s = []
if udp:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect((b, 5353)); s.append(("udp", u))
t = socket.create_connection((b, 8080), timeout=2); s.append(("tcp", t))
for _, x in s: x.settimeout(0.3)
while True:
    for name, x in s:
        try:
            x.send(b"ping"); ok = x.recv(64) == b"ping"
        except OSError:
            ok = False
        print(name, int(ok), flush=True)
    time.sleep(0.1)
`;

let dir: string;
let lab: LabState | undefined;
let agent: ChildProcess | undefined;
let metricsPort: number;
const children: ChildProcess[] = [];
const logs: Record<string, unknown>[] = [];

/** Starts a client in `netns`; returns its outcomes so far, by connection name, in order. */
function client(netns: string, udp: boolean): Record<string, number[]> {
  const seen: Record<string, number[]> = {};
  const c = spawn(
    "ip",
    ["netns", "exec", netns, pythonExecutable(), "-u", "-c", CLIENT, B, udp ? "udp" : "tcp"],
    {
      stdio: ["ignore", "pipe", "ignore"],
    },
  );
  children.push(c);
  let buf = "";
  c.stdout!.on("data", (d: Buffer) => {
    buf += d.toString();
    let i = buf.indexOf("\n");
    while (i >= 0) {
      const [name, ok] = buf.slice(0, i).split(" ");
      (seen[name] ??= []).push(Number(ok));
      buf = buf.slice(i + 1);
      i = buf.indexOf("\n");
    }
  });
  return seen;
}

/** The last n outcomes all equal `want`. */
const lastAre = (xs: number[] | undefined, want: number, n = 3) =>
  !!xs && xs.length >= n && xs.slice(-n).every((x) => x === want);

async function metric(name: string, labels: string): Promise<number> {
  const text = await fetch(`http://127.0.0.1:${metricsPort}/metrics`).then((r) => r.text());
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}}`));
  return line ? Number(line.split(" ").pop()) : 0;
}

beforeAll(async () => {
  await run("npx", ["tsc", "-p", join(ROOT, "tsconfig.json")], { allowFail: true, timeoutMs: 60_000 });
  dir = mkdtempSync(join(tmpdir(), "podwall-rv-"));
  writeFileSync(join(dir, "00-cluster.yaml"), CLUSTER);
  writeFileSync(join(dir, "10-policy.yaml"), policy(OPEN));
  const set = loadManifestFiles([dir]);
  lab = await labUp(LAB, labPodsFor(set, declaredPorts(set.pods)));
  const b = lab.pods.find((p) => p.key === "x/b")!;
  // A TCP echo on 8080 in pod b, for connections that stay open.
  const echo = spawn(
    "ip",
    ["netns", "exec", b.netns, "socat", "TCP-LISTEN:8080,fork,reuseaddr", "EXEC:cat"],
    {
      stdio: "ignore",
    },
  );
  children.push(echo);
  metricsPort = await freePort();
  const args = ["--source", dir, "--lab", LAB, "--revoke-established"];
  args.push("--metrics-addr", `127.0.0.1:${metricsPort}`);
  agent = spawnAgent(args, (l) => logs.push(l));
  if (!(await until(() => logs.some((l) => l.msg === "sync"), 20_000)))
    throw new Error("the agent never synced");
}, 90_000);

afterAll(() => tearDown({ processes: [...children, agent], lab: lab ? LAB : undefined, dir }), 30_000);

describe("--revoke-established", () => {
  it("cuts open TCP and UDP connections a policy edit denies, spares the node's own", async () => {
    const fromA = client(lab!.pods.find((p) => p.key === "x/a")!.netns, true);
    const fromNode = client(lab!.nodeNetns, false);
    expect(
      await until(() => lastAre(fromA.udp, 1) && lastAre(fromA.tcp, 1) && lastAre(fromNode.tcp, 1), 10_000),
    ).toBe(true);
    const seen = { udp: fromA.udp.length, tcp: fromA.tcp.length };
    writeFileSync(join(dir, "10-policy.yaml"), policy(CLOSED));
    expect(await until(() => lastAre(fromA.udp, 0, 5) && lastAre(fromA.tcp, 0, 5), 10_000)).toBe(true);
    // Both connections were answered right up to the edit: the cut came from the edit.
    expect(fromA.udp.slice(seen.udp - 3, seen.udp)).toEqual([1, 1, 1]);
    expect(fromA.tcp.slice(seen.tcp - 3, seen.tcp)).toEqual([1, 1, 1]);
    expect(await metric("podwall_revoked_connections_total", 'protocol="udp"')).toBe(1);
    expect(await metric("podwall_revoked_connections_total", 'protocol="tcp"')).toBe(1);
    expect(await metric("podwall_revoke_pass_duration_seconds_count", 'result="ok"')).toBeGreaterThanOrEqual(
      1,
    );
    expect(await metric("podwall_revoke_pass_duration_seconds_count", 'result="error"')).toBe(0);
    // The node's own connection to b is exempt on ingress, as in the rules: still answered.
    const n = fromNode.tcp.length;
    expect(await until(() => fromNode.tcp.length >= n + 5, 5000)).toBe(true);
    expect(lastAre(fromNode.tcp, 1, 5)).toBe(true);
    const pass = logs
      .filter((l) => l.msg === "established connections re-judged against the new policy")
      .pop();
    expect(pass).toMatchObject({ revoked: 2, via: "netlink" });
  }, 40_000);
});
