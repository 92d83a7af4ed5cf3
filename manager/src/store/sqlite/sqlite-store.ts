/**
 * The store contract (store/contract.ts) on SQLite: the embedded default.
 *
 * better-sqlite3 is synchronous, so every read resolves at once and a batch
 * runs as one immediate transaction inside `commit`. The SQL itself lives in
 * the table classes (Store, EventTables, AlertTables, TokenTables over one
 * connection); this class is the only way the rest of the manager reaches them.
 */
import { ConflictError, HostOwnershipLostError, NotFoundError } from "../../errors.js";
import { toJsonString } from "@bufbuild/protobuf";
import { ServerSpecSchema, ServerStatusSchema } from "@berth/proto/berth/v1/server_pb.js";
import type { BackupFilter, EventRecord, Lifecycle, ServerRecord, TemplateFilter } from "../../domain/records.js";
import { appendedEvent } from "../rows.js";
import type { AlertTables } from "./alert-tables.js";
import { hostLeaseName, type HostRange, type IdPage, type Committed, type CommitResult, type Store as StoreContract, type UsageSubjectKind, type WriteOp } from "../store.js";
import { serverFromRow, storableBatch, type ServerRow } from "../rows.js";
import type { EventTables } from "./event-tables.js";
import type { SqliteTables as Tables } from "./tables.js";
import type { TokenTables } from "./token-tables.js";
import type { ClusterTables } from "./cluster-tables.js";
import type { WalCheckpointer } from "./wal-checkpointer.js";
import type { ServerBackupTables } from "./server-backup-tables.js";
import type { UsageTables } from "./usage-tables.js";
import type { TemplateTables } from "./template-tables.js";
import type { ScheduleTables } from "./schedule-tables.js";
import type { SavedQueryTables } from "./saved-query-tables.js";
import type { SavedQueryFilter } from "../../query/saved-records.js";
import type { ScheduleFilter, ScheduleRunPage } from "../../schedules/records.js";

type CommitListener = (c: Committed) => void;

/** What one batch did so far (filled while it runs, reported once it committed). */
interface Effects {
  versions: Map<string, number>;
  events: EventRecord[];
  touched: Set<string>;
  /** Servers whose record the batch wrote (not merely named by an event). */
  serverIds: Set<string>;
  /** Servers the batch purged, with where they lived (their tombstones). */
  purged: Map<string, { project: string; hostId: string }>;
  hostIds: Set<string>;
  leaseEpochs: Map<string, number>;
  /** Tokens inserted or revoked (Committed.tokenIds). */
  tokenIds: Set<string>;
  droppedDeliveries: { id: string; urlKey: string }[];
  /** Each server write of the batch as stored (after storable), in order, with the version it left (undefined: the record went). */
  serverWrites: { op: ServerWrite; version: number | undefined }[];
}

type ServerWrite = Extract<WriteOp, { op: `server.${string}` }>;

/** At most this many batches share one transaction (commit). */
const GROUP_MAX_BATCHES = 500;

/** The batches applied in this turn's transaction, waiting for its COMMIT. */
interface Group {
  batches: { fx: Effects; resolve: (r: CommitResult) => void; reject: (err: unknown) => void }[];
}

/**
 * Decoded server records kept (getServer): a stop reads the same record five
 * or six times, and decoding its JSON was a tenth of the manager's CPU under
 * load. Least recently used ones go first, so a fleet of 100,000 does not
 * stay decoded whole.
 */
const SERVER_CACHE_MAX = 20_000;

/** Under test, cached records are frozen: code that changes a record it read (instead of a copy) fails there. */
const FREEZE_CACHED = process.env.VITEST !== undefined;

function deepFreeze<T>(o: T): T {
  if (o === null || typeof o !== "object" || Object.isFrozen(o) || ArrayBuffer.isView(o)) return o;
  Object.freeze(o);
  for (const v of Object.values(o as object)) deepFreeze(v);
  return o;
}

function isServerWrite(o: WriteOp): o is ServerWrite {
  return o.op.startsWith("server.") && o.op !== "server.check";
}

function serverIdOf(o: ServerWrite): string {
  return o.op === "server.insert" ? o.server.id : o.id;
}

/** The record after `o` (which left `version`), from the one before it; undefined when that cannot be told without reading the row. */
function nextRecord(s: ServerRecord | undefined, o: ServerWrite, version: number | undefined): ServerRecord | undefined {
  if (!s || version === undefined || version !== s.version + 1) return undefined;
  if (o.op === "server.status") return { ...s, status: o.status, dataInitialized: o.dataInitialized, version };
  // As stored: JSON text (absent keys stay absent).
  if (o.op === "server.lifecycle") return { ...s, lifecycle: JSON.parse(JSON.stringify(o.lifecycle)) as Lifecycle, version };
  return undefined;
}

/** A record as comparable text (the test-time check of #writeThrough). */
function recordText(s: ServerRecord): string {
  return JSON.stringify({ ...s, spec: toJsonString(ServerSpecSchema, s.spec), status: toJsonString(ServerStatusSchema, s.status) });
}

function sameRecord(a: ServerRecord, b: ServerRecord): boolean {
  return recordText(a) === recordText(b);
}

function resultOf(fx: Effects): CommitResult {
  return { versions: fx.versions, events: fx.events, touchedServers: fx.touched, hostIds: fx.hostIds, leaseEpochs: fx.leaseEpochs, ...(fx.droppedDeliveries.length > 0 ? { droppedDeliveries: fx.droppedDeliveries } : {}) };
}

export class SqliteStore implements StoreContract {
  readonly engine = "sqlite" as const;
  readonly #listeners = new Set<CommitListener>();
  /** The group whose transaction is open in this turn (commit). */
  #group: Group | undefined;
  #closed = false;
  #groups = 0;
  #grouped = 0;
  /**
   * Decoded records by id, least recently used first (SERVER_CACHE_MAX).
   * Reads outside a write fill it; a committed group carries an entry forward
   * or drops it for every server it wrote (#writeThrough).
   */
  readonly #servers = new Map<string, ServerRecord>();

  constructor(
    readonly description: string,
    private readonly tables: Tables,
    private readonly events: EventTables,
    private readonly alerts: AlertTables,
    private readonly tokens: TokenTables,
    private readonly onListenerError: (err: unknown) => void = () => {},
    /** Webhook deliveries and presence counts (open.ts passes them; without, those operations throw). */
    private readonly cluster?: ClusterTables,
    /** Backup targets and server backups (open.ts passes them; without, those operations throw). */
    private readonly backups?: ServerBackupTables,
    /** Checkpoints the WAL off the event loop (open.ts starts it for the manager); joined on close. */
    private readonly walCheckpointer?: WalCheckpointer,
    /** The usage history (open.ts passes it; without, usage.write and usageBuckets throw). */
    private readonly usage?: UsageTables,
    /** Server templates (open.ts passes them; without, template.* and the template reads throw). */
    private readonly templates?: TemplateTables,
    /** Schedules and their runs (open.ts passes them; without, those operations throw). */
    private readonly schedules?: ScheduleTables,
    /** Saved queries (open.ts passes them; without, those operations throw). */
    private readonly savedQueries?: SavedQueryTables,
  ) {}

  #savedQueries(): SavedQueryTables {
    if (!this.savedQueries) throw new Error("this SqliteStore was made without SavedQueryTables; open it with openStore()");
    return this.savedQueries;
  }

  #templates(): TemplateTables {
    if (!this.templates) throw new Error("this SqliteStore was made without TemplateTables; open it with openStore()");
    return this.templates;
  }

  #schedules(): ScheduleTables {
    if (!this.schedules) throw new Error("this SqliteStore was made without ScheduleTables; open it with openStore()");
    return this.schedules;
  }

  #usage(): UsageTables {
    if (!this.usage) throw new Error("this SqliteStore was made without UsageTables; open it with openStore()");
    return this.usage;
  }

  #cluster(): ClusterTables {
    if (!this.cluster) throw new Error("this SqliteStore was made without ClusterTables; open it with openStore()");
    return this.cluster;
  }

  #backups(): ServerBackupTables {
    if (!this.backups) throw new Error("this SqliteStore was made without ServerBackupTables; open it with openStore()");
    return this.backups;
  }

  // ---------------------------------------------------------------- writes

  /**
   * Group commit: each batch is applied at once, in its own savepoint of a
   * transaction that stays open until the end of the event-loop turn, and the
   * batches of one turn share its COMMIT. A batch whose precondition fails
   * rolls back alone and rejects at once; the others' promises resolve after
   * the COMMIT (each batch is heard by the listeners in commit order before
   * its promise resolves). Reads see every batch applied before them, as if
   * each had committed alone, so a writer that reads, decides and commits
   * meets the same conflicts as without grouping. Each COMMIT writes every
   * page it touched to the WAL, and one per batch was the manager's largest
   * cost under load (docs/benchmarks.md, issue 17). A group commits early
   * after GROUP_MAX_BATCHES batches. Should the COMMIT itself fail (a full
   * disk), every batch of the group rejects and the kept records are dropped
   * (reads in the turn may have seen what was then rolled back).
   */
  commit(batch: readonly WriteOp[]): Promise<CommitResult> {
    if (this.#closed) return Promise.reject(new Error("the store is closed"));
    let g: Group;
    let fx: Effects;
    try {
      g = this.#openGroup();
    } catch (err) {
      return Promise.reject(err);
    }
    try {
      // Nested in the group's transaction: a savepoint, rolled back alone when the batch throws.
      fx = this.tables.transaction(() => this.#applyBatch(batch));
    } catch (err) {
      // Some failures (a full disk, I/O) end the whole transaction: nothing of the group stands.
      if (!this.tables.inTransaction()) this.#abortGroup(g, err);
      return Promise.reject(err);
    }
    this.#carryForward(fx);
    const done = new Promise<CommitResult>((resolve, reject) => g.batches.push({ fx, resolve, reject }));
    if (g.batches.length >= GROUP_MAX_BATCHES) this.#commitGroup();
    return done;
  }

  /** The group open in this turn, or a new one (its COMMIT at the end of the turn). */
  #openGroup(): Group {
    if (this.#group) return this.#group;
    this.tables.begin();
    const g: Group = { batches: [] };
    this.#group = g;
    setImmediate(() => {
      if (this.#group === g) this.#commitGroup();
    });
    return g;
  }

  /** Commits the open group: its batches are heard and resolve, in order. */
  #commitGroup(): void {
    const g = this.#group;
    if (!g) return;
    try {
      this.tables.commitTransaction();
    } catch (err) {
      this.#abortGroup(g, err);
      return;
    }
    this.#group = undefined;
    this.#groups++;
    this.#grouped += g.batches.length;
    for (const b of g.batches) {
      this.#announce(b.fx);
      b.resolve(resultOf(b.fx));
    }
  }

  /** The group's transaction is gone (rolled back): every batch of it rejects, and reads may have kept what never committed. */
  #abortGroup(g: Group, err: unknown): void {
    if (this.#group === g) this.#group = undefined;
    if (this.tables.inTransaction()) this.tables.rollbackTransaction();
    this.#servers.clear();
    for (const b of g.batches) b.reject(err);
    g.batches.length = 0;
  }

  /**
   * The kept records after a batch applied: a status or lifecycle write that
   * took a kept record's version one step further gives the next record
   * without reading the row back (the change feed reads every record just
   * written, and decoding it was 5.7% of the manager's CPU); any other server
   * write, or one the kept record does not precede, drops the entry. Under
   * test each record made so is checked against the row (a mismatch throws).
   */
  #carryForward(fx: Effects): void {
    if (fx.serverWrites.length === 0) return;
    const known = new Map<string, ServerRecord | undefined>();
    for (const w of fx.serverWrites) {
      const id = serverIdOf(w.op);
      known.set(id, nextRecord(known.has(id) ? known.get(id) : this.#servers.get(id), w.op, w.version));
    }
    for (const [id, next] of known) {
      this.#servers.delete(id);
      if (!next) continue;
      if (FREEZE_CACHED) {
        const stored = this.tables.getServer(id);
        if (!stored || !sameRecord(next, stored)) throw new Error(`the kept record of ${id} differs from its row after a write: ${recordText(next)} vs ${stored && recordText(stored)}`);
        deepFreeze(next);
      }
      this.#servers.set(id, next);
    }
  }

  /** How many groups were written and how many batches they held (group commit; read by its tests, not exported to /metrics). */
  groupCommitStats(): { groups: number; batches: number } {
    return { groups: this.#groups, batches: this.#grouped };
  }

  /** Applies one batch (inside a transaction): what it did. */
  #applyBatch(batch: readonly WriteOp[]): Effects {
    // Text as PostgreSQL can hold it too (rows.ts storableText): one read-back on every engine.
    const ops = storableBatch(batch);
    const fx: Effects = { versions: new Map(), events: [], touched: new Set(), serverIds: new Set(), purged: new Map(), hostIds: new Set(), leaseEpochs: new Map(), tokenIds: new Set(), droppedDeliveries: [], serverWrites: [] };
    for (const o of ops) {
      if (o.op === "event.append") continue;
      this.#apply(o, fx);
      if (isServerWrite(o)) fx.serverWrites.push({ op: o, version: o.op === "server.delete" ? undefined : fx.versions.get(serverIdOf(o)) });
    }
    // Before the events, as PostgreSQL stamps them under the ledger lock.
    if (fx.serverIds.size > 0) this.tables.stampServerChanges(fx.serverIds, fx.purged);
    // Events last: they explain the changes above, and on PostgreSQL they are appended under the ledger lock.
    for (const o of ops) if (o.op === "event.append") this.#apply(o, fx);
    return fx;
  }

  /** Tells the listeners about a committed batch. */
  #announce(fx: Effects): void {
    if (fx.events.length === 0 && fx.serverIds.size === 0 && fx.hostIds.size === 0 && fx.tokenIds.size === 0) return;
    const committed: Committed = { events: fx.events, serverIds: fx.serverIds, hostIds: fx.hostIds, ...(fx.tokenIds.size > 0 ? { tokenIds: fx.tokenIds } : {}) };
    for (const l of this.#listeners) {
      try {
        l(committed);
      } catch (err) {
        // A listener's failure must not fail a write that is already committed.
        this.onListenerError(err);
      }
    }
  }

  onCommit(listener: CommitListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #apply(o: WriteOp, fx: Effects): void {
    const t = this.tables;
    const version = (id: string, v: number | undefined) => {
      if (v === undefined) throw new NotFoundError("server", id);
      fx.versions.set(id, v);
      fx.serverIds.add(id);
    };
    switch (o.op) {
      case "server.insert":
        t.insertServer(o.server);
        fx.versions.set(o.server.id, o.server.version ?? 1);
        fx.serverIds.add(o.server.id);
        return;
      case "server.spec":
        return version(o.id, t.updateServerSpec({ id: o.id, spec: o.spec, generation: o.generation, hostId: o.hostId, deletedAt: o.deletedAt, updatedAt: o.updatedAt }, o.expectVersion));
      case "server.status":
        return version(o.id, t.updateServerStatus(o.id, o.status, o.dataInitialized, o.expectVersion));
      case "server.lifecycle":
        return version(o.id, t.updateLifecycle(o.id, o.lifecycle, o.expectVersion));
      case "server.resetDataInitialized":
        return version(o.id, t.resetDataInitialized(o.id, o.expectVersion));
      case "server.check": {
        const s = t.getServer(o.id);
        if (!s) throw new NotFoundError("server", o.id);
        if (s.version !== o.expectVersion) throw new ConflictError(`server ${s.name} was changed meanwhile (version ${s.version}, expected ${o.expectVersion}): read it again and retry`);
        return;
      }
      case "server.delete": {
        const gone = t.deleteServerRecord(o.id);
        if (!gone) throw new NotFoundError("server", o.id);
        this.usage?.deleteSubject("server", o.id);
        fx.purged.set(o.id, gone);
        fx.serverIds.add(o.id);
        return;
      }
      case "command.insert":
        t.insertCommand({ command: o.command, hostId: o.hostId, createdAt: o.createdAt, deadlineAt: o.deadlineAt });
        return;
      case "command.sent":
        t.markCommandSent(o.id, o.at);
        return;
      case "command.finish":
        if (!t.finishCommand(o.id, o.state, o.at, o.reason, o.message)) throw new ConflictError(`command ${o.id} is no longer open`);
        return;
      case "container.upsert": {
        const sid = t.upsertContainer(o.hostId, o.container, o.at);
        if (sid) fx.touched.add(sid);
        fx.hostIds.add(o.hostId);
        return;
      }
      case "container.remove": {
        const sid = t.removeContainer(o.hostId, o.containerId);
        if (sid) fx.touched.add(sid);
        fx.hostIds.add(o.hostId);
        return;
      }
      case "container.removeServer":
        t.removeServerContainers(o.hostId, o.serverId, o.adoptedContainerId);
        fx.touched.add(o.serverId);
        fx.hostIds.add(o.hostId);
        return;
      case "host.inventory":
        for (const id of t.replaceHostInventory(o.hostId, o.containers, o.dataDirs, o.at, o.dataRootEntries, new Set(o.keep ?? []))) fx.touched.add(id);
        fx.hostIds.add(o.hostId);
        return;
      case "dataDir.upsert":
        t.upsertDataDir(o.dataDir);
        fx.touched.add(o.dataDir.serverId);
        return;
      case "dataRootEntry.remove":
        t.removeDataRootEntry(o.hostId, o.name);
        fx.hostIds.add(o.hostId);
        return;
      case "host.insert":
        t.insertHost(o);
        fx.hostIds.add(o.id);
        return;
      case "host.connected":
        t.setHostConnected(o.id, o.facts, o.at);
        fx.hostIds.add(o.id);
        return;
      case "host.heartbeat":
        t.recordHeartbeat(o.id, o.at, o.facts);
        fx.hostIds.add(o.id);
        return;
      case "host.offline":
        t.setHostOffline(o.id);
        fx.hostIds.add(o.id);
        return;
      case "host.offlineUnowned":
        for (const id of t.markUnownedHostsOffline(o.at)) fx.hostIds.add(id);
        return;
      case "host.schedule":
        t.setHostSchedule(o.id, o.schedule, o.expect);
        fx.hostIds.add(o.id);
        return;
      case "host.remove":
        if (!this.tokens.removeHost(o.id, o.at)) throw new NotFoundError("host", o.id, "list hosts with HostService.ListHosts");
        t.deleteHostRows(o.id);
        this.usage?.deleteSubject("host", o.id);
        fx.hostIds.add(o.id);
        return;
      case "enrollment.insert":
        t.insertEnrollmentToken(o);
        return;
      case "enrollment.use":
        if (!t.useEnrollmentToken(o.id, o.hostId, o.at)) throw new ConflictError("this enrollment token was already used; create a new one");
        return;
      case "alert.insert":
        this.alerts.insert(o.alert);
        return;
      case "alert.touch":
        this.alerts.touch(o.id, o.lastSeen, o.message, o.severity);
        return;
      case "alert.resolve":
        if (!this.alerts.resolve(o.id, o.at)) throw new ConflictError(`alert ${o.id} is no longer firing`);
        return;
      case "alert.acknowledge":
        this.alerts.acknowledge(o.id, o.by, o.at);
        return;
      case "alert.mute":
        this.alerts.mute(o.id, o.until);
        return;
      case "token.insert":
        this.tokens.insert(o.token, o.secretHash);
        fx.tokenIds.add(o.token.id);
        return;
      case "token.revoke":
        if (!this.tokens.revoke(o.id, o.at)) throw new NotFoundError("token", o.id);
        fx.tokenIds.add(o.id);
        return;
      case "token.touch":
        this.tokens.touch(o.id, o.at);
        return;
      case "project.ensure":
        this.tokens.ensureProject(o.name, o.at);
        return;
      case "lease.acquire":
        t.acquireLease(o.name, o.holder, o.ttlMs, o.at);
        return;
      case "lease.release":
        t.releaseLease(o.name, o.holder);
        return;
      case "host.take": {
        const name = hostLeaseName(o.hostId);
        fx.leaseEpochs.set(name, t.takeLease(name, o.holder, o.ttlMs, o.at));
        fx.hostIds.add(o.hostId);
        return;
      }
      case "host.renew":
        // Not a change anyone follows (a renewal every few seconds per host): no hostIds.
        if (!t.renewLeaseTerm(hostLeaseName(o.hostId), o.holder, o.epoch, o.ttlMs, o.at)) throw ownershipLost(t, o);
        return;
      case "host.release":
        t.endLeaseTerm(hostLeaseName(o.hostId), o.holder, o.epoch);
        fx.hostIds.add(o.hostId);
        return;
      case "host.checkOwner": {
        const cur = t.getLease(hostLeaseName(o.hostId));
        if (!cur || cur.holder !== o.holder || cur.epoch !== o.epoch || cur.expiresAt <= o.at) throw ownershipLost(t, o);
        return;
      }
      case "webhook.enqueue":
        fx.droppedDeliveries.push(...this.#cluster().enqueue(o.delivery, o.maxPending));
        return;
      case "webhook.retry":
        this.#cluster().retry(o.id, o.urlKey, o.attempt, o.nextAttemptAt, o.lastError);
        return;
      case "webhook.done":
        this.#cluster().done(o.id, o.urlKey, o.attempt);
        return;
      case "lease.pruneExpired":
        this.#cluster().pruneExpiredLeases(o.prefix, o.before);
        return;
      // Backups are not server writes: no version, no touched server.
      case "backupTarget.insert":
        this.#backups().insertTarget(o.target);
        return;
      case "backupTarget.delete":
        this.#backups().deleteTarget(o.id);
        return;
      case "backup.insert":
        this.#backups().insert(o.backup);
        return;
      case "backup.update":
        this.#backups().update(o.id, o.set, o.ifState);
        return;
      case "backup.delete":
        this.#backups().delete(o.id);
        return;
      case "schedule.insert":
        this.#schedules().insert(o.schedule);
        return;
      case "schedule.update":
        this.#schedules().update(o.schedule, o.expectVersion);
        return;
      case "schedule.delete":
        this.#schedules().delete(o.id);
        return;
      case "scheduleRun.insert":
        this.#schedules().insertRun(o.run, o.keep);
        return;
      case "scheduleRun.finish":
        this.#schedules().finishRun(o.id, o.finish);
        return;
      case "installLog.record":
        t.recordInstallLog(o.log);
        return;
      case "usage.write":
        this.#usage().write(o.buckets, o.pruneBefore, o.pruneLimit);
        return;
      case "template.insert":
        this.#templates().insert(o.template);
        return;
      case "template.update":
        this.#templates().update(o.template, o.expectVersion);
        return;
      case "template.delete":
        this.#templates().delete(o.id);
        return;
      case "savedQuery.insert":
        this.#savedQueries().insert(o.savedQuery);
        return;
      case "savedQuery.update":
        this.#savedQueries().update(o.savedQuery, o.expectVersion);
        return;
      case "savedQuery.delete":
        this.#savedQueries().delete(o.id);
        return;
      case "savedQuery.observe":
        this.#savedQueries().observe(o.id, o.at, o.rows, o.first);
        return;
      case "meta.set":
        t.setMeta(o.key, o.value);
        return;
      case "event.append": {
        fx.events.push(appendedEvent(t.appendEvent(o.event, o.at), o.at, o.event));
        return;
      }
      default: {
        const never: never = o;
        throw new Error(`unknown write operation ${JSON.stringify(never)}`);
      }
    }
  }

  // ---------------------------------------------------------------- reads

  async clusterId() { return this.tables.managerId(); }
  async getMeta(key: string) { return this.tables.getMeta(key); }
  async getLease(name: string) { return this.tables.getLease(name); }
  async liveHostOwners(at: number) { return this.tables.liveHostOwners(at); }
  async countLiveLeases(prefix: string, at: number) { return this.#cluster().countLiveLeases(prefix, at); }
  async dueWebhookDeliveries(at: number, limit: number) { return this.#cluster().due(at, limit); }
  async nextWebhookDeliveryAt() { return this.#cluster().nextAt(); }
  async countWebhookDeliveries() { return this.#cluster().count(); }
  async installLogs(serverId: string) { return this.tables.installLogs(serverId); }
  async usageBuckets(kind: UsageSubjectKind, subjectId: string, after: number, upTo: number) { return this.#usage().buckets(kind, subjectId, after, upTo); }
  async getTemplate(id: string) { return this.#templates().get(id); }
  async findTemplateByName(project: string, name: string) { return this.#templates().findByName(project, name); }
  async listTemplates(f?: TemplateFilter) { return this.#templates().list(f); }
  async getSchedule(id: string) { return this.#schedules().get(id); }
  async findScheduleByName(project: string, name: string) { return this.#schedules().findByName(project, name); }
  async listSchedules(f?: ScheduleFilter) { return this.#schedules().list(f); }
  async getScheduleRun(id: string) { return this.#schedules().getRun(id); }
  async listScheduleRuns(scheduleId: string, page: ScheduleRunPage) { return this.#schedules().listRuns(scheduleId, page); }
  async runningScheduleRuns(scheduleId?: string) { return this.#schedules().running(scheduleId); }
  async getSavedQuery(id: string) { return this.#savedQueries().get(id); }
  async findSavedQueryByName(project: string, name: string) { return this.#savedQueries().findByName(project, name); }
  async listSavedQueries(f?: SavedQueryFilter) { return this.#savedQueries().list(f); }
  async getBackupTarget(id: string) { return this.#backups().getTarget(id); }
  async findBackupTargetByName(name: string) { return this.#backups().findTargetByName(name); }
  async listBackupTargets() { return this.#backups().listTargets(); }
  async getBackup(id: string) { return this.#backups().get(id); }
  async listBackups(f?: BackupFilter) { return this.#backups().list(f); }
  async countBackupsOnTarget(targetId: string) { return this.#backups().countOnTarget(targetId); }
  async backupPolicyFacts(serverId?: string) { return this.#backups().policyFacts(serverId); }
  async probeWrite(value: string, lockWaitMs: number) {
    // The probe is a transaction of its own: the group open in this turn commits first.
    this.#commitGroup();
    this.tables.probeWrite(value, lockWaitMs);
  }
  async close() {
    // What was committed before the close is written, not lost.
    this.#commitGroup();
    this.#closed = true;
    // Joined first, so the main connection is the last one and its close checkpoints the WAL.
    await this.walCheckpointer?.stop();
    this.tables.close();
  }

  async getServer(id: string) {
    const s = this.#servers.get(id) ?? this.tables.getServer(id);
    return s && this.#keep(s);
  }

  /**
   * Keeps a record just read outside any write (getServer, serverChangesSince)
   * as the latest decoded one, most recently used last.
   */
  #keep(s: ServerRecord): ServerRecord {
    this.#servers.delete(s.id);
    this.#servers.set(s.id, FREEZE_CACHED ? deepFreeze(s) : s);
    if (this.#servers.size > SERVER_CACHE_MAX) this.#servers.delete(this.#servers.keys().next().value!);
    return s;
  }
  async serverHostId(id: string) { return this.tables.serverHostId(id); }
  async findServerByName(project: string, name: string) { return this.tables.findServerByName(project, name); }
  async listServers(f?: Parameters<Tables["listServers"]>[0]) { return this.tables.listServers(f, this.#decode); }
  async serverIdsOnHost(hostId: string) { return this.tables.serverIdsOnHost(hostId); }
  async serverChangeHead() { return this.tables.serverChangeHead(); }
  async serverChangesSince(after: number, limit: number) {
    // The change feed reads what was just written, and the reconciler reads the same records next.
    return this.tables.serverChangesSince(after, limit, this.#decode);
  }

  /** A row read outside any write as its record: the kept one when it is of the row's version, else decoded and kept. */
  readonly #decode = (r: ServerRow): ServerRecord => {
    const hit = this.#servers.get(r.id);
    return hit && hit.version === Number(r.version) ? hit : this.#keep(serverFromRow(r));
  };
  async allServerIds() { return this.tables.allServerIds(); }
  async countServersByHost() { return this.tables.countServersByHost(); }
  async allocationByHost() { return this.tables.allocationByHost(); }
  async serverPlacements(page?: IdPage) { return this.tables.serverPlacements(page); }
  async serverFacts(page?: IdPage) { return this.alerts.serverFacts(page); }
  async serverCounts() { return this.alerts.serverCounts(); }

  async getHost(id: string) { return this.tables.getHost(id); }
  async listHosts() { return this.tables.listHosts(); }
  async getEnrollmentToken(tokenHash: string) { return this.tables.getEnrollmentToken(tokenHash); }

  async containersForServer(hostId: string, serverId: string) { return this.tables.containersForServer(hostId, serverId); }
  async observedContainer(hostId: string, containerId: string) { return this.tables.observedContainer(hostId, containerId); }
  async listOrphanCandidates(managerId: string, includeUnlabelled: boolean, range?: HostRange) { return this.tables.listOrphanCandidates(managerId, includeUnlabelled, range); }
  async observedCounts(hostId: string) { return this.tables.observedCounts(hostId); }
  async getDataDir(hostId: string, serverId: string) { return this.tables.getDataDir(hostId, serverId); }
  async listDataRootEntries(hosts?: string | HostRange) { return this.tables.listDataRootEntries(hosts); }

  async getCommand(id: string) { return this.tables.getCommand(id); }
  async openCommandForServer(serverId: string) { return this.tables.openCommandForServer(serverId); }
  async lastFinishedCommand(serverId: string) { return this.tables.lastFinishedCommand(serverId); }
  async openCommandsForHost(hostId: string) { return this.tables.openCommandsForHost(hostId); }
  async serverIdsWithOpenCommands() { return this.tables.serverIdsWithOpenCommands(); }

  async listNewestFirst(q: Parameters<EventTables["listNewestFirst"]>[0]) { return this.events.listNewestFirst(q); }
  async readForward(q: Parameters<EventTables["readForward"]>[0]) { return this.events.readForward(q); }
  async lastEventId() { return this.events.lastId(); }
  async firstEventId() { return this.events.firstId(); }
  async countEvents(q: Parameters<EventTables["count"]>[0]) { return this.events.count(q); }
  async eventIdSpan(q: Parameters<EventTables["idSpan"]>[0]) { return this.events.idSpan(q); }
  async readEventWindow(q: Parameters<EventTables["readWindow"]>[0]) { return this.events.readWindow(q); }

  async getAlert(id: string) { return this.alerts.get(id); }
  async listFiringAlerts() { return this.alerts.listFiring(); }
  async listAlerts(f: Parameters<AlertTables["list"]>[0]) { return this.alerts.list(f); }
  async latestMute(rule: string, subject: string) { return this.alerts.latestMute(rule, subject); }

  async countTokens() { return this.tokens.count(); }
  async findTokenBySecretHash(secretHash: string) { return this.tokens.findBySecretHash(secretHash); }
  async getToken(id: string) { return this.tokens.get(id); }
  async listTokens(f?: { project?: string }) { return this.tokens.list(f); }

  async pruneEventsOlderThan(cutoff: number, limit: number) { return this.events.pruneOlderThan(cutoff, limit); }
  async pruneEventsBeyondCount(keep: number, limit: number) { return this.events.pruneBeyondCount(keep, limit); }
  async pruneFinishedCommands(before: number, limit: number) { return this.tables.pruneFinishedCommands(before, limit); }
  async pruneEnrollmentTokens(before: number, limit: number) { return this.tables.pruneEnrollmentTokens(before, limit); }
  async pruneResolvedAlerts(cutoff: number, limit: number) { return this.alerts.pruneResolved(cutoff, limit); }
}

/** store.ts host.renew / host.checkOwner refused: says who holds the host now. */
function ownershipLost(t: Tables, o: { hostId: string; holder: string; epoch: number }): HostOwnershipLostError {
  const cur = t.getLease(hostLeaseName(o.hostId));
  return new HostOwnershipLostError(o.hostId, o.holder, o.epoch, cur && { holder: cur.holder, epoch: cur.epoch, expiresAt: cur.expiresAt });
}
