/**
 * reader: the main-thread handle on one NFLOG group's reader (a worker thread, see worker.ts).
 *
 * Owns: starting the worker (it binds the group inside the given network namespace), handing record
 * batches to the caller and acknowledging them (which is what bounds the worker's backlog), the
 * counters snapshot, and a clean stop (the last batch is delivered, the group unbound).
 * May not: load koffi on this thread, touch packets, or interpret prefixes (deny-log-rules does).
 */
import type { Worker } from "node:worker_threads";
import { startWorkerThread } from "../worker-thread.js";
import {
  COUNTER_SLOTS,
  CTL_SLOTS,
  CTL_STOP,
  CTL_TAKEN,
  type FromWorker,
  type NflogRecord,
  type NflogStats,
  type NflogWorkerConfig,
  type NflogWorkerInit,
  readNflogStats,
} from "./protocol.js";

export type { NflogRecord, NflogStats } from "./protocol.js";

export interface NflogReaderOptions {
  /** NFLOG group (0..65535) the rules log to (`--nflog-group`). */
  group: number;
  /** Named network namespace (/run/netns/NAME) to bind the group in; default: the agent's own. */
  netns?: string;
  /** Called on the main thread with each batch, in order. */
  onRecords: (records: NflogRecord[]) => void;
  /** Failures after start (the worker died or its socket failed); the reader is stopped by then. */
  onError?: (e: Error) => void;
  /** Bytes copied per packet (default 128: IP and transport headers). */
  copyRange?: number;
  /** Longest the kernel holds a partial batch, ms (default 100). */
  flushTimeoutMs?: number;
  /** Most packets per kernel batch (default 64; a rule's --nflog-threshold lowers it). */
  qthreshold?: number;
  /** Kernel batch buffer, bytes (default: the kernel's). */
  nlBufBytes?: number;
  /** Socket receive buffer (default 4 MiB). */
  rcvBufBytes?: number;
  /** Records waiting for this thread at most (default 8192); more are dropped and counted. */
  maxPending?: number;
  /** Records per posted batch at most (default 256). */
  batchSize?: number;
  /** Longest a record waits in the worker before its batch is posted, ms (default 50). */
  batchMs?: number;
  startTimeoutMs?: number;
}

const STOP_TIMEOUT_MS = 5000;

export class NflogReader {
  private worker?: Worker;
  private readonly counters = new SharedArrayBuffer(COUNTER_SLOTS * 8);
  private readonly control = new SharedArrayBuffer(CTL_SLOTS * 4);
  private readonly ctl = new Int32Array(this.control);
  private exited?: Promise<number>;
  private stopping = false;
  /** A failure after start was reported already: the worker's exit that follows is not news. */
  private failed = false;

  constructor(private readonly opts: NflogReaderOptions) {
    if (!Number.isInteger(opts.group) || opts.group < 0 || opts.group > 65535)
      throw new Error(`NFLOG group ${opts.group}: want an integer 0..65535`);
  }

  /** Resolves once the group is bound; rejects with the worker's reason (no library, group taken...). */
  async start(): Promise<void> {
    if (this.worker) throw new Error("NflogReader already started");
    const o = this.opts;
    const config: NflogWorkerConfig = {
      group: o.group,
      netns: o.netns,
      copyRange: o.copyRange ?? 128,
      flushTimeoutMs: o.flushTimeoutMs ?? 100,
      qthreshold: o.qthreshold ?? 64,
      nlBufBytes: o.nlBufBytes,
      rcvBufBytes: o.rcvBufBytes ?? 4 << 20,
      recvTimeoutMs: 50,
      maxPending: o.maxPending ?? 8192,
      batchSize: o.batchSize ?? 256,
      batchMs: o.batchMs ?? 50,
    };
    const init: NflogWorkerInit = { config, counters: this.counters, control: this.control };
    const worker = startWorkerThread(new URL("./worker.js", import.meta.url), { workerData: init });
    this.worker = worker;
    let readyHook: ((e?: Error) => void) | undefined;
    const ready = new Promise<void>((resolve, reject) => {
      const timeoutMs = o.startTimeoutMs ?? 15000;
      const timer = setTimeout(
        () => done(new Error(`NFLOG reader not ready after ${timeoutMs} ms`)),
        timeoutMs,
      );
      const done = (e?: Error) => {
        clearTimeout(timer);
        readyHook = undefined;
        if (e) reject(e);
        else resolve();
      };
      readyHook = done;
    });
    worker.on("message", (m: FromWorker) => {
      switch (m.type) {
        case "ready":
          readyHook?.();
          break;
        case "records":
          // Acknowledge first: the worker's bound counts what this thread has not taken yet.
          Atomics.add(this.ctl, CTL_TAKEN, m.records.length);
          o.onRecords(m.records);
          break;
        case "error":
          if (readyHook) readyHook(new Error(m.message));
          else this.fail(new Error(`NFLOG reader: ${m.message}`));
          break;
        case "stopped":
          break;
      }
    });
    worker.on("error", (e) => {
      if (readyHook) readyHook(e);
      else this.fail(new Error(`NFLOG reader worker crashed: ${e.message}`));
    });
    this.exited = new Promise((resolve) =>
      worker.once("exit", (code) => {
        this.worker = undefined;
        if (readyHook) readyHook(new Error(`NFLOG reader worker exited (${code}) before binding the group`));
        else if (!this.stopping) this.fail(new Error(`NFLOG reader worker exited (${code})`));
        resolve(code);
      }),
    );
    try {
      await ready;
    } catch (e) {
      await this.stop();
      throw e;
    }
  }

  private fail(e: Error): void {
    if (this.failed) return;
    this.failed = true;
    this.opts.onError?.(e);
  }

  get running(): boolean {
    return this.worker !== undefined;
  }

  /** The worker's counters now (they stay readable after stop). */
  stats(): NflogStats {
    return readNflogStats(new Float64Array(this.counters));
  }

  /** Unbind the group and end the worker; batches it still held are delivered first. */
  async stop(): Promise<void> {
    const worker = this.worker;
    if (!worker) return;
    this.stopping = true;
    Atomics.store(this.ctl, CTL_STOP, 1);
    const timer = setTimeout(() => void worker.terminate(), STOP_TIMEOUT_MS);
    await this.exited;
    clearTimeout(timer);
  }
}
