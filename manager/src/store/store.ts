/**
 * The store's contract: what the manager may ask of its database, whichever
 * engine holds it (SQLite embedded, PostgreSQL for several managers).
 *
 * Two rules shape it:
 *
 * - **Reads are asynchronous and return domain records** (domain/records.ts),
 *   never rows. On SQLite they resolve at once; on PostgreSQL each is one
 *   round trip (hot paths read through an in-memory view later, issue 17).
 *
 * - **Writes are one atomic batch, described as data.** A writer reads, decides
 *   (plan() and friends are pure), then submits every change of that decision
 *   in one `commit(batch)`. No callback runs inside a transaction: better-sqlite3
 *   cannot hold a transaction across an await, and a PostgreSQL transaction held
 *   while the event loop does other work would hold its locks as long. Whatever
 *   a decision assumed about the database is a *precondition* of an operation
 *   (a server's version, a command still open, a record still there); if one no
 *   longer holds, nothing of the batch is written and `commit` rejects with the
 *   typed error (ConflictError, NotFoundError, …). Writers are level-based: they
 *   read again and decide again.
 *
 * Events are written by the same batch as the change they explain, always after
 * its other operations (on PostgreSQL they are appended under the ledger lock,
 * store/postgres/event-log.ts, so ids are handed out in commit order).
 * `onCommit` listeners hear every committed batch's events and touched servers,
 * each exactly once, not necessarily in commit order on PostgreSQL (see
 * onCommit; on PostgreSQL also the batches other managers committed).
 */
import type { ContainerInfo, Command } from "@berth/proto/berth/v1/agent_pb.js";
import type { ServerSpec, ServerStatus } from "@berth/proto/berth/v1/server_pb.js";
import type {
  CommandRecord,
  DataDirRecord,
  DataRootEntry,
  EventInput,
  EventRecord,
  HostFacts,
  HostRecord,
  HostSchedule,
  LeaseRecord,
  Lifecycle,
  NewServerRecord,
  ObservedContainer,
  ServerRecord,
  AlertRecord,
  ServerFacts,
  EventQuery,
  EventScope,
  TokenRecord,
  ServerFilter,
  ServerChangeRecord,
  WebhookDeliveryRecord,
  BackupFilter,
  BackupPolicyFacts,
  BackupRecord,
  BackupTargetRecord,
  BackupState,
  TemplateFilter,
  TemplateRecord,
} from "../domain/records.js";
import type { SecretBox } from "./secrets.js";
import type { RunFinish, ScheduleFilter, ScheduleRecord, ScheduleRunPage, ScheduleRunRecord } from "../schedules/records.js";
import type { SavedQueryFilter, SavedQueryRecord } from "../query/saved-records.js";

// ------------------------------------------------------------------ opening

/** The meta values the secret key check reads and writes before the store exists. */
export interface StoreMeta {
  get(key: string): Promise<string | undefined>;
  set(key: string, value: string): Promise<void>;
}

export interface OpenStoreOptions {
  /** Something worth an operator's attention that does not stop the store (e.g. a directory others can read). */
  onWarning?: (message: string) => void;
  /**
   * Chooses the key sealing secret env values, given the database's meta
   * (where the key check lives). When it throws, the database is closed
   * and the error passes through. Without it, writing a secret env value throws.
   */
  secrets?: (meta: StoreMeta) => Promise<SecretBox> | SecretBox;
  /** A listener of committed batches threw (a bug: the write stands, the listener missed it). */
  onListenerError?: (err: unknown) => void;
  /**
   * SQLite file databases: checkpoint the WAL on a worker thread instead of in
   * the COMMIT that fills it (sqlite/wal-checkpointer.ts). For the manager's
   * long-lived store; short-lived opens (the token CLI, tests) need not.
   */
  checkpointInWorker?: boolean;
}

/** The store URL names an engine this build does not have; the message says what to use instead. */
export class StoreUnavailableError extends Error {
  override readonly name = "StoreUnavailableError";
}

// ------------------------------------------------------------------ writes

/** Only when the server's version is still this (optimistic concurrency), else ConflictError. */
export interface IfVersion {
  expectVersion?: number;
}

/** One change of a batch. Applied in order, events after everything else. */
export type WriteOp =
  // servers
  | { op: "server.insert"; server: NewServerRecord }
  | ({ op: "server.spec"; id: string; spec: ServerSpec; generation: number; hostId: string; deletedAt: number | null; updatedAt: number } & IfVersion)
  | ({ op: "server.status"; id: string; status: ServerStatus; dataInitialized: boolean } & IfVersion)
  | ({ op: "server.lifecycle"; id: string; lifecycle: Lifecycle } & IfVersion)
  | ({ op: "server.resetDataInitialized"; id: string } & IfVersion)
  /** Writes nothing: ConflictError unless the server's version is still this (NotFoundError when gone). For a batch that decided from the record without writing it. */
  | { op: "server.check"; id: string; expectVersion: number }
  /** Deletes the record, its data_dirs rows, port reservations, commands and usage buckets; NotFoundError when already gone. */
  | { op: "server.delete"; id: string }
  // commands
  /** ConflictError when the server already has an open command (the database's unique index). */
  | { op: "command.insert"; command: Command; hostId: string; createdAt: number; deadlineAt: number }
  | { op: "command.sent"; id: string; at: number }
  /** ConflictError when the command is no longer open (someone finished it first). */
  | { op: "command.finish"; id: string; state: "succeeded" | "failed" | "expired"; at: number; reason: string; message: string }
  // observations
  | { op: "container.upsert"; hostId: string; container: ContainerInfo; at: number }
  | { op: "container.remove"; hostId: string; containerId: string }
  | { op: "container.removeServer"; hostId: string; serverId: string; adoptedContainerId?: string }
  /**
   * Makes this the complete picture of a host (anything observed before and not listed is gone);
   * `keep`: servers observed after the inventory was taken, left as they are (ObservationOrder).
   */
  | { op: "host.inventory"; hostId: string; containers: ContainerInfo[]; dataDirs: DataDirRecord[]; dataRootEntries?: DataRootEntry[]; at: number; keep?: readonly string[] }
  | { op: "dataDir.upsert"; dataDir: DataDirRecord }
  | { op: "dataRootEntry.remove"; hostId: string; name: string }
  // hosts
  | { op: "host.insert"; id: string; name: string; secretHash: string; createdAt: number }
  | { op: "host.connected"; id: string; facts: HostFacts; at: number }
  | { op: "host.heartbeat"; id: string; at: number; facts: Partial<HostFacts> }
  | { op: "host.offline"; id: string }
  /**
   * Every host that no manager owns at `at` (no live `host:<id>` lease, see
   * host.take) is marked offline; Committed.hostIds lists those that were
   * online. At a manager's start (on SQLite, one manager per file, no host is
   * owned then: every host) and on the leader's sweep for hosts whose manager
   * died with their streams (PostgreSQL).
   */
  | { op: "host.offlineUnowned"; at: number }
  /** Marks the host removed and deletes what was observed on it, and its usage buckets. */
  | { op: "host.remove"; id: string; at: number }
  /**
   * Sets the host's scheduling state (cordoned, its drain). NotFound for a
   * host with no record or a removed one. With `expect`, the write happens
   * only while the host's schedule is still that one (as read): else
   * ConflictError, read it again (HostService and the drain job both write it).
   */
  | { op: "host.schedule"; id: string; schedule: HostSchedule; expect?: HostSchedule }
  /** ConflictError when the token was used meanwhile. */
  | { op: "enrollment.use"; id: string; hostId: string; at: number }
  | { op: "enrollment.insert"; id: string; tokenHash: string; createdAt: number; expiresAt: number }
  // alerts
  /** Refused with ConflictError when the rule already fires on the subject (alerts_one_firing). */
  | { op: "alert.insert"; alert: AlertRecord }
  /** A firing alert is still true: when it was last seen, what it says, and its severity (a stage may change it: crash_loop). */
  | { op: "alert.touch"; id: string; lastSeen: number; message: string; severity: AlertRecord["severity"] }
  | { op: "alert.resolve"; id: string; at: number }
  | { op: "alert.acknowledge"; id: string; by: string; at: number }
  | { op: "alert.mute"; id: string; until: number | null }
  // tokens and projects
  | { op: "token.insert"; token: TokenRecord; secretHash: string }
  | { op: "token.revoke"; id: string; at: number }
  | { op: "token.touch"; id: string; at: number }
  | { op: "project.ensure"; name: string; at: number }
  // leases
  /**
   * Takes or renews the lease `name` for `holder` until `at + ttlMs`, if it is
   * free, already the holder's, or expired (its expires_at <= at); else
   * LeaseHeldError (a ConflictError naming the holder and its expiry). The
   * epoch is 1 for a new lease, the same on a renewal, and one more whenever
   * the holder changes (a fencing token). Two managers racing for one lease:
   * exactly one wins.
   *
   * Time is the caller's clock (`at`, ms), on both engines, so the rule reads
   * the same everywhere and tests can drive it. That is enough when the
   * managers' clocks agree to well within the TTL (NTP keeps them within
   * milliseconds): a challenger whose clock runs `d` ahead of the holder's sees
   * the lease expire `d` early. While the holder renews (every renew interval,
   * well inside the TTL) that only matters for d > TTL - renew interval; when
   * the holder cannot renew, LeaderLease (cluster/leader.ts) stops acting a
   * clock-skew allowance before its lease could have expired.
   */
  | { op: "lease.acquire"; name: string; holder: string; ttlMs: number; at: number }
  /** Drops the lease if `holder` holds it (expired or not); otherwise does nothing, no error. */
  | { op: "lease.release"; name: string; holder: string }
  // host ownership (leases named hostLeaseName(hostId); docs/design.md "Host ownership")
  /**
   * The manager that accepted the host's agent stream takes the host,
   * whoever held it (the agent chose this manager): holder = `holder`,
   * expiry `at + ttlMs`, epoch one more than the host's previous one (1 the
   * first time), whether the previous term lapsed or not. The new epoch is
   * in CommitResult.leaseEpochs. Concurrent takes get distinct epochs; the
   * last to commit holds the host.
   */
  | { op: "host.take"; hostId: string; holder: string; ttlMs: number; at: number }
  /**
   * Extends the term to `at + ttlMs` if the host is still `holder`'s at
   * `epoch` (expired or not: nobody took it meanwhile); else
   * HostOwnershipLostError.
   */
  | { op: "host.renew"; hostId: string; holder: string; epoch: number; ttlMs: number; at: number }
  /**
   * Ends `holder`'s term at `epoch` (the stream ended) if it is still that
   * term, else does nothing. The row stays, expired, so the next take
   * counts on from this epoch (agents refuse commands of older epochs).
   */
  | { op: "host.release"; hostId: string; holder: string; epoch: number }
  /**
   * Writes nothing: HostOwnershipLostError unless the host is `holder`'s at
   * `epoch` and the term has not expired at `at`. The fence on every batch a
   * manager commits for a host it drives; a take by another manager either
   * commits before (this batch is refused) or after it.
   */
  | { op: "host.checkOwner"; hostId: string; holder: string; epoch: number; at: number }
  // webhook deliveries (alerts/webhook.ts; one row per notification and receiver)
  /**
   * Queues a delivery. Bounded: when more than `maxPending` rows are pending
   * afterwards, the oldest others (by createdAt, id) are deleted and listed
   * in CommitResult.droppedDeliveries.
   */
  | { op: "webhook.enqueue"; delivery: Omit<WebhookDeliveryRecord, "attempts" | "lastError">; maxPending: number }
  /**
   * Attempt `attempt` failed and will be retried at `nextAttemptAt`: ConflictError
   * unless the row is still there after `attempt - 1` attempts (someone else
   * attempted or finished it meanwhile).
   */
  | { op: "webhook.retry"; id: string; urlKey: string; attempt: number; nextAttemptAt: number; lastError: string }
  /** Attempt `attempt` delivered it or gave up: deletes the row; ConflictError as webhook.retry. */
  | { op: "webhook.done"; id: string; urlKey: string; attempt: number }
  /** Deletes expired leases named `prefix…` that expired before `before` (presence leases of managers gone). */
  | { op: "lease.pruneExpired"; prefix: string; before: number }
  // backups (BackupService; domain/records.ts BackupRecord)
  /** A new target; AlreadyExistsError when its name is taken. */
  | { op: "backupTarget.insert"; target: BackupTargetRecord }
  /** Removes a target; NotFoundError when missing. (The API refuses while backups use it.) */
  | { op: "backupTarget.delete"; id: string }
  /** A new backup; AlreadyExistsError when its id is taken. */
  | { op: "backup.insert"; backup: BackupRecord }
  /**
   * Changes the fields in `set` (never id, serverId, targetId, key, createdAt).
   * With `ifState`: ConflictError unless the backup is in one of those states
   * (a result that arrives after the backup failed by its deadline changes
   * nothing). NotFoundError when missing.
   */
  | { op: "backup.update"; id: string; set: Partial<Omit<BackupRecord, "id" | "serverId" | "targetId" | "key" | "createdAt">>; ifState?: readonly BackupState[] }
  /** Drops the row (its archive is already gone from the target); NotFoundError when missing. ConflictError when locked. */
  | { op: "backup.delete"; id: string }
  // usage history (usage/usage-feed.ts; migration 14)
  /**
   * Writes closed 5-minute usage buckets, all in this one batch. A bucket
   * already stored for the same subject and start (another manager's part
   * of it: a host that moved between managers mid-bucket, or a manager's
   * own before a restart) is merged with it: averages weighted by their
   * sample counts, the larger memory peak, this write's limit. Then deletes
   * at most `pruneLimit` buckets that started before `pruneBefore`, oldest
   * first. Announces nothing to onCommit listeners.
   */
  | { op: "usage.write"; buckets: readonly UsageBucketRecord[]; pruneBefore: number; pruneLimit: number }
  /**
   * One attempt of a server's install script (migration 17), replacing a row
   * of the same server and attempt; then only the server's newest
   * INSTALL_LOGS_KEPT attempts are kept. Not a server write.
   */
  | { op: "installLog.record"; log: InstallLogRecord }
  // templates (TemplateService; migration 15). Not server writes: no server version moves.
  /** A new template; AlreadyExistsError when its project has a template of that name (or its id is taken). */
  | { op: "template.insert"; template: TemplateRecord }
  /**
   * Replaces a template's name, content, built_in mark and update time and
   * sets its version to `template.version`, only if its stored version is
   * `expectVersion` (ConflictError otherwise). NotFoundError when missing;
   * AlreadyExistsError when the new name is taken in its project.
   */
  | { op: "template.update"; template: TemplateRecord; expectVersion: number }
  /** Removes a template; NotFoundError when missing. */
  | { op: "template.delete"; id: string }
  // schedules (ScheduleService, schedules/loop.ts; migration "schedules")
  /** A new schedule; AlreadyExistsError when its name is taken in its project. */
  | { op: "schedule.insert"; schedule: ScheduleRecord }
  /**
   * Replaces the record (never id, project, createdAt, lastTickAt: the store
   * keeps those) when its version is still `expectVersion`, else
   * ConflictError; NotFoundError when gone. AlreadyExistsError for a name taken.
   */
  | { op: "schedule.update"; schedule: ScheduleRecord; expectVersion: number }
  /** Deletes the schedule and every run of it; NotFoundError when gone. */
  | { op: "schedule.delete"; id: string }
  /**
   * Records a run (running, or finished: a missed record, a skipped tick).
   * A tick, catch-up or missed record claims (scheduleId, scheduledFor):
   * TickClaimedError when that tick already has one (unique index), and it
   * moves the schedule's lastTickAt forward. A running run: RunUnderWayError
   * when the schedule has one running already. NotFoundError when the
   * schedule is gone. Then keeps the schedule's newest `keep` finished runs
   * (by startedAt, id) and deletes older ones.
   */
  | { op: "scheduleRun.insert"; run: ScheduleRunRecord; keep: number }
  /** Ends a running run: ConflictError unless it is still running; NotFoundError when gone. */
  | { op: "scheduleRun.finish"; id: string; finish: RunFinish }
  // saved queries (SavedQueryService, query/saved-alerts.ts; migration 18). Not server writes.
  /** A new saved query; AlreadyExistsError when its name is taken in its project. */
  | { op: "savedQuery.insert"; savedQuery: SavedQueryRecord }
  /**
   * Replaces name, owner-independent columns, spec, version, update time and
   * what the alert runner saw (rowsSince, lastRows, lastFirst) when the stored
   * version is still `expectVersion`, else ConflictError; NotFoundError when
   * gone; AlreadyExistsError for a name taken in its project.
   */
  | { op: "savedQuery.update"; savedQuery: SavedQueryRecord; expectVersion: number }
  /** Removes a saved query; NotFoundError when gone. */
  | { op: "savedQuery.delete"; id: string }
  /**
   * What the alert runner saw at `at`: `rows` rows (the first described by
   * `first`). rows_since becomes `at` unless already set when rows > 0, null
   * when 0. The version does not move; a query gone meanwhile is no error.
   */
  | { op: "savedQuery.observe"; id: string; at: number; rows: number; first: string }
  // meta
  | { op: "meta.set"; key: string; value: string }
  // the ledger: always applied last
  | { op: "event.append"; event: EventInput; at: number };

/** What a committed batch did. */
export interface CommitResult {
  /** The new version of every server the batch wrote, by id. */
  versions: ReadonlyMap<string, number>;
  /** The events appended, with their ids, in order. */
  events: readonly EventRecord[];
  /** Servers whose observation (containers, data directory) the batch changed: to reconcile. */
  touchedServers: ReadonlySet<string>;
  /** Hosts whose record the batch wrote (as Committed.hostIds). */
  hostIds: ReadonlySet<string>;
  /** The epoch of every host lease the batch took (host.take), by lease name (hostLeaseName). */
  leaseEpochs?: ReadonlyMap<string, number>;
  /** Pending webhook deliveries webhook.enqueue deleted to stay within its cap, oldest first. */
  droppedDeliveries?: readonly { id: string; urlKey: string }[];
}

/**
 * Tombstones of purged servers kept for WatchServers resumes (migration 10).
 * A resume token older than the oldest kept gets a fresh snapshot; 10,000
 * purges is far more than happen between a watch's reconnects.
 */
export const SERVER_TOMBSTONES_KEPT = 10_000;

/** The lease row holding host `hostId`'s ownership (host.take): `host:<id>`. */
export function hostLeaseName(hostId: string): string {
  return `host:${hostId}`;
}

/** What one committed batch touched: for the ledger's live feed and the reconciler. */
export interface Committed {
  events: readonly EventRecord[];
  /** Servers whose record the batch wrote (inserted, changed, deleted). */
  serverIds: ReadonlySet<string>;
  hostIds: ReadonlySet<string>;
  /**
   * Operator tokens the batch wrote (inserted, revoked; not a "last used"
   * stamp): a revocation reaches every manager's auth this way. Absent when
   * none; incomplete on a resync (then any token may have been revoked).
   */
  tokenIds?: ReadonlySet<string>;
  /**
   * Committed by another manager of the database (PostgreSQL only), heard
   * through the change feed (postgres/pg-listen.ts) after its notice arrived,
   * its events read back from the store. Absent for this store's own batches.
   */
  remote?: boolean;
  /**
   * This store may have missed other managers' commits (the feed's connection
   * was lost and came back, or a batch wrote too many records to list them):
   * any record may have changed. `serverIds` and `hostIds` are then incomplete
   * (usually empty); `events`, when any, are still exactly that batch's.
   * Listeners read again what they follow (the ledger's watch reads forward
   * from its last id; WatchServers and the reconciler look at every server).
   */
  resync?: boolean;
}

// ------------------------------------------------------------------ reads

/** One page of a fleet-wide read: the rows whose id is after `after` (in id order), at most `limit`. */
export interface IdPage {
  after: string;
  limit: number;
}

/**
 * Hosts by id: `from` ≤ host id < `to` (no `to`: no upper bound). Fleet-wide
 * reads of observations go a range of hosts at a time (orphans/detector.ts);
 * ranges cut at known host ids cover every id, known or not.
 */
export interface HostRange {
  from: string;
  to?: string;
}

export interface ServerPlacement {
  id: string;
  project: string;
  name: string;
  hostId: string;
  image: string;
  createdAt: number;
  adoptedContainerId?: string;
  /** Hosts a transfer of this server involves (its source and target, copies still to remove): what it has there is no orphan. */
  transferHosts?: string[];
}

export interface ServerReads {
  getServer(id: string): Promise<ServerRecord | undefined>;
  /** Only the server's host, or undefined when there is no such server: no record decoded (the agent link asks this per container event). */
  serverHostId(id: string): Promise<string | undefined>;
  findServerByName(project: string, name: string): Promise<ServerRecord | undefined>;
  listServers(f?: ServerFilter): Promise<ServerRecord[]>;
  /** Including soft-deleted ones, whose containers may still need removal. */
  serverIdsOnHost(hostId: string): Promise<string[]>;
  /**
   * The position of the latest committed server change (servers.change_seq or
   * a tombstone's), 0 when none. Every change committed later has a greater one.
   */
  serverChangeHead(): Promise<number>;
  /**
   * Each server whose latest change is after `after` (its current record, or
   * its tombstone when purged), in change order, at most `limit`. Undefined
   * when `after` is older than the changes the store keeps (the oldest
   * tombstones beyond SERVER_TOMBSTONES_KEPT were dropped): read a snapshot
   * instead. On PostgreSQL, positions become visible in their order (they are
   * given under the ledger lock), so reading on from the last one returned
   * never skips a change that commits later.
   */
  serverChangesSince(after: number, limit: number): Promise<ServerChangeRecord[] | undefined>;

  allServerIds(): Promise<string[]>;
  countServersByHost(): Promise<Map<string, number>>;
  /**
   * Per host, its servers that are not deleted: how many, and their CPU and
   * memory limits summed (`resources.cpus`, `resources.memory_bytes`; a server
   * without a limit adds 0). Summed by the database from the stored specs:
   * no record is decoded (ListHosts' allocated figures, placement's "hosts
   * with room").
   */
  allocationByHost(): Promise<Map<string, HostAllocation>>;
  /** Every server's placement, or with `page` those after `page.after` in id order, at most `page.limit` (store/pages.ts readPages). */
  serverPlacements(page?: IdPage): Promise<ServerPlacement[]>;
  /** What the alert rules need, without decoding whole records; paged as serverPlacements. */
  serverFacts(page?: IdPage): Promise<ServerFacts[]>;
  /** Live (not soft-deleted) servers counted by project and phase, in the database (the /metrics gauge). */
  serverCounts(): Promise<{ project: string; phase: string; count: number }[]>;
}

export interface HostReads {
  getHost(id: string): Promise<HostRecord | undefined>;
  listHosts(): Promise<HostRecord[]>;
  getEnrollmentToken(tokenHash: string): Promise<{ id: string; expiresAt: number; usedAt: number | null } | undefined>;
}

export interface ObservationReads {
  containersForServer(hostId: string, serverId: string): Promise<ObservedContainer[]>;
  observedContainer(hostId: string, containerId: string): Promise<ObservedContainer | undefined>;
  /** Of every host, or of the hosts in `range`. */
  listOrphanCandidates(managerId: string, includeUnlabelled: boolean, range?: HostRange): Promise<ObservedContainer[]>;
  observedCounts(hostId: string): Promise<{ total: number; other: number }>;
  getDataDir(hostId: string, serverId: string): Promise<DataDirRecord | undefined>;
  /** Of every host, of one (an id), or of the hosts in a range. */
  listDataRootEntries(hosts?: string | HostRange): Promise<(DataRootEntry & { hostId: string })[]>;
}

export interface CommandReads {
  getCommand(id: string): Promise<CommandRecord | undefined>;
  openCommandForServer(serverId: string): Promise<CommandRecord | undefined>;
  lastFinishedCommand(serverId: string): Promise<CommandRecord | undefined>;
  openCommandsForHost(hostId: string): Promise<CommandRecord[]>;
  serverIdsWithOpenCommands(): Promise<Set<string>>;
}

export interface EventReads {
  listNewestFirst(q: EventQuery & { beforeId?: number; limit: number }): Promise<EventRecord[]>;
  /** Events after `afterId` up to `upToId`, oldest first: what a watch has not seen yet. */
  readForward(q: EventQuery & { afterId: number; upToId: number; limit: number }): Promise<EventRecord[]>;
  lastEventId(): Promise<number>;
  firstEventId(): Promise<number>;
  /**
   * Aggregate's pushdown (query/aggregate.ts): the events of the scope with
   * `time` in [since, until) that meet every condition of `where`, counted per
   * bucket (`floor(time / bucketMs)`, buckets aligned to the epoch; 0 for
   * all when bucketMs is unset) and per the values of the `groupBy` columns.
   * At most `limit` rows (bucket × group), in no particular order.
   */
  countEvents(q: EventCountQuery): Promise<EventCountRow[]>;
  /**
   * The smallest and largest id of the scope's events with `time` in [since,
   * until); undefined when there are none. Read from the time index (`id + 0`:
   * not by walking the primary key from either end, which reads every event
   * after the window for MAX).
   */
  eventIdSpan(q: EventScope & { since: number; until: number }): Promise<{ first: number; last: number } | undefined>;
  /**
   * The scope's events with ids in (afterId, upToId] and `time` in [since,
   * until), oldest first, at most `limit`: Aggregate reads a window in id
   * order (within eventIdSpan's ids, by the primary key) without sorting it.
   */
  readEventWindow(q: EventScope & { since: number; until: number; afterId: number; upToId: number; limit: number }): Promise<EventRecord[]>;
}

/** Columns of `events` Aggregate groups and filters by in SQL (Event's fields of the same names). */
export const EVENT_COUNT_COLUMNS = ["type", "reason", "actor", "server_id", "host_id", "project"] as const;
export type EventCountColumn = (typeof EVENT_COUNT_COLUMNS)[number];

export interface EventCountQuery extends EventScope {
  /** Inclusive, ms. */
  since: number;
  /** Exclusive, ms. */
  until: number;
  /** Bucket width in ms (a whole number); unset: one bucket, 0. */
  bucketMs?: number;
  groupBy: readonly EventCountColumn[];
  /** All must hold: the column equals `value` ("eq"), or starts with it ("prefix", a non-empty value). */
  where: readonly { column: EventCountColumn; op: "eq" | "prefix"; value: string }[];
  limit: number;
}

/** One bucket of one group: `key` has a value per groupBy column, in order. */
export interface EventCountRow {
  bucket: number;
  key: string[];
  count: number;
}

export interface AlertReads {
  getAlert(id: string): Promise<AlertRecord | undefined>;
  listFiringAlerts(): Promise<AlertRecord[]>;
  listAlerts(f: { includeResolved: boolean; project: string | null; sharedRules: readonly string[]; limit: number }): Promise<AlertRecord[]>;
  latestMute(rule: string, subject: string): Promise<number | null>;
}

export interface TokenReads {
  countTokens(): Promise<number>;
  findTokenBySecretHash(secretHash: string): Promise<TokenRecord | undefined>;
  getToken(id: string): Promise<TokenRecord | undefined>;
  listTokens(f?: { project?: string }): Promise<TokenRecord[]>;
}

export interface LeaseReads {
  /** The lease as stored (expired or not), or undefined when nobody ever took it or it was released. */
  getLease(name: string): Promise<LeaseRecord | undefined>;
  /**
   * The hosts connected somewhere at `at`: online, not removed, with a live
   * ownership lease (host.take); host id → the holder (a manager process).
   * What every manager shows as "connected" for a host another one holds.
   */
  liveHostOwners(at: number): Promise<Map<string, string>>;
  /** How many leases named `prefix…` have not expired at `at` (live managers: auth/presence.ts). */
  countLiveLeases(prefix: string, at: number): Promise<number>;
}

export interface WebhookDeliveryReads {
  /** Pending deliveries due at `at` (next attempt at or before it), soonest first, at most `limit`. */
  dueWebhookDeliveries(at: number, limit: number): Promise<WebhookDeliveryRecord[]>;
  /** When the soonest pending delivery is due, or undefined when none is pending. */
  nextWebhookDeliveryAt(): Promise<number | undefined>;
  countWebhookDeliveries(): Promise<number>;
}

export interface TemplateReads {
  getTemplate(id: string): Promise<TemplateRecord | undefined>;
  findTemplateByName(project: string, name: string): Promise<TemplateRecord | undefined>;
  /** By (name, id), filtered and paged as TemplateFilter says. */
  listTemplates(f?: TemplateFilter): Promise<TemplateRecord[]>;
}

export interface BackupReads {
  getBackupTarget(id: string): Promise<BackupTargetRecord | undefined>;
  findBackupTargetByName(name: string): Promise<BackupTargetRecord | undefined>;
  /** Every target, by name. */
  listBackupTargets(): Promise<BackupTargetRecord[]>;
  getBackup(id: string): Promise<BackupRecord | undefined>;
  /** Newest first (createdAt, then id, descending), filtered as BackupFilter says. */
  listBackups(f?: BackupFilter): Promise<BackupRecord[]>;
  /** How many backups use the target (any state). */
  countBackupsOnTarget(targetId: string): Promise<number>;
  /**
   * The live servers (not soft-deleted, not being purged) whose backup policy
   * sets alert_after_hours > 0, each with its newest successful backup's
   * finish time: one query, so the backup_overdue alert's view
   * (backups/overdue.ts) is read once at start and per server after a change,
   * never by listing every server and backup. With `serverId`, only that
   * server (no row: it has no such policy, or is gone).
   */
  backupPolicyFacts(serverId?: string): Promise<BackupPolicyFacts[]>;
}

/** Whose usage a bucket is: a server's (by id) or a host's. */
export type UsageSubjectKind = "server" | "host";

/**
 * One stored 5-minute usage bucket (usage.write, usageBuckets): the averages
 * of the samples that fell in [at, at + 5 min), their count, the largest
 * memory figure and the last memory limit (absent: none). A host's have 0
 * for the network, IO and pids figures.
 */
export interface UsageBucketRecord {
  kind: UsageSubjectKind;
  subjectId: string;
  /** The bucket's start, ms since the epoch: a multiple of USAGE_BUCKET_MS (usage.write refuses others with a RangeError). */
  at: number;
  samples: number;
  cpuPercent: number;
  memoryBytes: number;
  memoryMaxBytes: number;
  memoryLimitBytes?: number;
  netRxBps: number;
  netTxBps: number;
  ioReadBps: number;
  ioWriteBps: number;
  pids: number;
}

/** A usage bucket's span: its start (UsageBucketRecord.at) is a multiple of it. */
export const USAGE_BUCKET_MS = 300_000;
/**
 * The longest span usageBuckets reads (a day, the pruning's margin, and some),
 * and how far back from the newest bucket a purge looks (older rows are
 * pruned by age): the table is keyed by time first, so a subject's rows are
 * found by looking up each bucket start of a span.
 */
export const USAGE_SPAN_MAX_MS = 26 * 3_600_000;

/** How many attempts of a server's install log the store keeps. */
export const INSTALL_LOGS_KEPT = 3;

/** One attempt of a server's install script (ServerService.GetInstallLog). */
export interface InstallLogRecord {
  serverId: string;
  attempt: number;
  commandId: string;
  startedAt: number;
  finishedAt: number;
  exitCode: number;
  timedOut: boolean;
  /** Output was left out before `log` (the agent keeps the last 64 KiB). */
  truncated: boolean;
  log: Uint8Array;
}

export interface InstallLogReads {
  /** The server's install attempts, newest (highest attempt) first. */
  installLogs(serverId: string): Promise<InstallLogRecord[]>;
}

export interface UsageReads {
  /**
   * The subject's stored buckets that start after `after` and at or before
   * `upTo` (ms), oldest first. The span is at most USAGE_SPAN_MAX_MS (else
   * a RangeError: a caller's bug).
   */
  usageBuckets(kind: UsageSubjectKind, subjectId: string, after: number, upTo: number): Promise<UsageBucketRecord[]>;
}

export interface ScheduleReads {
  getSchedule(id: string): Promise<ScheduleRecord | undefined>;
  findScheduleByName(project: string, name: string): Promise<ScheduleRecord | undefined>;
  /** By project, then name. */
  listSchedules(f?: ScheduleFilter): Promise<ScheduleRecord[]>;
  getScheduleRun(id: string): Promise<ScheduleRunRecord | undefined>;
  /** A schedule's runs, newest first (startedAt, id descending). */
  listScheduleRuns(scheduleId: string, page: ScheduleRunPage): Promise<ScheduleRunRecord[]>;
  /** Every run still running (of one schedule, with `scheduleId`). */
  runningScheduleRuns(scheduleId?: string): Promise<ScheduleRunRecord[]>;
}

export interface SavedQueryReads {
  getSavedQuery(id: string): Promise<SavedQueryRecord | undefined>;
  findSavedQueryByName(project: string, name: string): Promise<SavedQueryRecord | undefined>;
  /** By project, then name, filtered and paged as SavedQueryFilter says. */
  listSavedQueries(f?: SavedQueryFilter): Promise<SavedQueryRecord[]>;
}

/** Bounded deletions of old rows; each returns how many went (retention runs them in slices). */
export interface Retention {
  pruneEventsOlderThan(cutoff: number, limit: number): Promise<number>;
  pruneEventsBeyondCount(keep: number, limit: number): Promise<number>;
  pruneFinishedCommands(before: number, limit: number): Promise<number>;
  pruneEnrollmentTokens(before: number, limit: number): Promise<number>;
  pruneResolvedAlerts(cutoff: number, limit: number): Promise<number>;
}

/** The whole contract; `store/sqlite/` and `store/postgres/` implement it. */
/** What the servers of one host take (Store.allocationByHost). */
export interface HostAllocation {
  servers: number;
  cpus: number;
  memoryBytes: number;
}

export interface Store extends ServerReads, HostReads, ObservationReads, CommandReads, EventReads, AlertReads, TokenReads, LeaseReads, WebhookDeliveryReads, BackupReads, UsageReads, TemplateReads, ScheduleReads, SavedQueryReads, InstallLogReads, Retention {
  readonly engine: "sqlite" | "postgres";
  /** Where it is, for logs and messages (a URL without its password). */
  readonly description: string;
  /** The control plane's identity (the `berth.manager` label on what it creates), made once per database. */
  clusterId(): Promise<string>;
  getMeta(key: string): Promise<string | undefined>;
  /** Applies every operation or none; rejects with the typed error of the first precondition that failed. */
  commit(ops: readonly WriteOp[]): Promise<CommitResult>;
  /**
   * Hears every batch this store committed (its events, servers and hosts),
   * each exactly once, synchronously after its COMMIT, so what it reports is
   * readable by then. Returns the unsubscribe.
   *
   * Order: on SQLite batches commit one at a time and are heard in commit
   * order. On PostgreSQL batches commit concurrently, and two that commit at
   * nearly the same moment may be heard in either order: a listener can hear
   * event id 11 before id 10. Treat a notification as "something committed",
   * never as the next item of a sequence: the ledger's live feed
   * (ledger/ledger.ts follow, api/event-service.ts) uses it only as a wake-up
   * and reads the events forward from the store by id. A listener that throws
   * is reported (onListenerError) and fails nothing: the batch is committed.
   *
   * Other managers (PostgreSQL): their batches are heard too, marked `remote`,
   * once their notice arrives (within milliseconds of their COMMIT), with their
   * events read back in full; remote batches are heard in their commit order,
   * one after another, but interleaved with this store's own in any order.
   * Each batch is heard once, by its own store as local and by every other as
   * remote. A `resync` says some may have been missed (see Committed).
   * SQLite has one manager per file: nothing is ever remote there.
   */
  onCommit(listener: (c: Committed) => void): () => void;
  /** A write that proves the database takes writes now (health), waiting at most `lockWaitMs`. */
  probeWrite(value: string, lockWaitMs: number): Promise<void>;
  close(): Promise<void>;
}
