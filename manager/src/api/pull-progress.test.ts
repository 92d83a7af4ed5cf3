import { describe, expect, it } from "vitest";
import { PullProgressThrottle } from "./pull-progress.js";

describe("PullProgressThrottle", () => {
  it("lets one report per server through every 2 s, and always the last", () => {
    const t = new PullProgressThrottle(2_000);
    const seen = [0, 500, 1999, 2000, 2500, 4100].map((at) => t.shouldRecord("srv_a", false, at));
    expect(seen).toEqual([true, false, false, true, false, true]);
    expect(t.shouldRecord("srv_a", true, 4200)).toBe(true);
    // After the last report a new pull starts fresh.
    expect(t.shouldRecord("srv_a", false, 4300)).toBe(true);
  });

  it("throttles servers independently", () => {
    const t = new PullProgressThrottle(2_000);
    expect(t.shouldRecord("srv_a", false, 0)).toBe(true);
    expect(t.shouldRecord("srv_b", false, 1)).toBe(true);
    expect(t.shouldRecord("srv_a", false, 2)).toBe(false);
  });
});
