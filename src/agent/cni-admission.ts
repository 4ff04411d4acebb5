/**
 * cni-admission: closes the window between a pod's network coming up and its policy being enforced.
 *
 * Owns: the ADD half of the chained CNI plugin (cni/podwall-cni.c forwards the runtime's request
 * here): wait until the pod is known, feed the addresses the network plugin just assigned into the
 * table (the API server learns them only later, from the kubelet), wait for a sync that programs
 * them, and answer with the previous plugin's result. Those addresses are kept as a hint until the
 * pod's status reports the same ones, so an update without addresses (or with a replaced sandbox's
 * old ones) does not unprogram the pod or leave its new address unprotected. The hints are kept in a
 * file too (beside the socket, on the node), so an agent restarted inside that window still knows them.
 * May not: program anything itself (the reconciler does) or answer an ADD before the kernel holds
 * the pod's rules; on timeout the ADD fails and the kubelet retries the sandbox.
 */
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { canonicalIP } from "../compiler/ip.js";
import type { NamespaceInfo, NodeInfo, PodInfo } from "../compiler/model.js";
import type { PolicyKind } from "../compiler/rule-model.js";
import type { ClusterSink, ObjectKind } from "./cluster-events.js";
import type { Logger } from "./log.js";
import type { Reconciler } from "./reconciler.js";

export interface CniAddRequest {
  containerId: string;
  netns: string;
  ifName: string;
  /** CNI_ARGS: "K8S_POD_NAMESPACE=x;K8S_POD_NAME=y;..." */
  args: string;
  /** The network configuration the runtime passed on stdin, with prevResult. */
  config: string;
}

/** A CNI error (spec codes: 4 invalid configuration, 11 try again later). */
export class CniError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

export interface CniAdmissionOptions {
  reconciler: Reconciler;
  log: Logger;
  /** How long an ADD may wait for the pod to be known and programmed. */
  waitMs: number;
  /** Where the address hints are kept across agent restarts (JSON); none: memory only. */
  hintsFile?: string;
}

/** The addresses a CNI ADD assigned to one incarnation (uid) of a pod. */
interface Hint {
  ips: readonly string[];
  uid?: string;
}

interface Parsed {
  cniVersion: string;
  prevResult: Record<string, unknown>;
  ips: string[];
}

function parseConfig(text: string): Parsed {
  let conf: { cniVersion?: unknown; prevResult?: { ips?: { address?: unknown }[] } };
  try {
    conf = JSON.parse(text);
  } catch (e) {
    throw new CniError(4, `network configuration is not JSON: ${(e as Error).message}`);
  }
  if (!conf || typeof conf !== "object" || !conf.prevResult || typeof conf.prevResult !== "object")
    throw new CniError(
      4,
      "no prevResult: podwall-cni must be chained after the plugin that sets up the network",
    );
  const ips: string[] = [];
  for (const ip of conf.prevResult.ips ?? []) {
    const addr = typeof ip?.address === "string" ? canonicalIP(ip.address.split("/")[0]) : undefined;
    if (addr) ips.push(addr);
  }
  return {
    cniVersion: typeof conf.cniVersion === "string" ? conf.cniVersion : "1.0.0",
    prevResult: conf.prevResult as Record<string, unknown>,
    ips,
  };
}

function podOf(args: string): { namespace: string; name: string; uid?: string } | undefined {
  const kv = new Map(
    args
      .split(";")
      .map((p) => p.split("="))
      .filter((p) => p.length === 2)
      .map(([k, v]) => [k.trim(), v.trim()] as [string, string]),
  );
  const namespace = kv.get("K8S_POD_NAMESPACE");
  const name = kv.get("K8S_POD_NAME");
  const uid = kv.get("K8S_POD_UID") || undefined;
  return namespace && name ? { namespace, name, ...(uid ? { uid } : {}) } : undefined;
}

function sameAddresses(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((ip) => b.includes(ip));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Both incarnations known and different: the hint belongs to a pod that is gone. */
function otherIncarnation(hint: Hint, uid: string | undefined): boolean {
  return !!hint.uid && !!uid && hint.uid !== uid;
}

function isHint(v: unknown): v is Hint {
  if (!v || typeof v !== "object") return false;
  const h = v as Record<string, unknown>;
  return (
    Array.isArray(h.ips) &&
    h.ips.every((ip) => typeof ip === "string" && canonicalIP(ip) === ip) &&
    (h.uid === undefined || typeof h.uid === "string")
  );
}

/** Sits between the cluster source and the reconciler; everything but pod addresses passes through. */
export class CniAdmission implements ClusterSink {
  private readonly hints = new Map<string, Hint>();

  constructor(private readonly o: CniAdmissionOptions) {
    this.load();
  }

  get hinted(): number {
    return this.hints.size;
  }

  upsertPod(pod: PodInfo): void {
    const key = `${pod.namespace}/${pod.name}`;
    const hint = this.hints.get(key);
    if (hint && !otherIncarnation(hint, pod.uid) && !sameAddresses(pod.ips, hint.ips)) {
      // No addresses yet, or those of a sandbox that is gone: the network plugin's word stands.
      this.o.reconciler.upsertPod({ ...pod, ips: hint.ips });
      return;
    }
    // The status reports the same addresses now (it takes over), or the hint is a former pod's.
    if (hint) this.forget(key);
    this.o.reconciler.upsertPod(pod);
  }

  deletePod(namespace: string, name: string): void {
    this.forget(`${namespace}/${name}`);
    this.o.reconciler.deletePod(namespace, name);
  }

  upsertNamespace(ns: NamespaceInfo): void {
    this.o.reconciler.upsertNamespace(ns);
  }
  deleteNamespace(name: string): void {
    this.o.reconciler.deleteNamespace(name);
  }
  upsertNode(node: NodeInfo): void {
    this.o.reconciler.upsertNode(node);
  }
  deleteNode(name: string): void {
    this.o.reconciler.deleteNode(name);
  }
  upsertPolicy(policy: unknown, kind?: PolicyKind): void {
    this.o.reconciler.upsertPolicy(policy, kind);
  }
  deletePolicy(namespace: string, name: string, kind?: PolicyKind): void {
    this.o.reconciler.deletePolicy(namespace, name, kind);
  }
  rejected(kind: ObjectKind, key: string, error: Error): void {
    this.o.reconciler.rejected(kind, key, error);
  }
  synced(): void {
    // Pods deleted while the agent was down: the first complete list no longer has them.
    let pruned = false;
    for (const key of this.hints.keys()) {
      if (!this.o.reconciler.table.pod(key)) pruned = this.hints.delete(key);
    }
    if (pruned) this.save();
    this.o.reconciler.synced();
  }

  private forget(key: string): void {
    if (this.hints.delete(key)) this.save();
  }

  private load(): void {
    const file = this.o.hintsFile;
    if (!file) return;
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch {
      return; // First start on this node.
    }
    try {
      const obj = JSON.parse(text) as Record<string, unknown>;
      for (const [key, hint] of Object.entries(obj)) {
        if (isHint(hint)) this.hints.set(key, hint);
        else this.o.log.warn({ file, pod: key }, "cni hints: unreadable entry skipped");
      }
      if (this.hints.size) this.o.log.info({ file, hints: this.hints.size }, "cni hints: loaded");
    } catch (e) {
      this.o.log.warn({ file, err: (e as Error).message }, "cni hints: file is not JSON; starting without");
    }
  }

  /** Whole-file replace by rename, so a crash mid-write leaves the previous version. */
  private save(): void {
    const file = this.o.hintsFile;
    if (!file) return;
    try {
      writeFileSync(`${file}.tmp`, JSON.stringify(Object.fromEntries(this.hints)), { mode: 0o600 });
      renameSync(`${file}.tmp`, file);
    } catch (e) {
      this.o.log.warn({ file, err: (e as Error).message }, "cni hints: not saved (kept in memory)");
    }
  }

  /** Handle one ADD; resolves with the result to print, rejects with a CniError. */
  async add(
    req: CniAddRequest,
  ): Promise<{ result: Record<string, unknown>; pod?: string; waitedMs: number }> {
    const t0 = performance.now();
    const conf = parseConfig(req.config);
    const result = { ...conf.prevResult, cniVersion: conf.cniVersion };
    const pod = podOf(req.args);
    // Not a Kubernetes pod (no K8S_POD_* args): nothing podwall knows to enforce.
    if (!pod) return { result, waitedMs: 0 };
    const key = `${pod.namespace}/${pod.name}`;
    const r = this.o.reconciler;
    const deadline = Date.now() + this.o.waitMs;
    const left = () => deadline - Date.now();

    // 1. The pod object must be known (the informer may lag the kubelet by a moment), and be this
    // incarnation of the name, not a deleted one's that the informer still holds.
    const known = () => {
      const rec = r.table.pod(key);
      return rec && !(pod.uid && rec.info.uid && rec.info.uid !== pod.uid) ? rec : undefined;
    };
    while (!known()) {
      if (left() <= 0) throw new CniError(11, `pod ${key} is not known to the podwall agent yet`);
      await sleep(Math.min(25, left()));
    }
    // 2. The addresses the network plugin assigned, until the pod's status reports them.
    const rec = known()!;
    if (conf.ips.length && !sameAddresses(rec.info.ips, conf.ips)) {
      this.hints.set(key, { ips: conf.ips, ...(pod.uid ? { uid: pod.uid } : {}) });
      this.save();
      r.upsertPod({ ...rec.info, ips: conf.ips });
    }
    // 3. A sync that starts after that, and has the pod among the local pods if policy isolates it.
    for (;;) {
      if (!(await r.nextSync(left())))
        throw new CniError(11, `pod ${key}: no successful sync within ${this.o.waitMs} ms`);
      const now = r.table.pod(key);
      const id = now?.identity;
      const isolated = !!id && (!r.table.plan(id, "ingress").empty || !r.table.plan(id, "egress").empty);
      if (!isolated || r.lastLocal.has(key)) break;
      // Isolated but not programmed: its interface was not found yet (route not there). Try again.
      if (left() <= 0)
        throw new CniError(
          11,
          `pod ${key}: no route to ${conf.ips.join(", ") || "its addresses"} on this node`,
        );
      await sleep(Math.min(50, left()));
    }
    const waitedMs = performance.now() - t0;
    this.o.log.info(
      { pod: key, ips: conf.ips, containerId: req.containerId, waitedMs: Math.round(waitedMs) },
      "cni add: pod programmed",
    );
    return { result, pod: key, waitedMs };
  }
}
