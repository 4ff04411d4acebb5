/**
 * Real-kernel e2e for the chained CNI plugin: the compiled cni/podwall-cni.c, called the way a
 * container runtime calls it, against the real agent (`--source DIR --lab L --cni-socket S`).
 * The agent's folder holds shop/db before the kubelet has reported its IP (no status.podIP): the
 * pod is unprotected until the plugin's ADD hands the agent the address the network plugin
 * assigned. The ADD must return only once the pod's rules are in the kernel.
 * Runs as root; the lab (cn*), the agent and the temporary files are removed in afterAll.
 */
import { type ChildProcess, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadManifestFiles } from "../src/agent/sources/manifests.js";
import { installCni, uninstallCni } from "../src/cli/cni.js";
import { labPodsFor } from "../src/cli/lab.js";
import { declaredPorts } from "../src/compiler/matrix.js";
import { run } from "../src/dataplane/exec.js";
import { type LabState, labUp, type ProbeRequest, probe } from "../src/dataplane/lab/lab.js";
import { shortHash } from "../src/dataplane/render.js";
import { freePort, spawnAgent, tearDown, until } from "../test/support/agent-process.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const CLI = join(ROOT, "dist", "cli", "main.js");
const DEMO = join(ROOT, "examples", "demo");
const LAB = `cn${process.pid.toString(36)}`.slice(0, 12);
const DB_IP = "10.244.1.12";
const DB_CHAIN = `PODWALL-ING-${shortHash("shop/db")}`;
/** shop/db takes 5432 from shop/backend only. */
const DENIED: ProbeRequest = { from: "shop/frontend", toIp: DB_IP, port: 5432, protocol: "TCP" };
const ALLOWED: ProbeRequest = { from: "shop/backend", toIp: DB_IP, port: 5432, protocol: "TCP" };

let dir: string;
let src: string;
let plugin: string;
let socket: string;
let lab: LabState | undefined;
let agent: ChildProcess | undefined;
let confDir: string;
let metricsPort: number;
const KINDNET = {
  cniVersion: "0.3.1",
  name: "kindnet",
  plugins: [{ type: "ptp", ipam: { type: "host-local" } }, { type: "portmap" }],
};
const logs: Record<string, unknown>[] = [];

const prevResult = {
  cniVersion: "1.0.0",
  interfaces: [{ name: "eth0", sandbox: "/var/run/netns/test" }],
  ips: [{ address: `${DB_IP}/24`, interface: 0, gateway: "10.244.1.1" }],
};

/** One plugin call, exactly as a runtime makes it: CNI_* environment, configuration on stdin. */
function callPlugin(command: string, args: string, config: unknown, sock = socket) {
  const r = spawnSync(plugin, [], {
    input: typeof config === "string" ? config : JSON.stringify(config),
    encoding: "utf8",
    timeout: 30_000,
    env: {
      CNI_COMMAND: command,
      CNI_CONTAINERID: "c0ffee",
      CNI_NETNS: "/var/run/netns/test",
      CNI_IFNAME: "eth0",
      CNI_ARGS: args,
      CNI_PATH: "/opt/cni/bin",
      PODWALL_CNI_SOCKET: sock,
    },
  });
  return { code: r.status, out: r.stdout, json: r.stdout.trim() ? JSON.parse(r.stdout) : undefined };
}

const podArgs = (ns: string, name: string) =>
  `IgnoreUnknown=1;K8S_POD_NAMESPACE=${ns};K8S_POD_NAME=${name};K8S_POD_INFRA_CONTAINER_ID=c0ffee`;
const conf = { cniVersion: "1.0.0", name: "kindnet", type: "podwall-cni", prevResult };

async function dbChainPresent(): Promise<boolean> {
  const text = (await run("iptables-save", ["-t", "filter"], { netns: lab!.nodeNetns })).stdout;
  return text.split("\n").some((l) => l.startsWith(`:${DB_CHAIN} `));
}

const reach = async (r: ProbeRequest) => (await probe(lab!, [r], { timeoutMs: 400 }))[0];

/** The demo cluster with shop/db's status IP removed: scheduled, sandbox not reported yet. */
function withoutDbIp(text: string): string {
  const out = text.replace("status: { phase: Running, podIP: 10.244.1.12 }", "status: { phase: Pending }");
  if (out === text) throw new Error("the demo cluster changed: shop/db's status line not found");
  return out;
}

beforeAll(async () => {
  await run("npx", ["tsc", "-p", join(ROOT, "tsconfig.json")], { allowFail: true, timeoutMs: 60_000 });
  if (!existsSync(CLI)) throw new Error(`${CLI} missing: run npm run build`);
  dir = mkdtempSync(join(tmpdir(), "podwall-cni-"));
  plugin = join(dir, "podwall-cni");
  await run("sh", [join(ROOT, "cni", "build.sh"), plugin]); // the one recipe, as the image builds it
  socket = join(dir, "run", "cni.sock");
  src = join(dir, "cluster");
  cpSync(DEMO, src, { recursive: true });
  const full = loadManifestFiles([src]);
  lab = await labUp(LAB, labPodsFor(full, declaredPorts(full.pods)));
  const cluster = join(src, "00-cluster.yaml");
  writeFileSync(cluster, withoutDbIp(readFileSync(cluster, "utf8")));
  confDir = join(dir, "net.d");
  mkdirSync(confDir);
  writeFileSync(join(confDir, "10-kindnet.conflist"), JSON.stringify(KINDNET));
  metricsPort = await freePort();
  await startAgent();
}, 90_000);

/** Starts the agent and waits for its first sync. */
async function startAgent(): Promise<void> {
  const from = logs.length;
  const args = ["--source", src, "--lab", LAB, "--cni-socket", socket, "--cni-wait-seconds", "3"];
  args.push("--cni-conf-dir", confDir, "--metrics-addr", `127.0.0.1:${metricsPort}`);
  agent = spawnAgent(args, (l) => logs.push(l));
  if (!(await until(() => logs.slice(from).some((l) => l.msg === "sync"), 20_000)))
    throw new Error(`the agent never synced: ${JSON.stringify(logs.slice(-5))}`);
}

afterAll(() => tearDown({ processes: [agent], lab: lab ? LAB : undefined, dir }), 30_000);

describe("chained CNI plugin (podwall-cni) with the real agent", () => {
  it("answers VERSION itself and lets DEL pass without the agent", () => {
    const v = callPlugin("VERSION", "", {}, "/nonexistent.sock");
    expect(v.code).toBe(0);
    expect(v.json.supportedVersions).toContain("1.0.0");
    expect(callPlugin("DEL", podArgs("shop", "db"), conf, "/nonexistent.sock").code).toBe(0);
  });

  it("fails an ADD with a CNI error when the agent is not there (the pod waits, it is not let in unprotected)", () => {
    const r = callPlugin("ADD", podArgs("shop", "db"), conf, join(dir, "absent.sock"));
    expect(r.code).toBe(1);
    expect(r.json).toMatchObject({ code: 11, msg: expect.stringMatching(/agent is not reachable/) });
  });

  it("an ADD returns only once the pod's rules are programmed, and its result is the previous plugin's", async () => {
    // Before: the agent knows shop/db but not its address, so nothing protects it.
    expect(await dbChainPresent()).toBe(false);
    expect(await reach(DENIED)).toBe(true);
    const r = callPlugin("ADD", podArgs("shop", "db"), conf);
    expect(r.code, r.out).toBe(0);
    expect(r.json).toEqual({ ...prevResult, cniVersion: "1.0.0" });
    // No waiting here: when the plugin returned, the kernel already held the rules.
    expect(await dbChainPresent()).toBe(true);
    expect(await reach(DENIED)).toBe(false);
    expect(await reach(ALLOWED)).toBe(true);
    const line = logs.find((l) => l.msg === "cni add: pod programmed");
    expect(line).toMatchObject({ pod: "shop/db", ips: [DB_IP], containerId: "c0ffee" });
  });

  it("an agent restarted before the status has the address still knows it (hints file beside the socket)", async () => {
    const old = agent!;
    const gone = new Promise((r) => old.once("close", r));
    old.kill("SIGKILL");
    await gone;
    expect(JSON.parse(readFileSync(join(dir, "run", "cni-hints.json"), "utf8"))).toEqual({
      "shop/db": { ips: [DB_IP] },
    });
    const from = logs.length;
    await startAgent();
    expect(logs.slice(from).find((l) => l.msg === "cni hints: loaded")).toMatchObject({ hints: 1 });
    // Its first sync kept shop/db's rules: without the hint the pod would have no address and no chain.
    expect(await dbChainPresent()).toBe(true);
    expect(await reach(DENIED)).toBe(false);
    expect(await reach(ALLOWED)).toBe(true);
  });

  it("keeps the address while the pod's status has none, and hands over once it has one", async () => {
    const cluster = join(src, "00-cluster.yaml");
    // A relabel-free update of shop/db that still carries no IP (a status change, say).
    const syncs = logs.filter((l) => l.msg === "sync").length;
    writeFileSync(cluster, `${readFileSync(cluster, "utf8")}\n`);
    writeFileSync(
      join(src, "99-touch.yaml"),
      "apiVersion: v1\nkind: Namespace\nmetadata: { name: touched, labels: { t: '1' } }\n",
    );
    expect(await until(() => logs.filter((l) => l.msg === "sync").length > syncs, 5000)).toBe(true);
    expect(await dbChainPresent()).toBe(true);
    expect(await reach(DENIED)).toBe(false);
    // The kubelet reports the IP: the status takes over, enforcement stays.
    writeFileSync(cluster, readFileSync(join(DEMO, "00-cluster.yaml"), "utf8"));
    await new Promise((r) => setTimeout(r, 500));
    expect(await dbChainPresent()).toBe(true);
    expect(await reach(DENIED)).toBe(false);
    expect(await reach(ALLOWED)).toBe(true);
  });

  it("refuses an ADD it cannot honour, with the CNI error code the runtime retries on", () => {
    const unknown = callPlugin("ADD", podArgs("shop", "not-there"), conf);
    expect(unknown.code).toBe(1);
    expect(unknown.json).toMatchObject({
      code: 11,
      msg: expect.stringMatching(/shop\/not-there is not known/),
    });
    const unchained = callPlugin("ADD", podArgs("shop", "db"), {
      cniVersion: "1.0.0",
      name: "x",
      type: "podwall-cni",
    });
    expect(unchained.code).toBe(1);
    expect(unchained.json).toMatchObject({ code: 4, msg: expect.stringMatching(/no prevResult/) });
    expect(callPlugin("ADD", podArgs("shop", "db"), "{not json").json).toMatchObject({ code: 4 });
    // Not a Kubernetes pod: nothing to enforce, the previous result passes through.
    const plain = callPlugin("ADD", "IgnoreUnknown=1", conf);
    expect([plain.code, plain.json]).toEqual([0, { ...prevResult, cniVersion: "1.0.0" }]);
  });
});

describe("the agent keeps podwall-cni chained (--cni-conf-dir)", () => {
  const chained = () =>
    JSON.parse(readFileSync(join(confDir, "10-kindnet.conflist"), "utf8")).plugins.map(
      (p: { type: string }) => p.type,
    );
  const rechained = async () => {
    const text = await fetch(`http://127.0.0.1:${metricsPort}/metrics`).then((r) => r.text());
    return Number(/^podwall_cni_rechained_total (\S+)$/m.exec(text)?.[1]);
  };

  it("chains itself at start, and again when the network plugin rewrites its conflist", async () => {
    expect(chained()).toEqual(["ptp", "portmap", "podwall-cni"]);
    expect(await rechained()).toBe(0);
    // The network plugin writes its file afresh (a restart, say), without our entry.
    writeFileSync(join(confDir, "10-kindnet.conflist"), JSON.stringify(KINDNET));
    expect(await until(() => chained().includes("podwall-cni"), 15_000)).toBe(true);
    expect(chained()).toEqual(["ptp", "portmap", "podwall-cni"]);
    expect(await until(async () => (await rechained()) === 1, 5000)).toBe(true);
    expect(
      logs.some((l) => l.msg === "podwall-cni was missing from the CNI configuration; chained it again"),
    ).toBe(true);
  });
});

describe("podwall cni install / uninstall", () => {
  it("copies the plugin and chains it last in the first conflist, idempotently; uninstall unchains it", () => {
    const bin = join(dir, "opt-cni-bin");
    const net = join(dir, "etc-cni-net.d");
    mkdirSync(bin);
    mkdirSync(net);
    const kindnet = {
      cniVersion: "0.3.1",
      name: "kindnet",
      plugins: [{ type: "ptp", ipam: { type: "host-local" } }, { type: "portmap" }],
    };
    writeFileSync(join(net, "10-kindnet.conflist"), JSON.stringify(kindnet));
    writeFileSync(join(net, "99-other.conflist"), JSON.stringify({ ...kindnet, name: "other" }));
    for (let i = 0; i < 2; i++) installCni(plugin, bin, net);
    expect(existsSync(join(bin, "podwall-cni"))).toBe(true);
    const after = JSON.parse(readFileSync(join(net, "10-kindnet.conflist"), "utf8"));
    expect(after.plugins.map((p: { type: string }) => p.type)).toEqual(["ptp", "portmap", "podwall-cni"]);
    expect(after.plugins[0]).toEqual(kindnet.plugins[0]);
    expect(JSON.parse(readFileSync(join(net, "99-other.conflist"), "utf8"))).toEqual({
      ...kindnet,
      name: "other",
    });
    uninstallCni(net);
    expect(JSON.parse(readFileSync(join(net, "10-kindnet.conflist"), "utf8"))).toEqual(kindnet);
  });
});
