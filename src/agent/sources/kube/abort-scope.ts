/**
 * kube/abort-scope: the kube source's lifetime as seen by its requests: in-flight requests and
 * pacing sleeps register here and are all aborted by stop(), including ones opened while stopping.
 * May not: do I/O.
 */
export class AbortScope {
  private stoppedFlag = false;
  private readonly live = new Set<AbortController>();
  /** Aborted on stop(): list requests combine it with their own timeout. */
  readonly signal: AbortSignal;
  private readonly ctl = new AbortController();

  constructor() {
    this.signal = this.ctl.signal;
  }

  get stopped(): boolean {
    return this.stoppedFlag;
  }

  track(c: AbortController): void {
    if (this.stoppedFlag) c.abort();
    else this.live.add(c);
  }

  untrack(c: AbortController): void {
    this.live.delete(c);
  }

  /** Resolves after `ms`, or at once when the scope stops. */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const c = new AbortController();
      const t = setTimeout(() => {
        this.untrack(c);
        resolve();
      }, ms);
      c.signal.addEventListener("abort", () => {
        clearTimeout(t);
        resolve();
      });
      this.track(c);
    });
  }

  /** Abort everything registered now. */
  abortAll(): void {
    for (const c of this.live) c.abort();
    this.live.clear();
  }

  stop(): void {
    this.stoppedFlag = true;
    this.ctl.abort();
    this.abortAll();
  }
}
