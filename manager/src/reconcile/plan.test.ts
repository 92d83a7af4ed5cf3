import { EXIT_CAUSE_GRACE_MS, REMOVE_RETRY_MS, REPEAT_HOLD_MS } from "./plan.js";
import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { CommandKind, ContainerInfoSchema, DataPolicy, type ContainerInfo } from "@berth/proto/berth/v1/agent_pb.js";
import { DesiredState, Phase, ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import { CONDITION_TYPES, type ConditionFact, type ConditionType } from "./conditions.js";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { DesiredState as DS, RestartPolicy } from "@berth/proto/berth/v1/server_pb.js";
import {
  COMMAND_DEADLINE_MS,
  CRASH_LOOP_THRESHOLD,
  crashBackoffMs,
  plan,
  type FinishedCommand,
  type InflightCommand,
  type PlanInput,
} from "./plan.js";

const NOW = 1_700_000_000_000;
const HASH = "0123456789abcdef";
const OLD_HASH = "fedcba9876543210";
const RETENTION_MS = 24 * 3600_000;
/** When soft-deleted servers in the table were deleted. */
const DELETED_AT = NOW - 3600_000;

function ctr(
  state: string,
  o: { id?: string; hash?: string; generation?: string; exitCode?: number; oomKilled?: boolean; createdAt?: number; startedAt?: number; finishedAt?: number } = {},
): ContainerInfo {
  return create(ContainerInfoSchema, {
    id: o.id ?? "c0ffee000000000000000000000000000000000000000000000000000000aaaa",
    name: "berth-mc-x",
    image: "busybox",
    state,
    exitCode: o.exitCode ?? 0,
    oomKilled: o.oomKilled ?? false,
    createdTime: timestampFromMs(o.createdAt ?? NOW - 600_000),
    startedTime: timestampFromMs(o.startedAt ?? NOW - 300_000),
    ...(o.finishedAt !== undefined ? { finishedTime: timestampFromMs(o.finishedAt) } : {}),
    labels: {
      "berth.manager": "mgr_test",
      "berth.server": "srv_test",
      "berth.generation": o.generation ?? "1",
      "berth.spec-hash": o.hash ?? HASH,
    },
  });
}

function inflight(kind: CommandKind, o: { remainingMs?: number; overdueMs?: number } = {}): InflightCommand {
  const duration = COMMAND_DEADLINE_MS[kind];
  const deadlineAt = o.overdueMs !== undefined ? NOW - o.overdueMs : NOW + (o.remainingMs ?? 5_000);
  return { id: "cmd_x", kind, createdAt: deadlineAt - duration, deadlineAt };
}

function finished(
  state: FinishedCommand["state"],
  createdAt: number,
  reason = "",
  message = "",
  kind = CommandKind.ENSURE_RUNNING,
): FinishedCommand {
  return { kind, state, reason, message, createdAt, finishedAt: createdAt };
}

type Over = Partial<Omit<PlanInput, "spec">> & { desired?: DesiredState; restartPolicy?: RestartPolicy };

function input(o: Over = {}): PlanInput {
  const { desired, restartPolicy, ...rest } = o;
  const deleted = rest.deleted ?? false;
  return {
    now: NOW,
    spec: create(ServerSpecSchema, {
      name: "mc",
      hostId: "host_a",
      image: "busybox:latest",
      dataMountPath: "/data",
      desiredState: desired ?? DesiredState.RUNNING,
      restartPolicy: restartPolicy ?? RestartPolicy.ON_FAILURE,
    }),
    generation: 1,
    specHash: HASH,
    deleted,
    deletedAt: deleted ? DELETED_AT : null,
    retentionMs: RETENTION_MS,
    lifecycle: {},
    dataInitialized: false,
    lastActionAt: NOW - 60_000,
    hostConnected: true,
    containers: [],
    data: undefined,
    observedAt: NOW,
    inflight: undefined,
    lastFinished: undefined,
    ...rest,
  };
}

type CondWant = Partial<Record<ConditionType, ConditionFact["status"] | [ConditionFact["status"], string]>>;

interface Case {
  name: string;
  in: Over;
  phase: Phase;
  reason: string;
  /** Substring expected in the message. */
  message?: string;
  /** null: no new command. */
  command: { kind: CommandKind; dataPolicy: DataPolicy } | null;
  expire?: boolean;
  /** The in-flight command is settled as succeeded (its goal is observed). */
  settle?: boolean;
  requeueAfterMs?: number;
  deleteRecord?: boolean;
  pendingExit?: { finishedAt: number };
  assumeCrash?: { finishedAt: number; exitCode: number; oomKilled: boolean };
  settledExit?: { finishedAt: number; exitCode: number };
  conditions?: CondWant;
  observedGeneration?: number;
}

const ALL_UNKNOWN: CondWant = {
  HostConnected: ["False", "HostOffline"],
  ContainerExists: ["Unknown", "HostOffline"],
  ContainerRunning: ["Unknown", "HostOffline"],
  DataPresent: ["Unknown", "HostOffline"],
  SpecApplied: ["Unknown", "HostOffline"],
  Ready: ["Unknown", "HostOffline"],
};

const run = (kind: CommandKind, dataPolicy: DataPolicy, recreate?: true) => ({ kind, dataPolicy, ...(recreate ? { recreate } : {}) });

const CASES: Case[] = [
  // --- 1. host offline --------------------------------------------------------------------
  {
    name: "offline, container running → Unknown, every other condition Unknown",
    in: { hostConnected: false, containers: [ctr("running")], data: { present: true }, dataInitialized: true },
    phase: Phase.UNKNOWN,
    reason: "HostOffline",
    command: null,
    conditions: ALL_UNKNOWN,
  },
  {
    name: "offline, last seen exited while desired stopped → Unknown, never Stopped",
    in: { hostConnected: false, desired: DesiredState.STOPPED, containers: [ctr("exited", { exitCode: 0 })] },
    phase: Phase.UNKNOWN,
    reason: "HostOffline",
    command: null,
    conditions: ALL_UNKNOWN,
  },
  {
    name: "offline, no container, desired running → Unknown and no command",
    in: { hostConnected: false },
    phase: Phase.UNKNOWN,
    reason: "HostOffline",
    command: null,
  },
  {
    name: "offline, in-flight command within its deadline → not expired, woken at the deadline",
    in: { hostConnected: false, inflight: inflight(CommandKind.ENSURE_RUNNING, { remainingMs: 1 }) },
    phase: Phase.UNKNOWN,
    reason: "HostOffline",
    command: null,
    expire: false,
    requeueAfterMs: 1,
  },
  {
    name: "offline, in-flight command exactly at its deadline → expired",
    in: { hostConnected: false, inflight: inflight(CommandKind.ENSURE_RUNNING, { overdueMs: 0 }) },
    phase: Phase.UNKNOWN,
    reason: "HostOffline",
    command: null,
    expire: true,
  },
  {
    name: "offline, in-flight command past its deadline → expired, still Unknown",
    in: { hostConnected: false, inflight: inflight(CommandKind.ENSURE_STOPPED, { overdueMs: 10_000 }) },
    phase: Phase.UNKNOWN,
    reason: "HostOffline",
    command: null,
    expire: true,
  },
  {
    name: "offline wins over a recent failure",
    in: { hostConnected: false, lastFinished: finished("failed", NOW - 1, "ImagePullFailed") },
    phase: Phase.UNKNOWN,
    reason: "HostOffline",
    command: null,
  },

  // --- 2. in flight, within the deadline ----------------------------------------------------
  {
    name: "in flight ensure-container → Creating",
    in: { desired: DesiredState.STOPPED, inflight: inflight(CommandKind.ENSURE_CONTAINER, { remainingMs: 7_000 }) },
    phase: Phase.CREATING,
    reason: "Creating",
    command: null,
    requeueAfterMs: 7_000,
  },
  {
    name: "in flight ensure-running, no container yet → Creating",
    in: { inflight: inflight(CommandKind.ENSURE_RUNNING, { remainingMs: 123_456 }) },
    phase: Phase.CREATING,
    reason: "Creating",
    command: null,
    requeueAfterMs: 123_456,
  },
  {
    name: "in flight ensure-running, container exited → Starting",
    in: { containers: [ctr("exited")], inflight: inflight(CommandKind.ENSURE_RUNNING, { remainingMs: 1 }) },
    phase: Phase.STARTING,
    reason: "Starting",
    command: null,
    requeueAfterMs: 1,
  },
  {
    name: "in flight ensure-running, container already running → still Starting until the result",
    in: { containers: [ctr("running")], inflight: inflight(CommandKind.ENSURE_RUNNING, { remainingMs: 2_000 }) },
    phase: Phase.STARTING,
    reason: "Starting",
    command: null,
    requeueAfterMs: 2_000,
  },
  {
    name: "in flight ensure-stopped → Stopping",
    in: { desired: DesiredState.STOPPED, containers: [ctr("running")], inflight: inflight(CommandKind.ENSURE_STOPPED, { remainingMs: 30_000 }) },
    phase: Phase.STOPPING,
    reason: "Stopping",
    command: null,
    requeueAfterMs: 30_000,
  },
  {
    name: "in flight ensure-paused → Stopping/Pausing",
    in: { desired: DesiredState.PAUSED, containers: [ctr("running")], inflight: inflight(CommandKind.ENSURE_PAUSED, { remainingMs: 3 }) },
    phase: Phase.STOPPING,
    reason: "Pausing",
    command: null,
    requeueAfterMs: 3,
  },
  {
    name: "in flight ensure-removed (not deleted) → Stopping/Removing",
    in: { containers: [ctr("exited")], inflight: inflight(CommandKind.ENSURE_REMOVED, { remainingMs: 4 }) },
    phase: Phase.STOPPING,
    reason: "Removing",
    command: null,
    requeueAfterMs: 4,
  },
  {
    name: "in flight remove-data → Purging",
    in: { inflight: inflight(CommandKind.REMOVE_DATA, { remainingMs: 5 }) },
    phase: Phase.PURGING,
    reason: "RemovingData",
    command: null,
    requeueAfterMs: 5,
  },
  {
    name: "in flight check-data → Pending",
    in: { inflight: inflight(CommandKind.CHECK_DATA, { remainingMs: 6 }) },
    phase: Phase.PENDING,
    reason: "Checking",
    command: null,
    requeueAfterMs: 6,
  },
  {
    name: "in flight while deleted → Deleted/Removing",
    in: { deleted: true, containers: [ctr("running")], inflight: inflight(CommandKind.ENSURE_REMOVED, { remainingMs: 8 }) },
    phase: Phase.DELETED,
    reason: "Removing",
    command: null,
    requeueAfterMs: 8,
  },
  {
    name: "in flight wins over a failure newer than the last action",
    in: {
      inflight: inflight(CommandKind.ENSURE_RUNNING, { remainingMs: 9 }),
      lastFinished: finished("failed", NOW - 10, "ImagePullFailed"),
    },
    phase: Phase.CREATING,
    reason: "Creating",
    command: null,
    requeueAfterMs: 9,
  },

  // --- 2b. in flight, past the deadline -------------------------------------------------------
  {
    name: "ensure-running past its deadline → Failed/StartTimeout",
    in: { containers: [ctr("exited")], inflight: inflight(CommandKind.ENSURE_RUNNING, { overdueMs: 1 }) },
    phase: Phase.FAILED,
    reason: "StartTimeout",
    message: "ensure-running did not finish within 180s",
    command: null,
    expire: true,
  },
  {
    name: "ensure-running past its deadline, but the container runs with the current spec → settled as done, not Failed",
    in: { containers: [ctr("running")], inflight: inflight(CommandKind.ENSURE_RUNNING, { overdueMs: 5_000 }) },
    phase: Phase.STARTING,
    reason: "Starting",
    command: null,
    settle: true,
  },
  {
    name: "ensure-running past its deadline, the container runs an older spec → Failed/StartTimeout",
    in: { containers: [ctr("running", { hash: "old-hash" })], inflight: inflight(CommandKind.ENSURE_RUNNING, { overdueMs: 1 }) },
    phase: Phase.FAILED,
    reason: "StartTimeout",
    command: null,
    expire: true,
  },
  {
    name: "ensure-removed past its deadline with no container left → settled as done",
    in: { desired: DesiredState.STOPPED, containers: [], inflight: inflight(CommandKind.ENSURE_REMOVED, { overdueMs: 1 }) },
    phase: Phase.STOPPING,
    reason: "Removing",
    command: null,
    settle: true,
  },
  {
    name: "restart past its deadline, container running → still Failed/RestartTimeout (a restart cannot be told done by looking)",
    in: { containers: [ctr("running")], inflight: inflight(CommandKind.RESTART, { overdueMs: 1 }) },
    phase: Phase.FAILED,
    reason: "RestartTimeout",
    command: null,
    expire: true,
  },
  {
    name: "ensure-running exactly at its deadline → Failed/StartTimeout",
    in: { inflight: inflight(CommandKind.ENSURE_RUNNING, { overdueMs: 0 }) },
    phase: Phase.FAILED,
    reason: "StartTimeout",
    command: null,
    expire: true,
  },
  {
    name: "ensure-stopped past its deadline → Failed/StopTimeout",
    in: { desired: DesiredState.STOPPED, containers: [ctr("running")], inflight: inflight(CommandKind.ENSURE_STOPPED, { overdueMs: 60_000 }) },
    phase: Phase.FAILED,
    reason: "StopTimeout",
    message: "ensure-stopped did not finish within 60s",
    command: null,
    expire: true,
  },
  {
    name: "ensure-container past its deadline → Failed/CreateTimeout",
    in: { desired: DesiredState.STOPPED, inflight: inflight(CommandKind.ENSURE_CONTAINER, { overdueMs: 5 }) },
    phase: Phase.FAILED,
    reason: "CreateTimeout",
    command: null,
    expire: true,
  },
  {
    name: "ensure-paused past its deadline → Failed/PauseTimeout",
    in: { desired: DesiredState.PAUSED, containers: [ctr("running")], inflight: inflight(CommandKind.ENSURE_PAUSED, { overdueMs: 5 }) },
    phase: Phase.FAILED,
    reason: "PauseTimeout",
    command: null,
    expire: true,
  },
  {
    name: "ensure-removed past its deadline → Failed/RemoveTimeout",
    in: { deleted: true, containers: [ctr("exited")], inflight: inflight(CommandKind.ENSURE_REMOVED, { overdueMs: 5 }) },
    phase: Phase.FAILED,
    reason: "RemoveTimeout",
    command: null,
    expire: true,
  },
  {
    name: "check-data past its deadline → Failed/Timeout",
    in: { inflight: inflight(CommandKind.CHECK_DATA, { overdueMs: 5 }) },
    phase: Phase.FAILED,
    reason: "Timeout",
    command: null,
    expire: true,
  },

  // --- 3. a failure since the last operator action ------------------------------------------
  {
    name: "failed after the last action → Failed with its reason, no retry",
    in: { lastActionAt: NOW - 60_000, lastFinished: finished("failed", NOW - 1_000, "ImagePullFailed", "pull access denied for nope") },
    phase: Phase.FAILED,
    reason: "ImagePullFailed",
    message: "pull access denied for nope",
    command: null,
  },
  {
    name: "failed command issued in the same millisecond as the action → the failure stands",
    in: { lastActionAt: NOW - 5_000, lastFinished: finished("failed", NOW - 5_000, "PortConflict", "port 25565 is taken") },
    phase: Phase.FAILED,
    reason: "PortConflict",
    command: null,
  },
  {
    name: "failed without a reason → Failed/CommandFailed",
    in: { lastFinished: finished("failed", NOW - 1_000) },
    phase: Phase.FAILED,
    reason: "CommandFailed",
    command: null,
  },
  {
    name: "expired without a reason → Failed with the kind's timeout reason",
    in: { desired: DesiredState.STOPPED, containers: [ctr("running")], lastFinished: finished("expired", NOW - 1_000, "", "", CommandKind.ENSURE_STOPPED) },
    phase: Phase.FAILED,
    reason: "StopTimeout",
    command: null,
  },
  {
    name: "expired as the reconciler records it (reason DeadlineExceeded) → still the kind's timeout reason",
    in: { lastFinished: finished("expired", NOW - 1_000, "DeadlineExceeded", "ensure-running did not finish within 180s") },
    phase: Phase.FAILED,
    reason: "StartTimeout",
    message: "ensure-running did not finish within 180s",
    command: null,
  },
  {
    name: "failed before the operator acted again → retried",
    in: { lastActionAt: NOW - 1_000, lastFinished: finished("failed", NOW - 2_000, "ImagePullFailed") },
    phase: Phase.CREATING,
    reason: "Creating",
    command: run(CommandKind.ENSURE_RUNNING, DataPolicy.CREATE),
  },
  {
    name: "expired before the operator acted again → retried",
    in: { lastActionAt: NOW - 1_000, containers: [ctr("exited")], lastFinished: finished("expired", NOW - 200_000, "DeadlineExceeded") },
    phase: Phase.STARTING,
    reason: "Starting",
    command: run(CommandKind.ENSURE_RUNNING, DataPolicy.CREATE),
  },
  {
    name: "succeeded after the last action → no failure",
    in: { containers: [ctr("running")], lastFinished: finished("succeeded", NOW - 1_000) },
    phase: Phase.RUNNING,
    reason: "Running",
    command: null,
  },

  // --- 4. soft-deleted ------------------------------------------------------------------------
  {
    name: "deleted with a container → remove it",
    in: { deleted: true, containers: [ctr("running")], dataInitialized: true, data: { present: true } },
    phase: Phase.DELETED,
    reason: "Removing",
    command: run(CommandKind.ENSURE_REMOVED, DataPolicy.UNSPECIFIED),
  },
  {
    name: "deleted, its removal failed (Docker unreachable) a moment ago → Deleted with the reason, tried again later",
    in: { deleted: true, containers: [ctr("exited")], lastFinished: finished("failed", NOW - 1_000, "DockerUnreachable", "the Docker engine is unreachable", CommandKind.ENSURE_REMOVED) },
    phase: Phase.DELETED,
    reason: "DockerUnreachable",
    message: "removing the container failed (the Docker engine is unreachable); trying again at",
    command: null,
    requeueAfterMs: REMOVE_RETRY_MS - 1_000,
  },
  {
    name: "deleted, its removal failed longer ago than the retry interval → removed again (never Failed with the container left)",
    in: { deleted: true, containers: [ctr("exited")], lastFinished: finished("failed", NOW - REMOVE_RETRY_MS, "DockerUnreachable", "", CommandKind.ENSURE_REMOVED) },
    phase: Phase.DELETED,
    reason: "Removing",
    command: run(CommandKind.ENSURE_REMOVED, DataPolicy.UNSPECIFIED),
  },
  {
    name: "purging, its container's removal timed out → tried again after the interval",
    in: { deleted: true, lifecycle: { purge: { requestedAt: NOW - 60_000, removeData: true } }, containers: [ctr("running")], lastFinished: finished("expired", NOW - REMOVE_RETRY_MS - 1, "DeadlineExceeded", "", CommandKind.ENSURE_REMOVED) },
    phase: Phase.PURGING,
    reason: "RemovingContainer",
    command: run(CommandKind.ENSURE_REMOVED, DataPolicy.UNSPECIFIED),
  },
  {
    name: "deleted, its removal failed and the container has gone since → Deleted",
    in: { deleted: true, lastFinished: finished("failed", NOW - 1_000, "DockerUnreachable", "", CommandKind.ENSURE_REMOVED) },
    phase: Phase.DELETED,
    reason: "Deleted",
    command: null,
    requeueAfterMs: DELETED_AT + RETENTION_MS - NOW,
  },
  {
    name: "deleted with only a container of an older spec → still removed",
    in: { deleted: true, containers: [ctr("exited", { hash: OLD_HASH })] },
    phase: Phase.DELETED,
    reason: "Removing",
    command: run(CommandKind.ENSURE_REMOVED, DataPolicy.UNSPECIFIED),
  },
  {
    name: "deleted without a container → Deleted, nothing to do until retention ends",
    in: { deleted: true, dataInitialized: true, data: { present: true } },
    phase: Phase.DELETED,
    reason: "Deleted",
    command: null,
    requeueAfterMs: DELETED_AT + RETENTION_MS - NOW,
  },
  {
    name: "deleted, removal failed since → Deleted with its reason, tried again after REMOVE_RETRY_MS (no hot retry loop)",
    in: { deleted: true, containers: [ctr("exited")], lastFinished: finished("failed", NOW - 1, "RemoveFailed", "", CommandKind.ENSURE_REMOVED) },
    phase: Phase.DELETED,
    reason: "RemoveFailed",
    command: null,
    requeueAfterMs: REMOVE_RETRY_MS - 1,
  },
  {
    name: "deleted and data gone → Deleted, not DataLost",
    in: { deleted: true, dataInitialized: true, data: { present: false } },
    phase: Phase.DELETED,
    reason: "Deleted",
    command: null,
    requeueAfterMs: DELETED_AT + RETENTION_MS - NOW,
  },
  {
    name: "deleted, retention over → drop the record",
    in: { deleted: true, now: DELETED_AT + RETENTION_MS },
    phase: Phase.DELETED,
    reason: "RetentionExpired",
    command: null,
    deleteRecord: true,
  },
  {
    name: "deleted, retention over but the container is still there → remove it first",
    in: { deleted: true, now: DELETED_AT + RETENTION_MS + 1, containers: [ctr("exited")] },
    phase: Phase.DELETED,
    reason: "Removing",
    command: run(CommandKind.ENSURE_REMOVED, DataPolicy.UNSPECIFIED),
  },

  // --- purge ------------------------------------------------------------------------------------
  {
    name: "purge with a container → remove it",
    in: { deleted: true, lifecycle: { purge: { requestedAt: NOW - 10, removeData: true } }, containers: [ctr("running")], data: { present: true } },
    phase: Phase.PURGING,
    reason: "RemovingContainer",
    command: run(CommandKind.ENSURE_REMOVED, DataPolicy.UNSPECIFIED),
  },
  {
    name: "purge with remove_data, container gone, data present → remove the data",
    in: { deleted: true, lifecycle: { purge: { requestedAt: NOW - 10, removeData: true } }, data: { present: true } },
    phase: Phase.PURGING,
    reason: "RemovingData",
    command: run(CommandKind.REMOVE_DATA, DataPolicy.UNSPECIFIED),
  },
  {
    name: "purge with remove_data, data never checked → remove the data (idempotent)",
    in: { deleted: true, lifecycle: { purge: { requestedAt: NOW - 10, removeData: true } } },
    phase: Phase.PURGING,
    reason: "RemovingData",
    command: run(CommandKind.REMOVE_DATA, DataPolicy.UNSPECIFIED),
  },
  {
    name: "purge with remove_data, data gone → drop the record",
    in: { deleted: true, lifecycle: { purge: { requestedAt: NOW - 10, removeData: true } }, data: { present: false } },
    phase: Phase.PURGING,
    reason: "Purged",
    command: null,
    deleteRecord: true,
  },
  {
    name: "purge keeping data, container gone → drop the record, data untouched",
    in: { deleted: true, lifecycle: { purge: { requestedAt: NOW - 10, removeData: false } }, data: { present: true } },
    phase: Phase.PURGING,
    reason: "Purged",
    command: null,
    deleteRecord: true,
  },
  {
    name: "purge while the host is offline → Purging/HostOffline, nothing sent",
    in: { deleted: true, hostConnected: false, lifecycle: { purge: { requestedAt: NOW - 10, removeData: true } }, containers: [ctr("running")] },
    phase: Phase.PURGING,
    reason: "HostOffline",
    command: null,
  },
  {
    name: "purge with a command in flight → Purging",
    in: { deleted: true, lifecycle: { purge: { requestedAt: NOW - 10, removeData: true } }, inflight: inflight(CommandKind.REMOVE_DATA, { remainingMs: 11 }) },
    phase: Phase.PURGING,
    reason: "Purging",
    command: null,
    requeueAfterMs: 11,
  },

  // --- data ---------------------------------------------------------------------------------
  {
    name: "data initialized and now absent → DataLost, no command",
    in: { dataInitialized: true, data: { present: false } },
    phase: Phase.DATA_LOST,
    reason: "DataDirectoryMissing",
    command: null,
    conditions: { DataPresent: ["False", "Missing"], ContainerExists: "False" },
  },
  {
    name: "data lost while the container still runs → DataLost",
    in: { dataInitialized: true, data: { present: false }, containers: [ctr("running")] },
    phase: Phase.DATA_LOST,
    reason: "DataDirectoryMissing",
    command: null,
  },
  {
    // Found by the chaos campaign: a start racing a data-directory deletion fails with DataMissing;
    // the loss must still show (data.lost event, data_lost alert), not hide behind the failure.
    name: "data lost and a failure since the last action → DataLost, not Failed",
    in: { dataInitialized: true, data: { present: false }, containers: [ctr("exited", { finishedAt: NOW - 5_000 })], lastFinished: finished("failed", NOW - 1_000, "DataMissing", "data directory … is missing") },
    phase: Phase.DATA_LOST,
    reason: "DataDirectoryMissing",
    command: null,
  },
  {
    name: "data lost while a purge's container removal failed, the container gone since → the purge goes on (not DataLost)",
    in: { deleted: true, dataInitialized: true, data: { present: false }, lifecycle: { purge: { requestedAt: NOW - 60_000, removeData: false } }, lastFinished: finished("failed", NOW - 1_000, "RemoveFailed", "", CommandKind.ENSURE_REMOVED) },
    phase: Phase.PURGING,
    reason: "Purged",
    command: null,
    deleteRecord: true,
  },
  {
    name: "data initialized, not checked since → not DataLost",
    in: { dataInitialized: true, data: undefined, containers: [ctr("running")] },
    phase: Phase.RUNNING,
    reason: "Running",
    command: null,
    conditions: { DataPresent: ["Unknown", "NotChecked"] },
  },

  // --- 5. no container ----------------------------------------------------------------------
  {
    name: "new server, desired running → ensure-running creating the data dir",
    in: {},
    phase: Phase.CREATING,
    reason: "Creating",
    command: run(CommandKind.ENSURE_RUNNING, DataPolicy.CREATE),
    conditions: { HostConnected: "True", ContainerExists: ["False", "NotFound"], ContainerRunning: ["False", "NoContainer"], SpecApplied: ["False", "NoContainer"], Ready: ["False", "NotRunning"] },
    observedGeneration: 0,
  },
  {
    name: "new server, data reported absent (never created) → ensure-running with CREATE",
    in: { data: { present: false } },
    phase: Phase.CREATING,
    reason: "Creating",
    command: run(CommandKind.ENSURE_RUNNING, DataPolicy.CREATE),
    conditions: { DataPresent: ["False", "NotCreated"] },
  },
  {
    name: "initialized server, container gone, desired running → recreate requiring the data",
    in: { dataInitialized: true, data: { present: true } },
    phase: Phase.CREATING,
    reason: "Creating",
    command: run(CommandKind.ENSURE_RUNNING, DataPolicy.REQUIRE),
    conditions: { DataPresent: "True" },
  },
  {
    name: "new server, desired stopped → ensure-container only",
    in: { desired: DesiredState.STOPPED },
    phase: Phase.CREATING,
    reason: "Creating",
    command: run(CommandKind.ENSURE_CONTAINER, DataPolicy.CREATE),
  },
  {
    name: "initialized server, container gone, desired stopped → Missing, no command",
    in: { desired: DesiredState.STOPPED, dataInitialized: true, data: { present: true } },
    phase: Phase.MISSING,
    reason: "ContainerMissing",
    command: null,
  },
  {
    name: "new server, desired paused → ensure-running first",
    in: { desired: DesiredState.PAUSED },
    phase: Phase.CREATING,
    reason: "Creating",
    command: run(CommandKind.ENSURE_RUNNING, DataPolicy.CREATE),
  },

  // --- 6. a container exists ------------------------------------------------------------------
  {
    name: "running, current spec → Running, Ready, SpecApplied",
    in: { containers: [ctr("running", { generation: "3" })], dataInitialized: true, data: { present: true } },
    phase: Phase.RUNNING,
    reason: "Running",
    command: null,
    conditions: {
      HostConnected: ["True", "Connected"],
      ContainerExists: ["True", "Found"],
      ContainerRunning: ["True", "Running"],
      DataPresent: ["True", "Present"],
      SpecApplied: ["True", "Applied"],
      Ready: ["True", "Running"],
    },
    observedGeneration: 3,
  },
  {
    name: "running an older spec → still Running, SpecApplied False/PendingRestart, no command",
    in: { containers: [ctr("running", { hash: OLD_HASH })] },
    phase: Phase.RUNNING,
    reason: "Running",
    command: null,
    conditions: { SpecApplied: ["False", "PendingRestart"], Ready: ["False", "PendingRestart"], ContainerRunning: "True" },
  },
  {
    name: "exited, desired running → ensure-running (Starting)",
    in: { containers: [ctr("exited", { exitCode: 1 })], dataInitialized: true, data: { present: true } },
    phase: Phase.STARTING,
    reason: "Starting",
    command: run(CommandKind.ENSURE_RUNNING, DataPolicy.REQUIRE),
    conditions: { ContainerRunning: ["False", "Exited"], Ready: ["False", "NotRunning"], SpecApplied: "True" },
  },
  {
    name: "created (never started), desired running, data not yet initialized → ensure-running with CREATE",
    in: { containers: [ctr("created")] },
    phase: Phase.STARTING,
    reason: "Starting",
    command: run(CommandKind.ENSURE_RUNNING, DataPolicy.CREATE),
  },
  {
    name: "paused, desired running → ensure-running (resume)",
    in: { containers: [ctr("paused")], dataInitialized: true, data: { present: true } },
    phase: Phase.STARTING,
    reason: "Resuming",
    command: run(CommandKind.ENSURE_RUNNING, DataPolicy.REQUIRE),
  },
  {
    name: "running, desired stopped → ensure-stopped",
    in: { desired: DesiredState.STOPPED, containers: [ctr("running")] },
    phase: Phase.STOPPING,
    reason: "Stopping",
    command: run(CommandKind.ENSURE_STOPPED, DataPolicy.UNSPECIFIED),
  },
  {
    name: "paused, desired stopped → ensure-stopped",
    in: { desired: DesiredState.STOPPED, containers: [ctr("paused")] },
    phase: Phase.STOPPING,
    reason: "Stopping",
    command: run(CommandKind.ENSURE_STOPPED, DataPolicy.UNSPECIFIED),
  },
  {
    name: "restarting, desired stopped → ensure-stopped",
    in: { desired: DesiredState.STOPPED, containers: [ctr("restarting")] },
    phase: Phase.STOPPING,
    reason: "Stopping",
    command: run(CommandKind.ENSURE_STOPPED, DataPolicy.UNSPECIFIED),
  },
  {
    name: "exited, desired stopped → Stopped with the exit code",
    in: { desired: DesiredState.STOPPED, containers: [ctr("exited", { exitCode: 137 })], dataInitialized: true, data: { present: true } },
    phase: Phase.STOPPED,
    reason: "Stopped",
    message: "exited with code 137",
    command: null,
    conditions: { ContainerRunning: ["False", "Exited"], Ready: "False", ContainerExists: "True" },
  },
  {
    name: "exited out of memory (no limit), desired stopped → says so",
    in: { desired: DesiredState.STOPPED, containers: [ctr("exited", { exitCode: 137, oomKilled: true })] },
    phase: Phase.STOPPED,
    reason: "Stopped",
    message: "killed by the kernel for want of memory: the host ran out (exit code 137; the server has no memory limit)",
    command: null,
  },
  {
    name: "created, desired stopped → Stopped",
    in: { desired: DesiredState.STOPPED, containers: [ctr("created")] },
    phase: Phase.STOPPED,
    reason: "Stopped",
    message: "container is created",
    command: null,
  },
  {
    name: "running, desired paused → ensure-paused",
    in: { desired: DesiredState.PAUSED, containers: [ctr("running")] },
    phase: Phase.STOPPING,
    reason: "Pausing",
    command: run(CommandKind.ENSURE_PAUSED, DataPolicy.UNSPECIFIED),
  },
  {
    name: "paused, desired paused → Paused",
    in: { desired: DesiredState.PAUSED, containers: [ctr("paused")] },
    phase: Phase.PAUSED,
    reason: "Paused",
    command: null,
    conditions: { ContainerRunning: ["False", "Paused"] },
  },
  {
    name: "exited, desired paused → ensure-running first",
    in: { desired: DesiredState.PAUSED, containers: [ctr("exited")], dataInitialized: true, data: { present: true } },
    phase: Phase.STARTING,
    reason: "Starting",
    command: run(CommandKind.ENSURE_RUNNING, DataPolicy.REQUIRE),
  },

  // --- operator lifecycle requests -----------------------------------------------------------
  {
    name: "initialized, container removed outside berth since the last action → Missing, not recreated",
    in: { dataInitialized: true, data: { present: true }, lastActionAt: NOW - 60_000, lifecycle: { containerLostAt: NOW - 1_000 } },
    phase: Phase.MISSING,
    reason: "ContainerMissing",
    command: null,
  },
  {
    name: "container lost, then the operator started it → recreated",
    in: { dataInitialized: true, data: { present: true }, lastActionAt: NOW - 500, lifecycle: { containerLostAt: NOW - 1_000 } },
    phase: Phase.CREATING,
    reason: "Creating",
    command: run(CommandKind.ENSURE_RUNNING, DataPolicy.REQUIRE),
  },
  {
    name: "rebuild requested after the container was created → recreate, keeping data",
    in: { containers: [ctr("running", { createdAt: NOW - 10_000 })], dataInitialized: true, data: { present: true }, lifecycle: { rebuildRequestedAt: NOW - 5_000 } },
    phase: Phase.CREATING,
    reason: "Rebuilding",
    command: run(CommandKind.ENSURE_RUNNING, DataPolicy.REQUIRE, true),
  },
  {
    name: "rebuild of a stopped server → recreate without starting",
    in: { desired: DS.STOPPED, containers: [ctr("exited", { createdAt: NOW - 10_000 })], lifecycle: { rebuildRequestedAt: NOW - 5_000 } },
    phase: Phase.CREATING,
    reason: "Rebuilding",
    command: run(CommandKind.ENSURE_CONTAINER, DataPolicy.CREATE, true),
  },
  {
    name: "rebuild already done (a recreating command succeeded after the request) → Running",
    in: { containers: [ctr("running", { createdAt: NOW - 1_000 })], lifecycle: { rebuildRequestedAt: NOW - 5_000, rebuildDoneAt: NOW - 4_000 } },
    phase: Phase.RUNNING,
    reason: "Running",
    command: null,
  },
  {
    name: "restart requested after the container started → restart",
    in: { containers: [ctr("running", { startedAt: NOW - 10_000 })], dataInitialized: true, data: { present: true }, lifecycle: { restartRequestedAt: NOW - 5_000 } },
    phase: Phase.STOPPING,
    reason: "Restarting",
    command: run(CommandKind.RESTART, DataPolicy.REQUIRE),
  },
  {
    name: "restart already done (a start or restart succeeded after the request) → Running",
    in: { containers: [ctr("running", { startedAt: NOW - 1_000 })], lifecycle: { restartRequestedAt: NOW - 5_000, restartDoneAt: NOW - 4_000 } },
    phase: Phase.RUNNING,
    reason: "Running",
    command: null,
  },
  {
    name: "restart past its deadline → Failed/RestartTimeout",
    in: { containers: [ctr("running")], inflight: inflight(CommandKind.RESTART, { overdueMs: 1 }) },
    phase: Phase.FAILED,
    reason: "RestartTimeout",
    command: null,
    expire: true,
  },

  // --- stopped outside berth -----------------------------------------------------------------------
  {
    name: "stopped outside berth and adopted, no action since → Stopped/StoppedOutsideBerth, nothing issued",
    in: { desired: DesiredState.STOPPED, containers: [ctr("exited", { exitCode: 137 })], lifecycle: { lastExit: { cause: "stopped_externally", at: NOW - 5_000, exitCode: 137 } } },
    phase: Phase.STOPPED,
    reason: "StoppedOutsideBerth",
    message: "stopped outside berth (docker stop or kill; exited with code 137); start it to run it again",
    command: null,
  },
  {
    name: "stopped outside berth, then stopped again by an operator → plain Stopped",
    in: {
      desired: DesiredState.STOPPED,
      containers: [ctr("exited", { exitCode: 137 })],
      lifecycle: { lastExit: { cause: "stopped_externally", at: NOW - 120_000, exitCode: 137 } },
      lastActionAt: NOW - 60_000,
    },
    phase: Phase.STOPPED,
    reason: "Stopped",
    command: null,
  },
  {
    name: "stopped by berth → plain Stopped",
    in: { desired: DesiredState.STOPPED, containers: [ctr("exited", { exitCode: 0 })], lifecycle: { lastExit: { cause: "stopped_by_berth", at: NOW - 5_000, exitCode: 0 } } },
    phase: Phase.STOPPED,
    reason: "Stopped",
    command: null,
  },

  // --- crashes ----------------------------------------------------------------------------------
  {
    name: "crashed, policy never → Failed/Crashed, not restarted",
    in: { restartPolicy: RestartPolicy.NEVER, containers: [ctr("exited", { exitCode: 2 })], lifecycle: { lastExit: { cause: "crash", at: NOW - 1_000, exitCode: 2 }, crashTimes: [NOW - 1_000] } },
    phase: Phase.FAILED,
    reason: "Crashed",
    message: "exited with code 2; restart policy is never",
    command: null,
  },
  {
    name: "first crash, within the backoff → Starting/CrashBackoff, requeued for the rest of it",
    in: { containers: [ctr("exited", { exitCode: 1 })], lifecycle: { lastExit: { cause: "crash", at: NOW - 4_000, exitCode: 1 }, crashTimes: [NOW - 4_000] } },
    phase: Phase.STARTING,
    reason: "CrashBackoff",
    command: null,
    requeueAfterMs: crashBackoffMs(1) - 4_000,
  },
  {
    name: "first crash, backoff over → restarted",
    in: { containers: [ctr("exited", { exitCode: 1 })], lifecycle: { lastExit: { cause: "crash", at: NOW - crashBackoffMs(1), exitCode: 1 }, crashTimes: [NOW - crashBackoffMs(1)] } },
    phase: Phase.STARTING,
    reason: "RestartingAfterCrash",
    command: run(CommandKind.ENSURE_RUNNING, DataPolicy.CREATE),
  },
  {
    name: "third crash waits longer than the first",
    in: {
      lastActionAt: NOW - 3_600_000,
      containers: [ctr("exited", { exitCode: 1 })],
      lifecycle: { lastExit: { cause: "crash", at: NOW - crashBackoffMs(1), exitCode: 1 }, crashTimes: [NOW - 120_000, NOW - 60_000, NOW - crashBackoffMs(1)] },
    },
    phase: Phase.STARTING,
    reason: "CrashBackoff",
    command: null,
    requeueAfterMs: crashBackoffMs(3) - crashBackoffMs(1),
  },
  {
    name: `${CRASH_LOOP_THRESHOLD} crashes in 10 minutes → Failed/CrashLoop`,
    in: {
      lastActionAt: NOW - 3_600_000,
      containers: [ctr("exited", { exitCode: 1 })],
      lifecycle: { lastExit: { cause: "crash", at: NOW - 1_000, exitCode: 1 }, crashTimes: Array.from({ length: CRASH_LOOP_THRESHOLD }, (_, i) => NOW - 1_000 - i * 60_000) },
    },
    phase: Phase.FAILED,
    reason: "CrashLoop",
    command: null,
  },
  {
    name: "old crashes outside the 10-minute window do not count",
    in: {
      lastActionAt: NOW - 3_600_000,
      containers: [ctr("exited", { exitCode: 1 })],
      lifecycle: { lastExit: { cause: "crash", at: NOW - 600_000, exitCode: 1 }, crashTimes: Array.from({ length: CRASH_LOOP_THRESHOLD }, (_, i) => NOW - 600_000 - i * 60_000) },
    },
    phase: Phase.STARTING,
    reason: "RestartingAfterCrash",
    command: run(CommandKind.ENSURE_RUNNING, DataPolicy.CREATE),
  },
  {
    name: "a crash before the operator's last action is not a crash loop → plain start",
    in: {
      lastActionAt: NOW - 500,
      containers: [ctr("exited", { exitCode: 1 })],
      lifecycle: { lastExit: { cause: "crash", at: NOW - 1_000, exitCode: 1 }, crashTimes: Array.from({ length: CRASH_LOOP_THRESHOLD }, (_, i) => NOW - 1_000 - i * 1_000) },
    },
    phase: Phase.STARTING,
    reason: "Starting",
    command: run(CommandKind.ENSURE_RUNNING, DataPolicy.CREATE),
  },

  // --- several containers ---------------------------------------------------------------------
  {
    name: "two containers: the one with the current hash is chosen even if it is not running",
    in: {
      containers: [
        ctr("running", { id: "old".padEnd(64, "0"), hash: OLD_HASH, generation: "1" }),
        ctr("exited", { id: "new".padEnd(64, "0"), hash: HASH, generation: "2" }),
      ],
    },
    phase: Phase.STARTING,
    reason: "Starting",
    command: run(CommandKind.ENSURE_RUNNING, DataPolicy.CREATE),
    conditions: { ContainerExists: ["True", "Found"], SpecApplied: "True", ContainerRunning: "False" },
    observedGeneration: 2,
  },
  {
    name: "two containers, hash matches the first: it is chosen",
    in: {
      containers: [
        ctr("running", { id: "cur".padEnd(64, "0"), hash: HASH, generation: "4" }),
        ctr("exited", { id: "old".padEnd(64, "0"), hash: OLD_HASH, generation: "3" }),
      ],
    },
    phase: Phase.RUNNING,
    reason: "Running",
    command: null,
    conditions: { SpecApplied: "True", Ready: "True" },
    observedGeneration: 4,
  },
  {
    name: "two containers, neither current: the running one is chosen",
    in: {
      containers: [
        ctr("exited", { id: "aaa".padEnd(64, "0"), hash: "1111111111111111", generation: "1" }),
        ctr("running", { id: "bbb".padEnd(64, "0"), hash: OLD_HASH, generation: "2" }),
      ],
    },
    phase: Phase.RUNNING,
    reason: "Running",
    command: null,
    conditions: { SpecApplied: ["False", "PendingRestart"] },
    observedGeneration: 2,
  },
  // --- exits seen before their cause ---------------------------------------------------------
  {
    name: "an exit seen while desired stopped → Stopped, and recorded as expected",
    in: { desired: DesiredState.STOPPED, containers: [ctr("exited", { exitCode: 143, finishedAt: NOW - 50 })], dataInitialized: true, data: { present: true } },
    phase: Phase.STOPPED,
    reason: "Stopped",
    command: null,
    settledExit: { finishedAt: NOW - 50, exitCode: 143 },
  },
  {
    name: "running → exited without a cause yet → held (ExitObserved), remembered, requeued for the grace",
    in: { containers: [ctr("exited", { exitCode: 143, finishedAt: NOW - 100 })], dataInitialized: true, data: { present: true } },
    phase: Phase.STARTING,
    reason: "ExitObserved",
    command: null,
    pendingExit: { finishedAt: NOW - 100 },
    requeueAfterMs: EXIT_CAUSE_GRACE_MS,
  },
  {
    name: "the same unexplained exit, within the grace → still held",
    in: { containers: [ctr("exited", { finishedAt: NOW - 2_000 })], lifecycle: { pendingExit: { finishedAt: NOW - 2_000, seenAt: NOW - 1_000 } } },
    phase: Phase.STARTING,
    reason: "ExitObserved",
    command: null,
    requeueAfterMs: EXIT_CAUSE_GRACE_MS - 1_000,
  },
  {
    name: "the same unexplained exit past the grace → counted as a crash",
    in: { containers: [ctr("exited", { exitCode: 2, finishedAt: NOW - 9_000 })], lifecycle: { pendingExit: { finishedAt: NOW - 9_000, seenAt: NOW - EXIT_CAUSE_GRACE_MS } } },
    phase: Phase.STARTING,
    reason: "ExitObserved",
    command: null,
    assumeCrash: { finishedAt: NOW - 9_000, exitCode: 2, oomKilled: false },
  },
  {
    name: "an exit the agent explained (same finish time) → handled by its cause (crash backoff)",
    in: {
      containers: [ctr("exited", { exitCode: 3, finishedAt: NOW - 500 })],
      lifecycle: { lastExit: { cause: "crash", at: NOW - 400, exitCode: 3, finishedAt: NOW - 500 }, crashTimes: [NOW - 400] },
    },
    phase: Phase.STARTING,
    reason: "CrashBackoff",
    command: null,
    requeueAfterMs: crashBackoffMs(1) - 400,
  },
  {
    name: "an exit settled while stopped, operator starts it → started at once (no wait)",
    in: {
      containers: [ctr("exited", { finishedAt: NOW - 600_000 })],
      dataInitialized: true,
      data: { present: true },
      lifecycle: { lastExit: { cause: "stopped_by_berth", at: NOW - 500_000, exitCode: 143, finishedAt: NOW - 600_000 } },
    },
    phase: Phase.STARTING,
    reason: "Starting",
    command: run(CommandKind.ENSURE_RUNNING, DataPolicy.REQUIRE),
  },
  {
    name: "an unexplained exit being held, then the operator acts → started at once",
    in: { containers: [ctr("exited", { finishedAt: NOW - 3_000 })], lastActionAt: NOW - 10, lifecycle: { pendingExit: { finishedAt: NOW - 3_000, seenAt: NOW - 2_000 } } },
    phase: Phase.STARTING,
    reason: "Starting",
    command: run(CommandKind.ENSURE_RUNNING, DataPolicy.CREATE),
  },
];

describe("plan()", () => {
  it.each(CASES)("$name", (c) => {
    const p = plan(input(c.in));
    expect(Phase[p.phase]).toBe(Phase[c.phase]);
    expect(p.reason).toBe(c.reason);
    if (c.message !== undefined) expect(p.message).toContain(c.message);
    if (c.command === null) {
      expect(p.command).toBeUndefined();
    } else {
      expect(p.command).toEqual(c.command);
    }
    expect(p.expireInflight ?? false).toBe(c.expire ?? false);
    expect(p.settleInflight ?? false).toBe(c.settle ?? false);
    expect(p.requeueAfterMs).toBe(c.requeueAfterMs);
    expect(p.deleteRecord ?? false).toBe(c.deleteRecord ?? false);
    expect(p.pendingExit).toEqual(c.pendingExit);
    expect(p.assumeCrash).toEqual(c.assumeCrash);
    expect(p.settledExit).toEqual(c.settledExit);
    if (c.observedGeneration !== undefined) expect(p.observedGeneration).toBe(c.observedGeneration);
    for (const [type, want] of Object.entries(c.conditions ?? {}) as [ConditionType, CondWant[ConditionType]][]) {
      const got = p.conditions.find((f) => f.type === type);
      expect(got, `condition ${type}`).toBeDefined();
      const [status, reason] = Array.isArray(want) ? want : [want, undefined];
      expect(got!.status, `${type}.status`).toBe(status);
      if (reason !== undefined) expect(got!.reason, `${type}.reason`).toBe(reason);
    }
  });

  it("SpecApplied names the current generation when the container runs the current spec, not the one it was made at", () => {
    // Made at generation 1; generations 2-5 changed nothing the container holds (the desired state, say).
    const p = plan(input({ containers: [ctr("running", { generation: "1" })], generation: 5 }));
    expect(p.conditions.find((f) => f.type === "SpecApplied")).toMatchObject({ status: "True", message: "the container runs the spec of generation 5" });
  });

  it("a crashing server carries its crash count and next restart (status.crash), in backoff and while restarting", () => {
    const waiting = plan(input({ containers: [ctr("exited", { exitCode: 1 })], lifecycle: { lastExit: { cause: "crash", at: NOW - 4_000, exitCode: 1 }, crashTimes: [NOW - 30_000, NOW - 4_000] } }));
    expect(waiting.reason).toBe("CrashBackoff");
    expect(waiting.crash).toEqual({ recent: 2, limit: CRASH_LOOP_THRESHOLD, nextRestartAt: NOW - 4_000 + crashBackoffMs(2) });
    const restarting = plan(input({ containers: [ctr("exited", { exitCode: 1 })], lifecycle: { lastExit: { cause: "crash", at: NOW - crashBackoffMs(1), exitCode: 1 }, crashTimes: [NOW - crashBackoffMs(1)] } }));
    expect(restarting.reason).toBe("RestartingAfterCrash");
    expect(restarting.crash).toEqual({ recent: 1, limit: CRASH_LOOP_THRESHOLD });
    expect(plan(input({ containers: [ctr("running")] })).crash).toBeUndefined();
    // Running again: the crashes still count until they leave the window, and it is planned again then.
    const again = plan(input({ containers: [ctr("running")], lifecycle: { lastExit: { cause: "crash", at: NOW - 20_000, exitCode: 1 }, crashTimes: [NOW - 30_000, NOW - 20_000] } }));
    expect([again.phase, again.crash]).toEqual([Phase.RUNNING, { recent: 2, limit: CRASH_LOOP_THRESHOLD }]);
    expect(again.requeueAfterMs).toBe(10 * 60_000 - 30_000);
    // Exited again, the engine not yet saying why: the count stays (the alert's warning must not flap).
    const exited = plan(input({ containers: [ctr("exited", { exitCode: 1, finishedAt: NOW - 100 })], lifecycle: { lastExit: { cause: "crash", at: NOW - 20_000, exitCode: 1, finishedAt: NOW - 20_000 }, crashTimes: [NOW - 30_000, NOW - 20_000] } }));
    expect([exited.reason, exited.crash]).toEqual(["ExitObserved", { recent: 2, limit: CRASH_LOOP_THRESHOLD }]);
  });

  it("the table covers every phase plan() can produce", () => {
    const produced = new Set(CASES.map((c) => Phase[c.phase]));
    for (const ph of ["UNKNOWN", "CREATING", "STARTING", "RUNNING", "PAUSED", "STOPPING", "STOPPED", "MISSING", "DATA_LOST", "FAILED", "DELETED", "PURGING", "PENDING"]) {
      expect(produced, ph).toContain(ph);
    }
  });
});

describe("plan() properties, over every table case", () => {
  it.each(CASES)("pure and consistent: $name", (c) => {
    const a = input(c.in);
    const before = structuredClone(a);
    const p1 = plan(a);
    const p2 = plan(input(c.in));
    const p3 = plan(a);
    // Same input, same output; the input is not modified.
    expect(p2).toEqual(p1);
    expect(p3).toEqual(p1);
    expect(a).toEqual(before);
    // Never a new command and an expiry in one plan; never a command while one is in flight.
    expect(p1.command !== undefined && p1.expireInflight === true).toBe(false);
    if (a.inflight) expect(p1.command).toBeUndefined();
    if (!a.inflight) expect(p1.expireInflight).toBeUndefined();
    // An offline host is never reported as stopped (Unknown, or Purging while a purge waits), and no command goes to it.
    if (!a.hostConnected) {
      expect(Phase[p1.phase]).toBe(a.lifecycle.purge ? "PURGING" : "UNKNOWN");
      expect(p1.command).toBeUndefined();
    }
    // Every condition type, once, in display order.
    expect(p1.conditions.map((f) => f.type)).toEqual([...CONDITION_TYPES]);
    // A requeue is only asked for while waiting: on a command, a retention period or a crash backoff.
    if (p1.requeueAfterMs !== undefined) {
      const removalRetry = a.lastFinished?.kind === CommandKind.ENSURE_REMOVED && a.lastFinished.state !== "succeeded";
      expect(a.inflight !== undefined || removalRetry || ["Deleted", "CrashBackoff", "ExitObserved"].includes(p1.reason)).toBe(true);
      expect(p1.requeueAfterMs).toBeGreaterThan(0);
    }
    // Dropping the record never comes with a command, and only for deleted servers.
    if (p1.deleteRecord) {
      expect(p1.command).toBeUndefined();
      expect(a.deleted).toBe(true);
    }
    expect(p1.reason).toMatch(/^[A-Z][A-Za-z]*$/);
  });

  it("moving time alone (no deadline, backoff or retention passing) changes nothing but the requeue delay", () => {
    const removalRetry = (x: Case) => x.in.lastFinished?.kind === CommandKind.ENSURE_REMOVED && x.in.lastFinished.state !== "succeeded";
    const timeless = CASES.filter((x) => !x.in.inflight && x.in.now === undefined && !x.in.lifecycle?.lastExit && !x.in.lifecycle?.pendingExit && !removalRetry(x));
    expect(timeless.length).toBeGreaterThan(40);
    for (const c of timeless) {
      const { requeueAfterMs: _r1, ...p1 } = plan(input(c.in));
      const { requeueAfterMs: _r2, ...p2 } = plan({ ...input(c.in), now: NOW + 3_600_000 });
      expect(p2, c.name).toEqual(p1);
    }
  });
});

describe("plan(): no command repeated right after its success without a newer observation", () => {
  const removedAt = NOW - 100;
  const deletedWithStaleContainer = (o: Over = {}): PlanInput =>
    input({
      deleted: true,
      containers: [ctr("exited", { finishedAt: NOW - 5_000 })],
      lastFinished: { ...finished("succeeded", removedAt - 50, "", "", CommandKind.ENSURE_REMOVED), finishedAt: removedAt },
      lastActionAt: NOW - 60_000,
      observedAt: removedAt - 200,
      ...o,
    });

  it("holds ensure-removed while the only observation of the container predates its success", () => {
    const p = plan(deletedWithStaleContainer());
    expect(p.command).toBeUndefined();
    expect(p.phase).toBe(Phase.DELETED);
    expect(p.reason).toBe("Removing");
    expect(p.requeueAfterMs).toBe(REPEAT_HOLD_MS - 100);
  });

  it.each([
    ["the container was observed after the success", { observedAt: removedAt + 1 }],
    ["the operator acted after the success", { lastActionAt: removedAt + 1 }],
    ["the hold ran out (at most one repeat per hold)", { now: removedAt + REPEAT_HOLD_MS }],
  ])("repeats it when %s", (_name, o: Over) => {
    expect(plan(deletedWithStaleContainer(o)).command?.kind).toBe(CommandKind.ENSURE_REMOVED);
  });

  it("a different command, or a failed one, is never held", () => {
    const stop = plan(deletedWithStaleContainer({ lastFinished: { ...finished("succeeded", removedAt, "", "", CommandKind.ENSURE_STOPPED), finishedAt: removedAt } }));
    expect(stop.command?.kind).toBe(CommandKind.ENSURE_REMOVED);
  });

  it("a crash after a successful start restarts per policy (the exit is the newer change)", () => {
    const startedAt = NOW - 30_000;
    const p = plan(
      input({
        containers: [ctr("exited", { exitCode: 1, finishedAt: NOW - 20_000 })],
        lifecycle: { lastExit: { cause: "crash", at: NOW - 20_000, exitCode: 1, finishedAt: NOW - 20_000 }, crashTimes: [NOW - 20_000] },
        lastFinished: { ...finished("succeeded", startedAt), finishedAt: startedAt },
        observedAt: startedAt,
      }),
    );
    expect(p.command?.kind).toBe(CommandKind.ENSURE_RUNNING);
    expect(p.reason).toBe("RestartingAfterCrash");
  });

  it("ensure-running that succeeded while the picture still shows the container stopped: held, then repeated once", () => {
    const startedAt = NOW - 1_000;
    const stale = input({
      containers: [ctr("created")],
      lastFinished: { ...finished("succeeded", startedAt - 500), finishedAt: startedAt },
      observedAt: startedAt,
    });
    expect(plan(stale).command).toBeUndefined();
    expect(plan({ ...stale, now: startedAt + REPEAT_HOLD_MS }).command?.kind).toBe(CommandKind.ENSURE_RUNNING);
  });
});
