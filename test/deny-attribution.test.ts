/**
 * What a deny (or audit deny) is reported as, pure: the NFQUEUE decider's own verdict as the deny
 * line's attribution (reportOf), its audit decisions and per-policy counters; the agent's line from
 * an attribution (display names); the kernel counters turned into per-policy metrics (baseline,
 * growth, rewritten chains, a read racing an apply); iptables-save -c parsing.
 */
import { describe, expect, it } from "vitest";
import { entryOf } from "../src/agent/deny-log.js";
import { KernelCounters } from "../src/agent/kernel-counters.js";
import { createLogger } from "../src/agent/log.js";
import { createMetrics } from "../src/agent/metrics.js";
import { withAudit } from "../src/compiler/audit.js";
import { decide } from "../src/compiler/engine.js";
import { FROM_API } from "../src/compiler/kinds/index.js";
import { takeSnapshot } from "../src/compiler/snapshot.js";
import { PolicyTable } from "../src/compiler/table.js";
import {
  type OwnedCounters,
  parseSaveCounters,
  type RuleCounter,
} from "../src/dataplane/deny-log-counters.js";
import { createDecider, drainCounters, reportOf } from "../src/dataplane/nfqueue/policy-decider.js";
import { renderNode } from "../src/dataplane/render.js";
import { metricValue } from "./support/agent-process.js";
import { mkNs, mkPod, mkPolicy } from "./support/cluster-gen.js";

type Raw = Record<string, unknown>;
const SERVER = "10.0.0.10";
const CLIENT = "10.0.0.11";
const INTRUDER = "10.0.0.12";

function cluster(...policies: Raw[]): PolicyTable {
  const t = new PolicyTable();
  t.upsertNamespace(mkNs("web", { team: "web" }));
  t.upsertNamespace(mkNs("other", { team: "other" }));
  t.upsertPod(mkPod("web", "server", { app: "server" }, SERVER));
  t.upsertPod(mkPod("web", "client", { app: "client" }, CLIENT));
  t.upsertPod(mkPod("other", "intruder", { app: "intruder" }, INTRUDER));
  for (const p of policies) t.upsertPolicy(p, FROM_API);
  return t;
}
const ONLY_CLIENT = mkPolicy("web", "only-client", {
  podSelector: { matchLabels: { app: "server" } },
  ingress: [{ from: [{ podSelector: { matchLabels: { app: "client" } } }] }],
});
const TRIAL: Raw = {
  ...mkPolicy("web", "trial", {
    podSelector: { matchLabels: { app: "server" } },
    ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: "other" } } }] }],
  }),
};
(TRIAL.metadata as Raw).annotations = { "podwall.io/enforcement": "audit" };
const ADMIN_DENY: Raw = {
  apiVersion: "policy.networking.k8s.io/v1alpha2",
  kind: "ClusterNetworkPolicy",
  metadata: { name: "guard" },
  spec: {
    tier: "Admin",
    priority: 1,
    subject: { namespaces: { matchLabels: { team: "web" } } },
    ingress: [
      { name: "no-other", action: "Deny", from: [{ namespaces: { matchLabels: { team: "other" } } }] },
    ],
  },
};

describe("the NFQUEUE decider reports its own verdict", () => {
  it("a drop: the side, policies, tier, rule and pods of the verdict it made", () => {
    const t = cluster(ONLY_CLIENT, ADMIN_DENY);
    const d = createDecider(structuredClone(takeSnapshot(t)));
    drainCounters();
    const v = d(INTRUDER, SERVER, 6, 80);
    expect(v.allowed).toBe(false);
    expect(reportOf(v)).toEqual({
      event: "deny",
      direction: "ingress",
      policies: ["cnp:guard"],
      tier: "admin",
      rule: { index: 0, name: "no-other" },
      action: "deny",
      src: "other/intruder",
      dst: "web/server",
    });
    // The table changes after the decision: the report still says what decided then.
    t.deletePolicy("", "guard", "ClusterNetworkPolicy");
    expect(reportOf(v)!.policies).toEqual(["cnp:guard"]);
    const v2 = createDecider(structuredClone(takeSnapshot(t)))(INTRUDER, SERVER, 6, 80);
    expect(reportOf(v2)).toMatchObject({ policies: ["web/only-client"], tier: "namespaced", action: "deny" });
    expect(reportOf(v2)!.rule).toBeUndefined();
    const allowed = d(CLIENT, SERVER, 6, 80);
    expect(allowed.allowed).toBe(true);
    expect("audit" in allowed).toBe(false);
  });

  it("audit: an allowed flow an audit policy would deny is marked, reported and counted per audit policy", () => {
    const t = cluster(TRIAL);
    const d = createDecider(structuredClone(takeSnapshot(t)));
    drainCounters();
    const r = d(CLIENT, SERVER, 6, 80);
    expect(r.allowed).toBe(true);
    expect((r as { audit?: unknown }).audit).toBeTruthy();
    expect(reportOf(r)).toEqual({
      event: "audit-deny",
      direction: "ingress",
      policies: ["web/trial"],
      tier: "namespaced",
      action: "deny",
      src: "web/client",
      dst: "web/server",
    });
    // The audit policy allows the other namespace: no audit deny there.
    expect("audit" in d(INTRUDER, SERVER, 6, 80)).toBe(false);
    d(CLIENT, SERVER, 6, 80);
    const counts = new Map(drainCounters().policies);
    expect(counts.get("web/trial|ingress|audit-deny")).toBe(2);
    expect([...counts.keys()].some((k) => k.endsWith("|deny"))).toBe(false);
    // The live table agrees: enforced allows, audited denies.
    expect(decide(t, { src: CLIENT, dst: SERVER, proto: 6, port: 80 }).allowed).toBe(true);
    expect(decide(t, { src: CLIENT, dst: SERVER, proto: 6, port: 80 }, withAudit).allowed).toBe(false);
  });

  it("an audit deny beside an enforced isolating policy names the audit policy only", () => {
    const both = cluster(ONLY_CLIENT, {
      ...TRIAL,
      spec: { podSelector: { matchLabels: { app: "server" } }, policyTypes: ["Ingress"] },
    });
    // Enforced: only-client allows the client; with the audit policy in force the union still does.
    const d = createDecider(structuredClone(takeSnapshot(both)));
    expect("audit" in d(CLIENT, SERVER, 6, 80)).toBe(false);
    // An audit Admin Deny of the client's namespace: named alone.
    const guard = structuredClone(ADMIN_DENY);
    (guard.metadata as Raw).annotations = { "podwall.io/enforcement": "audit" };
    ((guard.spec as Raw).ingress as Raw[])[0].from = [{ namespaces: { matchLabels: { team: "web" } } }];
    const d2 = createDecider(structuredClone(takeSnapshot(cluster(ONLY_CLIENT, guard))));
    expect(reportOf(d2(CLIENT, SERVER, 6, 80))).toMatchObject({
      event: "audit-deny",
      policies: ["cnp:guard"],
      tier: "admin",
    });
  });
});

describe("the deny line from an attribution", () => {
  it("names policies as namespace/name or the bare cluster name, and leaves out an empty rule name", () => {
    const e = entryOf(
      {
        event: "deny",
        direction: "egress",
        policies: ["cnp:guard", "web/x"],
        tier: "admin",
        rule: { index: 2, name: "" },
        action: "deny",
      },
      { srcIP: CLIENT, srcPort: 1234, dstIP: "192.0.2.1", port: 443, proto: 6 },
      "web/client",
    );
    expect(e).toEqual({
      event: "deny",
      src: "web/client",
      srcIP: CLIENT,
      srcPort: 1234,
      dst: undefined,
      dstIP: "192.0.2.1",
      port: 443,
      proto: 6,
      direction: "egress",
      policies: ["guard", "web/x"],
      tier: "admin",
      rule: { index: 2 },
      action: "deny",
    });
  });
});

describe("kernel counters as per-policy metrics", () => {
  const save = `# Generated
*filter
:PODWALL-ING-0123456789abcdef - [0:0]
:FOREIGN - [0:0]
[7:420] -A PODWALL-ING-0123456789abcdef -m comment --comment "pw:aaaaaaaa x" -j RETURN
[3:180] -A PODWALL-ING-0123456789abcdef -m comment --comment "pw:bbbbbbbb y" -g PODWALL-DL-0123456789abcdef
[9:1] -A FOREIGN -j DROP
[5:300] -A PODWALL-DENY-LIMITED -m comment --comment "pw:cccccccc z" -j DROP
COMMIT
`;

  it("parses the counters of podwall's chains only", () => {
    const c = parseSaveCounters(save);
    expect(c.get("PODWALL-ING-0123456789abcdef")).toEqual([
      { hash: "aaaaaaaa", packets: 7 },
      { hash: "bbbbbbbb", packets: 3 },
    ]);
    expect(c.get("PODWALL-DENY-LIMITED")).toEqual([{ hash: "cccccccc", packets: 5 }]);
    expect(c.has("FOREIGN")).toBe(false);
  });

  it("baseline first, then growth; a rewritten chain counts from zero; a racing read counts nothing wrong", async () => {
    const t = cluster(ONLY_CLIENT, ADMIN_DENY);
    const d = renderNode(t, [{ key: "web/server", hostIf: "veth0" }], {
      dataplane: "iptables",
      denyLog: { group: 1, ratePerSec: 10, burst: 20 },
    });
    // The kernel's view: the rendered chains with chosen counters.
    const counters = new Map<string, number>();
    const kernel = (): OwnedCounters => {
      const v4 = new Map<string, RuleCounter[]>();
      for (const [chain, rules] of d.v4.chains)
        v4.set(
          chain,
          rules.map((r, i) => ({
            hash: /pw:([0-9a-f]{8})/.exec(r)![1],
            packets: counters.get(`${chain}#${i}`) ?? 0,
          })),
        );
      return { v4, v6: new Map() };
    };
    const [npChain] = [...d.v4.counted].find(([, c]) => c.some((x) => x?.result === "allow"))!;
    const allowAt = d.v4.counted.get(npChain)!.findIndex((x) => x?.result === "allow");
    const denyAt = d.v4.counted.get(npChain)!.findIndex((x) => x?.result === "deny");
    const [adminChain, adminCounts] = [...d.v4.counted].find(([, c]) =>
      c.some((x) => x?.policies[0] === "cnp:guard"),
    )!;
    const adminAt = adminCounts.findIndex((x) => x?.policies[0] === "cnp:guard");
    let racing = false;
    const metrics = createMetrics(false);
    const kc = new KernelCounters({
      backend: "nft",
      intervalMs: 3_600_000,
      metrics,
      log: createLogger("silent"),
      read: async () => {
        const k = kernel();
        // A read racing an apply: the kernel holds another rule where the admin deny was rendered.
        if (racing) k.v4.get(adminChain)![adminAt] = { hash: "ffffffff", packets: 1000 };
        return k;
      },
    });
    counters.set(`${npChain}#${allowAt}`, 100); // history from a previous agent
    counters.set("PODWALL-DENY-LIMITED#0", 50);
    kc.applied(d);
    await kc.read();
    const text = async () => metrics.registry.metrics();
    expect(metricValue(await text(), "podwall_policy_verdicts_total")).toBeUndefined();
    counters.set(`${npChain}#${allowAt}`, 104);
    counters.set(`${npChain}#${denyAt}`, 2);
    counters.set(`${adminChain}#${adminAt}`, 3);
    counters.set("PODWALL-DENY-LIMITED#0", 70);
    await kc.read();
    let m = await text();
    const pv = (policy: string, result: string) =>
      metricValue(m, "podwall_policy_verdicts_total", { policy, direction: "ingress", result });
    expect(pv("web/only-client", "allow")).toBe(4);
    expect(pv("web/only-client", "deny")).toBe(2);
    expect(pv("guard", "deny")).toBe(3);
    expect(metricValue(m, "podwall_deny_log_kernel_limited_total", { event: "deny" })).toBe(20);
    // The chain was rewritten (counters start over): what it holds now is all new.
    counters.set(`${npChain}#${allowAt}`, 1);
    racing = true;
    await kc.read();
    m = await text();
    expect(pv("web/only-client", "allow")).toBe(5);
    expect(pv("guard", "deny")).toBe(3);
    await kc.stop();
  });
});
