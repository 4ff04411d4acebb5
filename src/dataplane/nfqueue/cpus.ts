/**
 * cpus: which CPUs this process may run on, for pinning one verdict thread per queue.
 * Owns: reading and parsing the kernel's CPU list. May not: pin anything (libnfq does).
 */
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";

/** The CPUs this process may use; a container's cpuset need not start at CPU 0. */
export function allowedCpus(statusText?: string): number[] {
  try {
    const text = statusText ?? readFileSync("/proc/self/status", "utf8");
    const m = /Cpus_allowed_list:\s*(\S+)/.exec(text);
    if (m) {
      const list = parseCpuList(m[1]);
      if (list.length) return list;
    }
  } catch {
    // No /proc: assume the first CPUs.
  }
  return Array.from({ length: availableParallelism() }, (_, i) => i);
}

/** "0-3,8,10-11" -> [0, 1, 2, 3, 8, 10, 11]; malformed parts are skipped. */
export function parseCpuList(list: string): number[] {
  const out: number[] = [];
  for (const part of list.split(",")) {
    const [a, b = a] = part.split("-").map(Number);
    if (Number.isInteger(a) && Number.isInteger(b) && a >= 0 && b - a < 4096)
      for (let c = a; c <= b; c++) out.push(c);
  }
  return out;
}
