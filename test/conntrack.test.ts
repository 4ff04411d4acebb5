/**
 * Deleting conntrack entries in a network namespace this test creates, over netlink and with the
 * conntrack tool (the fallback): exactly the entries asked for go, IPv4 and IPv6, and an entry
 * that is already gone is not counted. Entries are inserted with `conntrack -I`; the namespace is
 * removed afterwards, also on failure.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  type CtFlow,
  deleteFlows,
  deleteFlowsWithTool,
  listFlows,
  parseConntrack,
} from "../src/dataplane/conntrack.js";
import { run } from "../src/dataplane/exec.js";

const NS = `pwct-${process.pid.toString(36)}`;

/** A client's connection to a Service address, translated to one backend (as kube-proxy's DNAT). */
function flow(sport: number, backend: string, family: 4 | 6 = 4, proto: 6 | 17 = 6): CtFlow {
  const [client, vip] = family === 4 ? ["10.0.0.1", "10.96.0.10"] : ["fd00::1", "fd00:96::10"];
  return { family, proto, orig: { src: client, dst: vip, sport, dport: 80 }, dst: backend, dport: 8080 };
}

async function insert(f: CtFlow): Promise<void> {
  const args = ["-I", "-p", f.proto === 6 ? "tcp" : "udp", "-s", f.orig.src, "-d", f.orig.dst];
  args.push("--sport", String(f.orig.sport), "--dport", String(f.orig.dport), "-r", f.dst, "-q", f.orig.src);
  args.push("--reply-port-src", String(f.dport), "--reply-port-dst", String(f.orig.sport), "-t", "120");
  if (f.proto === 6) args.push("--state", "ESTABLISHED");
  await run("conntrack", args, { netns: NS });
}

const B1 = "10.244.1.5";
const B2 = "10.244.1.6";
const B6 = "fd00:244::5";
const ALL = [flow(1000, B1), flow(1001, B1), flow(1002, B2), flow(5000, B6, 6, 17)];
const tuples = (fs: CtFlow[]) => fs.map((f) => `${f.orig.src}:${f.orig.sport}>${f.dst}`).sort();

beforeAll(async () => {
  await run("ip", ["netns", "add", NS]);
});
afterAll(async () => {
  await run("ip", ["netns", "del", NS], { allowFail: true });
});
beforeEach(async () => {
  await run("conntrack", ["-F"], { netns: NS, allowFail: true });
  for (const f of ALL) await insert(f);
  expect(tuples(await listFlows(NS))).toEqual(tuples(ALL));
});

describe("deleting conntrack entries", () => {
  it("over netlink: exactly the entries given, IPv4 and IPv6; one already gone is not counted", async () => {
    const r = await deleteFlows([ALL[0], ALL[3]], NS);
    expect(r).toMatchObject({ deleted: 2, via: "netlink" });
    expect([...r.byProto]).toEqual(
      expect.arrayContaining([
        [6, 1],
        [17, 1],
      ]),
    );
    expect(tuples(await listFlows(NS))).toEqual(tuples([ALL[1], ALL[2]]));
    expect((await deleteFlows([ALL[0]], NS)).deleted).toBe(0);
  });

  it("with the tool: one call per group removes the group's other source ports too, and no other backend's", async () => {
    // Judged per (client, backend, port): 1000 and 1001 share B1 and a verdict; 1002 went to B2.
    const r = await deleteFlowsWithTool([ALL[0]], NS);
    expect(r).toMatchObject({ deleted: 2, via: "conntrack-tool" });
    expect(tuples(await listFlows(NS))).toEqual(tuples([ALL[2], ALL[3]]));
    expect((await deleteFlowsWithTool([ALL[3]], NS)).deleted).toBe(1);
    expect(tuples(await listFlows(NS))).toEqual(tuples([ALL[2]]));
  });

  it("in a namespace that does not exist: an error, not a silent success", async () => {
    await expect(deleteFlows([ALL[0]], `${NS}-missing`)).rejects.toThrow(/ENOENT.*missing/);
    await expect(deleteFlowsWithTool([ALL[0]], `${NS}-missing`)).rejects.toThrow(/conntrack -D/);
  });
});

describe("parsing conntrack -L -o extended", () => {
  it("reads TCP, UDP and SCTP with the translated destination; skips ICMP and other lines", () => {
    const text = [
      "ipv4     2 tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=10.96.0.10 sport=41000 dport=80 src=10.244.1.5 dst=10.0.0.1 sport=8080 dport=41000 [ASSURED] mark=0 use=1",
      "ipv4     2 icmp     1 29 src=10.0.0.1 dst=10.0.0.2 type=8 code=0 id=7 src=10.0.0.2 dst=10.0.0.1 type=0 code=0 id=7 mark=0 use=1",
      "ipv6     10 udp      17 25 src=fd00::1 dst=fd00::2 sport=5000 dport=53 [UNREPLIED] src=fd00::2 dst=fd00::1 sport=53 dport=5000 mark=0 zone=3 use=1",
      "ipv4     2 sctp     132 3 ESTABLISHED src=10.0.0.1 dst=10.0.0.3 sport=9 dport=7777 src=10.0.0.3 dst=10.0.0.1 sport=7777 dport=9 [ASSURED] mark=0 use=1",
      "conntrack v1.4.7 (conntrack-tools): 4 flow entries have been shown.",
      "",
    ].join("\n");
    expect(parseConntrack(text)).toEqual([
      {
        family: 4,
        proto: 6,
        orig: { src: "10.0.0.1", dst: "10.96.0.10", sport: 41000, dport: 80 },
        dst: "10.244.1.5",
        dport: 8080,
      },
      {
        family: 6,
        proto: 17,
        orig: { src: "fd00::1", dst: "fd00::2", sport: 5000, dport: 53 },
        dst: "fd00::2",
        dport: 53,
      },
      {
        family: 4,
        proto: 132,
        orig: { src: "10.0.0.1", dst: "10.0.0.3", sport: 9, dport: 7777 },
        dst: "10.0.0.3",
        dport: 7777,
      },
    ]);
  });
});
