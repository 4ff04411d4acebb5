/**
 * The tiered decision order, one rule of it per test: Admin (priority, name, rule order; Accept and
 * Deny final, Pass skips the tier) -> NetworkPolicy -> Baseline -> allow; egress at the source AND
 * ingress at the destination; peers (pods, namespaces, nodes, networks), protocols, named ports;
 * the live table and the NFQUEUE snapshot give the same verdicts.
 */
import { describe, expect, it } from "vitest";
import { decide, type Verdict } from "../../src/compiler/engine.js";
import { explainFlow } from "../../src/compiler/explain.js";
import { FROM_API } from "../../src/compiler/kinds/index.js";
import type { ProtoNum } from "../../src/compiler/model.js";
import { SnapshotSource, takeSnapshot } from "../../src/compiler/snapshot.js";
import { PolicyTable } from "../../src/compiler/table.js";
import { cport, mkFlow, mkNs, mkPod, mkPolicy } from "../support/cluster-gen.js";

// Namespaces: prod (tier=prod), dev (tier=dev), mon. Pods: prod/web 10.0.0.1 (app=web, port http 8080),
// prod/db 10.0.0.2 (app=db), dev/tool 10.0.1.1, mon/prom 10.0.2.1. Node n1 10.9.0.1 (role=infra).
const WEB = "10.0.0.1";
const DB = "10.0.0.2";
const DEV = "10.0.1.1";
const PROM = "10.0.2.1";
const NODE = "10.9.0.1";
const EXT = "203.0.113.7";

function cluster(): PolicyTable {
  const t = new PolicyTable();
  t.upsertNamespace(mkNs("prod", { tier: "prod" }));
  t.upsertNamespace(mkNs("dev", { tier: "dev" }));
  t.upsertNamespace(mkNs("mon", {}));
  t.upsertNode({ name: "n1", labels: { role: "infra" }, addresses: [NODE] });
  t.upsertPod(mkPod("prod", "web", { app: "web" }, WEB, { ports: [cport("http", 8080)] }));
  t.upsertPod(mkPod("prod", "db", { app: "db" }, DB, { ports: [cport("pg", 5432)] }));
  t.upsertPod(mkPod("dev", "tool", { app: "tool" }, DEV));
  t.upsertPod(mkPod("mon", "prom", { app: "prom" }, PROM));
  return t;
}

type Raw = Record<string, unknown>;
const ns = (name: string) => ({ namespaces: { matchLabels: { "kubernetes.io/metadata.name": name } } });
const tcp = (n: number) => ({ tcp: { destinationPort: { number: n } } });

function cnp(name: string, tier: "Admin" | "Baseline", priority: number, spec: Raw): Raw {
  return {
    apiVersion: "policy.networking.k8s.io/v1alpha2",
    kind: "ClusterNetworkPolicy",
    metadata: { name },
    spec: { tier, priority, ...spec },
  };
}

function add(t: PolicyTable, ...objs: Raw[]): PolicyTable {
  for (const o of objs) t.upsertPolicy(o, FROM_API);
  return t;
}

/** The table's verdict, and the snapshot's (what the NFQUEUE worker decides from) must agree. */
function verdict(t: PolicyTable, src: string, dst: string, port = 80, proto: ProtoNum = 6): Verdict {
  const flow = mkFlow(src, dst, port, proto);
  const v = decide(t, flow);
  const s = decide(new SnapshotSource(structuredClone(takeSnapshot(t)), t.now), flow);
  expect({ allowed: s.allowed, i: s.ingress, e: s.egress }, "snapshot vs table").toEqual({
    allowed: v.allowed,
    i: v.ingress,
    e: v.egress,
  });
  return v;
}
const allowed = (t: PolicyTable, src: string, dst: string, port = 80, proto: ProtoNum = 6) =>
  verdict(t, src, dst, port, proto).allowed;

const npAllowFrom = (namespace: string, name: string, app: string, fromNs: string): Raw =>
  mkPolicy(namespace, name, {
    podSelector: { matchLabels: { app } },
    ingress: [{ from: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": fromNs } } }] }],
  });

describe("admin tier", () => {
  it("a Deny is final: it overrides a NetworkPolicy that allows", () => {
    const t = add(
      cluster(),
      npAllowFrom("prod", "from-dev", "db", "dev"),
      cnp("guard", "Admin", 10, {
        subject: ns("prod"),
        ingress: [{ name: "no-dev", action: "Deny", from: [ns("dev")] }],
      }),
    );
    const v = verdict(t, DEV, DB);
    expect(v.allowed).toBe(false);
    expect(v.ingress).toMatchObject({
      result: "denied",
      tier: "admin",
      policies: ["cnp:guard"],
      by: { policy: "cnp:guard", rule: 0, action: "deny", name: "no-dev" },
    });
  });

  it("an Accept is final: it allows what the NetworkPolicy isolating the pod does not", () => {
    const t = add(
      cluster(),
      mkPolicy("prod", "deny-all", { podSelector: {} }),
      cnp("monitoring", "Admin", 5, {
        subject: ns("prod"),
        ingress: [{ action: "Accept", from: [ns("mon")] }],
      }),
    );
    expect(verdict(t, PROM, WEB).ingress).toMatchObject({ result: "allowed", tier: "admin" });
    expect(allowed(t, DEV, WEB)).toBe(false);
  });

  it("a Pass skips the rest of the admin tier: the NetworkPolicy decides", () => {
    const t = add(
      cluster(),
      cnp("a-pass", "Admin", 1, { subject: ns("prod"), ingress: [{ action: "Pass", from: [ns("dev")] }] }),
      cnp("b-deny", "Admin", 2, { subject: ns("prod"), ingress: [{ action: "Deny", from: [ns("dev")] }] }),
    );
    // Not isolated by a NetworkPolicy, no baseline: allowed by default after the pass.
    expect(verdict(t, DEV, DB).ingress.result).toBe("not-isolated");
    add(t, npAllowFrom("prod", "from-mon", "db", "mon"));
    expect(verdict(t, DEV, DB).ingress).toMatchObject({ result: "denied", tier: "namespaced" });
    add(t, npAllowFrom("prod", "from-dev", "db", "dev"));
    expect(verdict(t, DEV, DB).ingress).toMatchObject({ result: "allowed", tier: "namespaced" });
  });

  it("lower priority first; within a policy rules in written order", () => {
    const t = add(
      cluster(),
      cnp("p20", "Admin", 20, { subject: ns("prod"), ingress: [{ action: "Accept", from: [ns("dev")] }] }),
      cnp("p10", "Admin", 10, {
        subject: ns("prod"),
        ingress: [
          { name: "first", action: "Deny", from: [ns("dev")], protocols: [tcp(5432)] },
          { name: "second", action: "Accept", from: [ns("dev")] },
        ],
      }),
    );
    expect(verdict(t, DEV, DB, 5432).ingress.by).toMatchObject({ policy: "cnp:p10", name: "first" });
    expect(verdict(t, DEV, DB, 80).ingress.by).toMatchObject({ policy: "cnp:p10", name: "second" });
  });

  it("equal priorities are ordered by name, and explain says the order mattered", () => {
    const t = add(
      cluster(),
      cnp("zeta", "Admin", 7, { subject: ns("prod"), ingress: [{ action: "Accept", from: [ns("dev")] }] }),
      cnp("alpha", "Admin", 7, { subject: ns("prod"), ingress: [{ action: "Deny", from: [ns("dev")] }] }),
    );
    expect(verdict(t, DEV, DB).ingress.by?.policy).toBe("cnp:alpha");
    const text = explainFlow(t, mkFlow(DEV, DB, 80, 6)).text;
    expect(text).toContain("share priority 7");
    expect(text).toContain("orders equal priorities by name");
  });

  it("egress Accept at the source still needs ingress at the destination", () => {
    const t = add(
      cluster(),
      cnp("out", "Admin", 1, { subject: ns("dev"), egress: [{ action: "Accept", to: [ns("prod")] }] }),
      mkPolicy("prod", "deny-all", { podSelector: {} }),
    );
    const v = verdict(t, DEV, DB);
    expect(v.egress.result).toBe("allowed");
    expect(v.ingress.result).toBe("denied");
    expect(v.allowed).toBe(false);
  });
});

describe("baseline tier", () => {
  it("applies to pods no NetworkPolicy isolates, and a NetworkPolicy overrides it", () => {
    const t = add(
      cluster(),
      cnp("default-deny", "Baseline", 1, {
        subject: ns("prod"),
        ingress: [{ action: "Deny", from: [{ namespaces: {} }] }],
      }),
    );
    expect(verdict(t, DEV, DB).ingress).toMatchObject({ result: "denied", tier: "baseline" });
    expect(allowed(t, DEV, WEB)).toBe(false);
    add(t, npAllowFrom("prod", "db-from-dev", "db", "dev"));
    expect(verdict(t, DEV, DB).ingress).toMatchObject({ result: "allowed", tier: "namespaced" });
    // web is still not isolated by a NetworkPolicy: the baseline still denies it.
    expect(allowed(t, DEV, WEB)).toBe(false);
  });

  it("a baseline Pass ends the tier: the default allows", () => {
    const t = add(
      cluster(),
      cnp("b1", "Baseline", 1, { subject: ns("prod"), ingress: [{ action: "Pass", from: [ns("mon")] }] }),
      cnp("b2", "Baseline", 2, {
        subject: ns("prod"),
        ingress: [{ action: "Deny", from: [{ namespaces: {} }] }],
      }),
    );
    expect(verdict(t, PROM, DB).ingress.result).toBe("not-isolated");
    expect(allowed(t, DEV, DB)).toBe(false);
  });

  it("BaselineAdminNetworkPolicy (v1alpha1) maps onto the same tier, after every Baseline ClusterNetworkPolicy", () => {
    const banp = {
      apiVersion: "policy.networking.k8s.io/v1alpha1",
      kind: "BaselineAdminNetworkPolicy",
      metadata: { name: "default" },
      spec: { subject: ns("prod"), ingress: [{ action: "Deny", from: [ns("dev")] }] },
    };
    const t = add(cluster(), banp);
    expect(verdict(t, DEV, DB).ingress).toMatchObject({
      result: "denied",
      tier: "baseline",
      policies: ["banp:default"],
    });
    add(
      t,
      cnp("first", "Baseline", 1000, {
        subject: ns("prod"),
        ingress: [{ action: "Accept", from: [ns("dev")] }],
      }),
    );
    expect(allowed(t, DEV, DB)).toBe(true);
  });
});

describe("peers and protocols", () => {
  it("networks match any address, pods included; nodes match node addresses", () => {
    const t = add(
      cluster(),
      cnp("egress", "Admin", 1, {
        subject: ns("dev"),
        egress: [
          { action: "Accept", to: [{ nodes: { matchLabels: { role: "infra" } } }] },
          { action: "Deny", to: [{ networks: ["10.0.0.0/24", "203.0.113.0/24"] }] },
        ],
      }),
    );
    expect(allowed(t, DEV, NODE)).toBe(true);
    expect(verdict(t, DEV, NODE).egress.by?.rule).toBe(0);
    expect(allowed(t, DEV, DB)).toBe(false);
    expect(allowed(t, DEV, EXT)).toBe(false);
    expect(allowed(t, DEV, PROM)).toBe(true);
    // Node labels change: the peer follows.
    t.upsertNode({ name: "n1", labels: {}, addresses: [NODE] });
    expect(verdict(t, DEV, NODE).egress.result).toBe("not-isolated");
  });

  it("protocols: numbers, inclusive ranges, and named ports resolved on the destination pod", () => {
    const t = add(
      cluster(),
      cnp("ports", "Admin", 1, {
        subject: ns("dev"),
        egress: [
          { action: "Accept", to: [ns("prod")], protocols: [{ destinationNamedPort: "http" }] },
          {
            action: "Accept",
            to: [ns("prod")],
            protocols: [{ udp: { destinationPort: { range: { start: 5000, end: 5010 } } } }],
          },
          { action: "Deny", to: [ns("prod")] },
        ],
      }),
    );
    expect(allowed(t, DEV, WEB, 8080)).toBe(true);
    expect(allowed(t, DEV, DB, 8080)).toBe(false); // db has no port named http
    expect(allowed(t, DEV, DB, 5000, 17)).toBe(true);
    expect(allowed(t, DEV, DB, 5010, 17)).toBe(true);
    expect(allowed(t, DEV, DB, 5011, 17)).toBe(false);
    expect(allowed(t, DEV, DB, 5005, 6)).toBe(false);
    expect(allowed(t, DEV, DB, 5005, 132)).toBe(false);
  });

  it("hostNetwork pods are never subjects, nor matched by pods/namespaces peers", () => {
    const t = cluster();
    t.upsertPod(mkPod("dev", "hostnet", { app: "tool" }, "10.8.0.5", { hostNetwork: true, nodeName: "n2" }));
    add(
      t,
      cnp("deny-dev", "Admin", 1, {
        subject: ns("dev"),
        egress: [{ action: "Deny", to: [{ namespaces: {} }] }],
      }),
      cnp("no-dev-in", "Admin", 2, { subject: ns("prod"), ingress: [{ action: "Deny", from: [ns("dev")] }] }),
    );
    expect(allowed(t, "10.8.0.5", PROM)).toBe(true);
    expect(allowed(t, "10.8.0.5", DB)).toBe(true);
    expect(allowed(t, DEV, DB)).toBe(false);
  });

  it("domainNames match only what the pod learned from DNS, under a matching name, until the TTL", () => {
    let now = 1_000_000;
    const t = new PolicyTable(() => now);
    for (const p of [cluster()]) {
      for (const pod of p.allPods()) t.upsertPod(pod.info);
      for (const n of ["prod", "dev", "mon"])
        t.upsertNamespace(mkNs(n, p.namespaceLabels(n) as Record<string, string>));
    }
    add(
      t,
      cnp("names", "Admin", 1, {
        subject: ns("dev"),
        egress: [
          { name: "apis", action: "Accept", to: [{ domainNames: ["api.example.com", "*.example.org"] }] },
          { action: "Deny", to: [{ networks: ["0.0.0.0/0"] }] },
        ],
      }),
    );
    const A = "198.51.100.1";
    const B = "198.51.100.2";
    // Nothing learned: denied (never "allow everything").
    expect(allowed(t, DEV, A, 443)).toBe(false);
    expect(t.learnAddresses("dev/tool", ["API.example.com."], [A], 30)).toBe(true);
    expect(verdict(t, DEV, A, 443).egress).toMatchObject({ result: "allowed", by: { name: "apis" } });
    expect(explainFlow(t, mkFlow(DEV, A, 443, 6)).text).toContain(
      "api.example.com (learned from DNS 0 s ago, TTL 30 s)",
    );
    // Another pod did not learn it; another address was not answered.
    expect(t.domainSetsFor("prod/web", A)).toEqual([]);
    expect(allowed(t, DEV, B, 443)).toBe(false);
    // Wildcards: one or more whole labels, never the bare domain.
    t.learnAddresses("dev/tool", ["example.org"], [B], 30);
    expect(allowed(t, DEV, B, 443)).toBe(false);
    t.learnAddresses("dev/tool", ["a.b.example.org"], [B], 30);
    expect(allowed(t, DEV, B, 443)).toBe(true);
    // The TTL runs out: denied again, and expiring moves the generation (caches follow).
    now += 31_000;
    expect(allowed(t, DEV, A, 443)).toBe(false);
    const g = t.generation;
    expect(t.expireLearned()).toBe(true);
    expect(t.generation).toBeGreaterThan(g);
    // A new answer restores it; deleting the pod forgets everything it learned.
    t.learnAddresses("dev/tool", ["api.example.com"], [A], 5);
    expect(allowed(t, DEV, A, 443)).toBe(true);
    t.deletePod("dev", "tool");
    expect(t.domainSetsFor("dev/tool", A)).toEqual([]);
  });
});

describe("fail closed on what a newer API version adds (objects from the API server)", () => {
  it("an Accept with an unreadable peer matches nothing; a Deny or Pass with one denies everything", () => {
    const t = add(
      cluster(),
      cnp("acc", "Admin", 1, {
        subject: ns("dev"),
        egress: [{ action: "Accept", to: [{ futurePeer: { x: 1 } }] }],
      }),
    );
    expect(t.policy("cnp:acc")?.spec.notEnforced[0]).toMatch(/matches nothing/);
    expect(verdict(t, DEV, DB).egress.result).toBe("not-isolated");
    add(
      t,
      cnp("acc", "Admin", 1, { subject: ns("dev"), egress: [{ action: "Pass", to: [{ futurePeer: {} }] }] }),
    );
    expect(verdict(t, DEV, DB).egress).toMatchObject({ result: "denied", tier: "admin" });
    expect(t.policy("cnp:acc")?.spec.notEnforced[0]).toMatch(/denies all traffic/);
  });
});

describe("incremental", () => {
  it("a namespace relabel moves it in and out of a subject; update and delete take effect", () => {
    const t = add(
      cluster(),
      cnp("by-label", "Admin", 1, {
        subject: { namespaces: { matchLabels: { locked: "yes" } } },
        ingress: [{ action: "Deny", from: [{ namespaces: {} }] }],
      }),
    );
    expect(allowed(t, DEV, DB)).toBe(true);
    t.upsertNamespace(mkNs("prod", { tier: "prod", locked: "yes" }));
    expect(allowed(t, DEV, DB)).toBe(false);
    expect(allowed(t, PROM, WEB)).toBe(false);
    add(
      t,
      cnp("by-label", "Admin", 1, {
        subject: { namespaces: { matchLabels: { locked: "yes" } } },
        ingress: [{ action: "Deny", from: [ns("dev")] }],
      }),
    );
    expect(allowed(t, PROM, WEB)).toBe(true);
    expect(allowed(t, DEV, DB)).toBe(false);
    t.deletePolicy("", "by-label", "ClusterNetworkPolicy");
    expect(allowed(t, DEV, DB)).toBe(true);
    expect(t.stats().selectors).toBe(0);
  });

  it("audit policies are in the audit plan only", () => {
    const t = add(cluster(), {
      ...cnp("trial", "Admin", 1, { subject: ns("prod"), ingress: [{ action: "Deny", from: [ns("dev")] }] }),
      metadata: { name: "trial", annotations: { "podwall.io/enforcement": "audit" } },
    });
    expect(allowed(t, DEV, DB)).toBe(true);
    const id = t.endpoint(DB)!.identityId;
    const audited = decide(t, mkFlow(DEV, DB, 80, 6), (src, i, dir) =>
      (src as PolicyTable).auditPlanById(i, dir),
    );
    expect(audited.allowed).toBe(false);
    expect(t.auditPlanById(id, "ingress").audited).toBe(true);
    expect(t.planById(id, "ingress").empty).toBe(true);
  });
});
