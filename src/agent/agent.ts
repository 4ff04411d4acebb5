/**
 * agent: the per-node process: a cluster source feeding the reconciler, which programs the kernel;
 * the health/metrics server; the optional userspace (NFQUEUE) verdict loop; clean shutdown.
 *
 * Owns: wiring and lifecycle. Start-up adopts whatever PODWALL- state a previous run left (the
 * applier diffs against the kernel, never flushes first), so a restart opens no window. SIGTERM
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
import { startHealthServer } from "./health.js";
import { RoutedLocalPods } from "./local-pods.js";
import { createLogger, type Logger } from "./log.js";
import { createMetrics, type Metrics } from "./metrics.js";
import { Reconciler } from "./reconciler.js";
import { EstablishedRevoker } from "./revoker.js";
import { FileSource } from "./sources/file-source.js";
import { KubeSource } from "./sources/kube-source.js";
import { UserspaceVerdicts } from "./userspace.js";

export interface AgentOptions {
  nodeName: string;
  kubeconfig?: string;
  source?: string;
  lab?: string;
  metricsAddr?: string;
  /** A second listener with /healthz and /readyz only (probes on loopback, metrics elsewhere). */
  healthAddr?: string;
  dataplane: "iptables" | "nfqueue";
  queueNum: number;
  /** nfqueue: queues (and pinned verdict threads), one per CPU by default. */
  queueThreads: number;
  failOpen: boolean;
  cleanupOnExit: boolean;
  resyncSeconds: number;
  batchDelayMs: number;
  denyAction: "DROP" | "REJECT";
  serviceCIDRs: string[];
  logLevel?: string;
  /** Write logs to this file instead of stderr (the demo keeps the terminal for its matrix). */
  logFile?: string;
  denyLogPerSecond: number;
  /** Serve the chained CNI plugin on this unix socket (off when unset). */
  cniSocket?: string;
  /** How long a CNI ADD may wait for its pod to be known and programmed. */
  cniWaitSeconds?: number;
  /** Keep podwall-cni chained in the first conflist of this directory. */
  cniConfDir?: string;
  /** After a policy change, delete the conntrack entries of connections the new policy denies. */
  revokeEstablished?: boolean;
}

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
  private userspace: UserspaceVerdicts | undefined;
  private tick = Date.now();
  private ticker: NodeJS.Timeout | undefined;
  private statusTimer: NodeJS.Timeout | undefined;

  constructor(readonly opts: AgentOptions) {
    this.log = createLogger(
      opts.logLevel,
      opts.logFile ? pino.destination({ dest: opts.logFile, sync: false }) : undefined,
    );
    this.metrics = createMetrics();
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
    if (o.dataplane === "nfqueue") {
      this.userspace = new UserspaceVerdicts({
        queueNum: o.queueNum,
        queueCount: o.queueThreads,
        failOpen: o.failOpen,
        netns,
        metrics: this.metrics,
        log: this.log,
        denyLogPerSecond: o.denyLogPerSecond,
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
      },
      metrics: this.metrics,
      log: this.log,
      batchDelayMs: o.batchDelayMs,
      resyncIntervalMs: o.resyncSeconds * 1000,
      failClosedOnRejected: !o.source,
      beforeApply: this.userspace ? (t) => this.userspace!.publish(t) : undefined,
      afterSync: this.revoker ? () => this.revoker!.request() : undefined,
    });
    this.source = o.source
      ? new FileSource(o.source)
      : new KubeSource({
          kubeconfigPath: o.kubeconfig,
          nodeName: o.nodeName,
          logger: this.log,
        });
    this.ticker = setInterval(() => {
      this.tick = Date.now();
    }, 1000);
    this.ticker.unref();
    this.statusTimer = setInterval(() => this.exportSourceStatus(), 2000);
    this.statusTimer.unref();
    const probe = {
      alive: () => Date.now() - this.tick < 10_000,
      ready: () => this.reconciler.ready(),
      detail: () =>
        this.reconciler.ready()
          ? `last sync ok, ${this.reconciler.lastStats?.rules ?? 0} rules`
          : this.reconciler.lastError
            ? `last sync failed: ${this.reconciler.lastError.message}`
            : "waiting for the first complete sync",
    };
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
        metrics: o.metricsAddr,
        health: o.healthAddr,
      },
      "podwall agent starting",
    );
    let sink: ClusterSink = this.reconciler;
    if (o.cniSocket) {
      this.cni = new CniAdmission({
        reconciler: this.reconciler,
        log: this.log,
        waitMs: (o.cniWaitSeconds ?? 30) * 1000,
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
    if (this.ticker) clearInterval(this.ticker);
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
    await this.userspace?.stop();
    this.log.flush?.();
  }
}
