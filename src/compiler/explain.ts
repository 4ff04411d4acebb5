/**
 * explain: a verdict in words, for `podwall explain` and the deny logs.
 *
 * Owns: naming, per direction, which policies isolate each side and which rule (policy, rule index,
 * peer, ports) allows the flow, or why none does.
 * May not: decide anything itself: it narrates the engine's verdict over the same table.
 */
import { type DirectionVerdict, decide, peerIndex, type Verdict } from "./engine.js";
import { type Flow, PROTO_NAMES } from "./model.js";
import { describePeer } from "./policy.js";
import { describePort, portsMatch } from "./ports.js";
import type { PodRecord, PolicyTable } from "./table.js";

/** Why each rule of the isolating policies fails this flow: the port, the peer, or both. */
function ruleMisses(
  table: PolicyTable,
  dir: "ingress" | "egress",
  flow: Flow,
  v: DirectionVerdict,
): string[] {
  const otherIP = dir === "ingress" ? flow.src : flow.dst;
  const other: PodRecord | undefined = table.endpoint(otherIP);
  const dstPorts = table.endpoint(flow.dst)?.ports;
  const out: string[] = [];
  for (const key of v.policies) {
    const rules = table.policy(key)?.[dir] ?? [];
    if (rules.length === 0) {
      out.push(`${key}: no ${dir} rules (it only isolates)`);
      continue;
    }
    for (const r of rules) {
      const portOk = portsMatch(r.ports, flow.proto, flow.port, dstPorts);
      const peerOk = peerIndex(r.peers, other, otherIP, table) !== -2;
      const why: string[] = [];
      if (!portOk)
        why.push(
          `port ${flow.port}/${PROTO_NAMES[flow.proto]} is not in ${r.ports!.map(describePort).join(", ")}`,
        );
      if (!peerOk) {
        const who = other ? other.key : otherIP;
        why.push(`${who} is not in ${r.peers!.map((p) => describePeer(p.spec)).join(" or ")}`);
      }
      if (why.length) out.push(`${key} ${dir} rule ${r.index}: ${why.join("; and ")}`);
    }
  }
  return out;
}

function describeRule(table: PolicyTable, dir: "ingress" | "egress", v: DirectionVerdict): string {
  const by = v.by!;
  const pol = table.policy(by.policy);
  const rule = pol?.spec[dir]?.[by.rule];
  const field = dir === "ingress" ? "from" : "to";
  const peer =
    by.peer < 0 || !rule?.peers
      ? `no ${field} list (every peer)`
      : `${field}[${by.peer}] ${describePeer(rule.peers[by.peer])}`;
  const ports = rule?.ports ? rule.ports.map(describePort).join(", ") : "all ports";
  return `allowed by NetworkPolicy ${by.policy}, ${dir} rule ${by.rule}: ${peer}; ports ${ports}`;
}

function side(
  table: PolicyTable,
  dir: "ingress" | "egress",
  who: string | undefined,
  v: DirectionVerdict,
  flow: Flow,
): string[] {
  const label = dir === "egress" ? "egress (at the source)" : "ingress (at the destination)";
  if (!who)
    return [
      `${label}: ${dir === "egress" ? "source" : "destination"} is not a pod policy can select; not isolated`,
    ];
  if (v.result === "not-isolated")
    return [
      `${label}: ${who} is not isolated for ${dir} (no NetworkPolicy with ${dir === "egress" ? "Egress" : "Ingress"} in policyTypes selects it): allowed`,
    ];
  const lines = [`${label}: ${who} is isolated for ${dir} by ${v.policies.join(", ")}`];
  if (v.result === "allowed") lines.push(`  ${describeRule(table, dir, v)}`);
  else {
    lines.push(`  denied: no ${dir} rule of these policies matches both the peer and the port:`);
    for (const m of ruleMisses(table, dir, flow, v)) lines.push(`    - ${m}`);
  }
  return lines;
}

export function explainVerdict(table: PolicyTable, flow: Flow, v: Verdict): string {
  const proto = PROTO_NAMES[flow.proto];
  const from = v.src ? `${v.src} (${flow.src})` : flow.src;
  const to = v.dst ? `${v.dst} (${flow.dst})` : flow.dst;
  const lines = [`${from} -> ${to} on ${flow.port}/${proto}: ${v.allowed ? "ALLOWED" : "DENIED"}`];
  if (v.loopback) {
    lines.push("  a pod talking to its own address is never filtered");
    return lines.join("\n");
  }
  lines.push(...side(table, "egress", v.src, v.egress, flow).map((l) => `  ${l}`));
  lines.push(...side(table, "ingress", v.dst, v.ingress, flow).map((l) => `  ${l}`));
  return lines.join("\n");
}

export function explainFlow(table: PolicyTable, flow: Flow): { verdict: Verdict; text: string } {
  const verdict = decide(table, flow);
  return { verdict, text: explainVerdict(table, flow, verdict) };
}
