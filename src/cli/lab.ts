/**
 * cli/lab: `podwall lab up|down|probe`: a node made of network namespaces, for tests, demos and
 * operators' experiments, and the real-packet counterpart of `podwall simulate`.
 *
 * Owns: turning manifests into lab pods (each serves every port any pod declares, so a probe
 * measures policy, not a missing listener), and the probe matrix in simulate's JSON shape: there
 * `allowed` is what real packets did; `ingress`/`egress` are the compiled table's view, for context.
 * May not: touch the host network namespace: everything runs inside the lab's namespaces.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import type { Command } from "commander";
import type { ManifestSet } from "../agent/sources/manifests.js";
import { loadManifestFiles, tableFromManifests } from "../agent/sources/manifests.js";
import { decide } from "../compiler/engine.js";
import {
  declaredPorts,
  formatMatrix,
  type Matrix,
  type MatrixResult,
  matrixPods,
  type PortProto,
  pairAddresses,
  portLabel,
} from "../compiler/matrix.js";
import { PROTO, podKey } from "../compiler/model.js";
import type { PolicyTable } from "../compiler/table.js";
import { KernelApplier } from "../dataplane/apply.js";
import {
  type LabPodSpec,
  type LabState,
  labDown,
  labUp,
  loadLab,
  type ProbeRequest,
  probe,
} from "../dataplane/lab/lab.js";
import { LAB_STATE_DIR as STATE_DIR } from "../dataplane/lab/state.js";
import { defaultQueueThreads } from "../dataplane/nfqueue/queue.js";
import { renderNode } from "../dataplane/render.js";
import { podInterfaces } from "../dataplane/routes.js";
import { action, collect, UsageError } from "./errors.js";
import { loadForCli } from "./input.js";
import { parsePorts } from "./simulate.js";
import { startUserspaceInNetns, type UserspaceHandle } from "./userspace-lab.js";

/** Lab pods for a manifest set: pods with addresses (hostNetwork pods share the node's, so skip them). */
export function labPodsFor(set: ManifestSet, ports: readonly PortProto[]): LabPodSpec[] {
  return matrixPods(set.pods.filter((p) => !p.hostNetwork)).map((p) => ({
    key: podKey(p),
    ips: [...p.ips],
    serve: ports.map((pp) => ({ port: pp.port, protocol: pp.protocol })),
  }));
}

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

/** Local pods of a lab, with interfaces found by route lookup exactly as the agent does it. */
export async function labLocalPods(lab: LabState) {
  const ifs = await podInterfaces(
    lab.pods.map((p) => p.ips),
    lab.nodeNetns,
  );
  return lab.pods.flatMap((p, i) =>
    ifs[i] ? [{ key: p.key, hostIf: ifs[i]!.hostIf, bridged: ifs[i]!.bridged }] : [],
  );
}

/** Probe every ordered pod pair of the lab on every port; results in simulate's shape. */
export async function probeMatrix(
  lab: LabState,
  set: ManifestSet,
  ports: readonly PortProto[],
  table: PolicyTable | undefined,
  timeoutMs?: number,
): Promise<Matrix> {
  const inLab = new Set(lab.pods.map((p) => p.key));
  const pods = matrixPods(set.pods).filter((p) => inLab.has(podKey(p)));
  const reqs: ProbeRequest[] = [];
  const cells: { from: string; to: string; pp: PortProto; src: string; dst: string }[] = [];
  for (const pp of ports) {
    for (const from of pods) {
      for (const to of pods) {
        const addr = pairAddresses(from, to);
        if (!addr) continue;
        reqs.push({ from: podKey(from), toIp: addr.dst, port: pp.port, protocol: pp.protocol });
        cells.push({ from: podKey(from), to: podKey(to), pp, ...addr });
      }
    }
  }
  const got = await probe(lab, reqs, { timeoutMs });
  const results: MatrixResult[] = cells.map((c, i) => {
    const v = table
      ? decide(table, { src: c.src, dst: c.dst, proto: PROTO[c.pp.protocol], port: c.pp.port })
      : undefined;
    return {
      from: c.from,
      to: c.to,
      port: c.pp.port,
      protocol: c.pp.protocol,
      allowed: got[i],
      ingress: v?.ingress.result ?? ("unknown" as MatrixResult["ingress"]),
      egress: v?.egress.result ?? ("unknown" as MatrixResult["egress"]),
    };
  });
  return { pods: pods.map(podKey), ports: ports.map(portLabel), results };
}

/** Program a lab's node with the rules for `table` through the real applier. */
export async function programLab(
  lab: LabState,
  table: PolicyTable,
  dataplane: "iptables" | "nfqueue",
  queueNum = 100,
  failOpen = false,
  queueCount = defaultQueueThreads(),
) {
  const applier = new KernelApplier({ netns: lab.nodeNetns });
  const local = await labLocalPods(lab);
  return applier.apply(renderNode(table, local, { dataplane, queueNum, queueCount, queueBypass: failOpen }));
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
          let userspace: UserspaceHandle | undefined;
          try {
            if (opts.dataplane === "nfqueue")
              userspace = await startUserspaceInNetns(state.nodeNetns, table, 100, failOpen);
            await programLab(state, table, opts.dataplane, 100, failOpen);
            out(await probeMatrix(state, set, ports, table, timeoutMs));
          } finally {
            await userspace?.stop();
            await labDown(name);
          }
        },
      ),
    );
}
