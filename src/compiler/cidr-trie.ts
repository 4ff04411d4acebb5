/**
 * cidr-trie: binary prefix tries (one per address family) holding every ipBlock's CIDR and excepts.
 *
 * Owns: answering "which ipBlocks contain this address" in one walk of at most 32/128 bits. Each
 * block keeps its own excepts, so `A except X` OR `X` (two peers) still matches X via the second.
 * May not: know about rules; the table maps block ids back to the peers that use them.
 */
import { bitAt, type Family, type ParsedCIDR, parseIP } from "./ip.js";

interface Node {
  zero?: Node;
  one?: Node;
  /** Block ids whose CIDR ends at this node, and those whose except ends here. */
  include?: number[];
  exclude?: number[];
}

export class CidrTrie {
  private roots: Record<Family, Node> = { 4: {}, 6: {} };
  size = 0;

  private nodeFor(c: ParsedCIDR, create: boolean): Node | undefined {
    let n: Node | undefined = this.roots[c.family];
    for (let i = 0; i < c.prefix && n; i++) {
      const bit = bitAt(c.bytes, i);
      let next: Node | undefined = bit ? n.one : n.zero;
      if (!next && create) {
        next = {};
        if (bit) n.one = next;
        else n.zero = next;
      }
      n = next;
    }
    return n;
  }

  add(id: number, cidr: ParsedCIDR, excepts: readonly ParsedCIDR[]): void {
    const n = this.nodeFor(cidr, true)!;
    (n.include ??= []).push(id);
    for (const e of excepts) (this.nodeFor(e, true)!.exclude ??= []).push(id);
    this.size++;
  }

  remove(id: number, cidr: ParsedCIDR, excepts: readonly ParsedCIDR[]): void {
    const drop = (arr: number[] | undefined) => {
      const i = arr ? arr.indexOf(id) : -1;
      if (i >= 0) arr!.splice(i, 1);
    };
    drop(this.nodeFor(cidr, false)?.include);
    for (const e of excepts) drop(this.nodeFor(e, false)?.exclude);
    this.size--;
    // Empty nodes are left in place: they cost a few bytes and keep remove O(prefix).
  }

  /** Ids of the blocks that contain `bytes` and whose excepts do not; sorted ascending. */
  match(family: Family, bytes: Uint8Array): number[] {
    let inc: number[] | undefined;
    let exc: number[] | undefined;
    let n: Node | undefined = this.roots[family];
    const bits = family === 4 ? 32 : 128;
    for (let i = 0; n; i++) {
      if (n.include?.length) (inc ??= []).push(...n.include);
      if (n.exclude?.length) (exc ??= []).push(...n.exclude);
      if (i === bits) break;
      n = bitAt(bytes, i) ? n.one : n.zero;
    }
    if (!inc) return EMPTY;
    const out = exc ? inc.filter((id) => !exc!.includes(id)) : inc;
    return out.sort((a, b) => a - b);
  }
}

const EMPTY: number[] = [];

/** "Which blocks contain this address", memoized per address text until the blocks change. */
export class BlockMatcher {
  private readonly cache = new Map<string, readonly number[]>();

  constructor(readonly trie: CidrTrie = new CidrTrie()) {}

  blocksFor(ip: string): readonly number[] {
    let hit = this.cache.get(ip);
    if (hit) return hit;
    const p = parseIP(ip);
    hit = p && this.trie.size > 0 ? this.trie.match(p.family, p.bytes) : EMPTY;
    // Bounded: addresses seen are unbounded (external peers), the blocks are not.
    if (this.cache.size >= 65536) this.cache.clear();
    this.cache.set(ip, hit);
    return hit;
  }

  /** Call after adding or removing a block. */
  changed(): void {
    this.cache.clear();
  }
}
