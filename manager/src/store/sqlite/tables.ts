import { fromJsonString, toBinary, toJsonString } from "@bufbuild/protobuf";
import {
  CommandSchema,
  ContainerInfoSchema,
  type Command,
  type ContainerInfo,
} from "@berth/proto/berth/v1/agent_pb.js";
import {
  Phase,
  Protocol,
  ServerSpecSchema,
  ServerStatusSchema,
  type PortMapping,
  type ServerStatus,
} from "@berth/proto/berth/v1/server_pb.js";
import type { Db } from "./database.js";
import { sealSpec, type SecretBox } from "../secrets.js";
import { newId } from "../../ids.js";
import { ConflictError, LeaseHeldError, NotFoundError, PreconditionError, ServerNameTakenError } from "../../errors.js";
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
  ServerChangeRecord,
  ServerFilter,
  ServerRecord,
} from "../../domain/records.js";
import { LABEL_MANAGER, LABEL_SERVER } from "../../domain/labels.js";
import { encodeSchedule, hostFromRow, placementOfRow, serverFromRow, observedFromRow, commandFromRow, portKeys, portKeysOfSpecJson, eventFromRow, leaseFromRow, serverChangesFromRows, SERVER_CHANGES_HORIZON, SERVER_CHANGE_COUNTER, withKnownSize, INSTALL_LOG_COLUMNS, installLogFromRow, containerRunKey, ORDERED_UPSERT, installLogValues, type InstallLogRow, type HostRow, type LeaseRow, type ServerRow, type ObservedRow, type CommandRow, type EventRow, type TombstoneRow } from "../rows.js";
import { INSTALL_LOGS_KEPT, SERVER_TOMBSTONES_KEPT, type HostAllocation, type InstallLogRecord, type HostRange, type IdPage, type ServerPlacement } from "../store.js";
import { pageLimit } from "../pages.js";

/** One observed container, written whatever the row holds (an inventory's). */
const UPSERT_CONTAINER = `INSERT INTO observed_containers (host_id, container_id, server_id, manager_id, state, info_json, observed_at, run_key)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (host_id, container_id) DO UPDATE SET
           server_id = excluded.server_id, manager_id = excluded.manager_id, state = excluded.state,
           info_json = excluded.info_json, observed_at = excluded.observed_at, run_key = excluded.run_key`;
/** The same, not over a newer run (rows.ts, ORDERED_UPSERT): an event's or a command result's. */
const UPSERT_CONTAINER_ORDERED = `${UPSERT_CONTAINER}${ORDERED_UPSERT}`;

/**
 * The only code that speaks SQL. Narrow, synchronous (better-sqlite3), and
 * written in portable SQL so another backend can implement the same surface.
 */
export class SqliteTables {
  /**
   * `secrets`: seals the values of a spec's `secret_env` keys on every write
   * (spec_json holds them only sealed); without it, writing one throws.
   */
  constructor(
    private readonly db: Db,
    readonly secrets?: SecretBox,
  ) {}

  /** Runs `fn` in one transaction (nested calls join the outer one). */
  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  /**
   * Opens a transaction that stays open across calls (the store's group
   * commit); `transaction` inside it uses savepoints. IMMEDIATE: the write
   * lock is taken here, waiting (busy_timeout) while the WAL checkpoint
   * worker's TRUNCATE holds it. A deferred BEGIN read first and asked for the
   * lock at its first write, where SQLite answers SQLITE_BUSY at once rather
   * than wait (or SQLITE_BUSY_SNAPSHOT); that failed the whole group (the
   * likely cause of 131 StopServer calls answered Internal at once in a quick
   * scale bench, whose log was not kept).
   */
  begin(): void {
    this.db.exec("BEGIN IMMEDIATE");
  }

  commitTransaction(): void {
    this.db.exec("COMMIT");
  }

  rollbackTransaction(): void {
    this.db.exec("ROLLBACK");
  }

  /** Whether a transaction is open (SQLite ends one by itself on some errors: a full disk, I/O). */
  inTransaction(): boolean {
    return this.db.inTransaction;
  }

  close(): void {
    this.db.close();
  }

  // --- meta -------------------------------------------------------------------

  /** This manager's identity, created once; it goes on every container's labels. */
  managerId(): string {
    const row = this.db.prepare("SELECT value FROM meta WHERE key = 'manager_id'").get() as
      | { value: string }
      | undefined;
    if (row) return row.value;
    const id = newId("mgr");
    this.db.prepare("INSERT INTO meta (key, value) VALUES ('manager_id', ?)").run(id);
    return id;
  }

  /** A value of the meta table (e.g. the secret key check), or undefined. */
  getMeta(key: string): string | undefined {
    return (this.db.prepare("SELECT value FROM meta WHERE key = ?").get(key) as { value: string } | undefined)?.value;
  }

  setMeta(key: string, value: string): void {
    this.db.prepare("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value").run(key, value);
  }

  /**
   * The write probe (metrics/write-probe.ts): sets meta `write_probe` in a
   * transaction of its own that takes the write lock at once, waiting at most
   * `lockWaitMs` for another writer (this connection's usual wait is restored
   * after). Throws what the database said (SQLITE_BUSY, SQLITE_FULL,
   * SQLITE_READONLY, …); inside another transaction it writes nothing and
   * returns false.
   */
  probeWrite(value: string, lockWaitMs: number): boolean {
    const db = this.db;
    if (!db.open) throw new Error("database closed");
    if (db.inTransaction) return false;
    const busy = db.pragma("busy_timeout", { simple: true }) as number;
    try {
      db.pragma(`busy_timeout = ${Math.max(0, Math.floor(lockWaitMs))}`);
      db.exec("BEGIN IMMEDIATE");
      try {
        this.setMeta("write_probe", value);
        db.exec("COMMIT");
      } catch (err) {
        if (db.inTransaction) db.exec("ROLLBACK");
        throw err;
      }
      return true;
    } finally {
      if (db.open) db.pragma(`busy_timeout = ${busy}`);
    }
  }

  // --- leases -----------------------------------------------------------------

  /** store.ts lease.acquire: read and write in the batch's transaction (one writer at a time). */
  acquireLease(name: string, holder: string, ttlMs: number, at: number): void {
    const cur = this.getLease(name);
    if (cur && cur.holder !== holder && cur.expiresAt > at) throw new LeaseHeldError(name, cur.holder, cur.expiresAt);
    const epoch = !cur ? 1 : cur.holder === holder ? cur.epoch : cur.epoch + 1;
    this.db
      .prepare("INSERT INTO leases (name, holder, epoch, expires_at) VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, epoch = excluded.epoch, expires_at = excluded.expires_at")
      .run(name, holder, epoch, at + ttlMs);
  }

  /** store.ts lease.release: only the holder's own lease goes. */
  releaseLease(name: string, holder: string): void {
    this.db.prepare("DELETE FROM leases WHERE name = ? AND holder = ?").run(name, holder);
  }

  /** store.ts host.take: the epoch counts on from the row, kept by host.release. Returns the new epoch. */
  takeLease(name: string, holder: string, ttlMs: number, at: number): number {
    const epoch = (this.getLease(name)?.epoch ?? 0) + 1;
    this.db
      .prepare("INSERT INTO leases (name, holder, epoch, expires_at) VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, epoch = excluded.epoch, expires_at = excluded.expires_at")
      .run(name, holder, epoch, at + ttlMs);
    return epoch;
  }

  /** store.ts host.renew: false when the term is no longer (holder, epoch). */
  renewLeaseTerm(name: string, holder: string, epoch: number, ttlMs: number, at: number): boolean {
    return this.db.prepare("UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ? AND epoch = ?").run(at + ttlMs, name, holder, epoch).changes === 1;
  }

  /** store.ts host.release: the row stays (expired) so the epoch never goes back. */
  endLeaseTerm(name: string, holder: string, epoch: number): void {
    this.db.prepare("UPDATE leases SET expires_at = 0 WHERE name = ? AND holder = ? AND epoch = ?").run(name, holder, epoch);
  }

  getLease(name: string): LeaseRecord | undefined {
    const row = this.db.prepare("SELECT name, holder, epoch, expires_at FROM leases WHERE name = ?").get(name) as LeaseRow | undefined;
    return row && leaseFromRow(row);
  }

  // --- hosts ------------------------------------------------------------------

  insertHost(h: { id: string; name: string; secretHash: string; createdAt: number }): void {
    this.db
      .prepare("INSERT INTO hosts (id, name, secret_hash, created_at) VALUES (?, ?, ?, ?)")
      .run(h.id, h.name, h.secretHash, h.createdAt);
  }

  getHost(id: string): HostRecord | undefined {
    const row = this.db.prepare("SELECT * FROM hosts WHERE id = ?").get(id) as HostRow | undefined;
    return row && hostFromRow(row);
  }

  listHosts(): HostRecord[] {
    const rows = this.db.prepare("SELECT * FROM hosts WHERE removed_at IS NULL ORDER BY created_at, id").all() as HostRow[];
    return rows.map(hostFromRow);
  }

  setHostConnected(id: string, facts: HostFacts, now: number): void {
    this.db
      .prepare(
        "UPDATE hosts SET online = 1, connected_since = ?, last_heartbeat = ?, facts_json = ?, name = COALESCE(NULLIF(?, ''), name) WHERE id = ?",
      )
      .run(now, now, JSON.stringify(facts), facts.hostname ?? "", id);
  }

  recordHeartbeat(id: string, now: number, patch: Partial<HostFacts>): void {
    const host = this.getHost(id);
    if (!host) return;
    this.db
      .prepare("UPDATE hosts SET last_heartbeat = ?, facts_json = ? WHERE id = ?")
      .run(now, JSON.stringify({ ...host.facts, ...patch }), id);
  }

  /** store.ts host.schedule. */
  setHostSchedule(id: string, schedule: HostSchedule, expect: HostSchedule | undefined): void {
    const text = encodeSchedule(schedule);
    const changed =
      expect === undefined
        ? this.db.prepare("UPDATE hosts SET schedule_json = ? WHERE id = ? AND removed_at IS NULL").run(text, id).changes
        : this.db.prepare("UPDATE hosts SET schedule_json = ? WHERE id = ? AND removed_at IS NULL AND schedule_json = ?").run(text, id, encodeSchedule(expect)).changes;
    if (changed === 1) return;
    const row = this.db.prepare("SELECT removed_at FROM hosts WHERE id = ?").get(id) as { removed_at: number | null } | undefined;
    if (!row || row.removed_at !== null) throw new NotFoundError("host", id, "list hosts with HostService.ListHosts");
    throw new ConflictError(`host ${id}'s scheduling changed meanwhile (CordonHost, DrainHost, UncordonHost or its drain); read it again`);
  }

  setHostOffline(id: string): void {
    this.db.prepare("UPDATE hosts SET online = 0, connected_since = NULL WHERE id = ?").run(id);
  }

  /** At start nothing is connected yet, whatever the last run left behind. */
  /** store.ts host.offlineUnowned; returns the hosts it marked offline. */
  markUnownedHostsOffline(at: number): string[] {
    const rows = this.db
      .prepare(
        "UPDATE hosts SET online = 0, connected_since = NULL WHERE online = 1 AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.name = 'host:' || hosts.id AND l.expires_at > ?) RETURNING id",
      )
      .all(at) as { id: string }[];
    return rows.map((r) => r.id);
  }

  /** store.ts liveHostOwners. */
  liveHostOwners(at: number): Map<string, string> {
    const rows = this.db
      .prepare("SELECT h.id, l.holder FROM hosts h JOIN leases l ON l.name = 'host:' || h.id WHERE h.online = 1 AND h.removed_at IS NULL AND l.expires_at > ?")
      .all(at) as { id: string; holder: string }[];
    return new Map(rows.map((r) => [r.id, r.holder]));
  }

  allocationByHost(): Map<string, HostAllocation> {
    const rows = this.db
      .prepare(
        `SELECT host_id, COUNT(*) AS n,
                TOTAL(json_extract(spec_json, '$.resources.cpus')) AS cpus,
                TOTAL(CAST(json_extract(spec_json, '$.resources.memoryBytes') AS INTEGER)) AS memory
           FROM servers WHERE deleted_at IS NULL GROUP BY host_id`,
      )
      .all() as { host_id: string; n: number; cpus: number; memory: number }[];
    return new Map(rows.map((r) => [r.host_id, { servers: r.n, cpus: r.cpus, memoryBytes: r.memory }]));
  }

  countServersByHost(): Map<string, number> {
    const rows = this.db
      .prepare("SELECT host_id, COUNT(*) AS n FROM servers WHERE deleted_at IS NULL GROUP BY host_id")
      .all() as { host_id: string; n: number }[];
    return new Map(rows.map((r) => [r.host_id, r.n]));
  }

  // --- enrollment -------------------------------------------------------------

  insertEnrollmentToken(t: { id: string; tokenHash: string; createdAt: number; expiresAt: number }): void {
    this.db
      .prepare("INSERT INTO enrollment_tokens (id, token_hash, created_at, expires_at) VALUES (?, ?, ?, ?)")
      .run(t.id, t.tokenHash, t.createdAt, t.expiresAt);
  }

  getEnrollmentToken(tokenHash: string): { id: string; expiresAt: number; usedAt: number | null } | undefined {
    const row = this.db
      .prepare("SELECT id, expires_at, used_at FROM enrollment_tokens WHERE token_hash = ?")
      .get(tokenHash) as { id: string; expires_at: number; used_at: number | null } | undefined;
    return row && { id: row.id, expiresAt: row.expires_at, usedAt: row.used_at };
  }

  /** Marks the token used; returns false if another enrollment got there first. */
  useEnrollmentToken(id: string, hostId: string, now: number): boolean {
    const r = this.db
      .prepare("UPDATE enrollment_tokens SET used_at = ?, used_by = ? WHERE id = ? AND used_at IS NULL")
      .run(now, hostId, id);
    return r.changes === 1;
  }

  // --- servers ----------------------------------------------------------------

  /**
   * Inserts a new server (version 1) and reserves its host ports, in one
   * transaction: a refused reservation leaves no server row behind.
   * Throws ServerNameTakenError when the project has a server of that name
   * (soft-deleted ones included), PreconditionError when another server on
   * the host holds one of its ports.
   */
  insertServer(s: NewServerRecord): void {
    this.transaction(() => {
      try {
        this.db
          .prepare(
            `INSERT INTO servers (id, project, name, host_id, generation, spec_json, status_json, phase,
               data_initialized, lifecycle_json, created_at, updated_at, deleted_at, version)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)`,
          )
          .run(
            s.id,
            s.project,
            s.name,
            s.hostId,
            s.generation,
            toJsonString(ServerSpecSchema, sealSpec(s.id, s.spec, this.secrets)),
            toJsonString(ServerStatusSchema, s.status),
            Phase[s.status.phase] ?? "UNSPECIFIED",
            s.dataInitialized ? 1 : 0,
            JSON.stringify(s.lifecycle),
            s.createdAt,
            s.updatedAt,
            s.deletedAt,
          );
      } catch (err) {
        // The unique index servers_project_name (migration 1) is the backstop behind
        // CreateServer's own look-up, which another manager can pass at the same moment.
        if (isUniqueViolation(err, "servers.project, servers.name")) throw new ServerNameTakenError(s.project, s.name);
        throw err;
      }
      this.reservePorts(s.id, s.hostId, s.deletedAt === null ? s.spec.ports : []);
    });
  }

  /** store.ts serverHostId. */
  serverHostId(id: string): string | undefined {
    return (this.db.prepare("SELECT host_id FROM servers WHERE id = ?").get(id) as { host_id: string } | undefined)?.host_id;
  }

  getServer(id: string): ServerRecord | undefined {
    const row = this.db.prepare("SELECT * FROM servers WHERE id = ?").get(id) as ServerRow | undefined;
    return row && serverFromRow(row);
  }

  findServerByName(project: string, name: string): ServerRecord | undefined {
    const row = this.db.prepare("SELECT * FROM servers WHERE project = ? AND name = ?").get(project, name) as
      | ServerRow
      | undefined;
    return row && serverFromRow(row);
  }

  /** `decode` as in serverChangesSince. */
  listServers(f: ServerFilter = {}, decode: (r: ServerRow) => ServerRecord = serverFromRow): ServerRecord[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (f.project !== undefined) {
      where.push("project = ?");
      args.push(f.project);
    }
    if (f.hostId) {
      where.push("host_id = ?");
      args.push(f.hostId);
    }
    if (!f.includeDeleted) where.push("deleted_at IS NULL");
    if (f.phases && f.phases.length > 0) {
      where.push(`phase IN (${f.phases.map(() => "?").join(", ")})`);
      args.push(...f.phases);
    }
    for (const [key, value] of Object.entries(f.labels ?? {})) {
      // Label keys never hold '"' (ServerSpec.labels' rule), so the quoted path is exact.
      where.push("json_extract(spec_json, ?) = ?");
      args.push(`$.labels."${key}"`, value);
    }
    if (f.before) {
      // A row value: the index servers_created is searched from the cursor (the OR form walked it from the top).
      where.push("(created_at, id) < (?, ?)");
      args.push(f.before.createdAt, f.before.id);
    }
    const sql =
      "SELECT * FROM servers" +
      (where.length ? ` WHERE ${where.join(" AND ")}` : "") +
      " ORDER BY created_at DESC, id DESC" +
      (f.limit ? ` LIMIT ${Math.floor(f.limit)}` : "");
    return (this.db.prepare(sql).all(...args) as ServerRow[]).map((r) => decode(r));
  }

  /** Server ids on a host (including soft-deleted ones, whose containers may still need removal). */
  serverIdsOnHost(hostId: string): string[] {
    return (this.db.prepare("SELECT id FROM servers WHERE host_id = ?").all(hostId) as { id: string }[]).map(
      (r) => r.id,
    );
  }

  allServerIds(): string[] {
    return (this.db.prepare("SELECT id FROM servers").all() as { id: string }[]).map((r) => r.id);
  }

  // Every update below increments the server's version and returns the new one
  // (undefined: no such server, nothing written). Given `expectedVersion`, it
  // writes only if the row still has that version, and otherwise throws
  // ConflictError (or NotFoundError if the server is gone) having written nothing.

  /**
   * Replaces the desired-state columns (spec, generation, deletion, host) and,
   * when the host, the deletion or the ports change, the server's port
   * reservations with them: a soft-deleted server holds none, and a port
   * another server on the host holds is refused (PreconditionError), leaving
   * the row as it was.
   */
  updateServerSpec(s: Pick<ServerRecord, "id" | "spec" | "generation" | "updatedAt" | "deletedAt" | "hostId">, expectedVersion?: number): number | undefined {
    return this.transaction(() => {
      const before = this.db.prepare("SELECT host_id, deleted_at, spec_json FROM servers WHERE id = ?").get(s.id) as
        | { host_id: string; deleted_at: number | null; spec_json: string }
        | undefined;
      const version = this.writeServer(
        s.id,
        "spec_json = ?, generation = ?, updated_at = ?, deleted_at = ?, host_id = ?",
        [toJsonString(ServerSpecSchema, sealSpec(s.id, s.spec, this.secrets)), s.generation, s.updatedAt, s.deletedAt, s.hostId],
        expectedVersion,
      );
      // Only a change of what is reserved re-reserves: a write that keeps the ports
      // (start, stop, image) never fails on them, even for a server that holds none
      // because an older database had it clash (migration 7 keeps the first).
      const wanted = s.deletedAt === null ? s.spec.ports : [];
      const held = before && before.deleted_at === null ? portKeysOfSpecJson(before.spec_json) : "";
      if (version !== undefined && (before?.host_id !== s.hostId || held !== portKeys(wanted))) this.reservePorts(s.id, s.hostId, wanted);
      return version;
    });
  }

  /** Replaces the observed-state columns; only the reconciler calls this. */
  updateServerStatus(id: string, status: ServerStatus, dataInitialized: boolean, expectedVersion?: number): number | undefined {
    return this.writeServer(
      id,
      "status_json = ?, phase = ?, data_initialized = ?",
      [toJsonString(ServerStatusSchema, status), Phase[status.phase] ?? "UNSPECIFIED", dataInitialized ? 1 : 0],
      expectedVersion,
    );
  }

  updateLifecycle(id: string, lifecycle: Lifecycle, expectedVersion?: number): number | undefined {
    return this.writeServer(id, "lifecycle_json = ?", [JSON.stringify(lifecycle)], expectedVersion);
  }

  /** Forgets whether data was ever seen (StartServer with allow_empty_data). */
  resetDataInitialized(id: string, expectedVersion?: number): number | undefined {
    return this.writeServer(id, "data_initialized = 0", [], expectedVersion);
  }

  /** One UPDATE of a server row that increments its version, checked against `expectedVersion` when given. */
  private writeServer(id: string, set: string, args: unknown[], expectedVersion: number | undefined): number | undefined {
    const checked = expectedVersion !== undefined;
    const row = this.db
      .prepare(`UPDATE servers SET ${set}, version = version + 1 WHERE id = ?${checked ? " AND version = ?" : ""} RETURNING version`)
      .get(...args, id, ...(checked ? [expectedVersion] : [])) as { version: number | bigint } | undefined;
    if (row) return Number(row.version);
    if (!checked) return undefined;
    const now = this.db.prepare("SELECT name, version FROM servers WHERE id = ?").get(id) as { name: string; version: number | bigint } | undefined;
    if (!now) throw new NotFoundError("server", id, "it was purged; list servers with ServerService.ListServers");
    throw new ConflictError(`server "${now.name}" was changed by someone else (version ${Number(now.version)}, expected ${expectedVersion}): read it again and retry`);
  }

  /**
   * Makes `ports` the host ports `serverId` holds on `hostId`. The primary key
   * (host_id, protocol, host_port) is the domain's conflict rule
   * (findPortConflicts: same host port and protocol on one host, protocol
   * unspecified meaning tcp; no host IP is modelled, Docker binds every
   * address), held across managers. The friendly check with suggested ports
   * (api/port-check.ts) runs first; this is the backstop.
   */
  private reservePorts(serverId: string, hostId: string, ports: readonly PortMapping[]): void {
    this.db.prepare("DELETE FROM server_ports WHERE server_id = ?").run(serverId);
    const insert = this.db.prepare("INSERT INTO server_ports (host_id, protocol, host_port, server_id) VALUES (?, ?, ?, ?)");
    // A port the spec maps twice is still one reservation.
    for (const key of new Set(ports.map((p) => `${p.hostPort}/${p.protocol === Protocol.UDP ? "udp" : "tcp"}`))) {
      const [port, protocol] = key.split("/") as [string, string];
      try {
        insert.run(hostId, protocol, Number(port), serverId);
      } catch (err) {
        if (isUniqueViolation(err, "server_ports.")) {
          throw new PreconditionError(`port conflict on host ${hostId}: host port ${key} is already taken by another server; choose another host port (or free this one) and retry`);
        }
        throw err;
      }
    }
  }

  /** Deletes the record and what goes with it; returns where it lived (for its tombstone), undefined when there was none. */
  deleteServerRecord(id: string): { project: string; hostId: string } | undefined {
    return this.transaction(() => {
      const gone = this.db.prepare("DELETE FROM servers WHERE id = ? RETURNING project, host_id").get(id) as { project: string; host_id: string } | undefined;
      this.db.prepare("DELETE FROM server_ports WHERE server_id = ?").run(id);
      this.db.prepare("DELETE FROM data_dirs WHERE server_id = ?").run(id);
      // Nothing may be resent for a server that no longer exists, and its finished
      // commands have nothing left to explain: all go with the record, so retention
      // need not look for commands of missing servers on every pass.
      this.db.prepare("DELETE FROM commands WHERE server_id = ?").run(id);
      this.db.prepare("DELETE FROM install_logs WHERE server_id = ?").run(id);
      return gone && { project: gone.project, hostId: gone.host_id };
    });
  }

  // --- install logs (migration 17; store.ts installLog.record, installLogs) ---

  /** store.ts installLog.record. */
  recordInstallLog(r: InstallLogRecord): void {
    const cols = INSTALL_LOG_COLUMNS;
    this.db
      .prepare(`INSERT INTO install_logs (${cols.join(", ")}) VALUES (${cols.map(() => "?").join(", ")}) ON CONFLICT (server_id, attempt) DO UPDATE SET ${cols.slice(2).map((c) => `${c} = excluded.${c}`).join(", ")}`)
      .run(...installLogValues(r));
    this.db
      .prepare(`DELETE FROM install_logs WHERE server_id = ? AND attempt NOT IN (SELECT attempt FROM install_logs WHERE server_id = ? ORDER BY attempt DESC LIMIT ${INSTALL_LOGS_KEPT})`)
      .run(r.serverId, r.serverId);
  }

  installLogs(serverId: string): InstallLogRecord[] {
    return (this.db.prepare("SELECT * FROM install_logs WHERE server_id = ? ORDER BY attempt DESC").all(serverId) as InstallLogRow[]).map(installLogFromRow);
  }

  // --- the order of server changes (migration 10; store.ts serverChangesSince) ---

  /** store.ts serverChangeHead. */
  serverChangeHead(): number {
    return Number(this.getMeta(SERVER_CHANGE_COUNTER) ?? 0);
  }

  /**
   * Gives each server a batch wrote the next change positions (inside the
   * batch's transaction; SQLite has one writer, so they follow commit
   * order): its record, or a tombstone for one the batch purged (`purged`).
   * Drops the oldest tombstones beyond SERVER_TOMBSTONES_KEPT and moves the
   * horizon past them.
   */
  stampServerChanges(ids: Iterable<string>, purged: ReadonlyMap<string, { project: string; hostId: string }>): void {
    let next = this.serverChangeHead();
    const stamp = this.db.prepare("UPDATE servers SET change_seq = ? WHERE id = ?");
    const bury = this.db.prepare(
      "INSERT INTO server_tombstones (server_id, project, host_id, change_seq) VALUES (?, ?, ?, ?) ON CONFLICT (server_id) DO UPDATE SET change_seq = excluded.change_seq",
    );
    for (const id of ids) {
      const p = purged.get(id);
      if (p) bury.run(id, p.project, p.hostId, ++next);
      else stamp.run(++next, id);
    }
    this.setMeta(SERVER_CHANGE_COUNTER, String(next));
    if (purged.size === 0) return;
    const dropped = this.db
      .prepare(
        `DELETE FROM server_tombstones WHERE change_seq <= (SELECT change_seq FROM server_tombstones ORDER BY change_seq DESC LIMIT 1 OFFSET ${SERVER_TOMBSTONES_KEPT}) RETURNING change_seq`,
      )
      .all() as { change_seq: number | bigint }[];
    if (dropped.length > 0) this.setMeta(SERVER_CHANGES_HORIZON, String(Math.max(...dropped.map((d) => Number(d.change_seq)))));
  }

  /** store.ts serverChangesSince; `decode` turns a row into its record (the store's cache may hold it already). */
  serverChangesSince(after: number, limit: number, decode?: (r: ServerRow) => ServerRecord): ServerChangeRecord[] | undefined {
    if (after < Number(this.getMeta(SERVER_CHANGES_HORIZON) ?? 0)) return undefined;
    const n = Math.max(1, Math.floor(limit));
    const live = this.db.prepare(`SELECT * FROM servers WHERE change_seq > ? ORDER BY change_seq LIMIT ${n}`).all(after) as ServerRow[];
    const gone = this.db.prepare(`SELECT * FROM server_tombstones WHERE change_seq > ? ORDER BY change_seq LIMIT ${n}`).all(after) as TombstoneRow[];
    return serverChangesFromRows(live, gone, n, decode);
  }

  // --- observations -------------------------------------------------------------

  /**
   * Makes `containers` and `dataDirs` the complete picture of a host: anything
   * previously observed there and not in the list is gone. Returns the ids of
   * every server whose observation may have changed.
   *
   * `keep`: servers observed after this inventory was taken (ObservationOrder):
   * their containers and data directory stay as they are, whatever it says.
   */
  replaceHostInventory(
    hostId: string,
    containers: ContainerInfo[],
    dataDirs: DataDirRecord[],
    now: number,
    dataRootEntries?: DataRootEntry[],
    keep: ReadonlySet<string> = new Set(),
  ): Set<string> {
    return this.transaction(() => {
      if (dataRootEntries) this.replaceDataRootEntries(hostId, dataRootEntries, now);
      // Only servers whose observation differs from the last report count as touched:
      // a periodic inventory of an unchanged host then costs no reconcile at all
      // (at 5,000 hosts × 20 servers every 30 s, reconciling everything took more
      // than the manager's whole CPU; docs/benchmarks.md).
      const before = new Map<string, { serverId: string | null; json: string }>();
      for (const r of this.db
        .prepare("SELECT container_id, server_id, info_json FROM observed_containers WHERE host_id = ?")
        .all(hostId) as { container_id: string; server_id: string | null; info_json: string }[]) {
        before.set(r.container_id, { serverId: r.server_id, json: r.info_json });
      }
      const touched = new Set<string>();
      if (keep.size === 0) {
        this.db.prepare("DELETE FROM observed_containers WHERE host_id = ?").run(hostId);
      } else {
        const del = this.db.prepare("DELETE FROM observed_containers WHERE host_id = ? AND container_id = ?");
        for (const [id, old] of before) {
          if (old.serverId && keep.has(old.serverId)) before.delete(id);
          else del.run(hostId, id);
        }
      }
      for (const c of containers) {
        if (keep.has(c.labels[LABEL_SERVER] ?? "")) continue;
        const json = toJsonString(ContainerInfoSchema, c);
        const sid = this.writeContainer(hostId, c, json, now);
        const old = before.get(c.id);
        before.delete(c.id);
        if (old?.serverId && old.serverId !== sid) touched.add(old.serverId);
        if (sid && (old?.serverId !== sid || old.json !== json)) touched.add(sid);
      }
      // Gone since the last report.
      for (const old of before.values()) if (old.serverId) touched.add(old.serverId);
      // The agent lists every directory under its data root: a known server's
      // directory that is not listed is gone.
      const reported = new Set<string>();
      for (const reportedDir of dataDirs) {
        if (keep.has(reportedDir.serverId)) continue;
        const known = this.getDataDir(hostId, reportedDir.serverId);
        const d = withKnownSize(reportedDir, known);
        this.upsertDataDir(d);
        reported.add(d.serverId);
        if (!known || known.present !== d.present || known.sizeBytes !== d.sizeBytes) touched.add(d.serverId);
      }
      const onHost = new Set(this.serverIdsOnHost(hostId));
      for (const serverId of onHost) {
        if (reported.has(serverId) || keep.has(serverId)) continue;
        const known = this.getDataDir(hostId, serverId);
        if (known && !known.present) continue;
        this.upsertDataDir({ hostId, serverId, present: false, sizeBytes: 0, checkedAt: now });
        touched.add(serverId);
      }
      // Checks of directories of no server here (an untracked container's data, kept
      // for AdoptOrphan) last only while the host lists them.
      const forget = this.db.prepare("DELETE FROM data_dirs WHERE host_id = ? AND server_id = ?");
      for (const { server_id: serverId } of this.db.prepare("SELECT server_id FROM data_dirs WHERE host_id = ?").all(hostId) as { server_id: string }[]) {
        if (!reported.has(serverId) && !keep.has(serverId) && !onHost.has(serverId)) forget.run(hostId, serverId);
      }
      return touched;
    });
  }

  /** Records one container's current state; returns its berth server id, if any. */
  upsertContainer(hostId: string, c: ContainerInfo, now: number): string | null {
    return this.writeContainer(hostId, c, toJsonString(ContainerInfoSchema, c), now, true);
  }

  /**
   * upsertContainer with the container's JSON already made. `ordered`: not
   * over an observation of a newer run (rows.ts, containerRunKey); an
   * inventory (unordered) replaces what it lists, its order with events and
   * results kept by the agent link (link/observation-order.ts).
   */
  private writeContainer(hostId: string, c: ContainerInfo, json: string, now: number, ordered = false): string | null {
    const serverId = c.labels[LABEL_SERVER] || null;
    this.db
      .prepare(ordered ? UPSERT_CONTAINER_ORDERED : UPSERT_CONTAINER)
      .run(hostId, c.id, serverId, c.labels[LABEL_MANAGER] || null, c.state, json, now, containerRunKey(c));
    return serverId;
  }

  /** Forgets a container that no longer exists; returns its server id, if any. */
  removeContainer(hostId: string, containerId: string): string | null {
    const row = this.db
      .prepare("DELETE FROM observed_containers WHERE host_id = ? AND container_id = ? RETURNING server_id")
      .get(hostId, containerId) as { server_id: string | null } | undefined;
    return row?.server_id ?? null;
  }

  /**
   * Forgets every container of `serverId` on `hostId` (this manager's and
   * any other's labelled for it), and the adopted unlabelled one if given:
   * a successful ensure-removed says none of them exists any more.
   */
  removeServerContainers(hostId: string, serverId: string, adoptedContainerId?: string): void {
    this.db.prepare("DELETE FROM observed_containers WHERE host_id = ? AND server_id = ?").run(hostId, serverId);
    if (adoptedContainerId) this.removeContainer(hostId, adoptedContainerId);
  }

  /** Makes `entries` the directories under the host's data root (the last inventory's list). */
  replaceDataRootEntries(hostId: string, entries: DataRootEntry[], now: number): void {
    this.db.prepare("DELETE FROM data_root_entries WHERE host_id = ?").run(hostId);
    const insert = this.db.prepare("INSERT INTO data_root_entries (host_id, name, size_bytes, observed_at) VALUES (?, ?, ?, ?) ON CONFLICT (host_id, name) DO NOTHING");
    for (const e of entries) insert.run(hostId, e.name, e.sizeBytes, now);
  }

  /** Directories under data roots, as last listed (every host, or one). */
  listDataRootEntries(hosts?: string | HostRange): (DataRootEntry & { hostId: string })[] {
    const range = typeof hosts === "string" ? undefined : (hosts ?? { from: "" });
    const rows = (typeof hosts === "string"
      ? this.db.prepare("SELECT host_id, name, size_bytes FROM data_root_entries WHERE host_id = ? ORDER BY name").all(hosts)
      : this.db
          .prepare("SELECT host_id, name, size_bytes FROM data_root_entries WHERE host_id >= ? AND (? IS NULL OR host_id < ?) ORDER BY host_id, name")
          .all(range!.from, range!.to ?? null, range!.to ?? null)) as { host_id: string; name: string; size_bytes: number }[];
    return rows.map((r) => ({ hostId: r.host_id, name: r.name, sizeBytes: r.size_bytes }));
  }

  /** Forgets one directory under a host's data root (it was removed). */
  removeDataRootEntry(hostId: string, name: string): void {
    this.db.prepare("DELETE FROM data_root_entries WHERE host_id = ? AND name = ?").run(hostId, name);
  }

  /**
   * Observed containers that are not simply a server's own (labelled by
   * `managerId` for a server on the same host): the candidates for orphans.
   * Containers without berth labels only with `includeUnlabelled`.
   */
  listOrphanCandidates(managerId: string, includeUnlabelled: boolean, range: HostRange = { from: "" }): ObservedContainer[] {
    const rows = this.db
      .prepare(
        `SELECT * FROM observed_containers o
         WHERE o.host_id >= ? AND (? IS NULL OR o.host_id < ?)
           AND NOT (o.manager_id = ? AND EXISTS (SELECT 1 FROM servers s WHERE s.id = o.server_id AND s.host_id = o.host_id))
           AND (? = 1 OR o.server_id IS NOT NULL OR o.manager_id IS NOT NULL)
         ORDER BY o.host_id, o.container_id`,
      )
      .all(range.from, range.to ?? null, range.to ?? null, managerId, includeUnlabelled ? 1 : 0) as ObservedRow[];
    return rows.map(observedFromRow);
  }

  /** One observed container by its Docker id. */
  observedContainer(hostId: string, containerId: string): ObservedContainer | undefined {
    const row = this.db.prepare("SELECT * FROM observed_containers WHERE host_id = ? AND container_id = ?").get(hostId, containerId) as ObservedRow | undefined;
    return row && observedFromRow(row);
  }

  /**
   * Every server record (soft-deleted ones too) with just what orphan
   * detection needs; plain JSON reads, cheap enough for every alert run.
   */
  serverPlacements(page?: IdPage): ServerPlacement[] {
    const rows = (
      page
        ? this.db.prepare(`SELECT id, project, name, host_id, created_at, spec_json, lifecycle_json FROM servers WHERE id > ? ORDER BY id LIMIT ${pageLimit(page)}`).all(page.after)
        : this.db.prepare("SELECT id, project, name, host_id, created_at, spec_json, lifecycle_json FROM servers").all()
    ) as {
      id: string;
      project: string;
      name: string;
      host_id: string;
      created_at: number;
      spec_json: string;
      lifecycle_json: string;
    }[];
    return rows.map(placementOfRow);
  }

  /** Servers with a command pending or sent. */
  serverIdsWithOpenCommands(): Set<string> {
    const rows = this.db.prepare("SELECT DISTINCT server_id FROM commands WHERE state IN ('pending', 'sent')").all() as { server_id: string }[];
    return new Set(rows.map((r) => r.server_id));
  }

  /** Containers on `hostId` labelled as belonging to `serverId` (normally zero or one). */
  containersForServer(hostId: string, serverId: string): ObservedContainer[] {
    const rows = this.db
      .prepare("SELECT * FROM observed_containers WHERE host_id = ? AND server_id = ? ORDER BY observed_at")
      .all(hostId, serverId) as ObservedRow[];
    return rows.map((r) => ({
      hostId: r.host_id,
      containerId: r.container_id,
      serverId: r.server_id,
      managerId: r.manager_id,
      state: r.state,
      info: fromJsonString(ContainerInfoSchema, r.info_json, { ignoreUnknownFields: true }),
      observedAt: r.observed_at,
    }));
  }

  upsertDataDir(d: DataDirRecord): void {
    this.db
      .prepare(
        `INSERT INTO data_dirs (host_id, server_id, present, size_bytes, checked_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (host_id, server_id) DO UPDATE SET
           present = excluded.present, size_bytes = excluded.size_bytes, checked_at = excluded.checked_at`,
      )
      .run(d.hostId, d.serverId, d.present ? 1 : 0, d.sizeBytes, d.checkedAt);
  }

  getDataDir(hostId: string, serverId: string): DataDirRecord | undefined {
    const row = this.db.prepare("SELECT * FROM data_dirs WHERE host_id = ? AND server_id = ?").get(hostId, serverId) as
      | { host_id: string; server_id: string; present: number; size_bytes: number; checked_at: number }
      | undefined;
    return (
      row && {
        hostId: row.host_id,
        serverId: row.server_id,
        present: row.present === 1,
        sizeBytes: row.size_bytes,
        checkedAt: row.checked_at,
      }
    );
  }

  // --- commands -----------------------------------------------------------------

  insertCommand(c: { command: Command; hostId: string; createdAt: number; deadlineAt: number }): CommandRecord {
    const rec: CommandRecord = {
      id: c.command.id,
      serverId: c.command.serverId,
      hostId: c.hostId,
      command: c.command,
      state: "pending",
      createdAt: c.createdAt,
      deadlineAt: c.deadlineAt,
      sentAt: null,
      finishedAt: null,
      reason: null,
      message: null,
    };
    try {
      this.db
        .prepare(
          `INSERT INTO commands (id, server_id, host_id, kind, payload, state, created_at, deadline_at)
           VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)`,
        )
        .run(rec.id, rec.serverId, rec.hostId, String(c.command.kind), toBinary(CommandSchema, c.command), rec.createdAt, rec.deadlineAt);
    } catch (err) {
      // commands_one_open (migration 7): one operation at a time per server, whichever
      // manager or code path issues it. The reconciler re-reads and retries.
      if (isUniqueViolation(err, "commands.server_id")) {
        const open = this.openCommandForServer(rec.serverId);
        throw new ConflictError(`server ${rec.serverId} already has an open command${open ? ` (${open.id})` : ""}; wait for it to finish or expire, then retry`);
      }
      throw err;
    }
    return rec;
  }

  getCommand(id: string): CommandRecord | undefined {
    const row = this.db.prepare("SELECT * FROM commands WHERE id = ?").get(id) as CommandRow | undefined;
    return row && commandFromRow(row);
  }

  markCommandSent(id: string, now: number): void {
    this.db.prepare("UPDATE commands SET state = 'sent', sent_at = ? WHERE id = ? AND state IN ('pending', 'sent')").run(now, id);
  }

  /** Finishes an open command; returns false if it was already finished (a replayed result). */
  finishCommand(id: string, state: "succeeded" | "failed" | "expired", now: number, reason: string, message: string): boolean {
    const r = this.db
      .prepare(
        "UPDATE commands SET state = ?, finished_at = ?, reason = ?, message = ? WHERE id = ? AND state IN ('pending', 'sent')",
      )
      .run(state, now, reason, message, id);
    return r.changes === 1;
  }

  /** The server's unfinished command, if any (at most one: commands_one_open). */
  openCommandForServer(serverId: string): CommandRecord | undefined {
    const row = this.db
      .prepare("SELECT * FROM commands WHERE server_id = ? AND state IN ('pending', 'sent') ORDER BY created_at DESC LIMIT 1")
      .get(serverId) as CommandRow | undefined;
    return row && commandFromRow(row);
  }

  /** The server's most recently finished command, if any. */
  lastFinishedCommand(serverId: string): CommandRecord | undefined {
    const row = this.db
      .prepare(
        "SELECT * FROM commands WHERE server_id = ? AND state NOT IN ('pending', 'sent') ORDER BY finished_at DESC, created_at DESC LIMIT 1",
      )
      .get(serverId) as CommandRow | undefined;
    return row && commandFromRow(row);
  }

  openCommandsForHost(hostId: string): CommandRecord[] {
    return (
      this.db
        .prepare("SELECT * FROM commands WHERE host_id = ? AND state IN ('pending', 'sent') ORDER BY created_at")
        .all(hostId) as CommandRow[]
    ).map(commandFromRow);
  }

  // --- retention ----------------------------------------------------------------

  /**
   * Deletes up to `limit` finished commands that finished before `before`,
   * except each server's latest finished one (a failure stands on it until the
   * operator acts: plan() reads it). Open commands are never touched. A purged
   * server's commands go with its record (deleteServerRecord; migration 6 removed
   * those older versions left behind). Returns the count.
   */
  pruneFinishedCommands(before: number, limit: number): number {
    const r = this.db
      .prepare(
        `DELETE FROM commands WHERE id IN (
           SELECT c.id FROM commands c
           WHERE c.state IN ('succeeded', 'failed', 'expired')
             AND c.finished_at < ? AND EXISTS (
               SELECT 1 FROM commands n
               WHERE n.server_id = c.server_id AND n.state IN ('succeeded', 'failed', 'expired')
                 AND (n.finished_at > c.finished_at OR (n.finished_at = c.finished_at AND n.created_at > c.created_at)))
           LIMIT ?)`,
      )
      .run(before, Math.floor(limit));
    return r.changes;
  }

  /**
   * Deletes up to `limit` enrollment tokens used or expired before `before`
   * (neither can enroll anything any more). Returns the count.
   */
  pruneEnrollmentTokens(before: number, limit: number): number {
    const r = this.db
      .prepare(
        `DELETE FROM enrollment_tokens WHERE id IN (
           SELECT id FROM enrollment_tokens WHERE (used_at IS NOT NULL AND used_at < ?) OR expires_at < ? LIMIT ?)`,
      )
      .run(before, before, Math.floor(limit));
    return r.changes;
  }

  // --- events -------------------------------------------------------------------

  appendEvent(e: EventInput, now: number): number {
    const r = this.db
      .prepare(
        `INSERT INTO events (time, project, server_id, host_id, type, reason, message, actor, correlation_id, payload_json)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        now,
        e.project ?? "",
        e.serverId ?? "",
        e.hostId ?? "",
        e.type,
        e.reason ?? "",
        e.message ?? "",
        e.actor ?? "",
        e.correlationId ?? "",
        JSON.stringify(e.payload ?? {}),
      );
    return Number(r.lastInsertRowid);
  }

  listEvents(f: { serverId?: string; afterId?: number; limit?: number } = {}): EventRecord[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (f.serverId) {
      where.push("server_id = ?");
      args.push(f.serverId);
    }
    if (f.afterId !== undefined) {
      where.push("id > ?");
      args.push(f.afterId);
    }
    const sql =
      "SELECT * FROM events" + (where.length ? ` WHERE ${where.join(" AND ")}` : "") + ` ORDER BY id LIMIT ${f.limit ?? 1000}`;
    return (this.db.prepare(sql).all(...args) as EventRow[]).map(eventFromRow);
  }

  // --- host limits and removal (issue 14: what one host can make the manager store) ---

  /** How many containers are stored for a host, and how many of them are labelled for no server of that host. */
  observedCounts(hostId: string): { total: number; other: number } {
    const r = this.db
      .prepare(
        `SELECT COUNT(*) AS total,
                COALESCE(SUM(CASE WHEN o.server_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM servers s WHERE s.id = o.server_id AND s.host_id = o.host_id) THEN 1 ELSE 0 END), 0) AS other
         FROM observed_containers o WHERE o.host_id = ?`,
      )
      .get(hostId) as { total: number; other: number };
    return { total: Number(r.total), other: Number(r.other) };
  }

  /**
   * Deletes every row a removed host left behind: its observed containers,
   * data-directory checks, data-root entries, commands, and the alerts about
   * the host itself or orphans on it. Server records stay (they become
   * stranded orphans). Returns the number of rows deleted.
   */
  deleteHostRows(hostId: string): number {
    return this.transaction(() => {
      let n = 0;
      for (const table of ["observed_containers", "data_dirs", "data_root_entries", "commands"]) {
        n += this.db.prepare(`DELETE FROM ${table} WHERE host_id = ?`).run(hostId).changes;
      }
      const orphanPrefix = `orphan:${hostId}/`;
      n += this.db
        .prepare("DELETE FROM alerts WHERE subject = ? OR substr(subject, 1, length(?)) = ?")
        .run(`host:${hostId}`, orphanPrefix, orphanPrefix).changes;
      return n;
    });
  }
}

/**
 * A UNIQUE or PRIMARY KEY violation naming `columns` (SQLite's message lists
 * "table.column" for each column of the constraint).
 */
export function isUniqueViolation(err: unknown, columns: string): boolean {
  const e = err as { code?: unknown; message?: unknown } | null;
  return (
    (e?.code === "SQLITE_CONSTRAINT_UNIQUE" || e?.code === "SQLITE_CONSTRAINT_PRIMARYKEY") &&
    typeof e.message === "string" &&
    e.message.includes(columns)
  );
}
