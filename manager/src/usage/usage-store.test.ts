/**
 * The usage history in the store (usage-feed.ts flush and history; store
 * usage.write / usageBuckets), on the engine testStore() opens: a manager
 * restarted, or another manager of the database, answers the 24 h window and
 * the hour's 5-minute buckets; a bucket measured partly before a restart is
 * counted once; a failed write is written with the next flush; buckets past
 * the day are pruned. Time is the feeds' clock, so no case waits.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { UsageReportSchema } from "@berth/proto/berth/v1/agent_pb.js";
import type { UsageSample } from "@berth/proto/berth/v1/usage_pb.js";
import { sameDatabase, testStore } from "../../testing/store.js";
import type { Store, WriteOp } from "../store/store.js";
import { COARSE_STEP_MS } from "./history.js";
import { FLUSH_DELAY_MS, STORE_KEEP_MS, UsageFeed } from "./usage-feed.js";

const STEP = COARSE_STEP_MS;
const T0 = Math.floor(1_700_000_000_000 / STEP) * STEP;
const PLACED = new Set(["srv_a"]);

let store: Store;
beforeEach(async () => {
  store = await testStore();
});
afterEach(() => store.close());

function report(cpu: number, mem: number) {
  return create(UsageReportSchema, {
    host: { time: timestampFromMs(1), cpuPercent: cpu / 2, memoryBytes: BigInt(mem * 10), memoryLimitBytes: 1_000_000n },
    containers: [{ serverId: "srv_a", containerId: "c1", sample: { time: timestampFromMs(1), cpuPercent: cpu, memoryBytes: BigInt(mem), pids: 3 } }],
  });
}

/** A feed over `s` whose clock the test sets. */
function feed(s: Pick<Store, "commit" | "usageBuckets">, clock: { now: number }) {
  return new UsageFeed({ projectOf: async () => "default", store: s, now: () => clock.now });
}

/** One report every 10 s from `from` (inclusive) to `to` (exclusive); cpu = the sample's index in the run. */
async function run(f: UsageFeed, clock: { now: number }, from: number, to: number, value: (t: number) => number = () => 10) {
  for (let t = from; t < to; t += 10_000) {
    clock.now = t;
    await f.record("host_1", report(value(t), 1000), PLACED);
  }
}

/** srv_a's stored buckets from T0 on. */
const stored = () => store.usageBuckets("server", "srv_a", T0 - 1, T0 + 26 * 3_600_000 - 1);

const times = (ps: UsageSample[]) => ps.map((p) => (timestampMs(p.time!) - T0) / STEP);

describe("the usage history in the store", () => {
  it("a restarted manager (a second feed over the same database) answers the 24 h window, and the hour as 5-minute buckets", async () => {
    const clock = { now: T0 };
    const a = feed(store, clock);
    // 30 minutes of samples, cpu 1 in the first bucket, 2 in the second, ...; a flush after each boundary.
    for (let b = 0; b < 6; b++) {
      await run(a, clock, T0 + b * STEP, T0 + (b + 1) * STEP, () => b + 1);
      clock.now = T0 + (b + 1) * STEP + FLUSH_DELAY_MS;
      expect(await a.flush()).toBe(2); // the server's and the host's bucket
    }
    const before = await a.history("server", "srv_a", "24h");
    expect(times(before.points)).toEqual([0, 1, 2, 3, 4, 5]);

    const other = await sameDatabase(store);
    try {
      const b = feed(other, clock);
      const day = await b.history("server", "srv_a", "24h");
      expect(day).toEqual(before);
      expect(day.points.map((p) => p.cpuPercent)).toEqual([1, 2, 3, 4, 5, 6]);
      expect(day.points[0]!.memoryMaxBytes).toBe(1000n);
      expect(day.points[0]!.pids).toBe(3);
      expect(times((await b.history("host", "host_1", "24h")).points)).toEqual([0, 1, 2, 3, 4, 5]);
      // The hour: no samples here, so its 5-minute buckets, said so.
      const hour = await b.history("server", "srv_a", "1h");
      expect(hour.coarse).toBe(true);
      expect(hour.points).toEqual(day.points);
      // The first manager has its samples: the hour is theirs, no bucket.
      const own = await a.history("server", "srv_a", "1h");
      expect(own.coarse).toBe(false);
      expect(own.points).toHaveLength(180);
    } finally {
      await other.close();
    }
  });

  it("a bucket measured partly before a restart and partly after is one point of all its samples, before and after the flush", async () => {
    const clock = { now: T0 };
    const a = feed(store, clock);
    // 10 samples at cpu 1, then the manager stops (writing the bucket still filling).
    await run(a, clock, T0, T0 + 100_000, () => 1);
    await a.stop();
    expect((await stored()).map((b) => b.samples)).toEqual([10]);
    // Restarted: 20 samples at cpu 4 in the same bucket, then one in the next.
    const b = feed(store, clock);
    await run(b, clock, T0 + 100_000, T0 + STEP + 10_000, () => 4);
    const merged = (await b.history("server", "srv_a", "24h")).points;
    expect(times(merged)).toEqual([0, 1]);
    expect(merged[0]!.cpuPercent).toBe(3); // (10 × 1 + 20 × 4) / 30
    // The hour: the samples after the restart, and no bucket (the one before them does not end before them).
    expect((await b.history("server", "srv_a", "1h")).points.every((p) => p.memoryMaxBytes === undefined)).toBe(true);
    // Flushed: the store merged the two parts; the answer does not change.
    clock.now = T0 + 2 * STEP + FLUSH_DELAY_MS;
    await b.flush();
    expect((await stored()).map((r) => [r.samples, r.cpuPercent])).toEqual([
      [30, 3],
      [1, 4],
    ]);
    expect((await b.history("server", "srv_a", "24h")).points).toEqual(merged);
  });

  it("writes each bucket once, every key in one batch; a failed write goes with the next flush", async () => {
    const clock = { now: T0 };
    let fail = true;
    const batches: WriteOp[][] = [];
    const flaky: Pick<Store, "commit" | "usageBuckets"> = {
      commit: async (ops) => {
        if (fail) throw new Error("database is locked");
        batches.push([...ops]);
        return store.commit(ops);
      },
      usageBuckets: (k, id, after, upTo) => store.usageBuckets(k, id, after, upTo),
    };
    const a = feed(flaky, clock);
    await run(a, clock, T0, T0 + STEP);
    clock.now = T0 + STEP + FLUSH_DELAY_MS;
    await expect(a.flush()).rejects.toThrow(/locked/);
    // Meanwhile the memory answers alone.
    expect(times((await a.history("server", "srv_a", "24h")).points)).toEqual([0]);
    await run(a, clock, T0 + STEP + 10_000, T0 + 2 * STEP);
    fail = false;
    clock.now = T0 + 2 * STEP + FLUSH_DELAY_MS;
    expect(await a.flush()).toBe(4);
    // One batch of every key's buckets.
    expect(batches).toHaveLength(1);
    expect(batches[0]).toHaveLength(1);
    expect(await a.flush()).toBe(0);
    expect(batches).toHaveLength(1);
    expect((await stored()).map((b) => b.samples)).toEqual([30, 29]);
    expect(times((await a.history("server", "srv_a", "24h")).points)).toEqual([0, 1]);
  });

  it("prunes stored buckets a day and an hour old; the 24 h window ends at a day", async () => {
    const clock = { now: T0 };
    const a = feed(store, clock);
    await run(a, clock, T0, T0 + 30_000);
    clock.now = T0 + STEP + FLUSH_DELAY_MS;
    await a.flush();
    // A day later: the old bucket is out of the window but still stored (the margin).
    await run(a, clock, T0 + 86_400_000 + STEP, T0 + 86_400_000 + STEP + 30_000);
    clock.now = T0 + 86_400_000 + 2 * STEP + FLUSH_DELAY_MS;
    await a.flush();
    expect(times((await a.history("server", "srv_a", "24h")).points)).toEqual([289]);
    expect(await stored()).toHaveLength(2);
    // Past the margin: the next flush deletes it.
    const later = T0 + STORE_KEEP_MS + STEP;
    await run(a, clock, later, later + 30_000);
    clock.now = later + STEP + FLUSH_DELAY_MS;
    await a.flush();
    expect((await stored()).map((b) => (b.at - T0) / STEP)).toEqual([289, 301]);
  });
});
