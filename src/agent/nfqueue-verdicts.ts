/**
 * nfqueue-verdicts: the agent's side of the NFQUEUE dataplane.
 *
 * Owns: starting the verdict loop (in the node's or the lab's netns), publishing a table snapshot
 * on every table change before the kernel rules move, deny logs (one JSON line per denied new
 * connection, rate-limited by the one token bucket, with a count of suppressed lines, naming both ends, the
 * direction that denied and the policies isolating that side), and the userspace metrics: verdict
 * time histogram, verdicts by result and protocol, per-policy counters, cache hits, queue depth and
 * kernel/userspace drops from /proc/net/netfilter/nfnetlink_queue.
 * May not: decide packets here: the worker does, from its snapshot.
 */
import { decide } from "../compiler/engine.js";
import { type Direction, PROTO_NAMES, type ProtoNum } from "../compiler/model.js";
import type { PolicyTable } from "../compiler/table.js";
import { PolicyVerdictLoop } from "../dataplane/nfqueue/policy-loop.js";
import type { DenyEvent } from "../dataplane/nfqueue/protocol.js";
import { readAllQueueProcStats } from "../dataplane/nfqueue/queue.js";
import type { NfqStats } from "../dataplane/nfqueue/stats.js";
import type { Logger } from "./log.js";
import type { Metrics } from "./metrics.js";
import { TokenBucket } from "./token-bucket.js";

export interface NfqueueVerdictsOptions {
  queueNum: number;
  queueCount: number;
  failOpen: boolean;
  netns?: string;
  metrics: Metrics;
  log: Logger;
  denyLogPerSecond: number;
}

type Counters = { policies: [string, number][]; cacheHits: number; cacheMisses: number };

export class NfqueueVerdicts {
  private verdicts: PolicyVerdictLoop | undefined;
  private table: PolicyTable | undefined;
  private poll: NodeJS.Timeout | undefined;
  private last: NfqStats | undefined;
  private readonly denyLogs: TokenBucket;
  private suppressed = 0;

  constructor(private readonly opts: NfqueueVerdictsOptions) {
    this.denyLogs = new TokenBucket(opts.denyLogPerSecond);
    this.registerHistogram();
  }

  /**
   * Bind the queue with the first *complete* table. Started earlier, an empty table would answer
   * "not isolated" and accept everything; unbound, the kernel applies the configured fail mode.
   */
  private async start(table: PolicyTable): Promise<void> {
    this.table = table;
    const o = this.opts;
    this.verdicts = new PolicyVerdictLoop(table, {
      queueNum: o.queueNum,
      queueCount: o.queueCount,
      netns: o.netns,
      failOpen: o.failOpen,
      onDeny: (e) => this.onDeny(e),
      onDeciderCounters: (d) => this.onCounters(d as Counters),
      onError: (e) => o.log.error({ err: e.message }, "nfqueue verdict loop error"),
    });
    await this.verdicts.start();
    o.log.info(
      { queue: o.queueNum, queues: o.queueCount, failOpen: o.failOpen, pid: this.verdicts.loop.pid },
      "NFQUEUE verdict loop running",
    );
    this.poll = setInterval(() => void this.pollStats(), 2000);
    this.poll.unref();
  }

  /** Called before every kernel apply (the first one starts the loop): the worker gets the table first. */
  async publish(table: PolicyTable): Promise<void> {
    if (!this.verdicts) return this.start(table);
    this.verdicts.publish(table);
  }

  private onDeny(e: DenyEvent): void {
    if (!this.denyLogs.take()) {
      this.suppressed++;
      this.opts.metrics.denyLogsSuppressed.inc();
      return;
    }
    const proto = PROTO_NAMES[e.proto] ?? String(e.proto);
    const v = this.table
      ? decide(this.table, { src: e.src, dst: e.dst, proto: e.proto as ProtoNum, port: e.dport })
      : undefined;
    const side: Direction | "unknown" =
      v?.egress.result === "denied" ? "egress" : v?.ingress.result === "denied" ? "ingress" : "unknown";
    const policies = side === "egress" ? v!.egress.policies : side === "ingress" ? v!.ingress.policies : [];
    this.opts.log.info(
      {
        event: "deny",
        src: v?.src ?? e.src,
        srcIP: e.src,
        srcPort: e.srcPort,
        dst: v?.dst ?? e.dst,
        dstIP: e.dst,
        port: e.dport,
        protocol: proto,
        direction: side,
        policies,
        suppressedSinceLast: this.suppressed,
      },
      `denied ${v?.src ?? e.src} -> ${v?.dst ?? e.dst} ${e.dport}/${proto} by ${side} isolation (${policies.join(", ") || "no policy"})`,
    );
    this.suppressed = 0;
  }

  private onCounters(d: Counters): void {
    const m = this.opts.metrics;
    for (const [k, n] of d.policies) {
      const [policy, direction, result] = k.split("|");
      m.policyVerdicts.inc({ policy, direction, result }, n);
    }
    if (d.cacheHits) m.cacheLookups.inc({ result: "hit" }, d.cacheHits);
    if (d.cacheMisses) m.cacheLookups.inc({ result: "miss" }, d.cacheMisses);
  }

  private async pollStats(): Promise<void> {
    if (!this.verdicts) return;
    const m = this.opts.metrics;
    const s = this.verdicts.loop.stats();
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
    if (this.poll) clearInterval(this.poll);
    await this.verdicts?.stop();
  }
}
