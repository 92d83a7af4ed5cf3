import { describe, expect, it } from "vitest";
import { count, formatAgo, formatBytes, joinWords, splitWords } from "./format.js";
import { windowRange } from "./virtual-range.js";

describe("splitWords / joinWords", () => {
  it("splits like a shell: quotes and escapes", () => {
    expect(splitWords(`sh -c 'exec sleep 100000'`)).toEqual(["sh", "-c", "exec sleep 100000"]);
    expect(splitWords(`echo "a \\"b\\"" c\\ d ''`)).toEqual(["echo", 'a "b"', "c d", ""]);
    expect(splitWords("   ")).toEqual([]);
    expect(() => splitWords(`echo 'x`)).toThrow(/unclosed/);
  });
  it("joins back to something that splits the same", () => {
    const words = ["sh", "-c", "echo it's $HOME", "", "plain"];
    expect(splitWords(joinWords(words))).toEqual(words);
  });
});

describe("formats", () => {
  it("bytes and ages", () => {
    expect(formatBytes(512)).toBe("512 B");
    expect(formatBytes(5 * 1024 ** 3)).toBe("5.0 GiB");
    expect(formatAgo(0, 65_000)).toBe("1m ago");
    expect(formatAgo(10_000, 5_000)).toBe("in 5s");
  });
});

describe("windowRange", () => {
  it("renders the visible rows plus overscan, clamped", () => {
    expect(windowRange(0, 440, 44, 5000, 6)).toEqual({ start: 0, end: 17 });
    expect(windowRange(44 * 1000, 440, 44, 5000, 6)).toEqual({ start: 994, end: 1017 });
    expect(windowRange(44 * 5000, 440, 44, 5000, 6)).toEqual({ start: 4994, end: 5000 });
    expect(windowRange(0, 440, 44, 0, 6)).toEqual({ start: 0, end: 0 });
  });
});

describe("count", () => {
  it("says 1 server, not 1 servers", () => {
    expect(count(1, "server")).toBe("1 server");
    expect(count(0, "server")).toBe("0 servers");
    expect(count(2n, "host")).toBe("2 hosts");
    expect(count(3, "entry", "entries")).toBe("3 entries");
  });
});
