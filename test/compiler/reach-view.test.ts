/**
 * reach-view: the picture's numbers are the matrix's numbers. At every granularity (pods,
 * identities, namespaces) each cell's allowed/denied counts equal those of the plain cell-by-cell
 * matrix summed over the cell's pods; a diff's opened/closed marks add up to the diff's counts.
 */
import { describe, expect, it } from "vitest";
import { diffTables } from "../../src/compiler/diff.js";
import { computeMatrix, declaredPorts, portLabel } from "../../src/compiler/matrix.js";
import { type PodInfo, podKey } from "../../src/compiler/model.js";
import { diffView, type ReachView, simulateView, VIEW_MAX_GROUPS } from "../../src/compiler/reach-view.js";
import { PolicyTable } from "../../src/compiler/table.js";
import {
  loadTable,
  mkPod,
  mkPolicy,
  type SyntheticCluster,
  syntheticCluster,
} from "../support/cluster-gen.js";

function build(c: Pick<SyntheticCluster, "namespaces" | "pods" | "policies">) {
  const t = new PolicyTable();
  loadTable(t, {
    namespaces: new Map(c.namespaces.map((n) => [n.name, n])),
    pods: new Map(c.pods.map((p) => [podKey(p), p])),
    policies: new Map(c.policies.map((p) => [`${p.metadata.namespace}/${p.metadata.name}`, p])),
  });
  return { table: t, pods: c.pods };
}

/** The view's counts per (row label, column label, port) against the naive matrix. */
function checkAgainstMatrix(view: ReachView, side: { table: PolicyTable; pods: PodInfo[] }) {
  const ports = view.ports.map((p) => {
    const [port, protocol] = p.split("/");
    return { port: Number(port), protocol: protocol as "TCP" | "UDP" | "SCTP" };
  });
  const m = computeMatrix(side.table, side.pods, ports);
  const groupOf = new Map<string, number>();
  view.rows.forEach((g, i) => {
    expect(g.members.length).toBe(Math.min(g.size, 20));
    for (const k of g.members) groupOf.set(k, i);
  });
  // Members lists are capped; map every pod through its group's key instead.
  const byPod = new Map(side.pods.map((p) => [podKey(p), p]));
  const keyMemo = new Map<string, string>();
  const keyOf = (k: string) => {
    let v = keyMemo.get(k);
    if (v === undefined) keyMemo.set(k, (v = groupKey(k)));
    return v;
  };
  const groupKey = (k: string) => {
    const p = byPod.get(k)!;
    if (view.level === "pods") return `${p.namespace}\u0000${p.name}`;
    if (view.level === "namespaces") return `${p.namespace}\u0000${p.namespace}`;
    const keys = Object.keys(p.labels).sort();
    return `${p.namespace}\u0000{${keys.map((x) => `${x}=${p.labels[x]}`).join(",")}}`;
  };
  const idx = new Map(view.rows.map((g, i) => [`${g.ns}\u0000${g.label}`, i]));
  const portIdx = new Map(view.ports.map((p, i) => [p, i]));
  const want = new Map<string, { allowed: number; denied: number }>();
  for (const r of m.results) {
    const k = `${portIdx.get(`${r.port}/${r.protocol}`)} ${idx.get(keyOf(r.from))} ${idx.get(keyOf(r.to))}`;
    const e = want.get(k) ?? { allowed: 0, denied: 0 };
    if (r.allowed) e.allowed++;
    else e.denied++;
    want.set(k, e);
  }
  const got = new Map<string, { allowed: number; denied: number }>();
  view.cells.forEach((list, pi) => {
    list.forEach((id, k) => {
      const c = view.cellTypes[id];
      if (id >= 0)
        got.set(`${pi} ${Math.floor(k / view.cols.length)} ${k % view.cols.length}`, {
          allowed: c.allowed,
          denied: c.denied,
        });
    });
  });
  expect(got).toEqual(want);
}

describe("reach-view", () => {
  it("pods level: every cell is the matrix's cell", () => {
    const c = syntheticCluster(100, 30, 5);
    const side = build(c);
    const view = simulateView(side, declaredPorts(c.pods));
    expect(view.level).toBe("pods");
    checkAgainstMatrix(view, side);
  });

  it(`identities level above ${VIEW_MAX_GROUPS} pods, namespaces level above ${VIEW_MAX_GROUPS} identities`, () => {
    const c = syntheticCluster(400, 60, 6);
    const side = build(c);
    const ports = declaredPorts(c.pods).slice(0, 4);
    const view = simulateView(side, ports);
    expect(view.level).toBe("identities");
    expect(view.levelNote).toMatch(/one row per label-set identity/);
    checkAgainstMatrix(view, side);
    // Many identities: one row per namespace (a Succeeded pod and a hostNetwork one too).
    const pods: PodInfo[] = [];
    for (let i = 0; i < 200; i++)
      pods.push(mkPod(`ns-${i % 4}`, `p${i}`, { n: String(i) }, `10.9.${i >> 8}.${i & 255}`));
    pods.push(mkPod("ns-0", "done", { n: "0" }, "10.9.0.1", { phase: "Succeeded" }));
    pods.push(mkPod("ns-1", "host", {}, "192.168.0.10", { hostNetwork: true }));
    const side2 = build({
      namespaces: [],
      pods,
      policies: c.policies.filter((p) => p.metadata.namespace === "ns-1"),
    });
    const view2 = simulateView(side2, [{ port: 8080, protocol: "TCP" }]);
    expect(view2.level).toBe("namespaces");
    expect(view2.rows.map((g) => g.label)).toEqual(["ns-0", "ns-1", "ns-2", "ns-3"]);
    checkAgainstMatrix(view2, side2);
  });

  it("diff: opened and closed marks add up to the diff's counts, with both reasons", () => {
    const c = syntheticCluster(120, 40, 7);
    const before = build(c);
    // The frontends lose all egress.
    const changed = [
      ...c.policies,
      mkPolicy("ns-0", "frontend-no-egress", {
        podSelector: { matchLabels: { app: "frontend" } },
        policyTypes: ["Egress"],
      }),
    ];
    const after = build({ ...c, policies: changed });
    const res = diffTables(before, after, declaredPorts(c.pods));
    expect(res.closed).toBeGreaterThan(0);
    const view = diffView(after, res);
    let opened = 0;
    let closed = 0;
    for (const list of view.cells)
      for (const id of list) {
        const cell = view.cellTypes[id];
        opened += cell?.opened ?? 0;
        closed += cell?.closed ?? 0;
        for (const [b, a] of cell?.changes ?? []) {
          expect(view.reasons[b]).toMatch(/^allowed/);
          expect(view.reasons[a]).toMatch(/^denied/);
        }
      }
    expect({ opened, closed }).toEqual({ opened: res.opened, closed: res.closed });
    expect(view.ports).toEqual(res.ports.map(portLabel));
    expect(view.changes!.length).toBe(Math.min(500, res.opened + res.closed));
  });
});
