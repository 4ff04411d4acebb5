/**
 * deny-log: the JSON deny line as pino writes it (exact keys and order), and the one token bucket
 * with suppressedSinceLast, driven by a fake clock.
 */
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { type DenyEntry, DenyLog, denyLine, TokenBucket } from "../src/agent/deny-log.js";
import { createLogger } from "../src/agent/log.js";

function capture() {
  const lines: Record<string, unknown>[] = [];
  const dest = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split("\n")) if (l.trim()) lines.push(JSON.parse(l));
      cb();
    },
  });
  return { lines, log: createLogger("info", dest) };
}

const entry: DenyEntry = {
  event: "deny",
  src: "dev/tool",
  srcIP: "10.0.1.5",
  srcPort: 40000,
  dst: "shop/db",
  dstIP: "10.0.2.7",
  port: 5432,
  proto: 6,
  direction: "ingress",
  policies: ["shop/db-from-api"],
};

describe("the deny line", () => {
  it("has the documented keys in order, with pino's own fields around them", async () => {
    const { lines, log } = capture();
    const d = new DenyLog({ log, ratePerSec: 10 });
    d.write({ ...entry, tier: "admin", rule: { index: 2, name: "deny-dev" }, action: "deny" });
    log.flush();
    await new Promise((r) => setTimeout(r, 20));
    expect(lines).toHaveLength(1);
    const l = lines[0];
    const keys = Object.keys(l).filter(
      (k) => !["level", "time", "pid", "hostname", "name", "component", "msg"].includes(k),
    );
    expect(keys).toEqual([
      "event",
      "src",
      "srcIP",
      "srcPort",
      "dst",
      "dstIP",
      "port",
      "protocol",
      "direction",
      "policies",
      "tier",
      "rule",
      "action",
      "suppressedSinceLast",
    ]);
    expect(l).toMatchObject({
      event: "deny",
      src: "dev/tool",
      dst: "shop/db",
      port: 5432,
      protocol: "TCP",
      direction: "ingress",
      policies: ["shop/db-from-api"],
      rule: { index: 2, name: "deny-dev" },
      suppressedSinceLast: 0,
      msg: "denied dev/tool -> shop/db 5432/TCP on ingress (shop/db-from-api)",
    });
  });

  it("leaves out what is unknown and names unknown ends by address", () => {
    const l = denyLine({ ...entry, src: undefined, dst: undefined, proto: 132, event: "audit-deny" }, 3);
    expect(l).toEqual({
      event: "audit-deny",
      src: "10.0.1.5",
      srcIP: "10.0.1.5",
      srcPort: 40000,
      dst: "10.0.2.7",
      dstIP: "10.0.2.7",
      port: 5432,
      protocol: "SCTP",
      direction: "ingress",
      policies: ["shop/db-from-api"],
      suppressedSinceLast: 3,
    });
    expect(denyLine({ ...entry, proto: 47 }, 0).protocol).toBe("47");
  });
});

describe("the rate limit", () => {
  it("writes a burst, suppresses the rest, refills with time, and reports what it skipped", () => {
    let now = 0;
    const written: Record<string, unknown>[] = [];
    let suppressed = 0;
    const d = new DenyLog({
      log: { info: (o) => written.push(o as Record<string, unknown>) },
      ratePerSec: 4, // a token per 250 ms: exact in binary floating point
      burst: 3,
      onSuppressed: () => suppressed++,
      now: () => now,
    });
    const results = Array.from({ length: 10 }, () => d.write(entry) !== undefined);
    expect(results).toEqual([true, true, true, false, false, false, false, false, false, false]);
    expect(suppressed).toBe(7);
    now += 125; // half a token: still none
    expect(d.write(entry)).toBeUndefined();
    now += 125; // one token
    const next = d.write(entry)!;
    expect(next.suppressedSinceLast).toBe(8);
    expect(d.write(entry)).toBeUndefined();
    now += 10_000; // refills to the burst, not beyond
    expect(Array.from({ length: 5 }, () => d.write(entry) !== undefined)).toEqual([
      true,
      true,
      true,
      false,
      false,
    ]);
    expect(written.map((w) => w.suppressedSinceLast)).toEqual([0, 0, 0, 8, 1, 0, 0]);
    expect(d.stats()).toEqual({ written: 7, suppressed: 11 });
    expect(suppressed).toBe(11);
  });

  it("is one bucket for deny and audit-deny lines", () => {
    let now = 0;
    const d = new DenyLog({ log: { info: () => {} }, ratePerSec: 2, now: () => now });
    expect(d.write(entry)).toBeDefined();
    expect(d.write({ ...entry, event: "audit-deny" })).toBeDefined();
    expect(d.write({ ...entry, event: "audit-deny" })).toBeUndefined();
    now += 500;
    expect(d.write(entry)!.suppressedSinceLast).toBe(1);
  });

  it("token bucket: the default burst is one second's worth; bad settings are refused", () => {
    let now = 0;
    const b = new TokenBucket(4, undefined, () => now);
    expect(Array.from({ length: 6 }, () => b.take())).toEqual([true, true, true, true, false, false]);
    now += 250;
    expect(b.take()).toBe(true);
    expect(() => new TokenBucket(0)).toThrow(/rate 0/);
    expect(() => new TokenBucket(5, 0.5)).toThrow(/burst 0.5/);
  });
});
