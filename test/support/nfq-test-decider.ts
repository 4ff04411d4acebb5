/**
 * nfq-test-decider: a decider module for the NFQUEUE tests, loaded by the verdict worker.
 *
 * The table lists allowed TCP and UDP destination ports (default-allow TCP/80, UDP/53 in the tests);
 * everything else is denied. `throwOnPort` makes the decider throw, to test the default verdict.
 * `throwOnBuild` makes the factory reject the table, to test that the previous table stays.
 * `spinUs` slows every verdict down, to fill the kernel queue. TCP ports in `audit` are allowed and
 * reported as audit denies; `reportOf` says which verdict a reported packet got.
 */
export interface TestTable {
  tcp: number[];
  udp: number[];
  throwOnPort?: number;
  throwOnBuild?: boolean;
  /** Busy-wait this long per packet, to overload the queue on purpose. */
  spinUs?: number;
  /** Allowed TCP ports reported as audit denies. */
  audit?: number[];
}

let decisions = 0;

/** Optional decider-module export: the worker drains it about once a second. */
export function drainCounters(): { decisions: number } {
  const n = decisions;
  decisions = 0;
  return { decisions: n };
}

const ALLOW = { allowed: true };
const DENY = { allowed: false };
const AUDIT = { allowed: true, audit: true };

/** Optional decider-module export: what a reported (dropped or audit) decision says. */
export function reportOf(r: { allowed: boolean; audit?: unknown }): { verdict: string } {
  return { verdict: r.audit ? "audit" : r.allowed ? "allow" : "deny" };
}

export function createDecider(table: unknown): (
  src: string,
  dst: string,
  proto: number,
  dport: number,
) => {
  allowed: boolean;
  audit?: boolean;
} {
  const t = table as TestTable;
  if (!t || !Array.isArray(t.tcp) || !Array.isArray(t.udp))
    throw new Error("test table needs tcp[] and udp[]");
  if (t.throwOnBuild) throw new Error("table refused (test)");
  const tcp = new Set(t.tcp);
  const udp = new Set(t.udp);
  const audit = new Set(t.audit ?? []);
  const boom = t.throwOnPort ?? -1;
  const spinMs = (t.spinUs ?? 0) / 1000;
  return (_src, _dst, proto, dport) => {
    decisions++;
    if (dport === boom) throw new Error("decider failure (test)");
    if (spinMs > 0) {
      const end = performance.now() + spinMs;
      while (performance.now() < end) {}
    }
    if (proto === 6) return audit.has(dport) ? AUDIT : tcp.has(dport) ? ALLOW : DENY;
    if (proto === 17) return udp.has(dport) ? ALLOW : DENY;
    return DENY;
  };
}
