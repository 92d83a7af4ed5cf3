import { describe, expect, it } from "vitest";
import { RotationDuplicates } from "./log-dedup.js";
import type { LogFrame } from "./log-demux.js";

const t = (s: number) => `2026-12-05T00:50:${String(s).padStart(2, "0")}.000000000Z`;
const frame = (stamp: string, text: string, stream: LogFrame["stream"] = "stdout"): LogFrame => ({ stream, data: Buffer.from(`${stamp} ${text}`) });
const texts = (frames: LogFrame[]) => frames.map((f) => `${f.stream}:${f.data.toString()}`);

describe("RotationDuplicates: a following log across rotations delivers each line once", () => {
  it("strips the stamps of new lines", () => {
    const d = new RotationDuplicates();
    expect(texts(d.filter([frame(t(1), "a\n"), frame(t(2), "b\n", "stderr")]))).toEqual(["stdout:a\n", "stderr:b\n"]);
  });

  it("drops the lines Docker sends again after a rotation, older or at the last instant", () => {
    const d = new RotationDuplicates();
    d.filter([frame(t(1), "299\n"), frame(t(2), "300\n")]);
    // After the rotation: 299 and 300 again, then new lines.
    expect(texts(d.filter([frame(t(1), "299\n"), frame(t(2), "300\n"), frame(t(3), "301\n")]))).toEqual(["stdout:301\n"]);
    expect(d.dropped).toBe(2);
  });

  it("keeps a stderr line stamped just before the stdout line delivered ahead of it (each stream in its own order)", () => {
    const d = new RotationDuplicates();
    // Docker stamps each stream in its own copier: "err 0" can carry the earlier stamp yet come second.
    expect(texts(d.filter([frame(t(2), "out 0\n"), frame(t(1), "err 0\n", "stderr"), frame(t(3), "out 1\n")]))).toEqual(["stdout:out 0\n", "stderr:err 0\n", "stdout:out 1\n"]);
    expect(d.dropped).toBe(0);
  });

  it("keeps the parts of one long line, which share a stamp", () => {
    const d = new RotationDuplicates();
    const parts = [frame(t(5), "x".repeat(10)), frame(t(5), "y".repeat(10)), frame(t(5), "z\n")];
    expect(texts(d.filter(parts))).toEqual([`stdout:${"x".repeat(10)}`, `stdout:${"y".repeat(10)}`, "stdout:z\n"]);
    // The same instant again after a complete line: a repeat.
    expect(d.filter([frame(t(5), "z\n")])).toEqual([]);
  });

  it("passes frames without a stamp unchanged", () => {
    const d = new RotationDuplicates();
    const f: LogFrame = { stream: "stdout", data: Buffer.from("no stamp\n") };
    expect(d.filter([f])).toEqual([f]);
  });
});
