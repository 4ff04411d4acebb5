/**
 * e2e model clusters: the upstream x/y/z x a/b/c model and a few smaller clusters for named ports,
 * endPort edges, SCTP and IPv6, as Kubernetes objects (what manifests hold).
 */

export type Obj = Record<string, unknown>;

export function ns(name: string, labels: Record<string, string> = {}): Obj {
  return { apiVersion: "v1", kind: "Namespace", metadata: { name, labels } };
}

export function pod(
  namespace: string,
  name: string,
  ips: string[],
  labels: Record<string, string>,
  ports: { name?: string; containerPort: number; protocol?: string }[] = [],
): Obj {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace, labels },
    spec: { nodeName: "lab", containers: [{ name: "c", image: "agnhost", ports }] },
    status: { phase: "Running", podIP: ips[0], podIPs: ips.map((ip) => ({ ip })) },
  };
}

export function policy(namespace: string, name: string, spec: Obj): Obj {
  return { apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: { name, namespace }, spec };
}

export const sel = (labels: Record<string, string>) => ({ matchLabels: labels });

/** x, y, z with pods a, b, c; pods serve 80 and 81 on TCP and UDP, with upstream-style port names. */
export function xyzModel(): Obj[] {
  const out: Obj[] = [];
  const names = ["x", "y", "z"];
  names.forEach((n, i) => {
    out.push(ns(n, { ns: n }));
    ["a", "b", "c"].forEach((p, j) => {
      out.push(
        pod(n, p, [`10.77.${i}.${j + 10}`], { pod: p }, [
          { name: "serve-80-tcp", containerPort: 80 },
          { name: "serve-81-tcp", containerPort: 81 },
          { name: "serve-80-udp", containerPort: 80, protocol: "UDP" },
        ]),
      );
    });
  });
  return out;
}

export const IP = (nsName: string, p: string) =>
  `10.77.${["x", "y", "z"].indexOf(nsName)}.${["a", "b", "c"].indexOf(p) + 10}`;

/** Named ports mapped differently per pod, endPort edges, SCTP. */
export function portsModel(): Obj[] {
  const serve = (extra: { name?: string; containerPort: number; protocol?: string }[]) => [
    ...extra,
    ...[31999, 32000, 32768, 32769].map((p) => ({ containerPort: p })),
    { containerPort: 7000 },
    { containerPort: 7000, protocol: "SCTP" },
  ];
  return [
    ns("n", {}),
    pod(
      "n",
      "web1",
      ["10.78.0.1"],
      { app: "web" },
      serve([{ name: "http", containerPort: 8080 }, { containerPort: 9090 }]),
    ),
    pod(
      "n",
      "web2",
      ["10.78.0.2"],
      { app: "web" },
      serve([{ name: "http", containerPort: 9090 }, { containerPort: 8080 }]),
    ),
    pod(
      "n",
      "client",
      ["10.78.0.3"],
      { app: "client" },
      serve([{ containerPort: 8080 }, { containerPort: 9090 }]),
    ),
  ];
}

/** IPv6-first pods (dual-stack), so pod pairs talk over IPv6. */
export function v6Model(): Obj[] {
  return [
    ns("v6", {}),
    ns("other", {}),
    pod("v6", "a", ["fd00:79::a", "10.79.0.10"], { pod: "a" }, [
      { containerPort: 80 },
      { containerPort: 80, protocol: "UDP" },
    ]),
    pod("v6", "b", ["fd00:79::b", "10.79.0.11"], { pod: "b" }, [{ containerPort: 80 }]),
    pod("other", "c", ["fd00:79:1::c", "10.79.1.12"], { pod: "c" }, [{ containerPort: 80 }]),
  ];
}
