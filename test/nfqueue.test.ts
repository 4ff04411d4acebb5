/**
 * End-to-end NFQUEUE verdict loop: a routed node netns between two pod netns (IPv4 + IPv6), an
 * iptables NFQUEUE rule for new forwarded flows, the loop bound inside the node netns, real traffic.
 * Every netns is named tnq-<pid>-*; all are removed in afterAll, whatever failed.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { run } from "../src/dataplane/exec.js";
import type { DenyEvent } from "../src/dataplane/nfqueue/protocol.js";
import { NfqueueVerdictLoop, readQueueProcStats } from "../src/dataplane/nfqueue/queue.js";

const TAG = `tnq-${process.pid}`;
const NODE = `${TAG}-n`;
const POD_A = `${TAG}-a`;
const POD_B = `${TAG}-b`;
const QUEUE = 100;
const A4 = "10.91.1.2";
const B4 = "10.91.2.2";
const A6 = "fd91:1::2";
const B6 = "fd91:2::2";
const DECIDER = new URL("./support/nfq-test-decider.ts", import.meta.url).href;
const DEFAULT_TABLE = { tcp: [80], udp: [53] };
const PY = existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";

// Echo server on dual-stack sockets; exits when the stop file appears (run() has no kill handle).
const SERVER = `
import os, selectors, socket, sys, time
stop, ready, tcp, udp, life = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
sel = selectors.DefaultSelector()
def sock(kind, port):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    if kind == socket.SOCK_STREAM: s.listen(128)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, kind)
for p in tcp.split(","): sock(socket.SOCK_STREAM, int(p))
for p in udp.split(","): sock(socket.SOCK_DGRAM, int(p))
open(ready, "w").close()
deadline = time.time() + life
while not os.path.exists(stop) and time.time() < deadline:
    for key, _ in sel.select(0.1):
        try:
            if key.data == socket.SOCK_STREAM:
                c, _ = key.fileobj.accept()
                c.settimeout(1)
                try: c.sendall(c.recv(64))
                finally: c.close()
            else:
                d, a = key.fileobj.recvfrom(2048)
                key.fileobj.sendto(d, a)
        except OSError:
            pass
`;

// One probe: exit 0 when the echo came back.
const CLIENT = `
import socket, sys
proto, dst, port, sport, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if sport: s.bind(("", sport))
s.settimeout(timeout)
try:
    if proto == "tcp":
        s.connect((dst, port)); s.sendall(b"tnq-ping"); d = s.recv(64)
    else:
        s.sendto(b"tnq-ping", (dst, port)); d, _ = s.recvfrom(64)
except OSError as e:
    print(type(e).__name__); sys.exit(1)
sys.exit(0 if d == b"tnq-ping" else 1)
`;

// UDP flood. "same": one socket, so each packet is a new flow only while they are dropped;
// "fresh": a new socket (source port) per packet, so every packet is a new flow.
const FLOOD = `
import socket, sys
dst, port, n, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
for i in range(n):
    if mode == "fresh":
        s.close(); s = socket.socket(fam, socket.SOCK_DGRAM)
    s.sendto(b"x", (dst, port))
`;

async function flood(dst: string, port: number, n: number, mode: "same" | "fresh"): Promise<void> {
  await run(PY, ["-c", FLOOD, dst, String(port), String(n), mode], { netns: POD_A, timeoutMs: 60_000 });
}

async function probe(
  proto: "tcp" | "udp",
  dst: string,
  port: number,
  sport = 0,
  timeout = 1,
  cpu?: number,
): Promise<boolean> {
  const argv = [PY, "-c", CLIENT, proto, dst, String(port), String(sport), String(timeout)];
  if (cpu !== undefined) argv.unshift("taskset", "-c", String(cpu));
  const r = await run(argv[0], argv.slice(1), {
    netns: POD_A,
    allowFail: true,
    timeoutMs: (timeout + 5) * 1000,
  });
  return r.code === 0;
}

async function sh(cmd: string, args: string[], netns?: string): Promise<void> {
  await run(cmd, args, { netns, timeoutMs: 10_000 });
}

async function deleteNetns(names: string[]): Promise<void> {
  for (const n of names) await run("ip", ["netns", "del", n], { allowFail: true });
}

/** Namespaces left by an earlier run of this file that died before its afterAll. */
async function removeStale(): Promise<void> {
  const { stdout } = await run("ip", ["netns", "list"], { allowFail: true });
  for (const line of stdout.split("\n")) {
    const m = /^(tnq-(\d+)-[nab])\b/.exec(line);
    if (!m || Number(m[2]) === process.pid) continue;
    let alive = true;
    try {
      process.kill(Number(m[2]), 0);
    } catch {
      alive = false;
    }
    if (!alive) await deleteNetns([m[1]]);
  }
}

async function buildTopology(): Promise<void> {
  for (const ns of [NODE, POD_A, POD_B]) {
    await sh("ip", ["netns", "add", ns]);
    await sh("ip", ["-n", ns, "link", "set", "lo", "up"]);
    // No duplicate address detection: addresses are usable at once (no tentative window).
    await sh("sysctl", ["-qw", "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0"], ns);
  }
  await sh("sysctl", ["-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"], NODE);
  const pods: [string, string, number][] = [
    [POD_A, "va", 1],
    [POD_B, "vb", 2],
  ];
  for (const [pod, veth, i] of pods) {
    await sh("ip", [
      "link",
      "add",
      veth,
      "netns",
      NODE,
      "type",
      "veth",
      "peer",
      "name",
      "eth0",
      "netns",
      pod,
    ]);
    await sh("ip", ["-n", NODE, "addr", "add", `10.91.${i}.1/24`, "dev", veth]);
    await sh("ip", ["-n", NODE, "addr", "add", `fd91:${i}::1/64`, "dev", veth, "nodad"]);
    await sh("ip", ["-n", NODE, "link", "set", veth, "up"]);
    await sh("ip", ["-n", pod, "addr", "add", `10.91.${i}.2/24`, "dev", "eth0"]);
    await sh("ip", ["-n", pod, "addr", "add", `fd91:${i}::2/64`, "dev", "eth0", "nodad"]);
    await sh("ip", ["-n", pod, "link", "set", "eth0", "up"]);
    await sh("ip", ["-n", pod, "route", "add", "default", "via", `10.91.${i}.1`]);
    await sh("ip", ["-n", pod, "-6", "route", "add", "default", "via", `fd91:${i}::1`]);
  }
}

async function queueRules(bypass: boolean): Promise<void> {
  for (const ipt of ["iptables", "ip6tables"]) {
    await sh(ipt, ["-F", "FORWARD"], NODE);
    const rule = [
      "-A",
      "FORWARD",
      "-m",
      "conntrack",
      "--ctstate",
      "NEW",
      "-j",
      "NFQUEUE",
      "--queue-num",
      `${QUEUE}`,
    ];
    await sh(ipt, bypass ? [...rule, "--queue-bypass"] : rule, NODE);
  }
}

async function waitFor<T>(
  what: string,
  fn: () => T | undefined | Promise<T | undefined>,
  ms = 5000,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe("NFQUEUE verdict loop in a netns", () => {
  const dir = mkdtempSync(join(tmpdir(), "tnq-"));
  const stopFile = join(dir, "stop");
  const readyFile = join(dir, "ready");
  let server: Promise<unknown> | undefined;
  const denies: DenyEvent[] = [];
  const errors: Error[] = [];
  let drained = 0;
  let loop: NfqueueVerdictLoop | undefined;

  beforeAll(async () => {
    await removeStale();
    await buildTopology();
    await queueRules(false);
    server = run(PY, ["-c", SERVER, stopFile, readyFile, "80,8080", "53,5353", "300"], {
      netns: POD_B,
      allowFail: true,
      timeoutMs: 310_000,
    });
    await waitFor("echo server", () => existsSync(readyFile));
    loop = new NfqueueVerdictLoop({
      queueNum: QUEUE,
      deciderModule: DECIDER,
      table: DEFAULT_TABLE,
      failOpen: false,
      netns: NODE,
      onDeny: (e) => denies.push(e),
      onError: (e) => errors.push(e),
      onDeciderCounters: (d) => {
        drained += (d as { decisions: number }).decisions;
      },
    });
    await loop.start();
  });

  afterAll(async () => {
    try {
      await loop?.stop();
    } finally {
      writeFileSync(stopFile, "");
      await server;
      await deleteNetns([NODE, POD_A, POD_B]);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("binds the queue in the node netns with a 128-byte copy range", async () => {
    const q = await readQueueProcStats(QUEUE, NODE);
    expect(q).toBeDefined();
    expect(q!.portId).toBe(loop!.pid);
    expect(q!.copyMode).toBe(2);
    expect(q!.copyRange).toBe(128);
    // /proc/net is per netns: the host netns does not see this queue.
    expect((await readQueueProcStats(QUEUE))?.portId).not.toBe(loop!.pid);
  });

  it("accepts allowed flows and drops the rest, IPv4 and IPv6", async () => {
    const results = await Promise.all([
      probe("tcp", B4, 80),
      probe("udp", B4, 53),
      probe("tcp", B6, 80),
      probe("udp", B6, 53),
      probe("tcp", B4, 8080),
      probe("udp", B4, 5353),
      probe("tcp", B6, 8080),
      probe("udp", B6, 5353),
    ]);
    expect(results).toEqual([true, true, true, true, false, false, false, false]);
  });

  it("reports denied packets with their 5-tuple and the decider's report of its own verdict", async () => {
    denies.length = 0;
    await Promise.all([probe("tcp", B4, 8080, 41001), probe("udp", B6, 5353, 41002)]);
    const v4 = await waitFor("IPv4 deny event", () => denies.find((e) => e.srcPort === 41001));
    const report = { verdict: "deny" };
    expect(v4).toEqual({
      type: "deny",
      event: "deny",
      report,
      src: A4,
      dst: B4,
      proto: 6,
      dport: 8080,
      srcPort: 41001,
    });
    const v6 = await waitFor("IPv6 deny event", () => denies.find((e) => e.srcPort === 41002));
    expect(v6).toEqual({
      type: "deny",
      event: "deny",
      report,
      src: A6,
      dst: B6,
      proto: 17,
      dport: 5353,
      srcPort: 41002,
    });
  });

  it("accepts a packet the decider marks as an audit deny, and reports it", async () => {
    loop!.setTable({ ...DEFAULT_TABLE, audit: [80] });
    await loop!.tableSynced();
    try {
      denies.length = 0;
      expect(await probe("tcp", B4, 80, 41003)).toBe(true);
      const e = await waitFor("audit event", () => denies.find((x) => x.srcPort === 41003));
      expect(e).toMatchObject({ event: "audit-deny", report: { verdict: "audit" }, dport: 80, src: A4 });
      // Only the connection's first packet is queued: one event.
      await new Promise((r) => setTimeout(r, 200));
      expect(denies.filter((x) => x.srcPort === 41003)).toHaveLength(1);
    } finally {
      loop!.setTable(DEFAULT_TABLE);
      await loop!.tableSynced();
    }
  });

  it("counts verdicts by result and protocol, with a latency histogram", async () => {
    const s = await loop!.refreshStats();
    expect(s.byProto.tcp.accepted).toBeGreaterThanOrEqual(2);
    expect(s.byProto.udp.accepted).toBeGreaterThanOrEqual(2);
    expect(s.byProto.tcp.dropped).toBeGreaterThanOrEqual(3);
    expect(s.byProto.udp.dropped).toBeGreaterThanOrEqual(3);
    expect(s.accepted + s.dropped).toBe(s.packets);
    expect(s.latency.count).toBe(s.packets);
    expect(s.latency.sumUs).toBeGreaterThan(0);
    expect(s.parseErrors).toBe(0);
    expect(s.deciderErrors).toBe(0);
    const q = await readQueueProcStats(QUEUE, NODE);
    expect(q!.idSequence).toBeGreaterThanOrEqual(s.packets);
    expect(q!.queueDropped + q!.userDropped).toBe(0);
    // The decider module's own counters come back through drainCounters(), about once a second.
    await waitFor("decider counters", () => drained >= s.packets || undefined, 3000);
  });

  it("a table swap takes effect for the next new connection", async () => {
    loop!.setTable({ tcp: [8080], udp: [53] });
    await loop!.tableSynced();
    expect(await Promise.all([probe("tcp", B4, 8080), probe("tcp", B6, 8080), probe("tcp", B4, 80)])).toEqual(
      [true, true, false],
    );
    // A table the factory rejects leaves the previous decider in force.
    loop!.setTable({ tcp: [80], udp: [53], throwOnBuild: true });
    await expect(loop!.tableSynced()).rejects.toThrow(/table refused/);
    expect(await probe("tcp", B4, 8080)).toBe(true);
    expect((await loop!.refreshStats()).tableErrors).toBe(1);
    expect(errors.some((e) => /table refused/.test(e.message))).toBe(true);
    loop!.setTable(DEFAULT_TABLE);
    await loop!.tableSynced();
    expect(await probe("tcp", B4, 80)).toBe(true);
  });

  it("a throwing decider yields the default verdict (fail-closed) and is counted", async () => {
    loop!.setTable({ ...DEFAULT_TABLE, throwOnPort: 80 });
    await loop!.tableSynced();
    const before = (await loop!.refreshStats()).deciderErrors;
    expect(await probe("tcp", B4, 80)).toBe(false);
    expect(await probe("udp", B4, 53)).toBe(true); // the loop survived
    expect((await loop!.refreshStats()).deciderErrors).toBeGreaterThan(before);
    loop!.setTable(DEFAULT_TABLE);
    await loop!.tableSynced();
  });

  it("rate-limits deny events under a flood and counts the rest", async () => {
    const before = await loop!.refreshStats();
    denies.length = 0;
    const n = 5000;
    await flood(B4, 5353, n, "same");
    const after = await waitFor(
      "all flood packets judged",
      () => {
        const s = loop!.stats();
        return s.dropped - before.dropped >= n * 0.95 ? s : undefined;
      },
      10_000,
    ).catch(async () => loop!.refreshStats());
    const s = await loop!.refreshStats();
    const reported = s.deniesReported - before.deniesReported;
    const suppressed = s.deniesSuppressed - before.deniesSuppressed;
    expect(after.dropped - before.dropped).toBeGreaterThanOrEqual(n * 0.95);
    expect(reported + suppressed).toBe(s.dropped - before.dropped);
    expect(suppressed).toBeGreaterThan(0);
    await waitFor("deny batches", () => denies.length >= reported || undefined);
    expect(denies.length).toBe(reported);
  });

  it("refuses a second program on the same queue with a clear error", async () => {
    const second = new NfqueueVerdictLoop({
      queueNum: QUEUE,
      deciderModule: DECIDER,
      table: DEFAULT_TABLE,
      failOpen: true,
      netns: NODE,
    });
    await expect(second.start()).rejects.toThrow(/nfq_create_queue\(100\) failed/);
    expect(second.pid).toBeUndefined();
  });

  it("queue full: NFQA_CFG_F_FAIL_OPEN accepts the overflow, fail-closed drops it", async () => {
    await loop!.stop();
    expect(loop!.pid).toBeUndefined();
    expect(loop!.stats().packets).toBeGreaterThan(0); // final stats survive the stop
    const n = 3000;
    for (const failOpen of [true, false]) {
      const slow = new NfqueueVerdictLoop({
        queueNum: QUEUE,
        deciderModule: DECIDER,
        table: { ...DEFAULT_TABLE, spinUs: 1000 },
        failOpen,
        maxLen: 8,
        netns: NODE,
      });
      await slow.start();
      try {
        const before = await readQueueProcStats(QUEUE, NODE);
        await flood(B4, 53, n, "fresh");
        // Drain: wait until the queue is empty, then compare what was judged with what was sent.
        await waitFor("queue drained", async () => (await readQueueProcStats(QUEUE, NODE))?.queueTotal === 0);
        const q = (await readQueueProcStats(QUEUE, NODE))!;
        const judged = (await slow.refreshStats()).packets;
        expect(judged).toBeLessThan(n * 0.9);
        if (failOpen) expect(q.queueDropped - before!.queueDropped).toBe(0);
        else expect(q.queueDropped - before!.queueDropped).toBeGreaterThan(n * 0.1);
      } finally {
        await slow.stop();
      }
    }
  });

  it("two queues spread by CPU: one pinned worker each, both judge, a table counts once both use it", async () => {
    if (availableParallelism() < 2) return; // fanout needs two CPUs to show anything
    for (const ipt of ["iptables", "ip6tables"]) {
      await sh(ipt, ["-F", "FORWARD"], NODE);
      const target = ["-j", "NFQUEUE", "--queue-balance", `${QUEUE}:${QUEUE + 1}`, "--queue-cpu-fanout"];
      await sh(ipt, ["-A", "FORWARD", "-m", "conntrack", "--ctstate", "NEW", ...target], NODE);
    }
    const two = new NfqueueVerdictLoop({
      queueNum: QUEUE,
      queueCount: 2,
      deciderModule: DECIDER,
      table: DEFAULT_TABLE,
      failOpen: false,
      netns: NODE,
    });
    await two.start();
    try {
      const bound = await Promise.all([readQueueProcStats(QUEUE, NODE), readQueueProcStats(QUEUE + 1, NODE)]);
      expect(bound.map((q) => (q?.portId ?? 0) > 0)).toEqual([true, true]);
      // Each worker thread is pinned to the CPU whose packets its queue receives.
      const pinned = readdirSync(`/proc/${two.pid}/task`).map(
        (t) =>
          /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync(`/proc/${two.pid}/task/${t}/status`, "utf8"))?.[1],
      );
      expect(pinned).toContain("0");
      expect(pinned).toContain("1");
      const onCpu = (cpu: number, port: number) => probe("tcp", B4, port, 0, 1, cpu);
      expect(await Promise.all([onCpu(0, 80), onCpu(1, 80), onCpu(0, 8080), onCpu(1, 8080)])).toEqual([
        true,
        true,
        false,
        false,
      ]);
      const after = await Promise.all([readQueueProcStats(QUEUE, NODE), readQueueProcStats(QUEUE + 1, NODE)]);
      expect(after.map((q) => q!.idSequence > 0)).toEqual([true, true]);
      const s = await two.refreshStats();
      expect(s.byProto.tcp.accepted).toBeGreaterThanOrEqual(2);
      expect(s.byProto.tcp.dropped).toBeGreaterThanOrEqual(2);
      expect(s.latency.count).toBe(s.packets);
      two.setTable({ tcp: [8080], udp: [53] });
      await two.tableSynced();
      expect(await Promise.all([onCpu(0, 8080), onCpu(1, 8080), onCpu(0, 80), onCpu(1, 80)])).toEqual([
        true,
        true,
        false,
        false,
      ]);
    } finally {
      await two.stop();
      await queueRules(false);
    }
  });

  it("stopped: traffic flows with --queue-bypass (fail-open) and not without (fail-closed)", async () => {
    expect(await readQueueProcStats(QUEUE, NODE)).toBeUndefined();
    expect(await Promise.all([probe("tcp", B4, 80), probe("udp", B6, 53)])).toEqual([false, false]);
    await queueRules(true);
    expect(await Promise.all([probe("tcp", B4, 80), probe("udp", B6, 53), probe("tcp", B4, 8080)])).toEqual([
      true,
      true,
      true,
    ]);
  });
});
