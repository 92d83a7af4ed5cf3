import { describe, expect, it } from "vitest";
import { AsyncQueue, type QueueBound } from "./async-queue.js";

type Item = { kind: "data"; bytes: number; n: number } | { kind: "end" } | { kind: "gap"; count: number; size: number };

const bound = (maxSize: number, maxItems = 1000): QueueBound<Item> => ({
  maxSize,
  maxItems,
  sizeOf: (i) => (i.kind === "data" ? i.bytes : 0),
  keep: (i) => i.kind === "end",
  gap: (count, size) => ({ kind: "gap", count, size }),
});

const data = (n: number, bytes = 100): Item => ({ kind: "data", bytes, n });

/** Everything the queue yields until it ends (it must be closed first). */
async function drain<T>(q: AsyncQueue<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const i of q) out.push(i);
  return out;
}

const show = (items: Item[]) => items.map((i) => (i.kind === "data" ? i.n : i.kind === "gap" ? `gap ${i.count}/${i.size}` : "end"));

describe("AsyncQueue with a bound", () => {
  it("holds at most the bound while nobody reads, drops the rest and counts it", () => {
    const q = new AsyncQueue<Item>(bound(1_000));
    let accepted = 0;
    for (let i = 0; i < 100_000; i++) if (q.push(data(i))) accepted++;
    expect(accepted).toBe(10);
    expect(q.held).toEqual({ items: 10, size: 1_000 });
    expect(q.dropped).toEqual({ count: 99_990, size: 9_999_000 });
  });

  it("bounds the number of items too (tiny items have a cost of their own)", () => {
    const q = new AsyncQueue<Item>(bound(1_000_000, 5));
    for (let i = 0; i < 50; i++) q.push(data(i, 0));
    expect(q.held.items).toBe(5);
    expect(q.dropped.count).toBe(45);
  });

  it("marks where items went missing, and how many, before the next accepted item", async () => {
    const q = new AsyncQueue<Item>(bound(300));
    for (let i = 0; i < 5; i++) q.push(data(i)); // 0..2 kept, 3 and 4 dropped
    const it = q[Symbol.asyncIterator]();
    expect((await it.next()).value).toEqual(data(0));
    q.push(data(5)); // room again: the gap goes first
    q.push(data(6)); // full again: dropped
    q.push({ kind: "end" }); // never dropped; the gap before it is reported
    q.close();
    const rest: Item[] = [];
    for (let r = await it.next(); !r.done; r = await it.next()) rest.push(r.value);
    expect(show(rest)).toEqual([1, 2, "gap 2/200", 5, "gap 1/100", "end"]);
  });

  it("tells a consumer that caught up about a gap at once, without waiting for more", async () => {
    const q = new AsyncQueue<Item>(bound(100));
    q.push(data(0));
    q.push(data(1));
    const it = q[Symbol.asyncIterator]();
    expect(show([(await it.next()).value as Item])).toEqual([0]);
    expect(show([(await it.next()).value as Item])).toEqual(["gap 1/100"]);
    // Now waiting: the next push goes straight to the consumer.
    const next = it.next();
    expect(q.push(data(2))).toBe(true);
    expect(show([(await next).value as Item])).toEqual([2]);
  });

  it("without a bound keeps everything (the link's own queues)", async () => {
    const q = new AsyncQueue<number>();
    for (let i = 0; i < 10_000; i++) expect(q.push(i)).toBe(true);
    q.close();
    expect(await drain(q)).toHaveLength(10_000);
    expect(q.dropped).toEqual({ count: 0, size: 0 });
  });

  it("ends with the error it was closed with, after the queued items", async () => {
    const q = new AsyncQueue<Item>(bound(1_000));
    q.push(data(0));
    q.close(new Error("gone"));
    const it = q[Symbol.asyncIterator]();
    expect((await it.next()).value).toEqual(data(0));
    await expect(it.next()).rejects.toThrow("gone");
    expect(q.push(data(1))).toBe(false);
  });
});
