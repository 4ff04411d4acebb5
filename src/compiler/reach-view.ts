/**
 * reach-view: the reachability matrix as a picture's data: rows and columns grouped by namespace,
 * one cell per (source group, destination group, port) with how many pod pairs are allowed or
 * denied, and for a diff how many opened or closed, with the reasons.
 *
 * Granularity: every pod when the matrix has at most VIEW_MAX_GROUPS pods; otherwise label-set
 * identities (pods of one namespace with equal labels, one row and one column each) when there are
 * at most VIEW_MAX_GROUPS of them; otherwise whole namespaces. A diff of a large cluster shows only
 * the rows and columns that hold a changed cell (then the same rule on those).
 * Cells are aggregated over reach-classes buckets (group x class), one engine decision per class
 * pair, so the picture costs classes, not pods, squared.
 * Owns: grouping, aggregation and the view's plain-data shape (what report-html renders).
 * May not: decide anything itself, or do I/O.
 */
import { type DiffResult, type DiffSide, diffChanges } from "./diff.js";
import type { Verdict } from "./engine.js";
import { summarizeVerdict } from "./explain.js";
import { matrixPods, type PortProto, portLabel } from "./matrix.js";
import { type PodInfo, podKey } from "./model.js";
import { relevantNodes, SideIndex } from "./reach-classes.js";

/** Rows (and columns) a picture shows at most before it groups pods coarser. */
export const VIEW_MAX_GROUPS = 150;
/** Distinct reasons kept per cell (the most frequent). */
const REASONS_PER_CELL = 3;

export type ViewLevel = "pods" | "identities" | "namespaces";

export interface ViewGroup {
  /** Namespace (the band it is drawn in). */
  ns: string;
  /** Pod name, "{labels}" of an identity, or the namespace. */
  label: string;
  /** Pods it stands for (keys), at most 20 listed. */
  members: string[];
  size: number;
}

/** One cell: pair counts and [reason index, pairs] lists. Changes: [before reason, after reason, pairs]. */
export interface ViewCell {
  allowed: number;
  denied: number;
  reasons: [number, number][];
  opened?: number;
  closed?: number;
  changes?: [number, number, number][];
}

export interface ReachView {
  mode: "simulate" | "diff";
  /** Rows' granularity (columns' too, except in a large diff where each axis picks its own). */
  level: ViewLevel;
  colLevel: ViewLevel;
  /** Why this level: "12 pods", "3000 pods in 140 identities", ... */
  levelNote: string;
  rows: ViewGroup[];
  cols: ViewGroup[];
  ports: string[];
  /** Distinct cells: most cells of a matrix repeat a few patterns, so each is stored once. */
  cellTypes: ViewCell[];
  /** Per port, rows x cols indexes into cellTypes (row-major); -1 where no pair has a cell. */
  cells: number[][];
  reasons: string[];
  summary: Record<string, number | string | string[]>;
  /** A diff's first changed cells, for the list under the matrix (the JSON output has them all). */
  changes?: {
    from: string;
    to: string;
    port: string;
    after: boolean;
    reasonBefore: string;
    reasonAfter: string;
  }[];
}

/** Changed cells listed on a diff's page at most. */
export const VIEW_MAX_CHANGES = 500;

interface Grouping {
  level: ViewLevel;
  note: string;
  groups: ViewGroup[];
  /** Pod index -> group index (-1 = not shown). */
  of: Int32Array;
}

function labelsText(labels: Readonly<Record<string, string>>): string {
  const keys = Object.keys(labels).sort();
  return `{${keys.map((k) => `${k}=${labels[k]}`).join(",")}}`;
}

/** Group the pods at `shown` (indexes into pods) at the finest level that fits. */
function group(pods: readonly PodInfo[], shown: readonly number[]): Grouping {
  const of = new Int32Array(pods.length).fill(-1);
  const build = (level: ViewLevel, keyOf: (p: PodInfo) => [string, string]) => {
    const ids = new Map<string, number>();
    const groups: ViewGroup[] = [];
    const sorted = [...shown].sort((a, b) => {
      const ka = keyOf(pods[a]);
      const kb = keyOf(pods[b]);
      return ka[0] < kb[0] ? -1 : ka[0] > kb[0] ? 1 : ka[1] < kb[1] ? -1 : ka[1] > kb[1] ? 1 : 0;
    });
    for (const i of sorted) {
      const [ns, label] = keyOf(pods[i]);
      const k = `${ns}\u0000${label}`;
      let g = ids.get(k);
      if (g === undefined) {
        ids.set(k, (g = groups.length));
        groups.push({ ns, label, members: [], size: 0 });
      }
      const grp = groups[g];
      if (grp.members.length < 20) grp.members.push(podKey(pods[i]));
      grp.size++;
      of[i] = g;
    }
    return { level, groups, of };
  };
  if (shown.length <= VIEW_MAX_GROUPS)
    return { ...build("pods", (p) => [p.namespace, p.name]), note: `${shown.length} pods, one row each` };
  const ids = build("identities", (p) => [p.namespace, labelsText(p.labels)]);
  if (ids.groups.length <= VIEW_MAX_GROUPS)
    return {
      ...ids,
      note: `${shown.length} pods (more than ${VIEW_MAX_GROUPS}): one row per label-set identity (${ids.groups.length})`,
    };
  const nss = build("namespaces", (p) => [p.namespace, p.namespace]);
  return {
    ...nss,
    note: `${shown.length} pods in ${ids.groups.length} identities (more than ${VIEW_MAX_GROUPS}): one row per namespace (${nss.groups.length})`,
  };
}

class ReasonTable {
  readonly list: string[] = [];
  private readonly ids = new Map<string, number>();
  id(text: string): number {
    let i = this.ids.get(text);
    if (i === undefined) {
      this.ids.set(text, (i = this.list.length));
      this.list.push(text);
    }
    return i;
  }
}

/** Store each distinct cell once (cells are the bulk of a page). */
function intern(cells: (ViewCell | null)[][]): { cellTypes: ViewCell[]; cells: number[][] } {
  const ids = new Map<string, number>();
  const cellTypes: ViewCell[] = [];
  const out = cells.map((list) =>
    list.map((c) => {
      if (!c) return -1;
      const k = JSON.stringify(c);
      let id = ids.get(k);
      if (id === undefined) {
        ids.set(k, (id = cellTypes.length));
        cellTypes.push(c);
      }
      return id;
    }),
  );
  return { cellTypes, cells: out };
}

function topReasons(m: Map<number, number>): [number, number][] {
  return [...m.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, REASONS_PER_CELL);
}

/**
 * Allowed/denied counts and reasons per (row group, column group, port), over the pods `side`
 * indexes, decided per (group x class) bucket pair.
 */
function aggregate(
  side: SideIndex,
  rows: Grouping,
  cols: Grouping,
  ports: readonly PortProto[],
  reasons: ReasonTable,
): (ViewCell | null)[][] {
  const n = side.pods.length;
  const buckets = (g: Grouping, keyOf: (i: number) => string) => {
    const ids = new Map<string, number>();
    const list: { group: number; members: number[] }[] = [];
    const of = new Int32Array(n).fill(-1);
    for (let i = 0; i < n; i++) {
      if (g.of[i] < 0) continue;
      const k = `${g.of[i]}#${keyOf(i)}`;
      let b = ids.get(k);
      if (b === undefined) {
        ids.set(k, (b = list.length));
        list.push({ group: g.of[i], members: [] });
      }
      list[b].members.push(i);
      of[i] = b;
    }
    return { list, of };
  };
  const rb = buckets(rows, (i) => side.rowKey(i));
  const cb = buckets(cols, (i) => side.colKey(i));
  const loops = side.loopPairs().filter(([i, j]) => rb.of[i] >= 0 && cb.of[j] >= 0);
  const loopCount = new Map<number, number>();
  for (const [i, j] of loops) {
    const k = rb.of[i] * cb.list.length + cb.of[j];
    loopCount.set(k, (loopCount.get(k) ?? 0) + 1);
  }
  const nC = cols.groups.length;
  const text = new Map<Verdict, number>();
  const reasonOf = (v: Verdict) => {
    let id = text.get(v);
    if (id === undefined) text.set(v, (id = reasons.id(summarizeVerdict(side.table, v))));
    return id;
  };
  const acc = ports.map(() => [] as { allowed: number; denied: number; r: Map<number, number> }[]);
  const add = (pi: number, cell: number, v: Verdict, count: number) => {
    const c = (acc[pi][cell] ??= { allowed: 0, denied: 0, r: new Map() });
    if (v.allowed) c.allowed += count;
    else c.denied += count;
    const id = reasonOf(v);
    c.r.set(id, (c.r.get(id) ?? 0) + count);
  };
  const vs: (Verdict | null)[] = new Array(ports.length);
  rb.list.forEach((r, ri) => {
    cb.list.forEach((c, ci) => {
      const count = r.members.length * c.members.length - (loopCount.get(ri * cb.list.length + ci) ?? 0);
      if (count === 0 || !side.classVerdicts(r.members, c.members, ports, vs)) return;
      for (let pi = 0; pi < ports.length; pi++) {
        const v = vs[pi];
        if (v) add(pi, r.group * nC + c.group, v, count);
      }
    });
  });
  for (const [i, j] of loops)
    ports.forEach((pp, pi) => {
      const v = side.decidePair(i, j, pp);
      if (v) add(pi, rows.of[i] * nC + cols.of[j], v, 1);
    });
  return acc.map((list) => {
    const out: (ViewCell | null)[] = new Array(rows.groups.length * nC).fill(null);
    list.forEach((c, k) => {
      if (c) out[k] = { allowed: c.allowed, denied: c.denied, reasons: topReasons(c.r) };
    });
    return out;
  });
}

/** The picture of one table: every pod pair on every port. */
export function simulateView(input: DiffSide, ports: readonly PortProto[]): ReachView {
  const pods = matrixPods(input.pods);
  const side = new SideIndex(input.table, pods, relevantNodes([input.table], [pods]));
  const all = pods.map((_, i) => i);
  const g = group(pods, all);
  const reasons = new ReasonTable();
  const cells = aggregate(side, g, g, ports, reasons);
  let allowed = 0;
  let denied = 0;
  for (const list of cells)
    for (const c of list) {
      allowed += c?.allowed ?? 0;
      denied += c?.denied ?? 0;
    }
  return {
    mode: "simulate",
    level: g.level,
    colLevel: g.level,
    levelNote: g.note,
    rows: g.groups,
    cols: g.groups,
    ports: ports.map(portLabel),
    ...intern(cells),
    reasons: reasons.list,
    summary: { pods: pods.length, allowed, denied },
  };
}

/**
 * The picture of a diff: the after table's matrix, changed cells marked with how many pairs opened
 * or closed and their before/after reasons. Large clusters: only rows and columns with a change.
 */
export function diffView(after: DiffSide, res: DiffResult): ReachView {
  const byKey = new Map(matrixPods(after.pods).map((p) => [podKey(p), p]));
  const pods = res.pods.map((k) => byKey.get(k)!);
  const n = pods.length;
  let shownRows: number[];
  let shownCols: number[];
  if (n <= VIEW_MAX_GROUPS) shownRows = shownCols = pods.map((_, i) => i);
  else {
    const rs = new Set<number>();
    const cs = new Set<number>();
    for (const g of res.groups) {
      for (const i of g.rows) rs.add(i);
      for (const j of g.cols) cs.add(j);
    }
    shownRows = [...rs].sort((a, b) => a - b);
    shownCols = [...cs].sort((a, b) => a - b);
  }
  const rows = group(pods, shownRows);
  const cols = group(pods, shownCols);
  const side = new SideIndex(after.table, pods, relevantNodes([after.table], [pods]));
  const reasons = new ReasonTable();
  const cells = aggregate(side, rows, cols, res.ports, reasons);
  const nC = cols.groups.length;
  const portIdx = new Map(res.ports.map((p, i) => [p, i]));
  for (const g of res.groups) {
    const pi = portIdx.get(g.port)!;
    const rb = reasons.id(g.reasonBefore);
    const ra = reasons.id(g.reasonAfter);
    // Pairs per (row group, column group): products of the group's pods per display group, less
    // the pairs reported singly elsewhere.
    const per = (list: readonly number[], grp: Grouping) => {
      const m = new Map<number, number>();
      for (const i of list) if (grp.of[i] >= 0) m.set(grp.of[i], (m.get(grp.of[i]) ?? 0) + 1);
      return m;
    };
    const counts = new Map<number, number>();
    const rm = per(g.rows, rows);
    const cm = per(g.cols, cols);
    for (const [r, a] of rm) for (const [c, b] of cm) counts.set(r * nC + c, a * b);
    if (g.skip)
      for (const i of g.rows)
        for (const j of g.cols)
          if (g.skip.has(i * n + j) && rows.of[i] >= 0 && cols.of[j] >= 0) {
            const k = rows.of[i] * nC + cols.of[j];
            counts.set(k, counts.get(k)! - 1);
          }
    for (const [k, count] of counts) {
      if (count === 0) continue;
      const cell = cells[pi][k];
      if (!cell) continue;
      if (g.after.allowed) cell.opened = (cell.opened ?? 0) + count;
      else cell.closed = (cell.closed ?? 0) + count;
      (cell.changes ??= []).push([rb, ra, count]);
    }
  }
  for (const list of cells)
    for (const c of list)
      if (c?.changes) c.changes = c.changes.sort((a, b) => b[2] - a[2]).slice(0, REASONS_PER_CELL);
  const changes: ReachView["changes"] = [];
  for (const c of diffChanges(res)) {
    if (changes.length >= VIEW_MAX_CHANGES) break;
    changes.push({
      from: c.from,
      to: c.to,
      port: `${c.port}/${c.protocol}`,
      after: c.after,
      reasonBefore: c.reasonBefore,
      reasonAfter: c.reasonAfter,
    });
  }
  return {
    mode: "diff",
    level: rows.level,
    colLevel: cols.level,
    levelNote:
      n <= VIEW_MAX_GROUPS
        ? rows.note
        : `${n} pods compared (more than ${VIEW_MAX_GROUPS}): only rows and columns with a change; rows: ${rows.note}; columns: ${cols.note}`,
    rows: rows.groups,
    cols: cols.groups,
    ports: res.ports.map(portLabel),
    ...intern(cells),
    reasons: reasons.list,
    summary: {
      opened: res.opened,
      closed: res.closed,
      podsCompared: n,
      cellsCompared: res.cellsCompared,
      podsAdded: res.podsAdded,
      podsRemoved: res.podsRemoved,
    },
    changes,
  };
}
