/**
 * GetUsage on a manager the host's agent is not connected to (another manager
 * of the database, or this one after a restart): the day and the hour from the
 * store's 5-minute buckets, with notes saying where the samples are. On the
 * engine testStore() opens; feeds on the test's clock.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { createClient, createRouterTransport, type Interceptor } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { UsageReportSchema } from "@berth/proto/berth/v1/agent_pb.js";
import { Phase, ServerStatusSchema } from "@berth/proto/berth/v1/server_pb.js";
import { UsageService, UsageWindow } from "@berth/proto/berth/v1/usage_pb.js";
import { callerKey, type Caller } from "../auth/caller.js";
import { createLogger } from "../log.js";
import { newServer, sameDatabase, testStore } from "../../testing/store.js";
import type { Store } from "../store/store.js";
import { COARSE_STEP_MS } from "../usage/history.js";
import { FLUSH_DELAY_MS, UsageFeed } from "../usage/usage-feed.js";
import { errorInterceptor } from "./errors.js";
import { createUsageService } from "./usage-service.js";

const VIEWER: Caller = { tokenId: "tok_v", name: "v", role: "viewer", project: null };
const STEP = COARSE_STEP_MS;
const T0 = Math.floor(1_700_000_000_000 / STEP) * STEP;

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

function client(store: Store, usage: UsageFeed, connected: { here: boolean; elsewhere: boolean }) {
  const as: Interceptor = (next) => (req) => {
    req.contextValues.set(callerKey, VIEWER);
    return next(req);
  };
  const service = createUsageService({ store, usage, hub: { isConnected: () => connected.here }, presence: { isConnected: () => connected.here || connected.elsewhere } });
  const t = createRouterTransport((r) => r.service(UsageService, service), { router: { interceptors: [errorInterceptor(createLogger("silent", "test")), as] } });
  return createClient(UsageService, t);
}

describe("UsageService.GetUsage from the store", () => {
  it("another manager answers the host's and its server's day and hour as 5-minute averages, and says where the samples are", async () => {
    const store = await testStore();
    cleanup.push(() => store.close());
    await store.commit([
      { op: "host.insert", id: "host_1", name: "h1", secretHash: "x", createdAt: T0 },
      { op: "server.insert", server: newServer({ id: "srv_a", hostId: "host_1", project: "default", status: create(ServerStatusSchema, { phase: Phase.RUNNING }) }) },
    ]);
    const clock = { now: T0 };
    const a = new UsageFeed({ projectOf: async () => "default", store, now: () => clock.now });
    // 20 minutes of reports on manager A, flushed after each boundary.
    for (let t = T0; t < T0 + 4 * STEP; t += 10_000) {
      clock.now = t;
      if (t % STEP === 0 && t > T0) expect(await a.flush()).toBe(2);
      const report = create(UsageReportSchema, {
        host: { time: timestampFromMs(1), cpuPercent: 20, memoryBytes: 500n, memoryLimitBytes: 1000n },
        containers: [{ serverId: "srv_a", containerId: "c1", sample: { time: timestampFromMs(1), cpuPercent: 50, memoryBytes: 100n, pids: 2 } }],
      });
      await a.record("host_1", report, new Set(["srv_a"]));
    }
    clock.now = T0 + 4 * STEP + FLUSH_DELAY_MS;
    expect(await a.flush()).toBe(2);

    // Manager B: the host's agent is connected to A.
    const other = await sameDatabase(store);
    cleanup.push(() => other.close());
    const b = client(other, new UsageFeed({ projectOf: async () => "default", store: other, now: () => clock.now }), { here: false, elsewhere: true });
    const day = await b.getUsage({ subject: { case: "host", value: "host_1" }, window: UsageWindow.DAY });
    expect(day.points.map((p) => (timestampMs(p.time!) - T0) / STEP)).toEqual([0, 1, 2, 3]);
    expect(day.points.map((p) => p.cpuPercent)).toEqual([20, 20, 20, 20]);
    expect(day.latest).toBeUndefined();
    expect(day.note).toMatch(/^this host's agent is connected to another manager of this database: ask that manager for the latest sample/);
    const hour = await b.getUsage({ subject: { case: "server", value: "srv_a" }, window: UsageWindow.HOUR });
    expect(hour.points).toHaveLength(4);
    expect(hour.points[0]!.memoryMaxBytes).toBe(100n);
    expect(hour.note).toMatch(/connected to another manager.*; where this manager holds no 10 s samples, the hour shows the stored 5-minute averages/);

    // Manager A holds the samples: the hour is its 120 samples, no note.
    const own = await client(store, a, { here: true, elsewhere: false }).getUsage({ subject: { case: "server", value: "srv_a" }, window: UsageWindow.HOUR });
    expect(own.points).toHaveLength(120);
    expect(own.note).toBe("");
    expect(own.latest?.cpuPercent).toBe(50);
  });
});
