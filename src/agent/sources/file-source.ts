/**
 * file-source: a folder of manifests as the cluster (the embedded default that needs no API server).
 *
 * Owns: reading every *.yaml/*.yml/*.json in the folder, watching it (inotify plus a slow poll for
 * filesystems without events), and turning each change into the minimal set of upserts and deletes.
 * - A file is read only once it is stable: its size and mtime unchanged for `settleMs`, so a file
 *   caught mid-write (which may parse as a wider policy) is never enforced. Unchanged files are not
 *   read again.
 * - A file over `maxFileBytes` is rejected before it is read (parsing blocks the event loop for
 *   seconds per megabyte), with an error naming the file, its size and the limit.
 * - A file that stops parsing (any error, thrown or reported) keeps its last good objects; a bad
 *   object keeps its last good version; both are reported through `rejected`, and through `cleared`
 *   once fixed or gone. The rest of the folder still flows, and watching never stops.
 * - Objects are keyed by (kind, namespace, name), never by a joined string.
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
  type ManifestPolicy,
  type ManifestSet,
  parseManifests,
} from "./manifests.js";

const POLICY_KIND_NAMES = Object.keys(POLICY_KINDS) as PolicyKind[];

/** Why a whole file was not (re)read; its last good objects stay in force. */
export type FileRejection = "too_large" | "parse_error" | "unreadable";

export interface FileSourceOptions {
  /** Slow poll for filesystems without inotify events (default 1000 ms). */
  pollMs?: number;
  /** Coalesce bursts of events (default 30 ms). */
  debounceMs?: number;
  /** A file must keep its size and mtime this long before it is read (default 300 ms). */
  settleMs?: number;
  /** Larger files are rejected unread (default 1 MiB: about 1,500 policies, seconds of parsing). */
  maxFileBytes?: number;
  /** Each file-level rejection (the metric); the sink hears it too, as a rejected object. */
  onFileRejected?: (file: string, reason: FileRejection, error: Error) => void;
  /** A rescan failed outside any one file (the sink threw): logged by the agent, watching goes on. */
  onError?: (error: Error) => void;
}

export const DEFAULT_SETTLE_MS = 300;
export const DEFAULT_MAX_FILE_BYTES = 1 << 20;

type Entry = { namespace: string; name: string; text: string } & (
  | { kind: "Namespace"; obj: NamespaceInfo }
  | { kind: "Node"; obj: NodeInfo }
  | { kind: "Pod"; obj: PodInfo }
  | { kind: PolicyKind; obj: ManifestPolicy }
);

/** A rejection as the sink heard it. */
interface Rejection {
  kind: ObjectKind;
  key: string;
}

interface FileState {
  /** size:mtime of the version whose objects `entries` hold (undefined: none read yet). */
  readStamp: string | undefined;
  /** size:mtime of a version that failed as a whole: not read again until the file changes. */
  failedStamp?: string;
  entries: Map<string, Entry>;
  rejections: Map<string, Rejection>;
}

/** One unambiguous map key per object: names may hold any character, "/" included. */
function entryKey(kind: string, namespace: string, name: string): string {
  return JSON.stringify([kind, namespace, name]);
}

function rejectionKey(r: Rejection): string {
  return JSON.stringify([r.kind, r.key]);
}

function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

export class FileSource implements ClusterSource {
  private sink: ClusterSink | undefined;
  private watcher: FSWatcher | undefined;
  private poll: NodeJS.Timeout | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private settleTimer: NodeJS.Timeout | undefined;
  private files = new Map<string, FileState>();
  /** Per file: the size:mtime last seen and since when, to tell a stable file from one being written. */
  private seen = new Map<string, { stamp: string; since: number }>();
  private emitted = new Map<string, Entry>();
  private stamps = "";
  private restarts = 0;
  private stopped = false;
  private readonly settleMs: number;
  private readonly maxFileBytes: number;

  constructor(
    private readonly dir: string,
    private readonly opts: FileSourceOptions = {},
  ) {
    this.settleMs = opts.settleMs ?? DEFAULT_SETTLE_MS;
    this.maxFileBytes = opts.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
  }

  async start(sink: ClusterSink): Promise<void> {
    this.sink = sink;
    // The first view must be complete: wait for files still being written before saying synced.
    while (!this.rescan() && !this.stopped) await new Promise((r) => setTimeout(r, this.settleMs));
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
    if (this.debounce || this.stopped) return;
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      this.safeRescan();
    }, this.opts.debounceMs ?? 30);
  }

  /** A rescan from a timer: whatever goes wrong is reported, and the folder stays watched. */
  private safeRescan(): void {
    if (this.stopped) return;
    try {
      if (!this.rescan()) this.armSettle();
    } catch (e) {
      this.opts.onError?.(asError(e));
      this.armSettle();
    }
  }

  /** Look again once the files being written have had time to settle. */
  private armSettle(): void {
    if (this.settleTimer || this.stopped) return;
    this.settleTimer = setTimeout(() => {
      this.settleTimer = undefined;
      this.safeRescan();
    }, this.settleMs);
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

  /**
   * Re-read the changed, stable files and emit the difference from what the sink already has.
   * Returns false when some file is still changing (its previous objects stay; look again later).
   */
  rescan(): boolean {
    const sink = this.sink!;
    this.stamps = this.fileStamps();
    const now = Date.now();
    let settled = true;
    const next = new Map<string, FileState>();
    const seen = new Map<string, { stamp: string; since: number }>();
    for (const file of expandManifestPaths([this.dir])) {
      const prev = this.files.get(file);
      let size: number;
      let stamp: string;
      try {
        const st = statSync(file);
        size = st.size;
        stamp = `${st.size}:${st.mtimeMs}`;
        const s = this.seen.get(file);
        const since = s?.stamp === stamp ? s.since : now;
        seen.set(file, { stamp, since });
        // Stable: nobody wrote it for settleMs (by its mtime, or as we watched it).
        if (now - st.mtimeMs < this.settleMs && now - since < this.settleMs) {
          settled = false;
          if (prev) next.set(file, prev);
          continue;
        }
      } catch {
        continue; // Removed between listing and reading: its objects go away.
      }
      if (prev && (prev.readStamp === stamp || prev.failedStamp === stamp)) {
        next.set(file, prev);
        continue;
      }
      next.set(file, this.readFile(file, size, stamp, prev));
    }
    this.seen = seen;
    // Files gone: their rejections go with them.
    for (const [file, st] of this.files) if (!next.has(file)) this.clearRejections(st.rejections, new Map());
    this.files = next;
    this.emit(sink);
    return settled;
  }

  /** Parse one stable file; on any failure the previous objects stay, and the file is reported. */
  private readFile(file: string, size: number, stamp: string, prev: FileState | undefined): FileState {
    const sink = this.sink!;
    const prevEntries = prev?.entries ?? new Map<string, Entry>();
    const rejections = new Map<string, Rejection>();
    const reject = (kind: ObjectKind, key: string, error: Error) => {
      rejections.set(rejectionKey({ kind, key }), { kind, key });
      sink.rejected(kind, key, error);
    };
    const fileFailed = (reason: FileRejection, error: Error): FileState => {
      reject("NetworkPolicy", file, error);
      this.opts.onFileRejected?.(file, reason, error);
      this.clearRejections(prev?.rejections, rejections);
      return { readStamp: prev?.readStamp, failedStamp: stamp, entries: prevEntries, rejections };
    };
    if (size > this.maxFileBytes) {
      return fileFailed(
        "too_large",
        new Error(
          `${file}: ${size} bytes is over the ${this.maxFileBytes}-byte limit for one file (--source-max-file-bytes); split it, or raise the limit`,
        ),
      );
    }
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (e) {
      return fileFailed("unreadable", new Error(`${file}: cannot read: ${asError(e).message}`));
    }
    const set: ManifestSet = emptyManifestSet();
    const held = new Map<string, Entry>();
    try {
      parseManifests(text, file, set, (p) => {
        reject(p.kind as ObjectKind, p.key || file, p.error);
        const k = entryKey(p.kind, p.namespace, p.name);
        const old = prevEntries.get(k);
        if (old) held.set(k, old);
      });
    } catch (e) {
      // Any error (malformed YAML, an alias bomb, a bug): this file only, never the process.
      const err = asError(e);
      return fileFailed(
        "parse_error",
        err.message.startsWith(file) ? err : new Error(`${file}: ${err.message}`),
      );
    }
    const entries = new Map<string, Entry>(held);
    const add = (e: Entry) => entries.set(entryKey(e.kind, e.namespace, e.name), e);
    for (const ns of set.namespaces)
      add({ kind: "Namespace", namespace: "", name: ns.name, obj: ns, text: JSON.stringify(ns) });
    for (const node of set.nodes)
      add({ kind: "Node", namespace: "", name: node.name, obj: node, text: JSON.stringify(node) });
    for (const pod of set.pods)
      add({ kind: "Pod", namespace: pod.namespace, name: pod.name, obj: pod, text: JSON.stringify(pod) });
    for (const pol of set.policies)
      add({
        kind: pol.kind,
        namespace: pol.namespace,
        name: pol.name,
        obj: pol,
        text: JSON.stringify(pol.obj),
      });
    this.clearRejections(prev?.rejections, rejections);
    return { readStamp: stamp, entries, rejections };
  }

  /** Tell the sink that rejections of the previous read that this one did not repeat are over. */
  private clearRejections(before: Map<string, Rejection> | undefined, now: Map<string, Rejection>): void {
    for (const [k, r] of before ?? []) if (!now.has(k)) this.sink?.cleared?.(r.kind, r.key);
  }

  private emit(sink: ClusterSink): void {
    const all = new Map<string, Entry>();
    for (const st of this.files.values()) for (const [k, e] of st.entries) all.set(k, e);
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
        if (e.kind === "Namespace") sink.deleteNamespace(e.name);
        else if (e.kind === "Node") sink.deleteNode(e.name);
        else if (e.kind === "Pod") sink.deletePod(e.namespace, e.name);
        else sink.deletePolicy(e.namespace, e.name, e.kind);
      }
    }
    this.emitted = all;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.watcher?.close();
    if (this.poll) clearInterval(this.poll);
    if (this.debounce) clearTimeout(this.debounce);
    if (this.settleTimer) clearTimeout(this.settleTimer);
  }

  status(): SourceStatus {
    return { connected: true, watchRestarts: { files: this.restarts } };
  }
}
