/**
 * nfqueue/policy-loop: the NFQUEUE verdict loop deciding from podwall's compiled table: the one place
 * that sets a loop up with the production decider and feeds it table snapshots (the agent, the lab's
 * `probe --dataplane nfqueue`, the e2e harness and the benchmark all start it here).
 *
 * Owns: the decider module, snapshotting a table on each new generation, and waiting for a table to
 * be in force. May not: log, export metrics or restart anything (the agent supervises it).
 */
import { takeSnapshot } from "../../compiler/snapshot.js";
import type { PolicyTable } from "../../compiler/table.js";
import { policyDeciderURL } from "./decider-path.js";
import { defaultQueueThreads } from "./defaults.js";
import { NfqueueVerdictLoop, type NfqueueVerdictLoopOptions } from "./queue.js";

export type PolicyVerdictLoopOptions = Omit<NfqueueVerdictLoopOptions, "deciderModule" | "table">;

export class PolicyVerdictLoop {
  readonly loop: NfqueueVerdictLoop;
  private generation: number;

  /** Not started: the queue is bound by start(), with `table` as the first snapshot. */
  constructor(table: PolicyTable, opts: PolicyVerdictLoopOptions) {
    this.generation = table.generation;
    this.loop = new NfqueueVerdictLoop({
      ...opts,
      deciderModule: policyDeciderURL(),
      table: takeSnapshot(table),
    });
  }

  start(): Promise<void> {
    return this.loop.start();
  }

  /** Hand the worker the table's current state if it changed; returns at once. */
  publish(table: PolicyTable): void {
    if (table.generation === this.generation) return;
    this.generation = table.generation;
    this.loop.setTable(takeSnapshot(table));
  }

  /** Publish the table's current state and wait until the worker decides from it. */
  async update(table: PolicyTable): Promise<void> {
    this.publish(table);
    await this.loop.tableSynced();
  }

  stop(): Promise<void> {
    return this.loop.stop();
  }
}

/** A started loop bound in `netns` (a lab node): `queueCount` queues from `queueNum`. */
export async function startPolicyVerdictLoop(
  netns: string,
  table: PolicyTable,
  queueNum: number,
  failOpen: boolean,
  onDeny?: NfqueueVerdictLoopOptions["onDeny"],
  queueCount = defaultQueueThreads(),
): Promise<PolicyVerdictLoop> {
  const l = new PolicyVerdictLoop(table, { queueNum, queueCount, netns, failOpen, onDeny });
  await l.start();
  return l;
}
