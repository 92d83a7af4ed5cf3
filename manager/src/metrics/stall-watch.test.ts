import { afterEach, describe, expect, it } from "vitest";
import { StallWatch } from "./stall-watch.js";

const watches: StallWatch[] = [];
afterEach(() => {
  for (const w of watches.splice(0)) w.stop();
});

function watch(opts: ConstructorParameters<typeof StallWatch>[1]) {
  const lines: { fields: Record<string, number>; msg: string }[] = [];
  const w = new StallWatch({ warn: ((fields: Record<string, number>, msg: string) => lines.push({ fields, msg })) as never }, opts);
  watches.push(w);
  w.start();
  return lines;
}

/** Holds the thread for `ms` (what a long synchronous step does). */
function hold(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    /* busy */
  }
}

const turns = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("StallWatch", () => {
  it("logs a stall with its length and its monotonic start and end", async () => {
    const lines = watch({ thresholdMs: 100, tickMs: 5 });
    await turns(20);
    const before = Number(process.hrtime.bigint() / 1000n);
    hold(250);
    await turns(20);
    expect(lines).toHaveLength(1);
    const { blockedMs, startUs, endUs, stalls } = lines[0]!.fields;
    expect(blockedMs).toBeGreaterThanOrEqual(200);
    expect(stalls).toBe(1);
    expect(startUs).toBeLessThanOrEqual(before);
    expect(endUs! - startUs!).toBeGreaterThanOrEqual(250_000);
    expect(lines[0]!.msg).toMatch(/blocked for \d+ ms/);
  });

  it("logs nothing while the loop runs freely (the timer's own period is not a stall)", async () => {
    const lines = watch({ thresholdMs: 1000, tickMs: 5 });
    await turns(100);
    expect(lines).toEqual([]);
  });

  it("at most one line per interval: stalls in between are counted into the next", async () => {
    const lines = watch({ thresholdMs: 50, tickMs: 5, logEveryMs: 60_000 });
    for (let i = 0; i < 3; i++) {
      hold(120);
      await turns(15);
    }
    expect(lines).toHaveLength(1);
    expect(lines[0]!.fields.stalls).toBe(1);
  });
});
