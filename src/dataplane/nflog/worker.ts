/**
 * worker: the NFLOG read loop, in a worker_thread. Blocking recv -> nflog_handle_packet -> parse the
 * copied headers -> compact record -> batch -> postMessage to the main thread.
 *
 * Owns: the bound group (opened inside the configured network namespace), the shared counters (sole
 * writer) and the bound on records waiting for the main thread: beyond `maxPending` new records are
 * dropped and counted, so a slow main thread never grows this thread's memory.
 * May not: block on anything but recv (with a timeout, to see the stop flag), wait for the main
 * thread, or throw per packet.
 */
import { performance } from "node:perf_hooks";
import { parentPort, workerData } from "node:worker_threads";
import { ParsedPacket, parsePacket } from "../packet.js";
import { NflogGroup } from "./libnflog.js";
import {
  C,
  CTL_STOP,
  CTL_TAKEN,
  type FromWorker,
  type NflogRecord,
  type NflogWorkerInit,
} from "./protocol.js";

function post(m: FromWorker): void {
  parentPort!.postMessage(m);
}

function main(init: NflogWorkerInit): void {
  const cfg = init.config;
  const c = new Float64Array(init.counters);
  const ctl = new Int32Array(init.control);
  const pkt = new ParsedPacket();
  let pending: NflogRecord[] = [];
  let firstPendingAt = 0;
  /** Records posted, modulo 2^32, compared with CTL_TAKEN the same way. */
  let postedMod = 0;
  /** The group numbers its packets from 0; the next one we expect. */
  let nextSeq = 0;
  let g: NflogGroup | undefined;
  let lastPrefixLen = -1;
  let lastPrefix = "";
  const prefixBytes = Buffer.alloc(64);

  const readPrefix = (group: NflogGroup, nfad: number): string => {
    const off = group.prefixOffset(nfad);
    if (off < 0) return "";
    const buf = group.buf;
    let end = buf.indexOf(0, off);
    if (end < 0) end = off;
    const len = end - off;
    // Most packets of a batch carry the prefix of the one before: reuse its string.
    if (
      len === lastPrefixLen &&
      len <= prefixBytes.length &&
      buf.compare(prefixBytes, 0, len, off, end) === 0
    )
      return lastPrefix;
    lastPrefixLen = len;
    lastPrefix = buf.toString("latin1", off, end);
    if (len <= prefixBytes.length) buf.copy(prefixBytes, 0, off, end);
    return lastPrefix;
  };

  const flush = (): void => {
    if (pending.length === 0) return;
    const n = pending.length;
    post({ type: "records", records: pending });
    pending = [];
    postedMod = (postedMod + n) | 0;
    c[C.posted] += n;
    c[C.batches]++;
  };

  const onPacket = (nfad: number): void => {
    const group = g!;
    c[C.received]++;
    const seq = group.seq(nfad);
    if (seq >= 0) {
      const gap = (seq - nextSeq) >>> 0;
      // A gap is packets the kernel numbered but could not deliver (socket buffer full).
      if (gap > 0 && gap < 0x80000000) c[C.seqLost] += gap;
      nextSeq = (seq + 1) >>> 0;
    }
    const len = group.payload(nfad);
    if (len <= 0 || !parsePacket(group.buf, group.payloadOffset, len, pkt)) {
      c[C.parseErrors]++;
      return;
    }
    const waiting = ((postedMod - Atomics.load(ctl, CTL_TAKEN)) | 0) + pending.length;
    if (waiting >= cfg.maxPending) {
      c[C.overflowDropped]++;
      return;
    }
    if (pending.length === 0) firstPendingAt = performance.now();
    pending.push({
      prefix: readPrefix(group, nfad),
      src: pkt.src,
      dst: pkt.dst,
      proto: pkt.proto,
      sport: pkt.srcPort,
      dport: pkt.dstPort,
      family: pkt.family,
      ts: group.timestampMs(nfad) || Date.now(),
    });
    if (pending.length >= cfg.batchSize) flush();
  };

  try {
    g = NflogGroup.open(
      {
        group: cfg.group,
        netns: cfg.netns,
        copyRange: cfg.copyRange,
        flushTimeoutMs: cfg.flushTimeoutMs,
        qthreshold: cfg.qthreshold,
        nlBufBytes: cfg.nlBufBytes,
        rcvBufBytes: cfg.rcvBufBytes,
        recvTimeoutMs: cfg.recvTimeoutMs,
      },
      onPacket,
    );
  } catch (e) {
    post({ type: "error", message: errText(e), fatal: true });
    return;
  }
  post({ type: "ready", warnings: g.warnings });

  try {
    while (Atomics.load(ctl, CTL_STOP) === 0) {
      const n = g.recv();
      if (n > 0) g.handle(n);
      c[C.enobufs] = g.enobufs;
      if (pending.length && performance.now() - firstPendingAt >= cfg.batchMs) flush();
    }
  } catch (e) {
    post({ type: "error", message: errText(e), fatal: true });
  } finally {
    flush();
    g.close();
  }
  post({ type: "stopped" });
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

if (parentPort && workerData) main(workerData as NflogWorkerInit);
