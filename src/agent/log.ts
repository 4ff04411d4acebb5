/**
 * log: structured JSON logging (pino) shared by the agent's parts.
 * May not: write anywhere but stderr-or-stdout streams; log shipping is the platform's job.
 */
import { pino } from "pino";

export type Logger = pino.Logger;

export function createLogger(
  level = process.env.PODWALL_LOG_LEVEL ?? "info",
  dest?: pino.DestinationStream,
): Logger {
  return pino(
    { name: "podwall", level, base: { component: "agent" } },
    dest ?? pino.destination({ fd: 2, sync: false }),
  );
}
