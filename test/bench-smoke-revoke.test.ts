/**
 * The revoke benchmark still runs end to end (quick mode: 2k real conntrack entries) and reports
 * its JSON object last: every denied entry gone, every allowed one kept, deletes over netlink.
 */
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { expect, it } from "vitest";

it("bench/revoke.ts --quick --json revokes exactly the denied entries", () => {
  const root = join(import.meta.dirname, "..");
  const r = spawnSync(
    process.execPath,
    ["--import", "tsx", join(root, "bench/revoke.ts"), "--quick", "--json"],
    {
      cwd: root,
      encoding: "utf8",
      timeout: 120_000,
    },
  );
  expect(r.status, r.stderr).toBe(0);
  const out = JSON.parse(r.stdout.trim().split("\n").pop()!);
  expect(out).toMatchObject({
    entries: 2000,
    denied: 1000,
    revoked: 1000,
    entriesLeft: 1000,
    via: "netlink",
  });
  for (const k of ["listMs", "deleteMs", "passMs", "toolCallMs"]) expect(out[k], k).toBeGreaterThan(0);
}, 150_000);
