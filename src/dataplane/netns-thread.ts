/**
 * netns-thread: create a kernel handle (a netlink socket) inside a named network namespace from the
 * calling thread. A socket stays in the namespace it was created in, so the thread switches with
 * setns(2), runs `open`, and switches back at once; setns moves only the calling thread.
 *
 * Owns: the switch and the way back. May not: leave a thread in another namespace: if the way back
 * fails, it ends the thread (process.exit in a worker ends that worker; in the main thread, the
 * process), since anything it did next would act on the wrong node.
 */
import { closeSync, openSync } from "node:fs";
import * as koffi from "koffi";

const CLONE_NEWNET = 0x40000000;

let setnsFn: ((fd: number, nstype: number) => number) | undefined;

function setns(): (fd: number, nstype: number) => number {
  setnsFn ??= koffi.load("libc.so.6").func("int setns(int fd, int nstype)") as (
    fd: number,
    nstype: number,
  ) => number;
  return setnsFn;
}

/**
 * Run `open` with the calling thread inside network namespace `netns` (a name under /run/netns), or
 * in place when `netns` is undefined. `open` must be synchronous; what it returns (a socket-backed
 * handle) keeps working after the thread is back home.
 */
export function openInNetns<T>(netns: string | undefined, open: () => T): T {
  if (!netns) return open();
  const call = setns();
  const home = openSync("/proc/thread-self/ns/net", "r");
  let there: number;
  try {
    there = openSync(`/run/netns/${netns}`, "r");
  } catch (e) {
    closeSync(home);
    throw new Error(`network namespace ${netns}: ${(e as Error).message}`);
  }
  try {
    if (call(there, CLONE_NEWNET) !== 0) throw new Error(`setns(${netns}) failed (errno ${koffi.errno()})`);
    try {
      return open();
    } finally {
      // We hold the fd, so this cannot fail for a missing namespace; if it fails anyway, stop.
      if (call(home, CLONE_NEWNET) !== 0) {
        process.stderr.write(`podwall: setns back from ${netns} failed (errno ${koffi.errno()}); exiting\n`);
        process.exit(70);
      }
    }
  } finally {
    closeSync(there);
    closeSync(home);
  }
}
