/**
 * ifname: which host interface names podwall may match by name in iptables, and how it writes them.
 *
 * Owns: the check and the quoting. A name is matched by name only if the kernel could have made it
 * (dev_valid_name: 1-15 bytes, not "." or "..", no '/', ':' or whitespace) and iptables matches it
 * exactly: no '+' anywhere (a trailing '+' is iptables' wildcard, with no escape: `pw+` would match
 * every `pw...` interface), no control characters, no U+FFFD (a name that was not valid UTF-8 reached
 * us altered). Any other name is not written into a rule at all: the renderer dispatches that pod by
 * its addresses instead, so one odd interface neither fails a sync nor leaves its pod unenforced.
 * Accepted names are written in double quotes with '"' and '\' escaped, as iptables-restore reads
 * them (checked for both backends: `pw"x` then matches `pw"x` exactly).
 * May not: run commands.
 */

const IFNAMSIZ = 16;
/** The kernel's isspace() (lib/ctype.c), as bytes: \t \n \v \f \r, space and 0xa0. */
const KERNEL_SPACE = new Set([0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20, 0xa0]);

/** Why `name` cannot be matched exactly by iptables, or undefined when it can. */
export function interfaceNameProblem(name: string): string | undefined {
  const bytes = Buffer.from(name, "utf8");
  if (bytes.length === 0) return "empty";
  if (bytes.length >= IFNAMSIZ) return `${bytes.length} bytes (the kernel allows ${IFNAMSIZ - 1})`;
  if (name === "." || name === "..") return "not a device name";
  for (const b of bytes) {
    if (b === 0x2f || b === 0x3a || KERNEL_SPACE.has(b)) return "holds '/', ':' or whitespace";
    if (b < 0x20 || b === 0x7f) return "holds a control character";
  }
  if (name.includes("+")) return "holds '+' (iptables' interface wildcard)";
  if (name.includes("\ufffd")) return "not valid UTF-8";
  return undefined;
}

/** An accepted name as one iptables-restore argument. */
export function interfaceArg(name: string): string {
  const problem = interfaceNameProblem(name);
  if (problem) throw new Error(`internal: interface ${JSON.stringify(name)} ${problem}`);
  return /^[A-Za-z0-9_.@-]+$/.test(name) ? name : `"${name.replace(/[\\"]/g, "\\$&")}"`;
}
