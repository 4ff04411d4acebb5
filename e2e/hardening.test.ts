/**
 * Real-kernel e2e for the DaemonSet's security context (deploy/kind/podwall.yaml): the built agent
 * runs as its container would, inside the lab node's network namespace (hostNetwork, no --lab),
 * as root with exactly the capabilities the manifest grants, NET_ADMIN and NET_RAW (setpriv:
 * bounding, inheritable and ambient sets cut, no_new_privs as allowPrivilegeEscalation: false
 * gives), on a read-only root with only the manifest's writable mounts (the CNI socket directory,
 * the CNI configuration directory and /run/xtables.lock). In both dataplanes it must program the
 * node, answer the CNI plugin, keep it chained, and revoke established connections, with no error
 * logged. What NET_RAW is for is shown too: iptables' set match (both backends) and the legacy
 * backend open a raw socket; without it the agent refuses to start, naming the capability.
 * `podwall cni install` (the init container) needs no capability at all.
 * seccomp RuntimeDefault is not emulated here (no container runtime on this machine).
 * Runs as root; labs, agents, clients and temporary files are removed in afterAll.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadManifestFiles } from "../src/agent/sources/manifests.js";
import { labPodsFor } from "../src/cli/lab.js";
import { declaredPorts } from "../src/compiler/matrix.js";
import { run } from "../src/dataplane/exec.js";
import { pythonExecutable } from "../src/dataplane/lab/agent.js";
import { type LabState, labDown, labUp, probe } from "../src/dataplane/lab/lab.js";
import { tearDown, until } from "../test/support/agent-process.js";
import { onJsonLines } from "../test/support/json-lines.js";

const ROOT = join(import.meta.dirname, "..");
const CLI = join(ROOT, "dist", "cli", "main.js");
const A = "10.251.0.2";
const B = "10.251.0.3";
const C = "10.251.0.4";
const CAP_NET_ADMIN = 1n << 12n;
const CAP_NET_RAW = 1n << 13n;

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
metadata: { name: b, namespace: x, uid: b-uid, labels: { app: b } }
spec:
  nodeName: node-1
  containers: [{ name: c, ports: [{ containerPort: 80 }, { containerPort: 5353, protocol: UDP }] }]
status: { phase: Running, podIP: ${B} }
---
apiVersion: v1
kind: Pod
metadata: { name: c, namespace: x, uid: c-uid, labels: { app: c } }
spec: { nodeName: node-1, containers: [{ name: c }] }
status: { phase: Running, podIP: ${C} }
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

/**
 * Run CMD as the container would: a private mount namespace where every mount but /proc, /sys and
 * /dev is read-only except the WRITABLE paths, then only CAPS (setpriv), with no_new_privs.
 */
const CONTAINER = `set -eu
caps=$1; rw=$2; shift 2
for mp in $(awk '{print $5}' /proc/self/mountinfo | sort -u); do
  case "$mp" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|/run/netns/*) continue;; esac
  # A mount that vanished meanwhile (another process's netns going away) is fine; any other failure is not.
  mount -o remount,bind,ro "$mp" || ! awk '{print $5}' /proc/self/mountinfo | grep -qxF "$mp" || exit 98
done
for d in $rw; do mount --bind "$d" "$d"; mount -o remount,bind,rw "$d"; done
if touch /.podwall-ro-check 2>/dev/null; then rm -f /.podwall-ro-check; echo "root still writable" >&2; exit 99; fi
exec setpriv --bounding-set=-all$caps --inh-caps=-all --ambient-caps=-all --no-new-privs -- "$@"
`;

function containerArgv(
  netns: string | undefined,
  caps: string[],
  writable: string[],
  cmd: string[],
): string[] {
  const capArg = caps.map((c) => `,+${c}`).join("");
  const inner = ["unshare", "--mount", "--propagation", "private", "sh", "-c", CONTAINER, "sh", capArg];
  return [...(netns ? ["ip", "netns", "exec", netns] : []), ...inner, writable.join(" "), ...cmd];
}

/** One GET from inside the node's network namespace (where the agent's loopback listeners are). */
async function nsGet(netns: string, url: string): Promise<{ status: number; body: string }> {
  const js = `fetch(${JSON.stringify(url)}).then(async r => console.log(JSON.stringify({status: r.status, body: await r.text()}))).catch(() => console.log('{"status":0,"body":""}'))`;
  const r = await run("ip", ["netns", "exec", netns, process.execPath, "-e", js]);
  return JSON.parse(r.stdout);
}

function capsOf(pid: number): { eff: bigint; noNewPrivs: string } {
  const st = readFileSync(`/proc/${pid}/status`, "utf8");
  return {
    eff: BigInt(`0x${/^CapEff:\s+(\S+)/m.exec(st)![1]}`),
    noNewPrivs: /^NoNewPrivs:\s+(\S+)/m.exec(st)![1],
  };
}

/** One UDP and one TCP connection from `netns` to b, one exchange each per 100 ms. */
const CLIENT = `
import socket, sys, time
b = sys.argv[1]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect((b, 5353))
t = socket.create_connection((b, 8080), timeout=2)
for x in (u, t): x.settimeout(0.3)
while True:
    for name, x in (("udp", u), ("tcp", t)):
        try:
            x.send(b"ping"); ok = x.recv(64) == b"ping"
        except OSError:
            ok = False
        print(name, int(ok), flush=True)
    time.sleep(0.1)
`;

interface Node {
  dir: string;
  lab: LabState;
  labName: string;
  children: ChildProcess[];
}

async function node(labName: string): Promise<Node> {
  const dir = mkdtempSync(join(tmpdir(), "podwall-hard-"));
  for (const d of ["cluster", "run", "net.d", "bin"]) mkdirSync(join(dir, d));
  writeFileSync(join(dir, "cluster", "00-cluster.yaml"), CLUSTER);
  writeFileSync(join(dir, "cluster", "10-policy.yaml"), policy(OPEN));
  writeFileSync(
    join(dir, "net.d", "10-kindnet.conflist"),
    JSON.stringify({ cniVersion: "0.3.1", name: "kindnet", plugins: [{ type: "ptp" }] }),
  );
  const set = loadManifestFiles([join(dir, "cluster")]);
  const lab = await labUp(labName, labPodsFor(set, declaredPorts(set.pods)));
  return { dir, lab, labName, children: [] };
}

/** The agent as the DaemonSet runs it, in the lab node's netns; its log lines go to `logs`. */
function startAgent(n: Node, caps: string[], extra: string[], logs: Record<string, unknown>[]): ChildProcess {
  const args = ["agent", "--source", join(n.dir, "cluster"), "--node-name", "node-1"];
  args.push("--health-addr", "127.0.0.1:9473", "--metrics-addr", "127.0.0.1:9472", "--batch-delay-ms", "20");
  args.push("--cni-socket", join(n.dir, "run", "cni.sock"), "--cni-conf-dir", join(n.dir, "net.d"), ...extra);
  const writable = [join(n.dir, "run"), join(n.dir, "net.d"), "/run/xtables.lock"];
  const argv = containerArgv(n.lab.nodeNetns, caps, writable, [process.execPath, CLI, ...args]);
  const child = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "ignore", "pipe"] });
  onJsonLines(child.stderr!, (l) => logs.push(l));
  n.children.push(child);
  return child;
}

const reach = async (lab: LabState, from: string, toIp: string, port: number) =>
  (await probe(lab, [{ from, toIp, port, protocol: "TCP" }], { timeoutMs: 500 }))[0];

/** The manifest's capabilities. nfqueue mode on an nft node gets NET_ADMIN alone: it suffices there. */
const CAPS = ["net_admin", "net_raw"];
const MODES = [
  ["iptables", CAPS],
  ["nfqueue", ["net_admin"]],
] as const;

describe.each(MODES)("the agent in %s mode with capabilities %j only, on a read-only root", (mode, caps) => {
  let n: Node;
  let agent: ChildProcess;
  let plugin: string;
  const logs: Record<string, unknown>[] = [];
  const ready = () => nsGet(n.lab.nodeNetns, "http://127.0.0.1:9473/readyz");

  beforeAll(async () => {
    n = await node(`hd${mode[0]}${process.pid.toString(36)}`.slice(0, 12));
    plugin = join(n.dir, "podwall-cni");
    await run("sh", [join(ROOT, "cni", "build.sh"), plugin]);
    const b = n.lab.pods.find((p) => p.key === "x/b")!;
    n.children.push(
      spawn("ip", ["netns", "exec", b.netns, "socat", "TCP-LISTEN:8080,fork,reuseaddr", "EXEC:cat"], {
        stdio: "ignore",
      }),
    );
    agent = startAgent(n, [...caps], ["--dataplane", mode, "--revoke-established"], logs);
    if (!(await until(async () => (await ready()).status === 200, 30_000)))
      throw new Error(`the agent never became ready: ${JSON.stringify(logs.slice(-5))}`);
  }, 90_000);

  afterAll(async () => {
    await tearDown({ processes: n?.children ?? [], lab: n?.labName, dir: n?.dir });
  }, 30_000);

  it("holds exactly those capabilities and no_new_privs; probes on loopback, /metrics on its own listener", async () => {
    const eff = caps.length === 2 ? CAP_NET_ADMIN | CAP_NET_RAW : CAP_NET_ADMIN;
    expect(capsOf(agent.pid!)).toEqual({ eff, noNewPrivs: "1" });
    expect((await nsGet(n.lab.nodeNetns, "http://127.0.0.1:9473/healthz")).status).toBe(200);
    expect((await nsGet(n.lab.nodeNetns, "http://127.0.0.1:9473/metrics")).status).toBe(404);
    const m = await nsGet(n.lab.nodeNetns, "http://127.0.0.1:9472/metrics");
    expect(m.body).toMatch(/^podwall_syncs_total\{result="ok"\} [1-9]/m);
  });

  it("enforces, keeps the CNI plugin chained, and answers its ADDs (hints written beside the socket)", async () => {
    expect(await reach(n.lab, "x/a", B, 80)).toBe(true);
    expect(await reach(n.lab, "x/c", B, 80)).toBe(false);
    const conflist = JSON.parse(readFileSync(join(n.dir, "net.d", "10-kindnet.conflist"), "utf8"));
    expect(conflist.plugins.map((p: { type: string }) => p.type)).toEqual(["ptp", "podwall-cni"]);
    const add = (name: string, uid: string, ip: string) =>
      spawnSync(plugin, [], {
        encoding: "utf8",
        timeout: 20_000,
        input: JSON.stringify({
          cniVersion: "1.0.0",
          name: "kindnet",
          type: "podwall-cni",
          prevResult: { cniVersion: "1.0.0", ips: [{ address: `${ip}/24` }] },
        }),
        env: {
          CNI_COMMAND: "ADD",
          CNI_CONTAINERID: "c0ffee",
          CNI_NETNS: "/var/run/netns/x",
          CNI_IFNAME: "eth0",
          CNI_ARGS: `K8S_POD_NAMESPACE=x;K8S_POD_NAME=${name};K8S_POD_UID=${uid}`,
          PODWALL_CNI_SOCKET: join(n.dir, "run", "cni.sock"),
        },
      });
    const isolated = add("b", "b-uid", B);
    expect([isolated.status, JSON.parse(isolated.stdout).cniVersion]).toEqual([0, "1.0.0"]);
    // A new address for an unisolated pod: kept as a hint in the socket's (writable) directory.
    const hinted = add("c", "c-uid", "10.251.0.9");
    expect(hinted.status, hinted.stdout).toBe(0);
    expect(JSON.parse(readFileSync(join(n.dir, "run", "cni-hints.json"), "utf8"))["x/c"].ips).toEqual([
      "10.251.0.9",
    ]);
  });

  it("revokes established connections a policy edit denies", async () => {
    const a = n.lab.pods.find((p) => p.key === "x/a")!;
    const seen: Record<string, number[]> = {};
    const c = spawn("ip", ["netns", "exec", a.netns, pythonExecutable(), "-u", "-c", CLIENT, B], {
      stdio: ["ignore", "pipe", "ignore"],
    });
    n.children.push(c);
    let buf = "";
    c.stdout!.on("data", (d: Buffer) => {
      buf += d.toString();
      for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
        const [name, ok] = buf.slice(0, i).split(" ");
        (seen[name] ??= []).push(Number(ok));
        buf = buf.slice(i + 1);
      }
    });
    const last = (xs: number[] | undefined, want: number, k: number) =>
      !!xs && xs.length >= k && xs.slice(-k).every((x) => x === want);
    expect(await until(() => last(seen.udp, 1, 3) && last(seen.tcp, 1, 3), 10_000)).toBe(true);
    writeFileSync(join(n.dir, "cluster", "10-policy.yaml"), policy(CLOSED));
    expect(await until(() => last(seen.udp, 0, 5) && last(seen.tcp, 0, 5), 10_000)).toBe(true);
    const pass = logs
      .filter((l) => l.msg === "established connections re-judged against the new policy")
      .pop();
    expect(pass).toMatchObject({ revoked: 2, via: "netlink" });
  });

  it("logged no error (nothing it needed was denied)", () => {
    expect(logs.filter((l) => Number(l.level) >= 50)).toEqual([]);
    expect(JSON.stringify(logs)).not.toMatch(/EROFS|EACCES|EPERM|Permission denied|Read-only/);
  });
});

describe("what NET_RAW is for", () => {
  let n: Node | undefined;
  afterAll(async () => {
    await tearDown({ processes: n?.children ?? [], dir: n?.dir });
    if (n) await labDown(n.labName);
  }, 30_000);

  it("iptables' set match opens a raw socket, in the nft backend too", async () => {
    const ns = `pwraw${process.pid.toString(36)}`;
    await run("ip", ["netns", "add", ns]);
    try {
      await run("ip", ["netns", "exec", ns, "ipset", "create", "s", "hash:ip"]);
      const restore = (caps: string[]) => {
        const argv = containerArgv(ns, caps, ["/run/xtables.lock"], ["iptables-nft-restore", "--noflush"]);
        const input = "*filter\n-A FORWARD -m set --match-set s src -j DROP\nCOMMIT\n";
        return run(argv[0], argv.slice(1), { input, allowFail: true });
      };
      const without = await restore(["net_admin"]);
      expect([without.code, without.stderr]).toEqual([
        1,
        expect.stringMatching(/Can't open socket to ipset/),
      ]);
      expect((await restore(["net_admin", "net_raw"])).code).toBe(0);
    } finally {
      await run("ip", ["netns", "del", ns]);
    }
  });

  it("without it the agent refuses to start, naming the capability; with it, a legacy node is programmed", async () => {
    n = await node(`hl${process.pid.toString(36)}`.slice(0, 12));
    // A rule of another component in the legacy tables: podwall uses the backend the host uses.
    await run("iptables-legacy", ["-A", "FORWARD", "-s", "192.0.2.1", "-j", "DROP"], {
      netns: n.lab.nodeNetns,
    });
    // NET_ADMIN alone cannot read them; rather than guess the backend, the agent stops.
    const out: Record<string, unknown>[] = [];
    const one = startAgent(n, ["net_admin"], [], out);
    const code = await new Promise<number | null>((r) => one.once("exit", r));
    expect(code).toBe(1);
    expect(JSON.stringify(out)).toMatch(/needs CAP_NET_RAW as well as CAP_NET_ADMIN/);
    const logs: Record<string, unknown>[] = [];
    const two = startAgent(n, CAPS, [], logs);
    expect(
      await until(
        async () => (await nsGet(n!.lab.nodeNetns, "http://127.0.0.1:9473/readyz")).status === 200,
        20_000,
      ),
    ).toBe(true);
    expect(capsOf(two.pid!).eff).toBe(CAP_NET_ADMIN | CAP_NET_RAW);
    expect(logs.find((l) => l.msg === "podwall agent starting")).toMatchObject({ backend: "legacy" });
    const legacy = (await run("iptables-legacy-save", ["-t", "filter"], { netns: n.lab.nodeNetns })).stdout;
    expect(legacy).toContain(":PODWALL-FORWARD");
    expect(await reach(n.lab, "x/c", B, 80)).toBe(false);
    expect(await reach(n.lab, "x/a", B, 80)).toBe(true);
    expect(logs.filter((l) => Number(l.level) >= 50)).toEqual([]);
  }, 60_000);
});

describe("podwall cni install (the init container)", () => {
  let dir: string | undefined;
  afterAll(() => tearDown({ processes: [], dir }));

  it("needs no capability and writes only its two host directories", async () => {
    dir = mkdtempSync(join(tmpdir(), "podwall-hard-init-"));
    const bin = join(dir, "bin");
    const conf = join(dir, "net.d");
    mkdirSync(bin);
    mkdirSync(conf);
    writeFileSync(
      join(conf, "10-kindnet.conflist"),
      JSON.stringify({ name: "k", plugins: [{ type: "ptp" }] }),
    );
    const plugin = join(dir, "podwall-cni");
    await run("sh", [join(ROOT, "cni", "build.sh"), plugin]);
    const argv = containerArgv(
      undefined,
      [],
      [bin, conf],
      [
        process.execPath,
        CLI,
        ...["cni", "install", `--plugin=${plugin}`, `--bin-dir=${bin}`, `--conf-dir=${conf}`],
      ],
    );
    const r = await run(argv[0], argv.slice(1), { allowFail: true });
    expect(r.code, r.stderr).toBe(0);
    expect(existsSync(join(bin, "podwall-cni"))).toBe(true);
    expect(readFileSync(join(conf, "10-kindnet.conflist"), "utf8")).toContain("podwall-cni");
  });
});
