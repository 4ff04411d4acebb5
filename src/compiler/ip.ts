/**
 * ip: strict parsing of IP addresses and CIDRs into canonical text and bytes.
 *
 * Owns: the one canonical spelling of an address (IPv4 dotted quad, IPv6 as ipaddr.js prints it,
 * RFC 5952 compression) that every map key in podwall uses, and host-bit masking of CIDRs.
 * May not: do I/O. Rejects the legacy forms the API server rejects too (short or octal IPv4).
 */
import ipaddr from "ipaddr.js";

export type Family = 4 | 6;

export interface ParsedIP {
  family: Family;
  bytes: Uint8Array;
  text: string;
}

export interface ParsedCIDR {
  family: Family;
  /** Network address bytes with host bits cleared. */
  bytes: Uint8Array;
  prefix: number;
  /** Canonical "addr/prefix" with host bits cleared. */
  text: string;
}

const V4_STRICT = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export function parseIP(s: string): ParsedIP | undefined {
  if (typeof s !== "string") return undefined;
  if (V4_STRICT.test(s)) {
    const a = ipaddr.IPv4.parse(s);
    return { family: 4, bytes: Uint8Array.from(a.toByteArray()), text: a.toString() };
  }
  if (s.includes(":") && ipaddr.IPv6.isValid(s)) {
    const a = ipaddr.IPv6.parse(s);
    if (a.zoneId) return undefined;
    return { family: 6, bytes: Uint8Array.from(a.toByteArray()), text: a.toString() };
  }
  return undefined;
}

export function canonicalIP(s: string): string | undefined {
  return parseIP(s)?.text;
}

export function parseCIDR(s: string): ParsedCIDR | undefined {
  if (typeof s !== "string") return undefined;
  const slash = s.indexOf("/");
  if (slash < 0) return undefined;
  const addr = parseIP(s.slice(0, slash));
  const lenText = s.slice(slash + 1);
  if (!addr || !/^\d{1,3}$/.test(lenText)) return undefined;
  const prefix = Number(lenText);
  const bits = addr.family === 4 ? 32 : 128;
  if (prefix > bits) return undefined;
  const bytes = maskBytes(addr.bytes, prefix);
  const text = `${bytesToText(addr.family, bytes)}/${prefix}`;
  return { family: addr.family, bytes, prefix, text };
}

/** An address in a legacy field (pod and node status): IPv4 octets may carry leading zeros, read as decimal. */
export function parseLegacyIP(s: string): ParsedIP | undefined {
  if (typeof s !== "string") return undefined;
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (m) {
    const octets = m.slice(1).map(Number);
    return octets.some((o) => o > 255) ? undefined : parseIP(octets.join("."));
  }
  return parseIP(s);
}

/**
 * A CIDR in a field the API server still parses the legacy, sloppy way (NetworkPolicy ipBlock):
 * IPv4 octets and the prefix length may carry leading zeros, read as decimal ("010.0.0.0/08" is
 * 10.0.0.0/8), and host bits may be set. Accepting exactly what the server stores keeps a policy
 * the cluster enforces from being rejected here.
 */
export function parseLegacyCIDR(s: string): ParsedCIDR | undefined {
  if (typeof s !== "string") return undefined;
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,3})$/.exec(s);
  if (m) {
    const octets = m.slice(1, 5).map(Number);
    if (octets.some((o) => o > 255)) return undefined;
    return parseCIDR(`${octets.join(".")}/${Number(m[5])}`);
  }
  const slash = s.indexOf("/");
  if (slash > 0 && s.includes(":") && /^\d{1,3}$/.test(s.slice(slash + 1)))
    return parseCIDR(`${s.slice(0, slash)}/${Number(s.slice(slash + 1))}`);
  return parseCIDR(s);
}

export function maskBytes(bytes: Uint8Array, prefix: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, prefix - i * 8));
    out[i] = keep === 0 ? 0 : bytes[i] & ((0xff << (8 - keep)) & 0xff);
  }
  return out;
}

export function bytesToText(_family: Family, bytes: Uint8Array): string {
  return ipaddr.fromByteArray(Array.from(bytes)).toString();
}

/** An IPv4-mapped IPv6 CIDR (::ffff:0:0/96 and longer) as the IPv4 CIDR it maps, else undefined. */
export function unmapV4(c: ParsedCIDR): ParsedCIDR | undefined {
  if (c.family !== 6 || c.prefix < 96) return undefined;
  const b = c.bytes;
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return undefined;
  if (b[10] !== 0xff || b[11] !== 0xff) return undefined;
  return parseCIDR(`${b[12]}.${b[13]}.${b[14]}.${b[15]}/${c.prefix - 96}`);
}

/** Bit i (0 = most significant) of an address. */
export function bitAt(bytes: Uint8Array, i: number): number {
  return (bytes[i >> 3] >> (7 - (i & 7))) & 1;
}

/** True when `inner` lies inside `outer` (same family, longer-or-equal prefix, same network bits). */
export function cidrContains(outer: ParsedCIDR, inner: ParsedCIDR): boolean {
  if (outer.family !== inner.family || inner.prefix < outer.prefix) return false;
  const masked = maskBytes(inner.bytes, outer.prefix);
  return masked.every((b, i) => b === outer.bytes[i]);
}

export function ipInCIDR(ip: ParsedIP, cidr: ParsedCIDR): boolean {
  if (ip.family !== cidr.family) return false;
  const masked = maskBytes(ip.bytes, cidr.prefix);
  return masked.every((b, i) => b === cidr.bytes[i]);
}
