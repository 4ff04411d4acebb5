/**
 * lab: a simulated Kubernetes node made of network namespaces, for tests, demos and operators.
 * Owns: the public lab API and the order of its steps (topology, state file, agents), serialized per lab
 * within this process. May not: touch the host netns; all kernel work goes through lab/topology.
 */
import { closeAgents, startAgent } from "./agent.js";
import {
  assertLabName,
  assertPod,
  assertPods,
  hostIfName,
  labNetnsPattern,
  podIndexOf,
  podNetnsName,
} from "./names.js";
import { probeLab } from "./probe.js";
import {
  publicState,
  readStored,
  removeStored,
  type StoredLab,
  type StoredPod,
  writeStored,
} from "./state.js";
import { createNode, createPod, deleteNetns, destroyPod, listLabNetns } from "./topology.js";
import type { LabPodSpec, LabPodState, LabState, ProbeRequest } from "./types.js";

// lab.ts is the lab's public API (tests, the CLI, the demo import it): its shapes come along.
export type { LabPodSpec, LabPodState, LabPortSpec, LabState, ProbeRequest } from "./types.js";

/** How many pods are plumbed at once: enough to overlap process start-up, few enough for 2 vCPUs. */
const BUILD_CONCURRENCY = 4;
const AGENT_START_CONCURRENCY = 8;

const locks = new Map<string, Promise<void>>();

/** One lab operation at a time per lab name in this process (the state file is read-modify-write). */
async function withLabLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const prev = locks.get(name) ?? Promise.resolve();
  const result = prev.then(fn);
  const tail = result.then(
    () => {},
    () => {},
  );
  locks.set(name, tail);
  try {
    return await result;
  } finally {
    if (locks.get(name) === tail) locks.delete(name);
  }
}

async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (t: T, i: number) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

async function downLocked(name: string): Promise<void> {
  const pattern = labNetnsPattern(name);
  await closeAgents((netns) => pattern.test(netns));
  const all = await listLabNetns(name);
  // Pods first: deleting a pod netns takes its veth pair, and with it the node-side end.
  await Promise.all(all.filter((n) => podIndexOf(name, n) !== undefined).map(deleteNetns));
  await Promise.all(all.filter((n) => podIndexOf(name, n) === undefined).map(deleteNetns));
  await removeStored(name);
}

function startPodAgent(p: StoredPod) {
  return startAgent(p.netns, p.serve, p.ips, "strict");
}

/**
 * Builds the node netns and one netns per pod, starts every pod's agent (its servers) and persists the
 * state. A lab of the same name that already exists is torn down first.
 */
export async function labUp(
  name: string,
  pods: LabPodSpec[],
  opts: { bridged?: boolean } = {},
): Promise<LabState> {
  assertLabName(name);
  assertPods(pods);
  return withLabLock(name, async () => {
    await downLocked(name);
    try {
      const bridged = opts.bridged === true;
      const nodeNetns = await createNode(name, bridged);
      const states = await mapLimit(pods, BUILD_CONCURRENCY, (p, i) =>
        createPod(name, nodeNetns, i, p, bridged),
      );
      const stored: StoredLab = {
        name,
        nodeNetns,
        bridged,
        pods: states.map((s, i) => ({ ...s, serve: pods[i].serve.map((p) => ({ ...p })) })),
        nextIndex: pods.length,
      };
      await writeStored(stored);
      // Bounded like the builds: each agent's ready deadline runs from its own start, and a hundred
      // interpreters starting at once on a small node miss it.
      await startAgent(nodeNetns, [], [], "strict");
      await mapLimit(stored.pods, AGENT_START_CONCURRENCY, startPodAgent);
      return publicState(stored);
    } catch (e) {
      await downLocked(name).catch(() => {});
      throw e;
    }
  });
}

/**
 * Stops this lab's agents (and any process still inside its netns), deletes every netns of the lab (the
 * veths go with them) and the state file. Finds the netns by name, so it needs no state file; idempotent.
 */
export async function labDown(name: string): Promise<void> {
  assertLabName(name);
  await withLabLock(name, () => downLocked(name));
}

/** The lab's state, or undefined when there is no state file or its node netns is gone. */
export async function loadLab(name: string): Promise<LabState | undefined> {
  assertLabName(name);
  const stored = await readStored(name);
  if (!stored) return undefined;
  const existing = await listLabNetns(name);
  return existing.includes(stored.nodeNetns) ? publicState(stored) : undefined;
}

export async function labAddPod(name: string, pod: LabPodSpec): Promise<LabPodState> {
  assertLabName(name);
  return withLabLock(name, async () => {
    const stored = await readStored(name);
    if (!stored) throw new Error(`lab ${name}: no state file; run labUp first`);
    assertPod(pod, stored.pods);
    // A fresh index (never a recycled one) so a netns name always means the same pod within a lab's life.
    const used = [
      ...stored.pods.map((p) => podIndexOf(name, p.netns) ?? -1),
      ...(await listLabNetns(name)).map((n) => podIndexOf(name, n) ?? -1),
    ];
    const index = Math.max(stored.nextIndex ?? 0, Math.max(-1, ...used) + 1);
    let state: LabPodState | undefined;
    try {
      state = await createPod(name, stored.nodeNetns, index, pod, stored.bridged === true);
      const entry: StoredPod = { ...state, serve: pod.serve.map((p) => ({ ...p })) };
      await startPodAgent(entry);
      stored.pods.push(entry);
      stored.nextIndex = index + 1;
      await writeStored(stored);
      return { ...state, ips: [...state.ips] };
    } catch (e) {
      await closeAgents((n) => n === state?.netns);
      const partial = state ?? { netns: podNetnsName(name, index), hostIf: hostIfName(name, pod.key) };
      await destroyPod(stored.nodeNetns, partial).catch(() => {});
      throw e;
    }
  });
}

export async function labRemovePod(name: string, key: string): Promise<void> {
  assertLabName(name);
  await withLabLock(name, async () => {
    const stored = await readStored(name);
    if (!stored) throw new Error(`lab ${name}: no state file`);
    const pod = stored.pods.find((p) => p.key === key);
    if (!pod) throw new Error(`lab ${name}: no pod ${key}`);
    await closeAgents((n) => n === pod.netns);
    await destroyPod(stored.nodeNetns, pod);
    stored.pods = stored.pods.filter((p) => p !== pod);
    await writeStored(stored);
  });
}

/**
 * Sends one real packet exchange per request, all in parallel (bounded by `concurrency`), and returns
 * true where it got through: TCP connect, UDP echo, SCTP INIT seen by the destination's agent.
 * A denied probe costs `timeoutMs` (default 800) unless it is refused sooner.
 */
export async function probe(
  lab: LabState,
  reqs: ProbeRequest[],
  opts?: { timeoutMs?: number; concurrency?: number },
): Promise<boolean[]> {
  return probeLab(lab, reqs, opts);
}
