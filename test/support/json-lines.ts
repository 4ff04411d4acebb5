/**
 * json-lines: read a child's JSON log stream (pino) line by line; non-JSON lines arrive as {msg}.
 */
import type { Readable } from "node:stream";

export function onJsonLines(stream: Readable, each: (line: Record<string, unknown>) => void): void {
  let buf = "";
  stream.on("data", (b) => {
    buf += String(b);
    let i = buf.indexOf("\n");
    while (i >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        each(JSON.parse(line));
      } catch {
        each({ msg: line });
      }
      i = buf.indexOf("\n");
    }
  });
}
