/**
 * The store contract (store.ts) on PostgreSQL: the store of several managers.
 *
 * One `pg.Pool` per store (pool.ts). Every read is one query on the pool; every
 * batch is ONE transaction on one pooled client: BEGIN, its operations in
 * order (pg-writes.ts), then its events through appendEvents (event-log.ts,
 * under the ledger lock, so ids are handed out in commit order), COMMIT. Any
 * error rolls the whole batch back and rejects with the typed error SQLite
 * raises for the same precondition. The behaviour of each read and write is
 * SqliteStore's (sqlite/); the SQL differs only where the dialects do
 * ($n parameters, `= ANY($n)` for lists, jsonb for SQLite's json_extract).
 */
import { setTimeout as sleep } from "node:timers/promises";
import type pg from "pg";
import { UnavailableError } from "../../errors.js";
import { newId } from "../../ids.js";
import { savedQueryFromRow, type SavedQueryFilter, type SavedQueryRow } from "../../query/saved-records.js";
import { scheduleFromRow, scheduleRunFromRow, type ScheduleFilter, type ScheduleRow, type ScheduleRunPage, type ScheduleRunRow } from "../../schedules/records.js";
import type { BackupFilter, EventQuery, EventRecord, EventScope, ServerFacts, ServerFilter, TemplateFilter } from "../../domain/records.js";
import {
  alertFromRow,
  appendedEvent,
  commandFromRow,
  eventFromRow,
  hostFromRow,
  leaseFromRow,
  observedFromRow,
  serverChangesFromRows,
  serverFromRow,
  SERVER_CHANGES_HORIZON,
  SERVER_CHANGE_COUNTER,
  storableBatch,
  storableText,
  tokenFromRow,
  type AlertRow,
  type CommandRow,
  type EventRow,
  type HostRow,
  type LeaseRow,
  type ObservedRow,
  type ServerRow,
  type TokenRow,
  type TombstoneRow,
  webhookDeliveryFromRow,
  type WebhookDeliveryRow,
  backupFromRow,
  backupTargetFromRow,
  type BackupRow,
  type BackupTargetRow,
  placementOfRow,
  policyFactsFromRow,
  type PolicyFactsRow,
  phaseColumnName,
  USAGE_COLUMNS,
  usageBucketFromRow,
  usageBucketStarts,
  type UsageBucketRow,
  templateFromRow,
  installLogFromRow,
  type InstallLogRow,
  type TemplateRow,
} from "../rows.js";
import type { SecretBox } from "../secrets.js";
import { SERVER_TOMBSTONES_KEPT, type EventCountQuery, type EventCountRow, type Committed, type CommitResult, type HostRange, type IdPage, type OpenStoreOptions, type ServerPlacement, type Store, type StoreMeta, type UsageSubjectKind, type WriteOp } from "../store.js";
import { pageLimit } from "../pages.js";
import { describeStoreUrl } from "../store-url.js";
import type { PostgresStoreUrl } from "./connection.js";
import { appendEvents, stampServerChanges } from "./event-log.js";
import { bucketWidth, column } from "../sqlite/event-tables.js";
import { COMMIT_CHANNEL, CommitListener, decodeCommitNotice, encodeCommitNotice, listenClient, type CommitNotice } from "./pg-listen.js";
import { migratePostgres } from "./migrate.js";
import { OpenCommandTaken, PgBatch, newEffects, setMeta, type Effects } from "./pg-writes.js";
import { createStorePool, isConnectionError, isTransactionAborted, pgErrorOf, storeError, type StorePool } from "./pool.js";

type CommitSubscriber = (c: Committed) => void;
type EventAppend = Extract<WriteOp, { op: "event.append" }>;

/**
 * Opens the PostgreSQL store at `url`: connects (an unreachable server or a
 * refused login fails with UnavailableError naming the URL, never its
 * password), brings the schema up to date (migrate.ts; several managers may
 * start at once), lets `opts.secrets` choose the key from the meta table, and
 * returns the store. On any failure the pool is closed before the error
 * passes through.
 */
export async function openPostgresStore(url: PostgresStoreUrl, opts: OpenStoreOptions): Promise<Store> {
  const description = describeStoreUrl(url);
  const pool = createStorePool(url);
  try {
    let client: pg.PoolClient;
    try {
      client = await pool.connect();
    } catch (err) {
      throw cannotOpen(description, err);
    }
    try {
      await migratePostgres(client);
    } finally {
      client.release();
    }
    let secrets: SecretBox | undefined;
    if (opts.secrets) {
      const meta: StoreMeta = {
        get: async (k) => getMeta(pool, k),
        set: async (k, v) => setMeta(pool, k, v),
      };
      secrets = await opts.secrets(meta);
    }
    const store = new PostgresStore(description, pool, secrets, opts.onListenerError);
    // Last: a store that is returned hears the other managers from its first commit on.
    await store.listen(url, opts.onWarning).catch((err: unknown) => {
      throw cannotOpen(description, err);
    });
    return store;
  } catch (err) {
    await pool.end().catch(() => {});
    throw err;
  }
}

/** Why the store could not be opened, naming the server (without its password) and what to check. */
function cannotOpen(description: string, err: unknown): Error {
  const e = err as Error & { code?: string };
  const code = pgErrorOf(err)?.code;
  const hint =
    code === "28P01" || code === "28000"
      ? "check the user and password in --store (or PGPASSWORD / ~/.pgpass)"
      : code === "3D000"
        ? "create the database first (createdb), or name an existing one in --store"
        : "check that PostgreSQL is running and reachable at that host and port, then retry";
  const u = new UnavailableError(`cannot open the PostgreSQL store ${description}: ${e.code && !e.message.includes(e.code) ? `${e.code} ` : ""}${e.message}; ${hint}`);
  u.cause = err;
  return u;
}

async function getMeta(db: StorePool | pg.ClientBase, key: string): Promise<string | undefined> {
  const { rows } = await db.query<{ value: string }>("SELECT value FROM meta WHERE key = $1", [key]);
  return rows[0]?.value;
}

/** A query's parameters, numbered as they are added: `p(value)` gives its `$n`. */
function params(): { args: unknown[]; p: (v: unknown) => string } {
  const args: unknown[] = [];
  return { args, p: (v) => `$${args.push(v)}` };
}

/** The smallest string greater than every string starting with `prefix` (as EventTables). */
function prefixEnd(prefix: string): string {
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}

/** LIMIT's argument as SQLite's tables write it (a whole number), never negative. */
function limitOf(n: number): number {
  return Math.max(0, Math.floor(n));
}

export class PostgresStore implements Store {
  readonly engine = "postgres" as const;
  readonly #listeners = new Set<CommitSubscriber>();
  /** Names this store's notices, so it can tell its own commits from other managers' (pg-listen.ts). */
  readonly instanceId = newId("store");
  #feed: CommitListener | undefined;
  /** The remote batches being read and delivered, one after another (commit order). */
  #remote: Promise<void> = Promise.resolve();
  #remotePending = 0;
  #resyncQueued = false;
  #warn: (message: string) => void = () => {};
  #closing: Promise<void> | undefined;
  #clusterId: string | undefined;

  constructor(
    readonly description: string,
    private readonly pool: StorePool,
    private readonly secrets: SecretBox | undefined,
    private readonly onListenerError: (err: unknown) => void = () => {},
  ) {}

  // ---------------------------------------------------------------- writes

  /**
   * Runs the batch as one transaction. A deadlock (40P01) or serialization
   * failure (40001) is the database aborting the transaction, not a failed
   * precondition: the batch is data and checks its preconditions inside, so
   * it runs again (up to COMMIT_ATTEMPTS times, after a short jittered pause
   * so the two do not collide again) and only then rejects with ConflictError.
   */
  async commit(batch: readonly WriteOp[]): Promise<CommitResult> {
    // NUL cannot be stored in text (rows.ts storableText).
    const ops = storableBatch(batch);
    let fx: Effects;
    for (let attempt = 1; ; attempt++) {
      try {
        fx = await this.#attempt(ops);
        break;
      } catch (err) {
        if (isTransactionAborted(err) && attempt < COMMIT_ATTEMPTS) {
          await sleep(Math.random() * RETRY_PAUSE_MS * 2 ** attempt);
          continue;
        }
        if (err instanceof OpenCommandTaken) throw err.toConflict(await this.openCommandForServer(err.serverId).then((c) => c?.id, () => undefined));
        throw storeError(err);
      }
    }
    if (wroteSomething(fx)) this.#deliver({ events: fx.events, serverIds: fx.serverIds, hostIds: fx.hostIds, ...(fx.tokenIds.size > 0 ? { tokenIds: fx.tokenIds } : {}) });
    return { versions: fx.versions, events: fx.events, touchedServers: fx.touched, hostIds: fx.hostIds, leaseEpochs: fx.leaseEpochs, ...(fx.droppedDeliveries.length > 0 ? { droppedDeliveries: fx.droppedDeliveries } : {}) };
  }

  /** One run of the batch's transaction; throws what failed it (as pg or PgBatch threw it), rolled back. */
  async #attempt(ops: readonly WriteOp[]): Promise<Effects> {
    const fx = newEffects();
    await this.#transaction("BEGIN", async (client) => {
      const batch = new PgBatch(client, this.secrets, fx);
      await batch.lockInOrder(ops);
      for (const o of ops) if (o.op !== "event.append") await batch.apply(o);
      // The servers' change positions, then the events, under the ledger lock (held until COMMIT).
      if (fx.serverIds.size > 0) await stampServerChanges(client, fx.serverIds, fx.purged, SERVER_TOMBSTONES_KEPT);
      // Events last, under the ledger lock (held until COMMIT): ids in commit order.
      await this.#appendEvents(client, ops.filter((o): o is EventAppend => o.op === "event.append"), fx);
      // The notice inside the transaction: sent only if it commits, at its COMMIT, in commit order.
      // One simple-protocol query with the COMMIT (a literal, since parameters would need a round
      // trip of their own): the feed costs a writer no extra round trip. If the NOTIFY fails,
      // the COMMIT is not run and the batch rolls back.
      const notify = wroteSomething(fx) ? `SELECT pg_notify('${COMMIT_CHANNEL}', ${client.escapeLiteral(this.#notice(fx))}); ` : "";
      await client.query(`${notify}COMMIT`);
    });
    return fx;
  }

  /**
   * Runs `fn` on one pooled connection after `begin` (BEGIN with its options);
   * `fn` COMMITs. If anything throws, the transaction is rolled back and the
   * error passes through as thrown; a connection that failed mid-transaction
   * is discarded rather than given back to the pool.
   */
  async #transaction<T>(begin: string, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    let broken = false;
    try {
      await client.query(begin);
      return await fn(client);
    } catch (err) {
      broken = isConnectionError(err);
      if (!broken) await client.query("ROLLBACK").catch(() => (broken = true));
      throw err;
    } finally {
      client.release(broken);
    }
  }

  /** Appends the batch's events in order; a run of events with one `at` is one statement. */
  async #appendEvents(client: pg.ClientBase, appends: readonly EventAppend[], fx: Effects): Promise<void> {
    for (let i = 0; i < appends.length; ) {
      const at = appends[i]!.at;
      let j = i;
      while (j < appends.length && appends[j]!.at === at) j++;
      const run = appends.slice(i, j);
      const ids = await appendEvents(client, run.map((o) => o.event), at);
      run.forEach((o, k) => fx.events.push(appendedEvent(ids[k]!, at, o.event)));
      i = j;
    }
  }

  onCommit(listener: CommitSubscriber): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #deliver(committed: Committed): void {
    for (const l of this.#listeners) {
      try {
        l(committed);
      } catch (err) {
        // A listener's failure must not fail a write that is already committed.
        this.onListenerError(err);
      }
    }
  }

  /** What the batch tells the other managers (pg-listen.ts); ids of one transaction's events are consecutive. */
  #notice(fx: Effects): string {
    const first = fx.events[0]?.id;
    const last = fx.events[fx.events.length - 1]?.id;
    return encodeCommitNotice({
      from: this.instanceId,
      ...(first !== undefined && last !== undefined ? { events: { first, last } } : {}),
      serverIds: [...fx.serverIds],
      hostIds: [...fx.hostIds],
      tokenIds: [...fx.tokenIds],
    });
  }

  /**
   * Starts hearing the other managers' commits (pg-listen.ts): called once by
   * openPostgresStore; rejects when the LISTEN connection cannot be made.
   */
  async listen(url: PostgresStoreUrl, onWarning?: (message: string) => void): Promise<void> {
    if (onWarning) this.#warn = onWarning;
    const feed = new CommitListener({
      client: () => listenClient(url, this.instanceId),
      onNotice: (payload) => this.#heard(decodeCommitNotice(payload)),
      // Whatever was committed while the connection was down was never heard.
      onReconnected: () => {
        onWarning?.("listening for other managers' commits again; resyncing what may have been missed");
        this.#heard({ from: "", serverIds: [], hostIds: [], resync: true });
      },
      onTrouble: (message, err) => onWarning?.(`${message}${err instanceof Error ? `: ${err.message}` : ""}`),
    });
    await feed.start();
    this.#feed = feed;
  }

  /** The server process holding this store's LISTEN (for tests and pg_stat_activity), while connected. */
  get listenerPid(): number | undefined {
    return this.#feed?.pid;
  }

  /**
   * Queues a remote notice for delivery after the ones before it. The queue is
   * bounded: past REMOTE_PENDING_MAX notices waiting (reads far slower than the
   * other managers' commits), further ones are dropped for a single resync.
   */
  #heard(n: CommitNotice): void {
    if (n.from === this.instanceId || this.#closing) return; // its own: delivered locally at COMMIT
    const overflow = this.#remotePending >= REMOTE_PENDING_MAX;
    if (overflow) {
      if (this.#resyncQueued) return;
      this.#resyncQueued = true;
      this.#warn(`more than ${REMOTE_PENDING_MAX} of other managers' commits wait to be read; dropping them for one resync`);
      n = { from: "", serverIds: [], hostIds: [], resync: true };
    }
    this.#remotePending++;
    this.#remote = this.#remote
      .then(async () => {
        const c = await this.#remoteCommitted(n);
        if (overflow) this.#resyncQueued = false;
        if (!this.#closing) this.#deliver(c);
      })
      .catch((err: unknown) => this.onListenerError(err))
      .finally(() => this.#remotePending--);
  }

  /** The notice as a Committed, its events read back (a failed read turns it into a resync). */
  async #remoteCommitted(n: CommitNotice): Promise<Committed> {
    const committed = { serverIds: new Set(n.serverIds), hostIds: new Set(n.hostIds), ...(n.tokenIds?.length ? { tokenIds: new Set(n.tokenIds) } : {}), remote: true as const };
    if (!n.events) return { ...committed, events: [], ...(n.resync ? { resync: true } : {}) };
    const { first, last } = n.events;
    try {
      const events = await this.readForward({ project: null, afterId: first - 1, upToId: last, limit: last - first + 1 });
      return { ...committed, events, ...(n.resync ? { resync: true } : {}) };
    } catch (err) {
      // The database is unreachable now: listeners hear that they missed something and read again later.
      this.#warn(`could not read events ${first}..${last} another manager committed (${err instanceof Error ? err.message : String(err)}); resyncing instead`);
      return { ...committed, events: [], resync: true };
    }
  }

  /**
   * Sets meta `write_probe` in a transaction of its own, waiting at most
   * `lockWaitMs` for a lock (lock_timeout) and a little longer for the write
   * itself (statement_timeout: a database that takes seconds for one row is
   * not taking writes for health's purposes). Throws what the database or
   * the driver said, SQLSTATE first (55P03 lock timeout, 57014 cancelled,
   * ECONNREFUSED, …), as the SQLite probe throws SQLITE_BUSY.
   */
  async probeWrite(value: string, lockWaitMs: number): Promise<void> {
    // 0 would mean "no timeout" to PostgreSQL; SQLite's 0 means "do not wait".
    const lockMs = Math.max(1, Math.floor(lockWaitMs));
    await this.#transaction("BEGIN", async (client) => {
      await client.query(`SET LOCAL lock_timeout = ${lockMs}`);
      await client.query(`SET LOCAL statement_timeout = ${lockMs + PROBE_WRITE_ALLOWANCE_MS}`);
      await setMeta(client, "write_probe", value);
      await client.query("COMMIT");
    });
  }

  /** Ends the pool; later calls resolve with the first. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#feed?.close();
      // Remote batches being read finish (their reads need the pool) before it ends.
      await this.#remote;
      await this.pool.end();
    })();
    return this.#closing;
  }

  // ---------------------------------------------------------------- reads

  async #rows<R extends pg.QueryResultRow>(sql: string, args: unknown[] = []): Promise<R[]> {
    try {
      return (await this.pool.query<R>(sql, storableArgs(args))).rows;
    } catch (err) {
      throw storeError(err);
    }
  }

  async #count(sql: string, args: unknown[]): Promise<number> {
    try {
      return (await this.pool.query(sql, args)).rowCount ?? 0;
    } catch (err) {
      throw storeError(err);
    }
  }

  /**
   * Made once per database, as SqliteTables.managerId: the first manager's
   * INSERT wins (ON CONFLICT DO NOTHING) and every manager reads the winner,
   * so two managers opening one database at once agree. Never changes, so
   * it is kept after the first read.
   */
  async clusterId(): Promise<string> {
    if (this.#clusterId) return this.#clusterId;
    let id = await this.getMeta("manager_id");
    if (id === undefined) {
      await this.#rows("INSERT INTO meta (key, value) VALUES ('manager_id', $1) ON CONFLICT (key) DO NOTHING", [newId("mgr")]);
      id = await this.getMeta("manager_id");
      if (id === undefined) throw new Error("meta manager_id is missing right after it was written");
    }
    this.#clusterId = id;
    return id;
  }

  async getMeta(key: string): Promise<string | undefined> {
    try {
      return await getMeta(this.pool, key);
    } catch (err) {
      throw storeError(err);
    }
  }

  async liveHostOwners(at: number) {
    const rows = await this.#rows<{ id: string; holder: string }>(
      "SELECT h.id, l.holder FROM hosts h JOIN leases l ON l.name = 'host:' || h.id WHERE h.online = 1 AND h.removed_at IS NULL AND l.expires_at > $1",
      [at],
    );
    return new Map(rows.map((r) => [r.id, r.holder]));
  }

  async getLease(name: string) {
    const [r] = await this.#rows<LeaseRow>("SELECT name, holder, epoch, expires_at FROM leases WHERE name = $1", [name]);
    return r && leaseFromRow(r);
  }

  // servers

  async getServer(id: string) {
    const [r] = await this.#rows<ServerRow>("SELECT * FROM servers WHERE id = $1", [id]);
    return r && serverFromRow(r);
  }

  async serverHostId(id: string) {
    const [r] = await this.#rows<{ host_id: string }>("SELECT host_id FROM servers WHERE id = $1", [id]);
    return r?.host_id;
  }

  async findServerByName(project: string, name: string) {
    const [r] = await this.#rows<ServerRow>("SELECT * FROM servers WHERE project = $1 AND name = $2", [project, name]);
    return r && serverFromRow(r);
  }

  async listServers(f: ServerFilter = {}) {
    const { sql, args } = listServersQuery(f);
    return (await this.#rows<ServerRow>(sql, args)).map(serverFromRow);
  }

  async serverChangeHead() {
    const [r] = await this.#rows<{ m: number | null }>(SERVER_CHANGE_HEAD);
    return Number(r?.m ?? 0);
  }

  async serverChangesSince(after: number, limit: number) {
    const [h] = await this.#rows<{ value: string }>("SELECT value FROM meta WHERE key = $1", [SERVER_CHANGES_HORIZON]);
    if (after < Number(h?.value ?? 0)) return undefined;
    const n = limitOf(Math.max(1, limit));
    const live = await this.#rows<ServerRow>(`SELECT * FROM servers WHERE change_seq > $1 ORDER BY change_seq LIMIT ${n}`, [after]);
    const gone = await this.#rows<TombstoneRow>(`SELECT * FROM server_tombstones WHERE change_seq > $1 ORDER BY change_seq LIMIT ${n}`, [after]);
    return serverChangesFromRows(live, gone, n);
  }

  async serverIdsOnHost(hostId: string) {
    return (await this.#rows<{ id: string }>("SELECT id FROM servers WHERE host_id = $1", [hostId])).map((r) => r.id);
  }

  async allServerIds() {
    return (await this.#rows<{ id: string }>("SELECT id FROM servers")).map((r) => r.id);
  }

  async allocationByHost() {
    // spec_json is protobuf JSON: cpus a number, memoryBytes (uint64) a string; absent when unset.
    const rows = await this.#rows<{ host_id: string; n: number; cpus: number; memory: number }>(
      `SELECT host_id, COUNT(*)::int AS n,
              COALESCE(SUM((spec_json::jsonb -> 'resources' ->> 'cpus')::float8), 0)::float8 AS cpus,
              COALESCE(SUM((spec_json::jsonb -> 'resources' ->> 'memoryBytes')::float8), 0)::float8 AS memory
         FROM servers WHERE deleted_at IS NULL GROUP BY host_id`,
    );
    return new Map(rows.map((r) => [r.host_id, { servers: Number(r.n), cpus: Number(r.cpus), memoryBytes: Number(r.memory) }]));
  }

  async countServersByHost() {
    const rows = await this.#rows<{ host_id: string; n: number }>("SELECT host_id, COUNT(*) AS n FROM servers WHERE deleted_at IS NULL GROUP BY host_id");
    return new Map(rows.map((r) => [r.host_id, r.n]));
  }

  async serverPlacements(page?: IdPage): Promise<ServerPlacement[]> {
    const rows = await this.#rows<{ id: string; project: string; name: string; host_id: string; created_at: number; spec_json: string; lifecycle_json: string }>(
      `SELECT id, project, name, host_id, created_at, spec_json, lifecycle_json FROM servers${page ? ` WHERE id > $1 ORDER BY id LIMIT ${pageLimit(page)}` : ""}`,
      page ? [page.after] : [],
    );
    return rows.map(placementOfRow);
  }

  /**
   * As AlertTables.serverFacts. `->` keeps desiredState's JSON type (a name or a
   * number, as json_extract does); purging is true unless `purge` is absent or
   * JSON null (json_extract gives SQL NULL for both).
   */
  async serverCounts() {
    return this.#rows<{ project: string; phase: string; count: number }>(
      "SELECT project, phase, COUNT(*)::int AS count FROM servers WHERE deleted_at IS NULL GROUP BY project, phase ORDER BY project, phase",
    );
  }

  async serverFacts(page?: IdPage): Promise<ServerFacts[]> {
    const rows = await this.#rows<{
      id: string;
      name: string;
      project: string;
      host_id: string;
      generation: number;
      phase: string;
      desired_state: string | number | null;
      reason: string | null;
      observed_generation: string | null;
      recent_crashes: string | null;
      last_known_phase: string | number | null;
      last_known_reason: string | null;
      purging: boolean;
      disk_quota: string | null;
      data_size: string | null;
    }>(
      `SELECT id, name, project, host_id, generation, phase,
         spec_json::jsonb -> 'desiredState' AS desired_state,
         status_json::jsonb ->> 'reason' AS reason,
         status_json::jsonb ->> 'observedGeneration' AS observed_generation,
         status_json::jsonb -> 'crash' ->> 'recent' AS recent_crashes,
         status_json::jsonb -> 'lastKnownPhase' AS last_known_phase,
         status_json::jsonb ->> 'lastKnownReason' AS last_known_reason,
         COALESCE(jsonb_typeof(lifecycle_json::jsonb -> 'purge'), 'null') <> 'null' AS purging,
         spec_json::jsonb -> 'resources' ->> 'diskQuotaBytes' AS disk_quota,
         status_json::jsonb ->> 'dataSizeBytes' AS data_size
       FROM servers WHERE deleted_at IS NULL${page ? ` AND id > $1 ORDER BY id LIMIT ${pageLimit(page)}` : ""}`,
      page ? [page.after] : [],
    );
    return rows.map((r) => ({
      id: r.id,
      name: r.name,
      project: r.project,
      hostId: r.host_id,
      generation: r.generation,
      phase: r.phase,
      desiredState: r.desired_state ?? undefined,
      reason: r.reason ?? "",
      observedGeneration: Number(r.observed_generation ?? 0),
      purging: r.purging,
      recentCrashes: Number(r.recent_crashes ?? 0),
      lastKnownPhase: phaseColumnName(r.last_known_phase),
      lastKnownReason: r.last_known_reason ?? "",
      diskQuotaBytes: Number(r.disk_quota ?? 0),
      dataSizeBytes: Number(r.data_size ?? 0),
    }));
  }

  // hosts

  async getHost(id: string) {
    const [r] = await this.#rows<HostRow>("SELECT * FROM hosts WHERE id = $1", [id]);
    return r && hostFromRow(r);
  }

  async listHosts() {
    return (await this.#rows<HostRow>("SELECT * FROM hosts WHERE removed_at IS NULL ORDER BY created_at, id")).map(hostFromRow);
  }

  async getEnrollmentToken(tokenHash: string) {
    const [r] = await this.#rows<{ id: string; expires_at: number; used_at: number | null }>("SELECT id, expires_at, used_at FROM enrollment_tokens WHERE token_hash = $1", [tokenHash]);
    return r && { id: r.id, expiresAt: r.expires_at, usedAt: r.used_at };
  }

  // observations

  async containersForServer(hostId: string, serverId: string) {
    return (await this.#rows<ObservedRow>("SELECT * FROM observed_containers WHERE host_id = $1 AND server_id = $2 ORDER BY observed_at", [hostId, serverId])).map(observedFromRow);
  }

  async observedContainer(hostId: string, containerId: string) {
    const [r] = await this.#rows<ObservedRow>("SELECT * FROM observed_containers WHERE host_id = $1 AND container_id = $2", [hostId, containerId]);
    return r && observedFromRow(r);
  }

  async listOrphanCandidates(managerId: string, includeUnlabelled: boolean, range: HostRange = { from: "" }) {
    const rows = await this.#rows<ObservedRow>(
      `SELECT * FROM observed_containers o
       WHERE o.host_id >= $3 AND ($4::text IS NULL OR o.host_id < $4)
         AND NOT (o.manager_id = $1 AND EXISTS (SELECT 1 FROM servers s WHERE s.id = o.server_id AND s.host_id = o.host_id))
         AND ($2::boolean OR o.server_id IS NOT NULL OR o.manager_id IS NOT NULL)
       ORDER BY o.host_id, o.container_id`,
      [managerId, includeUnlabelled, range.from, range.to ?? null],
    );
    return rows.map(observedFromRow);
  }

  async observedCounts(hostId: string) {
    const [r] = await this.#rows<{ total: number; other: number }>(
      `SELECT COUNT(*) AS total,
              COALESCE(SUM(CASE WHEN o.server_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM servers s WHERE s.id = o.server_id AND s.host_id = o.host_id) THEN 1 ELSE 0 END), 0)::int8 AS other
       FROM observed_containers o WHERE o.host_id = $1`,
      [hostId],
    );
    return { total: r?.total ?? 0, other: r?.other ?? 0 };
  }

  async getDataDir(hostId: string, serverId: string) {
    const [r] = await this.#rows<{ host_id: string; server_id: string; present: number; size_bytes: number; checked_at: number }>(
      "SELECT * FROM data_dirs WHERE host_id = $1 AND server_id = $2",
      [hostId, serverId],
    );
    return r && { hostId: r.host_id, serverId: r.server_id, present: r.present === 1, sizeBytes: r.size_bytes, checkedAt: r.checked_at };
  }

  async listDataRootEntries(hosts?: string | HostRange) {
    const range = typeof hosts === "string" ? undefined : (hosts ?? { from: "" });
    const rows = await (typeof hosts === "string"
      ? this.#rows<{ host_id: string; name: string; size_bytes: number }>("SELECT host_id, name, size_bytes FROM data_root_entries WHERE host_id = $1 ORDER BY name", [hosts])
      : this.#rows<{ host_id: string; name: string; size_bytes: number }>(
          "SELECT host_id, name, size_bytes FROM data_root_entries WHERE host_id >= $1 AND ($2::text IS NULL OR host_id < $2) ORDER BY host_id, name",
          [range!.from, range!.to ?? null],
        ));
    return rows.map((r) => ({ hostId: r.host_id, name: r.name, sizeBytes: r.size_bytes }));
  }

  // commands

  async getCommand(id: string) {
    const [r] = await this.#rows<CommandRow>("SELECT * FROM commands WHERE id = $1", [id]);
    return r && commandFromRow(r);
  }

  async openCommandForServer(serverId: string) {
    const [r] = await this.#rows<CommandRow>("SELECT * FROM commands WHERE server_id = $1 AND state IN ('pending', 'sent') ORDER BY created_at DESC LIMIT 1", [serverId]);
    return r && commandFromRow(r);
  }

  async lastFinishedCommand(serverId: string) {
    const [r] = await this.#rows<CommandRow>(
      "SELECT * FROM commands WHERE server_id = $1 AND state NOT IN ('pending', 'sent') ORDER BY finished_at DESC NULLS LAST, created_at DESC LIMIT 1",
      [serverId],
    );
    return r && commandFromRow(r);
  }

  async openCommandsForHost(hostId: string) {
    return (await this.#rows<CommandRow>("SELECT * FROM commands WHERE host_id = $1 AND state IN ('pending', 'sent') ORDER BY created_at", [hostId])).map(commandFromRow);
  }

  async serverIdsWithOpenCommands() {
    return new Set((await this.#rows<{ server_id: string }>("SELECT DISTINCT server_id FROM commands WHERE state IN ('pending', 'sent')")).map((r) => r.server_id));
  }

  // events

  /** As EventTables.filter: project scoping, server, host, type prefix (a range), actor prefix, time bounds. */
  #eventFilter(q: EventQuery, p: (v: unknown) => string): string[] {
    const where: string[] = [];
    if (q.project !== null) where.push(`project = ${p(q.project)}`);
    if (q.serverId) where.push(`server_id = ${p(q.serverId)}`);
    if (q.hostId) where.push(`host_id = ${p(q.hostId)}`);
    if (q.typePrefix) where.push(`type >= ${p(q.typePrefix)} AND type < ${p(prefixEnd(q.typePrefix))}`);
    if (q.actor) where.push(`(actor = ${p(q.actor)} OR substr(actor, 1, ${p(q.actor.length + 1)}::int) = ${p(`${q.actor}:`)})`);
    if (q.since !== undefined) where.push(`time >= ${p(q.since)}`);
    if (q.until !== undefined) where.push(`time < ${p(q.until)}`);
    return where;
  }

  async listNewestFirst(q: EventQuery & { beforeId?: number; limit: number }): Promise<EventRecord[]> {
    const { args, p } = params();
    const where = this.#eventFilter(q, p);
    if (q.beforeId !== undefined) where.push(`id < ${p(q.beforeId)}`);
    const sql = `SELECT * FROM events${where.length ? ` WHERE ${where.join(" AND ")}` : ""} ORDER BY id DESC LIMIT ${limitOf(q.limit)}`;
    return (await this.#rows<EventRow>(sql, args)).map(eventFromRow);
  }

  async readForward(q: EventQuery & { afterId: number; upToId: number; limit: number }): Promise<EventRecord[]> {
    const { args, p } = params();
    const where = this.#eventFilter(q, p);
    where.push(`id > ${p(q.afterId)}`, `id <= ${p(q.upToId)}`);
    const sql = `SELECT * FROM events WHERE ${where.join(" AND ")} ORDER BY id LIMIT ${limitOf(q.limit)}`;
    return (await this.#rows<EventRow>(sql, args)).map(eventFromRow);
  }

  async countEvents(q: EventCountQuery): Promise<EventCountRow[]> {
    const { args, p } = params();
    const where = this.#eventFilter({ project: q.project, since: q.since, until: q.until }, p);
    for (const c of q.where) {
      const col = column(c.column);
      where.push(c.op === "eq" ? `${col} = ${p(c.value)}` : `${col} >= ${p(c.value)} AND ${col} < ${p(prefixEnd(c.value))}`);
    }
    const bucket = q.bucketMs !== undefined ? `time / ${bucketWidth(q.bucketMs)}` : "0";
    const keys = q.groupBy.map((c, i) => `${column(c)} AS k${i}`);
    const groups = q.groupBy.map((_, i) => String(i + 2));
    const sql = `SELECT ${bucket} AS bucket, ${[...keys, "COUNT(*) AS n"].join(", ")} FROM events WHERE ${where.join(" AND ")} GROUP BY ${["1", ...groups].join(", ")} LIMIT ${limitOf(q.limit)}`;
    const rows = await this.#rows<Record<string, string | number>>(sql, args);
    return rows.map((r) => ({ bucket: Number(r.bucket), key: q.groupBy.map((_, i) => String(r[`k${i}`])), count: Number(r.n) }));
  }

  async eventIdSpan(q: EventScope & { since: number; until: number }) {
    const { args, p } = params();
    const where = this.#eventFilter({ project: q.project, since: q.since, until: q.until }, p);
    const [r] = await this.#rows<{ first: number | string | null; last: number | string | null }>(`SELECT MIN(id + 0) AS first, MAX(id + 0) AS last FROM events WHERE ${where.join(" AND ")}`, args);
    return r?.first == null || r.last == null ? undefined : { first: Number(r.first), last: Number(r.last) };
  }

  async readEventWindow(q: EventScope & { since: number; until: number; afterId: number; upToId: number; limit: number }): Promise<EventRecord[]> {
    const { args, p } = params();
    // `time + 0`: no index on time for this read, so it walks the primary key in id order (as SQLite's `+time`) instead of sorting the window per batch.
    const where = [`id > ${p(q.afterId)}`, `id <= ${p(q.upToId)}`, `time + 0 >= ${p(q.since)}`, `time + 0 < ${p(q.until)}`];
    if (q.project !== null) where.push(`project = ${p(q.project)}`);
    const sql = `SELECT * FROM events WHERE ${where.join(" AND ")} ORDER BY id LIMIT ${limitOf(q.limit)}`;
    return (await this.#rows<EventRow>(sql, args)).map(eventFromRow);
  }

  async lastEventId() {
    return (await this.#rows<{ id: number | null }>("SELECT MAX(id) AS id FROM events"))[0]?.id ?? 0;
  }

  async firstEventId() {
    return (await this.#rows<{ id: number | null }>("SELECT MIN(id) AS id FROM events"))[0]?.id ?? 0;
  }

  // alerts

  async getAlert(id: string) {
    const [r] = await this.#rows<AlertRow>("SELECT * FROM alerts WHERE id = $1", [id]);
    return r && alertFromRow(r);
  }

  async listFiringAlerts() {
    return (await this.#rows<AlertRow>("SELECT * FROM alerts WHERE state = 'firing' ORDER BY first_seen, id")).map(alertFromRow);
  }

  async listAlerts(f: { includeResolved: boolean; project: string | null; sharedRules: readonly string[]; limit: number }) {
    const where: string[] = [];
    const { args, p } = params();
    if (!f.includeResolved) where.push("state = 'firing'");
    if (f.project !== null) {
      const shared = f.sharedRules.length ? ` OR (project = '' AND rule = ANY(${p([...f.sharedRules])}::text[]))` : "";
      // The project's parameter is numbered after the rules': order in the text does not matter.
      where.push(`(project = ${p(f.project)}${shared})`);
    }
    const sql =
      "SELECT * FROM alerts" +
      (where.length ? ` WHERE ${where.join(" AND ")}` : "") +
      ` ORDER BY CASE WHEN state = 'firing' THEN 0 ELSE 1 END, last_seen DESC, id DESC LIMIT ${limitOf(f.limit)}`;
    return (await this.#rows<AlertRow>(sql, args)).map(alertFromRow);
  }

  async latestMute(rule: string, subject: string) {
    const [r] = await this.#rows<{ muted_until: number | null }>("SELECT muted_until FROM alerts WHERE rule = $1 AND subject = $2 ORDER BY first_seen DESC, id DESC LIMIT 1", [rule, subject]);
    return r?.muted_until ?? null;
  }

  // webhook deliveries and presence (store.ts WebhookDeliveryReads, countLiveLeases)

  async dueWebhookDeliveries(at: number, limit: number) {
    const rows = await this.#rows<WebhookDeliveryRow>(
      `SELECT * FROM webhook_deliveries WHERE next_attempt_at <= $1 ORDER BY next_attempt_at, created_at, id, url_key LIMIT ${limitOf(limit)}`,
      [at],
    );
    return rows.map(webhookDeliveryFromRow);
  }

  async nextWebhookDeliveryAt() {
    const [r] = await this.#rows<{ t: number | null }>("SELECT MIN(next_attempt_at) AS t FROM webhook_deliveries");
    return r?.t == null ? undefined : Number(r.t);
  }

  async countWebhookDeliveries() {
    return Number((await this.#rows<{ n: number }>("SELECT COUNT(*) AS n FROM webhook_deliveries"))[0]?.n ?? 0);
  }

  // usage history (store.ts UsageReads)

  /** Each bucket start of the span a lookup of the key (it leads with bucket_at). */
  async installLogs(serverId: string) {
    return (await this.#rows<InstallLogRow>("SELECT * FROM install_logs WHERE server_id = $1 ORDER BY attempt DESC", [serverId])).map(installLogFromRow);
  }

  async usageBuckets(kind: UsageSubjectKind, subjectId: string, after: number, upTo: number) {
    const starts = usageBucketStarts(after, upTo);
    if (starts.length === 0) return [];
    const rows = await this.#rows<UsageBucketRow>(`SELECT ${USAGE_COLUMNS} FROM usage_buckets WHERE bucket_at = ANY($1::bigint[]) AND kind = $2 AND subject_id = $3 ORDER BY bucket_at`, [starts, kind, subjectId]);
    return rows.map(usageBucketFromRow);
  }

  // templates (store.ts TemplateReads)

  async getTemplate(id: string) {
    const [r] = await this.#rows<TemplateRow>("SELECT * FROM templates WHERE id = $1", [id]);
    return r && templateFromRow(r);
  }

  async findTemplateByName(project: string, name: string) {
    const [r] = await this.#rows<TemplateRow>("SELECT * FROM templates WHERE project = $1 AND name = $2", [project, name]);
    return r && templateFromRow(r);
  }

  async listTemplates(f: TemplateFilter = {}) {
    const where: string[] = [];
    const args: unknown[] = [];
    if (f.projects) {
      if (f.projects.length === 0) return [];
      args.push([...f.projects]);
      where.push(`project = ANY($${args.length}::text[])`);
    }
    if (f.after) {
      args.push(f.after.name, f.after.id);
      where.push(`(name > $${args.length - 1} OR (name = $${args.length - 1} AND id > $${args.length}))`);
    }
    let sql = `SELECT * FROM templates${where.length ? ` WHERE ${where.join(" AND ")}` : ""} ORDER BY name, id`;
    if (f.limit !== undefined) {
      args.push(f.limit);
      sql += ` LIMIT $${args.length}`;
    }
    return (await this.#rows<TemplateRow>(sql, args)).map(templateFromRow);
  }

  // saved queries (store.ts SavedQueryReads; as SavedQueryTables)

  async getSavedQuery(id: string) {
    const [r] = await this.#rows<SavedQueryRow>("SELECT * FROM saved_queries WHERE id = $1", [id]);
    return r && savedQueryFromRow(r);
  }

  async findSavedQueryByName(project: string, name: string) {
    const [r] = await this.#rows<SavedQueryRow>("SELECT * FROM saved_queries WHERE project = $1 AND name = $2", [project, name]);
    return r && savedQueryFromRow(r);
  }

  async listSavedQueries(f: SavedQueryFilter = {}) {
    const where: string[] = [];
    const args: unknown[] = [];
    if (f.project !== undefined) where.push(`project = $${args.push(f.project)}`);
    if (f.name !== undefined) where.push(`name = $${args.push(f.name)}`);
    if (f.visibleTo !== undefined) where.push(`(shared = 1 OR owner_token_id = $${args.push(f.visibleTo)})`);
    if (f.pinnedOnly) where.push("pinned = 1");
    if (f.alertEnabled !== undefined) where.push(`alert_enabled = $${args.push(f.alertEnabled ? 1 : 0)}`);
    if (f.after) {
      const p = args.push(f.after.project);
      where.push(`(project > $${p} OR (project = $${p} AND name > $${args.push(f.after.name)}))`);
    }
    const sql = "SELECT * FROM saved_queries" + (where.length ? ` WHERE ${where.join(" AND ")}` : "") + " ORDER BY project, name" + (f.limit !== undefined ? ` LIMIT ${Math.max(0, Math.floor(f.limit))}` : "");
    return (await this.#rows<SavedQueryRow>(sql, args)).map(savedQueryFromRow);
  }

  // schedules (store.ts ScheduleReads; as ScheduleTables)

  async getSchedule(id: string) {
    const [r] = await this.#rows<ScheduleRow>("SELECT * FROM schedules WHERE id = $1", [id]);
    return r && scheduleFromRow(r);
  }

  async findScheduleByName(project: string, name: string) {
    const [r] = await this.#rows<ScheduleRow>("SELECT * FROM schedules WHERE project = $1 AND name = $2", [project, name]);
    return r && scheduleFromRow(r);
  }

  async listSchedules(f: ScheduleFilter = {}) {
    const where: string[] = [];
    const args: unknown[] = [];
    if (f.project !== undefined) where.push(`project = $${args.push(f.project)}`);
    if (f.serverId !== undefined) where.push(`server_id = $${args.push(f.serverId)}`);
    if (f.afterName !== undefined) where.push(`name > $${args.push(f.afterName)}`);
    const sql = "SELECT * FROM schedules" + (where.length ? ` WHERE ${where.join(" AND ")}` : "") + " ORDER BY project, name" + (f.limit ? ` LIMIT ${Math.max(0, Math.floor(f.limit))}` : "");
    return (await this.#rows<ScheduleRow>(sql, args)).map(scheduleFromRow);
  }

  async getScheduleRun(id: string) {
    const [r] = await this.#rows<ScheduleRunRow>("SELECT * FROM schedule_runs WHERE id = $1", [id]);
    return r && scheduleRunFromRow(r);
  }

  async listScheduleRuns(scheduleId: string, page: ScheduleRunPage) {
    const args: unknown[] = [scheduleId];
    let where = "schedule_id = $1";
    if (page.before) {
      args.push(page.before.startedAt, page.before.id);
      where += " AND (started_at < $2 OR (started_at = $2 AND id < $3))";
    }
    return (await this.#rows<ScheduleRunRow>(`SELECT * FROM schedule_runs WHERE ${where} ORDER BY started_at DESC, id DESC LIMIT ${Math.max(0, Math.floor(page.limit))}`, args)).map(scheduleRunFromRow);
  }

  async runningScheduleRuns(scheduleId?: string) {
    const rows =
      scheduleId === undefined
        ? await this.#rows<ScheduleRunRow>("SELECT * FROM schedule_runs WHERE outcome = 'running' ORDER BY started_at, id")
        : await this.#rows<ScheduleRunRow>("SELECT * FROM schedule_runs WHERE outcome = 'running' AND schedule_id = $1 ORDER BY started_at, id", [scheduleId]);
    return rows.map(scheduleRunFromRow);
  }

  // backups (store.ts BackupReads)

  async getBackupTarget(id: string) {
    const [r] = await this.#rows<BackupTargetRow>("SELECT * FROM backup_targets WHERE id = $1", [id]);
    return r && backupTargetFromRow(r);
  }

  async findBackupTargetByName(name: string) {
    const [r] = await this.#rows<BackupTargetRow>("SELECT * FROM backup_targets WHERE name = $1", [name]);
    return r && backupTargetFromRow(r);
  }

  async listBackupTargets() {
    return (await this.#rows<BackupTargetRow>("SELECT * FROM backup_targets ORDER BY name")).map(backupTargetFromRow);
  }

  async getBackup(id: string) {
    const [r] = await this.#rows<BackupRow>("SELECT * FROM backups WHERE id = $1", [id]);
    return r && backupFromRow(r);
  }

  async listBackups(f: BackupFilter = {}) {
    const { sql, args } = listBackupsQuery(f);
    return (await this.#rows<BackupRow>(sql, args)).map(backupFromRow);
  }

  async countBackupsOnTarget(targetId: string) {
    return Number((await this.#rows<{ n: number }>("SELECT COUNT(*) AS n FROM backups WHERE target_id = $1", [targetId]))[0]?.n ?? 0);
  }

  /** As ServerBackupTables.policyFacts. `#>>` gives the policy's hours as text (absent: NULL). */
  async backupPolicyFacts(serverId?: string) {
    const rows = await this.#rows<PolicyFactsRow>(
      `SELECT s.id, s.name, s.project, s.host_id, s.created_at, s.alert_after_hours,
         (SELECT MAX(COALESCE(b.finished_at, b.created_at)) FROM backups b WHERE b.server_id = s.id AND b.state = 'succeeded') AS newest_success_at
       FROM (SELECT id, name, project, host_id, created_at,
               COALESCE((spec_json::jsonb #>> '{backupPolicy,alertAfterHours}')::bigint, 0) AS alert_after_hours
             FROM servers
             WHERE deleted_at IS NULL AND COALESCE(jsonb_typeof(lifecycle_json::jsonb -> 'purge'), 'null') = 'null'${serverId === undefined ? "" : " AND id = $1"}) s
       WHERE s.alert_after_hours > 0
       ORDER BY s.id`,
      serverId === undefined ? [] : [serverId],
    );
    return rows.map(policyFactsFromRow);
  }

  async countLiveLeases(prefix: string, at: number) {
    return Number((await this.#rows<{ n: number }>("SELECT COUNT(*) AS n FROM leases WHERE substr(name, 1, length($1::text)) = $1::text AND expires_at > $2", [prefix, at]))[0]?.n ?? 0);
  }

  // tokens

  async countTokens() {
    return (await this.#rows<{ n: number }>("SELECT COUNT(*) AS n FROM tokens"))[0]?.n ?? 0;
  }

  async findTokenBySecretHash(secretHash: string) {
    const [r] = await this.#rows<TokenRow>("SELECT * FROM tokens WHERE secret_hash = $1", [secretHash]);
    return r && tokenFromRow(r);
  }

  async getToken(id: string) {
    const [r] = await this.#rows<TokenRow>("SELECT * FROM tokens WHERE id = $1", [id]);
    return r && tokenFromRow(r);
  }

  async listTokens(f: { project?: string } = {}) {
    const rows =
      f.project === undefined
        ? await this.#rows<TokenRow>("SELECT * FROM tokens ORDER BY created_at, id")
        : await this.#rows<TokenRow>("SELECT * FROM tokens WHERE project = $1 ORDER BY created_at, id", [f.project]);
    return rows.map(tokenFromRow);
  }

  // retention: each a bounded DELETE … WHERE id IN (SELECT … LIMIT n), as SQLite's

  async pruneEventsOlderThan(cutoff: number, limit: number) {
    return this.#count(`DELETE FROM events WHERE id IN (SELECT id FROM events WHERE time < $1 ORDER BY id LIMIT ${limitOf(limit)})`, [cutoff]);
  }

  /** Ids are handed out in commit order (event-log.ts), so the newest `keep` are the ids above max - keep. */
  async pruneEventsBeyondCount(keep: number, limit: number) {
    const cutoff = (await this.lastEventId()) - Math.floor(keep);
    if (cutoff <= 0) return 0;
    return this.#count(`DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id <= $1 ORDER BY id LIMIT ${limitOf(limit)})`, [cutoff]);
  }

  async pruneFinishedCommands(before: number, limit: number) {
    return this.#count(
      `DELETE FROM commands WHERE id IN (
         SELECT c.id FROM commands c
         WHERE c.state IN ('succeeded', 'failed', 'expired')
           AND c.finished_at < $1 AND EXISTS (
             SELECT 1 FROM commands n
             WHERE n.server_id = c.server_id AND n.state IN ('succeeded', 'failed', 'expired')
               AND (n.finished_at > c.finished_at OR (n.finished_at = c.finished_at AND n.created_at > c.created_at)))
         LIMIT ${limitOf(limit)})`,
      [before],
    );
  }

  async pruneEnrollmentTokens(before: number, limit: number) {
    return this.#count(
      `DELETE FROM enrollment_tokens WHERE id IN (
         SELECT id FROM enrollment_tokens WHERE (used_at IS NOT NULL AND used_at < $1) OR expires_at < $1 LIMIT ${limitOf(limit)})`,
      [before],
    );
  }

  async pruneResolvedAlerts(cutoff: number, limit: number) {
    return this.#count(
      `DELETE FROM alerts WHERE id IN (SELECT id FROM alerts WHERE state = 'resolved' AND resolved_at < $1 ORDER BY resolved_at LIMIT ${limitOf(limit)})`,
      [cutoff],
    );
  }
}

/** The batch wrote something another store would hear of (the same test for local and remote listeners). */
function wroteSomething(fx: Effects): boolean {
  return fx.events.length > 0 || fx.serverIds.size > 0 || fx.hostIds.size > 0 || fx.tokenIds.size > 0;
}

/** Remote notices waiting for their events to be read, beyond which they collapse into one resync. */
const REMOTE_PENDING_MAX = 1_000;

/** How many times a batch runs when the database aborts it as a deadlock or serialization failure. */
const COMMIT_ATTEMPTS = 5;
/** The pause before run n+1 is random in [0, RETRY_PAUSE_MS * 2^n) ms: 20, 40, 80, 160 at most. */
const RETRY_PAUSE_MS = 10;

/** How much longer than the lock wait the probe's write may take before it counts as failed. */
const PROBE_WRITE_ALLOWANCE_MS = 2_000;

/** The SELECT behind listServers, with its parameters. */
function listServersQuery(f: ServerFilter): { sql: string; args: unknown[] } {
  const where: string[] = [];
  const { args, p } = params();
  if (f.project !== undefined) where.push(`project = ${p(f.project)}`);
  if (f.hostId) where.push(`host_id = ${p(f.hostId)}`);
  if (!f.includeDeleted) where.push("deleted_at IS NULL");
  if (f.phases && f.phases.length > 0) where.push(`phase = ANY(${p([...f.phases])}::text[])`);
  for (const [key, value] of Object.entries(f.labels ?? {})) where.push(`(spec_json::jsonb -> 'labels' ->> ${p(key)}) = ${p(value)}`);
  if (f.before) {
    // A row value, searched in servers_created from the cursor (as in the SQLite store).
    where.push(`(created_at, id) < (${p(f.before.createdAt)}, ${p(f.before.id)})`);
  }
  const sql =
    "SELECT * FROM servers" +
    (where.length ? ` WHERE ${where.join(" AND ")}` : "") +
    " ORDER BY created_at DESC, id DESC" +
    (f.limit ? ` LIMIT ${limitOf(f.limit)}` : "");
  return { sql, args };
}

/** The SELECT behind listBackups, with its parameters (as ServerBackupTables.list). */
function listBackupsQuery(f: BackupFilter): { sql: string; args: unknown[] } {
  const where: string[] = [];
  const { args, p } = params();
  if (f.serverId !== undefined) where.push(`server_id = ${p(f.serverId)}`);
  if (f.project !== undefined) where.push(`project = ${p(f.project)}`);
  if (f.states && f.states.length > 0) where.push(`state = ANY(${p([...f.states])}::text[])`);
  if (f.before) {
    const at = p(f.before.createdAt);
    where.push(`(created_at < ${at} OR (created_at = ${at} AND id < ${p(f.before.id)}))`);
  }
  const sql =
    "SELECT * FROM backups" +
    (where.length ? ` WHERE ${where.join(" AND ")}` : "") +
    " ORDER BY created_at DESC, id DESC" +
    (f.limit ? ` LIMIT ${limitOf(f.limit)}` : "");
  return { sql, args };
}

/** The latest server change position (store.ts serverChangeHead): records and tombstones. */
const SERVER_CHANGE_HEAD = `SELECT COALESCE((SELECT value::int8 FROM meta WHERE key = '${SERVER_CHANGE_COUNTER}'), 0) AS m`;

/**
 * Query parameters as they would be stored: look-ups by text the caller sent (a
 * name, an id, a prefix) compare it as it would be stored. PostgreSQL text cannot
 * hold NUL, so writes store it as U+FFFD (rows.ts storableText), and a NUL in a
 * parameter would otherwise fail the query instead of simply matching nothing.
 */
function storableArgs(args: readonly unknown[]): unknown[] {
  return args.map((a) => (typeof a === "string" ? storableText(a) : a));
}
