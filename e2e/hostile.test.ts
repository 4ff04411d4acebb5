/**
 * Hostile input end to end: generated objects (a wrong value in every field of every kind, from
 * test/support/hostile.ts) and hostile files (alias bombs, cycles, ambiguous YAML, a byte-order mark,
 * binary garbage, an oversized file), through `podwall simulate` and through a running agent on a
 * folder, with real probes before and after each: every rejection is exit 2 with one line and no
 * stack trace; the agent never crashes, stays ready and healthy, counts each one, and no rejected
 * object changes what is enforced. Runs as root; the lab (ho*), the agent and the folders go in
 * afterAll, also on failure.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManifestError, parseManifests } from "../src/agent/sources/manifests.js";
import { type LabState, labUp, type ProbeRequest, probe } from "../src/dataplane/lab/lab.js";
import { labPodsFor } from "../src/dataplane/lab/matrix.js";
import { AgentUnderTest, tearDown, until } from "../test/support/agent-process.js";
import { hostileVariants, type Json } from "../test/support/hostile.js";
import { manifestSet } from "./support/harness.js";
import { IP, type Obj, policy, sel, xyzModel } from "./support/model.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const CLI = join(ROOT, "dist/cli/main.js");
const LAB = `ho${process.pid.toString(36)}`.slice(0, 12);
const TCP80 = { port: 80, protocol: "TCP" } as const;

/** Rejected variants, sampled evenly (stable): the ones the manifest reader refuses. */
function rejectedSample(n: number): { what: string; obj: Json }[] {
  const all: { what: string; obj: Json }[] = [];
  for (const v of hostileVariants()) {
    try {
      parseManifests(JSON.stringify(v.obj), "v.json");
    } catch (e) {
      if (e instanceof ManifestError)
        all.push({ what: `${v.kind} ${v.path} = ${JSON.stringify(v.value)?.slice(0, 40)}`, obj: v.obj });
    }
  }
  const step = all.length / n;
  return Array.from({ length: n }, (_, i) => all[Math.floor(i * step)]);
}

/** Files that break at the file level, not one object. */
const HOSTILE_FILES: [string, string | Buffer][] = [
  [
    "alias bomb",
    `a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n`,
  ],
  ["unresolved alias", "kind: *nope\n"],
  ["self-referencing alias", "a: &a\n  b: *a\n"],
  [
    "YAML 1.1 octal",
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: 0120}]}]\n",
  ],
  ["binary garbage", Buffer.from([0x00, 0xff, 0xfe, 0x9c, 0x22, 0x0a, 0x2d, 0x2d, 0x0a, 0x80])],
  ["unclosed flow", "kind: Pod\nmetadata: {name: [unclosed\n"],
  ["oversized", `# ${"x".repeat(1_100_000)}\n`],
];

let lab: LabState | undefined;
let src = "";
let scratch = "";
let agent: AgentUnderTest | undefined;

/** The baseline: x is default-deny except from x/b; y is isolated for egress to x only. */
const BASELINE: Obj[] = [
  policy("x", "from-b", { podSelector: {}, ingress: [{ from: [{ podSelector: sel({ pod: "b" }) }] }] }),
  policy("y", "egress-x", {
    podSelector: {},
    policyTypes: ["Egress"],
    egress: [{ to: [{ namespaceSelector: sel({ ns: "x" }) }] }],
  }),
];
const PROBES: ProbeRequest[] = [
  { from: "x/b", toIp: IP("x", "a"), ...TCP80 },
  { from: "y/a", toIp: IP("x", "a"), ...TCP80 },
  { from: "z/a", toIp: IP("x", "a"), ...TCP80 },
  { from: "y/a", toIp: IP("z", "a"), ...TCP80 },
  { from: "z/a", toIp: IP("y", "a"), ...TCP80 },
];
const EXPECTED = [true, false, false, false, true];

async function rejections(a: AgentUnderTest): Promise<number> {
  const body = (await a.get("/metrics")).body;
  let n = 0;
  for (const m of body.matchAll(
    /^podwall_(?:rejected_objects_total|source_file_rejections_total)(?:\{[^}]*\})? (\d+)/gm,
  ))
    n += Number(m[1]);
  return n;
}

beforeAll(async () => {
  src = mkdtempSync(join(tmpdir(), "podwall-hostile-src-"));
  scratch = mkdtempSync(join(tmpdir(), "podwall-hostile-cli-"));
  const objs = xyzModel();
  writeFileSync(
    join(src, "00-cluster.json"),
    JSON.stringify({ apiVersion: "v1", kind: "List", items: objs }),
  );
  writeFileSync(
    join(src, "10-policies.json"),
    JSON.stringify({ apiVersion: "v1", kind: "List", items: BASELINE }),
  );
  lab = await labUp(LAB, labPodsFor(manifestSet(objs), [TCP80]));
}, 60_000);

afterAll(async () => {
  await tearDown({ processes: agent ? [agent.child] : [], lab: LAB, dir: src });
  rmSync(scratch, { recursive: true, force: true });
}, 30_000);

describe("hostile input through podwall simulate", () => {
  it("every rejected object and file: exit 2, one line naming the file, no stack trace", () => {
    const cases = [
      ...rejectedSample(40).map(({ what, obj }, i) => ({
        what,
        file: `o${i}.json`,
        text: JSON.stringify(obj) as string | Buffer,
      })),
      // A large file is the agent's limit (--source-max-file-bytes), not simulate's: it reads what it is given.
      ...HOSTILE_FILES.filter(([what]) => what !== "oversized").map(([what, text], i) => ({
        what,
        file: `f${i}.yaml`,
        text,
      })),
    ];
    const bad: string[] = [];
    for (const c of cases) {
      const f = join(scratch, c.file);
      writeFileSync(f, c.text);
      const r = spawnSync(process.execPath, [CLI, "simulate", "-f", f, "-o", "json"], {
        encoding: "utf8",
        timeout: 60_000,
      });
      const lines = r.stderr.split("\n").filter((l) => l.trim() !== "");
      if (
        r.status !== 2 ||
        lines.length !== 1 ||
        !lines[0].startsWith(`podwall: error: ${f}`) ||
        /^\s+at /m.test(r.stderr)
      )
        bad.push(`${c.what}: exit ${r.status}, stderr ${JSON.stringify(r.stderr.slice(0, 300))}`);
    }
    expect(bad).toEqual([]);
  }, 240_000);
});

describe("hostile input through a running agent (folder source), with real probes", () => {
  it("rejects each one, stays ready and healthy, and nothing it rejects changes enforcement", async () => {
    agent = await AgentUnderTest.start(["--source", src, "--lab", LAB, "--node-name", "lab"]);
    expect(await probe(lab!, PROBES, { timeoutMs: 400 })).toEqual(EXPECTED);
    const cases = [
      ...rejectedSample(30).map(({ what, obj }) => ({
        what,
        text: JSON.stringify(obj) as string | Buffer,
        ext: "json",
      })),
      ...HOSTILE_FILES.map(([what, text]) => ({ what, text, ext: "yaml" })),
    ];
    const wrong: string[] = [];
    for (const [i, c] of cases.entries()) {
      const before = await rejections(agent);
      const file = join(src, `50-hostile-${i}.${c.ext}`);
      writeFileSync(file, c.text);
      // Counted (the file settles for 300 ms before it is read), then probed.
      const counted = await until(async () => (await rejections(agent!)) > before, 8000, 50);
      const [ready, healthy] = [(await agent.get("/readyz")).status, (await agent.get("/healthz")).status];
      const seen = await probe(lab!, PROBES, { timeoutMs: 400 });
      if (
        !counted ||
        ready !== 200 ||
        healthy !== 200 ||
        !agent.alive ||
        JSON.stringify(seen) !== JSON.stringify(EXPECTED)
      )
        wrong.push(
          `${c.what}: counted ${counted}, ready ${ready}, healthy ${healthy}, alive ${agent.alive}, probes ${JSON.stringify(seen)}`,
        );
      rmSync(file);
    }
    expect(wrong).toEqual([]);
    // Every hostile file is gone: the rejected-objects gauge is back to zero and nothing changed.
    expect(
      await until(
        async () => (await agent!.metric("podwall_rejected_objects", { kind: "NetworkPolicy" })) === 0,
        8000,
      ),
    ).toBe(true);
    expect(await probe(lab!, PROBES, { timeoutMs: 400 })).toEqual(EXPECTED);
  }, 300_000);
});
