/**
 * explain: a verdict in words, for `podwall explain` and the deny logs.
 *
 * Owns: narrating, per direction, the walk through the tiers the engine made: which admin rule
 * decided or passed, whether NetworkPolicies isolate the pod and which rule allows the flow (or why
 * none does), the baseline tier, the default; and saying when equal priorities made the choice.
 * Audit policies (podwall.io/enforcement: audit) are named, with what they would change; with
 * `withAudit` the walk is the one they would make if enforced.
 * Also the one-line summary of a verdict (`summarizeVerdict`) that `podwall diff` prints per cell.
 * May not: decide anything itself: it replays the engine's own tier matching over the same table.
 */
import { withAudit as auditPicker } from "./audit.js";
import {
  type DecisionSource,
  type DirectionVerdict,
  decide,
  type EndpointView,
  type PlanView,
  type PolicyView,
  peerIndex,
  tierMatch,
  type Verdict,
} from "./engine.js";
import { type Direction, type Flow, PROTO_NAMES } from "./model.js";
import { portsMatch } from "./ports.js";
import {
  describePeer,
  describePolicy,
  describePorts,
  kindOfKey,
  type RuleSpec,
  tierName,
} from "./rule-model.js";
import type { PolicyTable } from "./table.js";

interface Ctx {
  table: PolicyTable;
  flow: Flow;
  dir: Direction;
  other: EndpointView | undefined;
  otherIP: string;
  /** The pod whose side this is (its learned names decide domainNames peers). */
  self: EndpointView | undefined;
  dstPorts: EndpointView["ports"] | undefined;
}

function ruleSpec(table: PolicyTable, policy: string, dir: Direction, index: number): RuleSpec | undefined {
  return table.policy(policy)?.spec[dir]?.[index];
}

function polName(table: PolicyTable, key: string): string {
  const rec = table.policy(key);
  if (!rec) return key;
  const name = describePolicy({ kind: rec.spec.kind, key, tier: rec.tier, priority: rec.priority });
  return rec.spec.audit ? `${name} [audit]` : name;
}

/** A policy key, marked when the policy is audit-only. */
function keyName(table: PolicyTable, key: string): string {
  return table.policy(key)?.spec.audit ? `${key} [audit]` : key;
}

function ruleName(table: PolicyTable, key: string, dir: Direction, index: number): string {
  const r = ruleSpec(table, key, dir, index);
  return `${dir} rule ${index}${r?.name ? ` '${r.name}'` : ""}`;
}

/** "from[1] pods {app=x} in namespace y; ports 80/TCP". */
function ruleMatch(c: Ctx, v: DirectionVerdict): string {
  const by = v.by!;
  const rule = ruleSpec(c.table, by.policy, c.dir, by.rule);
  const field = c.dir === "ingress" ? "from" : "to";
  const peer =
    by.peer < 0 || !rule?.peers
      ? `no ${field} list (every peer)`
      : `${field}[${by.peer}] ${describePeer(rule.peers[by.peer])}`;
  return `${peer}${learnedNote(c, by.policy, by.rule, by.peer)}; ports ${describePorts(rule?.ports ?? null)}`;
}

/** For a domainNames peer: the name the pod learned the address under, how long ago, and its TTL. */
function learnedNote(c: Ctx, policy: string, rule: number, peer: number): string {
  const p = c.table.policy(policy)?.[c.dir]?.[rule]?.peers?.[peer];
  const self = c.table.endpoint(c.flow.src);
  if (p?.kind !== "domains" || !self) return "";
  const now = c.table.now();
  const w = c.table.domainIndex.why(self.key, c.otherIP, p.domains, now);
  if (!w) return "";
  const ago = Math.round((now - w.learned.at) / 1000);
  const ttl = Math.round((w.learned.expires - w.learned.at) / 1000);
  return `: ${w.name} (learned from DNS ${ago} s ago, TTL ${ttl} s)`;
}

/** Why each rule of the isolating NetworkPolicies fails this flow: the port, the peer, or both. */
function ruleMisses(c: Ctx, pols: readonly PolicyView[]): string[] {
  const out: string[] = [];
  for (const pol of pols) {
    const rules = pol[c.dir] ?? [];
    if (rules.length === 0) {
      out.push(`${pol.key}: no ${c.dir} rules (it only isolates)`);
      continue;
    }
    for (const r of rules) {
      const spec = ruleSpec(c.table, pol.key, c.dir, r.index);
      const portOk = portsMatch(r.ports, c.flow.proto, c.flow.port, c.dstPorts);
      const peerOk = peerIndex(r.peers, c.other, c.otherIP, c.table, c.self) !== -2;
      const why: string[] = [];
      if (!portOk)
        why.push(`port ${c.flow.port}/${PROTO_NAMES[c.flow.proto]} is not in ${describePorts(r.ports)}`);
      if (!peerOk) {
        const who = c.other ? c.other.key : c.otherIP;
        why.push(`${who} is not in ${(spec?.peers ?? []).map(describePeer).join(" or ")}`);
      }
      if (why.length) out.push(`${pol.key} ${c.dir} rule ${r.index}: ${why.join("; and ")}`);
    }
  }
  return out;
}

/** Other policies of the same tier and priority with a rule matching this flow: the name order chose. */
function tieNote(c: Ctx, list: readonly PolicyView[], decided: string): string | undefined {
  const winner = list.find((p) => p.key === decided);
  if (!winner) return undefined;
  const rivals = list.filter(
    (p) =>
      p.key !== decided &&
      p.priority === winner.priority &&
      (p[c.dir] ?? []).some(
        (r) =>
          portsMatch(r.ports, c.flow.proto, c.flow.port, c.dstPorts) &&
          peerIndex(r.peers, c.other, c.otherIP, c.table, c.self) !== -2,
      ),
  );
  if (rivals.length === 0) return undefined;
  return `note: ${[decided, ...rivals.map((r) => r.key)].map((k) => polName(c.table, k)).join(" and ")} share priority ${winner.priority} and all match; podwall orders equal priorities by name, so ${polName(c.table, decided)} decided`;
}

/** Walk one side's plan as the engine does, in words. */
function walk(c: Ctx, plan: PlanView, v: DirectionVerdict): string[] {
  const lines: string[] = [];
  const { table, flow, dir, other, otherIP, dstPorts } = c;
  const match = (list: readonly PolicyView[]) =>
    tierMatch(table, list, dir, other, otherIP, flow.proto, flow.port, dstPorts, c.self);
  for (const tier of ["admin", "namespaced", "baseline"] as const) {
    const list = plan[tier];
    if (list.length === 0) continue;
    if (tier === "namespaced") {
      lines.push(
        `NetworkPolicy tier: isolated for ${dir} by ${list.map((p) => keyName(table, p.key)).join(", ")}`,
      );
      const m = match(list);
      if (m)
        lines.push(
          `  allowed by NetworkPolicy ${keyName(table, m.by!.policy)}, ${dir} rule ${m.by!.rule}: ${ruleMatch(c, m)}`,
        );
      else {
        lines.push(`  denied: no ${dir} rule of these policies matches both the peer and the port:`);
        for (const miss of ruleMisses(c, list)) lines.push(`    - ${miss}`);
      }
      return lines;
    }
    const m = match(list);
    const label = `${tierName(tier)} tier (${list.length} ${list.length === 1 ? "policy" : "policies"})`;
    if (!m) {
      lines.push(`${label}: no rule matches`);
      continue;
    }
    const by = m.by!;
    const what = `${polName(table, by.policy)}, ${ruleName(table, by.policy, dir, by.rule)}: ${ruleMatch(c, m)}`;
    const note = tieNote(c, list, by.policy);
    if (by.action === "pass") {
      const next = tier === "admin" ? "the NetworkPolicy tier" : "the default (allow)";
      lines.push(`${label}: passed to ${next} by ${what}`);
      if (note) lines.push(`  ${note}`);
      continue;
    }
    lines.push(`${label}: ${by.action === "accept" ? "allowed" : "denied"} by ${what}`);
    if (note) lines.push(`  ${note}`);
    return lines;
  }
  if (v.result === "not-isolated") lines.push("no tier decided: allowed (the default)");
  return lines;
}

function side(
  table: PolicyTable,
  dir: Direction,
  who: string | undefined,
  v: DirectionVerdict,
  flow: Flow,
  plan: PlanView | undefined,
): string[] {
  const label = dir === "egress" ? "egress (at the source)" : "ingress (at the destination)";
  if (!who || !plan)
    return [
      `${label}: ${dir === "egress" ? "source" : "destination"} is not a pod policy can select; not isolated`,
    ];
  if (plan.empty)
    return [
      `${label}: ${who} is not isolated for ${dir} (no NetworkPolicy with ${dir === "egress" ? "Egress" : "Ingress"} in policyTypes selects it, and no cluster policy applies): allowed`,
    ];
  const otherIP = dir === "ingress" ? flow.src : flow.dst;
  const c: Ctx = {
    table,
    flow,
    dir,
    other: table.endpoint(otherIP),
    otherIP,
    self: table.endpoint(dir === "ingress" ? flow.dst : flow.src),
    dstPorts: table.endpoint(flow.dst)?.ports,
  };
  const lines = [`${label}: ${who}`, ...walk(c, plan, v).map((l) => `  ${l}`)];
  if (v.exempt === "node")
    lines.push(`  but ${flow.src} is an address of ${who}'s own node, which may always reach it: allowed`);
  return lines;
}

export interface ExplainOptions {
  /** Judge with audit policies in force, as if they were enforced. */
  withAudit?: boolean;
}

/** Audit-only policies that apply to the flow's source (egress) or destination (ingress). */
export function auditPoliciesOn(table: PolicyTable, flow: Flow): string[] {
  const out = new Set<string>();
  for (const [ip, dir] of [
    [flow.src, "egress"],
    [flow.dst, "ingress"],
  ] as const) {
    const e = table.endpoint(ip);
    const plan = e ? table.auditPlanById(e.identityId, dir) : undefined;
    for (const list of plan ? [plan.admin, plan.namespaced, plan.baseline] : [])
      for (const p of list) if (table.policy(p.key)?.spec.audit) out.add(p.key);
  }
  return [...out].sort();
}

export function explainVerdict(
  table: PolicyTable,
  flow: Flow,
  v: Verdict,
  opts: ExplainOptions = {},
): string {
  const proto = PROTO_NAMES[flow.proto];
  const from = v.src ? `${v.src} (${flow.src})` : flow.src;
  const to = v.dst ? `${v.dst} (${flow.dst})` : flow.dst;
  const as = opts.withAudit ? " (audit policies in force, as if enforced)" : "";
  const lines = [`${from} -> ${to} on ${flow.port}/${proto}: ${v.allowed ? "ALLOWED" : "DENIED"}${as}`];
  if (v.loopback) {
    lines.push("  a pod talking to its own address is never filtered");
    return lines.join("\n");
  }
  const plans = (ip: string, dir: Direction) => {
    const e = table.endpoint(ip);
    if (!e) return undefined;
    return opts.withAudit ? table.auditPlanById(e.identityId, dir) : table.planById(e.identityId, dir);
  };
  lines.push(...side(table, "egress", v.src, v.egress, flow, plans(flow.src, "egress")).map((l) => `  ${l}`));
  lines.push(
    ...side(table, "ingress", v.dst, v.ingress, flow, plans(flow.dst, "ingress")).map((l) => `  ${l}`),
  );
  const unenforced = new Set<string>();
  for (const dir of ["egress", "ingress"] as const) {
    const plan = plans(dir === "egress" ? flow.src : flow.dst, dir);
    for (const list of plan ? [plan.admin, plan.namespaced, plan.baseline] : [])
      for (const p of list)
        for (const n of table.policy(p.key)?.spec.notEnforced ?? [])
          unenforced.add(`${polName(table, p.key)}: ${n}`);
  }
  for (const n of unenforced) lines.push(`  not fully enforced: ${n}`);
  const audit = auditPoliciesOn(table, flow);
  if (audit.length > 0 && !opts.withAudit) {
    lines.push(
      `  audit policies here (evaluated, not enforced): ${audit.map((k) => polName(table, k)).join(", ")}`,
    );
    const a = decide(table, flow, auditPicker);
    if (a.allowed === v.allowed)
      lines.push(`    with them enforced: still ${a.allowed ? "ALLOWED" : "DENIED"}`);
    else {
      const dir = a.egress.result === "denied" ? "egress" : "ingress";
      lines.push(
        `    with them enforced: ${a.allowed ? "ALLOWED" : `DENIED on ${dir} by ${a[dir].policies.map((k) => polName(table, k)).join(", ")}`} (--with-audit shows the walk)`,
      );
    }
  }
  return lines.join("\n");
}

export function explainFlow(
  table: PolicyTable,
  flow: Flow,
  opts: ExplainOptions = {},
): { verdict: Verdict; text: string } {
  const verdict = decide(table, flow, opts.withAudit ? auditPicker : undefined);
  return { verdict, text: explainVerdict(table, flow, verdict, opts) };
}

/** "ClusterNetworkPolicy guard rule 2 'deny-dev' (Deny)", for deny logs. */
export function describeRuleRef(
  table: DecisionSource & PolicyTable,
  v: DirectionVerdict,
  dir: Direction,
): string {
  if (!v.by) return v.policies.join(", ");
  const kind = kindOfKey(v.by.policy);
  return `${kind} ${v.by.policy} ${ruleName(table, v.by.policy, dir, v.by.rule)} (${v.by.action})`;
}

/** One side of a verdict in a few words: the tier, policy, rule and action that decided, or why none did. */
export function summarizeSide(table: PolicyTable, v: DirectionVerdict, dir: Direction): string {
  if (v.exempt === "node") return `${dir} allowed: the destination's own node may always reach it`;
  if (v.result === "not-isolated") return `${dir} not isolated`;
  const verb = v.result === "allowed" ? "allowed" : "denied";
  if (!v.by) return `${dir} denied: NetworkPolicy default deny (isolated by ${v.policies.join(", ")})`;
  const by = v.by;
  const action = v.tier === "namespaced" ? "" : ` (${by.action})`;
  return `${dir} ${verb} by ${polName(table, by.policy)}, ${ruleName(table, by.policy, dir, by.rule)}${action}`;
}

/**
 * A verdict in one line, for `podwall diff`: "denied: egress not isolated; ingress denied: NetworkPolicy
 * default deny (isolated by shop/default-deny)". Both sides are named, egress (at the source) first.
 */
export function summarizeVerdict(table: PolicyTable, v: Verdict): string {
  if (v.loopback) return "allowed: a pod talking to its own address is never filtered";
  return `${v.allowed ? "allowed" : "denied"}: ${summarizeSide(table, v.egress, "egress")}; ${summarizeSide(table, v.ingress, "ingress")}`;
}
