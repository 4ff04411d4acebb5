/**
 * metrics: every Prometheus series the agent exports (prefix podwall_), in one registry.
 *
 * Owns: names, help texts, label sets (bounded: kinds, event types, protocols, results and policy
 * keys only) and buckets. Callers update them; the health server serves them.
 * May not: hold logic; it is a catalogue.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

export function createMetrics(withProcessMetrics = true) {
  const registry = new Registry();
  if (withProcessMetrics) collectDefaultMetrics({ register: registry, prefix: "podwall_" });
  const r = { registers: [registry] };
  const latencyBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10];
  return {
    registry,
    eventsReceived: new Counter({
      ...r,
      name: "podwall_events_received_total",
      help: "Cluster events received, by object kind and event type",
      labelNames: ["kind", "type"],
    }),
    rejectedObjects: new Counter({
      ...r,
      name: "podwall_rejected_objects_total",
      help: "Objects skipped because they could not be understood, by kind",
      labelNames: ["kind"],
    }),
    rejectedCurrent: new Gauge({
      ...r,
      name: "podwall_rejected_objects",
      help: "Objects currently rejected (their last good version, if any, stays in force), by kind",
      labelNames: ["kind"],
    }),
    syncDuration: new Histogram({
      ...r,
      name: "podwall_sync_duration_seconds",
      help: "One sync: render plus kernel apply",
      buckets: latencyBuckets,
    }),
    applyDuration: new Histogram({
      ...r,
      name: "podwall_apply_duration_seconds",
      help: "Kernel programming time of one sync (ipset + iptables restores)",
      buckets: latencyBuckets,
    }),
    enforceLatency: new Histogram({
      ...r,
      name: "podwall_policy_enforced_latency_seconds",
      help: "From a cluster event being received to the kernel holding its effect",
      buckets: latencyBuckets,
    }),
    syncs: new Counter({
      ...r,
      name: "podwall_syncs_total",
      help: "Syncs attempted, by result",
      labelNames: ["result"],
    }),
    cniAdds: new Counter({
      ...r,
      name: "podwall_cni_adds_total",
      help: "Pod sandbox ADDs held by the chained CNI plugin until the pod was programmed, by result",
      labelNames: ["result"],
    }),
    revokedConnections: new Counter({
      ...r,
      name: "podwall_revoked_connections_total",
      help: "Established connections whose conntrack entry was deleted because policy now denies them (--revoke-established)",
      labelNames: ["protocol"],
    }),
    revokePasses: new Histogram({
      ...r,
      name: "podwall_revoke_pass_duration_seconds",
      help: "One --revoke-established pass over the conntrack table (list, judge, delete), by result",
      labelNames: ["result"],
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    }),
    cniRechained: new Counter({
      ...r,
      name: "podwall_cni_rechained_total",
      help: "Times podwall-cni was found missing from the node's CNI configuration and chained again",
    }),
    cniAddDuration: new Histogram({
      ...r,
      name: "podwall_cni_add_duration_seconds",
      help: "How long a CNI ADD waited for the pod to be known and programmed",
      buckets: latencyBuckets,
    }),
    applyErrors: new Counter({
      ...r,
      name: "podwall_apply_errors_total",
      help: "Failed kernel applies (retried with backoff)",
    }),
    lastSuccess: new Gauge({
      ...r,
      name: "podwall_last_successful_sync_timestamp_seconds",
      help: "Unix time of the last sync that programmed the kernel successfully",
    }),
    watchRestarts: new Gauge({
      ...r,
      name: "podwall_api_watch_restarts",
      help: "Watch restarts (410 Gone, dropped connections, errors) since start, by kind",
      labelNames: ["kind"],
    }),
    apiConnected: new Gauge({
      ...r,
      name: "podwall_api_connected",
      help: "1 while the cluster source reaches its backend",
    }),
    localPods: new Gauge({
      ...r,
      name: "podwall_local_pods",
      help: "Pods on this node that policy can select",
    }),
    rejectedInterfaces: new Gauge({
      ...r,
      name: "podwall_rejected_interfaces",
      help: "Local pods whose host interface name iptables cannot match exactly (a '+', or not a kernel name): their rules match their addresses instead",
    }),
    isolatedPods: new Gauge({
      ...r,
      name: "podwall_isolated_local_pods",
      help: "Local pods isolated by at least one policy, by direction",
      labelNames: ["direction"],
    }),
    policies: new Gauge({ ...r, name: "podwall_policies", help: "NetworkPolicies in the compiled table" }),
    selectors: new Gauge({
      ...r,
      name: "podwall_selectors",
      help: "Distinct selectors in the selector cache",
    }),
    identities: new Gauge({ ...r, name: "podwall_identities", help: "Distinct label-set identities" }),
    pods: new Gauge({ ...r, name: "podwall_pods", help: "Pods known cluster-wide" }),
    rules: new Gauge({
      ...r,
      name: "podwall_iptables_rules",
      help: "iptables rules podwall owns (IPv4 + IPv6)",
    }),
    ipsets: new Gauge({ ...r, name: "podwall_ipsets", help: "ipsets podwall owns" }),
    // Userspace (NFQUEUE) dataplane.
    verdicts: new Counter({
      ...r,
      name: "podwall_verdicts_total",
      help: "Userspace verdicts by result and protocol",
      labelNames: ["result", "protocol"],
    }),
    policyVerdicts: new Counter({
      ...r,
      name: "podwall_policy_verdicts_total",
      help: "New connections allowed or denied per isolating policy (deny: every policy isolating the denying side)",
      labelNames: ["policy", "direction", "result"],
    }),
    cacheLookups: new Counter({
      ...r,
      name: "podwall_verdict_cache_lookups_total",
      help: "Verdict cache lookups by result",
      labelNames: ["result"],
    }),
    queueDepth: new Gauge({
      ...r,
      name: "podwall_nfqueue_queue_depth",
      help: "Packets waiting in the kernel queue",
      labelNames: ["queue"],
    }),
    queueDropped: new Gauge({
      ...r,
      name: "podwall_nfqueue_kernel_dropped",
      help: "Packets the kernel dropped because the queue was full",
      labelNames: ["queue"],
    }),
    userDropped: new Gauge({
      ...r,
      name: "podwall_nfqueue_user_dropped",
      help: "Packets dropped because the netlink socket buffer was full",
      labelNames: ["queue"],
    }),
    denyLogsSuppressed: new Counter({
      ...r,
      name: "podwall_deny_logs_suppressed_total",
      help: "Deny log lines suppressed by the rate limit",
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
