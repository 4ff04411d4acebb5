/**
 * selectors: LabelSelector -> a compiled matcher with a canonical key.
 *
 * Owns: matchLabels/matchExpressions semantics (In, NotIn, Exists, DoesNotExist) and the canonical
 * text that makes equal selectors share one selector-cache entry however they were written.
 * May not: know about pods or policies; throws InputError (with the field) on invalid selectors.
 */
import { InputError } from "./errors.js";

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

export function compileSelector(raw: unknown, object: string, field: string): LabelMatcher {
  if (raw === null || raw === undefined) return compileSelector({}, object, field);
  if (typeof raw !== "object" || Array.isArray(raw))
    throw new InputError(object, field, "must be a label selector object");
  const sel = raw as { matchLabels?: unknown; matchExpressions?: unknown };
  const reqs: Req[] = [];
  if (sel.matchLabels !== undefined && sel.matchLabels !== null) {
    if (typeof sel.matchLabels !== "object" || Array.isArray(sel.matchLabels)) {
      throw new InputError(object, `${field}.matchLabels`, "must be a map of strings");
    }
    for (const [k, v] of Object.entries(sel.matchLabels as Record<string, unknown>)) {
      if (typeof v !== "string")
        throw new InputError(object, `${field}.matchLabels.${k}`, "value must be a string");
      reqs.push({ key: k, op: "Eq", value: v });
    }
  }
  if (sel.matchExpressions !== undefined && sel.matchExpressions !== null) {
    if (!Array.isArray(sel.matchExpressions))
      throw new InputError(object, `${field}.matchExpressions`, "must be a list");
    sel.matchExpressions.forEach((e: unknown, i: number) => {
      const f = `${field}.matchExpressions[${i}]`;
      const ex = (e ?? {}) as { key?: unknown; operator?: unknown; values?: unknown };
      if (typeof ex.key !== "string" || !ex.key) throw new InputError(object, `${f}.key`, "missing");
      if (typeof ex.operator !== "string" || !OPS.has(ex.operator)) {
        throw new InputError(
          object,
          `${f}.operator`,
          `unknown operator ${JSON.stringify(ex.operator)} (In, NotIn, Exists, DoesNotExist)`,
        );
      }
      const values = ex.values ?? [];
      if (!Array.isArray(values) || values.some((v) => typeof v !== "string")) {
        throw new InputError(object, `${f}.values`, "must be a list of strings");
      }
      if (ex.operator === "In" || ex.operator === "NotIn") {
        if (values.length === 0)
          throw new InputError(object, `${f}.values`, `must be non-empty for ${ex.operator}`);
        reqs.push({ key: ex.key, op: ex.operator, values: new Set(values as string[]) });
      } else {
        if (values.length > 0)
          throw new InputError(object, `${f}.values`, `must be empty for ${ex.operator}`);
        reqs.push({ key: ex.key, op: ex.operator as "Exists" | "DoesNotExist" });
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
