import fc from "fast-check";
import ipaddr from "ipaddr.js";
import { describe, expect, it } from "vitest";
import { allowedCpus, parseCpuList } from "../src/dataplane/nfqueue/cpus.js";
import {
  formatIp6,
  ip4String,
  ip6String,
  ParsedPacket,
  ParseError,
  parsePacket,
} from "../src/dataplane/packet.js";

function v4(
  src: string,
  dst: string,
  proto: number,
  opts: { options?: number[]; fragOffset?: number } = {},
): number[] {
  const options = opts.options ?? [];
  const ihl = 5 + options.length / 4;
  const h = [0x40 | ihl, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
  const frag = opts.fragOffset ?? 0;
  h[6] = (frag >> 8) & 0x1f;
  h[7] = frag & 0xff;
  return [...h, ...ipaddr.parse(src).toByteArray(), ...ipaddr.parse(dst).toByteArray(), ...options];
}

function v6(src: string, dst: string, next: number, ext: number[] = []): number[] {
  return [
    0x60,
    0,
    0,
    0,
    0,
    0,
    next,
    64,
    ...ipaddr.parse(src).toByteArray(),
    ...ipaddr.parse(dst).toByteArray(),
    ...ext,
  ];
}

/** Source port, destination port, then filler for the rest of a transport header. */
function l4(sport: number, dport: number, len = 20): number[] {
  const b = new Array<number>(len).fill(0);
  b[0] = sport >> 8;
  b[1] = sport & 0xff;
  b[2] = dport >> 8;
  b[3] = dport & 0xff;
  return b;
}

function parse(bytes: number[], pad = 0): ParsedPacket {
  // Parse at an offset inside a larger buffer, as the verdict loop does with its recv buffer.
  const buf = Buffer.alloc(bytes.length + 7 + pad, 0xee);
  Buffer.from(bytes).copy(buf, 7);
  const out = new ParsedPacket();
  parsePacket(buf, 7, bytes.length, out);
  return out;
}

describe("parsePacket", () => {
  it("IPv4 TCP", () => {
    const p = parse([...v4("10.244.1.11", "10.244.1.12", 6), ...l4(40000, 80)]);
    expect(p).toMatchObject({ error: 0, family: 4, src: "10.244.1.11", dst: "10.244.1.12", proto: 6 });
    expect([p.srcPort, p.dstPort, p.fragment]).toEqual([40000, 80, false]);
  });

  it("IPv4 UDP with 8 bytes of options (IHL 7)", () => {
    const options = [0x94, 0x04, 0, 0, 0x01, 0x01, 0x01, 0x00]; // router alert, NOPs, EOL
    const p = parse([...v4("192.168.0.1", "255.255.255.255", 17, { options }), ...l4(68, 67, 8)]);
    expect(p).toMatchObject({ error: 0, src: "192.168.0.1", dst: "255.255.255.255", proto: 17 });
    expect([p.srcPort, p.dstPort]).toEqual([68, 67]);
  });

  it("IPv4 SCTP and a non-first fragment (no ports)", () => {
    const s = parse([...v4("0.0.0.0", "1.2.3.4", 132), ...l4(5000, 7000, 12)]);
    expect([s.src, s.proto, s.srcPort, s.dstPort]).toEqual(["0.0.0.0", 132, 5000, 7000]);
    const f = parse([...v4("1.2.3.4", "5.6.7.8", 17, { fragOffset: 185 }), ...l4(1, 2, 8)]);
    expect([f.error, f.fragment, f.proto, f.srcPort, f.dstPort]).toEqual([0, true, 17, 0, 0]);
  });

  it("IPv4 ICMP: protocol without ports", () => {
    const p = parse([...v4("10.0.0.1", "10.0.0.2", 1), 8, 0, 0, 0, 0, 1, 0, 1]);
    expect([p.error, p.proto, p.srcPort, p.dstPort]).toEqual([0, 1, 0, 0]);
  });

  it("IPv6 TCP and UDP", () => {
    const t = parse([...v6("fd00::1", "2001:db8:0:0:1:0:0:1", 6), ...l4(50000, 443)]);
    expect(t).toMatchObject({ error: 0, family: 6, src: "fd00::1", dst: "2001:db8::1:0:0:1", proto: 6 });
    expect([t.srcPort, t.dstPort]).toEqual([50000, 443]);
    const u = parse([...v6("::1", "::ffff:10.0.0.1", 17), ...l4(53, 5353, 8)]);
    expect([u.src, u.dst, u.proto, u.dstPort]).toEqual(["::1", "::ffff:a00:1", 17, 5353]);
  });

  it("IPv6 walks hop-by-hop, routing and destination options to SCTP", () => {
    const hop = [43, 0, 5, 2, 0, 0, 1, 0]; // next routing, len 0 (8 bytes): router alert + PadN
    const routing = [60, 2, 0, 0, 0, 0, 0, 0, ...ipaddr.parse("fd00::99").toByteArray()]; // 24 bytes
    const dstopts = [132, 1, ...new Array<number>(14).fill(0)]; // next SCTP, 16 bytes
    const p = parse([...v6("fd00::a", "fd00::b", 0, [...hop, ...routing, ...dstopts]), ...l4(9, 7000, 12)]);
    expect([p.error, p.proto, p.srcPort, p.dstPort]).toEqual([0, 132, 9, 7000]);
  });

  it("IPv6 fragment header: first fragment has ports, later ones do not", () => {
    const first = [17, 0, 0x00, 0x01, 0, 0, 0, 42]; // offset 0, M=1
    const p = parse([...v6("fd00::a", "fd00::b", 44, first), ...l4(1234, 53, 8)]);
    expect([p.error, p.fragment, p.proto, p.dstPort]).toEqual([0, false, 17, 53]);
    const later = [17, 0, 0x05, 0x48, 0, 0, 0, 42]; // offset 169
    const q = parse([...v6("fd00::a", "fd00::b", 44, later), 1, 2, 3, 4]);
    expect([q.error, q.fragment, q.proto, q.srcPort, q.dstPort]).toEqual([0, true, 17, 0, 0]);
  });

  it("reports truncation and garbage as errors, never throws", () => {
    const full = [...v4("10.0.0.1", "10.0.0.2", 6), ...l4(1, 2)];
    expect(parse(full.slice(0, 22)).error).toBe(ParseError.Truncated);
    expect(parse(full.slice(0, 10)).error).toBe(ParseError.Short);
    expect(parse([0x45]).error).toBe(ParseError.Short);
    expect(parse([0x43, ...new Array<number>(30).fill(0)]).error).toBe(ParseError.Header); // IHL 3
    expect(parse([0x4f, ...new Array<number>(30).fill(0)]).error).toBe(ParseError.Header); // IHL 15 > len
    expect(parse([0x20, ...new Array<number>(40).fill(0)]).error).toBe(ParseError.Version);
    const hop = [0, 0, 0, 0, 0, 0, 0, 0];
    const loop = v6("::1", "::2", 0, [
      ...hop,
      ...hop,
      ...hop,
      ...hop,
      ...hop,
      ...hop,
      ...hop,
      ...hop,
      ...hop,
      ...hop,
    ]);
    expect(parse(loop).error).toBe(ParseError.Header);
    const out = new ParsedPacket();
    expect(parsePacket(Buffer.alloc(4), 2, 10, out)).toBe(false); // past the end of the buffer
    expect(parsePacket(Buffer.alloc(0), 0, 0, out)).toBe(false);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 128 }), fc.nat(8), (bytes, cut) => {
        const o = new ParsedPacket();
        const ok = parsePacket(bytes, 0, Math.max(0, bytes.length - cut), o);
        return ok === (o.error === ParseError.None);
      }),
      { numRuns: 5000 },
    );
  });
});

describe("address strings", () => {
  const v6Bytes = fc.oneof(
    fc.uint8Array({ minLength: 16, maxLength: 16 }),
    // Mostly-zero groups, so compression edge cases (ties, runs at both ends) are common.
    fc
      .array(fc.oneof(fc.constant(0), fc.constant(0), fc.constant(1), fc.integer({ min: 0, max: 0xffff })), {
        minLength: 8,
        maxLength: 8,
      })
      .map((g) => Uint8Array.from(g.flatMap((x) => [x >> 8, x & 0xff]))),
  );

  it("IPv6 formatting equals ipaddr.js toString (RFC 5952)", () => {
    fc.assert(
      fc.property(v6Bytes, (b) => {
        const expected = ipaddr.fromByteArray([...b]).toString();
        expect(formatIp6(b, 0)).toBe(expected);
        expect(ip6String(b, 0)).toBe(expected); // through the cache
        expect(ipaddr.parse(expected).toString()).toBe(expected);
      }),
      { numRuns: 20000 },
    );
  });

  it("IPv4 formatting equals ipaddr.js toString", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 4, maxLength: 4 }), (b) => {
        expect(ip4String(b, 0)).toBe(ipaddr.fromByteArray([...b]).toString());
      }),
      { numRuns: 20000 },
    );
  });

  it("known RFC 5952 cases", () => {
    const f = (s: string) => formatIp6(Uint8Array.from(ipaddr.parse(s).toByteArray()), 0);
    expect(f("0:0:1:0:0:1:1:1")).toBe("::1:0:0:1:1:1"); // tie: leftmost run
    expect(f("1:0:0:2:0:0:0:3")).toBe("1:0:0:2::3"); // longest run
    expect(f("1:0:1:1:1:1:1:1")).toBe("1:0:1:1:1:1:1:1"); // a lone zero stays
    expect(f("::")).toBe("::");
    expect(f("1::")).toBe("1::");
    expect(f("2001:DB8::A")).toBe("2001:db8::a");
  });

  it("the cache returns the right string when slots collide", () => {
    const seen = new Map<string, string>();
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (b) => {
        const s = ip6String(b, 0);
        seen.set(Buffer.from(b).toString("hex"), s);
        return s === formatIp6(b, 0);
      }),
      { numRuns: 5000 },
    );
    for (const [hex, s] of seen) expect(ip6String(Buffer.from(hex, "hex"), 0)).toBe(s);
  });
});

describe("CPU lists (pinning one verdict thread per queue)", () => {
  it("parses the kernel's list format and reads Cpus_allowed_list", () => {
    expect(parseCpuList("0-3,8,10-11")).toEqual([0, 1, 2, 3, 8, 10, 11]);
    expect(parseCpuList("5")).toEqual([5]);
    expect(parseCpuList("x,2")).toEqual([2]);
    expect(allowedCpus("Name:\tnode\nCpus_allowed_list:\t2-3\n")).toEqual([2, 3]);
    // Unreadable: the first availableParallelism() CPUs.
    expect(allowedCpus("nothing here").length).toBeGreaterThan(0);
  });
});
