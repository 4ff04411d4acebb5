/**
 * lab/probe: sends real packets between lab pods (or from the node) and says which got through.
 * Owns: turning ProbeRequests into agent requests, the concurrency bound, and SCTP's two-agent handshake
 * (the source agent sends an INIT, the destination agent reports its tag).
 * May not: change the topology; it only (re)starts agents that this process lacks.
 */
import { isIP } from "node:net";
import {
  AGENT_EXITED,
  AGENT_SILENT,
  type AgentReply,
  liveAgent,
  newSctpTag,
  type PodAgent,
  startAgent,
  waitSctpTag,
} from "./agent.js";
import { readStored } from "./state.js";
import type { LabState, ProbeRequest } from "./types.js";

const DEFAULT_PROBE_TIMEOUT_MS = 800;
const DEFAULT_CONCURRENCY = 512;
/** Extra time the agent gets beyond the probe timeout before we stop waiting for its answer. */
const AGENT_GUARD_MS = 3000;

/**
 * Makes sure this process has an agent in every pod netns (servers and SCTP watchers) and, if needed,
 * in the node netns. The process that ran labUp has them; any other one starts its own, sharing ports
 * with agents that still run elsewhere.
 */
async function ensureAgents(lab: LabState, needNode: boolean): Promise<void> {
  const missing = lab.pods.filter((p) => !liveAgent(p.netns));
  const stored = missing.length ? await readStored(lab.name) : undefined;
  await Promise.all([
    ...(needNode && !liveAgent(lab.nodeNetns) ? [startAgent(lab.nodeNetns, [], [], "shared")] : []),
    ...missing.map((p) => {
      const serve = stored?.pods.find((s) => s.key === p.key)?.serve ?? [];
      return startAgent(p.netns, serve, p.ips, "shared");
    }),
  ]);
}

/** A lab failure is an error, never a "denied": a crashed agent must not make a deny test pass. */
function checkAgent(agent: PodAgent, res: AgentReply): AgentReply {
  if (res.err === AGENT_EXITED || res.err === AGENT_SILENT) {
    throw new Error(`probe: podagent in ${agent.netns}: ${res.err}`);
  }
  return res;
}

async function probeOne(agent: PodAgent, req: ProbeRequest, timeoutMs: number): Promise<boolean> {
  if (req.protocol === "SCTP") {
    const tag = newSctpTag();
    const wait = waitSctpTag(tag, timeoutMs);
    const sent = await agent.request({ op: "sctp", ip: req.toIp, port: req.port, tag }, AGENT_GUARD_MS);
    if (!sent.ok) wait.cancel();
    checkAgent(agent, sent);
    return wait.seen;
  }
  const op = req.protocol === "TCP" ? "tcp" : "udp";
  const res = await agent.request(
    { op, ip: req.toIp, port: req.port, timeoutMs },
    timeoutMs + AGENT_GUARD_MS,
  );
  return checkAgent(agent, res).ok;
}

export async function probeLab(
  lab: LabState,
  reqs: ProbeRequest[],
  opts: { timeoutMs?: number; concurrency?: number } = {},
): Promise<boolean[]> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS;
  const concurrency = Math.max(1, opts.concurrency ?? DEFAULT_CONCURRENCY);
  const netnsOf = new Map<string, string>([["node", lab.nodeNetns]]);
  for (const p of lab.pods) netnsOf.set(p.key, p.netns);
  for (const r of reqs) {
    if (!netnsOf.has(r.from))
      throw new Error(`probe: unknown source ${JSON.stringify(r.from)} in lab ${lab.name}`);
    if (!isIP(r.toIp)) throw new Error(`probe: ${JSON.stringify(r.toIp)} is not an IP`);
    if (!Number.isInteger(r.port) || r.port < 1 || r.port > 65535)
      throw new Error(`probe: bad port ${r.port}`);
    if (r.protocol !== "TCP" && r.protocol !== "UDP" && r.protocol !== "SCTP") {
      throw new Error(`probe: bad protocol ${JSON.stringify(r.protocol)}`);
    }
  }
  await ensureAgents(
    lab,
    reqs.some((r) => r.from === "node"),
  );

  const results = new Array<boolean>(reqs.length).fill(false);
  let next = 0;
  const worker = async () => {
    while (next < reqs.length) {
      const i = next++;
      const req = reqs[i];
      const agent = liveAgent(netnsOf.get(req.from)!);
      if (!agent) throw new Error(`probe: podagent in ${netnsOf.get(req.from)} is gone`);
      results[i] = await probeOne(agent, req, timeoutMs);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, reqs.length) }, worker));
  return results;
}
