/**
 * worker: the verdict loop, in a worker_thread. Blocking recv -> nfq_handle_packet -> parse -> decide
 * -> verdict, with no per-packet round trip to any other thread.
 *
 * Owns: the decider instance (built here from the factory module and swapped between packets),
 * the shared counters (sole writer), batching deny events (one per flow per batch, bounded). The loop
 * never throws per packet: anything that goes wrong yields the configured default verdict and a counter.
 * May not: block on anything but recv, or wait for the main thread.
 */

import { performance } from "node:perf_hooks";
import { parentPort, receiveMessageOnPort, workerData } from "node:worker_threads";
import { ParsedPacket, parsePacket } from "../packet.js";
import { allowedCpus } from "./cpus.js";
import { NF_ACCEPT, NF_DROP, NfqQueue, pinThisThread } from "./libnfq.js";
import {
  CTL_MAILBOX,
  CTL_STOP,
  type Decider,
  type DenyEvent,
  type FromRunner,
  type TableUpdate,
  type WorkerInit,
} from "./protocol.js";
import { latencyBucket, protoSlot, readStats, Slot } from "./stats.js";

/** Deny events go out in batches at most this often, or when this many are pending. */
const FLUSH_INTERVAL_MS = 20;
const FLUSH_BATCH = 256;
/** A flood of distinct denied flows must not flood the IPC channel: beyond this per window, count only. */
const MAX_PENDING_DENIES = 1024;
const DRAIN_INTERVAL_MS = 1000;

type DeciderFactory = (table: unknown) => Decider;

function post(m: FromRunner): void {
  parentPort!.postMessage(m);
}

interface DeciderModule {
  createDecider: DeciderFactory;
  /** Optional: per-decider counters, drained about once a second off the packet path. */
  drainCounters?: () => unknown;
  /** Optional: what a reported decision (a drop, or an audit deny) says decided it, structured-clonable. */
  reportOf?: (result: ReturnType<Decider>) => unknown;
}

async function loadDeciderModule(url: string): Promise<DeciderModule> {
  const mod = (await import(url)) as Partial<Record<keyof DeciderModule, unknown>>;
  if (typeof mod.createDecider !== "function") {
    throw new Error(`decider module ${url} does not export a createDecider(table) function`);
  }
  return {
    createDecider: mod.createDecider as DeciderFactory,
    drainCounters: typeof mod.drainCounters === "function" ? (mod.drainCounters as () => unknown) : undefined,
    reportOf: typeof mod.reportOf === "function" ? (mod.reportOf as DeciderModule["reportOf"]) : undefined,
  };
}

/** The pending event is the same connection attempt (a retransmit, or the next datagram of a stream). */
function sameFlow(e: DenyEvent, p: ParsedPacket): boolean {
  return (
    e.srcPort === p.srcPort &&
    e.dport === p.dstPort &&
    e.proto === p.proto &&
    e.src === p.src &&
    e.dst === p.dst
  );
}

function buildDecider(factory: DeciderFactory, table: unknown): Decider {
  const d = factory(table);
  if (typeof d !== "function") throw new Error("createDecider(table) did not return a function");
  return d;
}

async function main(init: WorkerInit): Promise<void> {
  const cfg = init.config;
  const counters = new Float64Array(init.counters);
  const ctl = new Int32Array(init.control);
  const defaultVerdict = cfg.failOpen ? NF_ACCEPT : NF_DROP;
  counters[Slot.tableGeneration] = cfg.generation;

  let factory: DeciderFactory;
  let drainCounters: (() => unknown) | undefined;
  let reportOf: DeciderModule["reportOf"];
  let decide: Decider;
  try {
    const mod = await loadDeciderModule(cfg.deciderModule);
    factory = mod.createDecider;
    drainCounters = mod.drainCounters;
    reportOf = mod.reportOf;
    decide = buildDecider(factory, cfg.table);
  } catch (e) {
    post({ type: "error", message: `decider: ${errText(e)}`, fatal: true });
    return;
  }

  // Deny (and audit deny) reporting: one event per flow per flush window, at most MAX_PENDING_DENIES
  // per window; the rest are counted. Each event carries this worker's own verdict (reportOf), so
  // the line names what decided here, not what a later table would say. The log-line rate limit is
  // the agent's, where the lines are written.
  let pending: DenyEvent[] = [];
  let lastFlush = 0;
  const flush = (now: number): void => {
    if (pending.length === 0) return;
    post({ type: "denies", events: pending });
    pending = [];
    lastFlush = now;
  };

  let lastDrain = performance.now();
  const drain = (at: number): void => {
    if (!drainCounters) return;
    lastDrain = at;
    try {
      post({ type: "decider-counters", data: drainCounters() });
    } catch {
      counters[Slot.deciderErrors]++;
    }
  };

  const pkt = new ParsedPacket();
  let q: NfqQueue | undefined;
  let now = 0;

  const onPacket = (nfad: number): void => {
    const t0 = performance.now();
    const queue = q!;
    const id = queue.packetId(nfad);
    if (id < 0) return; // not a packet message: nothing to give a verdict on
    let verdict = defaultVerdict;
    let slot = 5;
    let parsed = false;
    let decided: ReturnType<Decider> | undefined;
    try {
      const len = queue.payload(nfad);
      if (len > 0 && parsePacket(queue.buf, queue.payloadOffset, len, pkt)) {
        parsed = true;
        slot = protoSlot(pkt.proto);
        try {
          const r = decide(pkt.src, pkt.dst, pkt.proto, pkt.dstPort);
          if (r !== null && typeof r === "object" && typeof r.allowed === "boolean") {
            verdict = r.allowed ? NF_ACCEPT : NF_DROP;
            decided = r;
          } else {
            counters[Slot.deciderErrors]++;
          }
        } catch {
          counters[Slot.deciderErrors]++;
        }
      } else {
        counters[Slot.parseErrors]++;
      }
    } catch {
      counters[Slot.parseErrors]++; // should not happen: the parser does not throw; keep the loop alive anyway
    }
    // Timed before the verdict call: inside nfq_set_verdict the kernel reinjects the packet (for a
    // SYN it may forward it and complete the handshake), which is not podwall's work.
    now = performance.now();
    const us = (now - t0) * 1000;
    queue.verdict(id, verdict);

    counters[Slot.packets]++;
    if (verdict === NF_ACCEPT) {
      counters[Slot.accepted]++;
      counters[Slot.protoBase + 2 * slot]++;
    } else {
      counters[Slot.dropped]++;
      counters[Slot.protoBase + 2 * slot + 1]++;
    }
    counters[Slot.histBase + latencyBucket(us)]++;
    counters[Slot.latencySumUs] += us;
    if (us > counters[Slot.latencyMaxUs]) counters[Slot.latencyMaxUs] = us;

    const audit = verdict === NF_ACCEPT && decided?.audit;
    if (parsed && (verdict === NF_DROP || audit)) {
      const last = pending.length > 0 ? pending[pending.length - 1] : undefined;
      if (pending.length >= MAX_PENDING_DENIES || (last !== undefined && sameFlow(last, pkt))) {
        counters[Slot.deniesSuppressed]++;
      } else {
        counters[Slot.deniesReported]++;
        let report: unknown;
        if (decided && reportOf)
          try {
            report = reportOf(decided);
          } catch {
            counters[Slot.deciderErrors]++;
          }
        pending.push({
          type: "deny",
          event: audit ? "audit-deny" : "deny",
          report,
          src: pkt.src,
          dst: pkt.dst,
          proto: pkt.proto,
          dport: pkt.dstPort,
          srcPort: pkt.srcPort,
        });
      }
    }
  };

  // Tables received so far; the runner counts tables posted in the mailbox slot.
  let received = 0;
  const applyTables = (): void => {
    let last: TableUpdate | undefined;
    for (let m = receiveMessageOnPort(init.tablePort); m; m = receiveMessageOnPort(init.tablePort)) {
      last = m.message as TableUpdate;
      received++;
    }
    if (!last) return;
    try {
      decide = buildDecider(factory, last.table);
      counters[Slot.tableGeneration] = last.generation;
      post({ type: "table-applied", generation: last.generation });
    } catch (e) {
      // Keep enforcing the previous table: a bad update must not open or close everything.
      counters[Slot.tableErrors]++;
      post({ type: "table-applied", generation: last.generation, error: errText(e) });
    }
  };

  const warnings: string[] = [];
  const count = Math.max(1, cfg.queueCount ?? 1);
  if (count > 1) {
    // The kernel queues a packet to queueNum + (cpu % count): serve those CPUs from here.
    const cpus = allowedCpus().filter((cpu) => cpu % count === init.index);
    let pinned = false;
    try {
      pinned = pinThisThread(cpus);
    } catch {
      // No library: NfqQueue.open below reports it.
    }
    if (!pinned) warnings.push(`queue ${cfg.queueNum + init.index}: could not pin to CPUs ${cpus}`);
  }
  try {
    q = NfqQueue.open(
      {
        queueNum: cfg.queueNum + init.index,
        copyRange: cfg.copyRange,
        maxLen: cfg.maxLen,
        rcvBufBytes: cfg.rcvBufBytes,
        failOpen: cfg.failOpen,
      },
      onPacket,
    );
  } catch (e) {
    post({ type: "error", message: errText(e), fatal: true });
    return;
  }
  post({ type: "ready", pid: process.pid, warnings: [...warnings, ...q.warnings] });

  try {
    while (Atomics.load(ctl, CTL_STOP) === 0) {
      const n = q.recv();
      // Checked after recv and before handling, so a packet that arrives after a table update sees it.
      if (Atomics.load(ctl, CTL_MAILBOX) !== received) applyTables();
      if (n > 0) {
        q.handle(n);
        if (pending.length >= FLUSH_BATCH || now - lastFlush >= FLUSH_INTERVAL_MS) flush(now);
      } else {
        counters[Slot.enobufs] = q.enobufs;
        now = performance.now();
        flush(now);
      }
      if (now - lastDrain >= DRAIN_INTERVAL_MS) drain(now);
    }
  } catch (e) {
    post({ type: "error", message: errText(e), fatal: true });
  } finally {
    flush(performance.now());
    drain(performance.now());
    q.close();
  }
  counters[Slot.enobufs] = q.enobufs;
  post({ type: "stopped", stats: readStats(counters) });
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

if (parentPort && workerData) {
  const init = workerData as WorkerInit;
  // Closing the port lets the thread end once main returns, on every path.
  void main(init).finally(() => init.tablePort.close());
}
