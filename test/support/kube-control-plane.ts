/**
 * kube-control-plane: a real etcd (Debian's etcd-server) and kube-apiserver (built by
 * scripts/kube/build.sh) on loopback, for the e2e suites.
 *
 * Owns: certificates and keys (scripts/kube/pki.sh), free ports, one temporary directory (data,
 * certificates, logs), the processes it starts, killing and restarting the API server, compacting
 * etcd, and a small HTTPS client (the admin certificate, or a bearer token).
 * Every process runs under `setpriv --pdeathsig KILL`, so it dies with the test process even when
 * that is killed; stop() kills exactly those processes and removes the directory.
 * May not: build the binaries (too slow for a test hook; scripts/setup.sh builds them once per
 * machine) or touch anything outside its directory.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, until } from "./agent-process.js";

const ROOT = join(import.meta.dirname, "..", "..");
const ETCD = "/usr/bin/etcd";

// biome-ignore lint/suspicious/noExplicitAny: API objects are free-form JSON
export type KObj = Record<string, any>;

export interface KubeResponse {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: a Status, an object or a list, read field by field
  body: any;
}

export interface RequestOptions {
  /** Authenticate with this bearer token instead of the admin client certificate. */
  token?: string;
  contentType?: string;
  query?: Record<string, string>;
}

export interface ControlPlaneOptions {
  /** More kube-apiserver flags (they win over the defaults below with the same name). */
  apiServerArgs?: readonly string[];
}

/** Where scripts/kube/build.sh keeps the binaries of its current recipe (nothing is built). */
export function kubeBinDir(): string {
  const r = spawnSync("bash", [join(ROOT, "scripts/kube/build.sh"), "--bin-dir"], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`scripts/kube/build.sh --bin-dir failed: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

interface ApiResource {
  kind: string;
  name: string;
  namespaced: boolean;
}

const apiBase = (gv: string) => (gv.includes("/") ? `/apis/${gv}` : `/api/${gv}`);

/** `base` with every flag named in `override` replaced by the override's value, plus the new ones. */
function withFlags(base: readonly string[], override: readonly string[]): string[] {
  const flag = (a: string) => a.split("=")[0];
  return [...base.filter((b) => !override.some((o) => flag(o) === flag(b))), ...override];
}

/** A long-running process of the control plane, its output appended to a log file. */
class Daemon {
  child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();

  constructor(
    readonly name: string,
    private readonly bin: string,
    private readonly args: readonly string[],
    readonly logFile: string,
  ) {}

  /** `override` flags replace the configured ones of the same name for this start only. */
  start(override: readonly string[] = []): void {
    const fd = openSync(this.logFile, "a");
    try {
      const args = withFlags(this.args, override);
      const child = spawn("setpriv", ["--pdeathsig", "KILL", "--", this.bin, ...args], {
        stdio: ["ignore", fd, fd],
      });
      this.child = child;
      this.exited = new Promise((r) => child.once("exit", () => r()));
    } finally {
      closeSync(fd);
    }
  }

  get running(): boolean {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  async kill(): Promise<void> {
    if (this.running) this.child!.kill("SIGKILL");
    await this.exited;
  }

  /** The log's last lines, for error messages. */
  tail(lines = 15): string {
    if (!existsSync(this.logFile)) return "";
    return readFileSync(this.logFile, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  }
}

export class KubeControlPlane {
  readonly pki: string;
  /** https://127.0.0.1:PORT */
  readonly server: string;
  /** Seconds each API server start took to become ready (first start, then each restart). */
  readonly apiServerStartSeconds: number[] = [];
  private readonly ca: Buffer;
  private readonly cert: Buffer;
  private readonly key: Buffer;
  private readonly etcd: Daemon;
  private readonly apiserver: Daemon;
  private readonly discovery = new Map<string, ApiResource[]>();
  private readonly onExit = () => {
    for (const d of [this.apiserver, this.etcd]) if (d.running) d.child!.kill("SIGKILL");
  };

  private constructor(
    readonly dir: string,
    readonly apiPort: number,
    readonly etcdPort: number,
    etcdPeerPort: number,
    bin: string,
    opts: ControlPlaneOptions,
  ) {
    this.pki = join(dir, "pki");
    this.ca = readFileSync(join(this.pki, "ca.crt"));
    this.cert = readFileSync(join(this.pki, "admin.crt"));
    this.key = readFileSync(join(this.pki, "admin.key"));
    this.server = `https://127.0.0.1:${apiPort}`;
    const etcdUrl = `http://127.0.0.1:${etcdPort}`;
    const peerUrl = `http://127.0.0.1:${etcdPeerPort}`;
    this.etcd = new Daemon(
      "etcd",
      ETCD,
      [
        "--name=pw",
        `--data-dir=${join(dir, "etcd")}`,
        `--listen-client-urls=${etcdUrl}`,
        `--advertise-client-urls=${etcdUrl}`,
        `--listen-peer-urls=${peerUrl}`,
        `--initial-advertise-peer-urls=${peerUrl}`,
        `--initial-cluster=pw=${peerUrl}`,
        "--logger=zap",
        "--log-level=warn",
      ],
      join(dir, "etcd.log"),
    );
    const p = (f: string) => join(this.pki, f);
    const defaults = [
      `--etcd-servers=${etcdUrl}`,
      "--bind-address=127.0.0.1",
      "--advertise-address=127.0.0.1",
      `--secure-port=${apiPort}`,
      // 1.20 also serves plain HTTP on 127.0.0.1:8080 unless told not to.
      "--insecure-port=0",
      `--cert-dir=${join(dir, "apiserver-certs")}`,
      `--tls-cert-file=${p("apiserver.crt")}`,
      `--tls-private-key-file=${p("apiserver.key")}`,
      `--client-ca-file=${p("ca.crt")}`,
      `--service-account-issuer=https://kubernetes.default.svc.cluster.local`,
      `--service-account-key-file=${p("sa.pub")}`,
      `--service-account-signing-key-file=${p("sa.key")}`,
      "--authorization-mode=RBAC",
      "--service-cluster-ip-range=10.96.0.0/16",
      // Endpoints may not hold a loopback address, so the `kubernetes` Service gets none.
      "--endpoint-reconciler-type=none",
      // No controller-manager: no token secrets, so the ServiceAccount plugin would refuse every pod.
      "--disable-admission-plugins=ServiceAccount",
      "--allow-privileged=true",
      "--profiling=false",
      // The server compacts etcd every 5 minutes by default; tests compact when they mean to.
      "--etcd-compaction-interval=0",
    ];
    const args = withFlags(defaults, opts.apiServerArgs ?? []);
    this.apiserver = new Daemon(
      "kube-apiserver",
      join(bin, "kube-apiserver"),
      args,
      join(dir, "apiserver.log"),
    );
  }

  /** Certificates, etcd, kube-apiserver; resolves once /readyz answers ok. */
  static async start(opts: ControlPlaneOptions = {}): Promise<KubeControlPlane> {
    const bin = kubeBinDir();
    if (!existsSync(join(bin, "kube-apiserver")))
      throw new Error(
        `kube-apiserver is not built (${bin}): run \`sudo bash scripts/kube/build.sh\` once (scripts/setup.sh does)`,
      );
    if (!existsSync(ETCD)) throw new Error(`${ETCD} missing: install etcd-server (scripts/setup.sh does)`);
    const dir = mkdtempSync(join(tmpdir(), "podwall-kube-"));
    let cp: KubeControlPlane | undefined;
    try {
      const r = spawnSync("bash", [join(ROOT, "scripts/kube/pki.sh"), join(dir, "pki")], {
        encoding: "utf8",
      });
      if (r.status !== 0) throw new Error(`scripts/kube/pki.sh failed: ${r.stderr}`);
      const ports = new Set<number>();
      while (ports.size < 3) ports.add(await freePort());
      const [api, etcd, peer] = [...ports];
      cp = new KubeControlPlane(dir, api, etcd, peer, bin, opts);
      process.once("exit", cp.onExit);
      cp.etcd.start();
      await cp.waitFor(cp.etcd, async () => {
        const h = await fetch(`http://127.0.0.1:${etcd}/health`).catch(() => undefined);
        return !!h && (await h.json()).health === "true";
      });
      await cp.startApiServer();
      return cp;
    } catch (e) {
      if (cp) await cp.stop();
      else rmSync(dir, { recursive: true, force: true });
      throw e;
    }
  }

  /**
   * (Re)start kube-apiserver on the same port and etcd; resolves once /readyz answers ok. `args`
   * replace flags of the same name for this run only (e.g. --watch-cache=false).
   */
  async startApiServer(args: readonly string[] = []): Promise<void> {
    if (this.apiserver.running) throw new Error("kube-apiserver is already running");
    const t0 = performance.now();
    this.apiserver.start(args);
    await this.waitFor(
      this.apiserver,
      async () => (await this.request("GET", "/readyz").catch(() => ({ status: 0 }))).status === 200,
    );
    this.apiServerStartSeconds.push((performance.now() - t0) / 1000);
  }

  /** SIGKILL kube-apiserver (etcd keeps running). */
  async killApiServer(): Promise<void> {
    await this.apiserver.kill();
  }

  /** Compact etcd's history up to its current revision (physically); returns that revision. */
  async compactEtcd(): Promise<number> {
    const etcd = `http://127.0.0.1:${this.etcdPort}/v3/kv`;
    const post = async (path: string, body: object) => {
      const r = await fetch(`${etcd}/${path}`, { method: "POST", body: JSON.stringify(body) });
      if (!r.ok) throw new Error(`etcd ${path}: HTTP ${r.status} ${await r.text()}`);
      return r.json();
    };
    // Any key will do: every response carries the store's current revision.
    const rev = Number(
      (await post("range", { key: Buffer.from("/").toString("base64"), limit: 1 })).header.revision,
    );
    await post("compaction", { revision: String(rev), physical: true });
    return rev;
  }

  /** Kill both processes (each waited for) and remove the directory. */
  async stop(): Promise<void> {
    try {
      await this.apiserver.kill();
      await this.etcd.kill();
    } finally {
      process.removeListener("exit", this.onExit);
      rmSync(this.dir, { recursive: true, force: true });
    }
  }

  /** A kubeconfig file (admin certificate, or `token`) for tools such as kubectl. */
  writeKubeconfig(file: string, token?: string): string {
    const user = token
      ? { token }
      : { "client-certificate": join(this.pki, "admin.crt"), "client-key": join(this.pki, "admin.key") };
    const cfg = {
      apiVersion: "v1",
      kind: "Config",
      clusters: [
        { name: "test", cluster: { server: this.server, "certificate-authority": join(this.pki, "ca.crt") } },
      ],
      users: [{ name: "test", user }],
      contexts: [{ name: "test", context: { cluster: "test", user: "test" } }],
      "current-context": "test",
    };
    writeFileSync(file, JSON.stringify(cfg));
    return file;
  }

  /** One HTTPS request; a JSON body is parsed. Never throws on an HTTP error status. */
  request(method: string, path: string, body?: unknown, o: RequestOptions = {}): Promise<KubeResponse> {
    const q = o.query ? `${path.includes("?") ? "&" : "?"}${new URLSearchParams(o.query)}` : "";
    const payload = body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = https.request(
        `${this.server}${path}${q}`,
        {
          method,
          ca: this.ca,
          ...(o.token ? {} : { cert: this.cert, key: this.key }),
          headers: {
            accept: "application/json",
            ...(o.token ? { authorization: `Bearer ${o.token}` } : {}),
            ...(payload !== undefined
              ? {
                  "content-type": o.contentType ?? "application/json",
                  // A chunked DELETE body is left unread by the server and spoils the kept-alive connection.
                  "content-length": Buffer.byteLength(payload),
                }
              : {}),
          },
          timeout: 30_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c) => chunks.push(c));
          res.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            let parsed: unknown = text;
            // A watch answers with one JSON document per event: that stays text.
            if ((res.headers["content-type"] ?? "").includes("json") && !path.includes("watch="))
              parsed = JSON.parse(text);
            resolve({ status: res.statusCode ?? 0, body: parsed });
          });
          res.on("error", reject);
        },
      );
      req.on("timeout", () => req.destroy(new Error(`${method} ${path}: timed out`)));
      req.on("error", reject);
      if (payload !== undefined) req.write(payload);
      req.end();
    });
  }

  /** Whether the server serves this kind in this group/version (discovery). */
  async serves(apiVersion: string, kind: string): Promise<boolean> {
    return (await this.resourceOf(apiVersion, kind)) !== undefined;
  }

  /** The REST path of an object (or of its collection without a name), found through discovery. */
  async pathOf(obj: KObj, withName = true): Promise<string> {
    const gv: string = obj.apiVersion;
    const res = await this.resourceOf(gv, obj.kind);
    if (!res) throw new Error(`the server has no kind ${obj.kind} in ${gv}`);
    const ns = obj.metadata?.namespace;
    if (res.namespaced && !ns)
      throw new Error(`${obj.kind} ${obj.metadata?.name}: metadata.namespace missing`);
    const coll = `${apiBase(gv)}${res.namespaced ? `/namespaces/${ns}` : ""}/${res.name}`;
    return withName ? `${coll}/${obj.metadata.name}` : coll;
  }

  private async resourceOf(gv: string, kind: string): Promise<ApiResource | undefined> {
    let list = this.discovery.get(gv);
    // Asked again on a miss: a CRD installed since may have added the kind.
    if (!list?.some((r) => r.kind === kind)) {
      const r = await this.request("GET", apiBase(gv));
      if (r.status === 404) return undefined;
      if (r.status !== 200) throw new Error(`discovery ${apiBase(gv)}: HTTP ${r.status}`);
      list = (r.body.resources as ApiResource[]).filter((x) => !x.name.includes("/"));
      this.discovery.set(gv, list);
    }
    return list.find((r) => r.kind === kind);
  }

  /**
   * Server-side apply (create or update), as the field manager "podwall-test"; with dryRun the
   * server validates and admits it but stores nothing. Throws with the server's message on failure.
   */
  async apply(obj: KObj, o: { dryRun?: boolean } = {}): Promise<KObj> {
    const query: Record<string, string> = { fieldManager: "podwall-test", force: "true" };
    if (o.dryRun) query.dryRun = "All";
    const r = await this.request("PATCH", await this.pathOf(obj), obj, {
      contentType: "application/apply-patch+yaml",
      query,
    });
    if (r.status !== 200 && r.status !== 201) throw new KubeError(obj, r);
    return r.body;
  }

  /** Create (POST); returns the response, so a test can check a rejection. */
  async create(obj: KObj, o: RequestOptions & { dryRun?: boolean } = {}): Promise<KubeResponse> {
    const query = { ...(o.query ?? {}), ...(o.dryRun ? { dryRun: "All" } : {}) };
    return this.request("POST", await this.pathOf(obj, false), obj, { ...o, query });
  }

  /** JSON merge patch of an object (or its status subresource). */
  async mergePatch(obj: KObj, patch: unknown, subresource = ""): Promise<KObj> {
    const r = await this.request("PATCH", `${await this.pathOf(obj)}${subresource}`, patch, {
      contentType: "application/merge-patch+json",
    });
    if (r.status !== 200) throw new KubeError(obj, r);
    return r.body;
  }

  /** Delete now: grace period 0 (pods bound to a node would otherwise wait for a kubelet forever). */
  async delete(obj: KObj): Promise<void> {
    const r = await this.request("DELETE", await this.pathOf(obj), {
      apiVersion: "v1",
      kind: "DeleteOptions",
      gracePeriodSeconds: 0,
    });
    if (r.status !== 200 && r.status !== 202) throw new KubeError(obj, r);
  }

  async get(obj: KObj): Promise<KObj | undefined> {
    const r = await this.request("GET", await this.pathOf(obj));
    if (r.status === 404) return undefined;
    if (r.status !== 200) throw new KubeError(obj, r);
    return r.body;
  }

  /** A token for a ServiceAccount from the TokenRequest API (no controller-manager needed). */
  async serviceAccountToken(namespace: string, name: string, expirationSeconds = 3600): Promise<string> {
    const r = await this.request("POST", `/api/v1/namespaces/${namespace}/serviceaccounts/${name}/token`, {
      apiVersion: "authentication.k8s.io/v1",
      kind: "TokenRequest",
      spec: { expirationSeconds },
    });
    if (r.status !== 201)
      throw new Error(`TokenRequest ${namespace}/${name}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.status.token;
  }

  /**
   * A pod directory's worth of in-cluster configuration: `token`, `ca.crt` and `namespace`, as the
   * kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount.
   */
  writeServiceAccountDir(dir: string, namespace: string, token: string, ca: Buffer = this.ca): string {
    writeFileSync(join(dir, "token"), token, { mode: 0o600 });
    writeFileSync(join(dir, "ca.crt"), ca);
    writeFileSync(join(dir, "namespace"), namespace);
    return dir;
  }

  /** A CA certificate that signed nothing of this control plane (for TLS verification tests). */
  static otherCA(): Buffer {
    const dir = mkdtempSync(join(tmpdir(), "podwall-pki-"));
    try {
      const r = spawnSync("bash", [join(ROOT, "scripts/kube/pki.sh"), dir], { encoding: "utf8" });
      if (r.status !== 0) throw new Error(`scripts/kube/pki.sh failed: ${r.stderr}`);
      return readFileSync(join(dir, "ca.crt"));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  private async waitFor(d: Daemon, ready: () => Promise<boolean>, ms = 120_000): Promise<void> {
    const ok = await until(async () => !d.running || (await ready()), ms, 200);
    if (!ok || !d.running)
      throw new Error(
        `${d.name} ${d.running ? `not ready after ${ms / 1000} s` : "exited"}; last lines of ${d.logFile}:\n${d.tail()}`,
      );
  }
}

/** A request the server refused: names the object and carries the server's message. */
export class KubeError extends Error {
  constructor(
    obj: KObj,
    readonly response: KubeResponse,
  ) {
    const what = `${obj.kind} ${obj.metadata?.namespace ? `${obj.metadata.namespace}/` : ""}${obj.metadata?.name}`;
    super(`${what}: HTTP ${response.status}: ${response.body?.message ?? JSON.stringify(response.body)}`);
    this.name = "KubeError";
  }
}
