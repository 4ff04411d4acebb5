/**
 * agent: the per-node process: a cluster source feeding the reconciler, which programs the kernel;
 * the health/metrics server and its liveness watchdog; the optional NFQUEUE verdict process
 * (supervised); deny logs (one line shape and one line limit for both dataplanes; in iptables mode
 * the NFLOG reader and the kernel's rule counters); clean shutdown. docs/design/agent-lifecycle.md draws the wiring.
 *
 * Owns: wiring and lifecycle. Start-up adopts whatever PODWALL- state a previous run left (the
 * applier diffs against the kernel, never flushes first), so a restart opens no window. A start-up
 * step that fails once /healthz is served is recorded as fatal there, not hidden. SIGTERM
 * stops the watches and leaves the kernel state in place (enforcement continues across restarts and
 * upgrades) unless --cleanup-on-exit asks for removal.
 * May not: contain policy logic.
 */
import type { Server } from "node:http";
import { dirname, join } from "node:path";
import { pino } from "pino";
import { PolicyTable } from "../compiler/table.js";
import { KernelApplier } from "../dataplane/apply.js";
import { loadLab } from "../dataplane/lab/lab.js";
import type { ClusterSink, ClusterSource } from "./cluster-events.js";
import { CniAdmission } from "./cni-admission.js";
import { CniChainKeeper } from "./cni-chain-keeper.js";
import { startCniServer } from "./cni-server.js";
import { DenyLog } from "./deny-log.js";
import { startHealthServer } from "./health.js";
import { KernelCounters } from "./kernel-counters.js";
import { Liveness } from "./liveness.js";
import { RoutedLocalPods } from "./local-pods.js";
import { createLogger, type Logger } from "./log.js";
import { createMetrics, type Metrics } from "./metrics.js";
import { NflogDenyLogs } from "./nflog-deny-logs.js";
import { NfqueueVerdicts } from "./nfqueue-verdicts.js";
import { AGENT_DEFAULTS, type AgentOptions } from "./options.js";
import { Reconciler } from "./reconciler.js";
import { EstablishedRevoker } from "./revoker.js";
import { FileSource } from "./sources/file-source.js";
import { KubeSource } from "./sources/kube-source.js";

export class Agent {
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly table = new PolicyTable();
  reconciler!: Reconciler;
  source!: ClusterSource;
  applier!: KernelApplier;
  private server: Server | undefined;
  private healthServer: Server | undefined;
  private cniServer: Server | undefined;
  cni: CniAdmission | undefined;
  private cniKeeper: CniChainKeeper | undefined;
  private revoker: EstablishedRevoker | undefined;
  private nfqueue: NfqueueVerdicts | undefined;
  private nflog: NflogDenyLogs | undefined;
  private counters: KernelCounters | undefined;
  readonly liveness: Liveness;
  private statusTimer: NodeJS.Timeout | undefined;

  constructor(readonly opts: AgentOptions) {
    this.log = createLogger(
      opts.logLevel,
      opts.logFile ? pino.destination({ dest: opts.logFile, sync: false }) : undefined,
    );
    this.metrics = createMetrics();
    this.liveness = new Liveness({
      syncRunningSince: () => this.reconciler?.syncRunningSince(),
      onLag: (s) => this.metrics.loopLag.set(s),
    });
  }

  /** The health server is up: /healthz can tell the kubelet that start-up failed. */
  get servingHealth(): boolean {
    return this.server !== undefined || this.healthServer !== undefined;
  }

  async start(): Promise<void> {
    const o = this.opts;
    let netns: string | undefined;
    let keys: (() => Promise<Set<string>>) | undefined;
    if (o.lab) {
      const lab = await loadLab(o.lab);
      if (!lab)
        throw new Error(
          `no running lab named ${o.lab} (start one with: podwall lab up -f PATH --name ${o.lab})`,
        );
      netns = lab.nodeNetns;
      const name = o.lab;
      // Re-read each sync: pods can be added to a running lab.
      keys = async () => new Set((await loadLab(name))?.pods.map((p) => p.key) ?? []);
    }
    this.applier = new KernelApplier({ netns });
    const backend = await this.applier.detectBackend();
    // The one deny line and its one limit, for whichever dataplane reports denies.
    const denyLog = new DenyLog({
      log: this.log,
      ratePerSec: o.denyLogPerSecond,
      onSuppressed: () => this.metrics.denyLogsSuppressed.inc(),
    });
    if (o.dataplane === "nfqueue") {
      this.nfqueue = new NfqueueVerdicts({
        queueNum: o.queueNum,
        queueCount: o.queueThreads,
        failOpen: o.failOpen,
        netns,
        metrics: this.metrics,
        log: this.log,
        denyLog,
      });
    } else {
      this.counters = new KernelCounters({
        netns,
        backend,
        intervalMs: o.kernelCountersSeconds * 1000,
        metrics: this.metrics,
        log: this.log,
      });
      if (o.denyLogPodRate > 0)
        this.nflog = new NflogDenyLogs({
          group: o.nflogGroup,
          netns,
          table: this.table,
          denyLog,
          metrics: this.metrics,
          log: this.log,
        });
    }
    if (o.revokeEstablished)
      this.revoker = new EstablishedRevoker({
        table: this.table,
        netns,
        metrics: this.metrics,
        log: this.log,
      });
    this.reconciler = new Reconciler({
      table: this.table,
      applier: this.applier,
      local: new RoutedLocalPods({ nodeName: o.nodeName, keys, netns, log: this.log, metrics: this.metrics }),
      render: {
        dataplane: o.dataplane,
        queueNum: o.queueNum,
        queueCount: o.queueThreads,
        queueBypass: o.failOpen,
        denyAction: o.denyAction,
        serviceCIDRs: o.serviceCIDRs,
        denyLog: this.nflog
          ? { group: o.nflogGroup, ratePerSec: o.denyLogPodRate, burst: o.denyLogPodBurst }
          : undefined,
      },
      metrics: this.metrics,
      log: this.log,
      batchDelayMs: o.batchDelayMs,
      resyncIntervalMs: o.resyncSeconds * 1000,
      failClosedOnRejected: !o.source,
      beforeApply: this.nfqueue ? (t) => this.nfqueue!.publish(t) : undefined,
      rendered: this.nflog ? (d) => this.nflog!.learn(d.logIds) : undefined,
      afterSync: (_stats, desired) => {
        this.counters?.applied(desired);
        this.revoker?.request();
      },
    });
    this.source = o.source
      ? new FileSource(o.source, {
          maxFileBytes: o.sourceMaxFileBytes,
          onFileRejected: (_file, reason) => this.metrics.sourceFileRejections.inc({ reason }),
          onError: (e) => this.log.error({ err: e.message }, "folder source: rescan failed; still watching"),
        })
      : new KubeSource({
          kubeconfigPath: o.kubeconfig,
          nodeName: o.nodeName,
          logger: this.log,
          absentPollMs: o.crdPollSeconds * 1000,
        });
    this.liveness.start();
    this.statusTimer = setInterval(() => this.exportSourceStatus(), 2000);
    this.statusTimer.unref();
    const probe = {
      alive: () => this.liveness.check().alive,
      aliveDetail: () => this.liveness.check().reason,
      ready: () => this.reconciler.ready() && (this.nfqueue?.ready() ?? true),
      detail: () => this.readiness(),
    };
    this.metrics.setReadyProbe(probe.ready);
    if (o.metricsAddr) this.server = await startHealthServer(o.metricsAddr, this.metrics.registry, probe);
    if (o.healthAddr && o.healthAddr !== o.metricsAddr)
      this.healthServer = await startHealthServer(o.healthAddr, undefined, probe);
    this.log.info(
      {
        node: o.nodeName,
        source: o.source ? `folder ${o.source}` : "kubernetes",
        lab: o.lab,
        netns: netns ?? "(host)",
        backend,
        dataplane: o.dataplane,
        denyLogs: this.nflog
          ? `NFLOG group ${o.nflogGroup}`
          : o.dataplane === "nfqueue"
            ? "userspace"
            : "off",
        metrics: o.metricsAddr,
        health: o.healthAddr,
      },
      "podwall agent starting",
    );
    // Deny logs are not readiness: the reader starts (and retries) on its own.
    void this.nflog?.start();
    try {
      await this.startServing();
    } catch (e) {
      // The process stays up with its kernel state in force; /healthz now fails, so the kubelet
      // restarts the agent rather than leaving it alive and inert.
      if (this.servingHealth) {
        this.liveness.fatal(e as Error);
        this.log.error({ err: (e as Error).message }, "start-up failed; /healthz reports it");
      }
      throw e;
    }
  }

  private readiness(): string {
    const r = this.reconciler;
    const sync = r.ready()
      ? `last sync ok, ${r.lastStats?.rules ?? 0} rules`
      : r.lastError
        ? `last sync failed: ${r.lastError.message}`
        : "waiting for the first complete sync";
    return this.nfqueue ? `${sync}; ${this.nfqueue.detail()}` : sync;
  }

  /** Everything after the health server: the CNI socket, the chain keeper, the source. */
  private async startServing(): Promise<void> {
    const o = this.opts;
    let sink: ClusterSink = this.reconciler;
    if (o.cniSocket) {
      this.cni = new CniAdmission({
        reconciler: this.reconciler,
        log: this.log,
        waitMs: (o.cniWaitSeconds ?? AGENT_DEFAULTS.cniWaitSeconds) * 1000,
        // Beside the socket: a node directory that outlives the agent's container.
        hintsFile: join(dirname(o.cniSocket), "cni-hints.json"),
      });
      sink = this.cni;
      this.cniServer = await startCniServer(o.cniSocket, this.cni, this.metrics, this.log);
    }
    if (o.cniConfDir) {
      this.cniKeeper = new CniChainKeeper(o.cniConfDir, this.metrics, this.log);
      this.cniKeeper.start();
    }
    await this.source.start(sink);
  }

  private exportSourceStatus(): void {
    const st = this.source.status();
    this.metrics.apiConnected.set(st.connected ? 1 : 0);
    for (const [kind, n] of Object.entries(st.watchRestarts)) this.metrics.watchRestarts.set({ kind }, n);
  }

  /** Stop watching; leave the kernel as it is unless cleanup-on-exit was asked for. */
  async stop(): Promise<void> {
    this.log.info({ cleanup: this.opts.cleanupOnExit }, "stopping");
    await this.source?.stop();
    await this.reconciler?.stop();
    await this.revoker?.idle();
    await this.counters?.stop();
    await this.nflog?.stop();
    this.liveness.stop();
    if (this.statusTimer) clearInterval(this.statusTimer);
    this.server?.close();
    this.healthServer?.close();
    this.cniServer?.close();
    this.cniKeeper?.stop();
    if (this.opts.cleanupOnExit) {
      const removed = await this.applier.cleanup();
      this.log.info(removed, "removed podwall's kernel state");
    } else {
      this.log.info("kernel state left in place: enforcement continues until the next agent adopts it");
    }
    await this.nfqueue?.stop();
    this.log.flush?.();
  }
}
