/**
 * Real-kernel e2e for the folder source (`podwall agent --source DIR --lab L`, iptables mode) against
 * hostile and clumsy input, with real probes: a file written in two parts is never enforced half
 * written; a poison file is rejected alone and the agent keeps following the folder (also when it
 * starts with the file present); the rejected-objects gauge goes back down; a 50 MB file is rejected
 * unread without stalling the agent; a start-up failure after the health server is up fails /healthz.
 * Runs as root; the lab (fs*), the agents and the folder go in afterAll, also on failure.
 */
import { cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadManifestFiles } from "../src/agent/sources/manifests.js";
import { declaredPorts } from "../src/compiler/matrix.js";
import { run } from "../src/dataplane/exec.js";
import { type LabState, labUp, type ProbeRequest, probe } from "../src/dataplane/lab/lab.js";
import { labPodsFor } from "../src/dataplane/lab/matrix.js";
import { AgentUnderTest, tearDown, until } from "../test/support/agent-process.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const LAB = `fs${process.pid.toString(36)}`.slice(0, 12);
const IP = { backend: "10.244.1.11", db: "10.244.1.12" };
/** db is isolated (default deny); only 5432 from backend is allowed by the demo's policies. */
const DB_80: ProbeRequest = { from: "shop/backend", toIp: IP.db, port: 80, protocol: "TCP" };
const DB_8080: ProbeRequest = { from: "shop/backend", toIp: IP.db, port: 8080, protocol: "TCP" };
const DB_5432: ProbeRequest = { from: "shop/backend", toIp: IP.db, port: 5432, protocol: "TCP" };

let lab: LabState | undefined;
let src = "";
const agents: AgentUnderTest[] = [];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function agent(extra: string[] = [], waitReady = true): Promise<AgentUnderTest> {
  const a = await AgentUnderTest.start(
    ["--source", src, "--lab", LAB, "--node-name", "lab", ...extra],
    waitReady,
  );
  agents.push(a);
  return a;
}

function probeAll(reqs: ProbeRequest[], timeoutMs = 300): Promise<boolean[]> {
  return probe(lab!, reqs, { timeoutMs });
}

function policy(name: string, portsBlock: string): string {
  return `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: ${name}, namespace: shop }
spec:
  podSelector: { matchLabels: { app: db } }
  ingress:
    - from: [{ podSelector: { matchLabels: { app: backend } } }]
      ports:
${portsBlock}`;
}

beforeAll(async () => {
  await run("npx", ["tsc", "-p", join(ROOT, "tsconfig.json")], { allowFail: true, timeoutMs: 60_000 });
  src = mkdtempSync(join(tmpdir(), "podwall-fs-e2e-"));
  cpSync(join(ROOT, "examples", "demo"), src, { recursive: true });
  const set = loadManifestFiles([src]);
  lab = await labUp(LAB, labPodsFor(set, [...declaredPorts(set.pods)]));
}, 60_000);

afterAll(async () => {
  await tearDown({ processes: agents.map((a) => a.child), lab: LAB, dir: src });
}, 30_000);

describe("folder source against bad input, with real packets", () => {
  it("a policy file written in two parts with a pause is never enforced half-written", async () => {
    const a = await agent();
    expect(await probeAll([DB_80, DB_8080, DB_5432])).toEqual([false, false, true]);
    // Cut right after "ports:", the file is a valid policy that allows backend -> db on every port.
    const full = policy("db-api-from-backend", "        - port: 8080\n");
    const cut = full.slice(0, full.indexOf("ports:") + "ports:".length);
    const file = join(src, "50-db-api.yaml");
    const seen: boolean[] = [];
    let probing = true;
    const prober = (async () => {
      while (probing) seen.push(...(await probeAll([DB_80], 40)));
    })();
    const syncsBefore = a.lines.filter((l) => l.msg === "sync").length;
    writeFileSync(file, cut);
    await sleep(250); // shorter than the settle time (300 ms), longer than a sync takes
    // Nothing was programmed from the cut file: no sync ran while it was on disk.
    const syncsDuringCut = a.lines.filter((l) => l.msg === "sync").length - syncsBefore;
    writeFileSync(file, full);
    const enforced = await until(async () => (await probeAll([DB_8080], 200))[0], 5000, 50);
    await sleep(500);
    probing = false;
    await prober;
    expect(enforced, a.tail()).toBe(true);
    expect(syncsDuringCut).toBe(0);
    expect(seen.length).toBeGreaterThan(5);
    expect(seen.filter((x) => x)).toEqual([]); // port 80 never opened, not even for a moment
    expect(await probeAll([DB_80, DB_8080, DB_5432])).toEqual([false, true, true]);
    rmSync(file);
    expect(await until(async () => !(await probeAll([DB_8080], 200))[0], 5000)).toBe(true);
    await a.kill("SIGTERM");
  });

  it("a poison file is rejected alone: the agent stays alive and ready and keeps following the folder, also when it starts with the file there", async () => {
    const poison = join(src, "60-poison.yaml");
    writeFileSync(poison, `${policy("poison", "        - port: 8080\n")}        extra: *nowhere\n`);
    let a = await agent();
    expect(await probeAll([DB_8080, DB_5432])).toEqual([false, true]);
    expect(await a.metric("podwall_source_file_rejections_total", { reason: "parse_error" })).toBe(1);
    expect((await a.get("/healthz")).status).toBe(200);
    // Still following: a good edit lands while the poison file stays.
    const good = join(src, "61-good.yaml");
    writeFileSync(good, policy("db-api", "        - port: 8080\n"));
    expect(await until(async () => (await probeAll([DB_8080], 200))[0], 5000)).toBe(true);
    // An alias bomb written later is rejected the same way.
    const bomb = ["a: &a [x, x, x, x, x, x, x, x, x]"];
    for (let i = 0; i < 8; i++) {
      const [n, p] = ["bcdefghi"[i], "abcdefgh"[i]];
      bomb.push(`${n}: &${n} [${Array(9).fill(`*${p}`).join(", ")}]`);
    }
    writeFileSync(join(src, "62-bomb.yaml"), `${bomb.join("\n")}\n`);
    expect(
      await until(
        async () => (await a.metric("podwall_source_file_rejections_total", { reason: "parse_error" })) === 2,
        5000,
      ),
      a.tail(),
    ).toBe(true);
    expect(a.alive).toBe(true);
    expect((await a.get("/readyz")).status).toBe(200);
    await a.kill("SIGTERM");
    a = await agent();
    expect(await probeAll([DB_80, DB_8080, DB_5432])).toEqual([false, true, true]);
    rmSync(good);
    rmSync(poison);
    rmSync(join(src, "62-bomb.yaml"));
    expect(await until(async () => !(await probeAll([DB_8080], 200))[0], 5000)).toBe(true);
    await a.kill("SIGTERM");
  });

  it("podwall_rejected_objects goes back down when the bad object is fixed or removed", async () => {
    const a = await agent();
    const gauge = (kind: string) => a.metric("podwall_rejected_objects", { kind });
    const badPod = join(src, "70-bad-pod.yaml");
    writeFileSync(
      badPod,
      "apiVersion: v1\nkind: Pod\nmetadata: { name: broken, namespace: shop }\nspec: { containers: [{ name: c }] }\nstatus: { podIP: 10.0.0.999 }\n",
    );
    const badPol = join(src, "71-bad-policy.yaml");
    writeFileSync(badPol, policy("bad-port", "        - port: 99999\n"));
    expect(
      await until(async () => (await gauge("Pod")) === 1 && (await gauge("NetworkPolicy")) === 1, 5000),
    ).toBe(true);
    writeFileSync(badPol, policy("bad-port", "        - port: 8080\n")); // fixed
    rmSync(badPod); // removed
    expect(
      await until(async () => (await gauge("Pod")) === 0 && (await gauge("NetworkPolicy")) === 0, 5000),
      a.tail(),
    ).toBe(true);
    // The fixed policy comes into force with the next sync.
    expect(await until(async () => (await probeAll([DB_8080], 200))[0], 5000)).toBe(true);
    // A whole file that stops parsing, then is fixed.
    writeFileSync(badPol, "kind: [unclosed\n");
    expect(await until(async () => (await gauge("NetworkPolicy")) === 1, 5000)).toBe(true);
    expect(await probeAll([DB_8080])).toEqual([true]); // its last good objects stay
    rmSync(badPol);
    expect(await until(async () => (await gauge("NetworkPolicy")) === 0, 5000)).toBe(true);
    expect(await until(async () => !(await probeAll([DB_8080], 200))[0], 5000)).toBe(true);
    await a.kill("SIGTERM");
  });

  it("a 50 MB file of 90k policies is rejected unread: the agent keeps answering and enforcing", async () => {
    const a = await agent();
    const one = (i: number) =>
      `---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: { name: p${i}, namespace: shop }\nspec:\n  podSelector: { matchLabels: { app: db } }\n  ingress:\n    - from: [{ podSelector: { matchLabels: { app: backend } } }]\n      ports: [{ port: 80 }]\n# ${"x".repeat(360)}\n`;
    const parts: string[] = [];
    for (let i = 0; i < 90_000; i++) parts.push(one(i));
    const text = parts.join("");
    expect(text.length).toBeGreaterThan(50e6);
    const slowest: number[] = [];
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        slowest.push((await a.get("/healthz", 5000)).ms);
        await sleep(20);
      }
    })();
    writeFileSync(join(src, "80-huge.yaml"), text);
    const rejected = await until(
      async () => (await a.metric("podwall_source_file_rejections_total", { reason: "too_large" })) === 1,
      10_000,
    );
    await sleep(1000);
    watching = false;
    await watcher;
    rmSync(join(src, "80-huge.yaml"));
    console.info(`50 MB file: /healthz slowest answer ${Math.max(...slowest).toFixed(0)} ms while it landed`);
    expect(rejected, a.tail()).toBe(true);
    expect(Math.max(...slowest)).toBeLessThan(1000);
    expect((await a.get("/healthz")).status).toBe(200);
    expect(await probeAll([DB_80, DB_5432])).toEqual([false, true]); // none of its policies took effect
    const line = a.lines.find((l) => typeof l.err === "string" && (l.err as string).includes("80-huge.yaml"));
    expect(line?.err).toMatch(/bytes is over the 1048576-byte limit/);
    await a.kill("SIGTERM");
  });

  it("/healthz fails when start-up fails after the health server is up (a CNI socket it cannot create)", async () => {
    const a = await agent(["--cni-socket", `/sys/podwall-${process.pid}.sock`], false);
    expect(await until(async () => (await a.get("/healthz")).status === 503, 10_000), a.tail()).toBe(true);
    const h = await a.get("/healthz");
    expect(h.body).toMatch(/not alive: fatal: .*EPERM|not alive: fatal: .*permitted/i);
    expect((await a.get("/readyz")).status).toBe(503);
    await sleep(1500);
    expect(a.alive).toBe(true); // up, and saying it is broken
    expect((await a.get("/healthz")).status).toBe(503);
    await a.kill("SIGTERM");
  });
});
