/**
 * policy-decider: the decider module the NFQUEUE worker loads in production.
 *
 * Owns: turning a TableSnapshot (posted by the agent on every table change) into a decide function
 * backed by the compiled engine and a verdict cache; audit mode (a flow what is enforced allows is
 * judged again with the audit plans, from a second cache, only when the snapshot has audit plans);
 * describing a reported decision (`reportOf`: the side, policies, tier and rule of this worker's own
 * verdict, for the deny line); and counting verdicts per deciding policy, and audit denies per audit
 * policy, so the agent can export per-policy metrics (bounded by the number of policies).
 * May not: do I/O; it runs in the worker between packets.
 */
import { auditDeciders, withAudit } from "../../compiler/audit.js";
import type { DirectionVerdict, Verdict } from "../../compiler/engine.js";
import type { Direction, ProtoNum } from "../../compiler/model.js";
import { SnapshotSource, type TableSnapshot } from "../../compiler/snapshot.js";
import { VerdictCache } from "../../compiler/verdict-cache.js";
import { attributionOf, type LogAttribution } from "../log-attribution.js";

/** What a deny event carries: what decided, and the pods holding the addresses, in this worker's table. */
export interface DenyReport extends LogAttribution {
  src?: string;
  dst?: string;
}

/** An allowed flow an audit policy would deny (one object per cached audit verdict). */
interface AuditDecision {
  readonly allowed: true;
  readonly audit: Verdict;
  readonly auditKeys: ReadonlySet<string>;
}

/**
 * Per-packet counting is Map updates keyed by what the verdict already holds: the allowing policy's
 * key, or the denying side's `policies` array (the engine shares one frozen array per isolating
 * set), or an audit side's named policies (one array per side verdict). `drainCounters` expands them
 * into policy|direction|result counts off the packet path; building those strings for every
 * isolating policy on every packet cost more than deciding.
 */
const allowed = { ingress: new Map<string, number>(), egress: new Map<string, number>() };
const denied = {
  ingress: new Map<readonly string[], number>(),
  egress: new Map<readonly string[], number>(),
};
const auditDenied = {
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

/** The policies an audit deny of one side names, made once per side verdict. */
const auditNamed = new WeakMap<DirectionVerdict, readonly string[]>();
function auditPolicies(v: DirectionVerdict, keys: ReadonlySet<string>): readonly string[] {
  let p = auditNamed.get(v);
  if (!p) auditNamed.set(v, (p = Object.freeze(auditDeciders(v.policies, (k) => keys.has(k)))));
  return p;
}

function countAudit(d: AuditDecision): void {
  for (const dir of ["ingress", "egress"] as const) {
    const side = d.audit[dir];
    if (side.result !== "denied") continue;
    const p = auditPolicies(side, d.auditKeys);
    auditDenied[dir].set(p, (auditDenied[dir].get(p) ?? 0) + 1);
  }
}

/** policy|direction|result -> count since the last drain (result: allow, deny or audit-deny). */
export function drainCounters(): { policies: [string, number][]; cacheHits: number; cacheMisses: number } {
  const out = new Map<string, number>();
  const bump = (k: string, n: number) => out.set(k, (out.get(k) ?? 0) + n);
  for (const dir of ["ingress", "egress"] as const) {
    for (const [policy, n] of allowed[dir]) bump(`${policy}|${dir}|allow`, n);
    for (const [policies, n] of denied[dir]) for (const p of policies) bump(`${p}|${dir}|deny`, n);
    for (const [policies, n] of auditDenied[dir]) for (const p of policies) bump(`${p}|${dir}|audit-deny`, n);
    allowed[dir].clear();
    denied[dir].clear();
    auditDenied[dir].clear();
  }
  const res = { policies: [...out], cacheHits, cacheMisses };
  cacheHits = cacheMisses = 0;
  return res;
}

const reports = new WeakMap<object, DenyReport>();
const NOT_AUDIT = () => false;

/** The side that decided: egress when it denied, else ingress (as the engine checks egress first). */
function denyingSide(v: Verdict): Direction {
  return v.egress.result === "denied" ? "egress" : "ingress";
}

/** What decided a reported decision (a drop, or an AuditDecision), made once per cached verdict. */
export function reportOf(r: { allowed: boolean }): DenyReport | undefined {
  const d = r as Verdict | AuditDecision;
  let rep = reports.get(d);
  if (rep) return rep;
  if ("audit" in d) {
    const side = denyingSide(d.audit);
    const keys = d.auditKeys;
    rep = {
      ...attributionOf("audit-deny", side, d.audit[side], (k) => keys.has(k)),
      src: d.audit.src,
      dst: d.audit.dst,
    };
  } else if (!d.allowed && d.ingress && d.egress) {
    const side = denyingSide(d);
    rep = { ...attributionOf("deny", side, d[side], NOT_AUDIT), src: d.src, dst: d.dst };
  } else return undefined;
  reports.set(d, rep);
  return rep;
}

export function createDecider(
  table: unknown,
): (src: string, dst: string, proto: number, dport: number) => Verdict | AuditDecision {
  const snap = table as TableSnapshot;
  if (!snap || !Array.isArray(snap.endpoints) || !Array.isArray(snap.policies)) {
    throw new Error("not a podwall table snapshot");
  }
  const source = new SnapshotSource(snap);
  const cache = new VerdictCache(source, 1 << 18);
  const audits = source.audited ? new VerdictCache(source, 1 << 16, withAudit) : undefined;
  const wrapped = new WeakMap<Verdict, AuditDecision>();
  return (src, dst, proto, dport) => {
    const before = cache.stats.misses;
    const v = cache.lookup(src, dst, proto as ProtoNum, dport);
    if (cache.stats.misses === before) cacheHits++;
    else cacheMisses++;
    count(v);
    if (!audits || !v.allowed) return v;
    const a = audits.lookup(src, dst, proto as ProtoNum, dport);
    if (a.allowed) return v;
    let d = wrapped.get(a);
    if (!d) wrapped.set(a, (d = { allowed: true, audit: a, auditKeys: source.auditKeys }));
    countAudit(d);
    return d;
  };
}
