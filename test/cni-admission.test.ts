/**
 * CniAdmission's address hints, on a real Reconciler and PolicyTable (never synced, so no kernel):
 * the address a CNI ADD reports stands until the pod's status reports the same one.
 */
import { describe, expect, it } from "vitest";
import { CniAdmission, CniError } from "../src/agent/cni-admission.js";
import { createLogger } from "../src/agent/log.js";
import { createMetrics } from "../src/agent/metrics.js";
import { Reconciler } from "../src/agent/reconciler.js";
import { PolicyTable } from "../src/compiler/table.js";
import type { KernelApplier } from "../src/dataplane/apply.js";
import { mkPod } from "./support/cluster-gen.js";

function setup() {
  const table = new PolicyTable();
  const log = createLogger("silent");
  const reconciler = new Reconciler({
    table,
    applier: {} as KernelApplier, // never called: the reconciler is never told the cluster is synced
    local: { localPods: async () => [] },
    render: { dataplane: "iptables" },
    metrics: createMetrics(false),
    log,
  });
  return { table, admission: new CniAdmission({ reconciler, log, waitMs: 150 }) };
}

const ADD = (ip: string) => ({
  containerId: "c1",
  netns: "/var/run/netns/x",
  ifName: "eth0",
  args: "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=db",
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
});
