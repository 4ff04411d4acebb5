/**
 * worker: the verdict loop, in a worker_thread. Blocking recv -> nfq_handle_packet -> parse -> decide
 * -> verdict, with no per-packet round trip to any other thread.
 *
 * Owns: the decider instance (built here from the factory module and swapped between packets),
 * the shared counters (sole writer), deny-event rate limiting. The loop never throws per packet:
 * anything that goes wrong yields the configured default verdict and a counter.
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
import { latencyBucket, protoSlot, readStats, S } from "./stats.js";

/** Deny events go out in batches at most this often, or when this many are pending. */
const FLUSH_INTERVAL_MS = 20;
const FLUSH_BATCH = 256;
const DRAIN_INTERVAL_MS = 1000;

type DeciderFactory = (table: unknown) => Decider;

function post(m: FromRunner): void {
  parentPort!.postMessage(m);
}

interface DeciderModule {
  createDecider: DeciderFactory;
  /** Optional: per-decider counters, drained about once a second off the packet path. */
  drainCounters?: () => unknown;
}

async function loadDeciderModule(url: string): Promise<DeciderModule> {
  const mod = (await import(url)) as Partial<Record<keyof DeciderModule, unknown>>;
  if (typeof mod.createDecider !== "function") {
    throw new Error(`decider module ${url} does not export a createDecider(table) function`);
  }
  return {
    createDecider: mod.createDecider as DeciderFactory,
    drainCounters: typeof mod.drainCounters === "function" ? (mod.drainCounters as () => unknown) : undefined,
  };
}

function buildDecider(factory: DeciderFactory, table: unknown): Decider {
  const d = factory(table);
  if (typeof d !== "function") throw new Error("createDecider(table) did not return a function");
  return d;
}

async function main(init: WorkerInit): Promise<void> {
  const cfg = init.config;
  const c = new Float64Array(init.counters);
  const ctl = new Int32Array(init.control);
  const defaultVerdict = cfg.failOpen ? NF_ACCEPT : NF_DROP;
  c[S.tableGeneration] = cfg.generation;

  let factory: DeciderFactory;
  let drainCounters: (() => unknown) | undefined;
  let decide: Decider;
  try {
    const mod = await loadDeciderModule(cfg.deciderModule);
    factory = mod.createDecider;
    drainCounters = mod.drainCounters;
    decide = buildDecider(factory, cfg.table);
  } catch (e) {
    post({ type: "error", message: `decider: ${errText(e)}`, fatal: true });
    return;
  }

  // Deny reporting: token bucket refilled from the packet clock; excess is only counted.
  const rate = cfg.denyRatePerSec;
  let tokens = rate;
  let refillAt = performance.now();
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
      c[S.deciderErrors]++;
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
    try {
      const len = queue.payload(nfad);
      if (len > 0 && parsePacket(queue.buf, queue.payloadOffset, len, pkt)) {
        parsed = true;
        slot = protoSlot(pkt.proto);
        try {
          const r = decide(pkt.src, pkt.dst, pkt.proto, pkt.dstPort);
          if (r !== null && typeof r === "object" && typeof r.allowed === "boolean") {
            verdict = r.allowed ? NF_ACCEPT : NF_DROP;
          } else {
            c[S.deciderErrors]++;
          }
        } catch {
          c[S.deciderErrors]++;
        }
      } else {
        c[S.parseErrors]++;
      }
    } catch {
      c[S.parseErrors]++; // should not happen: the parser does not throw; keep the loop alive anyway
    }
    // Timed before the verdict call: inside nfq_set_verdict the kernel reinjects the packet (for a
    // SYN it may forward it and complete the handshake), which is not podwall's work.
    now = performance.now();
    const us = (now - t0) * 1000;
    queue.verdict(id, verdict);

    c[S.packets]++;
    if (verdict === NF_ACCEPT) {
      c[S.accepted]++;
      c[S.protoBase + 2 * slot]++;
    } else {
      c[S.dropped]++;
      c[S.protoBase + 2 * slot + 1]++;
    }
    c[S.histBase + latencyBucket(us)]++;
    c[S.latencySumUs] += us;
    if (us > c[S.latencyMaxUs]) c[S.latencyMaxUs] = us;

    if (verdict === NF_DROP && parsed) {
      tokens += ((now - refillAt) * rate) / 1000;
      if (tokens > rate) tokens = rate;
      refillAt = now;
      if (tokens >= 1) {
        tokens -= 1;
        c[S.deniesReported]++;
        pending.push({
          type: "deny",
          src: pkt.src,
          dst: pkt.dst,
          proto: pkt.proto,
          dport: pkt.dstPort,
          srcPort: pkt.srcPort,
        });
      } else {
        c[S.deniesSuppressed]++;
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
      c[S.tableGeneration] = last.generation;
      post({ type: "table-applied", generation: last.generation });
    } catch (e) {
      // Keep enforcing the previous table: a bad update must not open or close everything.
      c[S.tableErrors]++;
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
        c[S.enobufs] = q.enobufs;
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
  c[S.enobufs] = q.enobufs;
  post({ type: "stopped", stats: readStats(c) });
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

if (parentPort && workerData) {
  const init = workerData as WorkerInit;
  // Closing the port lets the thread end once main returns, on every path.
  void main(init).finally(() => init.tablePort.close());
}
