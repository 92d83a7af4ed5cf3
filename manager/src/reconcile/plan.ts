/**
 * plan(): the reconciler's decisions, as a pure function of what the server
 * should be (spec), what the host reports (observed) and what is in flight.
 * No I/O: everything it needs is in PlanInput, everything it decides is in Plan.
 *
 *                     create
 *                       │
 *                       ▼
 *   ┌──────────── Pending/Creating ───────────┐
 *   │ desired running        desired stopped  │
 *   ▼                                         ▼
 * Starting ──► Running ◄──► Paused         Stopped
 *   ▲            │  ▲                       │  ▲
 *   │   Stopping ◄┘  └──────── Starting ◄───┘  │
 *   │      └──────────────► Stopped ───────────┘
 *   │
 *   └── Missing (container gone, data present) ── Start recreates it
 *
 *   any ──► Unknown   (host offline; never shown as Stopped)
 *   any ──► Failed    (operation failed or passed its deadline; Start/Rebuild retry)
 *   any ──► DataLost  (data directory gone for a server that had data)
 *   any ──► Deleted   (soft delete: container removed, data and record kept)
 *
 *   A spec with a ready_pattern stays Starting (WaitingForReady) while its
 *   container runs until a line of its output matches; ReadyTimeout after
 *   10 minutes without one (it keeps running). A restart waits again.
 */
import { CommandKind, DataPolicy, type ContainerInfo } from "@berth/proto/berth/v1/agent_pb.js";
import { DesiredState, Phase, RestartPolicy, type ResourceLimits, type ServerSpec } from "@berth/proto/berth/v1/server_pb.js";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { DataOp, InstallRecord, Lifecycle } from "../domain/records.js";
import { formatBytes, limitsDiff, limitsKey, oomMessage } from "../domain/limits.js";
import type { ConditionFact } from "./conditions.js";

/** How long after a failed removal of a deleted or purged server's container it is tried again. */
export const REMOVE_RETRY_MS = 10_000;

/** Deadlines per command kind: past them, the operation has failed. */
export const COMMAND_DEADLINE_MS: Record<CommandKind, number> = {
  [CommandKind.UNSPECIFIED]: 30_000,
  [CommandKind.ENSURE_CONTAINER]: 180_000,
  [CommandKind.ENSURE_RUNNING]: 180_000,
  [CommandKind.ENSURE_STOPPED]: 60_000,
  [CommandKind.ENSURE_PAUSED]: 30_000,
  [CommandKind.ENSURE_REMOVED]: 60_000,
  [CommandKind.REMOVE_DATA]: 120_000,
  [CommandKind.CHECK_DATA]: 30_000,
  [CommandKind.RESTART]: 240_000,
  // OrphanService's commands (orphans/): only COPY_DATA is ever a server's in-flight command.
  [CommandKind.REMOVE_CONTAINER]: 60_000,
  [CommandKind.INSPECT_CONTAINER]: 30_000,
  [CommandKind.REMOVE_STRAY_DATA]: 120_000,
  [CommandKind.COPY_DATA]: 3_600_000,
  [CommandKind.REMOVE_NETWORK]: 30_000,
  // A backup or restore carries its own deadline (DataOp.deadlineAt); this is the fallback.
  [CommandKind.BACKUP_DATA]: 6 * 3_600_000,
  [CommandKind.RESTORE_DATA]: 6 * 3_600_000,
  [CommandKind.REMOVE_BACKUP]: 120_000,
  // SendConsoleCommand's: never a server's in-flight command.
  [CommandKind.CONSOLE_INPUT]: 10_000,
  [CommandKind.DISCARD_PREVIOUS_DATA]: 600_000,
  // The install carries its own deadline (its timeout plus INSTALL_DEADLINE_MARGIN_MS); this is the fallback.
  [CommandKind.RUN_INSTALL]: 1_200_000,
};

/**
 * Commands about a server's data that are not its container's state: their
 * failure is the backup's or restore's (recorded there and in the ledger),
 * never a failure of the server, which goes back to its desired state.
 */
export const DATA_COMMAND_KINDS: ReadonlySet<CommandKind> = new Set([CommandKind.BACKUP_DATA, CommandKind.RESTORE_DATA, CommandKind.DISCARD_PREVIOUS_DATA]);

export interface InflightCommand {
  id: string;
  kind: CommandKind;
  createdAt: number;
  deadlineAt: number;
}

export interface FinishedCommand {
  kind: CommandKind;
  state: "succeeded" | "failed" | "expired";
  reason: string;
  message: string;
  createdAt: number;
  /** When its result came in (manager clock). */
  finishedAt: number;
}

export interface PlanInput {
  now: number;
  spec: ServerSpec;
  generation: number;
  specHash: string;
  /**
   * The project's network on the host (ContainerSpec.network). A running
   * container on any other network (made before project networks) is moved
   * onto it live. Absent: not checked.
   */
  network?: string;
  /**
   * The limits the container should have (domain/limits.ts effectiveLimits).
   * A container whose spec hash matches but whose limits Docker holds
   * otherwise gets them live. Absent: not checked.
   */
  limits?: ResourceLimits;
  deleted: boolean;
  deletedAt: number | null;
  /** How long a soft-deleted record is kept. */
  retentionMs: number;
  lifecycle: Lifecycle;
  /** First crash-restart delay (default 10 s); doubles per recent crash, capped at 30x. */
  crashBackoffBaseMs?: number;
  /** The data directory has been seen at least once: its absence now means data loss. */
  dataInitialized: boolean;
  /** When the operator last asked for something (create, start, stop, ...). */
  lastActionAt: number;
  hostConnected: boolean;
  /** Manager clock: since when the host has been away (its last heartbeat); only read during a transfer. */
  hostOfflineSince?: number;
  /** How long a transfer's target may be away before the transfer fails (default TRANSFER_OFFLINE_GRACE_MS). */
  transferOfflineGraceMs?: number;
  /** This server's containers on its host, as last reported (normally 0 or 1). */
  containers: readonly ContainerInfo[];
  /** The data directory as last reported; undefined if never checked. */
  data: { present: boolean; sizeBytes?: number } | undefined;
  /**
   * When the newest observation of this server was stored (its containers,
   * its data directory; manager clock), 0 if none: a command may be repeated
   * only after something newer than its own success was seen.
   */
  observedAt: number;
  inflight: InflightCommand | undefined;
  lastFinished: FinishedCommand | undefined;
}

export interface PlannedCommand {
  kind: CommandKind;
  dataPolicy: DataPolicy;
  /** Replace the container even if it runs the current spec (rebuild). */
  recreate?: boolean;
}

export interface Plan {
  phase: Phase;
  reason: string;
  message: string;
  conditions: ConditionFact[];
  /** The generation the observed container runs (0 if none). */
  observedGeneration: number;
  /** A new command to issue (only when nothing is in flight). */
  command?: PlannedCommand;
  /** The in-flight command has passed its deadline and must be marked expired. */
  expireInflight?: boolean;
  /**
   * The in-flight command has passed its deadline, but what it was to achieve
   * is observed on the host (its result was lost or late, e.g. across a manager
   * restart): mark it succeeded, not expired, and plan again.
   */
  settleInflight?: boolean;
  /** Reconcile again after this long even if nothing else happens (deadlines). */
  requeueAfterMs?: number;
  /** Drop the server's record (purge finished, or soft-delete retention ended). */
  deleteRecord?: boolean;
  /** Remember this exit as seen but unexplained (the reconciler stamps the time). */
  pendingExit?: { finishedAt: number };
  /** The exit stayed unexplained past the grace: record it as a crash. */
  assumeCrash?: { finishedAt: number; exitCode: number; oomKilled: boolean };
  /** An exit seen while the server should be stopped: record it as expected. */
  settledExit?: { finishedAt: number; exitCode: number };
  /** The backup or restore under way ends in failure (no command of it is in flight). */
  failDataOp?: { reason: string; message: string };
  /** What status.operation shows of the backup or restore under way: its stage now. */
  dataStage?: string;
  /** The transfer under way is done: the server is in its desired state on its new host. */
  finishDataOp?: boolean;
  /** A crashing server being restarted per policy: status.crash (crashes towards a loop, the next restart). */
  crash?: { recent: number; limit: number; nextRestartAt?: number };
  /**
   * The server is deleted or purged while its install script runs: the
   * reconciler removes the install container (the agent's RUN_INSTALL then
   * ends, InstallCancelled), after which the removal goes on as usual.
   */
  cancelInstall?: boolean;
  /** The command applies these limits to this container live: remember it (Lifecycle.limitsAttempt). */
  limitsAttempt?: { containerId: string; key: string };
}

/** How long a transfer's target host may be away before the transfer fails and the server goes back to its source. */
export const TRANSFER_OFFLINE_GRACE_MS = 20_000;

const GENERATION_LABEL = "berth.generation";
const HASH_LABEL = "berth.spec-hash";

/** Failure reasons a command past its deadline leaves behind. */
const TIMEOUT_REASON: Partial<Record<CommandKind, string>> = {
  [CommandKind.ENSURE_CONTAINER]: "CreateTimeout",
  [CommandKind.ENSURE_RUNNING]: "StartTimeout",
  [CommandKind.ENSURE_STOPPED]: "StopTimeout",
  [CommandKind.ENSURE_PAUSED]: "PauseTimeout",
  [CommandKind.ENSURE_REMOVED]: "RemoveTimeout",
  [CommandKind.RESTART]: "RestartTimeout",
  [CommandKind.COPY_DATA]: "CopyTimeout",
  [CommandKind.BACKUP_DATA]: "DeadlineExceeded",
  [CommandKind.RESTORE_DATA]: "DeadlineExceeded",
  [CommandKind.DISCARD_PREVIOUS_DATA]: "DeadlineExceeded",
  [CommandKind.RUN_INSTALL]: "InstallFailed",
};

/**
 * How long a command that just succeeded is not issued again while the
 * observation still says it is needed. The agent's next event or inventory
 * normally settles it within milliseconds; without one, the command is
 * repeated once per this period at most (never in a loop).
 */
export const REPEAT_HOLD_MS = 10_000;

/**
 * The reconciler's decision. Every command it returns is justified by a change
 * since the last one: the same command is not issued again right after its
 * success unless something newer than that success was observed or asked for
 * (a stale observation once made the reconciler re-issue `ensure-removed`
 * every millisecond, thousands of times per soft delete).
 */
export function plan(input: PlanInput): Plan {
  return withCrashes(input, holdRepeat(input, decide(input)));
}

/** The crash times that count towards a crash loop: within the window, and since the last operator action. */
function recentCrashes(input: PlanInput): number[] {
  return (input.lifecycle.crashTimes ?? []).filter((t) => t > input.now - CRASH_WINDOW_MS && t > input.lastActionAt);
}

/**
 * A server meant to run that crashed within the window (since the last
 * operator action) carries its crash count in every plan on its way back
 * (starting, the restart in flight, the exit being explained, running
 * again), not only in the crash branch's: status.crash and the crash_loop
 * alert's warning stage must not drop out for a moment between two crashes.
 */
function withCrashes(input: PlanInput, p: Plan): Plan {
  if (p.crash || input.spec.desiredState !== DesiredState.RUNNING || input.deleted) return p;
  if (p.phase !== Phase.STARTING && p.phase !== Phase.RUNNING && p.phase !== Phase.CREATING) return p;
  const recent = recentCrashes(input);
  return recent.length > 0 ? { ...p, crash: { recent: recent.length, limit: CRASH_LOOP_THRESHOLD } } : p;
}

function holdRepeat(input: PlanInput, p: Plan): Plan {
  const last = input.lastFinished;
  if (!p.command || p.command.recreate || !last || last.state !== "succeeded" || last.kind !== p.command.kind) return p;
  const lc = input.lifecycle;
  const changedAt = Math.max(
    input.observedAt,
    input.lastActionAt,
    lc.lastExit?.at ?? 0,
    lc.containerLostAt ?? 0,
    lc.restartRequestedAt ?? 0,
    lc.rebuildRequestedAt ?? 0,
    // A new backup or restore asked for after the last one: not a repeat.
    lc.dataOp?.requestedAt ?? 0,
  );
  if (changedAt > last.finishedAt) return p;
  const until = last.finishedAt + REPEAT_HOLD_MS;
  if (input.now >= until) return p;
  const { command: _held, ...rest } = p;
  return { ...rest, requeueAfterMs: Math.min(p.requeueAfterMs ?? Infinity, until - input.now) };
}

function decide(input: PlanInput): Plan {
  const container = pickContainer(input.containers, input.specHash);
  const facts = conditionFacts(input, container);
  const observedGeneration = container ? Number(container.labels[GENERATION_LABEL] ?? 0) : 0;
  const base = { conditions: facts, observedGeneration };
  const lc = input.lifecycle;
  const last = input.lastFinished;

  // 1. Nothing is known about a host that is not connected: never guess "Stopped".
  if (!input.hostConnected) {
    // A transfer's target went away while its data was restored or the server started there: the
    // source still has everything, so the transfer fails after a short grace (a link blip is not a failure).
    const moving = lc.dataOp?.transfer;
    if (moving && moving.stage !== "backup" && !lc.purge && !input.deleted) {
      const since = Math.max(input.hostOfflineSince ?? 0, moving.movedAt ?? 0);
      const grace = input.transferOfflineGraceMs ?? TRANSFER_OFFLINE_GRACE_MS;
      if (input.now >= since + grace) {
        return {
          ...base,
          phase: Phase.UNKNOWN,
          reason: "HostOffline",
          message: "the transfer's target host went offline; moving back to the source host",
          failDataOp: { reason: "TargetHostOffline", message: `host ${moving.targetHost} went offline during the transfer` },
          ...(input.inflight ? { expireInflight: true } : {}),
        };
      }
      return { ...base, phase: Phase.UNKNOWN, reason: "HostOffline", message: "the transfer's target host is not connected; waiting briefly before moving back", requeueAfterMs: since + grace - input.now };
    }
    const expire = input.inflight !== undefined && input.now >= input.inflight.deadlineAt;
    // Deadlines run while the host is away: come back when the in-flight command expires.
    const wake = input.inflight && !expire ? { requeueAfterMs: input.inflight.deadlineAt - input.now } : {};
    return {
      ...wake,
      ...base,
      phase: lc.purge ? Phase.PURGING : Phase.UNKNOWN,
      reason: "HostOffline",
      message: lc.purge
        ? "waiting for the host to come back to remove the container; purge with force to drop the record now"
        : "the host's agent is not connected; its state is unknown until it reconnects",
      ...(expire ? { expireInflight: true } : {}),
    };
  }

  // 2. One operation at a time: wait for the in-flight command, or fail it at its deadline.
  if (input.inflight) {
    const f = input.inflight;
    if (input.now >= f.deadlineAt && goalObserved(f.kind, input)) {
      return { ...base, ...inflightPhase(f.kind, container, input.deleted, lc.purge !== undefined, input.network), settleInflight: true };
    }
    if (input.now >= f.deadlineAt && DATA_COMMAND_KINDS.has(f.kind)) {
      // The backup or restore failed (the reconciler records it there); the server goes on.
      return { ...base, ...containerPhase(container), expireInflight: true };
    }
    if (input.now >= f.deadlineAt) {
      return {
        ...base,
        phase: Phase.FAILED,
        reason: TIMEOUT_REASON[f.kind] ?? "Timeout",
        message: `${commandName(f.kind)} did not finish within ${Math.round((f.deadlineAt - f.createdAt) / 1000)}s`,
        expireInflight: true,
      };
    }
    return {
      ...base,
      ...inflightPhase(f.kind, container, input.deleted, lc.purge !== undefined, input.network),
      ...(lc.dataOp ? { dataStage: dataStageOf(f.kind, lc.dataOp) } : {}),
      ...(f.kind === CommandKind.RUN_INSTALL && (input.deleted || lc.purge) ? { cancelInstall: true, requeueAfterMs: Math.min(REMOVE_RETRY_MS, f.deadlineAt - input.now) } : { requeueAfterMs: f.deadlineAt - input.now }),
    };
  }

  // 2b. A backup or restore under way: the container stops first (unless a live backup), then
  //     the agent copies. Before the data-loss and standing-failure checks: a restore is how
  //     lost data comes back, and a failed server may still be backed up.
  if (lc.dataOp) {
    const op = lc.dataOp;
    const what = op.kind;
    if (lc.purge || input.deleted) return { ...base, ...containerPhase(container), failDataOp: { reason: "ServerDeleted", message: `the server was deleted before the ${what} could run` } };
    if (input.now >= op.deadlineAt) {
      return { ...base, ...containerPhase(container), failDataOp: { reason: "DeadlineExceeded", message: `the ${what} did not finish within ${Math.round((op.deadlineAt - op.requestedAt) / 1000)}s` } };
    }
    if (op.awaitBackup) {
      // A clone waits for its source's fresh backup (the reconciler reads the backup's state).
      return { ...base, ...containerPhase(container), phase: Phase.PENDING, reason: "WaitingForBackup", message: "waiting for the source server's backup to finish before copying its data", dataStage: "WaitingForBackup", requeueAfterMs: Math.min(2_000, op.deadlineAt - input.now) };
    }
    const stage = op.transfer?.stage;
    if (stage === "start") {
      // On the new host with the data in place: create (and start) the server; a failure moves it back.
      const since = op.transfer?.movedAt ?? op.requestedAt;
      if (last && last.state !== "succeeded" && last.createdAt >= since) {
        return { ...base, ...containerPhase(container), failDataOp: { reason: "StartFailed", message: `the server did not start on host ${op.transfer?.targetHost}: ${last.message || last.reason}` } };
      }
      const wantRunning = input.spec.desiredState === DesiredState.RUNNING;
      if (container && (!wantRunning || container.state === "running")) return { ...base, ...containerPhase(container), finishDataOp: true };
      // Otherwise the plan below creates and starts it (createPending), with this stage shown.
    }
    const stopFailed = last && last.kind === CommandKind.ENSURE_STOPPED && last.state !== "succeeded" && last.createdAt >= op.requestedAt;
    if (stopFailed) {
      return { ...base, ...containerPhase(container), failDataOp: { reason: "StopFailed", message: `the container did not stop for the ${what}: ${last.message || last.reason}` } };
    }
    if (stage !== "start") {
      const active = container && (container.state === "running" || container.state === "paused" || container.state === "restarting");
      const archiving = op.kind === "backup" || stage === "backup";
      if (active && !(op.kind === "backup" && op.live)) {
        const reason = op.kind === "backup" ? "StoppingForBackup" : op.kind === "transfer" ? "StoppingForTransfer" : "StoppingForRestore";
        const after = op.kind === "transfer" ? "it starts again on the new host if it should run" : "it starts again afterwards if it should run";
        return { ...issue(base, Phase.STOPPING, reason, `stopping the container for the ${what}; ${after}`, CommandKind.ENSURE_STOPPED), dataStage: "Stopping", requeueAfterMs: op.deadlineAt - input.now };
      }
      if (archiving && input.data && !input.data.present) {
        return { ...base, ...containerPhase(container), failDataOp: { reason: "NoData", message: `the data directory does not exist on the host; there is nothing to ${op.kind === "transfer" ? "move" : "back up"}` } };
      }
      const kind = archiving ? CommandKind.BACKUP_DATA : CommandKind.RESTORE_DATA;
      const shown = op.kind === "transfer" ? transferPhase(kind, op) : inflightPhase(kind, container, false, false, input.network);
      return { ...base, ...shown, command: { kind, dataPolicy: DataPolicy.UNSPECIFIED }, dataStage: dataStageOf(kind, op), requeueAfterMs: op.deadlineAt - input.now };
    }
  }

  // A data directory gone for a server that had data outranks a standing failure: it is
  // what the operator must act on (a start racing the loss fails with DataMissing, which
  // would otherwise hide the loss: no data.lost event, no data_lost alert).
  const dataGone = input.dataInitialized && input.data !== undefined && !input.data.present;
  if (dataGone && !lc.purge && !input.deleted) return dataLost(base);

  // 3. A clone whose data could not be copied stays Failed until the operator acts (a start gives it empty data).
  if (lc.cloneFailed && lc.cloneFailed.at >= input.lastActionAt) {
    return { ...base, phase: Phase.FAILED, reason: lc.cloneFailed.reason, message: lc.cloneFailed.message };
  }

  // A deleted or purged server's container is removed, however often that fails (berth never
  // leaves a container behind): a failed removal is retried every REMOVE_RETRY_MS, and the
  // phase says why it has not gone yet. (Found by the chaos campaign: a delete while the
  // host's Docker engine restarted stayed Failed/DockerUnreachable with its container.)
  const removalFailed =
    (input.deleted || lc.purge !== undefined) && last !== undefined && last.kind === CommandKind.ENSURE_REMOVED && last.state !== "succeeded" && last.createdAt >= input.lastActionAt;
  if (removalFailed && input.containers.length > 0 && input.now < last.finishedAt + REMOVE_RETRY_MS) {
    const retryAt = last.finishedAt + REMOVE_RETRY_MS;
    return {
      ...base,
      phase: lc.purge ? Phase.PURGING : Phase.DELETED,
      reason: failureReason(last),
      message: `removing the container failed (${last.message || last.reason || "no reason given"}); trying again at ${new Date(retryAt).toISOString()}`,
      requeueAfterMs: retryAt - input.now,
    };
  }

  // A failure since the operator's last action stands until they act again.
  if (last && last.state !== "succeeded" && last.createdAt >= input.lastActionAt && !DATA_COMMAND_KINDS.has(last.kind) && last.kind !== CommandKind.RUN_INSTALL && !removalFailed) {
    return {
      ...base,
      phase: Phase.FAILED,
      reason: failureReason(last),
      message: last.message,
    };
  }

  // 4. Purge: container, then (only if asked) data, then the record.
  if (lc.purge) {
    if (input.containers.length > 0) return issue(base, Phase.PURGING, "RemovingContainer", "removing the container", CommandKind.ENSURE_REMOVED);
    if (lc.purge.removeData && input.data?.present !== false) {
      return issue(base, Phase.PURGING, "RemovingData", "removing the data directory", CommandKind.REMOVE_DATA);
    }
    return { ...base, phase: Phase.PURGING, reason: "Purged", message: "container removed; dropping the record", deleteRecord: true };
  }

  // 5. Soft-deleted: the container goes, the data and the record stay until retention ends.
  if (input.deleted) {
    if (input.containers.length > 0) return issue(base, Phase.DELETED, "Removing", "removing the container", CommandKind.ENSURE_REMOVED);
    const purgeAt = (input.deletedAt ?? input.now) + input.retentionMs;
    if (input.now >= purgeAt) {
      return { ...base, phase: Phase.DELETED, reason: "RetentionExpired", message: "retention ended; dropping the record, data kept on the host", deleteRecord: true };
    }
    return {
      ...base,
      phase: Phase.DELETED,
      reason: "Deleted",
      message: `deleted; data kept on the host; record kept until ${new Date(purgeAt).toISOString()} (restore to undo)`,
      requeueAfterMs: purgeAt - input.now,
    };
  }

  const dataPolicy = input.dataInitialized ? DataPolicy.REQUIRE : DataPolicy.CREATE;
  const desired = input.spec.desiredState;
  const startKind = desired === DesiredState.STOPPED ? CommandKind.ENSURE_CONTAINER : CommandKind.ENSURE_RUNNING;

  // 5b. The install script (spec.install) runs before the server's container is made or started:
  //     pending, it runs (RUN_INSTALL) with no container of the server running; failed, the server
  //     stays Failed (no retry in a loop) until ReinstallServer sets it pending again.
  const install = input.spec.install ? lc.install : undefined;
  if (install?.state === "failed") {
    return { ...base, phase: Phase.FAILED, reason: "InstallFailed", message: installFailedMessage(install) };
  }
  if (install && (install.state === "pending" || install.state === "running")) {
    if (container && (container.state === "running" || container.state === "paused" || container.state === "restarting")) {
      return issue(base, Phase.STOPPING, "StoppingForInstall", "stopping the container to run the install script", CommandKind.ENSURE_STOPPED);
    }
    return issue(base, Phase.CREATING, "Installing", `running the install script (attempt ${install.attempt + 1}); its output: GetInstallLog`, CommandKind.RUN_INSTALL);
  }

  // 6. Rebuild requested and not yet done: replace the container, keeping data.
  // Requests and completions are both manager-clock times (see noteCommandFinished in reconciler.ts),
  // so host clock skew cannot make a rebuild or restart repeat.
  if (container && (lc.rebuildRequestedAt ?? 0) > (lc.rebuildDoneAt ?? 0)) {
    return { ...issue(base, Phase.CREATING, "Rebuilding", "recreating the container from the current spec", startKind, dataPolicy), command: { kind: startKind, dataPolicy, recreate: true } };
  }

  // 6b. Over its disk quota with the stop policy: stopped (or not started) until it is under the
  // quota again, its desired state kept, so it starts by itself once the data shrinks.
  const quota = Number(input.spec.resources?.diskQuotaBytes ?? 0n);
  const size = input.data?.sizeBytes ?? 0;
  if (input.spec.resources?.stopOverDiskQuota && quota > 0 && size > quota && desired === DesiredState.RUNNING) {
    const over = `its data directory uses ${formatBytes(BigInt(size))} of its ${formatBytes(BigInt(quota))} disk quota`;
    if (container && (container.state === "running" || container.state === "paused" || container.state === "restarting")) {
      return issue(base, Phase.STOPPING, "DiskQuotaExceeded", `stopping: ${over} (stop_over_disk_quota)`, CommandKind.ENSURE_STOPPED);
    }
    return { ...base, phase: Phase.STOPPED, reason: "DiskQuotaExceeded", message: `stopped: ${over}; it starts again once under it (delete files, e.g. with the file manager, or raise the quota)` };
  }

  // 7. No container.
  if (!container) {
    const lost = input.dataInitialized && (lc.containerLostAt ?? 0) > input.lastActionAt;
    if (!lc.createPending && (lost || (desired === DesiredState.STOPPED && input.dataInitialized))) {
      return { ...base, phase: Phase.MISSING, reason: "ContainerMissing", message: "the container is gone and the data is kept; start the server to recreate it" };
    }
    return issue(base, Phase.CREATING, "Creating", desired === DesiredState.STOPPED ? "creating the container" : "creating and starting the container", startKind, dataPolicy);
  }

  // 7b. A running container made before project networks (on Docker's default bridge): the
  // agent moves it onto its project's network without stopping it (ENSURE_CONTAINER keeps a
  // container whose spec hash matches). Not for an older spec: that one waits for a restart.
  // An agent that reports no networks (older than project networks) is left alone.
  if (
    input.network && input.spec.desiredState === DesiredState.RUNNING && container.state === "running" && container.labels[HASH_LABEL] === input.specHash &&
    container.networks.length > 0 && (container.networks.length !== 1 || container.networks[0] !== input.network)
  ) {
    return issue(base, Phase.RUNNING, "JoiningNetwork", "moving the container onto its project network (it keeps running)", CommandKind.ENSURE_CONTAINER, dataPolicy);
  }

  // 7c. A running container with the current spec whose limits Docker holds otherwise: set live
  // (docker update through ENSURE_CONTAINER, which keeps a container whose spec hash matches), once
  // per container and limits. A limit to remove waits for a new container (conditionFacts says so).
  const limitsPlan = limitsStep(input, container, base);
  if (limitsPlan) return limitsPlan;

  // 8. A container exists: drive it to the desired state.
  const state = container.state;
  switch (desired) {
    case DesiredState.STOPPED: {
      if (state === "running" || state === "paused" || state === "restarting") {
        return issue(base, Phase.STOPPING, "Stopping", "stopping the container", CommandKind.ENSURE_STOPPED);
      }
      // An exit seen while the server should be stopped needs no cause: a later Start is not held.
      const fin = container.finishedTime ? timestampMs(container.finishedTime) : 0;
      const settle = fin > (lc.lastExit?.finishedAt ?? 0) ? { settledExit: { finishedAt: fin, exitCode: container.exitCode } } : {};
      // Stopped behind berth's back (docker stop/kill) and adopted as desired, with no operator action since:
      // its own reason, so the dashboard and the stopped_outside alert can tell it from a stop someone asked for.
      if (lc.lastExit?.cause === "stopped_externally" && lc.lastExit.at > input.lastActionAt) {
        return {
          ...base,
          ...settle,
          phase: Phase.STOPPED,
          reason: "StoppedOutsideBerth",
          message: `stopped outside berth (docker stop or kill; ${exitMessage(container, input.limits)}); start it to run it again`,
        };
      }
      return { ...base, ...settle, phase: Phase.STOPPED, reason: "Stopped", message: exitMessage(container, input.limits) };
    }
    case DesiredState.PAUSED:
      if (state === "paused") return { ...base, phase: Phase.PAUSED, reason: "Paused", message: "the container is paused" };
      if (state === "running") return issue(base, Phase.STOPPING, "Pausing", "pausing the container", CommandKind.ENSURE_PAUSED);
      return issue(base, Phase.STARTING, "Starting", "starting the container before pausing it", CommandKind.ENSURE_RUNNING, dataPolicy);
    default:
      break;
  }
  if (state === "running") {
    if ((lc.restartRequestedAt ?? 0) > (lc.restartDoneAt ?? 0)) {
      return issue(base, Phase.STOPPING, "Restarting", "restarting the container", CommandKind.RESTART, dataPolicy);
    }
    // Running again after a restore: the data it replaced is no longer needed as a safety copy.
    if (lc.previousData?.some((d) => !d.keep)) {
      return issue(base, Phase.RUNNING, "Running", "the container is running; removing the data a restore replaced", CommandKind.DISCARD_PREVIOUS_DATA);
    }
    // Running again after crashes: they still count towards a crash loop until they leave the window.
    const crashes = recentCrashes(input);
    const running: Plan =
      crashes.length > 0
        ? {
            ...base,
            phase: Phase.RUNNING,
            reason: "Running",
            message: `the container is running (crashed ${crashes.length} of ${CRASH_LOOP_THRESHOLD} times that make a crash loop in ${CRASH_WINDOW_MS / 60_000} minutes)`,
            crash: { recent: crashes.length, limit: CRASH_LOOP_THRESHOLD },
            requeueAfterMs: Math.min(...crashes) + CRASH_WINDOW_MS - input.now,
          }
        : { ...base, phase: Phase.RUNNING, reason: "Running", message: "the container is running" };
    // Running, but its ready pattern has not matched a line yet: still starting (the game is loading).
    const wait = readyWait(input, container);
    if (!wait) return running;
    return {
      ...running,
      phase: Phase.STARTING,
      reason: wait.timedOut ? "ReadyTimeout" : "WaitingForReady",
      message: wait.message,
      ...(wait.timedOut ? {} : { requeueAfterMs: Math.min(running.requeueAfterMs ?? Infinity, wait.deadlineAt - input.now) }),
    };
  }
  if (state === "paused") return issue(base, Phase.STARTING, "Resuming", "unpausing the container", CommandKind.ENSURE_RUNNING, dataPolicy);

  // 9. Exited while it should run. An exit newer than the last one the agent explained
  //    (an inventory or a command result can overtake the "die" event) is held
  //    briefly: restarting it at once would undo an operator's `docker stop` or skip
  //    a crash backoff. Without a cause by then (the exit happened while the agent
  //    was away), it counts as a crash. An operator's action ends the wait.
  const finishedMs = container.finishedTime ? timestampMs(container.finishedTime) : 0;
  const unexplained = finishedMs > 0 && finishedMs > (lc.lastExit?.finishedAt ?? 0);
  const pending = lc.pendingExit?.finishedAt === finishedMs ? lc.pendingExit : undefined;
  if (unexplained && (!pending || input.lastActionAt <= pending.seenAt)) {
    const waiting = { ...base, phase: Phase.STARTING, reason: "ExitObserved", message: `${exitMessage(container, input.limits)}; waiting for the engine to say why` };
    if (!pending) return { ...waiting, pendingExit: { finishedAt: finishedMs }, requeueAfterMs: EXIT_CAUSE_GRACE_MS };
    if (input.now < pending.seenAt + EXIT_CAUSE_GRACE_MS) return { ...waiting, requeueAfterMs: pending.seenAt + EXIT_CAUSE_GRACE_MS - input.now };
    return { ...waiting, assumeCrash: { finishedAt: finishedMs, exitCode: container.exitCode, oomKilled: container.oomKilled } };
  }

  // 10. A crash since the last operator action restarts per policy.
  const exit = lc.lastExit;
  if (exit?.cause === "crash" && exit.at > input.lastActionAt) {
    const policy = input.spec.restartPolicy;
    if (policy === RestartPolicy.NEVER) {
      return { ...base, phase: Phase.FAILED, reason: exit.oomKilled ? "OOMKilled" : "Crashed", message: `${exitMessage(container, input.limits)}; restart policy is never` };
    }
    const recent = recentCrashes(input);
    if (recent.length >= CRASH_LOOP_THRESHOLD) {
      return {
        ...base,
        phase: Phase.FAILED,
        reason: "CrashLoop",
        message: `crashed ${recent.length} times in ${CRASH_WINDOW_MS / 60_000} minutes (last: ${exitMessage(container, input.limits)}); fix the cause, then start it again`,
      };
    }
    const wait = crashBackoffMs(recent.length, input.crashBackoffBaseMs);
    const at = exit.at + wait;
    if (input.now < at) {
      return {
        ...base,
        phase: Phase.STARTING,
        reason: exit.oomKilled ? "OOMKilled" : "CrashBackoff",
        message: `${exitMessage(container, input.limits)}; restarting in ${Math.ceil((at - input.now) / 1000)}s (crash ${recent.length} of ${CRASH_LOOP_THRESHOLD})`,
        requeueAfterMs: at - input.now,
        crash: { recent: recent.length, limit: CRASH_LOOP_THRESHOLD, nextRestartAt: at },
      };
    }
    return {
      ...issue(base, Phase.STARTING, "RestartingAfterCrash", `restarting after a crash (${exitMessage(container, input.limits)}; crash ${recent.length} of ${CRASH_LOOP_THRESHOLD})`, CommandKind.ENSURE_RUNNING, dataPolicy),
      crash: { recent: recent.length, limit: CRASH_LOOP_THRESHOLD },
    };
  }
  return issue(base, Phase.STARTING, "Starting", "starting the container", CommandKind.ENSURE_RUNNING, dataPolicy);
}

/** The phase a container shows by itself while a data operation is decided around it. */
function containerPhase(c: ContainerInfo | undefined): Pick<Plan, "phase" | "reason" | "message"> {
  if (!c) return { phase: Phase.MISSING, reason: "ContainerMissing", message: "no container for this server on its host" };
  if (c.state === "running") return { phase: Phase.RUNNING, reason: "Running", message: "the container is running" };
  if (c.state === "paused") return { phase: Phase.PAUSED, reason: "Paused", message: "the container is paused" };
  return { phase: Phase.STOPPED, reason: "Stopped", message: exitMessage(c) };
}

/** The phase a transfer shows while its data is archived on the source or unpacked on the target. */
function transferPhase(kind: CommandKind, op: DataOp): Pick<Plan, "phase" | "reason" | "message"> {
  const t = op.transfer;
  return kind === CommandKind.BACKUP_DATA
    ? { phase: Phase.STOPPED, reason: "Transferring", message: `moving to host ${t?.targetHost}: archiving the data directory (the server starts on the new host if it should run)` }
    : { phase: Phase.PENDING, reason: "Transferring", message: `moving from host ${t?.sourceHost}: verifying and unpacking the data here (the source keeps its copy until the server runs here)` };
}

/** status.operation's stage while a data command runs: the agent's own report, else what it starts with. */
function dataStageOf(kind: CommandKind, op: DataOp): string {
  if (kind === CommandKind.ENSURE_STOPPED) return "Stopping";
  if (op.transfer?.stage === "start") return "Starting";
  if (kind !== CommandKind.BACKUP_DATA && kind !== CommandKind.RESTORE_DATA) return "Waiting";
  return op.progress?.stage ?? (kind === CommandKind.BACKUP_DATA ? "Copying" : "Restoring");
}

function dataLost(base: Pick<Plan, "conditions" | "observedGeneration">): Plan {
  return {
    ...base,
    phase: Phase.DATA_LOST,
    reason: "DataDirectoryMissing",
    message: "the data directory is gone from the host; purge the server, or start it with allow_empty_data",
  };
}

/** How long an exit observed without its cause waits for the "die" event that explains it. */
export const EXIT_CAUSE_GRACE_MS = 5_000;

/** Crashes within this window count towards a crash loop. */
export const CRASH_WINDOW_MS = 10 * 60_000;
export const CRASH_LOOP_THRESHOLD = 5;

/** Delay before restarting after the n-th recent crash: 10 s, 20 s, 40 s, ... capped at 5 min. */
export function crashBackoffMs(recentCrashes: number, baseMs = 10_000): number {
  return Math.min(30 * baseMs, baseMs * 2 ** Math.max(0, recentCrashes - 1));
}


/**
 * The phase reason of a failed or expired command. An expired command's stored reason is the
 * agent-facing "DeadlineExceeded": report the same per-kind reason as at the moment of expiry,
 * so the status does not flap.
 */
function failureReason(last: FinishedCommand): string {
  return last.state === "expired" ? (TIMEOUT_REASON[last.kind] ?? "Timeout") : last.reason || "CommandFailed";
}

function issue(
  base: Pick<Plan, "conditions" | "observedGeneration">,
  phase: Phase,
  reason: string,
  message: string,
  kind: CommandKind,
  dataPolicy: DataPolicy = DataPolicy.UNSPECIFIED,
): Plan {
  return { ...base, phase, reason, message, command: { kind, dataPolicy } };
}

/** Prefers the container running the current spec, then a running one, then the newest. */
export function pickContainer(containers: readonly ContainerInfo[], hash: string): ContainerInfo | undefined {
  if (containers.length <= 1) return containers[0];
  return (
    containers.find((c) => c.labels[HASH_LABEL] === hash) ??
    containers.find((c) => c.state === "running") ??
    containers[containers.length - 1]
  );
}

/**
 * Whether the host already shows what a command of `kind` was sent to
 * achieve, judged from observation alone. Only for "ensure a state" commands:
 * a restart, a copy or a data removal cannot be told done by looking.
 */
function goalObserved(kind: CommandKind, input: PlanInput): boolean {
  const mine = input.containers;
  switch (kind) {
    case CommandKind.ENSURE_RUNNING:
      return mine.length === 1 && mine[0]!.state === "running" && mine[0]!.labels[HASH_LABEL] === input.specHash;
    case CommandKind.ENSURE_STOPPED:
      return mine.length > 0 && mine.every((c) => c.state !== "running" && c.state !== "paused" && c.state !== "restarting");
    case CommandKind.ENSURE_PAUSED:
      return mine.length === 1 && mine[0]!.state === "paused";
    case CommandKind.ENSURE_REMOVED:
      return mine.length === 0;
    default:
      return false;
  }
}

function inflightPhase(kind: CommandKind, container: ContainerInfo | undefined, deleted: boolean, purging: boolean, network?: string): Pick<Plan, "phase" | "reason" | "message"> {
  if (purging) return { phase: Phase.PURGING, reason: "Purging", message: `purging: ${commandName(kind)}` };
  if (deleted) return { phase: Phase.DELETED, reason: "Removing", message: "removing the container" };
  switch (kind) {
    case CommandKind.ENSURE_CONTAINER:
      // Only plan steps 7b and 7c send it for a running container: a move onto the project
      // network (a container on another one), or limits set live.
      if (container?.state !== "running") return { phase: Phase.CREATING, reason: "Creating", message: "creating the container" };
      return network && (container.networks.length !== 1 || container.networks[0] !== network)
        ? { phase: Phase.RUNNING, reason: "JoiningNetwork", message: "moving the container onto its project network (it keeps running)" }
        : { phase: Phase.RUNNING, reason: "ApplyingLimits", message: "applying resource limits to the running container (docker update; it keeps running)" };
    case CommandKind.ENSURE_RUNNING:
      return container
        ? { phase: Phase.STARTING, reason: "Starting", message: "starting the container" }
        : { phase: Phase.CREATING, reason: "Creating", message: "creating and starting the container" };
    case CommandKind.ENSURE_STOPPED:
      return { phase: Phase.STOPPING, reason: "Stopping", message: "stopping the container" };
    case CommandKind.ENSURE_PAUSED:
      return { phase: Phase.STOPPING, reason: "Pausing", message: "pausing the container" };
    case CommandKind.ENSURE_REMOVED:
      return { phase: Phase.STOPPING, reason: "Removing", message: "removing the container" };
    case CommandKind.REMOVE_DATA:
      return { phase: Phase.PURGING, reason: "RemovingData", message: "removing the data directory" };
    case CommandKind.RESTART:
      return { phase: Phase.STOPPING, reason: "Restarting", message: "restarting the container" };
    case CommandKind.COPY_DATA:
      return { phase: Phase.CREATING, reason: "CopyingData", message: "adopting: copying the container's data into the data root" };
    case CommandKind.BACKUP_DATA:
      return container?.state === "running"
        ? { phase: Phase.RUNNING, reason: "BackingUp", message: "backing up the data directory while the server runs (a live copy)" }
        : { phase: Phase.STOPPED, reason: "BackingUp", message: "backing up the data directory; the server starts again afterwards if it should run" };
    case CommandKind.RESTORE_DATA:
      return { phase: Phase.STOPPED, reason: "Restoring", message: "restoring the data directory from a backup; the server starts again afterwards if it should run" };
    case CommandKind.DISCARD_PREVIOUS_DATA:
      return { phase: container?.state === "running" ? Phase.RUNNING : Phase.STOPPED, reason: "DiscardingPreviousData", message: "removing the data a restore replaced" };
    case CommandKind.RUN_INSTALL:
      return { phase: Phase.CREATING, reason: "Installing", message: "running the install script; its output: GetInstallLog" };
    default:
      return { phase: Phase.PENDING, reason: "Checking", message: "checking the host" };
  }
}

function conditionFacts(input: PlanInput, c: ContainerInfo | undefined): ConditionFact[] {
  const online = input.hostConnected;
  const unknown = (type: ConditionFact["type"]): ConditionFact => ({
    type,
    status: "Unknown",
    reason: "HostOffline",
    message: "the host's agent is not connected",
  });
  const hostConnected: ConditionFact = online
    ? { type: "HostConnected", status: "True", reason: "Connected", message: "" }
    : { type: "HostConnected", status: "False", reason: "HostOffline", message: "the host's agent is not connected" };
  if (!online) {
    return [hostConnected, unknown("ContainerExists"), unknown("ContainerRunning"), unknown("DataPresent"), unknown("SpecApplied"), unknown("Ready")];
  }
  const exists: ConditionFact = c
    ? { type: "ContainerExists", status: "True", reason: "Found", message: c.id.slice(0, 12) }
    : { type: "ContainerExists", status: "False", reason: "NotFound", message: "no container for this server on its host" };
  const running: ConditionFact =
    c?.state === "running"
      ? { type: "ContainerRunning", status: "True", reason: "Running", message: "" }
      : { type: "ContainerRunning", status: "False", reason: c ? capitalize(c.state) : "NoContainer", message: c ? exitMessage(c, input.limits) : "" };
  const data: ConditionFact =
    input.data === undefined
      ? { type: "DataPresent", status: "Unknown", reason: "NotChecked", message: "the data directory has not been checked yet" }
      : input.data.present
        ? { type: "DataPresent", status: "True", reason: "Present", message: "" }
        : { type: "DataPresent", status: "False", reason: input.dataInitialized ? "Missing" : "NotCreated", message: "" };
  const applied: ConditionFact = !c
    ? { type: "SpecApplied", status: "False", reason: "NoContainer", message: "" }
    : c.labels[HASH_LABEL] === input.specHash
      ? // The current spec, whatever generation made the container: a change that needs no new container (the desired state) keeps it.
        (limitsCondition(input, c) ?? { type: "SpecApplied", status: "True", reason: "Applied", message: `the container runs the spec of generation ${input.generation}` })
      : { type: "SpecApplied", status: "False", reason: "PendingRestart", message: "the container runs an older spec; restart or rebuild to apply it" };
  const wait = applied.status === "True" ? readyWait(input, c) : undefined;
  const ready: ConditionFact = wait
    ? { type: "Ready", status: "False", reason: wait.timedOut ? "ReadyTimeout" : "Starting", message: wait.message }
    : c?.state === "running" && applied.status === "True"
      ? { type: "Ready", status: "True", reason: "Running", message: "" }
      : { type: "Ready", status: "False", reason: c?.state === "running" ? "PendingRestart" : "NotRunning", message: "" };
  return [hostConnected, exists, running, data, applied, ready];
}

/** How long after its start a server with a ready pattern may go without a matching line before it shows ReadyTimeout. */
export const READY_TIMEOUT_MS = 10 * 60_000;

/**
 * A running container of the current spec whose ready pattern (spec.ready_pattern)
 * has not matched a line of its output since it started (the agent reports
 * ContainerInfo.ready_time once one has): what it waits for, and whether it
 * has waited past READY_TIMEOUT_MS (by its start time; it is never stopped for
 * that). Undefined when it is ready, has no pattern, or does not run.
 */
export function readyWait(input: Pick<PlanInput, "spec" | "specHash" | "now">, c: ContainerInfo | undefined): { timedOut: boolean; deadlineAt: number; message: string } | undefined {
  const pattern = input.spec.readyPattern;
  if (!pattern || !c || c.state !== "running" || c.readyTime || c.labels[HASH_LABEL] !== input.specHash) return undefined;
  const startedAt = c.startedTime ? timestampMs(c.startedTime) : input.now;
  const deadlineAt = startedAt + READY_TIMEOUT_MS;
  return input.now >= deadlineAt
    ? {
        timedOut: true,
        deadlineAt,
        message: `no line of its output matched /${pattern}/ within ${READY_TIMEOUT_MS / 60_000} minutes of its start; the container keeps running (look at its console; fix ready_pattern, or restart it)`,
      }
    : { timedOut: false, deadlineAt, message: `the container is running; waiting for a line matching /${pattern}/ in its output` };
}

/** Step 7c (see decide). */
function limitsStep(input: PlanInput, c: ContainerInfo, base: Pick<Plan, "conditions" | "observedGeneration">): Plan | undefined {
  if (!input.limits || !c.resources || c.state !== "running" || c.labels[HASH_LABEL] !== input.specHash) return undefined;
  if (input.spec.desiredState !== DesiredState.RUNNING || input.deleted || input.lifecycle.purge) return undefined;
  const diff = limitsDiff(input.limits, c.resources);
  if (diff.live.length === 0 || diff.removal.length > 0) return undefined;
  const key = limitsKey(input.limits);
  const tried = input.lifecycle.limitsAttempt;
  if (tried && tried.containerId === c.id && tried.key === key) return undefined;
  return {
    ...issue(base, Phase.RUNNING, "ApplyingLimits", `applying ${diff.live.join(", ")} to the running container (docker update; it keeps running)`, CommandKind.ENSURE_CONTAINER, input.dataInitialized ? DataPolicy.REQUIRE : DataPolicy.CREATE),
    limitsAttempt: { containerId: c.id, key },
  };
}

/**
 * The SpecApplied condition of a container with the current spec, when its
 * limits are not what they should be: why, and what makes them so.
 */
function limitsCondition(input: PlanInput, c: ContainerInfo): ConditionFact | undefined {
  if (!input.limits || !c.resources) return undefined;
  const diff = limitsDiff(input.limits, c.resources);
  if (diff.live.length + diff.removal.length === 0) return undefined;
  if (diff.removal.length > 0) {
    return {
      type: "SpecApplied",
      status: "False",
      reason: "PendingRestart",
      message: `removing the ${diff.removal.join(", ")} limit takes a new container (docker update cannot remove a limit): it is made when the server is next started or restarted, or now with RebuildServer`,
    };
  }
  if (c.state !== "running") {
    return { type: "SpecApplied", status: "False", reason: "PendingStart", message: `${diff.live.join(", ")} will be set when the container next starts` };
  }
  const tried = input.lifecycle.limitsAttempt;
  if (tried && tried.containerId === c.id && tried.key === limitsKey(input.limits)) {
    return {
      type: "SpecApplied",
      status: "False",
      reason: "LimitsNotApplied",
      message: `Docker holds other values than asked for ${diff.live.join(", ")} after docker update (it refused them, e.g. a memory limit below what the container uses, or the host does not support them: the ledger's command event says which); RebuildServer makes a new container with them`,
    };
  }
  return { type: "SpecApplied", status: "False", reason: "ApplyingLimits", message: `applying ${diff.live.join(", ")} live` };
}

function exitMessage(c: ContainerInfo, limits?: ResourceLimits): string {
  if (c.state === "exited" && c.oomKilled) return oomMessage(c.exitCode, limits?.memoryBytes ?? c.resources?.memoryBytes ?? 0n);
  if (c.state === "exited") return `exited with code ${c.exitCode}`;
  return `container is ${c.state}`;
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** Phase message of a server whose install failed: what happened, where its output is, what to do. */
export function installFailedMessage(i: Pick<InstallRecord, "attempt" | "exitCode" | "timedOut" | "message">): string {
  const what = i.timedOut ? "timed out and was killed" : i.exitCode !== undefined ? `exited with code ${i.exitCode}` : `failed (${i.message || "no reason given"})`;
  return `the install script ${what} (attempt ${i.attempt}); read its output with GetInstallLog, fix the cause, then run it again with ReinstallServer`;
}

/** Human name of a command kind for messages, e.g. "ensure-running". */
export function commandName(kind: CommandKind): string {
  return (CommandKind[kind] ?? "unknown").toLowerCase().replace(/_/g, "-");
}
