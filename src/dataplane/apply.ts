/**
 * apply: program the desired state into the kernel as a minimal delta, and remove it on cleanup.
 *
 * Owns: reading back our own objects (ownership.ts says which: chains via `iptables-save -t filter`,
 * rule hashes from their comments; sets via `ipset save`), diffing, and programming in a safe order:
 * ipset restore (create sets, add/del members, temp-set + swap for bulk replacement) -> one
 * `iptables-restore --noflush` per family (only changed chains are declared, which rewrites them;
 * built-in chains only get our jump inserted) -> ipset restore (destroy sets nothing references).
 * iptables-restore commits a table atomically, so a failed apply leaves the previous rules whole;
 * the cached view is then dropped and re-read from the kernel on the next try.
 * May not: save/restore or flush any table or chain it does not own, or touch any set or rule that
 * ownership.ts does not call ours (a foreign PODWALL-X chain, or a "pw:..." comment, is not ours).
 * Uses the iptables backend the host uses (nft or legacy, detected from which holds rules).
 */
import { run } from "./exec.js";
import { assertOwnedNames, ownedTarget, ownsChain, ownsSet } from "./ownership.js";
import {
  type Builtin,
  createLine,
  type DesiredState,
  jumpRule,
  PREFIX,
  type RenderedFamily,
  type RenderedSet,
  ruleHashOf,
  type SetType,
  TOP_CHAINS,
} from "./render.js";

export type Backend = "nft" | "legacy";

interface KernelFamily {
  /** Our chains -> their rules' hashes ("?" for a rule without our comment: hand-edited). */
  chains: Map<string, string[]>;
  /** Built-in chains holding our jump. */
  jumps: Set<Builtin>;
  /** Every rule of ours in a built-in chain, as saved (for cleanup). */
  builtinRules: { chain: string; spec: string }[];
}

interface KernelSet {
  type: string;
  family: 4 | 6;
  members: Set<string>;
}

export interface KernelState {
  v4: KernelFamily;
  v6: KernelFamily;
  sets: Map<string, KernelSet>;
}

export interface ApplyStats {
  /** Chains (re)written, per family summed. */
  chainsWritten: number;
  chainsDeleted: number;
  setsCreated: number;
  setsDestroyed: number;
  setsSwapped: number;
  membersAdded: number;
  membersDeleted: number;
  /** Rules and sets podwall now owns. */
  rules: number;
  ipsets: number;
  /** Wall time of the kernel commands. */
  ms: number;
  /** The texts fed to the restores (for --dry-run style debugging and the plain-restore benchmark). */
  texts: { ipsetPre: string; v4: string; v6: string; ipsetPost: string };
}

const BUILTINS: Builtin[] = ["FORWARD", "INPUT", "OUTPUT"];

export function parseSave(text: string): KernelFamily {
  const fam: KernelFamily = { chains: new Map(), jumps: new Set(), builtinRules: [] };
  let inFilter = false;
  for (const line of text.split("\n")) {
    if (line.startsWith("*")) inFilter = line === "*filter";
    if (!inFilter) continue;
    if (line.startsWith(":")) {
      const name = line.slice(1).split(" ")[0];
      if (ownsChain(name)) fam.chains.set(name, []);
    } else if (line.startsWith("-A ")) {
      const sp = line.indexOf(" ", 3);
      const chain = line.slice(3, sp);
      const spec = line.slice(sp + 1);
      if (ownsChain(chain)) {
        const list = fam.chains.get(chain) ?? [];
        list.push(ruleHashOf(spec) ?? "?");
        fam.chains.set(chain, list);
      } else if ((BUILTINS as string[]).includes(chain)) {
        const target = ownedTarget(spec);
        if (target === undefined) continue;
        fam.builtinRules.push({ chain, spec });
        if (target === TOP_CHAINS[chain as Builtin]) fam.jumps.add(chain as Builtin);
      }
    }
  }
  return fam;
}

function normalizeMember(type: string, family: 4 | 6, m: string): string {
  if (type !== "hash:net") return m;
  const [addr, ...rest] = m.split(" ");
  const withLen = addr.includes("/") ? addr : `${addr}/${family === 4 ? 32 : 128}`;
  return [withLen, ...rest].join(" ");
}

export function parseIpsetSave(text: string): Map<string, KernelSet> {
  const sets = new Map<string, KernelSet>();
  for (const line of text.split("\n")) {
    const parts = line.trim().split(/\s+/);
    if (parts[0] === "create" && ownsSet(parts[1] ?? "")) {
      const fi = parts.indexOf("family");
      sets.set(parts[1], { type: parts[2], family: parts[fi + 1] === "inet6" ? 6 : 4, members: new Set() });
    } else if (parts[0] === "add") {
      const s = sets.get(parts[1]);
      if (s) s.members.add(normalizeMember(s.type, s.family, parts.slice(2).join(" ")));
    }
  }
  return sets;
}

function sameList(a: readonly string[] | undefined, b: readonly string[]): boolean {
  if (!a || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export interface ApplierOptions {
  /** Program inside this network namespace (the lab node); default: the current one. */
  netns?: string;
  backend?: Backend;
}

export class KernelApplier {
  private backend: Backend | undefined;
  private cache: KernelState | undefined;

  constructor(private readonly opts: ApplierOptions = {}) {
    this.backend = opts.backend;
  }

  get netns(): string | undefined {
    return this.opts.netns;
  }

  private bin(tool: "save" | "restore", family: 4 | 6): string {
    return `${family === 4 ? "iptables" : "ip6tables"}-${this.backend}-${tool}`;
  }

  /** The backend that already holds rules wins (as iptables-wrappers decides); nft by default. */
  async detectBackend(): Promise<Backend> {
    return (await this.probeBackends()).backend;
  }

  /**
   * Detection reads all four full saves at once. On the first read the winner's saves also serve as
   * this applier's first view of the filter table (parseSave keeps only that table), so a first
   * apply starts four processes, not six.
   */
  private async probeBackends(): Promise<{ backend: Backend; saves?: [string, string] }> {
    if (this.backend) return { backend: this.backend };
    const save = async (b: Backend, fam: 4 | 6) => {
      const cmd = `${fam === 4 ? "iptables" : "ip6tables"}-${b}-save`;
      const r = await run(cmd, [], { netns: this.opts.netns, allowFail: true });
      // Unreadable is not empty: a node whose legacy tables we cannot read may well use them.
      // (A backend the kernel lacks fails otherwise, and counts as holding no rules.)
      if (r.code !== 0 && /Permission denied/i.test(r.stderr))
        throw new Error(
          `${cmd}: ${r.stderr.trim().split("\n")[0]}: podwall needs CAP_NET_RAW as well as CAP_NET_ADMIN (the legacy tables and iptables' set match are reached through a raw socket)`,
        );
      return r.stdout;
    };
    const [n4, n6, l4, l6] = await Promise.all([
      save("nft", 4),
      save("nft", 6),
      save("legacy", 4),
      save("legacy", 6),
    ]);
    const rules = (t: string) => t.split("\n").filter((l) => l.startsWith("-A ")).length;
    this.backend = rules(l4) + rules(l6) > rules(n4) + rules(n6) ? "legacy" : "nft";
    return { backend: this.backend, saves: this.backend === "legacy" ? [l4, l6] : [n4, n6] };
  }

  private async readFamilies(): Promise<[KernelFamily, KernelFamily]> {
    const probe = await this.probeBackends();
    if (probe.saves) return [parseSave(probe.saves[0]), parseSave(probe.saves[1])];
    const save = async (fam: 4 | 6) =>
      parseSave(
        (await run(this.bin("save", fam), ["-t", "filter"], { netns: this.opts.netns, allowFail: true }))
          .stdout,
      );
    return Promise.all([save(4), save(6)]);
  }

  private async readSets(): Promise<Map<string, KernelSet>> {
    return parseIpsetSave((await run("ipset", ["save"], { netns: this.opts.netns })).stdout);
  }

  async readKernel(): Promise<KernelState> {
    // Independent reads: run them together.
    const [[v4, v6], sets] = await Promise.all([this.readFamilies(), this.readSets()]);
    this.cache = { v4, v6, sets };
    return this.cache;
  }

  /** Forget the cached kernel view: the next apply re-reads it (resync, or after a failure). */
  invalidate(): void {
    this.cache = undefined;
  }

  async apply(desired: DesiredState): Promise<ApplyStats> {
    const t0 = performance.now();
    assertOwnedNames([...desired.v4.chains.keys(), ...desired.v6.chains.keys()], desired.sets.keys());
    // Without a cached view, the iptables reads overlap the ipset work: ipset restore needs only
    // the ipset read, and the rules wait for both the sets and their own reads.
    const cached = this.cache;
    this.cache = undefined; // Trust nothing until this apply has fully succeeded.
    let families: Promise<[KernelFamily, KernelFamily]>;
    let curSets: Map<string, KernelSet>;
    if (cached) {
      families = Promise.resolve([cached.v4, cached.v6]);
      curSets = cached.sets;
    } else {
      families = this.readFamilies();
      families.catch(() => {}); // Awaited below; avoid an unhandled-rejection report meanwhile.
      curSets = await this.readSets();
    }
    const stats: ApplyStats = {
      chainsWritten: 0,
      chainsDeleted: 0,
      setsCreated: 0,
      setsDestroyed: 0,
      setsSwapped: 0,
      membersAdded: 0,
      membersDeleted: 0,
      rules: 0,
      ipsets: desired.sets.size,
      ms: 0,
      texts: { ipsetPre: "", v4: "", v6: "", ipsetPost: "" },
    };
    const pre: string[] = [];
    const post: string[] = [];
    for (const s of desired.sets.values()) this.setDelta(s, curSets.get(s.name), pre, stats);
    for (const name of curSets.keys()) {
      if (!desired.sets.has(name)) {
        post.push(`destroy ${name}`);
        stats.setsDestroyed++;
      }
    }
    const setsDone = pre.length
      ? run("ipset", ["restore"], { netns: this.opts.netns, input: `${pre.join("\n")}\n` })
      : undefined;
    setsDone?.catch(() => {}); // Awaited below.
    const [cur4, cur6] = await families;
    const v4 = this.familyDelta(desired.v4, cur4, stats);
    const v6 = this.familyDelta(desired.v6, cur6, stats);
    stats.texts = { ipsetPre: pre.join("\n"), v4, v6, ipsetPost: post.join("\n") };
    await setsDone;
    // The two families are separate tables: program them in parallel. Each commit is atomic; if one
    // fails the cache is dropped and the retry re-reads both.
    await Promise.all([
      v4 ? run(this.bin("restore", 4), ["--noflush"], { netns: this.opts.netns, input: v4 }) : undefined,
      v6 ? run(this.bin("restore", 6), ["--noflush"], { netns: this.opts.netns, input: v6 }) : undefined,
    ]);
    if (post.length)
      await run("ipset", ["restore"], { netns: this.opts.netns, input: `${post.join("\n")}\n` });
    for (const f of [desired.v4, desired.v6])
      for (const rules of f.chains.values()) stats.rules += rules.length;
    stats.ms = performance.now() - t0;
    this.cache = stateOf(desired);
    return stats;
  }

  private setDelta(s: RenderedSet, k: KernelSet | undefined, out: string[], stats: ApplyStats): void {
    if (!k) {
      out.push(createLine(s));
      for (const m of s.members) out.push(`add ${s.name} ${m} -exist`);
      stats.setsCreated++;
      stats.membersAdded += s.members.length;
      return;
    }
    // The DNS path owns a dynamic set's members (each with its own timeout): never diff them.
    if (s.dynamic && k.type === s.type && k.family === s.family) return;
    const want = new Set(s.members);
    const adds = s.members.filter((m) => !k.members.has(m));
    const dels = [...k.members].filter((m) => !want.has(m));
    if (adds.length === 0 && dels.length === 0 && k.type === s.type && k.family === s.family) return;
    const bulk = adds.length + dels.length > Math.max(64, s.members.length / 2);
    if (k.type !== s.type || k.family !== s.family || bulk) {
      // Atomic replacement: fill a temporary set, swap it in, drop the old contents.
      const tmp = `${PREFIX}T${s.name.slice(PREFIX.length)}`.slice(0, 31);
      out.push(createLine(s, tmp), `flush ${tmp}`);
      for (const m of s.members) out.push(`add ${tmp} ${m} -exist`);
      out.push(`swap ${tmp} ${s.name}`, `destroy ${tmp}`);
      stats.setsSwapped++;
      stats.membersAdded += s.members.length;
      return;
    }
    for (const m of dels) out.push(`del ${s.name} ${m} -exist`);
    for (const m of adds) out.push(`add ${s.name} ${m} -exist`);
    stats.membersAdded += adds.length;
    stats.membersDeleted += dels.length;
  }

  /** iptables-restore text for the changed chains of one family, or "" when nothing changed. */
  private familyDelta(want: RenderedFamily, cur: KernelFamily, stats: ApplyStats): string {
    const decl: string[] = [];
    const rules: string[] = [];
    const tail: string[] = [];
    for (const [name, list] of want.chains) {
      if (
        sameList(
          cur.chains.get(name),
          list.map((r) => ruleHashOf(r) ?? "?"),
        )
      )
        continue;
      decl.push(`:${name} - [0:0]`);
      for (const r of list) rules.push(`-A ${name} ${r}`);
      stats.chainsWritten++;
    }
    for (const b of BUILTINS) if (!cur.jumps.has(b)) tail.push(`-I ${b} 1 ${jumpRule(b)}`);
    const stale = [...cur.chains.keys()].filter((c) => !want.chains.has(c));
    for (const c of stale) tail.push(`-F ${c}`);
    for (const c of stale) tail.push(`-X ${c}`);
    stats.chainsDeleted += stale.length;
    if (!decl.length && !tail.length) return "";
    return ["*filter", ...decl, ...rules, ...tail, "COMMIT", ""].join("\n");
  }

  /** Remove every kernel object podwall owns (jumps, PODWALL- chains, PODWALL- sets), nothing else. */
  async cleanup(): Promise<{ chains: number; sets: number; jumps: number }> {
    const cur = await this.readKernel();
    this.cache = undefined;
    let chains = 0;
    let jumps = 0;
    for (const fam of [4, 6] as const) {
      const k = fam === 4 ? cur.v4 : cur.v6;
      const lines = ["*filter"];
      for (const r of k.builtinRules) lines.push(`-D ${r.chain} ${r.spec}`);
      for (const c of k.chains.keys()) lines.push(`-F ${c}`);
      for (const c of k.chains.keys()) lines.push(`-X ${c}`);
      lines.push("COMMIT", "");
      jumps += k.builtinRules.length;
      chains += k.chains.size;
      if (lines.length > 3)
        await run(this.bin("restore", fam), ["--noflush"], {
          netns: this.opts.netns,
          input: lines.join("\n"),
        });
    }
    const names = [...cur.sets.keys()];
    if (names.length) {
      await run("ipset", ["restore"], {
        netns: this.opts.netns,
        input: `${names.map((n) => `destroy ${n}`).join("\n")}\n`,
      });
    }
    return { chains, sets: names.length, jumps };
  }
}

/** What the kernel holds after a successful apply of `d` (the cache for the next diff). */
function stateOf(d: DesiredState): KernelState {
  const fam = (f: RenderedFamily): KernelFamily => ({
    chains: new Map([...f.chains].map(([n, rules]) => [n, rules.map((r) => ruleHashOf(r) ?? "?")])),
    jumps: new Set(BUILTINS),
    builtinRules: BUILTINS.map((b) => ({ chain: b, spec: jumpRule(b) })),
  });
  const sets = new Map<string, KernelSet>();
  for (const s of d.sets.values())
    sets.set(s.name, { type: s.type as SetType, family: s.family, members: new Set(s.members) });
  return { v4: fam(d.v4), v6: fam(d.v6), sets };
}
