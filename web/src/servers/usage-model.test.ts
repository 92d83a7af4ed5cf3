import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { UsageSampleSchema } from "@berth/proto/berth/v1/usage_pb.js";
import { cpuGauge, diskGauge, formatPercent, linePath, loadText, memoryGauge, niceMax, shortBytes } from "./usage-model.js";

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

describe("linePath", () => {
  it("draws a line through the points over the window", () => {
    expect(linePath([{ t: 0, v: 0 }, { t: 50, v: 50 }, { t: 100, v: 100 }], 0, 100, 100, 200, 100, 60)).toBe("M0 100 L100 50 L200 0");
  });

  it("breaks the line where nothing was measured, and marks a lone point", () => {
    const path = linePath([{ t: 0, v: 10 }, { t: 10, v: 10 }, { t: 100, v: 20 }, { t: 110, v: undefined }, { t: 120, v: 30 }], 0, 120, 100, 120, 100, 15);
    expect(path).toBe("M0 90 L10 90 M100 80 h1 M120 70 h1");
  });

  it("leaves out points outside the window and clamps values to the scale", () => {
    expect(linePath([{ t: -10, v: 5 }, { t: 0, v: 500 }, { t: 10, v: -1 }], 0, 10, 100, 10, 100, 60)).toBe("M0 0 L10 100");
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
