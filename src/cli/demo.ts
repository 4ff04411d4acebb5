/**
 * cli/demo: `podwall demo`, podwall's main job on an embedded example with no cluster: a lab node
 * built from the example folder, the real agent watching that folder (--source) and programming
 * the lab (--lab), metrics served, and a live connectivity matrix from real packets that follows
 * edits to the policy files within about a second. Ctrl-C removes the lab and every kernel object.
 * May not: touch the host's network namespace (all of it lives inside the lab's namespaces).
 */
import { cpSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Command } from "commander";
import { loadManifestFiles, ManifestError, tableFromManifests } from "../agent/sources/manifests.js";
import { declaredPorts, type Matrix } from "../compiler/matrix.js";
import { labDown, labUp } from "../dataplane/lab/lab.js";
import { defaultQueueThreads } from "../dataplane/nfqueue/queue.js";
import { action, UsageError } from "./errors.js";
import { labPodsFor, probeMatrix } from "./lab.js";

function exampleDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(dir, "examples", "demo"))) return join(dir, "examples", "demo");
    dir = dirname(dir);
  }
  throw new UsageError("examples/demo not found beside the podwall package");
}

function draw(m: Matrix, header: string[], prev: Map<string, boolean>): string {
  const lines = [...header, ""];
  const w = Math.max(...m.pods.map((p) => p.length));
  for (const port of m.ports) {
    lines.push(`  ${port}`);
    lines.push(`  ${"from \\ to".padEnd(w)}  ${m.pods.map((_, i) => String(i + 1).padStart(3)).join("")}`);
    m.pods.forEach((from, i) => {
      const cells = m.pods.map((to) => {
        const r = m.results.find((x) => x.from === from && x.to === to && `${x.port}/${x.protocol}` === port);
        if (!r) return "  ?";
        const k = `${from}>${to}>${port}`;
        const changed = prev.has(k) && prev.get(k) !== r.allowed;
        const mark = r.allowed ? "\x1b[32m  .\x1b[0m" : "\x1b[31m  X\x1b[0m";
        return changed ? `\x1b[7m${mark}\x1b[0m` : mark;
      });
      lines.push(`  ${from.padEnd(w)}  ${cells.join("")}   ${i + 1}`);
    });
    lines.push("");
  }
  return lines.join("\n");
}

export function registerDemo(program: Command): void {
  program
    .command("demo")
    .description(
      "run podwall on an example cluster inside a lab node, with a live connectivity matrix (needs root)",
    )
    .option("--dir <folder>", "manifest folder to run on (default: a copy of examples/demo)")
    .option("--name <lab>", "lab name", "demo")
    .option("--metrics-addr <host:port>", "agent metrics address", "127.0.0.1:9472")
    .option("--dataplane <mode>", "iptables or nfqueue", "iptables")
    .option("--rounds <n>", "stop after this many matrix refreshes (default: until Ctrl-C)")
    .action(
      action(
        async (opts: {
          dir?: string;
          name: string;
          metricsAddr: string;
          dataplane: string;
          rounds?: string;
        }) => {
          if (process.getuid?.() !== 0)
            throw new UsageError("the demo builds network namespaces: run it as root");
          const dir = opts.dir ? resolve(opts.dir) : mkdtempSync(join(tmpdir(), "podwall-demo-"));
          if (!opts.dir) cpSync(exampleDir(), dir, { recursive: true });
          const set = loadManifestFiles([dir]);
          const ports = declaredPorts(set.pods);
          const logFile = join(tmpdir(), `podwall-${opts.name}.log`);
          process.stdout.write(`building lab ${opts.name} from ${dir} ...\n`);
          const lab = await labUp(opts.name, labPodsFor(set, ports));
          const { Agent } = await import("../agent/agent.js");
          const agent = new Agent({
            nodeName: "demo-node",
            source: dir,
            lab: opts.name,
            metricsAddr: opts.metricsAddr,
            dataplane: opts.dataplane === "nfqueue" ? "nfqueue" : "iptables",
            queueNum: 100,
            queueThreads: defaultQueueThreads(),
            failOpen: true,
            cleanupOnExit: true,
            resyncSeconds: 300,
            batchDelayMs: 20,
            denyAction: "DROP",
            serviceCIDRs: [],
            logFile,
            denyLogPerSecond: 20,
          });
          let stopping = false;
          const shutdown = async () => {
            if (stopping) return;
            stopping = true;
            process.stdout.write("\nstopping: removing podwall's rules and the lab ...\n");
            try {
              await agent.stop();
            } finally {
              await labDown(opts.name);
              // The copy of the example cluster is the demo's own; a --dir folder is the user's.
              if (!opts.dir) rmSync(dir, { recursive: true, force: true });
            }
            process.stdout.write(`done; the agent's log is in ${logFile}\n`);
          };
          process.on("SIGINT", () => void shutdown().then(() => process.exit(0)));
          process.on("SIGTERM", () => void shutdown().then(() => process.exit(0)));
          try {
            await agent.start();
            // Draw only once the agent has programmed the lab: before that every probe would pass.
            const deadline = Date.now() + 30_000;
            while (!agent.reconciler.ready() && Date.now() < deadline)
              await new Promise((r) => setTimeout(r, 50));
            if (!agent.reconciler.ready())
              throw new Error(`the agent did not program the lab within 30 s (see ${logFile})`);
            const prev = new Map<string, boolean>();
            const rounds = opts.rounds ? Number(opts.rounds) : Number.POSITIVE_INFINITY;
            let current = set;
            for (let i = 0; i < rounds && !stopping; i++) {
              const started = Date.now();
              // A file caught mid-edit (or deleted between listing and reading) keeps the last good
              // view for this round; the agent reports the file itself.
              let stale = "";
              try {
                current = loadManifestFiles([dir]);
              } catch (e) {
                if (!(e instanceof ManifestError)) throw e;
                stale = `   (showing the last readable folder: ${e.message})`;
              }
              const m = await probeMatrix(lab, current, ports, tableFromManifests(current), 600);
              const st = agent.reconciler.lastStats;
              const header = [
                `podwall demo: lab node ${lab.nodeNetns}, ${lab.pods.length} pods; agent watching ${dir}`,
                `edit or delete a policy file there and watch the matrix follow. metrics: http://${opts.metricsAddr}/metrics  log: ${logFile}`,
                `last sync: ${st ? `${st.rules} rules, ${st.ipsets} ipsets, ${st.ms.toFixed(1)} ms` : "pending"}; ${new Date().toLocaleTimeString()}   (. allowed, X denied; real packets)${stale}`,
              ];
              if (process.stdout.isTTY) process.stdout.write("\x1b[2J\x1b[H");
              process.stdout.write(`${draw(m, header, prev)}\n`);
              for (const r of m.results) prev.set(`${r.from}>${r.to}>${r.port}/${r.protocol}`, r.allowed);
              // At most one refresh a second: an all-allowed matrix probes in a few milliseconds.
              const rest = 1000 - (Date.now() - started);
              if (rest > 0 && i + 1 < rounds) await new Promise((r) => setTimeout(r, rest));
            }
          } finally {
            await shutdown();
          }
        },
      ),
    );
}
