/**
 * stats: the layout of the verdict loop's shared counters and the snapshot read from them.
 *
 * Owns: slot offsets in a SharedArrayBuffer of float64 counters (one writer: the worker; any reader).
 * Float64 slots are exact to 2^53 and need no BigInt on the hot path; single-writer means plain `++`.
 * May not: do I/O or import anything heavier than this file.
 */

/** Latency bucket upper bounds in microseconds (bucket i counts samples < 2^i us); the last is +Inf. */
export const LATENCY_BOUNDS_US: readonly number[] = [
  1,
  2,
  4,
  8,
  16,
  32,
  64,
  128,
  256,
  512,
  1024,
  2048,
  4096,
  8192,
  16384,
  Number.POSITIVE_INFINITY,
];

/** Protocol columns of the verdict matrix. */
export const PROTO_SLOTS = ["tcp", "udp", "sctp", "icmp", "icmpv6", "other"] as const;
export type ProtoSlot = (typeof PROTO_SLOTS)[number];

/** Slot offsets in the counters array. */
export const Slot = {
  packets: 0,
  accepted: 1,
  dropped: 2,
  parseErrors: 3,
  deciderErrors: 4,
  tableErrors: 5,
  deniesReported: 6,
  deniesSuppressed: 7,
  enobufs: 8,
  latencySumUs: 9,
  latencyMaxUs: 10,
  tableGeneration: 11,
  /** PROTO_SLOTS.length x [accepted, dropped]. */
  protoBase: 12,
  histBase: 12 + PROTO_SLOTS.length * 2,
} as const;
export const STATS_SLOTS = Slot.histBase + LATENCY_BOUNDS_US.length;

export function protoSlot(proto: number): number {
  switch (proto) {
    case 6:
      return 0;
    case 17:
      return 1;
    case 132:
      return 2;
    case 1:
      return 3;
    case 58:
      return 4;
    default:
      return 5;
  }
}

/** Index into the histogram for a latency in microseconds. */
export function latencyBucket(us: number): number {
  if (us < 1) return 0;
  const b = 32 - Math.clz32(us >>> 0); // us in [2^(b-1), 2^b) -> bucket b
  return Math.min(b, LATENCY_BOUNDS_US.length - 1);
}

export interface NfqStats {
  packets: number;
  accepted: number;
  dropped: number;
  byProto: Record<ProtoSlot, { accepted: number; dropped: number }>;
  /** Packets the parser rejected; they got the default verdict. */
  parseErrors: number;
  /** Decider throws or bad results; those packets got the default verdict. */
  deciderErrors: number;
  /** Tables the decider factory rejected; the previous decider stayed in place. */
  tableErrors: number;
  deniesReported: number;
  /** Deny events not reported: repeats of a flow already pending, or past the per-batch bound. */
  deniesSuppressed: number;
  /** recv() ENOBUFS: the kernel dropped netlink messages (see also queue_dropped/user_dropped). */
  enobufs: number;
  /** Generation of the table the decider was built from (0: the initial table). */
  tableGeneration: number;
  /** parse + decide + verdict time per packet. `counts[i]` counts samples below `boundsUs[i]`. */
  latency: { boundsUs: number[]; counts: number[]; count: number; sumUs: number; maxUs: number };
}

export function readStats(counters: Float64Array): NfqStats {
  const c = counters;
  const byProto = {} as NfqStats["byProto"];
  PROTO_SLOTS.forEach((p, i) => {
    byProto[p] = { accepted: c[Slot.protoBase + 2 * i], dropped: c[Slot.protoBase + 2 * i + 1] };
  });
  const counts = Array.from(c.subarray(Slot.histBase, Slot.histBase + LATENCY_BOUNDS_US.length));
  return {
    packets: c[Slot.packets],
    accepted: c[Slot.accepted],
    dropped: c[Slot.dropped],
    byProto,
    parseErrors: c[Slot.parseErrors],
    deciderErrors: c[Slot.deciderErrors],
    tableErrors: c[Slot.tableErrors],
    deniesReported: c[Slot.deniesReported],
    deniesSuppressed: c[Slot.deniesSuppressed],
    enobufs: c[Slot.enobufs],
    tableGeneration: c[Slot.tableGeneration],
    latency: {
      boundsUs: [...LATENCY_BOUNDS_US],
      counts,
      count: counts.reduce((a, b) => a + b, 0),
      sumUs: c[Slot.latencySumUs],
      maxUs: c[Slot.latencyMaxUs],
    },
  };
}

/** One view over several loops' counters (one worker per queue): sums, the worst max, the oldest table. */
export function mergeStats(all: readonly NfqStats[]): NfqStats {
  if (all.length === 1) return all[0];
  const out = emptyStats();
  out.tableGeneration = all.length ? Math.min(...all.map((s) => s.tableGeneration)) : 0;
  const summed = [
    "packets",
    "accepted",
    "dropped",
    "parseErrors",
    "deciderErrors",
    "tableErrors",
    "deniesReported",
    "deniesSuppressed",
    "enobufs",
  ] as const;
  for (const s of all) {
    for (const k of summed) out[k] += s[k];
    for (const p of PROTO_SLOTS) {
      out.byProto[p].accepted += s.byProto[p].accepted;
      out.byProto[p].dropped += s.byProto[p].dropped;
    }
    s.latency.counts.forEach((n, i) => {
      out.latency.counts[i] += n;
    });
    out.latency.count += s.latency.count;
    out.latency.sumUs += s.latency.sumUs;
    out.latency.maxUs = Math.max(out.latency.maxUs, s.latency.maxUs);
  }
  return out;
}

export function emptyStats(): NfqStats {
  return readStats(new Float64Array(STATS_SLOTS));
}
