/**
 * agent-process: start the real `podwall agent` (dist/cli/main.js), programming a lab node, with its
 * JSON log lines handed to a callback. Shared by the e2e suites and the agent bench.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { labDown } from "../../src/dataplane/lab/lab.js";
import { onJsonLines } from "./json-lines.js";

const CLI = join(import.meta.dirname, "..", "..", "dist", "cli", "main.js");

export interface KubeAgentOptions {
  kubeconfig: string;
  lab: string;
  metricsPort: number;
  /** More flags (--resync-seconds, --batch-delay-ms, ...). */
  extra?: readonly string[];
  onLine: (line: Record<string, unknown>) => void;
}

/**
 * `podwall agent ARGS...` as a child process; its stderr (the JSON log) goes to `onLine`. The agent
 * runs on this process's Node.js, or on $PODWALL_AGENT_NODE (to compare Node.js versions).
 */
export function spawnAgent(
  args: readonly string[],
  onLine: (line: Record<string, unknown>) => void,
): ChildProcess {
  const node = process.env.PODWALL_AGENT_NODE || process.execPath;
  const child = spawn(node, [CLI, "agent", ...args], { stdio: ["ignore", "ignore", "pipe"] });
  onJsonLines(child.stderr!, onLine);
  return child;
}

export function spawnKubeAgent(o: KubeAgentOptions): ChildProcess {
  const args = ["--kubeconfig", o.kubeconfig, "--lab", o.lab, "--node-name", "lab"];
  args.push("--metrics-addr", `127.0.0.1:${o.metricsPort}`, ...(o.extra ?? []));
  return spawnAgent(args, o.onLine);
}

/** Polls `pred` every `step` ms until it holds or `ms` passed; the last answer is returned. */
export async function until(pred: () => boolean | Promise<boolean>, ms = 5000, step = 50): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await pred()) return true;
    await new Promise((r) => setTimeout(r, step));
  }
  return pred();
}

/** A TCP port on 127.0.0.1 nobody listens on right now (for an agent's --metrics-addr). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/**
 * End of an e2e file: SIGKILL the processes (and wait for them), then remove the lab and the
 * temporary folder, each step also when the one before it failed.
 */
export async function tearDown(o: {
  processes: readonly (ChildProcess | undefined)[];
  lab?: string;
  dir?: string;
}): Promise<void> {
  try {
    await Promise.all(
      o.processes.map(async (p) => {
        if (!p || p.exitCode !== null || p.signalCode !== null) return;
        const done = new Promise((r) => p.once("exit", r));
        p.kill("SIGKILL");
        await done;
      }),
    );
  } finally {
    try {
      if (o.lab) await labDown(o.lab);
    } finally {
      if (o.dir) rmSync(o.dir, { recursive: true, force: true });
    }
  }
}
