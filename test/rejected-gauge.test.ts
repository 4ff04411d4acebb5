/**
 * podwall_rejected_objects through the kube source: a real KubeSource against the API server double
 * feeding a real Reconciler (no kernel: it is never asked to sync). The gauge counts objects that are
 * rejected now, so it goes back down when the bad object is fixed or deleted.
 */
import { afterEach, describe, expect, it } from "vitest";
import { createLogger } from "../src/agent/log.js";
import { createMetrics } from "../src/agent/metrics.js";
import { Reconciler } from "../src/agent/reconciler.js";
import { KubeSource } from "../src/agent/sources/kube-source.js";
import { PolicyTable } from "../src/compiler/table.js";
import type { KernelApplier } from "../src/dataplane/apply.js";
import { ApiServerDouble, type KObj } from "./support/apiserver-double.js";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function pod(name: string, ip: string): KObj {
  return {
    metadata: { name, namespace: "a", labels: { app: "web" } },
    spec: { nodeName: "node-1", containers: [{ name: "app", image: "app:1" }] },
    status: { phase: "Running", podIP: ip, podIPs: [{ ip }] },
  };
}

async function until(pred: () => Promise<boolean>, ms = 10_000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await pred()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return pred();
}

describe("podwall_rejected_objects with the kube source", () => {
  it("goes back down when a rejected pod is fixed, and when one is deleted", async () => {
    const api = new ApiServerDouble();
    await api.start();
    cleanups.push(() => api.close());
    api.create("Namespace", { metadata: { name: "a" } });
    api.create("Pod", pod("bad1", "10.0.0.999"));
    api.create("Pod", pod("bad2", "not-an-ip"));
    api.create("Pod", pod("good", "10.0.0.3"));
    const metrics = createMetrics(false);
    const reconciler = new Reconciler({
      table: new PolicyTable(),
      applier: { apply: async () => ({}), invalidate: () => {} } as unknown as KernelApplier,
      local: { localPods: async () => [] },
      render: { dataplane: "iptables" },
      metrics,
      log: createLogger("silent"),
      batchDelayMs: 60_000, // no sync in this test: only the sink side is looked at
    });
    cleanups.push(() => reconciler.stop());
    const src = new KubeSource({ kubeconfigPath: api.kubeconfigFile(), nodeName: "node-1" });
    cleanups.push(() => src.stop());
    await src.start(reconciler);
    const gauge = async () =>
      (await metrics.rejectedCurrent.get()).values.find((v) => v.labels.kind === "Pod")?.value ?? 0;
    expect(await until(async () => (await gauge()) === 2)).toBe(true);
    api.update("Pod", pod("bad1", "10.0.0.1")); // fixed
    expect(await until(async () => (await gauge()) === 1)).toBe(true);
    expect(reconciler.table.pod("a/bad1")?.info.ips).toEqual(["10.0.0.1"]);
    api.delete("Pod", { metadata: { name: "bad2", namespace: "a" } }); // gone
    expect(await until(async () => (await gauge()) === 0)).toBe(true);
    expect((await metrics.rejectedObjects.get()).values.find((v) => v.labels.kind === "Pod")?.value).toBe(2);
  });
});
