import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { CommandKind, ContainerInfoSchema } from "@berth/proto/berth/v1/agent_pb.js";
import { DesiredState, Phase, RestartPolicy, ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import { COMMAND_DEADLINE_MS, plan, type PlanInput } from "./plan.js";

const NOW = 1_700_000_000_000;
const HASH = "0123456789abcdef";
const NET = "berth-alpha-0123abcd";

function input(o: { state?: string; networks?: readonly string[]; hash?: string; desired?: DesiredState; network?: string; inflight?: boolean }): PlanInput {
  const c = create(ContainerInfoSchema, {
    id: "c1",
    name: "berth-web-x",
    image: "busybox",
    state: o.state ?? "running",
    createdTime: timestampFromMs(NOW - 600_000),
    startedTime: timestampFromMs(NOW - 300_000),
    labels: { "berth.manager": "mgr_test", "berth.server": "srv_test", "berth.generation": "1", "berth.spec-hash": o.hash ?? HASH },
    networks: [...(o.networks ?? [NET])],
  });
  return {
    now: NOW,
    spec: create(ServerSpecSchema, { name: "web", hostId: "host_a", image: "busybox", dataMountPath: "/data", desiredState: o.desired ?? DesiredState.RUNNING, restartPolicy: RestartPolicy.ON_FAILURE }),
    generation: 1,
    specHash: HASH,
    ...(o.network === "" ? {} : { network: o.network ?? NET }),
    deleted: false,
    deletedAt: null,
    retentionMs: 86_400_000,
    lifecycle: {},
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

describe("plan: a running container not (only) on its project network", () => {
  it.each([
    ["on Docker's default bridge", { networks: ["bridge"] }, CommandKind.ENSURE_CONTAINER],
    ["on its network and the bridge", { networks: [NET, "bridge"] }, CommandKind.ENSURE_CONTAINER],
    ["on its network alone", {}, undefined],
    ["reported without networks (an older agent)", { networks: [] }, undefined],
    ["no network known for it (an older manager's view)", { networks: ["bridge"], network: "" }, undefined],
    ["running an older spec (waits for a restart instead)", { networks: ["bridge"], hash: "fedcba9876543210" }, undefined],
    ["stopped (joins at its next start)", { networks: ["bridge"], state: "exited", desired: DesiredState.STOPPED }, undefined],
    ["paused", { networks: ["bridge"], state: "paused", desired: DesiredState.PAUSED }, undefined],
  ] as const)("%s", (_what, o, kind) => {
    const p = plan(input(o));
    expect(p.command?.kind).toBe(kind);
    if (kind !== undefined) expect(p).toMatchObject({ phase: Phase.RUNNING, reason: "JoiningNetwork" });
  });

  it("stays Running while the move is in flight", () => {
    expect(plan(input({ networks: ["bridge"], inflight: true }))).toMatchObject({ phase: Phase.RUNNING, reason: "JoiningNetwork" });
  });
});
