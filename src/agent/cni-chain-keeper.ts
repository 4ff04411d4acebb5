/**
 * cni-chain-keeper: keeps podwall-cni chained in the node's CNI configuration while the agent runs.
 *
 * Owns: re-checking the conflist on every change in its directory and every `intervalMs` (a watch
 * can miss a rename), re-chaining when the entry is gone, and saying so (log line and metric).
 * May not: touch anything but the podwall-cni entry (cni-conflist does the edit).
 */
import { type FSWatcher, watch } from "node:fs";
import { chainPlugin } from "./cni-conflist.js";
import type { Logger } from "./log.js";
import type { Metrics } from "./metrics.js";

export class CniChainKeeper {
  private timer: NodeJS.Timeout | undefined;
  private watcher: FSWatcher | undefined;
  private lastError = "";
  private debounce: NodeJS.Timeout | undefined;

  constructor(
    private readonly dir: string,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly intervalMs = 10_000,
  ) {}

  start(): void {
    this.check(true);
    this.timer = setInterval(() => this.check(false), this.intervalMs);
    this.timer.unref();
    try {
      this.watcher = watch(this.dir, () => {
        // Our own rename fires this too; the second check finds nothing to do.
        if (this.debounce) clearTimeout(this.debounce);
        this.debounce = setTimeout(() => this.check(false), 100);
        this.debounce.unref();
      });
      this.watcher.on("error", () => {}); // The interval keeps checking.
    } catch {
      // The directory may not exist yet; the interval keeps checking.
    }
  }

  /** One check; true when it had to re-chain. */
  check(first: boolean): boolean {
    try {
      const r = chainPlugin(this.dir);
      this.lastError = "";
      if (r.changed) {
        if (!first) {
          this.metrics.cniRechained.inc();
          this.log.warn(
            { conflist: r.path },
            "podwall-cni was missing from the CNI configuration; chained it again",
          );
        } else this.log.info({ conflist: r.path }, "podwall-cni chained in the CNI configuration");
      }
      return r.changed;
    } catch (e) {
      const msg = (e as Error).message;
      if (msg !== this.lastError) this.log.warn({ err: msg }, "cannot chain podwall-cni yet; retrying");
      this.lastError = msg;
      return false;
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.debounce) clearTimeout(this.debounce);
    this.watcher?.close();
  }
}
