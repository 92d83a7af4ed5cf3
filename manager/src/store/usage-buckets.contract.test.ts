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

const write = (buckets: UsageBucketRecord[], pruneBefore = 0, pruneLimit = 1000): WriteOp => ({ op: "usage.write", buckets, pruneBefore, pruneLimit });

describe("usage buckets", () => {
  it("writes many subjects' buckets in one batch; reads one subject's after a time, oldest first, exactly as written", async () => {
    const host = bucket("host_1", T0, 7, { kind: "host", netRxBps: 0, netTxBps: 0, ioReadBps: 0, ioWriteBps: 0, pids: 0 });
    const { memoryLimitBytes: _none, ...noLimit } = bucket("srv_b", T0, 2.5);
    await store.commit([write([bucket("srv_a", T0 + STEP, 2), bucket("srv_a", T0, 1), noLimit, host])]);
    expect(await store.usageBuckets("server", "srv_a", 0)).toEqual([bucket("srv_a", T0, 1), bucket("srv_a", T0 + STEP, 2)]);
    expect(await store.usageBuckets("server", "srv_a", T0)).toEqual([bucket("srv_a", T0 + STEP, 2)]);
    // No limit stays no limit (not 0); fractions and large figures come back as written.
    expect(await store.usageBuckets("server", "srv_b", 0)).toEqual([noLimit]);
    expect(await store.usageBuckets("host", "host_1", 0)).toEqual([host]);
    // A host's and a server's keys never mix, whatever the ids.
    expect(await store.usageBuckets("host", "srv_a", 0)).toEqual([]);
    expect(await store.usageBuckets("server", "srv_none", 0)).toEqual([]);
  });

  it("a second part of a stored bucket merges with it: averages weighted by samples, the larger peak, the later limit", async () => {
    await store.commit([write([bucket("srv_a", T0, 1, { samples: 10, memoryMaxBytes: 5000, memoryLimitBytes: 100 })])]);
    await store.commit([write([bucket("srv_a", T0, 4, { samples: 20, memoryMaxBytes: 3000, memoryLimitBytes: 200 })])]);
    const [b] = await store.usageBuckets("server", "srv_a", 0);
    expect(b).toEqual({ ...bucket("srv_a", T0, 3), samples: 30, memoryMaxBytes: 5000, memoryLimitBytes: 200 });
    // The later part without a limit: the bucket ends without one.
    const { memoryLimitBytes: _l, ...unlimited } = bucket("srv_a", T0, 3, { samples: 30 });
    await store.commit([write([unlimited])]);
    expect((await store.usageBuckets("server", "srv_a", 0))[0]).not.toHaveProperty("memoryLimitBytes");
    expect((await store.usageBuckets("server", "srv_a", 0))[0]!.samples).toBe(60);
  });

  it("prunes buckets that started before the cut, oldest first, at most the limit per write", async () => {
    const old = Array.from({ length: 5 }, (_, i) => bucket(`srv_${i % 2}`, T0 + i * STEP, i));
    await store.commit([write(old)]);
    // Cut at the 4th bucket, at most 2: the two oldest go (srv_0's first, srv_1's first).
    await store.commit([write([bucket("srv_x", T0 + 10 * STEP)], T0 + 3 * STEP, 2)]);
    expect((await store.usageBuckets("server", "srv_0", 0)).map((b) => (b.at - T0) / STEP)).toEqual([2, 4]);
    expect((await store.usageBuckets("server", "srv_1", 0)).map((b) => (b.at - T0) / STEP)).toEqual([3]);
    // The next write takes the rest before the cut; the bucket at the cut stays.
    await store.commit([write([], T0 + 3 * STEP, 2)]);
    expect((await store.usageBuckets("server", "srv_0", 0)).map((b) => (b.at - T0) / STEP)).toEqual([4]);
    expect((await store.usageBuckets("server", "srv_1", 0)).map((b) => (b.at - T0) / STEP)).toEqual([3]);
    expect(await store.usageBuckets("server", "srv_x", 0)).toHaveLength(1);
  });

  it("a purged server's buckets and a removed host's go with them; others stay", async () => {
    await store.commit([
      { op: "host.insert", id: "host_1", name: "h1", secretHash: "x", createdAt: T0 },
      { op: "server.insert", server: newServer({ id: "srv_a", hostId: "host_1" }) },
      { op: "server.insert", server: newServer({ id: "srv_b", hostId: "host_1" }) },
    ]);
    await store.commit([write([bucket("srv_a", T0), bucket("srv_b", T0), bucket("host_1", T0, 1, { kind: "host" })])]);
    await store.commit([{ op: "server.delete", id: "srv_a" }]);
    expect(await store.usageBuckets("server", "srv_a", 0)).toEqual([]);
    expect(await store.usageBuckets("server", "srv_b", 0)).toHaveLength(1);
    await store.commit([{ op: "host.remove", id: "host_1", at: T0 }]);
    expect(await store.usageBuckets("host", "host_1", 0)).toEqual([]);
    expect(await store.usageBuckets("server", "srv_b", 0)).toHaveLength(1);
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
      expect((await other.usageBuckets("server", "srv_a", 0)).map((b) => b.at)).toEqual([T0]);
    } finally {
      await other.close();
    }
  });

  it("10,000 subjects in one write (a fleet's flush): every bucket is stored", async () => {
    const many = Array.from({ length: 10_000 }, (_, i) => bucket(`srv_${String(i).padStart(5, "0")}`, T0, i % 50));
    await store.commit([write(many)]);
    expect(await store.usageBuckets("server", "srv_09999", 0)).toEqual([many[9999]]);
    expect(await store.usageBuckets("server", "srv_00000", 0)).toEqual([many[0]]);
  }, 60_000);
});
