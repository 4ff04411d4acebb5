/**
 * Hostile input: hundreds of generated objects (a wrong type in every field, invalid names and labels,
 * inherited-property names, alias bombs, cycles, odd encodings). Each is either accepted exactly as the
 * API server would accept it, or rejected with one ManifestError naming the file, line, object and
 * field, never another exception; nothing accepted can put object text into kernel input.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  emptyManifestSet,
  ManifestError,
  parseManifests,
  tableFromManifests,
} from "../../src/agent/sources/manifests.js";
import { decide } from "../../src/compiler/engine.js";
import { renderNode, restoreTexts } from "../../src/dataplane/render.js";
import { commentText } from "../../src/dataplane/rule-layer.js";
import { mkFlow } from "../support/cluster-gen.js";
import { CNP, HOSTILE, type Json, NP, NS, POD, paths, replaced } from "../support/hostile.js";

/** Parse one document; the only allowed failure is a ManifestError that names file and field. */
function outcome(obj: Json): "ok" | "rejected" {
  const text = JSON.stringify({ apiVersion: "v1", kind: "List", items: [NS, POD, obj] });
  try {
    const set = parseManifests(text, "h.json", emptyManifestSet());
    // Accepted: it compiles, decides and renders, and the restore text is made of safe tokens only.
    const table = tableFromManifests(set);
    decide(table, mkFlow("10.0.0.1", "10.0.0.2", 80, 6));
    const d = renderNode(table, [{ key: "x/b", hostIf: "pwtest0" }], { dataplane: "iptables" });
    const texts = restoreTexts(d);
    for (const line of `${texts.iptables}\n${texts.ip6tables}`.split("\n")) {
      expect(line).not.toMatch(/ACCEPT.*PODWALL-FORWARD|\\/);
      expect(line.includes(String.fromCharCode(0))).toBe(false);
      const comments = [...line.matchAll(/--comment "([^"]*)"/g)].map((m) => m[1]);
      for (const c of comments) expect(c).toBe(commentText(c));
    }
    return "ok";
  } catch (e) {
    expect(e, String((e as Error)?.stack)).toBeInstanceOf(ManifestError);
    expect((e as Error).message).toMatch(/^h\.json(:\d+)?: /);
    return "rejected";
  }
}

describe("a wrong value in every field", () => {
  for (const [name, base] of [
    ["NetworkPolicy", NP],
    ["ClusterNetworkPolicy", CNP],
    ["Pod", POD],
    ["Namespace", NS],
  ] as const) {
    it(`${name}: every path x every hostile value is accepted or rejected cleanly`, () => {
      let rejected = 0;
      let total = 0;
      for (const p of paths(base).slice(1)) {
        for (const h of HOSTILE) {
          total++;
          if (outcome(replaced(base, p, h)) === "rejected") rejected++;
        }
      }
      expect(total).toBeGreaterThan(100);
      // Most replacements are invalid; a few (a label value "", a null optional field) are valid.
      expect(rejected / total).toBeGreaterThan(0.5);
    });
  }
});

describe("the API server's rules, case by case", () => {
  const bad = (obj: Json, field: RegExp) => {
    const text = JSON.stringify(obj);
    expect(() => parseManifests(text, "f.json")).toThrow(field);
  };
  const ok = (obj: Json) => parseManifests(JSON.stringify(obj), "f.json");

  it("names, namespaces, label keys and values", () => {
    const np = NP as { [k: string]: Json };
    const meta = np.metadata as { [k: string]: Json };
    bad(
      { ...np, metadata: { ...meta, name: "x\n-I PODWALL-FORWARD 1 -j ACCEPT\n#" } },
      /metadata\.name: invalid name/,
    );
    bad({ ...np, metadata: { ...meta, name: "a/b" } }, /metadata\.name: invalid name/);
    bad({ ...np, metadata: { ...meta, name: "Upper" } }, /metadata\.name/);
    bad({ ...np, metadata: { ...meta, name: "a".repeat(254) } }, /metadata\.name/);
    bad({ ...np, metadata: { ...meta, namespace: "a.b" } }, /metadata\.namespace: invalid namespace/);
    bad({ ...np, metadata: { ...meta, namespace: 5 } }, /metadata\.namespace: must be a string/);
    bad(
      { ...np, metadata: { ...meta, labels: { "a b": "x" } } },
      /metadata\.labels\["a b"\]: invalid label key/,
    );
    bad({ ...np, metadata: { ...meta, labels: { a: "x y" } } }, /invalid label value/);
    bad({ ...np, metadata: { ...meta, labels: { a: 1 } } }, /label values must be strings/);
    bad({ ...np, apiVersion: "networking.k8s.io/v2" }, /apiVersion/);
    bad({ ...np, apiVersion: 1 }, /apiVersion: must be a string/);
    ok({ ...np, metadata: { ...meta, name: "a.b-c", labels: { "example.com/a_b.c": "", z: "Y-1.2_3" } } });
  });

  it("inherited property names are never protocols or operators", () => {
    for (const proto of ["constructor", "toString", "__proto__", "valueOf", "hasOwnProperty"]) {
      bad(
        {
          ...(NP as object),
          spec: { podSelector: {}, ingress: [{ ports: [{ protocol: proto, port: 80 }] }] },
        },
        /spec\.ingress\[0\]\.ports\[0\]\.protocol: unknown protocol/,
      );
    }
    bad(
      {
        ...(NP as object),
        spec: { podSelector: { matchExpressions: [{ key: "a", operator: "constructor" }] } },
      },
      /operator: unknown operator/,
    );
  });

  it("a NetworkPolicy without spec, or with spec: null, is deny-all ingress for its namespace", () => {
    for (const spec of [undefined, null]) {
      const obj: Record<string, Json> = {
        apiVersion: "networking.k8s.io/v1",
        kind: "NetworkPolicy",
        metadata: { name: "p", namespace: "x" },
      };
      if (spec === null) obj.spec = null;
      const set = parseManifests(
        JSON.stringify({ apiVersion: "v1", kind: "List", items: [NS, POD, obj] }),
        "f.json",
      );
      const v = decide(tableFromManifests(set), mkFlow("10.0.0.9", "10.0.0.2", 80, 6));
      expect(v.ingress.result).toBe("denied");
    }
  });

  it("legacy CIDR syntax the server stores: leading zeros are decimal, host bits masked", () => {
    const set = ok({
      ...(NP as object),
      spec: { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: "010.000.0.1/08" } }] }] },
    });
    const t = tableFromManifests({ ...set, namespaces: [], pods: [] });
    expect([...t.allPolicies()][0].spec.ingress?.[0].peers?.[0]).toMatchObject({
      block: { cidr: { text: "10.0.0.0/8" } },
    });
  });

  it("an IPv4-mapped except inside an IPv4 block is the IPv4 range it maps, as the server reads it", () => {
    const set = ok({
      ...(NP as object),
      spec: {
        podSelector: {},
        ingress: [{ from: [{ ipBlock: { cidr: "10.0.0.0/8", except: ["::ffff:10.1.0.0/112"] } }] }],
      },
    });
    const t = tableFromManifests({ ...set, namespaces: [], pods: [] });
    expect([...t.allPolicies()][0].spec.ingress?.[0].peers?.[0]).toMatchObject({
      block: { excepts: [{ text: "10.1.0.0/16" }] },
    });
    // A mapped except of a prefix shorter than /96 maps no IPv4 range: still refused.
    bad(
      {
        ...(NP as object),
        spec: {
          podSelector: {},
          ingress: [{ from: [{ ipBlock: { cidr: "10.0.0.0/8", except: ["::ffff:0:0/95"] } }] }],
        },
      },
      /must be a strict subset/,
    );
  });

  it("unknown fields are rejected in manifests (kubectl's strict validation)", () => {
    bad({ ...(NP as object), spec: { podSelectr: {} } }, /spec\.podSelectr: unknown field/);
    bad(
      { ...(CNP as object), spec: { ...(CNP as { spec: object }).spec, subjekt: {} } },
      /spec\.subjekt: unknown field/,
    );
  });

  it("ClusterNetworkPolicy schema: subject, peers, counts, ranges, actions, tier, priority", () => {
    const spec = (CNP as { spec: Record<string, Json> }).spec;
    const with_ = (s: Record<string, Json>) => ({ ...(CNP as object), spec: { ...spec, ...s } });
    bad(with_({ tier: "admin" }), /spec\.tier: must be Admin or Baseline/);
    bad(with_({ priority: 1001 }), /spec\.priority: must be an integer 0-1000/);
    bad(with_({ priority: -1 }), /spec\.priority/);
    bad(
      with_({ subject: { namespaces: {}, pods: { podSelector: {} } } }),
      /spec\.subject: must set exactly one/,
    );
    bad(with_({ subject: { pods: { namespaceSelector: {} } } }), /spec\.subject\.pods\.podSelector: missing/);
    bad(
      with_({ ingress: Array.from({ length: 26 }, () => ({ action: "Deny", from: [{ namespaces: {} }] })) }),
      /at most 25 items/,
    );
    bad(with_({ ingress: [{ action: "Allow", from: [{ namespaces: {} }] }] }), /unknown action "Allow"/);
    bad(with_({ ingress: [{ action: "Deny", from: [] }] }), /from: must have at least 1 item/);
    bad(
      with_({ ingress: [{ action: "Deny", from: [{ namespaces: {}, pods: { podSelector: {} } }] }] }),
      /exactly one/,
    );
    bad(with_({ ingress: [{ action: "Deny", from: [{ networks: ["10.0.0.0/8"] }] }] }), /unknown field/);
    bad(
      with_({ egress: [{ action: "Deny", to: [{ networks: ["10.0.0.0/33"] }] }] }),
      /networks\[0\]: invalid CIDR/,
    );
    bad(
      with_({ egress: [{ action: "Deny", to: [{ domainNames: ["a.com"] }] }] }),
      /only allowed in Accept rules/,
    );
    bad(with_({ egress: [{ action: "Accept", to: [{ domainNames: ["*"] }] }] }), /invalid domain name/);
    bad(
      with_({
        egress: [
          {
            action: "Accept",
            to: [{ networks: ["10.0.0.0/8"] }],
            protocols: [{ destinationNamedPort: "http" }],
          },
        ],
      }),
      /named port cannot be used with nodes, networks or domainNames/,
    );
    bad(
      with_({
        egress: [
          {
            action: "Accept",
            to: [{ namespaces: {} }],
            protocols: [{ tcp: { destinationPort: { range: { start: 9, end: 9 } } } }],
          },
        ],
      }),
      /start \(9\) must be less than end \(9\)/,
    );
    bad(
      with_({ egress: [{ action: "Accept", to: [{ namespaces: {} }], protocols: [{ tcp: {} }] }] }),
      /destinationPort: missing/,
    );
    bad({ ...(CNP as object), apiVersion: "policy.networking.k8s.io/v1alpha1" }, /apiVersion/);
    bad(
      {
        apiVersion: "policy.networking.k8s.io/v1alpha1",
        kind: "BaselineAdminNetworkPolicy",
        metadata: { name: "other" },
        spec: { subject: { namespaces: {} } },
      },
      /must be named "default"/,
    );
  });
});

describe("YAML as kubectl reads it", () => {
  const parse = (text: string) => () => parseManifests(text, "y.yaml");
  const np = (port: string) =>
    `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: ${port}}]}]\n`;

  it("a value YAML 1.1 and 1.2 read differently is refused, naming the field", () => {
    expect(parse(np("0120"))).toThrow(
      /ambiguous YAML at spec\.ingress\[0\]\.ports\[0\]\.port: kubectl \(YAML 1\.1\) reads 80 where YAML 1\.2 reads 120/,
    );
    expect(parse(np("120"))).not.toThrow();
    expect(parse(`apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {a: yes}}\n`)).toThrow(
      /ambiguous YAML at metadata\.labels\.a/,
    );
    expect(parse(`apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {a: "yes"}}\n`)).not.toThrow();
  });

  it("alias errors, alias bombs and cycles are a ManifestError, never a crash", () => {
    const bomb = `a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n`;
    for (const text of ["a: *nope\n", bomb, "a: &a\n  b: *a\n", "? &k a\n: 1\n*k : 2\n", "\ufeffkind: [\n"]) {
      expect(parse(text)).toThrow(ManifestError);
    }
  });

  it("a byte-order mark is read as kubectl reads it", () => {
    expect(parse(`\ufeffapiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n`)).not.toThrow();
  });
});

describe("the one encoder for kernel input", () => {
  it("never lets a quote, backslash, newline or NUL through", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 400 }), (s) => {
        const out = commentText(s);
        expect(out).toMatch(/^[A-Za-z0-9 ._:/=,()[\]'@*+#<>?-]*$/);
        expect(out.length).toBeLessThanOrEqual(200);
      }),
      { numRuns: 2000 },
    );
  });
});
