/**
 * diff: what a change opens and closes. Given two tables (before and after) with their pods, every
 * (from pod, to pod, port) whose verdict differs, with the verdict that decided on each side.
 *
 * How, without deciding every pod pair (see reach-classes.ts for the classes and why they are exact):
 *   - rows and columns are classes of pods whose signatures agree on both tables;
 *   - a row class is *dirty* in a direction when what that direction reads of it differs between
 *     the tables: for its own egress side, the owner's egress plan (by policy key and fingerprint);
 *     as a peer of ingress sides, its selector memberships, the ipBlocks, `nodes` peers and nodes
 *     of its address. A column class likewise: its own ingress side (ingress plan, container
 *     ports, node), and as a peer of egress sides (memberships, ports, address peers). A changed
 *     family layout dirties both directions;
 *   - a direction cannot change between clean classes: the egress verdict reads the source's plan
 *     (equal) and the destination's match of that plan's peers (equal: the plan's peers have keys
 *     both tables hold, and the destination's content over those keys is equal) and its ports
 *     (equal); the ingress verdict likewise with the roles swapped, and the node exemption reads
 *     the source's nodes and the destination's node (equal);
 *   - so only (dirty rows x every column) and (every row x dirty columns) are compared, per port,
 *     in the direction that can differ; the other direction is looked up (on one table suffices)
 *     only where the first differs, since a cell needs both. Direction verdicts come from
 *     reach-classes' memo (one engine decision per plan, peer-match pattern and port); pairs a
 *     pod talks to itself over, on either table, are decided one by one.
 * A one-policy change dirties only the classes that policy selects, before or after.
 * The pods compared are those with an address on both sides; a pod only one side has is listed in
 * podsAdded / podsRemoved (its cells have no verdict on the other side, so none is a change).
 *
 * Owns: the change set, its counts and its order. May not: decide anything itself (the engine does,
 * through reach-classes), or do I/O.
 */
import type { DirectionVerdict, Verdict } from "./engine.js";
import { summarizeVerdict } from "./explain.js";
import { matrixPods, type PortProto } from "./matrix.js";
import { type Direction, type PodInfo, podKey } from "./model.js";
import { classify, commonKeys, pairFamily, relevantNodes, SideIndex } from "./reach-classes.js";
import type { PolicyTable } from "./table.js";

export interface DiffSide {
  table: PolicyTable;
  /** Every pod of that side (pods without an address are left out, as in simulate). */
  pods: readonly PodInfo[];
}

/** Cells of one class pair on one port that all changed the same way. */
export interface DiffGroup {
  readonly port: PortProto;
  /** Pod indexes into DiffResult.pods (sorted). */
  readonly rows: readonly number[];
  readonly cols: readonly number[];
  /** Pairs of rows x cols reported elsewhere (talking to itself on a side), as from * pods + to. */
  readonly skip: ReadonlySet<number> | undefined;
  readonly before: Verdict;
  readonly after: Verdict;
  readonly reasonBefore: string;
  readonly reasonAfter: string;
  /** Cells in this group. */
  readonly cells: number;
}

export interface DiffChange {
  from: string;
  to: string;
  port: number;
  protocol: string;
  before: boolean;
  after: boolean;
  reasonBefore: string;
  reasonAfter: string;
}

export interface DiffStats {
  rowClasses: number;
  colClasses: number;
  dirtyRows: number;
  dirtyCols: number;
  /** Class pairs x ports compared. */
  classCellsCompared: number;
  /** Engine decisions made, both tables. */
  decisions: number;
}

export interface DiffResult {
  ports: PortProto[];
  /** Pods compared: with an address on both sides, sorted by key. */
  pods: string[];
  podsAdded: string[];
  podsRemoved: string[];
  opened: number;
  closed: number;
  /** Cells (pod pairs x ports) that exist on both sides. */
  cellsCompared: number;
  groups: DiffGroup[];
  stats: DiffStats;
}

export function diffTables(before: DiffSide, after: DiffSide, ports: readonly PortProto[]): DiffResult {
  const mb = new Map(matrixPods(before.pods).map((p) => [podKey(p), p]));
  const ma = new Map(matrixPods(after.pods).map((p) => [podKey(p), p]));
  const keys = [...mb.keys()].filter((k) => ma.has(k));
  const podsAdded = [...ma.keys()].filter((k) => !mb.has(k));
  const podsRemoved = [...mb.keys()].filter((k) => !ma.has(k));
  const n = keys.length;
  const pb = keys.map((k) => mb.get(k)!);
  const pa = keys.map((k) => ma.get(k)!);
  const relevant = relevantNodes([before.table, after.table], [pb, pa]);
  const sb = new SideIndex(before.table, pb, relevant);
  const sa = new SideIndex(after.table, pa, relevant);
  const rows = classify(n, (i) => `${sb.rowKey(i)}#${sa.rowKey(i)}`);
  const cols = classify(n, (i) => `${sb.colKey(i)}#${sa.colKey(i)}`);
  const nR = rows.members.length;
  const nC = cols.members.length;

  // Dirty classes: content differs between the tables (memoized per signature and table).
  const ck = commonKeys([before.table, after.table]);
  const memo = <T>(f: (sig: number) => T) => {
    const m = new Map<number, T>();
    return (sig: number) => {
      let v = m.get(sig);
      if (v === undefined) m.set(sig, (v = f(sig)));
      return v;
    };
  };
  const srcB = memo((s) => sb.srcContent(s, ck));
  const srcA = memo((s) => sa.srcContent(s, ck));
  const dstB = memo((s) => sb.dstContent(s, ck));
  const dstA = memo((s) => sa.dstContent(s, ck));
  // Per class, which direction's verdicts may differ through it: a row's own egress side (its
  // plan) or the ingress sides that match it as a peer; a column's own ingress side or the egress
  // sides that match it. A changed family layout dirties both.
  const E = 1;
  const I = 2;
  const rowDirty = rows.members.map(([i]) => {
    if (sb.src4[i] < 0 !== sa.src4[i] < 0 || sb.src6[i] < 0 !== sa.src6[i] < 0) return E | I;
    let d = 0;
    for (const [x, y] of [
      [sb.src4[i], sa.src4[i]],
      [sb.src6[i], sa.src6[i]],
    ]) {
      if (x < 0) continue;
      const cb = srcB(x);
      const ca = srcA(y);
      if (cb.egress !== ca.egress) d |= E;
      if (cb.peer !== ca.peer) d |= I;
    }
    return d;
  });
  const colDirty = cols.members.map(([i]) => {
    if (sb.addrs[i].order.join() !== sa.addrs[i].order.join()) return E | I;
    let d = 0;
    for (const [x, y] of [
      [sb.dst4[i], sa.dst4[i]],
      [sb.dst6[i], sa.dst6[i]],
    ]) {
      if (x < 0) continue;
      const cb = dstB(x);
      const ca = dstA(y);
      if (cb.ingress !== ca.ingress) d |= I;
      if (cb.peer !== ca.peer) d |= E;
    }
    return d;
  });

  // Pairs a pod talks to itself over, on either table: decided one by one.
  const loops = new Set<number>();
  const loopsPerClassPair = new Map<number, number>();
  for (const [i, j] of [...sb.loopPairs(), ...sa.loopPairs()]) {
    const code = i * n + j;
    if (loops.has(code)) continue;
    loops.add(code);
    const cp = rows.of[i] * nC + cols.of[j];
    loopsPerClassPair.set(cp, (loopsPerClassPair.get(cp) ?? 0) + 1);
  }

  const reasons = [new Map<Verdict, string>(), new Map<Verdict, string>()];
  const reason = (side: 0 | 1, v: Verdict) => {
    let r = reasons[side].get(v);
    if (r === undefined)
      reasons[side].set(v, (r = summarizeVerdict(side === 0 ? before.table : after.table, v)));
    return r;
  };
  const groups: DiffGroup[] = [];
  const add = (
    pp: PortProto,
    rowsOf: readonly number[],
    colsOf: readonly number[],
    skip: ReadonlySet<number> | undefined,
    vb: Verdict,
    va: Verdict,
    cells: number,
  ) => {
    groups.push({
      port: pp,
      rows: rowsOf,
      cols: colsOf,
      skip,
      before: vb,
      after: va,
      reasonBefore: reason(0, vb),
      reasonAfter: reason(1, va),
      cells,
    });
  };

  for (const code of loops) {
    const i = Math.floor(code / n);
    const j = code - i * n;
    if (sb.isLoop(i, j) && sa.isLoop(i, j)) continue; // allowed on both sides
    for (const pp of ports) {
      const vb = sb.decidePair(i, j, pp);
      const va = sa.decidePair(i, j, pp);
      if (vb && va && vb.allowed !== va.allowed) add(pp, [i], [j], undefined, vb, va, 1);
    }
  }

  let classCellsCompared = 0;
  const eb: (DirectionVerdict | null)[] = new Array(ports.length);
  const ea: (DirectionVerdict | null)[] = new Array(ports.length);
  const ib: (DirectionVerdict | null)[] = new Array(ports.length);
  const ia: (DirectionVerdict | null)[] = new Array(ports.length);
  const denied = (v: DirectionVerdict) => v.result === "denied";
  const visit = (r: number, c: number) => {
    const rm = rows.members[r];
    const cm = cols.members[c];
    const loopsHere = loopsPerClassPair.get(r * nC + c) ?? 0;
    const cells = rm.length * cm.length - loopsHere;
    if (cells === 0) return;
    const dirty = rowDirty[r] | colDirty[c];
    // The direction that cannot differ is computed on one table only, and only when the other
    // direction's difference could show (a side that denies on both tables hides it).
    const first: Direction = dirty & E ? "egress" : "ingress";
    const [fb, fa] = first === "egress" ? [eb, ea] : [ib, ia];
    const [ob, oa] = first === "egress" ? [ib, ia] : [eb, ea];
    const other: Direction = first === "egress" ? "ingress" : "egress";
    // No common family on a side: no cell to compare.
    if (!sb.directionVerdicts(first, rm, cm, ports, fb) || !sa.directionVerdicts(first, rm, cm, ports, fa))
      return;
    const both = (dirty & (E | I)) === (E | I);
    let otherDone = false;
    classCellsCompared += ports.length;
    for (let pi = 0; pi < ports.length; pi++) {
      const xb = fb[pi];
      const xa = fa[pi];
      if (xb === null || xa === null) continue; // every pair talks to itself on a side: decided singly
      if (!both && denied(xb) === denied(xa)) continue;
      if (!otherDone) {
        sb.directionVerdicts(other, rm, cm, ports, ob);
        sa.directionVerdicts(other, rm, cm, ports, oa);
        otherDone = true;
      }
      const yb = ob[pi];
      const ya = oa[pi];
      if (yb === null || ya === null) continue;
      const vb = first === "egress" ? sb.join(xb, yb) : sb.join(yb, xb);
      const va = first === "egress" ? sa.join(xa, ya) : sa.join(ya, xa);
      if (vb.allowed !== va.allowed) add(ports[pi], rm, cm, loopsHere > 0 ? loops : undefined, vb, va, cells);
    }
  };
  const dirtyRows = rows.members.map((_, r) => r).filter((r) => rowDirty[r] !== 0);
  const dirtyCols = cols.members.map((_, c) => c).filter((c) => colDirty[c] !== 0);
  for (const r of dirtyRows) for (let c = 0; c < nC; c++) visit(r, c);
  for (let r = 0; r < nR; r++) if (rowDirty[r] === 0) for (const c of dirtyCols) visit(r, c);

  // Cells compared: pairs with a common family on both sides, counted per family profile.
  const rowProfiles = new Map<string, { count: number; i: number }>();
  const colProfiles = new Map<string, { count: number; i: number }>();
  const count = (m: Map<string, { count: number; i: number }>, k: string, i: number) => {
    const e = m.get(k);
    if (e) e.count++;
    else m.set(k, { count: 1, i });
  };
  for (let i = 0; i < n; i++) {
    count(
      rowProfiles,
      `${sb.addrs[i].v4 !== undefined}${sb.addrs[i].v6 !== undefined}#${sa.addrs[i].v4 !== undefined}${sa.addrs[i].v6 !== undefined}`,
      i,
    );
    count(colProfiles, `${sb.addrs[i].order.join("")}#${sa.addrs[i].order.join("")}`, i);
  }
  let pairs = 0;
  for (const rp of rowProfiles.values())
    for (const cp of colProfiles.values())
      if (
        pairFamily(sb.addrs[rp.i], sb.addrs[cp.i]) !== undefined &&
        pairFamily(sa.addrs[rp.i], sa.addrs[cp.i]) !== undefined
      )
        pairs += rp.count * cp.count;

  const portIdx = new Map(ports.map((p, i) => [p, i]));
  groups.sort(
    (a, b) => portIdx.get(a.port)! - portIdx.get(b.port)! || a.rows[0] - b.rows[0] || a.cols[0] - b.cols[0],
  );
  let opened = 0;
  let closed = 0;
  for (const g of groups) {
    if (g.after.allowed) opened += g.cells;
    else closed += g.cells;
  }
  return {
    ports: [...ports],
    pods: keys,
    podsAdded,
    podsRemoved,
    opened,
    closed,
    cellsCompared: pairs * ports.length,
    groups,
    stats: {
      rowClasses: nR,
      colClasses: nC,
      dirtyRows: dirtyRows.length,
      dirtyCols: dirtyCols.length,
      classCellsCompared,
      decisions: sb.decisions + sa.decisions,
    },
  };
}

/** The cells of one group, as [from, to] pod indexes. */
export function* groupCells(res: DiffResult, g: DiffGroup): Generator<[number, number]> {
  const n = res.pods.length;
  for (const i of g.rows)
    for (const j of g.cols) if (g.skip === undefined || !g.skip.has(i * n + j)) yield [i, j];
}

/** Every changed cell, group by group (port, then the classes' first pods). */
export function* diffChanges(res: DiffResult): Generator<DiffChange> {
  for (const g of res.groups) {
    for (const [i, j] of groupCells(res, g)) {
      yield {
        from: res.pods[i],
        to: res.pods[j],
        port: g.port.port,
        protocol: g.port.protocol,
        before: g.before.allowed,
        after: g.after.allowed,
        reasonBefore: g.reasonBefore,
        reasonAfter: g.reasonAfter,
      };
    }
  }
}
