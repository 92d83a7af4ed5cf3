/**
 * A bounded usage history per key (a server id or a host id), in memory.
 *
 * Two rings per key, allocated in full when the key gets its first sample:
 *
 *   samples ──► fine ring: the last 360 samples as received (1 h at one per 10 s)
 *          └──► 5-minute bucket being filled (sums, max, count)
 *                  │ closed by the first sample of a later bucket
 *                  ▼
 *               coarse ring: the last 288 closed buckets (24 h): averages of every
 *               field, the largest memory figure of the bucket, and its sample count
 *
 * Buckets are aligned to the epoch (every key's 12:05 bucket is the same span) and
 * a bucket exists only when samples fell in it: a host offline for 20 minutes
 * leaves a gap, never invented points. A sample not later than the key's previous
 * one (a duplicate, or one arriving out of order) is ignored, as is one with a
 * field that is not a finite non-negative number.
 *
 * Values are stored as 32-bit floats (timestamps as 64-bit): about 7 significant
 * digits, e.g. a memory figure of 2 GiB is kept to within 128 bytes. That is
 * plenty for charts and halves the memory of 64-bit storage.
 *
 * Persisting (usage-feed.ts): each key remembers up to which bucket it was
 * written to the store (`unflushed`, `markFlushed`); a sample falling in a
 * bucket already written is ignored, so a bucket is written once.
 *
 * Memory: HISTORY_BYTES_PER_KEY (28,312 bytes: 14,400 fine + 13,824 coarse +
 * 88 for the open bucket) of typed arrays per key, whatever the number of
 * samples added, plus a few hundred bytes of JS objects; 1,000 keys ≈ 28 MB.
 * The history test measures it with 10,000 keys.
 */

/** One usage sample of a server or a host. */
export interface UsageSample {
  /** When it was taken, ms since the epoch. */
  at: number;
  /** Of one core (200 = two cores busy). */
  cpuPercent: number;
  memoryBytes: number;
  /** Absent: no limit. */
  memoryLimitBytes?: number;
  netRxBps: number;
  netTxBps: number;
  ioReadBps: number;
  ioWriteBps: number;
  pids: number;
}

/** A point of a window: a sample (1 h) or a 5-minute bucket's averages (24 h). */
export interface UsagePoint extends UsageSample {
  /** The largest memory figure in the point's span (a sample's own figure in the 1 h window). */
  memoryMaxBytes: number;
}

/** A 5-minute bucket with how many samples it averages, and whether it was written to the store (markFlushed). */
export interface HistoryBucket {
  point: UsagePoint;
  samples: number;
  flushed: boolean;
}

export type UsageWindow = "1h" | "24h";

/** The sampling interval the fine ring is sized for. */
export const FINE_STEP_MS = 10_000;
export const FINE_POINTS = 360;
export const COARSE_STEP_MS = 300_000;
export const COARSE_POINTS = 288;

const WINDOW_MS: Record<UsageWindow, number> = { "1h": 3_600_000, "24h": 86_400_000 };

// Column order of a stored point. Fine points have no MEM_MAX column.
const CPU = 0;
const MEM = 1;
const LIMIT = 2; // NaN: no limit
const RX = 3;
const TX = 4;
const IO_R = 5;
const IO_W = 6;
const PIDS = 7;
const MEM_MAX = 8;
const SAMPLES = 9;
const FINE_FIELDS = 8;
const COARSE_FIELDS = 10;
/** The averaged columns (all but LIMIT, which keeps the bucket's last value). */
const AVERAGED = [CPU, MEM, RX, TX, IO_R, IO_W, PIDS] as const;

/** The open bucket: sums of the averaged columns, then max memory, last limit, count, bucket number. */
const ACC_MAX = FINE_FIELDS;
const ACC_LIMIT = LIMIT;
const ACC_COUNT = FINE_FIELDS + 1;
const ACC_BUCKET = FINE_FIELDS + 2;
const ACC_SIZE = FINE_FIELDS + 3;

/** Typed-array bytes one key holds, fixed from its first sample on. */
export const HISTORY_BYTES_PER_KEY = FINE_POINTS * (8 + 4 * FINE_FIELDS) + COARSE_POINTS * (8 + 4 * COARSE_FIELDS) + 8 * ACC_SIZE;

/** A fixed-capacity ring of points: a timestamp column and `fields` value columns. */
class Ring {
  readonly at: Float64Array;
  readonly values: Float32Array;
  private start = 0;
  length = 0;

  constructor(
    readonly capacity: number,
    readonly fields: number,
  ) {
    this.at = new Float64Array(capacity);
    this.values = new Float32Array(capacity * fields);
  }

  /** Appends a point, overwriting the oldest when full; returns the row to fill. */
  push(at: number): number {
    let row: number;
    if (this.length < this.capacity) {
      row = (this.start + this.length) % this.capacity;
      this.length++;
    } else {
      row = this.start;
      this.start = (this.start + 1) % this.capacity;
    }
    this.at[row] = at;
    return row;
  }

  /** The row of the i-th oldest point. */
  row(i: number): number {
    return (this.start + i) % this.capacity;
  }
}

interface KeyHistory {
  fine: Ring;
  coarse: Ring;
  acc: Float64Array;
  lastAt: number;
  /** The last bucket number written to the store (-1: none). */
  flushed: number;
}

function valid(s: UsageSample): boolean {
  const ok = (n: number) => typeof n === "number" && Number.isFinite(n) && n >= 0;
  return ok(s.at) && ok(s.cpuPercent) && ok(s.memoryBytes) && ok(s.netRxBps) && ok(s.netTxBps) && ok(s.ioReadBps) && ok(s.ioWriteBps) && ok(s.pids) && (s.memoryLimitBytes === undefined || ok(s.memoryLimitBytes));
}

function point(at: number, v: ArrayLike<number>, base: number, memMax: number): UsagePoint {
  const limit = v[base + LIMIT]!;
  return {
    at,
    cpuPercent: v[base + CPU]!,
    memoryBytes: v[base + MEM]!,
    memoryMaxBytes: memMax,
    ...(Number.isNaN(limit) ? {} : { memoryLimitBytes: limit }),
    netRxBps: v[base + RX]!,
    netTxBps: v[base + TX]!,
    ioReadBps: v[base + IO_R]!,
    ioWriteBps: v[base + IO_W]!,
    pids: v[base + PIDS]!,
  };
}

/** The usage history of many keys; see the file's comment. */
export class UsageHistory {
  private readonly keys = new Map<string, KeyHistory>();
  private readonly now: () => number;

  constructor(opts: { now?: () => number } = {}) {
    this.now = opts.now ?? Date.now;
  }

  /** How many keys have a history. */
  get size(): number {
    return this.keys.size;
  }

  /** Records a sample; false when it is ignored (not later than the key's last one, or a field is not a finite non-negative number). */
  add(key: string, s: UsageSample): boolean {
    if (!valid(s)) return false;
    let h = this.keys.get(key);
    if (h && s.at <= h.lastAt) return false;
    const bucket = Math.floor(s.at / COARSE_STEP_MS);
    if (h && bucket <= h.flushed) return false;
    if (!h) {
      const acc = new Float64Array(ACC_SIZE);
      acc[ACC_BUCKET] = -1;
      h = { fine: new Ring(FINE_POINTS, FINE_FIELDS), coarse: new Ring(COARSE_POINTS, COARSE_FIELDS), acc, lastAt: -Infinity, flushed: -1 };
      this.keys.set(key, h);
    }
    h.lastAt = s.at;

    const row = h.fine.push(s.at) * FINE_FIELDS;
    const v = h.fine.values;
    v[row + CPU] = s.cpuPercent;
    v[row + MEM] = s.memoryBytes;
    v[row + LIMIT] = s.memoryLimitBytes ?? Number.NaN;
    v[row + RX] = s.netRxBps;
    v[row + TX] = s.netTxBps;
    v[row + IO_R] = s.ioReadBps;
    v[row + IO_W] = s.ioWriteBps;
    v[row + PIDS] = s.pids;

    const acc = h.acc;
    if (acc[ACC_BUCKET] !== bucket) {
      if (acc[ACC_COUNT]! > 0) this.closeBucket(h);
      acc.fill(0);
      acc[ACC_BUCKET] = bucket;
    }
    // Sums of the exact (64-bit) figures: a bucket's average is rounded to 32 bits once.
    acc[CPU]! += s.cpuPercent;
    acc[MEM]! += s.memoryBytes;
    acc[RX]! += s.netRxBps;
    acc[TX]! += s.netTxBps;
    acc[IO_R]! += s.ioReadBps;
    acc[IO_W]! += s.ioWriteBps;
    acc[PIDS]! += s.pids;
    acc[ACC_MAX] = Math.max(acc[ACC_MAX]!, s.memoryBytes);
    acc[ACC_LIMIT] = s.memoryLimitBytes ?? Number.NaN;
    acc[ACC_COUNT]!++;
    return true;
  }

  /**
   * The points of the last hour (samples) or day (5-minute buckets, the one
   * still filling included), oldest first: those taken after now minus the
   * window (a bucket by its start). Empty for an unknown key.
   */
  window(key: string, w: UsageWindow): UsagePoint[] {
    const h = this.keys.get(key);
    if (!h) return [];
    const after = this.now() - WINDOW_MS[w];
    const out: UsagePoint[] = [];
    if (w === "1h") {
      for (let i = 0; i < h.fine.length; i++) {
        const r = h.fine.row(i);
        const at = h.fine.at[r]!;
        if (at > after) out.push(point(at, h.fine.values, r * FINE_FIELDS, h.fine.values[r * FINE_FIELDS + MEM]!));
      }
      return out;
    }
    for (let i = 0; i < h.coarse.length; i++) {
      const r = h.coarse.row(i);
      const at = h.coarse.at[r]!;
      if (at > after) out.push(point(at, h.coarse.values, r * COARSE_FIELDS, h.coarse.values[r * COARSE_FIELDS + MEM_MAX]!));
    }
    const open = this.openBucket(h);
    if (open && open.at > after) out.push(open);
    return out;
  }

  /**
   * The 5-minute buckets (closed, and the open one) that start after `after`,
   * oldest first, with their sample counts and whether they were written to
   * the store: what merge.ts combines with the store's buckets.
   */
  buckets(key: string, after: number): HistoryBucket[] {
    const h = this.keys.get(key);
    if (!h) return [];
    const out: HistoryBucket[] = [];
    for (let i = 0; i < h.coarse.length; i++) {
      const r = h.coarse.row(i);
      const at = h.coarse.at[r]!;
      if (at > after) out.push(this.coarseBucket(h, r));
    }
    const open = this.openBucket(h);
    if (open && open.at > after) out.push({ point: open, samples: h.acc[ACC_COUNT]!, flushed: h.acc[ACC_BUCKET]! <= h.flushed });
    return out;
  }

  /**
   * Every key's buckets not yet written to the store that ended by `now`
   * (with `open`, the bucket still filling too), oldest first, and the last
   * bucket number of each key's list (for markFlushed once they are written).
   */
  unflushed(now: number, opts: { open?: boolean } = {}): { key: string; buckets: HistoryBucket[]; upTo: number }[] {
    const out: { key: string; buckets: HistoryBucket[]; upTo: number }[] = [];
    for (const [key, h] of this.keys) {
      const buckets: HistoryBucket[] = [];
      // Newest first, down to the first one written.
      for (let i = h.coarse.length - 1; i >= 0; i--) {
        const r = h.coarse.row(i);
        if (Math.floor(h.coarse.at[r]! / COARSE_STEP_MS) <= h.flushed) break;
        buckets.push(this.coarseBucket(h, r));
      }
      buckets.reverse();
      const n = h.acc[ACC_BUCKET]!;
      if (h.acc[ACC_COUNT]! > 0 && n > h.flushed && (opts.open || (n + 1) * COARSE_STEP_MS <= now)) {
        buckets.push({ point: this.openBucket(h)!, samples: h.acc[ACC_COUNT]!, flushed: false });
      }
      if (buckets.length > 0) out.push({ key, buckets, upTo: Math.floor(buckets.at(-1)!.point.at / COARSE_STEP_MS) });
    }
    return out;
  }

  /**
   * The key's buckets up to bucket number `upTo` are (being) written to the
   * store: not listed by unflushed again, and a later sample in one is
   * ignored. Returns the mark before, for restoreFlushed.
   */
  markFlushed(key: string, upTo: number): number {
    const h = this.keys.get(key);
    if (!h) return -1;
    const before = h.flushed;
    if (upTo > h.flushed) h.flushed = upTo;
    return before;
  }

  /** The write failed: the key's mark goes back to `before` (its buckets are listed again). */
  restoreFlushed(key: string, before: number): void {
    const h = this.keys.get(key);
    if (h) h.flushed = before;
  }

  /** Keys whose last sample is older than `before` (ms): their history is past its day window, or nearly. */
  idleKeys(before: number): string[] {
    const out: string[] = [];
    for (const [key, h] of this.keys) if (h.lastAt < before) out.push(key);
    return out;
  }

  /** Forgets a key (a deleted server, a removed host). */
  drop(key: string): void {
    this.keys.delete(key);
  }

  /** The open bucket's averages so far, as a coarse point would hold them (32-bit values). */
  private openBucket(h: KeyHistory): UsagePoint | undefined {
    const acc = h.acc;
    const n = acc[ACC_COUNT]!;
    if (!(n > 0)) return undefined;
    const v = new Float32Array(COARSE_FIELDS);
    for (const c of AVERAGED) v[c] = acc[c]! / n;
    v[LIMIT] = acc[ACC_LIMIT]!;
    v[MEM_MAX] = acc[ACC_MAX]!;
    return point(acc[ACC_BUCKET]! * COARSE_STEP_MS, v, 0, v[MEM_MAX]!);
  }

  private coarseBucket(h: KeyHistory, r: number): HistoryBucket {
    const base = r * COARSE_FIELDS;
    const at = h.coarse.at[r]!;
    return { point: point(at, h.coarse.values, base, h.coarse.values[base + MEM_MAX]!), samples: h.coarse.values[base + SAMPLES]!, flushed: Math.floor(at / COARSE_STEP_MS) <= h.flushed };
  }

  private closeBucket(h: KeyHistory): void {
    const acc = h.acc;
    const n = acc[ACC_COUNT]!;
    const base = h.coarse.push(acc[ACC_BUCKET]! * COARSE_STEP_MS) * COARSE_FIELDS;
    const v = h.coarse.values;
    for (const c of AVERAGED) v[base + c] = acc[c]! / n;
    v[base + LIMIT] = acc[ACC_LIMIT]!;
    v[base + MEM_MAX] = acc[ACC_MAX]!;
    v[base + SAMPLES] = n;
  }
}
