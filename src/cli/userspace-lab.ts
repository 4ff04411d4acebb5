/**
 * cli/userspace-lab: the NFQUEUE verdict loop for a lab node (used by `lab probe --dataplane
 * nfqueue` and the e2e suite): started inside the node's netns, fed table snapshots.
 * May not: hold policy logic: the worker decides from the snapshot with the shared engine.
 */
import { takeSnapshot } from "../compiler/snapshot.js";
import type { PolicyTable } from "../compiler/table.js";
import { policyDeciderURL } from "../dataplane/nfqueue/decider-path.js";
import { type DenyEvent, defaultQueueThreads, NfqueueVerdictLoop } from "../dataplane/nfqueue/queue.js";

export interface UserspaceHandle {
  loop: NfqueueVerdictLoop;
  /** Publish the table's current state and wait until the worker decides from it. */
  update(table: PolicyTable): Promise<void>;
  stop(): Promise<void>;
}

export async function startUserspaceInNetns(
  netns: string,
  table: PolicyTable,
  queueNum: number,
  failOpen: boolean,
  onDeny?: (e: DenyEvent) => void,
  queueCount = defaultQueueThreads(),
): Promise<UserspaceHandle> {
  const loop = new NfqueueVerdictLoop({
    queueNum,
    queueCount,
    netns,
    failOpen,
    deciderModule: policyDeciderURL(),
    table: takeSnapshot(table),
    onDeny,
  });
  await loop.start();
  let generation = table.generation;
  return {
    loop,
    async update(t: PolicyTable) {
      if (t.generation === generation) return;
      generation = t.generation;
      loop.setTable(takeSnapshot(t));
      await loop.tableSynced();
    },
    stop: () => loop.stop(),
  };
}
