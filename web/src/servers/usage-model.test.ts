import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { UsageSampleSchema } from "@berth/proto/berth/v1/usage_pb.js";
import { BUCKET_MS, chartData, cpuGauge, diskGauge, formatPercent, loadText, measured, memoryGauge, niceMax, shortBytes } from "./usage-model.js";

const MiB = 1024n * 1024n;

describe("usage gauges", () => {
  it("a server's CPU is of one core: 240% shows as such with a full bar", () => {
    const g = cpuGauge(create(UsageSampleSchema, { cpuPercent: 240 }), "server")!;
    expect(g.text).toBe("240%");
    expect(g.fraction).toBe(1);
    expect(g.title).toContain("of one core");
    expect(cpuGauge(create(UsageSampleSchema, { cpuPercent: 2.54 }), "server")!.text).toBe("2.5%");
    expect(cpuGauge(create(UsageSampleSchema, {}), "server")).toBeUndefined();
  });

  it("memory is shown against the limit, in the warning tone from 90 %", () => {
    const ok = memoryGauge(create(UsageSampleSchema, { memoryBytes: 256n * MiB, memoryLimitBytes: 512n * MiB }), "server")!;
    expect(ok.text).toBe("256 MiB / 512 MiB");
    expect(ok.short).toBe("256M/512M");
    expect(ok.fraction).toBe(0.5);
    expect(ok.warn).toBe(false);
    const hot = memoryGauge(create(UsageSampleSchema, { memoryBytes: 461n * MiB, memoryLimitBytes: 512n * MiB }), "server")!;
    expect(hot.warn).toBe(true);
  });

  it("memory without a limit is just the figure, no bar, no warning", () => {
    const g = memoryGauge(create(UsageSampleSchema, { memoryBytes: 3n * 1024n * MiB }), "server")!;
    expect(g).toMatchObject({ text: "3.0 GiB", fraction: undefined, warn: false });
    expect(g.title).toContain("no limit");
  });

  it("a host's disk and load", () => {
    const s = create(UsageSampleSchema, { diskTotalBytes: 100n * MiB, diskFreeBytes: 5n * MiB, load1: 0.5, load5: 0.25, load15: 1 });
    expect(diskGauge(s)).toMatchObject({ text: "5.0 MiB free", fraction: 0.95, warn: true });
    expect(loadText(s)).toBe("0.50 0.25 1.00");
    expect(loadText(create(UsageSampleSchema, {}))).toBeUndefined();
  });

  it("short byte figures", () => {
    expect(shortBytes(512)).toBe("512B");
    expect(shortBytes(1536 * 1024 * 1024)).toBe("1.5G");
    expect(shortBytes(12 * 1024 * 1024 * 1024)).toBe("12G");
  });

  it("percent figures", () => {
    expect(formatPercent(0)).toBe("0%");
    expect(formatPercent(3)).toBe("3%");
    expect(formatPercent(99.6)).toBe("100%");
  });
});

describe("chartData", () => {
  it("gives seconds and the lines' values, null where nothing was measured", () => {
    expect(chartData([1000, 2000, 3000], [[1, undefined, 3], [4, 5, 6]], 0, 10_000, 5000)).toEqual([
      [1, 2, 3],
      [1, null, 3],
      [4, 5, 6],
    ]);
  });

  it("breaks the lines at a gap in time with a null point between its ends", () => {
    expect(chartData([0, 10_000, 100_000, 110_000], [[1, 2, 3, 4]], 0, 200_000, 15_000)).toEqual([
      [0, 10, 55, 100, 110],
      [1, 2, null, 3, 4],
    ]);
  });

  it("joins 5-minute buckets (the hour's fallback to stored buckets) and the 10 s samples after them, and still breaks at a real gap", () => {
    // Buckets at 0 and 300 s, samples from 600 s every 10 s, then nothing for 5 minutes.
    const times = [0, 300_000, 600_000, 610_000, 910_000];
    const spans = times.map((_, i) => (i < 2 ? BUCKET_MS : 0));
    expect(chartData(times, [[1, 2, 3, 4, 5]], 0, 1_000_000, 60_000, spans)).toEqual([
      [0, 300, 600, 610, 760, 910],
      [1, 2, 3, 4, null, 5],
    ]);
    // Without spans the buckets stand alone, each cut off from the next.
    expect(chartData(times, [[1, 2, 3, 4, 5]], 0, 1_000_000, 60_000)[1]).toEqual([1, null, 2, null, 3, 4, null, 5]);
  });

  it("leaves out points outside the window", () => {
    expect(chartData([-5000, 0, 5000, 20_000], [[9, 1, 2, 8]], 0, 10_000, 60_000)).toEqual([[0, 5], [1, 2]]);
  });

  it("counts measured values", () => {
    expect(measured([undefined, 1, 0, undefined])).toBe(2);
  });
});

describe("niceMax", () => {
  it("rounds the scale up to a figure that reads well", () => {
    expect(niceMax([12, 37], 100)).toBe(100);
    expect(niceMax([140], 100)).toBe(200);
    expect(niceMax([600], 100)).toBe(1000);
    expect(niceMax([3 * 1024 * 1024], 1024, true)).toBe(4 * 1024 * 1024);
  });
});
