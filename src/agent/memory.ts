/**
 * memory: give memory back after large bursts of cluster events.
 *
 * Owns: one full, compacting GC once the agent goes quiet after a burst of cluster events (a
 * relist, a cluster-wide rollout). Those bursts allocate a lot of short-lived garbage while the live
 * set (normalized pods, the compiled table) stays small; without this V8 keeps the grown heap
 * committed for a long time and RSS stays near the burst's peak.
 * May not: run in the middle of a sync or while events keep coming; it waits for quiet.
 */
import { createRequire } from "node:module";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

let fullGc: (() => void) | undefined;

function gcFunction(): (() => void) | undefined {
  if (fullGc) return fullGc;
  try {
    // Expose gc() to a fresh context: the documented way to reach it without a command-line flag.
    setFlagsFromString("--expose-gc");
    fullGc = runInNewContext("gc") as () => void;
  } catch {
    fullGc = undefined;
  }
  return fullGc;
}

/**
 * One full GC that also compacts the old space. A plain full GC frees the burst's garbage but
 * leaves the survivors scattered over the pages the burst filled, so V8 keeps them all committed
 * (at 10k pods: 44 MB live in 104 MB of old space); compaction packs them and releases the rest.
 */
function compactingGc(): void {
  const gc = gcFunction();
  if (!gc) return;
  try {
    setFlagsFromString("--compact-on-every-full-gc");
    gc();
  } finally {
    setFlagsFromString("--no-compact-on-every-full-gc");
  }
}

let trim: ((pad: number) => number) | null | undefined;

/** glibc keeps freed native memory (parser buffers, sockets) in its arenas; hand it back to the OS. */
function mallocTrim(): void {
  if (trim === undefined) {
    try {
      const koffi = createRequire(import.meta.url)("koffi") as typeof import("koffi");
      trim = koffi.load("libc.so.6").func("int malloc_trim(size_t pad)") as (pad: number) => number;
    } catch {
      trim = null; // Not glibc (musl, macOS): nothing to trim.
    }
  }
  trim?.(0);
}

let pending = 0;
let timer: NodeJS.Timeout | undefined;

/**
 * Count the events a sync carried; once the agent has been quiet for `quietMs` after at least
 * `threshold` of them, run one full GC. A burst (relist, rollout) arrives as many small syncs.
 */
export function noteSyncEvents(events: number, threshold = 500, quietMs = 3000): void {
  pending += events;
  if (timer) clearTimeout(timer);
  if (pending < threshold) return;
  timer = setTimeout(() => {
    timer = undefined;
    pending = 0;
    compactingGc();
    mallocTrim();
  }, quietMs);
  timer.unref();
}
