/**
 * bench/revoke: what `--revoke-established` costs on a busy node, with real conntrack entries.
 *
 *   npx tsx bench/revoke.ts [--json] [--quick]     (root; namespace pwrv-<pid>, removed after)
 *
 * A namespace gets N UDP conntrack entries (raw packets from a python3 script: clients 10.0.0.x,
 * servers 10.0.1.x, ports 80 and 81, many source ports each). The policy then changes from "clients
 * may reach servers on 80 and 81" to "on 80": half the entries are denied. One revoker pass (list,
 * judge, delete over netlink) runs against it, and the entries left are counted.
 * Baseline, same run: the conntrack tool's `-D`, which dumps the whole table on every call, timed on
 * a sample of groups; from it, what the tool would take per group (our fallback) and per entry (the
 * previous way). --quick: 2k entries. --json: the last stdout line is one JSON object.
 */
import { performance } from "node:perf_hooks";
import { createLogger } from "../src/agent/log.js";
import { createMetrics } from "../src/agent/metrics.js";
import { EstablishedRevoker } from "../src/agent/revoker.js";
import { PolicyTable } from "../src/compiler/table.js";
import { type CtFlow, deleteFlowsWithTool, listFlows } from "../src/dataplane/conntrack.js";
import { run } from "../src/dataplane/exec.js";
import { pythonExecutable } from "../src/dataplane/lab/agent.js";
import { mkNs, mkPod, mkPolicy } from "../test/support/cluster-gen.js";

const args = new Set(process.argv.slice(2));
const JSON_OUT = args.has("--json");
const QUICK = args.has("--quick");
const NS = `pwrv-${process.pid.toString(36)}`;
/** clients x servers x 2 ports x source ports = entries. */
const CFG = QUICK
  ? { clients: 10, servers: 5, sports: 20, sampleGroups: 3 }
  : { clients: 50, servers: 20, sports: 50, sampleGroups: 10 };

const GEN = `
import socket, struct, sys
C, S, K = map(int, sys.argv[1:4])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
def csum(b):
    t = sum(struct.unpack('!%dH' % (len(b) // 2), b)); t = (t >> 16) + (t & 0xffff); t += t >> 16
    return ~t & 0xffff
for c in range(C):
    src = socket.inet_aton('10.0.0.%d' % (c + 1))
    for v in range(S):
        dst = socket.inet_aton('10.0.1.%d' % (v + 1))
        for p in (80, 81):
            for k in range(K):
                ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 28, 0, 0, 64, 17, 0, src, dst)
                ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
                s.sendto(ip + struct.pack('!HHHH', 20000 + k, p, 8, 0), (socket.inet_ntoa(dst), 0))
`;

const ns = (cmd: string, a: string[]) => run(cmd, a, { netns: NS });

async function setup(): Promise<number> {
  await run("ip", ["netns", "add", NS]);
  await ns("ip", ["link", "set", "lo", "up"]);
  // No dummy driver on this kernel: a veth pair gives the packets a route out.
  await ns("ip", ["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
  await ns("ip", ["link", "set", "v0", "up"]);
  await ns("ip", ["link", "set", "v1", "up"]);
  await ns("ip", ["route", "add", "10.0.0.0/8", "dev", "v0"]);
  // Known neighbours: packets waiting for ARP would hold the sender's buffer (and their entries).
  for (let s = 1; s <= CFG.servers; s++) {
    const mac = `02:00:00:00:01:${s.toString(16).padStart(2, "0")}`;
    await ns("ip", ["neigh", "replace", `10.0.1.${s}`, "lladdr", mac, "dev", "v0", "nud", "permanent"]);
  }
  // Conntrack tracks a namespace's packets only once some rule there uses it.
  await ns("iptables", ["-A", "OUTPUT", "-m", "conntrack", "--ctstate", "NEW", "-j", "ACCEPT"]);
  await ns("sysctl", ["-qw", "net.netfilter.nf_conntrack_udp_timeout=600"]);
  const { clients, servers, sports } = CFG;
  await ns(pythonExecutable(), ["-c", GEN, String(clients), String(servers), String(sports)]);
  return (await listFlows(NS)).length;
}

function table(ports: number[]): PolicyTable {
  const t = new PolicyTable();
  t.upsertNamespace(mkNs("clients"));
  t.upsertNamespace(mkNs("servers"));
  for (let c = 1; c <= CFG.clients; c++)
    t.upsertPod(mkPod("clients", `c${c}`, { app: "client" }, `10.0.0.${c}`));
  for (let s = 1; s <= CFG.servers; s++)
    t.upsertPod(mkPod("servers", `s${s}`, { app: "server" }, `10.0.1.${s}`));
  t.upsertPolicy(
    mkPolicy("servers", "from-clients", {
      podSelector: { matchLabels: { app: "server" } },
      ingress: [
        {
          from: [{ namespaceSelector: {}, podSelector: { matchLabels: { app: "client" } } }],
          ports: ports.map((port) => ({ port, protocol: "UDP" })),
        },
      ],
    }),
  );
  return t;
}

const r1 = (x: number) => Math.round(x * 10) / 10;

async function main(): Promise<void> {
  try {
    const entries = await setup();
    const expected = CFG.clients * CFG.servers * 2 * CFG.sports;
    if (entries !== expected) throw new Error(`expected ${expected} conntrack entries, found ${entries}`);

    // Baseline: the tool on a few groups (one client, one server, port 81: all its source ports).
    const t0 = performance.now();
    const listed = await listFlows(NS);
    const listOnlyMs = performance.now() - t0;
    const sample: CtFlow[] = [];
    for (let g = 1; g <= CFG.sampleGroups; g++) {
      const f = listed.find((x) => x.orig.src === `10.0.0.${g}` && x.orig.dport === 81);
      if (f) sample.push(f);
    }
    const t1 = performance.now();
    const tool = await deleteFlowsWithTool(sample, NS);
    const toolCallMs = (performance.now() - t1) / sample.length;

    // Ours: the policy now allows 80 only; one pass.
    const revoker = new EstablishedRevoker({
      table: table([80]),
      netns: NS,
      metrics: createMetrics(false),
      log: createLogger("silent"),
    });
    revoker.request();
    await revoker.idle();
    const pass = revoker.lastPass!;
    // Listed, not `conntrack -C`: deleted entries stay counted while a queued packet holds them.
    const left = (await listFlows(NS)).length;
    const denied = expected / 2;
    const groups = CFG.clients * CFG.servers;
    const passMs = pass.listMs + pass.judgeMs + pass.deleteMs;
    const out = {
      entries,
      denied,
      judged: pass.judged,
      revoked: pass.revoked + tool.deleted,
      entriesLeft: left,
      via: pass.via,
      listMs: r1(pass.listMs),
      judgeMs: r1(pass.judgeMs),
      deleteMs: r1(pass.deleteMs),
      passMs: r1(passMs),
      listOnlyMs: r1(listOnlyMs),
      toolCallMs: r1(toolCallMs),
      toolGroupedEstimateMs: Math.round(listOnlyMs + groups * toolCallMs),
      toolPerEntryEstimateMs: Math.round(listOnlyMs + denied * toolCallMs),
    };
    const rows: [string, string | number][] = [
      ["conntrack entries", entries],
      ["denied by the new policy", denied],
      ["verdicts computed (distinct src/dst/proto/port)", pass.judged],
      ["revoked (pass + baseline sample)", out.revoked],
      ["entries left (want entries - denied)", left],
      ["pass: list ms", out.listMs],
      ["pass: judge ms", out.judgeMs],
      [`pass: delete ms (${pass.via})`, out.deleteMs],
      ["pass: total ms", out.passMs],
      ["baseline: conntrack -L alone ms", out.listOnlyMs],
      ["baseline: one conntrack -D call ms", out.toolCallMs],
      [`baseline: tool, one -D per group (${groups}) ms`, out.toolGroupedEstimateMs],
      [`baseline: tool, one -D per entry (${denied}) ms`, out.toolPerEntryEstimateMs],
    ];
    const w = Math.max(...rows.map(([k]) => k.length));
    for (const [k, v] of rows) process.stdout.write(`${k.padEnd(w)}  ${v}\n`);
    if (left !== entries - denied) throw new Error(`${left} entries left, expected ${entries - denied}`);
    if (JSON_OUT) process.stdout.write(`${JSON.stringify(out)}\n`);
  } finally {
    await run("ip", ["netns", "del", NS], { allowFail: true });
  }
}

for (const sig of ["SIGINT", "SIGTERM"] as const)
  process.on(sig, () => {
    void run("ip", ["netns", "del", NS], { allowFail: true }).finally(() => process.exit(130));
  });

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`bench/revoke failed: ${(e as Error).stack ?? e}\n`);
    process.exit(1);
  },
);
