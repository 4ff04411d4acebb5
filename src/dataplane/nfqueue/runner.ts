/**
 * runner: entry script of the verdict child process, launched by queue.ts (optionally through
 * `ip netns exec`, because an NFQUEUE socket binds in the network namespace of the process opening it).
 *
 * Owns: the IPC channel to the parent, the worker thread's lifetime, the shared counters' memory.
 * Stops the worker when told to or when the parent goes away, so no orphan stays bound to the queue.
 * May not: touch packets (the worker does) or run policy code on this thread.
 */
import { MessageChannel, type Worker } from "node:worker_threads";
import { startWorkerThread } from "../worker-thread.js";
import {
  CTL_MAILBOX,
  CTL_STOP,
  type FromRunner,
  type ToRunner,
  type VerdictConfig,
  type WorkerInit,
} from "./protocol.js";
import { mergeStats, type NfqStats, readStats, STATS_SLOTS } from "./stats.js";

/** Unsolicited stats pushes keep the parent's synchronous `stats()` roughly current. */
const STATS_PUSH_MS = 1000;

/** Resolves once the message is handed to the channel (or at once if the parent is gone). */
function send(m: FromRunner): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send || !process.connected) return resolve();
    process.send(m, undefined, {}, () => resolve());
  });
}

/** The verdict worker: compiled or from source; a TypeScript decider module also needs tsx. */
function startWorker(init: WorkerInit): Worker {
  return startWorkerThread(
    new URL("./worker.js", import.meta.url),
    { workerData: init, transferList: [init.tablePort] },
    /\.(ts|mts|cts)$/.test(init.config.deciderModule),
  );
}

/** One worker thread, its queue's counters and its table mailbox. */
interface Lane {
  worker: Worker;
  counters: SharedArrayBuffer;
  ctl: Int32Array;
  channel: MessageChannel;
  ready: boolean;
  exited: boolean;
}

class Runner {
  private lanes: Lane[] = [];
  private pushTimer?: NodeJS.Timeout;
  private stopping = false;
  private finalSent?: Promise<void>;
  private readyWarnings: string[] = [];
  /** generation -> workers that applied it (and the first error, if one refused it). */
  private applied = new Map<number, { n: number; error?: string }>();

  start(config: VerdictConfig): void {
    if (this.lanes.length) return;
    const count = Math.max(1, Math.floor(config.queueCount ?? 1));
    for (let index = 0; index < count; index++) {
      const counters = new SharedArrayBuffer(STATS_SLOTS * 8);
      const control = new SharedArrayBuffer(8);
      const channel = new MessageChannel();
      const init: WorkerInit = { config, index, counters, control, tablePort: channel.port2 };
      let worker: Worker;
      try {
        worker = startWorker(init);
      } catch (e) {
        this.fatal(e instanceof Error ? e.message : String(e));
        return;
      }
      const lane: Lane = {
        worker,
        counters,
        ctl: new Int32Array(control),
        channel,
        ready: false,
        exited: false,
      };
      this.lanes.push(lane);
      worker.on("message", (m: FromRunner) => this.fromWorker(lane, m));
      worker.on("error", (e) =>
        send({ type: "error", message: `worker crashed: ${e.message}`, fatal: true }),
      );
      worker.on("exit", (code) => this.onExit(lane, code));
    }
  }

  private fatal(message: string): void {
    this.stopping = true;
    for (const l of this.lanes) Atomics.store(l.ctl, CTL_STOP, 1);
    void send({ type: "error", message, fatal: true }).then(() => process.exit(1));
  }

  private fromWorker(lane: Lane, m: FromRunner): void {
    switch (m.type) {
      case "ready":
        // One "ready" for the whole loop: every queue is bound.
        lane.ready = true;
        this.readyWarnings.push(...m.warnings);
        if (this.lanes.every((l) => l.ready)) {
          void send({ type: "ready", pid: process.pid, warnings: this.readyWarnings });
          this.pushTimer = setInterval(() => this.pushStats(), STATS_PUSH_MS);
        }
        return;
      case "table-applied": {
        // A table counts as applied once every worker decides from it.
        const a = this.applied.get(m.generation) ?? { n: 0 };
        a.n++;
        a.error ??= m.error;
        this.applied.set(m.generation, a);
        if (a.n < this.lanes.length) return;
        this.applied.delete(m.generation);
        for (const g of this.applied.keys()) if (g < m.generation) this.applied.delete(g);
        void send({
          type: "table-applied",
          generation: m.generation,
          ...(a.error ? { error: a.error } : {}),
        });
        return;
      }
      case "stopped":
        return; // Reported once, merged, when the last worker exits.
      default:
        void send(m);
    }
  }

  private onExit(lane: Lane, code: number): void {
    lane.exited = true;
    if (!this.stopping) {
      // One queue gone while nobody asked: stop the rest so the kernel's fail mode covers all of them.
      this.stopping = true;
      for (const l of this.lanes) Atomics.store(l.ctl, CTL_STOP, 1);
      process.exitCode = 1;
    } else if (code !== 0) process.exitCode = 1;
    if (!this.lanes.every((l) => l.exited)) return;
    if (this.pushTimer) clearInterval(this.pushTimer);
    this.finalSent ??= send({ type: "stopped", stats: this.stats() });
    // Leave only after the last message is written: disconnecting earlier could lose it.
    void this.finalSent.then(() => {
      process.exitCode ??= 0;
      for (const l of this.lanes) l.channel.port1.close();
      if (process.connected) process.disconnect();
    });
  }

  private stats(): NfqStats {
    return mergeStats(this.lanes.map((l) => readStats(new Float64Array(l.counters))));
  }

  setTable(table: unknown, generation: number): void {
    for (const l of this.lanes) {
      l.channel.port1.postMessage({ table, generation });
      // The worker is inside a synchronous recv loop; it polls this counter rather than its event loop.
      Atomics.add(l.ctl, CTL_MAILBOX, 1);
    }
  }

  pushStats(requestId?: number): void {
    void send({ type: "stats", stats: this.stats(), requestId });
  }

  stop(): void {
    this.stopping = true;
    for (const l of this.lanes) Atomics.store(l.ctl, CTL_STOP, 1);
    if (!this.lanes.length) process.exit(0);
  }
}

const runner = new Runner();

if (!process.send) {
  process.stderr.write("runner: must be started by NfqueueVerdictLoop with an IPC channel\n");
  process.exit(2);
}

process.on("message", (m: ToRunner) => {
  switch (m.type) {
    case "start":
      runner.start(m.config);
      break;
    case "table":
      runner.setTable(m.table, m.generation);
      break;
    case "stats":
      runner.pushStats(m.requestId);
      break;
    case "stop":
      runner.stop();
      break;
  }
});
// Parent gone (crashed or killed): release the queue so the kernel's bypass/fail-closed rule applies.
process.on("disconnect", () => runner.stop());
process.on("SIGTERM", () => runner.stop());
process.on("SIGINT", () => runner.stop());
