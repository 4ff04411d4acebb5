/**
 * bounded-runner: one async task run at a bounded frequency, as the reconciler's syncs and the
 * revoker's passes need it (after kube-network-policies' bounded-frequency runner, in our own shape).
 *
 * Owns the timing, never the work:
 * - `request(delayMs)` runs the task after `delayMs`; requests made while that timer waits join it.
 * - Never two runs at once: a request while a run is in progress makes exactly one more run after it
 *   (`delayMs` later), however many requests came in.
 * - At least `minIntervalMs` between the starts of two runs (default 0).
 * - A run that throws is retried after a capped exponential backoff (`retry`); without `retry` a
 *   failed run waits for the next request. Success resets the backoff.
 * May not: know what the task does, or swallow its failures silently (`onFailure` hears each one).
 */
import { type BackoffPolicy, backoffDelay } from "./backoff.js";

export interface BoundedRunnerOptions {
  task: () => Promise<void>;
  /** Default delay of request(), and of the extra run after a request that came in while running. */
  delayMs: number;
  minIntervalMs?: number;
  retry?: BackoffPolicy;
  /** A run failed: `attempt` counts consecutive failures; `retryInMs` is undefined without `retry`. */
  onFailure?: (err: Error, attempt: number, retryInMs: number | undefined) => void;
}

export class BoundedRunner {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private lastStart = Number.NEGATIVE_INFINITY;
  /** idle() callers waiting for a requested run to start. */
  private launchWaiters: (() => void)[] = [];
  /** Consecutive failed runs. */
  failures = 0;

  constructor(private readonly opts: BoundedRunnerOptions) {}

  /** Run the task `delayMs` from now (or once more after the current run); coalesces. */
  request(delayMs = this.opts.delayMs): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.timer) return;
    const wait = Math.max(delayMs, this.lastStart + (this.opts.minIntervalMs ?? 0) - performance.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.launch();
    }, wait);
  }

  /** Run now (after the run in progress, if any) and wait for it; a waiting timer is cancelled. */
  async runNow(): Promise<void> {
    while (this.running) await this.running;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.launch();
    await this.running;
  }

  /** Resolves when no run is in progress or asked for (a requested run is waited for). */
  async idle(): Promise<void> {
    for (;;) {
      if (this.running) await this.running;
      else if (this.timer) await new Promise<void>((resolve) => this.launchWaiters.push(resolve));
      else return;
    }
  }

  /** No more runs; waits for the one in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    for (const w of this.launchWaiters.splice(0)) w();
    await this.idle();
  }

  private launch(): void {
    this.lastStart = performance.now();
    let retryInMs: number | undefined;
    this.running = this.opts
      .task()
      .then(
        () => {
          this.failures = 0;
        },
        (e: unknown) => {
          this.failures++;
          const err = e instanceof Error ? e : new Error(String(e));
          retryInMs = this.opts.retry ? backoffDelay(this.failures, this.opts.retry) : undefined;
          this.opts.onFailure?.(err, this.failures, retryInMs);
        },
      )
      .finally(() => {
        this.running = undefined;
        const delay = retryInMs ?? (this.again ? this.opts.delayMs : undefined);
        this.again = false;
        if (delay !== undefined) this.request(delay);
      });
    for (const w of this.launchWaiters.splice(0)) w();
  }
}
