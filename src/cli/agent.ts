/**
 * cli/agent: `podwall agent`, the DaemonSet's entry point.
 * Owns: flags, defaults and signal handling. May not: hold agent logic.
 */
import { hostname } from "node:os";
import type { Command } from "commander";
import { agentOptions, AGENT_DEFAULTS as D } from "../agent/options.js";
import { action, collect, UsageError } from "./errors.js";
import { parseQueueOptions } from "./queue-options.js";

export function registerAgent(program: Command): void {
  program
    .command("agent")
    .description("run the node agent: watch the cluster (or a folder), program the kernel, serve metrics")
    .option("--kubeconfig <path>", "kubeconfig file (default: in-cluster config, then ~/.kube/config)")
    .option("--node-name <name>", "this node's name (default: $NODE_NAME, then the host name)")
    .option("--source <dir>", "read and watch a folder of manifests instead of the API server")
    .option(
      "--source-max-file-bytes <n>",
      "--source: reject larger manifest files unread (parsing blocks the agent for seconds per MB)",
      String(D.sourceMaxFileBytes),
    )
    .option("--lab <name>", "program a running `podwall lab` node instead of this host")
    .option(
      "--metrics-addr <host:port>",
      "serve /metrics (and /healthz, /readyz) here; loopback by default: anything that reaches this address reads it",
      D.metricsAddr,
    )
    .option(
      "--health-addr <host:port>",
      "also serve /healthz and /readyz alone here (e.g. loopback for the kubelet's probes while /metrics is exposed)",
    )
    .option(
      "--dataplane <mode>",
      "iptables (kernel rules) or nfqueue (first packet of each connection judged in userspace)",
      D.dataplane,
    )
    .option(
      "--queue-num <n>",
      "NFQUEUE number for --dataplane nfqueue (the first, with several threads)",
      String(D.queueNum),
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
    .option("--resync-seconds <s>", "re-read the kernel and repair drift this often", String(D.resyncSeconds))
    .option(
      "--batch-delay-ms <ms>",
      "coalesce changes for this long before programming",
      String(D.batchDelayMs),
    )
    .option("--deny-action <action>", "DROP or REJECT for denied packets (iptables mode)", D.denyAction)
    .option("--service-cidr <cidr>", "IPVS ClusterIP range: judged after translation (repeatable)", collect)
    .option(
      "--deny-logs-per-second <n>",
      "deny and audit-deny log lines per second, node-wide, before suppression (both dataplanes)",
      String(D.denyLogPerSecond),
    )
    .option(
      "--deny-log-pod-rate <n>",
      "iptables: logged denied (and audit-denied) new connections per second per pod, limited in the kernel before NFLOG; 0 turns NFLOG deny logs and audit mode off",
      String(D.denyLogPodRate),
    )
    .option(
      "--deny-log-pod-burst <n>",
      "iptables: logged at once per pod after a quiet period",
      String(D.denyLogPodBurst),
    )
    .option("--nflog-group <n>", "iptables: the NFLOG group deny logs go through", String(D.nflogGroup))
    .option(
      "--kernel-counters-seconds <s>",
      "iptables: read the kernel's rule counters (per-policy metrics) this often",
      String(D.kernelCountersSeconds),
    )
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
      String(D.cniWaitSeconds),
    )
    .option(
      "--crd-poll-seconds <s>",
      "how often to look again for a ClusterNetworkPolicy kind whose CRD is not installed",
      String(D.crdPollSeconds),
    )
    .option("--log-level <level>", "trace, debug, info, warn or error", D.logLevel)
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
        const agent = new Agent(
          agentOptions({
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
            denyLogPerSecond: positive("--deny-logs-per-second", o.denyLogsPerSecond as string),
            denyLogPodRate: intIn("--deny-log-pod-rate", o.denyLogPodRate as string, 0, 100_000),
            denyLogPodBurst: intIn("--deny-log-pod-burst", o.denyLogPodBurst as string, 1, 100_000),
            nflogGroup: intIn("--nflog-group", o.nflogGroup as string, 0, 65535),
            kernelCountersSeconds: positive("--kernel-counters-seconds", o.kernelCountersSeconds as string),
            cniSocket: (o.cniSocket as string | undefined) || undefined,
            cniConfDir: (o.cniConfDir as string | undefined) || undefined,
            revokeEstablished: !!o.revokeEstablished,
            cniWaitSeconds: positive("--cni-wait-seconds", o.cniWaitSeconds as string),
            sourceMaxFileBytes: positive("--source-max-file-bytes", o.sourceMaxFileBytes as string),
            crdPollSeconds: positive("--crd-poll-seconds", o.crdPollSeconds as string),
          }),
        );
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
        process.on("uncaughtException", (e) => {
          // The loop may be in any state now: keep the kernel state, fail /healthz, and let the
          // kubelet restart the agent.
          agent.liveness.fatal(e);
          agent.log.error({ err: e.message, stack: e.stack }, "uncaught exception; /healthz now fails");
        });
        process.on("unhandledRejection", (e) => {
          const err = e instanceof Error ? e : new Error(String(e));
          agent.liveness.fatal(err);
          agent.log.error({ err: err.message, stack: err.stack }, "unhandled rejection; /healthz now fails");
        });
        try {
          await agent.start();
        } catch (e) {
          // Started far enough to serve /healthz: stay up and report the failure there.
          if (!agent.servingHealth) throw e;
        }
        await new Promise(() => {}); // Run until a signal.
      }),
    );
}

function intIn(flag: string, v: string, lo: number, hi: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < lo || n > hi)
    throw new UsageError(`${flag} must be an integer from ${lo} to ${hi}, got ${v}`);
  return n;
}

function positive(flag: string, v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${flag} must be a positive number, got ${v}`);
  return n;
}
