/**
 * lab/agent: starts podagent.py inside a lab netns and talks to it in JSON lines over stdin/stdout.
 * Owns: this process's registry of agents (one per netns), request ids, SCTP token correlation, and
 * agent lifetimes: an agent exits when its stdin closes, so it never outlives this process.
 * May not: configure the network or decide what a probe result means.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { wrapNetns } from "../exec.js";
import type { LabPortSpec } from "./types.js";

export interface AgentReply {
  ok: boolean;
  err?: string;
}

export interface BindError {
  proto: string;
  port: number;
  ip?: string;
  errno: string;
  msg?: string;
}

export type AgentRequest =
  | { op: "tcp" | "udp"; ip: string; port: number; timeoutMs: number }
  | { op: "sctp"; ip: string; port: number; tag: number }
  | { op: "ping" };

const READY_TIMEOUT_MS = 10_000;
/** Reply errors that mean the agent failed, not the packet. */
export const AGENT_EXITED = "agent exited";
export const AGENT_SILENT = "agent did not answer";

let agentPathCache: string | undefined;

/**
 * podagent.py sits beside this module under src/. tsc does not copy .py files, so from dist/ walk up to
 * the package root and use the one under src/.
 */
function podAgentPath(): string {
  if (agentPathCache) return agentPathCache;
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, "podagent.py")];
  for (let dir = here; ; dir = dirname(dir)) {
    if (existsSync(join(dir, "package.json"))) {
      candidates.push(join(dir, "src", "dataplane", "lab", "podagent.py"));
      break;
    }
    if (dirname(dir) === dir) break;
  }
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new Error(`podagent.py not found (looked in ${candidates.join(", ")})`);
  agentPathCache = found;
  return found;
}

let pythonCache: string | undefined;

/**
 * The real python3 interpreter, resolved once. A version-manager shim (pyenv) on PATH costs a shell
 * and several processes per start; a lab starts one agent per pod, and on a busy node those extra
 * starts push agents past their ready deadline.
 */
export function pythonExecutable(): string {
  if (pythonCache) return pythonCache;
  try {
    const exe = execFileSync("python3", ["-c", "import sys; print(sys.executable)"], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    }).trim();
    pythonCache = exe && existsSync(exe) ? exe : "python3";
  } catch {
    pythonCache = "python3"; // Let the spawn report the missing interpreter.
  }
  return pythonCache;
}

// ---- SCTP: the destination's agent reports the INIT's tag; any agent of this process may see it.

const sctpWaiters = new Map<number, () => void>();

function sctpSeen(tag: number): void {
  const done = sctpWaiters.get(tag);
  if (done) {
    sctpWaiters.delete(tag);
    done();
  }
}

/** A fresh nonzero 32-bit tag no probe in flight uses; the INIT carries it as its initiate tag. */
export function newSctpTag(): number {
  for (;;) {
    const tag = (Math.random() * 0xffffffff) >>> 0;
    if (tag !== 0 && !sctpWaiters.has(tag)) return tag;
  }
}

/** Resolves true when some agent reports `tag`, false after `ms`. Call before sending the INIT. */
export function waitSctpTag(tag: number, ms: number): { seen: Promise<boolean>; cancel: () => void } {
  let cancel = () => {};
  const seen = new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => {
      sctpWaiters.delete(tag);
      resolve(false);
    }, ms);
    sctpWaiters.set(tag, () => {
      clearTimeout(timer);
      resolve(true);
    });
    cancel = () => {
      clearTimeout(timer);
      sctpWaiters.delete(tag);
      resolve(false);
    };
  });
  return { seen, cancel };
}

// ---- one agent

function unref(stream: unknown): void {
  (stream as { unref?: () => void } | null)?.unref?.();
}

export class PodAgent {
  private readonly child: ChildProcess;
  private readonly pending = new Map<number, (r: AgentReply) => void>();
  private nextId = 1;
  private stderrTail = "";
  private exitedFlag = false;
  private readonly exitPromise: Promise<void>;
  /** Resolves with the sockets the agent could not open once it serves; rejects if it never gets there. */
  readonly ready: Promise<BindError[]>;

  constructor(
    readonly netns: string,
    serve: readonly LabPortSpec[],
    ips: readonly string[],
  ) {
    const args = ["-u", podAgentPath(), "--serve", serve.map((p) => `${p.protocol}:${p.port}`).join(",")];
    args.push("--ips", ips.join(","));
    const argv = wrapNetns(netns, pythonExecutable(), args);
    this.child = spawn(argv[0], argv.slice(1), { stdio: ["pipe", "pipe", "pipe"] });
    // Agents must not keep this process alive; when it exits their stdin closes and they follow.
    this.child.unref();
    unref(this.child.stdin);
    unref(this.child.stdout);
    unref(this.child.stderr);
    this.child.stdin?.on("error", () => {});
    this.child.stderr?.on("data", (b: Buffer) => {
      this.stderrTail = (this.stderrTail + b.toString("utf8")).slice(-2000);
    });

    let readyResolve!: (e: BindError[]) => void;
    let readyReject!: (e: Error) => void;
    this.ready = new Promise((res, rej) => {
      readyResolve = res;
      readyReject = rej;
    });
    this.ready.catch(() => {}); // observed by whoever awaits it; never an unhandled rejection
    const readyTimer = setTimeout(() => {
      readyReject(
        new Error(`podagent in ${netns} not ready after ${READY_TIMEOUT_MS} ms: ${this.stderrTail}`),
      );
      this.child.kill("SIGKILL");
    }, READY_TIMEOUT_MS);

    const lines = createInterface({ input: this.child.stdout! });
    lines.on("line", (line) => {
      let msg: { ev?: string; id?: number; ok?: boolean; err?: string; tag?: number; errors?: BindError[] };
      try {
        msg = JSON.parse(line);
      } catch {
        return;
      }
      if (msg.ev === "ready") {
        clearTimeout(readyTimer);
        readyResolve(msg.errors ?? []);
      } else if (msg.ev === "sctp" && typeof msg.tag === "number") {
        sctpSeen(msg.tag);
      } else if (typeof msg.id === "number") {
        const done = this.pending.get(msg.id);
        if (done) {
          this.pending.delete(msg.id);
          done({ ok: msg.ok === true, ...(msg.err ? { err: msg.err } : {}) });
        }
      }
    });

    this.exitPromise = new Promise((resolve) => {
      const onExit = () => {
        if (this.exitedFlag) return;
        this.exitedFlag = true;
        clearTimeout(readyTimer);
        readyReject(new Error(`podagent in ${netns} exited: ${this.stderrTail.trim() || "(no stderr)"}`));
        for (const done of this.pending.values()) done({ ok: false, err: AGENT_EXITED });
        this.pending.clear();
        if (registry.get(netns) === this) registry.delete(netns);
        resolve();
      };
      this.child.on("exit", onExit);
      this.child.on("error", (e) => {
        this.stderrTail += String(e.message);
        onExit();
      });
    });
  }

  get exited(): boolean {
    return this.exitedFlag;
  }

  /** Sends one request; `guardMs` bounds the wait even if the agent hangs. */
  request(req: AgentRequest, guardMs: number): Promise<AgentReply> {
    if (this.exitedFlag) return Promise.resolve({ ok: false, err: AGENT_EXITED });
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve({ ok: false, err: AGENT_SILENT });
      }, guardMs);
      this.pending.set(id, (r) => {
        clearTimeout(timer);
        resolve(r);
      });
      this.child.stdin?.write(`${JSON.stringify({ id, ...req })}\n`);
    });
  }

  /** Closes stdin (the agent's signal to exit) and kills it if it lingers. */
  async close(): Promise<void> {
    if (this.exitedFlag) return;
    this.child.stdin?.end();
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 1000);
    await this.exitPromise;
    clearTimeout(timer);
  }
}

// ---- the registry: at most one agent per netns in this process

const registry = new Map<string, PodAgent>();

export function liveAgent(netns: string): PodAgent | undefined {
  const a = registry.get(netns);
  return a && !a.exited ? a : undefined;
}

/**
 * Starts the agent of `netns` and waits until it serves. "strict" fails on any socket it could not open;
 * "shared" accepts EADDRINUSE, i.e. another process's agent already serves that port in this netns.
 */
export async function startAgent(
  netns: string,
  serve: readonly LabPortSpec[],
  ips: readonly string[],
  mode: "strict" | "shared",
): Promise<PodAgent> {
  await registry.get(netns)?.close();
  const agent = new PodAgent(netns, serve, ips);
  registry.set(netns, agent);
  try {
    const errors = await agent.ready;
    const fatal = mode === "strict" ? errors : errors.filter((e) => e.errno !== "EADDRINUSE");
    if (fatal.length) {
      throw new Error(
        `podagent in ${netns} could not open: ${fatal.map((e) => JSON.stringify(e)).join(", ")}`,
      );
    }
    return agent;
  } catch (e) {
    await agent.close();
    throw e;
  }
}

export async function closeAgents(match: (netns: string) => boolean): Promise<void> {
  await Promise.all([...registry.values()].filter((a) => match(a.netns)).map((a) => a.close()));
}
