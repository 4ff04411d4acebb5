/**
 * kube/http: GET requests to the API server over node:http with the kubeconfig's credentials, and the
 * API's error shape.
 *
 * Owns: building the URL and headers per request (applyToFetchOptions each time, so rotated
 * service-account and exec tokens are picked up), status errors (`HttpStatusError`, with the `code`
 * ListWatch checks for 410), and one streamed list page (items handed out one by one through
 * ListReader). May not: retry, cache or interpret objects.
 */
import http from "node:http";
import https from "node:https";
import type { KubeConfig } from "@kubernetes/client-node";
import { isObj, ListReader, type Obj } from "./list-reader.js";

export class HttpStatusError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
    readonly reason?: string,
  ) {
    super(message);
    this.name = "HttpStatusError";
  }
  /** ListWatch checks `code` as well as `statusCode` for 410. */
  get code(): number {
    return this.statusCode;
  }
}

/** An error from a Status body (or its absence) and the HTTP code. */
export function errorFromStatus(httpCode: number, body: unknown): HttpStatusError {
  const status = isObj(body) ? body : {};
  const code = typeof status.code === "number" ? status.code : httpCode;
  const msg =
    typeof status.message === "string" ? status.message : http.STATUS_CODES[httpCode] || `HTTP ${httpCode}`;
  return new HttpStatusError(code, msg, typeof status.reason === "string" ? status.reason : undefined);
}

/** Log fields for any error a request or watch produced. */
export function describeError(err: unknown): Obj {
  if (err instanceof HttpStatusError)
    return { err: err.message, statusCode: err.statusCode, reason: err.reason };
  if (err instanceof Error) return { err: err.message, code: (err as { code?: unknown }).code };
  return { err: String(err) };
}

export class KubeHttp {
  constructor(private readonly kc: KubeConfig) {}

  /** Open a GET; resolves with the response once headers arrive. */
  async request(path: string, query: URLSearchParams, signal: AbortSignal): Promise<http.IncomingMessage> {
    const cluster = this.kc.getCurrentCluster();
    if (!cluster) throw new Error("kubeconfig has no current cluster");
    const url = new URL(cluster.server.replace(/\/+$/, "") + path);
    for (const [k, v] of query) url.searchParams.set(k, v);
    // Per request: exec/token-file credentials may rotate.
    const fetchOpts = await this.kc.applyToFetchOptions({});
    const headers: Record<string, string> = { Accept: "application/json" };
    (
      fetchOpts.headers as unknown as { forEach(cb: (v: string, k: string) => void): void } | undefined
    )?.forEach((v, k) => {
      headers[k] = v;
    });
    const mod = url.protocol === "https:" ? https : http;
    return new Promise((resolve, reject) => {
      const req = mod.get(
        url,
        { agent: fetchOpts.agent as http.Agent | undefined, headers, signal },
        resolve,
      );
      req.on("error", reject);
    });
  }

  /** GET one list page, streaming each item to `onItem`; returns the list's other fields. */
  async getList(
    path: string,
    query: URLSearchParams,
    signal: AbortSignal,
    onItem: (raw: unknown) => void,
  ): Promise<Obj> {
    const res = await this.request(path, query, signal);
    const ok = res.statusCode === 200;
    const reader = new ListReader(onItem);
    let errText = "";
    res.setEncoding("utf8");
    await new Promise<void>((resolve, reject) => {
      res.on("data", (chunk: string) => {
        if (!ok) errText += chunk;
        else {
          try {
            reader.push(chunk);
          } catch (e) {
            res.destroy();
            reject(e);
          }
        }
      });
      res.on("end", resolve);
      res.on("error", reject);
      res.on("close", () => (res.complete ? resolve() : reject(new Error("connection closed mid-response"))));
    });
    if (!ok) {
      let body: unknown;
      try {
        body = JSON.parse(errText);
      } catch {
        throw new HttpStatusError(res.statusCode ?? 0, errText.slice(0, 200) || "no body");
      }
      throw errorFromStatus(res.statusCode ?? 0, body);
    }
    try {
      return reader.end();
    } catch {
      throw new Error(`GET ${path}: response is not a list`);
    }
  }
}
