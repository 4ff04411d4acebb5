/**
 * The `podwall` command as operators run it: simulate/explain/render output shapes, and bad input
 * answered with one clear line naming file, object and field, exit code 2, no stack trace.
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

function manifest(text: string, name = "m.yaml"): string {
  const dir = mkdtempSync(join(tmpdir(), "pw-cli-"));
  const f = join(dir, name);
  writeFileSync(f, text);
  return f;
}

const POD = (ns: string, name: string, ip: string, labels = "{}") => `
apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: ${ns}, labels: ${labels} }
spec: { containers: [{ name: c, image: i, ports: [{ name: http, containerPort: 80 }] }] }
status: { phase: Running, podIP: ${ip} }
`;

describe("podwall simulate", () => {
  it("prints the JSON truth table in the documented shape", () => {
    const r = podwall("simulate", "-f", DEMO, "-o", "json");
    expect(r.code).toBe(0);
    const m = JSON.parse(r.out);
    expect(m.pods).toContain("shop/db");
    expect(m.ports).toEqual(["53/UDP", "80/TCP", "5432/TCP", "8080/TCP"]);
    expect(m.results).toHaveLength(6 * 6 * 4);
    const cell = (from: string, to: string, port: number) =>
      m.results.find(
        (x: { from: string; to: string; port: number }) => x.from === from && x.to === to && x.port === port,
      );
    expect(cell("dev/debug", "shop/db", 5432)).toMatchObject({
      allowed: false,
      egress: "denied",
      ingress: "denied",
      protocol: "TCP",
    });
    expect(cell("shop/frontend", "shop/backend", 8080)).toMatchObject({
      allowed: true,
      egress: "not-isolated",
      ingress: "allowed",
    });
    expect(cell("shop/backend", "shop/db", 5432)).toMatchObject({ allowed: true });
    expect(cell("shop/db", "shop/db", 5432)).toMatchObject({ allowed: true });
    expect(cell("monitoring/prometheus", "shop/db", 80)).toMatchObject({ allowed: true });
  });

  it("prints readable grids, one per port, and honours --port", () => {
    const r = podwall("simulate", "-f", DEMO, "--port", "5432/tcp");
    expect(r.code).toBe(0);
    expect(r.out).toContain("port 5432/TCP");
    expect(r.out).not.toContain("port 80/TCP");
    expect(r.out).toMatch(/dev\/debug\s+\.\s+X/);
  });

  it("reads kind: List and JSON, warns about other kinds, defaults missing namespaces", () => {
    const f = manifest(
      JSON.stringify({
        kind: "List",
        items: [
          {
            apiVersion: "v1",
            kind: "Pod",
            metadata: { name: "a", namespace: "q" },
            status: { podIP: "10.0.0.1" },
          },
          {
            apiVersion: "v1",
            kind: "Pod",
            metadata: { name: "b", namespace: "r" },
            status: { podIP: "10.0.0.2" },
          },
          { apiVersion: "v1", kind: "Service", metadata: { name: "s" } },
          {
            apiVersion: "networking.k8s.io/v1",
            kind: "NetworkPolicy",
            metadata: { name: "p", namespace: "q" },
            spec: {
              podSelector: {},
              ingress: [
                { from: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "r" } } }] },
              ],
            },
          },
        ],
      }),
      "list.json",
    );
    const r = podwall("simulate", "-f", f, "--port", "80", "-o", "json");
    expect(r.code).toBe(0);
    expect(r.err).toContain("ignoring Service s");
    const m = JSON.parse(r.out);
    expect(
      m.results.find((x: { from: string; to: string }) => x.from === "r/b" && x.to === "q/a").allowed,
    ).toBe(true);
  });
});

describe("podwall explain", () => {
  it("names the allowing policy, rule and peer", () => {
    const r = podwall(
      "explain",
      "-f",
      DEMO,
      "--from",
      "shop/frontend",
      "--to",
      "shop/backend",
      "--port",
      "8080/TCP",
    );
    expect(r.code).toBe(0);
    expect(r.out).toContain("ALLOWED");
    expect(r.out).toContain("shop/backend-from-frontend, ingress rule 0");
    expect(r.out).toContain("from[0] pods {app=frontend} in namespace shop");
  });

  it("says which policies isolate a denied side, with IPs as endpoints too", () => {
    const r = podwall("explain", "-f", DEMO, "--from", "10.244.1.30", "--to", "shop/db", "--port", "5432");
    expect(r.code).toBe(0);
    expect(r.out).toContain("DENIED");
    expect(r.out).toContain("isolated for egress by dev/dev-egress");
    // The Admin tier decides shop's ingress from dev before any NetworkPolicy is consulted.
    expect(r.out).toContain(
      "Admin tier (1 policy): denied by ClusterNetworkPolicy dev-stays-out-of-shop (Admin, priority 10), ingress rule 0 'no-dev'",
    );
    const np = podwall("explain", "-f", DEMO, "--from", "shop/frontend", "--to", "shop/db", "--port", "5432");
    expect(np.out).toContain(
      "shop/db-from-backend ingress rule 0: shop/frontend is not in pods {app=backend} in namespace shop",
    );
    expect(np.out).toContain("shop/default-deny-ingress: no ingress rules (it only isolates)");
    expect(r.out).toContain(
      "dev/dev-egress egress rule 0: shop/db is not in ipBlock 10.244.1.0/27 except 10.244.1.12/32",
    );
    expect(r.out).toContain("dev/dev-egress egress rule 1: port 5432/TCP is not in 53/UDP");
    const j = JSON.parse(
      podwall("explain", "-f", DEMO, "--from", "dev/debug", "--to", "shop/db", "--port", "5432", "-o", "json")
        .out,
    );
    expect(j.egress.result).toBe("denied");
  });
});

describe("bad input: exit 2, one clear line, no stack trace", () => {
  const cases: [string, string, RegExp][] = [
    [
      "invalid CIDR",
      `${POD("x", "a", "10.0.0.1")}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: { name: p, namespace: x }\nspec: { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: 10.0.0.0/33 } }] }] }\n`,
      /m\.yaml:\d+: NetworkPolicy x\/p: spec\.ingress\[0\]\.from\[0\]\.ipBlock\.cidr: invalid CIDR "10\.0\.0\.0\/33"/,
    ],
    [
      "unknown protocol",
      `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: { name: p, namespace: x }\nspec: { podSelector: {}, ingress: [{ ports: [{ port: 80, protocol: ICMP }] }] }\n`,
      /spec\.ingress\[0\]\.ports\[0\]\.protocol: unknown protocol "ICMP"/,
    ],
    [
      "unknown selector operator",
      `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: { name: p, namespace: x }\nspec: { podSelector: { matchExpressions: [{ key: a, operator: Equals, values: [b] }] } }\n`,
      /spec\.podSelector\.matchExpressions\[0\]\.operator: unknown operator "Equals"/,
    ],
    [
      "malformed YAML with its line",
      `kind: Pod\nmetadata:\n  name: [unclosed\n`,
      /m\.yaml:\d+: malformed YAML/,
    ],
    [
      "an unparsable pod IP",
      POD("x", "a", "10.0.0.300"),
      /Pod x\/a: status\.podIP: not an IP address: "10\.0\.0\.300"/,
    ],
  ];
  for (const [name, text, want] of cases) {
    it(name, () => {
      const r = podwall("simulate", "-f", manifest(text));
      expect(r.code).toBe(2);
      expect(r.err).toMatch(want);
      expect(r.err).not.toMatch(/^\s+at /m);
    });
  }

  it("a missing file, a bad --port and a missing -f", () => {
    expect(podwall("simulate", "-f", "/nonexistent/x.yaml").err).toContain(
      "/nonexistent/x.yaml: cannot read: ENOENT",
    );
    const bad = podwall("simulate", "-f", DEMO, "--port", "80/ICMP");
    expect([bad.code, bad.err]).toEqual([
      2,
      'podwall: error: --port: unknown protocol "ICMP" (TCP, UDP or SCTP)\n',
    ]);
    expect(podwall("simulate").code).toBe(2);
  });
});

describe("audit policies in simulate and explain", () => {
  const trial = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: trial-lockdown, namespace: monitoring, annotations: { podwall.io/enforcement: audit } }
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: [{ to: [{ namespaceSelector: { matchLabels: { kubernetes.io/metadata.name: shop } } }] }]
`;
  const f = manifest(trial, "trial.yaml");
  const flow = ["--from", "monitoring/prometheus", "--to", "dev/debug", "--port", "80/TCP"];

  it("simulate marks what they would deny, and --with-audit judges as if they were enforced", () => {
    const r = podwall("simulate", "-f", DEMO, "-f", f, "--port", "80/TCP");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^audit policies \(evaluated, not enforced\): monitoring\/trial-lockdown$/m);
    expect(r.out).toContain("A allowed but audit policies would deny");
    expect(r.out).toMatch(/^monitoring\/prometheus\s+A /m);
    const j = JSON.parse(podwall("simulate", "-f", DEMO, "-f", f, "--port", "80/TCP", "-o", "json").out);
    expect(j.audit).toEqual(["monitoring/trial-lockdown"]);
    const cell = (m: typeof j) =>
      m.results.find(
        (x: { from: string; to: string }) => x.from === "monitoring/prometheus" && x.to === "dev/debug",
      );
    expect(cell(j)).toMatchObject({ allowed: true, auditDenied: true });
    const w = JSON.parse(
      podwall("simulate", "-f", DEMO, "-f", f, "--port", "80/TCP", "-o", "json", "--with-audit").out,
    );
    expect(w.withAudit).toBe(true);
    expect(cell(w)).toMatchObject({ allowed: false, egress: "denied" });
    // Without audit policies the output is as before.
    expect(JSON.parse(podwall("simulate", "-f", DEMO, "-o", "json").out).audit).toBeUndefined();
  });

  it("explain names them and what they would change; --with-audit walks them", () => {
    const r = podwall("explain", "-f", DEMO, "-f", f, ...flow);
    expect(r.out).toMatch(/: ALLOWED$/m);
    expect(r.out).toContain(
      "audit policies here (evaluated, not enforced): NetworkPolicy monitoring/trial-lockdown [audit]",
    );
    expect(r.out).toContain(
      "with them enforced: DENIED on egress by NetworkPolicy monitoring/trial-lockdown [audit]",
    );
    const w = podwall("explain", "-f", DEMO, "-f", f, ...flow, "--with-audit");
    expect(w.out).toMatch(/: DENIED \(audit policies in force, as if enforced\)$/m);
    expect(w.out).toContain("isolated for egress by monitoring/trial-lockdown [audit]");
    const j = JSON.parse(podwall("explain", "-f", DEMO, "-f", f, ...flow, "-o", "json").out);
    expect(j).toMatchObject({
      allowed: true,
      withAudit: false,
      audit: { policies: ["monitoring/trial-lockdown"], allowed: false },
    });
  });
});

describe("podwall render", () => {
  it("prints ipset and iptables-restore input for a node's pods, only PODWALL- objects", () => {
    const r = podwall("render", "-f", DEMO, "--node", "demo-node", "--interface", "shop/db=vethdb");
    expect(r.code).toBe(0);
    expect(r.out).toContain("create PODWALL-S4-");
    expect(r.out).toMatch(/-A PODWALL-FORWARD -o vethdb -j PODWALL-ING-\w{16} -m comment/);
    expect(r.out).toMatch(/^-I FORWARD 1 -j PODWALL-FORWARD -m comment/m);
    const chains = r.out
      .split("\n")
      .filter((l) => l.startsWith(":"))
      .map((l) => l.slice(1).split(" ")[0]);
    expect(chains.length).toBeGreaterThan(3);
    for (const c of chains) {
      expect(c.startsWith("PODWALL-")).toBe(true);
      expect(c.length).toBeLessThanOrEqual(28);
    }
    for (const s of r.out.split("\n").filter((l) => l.startsWith("create ")))
      expect(s.split(" ")[1].length).toBeLessThanOrEqual(31);
  });

  it("renders deny logs as the agent does: ids listed, every deny through its deny-log chain; 0 turns them off", () => {
    const r = podwall("render", "-f", DEMO, "--node", "demo-node", "--nflog-group", "42");
    expect(r.code).toBe(0);
    const ids = [...r.out.matchAll(/^# pw:([0-9a-f]{16}) deny (ingress|egress) (\S+)/gm)];
    expect(ids.length).toBeGreaterThan(2);
    expect(ids.map((m) => m[3])).toContain("cnp:dev-stays-out-of-shop");
    for (const [, id] of ids) expect(r.out).toContain(`--nflog-prefix "pw:${id}" --nflog-group 42 `);
    expect(r.out).not.toMatch(/^-A PODWALL-(ING|EGR)\S* .*-j DROP/m);
    const off = podwall("render", "-f", DEMO, "--node", "demo-node", "--deny-log-pod-rate", "0");
    expect(off.out).not.toContain("NFLOG");
    expect(off.out).toMatch(/^-A PODWALL-INGN\S* -j DROP/m);
    const bad = podwall("render", "-f", DEMO, "--node", "demo-node", "--nflog-group", "70000");
    expect([bad.code, bad.err]).toEqual([2, expect.stringMatching(/^podwall: error: --nflog-group/)]);
  });

  it("nfqueue: one queue, or several spread by CPU; bad queue numbers are usage errors", () => {
    const args = ["render", "-f", DEMO, "--node", "demo-node", "--dataplane", "nfqueue"];
    const one = podwall(...args, "--queue-threads", "1");
    expect(one.code).toBe(0);
    expect(one.out).toMatch(/-j NFQUEUE --queue-num 100 -m comment/);
    expect(one.out).not.toContain("--queue-balance");
    const four = podwall(...args, "--queue-num", "7", "--queue-threads", "4");
    expect(four.out).toMatch(/-j NFQUEUE --queue-balance 7:10 --queue-cpu-fanout -m comment/);
    expect(four.out).not.toContain("--queue-num");
    for (const [flag, value] of [
      ["--queue-threads", "0"],
      ["--queue-threads", "two"],
      ["--queue-num", "65535"],
    ]) {
      const bad = podwall(...args, "--queue-threads", "2", flag, value);
      expect([bad.code, bad.err], `${flag} ${value}`).toEqual([
        2,
        expect.stringMatching(/^podwall: error: --queue-/),
      ]);
    }
  });
});
