/**
 * cluster-snapshot: a live cluster, read once, as the same ManifestSet the manifest reader makes, so
 * `simulate`, `explain` and `diff` work on a cluster exactly as on files.
 *
 * Owns: listing (GET, paginated, never a write or a watch) Namespaces, Pods and Nodes, NetworkPolicies
 * and the policy.networking.k8s.io kinds through the kubeconfig (client-node 1.x's KubeConfig
 * supplies the server, TLS and credentials); a kind whose API the server does not serve (404: its
 * CRD is not installed) is absent, not an error. Objects are converted with normalize.ts and
 * checked with the kinds registry (read as the API server's objects: FROM_API), so a bad object is
 * reported naming it and its field.
 * May not: write to the cluster, watch, or keep anything between calls.
 */
import http from "node:http";
import https from "node:https";
import { KubeConfig } from "@kubernetes/client-node";
import { InputError } from "../../compiler/errors.js";
import { compilePolicyObject, FROM_API, POLICY_KINDS } from "../../compiler/kinds/index.js";
import { namespaceFromK8s, nodeFromK8s, podFromK8s } from "../../compiler/normalize.js";
import type { PolicyKind } from "../../compiler/rule-model.js";
import { emptyManifestSet, ManifestError, type ManifestSet } from "./manifests.js";

/** The cluster could not be read (unreachable, refused, forbidden, not a list): not the objects' fault. */
export class ClusterReadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ClusterReadError";
  }
}

export interface SnapshotOptions {
  /** Kubeconfig file; its current context names the cluster. */
  kubeconfig: string;
  /** Items per list page (default 500). */
  pageSize?: number;
  /** Per request (default 30 s). */
  timeoutMs?: number;
}

export interface ClusterSnapshot {
  set: ManifestSet;
  server: string;
  /** Policy kinds the server does not serve (their CRDs are not installed). */
  absent: PolicyKind[];
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => v !== null && typeof v === "object" && !Array.isArray(v);

class NotServed extends Error {}

export async function readClusterSnapshot(opts: SnapshotOptions): Promise<ClusterSnapshot> {
  const kc = new KubeConfig();
  try {
    kc.loadFromFile(opts.kubeconfig);
  } catch (e) {
    throw new ClusterReadError(`--kubeconfig ${opts.kubeconfig}: ${(e as Error).message}`);
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new ClusterReadError(`--kubeconfig ${opts.kubeconfig}: no current cluster`);
  const server = cluster.server.replace(/\/+$/, "");
  const pageSize = opts.pageSize ?? 500;
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const where = `cluster ${server}`;

  const get = async (path: string, query: URLSearchParams): Promise<Obj> => {
    const url = new URL(server + path);
    for (const [k, v] of query) url.searchParams.set(k, v);
    // Per request: exec and token-file credentials may rotate.
    const fo = await kc.applyToFetchOptions({});
    const headers: Record<string, string> = { Accept: "application/json" };
    (fo.headers as unknown as { forEach(cb: (v: string, k: string) => void): void } | undefined)?.forEach(
      (v, k) => {
        headers[k] = v;
      },
    );
    const mod = url.protocol === "https:" ? https : http;
    const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = mod.get(
        url,
        { agent: fo.agent as http.Agent | undefined, headers, signal: AbortSignal.timeout(timeoutMs) },
        (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (c: string) => {
            text += c;
          });
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
          res.on("error", reject);
        },
      );
      req.on("error", reject);
    }).catch((e: Error) => {
      throw new ClusterReadError(`${where}: GET ${path}: ${e.message}`);
    });
    if (status === 404) throw new NotServed(path);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      throw new ClusterReadError(`${where}: GET ${path}: HTTP ${status}, not JSON: ${body.slice(0, 200)}`);
    }
    if (status !== 200) {
      const msg = isObj(parsed) && typeof parsed.message === "string" ? parsed.message : body.slice(0, 200);
      throw new ClusterReadError(`${where}: GET ${path}: HTTP ${status}: ${msg}`);
    }
    if (!isObj(parsed) || !Array.isArray(parsed.items))
      throw new ClusterReadError(`${where}: GET ${path}: the response is not a list`);
    return parsed;
  };

  /** Every item of a list, page by page; a continue token that expired (410) restarts the list. */
  const list = async (path: string): Promise<unknown[]> => {
    for (let attempt = 0; ; attempt++) {
      const items: unknown[] = [];
      let cont = "";
      try {
        do {
          const q = new URLSearchParams({ limit: String(pageSize) });
          if (cont) q.set("continue", cont);
          const page = await get(path, q);
          items.push(...(page.items as unknown[]));
          const meta = isObj(page.metadata) ? page.metadata : {};
          cont = typeof meta.continue === "string" ? meta.continue : "";
        } while (cont);
        return items;
      } catch (e) {
        if (attempt < 3 && e instanceof ClusterReadError && / HTTP 410: /.test(e.message)) continue;
        throw e;
      }
    }
  };

  /** Convert one object; a bad one is an error naming it and its field. */
  const read = <T>(kind: string, raw: unknown, f: (o: unknown) => T): T => {
    try {
      return f(raw);
    } catch (e) {
      if (e instanceof InputError) throw new ManifestError(where, undefined, e.message);
      throw new ManifestError(where, undefined, `cannot read ${kind}: ${(e as Error).message}`);
    }
  };

  const core = async (path: string) => {
    try {
      return await list(path);
    } catch (e) {
      if (e instanceof NotServed)
        throw new ClusterReadError(`${where}: GET ${path}: 404 (not an API server?)`);
      throw e;
    }
  };
  const set = emptyManifestSet();
  const [namespaces, pods, nodes] = await Promise.all([
    core("/api/v1/namespaces"),
    core("/api/v1/pods"),
    core("/api/v1/nodes"),
  ]);
  for (const o of namespaces) set.namespaces.push(read("Namespace", o, namespaceFromK8s));
  for (const o of pods) set.pods.push(read("Pod", o, podFromK8s));
  for (const o of nodes) set.nodes.push(read("Node", o, nodeFromK8s));

  const absent: PolicyKind[] = [];
  for (const [kind, entry] of Object.entries(POLICY_KINDS) as [
    PolicyKind,
    (typeof POLICY_KINDS)[PolicyKind],
  ][]) {
    const path = `/apis/${entry.info.apiVersion}/${entry.resource}`;
    let items: unknown[];
    try {
      items = await list(path);
    } catch (e) {
      if (!(e instanceof NotServed)) throw e;
      if (kind === "NetworkPolicy") throw new ClusterReadError(`${where}: GET ${path}: 404`);
      absent.push(kind);
      continue;
    }
    for (const raw of items) {
      const spec = read(kind, raw, (o) => compilePolicyObject(kind, o, FROM_API));
      if (!isObj(raw)) continue;
      set.policies.push({ kind, namespace: spec.namespace, name: spec.name, obj: raw, parse: FROM_API });
      for (const n of spec.notEnforced) set.warnings.push(`${where}: ${kind} ${spec.key}: ${n}`);
    }
  }
  return { set, server, absent };
}
