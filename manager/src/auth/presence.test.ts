import { afterEach, describe, expect, it } from "vitest";
import type { Store } from "../store/store.js";
import { twoManagerStores } from "../../testing/store.js";
import { AccessLimits } from "./limits.js";
import { ManagerPresence } from "./presence.js";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function twoStores(): Promise<[Store, Store]> {
  const two = await twoManagerStores();
  cleanups.push(() => two.close());
  return two.stores;
}

const T0 = 1_700_000_000_000;

describe("limits with several managers", () => {
  it("splits a token's rate budget between the live managers, and takes a manager that stopped or died out of the count", async () => {
    const [sa, sb] = await twoStores();
    let now = T0;
    const limitsA = new AccessLimits({ ratePerSecond: 10, burst: 10, maxStreams: 4 }, () => now);
    const counts: number[] = [];
    const a = new ManagerPresence({ store: sa, holder: "mi_a", intervalMs: 1000, now: () => now, onCount: (n) => (limitsA.setManagers(n), counts.push(n)) });
    const b = new ManagerPresence({ store: sb, holder: "mi_b", intervalMs: 1000, now: () => now, onCount: () => {} });
    const c = new ManagerPresence({ store: sb, holder: "mi_c", intervalMs: 1000, now: () => now, onCount: () => {} });

    await a.beat();
    const alone = Array.from({ length: 11 }, () => limitsA.takeMutation("tok_1").ok).filter(Boolean).length;
    expect(alone).toBe(10);

    await b.beat();
    await a.beat();
    expect(limitsA.managers).toBe(2);
    // Each of two managers allows half the burst: the token's total stays the configured one.
    const taken = Array.from({ length: 10 }, () => limitsA.takeMutation("tok_2"));
    expect(taken.filter((d) => d.ok)).toHaveLength(5);
    const refused = taken.find((d) => !d.ok);
    expect(refused && !refused.ok && refused.message).toMatch(/10 changes per second \(bursts of 10\) across 2 managers \(5 per second on this one\); retry in \d+ ms/);

    // A clean stop releases at once.
    await b.stop();
    await a.beat();
    expect(limitsA.managers).toBe(1);

    // One that dies is counted until its lease (3 intervals) runs out.
    await c.beat();
    now += 2_000;
    await a.beat();
    expect(limitsA.managers).toBe(2);
    now += 1_001;
    await a.beat();
    expect(limitsA.managers).toBe(1);
    expect(counts).toEqual([1, 2, 1, 2, 1]);
    await a.stop();
  });

  it("keeps the stream cap per manager (it protects that manager's memory), whatever the count", () => {
    const l = new AccessLimits({ ratePerSecond: 10, burst: 10, maxStreams: 2 });
    l.setManagers(4);
    expect([l.openStream("t").ok, l.openStream("t").ok, l.openStream("t").ok]).toEqual([true, true, false]);
  });
});
