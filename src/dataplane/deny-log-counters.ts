/**
 * deny-log-counters: read how many denied packets the kernel rate limit kept from NFLOG: the packet
 * counter of the one-rule PODWALL-DENY-LIMITED chain (see deny-log-rules), per family.
 *
 * One `iptables -L CHAIN` per family: it lists that chain only, a few ms even with 10k rules in the
 * table, where `iptables-save -c` of the whole table takes 100+ ms. Owns: those two commands.
 * May not: change anything in the kernel (no -Z: callers take deltas, see counterDelta).
 */
import { DENY_LIMITED_CHAIN, parseChainPackets } from "./deny-log-rules.js";
import { run } from "./exec.js";

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
