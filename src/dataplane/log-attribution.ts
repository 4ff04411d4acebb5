/**
 * log-attribution: what the dataplanes report a verdict as: the deciding policies, tier, rule and
 * action of a deny (or an audit deny), and which policy verdict a kernel rule's counter counts.
 *
 * Deny-log ids (iptables): the NFLOG prefix cannot hold a policy's name (63 bytes), so a deny-log chain
 * carries a 16-hex id, a hash of what decided: (event, policy key, its fingerprint, direction, rule
 * index) for a rule, (event, direction, the isolating policies) for the NetworkPolicy tier's default
 * deny, (direction) for a pod with no address in the family. An id never changes meaning: a changed
 * policy gets new ids, so an agent may keep old ids for records still in flight. The renderer hands
 * the agent every id with its attribution on each sync.
 * Owns: those shapes, the ids and the deny-log chain names. May not: run commands.
 */
import { auditDeciders } from "../compiler/audit.js";
import type { DirectionVerdict } from "../compiler/engine.js";
import type { Direction } from "../compiler/model.js";
import type { Action, Tier } from "../compiler/rule-model.js";
import type { DenyLogEvent } from "./deny-log-rules.js";
import { shortHash } from "./rule-layer.js";

/** What decided one deny (or audit deny), as the deny line reports it. */
export interface LogAttribution {
  readonly event: DenyLogEvent;
  readonly direction: Direction;
  /** Policy keys: the isolating NetworkPolicies, or the cluster policy whose rule matched. */
  readonly policies: readonly string[];
  readonly tier?: Tier;
  /** The deciding rule (absent for the NetworkPolicy tier's default deny). */
  readonly rule?: { readonly index: number; readonly name: string };
  readonly action?: Action;
  /** A deny no policy rule made: the pod has no address in this family (it could only spoof). */
  readonly reason?: "no-address";
}

/** What a kernel rule's packet counter counts, per policy (podwall_policy_verdicts_total and audit). */
export interface RuleCount {
  readonly policies: readonly string[];
  readonly direction: Direction;
  readonly result: "allow" | "deny" | "audit-deny";
}

const DENY_CHAIN = "PODWALL-DL-";
const AUDIT_CHAIN = "PODWALL-AL-";

/** The deny-log chain of an id: PODWALL-DL-<id> (deny) or PODWALL-AL-<id> (audit), 27 characters. */
export function logChainName(event: DenyLogEvent, id: string): string {
  return `${event === "deny" ? DENY_CHAIN : AUDIT_CHAIN}${id}`;
}

/** The id of a policy rule's deny. */
export function ruleLogId(
  event: DenyLogEvent,
  policyKey: string,
  fingerprint: string,
  dir: Direction,
  index: number,
): string {
  return shortHash(`${event}\u0000rule\u0000${policyKey}\u0000${fingerprint}\u0000${dir}\u0000${index}`);
}

/** The id of the NetworkPolicy tier's default deny for this set of isolating policies. */
export function defaultDenyLogId(event: DenyLogEvent, dir: Direction, policyKeys: readonly string[]): string {
  return shortHash(`${event}\u0000default\u0000${dir}\u0000${policyKeys.join("\u0000")}`);
}

/** The id of the deny for a governed pod with no address in the packet's family. */
export function noAddressLogId(dir: Direction): string {
  return shortHash(`deny\u0000no-address\u0000${dir}`);
}

/**
 * A side's verdict (denied) as a deny line reports it; for an audit deny, `isAudit` picks the
 * audit policies among the deciders (see compiler/audit.ts).
 */
export function attributionOf(
  event: DenyLogEvent,
  direction: Direction,
  v: DirectionVerdict,
  isAudit: (key: string) => boolean,
): LogAttribution {
  return {
    event,
    direction,
    policies: event === "audit-deny" ? auditDeciders(v.policies, isAudit) : [...v.policies],
    ...(v.tier ? { tier: v.tier } : {}),
    ...(v.by ? { rule: { index: v.by.rule, name: v.by.name } } : {}),
    action: v.by?.action ?? "deny",
  };
}
