/**
 * health: the agent's HTTP listeners: /metrics (Prometheus text), /healthz (the loop is alive,
 * not tied to sync success, so a failing sync is reported, not restarted away), /readyz (the first
 * complete sync is programmed and syncs are succeeding). The metrics listener serves all three; a
 * health-only listener (no registry) serves the probes alone, so the kubelet can probe loopback
 * while /metrics is exposed elsewhere.
 * May not: change agent state; it only reads.
 */
import { createServer, type Server } from "node:http";
import type { Registry } from "prom-client";

export interface HealthProbe {
  alive(): boolean;
  ready(): boolean;
  /** A short line explaining readiness, for humans. */
  detail(): string;
}

export async function startHealthServer(
  addr: string,
  registry: Registry | undefined,
  probe: HealthProbe,
): Promise<Server> {
  const i = addr.lastIndexOf(":");
  const host = addr.slice(0, i).replace(/^\[|\]$/g, "") || "0.0.0.0";
  const port = Number(addr.slice(i + 1));
  const server = createServer(async (req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    try {
      if (path === "/metrics" && registry) {
        const body = await registry.metrics();
        res.writeHead(200, { "content-type": registry.contentType }).end(body);
      } else if (path === "/healthz") {
        const ok = probe.alive();
        res.writeHead(ok ? 200 : 503, { "content-type": "text/plain" }).end(ok ? "ok\n" : "loop stalled\n");
      } else if (path === "/readyz") {
        const ok = probe.ready();
        res
          .writeHead(ok ? 200 : 503, { "content-type": "text/plain" })
          .end(`${ok ? "ready" : "not ready"}: ${probe.detail()}\n`);
      } else {
        res
          .writeHead(404, { "content-type": "text/plain" })
          .end(`not found: try ${registry ? "/metrics, " : ""}/healthz, /readyz\n`);
      }
    } catch (e) {
      res.writeHead(500, { "content-type": "text/plain" }).end(`${(e as Error).message}\n`);
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}
