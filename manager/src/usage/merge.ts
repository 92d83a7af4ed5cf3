/**
 * How a manager's in-memory 5-minute buckets (history.ts) and the store's
 * (usage_buckets, written by whichever manager held each part) make one
 * series, with every sample counted once:
 *
 *   bucket in memory, written by this manager   → the store's row (it holds this
 *                                                 manager's part and any other's)
 *   bucket in memory, not written yet           → memory's part and the store's
 *                                                 (another manager's, or this one's
 *                                                 before a restart) combined:
 *                                                 averages weighted by sample counts,
 *                                                 the larger peak, memory's limit
 *   only in memory / only in the store          → that one
 *
 * A bucket that exists nowhere stays a gap. And the 1 h window (fillHour):
 * this manager's samples, preceded by the buckets that ended before its first
 * sample of the hour (all of them when it has none: a restart, or the host's
 * agent on another manager), so no span is counted twice.
 */
import type { UsageBucketRecord } from "../store/store.js";
import { COARSE_STEP_MS, type HistoryBucket, type UsagePoint } from "./history.js";

/** A stored bucket as a point (its figures and peak as stored, its limit when it has one). */
export function storedPoint(b: UsageBucketRecord): UsagePoint {
  return {
    at: b.at,
    cpuPercent: b.cpuPercent,
    memoryBytes: b.memoryBytes,
    memoryMaxBytes: b.memoryMaxBytes,
    ...(b.memoryLimitBytes !== undefined ? { memoryLimitBytes: b.memoryLimitBytes } : {}),
    netRxBps: b.netRxBps,
    netTxBps: b.netTxBps,
    ioReadBps: b.ioReadBps,
    ioWriteBps: b.ioWriteBps,
    pids: b.pids,
  };
}

const AVERAGED = ["cpuPercent", "memoryBytes", "netRxBps", "netTxBps", "ioReadBps", "ioWriteBps", "pids"] as const;

/** Two disjoint parts of one bucket as one. */
function combine(stored: UsageBucketRecord, mem: HistoryBucket): UsagePoint {
  const n = stored.samples + mem.samples;
  const p: UsagePoint = { ...storedPoint(stored) };
  for (const k of AVERAGED) p[k] = (stored[k] * stored.samples + mem.point[k] * mem.samples) / n;
  p.memoryMaxBytes = Math.max(stored.memoryMaxBytes, mem.point.memoryMaxBytes);
  delete p.memoryLimitBytes;
  if (mem.point.memoryLimitBytes !== undefined) p.memoryLimitBytes = mem.point.memoryLimitBytes;
  return p;
}

/** The buckets of both sources as one series, oldest first (see the file's comment). */
export function mergeBuckets(stored: readonly UsageBucketRecord[], memory: readonly HistoryBucket[]): UsagePoint[] {
  const byAt = new Map<number, UsagePoint>();
  const fromStore = new Map<number, UsageBucketRecord>();
  for (const b of stored) {
    fromStore.set(b.at, b);
    byAt.set(b.at, storedPoint(b));
  }
  for (const m of memory) {
    const s = fromStore.get(m.point.at);
    if (!s) byAt.set(m.point.at, m.point);
    else if (!m.flushed) byAt.set(m.point.at, combine(s, m));
    // Written by this manager: the store's row already counts it.
  }
  return [...byAt.values()].sort((a, b) => a.at - b.at);
}

/**
 * The 1 h window: `samples` (this manager's, oldest first) preceded by the
 * buckets that ended by the first of them (every bucket when there is none);
 * `buckets`: how many of the points, from the first, are buckets.
 */
export function fillHour(samples: readonly UsagePoint[], buckets: readonly UsagePoint[]): { points: UsagePoint[]; buckets: number } {
  const first = samples[0]?.at ?? Infinity;
  const before = buckets.filter((b) => b.at + COARSE_STEP_MS <= first);
  return { points: [...before, ...samples], buckets: before.length };
}
