/**
 * NFLOG deny logs with real packets: a lab node (routed veths) whose FORWARD chain sends new
 * connections to two "denied" pods through podwall's deny-log rule shape (deny-log-rules: per-pod
 * hashlimit -> PODWALL-DENY-LIMITED, NFLOG with a prefix, DROP), and the NflogReader bound to the
 * group inside the node netns. Checks: one denied probe gives exactly one record with the right
 * prefix and tuple (IPv4 TCP, IPv6 UDP); a flood is cut to the limit (with burst) per second and the
 * kernel counters account for every packet (limited + logged = entered), while another denied pod's
 * bucket and an allowed pod's traffic are unaffected; the reader's own bound and the netlink loss
 * count; a clean stop. Rules exist only in the lab's netns (nfl*), removed in afterAll.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readDenyLimitedPackets } from "../src/dataplane/deny-log-counters.js";
import {
  counterDelta,
  DENY_LIMITED_CHAIN,
  DENY_LOG_ID_MAX,
  denyLimitedChainRules,
  denyLogIdFromPrefix,
  denyLogRuleArgs,
  hashlimitName,
} from "../src/dataplane/deny-log-rules.js";
import { run } from "../src/dataplane/exec.js";
import { type LabState, labDown, labUp, probe } from "../src/dataplane/lab/lab.js";
import { NflogReader, type NflogRecord } from "../src/dataplane/nflog/reader.js";

const LAB = `nfl${process.pid.toString(36)}`.slice(0, 12);
const GROUP = 41;
const RATE = 20;
const BURST = 10;
const CLIENT4 = "10.93.0.2";
const DENIED_A4 = "10.93.0.3";
const DENIED_A6 = "fd93::3";
const DENIED_B4 = "10.93.0.4";
const ALLOWED4 = "10.93.0.5";

let lab: LabState;
const chainOf = (key: string) => `PODWALL-ING-T${key.slice(-1)}`;

function hostIf(key: string): string {
  return lab.pods.find((p) => p.key === key)!.hostIf;
}
function podNetns(key: string): string {
  return lab.pods.find((p) => p.key === key)!.netns;
}

/** iptables-restore of both families in the lab node only. */
async function restore(family: 4 | 6, text: string, noflush = false): Promise<void> {
  expect(lab.nodeNetns).toMatch(/^pwl-nfl/);
  await run(family === 4 ? "iptables-restore" : "ip6tables-restore", noflush ? ["--noflush"] : [], {
    netns: lab.nodeNetns,
    input: text,
  });
}

/** The lab node's rules; the same text serves both families. */
function rules(): string {
  const lines = [
    "*filter",
    `:${DENIED_CHAINS[0]} - [0:0]`,
    `:${DENIED_CHAINS[1]} - [0:0]`,
    `:${DENY_LIMITED_CHAIN} - [0:0]`,
  ];
  lines.push("-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT");
  for (const r of denyLimitedChainRules("DROP")) lines.push(`-A ${DENY_LIMITED_CHAIN} ${r}`);
  for (const [i, key] of ["t/deny-a", "t/deny-b"].entries()) {
    const chain = DENIED_CHAINS[i];
    lines.push(`-A FORWARD -o ${hostIf(key)} -m comment --comment entered-${i} -j ${chain}`);
    const [limit, nflog] = denyLogRuleArgs(`np/t/deny-${i}`, {
      group: GROUP,
      direction: "ingress",
      ratePerSec: RATE,
      burst: BURST,
      threshold: 4,
    });
    lines.push(`-A ${chain} ${limit}`, `-A ${chain} ${nflog}`, `-A ${chain} -j DROP`);
  }
  lines.push("COMMIT", "");
  return lines.join("\n");
}
const DENIED_CHAINS = [chainOf("a"), chainOf("b")];

/** Packet counters of the FORWARD jumps and each rule of a chain, from iptables -vxnL. */
async function counters(chain: string, family: 4 | 6 = 4): Promise<number[]> {
  const out = (
    await run(family === 4 ? "iptables" : "ip6tables", ["-w", "-n", "-v", "-x", "-L", chain], {
      netns: lab.nodeNetns,
    })
  ).stdout;
  return out
    .split("\n")
    .slice(2)
    .filter((l) => l.trim())
    .map((l) => Number(l.trim().split(/\s+/)[0]));
}

async function waitFor(cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
}

// UDP new flows: one socket, a new destination port per packet (so a new conntrack entry each),
// paced to `pps` for `secs`; prints how many were sent.
const FLOOD = `
import socket, sys, time
dst, base, pps, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
n = 0; t0 = time.monotonic(); total = int(pps * secs)
while n < total:
    due = min(total, int((time.monotonic() - t0) * pps) + 1)
    while n < due:
        try: s.sendto(b"x", (dst, base + n % 20000)); n += 1
        except OSError: time.sleep(0.001)
    time.sleep(0.002)
print(n, time.monotonic() - t0)
`;

async function flood(dst: string, pps: number, secs: number): Promise<{ sent: number; secs: number }> {
  const r = await run("python3", ["-c", FLOOD, dst, "20000", String(pps), String(secs)], {
    netns: podNetns("t/client"),
    timeoutMs: 60_000,
  });
  const [sent, took] = r.stdout.trim().split(/\s+/).map(Number);
  return { sent, secs: took };
}

beforeAll(async () => {
  lab = await labUp(LAB, [
    { key: "t/client", ips: [CLIENT4, "fd93::2"], serve: [] },
    { key: "t/deny-a", ips: [DENIED_A4, DENIED_A6], serve: [{ port: 80, protocol: "TCP" }] },
    { key: "t/deny-b", ips: [DENIED_B4], serve: [{ port: 80, protocol: "TCP" }] },
    { key: "t/allowed", ips: [ALLOWED4], serve: [{ port: 80, protocol: "TCP" }] },
  ]);
  await restore(4, rules());
  // IPv6: only deny-a has an address; deny-b's chain exists but is never entered.
  await restore(6, rules());
}, 120_000);

const PREFIX_NETNS = [`nfl-${process.pid}-nft`, `nfl-${process.pid}-legacy`];

afterAll(async () => {
  await labDown(LAB);
  for (const n of PREFIX_NETNS) await run("ip", ["netns", "del", n], { allowFail: true });
});

describe("the rendered rules in the kernel", () => {
  it("read back from iptables-save exactly as rendered (both families)", async () => {
    for (const family of [4, 6] as const) {
      const saved = (
        await run(family === 4 ? "iptables-save" : "ip6tables-save", ["-t", "filter"], {
          netns: lab.nodeNetns,
        })
      ).stdout;
      const mine = rules()
        .split("\n")
        .filter((l) => l.startsWith(`-A ${DENIED_CHAINS[0]}`) || l.startsWith(`-A ${DENY_LIMITED_CHAIN}`));
      expect(mine).toHaveLength(4);
      for (const line of mine) expect(saved.split("\n"), line).toContain(line);
    }
  });

  it("carries a 63-byte prefix (the longest id) intact with both iptables backends", async () => {
    const id = `${"x".repeat(DENY_LOG_ID_MAX - 2)}/9`;
    const [, nflog] = denyLogRuleArgs(id, { group: 7, direction: "egress", ratePerSec: 1, burst: 1 });
    for (const [i, backend] of (["nft", "legacy"] as const).entries()) {
      const ns = PREFIX_NETNS[i];
      await run("ip", ["netns", "add", ns]);
      await run("ip", ["link", "set", "lo", "up"], { netns: ns });
      await run(
        `iptables-${backend}`,
        ["-A", "OUTPUT", "-p", "udp", "--dport", "9", ...nflog.replace(/"/g, "").split(" ")],
        {
          netns: ns,
        },
      );
      const got: NflogRecord[] = [];
      const reader = new NflogReader({ group: 7, netns: ns, onRecords: (b) => got.push(...b) });
      await reader.start();
      try {
        await run("python3", ["-c", 'import socket; socket.socket(2, 2).sendto(b"x", ("127.0.0.1", 9))'], {
          netns: ns,
        });
        await waitFor(() => got.length > 0, 2000);
      } finally {
        await reader.stop();
      }
      expect(
        got.map((r) => denyLogIdFromPrefix(r.prefix)),
        backend,
      ).toEqual([id]);
    }
  });
});

describe("NFLOG reader on podwall's deny-log rules", () => {
  let reader: NflogReader;
  const got: NflogRecord[] = [];

  beforeAll(async () => {
    reader = new NflogReader({ group: GROUP, netns: lab.nodeNetns, onRecords: (b) => got.push(...b) });
    await reader.start();
  });
  afterAll(async () => {
    await reader?.stop();
  });

  it("a denied TCP connect (IPv4) gives exactly one record naming the rule's id and the flow", async () => {
    got.length = 0;
    const [ok] = await probe(lab, [{ from: "t/client", toIp: DENIED_A4, port: 80, protocol: "TCP" }], {
      timeoutMs: 600,
    });
    expect(ok).toBe(false);
    await waitFor(() => got.length > 0, 2000);
    await new Promise((r) => setTimeout(r, 300)); // nothing more may come
    expect(got).toHaveLength(1);
    const r = got[0];
    expect(denyLogIdFromPrefix(r.prefix)).toBe("np/t/deny-0");
    expect(r).toMatchObject({ src: CLIENT4, dst: DENIED_A4, proto: 6, dport: 80, family: 4 });
    expect(r.sport).toBeGreaterThan(0);
    expect(Math.abs(r.ts - Date.now())).toBeLessThan(5000);
  });

  it("a denied UDP packet over IPv6 gives one record with the IPv6 tuple", async () => {
    got.length = 0;
    await run(
      "python3",
      [
        "-c",
        `import socket; socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(b"x", ("${DENIED_A6}", 5353))`,
      ],
      {
        netns: podNetns("t/client"),
      },
    );
    await waitFor(() => got.length > 0, 2000);
    expect(got).toHaveLength(1);
    expect(got[0]).toMatchObject({
      prefix: "pw:np/t/deny-0",
      src: "fd93::2",
      dst: DENIED_A6,
      proto: 17,
      dport: 5353,
      family: 6,
    });
  });

  it("an allowed connection to a pod without deny rules gives no record", async () => {
    got.length = 0;
    const [ok] = await probe(lab, [{ from: "t/client", toIp: ALLOWED4, port: 80, protocol: "TCP" }]);
    expect(ok).toBe(true);
    await new Promise((r) => setTimeout(r, 300));
    expect(got).toHaveLength(0);
  });

  it("a flood is cut to the per-pod limit; counters account for every packet; others unaffected", async () => {
    // Fresh buckets: wait until deny-a's bucket refilled after the probes above.
    await new Promise((r) => setTimeout(r, (1000 * BURST) / RATE + 100));
    got.length = 0;
    const before = await counters("FORWARD");
    const limited0 = await readDenyLimitedPackets({ netns: lab.nodeNetns });
    const chain0 = await counters(DENIED_CHAINS[0]);

    const t0 = Date.now();
    const floodDone = flood(DENIED_A4, 2000, 3);
    // Meanwhile: allowed connections to another pod, and one denied connection to the other denied pod.
    const allowed: boolean[] = [];
    const otherDenied: NflogRecord[] = [];
    await new Promise((r) => setTimeout(r, 500));
    for (let i = 0; i < 10; i++) {
      allowed.push(
        ...(await probe(lab, [{ from: "t/client", toIp: ALLOWED4, port: 80, protocol: "TCP" }], {
          timeoutMs: 1000,
        })),
      );
    }
    await probe(lab, [{ from: "t/client", toIp: DENIED_B4, port: 80, protocol: "TCP" }], { timeoutMs: 300 });
    const f = await floodDone;
    const elapsed = (Date.now() - t0) / 1000;
    await new Promise((r) => setTimeout(r, 400)); // the kernel flush timeout and one batch
    const after = await counters("FORWARD");
    const limited1 = await readDenyLimitedPackets({ netns: lab.nodeNetns });
    const chain1 = await counters(DENIED_CHAINS[0]);

    expect(allowed.every(Boolean), `allowed probes during the flood: ${allowed}`).toBe(true);
    otherDenied.push(...got.filter((r) => r.dst === DENIED_B4));
    expect(otherDenied.map((r) => r.prefix)).toEqual(["pw:np/t/deny-1"]);

    const flooded = got.filter((r) => r.dst === DENIED_A4);
    // FORWARD rules: [established accept, jump to deny-a (entered-0), jump to deny-b (entered-1)].
    const entered = after[1] - before[1];
    const limited = counterDelta(limited0.v4, limited1.v4!);
    const [limitRule, nflogRule, dropRule] = chain1.map((n, i) => n - chain0[i]);
    expect(entered).toBe(f.sent); // every flood packet was a new connection reaching the pod chain
    expect(limitRule).toBe(limited);
    expect(limited + nflogRule).toBe(entered);
    expect(dropRule).toBe(nflogRule); // NFLOG does not end the walk: the logged ones meet the DROP
    // The reader got every logged packet: no netlink loss at this rate.
    expect(flooded.length).toBe(nflogRule);
    expect(reader.stats().seqLost).toBe(0);
    // At most the burst plus the rate over the flood's duration; at least the burst.
    expect(flooded.length).toBeLessThanOrEqual(BURST + Math.ceil(RATE * elapsed) + 1);
    expect(flooded.length).toBeGreaterThanOrEqual(BURST + Math.floor(RATE * f.secs * 0.5));
    expect(limited).toBeGreaterThan(f.sent * 0.8);
    // Per second of kernel time (the records' timestamps): never more than rate + burst.
    const bySecond = new Map<number, number>();
    for (const r of flooded)
      bySecond.set(Math.floor(r.ts / 1000), (bySecond.get(Math.floor(r.ts / 1000)) ?? 0) + 1);
    // (+1: the limit counts in jiffies, the timestamps are the skb clock.)
    for (const n of bySecond.values()) expect(n).toBeLessThanOrEqual(RATE + BURST + 1);
    // One hashlimit entry, keyed by the flooded pod's address.
    const table = (
      await run("cat", [`/proc/net/ipt_hashlimit/${hashlimitName("ingress", RATE, BURST)}`], {
        netns: lab.nodeNetns,
      })
    ).stdout;
    expect(table).toContain(DENIED_A4);
    expect(table).not.toContain(ALLOWED4);
  }, 60_000);
});

describe("NFLOG reader bounds and stop", () => {
  it("drops and counts records beyond maxPending when the main thread does not take them", async () => {
    const group = GROUP + 1;
    // Unlimited NFLOG for UDP to deny-b on this group (replaces the chain; the last test uses it again).
    await restore(
      4,
      [
        "*filter",
        ":PODWALL-T-BOUND - [0:0]",
        `-I FORWARD 2 -o ${hostIf("t/deny-b")} -p udp -j PODWALL-T-BOUND`,
        `-A PODWALL-T-BOUND -j NFLOG --nflog-prefix pw:bound --nflog-group ${group} --nflog-threshold 1`,
        "-A PODWALL-T-BOUND -j DROP",
        "COMMIT",
        "",
      ].join("\n"),
      true,
    );
    const got: NflogRecord[] = [];
    // Batches are posted only when 1000 records wait or after 60 s, i.e. at stop: the bound decides.
    const reader = new NflogReader({
      group,
      netns: lab.nodeNetns,
      onRecords: (b) => got.push(...b),
      maxPending: 25,
      batchSize: 1000,
      batchMs: 60_000,
    });
    await reader.start();
    try {
      await flood(DENIED_B4, 1000, 0.1);
      await waitFor(() => reader.stats().received >= 100, 3000);
      expect(got).toHaveLength(0);
    } finally {
      await reader.stop();
    }
    const s = reader.stats();
    expect(s.received).toBe(100);
    expect(got).toHaveLength(25); // delivered at stop: a clean stop loses nothing it kept
    expect(s.posted).toBe(25);
    expect(s.overflowDropped).toBe(75);
    expect(got.every((r) => r.prefix === "pw:bound" && r.dst === DENIED_B4)).toBe(true);
    expect(reader.running).toBe(false);
  });

  it("counts packets lost on a full socket buffer from the group's sequence numbers", async () => {
    const group = GROUP + 1;
    const got: NflogRecord[] = [];
    const reader = new NflogReader({
      group,
      netns: lab.nodeNetns,
      onRecords: (b) => got.push(...b),
      rcvBufBytes: 1, // the kernel raises it to its minimum: a few messages
      qthreshold: 1,
    });
    await reader.start();
    const before = await counters("PODWALL-T-BOUND");
    let f: { sent: number };
    try {
      f = await flood(DENIED_B4, 200_000, 0.1); // as fast as python sends
      // A loss shows as a gap before the next packet's number: one more packet, once drained.
      await new Promise((r) => setTimeout(r, 300));
      const sentinel = await flood(DENIED_B4, 1000, 0.001);
      f.sent += sentinel.sent;
      await waitFor(() => reader.stats().received + reader.stats().seqLost >= f.sent, 3000);
    } finally {
      await reader.stop();
    }
    const logged = (await counters("PODWALL-T-BOUND"))[0] - before[0];
    const s = reader.stats();
    expect(logged).toBe(f.sent);
    // Every packet the kernel logged is either received or counted lost; never both, never neither.
    expect(s.received + s.seqLost).toBe(logged);
    expect(got.length).toBe(s.received - s.overflowDropped);
    expect(s.seqLost, "the tiny socket buffer overflowed").toBeGreaterThan(0);
    expect(s.enobufs).toBeGreaterThan(0);
  });

  it("fails to start, with the reason, when the group is already bound in that namespace", async () => {
    const a = new NflogReader({ group: GROUP + 2, netns: lab.nodeNetns, onRecords: () => {} });
    await a.start();
    try {
      const b = new NflogReader({ group: GROUP + 2, netns: lab.nodeNetns, onRecords: () => {} });
      await expect(b.start()).rejects.toThrow(/nflog_bind_group\(43\) failed.*another program/);
      expect(b.running).toBe(false);
    } finally {
      await a.stop();
    }
  });

  it("rejects a namespace that does not exist", async () => {
    const r = new NflogReader({ group: GROUP + 3, netns: `${LAB}-nope`, onRecords: () => {} });
    await expect(r.start()).rejects.toThrow(/network namespace .*-nope/);
  });
});
