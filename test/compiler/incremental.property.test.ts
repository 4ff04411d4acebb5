/**
 * Property: after any sequence of pod / namespace / policy events, the incrementally maintained
 * table, a table built from scratch from the final state, a VerdictCache that lived through the
 * whole sequence, and the plain evaluator all agree on every flow.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decide } from "../../src/compiler/engine.js";
import { PolicyTable } from "../../src/compiler/table.js";
import { VerdictCache } from "../../src/compiler/verdict-cache.js";
import {
  applyToState,
  applyToTable,
  type ClusterEvent,
  cloneState,
  emptyState,
  eventIntentArb,
  flowIntentArb,
  hasLiveIPConflict,
  initialIntentsArb,
  loadTable,
  resolveFlow,
  resolveIntent,
  stateIPs,
  toPlain,
} from "../support/cluster-gen.js";
import { plainDecide } from "../support/plain-evaluator.js";

const RUNS = Number(process.env.PODWALL_PROPERTY_RUNS ?? 200);

describe("incremental table vs full rebuild vs plain evaluator", () => {
  it(`agree after random event sequences (${RUNS} sequences)`, () => {
    fc.assert(
      fc.property(
        initialIntentsArb,
        fc.array(eventIntentArb, { maxLength: 40, size: "medium" }),
        fc.array(flowIntentArb, { minLength: 60, maxLength: 120 }),
        (initial, events, flowIntents) => {
          const state = emptyState();
          const table = new PolicyTable();
          const cache = new VerdictCache(table, 64);
          const applied: ClusterEvent[] = [];
          for (const intent of [...initial, ...events]) {
            const ev = resolveIntent(state, intent);
            if (!ev) continue;
            // Two live pods on one IP: which one owns it is implementation-defined; skip such events.
            const next = cloneState(state);
            applyToState(next, ev);
            if (hasLiveIPConflict(next)) continue;
            applyToState(state, ev);
            applyToTable(table, ev); // generated policies are valid: this must not throw
            applied.push(ev);
            // Keep the cache warm with verdicts that later events may make stale.
            const ips = stateIPs(state);
            if (ips.length > 1) cache.lookup(ips[0], ips[ips.length - 1], 6, 80);
          }
          const fresh = loadTable(new PolicyTable(), state);
          expect(table.stats()).toEqual(fresh.stats());
          const plain = toPlain(state);
          const ips = stateIPs(state);
          for (const fi of flowIntents) {
            const flow = resolveFlow(ips, fi);
            const inc = decide(table, flow);
            const full = decide(fresh, flow);
            const cached = cache.lookup(flow.src, flow.dst, flow.proto, flow.port);
            const oracle = plainDecide(plain, flow);
            const got = (v: typeof inc) => ({
              allowed: v.allowed,
              ingress: v.ingress.result,
              egress: v.egress.result,
            });
            const ctx = JSON.stringify({ flow, events: applied.length });
            expect(got(full), `full rebuild vs plain ${ctx}`).toEqual(oracle);
            expect(got(inc), `incremental vs plain ${ctx}`).toEqual(oracle);
            expect(cached, `cache vs incremental ${ctx}`).toEqual(inc);
            expect(inc.ingress.by, ctx).toEqual(full.ingress.by);
            expect(inc.egress.by, ctx).toEqual(full.egress.by);
          }
        },
      ),
      { numRuns: RUNS },
    );
  });
});
