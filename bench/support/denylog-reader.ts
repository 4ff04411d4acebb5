/**
 * denylog-reader: the deny-log path of the agent standing alone in its own process, for
 * bench/denylog.ts to measure its CPU: an NflogReader bound to the lab node's group, each record's
 * prefix read back to its id, and one JSON deny line per record through the agent's DenyLog (token
 * bucket, pino) into /dev/null.
 *
 * IPC (started with fork): {type:"start", group, netns, linesPerSec} -> {type:"ready"};
 * {type:"mark"} -> {type:"mark", ...Mark}; {type:"stop"} -> the last mark, then exit.
 */
import { pino } from "pino";
import { DenyLog } from "../../src/agent/deny-log.js";
import { createLogger } from "../../src/agent/log.js";
import { denyLogIdFromPrefix } from "../../src/dataplane/deny-log-rules.js";
import { NflogReader, type NflogRecord, type NflogStats } from "../../src/dataplane/nflog/reader.js";

export interface Mark {
  /** process.cpuUsage() of this process (every thread), microseconds. */
  cpuUs: number;
  records: number;
  /** Records whose prefix named a deny-log id. */
  attributed: number;
  lines: number;
  suppressed: number;
  reader: NflogStats;
}

export type ToReader =
  | { type: "start"; group: number; netns: string; linesPerSec: number }
  | { type: "mark" }
  | { type: "stop" };
export type FromReader = { type: "ready" } | ({ type: "mark" } & Mark) | { type: "error"; message: string };

let reader: NflogReader | undefined;
let deny: DenyLog | undefined;
let records = 0;
let attributed = 0;

function send(m: FromReader): void {
  process.send?.(m);
}

function mark(): Mark {
  const u = process.cpuUsage();
  const s = deny?.stats() ?? { written: 0, suppressed: 0 };
  return {
    cpuUs: u.user + u.system,
    records,
    attributed,
    lines: s.written,
    suppressed: s.suppressed,
    reader: reader!.stats(),
  };
}

function onRecords(batch: NflogRecord[]): void {
  for (const r of batch) {
    records++;
    const id = denyLogIdFromPrefix(r.prefix);
    if (id !== undefined) attributed++;
    deny!.write({
      event: "deny",
      srcIP: r.src,
      srcPort: r.sport,
      dstIP: r.dst,
      port: r.dport,
      proto: r.proto,
      direction: "ingress",
      // Stands in for the policy model's lookup of the id (issue 10): the id names the deciding rule.
      policies: id === undefined ? [] : [id],
    });
  }
}

process.on("message", (m: ToReader) => {
  void (async () => {
    try {
      if (m.type === "start") {
        const log = createLogger("info", pino.destination({ dest: "/dev/null", sync: false }));
        deny = new DenyLog({ log, ratePerSec: m.linesPerSec });
        reader = new NflogReader({
          group: m.group,
          netns: m.netns,
          onRecords,
          onError: (e) => send({ type: "error", message: e.message }),
        });
        await reader.start();
        send({ type: "ready" });
      } else if (m.type === "mark") {
        send({ type: "mark", ...mark() });
      } else if (m.type === "stop") {
        await reader?.stop();
        send({ type: "mark", ...mark() });
        process.disconnect?.();
      }
    } catch (e) {
      send({ type: "error", message: e instanceof Error ? e.message : String(e) });
    }
  })();
});
process.on("disconnect", () => void reader?.stop().finally(() => process.exit(0)));
