/**
 * cli/agent: `podwall agent`, the DaemonSet's entry point.
 * Owns: flags, defaults and signal handling. May not: hold agent logic.
 */
import { hostname } from "node:os";
import type { Command } from "commander";
import { action, collect, UsageError } from "./errors.js";
import { parseQueueOptions } from "./queue-options.js";

export function registerAgent(program: Command): void {
  program
    .command("agent")
    .description("run the node agent: watch the cluster (or a folder), program the kernel, serve metrics")
    .option("--kubeconfig <path>", "kubeconfig file (default: in-cluster config, then ~/.kube/config)")
    .option("--node-name <name>", "this node's name (default: $NODE_NAME, then the host name)")
    .option("--source <dir>", "read and watch a folder of manifests instead of the API server")
    .option("--lab <name>", "program a running `podwall lab` node instead of this host")
    .option(
      "--metrics-addr <host:port>",
      "serve /metrics (and /healthz, /readyz) here; loopback by default: anything that reaches this address reads it",
      "127.0.0.1:9472",
    )
    .option(
      "--health-addr <host:port>",
      "also serve /healthz and /readyz alone here (e.g. loopback for the kubelet's probes while /metrics is exposed)",
    )
    .option(
      "--dataplane <mode>",
      "iptables (kernel rules) or nfqueue (first packet of each connection judged in userspace)",
      "iptables",
    )
    .option(
      "--queue-num <n>",
      "NFQUEUE number for --dataplane nfqueue (the first, with several threads)",
      "100",
    )
    .option(
      "--queue-threads <n>",
      "nfqueue: verdict threads, one queue each, new connections spread by CPU (default: one per CPU, at most 8)",
    )
    .option(
      "--fail-closed",
      "nfqueue: isolated pods get no new connections while no verdict program runs (default: fail-open)",
    )
    .option(
      "--revoke-established",
      "after a policy change, cut established connections the new policy denies (default: let them finish)",
    )
    .option("--cleanup-on-exit", "remove podwall's kernel state on SIGTERM (default: leave it enforcing)")
    .option("--resync-seconds <s>", "re-read the kernel and repair drift this often", "300")
    .option("--batch-delay-ms <ms>", "coalesce changes for this long before programming", "20")
    .option("--deny-action <action>", "DROP or REJECT for denied packets (iptables mode)", "DROP")
    .option("--service-cidr <cidr>", "IPVS ClusterIP range: judged after translation (repeatable)", collect)
    .option("--deny-logs-per-second <n>", "nfqueue: deny log lines per second before suppression", "20")
    .option(
      "--cni-conf-dir <dir>",
      "keep podwall-cni chained in the first .conflist here (a network plugin may rewrite its file)",
    )
    .option(
      "--cni-socket <path>",
      "serve the chained CNI plugin (podwall-cni) here: a pod's ADD waits until its rules are programmed",
    )
    .option(
      "--cni-wait-seconds <s>",
      "how long a CNI ADD may wait for its pod to be known and programmed",
      "30",
    )
    .option("--log-level <level>", "trace, debug, info, warn or error", "info")
    .action(
      action(async (o: Record<string, string | boolean | string[] | undefined>) => {
        const dataplane = o.dataplane as string;
        if (dataplane !== "iptables" && dataplane !== "nfqueue")
          throw new UsageError("--dataplane must be iptables or nfqueue");
        const deny = String(o.denyAction).toUpperCase();
        if (deny !== "DROP" && deny !== "REJECT")
          throw new UsageError("--deny-action must be DROP or REJECT");
        // Loaded on demand: the Kubernetes client is heavy, and the offline commands never need it.
        const { Agent } = await import("../agent/agent.js");
        const agent = new Agent({
          nodeName: (o.nodeName as string) || process.env.NODE_NAME || hostname(),
          kubeconfig: o.kubeconfig as string | undefined,
          source: o.source as string | undefined,
          lab: o.lab as string | undefined,
          metricsAddr: (o.metricsAddr as string) || undefined,
          healthAddr: (o.healthAddr as string | undefined) || undefined,
          dataplane,
          ...parseQueueOptions(o.queueNum as string, o.queueThreads as string | undefined),
          failOpen: !o.failClosed,
          cleanupOnExit: !!o.cleanupOnExit,
          resyncSeconds: Number(o.resyncSeconds),
          batchDelayMs: Number(o.batchDelayMs),
          denyAction: deny,
          serviceCIDRs: (o.serviceCidr as string[] | undefined) ?? [],
          logLevel: o.logLevel as string,
          denyLogPerSecond: Number(o.denyLogsPerSecond),
          cniSocket: (o.cniSocket as string | undefined) || undefined,
          cniConfDir: (o.cniConfDir as string | undefined) || undefined,
          revokeEstablished: !!o.revokeEstablished,
          cniWaitSeconds: positive("--cni-wait-seconds", o.cniWaitSeconds as string),
        });
        let stopping = false;
        const stop = async (sig: string) => {
          if (stopping) return;
          stopping = true;
          agent.log.info({ signal: sig }, "signal received");
          await agent.stop();
          process.exit(0);
        };
        process.on("SIGTERM", () => void stop("SIGTERM"));
        process.on("SIGINT", () => void stop("SIGINT"));
        await agent.start();
        await new Promise(() => {}); // Run until a signal.
      }),
    );
}

function positive(flag: string, v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${flag} must be a positive number, got ${v}`);
  return n;
}
