/**
 * `podwall diff` as a CI gate runs it: the JSON shape the issue fixes, the table, and the exit
 * status (0 nothing changes, 1 something changes, 2 bad input, with one clear line naming file,
 * object and field and no stack trace).
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const CLI = join(import.meta.dirname, "..", "dist", "cli", "main.js");
const DEMO = join(import.meta.dirname, "..", "examples", "demo");

function podwall(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8" });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const DIR = mkdtempSync(join(tmpdir(), `pw-diff-${process.pid}-`));
function file(name: string, text: string): string {
  const f = join(DIR, name);
  writeFileSync(f, text);
  return f;
}

const BASE = file(
  "base.yaml",
  `
apiVersion: v1
kind: Namespace
metadata: { name: a }
---
apiVersion: v1
kind: Pod
metadata: { name: web, namespace: a, labels: { app: web } }
spec: { containers: [{ name: c, image: i, ports: [{ name: http, containerPort: 80 }] }] }
status: { phase: Running, podIP: 10.0.0.1 }
---
apiVersion: v1
kind: Pod
metadata: { name: db, namespace: a, labels: { app: db } }
spec: { containers: [{ name: c, image: i, ports: [{ name: pg, containerPort: 5432 }] }] }
status: { phase: Running, podIP: 10.0.0.2 }
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: b, labels: { app: client } }
status: { phase: Running, podIP: 10.0.1.1 }
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: db-from-web, namespace: a }
spec:
  podSelector: { matchLabels: { app: db } }
  ingress: [{ from: [{ podSelector: { matchLabels: { app: web } } }], ports: [{ port: pg }] }]
`,
);

const OPEN_TO_B = file(
  "open.yaml",
  `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: db-from-web, namespace: a }
spec:
  podSelector: { matchLabels: { app: db } }
  ingress:
  - from:
    - podSelector: { matchLabels: { app: web } }
    - namespaceSelector: { matchLabels: { kubernetes.io/metadata.name: b } }
    ports: [{ port: pg }]
`,
);

describe("podwall diff", () => {
  it("-o json: exactly the issue's shape, each change with both reasons; exit 1", () => {
    const r = podwall("diff", "-f", BASE, "--apply", OPEN_TO_B, "-o", "json");
    expect(r.code, r.err).toBe(1);
    const out = JSON.parse(r.out);
    expect(out).toMatchObject({ opened: 1, closed: 0, podsAdded: [], podsRemoved: [] });
    expect(out.changes).toEqual([
      {
        from: "b/client",
        to: "a/db",
        port: 5432,
        protocol: "TCP",
        before: false,
        after: true,
        reasonBefore:
          "denied: egress not isolated; ingress denied: NetworkPolicy default deny (isolated by a/db-from-web)",
        reasonAfter:
          "allowed: egress not isolated; ingress allowed by NetworkPolicy a/db-from-web, ingress rule 0",
      },
    ]);
    expect(out.cellsCompared).toBe(3 * 3 * 2);
  });

  it("the table names each change and both reasons", () => {
    const r = podwall("diff", "-f", BASE, "--apply", OPEN_TO_B);
    expect(r.code).toBe(1);
    expect(r.out).toContain(
      "podwall diff: 1 opened, 0 closed (of 18 cells compared: 3 pods, ports 80/TCP, 5432/TCP)",
    );
    expect(r.out).toContain("OPENED 5432/TCP  b/client -> a/db");
    expect(r.out).toMatch(/before: denied: .*default deny/);
    expect(r.out).toMatch(/after: {2}allowed: .*ingress rule 0/);
  });

  it("no change (the same object applied again, or an unchanged port): exit 0", () => {
    const same = podwall("diff", "-f", BASE, "--apply", BASE);
    expect(same.code, same.err).toBe(0);
    expect(same.out).toMatch(/^podwall diff: no cell changes \(18 cells compared/);
    const port = podwall("diff", "-f", BASE, "--apply", OPEN_TO_B, "--port", "80/TCP", "-o", "json");
    expect(port.code).toBe(0);
    expect(JSON.parse(port.out)).toMatchObject({ changes: [], opened: 0, closed: 0, ports: ["80/TCP"] });
  });

  it("--delete: a policy (cells open), a pod (it disappears: exit 1), a namespace with its contents", () => {
    const pol = podwall("diff", "-f", BASE, "--delete", "NetworkPolicy/a/db-from-web", "-o", "json");
    expect(pol.code).toBe(1);
    // db is no longer isolated: web may use port 80 too, and client both ports.
    expect(JSON.parse(pol.out)).toMatchObject({ opened: 3, closed: 0 });
    const pod = podwall("diff", "-f", BASE, "--delete", "pod/b/client", "-o", "json");
    expect(pod.code).toBe(1);
    expect(JSON.parse(pod.out)).toMatchObject({ changes: [], podsRemoved: ["b/client"] });
    const ns = podwall("diff", "-f", DEMO, "--delete", "Namespace/shop", "-o", "json");
    expect(ns.code).toBe(1);
    expect(JSON.parse(ns.out).podsRemoved).toEqual(["shop/backend", "shop/db", "shop/frontend"]);
  });

  it("--apply of a Pod with new labels and of a ClusterNetworkPolicy", () => {
    const relabel = file(
      "relabel.yaml",
      `
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: b, labels: { app: web } }
status: { phase: Running, podIP: 10.0.1.1 }
`,
    );
    const r = podwall("diff", "-f", BASE, "--apply", relabel, "-o", "json");
    expect(r.code).toBe(0); // db-from-web selects app=web in namespace a only: nothing changes
    const cnp = file(
      "cnp.yaml",
      `
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: { name: no-web-egress }
spec:
  tier: Admin
  priority: 5
  subject: { pods: { namespaceSelector: {}, podSelector: { matchLabels: { app: web } } } }
  egress: [{ name: block, action: Deny, to: [{ networks: ["10.0.0.0/24"] }] }]
`,
    );
    const c = podwall("diff", "-f", BASE, "--apply", cnp, "-o", "json");
    expect(c.code, c.err).toBe(1);
    const out = JSON.parse(c.out);
    // web -> db on 80 was denied already (db admits web on pg only).
    expect(
      out.changes.map((x: { from: string; to: string; port: number }) => `${x.from}->${x.to}:${x.port}`),
    ).toEqual(["a/web->a/db:5432"]);
    expect(out.changes[0].reasonAfter).toBe(
      "denied: egress denied by ClusterNetworkPolicy no-web-egress (Admin, priority 5), egress rule 0 'block' (deny); ingress allowed by NetworkPolicy a/db-from-web, ingress rule 0",
    );
  });

  it("bad input exits 2 with one line naming what is wrong", () => {
    const bad = file(
      "bad.yaml",
      `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: broken, namespace: a }
spec:
  podSelector: {}
  ingress: [{ from: [{ ipBlock: { cidr: 10.0.0.0/33 } }] }]
`,
    );
    const cases: [string[], RegExp][] = [
      [
        ["--apply", bad],
        /bad\.yaml:\d+: NetworkPolicy a\/broken: spec\.ingress\[0\]\.from\[0\]\.ipBlock\.cidr/,
      ],
      [["--apply", join(DIR, "missing.yaml")], /missing\.yaml: cannot read: ENOENT/],
      [["--delete", "Pod/a/nope"], /--delete Pod\/a\/nope: no such object in the base/],
      [["--delete", "Deployment/a/x"], /unknown kind "Deployment"/],
      [["--delete", "Pod/db"], /a Pod is named Pod\/namespace\/name/],
      [
        ["--delete", "ClusterNetworkPolicy/x/y"],
        /a ClusterNetworkPolicy is named ClusterNetworkPolicy\/name/,
      ],
      [[], /nothing to compare/],
      [["--apply", OPEN_TO_B, "-o", "yaml"], /-o must be table, json or html/],
      [["--apply", OPEN_TO_B, "--port", "99999"], /--port: port 99999 out of range/],
      [["--apply", OPEN_TO_B, "--kubeconfig", BASE], /either -f PATH or --kubeconfig FILE, not both/],
    ];
    for (const [args, msg] of cases) {
      const r = podwall("diff", "-f", BASE, ...args);
      expect(r.code, `${args.join(" ")}: ${r.err}`).toBe(2);
      expect(r.err, args.join(" ")).toMatch(msg);
      expect(r.err).not.toMatch(/\n\s+at /);
      expect(r.out).toBe("");
    }
    const noBase = podwall("diff", "--apply", OPEN_TO_B);
    expect(noBase.code).toBe(2);
    expect(noBase.err).toMatch(/give the cluster: -f PATH \(manifests\) or --kubeconfig FILE/);
  });
});
