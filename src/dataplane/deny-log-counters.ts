/**
 * deny-log-counters: read the kernel's packet counters of podwall's rules: how many denied packets
 * the kernel rate limit kept from NFLOG (the one-rule PODWALL-DENY-LIMITED and -AUDIT-LIMITED chains,
 * see deny-log-rules), and every rule of our chains (per-policy verdict counts: which rule counts what
 * is the renderer's RenderedFamily.counted).
 *
 * `iptables -L CHAIN` lists one chain, a few ms even with 10k rules in the table; `iptables-save -c`
 * of the whole table takes 100+ ms there, and gives every rule at once. Owns: those commands and
 * their parsing. May not: change anything in the kernel (no -Z: callers take deltas, see counterDelta).
 */
import { DENY_LIMITED_CHAIN, parseChainPackets } from "./deny-log-rules.js";
import { run } from "./exec.js";
import { ownsChain } from "./ownership.js";
import { ruleHashOf } from "./rule-layer.js";

export interface DenyLimitedCounts {
  /** Packets over the limit, IPv4; undefined when the chain does not exist (yet). */
  v4: number | undefined;
  v6: number | undefined;
}

export async function readDenyLimitedPackets(
  opts: { netns?: string; backend?: "nft" | "legacy"; chain?: string } = {},
): Promise<DenyLimitedCounts> {
  const chain = opts.chain ?? DENY_LIMITED_CHAIN;
  const one = async (tool: "iptables" | "ip6tables") => {
    const bin = opts.backend ? `${tool}-${opts.backend}` : tool;
    const r = await run(bin, ["-w", "5", "-n", "-v", "-x", "-L", chain], {
      netns: opts.netns,
      allowFail: true,
      timeoutMs: 10_000,
    });
    if (r.code === 0) return parseChainPackets(r.stdout);
    // A missing chain is normal before the first sync (iptables-nft 1.8.9 reports one as
    // "incompatible"); anything else is the kernel tool's word.
    if (/No chain|does not exist|incompatible/i.test(r.stderr)) return undefined;
    throw new Error(`${bin} -L ${chain} exited ${r.code}: ${r.stderr.trim()}`);
  };
  const [v4, v6] = await Promise.all([one("iptables"), one("ip6tables")]);
  return { v4, v6 };
}

/** One rule of a chain of ours: its diff hash (from the `pw:` comment, "?" without) and packets. */
export interface RuleCounter {
  hash: string;
  packets: number;
}

/** Every chain of ours in an `iptables-save -c` text -> its rules' counters, in order. */
export function parseSaveCounters(text: string): Map<string, RuleCounter[]> {
  const out = new Map<string, RuleCounter[]>();
  let inFilter = false;
  for (const line of text.split("\n")) {
    if (line.startsWith("*")) inFilter = line === "*filter";
    if (!inFilter) continue;
    if (line.startsWith(":")) {
      const name = line.slice(1).split(" ")[0];
      if (ownsChain(name) && !out.has(name)) out.set(name, []);
      continue;
    }
    // "[packets:bytes] -A CHAIN spec"
    const m = /^\[(\d+):\d+\] -A (\S+) (.*)$/.exec(line);
    if (!m || !ownsChain(m[2])) continue;
    let list = out.get(m[2]);
    if (!list) out.set(m[2], (list = []));
    list.push({ hash: ruleHashOf(m[3]) ?? "?", packets: Number(m[1]) });
  }
  return out;
}

export interface OwnedCounters {
  v4: Map<string, RuleCounter[]>;
  v6: Map<string, RuleCounter[]>;
}

/**
 * The packet counters of every rule in podwall's chains, both families: one `iptables-save -c` of the
 * filter table each (about 250 ms of a child process at 13,000 rules; the agent reads every few
 * seconds, not per packet).
 */
export async function readOwnedCounters(opts: {
  netns?: string;
  backend: "nft" | "legacy";
}): Promise<OwnedCounters> {
  const one = async (tool: "iptables" | "ip6tables") =>
    parseSaveCounters(
      (
        await run(`${tool}-${opts.backend}-save`, ["-c", "-t", "filter"], {
          netns: opts.netns,
          timeoutMs: 30_000,
        })
      ).stdout,
    );
  const [v4, v6] = await Promise.all([one("iptables"), one("ip6tables")]);
  return { v4, v6 };
}

/** Packets counted by the rules of `chain` in both families (0 where it does not exist). */
export function chainPackets(c: OwnedCounters, chain: string): number {
  let n = 0;
  for (const fam of [c.v4, c.v6]) for (const r of fam.get(chain) ?? []) n += r.packets;
  return n;
}
