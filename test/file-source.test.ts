/**
 * FileSource (the --source folder) on a real folder, with a sink that records what it is told:
 * unambiguous keys, files read only once stable, a poison file rejected alone, a size limit, and
 * rejections cleared when the bad object or file is fixed or removed.
 */
import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { V1NetworkPolicy } from "@kubernetes/client-node";
import { afterEach, describe, expect, it } from "vitest";
import type { ClusterSink, ObjectKind } from "../src/agent/cluster-events.js";
import { type FileRejection, FileSource } from "../src/agent/sources/file-source.js";
import type { NamespaceInfo, NodeInfo, PodInfo } from "../src/compiler/model.js";

class Sink implements ClusterSink {
  policies = new Map<string, V1NetworkPolicy>();
  pods = new Map<string, PodInfo>();
  rejections = new Map<string, Error>();
  log: string[] = [];
  upsertPod(p: PodInfo): void {
    this.pods.set(JSON.stringify([p.namespace, p.name]), p);
  }
  deletePod(ns: string, name: string): void {
    this.pods.delete(JSON.stringify([ns, name]));
  }
  upsertNamespace(_ns: NamespaceInfo): void {}
  deleteNamespace(_name: string): void {}
  upsertNode(_node: NodeInfo): void {}
  deleteNode(_name: string): void {}
  upsertPolicy(raw: unknown): void {
    const p = raw as V1NetworkPolicy;
    const key = JSON.stringify([p.metadata?.namespace ?? "default", p.metadata?.name]);
    this.log.push(`upsert ${key} ${JSON.stringify(p.spec)}`);
    this.policies.set(key, p);
  }
  deletePolicy(ns: string, name: string): void {
    this.log.push(`delete ${JSON.stringify([ns, name])}`);
    this.policies.delete(JSON.stringify([ns, name]));
  }
  rejected(kind: ObjectKind, key: string, error: Error): void {
    this.rejections.set(`${kind} ${key}`, error);
  }
  cleared(kind: ObjectKind, key: string): void {
    this.rejections.delete(`${kind} ${key}`);
  }
  synced(): void {}
}

function policyYaml(name: string, ports = "[{ port: 5432 }]", ns = "shop"): string {
  return `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: ${JSON.stringify(name)}, namespace: ${ns} }
spec:
  podSelector: { matchLabels: { app: db } }
  ingress:
    - from: [{ podSelector: { matchLabels: { app: backend } } }]
      ports: ${ports}
`;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, pred: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function folder(): string {
  const dir = mkdtempSync(join(tmpdir(), "podwall-fs-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function started(
  dir: string,
  opts: ConstructorParameters<typeof FileSource>[1] = {},
): Promise<{ src: FileSource; sink: Sink; fileRejections: [string, FileRejection][] }> {
  const sink = new Sink();
  const fileRejections: [string, FileRejection][] = [];
  const src = new FileSource(dir, {
    pollMs: 50,
    debounceMs: 10,
    settleMs: 100,
    onFileRejected: (f, r) => fileRejections.push([f, r]),
    ...opts,
  });
  cleanups.push(() => src.stop());
  await src.start(sink);
  return { src, sink, fileRejections };
}

describe("FileSource", () => {
  it("a policy name containing / never makes a delete hit another policy (structured keys)", async () => {
    const dir = folder();
    writeFileSync(join(dir, "a.yaml"), policyYaml("x"));
    writeFileSync(join(dir, "b.yaml"), policyYaml("x/y"));
    const { sink } = await started(dir);
    expect(sink.policies.has(JSON.stringify(["shop", "x"]))).toBe(true);
    unlinkSync(join(dir, "b.yaml"));
    await waitFor("b.yaml's objects gone", () => !sink.policies.has(JSON.stringify(["shop", "x/y"])));
    await sleep(200);
    // Policy x is untouched: no delete ever named it.
    expect(sink.log.filter((l) => l.startsWith("delete"))).not.toContain(
      `delete ${JSON.stringify(["shop", "x"])}`,
    );
    expect([...sink.policies.keys()]).toEqual([JSON.stringify(["shop", "x"])]);
  });

  it("a file caught mid-write is not read until its size and mtime settle; the cut version is never emitted", async () => {
    const dir = folder();
    writeFileSync(join(dir, "base.yaml"), policyYaml("base"));
    const { sink } = await started(dir, { settleMs: 300 });
    const full = policyYaml("db-access");
    // Cut right after "ports:": on its own that is a valid policy allowing every port.
    const cut = full.slice(0, full.indexOf("ports:") + "ports:".length);
    const file = join(dir, "db.yaml");
    writeFileSync(file, cut);
    await sleep(150);
    writeFileSync(file, full);
    await waitFor("the full policy", () => sink.policies.has(JSON.stringify(["shop", "db-access"])), 3000);
    const upserts = sink.log.filter((l) => l.includes("db-access"));
    expect(upserts).toHaveLength(1);
    expect(sink.policies.get(JSON.stringify(["shop", "db-access"]))!.spec!.ingress![0].ports).toEqual([
      { port: 5432 },
    ]);
  });

  it("a file whose parse throws (unresolved alias, alias bomb) is rejected alone; the folder stays watched", async () => {
    const dir = folder();
    writeFileSync(join(dir, "good.yaml"), policyYaml("good"));
    writeFileSync(join(dir, "alias.yaml"), `${policyYaml("aliased")}  extra: *nope\n`);
    const bomb = ["a: &a [x, x, x, x, x, x, x, x, x]"];
    for (let i = 0; i < 8; i++)
      bomb.push(
        `${"bcdefghi"[i]}: &${"bcdefghi"[i]} [*${"abcdefgh"[i]}, *${"abcdefgh"[i]}, *${"abcdefgh"[i]}, *${"abcdefgh"[i]}, *${"abcdefgh"[i]}, *${"abcdefgh"[i]}, *${"abcdefgh"[i]}, *${"abcdefgh"[i]}, *${"abcdefgh"[i]}]`,
      );
    writeFileSync(join(dir, "bomb.yaml"), `${bomb.join("\n")}\n`);
    const { sink, fileRejections } = await started(dir);
    expect(sink.policies.has(JSON.stringify(["shop", "good"]))).toBe(true);
    expect(fileRejections.map(([f, r]) => [f.slice(dir.length + 1), r]).sort()).toEqual([
      ["alias.yaml", "parse_error"],
      ["bomb.yaml", "parse_error"],
    ]);
    expect(sink.rejections.get(`NetworkPolicy ${join(dir, "alias.yaml")}`)?.message).toMatch(/alias\.yaml/);
    // Still watching: a new file and a fixed one both arrive.
    writeFileSync(join(dir, "later.yaml"), policyYaml("later"));
    writeFileSync(join(dir, "alias.yaml"), policyYaml("aliased"));
    await waitFor("later.yaml and the fixed file", () =>
      ["later", "aliased"].every((n) => sink.policies.has(JSON.stringify(["shop", n]))),
    );
    // The fixed file's rejection is cleared; the bomb's stays until it goes.
    expect([...sink.rejections.keys()]).toEqual([`NetworkPolicy ${join(dir, "bomb.yaml")}`]);
    unlinkSync(join(dir, "bomb.yaml"));
    await waitFor("the removed file's rejection cleared", () => sink.rejections.size === 0);
  });

  it("a file over the size limit is rejected unread, naming the file, its size and the limit", async () => {
    const dir = folder();
    writeFileSync(join(dir, "small.yaml"), policyYaml("small"));
    const big = Array.from({ length: 200 }, (_, i) => `---\n${policyYaml(`p${i}`)}`).join("");
    writeFileSync(join(dir, "big.yaml"), big);
    const { sink, fileRejections } = await started(dir, { maxFileBytes: 10_000 });
    expect(sink.policies.size).toBe(1);
    expect(fileRejections).toEqual([[join(dir, "big.yaml"), "too_large"]]);
    const err = sink.rejections.get(`NetworkPolicy ${join(dir, "big.yaml")}`)!;
    expect(err.message).toContain("big.yaml");
    expect(err.message).toContain(`${big.length} bytes`);
    expect(err.message).toContain("10000-byte limit");
  });

  it("a bad object's rejection is cleared when it is fixed, and when it is removed", async () => {
    const dir = folder();
    writeFileSync(join(dir, "bad.yaml"), policyYaml("bad", "[{ port: 99999 }]"));
    const { sink } = await started(dir);
    expect([...sink.rejections.keys()]).toEqual(["NetworkPolicy shop/bad"]);
    writeFileSync(join(dir, "bad.yaml"), policyYaml("bad"));
    await waitFor("fixed", () => sink.policies.has(JSON.stringify(["shop", "bad"])));
    expect(sink.rejections.size).toBe(0);
    writeFileSync(join(dir, "bad2.yaml"), policyYaml("worse", "[{ port: 0 }]"));
    await waitFor("rejected", () => sink.rejections.has("NetworkPolicy shop/worse"));
    writeFileSync(join(dir, "bad2.yaml"), "# nothing here any more\n");
    await waitFor("removed from its file", () => sink.rejections.size === 0);
  });
});
