/**
 * kernel-counters: per-policy verdict counts in the iptables dataplane, from the kernel's own rule
 * counters: podwall_policy_verdicts_total and podwall_audit_denials_total (what each counted rule
 * stands for is the renderer's RenderedFamily.counted), and podwall_deny_log_kernel_limited_total (the
 * PODWALL-DENY-LIMITED and -AUDIT-LIMITED chains).
 *
 * Owns: reading the counters every interval once the first sync is applied, and turning them into
 * metric increments. A rule is counted only while its hash in the kernel equals the rendered one at
 * the same place (so a read racing an apply counts nothing wrong). The first read is the baseline
 * (a restarted agent adopts counters with their history); a rule that appears later was written by
 * this agent, so it counts from zero; a counter that went back started over.
 * May not: change the kernel, or decide what a rule means.
 */
import { policyDisplay } from "../compiler/rule-model.js";
import { chainPackets, type OwnedCounters, readOwnedCounters } from "../dataplane/deny-log-counters.js";
import {
  AUDIT_LIMITED_CHAIN,
  counterDelta,
  DENY_LIMITED_CHAIN,
  type DenyLogEvent,
} from "../dataplane/deny-log-rules.js";
import type { RuleCount } from "../dataplane/log-attribution.js";
import type { DesiredState, RenderedFamily } from "../dataplane/render.js";
import { ruleHashOf } from "../dataplane/rule-layer.js";
import type { Logger } from "./log.js";
import type { Metrics } from "./metrics.js";

export interface KernelCountersOptions {
  netns?: string;
  backend: "nft" | "legacy";
  intervalMs: number;
  metrics: Metrics;
  log: Logger;
  /** How the counters are read (tests); default: iptables-save -c in the netns. */
  read?: () => Promise<OwnedCounters>;
}

/** Per family: chain -> per rule its hash and what it counts (only chains with counted rules). */
type Counted = Map<string, { hash: string; count: RuleCount | null }[]>;

function countedOf(f: RenderedFamily): Counted {
  const out: Counted = new Map();
  for (const [chain, counts] of f.counted) {
    const rules = f.chains.get(chain) ?? [];
    out.set(
      chain,
      counts.map((count, i) => ({ hash: ruleHashOf(rules[i] ?? "") ?? "?", count })),
    );
  }
  return out;
}

export class KernelCounters {
  private counted: { v4: Counted; v6: Counted } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private reading: Promise<void> | undefined;
  /** Rule key (family, chain, position, hash) -> packets at the last read. */
  private prev = new Map<string, number>();
  private limited: Record<DenyLogEvent, number | undefined> = { deny: undefined, "audit-deny": undefined };
  private first = true;
  private warned = false;

  constructor(private readonly opts: KernelCountersOptions) {}

  /** What the kernel now holds (after each successful apply); the first call starts the reads. */
  applied(d: DesiredState): void {
    this.counted = { v4: countedOf(d.v4), v6: countedOf(d.v6) };
    if (this.timer) return;
    this.timer = setInterval(() => void this.read(), this.opts.intervalMs);
    this.timer.unref();
    void this.read();
  }

  /** One read now (the timer's; tests and shutdown wait on it). */
  read(): Promise<void> {
    this.reading ??= this.readOnce().finally(() => {
      this.reading = undefined;
    });
    return this.reading;
  }

  private async readOnce(): Promise<void> {
    let c: OwnedCounters;
    try {
      c = await (
        this.opts.read ?? (() => readOwnedCounters({ netns: this.opts.netns, backend: this.opts.backend }))
      )();
    } catch (e) {
      if (!this.warned)
        this.opts.log.warn(
          { err: (e as Error).message },
          "could not read the kernel's rule counters; retrying",
        );
      this.warned = true;
      return;
    }
    this.warned = false;
    const m = this.opts.metrics;
    for (const [event, chain] of [
      ["deny", DENY_LIMITED_CHAIN],
      ["audit-deny", AUDIT_LIMITED_CHAIN],
    ] as const) {
      const now = chainPackets(c, chain);
      const d = counterDelta(this.limited[event], now);
      if (d > 0) m.denyLogKernelLimited.inc({ event }, d);
      this.limited[event] = now;
    }
    const next = new Map<string, number>();
    const sums = new Map<string, number>();
    for (const fam of ["v4", "v6"] as const) {
      for (const [chain, rules] of this.counted?.[fam] ?? []) {
        const kernel = c[fam].get(chain);
        if (!kernel || kernel.length !== rules.length) continue;
        rules.forEach((r, i) => {
          if (!r.count || kernel[i].hash !== r.hash) return;
          const key = `${fam} ${chain} ${i} ${r.hash}`;
          const now = kernel[i].packets;
          next.set(key, now);
          const prev = this.prev.get(key);
          const d = this.first ? 0 : prev === undefined ? now : counterDelta(prev, now);
          if (d <= 0) return;
          for (const p of r.count.policies) {
            const k = `${policyDisplay(p)}\u0000${r.count.direction}\u0000${r.count.result}`;
            sums.set(k, (sums.get(k) ?? 0) + d);
          }
        });
      }
    }
    this.prev = next;
    this.first = false;
    for (const [k, n] of sums) {
      const [policy, direction, result] = k.split("\u0000");
      if (result === "audit-deny") m.auditDenials.inc({ policy, direction }, n);
      else m.policyVerdicts.inc({ policy, direction, result }, n);
    }
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.reading;
  }
}
