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

/** How to launch the agent: a command that execs it (a namespace wrapper, say) and its environment. */
export interface Launch {
  prefix?: readonly string[];
  env?: NodeJS.ProcessEnv;
}

/**
 * `podwall agent ARGS...` as a child process; its stderr (the JSON log) goes to `onLine`. The agent
 * runs on this process's Node.js, or on $PODWALL_AGENT_NODE (to compare Node.js versions).
 */
export function spawnAgent(
  args: readonly string[],
  onLine: (line: Record<string, unknown>) => void,
  launch: Launch = {},
): ChildProcess {
  const node = process.env.PODWALL_AGENT_NODE || process.execPath;
  const [cmd, ...pre] = [...(launch.prefix ?? []), node];
  const child = spawn(cmd, [...pre, CLI, "agent", ...args], {
    stdio: ["ignore", "ignore", "pipe"],
    env: launch.env ?? process.env,
  });
  onJsonLines(child.stderr!, onLine);
  return child;
}

export function spawnKubeAgent(o: KubeAgentOptions): ChildProcess {
  const args = ["--kubeconfig", o.kubeconfig, "--lab", o.lab, "--node-name", "lab"];
  args.push("--metrics-addr", `127.0.0.1:${o.metricsPort}`, ...(o.extra ?? []));
  return spawnAgent(args, o.onLine);
}

/** Where a pod finds its ServiceAccount token, CA and namespace (client-node reads exactly this). */
export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

export interface InClusterAgentOptions {
  /** Holds token, ca.crt and namespace, as the kubelet mounts them into a pod. */
  serviceAccountDir: string;
  /** KUBERNETES_SERVICE_HOST / KUBERNETES_SERVICE_PORT. */
  host: string;
  port: number;
  lab: string;
  metricsPort: number;
  extra?: readonly string[];
  onLine: (line: Record<string, unknown>) => void;
}

/**
 * The agent configured the way a pod is: no kubeconfig, the API server from
 * KUBERNETES_SERVICE_HOST/PORT, and `serviceAccountDir` bind-mounted at SERVICE_ACCOUNT_DIR in a
 * mount namespace of its own (so the host's view never changes; the empty mount point is left on
 * the host's /run). The wrapper execs the agent: the child's pid is the agent's.
 */
export function spawnInClusterAgent(o: InClusterAgentOptions): ChildProcess {
  const bind = `mkdir -p ${SERVICE_ACCOUNT_DIR} && mount --bind "$0" ${SERVICE_ACCOUNT_DIR} && exec "$@"`;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    KUBERNETES_SERVICE_HOST: o.host,
    KUBERNETES_SERVICE_PORT: String(o.port),
  };
  delete env.KUBECONFIG;
  const args = ["--lab", o.lab, "--node-name", "lab", "--metrics-addr", `127.0.0.1:${o.metricsPort}`];
  return spawnAgent([...args, ...(o.extra ?? [])], o.onLine, {
    prefix: ["unshare", "--mount", "--propagation", "slave", "--", "sh", "-c", bind, o.serviceAccountDir],
    env,
  });
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
