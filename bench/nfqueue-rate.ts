/**
 * nfqueue-rate: saturated verdict rate of the NFQUEUE loop. Builds its own netns topology
 * (tnq-bench-*), floods new UDP flows from one pod to the other and reports verdicts/s and loss.
 * Usage: node --import tsx bench/nfqueue-rate.ts [packets=200000] [verdict=drop|accept]
 * Root only; never touches the host network namespace's firewall.
 */
import { existsSync } from "node:fs";
import { run } from "../src/dataplane/exec.js";
import { NfqueueVerdictLoop, readQueueProcStats } from "../src/dataplane/nfqueue/queue.js";

const NODE = "tnq-bench-n";
const A = "tnq-bench-a";
const B = "tnq-bench-b";
const QUEUE = 100;
const PY = existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
const packets = Number(process.argv[2] ?? 200_000);
const verdict = process.argv[3] === "accept" ? "accept" : "drop";

// One socket, destination port cycling: every packet is a distinct flow, hence ct NEW and queued.
const FLOOD = `
import socket, sys
dst, n = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(n): s.sendto(b"x", (dst, 1024 + i % 60000))
`;

async function sh(cmd: string, args: string[], netns?: string): Promise<void> {
  await run(cmd, args, { netns, timeoutMs: 10_000 });
}

async function down(): Promise<void> {
  for (const ns of [NODE, A, B]) await run("ip", ["netns", "del", ns], { allowFail: true });
}

async function up(): Promise<void> {
  for (const ns of [NODE, A, B]) {
    await sh("ip", ["netns", "add", ns]);
    await sh("ip", ["-n", ns, "link", "set", "lo", "up"]);
  }
  await sh("sysctl", ["-qw", "net.ipv4.ip_forward=1"], NODE);
  for (const [pod, veth, i] of [
    [A, "va", 1],
    [B, "vb", 2],
  ] as const) {
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
    await sh("ip", ["-n", NODE, "addr", "add", `10.92.${i}.1/24`, "dev", veth]);
    await sh("ip", ["-n", NODE, "link", "set", veth, "up"]);
    await sh("ip", ["-n", pod, "addr", "add", `10.92.${i}.2/24`, "dev", "eth0"]);
    await sh("ip", ["-n", pod, "link", "set", "eth0", "up"]);
    await sh("ip", ["-n", pod, "route", "add", "default", "via", `10.92.${i}.1`]);
  }
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
  await sh("iptables", rule, NODE);
}

async function main(): Promise<void> {
  await down();
  await up();
  const allPorts = Array.from({ length: 65536 }, (_, i) => i);
  const loop = new NfqueueVerdictLoop({
    queueNum: QUEUE,
    deciderModule: new URL("../test/support/nfq-test-decider.ts", import.meta.url).href,
    table: { tcp: [], udp: verdict === "accept" ? allPorts : [] },
    failOpen: false,
    netns: NODE,
  });
  await loop.start();
  try {
    const t0 = performance.now();
    await run(PY, ["-c", FLOOD, "10.92.2.2", String(packets)], { netns: A, timeoutMs: 120_000 });
    const sentMs = performance.now() - t0;
    let q = await readQueueProcStats(QUEUE, NODE);
    while (q && q.queueTotal > 0) {
      await new Promise((r) => setTimeout(r, 10));
      q = await readQueueProcStats(QUEUE, NODE);
    }
    const doneMs = performance.now() - t0;
    const s = await loop.refreshStats();
    const p50 = percentile(s.latency.counts, s.latency.boundsUs, 0.5);
    const p99 = percentile(s.latency.counts, s.latency.boundsUs, 0.99);
    console.log(
      JSON.stringify({
        packets,
        verdict,
        sendSecs: +(sentMs / 1000).toFixed(3),
        offeredPps: Math.round(packets / (sentMs / 1000)),
        judged: s.packets,
        verdictsPerSec: Math.round(s.packets / (doneMs / 1000)),
        queueDropped: q?.queueDropped,
        userDropped: q?.userDropped,
        enobufs: s.enobufs,
        meanUs: +(s.latency.sumUs / s.latency.count).toFixed(2),
        p50UsBelow: p50,
        p99UsBelow: p99,
        maxUs: +s.latency.maxUs.toFixed(1),
        deniesReported: s.deniesReported,
        deniesSuppressed: s.deniesSuppressed,
      }),
    );
  } finally {
    await loop.stop();
    await down();
  }
}

function percentile(counts: number[], bounds: number[], p: number): number {
  const total = counts.reduce((a, b) => a + b, 0);
  let acc = 0;
  for (let i = 0; i < counts.length; i++) {
    acc += counts[i];
    if (acc >= total * p) return bounds[i];
  }
  return Number.POSITIVE_INFINITY;
}

await main();
