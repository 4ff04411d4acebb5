/**
 * libnfq: koffi bindings to libnetfilter_queue (classic API) and one bound queue's socket lifecycle.
 *
 * Owns: loading the shared library lazily, opening/configuring/closing a queue, recv, verdicts.
 * Handles and packet pointers are plain numbers (intptr_t) so the hot path allocates no externals.
 * May not: parse packets or decide verdicts; it must be used from a single thread.
 */
import * as koffi from "koffi";
import { loadLibrary } from "../native.js";
import { receive, type SocketCalls, socketCalls, tuneReceive } from "../netlink-socket.js";

export const NF_DROP = 0;
export const NF_ACCEPT = 1;
const NFQNL_COPY_PACKET = 2;
export const NFQA_CFG_F_FAIL_OPEN = 1;
export const NFQA_CFG_F_GSO = 4;

const AF_INET = 2;
const AF_INET6 = 10;

const LIB_NAME = "libnetfilter_queue.so.1";

export class NfqLibraryMissingError extends Error {
  constructor(cause: unknown) {
    super(`${LIB_NAME} not found: apt-get install libnetfilter-queue1`, { cause });
    this.name = "NfqLibraryMissingError";
  }
}

interface Lib extends SocketCalls {
  nfq_open(): number;
  nfq_close(h: number): number;
  nfq_bind_pf(h: number, pf: number): number;
  nfq_create_queue(h: number, num: number, cb: unknown, data: number): number;
  nfq_destroy_queue(qh: number): number;
  nfq_set_mode(qh: number, mode: number, range: number): number;
  nfq_set_queue_maxlen(qh: number, len: number): number;
  nfq_set_queue_flags(qh: number, mask: number, flags: number): number;
  nfq_fd(h: number): number;
  nfq_handle_packet(h: number, buf: Buffer, len: number): number;
  nfq_get_msg_packet_hdr(nfad: number): number;
  nfq_get_payload(nfad: number, out: number[]): number;
  nfq_set_verdict(qh: number, id: number, verdict: number, len: number, buf: number): number;
  sched_setaffinity(pid: number, size: number, mask: Buffer): number;
  callbackType: koffi.TypeObject;
}

let lib: Lib | undefined;

/** Load (once) and bind the library; throws NfqLibraryMissingError if it is not installed. */
export function loadLibNfq(): Lib {
  if (lib) return lib;
  const nfq = loadLibrary(LIB_NAME, (e) => new NfqLibraryMissingError(e));
  const libc = koffi.load("libc.so.6");
  // Pointers the hot path touches are declared intptr_t: koffi passes them as numbers, not externals.
  const callbackType = koffi.proto(
    "int podwall_nfq_cb(intptr_t qh, intptr_t nfmsg, intptr_t nfad, intptr_t data)",
  );
  const f = (sig: string) => nfq.func(sig);
  lib = {
    nfq_open: f("intptr_t nfq_open()"),
    nfq_close: f("int nfq_close(intptr_t h)"),
    nfq_bind_pf: f("int nfq_bind_pf(intptr_t h, uint16_t pf)"),
    nfq_create_queue: f(
      "intptr_t nfq_create_queue(intptr_t h, uint16_t num, podwall_nfq_cb *cb, intptr_t data)",
    ),
    nfq_destroy_queue: f("int nfq_destroy_queue(intptr_t qh)"),
    nfq_set_mode: f("int nfq_set_mode(intptr_t qh, uint8_t mode, uint32_t range)"),
    nfq_set_queue_maxlen: f("int nfq_set_queue_maxlen(intptr_t qh, uint32_t len)"),
    nfq_set_queue_flags: f("int nfq_set_queue_flags(intptr_t qh, uint32_t mask, uint32_t flags)"),
    nfq_fd: f("int nfq_fd(intptr_t h)"),
    nfq_handle_packet: f("int nfq_handle_packet(intptr_t h, void *buf, int len)"),
    nfq_get_msg_packet_hdr: f("intptr_t nfq_get_msg_packet_hdr(intptr_t nfad)"),
    nfq_get_payload: f("int nfq_get_payload(intptr_t nfad, _Out_ intptr_t *data)"),
    nfq_set_verdict: f(
      "int nfq_set_verdict(intptr_t qh, uint32_t id, uint32_t verdict, uint32_t len, intptr_t buf)",
    ),
    ...socketCalls(libc),
    sched_setaffinity: libc.func("int sched_setaffinity(int pid, size_t size, const void *mask)"),
    callbackType,
  };
  return lib;
}

/**
 * Pin the calling thread to these CPUs (pid 0 = this thread). Returns false when the kernel refuses
 * (a CPU outside the process's cgroup set, say): the thread then runs wherever the scheduler puts it.
 */
export function pinThisThread(cpus: readonly number[]): boolean {
  if (cpus.length === 0) return false;
  const mask = Buffer.alloc(128); // cpu_set_t: 1024 CPUs
  for (const c of cpus) if (c >= 0 && c < 1024) mask[c >> 3] |= 1 << (c & 7);
  return loadLibNfq().sched_setaffinity(0, mask.length, mask) === 0;
}

export interface NfqQueueOptions {
  queueNum: number;
  /** Bytes of each packet copied to userspace; headers only. */
  copyRange?: number;
  /** Kernel queue length before packets are dropped (or accepted, with failOpen). */
  maxLen?: number;
  rcvBufBytes?: number;
  /** NFQA_CFG_F_FAIL_OPEN: accept instead of drop when the kernel queue is full. */
  failOpen: boolean;
  /** How often a blocked recv returns so the owner can check its stop flag. */
  recvTimeoutMs?: number;
}

/**
 * Called synchronously from `handle()` for each queued packet. The owner must call `verdict()`
 * exactly once per packet id.
 */
export type NfqPacketHandler = (nfad: number) => void;

export class NfqQueue {
  /** The recv buffer: packet headers and payloads are read in place from here. */
  readonly buf = Buffer.alloc(256 * 1024);
  private readonly bufAddr = Number(koffi.address(this.buf));
  private readonly out = [0];
  /** Socket options that could not be applied; the queue works without them, but worse. */
  readonly warnings: string[] = [];
  /** recv() failures counted rather than thrown (ENOBUFS: the kernel dropped messages). */
  enobufs = 0;
  /** Where the last `payload()` call found the packet inside `buf`. */
  payloadOffset = 0;
  private h = 0;
  private qh = 0;
  private cb: unknown = null;
  private fd = -1;

  private constructor(private readonly lib: Lib) {}

  static open(opts: NfqQueueOptions, onPacket: NfqPacketHandler): NfqQueue {
    const q = new NfqQueue(loadLibNfq());
    try {
      q.setup(opts, onPacket);
    } catch (e) {
      q.close();
      throw e;
    }
    return q;
  }

  private setup(opts: NfqQueueOptions, onPacket: NfqPacketHandler): void {
    const lib = this.lib;
    this.h = lib.nfq_open();
    if (!this.h) throw new Error(`nfq_open failed (errno ${koffi.errno()}): needs CAP_NET_ADMIN`);
    // Needed only on kernels before 3.8, a no-op after; failure is harmless.
    lib.nfq_bind_pf(this.h, AF_INET);
    lib.nfq_bind_pf(this.h, AF_INET6);
    this.cb = koffi.register((_qh: number, _nfmsg: number, nfad: number) => {
      onPacket(nfad);
      return 0;
    }, koffi.pointer(lib.callbackType));
    this.qh = lib.nfq_create_queue(this.h, opts.queueNum, this.cb, 0);
    if (!this.qh) {
      throw new Error(
        `nfq_create_queue(${opts.queueNum}) failed (errno ${koffi.errno()}): is another program bound to this queue in this network namespace?`,
      );
    }
    if (lib.nfq_set_mode(this.qh, NFQNL_COPY_PACKET, opts.copyRange ?? 128) < 0) {
      throw new Error(`nfq_set_mode failed (errno ${koffi.errno()})`);
    }
    if (lib.nfq_set_queue_maxlen(this.qh, opts.maxLen ?? 65536) < 0)
      this.warnings.push("nfq_set_queue_maxlen failed");
    // GSO: the kernel need not segment large packets for us; we read headers only.
    const flags = (opts.failOpen ? NFQA_CFG_F_FAIL_OPEN : 0) | NFQA_CFG_F_GSO;
    if (lib.nfq_set_queue_flags(this.qh, NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO, flags) < 0) {
      this.warnings.push(`nfq_set_queue_flags(${flags}) failed (errno ${koffi.errno()})`);
    }
    this.fd = lib.nfq_fd(this.h);
    // NETLINK_NO_ENOBUFS: a full socket buffer is not an error here; the kernel's drop counters suffice.
    tuneReceive(
      lib,
      this.fd,
      { rcvBufBytes: opts.rcvBufBytes ?? 8 << 20, recvTimeoutMs: opts.recvTimeoutMs ?? 100, noEnobufs: true },
      this.warnings,
    );
  }

  /**
   * Block until a netlink message arrives or the receive timeout passes.
   * Returns the byte count, or 0 on timeout/EINTR/ENOBUFS; throws on other errors.
   */
  recv(): number {
    return receive(this.lib, this.fd, this.buf, "nfqueue", () => this.enobufs++);
  }

  /** Dispatch one received message; the packet handler runs synchronously inside. */
  handle(n: number): void {
    this.lib.nfq_handle_packet(this.h, this.buf, n);
  }

  /** Packet id of the current packet, or -1 if the message has none. */
  packetId(nfad: number): number {
    const p = this.lib.nfq_get_msg_packet_hdr(nfad);
    if (!p) return -1;
    return this.buf.readUInt32BE(p - this.bufAddr); // network order; points into this.buf
  }

  /** Length of the copied packet; its offset in `buf` is left in `payloadOffset`. */
  payload(nfad: number): number {
    const len = this.lib.nfq_get_payload(nfad, this.out);
    this.payloadOffset = len > 0 ? this.out[0] - this.bufAddr : 0;
    return len;
  }

  verdict(id: number, verdict: number): void {
    this.lib.nfq_set_verdict(this.qh, id, verdict, 0, 0);
  }

  /** Unbind and free everything; safe to call twice and after a failed open. */
  close(): void {
    const lib = this.lib;
    if (this.qh) lib.nfq_destroy_queue(this.qh);
    this.qh = 0;
    if (this.h) lib.nfq_close(this.h);
    this.h = 0;
    if (this.cb) koffi.unregister(this.cb as bigint);
    this.cb = null;
  }
}
