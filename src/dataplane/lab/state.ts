/**
 * lab/state: the lab's state file, /run/podwall/lab/<name>.json (tmpfs: it dies with the netns).
 * Owns: reading it and writing it atomically, so another process can load a lab and probe it.
 * May not: run commands. The file is a convenience; labDown trusts the kernel's netns list instead.
 */
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { LabPodState, LabPortSpec, LabState } from "./types.js";

export const LAB_STATE_DIR = "/run/podwall/lab";

/** What is stored: the public state plus each pod's served ports, so any process can restart agents. */
export interface StoredPod extends LabPodState {
  serve: LabPortSpec[];
}
export interface StoredLab {
  name: string;
  nodeNetns: string;
  pods: StoredPod[];
  /** Pods sit on a bridge (cni0-style) instead of routed veths. */
  bridged?: boolean;
  /** Next pod netns index; indexes are never reused, so a netns name means one pod for the lab's life. */
  nextIndex?: number;
}

function statePath(name: string): string {
  return join(LAB_STATE_DIR, `${name}.json`);
}

export async function readStored(name: string): Promise<StoredLab | undefined> {
  let text: string;
  try {
    text = await readFile(statePath(name), "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
  const lab = JSON.parse(text) as StoredLab;
  if (lab.name !== name || !Array.isArray(lab.pods))
    throw new Error(`${statePath(name)}: not a lab state file`);
  return lab;
}

export async function writeStored(lab: StoredLab): Promise<void> {
  await mkdir(LAB_STATE_DIR, { recursive: true });
  const tmp = `${statePath(lab.name)}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(lab, null, 2)}\n`);
  await rename(tmp, statePath(lab.name));
}

export async function removeStored(name: string): Promise<void> {
  await rm(statePath(name), { force: true });
}

export function publicState(lab: StoredLab): LabState {
  return {
    name: lab.name,
    nodeNetns: lab.nodeNetns,
    bridged: lab.bridged === true,
    pods: lab.pods.map((p) => ({ key: p.key, netns: p.netns, hostIf: p.hostIf, ips: [...p.ips] })),
  };
}
