/**
 * liveness: the watchdog behind /healthz: can the agent's main loop still make progress?
 *
 * Owns three signals, each of which makes the agent not alive:
 * - a fatal error recorded after the health server started (a start-up step that failed, such as
 *   a CNI socket on a read-only path; an uncaught exception): the process is up but will do nothing;
 * - an event-loop stall: a heartbeat timer measures how late it runs; a lateness over `stallMs`
 *   (the loop was blocked that long) is reported for `stallHoldMs` afterwards, so a probe that
 *   timed out during the stall is followed by failing ones rather than a clean bill;
 * - a wedged sync: one sync running for longer than `syncStallMs` (kernel commands hang).
 * Sync failures are not liveness failures: they show in /readyz and the metrics, not as restarts.
 * May not: restart or stop anything itself; the kubelet's liveness probe acts on /healthz.
 */
export interface LivenessOptions {
  heartbeatMs?: number;
  stallMs?: number;
  stallHoldMs?: number;
  syncStallMs?: number;
  /** When the sync in progress started (performance.now()), or undefined when none runs. */
  syncRunningSince?: () => number | undefined;
  /** The heartbeat's lateness, in seconds, each beat (a metric). */
  onLag?: (seconds: number) => void;
}

export class Liveness {
  private timer: NodeJS.Timeout | undefined;
  private lastBeat = performance.now();
  private stalledUntil = 0;
  private lastStallMs = 0;
  private fatalError: Error | undefined;
  private readonly heartbeatMs: number;
  private readonly stallMs: number;
  private readonly stallHoldMs: number;
  private readonly syncStallMs: number;

  constructor(private readonly opts: LivenessOptions = {}) {
    this.heartbeatMs = opts.heartbeatMs ?? 1000;
    this.stallMs = opts.stallMs ?? 10_000;
    this.stallHoldMs = opts.stallHoldMs ?? 60_000;
    this.syncStallMs = opts.syncStallMs ?? 120_000;
  }

  start(): void {
    this.lastBeat = performance.now();
    this.timer = setInterval(() => this.beat(), this.heartbeatMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  private beat(): void {
    const now = performance.now();
    const lateMs = Math.max(0, now - this.lastBeat - this.heartbeatMs);
    this.lastBeat = now;
    this.opts.onLag?.(lateMs / 1000);
    if (lateMs > this.stallMs) {
      this.lastStallMs = lateMs;
      this.stalledUntil = now + this.stallHoldMs;
    }
  }

  /** The loop cannot make progress any more (first error wins). */
  fatal(err: Error): void {
    this.fatalError ??= err;
  }

  /** Alive, or why not. */
  check(): { alive: boolean; reason: string } {
    const now = performance.now();
    if (this.fatalError) return { alive: false, reason: `fatal: ${this.fatalError.message}` };
    // Also a stall still in progress (answered only if the probe got through before the beat ran).
    const silentMs = now - this.lastBeat - this.heartbeatMs;
    if (silentMs > this.stallMs)
      return { alive: false, reason: `event loop stalled: no heartbeat for ${Math.round(silentMs)} ms` };
    if (now < this.stalledUntil)
      return { alive: false, reason: `event loop stalled for ${Math.round(this.lastStallMs)} ms recently` };
    const since = this.opts.syncRunningSince?.();
    if (since !== undefined && now - since > this.syncStallMs)
      return { alive: false, reason: `a sync has been running for ${Math.round((now - since) / 1000)} s` };
    return { alive: true, reason: "ok" };
  }
}
