/**
 * deny-log: the one JSON line for a denied (or, in audit mode, would-be denied) new connection, from
 * either dataplane, and the one rate limit in front of it.
 *
 * Line: {event, src, srcIP, srcPort, dst, dstIP, port, protocol, direction, policies, [tier, rule,
 * action], suppressedSinceLast} plus the logger's own fields (level, time, msg). `src`/`dst` name the
 * pod ("namespace/name") or repeat the address when no pod has it; `policies` are the deciding
 * policies as "namespace/name" (NetworkPolicy) or "name" (cluster-scoped); tier, rule and action
 * appear only when the caller knows them.
 * Rate limit: one token bucket for every line of the agent (deny and audit-deny alike); a line
 * over the limit is counted (`onSuppressed`) and the next line written says how many were skipped.
 * May not: decide or attribute anything; callers pass what the dataplane's verdict said.
 */
import { performance } from "node:perf_hooks";
import { PROTO_NAMES } from "../compiler/model.js";

export type DenyEventKind = "deny" | "audit-deny";
export type Tier = "admin" | "namespaced" | "baseline";

/** What a caller knows about one denied new connection. */
export interface DenyEntry {
  event: DenyEventKind;
  /** Source pod "namespace/name", or undefined when no known pod has the address. */
  src?: string;
  srcIP: string;
  srcPort: number;
  dst?: string;
  dstIP: string;
  /** Destination port (0 for protocols without ports). */
  port: number;
  /** IP protocol number. */
  proto: number;
  direction: "ingress" | "egress";
  policies: readonly string[];
  tier?: Tier;
  rule?: { index: number; name?: string };
  action?: string;
}

/** The fields of the written line (the logger adds level, time and msg). */
export interface DenyLine {
  event: DenyEventKind;
  src: string;
  srcIP: string;
  srcPort: number;
  dst: string;
  dstIP: string;
  port: number;
  protocol: string;
  direction: "ingress" | "egress";
  policies: string[];
  tier?: Tier;
  rule?: { index: number; name?: string };
  action?: string;
  suppressedSinceLast: number;
}

/** The line's fields, in the documented order; optional ones only when known. */
export function denyLine(e: DenyEntry, suppressedSinceLast: number): DenyLine {
  return {
    event: e.event,
    src: e.src ?? e.srcIP,
    srcIP: e.srcIP,
    srcPort: e.srcPort,
    dst: e.dst ?? e.dstIP,
    dstIP: e.dstIP,
    port: e.port,
    protocol: PROTO_NAMES[e.proto] ?? String(e.proto),
    direction: e.direction,
    policies: [...e.policies],
    ...(e.tier ? { tier: e.tier } : {}),
    ...(e.rule ? { rule: { ...e.rule } } : {}),
    ...(e.action ? { action: e.action } : {}),
    suppressedSinceLast,
  };
}

/** The human half of the line. */
export function denyMessage(l: DenyLine): string {
  const what = l.event === "audit-deny" ? "would deny (audit)" : "denied";
  const by = l.policies.length ? l.policies.join(", ") : "no policy";
  return `${what} ${l.src} -> ${l.dst} ${l.port}/${l.protocol} on ${l.direction} (${by})`;
}

/**
 * Token bucket: `ratePerSec` tokens a second, holding at most `burst` (default: one second's worth),
 * full at start. Time from `now` in ms (monotonic).
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    readonly ratePerSec: number,
    readonly burst = ratePerSec,
    private readonly now: () => number = () => performance.now(),
  ) {
    if (!(ratePerSec > 0) || !(burst >= 1))
      throw new Error(`token bucket: rate ${ratePerSec}/s, burst ${burst}`);
    this.tokens = burst;
    this.last = now();
  }

  /** Take one token if there is one. */
  take(): boolean {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) * this.ratePerSec) / 1000);
    this.last = t;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

export interface DenyLogOptions {
  /** Where lines go: pino's `info(object, message)`. */
  log: { info(obj: object, msg: string): void };
  /** Lines per second, node-wide. */
  ratePerSec: number;
  /** Lines at once after a quiet period (default: ratePerSec). */
  burst?: number;
  /** Called for each line the limit suppressed (the agent counts podwall_deny_logs_suppressed_total). */
  onSuppressed?: () => void;
  /** Monotonic ms clock (tests). */
  now?: () => number;
}

export class DenyLog {
  private readonly bucket: TokenBucket;
  private suppressed = 0;
  private written = 0;
  private suppressedTotal = 0;

  constructor(private readonly o: DenyLogOptions) {
    this.bucket = new TokenBucket(o.ratePerSec, o.burst ?? o.ratePerSec, o.now);
  }

  /** Write the entry's line unless the limit says no; returns the line written, if any. */
  write(e: DenyEntry): DenyLine | undefined {
    if (!this.bucket.take()) {
      this.suppressed++;
      this.suppressedTotal++;
      this.o.onSuppressed?.();
      return undefined;
    }
    const line = denyLine(e, this.suppressed);
    this.suppressed = 0;
    this.written++;
    this.o.log.info(line, denyMessage(line));
    return line;
  }

  stats(): { written: number; suppressed: number } {
    return { written: this.written, suppressed: this.suppressedTotal };
  }
}
