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
}

export const FROM_MANIFEST: ParseOptions = { source: "manifest" };
export const FROM_API: ParseOptions = { source: "api" };

export function isStrict(o: ParseOptions): boolean {
  return o.source === "manifest";
}
