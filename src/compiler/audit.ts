/**
 * audit: audit mode (`podwall.io/enforcement: audit`) as every consumer reads it: the plan picker
 * that judges a flow with audit-only policies in force, and which policies an audit deny names.
 *
 * A flow is an audit deny when what is enforced allows it and the table with the audit policies in
 * force denies it. The line and the metric name the audit policies among those that decided (an
 * audit policy can also deny by isolating a pod, or by passing a flow on to a tier that denies it:
 * then no audit policy is among the deciders, and the deciders are named).
 * Owns: those two definitions. May not: decide anything itself (the engine does, with this picker).
 */
import type { DecisionSource, PlanPicker, PlanView } from "./engine.js";
import type { Direction } from "./model.js";

/** A decision source that also holds audit plans (the live table and the NFQUEUE snapshot do). */
export interface AuditPlanSource {
  /** The plan with audit-only policies in force (the enforced plan when none applies). */
  auditPlanById(identityId: number, dir: Direction): PlanView;
}

/** Judge each side with its audit plan: the verdict as if audit policies were enforced. */
export const withAudit: PlanPicker = (src: DecisionSource, id: number, dir: Direction) =>
  (src as DecisionSource & AuditPlanSource).auditPlanById(id, dir);

/** The policies an audit deny names: the audit ones among the deciders, else every decider. */
export function auditDeciders(policies: readonly string[], isAudit: (key: string) => boolean): string[] {
  const audit = policies.filter(isAudit);
  return audit.length > 0 ? audit : [...policies];
}
