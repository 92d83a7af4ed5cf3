/**
 * Live usage against a real Docker engine: the agent samples its containers'
 * cgroup files and the host's /proc (every second here, --usage-interval 1),
 * the manager serves GetUsage and WatchUsage and exports gauges on /metrics.
 */
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { totalmem } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Role } from "@berth/proto/berth/v1/access_pb.js";
import { Phase, type ServerSpec } from "@berth/proto/berth/v1/server_pb.js";
import { UsageService, UsageWindow, type WatchUsageResponse } from "@berth/proto/berth/v1/usage_pb.js";
import { dockerClient, removeBerthContainers, TEST_IMAGE } from "./harness/docker-engine.js";
import { removeTestDir, startAgent, startManager, tempDir, waitFor, waitForHostOnline, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { testDockerHost } from "./harness/engine.js";

const uid = () => `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 5)}`;

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "OK";
  } catch (err) {
    return Code[ConnectError.from(err).code];
  }
}

describe("usage", () => {
  const docker = dockerClient(testDockerHost());
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc;
  let usage: Client<typeof UsageService>;
  let hostId: string;
  const ids: string[] = [];

  const create = async (name: string, command: string) => {
    const { server } = await manager.servers.createServer({ spec: { name: `${name}-${uid()}`, image: TEST_IMAGE, command: ["sh", "-c", command], dataMountPath: "/data" } as ServerSpec });
    ids.push(server!.id);
    return server!;
  };

  beforeAll(async () => {
    dir = await tempDir("usage");
    manager = await startManager({ dir, args: ["--metrics-server-usage"] });
    agent = await startAgent({ manager, dir, extraArgs: ["--usage-interval", "1"] });
    hostId = (await waitForHostOnline(manager)).id;
    usage = createClient(UsageService, manager.transport(manager.adminToken));
  }, 120_000);

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    await removeBerthContainers(docker, { serverIds: ids });
    await removeTestDir(dir);
  });

  it("a busy server uses about a core and a quiet one next to nothing; the host's figures and a history arrive; /metrics has them", async () => {
    const busy = await create("busy", "while :; do :; done");
    const quiet = await create("quiet", "exec sleep 100000");
    await waitForPhase(manager, busy.id, Phase.RUNNING, 60_000);
    await waitForPhase(manager, quiet.id, Phase.RUNNING, 60_000);

    // Rates need two samples: wait for a CPU figure, then for a few more points of history.
    const latest = async (id: string) => (await usage.getUsage({ subject: { case: "server", value: id } })).latest;
    await waitFor("a CPU figure for the busy server", async () => (await latest(busy.id))?.cpuPercent !== undefined, 30_000);
    await waitFor("three points of history", async () => (await usage.getUsage({ subject: { case: "server", value: busy.id } })).points.length >= 3, 30_000);

    const b = (await latest(busy.id))!;
    const q = (await latest(quiet.id))!;
    // A busy loop on a 2-core machine running other tests: well above a quiet server, at most a core and a bit.
    expect(b.cpuPercent!).toBeGreaterThan(30);
    expect(b.cpuPercent!).toBeLessThan(130);
    expect(q.cpuPercent!).toBeLessThan(10);
    for (const s of [b, q]) {
      expect(s.memoryBytes!).toBeGreaterThan(0n);
      expect(s.memoryBytes!).toBeLessThan(256n * 1024n * 1024n);
      expect(s.pids!).toBeGreaterThanOrEqual(1);
      expect(s.memoryLimitBytes).toBeUndefined(); // no limit set
    }

    const history = await usage.getUsage({ subject: { case: "server", value: busy.id }, window: UsageWindow.HOUR });
    const times = history.points.map((p) => timestampMs(p.time!));
    expect(times).toEqual([...times].sort((x, y) => x - y));
    expect(history.points.every((p) => p.cpuPercent !== undefined && p.memoryBytes !== undefined)).toBe(true);
    // The day window averages into 5-minute points: one (or two across a boundary).
    const day = await usage.getUsage({ subject: { case: "server", value: busy.id }, window: UsageWindow.DAY });
    expect(day.points.length).toBeGreaterThanOrEqual(1);
    expect(day.points.length).toBeLessThanOrEqual(2);
    expect(day.points[0]!.memoryMaxBytes).toBeGreaterThan(0n);

    const host = await usage.getUsage({ subject: { case: "host", value: hostId } });
    expect(host.latest!.memoryLimitBytes).toBe(BigInt(totalmem()));
    expect(host.latest!.cpus).toBeGreaterThanOrEqual(1);
    expect(host.latest!.diskTotalBytes!).toBeGreaterThan(0n);
    expect(host.latest!.load1).toBeDefined();

    const metrics = await (await fetch(`${manager.url}/metrics`)).text();
    expect(metrics).toMatch(new RegExp(`^berth_host_cpu_percent\\{host="${hostId}"\\} [0-9.]+$`, "m"));
    expect(metrics).toMatch(new RegExp(`^berth_host_memory_total_bytes\\{host="${hostId}"\\} ${totalmem()}$`, "m"));
    expect(metrics).toMatch(new RegExp(`^berth_server_memory_bytes\\{server="${busy.id}",project="default",host="${hostId}"\\} \\d+$`, "m"));
  }, 120_000);

  it("WatchUsage sends what is known, then each report; a stopped server is gone; a project token sees only its project", async () => {
    const s = await create("watched", "exec sleep 100000");
    await waitForPhase(manager, s.id, Phase.RUNNING, 60_000);
    const ac = new AbortController();
    const seen: WatchUsageResponse[] = [];
    const stream = (async () => {
      try {
        for await (const m of usage.watchUsage({ hosts: true }, { signal: ac.signal })) seen.push(m);
      } catch (err) {
        if (!ac.signal.aborted) throw err;
      }
    })();
    try {
      await waitFor("the server's sample", async () => seen.some((m) => m.servers.some((x) => x.serverId === s.id && x.hostId === hostId)), 30_000);
      expect(seen.some((m) => m.hosts.some((h) => h.hostId === hostId))).toBe(true);
      // A point of history first (the first sample has no CPU rate, so it is not one).
      await waitFor("a point of history", async () => (await usage.getUsage({ subject: { case: "server", value: s.id } })).points.length > 0, 30_000);
      await manager.servers.stopServer({ id: s.id });
      await waitFor("the stopped server gone", async () => seen.some((m) => m.goneServerIds.includes(s.id)), 30_000);
      const after = await usage.getUsage({ subject: { case: "server", value: s.id } });
      expect(after.latest).toBeUndefined();
      expect(after.note).toMatch(/not running \(it is stopped\)/);
      expect(after.points.length).toBeGreaterThan(0); // the history stays
    } finally {
      ac.abort();
      await stream;
    }

    // A viewer of another project: default's servers are NotFound and never in its watch; hosts only when asked.
    const { secret } = await manager.access.createToken({ name: `other-${uid()}`, role: Role.VIEWER, project: "other" });
    const other = createClient(UsageService, manager.transport(secret));
    expect(await codeOf(other.getUsage({ subject: { case: "server", value: s.id } }))).toBe("NotFound");
    const oc = new AbortController();
    const otherSeen: WatchUsageResponse[] = [];
    const otherStream = (async () => {
      try {
        for await (const m of other.watchUsage({}, { signal: oc.signal })) otherSeen.push(m);
      } catch (err) {
        if (!oc.signal.aborted) throw err;
      }
    })();
    await new Promise((r) => setTimeout(r, 3000)); // three reports of the busy servers of the first test
    oc.abort();
    await otherStream;
    expect(otherSeen.length).toBeGreaterThanOrEqual(1); // the opening message
    expect(otherSeen.flatMap((m) => m.servers)).toEqual([]);
    expect(otherSeen.flatMap((m) => m.hosts)).toEqual([]);
  }, 120_000);

  it("bad requests get precise codes", async () => {
    expect(await codeOf(usage.getUsage({}))).toBe("InvalidArgument");
    expect(await codeOf(usage.getUsage({ subject: { case: "host", value: "host_nope" } }))).toBe("NotFound");
    expect(await codeOf(usage.getUsage({ subject: { case: "server", value: "no-such-server" } }))).toBe("NotFound");
    expect(await codeOf(usage.getUsage({ subject: { case: "server", value: ids[0]! }, window: 7 as UsageWindow }))).toBe("InvalidArgument");
  });
});
