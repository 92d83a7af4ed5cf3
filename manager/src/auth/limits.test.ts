import { describe, expect, it } from "vitest";
import { AccessLimits, TokenBucket } from "./limits.js";

describe("TokenBucket", () => {
  it("allows a burst, then the sustained rate", () => {
    const b = new TokenBucket(10, 3, 0);
    expect([b.take(0), b.take(0), b.take(0), b.take(0)]).toEqual([true, true, true, false]);
    expect(b.waitMs(0)).toBe(100);
    expect(b.take(50)).toBe(false);
    expect(b.take(100)).toBe(true);
    expect(b.take(100)).toBe(false);
  });

  it("refills up to the burst, not beyond", () => {
    const b = new TokenBucket(10, 3, 0);
    for (let i = 0; i < 3; i++) b.take(0);
    expect(b.full(60_000)).toBe(true);
    const taken = [0, 1, 2, 3].map(() => b.take(60_000));
    expect(taken).toEqual([true, true, true, false]);
  });

  it("ignores a clock that goes backwards", () => {
    const b = new TokenBucket(1, 1, 1000);
    expect(b.take(1000)).toBe(true);
    expect(b.take(500)).toBe(false);
  });
});

describe("AccessLimits", () => {
  it("rate-limits mutating calls per token, with a message saying when to retry", () => {
    let now = 0;
    const l = new AccessLimits({ ratePerSecond: 2, burst: 2, maxStreams: 1 }, () => now);
    expect(l.takeMutation("a").ok).toBe(true);
    expect(l.takeMutation("a").ok).toBe(true);
    const refused = l.takeMutation("a");
    expect(refused.ok).toBe(false);
    expect(!refused.ok && refused.message).toMatch(/2 changes per second \(bursts of 2\); retry in 500 ms/);
    // Another token has its own bucket.
    expect(l.takeMutation("b").ok).toBe(true);
    now = 500;
    expect(l.takeMutation("a").ok).toBe(true);
  });

  it("caps open streams per token and frees a slot when one ends", () => {
    const l = new AccessLimits({ ratePerSecond: 1, burst: 1, maxStreams: 2 });
    const a = l.openStream("t");
    const b = l.openStream("t");
    expect(a.ok && b.ok).toBe(true);
    const c = l.openStream("t");
    expect(c.ok).toBe(false);
    expect(!c.ok && c.message).toMatch(/already has 2 open streams \(the maximum is 2\)/);
    expect(l.openStream("other").ok).toBe(true);
    if (a.ok) {
      a.lease.release();
      a.lease.release(); // idempotent
    }
    expect(l.openStreams("t")).toBe(1);
    expect(l.openStream("t").ok).toBe(true);
  });

  it("aborts a token's streams when it is revoked", () => {
    const l = new AccessLimits();
    const s = l.openStream("t");
    const other = l.openStream("u");
    l.closeStreams("t", "revoked");
    expect(s.ok && s.lease.signal.aborted).toBe(true);
    expect(other.ok && other.lease.signal.aborted).toBe(false);
  });

  it("forgets idle tokens' buckets", () => {
    let now = 0;
    const l = new AccessLimits({ ratePerSecond: 1, burst: 1, maxStreams: 1 }, () => now);
    expect(l.takeMutation("a").ok).toBe(true);
    const buckets = (l as unknown as { buckets: Map<string, unknown> }).buckets;
    expect(buckets.has("a")).toBe(true);
    now = 120_000;
    expect(l.takeMutation("b").ok).toBe(true);
    // a's bucket had refilled, so dropping it changes nothing.
    expect(buckets.has("a")).toBe(false);
    expect(l.takeMutation("a").ok).toBe(true);
  });
});
