/**
 * kinds/options: how a policy kind's parser reads an object.
 *
 * Owns: the difference between the two places objects come from. Manifests (files, `simulate`) are
 * read as kubectl reads them: apiVersion and kind required, unknown fields rejected (strict field
 * validation). Objects from the API server passed its validation and schema already; a field
 * podwall does not know there is one a newer API version added, so the rule holding it fails closed
 * (reported), as the policy APIs prescribe, instead of rejecting the whole object.
 * May not: hold logic.
 */
export interface ParseOptions {
  source: "manifest" | "api";
  /**
   * For an object the API server stored but podwall cannot compile: instead of rejecting it whole,
   * each rule that does not compile fails closed as the policy APIs prescribe (an accept rule allows
   * nothing; a deny or pass rule, or one whose action cannot be read, denies everything it covers),
   * so podwall never enforces less than the object the cluster holds. Its metadata and subject must
   * still be readable: guessing whom a policy covers is never safe.
   */
  salvage?: boolean;
}

export const FROM_MANIFEST: ParseOptions = { source: "manifest" };
export const FROM_API: ParseOptions = { source: "api" };
export const SALVAGE_FROM_API: ParseOptions = { source: "api", salvage: true };

export function isStrict(o: ParseOptions): boolean {
  return o.source === "manifest";
}
