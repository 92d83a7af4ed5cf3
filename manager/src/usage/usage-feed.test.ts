import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { UsageReportSchema } from "@berth/proto/berth/v1/agent_pb.js";
import type { EventRecord } from "../domain/records.js";
import { UsageFeed, type UsageUpdate } from "./usage-feed.js";

const PROJECTS: Record<string, string> = { srv_a: "red", srv_b: "blue", srv_c: "red" };

function report(servers: Record<string, { cpu?: number; mem: number }>, hostCpu = 10) {
  return create(UsageReportSchema, {
    host: { time: timestampFromMs(1), cpuPercent: hostCpu, memoryBytes: 100n, memoryLimitBytes: 1000n, load1: 0.5, diskFreeBytes: 7n },
    containers: Object.entries(servers).map(([serverId, s]) => ({
      serverId,
      containerId: `c_${serverId}`,
      sample: { time: timestampFromMs(1), ...(s.cpu !== undefined ? { cpuPercent: s.cpu } : {}), memoryBytes: BigInt(s.mem), pids: 2 },
    })),
  });
}

function feed() {
  let now = 1_700_000_000_000;
  const asked: string[] = [];
  const f = new UsageFeed({
    projectOf: async (id) => {
      asked.push(id);
      return PROJECTS[id];
    },
    now: () => now,
  });
  return { f, asked, tick: (ms = 10_000) => (now += ms), now: () => now };
}

describe("UsageFeed", () => {
  it("keeps a host's own servers' samples, stamped with the manager's time; refuses others; asks each project once", async () => {
    const { f, asked, now } = feed();
    const placed = new Set(["srv_a", "srv_b"]);
    const r = await f.record("host_1", report({ srv_a: { cpu: 50, mem: 10 }, srv_b: { mem: 20 }, srv_x: { mem: 1 } }), placed);
    expect(r.unknown).toBe(1);
    expect(timestampMs(f.latestServer("srv_a")!.sample!.time!)).toBe(now());
    expect(f.latestServer("srv_a")!.sample!.cpuPercent).toBe(50);
    expect(f.latestServer("srv_x")).toBeUndefined();
    expect(f.latestHost("host_1")!.sample!.load1).toBe(0.5);
    await f.record("host_1", report({ srv_a: { cpu: 40, mem: 11 } }), placed);
    expect(asked.sort()).toEqual(["srv_a", "srv_b"]);
  });

  it("a server missing from its host's next report, or whose host went away, is gone; a purged one loses its history", async () => {
    const { f, tick } = feed();
    const updates: UsageUpdate[] = [];
    f.watch({ project: null, hosts: true }, (u) => updates.push(u));
    const placed = new Set(["srv_a", "srv_b"]);
    await f.record("host_1", report({ srv_a: { cpu: 1, mem: 10 }, srv_b: { cpu: 1, mem: 20 } }), placed);
    tick();
    await f.record("host_1", report({ srv_a: { cpu: 2, mem: 10 } }), placed);
    expect(updates[1]!.goneServerIds).toEqual(["srv_b"]);
    expect(f.latestServer("srv_b")).toBeUndefined();
    expect((await f.history("server", "srv_b", "1h")).points).toHaveLength(1); // the history stays
    f.hostGone("host_1");
    expect(updates[2]!.goneServerIds).toEqual(["srv_a"]);
    expect(f.latestHost("host_1")).toBeUndefined();
    f.onCommit({ events: [{ type: "server.purged", serverId: "srv_b" } as EventRecord], serverIds: new Set(), hostIds: new Set() });
    expect((await f.history("server", "srv_b", "1h")).points).toEqual([]);
    expect(f.sizes.servers).toBe(1);
  });

  it("a watcher of one project sees only its servers, and hosts only when it asked", async () => {
    const { f } = feed();
    const red: UsageUpdate[] = [];
    f.watch({ project: "red", hosts: false }, (u) => red.push(u));
    await f.record("host_1", report({ srv_a: { cpu: 1, mem: 1 }, srv_b: { cpu: 1, mem: 1 }, srv_c: { cpu: 1, mem: 1 } }), new Set(["srv_a", "srv_b", "srv_c"]));
    expect(red).toHaveLength(1);
    expect(red[0]!.servers.map((s) => s.serverId).sort()).toEqual(["srv_a", "srv_c"]);
    expect(red[0]!.hosts).toEqual([]);
    expect(f.snapshot({ project: "blue", hosts: true }).servers.map((s) => s.serverId)).toEqual(["srv_b"]);
    expect(f.snapshot({ project: "blue", hosts: true }).hosts.map((h) => h.hostId)).toEqual(["host_1"]);
  });

  it("history: a sample without a CPU rate (a container's first) is not a point; later ones are, with the host's figures only", async () => {
    const { f, tick } = feed();
    const placed = new Set(["srv_a"]);
    await f.record("host_1", report({ srv_a: { mem: 10 } }), placed);
    tick();
    await f.record("host_1", report({ srv_a: { cpu: 30, mem: 12 } }), placed);
    const { points } = await f.history("server", "srv_a", "1h");
    expect(points.map((p) => [p.cpuPercent, p.memoryBytes, p.pids])).toEqual([[30, 12n, 2]]);
    const { points: hostPoints } = await f.history("host", "host_1", "1h");
    expect(hostPoints).toHaveLength(2);
    expect(hostPoints[0]!.memoryLimitBytes).toBe(1000n);
    expect(hostPoints[0]!.pids).toBeUndefined();
    expect((await f.history("server", "srv_a", "24h")).points[0]!.memoryMaxBytes).toBe(12n);
  });

  it("leaves out figures that are not finite non-negative numbers", async () => {
    const { f } = feed();
    const r = report({ srv_a: { cpu: Number.NaN, mem: 1 } }, -5);
    await f.record("host_1", r, new Set(["srv_a"]));
    expect(f.latestServer("srv_a")!.sample!.cpuPercent).toBeUndefined();
    expect(f.latestHost("host_1")!.sample!.cpuPercent).toBeUndefined();
  });
});
