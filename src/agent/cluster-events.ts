/**
 * cluster-events: the contract between cluster sources (Kubernetes informers, the manifest folder)
 * and the reconcile loop.
 *
 * Owns: the event vocabulary. Sources normalize objects before emitting (see compiler/normalize) and
 * report objects they cannot understand through `rejected`, never by throwing into the loop.
 * May not: carry whole API objects for Pods, Namespaces or Nodes (memory), only for policies, which
 * the table compiles (kind by kind, compiler/kinds).
 */
import type { NamespaceInfo, NodeInfo, PodInfo } from "../compiler/model.js";
import type { PolicyKind } from "../compiler/rule-model.js";

export type ObjectKind = "Pod" | "Namespace" | "Node" | PolicyKind;

export interface ClusterSink {
  upsertPod(pod: PodInfo): void;
  deletePod(namespace: string, name: string): void;
  upsertNamespace(ns: NamespaceInfo): void;
  deleteNamespace(name: string): void;
  upsertNode(node: NodeInfo): void;
  deleteNode(name: string): void;
  /** A policy object of `kind` (NetworkPolicy when absent); namespace "" for cluster-scoped kinds. */
  upsertPolicy(policy: unknown, kind?: PolicyKind): void;
  deletePolicy(namespace: string, name: string, kind?: PolicyKind): void;
  /** An object the source could not normalize; `key` is "ns/name" or "name". */
  rejected(kind: ObjectKind, key: string, error: Error): void;
  /** Every kind has been listed once: the cluster view is complete and may be programmed. */
  synced(): void;
}

export interface SourceStatus {
  /** False while the source cannot reach its backend (API server down); enforcement stays as is. */
  connected: boolean;
  /** Watch restarts (410 Gone, dropped connections, errors), by kind. */
  watchRestarts: Record<string, number>;
}

export interface ClusterSource {
  start(sink: ClusterSink): Promise<void>;
  stop(): Promise<void>;
  status(): SourceStatus;
}
