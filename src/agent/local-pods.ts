/**
 * local-pods: which pods the kernel of this node must enforce for, and through which interfaces.
 *
 * Owns: picking local pods (spec.nodeName == this node, or the pods of a `podwall lab`) and finding
 * their host interfaces by route lookup. A pod whose interface is not there yet is retried on the
 * next sync; until its route exists no traffic can reach it anyway.
 * May not: program anything.
 */
import type { PodRecord, PolicyTable } from "../compiler/table.js";
import { interfaceNameProblem } from "../dataplane/ifname.js";
import type { LocalPod } from "../dataplane/render.js";
import { podInterfaces } from "../dataplane/routes.js";
import type { Logger } from "./log.js";
import type { Metrics } from "./metrics.js";
import type { LocalPodProvider } from "./reconciler.js";

export class RoutedLocalPods implements LocalPodProvider {
  unresolved = 0;

  constructor(
    private readonly opts: {
      /** Pods bound to this node are local... */
      nodeName?: string;
      /** ...or, for a lab, the pods it built (by key). */
      keys?: () => Promise<Set<string>> | Set<string>;
      netns?: string;
      /** Where interface names iptables cannot match exactly are reported (once per pod and name). */
      log?: Logger;
      metrics?: Metrics;
    },
  ) {}

  /** "pod\0ifname" of the rejected names already logged; a pod that recovers may be logged again. */
  private warned = new Set<string>();

  async localPods(table: PolicyTable): Promise<LocalPod[]> {
    const keys = this.opts.keys ? await this.opts.keys() : undefined;
    const pods: PodRecord[] = [];
    for (const p of table.allPods()) {
      if (!p.identity || p.info.ips.length === 0) continue;
      if (keys ? keys.has(p.key) : p.info.nodeName === this.opts.nodeName) pods.push(p);
    }
    const ifs = await podInterfaces(
      pods.map((p) => p.info.ips),
      this.opts.netns,
    );
    const out: LocalPod[] = [];
    this.unresolved = 0;
    pods.forEach((p, i) => {
      const f = ifs[i];
      if (f) out.push({ key: p.key, hostIf: f.hostIf, bridged: f.bridged });
      else this.unresolved++;
    });
    this.reportRejected(out);
    return out;
  }

  /** The renderer dispatches these by address (ifname.ts); operators should still hear of them. */
  private reportRejected(pods: readonly LocalPod[]): void {
    const now = new Set<string>();
    for (const p of pods) {
      const problem = interfaceNameProblem(p.hostIf);
      if (problem === undefined) continue;
      const id = `${p.key}\0${p.hostIf}`;
      now.add(id);
      if (!this.warned.has(id))
        this.opts.log?.warn(
          { pod: p.key, interface: p.hostIf, problem },
          "pod interface name cannot be matched exactly by iptables: its rules match its addresses instead",
        );
    }
    this.warned = now;
    this.opts.metrics?.rejectedInterfaces.set(now.size);
  }
}
