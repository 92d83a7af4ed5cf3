/**
 * Container output as lines: bytes per stream (stdout, stderr) decoded as
 * UTF-8 and cut at newlines, a line's start kept until its end arrives.
 * Shared by the Logs and Console tabs. No DOM.
 */
export interface OutputLine {
  /** Increasing key, unique within one view. */
  n: number;
  /** stdout, stderr, or "marker" (a line berth adds: a restart, output left out, a reconnection). */
  stream: string;
  text: string;
  /** When the line's end arrived (epoch ms), if known. */
  time?: number;
}

export class LineSplitter {
  private readonly open = new Map<string, { dec: InstanceType<typeof TextDecoder>; rest: string }>();
  private n = 0;

  /** The whole lines `data` completes on `stream`. */
  push(stream: string, data: Uint8Array, time?: number): OutputLine[] {
    let d = this.open.get(stream);
    if (!d) this.open.set(stream, (d = { dec: new TextDecoder(), rest: "" }));
    const parts = (d.rest + d.dec.decode(data, { stream: true })).split("\n");
    d.rest = parts.pop() ?? "";
    return parts.map((text) => ({ n: this.n++, stream, text, ...(time !== undefined ? { time } : {}) }));
  }

  /** A line of berth's own, e.g. "container restarted". */
  marker(text: string): OutputLine {
    return { n: this.n++, stream: "marker", text };
  }

  /** What is left without its newline (the stream ended). */
  flush(): OutputLine[] {
    const out = [...this.open.entries()].filter(([, d]) => d.rest).map(([stream, d]) => ({ n: this.n++, stream, text: d.rest }));
    this.open.clear();
    return out;
  }
}

/** `lines` with `add` appended, keeping at most `max` (the newest). */
export function appendBounded<T>(lines: readonly T[], add: readonly T[], max: number): T[] {
  const next = lines.concat(add);
  return next.length > max ? next.slice(next.length - max) : next;
}

/**
 * A reopened console stream starts with a backlog that overlaps what is on
 * screen: the part of `backlog` after the newest place where the last lines
 * shown (up to `probe` of them, compared by stream and text) appear in it.
 * `gap` says the shown lines were not found: output may be missing between
 * them and the backlog, which is then returned whole.
 */
export function afterOverlap(shown: readonly OutputLine[], backlog: readonly OutputLine[], probe = 20): { fresh: OutputLine[]; gap: boolean } {
  const tail = shown.filter((l) => l.stream !== "marker").slice(-probe);
  if (tail.length === 0) return { fresh: [...backlog], gap: false };
  const same = (a: OutputLine, b: OutputLine) => a.stream === b.stream && a.text === b.text;
  for (let end = backlog.length; end > 0; end--) {
    const k = Math.min(tail.length, end);
    let match = true;
    for (let i = 1; i <= k && match; i++) match = same(backlog[end - i]!, tail[tail.length - i]!);
    if (match) return { fresh: backlog.slice(end), gap: false };
  }
  return { fresh: [...backlog], gap: true };
}

/** The lines whose text contains `query` (case-insensitive); all of them for an empty query. */
export function matching(lines: readonly OutputLine[], query: string): readonly OutputLine[] {
  const q = query.trim().toLowerCase();
  return q ? lines.filter((l) => l.text.toLowerCase().includes(q)) : lines;
}

/** The lines as a text file: `[stderr] ` before stderr lines, an ISO time first when `times`. */
export function asText(lines: readonly OutputLine[], times: boolean): string {
  return lines.map((l) => `${times && l.time ? `${new Date(l.time).toISOString()} ` : ""}${l.stream === "stderr" ? "[stderr] " : l.stream === "marker" ? "[berth] " : ""}${l.text}\n`).join("");
}
