/**
 * lab/matrix: a cluster's pods as lab pods, and the connectivity matrix measured with real packets
 * in simulate's JSON shape: there `allowed` is what real packets did; `ingress`/`egress` are the
 * compiled table's view, for context.
 * May not: change the topology or the rules.
 */
import { decide } from "../../compiler/engine.js";
import {
  type Matrix,
  type MatrixResult,
  matrixPods,
  type PortProto,
  pairAddresses,
  portLabel,
} from "../../compiler/matrix.js";
import { type PodInfo, PROTO, podKey } from "../../compiler/model.js";
import type { PolicyTable } from "../../compiler/table.js";
import { probeLab } from "./probe.js";
import type { LabPodSpec, LabState, ProbeRequest } from "./types.js";

/** The cluster's pods, as far as the lab needs them (a manifest set is one). */
export interface LabCluster {
  pods: readonly PodInfo[];
}

/**
 * Lab pods for a cluster: pods with addresses (hostNetwork pods share the node's, so skip them), each
 * serving every port any pod declares, so a probe measures policy, not a missing listener.
 */
export function labPodsFor(set: LabCluster, ports: readonly PortProto[]): LabPodSpec[] {
  return matrixPods(set.pods.filter((p) => !p.hostNetwork)).map((p) => ({
    key: podKey(p),
    ips: [...p.ips],
    serve: ports.map((pp) => ({ port: pp.port, protocol: pp.protocol })),
  }));
}

/** Probe every ordered pod pair of the lab on every port; results in simulate's shape. */
export async function probeMatrix(
  lab: LabState,
  set: LabCluster,
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
  const got = await probeLab(lab, reqs, { timeoutMs });
  const results: MatrixResult[] = cells.map((cell, i) => {
    const v = table
      ? decide(table, { src: cell.src, dst: cell.dst, proto: PROTO[cell.pp.protocol], port: cell.pp.port })
      : undefined;
    return {
      from: cell.from,
      to: cell.to,
      port: cell.pp.port,
      protocol: cell.pp.protocol,
      allowed: got[i],
      ingress: v?.ingress.result ?? ("unknown" as MatrixResult["ingress"]),
      egress: v?.egress.result ?? ("unknown" as MatrixResult["egress"]),
    };
  });
  return { pods: pods.map(podKey), ports: ports.map(portLabel), results };
}
