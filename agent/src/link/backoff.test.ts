import { describe, expect, it } from "vitest";
import { Backoff } from "./backoff.js";

describe("Backoff", () => {
  it("doubles the ceiling per attempt up to the cap", () => {
    const b = new Backoff(500, 30_000, () => 0.999999);
    const delays = Array.from({ length: 10 }, () => b.next());
    expect(delays.slice(0, 4)).toEqual([499, 999, 1999, 3999]);
    expect(Math.max(...delays)).toBeLessThan(30_000);
    expect(delays.at(-1)).toBe(29_999);
  });

  it("uses full jitter: any delay between 0 and the ceiling", () => {
    const b = new Backoff(500, 30_000, () => 0);
    expect([b.next(), b.next(), b.next()]).toEqual([0, 0, 0]);
  });

  it("starts over after reset", () => {
    const b = new Backoff(100, 1000, () => 0.5);
    b.next();
    b.next();
    b.reset();
    expect(b.next()).toBe(50);
  });
});
