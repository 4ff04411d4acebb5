/**
 * The upstream e2e x/y/z model (kubernetes test/e2e/network/netpol, anchors.md §5.1): namespaces
 * x, y, z (labels `ns: <name>` + the default kubernetes.io/metadata.name), pods a, b, c in each
 * (labels `pod: <name>`), each serving 80 and 81 on TCP, UDP and SCTP with named ports
 * `serve-<port>-<proto>`. Each scenario installs the upstream spec's policies and asserts the
 * expected 9x9 truth table, written by hand from the spec (rows: from, columns: to; "." allowed,
 * "X" denied; loopback cells are always "."). Every scenario runs on an IPv4 and an IPv6 model, and
 * the plain evaluator must produce the same tables.
 */
import { describe, expect, it } from "vitest";
import { decide } from "../../src/compiler/engine.js";
import { type PodInfo, PROTO, type ProtoName } from "../../src/compiler/model.js";
import { PolicyTable } from "../../src/compiler/table.js";
import {
  applyToState,
  applyToTable,
  type ClusterEvent,
  type ClusterState,
  cport,
  emptyState,
  mkNs,
  mkPod,
  mkPolicy,
  type RawPolicy,
  toPlain,
} from "../support/cluster-gen.js";
import { plainDecide } from "../support/plain-evaluator.js";

const NS = ["x", "y", "z"] as const;
const POD = ["a", "b", "c"] as const;
const PODS = NS.flatMap((n) => POD.map((p) => `${n}/${p}`));

class Model {
  readonly state: ClusterState = emptyState();
  readonly table = new PolicyTable();

  constructor(readonly family: 4 | 6) {
    for (const n of NS) this.apply({ kind: "ns", ns: mkNs(n, { ns: n }) });
    const ports = [80, 81].flatMap((port) =>
      (["TCP", "UDP", "SCTP"] as const).map((proto) =>
        cport(`serve-${port}-${proto.toLowerCase()}`, port, proto),
      ),
    );
    for (const [i, n] of NS.entries()) {
      for (const [j, p] of POD.entries()) {
        this.apply({ kind: "pod", pod: mkPod(n, p, { pod: p }, this.ipOf(i, j), { ports }) });
      }
    }
  }

  private ipOf(nsIndex: number, podIndex: number): string {
    return this.family === 4
      ? `10.0.${nsIndex + 1}.${podIndex + 1}`
      : `fd00:10::${nsIndex + 1}:${podIndex + 1}`;
  }

  ip(pod: string): string {
    const [n, p] = pod.split("/");
    return this.ipOf(NS.indexOf(n as never), POD.indexOf(p as never));
  }

  /** /32 or /128 of a pod. */
  host(pod: string): string {
    return `${this.ip(pod)}/${this.family === 4 ? 32 : 128}`;
  }

  /** A CIDR holding every pod of the model. */
  get podCIDR(): string {
    return this.family === 4 ? "10.0.0.0/16" : "fd00:10::/64";
  }

  apply(ev: ClusterEvent): void {
    applyToState(this.state, ev);
    applyToTable(this.table, ev);
  }

  policy(p: RawPolicy): void {
    this.apply({ kind: "policy", policy: p });
  }

  labelPod(pod: string, labels: Record<string, string>): void {
    const cur = this.state.pods.get(pod) as PodInfo;
    this.apply({ kind: "pod", pod: { ...cur, labels } });
  }

  labelNs(name: string, labels: Record<string, string>): void {
    this.apply({ kind: "ns", ns: mkNs(name, labels) });
  }

  grid(port: number, proto: ProtoName, plain: boolean): string {
    const cluster = toPlain(this.state);
    return PODS.map((from) => {
      const cells = PODS.map((to) => {
        const flow = { src: this.ip(from), dst: this.ip(to), proto: PROTO[proto], port };
        return (plain ? plainDecide(cluster, flow) : decide(this.table, flow)).allowed ? "." : "X";
      });
      return `${from}  ${cells.slice(0, 3).join("")} ${cells.slice(3, 6).join("")} ${cells.slice(6).join("")}`;
    }).join("\n");
  }
}

/** Normalize a hand-written grid to the format Model.grid prints, checking its shape. */
function normalizeGrid(text: string): string {
  const rows = text
    .trim()
    .split("\n")
    .map((l) => l.trim().split(/\s+/));
  expect(
    rows.map((r) => r[0]),
    "grid row labels",
  ).toEqual(PODS);
  return rows
    .map((r, i) => {
      const cells = r.slice(1).join("");
      expect(cells, `grid row ${r[0]}`).toMatch(/^[.X]{9}$/);
      expect(cells[i], `loopback cell ${r[0]}`).toBe(".");
      return `${r[0]}  ${cells.slice(0, 3)} ${cells.slice(3, 6)} ${cells.slice(6)}`;
    })
    .join("\n");
}

interface Probe {
  port: number;
  proto?: ProtoName;
  grid: string;
}

interface Step {
  action?: (m: Model) => void;
  probes: Probe[];
}

interface Scenario {
  name: string;
  steps: Step[];
}

// ------------------------------------------------------------------ policy shorthands

const sel = (labels: Record<string, string>) => ({ matchLabels: labels });
const podA = sel({ pod: "a" });
const inX = (name: string, spec: Record<string, unknown>) => mkPolicy("x", name, spec);
const tcp = (port: number | string) => ({ port, protocol: "TCP" });

// ------------------------------------------------------------------ grids

const ALL = `
x/a  ... ... ...
x/b  ... ... ...
x/c  ... ... ...
y/a  ... ... ...
y/b  ... ... ...
y/c  ... ... ...
z/a  ... ... ...
z/b  ... ... ...
z/c  ... ... ...`;

/** Every ingress into namespace x denied. */
const X_INGRESS_DENIED = `
x/a  .XX ... ...
x/b  X.X ... ...
x/c  XX. ... ...
y/a  XXX ... ...
y/b  XXX ... ...
y/c  XXX ... ...
z/a  XXX ... ...
z/b  XXX ... ...
z/c  XXX ... ...`;

/** Ingress into x allowed only from y. */
const X_ONLY_FROM_Y = `
x/a  .XX ... ...
x/b  X.X ... ...
x/c  XX. ... ...
y/a  ... ... ...
y/b  ... ... ...
y/c  ... ... ...
z/a  XXX ... ...
z/b  XXX ... ...
z/c  XXX ... ...`;

/** Ingress into x/a allowed only from x/b. */
const XA_ONLY_FROM_XB = `
x/a  ... ... ...
x/b  ... ... ...
x/c  X.. ... ...
y/a  X.. ... ...
y/b  X.. ... ...
y/c  X.. ... ...
z/a  X.. ... ...
z/b  X.. ... ...
z/c  X.. ... ...`;

/** Ingress into x/a denied from everyone. */
const XA_INGRESS_DENIED = `
x/a  ... ... ...
x/b  X.. ... ...
x/c  X.. ... ...
y/a  X.. ... ...
y/b  X.. ... ...
y/c  X.. ... ...
z/a  X.. ... ...
z/b  X.. ... ...
z/c  X.. ... ...`;

/** Ingress into x/a allowed only from namespace y. */
const XA_ONLY_FROM_Y = `
x/a  ... ... ...
x/b  X.. ... ...
x/c  X.. ... ...
y/a  ... ... ...
y/b  ... ... ...
y/c  ... ... ...
z/a  X.. ... ...
z/b  X.. ... ...
z/c  X.. ... ...`;

/** Ingress into x/a allowed only from y/a. */
const XA_ONLY_FROM_YA = `
x/a  ... ... ...
x/b  X.. ... ...
x/c  X.. ... ...
y/a  ... ... ...
y/b  X.. ... ...
y/c  X.. ... ...
z/a  X.. ... ...
z/b  X.. ... ...
z/c  X.. ... ...`;

/** Every egress out of x/a denied. */
const XA_EGRESS_DENIED = `
x/a  .XX XXX XXX
x/b  ... ... ...
x/c  ... ... ...
y/a  ... ... ...
y/b  ... ... ...
y/c  ... ... ...
z/a  ... ... ...
z/b  ... ... ...
z/c  ... ... ...`;

/** Every egress out of namespace x denied. */
const X_EGRESS_DENIED = `
x/a  .XX XXX XXX
x/b  X.X XXX XXX
x/c  XX. XXX XXX
y/a  ... ... ...
y/b  ... ... ...
y/c  ... ... ...
z/a  ... ... ...
z/b  ... ... ...
z/c  ... ... ...`;

/** Namespace x denies all ingress and all egress. */
const X_DENY_ALL = `
x/a  .XX XXX XXX
x/b  X.X XXX XXX
x/c  XX. XXX XXX
y/a  XXX ... ...
y/b  XXX ... ...
y/c  XXX ... ...
z/a  XXX ... ...
z/b  XXX ... ...
z/c  XXX ... ...`;

const denyIngressX = inX("deny-ingress", { podSelector: {}, policyTypes: ["Ingress"] });

const scenarios: Scenario[] = [
  {
    name: "should support a 'default-deny-ingress' policy (TCP, UDP, SCTP)",
    steps: [
      {
        action: (m) => m.policy(denyIngressX),
        probes: [
          { port: 80, grid: X_INGRESS_DENIED },
          { port: 81, proto: "UDP", grid: X_INGRESS_DENIED },
          { port: 80, proto: "SCTP", grid: X_INGRESS_DENIED },
        ],
      },
    ],
  },
  {
    name: "should support a 'default-deny-all' policy",
    steps: [
      {
        action: (m) => m.policy(inX("deny-all", { podSelector: {}, policyTypes: ["Ingress", "Egress"] })),
        probes: [
          { port: 80, grid: X_DENY_ALL },
          { port: 81, proto: "SCTP", grid: X_DENY_ALL },
        ],
      },
    ],
  },
  {
    name: "should enforce policy to allow traffic from pods within server namespace based on PodSelector",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("x-a-allows-x-b", {
              podSelector: podA,
              ingress: [{ from: [{ podSelector: sel({ pod: "b" }) }] }],
            }),
          ),
        probes: [{ port: 80, grid: XA_ONLY_FROM_XB }],
      },
    ],
  },
  {
    name: "should enforce policy to allow ingress traffic for a target",
    steps: [
      {
        action: (m) => {
          m.policy(denyIngressX);
          m.policy(inX("allow-all-to-a", { podSelector: podA, ingress: [{}] }));
        },
        probes: [
          {
            port: 80,
            grid: `
x/a  .XX ... ...
x/b  ..X ... ...
x/c  .X. ... ...
y/a  .XX ... ...
y/b  .XX ... ...
y/c  .XX ... ...
z/a  .XX ... ...
z/b  .XX ... ...
z/c  .XX ... ...`,
          },
        ],
      },
    ],
  },
  {
    name: "should enforce policy to allow ingress traffic from pods in all namespaces",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("allow-from-all-ns", { podSelector: {}, ingress: [{ from: [{ namespaceSelector: {} }] }] }),
          ),
        probes: [{ port: 80, grid: ALL }],
      },
    ],
  },
  {
    name: "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("allow-from-y", {
              podSelector: {},
              ingress: [{ from: [{ namespaceSelector: sel({ ns: "y" }) }] }],
            }),
          ),
        probes: [{ port: 80, grid: X_ONLY_FROM_Y }],
      },
    ],
  },
  {
    name: "should enforce policy based on PodSelector with MatchExpressions",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("x-a-allows-x-b-expr", {
              podSelector: podA,
              ingress: [
                {
                  from: [
                    { podSelector: { matchExpressions: [{ key: "pod", operator: "In", values: ["b"] }] } },
                  ],
                },
              ],
            }),
          ),
        probes: [{ port: 80, grid: XA_ONLY_FROM_XB }],
      },
    ],
  },
  {
    name: "should enforce policy based on NamespaceSelector with MatchExpressions",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("allow-ns-y-expr", {
              podSelector: {},
              ingress: [
                {
                  from: [
                    {
                      namespaceSelector: { matchExpressions: [{ key: "ns", operator: "In", values: ["y"] }] },
                    },
                  ],
                },
              ],
            }),
          ),
        probes: [{ port: 80, grid: X_ONLY_FROM_Y }],
      },
    ],
  },
  {
    name: "should enforce policy based on PodSelector or NamespaceSelector",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("x-a-or", {
              podSelector: podA,
              ingress: [
                {
                  from: [
                    {
                      namespaceSelector: {
                        matchExpressions: [{ key: "ns", operator: "NotIn", values: ["x"] }],
                      },
                    },
                    { podSelector: sel({ pod: "b" }) },
                  ],
                },
              ],
            }),
          ),
        probes: [
          {
            port: 80,
            grid: `
x/a  ... ... ...
x/b  ... ... ...
x/c  X.. ... ...
y/a  ... ... ...
y/b  ... ... ...
y/c  ... ... ...
z/a  ... ... ...
z/b  ... ... ...
z/c  ... ... ...`,
          },
        ],
      },
    ],
  },
  {
    name: "should enforce policy based on PodSelector and NamespaceSelector",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("x-a-and", {
              podSelector: podA,
              ingress: [
                {
                  from: [
                    {
                      namespaceSelector: {
                        matchExpressions: [{ key: "ns", operator: "NotIn", values: ["x"] }],
                      },
                      podSelector: sel({ pod: "b" }),
                    },
                  ],
                },
              ],
            }),
          ),
        probes: [
          {
            port: 80,
            grid: `
x/a  ... ... ...
x/b  X.. ... ...
x/c  X.. ... ...
y/a  X.. ... ...
y/b  ... ... ...
y/c  X.. ... ...
z/a  X.. ... ...
z/b  ... ... ...
z/c  X.. ... ...`,
          },
        ],
      },
    ],
  },
  {
    name: "should enforce policy based on Multiple PodSelectors and NamespaceSelectors",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("x-a-multi", {
              podSelector: podA,
              ingress: [
                {
                  from: [
                    {
                      namespaceSelector: {
                        matchExpressions: [{ key: "ns", operator: "NotIn", values: ["x"] }],
                      },
                      podSelector: { matchExpressions: [{ key: "pod", operator: "In", values: ["b", "c"] }] },
                    },
                  ],
                },
              ],
            }),
          ),
        probes: [
          {
            port: 80,
            grid: `
x/a  ... ... ...
x/b  X.. ... ...
x/c  X.. ... ...
y/a  X.. ... ...
y/b  ... ... ...
y/c  ... ... ...
z/a  X.. ... ...
z/b  ... ... ...
z/c  ... ... ...`,
          },
        ],
      },
    ],
  },
  {
    name: "should enforce policy based on any PodSelectors",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("x-a-any", {
              podSelector: podA,
              ingress: [{ from: [{ podSelector: sel({ pod: "b" }) }, { podSelector: sel({ pod: "c" }) }] }],
            }),
          ),
        probes: [
          {
            port: 80,
            grid: `
x/a  ... ... ...
x/b  ... ... ...
x/c  ... ... ...
y/a  X.. ... ...
y/b  X.. ... ...
y/c  X.. ... ...
z/a  X.. ... ...
z/b  X.. ... ...
z/c  X.. ... ...`,
          },
        ],
      },
    ],
  },
  {
    name: "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector (TCP, UDP, SCTP)",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("x-a-from-y-a", {
              podSelector: podA,
              ingress: [{ from: [{ namespaceSelector: sel({ ns: "y" }), podSelector: podA }] }],
            }),
          ),
        probes: [
          { port: 80, grid: XA_ONLY_FROM_YA },
          { port: 80, proto: "UDP", grid: XA_ONLY_FROM_YA },
          { port: 80, proto: "SCTP", grid: XA_ONLY_FROM_YA },
        ],
      },
    ],
  },
  ...(["TCP", "UDP", "SCTP"] as const).map(
    (proto): Scenario => ({
      name: `should enforce policy based on Ports (${proto})`,
      steps: [
        {
          action: (m) =>
            m.policy(
              inX("x-a-81-from-y", {
                podSelector: podA,
                ingress: [
                  { from: [{ namespaceSelector: sel({ ns: "y" }) }], ports: [{ port: 81, protocol: proto }] },
                ],
              }),
            ),
          probes: [
            { port: 81, proto, grid: XA_ONLY_FROM_Y },
            { port: 80, proto, grid: XA_INGRESS_DENIED },
          ],
        },
      ],
    }),
  ),
  {
    name: "should enforce multiple, stacked policies with overlapping podSelectors",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("x-a-81-from-y", {
              podSelector: podA,
              ingress: [{ from: [{ namespaceSelector: sel({ ns: "y" }) }], ports: [tcp(81)] }],
            }),
          ),
        probes: [
          { port: 81, grid: XA_ONLY_FROM_Y },
          { port: 80, grid: XA_INGRESS_DENIED },
        ],
      },
      {
        action: (m) =>
          m.policy(
            inX("x-a-80-from-y", {
              podSelector: podA,
              ingress: [{ from: [{ namespaceSelector: sel({ ns: "y" }) }], ports: [tcp(80)] }],
            }),
          ),
        probes: [
          { port: 81, grid: XA_ONLY_FROM_Y },
          { port: 80, grid: XA_ONLY_FROM_Y },
        ],
      },
    ],
  },
  {
    name: "should support allow-all policy",
    steps: [
      {
        action: (m) => m.policy(inX("allow-all", { podSelector: {}, ingress: [{}] })),
        probes: [
          { port: 80, grid: ALL },
          { port: 81, grid: ALL },
        ],
      },
    ],
  },
  {
    name: "should allow ingress access on one named port",
    steps: [
      {
        action: (m) =>
          m.policy(inX("allow-81", { podSelector: {}, ingress: [{ ports: [{ port: "serve-81-tcp" }] }] })),
        probes: [
          { port: 81, grid: ALL },
          { port: 80, grid: X_INGRESS_DENIED },
        ],
      },
    ],
  },
  {
    name: "should allow ingress access from namespace on one named port",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("allow-80-from-y", {
              podSelector: {},
              ingress: [
                { from: [{ namespaceSelector: sel({ ns: "y" }) }], ports: [{ port: "serve-80-tcp" }] },
              ],
            }),
          ),
        probes: [
          { port: 80, grid: X_ONLY_FROM_Y },
          { port: 81, grid: X_INGRESS_DENIED },
        ],
      },
    ],
  },
  {
    name: "should allow egress access on one named port",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("allow-egress-80", {
              podSelector: {},
              policyTypes: ["Egress"],
              egress: [{ ports: [{ port: "serve-80-tcp" }] }, { ports: [{ port: 53, protocol: "UDP" }] }],
            }),
          ),
        probes: [
          { port: 80, grid: ALL },
          { port: 81, grid: X_EGRESS_DENIED },
        ],
      },
    ],
  },
  {
    name: "should enforce updated policy",
    steps: [
      {
        action: (m) => m.policy(inX("allow-all-mutate-to-deny-all", { podSelector: {}, ingress: [{}] })),
        probes: [{ port: 81, grid: ALL }],
      },
      {
        action: (m) => m.policy(inX("allow-all-mutate-to-deny-all", { podSelector: {}, ingress: [] })),
        probes: [{ port: 81, grid: X_INGRESS_DENIED }],
      },
    ],
  },
  {
    name: "should allow ingress access from updated namespace",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("allow-ns2-updated", {
              podSelector: podA,
              ingress: [{ from: [{ namespaceSelector: sel({ ns2: "updated" }) }] }],
            }),
          ),
        probes: [{ port: 80, grid: XA_INGRESS_DENIED }],
      },
      {
        action: (m) => m.labelNs("y", { ns: "y", ns2: "updated" }),
        probes: [{ port: 80, grid: XA_ONLY_FROM_Y }],
      },
      { action: (m) => m.labelNs("y", { ns: "y" }), probes: [{ port: 80, grid: XA_INGRESS_DENIED }] },
    ],
  },
  {
    name: "should allow ingress access from updated pod",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("allow-pod2-updated", {
              podSelector: podA,
              ingress: [{ from: [{ podSelector: sel({ pod: "b", pod2: "updated" }) }] }],
            }),
          ),
        probes: [{ port: 80, grid: XA_INGRESS_DENIED }],
      },
      {
        action: (m) => m.labelPod("x/b", { pod: "b", pod2: "updated" }),
        probes: [{ port: 80, grid: XA_ONLY_FROM_XB }],
      },
    ],
  },
  {
    name: "should deny ingress from pods on other namespaces",
    steps: [
      {
        action: (m) =>
          m.policy(inX("deny-other-ns", { podSelector: {}, ingress: [{ from: [{ podSelector: {} }] }] })),
        probes: [
          {
            port: 80,
            grid: `
x/a  ... ... ...
x/b  ... ... ...
x/c  ... ... ...
y/a  XXX ... ...
y/b  XXX ... ...
y/c  XXX ... ...
z/a  XXX ... ...
z/b  XXX ... ...
z/c  XXX ... ...`,
          },
        ],
      },
    ],
  },
  {
    name: "should deny ingress access to updated pod",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("deny-to-isolated", { podSelector: sel({ target: "isolated" }), policyTypes: ["Ingress"] }),
          ),
        probes: [{ port: 80, grid: ALL }],
      },
      {
        action: (m) => m.labelPod("x/a", { pod: "a", target: "isolated" }),
        probes: [{ port: 80, grid: XA_INGRESS_DENIED }],
      },
    ],
  },
  {
    name: "should deny egress from pods based on PodSelector",
    steps: [
      {
        action: (m) => m.policy(inX("deny-egress-a", { podSelector: podA, policyTypes: ["Egress"] })),
        probes: [{ port: 80, grid: XA_EGRESS_DENIED }],
      },
    ],
  },
  {
    name: "should deny egress from all pods in a namespace",
    steps: [
      {
        action: (m) => m.policy(inX("deny-egress-ns", { podSelector: {}, policyTypes: ["Egress"] })),
        probes: [{ port: 80, grid: X_EGRESS_DENIED }],
      },
    ],
  },
  {
    name: "should work with Ingress, Egress specified together",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("x-a-in-and-out", {
              podSelector: podA,
              ingress: [{ from: [{ podSelector: sel({ pod: "b" }) }] }],
              egress: [{ ports: [{ port: 53, protocol: "UDP" }] }],
            }),
          ),
        probes: [80, 81].map((port) => ({
          port,
          grid: `
x/a  .XX XXX XXX
x/b  ... ... ...
x/c  X.. ... ...
y/a  X.. ... ...
y/b  X.. ... ...
y/c  X.. ... ...
z/a  X.. ... ...
z/b  X.. ... ...
z/c  X.. ... ...`,
        })),
      },
    ],
  },
  {
    name: "should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("x-a-to-y-a", {
              podSelector: podA,
              policyTypes: ["Egress"],
              egress: [{ to: [{ namespaceSelector: sel({ ns: "y" }), podSelector: podA }] }],
            }),
          ),
        probes: [
          {
            port: 80,
            grid: `
x/a  .XX .XX XXX
x/b  ... ... ...
x/c  ... ... ...
y/a  ... ... ...
y/b  ... ... ...
y/c  ... ... ...
z/a  ... ... ...
z/b  ... ... ...
z/c  ... ... ...`,
          },
        ],
      },
    ],
  },
  {
    name: "egress deny on the client wins even when the server allows all ingress",
    steps: [
      {
        action: (m) => {
          m.policy(inX("deny-egress-a", { podSelector: podA, policyTypes: ["Egress"] }));
          m.policy(mkPolicy("y", "allow-all-to-a", { podSelector: podA, ingress: [{}] }));
        },
        probes: [{ port: 80, grid: XA_EGRESS_DENIED }],
      },
    ],
  },
  {
    name: "should enforce ingress policy allowing any port traffic to a server on a specific protocol",
    steps: [
      {
        action: (m) =>
          m.policy(inX("x-a-tcp-only", { podSelector: podA, ingress: [{ ports: [{ protocol: "TCP" }] }] })),
        probes: [
          { port: 80, grid: ALL },
          { port: 81, grid: ALL },
          { port: 80, proto: "UDP", grid: XA_INGRESS_DENIED },
        ],
      },
    ],
  },
  {
    name: "should enforce multiple ingress policies with ingress allow-all policy taking precedence",
    steps: [
      {
        action: (m) => m.policy(inX("x-a-80", { podSelector: podA, ingress: [{ ports: [tcp(80)] }] })),
        probes: [
          { port: 81, grid: XA_INGRESS_DENIED },
          { port: 80, grid: ALL },
        ],
      },
      {
        action: (m) => m.policy(inX("x-a-all", { podSelector: podA, ingress: [{}] })),
        probes: [{ port: 81, grid: ALL }],
      },
    ],
  },
  {
    name: "should enforce multiple egress policies with egress allow-all policy taking precedence",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("x-a-egress-80", {
              podSelector: podA,
              policyTypes: ["Egress"],
              egress: [{ ports: [tcp(80)] }],
            }),
          ),
        probes: [
          { port: 81, grid: XA_EGRESS_DENIED },
          { port: 80, grid: ALL },
        ],
      },
      {
        action: (m) =>
          m.policy(inX("x-a-egress-all", { podSelector: podA, policyTypes: ["Egress"], egress: [{}] })),
        probes: [{ port: 81, grid: ALL }],
      },
    ],
  },
  {
    name: "should stop enforcing policies after they are deleted",
    steps: [
      {
        action: (m) => m.policy(inX("deny-all", { podSelector: {}, policyTypes: ["Ingress", "Egress"] })),
        probes: [{ port: 80, proto: "UDP", grid: X_DENY_ALL }],
      },
      {
        action: (m) => m.apply({ kind: "policyDelete", namespace: "x", name: "deny-all" }),
        probes: [{ port: 80, grid: ALL }],
      },
    ],
  },
  {
    name: "should allow egress access to server in CIDR block (pod IP /32)",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("x-a-to-y-b-cidr", {
              podSelector: podA,
              policyTypes: ["Egress"],
              egress: [{ to: [{ ipBlock: { cidr: m.host("y/b") } }] }],
            }),
          ),
        probes: [
          {
            port: 80,
            grid: `
x/a  .XX X.X XXX
x/b  ... ... ...
x/c  ... ... ...
y/a  ... ... ...
y/b  ... ... ...
y/c  ... ... ...
z/a  ... ... ...
z/b  ... ... ...
z/c  ... ... ...`,
          },
        ],
      },
    ],
  },
  {
    name: "should enforce except clause while egress access to server in CIDR block, and allow an IP overlapping both CIDR and except via a second policy",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("x-a-cidr-except", {
              podSelector: podA,
              policyTypes: ["Egress"],
              egress: [{ to: [{ ipBlock: { cidr: m.podCIDR, except: [m.host("x/b")] } }] }],
            }),
          ),
        probes: [
          {
            port: 80,
            grid: `
x/a  .X. ... ...
x/b  ... ... ...
x/c  ... ... ...
y/a  ... ... ...
y/b  ... ... ...
y/c  ... ... ...
z/a  ... ... ...
z/b  ... ... ...
z/c  ... ... ...`,
          },
        ],
      },
      {
        action: (m) =>
          m.policy(
            inX("x-a-to-x-b", {
              podSelector: podA,
              policyTypes: ["Egress"],
              egress: [{ to: [{ ipBlock: { cidr: m.host("x/b") } }] }],
            }),
          ),
        probes: [{ port: 80, grid: ALL }],
      },
    ],
  },
  {
    name: "should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector",
    steps: [
      {
        action: (m) =>
          m.policy(inX("allow-egress-a", { podSelector: podA, policyTypes: ["Egress"], egress: [{}] })),
        probes: [{ port: 80, grid: ALL }],
      },
      {
        action: (m) =>
          m.policy(inX("deny-ingress-b", { podSelector: sel({ pod: "b" }), policyTypes: ["Ingress"] })),
        probes: [
          {
            port: 80,
            grid: `
x/a  .X. ... ...
x/b  ... ... ...
x/c  .X. ... ...
y/a  .X. ... ...
y/b  .X. ... ...
y/c  .X. ... ...
z/a  .X. ... ...
z/b  .X. ... ...
z/c  .X. ... ...`,
          },
        ],
      },
    ],
  },
  {
    name: "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP'",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("sctp-80", { podSelector: podA, ingress: [{ ports: [{ port: 80, protocol: "SCTP" }] }] }),
          ),
        probes: [
          { port: 80, grid: XA_INGRESS_DENIED },
          { port: 80, proto: "SCTP", grid: ALL },
        ],
      },
    ],
  },
  {
    name: "should properly isolate pods that are selected by a policy allowing SCTP",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("sctp-81", { podSelector: podA, ingress: [{ ports: [{ port: 81, protocol: "SCTP" }] }] }),
          ),
        probes: [
          { port: 80, grid: XA_INGRESS_DENIED },
          { port: 81, grid: XA_INGRESS_DENIED },
          { port: 81, proto: "SCTP", grid: ALL },
        ],
      },
    ],
  },
  {
    name: "should not allow access by TCP when a policy specifies only UDP",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("udp-81", { podSelector: podA, ingress: [{ ports: [{ port: 81, protocol: "UDP" }] }] }),
          ),
        probes: [
          { port: 81, grid: XA_INGRESS_DENIED },
          { port: 81, proto: "UDP", grid: ALL },
        ],
      },
    ],
  },
  {
    name: "should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("allow-y-by-name", {
              podSelector: {},
              ingress: [{ from: [{ namespaceSelector: sel({ "kubernetes.io/metadata.name": "y" }) }] }],
            }),
          ),
        probes: [{ port: 80, grid: X_ONLY_FROM_Y }],
      },
    ],
  },
  {
    name: "should enforce policy based on NamespaceSelector with MatchExpressions using default ns label (egress NotIn)",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("x-a-not-to-y", {
              podSelector: podA,
              policyTypes: ["Egress"],
              egress: [
                {
                  to: [
                    {
                      namespaceSelector: {
                        matchExpressions: [
                          { key: "kubernetes.io/metadata.name", operator: "NotIn", values: ["y"] },
                        ],
                      },
                    },
                  ],
                },
              ],
            }),
          ),
        probes: [
          {
            port: 80,
            grid: `
x/a  ... XXX ...
x/b  ... ... ...
x/c  ... ... ...
y/a  ... ... ...
y/b  ... ... ...
y/c  ... ... ...
z/a  ... ... ...
z/b  ... ... ...
z/c  ... ... ...`,
          },
        ],
      },
    ],
  },
  {
    name: "pod relabelled out of an allowed peer loses access, relabelled into a target gets isolated",
    steps: [
      {
        action: (m) =>
          m.policy(
            inX("x-a-from-b", {
              podSelector: podA,
              ingress: [{ from: [{ podSelector: sel({ pod: "b" }) }] }],
            }),
          ),
        probes: [{ port: 80, grid: XA_ONLY_FROM_XB }],
      },
      { action: (m) => m.labelPod("x/b", { pod: "b2" }), probes: [{ port: 80, grid: XA_INGRESS_DENIED }] },
      {
        action: (m) => {
          m.labelPod("x/b", { pod: "b" });
          m.labelPod("x/a", { pod: "a-moved" });
        },
        probes: [{ port: 80, grid: ALL }],
      },
    ],
  },
];

describe("upstream x/y/z model", () => {
  for (const family of [4, 6] as const) {
    describe(`IPv${family}`, () => {
      for (const sc of scenarios) {
        it(sc.name, () => {
          const m = new Model(family);
          sc.steps.forEach((step, i) => {
            step.action?.(m);
            for (const probe of step.probes) {
              const proto = probe.proto ?? "TCP";
              const expected = normalizeGrid(probe.grid);
              const where = `step ${i + 1}, ${probe.port}/${proto}`;
              expect(m.grid(probe.port, proto, false), `engine, ${where}`).toBe(expected);
              expect(m.grid(probe.port, proto, true), `plain evaluator, ${where}`).toBe(expected);
            }
          });
        });
      }
    });
  }
});
