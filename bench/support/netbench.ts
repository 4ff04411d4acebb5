/**
 * netbench: the benchmarks' C load generator (netbench.c beside this file: a TCP accept server,
 * timed sequential connects, a paced raw-UDP flood of new flows), compiled with gcc into `dir`.
 */
import { join } from "node:path";
import { run } from "../../src/dataplane/exec.js";

export async function compileNetbench(dir: string): Promise<string> {
  const bin = join(dir, "netbench");
  await run("gcc", ["-O2", "-Wall", "-o", bin, join(import.meta.dirname, "netbench.c")], {
    timeoutMs: 60_000,
  });
  return bin;
}
