/**
 * matrix: the truth table of every ordered pod pair on a set of ports, in the one JSON shape that
 * `podwall simulate` prints and `podwall lab probe` reproduces from real packets.
 *
 * Owns: choosing the addresses a pod pair talks over (the destination's primary IP, and a source
 * address of the same family) and the result record shape.
 * May not: do I/O.
 */
import { type DecisionSource, decide, type PlanPicker, type Verdict } from "./engine.js";
import { parseIP } from "./ip.js";
import { type PodInfo, PROTO, type ProtoName, podKey, protoNum } from "./model.js";

export interface PortProto {
  port: number;
  protocol: ProtoName;
}

export interface MatrixResult {
  from: string;
  to: string;
  port: number;
  protocol: ProtoName;
  allowed: boolean;
  ingress: "allowed" | "denied" | "not-isolated";
  egress: "allowed" | "denied" | "not-isolated";
  /** Allowed, but denied with the audit policies in force (only when asked to show audit policies). */
  auditDenied?: true;
}

export interface Matrix {
  pods: string[];
  ports: string[];
  results: MatrixResult[];
}

export interface MatrixOptions {
  /** Which plans decide (default: what is enforced). */
  pick?: PlanPicker;
  /** Also judge each allowed cell with this picker (audit plans): marks would-be denies. */
  auditPick?: PlanPicker;
}

export function portLabel(p: PortProto): string {
  return `${p.port}/${p.protocol}`;
}

/** Parse "80", "80/TCP", "53/udp". Returns an error string for anything else. */
export function parsePortProto(s: string): PortProto | string {
  const m = /^(\d{1,5})(?:\/([A-Za-z]+))?$/.exec(s.trim());
  if (!m) return `invalid port ${JSON.stringify(s)} (expected PORT or PORT/PROTOCOL, e.g. 80/TCP)`;
  const port = Number(m[1]);
  if (port < 1 || port > 65535) return `port ${port} out of range 1-65535`;
  const protocol = (m[2] ?? "TCP").toUpperCase();
  if (protoNum(protocol) === undefined) return `unknown protocol ${JSON.stringify(m[2])} (TCP, UDP or SCTP)`;
  return { port, protocol: protocol as ProtoName };
}

/** Every container port any pod declares, unique, sorted by number then protocol. */
export function declaredPorts(pods: readonly PodInfo[]): PortProto[] {
  const seen = new Map<string, PortProto>();
  for (const p of pods)
    for (const c of p.ports) seen.set(`${c.port}/${c.protocol}`, { port: c.port, protocol: c.protocol });
  return [...seen.values()].sort((a, b) => a.port - b.port || a.protocol.localeCompare(b.protocol));
}

/** The (source, destination) addresses for a pair: destination's first IP, source of that family. */
export function pairAddresses(from: PodInfo, to: PodInfo): { src: string; dst: string } | undefined {
  for (const dst of to.ips) {
    const fam = parseIP(dst)?.family;
    const src = from.ips.find((s) => parseIP(s)?.family === fam);
    if (src) return { src, dst };
  }
  return undefined;
}

/** Pods that can appear in a matrix: they need an address. */
export function matrixPods(pods: readonly PodInfo[]): PodInfo[] {
  return [...pods].filter((p) => p.ips.length > 0).sort((a, b) => podKey(a).localeCompare(podKey(b)));
}

export function verdictToResult(from: string, to: string, pp: PortProto, v: Verdict): MatrixResult {
  return {
    from,
    to,
    port: pp.port,
    protocol: pp.protocol,
    allowed: v.allowed,
    ingress: v.ingress.result,
    egress: v.egress.result,
  };
}

export function computeMatrix(
  source: DecisionSource,
  pods: readonly PodInfo[],
  ports: readonly PortProto[],
  opts: MatrixOptions = {},
): Matrix {
  const list = matrixPods(pods);
  const results: MatrixResult[] = [];
  for (const pp of ports) {
    for (const from of list) {
      for (const to of list) {
        const addr = pairAddresses(from, to);
        if (!addr) continue;
        const flow = { src: addr.src, dst: addr.dst, proto: PROTO[pp.protocol], port: pp.port };
        const v = decide(source, flow, opts.pick);
        const r = verdictToResult(podKey(from), podKey(to), pp, v);
        if (opts.auditPick && v.allowed && !decide(source, flow, opts.auditPick).allowed)
          r.auditDenied = true;
        results.push(r);
      }
    }
  }
  return { pods: list.map(podKey), ports: ports.map(portLabel), results };
}

/**
 * One grid per port: rows are sources, columns destinations; "." allowed, "X" denied, "A" allowed
 * but an audit policy would deny it.
 */
export function formatMatrix(m: Matrix, caption = "rows: from, columns: to; . allowed, X denied"): string {
  if (m.results.some((r) => r.auditDenied)) caption += ", A allowed but audit policies would deny";
  const out: string[] = [];
  const width = Math.max(4, ...m.pods.map((p) => p.length));
  const idx = new Map(m.pods.map((p, i) => [p, i]));
  for (const port of m.ports) {
    const rows = m.pods.map(() => m.pods.map(() => "?"));
    for (const r of m.results) {
      if (`${r.port}/${r.protocol}` !== port) continue;
      rows[idx.get(r.from)!][idx.get(r.to)!] = r.auditDenied ? "A" : r.allowed ? "." : "X";
    }
    out.push(`port ${port}   (${caption})`);
    out.push(`${"".padEnd(width)} ${m.pods.map((_, i) => String(i + 1).padStart(3)).join("")}`);
    m.pods.forEach((p, i) => {
      out.push(`${p.padEnd(width)} ${rows[i].map((c) => c.padStart(3)).join("")}   ${i + 1}`);
    });
    out.push("");
  }
  return out.join("\n");
}
