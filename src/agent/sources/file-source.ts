/**
 * file-source: a folder of manifests as the cluster (the embedded default that needs no API server).
 *
 * Owns: reading every *.yaml/*.yml/*.json in the folder, watching it (inotify plus a slow poll for
 * filesystems without events), and turning each change into the minimal set of upserts and deletes.
 * A file that stops parsing keeps its last good objects; a bad object keeps its last good version;
 * both are reported through `rejected` and the rest of the folder still flows.
 * May not: compile or program anything.
 */
import { type FSWatcher, readFileSync, statSync, watch } from "node:fs";
import { POLICY_KINDS } from "../../compiler/kinds/index.js";
import type { NamespaceInfo, NodeInfo, PodInfo } from "../../compiler/model.js";
import type { PolicyKind } from "../../compiler/rule-model.js";
import type { ClusterSink, ClusterSource, ObjectKind, SourceStatus } from "../cluster-events.js";
import {
  emptyManifestSet,
  expandManifestPaths,
  ManifestError,
  type ManifestPolicy,
  parseManifests,
} from "./manifests.js";

const POLICY_KIND_NAMES = Object.keys(POLICY_KINDS) as PolicyKind[];

type Entry =
  | { kind: "Namespace"; key: string; obj: NamespaceInfo; text: string }
  | { kind: "Node"; key: string; obj: NodeInfo; text: string }
  | { kind: "Pod"; key: string; obj: PodInfo; text: string }
  | { kind: PolicyKind; key: string; obj: ManifestPolicy; text: string };

export class FileSource implements ClusterSource {
  private sink: ClusterSink | undefined;
  private watcher: FSWatcher | undefined;
  private poll: NodeJS.Timeout | undefined;
  private debounce: NodeJS.Timeout | undefined;
  /** Last good objects per file, and what was last emitted (by kind:key). */
  private perFile = new Map<string, Map<string, Entry>>();
  private emitted = new Map<string, Entry>();
  private stamps = "";
  private restarts = 0;

  constructor(
    private readonly dir: string,
    private readonly opts: { pollMs?: number; debounceMs?: number } = {},
  ) {}

  async start(sink: ClusterSink): Promise<void> {
    this.sink = sink;
    this.rescan();
    sink.synced();
    try {
      this.watcher = watch(this.dir, () => this.kick());
      this.watcher.on("error", () => {
        this.restarts++;
      });
    } catch {
      // No inotify here: the poll below still notices changes.
    }
    this.poll = setInterval(() => {
      if (this.fileStamps() !== this.stamps) this.kick();
    }, this.opts.pollMs ?? 1000);
    this.poll.unref();
  }

  private kick(): void {
    if (this.debounce) return;
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      this.rescan();
    }, this.opts.debounceMs ?? 30);
  }

  private fileStamps(): string {
    return expandManifestPaths([this.dir])
      .map((f) => {
        try {
          const st = statSync(f);
          return `${f}:${st.mtimeMs}:${st.size}`;
        } catch {
          return `${f}:gone`;
        }
      })
      .join("|");
  }

  /** Re-read the folder and emit the difference from what the sink already has. */
  rescan(): void {
    const sink = this.sink!;
    this.stamps = this.fileStamps();
    const files = expandManifestPaths([this.dir]);
    const next = new Map<string, Map<string, Entry>>();
    for (const file of files) {
      const prev = this.perFile.get(file) ?? new Map<string, Entry>();
      let text: string;
      try {
        text = readFileSync(file, "utf8");
      } catch {
        continue; // Removed between listing and reading: its objects go away.
      }
      const set = emptyManifestSet();
      const held = new Map<string, Entry>();
      try {
        parseManifests(text, file, set, (p) => {
          sink.rejected(p.kind as ObjectKind, p.key || file, p.error);
          const old = prev.get(`${p.kind}:${p.key}`);
          if (old) held.set(`${p.kind}:${p.key}`, old);
        });
      } catch (e) {
        if (!(e instanceof ManifestError)) throw e;
        // The file no longer parses: keep everything it held until it is fixed.
        sink.rejected("NetworkPolicy", file, e);
        next.set(file, prev);
        continue;
      }
      const entries = new Map<string, Entry>(held);
      for (const ns of set.namespaces)
        entries.set(`Namespace:${ns.name}`, {
          kind: "Namespace",
          key: ns.name,
          obj: ns,
          text: JSON.stringify(ns),
        });
      for (const pod of set.pods) {
        const key = `${pod.namespace}/${pod.name}`;
        entries.set(`Pod:${key}`, { kind: "Pod", key, obj: pod, text: JSON.stringify(pod) });
      }
      for (const node of set.nodes)
        entries.set(`Node:${node.name}`, {
          kind: "Node",
          key: node.name,
          obj: node,
          text: JSON.stringify(node),
        });
      for (const pol of set.policies) {
        const key = pol.namespace ? `${pol.namespace}/${pol.name}` : pol.name;
        entries.set(`${pol.kind}:${key}`, {
          kind: pol.kind,
          key,
          obj: pol,
          text: JSON.stringify(pol.obj),
        });
      }
      next.set(file, entries);
    }
    this.perFile = next;
    const all = new Map<string, Entry>();
    for (const entries of next.values()) for (const [k, e] of entries) all.set(k, e);
    // Namespaces and nodes first so pods and policies land in labelled ones; deletes last.
    const order: Entry["kind"][] = ["Namespace", "Node", "Pod", ...POLICY_KIND_NAMES];
    for (const kind of order) {
      for (const [k, e] of all) {
        if (e.kind !== kind || this.emitted.get(k)?.text === e.text) continue;
        if (e.kind === "Namespace") sink.upsertNamespace(e.obj);
        else if (e.kind === "Node") sink.upsertNode(e.obj);
        else if (e.kind === "Pod") sink.upsertPod(e.obj);
        else sink.upsertPolicy(e.obj.obj, e.obj.kind);
      }
    }
    for (const kind of [...order].reverse()) {
      for (const [k, e] of this.emitted) {
        if (e.kind !== kind || all.has(k)) continue;
        if (e.kind === "Namespace") sink.deleteNamespace(e.key);
        else if (e.kind === "Node") sink.deleteNode(e.key);
        else if (e.kind === "Pod") sink.deletePod(e.obj.namespace, e.obj.name);
        else sink.deletePolicy(e.obj.namespace, e.obj.name, e.obj.kind);
      }
    }
    this.emitted = all;
  }

  async stop(): Promise<void> {
    this.watcher?.close();
    if (this.poll) clearInterval(this.poll);
    if (this.debounce) clearTimeout(this.debounce);
  }

  status(): SourceStatus {
    return { connected: true, watchRestarts: { files: this.restarts } };
  }
}
