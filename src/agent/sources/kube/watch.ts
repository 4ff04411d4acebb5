/**
 * kube/watch: the transport ListWatch uses for watches, replacing client-node's Watch.watch (see
 * kube-source.ts for why): node:http with a header timeout, a deadline of timeoutSeconds + grace,
 * abort on stop(), bookmarks, ERROR events turned into errors (410 relists), and every event
 * converted into its cache entry before ListWatch sees it.
 * May not: decide about retries or backoff; it reports to its owner (one kind's stream).
 */
import type http from "node:http";
import { type KubeConfig, Watch } from "@kubernetes/client-node";
import type { AbortScope } from "./abort-scope.js";
import { errorFromStatus, type KubeHttp } from "./http.js";
import { type CachedObject, identityOf } from "./kind.js";
import { isObj } from "./list-reader.js";

type WatchCallback = (phase: string, apiObj: unknown, watchObj?: unknown) => void;

/** What the transport reports to, and asks of, the stream that owns it. */
export interface WatchOwner {
  /** ListWatch opens a watch: a list it made just before is now applied. */
  opening(): void;
  /** Pause before this watch (after a run of short, empty ones). */
  pauseMs(): number;
  /**
   * The kind is not served (its CRD is not installed): instead of a watch, wait this long and ask
   * for a relist (to find out whether it is served now).
   */
  absentPollMs(): number | undefined;
  params(): { timeoutSeconds: number; requestTimeoutMs: number };
  connected(): void;
  /** A watch that was open ended (cleanly or not). */
  ended(err: unknown, productive: boolean, lastedMs: number): void;
  /** The cache entry for a watch event's object. */
  entry(phase: string, raw: unknown): CachedObject;
}

/**
 * The transport ListWatch uses for watches: same contract as client-node's Watch.watch (callback per
 * event, `done` once when the stream ends), over node:http, with the fixes listed at the top.
 */
export class StreamWatch extends Watch {
  constructor(
    kc: KubeConfig,
    private readonly http: KubeHttp,
    private readonly scope: AbortScope,
    private readonly owner: WatchOwner,
  ) {
    super(kc);
  }

  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: WatchCallback,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    const { http, scope, owner } = this;
    const controller = new AbortController();
    if (scope.stopped) {
      controller.abort();
      return controller;
    }
    owner.opening();
    const absentPoll = owner.absentPollMs();
    if (absentPoll !== undefined) {
      // Return at once (ListWatch's start() waits for this call), then look again later: a
      // synthetic 410 makes ListWatch relist, and the list tells whether the kind is served now.
      void scope
        .sleep(absentPoll)
        .then(() =>
          done(scope.stopped ? null : errorFromStatus(410, { message: "kind not served; looking again" })),
        );
      return controller;
    }
    const pause = owner.pauseMs();
    if (pause > 0) await scope.sleep(pause);
    if (scope.stopped) {
      controller.abort();
      return controller;
    }
    const { timeoutSeconds, requestTimeoutMs } = owner.params();
    const q = new URLSearchParams({
      watch: "true",
      allowWatchBookmarks: "true",
      timeoutSeconds: String(timeoutSeconds),
    });
    for (const [k, v] of Object.entries(queryParams)) if (v !== undefined && v !== "") q.set(k, String(v));

    scope.track(controller);
    const openedAt = Date.now();
    let productive = false;
    let finished = false;
    let connected = false;
    let deadline: NodeJS.Timeout | undefined;
    const finish = (err: unknown): void => {
      if (finished) return;
      finished = true;
      clearTimeout(deadline);
      scope.untrack(controller);
      controller.abort();
      if (connected) owner.ended(err, productive, Date.now() - openedAt);
      done(err);
    };
    // Headers must arrive within the request timeout; then the server must end the watch by
    // timeoutSeconds (+ grace). Past that the connection is presumed dead: re-watch from our RV.
    deadline = setTimeout(() => finish(new Error("timed out waiting for watch response")), requestTimeoutMs);

    let res: http.IncomingMessage;
    try {
      res = await http.request(path, q, controller.signal);
    } catch (e) {
      finish(scope.stopped ? null : e);
      return controller;
    }
    if (finished) {
      res.destroy();
      return controller;
    }
    if (res.statusCode !== 200) {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      await new Promise<void>((resolve) => {
        res.on("end", resolve);
        res.on("close", resolve);
        res.on("error", () => resolve());
      });
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      } catch {
        body = undefined;
      }
      finish(errorFromStatus(res.statusCode ?? 0, body));
      return controller;
    }
    connected = true;
    owner.connected();
    clearTimeout(deadline);
    deadline = setTimeout(() => finish(null), (timeoutSeconds + 30) * 1000);

    let buf = "";
    res.setEncoding("utf8");
    res.on("data", (chunk: string) => {
      buf += chunk;
      let nl = buf.indexOf("\n");
      while (nl >= 0 && !finished) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line) this.onLine(line, callback, finish, () => (productive = true));
        nl = buf.indexOf("\n");
      }
    });
    res.on("end", () => finish(null));
    // A connection reset mid-stream is a clean end for ListWatch: it re-watches from its RV at once
    // (and the next connect attempt reports a down server as an error).
    res.on("error", () => finish(null));
    res.on("close", () => finish(null));
    return controller;
  }

  private onLine(
    line: string,
    callback: WatchCallback,
    finish: (err: unknown) => void,
    mark: () => void,
  ): void {
    let ev: { type?: unknown; object?: unknown };
    try {
      ev = JSON.parse(line);
    } catch {
      return; // a torn line; the stream ends right after
    }
    const type = typeof ev.type === "string" ? ev.type : "";
    if (type === "ERROR") {
      // Usually 410 Expired: ListWatch relists when `done` gets an error with code 410; anything
      // else is an error (backoff, then resume from our RV).
      const st = isObj(ev.object) ? ev.object : {};
      const code = typeof st.code === "number" ? st.code : 500;
      if (code === 410) mark();
      finish(errorFromStatus(code, st));
      return;
    }
    if (type === "BOOKMARK") {
      mark();
      callback(type, { metadata: identityOf(ev.object) }, ev);
      return;
    }
    if (type !== "ADDED" && type !== "MODIFIED" && type !== "DELETED") return;
    mark();
    callback(type, this.owner.entry(type, ev.object), ev);
  }
}
