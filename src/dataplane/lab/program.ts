/**
 * lab/program: programs a lab node with a compiled table through the real renderer and applier, with
 * local pods found by route lookup exactly as the agent finds them.
 * May not: build or remove lab namespaces (lab.ts does).
 */
import type { PolicyTable } from "../../compiler/table.js";
import { type ApplyStats, KernelApplier } from "../apply.js";
import { DEFAULT_QUEUE_NUM, defaultQueueThreads } from "../nfqueue/defaults.js";
import { type LocalPod, renderNode } from "../render.js";
import { podInterfaces } from "../routes.js";
import type { LabState } from "./types.js";

/** Local pods of a lab, with interfaces found by route lookup exactly as the agent does it. */
export async function labLocalPods(lab: LabState): Promise<LocalPod[]> {
  const ifs = await podInterfaces(
    lab.pods.map((p) => p.ips),
    lab.nodeNetns,
  );
  return lab.pods.flatMap((p, i) =>
    ifs[i] ? [{ key: p.key, hostIf: ifs[i]!.hostIf, bridged: ifs[i]!.bridged }] : [],
  );
}

/** Program a lab's node with the rules for `table` through the real applier. */
export async function programLab(
  lab: LabState,
  table: PolicyTable,
  dataplane: "iptables" | "nfqueue",
  queueNum = DEFAULT_QUEUE_NUM,
  failOpen = false,
  queueCount = defaultQueueThreads(),
): Promise<ApplyStats> {
  const applier = new KernelApplier({ netns: lab.nodeNetns });
  const local = await labLocalPods(lab);
  return applier.apply(renderNode(table, local, { dataplane, queueNum, queueCount, queueBypass: failOpen }));
}
