/**
 * queue: the main-thread handle on an NFQUEUE verdict loop, and the kernel's per-queue counters.
 *
 * Owns: launching the runner child (inside a network namespace when asked: the netlink socket binds
 * in the netns of the process that opens it), the IPC with it, table generations, the stats snapshot.
 * May not: load koffi or touch packets in this process; policy stays in the decider module.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";
import { run, wrapNetns } from "../exec.js";
import type { DenyEvent, FromRunner, ToRunner, VerdictConfig } from "./protocol.js";
import { emptyStats, type NfqStats } from "./stats.js";

export interface NfqueueVerdictLoopOptions {
  /** The first queue number. */
  queueNum: number;
  /** Queues queueNum .. queueNum+queueCount-1, one pinned worker thread each (default 1). */
  queueCount?: number;
  /** File URL (or absolute path) of an ES module exporting `createDecider(table)`. */
  deciderModule: string;
  table: unknown;
  /** Default verdict for unparsable packets and decider errors; also NFQA_CFG_F_FAIL_OPEN. */
  failOpen: boolean;
  /** Kernel queue length (default 65536). */
  maxLen?: number;
  onDeny?: (e: DenyEvent) => void;
  /** Output of the decider module's optional `drainCounters()` export, about once a second. */
  onDeciderCounters?: (data: unknown) => void;
  /** Asynchronous failures after start: rejected tables; runner death too unless `onExit` is set. */
  onError?: (e: Error) => void;
  /** The runner ended after a successful start without being asked to (crashed, killed). */
  onExit?: (e: Error) => void;
  /** Named network namespace to bind the queue in (`ip netns exec`); default: this process's. */
  netns?: string;
  /** Bytes copied per packet (default 128: headers only). */
  copyRange?: number;
  rcvBufBytes?: number;
  startTimeoutMs?: number;
}

const STOP_TIMEOUT_MS = 5000;
const STDERR_TAIL = 4096;

export class NfqueueVerdictLoop {
  private child?: ChildProcess;
  private table: unknown;
  private generation = 0;
  private applied = 0;
  private lastStats: NfqStats = emptyStats();
  private stderrTail = "";
  private exited?: Promise<void>;
  private requestSeq = 0;
  private readonly statsWaiters = new Map<number, (s: NfqStats) => void>();
  private tableWaiters: { generation: number; resolve: () => void; reject: (e: Error) => void }[] = [];
  /** The factory's refusal of the newest table it was given, if it refused it. */
  private tableError?: { generation: number; message: string };
  private readonly exitListeners: ((e: Error) => void)[] = [];

  constructor(private readonly opts: NfqueueVerdictLoopOptions) {
    this.table = opts.table;
  }

  /** Pid of the runner child (the process bound to the queue), while running. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /**
   * The runner is alive as far as this process knows: false from its exit on (the "exit" event comes
   * before "close", which waits for its stderr), so a killed runner stops counting at once.
   */
  get running(): boolean {
    const c = this.child;
    return c !== undefined && c.exitCode === null && c.signalCode === null;
  }

  /** Resolves once the queue is bound and the verdict loop runs; rejects with the runner's reason. */
  async start(): Promise<void> {
    if (this.child) throw new Error("NfqueueVerdictLoop already started");
    const { argv } = launchCommand(this.opts.netns);
    // spawn, not exec.run(): the runner is a long-lived IPC peer, not a command that finishes.
    const child = spawn(argv[0], argv.slice(1), {
      stdio: ["ignore", "ignore", "pipe", "ipc"],
      serialization: "advanced",
    });
    this.child = child;
    child.stderr?.on("data", (b: Buffer) => {
      this.stderrTail = (this.stderrTail + b.toString("utf8")).slice(-STDERR_TAIL);
    });
    this.exited = new Promise((resolve) => {
      // "close", not "exit": by then stderr is drained, so the error carries the runner's last words.
      child.on("close", (code, signal) => {
        const err = new Error(
          `nfqueue runner exited (${signal ?? code})${this.stderrTail ? `: ${this.stderrTail.trim()}` : ""}`,
        );
        this.child = undefined;
        for (const l of this.exitListeners.splice(0)) l(err);
        for (const w of this.tableWaiters.splice(0)) w.reject(err);
        for (const [, w] of this.statsWaiters) w(this.lastStats);
        this.statsWaiters.clear();
        resolve();
      });
    });
    child.on("message", (m: FromRunner) => this.onMessage(m));

    const config: VerdictConfig = {
      queueNum: this.opts.queueNum,
      queueCount: this.opts.queueCount ?? 1,
      deciderModule: toFileUrl(this.opts.deciderModule),
      table: this.table,
      generation: this.generation,
      failOpen: this.opts.failOpen,
      maxLen: this.opts.maxLen ?? 65536,
      copyRange: this.opts.copyRange ?? 128,
      rcvBufBytes: this.opts.rcvBufBytes ?? 8 << 20,
    };
    const startGeneration = this.generation;
    const ready = new Promise<void>((resolve, reject) => {
      const timeoutMs = this.opts.startTimeoutMs ?? 15000;
      const timer = setTimeout(
        () => done(new Error(`nfqueue runner not ready after ${timeoutMs} ms`)),
        timeoutMs,
      );
      const done = (e?: Error) => {
        clearTimeout(timer);
        this.readyHook = undefined;
        const i = this.exitListeners.indexOf(done);
        if (i >= 0) this.exitListeners.splice(i, 1);
        if (e) reject(e);
        else resolve();
      };
      this.readyHook = done;
      this.exitListeners.push(done);
    });
    child.on("error", (e) => this.readyHook?.(new Error(`cannot start nfqueue runner: ${e.message}`)));
    this.send({ type: "start", config });
    try {
      await ready;
    } catch (e) {
      await this.kill();
      throw e;
    }
    this.applied = startGeneration;
    // Tables set while starting were not in the start config.
    if (this.generation !== startGeneration)
      this.send({ type: "table", table: this.table, generation: this.generation });
    this.exitListeners.push((e) => (this.opts.onExit ?? this.opts.onError)?.(e));
  }

  private readyHook?: (e?: Error) => void;

  private onMessage(m: FromRunner): void {
    switch (m.type) {
      case "ready":
        this.readyHook?.();
        break;
      case "error":
        if (this.readyHook) this.readyHook(new Error(m.message));
        else this.opts.onError?.(new Error(m.message));
        break;
      case "denies":
        if (this.opts.onDeny) for (const e of m.events) this.opts.onDeny(e);
        break;
      case "stats":
      case "stopped": {
        this.lastStats = m.stats;
        const id = m.type === "stats" ? m.requestId : undefined;
        if (id !== undefined) {
          this.statsWaiters.get(id)?.(m.stats);
          this.statsWaiters.delete(id);
        }
        break;
      }
      case "table-applied":
        this.onTableApplied(m.generation, m.error);
        break;
      case "decider-counters":
        this.opts.onDeciderCounters?.(m.data);
        break;
    }
  }

  private onTableApplied(generation: number, error?: string): void {
    this.applied = Math.max(this.applied, generation);
    if (error) {
      this.tableError = { generation, message: error };
      this.opts.onError?.(new Error(`table ${generation} rejected by the decider factory: ${error}`));
    }
    const still: typeof this.tableWaiters = [];
    for (const w of this.tableWaiters) {
      if (w.generation > this.applied) still.push(w);
      else if (this.tableError?.generation === w.generation) w.reject(new Error(this.tableError.message));
      else w.resolve(); // applied, or superseded by a newer table before the worker got to it
    }
    this.tableWaiters = still;
  }

  /**
   * Replace the table; the worker rebuilds its decider and swaps it in between two packets.
   * Await `tableSynced()` to know when it is in force.
   */
  setTable(table: unknown): void {
    this.table = table;
    this.generation++;
    if (this.child && !this.readyHook) this.send({ type: "table", table, generation: this.generation });
  }

  /**
   * Resolves when the latest `setTable` is in force; rejects if the decider factory refused it
   * (the previous table then stays in force).
   */
  tableSynced(): Promise<void> {
    const generation = this.generation;
    if (generation <= this.applied || !this.child) {
      const err = this.tableError?.generation === generation ? this.tableError.message : undefined;
      return err ? Promise.reject(new Error(err)) : Promise.resolve();
    }
    return new Promise((resolve, reject) => this.tableWaiters.push({ generation, resolve, reject }));
  }

  /** The latest snapshot (pushed by the runner every second, on request, and at stop). */
  stats(): NfqStats {
    return this.lastStats;
  }

  /** A fresh snapshot from the runner; the last known one if it is not running. */
  refreshStats(): Promise<NfqStats> {
    if (!this.child) return Promise.resolve(this.lastStats);
    const requestId = ++this.requestSeq;
    return new Promise((resolve) => {
      this.statsWaiters.set(requestId, resolve);
      this.send({ type: "stats", requestId });
    });
  }

  /** Unbind the queue and end the runner; the final stats stay readable. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.send({ type: "stop" });
    const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
    // A requested stop is not an error for onError listeners.
    this.exitListeners.length = 0;
    await this.exited;
    clearTimeout(timer);
  }

  private async kill(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.exitListeners.length = 0;
    child.kill("SIGKILL");
    await this.exited;
  }

  private send(m: ToRunner): void {
    const c = this.child;
    if (c?.connected) c.send(m, (err) => err && this.opts.onError?.(err));
  }
}

function toFileUrl(module: string): string {
  return module.startsWith("file:") ? module : pathToFileURL(module).href;
}

const TS_EXT = /\.(ts|mts|cts)$/;

/**
 * How to launch the runner: the compiled sibling with plain node when it exists, else the
 * TypeScript source through tsx (the runner loads a TypeScript worker or decider itself).
 */
function launchCommand(netns?: string): { argv: string[]; runner: string } {
  const js = new URL("./runner.js", import.meta.url);
  const runner = existsSync(js) ? fileURLToPath(js) : fileURLToPath(new URL("./runner.ts", import.meta.url));
  const nodeArgs: string[] = [];
  if (TS_EXT.test(runner)) nodeArgs.push("--import", tsxLoader());
  nodeArgs.push(runner);
  return { argv: wrapNetns(netns, process.execPath, nodeArgs), runner };
}

function tsxLoader(): string {
  try {
    // An absolute URL: a bare "tsx" would resolve from the child's cwd, not from this package.
    return pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href;
  } catch {
    throw new Error("running the nfqueue runner from TypeScript needs the tsx package");
  }
}

// ---- /proc/net/netfilter/nfnetlink_queue ---------------------------------------------------------

export interface NfqueueProcStats {
  queueNum: number;
  /** Netlink port id of the bound program (0: nobody bound). */
  portId: number;
  /** Packets waiting for a verdict now. */
  queueTotal: number;
  copyMode: number;
  copyRange: number;
  /** Dropped by the kernel because the queue was full. */
  queueDropped: number;
  /** Dropped because the netlink socket buffer was full. */
  userDropped: number;
  /** Last packet id handed out. */
  idSequence: number;
}

export function parseQueueProcStats(text: string): NfqueueProcStats[] {
  const out: NfqueueProcStats[] = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/).map(Number);
    if (f.length < 8 || f.slice(0, 8).some((n) => !Number.isFinite(n))) continue;
    out.push({
      queueNum: f[0],
      portId: f[1],
      queueTotal: f[2],
      copyMode: f[3],
      copyRange: f[4],
      queueDropped: f[5],
      userDropped: f[6],
      idSequence: f[7],
    });
  }
  return out;
}

const PROC_PATH = "/proc/net/netfilter/nfnetlink_queue";

/**
 * Kernel counters of one queue. /proc/net is per network namespace, so with `netns` the file is read
 * by a process inside it. Undefined when no program is bound to the queue there.
 */
export async function readQueueProcStats(
  queueNum: number,
  netns?: string,
): Promise<NfqueueProcStats | undefined> {
  return (await readAllQueueProcStats(netns)).find((s) => s.queueNum === queueNum);
}

/** Kernel counters of every queue bound in the namespace. */
export async function readAllQueueProcStats(netns?: string): Promise<NfqueueProcStats[]> {
  let text: string;
  if (netns) {
    text = (await run("cat", [PROC_PATH], { netns, allowFail: true })).stdout;
  } else {
    text = await readFile(PROC_PATH, "utf8").catch(() => "");
  }
  return parseQueueProcStats(text);
}
