/**
 * The records berth keeps about hosts, servers, commands and what agents
 * observed: what the store reads and writes, independent of any database.
 */
import { create } from "@bufbuild/protobuf";
import type { Command, CommandKind, ContainerInfo } from "@berth/proto/berth/v1/agent_pb.js";
import { ServerStatusSchema, type ServerSpec, type ServerStatus } from "@berth/proto/berth/v1/server_pb.js";
import type { Template } from "@berth/proto/berth/v1/template_pb.js";

/** Facts an agent reports about its host in Hello and heartbeats. */
export interface HostFacts {
  hostname?: string;
  agentVersion?: string;
  dockerVersion?: string;
  dataRoot?: string;
  cpuCount?: number;
  memoryBytes?: number;
  dataRootFreeBytes?: number;
  dataRootTotalBytes?: number;
  dockerReachable?: boolean;
  /** Where the agent may write backup archives (its --backup-dir roots). */
  backupDirs?: string[];
}

export interface HostRecord {
  id: string;
  name: string;
  secretHash: string;
  createdAt: number;
  removedAt: number | null;
  online: boolean;
  connectedSince: number | null;
  lastHeartbeat: number | null;
  facts: HostFacts;
  /** Whether new servers may be placed on it, and its drain (HostService.CordonHost/DrainHost). */
  schedule: HostSchedule;
}

/**
 * A host's scheduling state. Cordoned (`unschedulable`), no new server is
 * placed on it (create, clone, transfer, drain); its servers keep running.
 * A drain also moves its servers away (hosts/drain.ts):
 *
 *   schedulable ──CordonHost──► cordoned ──DrainHost──► draining
 *        │                         ▲                      │
 *        │                         └────nothing left──────┤
 *        └──DrainHost────────────────────────────────────►│
 *
 *   UncordonHost, from cordoned or draining: back to schedulable (a drain
 *   ends; transfers under way finish).
 */
export interface HostSchedule {
  unschedulable: boolean;
  drain?: HostDrain;
  /** SetHostCapacity's settings (hosts/capacity.ts); absent: the defaults. */
  capacity?: { cpuOvercommit: number; memoryOvercommit: number; reservedCpus: number; reservedMemoryBytes: number };
}

/** A drain under way (HostSchedule.drain): cleared when it finishes or the host is uncordoned. */
export interface HostDrain {
  /** Transfers at a time (1..16). */
  parallel: number;
  /** The id of the backup target transfers go through; "" for the default. */
  target: string;
  startedAt: number;
  /** Who asked (the ledger's actor form). */
  actor: string;
  /** Servers whose transfer could not start or ended failed: not tried again by this drain. */
  failed?: DrainFailure[];
  /** What it is doing, e.g. "3 of 12 moved; 2 under way". */
  message?: string;
  /** Servers this drain started transferring (to count them in the message). */
  started?: string[];
}

export interface DrainFailure {
  serverId: string;
  name: string;
  reason: string;
}

/** Why a container last exited, as reported by the agent. */
export type ExitCause = "crash" | "stopped_externally" | "stopped_by_berth";

/**
 * Bookkeeping of operations and exits that plan() needs beyond spec and
 * observation. All times are ms since the epoch; 0 means never.
 */
export interface Lifecycle {
  /** Graceful stop timeout for the next stop (StopServer.timeout_seconds). */
  stopTimeoutSeconds?: number;
  /** RestartServer: restart the container (once) after this. */
  restartRequestedAt?: number;
  /** RebuildServer / UpdateServer(apply_now): recreate the container (once) after this. */
  rebuildRequestedAt?: number;
  /** Creation time of the last successful recreating command: a rebuild is done once this is newer than the request. */
  rebuildDoneAt?: number;
  /** Creation time of the last successful start or restart command. */
  restartDoneAt?: number;
  /** PurgeServer in progress. */
  purge?: { requestedAt: number; removeData: boolean };
  /**
   * AdoptOrphan bound this container (Docker id) without berth labels to the
   * server: it counts as the server's container until berth recreates it.
   */
  adoptedContainerId?: string;
  /** The container vanished without berth removing it (docker rm outside berth). */
  containerLostAt?: number;
  /**
   * The last exit the agent explained. `finishedAt` is the container's own finish
   * time (host clock), so it can be matched with an observed exited container.
   */
  lastExit?: { cause: ExitCause; at: number; exitCode: number; finishedAt?: number; oomKilled?: boolean };
  /** An exit observed without its cause yet (e.g. through an inventory): when first seen. */
  pendingExit?: { finishedAt: number; seenAt: number };
  /** Recent crash times, for backoff and crash-loop detection. */
  crashTimes?: number[];
  restartCount?: number;
  /** A backup or restore under way (BackupService); plan() stops the container first when it must. */
  dataOp?: DataOp;
  /**
   * Safety copies a restore kept of the data it replaced (names under the
   * data root's .berth-previous): each is discarded once the server runs
   * again, unless `keep`.
   */
  previousData?: { name: string; backupId: string; keep: boolean; at: number }[];
  /**
   * The server's first container on its host is still to be made (a clone,
   * a transferred server): created whatever the desired state, instead of
   * "Missing". Cleared by the first successful create or start.
   */
  createPending?: boolean;
  /** Copies of this server on other hosts that berth removes (a transfer's source, a failed transfer's target). */
  strayCopies?: StrayCopy[];
  /** A clone whose data could not be copied: shown Failed until the operator acts (start gives it empty data). */
  cloneFailed?: { reason: string; message: string; at: number };
  /**
   * The limits (domain/limits.ts limitsKey) last sent to be applied live to
   * this container: not sent again for the same container and limits, so a
   * limit Docker does not hold as asked is shown, not retried in a loop.
   */
  limitsAttempt?: { containerId: string; key: string };
  /**
   * The install script (spec.install): set pending when a server with one is
   * created, and by ReinstallServer; plan() runs it (RUN_INSTALL) before the
   * server's container is made or started. Absent: nothing to install.
   */
  install?: InstallRecord;
}

/** Where a server's install script is (Lifecycle.install; status.install shows it). */
export interface InstallRecord {
  state: "pending" | "running" | "succeeded" | "failed";
  /** Runs started so far (the running or last one's number). */
  attempt: number;
  /** Manager clock: when it was (last) set pending. */
  requestedAt: number;
  /** The RUN_INSTALL command of the current attempt. */
  commandId?: string;
  startedAt?: number;
  finishedAt?: number;
  exitCode?: number;
  timedOut?: boolean;
  message?: string;
}

/** Where a data operation's archive is, as its command carries it (the S3 secret stays sealed here). */
export type BackupLocationRecord =
  | { directory: string }
  | { s3: { targetId: string; endpoint: string; bucket: string; prefix: string; region: string; pathStyle: boolean; accessKeyId: string; sealedSecret: string } };

/**
 * A transfer's state (DataOp.transfer): the data travels as a backup (the
 * op's backupId) through a target both hosts reach. Stages:
 * - backup: on the source (the server's host), stopped, archived;
 * - restore: the record is on the target host now, where the archive is
 *   verified and unpacked (the source keeps its container and data);
 * - start: the server is created (and started if it should run) on the target.
 * A failure in restore or start moves the record back to the source, whose
 * copy was never touched.
 */
export interface TransferState {
  sourceHost: string;
  targetHost: string;
  /** The backup target the data travels through. */
  targetId: string;
  /** Where the target host reads the archive (resolved when the transfer was asked for). */
  targetLocation: BackupLocationRecord;
  stage: "backup" | "restore" | "start";
  /** Keep the source copy this long after the server runs on the target. */
  keepSourceHours: number;
  /** Manager clock: when the record moved to the target host (stage restore on). */
  movedAt?: number;
}

/** A backup, restore or transfer of a server's data directory, from request to result (Lifecycle.dataOp). */
export interface DataOp {
  kind: "backup" | "restore" | "transfer";
  backupId: string;
  /** Manager clock: when it was asked for; commands made before it are not its own. */
  requestedAt: number;
  /** It fails with DeadlineExceeded at this time, wherever it is. */
  deadlineAt: number;
  /** backup: copy while the server runs (no stop). */
  live: boolean;
  /** Where the archive is: a directory on the host (the target's path), or S3-compatible storage. */
  location: BackupLocationRecord;
  /** <server id>/<backup id>.tar.zst (.tar.gz: made before zstd); the agent compresses by the suffix. */
  key: string;
  /** backup: patterns left out. */
  ignore?: string[];
  /** restore: the archive's sha256, checked before anything is touched. */
  sha256?: string;
  /** restore: the file bytes the archive holds (progress). */
  rawBytes?: number;
  /** restore: keep the replaced data after the server runs again. */
  keepPrevious?: boolean;
  /** The agent's last progress report. */
  progress?: { stage: string; bytesDone: number; bytesTotal: number; files: number; at: number };
  /** Who asked (the ledger's actor). */
  actor: string;
  /** transfer: where it is in the move. */
  transfer?: TransferState;
  /** restore of a clone from a fresh backup of its source: wait until that backup succeeds (sha256 unknown until then). */
  awaitBackup?: boolean;
  /** restore: into a server that had no data (a clone, a transfer's target): nothing is kept as a safety copy. */
  fresh?: boolean;
}

/** A copy of a server's data (and maybe its container) on a host that is not its own, to remove. */
export interface StrayCopy {
  hostId: string;
  /** Manager clock: not before this. */
  removeAt: number;
  /** transfer_source: what a transfer left behind (kept keep_source_hours); transfer_partial: a failed transfer's copy on its target. */
  why: "transfer_source" | "transfer_partial";
}

export interface ServerRecord {
  id: string;
  project: string;
  name: string;
  hostId: string;
  generation: number;
  spec: ServerSpec;
  status: ServerStatus;
  /** True once the server's data directory has been seen on its host. */
  dataInitialized: boolean;
  lifecycle: Lifecycle;
  createdAt: number;
  updatedAt: number;
  deletedAt: number | null;
  /**
   * Optimistic concurrency, like Kubernetes' resourceVersion: 1 for a new
   * record, incremented by every write to it (spec, status, lifecycle,
   * data_initialized). A writer that passes the version it read as its
   * expected version changes nothing if someone wrote in between.
   */
  version: number;
}

/** A server record about to be inserted: its version is always 1. */
export type NewServerRecord = Omit<ServerRecord, "version"> & { version?: number };

export type CommandState = "pending" | "sent" | "succeeded" | "failed" | "expired";

export interface CommandRecord {
  id: string;
  serverId: string;
  hostId: string;
  command: Command;
  state: CommandState;
  createdAt: number;
  deadlineAt: number;
  sentAt: number | null;
  finishedAt: number | null;
  reason: string | null;
  message: string | null;
}

export interface ObservedContainer {
  hostId: string;
  containerId: string;
  serverId: string | null;
  managerId: string | null;
  state: string;
  info: ContainerInfo;
  observedAt: number;
}

export interface DataDirRecord {
  hostId: string;
  serverId: string;
  present: boolean;
  sizeBytes: number;
  checkedAt: number;
  /**
   * From an inventory: the agent has not measured the directory since it
   * started; the store keeps the size it has (0 for a directory it never saw).
   */
  sizeUnknown?: boolean;
}

/** A directory directly under a host's data root, as its agent listed it. */
export interface DataRootEntry {
  name: string;
  /** Known for server-id directories (the agent measures those); 0 otherwise. */
  sizeBytes: number;
}

export interface EventInput {
  type: string;
  project?: string;
  serverId?: string;
  hostId?: string;
  reason?: string;
  message?: string;
  actor?: string;
  correlationId?: string;
  payload?: unknown;
  /**
   * A `command.*` event's command, as its writer had it: for this manager's
   * listeners (metrics label and time commands by it instead of reading each
   * one back). Never stored: an event read from the database, or another
   * manager's, has none.
   */
  command?: EventCommand;
}

/** What a `command.*` event's listeners know of its command without reading it. */
export interface EventCommand {
  kind: CommandKind;
  /** When the command was issued (CommandRecord.createdAt). */
  createdAt: number;
}

/** The EventCommand of a stored command's event. */
export function eventCommand(c: Pick<CommandRecord, "command" | "createdAt">): EventCommand {
  return { kind: c.command.kind, createdAt: c.createdAt };
}

export interface EventRecord extends Required<Omit<EventInput, "payload" | "command">> {
  id: number;
  time: number;
  payloadJson: string;
  /** As on EventInput: only on an event published by the manager that wrote it. */
  command?: EventCommand;
}

/** An empty status for a new server. */
export function initialStatus(): ServerStatus {
  return create(ServerStatusSchema, {});
}

/**
 * A server's latest change in the store's change order (servers.change_seq,
 * migration 10): its current record, or, for a purged server, its tombstone.
 * The order is the same on every manager of one database (WatchServers
 * resume tokens, ledger/server-changes.ts).
 */
export interface ServerChangeRecord {
  /** The change's position: greater than every change committed before it. */
  seq: number;
  serverId: string;
  /** The record as of this change; undefined when the server was purged. */
  server: ServerRecord | undefined;
  /** Project and host of the server, also for a purged one. */
  project: string;
  hostId: string;
}

export interface ServerFilter {
  project?: string;
  hostId?: string;
  includeDeleted?: boolean;
  /** Only servers in one of these phases (Phase names, e.g. "RUNNING"); filtered before the limit. */
  phases?: readonly string[];
  /** Only servers whose spec carries every one of these labels; filtered before the limit. */
  labels?: Readonly<Record<string, string>>;
  /** Keyset pagination: servers created before this (created_at, id). */
  before?: { createdAt: number; id: string };
  limit?: number;
}

/** Which events a reader may see (project scoping), decided by the API layer. */
export interface EventScope {
  /**
   * The caller's project, or null for an all-projects caller. A project-scoped
   * caller sees its project's events only: project-less events (hosts, orphans,
   * their alerts, tokens, enrollment, webhooks) name containers, images and
   * paths of every tenant on a shared host, so all-projects tokens alone see them.
   */
  project: string | null;
}

export interface EventQuery extends EventScope {
  serverId?: string;
  hostId?: string;
  /** Dotted prefix, e.g. "command." or "server.start". */
  typePrefix?: string;
  /** Exact actor, or a prefix ending before ":" (e.g. "token:tok_x" matches "token:tok_x:ci"). */
  actor?: string;
  /** Inclusive lower bound on `time` (ms). */
  since?: number;
  /** Exclusive upper bound on `time` (ms). */
  until?: number;
}

export type AlertState = "firing" | "resolved";

/** One alert: a rule's condition on one subject, from firing to resolved. */
export interface AlertRecord {
  id: string;
  rule: string;
  subject: string;
  project: string;
  hostId: string;
  serverId: string;
  severity: string;
  state: AlertState;
  message: string;
  firstSeen: number;
  lastSeen: number;
  resolvedAt: number | null;
  /** The actor who acknowledged it ("" when nobody has). */
  acknowledgedBy: string;
  acknowledgedAt: number | null;
  /** Notifications are suppressed until then. */
  mutedUntil: number | null;
}

/**
 * A named lease (store.ts lease.acquire): who holds it, until when (ms, the
 * holder's clock) and its epoch, which goes up by one each time the holder changes.
 */
export interface LeaseRecord {
  name: string;
  holder: string;
  epoch: number;
  expiresAt: number;
}

/** What the alert rules need to know about a server, read without decoding whole records. */
export interface ServerFacts {
  id: string;
  name: string;
  project: string;
  hostId: string;
  generation: number;
  /** Phase name as stored in the `phase` column ("RUNNING", "DATA_LOST", ...). */
  phase: string;
  /** From the spec: the protobuf JSON name ("DESIRED_STATE_RUNNING") or number. */
  desiredState: string | number | undefined;
  reason: string;
  observedGeneration: number;
  purging: boolean;
  /** status.crash.recent: crashes towards a crash loop while it is restarted (0 when not crashing). */
  recentCrashes: number;
  /** While Unknown: the phase name ("FAILED", as the `phase` column) and reason observed before the host went away; "" otherwise. */
  lastKnownPhase: string;
  lastKnownReason: string;
  /** spec.resources.disk_quota_bytes (0: none) and status.data_size_bytes as last measured. */
  diskQuotaBytes: number;
  dataSizeBytes: number;
}

/** Roles in increasing order of power. */
export const ROLES = ["viewer", "operator", "admin"] as const;
export type Role = (typeof ROLES)[number];

/** An operator token as stored: never its secret, only the secret's hash. */
export interface TokenRecord {
  id: string;
  name: string;
  role: Role;
  /** null: an all-projects admin token. */
  project: string | null;
  createdAt: number;
  createdBy: string;
  revokedAt: number | null;
  lastUsedAt: number | null;
}

/**
 * An alert notification still to be delivered to one webhook receiver
 * (alerts/webhook.ts): retried by the leader until it succeeds or gives up.
 */
export interface WebhookDeliveryRecord {
  /** The notification's delivery id: the same for every receiver and every retry. */
  id: string;
  /** SHA-256 (hex) of the receiver's URL; the URL itself is not stored (it may carry a token). */
  urlKey: string;
  /** The JSON body, exactly as sent on every attempt. */
  body: string;
  /** Attempts made so far. */
  attempts: number;
  /** When the next attempt is due (ms). */
  nextAttemptAt: number;
  /** What the last attempt failed with ("" before the first). */
  lastError: string;
  createdAt: number;
}

/**
 * Where backups go (BackupService targets). A directory is a path on each
 * host (a local disk, or a mount every host shares); its agent writes there
 * only when the path is one of its backup roots (`--backup-dir`).
 */
export type BackupTargetConfig =
  | {
      kind: "directory";
      path: string;
      /** Every host sees the same directory (a shared mount): a backup made on one host can be restored on another. */
      shared: boolean;
    }
  | {
      kind: "s3";
      endpoint: string;
      bucket: string;
      prefix: string;
      region: string;
      pathStyle: boolean;
      accessKeyId: string;
    };

export interface BackupTargetRecord {
  id: string;
  /** Unique: lowercase letters, digits and '-'. */
  name: string;
  config: BackupTargetConfig;
  /** The secret access key, sealed (store/secrets.ts; context `backup-target:<id>`); "" when none. Never returned by the API, never logged. */
  sealedSecret: string;
  createdAt: number;
  createdBy: string;
}

export type BackupState = "pending" | "running" | "succeeded" | "failed" | "deleting";

/** One backup of one server's data directory (BackupService). */
export interface BackupRecord {
  id: string;
  serverId: string;
  /** The server's name and project when the backup was asked for (the backup outlives a purge). */
  serverName: string;
  project: string;
  /** The host whose agent made it (a directory target that is not shared holds it there only). */
  hostId: string;
  targetId: string;
  /** Where in the target: `<server id>/<backup id>.tar.zst` (`.tar.gz` before zstd), a path under the directory or an object key under the prefix. */
  key: string;
  state: BackupState;
  /** CamelCase, for a failure: AgentRestarted, DeadlineExceeded, TargetFull, ... */
  reason: string;
  message: string;
  /** Copied while the server ran (no stop): the archive may be inconsistent. */
  live: boolean;
  /** How the tar is compressed: "zstd" (a `.tar.zst` key) or "gzip" (backups made before zstd). */
  compression: "gzip" | "zstd";
  /** The archive as stored (compressed). */
  archiveBytes: number;
  /** File bytes archived (uncompressed). */
  rawBytes: number;
  files: number;
  /** SHA-256 (hex) of the stored archive; "" until it succeeded. */
  sha256: string;
  bytesDone: number;
  bytesTotal: number;
  /** A locked backup is never deleted (neither by retention nor by DeleteBackup). */
  locked: boolean;
  /** Who asked (actor, as in the ledger). */
  createdBy: string;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
}

/**
 * A live server whose BackupPolicy sets alert_after_hours, with what the
 * backup_overdue alert needs (store.ts backupPolicyFacts).
 */
export interface BackupPolicyFacts {
  serverId: string;
  serverName: string;
  project: string;
  hostId: string;
  /** The server record's creation: the clock of a server that never had a successful backup. */
  createdAt: number;
  alertAfterHours: number;
  /** When its newest successful backup finished (its creation when no finish is recorded); null: none. */
  newestSuccessAt: number | null;
}

export interface BackupFilter {
  serverId?: string;
  /** Only this project's backups. */
  project?: string;
  states?: readonly BackupState[];
  /** Keyset pagination, newest first: backups created before (createdAt, id). */
  before?: { createdAt: number; id: string };
  limit?: number;
}

/**
 * A server template (TemplateService; migration 15). Names are unique per
 * project; project "" holds the global templates every project sees.
 */
export interface TemplateRecord {
  id: string;
  /** "" for a global template. */
  project: string;
  name: string;
  /** 1 when created, + 1 on every update. */
  version: number;
  /** The template as stored; its id, project, name, version, times and built_in are the record's fields. */
  template: Template;
  /** Shipped with berth (templates/builtin.ts): kept by the manager, read-only through the API. */
  builtIn: boolean;
  createdAt: number;
  updatedAt: number;
  createdBy: string;
}

/** Which templates a listing returns: by (name, id), after `after`. */
export interface TemplateFilter {
  /** The projects whose templates to list ("" is the global ones); undefined: every project. */
  projects?: readonly string[];
  /** Keyset position: templates after this (name, id). */
  after?: { name: string; id: string };
  limit?: number;
}
