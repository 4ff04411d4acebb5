/**
 * cli/lab: `podwall lab up|down|probe`: a node made of network namespaces, for tests, demos and
 * operators' experiments, and the real-packet counterpart of `podwall simulate`.
 *
 * Owns: the flags, and remembering which manifests a lab was built from (so `probe --name` can
 * compare). The lab itself, its pods and its probe matrix are src/dataplane/lab's.
 * May not: touch the host network namespace: everything runs inside the lab's namespaces.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import type { Command } from "commander";
import { loadManifestFiles, tableFromManifests } from "../agent/sources/manifests.js";
import { declaredPorts, formatMatrix, type Matrix } from "../compiler/matrix.js";
import { labDown, labUp, loadLab } from "../dataplane/lab/lab.js";
import { labPodsFor, probeMatrix } from "../dataplane/lab/matrix.js";
import { programLab } from "../dataplane/lab/program.js";
import { LAB_STATE_DIR as STATE_DIR } from "../dataplane/lab/state.js";
import { DEFAULT_QUEUE_NUM } from "../dataplane/nfqueue/defaults.js";
import { type PolicyVerdictLoop, startPolicyVerdictLoop } from "../dataplane/nfqueue/policy-loop.js";
import { action, collect, UsageError } from "./errors.js";
import { loadForCli } from "./input.js";
import { parsePorts } from "./simulate.js";

function rememberManifests(name: string, files: readonly string[]): void {
  mkdirSync(STATE_DIR, { recursive: true });
  writeFileSync(`${STATE_DIR}/${name}.manifests.json`, JSON.stringify(files.map((f) => resolve(f))));
}

function rememberedManifests(name: string): string[] | undefined {
  try {
    return JSON.parse(readFileSync(`${STATE_DIR}/${name}.manifests.json`, "utf8")) as string[];
  } catch {
    return undefined;
  }
}

function formatProbe(m: Matrix): string {
  return formatMatrix(m, "observed with real packets: . got through, X blocked");
}

export function registerLab(program: Command): void {
  const lab = program
    .command("lab")
    .description("a test node built from network namespaces on this machine (needs root)");
  lab
    .command("up")
    .description("build a lab node with one network namespace per pod in the manifests")
    .requiredOption("-f, --file <path>", "manifest file or directory (repeatable)", collect)
    .requiredOption("--name <lab>", "lab name ([a-z0-9-], up to 12 characters)")
    .action(
      action(async (opts: { file: string[]; name: string }) => {
        const set = loadForCli(opts.file);
        const state = await labUp(opts.name, labPodsFor(set, declaredPorts(set.pods)));
        rememberManifests(opts.name, opts.file);
        process.stdout.write(
          `lab ${state.name}: node netns ${state.nodeNetns}, ${state.pods.length} pods\n${state.pods.map((p) => `  ${p.key.padEnd(30)} ${p.ips.join(", ").padEnd(30)} via ${p.hostIf}`).join("\n")}\n`,
        );
      }),
    );
  lab
    .command("down")
    .description("remove everything a lab built")
    .requiredOption("--name <lab>", "lab name")
    .action(
      action(async (opts: { name: string }) => {
        await labDown(opts.name);
        rmSync(`${STATE_DIR}/${opts.name}.manifests.json`, { force: true });
        process.stdout.write(`lab ${opts.name} removed\n`);
      }),
    );
  lab
    .command("probe")
    .description(
      "probe every ordered pod pair with real packets (a running lab, or -f to build, program, probe, tear down)",
    )
    .option("--name <lab>", "a running lab")
    .option(
      "-f, --file <path>",
      "manifests: build a temporary lab, apply their rules, probe, tear down",
      collect,
    )
    .option(
      "--port <port/proto>",
      "port to probe (repeatable; default: every declared container port)",
      collect,
    )
    .option("--dataplane <mode>", "iptables or nfqueue (with -f)", "iptables")
    .option("--fail-closed", "nfqueue: no verdict program, no traffic for isolated pods (default fail-open)")
    .option("--timeout-ms <ms>", "per-probe timeout", "800")
    .option("-o, --output <format>", "table or json", "table")
    .action(
      action(
        async (opts: {
          name?: string;
          file?: string[];
          port?: string[];
          dataplane: string;
          failClosed?: boolean;
          timeoutMs: string;
          output: string;
        }) => {
          if (!!opts.name === !!opts.file) throw new UsageError("give either --name LAB or -f PATH");
          if (opts.dataplane !== "iptables" && opts.dataplane !== "nfqueue")
            throw new UsageError("--dataplane must be iptables or nfqueue");
          const timeoutMs = Number(opts.timeoutMs);
          const out = (m: Matrix) =>
            process.stdout.write(opts.output === "json" ? `${JSON.stringify(m)}\n` : formatProbe(m));
          if (opts.name) {
            const state = await loadLab(opts.name);
            if (!state) throw new UsageError(`no running lab named ${opts.name}`);
            const files = rememberedManifests(opts.name);
            const set = files ? loadManifestFiles(files) : undefined;
            if (!set)
              throw new UsageError(`lab ${opts.name} has no manifests on record; rebuild it with lab up -f`);
            const ports = parsePorts(opts.port) ?? declaredPorts(set.pods);
            out(await probeMatrix(state, set, ports, tableFromManifests(set), timeoutMs));
            return;
          }
          const set = loadForCli(opts.file);
          const ports = parsePorts(opts.port) ?? declaredPorts(set.pods);
          const table = tableFromManifests(set);
          const name = `pr${process.pid.toString(36)}`.slice(0, 12);
          const failOpen = !opts.failClosed;
          const state = await labUp(name, labPodsFor(set, ports));
          let verdicts: PolicyVerdictLoop | undefined;
          try {
            if (opts.dataplane === "nfqueue")
              verdicts = await startPolicyVerdictLoop(state.nodeNetns, table, DEFAULT_QUEUE_NUM, failOpen);
            await programLab(state, table, opts.dataplane, DEFAULT_QUEUE_NUM, failOpen);
            out(await probeMatrix(state, set, ports, table, timeoutMs));
          } finally {
            await verdicts?.stop();
            await labDown(name);
          }
        },
      ),
    );
}
