/**
 * revoker: `--revoke-established`. After a sync that changed the table, connections the new table
 * denies lose their conntrack entry, so their next packet is judged as new and dropped.
 *
 * Owns: choosing which entries to delete (decide() on the flow as policy sees it, after DNAT; once
 * per source, destination, protocol and port, not per entry), sparing flows from the node's own
 * addresses (exempt on ingress, as in the rules), and one pass at a time (a BoundedRunner's timing). Without this flag
 * podwall, like Calico and Antrea, lets established connections finish.
 * May not: run iptables or change rules; it only deletes conntrack entries.
 */
import { decide } from "../compiler/engine.js";
import { protoToolName } from "../compiler/model.js";
import type { PolicyTable } from "../compiler/table.js";
import { type CtFlow, deleteFlows, listFlows } from "../dataplane/conntrack.js";
import { run } from "../dataplane/exec.js";
import { BoundedRunner } from "./bounded-runner.js";
import type { Logger } from "./log.js";
import type { Metrics } from "./metrics.js";

async function localAddresses(netns?: string): Promise<Set<string>> {
  const r = await run("ip", ["-j", "addr", "show"], { netns, allowFail: true });
  const out = new Set<string>();
  try {
    for (const link of JSON.parse(r.stdout || "[]") as { addr_info?: { local?: string }[] }[])
      for (const a of link.addr_info ?? []) if (a.local) out.add(a.local);
  } catch {
    // No addresses known: nothing is spared as the node's own; the pass still judges every flow.
  }
  return out;
}

/** What one pass did, for logs and the benchmark. */
export interface RevokePass {
  flows: number;
  /** Distinct (source, destination, protocol, port): each judged once. */
  judged: number;
  revoked: number;
  listMs: number;
  judgeMs: number;
  deleteMs: number;
  via: "netlink" | "conntrack-tool";
}

export interface RevokerOptions {
  table: PolicyTable;
  netns?: string;
  metrics: Metrics;
  log: Logger;
}

export class EstablishedRevoker {
  lastPass: RevokePass | undefined;
  private generation = -1;
  private readonly runner: BoundedRunner;

  constructor(private readonly opts: RevokerOptions) {
    this.runner = new BoundedRunner({
      task: () => this.timedPass(),
      delayMs: 0,
      // No retry of its own: a failed pass is logged and the next sync asks again.
      onFailure: (err) => opts.log.warn({ err: err.message }, "revoking established connections failed"),
    });
  }

  /** Ask for a pass (after a sync); coalesces with one already running. */
  request(): void {
    if (this.opts.table.generation === this.generation) return;
    this.runner.request(0);
  }

  /** Resolves when no pass is running (tests, shutdown). */
  idle(): Promise<void> {
    return this.runner.idle();
  }

  private async timedPass(): Promise<void> {
    // A pass asked for while the previous one ran may find that one already judged this generation.
    if (this.opts.table.generation === this.generation) return;
    const t0 = performance.now();
    try {
      await this.pass();
      this.opts.metrics.revokePasses.observe({ result: "ok" }, (performance.now() - t0) / 1000);
    } catch (e) {
      this.opts.metrics.revokePasses.observe({ result: "error" }, (performance.now() - t0) / 1000);
      throw e;
    }
  }

  private async pass(): Promise<void> {
    const { table, netns, metrics, log } = this.opts;
    const generation = table.generation;
    const t0 = performance.now();
    const [flows, own] = await Promise.all([listFlows(netns), localAddresses(netns)]);
    const t1 = performance.now();
    // Many entries share a verdict (one client's connections to one backend port): judge each once.
    const verdicts = new Map<string, boolean>();
    const denied: CtFlow[] = [];
    for (const f of flows) {
      if (own.has(f.orig.src)) continue; // the node's own connections (probes) are exempt on ingress
      const key = `${f.orig.src} ${f.dst} ${f.proto} ${f.dport}`;
      let allowed = verdicts.get(key);
      if (allowed === undefined) {
        allowed = decide(table, { src: f.orig.src, dst: f.dst, proto: f.proto, port: f.dport }).allowed;
        verdicts.set(key, allowed);
      }
      if (!allowed) denied.push(f);
    }
    const t2 = performance.now();
    const result = await deleteFlows(denied, netns);
    const t3 = performance.now();
    if (result.fallback)
      log.warn(
        { err: result.fallback },
        "conntrack over netlink unavailable; deleting with the conntrack tool",
      );
    for (const [proto, n] of result.byProto)
      metrics.revokedConnections.inc({ protocol: protoToolName(proto) }, n);
    this.generation = generation;
    this.lastPass = {
      flows: flows.length,
      judged: verdicts.size,
      revoked: result.deleted,
      listMs: t1 - t0,
      judgeMs: t2 - t1,
      deleteMs: t3 - t2,
      via: result.via,
    };
    if (result.deleted || flows.length)
      log.info(
        {
          flows: flows.length,
          judged: verdicts.size,
          revoked: result.deleted,
          via: result.via,
          ms: Math.round(t3 - t0),
        },
        "established connections re-judged against the new policy",
      );
  }
}
