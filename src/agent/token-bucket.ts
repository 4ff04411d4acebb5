/**
 * token-bucket: a rate limit with a burst, refilled continuously from the clock it is given.
 * The deny log is its user: at most `ratePerSec` lines a second on average, bursts up to `burst`.
 * May not: schedule anything.
 */
export class TokenBucket {
  private tokens: number;
  private refilledAt: number;

  constructor(
    private readonly ratePerSec: number,
    private readonly burst = ratePerSec,
    now = Date.now(),
  ) {
    this.tokens = burst;
    this.refilledAt = now;
  }

  /** Take one token if there is one. */
  take(now = Date.now()): boolean {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.refilledAt) / 1000) * this.ratePerSec);
    this.refilledAt = now;
    if (this.tokens < 1) return false;
    this.tokens--;
    return true;
  }
}
