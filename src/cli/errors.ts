/**
 * cli/errors: turning failures into one clear line and an exit code, never a stack trace.
 *
 * Owns: exit codes (2 = bad input or usage, or a cluster that could not be read; 1 = the operation
 * failed, e.g. a kernel command). `podwall diff` uses 1 for "something changes", so nothing that
 * goes wrong while reading its input may exit 1.
 * May not: swallow errors silently; PODWALL_DEBUG=1 adds the stack for developers.
 */

import { ClusterReadError } from "../agent/sources/cluster-snapshot.js";
import { ManifestError } from "../agent/sources/manifests.js";
import { InputError } from "../compiler/errors.js";
import { CommandError } from "../dataplane/exec.js";

export class UsageError extends Error {}

export function exitCodeFor(e: unknown): number {
  return e instanceof ManifestError ||
    e instanceof InputError ||
    e instanceof UsageError ||
    e instanceof ClusterReadError
    ? 2
    : 1;
}

export function action<A extends unknown[]>(
  fn: (...args: A) => Promise<void> | void,
): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (e) {
      const msg =
        e instanceof CommandError
          ? `kernel command failed: ${e.message}`
          : e instanceof Error
            ? e.message
            : String(e);
      process.stderr.write(`podwall: error: ${msg}\n`);
      if (process.env.PODWALL_DEBUG && e instanceof Error && e.stack) process.stderr.write(`${e.stack}\n`);
      process.exitCode = exitCodeFor(e);
    }
  };
}

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
