/**
 * harness: a running lab programmed through the real renderer and applier (or the NFQUEUE verdict
 * loop), whose probe matrix is compared cell by cell with the compiled table's simulate matrix.
 */

import { AGENT_DEFAULTS } from "../../src/agent/options.js";
import { emptyManifestSet, type ManifestSet, parseManifests } from "../../src/agent/sources/manifests.js";
import { compilePolicyObject, FROM_MANIFEST, isPolicyKind } from "../../src/compiler/kinds/index.js";
import { computeMatrix, declaredPorts, type Matrix, type PortProto } from "../../src/compiler/matrix.js";
import { namespaceFromK8s, podFromK8s } from "../../src/compiler/normalize.js";
import { PolicyTable } from "../../src/compiler/table.js";
import { type ApplyStats, KernelApplier } from "../../src/dataplane/apply.js";
import { run } from "../../src/dataplane/exec.js";
import { type LabState, labDown, labUp } from "../../src/dataplane/lab/lab.js";
import { labPodsFor, probeMatrix } from "../../src/dataplane/lab/matrix.js";
import { labLocalPods } from "../../src/dataplane/lab/program.js";
import { defaultQueueThreads } from "../../src/dataplane/nfqueue/defaults.js";
import { type PolicyVerdictLoop, startPolicyVerdictLoop } from "../../src/dataplane/nfqueue/policy-loop.js";
import { type RenderOptions, renderNode } from "../../src/dataplane/render.js";
import type { Obj } from "./model.js";

export type Mode = "iptables" | "nfqueue";

/**
 * What the harness programs, as the agent does by default: in iptables mode every deny goes through
 * its deny-log chain (limit, NFLOG, deny), so every probe matrix also checks that path enforces.
 */
export function harnessRenderOptions(mode: Mode): RenderOptions {
  return {
    dataplane: mode,
    queueNum: 100,
    queueCount: defaultQueueThreads(),
    queueBypass: false,
    denyLog:
      mode === "iptables"
        ? {
            group: AGENT_DEFAULTS.nflogGroup,
            ratePerSec: AGENT_DEFAULTS.denyLogPodRate,
            burst: AGENT_DEFAULTS.denyLogPodBurst,
          }
        : undefined,
  };
}

/**
 * Drift made by hand, as an operator might: unhook the first PODWALL-ING chain from our dispatch
 * chains, flush it and delete it. Returns the chain's name.
 */
export async function deletePodChainByHand(netns: string): Promise<string> {
  const save = (await run("iptables-save", ["-t", "filter"], { netns })).stdout;
  const chain = /^:(PODWALL-ING-\w+)/m.exec(save)![1];
  const refs = save
    .split("\n")
    .filter((l) => /^-A PODWALL-(FORWARD|OUTPUT|INPUT) /.test(l) && l.includes(`-j ${chain}`));
  for (const r of refs) {
    // The saved rule as an argument list: quoted comments stay one argument.
    const args = r
      .slice(3)
      .match(/(?:[^\s"]+|"[^"]*")+/g)!
      .map((a) => a.replace(/^"|"$/g, ""));
    await run("iptables", ["-D", ...args], { netns });
  }
  await run("iptables", ["-F", chain], { netns });
  await run("iptables", ["-X", chain], { netns });
  return chain;
}

export function manifestSet(objs: Obj[]): ManifestSet {
  return parseManifests(JSON.stringify({ kind: "List", items: objs }), "model.json", emptyManifestSet());
}

export class LabHarness {
  readonly table = new PolicyTable();
  readonly applier: KernelApplier;
  userspace: PolicyVerdictLoop | undefined;

  private constructor(
    readonly lab: LabState,
    readonly set: ManifestSet,
    readonly mode: Mode,
  ) {
    this.applier = new KernelApplier({ netns: lab.nodeNetns });
  }

  static async up(
    name: string,
    objs: Obj[],
    mode: Mode,
    ports?: PortProto[],
    opts: { bridged?: boolean } = {},
  ): Promise<LabHarness> {
    const set = manifestSet(objs);
    const lab = await labUp(name, labPodsFor(set, ports ?? declaredPorts(set.pods)), opts);
    const h = new LabHarness(lab, set, mode);
    for (const n of set.namespaces) h.table.upsertNamespace(n);
    for (const p of set.pods) h.table.upsertPod(p);
    if (mode === "nfqueue") {
      h.userspace = await startPolicyVerdictLoop(lab.nodeNetns, h.table, 100, false);
    }
    return h;
  }

  /** Apply the table's current state to the lab as a minimal delta. */
  async sync(): Promise<ApplyStats> {
    const local = await labLocalPods(this.lab);
    await this.userspace?.update(this.table);
    return this.applier.apply(renderNode(this.table, local, harnessRenderOptions(this.mode)));
  }

  /** Make the table hold exactly these policy objects (of any kind), as a source's events would. */
  setPolicies(objs: Obj[]): void {
    const specs = objs.map((o) => {
      const kind = isPolicyKind(o.kind) ? o.kind : "NetworkPolicy";
      return { kind, spec: compilePolicyObject(kind, o, FROM_MANIFEST) };
    });
    const want = new Set(specs.map((s) => s.spec.key));
    for (const p of [...this.table.allPolicies()]) if (!want.has(p.key)) this.table.deletePolicyKey(p.key);
    for (const s of specs) this.table.upsertPolicySpec(s.spec);
  }

  relabelPod(obj: Obj): void {
    this.table.upsertPod(podFromK8s(obj));
    const p = podFromK8s(obj);
    const i = this.set.pods.findIndex((q) => q.namespace === p.namespace && q.name === p.name);
    this.set.pods[i] = p;
  }

  relabelNamespace(obj: Obj): void {
    this.table.upsertNamespace(namespaceFromK8s(obj));
  }

  async compare(ports: PortProto[]): Promise<{ observed: Matrix; expected: Matrix; wrong: string[] }> {
    const expected = computeMatrix(this.table, this.set.pods, ports);
    const observed = await probeMatrix(this.lab, this.set, ports, this.table, 700);
    const wrong: string[] = [];
    const key = (r: Matrix["results"][number]) => `${r.from}->${r.to} ${r.port}/${r.protocol}`;
    const obs = new Map(observed.results.map((r) => [key(r), r.allowed]));
    for (const r of expected.results) {
      if (obs.get(key(r)) !== r.allowed)
        wrong.push(`${key(r)}: expected ${r.allowed ? "allowed" : "denied"}, observed ${obs.get(key(r))}`);
    }
    return { observed, expected, wrong };
  }

  async down(): Promise<void> {
    try {
      await this.userspace?.stop();
    } finally {
      await labDown(this.lab.name);
    }
  }
}
