/**
 * The store contract's usage history (store.ts usage.write, usageBuckets;
 * migration 14) on the engine testStore() opens (BERTH_TEST_STORE=sqlite|postgres):
 * buckets written in one batch read back per subject, a second part of a
 * bucket merges by sample counts, old buckets are pruned a bounded number at
 * a time, and a purged server's or removed host's buckets go with it.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { newServer, sameDatabase, testStore } from "../../testing/store.js";
import type { Committed, Store, UsageBucketRecord, WriteOp } from "./store.js";

const STEP = 300_000;
const T0 = Math.floor(1_700_000_000_000 / STEP) * STEP;
let store: Store;
beforeEach(async () => {
  store = await testStore();
});
afterEach(() => store.close());

function bucket(subjectId: string, at: number, v = 1, o: Partial<UsageBucketRecord> = {}): UsageBucketRecord {
  return {
    kind: "server",
    subjectId,
    at,
    samples: 30,
    cpuPercent: v,
    memoryBytes: v * 1000,
    memoryMaxBytes: v * 2000,
    memoryLimitBytes: 2 ** 31,
    netRxBps: v * 2,
    netTxBps: v * 3,
    ioReadBps: v * 4,
    ioWriteBps: v * 5,
    pids: v,
    ...o,
  };
}

const DAY = 86_400_000;
/** The subject's buckets from T0 on, over a day. */
const read = (kind: "server" | "host", id: string) => store.usageBuckets(kind, id, T0 - 1, T0 + DAY);

const write = (buckets: UsageBucketRecord[], pruneBefore = 0, pruneLimit = 1000): WriteOp => ({ op: "usage.write", buckets, pruneBefore, pruneLimit });

describe("usage buckets", () => {
  it("writes many subjects' buckets in one batch; reads one subject's after a time, oldest first, exactly as written", async () => {
    const host = bucket("host_1", T0, 7, { kind: "host", netRxBps: 0, netTxBps: 0, ioReadBps: 0, ioWriteBps: 0, pids: 0 });
    const { memoryLimitBytes: _none, ...noLimit } = bucket("srv_b", T0, 2.5);
    await store.commit([write([bucket("srv_a", T0 + STEP, 2), bucket("srv_a", T0, 1), noLimit, host])]);
    expect(await read("server", "srv_a")).toEqual([bucket("srv_a", T0, 1), bucket("srv_a", T0 + STEP, 2)]);
    expect(await store.usageBuckets("server", "srv_a", T0, T0 + DAY)).toEqual([bucket("srv_a", T0 + STEP, 2)]);
    // Up to and including `upTo`.
    expect(await store.usageBuckets("server", "srv_a", T0 - 1, T0)).toEqual([bucket("srv_a", T0, 1)]);
    expect(await store.usageBuckets("server", "srv_a", T0 - 1, T0 - 1)).toEqual([]);
    // No limit stays no limit (not 0); fractions and large figures come back as written.
    expect(await read("server", "srv_b")).toEqual([noLimit]);
    expect(await read("host", "host_1")).toEqual([host]);
    // A host's and a server's keys never mix, whatever the ids.
    expect(await read("host", "srv_a")).toEqual([]);
    expect(await read("server", "srv_none")).toEqual([]);
  });

  it("a second part of a stored bucket merges with it: averages weighted by samples, the larger peak, the later limit", async () => {
    await store.commit([write([bucket("srv_a", T0, 1, { samples: 10, memoryMaxBytes: 5000, memoryLimitBytes: 100 })])]);
    await store.commit([write([bucket("srv_a", T0, 4, { samples: 20, memoryMaxBytes: 3000, memoryLimitBytes: 200 })])]);
    const [b] = await read("server", "srv_a");
    expect(b).toEqual({ ...bucket("srv_a", T0, 3), samples: 30, memoryMaxBytes: 5000, memoryLimitBytes: 200 });
    // The later part without a limit: the bucket ends without one.
    const { memoryLimitBytes: _l, ...unlimited } = bucket("srv_a", T0, 3, { samples: 30 });
    await store.commit([write([unlimited])]);
    expect((await read("server", "srv_a"))[0]).not.toHaveProperty("memoryLimitBytes");
    expect((await read("server", "srv_a"))[0]!.samples).toBe(60);
  });

  it("prunes buckets that started before the cut, oldest first, at most the limit per write", async () => {
    const old = Array.from({ length: 5 }, (_, i) => bucket(`srv_${i % 2}`, T0 + i * STEP, i));
    await store.commit([write(old)]);
    // Cut at the 4th bucket, at most 2: the two oldest go (srv_0's first, srv_1's first).
    await store.commit([write([bucket("srv_x", T0 + 10 * STEP)], T0 + 3 * STEP, 2)]);
    expect((await read("server", "srv_0")).map((b) => (b.at - T0) / STEP)).toEqual([2, 4]);
    expect((await read("server", "srv_1")).map((b) => (b.at - T0) / STEP)).toEqual([3]);
    // The next write takes the rest before the cut; the bucket at the cut stays.
    await store.commit([write([], T0 + 3 * STEP, 2)]);
    expect((await read("server", "srv_0")).map((b) => (b.at - T0) / STEP)).toEqual([4]);
    expect((await read("server", "srv_1")).map((b) => (b.at - T0) / STEP)).toEqual([3]);
    expect(await read("server", "srv_x")).toHaveLength(1);
  });

  it("a purged server's buckets and a removed host's go with them; others stay", async () => {
    await store.commit([
      { op: "host.insert", id: "host_1", name: "h1", secretHash: "x", createdAt: T0 },
      { op: "server.insert", server: newServer({ id: "srv_a", hostId: "host_1" }) },
      { op: "server.insert", server: newServer({ id: "srv_b", hostId: "host_1" }) },
    ]);
    await store.commit([write([bucket("srv_a", T0), bucket("srv_b", T0), bucket("host_1", T0, 1, { kind: "host" })])]);
    await store.commit([{ op: "server.delete", id: "srv_a" }]);
    expect(await read("server", "srv_a")).toEqual([]);
    expect(await read("server", "srv_b")).toHaveLength(1);
    await store.commit([{ op: "host.remove", id: "host_1", at: T0 }]);
    expect(await read("host", "host_1")).toEqual([]);
    expect(await read("server", "srv_b")).toHaveLength(1);
  });

  it("a write is atomic with its batch, announces nothing, and another manager of the database reads it", async () => {
    const heard: Committed[] = [];
    store.onCommit((c) => heard.push(c));
    await store.commit([write([bucket("srv_a", T0)])]);
    expect(heard).toEqual([]);
    // A batch refused by a later operation writes none of its buckets.
    await expect(store.commit([write([bucket("srv_a", T0 + STEP)]), { op: "server.check", id: "srv_missing", expectVersion: 1 }])).rejects.toThrow();
    const other = await sameDatabase(store);
    try {
      expect((await other.usageBuckets("server", "srv_a", T0 - 1, T0 + DAY)).map((b) => b.at)).toEqual([T0]);
    } finally {
      await other.close();
    }
  });

  it("refuses a bucket not starting on a 5-minute boundary, and a read over more than 26 h (a caller's bug)", async () => {
    await expect(store.commit([write([bucket("srv_a", T0 + 1)])])).rejects.toThrow(/starts at \d+, not a multiple of 300000 ms/);
    await expect(store.usageBuckets("server", "srv_a", T0, T0 + 27 * 3_600_000)).rejects.toThrow(/at most 26 h/);
  });

  it("a purge finds the subject's buckets over the last 26 h up to the newest stored", async () => {
    await store.commit([
      { op: "host.insert", id: "host_1", name: "h1", secretHash: "x", createdAt: T0 },
      { op: "server.insert", server: newServer({ id: "srv_a", hostId: "host_1" }) },
    ]);
    const times = [0, 1, 100, 287, 300].map((i) => T0 + i * STEP);
    await store.commit([write([...times.map((t) => bucket("srv_a", t)), bucket("srv_b", T0)])]);
    expect(await store.usageBuckets("server", "srv_a", T0 - 1, T0 + 25 * 3_600_000)).toHaveLength(5);
    await store.commit([{ op: "server.delete", id: "srv_a" }]);
    // 26 h back from the newest (T0 + 300 steps) is T0 - 12 steps: every one of them.
    expect(await store.usageBuckets("server", "srv_a", T0 - 1, T0 + 25 * 3_600_000)).toEqual([]);
    expect(await store.usageBuckets("server", "srv_a", T0 + 287 * STEP - 1, T0 + 301 * STEP)).toEqual([]);
    expect(await read("server", "srv_b")).toHaveLength(1);
  });

  it("10,000 subjects in one write (a fleet's flush): every bucket is stored", async () => {
    const many = Array.from({ length: 10_000 }, (_, i) => bucket(`srv_${String(i).padStart(5, "0")}`, T0, i % 50));
    await store.commit([write(many)]);
    expect(await read("server", "srv_09999")).toEqual([many[9999]]);
    expect(await read("server", "srv_00000")).toEqual([many[0]]);
  }, 60_000);
});
