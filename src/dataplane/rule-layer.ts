/**
 * rule-layer: the dataplane's own rule language between the compiled table and a kernel backend. A
 * rule is a match and an action (accept, drop, reject, return, jump, goto, queue, log); the renderer
 * builds chains of these, and a backend serializes them. Today's backend is iptables-restore text
 * (`toIptables`); an nftables backend would be a second serializer, not a second renderer.
 *
 * Owns: the rule shape, the one encoder that puts text into kernel input (comments: a closed
 * character set, so no object text can end a rule, open a quote or start an option), rule hashes
 * (`pw:<hash>` in the comment, read back to diff), and stable short names.
 * May not: know about policies or pods; it only spells rules.
 */
import { createHash } from "node:crypto";
import { interfaceArg } from "./ifname.js";

export type ProtoMatch = "tcp" | "udp" | "sctp" | "ipv6-icmp";

export interface Match {
  inIf?: string;
  outIf?: string;
  /** Bridged pods: the bridge port the packet entered by. */
  physdevIn?: string;
  src?: string;
  dst?: string;
  proto?: ProtoMatch;
  /** Destination port or inclusive range (needs proto). */
  dport?: { from: number; to: number };
  icmp6Type?: number;
  /** ipset match: set name and the direction flags ("src", "dst", "dst,dst"). */
  set?: { name: string; flags: string };
  ctstate?: "RELATED,ESTABLISHED" | "INVALID";
  srcTypeLocal?: boolean;
}

export type Action =
  | { kind: "accept" }
  | { kind: "drop" }
  | { kind: "reject" }
  | { kind: "return" }
  | { kind: "jump"; chain: string }
  | { kind: "goto"; chain: string }
  | { kind: "queue"; first: number; count: number; bypass: boolean }
  /** Copy to userspace over NFLOG (the packet continues to the next rule). */
  | { kind: "nflog"; group: number; prefix: string };

export interface Rule {
  match: Match;
  action: Action;
  /** What the rule is for, in words (encoded by `commentText`). */
  comment: string;
}

const hashMemo = new Map<string, string>();

/** sha256 prefix, memoized: the same names and rules come back on every sync. */
export function shortHash(s: string, len = 16): string {
  let h = hashMemo.get(s);
  if (h === undefined) {
    h = createHash("sha256").update(s).digest("hex");
    if (hashMemo.size >= 200_000) hashMemo.clear();
    hashMemo.set(s, h);
  }
  return h.slice(0, len);
}

/**
 * The only way text enters a rule: a closed set of characters (letters, digits, space and
 * `._:/=,()[]'@*+#<>-`), everything else replaced by '?', at most 200 characters. No newline,
 * quote or backslash can pass, so no object name can end the rule or smuggle an option.
 */
export function commentText(what: string): string {
  return what.replace(/[^A-Za-z0-9 ._:/=,()[\]'@*+#<>-]/g, "?").slice(0, 200);
}

/** The rule comment: "pw:<hash> <what>"; the hash covers the rule text so diffs can read it back. */
export function withComment(rule: string, what: string): string {
  const h = shortHash(rule, 8);
  return `${rule} -m comment --comment "pw:${h} ${commentText(what)}"`;
}

export function ruleHashOf(line: string): string | undefined {
  return /--comment "?pw:([0-9a-f]{8})/.exec(line)?.[1];
}

function actionArgs(a: Action): string {
  switch (a.kind) {
    case "accept":
      return "-j ACCEPT";
    case "drop":
      return "-j DROP";
    case "reject":
      return "-j REJECT";
    case "return":
      return "-j RETURN";
    case "jump":
      return `-j ${a.chain}`;
    case "goto":
      return `-g ${a.chain}`;
    case "queue": {
      const bypass = a.bypass ? " --queue-bypass" : "";
      return a.count > 1
        ? `-j NFQUEUE --queue-balance ${a.first}:${a.first + a.count - 1}${bypass} --queue-cpu-fanout`
        : `-j NFQUEUE --queue-num ${a.first}${bypass}`;
    }
    case "nflog":
      return `-j NFLOG --nflog-group ${a.group} --nflog-prefix ${a.prefix.replace(/[^A-Za-z0-9._:=-]/g, "_").slice(0, 63)}`;
  }
}

/** The rule in iptables-restore syntax (what follows `-A CHAIN`), its comment last. */
export function toIptables(r: Rule): string {
  const m = r.match;
  const parts: string[] = [];
  if (m.ctstate) parts.push(`-m conntrack --ctstate ${m.ctstate}`);
  // Interface names are written exactly (quoted where needed); one iptables cannot match exactly
  // (a '+' is its wildcard) throws: the renderer matches such a pod by address instead.
  if (m.physdevIn) parts.push(`-m physdev --physdev-in ${interfaceArg(m.physdevIn)}`);
  if (m.inIf) parts.push(`-i ${interfaceArg(m.inIf)}`);
  if (m.outIf) parts.push(`-o ${interfaceArg(m.outIf)}`);
  if (m.src) parts.push(`-s ${m.src}`);
  if (m.dst) parts.push(`-d ${m.dst}`);
  if (m.srcTypeLocal) parts.push("-m addrtype --src-type LOCAL");
  if (m.proto) {
    parts.push(`-p ${m.proto}`);
    if (m.proto === "ipv6-icmp" && m.icmp6Type !== undefined)
      parts.push(`-m icmp6 --icmpv6-type ${m.icmp6Type}`);
    else if (m.dport && !(m.dport.from === 0 && m.dport.to === 65535)) {
      const range = m.dport.from === m.dport.to ? `${m.dport.from}` : `${m.dport.from}:${m.dport.to}`;
      parts.push(`-m ${m.proto} --dport ${range}`);
    }
  }
  if (m.set) parts.push(`-m set --match-set ${m.set.name} ${m.set.flags}`);
  parts.push(actionArgs(r.action));
  return withComment(parts.join(" "), r.comment);
}
