/**
 * libnflog: koffi bindings to libnetfilter_log and one bound NFLOG group's socket lifecycle.
 *
 * Owns: loading the shared library lazily, binding a group (inside a named network namespace: the
 * netlink socket belongs to the namespace it was created in), its kernel settings (copy range, flush
 * timeout, batch threshold, per-group sequence numbers), recv, and the per-packet accessors.
 * Pointers are plain numbers (intptr_t) so the hot path allocates no externals.
 * May not: parse packets or keep records; it must be used from a single thread.
 */
import * as koffi from "koffi";
import { openInNetns } from "../netns-thread.js";

const NFULNL_COPY_PACKET = 2;
/** Each message carries the group's sequence number: a gap is a message the kernel could not deliver. */
const NFULNL_CFG_F_SEQ = 1;

const SOL_SOCKET = 1;
const SO_RCVBUF = 8;
const SO_RCVTIMEO = 20; // struct timeval, 16 bytes on 64-bit Linux
const SO_RCVBUFFORCE = 33; // root may exceed net.core.rmem_max; SO_RCVBUF is the fallback
const EINTR = 4;
const EAGAIN = 11;
const ENOBUFS = 105;

const LIB_NAME = "libnetfilter_log.so.1";

export class NflogLibraryMissingError extends Error {
  constructor(cause: unknown) {
    super(`${LIB_NAME} not found: apt-get install libnetfilter-log1`, { cause });
    this.name = "NflogLibraryMissingError";
  }
}

interface Lib {
  nflog_open(): number;
  nflog_close(h: number): number;
  nflog_bind_group(h: number, num: number): number;
  nflog_unbind_group(gh: number): number;
  nflog_set_mode(gh: number, mode: number, range: number): number;
  nflog_set_timeout(gh: number, timeout: number): number;
  nflog_set_qthresh(gh: number, qthresh: number): number;
  nflog_set_nlbufsiz(gh: number, size: number): number;
  nflog_set_flags(gh: number, flags: number): number;
  nflog_callback_register(gh: number, cb: unknown, data: number): number;
  nflog_fd(h: number): number;
  nflog_handle_packet(h: number, buf: Buffer, len: number): number;
  nflog_get_payload(nfad: number, out: number[]): number;
  nflog_get_prefix(nfad: number): number;
  nflog_get_seq(nfad: number, out: number[]): number;
  nflog_get_timestamp(nfad: number, tv: Buffer): number;
  recv(fd: number, buf: Buffer, len: number, flags: number): number;
  setsockopt(fd: number, level: number, name: number, val: Buffer, len: number): number;
  callbackType: koffi.TypeObject;
}

let lib: Lib | undefined;

/** Load (once) and bind the library; throws NflogLibraryMissingError if it is not installed. */
export function loadLibNflog(): Lib {
  if (lib) return lib;
  let nfl: koffi.LibraryHandle;
  try {
    nfl = koffi.load(LIB_NAME);
  } catch (e) {
    throw new NflogLibraryMissingError(e);
  }
  const libc = koffi.load("libc.so.6");
  const callbackType = koffi.proto(
    "int podwall_nflog_cb(intptr_t gh, intptr_t nfmsg, intptr_t nfad, intptr_t data)",
  );
  const f = (sig: string) => nfl.func(sig);
  lib = {
    nflog_open: f("intptr_t nflog_open()"),
    nflog_close: f("int nflog_close(intptr_t h)"),
    nflog_bind_group: f("intptr_t nflog_bind_group(intptr_t h, uint16_t num)"),
    nflog_unbind_group: f("int nflog_unbind_group(intptr_t gh)"),
    nflog_set_mode: f("int nflog_set_mode(intptr_t gh, uint8_t mode, unsigned int range)"),
    nflog_set_timeout: f("int nflog_set_timeout(intptr_t gh, uint32_t timeout)"),
    nflog_set_qthresh: f("int nflog_set_qthresh(intptr_t gh, uint32_t qthresh)"),
    nflog_set_nlbufsiz: f("int nflog_set_nlbufsiz(intptr_t gh, uint32_t size)"),
    nflog_set_flags: f("int nflog_set_flags(intptr_t gh, uint16_t flags)"),
    nflog_callback_register: f(
      "int nflog_callback_register(intptr_t gh, podwall_nflog_cb *cb, intptr_t data)",
    ),
    nflog_fd: f("int nflog_fd(intptr_t h)"),
    nflog_handle_packet: f("int nflog_handle_packet(intptr_t h, void *buf, int len)"),
    nflog_get_payload: f("int nflog_get_payload(intptr_t nfad, _Out_ intptr_t *data)"),
    // intptr_t, not a string: the prefix is read from the recv buffer (and its strings cached).
    nflog_get_prefix: f("intptr_t nflog_get_prefix(intptr_t nfad)"),
    nflog_get_seq: f("int nflog_get_seq(intptr_t nfad, _Out_ uint32_t *seq)"),
    nflog_get_timestamp: f("int nflog_get_timestamp(intptr_t nfad, void *tv)"),
    recv: libc.func("intptr_t recv(int fd, void *buf, size_t len, int flags)"),
    setsockopt: libc.func("int setsockopt(int fd, int level, int name, const void *val, uint32_t len)"),
    callbackType,
  };
  return lib;
}

export interface NflogGroupOptions {
  group: number;
  /** Named network namespace to bind the group in (/run/netns/NAME); default: the thread's own. */
  netns?: string;
  /** Bytes of each packet copied (the rule's --nflog-size can only lower it); headers only. */
  copyRange?: number;
  /** How long the kernel may hold a batch before sending it, in ms (granularity 10 ms). */
  flushTimeoutMs?: number;
  /**
   * Packets the kernel batches into one message at most; a rule's --nflog-threshold can only lower it.
   * The batch is sent when full, when the kernel's buffer fills, or after flushTimeoutMs.
   */
  qthreshold?: number;
  /** Kernel batch buffer in bytes (default: the kernel's, one page). */
  nlBufBytes?: number;
  rcvBufBytes?: number;
  /** How often a blocked recv returns so the owner can check its stop flag. */
  recvTimeoutMs?: number;
}

/** Called synchronously from `handle()` for each logged packet in the message. */
export type NflogPacketHandler = (nfad: number) => void;

export class NflogGroup {
  /** The recv buffer: payloads and prefixes are read in place from here. */
  readonly buf = Buffer.alloc(256 * 1024);
  private readonly bufAddr = Number(koffi.address(this.buf));
  private readonly out = [0];
  private readonly tv = Buffer.alloc(16);
  /** Settings the kernel refused; the group works without them, but worse. */
  readonly warnings: string[] = [];
  /** recv() ENOBUFS: the socket buffer overflowed and the kernel dropped messages. */
  enobufs = 0;
  /** Where the last `payload()` call found the packet inside `buf`. */
  payloadOffset = 0;
  private h = 0;
  private gh = 0;
  private cb: unknown = null;
  private fd = -1;

  private constructor(private readonly lib: Lib) {}

  static open(opts: NflogGroupOptions, onPacket: NflogPacketHandler): NflogGroup {
    const g = new NflogGroup(loadLibNflog());
    try {
      g.setup(opts, onPacket);
    } catch (e) {
      g.close();
      throw e;
    }
    return g;
  }

  private setup(opts: NflogGroupOptions, onPacket: NflogPacketHandler): void {
    const L = this.lib;
    // Only the socket has to be created in the namespace; everything after talks over it.
    this.h = openInNetns(opts.netns, () => L.nflog_open());
    if (!this.h) throw new Error(`nflog_open failed (errno ${koffi.errno()}): needs CAP_NET_ADMIN`);
    // No nflog_bind_pf: kernels since 3.x route NFLOG rules to groups without it, and binding would
    // make this namespace's default packet logger ours.
    this.gh = L.nflog_bind_group(this.h, opts.group);
    if (!this.gh) {
      throw new Error(
        `nflog_bind_group(${opts.group}) failed (errno ${koffi.errno()}): is another program bound to this group in this network namespace?`,
      );
    }
    if (L.nflog_set_mode(this.gh, NFULNL_COPY_PACKET, opts.copyRange ?? 128) < 0) {
      throw new Error(`nflog_set_mode failed (errno ${koffi.errno()})`);
    }
    const timeout = Math.max(1, Math.round((opts.flushTimeoutMs ?? 100) / 10));
    if (L.nflog_set_timeout(this.gh, timeout) < 0) this.warnings.push("nflog_set_timeout failed");
    if (L.nflog_set_qthresh(this.gh, opts.qthreshold ?? 64) < 0)
      this.warnings.push("nflog_set_qthresh failed");
    if (opts.nlBufBytes && L.nflog_set_nlbufsiz(this.gh, opts.nlBufBytes) < 0)
      this.warnings.push("nflog_set_nlbufsiz failed");
    if (L.nflog_set_flags(this.gh, NFULNL_CFG_F_SEQ) < 0)
      this.warnings.push("nflog_set_flags(SEQ) failed: lost messages are counted only as ENOBUFS");
    this.cb = koffi.register((_gh: number, _nfmsg: number, nfad: number) => {
      onPacket(nfad);
      return 0;
    }, koffi.pointer(L.callbackType));
    if (L.nflog_callback_register(this.gh, this.cb, 0) < 0) {
      throw new Error(`nflog_callback_register failed (errno ${koffi.errno()})`);
    }
    this.fd = L.nflog_fd(this.h);
    const size = int32(opts.rcvBufBytes ?? 4 << 20);
    if (L.setsockopt(this.fd, SOL_SOCKET, SO_RCVBUFFORCE, size, 4) < 0) {
      if (L.setsockopt(this.fd, SOL_SOCKET, SO_RCVBUF, size, 4) < 0) this.warnings.push("SO_RCVBUF failed");
    }
    // NETLINK_NO_ENOBUFS stays off on purpose: each ENOBUFS is an overflow we count.
    const tv = Buffer.alloc(16);
    const ms = opts.recvTimeoutMs ?? 50;
    tv.writeBigInt64LE(BigInt(Math.floor(ms / 1000)), 0);
    tv.writeBigInt64LE(BigInt((ms % 1000) * 1000), 8);
    if (L.setsockopt(this.fd, SOL_SOCKET, SO_RCVTIMEO, tv, 16) < 0) {
      throw new Error(`SO_RCVTIMEO failed (errno ${koffi.errno()}): the loop could not be stopped`);
    }
  }

  /**
   * Block until a netlink message arrives or the receive timeout passes.
   * Returns the byte count, or 0 on timeout/EINTR/ENOBUFS; throws on other errors.
   */
  recv(): number {
    const n = this.lib.recv(this.fd, this.buf, this.buf.length, 0);
    if (n > 0) return n;
    const err = koffi.errno();
    if (err === EAGAIN || err === EINTR) return 0;
    if (err === ENOBUFS) {
      this.enobufs++;
      return 0;
    }
    throw new Error(`recv on nflog socket failed (errno ${err})`);
  }

  /** Dispatch one received buffer (it may hold a batch); the handler runs once per packet inside. */
  handle(n: number): void {
    this.lib.nflog_handle_packet(this.h, this.buf, n);
  }

  /** Length of the copied packet; its offset in `buf` is left in `payloadOffset`. */
  payload(nfad: number): number {
    const len = this.lib.nflog_get_payload(nfad, this.out);
    this.payloadOffset = len > 0 ? this.out[0] - this.bufAddr : 0;
    return len;
  }

  /** Offset of the prefix's first byte in `buf`, or -1 when the rule set none. NUL-terminated. */
  prefixOffset(nfad: number): number {
    const p = this.lib.nflog_get_prefix(nfad);
    return p ? p - this.bufAddr : -1;
  }

  /** The group's sequence number of this packet, or -1 when the kernel sent none. */
  seq(nfad: number): number {
    return this.lib.nflog_get_seq(nfad, this.out) === 0 ? this.out[0] >>> 0 : -1;
  }

  /** The kernel's receive timestamp in ms since the epoch, or 0 when the packet carries none. */
  timestampMs(nfad: number): number {
    if (this.lib.nflog_get_timestamp(nfad, this.tv) !== 0) return 0;
    return Number(this.tv.readBigInt64LE(0)) * 1000 + Number(this.tv.readBigInt64LE(8)) / 1000;
  }

  /** Unbind and free everything; safe to call twice and after a failed open. */
  close(): void {
    const L = this.lib;
    if (this.gh) L.nflog_unbind_group(this.gh);
    this.gh = 0;
    if (this.h) L.nflog_close(this.h);
    this.h = 0;
    if (this.cb) koffi.unregister(this.cb as bigint);
    this.cb = null;
  }
}

function int32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v | 0, 0);
  return b;
}
