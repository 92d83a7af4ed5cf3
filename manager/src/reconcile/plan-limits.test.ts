import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { CommandKind, ContainerInfoSchema } from "@berth/proto/berth/v1/agent_pb.js";
import { DesiredState, Phase, ResourceLimitsSchema, RestartPolicy, ServerSpecSchema, type ResourceLimits } from "@berth/proto/berth/v1/server_pb.js";
import type { Lifecycle } from "../domain/records.js";
import { effectiveLimits, formatBytes, limitsDiff, limitsKey, oomMessage } from "../domain/limits.js";
import { COMMAND_DEADLINE_MS, plan, type PlanInput } from "./plan.js";

const NOW = 1_700_000_000_000;
const HASH = "0123456789abcdef";
const MiB = 1024n * 1024n;

const limits = (o: MessageInitShape<typeof ResourceLimitsSchema>): ResourceLimits => create(ResourceLimitsSchema, { pidsLimit: 512n, ...o });

function input(o: { want: ResourceLimits; have?: ResourceLimits; state?: string; desired?: DesiredState; lifecycle?: Lifecycle; inflight?: boolean; oom?: boolean }): PlanInput {
  const c = create(ContainerInfoSchema, {
    id: "c1",
    state: o.state ?? "running",
    exitCode: o.oom ? 137 : 0,
    oomKilled: o.oom ?? false,
    createdTime: timestampFromMs(NOW - 600_000),
    startedTime: timestampFromMs(NOW - 300_000),
    finishedTime: o.state === "exited" ? timestampFromMs(NOW - 1000) : undefined,
    labels: { "berth.manager": "mgr_test", "berth.server": "srv_test", "berth.generation": "1", "berth.spec-hash": HASH },
    networks: ["berth-net"],
    ...(o.have ? { resources: o.have } : {}),
  });
  return {
    now: NOW,
    limits: o.want,
    spec: create(ServerSpecSchema, { name: "web", hostId: "host_a", image: "busybox", dataMountPath: "/data", desiredState: o.desired ?? DesiredState.RUNNING, restartPolicy: RestartPolicy.ON_FAILURE }),
    generation: 1,
    specHash: HASH,
    network: "berth-net",
    deleted: false,
    deletedAt: null,
    retentionMs: 86_400_000,
    lifecycle: o.lifecycle ?? {},
    dataInitialized: true,
    lastActionAt: NOW - 60_000,
    hostConnected: true,
    containers: [c],
    data: { present: true },
    observedAt: NOW,
    inflight: o.inflight ? { id: "cmd_1", kind: CommandKind.ENSURE_CONTAINER, createdAt: NOW - 100, deadlineAt: NOW - 100 + COMMAND_DEADLINE_MS[CommandKind.ENSURE_CONTAINER] } : undefined,
    lastFinished: undefined,
  };
}

const applied = (p: ReturnType<typeof plan>) => p.conditions.find((c) => c.type === "SpecApplied")!;

describe("effective limits and their differences", () => {
  it("fills the pids default and makes swap explicit (no swap: memory)", () => {
    const spec = create(ServerSpecSchema, { resources: { memoryBytes: 512n * MiB } });
    expect(effectiveLimits(spec, 512)).toMatchObject({ memoryBytes: 512n * MiB, memorySwapBytes: 512n * MiB, pidsLimit: 512n });
    expect(effectiveLimits(create(ServerSpecSchema, {}), 0).pidsLimit).toBe(-1n);
    expect(effectiveLimits(create(ServerSpecSchema, { resources: { pidsLimit: -1n } }), 512).pidsLimit).toBe(-1n);
    expect(effectiveLimits(create(ServerSpecSchema, { resources: { pidsLimit: 64n } }), 512).pidsLimit).toBe(64n);
  });

  it("tells limits docker update can set from limits only a new container drops; swap counts only where Docker holds one", () => {
    expect(limitsDiff(limits({ cpus: 1.5 }), limits({ cpus: 1 }))).toEqual({ live: ["cpus"], removal: [] });
    expect(limitsDiff(limits({}), limits({ cpus: 1, memoryBytes: 64n * MiB, memorySwapBytes: 64n * MiB }))).toEqual({ live: [], removal: ["memory_bytes", "cpus"] });
    expect(limitsDiff(limits({ pidsLimit: -1n }), limits({ pidsLimit: 512n }))).toEqual({ live: ["pids_limit"], removal: [] });
    // A kernel without swap accounting: Docker shows no swap limit; not a difference.
    expect(limitsDiff(limits({ memoryBytes: 64n * MiB, memorySwapBytes: 128n * MiB }), limits({ memoryBytes: 64n * MiB }))).toEqual({ live: [], removal: [] });
    expect(limitsDiff(limits({ memoryBytes: 64n * MiB, memorySwapBytes: 128n * MiB }), limits({ memoryBytes: 64n * MiB, memorySwapBytes: 64n * MiB }))).toEqual({ live: ["memory_swap_bytes"], removal: [] });
    expect(limitsKey(limits({ cpus: 0.5 }))).not.toBe(limitsKey(limits({ cpus: 0.25 })));
  });

  it("words byte counts and OOM kills", () => {
    expect(formatBytes(2n * 1024n * MiB)).toBe("2 GiB");
    expect(formatBytes(1536n * MiB)).toBe("1.5 GiB");
    expect(oomMessage(137, 2n * 1024n * MiB)).toBe("killed for exceeding its 2 GiB memory limit (exit code 137)");
    expect(oomMessage(137, 0n)).toMatch(/host ran out/);
  });
});

describe("plan: limits of a container with the current spec", () => {
  it("a running container whose limits differ gets them live, once per container and limits", () => {
    const want = limits({ cpus: 0.5 });
    const p = plan(input({ want, have: limits({}) }));
    expect(p).toMatchObject({ phase: Phase.RUNNING, reason: "ApplyingLimits", command: { kind: CommandKind.ENSURE_CONTAINER }, limitsAttempt: { containerId: "c1", key: limitsKey(want) } });
    // Sent once: Docker still holding other values afterwards is shown, not retried.
    const again = plan(input({ want, have: limits({}), lifecycle: { limitsAttempt: { containerId: "c1", key: limitsKey(want) } } }));
    expect(again.command).toBeUndefined();
    expect(again.phase).toBe(Phase.RUNNING);
    expect(applied(again)).toMatchObject({ status: "False", reason: "LimitsNotApplied" });
    // Other limits asked later: tried again.
    expect(plan(input({ want: limits({ cpus: 1 }), have: limits({}), lifecycle: { limitsAttempt: { containerId: "c1", key: limitsKey(want) } } })).command?.kind).toBe(CommandKind.ENSURE_CONTAINER);
  });

  it("limits as asked: nothing to do, SpecApplied true", () => {
    const p = plan(input({ want: limits({ cpus: 0.5 }), have: limits({ cpus: 0.5 }) }));
    expect(p.command).toBeUndefined();
    expect(applied(p)).toMatchObject({ status: "True", reason: "Applied" });
  });

  it("a limit to remove waits for a new container: SpecApplied says how, no command", () => {
    const p = plan(input({ want: limits({}), have: limits({ memoryBytes: 64n * MiB, memorySwapBytes: 64n * MiB }) }));
    expect(p.command).toBeUndefined();
    expect(applied(p)).toMatchObject({ status: "False", reason: "PendingRestart" });
    expect(applied(p).message).toMatch(/removing the memory_bytes limit takes a new container/);
  });

  it("an agent that reports no limits (older than limits) is left alone", () => {
    const p = plan(input({ want: limits({ cpus: 2 }) }));
    expect(p.command).toBeUndefined();
    expect(applied(p).status).toBe("True");
  });

  it("a stopped container gets its limits when it starts: nothing now", () => {
    const p = plan(input({ want: limits({ cpus: 2 }), have: limits({}), state: "exited", desired: DesiredState.STOPPED }));
    expect(p.command).toBeUndefined();
    expect(applied(p)).toMatchObject({ status: "False", reason: "PendingStart" });
  });

  it("stays Running with reason ApplyingLimits while the update is in flight", () => {
    const p = plan(input({ want: limits({ cpus: 2 }), have: limits({}), inflight: true }));
    expect(p).toMatchObject({ phase: Phase.RUNNING, reason: "ApplyingLimits" });
  });
});

describe("plan: an OOM kill", () => {
  it("is a crash with reason OOMKilled, its message naming the limit", () => {
    const want = limits({ memoryBytes: 64n * MiB, memorySwapBytes: 64n * MiB });
    const p = plan(
      input({ want, have: want, state: "exited", oom: true, lifecycle: { lastExit: { cause: "crash", at: NOW - 500, exitCode: 137, finishedAt: NOW - 1000, oomKilled: true }, crashTimes: [NOW - 500] } }),
    );
    expect(p).toMatchObject({ phase: Phase.STARTING, reason: "OOMKilled" });
    expect(p.message).toMatch(/^killed for exceeding its 64 MiB memory limit \(exit code 137\); restarting in/);
    expect(p.crash).toMatchObject({ recent: 1 });
  });
});

describe("plan: the disk quota's stop policy", () => {
  const over = (o: { state: string; stop: boolean; size: number }) => {
    // Stopped by berth (the quota's stop): an explained exit.
    const lifecycle: Lifecycle = o.state === "exited" ? { lastExit: { cause: "stopped_by_berth", at: NOW - 900, exitCode: 0, finishedAt: NOW - 1000 } } : {};
    const i = input({ want: limits({}), have: limits({}), state: o.state, lifecycle });
    return {
      ...i,
      spec: create(ServerSpecSchema, { name: i.spec.name, image: i.spec.image, dataMountPath: "/data", desiredState: DesiredState.RUNNING, resources: { diskQuotaBytes: 10n * MiB, stopOverDiskQuota: o.stop } }),
      data: { present: true, sizeBytes: o.size },
    };
  };

  it("stops a running server over its quota, keeps it stopped while over, and leaves it be under it or without the policy", () => {
    const p = plan(over({ state: "running", stop: true, size: Number(12n * MiB) }));
    expect(p).toMatchObject({ phase: Phase.STOPPING, reason: "DiskQuotaExceeded", command: { kind: CommandKind.ENSURE_STOPPED } });
    expect(p.message).toBe("stopping: its data directory uses 12 MiB of its 10 MiB disk quota (stop_over_disk_quota)");
    const stopped = plan(over({ state: "exited", stop: true, size: Number(12n * MiB) }));
    expect(stopped).toMatchObject({ phase: Phase.STOPPED, reason: "DiskQuotaExceeded" });
    expect(stopped.command).toBeUndefined();
    // Under the quota again: started (its desired state was kept).
    expect(plan(over({ state: "exited", stop: true, size: Number(9n * MiB) })).command?.kind).toBe(CommandKind.ENSURE_RUNNING);
    // Over it without the policy: only the alert (rules.ts), the server runs on.
    expect(plan(over({ state: "running", stop: false, size: Number(12n * MiB) })).command).toBeUndefined();
  });
});
