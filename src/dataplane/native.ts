/**
 * native: loading a system shared library through koffi, with a missing library reported as the
 * caller's own error (which names the package to install). May not: bind functions (each binding
 * module declares its own signatures).
 */
import * as koffi from "koffi";

export function loadLibrary(name: string, missing: (cause: unknown) => Error): koffi.LibraryHandle {
  try {
    return koffi.load(name);
  } catch (e) {
    throw missing(e);
  }
}
