/**
 * protocol: the messages between the main process (queue.ts), the runner child and its worker.
 *
 * Owns: message shapes only. Parent<->runner messages travel over a Node IPC channel with
 * "advanced" (structured clone) serialization, so tables may hold Maps, Sets and typed arrays.
 * May not: contain logic or import runtime modules (constants only).
 */
import type { MessagePort } from "node:worker_threads";
import type { NfqStats } from "./stats.js";

export interface VerdictConfig {
  /** The first queue; worker i binds queueNum + i. */
  queueNum: number;
  /**
   * Queues (and worker threads), >= 1. With more than one the rules spread new connections by CPU
   * (`--queue-balance --queue-cpu-fanout`) and worker i is pinned to the CPUs whose packets land
   * on its queue, so the thread a packet wakes runs where the packet was processed.
   */
  queueCount: number;
  /** File URL of an ES module exporting `createDecider(table)`. */
  deciderModule: string;
  table: unknown;
  /** Generation of `table` (0 unless the parent restarted after table updates). */
  generation: number;
  /** Verdict for packets that cannot be parsed or decided, and the kernel's queue-full behaviour. */
  failOpen: boolean;
  maxLen: number;
  copyRange: number;
  rcvBufBytes: number;
}

export interface DenyEvent {
  type: "deny";
  /** deny: the packet was dropped; audit-deny: accepted, but the decider says an audit policy would deny it. */
  event: "deny" | "audit-deny";
  /** What decided, as the decider module's optional `reportOf(result)` described it: the worker's own verdict. */
  report?: unknown;
  src: string;
  dst: string;
  proto: number;
  dport: number;
  srcPort: number;
}

/** A decision: `audit` truthy on an allowed packet reports it as an audit deny. */
export type Decider = (
  src: string,
  dst: string,
  proto: number,
  dport: number,
) => { allowed: boolean; audit?: unknown };

/** Parent -> runner. */
export type ToRunner =
  | { type: "start"; config: VerdictConfig }
  | { type: "table"; table: unknown; generation: number }
  | { type: "stats"; requestId: number }
  | { type: "stop" };

/** Runner -> parent. Worker -> runner uses the same shapes (the runner forwards them). */
export type FromRunner =
  | { type: "ready"; pid: number; warnings: string[] }
  | { type: "denies"; events: DenyEvent[] }
  | { type: "table-applied"; generation: number; error?: string }
  | { type: "stats"; stats: NfqStats; requestId?: number }
  /** What the decider module's optional `drainCounters()` returned (about once a second). */
  | { type: "decider-counters"; data: unknown }
  | { type: "error"; message: string; fatal: boolean }
  | { type: "stopped"; stats: NfqStats };

/** Runner -> worker, through a MessagePort the worker polls between packets. */
export interface TableUpdate {
  table: unknown;
  generation: number;
}

/** workerData of the verdict worker. */
export interface WorkerInit {
  config: VerdictConfig;
  /** Which of the config's queues this worker serves (0-based). */
  index: number;
  /** Float64 counters, layout in stats.ts; the worker is the only writer. */
  counters: SharedArrayBuffer;
  /** Int32 [stop flag, tables posted]; the runner bumps the count after posting a table. */
  control: SharedArrayBuffer;
  tablePort: MessagePort;
}
export const CTL_STOP = 0;
export const CTL_MAILBOX = 1;
