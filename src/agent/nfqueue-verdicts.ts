/**
 * nfqueue-verdicts: the agent's side of the NFQUEUE dataplane.
 *
 * Owns: starting the verdict loop (in the node's or the lab's netns), publishing a table snapshot
 * on every table change before the kernel rules move, deny logs (one JSON line per denied, or audit
 * denied, new connection through the agent's DenyLog, whose one token bucket rate-limits them; each
 * line says what the worker's own verdict said: the ends, the side that denied, its policies, tier
 * and rule), and the userspace metrics: verdict time histogram, verdicts by result and protocol,
 * per-policy and audit counters, cache hits, queue depth and kernel/userspace drops from
 * /proc/net/netfilter/nfnetlink_queue.
 * May not: decide packets, or judge a reported packet again: the worker decides, from its snapshot.
 */
import { policyDisplay } from "../compiler/rule-model.js";
import type { PolicyTable } from "../compiler/table.js";
import type { DenyReport } from "../dataplane/nfqueue/policy-decider.js";
import { PolicyVerdictLoop } from "../dataplane/nfqueue/policy-loop.js";
import type { DenyEvent } from "../dataplane/nfqueue/protocol.js";
import { readAllQueueProcStats } from "../dataplane/nfqueue/queue.js";
import { mergeStats, type NfqStats } from "../dataplane/nfqueue/stats.js";
import { backoffDelay } from "./backoff.js";
import { type DenyLog, entryOf } from "./deny-log.js";
import type { Logger } from "./log.js";
import type { Metrics } from "./metrics.js";

export interface NfqueueVerdictsOptions {
  queueNum: number;
  queueCount: number;
  failOpen: boolean;
  netns?: string;
  metrics: Metrics;
  log: Logger;
  /** The agent's one deny line and its rate limit. */
  denyLog: DenyLog;
}

type Counters = { policies: [string, number][]; cacheHits: number; cacheMisses: number };

/** Restart backoff of the verdict process: every retry within about a second. */
const RESTART_BACKOFF = { initialMs: 200, maxMs: 1000, jitter: 0.2 };
/** A process that stayed bound this long resets the backoff when it dies. */
const STABLE_MS = 10_000;

export class NfqueueVerdicts {
  /** The verdict process bound to every queue, if one is. */
  private current: PolicyVerdictLoop | undefined;
  private starting: Promise<void> | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private table: PolicyTable | undefined;
  private failures = 0;
  private boundAt = 0;
  private lastFailure: string | undefined;
  private stopped = false;
  private poll: NodeJS.Timeout | undefined;
  /** Counters of verdict processes that have ended, so the exported totals never go back. */
  private carried: NfqStats | undefined;
  private last: NfqStats | undefined;
  constructor(private readonly opts: NfqueueVerdictsOptions) {
    this.registerHistogram();
    opts.metrics.nfqueueBound.set(0);
  }

  /** A verdict process is bound to every queue (the runner reports ready only then) and still runs. */
  ready(): boolean {
    return this.current?.loop.running === true;
  }

  /** For /readyz: why not ready. */
  detail(): string {
    if (this.ready()) return "nfqueue verdict process bound";
    if (this.starting) return "nfqueue verdict process starting";
    return `nfqueue verdict process not bound${this.lastFailure ? ` (${this.lastFailure}); retrying` : ""}`;
  }

  /**
   * Called before every kernel apply: hands the worker the table. The first call starts the verdict
   * process with the first *complete* table (started earlier, an empty table would answer "not
   * isolated" and accept everything; unbound, the kernel applies the configured fail mode). It never
   * throws: a process that cannot start (its queue still held by a previous agent's) is retried with
   * backoff, and readiness stays false meanwhile.
   */
  async publish(table: PolicyTable): Promise<void> {
    this.table = table;
    if (this.current) return this.current.publish(table);
    if (!this.starting && !this.retryTimer && !this.stopped) await this.launch();
  }

  private launch(): Promise<void> {
    const o = this.opts;
    const loop: PolicyVerdictLoop = new PolicyVerdictLoop(this.table!, {
      queueNum: o.queueNum,
      queueCount: o.queueCount,
      netns: o.netns,
      failOpen: o.failOpen,
      onDeny: (e) => this.onDeny(e),
      onDeciderCounters: (d) => this.onCounters(d as Counters),
      onError: (e) => o.log.error({ err: e.message }, "nfqueue verdict loop error"),
      onExit: (e) => this.exited(loop, e),
    });
    this.starting = loop
      .start()
      .then(
        async () => {
          if (this.stopped) return loop.stop();
          this.current = loop;
          this.boundAt = performance.now();
          this.lastFailure = undefined;
          o.metrics.nfqueueBound.set(1);
          o.log.info(
            {
              queue: o.queueNum,
              queues: o.queueCount,
              failOpen: o.failOpen,
              pid: loop.loop.pid,
              restarts: this.failures,
            },
            "NFQUEUE verdict loop running",
          );
          // The table may have moved while the process started.
          loop.publish(this.table!);
          this.poll ??= setInterval(() => void this.pollStats(), 2000);
          this.poll.unref();
        },
        (e: unknown) => this.failed(e as Error, "could not start"),
      )
      .finally(() => {
        this.starting = undefined;
      });
    return this.starting;
  }

  /** The bound process ended on its own (a worker died, the process was killed). */
  private exited(loop: PolicyVerdictLoop, e: Error): void {
    if (loop !== this.current) return;
    this.current = undefined;
    this.opts.metrics.nfqueueBound.set(0);
    this.carried = mergeStats([...(this.carried ? [this.carried] : []), loop.loop.stats()]);
    if (performance.now() - this.boundAt >= STABLE_MS) this.failures = 0;
    this.failed(e, "exited");
  }

  private failed(e: Error, what: string): void {
    if (this.stopped) return;
    this.failures++;
    this.lastFailure = `${what}: ${e.message.split("\n")[0]}`;
    const retryInMs = backoffDelay(this.failures, RESTART_BACKOFF);
    this.opts.log.error(
      { err: e.message, attempt: this.failures, retryInMs, failOpen: this.opts.failOpen },
      `NFQUEUE verdict process ${what}; restarting it (meanwhile the rules' ${this.opts.failOpen ? "fail-open" : "fail-closed"} mode applies)`,
    );
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (this.stopped) return;
      this.opts.metrics.nfqueueRestarts.inc();
      void this.launch();
    }, retryInMs);
  }

  private onDeny(e: DenyEvent): void {
    const flow = { srcIP: e.src, srcPort: e.srcPort, dstIP: e.dst, port: e.dport, proto: e.proto };
    const r = e.report as DenyReport | undefined;
    this.opts.denyLog.write(
      r
        ? entryOf(r, flow, r.src, r.dst)
        : // A decider without reports: say what is known.
          { ...flow, event: e.event, direction: "unknown", policies: [] },
    );
  }

  private onCounters(d: Counters): void {
    const m = this.opts.metrics;
    for (const [k, n] of d.policies) {
      const [key, direction, result] = k.split("|");
      const policy = policyDisplay(key);
      if (result === "audit-deny") m.auditDenials.inc({ policy, direction }, n);
      else m.policyVerdicts.inc({ policy, direction, result }, n);
    }
    if (d.cacheHits) m.cacheLookups.inc({ result: "hit" }, d.cacheHits);
    if (d.cacheMisses) m.cacheLookups.inc({ result: "miss" }, d.cacheMisses);
  }

  /** Counters of every verdict process so far (the ended ones carried). */
  private totals(): NfqStats | undefined {
    const parts = [this.carried, this.current?.loop.stats()].filter((x): x is NfqStats => x !== undefined);
    return parts.length ? mergeStats(parts) : undefined;
  }

  private async pollStats(): Promise<void> {
    const s = this.totals();
    if (!s) return;
    const m = this.opts.metrics;
    const prev = this.last;
    for (const [proto, c] of Object.entries(s.byProto)) {
      const pa = prev?.byProto[proto as keyof NfqStats["byProto"]];
      if (c.accepted - (pa?.accepted ?? 0) > 0)
        m.verdicts.inc({ result: "accept", protocol: proto }, c.accepted - (pa?.accepted ?? 0));
      if (c.dropped - (pa?.dropped ?? 0) > 0)
        m.verdicts.inc({ result: "drop", protocol: proto }, c.dropped - (pa?.dropped ?? 0));
    }
    this.last = s;
    try {
      const first = this.opts.queueNum;
      for (const q of await readAllQueueProcStats(this.opts.netns)) {
        if (q.queueNum < first || q.queueNum >= first + this.opts.queueCount) continue;
        const queue = String(q.queueNum);
        m.queueDepth.set({ queue }, q.queueTotal);
        m.queueDropped.set({ queue }, q.queueDropped);
        m.userDropped.set({ queue }, q.userDropped);
      }
    } catch {
      // The proc file is only there once a queue is bound; the next poll tries again.
    }
  }

  /** The worker keeps its own histogram; export it as a Prometheus histogram without re-observing. */
  private registerHistogram(): void {
    const name = "podwall_verdict_duration_microseconds";
    const help =
      "Userspace time per queued packet: header parse and decision, in microseconds (the verdict syscall, where the kernel reinjects the packet, is excluded)";
    const self = this;
    this.opts.metrics.registry.registerMetric({
      name,
      help,
      type: "histogram",
      aggregator: "sum",
      async get() {
        const l = self.last?.latency;
        const values: { value: number; labels: Record<string, string | number>; metricName: string }[] = [];
        let cum = 0;
        (l?.boundsUs ?? []).forEach((b, i) => {
          cum += l!.counts[i];
          values.push({
            value: cum,
            labels: { le: b === Number.POSITIVE_INFINITY ? "+Inf" : b },
            metricName: `${name}_bucket`,
          });
        });
        values.push({ value: l?.sumUs ?? 0, labels: {}, metricName: `${name}_sum` });
        values.push({ value: l?.count ?? 0, labels: {}, metricName: `${name}_count` });
        return { name, help, type: "histogram", aggregator: "sum", values };
      },
      reset() {},
    } as never);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.poll) clearInterval(this.poll);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    await this.starting;
    await this.current?.stop();
    this.current = undefined;
  }
}
