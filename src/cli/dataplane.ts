/**
 * cli/dataplane: `podwall render` (what would be programmed, a dry run) and `podwall cleanup`
 * (remove every kernel object podwall owns, and nothing else).
 * May not: change anything in render; cleanup touches only PODWALL- chains, jumps and sets.
 */
import type { Command } from "commander";
import { AGENT_DEFAULTS } from "../agent/options.js";
import { tableFromManifests } from "../agent/sources/manifests.js";
import { podKey } from "../compiler/model.js";
import { KernelApplier } from "../dataplane/apply.js";
import { loadLab } from "../dataplane/lab/lab.js";
import { DEFAULT_QUEUE_NUM } from "../dataplane/nfqueue/defaults.js";
import { type LocalPod, renderNode, restoreTexts, shortHash } from "../dataplane/render.js";
import { action, collect, UsageError } from "./errors.js";
import { loadForCli } from "./input.js";
import { parseQueueOptions, queueRenderOptions } from "./queue-options.js";

export function registerDataplane(program: Command): void {
  program
    .command("render")
    .description("print the ipset and iptables-restore input podwall would program on a node (dry run)")
    .requiredOption("-f, --file <path>", "manifest file or directory (repeatable)", collect)
    .requiredOption("--node <name>", "the node whose pods (spec.nodeName) are local")
    .option(
      "--interface <ns/pod=ifname>",
      "host interface of a local pod (repeatable; default: a placeholder name)",
      collect,
    )
    .option("--dataplane <mode>", "iptables or nfqueue", "iptables")
    .option("--queue-num <n>", "NFQUEUE number (the first, with several threads)", String(DEFAULT_QUEUE_NUM))
    .option("--queue-threads <n>", "nfqueue: queues spread by CPU (default: one per CPU, at most 8)")
    .option(
      "--deny-log-pod-rate <n>",
      "iptables: logged denies per second per pod (the kernel limit before NFLOG); 0: no deny logs",
      String(AGENT_DEFAULTS.denyLogPodRate),
    )
    .option(
      "--deny-log-pod-burst <n>",
      "iptables: logged at once per pod",
      String(AGENT_DEFAULTS.denyLogPodBurst),
    )
    .option("--nflog-group <n>", "iptables: NFLOG group of the deny logs", String(AGENT_DEFAULTS.nflogGroup))
    .action(
      action(
        (opts: {
          file: string[];
          node: string;
          interface?: string[];
          dataplane: string;
          queueNum: string;
          queueThreads?: string;
          denyLogPodRate: string;
          denyLogPodBurst: string;
          nflogGroup: string;
        }) => {
          if (opts.dataplane !== "iptables" && opts.dataplane !== "nfqueue")
            throw new UsageError("--dataplane must be iptables or nfqueue");
          const set = loadForCli(opts.file);
          const ifMap = new Map<string, string>();
          for (const spec of opts.interface ?? []) {
            const [k, v] = spec.split("=");
            if (!k || !v) throw new UsageError(`--interface ${spec}: expected ns/pod=ifname`);
            ifMap.set(k, v);
          }
          const local: LocalPod[] = set.pods
            .filter((p) => p.nodeName === opts.node && !p.hostNetwork)
            .map((p) => ({
              key: podKey(p),
              hostIf: ifMap.get(podKey(p)) ?? `veth${shortHash(podKey(p), 8)}`,
            }));
          if (local.length === 0)
            process.stderr.write(`podwall: warning: no pod has spec.nodeName ${opts.node}\n`);
          const int = (flag: string, v: string, lo: number, hi: number) => {
            const n = Number(v);
            if (!Number.isInteger(n) || n < lo || n > hi)
              throw new UsageError(`${flag} must be an integer from ${lo} to ${hi}, got ${v}`);
            return n;
          };
          const rate = int("--deny-log-pod-rate", opts.denyLogPodRate, 0, 100_000);
          const d = renderNode(tableFromManifests(set), local, {
            dataplane: opts.dataplane,
            ...queueRenderOptions(parseQueueOptions(opts.queueNum, opts.queueThreads)),
            denyLog:
              rate > 0
                ? {
                    group: int("--nflog-group", opts.nflogGroup, 0, 65535),
                    ratePerSec: rate,
                    burst: int("--deny-log-pod-burst", opts.denyLogPodBurst, 1, 100_000),
                  }
                : undefined,
          });
          const t = restoreTexts(d);
          // What each NFLOG prefix (pw:<id>) stands for.
          const ids = [...d.logIds].map(
            ([id, a]) =>
              `# pw:${id} ${a.event} ${a.direction} ${a.reason ?? (a.policies.join(",") || "-")}${a.tier ? ` tier ${a.tier}` : ""}${a.rule ? ` rule ${a.rule.index}${a.rule.name ? ` ${a.rule.name}` : ""}` : ""}\n`,
          );
          process.stdout.write(
            `# ${local.length} local pods, ${d.isolated.pods} isolated; ${d.sets.size} ipsets\n${ids.length ? `# --- deny-log ids\n${ids.join("")}` : ""}# --- ipset restore\n${t.ipset}# --- iptables-restore --noflush\n${t.iptables}# --- ip6tables-restore --noflush\n${t.ip6tables}`,
          );
        },
      ),
    );
  program
    .command("cleanup")
    .description(
      "remove every kernel object podwall owns (PODWALL- chains, their jumps, PODWALL- ipsets), nothing else",
    )
    .option("--netns <name>", "inside this network namespace instead of the current one")
    .option("--lab <name>", "inside a lab's node")
    .action(
      action(async (opts: { netns?: string; lab?: string }) => {
        let netns = opts.netns;
        if (opts.lab) {
          const lab = await loadLab(opts.lab);
          if (!lab) throw new UsageError(`no running lab named ${opts.lab}`);
          netns = lab.nodeNetns;
        }
        const r = await new KernelApplier({ netns }).cleanup();
        process.stdout.write(`removed ${r.jumps} jump rules, ${r.chains} chains, ${r.sets} ipsets\n`);
      }),
    );
}
