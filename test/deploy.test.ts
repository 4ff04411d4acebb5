/**
 * The shipped manifests and image recipe agree with the code: every agent flag the DaemonSet passes
 * exists, probes hit the endpoints the agent serves, RBAC covers what the Kubernetes source watches.
 * (kind itself needs Docker, which this machine lacks; see the README.)
 */
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";

const ROOT = join(import.meta.dirname, "..");
const docs = parseAllDocuments(readFileSync(join(ROOT, "deploy/kind/podwall.yaml"), "utf8")).map((d) =>
  d.toJS(),
);

describe("deploy/kind/podwall.yaml", () => {
  const ds = docs.find((d) => d.kind === "DaemonSet");
  const c = ds.spec.template.spec.containers[0];

  it("passes only flags `podwall agent` accepts", () => {
    const help = spawnSync(process.execPath, [join(ROOT, "dist/cli/main.js"), "agent", "--help"], {
      encoding: "utf8",
    }).stdout;
    expect(c.args[0]).toBe("agent");
    for (const a of c.args.slice(1)) expect(help).toContain(a.split("=")[0]);
  });

  const argOf = (list: string[], flag: string) => list.find((a) => a.startsWith(`${flag}=`))?.split("=")[1];
  const hostPort = (addr: string) => {
    const i = addr.lastIndexOf(":");
    return { host: addr.slice(0, i), port: Number(addr.slice(i + 1)) };
  };

  it("probes /healthz and /readyz on the node's loopback, gets NODE_NAME, runs on the host network", () => {
    const health = hostPort(argOf(c.args, "--health-addr")!);
    expect(health.host).toBe("127.0.0.1");
    expect(c.livenessProbe.httpGet).toEqual({ path: "/healthz", port: health.port, host: "127.0.0.1" });
    expect(c.readinessProbe.httpGet).toEqual({ path: "/readyz", port: health.port, host: "127.0.0.1" });
    expect(c.env.find((e: { name: string }) => e.name === "NODE_NAME").valueFrom.fieldRef.fieldPath).toBe(
      "spec.nodeName",
    );
    expect(ds.spec.template.spec.hostNetwork).toBe(true);
  });

  it("serves /metrics on the node's own address only (never every address), where Prometheus is told", () => {
    const metrics = hostPort(argOf(c.args, "--metrics-addr")!);
    expect(metrics.host).toBe("$(POD_IP)");
    expect(c.env.find((e: { name: string }) => e.name === "POD_IP").valueFrom.fieldRef.fieldPath).toBe(
      "status.podIP",
    );
    expect(ds.spec.template.metadata.annotations["prometheus.io/port"]).toBe(String(metrics.port));
    expect(metrics.port).not.toBe(hostPort(argOf(c.args, "--health-addr")!).port);
    // The agent's own default keeps it node-local.
    const help = spawnSync(process.execPath, [join(ROOT, "dist/cli/main.js"), "agent", "--help"], {
      encoding: "utf8",
    }).stdout.replace(/\s+/g, " ");
    expect(help).toMatch(/--metrics-addr <host:port> .*\(default: "127\.0\.0\.1:9472"\)/);
  });

  it("runs the agent with NET_ADMIN and NET_RAW only, no privilege escalation, a read-only root, seccomp", () => {
    expect(c.securityContext).toEqual({
      privileged: false,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ["ALL"], add: ["NET_ADMIN", "NET_RAW"] },
    });
    expect(ds.spec.template.spec.securityContext.seccompProfile).toEqual({ type: "RuntimeDefault" });
    // Writable: the CNI socket directory, the CNI configuration, the iptables lock; nothing else.
    expect(c.volumeMounts.map((m: { mountPath: string }) => m.mountPath).sort()).toEqual([
      "/host/etc/cni/net.d",
      "/run/podwall",
      "/run/xtables.lock",
    ]);
    const init = ds.spec.template.spec.initContainers.find((i: { name: string }) => i.name === "install-cni");
    expect(init.securityContext).toEqual({
      privileged: false,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ["ALL"] },
    });
  });

  it("sets a memory limit well above the measured peak (390 MiB on Node.js 24 under a pod-event flood)", () => {
    const mib = (q: string) => {
      const m = /^(\d+)(Mi|Gi)$/.exec(q)!;
      return Number(m[1]) * (m[2] === "Gi" ? 1024 : 1);
    };
    const { requests, limits } = c.resources;
    expect(mib(limits.memory)).toBeGreaterThanOrEqual(390 * 1.5);
    expect(mib(requests.memory)).toBeGreaterThanOrEqual(200);
    expect(mib(requests.memory)).toBeLessThanOrEqual(mib(limits.memory));
  });

  it("grants list/watch on everything the agent watches", () => {
    const role = docs.find((d) => d.kind === "ClusterRole");
    const can = (group: string, res: string) =>
      role.rules.some(
        (r: { apiGroups: string[]; resources: string[]; verbs: string[] }) =>
          r.apiGroups.includes(group) &&
          r.resources.includes(res) &&
          r.verbs.includes("watch") &&
          r.verbs.includes("list"),
      );
    expect([
      can("", "pods"),
      can("", "namespaces"),
      can("", "nodes"),
      can("networking.k8s.io", "networkpolicies"),
    ]).toEqual([true, true, true, true]);
  });

  it("installs the chained CNI plugin where the agent's socket and the node's CNI directories meet", () => {
    const init = ds.spec.template.spec.initContainers.find((i: { name: string }) => i.name === "install-cni");
    const help = spawnSync(process.execPath, [join(ROOT, "dist/cli/main.js"), "cni", "install", "--help"], {
      encoding: "utf8",
    }).stdout;
    expect(init.args.slice(0, 2)).toEqual(["cni", "install"]);
    for (const a of init.args.slice(2)) expect(help).toContain(a.split("=")[0]);
    const arg = argOf;
    const vols = ds.spec.template.spec.volumes as { name: string; hostPath: { path: string } }[];
    const hostPathOf = (mounts: { name: string; mountPath: string }[], dir: string) => {
      const m = mounts.find((x) => dir === x.mountPath || dir.startsWith(`${x.mountPath}/`));
      return m && `${vols.find((v) => v.name === m.name)!.hostPath.path}${dir.slice(m.mountPath.length)}`;
    };
    expect(hostPathOf(init.volumeMounts, arg(init.args, "--bin-dir")!)).toBe("/opt/cni/bin");
    expect(hostPathOf(init.volumeMounts, arg(init.args, "--conf-dir")!)).toBe("/etc/cni/net.d");
    // The plugin's default socket path, on the host, is where the agent listens.
    const plugin = readFileSync(join(ROOT, "cni/podwall-cni.c"), "utf8");
    const defaultSocket = /#define DEFAULT_SOCKET "([^"]+)"/.exec(plugin)![1];
    expect(hostPathOf(c.volumeMounts, arg(c.args, "--cni-socket")!)).toBe(defaultSocket);
    expect(hostPathOf(c.volumeMounts, arg(c.args, "--cni-conf-dir")!)).toBe("/etc/cni/net.d");
  });
});

describe("deploy/crds", () => {
  it("hold exactly what scripts/gen-crds.ts writes", async () => {
    const { crds, crdFileText } = await import("../scripts/gen-crds.js");
    expect(crds.length).toBe(3);
    for (const c of crds)
      expect(readFileSync(join(ROOT, "deploy/crds", c.file), "utf8")).toBe(crdFileText(c));
  });

  it("name kinds the ClusterRole lets the agent read", () => {
    const role = docs.find((d) => d.kind === "ClusterRole");
    for (const f of ["clusternetworkpolicies", "adminnetworkpolicies", "baselineadminnetworkpolicies"]) {
      const crd = parseAllDocuments(readFileSync(join(ROOT, "deploy/crds", `${f}.yaml`), "utf8"))[0].toJS();
      const rule = role.rules.find(
        (r: { apiGroups: string[]; resources: string[] }) =>
          r.apiGroups.includes(crd.spec.group) && r.resources.includes(crd.spec.names.plural),
      );
      expect([f, rule?.verbs]).toEqual([f, ["get", "list", "watch"]]);
    }
  });
});

describe("Dockerfile", () => {
  const d = readFileSync(join(ROOT, "Dockerfile"), "utf8");

  it("installs the kernel tools and runs the built CLI", () => {
    for (const pkg of [
      "iptables",
      "ipset",
      "conntrack",
      "libnetfilter-queue1",
      "libnetfilter-conntrack3",
      "iproute2",
    ])
      expect(d).toContain(pkg);
    expect(d).toContain('ENTRYPOINT ["node", "/app/dist/cli/main.js"]');
    expect(d).toContain("COPY --from=build /src/cni/podwall-cni ./cni/podwall-cni");
  });

  it("builds both stages on a supported Node.js LTS pinned by digest", () => {
    const base = /^ARG NODE_IMAGE=(\S+)$/m.exec(d)![1];
    expect(base).toMatch(/^node:(22|24)-[a-z-]+@sha256:[0-9a-f]{64}$/);
    const froms = d.split("\n").filter((l) => l.startsWith("FROM "));
    const ref = "$" + "{NODE_IMAGE}"; // the build argument, as the Dockerfile spells it
    expect(froms).toEqual([`FROM ${ref} AS build`, `FROM ${ref}`]);
  });

  it("builds the CNI plugin with its one recipe, the one the tests use", () => {
    expect(d).toContain("RUN sh cni/build.sh cni/podwall-cni");
    expect(d).not.toMatch(/gcc .*podwall-cni\.c/);
  });
});
