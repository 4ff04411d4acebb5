/**
 * The HTML reports in a real headless browser (Debian's chromium, driven by playwright-core): the
 * page the CLI writes loads from a file with no network, runs without a script error, draws the
 * matrix, shows the expected cells (by DOM queries), answers a click with the reasons, switches
 * ports, and leaves a screenshot. Needs /usr/bin/chromium (scripts/setup.sh installs it).
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { simulateHtml } from "../src/cli/report-html.js";
import { declaredPorts } from "../src/compiler/matrix.js";
import { podKey } from "../src/compiler/model.js";
import { PolicyTable } from "../src/compiler/table.js";
import { loadTable, syntheticCluster } from "./support/cluster-gen.js";

const CLI = join(import.meta.dirname, "..", "dist", "cli", "main.js");
const DEMO = join(import.meta.dirname, "..", "examples", "demo");
const DIR = mkdtempSync(join(tmpdir(), `pw-html-${process.pid}-`));

function podwall(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", maxBuffer: 64 << 20 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

let browser: Browser;

beforeAll(async () => {
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    // As root on this machine: no sandbox; no background connections (the network is closed).
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

afterAll(async () => {
  await browser?.close();
  rmSync(DIR, { recursive: true, force: true });
});

/** Open a page from a file; collect script errors, console errors and any request leaving the file. */
async function open(html: string, name: string) {
  const file = join(DIR, `${name}.html`);
  writeFileSync(file, html);
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const errors: string[] = [];
  const requests: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  page.on("request", (r) => {
    if (r.url() !== `file://${file}`) requests.push(r.url());
  });
  await page.goto(`file://${file}`);
  await page.waitForSelector("body[data-ready='1']", { timeout: 10_000 });
  return { page, errors, requests };
}

async function screenshot(page: Page, name: string) {
  const png = join(DIR, `${name}.png`);
  await page.screenshot({ path: png, fullPage: true });
  expect(statSync(png).size).toBeGreaterThan(5_000);
}

const cellsBy = (page: Page, sel: string) =>
  page.$$eval(sel, (tds) =>
    tds.map((td) => {
      const d = (td as HTMLElement).dataset;
      return { from: d.from, to: d.to, state: d.state, change: d.change, port: d.port };
    }),
  );

describe("HTML reports in headless chromium", () => {
  it("simulate -o html: the demo's 6 x 6 matrix per port, denied cells marked, reasons on click", async () => {
    const r = podwall("simulate", "-f", DEMO, "-o", "html");
    expect(r.code, r.err).toBe(0);
    const { page, errors, requests } = await open(r.out, "simulate");
    expect(await page.$$eval("td.c", (t) => t.length)).toBe(36);
    // Row and column bands: one per namespace.
    expect(await page.$$eval("thead th.ns", (t) => t.map((x) => x.textContent))).toEqual([
      "dev",
      "kube-system",
      "monitoring",
      "shop",
    ]);
    await page.selectOption("#port", { label: "5432/TCP" });
    const cells = await cellsBy(page, "td.c");
    const cell = (from: string, to: string) => cells.find((c) => c.from === from && c.to === to);
    expect(cell("dev/debug", "shop/db")).toMatchObject({ state: "denied", port: "5432/TCP" });
    expect(cell("shop/backend", "shop/db")).toMatchObject({ state: "allowed" });
    expect(cell("dev/debug", "monitoring/prometheus")).toMatchObject({ state: "allowed" });
    await page.click('td.c[data-from="dev/debug"][data-to="shop/db"]');
    const detail = await page.textContent("#detail");
    expect(detail).toContain("DENIED");
    expect(detail).toContain(
      "ClusterNetworkPolicy dev-stays-out-of-shop (Admin, priority 10), ingress rule 0 'no-dev' (deny)",
    );
    await screenshot(page, "simulate");
    expect(errors).toEqual([]);
    expect(requests).toEqual([]);
    await page.close();
  });

  it("diff -o html: the closed cells are highlighted, with before and after on click", async () => {
    const args = ["diff", "-f", DEMO, "--delete", "NetworkPolicy/shop/db-from-backend"];
    const json = podwall(...args, "-o", "json");
    expect(json.code).toBe(1);
    const changes = JSON.parse(json.out).changes as {
      from: string;
      to: string;
      port: number;
      protocol: string;
    }[];
    expect(changes).toContainEqual(
      expect.objectContaining({ from: "shop/backend", to: "shop/db", port: 5432 }),
    );
    const r = podwall(...args, "-o", "html");
    expect(r.code, r.err).toBe(1);
    const { page, errors, requests } = await open(r.out, "diff");
    // The page opens on the first port with a change, and marks exactly the changed cells there.
    const port = await page.$eval("#port", (s) => (s as HTMLSelectElement).selectedOptions[0].textContent);
    expect(port).toMatch(/^5432\/TCP\s+\(\d+ changed\)$/);
    const marked = await cellsBy(page, "td.c[data-change]");
    const want = changes
      .filter((c) => c.port === 5432 && c.protocol === "TCP")
      .map((c) => `${c.from} ${c.to}`)
      .sort();
    expect(marked.map((c) => `${c.from} ${c.to}`).sort()).toEqual(want);
    expect(marked.every((c) => c.change === "closed" && c.state === "denied")).toBe(true);
    expect(await page.$$eval("td.c.closed", (t) => t.length)).toBe(want.length);
    await page.click('td.c[data-from="shop/backend"][data-to="shop/db"]');
    const detail = (await page.textContent("#detail")) ?? "";
    expect(detail).toContain("CLOSED by the change");
    expect(detail).toMatch(/before: allowed: .*ingress allowed by NetworkPolicy shop\/db-from-backend/);
    expect(detail).toMatch(/after: +denied: .*NetworkPolicy default deny/);
    // The list under the matrix has every change (few here).
    expect(await page.$$eval("#changes tr", (t) => t.length)).toBe(changes.length + 1);
    // Another port: redrawn, still no error.
    await page.selectOption("#port", { label: "80/TCP" });
    expect(await page.$$eval("td.c", (t) => t.length)).toBe(36);
    await screenshot(page, "diff");
    expect(errors).toEqual([]);
    expect(requests).toEqual([]);
    await page.close();
  });

  it("a 1k-pod cluster is drawn by identity, and a hostile rule name is only ever text", async () => {
    const c = syntheticCluster(1000, 100, 3);
    const t = new PolicyTable();
    loadTable(t, {
      namespaces: new Map(c.namespaces.map((n) => [n.name, n])),
      pods: new Map(c.pods.map((p) => [podKey(p), p])),
      policies: new Map(c.policies.map((p) => [`${p.metadata.namespace}/${p.metadata.name}`, p])),
    });
    t.upsertPolicy({
      apiVersion: "policy.networking.k8s.io/v1alpha2",
      kind: "ClusterNetworkPolicy",
      metadata: { name: "hostile" },
      spec: {
        tier: "Admin",
        priority: 1,
        subject: { namespaces: { matchLabels: { "kubernetes.io/metadata.name": "ns-1" } } },
        ingress: [
          { name: "</script><img src=x onerror=alert(1)>", action: "Deny", from: [{ namespaces: {} }] },
        ],
      },
    });
    const html = simulateHtml({ table: t, pods: c.pods }, declaredPorts(c.pods).slice(0, 3));
    const { page, errors, requests } = await open(html, "large");
    const note = await page.textContent(".note");
    expect(note).toMatch(/1000 pods \(more than 150\): one row per label-set identity/);
    const rows = await page.$$eval("tbody th.row", (t) => t.length);
    expect(rows).toBeGreaterThan(20);
    expect(rows).toBeLessThanOrEqual(150);
    expect(await page.$$eval("td.c", (t) => t.length)).toBe(rows * rows);
    expect(await page.$$eval("img", (t) => t.length)).toBe(0);
    const hostileCell = await page.$('td.c[data-to^="ns-1 "][data-state="denied"]');
    expect(hostileCell).not.toBeNull();
    await hostileCell!.click();
    expect(await page.textContent("#detail")).toContain("'</script><img src=x onerror=alert(1)>' (deny)");
    await screenshot(page, "large");
    expect(errors).toEqual([]);
    expect(requests).toEqual([]);
    await page.close();
  });
});
