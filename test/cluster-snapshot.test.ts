/**
 * A live cluster as the input of simulate, explain and diff, through the API server double (the
 * real list protocol over HTTP, read through a kubeconfig): the demo cluster loaded into the API
 * gives exactly what the same manifests give; the reader only lists (never watches or writes),
 * pages through long lists, treats the policy.networking.k8s.io kinds as absent when the server
 * does not serve them, and reports an object it cannot read, or a server it cannot reach, with
 * exit status 2.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { readClusterSnapshot } from "../src/agent/sources/cluster-snapshot.js";
import { loadManifestFiles } from "../src/agent/sources/manifests.js";
import { freePort } from "./support/agent-process.js";
import { ApiServerDouble, type DoubleKind, type KObj } from "./support/apiserver-double.js";

const CLI = join(import.meta.dirname, "..", "dist", "cli", "main.js");
const DEMO = join(import.meta.dirname, "..", "examples", "demo");

/** The CLI in a child process, asynchronously: the double serves it from this process's event loop. */
function podwall(...args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { encoding: "utf8" }, (e, out, err) =>
      resolve({ code: e ? ((e as { code?: number }).code ?? null) : 0, out, err }),
    );
  });
}

let api: ApiServerDouble | undefined;
afterEach(async () => {
  await api?.close();
  api = undefined;
});

/** Every object of the demo's manifests, created in the double. */
async function demoCluster(opts: { policyApi: boolean }): Promise<ApiServerDouble> {
  api = new ApiServerDouble({ policyApi: opts.policyApi });
  await api.start();
  for (const f of readdirSync(DEMO).sort()) {
    for (const doc of parseAllDocuments(readFileSync(join(DEMO, f), "utf8"))) {
      const o = doc.toJS() as KObj | null;
      if (!o) continue;
      if (!opts.policyApi && o.apiVersion.startsWith("policy.networking.k8s.io/")) continue;
      api.create(o.kind as DoubleKind, o);
    }
  }
  return api;
}

const LISTED = ["pods", "namespaces", "nodes", "networkpolicies", "clusternetworkpolicies"];

describe("reading a live cluster (API server double)", () => {
  it("the demo in the API server reads as the demo's manifests do", async () => {
    const a = await demoCluster({ policyApi: true });
    const snap = await readClusterSnapshot({ kubeconfig: a.kubeconfigFile(), pageSize: 2 });
    expect(snap.absent).toEqual([]);
    const files = loadManifestFiles([DEMO]);
    const strip = (p: { uid?: string }) => {
      const { uid: _, ...rest } = p;
      return rest;
    };
    const byKey = <T extends { name: string; namespace?: string }>(l: T[]) =>
      [...l].sort((x, y) => `${x.namespace}/${x.name}`.localeCompare(`${y.namespace}/${y.name}`));
    expect(byKey(snap.set.pods).map(strip)).toEqual(byKey(files.pods));
    expect(byKey(snap.set.namespaces)).toEqual(byKey(files.namespaces));
    expect(snap.set.policies.map((p) => `${p.kind}/${p.namespace}/${p.name}`).sort()).toEqual(
      files.policies.map((p) => `${p.kind}/${p.namespace}/${p.name}`).sort(),
    );
    // Lists only, and paged (6 pods at 2 a page).
    for (const plural of LISTED) {
      const c = a.requests(plural);
      expect(c.watch, plural).toBe(0);
      expect(c.get, plural).toBe(0);
      expect(c.list, plural).toBeGreaterThan(0);
    }
    expect(a.requests("pods").list).toBe(3);
  });

  it("simulate, explain and diff --kubeconfig answer as they do on the same manifests", async () => {
    const a = await demoCluster({ policyApi: true });
    const kc = a.kubeconfigFile();
    const live = await podwall("simulate", "--kubeconfig", kc, "-o", "json");
    const files = await podwall("simulate", "-f", DEMO, "-o", "json");
    expect(live.code, live.err).toBe(0);
    expect(JSON.parse(live.out)).toEqual(JSON.parse(files.out));
    const ex = ["--from", "dev/debug", "--to", "shop/db", "--port", "5432/TCP"];
    const e1 = await podwall("explain", "--kubeconfig", kc, ...ex);
    expect(e1.code, e1.err).toBe(0);
    expect(e1.out).toBe((await podwall("explain", "-f", DEMO, ...ex)).out);
    expect(e1.out).toContain("dev-stays-out-of-shop");
    // A what-if on the live cluster: delete the Admin guard.
    const d1 = await podwall(
      "diff",
      "--kubeconfig",
      kc,
      "--delete",
      "ClusterNetworkPolicy/dev-stays-out-of-shop",
      "-o",
      "json",
    );
    const d2 = await podwall(
      "diff",
      "-f",
      DEMO,
      "--delete",
      "ClusterNetworkPolicy/dev-stays-out-of-shop",
      "-o",
      "json",
    );
    expect(d1.code, d1.err).toBe(1);
    expect(JSON.parse(d1.out)).toEqual(JSON.parse(d2.out));
    expect(JSON.parse(d1.out).opened).toBeGreaterThan(0);
    // Nothing was written or watched.
    for (const plural of LISTED) expect(a.requests(plural).watch).toBe(0);
  });

  it("a server without the policy.networking.k8s.io kinds: they are absent (404), said once", async () => {
    const a = await demoCluster({ policyApi: false });
    const snap = await readClusterSnapshot({ kubeconfig: a.kubeconfigFile() });
    expect(snap.absent).toEqual(["ClusterNetworkPolicy", "AdminNetworkPolicy", "BaselineAdminNetworkPolicy"]);
    expect(snap.set.policies.every((p) => p.kind === "NetworkPolicy")).toBe(true);
    const r = await podwall(
      "simulate",
      "--kubeconfig",
      a.kubeconfigFile(),
      "--port",
      "5432/TCP",
      "-o",
      "json",
    );
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(
      /does not serve ClusterNetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy/,
    );
    // Without the Admin guard, dev's debug pod is stopped only by shop's NetworkPolicies.
    const cell = JSON.parse(r.out).results.find((x: KObj) => x.from === "dev/debug" && x.to === "shop/db");
    expect(cell).toMatchObject({ allowed: false, ingress: "denied" });
  });

  it("an object the cluster holds but podwall cannot read: exit 2, naming it and its field", async () => {
    const a = await demoCluster({ policyApi: false });
    a.create("Pod", { metadata: { name: "odd", namespace: "dev" }, status: { podIP: "not-an-ip" } });
    const r = await podwall("diff", "--kubeconfig", a.kubeconfigFile(), "--delete", "Pod/dev/debug");
    expect(r.code).toBe(2);
    expect(r.err).toMatch(
      /cluster http:\/\/127\.0\.0\.1:\d+: Pod dev\/odd: status\.podIP: not an IP address/,
    );
    expect(r.err).not.toMatch(/\n\s+at /);
  });

  it("a server that cannot be reached: exit 2 (never 1, which a CI gate reads as 'changes')", async () => {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), "pw-kc-"));
    const kc = join(dir, "kubeconfig");
    writeFileSync(
      kc,
      `apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: "http://127.0.0.1:${port}", insecure-skip-tls-verify: true}}]\nusers: [{name: u, user: {}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n`,
    );
    const r = await podwall("diff", "--kubeconfig", kc, "--delete", "Pod/a/b");
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/cluster http:\/\/127\.0\.0\.1:\d+: GET \/api\/v1\/\w+: .*ECONNREFUSED/);
    const missing = await podwall("simulate", "--kubeconfig", join(dir, "nope"));
    expect(missing.code).toBe(2);
    expect(missing.err).toContain(`--kubeconfig ${join(dir, "nope")}`);
  });
});
