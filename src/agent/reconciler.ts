/**
 * reconciler: keeps the kernel in step with the cluster.
 *
 * Owns: feeding source events into the incremental table, coalescing changes into batches (first
 * event opens a window of `batchDelayMs`), rendering and applying each batch as a minimal delta,
 * retrying failed applies with capped exponential backoff (a failed iptables-restore changes nothing,
 * and the kernel view is re-read before the retry), periodic resync that re-reads the kernel and
 * repairs drift, readiness, and the event->enforced latency metric.
 * Nothing is programmed before the source reports `synced` (a half-known cluster would open holes);
 * a rejected object is logged and counted, and its last good version stays in force.
 * May not: talk to Kubernetes (sources do) or build kernel text (the renderer does).
 */
import { InputError } from "../compiler/errors.js";
import { FROM_API, isPolicyKind, SALVAGE_FROM_API } from "../compiler/kinds/index.js";
import type { NamespaceInfo, NodeInfo, PodInfo } from "../compiler/model.js";
import { type PolicyKind, policyDisplay, policyKey } from "../compiler/rule-model.js";
import type { PolicyTable } from "../compiler/table.js";
import type { ApplyStats, KernelApplier } from "../dataplane/apply.js";
import { type LocalPod, type RenderOptions, renderNode } from "../dataplane/render.js";
import type { ClusterSink, ObjectKind } from "./cluster-events.js";
import type { Logger } from "./log.js";
import { noteSyncEvents } from "./memory.js";
import type { Metrics } from "./metrics.js";

export interface LocalPodProvider {
  /** This node's pods (with their host interfaces) as of now. */
  localPods(table: PolicyTable): Promise<LocalPod[]>;
}

export interface ReconcilerOptions {
  table: PolicyTable;
  applier: KernelApplier;
  local: LocalPodProvider;
  render: RenderOptions;
  metrics: Metrics;
  log: Logger;
  batchDelayMs?: number;
  /**
   * Objects come from an API server, which validated them: a policy podwall rejects is enforced
   * fail-closed (rules it cannot read allow nothing) instead of being left out. A folder source's
   * files are the operator's drafts: there the last good version stays.
   */
  failClosedOnRejected?: boolean;
  resyncIntervalMs?: number;
  maxBackoffMs?: number;
  /** Called with every new table state before the kernel is programmed (the NFQUEUE snapshot). */
  beforeApply?: (table: PolicyTable) => void | Promise<void>;
  afterSync?: (stats: ApplyStats) => void;
}

export class Reconciler implements ClusterSink {
  private readonly o: Required<Omit<ReconcilerOptions, "beforeApply" | "afterSync">> & ReconcilerOptions;
  private isSynced = false;
  private programmedOnce = false;
  private lastSyncOk = false;
  private timer: NodeJS.Timeout | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private retryAfter: number | undefined;
  private failures = 0;
  private stopped = false;
  /** Receive times of events whose effect is not yet in the kernel. */
  private pending: number[] = [];
  private readonly rejectedKeys = new Map<ObjectKind, Set<string>>();
  lastStats: ApplyStats | undefined;
  lastError: Error | undefined;
  heartbeat = Date.now();
  /** Keys of the local pods the last successful sync programmed for. */
  lastLocal: ReadonlySet<string> = new Set();
  private started = 0;
  private syncWaiters: { after: number; resolve: () => void }[] = [];

  constructor(opts: ReconcilerOptions) {
    this.o = {
      batchDelayMs: 20,
      resyncIntervalMs: 300_000,
      maxBackoffMs: 10_000,
      failClosedOnRejected: false,
      ...opts,
    };
  }

  get table(): PolicyTable {
    return this.o.table;
  }

  /** Ready: the first complete sync is programmed and the latest one succeeded. */
  ready(): boolean {
    return this.programmedOnce && this.lastSyncOk;
  }

  // ---------------------------------------------------------------- ClusterSink

  private event(kind: ObjectKind, type: string, changed: boolean): void {
    this.o.metrics.eventsReceived.inc({ kind, type });
    if (!changed) return;
    if (this.pending.length < 100_000) this.pending.push(performance.now());
    this.schedule();
  }

  upsertPod(pod: PodInfo): void {
    const existed = this.o.table.pod(`${pod.namespace}/${pod.name}`) !== undefined;
    this.event("Pod", existed ? "update" : "add", this.o.table.upsertPod(pod));
  }

  deletePod(namespace: string, name: string): void {
    this.event("Pod", "delete", this.o.table.deletePod(namespace, name));
  }

  upsertNamespace(ns: NamespaceInfo): void {
    this.event(
      "Namespace",
      this.o.table.hasNamespace(ns.name) ? "update" : "add",
      this.o.table.upsertNamespace(ns),
    );
  }

  deleteNamespace(name: string): void {
    this.event("Namespace", "delete", this.o.table.deleteNamespace(name));
  }

  upsertNode(node: NodeInfo): void {
    const existed = this.o.table.nodeIndex.node(node.name) !== undefined;
    this.event("Node", existed ? "update" : "add", this.o.table.upsertNode(node));
  }

  deleteNode(name: string): void {
    this.event("Node", "delete", this.o.table.deleteNode(name));
  }

  upsertPolicy(policy: unknown, kind: PolicyKind = "NetworkPolicy"): void {
    const meta = (policy as { metadata?: { namespace?: unknown; name?: unknown } } | null)?.metadata;
    const name = typeof meta?.name === "string" ? meta.name : "";
    const namespace =
      kind !== "NetworkPolicy"
        ? ""
        : typeof meta?.namespace === "string" && meta.namespace
          ? meta.namespace
          : "default";
    const key = policyKey(kind, namespace, name);
    const type = this.o.table.policy(key) ? "update" : "add";
    let changed: boolean;
    try {
      changed = this.o.table.upsertPolicy(policy, FROM_API, kind);
    } catch (e) {
      this.o.metrics.eventsReceived.inc({ kind, type });
      const objectKey = namespace ? `${namespace}/${name}` : name;
      if (this.o.failClosedOnRejected && e instanceof InputError) {
        // The API server holds this object: enforce what can be read and fail closed on the rest,
        // rather than leave its pods open (a new policy) or under an older version (an update).
        try {
          changed = this.o.table.upsertPolicy(policy, SALVAGE_FROM_API, kind);
          this.rejected(
            kind,
            objectKey,
            e,
            "; enforced fail-closed: what podwall cannot read allows nothing",
          );
          this.event(kind, type, changed);
          return;
        } catch {
          // Not even its subject can be read: nothing safe to enforce; reported below.
        }
      }
      this.rejected(kind, objectKey, e as Error);
      return;
    }
    this.clearRejected(kind, namespace ? `${namespace}/${name}` : name);
    for (const n of this.o.table.policy(key)?.spec.notEnforced ?? [])
      this.o.log.warn({ kind, object: key }, `${kind} ${policyDisplay(key)} is not fully enforced: ${n}`);
    this.event(kind, type, changed);
  }

  deletePolicy(namespace: string, name: string, kind: PolicyKind = "NetworkPolicy"): void {
    this.clearRejected(kind, namespace ? `${namespace}/${name}` : name);
    this.event(kind, "delete", this.o.table.deletePolicy(namespace, name, kind));
  }

  rejected(kind: ObjectKind, key: string, error: Error, outcome?: string): void {
    this.o.metrics.rejectedObjects.inc({ kind });
    let set = this.rejectedKeys.get(kind);
    if (!set) this.rejectedKeys.set(kind, (set = new Set()));
    set.add(key);
    this.o.metrics.rejectedCurrent.set({ kind }, set.size);
    const tableKey = isPolicyKind(kind)
      ? policyKey(
          kind,
          key.includes("/") ? key.split("/")[0] : "",
          key.includes("/") ? key.split("/")[1] : key,
        )
      : "";
    const kept =
      outcome ?? (tableKey && this.o.table.policy(tableKey) ? "; its last good version stays in force" : "");
    this.o.log.warn(
      { kind, object: key, field: error instanceof InputError ? error.field : undefined, err: error.message },
      `rejected ${kind} ${key}: ${error.message}${kept}`,
    );
  }

  private clearRejected(kind: ObjectKind, key: string): void {
    const set = this.rejectedKeys.get(kind);
    if (set?.delete(key)) this.o.metrics.rejectedCurrent.set({ kind }, set.size);
  }

  synced(): void {
    if (this.isSynced) return;
    this.isSynced = true;
    this.o.log.info(this.o.table.stats(), "cluster view complete; programming the kernel");
    this.schedule(0);
    this.armResync();
  }

  // ---------------------------------------------------------------- loop

  /** Ask for a sync soon (changes) or now; coalesces with one already waiting. */
  schedule(delayMs = this.o.batchDelayMs): void {
    if (!this.isSynced || this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.launch();
    }, delayMs);
  }

  private launch(): void {
    this.running = this.syncOnce().finally(() => {
      this.running = undefined;
      const delay = this.retryAfter ?? (this.again ? this.o.batchDelayMs : undefined);
      this.retryAfter = undefined;
      this.again = false;
      if (delay !== undefined) this.schedule(delay);
    });
  }

  private armResync(): void {
    if (this.o.resyncIntervalMs <= 0) return;
    this.resyncTimer = setInterval(() => {
      // Re-read the kernel so hand-made changes to our chains and sets are found and repaired.
      this.o.applier.invalidate();
      this.schedule(0);
    }, this.o.resyncIntervalMs);
    this.resyncTimer.unref();
  }

  /** Run a sync now and wait for it (tests, shutdown paths). */
  async syncNow(): Promise<void> {
    while (this.running) await this.running;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.launch();
    await this.running;
  }

  /**
   * True after the next successful sync that starts after this call, so it includes every change
   * made before it (the CNI admission waits on this); false if none succeeds within `timeoutMs`.
   */
  nextSync(timeoutMs: number): Promise<boolean> {
    const after = this.started;
    return new Promise<boolean>((resolve) => {
      const waiter = {
        after,
        resolve: () => {
          clearTimeout(timer);
          resolve(true);
        },
      };
      const timer = setTimeout(
        () => {
          this.syncWaiters = this.syncWaiters.filter((w) => w !== waiter);
          resolve(false);
        },
        Math.max(0, timeoutMs),
      );
      this.syncWaiters.push(waiter);
      this.schedule(0);
    });
  }

  private async syncOnce(): Promise<void> {
    const seq = ++this.started;
    this.heartbeat = Date.now();
    const t0 = performance.now();
    const batch = this.pending;
    this.pending = [];
    const { table, metrics, log } = this.o;
    try {
      const local = await this.o.local.localPods(table);
      await this.o.beforeApply?.(table);
      const desired = renderNode(table, local, this.o.render);
      const stats = await this.o.applier.apply(desired);
      const done = performance.now();
      this.lastStats = stats;
      this.lastError = undefined;
      this.failures = 0;
      this.lastSyncOk = true;
      this.programmedOnce = true;
      this.lastLocal = new Set(local.map((p) => p.key));
      this.syncWaiters = this.syncWaiters.filter((w) => {
        if (w.after >= seq) return true;
        w.resolve();
        return false;
      });
      for (const t of batch) metrics.enforceLatency.observe((done - t) / 1000);
      metrics.syncDuration.observe((done - t0) / 1000);
      metrics.applyDuration.observe(stats.ms / 1000);
      metrics.syncs.inc({ result: "ok" });
      metrics.lastSuccess.set(Date.now() / 1000);
      metrics.rules.set(stats.rules);
      metrics.ipsets.set(stats.ipsets);
      metrics.localPods.set(local.length);
      metrics.isolatedPods.set({ direction: "ingress" }, desired.isolated.ingress);
      metrics.isolatedPods.set({ direction: "egress" }, desired.isolated.egress);
      const s = table.stats();
      metrics.policies.set(s.policies);
      metrics.selectors.set(s.selectors);
      metrics.identities.set(s.identities);
      metrics.pods.set(s.pods);
      log.info(
        {
          events: batch.length,
          localPods: local.length,
          isolated: desired.isolated.pods,
          chainsWritten: stats.chainsWritten,
          chainsDeleted: stats.chainsDeleted,
          setsCreated: stats.setsCreated,
          setsDestroyed: stats.setsDestroyed,
          membersAdded: stats.membersAdded,
          membersDeleted: stats.membersDeleted,
          rules: stats.rules,
          ipsets: stats.ipsets,
          applyMs: Math.round(stats.ms * 10) / 10,
          syncMs: Math.round((done - t0) * 10) / 10,
        },
        "sync",
      );
      this.o.afterSync?.(stats);
      noteSyncEvents(batch.length);
    } catch (e) {
      const err = e as Error;
      this.lastError = err;
      this.lastSyncOk = false;
      this.failures++;
      // Keep the events: their latency is measured when a later sync lands them.
      this.pending = batch.concat(this.pending);
      this.o.applier.invalidate();
      metrics.syncs.inc({ result: "error" });
      metrics.applyErrors.inc();
      const backoff = Math.min(this.o.maxBackoffMs, 100 * 2 ** Math.min(this.failures - 1, 10));
      log.error(
        { err: err.message, attempt: this.failures, retryInMs: backoff },
        "sync failed; previous kernel state stays in force",
      );
      this.retryAfter = backoff;
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    while (this.running) await this.running;
  }
}
