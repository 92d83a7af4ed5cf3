import { describe, expect, it } from "vitest";
import { openDatabase } from "../store/database.js";
import { EventStore } from "../store/event-store.js";
import { Store } from "../store/store.js";
import { Ledger } from "./ledger.js";
import { DEFAULT_RETENTION, EventRetention } from "./retention.js";

function setup(n: number, timeOf: (i: number) => number) {
  const db = openDatabase(":memory:");
  const store = new Store(db);
  let t = 0;
  const ledger = new Ledger(store, () => t);
  store.transaction(() => {
    for (let i = 0; i < n; i++) {
      t = timeOf(i);
      ledger.append({ type: "phase.changed", message: String(i) });
    }
  });
  const events = new EventStore(db);
  const ids = () => (db.prepare("SELECT id FROM events ORDER BY id").all() as { id: number }[]).map((r) => r.id);
  return { events, ids };
}

describe("event retention", () => {
  it("by count: keeps exactly the newest rows, in batches", () => {
    const { events, ids } = setup(2500, () => 1000);
    const r = new EventRetention(events, { ...DEFAULT_RETENTION, maxRows: 700, batchSize: 1000 }, undefined, () => 2000);
    expect(r.pruneOnce()).toBe(1000);
    expect(r.pruneOnce()).toBe(800);
    expect(r.pruneOnce()).toBe(0);
    expect(ids()).toEqual(Array.from({ length: 700 }, (_, i) => 1801 + i));
  });

  it("by age: drops only rows older than the cutoff, oldest first", () => {
    const DAY = 24 * 3600_000;
    // Event i is (100 - i) days old.
    const now = 100 * DAY;
    const { events, ids } = setup(100, (i) => i * DAY);
    const r = new EventRetention(events, { ...DEFAULT_RETENTION, maxAgeMs: 30 * DAY, batchSize: 50 }, undefined, () => now);
    expect(r.pruneOnce()).toBe(50);
    expect(r.pruneOnce()).toBe(20);
    expect(r.pruneOnce()).toBe(0);
    // Kept: events at least as new as 30 days: i >= 70, ids 71..100.
    expect(ids()).toEqual(Array.from({ length: 30 }, (_, i) => 71 + i));
  });

  it("a step never deletes more than one batch, whatever the backlog", () => {
    const { events, ids } = setup(300, () => 0);
    const r = new EventRetention(events, { ...DEFAULT_RETENTION, maxAgeMs: 1, maxRows: 10, batchSize: 100 }, undefined, () => 10_000);
    expect(r.pruneOnce()).toBe(100);
    expect(ids()).toHaveLength(200);
    expect(ids()[0]).toBe(101);
  });
});
