/**
 * cni-server: the agent's end of the chained CNI plugin, an HTTP endpoint on a unix socket.
 *
 * Owns: the socket file (created 0600, root only: the kubelet's CNI calls run as root), request
 * parsing and size limits, and turning admission results into CNI result or error JSON.
 * May not: listen on a network address (an ADD changes what the kernel enforces) or decide anything.
 */
import { chmodSync, mkdirSync, rmSync } from "node:fs";
import { createServer, type IncomingMessage, type Server } from "node:http";
import { dirname } from "node:path";
import { type CniAdmission, CniError } from "./cni-admission.js";
import type { Logger } from "./log.js";
import type { Metrics } from "./metrics.js";

const MAX_BODY = 1 << 20;

function header(req: IncomingMessage, name: string): string {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(",") : (v ?? "");
}

async function body(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > MAX_BODY) throw new CniError(4, "network configuration larger than 1 MiB");
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
}

export async function startCniServer(
  path: string,
  admission: CniAdmission,
  metrics: Metrics,
  log: Logger,
): Promise<Server> {
  mkdirSync(dirname(path), { recursive: true });
  rmSync(path, { force: true }); // A socket left by an earlier run.
  const server = createServer(async (req, res) => {
    const reply = (status: number, obj: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(`${JSON.stringify(obj)}\n`);
    };
    if (req.method !== "POST" || req.url !== "/v1/cni/add") return reply(404, { msg: "not found" });
    const t0 = performance.now();
    try {
      const r = await admission.add({
        containerId: header(req, "x-cni-containerid"),
        netns: header(req, "x-cni-netns"),
        ifName: header(req, "x-cni-ifname"),
        args: header(req, "x-cni-args"),
        config: await body(req),
      });
      metrics.cniAdds.inc({ result: "ok" });
      metrics.cniAddDuration.observe((performance.now() - t0) / 1000);
      reply(200, r.result);
    } catch (e) {
      const err = e instanceof CniError ? e : new CniError(11, (e as Error).message);
      metrics.cniAdds.inc({ result: "error" });
      log.warn({ err: err.message, args: header(req, "x-cni-args") }, "cni add refused");
      reply(500, { cniVersion: "1.0.0", code: err.code, msg: `podwall: ${err.message}` });
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, () => resolve());
  });
  chmodSync(path, 0o600);
  log.info({ socket: path }, "CNI admission socket listening");
  return server;
}
