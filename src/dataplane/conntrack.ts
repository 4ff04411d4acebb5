/**
 * conntrack: the kernel's connection tracking table, read and pruned with the conntrack tool.
 *
 * Owns: parsing `conntrack -L -o extended` into flows as policy sees them (after DNAT: the reply
 * direction's source is the real destination), and deleting single entries by their original
 * tuple. Deleting an entry makes the connection's next packet NEW, so the rules judge it again.
 * Deletes go over netlink (libnfct.ts), one hash lookup each; without the library, through the
 * tool, one call per group of entries that differ only in source port (each call dumps the table).
 * May not: decide which flows to delete (the agent's revoker does) or touch anything but entries.
 */
import { setImmediate as yieldToLoop } from "node:timers/promises";
import { protoToolName } from "../compiler/model.js";
import { run } from "./exec.js";
import { ConntrackDeleter, NfctLibraryMissingError } from "./libnfct.js";

export interface CtFlow {
  family: 4 | 6;
  proto: 6 | 17 | 132;
  /** The original tuple: what `conntrack -D` matches. */
  orig: { src: string; dst: string; sport: number; dport: number };
  /** The destination after translation (the reply's source) and its port. */
  dst: string;
  dport: number;
}

/**
 * One entry of `conntrack -L -o extended`: family, protocol number, then the original tuple and,
 * after any state or [UNREPLIED]/[ASSURED] flags, the reply tuple. One regex pass over the whole
 * text: at 100k entries splitting every line into key=value tokens took half a second.
 */
const ENTRY =
  /^(ipv4|ipv6)\s+\d+\s+\S+\s+(6|17|132)\s[^\n]*?src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+)\b[^\n]*? src=(\S+) dst=\S+ sport=(\d+)/gm;

export function parseConntrack(text: string): CtFlow[] {
  const out: CtFlow[] = [];
  ENTRY.lastIndex = 0;
  for (let m = ENTRY.exec(text); m; m = ENTRY.exec(text)) {
    out.push({
      family: m[1] === "ipv4" ? 4 : 6,
      proto: Number(m[2]) as CtFlow["proto"],
      orig: { src: m[3], dst: m[4], sport: Number(m[5]), dport: Number(m[6]) },
      dst: m[7],
      dport: Number(m[8]),
    });
  }
  return out;
}

export async function listFlows(netns?: string): Promise<CtFlow[]> {
  // The "N flow entries have been shown" summary goes to stderr; entries to stdout.
  return parseConntrack((await run("conntrack", ["-L", "-o", "extended"], { netns })).stdout);
}

export interface DeleteResult {
  deleted: number;
  /** Deleted entries by protocol number. */
  byProto: Map<number, number>;
  via: "netlink" | "conntrack-tool";
  /** Why netlink was not used, when it was not. */
  fallback?: string;
}

/** Delete these entries (by original tuple); entries already gone are not counted. */
export async function deleteFlows(flows: readonly CtFlow[], netns?: string): Promise<DeleteResult> {
  const byProto = new Map<number, number>();
  if (flows.length === 0) return { deleted: 0, byProto, via: "netlink" };
  let d: ConntrackDeleter;
  try {
    d = ConntrackDeleter.open(netns);
  } catch (e) {
    if (!(e instanceof NfctLibraryMissingError)) throw e;
    return { ...(await deleteFlowsWithTool(flows, netns)), fallback: e.message };
  }
  let deleted = 0;
  try {
    for (let i = 0; i < flows.length; i++) {
      const f = flows[i];
      if (d.delete({ family: f.family, proto: f.proto, ...f.orig })) {
        deleted++;
        byProto.set(f.proto, (byProto.get(f.proto) ?? 0) + 1);
      }
      // Each delete is a few microseconds; let the event loop breathe between thousands.
      if (i % 2000 === 1999) await yieldToLoop();
    }
  } finally {
    d.close();
  }
  return { deleted, byProto, via: "netlink" };
}

/**
 * The tool's way: one `conntrack -D` per (source, destination, port, translated destination and
 * port), any source port. Entries in one group share a verdict, so none is deleted by mistake.
 */
export async function deleteFlowsWithTool(flows: readonly CtFlow[], netns?: string): Promise<DeleteResult> {
  const groups = new Map<string, CtFlow>();
  for (const f of flows) {
    const key = `${f.family} ${f.proto} ${f.orig.src} ${f.orig.dst} ${f.orig.dport} ${f.dst} ${f.dport}`;
    if (!groups.has(key)) groups.set(key, f);
  }
  let deleted = 0;
  const byProto = new Map<number, number>();
  for (const f of groups.values()) {
    const args = ["-D", "-f", f.family === 4 ? "ipv4" : "ipv6", "-p", protoToolName(f.proto)];
    args.push("-s", f.orig.src, "-d", f.orig.dst, "--dport", String(f.orig.dport));
    args.push("--reply-src", f.dst, "--reply-port-src", String(f.dport));
    const r = await run("conntrack", args, { netns, allowFail: true });
    // 1 is "0 entries deleted" (the group ended meanwhile); anything else is a real failure.
    if (r.code !== 0 && r.code !== 1) throw new Error(`conntrack ${args.join(" ")}: ${r.stderr.trim()}`);
    const n = Number(/(\d+) flow entries have been deleted/.exec(r.stderr)?.[1] ?? 0);
    deleted += n;
    if (n) byProto.set(f.proto, (byProto.get(f.proto) ?? 0) + n);
  }
  return { deleted, byProto, via: "conntrack-tool" };
}
