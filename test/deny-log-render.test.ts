/**
 * Deny logs and audit mode in the renderer, pure: every deny a pod chain can reach goes through the
 * deny-log chain of what decided it (spelled by deny-log-rules), each id maps to its attribution,
 * ids are stable and change with what they stand for, every deciding rule is counted for the
 * per-policy metrics, and audit policies get chains that log and never drop, after the enforced
 * dispatch. The same rules are programmed into a real kernel and exercised with real packets in
 * e2e/deny-logs.test.ts and e2e/tiers.test.ts (the harness renders with deny logs).
 */
import { describe, expect, it } from "vitest";
import { FROM_API } from "../src/compiler/kinds/index.js";
import { PolicyTable } from "../src/compiler/table.js";
import { denyLimitArgs, nflogArgs } from "../src/dataplane/deny-log-rules.js";
import { defaultDenyLogId, logChainName, noAddressLogId } from "../src/dataplane/log-attribution.js";
import { type DesiredState, type RenderOptions, renderNode } from "../src/dataplane/render.js";
import { mkNs, mkPod, mkPolicy } from "./support/cluster-gen.js";

const LOG = { group: 7907, ratePerSec: 10, burst: 20 };
const OPTS: RenderOptions = { dataplane: "iptables", denyLog: LOG };
type Raw = Record<string, unknown>;

function cluster(...policies: Raw[]): PolicyTable {
  const t = new PolicyTable();
  t.upsertNamespace(mkNs("web", { team: "web" }));
  t.upsertNamespace(mkNs("other", { team: "other" }));
  t.upsertPod(mkPod("web", "server", { app: "server" }, "10.0.0.10"));
  t.upsertPod(mkPod("web", "client", { app: "client" }, "10.0.0.11"));
  t.upsertPod(mkPod("other", "intruder", { app: "intruder" }, "10.0.0.12"));
  for (const p of policies) t.upsertPolicy(p, FROM_API);
  return t;
}
const LOCAL = [
  { key: "web/server", hostIf: "veth-server" },
  { key: "web/client", hostIf: "veth-client" },
  { key: "other/intruder", hostIf: "veth-intr" },
];

const ONLY_CLIENT = mkPolicy("web", "only-client", {
  podSelector: { matchLabels: { app: "server" } },
  ingress: [{ from: [{ podSelector: { matchLabels: { app: "client" } } }], ports: [{ port: 80 }] }],
});
const cnp = (name: string, spec: Raw, annotations?: Record<string, string>): Raw => ({
  apiVersion: "policy.networking.k8s.io/v1alpha2",
  kind: "ClusterNetworkPolicy",
  metadata: { name, ...(annotations ? { annotations } : {}) },
  spec: { tier: "Admin", priority: 10, subject: { namespaces: { matchLabels: { team: "web" } } }, ...spec },
});
const NO_OTHER = cnp("no-other", {
  ingress: [
    { name: "block-other", action: "Deny", from: [{ namespaces: { matchLabels: { team: "other" } } }] },
  ],
});
const AUDIT = { "podwall.io/enforcement": "audit" };

/** Rules of a chain, as rendered. */
const rules = (d: DesiredState, chain: string, fam: 4 | 6 = 4) =>
  (fam === 4 ? d.v4 : d.v6).chains.get(chain) ?? [];
const podChains = (d: DesiredState) =>
  [...d.v4.chains.keys(), ...d.v6.chains.keys()].filter((c) => /^PODWALL-(ING|EGR)[A-Z]?-/.test(c));

describe("deny-log chains", () => {
  it("send every deny of a pod chain to the deciding rule's chain: limit, NFLOG with its id, DROP", () => {
    const d = renderNode(cluster(ONLY_CLIENT, NO_OTHER), LOCAL, OPTS);
    // No pod chain drops by itself.
    for (const c of podChains(d)) for (const r of rules(d, c)) expect(r, c).not.toMatch(/-j (DROP|REJECT)/);
    const ids = [...d.logIds];
    const np = ids.find(([, a]) => a.tier === "namespaced")!;
    const admin = ids.find(([, a]) => a.tier === "admin")!;
    expect(np[1]).toEqual({
      event: "deny",
      direction: "ingress",
      policies: ["web/only-client"],
      tier: "namespaced",
      action: "deny",
    });
    expect(np[0]).toBe(defaultDenyLogId("deny", "ingress", ["web/only-client"]));
    expect(admin[1]).toEqual({
      event: "deny",
      direction: "ingress",
      policies: ["cnp:no-other"],
      tier: "admin",
      rule: { index: 0, name: "block-other" },
      action: "deny",
    });
    for (const [id, a] of [np, admin]) {
      expect(id).toMatch(/^[0-9a-f]{16}$/);
      const chain = rules(d, logChainName("deny", id));
      const o = { ...LOG, direction: a.direction, event: a.event };
      expect(chain).toHaveLength(3);
      // One spelling: the rule layer serializes through deny-log-rules.
      expect(chain[0].startsWith(`${denyLimitArgs(o)} -m comment`)).toBe(true);
      expect(chain[1].startsWith(`${nflogArgs(id, o)} -m comment`)).toBe(true);
      expect(chain[2]).toMatch(/^-j DROP -m comment/);
    }
    expect(rules(d, "PODWALL-DENY-LIMITED")).toEqual([expect.stringMatching(/^-j DROP -m comment/)]);
    // The server's chains reach both, by goto.
    const server = [...d.v4.chains].filter(([c]) => /^PODWALL-INGN?-/.test(c)).flatMap(([, r]) => r);
    expect(server.some((r) => r.includes(`-g ${logChainName("deny", admin[0])}`))).toBe(true);
    expect(server.some((r) => r.includes(`-g ${logChainName("deny", np[0])}`))).toBe(true);
  });

  it("REJECT applies in the deny-log and limited chains alike", () => {
    const d = renderNode(cluster(ONLY_CLIENT), LOCAL, { ...OPTS, denyAction: "REJECT" });
    const [id] = [...d.logIds.keys()];
    expect(rules(d, logChainName("deny", id))[2]).toMatch(/^-j REJECT /);
    expect(rules(d, "PODWALL-DENY-LIMITED")[0]).toMatch(/^-j REJECT /);
  });

  it("a pod with no address in a family is denied there through a per-direction chain that says why", () => {
    const d = renderNode(cluster(ONLY_CLIENT), LOCAL, OPTS);
    const id = noAddressLogId("ingress");
    expect(d.logIds.get(id)).toEqual({
      event: "deny",
      direction: "ingress",
      policies: [],
      reason: "no-address",
    });
    expect(
      rules(d, "PODWALL-FORWARD", 6).some(
        (r) => r.includes("-o veth-server") && r.includes(`-g ${logChainName("deny", id)}`),
      ),
    ).toBe(true);
    expect(rules(d, logChainName("deny", id), 6)).toHaveLength(3);
    expect(d.v6.chains.has("PODWALL-NOADDR")).toBe(false);
    // Without deny logs, the one static chain as before.
    const plain = renderNode(cluster(ONLY_CLIENT), LOCAL, { dataplane: "iptables" });
    expect(rules(plain, "PODWALL-NOADDR", 6)).toEqual([expect.stringMatching(/^-j DROP/)]);
    expect(plain.logIds.size).toBe(0);
    expect([...plain.v4.chains.keys()].some((c) => c.startsWith("PODWALL-DL-"))).toBe(false);
  });

  it("ids are stable, change with what decides, and the NetworkPolicy default deny depends only on who isolates", () => {
    const a = renderNode(cluster(ONLY_CLIENT, NO_OTHER), LOCAL, OPTS);
    const b = renderNode(cluster(ONLY_CLIENT, NO_OTHER), LOCAL, OPTS);
    expect([...b.logIds]).toEqual([...a.logIds]);
    // The admin rule renamed: a new id (old records keep their old meaning); the NP id stays.
    const renamed = cnp("no-other", {
      ingress: [{ name: "shut", action: "Deny", from: [{ namespaces: { matchLabels: { team: "other" } } }] }],
    });
    const c = renderNode(cluster(ONLY_CLIENT, renamed), LOCAL, OPTS);
    const adminId = (d: DesiredState) => [...d.logIds].find(([, x]) => x.tier === "admin")![0];
    const npId = (d: DesiredState) => [...d.logIds].find(([, x]) => x.tier === "namespaced")![0];
    expect(adminId(c)).not.toBe(adminId(a));
    expect(c.logIds.get(adminId(c))!.rule).toEqual({ index: 0, name: "shut" });
    const widened = mkPolicy("web", "only-client", {
      podSelector: { matchLabels: { app: "server" } },
      ingress: [{ from: [{ podSelector: { matchLabels: { app: "client" } } }], ports: [{ port: 81 }] }],
    });
    expect(npId(renderNode(cluster(widened, NO_OTHER), LOCAL, OPTS))).toBe(npId(a));
  });

  it("lists every deciding rule with the policy verdict its counter counts", () => {
    const d = renderNode(cluster(ONLY_CLIENT, NO_OTHER), LOCAL, OPTS);
    const all = [...d.v4.counted].flatMap(([chain, counts]) =>
      counts.map((c, i) => ({ chain, rule: d.v4.chains.get(chain)![i], c })),
    );
    const counted = all.filter((x) => x.c !== null);
    expect(counted.map((x) => x.c)).toEqual(
      expect.arrayContaining([
        { policies: ["cnp:no-other"], direction: "ingress", result: "deny" },
        { policies: ["web/only-client"], direction: "ingress", result: "allow" },
        { policies: ["web/only-client"], direction: "ingress", result: "deny" },
      ]),
    );
    for (const x of counted) {
      if (x.c!.result === "allow") expect(x.rule).toMatch(/-j RETURN /);
      else expect(x.rule).toMatch(/-g PODWALL-DL-/);
    }
    // The admin tier's "no match" goto is not a verdict.
    expect(all.filter((x) => x.rule.includes("admin tier: no match")).map((x) => x.c)).toEqual([null]);
  });
});

describe("audit chains", () => {
  const TRIAL = {
    ...mkPolicy("web", "trial", {
      podSelector: { matchLabels: { app: "server" } },
      ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: "other" } } }] }],
    }),
  };
  (TRIAL.metadata as Raw).annotations = AUDIT;

  it("spell the audit plan after every enforced dispatch rule; would-be denies log and RETURN", () => {
    const d = renderNode(cluster(TRIAL), LOCAL, OPTS);
    expect(d.isolated.pods).toBe(0);
    const fwd = rules(d, "PODWALL-FORWARD");
    const at = fwd.findIndex((r) => r.includes("PODWALL-INGX-"));
    expect(at).toBe(fwd.length - 1);
    const [id, a] = [...d.logIds][0];
    expect(a).toEqual({
      event: "audit-deny",
      direction: "ingress",
      policies: ["web/trial"],
      tier: "namespaced",
      action: "deny",
    });
    const chain = rules(d, logChainName("audit-deny", id));
    expect(chain[0]).toContain("--hashlimit-name pw-audit-ing-10-20");
    expect(chain[0]).toContain("-g PODWALL-AUDIT-LIMITED");
    expect(chain[2]).toMatch(/^-j RETURN /);
    expect(rules(d, "PODWALL-AUDIT-LIMITED")).toEqual([expect.stringMatching(/^-j RETURN /)]);
    // Nothing the audit policy renders drops.
    for (const [c, r] of d.v4.chains)
      if (c.startsWith("PODWALL-AL-") || /^PODWALL-(ING|EGR)[XYZ]-/.test(c))
        for (const x of r) expect(x).not.toMatch(/-j (DROP|REJECT)/);
    expect([...d.v4.counted.values()].flat().filter(Boolean)).toEqual([
      { policies: ["web/trial"], direction: "ingress", result: "audit-deny" },
    ]);
  });

  it("an audit deny beside enforced policies names the audit one; an audit Admin rule names itself", () => {
    const trialAdmin = cnp(
      "trial-admin",
      {
        priority: 5,
        ingress: [
          { name: "no-other", action: "Deny", from: [{ namespaces: { matchLabels: { team: "other" } } }] },
        ],
      },
      AUDIT,
    );
    const d = renderNode(cluster(ONLY_CLIENT, TRIAL, trialAdmin), LOCAL, OPTS);
    const audits = [...d.logIds.values()].filter((a) => a.event === "audit-deny");
    expect(audits).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ tier: "namespaced", policies: ["web/trial"] }),
        expect.objectContaining({
          tier: "admin",
          policies: ["cnp:trial-admin"],
          rule: { index: 0, name: "no-other" },
        }),
      ]),
    );
    // The audit plan has an admin tier: entry X, then the NetworkPolicy tier Y.
    const names = [...d.v4.chains.keys()];
    expect(names.some((c) => c.startsWith("PODWALL-INGX-"))).toBe(true);
    expect(names.some((c) => c.startsWith("PODWALL-INGY-"))).toBe(true);
    // The enforced chains are those of the enforced plan alone.
    expect(names.some((c) => c.startsWith("PODWALL-INGN-"))).toBe(false);
  });

  it("are not rendered without deny logs; nfqueue queues pods only audit policies select", () => {
    const plain = renderNode(cluster(TRIAL), LOCAL, { dataplane: "iptables" });
    expect(
      [...plain.v4.chains.keys()].filter((c) => c.startsWith("PODWALL-") && !/FORWARD|INPUT|OUTPUT/.test(c)),
    ).toEqual([]);
    const q = renderNode(cluster(TRIAL), LOCAL, { dataplane: "nfqueue" });
    expect(rules(q, "PODWALL-FORWARD").some((r) => r.startsWith("-o veth-server -j PODWALL-ING-"))).toBe(
      true,
    );
    expect(q.logIds.size).toBe(0);
  });

  it("removing the annotation enforces the policy at the next render", () => {
    const enforced = renderNode(cluster(mkPolicy("web", "trial", TRIAL.spec as Raw)), LOCAL, OPTS);
    expect([...enforced.logIds.values()]).toEqual([
      expect.objectContaining({ event: "deny", policies: ["web/trial"] }),
      expect.objectContaining({ reason: "no-address" }),
    ]);
    expect(rules(enforced, "PODWALL-FORWARD").some((r) => r.includes("PODWALL-INGX-"))).toBe(false);
  });
});
