import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { ConditionStatus, DesiredState, Phase, ServerSchema, type Server } from "@berth/proto/berth/v1/server_pb.js";
import { actionsFor, conditionTone, formatUptime, isConverging, lastSeen, needsAttention, pendingSettled, phaseBadge, phaseFromName, phaseName, reasonText, runningSinceMs, type PendingAction } from "./model.js";

function server(phase: Phase, desired: DesiredState, o: { gen?: bigint; observed?: bigint; deleted?: boolean; changedAt?: number; reason?: string } = {}): Server {
  return create(ServerSchema, {
    id: "srv_1",
    spec: { name: "a", desiredState: desired },
    generation: o.gen ?? 1n,
    status: { phase, reason: o.reason ?? "", observedGeneration: o.observed ?? o.gen ?? 1n, lastChangeTime: timestampFromMs(o.changedAt ?? 1000) },
    ...(o.deleted ? { deleteTime: timestampFromMs(5) } : {}),
  });
}

describe("phase names", () => {
  it("spells phases as the docs do and parses them back", () => {
    expect(phaseName(Phase.DATA_LOST)).toBe("DataLost");
    expect(phaseName(Phase.RUNNING)).toBe("Running");
    expect(phaseFromName("datalost")).toBe(Phase.DATA_LOST);
    expect(phaseFromName("nope")).toBeUndefined();
  });
});

describe("isConverging", () => {
  it.each([
    [Phase.RUNNING, DesiredState.RUNNING, false],
    [Phase.STOPPING, DesiredState.STOPPED, true],
    [Phase.RUNNING, DesiredState.STOPPED, true],
    [Phase.MISSING, DesiredState.STOPPED, false],
    [Phase.STARTING, DesiredState.RUNNING, true],
    [Phase.FAILED, DesiredState.RUNNING, false],
    [Phase.UNKNOWN, DesiredState.RUNNING, false],
    [Phase.PURGING, DesiredState.STOPPED, true],
  ])("%s with desired %s → %s", (phase, desired, want) => {
    expect(isConverging(server(phase, desired))).toBe(want);
  });

  it("a generation not yet observed is converging even in the desired phase", () => {
    expect(isConverging(server(Phase.RUNNING, DesiredState.RUNNING, { gen: 3n, observed: 2n }))).toBe(true);
  });

  it("a deleted server is not converging", () => {
    expect(isConverging(server(Phase.DELETED, DesiredState.STOPPED, { deleted: true }))).toBe(false);
  });
});

describe("actionsFor", () => {
  it("offers what the phase allows", () => {
    expect(actionsFor(server(Phase.RUNNING, DesiredState.RUNNING))).toEqual(["stop", "pause", "restart", "rebuild", "delete", "purge"]);
    expect(actionsFor(server(Phase.STOPPED, DesiredState.STOPPED))).toEqual(["start", "rebuild", "delete", "purge"]);
    expect(actionsFor(server(Phase.PAUSED, DesiredState.PAUSED))).toEqual(["resume", "stop", "rebuild", "delete", "purge"]);
    expect(actionsFor(server(Phase.FAILED, DesiredState.RUNNING))).toEqual(["start", "stop", "rebuild", "delete", "purge"]);
    expect(actionsFor(server(Phase.DELETED, DesiredState.STOPPED, { deleted: true }))).toEqual(["restore", "purge"]);
    expect(actionsFor(server(Phase.PURGING, DesiredState.STOPPED))).toEqual([]);
    expect(actionsFor(server(Phase.DATA_LOST, DesiredState.RUNNING))).toEqual(["start", "stop", "delete", "purge"]);
  });

  it("a server running but waiting for its ready pattern can be restarted; one starting otherwise cannot", () => {
    expect(actionsFor(server(Phase.STARTING, DesiredState.RUNNING, { reason: "WaitingForReady" }))).toEqual(["stop", "restart", "rebuild", "delete", "purge"]);
    expect(actionsFor(server(Phase.STARTING, DesiredState.RUNNING, { reason: "ReadyTimeout" }))).toEqual(["stop", "restart", "rebuild", "delete", "purge"]);
    expect(actionsFor(server(Phase.STARTING, DesiredState.RUNNING, { reason: "CrashBackoff" }))).toEqual(["stop", "rebuild", "delete", "purge"]);
  });
});

describe("pendingSettled", () => {
  const p = (action: PendingAction["action"], extra: Partial<PendingAction> = {}): PendingAction => ({ action, since: 10_000, baseline: 1000, ...extra });

  it("a stop settles when the watch shows Stopped at the answered generation", () => {
    const stop = p("stop", { generation: 2n });
    expect(pendingSettled(stop, server(Phase.RUNNING, DesiredState.STOPPED, { gen: 2n, observed: 1n }), 10_100)).toBe(false);
    expect(pendingSettled(stop, server(Phase.STOPPING, DesiredState.STOPPED, { gen: 2n, observed: 2n, changedAt: 1500 }), 10_100)).toBe(false);
    expect(pendingSettled(stop, server(Phase.STOPPED, DesiredState.STOPPED, { gen: 2n, observed: 1n, changedAt: 1600 }), 10_100)).toBe(false);
    expect(pendingSettled(stop, server(Phase.STOPPED, DesiredState.STOPPED, { gen: 2n, changedAt: 1600 }), 10_100)).toBe(true);
  });

  it("a restart settles only once the server changed after the request", () => {
    expect(pendingSettled(p("restart"), server(Phase.RUNNING, DesiredState.RUNNING, { changedAt: 1000 }), 10_100)).toBe(false);
    expect(pendingSettled(p("restart"), server(Phase.RUNNING, DesiredState.RUNNING, { changedAt: 1200 }), 10_100)).toBe(true);
  });

  it("a failure after the request settles anything; an old failure does not", () => {
    expect(pendingSettled(p("start"), server(Phase.FAILED, DesiredState.RUNNING, { changedAt: 900 }), 10_100)).toBe(false);
    expect(pendingSettled(p("start"), server(Phase.FAILED, DesiredState.RUNNING, { changedAt: 1100 }), 10_100)).toBe(true);
  });

  it("purge settles when the server leaves the watch; delete when it is deleted", () => {
    expect(pendingSettled(p("purge"), server(Phase.PURGING, DesiredState.STOPPED), 10_100)).toBe(false);
    expect(pendingSettled(p("purge"), undefined, 10_100)).toBe(true);
    expect(pendingSettled(p("delete"), server(Phase.DELETED, DesiredState.STOPPED, { deleted: true }), 10_100)).toBe(true);
  });

  it("gives up after PENDING_MAX_MS", () => {
    expect(pendingSettled(p("start"), server(Phase.UNKNOWN, DesiredState.RUNNING), 10_000 + 11 * 60_000)).toBe(true);
  });
});

describe("attention and wording", () => {
  it("a server with no container that should stay stopped (after a restore) is stopped with its data kept, not Missing needing attention", () => {
    const restored = create(ServerSchema, { id: "srv_1", spec: { name: "a", desiredState: DesiredState.STOPPED }, status: { phase: Phase.MISSING, dataExists: true } });
    expect(phaseBadge(restored)).toEqual({ text: "Stopped · data kept", tone: "idle" });
    expect(needsAttention(restored)).toBe(false);
    // Missing while it should run: still a problem.
    const gone = create(ServerSchema, { id: "srv_2", spec: { name: "b", desiredState: DesiredState.RUNNING }, status: { phase: Phase.MISSING } });
    expect(phaseBadge(gone)).toEqual({ text: "Missing", tone: "warn" });
    expect(needsAttention(gone)).toBe(true);
  });

  it("stopped outside berth needs attention and says so; stopped as asked does not", () => {
    expect(phaseBadge(server(Phase.STOPPED, DesiredState.STOPPED, { reason: "StoppedOutsideBerth" }))).toEqual({ text: "Stopped outside berth", tone: "warn" });
    expect(needsAttention(server(Phase.STOPPED, DesiredState.STOPPED, { reason: "StoppedOutsideBerth" }))).toBe(true);
    expect(needsAttention(server(Phase.STOPPED, DesiredState.STOPPED, { reason: "Stopped" }))).toBe(false);
  });

  it("conditions: False reads neutral where the desired state asks for it, red elsewhere", () => {
    const stopped = server(Phase.STOPPED, DesiredState.STOPPED);
    expect(conditionTone(stopped, "ContainerRunning", ConditionStatus.FALSE)).toBe("neutral");
    expect(conditionTone(stopped, "Ready", ConditionStatus.FALSE)).toBe("neutral");
    expect(conditionTone(stopped, "DataPresent", ConditionStatus.FALSE)).toBe("false");
    const running = server(Phase.FAILED, DesiredState.RUNNING);
    expect(conditionTone(running, "ContainerRunning", ConditionStatus.FALSE)).toBe("false");
    expect(conditionTone(running, "Ready", ConditionStatus.TRUE)).toBe("true");
    expect(conditionTone(running, "Ready", ConditionStatus.UNKNOWN)).toBe("unknown");
  });
});

describe("crashing", () => {
  it("a server restarted after crashes reads Crashing (amber), needs attention, and is not 'converging'", () => {
    const s = create(ServerSchema, {
      id: "srv_1",
      generation: 1n,
      spec: { name: "a", desiredState: DesiredState.RUNNING },
      status: { phase: Phase.STARTING, reason: "CrashBackoff", observedGeneration: 1n, crash: { recent: 2, limit: 5, nextRestartTime: timestampFromMs(Date.now() + 8000) } },
    });
    expect(phaseBadge(s)).toEqual({ text: "Crashing", tone: "warn" });
    expect(needsAttention(s)).toBe(true);
    expect(isConverging(s)).toBe(false);
    // A first start (no crash) is plain converging.
    const starting = create(ServerSchema, { id: "srv_2", generation: 1n, spec: { name: "b", desiredState: DesiredState.RUNNING }, status: { phase: Phase.STARTING, reason: "Starting", observedGeneration: 1n } });
    expect(phaseBadge(starting).text).toBe("Starting");
    expect(needsAttention(starting)).toBe(false);
    expect(isConverging(starting)).toBe(true);
  });
});

describe("a host away", () => {
  it("Unknown keeps what was seen before: 'last seen Failed/CrashLoop'", () => {
    const s = create(ServerSchema, { id: "srv_1", spec: { name: "a" }, status: { phase: Phase.UNKNOWN, reason: "HostOffline", lastKnownPhase: Phase.FAILED, lastKnownReason: "CrashLoop" } });
    expect(lastSeen(s)).toBe("Failed/CrashLoop");
    expect(lastSeen(create(ServerSchema, { id: "srv_2", status: { phase: Phase.UNKNOWN, lastKnownPhase: Phase.RUNNING, lastKnownReason: "Running" } }))).toBe("Running");
    expect(lastSeen(create(ServerSchema, { id: "srv_3", status: { phase: Phase.RUNNING, lastKnownPhase: Phase.FAILED } }))).toBe("");
  });
});

describe("uptime", () => {
  const withRunning = (phase: Phase, status: ConditionStatus) =>
    create(ServerSchema, { id: "srv_1", status: { phase, conditions: [{ type: "ContainerRunning", status, lastTransitionTime: timestampFromMs(42_000) }] } });

  it("counts from Docker's start time when the manager reports it", () => {
    const s = withRunning(Phase.RUNNING, ConditionStatus.TRUE);
    s.status!.startedTime = timestampFromMs(40_000);
    expect(runningSinceMs(s)).toBe(40_000);
    s.status!.phase = Phase.STOPPED;
    expect(runningSinceMs(s)).toBeUndefined();
  });

  it("otherwise from when its container was last seen to start running, only while Running", () => {
    expect(runningSinceMs(withRunning(Phase.RUNNING, ConditionStatus.TRUE))).toBe(42_000);
    expect(runningSinceMs(withRunning(Phase.RUNNING, ConditionStatus.FALSE))).toBeUndefined();
    expect(runningSinceMs(withRunning(Phase.STOPPED, ConditionStatus.TRUE))).toBeUndefined();
    expect(runningSinceMs(server(Phase.RUNNING, DesiredState.RUNNING))).toBeUndefined(); // no condition yet
  });

  it("reads in its two largest units", () => {
    expect(formatUptime(-5)).toBe("0s");
    expect(formatUptime(42_900)).toBe("42s");
    expect(formatUptime(12 * 60_000 + 5_000)).toBe("12m");
    expect(formatUptime(3 * 3_600_000 + 5 * 60_000)).toBe("3h 5m");
    expect(formatUptime(2 * 3_600_000)).toBe("2h");
    expect(formatUptime(2 * 86_400_000 + 4 * 3_600_000 + 59 * 60_000)).toBe("2d 4h");
  });
});

describe("a failed install", () => {
  it("needs attention and reads as words", () => {
    const s = server(Phase.FAILED, DesiredState.RUNNING, { reason: "InstallFailed" });
    expect(needsAttention(s)).toBe(true);
    expect(phaseBadge(s)).toEqual({ text: "Failed", tone: "bad" });
    expect(reasonText("InstallFailed")).toBe("install failed");
    expect(reasonText("Installing")).toBe("installing");
    expect(reasonText("CrashLoop")).toBe("CrashLoop");
    // Installing is on its way, not a problem.
    expect(needsAttention(server(Phase.CREATING, DesiredState.RUNNING, { reason: "Installing" }))).toBe(false);
  });
});
