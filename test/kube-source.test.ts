/**
 * KubeSource against the apiserver double (real HTTP list/watch): initial sync, live changes,
 * 410 relist without spurious deletes, API server down/up, rejected objects, clean stop, memory.
 */
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { V1NetworkPolicy } from "@kubernetes/client-node";
import { afterEach, describe, expect, it } from "vitest";
import type { ClusterSink, ObjectKind } from "../src/agent/cluster-events.js";
import { ListReader } from "../src/agent/sources/kube/list-reader.js";
import { KubeSource } from "../src/agent/sources/kube-source.js";
import type { NamespaceInfo, NodeInfo, PodInfo } from "../src/compiler/model.js";
import { ApiServerDouble, type KObj } from "./support/apiserver-double.js";

// ------------------------------------------------------------------ helpers

class RecordingSink implements ClusterSink {
  readonly log: string[] = [];
  readonly pods = new Map<string, PodInfo>();
  readonly namespaces = new Map<string, NamespaceInfo>();
  readonly policies = new Map<string, V1NetworkPolicy>();
  readonly rejections: { kind: ObjectKind; key: string; error: Error }[] = [];
  syncedCalls = 0;
  /** Length of `log` when synced() was called. */
  syncedAt = -1;

  upsertPod(pod: PodInfo): void {
    const k = `${pod.namespace}/${pod.name}`;
    this.log.push(`upsert Pod ${k}`);
    this.pods.set(k, pod);
  }
  deletePod(namespace: string, name: string): void {
    this.log.push(`delete Pod ${namespace}/${name}`);
    this.pods.delete(`${namespace}/${name}`);
  }
  upsertNamespace(ns: NamespaceInfo): void {
    this.log.push(`upsert Namespace ${ns.name}`);
    this.namespaces.set(ns.name, ns);
  }
  deleteNamespace(name: string): void {
    this.log.push(`delete Namespace ${name}`);
    this.namespaces.delete(name);
  }
  upsertNode(node: NodeInfo): void {
    this.log.push(`upsert Node ${node.name}`);
  }
  deleteNode(name: string): void {
    this.log.push(`delete Node ${name}`);
  }
  upsertPolicy(raw: unknown): void {
    const policy = raw as V1NetworkPolicy;
    const k = `${policy.metadata?.namespace}/${policy.metadata?.name}`;
    this.log.push(`upsert NetworkPolicy ${k}`);
    this.policies.set(k, policy);
  }
  deletePolicy(namespace: string, name: string): void {
    this.log.push(`delete NetworkPolicy ${namespace}/${name}`);
    this.policies.delete(`${namespace}/${name}`);
  }
  rejected(kind: ObjectKind, key: string, error: Error): void {
    this.log.push(`rejected ${kind} ${key}`);
    this.rejections.push({ kind, key, error });
  }
  synced(): void {
    this.syncedCalls++;
    if (this.syncedAt < 0) this.syncedAt = this.log.length;
  }
  deletes(): string[] {
    return this.log.filter((l) => l.startsWith("delete "));
  }
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function pod(ns: string, name: string, labels: Record<string, string>, ip: string, extra: KObj = {}): KObj {
  return {
    metadata: { name, namespace: ns, labels },
    spec: {
      nodeName: "node-1",
      containers: [
        { name: "app", image: "app:1", ports: [{ name: "http", containerPort: 8080, protocol: "TCP" }] },
      ],
    },
    status: { phase: "Running", podIP: ip, podIPs: [{ ip }] },
    ...extra,
  };
}

function ns(name: string, labels: Record<string, string> = {}): KObj {
  return { metadata: { name, labels } };
}

function policy(namespace: string, name: string, app: string): KObj {
  return {
    metadata: {
      name,
      namespace,
      annotations: { "kubectl.kubernetes.io/last-applied-configuration": "{...}" },
      managedFields: [{ manager: "kubectl" }],
    },
    spec: {
      podSelector: { matchLabels: { app } },
      policyTypes: ["Ingress"],
      ingress: [{ from: [{ podSelector: {} }] }],
    },
  };
}

function node(name: string): KObj {
  return { metadata: { name, labels: { "kubernetes.io/hostname": name } }, status: { addresses: [] } };
}

interface Harness {
  api: ApiServerDouble;
  src: KubeSource;
  sink: RecordingSink;
  logs: { level: string; msg: string; obj: object }[];
  events: string[];
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function harness(seed: (api: ApiServerDouble) => void, startSource = true): Promise<Harness> {
  const api = new ApiServerDouble();
  await api.start();
  cleanups.push(() => api.close());
  seed(api);
  const logs: Harness["logs"] = [];
  const events: string[] = [];
  const logger = {
    info: (obj: object, msg: string) => logs.push({ level: "info", msg, obj }),
    warn: (obj: object, msg: string) => logs.push({ level: "warn", msg, obj }),
    error: (obj: object, msg: string) => logs.push({ level: "error", msg, obj }),
  };
  const src = new KubeSource({
    kubeconfigPath: api.kubeconfigFile(),
    nodeName: "node-1",
    logger,
    onEvent: (kind, type) => events.push(`${kind}:${type}`),
    backoff: { initialMs: 50, maxMs: 400 },
  });
  cleanups.push(() => src.stop());
  const sink = new RecordingSink();
  if (startSource) {
    await src.start(sink);
    await waitFor("synced", () => sink.syncedCalls > 0);
  }
  return { api, src, sink, logs, events };
}

function seedBasic(api: ApiServerDouble): void {
  api.create("Namespace", ns("a", { team: "red" }));
  api.create("Namespace", ns("b"));
  api.create("Node", node("node-1"));
  api.create("Node", node("node-2"));
  for (let i = 1; i <= 5; i++) api.create("Pod", pod("a", `p${i}`, { app: "web" }, `10.0.0.${i}`));
  api.create("Pod", pod("b", "q1", { app: "db" }, "10.0.1.1"));
  api.create("NetworkPolicy", policy("a", "allow-web", "web"));
}

// ------------------------------------------------------------------ tests

describe("KubeSource against the apiserver double", () => {
  it("lists every kind, then calls synced() exactly once", async () => {
    const { api, src, sink, events } = await harness(seedBasic);
    expect(sink.syncedCalls).toBe(1);
    // Everything listed reached the sink before synced().
    const beforeSync = sink.log.slice(0, sink.syncedAt);
    for (let i = 1; i <= 5; i++) expect(beforeSync).toContain(`upsert Pod a/p${i}`);
    expect(beforeSync).toContain("upsert Pod b/q1");
    expect(beforeSync).toContain("upsert Namespace a");
    expect(beforeSync).toContain("upsert NetworkPolicy a/allow-web");
    expect(sink.deletes()).toEqual([]);
    expect(sink.pods.get("a/p1")).toMatchObject({
      ips: ["10.0.0.1"],
      labels: { app: "web" },
      ports: [{ name: "http", port: 8080, protocol: "TCP" }],
    });
    expect(sink.namespaces.get("a")?.labels).toEqual({ team: "red", "kubernetes.io/metadata.name": "a" });
    const pol = sink.policies.get("a/allow-web")!;
    expect(pol.spec?.podSelector).toEqual({ matchLabels: { app: "web" } });
    expect(pol.metadata?.annotations).toBeUndefined(); // last-applied dropped
    expect((pol.metadata as KObj).managedFields).toBeUndefined();
    const st = src.status();
    expect(st.connected).toBe(true);
    expect(st.nodeSeen).toBe(true);
    expect(st.watchRestarts).toEqual({
      Namespace: 0,
      Pod: 0,
      NetworkPolicy: 0,
      Node: 0,
      ClusterNetworkPolicy: 0,
      AdminNetworkPolicy: 0,
      BaselineAdminNetworkPolicy: 0,
    });
    expect(events.filter((e) => e === "Pod:add")).toHaveLength(6);
    // One list and one watch per kind; the node list used the field selector.
    for (const r of ["pods", "namespaces", "networkpolicies", "nodes"]) {
      expect(api.requests(r)).toMatchObject({ list: 1, watch: 1 });
    }
    await waitFor("watches open", () => api.openWatches() === 4);
    // Changes after the sync never call synced() again.
    api.create("Pod", pod("b", "q2", {}, "10.0.1.2"));
    await waitFor("q2", () => sink.pods.has("b/q2"));
    expect(sink.syncedCalls).toBe(1);
  });

  it("delivers creates, updates and deletes of pods, namespaces and policies", async () => {
    const { api, sink } = await harness(seedBasic);
    const mark = sink.log.length;
    api.create("Namespace", ns("c", { env: "prod" }));
    api.create("Pod", pod("c", "r1", { app: "api" }, "10.0.2.1"));
    api.create("NetworkPolicy", policy("c", "deny", "api"));
    await waitFor(
      "creates",
      () => sink.pods.has("c/r1") && sink.policies.has("c/deny") && sink.namespaces.has("c"),
    );

    // A pod label change is an upsert carrying the new labels.
    const p1 = api.get("Pod", "p1", "a")!;
    p1.metadata.labels = { app: "web", tier: "front" };
    api.update("Pod", p1);
    await waitFor("p1 relabel", () => sink.pods.get("a/p1")?.labels.tier === "front");

    const nsC = api.get("Namespace", "c")!;
    nsC.metadata.labels.env = "staging";
    api.update("Namespace", nsC);
    await waitFor("ns relabel", () => sink.namespaces.get("c")?.labels.env === "staging");

    const pol = api.get("NetworkPolicy", "deny", "c")!;
    pol.spec.podSelector = { matchLabels: { app: "other" } };
    api.update("NetworkPolicy", pol);
    await waitFor("policy update", () => {
      const sel = sink.policies.get("c/deny")?.spec?.podSelector as KObj | undefined;
      return sel?.matchLabels?.app === "other";
    });

    api.delete("Pod", { metadata: { name: "r1", namespace: "c" } });
    api.delete("NetworkPolicy", { metadata: { name: "deny", namespace: "c" } });
    api.delete("Namespace", { metadata: { name: "c" } });
    await waitFor(
      "deletes",
      () => !sink.pods.has("c/r1") && !sink.policies.has("c/deny") && !sink.namespaces.has("c"),
    );
    // Each kind is its own watch: the order holds per kind (what the table relies on), not across kinds.
    const perKind = (k: string) => sink.log.slice(mark).filter((l) => l.split(" ")[1] === k);
    expect(perKind("Namespace")).toEqual(["upsert Namespace c", "upsert Namespace c", "delete Namespace c"]);
    expect(perKind("Pod")).toEqual(["upsert Pod c/r1", "upsert Pod a/p1", "delete Pod c/r1"]);
    expect(perKind("NetworkPolicy")).toEqual([
      "upsert NetworkPolicy c/deny",
      "upsert NetworkPolicy c/deny",
      "delete NetworkPolicy c/deny",
    ]);
  });

  it("passes every Node on (nodes peers), and tracks whether this node's own exists", async () => {
    const { api, src, sink } = await harness(seedBasic);
    await waitFor("nodes listed", () => sink.log.includes("upsert Node node-2"));
    api.delete("Node", { metadata: { name: "node-2" } });
    await waitFor("other node gone", () => sink.log.includes("delete Node node-2"));
    expect(src.status().nodeSeen).toBe(true);
    api.delete("Node", { metadata: { name: "node-1" } });
    await waitFor("node gone", () => !src.status().nodeSeen);
    api.create("Node", node("node-1"));
    await waitFor("node back", () => src.status().nodeSeen);
  });

  it("relists after 410 Gone without deleting objects that still exist", async () => {
    const { api, src, sink } = await harness(seedBasic);
    await waitFor("watches open", () => api.openWatches() === 4);
    const mark = sink.log.length;
    const podLists = api.requests("pods").list;

    // The watch path stalls; meanwhile objects change and the server compacts its history,
    // then the connections drop. Resuming from the old RV must fail with 410 and relist.
    api.stallWatches();
    api.delete("Pod", { metadata: { name: "p1", namespace: "a" } });
    const p2 = api.get("Pod", "p2", "a")!;
    p2.metadata.labels = { app: "web", moved: "yes" };
    api.update("Pod", p2);
    api.create("Pod", pod("a", "p6", { app: "web" }, "10.0.0.6"));
    api.delete("NetworkPolicy", { metadata: { name: "allow-web", namespace: "a" } });
    api.compactHistory();
    api.cutWatches();

    await waitFor(
      "relist",
      () => sink.pods.has("a/p6") && !sink.pods.has("a/p1") && !sink.policies.has("a/allow-web"),
    );
    await waitFor("watches back", () => api.openWatches() === 4);
    expect(api.requests("pods").list).toBe(podLists + 1);
    const after = sink.log.slice(mark);
    // Only the objects that really went away are deleted; unchanged ones are not even re-upserted.
    expect(after.filter((l) => l.startsWith("delete ")).sort()).toEqual([
      "delete NetworkPolicy a/allow-web",
      "delete Pod a/p1",
    ]);
    expect(after.filter((l) => l.startsWith("upsert ")).sort()).toEqual([
      "upsert Pod a/p2",
      "upsert Pod a/p6",
    ]);
    expect(sink.pods.get("a/p2")?.labels.moved).toBe("yes");
    expect([...sink.pods.keys()].sort()).toEqual(["a/p2", "a/p3", "a/p4", "a/p5", "a/p6", "b/q1"]);
    expect(src.status().watchRestarts.Pod).toBeGreaterThan(0);
    expect(sink.syncedCalls).toBe(1);

    // And it keeps watching after the relist.
    api.create("Pod", pod("b", "q9", {}, "10.0.1.9"));
    await waitFor("q9", () => sink.pods.has("b/q9"));
  });

  it("keeps its place with bookmarks: no relist after compaction when the RV is current", async () => {
    const { api, src, sink } = await harness(seedBasic);
    await waitFor("watches open", () => api.openWatches() === 4);
    // Pod events move the global RV past the RVs the other kinds last saw.
    api.create("Pod", pod("b", "q2", {}, "10.0.1.2"));
    await waitFor("q2", () => sink.pods.has("b/q2"));
    api.sendBookmarks();
    await new Promise((r) => setTimeout(r, 50));
    const lists = ["pods", "namespaces", "networkpolicies", "nodes"].map((r) => api.requests(r).list);
    api.compactHistory();
    api.cutWatches();
    await waitFor("watches back", () => api.openWatches() === 4 && src.status().connected);
    await new Promise((r) => setTimeout(r, 100));
    expect(["pods", "namespaces", "networkpolicies", "nodes"].map((r) => api.requests(r).list)).toEqual(
      lists,
    );
    expect(sink.deletes()).toEqual([]);
  });

  it("reports disconnected while the API server is down and catches up when it returns", async () => {
    const { api, src, sink, logs } = await harness(seedBasic);
    await waitFor("watches open", () => api.openWatches() === 4);
    const lists = api.requests("pods").list;
    const mark = sink.log.length;

    await api.stop();
    await waitFor("disconnected", () => !src.status().connected);
    // Changes while the source cannot see them.
    api.delete("Pod", { metadata: { name: "p3", namespace: "a" } });
    api.create("Pod", pod("b", "q2", { app: "db" }, "10.0.1.2"));
    const nsA = api.get("Namespace", "a")!;
    nsA.metadata.labels.team = "blue";
    api.update("Namespace", nsA);
    await new Promise((r) => setTimeout(r, 300)); // a few failed retries
    expect(src.status().connected).toBe(false);
    expect(logs.some((l) => l.level === "warn" && /retrying/.test(l.msg))).toBe(true);

    await api.start();
    await waitFor("reconnected", () => src.status().connected, 15_000);
    await waitFor("caught up", () => !sink.pods.has("a/p3") && sink.pods.has("b/q2"));
    await waitFor("ns label", () => sink.namespaces.get("a")?.labels.team === "blue");
    // History covered the gap: resumed from the last RV, no relist, no spurious deletes.
    expect(api.requests("pods").list).toBe(lists);
    expect(sink.log.slice(mark).filter((l) => l.startsWith("delete "))).toEqual(["delete Pod a/p3"]);
    const st = src.status();
    for (const k of ["Pod", "Namespace", "NetworkPolicy", "Node"])
      expect(st.watchRestarts[k]).toBeGreaterThan(0);

    // Down again, this time the history is compacted while down: reconnect relists instead.
    await api.stop();
    await waitFor("disconnected again", () => !src.status().connected);
    api.delete("Pod", { metadata: { name: "p4", namespace: "a" } });
    api.compactHistory();
    await api.start();
    await waitFor("relisted", () => !sink.pods.has("a/p4") && src.status().connected, 15_000);
    expect(api.requests("pods").list).toBe(lists + 1);
    expect(sink.log.slice(mark).filter((l) => l.startsWith("delete "))).toEqual([
      "delete Pod a/p3",
      "delete Pod a/p4",
    ]);
  });

  it("syncs once the API server comes up after the source started", async () => {
    const api = new ApiServerDouble();
    await api.start();
    cleanups.push(() => api.close());
    seedBasic(api);
    const kubeconfig = api.kubeconfigFile();
    await api.stop();
    const src = new KubeSource({
      kubeconfigPath: kubeconfig,
      nodeName: "node-1",
      backoff: { initialMs: 50, maxMs: 200 },
    });
    cleanups.push(() => src.stop());
    const sink = new RecordingSink();
    await src.start(sink); // resolves although nothing is reachable
    expect(src.status().connected).toBe(false);
    expect(sink.syncedCalls).toBe(0);
    await api.start();
    await waitFor("synced", () => sink.syncedCalls === 1);
    expect(sink.pods.size).toBe(6);
    expect(src.status().connected).toBe(true);
  });

  it("rejects objects it cannot normalize and lets the rest flow", async () => {
    const { api, sink, events } = await harness((a) => {
      seedBasic(a);
      a.create("Pod", pod("a", "bad", { app: "web" }, "not-an-ip"));
    });
    expect(sink.rejections.map((r) => `${r.kind} ${r.key}`)).toEqual(["Pod a/bad"]);
    expect(sink.rejections[0].error.message).toMatch(/not an IP address/);
    expect(sink.pods.has("a/bad")).toBe(false);
    expect(sink.pods.size).toBe(6);

    // Live: a bad pod, a malformed policy and a good pod created right after them.
    api.create("Pod", pod("b", "bad2", {}, "999.1.1.1"));
    api.create("NetworkPolicy", {
      metadata: { name: "broken", namespace: "b" },
      spec: { ingress: "everything" },
    });
    api.create("Pod", pod("b", "good", {}, "10.0.1.7"));
    await waitFor("good pod", () => sink.pods.has("b/good"));
    // A policy is only trimmed here: the compiler validates it (and fails closed) when the table takes it.
    expect(sink.rejections.map((r) => `${r.kind} ${r.key}`)).toEqual(["Pod a/bad", "Pod b/bad2"]);
    await waitFor("broken policy passed on", () => sink.policies.has("b/broken"));
    expect(events.filter((e) => e === "Pod:add").length).toBe(9);

    // A later valid version of the bad pod flows; deleting it arrives as a delete.
    const fixed = api.get("Pod", "bad2", "b")!;
    fixed.status = { phase: "Running", podIP: "10.0.1.8", podIPs: [{ ip: "10.0.1.8" }] };
    api.update("Pod", fixed);
    await waitFor("fixed", () => sink.pods.get("b/bad2")?.ips[0] === "10.0.1.8");
    api.delete("Pod", fixed as { metadata: { name: string; namespace: string } });
    await waitFor("deleted", () => !sink.pods.has("b/bad2"));
  });

  it("paces a server that ends every watch at once, and gives up on one that never answers", async () => {
    let mode: "close" | "hang" = "close";
    const watches = new Map<string, number>();
    const server = createServer((req, res) => {
      const url = new URL(req.url ?? "/", "http://x");
      const kind = url.pathname.split("/").pop()!;
      if (url.searchParams.get("watch") === "true") {
        watches.set(kind, (watches.get(kind) ?? 0) + 1);
        if (mode === "close") {
          res.writeHead(200, { "Content-Type": "application/json" });
          res.end();
        }
        return; // "hang": never answer
      }
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(
        JSON.stringify({ kind: "List", apiVersion: "v1", metadata: { resourceVersion: "5" }, items: [] }),
      );
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    cleanups.push(async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    });
    const port = (server.address() as { port: number }).port;
    const double = new ApiServerDouble();
    await double.start();
    const text = double.kubeconfig().replace(double.url, `http://127.0.0.1:${port}`);
    await double.close();
    const dir = mkdtempSync(join(tmpdir(), "ks-"));
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, "kubeconfig"), text);
    const src = new KubeSource({
      kubeconfigPath: join(dir, "kubeconfig"),
      nodeName: "node-1",
      backoff: { initialMs: 50, maxMs: 400 },
      requestTimeoutMs: 300,
    });
    cleanups.push(() => src.stop());
    const sink = new RecordingSink();
    await src.start(sink);
    await waitFor("synced", () => sink.syncedCalls === 1);
    await new Promise((r) => setTimeout(r, 1500));
    // ListWatch alone would re-watch in a tight loop; paced, it is a handful per kind.
    expect(watches.get("pods")).toBeGreaterThan(2);
    expect(watches.get("pods")).toBeLessThan(15);

    mode = "hang";
    await waitFor("disconnected", () => !src.status().connected, 5_000);
    await src.stop();
  });

  it("stop() closes every connection and timer", async () => {
    await new Promise((r) => setTimeout(r, 50)); // earlier tests' sockets finish closing
    const before = process.getActiveResourcesInfo();
    const count = (list: string[], t: string) => list.filter((x) => x === t).length;
    const { api, src } = await harness(seedBasic);
    await waitFor("watches open", () => api.openWatches() === 4);
    // Also stop while a retry is pending.
    await api.stop();
    await waitFor("disconnected", () => !src.status().connected);
    await src.stop();
    await api.close();
    await new Promise((r) => setTimeout(r, 50));
    const after = process.getActiveResourcesInfo();
    expect(count(after, "TCPSocketWrap")).toBe(0);
    expect(count(after, "TCPServerWrap")).toBe(count(before, "TCPServerWrap"));
    expect(count(after, "Timeout")).toBeLessThanOrEqual(count(before, "Timeout") + 1); // the sleep above
  });

  it("stop() during the initial list and watch leaves nothing behind", async () => {
    const { api, src } = await harness(seedBasic, false);
    const sink = new RecordingSink();
    const starting = src.start(sink);
    await src.stop();
    await starting;
    await new Promise((r) => setTimeout(r, 50));
    expect(api.openWatches()).toBe(0);
    expect(process.getActiveResourcesInfo().filter((x) => x === "TCPSocketWrap")).toHaveLength(0);
  });
});

// ------------------------------------------------------------------ the double itself

async function getJSON(url: string): Promise<{ status: number; body: KObj }> {
  const r = await fetch(url);
  return { status: r.status, body: (await r.json()) as KObj };
}

/** Read a watch stream until `n` events arrived or the stream ended. */
async function watchEvents(url: string, n: number, during?: () => void): Promise<KObj[]> {
  const ctl = new AbortController();
  const r = await fetch(url, { signal: ctl.signal });
  expect(r.status).toBe(200);
  const out: KObj[] = [];
  const reader = r.body!.getReader();
  const dec = new TextDecoder();
  let buf = "";
  during?.();
  while (out.length < n) {
    const { done, value } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i = buf.indexOf("\n");
    while (i >= 0) {
      out.push(JSON.parse(buf.slice(0, i)));
      buf = buf.slice(i + 1);
      i = buf.indexOf("\n");
    }
  }
  ctl.abort();
  return out;
}

describe("ListReader", () => {
  it("streams list items out of arbitrarily split text", () => {
    const list = {
      kind: "PodList",
      apiVersion: "v1",
      metadata: { resourceVersion: "42", continue: "abc]}{", note: 'items":[' },
      items: [
        { metadata: { name: 'a"}]{[\\' }, spec: { list: [1, [2, { x: "]" }]] } },
        { metadata: { name: "b", labels: { items: "[{" } } },
        {},
      ],
      trailer: { items: [{ not: "an item" }] },
    };
    const text = JSON.stringify(list, null, 1);
    for (const step of [1, 2, 3, 7, 64, text.length]) {
      const got: unknown[] = [];
      const r = new ListReader((o) => got.push(o));
      for (let i = 0; i < text.length; i += step) r.push(text.slice(i, i + step));
      expect(got).toEqual(list.items);
      expect(r.end()).toEqual({ ...list, items: [] });
    }
    expect(() => new ListReader(() => undefined).end()).toThrow();
    const r = new ListReader(() => undefined);
    r.push('{"kind":"Status","code":500}');
    expect(() => r.end()).toThrow();
  });
});

describe("apiserver double wire protocol", () => {
  it("lists, pages, watches, expires and filters like the real server", async () => {
    const api = new ApiServerDouble();
    await api.start();
    cleanups.push(() => api.close());
    seedBasic(api);
    const base = api.url;

    const list = await getJSON(`${base}/api/v1/namespaces/a/pods`);
    expect(list.body.kind).toBe("PodList");
    expect(list.body.items.map((p: KObj) => p.metadata.name)).toEqual(["p1", "p2", "p3", "p4", "p5"]);
    expect(list.body.items[0].kind).toBeUndefined(); // list items carry no kind/apiVersion
    const rv = Number(list.body.metadata.resourceVersion);
    expect(rv).toBe(api.resourceVersion);

    // Pagination is a consistent snapshot: a pod created between pages does not appear.
    const page1 = await getJSON(`${base}/api/v1/pods?limit=4`);
    expect(page1.body.items).toHaveLength(4);
    expect(page1.body.metadata.remainingItemCount).toBe(2);
    api.create("Pod", pod("a", "p0", {}, "10.0.0.100"));
    const page2 = await getJSON(
      `${base}/api/v1/pods?limit=4&continue=${encodeURIComponent(page1.body.metadata.continue)}`,
    );
    expect(page2.body.items.map((p: KObj) => p.metadata.name)).toEqual(["p5", "q1"]);
    expect(page2.body.metadata.continue).toBeUndefined();
    api.compactHistory();
    const expired = await getJSON(
      `${base}/api/v1/pods?limit=4&continue=${encodeURIComponent(page1.body.metadata.continue)}`,
    );
    expect(expired.status).toBe(410);
    expect(expired.body).toMatchObject({ kind: "Status", reason: "Expired", code: 410 });

    // Watch from an RV before the compaction: 200, one ERROR 410 event, end of stream.
    const gone = await watchEvents(`${base}/api/v1/pods?watch=true&resourceVersion=${rv}`, 5);
    expect(gone).toEqual([
      { type: "ERROR", object: expect.objectContaining({ code: 410, reason: "Expired" }) },
    ]);

    // Watch without RV: synthetic ADDED for current state; then live events; bookmarks only if asked.
    const now = api.resourceVersion;
    const evs = await watchEvents(`${base}/api/v1/namespaces?watch=1&allowWatchBookmarks=true`, 4, () => {
      api.create("Namespace", ns("c"));
      api.sendBookmarks();
    });
    expect(evs.map((e) => `${e.type} ${e.object.metadata.name ?? ""}`)).toEqual([
      "ADDED a",
      "ADDED b",
      "ADDED c",
      "BOOKMARK ",
    ]);
    expect(evs[2].object.kind).toBe("Namespace");
    expect(Number(evs[2].object.metadata.resourceVersion)).toBe(now + 1);
    expect(evs[3].object.metadata.resourceVersion).toBe(String(now + 1));

    // fieldSelector: an object leaving the selection is a DELETED for that watcher.
    const nodeEvs = await watchEvents(
      `${base}/api/v1/nodes?watch=true&resourceVersion=${api.resourceVersion}&fieldSelector=spec.unschedulable%3Dtrue`,
      2,
      () => {
        const n1 = api.get("Node", "node-1")!;
        api.update("Node", { ...n1, spec: { unschedulable: true } });
        api.update("Node", { ...n1, spec: {} });
        api.update("Node", {
          ...api.get("Node", "node-2")!,
          metadata: { name: "node-2", labels: { x: "y" } },
        });
      },
    );
    expect(nodeEvs.map((e) => `${e.type} ${e.object.metadata.name}`)).toEqual([
      "ADDED node-1",
      "DELETED node-1",
    ]);
    expect((await getJSON(`${base}/api/v1/nodes?fieldSelector=spec.bogus%3D1`)).status).toBe(400);

    const one = await getJSON(`${base}/apis/networking.k8s.io/v1/namespaces/a/networkpolicies/allow-web`);
    expect(one.body).toMatchObject({ kind: "NetworkPolicy", apiVersion: "networking.k8s.io/v1" });
    expect((await getJSON(`${base}/api/v1/namespaces/a/pods/nope`)).body).toMatchObject({
      code: 404,
      reason: "NotFound",
    });
    expect(api.requests("pods").list).toBe(4);
    expect(api.requests("pods").get).toBe(1);
  });
});

// ------------------------------------------------------------------ memory

/** A pod as the API serves it: managedFields, annotations, several containers, full status. */
function bulkyPod(i: number): KObj {
  const nsName = `ns-${i % 100}`;
  const name = `app-${Math.floor(i / 100)}-deployment-7d9c8b6f5-${(i * 7919).toString(36).padStart(5, "x")}`;
  const container = (c: number) => ({
    name: `c${c}`,
    image: `registry.example/team/app-${c}:v1.2.${c}`,
    imagePullPolicy: "IfNotPresent",
    args: ["--config=/etc/app/config.yaml", "--log-level=info", `--shard=${i}`],
    env: Array.from({ length: 8 }, (_, e) => ({ name: `ENV_${e}`, value: `value-${e}-${i}` })),
    ports: [{ name: `http-${c}`, containerPort: 8080 + c, protocol: "TCP" }],
    resources: { limits: { cpu: "500m", memory: "256Mi" }, requests: { cpu: "100m", memory: "128Mi" } },
    volumeMounts: [
      { name: "config", mountPath: "/etc/app" },
      { name: "kube-api-access", mountPath: "/var/run/secrets/kubernetes.io/serviceaccount", readOnly: true },
    ],
    livenessProbe: { httpGet: { path: "/healthz", port: 8080 + c }, periodSeconds: 10 },
    terminationMessagePath: "/dev/termination-log",
  });
  return {
    metadata: {
      name,
      namespace: nsName,
      generateName: name.slice(0, -5),
      labels: {
        app: `app-${i % 50}`,
        "pod-template-hash": "7d9c8b6f5",
        tier: i % 3 ? "backend" : "frontend",
      },
      annotations: {
        "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z",
        "prometheus.io/scrape": "true",
        "checksum/config": "f".repeat(64),
      },
      ownerReferences: [
        {
          apiVersion: "apps/v1",
          kind: "ReplicaSet",
          name: name.slice(0, -6),
          uid: "3f1c".repeat(9),
          controller: true,
        },
      ],
      managedFields: [
        {
          manager: "kube-controller-manager",
          operation: "Update",
          apiVersion: "v1",
          time: "2026-01-01T00:00:00Z",
          fieldsType: "FieldsV1",
          fieldsV1: {
            "f:metadata": { "f:labels": { ".": {}, "f:app": {}, "f:pod-template-hash": {} } },
            "f:spec": { "f:containers": { 'k:{"name":"c0"}': { ".": {}, "f:image": {}, "f:ports": {} } } },
          },
        },
        {
          manager: "kubelet",
          operation: "Update",
          apiVersion: "v1",
          time: "2026-01-01T00:00:05Z",
          fieldsType: "FieldsV1",
          subresource: "status",
          fieldsV1: {
            "f:status": { "f:conditions": {}, "f:containerStatuses": {}, "f:podIP": {}, "f:podIPs": {} },
          },
        },
      ],
    },
    spec: {
      nodeName: `node-${i % 200}`,
      serviceAccountName: "default",
      containers: [container(0), container(1), container(2)],
      initContainers: [{ ...container(9), ports: [] }],
      volumes: [
        { name: "config", configMap: { name: "app-config" } },
        { name: "kube-api-access", projected: {} },
      ],
      tolerations: [
        {
          key: "node.kubernetes.io/not-ready",
          operator: "Exists",
          effect: "NoExecute",
          tolerationSeconds: 300,
        },
      ],
    },
    status: {
      phase: "Running",
      hostIP: `192.168.${i % 200}.1`,
      podIP: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
      podIPs: [{ ip: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}` }],
      startTime: "2026-01-01T00:00:00Z",
      conditions: ["Initialized", "Ready", "ContainersReady", "PodScheduled"].map((type) => ({
        type,
        status: "True",
        lastTransitionTime: "2026-01-01T00:00:00Z",
      })),
      containerStatuses: [0, 1, 2].map((c) => ({
        name: `c${c}`,
        ready: true,
        restartCount: 0,
        image: `registry.example/team/app-${c}:v1.2.${c}`,
        imageID: `registry.example/team/app-${c}@sha256:${"a".repeat(64)}`,
        containerID: `containerd://${"b".repeat(64)}`,
        started: true,
        state: { running: { startedAt: "2026-01-01T00:00:01Z" } },
      })),
    },
  };
}

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("exit", (code) =>
      code === 0 ? resolve(stdout) : reject(new Error(`${cmd} exited ${code}: ${stderr}${stdout}`)),
    );
  });
}

function gcFn(): () => void {
  setFlagsFromString("--expose-gc");
  return runInNewContext("gc") as () => void;
}

describe("KubeSource memory", () => {
  it("holds 10k bulky pods in a small heap", async () => {
    const gc = gcFn();
    const api = new ApiServerDouble({ historyLimit: 100 });
    await api.start();
    cleanups.push(() => api.close());
    for (let n = 0; n < 100; n++) api.create("Namespace", ns(`ns-${n}`));
    for (let i = 0; i < 10_000; i++) api.create("Pod", bulkyPod(i));
    api.create("Node", node("node-1"));
    const wire = JSON.stringify(bulkyPod(1)).length;

    // A sink that keeps what the reconciler would keep: every PodInfo.
    const sink = new RecordingSink();
    sink.log.push = () => 0; // don't count the test's own event log
    gc();
    gc();
    const base = process.memoryUsage().heapUsed;
    const src = new KubeSource({ kubeconfigPath: api.kubeconfigFile(), nodeName: "node-1" });
    cleanups.push(() => src.stop());
    const t0 = performance.now();
    await src.start(sink);
    await waitFor("synced", () => sink.syncedCalls > 0, 60_000);
    const listMs = performance.now() - t0;
    expect(sink.pods.size).toBe(10_000);
    gc();
    gc();
    const delta = process.memoryUsage().heapUsed - base;
    const mb = (b: number) => (b / 2 ** 20).toFixed(1);
    console.log(
      `[kube-source memory] 10k pods (${(wire / 1024).toFixed(1)} KiB each on the wire, ${mb(wire * 10_000)} MiB total): ` +
        `heapUsed delta after GC ${mb(delta)} MiB (source cache + sink PodInfos), list+sync ${listMs.toFixed(0)} ms`,
    );
    expect(delta).toBeLessThan(150 * 2 ** 20);
    expect(src.status().synced).toBe(true);
  });

  it("a separate agent-like process stays well under 200 MB RSS with 10k pods", async () => {
    const api = new ApiServerDouble({ historyLimit: 100 });
    await api.start();
    cleanups.push(() => api.close());
    for (let n = 0; n < 100; n++) api.create("Namespace", ns(`ns-${n}`));
    for (let i = 0; i < 10_000; i++) api.create("Pod", bulkyPod(i));
    // Plain node on tsc output: tsx's loader thread alone would add ~80 MB of RSS.
    const root = new URL("..", import.meta.url).pathname;
    mkdirSync(join(root, "node_modules/.cache"), { recursive: true });
    const outDir = mkdtempSync(join(root, "node_modules/.cache/kube-source-rss-"));
    cleanups.push(async () => rmSync(outDir, { recursive: true, force: true }));
    await run(process.execPath, [
      join(root, "node_modules/typescript/bin/tsc"),
      "--ignoreConfig",
      "--outDir",
      outDir,
      "--rootDir",
      join(root, "src"),
      "--module",
      "nodenext",
      "--moduleResolution",
      "nodenext",
      "--target",
      "es2022",
      "--skipLibCheck",
      "--types",
      "node",
      join(root, "src/agent/sources/kube-source.ts"),
    ]);
    const script = `
      import { KubeSource } from ${JSON.stringify(join(outDir, "agent/sources/kube-source.js"))};
      const pods = new Map();
      let synced = false;
      const sink = {
        upsertPod: (p) => pods.set(p.namespace + "/" + p.name, p), deletePod() {}, upsertNamespace() {},
        deleteNamespace() {}, upsertNode() {}, deleteNode() {}, upsertPolicy() {}, deletePolicy() {}, rejected() {}, synced: () => { synced = true; },
      };
      global.gc(); const before = process.memoryUsage();
      const src = new KubeSource({ kubeconfigPath: ${JSON.stringify(api.kubeconfigFile())}, nodeName: "node-1" });
      let peakRss = 0;
      const sampler = setInterval(() => { peakRss = Math.max(peakRss, process.memoryUsage().rss); }, 5);
      await src.start(sink);
      while (!synced) await new Promise((r) => setTimeout(r, 5));
      clearInterval(sampler);
      global.gc(); global.gc();
      const m = process.memoryUsage();
      console.log(JSON.stringify({ pods: pods.size, rss: m.rss, peakRss, heapUsed: m.heapUsed, heapBefore: before.heapUsed, rssBefore: before.rss }));
      await src.stop();
    `;
    const mb = (b: number) => (b / 2 ** 20).toFixed(1);
    const measure = async (flags: string[]) => {
      const out = await run(process.execPath, [...flags, "--expose-gc", "--input-type=module", "-e", script]);
      const r = JSON.parse(out.trim().split("\n").pop()!);
      console.log(
        `[kube-source memory] child process ${flags.join(" ") || "(default flags)"}, 10k pods: RSS ${mb(r.rss)} MiB ` +
          `after GC (peak ${mb(r.peakRss)}; ${mb(r.rssBefore)} MiB with client-node loaded, nothing listed), ` +
          `heapUsed ${mb(r.heapUsed)} MiB (${mb(r.heapBefore)} before)`,
      );
      expect(r.pods).toBe(10_000);
      return r as { rss: number; peakRss: number };
    };
    expect((await measure([])).peakRss).toBeLessThan(180 * 2 ** 20);
    // Most of the remaining RSS growth is V8's young generation growing during the list burst.
    expect((await measure(["--max-semi-space-size=1"])).peakRss).toBeLessThan(150 * 2 ** 20);
  });
});
