import { describe, expect, it } from "vitest";
import { engineGoingAway, waitForEngine } from "./engine-watch.js";

/** An engine answering according to a script of booleans, one per probe (the last repeats). */
function engine(script: boolean[]) {
  let i = 0;
  return {
    probes: () => i,
    /** A refused connection counts as the probe; an accepted one is followed by version(). */
    async acceptsConnections() {
      const up = script[Math.min(i, script.length - 1)]!;
      if (!up) i++;
      return up;
    },
    async version() {
      const up = script[Math.min(i++, script.length - 1)];
      if (!up) throw new Error("connect ENOENT /var/run/docker.sock");
      return "28.2.2";
    },
  };
}

describe("engine-watch", () => {
  it("an engine that accepts a fresh connection is not going away", async () => {
    expect(await engineGoingAway({ acceptsConnections: async () => true })).toBe(false);
  });

  it("an engine whose socket refuses new connections is going away, even if old ones still answer", async () => {
    expect(await engineGoingAway({ acceptsConnections: async () => false })).toBe(true);
  });

  it("waits for the engine to come back", async () => {
    const e = engine([false, false, false, true]);
    expect(await waitForEngine(e, Date.now() + 5_000, 5)).toBe(true);
    expect(e.probes()).toBe(4);
  });

  it("gives up at the deadline", async () => {
    const started = Date.now();
    expect(await waitForEngine(engine([false]), started + 60, 10)).toBe(false);
    expect(Date.now() - started).toBeLessThan(1_000);
  });
});
