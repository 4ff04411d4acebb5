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

/**
 * Per-packet counting is two Map updates keyed by what the verdict already holds: the allowing
 * policy's key, or the denying side's `policies` array (the engine shares one frozen array per
 * isolating set). `drainCounters` expands them into policy|direction|result counts off the packet
 * path; building those strings for every isolating policy on every packet cost more than deciding.
 */
const allowed = { ingress: new Map<string, number>(), egress: new Map<string, number>() };
const denied = {
  ingress: new Map<readonly string[], number>(),
  egress: new Map<readonly string[], number>(),
};
let cacheHits = 0;
let cacheMisses = 0;

function count(v: Verdict): void {
  const i = v.ingress;
  if (i.result === "allowed") {
    if (i.by) allowed.ingress.set(i.by.policy, (allowed.ingress.get(i.by.policy) ?? 0) + 1);
  } else if (i.result === "denied") denied.ingress.set(i.policies, (denied.ingress.get(i.policies) ?? 0) + 1);
  const e = v.egress;
  if (e.result === "allowed") {
    if (e.by) allowed.egress.set(e.by.policy, (allowed.egress.get(e.by.policy) ?? 0) + 1);
  } else if (e.result === "denied") denied.egress.set(e.policies, (denied.egress.get(e.policies) ?? 0) + 1);
}

/** policy|direction|result -> count since the last drain. */
export function drainCounters(): { policies: [string, number][]; cacheHits: number; cacheMisses: number } {
  const out = new Map<string, number>();
  const bump = (k: string, n: number) => out.set(k, (out.get(k) ?? 0) + n);
  for (const dir of ["ingress", "egress"] as const) {
    for (const [policy, n] of allowed[dir]) bump(`${policy}|${dir}|allow`, n);
    for (const [policies, n] of denied[dir]) for (const p of policies) bump(`${p}|${dir}|deny`, n);
    allowed[dir].clear();
    denied[dir].clear();
  }
  const res = { policies: [...out], cacheHits, cacheMisses };
  cacheHits = cacheMisses = 0;
  return res;
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
