/**
 * deny-log-rules, pure: the rendered rule arguments, id validation, prefix parsing, the counter
 * listing parser and counter deltas. The same strings are programmed into a real kernel (and read
 * back with iptables-save) in test/nflog.test.ts.
 */
import { describe, expect, it } from "vitest";
import {
  counterDelta,
  DENY_LIMITED_CHAIN,
  DENY_LOG_ID_MAX,
  denyLimitedChainRules,
  denyLogIdFromPrefix,
  denyLogRuleArgs,
  hashlimitName,
  NFLOG_PREFIX_MAX_BYTES,
  parseChainPackets,
  validateDenyLogId,
} from "../src/dataplane/deny-log-rules.js";

const base = { group: 5, direction: "ingress" as const, ratePerSec: 10, burst: 20 };

describe("denyLogRuleArgs", () => {
  it("renders the limit (per destination pod on ingress) and the NFLOG copy, in iptables-save order", () => {
    const [limit, nflog] = denyLogRuleArgs("np.shop.db.0", base);
    expect(limit).toBe(
      "-m hashlimit --hashlimit-above 10/sec --hashlimit-burst 20 --hashlimit-mode dstip --hashlimit-name pw-deny-ing-10-20 --hashlimit-htable-size 4096 --hashlimit-htable-max 16384 -j PODWALL-DENY-LIMITED",
    );
    expect(nflog).toBe(
      '-j NFLOG --nflog-prefix "pw:np.shop.db.0" --nflog-group 5 --nflog-size 128 --nflog-threshold 16',
    );
  });

  it("keys egress by the source pod, and a different limit gets its own hashlimit table", () => {
    const [limit] = denyLogRuleArgs("x", { ...base, direction: "egress", ratePerSec: 3, burst: 7 });
    expect(limit).toContain("--hashlimit-mode srcip");
    expect(limit).toContain(`--hashlimit-name ${hashlimitName("egress", 3, 7)}`);
    expect(hashlimitName("egress", 3, 7)).toBe("pw-deny-egr-3-7");
    expect(hashlimitName("ingress", 3, 7)).not.toBe(hashlimitName("ingress", 3, 8));
  });

  it("passes copy size, threshold, table size and the limited chain through", () => {
    const [limit, nflog] = denyLogRuleArgs("x", {
      ...base,
      copyBytes: 96,
      threshold: 1,
      htableMax: 1024,
      limitedChain: "PODWALL-LIM-ING",
    });
    expect(limit).toMatch(/--hashlimit-htable-size 1024 --hashlimit-htable-max 1024 -j PODWALL-LIM-ING$/);
    expect(nflog).toMatch(/--nflog-size 96 --nflog-threshold 1$/);
  });

  it("rejects bad options, naming them", () => {
    expect(() => denyLogRuleArgs("x", { ...base, group: 65536 })).toThrow(/group 65536/);
    expect(() => denyLogRuleArgs("x", { ...base, ratePerSec: 0 })).toThrow(/rate per second 0/);
    expect(() => denyLogRuleArgs("x", { ...base, burst: 1.5 })).toThrow(/burst 1.5/);
    expect(() => denyLogRuleArgs("x", { ...base, threshold: 0 })).toThrow(/threshold 0/);
    expect(() => denyLogRuleArgs("x", { ...base, direction: "both" as never })).toThrow(/direction both/);
    expect(() => denyLogRuleArgs("x", { ...base, limitedChain: "FORWARD" })).toThrow(
      /limited chain "FORWARD"/,
    );
  });

  it("the limited chain applies the same deny action", () => {
    expect(denyLimitedChainRules()).toEqual(["-j DROP"]);
    expect(denyLimitedChainRules("REJECT")).toEqual(["-j REJECT"]);
    expect(DENY_LIMITED_CHAIN.length).toBeLessThanOrEqual(28);
  });
});

describe("deny log ids and prefixes", () => {
  it("fits the marker and the longest id in the 63 bytes the kernel keeps", () => {
    const id = "a".repeat(DENY_LOG_ID_MAX);
    const [, nflog] = denyLogRuleArgs(id, base);
    const prefix = /--nflog-prefix "([^"]+)"/.exec(nflog)![1];
    expect(Buffer.byteLength(prefix)).toBe(NFLOG_PREFIX_MAX_BYTES);
    expect(denyLogIdFromPrefix(prefix)).toBe(id);
  });

  it("rejects ids that are too long, empty, or carry characters a restore line would mangle", () => {
    expect(() => validateDenyLogId("a".repeat(DENY_LOG_ID_MAX + 1))).toThrow(/61 characters, at most 60/);
    expect(() => validateDenyLogId("")).toThrow(/non-empty/);
    for (const bad of ["a b", 'a"b', "a'b", "a\\b", "a#b", "a\nb", "é", "a;b"]) {
      expect(() => validateDenyLogId(bad), bad).toThrow(/only letters, digits/);
      expect(() => denyLogRuleArgs(bad, base), bad).toThrow(/deny log id/);
    }
    for (const good of ["np/shop/db", "cnp:admin-1.r3", "a=b,c+d@e_f", "0"])
      expect(() => validateDenyLogId(good)).not.toThrow();
  });

  it("reads the id back only from podwall's prefixes", () => {
    expect(denyLogIdFromPrefix("pw:np/shop/db")).toBe("np/shop/db");
    expect(denyLogIdFromPrefix("")).toBeUndefined();
    expect(denyLogIdFromPrefix("pw:")).toBeUndefined();
    expect(denyLogIdFromPrefix("kube-router:drop")).toBeUndefined();
    expect(denyLogIdFromPrefix("pw:has space")).toBeUndefined();
  });
});

describe("limited-packet counters", () => {
  it("sums the packet column of an iptables -vxnL listing", () => {
    const listing = [
      "Chain PODWALL-DENY-LIMITED (12 references)",
      "    pkts      bytes target     prot opt in     out     source               destination",
      "  123456  7890123 DROP       0    --  *      *       0.0.0.0/0            0.0.0.0/0",
      "",
    ].join("\n");
    expect(parseChainPackets(listing)).toBe(123456);
    expect(
      parseChainPackets(`${listing}      4      240 DROP       0    --  *      *       ::/0  ::/0\n`),
    ).toBe(123460);
    expect(parseChainPackets("iptables: No chain/target/match by that name.")).toBeUndefined();
  });

  it("takes the first read as the baseline and survives a counter that started over", () => {
    expect(counterDelta(undefined, 500)).toBe(0);
    expect(counterDelta(500, 800)).toBe(300);
    expect(counterDelta(800, 800)).toBe(0);
    expect(counterDelta(800, 40)).toBe(40);
  });
});
