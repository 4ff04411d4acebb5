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

  it("probes /healthz and /readyz on the metrics port, gets NODE_NAME, runs on the host network", () => {
    const port = Number(
      c.args
        .find((a: string) => a.startsWith("--metrics-addr"))
        .split(":")
        .pop(),
    );
    expect(c.livenessProbe.httpGet).toMatchObject({ path: "/healthz", port });
    expect(c.readinessProbe.httpGet).toMatchObject({ path: "/readyz", port });
    expect(c.env.find((e: { name: string }) => e.name === "NODE_NAME").valueFrom.fieldRef.fieldPath).toBe(
      "spec.nodeName",
    );
    expect(ds.spec.template.spec.hostNetwork).toBe(true);
    expect(c.securityContext.capabilities.add).toContain("NET_ADMIN");
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
    const arg = (list: string[], flag: string) => list.find((a) => a.startsWith(`${flag}=`))?.split("=")[1];
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
  it("installs the kernel tools and runs the built CLI", () => {
    const d = readFileSync(join(ROOT, "Dockerfile"), "utf8");
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
    expect(d).toMatch(/FROM node:20/);
    expect(d).toMatch(/gcc .*-static -o cni\/podwall-cni cni\/podwall-cni\.c/);
    expect(d).toContain("COPY --from=build /src/cni/podwall-cni ./cni/podwall-cni");
  });
});
