/**
 * reconciler: keeps the kernel in step with the cluster.
 *
 * Owns: feeding source events into the incremental table, coalescing changes into batches (first
 * event opens a window of `batchDelayMs`; the timing is a BoundedRunner's), rendering and applying
 * each batch as a minimal delta, retrying failed applies with capped exponential backoff (a failed
 * iptables-restore changes nothing, and the kernel view is re-read before the retry), periodic resync that re-reads the kernel and
 * repairs drift, readiness, and the event->enforced latency metric.
 * Nothing is programmed before the source reports `synced` (a half-known cluster would open holes);
 * a rejected object is logged and counted, and its last good version stays in force; it stops being
 * counted as rejected (the gauge) when an upsert or delete of it arrives, or the source clears it.
 * May not: talk to Kubernetes (sources do) or build kernel text (the renderer does).
 */
import { InputError } from "../compiler/errors.js";
import { FROM_API, isPolicyKind, SALVAGE_FROM_API } from "../compiler/kinds/index.js";
import type { NamespaceInfo, NodeInfo, PodInfo } from "../compiler/model.js";
import { type PolicyKind, policyDisplay, policyKey } from "../compiler/rule-model.js";
import type { PolicyTable } from "../compiler/table.js";
import type { ApplyStats, KernelApplier } from "../dataplane/apply.js";
import { type DesiredState, type LocalPod, type RenderOptions, renderNode } from "../dataplane/render.js";
import { BoundedRunner } from "./bounded-runner.js";
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
  /** Called with what was rendered, before it is applied (the deny-log ids). */
  rendered?: (desired: DesiredState) => void;
  /** Called after a successful apply, with what the kernel now holds. */
  afterSync?: (stats: ApplyStats, desired: DesiredState) => void;
}

export class Reconciler implements ClusterSink {
  private readonly opts: Required<Omit<ReconcilerOptions, "beforeApply" | "rendered" | "afterSync">> &
    ReconcilerOptions;
  private readonly runner: BoundedRunner;
  private isSynced = false;
  private programmedOnce = false;
  private lastSyncOk = false;
  private resyncTimer: NodeJS.Timeout | undefined;
  private syncStartedAt: number | undefined;
  /** Receive times of events whose effect is not yet in the kernel. */
  private pending: number[] = [];
  private readonly rejectedKeys = new Map<ObjectKind, Set<string>>();
  lastStats: ApplyStats | undefined;
  lastError: Error | undefined;
  /** Keys of the local pods the last successful sync programmed for. */
  lastLocal: ReadonlySet<string> = new Set();
  private started = 0;
  private syncWaiters: { after: number; resolve: () => void }[] = [];

  constructor(opts: ReconcilerOptions) {
    this.opts = {
      batchDelayMs: 20,
      resyncIntervalMs: 300_000,
      maxBackoffMs: 10_000,
      failClosedOnRejected: false,
      ...opts,
    };
    this.runner = new BoundedRunner({
      task: () => this.syncOnce(),
      delayMs: this.opts.batchDelayMs,
      retry: { initialMs: 100, maxMs: this.opts.maxBackoffMs },
      onFailure: (err, attempt, retryInMs) =>
        this.opts.log.error(
          { err: err.message, attempt, retryInMs },
          "sync failed; previous kernel state stays in force",
        ),
    });
  }

  get table(): PolicyTable {
    return this.opts.table;
  }

  /** Ready: the first complete sync is programmed and the latest one succeeded. */
  ready(): boolean {
    return this.programmedOnce && this.lastSyncOk;
  }

  // ---------------------------------------------------------------- ClusterSink

  private event(kind: ObjectKind, type: string, changed: boolean): void {
    this.opts.metrics.eventsReceived.inc({ kind, type });
    if (!changed) return;
    if (this.pending.length < 100_000) this.pending.push(performance.now());
    this.schedule();
  }

  upsertPod(pod: PodInfo): void {
    this.clearRejected("Pod", `${pod.namespace}/${pod.name}`);
    const existed = this.opts.table.pod(`${pod.namespace}/${pod.name}`) !== undefined;
    this.event("Pod", existed ? "update" : "add", this.opts.table.upsertPod(pod));
  }

  deletePod(namespace: string, name: string): void {
    this.clearRejected("Pod", `${namespace}/${name}`);
    this.event("Pod", "delete", this.opts.table.deletePod(namespace, name));
  }

  upsertNamespace(ns: NamespaceInfo): void {
    this.clearRejected("Namespace", ns.name);
    this.event(
      "Namespace",
      this.opts.table.hasNamespace(ns.name) ? "update" : "add",
      this.opts.table.upsertNamespace(ns),
    );
  }

  deleteNamespace(name: string): void {
    this.clearRejected("Namespace", name);
    this.event("Namespace", "delete", this.opts.table.deleteNamespace(name));
  }

  upsertNode(node: NodeInfo): void {
    this.clearRejected("Node", node.name);
    const existed = this.opts.table.nodeIndex.node(node.name) !== undefined;
    this.event("Node", existed ? "update" : "add", this.opts.table.upsertNode(node));
  }

  deleteNode(name: string): void {
    this.clearRejected("Node", name);
    this.event("Node", "delete", this.opts.table.deleteNode(name));
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
    const type = this.opts.table.policy(key) ? "update" : "add";
    let changed: boolean;
    try {
      changed = this.opts.table.upsertPolicy(policy, FROM_API, kind);
    } catch (e) {
      this.opts.metrics.eventsReceived.inc({ kind, type });
      const objectKey = namespace ? `${namespace}/${name}` : name;
      if (this.opts.failClosedOnRejected && e instanceof InputError) {
        // The API server holds this object: enforce what can be read and fail closed on the rest,
        // rather than leave its pods open (a new policy) or under an older version (an update).
        try {
          changed = this.opts.table.upsertPolicy(policy, SALVAGE_FROM_API, kind);
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
    for (const n of this.opts.table.policy(key)?.spec.notEnforced ?? [])
      this.opts.log.warn({ kind, object: key }, `${kind} ${policyDisplay(key)} is not fully enforced: ${n}`);
    this.event(kind, type, changed);
  }

  deletePolicy(namespace: string, name: string, kind: PolicyKind = "NetworkPolicy"): void {
    this.clearRejected(kind, namespace ? `${namespace}/${name}` : name);
    this.event(kind, "delete", this.opts.table.deletePolicy(namespace, name, kind));
  }

  rejected(kind: ObjectKind, key: string, error: Error, outcome?: string): void {
    this.opts.metrics.rejectedObjects.inc({ kind });
    let set = this.rejectedKeys.get(kind);
    if (!set) this.rejectedKeys.set(kind, (set = new Set()));
    set.add(key);
    this.opts.metrics.rejectedCurrent.set({ kind }, set.size);
    const tableKey = isPolicyKind(kind)
      ? policyKey(
          kind,
          key.includes("/") ? key.split("/")[0] : "",
          key.includes("/") ? key.split("/")[1] : key,
        )
      : "";
    const kept =
      outcome ??
      (tableKey && this.opts.table.policy(tableKey) ? "; its last good version stays in force" : "");
    this.opts.log.warn(
      { kind, object: key, field: error instanceof InputError ? error.field : undefined, err: error.message },
      `rejected ${kind} ${key}: ${error.message}${kept}`,
    );
  }

  /** The source says a rejected object was fixed or removed without reaching us. */
  cleared(kind: ObjectKind, key: string): void {
    this.clearRejected(kind, key);
  }

  private clearRejected(kind: ObjectKind, key: string): void {
    const set = this.rejectedKeys.get(kind);
    if (set?.delete(key)) this.opts.metrics.rejectedCurrent.set({ kind }, set.size);
  }

  synced(): void {
    if (this.isSynced) return;
    this.isSynced = true;
    this.opts.log.info(this.opts.table.stats(), "cluster view complete; programming the kernel");
    this.schedule(0);
    this.armResync();
  }

  // ---------------------------------------------------------------- loop

  /** Ask for a sync soon (changes) or now; coalesces with one already waiting. */
  schedule(delayMs = this.opts.batchDelayMs): void {
    if (!this.isSynced) return;
    this.runner.request(delayMs);
  }

  private armResync(): void {
    if (this.opts.resyncIntervalMs <= 0) return;
    this.resyncTimer = setInterval(() => {
      // Re-read the kernel so hand-made changes to our chains and sets are found and repaired.
      this.opts.applier.invalidate();
      this.schedule(0);
    }, this.opts.resyncIntervalMs);
    this.resyncTimer.unref();
  }

  /** Run a sync now and wait for it (tests, shutdown paths). */
  syncNow(): Promise<void> {
    return this.runner.runNow();
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

  /** When the sync in progress started (performance.now()), or undefined (the liveness watchdog). */
  syncRunningSince(): number | undefined {
    return this.syncStartedAt;
  }

  private async syncOnce(): Promise<void> {
    this.syncStartedAt = performance.now();
    try {
      await this.syncBody();
    } finally {
      this.syncStartedAt = undefined;
    }
  }

  private async syncBody(): Promise<void> {
    const seq = ++this.started;
    const t0 = performance.now();
    const batch = this.pending;
    this.pending = [];
    const { table, metrics, log } = this.opts;
    try {
      const local = await this.opts.local.localPods(table);
      await this.opts.beforeApply?.(table);
      const desired = renderNode(table, local, this.opts.render);
      this.opts.rendered?.(desired);
      const stats = await this.opts.applier.apply(desired);
      const done = performance.now();
      this.lastStats = stats;
      this.lastError = undefined;
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
      this.opts.afterSync?.(stats, desired);
      noteSyncEvents(batch.length);
    } catch (e) {
      this.lastError = e as Error;
      this.lastSyncOk = false;
      // Keep the events: their latency is measured when a later sync lands them.
      this.pending = batch.concat(this.pending);
      this.opts.applier.invalidate();
      metrics.syncs.inc({ result: "error" });
      metrics.applyErrors.inc();
      throw e; // the runner logs it and retries with backoff
    }
  }

  async stop(): Promise<void> {
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    await this.runner.stop();
  }
}
