/**
 * kube-source: the Kubernetes API server as the cluster (informers on Namespaces, Nodes, Pods,
 * NetworkPolicies, and the policy.networking.k8s.io kinds where their CRDs are installed).
 *
 * Owns: the kubeconfig, one stream per watched kind (kube/stream.ts), the "every kind listed" moment
 * (sink.synced), aggregate status and shutdown. Objects are converted the moment they are parsed and
 * the informer cache holds only identity, resourceVersion and the converted value (kube/kind.ts). A
 * pod or namespace that cannot be normalized, or a policy that fails a shape check, goes to
 * `sink.rejected` and stays out of the sink (its last good version, if any, stays in force).
 * May not: compile policies or touch the dataplane.
 *
 * Layout: kube/http (requests, status errors), kube/list-reader (streamed list pages), kube/watch
 * (the watch transport), kube/stream (one kind's list/watch/backoff/delivery), kube/kinds/* (one
 * module per kind: path, conversion, sink calls), kube/abort-scope (what stop() aborts).
 *
 * client-node 1.4.0 notes (why the kube/ modules look the way they do):
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
 *   to cache entries page by page; the generated API client would build full V1Pod class instances.
 * - After stop(), aborting requests makes ListWatch emit 'error'; those are ignored.
 */
import { KubeConfig } from "@kubernetes/client-node";
import type { ClusterSink, ClusterSource, ObjectKind, SourceStatus } from "../cluster-events.js";
import { AbortScope } from "./kube/abort-scope.js";
import { KubeHttp } from "./kube/http.js";
import { asError, type KindContext, type KindLogger } from "./kube/kind.js";
import { WATCHED_KINDS } from "./kube/kinds/index.js";
import { KindStream, type KubeEventType } from "./kube/stream.js";

export type KubeSourceLogger = KindLogger;

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
  /** How often a policy kind whose CRD is not installed is looked for again (default 30 s). */
  absentPollMs?: number;
}

export interface KubeSourceStatus extends SourceStatus {
  /** Every kind has completed its first list. */
  synced: boolean;
  /** This node's Node object exists in the API (as of the last event). */
  nodeSeen: boolean;
  /** Per kind: the last list/watch attempt succeeded. */
  healthy: Record<string, boolean>;
}

export class KubeSource implements ClusterSource {
  private readonly kc: KubeConfig;
  private readonly log: KubeSourceLogger | undefined;
  private readonly scope = new AbortScope();
  private streams: KindStream[] = [];
  private ctx: KindContext | undefined;
  private syncedSent = false;

  constructor(private readonly opts: KubeSourceOptions) {
    this.kc = new KubeConfig();
    if (opts.kubeconfigPath) this.kc.loadFromFile(opts.kubeconfigPath);
    else if (process.env.KUBERNETES_SERVICE_HOST && process.env.KUBERNETES_SERVICE_PORT)
      this.kc.loadFromCluster();
    else this.kc.loadFromDefault();
    this.log = opts.logger;
  }

  async start(sink: ClusterSink): Promise<void> {
    if (this.ctx) throw new Error("KubeSource already started");
    if (!this.kc.getCurrentCluster()) throw new Error("kubeconfig has no current cluster");
    const o = this.opts;
    const ctx: KindContext = { sink, log: this.log, nodeName: o.nodeName, nodeSeen: false };
    this.ctx = ctx;
    const http = new KubeHttp(this.kc);
    const settings = {
      backoff: { initialMs: o.backoff?.initialMs ?? 500, maxMs: o.backoff?.maxMs ?? 30_000 },
      watchTimeoutSeconds: o.watchTimeoutSeconds ?? 300,
      listPageSize: o.listPageSize ?? 500,
      requestTimeoutMs: o.requestTimeoutMs ?? 60_000,
      absentPollMs: o.absentPollMs ?? 30_000,
      onEvent: o.onEvent,
    };
    this.streams = WATCHED_KINDS.map(
      (h) => new KindStream(this.kc, http, this.scope, h, ctx, settings, () => this.maybeSynced()),
    );
    this.log?.info({ server: this.kc.getCurrentCluster()?.server, node: o.nodeName }, "kube source starting");
    // Resolves once every kind has made its first attempt (listed and watching, or retrying).
    await Promise.all(this.streams.map((s) => s.run()));
  }

  async stop(): Promise<void> {
    if (this.scope.stopped) return;
    this.scope.stop();
    for (const s of this.streams) await s.stop();
    await Promise.all(this.streams.map((s) => s.settled()));
    // ListWatch may have opened a watch while we were stopping; the transport aborts it, but make sure.
    this.scope.abortAll();
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
      nodeSeen: this.ctx?.nodeSeen ?? false,
      healthy,
    };
  }

  private maybeSynced(): void {
    const ctx = this.ctx;
    if (!ctx || this.syncedSent || !this.streams.every((s) => s.listed)) return;
    this.syncedSent = true;
    this.log?.info({ nodeSeen: ctx.nodeSeen }, "kube source synced: every kind listed");
    if (!ctx.nodeSeen) this.log?.warn({ node: this.opts.nodeName }, "this node's Node object was not found");
    try {
      ctx.sink.synced();
    } catch (e) {
      this.log?.error({ err: asError(e).message }, "sink.synced threw");
    }
  }
}
