/**
 * userspace: the agent's side of the NFQUEUE dataplane.
 *
 * Owns: starting the verdict loop (in the node's or the lab's netns), publishing a table snapshot
 * on every table change before the kernel rules move, deny logs (one JSON line per denied new
 * connection, rate-limited with a count of suppressed lines, naming both ends, the port, the
 * direction that denied and the policies isolating that side), and the userspace metrics: verdict
 * time histogram, verdicts by result and protocol, per-policy counters, cache hits, queue depth and
 * kernel/userspace drops from /proc/net/netfilter/nfnetlink_queue.
 * May not: decide packets here: the worker does, from its snapshot.
 */
import { decide } from "../compiler/engine.js";
import { PROTO_NAMES, type ProtoNum } from "../compiler/model.js";
import { takeSnapshot } from "../compiler/snapshot.js";
import type { PolicyTable } from "../compiler/table.js";
import { policyDeciderURL } from "../dataplane/nfqueue/decider-path.js";
import {
  type DenyEvent,
  type NfqStats,
  NfqueueVerdictLoop,
  readAllQueueProcStats,
} from "../dataplane/nfqueue/queue.js";
import type { Logger } from "./log.js";
import type { Metrics } from "./metrics.js";

export interface UserspaceOptions {
  queueNum: number;
  queueCount: number;
  failOpen: boolean;
  netns?: string;
  metrics: Metrics;
  log: Logger;
  denyLogPerSecond: number;
}

type Counters = { policies: [string, number][]; cacheHits: number; cacheMisses: number };

export class UserspaceVerdicts {
  private loop: NfqueueVerdictLoop | undefined;
  private table: PolicyTable | undefined;
  private generation = -1;
  private poll: NodeJS.Timeout | undefined;
  private last: NfqStats | undefined;
  private tokens: number;
  private lastRefill = Date.now();
  private suppressed = 0;

  constructor(private readonly o: UserspaceOptions) {
    this.tokens = o.denyLogPerSecond;
    this.registerHistogram();
  }

  /**
   * Bind the queue with the first *complete* table. Started earlier, an empty table would answer
   * "not isolated" and accept everything; unbound, the kernel applies the configured fail mode.
   */
  private async start(table: PolicyTable): Promise<void> {
    this.table = table;
    this.generation = table.generation;
    this.loop = new NfqueueVerdictLoop({
      queueNum: this.o.queueNum,
      queueCount: this.o.queueCount,
      netns: this.o.netns,
      failOpen: this.o.failOpen,
      deciderModule: policyDeciderURL(),
      table: takeSnapshot(table),
      onDeny: (e) => this.onDeny(e),
      onDeciderCounters: (d) => this.onCounters(d as Counters),
      onError: (e) => this.o.log.error({ err: e.message }, "userspace verdict loop error"),
    });
    await this.loop.start();
    this.o.log.info(
      { queue: this.o.queueNum, queues: this.o.queueCount, failOpen: this.o.failOpen, pid: this.loop.pid },
      "NFQUEUE verdict loop running",
    );
    this.poll = setInterval(() => void this.pollStats(), 2000);
    this.poll.unref();
  }

  /** Called before every kernel apply (the first one starts the loop): the worker gets the table first. */
  async publish(table: PolicyTable): Promise<void> {
    if (!this.loop) return this.start(table);
    if (table.generation === this.generation) return;
    this.generation = table.generation;
    this.loop.setTable(takeSnapshot(table));
  }

  private onDeny(e: DenyEvent): void {
    const m = this.o.metrics;
    const now = Date.now();
    this.tokens = Math.min(
      this.o.denyLogPerSecond,
      this.tokens + ((now - this.lastRefill) / 1000) * this.o.denyLogPerSecond,
    );
    this.lastRefill = now;
    if (this.tokens < 1) {
      this.suppressed++;
      m.denyLogsSuppressed.inc();
      return;
    }
    this.tokens--;
    const proto = PROTO_NAMES[e.proto] ?? String(e.proto);
    const v = this.table
      ? decide(this.table, { src: e.src, dst: e.dst, proto: e.proto as ProtoNum, port: e.dport })
      : undefined;
    const side =
      v?.egress.result === "denied" ? "egress" : v?.ingress.result === "denied" ? "ingress" : "unknown";
    const policies = side === "egress" ? v!.egress.policies : side === "ingress" ? v!.ingress.policies : [];
    this.o.log.info(
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
    const m = this.o.metrics;
    for (const [k, n] of d.policies) {
      const [policy, direction, result] = k.split("|");
      m.policyVerdicts.inc({ policy, direction, result }, n);
    }
    if (d.cacheHits) m.cacheLookups.inc({ result: "hit" }, d.cacheHits);
    if (d.cacheMisses) m.cacheLookups.inc({ result: "miss" }, d.cacheMisses);
  }

  private async pollStats(): Promise<void> {
    if (!this.loop) return;
    const m = this.o.metrics;
    const s = this.loop.stats();
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
      const first = this.o.queueNum;
      for (const q of await readAllQueueProcStats(this.o.netns)) {
        if (q.queueNum < first || q.queueNum >= first + this.o.queueCount) continue;
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
    this.o.metrics.registry.registerMetric({
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
    await this.loop?.stop();
  }
}
