/**
 * deploy/monitoring: the alert rules pass `promtool check rules` and their unit tests (`promtool test
 * rules`, one test group per alert); the PrometheusRule carries exactly the plain file's groups; the
 * PodMonitor scrapes the DaemonSet's pods on its metrics port; the dashboard is well-formed Grafana
 * JSON over the Prometheus data source. (That every metric they use exists in a running agent's
 * /metrics is e2e/monitoring-metrics.test.ts.)
 */
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse, parseAllDocuments } from "yaml";

const DIR = join(import.meta.dirname, "..", "deploy", "monitoring");
const read = (f: string) => readFileSync(join(DIR, f), "utf8");

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
const rulesFile = parse(read("podwall.rules.yaml")) as { groups: { name: string; rules: Rule[] }[] };
const operatorDocs = parseAllDocuments(read("prometheus-operator.yaml")).map((d) => d.toJS());

function promtool(args: string[]) {
  const r = spawnSync("promtool", args, { cwd: DIR, encoding: "utf8", timeout: 60_000 });
  if (r.error) throw new Error(`promtool: ${r.error.message} (scripts/setup.sh installs it)`);
  return r;
}

describe("alert rules", () => {
  it("pass promtool check rules", () => {
    const r = promtool(["check", "rules", "podwall.rules.yaml"]);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`SUCCESS: ${rulesFile.groups[0].rules.length} rules found`);
  });

  it("pass their unit tests, and every alert has a test group of its own", () => {
    const r = promtool(["test", "rules", "podwall.rules.test.yaml"]);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    const tests = parse(read("podwall.rules.test.yaml")) as {
      tests: { name: string; alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[];
    };
    for (const rule of rulesFile.groups.flatMap((g) => g.rules)) {
      const t = tests.tests.find((x) => x.name === rule.alert);
      expect(t, rule.alert).toBeDefined();
      // It fires somewhere and stays quiet somewhere, for this alert only.
      expect(
        t!.alert_rule_test.every((c) => c.alertname === rule.alert),
        rule.alert,
      ).toBe(true);
      expect(
        t!.alert_rule_test.some((c) => c.exp_alerts.length > 0),
        rule.alert,
      ).toBe(true);
      expect(
        t!.alert_rule_test.some((c) => c.exp_alerts.length === 0),
        rule.alert,
      ).toBe(true);
    }
  });

  it("cover what operators must hear about, each with a severity and a summary", () => {
    const alerts = rulesFile.groups.flatMap((g) => g.rules);
    expect(alerts.map((a) => a.alert).sort()).toEqual([
      "PodwallAgentDown",
      "PodwallAgentNotReady",
      "PodwallApiServerUnreachable",
      "PodwallDenyLogsSuppressed",
      "PodwallDenySpike",
      "PodwallNfqueueDrops",
      "PodwallSyncsFailing",
    ]);
    for (const a of alerts) {
      expect(["critical", "warning", "info"], a.alert).toContain(a.labels?.severity);
      expect(a.annotations?.summary, a.alert).toBeTruthy();
    }
  });
});

describe("Prometheus Operator objects", () => {
  it("the PrometheusRule holds exactly the plain rules file's groups", () => {
    const pr = operatorDocs.find((d) => d.kind === "PrometheusRule");
    expect(pr.apiVersion).toBe("monitoring.coreos.com/v1");
    expect(pr.spec.groups).toEqual(rulesFile.groups);
  });

  it("the PodMonitor selects the DaemonSet's pods and scrapes its named metrics port as job podwall", () => {
    const pm = operatorDocs.find((d) => d.kind === "PodMonitor");
    const kind = parseAllDocuments(
      readFileSync(join(import.meta.dirname, "..", "deploy", "kind", "podwall.yaml"), "utf8"),
    ).map((d) => d.toJS());
    const ds = kind.find((d) => d.kind === "DaemonSet");
    const labels = ds.spec.template.metadata.labels as Record<string, string>;
    for (const [k, v] of Object.entries(pm.spec.selector.matchLabels as Record<string, string>))
      expect(labels[k], k).toBe(v);
    expect(pm.spec.namespaceSelector.matchNames).toContain(ds.metadata.namespace);
    // jobLabel names a pod label whose value is the job the rules expect.
    expect(labels[pm.spec.jobLabel]).toBe("podwall");
    expect(rulesFile.groups[0].rules.find((r) => r.alert === "PodwallAgentDown")!.expr).toContain(
      'job="podwall"',
    );
    const ep = pm.spec.podMetricsEndpoints[0];
    expect(ep.path).toBe("/metrics");
    const c = ds.spec.template.spec.containers[0];
    const port = c.ports.find((p: { name: string }) => p.name === ep.port);
    const addr = c.args.find((a: string) => a.startsWith("--metrics-addr="));
    expect(Number(addr.split(":").pop())).toBe(port.containerPort);
  });
});

describe("Grafana dashboard", () => {
  const dash = JSON.parse(read("grafana-dashboard.json"));
  const panels = dash.panels as {
    id: number;
    type: string;
    title: string;
    gridPos: { x: number; y: number; w: number; h: number };
    datasource?: { type: string; uid: string };
    targets?: { expr: string; refId: string }[];
  }[];

  it("has unique panel ids, panels inside the 24-column grid, and no overlaps", () => {
    expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length);
    const cells = new Set<string>();
    for (const p of panels) {
      const g = p.gridPos;
      expect(g.x + g.w, p.title).toBeLessThanOrEqual(24);
      for (let x = g.x; x < g.x + g.w; x++)
        for (let y = g.y; y < g.y + g.h; y++) {
          expect(cells.has(`${x},${y}`), `${p.title} overlaps at ${x},${y}`).toBe(false);
          cells.add(`${x},${y}`);
        }
    }
  });

  it("queries the Prometheus data source variable, and every query is filtered by node where it can be", () => {
    expect(dash.templating.list.find((v: { name: string }) => v.name === "datasource").query).toBe(
      "prometheus",
    );
    for (const p of panels.filter((x) => x.type !== "row")) {
      // Grafana's variable syntax, not a template string.
      expect(p.datasource, p.title).toEqual({ type: "prometheus", uid: "$" + "{datasource}" });
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets!) {
        expect(t.expr, p.title).toMatch(/podwall_|up\{/);
        if (!t.expr.startsWith("count(up")) expect(t.expr, p.title).toContain('instance=~"$instance"');
      }
    }
  });

  it("shows what the issue asks for: syncs, enforcement latency, denies and audit denies by policy, queue drops, API, rejections, kernel objects", () => {
    const exprs = panels.flatMap((p) => p.targets ?? []).map((t) => t.expr);
    for (const name of [
      "podwall_syncs_total",
      "podwall_sync_duration_seconds_bucket",
      "podwall_policy_enforced_latency_seconds_bucket",
      "podwall_policy_verdicts_total",
      "podwall_audit_denials_total",
      "podwall_verdict_duration_microseconds_bucket",
      "podwall_nfqueue_kernel_dropped",
      "podwall_api_connected",
      "podwall_rejected_objects",
      "podwall_iptables_rules",
      "podwall_ipsets",
    ])
      expect(
        exprs.some((e) => e.includes(name)),
        name,
      ).toBe(true);
  });
});
