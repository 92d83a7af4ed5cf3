import { describe, expect, it } from "vitest";
import { TailBuffer } from "./tail-buffer.js";

describe("TailBuffer", () => {
  it("keeps everything under the limit", () => {
    const t = new TailBuffer(10);
    t.push(Buffer.from("abc"));
    t.push(Buffer.from("def"));
    expect(t.bytes().toString()).toBe("abcdef");
    expect(t.truncated).toBe(false);
  });

  it("keeps only the last bytes, across chunk boundaries and of a chunk longer than the limit", () => {
    const t = new TailBuffer(5);
    t.push(Buffer.from("abcd"));
    t.push(Buffer.from("efg"));
    expect(t.bytes().toString()).toBe("cdefg");
    t.push(Buffer.from("0123456789"));
    expect(t.bytes().toString()).toBe("56789");
    expect(t.truncated).toBe(true);
    expect(t.total).toBe(17);
  });

  it("holds at most the limit however much is pushed", () => {
    const t = new TailBuffer(64 * 1024);
    const line = Buffer.alloc(1000, 120);
    for (let i = 0; i < 10_000; i++) t.push(line);
    expect(t.bytes().length).toBe(64 * 1024);
    expect((t as unknown as { chunks: Buffer[] }).chunks.length).toBeLessThanOrEqual(66);
  });
});
