/**
 * Real-kernel e2e for ownership (src/dataplane/ownership.ts): another component's chain named
 * PODWALL-X (jumped to from FORWARD), its set PODWALL-Y, and its rule commented "pw:deadbeef
 * hand-made" survive podwall's syncs and its cleanup, in both iptables backends, while what
 * podwall wrote (also what an earlier agent wrote: same names, same comments) is adopted by a
 * restarted applier without a rewrite and removed by cleanup.
 * Runs as root; every lab is removed in afterAll, also when a test fails.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadManifestFiles, tableFromManifests } from "../src/agent/sources/manifests.js";
import { labLocalPods } from "../src/cli/lab.js";
import { KernelApplier } from "../src/dataplane/apply.js";
import { run } from "../src/dataplane/exec.js";
import { ownsChain, ownsSet } from "../src/dataplane/ownership.js";
import { renderNode } from "../src/dataplane/render.js";
import { LabHarness } from "./support/harness.js";
import { policy, sel, xyzModel } from "./support/model.js";

const TCP80 = { port: 80, protocol: "TCP" as const };

describe.each(["nft", "legacy"] as const)(
  "ownership, %s backend: foreign PODWALL-* objects are not podwall's",
  (backend) => {
    let h: LabHarness;
    const ipt = (fam: 4 | 6) => `${fam === 4 ? "iptables" : "ip6tables"}-${backend}`;
    beforeAll(async () => {
      h = await LabHarness.up(
        `ow${backend[0]}${process.pid.toString(36)}`.slice(0, 12),
        xyzModel(),
        "iptables",
      );
    });
    afterAll(async () => {
      await h?.down();
    });

    const save = async (fam: 4 | 6) =>
      (await run(`${ipt(fam)}-save`, ["-t", "filter"], { netns: h.lab.nodeNetns })).stdout
        .split("\n")
        .filter((l) => !l.startsWith("#"))
        .map((l) => l.replace(/\[\d+:\d+\]/, "[0:0]"));
    /** The lines of a save that are not podwall's by its own grammar (what must stay byte-for-byte). */
    const foreign = (lines: string[]) =>
      lines.filter((l) => {
        const name = /^(?::|-A )(\S+)/.exec(l)?.[1];
        if (name && ownsChain(name)) return false;
        return !/ -j PODWALL-(FORWARD|INPUT|OUTPUT) *$/.test(l) || !/^-A (FORWARD|INPUT|OUTPUT) /.test(l);
      });
    const sets = async () =>
      (await run("ipset", ["list", "-n"], { netns: h.lab.nodeNetns })).stdout
        .trim()
        .split("\n")
        .filter(Boolean);

    it("keeps them across syncs and cleanup, and adopts its own state after a restart", async () => {
      const nsn = h.lab.nodeNetns;
      for (const fam of [4, 6] as const) {
        const cmd = ipt(fam);
        await run(cmd, ["-N", "PODWALL-X"], { netns: nsn });
        await run(cmd, ["-A", "PODWALL-X", "-p", "tcp", "--dport", "9", "-j", "DROP"], { netns: nsn });
        await run(cmd, ["-A", "FORWARD", "-p", "tcp", "--dport", "9", "-j", "PODWALL-X"], { netns: nsn });
        await run(
          cmd,
          [
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            "7",
            "-m",
            "comment",
            "--comment",
            "pw:deadbeef hand-made",
            "-j",
            "DROP",
          ],
          { netns: nsn },
        );
      }
      await run("ipset", ["create", "PODWALL-Y", "hash:ip"], { netns: nsn });
      await run("ipset", ["add", "PODWALL-Y", "192.0.2.9"], { netns: nsn });
      const before = { 4: foreign(await save(4)), 6: foreign(await save(6)) };
      expect(before[4].join("\n")).toContain("pw:deadbeef hand-made");

      // Syncs that create chains and sets, then delete some (stale ones go).
      h.setPolicies([
        policy("x", "deny", { podSelector: {} }),
        policy("y", "from-b", { podSelector: {}, ingress: [{ from: [{ podSelector: sel({ pod: "b" }) }] }] }),
      ]);
      await h.sync();
      h.setPolicies([policy("x", "deny", { podSelector: {} })]);
      const s2 = await h.sync();
      expect(s2.chainsDeleted).toBeGreaterThan(0);
      expect(s2.setsDestroyed).toBeGreaterThan(0);
      expect((await h.compare([TCP80])).wrong).toEqual([]);
      for (const fam of [4, 6] as const) expect(foreign(await save(fam))).toEqual(before[fam]);
      expect(await sets()).toContain("PODWALL-Y");
      expect((await run("ipset", ["list", "PODWALL-Y"], { netns: nsn })).stdout).toContain("192.0.2.9");

      // A restarted agent (a fresh applier reading the kernel) adopts exactly podwall's state: the
      // same desired state writes nothing.
      const fresh = new KernelApplier({ netns: nsn });
      expect(await fresh.detectBackend()).toBe(backend);
      const local = await labLocalPods(h.lab);
      const again = await fresh.apply(renderNode(h.table, local, { dataplane: "iptables" }));
      expect([again.chainsWritten, again.chainsDeleted, again.setsCreated, again.setsDestroyed]).toEqual([
        0, 0, 0, 0,
      ]);

      const removed = await fresh.cleanup();
      expect(removed.chains).toBeGreaterThan(0);
      expect(removed.jumps).toBe(6); // FORWARD, INPUT, OUTPUT in each family; the foreign jump stays
      for (const fam of [4, 6] as const) {
        const after = await save(fam);
        expect(after).toEqual(before[fam]);
        expect(after.some((l) => /PODWALL-(FORWARD|INPUT|OUTPUT|ING|EGR|NOADDR)/.test(l))).toBe(false);
      }
      expect(await sets()).toEqual(["PODWALL-Y"]);
    });
  },
);

describe("ownership grammar", () => {
  it("claims podwall's names only", () => {
    for (const c of [
      "PODWALL-FORWARD",
      "PODWALL-NOADDR",
      "PODWALL-ING-0123456789abcdef",
      "PODWALL-EGR-ffffffffffffffff",
      "PODWALL-INGN-0123456789abcde",
      "PODWALL-EGRB-0123456789abcde",
      "PODWALL-DENY-LIMITED",
    ])
      expect(ownsChain(c)).toBe(true);
    for (const c of [
      "PODWALL-X",
      "PODWALL-ING-x",
      "PODWALL-ING-0123456789abcdef0",
      "PODWALL-FORWARD2",
      "FORWARD",
    ])
      expect(ownsChain(c)).toBe(false);
    for (const s of [
      "PODWALL-S4-0123456789abcdef",
      "PODWALL-TN6-0123456789abcdef",
      "PODWALL-B6-0123456789abcdef",
      "PODWALL-D4-0123456789abcdef",
      "PODWALL-F6-0123456789abcdef",
    ])
      expect(ownsSet(s)).toBe(true);
    for (const s of ["PODWALL-Y", "PODWALL-S4-x", "PODWALL-X4-0123456789abcdef", "other"])
      expect(ownsSet(s)).toBe(false);
  });

  it("covers every name the renderer makes (the demo cluster: tiers, named ports, ipBlocks)", () => {
    const set = loadManifestFiles([join(import.meta.dirname, "..", "examples", "demo")]);
    const table = tableFromManifests(set);
    const local = set.pods.map((p, i) => ({ key: `${p.namespace}/${p.name}`, hostIf: `veth${i}` }));
    for (const dataplane of ["iptables", "nfqueue"] as const) {
      const d = renderNode(table, local, { dataplane });
      const chains = [...d.v4.chains.keys(), ...d.v6.chains.keys()];
      expect(chains.length).toBeGreaterThan(3);
      expect(chains.filter((c) => !ownsChain(c))).toEqual([]);
      expect([...d.sets.keys()].filter((n) => !ownsSet(n))).toEqual([]);
    }
  });
});
