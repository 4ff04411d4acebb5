/**
 * Invalid NetworkPolicies: InputError naming the offending field, and a rejected update leaves the
 * previous version of the policy in force.
 */
import { describe, expect, it } from "vitest";
import { decide } from "../../src/compiler/engine.js";
import { InputError } from "../../src/compiler/errors.js";
import { PolicyTable } from "../../src/compiler/table.js";
import { mkFlow, mkPod, mkPolicy } from "../support/cluster-gen.js";

function errorOf(spec: Record<string, unknown>): InputError {
  const t = new PolicyTable();
  try {
    t.upsertPolicy(mkPolicy("ns", "bad", spec));
  } catch (e) {
    expect(e).toBeInstanceOf(InputError);
    expect(t.stats().policies).toBe(0);
    return e as InputError;
  }
  throw new Error("expected an InputError");
}

const ingressPeer = (peer: unknown) => ({ podSelector: {}, ingress: [{ from: [peer] }] });
const ingressPort = (port: unknown) => ({ podSelector: {}, ingress: [{ ports: [port] }] });

describe("InputError fields", () => {
  const cases: [string, Record<string, unknown>, string][] = [
    [
      "invalid CIDR",
      ingressPeer({ ipBlock: { cidr: "10.0.0.256/8" } }),
      "spec.ingress[0].from[0].ipBlock.cidr",
    ],
    [
      "CIDR without prefix",
      ingressPeer({ ipBlock: { cidr: "10.0.0.1" } }),
      "spec.ingress[0].from[0].ipBlock.cidr",
    ],
    [
      "prefix too long",
      ingressPeer({ ipBlock: { cidr: "fd00::/129" } }),
      "spec.ingress[0].from[0].ipBlock.cidr",
    ],
    [
      "except outside cidr",
      ingressPeer({ ipBlock: { cidr: "10.0.0.0/16", except: ["10.0.1.0/24", "10.1.0.0/24"] } }),
      "spec.ingress[0].from[0].ipBlock.except[1]",
    ],
    [
      "except equal to cidr",
      ingressPeer({ ipBlock: { cidr: "10.0.0.0/16", except: ["10.0.0.0/16"] } }),
      "spec.ingress[0].from[0].ipBlock.except[0]",
    ],
    [
      "except of the other family",
      ingressPeer({ ipBlock: { cidr: "0.0.0.0/0", except: ["fd00::/8"] } }),
      "spec.ingress[0].from[0].ipBlock.except[0]",
    ],
    ["unknown protocol", ingressPort({ port: 80, protocol: "ICMP" }), "spec.ingress[0].ports[0].protocol"],
    ["lowercase protocol", ingressPort({ port: 80, protocol: "tcp" }), "spec.ingress[0].ports[0].protocol"],
    [
      "unknown selector operator",
      { podSelector: { matchExpressions: [{ key: "app", operator: "Equals", values: ["x"] }] } },
      "spec.podSelector.matchExpressions[0].operator",
    ],
    [
      "In with no values",
      ingressPeer({ podSelector: { matchExpressions: [{ key: "app", operator: "In", values: [] }] } }),
      "spec.ingress[0].from[0].podSelector.matchExpressions[0].values",
    ],
    [
      "NotIn with values absent",
      ingressPeer({ namespaceSelector: { matchExpressions: [{ key: "app", operator: "NotIn" }] } }),
      "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].values",
    ],
    ["endPort without port", ingressPort({ endPort: 90 }), "spec.ingress[0].ports[0].endPort"],
    ["endPort < port", ingressPort({ port: 90, endPort: 80 }), "spec.ingress[0].ports[0].endPort"],
    [
      "named port with endPort",
      ingressPort({ port: "http", endPort: 90 }),
      "spec.ingress[0].ports[0].endPort",
    ],
    ["port out of range", ingressPort({ port: 65536 }), "spec.ingress[0].ports[0].port"],
    ["unknown policyType", { podSelector: {}, policyTypes: ["Ingress", "Sideways"] }, "spec.policyTypes[1]"],
    [
      "ipBlock with podSelector",
      ingressPeer({ ipBlock: { cidr: "10.0.0.0/8" }, podSelector: {} }),
      "spec.ingress[0].from[0]",
    ],
    [
      "ipBlock with namespaceSelector",
      {
        podSelector: {},
        egress: [{ to: [{ podSelector: {} }, { ipBlock: { cidr: "10.0.0.0/8" }, namespaceSelector: {} }] }],
      },
      "spec.egress[0].to[1]",
    ],
    ["a peer with nothing set", { podSelector: {}, egress: [{ to: [{}] }] }, "spec.egress[0].to[0]"],
  ];
  for (const [what, spec, field] of cases) {
    it(what, () => {
      const e = errorOf(spec);
      expect(e.field).toBe(field);
      expect(e.object).toBe("NetworkPolicy ns/bad");
    });
  }
});

describe("rejected updates", () => {
  it("leave the previous version of the policy in force", () => {
    const t = new PolicyTable();
    t.upsertPod(mkPod("ns", "srv", { app: "srv" }, "10.0.0.1"));
    t.upsertPod(mkPod("ns", "client", { app: "client" }, "10.0.0.2"));
    const good = mkPolicy("ns", "p", {
      podSelector: { matchLabels: { app: "srv" } },
      ingress: [{ from: [{ podSelector: { matchLabels: { app: "client" } } }] }],
    });
    t.upsertPolicy(good);
    const fingerprint = t.policy("ns/p")!.spec.fingerprint;
    const generation = t.generation;
    const stats = t.stats();
    const bad = mkPolicy("ns", "p", {
      podSelector: {},
      ingress: [{ from: [{ ipBlock: { cidr: "10.0.0.0/8", except: ["11.0.0.0/16"] } }] }],
    });
    expect(() => t.upsertPolicy(bad)).toThrow(InputError);
    expect(t.policy("ns/p")!.spec.fingerprint).toBe(fingerprint);
    expect(t.generation).toBe(generation);
    expect(t.stats()).toEqual(stats);
    expect(decide(t, mkFlow("10.0.0.2", "10.0.0.1")).allowed).toBe(true);
    expect(decide(t, mkFlow("10.0.0.1", "10.0.0.2")).ingress.result).toBe("not-isolated");
  });
});
