import { describe, expect, it } from "vitest";
import { afterOverlap, appendBounded, asText, LineSplitter, matching, type OutputLine } from "./output-lines.js";

const enc = (s: string) => new TextEncoder().encode(s);
const lines = (...t: string[]): OutputLine[] => t.map((text, n) => ({ n, stream: "stdout", text }));

describe("LineSplitter", () => {
  it("cuts at newlines per stream, keeps a line's start (and a split UTF-8 character) until it ends", () => {
    const s = new LineSplitter();
    expect(s.push("stdout", enc("a\nb"))).toMatchObject([{ stream: "stdout", text: "a" }]);
    expect(s.push("stderr", enc("err\n"))).toMatchObject([{ stream: "stderr", text: "err" }]);
    const euro = enc("€\n");
    expect(s.push("stdout", euro.subarray(0, 1))).toEqual([]);
    expect(s.push("stdout", euro.subarray(1))).toMatchObject([{ text: "b€" }]);
    s.push("stdout", enc("tail"));
    expect(s.flush()).toMatchObject([{ stream: "stdout", text: "tail" }]);
    expect(s.marker("restarted")).toMatchObject({ stream: "marker", text: "restarted" });
  });

  it("appendBounded keeps the newest", () => {
    expect(appendBounded([1, 2, 3], [4, 5], 4)).toEqual([2, 3, 4, 5]);
  });
});

describe("afterOverlap", () => {
  it("drops what is already shown from a reopened stream's backlog", () => {
    expect(afterOverlap(lines("a", "b", "c"), lines("a", "b", "c", "d", "e")).fresh.map((l) => l.text)).toEqual(["d", "e"]);
    expect(afterOverlap(lines("x", "b", "c"), lines("b", "c", "d")).fresh.map((l) => l.text)).toEqual(["d"]);
  });

  it("takes the newest place a repeated line matches", () => {
    expect(afterOverlap(lines("ok"), lines("ok", "ok", "new")).fresh.map((l) => l.text)).toEqual(["new"]);
  });

  it("says there is a gap when what was shown is not in the backlog", () => {
    expect(afterOverlap(lines("old"), lines("p", "q"))).toMatchObject({ gap: true, fresh: [{ text: "p" }, { text: "q" }] });
    expect(afterOverlap([], lines("p"))).toMatchObject({ gap: false, fresh: [{ text: "p" }] });
  });
});

describe("search and download", () => {
  it("filters lines by text, case-insensitive; writes them out with stderr and times marked", () => {
    const ls: OutputLine[] = [
      { n: 0, stream: "stdout", text: "Server started", time: Date.UTC(2026, 0, 2, 3, 4, 5) },
      { n: 1, stream: "stderr", text: "WARN disk", time: Date.UTC(2026, 0, 2, 3, 4, 6) },
    ];
    expect(matching(ls, "  server ").map((l) => l.n)).toEqual([0]);
    expect(matching(ls, "")).toHaveLength(2);
    expect(asText(ls, false)).toBe("Server started\n[stderr] WARN disk\n");
    expect(asText(ls, true)).toBe("2026-01-02T03:04:05.000Z Server started\n2026-01-02T03:04:06.000Z [stderr] WARN disk\n");
  });
});
