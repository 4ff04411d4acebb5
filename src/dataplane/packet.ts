/**
 * packet: read the L3/L4 header fields policy needs from a packet copied to userspace (an NFQUEUE
 * verdict request or an NFLOG record), in place.
 *
 * Owns: IPv4 (with options) and IPv6 (with extension headers) parsing, TCP/UDP/SCTP ports, and the
 * canonical address strings (dotted quad / RFC 5952, identical to ipaddr.js `toString()`).
 * May not: throw on bad input, allocate per packet beyond cached address strings, or decide policy.
 */

export const ParseError = {
  None: 0,
  /** Fewer bytes than the fixed IP header. */
  Short: 1,
  /** IP version is neither 4 nor 6. */
  Version: 2,
  /** IHL < 5, or a header length that runs past the buffer. */
  Header: 3,
  /** The transport header is cut off (copy range too small, or a runt packet). */
  Truncated: 4,
} as const;
export type ParseError = (typeof ParseError)[keyof typeof ParseError];

/**
 * One reusable result: each reading loop owns a single instance and `parsePacket` overwrites it.
 * `srcPort`/`dstPort` are 0 for protocols without ports and for non-first fragments.
 */
export class ParsedPacket {
  error: ParseError = ParseError.None as ParseError;
  family: 4 | 6 = 4;
  src = "";
  dst = "";
  proto = 0;
  srcPort = 0;
  dstPort = 0;
  /** A non-first fragment: it carries no transport header, so ports are unknown (0). */
  fragment = false;
}

const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const IPPROTO_SCTP = 132;
// IPv6 extension headers we walk past. AH is included because its length rule is simple.
const EH_HOPOPTS = 0;
const EH_ROUTING = 43;
const EH_FRAGMENT = 44;
const EH_AH = 51;
const EH_DSTOPTS = 60;
/** Bound on the extension-header walk, so a crafted chain cannot loop long. */
const MAX_EXT_HEADERS = 8;

/**
 * Parse `len` bytes of `buf` starting at `off`. Returns true on success; on failure `out.error`
 * says why and the address fields may be stale.
 */
export function parsePacket(buf: Uint8Array, off: number, len: number, out: ParsedPacket): boolean {
  out.srcPort = 0;
  out.dstPort = 0;
  out.fragment = false;
  if (len < 1 || off < 0 || off + len > buf.length) return fail(out, ParseError.Short);
  const version = buf[off] >> 4;
  if (version === 4) return parse4(buf, off, len, out);
  if (version === 6) return parse6(buf, off, len, out);
  return fail(out, ParseError.Version);
}

function fail(out: ParsedPacket, e: ParseError): false {
  out.error = e;
  return false;
}

function parse4(buf: Uint8Array, off: number, len: number, out: ParsedPacket): boolean {
  if (len < 20) return fail(out, ParseError.Short);
  const ihl = (buf[off] & 0x0f) << 2;
  if (ihl < 20 || ihl > len) return fail(out, ParseError.Header);
  out.family = 4;
  out.proto = buf[off + 9];
  out.src = ip4String(buf, off + 12);
  out.dst = ip4String(buf, off + 16);
  const fragOffset = ((buf[off + 6] & 0x1f) << 8) | buf[off + 7];
  if (fragOffset !== 0) {
    out.fragment = true;
    out.error = ParseError.None;
    return true;
  }
  return ports(buf, off + ihl, off + len, out);
}

function parse6(buf: Uint8Array, off: number, len: number, out: ParsedPacket): boolean {
  if (len < 40) return fail(out, ParseError.Short);
  out.family = 6;
  out.src = ip6String(buf, off + 8);
  out.dst = ip6String(buf, off + 24);
  const end = off + len;
  let next = buf[off + 6];
  let p = off + 40;
  for (let i = 0; i <= MAX_EXT_HEADERS; i++) {
    if (next === EH_HOPOPTS || next === EH_ROUTING || next === EH_DSTOPTS) {
      if (p + 2 > end) return fail(out, ParseError.Truncated);
      const n = buf[p];
      p += (buf[p + 1] + 1) << 3;
      next = n;
    } else if (next === EH_AH) {
      if (p + 2 > end) return fail(out, ParseError.Truncated);
      const n = buf[p];
      p += (buf[p + 1] + 2) << 2;
      next = n;
    } else if (next === EH_FRAGMENT) {
      if (p + 8 > end) return fail(out, ParseError.Truncated);
      const n = buf[p];
      const fragOffset = (buf[p + 2] << 5) | (buf[p + 3] >> 3);
      p += 8;
      next = n;
      if (fragOffset !== 0) {
        out.proto = next;
        out.fragment = true;
        out.error = ParseError.None;
        return true;
      }
    } else {
      out.proto = next;
      if (p > end) return fail(out, ParseError.Truncated);
      return ports(buf, p, end, out);
    }
  }
  // Too many extension headers: treat as malformed rather than guess.
  return fail(out, ParseError.Header);
}

/** TCP, UDP and SCTP all start with 16-bit source then destination port. */
function ports(buf: Uint8Array, p: number, end: number, out: ParsedPacket): boolean {
  const proto = out.proto;
  if (proto === IPPROTO_TCP || proto === IPPROTO_UDP || proto === IPPROTO_SCTP) {
    if (p + 4 > end) return fail(out, ParseError.Truncated);
    out.srcPort = (buf[p] << 8) | buf[p + 1];
    out.dstPort = (buf[p + 2] << 8) | buf[p + 3];
  }
  out.error = ParseError.None;
  return true;
}

// ---- address strings, cached -------------------------------------------------------------------
// A direct-mapped cache keyed by the raw address: pods talk to few peers, so most packets reuse an
// existing string (no allocation, and V8 keeps its hash for the decider's Map lookups).

const V4_SLOTS = 4096;
const v4Keys = new Uint32Array(V4_SLOTS);
const v4Vals: string[] = new Array<string>(V4_SLOTS).fill("");

export function ip4String(buf: Uint8Array, o: number): string {
  const a = buf[o];
  const b = buf[o + 1];
  const c = buf[o + 2];
  const d = buf[o + 3];
  const key = ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
  const slot = Math.imul(key, 0x9e3779b1) >>> 20;
  const cached = v4Vals[slot];
  // "" marks an empty slot; key 0 (0.0.0.0) is then simply formatted again.
  if (cached !== "" && v4Keys[slot] === key) return cached;
  const s = `${a}.${b}.${c}.${d}`;
  v4Keys[slot] = key;
  v4Vals[slot] = s;
  return s;
}

const V6_SLOTS = 1024;
const v6Keys = new Int32Array(V6_SLOTS * 4);
const v6Vals: string[] = new Array<string>(V6_SLOTS).fill("");
const groups = new Uint16Array(8);

export function ip6String(buf: Uint8Array, o: number): string {
  const w0 = (buf[o] << 24) | (buf[o + 1] << 16) | (buf[o + 2] << 8) | buf[o + 3];
  const w1 = (buf[o + 4] << 24) | (buf[o + 5] << 16) | (buf[o + 6] << 8) | buf[o + 7];
  const w2 = (buf[o + 8] << 24) | (buf[o + 9] << 16) | (buf[o + 10] << 8) | buf[o + 11];
  const w3 = (buf[o + 12] << 24) | (buf[o + 13] << 16) | (buf[o + 14] << 8) | buf[o + 15];
  const slot =
    (Math.imul(w0 ^ Math.imul(w1, 31) ^ Math.imul(w2, 961) ^ w3, 0x9e3779b1) >>> 22) & (V6_SLOTS - 1);
  const k = slot << 2;
  const cached = v6Vals[slot];
  if (
    cached !== "" &&
    v6Keys[k] === w0 &&
    v6Keys[k + 1] === w1 &&
    v6Keys[k + 2] === w2 &&
    v6Keys[k + 3] === w3
  ) {
    return cached;
  }
  const s = formatIp6(buf, o);
  v6Keys[k] = w0;
  v6Keys[k + 1] = w1;
  v6Keys[k + 2] = w2;
  v6Keys[k + 3] = w3;
  v6Vals[slot] = s;
  return s;
}

/**
 * RFC 5952: lowercase hex without leading zeros; the longest run of two or more zero groups becomes
 * "::" (the leftmost on a tie); embedded IPv4 stays hex, as ipaddr.js prints it.
 */
export function formatIp6(buf: Uint8Array, o: number): string {
  let bestStart = -1;
  let bestLen = 1; // a single zero group is never compressed
  let runStart = -1;
  for (let i = 0; i < 8; i++) {
    const g = (buf[o + 2 * i] << 8) | buf[o + 2 * i + 1];
    groups[i] = g;
    if (g === 0) {
      if (runStart < 0) runStart = i;
      if (i - runStart + 1 > bestLen) {
        bestLen = i - runStart + 1;
        bestStart = runStart;
      }
    } else {
      runStart = -1;
    }
  }
  let s = "";
  if (bestStart < 0) {
    for (let i = 0; i < 8; i++) s += i === 0 ? groups[i].toString(16) : `:${groups[i].toString(16)}`;
    return s;
  }
  for (let i = 0; i < bestStart; i++) s += i === 0 ? groups[i].toString(16) : `:${groups[i].toString(16)}`;
  s += "::";
  const after = bestStart + bestLen;
  for (let i = after; i < 8; i++) s += i === after ? groups[i].toString(16) : `:${groups[i].toString(16)}`;
  return s;
}
