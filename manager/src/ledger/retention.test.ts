import { afterEach, describe, expect, it } from "vitest";
import { createLogger } from "../log.js";
import type { Store, WriteOp } from "../store/store.js";
import { testStore } from "../../testing/store.js";
import { DEFAULT_RETENTION, EventRetention } from "./retention.js";

const opened: Store[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((s) => s.close()));
});

/** A store holding `n` events, event i written at timeOf(i); `ids()` lists the ids left, oldest first. */
async function setup(n: number, timeOf: (i: number) => number) {
  const store = await testStore();
  opened.push(store);
  const ops: WriteOp[] = [];
  for (let i = 0; i < n; i++) ops.push({ op: "event.append", event: { type: "phase.changed", message: String(i) }, at: timeOf(i) });
  await store.commit(ops);
  const ids = async () => (await store.readForward({ project: null, afterId: 0, upToId: await store.lastEventId(), limit: 10_000 })).map((e) => e.id);
  const written = await ids();
  expect(written).toHaveLength(n);
  return { store, ids, written };
}

describe("event retention", () => {
  it("by count: keeps exactly the newest rows, in batches", async () => {
    const { store, ids, written } = await setup(2500, () => 1000);
    const r = new EventRetention(store, { ...DEFAULT_RETENTION, maxRows: 700, batchSize: 1000 }, undefined, () => 2000);
    expect(await r.pruneOnce()).toBe(1000);
    expect(await r.pruneOnce()).toBe(800);
    expect(await r.pruneOnce()).toBe(0);
    expect(await ids()).toEqual(written.slice(-700));
  });

  it("by age: drops only rows older than the cutoff, oldest first", async () => {
    const DAY = 24 * 3600_000;
    // Event i is (100 - i) days old.
    const now = 100 * DAY;
    const { store, ids, written } = await setup(100, (i) => i * DAY);
    const r = new EventRetention(store, { ...DEFAULT_RETENTION, maxAgeMs: 30 * DAY, batchSize: 50 }, undefined, () => now);
    expect(await r.pruneOnce()).toBe(50);
    expect(await r.pruneOnce()).toBe(20);
    expect(await r.pruneOnce()).toBe(0);
    // Kept: events at least as new as 30 days: i >= 70, the last 30 written.
    expect(await ids()).toEqual(written.slice(70));
  });

  it("a step never deletes more than one batch, whatever the backlog", async () => {
    const { store, ids, written } = await setup(300, () => 0);
    const r = new EventRetention(store, { ...DEFAULT_RETENTION, maxAgeMs: 1, maxRows: 10, batchSize: 100 }, undefined, () => 10_000);
    expect(await r.pruneOnce()).toBe(100);
    expect(await ids()).toEqual(written.slice(100));
  });

  it("running, drains a backlog one bounded step after another, and a failed step is retried, not lost", async () => {
    const { store, ids } = await setup(300, () => 0);
    let fail = 1;
    const steps: number[] = [];
    let inStep = 0;
    let overlapped = false;
    // The first step fails (a locked database); each step's deletions are counted.
    const pruneEventsOlderThan = async (cutoff: number, limit: number) => {
      if (inStep++ > 0) overlapped = true;
      try {
        await new Promise((r) => setTimeout(r, 5));
        if (fail-- > 0) throw new Error("SQLITE_BUSY: database is locked");
        const n = await store.pruneEventsOlderThan(cutoff, limit);
        steps.push(n);
        return n;
      } finally {
        inStep--;
      }
    };
    // The real store, but with that pruneEventsOlderThan.
    const flaky = new Proxy(store, {
      get(target, prop) {
        if (prop === "pruneEventsOlderThan") return pruneEventsOlderThan;
        const v: unknown = Reflect.get(target, prop, target);
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const warned: string[] = [];
    const log = createLogger("silent", "test");
    log.warn = ((_o: unknown, msg: string) => void warned.push(msg)) as unknown as typeof log.warn;
    const r = new EventRetention(flaky, { ...DEFAULT_RETENTION, maxAgeMs: 1, batchSize: 100, intervalMs: 20 }, log, () => 10_000);
    r.start();
    try {
      for (let i = 0; i < 100 && (await ids()).length > 0; i++) await new Promise((res) => setTimeout(res, 10));
    } finally {
      r.stop();
    }
    expect(await ids()).toEqual([]);
    expect(warned).toEqual(["event retention step failed; retrying later"]);
    expect(steps.slice(0, 3)).toEqual([100, 100, 100]);
    expect(overlapped).toBe(false);
  });
});
