/**
 * selectors: LabelSelector -> a compiled matcher with a canonical key.
 *
 * Owns: matchLabels/matchExpressions semantics (In, NotIn, Exists, DoesNotExist) and the canonical
 * text that makes equal selectors share one selector-cache entry however they were written.
 * May not: know about pods or policies; throws InputError (with the field) on invalid selectors,
 * with the API server's rules for keys and values (k8s-meta).
 */
import { InputError } from "./errors.js";
import { fieldPath, isObj, labelValue, own, qualifiedName, unknownFields } from "./k8s-meta.js";

type Req =
  | { key: string; op: "Eq"; value: string }
  | { key: string; op: "In" | "NotIn"; values: ReadonlySet<string> }
  | { key: string; op: "Exists" | "DoesNotExist" };

export interface LabelMatcher {
  /** Canonical, unambiguous text; "{}" selects everything. */
  readonly key: string;
  /** For people: "{app=web,tier in (a,b)}". */
  readonly text: string;
  readonly empty: boolean;
  matches(labels: Readonly<Record<string, string>>): boolean;
}

function reqText(r: Req): string {
  switch (r.op) {
    case "Eq":
      return `${r.key}=${r.value}`;
    case "In":
    case "NotIn":
      return `${r.key} ${r.op === "In" ? "in" : "notin"} (${[...r.values].sort().join(",")})`;
    case "Exists":
      return r.key;
    case "DoesNotExist":
      return `!${r.key}`;
  }
}

/** JSON keeps keys and values unambiguous: `In ["a,b"]` and `In ["a","b"]` must not collide. */
function reqKey(r: Req): string {
  switch (r.op) {
    case "Eq":
      return JSON.stringify([r.key, "=", r.value]);
    case "In":
    case "NotIn":
      return JSON.stringify([r.key, r.op, [...r.values].sort()]);
    case "Exists":
    case "DoesNotExist":
      return JSON.stringify([r.key, r.op]);
  }
}

function matchReq(r: Req, labels: Readonly<Record<string, string>>): boolean {
  // Own properties only: "toString" or "constructor" are valid label keys, not inherited methods.
  const v = Object.hasOwn(labels, r.key) ? labels[r.key] : undefined;
  switch (r.op) {
    case "Eq":
      return v === r.value;
    case "In":
      return v !== undefined && r.values.has(v);
    case "NotIn":
      return v === undefined || !r.values.has(v);
    case "Exists":
      return v !== undefined;
    case "DoesNotExist":
      return v === undefined;
  }
}

const OPS = new Set(["In", "NotIn", "Exists", "DoesNotExist"]);

/**
 * Compile a LabelSelector, validated as the API server validates one (keys are qualified names,
 * values label values, operators and their value lists). Unknown fields are always an error: the
 * LabelSelector type is stable, so one can only be a typo.
 */
export function compileSelector(raw: unknown, object: string, field: string): LabelMatcher {
  if (raw === null || raw === undefined) return compileSelector({}, object, field);
  if (!isObj(raw)) throw new InputError(object, field, "must be a label selector object");
  unknownFields(raw, ["matchLabels", "matchExpressions"], object, field, true);
  const reqs: Req[] = [];
  const checkKey = (k: string, f: string) => {
    const e = qualifiedName(k);
    if (e) throw new InputError(object, f, `invalid label key ${JSON.stringify(k)}: ${e}`);
  };
  const checkValue = (v: string, f: string) => {
    const e = labelValue(v);
    if (e) throw new InputError(object, f, `invalid label value ${JSON.stringify(v)}: ${e}`);
  };
  const matchLabels = own(raw, "matchLabels");
  if (matchLabels !== undefined && matchLabels !== null) {
    if (!isObj(matchLabels)) throw new InputError(object, `${field}.matchLabels`, "must be a map of strings");
    for (const [k, v] of Object.entries(matchLabels)) {
      const f = fieldPath(`${field}.matchLabels`, k);
      if (typeof v !== "string") throw new InputError(object, f, "value must be a string");
      checkKey(k, f);
      checkValue(v, f);
      reqs.push({ key: k, op: "Eq", value: v });
    }
  }
  const matchExpressions = own(raw, "matchExpressions");
  if (matchExpressions !== undefined && matchExpressions !== null) {
    if (!Array.isArray(matchExpressions))
      throw new InputError(object, `${field}.matchExpressions`, "must be a list");
    matchExpressions.forEach((e: unknown, i: number) => {
      const f = `${field}.matchExpressions[${i}]`;
      if (!isObj(e)) throw new InputError(object, f, "must be an object");
      unknownFields(e, ["key", "operator", "values"], object, f, true);
      const key = own(e, "key");
      const operator = own(e, "operator");
      if (typeof key !== "string" || !key) throw new InputError(object, `${f}.key`, "missing");
      checkKey(key, `${f}.key`);
      if (typeof operator !== "string" || !OPS.has(operator)) {
        throw new InputError(
          object,
          `${f}.operator`,
          `unknown operator ${JSON.stringify(operator)} (In, NotIn, Exists, DoesNotExist)`,
        );
      }
      const values = own(e, "values") ?? [];
      if (!Array.isArray(values) || values.some((v) => typeof v !== "string")) {
        throw new InputError(object, `${f}.values`, "must be a list of strings");
      }
      for (const [j, v] of (values as string[]).entries()) checkValue(v, `${f}.values[${j}]`);
      if (operator === "In" || operator === "NotIn") {
        if (values.length === 0)
          throw new InputError(object, `${f}.values`, `must be non-empty for ${operator}`);
        reqs.push({ key, op: operator, values: new Set(values as string[]) });
      } else {
        if (values.length > 0) throw new InputError(object, `${f}.values`, `must be empty for ${operator}`);
        reqs.push({ key, op: operator as "Exists" | "DoesNotExist" });
      }
    });
  }
  const keys = [...new Set(reqs.map(reqKey))].sort();
  const key = `{${keys.join(",")}}`;
  const text = `{${[...new Set(reqs.map(reqText))].sort().join(",")}}`;
  const empty = reqs.length === 0;
  return {
    key,
    text,
    empty,
    matches: empty
      ? () => true
      : (labels) => {
          for (let i = 0; i < reqs.length; i++) if (!matchReq(reqs[i], labels)) return false;
          return true;
        },
  };
}
