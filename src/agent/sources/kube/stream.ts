/**
 * kube/stream: one watched kind: its ListWatch, restarts with capped exponential backoff, paced
 * re-watches, paginated lists reduced to cache entries page by page, and delivery to the sink
 * through the kind's handler.
 *
 * Owns: per-kind connection state (listed, healthy, restarts, consecutive failures, idle watches).
 * A sink that throws is logged, never allowed to break the stream.
 * May not: know which kinds exist (kinds/ does) or when the whole source is synced (kube-source does).
 */
import { type KubeConfig, ListWatch } from "@kubernetes/client-node";
import { type BackoffPolicy, backoffDelay } from "../../backoff.js";
import type { AbortScope } from "./abort-scope.js";
import { describeError, HttpStatusError, type KubeHttp } from "./http.js";
import {
  asError,
  type CachedObject,
  identityOf,
  type KindContext,
  type KindHandler,
  keyOf,
  toCached,
} from "./kind.js";
import { isObj } from "./list-reader.js";
import { StreamWatch, type WatchOwner } from "./watch.js";

export type KubeEventType = "add" | "update" | "delete";

export interface StreamSettings {
  backoff: BackoffPolicy;
  /** Server-side watch timeout; each watch asks for a random value in [t, 2t). */
  watchTimeoutSeconds: number;
  listPageSize: number;
  requestTimeoutMs: number;
  /** Every informer event, before it reaches the sink (metrics). */
  onEvent?: (kind: KindHandler["kind"], type: KubeEventType) => void;
  /** How often an optional kind that is not served is looked for again. */
  absentPollMs: number;
}

interface ListResult {
  metadata: { resourceVersion: string };
  items: CachedObject[];
}

export class KindStream implements WatchOwner {
  readonly kind: KindHandler["kind"];
  private readonly lw: ListWatch<CachedObject>;
  listed = false;
  healthy = false;
  restarts = 0;
  /** Set when a list succeeded; the next watch opening means ListWatch has applied it. */
  private listApplied = false;
  /** Consecutive failed attempts (drives the backoff). */
  private failures = 0;
  /** Consecutive watches that ended quickly without delivering anything. */
  private idleWatches = 0;
  private retry: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  /** An optional kind whose last list found it not served (its CRD is not installed). */
  absent = false;

  constructor(
    kc: KubeConfig,
    private readonly http: KubeHttp,
    private readonly scope: AbortScope,
    private readonly handler: KindHandler,
    private readonly ctx: KindContext,
    private readonly settings: StreamSettings,
    /** The first list of this kind is applied. */
    private readonly onListed: () => void,
  ) {
    this.kind = handler.kind;
    this.lw = new ListWatch<CachedObject>(
      handler.path,
      new StreamWatch(kc, http, scope, this),
      () => this.listAll(),
      false,
      undefined,
      this.fieldSelector(),
    );
    this.lw.on("add", (obj) => this.upsert("add", obj));
    this.lw.on("update", (obj) => this.upsert("update", obj));
    this.lw.on("delete", (obj) => this.remove(obj));
    this.lw.on("error", (err) => this.failed(err));
  }

  private fieldSelector(): string | undefined {
    return this.handler.fieldSelector?.(this.ctx);
  }

  /** One attempt (list, then watch); resolves once it is watching or has scheduled a retry. */
  run(): Promise<void> {
    const p = this.lw.start().catch((err) => this.failed(err));
    this.running = p;
    return p;
  }

  async stop(): Promise<void> {
    clearTimeout(this.retry);
    this.retry = undefined;
    await this.lw.stop();
  }

  /** The last attempt's promise, settled (shutdown waits on it). */
  settled(): Promise<void> {
    return this.running?.catch(() => undefined) ?? Promise.resolve();
  }

  private delay(attempt: number): number {
    return backoffDelay(attempt, { jitter: 0.2, ...this.settings.backoff });
  }

  /** ListWatch gave up (list failed, watch failed to connect or broke with an error). */
  private failed(err: unknown): void {
    if (this.scope.stopped) return;
    this.healthy = false;
    this.restarts++;
    this.failures++;
    const retryInMs = this.delay(this.failures);
    this.ctx.log?.warn(
      { kind: this.kind, ...describeError(err), retryInMs, restarts: this.restarts },
      `${this.kind} list/watch failed; retrying`,
    );
    clearTimeout(this.retry);
    this.retry = setTimeout(() => {
      this.retry = undefined;
      if (!this.scope.stopped) void this.run();
    }, retryInMs);
  }

  // ------------------------------------------------------------------ WatchOwner

  opening(): void {
    if (!this.listApplied) return;
    this.listApplied = false;
    if (!this.listed) {
      this.listed = true;
      this.ctx.log?.info({ kind: this.kind, objects: this.lw.list().length }, `${this.kind} listed`);
      this.onListed();
    }
  }

  connected(): void {
    this.healthy = true;
  }

  ended(err: unknown, productive: boolean, lastedMs: number): void {
    if (this.scope.stopped) return;
    if (productive || lastedMs >= 1000) {
      this.idleWatches = 0;
      this.failures = 0;
    } else {
      this.idleWatches++;
    }
    const expired = err instanceof HttpStatusError && err.statusCode === 410;
    // A kind that went away (its CRD deleted): relist, which finds it absent.
    if (this.handler.optional && err instanceof HttpStatusError && err.statusCode === 404) return;
    // Other errors reach ListWatch's 'error' and are counted and logged by failed().
    if (err && !expired) return;
    this.restarts++;
    this.ctx.log?.info(
      { kind: this.kind, restarts: this.restarts, expired },
      expired ? `${this.kind} watch expired (410); relisting` : `${this.kind} watch ended; resuming`,
    );
  }

  absentPollMs(): number | undefined {
    return this.absent ? this.settings.absentPollMs : undefined;
  }

  /** ListWatch re-watches at once; after a run of short, empty watches we pause first. */
  pauseMs(): number {
    return this.idleWatches > 0 ? this.delay(this.idleWatches) : 0;
  }

  params(): { timeoutSeconds: number; requestTimeoutMs: number } {
    return {
      timeoutSeconds: Math.floor(this.settings.watchTimeoutSeconds * (1 + Math.random())),
      requestTimeoutMs: this.settings.requestTimeoutMs,
    };
  }

  entry(phase: string, raw: unknown): CachedObject {
    // A DELETED event needs only the identity: skip converting (and never reject a delete).
    return phase === "DELETED" ? { metadata: identityOf(raw) } : toCached(this.handler, raw);
  }

  // ------------------------------------------------------------------ lists

  private async listAll(): Promise<ListResult> {
    for (let attempt = 0; ; attempt++) {
      try {
        const out = await this.listPages();
        this.healthy = true;
        this.failures = 0;
        this.listApplied = true;
        if (this.absent) {
          this.absent = false;
          this.ctx.log?.info(
            { kind: this.kind },
            `${this.kind} is served now (its CRD was installed); watching it`,
          );
        }
        return out;
      } catch (e) {
        if (
          this.handler.optional &&
          e instanceof HttpStatusError &&
          e.statusCode === 404 &&
          !this.scope.stopped
        ) {
          // Not served (its CRD is not installed): an empty kind, and a note the first time.
          if (!this.absent)
            this.ctx.log?.info(
              { kind: this.kind, path: this.handler.path },
              `${this.kind} is not served by the API server (its CRD is not installed); podwall picks it up when it appears`,
            );
          this.absent = true;
          this.healthy = true;
          this.failures = 0;
          this.listApplied = true;
          return { metadata: { resourceVersion: "" }, items: [] };
        }
        // An expired continue token: the snapshot is gone, start the list over (a few times).
        if (e instanceof HttpStatusError && e.statusCode === 410 && attempt < 3 && !this.scope.stopped)
          continue;
        throw e;
      }
    }
  }

  private async listPages(): Promise<ListResult> {
    const items: CachedObject[] = [];
    const fieldSelector = this.fieldSelector();
    let cont = "";
    let rv = "";
    do {
      const q = new URLSearchParams({ limit: String(this.settings.listPageSize) });
      if (cont) q.set("continue", cont);
      if (fieldSelector) q.set("fieldSelector", fieldSelector);
      const signal = AbortSignal.any([
        this.scope.signal,
        AbortSignal.timeout(this.settings.requestTimeoutMs),
      ]);
      const head = await this.http.getList(this.handler.path, q, signal, (raw) =>
        items.push(toCached(this.handler, raw)),
      );
      const meta = isObj(head.metadata) ? head.metadata : {};
      rv = typeof meta.resourceVersion === "string" ? meta.resourceVersion : "";
      cont = typeof meta.continue === "string" ? meta.continue : "";
    } while (cont && !this.scope.stopped);
    if (this.scope.stopped) throw new Error("stopped");
    return { metadata: { resourceVersion: rv }, items };
  }

  // ------------------------------------------------------------------ sink delivery

  private upsert(type: KubeEventType, obj: CachedObject): void {
    if (this.scope.stopped) return;
    this.settings.onEvent?.(this.kind, type);
    try {
      if (obj.value instanceof Error) this.ctx.sink.rejected(this.kind, keyOf(obj.metadata), obj.value);
      else this.handler.upsert(this.ctx, obj.value, obj.metadata);
    } catch (e) {
      this.ctx.log?.error(
        { kind: this.kind, object: keyOf(obj.metadata), err: asError(e).message },
        "sink threw on upsert",
      );
    }
  }

  private remove(obj: CachedObject): void {
    if (this.scope.stopped) return;
    this.settings.onEvent?.(this.kind, "delete");
    try {
      this.handler.remove(this.ctx, obj.metadata);
    } catch (e) {
      this.ctx.log?.error(
        { kind: this.kind, object: keyOf(obj.metadata), err: asError(e).message },
        "sink threw on delete",
      );
    }
  }
}
