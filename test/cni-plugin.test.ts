/**
 * The chained CNI plugin (cni/podwall-cni.c) as built by its one recipe (cni/build.sh): hardened
 * (static PIE, stack protector, _FORTIFY_SOURCE, full RELRO), and never printing invalid JSON or
 * succeeding on an answer it cannot vouch for, whatever a (fake) agent on its socket replies.
 * The real agent end to end is e2e/cni.test.ts.
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const ROOT = join(import.meta.dirname, "..");
let dir: string;
let plugin: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "podwall-cni-plugin-"));
  plugin = join(dir, "podwall-cni");
  const b = spawnSync("sh", [join(ROOT, "cni", "build.sh"), plugin], { encoding: "utf8" });
  if (b.status !== 0) throw new Error(`cni/build.sh failed: ${b.stderr}`);
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

const tool = (cmd: string, args: string[]) => spawnSync(cmd, args, { encoding: "utf8" }).stdout;

describe("cni/build.sh", () => {
  it("builds a static PIE with full RELRO, whose own code is stack-protected and fortified", () => {
    expect(tool("readelf", ["-h", plugin])).toMatch(/Type:\s+DYN \(Position-Independent Executable/);
    const segments = tool("readelf", ["-lW", plugin]);
    expect(segments).not.toMatch(/INTERP/); // static: no loader of the node's needed
    expect(segments).toMatch(/GNU_RELRO/);
    expect(segments).toMatch(/GNU_STACK\s+\S+\s+\S+\s+\S+\s+\S+\s+\S+\s+RW /);
    expect(tool("readelf", ["-dW", plugin])).toMatch(/FLAGS\)\s+BIND_NOW/);
    // A static binary carries libc's own checked functions anyway: look at what main calls.
    const main = tool("objdump", ["-d", "--no-show-raw-insn", "--disassemble=main", plugin]);
    expect(main).toMatch(/call.*<__stack_chk_fail>/);
    expect(main).toMatch(/call.*<_*(snprintf|printf|strcpy)_chk>/);
  });
});

/** A fake agent: answers every connection on a unix socket with `reply` (raw bytes), then closes. */
async function fakeAgent(reply: string | null): Promise<{ socket: string; server: Server }> {
  const socket = join(dir, `agent-${Math.random().toString(36).slice(2)}.sock`);
  const server = createServer((c) => {
    c.on("error", () => {});
    if (reply === null) return c.destroy(); // accept, then close without a byte
    // Answer once the request is in (as the agent does), then close.
    c.once("data", () => c.end(reply));
  });
  await new Promise<void>((r) => server.listen(socket, r));
  return { socket, server };
}

const CONF = {
  cniVersion: "1.0.0",
  name: "kindnet",
  type: "podwall-cni",
  prevResult: { cniVersion: "1.0.0", ips: [{ address: "10.244.1.12/24" }] },
};

/** One ADD, as a runtime makes it; asynchronous, so the fake agent in this process can answer. */
function add(socket: string, conf: object = CONF): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(plugin, [], {
      env: {
        CNI_COMMAND: "ADD",
        CNI_CONTAINERID: "c0ffee",
        CNI_NETNS: "/var/run/netns/test",
        CNI_IFNAME: "eth0",
        CNI_ARGS: "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=db",
        PODWALL_CNI_SOCKET: socket,
      },
    });
    let out = "";
    child.stdout.on("data", (b) => {
      out += b;
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, out }));
    child.stdin.on("error", () => {});
    child.stdin.end(JSON.stringify(conf));
  });
}

const http = (status: string, body: string, headers = `Content-Length: ${Buffer.byteLength(body)}\r\n`) =>
  `HTTP/1.1 ${status}\r\nContent-Type: application/json\r\n${headers}Connection: close\r\n\r\n${body}`;

const RESULT = { ...CONF.prevResult, cniVersion: "1.0.0" };
const ERROR = { cniVersion: "1.0.0", code: 11, msg: "podwall: pod shop/db is not known yet" };

describe("podwall-cni on a malformed agent answer", () => {
  const cases: [string, string | null][] = [
    ["garbage", "\x00\xff not http at all"],
    ["an HTTP status line and nothing else", "HTTP/1.1 200 OK\r\n"],
    ["a 200 with a garbage body", http("200 OK", "<html>oops</html>")],
    [
      "a 200 with truncated JSON (Content-Length says more)",
      http("200 OK", JSON.stringify(RESULT)).slice(0, -9),
    ],
    [
      "a 200 with truncated JSON (no Content-Length)",
      http("200 OK", JSON.stringify(RESULT).slice(0, -9), ""),
    ],
    ["a 200 with JSON that is not a result", http("200 OK", "[1,2,3]")],
    ["a 200 with two JSON objects", http("200 OK", `${JSON.stringify(RESULT)}{}`)],
    ["a 200 with a bad escape", http("200 OK", '{"cniVersion":"1.0.0","x":"\\q"}')],
    ["an error status with a body that is not a CNI error", http("404 Not Found", '{"msg":"not found"}')],
    ["an error status with garbage", http("500 Internal Server Error", "boom")],
    ["a closed connection (nothing)", null],
  ];
  it.each(cases)("%s: a valid CNI error (code 11), exit 1", async (_name, reply) => {
    const { socket, server } = await fakeAgent(reply);
    try {
      const r = await add(socket);
      expect(r.code).toBe(1);
      const json = JSON.parse(r.out);
      expect(json).toMatchObject({ cniVersion: "1.0.0", code: 11, msg: expect.stringMatching(/^podwall: /) });
    } finally {
      server.close();
    }
  });

  it("an agent that hangs up mid-request: a valid CNI error, not a death by SIGPIPE", async () => {
    const { socket, server } = await fakeAgent(null);
    try {
      // Far more than a socket buffer holds: the write is still going when the agent hangs up.
      const big = { ...CONF, padding: "x".repeat(900_000) };
      for (let i = 0; i < 5; i++) {
        const r = await add(socket, big);
        expect([r.code, JSON.parse(r.out).code]).toEqual([1, 11]);
      }
    } finally {
      server.close();
    }
  });

  it("an error object from the agent is passed on as is, exit 1", async () => {
    const { socket, server } = await fakeAgent(http("500 Internal Server Error", JSON.stringify(ERROR)));
    try {
      const r = await add(socket);
      expect([r.code, JSON.parse(r.out)]).toEqual([1, ERROR]);
    } finally {
      server.close();
    }
  });

  it("a well-formed result is printed as is, exit 0 (with or without Content-Length)", async () => {
    for (const reply of [
      http("200 OK", JSON.stringify(RESULT)),
      http("200 OK", `${JSON.stringify(RESULT, null, 1)}\n`, ""),
    ]) {
      const { socket, server } = await fakeAgent(reply);
      try {
        const r = await add(socket);
        expect([r.code, JSON.parse(r.out)]).toEqual([0, RESULT]);
      } finally {
        server.close();
      }
    }
  });
});
