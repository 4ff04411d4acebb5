/**
 * The revoke benchmark still runs end to end (quick mode: 2k real conntrack entries) and reports
 * its JSON object last: every denied entry gone, every allowed one kept, deletes over netlink.
 */
import { expect, it } from "vitest";
import { runQuickBench } from "./support/bench-run.js";

it("bench/revoke.ts --quick --json revokes exactly the denied entries", () => {
  const r = runQuickBench("revoke", 120_000);
  expect(r.status, r.stderr).toBe(0);
  const out = r.json();
  expect(out).toMatchObject({
    entries: 2000,
    denied: 1000,
    revoked: 1000,
    entriesLeft: 1000,
    via: "netlink",
  });
  for (const k of ["listMs", "deleteMs", "passMs", "toolCallMs"]) expect(out[k], k).toBeGreaterThan(0);
}, 150_000);
