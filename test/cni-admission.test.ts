/**
 * CniAdmission's address hints, on a real Reconciler and PolicyTable (never synced, so no kernel):
 * the address a CNI ADD reports stands until the pod's status reports the same one, survives an
 * agent restart through its file, and never carries over to a re-created pod of the same name.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { CniAdmission, CniError } from "../src/agent/cni-admission.js";
import { createLogger } from "../src/agent/log.js";
import { createMetrics } from "../src/agent/metrics.js";
import { Reconciler } from "../src/agent/reconciler.js";
import { PolicyTable } from "../src/compiler/table.js";
import type { KernelApplier } from "../src/dataplane/apply.js";
import { mkPod } from "./support/cluster-gen.js";

function setup(hintsFile?: string) {
  const table = new PolicyTable();
  const log = createLogger("silent");
  const reconciler = new Reconciler({
    table,
    // No kernel here: a sync (only after synced()) fails and is retried until stop().
    applier: {
      apply: async () => {
        throw new Error("no kernel in this test");
      },
      invalidate: () => {},
    } as unknown as KernelApplier,
    local: { localPods: async () => [] },
    render: { dataplane: "iptables" },
    metrics: createMetrics(false),
    log,
  });
  return { table, reconciler, admission: new CniAdmission({ reconciler, log, waitMs: 150, hintsFile }) };
}

const dir = mkdtempSync(join(tmpdir(), "podwall-cni-hints-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ADD = (ip: string, uid?: string) => ({
  containerId: "c1",
  netns: "/var/run/netns/x",
  ifName: "eth0",
  args: `K8S_POD_NAMESPACE=ns;K8S_POD_NAME=db${uid ? `;K8S_POD_UID=${uid}` : ""}`,
  config: JSON.stringify({ cniVersion: "1.0.0", prevResult: { ips: [{ address: `${ip}/24` }] } }),
});

describe("CniAdmission address hints", () => {
  it("an ADD's address stands over a status without one, or with a replaced sandbox's old one", async () => {
    const { table, admission } = setup();
    admission.upsertPod(mkPod("ns", "db", { app: "db" }, "10.0.0.12"));
    // No sync can happen here, so the ADD fails after its wait, but the address is in the table.
    await expect(admission.add(ADD("10.0.0.99"))).rejects.toBeInstanceOf(CniError);
    expect(table.pod("ns/db")!.info.ips).toEqual(["10.0.0.99"]);
    // The old sandbox's status arrives late: the new address stays.
    admission.upsertPod(mkPod("ns", "db", { app: "db", v: "2" }, "10.0.0.12"));
    expect(table.pod("ns/db")!.info.ips).toEqual(["10.0.0.99"]);
    expect(table.pod("ns/db")!.info.labels).toMatchObject({ v: "2" });
    // A status without addresses: still the hint.
    admission.upsertPod({ ...mkPod("ns", "db", { app: "db" }, "10.0.0.12"), ips: [] });
    expect(table.pod("ns/db")!.info.ips).toEqual(["10.0.0.99"]);
    // The status reports the new address: it takes over, and later updates are taken as they come.
    admission.upsertPod(mkPod("ns", "db", { app: "db" }, "10.0.0.99"));
    expect(admission.hinted).toBe(0);
    admission.upsertPod({ ...mkPod("ns", "db", { app: "db" }, "10.0.0.99"), ips: [] });
    expect(table.pod("ns/db")!.info.ips).toEqual([]);
  });

  it("a deleted pod forgets its hint; an unknown pod is refused with code 11", async () => {
    const { table, admission } = setup();
    admission.upsertPod({ ...mkPod("ns", "db", { app: "db" }, "10.0.0.12"), ips: [] });
    await expect(admission.add(ADD("10.0.0.50"))).rejects.toThrow(/no successful sync/);
    expect(admission.hinted).toBe(1);
    admission.deletePod("ns", "db");
    expect(admission.hinted).toBe(0);
    admission.upsertPod({ ...mkPod("ns", "db", { app: "db" }, "10.0.0.12"), ips: [] });
    expect(table.pod("ns/db")!.info.ips).toEqual([]);
    const err = await admission
      .add({ ...ADD("10.0.0.51"), args: "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=nope" })
      .catch((e) => e);
    expect(err).toBeInstanceOf(CniError);
    expect([err.code, err.message]).toEqual([11, "pod ns/nope is not known to the podwall agent yet"]);
  });

  it("hints survive a restart through their file; a pod gone meanwhile or re-created drops its hint", async () => {
    const file = join(dir, "restart.json");
    const first = setup(file);
    first.admission.upsertPod({ ...mkPod("ns", "db", { app: "db" }, "10.0.0.12"), uid: "u1", ips: [] });
    first.admission.upsertPod({ ...mkPod("ns", "web", { app: "web" }, "10.0.0.13"), ips: [] });
    await expect(first.admission.add(ADD("10.0.0.60", "u1"))).rejects.toBeInstanceOf(CniError);
    await expect(
      first.admission.add({ ...ADD("10.0.0.61"), args: "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web" }),
    ).rejects.toBeInstanceOf(CniError);
    expect(JSON.parse(readFileSync(file, "utf8"))).toEqual({
      "ns/db": { ips: ["10.0.0.60"], uid: "u1" },
      "ns/web": { ips: ["10.0.0.61"] },
    });

    // A new agent: its first list has db (status still without addresses) and no web (deleted).
    const second = setup(file);
    expect(second.admission.hinted).toBe(2);
    second.admission.upsertPod({ ...mkPod("ns", "db", { app: "db" }, "10.0.0.12"), uid: "u1", ips: [] });
    expect(second.table.pod("ns/db")!.info.ips).toEqual(["10.0.0.60"]);
    second.admission.synced();
    await second.reconciler.stop();
    expect(second.admission.hinted).toBe(1);
    expect(Object.keys(JSON.parse(readFileSync(file, "utf8")))).toEqual(["ns/db"]);

    // db re-created under the same name (another uid): the old sandbox's address is not its own.
    second.admission.upsertPod({ ...mkPod("ns", "db", { app: "db" }, "10.0.0.12"), uid: "u2", ips: [] });
    expect(second.table.pod("ns/db")!.info.ips).toEqual([]);
    expect(second.admission.hinted).toBe(0);
    expect(JSON.parse(readFileSync(file, "utf8"))).toEqual({});
  });

  it("an ADD waits for its own incarnation of the pod, not a deleted one the informer still holds", async () => {
    const { table, admission } = setup();
    admission.upsertPod({ ...mkPod("ns", "db", { app: "db" }, "10.0.0.12"), uid: "old" });
    await expect(admission.add(ADD("10.0.0.70", "new"))).rejects.toThrow(
      /not known to the podwall agent yet/,
    );
    expect(table.pod("ns/db")!.info.ips).toEqual(["10.0.0.12"]);
    expect(admission.hinted).toBe(0);
  });

  it("a corrupt hints file is skipped, not fatal", () => {
    const file = join(dir, "corrupt.json");
    writeFileSync(file, "{not json");
    expect(setup(file).admission.hinted).toBe(0);
    writeFileSync(file, JSON.stringify({ "ns/a": { ips: ["10.0.0.1"] }, "ns/b": { ips: ["not-an-ip"] } }));
    expect(setup(file).admission.hinted).toBe(1);
  });
});
