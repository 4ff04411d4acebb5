/**
 * diffTables, case by case: each kind of change that can open or close a cell (a policy, a pod's
 * labels, ports, address or node, a namespace's labels, a Node's addresses, a cluster policy), the
 * cells a pod talks to itself over, pods that appear or disappear, and the one-line reasons.
 */
import { describe, expect, it } from "vitest";
import { type DiffChange, diffChanges, diffTables } from "../../src/compiler/diff.js";
import { FROM_API } from "../../src/compiler/kinds/index.js";
import type { PortProto } from "../../src/compiler/matrix.js";
import type { NamespaceInfo, NodeInfo, PodInfo } from "../../src/compiler/model.js";
import { PolicyTable } from "../../src/compiler/table.js";
import { cport, mkNs, mkPod, mkPolicy, type RawPolicy } from "../support/cluster-gen.js";

interface World {
  namespaces?: NamespaceInfo[];
  nodes?: NodeInfo[];
  pods: PodInfo[];
  policies?: RawPolicy[];
}

function side(w: World) {
  const table = new PolicyTable();
  for (const ns of w.namespaces ?? []) table.upsertNamespace(ns);
  for (const n of w.nodes ?? []) table.upsertNode(n);
  for (const p of w.pods) table.upsertPod(p);
  for (const p of w.policies ?? []) table.upsertPolicy(p, FROM_API);
  return { table, pods: w.pods };
}

const TCP = (port: number): PortProto => ({ port, protocol: "TCP" });

function diff(before: World, after: World, ports: PortProto[] = [TCP(80)]) {
  const res = diffTables(side(before), side(after), ports);
  const cells = [...diffChanges(res)];
  const short = (c: DiffChange) =>
    `${c.from}->${c.to}:${c.port} ${c.before ? "open" : "shut"}->${c.after ? "open" : "shut"}`;
  return { res, cells, short: cells.map(short).sort() };
}

const WEB = mkPod("a", "web", { app: "web" }, "10.0.0.1", { ports: [cport("http", 80)] });
const DB = mkPod("a", "db", { app: "db" }, "10.0.0.2", { ports: [cport("http", 8080)] });
const CLIENT = mkPod("b", "client", { app: "client" }, "10.0.1.1");
const DENY_DB = mkPolicy("a", "deny-db", {
  podSelector: { matchLabels: { app: "db" } },
  policyTypes: ["Ingress"],
});
const ALLOW_CLIENT_TO_DB = mkPolicy("a", "allow-client", {
  podSelector: { matchLabels: { app: "db" } },
  ingress: [{ from: [{ namespaceSelector: {}, podSelector: { matchLabels: { app: "client" } } }] }],
});

describe("diffTables", () => {
  it("a new default-deny closes every cell into the pods it selects, and names the deny", () => {
    const pods = [WEB, DB, CLIENT];
    const d = diff({ pods }, { pods, policies: [DENY_DB] });
    expect(d.short).toEqual(["a/web->a/db:80 open->shut", "b/client->a/db:80 open->shut"]);
    expect(d.res).toMatchObject({ opened: 0, closed: 2, podsAdded: [], podsRemoved: [] });
    expect(d.cells[0].reasonBefore).toBe("allowed: egress not isolated; ingress not isolated");
    expect(d.cells[0].reasonAfter).toBe(
      "denied: egress not isolated; ingress denied: NetworkPolicy default deny (isolated by a/deny-db)",
    );
    // Only the class the policy selects was looked at.
    expect(d.res.stats.dirtyCols).toBe(1);
    expect(d.res.stats.dirtyRows).toBe(0);
  });

  it("no change: nothing reported, and nothing decided", () => {
    const w = { pods: [WEB, DB, CLIENT], policies: [DENY_DB] };
    const d = diff(w, w);
    expect(d.cells).toEqual([]);
    expect(d.res.stats.decisions).toBe(0);
    expect(d.res.cellsCompared).toBe(9);
  });

  it("a source's label change moves it into a peer: only its row opens", () => {
    const pods = [WEB, DB, CLIENT];
    const policies = [ALLOW_CLIENT_TO_DB];
    const d = diff(
      { pods, policies },
      { pods: [{ ...WEB, labels: { app: "client" } }, DB, CLIENT], policies },
    );
    expect(d.short).toEqual(["a/web->a/db:80 shut->open"]);
    expect(d.cells[0].reasonAfter).toBe(
      "allowed: egress not isolated; ingress allowed by NetworkPolicy a/allow-client, ingress rule 0",
    );
  });

  it("a namespace's label change moves every pod in it into or out of a namespaceSelector peer", () => {
    const pol = mkPolicy("a", "from-team", {
      podSelector: { matchLabels: { app: "db" } },
      ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: "red" } } }] }],
    });
    const pods = [WEB, DB, CLIENT];
    const d = diff(
      { pods, policies: [pol], namespaces: [mkNs("b", { team: "red" })] },
      { pods, policies: [pol], namespaces: [mkNs("b", { team: "blue" })] },
    );
    expect(d.short).toEqual(["b/client->a/db:80 open->shut"]);
  });

  it("named ports follow the destination's container ports", () => {
    const pol = mkPolicy("a", "http-only", {
      podSelector: { matchLabels: { app: "db" } },
      ingress: [{ ports: [{ port: "http" }] }],
    });
    const before = { pods: [WEB, DB], policies: [pol] };
    const after = { pods: [WEB, { ...DB, ports: [cport("http", 9090)] }], policies: [pol] };
    const d = diff(before, after, [TCP(8080), TCP(9090)]);
    expect(d.short).toEqual(["a/web->a/db:8080 open->shut", "a/web->a/db:9090 shut->open"]);
  });

  it("an address change moves a pod into or out of an ipBlock", () => {
    const pol = mkPolicy("a", "egress-block", {
      podSelector: { matchLabels: { app: "web" } },
      policyTypes: ["Egress"],
      egress: [{ to: [{ ipBlock: { cidr: "10.0.0.0/24" } }] }],
    });
    const d = diff(
      { pods: [WEB, DB, CLIENT], policies: [pol] },
      { pods: [WEB, { ...DB, ips: ["10.0.9.2"] }, CLIENT], policies: [pol] },
    );
    expect(d.short).toEqual(["a/web->a/db:80 open->shut"]);
  });

  it("the node exemption follows the destination's node and the Node's addresses", () => {
    const host = mkPod("kube-system", "agent", {}, "192.168.0.10", { hostNetwork: true, nodeName: "n1" });
    const db = { ...DB, nodeName: "n1" };
    const nodes = [{ name: "n1", labels: {}, addresses: ["192.168.0.10"] }];
    const d1 = diff(
      { pods: [host, db], policies: [DENY_DB], nodes },
      { pods: [host, { ...db, nodeName: "n2" }], policies: [DENY_DB], nodes },
    );
    expect(d1.short).toEqual(["kube-system/agent->a/db:80 open->shut"]);
    expect(d1.cells[0].reasonBefore).toBe(
      "allowed: egress not isolated; ingress allowed: the destination's own node may always reach it",
    );
    // The hostNetwork pod reports its IP as its node's address too: without that pod in the
    // "after" table, a Node object is what makes the address a node's.
    const d2 = diff(
      { pods: [host, db], policies: [DENY_DB], nodes },
      { pods: [host, db], policies: [DENY_DB], nodes: [{ name: "n1", labels: {}, addresses: [] }] },
    );
    expect(d2.short).toEqual([]);
  });

  it("replicas on different nodes: only the one on the source's node keeps the exemption", () => {
    const host = mkPod("kube-system", "agent", {}, "192.168.0.10", { hostNetwork: true, nodeName: "n1" });
    const db1 = { ...DB, name: "db-1", nodeName: "n1" };
    const db2 = { ...DB, name: "db-2", ips: ["10.0.0.3"], nodeName: "n2" };
    const nodes = [
      { name: "n1", labels: {}, addresses: ["192.168.0.10"] },
      { name: "n2", labels: {}, addresses: ["192.168.0.11"] },
    ];
    const pods = [host, db1, db2];
    const d = diff({ pods, nodes }, { pods, nodes, policies: [DENY_DB] });
    expect(d.short).toEqual([
      "a/db-1->a/db-2:80 open->shut",
      "a/db-2->a/db-1:80 open->shut",
      "kube-system/agent->a/db-2:80 open->shut",
    ]);
  });

  it("a ClusterNetworkPolicy Deny overrides the NetworkPolicy allow; the reason names tier, rule and action", () => {
    const cnp = {
      apiVersion: "policy.networking.k8s.io/v1alpha2",
      kind: "ClusterNetworkPolicy",
      metadata: { name: "guard" },
      spec: {
        tier: "Admin",
        priority: 10,
        subject: { namespaces: { matchLabels: { "kubernetes.io/metadata.name": "a" } } },
        ingress: [
          {
            name: "no-b",
            action: "Deny",
            from: [{ namespaces: { matchLabels: { "kubernetes.io/metadata.name": "b" } } }],
          },
        ],
      },
    };
    const pods = [WEB, DB, CLIENT];
    const d = diff({ pods, policies: [ALLOW_CLIENT_TO_DB] }, { pods, policies: [ALLOW_CLIENT_TO_DB, cnp] });
    expect(d.short).toEqual(["b/client->a/db:80 open->shut", "b/client->a/web:80 open->shut"]);
    const db = d.cells.find((c) => c.to === "a/db")!;
    expect(db.reasonBefore).toBe(
      "allowed: egress not isolated; ingress allowed by NetworkPolicy a/allow-client, ingress rule 0",
    );
    expect(db.reasonAfter).toBe(
      "denied: egress not isolated; ingress denied by ClusterNetworkPolicy guard (Admin, priority 10), ingress rule 0 'no-b' (deny)",
    );
  });

  it("pods that appear or disappear are listed, and their cells are no changes", () => {
    const pods = [WEB, DB];
    const d = diff({ pods: [...pods, CLIENT] }, { pods: [...pods, mkPod("c", "new", {}, "10.0.2.1")] });
    expect(d.res.podsAdded).toEqual(["c/new"]);
    expect(d.res.podsRemoved).toEqual(["b/client"]);
    expect(d.cells).toEqual([]);
    expect(d.res.pods).toEqual(["a/db", "a/web"]);
  });

  it("a terminal pod whose IP a live pod took talks to that pod as to itself", () => {
    // a/done held 10.0.0.2 and finished; a/db holds it now. So a flow to done's address goes to
    // db, and done -> db has one owner on both ends: a pod talking to itself, never filtered.
    const done = mkPod("a", "done", { app: "web" }, "10.0.0.2", { phase: "Succeeded" });
    const d = diff({ pods: [WEB, DB, done] }, { pods: [WEB, DB, done], policies: [DENY_DB] });
    expect(d.short).toEqual(["a/web->a/db:80 open->shut", "a/web->a/done:80 open->shut"]);
    // Once db is gone, the address has no owner, so done is nobody's pod: denied like anyone else.
    const d2 = diff(
      { pods: [WEB, DB, done], policies: [DENY_DB] },
      { pods: [WEB, { ...DB, ips: ["10.0.0.9"] }, done], policies: [DENY_DB] },
    );
    expect(d2.short).toEqual(["a/done->a/db:80 open->shut", "a/web->a/done:80 shut->open"]);
    expect(d2.cells[0].reasonBefore).toBe("allowed: a pod talking to its own address is never filtered");
  });

  it("a pod that learned names from DNS is judged on its own, not with its identity's other pods", () => {
    const cnp = {
      apiVersion: "policy.networking.k8s.io/v1alpha2",
      kind: "ClusterNetworkPolicy",
      metadata: { name: "web-out" },
      spec: {
        tier: "Admin",
        priority: 1,
        subject: { pods: { namespaceSelector: {}, podSelector: { matchLabels: { app: "web" } } } },
        egress: [
          { action: "Accept", to: [{ domainNames: ["db.example.com"] }] },
          { action: "Deny", to: [{ networks: ["0.0.0.0/0"] }] },
        ],
      },
    };
    const web2 = { ...WEB, name: "web-2", ips: ["10.0.0.5"] };
    const pods = [WEB, web2, DB];
    const before = side({ pods });
    const after = side({ pods, policies: [cnp] });
    after.table.learnAddresses("a/web", ["db.example.com"], ["10.0.0.2"], 300);
    const res = diffTables(before, after, [TCP(80)]);
    const cells = [...diffChanges(res)].map((c) => `${c.from}->${c.to}`).sort();
    // web learned db's name: still open; web-2 did not: closed (and both lose each other).
    expect(cells).toEqual(["a/web->a/web-2", "a/web-2->a/db", "a/web-2->a/web"].sort());
  });

  it("families: a pair talks over the destination's first family the source has", () => {
    const v6only = mkPod("b", "v6", { app: "client" }, "fd00::5");
    const dual = mkPod("a", "db", { app: "db" }, ["10.0.0.2", "fd00::2"]);
    const pol = mkPolicy("a", "v4-only", {
      podSelector: { matchLabels: { app: "db" } },
      ingress: [{ from: [{ ipBlock: { cidr: "10.0.0.0/8" } }] }],
    });
    const d = diff({ pods: [v6only, dual] }, { pods: [v6only, dual], policies: [pol] });
    expect(d.short).toEqual(["b/v6->a/db:80 open->shut"]);
  });
});
