/**
 * cli/simulate, cli/explain: the offline commands over manifests or a live cluster (read once): the
 * truth table of every pod pair (as a table, JSON or an HTML page), and one flow's decision path in
 * words.
 *
 * Owns: argument handling and output formats. Both answer from the same compiled table and engine
 * the dataplanes use. Audit policies (podwall.io/enforcement: audit) are shown: simulate marks the
 * cells they would deny, explain names them and what they would change; `--with-audit` gives the
 * verdicts as if they were enforced. May not: touch the kernel.
 */
import type { Command } from "commander";
import { tableFromManifests } from "../agent/sources/manifests.js";
import { withAudit } from "../compiler/audit.js";
import { auditPoliciesOn, explainFlow } from "../compiler/explain.js";
import { canonicalIP } from "../compiler/ip.js";
import {
  computeMatrix,
  declaredPorts,
  formatMatrix,
  type PortProto,
  pairAddresses,
  parsePortProto,
} from "../compiler/matrix.js";
import { PROTO, podKey } from "../compiler/model.js";
import { policyDisplay } from "../compiler/rule-model.js";
import type { PolicyTable } from "../compiler/table.js";
import { action, collect, UsageError } from "./errors.js";
import { addInputOptions, loadInput } from "./input.js";
import { simulateHtml } from "./report-html.js";

export function parsePorts(list: readonly string[] | undefined): PortProto[] | undefined {
  if (!list || list.length === 0) return undefined;
  return list.map((s) => {
    const p = parsePortProto(s);
    if (typeof p === "string") throw new UsageError(`--port: ${p}`);
    return p;
  });
}

export function registerSimulate(program: Command): void {
  addInputOptions(
    program
      .command("simulate")
      .description(
        "print the allowed/denied truth table for every ordered pod pair, from manifests or a live cluster",
      ),
  )
    .option(
      "--port <port/proto>",
      "port to check, e.g. 80/TCP (repeatable; default: every declared container port)",
      collect,
    )
    .option("-o, --output <format>", "table, json or html", "table")
    .option(
      "--with-audit",
      "judge with audit policies (podwall.io/enforcement: audit) in force, as if enforced",
    )
    .action(
      action(
        async (opts: {
          file?: string[];
          kubeconfig?: string;
          port?: string[];
          output: string;
          withAudit?: boolean;
        }) => {
          if (!["table", "json", "html"].includes(opts.output))
            throw new UsageError(`-o must be table, json or html, not ${opts.output}`);
          const set = await loadInput(opts);
          const ports = parsePorts(opts.port) ?? declaredPorts(set.pods);
          const table = tableFromManifests(set);
          if (opts.output === "html") {
            process.stdout.write(simulateHtml({ table, pods: set.pods }, ports));
            return;
          }
          const audit = auditPolicies(table);
          const m = computeMatrix(
            table,
            set.pods,
            ports,
            opts.withAudit ? { pick: withAudit } : audit.length ? { auditPick: withAudit } : {},
          );
          const out = audit.length ? { ...m, audit, withAudit: !!opts.withAudit } : m;
          const head = audit.length
            ? `audit policies (evaluated, not enforced${opts.withAudit ? "; here in force, as if enforced" : ""}): ${audit.join(", ")}\n\n`
            : "";
          process.stdout.write(
            opts.output === "json" ? `${JSON.stringify(out)}\n` : `${head}${formatMatrix(m)}`,
          );
        },
      ),
    );
}

export function registerExplain(program: Command): void {
  addInputOptions(
    program
      .command("explain")
      .description(
        "explain the decision for one flow: which policies isolate each side, which rule allows it",
      ),
  )
    .requiredOption("--from <pod|ip>", "source: ns/pod or an IP address")
    .requiredOption("--to <pod|ip>", "destination: ns/pod or an IP address")
    .option("--port <port/proto>", "destination port", "80/TCP")
    .option("-o, --output <format>", "text or json", "text")
    .option(
      "--with-audit",
      "judge with audit policies (podwall.io/enforcement: audit) in force, as if enforced",
    )
    .action(
      action(
        async (opts: {
          file?: string[];
          kubeconfig?: string;
          from: string;
          to: string;
          port: string;
          output: string;
          withAudit?: boolean;
        }) => {
          const set = await loadInput(opts);
          const table = tableFromManifests(set);
          const pp = parsePortProto(opts.port);
          if (typeof pp === "string") throw new UsageError(`--port: ${pp}`);
          const byKey = new Map(set.pods.map((p) => [podKey(p), p]));
          const resolve = (s: string, flag: string) => {
            const ip = canonicalIP(s);
            if (ip) return { ip };
            const pod = byKey.get(s.includes("/") ? s : `default/${s}`);
            if (!pod)
              throw new UsageError(
                `${flag}: ${s} is neither an IP address nor a pod in the ${opts.kubeconfig ? "cluster" : "manifests"}`,
              );
            if (pod.ips.length === 0) throw new UsageError(`${flag}: pod ${s} has no status.podIP`);
            return { pod };
          };
          const a = resolve(opts.from, "--from");
          const b = resolve(opts.to, "--to");
          let src = a.ip;
          let dst = b.ip;
          if (a.pod && b.pod) {
            const addr = pairAddresses(a.pod, b.pod);
            if (!addr) throw new UsageError("the two pods share no address family");
            ({ src, dst } = addr);
          } else {
            src ??= a.pod!.ips[0];
            dst ??= b.pod!.ips[0];
          }
          const flow = { src: src!, dst: dst!, proto: PROTO[pp.protocol], port: pp.port };
          const { verdict, text } = explainFlow(table, flow, { withAudit: !!opts.withAudit });
          const audit = auditPoliciesOn(table, flow).map(policyDisplay);
          const json = audit.length
            ? {
                flow,
                ...verdict,
                withAudit: !!opts.withAudit,
                audit: {
                  policies: audit,
                  allowed: explainFlow(table, flow, { withAudit: true }).verdict.allowed,
                },
              }
            : { flow, ...verdict };
          process.stdout.write(opts.output === "json" ? `${JSON.stringify(json)}\n` : `${text}\n`);
        },
      ),
    );
}

/** Display names of the table's audit-only policies, sorted. */
function auditPolicies(table: PolicyTable): string[] {
  return [...table.allPolicies()]
    .filter((p) => p.spec.audit)
    .map((p) => policyDisplay(p.key))
    .sort();
}
