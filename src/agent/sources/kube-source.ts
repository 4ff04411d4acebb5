/**
 * kube-source: the Kubernetes API server as the cluster (informers on Pods, Namespaces,
 * NetworkPolicies and this node's Node object).
 *
 * Owns: list+watch per kind through client-node's ListWatch (relist on 410 Gone diffs against its
 * cache, so vanished objects arrive as deletes and the rest as upserts: the sink never sees a
 * "delete everything, re-add" window), restart with capped exponential backoff (ListWatch gives up
 * after any error), connection state and restart counters, and memory: objects are normalized the
 * moment they are parsed and the informer cache only holds a stub (name, namespace,
 * resourceVersion) plus the normalized value.
 * A pod or namespace that cannot be normalized, or a policy that fails a shape check, goes to
 * `sink.rejected` and stays out of the sink (its last good version, if any, stays in force).
 * May not: compile policies or touch the dataplane.
 *
 * client-node 1.4.0 notes (why this file looks the way it does):
 * - ListWatch stops for good on any list or watch error and only emits 'error'; we restart it.
 * - ListWatch re-watches immediately (no delay) when a watch ends cleanly; we pace short,
 *   eventless watches so a server that closes at once cannot spin us.
 * - ListWatch treats an ERROR watch event only by clearing its RV and waits for the server to close;
 *   we end the watch ourselves: 410 -> relist, other codes -> error + backoff.
 * - Watch.watch (node-fetch) drops its own timeout signal, so a server that never answers hangs it
 *   forever and stop() cannot abort a request still waiting for headers. We subclass Watch with a
 *   node:http transport: header timeout, a deadline of timeoutSeconds + grace, abort on stop(),
 *   allowWatchBookmarks and a randomized timeoutSeconds.
 * - Lists go through node:http with the kubeconfig's agent and headers (applyToFetchOptions, called
 *   per request so rotated service-account tokens are picked up), paginated, and items are reduced
 *   to stubs page by page; the generated API client would build full V1Pod class instances.
 * - After stop(), aborting requests makes ListWatch emit 'error'; those are ignored.
 */
import http from "node:http";
import https from "node:https";
import {
  KubeConfig,
  type KubernetesObject,
  ListWatch,
  type V1NetworkPolicy,
  Watch,
} from "@kubernetes/client-node";
import type { NamespaceInfo, PodInfo } from "../../compiler/model.js";
import { namespaceFromK8s, podFromK8s } from "../../compiler/normalize.js";
import type { ClusterSink, ClusterSource, ObjectKind, SourceStatus } from "../cluster-events.js";

export interface KubeSourceLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export type KubeEventType = "add" | "update" | "delete";

export interface KubeSourceOptions {
  /** Kubeconfig file; without it: in-cluster config when running in a pod, else default loading. */
  kubeconfigPath?: string;
  /** This node: its Node object is watched (fieldSelector metadata.name=<nodeName>). */
  nodeName: string;
  logger?: KubeSourceLogger;
  /** Every informer event, before it reaches the sink (metrics). */
  onEvent?: (kind: ObjectKind, type: KubeEventType) => void;
  /** Restart backoff after a failed list/watch: initialMs doubling up to maxMs (500 ms, 30 s). */
  backoff?: { initialMs?: number; maxMs?: number };
  /** Server-side watch timeout; each watch asks for a random value in [t, 2t) (default 300 s). */
  watchTimeoutSeconds?: number;
  /** Items per list page (default 500). */
  listPageSize?: number;
  /** Timeout for one list page or for watch response headers (default 60 s). */
  requestTimeoutMs?: number;
}

export interface KubeSourceStatus extends SourceStatus {
  /** Every kind has completed its first list. */
  synced: boolean;
  /** This node's Node object exists in the API (as of the last event). */
  nodeSeen: boolean;
  /** Per kind: the last list/watch attempt succeeded. */
  healthy: Record<string, boolean>;
}

/** What the informer cache holds per object: identity, RV, and the normalized value or why not. */
interface Stub extends KubernetesObject {
  metadata: { name: string; namespace?: string; resourceVersion?: string };
  value?: PodInfo | NamespaceInfo | V1NetworkPolicy | Error;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => v !== null && typeof v === "object" && !Array.isArray(v);

class HttpStatusError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
    readonly reason?: string,
  ) {
    super(message);
    this.name = "HttpStatusError";
  }
  /** ListWatch checks `code` as well as `statusCode` for 410. */
  get code(): number {
    return this.statusCode;
  }
}

function errorFromStatus(httpCode: number, body: unknown): HttpStatusError {
  const s = isObj(body) ? body : {};
  const code = typeof s.code === "number" ? s.code : httpCode;
  const msg = typeof s.message === "string" ? s.message : http.STATUS_CODES[httpCode] || `HTTP ${httpCode}`;
  return new HttpStatusError(code, msg, typeof s.reason === "string" ? s.reason : undefined);
}

function describeError(err: unknown): Obj {
  if (err instanceof HttpStatusError)
    return { err: err.message, statusCode: err.statusCode, reason: err.reason };
  if (err instanceof Error) return { err: err.message, code: (err as { code?: unknown }).code };
  return { err: String(err) };
}

function stubMeta(raw: unknown): Stub["metadata"] {
  const meta = isObj(raw) && isObj(raw.metadata) ? raw.metadata : {};
  const out: Stub["metadata"] = { name: typeof meta.name === "string" ? meta.name : "" };
  if (typeof meta.namespace === "string") out.namespace = meta.namespace;
  if (typeof meta.resourceVersion === "string") out.resourceVersion = meta.resourceVersion;
  return out;
}

function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

const LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration";

/** Shape check and trim of a NetworkPolicy (full validation is the compiler's job). */
function policyValue(raw: unknown): V1NetworkPolicy | Error {
  if (!isObj(raw)) return new Error("not an object");
  const meta = raw.metadata;
  if (!isObj(meta) || typeof meta.name !== "string" || !meta.name) return new Error("metadata.name: missing");
  if (typeof meta.namespace !== "string" || !meta.namespace) return new Error("metadata.namespace: missing");
  const spec = raw.spec;
  if (!isObj(spec)) return new Error("spec: missing or not an object");
  if (!isObj(spec.podSelector)) return new Error("spec.podSelector: missing or not an object");
  for (const f of ["ingress", "egress"] as const) {
    const v = spec[f];
    if (v !== undefined && v !== null && (!Array.isArray(v) || !v.every(isObj))) {
      return new Error(`spec.${f}: must be a list of rules`);
    }
  }
  const types = spec.policyTypes;
  if (
    types !== undefined &&
    types !== null &&
    (!Array.isArray(types) || types.some((t) => typeof t !== "string"))
  ) {
    return new Error("spec.policyTypes: must be a list of strings");
  }
  const m: Obj = { name: meta.name, namespace: meta.namespace };
  for (const k of ["uid", "resourceVersion", "generation", "labels"] as const)
    if (meta[k] !== undefined) m[k] = meta[k];
  if (isObj(meta.annotations)) {
    const { [LAST_APPLIED]: _drop, ...rest } = meta.annotations;
    if (Object.keys(rest).length > 0) m.annotations = rest;
  }
  return { apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: m, spec } as V1NetworkPolicy;
}

function toStub(kind: ObjectKind, raw: unknown): Stub {
  const stub: Stub = { metadata: stubMeta(raw) };
  try {
    switch (kind) {
      case "Pod":
        stub.value = podFromK8s(raw);
        break;
      case "Namespace":
        stub.value = namespaceFromK8s(raw);
        break;
      case "NetworkPolicy":
        stub.value = policyValue(raw);
        break;
      case "Node":
        break;
    }
  } catch (e) {
    stub.value = asError(e);
  }
  return stub;
}

/**
 * Incremental reader for a list response: fed text chunks, it hands each element of the top-level
 * `items` array to `onItem` as soon as that element is complete and keeps only the unfinished
 * element, so a page of full objects never exists at once (a 500-pod page is ~3 MB of text and
 * several times that as objects; they die young this way). `end()` parses the remaining top-level
 * fields (`items` emptied) and returns them, or throws when the text was not a JSON list.
 */
export class ListReader {
  private buf = "";
  private pos = 0;
  private depth = 0;
  private inStr = false;
  private esc = false;
  private strStart = -1;
  private lastKey = "";
  private state: "head" | "items" | "tail" = "head";
  private itemStart = -1;
  private head = "";

  constructor(private readonly onItem: (raw: unknown) => void) {}

  push(chunk: string): void {
    this.buf += chunk;
    const buf = this.buf;
    const n = buf.length;
    let i = this.pos;
    let cut = -1; // everything before `cut` is consumed
    for (; i < n; i++) {
      const c = buf.charCodeAt(i);
      if (this.inStr) {
        if (this.esc) this.esc = false;
        else if (c === 92 /* backslash */) this.esc = true;
        else if (c === 34 /* quote */) {
          this.inStr = false;
          if (this.state === "head" && this.depth === 1) this.lastKey = buf.slice(this.strStart + 1, i);
        }
        continue;
      }
      if (c === 34) {
        this.inStr = true;
        this.strStart = i;
      } else if (c === 123 /* { */ || c === 91 /* [ */) {
        if (this.state === "head" && this.depth === 1 && c === 91 && this.lastKey === "items") {
          this.state = "items";
          this.head += buf.slice(0, i + 1);
          cut = i + 1;
        } else if (this.state === "items" && this.depth === 2) {
          this.itemStart = i;
        }
        this.depth++;
      } else if (c === 125 /* } */ || c === 93 /* ] */) {
        this.depth--;
        if (this.state === "items" && this.depth === 2 && this.itemStart >= 0) {
          this.onItem(JSON.parse(buf.slice(this.itemStart, i + 1)));
          this.itemStart = -1;
          cut = i + 1;
        } else if (this.state === "items" && this.depth === 1) {
          this.state = "tail"; // the closing bracket of `items` stays for end()
          cut = i;
        }
      } else if (c === 44 /* , */ && this.depth === 1) {
        this.lastKey = "";
      }
    }
    if (this.state === "items" && this.itemStart < 0 && cut < n) cut = n; // only separators left
    if (cut > 0) {
      this.buf = buf.slice(cut);
      if (this.itemStart >= 0) this.itemStart -= cut;
      if (this.strStart >= 0) this.strStart -= cut;
      this.pos = n - cut;
    } else {
      this.pos = n;
    }
  }

  end(): Obj {
    if (this.state !== "tail") throw new Error("not a list");
    const head: unknown = JSON.parse(this.head + this.buf);
    if (!isObj(head)) throw new Error("not a list");
    return head;
  }
}

interface Stream {
  kind: ObjectKind;
  path: string;
  fieldSelector?: string;
  lw: ListWatch<Stub>;
  listed: boolean;
  /** Set when a list succeeded; the next watch() call means ListWatch has applied it. */
  listApplied: boolean;
  healthy: boolean;
  restarts: number;
  /** Consecutive failed attempts (drives the backoff). */
  failures: number;
  /** Consecutive watches that ended quickly without delivering anything. */
  idleWatches: number;
  retry: NodeJS.Timeout | undefined;
  running: Promise<void> | undefined;
}

type WatchCallback = (phase: string, apiObj: unknown, watchObj?: unknown) => void;

interface WatchHost {
  stopped(): boolean;
  track(c: AbortController): void;
  untrack(c: AbortController): void;
  sleep(ms: number): Promise<void>;
  request(path: string, q: URLSearchParams, signal: AbortSignal): Promise<http.IncomingMessage>;
  params(): { timeoutSeconds: number; requestTimeoutMs: number };
  opening(s: Stream): void;
  delay(s: Stream): number;
  connected(s: Stream): void;
  ended(s: Stream, err: unknown, productive: boolean, lastedMs: number): void;
  stub(s: Stream, phase: string, raw: unknown): Stub;
}

export class KubeSource implements ClusterSource {
  private readonly kc: KubeConfig;
  private readonly log: KubeSourceLogger | undefined;
  private readonly streams: Stream[] = [];
  private sink: ClusterSink | undefined;
  private stopped = false;
  private syncedSent = false;
  private nodeSeen = false;
  private readonly stopCtl = new AbortController();
  /** In-flight watch requests and pacing sleeps, ended by stop(). */
  private readonly live = new Set<AbortController>();
  private readonly initialBackoff: number;
  private readonly maxBackoff: number;
  private readonly watchTimeout: number;
  private readonly pageSize: number;
  private readonly requestTimeout: number;
  /** What the watch transport may use (keeps the helpers off the public API). */
  private readonly host: WatchHost = {
    stopped: () => this.stopped,
    track: (c) => this.track(c),
    untrack: (c) => this.untrack(c),
    sleep: (ms) => this.sleep(ms),
    request: (path, q, signal) => this.request(path, q, signal),
    params: () => this.watchParams(),
    opening: (s) => this.watchOpening(s),
    delay: (s) => this.watchDelay(s),
    connected: (s) => this.watchConnected(s),
    ended: (s, err, productive, lastedMs) => this.watchEnded(s, err, productive, lastedMs),
    stub: (s, phase, raw) => this.stubFor(s, phase, raw),
  };

  constructor(private readonly opts: KubeSourceOptions) {
    this.kc = new KubeConfig();
    if (opts.kubeconfigPath) this.kc.loadFromFile(opts.kubeconfigPath);
    else if (process.env.KUBERNETES_SERVICE_HOST && process.env.KUBERNETES_SERVICE_PORT)
      this.kc.loadFromCluster();
    else this.kc.loadFromDefault();
    this.log = opts.logger;
    this.initialBackoff = opts.backoff?.initialMs ?? 500;
    this.maxBackoff = opts.backoff?.maxMs ?? 30_000;
    this.watchTimeout = opts.watchTimeoutSeconds ?? 300;
    this.pageSize = opts.listPageSize ?? 500;
    this.requestTimeout = opts.requestTimeoutMs ?? 60_000;
  }

  async start(sink: ClusterSink): Promise<void> {
    if (this.sink) throw new Error("KubeSource already started");
    if (!this.kc.getCurrentCluster()) throw new Error("kubeconfig has no current cluster");
    this.sink = sink;
    this.addStream("Namespace", "/api/v1/namespaces");
    this.addStream("Pod", "/api/v1/pods");
    this.addStream("NetworkPolicy", "/apis/networking.k8s.io/v1/networkpolicies");
    this.addStream("Node", "/api/v1/nodes", `metadata.name=${this.opts.nodeName}`);
    this.log?.info(
      { server: this.kc.getCurrentCluster()?.server, node: this.opts.nodeName },
      "kube source starting",
    );
    // Resolves once every kind has made its first attempt (listed and watching, or retrying).
    await Promise.all(this.streams.map((s) => this.run(s)));
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.stopCtl.abort();
    for (const c of this.live) c.abort();
    this.live.clear();
    for (const s of this.streams) {
      clearTimeout(s.retry);
      s.retry = undefined;
      await s.lw.stop();
    }
    await Promise.all(this.streams.map((s) => s.running?.catch(() => undefined)));
    // ListWatch may have opened a watch while we were stopping; the wrapper aborts it, but make sure.
    for (const c of this.live) c.abort();
    this.live.clear();
  }

  status(): KubeSourceStatus {
    const watchRestarts: Record<string, number> = {};
    const healthy: Record<string, boolean> = {};
    for (const s of this.streams) {
      watchRestarts[s.kind] = s.restarts;
      healthy[s.kind] = s.healthy;
    }
    return {
      connected: this.streams.length > 0 && this.streams.every((s) => s.healthy),
      watchRestarts,
      synced: this.syncedSent,
      nodeSeen: this.nodeSeen,
      healthy,
    };
  }

  // ------------------------------------------------------------------ streams

  private addStream(kind: ObjectKind, path: string, fieldSelector?: string): void {
    const stream = {
      kind,
      path,
      fieldSelector,
      listed: false,
      listApplied: false,
      healthy: false,
      restarts: 0,
      failures: 0,
      idleWatches: 0,
      retry: undefined,
      running: undefined,
    } as Omit<Stream, "lw"> as Stream;
    stream.lw = new ListWatch<Stub>(
      path,
      new StreamWatch(this.kc, this.host, stream),
      () => this.listAll(stream),
      false,
      undefined,
      fieldSelector,
    );
    stream.lw.on("add", (o) => this.upsert(stream, "add", o));
    stream.lw.on("update", (o) => this.upsert(stream, "update", o));
    stream.lw.on("delete", (o) => this.remove(stream, o));
    stream.lw.on("error", (err) => this.failed(stream, err));
    this.streams.push(stream);
  }

  private run(s: Stream): Promise<void> {
    const p = s.lw.start().catch((err) => this.failed(s, err));
    s.running = p;
    return p;
  }

  /** ListWatch gave up (list failed, watch failed to connect or broke with an error). */
  private failed(s: Stream, err: unknown): void {
    if (this.stopped) return;
    s.healthy = false;
    s.restarts++;
    s.failures++;
    const delay = this.backoff(s.failures);
    this.log?.warn(
      { kind: s.kind, ...describeError(err), retryInMs: delay, restarts: s.restarts },
      `${s.kind} list/watch failed; retrying`,
    );
    clearTimeout(s.retry);
    s.retry = setTimeout(() => {
      s.retry = undefined;
      if (!this.stopped) void this.run(s);
    }, delay);
  }

  private backoff(n: number): number {
    const base = Math.min(this.maxBackoff, this.initialBackoff * 2 ** Math.max(0, n - 1));
    return Math.round(base * (0.8 + Math.random() * 0.4));
  }

  private track(c: AbortController): void {
    if (this.stopped) c.abort();
    else this.live.add(c);
  }

  private untrack(c: AbortController): void {
    this.live.delete(c);
  }

  /** Called by the watch wrapper when ListWatch opens a watch: a preceding list is now applied. */
  private watchOpening(s: Stream): void {
    if (!s.listApplied) return;
    s.listApplied = false;
    if (!s.listed) {
      s.listed = true;
      this.log?.info({ kind: s.kind, objects: s.lw.list().length }, `${s.kind} listed`);
      this.maybeSynced();
    }
  }

  private watchConnected(s: Stream): void {
    s.healthy = true;
  }

  /** A watch that was open ended (cleanly or not) and ListWatch will re-watch or relist. */
  private watchEnded(s: Stream, err: unknown, productive: boolean, lastedMs: number): void {
    if (this.stopped) return;
    if (productive || lastedMs >= 1000) {
      s.idleWatches = 0;
      s.failures = 0;
    } else {
      s.idleWatches++;
    }
    const expired = err instanceof HttpStatusError && err.statusCode === 410;
    // Other errors reach ListWatch's 'error' and are counted and logged by failed().
    if (err && !expired) return;
    s.restarts++;
    this.log?.info(
      { kind: s.kind, restarts: s.restarts, expired },
      expired ? `${s.kind} watch expired (410); relisting` : `${s.kind} watch ended; resuming`,
    );
  }

  /** Pause before re-watching after a run of short, empty watches (ListWatch re-watches at once). */
  private watchDelay(s: Stream): number {
    return s.idleWatches > 0 ? this.backoff(s.idleWatches) : 0;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const c = new AbortController();
      const t = setTimeout(() => {
        this.untrack(c);
        resolve();
      }, ms);
      c.signal.addEventListener("abort", () => {
        clearTimeout(t);
        resolve();
      });
      this.track(c);
    });
  }

  private maybeSynced(): void {
    if (this.syncedSent || !this.streams.every((s) => s.listed)) return;
    this.syncedSent = true;
    this.log?.info({ nodeSeen: this.nodeSeen }, "kube source synced: every kind listed");
    if (!this.nodeSeen) this.log?.warn({ node: this.opts.nodeName }, "this node's Node object was not found");
    try {
      this.sink?.synced();
    } catch (e) {
      this.log?.error({ err: asError(e).message }, "sink.synced threw");
    }
  }

  // ------------------------------------------------------------------ HTTP

  /** GET one list page, streaming each item to `onItem`; returns the list's other fields. */
  private async getList(path: string, query: URLSearchParams, onItem: (raw: unknown) => void): Promise<Obj> {
    const res = await this.request(
      path,
      query,
      AbortSignal.any([this.stopCtl.signal, AbortSignal.timeout(this.requestTimeout)]),
    );
    const ok = res.statusCode === 200;
    const reader = new ListReader(onItem);
    let errText = "";
    res.setEncoding("utf8");
    await new Promise<void>((resolve, reject) => {
      res.on("data", (c: string) => {
        if (!ok) errText += c;
        else {
          try {
            reader.push(c);
          } catch (e) {
            res.destroy();
            reject(e);
          }
        }
      });
      res.on("end", resolve);
      res.on("error", reject);
      res.on("close", () => (res.complete ? resolve() : reject(new Error("connection closed mid-response"))));
    });
    if (!ok) {
      let body: unknown;
      try {
        body = JSON.parse(errText);
      } catch {
        throw new HttpStatusError(res.statusCode ?? 0, errText.slice(0, 200) || "no body");
      }
      throw errorFromStatus(res.statusCode ?? 0, body);
    }
    try {
      return reader.end();
    } catch {
      throw new Error(`GET ${path}: response is not a list`);
    }
  }

  /** Open a GET; resolves with the response once headers arrive. */
  private async request(
    path: string,
    query: URLSearchParams,
    signal: AbortSignal,
  ): Promise<http.IncomingMessage> {
    const cluster = this.kc.getCurrentCluster();
    if (!cluster) throw new Error("kubeconfig has no current cluster");
    const url = new URL(cluster.server.replace(/\/+$/, "") + path);
    for (const [k, v] of query) url.searchParams.set(k, v);
    // Per request: exec/token-file credentials may rotate.
    const fo = await this.kc.applyToFetchOptions({});
    const headers: Record<string, string> = { Accept: "application/json" };
    (fo.headers as unknown as { forEach(cb: (v: string, k: string) => void): void } | undefined)?.forEach(
      (v, k) => {
        headers[k] = v;
      },
    );
    const mod = url.protocol === "https:" ? https : http;
    return new Promise((resolve, reject) => {
      const req = mod.get(url, { agent: fo.agent as http.Agent | undefined, headers, signal }, resolve);
      req.on("error", reject);
    });
  }

  private async listAll(s: Stream): Promise<{ metadata: { resourceVersion: string }; items: Stub[] }> {
    for (let attempt = 0; ; attempt++) {
      try {
        const out = await this.listPages(s);
        s.healthy = true;
        s.failures = 0;
        s.listApplied = true;
        return out;
      } catch (e) {
        // An expired continue token: the snapshot is gone, start the list over (a few times).
        if (e instanceof HttpStatusError && e.statusCode === 410 && attempt < 3 && !this.stopped) continue;
        throw e;
      }
    }
  }

  private async listPages(s: Stream): Promise<{ metadata: { resourceVersion: string }; items: Stub[] }> {
    const items: Stub[] = [];
    let cont = "";
    let rv = "";
    do {
      const q = new URLSearchParams({ limit: String(this.pageSize) });
      if (cont) q.set("continue", cont);
      if (s.fieldSelector) q.set("fieldSelector", s.fieldSelector);
      const head = await this.getList(s.path, q, (raw) => items.push(toStub(s.kind, raw)));
      const meta = isObj(head.metadata) ? head.metadata : {};
      rv = typeof meta.resourceVersion === "string" ? meta.resourceVersion : "";
      cont = typeof meta.continue === "string" ? meta.continue : "";
    } while (cont && !this.stopped);
    if (this.stopped) throw new Error("stopped");
    return { metadata: { resourceVersion: rv }, items };
  }

  // ------------------------------------------------------------------ sink delivery

  private key(o: Stub): string {
    return o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name;
  }

  private upsert(s: Stream, type: KubeEventType, o: Stub): void {
    const sink = this.sink;
    if (!sink || this.stopped) return;
    this.opts.onEvent?.(s.kind, type);
    const v = o.value;
    try {
      if (v instanceof Error) {
        sink.rejected(s.kind, this.key(o), v);
        return;
      }
      switch (s.kind) {
        case "Pod":
          sink.upsertPod(v as PodInfo);
          break;
        case "Namespace":
          sink.upsertNamespace(v as NamespaceInfo);
          break;
        case "NetworkPolicy":
          sink.upsertPolicy(v as V1NetworkPolicy);
          break;
        case "Node":
          if (!this.nodeSeen) this.log?.info({ node: o.metadata.name }, "this node's Node object exists");
          this.nodeSeen = true;
          break;
      }
    } catch (e) {
      this.log?.error({ kind: s.kind, object: this.key(o), err: asError(e).message }, "sink threw on upsert");
    }
  }

  private remove(s: Stream, o: Stub): void {
    const sink = this.sink;
    if (!sink || this.stopped) return;
    this.opts.onEvent?.(s.kind, "delete");
    const { name, namespace = "" } = o.metadata;
    try {
      switch (s.kind) {
        case "Pod":
          sink.deletePod(namespace, name);
          break;
        case "Namespace":
          sink.deleteNamespace(name);
          break;
        case "NetworkPolicy":
          sink.deletePolicy(namespace, name);
          break;
        case "Node":
          this.nodeSeen = false;
          this.log?.warn({ node: name }, "this node's Node object was deleted");
          break;
      }
    } catch (e) {
      this.log?.error({ kind: s.kind, object: this.key(o), err: asError(e).message }, "sink threw on delete");
    }
  }

  /** Watch events become stubs before ListWatch caches them. */
  private stubFor(s: Stream, phase: string, raw: unknown): Stub {
    // A DELETED event needs only the identity: skip normalizing (and never reject a delete).
    return phase === "DELETED" ? { metadata: stubMeta(raw) } : toStub(s.kind, raw);
  }

  private watchParams(): { timeoutSeconds: number; requestTimeoutMs: number } {
    return {
      timeoutSeconds: Math.floor(this.watchTimeout * (1 + Math.random())),
      requestTimeoutMs: this.requestTimeout,
    };
  }
}

/**
 * The transport ListWatch uses for watches: same contract as client-node's Watch.watch (callback per
 * event, `done` once when the stream ends), over node:http, with the fixes listed at the top.
 */
class StreamWatch extends Watch {
  constructor(
    kc: KubeConfig,
    private readonly src: WatchHost,
    private readonly s: Stream,
  ) {
    super(kc);
  }

  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: WatchCallback,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    const { src, s } = this;
    const controller = new AbortController();
    if (src.stopped()) {
      controller.abort();
      return controller;
    }
    src.opening(s);
    const pause = src.delay(s);
    if (pause > 0) await src.sleep(pause);
    if (src.stopped()) {
      controller.abort();
      return controller;
    }
    const { timeoutSeconds, requestTimeoutMs } = src.params();
    const q = new URLSearchParams({
      watch: "true",
      allowWatchBookmarks: "true",
      timeoutSeconds: String(timeoutSeconds),
    });
    for (const [k, v] of Object.entries(queryParams)) if (v !== undefined && v !== "") q.set(k, String(v));

    src.track(controller);
    const openedAt = Date.now();
    let productive = false;
    let finished = false;
    let connected = false;
    let deadline: NodeJS.Timeout | undefined;
    const finish = (err: unknown): void => {
      if (finished) return;
      finished = true;
      clearTimeout(deadline);
      src.untrack(controller);
      controller.abort();
      if (connected) src.ended(s, err, productive, Date.now() - openedAt);
      done(err);
    };
    // Headers must arrive within the request timeout; then the server must end the watch by
    // timeoutSeconds (+ grace). Past that the connection is presumed dead: re-watch from our RV.
    deadline = setTimeout(() => finish(new Error("timed out waiting for watch response")), requestTimeoutMs);

    let res: http.IncomingMessage;
    try {
      res = await src.request(path, q, controller.signal);
    } catch (e) {
      finish(src.stopped() ? null : e);
      return controller;
    }
    if (finished) {
      res.destroy();
      return controller;
    }
    if (res.statusCode !== 200) {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      await new Promise<void>((resolve) => {
        res.on("end", resolve);
        res.on("close", resolve);
        res.on("error", () => resolve());
      });
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      } catch {
        body = undefined;
      }
      finish(errorFromStatus(res.statusCode ?? 0, body));
      return controller;
    }
    connected = true;
    src.connected(s);
    clearTimeout(deadline);
    deadline = setTimeout(() => finish(null), (timeoutSeconds + 30) * 1000);

    let buf = "";
    res.setEncoding("utf8");
    res.on("data", (chunk: string) => {
      buf += chunk;
      let nl = buf.indexOf("\n");
      while (nl >= 0 && !finished) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line) this.onLine(line, callback, finish, () => (productive = true));
        nl = buf.indexOf("\n");
      }
    });
    res.on("end", () => finish(null));
    // A connection reset mid-stream is a clean end for ListWatch: it re-watches from its RV at once
    // (and the next connect attempt reports a down server as an error).
    res.on("error", () => finish(null));
    res.on("close", () => finish(null));
    return controller;
  }

  private onLine(
    line: string,
    callback: WatchCallback,
    finish: (err: unknown) => void,
    mark: () => void,
  ): void {
    let ev: { type?: unknown; object?: unknown };
    try {
      ev = JSON.parse(line);
    } catch {
      return; // a torn line; the stream ends right after
    }
    const type = typeof ev.type === "string" ? ev.type : "";
    if (type === "ERROR") {
      // Usually 410 Expired: ListWatch relists when `done` gets an error with code 410; anything
      // else is an error (backoff, then resume from our RV).
      const st = isObj(ev.object) ? ev.object : {};
      const code = typeof st.code === "number" ? st.code : 500;
      if (code === 410) mark();
      finish(errorFromStatus(code, st));
      return;
    }
    if (type === "BOOKMARK") {
      mark();
      callback(type, { metadata: stubMeta(ev.object) }, ev);
      return;
    }
    if (type !== "ADDED" && type !== "MODIFIED" && type !== "DELETED") return;
    mark();
    callback(type, this.src.stub(this.s, type, ev.object), ev);
  }
}
