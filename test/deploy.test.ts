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
});

describe("Dockerfile", () => {
  it("installs the kernel tools and runs the built CLI", () => {
    const d = readFileSync(join(ROOT, "Dockerfile"), "utf8");
    for (const pkg of ["iptables", "ipset", "libnetfilter-queue1", "iproute2"]) expect(d).toContain(pkg);
    expect(d).toContain('ENTRYPOINT ["node", "/app/dist/cli/main.js"]');
    expect(d).toMatch(/FROM node:20/);
  });
});
