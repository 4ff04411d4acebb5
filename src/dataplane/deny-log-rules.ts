/**
 * deny-log-rules: the iptables rule arguments that copy the first packet of each denied new
 * connection to the agent through NFLOG, behind a per-pod kernel rate limit; and what the agent reads
 * back from the kernel: the identifier in a record's prefix, and the count of packets the limit kept.
 *
 * In a pod's chain, right before its deny action (ESTABLISHED/RELATED traffic was accepted before the
 * dispatch, so only the first packet of a new connection gets here):
 *   -m hashlimit --hashlimit-above R/sec --hashlimit-burst B --hashlimit-mode dstip (ingress: the pod
 *      is the destination) | srcip (egress) --hashlimit-name pw-deny-ing-R-B ... -j PODWALL-DENY-LIMITED
 *   -j NFLOG --nflog-prefix "pw:<id>" --nflog-group G --nflog-size 128 --nflog-threshold T
 *   <the chain's own deny action, e.g. -j DROP>
 * NFLOG does not end the packet's walk, so the deny action after it still applies. Over the limit,
 * the packet jumps to PODWALL-DENY-LIMITED, whose single rule applies the same deny action: that rule's
 * packet counter is exactly what the limit kept from NFLOG, node-wide, per family (hashlimit itself
 * counts nothing). Reading one one-rule chain is cheap at any table size; see deny-log-counters.
 * The hashlimit table is shared by every pod chain of a direction and keyed by the pod's address, so
 * each pod has its own bucket, which survives rewrites of its chain. Its name carries the rate and
 * burst: the kernel keeps the settings of the first rule that created a name, so a changed limit
 * must get a new table.
 * The prefix holds a short opaque identifier of the deciding policy or rule, chosen by the renderer.
 * Pure: strings in, strings out. May not: run commands.
 */

export const DENY_LIMITED_CHAIN = "PODWALL-DENY-LIMITED";
/** Marks a prefix as podwall's, so records from anyone else's rules on the group are told apart. */
export const NFLOG_PREFIX_MARKER = "pw:";
/**
 * The kernel's xt_NFLOG prefix is 64 bytes including the NUL. iptables-legacy silently truncates a
 * longer one; iptables-nft turns NFLOG into nft `log`, which keeps up to 127. 63 fits both.
 */
export const NFLOG_PREFIX_MAX_BYTES = 63;
export const DENY_LOG_ID_MAX = NFLOG_PREFIX_MAX_BYTES - NFLOG_PREFIX_MARKER.length;
/**
 * Characters that survive an iptables-restore line unquoted and come back from iptables-save as
 * written: no spaces, quotes, backslashes or '#'.
 */
const ID_RE = /^[A-Za-z0-9._:/=+,@-]+$/;

export type Direction = "ingress" | "egress";

export interface DenyLogRuleOptions {
  /** NFLOG group the agent's reader binds, 0..65535. */
  group: number;
  /** Which side the chain polices: picks the address that names the pod (dst for ingress). */
  direction: Direction;
  /** Logged new connections per second, per pod address (the kernel's hashlimit). */
  ratePerSec: number;
  /** Logged at once after a quiet period, per pod address. */
  burst: number;
  /** Bytes of each packet copied to the agent (default 128: IP + transport headers). */
  copyBytes?: number;
  /** Packets the kernel batches per message at most (default 16; the reader's flush timeout bounds the wait). */
  threshold?: number;
  /** The chain of over-limit packets (default PODWALL-DENY-LIMITED). */
  limitedChain?: string;
  /** Most pod addresses in the hashlimit table (default 16384); an address beyond is dropped unlogged. */
  htableMax?: number;
}

/** Throws unless `id` can be carried in an NFLOG prefix unchanged. */
export function validateDenyLogId(id: string): void {
  if (typeof id !== "string" || id.length === 0) throw new Error("deny log id: want a non-empty string");
  if (id.length > DENY_LOG_ID_MAX)
    throw new Error(
      `deny log id ${JSON.stringify(id)}: ${id.length} characters, at most ${DENY_LOG_ID_MAX} fit the NFLOG prefix (${NFLOG_PREFIX_MAX_BYTES} bytes with "${NFLOG_PREFIX_MARKER}")`,
    );
  if (!ID_RE.test(id))
    throw new Error(
      `deny log id ${JSON.stringify(id)}: only letters, digits and . _ : / = + , @ - are allowed`,
    );
}

function intIn(name: string, v: number, lo: number, hi: number): number {
  if (!Number.isInteger(v) || v < lo || v > hi)
    throw new Error(`deny log ${name} ${v}: want an integer ${lo}..${hi}`);
  return v;
}

/** The hashlimit table's name for a direction and limit (one table per distinct setting). */
export function hashlimitName(direction: Direction, ratePerSec: number, burst: number): string {
  return `pw-deny-${direction === "ingress" ? "ing" : "egr"}-${ratePerSec}-${burst}`;
}

/**
 * The two rules to put right before a pod chain's deny action, for the deny decided by `id`:
 * [the rate limit (over it: jump to the limited chain), the NFLOG copy]. Throws on an invalid id or
 * option, naming it.
 */
export function denyLogRuleArgs(id: string, o: DenyLogRuleOptions): [limit: string, nflog: string] {
  validateDenyLogId(id);
  if (o.direction !== "ingress" && o.direction !== "egress")
    throw new Error(`deny log direction ${String(o.direction)}: want ingress or egress`);
  const group = intIn("group", o.group, 0, 65535);
  const rate = intIn("rate per second", o.ratePerSec, 1, 100_000);
  const burst = intIn("burst", o.burst, 1, 100_000);
  // At least an IPv6 header, a few extension-header bytes and the ports.
  const size = intIn("copy bytes", o.copyBytes ?? 128, 64, 65535);
  const threshold = intIn("threshold", o.threshold ?? 16, 1, 1000);
  const max = intIn("hashlimit table size", o.htableMax ?? 16384, 16, 1 << 20);
  const chain = o.limitedChain ?? DENY_LIMITED_CHAIN;
  if (!/^PODWALL-[A-Z0-9-]{1,20}$/.test(chain))
    throw new Error(
      `deny log limited chain ${JSON.stringify(chain)}: want PODWALL- and up to 20 of [A-Z0-9-]`,
    );
  const mode = o.direction === "ingress" ? "dstip" : "srcip";
  // Options in the order iptables-save prints them, so a read-back compares equal.
  const limit =
    `-m hashlimit --hashlimit-above ${rate}/sec --hashlimit-burst ${burst} --hashlimit-mode ${mode}` +
    ` --hashlimit-name ${hashlimitName(o.direction, rate, burst)}` +
    ` --hashlimit-htable-size ${Math.min(4096, max)} --hashlimit-htable-max ${max} -j ${chain}`;
  // Quoted as iptables-save prints any prefix with characters beyond [A-Za-z0-9_.-] (':' always).
  const nflog = `-j NFLOG --nflog-prefix "${NFLOG_PREFIX_MARKER}${id}" --nflog-group ${group} --nflog-size ${size} --nflog-threshold ${threshold}`;
  return [limit, nflog];
}

/** The limited chain's rules: the same deny action as the pod chains, counted in one place. */
export function denyLimitedChainRules(denyAction: "DROP" | "REJECT" = "DROP"): string[] {
  return [`-j ${denyAction}`];
}

/** The identifier a record's prefix carries, or undefined when the prefix is not podwall's. */
export function denyLogIdFromPrefix(prefix: string): string | undefined {
  if (!prefix.startsWith(NFLOG_PREFIX_MARKER)) return undefined;
  const id = prefix.slice(NFLOG_PREFIX_MARKER.length);
  return id.length > 0 && id.length <= DENY_LOG_ID_MAX && ID_RE.test(id) ? id : undefined;
}

/**
 * Packets counted by the rules of one chain, from `iptables -w -n -v -x -L CHAIN` output (the
 * header lines are skipped; -x gives exact numbers). Undefined when the text has no such table.
 */
export function parseChainPackets(listing: string): number | undefined {
  const lines = listing.split("\n");
  if (!lines[0]?.startsWith("Chain ")) return undefined;
  let total = 0;
  for (const line of lines.slice(1)) {
    const first = line.trim().split(/\s+/, 1)[0];
    if (first && /^\d+$/.test(first)) total += Number(first);
  }
  return total;
}

/**
 * How much a kernel counter grew since the previous read `prev`. The first read (`prev` undefined) is
 * the baseline: a restarted agent adopts the chain with its history, which it must not count again.
 * A smaller value means the counter started over (the chain was re-created or zeroed): all of `now`
 * is new. Deltas, not `-Z`: zeroing would race with the packets counted between the list and the zero.
 */
export function counterDelta(prev: number | undefined, now: number): number {
  if (prev === undefined) return 0;
  return now >= prev ? now - prev : now;
}
