import { describe, expect, it } from "vitest";
import { LogDemuxer, mergeFrames, splitFrame } from "./log-demux.js";

function frame(type: number, text: string): Buffer {
  const payload = Buffer.from(text);
  const h = Buffer.alloc(8);
  h[0] = type;
  h.writeUInt32BE(payload.length, 4);
  return Buffer.concat([h, payload]);
}

const asText = (fs: { stream: string; data: Buffer }[]) => fs.map((f) => `${f.stream}:${f.data.toString()}`);

describe("LogDemuxer", () => {
  it("splits several frames arriving in one chunk", () => {
    const d = new LogDemuxer();
    expect(asText(d.push(Buffer.concat([frame(1, "out 1\n"), frame(2, "err 1\n"), frame(1, "out 2\n")])))).toEqual([
      "stdout:out 1\n",
      "stderr:err 1\n",
      "stdout:out 2\n",
    ]);
    expect(d.buffered).toBe(0);
  });

  it("reassembles a frame cut anywhere, even inside the header, byte by byte", () => {
    const bytes = Buffer.concat([frame(2, "hello stderr\n"), frame(1, "and stdout\n")]);
    const d = new LogDemuxer();
    const got = [];
    for (const b of bytes) got.push(...d.push(Buffer.from([b])));
    expect(asText(got)).toEqual(["stderr:hello stderr\n", "stdout:and stdout\n"]);
    expect(d.buffered).toBe(0);
  });

  it("keeps an incomplete frame until the rest arrives", () => {
    const f = frame(1, "partial line\n");
    const d = new LogDemuxer();
    expect(d.push(f.subarray(0, 11))).toEqual([]);
    expect(d.buffered).toBe(11);
    expect(asText(d.push(f.subarray(11)))).toEqual(["stdout:partial line\n"]);
  });

  it("skips empty frames and rejects a TTY (raw) stream clearly", () => {
    const d = new LogDemuxer();
    expect(d.push(frame(1, ""))).toEqual([]);
    expect(() => new LogDemuxer().push(Buffer.from("plain text from a tty\n"))).toThrow(/TTY/);
  });

  it("splits large frames into bounded pieces", () => {
    const parts = splitFrame({ stream: "stdout", data: Buffer.alloc(10, 97) }, 4);
    expect(parts.map((p) => p.data.length)).toEqual([4, 4, 2]);
    expect(parts.every((p) => p.stream === "stdout")).toBe(true);
  });
});

describe("mergeFrames", () => {
  const f = (stream: "stdout" | "stderr", text: string) => ({ stream, data: Buffer.from(text) });
  it("joins consecutive lines of one stream, keeps the order of streams and the size bound", () => {
    const frames = [f("stdout", "a\n"), f("stdout", "b\n"), f("stderr", "e\n"), f("stdout", "c\n"), f("stdout", "dddd\n"), f("stdout", "e\n")];
    expect(asText(mergeFrames(frames, 6))).toEqual(["stdout:a\nb\n", "stderr:e\n", "stdout:c\n", "stdout:dddd\n", "stdout:e\n"]);
    expect(mergeFrames([], 10)).toEqual([]);
  });
});
