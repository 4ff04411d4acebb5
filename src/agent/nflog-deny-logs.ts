/**
 * nflog-deny-logs: the agent's side of deny logs in the iptables dataplane.
 *
 * Owns: running the NFLOG reader (dataplane/nflog) on the deny-log group, in the node's or the lab's
 * netns, and starting it again with backoff when it fails; the map from deny-log id to what decided
 * (the renderer hands it over before each apply; ids are content hashes and never change meaning, so
 * ids a newer render dropped are kept a while for records still in flight); turning each record into
 * the one deny line (deny-log.ts, whose token bucket is the agent's only line limit), naming the pods
 * that hold the addresses now; one audit line per connection (a connection both of whose ends' audit
 * chains would deny it is copied twice, egress first; the second copy is dropped here); the reader's
 * loss counters as metrics.
 * May not: decide or attribute anything itself: the id says what the kernel rule stood for.
 */
import type { PolicyTable } from "../compiler/table.js";
import { denyLogIdFromPrefix } from "../dataplane/deny-log-rules.js";
import type { LogAttribution } from "../dataplane/log-attribution.js";
import { NflogReader, type NflogRecord } from "../dataplane/nflog/reader.js";
import { backoffDelay } from "./backoff.js";
import { type DenyLog, entryOf } from "./deny-log.js";
import type { Logger } from "./log.js";
import type { Metrics } from "./metrics.js";

export interface NflogDenyLogsOptions {
  group: number;
  netns?: string;
  /** Names the pods that hold a record's addresses. */
  table: PolicyTable;
  denyLog: DenyLog;
  metrics: Metrics;
  log: Logger;
}

/** Ids no render has named for this long are forgotten. */
const ID_RETENTION_MS = 10 * 60_000;
/** Two copies of one connection's first packet arrive together; this window covers that. */
const AUDIT_DEDUP_MS = 1000;
const AUDIT_DEDUP_MAX = 8192;
const RESTART_BACKOFF = { initialMs: 500, maxMs: 10_000, jitter: 0.2 };

export class NflogDenyLogs {
  private reader: NflogReader | undefined;
  private readonly ids = new Map<string, { a: LogAttribution; seen: number }>();
  private readonly recentAudits = new Map<string, number>();
  private failures = 0;
  private retry: NodeJS.Timeout | undefined;
  private poll: NodeJS.Timeout | undefined;
  private lost = 0;
  private stopped = false;

  constructor(private readonly opts: NflogDenyLogsOptions) {}

  /** Bind the group; a failure is logged and retried with backoff (deny logs are not readiness). */
  async start(): Promise<void> {
    this.poll ??= setInterval(() => this.exportLoss(), 2000);
    this.poll.unref();
    const reader = new NflogReader({
      group: this.opts.group,
      netns: this.opts.netns,
      onRecords: (r) => this.onRecords(r),
      onError: (e) => this.failed(reader, e),
    });
    try {
      await reader.start();
    } catch (e) {
      this.failed(reader, e as Error);
      return;
    }
    if (this.stopped) return reader.stop();
    this.reader = reader;
    this.lost = 0;
    this.failures = 0;
    this.opts.log.info({ group: this.opts.group }, "deny logs: reading NFLOG");
  }

  private failed(reader: NflogReader, e: Error): void {
    if (this.stopped) return;
    if (this.reader === reader) {
      this.exportLoss();
      this.reader = undefined;
    }
    this.failures++;
    const retryInMs = backoffDelay(this.failures, RESTART_BACKOFF);
    this.opts.log.error(
      { err: e.message, group: this.opts.group, retryInMs },
      "deny logs: NFLOG reader failed; denies are still enforced, not logged, until it runs again",
    );
    this.retry = setTimeout(() => {
      this.retry = undefined;
      void this.start();
    }, retryInMs);
  }

  /** The ids of a render (before it is applied, so no record can arrive before its id is known). */
  learn(ids: ReadonlyMap<string, LogAttribution>): void {
    const now = performance.now();
    for (const [id, a] of ids) this.ids.set(id, { a, seen: now });
    for (const [id, e] of this.ids) if (now - e.seen > ID_RETENTION_MS) this.ids.delete(id);
  }

  private onRecords(records: NflogRecord[]): void {
    const m = this.opts.metrics;
    const now = performance.now();
    let attributed = 0;
    for (const r of records) {
      const id = denyLogIdFromPrefix(r.prefix);
      const a = id === undefined ? undefined : this.ids.get(id)?.a;
      if (!a) {
        // Another component's rule on this group, or an id from before this agent's first render.
        m.denyLogRecords.inc({ result: "unattributed" });
        continue;
      }
      attributed++;
      if (a.event === "audit-deny" && this.seenAudit(r, now)) continue;
      const t = this.opts.table;
      this.opts.denyLog.write(
        entryOf(
          a,
          { srcIP: r.src, srcPort: r.sport, dstIP: r.dst, port: r.dport, proto: r.proto },
          t.endpoint(r.src)?.key,
          t.endpoint(r.dst)?.key,
        ),
      );
    }
    if (attributed) m.denyLogRecords.inc({ result: "attributed" }, attributed);
  }

  /** True when this connection's audit line was written already (the other end's copy). */
  private seenAudit(r: NflogRecord, now: number): boolean {
    const key = `${r.src} ${r.sport} ${r.dst} ${r.dport} ${r.proto}`;
    const at = this.recentAudits.get(key);
    if (at !== undefined && now - at < AUDIT_DEDUP_MS) return true;
    if (this.recentAudits.size >= AUDIT_DEDUP_MAX)
      for (const [k, t] of this.recentAudits) if (now - t >= AUDIT_DEDUP_MS) this.recentAudits.delete(k);
    if (this.recentAudits.size < AUDIT_DEDUP_MAX) this.recentAudits.set(key, now);
    return false;
  }

  private exportLoss(): void {
    const s = this.reader?.stats();
    if (!s) return;
    const lost = s.seqLost + s.overflowDropped;
    if (lost > this.lost) this.opts.metrics.denyLogRecordsLost.inc(lost - this.lost);
    this.lost = lost;
  }

  /** Reading, for /readyz's detail. */
  get running(): boolean {
    return this.reader?.running === true;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retry) clearTimeout(this.retry);
    if (this.poll) clearInterval(this.poll);
    this.exportLoss();
    await this.reader?.stop();
    this.reader = undefined;
  }
}
