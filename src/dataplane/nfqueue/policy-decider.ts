/**
 * policy-decider: the decider module the NFQUEUE worker loads in production.
 *
 * Owns: turning a TableSnapshot (posted by the agent on every table change) into a decide function
 * backed by the compiled engine and a verdict cache, and counting verdicts per isolating policy so
 * the agent can export per-policy allow/deny metrics (bounded by the number of policies).
 * May not: do I/O; it runs in the worker between packets.
 */
import type { Verdict } from "../../compiler/engine.js";
import type { ProtoNum } from "../../compiler/model.js";
import { SnapshotSource, type TableSnapshot } from "../../compiler/snapshot.js";
import { VerdictCache } from "../../compiler/verdict-cache.js";

/** policy|direction|result -> count, drained by `drainCounters`. */
const counters = new Map<string, number>();
let cacheHits = 0;
let cacheMisses = 0;

function count(v: Verdict): void {
  for (const dir of ["ingress", "egress"] as const) {
    const d = v[dir];
    if (d.result === "allowed" && d.by) bump(`${d.by.policy}|${dir}|allow`);
    else if (d.result === "denied") for (const p of d.policies) bump(`${p}|${dir}|deny`);
  }
}

function bump(k: string): void {
  counters.set(k, (counters.get(k) ?? 0) + 1);
}

export function drainCounters(): { policies: [string, number][]; cacheHits: number; cacheMisses: number } {
  const out = { policies: [...counters], cacheHits, cacheMisses };
  counters.clear();
  cacheHits = cacheMisses = 0;
  return out;
}

export function createDecider(
  table: unknown,
): (src: string, dst: string, proto: number, dport: number) => Verdict {
  const snap = table as TableSnapshot;
  if (!snap || !Array.isArray(snap.endpoints) || !Array.isArray(snap.policies)) {
    throw new Error("not a podwall table snapshot");
  }
  const cache = new VerdictCache(new SnapshotSource(snap), 1 << 18);
  return (src, dst, proto, dport) => {
    const before = cache.stats.misses;
    const v = cache.lookup(src, dst, proto as ProtoNum, dport);
    if (cache.stats.misses === before) cacheHits++;
    else cacheMisses++;
    count(v);
    return v;
  };
}
