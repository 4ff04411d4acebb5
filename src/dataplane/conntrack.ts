/**
 * conntrack: the kernel's connection tracking table, read and pruned with the conntrack tool.
 *
 * Owns: parsing `conntrack -L -o extended` into flows as policy sees them (after DNAT: the reply
 * direction's source is the real destination), and deleting single entries by their original
 * tuple. Deleting an entry makes the connection's next packet NEW, so the rules judge it again.
 * May not: decide which flows to delete (the agent's revoker does) or touch anything but entries.
 */
import { run } from "./exec.js";

export const PROTO_NAMES: Record<number, string> = { 6: "tcp", 17: "udp", 132: "sctp" };

export interface CtFlow {
  family: 4 | 6;
  proto: 6 | 17 | 132;
  /** The original tuple: what `conntrack -D` matches. */
  orig: { src: string; dst: string; sport: number; dport: number };
  /** The destination after translation (the reply's source) and its port. */
  dst: string;
  dport: number;
}

export function parseConntrack(text: string): CtFlow[] {
  const out: CtFlow[] = [];
  for (const line of text.split("\n")) {
    const t = line.trim().split(/\s+/);
    if (t.length < 6 || (t[0] !== "ipv4" && t[0] !== "ipv6")) continue;
    const proto = Number(t[3]);
    if (proto !== 6 && proto !== 17 && proto !== 132) continue; // ICMP and others carry no ports
    const kv: Record<string, string[]> = {};
    for (const tok of t) {
      const i = tok.indexOf("=");
      if (i > 0) (kv[tok.slice(0, i)] ??= []).push(tok.slice(i + 1));
    }
    const [src, rsrc] = kv.src ?? [];
    const [dst] = kv.dst ?? [];
    const [sport, rsport] = (kv.sport ?? []).map(Number);
    const [dport] = (kv.dport ?? []).map(Number);
    if (
      !src ||
      !dst ||
      !rsrc ||
      !Number.isInteger(sport) ||
      !Number.isInteger(dport) ||
      !Number.isInteger(rsport)
    )
      continue;
    out.push({
      family: t[0] === "ipv4" ? 4 : 6,
      proto,
      orig: { src, dst, sport, dport },
      dst: rsrc,
      dport: rsport,
    });
  }
  return out;
}

export async function listFlows(netns?: string): Promise<CtFlow[]> {
  // The "N flow entries have been shown" summary goes to stderr; entries to stdout.
  return parseConntrack((await run("conntrack", ["-L", "-o", "extended"], { netns })).stdout);
}

/** Delete one entry by its original tuple; false when it was already gone. */
export async function deleteFlow(f: CtFlow, netns?: string): Promise<boolean> {
  const args = ["-D", "-f", f.family === 4 ? "ipv4" : "ipv6", "-p", PROTO_NAMES[f.proto]];
  args.push(
    "-s",
    f.orig.src,
    "-d",
    f.orig.dst,
    "--sport",
    String(f.orig.sport),
    "--dport",
    String(f.orig.dport),
  );
  return (await run("conntrack", args, { netns, allowFail: true })).code === 0;
}
