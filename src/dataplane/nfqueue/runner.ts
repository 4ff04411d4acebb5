/**
 * runner: entry script of the verdict child process, launched by queue.ts (optionally through
 * `ip netns exec`, because an NFQUEUE socket binds in the network namespace of the process opening it).
 *
 * Owns: the IPC channel to the parent, the worker thread's lifetime, the shared counters' memory.
 * Stops the worker when told to or when the parent goes away, so no orphan stays bound to the queue.
 * May not: touch packets (the worker does) or run policy code on this thread.
 */
import { existsSync } from "node:fs";
import { MessageChannel, Worker } from "node:worker_threads";
import {
  CTL_MAILBOX,
  CTL_STOP,
  type FromRunner,
  type ToRunner,
  type VerdictConfig,
  type WorkerInit,
} from "./protocol.js";
import { readStats, STATS_SLOTS } from "./stats.js";

/** Unsolicited stats pushes keep the parent's synchronous `stats()` roughly current. */
const STATS_PUSH_MS = 1000;

/** Resolves once the message is handed to the channel (or at once if the parent is gone). */
function send(m: FromRunner): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send || !process.connected) return resolve();
    process.send(m, undefined, {}, () => resolve());
  });
}

/** The compiled worker when running from dist/, else the TypeScript source. */
function workerUrl(): URL {
  const js = new URL("./worker.js", import.meta.url);
  return existsSync(js) ? js : new URL("./worker.ts", import.meta.url);
}

const TS_EXT = /\.(ts|mts|cts)$/;

/**
 * Node 20 does not apply `--import` loader hooks inside worker threads, so TypeScript (the worker
 * from source, or a .ts decider module) is loaded through tsx's tsImport from a tiny eval bootstrap.
 */
function startWorker(init: WorkerInit): Worker {
  const url = workerUrl();
  const opts = { workerData: init, transferList: [init.tablePort] };
  if (!TS_EXT.test(url.pathname) && !TS_EXT.test(init.config.deciderModule)) return new Worker(url, opts);
  let api: string;
  try {
    api = import.meta.resolve("tsx/esm/api");
  } catch {
    throw new Error("loading TypeScript in the nfqueue worker needs the tsx package");
  }
  const boot = `import(${JSON.stringify(api)}).then((m) => m.tsImport(${JSON.stringify(url.href)}, ${JSON.stringify(import.meta.url)}))`;
  return new Worker(boot, { ...opts, eval: true });
}

class Runner {
  private worker?: Worker;
  private readonly counters = new SharedArrayBuffer(STATS_SLOTS * 8);
  private readonly control = new SharedArrayBuffer(8);
  private readonly ctl = new Int32Array(this.control);
  private readonly channel = new MessageChannel();
  private pushTimer?: NodeJS.Timeout;
  private stopping = false;
  private finalSent?: Promise<void>;

  start(config: VerdictConfig): void {
    if (this.worker) return;
    const init: WorkerInit = {
      config,
      counters: this.counters,
      control: this.control,
      tablePort: this.channel.port2,
    };
    let w: Worker;
    try {
      w = startWorker(init);
    } catch (e) {
      void send({ type: "error", message: e instanceof Error ? e.message : String(e), fatal: true }).then(
        () => process.exit(1),
      );
      return;
    }
    this.worker = w;
    w.on("message", (m: FromRunner) => {
      if (m.type === "stopped") this.finalSent = send(m);
      else void send(m);
      if (m.type === "ready") this.pushTimer = setInterval(() => this.pushStats(), STATS_PUSH_MS);
    });
    w.on("error", (e) => send({ type: "error", message: `worker crashed: ${e.message}`, fatal: true }));
    w.on("exit", (code) => {
      if (this.pushTimer) clearInterval(this.pushTimer);
      this.finalSent ??= send({ type: "stopped", stats: readStats(new Float64Array(this.counters)) });
      // Leave only after the last message is written: disconnecting earlier could lose it.
      void this.finalSent.then(() => {
        // The worker leaving while nobody asked it to is a failure, whatever its exit code.
        process.exitCode = code === 0 && this.stopping ? 0 : 1;
        this.channel.port1.close();
        if (process.connected) process.disconnect();
      });
    });
  }

  setTable(table: unknown, generation: number): void {
    this.channel.port1.postMessage({ table, generation });
    // The worker is inside a synchronous recv loop; it polls this counter rather than its event loop.
    Atomics.add(this.ctl, CTL_MAILBOX, 1);
  }

  pushStats(requestId?: number): void {
    void send({ type: "stats", stats: readStats(new Float64Array(this.counters)), requestId });
  }

  stop(): void {
    this.stopping = true;
    Atomics.store(this.ctl, CTL_STOP, 1);
    if (!this.worker) process.exit(0);
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
