import { describe, expect, it } from "vitest";
import { parseBlkioServiceBytes, parseFlatKeyed, parseIoStat, parseLimit, parseLoadavg, parseMeminfo, parseNetDev, parseProcStat, parseSingleValue } from "./usage-files.js";

const GARBAGE = ["", "\n", "garbage", "-1", "1e9", "NaN", "0x10", "12 34", "\x00\x01\x02", "max max", "Infinity"];

describe("single values and limits", () => {
  it("reads a counter file with or without its newline", () => {
    expect(parseSingleValue("74996757693376\n")).toBe(74996757693376);
    expect(parseSingleValue("0")).toBe(0);
  });

  it("gives undefined for anything but one non-negative number", () => {
    for (const g of GARBAGE) expect(parseSingleValue(g)).toBeUndefined();
  });

  it("reads v2's max as no limit, a number as the limit", () => {
    expect(parseLimit("max\n")).toEqual({ limit: null });
    expect(parseLimit("536870912\n")).toEqual({ limit: 536870912 });
    expect(parseLimit("512\n")).toEqual({ limit: 512 });
  });

  it("reads v1's unlimited memory (the largest page-aligned int64) as no limit", () => {
    expect(parseLimit("9223372036854771712\n")).toEqual({ limit: null });
    // 64 KiB pages (arm64, ppc64le) round it differently.
    expect(parseLimit("9223372036854710272\n")).toEqual({ limit: null });
    expect(parseLimit("2147483648\n")).toEqual({ limit: 2147483648 });
  });

  it("gives undefined for a garbled limit (not 'no limit')", () => {
    for (const g of GARBAGE) expect(parseLimit(g)).toBeUndefined();
  });
});

describe("flat keyed files", () => {
  it("reads v2 cpu.stat", () => {
    const m = parseFlatKeyed("usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n");
    expect(m.get("usage_usec")).toBe(1234567);
    expect(m.get("system_usec")).toBe(234567);
  });

  it("reads v1 memory.stat, and skips lines of another shape", () => {
    const m = parseFlatKeyed("cache 249856\nrss 1851392\ninactive_file 77824\ngarbage\nhalf 12 34\nneg -5\ntotal_inactive_file 81920\n");
    expect(m.get("inactive_file")).toBe(77824);
    expect(m.get("total_inactive_file")).toBe(81920);
    expect(m.has("garbage") || m.has("half") || m.has("neg")).toBe(false);
  });

  it("gives an empty map for garbage", () => {
    for (const g of GARBAGE.filter((g) => !/^\S+ \S+$/.test(g))) expect(parseFlatKeyed(g).size).toBe(0);
  });
});

describe("block IO", () => {
  it("sums v2 io.stat's rbytes and wbytes over devices", () => {
    const text = "8:16 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0\n8:0 rbytes=90430464 wbytes=299008000 rios=8950 wios=1252 dbytes=50331648 dios=3021\n";
    expect(parseIoStat(text)).toEqual({ readBytes: 1459200 + 90430464, writeBytes: 314773504 + 299008000 });
  });

  it("gives undefined for an empty io.stat (no IO yet: the kernel lists only devices with activity) and for garbage", () => {
    for (const g of [...GARBAGE, "8:0 rios=1 wios=2"]) expect(parseIoStat(g)).toBeUndefined();
  });

  it("sums v1 blkio service bytes' Read and Write over devices, ignoring Sync, Async, Discard and Total", () => {
    const text = [
      "8:0 Read 4096000",
      "8:0 Write 12288",
      "8:0 Sync 4108288",
      "8:0 Async 0",
      "8:0 Discard 0",
      "8:0 Total 4108288",
      "253:0 Read 100",
      "253:0 Write 200",
      "253:0 Sync 300",
      "253:0 Async 0",
      "253:0 Total 300",
      "Total 4108588",
      "",
    ].join("\n");
    expect(parseBlkioServiceBytes(text)).toEqual({ readBytes: 4096100, writeBytes: 12488, devices: 2 });
  });

  it("reads an empty v1 blkio file or a lone Total as no IO on no device (so the other file may be tried)", () => {
    expect(parseBlkioServiceBytes("Total 0\n")).toEqual({ readBytes: 0, writeBytes: 0, devices: 0 });
    expect(parseBlkioServiceBytes("")).toEqual({ readBytes: 0, writeBytes: 0, devices: 0 });
  });

  it("gives undefined for a garbled v1 blkio file", () => {
    for (const g of ["garbage", "8:0 Read", "8:0 Read -1", "x:y Read 5", "Total", "\x00\x01"]) expect(parseBlkioServiceBytes(g)).toBeUndefined();
  });
});

const NET_DEV = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  123456     100    0    0    0     0          0         0   123456     100    0    0    0     0       0          0
  eth0: 6358508854  329795    0    0    0     0          0         0 27706063  242028    0    0    0     0       0          0
  eth1:1000   10    0    0    0     0          0         0     2000      20    0    0    0     0       0          0
`;

describe("/proc/<pid>/net/dev", () => {
  it("sums rx and tx bytes over every interface but lo, including a counter glued to the colon", () => {
    expect(parseNetDev(NET_DEV)).toEqual({ rxBytes: 6358508854 + 1000, txBytes: 27706063 + 2000 });
  });

  it("reads a namespace with only lo as zero (a container with network mode none)", () => {
    const onlyLo = NET_DEV.split("\n").slice(0, 3).join("\n");
    expect(parseNetDev(onlyLo)).toEqual({ rxBytes: 0, txBytes: 0 });
  });

  it("gives undefined for headers only, truncated lines and garbage", () => {
    expect(parseNetDev(NET_DEV.split("\n").slice(0, 2).join("\n"))).toBeUndefined();
    expect(parseNetDev("  eth0: 1 2 3\n")).toBeUndefined();
    expect(parseNetDev("  eth0: x 2 3 4 5 6 7 8 y 1 2 3 4 5 6 7\n")).toBeUndefined();
    for (const g of GARBAGE) expect(parseNetDev(g)).toBeUndefined();
  });
});

describe("host files", () => {
  it("reads /proc/stat's aggregate line: busy is everything but idle and iowait, guest time not counted twice", () => {
    const text = "cpu  100 10 50 800 20 5 5 10 40 0\ncpu0 50 5 25 400 10 2 3 5 20 0\ncpu1 50 5 25 400 10 3 2 5 20 0\nintr 12345\nctxt 999\n";
    expect(parseProcStat(text)).toEqual({ busy: 100 + 10 + 50 + 5 + 5 + 10, total: 1000, cpus: 2 });
  });

  it("reads an old kernel's four-column /proc/stat", () => {
    expect(parseProcStat("cpu  1 2 3 4\ncpu0 1 2 3 4\n")).toEqual({ busy: 6, total: 10, cpus: 1 });
  });

  it("gives undefined for /proc/stat without a readable cpu line", () => {
    for (const g of [...GARBAGE, "cpu0 1 2 3 4\n", "cpu  1 2 x 4\n", "cpu  1 2\n"]) expect(parseProcStat(g)).toBeUndefined();
  });

  it("reads /proc/meminfo's total and available, falling back to free + buffers + cached on old kernels", () => {
    expect(parseMeminfo("MemTotal:       24683748 kB\nMemFree:        18516608 kB\nMemAvailable:   23244056 kB\nBuffers:          120908 kB\nHugePages_Total:       0\n")).toEqual({
      totalBytes: 24683748 * 1024,
      availableBytes: 23244056 * 1024,
    });
    expect(parseMeminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 200 kB\n")).toEqual({ totalBytes: 1000 * 1024, availableBytes: 310 * 1024 });
  });

  it("gives undefined for meminfo without a total or any free figure", () => {
    for (const g of [...GARBAGE, "MemFree: 100 kB\n", "MemTotal: 1000 kB\n"]) expect(parseMeminfo(g)).toBeUndefined();
  });

  it("reads /proc/loadavg's three averages", () => {
    expect(parseLoadavg("2.58 4.66 5.90 3/221 2348\n")).toEqual([2.58, 4.66, 5.9]);
    for (const g of [...GARBAGE, "1.0 2.0", "1.0 x 3.0 1/2 3"]) expect(parseLoadavg(g)).toBeUndefined();
  });
});
