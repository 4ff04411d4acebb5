/**
 * cli/diff: `podwall diff`: what a change would open and close, before it is applied: the base
 * (manifests or a live cluster, read once), the same with --apply'd objects created or replaced and
 * --delete'd ones removed, and every (from pod, to pod, port) whose verdict differs.
 *
 * Owns: arguments, the three output formats, and the exit status a CI gate reads: 0 nothing
 * changes, 1 something changes (a cell opens or closes, or a pod appears or disappears), 2 bad
 * input or a cluster that could not be read. May not: decide (compiler/diff.ts does) or write to a
 * cluster.
 */
import type { Command } from "commander";
import {
  applyObjects,
  deleteObjects,
  type ObjectRef,
  parseObjectRef,
  refText,
} from "../agent/sources/manifest-edit.js";
import { type ManifestSet, tableFromManifests } from "../agent/sources/manifests.js";
import { type DiffGroup, type DiffResult, diffChanges, diffTables, groupCells } from "../compiler/diff.js";
import { declaredPorts, portLabel } from "../compiler/matrix.js";
import { action, collect, UsageError } from "./errors.js";
import { addInputOptions, loadForCli, loadInput } from "./input.js";
import { diffHtml } from "./report-html.js";
import { parsePorts } from "./simulate.js";

interface DiffOpts {
  file?: string[];
  kubeconfig?: string;
  apply?: string[];
  delete?: string[];
  port?: string[];
  output: string;
}

/** The base with the change made: --apply'd objects created or replaced, then --delete'd ones removed. */
export function changedSet(
  base: ManifestSet,
  apply: ManifestSet | undefined,
  refs: readonly ObjectRef[],
): ManifestSet {
  const applied = apply ? applyObjects(base, apply) : base;
  const { set, missing } = deleteObjects(applied, refs);
  if (missing.length > 0)
    throw new UsageError(`--delete ${missing.map(refText).join(", ")}: no such object in the base`);
  return set;
}

/** Write a large text in pieces, so a diff of millions of cells never becomes one string. */
function writer() {
  let buf = "";
  return {
    write(s: string) {
      buf += s;
      if (buf.length >= 1 << 20) {
        process.stdout.write(buf);
        buf = "";
      }
    },
    end() {
      if (buf) process.stdout.write(buf);
    },
  };
}

function writeJson(res: DiffResult): void {
  const w = writer();
  w.write('{"changes":[');
  let first = true;
  for (const c of diffChanges(res)) {
    w.write(`${first ? "" : ","}${JSON.stringify(c)}`);
    first = false;
  }
  w.write(
    `],"opened":${res.opened},"closed":${res.closed},"podsAdded":${JSON.stringify(res.podsAdded)},"podsRemoved":${JSON.stringify(res.podsRemoved)},"ports":${JSON.stringify(res.ports.map(portLabel))},"podsCompared":${res.pods.length},"cellsCompared":${res.cellsCompared}}\n`,
  );
  w.end();
}

/** Up to `max` names, then how many more. */
function names(list: readonly string[], max = 6): string {
  return list.length <= max
    ? list.join(", ")
    : `${list.slice(0, max).join(", ")} and ${list.length - max} more`;
}

function writeTable(res: DiffResult): void {
  const w = writer();
  const total = res.opened + res.closed;
  w.write(
    total === 0
      ? `podwall diff: no cell changes (${res.cellsCompared} cells compared: ${res.pods.length} pods, ports ${names(res.ports.map(portLabel), 12)})\n`
      : `podwall diff: ${res.opened} opened, ${res.closed} closed (of ${res.cellsCompared} cells compared: ${res.pods.length} pods, ports ${names(res.ports.map(portLabel), 12)})\n`,
  );
  if (res.podsAdded.length) w.write(`pods added (no cells before): ${names(res.podsAdded, 20)}\n`);
  if (res.podsRemoved.length) w.write(`pods removed (no cells after): ${names(res.podsRemoved, 20)}\n`);
  for (const g of res.groups) w.write(groupText(res, g));
  w.end();
}

function groupText(res: DiffResult, g: DiffGroup): string {
  const head = `\n${g.after.allowed ? "OPENED" : "CLOSED"} ${portLabel(g.port)}`;
  const lines: string[] = [];
  if (g.cells === 1) {
    const [[i, j]] = [...groupCells(res, g)];
    lines.push(`${head}  ${res.pods[i]} -> ${res.pods[j]}`);
  } else if (g.cells <= 12) {
    lines.push(head);
    for (const [i, j] of groupCells(res, g)) lines.push(`  ${res.pods[i]} -> ${res.pods[j]}`);
  } else {
    lines.push(`${head}  ${g.cells} pod pairs:`);
    lines.push(`  from (${g.rows.length}): ${names(g.rows.map((i) => res.pods[i]))}`);
    lines.push(`  to   (${g.cols.length}): ${names(g.cols.map((j) => res.pods[j]))}`);
  }
  lines.push(`    before: ${g.reasonBefore}`);
  lines.push(`    after:  ${g.reasonAfter}`);
  return `${lines.join("\n")}\n`;
}

export function registerDiff(program: Command): void {
  addInputOptions(
    program
      .command("diff")
      .description(
        "what a change opens and closes: every (from pod, to pod, port) whose verdict differs after --apply/--delete; exit 0 no change, 1 changes, 2 bad input",
      ),
    "the base: manifest file or directory (repeatable)",
  )
    .option(
      "--apply <path>",
      "create or replace the objects of this manifest file or directory (repeatable)",
      collect,
    )
    .option(
      "--delete <Kind/namespace/name>",
      "remove this object (Kind/name for cluster-scoped kinds; repeatable)",
      collect,
    )
    .option(
      "--port <port/proto>",
      "port to check, e.g. 80/TCP (repeatable; default: every container port declared before or after)",
      collect,
    )
    .option("-o, --output <format>", "table, json or html", "table")
    .action(
      action(async (opts: DiffOpts) => {
        if (!["table", "json", "html"].includes(opts.output))
          throw new UsageError(`-o must be table, json or html, not ${opts.output}`);
        if (!opts.apply?.length && !opts.delete?.length)
          throw new UsageError("nothing to compare: give --apply FILE and/or --delete Kind/namespace/name");
        const refs = (opts.delete ?? []).map((s) => {
          const r = parseObjectRef(s);
          if (typeof r === "string") throw new UsageError(`--delete ${r}`);
          return r;
        });
        const explicitPorts = parsePorts(opts.port);
        const base = await loadInput(opts);
        const overlay = opts.apply?.length ? loadForCli(opts.apply) : undefined;
        const after = changedSet(base, overlay, refs);
        const ports = explicitPorts ?? declaredPorts([...base.pods, ...after.pods]);
        const sides = [base, after].map((set) => ({ table: tableFromManifests(set), pods: set.pods }));
        const res = diffTables(sides[0], sides[1], ports);
        if (opts.output === "json") writeJson(res);
        else if (opts.output === "html") process.stdout.write(diffHtml(sides[1], res));
        else writeTable(res);
        const changed = res.opened + res.closed + res.podsAdded.length + res.podsRemoved.length > 0;
        process.exitCode = changed ? 1 : 0;
      }),
    );
}
