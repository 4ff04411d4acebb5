/**
 * apiserver-double: a fake kube-apiserver for tests, speaking the real HTTP/JSON wire protocol.
 *
 * Owns: GET/LIST/WATCH of Pods, Namespaces, Nodes (core/v1) and NetworkPolicies (networking.k8s.io/v1),
 * cluster-wide and per namespace, and with `policyApi: true` the cluster-scoped policy.networking.k8s.io
 * kinds (ClusterNetworkPolicy v1alpha2, AdminNetworkPolicy and BaselineAdminNetworkPolicy v1alpha1;
 * without it their paths answer 404, as a server without the CRDs does); one global, monotonic resourceVersion; a bounded event history
 * (watch from an RV older than the window -> 200 + ERROR event with a 410 Expired Status, then the
 * stream ends, like the watch cache); chunked lists (limit/continue, consistent snapshots, 410 for an
 * expired continue token); `fieldSelector` on the fields the real server supports for these kinds
 * (objects that stop/start matching arrive as DELETED/ADDED, like the real filter); watch bookmarks
 * (only when `allowWatchBookmarks=true`); `timeoutSeconds`; `sendInitialEvents` streaming lists.
 * List items carry no kind/apiVersion (the real server omits them); watch and GET objects do.
 * Test controls: create/update/delete, compactHistory, stallWatches/cutWatches, sendBookmarks,
 * stop/start on the same port, per-resource request counters, kubeconfig.
 * Not modelled: writes over HTTP (405), labelSelector (400, loudly), auth, admission, controllers
 * (deleting a Namespace does not delete its contents; pods may be created in a missing namespace).
 */
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export type DoubleKind =
  | "Pod"
  | "Namespace"
  | "Node"
  | "NetworkPolicy"
  | "ClusterNetworkPolicy"
  | "AdminNetworkPolicy"
  | "BaselineAdminNetworkPolicy";
export type EventType = "ADDED" | "MODIFIED" | "DELETED";

// biome-ignore lint/suspicious/noExplicitAny: API objects are free-form JSON
export type KObj = Record<string, any>;

interface ResourceDef {
  kind: DoubleKind;
  plural: string;
  apiVersion: string;
  /** URL prefix: "/api/v1" or "/apis/<group>/<version>". */
  prefix: string;
  namespaced: boolean;
  /** Field labels the real server accepts in fieldSelector for this resource. */
  fields: Set<string>;
  /** Served only with the policyApi option (a CRD). */
  crd?: boolean;
}

const policyApiDef = (kind: DoubleKind, plural: string, version: string): ResourceDef => ({
  kind,
  plural,
  apiVersion: `policy.networking.k8s.io/${version}`,
  prefix: `/apis/policy.networking.k8s.io/${version}`,
  namespaced: false,
  fields: new Set(["metadata.name"]),
  crd: true,
});

const RESOURCES: ResourceDef[] = [
  {
    kind: "Pod",
    plural: "pods",
    apiVersion: "v1",
    prefix: "/api/v1",
    namespaced: true,
    fields: new Set([
      "metadata.name",
      "metadata.namespace",
      "spec.nodeName",
      "spec.restartPolicy",
      "spec.schedulerName",
      "spec.serviceAccountName",
      "spec.hostNetwork",
      "status.phase",
      "status.podIP",
      "status.nominatedNodeName",
    ]),
  },
  {
    kind: "Namespace",
    plural: "namespaces",
    apiVersion: "v1",
    prefix: "/api/v1",
    namespaced: false,
    fields: new Set(["metadata.name", "status.phase"]),
  },
  {
    kind: "Node",
    plural: "nodes",
    apiVersion: "v1",
    prefix: "/api/v1",
    namespaced: false,
    fields: new Set(["metadata.name", "spec.unschedulable"]),
  },
  {
    kind: "NetworkPolicy",
    plural: "networkpolicies",
    apiVersion: "networking.k8s.io/v1",
    prefix: "/apis/networking.k8s.io/v1",
    namespaced: true,
    fields: new Set(["metadata.name", "metadata.namespace"]),
  },
  policyApiDef("ClusterNetworkPolicy", "clusternetworkpolicies", "v1alpha2"),
  policyApiDef("AdminNetworkPolicy", "adminnetworkpolicies", "v1alpha1"),
  policyApiDef("BaselineAdminNetworkPolicy", "baselineadminnetworkpolicies", "v1alpha1"),
];
const BY_KIND = new Map(RESOURCES.map((r) => [r.kind, r]));

interface StoredEvent {
  rv: number;
  kind: DoubleKind;
  type: EventType;
  /** The object after the change (for DELETED: its last state, carrying the deletion RV). */
  obj: KObj;
  /** The object before the change (MODIFIED, DELETED). */
  prev?: KObj;
}

type FieldReq = { path: string; op: "=" | "!="; value: string };

interface Watcher {
  res: ServerResponse;
  def: ResourceDef;
  namespace: string | null;
  fieldReqs: FieldReq[];
  bookmarks: boolean;
  /** Events produced while stalled wait here (undelivered bytes on a stuck network path). */
  stalled: string[] | null;
  timer: NodeJS.Timeout | undefined;
  /** Highest RV this watcher has been sent (or skipped as not matching). */
  sentRV: number;
  closed: boolean;
}

export interface RequestCounts {
  list: number;
  watch: number;
  get: number;
}

export interface ApiServerDoubleOptions {
  /** Events kept for watch resumption (the watch cache window); older RVs get 410. Default 10000. */
  historyLimit?: number;
  /** Server-side watch duration when the client sends no timeoutSeconds (real: 1800-3600 s). */
  minRequestTimeoutSeconds?: number;
  /** First resourceVersion handed out is this + 1. */
  initialResourceVersion?: number;
  /** Serve the policy.networking.k8s.io kinds (their CRDs are installed). Default false: 404. */
  policyApi?: boolean;
}

function statusBody(code: number, reason: string, message: string, details?: KObj): KObj {
  return {
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Failure",
    message,
    reason,
    ...(details ? { details } : {}),
    code,
  };
}

function clone<T>(o: T): T {
  return structuredClone(o);
}

function keyOf(def: ResourceDef, obj: KObj): string {
  const name = obj.metadata?.name;
  if (typeof name !== "string" || !name) throw new Error(`${def.kind}: metadata.name is required`);
  return def.namespaced ? `${obj.metadata.namespace}/${name}` : name;
}

function fieldValue(obj: KObj, path: string): string {
  // biome-ignore lint/suspicious/noExplicitAny: walking free-form JSON
  let cur: any = obj;
  for (const part of path.split(".")) cur = cur?.[part];
  if (cur === undefined || cur === null) return "";
  return String(cur);
}

function matchesFields(obj: KObj | undefined, reqs: FieldReq[]): boolean {
  if (!obj) return false;
  for (const r of reqs) {
    const v = fieldValue(obj, r.path);
    if (r.op === "=" ? v !== r.value : v === r.value) return false;
  }
  return true;
}

function nowStamp(): string {
  return `${new Date().toISOString().slice(0, 19)}Z`;
}

export class ApiServerDouble {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly watchers = new Set<Watcher>();
  private readonly store = new Map<DoubleKind, Map<string, KObj>>();
  private history: StoredEvent[] = [];
  private rv: number;
  /** A watch from RV n is served iff n >= compactedRV (events after n are all retained). */
  private compactedRV: number;
  private readonly counts = new Map<string, RequestCounts>();
  private readonly futureWaiters = new Set<() => void>();
  private tmpDir: string | undefined;
  private listenPort = 0;
  private readonly historyLimit: number;
  private readonly minRequestTimeout: number;
  private readonly policyApi: boolean;

  constructor(opts: ApiServerDoubleOptions = {}) {
    this.policyApi = opts.policyApi ?? false;
    this.historyLimit = opts.historyLimit ?? 10_000;
    this.minRequestTimeout = opts.minRequestTimeoutSeconds ?? 1800;
    this.rv = opts.initialResourceVersion ?? 1000;
    this.compactedRV = this.rv;
    for (const r of RESOURCES) {
      this.store.set(r.kind, new Map());
      this.counts.set(r.plural, { list: 0, watch: 0, get: 0 });
    }
  }

  // ------------------------------------------------------------------ lifecycle

  /** Listen on 127.0.0.1 (a random port the first time, the same port afterwards). */
  async start(): Promise<void> {
    if (this.server) return;
    const server = createServer((req, res) => this.handle(req, res));
    server.keepAliveTimeout = 5_000;
    server.on("connection", (s: Socket) => {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.listenPort, "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
    const addr = server.address();
    if (addr && typeof addr === "object") this.listenPort = addr.port;
    this.server = server;
  }

  /** The API server goes away: the listener closes and every connection (watches too) is reset. */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    for (const w of this.watchers) this.dropWatcher(w, true);
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** stop() and remove the kubeconfig file, if any. */
  async close(): Promise<void> {
    await this.stop();
    for (const wake of this.futureWaiters) wake();
    if (this.tmpDir) rmSync(this.tmpDir, { recursive: true, force: true });
    this.tmpDir = undefined;
  }

  get port(): number {
    return this.listenPort;
  }

  get url(): string {
    return `http://127.0.0.1:${this.listenPort}`;
  }

  get running(): boolean {
    return this.server !== undefined;
  }

  /** A kubeconfig for this server. Plain http: client-node 1.x refuses http:// servers unless
   *  insecure-skip-tls-verify is set, so it is (it changes nothing else for an http URL). */
  kubeconfig(): string {
    if (!this.listenPort) throw new Error("start() the double before asking for its kubeconfig");
    return [
      "apiVersion: v1",
      "kind: Config",
      "clusters:",
      "- name: double",
      "  cluster:",
      `    server: ${this.url}`,
      "    insecure-skip-tls-verify: true",
      "users:",
      "- name: double",
      "  user: {}",
      "contexts:",
      "- name: double",
      "  context:",
      "    cluster: double",
      "    user: double",
      "current-context: double",
      "",
    ].join("\n");
  }

  /** Write kubeconfig() to a temporary file (removed by close()) and return its path. */
  kubeconfigFile(): string {
    this.tmpDir ??= mkdtempSync(join(tmpdir(), "apiserver-double-"));
    const path = join(this.tmpDir, "kubeconfig.yaml");
    writeFileSync(path, this.kubeconfig());
    return path;
  }

  // ------------------------------------------------------------------ test controls: objects

  get resourceVersion(): number {
    return this.rv;
  }

  get(kind: DoubleKind, name: string, namespace?: string): KObj | undefined {
    const def = this.def(kind);
    const key = def.namespaced ? `${namespace ?? "default"}/${name}` : name;
    const o = this.store.get(kind)!.get(key);
    return o ? clone(o) : undefined;
  }

  list(kind: DoubleKind): KObj[] {
    return [...this.store.get(kind)!.values()].map(clone);
  }

  create(kind: DoubleKind, obj: KObj): KObj {
    const def = this.def(kind);
    const o = this.normalizeIncoming(def, obj);
    const key = keyOf(def, o);
    const table = this.store.get(kind)!;
    if (table.has(key)) throw new Error(`${def.plural} "${o.metadata.name}" already exists`);
    o.metadata.uid = randomUUID();
    o.metadata.creationTimestamp = nowStamp();
    if (kind === "NetworkPolicy") o.metadata.generation = 1;
    if (kind === "Namespace") {
      o.metadata.labels = { ...o.metadata.labels, "kubernetes.io/metadata.name": o.metadata.name };
      o.spec ??= { finalizers: ["kubernetes"] };
      o.status ??= { phase: "Active" };
    }
    o.metadata.resourceVersion = String(++this.rv);
    table.set(key, o);
    this.record({ rv: this.rv, kind, type: "ADDED", obj: o });
    return clone(o);
  }

  /** Replace an object (no optimistic-concurrency check: tests update unconditionally). */
  update(kind: DoubleKind, obj: KObj): KObj {
    const def = this.def(kind);
    const o = this.normalizeIncoming(def, obj);
    const key = keyOf(def, o);
    const table = this.store.get(kind)!;
    const prev = table.get(key);
    if (!prev) throw new Error(`${def.plural} "${o.metadata.name}" not found`);
    o.metadata.uid = prev.metadata.uid;
    o.metadata.creationTimestamp = prev.metadata.creationTimestamp;
    if (kind === "NetworkPolicy") {
      const changed = JSON.stringify(o.spec) !== JSON.stringify(prev.spec);
      o.metadata.generation = (prev.metadata.generation ?? 1) + (changed ? 1 : 0);
    }
    if (kind === "Namespace") {
      o.metadata.labels = { ...o.metadata.labels, "kubernetes.io/metadata.name": o.metadata.name };
      o.spec ??= prev.spec;
      o.status ??= prev.status;
    }
    o.metadata.resourceVersion = String(++this.rv);
    table.set(key, o);
    this.record({ rv: this.rv, kind, type: "MODIFIED", obj: o, prev });
    return clone(o);
  }

  /** Delete by object (only metadata.name / metadata.namespace are read). Returns the last state. */
  delete(kind: DoubleKind, obj: { metadata: { name: string; namespace?: string } }): KObj {
    const def = this.def(kind);
    const o = this.normalizeIncoming(def, obj);
    const key = keyOf(def, o);
    const table = this.store.get(kind)!;
    const prev = table.get(key);
    if (!prev) throw new Error(`${def.plural} "${o.metadata.name}" not found`);
    table.delete(key);
    const last = clone(prev);
    last.metadata.resourceVersion = String(++this.rv);
    this.record({ rv: this.rv, kind, type: "DELETED", obj: last, prev });
    return clone(last);
  }

  // ------------------------------------------------------------------ test controls: faults

  /** Forget all retained events: a watch from any RV issued so far (except the newest) gets 410. */
  compactHistory(): void {
    this.history = [];
    this.compactedRV = this.rv;
  }

  /** Open watches stop receiving bytes (a stuck network path); new watches are unaffected. */
  stallWatches(): void {
    for (const w of this.watchers) w.stalled ??= [];
  }

  /** Deliver whatever stalled watches are holding and let them flow again. */
  resumeWatches(): void {
    for (const w of this.watchers) {
      const held = w.stalled;
      w.stalled = null;
      if (held) for (const line of held) w.res.write(line);
    }
  }

  /** Reset every open watch connection mid-stream (held events are lost with it). */
  cutWatches(): void {
    for (const w of [...this.watchers]) this.dropWatcher(w, true);
  }

  /** A BOOKMARK with the current RV to every open watch that asked for bookmarks. */
  sendBookmarks(): void {
    for (const w of this.watchers) {
      if (!w.bookmarks) continue;
      this.writeEvent(w, "BOOKMARK", {
        kind: w.def.kind,
        apiVersion: w.def.apiVersion,
        metadata: { resourceVersion: String(this.rv) },
      });
      w.sentRV = this.rv;
    }
  }

  /** Requests served, by resource plural ("pods", "namespaces", "nodes", "networkpolicies"). */
  requests(plural: string): RequestCounts {
    const c = this.counts.get(plural);
    if (!c) throw new Error(`unknown resource ${plural}`);
    return { ...c };
  }

  /** Open watch connections, optionally for one resource plural. */
  openWatches(plural?: string): number {
    let n = 0;
    for (const w of this.watchers) if (!plural || w.def.plural === plural) n++;
    return n;
  }

  // ------------------------------------------------------------------ internals: store

  private def(kind: DoubleKind): ResourceDef {
    const d = BY_KIND.get(kind);
    if (!d) throw new Error(`unsupported kind ${kind}`);
    return d;
  }

  private normalizeIncoming(def: ResourceDef, obj: KObj): KObj {
    const o = clone(obj);
    o.kind = def.kind;
    o.apiVersion = def.apiVersion;
    o.metadata = { ...(o.metadata ?? {}) };
    if (def.namespaced) o.metadata.namespace ||= "default";
    else delete o.metadata.namespace;
    return o;
  }

  private record(ev: StoredEvent): void {
    this.history.push(ev);
    if (this.history.length > this.historyLimit) {
      const dropped = this.history.splice(0, this.history.length - this.historyLimit);
      this.compactedRV = dropped[dropped.length - 1].rv;
    }
    for (const w of this.watchers) if (w.def.kind === ev.kind) this.deliver(w, ev);
    for (const wake of [...this.futureWaiters]) wake();
  }

  /** The kind's objects as they were at `rv` (needs history back to rv). */
  private snapshot(kind: DoubleKind, rv: number): Map<string, KObj> {
    const def = this.def(kind);
    const snap = new Map(this.store.get(kind)!);
    for (let i = this.history.length - 1; i >= 0 && this.history[i].rv > rv; i--) {
      const ev = this.history[i];
      if (ev.kind !== kind) continue;
      const key = keyOf(def, ev.obj);
      if (ev.type === "ADDED") snap.delete(key);
      else snap.set(key, ev.prev!);
    }
    return snap;
  }

  // ------------------------------------------------------------------ internals: HTTP

  private handle(req: IncomingMessage, res: ServerResponse): void {
    try {
      this.route(req, res);
    } catch (e) {
      this.sendStatus(res, statusBody(500, "InternalError", `double: ${(e as Error).message}`));
    }
  }

  private sendJSON(res: ServerResponse, code: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(code, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
    res.end(text);
  }

  private sendStatus(res: ServerResponse, status: KObj): void {
    this.sendJSON(res, status.code, status);
  }

  private route(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? "/", "http://double");
    const parts = url.pathname.split("/").filter(Boolean);
    if (url.pathname === "/version") {
      this.sendJSON(res, 200, {
        major: "1",
        minor: "33",
        gitVersion: "v1.33.0-double",
        platform: "linux/amd64",
      });
      return;
    }
    if (url.pathname === "/healthz" || url.pathname === "/readyz" || url.pathname === "/livez") {
      res.writeHead(200, { "Content-Type": "text/plain" });
      res.end("ok");
      return;
    }
    // /api/v1/... or /apis/<group>/<version>/...
    let prefixLen: number;
    if (parts[0] === "api" && parts[1] === "v1") prefixLen = 2;
    else if (parts[0] === "apis" && parts.length >= 3) prefixLen = 3;
    else {
      this.notFound(res);
      return;
    }
    const prefix = `/${parts.slice(0, prefixLen).join("/")}`;
    let rest = parts.slice(prefixLen);
    let watch = url.searchParams.get("watch") === "true" || url.searchParams.get("watch") === "1";
    if (rest[0] === "watch") {
      // Deprecated path form: /api/v1/watch/pods
      watch = true;
      rest = rest.slice(1);
    }
    let namespace: string | null = null;
    let plural: string;
    let name: string | null = null;
    if (rest[0] === "namespaces" && rest.length >= 3) {
      namespace = rest[1];
      plural = rest[2];
      name = rest[3] ?? null;
      if (rest.length > 4) {
        this.notFound(res);
        return;
      }
    } else {
      plural = rest[0];
      name = rest[1] ?? null;
      if (rest.length > 2 || !plural) {
        this.notFound(res);
        return;
      }
    }
    const def = RESOURCES.find((r) => r.prefix === prefix && r.plural === plural);
    if (!def || (namespace !== null && !def.namespaced) || (def.crd && !this.policyApi)) {
      this.notFound(res);
      return;
    }
    if (req.method !== "GET") {
      this.sendStatus(
        res,
        statusBody(405, "MethodNotAllowed", `the double serves only GET (got ${req.method})`),
      );
      return;
    }
    const counts = this.counts.get(def.plural)!;
    if (name !== null && !watch) {
      counts.get++;
      this.getOne(res, def, namespace, name);
      return;
    }
    if (url.searchParams.has("labelSelector") && url.searchParams.get("labelSelector") !== "") {
      this.sendStatus(
        res,
        statusBody(400, "BadRequest", "labelSelector is not implemented by the apiserver double"),
      );
      return;
    }
    let fieldReqs: FieldReq[];
    try {
      fieldReqs = this.parseFieldSelector(def, url.searchParams.get("fieldSelector") ?? "");
    } catch (e) {
      this.sendStatus(res, statusBody(400, "BadRequest", (e as Error).message));
      return;
    }
    if (name !== null) fieldReqs.push({ path: "metadata.name", op: "=", value: name });
    if (watch) {
      counts.watch++;
      this.startWatch(res, def, namespace, fieldReqs, url.searchParams);
      return;
    }
    counts.list++;
    this.listObjects(res, def, namespace, fieldReqs, url.searchParams);
  }

  private notFound(res: ServerResponse): void {
    this.sendStatus(res, statusBody(404, "NotFound", "the server could not find the requested resource"));
  }

  private parseFieldSelector(def: ResourceDef, sel: string): FieldReq[] {
    const out: FieldReq[] = [];
    for (const term of sel.split(",")) {
      const t = term.trim();
      if (!t) continue;
      const m = /^([^=!]+?)\s*(==|=|!=)\s*(.*)$/.exec(t);
      if (!m) throw new Error(`invalid selector: '${sel}'; can't understand '${t}'`);
      const path = m[1].trim();
      if (!def.fields.has(path)) {
        throw new Error(`field label not supported: ${path}`);
      }
      out.push({ path, op: m[2] === "!=" ? "!=" : "=", value: m[3].trim() });
    }
    return out;
  }

  private getOne(res: ServerResponse, def: ResourceDef, namespace: string | null, name: string): void {
    const key = def.namespaced ? `${namespace}/${name}` : name;
    const o = def.namespaced && namespace === null ? undefined : this.store.get(def.kind)!.get(key);
    if (!o) {
      this.sendStatus(
        res,
        statusBody(404, "NotFound", `${def.plural} "${name}" not found`, { name, kind: def.plural }),
      );
      return;
    }
    this.sendJSON(res, 200, o);
  }

  private listObjects(
    res: ServerResponse,
    def: ResourceDef,
    namespace: string | null,
    fieldReqs: FieldReq[],
    q: URLSearchParams,
  ): void {
    const limitRaw = q.get("limit");
    const limit = limitRaw ? Number(limitRaw) : 0;
    if (!Number.isInteger(limit) || limit < 0) {
      this.sendStatus(res, statusBody(400, "BadRequest", `invalid limit ${JSON.stringify(limitRaw)}`));
      return;
    }
    const cont = q.get("continue") || "";
    const rvParam = q.get("resourceVersion") ?? "";
    const rvMatch = q.get("resourceVersionMatch") ?? "";
    let atRV = this.rv;
    let startAfter = "";
    if (cont) {
      if (rvParam) {
        this.sendStatus(
          res,
          statusBody(400, "BadRequest", "specifying resource version is not allowed when using continue"),
        );
        return;
      }
      let tok: { v?: string; rv?: number; start?: string };
      try {
        tok = JSON.parse(Buffer.from(cont, "base64").toString("utf8"));
      } catch {
        tok = {};
      }
      if (tok.v !== "meta.k8s.io/v1" || typeof tok.rv !== "number" || typeof tok.start !== "string") {
        this.sendStatus(res, statusBody(400, "BadRequest", "continue key is not valid"));
        return;
      }
      if (tok.rv < this.compactedRV) {
        this.sendStatus(
          res,
          statusBody(
            410,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
          ),
        );
        return;
      }
      atRV = tok.rv;
      startAfter = tok.start;
    } else if (rvParam && rvMatch === "Exact") {
      const n = Number(rvParam);
      if (!Number.isInteger(n) || n < 0) {
        this.sendStatus(res, statusBody(400, "BadRequest", `invalid resourceVersion ${rvParam}`));
        return;
      }
      if (n < this.compactedRV) {
        this.sendStatus(
          res,
          statusBody(410, "Expired", `too old resource version: ${n} (${this.compactedRV})`),
        );
        return;
      }
      if (n > this.rv) {
        this.sendStatus(
          res,
          statusBody(504, "Timeout", `Too large resource version: ${n}, current: ${this.rv}`, {
            causes: [{ reason: "ResourceVersionTooLarge", message: "Too large resource version" }],
            retryAfterSeconds: 1,
          }),
        );
        return;
      }
      atRV = n;
    } else if (rvParam && !/^\d+$/.test(rvParam)) {
      this.sendStatus(res, statusBody(400, "BadRequest", `invalid resourceVersion ${rvParam}`));
      return;
    }
    const objects = atRV === this.rv ? this.store.get(def.kind)! : this.snapshot(def.kind, atRV);
    const keys = [...objects.keys()].sort();
    const matching: KObj[] = [];
    let remaining = 0;
    let lastKey = "";
    for (const k of keys) {
      if (startAfter && k <= startAfter) continue;
      const o = objects.get(k)!;
      if (namespace !== null && o.metadata.namespace !== namespace) continue;
      if (!matchesFields(o, fieldReqs)) continue;
      if (limit > 0 && matching.length >= limit) {
        remaining++;
        continue;
      }
      matching.push(o);
      lastKey = k;
    }
    const metadata: KObj = { resourceVersion: String(atRV) };
    if (remaining > 0) {
      metadata.continue = Buffer.from(
        JSON.stringify({ v: "meta.k8s.io/v1", rv: atRV, start: lastKey }),
      ).toString("base64");
      metadata.remainingItemCount = remaining;
    }
    // Stream the body: list items have no kind/apiVersion on the wire.
    res.writeHead(200, { "Content-Type": "application/json" });
    res.write(
      `{"kind":"${def.kind}List","apiVersion":"${def.apiVersion}","metadata":${JSON.stringify(metadata)},"items":[`,
    );
    matching.forEach((o, i) => {
      const { kind: _k, apiVersion: _a, ...rest } = o;
      res.write((i ? "," : "") + JSON.stringify(rest));
    });
    res.end("]}");
  }

  private startWatch(
    res: ServerResponse,
    def: ResourceDef,
    namespace: string | null,
    fieldReqs: FieldReq[],
    q: URLSearchParams,
  ): void {
    const rvParam = q.get("resourceVersion") ?? "";
    const bookmarks = q.get("allowWatchBookmarks") === "true";
    const initialEvents = q.get("sendInitialEvents");
    const timeoutRaw = q.get("timeoutSeconds");
    let timeoutSeconds: number;
    if (timeoutRaw !== null && timeoutRaw !== "" && timeoutRaw !== "0") {
      timeoutSeconds = Number(timeoutRaw);
      if (!Number.isFinite(timeoutSeconds) || timeoutSeconds < 0) {
        this.sendStatus(res, statusBody(400, "BadRequest", `invalid timeoutSeconds ${timeoutRaw}`));
        return;
      }
    } else {
      timeoutSeconds = this.minRequestTimeout * (1 + Math.random());
    }
    if (initialEvents === "true") {
      if (q.get("resourceVersionMatch") !== "NotOlderThan" || !bookmarks) {
        this.sendStatus(
          res,
          statusBody(
            422,
            "Invalid",
            "sendInitialEvents requires resourceVersionMatch=NotOlderThan and allowWatchBookmarks=true",
          ),
        );
        return;
      }
    }
    let fromRV: number | null = null; // null: start with the current state as synthetic ADDED events
    if (rvParam !== "" && rvParam !== "0") {
      if (!/^\d+$/.test(rvParam)) {
        this.sendStatus(res, statusBody(400, "BadRequest", `invalid resourceVersion ${rvParam}`));
        return;
      }
      fromRV = Number(rvParam);
    }
    const begin = (): void => {
      if (res.destroyed) return;
      res.writeHead(200, {
        "Content-Type": "application/json",
        "Cache-Control": "no-cache, private",
        "Transfer-Encoding": "chunked",
      });
      res.flushHeaders();
      const w: Watcher = {
        res,
        def,
        namespace,
        fieldReqs,
        bookmarks,
        stalled: null,
        timer: undefined,
        sentRV: 0,
        closed: false,
      };
      const sendInitial = initialEvents === "true" || (fromRV === null && initialEvents !== "false");
      if (fromRV !== null && fromRV < this.compactedRV && initialEvents !== "true") {
        // The watch cache's answer for a too-old RV: 200, one ERROR event, end of stream.
        res.end(
          `${JSON.stringify({
            type: "ERROR",
            object: statusBody(410, "Expired", `too old resource version: ${fromRV} (${this.compactedRV})`),
          })}\n`,
        );
        return;
      }
      if (sendInitial) {
        for (const o of this.store.get(def.kind)!.values()) {
          if (namespace !== null && o.metadata.namespace !== namespace) continue;
          if (!matchesFields(o, fieldReqs)) continue;
          this.writeEvent(w, "ADDED", o);
        }
        w.sentRV = this.rv;
        if (initialEvents === "true") {
          this.writeEvent(w, "BOOKMARK", {
            kind: def.kind,
            apiVersion: def.apiVersion,
            metadata: {
              resourceVersion: String(this.rv),
              annotations: { "k8s.io/initial-events-end": "true" },
            },
          });
        }
      } else {
        w.sentRV = fromRV ?? this.rv;
        for (const ev of this.history) if (ev.kind === def.kind && ev.rv > w.sentRV) this.deliver(w, ev);
        w.sentRV = Math.max(w.sentRV, this.rv);
      }
      this.watchers.add(w);
      w.timer = setTimeout(() => this.dropWatcher(w, false), timeoutSeconds * 1000);
      w.timer.unref();
      res.on("close", () => this.dropWatcher(w, false));
    };
    if (fromRV !== null && fromRV > this.rv) {
      // Like the watch cache: wait up to 3 s for the RV to exist, else 504 ResourceVersionTooLarge.
      const wanted = fromRV;
      let timer: NodeJS.Timeout | undefined;
      const done = (ok: boolean): void => {
        this.futureWaiters.delete(check);
        clearTimeout(timer);
        if (ok) begin();
        else
          this.sendStatus(
            res,
            statusBody(504, "Timeout", `Too large resource version: ${wanted}, current: ${this.rv}`, {
              causes: [{ reason: "ResourceVersionTooLarge", message: "Too large resource version" }],
              retryAfterSeconds: 1,
            }),
          );
      };
      const check = (): void => {
        if (res.destroyed) {
          this.futureWaiters.delete(check);
          clearTimeout(timer);
        } else if (this.rv >= wanted) done(true);
      };
      this.futureWaiters.add(check);
      timer = setTimeout(() => done(false), 3000);
      timer.unref();
      return;
    }
    begin();
  }

  /** Send one stored event to a watcher, translating it through the watcher's filter. */
  private deliver(w: Watcher, ev: StoredEvent): void {
    if (ev.rv <= w.sentRV) return;
    w.sentRV = ev.rv;
    const inScope = (o: KObj | undefined): boolean =>
      !!o && (w.namespace === null || o.metadata?.namespace === w.namespace) && matchesFields(o, w.fieldReqs);
    const now = ev.type === "DELETED" ? false : inScope(ev.obj);
    const before = ev.type === "ADDED" ? false : inScope(ev.prev);
    if (ev.type === "DELETED") {
      if (before) this.writeEvent(w, "DELETED", ev.obj);
    } else if (now && before) this.writeEvent(w, "MODIFIED", ev.obj);
    else if (now) this.writeEvent(w, "ADDED", ev.obj);
    else if (before) this.writeEvent(w, "DELETED", ev.obj);
  }

  private writeEvent(w: Watcher, type: string, object: KObj): void {
    if (w.closed) return;
    const line = `${JSON.stringify({ type, object })}\n`;
    if (w.stalled) w.stalled.push(line);
    else w.res.write(line);
  }

  /** End a watch: `reset` destroys the connection mid-stream, otherwise the stream ends cleanly. */
  private dropWatcher(w: Watcher, reset: boolean): void {
    if (w.closed) return;
    w.closed = true;
    this.watchers.delete(w);
    clearTimeout(w.timer);
    if (reset) w.res.socket?.destroy();
    else if (!w.res.writableEnded) w.res.end();
  }
}
