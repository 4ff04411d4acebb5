/**
 * verdict-cache: the precomputed verdicts the hot path answers from.
 *
 * Owns: memoizing decide() per (src IP, dst IP, protocol, dst port) in a fixed-size, 4-way
 * set-associative table. Addresses get small integer ids (a Map from the strings the caller already
 * holds), the keys live in typed arrays and the verdicts in one preallocated array, so neither a hit
 * nor a miss allocates cache structure: the NFQUEUE worker's miss path stays free of the nested-Map
 * garbage that made young-generation GCs land on packets. Bounded by construction (a full set
 * replaces its oldest entry); the address ids are bounded too and reset with the table.
 * Invalidated exactly when the source's generation moves (any table change).
 * May not: decide anything itself.
 */
import { type DecisionSource, decide, type PlanPicker, type Verdict } from "./engine.js";
import type { ProtoNum } from "./model.js";

export interface CacheStats {
  hits: number;
  misses: number;
  entries: number;
  invalidations: number;
}

const WAYS = 4;
const EMPTY = -1;

export class VerdictCache {
  /**
   * Slot i's key is keys[3i..3i+2] = (src id, dst id, proto*65536+port), interleaved so a set's
   * keys share cache lines; set s holds slots [s*ways, s*ways + ways). Empty: src id -1.
   */
  private readonly keys: Int32Array;
  private readonly verdicts: (Verdict | undefined)[];
  /** Per set: the next slot to replace once the set is full (oldest first). */
  private readonly nextVictim: Uint8Array;
  private readonly ways: number;
  private readonly setMask: number;
  private ids = new Map<string, number>();
  private readonly maxIds: number;
  private generation: number;
  readonly stats: CacheStats = { hits: 0, misses: 0, entries: 0, invalidations: 0 };

  /** `pick`: which plans the verdicts use (default: what is enforced; audit mode caches its own). */
  constructor(
    private readonly source: DecisionSource,
    maxEntries = 1 << 20,
    private readonly pick?: PlanPicker,
  ) {
    if (!Number.isInteger(maxEntries) || maxEntries < 2)
      throw new RangeError(`VerdictCache maxEntries must be an integer >= 2, got ${maxEntries}`);
    // The largest power of two within the bound, so a set is found with a mask.
    const capacity = 2 ** Math.floor(Math.log2(Math.min(maxEntries, 1 << 26)));
    this.ways = Math.min(WAYS, capacity);
    this.setMask = capacity / this.ways - 1;
    this.keys = new Int32Array(capacity * 3);
    for (let i = 0; i < capacity * 3; i += 3) this.keys[i] = EMPTY;
    this.verdicts = new Array<Verdict | undefined>(capacity).fill(undefined);
    this.nextVictim = new Uint8Array(this.setMask + 1);
    this.maxIds = Math.max(1024, capacity * 2);
    this.generation = source.generation;
  }

  lookup(src: string, dst: string, proto: ProtoNum, port: number): Verdict {
    if (this.source.generation !== this.generation) this.invalidate();
    const k = proto * 65536 + port;
    let s = this.ids.get(src);
    let d = this.ids.get(dst);
    if (s !== undefined && d !== undefined) {
      const base = this.setOf(s, d, k) * this.ways;
      const keys = this.keys;
      for (let i = base; i < base + this.ways; i++) {
        const j = i * 3;
        if (keys[j] === s && keys[j + 1] === d && keys[j + 2] === k) {
          this.stats.hits++;
          return this.verdicts[i]!;
        }
      }
    }
    this.stats.misses++;
    const v = decide(this.source, { src, dst, proto, port }, this.pick);
    if (s === undefined || d === undefined) {
      if (this.ids.size + 2 > this.maxIds) {
        // Peers outside the cluster are unbounded: start the names (and so the slots) over.
        this.clearSlots();
        this.ids = new Map();
      }
      s = this.idOf(src);
      d = this.idOf(dst);
    }
    this.insert(s, d, k, v);
    return v;
  }

  private idOf(ip: string): number {
    let id = this.ids.get(ip);
    if (id === undefined) this.ids.set(ip, (id = this.ids.size));
    return id;
  }

  private setOf(s: number, d: number, k: number): number {
    let h = Math.imul(s, 0x9e3779b1) ^ Math.imul(d ^ 0x7f4a7c15, 0x85ebca77) ^ Math.imul(k, 0xc2b2ae3d);
    h ^= h >>> 15;
    h = Math.imul(h, 0x2c1b3c6d);
    h ^= h >>> 12;
    return h & this.setMask;
  }

  private insert(s: number, d: number, k: number, v: Verdict): void {
    const set = this.setOf(s, d, k);
    const base = set * this.ways;
    let slot = -1;
    for (let i = base; i < base + this.ways; i++) {
      if (this.keys[i * 3] === EMPTY) {
        slot = i;
        this.stats.entries++;
        break;
      }
    }
    if (slot < 0) {
      slot = base + this.nextVictim[set];
      this.nextVictim[set] = (this.nextVictim[set] + 1) % this.ways;
    }
    this.keys[slot * 3] = s;
    this.keys[slot * 3 + 1] = d;
    this.keys[slot * 3 + 2] = k;
    this.verdicts[slot] = v;
  }

  /** Address ids stay: they only name strings. Verdicts are dropped so the old table can be freed. */
  private clearSlots(): void {
    for (let i = 0; i < this.keys.length; i += 3) this.keys[i] = EMPTY;
    this.verdicts.fill(undefined);
    this.nextVictim.fill(0);
    this.stats.entries = 0;
  }

  invalidate(): void {
    this.clearSlots();
    this.stats.invalidations++;
    this.generation = this.source.generation;
  }
}
