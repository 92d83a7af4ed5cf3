import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { COARSE_POINTS, COARSE_STEP_MS, FINE_POINTS, HISTORY_BYTES_PER_KEY, UsageHistory, type UsagePoint, type UsageSample } from "./history.js";

const T0 = Date.UTC(2026, 11, 6, 0, 0, 0);
const MIN = 60_000;

function sample(at: number, v = 1, memoryLimitBytes?: number): UsageSample {
  return { at, cpuPercent: v, memoryBytes: v * 1000, ...(memoryLimitBytes !== undefined ? { memoryLimitBytes } : {}), netRxBps: v * 2, netTxBps: v * 3, ioReadBps: v * 4, ioWriteBps: v * 5, pids: v };
}

/** A history whose clock the test sets. */
function history(): { h: UsageHistory; clock: { now: number } } {
  const clock = { now: T0 };
  return { h: new UsageHistory({ now: () => clock.now }), clock };
}

describe("UsageHistory: the 1 h window", () => {
  it("keeps the last 360 samples, oldest first, after the ring wrapped around", () => {
    const { h, clock } = history();
    for (let i = 0; i < 1000; i++) expect(h.add("s1", sample(T0 + i * 10_000, i))).toBe(true);
    clock.now = T0 + 999 * 10_000;
    const w = h.window("s1", "1h");
    expect(w).toHaveLength(FINE_POINTS);
    expect(w.map((p) => p.cpuPercent)).toEqual(Array.from({ length: 360 }, (_, i) => 640 + i));
    expect(w[0]).toEqual({ ...sample(T0 + 640 * 10_000, 640), memoryMaxBytes: 640_000 });
  });

  it("shows only what was taken in the last hour: a host that stopped sending fades out", () => {
    const { h, clock } = history();
    for (let i = 0; i < 30; i++) h.add("host", sample(T0 + i * 10_000));
    clock.now = T0 + 29 * 10_000 + 3_600_000 - 100_000;
    expect(h.window("host", "1h")).toHaveLength(10);
    clock.now = T0 + 3 * 3_600_000;
    expect(h.window("host", "1h")).toEqual([]);
    expect(h.window("host", "24h")).toHaveLength(1);
  });

  it("keeps the memory limit or its absence per sample", () => {
    const { h, clock } = history();
    h.add("s", sample(T0, 1, 2 ** 31));
    h.add("s", sample(T0 + 10_000, 1));
    clock.now = T0 + 10_000;
    const [a, b] = h.window("s", "1h");
    expect(a!.memoryLimitBytes).toBe(2 ** 31);
    expect(b).not.toHaveProperty("memoryLimitBytes");
  });
});

describe("UsageHistory: the 24 h window", () => {
  it("averages each 5-minute bucket, keeps its largest memory figure and its last limit", () => {
    const { h, clock } = history();
    // Bucket 0: values 1, 2, 6; bucket 1: 10.
    h.add("s", sample(T0, 1, 100));
    h.add("s", { ...sample(T0 + MIN, 2, 200), memoryBytes: 9000 });
    h.add("s", sample(T0 + 4 * MIN, 6, 300));
    h.add("s", sample(T0 + 5 * MIN, 10));
    clock.now = T0 + 5 * MIN;
    expect(h.window("s", "24h")).toEqual([
      { at: T0, cpuPercent: 3, memoryBytes: Math.fround((1000 + 9000 + 6000) / 3), memoryMaxBytes: 9000, memoryLimitBytes: 300, netRxBps: 6, netTxBps: 9, ioReadBps: 12, ioWriteBps: 15, pids: 3 },
      // The bucket still filling comes last.
      { ...sample(T0 + 5 * MIN, 10), memoryMaxBytes: 10_000 },
    ]);
  });

  it("keeps the last 288 buckets once the coarse ring wrapped around", () => {
    const { h, clock } = history();
    // One sample a minute for 30 hours: 360 buckets, the last one open.
    for (let i = 0; i < 30 * 60; i++) h.add("s", sample(T0 + i * MIN, Math.floor(i / 5)));
    clock.now = T0 + (30 * 60 - 1) * MIN;
    const w = h.window("s", "24h");
    // 288 closed buckets, the oldest starting 24 h 4 min ago (before the window), and the open one.
    expect(w).toHaveLength(COARSE_POINTS);
    expect(w.at(-1)!.at).toBe(T0 + 359 * COARSE_STEP_MS);
    expect(w[0]!.at).toBe(T0 + 72 * COARSE_STEP_MS);
    expect(w.map((p) => p.cpuPercent)).toEqual(Array.from({ length: 288 }, (_, i) => 72 + i));
  });

  it("leaves a gap, not invented points, where a host was offline for 20 minutes", () => {
    const { h, clock } = history();
    for (let t = 0; t < 30 * MIN; t += 10_000) h.add("host", sample(T0 + t));
    for (let t = 50 * MIN; t < 80 * MIN; t += 10_000) h.add("host", sample(T0 + t));
    clock.now = T0 + 80 * MIN - 10_000;
    const fine = h.window("host", "1h");
    expect(fine.filter((p) => p.at > T0 + 30 * MIN - 10_000 && p.at < T0 + 50 * MIN)).toEqual([]);
    expect(fine).toHaveLength(360 - 120);
    const coarse = h.window("host", "24h");
    expect(coarse.map((p) => (p.at - T0) / MIN)).toEqual([0, 5, 10, 15, 20, 25, 50, 55, 60, 65, 70, 75]);
  });
});

describe("UsageHistory: what it ignores", () => {
  it("ignores duplicate and out-of-order timestamps", () => {
    const { h, clock } = history();
    expect(h.add("s", sample(T0 + 20_000, 1))).toBe(true);
    expect(h.add("s", sample(T0 + 20_000, 99))).toBe(false);
    expect(h.add("s", sample(T0 + 10_000, 99))).toBe(false);
    expect(h.add("s", sample(T0 + 30_000, 2))).toBe(true);
    clock.now = T0 + 30_000;
    expect(h.window("s", "1h").map((p) => p.cpuPercent)).toEqual([1, 2]);
    expect(h.window("s", "24h")[0]!.cpuPercent).toBe(1.5);
  });

  it("ignores samples with a field that is not a finite non-negative number", () => {
    const { h } = history();
    for (const bad of [{ cpuPercent: Number.NaN }, { memoryBytes: -1 }, { netRxBps: Infinity }, { at: Number.NaN }, { memoryLimitBytes: Number.NaN }]) {
      expect(h.add("s", { ...sample(T0), ...bad })).toBe(false);
    }
    expect(h.size).toBe(0);
    expect(h.window("s", "1h")).toEqual([]);
  });

  it("forgets a dropped key and keeps the others", () => {
    const { h } = history();
    h.add("a", sample(T0));
    h.add("b", sample(T0));
    h.drop("a");
    expect(h.size).toBe(1);
    expect(h.window("a", "1h")).toEqual([]);
    expect(h.window("b", "1h")).toHaveLength(1);
    // A dropped key starts afresh, earlier timestamps included.
    expect(h.add("a", sample(T0 - 10_000))).toBe(true);
  });
});

describe("UsageHistory: what is written to the store", () => {
  it("lists each key's ended buckets not written yet, with their sample counts, once marked never again", () => {
    const { h } = history();
    for (let t = 0; t < 11 * MIN; t += 30_000) h.add("s", sample(T0 + t, 1 + Math.floor(t / (5 * MIN))));
    h.add("other", sample(T0));
    // At 11 min: buckets 0 and 5 ended (0 closed, 5 closed by the sample at 10 min); 10 is still filling.
    const first = h.unflushed(T0 + 11 * MIN);
    expect(first.map((u) => [u.key, u.buckets.map((b) => [(b.point.at - T0) / MIN, b.samples, b.point.cpuPercent, b.flushed]), u.upTo - T0 / COARSE_STEP_MS])).toEqual([
      ["s", [[0, 10, 1, false], [5, 10, 2, false]], 1],
      ["other", [[0, 1, 1, false]], 0],
    ]);
    expect(h.markFlushed("s", first[0]!.upTo)).toBe(-1);
    expect(h.unflushed(T0 + 11 * MIN).map((u) => u.key)).toEqual(["other"]);
    // Marked buckets say so; the open one is listed at shutdown (open), and once its span ended.
    expect(h.buckets("s", 0).map((b) => b.flushed)).toEqual([true, true, false]);
    expect(h.unflushed(T0 + 11 * MIN, { open: true })[0]!.buckets.map((b) => (b.point.at - T0) / MIN)).toEqual([10]);
    expect(h.unflushed(T0 + 15 * MIN)[0]!.buckets.map((b) => [(b.point.at - T0) / MIN, b.samples])).toEqual([[10, 2]]);
  });

  it("ignores a sample in a bucket already written; a failed write's buckets are listed again", () => {
    const { h } = history();
    h.add("s", sample(T0));
    const [u] = h.unflushed(T0 + 5 * MIN, { open: true });
    const before = h.markFlushed("s", u!.upTo);
    expect(h.add("s", sample(T0 + MIN))).toBe(false);
    expect(h.add("s", sample(T0 + 5 * MIN))).toBe(true);
    h.restoreFlushed("s", before);
    expect(h.unflushed(T0 + 10 * MIN)[0]!.buckets.map((b) => (b.point.at - T0) / MIN)).toEqual([0, 5]);
  });
});

/** What the windows must hold, computed the slow way from every sample added. */
function bruteForce(all: UsageSample[], now: number): { fine: UsagePoint[]; coarse: UsagePoint[] } {
  const accepted: UsageSample[] = [];
  for (const s of all) if (accepted.length === 0 || s.at > accepted.at(-1)!.at) accepted.push(s);
  const f = Math.fround;
  const limit = (l: number | undefined) => (l === undefined ? {} : { memoryLimitBytes: f(l) });
  const fine = accepted.slice(-FINE_POINTS).filter((s) => s.at > now - 3_600_000).map((s) => ({
    at: s.at,
    cpuPercent: f(s.cpuPercent),
    memoryBytes: f(s.memoryBytes),
    memoryMaxBytes: f(s.memoryBytes),
    ...limit(s.memoryLimitBytes),
    netRxBps: f(s.netRxBps),
    netTxBps: f(s.netTxBps),
    ioReadBps: f(s.ioReadBps),
    ioWriteBps: f(s.ioWriteBps),
    pids: f(s.pids),
  }));
  const groups = new Map<number, UsageSample[]>();
  for (const s of accepted) {
    const b = Math.floor(s.at / COARSE_STEP_MS);
    const g = groups.get(b);
    if (g) g.push(s);
    else groups.set(b, [s]);
  }
  const buckets = [...groups.entries()].map(([b, ss]) => {
    const avg = (k: keyof UsageSample) => {
      let sum = 0;
      for (const s of ss) sum += s[k] as number;
      return f(sum / ss.length);
    };
    return {
      at: b * COARSE_STEP_MS,
      cpuPercent: avg("cpuPercent"),
      memoryBytes: avg("memoryBytes"),
      memoryMaxBytes: f(Math.max(...ss.map((s) => s.memoryBytes))),
      ...limit(ss.at(-1)!.memoryLimitBytes),
      netRxBps: avg("netRxBps"),
      netTxBps: avg("netTxBps"),
      ioReadBps: avg("ioReadBps"),
      ioWriteBps: avg("ioWriteBps"),
      pids: avg("pids"),
    };
  });
  const open = buckets.pop();
  const coarse = [...buckets.slice(-COARSE_POINTS), ...(open ? [open] : [])].filter((p) => p.at > now - 86_400_000);
  return { fine, coarse };
}

describe("UsageHistory against a brute-force computation", () => {
  const step = fc.oneof(
    // Fast and slow samplers: enough 5-minute buckets in long runs to wrap the coarse ring.
    { weight: 20, arbitrary: fc.integer({ min: 1, max: 120_000 }) },
    // A host offline for a while.
    { weight: 1, arbitrary: fc.integer({ min: 60_000, max: 6 * 3_600_000 }) },
    // A duplicate or a late sample.
    { weight: 2, arbitrary: fc.integer({ min: -60_000, max: 0 }) },
  );
  const value = fc.double({ min: 0, max: 1e10, noNaN: true });
  const entry = fc.record({ step, cpu: fc.double({ min: 0, max: 6400, noNaN: true }), mem: value, limit: fc.option(value, { nil: undefined }), rx: value, tx: value, r: value, w: value, pids: fc.integer({ min: 0, max: 100_000 }) });

  it("holds the same windows as grouping every accepted sample by hand", () => {
    fc.assert(
      fc.property(fc.array(entry, { minLength: 1, maxLength: 3000, size: "max" }), fc.integer({ min: 0, max: 2 * 3_600_000 }), (entries, after) => {
        const { h, clock } = history();
        let at = T0;
        const all: UsageSample[] = [];
        for (const e of entries) {
          at += e.step;
          const s: UsageSample = { at, cpuPercent: e.cpu, memoryBytes: e.mem, ...(e.limit !== undefined ? { memoryLimitBytes: e.limit } : {}), netRxBps: e.rx, netTxBps: e.tx, ioReadBps: e.r, ioWriteBps: e.w, pids: e.pids };
          all.push(s);
          h.add("k", s);
        }
        clock.now = Math.max(...all.map((s) => s.at)) + after;
        const want = bruteForce(all, clock.now);
        expect(h.window("k", "1h")).toEqual(want.fine);
        expect(h.window("k", "24h")).toEqual(want.coarse);
      }),
      // Long runs (size "max"): about half wrap the coarse ring, most the fine one.
      { numRuns: 60 },
    );
  }, 60_000);
});

describe("UsageHistory: memory", () => {
  it("holds a fixed amount of array memory per key, however many samples a key gets", () => {
    const before = process.memoryUsage().arrayBuffers;
    const { h } = history();
    for (let k = 0; k < 10_000; k++) h.add(`server-${k}`, sample(T0));
    const after = process.memoryUsage().arrayBuffers;
    const perKey = (after - before) / 10_000;
    // The rings are allocated in full with the first sample (28,312 bytes computed); other
    // buffers of the process may be freed meanwhile, hence the margin below.
    expect(perKey).toBeGreaterThan(HISTORY_BYTES_PER_KEY * 0.97);
    expect(perKey).toBeLessThan(HISTORY_BYTES_PER_KEY * 1.05);
    // Two days of samples into 10 of the keys add nothing.
    for (let k = 0; k < 10; k++) for (let t = 10_000; t < 2 * 86_400_000; t += 10_000) h.add(`server-${k}`, sample(T0 + t, t % 7));
    expect(process.memoryUsage().arrayBuffers - after).toBeLessThan(HISTORY_BYTES_PER_KEY);
    expect(h.window("server-0", "24h").length).toBeLessThanOrEqual(COARSE_POINTS + 1);
    expect(HISTORY_BYTES_PER_KEY).toBe(28_312);
  });
});
