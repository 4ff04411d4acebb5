/**
 * cli/queue-options: the NFQUEUE numbering flags shared by `agent` and `render` (`--queue-num`,
 * `--queue-threads`), so the rules and the verdict threads always agree on which queues exist.
 * Owns: parsing and range checks of the two flags (usage errors name the flag), with the defaults of
 * nfqueue/defaults. May not: start or program anything.
 */
import { DEFAULT_QUEUE_NUM, defaultQueueThreads } from "../dataplane/nfqueue/defaults.js";
import { UsageError } from "./errors.js";

export interface QueueOptions {
  queueNum: number;
  queueThreads: number;
}

/** The renderer's names for the same two numbers. */
export function queueRenderOptions(q: QueueOptions): { queueNum: number; queueCount: number } {
  return { queueNum: q.queueNum, queueCount: q.queueThreads };
}

export function parseQueueOptions(num: string | undefined, threads: string | undefined): QueueOptions {
  const queueNum = Number(num ?? DEFAULT_QUEUE_NUM);
  if (!Number.isInteger(queueNum) || queueNum < 0 || queueNum > 65535)
    throw new UsageError(`--queue-num must be an integer from 0 to 65535, got ${num}`);
  const queueThreads = threads === undefined ? defaultQueueThreads() : Number(threads);
  if (!Number.isInteger(queueThreads) || queueThreads < 1 || queueThreads > 64)
    throw new UsageError(`--queue-threads must be an integer from 1 to 64, got ${threads}`);
  if (queueNum + queueThreads - 1 > 65535)
    throw new UsageError(`--queue-num ${queueNum} with ${queueThreads} threads runs past queue 65535`);
  return { queueNum, queueThreads };
}
