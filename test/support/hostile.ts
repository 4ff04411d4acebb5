/**
 * hostile: generated hostile input for the hostile-input suites: valid base objects of every kind
 * podwall reads, a list of hostile values (every JSON type, inherited-property names, injection text,
 * odd encodings), and every path into an object, so each field can get each value.
 */

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

export const NP: Json = {
  apiVersion: "networking.k8s.io/v1",
  kind: "NetworkPolicy",
  metadata: { name: "p", namespace: "x", labels: { app: "a" } },
  spec: {
    podSelector: {
      matchLabels: { app: "b" },
      matchExpressions: [{ key: "k", operator: "In", values: ["v"] }],
    },
    policyTypes: ["Ingress", "Egress"],
    ingress: [
      {
        from: [
          { podSelector: { matchLabels: { app: "a" } }, namespaceSelector: {} },
          { ipBlock: { cidr: "10.0.0.0/8", except: ["10.1.0.0/16"] } },
        ],
        ports: [{ protocol: "TCP", port: 80, endPort: 90 }, { port: "http" }],
      },
    ],
    egress: [{ to: [{ podSelector: {} }], ports: [{ protocol: "UDP", port: 53 }] }],
  },
};

export const CNP: Json = {
  apiVersion: "policy.networking.k8s.io/v1alpha2",
  kind: "ClusterNetworkPolicy",
  metadata: { name: "guard" },
  spec: {
    tier: "Admin",
    priority: 10,
    subject: { pods: { namespaceSelector: {}, podSelector: { matchLabels: { app: "b" } } } },
    ingress: [{ name: "r", action: "Deny", from: [{ namespaces: { matchLabels: { t: "dev" } } }] }],
    egress: [
      {
        action: "Accept",
        to: [{ networks: ["10.0.0.0/8"] }, { nodes: { matchLabels: { r: "x" } } }],
        protocols: [
          { tcp: { destinationPort: { number: 443 } } },
          { udp: { destinationPort: { range: { start: 5, end: 9 } } } },
        ],
      },
    ],
  },
};

export const POD: Json = {
  apiVersion: "v1",
  kind: "Pod",
  metadata: { name: "b", namespace: "x", labels: { app: "b" } },
  spec: {
    nodeName: "n1",
    hostNetwork: false,
    containers: [{ name: "c", ports: [{ name: "http", containerPort: 80, protocol: "TCP" }] }],
  },
  status: {
    phase: "Running",
    podIP: "10.0.0.2",
    podIPs: [{ ip: "10.0.0.2" }],
    hostIPs: [{ ip: "10.9.0.1" }],
  },
};

export const NS: Json = {
  apiVersion: "v1",
  kind: "Namespace",
  metadata: { name: "x", labels: { t: "dev" } },
};

/** Replacement values: every JSON type, inherited-property names, injection text, odd encodings. */
export const HOSTILE: Json[] = [
  null,
  true,
  0,
  -1,
  1.5,
  1e9,
  "",
  "constructor",
  "__proto__",
  "toString",
  "x\n-I PODWALL-FORWARD 1 -j ACCEPT\n#",
  'a"b',
  "é",
  "\u0000",
  "a".repeat(300),
  [],
  [null],
  {},
  { constructor: 1 },
];

/** Every path to a value in `v`, as key lists. */
export function paths(v: Json, prefix: (string | number)[] = []): (string | number)[][] {
  const out: (string | number)[][] = [prefix];
  if (Array.isArray(v)) for (const [i, x] of v.entries()) out.push(...paths(x, [...prefix, i]));
  else if (v !== null && typeof v === "object")
    for (const [k, x] of Object.entries(v)) out.push(...paths(x, [...prefix, k]));
  return out;
}

export function replaced(v: Json, path: (string | number)[], with_: Json): Json {
  if (path.length === 0) return with_;
  const copy: Json = structuredClone(v);
  let cur = copy as Record<string | number, Json>;
  for (const k of path.slice(0, -1)) cur = cur[k] as Record<string | number, Json>;
  cur[path[path.length - 1]] = with_;
  return copy;
}

/** Every (base object, path, hostile value) variant, in a stable order. */
export function* hostileVariants(): Generator<{ kind: string; path: string; value: Json; obj: Json }> {
  for (const [kind, base] of [
    ["NetworkPolicy", NP],
    ["ClusterNetworkPolicy", CNP],
    ["Pod", POD],
    ["Namespace", NS],
  ] as const) {
    for (const p of paths(base).slice(1))
      for (const value of HOSTILE) yield { kind, path: p.join("."), value, obj: replaced(base, p, value) };
  }
}
