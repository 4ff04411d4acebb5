/**
 * worker-thread: start a worker_thread from a module next to the caller: the compiled .js when podwall
 * runs from dist/, the .ts source (through tsx) when it runs from source (tests, benchmarks).
 *
 * Node 20 does not apply `--import` loader hooks inside worker threads, so TypeScript is loaded
 * through tsx's tsImport from a tiny eval bootstrap. Owns only that choice. May not: talk to the
 * worker (its owner does).
 */
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import { Worker, type WorkerOptions } from "node:worker_threads";

const TS_EXT = /\.(ts|mts|cts)$/;

/**
 * `jsUrl` names the compiled module (`new URL("./worker.js", import.meta.url)`); when it is absent the
 * `.ts` beside it is used. `needsTs`: the worker will itself import TypeScript (a .ts decider module).
 */
export function startWorkerThread(jsUrl: URL, opts: WorkerOptions, needsTs = false): Worker {
  const url = existsSync(jsUrl) ? jsUrl : new URL(jsUrl.href.replace(/\.js$/, ".ts"));
  if (!TS_EXT.test(url.pathname) && !needsTs) return new Worker(url, opts);
  let api: string;
  try {
    // import.meta.resolve picks tsx's ESM build; test runners that lack it get the CommonJS one.
    api =
      typeof import.meta.resolve === "function"
        ? import.meta.resolve("tsx/esm/api")
        : pathToFileURL(createRequire(import.meta.url).resolve("tsx/esm/api")).href;
  } catch {
    throw new Error("loading TypeScript in a worker thread needs the tsx package");
  }
  const boot = `import(${JSON.stringify(api)}).then((m) => m.tsImport(${JSON.stringify(url.href)}, ${JSON.stringify(import.meta.url)}))`;
  return new Worker(boot, { ...opts, eval: true });
}
