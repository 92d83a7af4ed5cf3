import { create, equals, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { BackupJobSchema, BackupLocationSchema, CommandKind, CommandSchema, ContainerSpecSchema, InstallJobSchema, type Command, type CommandResult } from "@berth/proto/berth/v1/agent_pb.js";
import { CrashStateSchema, DesiredState, InstallState, InstallStatusSchema, OperationSchema, Phase, RestartPolicy, ServerStatusSchema, type InstallStatus, type Operation, type ResourceLimits } from "@berth/proto/berth/v1/server_pb.js";
import { newId } from "../ids.js";
import type { Logger } from "../log.js";
import type { AgentHub } from "../link/agent-hub.js";
import type { Store, WriteOp } from "../store/store.js";
import { type BackupLocationRecord, type DataOp, eventCommand, type EventInput, type ExitCause, type InstallRecord, type Lifecycle, type ServerRecord, type StrayCopy } from "../domain/records.js";
import { DEFAULT_PIDS_LIMIT, effectiveLimits, oomMessage } from "../domain/limits.js";
import { LABEL_GENERATION, LABEL_MANAGER, LABEL_ROLE, LABEL_SERVER, LABEL_SPEC_HASH, ROLE_INSTALL } from "../domain/labels.js";
import { ConflictError, HostOwnershipLostError, NotFoundError } from "../errors.js";
import type { Ledger } from "../ledger/ledger.js";
import { mergeConditions, sameConditions } from "./conditions.js";
import { COMMAND_DEADLINE_MS, commandName, DATA_COMMAND_KINDS, installFailedMessage, pickContainer, plan, type Plan } from "./plan.js";
import { WorkQueue } from "./queue.js";
import { projectNetworkName } from "./project-network.js";
import { specHash } from "./spec-hash.js";
import type { SecretBox } from "../store/secrets.js";
import { fencedCommit, type HostFence } from "../cluster/host-ownership.js";

export interface ReconcilerDeps {
  /** The store contract: reads, and each decision written as one batch. */
  store: Store;
  hub: AgentHub;
  log: Logger;
  managerId: string;
  /** Builds the event operations of a batch (its clock dates them); without it, the reconciler's clock does. */
  ledger?: Pick<Ledger, "op">;
  now?: () => number;
  /** Override command deadlines per kind (e.g. a short start timeout). */
  deadlineMs?: Partial<Record<CommandKind, number>>;
  /** How long a soft-deleted server's record is kept (default 24 h). */
  retentionMs?: number;
  /** First crash-restart delay (default 10 s). */
  crashBackoffBaseMs?: number;
  /** How long a transfer's target may be away before the transfer fails (plan's TRANSFER_OFFLINE_GRACE_MS by default). */
  transferOfflineGraceMs?: number;
  /** Called after each queued reconcile with its duration (metrics). */
  observeReconcile?: (ms: number, ok: boolean) => void;
  /**
   * Every server is reconciled at least this often (default 5 min; 0: never),
   * spread evenly over the period: the level-based safety net for any trigger
   * that was missed.
   */
  resyncIntervalMs?: number;
  /** Log rotation of a container whose spec sets none (default DEFAULT_CONTAINER_LOGS). */
  containerLogs?: ContainerLogDefaults;
  /** The pids limit of a container whose spec sets none (--default-pids-limit; default DEFAULT_PIDS_LIMIT; 0: none). */
  defaultPidsLimit?: number;
  /** The secret key: a spec's secret env values count in its hash by their HMAC (spec-hash.ts). */
  secrets?: SecretBox;
  /** Servers reconciled at once (the queue's concurrency, default DEFAULT_CONCURRENCY). */
  concurrency?: number;
  /**
   * Host ownership (cluster/host-ownership.ts), with several managers: only
   * servers of hosts this manager may reconcile are, and each batch for an
   * owned host is fenced by host.checkOwner. Without it every server is this
   * manager's (one manager).
   */
  ownership?: HostFence;
}

/** json-file rotation for servers whose spec leaves it at 0. */
export interface ContainerLogDefaults {
  maxSizeBytes: number;
  maxFiles: number;
}

/** 10 MiB x 3: a container's log takes at most 30 MiB of the host's disk. */
export const DEFAULT_CONTAINER_LOGS: ContainerLogDefaults = { maxSizeBytes: 10 * 1024 * 1024, maxFiles: 3 };

/** Default period of the full resync. */
const DEFAULT_RESYNC_INTERVAL_MS = 5 * 60_000;
/** The full resync enqueues a slice of the servers this often (so it is spread out). */
const RESYNC_TICKS_PER_PERIOD = 60;
/** noteExit reads and decides again at most this often when its batch meets a concurrent write. */
const NOTE_EXIT_ATTEMPTS = 5;

/** How often a server's copy on another host is tried again while that host is away (or held by another manager). */
const STRAY_RETRY_MS = 10_000;

/** An install script's timeout when its spec gives none (ServerInstall.timeout_seconds 0). */
export const DEFAULT_INSTALL_TIMEOUT_S = 600;
/** RUN_INSTALL's deadline: the script's timeout plus this (the image's pull, the container's removal). */
export const INSTALL_DEADLINE_MARGIN_MS = 10 * 60_000;
/** Where the install container sees the data directory (eggs' install scripts expect it there). */
export const INSTALL_MOUNT_PATH = "/mnt/server";

/** Default graceful stop timeout (seconds) before the agent kills the container. */
export const DEFAULT_STOP_TIMEOUT_S = 10;

/** A one-off command about no server record: an orphan's inspection or removal (OrphanService). */
export interface OrphanCommand {
  kind: CommandKind;
  containerId?: string;
  dataDir?: string;
  network?: string;
}

/** How long the agent may take to answer one orphan command (default 30 s). */
const ORPHAN_ANSWER_MS: Partial<Record<CommandKind, number>> = {
  [CommandKind.INSPECT_CONTAINER]: 15_000,
  [CommandKind.REMOVE_CONTAINER]: 60_000,
  [CommandKind.REMOVE_STRAY_DATA]: 120_000,
  [CommandKind.REMOVE_NETWORK]: 30_000,
};

/** Why a record is dropped: the event that says so (`server.purged` unless an adoption is rolled back). */
export interface RecordDrop {
  type?: "server.purged" | "orphan.adopt_failed";
  actor: string;
  reason: string;
  message: string;
  correlationId?: string;
}

/**
 * Level-based reconciler: each run re-reads spec and observation from the
 * store, asks plan() what to do, and commits the outcome as one batch. Running
 * it twice with nothing new changes nothing the second time.
 *
 * Between a run's reads and its commit other writers may act (an agent's
 * result finishes the command, an API call changes the server). Whatever the
 * decision assumed is a precondition of its batch (the server's version, the
 * command still open, at most one open command per server), so such a batch
 * is refused whole (ConflictError) and the server is simply reconciled again
 * at once. The queue runs one reconcile per server at a time.
 */
export class Reconciler {
  readonly queue: WorkQueue;
  private readonly now: () => number;
  private readonly eventOp: (e: EventInput) => WriteOp;
  private resyncTimer: NodeJS.Timeout | undefined;
  /** Stray copies being removed now ("<server>/<host>"). */
  private readonly removing = new Set<string>();
  /** Install containers being removed now because their server was deleted (Docker ids). */
  private readonly cancelling = new Set<string>();

  constructor(private readonly deps: ReconcilerDeps) {
    this.now = deps.now ?? Date.now;
    this.eventOp = deps.ledger ? (e) => deps.ledger!.op(e) : (e) => ({ op: "event.append", event: e, at: this.now() });
    this.queue = new WorkQueue({
      process: async (key, cause) => {
        const t0 = performance.now();
        let ok = false;
        try {
          const r = await this.reconcile(key, cause);
          ok = true;
          return r;
        } catch (err) {
          if (!(err instanceof ConflictError)) throw err;
          // A refused ownership fence (HostOwnershipLostError) was already reported by fencedCommit:
          // decided again below, the server is then left to its owner (or to the leader if nobody
          // owns the host).
          // Someone wrote between this run's reads and its commit, and nothing of it was
          // written: not a failure. Level-based, so read again and decide again, at once.
          ok = true;
          deps.log.debug({ server: key, cause, why: err.message }, "reconcile met a concurrent write; reconciling again");
          this.queue.add(key, `${cause} (again after a concurrent write)`);
          return {};
        } finally {
          deps.observeReconcile?.(performance.now() - t0, ok);
        }
      },
      onError: (key, err, retryInMs) => deps.log.error({ server: key, err, retryInMs }, "reconcile failed; retrying"),
      ...(deps.concurrency !== undefined ? { concurrency: deps.concurrency } : {}),
    });
  }

  enqueue(serverId: string, cause: string): void {
    this.queue.add(serverId, cause);
  }

  /**
   * Queues a reconcile and resolves once it has run: for API handlers that
   * answer with the state after it. Runs through the queue like every other
   * trigger (never two at once for a server; a failure is retried with backoff).
   */
  reconcileNow(serverId: string, cause: string): Promise<void> {
    return this.queue.addAndWait(serverId, cause);
  }

  /**
   * Starts the periodic full resync: each period, every server is queued once,
   * in slices spread over the period (a manager with 40,000 servers queues
   * ~670 every 5 s instead of 40,000 at once).
   */
  startResync(): void {
    const periodMs = this.deps.resyncIntervalMs ?? DEFAULT_RESYNC_INTERVAL_MS;
    if (periodMs <= 0 || this.resyncTimer) return;
    let ids: string[] = [];
    let next = 0;
    let listing = false;
    const tickMs = Math.max(50, Math.floor(periodMs / RESYNC_TICKS_PER_PERIOD));
    const tick = async () => {
      if (next >= ids.length) {
        ids = await this.deps.store.allServerIds();
        next = 0;
      }
      const slice = Math.ceil(ids.length / RESYNC_TICKS_PER_PERIOD);
      for (const id of ids.slice(next, next + slice)) this.queue.add(id, "periodic resync");
      next += slice;
    };
    this.resyncTimer = setInterval(() => {
      // A slow listing is not started twice.
      if (listing) return;
      listing = true;
      tick()
        .catch((err: unknown) => this.deps.log.error({ err }, "periodic resync could not list servers; trying again next tick"))
        .finally(() => {
          listing = false;
        });
    }, tickMs);
    this.resyncTimer.unref();
  }

  /** Queues every server placed on `hostId` (soft-deleted ones too: their containers may need removal). */
  async enqueueHost(hostId: string, cause: string): Promise<void> {
    for (const id of await this.deps.store.serverIdsOnHost(hostId)) this.queue.add(id, cause);
  }

  /** Stops the resync and the queue; resolves once the reconciles in progress are over. */
  stop(): Promise<void> {
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    this.resyncTimer = undefined;
    return this.queue.stop();
  }

  /**
   * Records how a server's container exited, as the agent saw it, and adopts
   * the outcome into the desired state where DESIGN.md says so:
   * - stopped outside berth (docker stop/kill): desired becomes stopped
   *   (`drift.adopted`), unless the restart policy is `always` (`drift.healed`);
   * - exited by itself: a crash, restarted per policy by plan(); a clean exit
   *   (code 0) under `on-failure` or `never` adopts desired stopped.
   * One batch, on the version it read: a concurrent write makes it read and decide again.
   */
  async noteExit(serverId: string, cause: ExitCause, exitCode: number, at: number, finishedAt = 0, oomKilled = false): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const s = await this.deps.store.getServer(serverId);
      if (!s || s.deletedAt !== null || s.lifecycle.purge) return;
      try {
        // Fenced like reconcile's batches: a manager that lost the host adopts nothing for it.
        await this.fenced(s.hostId)(this.exitOps(s, cause, exitCode, at, finishedAt, oomKilled));
        break;
      } catch (err) {
        if (err instanceof NotFoundError) return;
        // Unlike reconcile's, not decided again: the host's owner decides from what the agent reports there.
        if (err instanceof HostOwnershipLostError) return;
        if (!(err instanceof ConflictError) || attempt >= NOTE_EXIT_ATTEMPTS) throw err;
      }
    }
    this.enqueue(serverId, cause === "crash" ? "container crashed" : cause === "stopped_externally" ? "container stopped outside berth" : `container exit (${cause})`);
  }

  /** The batch recording an exit of `s`'s container (see noteExit), on `s`'s version. */
  private exitOps(s: ServerRecord, cause: ExitCause, exitCode: number, at: number, finishedAt: number, oomKilled = false): WriteOp[] {
    // Every explained exit is remembered, so plan() can tell it from one still unexplained.
    const lc: Lifecycle = { ...s.lifecycle, lastExit: { cause, at, exitCode, finishedAt, ...(oomKilled ? { oomKilled: true } : {}) } };
    if (cause === "stopped_by_berth" || s.spec.desiredState !== DesiredState.RUNNING) {
      return [{ op: "server.lifecycle", id: s.id, lifecycle: lc, expectVersion: s.version }];
    }
    const policy = s.spec.restartPolicy;
    const base = { project: s.project, serverId: s.id, hostId: s.hostId };
    const events: EventInput[] = [];
    let adoptStopped = false;
    if (cause === "stopped_externally") {
      if (policy === RestartPolicy.ALWAYS) {
        events.push({ ...base, type: "drift.healed", reason: "StoppedOutsideBerth", actor: "reconciler", message: "stopped outside berth; restart policy always restarts it" });
      } else {
        adoptStopped = true;
        events.push({ ...base, type: "drift.adopted", reason: "StoppedOutsideBerth", actor: "reconciler", message: `stopped outside berth (exit code ${exitCode}); desired state is now stopped` });
      }
    } else {
      // An OOM kill is a crash (backoff, crash loop), whatever the code its init reported.
      const cleanExit = exitCode === 0 && !oomKilled && policy !== RestartPolicy.ALWAYS;
      const limit = effectiveLimits(s.spec).memoryBytes;
      events.push({
        ...base,
        type: "container.died",
        reason: oomKilled ? "OOMKilled" : cleanExit ? "Exited" : "Crashed",
        actor: "agent",
        message: oomKilled ? oomMessage(exitCode, limit) : `exited by itself with code ${exitCode}`,
        payload: { exitCode, ...(oomKilled ? { oomKilled: true, memoryLimitBytes: Number(limit) } : {}) },
      });
      if (cleanExit) {
        adoptStopped = true;
        events.push({ ...base, type: "drift.adopted", reason: "ExitedCleanly", actor: "reconciler", message: "exited with code 0; desired state is now stopped" });
      } else {
        lc.crashTimes = [...(lc.crashTimes ?? []).filter((t) => t > at - 10 * 60_000), at];
        lc.restartCount = (lc.restartCount ?? 0) + (policy === RestartPolicy.NEVER ? 0 : 1);
      }
    }
    const ops: WriteOp[] = [{ op: "server.lifecycle", id: s.id, lifecycle: lc, expectVersion: s.version }];
    if (adoptStopped) {
      // The same batch: the lifecycle write above checked the version.
      ops.push({
        op: "server.spec",
        id: s.id,
        spec: { ...s.spec, desiredState: DesiredState.STOPPED },
        generation: s.generation + 1,
        updatedAt: s.updatedAt,
        deletedAt: null,
        hostId: s.hostId,
      });
    }
    return [...ops, ...events.map(this.eventOp)];
  }

  /**
   * One reconcile of one server: reads, plan(), then one batch with every
   * write of the decision (lifecycle, command finish and insert, status, their
   * events), and the new command sent once committed. Rejects with
   * ConflictError when the batch met a concurrent write (nothing written: the
   * queue runs it again); call it through the queue, which runs one per server.
   */
  async reconcile(serverId: string, cause = "resync"): Promise<{ requeueAfterMs?: number }> {
    const { store, hub, managerId } = this.deps;
    const now = this.now();
    let server = await store.getServer(serverId);
    if (!server) return {};
    // Another manager owns the host (holds its agent's stream): it decides for this server.
    if (this.deps.ownership && !(await this.deps.ownership.mayReconcile(server.hostId))) return {};
    // The fence is taken with the decision: a host lost while it is being made refuses its batch.
    const commit = this.fenced(server.hostId, now);
    const hash = specHash(server.spec, { serverId: server.id, box: this.deps.secrets });
    // Only this manager's containers: another manager's copy must never drive this server.
    // An adopted container (bound by id, without berth's labels) counts as the server's own.
    const ours = (await store.containersForServer(server.hostId, server.id)).filter((c) => c.info.labels[LABEL_MANAGER] === managerId);
    // Its install container (RUN_INSTALL) is labelled with the server but is not its container.
    const installers = ours.filter((c) => c.info.labels[LABEL_ROLE] === ROLE_INSTALL);
    const mine = ours.filter((c) => c.info.labels[LABEL_ROLE] !== ROLE_INSTALL);
    const adoptedId = server.lifecycle.adoptedContainerId;
    const adopted = adoptedId && !mine.some((c) => c.containerId === adoptedId) ? await store.observedContainer(server.hostId, adoptedId) : undefined;
    const observed = adopted ? [...mine, adopted] : mine;
    const containers = observed.map((c) => c.info);
    const dataDir = await store.getDataDir(server.hostId, server.id);
    const inflight = await store.openCommandForServer(server.id);
    const last = await store.lastFinishedCommand(server.id);
    const connected = hub.isConnected(server.hostId);

    // Every write of this decision, committed together; the first server write carries the
    // version read above (later ones in the batch are covered by it).
    const ops: WriteOp[] = [];
    const events: EventInput[] = [];
    let lifecycle: Lifecycle | undefined;

    // The last finished command may have satisfied a restart or rebuild request: folded in
    // here, before plan() and in the batch of this decision, so no new command can be
    // issued without it (commands are issued only here, one open per server).
    const done = last?.state === "succeeded" ? noteCommandFinished(server.lifecycle, last.command, last.createdAt) : undefined;
    if (done) {
      lifecycle = done;
      server = { ...server, lifecycle };
    }
    // A finished backup, restore or safety-copy removal ends its part of the lifecycle (its
    // outcome was recorded with the result: agent-service.ts).
    // A transfer's archive is made on the source: the record moves to the target host.
    const moving = server.lifecycle.dataOp;
    if (moving?.transfer?.stage === "backup" && last?.state === "succeeded" && last.command.kind === CommandKind.BACKUP_DATA && last.command.backup?.backupId === moving.backupId && last.createdAt >= moving.requestedAt) {
      await this.moveToTarget(server, moving, now, commit);
      return { requeueAfterMs: 0 };
    }
    // A clone waiting for its source's fresh backup: carry on when it succeeded, fail when it did not.
    if (moving?.awaitBackup) {
      const b = await store.getBackup(moving.backupId);
      if (!b || b.state === "failed" || b.state === "deleting") {
        const message = `the clone's data could not be copied: the source's backup ${moving.backupId} ${b ? `failed: ${b.message || b.reason}` : "is gone"}; purge this server, or start it to run it with an empty data directory`;
        const { dataOp: _ended, ...rest } = server.lifecycle;
        lifecycle = { ...rest, cloneFailed: { reason: "CloneFailed", message, at: now } };
        events.push({ project: server.project, serverId: server.id, hostId: server.hostId, actor: "reconciler", type: "server.clone_failed", reason: b?.reason || "BackupFailed", correlationId: moving.backupId, message });
        server = { ...server, lifecycle };
      } else if (b.state === "succeeded") {
        const { awaitBackup: _done, ...op } = moving;
        lifecycle = { ...server.lifecycle, dataOp: { ...op, sha256: b.sha256, rawBytes: b.rawBytes } };
        server = { ...server, lifecycle };
      }
    }
    const dataDone = last ? noteDataCommandFinished(server.lifecycle, last) : undefined;
    if (dataDone?.moveBack && moving?.transfer) {
      await this.moveBack(server, moving, dataDone.moveBack, undefined, now, commit);
      return { requeueAfterMs: 0 };
    }
    if (dataDone) {
      lifecycle = dataDone.lifecycle;
      server = { ...server, lifecycle };
      if (dataDone.event) events.push({ project: server.project, serverId: server.id, hostId: server.hostId, actor: "reconciler", ...dataDone.event });
    }

    // The install script's command finished: its outcome goes into lifecycle.install, with its event.
    const installDone = last ? await this.installFinished(server, last, now) : undefined;
    if (installDone) {
      lifecycle = installDone.lifecycle;
      server = { ...server, lifecycle };
      events.push(installDone.event);
    }

    // A container seen before that is gone without any berth command in flight was
    // removed outside berth: remember when, so plan() shows Missing instead of recreating it.
    if (connected && !inflight && containers.length === 0 && server.status.containerId && server.deletedAt === null &&
        !server.lifecycle.purge && (server.lifecycle.containerLostAt ?? 0) <= server.updatedAt) {
      lifecycle = { ...server.lifecycle, containerLostAt: now };
      events.push({ project: server.project, serverId: server.id, hostId: server.hostId, type: "drift.container_removed", reason: "ContainerMissing", actor: "reconciler", message: "the container was removed outside berth; data kept; start the server to recreate it" });
      server = { ...server, lifecycle };
    }

    // Once per reconcile: plan() compares it with the container's, and a command carries it.
    const network = projectNetworkName(managerId, server.project);
    const limits = effectiveLimits(server.spec, this.deps.defaultPidsLimit ?? DEFAULT_PIDS_LIMIT);
    const p = plan({
      now,
      limits,
      spec: server.spec,
      generation: server.generation,
      specHash: hash,
      network,
      deleted: server.deletedAt !== null,
      deletedAt: server.deletedAt,
      retentionMs: this.deps.retentionMs ?? 24 * 3600_000,
      lifecycle: server.lifecycle,
      ...(this.deps.crashBackoffBaseMs !== undefined ? { crashBackoffBaseMs: this.deps.crashBackoffBaseMs } : {}),
      ...(this.deps.transferOfflineGraceMs !== undefined ? { transferOfflineGraceMs: this.deps.transferOfflineGraceMs } : {}),
      dataInitialized: server.dataInitialized,
      lastActionAt: server.updatedAt,
      hostConnected: connected,
      ...(!connected && server.lifecycle.dataOp?.transfer ? { hostOfflineSince: (await store.getHost(server.hostId))?.lastHeartbeat ?? 0 } : {}),
      containers,
      data: dataDir && { present: dataDir.present, sizeBytes: dataDir.sizeBytes },
      observedAt: Math.max(dataDir?.checkedAt ?? 0, ...observed.map((c) => c.observedAt)),
      inflight: inflight && {
        id: inflight.id,
        kind: inflight.command.kind,
        createdAt: inflight.createdAt,
        deadlineAt: inflight.deadlineAt,
      },
      lastFinished: last && {
        kind: last.command.kind,
        state: last.state as "succeeded" | "failed" | "expired",
        reason: last.reason ?? "",
        message: last.message ?? "",
        createdAt: last.createdAt,
        finishedAt: last.finishedAt ?? last.createdAt,
      },
    });

    if (p.assumeCrash) {
      // The exit stayed unexplained past its grace: record it as a crash (and any adoption),
      // then decide again from the recorded exit.
      await commit(this.exitOps(server, "crash", p.assumeCrash.exitCode, now, p.assumeCrash.finishedAt, p.assumeCrash.oomKilled));
      return { requeueAfterMs: 0 };
    }
    if (p.settledExit) {
      lifecycle = { ...server.lifecycle, lastExit: { cause: "stopped_by_berth", at: now, exitCode: p.settledExit.exitCode, finishedAt: p.settledExit.finishedAt } };
    } else if (p.pendingExit && server.lifecycle.pendingExit?.finishedAt !== p.pendingExit.finishedAt) {
      lifecycle = { ...server.lifecycle, pendingExit: { finishedAt: p.pendingExit.finishedAt, seenAt: now } };
    }
    if (p.limitsAttempt) {
      lifecycle = { ...server.lifecycle, limitsAttempt: p.limitsAttempt };
    }
    if (lifecycle) server = { ...server, lifecycle };

    // The backup or restore under way failed before (or without) its command finishing: it ends,
    // recorded on the backup and in the ledger, and the server goes back to its desired state.
    const op = server.lifecycle.dataOp;
    const expiredData = p.expireInflight && inflight && DATA_COMMAND_KINDS.has(inflight.command.kind) && op && inflight.command.backup?.backupId === op.backupId;
    const dataFailure = p.failDataOp ?? (expiredData ? { reason: "DeadlineExceeded", message: `the ${op!.kind} did not finish within ${Math.round((op!.deadlineAt - op!.requestedAt) / 1000)}s` } : undefined);
    if (op && dataFailure && op.transfer && op.transfer.stage !== "backup") {
      await this.moveBack(server, op, dataFailure, p.expireInflight ? inflight : undefined, now, commit);
      return { requeueAfterMs: 0 };
    }
    if (op && dataFailure) {
      const { dataOp: _ended, ...rest } = server.lifecycle;
      lifecycle = op.fresh && op.kind === "restore" ? { ...rest, cloneFailed: { reason: "CloneFailed", message: `the clone's data could not be copied: ${dataFailure.message}; purge this server, or start it to run it with an empty data directory`, at: now } } : rest;
      server = { ...server, lifecycle };
      const archiving = op.kind === "backup" || op.transfer?.stage === "backup";
      if (archiving) ops.push({ op: "backup.update", id: op.backupId, set: { state: "failed", reason: dataFailure.reason, message: dataFailure.message, finishedAt: now }, ifState: ["pending", "running"] });
      if (op.transfer) {
        events.push({ type: "server.transfer_failed", project: server.project, serverId: server.id, hostId: server.hostId, reason: dataFailure.reason, message: `transfer to host ${op.transfer.targetHost} failed; the server stays here: ${dataFailure.message}`, actor: "reconciler", correlationId: op.backupId, payload: { from: op.transfer.sourceHost, to: op.transfer.targetHost } });
      }
      events.push({
        type: archiving ? "backup.failed" : "backup.restore_failed",
        project: server.project,
        serverId: server.id,
        hostId: server.hostId,
        reason: dataFailure.reason,
        message: `${op.kind} ${op.backupId}: ${dataFailure.message}`,
        actor: "reconciler",
        correlationId: op.backupId,
      });
    }

    if (p.deleteRecord) {
      await this.dropRecord(server, { actor: "reconciler", reason: p.reason, message: p.message }, cause);
      return {};
    }
    // The transfer is done: the server is in its desired state on its new host; the source copy goes later.
    if (p.finishDataOp && op?.transfer) {
      const t = op.transfer;
      const { dataOp: _ended, ...rest } = server.lifecycle;
      const keepMs = t.keepSourceHours * 3_600_000;
      lifecycle = { ...rest, strayCopies: [...(rest.strayCopies ?? []).filter((c) => c.hostId !== t.sourceHost), { hostId: t.sourceHost, removeAt: now + keepMs, why: "transfer_source" }] };
      server = { ...server, lifecycle };
      events.push({
        type: "server.transfer_succeeded",
        project: server.project,
        serverId: server.id,
        hostId: server.hostId,
        reason: "Transferred",
        actor: "reconciler",
        correlationId: op.backupId,
        message: `moved from host ${t.sourceHost} in ${Math.round((now - op.requestedAt) / 1000)}s; the copy on ${t.sourceHost} is removed ${keepMs > 0 ? `after ${t.keepSourceHours} h` : "now"}`,
        payload: { from: t.sourceHost, to: t.targetHost, backupId: op.backupId },
      });
    }

    const srv = server;
    if (p.settleInflight && inflight) {
      const message = `${commandName(inflight.command.kind)}: its result came after the deadline, but the host shows it done`;
      // Refused (ConflictError) if the agent's result finished it meanwhile.
      ops.push({ op: "command.finish", id: inflight.id, state: "succeeded", at: now, reason: "ObservedDone", message });
      events.push({ type: "command.succeeded", project: srv.project, serverId: srv.id, hostId: srv.hostId, reason: "ObservedDone", message, actor: "reconciler", correlationId: inflight.id, command: eventCommand(inflight) });
    }
    if (p.expireInflight && inflight) {
      const message = `${commandName(inflight.command.kind)} did not finish within ${Math.round((inflight.deadlineAt - inflight.createdAt) / 1000)}s`;
      ops.push({ op: "command.finish", id: inflight.id, state: "expired", at: now, reason: "DeadlineExceeded", message });
      events.push({ type: "command.expired", project: srv.project, serverId: srv.id, hostId: srv.hostId, reason: p.reason, message, actor: "reconciler", correlationId: inflight.id, command: eventCommand(inflight) });
    }
    let toSend: Command | undefined;
    if (p.command) {
      const dataOp = srv.lifecycle.dataOp;
      const isDataOp = dataOp && (p.command.kind === CommandKind.BACKUP_DATA || p.command.kind === CommandKind.RESTORE_DATA);
      const installing = p.command.kind === CommandKind.RUN_INSTALL && srv.spec.install;
      // A backup or restore has the deadline it was asked with; an install its timeout and a margin.
      const deadlineMs = isDataOp
        ? Math.max(1, dataOp.deadlineAt - now)
        : installing
          ? (srv.spec.install!.timeoutSeconds || DEFAULT_INSTALL_TIMEOUT_S) * 1000 + INSTALL_DEADLINE_MARGIN_MS
          : this.deadlineFor(p.command.kind);
      toSend = this.buildCommand(srv, hash, network, limits, p.command.kind, p.command.dataPolicy, p.command.recreate ?? false, now, deadlineMs);
      if (isDataOp) {
        toSend.backup = create(BackupJobSchema, {
          backupId: dataOp.backupId,
          location: locationOf(dataOp.location),
          key: dataOp.key,
          ignore: dataOp.ignore ?? [],
          sha256: dataOp.sha256 ?? "",
          rawBytes: BigInt(dataOp.rawBytes ?? 0),
        });
        if (p.command.kind === CommandKind.BACKUP_DATA) ops.push({ op: "backup.update", id: dataOp.backupId, set: { state: "running", startedAt: now, hostId: srv.hostId }, ifState: ["pending", "running"] });
      }
      if (p.command.kind === CommandKind.RESTORE_DATA) toSend.dataDir = previousDataName(srv.id, toSend.id);
      if (installing) {
        const spec = srv.spec.install!;
        // The spec's env is the script's environment (secret values still sealed: openCommand opens them on the wire).
        toSend.install = create(InstallJobSchema, {
          image: spec.image,
          script: spec.script,
          entrypoint: spec.entrypoint,
          timeoutSeconds: spec.timeoutSeconds || DEFAULT_INSTALL_TIMEOUT_S,
          env: srv.spec.env,
          mountPath: INSTALL_MOUNT_PATH,
          labels: { [LABEL_MANAGER]: this.deps.managerId, [LABEL_SERVER]: srv.id },
        });
        const attempt = (srv.lifecycle.install?.attempt ?? 0) + 1;
        lifecycle = { ...srv.lifecycle, install: { state: "running", attempt, requestedAt: srv.lifecycle.install?.requestedAt ?? now, commandId: toSend.id, startedAt: now } };
        events.push({
          type: "install.started",
          project: srv.project,
          serverId: srv.id,
          hostId: srv.hostId,
          reason: "Installing",
          actor: "reconciler",
          correlationId: toSend.id,
          message: `install script started (attempt ${attempt}, image ${spec.image}, timeout ${spec.timeoutSeconds || DEFAULT_INSTALL_TIMEOUT_S} s)`,
        });
      }
      if (p.command.kind === CommandKind.DISCARD_PREVIOUS_DATA) toSend.dataDir = srv.lifecycle.previousData?.find((d) => !d.keep)?.name ?? "";
      // Refused (ConflictError) if the server has an open command after all: the database allows one.
      const c = this.commandOps(srv, toSend, now, now + deadlineMs, { reason: p.reason, actor: "reconciler" });
      ops.push(c.op);
      events.push(c.event);
    }
    const settled = !p.command && !inflight && !p.expireInflight && !p.settleInflight;
    const shown = pickContainer(containers, hash);
    const st = this.nextStatus(srv, p, cause, now, {
      dataPresent: dataDir?.present === true,
      dataSize: dataDir?.sizeBytes ?? 0,
      containerId: shown?.id ?? "",
      containerState: shown?.state ?? "",
      // Docker's own start time while the container is up: the dashboard's uptime.
      startedTime: shown && (shown.state === "running" || shown.state === "paused") ? shown.startedTime : undefined,
      observedGeneration: settled ? srv.generation : Number(srv.status.observedGeneration),
      operation: operationOf(srv.lifecycle.dataOp, p.dataStage),
      install: srv.spec.install ? installStatusOf((lifecycle ?? srv.lifecycle).install) : undefined,
    });
    // Server writes first (the first one checks the version), then commands, then events.
    const serverOps: WriteOp[] = [];
    if (lifecycle) serverOps.push({ op: "server.lifecycle", id: srv.id, lifecycle });
    if (st) serverOps.push(st.op);
    if (serverOps.length > 0) serverOps[0] = { ...serverOps[0], expectVersion: srv.version } as WriteOp;
    // A command decided from this version must not be issued if the spec changed meanwhile.
    else if (ops.length > 0 || events.length > 0) serverOps.push({ op: "server.check", id: srv.id, expectVersion: srv.version });
    const batch = [...serverOps, ...ops, ...events.map(this.eventOp), ...(st?.events ?? []).map(this.eventOp)];
    if (batch.length > 0) await commit(batch);
    if (st?.phaseChanged) {
      this.deps.log.info(
        { server: srv.id, name: srv.name, host: srv.hostId, from: Phase[srv.status.phase], to: Phase[p.phase], reason: p.reason, cause },
        "phase changed",
      );
    }

    if (toSend) {
      this.deps.log.info({ server: srv.id, name: srv.name, host: srv.hostId, command: toSend.id, kind: commandName(toSend.kind), cause }, "command issued");
      await this.dispatch(srv.hostId, toSend, now);
    }
    if (p.cancelInstall) this.cancelInstall(srv, installers.map((c) => c.containerId));
    if (p.expireInflight || p.settleInflight || dataFailure || p.finishDataOp) return { requeueAfterMs: 0 };
    const stray = this.strayCopiesDue(srv, now);
    const requeue = stray === undefined ? p.requeueAfterMs : Math.min(p.requeueAfterMs ?? Infinity, stray);
    return requeue !== undefined ? { requeueAfterMs: requeue } : {};
  }

  /**
   * The lifecycle and event after the install's command (`last`) finished,
   * or undefined when `last` is not the install under way. A failure (exit
   * code, timeout, the command expiring) leaves the install failed until
   * ReinstallServer; the exit code and timeout come from its log's row.
   * An install cut short because the server was deleted is pending again
   * (it runs when the server is restored and started).
   */
  private async installFinished(
    server: ServerRecord,
    last: { command: Command; state: string; createdAt: number; finishedAt?: number | null; reason?: string | null; message?: string | null },
    now: number,
  ): Promise<{ lifecycle: Lifecycle; event: EventInput } | undefined> {
    const inst = server.lifecycle.install;
    if (last.command.kind !== CommandKind.RUN_INSTALL || !inst || inst.state !== "running" || inst.commandId !== last.command.id) return undefined;
    const finishedAt = last.finishedAt ?? now;
    const base = { project: server.project, serverId: server.id, hostId: server.hostId, actor: "reconciler", correlationId: last.command.id };
    if (last.state === "succeeded") {
      const install: InstallRecord = { ...inst, state: "succeeded", finishedAt, exitCode: 0, timedOut: false, message: last.message || "the install script succeeded" };
      return {
        lifecycle: { ...server.lifecycle, install },
        event: { ...base, type: "install.succeeded", reason: "Installed", message: `install script succeeded (attempt ${inst.attempt}) in ${((finishedAt - (inst.startedAt ?? last.createdAt)) / 1000).toFixed(1)} s` },
      };
    }
    if (server.deletedAt !== null || server.lifecycle.purge) {
      const { commandId: _c, startedAt: _s, ...rest } = inst;
      return {
        lifecycle: { ...server.lifecycle, install: { ...rest, state: "pending" } },
        event: { ...base, type: "install.failed", reason: "ServerDeleted", message: `install script stopped (attempt ${inst.attempt}): the server was deleted; it runs again if the server is restored and started` },
      };
    }
    const row = (await this.deps.store.installLogs(server.id)).find((l) => l.commandId === last.command.id);
    const install: InstallRecord = {
      ...inst,
      state: "failed",
      finishedAt,
      ...(row ? { exitCode: row.exitCode, timedOut: row.timedOut } : {}),
      message: last.state === "expired" ? `no result within its deadline (${last.message || "the agent did not answer"})` : last.message || last.reason || "",
    };
    return {
      lifecycle: { ...server.lifecycle, install },
      event: { ...base, type: "install.failed", reason: "InstallFailed", message: installFailedMessage(install) },
    };
  }

  /** Removes the install containers of a server deleted while it installs (once at a time each; the next reconcile tries again). */
  private cancelInstall(s: ServerRecord, containerIds: readonly string[]): void {
    for (const id of containerIds) {
      if (this.cancelling.has(id)) continue;
      this.cancelling.add(id);
      this.requestOrphanCommand(s.hostId, { kind: CommandKind.REMOVE_CONTAINER, containerId: id })
        .then((r) => {
          if (!r.success) this.deps.log.warn({ server: s.id, container: id, reason: r.reason, message: r.message }, "could not remove the install container of a deleted server; trying again");
          else this.deps.log.info({ server: s.id, container: id }, "removed the install container: the server was deleted during its install");
        })
        .catch((err: unknown) => this.deps.log.warn({ server: s.id, container: id, err: String(err) }, "could not remove the install container of a deleted server; trying again"))
        .finally(() => this.cancelling.delete(id));
    }
  }

  /**
   * A transfer's archive is made and the source copy untouched (stopped):
   * the record moves to the target host, where plan() restores the archive
   * and then creates the server. The containers and data the source keeps
   * are the fallback until the server runs on the target.
   */
  private async moveToTarget(server: ServerRecord, op: DataOp, now: number, commit: (ops: WriteOp[]) => Promise<unknown>): Promise<void> {
    const t = op.transfer!;
    const b = await this.deps.store.getBackup(op.backupId);
    if (!b || b.state !== "succeeded") {
      // The archive's row says otherwise (deleted meanwhile): the transfer fails here, nothing moved.
      const { dataOp: _ended, ...rest } = server.lifecycle;
      await commit([
        { op: "server.lifecycle", id: server.id, lifecycle: rest, expectVersion: server.version },
        this.eventOp({ type: "server.transfer_failed", project: server.project, serverId: server.id, hostId: server.hostId, reason: "ArchiveGone", actor: "reconciler", correlationId: op.backupId, message: `transfer to host ${t.targetHost} failed: its archive (backup ${op.backupId}) is ${b ? b.state : "gone"}; the server stays here` }),
      ]);
      return;
    }
    const { containerLostAt: _lost, pendingExit: _pending, adoptedContainerId: _adopted, ...kept } = server.lifecycle;
    const lifecycle: Lifecycle = {
      ...kept,
      createPending: true,
      // A copy left on the target by an earlier transfer is replaced by this one (the restore keeps it as its safety copy).
      ...(kept.strayCopies ? { strayCopies: kept.strayCopies.filter((c) => c.hostId !== t.targetHost) } : {}),
      dataOp: { ...op, location: t.targetLocation, sha256: b.sha256, rawBytes: b.rawBytes, progress: undefined, transfer: { ...t, stage: "restore", movedAt: now } } as DataOp,
    };
    if (lifecycle.strayCopies?.length === 0) delete lifecycle.strayCopies;
    await commit([
      { op: "server.spec", id: server.id, spec: { ...server.spec, hostId: t.targetHost }, generation: server.generation + 1, updatedAt: now, deletedAt: server.deletedAt, hostId: t.targetHost, expectVersion: server.version },
      { op: "server.lifecycle", id: server.id, lifecycle },
      // Nothing observed on the source applies on the target.
      { op: "server.status", id: server.id, status: { ...server.status, phase: Phase.PENDING, reason: "Transferring", message: `moving from host ${t.sourceHost}: restoring the data here`, containerId: "", containerState: "", dataExists: false }, dataInitialized: true },
      this.eventOp({
        type: "server.transfer_moved",
        project: server.project,
        serverId: server.id,
        hostId: t.targetHost,
        reason: "Archived",
        actor: "reconciler",
        correlationId: op.backupId,
        message: `data archived on host ${t.sourceHost} as backup ${op.backupId} (${b.rawBytes} bytes, sha256 ${b.sha256.slice(0, 12)}…); restoring on host ${t.targetHost}; the source keeps its copy until the server runs here`,
        payload: { from: t.sourceHost, to: t.targetHost },
      }),
    ]);
    this.deps.log.info({ server: server.id, name: server.name, from: t.sourceHost, to: t.targetHost, backup: op.backupId }, "transfer: record moved to the target host");
  }

  /**
   * A transfer failed after its record moved to the target: the record goes
   * back to the source host, whose container and data were never touched, and
   * what the target got (its restore, a container) is removed there later.
   */
  private async moveBack(server: ServerRecord, op: DataOp, why: { reason: string; message: string }, expire: { id: string; createdAt: number; deadlineAt: number; command: Command } | undefined, now: number, commit: (ops: WriteOp[]) => Promise<unknown>): Promise<void> {
    const t = op.transfer!;
    const { dataOp: _ended, createPending: _pending, ...rest } = server.lifecycle;
    const strayCopies = [...(rest.strayCopies ?? []).filter((c) => c.hostId !== t.targetHost && c.hostId !== t.sourceHost), { hostId: t.targetHost, removeAt: now, why: "transfer_partial" as const }];
    const ops: WriteOp[] = [
      { op: "server.spec", id: server.id, spec: { ...server.spec, hostId: t.sourceHost }, generation: server.generation + 1, updatedAt: now, deletedAt: server.deletedAt, hostId: t.sourceHost, expectVersion: server.version },
      { op: "server.lifecycle", id: server.id, lifecycle: { ...rest, strayCopies } },
      { op: "server.status", id: server.id, status: { ...server.status, phase: Phase.PENDING, reason: "TransferFailed", message: `the transfer to host ${t.targetHost} failed; back on host ${t.sourceHost} with its data as it was: ${why.message}`, containerId: "", containerState: "" }, dataInitialized: true },
    ];
    if (expire) ops.push({ op: "command.finish", id: expire.id, state: "expired", at: now, reason: "DeadlineExceeded", message: `${commandName(expire.command.kind)}: the transfer gave up on it` });
    ops.push(
      this.eventOp({
        type: "server.transfer_failed",
        project: server.project,
        serverId: server.id,
        hostId: t.sourceHost,
        reason: why.reason,
        actor: "reconciler",
        correlationId: op.backupId,
        message: `transfer to host ${t.targetHost} failed: ${why.message}; the server is back on host ${t.sourceHost} with its data as it was, and what reached ${t.targetHost} is removed there`,
        payload: { from: t.sourceHost, to: t.targetHost },
      }),
    );
    await commit(ops);
    this.deps.log.warn({ server: server.id, name: server.name, from: t.sourceHost, to: t.targetHost, reason: why.reason, message: why.message }, "transfer failed: record moved back to the source host");
  }

  /**
   * Starts the removal of the copies of `s` on other hosts that are due (a
   * transfer's source, a failed transfer's target), in the background; the
   * time until the next is due, or undefined when none is left.
   */
  private strayCopiesDue(s: ServerRecord, now: number): number | undefined {
    const copies = s.lifecycle.strayCopies;
    if (!copies || copies.length === 0 || s.lifecycle.dataOp) return undefined;
    let next = Infinity;
    for (const c of copies) {
      if (now < c.removeAt) next = Math.min(next, c.removeAt - now);
      else if (!this.removing.has(`${s.id}/${c.hostId}`)) {
        void this.removeStrayCopy(s.id, c).finally(() => this.removing.delete(`${s.id}/${c.hostId}`));
        this.removing.add(`${s.id}/${c.hostId}`);
      }
    }
    // Retried while its host is away or held by another manager.
    return Math.min(next, STRAY_RETRY_MS);
  }

  /**
   * Removes server `serverId`'s containers and data directory on `copy.hostId`
   * (not its host), through this manager's stream to that host, then drops
   * the copy from the record. When the host is not connected here, it waits.
   */
  private async removeStrayCopy(serverId: string, copy: StrayCopy): Promise<void> {
    const { store, hub, log } = this.deps;
    const hostId = copy.hostId;
    if (!hub.isConnected(hostId)) return;
    const fresh = await store.getServer(serverId);
    if (!fresh || fresh.hostId === hostId || fresh.lifecycle.dataOp || !fresh.lifecycle.strayCopies?.some((c) => c.hostId === hostId)) return;
    try {
      for (const c of await store.containersForServer(hostId, serverId)) {
        if (c.info.labels[LABEL_MANAGER] !== this.deps.managerId) continue;
        const r = await this.requestOrphanCommand(hostId, { kind: CommandKind.REMOVE_CONTAINER, containerId: c.containerId });
        if (!r.success) throw new Error(`removing container ${c.containerId.slice(0, 12)}: ${r.message || r.reason}`);
      }
      const r = await this.requestOrphanCommand(hostId, { kind: CommandKind.REMOVE_STRAY_DATA, dataDir: serverId });
      if (!r.success) throw new Error(`removing the data directory: ${r.message || r.reason}`);
    } catch (err) {
      log.warn({ server: serverId, host: hostId, err: err instanceof Error ? err.message : String(err) }, "could not remove a server's copy on another host; retrying later");
      return;
    }
    for (let attempt = 0; attempt < 3; attempt++) {
      const s = await store.getServer(serverId);
      if (!s) return;
      const left = (s.lifecycle.strayCopies ?? []).filter((c) => c.hostId !== hostId);
      const { strayCopies: _all, ...rest } = s.lifecycle;
      try {
        await this.fenced(s.hostId)([
          { op: "server.lifecycle", id: s.id, lifecycle: left.length > 0 ? { ...rest, strayCopies: left } : rest, expectVersion: s.version },
          { op: "container.removeServer", hostId, serverId },
          this.eventOp({
            type: "server.copy_removed",
            project: s.project,
            serverId: s.id,
            hostId,
            reason: copy.why === "transfer_source" ? "TransferSourceRemoved" : "TransferPartialRemoved",
            actor: "reconciler",
            message: copy.why === "transfer_source" ? `the copy the transfer left on host ${hostId} (container and data directory) is removed` : `what the failed transfer put on host ${hostId} is removed`,
          }),
        ]);
        return;
      } catch (err) {
        if (!(err instanceof ConflictError) || err instanceof HostOwnershipLostError) throw err;
      }
    }
  }

  /**
   * Drops a server's record (its commands go with it) together with the event
   * saying why, in one batch: the one place a server record leaves the
   * store — a finished purge (reconcile), PurgeServer force with the host away,
   * DestroyOrphan of a stranded server, a move_data adoption whose copy failed.
   * Resolves false when the record was already gone (nothing is recorded then).
   */
  async dropRecord(s: Pick<ServerRecord, "id" | "name" | "project" | "hostId">, why: RecordDrop, cause: string): Promise<boolean> {
    try {
      // Fenced when this manager owns the host (a purge finished, retention): one that lost the
      // host meanwhile drops nothing; a forced purge of a host nobody holds is not fenced.
      await this.fenced(s.hostId)([
        { op: "server.delete", id: s.id },
        this.eventOp({
          type: why.type ?? "server.purged",
          project: s.project,
          serverId: s.id,
          hostId: s.hostId,
          actor: why.actor,
          reason: why.reason,
          ...(why.correlationId ? { correlationId: why.correlationId } : {}),
          message: why.message,
        }),
      ]);
    } catch (err) {
      if (err instanceof NotFoundError) return false;
      throw err;
    }
    this.deps.log.info({ server: s.id, name: s.name, host: s.hostId, reason: why.reason, cause }, "server record dropped");
    return true;
  }

  /**
   * A move_data adoption's COPY_DATA (AdoptOrphan) as the new server's
   * in-flight command, with its deadline and `command.issued`: the agent stops
   * the container, copies its mount into the server's data directory and removes
   * it, and plan() waits for it like for any other command. `ops` go into the
   * batch that inserts the record (which has no command yet); once it committed,
   * `dispatch` the command.
   */
  issueCopyData(srv: Pick<ServerRecord, "id" | "project" | "hostId">, from: { containerId: string; mountPath: string }, at: number): { command: Command; ops: WriteOp[] } {
    const deadlineMs = this.deadlineFor(CommandKind.COPY_DATA);
    const command = create(CommandSchema, {
      id: newId("cmd"),
      serverId: srv.id,
      kind: CommandKind.COPY_DATA,
      containerId: from.containerId,
      mountPath: from.mountPath,
      stopTimeoutSeconds: DEFAULT_STOP_TIMEOUT_S,
      // An explicit operator action on a container that is not (yet) this manager's.
      orphanAction: true,
      deadline: timestampFromMs(at + deadlineMs),
    });
    const { op, event } = this.commandOps(srv, command, at, at + deadlineMs, { reason: "CopyingData", actor: "manager" });
    return { command, ops: [op, this.eventOp(event)] };
  }

  /** How long a stored command of `kind` may take (the manager's override, else plan's default). */
  deadlineFor(kind: CommandKind): number {
    return this.deps.deadlineMs?.[kind] ?? COMMAND_DEADLINE_MS[kind];
  }

  /**
   * Sends a recorded (committed) command now if the host's agent is connected,
   * and then records it sent; otherwise it goes with every unacknowledged
   * command when the agent reconnects.
   */
  async dispatch(hostId: string, command: Command, at: number): Promise<void> {
    if (this.deps.hub.sendCommand(hostId, command)) await this.fenced(hostId, at)([{ op: "command.sent", id: command.id, at }]);
  }

  /**
   * The commit of every batch about a server of `hostId`: fenced by this
   * manager's ownership term as of now (cluster/host-ownership.ts
   * fencedCommit), which hears a refused fence; the HostOwnershipLostError
   * (a ConflictError) then reaches the caller.
   */
  private fenced(hostId: string, at = this.now()): (ops: WriteOp[]) => Promise<unknown> {
    return fencedCommit(this.deps.store, this.deps.ownership, hostId, at);
  }

  /**
   * Sends a one-off command about no server record (an orphan's inspection or
   * removal) and resolves with the agent's result; rejects when the host cannot
   * be reached or does not answer in time. It is not stored, so nothing resends
   * it, and it carries orphan_action: an explicit operator action on the
   * container, directory or network it names (the agent refuses other
   * managers' containers without it).
   */
  requestOrphanCommand(hostId: string, init: OrphanCommand): Promise<CommandResult> {
    const timeoutMs = ORPHAN_ANSWER_MS[init.kind] ?? 30_000;
    const command = create(CommandSchema, { ...init, id: newId("cmd"), deadline: timestampFromMs(this.now() + timeoutMs), orphanAction: true });
    return this.deps.hub.request(hostId, command, timeoutMs);
  }

  /** A command's insert (refused when the server has an open one) and its `command.issued` event. */
  private commandOps(srv: Pick<ServerRecord, "id" | "project" | "hostId">, command: Command, at: number, deadlineAt: number, why: { reason: string; actor: string }): { op: WriteOp; event: EventInput } {
    return {
      op: { op: "command.insert", command, hostId: srv.hostId, createdAt: at, deadlineAt },
      event: {
        type: "command.issued",
        project: srv.project,
        serverId: srv.id,
        hostId: srv.hostId,
        reason: why.reason,
        message: commandName(command.kind),
        actor: why.actor,
        correlationId: command.id,
        command: { kind: command.kind, createdAt: at },
      },
    };
  }

  /** The status write (and its events) when the new status differs from `server`'s; undefined when it is the same. */
  private nextStatus(
    server: ServerRecord,
    p: Plan,
    cause: string,
    now: number,
    o: { dataPresent: boolean; dataSize: number; containerId: string; containerState: string; startedTime: Timestamp | undefined; observedGeneration: number; operation: Operation | undefined; install: InstallStatus | undefined },
  ): { op: WriteOp; events: EventInput[]; phaseChanged: boolean } | undefined {
    const { dataPresent, dataSize, containerId, containerState } = o;
    const old = server.status;
    const conditions = mergeConditions(old.conditions, p.conditions, server.generation, now);
    const phaseChanged = old.phase !== p.phase || old.reason !== p.reason;
    const next = create(ServerStatusSchema, {
      phase: p.phase,
      reason: p.reason,
      message: p.message,
      conditions,
      observedGeneration: BigInt(o.observedGeneration),
      containerId,
      containerState,
      dataExists: dataPresent,
      dataSizeBytes: BigInt(dataSize),
      restartCount: server.lifecycle.restartCount ?? 0,
      lastChangeTime: phaseChanged ? timestampFromMs(now) : old.lastChangeTime,
      lastChangeCause: phaseChanged ? cause : old.lastChangeCause,
      ...(o.operation ? { operation: o.operation } : {}),
      ...(o.startedTime ? { startedTime: o.startedTime } : {}),
      ...(o.install ? { install: o.install } : {}),
      // What was known before the host went away stays beside Unknown until it is back.
      ...(p.phase === Phase.UNKNOWN
        ? old.phase === Phase.UNKNOWN
          ? { lastKnownPhase: old.lastKnownPhase, lastKnownReason: old.lastKnownReason }
          : { lastKnownPhase: old.phase, lastKnownReason: old.reason }
        : {}),
      ...(p.crash
        ? { crash: { recent: p.crash.recent, limit: p.crash.limit, ...(p.crash.nextRestartAt ? { nextRestartTime: timestampFromMs(p.crash.nextRestartAt) } : {}) } }
        : p.phase === Phase.UNKNOWN && old.crash
          ? { crash: old.crash } // as last known, like last_known_phase: its crash_loop warning goes on
          : {}),
    });
    const dataInitialized = server.dataInitialized || dataPresent;
    const same =
      !phaseChanged &&
      old.message === next.message &&
      sameConditions(old.conditions, conditions) &&
      old.observedGeneration === next.observedGeneration &&
      old.restartCount === next.restartCount &&
      old.containerId === next.containerId &&
      old.containerState === next.containerState &&
      sameTime(old.startedTime, next.startedTime) &&
      old.dataExists === next.dataExists &&
      old.dataSizeBytes === next.dataSizeBytes &&
      sameOperation(old.operation, next.operation) &&
      (old.install === undefined) === (next.install === undefined) &&
      (old.install === undefined || equals(InstallStatusSchema, old.install, next.install!)) &&
      old.lastKnownPhase === next.lastKnownPhase &&
      old.lastKnownReason === next.lastKnownReason &&
      (old.crash === undefined) === (next.crash === undefined) &&
      (old.crash === undefined || equals(CrashStateSchema, old.crash, next.crash!)) &&
      dataInitialized === server.dataInitialized;
    if (same) return undefined;
    const events: EventInput[] = [];
    if (phaseChanged) {
      if (p.phase === Phase.DATA_LOST) {
        events.push({ project: server.project, serverId: server.id, hostId: server.hostId, type: "data.lost", reason: p.reason, actor: "reconciler", message: p.message });
      }
      events.push({
        type: "phase.changed",
        project: server.project,
        serverId: server.id,
        hostId: server.hostId,
        reason: p.reason,
        message: `${Phase[old.phase] ?? "UNSPECIFIED"} → ${Phase[p.phase]}: ${p.message}`,
        actor: "reconciler",
        payload: { from: Phase[old.phase], to: Phase[p.phase], cause },
      });
    }
    return { op: { op: "server.status", id: server.id, status: next, dataInitialized }, events, phaseChanged };
  }

  /** `network`: the project's network (projectNetworkName of the server's project). */
  private buildCommand(server: ServerRecord, hash: string, network: string, limits: ResourceLimits, kind: CommandKind, dataPolicy: number, recreate: boolean, now: number, deadlineMs: number): Command {
    const spec = server.spec;
    return create(CommandSchema, {
      id: newId("cmd"),
      serverId: server.id,
      kind,
      dataPolicy,
      recreate,
      stopTimeoutSeconds: server.lifecycle.stopTimeoutSeconds ?? DEFAULT_STOP_TIMEOUT_S,
      deadline: timestampFromMs(now + deadlineMs),
      adoptedContainerId: server.lifecycle.adoptedContainerId ?? "",
      stopCommand: spec.console ? spec.stopCommand : "",
      container: create(ContainerSpecSchema, {
        image: spec.image,
        command: spec.command,
        env: spec.env,
        ports: spec.ports,
        dataMountPath: spec.dataMountPath,
        capAdd: spec.capAdd,
        openStdin: spec.console,
        readyPattern: spec.readyPattern,
        stopSignal: spec.stopSignal,
        logMaxSizeBytes: spec.logMaxSizeBytes || (this.deps.containerLogs ?? DEFAULT_CONTAINER_LOGS).maxSizeBytes,
        logMaxFiles: spec.logMaxFiles || (this.deps.containerLogs ?? DEFAULT_CONTAINER_LOGS).maxFiles,
        name: containerName(server),
        // The project's own network: its servers reach each other by name, other projects not at all.
        network,
        project: server.project,
        networkAliases: [server.name, server.id],
        resources: limits,
        specHash: hash,
        labels: {
          [LABEL_MANAGER]: this.deps.managerId,
          [LABEL_SERVER]: server.id,
          [LABEL_GENERATION]: String(server.generation),
          [LABEL_SPEC_HASH]: hash,
        },
      }),
    });
  }
}

/**
 * The lifecycle after a successful command, or undefined when it changes
 * nothing: a start or restart satisfies restart requests made before it was
 * issued (`createdAt`, the manager's clock like the requests), and a
 * recreating command satisfies rebuild requests made before it.
 */
export function noteCommandFinished(lc: Lifecycle, command: Pick<Command, "kind" | "recreate">, createdAt: number): Lifecycle | undefined {
  const next = { ...lc };
  let changed = false;
  if ((command.kind === CommandKind.ENSURE_RUNNING || command.kind === CommandKind.RESTART) && createdAt > (lc.restartDoneAt ?? 0)) {
    next.restartDoneAt = createdAt;
    changed = true;
  }
  if (command.recreate && createdAt > (lc.rebuildDoneAt ?? 0)) {
    next.rebuildDoneAt = createdAt;
    changed = true;
  }
  // The first container of a clone or a transferred server is made.
  if (lc.createPending && (command.kind === CommandKind.ENSURE_CONTAINER || command.kind === CommandKind.ENSURE_RUNNING)) {
    delete next.createPending;
    changed = true;
  }
  return changed ? next : undefined;
}

/**
 * The lifecycle after a finished data command, or undefined when it changes
 * nothing: a backup or restore of the operation under way ends it (a
 * successful restore leaves a safety copy to discard once the server runs);
 * a safety copy's removal drops it, or, when it failed, keeps it for good
 * (never retried in a loop; the event says where it is).
 */
export function noteDataCommandFinished(
  lc: Lifecycle,
  last: { command: Pick<Command, "kind" | "id" | "dataDir" | "backup">; state: string; createdAt: number; reason?: string | null; message?: string | null; finishedAt?: number | null },
): { lifecycle: Lifecycle; event?: Omit<EventInput, "project" | "serverId" | "hostId" | "actor">; moveBack?: { reason: string; message: string } } | undefined {
  const kind = last.command.kind;
  const op = lc.dataOp;
  if ((kind === CommandKind.BACKUP_DATA || kind === CommandKind.RESTORE_DATA) && op && last.command.backup?.backupId === op.backupId && last.createdAt >= op.requestedAt) {
    const { dataOp: _ended, ...rest } = lc;
    const failure = { reason: last.reason || (kind === CommandKind.BACKUP_DATA ? "BackupFailed" : "RestoreFailed"), message: last.message ?? "" };
    const t = op.transfer;
    // A transfer's commands count only in their own stage (its backup's success is still the last
    // command while the target restores).
    if (t && !((kind === CommandKind.BACKUP_DATA && t.stage === "backup") || (kind === CommandKind.RESTORE_DATA && t.stage === "restore"))) return undefined;
    if (t && kind === CommandKind.BACKUP_DATA && t.stage === "backup") {
      // Archived: the reconciler moves the record to the target host (moveToTarget), not here.
      if (last.state === "succeeded") return undefined;
      return { lifecycle: rest, event: { type: "server.transfer_failed", reason: failure.reason, correlationId: op.backupId, message: `transfer to host ${t.targetHost} failed while archiving on the source; the server stays here: ${failure.message}`, payload: { from: t.sourceHost, to: t.targetHost } } };
    }
    if (t && kind === CommandKind.RESTORE_DATA && t.stage === "restore") {
      // A stale copy the target had (an earlier transfer's) went to its safety copy: discarded once the server runs.
      if (last.state === "succeeded") return { lifecycle: { ...lc, dataOp: { ...op, transfer: { ...t, stage: "start" } }, previousData: [...(lc.previousData ?? []), { name: last.command.dataDir, backupId: op.backupId, keep: false, at: last.createdAt }] } };
      return { lifecycle: rest, moveBack: { reason: failure.reason, message: `restoring on host ${t.targetHost} failed: ${failure.message}` } };
    }
    if (op.fresh && kind === CommandKind.RESTORE_DATA) {
      // A new server id: nothing was there to keep.
      if (last.state === "succeeded") return { lifecycle: rest };
      const message = `the clone's data could not be copied from backup ${op.backupId}: ${failure.message}; purge this server, or start it to run it with an empty data directory`;
      return { lifecycle: { ...rest, cloneFailed: { reason: "CloneFailed", message, at: last.finishedAt ?? last.createdAt } }, event: { type: "server.clone_failed", reason: failure.reason, correlationId: op.backupId, message } };
    }
    if (kind === CommandKind.RESTORE_DATA && last.state === "succeeded") {
      const kept = { name: last.command.dataDir, backupId: op.backupId, keep: op.keepPrevious ?? false, at: last.createdAt };
      return { lifecycle: { ...rest, previousData: [...(lc.previousData ?? []), kept] } };
    }
    return { lifecycle: rest };
  }
  if (kind === CommandKind.DISCARD_PREVIOUS_DATA && lc.previousData?.some((d) => d.name === last.command.dataDir && !d.keep)) {
    const name = last.command.dataDir;
    if (last.state === "succeeded") {
      const left = lc.previousData.filter((d) => d.name !== name);
      const { previousData: _gone, ...rest } = lc;
      return { lifecycle: left.length > 0 ? { ...rest, previousData: left } : rest };
    }
    return {
      lifecycle: { ...lc, previousData: lc.previousData.map((d) => (d.name === name ? { ...d, keep: true } : d)) },
      event: { type: "backup.previous_kept", reason: "DiscardFailed", message: `could not remove the data a restore replaced (.berth-previous/${name} under the host's data root): ${last.message ?? ""}; it is kept, remove it by hand` },
    };
  }
  return undefined;
}

/** A data operation's location as its command carries it (an S3 secret still sealed: openCommand opens it on the wire). */
export function locationOf(l: BackupLocationRecord): MessageInitShape<typeof BackupLocationSchema> {
  if ("directory" in l) return { kind: { case: "directory", value: l.directory } };
  const { sealedSecret, ...rest } = l.s3;
  return { kind: { case: "s3", value: { ...rest, secretAccessKey: sealedSecret } } };
}

/** The safety copy RESTORE_DATA `commandId` keeps of the data it replaces (under the data root's .berth-previous). */
export function previousDataName(serverId: string, commandId: string): string {
  return `${serverId}.${commandId}`;
}

/** status.operation for the backup or restore under way (undefined when none). */
function operationOf(op: DataOp | undefined, stage: string | undefined): Operation | undefined {
  if (!op) return undefined;
  return create(OperationSchema, {
    kind: op.kind,
    backupId: op.backupId,
    stage: stage ?? op.progress?.stage ?? "Waiting",
    bytesDone: BigInt(op.progress?.bytesDone ?? 0),
    bytesTotal: BigInt(op.progress?.bytesTotal ?? 0),
    startTime: timestampFromMs(op.requestedAt),
    sourceHost: op.transfer?.sourceHost ?? "",
    targetHost: op.transfer?.targetHost ?? "",
  });
}

/** status.install from the lifecycle's record (a spec with install but no record: nothing installs, none shown). */
function installStatusOf(i: InstallRecord | undefined): InstallStatus | undefined {
  if (!i) return undefined;
  const state = { pending: InstallState.PENDING, running: InstallState.RUNNING, succeeded: InstallState.SUCCEEDED, failed: InstallState.FAILED }[i.state];
  return create(InstallStatusSchema, {
    state,
    attempt: i.attempt,
    ...(i.startedAt ? { startedTime: timestampFromMs(i.startedAt) } : {}),
    ...(i.finishedAt && i.state !== "running" && i.state !== "pending" ? { finishedTime: timestampFromMs(i.finishedAt) } : {}),
    exitCode: i.exitCode ?? 0,
    timedOut: i.timedOut ?? false,
    message: i.state === "failed" ? installFailedMessage(i) : i.state === "pending" ? "waiting to run before the server's container is made or started" : i.state === "running" ? "running" : (i.message ?? ""),
  });
}

function sameOperation(a: Operation | undefined, b: Operation | undefined): boolean {
  if (!a || !b) return a === b;
  return a.kind === b.kind && a.backupId === b.backupId && a.stage === b.stage && a.bytesDone === b.bytesDone && a.bytesTotal === b.bytesTotal;
}

function sameTime(a: Timestamp | undefined, b: Timestamp | undefined): boolean {
  if (!a || !b) return a === b;
  return a.seconds === b.seconds && a.nanos === b.nanos;
}

/** Docker name of a server's container: readable in `docker ps`, unique per server. */
export function containerName(server: Pick<ServerRecord, "id" | "name">): string {
  return `berth-${server.name}-${server.id.replace(/^srv_/, "")}`;
}
