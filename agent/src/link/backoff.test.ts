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

describe("Backoff bound by the outage", () => {
  it("never draws from a ceiling longer than the failures have lasted (at least base)", () => {
    let now = 1_000_000;
    const b = new Backoff(500, 30_000, () => 0.999999, { boundByOutage: true, now: () => now });
    // Ten refusals within a few milliseconds: unbounded, the tenth ceiling would be 30 s.
    const quick = Array.from({ length: 10 }, () => {
      now += 1;
      return b.next();
    });
    expect(Math.max(...quick)).toBe(499);
    // 1.5 s into the outage (a manager restart): at most 1.5 s, not 8-16 s.
    now += 1_500;
    expect(b.next()).toBeLessThanOrEqual(1_510);
    // A long outage reaches the cap as before.
    now += 120_000;
    expect(b.next()).toBe(29_999);
  });

  it("grows with waited delays about as the plain backoff does", () => {
    let now = 0;
    const b = new Backoff(500, 30_000, () => 0.999999, { boundByOutage: true, now: () => now });
    const delays: number[] = [];
    for (let i = 0; i < 8; i++) {
      const d = b.next();
      delays.push(d);
      now += d + 1; // waited, then failed at once
    }
    expect(delays.slice(0, 3)).toEqual([499, 499, 999]);
    expect(delays.at(-1)).toBeGreaterThan(15_000);
  });

  it("starts the outage over on reset", () => {
    let now = 0;
    const b = new Backoff(100, 60_000, () => 0.999999, { boundByOutage: true, now: () => now });
    b.next();
    now += 50_000;
    expect(b.next()).toBe(199);
    b.reset();
    now += 10_000;
    expect(b.next()).toBe(99);
  });
});
