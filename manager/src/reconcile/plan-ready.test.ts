import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { CommandKind, ContainerInfoSchema } from "@berth/proto/berth/v1/agent_pb.js";
import { DesiredState, Phase, RestartPolicy, ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import type { Lifecycle } from "../domain/records.js";
import { plan, READY_TIMEOUT_MS, type PlanInput } from "./plan.js";

const NOW = 1_700_000_000_000;
const HASH = "0123456789abcdef";
const PATTERN = "Done \\(.*\\)!";

interface In {
  pattern?: string;
  state?: string;
  /** ms before NOW the container started. */
  startedAgo?: number;
  /** ms before NOW the agent saw a matching line; undefined: none yet. */
  readyAgo?: number;
  hash?: string;
  lifecycle?: Lifecycle;
  hostConnected?: boolean;
}

function input(o: In = {}): PlanInput {
  const c = create(ContainerInfoSchema, {
    id: "c1",
    state: o.state ?? "running",
    createdTime: timestampFromMs(NOW - 900_000),
    startedTime: timestampFromMs(NOW - (o.startedAgo ?? 5_000)),
    ...(o.state === "exited" ? { finishedTime: timestampFromMs(NOW - 1_000) } : {}),
    ...(o.readyAgo !== undefined ? { readyTime: timestampFromMs(NOW - o.readyAgo) } : {}),
    labels: { "berth.manager": "mgr_test", "berth.server": "srv_test", "berth.generation": "1", "berth.spec-hash": o.hash ?? HASH },
  });
  return {
    now: NOW,
    spec: create(ServerSpecSchema, {
      name: "mc",
      hostId: "host_a",
      image: "busybox",
      dataMountPath: "/data",
      desiredState: DesiredState.RUNNING,
      restartPolicy: RestartPolicy.ON_FAILURE,
      readyPattern: o.pattern ?? PATTERN,
    }),
    generation: 1,
    specHash: HASH,
    deleted: false,
    deletedAt: null,
    retentionMs: 86_400_000,
    lifecycle: o.lifecycle ?? {},
    dataInitialized: true,
    lastActionAt: NOW - 60_000,
    hostConnected: o.hostConnected ?? true,
    containers: [c],
    data: { present: true },
    observedAt: NOW,
    inflight: undefined,
    lastFinished: undefined,
  };
}

const ready = (p: ReturnType<typeof plan>) => p.conditions.find((c) => c.type === "Ready")!;

describe("plan: a spec with a ready pattern", () => {
  it.each<[string, In, { phase: Phase; reason: string; ready: [string, string]; message?: RegExp }]>([
    ["no pattern, running → Running and Ready at once (as before ready patterns)", { pattern: "" }, { phase: Phase.RUNNING, reason: "Running", ready: ["True", "Running"] }],
    [
      "running, no line matched yet → Starting, Ready False/Starting naming the pattern",
      {},
      { phase: Phase.STARTING, reason: "WaitingForReady", ready: ["False", "Starting"], message: /waiting for a line matching \/Done \\\(\.\*\\\)!\// },
    ],
    ["running, a line matched → Running, Ready", { readyAgo: 1_000 }, { phase: Phase.RUNNING, reason: "Running", ready: ["True", "Running"] }],
    [
      "running 10 minutes without a match → ReadyTimeout (still Starting, not stopped)",
      { startedAgo: READY_TIMEOUT_MS + 1 },
      { phase: Phase.STARTING, reason: "ReadyTimeout", ready: ["False", "ReadyTimeout"], message: /within 10 minutes.*keeps running/ },
    ],
    ["exited → not running (a restart waits for a new match)", { state: "exited", readyAgo: 60_000, lifecycle: { lastExit: { at: NOW, finishedAt: NOW - 1_000, cause: "crash", exitCode: 1, oomKilled: false } } }, { phase: Phase.STARTING, reason: "CrashBackoff", ready: ["False", "NotRunning"] }],
    ["an older spec's container → PendingRestart, never waits for its pattern", { hash: "fedcba9876543210" }, { phase: Phase.RUNNING, reason: "Running", ready: ["False", "PendingRestart"] }],
    ["host offline → Unknown", { hostConnected: false }, { phase: Phase.UNKNOWN, reason: "HostOffline", ready: ["Unknown", "HostOffline"] }],
  ])("%s", (_name, o, want) => {
    const p = plan(input(o));
    expect(p.phase).toBe(want.phase);
    expect(p.reason).toBe(want.reason);
    expect([ready(p).status, ready(p).reason]).toEqual(want.ready);
    if (want.message) expect(ready(p).message).toMatch(want.message);
    // Waiting for a line is not a reason to touch the container.
    if (want.phase === Phase.STARTING && want.reason !== "CrashBackoff") expect(p.command).toBeUndefined();
  });

  it("comes back at the ready deadline, so ReadyTimeout shows without another event", () => {
    const p = plan(input({ startedAgo: 60_000 }));
    expect(p.requeueAfterMs).toBe(READY_TIMEOUT_MS - 60_000);
    expect(plan(input({ startedAgo: READY_TIMEOUT_MS + 1 })).requeueAfterMs).toBeUndefined();
  });

  it("a restart still goes ahead while waiting (readiness is not a reason to hold it)", () => {
    const p = plan(input({ lifecycle: { restartRequestedAt: NOW - 1_000 } }));
    expect(p.command?.kind).toBe(CommandKind.RESTART);
  });

  it("is idempotent: the same input plans the same", () => {
    expect(plan(input())).toEqual(plan(input()));
  });
});
