/**
 * kube/list-reader: a streaming reader for the API server's list responses.
 *
 * Owns: splitting the top-level `items` array of a JSON list into elements as text arrives.
 * May not: do I/O or interpret the items.
 */

export type Obj = Record<string, unknown>;
export const isObj = (v: unknown): v is Obj => v !== null && typeof v === "object" && !Array.isArray(v);

/**
 * Incremental reader for a list response: fed text chunks, it hands each element of the top-level
 * `items` array to `onItem` as soon as that element is complete and keeps only the unfinished
 * element, so a page of full objects never exists at once (a 500-pod page is ~3 MB of text and
 * several times that as objects; they die young this way). `end()` parses the remaining top-level
 * fields (`items` emptied) and returns them, or throws when the text was not a JSON list.
 */
export class ListReader {
  private buf = "";
  private pos = 0;
  private depth = 0;
  private inStr = false;
  private esc = false;
  private strStart = -1;
  private lastKey = "";
  private state: "head" | "items" | "tail" = "head";
  private itemStart = -1;
  private head = "";

  constructor(private readonly onItem: (raw: unknown) => void) {}

  push(chunk: string): void {
    this.buf += chunk;
    const buf = this.buf;
    const n = buf.length;
    let i = this.pos;
    let cut = -1; // everything before `cut` is consumed
    for (; i < n; i++) {
      const ch = buf.charCodeAt(i);
      if (this.inStr) {
        if (this.esc) this.esc = false;
        else if (ch === 92 /* backslash */) this.esc = true;
        else if (ch === 34 /* quote */) {
          this.inStr = false;
          if (this.state === "head" && this.depth === 1) this.lastKey = buf.slice(this.strStart + 1, i);
        }
        continue;
      }
      if (ch === 34) {
        this.inStr = true;
        this.strStart = i;
      } else if (ch === 123 /* { */ || ch === 91 /* [ */) {
        if (this.state === "head" && this.depth === 1 && ch === 91 && this.lastKey === "items") {
          this.state = "items";
          this.head += buf.slice(0, i + 1);
          cut = i + 1;
        } else if (this.state === "items" && this.depth === 2) {
          this.itemStart = i;
        }
        this.depth++;
      } else if (ch === 125 /* } */ || ch === 93 /* ] */) {
        this.depth--;
        if (this.state === "items" && this.depth === 2 && this.itemStart >= 0) {
          this.onItem(JSON.parse(buf.slice(this.itemStart, i + 1)));
          this.itemStart = -1;
          cut = i + 1;
        } else if (this.state === "items" && this.depth === 1) {
          this.state = "tail"; // the closing bracket of `items` stays for end()
          cut = i;
        }
      } else if (ch === 44 /* , */ && this.depth === 1) {
        this.lastKey = "";
      }
    }
    if (this.state === "items" && this.itemStart < 0 && cut < n) cut = n; // only separators left
    if (cut > 0) {
      this.buf = buf.slice(cut);
      if (this.itemStart >= 0) this.itemStart -= cut;
      if (this.strStart >= 0) this.strStart -= cut;
      this.pos = n - cut;
    } else {
      this.pos = n;
    }
  }

  end(): Obj {
    if (this.state !== "tail") throw new Error("not a list");
    const head: unknown = JSON.parse(this.head + this.buf);
    if (!isObj(head)) throw new Error("not a list");
    return head;
  }
}
