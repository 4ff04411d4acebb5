/**
 * libnfct: koffi bindings to libnetfilter_conntrack, for deleting conntrack entries by their exact
 * original tuple. The conntrack tool (1.4.7) dumps the whole table for every `-D`, even with a full
 * tuple: about 0.2 s per call at 100k entries. A netlink delete is one hash lookup in the kernel.
 *
 * Owns: loading the library lazily, one ctnetlink handle opened inside a named network namespace
 * (the socket stays in the namespace it was created in; the thread switches back at once), and
 * single-entry deletes. May not: list or judge entries (conntrack.ts and the revoker do).
 */
import * as koffi from "koffi";
import { parseIP } from "../compiler/ip.js";
import { openInNetns } from "./netns-thread.js";

const LIB_NAME = "libnetfilter_conntrack.so.3";
const NFNL_SUBSYS_CTNETLINK = 1;
const AF_INET = 2;
const AF_INET6 = 10;
const ENOENT = 2;
// enum nf_conntrack_attr
const ATTR_ORIG_IPV4_SRC = 0;
const ATTR_ORIG_IPV4_DST = 1;
const ATTR_ORIG_IPV6_SRC = 4;
const ATTR_ORIG_IPV6_DST = 5;
const ATTR_ORIG_PORT_SRC = 8;
const ATTR_ORIG_PORT_DST = 9;
const ATTR_ORIG_L3PROTO = 15;
const ATTR_ORIG_L4PROTO = 17;
// enum nf_conntrack_query
const NFCT_Q_DESTROY = 2;

interface Lib {
  nfct_open(subsys: number, subscriptions: number): number;
  nfct_close(h: number): number;
  nfct_new(): number;
  nfct_destroy(ct: number): void;
  nfct_set_attr_u8(ct: number, attr: number, v: number): void;
  nfct_set_attr_u16(ct: number, attr: number, v: number): void;
  nfct_set_attr(ct: number, attr: number, v: Buffer): void;
  nfct_query(h: number, q: number, ct: number): number;
}

let lib: Lib | undefined;

export class NfctLibraryMissingError extends Error {
  constructor(cause: unknown) {
    super(`${LIB_NAME} not found: apt-get install libnetfilter-conntrack3`, { cause });
    this.name = "NfctLibraryMissingError";
  }
}

function load(): Lib {
  if (lib) return lib;
  let ct: koffi.LibraryHandle;
  try {
    ct = koffi.load(LIB_NAME);
  } catch (e) {
    throw new NfctLibraryMissingError(e);
  }
  lib = {
    nfct_open: ct.func("intptr_t nfct_open(uint8_t subsys, unsigned int subscriptions)"),
    nfct_close: ct.func("int nfct_close(intptr_t h)"),
    nfct_new: ct.func("intptr_t nfct_new()"),
    nfct_destroy: ct.func("void nfct_destroy(intptr_t ct)"),
    nfct_set_attr_u8: ct.func("void nfct_set_attr_u8(intptr_t ct, int attr, uint8_t v)"),
    nfct_set_attr_u16: ct.func("void nfct_set_attr_u16(intptr_t ct, int attr, uint16_t v)"),
    nfct_set_attr: ct.func("void nfct_set_attr(intptr_t ct, int attr, const void *v)"),
    nfct_query: ct.func("int nfct_query(intptr_t h, int q, intptr_t ct)"),
  };
  return lib;
}

/** The original tuple of one entry: what identifies it in the kernel's table. */
export interface CtTuple {
  family: 4 | 6;
  proto: number;
  src: string;
  dst: string;
  sport: number;
  dport: number;
}

/** Network byte order (the attribute setters store values as given). */
function htons(v: number): number {
  return ((v & 0xff) << 8) | ((v >> 8) & 0xff);
}

export class ConntrackDeleter {
  private ct: number;
  private readonly addr = Buffer.alloc(16);

  private constructor(
    private readonly L: Lib,
    private h: number,
  ) {
    this.ct = L.nfct_new();
    if (!this.ct) {
      L.nfct_close(h);
      throw new Error("nfct_new failed: out of memory");
    }
  }

  /**
   * Open a ctnetlink handle in this named network namespace (none: the agent's own). Throws
   * NfctLibraryMissingError without the library; other errors when the namespace is missing or the
   * kernel refuses (no CAP_NET_ADMIN).
   */
  static open(netns?: string): ConntrackDeleter {
    const L = load();
    const h = openInNetns(netns, () => L.nfct_open(NFNL_SUBSYS_CTNETLINK, 0));
    if (!h) throw new Error(`nfct_open failed (errno ${koffi.errno()}): needs CAP_NET_ADMIN`);
    return new ConntrackDeleter(L, h);
  }

  /** Delete one entry; false when no entry has this tuple (it ended meanwhile). Throws on other errors. */
  delete(t: CtTuple): boolean {
    const { L, ct, addr } = this;
    const v4 = t.family === 4;
    L.nfct_set_attr_u8(ct, ATTR_ORIG_L3PROTO, v4 ? AF_INET : AF_INET6);
    L.nfct_set_attr_u8(ct, ATTR_ORIG_L4PROTO, t.proto);
    const src = parseIP(t.src);
    const dst = parseIP(t.dst);
    if (!src || !dst) throw new Error(`conntrack delete: not an IP address in ${t.src} -> ${t.dst}`);
    addr.set(src.bytes);
    L.nfct_set_attr(ct, v4 ? ATTR_ORIG_IPV4_SRC : ATTR_ORIG_IPV6_SRC, addr);
    addr.set(dst.bytes);
    L.nfct_set_attr(ct, v4 ? ATTR_ORIG_IPV4_DST : ATTR_ORIG_IPV6_DST, addr);
    L.nfct_set_attr_u16(ct, ATTR_ORIG_PORT_SRC, htons(t.sport));
    L.nfct_set_attr_u16(ct, ATTR_ORIG_PORT_DST, htons(t.dport));
    if (L.nfct_query(this.h, NFCT_Q_DESTROY, ct) === 0) return true;
    const errno = koffi.errno();
    if (errno === ENOENT) return false;
    throw new Error(`conntrack delete failed (errno ${errno})`);
  }

  close(): void {
    if (this.ct) this.L.nfct_destroy(this.ct);
    if (this.h) this.L.nfct_close(this.h);
    this.ct = 0;
    this.h = 0;
  }
}
