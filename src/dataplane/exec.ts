/**
 * exec: the one way podwall runs kernel tools (ip, iptables-restore, ipset, conntrack).
 *
 * Owns: spawning with argument arrays (never a shell string), feeding stdin, optional `ip netns exec`
 * wrapping, timeouts, and errors that carry the command's stderr so operators see the kernel's words.
 * May not: decide policy or know about Kubernetes.
 */
import { spawn } from "node:child_process";

export interface RunOptions {
  /** Run inside this named network namespace (`ip netns exec NAME ...`). */
  netns?: string;
  /** Written to the child's stdin, then stdin is closed. */
  input?: string;
  timeoutMs?: number;
  /** Resolve instead of throwing on a non-zero exit. */
  allowFail?: boolean;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export class CommandError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly code: number,
    readonly stderr: string,
    readonly stdout: string,
  ) {
    super(`${argv.join(" ")} exited ${code}: ${stderr.trim() || stdout.trim() || "(no output)"}`);
    this.name = "CommandError";
  }
}

export function wrapNetns(netns: string | undefined, cmd: string, args: readonly string[]): string[] {
  return netns ? ["ip", "netns", "exec", netns, cmd, ...args] : [cmd, ...args];
}

export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const argv = wrapNetns(opts.netns, cmd, args);
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs) {
      timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs);
    }
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    child.on("error", (e) => {
      if (timer) clearTimeout(timer);
      reject(new CommandError(argv, -1, String(e.message), ""));
    });
    child.on("close", (code, signal) => {
      if (timer) clearTimeout(timer);
      const res: RunResult = {
        code: code ?? (signal ? 128 : -1),
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
      };
      if (res.code !== 0 && !opts.allowFail) {
        reject(
          new CommandError(argv, res.code, res.stderr + (signal ? ` (killed by ${signal})` : ""), res.stdout),
        );
      } else {
        resolve(res);
      }
    });
    // EPIPE when the child exits before reading stdin surfaces through 'close' with its stderr.
    child.stdin.on("error", () => {});
    child.stdin.end(opts.input ?? "");
  });
}
