/**
 * netlink-socket: what the koffi bindings of the netfilter netlink libraries (nfqueue/libnfq,
 * nflog/libnflog) share about their socket: the libc calls, the receive buffer and timeout (the
 * timeout is what lets a blocked loop notice its stop flag), and a recv that turns timeouts,
 * interrupts and overflows into "nothing this time".
 * May not: know which netfilter subsystem the socket serves, or allocate per packet.
 */
import * as koffi from "koffi";

const SOL_SOCKET = 1;
const SO_RCVBUF = 8;
const SO_RCVTIMEO = 20; // struct timeval, 16 bytes on 64-bit Linux
const SO_RCVBUFFORCE = 33; // root may exceed net.core.rmem_max; SO_RCVBUF is the fallback
const SOL_NETLINK = 270;
const NETLINK_NO_ENOBUFS = 5;
const EINTR = 4;
const EAGAIN = 11;
const ENOBUFS = 105;

export interface SocketCalls {
  recv(fd: number, buf: Buffer, len: number, flags: number): number;
  setsockopt(fd: number, level: number, name: number, val: Buffer, len: number): number;
}

/** The libc calls, bound from an already loaded libc. */
export function socketCalls(libc: koffi.LibraryHandle): SocketCalls {
  return {
    recv: libc.func("intptr_t recv(int fd, void *buf, size_t len, int flags)"),
    setsockopt: libc.func("int setsockopt(int fd, int level, int name, const void *val, uint32_t len)"),
  };
}

export interface ReceiveTuning {
  rcvBufBytes: number;
  recvTimeoutMs: number;
  /** Ask the kernel not to report overflows as ENOBUFS (when its own drop counters suffice). */
  noEnobufs: boolean;
}

/** Size the receive buffer and set the receive timeout; soft failures land in `warnings`. */
export function tuneReceive(calls: SocketCalls, fd: number, t: ReceiveTuning, warnings: string[]): void {
  const size = int32(t.rcvBufBytes);
  if (calls.setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, size, 4) < 0) {
    if (calls.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, size, 4) < 0) warnings.push("SO_RCVBUF failed");
  }
  if (t.noEnobufs && calls.setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, int32(1), 4) < 0) {
    warnings.push("NETLINK_NO_ENOBUFS failed");
  }
  const tv = Buffer.alloc(16);
  tv.writeBigInt64LE(BigInt(Math.floor(t.recvTimeoutMs / 1000)), 0);
  tv.writeBigInt64LE(BigInt((t.recvTimeoutMs % 1000) * 1000), 8);
  if (calls.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv, 16) < 0) {
    throw new Error(`SO_RCVTIMEO failed (errno ${koffi.errno()}): the loop could not be stopped`);
  }
}

/**
 * Block until a netlink message arrives or the receive timeout passes. Returns the byte count, or 0
 * on timeout, EINTR or ENOBUFS (`onOverflow` is called for the last); throws on other errors.
 */
export function receive(
  calls: SocketCalls,
  fd: number,
  buf: Buffer,
  what: string,
  onOverflow: () => void,
): number {
  const n = calls.recv(fd, buf, buf.length, 0);
  if (n > 0) return n;
  const err = koffi.errno();
  if (err === EAGAIN || err === EINTR) return 0;
  if (err === ENOBUFS) {
    onOverflow();
    return 0;
  }
  throw new Error(`recv on ${what} socket failed (errno ${err})`);
}

function int32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v | 0, 0);
  return b;
}
