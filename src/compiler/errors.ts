/**
 * errors: the one error type for bad input (a policy the API would reject, an unparsable IP).
 *
 * Owns: naming the object and the field, so an operator can fix the manifest; the CLI adds the file.
 * May not: log or exit; callers decide whether to skip the object or stop.
 */
export class InputError extends Error {
  constructor(
    /** "NetworkPolicy ns/name", "Pod ns/name". */
    readonly object: string,
    /** JSON path of the offending field, e.g. "spec.ingress[0].from[1].ipBlock.cidr". */
    readonly field: string,
    readonly detail: string,
  ) {
    super(`${object}: ${field}: ${detail}`);
    this.name = "InputError";
  }
}
