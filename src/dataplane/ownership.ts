/**
 * ownership: which kernel objects are podwall's. The applier adopts, rewrites and deletes exactly
 * these, and nothing else on the node.
 *
 * Owns: the rule that decides it, by name grammar and by reference, never by a rule's comment:
 * - a chain is ours iff its name is one podwall generates: PODWALL-FORWARD, -INPUT, -OUTPUT,
 *   -NOADDR, -DENY-LIMITED, PODWALL-ING-/PODWALL-EGR- plus 16 hex digits (a hash), or a pod's tier
 *   chain PODWALL-INGN-/INGB-/EGRN-/EGRB- plus 15 hex digits;
 * - an ipset is ours iff its name is PODWALL-, an optional T (the applier's swap temporary), S, D, F,
 *   B or N, the family (4 or 6), a dash and 16 hex digits;
 * A new kind of object needs its name here first: the applier refuses to create a name outside
 * this grammar (it could not tell it apart from a foreign one later).
 * - a rule is ours iff it sits in a chain of ours, or sits in a built-in chain and jumps (or goes)
 *   to a chain of ours: removing our chain removes the rules that lead into it.
 * Every podwall version so far named its objects this way, so state an older agent left is adopted
 * (and cleaned) as before. A foreign `PODWALL-LOG` chain or set, or a foreign rule whose comment
 * happens to read "pw:deadbeef", is not ours. Comments carry only the diff hash (render.ts).
 * May not: run commands.
 */

const CHAIN =
  /^PODWALL-(?:FORWARD|INPUT|OUTPUT|NOADDR|DENY-LIMITED|(?:ING|EGR)-[0-9a-f]{16}|(?:ING|EGR)[NB]-[0-9a-f]{15})$/;
const SET = /^PODWALL-T?[SDBNF][46]-[0-9a-f]{16}$/;
const TARGET = /(?:^| )-[jg] (\S+)/;

export function ownsChain(name: string): boolean {
  return CHAIN.test(name);
}

export function ownsSet(name: string): boolean {
  return SET.test(name);
}

/** The chain a saved rule spec jumps or goes to, if it is one of ours. */
export function ownedTarget(spec: string): string | undefined {
  const t = TARGET.exec(spec)?.[1];
  return t !== undefined && ownsChain(t) ? t : undefined;
}

/** The applier refuses to create what it would not recognize as its own afterwards. */
export function assertOwnedNames(chains: Iterable<string>, sets: Iterable<string>): void {
  for (const c of chains)
    if (!ownsChain(c)) throw new Error(`internal: rendered chain ${c} is outside podwall's name grammar`);
  for (const s of sets)
    if (!ownsSet(s)) throw new Error(`internal: rendered set ${s} is outside podwall's name grammar`);
}
