/**
 * nfqueue/defaults: the queue numbering every part agrees on (rules, verdict threads, CLI flags, the
 * lab): the first queue number, and one queue per CPU by default.
 * May not: do anything but compute defaults.
 */
import { availableParallelism } from "node:os";

/** The first NFQUEUE number podwall uses unless told otherwise (`--queue-num`). */
export const DEFAULT_QUEUE_NUM = 100;

/**
 * Worker threads (and queues) for the verdict loop by default: one per CPU, so each CPU's packets
 * wake a thread on that CPU; at most 8 (each holds a decider and its cache).
 */
export function defaultQueueThreads(): number {
  return Math.max(1, Math.min(8, availableParallelism()));
}
