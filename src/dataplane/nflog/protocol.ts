/**
 * protocol: what the NFLOG reader's main-thread handle (reader.ts) and its worker thread exchange.
 *
 * Owns: message shapes, the record shape, the counter slots (a SharedArrayBuffer of float64 with the
 * worker as its only writer) and the control slots (Int32, Atomics). May not: contain logic beyond
 * reading the counters.
 */

/** One logged packet, as the main thread receives it. */
export interface NflogRecord {
  /** The rule's --nflog-prefix ("" when it set none). */
  prefix: string;
  src: string;
  dst: string;
  /** IP protocol number (6 TCP, 17 UDP, 132 SCTP, ...). */
  proto: number;
  /** 0 for protocols without ports and for non-first fragments. */
  sport: number;
  dport: number;
  family: 4 | 6;
  /** Milliseconds since the epoch: the kernel's timestamp when the packet has one, else receipt. */
  ts: number;
}

export interface NflogWorkerConfig {
  group: number;
  netns?: string;
  copyRange: number;
  flushTimeoutMs: number;
  qthreshold: number;
  nlBufBytes?: number;
  rcvBufBytes: number;
  recvTimeoutMs: number;
  /** Records posted or pending but not yet taken by the main thread, at most; beyond, dropped. */
  maxPending: number;
  /** A batch is posted when it holds this many records, or batchMs after its first one. */
  batchSize: number;
  batchMs: number;
}

export interface NflogWorkerInit {
  config: NflogWorkerConfig;
  /** Float64 counters, slots C below; the worker is the only writer. */
  counters: SharedArrayBuffer;
  /** Int32 [stop flag, records taken by the main thread (wrapping)]. */
  control: SharedArrayBuffer;
}

export const CTL_STOP = 0;
export const CTL_TAKEN = 1;
export const CTL_SLOTS = 2;

export type FromWorker =
  | { type: "ready"; warnings: string[] }
  | { type: "records"; records: NflogRecord[] }
  | { type: "error"; message: string; fatal: boolean }
  | { type: "stopped" };

export const C = {
  /** Packets the kernel delivered (parsed or not). */
  received: 0,
  /** Records handed to the main thread. */
  posted: 1,
  /** Packets whose headers could not be parsed (no record made). */
  parseErrors: 2,
  /** Records dropped because maxPending records were already waiting for the main thread. */
  overflowDropped: 3,
  /** recv() ENOBUFS events: the socket buffer overflowed (each one is one or more lost messages). */
  enobufs: 4,
  /** Packets missing from the group's sequence numbers: lost between the kernel and this socket. */
  seqLost: 5,
  /** Batches posted. */
  batches: 6,
} as const;
export const COUNTER_SLOTS = 7;

export interface NflogStats {
  received: number;
  posted: number;
  parseErrors: number;
  overflowDropped: number;
  enobufs: number;
  seqLost: number;
  batches: number;
}

export function readNflogStats(c: Float64Array): NflogStats {
  return {
    received: c[C.received],
    posted: c[C.posted],
    parseErrors: c[C.parseErrors],
    overflowDropped: c[C.overflowDropped],
    enobufs: c[C.enobufs],
    seqLost: c[C.seqLost],
    batches: c[C.batches],
  };
}
