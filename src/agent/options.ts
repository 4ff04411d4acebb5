/**
 * options: what the agent can be told, and the one copy of its defaults (the `agent` command's flags
 * and the demo both start from these).
 * May not: import anything heavy: the CLI reads it before deciding to load the agent.
 */
import { DEFAULT_QUEUE_NUM, defaultQueueThreads } from "../dataplane/nfqueue/defaults.js";

/** The NFLOG group of the deny-log rules unless --nflog-group says otherwise ("PW" on a keypad). */
export const DEFAULT_NFLOG_GROUP = 7907;

import { DEFAULT_MAX_FILE_BYTES } from "./sources/file-source.js";

export type DataplaneMode = "iptables" | "nfqueue";

export interface AgentOptions {
  nodeName: string;
  kubeconfig?: string;
  source?: string;
  lab?: string;
  metricsAddr?: string;
  /** A second listener with /healthz and /readyz only (probes on loopback, metrics elsewhere). */
  healthAddr?: string;
  dataplane: DataplaneMode;
  queueNum: number;
  /** nfqueue: queues (and pinned verdict threads), one per CPU by default. */
  queueThreads: number;
  failOpen: boolean;
  cleanupOnExit: boolean;
  resyncSeconds: number;
  batchDelayMs: number;
  denyAction: "DROP" | "REJECT";
  serviceCIDRs: string[];
  logLevel?: string;
  /** Write logs to this file instead of stderr (the demo keeps the terminal for its matrix). */
  logFile?: string;
  /** Deny and audit-deny lines per second, node-wide (both dataplanes). */
  denyLogPerSecond: number;
  /**
   * iptables: the kernel's limit on logged new connections per pod (deny and audit each), per second;
   * 0 turns NFLOG deny logs and audit observation off in this dataplane.
   */
  denyLogPodRate: number;
  denyLogPodBurst: number;
  /** iptables: the NFLOG group the deny-log rules send to and the agent reads. */
  nflogGroup: number;
  /** iptables: read the kernel's rule counters (per-policy verdicts, log limits) this often. */
  kernelCountersSeconds: number;
  /** Serve the chained CNI plugin on this unix socket (off when unset). */
  cniSocket?: string;
  /** How long a CNI ADD may wait for its pod to be known and programmed. */
  cniWaitSeconds?: number;
  /** Keep podwall-cni chained in the first conflist of this directory. */
  cniConfDir?: string;
  /** After a policy change, delete the conntrack entries of connections the new policy denies. */
  revokeEstablished?: boolean;
  /** --source: larger manifest files are rejected unread. */
  sourceMaxFileBytes?: number;
  /** How often a policy kind whose CRD is not installed is looked for again. */
  crdPollSeconds: number;
}

/** Every default the agent has; `queueThreads` is per machine (one per CPU, at most 8). */
export const AGENT_DEFAULTS = {
  // Loopback: anything that reaches this address reads the metrics (the DaemonSet sets the node IP).
  metricsAddr: "127.0.0.1:9472",
  dataplane: "iptables",
  queueNum: DEFAULT_QUEUE_NUM,
  failOpen: true,
  cleanupOnExit: false,
  resyncSeconds: 300,
  batchDelayMs: 20,
  denyAction: "DROP",
  serviceCIDRs: [] as string[],
  logLevel: "info",
  denyLogPerSecond: 20,
  denyLogPodRate: 10,
  denyLogPodBurst: 20,
  nflogGroup: DEFAULT_NFLOG_GROUP,
  kernelCountersSeconds: 10,
  cniWaitSeconds: 30,
  revokeEstablished: false,
  sourceMaxFileBytes: DEFAULT_MAX_FILE_BYTES,
  crdPollSeconds: 30,
} as const satisfies Partial<AgentOptions>;

/** Options with every unset field at its default. */
export function agentOptions(given: Partial<AgentOptions> & Pick<AgentOptions, "nodeName">): AgentOptions {
  const set = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined)) as typeof given;
  return { ...AGENT_DEFAULTS, serviceCIDRs: [], queueThreads: defaultQueueThreads(), ...set };
}
