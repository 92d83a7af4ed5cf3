import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { cpus, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { hostUsage, readHostCounters, type HostCounters } from "./host-usage.js";

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "berth-host-usage-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

async function procTree(stat: string): Promise<string> {
  const proc = join(root, "proc");
  await mkdir(proc, { recursive: true });
  await writeFile(join(proc, "stat"), stat);
  await writeFile(join(proc, "meminfo"), "MemTotal:       8000000 kB\nMemFree:        1000000 kB\nMemAvailable:   6000000 kB\n");
  await writeFile(join(proc, "loadavg"), "0.50 0.40 0.30 2/345 6789\n");
  return proc;
}

const fixed = { now: () => 1_700_000_000_000, monotonicNow: () => 0, disk: async () => ({ totalBytes: 1000, freeBytes: 250 }) };

describe("readHostCounters and hostUsage", () => {
  it("reads CPU times, memory, load and the data root's filesystem", async () => {
    const proc = await procTree("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 50 0 50 350 50 0 0 0 0 0\ncpu1 50 0 50 350 50 0 0 0 0 0\n");
    const c = await readHostCounters({ ...fixed, procRoot: proc, dataRoot: "/data" });
    expect(c).toEqual({
      at: 1_700_000_000_000,
      monotonicMs: 0,
      cpu: { busy: 200, total: 1000, cpus: 2 },
      memory: { totalBytes: 8000000 * 1024, availableBytes: 6000000 * 1024 },
      load: [0.5, 0.4, 0.3],
      disk: { totalBytes: 1000, freeBytes: 250 },
      unreadable: [],
    });
    expect(hostUsage(undefined, c)).toEqual({
      at: 1_700_000_000_000,
      cpus: 2,
      memoryTotalBytes: 8000000 * 1024,
      memoryAvailableBytes: 6000000 * 1024,
      load1: 0.5,
      load5: 0.4,
      load15: 0.3,
      diskTotalBytes: 1000,
      diskFreeBytes: 250,
    });
  });

  it("gives the busy share of all CPUs between two samples, iowait counted as idle", () => {
    const at = (busy: number, total: number): HostCounters => ({ at: 0, monotonicMs: 0, cpu: { busy, total, cpus: 4 }, unreadable: [] });
    expect(hostUsage(at(200, 1000), at(500, 2000)).cpuPercent).toBe(30);
    expect(hostUsage(at(200, 1000), at(200, 1000)).cpuPercent).toBeUndefined();
    expect(hostUsage(at(200, 1000), at(100, 900)).cpuPercent).toBeUndefined();
  });

  it("keeps what it could read when a file is missing, garbled or the data root is gone", async () => {
    const proc = await procTree("garbage\n");
    await rm(join(proc, "loadavg"));
    const c = await readHostCounters({ ...fixed, procRoot: proc, dataRoot: join(root, "nope"), disk: undefined });
    expect(c.cpu).toBeUndefined();
    expect(c.load).toBeUndefined();
    expect(c.disk).toBeUndefined();
    expect(c.memory?.availableBytes).toBe(6000000 * 1024);
    expect(c.unreadable).toEqual([join(root, "nope"), join(proc, "loadavg"), join(proc, "stat")]);
  });

  it("has no disk figures when no data root is given", async () => {
    const proc = await procTree("cpu  1 2 3 4\n");
    const c = await readHostCounters({ ...fixed, procRoot: proc });
    expect(c.disk).toBeUndefined();
    expect(c.unreadable).toEqual([]);
  });

  it("reads this machine: its CPUs and memory as Node sees them, a busy share between 0 and 100, a real filesystem", async () => {
    const a = await readHostCounters({ dataRoot: root });
    let x = 0;
    for (let i = 0; i < 2e7; i++) x += i;
    expect(x).toBeGreaterThan(0);
    const b = await readHostCounters({ dataRoot: root });
    expect(b.unreadable).toEqual([]);
    expect(b.cpu?.cpus).toBe(cpus().length);
    expect(b.memory?.totalBytes).toBe(totalmem());
    expect(b.memory!.availableBytes).toBeLessThanOrEqual(b.memory!.totalBytes);
    expect(b.disk!.freeBytes).toBeLessThanOrEqual(b.disk!.totalBytes);
    expect(b.disk!.totalBytes).toBeGreaterThan(0);
    const u = hostUsage(a, b);
    if (u.cpuPercent !== undefined) {
      expect(u.cpuPercent).toBeGreaterThanOrEqual(0);
      expect(u.cpuPercent).toBeLessThanOrEqual(100);
    }
    expect(u.load1).toBeGreaterThanOrEqual(0);
  });
});
