/**
 * verdict-cache: the precomputed verdicts the hot path answers from.
 *
 * Owns: memoizing decide() per (src IP, dst IP, protocol, dst port). Nested maps keyed by the
 * strings the caller already holds, so a warm hit allocates nothing. Bounded: two generations
 * (young/old) of at most maxEntries/2 each give LRU-like eviction without per-hit bookkeeping.
 * Invalidated exactly when the source's generation moves (any table change).
 * May not: decide anything itself.
 */
import { type DecisionSource, decide, type Verdict } from "./engine.js";
import type { ProtoNum } from "./model.js";

type Level = Map<string, Map<string, Map<number, Verdict>>>;

export interface CacheStats {
  hits: number;
  misses: number;
  entries: number;
  invalidations: number;
}

export class VerdictCache {
  private young: Level = new Map();
  private old: Level = new Map();
  private youngSize = 0;
  private oldSize = 0;
  private generation: number;
  readonly stats: CacheStats = { hits: 0, misses: 0, entries: 0, invalidations: 0 };

  constructor(
    private readonly source: DecisionSource,
    private readonly maxEntries = 1 << 20,
  ) {
    if (!Number.isInteger(maxEntries) || maxEntries < 2)
      throw new RangeError(`VerdictCache maxEntries must be an integer >= 2, got ${maxEntries}`);
    this.generation = source.generation;
  }

  lookup(src: string, dst: string, proto: ProtoNum, port: number): Verdict {
    if (this.source.generation !== this.generation) this.invalidate();
    const k = proto * 65536 + port;
    let v = this.young.get(src)?.get(dst)?.get(k);
    if (v !== undefined) {
      this.stats.hits++;
      return v;
    }
    v = this.old.get(src)?.get(dst)?.get(k);
    if (v !== undefined) this.stats.hits++;
    else {
      this.stats.misses++;
      v = decide(this.source, { src, dst, proto, port });
    }
    this.insert(src, dst, k, v);
    return v;
  }

  private insert(src: string, dst: string, k: number, v: Verdict): void {
    if (this.youngSize >= this.maxEntries >> 1) {
      this.old = this.young;
      this.oldSize = this.youngSize;
      this.young = new Map();
      this.youngSize = 0;
    }
    let bySrc = this.young.get(src);
    if (!bySrc) this.young.set(src, (bySrc = new Map()));
    let byDst = bySrc.get(dst);
    if (!byDst) bySrc.set(dst, (byDst = new Map()));
    if (!byDst.has(k)) this.youngSize++;
    byDst.set(k, v);
    this.stats.entries = this.youngSize + this.oldSize;
  }

  invalidate(): void {
    this.young = new Map();
    this.old = new Map();
    this.youngSize = this.oldSize = 0;
    this.stats.entries = 0;
    this.stats.invalidations++;
    this.generation = this.source.generation;
  }
}
