/**
 * backoff: capped exponential delays for retries (the kube source's restarts, the reconciler's
 * failed syncs). Jitter spreads the retries of many nodes after a shared outage.
 * May not: schedule anything; it only computes delays.
 */
export interface BackoffPolicy {
  initialMs: number;
  maxMs: number;
  /** Spread each delay uniformly over ±jitter of itself (0.2: 80-120 %). Default 0. */
  jitter?: number;
}

/** Delay before retry number `attempt` (1-based): initialMs doubling up to maxMs. */
export function backoffDelay(attempt: number, p: BackoffPolicy): number {
  const base = Math.min(p.maxMs, p.initialMs * 2 ** Math.min(Math.max(0, attempt - 1), 30));
  const j = p.jitter ?? 0;
  return j > 0 ? Math.round(base * (1 - j + Math.random() * 2 * j)) : base;
}
