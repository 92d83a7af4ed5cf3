import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { CommandKind } from "@berth/proto/berth/v1/agent_pb.js";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "@berth/proto/grpc/health/v1/health_pb.js";
import type { EventLoopDelayOptions } from "./event-loop.js";
import { ManagerMetrics, type MetricsSources } from "./metrics.js";

function setup(over: Partial<MetricsSources> = {}, eventLoop?: EventLoopDelayOptions) {
  let now = 10_000;
  const metrics = new ManagerMetrics(
    {
      hosts: async () => [{ online: true }, { online: true }, { online: false }],
      serverCounts: async () => [
        { project: "web", phase: "RUNNING", count: 2 },
        { project: "db", phase: "FAILED", count: 1 },
      ],
      firingAlerts: async () => [{ rule: "host_offline", severity: "critical" }],
      queueDepth: () => 3,
      now: () => now,
      ...over,
    },
    "9.9.9",
    eventLoop ? { eventLoop } : {},
  );
  return { metrics, advance: (ms: number) => (now += ms) };
}

/** The value of one sample line (`name{labels} value`). */
function sample(text: string, line: string): number | undefined {
  const row = text.split("\n").find((l) => l.startsWith(`${line} `));
  return row === undefined ? undefined : Number(row.slice(line.length + 1));
}

describe("ManagerMetrics", () => {
  it("reads fleet gauges from the store at scrape time", async () => {
    const { metrics } = setup();
    const { body, contentType } = await metrics.render();
    expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(sample(body, 'berth_hosts{state="online"}')).toBe(2);
    expect(sample(body, 'berth_hosts{state="offline"}')).toBe(1);
    expect(sample(body, 'berth_servers{project="web",phase="RUNNING"}')).toBe(2);
    expect(sample(body, 'berth_servers{project="db",phase="FAILED"}')).toBe(1);
    expect(sample(body, 'berth_alerts_firing{rule="host_offline",severity="critical"}')).toBe(1);
    expect(sample(body, "berth_reconcile_queue_depth")).toBe(3);
    expect(sample(body, 'berth_build_info{version="9.9.9"}')).toBe(1);
    // Node's process metrics come along.
    expect(body).toContain("process_cpu_seconds_total");
  });

  it("a phase that empties disappears instead of staying at its last value", async () => {
    let counts = [{ project: "web", phase: "STARTING", count: 1 }];
    const { metrics } = setup({ serverCounts: async () => counts });
    expect(sample((await metrics.render()).body, 'berth_servers{project="web",phase="STARTING"}')).toBe(1);
    counts = [{ project: "web", phase: "RUNNING", count: 1 }];
    const body = (await metrics.render()).body;
    expect(sample(body, 'berth_servers{project="web",phase="STARTING"}')).toBeUndefined();
    expect(sample(body, 'berth_servers{project="web",phase="RUNNING"}')).toBe(1);
  });

  it("counts events, commands by kind with their latency, and fired alerts from the ledger", async () => {
    const { metrics } = setup();
    // The writers put the command on its events (EventInput.command): issued at 8.5 s, heard done at 10 s.
    const start = { kind: CommandKind.ENSURE_RUNNING, createdAt: 8_500 };
    const stop = { kind: CommandKind.ENSURE_STOPPED, createdAt: 4_000 };
    metrics.onEvent(1, { type: "command.issued", correlationId: "cmd_1", message: "", command: start });
    metrics.onEvent(2, { type: "command.succeeded", correlationId: "cmd_1", message: "", command: start });
    metrics.onEvent(3, { type: "command.expired", correlationId: "cmd_2", message: "", command: stop });
    metrics.onEvent(4, { type: "alert.fired", reason: "crash_loop", message: "" });
    metrics.onEvent(5, { type: "server.created", message: "" });
    // Another manager's events (PostgreSQL's change feed) are that manager's to count.
    metrics.onEvent(6, { type: "server.created", message: "" }, true);
    metrics.onEvent(7, { type: "command.issued", correlationId: "cmd_3", message: "", command: start }, true);
    const body = (await metrics.render()).body;
    expect(sample(body, 'berth_commands_issued_total{kind="ensure-running"}')).toBe(1);
    expect(sample(body, 'berth_commands_finished_total{kind="ensure-running",outcome="succeeded"}')).toBe(1);
    expect(sample(body, 'berth_command_duration_seconds_sum{kind="ensure-running",outcome="succeeded"}')).toBe(1.5);
    expect(sample(body, 'berth_command_duration_seconds_bucket{le="1",kind="ensure-running",outcome="succeeded"}')).toBe(0);
    expect(sample(body, 'berth_command_duration_seconds_bucket{le="2.5",kind="ensure-running",outcome="succeeded"}')).toBe(1);
    expect(sample(body, 'berth_commands_finished_total{kind="ensure-stopped",outcome="expired"}')).toBe(1);
    expect(sample(body, 'berth_command_duration_seconds_sum{kind="ensure-stopped",outcome="expired"}')).toBe(6);
    expect(sample(body, 'berth_alerts_fired_total{rule="crash_loop"}')).toBe(1);
    expect(sample(body, 'berth_events_written_total{type="server.created"}')).toBe(1);
    expect(sample(body, 'berth_events_written_total{type="command.issued"}')).toBe(1);
  });

  it("observes reconciles and write probes", async () => {
    const { metrics } = setup();
    metrics.observeReconcile(2, true);
    metrics.observeReconcile(30, false);
    metrics.observeWriteProbe(true, 0.0004);
    metrics.observeWriteProbe(false, 1);
    const body = (await metrics.render()).body;
    expect(sample(body, 'berth_reconcile_duration_seconds_count{outcome="ok"}')).toBe(1);
    expect(sample(body, 'berth_reconcile_duration_seconds_count{outcome="error"}')).toBe(1);
    expect(sample(body, "berth_sqlite_write_duration_seconds_count")).toBe(1);
    expect(sample(body, "berth_database_writable")).toBe(0);
    expect(sample(body, "berth_database_write_failures_total")).toBe(1);
  });

  it("counts RPCs by code and open streams while they are read", async () => {
    const { metrics } = setup();
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const transport = createRouterTransport(
      (r) =>
        r.service(Health, {
          check(req) {
            if (req.service === "missing") throw new ConnectError("unknown service", Code.NotFound);
            return { status: ServingStatus.SERVING };
          },
          async *watch() {
            yield { status: ServingStatus.SERVING };
            await released;
          },
        }),
      { router: { interceptors: [metrics.interceptor] } },
    );
    const client = createClient(Health, transport);
    await client.check({});
    await expect(client.check({ service: "missing" })).rejects.toThrow();
    const stream = client.watch({})[Symbol.asyncIterator]();
    await stream.next();
    let body = (await metrics.render()).body;
    expect(sample(body, 'berth_rpc_requests_total{method="grpc.health.v1.Health/Check",code="ok"}')).toBe(1);
    expect(sample(body, 'berth_rpc_requests_total{method="grpc.health.v1.Health/Check",code="not_found"}')).toBe(1);
    expect(sample(body, 'berth_streams_open{method="grpc.health.v1.Health/Watch"}')).toBe(1);
    release();
    expect((await stream.next()).done).toBe(true);
    body = (await metrics.render()).body;
    expect(sample(body, 'berth_streams_open{method="grpc.health.v1.Health/Watch"}')).toBe(0);
    expect(sample(body, 'berth_rpc_requests_total{method="grpc.health.v1.Health/Watch",code="ok"}')).toBe(1);
  });

  it("keeps each manager's counters apart (one registry per manager)", async () => {
    const a = setup().metrics;
    const b = setup().metrics;
    a.onEvent(1, { type: "server.created", message: "" });
    expect(sample((await b.render()).body, 'berth_events_written_total{type="server.created"}')).toBeUndefined();
  });

  it("a command event without its command is counted as an event only (no store read, no kind guessed)", async () => {
    const { metrics } = setup();
    metrics.onEvent(1, { type: "command.issued", correlationId: "cmd_1", message: "ensure-running" });
    const body = (await metrics.render()).body;
    expect(body).not.toMatch(/^berth_commands_issued_total\{/m);
    expect(sample(body, 'berth_events_written_total{type="command.issued"}')).toBe(1);
  });
});

describe("ManagerMetrics: event-loop delay and memory", () => {
  /** Holds the thread, as a synchronous scan of the whole fleet would. */
  function block(ms: number): void {
    const until = performance.now() + ms;
    while (performance.now() < until);
  }

  /** The worst delay `sample()` reports once the monitor has caught up with a stall (evidence, not a fixed wait). */
  async function worstAfterStall(eventLoop: ManagerMetrics["eventLoop"]): Promise<number> {
    let worst = 0;
    for (let i = 0; i < 100 && worst < 0.15; i++) {
      await new Promise((r) => setTimeout(r, 20));
      worst = Math.max(worst, eventLoop.sample()?.maxS ?? 0);
    }
    return worst;
  }

  it("a 200 ms stall shows as the worst delay of its second, in the histogram and the gauge", async () => {
    // A long interval: the test closes intervals itself, so the gauge cannot move under it.
    const { metrics: eventLoop } = setup({}, { intervalMs: 3_600_000 });
    eventLoop.eventLoop.start();
    try {
      eventLoop.eventLoop.sample();
      block(200);
      // The monitor records the stall on its next tick after the block.
      expect(await worstAfterStall(eventLoop.eventLoop)).toBeGreaterThanOrEqual(0.15);
      const body = (await eventLoop.render()).body;
      const count = sample(body, "berth_event_loop_delay_seconds_count")!;
      expect(count).toBeGreaterThanOrEqual(1);
      // The stalled interval is above 100 ms.
      expect(count - sample(body, 'berth_event_loop_delay_seconds_bucket{le="0.1"}')!).toBeGreaterThanOrEqual(1);
      expect(sample(body, 'berth_event_loop_delay_seconds_bucket{le="5"}')).toBe(count);
      expect(sample(body, "berth_event_loop_delay_seconds_sum")).toBeGreaterThanOrEqual(0.15);
      // The gauges hold the last closed interval: the one that saw the stall.
      expect(sample(body, "berth_event_loop_delay_max_seconds")).toBeGreaterThanOrEqual(0.15);
      expect(sample(body, "berth_event_loop_delay_p99_seconds")).toBeGreaterThan(0);
      expect(sample(body, "berth_event_loop_delay_p50_seconds")).toBeGreaterThan(0);
      expect(sample(body, "berth_event_loop_delay_p50_seconds")).toBeLessThanOrEqual(sample(body, "berth_event_loop_delay_max_seconds")!);
    } finally {
      eventLoop.eventLoop.stop();
    }
  });

  it("a stall right after an interval closes is not lost (the monitor forgets its last tick on reset)", async () => {
    const { metrics } = setup({}, { intervalMs: 3_600_000 });
    metrics.eventLoop.start();
    try {
      // Let the monitor tick, then close an interval and stall at once, before its next tick.
      await new Promise((r) => setTimeout(r, 30));
      metrics.eventLoop.sample();
      block(200);
      expect(await worstAfterStall(metrics.eventLoop)).toBeGreaterThanOrEqual(0.15);
    } finally {
      metrics.eventLoop.stop();
    }
  });

  it("measures nothing until started and after stop (no timer keeps the process up)", async () => {
    const { metrics } = setup();
    expect(metrics.eventLoop.sample()).toBeUndefined();
    expect(sample((await metrics.render()).body, "berth_event_loop_delay_seconds_count")).toBe(0);
    metrics.eventLoop.start();
    metrics.eventLoop.stop();
    expect(metrics.eventLoop.sample()).toBeUndefined();
  });

  it("exports resident memory and heap used (prom-client's process metrics)", async () => {
    const body = (await setup().metrics.render()).body;
    expect(sample(body, "process_resident_memory_bytes")).toBeGreaterThan(10 * 2 ** 20);
    expect(sample(body, "nodejs_heap_size_used_bytes")).toBeGreaterThan(0);
  });

  it("renders only the metrics asked for by name, without reading the store", async () => {
    const { metrics } = setup({ serverCounts: () => Promise.reject(new Error("the fleet gauges must not be read")) });
    const { body } = await metrics.render(["berth_event_loop_delay_seconds", "berth_event_loop_delay_max_seconds", "no_such_metric"]);
    expect(body).toContain("# TYPE berth_event_loop_delay_seconds histogram");
    expect(body).toContain("# TYPE berth_event_loop_delay_max_seconds gauge");
    expect(body).not.toContain("berth_servers");
    expect(body).not.toContain("process_cpu_seconds_total");
  });
});
