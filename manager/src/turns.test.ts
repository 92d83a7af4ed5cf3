import { describe, expect, it } from "vitest";
import { TurnBudget } from "./turns.js";

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("TurnBudget", () => {
  it("fits until the turn has spent its budget, and again in the next turn", async () => {
    let now = 100;
    const b = new TurnBudget(10, () => now);
    expect(b.fits()).toBe(true); // starts the clock at 100
    now = 109;
    expect(b.fits()).toBe(true);
    now = 110;
    expect(b.fits()).toBe(false);
    await nextTurn();
    expect(b.fits()).toBe(true); // a new turn: the clock starts at 110
    now = 115;
    expect(b.fits()).toBe(true);
  });

  it("slot() lets each caller in after the work of the one before it ran", async () => {
    let now = 0;
    const b = new TurnBudget(10, () => now);
    const ran: number[] = [];
    // Three pieces of 8 ms each, asked for in the same turn: the second sees the first's
    // 8 ms (fits), the third sees 16 ms and waits for the next turn.
    const pieces = [0, 1, 2].map(async (i) => {
      await b.slot();
      ran.push(i);
      now += 8;
    });
    await nextTurn();
    expect(ran).toEqual([0, 1]);
    await Promise.all(pieces);
    expect(ran).toEqual([0, 1, 2]);
  });

  it("work whose own synchronous part awaits settled promises is counted before the next caller", async () => {
    let now = 0;
    const b = new TurnBudget(10, () => now);
    const ran: number[] = [];
    const pieces = [0, 1].map(async (i) => {
      await b.slot();
      // Like a reconcile on SQLite: reads that resolve at once, then the cost.
      await Promise.resolve();
      await Promise.resolve();
      ran.push(i);
      now += 12;
    });
    await nextTurn();
    expect(ran).toEqual([0]);
    await Promise.all(pieces);
    expect(ran).toEqual([0, 1]);
  });

});
