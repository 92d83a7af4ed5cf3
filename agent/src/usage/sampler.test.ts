import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { UsageSampler, type RunningContainer } from "./sampler.js";

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "berth-sampler-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

async function put(files: Record<string, string>): Promise<void> {
  for (const [path, text] of Object.entries(files)) {
    const full = join(root, path);
    await mkdir(dirname(full), { recursive: true });
    await writeFile(full, text);
  }
}

/** A v2 container with init pid `pid` in cgroup `docker-<id>.scope`, having used `cpuUs` of CPU. */
function container(id: string, pid: number, cpuUs: number, rx: number): Record<string, string> {
  const dir = `cgroup/system.slice/docker-${id}.scope`;
  return {
    [`proc/${pid}/cgroup`]: `0::/system.slice/docker-${id}.scope\n`,
    [`proc/${pid}/net/dev`]: `Inter-|\n face |\n  eth0: ${rx} 1 0 0 0 0 0 0 0 1 0 0 0 0 0 0\n`,
    [`${dir}/cpu.stat`]: `usage_usec ${cpuUs}\n`,
    [`${dir}/memory.current`]: "1048576\n",
    [`${dir}/memory.stat`]: "inactive_file 0\n",
    [`${dir}/memory.max`]: "max\n",
    [`${dir}/pids.current`]: "3\n",
    [`${dir}/pids.max`]: "512\n",
  };
}

function host(busy: number, idle: number): Record<string, string> {
  return {
    "proc/stat": `cpu  ${busy} 0 0 ${idle} 0 0 0 0 0 0\ncpu0 ${busy} 0 0 ${idle} 0 0 0 0 0 0\n`,
    "proc/meminfo": "MemTotal:       8000000 kB\nMemFree:        1000000 kB\nMemAvailable:   6000000 kB\n",
    "proc/loadavg": "0.50 0.40 0.30 2/345 6789\n",
  };
}

describe("UsageSampler", () => {
  it("reports the host and each running container; rates from the second round; the pid is looked up once per run", async () => {
    let running: RunningContainer[] = [{ id: "aaa", serverId: "srv_a", startedMs: 1000 }];
    const pids: Record<string, number> = { aaa: 101 };
    const lookups: string[] = [];
    let wall = 1_700_000_000_000;
    let mono = 0;
    const sampler = new UsageSampler({
      running: () => running,
      initPid: async (id) => {
        lookups.push(id);
        return pids[id];
      },
      dataRoot: root,
      procRoot: join(root, "proc"),
      cgroupRoot: join(root, "cgroup"),
      disk: async () => ({ totalBytes: 100, freeBytes: 40 }),
      now: () => wall,
      monotonicNow: () => mono,
    });
    await put({ ...host(100, 900), ...container("aaa", 101, 0, 0) });
    const first = await sampler.sample();
    expect(first.host?.cpuPercent).toBeUndefined();
    expect(first.host?.memoryBytes).toBe(2_000_000n * 1024n);
    expect(first.host?.memoryLimitBytes).toBe(8_000_000n * 1024n);
    expect(first.host?.diskFreeBytes).toBe(40n);
    expect(first.containers.map((c) => c.serverId)).toEqual(["srv_a"]);
    expect(first.containers[0]!.sample!.cpuPercent).toBeUndefined();
    expect(first.containers[0]!.sample!.memoryBytes).toBe(1048576n);
    expect(first.containers[0]!.sample!.memoryLimitBytes).toBeUndefined(); // "max": no limit
    expect(first.containers[0]!.sample!.pidsLimit).toBe(512n);
    expect(timestampMs(first.containers[0]!.sample!.time!)).toBe(wall);

    // 10 s later: half a core, 1 kB/s received; the host 25 % busy.
    wall += 10_000;
    mono += 10_000;
    await put({ ...host(350, 1650), ...container("aaa", 101, 5_000_000, 10_000) });
    const second = await sampler.sample();
    expect(second.host?.cpuPercent).toBeCloseTo(25);
    expect(second.containers[0]!.sample!.cpuPercent).toBeCloseTo(50);
    expect(second.containers[0]!.sample!.netRxBytesPerSecond).toBeCloseTo(1000);
    expect(lookups).toEqual(["aaa"]);

    // Restarted (a new start time, a new pid): looked up again, and no rate across the two runs.
    running = [{ id: "aaa", serverId: "srv_a", startedMs: 2000 }];
    pids.aaa = 202;
    await put(container("aaa", 202, 100, 0));
    wall += 10_000;
    mono += 10_000;
    const third = await sampler.sample();
    expect(lookups).toEqual(["aaa", "aaa"]);
    expect(third.containers[0]!.sample!.cpuPercent).toBeUndefined();

    // Stopped: left out, and its cache entry goes.
    running = [];
    expect((await sampler.sample()).containers).toEqual([]);
    expect(sampler.trackedCount).toBe(0);
  });

  it("leaves out a container whose pid cannot be found or whose files are gone, and tries it again next round", async () => {
    const running: RunningContainer[] = [
      { id: "gone", serverId: "srv_gone", startedMs: 1 },
      { id: "nopid", serverId: "srv_nopid", startedMs: 1 },
      { id: "ok", serverId: "srv_ok", startedMs: 1 },
    ];
    let lookups = 0;
    const sampler = new UsageSampler({
      running: () => running,
      initPid: async (id) => {
        lookups++;
        if (id === "nopid") throw new Error("docker inspect failed");
        return id === "gone" ? 303 : 304;
      },
      dataRoot: root,
      procRoot: join(root, "proc"),
      cgroupRoot: join(root, "cgroup"),
      disk: async () => undefined,
    });
    await put({ ...host(1, 1), ...container("ok", 304, 10, 0) });
    const r = await sampler.sample();
    expect(r.containers.map((c) => c.serverId)).toEqual(["srv_ok"]);
    expect(sampler.trackedCount).toBe(1);
    await sampler.sample();
    expect(lookups).toBe(5); // gone and nopid again, ok cached
  });
});
