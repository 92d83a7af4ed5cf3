import { describe, expect, it } from "vitest";
import type { UsageBucketRecord } from "../store/store.js";
import { COARSE_STEP_MS, type HistoryBucket, type UsagePoint } from "./history.js";
import { fillHour, mergeBuckets, storedPoint } from "./merge.js";

const STEP = COARSE_STEP_MS;
const T0 = Math.floor(1_700_000_000_000 / STEP) * STEP;

function pt(at: number, v: number, o: Partial<UsagePoint> = {}): UsagePoint {
  return { at, cpuPercent: v, memoryBytes: v * 1000, memoryMaxBytes: v * 2000, memoryLimitBytes: 10_000, netRxBps: v * 2, netTxBps: v * 3, ioReadBps: v * 4, ioWriteBps: v * 5, pids: v, ...o };
}

function stored(at: number, v: number, samples: number, o: Partial<UsageBucketRecord> = {}): UsageBucketRecord {
  return { kind: "server", subjectId: "srv_a", samples, ...pt(at, v), ...o };
}

const mem = (at: number, v: number, samples: number, flushed: boolean, o: Partial<UsagePoint> = {}): HistoryBucket => ({ point: pt(at, v, o), samples, flushed });

describe("mergeBuckets", () => {
  it("a bucket in one source only is taken as it is, in time order, gaps left as gaps", () => {
    const out = mergeBuckets([stored(T0, 1, 30), stored(T0 + 3 * STEP, 3, 30)], [mem(T0 + STEP, 2, 30, false)]);
    expect(out).toEqual([pt(T0, 1), pt(T0 + STEP, 2), pt(T0 + 3 * STEP, 3)]);
  });

  it("a bucket this manager wrote already: the store's row (which holds this part and any other manager's), not both", () => {
    // Stored: this manager's 10 samples merged with another manager's 20.
    const out = mergeBuckets([stored(T0, 3, 30)], [mem(T0, 1, 10, true)]);
    expect(out).toEqual([pt(T0, 3)]);
  });

  it("a bucket not written yet and a stored part (another manager's, or this one's before a restart): weighted by samples, the larger peak, memory's limit", () => {
    const out = mergeBuckets([stored(T0, 1, 10, { memoryMaxBytes: 9000, memoryLimitBytes: 100 })], [mem(T0, 4, 20, false, { memoryMaxBytes: 5000, memoryLimitBytes: 200 })]);
    expect(out).toEqual([{ ...pt(T0, 3), memoryMaxBytes: 9000, memoryLimitBytes: 200 }]);
    // Memory's part without a limit: none.
    const { memoryLimitBytes: _l, ...unlimited } = pt(T0, 4);
    const [noLimit] = mergeBuckets([stored(T0, 1, 10)], [{ point: unlimited, samples: 20, flushed: false }]);
    expect(noLimit).not.toHaveProperty("memoryLimitBytes");
  });

  it("a stored bucket without a limit reads without one", () => {
    const { memoryLimitBytes: _l, ...row } = stored(T0, 1, 10);
    expect(storedPoint(row)).not.toHaveProperty("memoryLimitBytes");
  });
});

describe("fillHour", () => {
  it("no samples here (a restart, or the agent on another manager): the hour's buckets", () => {
    const buckets = [pt(T0, 1), pt(T0 + STEP, 2)];
    expect(fillHour([], buckets)).toEqual({ points: buckets, buckets: 2 });
  });

  it("samples for the whole hour: the samples only", () => {
    const samples = [pt(T0 + 5_000, 1), pt(T0 + 15_000, 2)];
    expect(fillHour(samples, [pt(T0, 1)])).toEqual({ points: samples, buckets: 0 });
  });

  it("samples since a restart mid-hour: the buckets that ended by the first sample, then the samples; the bucket holding the first sample is left out", () => {
    const samples = [pt(T0 + 2 * STEP + 60_000, 5), pt(T0 + 2 * STEP + 70_000, 6)];
    const buckets = [pt(T0, 1), pt(T0 + STEP, 2), pt(T0 + 2 * STEP, 3)];
    expect(fillHour(samples, buckets)).toEqual({ points: [pt(T0, 1), pt(T0 + STEP, 2), ...samples], buckets: 2 });
    // A first sample exactly at a boundary: the bucket before it ended there and is in.
    expect(fillHour([pt(T0 + 2 * STEP, 9)], buckets).buckets).toBe(2);
  });
});
