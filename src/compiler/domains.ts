/**
 * domains: egress to names. The `domainNames` peers policies use, and the addresses each pod has
 * learned for names from the DNS answers it received (the agent's DNS path reports them; this module
 * never resolves anything).
 *
 * Owns: name patterns as the ClusterNetworkPolicy API defines them (exact names, case-insensitive, a
 * final dot ignored; `*.example.com` matches one or more whole labels before `example.com`, never
 * the bare domain), one entry per distinct pattern list shared by every rule that uses it, and per
 * pod the learned (address -> name -> expiry) map. An address matches a domain peer for a pod only
 * while that pod has an unexpired answer naming it under a matching name.
 * May not: do I/O or read the clock itself (the table passes `now`).
 */

export interface DomainSetEntry {
  readonly id: number;
  /** Canonical patterns (lowercase, no final dot), sorted. */
  readonly names: readonly string[];
  refs: number;
}

export interface Learned {
  /** When the answer arrived, and when it stops counting (ms since the epoch). */
  readonly at: number;
  readonly expires: number;
}

const NONE: readonly number[] = Object.freeze([]);

/** Lowercase, without a final dot: how names are compared. */
export function canonicalName(n: string): string {
  const l = n.toLowerCase();
  return l.endsWith(".") ? l.slice(0, -1) : l;
}

/** Does `name` (canonical) match `pattern` (canonical)? */
export function nameMatches(pattern: string, name: string): boolean {
  if (!pattern.startsWith("*.")) return pattern === name;
  const suffix = pattern.slice(1); // ".example.com"
  return name.length > suffix.length && name.endsWith(suffix);
}

export class DomainIndex {
  private readonly sets = new Map<string, DomainSetEntry>();
  /** pod key -> address -> name -> learned */
  private readonly learned = new Map<string, Map<string, Map<string, Learned>>>();
  private memo = new Map<string, readonly number[]>();
  /** The earliest expiry among learned entries (for the agent's expiry timer). */
  private nextExpiry = Number.POSITIVE_INFINITY;

  acquire(names: readonly string[], nextId: () => number): DomainSetEntry {
    const canon = [...new Set(names.map(canonicalName))].sort();
    const key = JSON.stringify(canon);
    let e = this.sets.get(key);
    if (e) {
      e.refs++;
      return e;
    }
    e = { id: nextId(), names: canon, refs: 1 };
    this.sets.set(key, e);
    this.memo.clear();
    return e;
  }

  release(e: DomainSetEntry): void {
    if (--e.refs > 0) return;
    this.sets.delete(JSON.stringify(e.names));
    this.memo.clear();
  }

  allSets(): IterableIterator<DomainSetEntry> {
    return this.sets.values();
  }

  /**
   * A pod received an answer: `names` (the query and its CNAME chain) resolve to `ips` for `ttlMs`.
   * Returns true when a verdict may change (a new address or name, or a later expiry).
   */
  learn(pod: string, names: readonly string[], ips: readonly string[], ttlMs: number, now: number): boolean {
    let byIP = this.learned.get(pod);
    if (!byIP) this.learned.set(pod, (byIP = new Map()));
    const expires = now + ttlMs;
    let changed = false;
    for (const ip of ips) {
      let byName = byIP.get(ip);
      if (!byName) byIP.set(ip, (byName = new Map()));
      for (const raw of names) {
        const name = canonicalName(raw);
        const prev = byName.get(name);
        if (prev && prev.expires >= expires) continue;
        byName.set(name, { at: now, expires });
        changed = true;
      }
    }
    if (changed) {
      this.memo.clear();
      if (expires < this.nextExpiry) this.nextExpiry = expires;
    }
    return changed;
  }

  /** Drop what expired by `now`; true when anything went. */
  expire(now: number): boolean {
    if (now < this.nextExpiry) return false;
    let changed = false;
    let next = Number.POSITIVE_INFINITY;
    for (const [pod, byIP] of this.learned) {
      for (const [ip, byName] of byIP) {
        for (const [name, l] of byName) {
          if (l.expires <= now) {
            byName.delete(name);
            changed = true;
          } else if (l.expires < next) next = l.expires;
        }
        if (byName.size === 0) byIP.delete(ip);
      }
      if (byIP.size === 0) this.learned.delete(pod);
    }
    this.nextExpiry = next;
    if (changed) this.memo.clear();
    return changed;
  }

  forgetPod(pod: string): boolean {
    const had = this.learned.delete(pod);
    if (had) this.memo.clear();
    return had;
  }

  /** Has `pod` learned any name (so its egress verdicts may differ from its identity's)? */
  hasLearned(pod: string): boolean {
    return this.learned.has(pod);
  }

  /** Earliest expiry of anything learned, or Infinity. */
  get earliestExpiry(): number {
    return this.nextExpiry;
  }

  /** Ids of the domain peers that `ip` matches for `pod` at `now`. */
  setsFor(pod: string, ip: string, now: number): readonly number[] {
    const byName = this.learned.get(pod)?.get(ip);
    if (!byName) return NONE;
    const k = `${pod}|${ip}`;
    const hit = this.memo.get(k);
    // Memoized answers hold only while nothing in them expired; expiry clears the memo.
    if (hit !== undefined && now < this.nextExpiry) return hit;
    const ids: number[] = [];
    for (const s of this.sets.values()) {
      for (const [name, l] of byName) {
        if (l.expires > now && s.names.some((p) => nameMatches(p, name))) {
          ids.push(s.id);
          break;
        }
      }
    }
    const r = ids.length ? ids : NONE;
    if (this.memo.size >= 100_000) this.memo.clear();
    this.memo.set(k, r);
    return r;
  }

  /** The learned names of `pod` for `ip` that match a domain set, for explain. */
  why(
    pod: string,
    ip: string,
    set: DomainSetEntry,
    now: number,
  ): { name: string; learned: Learned } | undefined {
    for (const [name, l] of this.learned.get(pod)?.get(ip) ?? []) {
      if (l.expires > now && set.names.some((p) => nameMatches(p, name))) return { name, learned: l };
    }
    return undefined;
  }

  /** Every unexpired (pod, ip, set ids, earliest expiry) for snapshots. */
  *entries(now: number): Generator<[string, string, [number, number][]]> {
    for (const [pod, byIP] of this.learned) {
      for (const [ip, byName] of byIP) {
        const out: [number, number][] = [];
        for (const s of this.sets.values()) {
          let best = 0;
          for (const [name, l] of byName)
            if (l.expires > now && l.expires > best && s.names.some((p) => nameMatches(p, name)))
              best = l.expires;
          if (best > 0) out.push([s.id, best]);
        }
        if (out.length) yield [pod, ip, out];
      }
    }
  }

  /** Learned addresses of a pod for a set (the kernel's per-pod set members, with seconds left). */
  addressesFor(pod: string, set: DomainSetEntry, now: number): { ip: string; secondsLeft: number }[] {
    const out: { ip: string; secondsLeft: number }[] = [];
    for (const [ip, byName] of this.learned.get(pod) ?? []) {
      let best = 0;
      for (const [name, l] of byName)
        if (l.expires > now && l.expires > best && set.names.some((p) => nameMatches(p, name)))
          best = l.expires;
      if (best > 0) out.push({ ip, secondsLeft: Math.ceil((best - now) / 1000) });
    }
    return out.sort((a, b) => (a.ip < b.ip ? -1 : 1));
  }
}
