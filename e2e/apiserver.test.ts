/**
 * podwall against a real Kubernetes API server: etcd + kube-apiserver 1.20 on loopback
 * (test/support/kube-control-plane.ts; built once per machine by scripts/kube/build.sh).
 *
 * - The agent runs as the DaemonSet's ServiceAccount with the ClusterRole from deploy/, configured
 *   the way a pod is (token file + CA + KUBERNETES_SERVICE_HOST/PORT, TLS verified), and programs a
 *   lab node through the real list/watch path: policy, pod and namespace changes, an object the
 *   server accepts and podwall rejects, an API server restart, and a 410 after etcd compaction.
 * - RBAC is exactly enough: what the agent reads is allowed, no write and no secret is.
 * - Every manifest in deploy/ passes server-side dry-run with every field kept.
 * - The CRDs in deploy/crds install, become Established, and validate.
 * The API server double (test/support/apiserver-double.ts) stays for what a real server cannot be
 * made to do on demand: cut a watch mid-stream, send a bookmark at a chosen moment.
 */
import { type ChildProcess, execFile } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { notExpressible } from "../scripts/gen-crds.js";
import { compilePolicyObject, FROM_API } from "../src/compiler/kinds/index.js";
import { type LabState, labUp, probe } from "../src/dataplane/lab/lab.js";
import { labPodsFor } from "../src/dataplane/lab/matrix.js";
import { freePort, spawnInClusterAgent, tearDown, until } from "../test/support/agent-process.js";
import { type KObj, KubeControlPlane } from "../test/support/kube-control-plane.js";
import { deployDocs, missingFields } from "./support/deploy-docs.js";
import { manifestSet } from "./support/harness.js";
import { IP, ns, type Obj, pod, policy, sel, xyzModel } from "./support/model.js";

const LAB = `kap${process.pid.toString(36)}`.slice(0, 12);
const CLI = join(import.meta.dirname, "..", "dist", "cli", "main.js");

/** The podwall command in a child process (asynchronously: this process keeps serving nothing, but waits). */
function podwall(...args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { encoding: "utf8", maxBuffer: 16 << 20 }, (e, out, err) =>
      resolve({ code: e ? ((e as { code?: number }).code ?? null) : 0, out, err }),
    );
  });
}
const TCP80 = { port: 80, protocol: "TCP" as const };
const SA = { namespace: "podwall-system", name: "podwall" };

let cp: KubeControlPlane;
let lab: LabState;
let agent: ChildProcess | undefined;
let logs: Record<string, unknown>[] = [];
/** Every log line of every agent this file started (`logs` is reset between steps). */
const everyLog: Record<string, unknown>[] = [];
let token = "";
let saDir = "";
let metricsPort = 0;

const reach = async (from: string, to: [string, string]) =>
  (await probe(lab, [{ from, toIp: IP(...to), ...TCP80 }], { timeoutMs: 400 }))[0];

async function metrics(): Promise<string> {
  try {
    return await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  } catch {
    return "";
  }
}

async function metric(name: string): Promise<number> {
  const m = (await metrics()).split("\n").find((l) => l.startsWith(name));
  return m ? Number(m.split(" ").pop()) : Number.NaN;
}

async function ready(): Promise<boolean> {
  try {
    return (await fetch(`http://127.0.0.1:${metricsPort}/readyz`)).status === 200;
  } catch {
    return false;
  }
}

function startAgent(serviceAccountDir = saDir): ChildProcess {
  return spawnInClusterAgent({
    serviceAccountDir,
    host: "127.0.0.1",
    port: cp.apiPort,
    lab: LAB,
    metricsPort,
    extra: ["--resync-seconds", "30", "--batch-delay-ms", "10", "--crd-poll-seconds", "1"],
    onLine: (l) => {
      logs.push(l);
      everyLog.push(l);
    },
  });
}

/** A pod as the model describes it: created, then given its status (create ignores status). */
async function createPod(o: KObj): Promise<void> {
  const { status, ...rest } = o;
  const r = await cp.create(rest);
  if (r.status !== 201) throw new Error(`create pod ${o.metadata.name}: ${JSON.stringify(r.body)}`);
  await cp.mergePatch(o, { status }, "/status");
}

const accessReview = async (attrs: Record<string, string>): Promise<boolean> => {
  const r = await cp.request(
    "POST",
    "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
    {
      apiVersion: "authorization.k8s.io/v1",
      kind: "SelfSubjectAccessReview",
      spec: { resourceAttributes: attrs },
    },
    { token },
  );
  if (r.status !== 201)
    throw new Error(`SelfSubjectAccessReview: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.status.allowed === true;
};

/** The kinds the agent reads: core pods, namespaces, nodes; NetworkPolicies; the network-policy-api kinds. */
const READS: [group: string, resource: string][] = [
  ["", "pods"],
  ["", "namespaces"],
  ["", "nodes"],
  ["networking.k8s.io", "networkpolicies"],
  ["policy.networking.k8s.io", "clusternetworkpolicies"],
  ["policy.networking.k8s.io", "adminnetworkpolicies"],
  ["policy.networking.k8s.io", "baselineadminnetworkpolicies"],
];

describe("podwall against a real kube-apiserver and etcd", () => {
  beforeAll(async () => {
    cp = await KubeControlPlane.start();
    metricsPort = await freePort();
    // The DaemonSet's own RBAC objects, as operators apply them (the DaemonSet itself needs a kubelet).
    const rbac = ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"];
    for (const { obj } of deployDocs("kind")) if (rbac.includes(obj.kind)) await cp.apply(obj);
    token = await cp.serviceAccountToken(SA.namespace, SA.name);
    saDir = cp.writeServiceAccountDir(mkdtempSync(join(tmpdir(), "podwall-sa-")), SA.namespace, token);
    await cp.apply({ apiVersion: "v1", kind: "Node", metadata: { name: "lab" } });
    const objs = xyzModel();
    for (const o of objs) {
      if (o.kind === "Namespace") await cp.apply(o);
      else await createPod(o as KObj);
    }
    lab = await labUp(LAB, labPodsFor(manifestSet(objs), [TCP80]));
  }, 180_000);

  afterAll(async () => {
    const secs = cp?.apiServerStartSeconds.map((s) => s.toFixed(1)).join(", ");
    if (secs) console.log(`kube-apiserver ready after: ${secs} s (first start, then each restart)`);
    try {
      await tearDown({ processes: [agent], lab: LAB, dir: saDir || undefined });
    } finally {
      await cp?.stop();
    }
  });

  it("starts from scratch in seconds (certificates, etcd, kube-apiserver ready)", () => {
    expect(cp.apiServerStartSeconds[0]).toBeGreaterThan(0);
    expect(cp.apiServerStartSeconds[0]).toBeLessThan(90);
  });

  describe("RBAC from deploy/ is exactly enough", () => {
    it("lets the ServiceAccount get, list and watch every kind the agent reads", async () => {
      for (const [group, resource] of READS)
        for (const verb of ["get", "list", "watch"])
          expect([group, resource, verb, await accessReview({ group, resource, verb })]).toEqual([
            group,
            resource,
            verb,
            true,
          ]);
    });

    it("lets it write nothing and read no secret", async () => {
      const denied: Record<string, string>[] = [];
      for (const [group, resource] of READS)
        for (const verb of ["create", "update", "patch", "delete", "deletecollection"])
          denied.push({ group, resource, verb }, { group, resource, verb, namespace: "x" });
      for (const verb of ["get", "list", "watch"])
        for (const namespace of ["", SA.namespace, "kube-system"])
          denied.push({ group: "", resource: "secrets", verb, namespace });
      denied.push(
        { group: "", resource: "pods", subresource: "exec", verb: "create", namespace: "x" },
        { group: "", resource: "pods", subresource: "status", verb: "update", namespace: "x" },
        {
          group: "",
          resource: "serviceaccounts",
          subresource: "token",
          verb: "create",
          namespace: SA.namespace,
        },
        { group: "", resource: "configmaps", verb: "list" },
        { group: "", resource: "events", verb: "create", namespace: SA.namespace },
        { group: "rbac.authorization.k8s.io", resource: "clusterroles", verb: "escalate" },
        { group: "rbac.authorization.k8s.io", resource: "clusterrolebindings", verb: "create" },
        { group: "", resource: "users", verb: "impersonate" },
        { group: "apiextensions.k8s.io", resource: "customresourcedefinitions", verb: "create" },
        { group: "*", resource: "*", verb: "*" },
      );
      const allowed = [];
      for (const a of denied) if (await accessReview(a)) allowed.push(a);
      expect(allowed).toEqual([]);
    });

    it("holds no write verb and no secret anywhere in its rules (SelfSubjectRulesReview)", async () => {
      for (const namespace of [SA.namespace, "x"]) {
        const r = await cp.request(
          "POST",
          "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
          { apiVersion: "authorization.k8s.io/v1", kind: "SelfSubjectRulesReview", spec: { namespace } },
          { token },
        );
        expect(r.status).toBe(201);
        const rules = r.body.status.resourceRules as { verbs: string[]; resources: string[] }[];
        // system:basic-user lets everyone ask these two questions about themselves.
        const selfReviews = new Set(["selfsubjectaccessreviews", "selfsubjectrulesreviews"]);
        const writes = rules.filter(
          (rule) =>
            !rule.resources.every((res) => selfReviews.has(res)) &&
            rule.verbs.some((v) => !["get", "list", "watch"].includes(v)),
        );
        expect(writes).toEqual([]);
        const broad = rules.filter((rule) => rule.resources.some((res) => res === "*" || res === "secrets"));
        expect(broad).toEqual([]);
        // And the agent's own reads are there.
        expect(rules.some((rule) => rule.resources.includes("networkpolicies"))).toBe(true);
      }
    });
  });

  describe("the agent, configured as in a pod, through the real watch path", () => {
    it("refuses an API server whose certificate its CA did not sign (TLS is verified)", async () => {
      const other = KubeControlPlane.otherCA();
      const dir = cp.writeServiceAccountDir(
        mkdtempSync(join(tmpdir(), "podwall-sa-bad-")),
        SA.namespace,
        token,
        other,
      );
      const bad = startAgent(dir);
      try {
        expect(
          await until(
            () =>
              logs.some(
                (l) => String(l.msg).includes("list/watch failed") && /certificate/i.test(String(l.err)),
              ),
            15_000,
          ),
        ).toBe(true);
        expect(await ready()).toBe(false);
        expect(await metric("podwall_api_connected")).toBe(0);
      } finally {
        await tearDown({ processes: [bad], dir });
        logs = [];
      }
    });

    it("lists with its ServiceAccount token and becomes ready", async () => {
      agent = startAgent();
      expect(await until(ready, 30_000, 200)).toBe(true);
      const start = logs.find((l) => l.msg === "kube source starting");
      expect(start?.server).toBe(`https://127.0.0.1:${cp.apiPort}`);
      expect(logs.some((l) => String(l.msg).includes("this node's Node object exists"))).toBe(true);
      const m = await metrics();
      expect(m).toMatch(/podwall_events_received_total\{kind="Pod",type="add"\} 9\b/);
      expect(m).toMatch(/podwall_events_received_total\{kind="Namespace",type="add"\} \d+/);
      expect(m).toMatch(/podwall_api_connected 1\b/);
      expect(logs.filter((l) => String(l.msg).includes("list/watch failed"))).toEqual([]);
    });

    it("enforces policy add, update and delete", async () => {
      expect(await reach("y/a", ["x", "a"])).toBe(true);
      const fromB = policy("x", "from-b", {
        podSelector: {},
        ingress: [{ from: [{ podSelector: sel({ pod: "b" }) }] }],
      });
      await cp.apply(fromB);
      expect(await until(async () => !(await reach("y/a", ["x", "a"])), 5000)).toBe(true);
      expect(await reach("x/b", ["x", "a"])).toBe(true);
      // Update: from pod c instead.
      await cp.apply(
        policy("x", "from-b", { podSelector: {}, ingress: [{ from: [{ podSelector: sel({ pod: "c" }) }] }] }),
      );
      expect(await until(() => reach("x/c", ["x", "a"]), 5000)).toBe(true);
      expect(await reach("x/b", ["x", "a"])).toBe(false);
      await cp.delete(fromB);
      expect(await until(() => reach("y/a", ["x", "a"]), 5000)).toBe(true);
      // Leave x isolated to its b pods for the tests below.
      await cp.apply(fromB);
      expect(await until(async () => !(await reach("y/a", ["x", "a"])), 5000)).toBe(true);
    });

    it("follows pod and namespace label changes", async () => {
      const c = { apiVersion: "v1", kind: "Pod", metadata: { name: "c", namespace: "x" } };
      await cp.mergePatch(c, { metadata: { labels: { pod: "b" } } });
      expect(await until(() => reach("x/c", ["x", "a"]), 5000)).toBe(true);
      await cp.mergePatch(c, { metadata: { labels: { pod: "c" } } });
      expect(await until(async () => !(await reach("x/c", ["x", "a"])), 5000)).toBe(true);
      const fromTeam = policy("x", "from-team", {
        podSelector: {},
        ingress: [{ from: [{ namespaceSelector: sel({ team: "blue" }) }] }],
      });
      await cp.apply(fromTeam);
      const z = { apiVersion: "v1", kind: "Namespace", metadata: { name: "z" } };
      await cp.mergePatch(z, { metadata: { labels: { team: "blue" } } });
      expect(await until(() => reach("z/a", ["x", "a"]), 5000)).toBe(true);
      expect(await reach("y/a", ["x", "a"])).toBe(false);
      await cp.mergePatch(z, { metadata: { labels: { team: null } } });
      expect(await until(async () => !(await reach("z/a", ["x", "a"])), 5000)).toBe(true);
      await cp.delete(fromTeam);
    });

    it("selects namespaces by kubernetes.io/metadata.name, which a 1.20 server does not set", async () => {
      const y = await cp.get({ apiVersion: "v1", kind: "Namespace", metadata: { name: "y" } });
      expect(y?.metadata.labels?.["kubernetes.io/metadata.name"]).toBeUndefined();
      const byName = policy("x", "from-y-by-name", {
        podSelector: {},
        ingress: [{ from: [{ namespaceSelector: sel({ "kubernetes.io/metadata.name": "y" }) }] }],
      });
      await cp.apply(byName);
      expect(await until(() => reach("y/a", ["x", "a"]), 5000)).toBe(true);
      expect(await reach("z/a", ["x", "a"])).toBe(false);
      await cp.delete(byName);
      expect(await until(async () => !(await reach("y/a", ["x", "a"])), 5000)).toBe(true);
    });

    it("reads an IPv4-mapped except inside an IPv4 block as the server does: as the IPv4 range it maps", async () => {
      // The server checks an except against its block with Go's IPNet.Contains, which sees
      // ::ffff:10.77.1.0 as 10.77.1.0, and stores the policy; podwall reads it the same way.
      const mapped = policy("x", "mapped-except", {
        podSelector: {},
        ingress: [{ from: [{ ipBlock: { cidr: "10.77.0.0/16", except: ["::ffff:10.77.1.0/120"] } }] }],
      });
      expect((await cp.create(mapped)).status).toBe(201);
      try {
        // y's pods (10.77.1.x) are the except; z's (10.77.2.x) are inside the block.
        expect(await until(async () => !(await reach("y/a", ["x", "a"])), 5000)).toBe(true);
        expect(await reach("z/a", ["x", "a"])).toBe(true);
        expect(logs.some((l) => String(l.msg).includes("rejected NetworkPolicy x/mapped-except"))).toBe(
          false,
        );
      } finally {
        await cp.delete(mapped);
      }
    });

    it("leaves no pod less protected when it rejects a new policy the server accepted", async () => {
      const only192 = policy("y", "only-192", {
        podSelector: {},
        ingress: [{ from: [{ ipBlock: { cidr: "192.168.0.0/16", except: ["::ffff:192.168.1.0/120"] } }] }],
      });
      expect((await cp.create(only192)).status).toBe(201);
      try {
        // Kubernetes: every y pod is isolated and only 192.168.0.0/16 may connect.
        expect(await until(async () => !(await reach("z/a", ["y", "a"])), 3000)).toBe(true);
      } finally {
        await cp.delete(only192);
      }
    });

    it("keeps enforcing while the API server is down, reconnects when it is back, and resumes its watches", async () => {
      let wrongOpen = 0;
      let wrongClosed = 0;
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
          if (denied) wrongOpen++;
          if (!allowed) wrongClosed++;
          rounds++;
          await new Promise((r) => setTimeout(r, 100));
        }
      })();
      try {
        logs = [];
        await cp.killApiServer();
        expect(await until(async () => (await metric("podwall_api_connected")) === 0, 15_000, 200)).toBe(
          true,
        );
        // Served from etcd, not the watch cache: a watch from the agent's resourceVersion replays
        // the history since then, so no 410 without a compaction (the next test compacts).
        await cp.startApiServer(["--watch-cache=false"]);
        expect(await until(async () => (await metric("podwall_api_connected")) === 1, 40_000, 200)).toBe(
          true,
        );
      } finally {
        stop = true;
        await prober;
      }
      expect(rounds).toBeGreaterThan(5);
      expect([wrongOpen, wrongClosed]).toEqual([0, 0]);
      expect(logs.some((l) => String(l.msg).includes("list/watch failed"))).toBe(true);
      expect(logs.filter((l) => l.expired === true)).toEqual([]);
      // Live again: a new policy is enforced.
      const deny = policy("y", "deny-all", { podSelector: {} });
      await cp.apply(deny);
      expect(await until(async () => !(await reach("z/a", ["y", "a"])), 5000)).toBe(true);
      await cp.delete(deny);
      expect(await until(() => reach("z/a", ["y", "a"]), 5000)).toBe(true);
    }, 90_000);

    it("relists after a 410 once etcd compacted past its resourceVersions, and catches up on what it missed", async () => {
      // Freeze the agent, restart the server under it (its connections die), change the cluster,
      // compact etcd: when it thaws, its watches resume from resourceVersions etcd no longer has.
      process.kill(agent!.pid!, "SIGSTOP");
      try {
        await cp.killApiServer();
        await cp.startApiServer(["--watch-cache=false"]);
        await cp.delete(policy("x", "from-b", {})); // a delete it never sees as an event
        await cp.mergePatch(
          { apiVersion: "v1", kind: "Pod", metadata: { name: "b", namespace: "y" } },
          { metadata: { labels: { pod: "b", role: "db" } } },
        );
        await cp.apply(
          policy("y", "db-from-z", {
            podSelector: sel({ role: "db" }),
            ingress: [{ from: [{ namespaceSelector: sel({ ns: "z" }) }] }],
          }),
        );
        await cp.compactEtcd();
        logs = [];
      } finally {
        process.kill(agent!.pid!, "SIGCONT");
      }
      expect(
        await until(() => logs.some((l) => l.kind === "NetworkPolicy" && l.expired === true), 20_000, 100),
      ).toBe(true);
      expect(await until(() => reach("y/a", ["x", "a"]), 20_000)).toBe(true);
      expect(await until(async () => !(await reach("x/a", ["y", "b"])), 5000)).toBe(true);
      expect(await reach("z/a", ["y", "b"])).toBe(true);
      expect(await until(async () => (await metric("podwall_api_connected")) === 1, 20_000, 200)).toBe(true);
      await cp.delete(policy("y", "db-from-z", {}));
      expect(await until(() => reach("x/a", ["y", "b"]), 5000)).toBe(true);
    }, 90_000);

    it("says once that the ClusterNetworkPolicy CRDs are missing, and picks them up when installed", async () => {
      // Once per agent start (this agent and the one before it were started without the CRDs).
      const notServed = everyLog.filter((l) =>
        String(l.msg).startsWith("ClusterNetworkPolicy is not served by the API server"),
      );
      expect(notServed.length).toBeGreaterThanOrEqual(1);
      expect(notServed.length).toBeLessThanOrEqual(
        everyLog.filter((l) => l.msg === "kube source starting").length,
      );
      expect(await reach("y/a", ["x", "a"])).toBe(true);
      await installCrds();
      const guard = cnp("guard-x-from-y", {
        tier: "Admin",
        priority: 10,
        subject: { namespaces: sel({ ns: "x" }) },
        ingress: [{ name: "no-y", action: "Deny", from: [{ namespaces: sel({ ns: "y" }) }] }],
      });
      expect((await cp.create(guard)).status).toBe(201);
      try {
        expect(await until(async () => !(await reach("y/a", ["x", "a"])), 15_000)).toBe(true);
        expect(await reach("z/a", ["x", "a"])).toBe(true);
        expect(logs.some((l) => String(l.msg).startsWith("ClusterNetworkPolicy is served now"))).toBe(true);
      } finally {
        await cp.delete(guard);
      }
      expect(await until(() => reach("y/a", ["x", "a"]), 10_000)).toBe(true);
    }, 60_000);
  });

  describe("deploy/", () => {
    it("passes server-side dry-run, manifest by manifest, with every field kept", async () => {
      const notObjects: string[] = [];
      const otherApis: string[] = [];
      const checked: string[] = [];
      for (const { file, obj } of deployDocs()) {
        if (typeof obj.apiVersion !== "string" || typeof obj.kind !== "string") {
          notObjects.push(file);
          continue;
        }
        if (!(await cp.serves(obj.apiVersion, obj.kind))) {
          otherApis.push(`${file}: ${obj.apiVersion} ${obj.kind}`);
          continue;
        }
        const got = await cp.apply(obj, { dryRun: true });
        // 1.20 drops unknown fields without a word: a misspelled field would vanish here.
        expect({ file, kind: obj.kind, missing: missingFields(obj, got) }).toEqual({
          file,
          kind: obj.kind,
          missing: [],
        });
        checked.push(`${obj.kind}/${obj.metadata.name}`);
      }
      // Files for other tools: a Grafana dashboard, Prometheus rule files and their promtool tests.
      expect(notObjects).toEqual([
        "monitoring/grafana-dashboard.json",
        "monitoring/podwall.rules.test.yaml",
        "monitoring/podwall.rules.yaml",
      ]);
      // Read by kind, and by the Prometheus Operator, whose CRDs are not podwall's to install.
      expect(otherApis).toEqual([
        "kind/cluster.yaml: kind.x-k8s.io/v1alpha4 Cluster",
        "monitoring/prometheus-operator.yaml: monitoring.coreos.com/v1 PodMonitor",
        "monitoring/prometheus-operator.yaml: monitoring.coreos.com/v1 PrometheusRule",
      ]);
      expect(checked).toContain("DaemonSet/podwall");
      expect(checked).toContain("CustomResourceDefinition/clusternetworkpolicies.policy.networking.k8s.io");
    });
  });

  describe("the CRDs in deploy/crds", () => {
    beforeAll(async () => {
      await installCrds();
    }, 60_000);

    it("install and become Established, with their names accepted and the API approval recognized", async () => {
      for (const { obj } of deployDocs("crds")) {
        const got = await cp.get(obj);
        const cond = Object.fromEntries(
          (got!.status.conditions as { type: string; status: string }[]).map((c) => [c.type, c.status]),
        );
        expect({ name: obj.metadata.name, ...cond }).toEqual({
          name: obj.metadata.name,
          Established: "True",
          NamesAccepted: "True",
          KubernetesAPIApprovalPolicyConformant: "True",
        });
      }
    });

    it("are readable by the agent's ServiceAccount", async () => {
      for (const res of ["clusternetworkpolicies", "adminnetworkpolicies", "baselineadminnetworkpolicies"]) {
        const r = await cp.request(
          "GET",
          `/apis/policy.networking.k8s.io/${res === "clusternetworkpolicies" ? "v1alpha2" : "v1alpha1"}/${res}`,
          undefined,
          { token },
        );
        expect([res, r.status]).toEqual([res, 200]);
      }
    });

    it("accept valid objects, store them as written, and podwall compiles what they store", async () => {
      for (const o of validObjects()) {
        const r = await cp.create(o);
        expect([o.metadata.name, r.status, r.body.message]).toEqual([o.metadata.name, 201, undefined]);
        const stored = (await cp.get(o))!;
        expect([o.metadata.name, missingFields(o.spec, stored.spec)]).toEqual([o.metadata.name, []]);
        // As the agent will read it from a watch: server metadata, managedFields and all.
        expect(() => compilePolicyObject(o.kind, stored, FROM_API)).not.toThrow();
        await cp.delete(o);
      }
    });

    it("leave the rules that need CEL to podwall: the server stores them, podwall's compiler refuses them", async () => {
      const base = { tier: "Admin", priority: 5, subject: { namespaces: {} } };
      const from = [{ namespaces: {} }];
      const celOnly = [
        cnp("range-backwards", {
          ...base,
          ingress: [
            {
              action: "Deny",
              from,
              protocols: [{ tcp: { destinationPort: { range: { start: 90, end: 80 } } } }],
            },
          ],
        }),
        cnp("named-port-to-networks", {
          ...base,
          egress: [
            {
              action: "Deny",
              to: [{ networks: ["10.0.0.0/8"] }],
              protocols: [{ destinationNamedPort: "http" }],
            },
          ],
        }),
      ];
      expect(celOnly.length).toBe(notExpressible.length);
      for (const o of celOnly) {
        expect([o.metadata.name, (await cp.create(o, { dryRun: true })).status]).toEqual([
          o.metadata.name,
          201,
        ]);
        expect(() => compilePolicyObject(o.kind, o, FROM_API)).toThrow(/range|named port/);
      }
    });

    it.each(invalidCases())("reject $what", async ({ obj, field }) => {
      const r = await cp.create(obj, { dryRun: true });
      expect(r.status).toBe(422);
      // 1.20 names list items without their index (spec.ingress.action).
      const fields = ((r.body.details?.causes ?? []) as { field: string }[]).map((c) => c.field);
      expect(fields).toContain(field.replace(/\[\d+\]/g, ""));
    });
  });

  describe("simulate, explain and diff --kubeconfig, as the agent's (list-only) ServiceAccount", () => {
    const guard = cnp("diff-guard", {
      tier: "Admin",
      priority: 7,
      subject: { namespaces: sel({ ns: "diffns" }) },
      ingress: [{ name: "no-z", action: "Deny", from: [{ namespaces: sel({ ns: "z" }) }] }],
    });
    const diffns = [
      ns("diffns", { ns: "diffns" }),
      pod("diffns", "a", ["10.78.0.10"], { pod: "a" }, [{ name: "http", containerPort: 80 }]),
      pod("diffns", "b", ["10.78.0.11"], { pod: "b" }, [{ name: "http", containerPort: 80 }]),
    ];

    afterAll(async () => {
      await cp.delete(guard).catch(() => undefined);
      for (const o of diffns.slice(1)) await cp.delete(o as KObj).catch(() => undefined);
    });

    it("read the live cluster: a what-if names exactly the cells the policy would close", async () => {
      await cp.apply(diffns[0] as KObj);
      for (const o of diffns.slice(1)) await createPod(o as KObj);
      await cp.apply(guard);
      const dir = mkdtempSync(join(tmpdir(), "podwall-diff-"));
      const kc = cp.writeKubeconfig(join(dir, "kubeconfig"), token);
      const onlyA = join(dir, "only-a.yaml");
      writeFileSync(
        onlyA,
        JSON.stringify(
          policy("diffns", "only-a", {
            podSelector: sel({ pod: "b" }),
            ingress: [{ from: [{ podSelector: sel({ pod: "a" }) }] }],
          }),
        ),
      );
      const before = await podwall("simulate", "--kubeconfig", kc, "--port", "80/TCP", "-o", "json");
      expect(before.code, before.err).toBe(0);
      const cells = JSON.parse(before.out).results as { from: string; to: string; allowed: boolean }[];
      // The Admin guard keeps z out of diffns; x and y get in (nothing else in the cluster isolates them).
      const into = (from: string) => cells.find((c) => c.from === from && c.to === "diffns/b")?.allowed;
      expect(["z/a", "z/b", "z/c"].map(into)).toEqual([false, false, false]);
      expect(["x/a", "y/c", "diffns/a"].map(into)).toEqual([true, true, true]);
      const d = await podwall("diff", "--kubeconfig", kc, "--apply", onlyA, "--port", "80/TCP", "-o", "json");
      expect(d.code, d.err).toBe(1);
      const out = JSON.parse(d.out);
      // Closed: every cell into diffns/b that was open, except from diffns/a (now allowed by only-a)
      // and diffns/b itself (a pod talking to itself); nothing else.
      const want = cells
        .filter((c) => c.to === "diffns/b" && c.allowed && c.from !== "diffns/a" && c.from !== "diffns/b")
        .map((c) => c.from)
        .sort();
      expect(want).toEqual(expect.arrayContaining(["x/a", "x/b", "x/c", "y/a", "y/b", "y/c"]));
      expect(out.changes.map((c: { from: string }) => c.from).sort()).toEqual(want);
      expect(out).toMatchObject({ opened: 0, closed: want.length, podsAdded: [], podsRemoved: [] });
      for (const c of out.changes) {
        expect(c).toMatchObject({ to: "diffns/b", port: 80, protocol: "TCP", before: true, after: false });
        expect(c.reasonAfter).toContain("NetworkPolicy default deny (isolated by diffns/only-a)");
      }
      const ex = await podwall(
        "explain",
        "--kubeconfig",
        kc,
        "--from",
        "z/a",
        "--to",
        "diffns/b",
        "--port",
        "80/TCP",
      );
      expect(ex.code, ex.err).toBe(0);
      expect(ex.out).toContain("ClusterNetworkPolicy diff-guard (Admin, priority 7), ingress rule 0 'no-z'");
    }, 120_000);
  });
});

async function installCrds(): Promise<void> {
  const crds = deployDocs("crds").map((d) => d.obj);
  for (const crd of crds) await cp.apply(crd);
  for (const crd of crds) {
    const established = await until(
      async () => {
        const got = await cp.get(crd);
        return !!got?.status?.conditions?.some((c: KObj) => c.type === "Established" && c.status === "True");
      },
      30_000,
      100,
    );
    if (!established) throw new Error(`CRD ${crd.metadata.name} not Established within 30 s`);
  }
}

// ------------------------------------------------------------------ network-policy-api objects

const GROUP = "policy.networking.k8s.io";

function cnp(name: string, spec: Obj): KObj {
  return { apiVersion: `${GROUP}/v1alpha2`, kind: "ClusterNetworkPolicy", metadata: { name }, spec };
}
function anp(name: string, spec: Obj): KObj {
  return { apiVersion: `${GROUP}/v1alpha1`, kind: "AdminNetworkPolicy", metadata: { name }, spec };
}
function banp(name: string, spec: Obj): KObj {
  return { apiVersion: `${GROUP}/v1alpha1`, kind: "BaselineAdminNetworkPolicy", metadata: { name }, spec };
}

const podsPeer = { pods: { namespaceSelector: sel({ ns: "x" }), podSelector: sel({ pod: "b" }) } };
const cnpIngress = (n: number, action = "Accept") =>
  Array.from({ length: n }, (_, i) => ({ name: `r${i}`, action, from: [{ namespaces: sel({ ns: "y" }) }] }));

function validObjects(): KObj[] {
  return [
    cnp("admin-accept-from-b", {
      tier: "Admin",
      priority: 10,
      subject: { namespaces: sel({ ns: "x" }) },
      ingress: [
        {
          name: "from-b",
          action: "Accept",
          from: [podsPeer],
          protocols: [{ tcp: { destinationPort: { number: 80 } } }, { destinationNamedPort: "serve-80-tcp" }],
        },
        { action: "Pass", from: [{ namespaces: {} }] },
      ],
      egress: [
        {
          action: "Deny",
          to: [{ networks: ["10.0.0.0/8", "fd00::/8"] }],
          protocols: [{ udp: { destinationPort: { range: { start: 1000, end: 2000 } } } }],
        },
      ],
    }),
    cnp("baseline-deny", {
      tier: "Baseline",
      priority: 1000,
      subject: {
        pods: { podSelector: { matchExpressions: [{ key: "pod", operator: "In", values: ["a", "b"] }] } },
      },
      ingress: cnpIngress(25, "Deny"),
    }),
    anp("anp-pass", {
      priority: 0,
      subject: { namespaces: {} },
      ingress: [
        {
          action: "Pass",
          from: [{ namespaces: sel({ ns: "y" }) }],
          ports: [
            { portNumber: { port: 80 } },
            { namedPort: "serve-81-tcp" },
            { portRange: { protocol: "UDP", start: 80, end: 90 } },
          ],
        },
      ],
      egress: [{ action: "Allow", to: [{ networks: ["192.0.2.0/24"] }] }],
    }),
    banp("default", {
      subject: { namespaces: {} },
      ingress: [{ action: "Deny", from: [{ namespaces: {} }] }],
    }),
  ];
}

/** One fault per object, and the field the server must name. */
function invalidCases(): { what: string; obj: KObj; field: string }[] {
  const base = () => ({
    tier: "Admin",
    priority: 5,
    subject: { namespaces: {} },
    ingress: cnpIngress(1),
  });
  const c = (what: string, field: string, mutate: (s: KObj) => void) => {
    const spec = base() as KObj;
    mutate(spec);
    return { what: `ClusterNetworkPolicy: ${what}`, obj: cnp("bad", spec), field };
  };
  const anpBase = () => ({ priority: 5, subject: { namespaces: {} } }) as KObj;
  return [
    c("an unknown tier", "spec.tier", (s) => (s.tier = "Application")),
    c("no tier", "spec.tier", (s) => delete s.tier),
    c("priority 1001", "spec.priority", (s) => (s.priority = 1001)),
    c("priority -1", "spec.priority", (s) => (s.priority = -1)),
    c(
      "two subject kinds",
      "spec.subject",
      (s) => (s.subject = { namespaces: {}, pods: { podSelector: {} } }),
    ),
    c("an empty subject", "spec.subject", (s) => (s.subject = {})),
    c(
      "a pods subject without podSelector",
      "spec.subject.pods.podSelector",
      (s) => (s.subject = { pods: {} }),
    ),
    c("26 ingress rules", "spec.ingress", (s) => (s.ingress = cnpIngress(26))),
    c(
      "26 egress rules",
      "spec.egress",
      (s) => (s.egress = cnpIngress(26).map(({ from, ...r }) => ({ ...r, to: from }))),
    ),
    c("action Allow (v1alpha1's word)", "spec.ingress[0].action", (s) => (s.ingress[0].action = "Allow")),
    c("a rule without peers", "spec.ingress[0].from", (s) => (s.ingress[0].from = [])),
    c(
      "a peer of two kinds",
      "spec.ingress[0].from[0]",
      (s) => (s.ingress[0].from = [{ namespaces: {}, pods: { podSelector: {} } }]),
    ),
    c(
      "an ingress networks peer (egress only)",
      "spec.ingress[0].from[0]",
      (s) => (s.ingress[0].from = [{ networks: ["10.0.0.0/8"] }]),
    ),
    c("an experimental nodes peer (pruned, then empty)", "spec.egress[0].to[0]", (s) => {
      delete s.ingress;
      s.egress = [{ action: "Deny", to: [{ nodes: {} }] }];
    }),
    c(
      "a bad CIDR",
      "spec.egress[0].to[0].networks[0]",
      (s) => (s.egress = [{ action: "Deny", to: [{ networks: ["10.0.0.0/33"] }] }]),
    ),
    c(
      "port 0",
      "spec.ingress[0].protocols[0].tcp.destinationPort.number",
      (s) => (s.ingress[0].protocols = [{ tcp: { destinationPort: { number: 0 } } }]),
    ),
    c(
      "port 65536",
      "spec.ingress[0].protocols[0].sctp.destinationPort.range.end",
      (s) => (s.ingress[0].protocols = [{ sctp: { destinationPort: { range: { start: 1, end: 65536 } } } }]),
    ),
    c(
      "tcp and udp in one protocol entry",
      "spec.ingress[0].protocols[0]",
      (s) =>
        (s.ingress[0].protocols = [
          { tcp: { destinationPort: { number: 80 } }, udp: { destinationPort: { number: 80 } } },
        ]),
    ),
    c(
      "a port with number and range",
      "spec.ingress[0].protocols[0].tcp.destinationPort",
      (s) =>
        (s.ingress[0].protocols = [
          { tcp: { destinationPort: { number: 80, range: { start: 1, end: 2 } } } },
        ]),
    ),
    c(
      "a bad named port",
      "spec.ingress[0].protocols[0].destinationNamedPort",
      (s) => (s.ingress[0].protocols = [{ destinationNamedPort: "Not_A_Port" }]),
    ),
    c("a rule name of 101 characters", "spec.ingress[0].name", (s) => (s.ingress[0].name = "n".repeat(101))),
    c(
      "a bad selector operator",
      "spec.subject.namespaces.matchExpressions[0].operator",
      (s) => (s.subject = { namespaces: { matchExpressions: [{ key: "a", operator: "Like" }] } }),
    ),
    {
      what: "AdminNetworkPolicy: priority 1001",
      obj: anp("bad", { ...anpBase(), priority: 1001 }),
      field: "spec.priority",
    },
    {
      what: "AdminNetworkPolicy: action Accept (v1alpha2's word)",
      obj: anp("bad", { ...anpBase(), ingress: [{ action: "Accept", from: [{ namespaces: {} }] }] }),
      field: "spec.ingress[0].action",
    },
    {
      what: "AdminNetworkPolicy: 101 egress rules",
      obj: anp("bad", {
        ...anpBase(),
        egress: Array.from({ length: 101 }, () => ({ action: "Deny", to: [{ namespaces: {} }] })),
      }),
      field: "spec.egress",
    },
    {
      what: "AdminNetworkPolicy: a port of two kinds",
      obj: anp("bad", {
        ...anpBase(),
        ingress: [
          {
            action: "Deny",
            from: [{ namespaces: {} }],
            ports: [{ portNumber: { port: 80 }, namedPort: "http" }],
          },
        ],
      }),
      field: "spec.ingress[0].ports[0]",
    },
    {
      what: "AdminNetworkPolicy: protocol ICMP",
      obj: anp("bad", {
        ...anpBase(),
        ingress: [
          {
            action: "Deny",
            from: [{ namespaces: {} }],
            ports: [{ portNumber: { protocol: "ICMP", port: 80 } }],
          },
        ],
      }),
      field: "spec.ingress[0].ports[0].portNumber.protocol",
    },
    {
      what: "BaselineAdminNetworkPolicy: a name other than default",
      obj: banp("other", { subject: { namespaces: {} } }),
      field: "metadata.name",
    },
    {
      what: "BaselineAdminNetworkPolicy: action Pass",
      obj: banp("default", {
        subject: { namespaces: {} },
        ingress: [{ action: "Pass", from: [{ namespaces: {} }] }],
      }),
      field: "spec.ingress[0].action",
    },
  ];
}
