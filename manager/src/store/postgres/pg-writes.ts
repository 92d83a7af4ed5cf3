/**
 * The write operations of a batch (store.ts WriteOp) on PostgreSQL, applied
 * on the one client that holds the batch's transaction. The behaviour is
 * SqliteTables' (sqlite/tables.ts and its siblings), statement for statement
 * where it can be: same preconditions, same typed errors, same messages.
 *
 * Two differences follow from PostgreSQL running transactions concurrently
 * (SQLite runs one writer at a time):
 *  - a read a write depends on locks its row (`FOR UPDATE` / `FOR SHARE`), so
 *    what was read cannot change before COMMIT (server.check, the spec's
 *    previous ports, a host's facts);
 *  - unique constraints are the invariants' backstop across managers: a
 *    violation (23505) is mapped by its constraint name (migrations.ts spells
 *    them) to the error SQLite raises for the same rule. After a violation the
 *    transaction is aborted, so nothing more may be asked of it: the open
 *    command's id for commands_one_open's message is looked up after ROLLBACK
 *    (OpenCommandTaken).
 */
import {
  RunUnderWayError,
  SCHEDULE_COLUMNS,
  SCHEDULE_RUN_COLUMNS,
  scheduleRunValues,
  scheduleValues,
  TickClaimedError,
  type ScheduleRecord,
  type ScheduleRunRecord,
} from "../../schedules/records.js";
import { scheduleNameTaken } from "../sqlite/schedule-tables.js";
import { toBinary, toJsonString } from "@bufbuild/protobuf";
import { CommandSchema, ContainerInfoSchema, type ContainerInfo } from "@berth/proto/berth/v1/agent_pb.js";
import { Phase, Protocol, ServerSpecSchema, ServerStatusSchema, type PortMapping, type ServerSpec } from "@berth/proto/berth/v1/server_pb.js";
import type pg from "pg";
import { AlreadyExistsError, ConflictError, HostOwnershipLostError, LeaseHeldError, NotFoundError, PreconditionError, ServerNameTakenError } from "../../errors.js";
import type { BackupRecord, BackupState, DataDirRecord, DataRootEntry, EventRecord, HostFacts, NewServerRecord } from "../../domain/records.js";
import { LABEL_MANAGER, LABEL_SERVER } from "../../domain/labels.js";
import {
  alertAlreadyFiring,
  BACKUP_TARGET_COLUMNS,
  backupColumns,
  backupLocked,
  backupSetColumns,
  backupStateMoved,
  backupTaken,
  backupTargetTaken,
  backupTargetValues,
  deliveryMoved,
  encodeSchedule,
  portKeys,
  portKeysOfSpecJson,
  checkUsageBucket,
  sortedUsageBuckets,
  USAGE_COLUMNS,
  usageUpsertClause,
  withKnownSize,
  TEMPLATE_COLUMNS,
  INSTALL_LOG_COLUMNS,
  installLogValues,
  templateJson,
  templateMoved,
  templateTaken,
  templateValues,
  containerRunKey,
  ORDERED_UPSERT,
} from "../rows.js";
import { sealSpec, type SecretBox } from "../secrets.js";
import { hostLeaseName, INSTALL_LOGS_KEPT, USAGE_BUCKET_MS, USAGE_SPAN_MAX_MS, type UsageBucketRecord, type UsageSubjectKind, type WriteOp } from "../store.js";
import { isUniqueViolation } from "./pool.js";
import { SAVED_QUERY_COLUMNS, savedQueryMoved, savedQueryNameTaken, savedQueryValues, type SavedQueryRecord } from "../../query/saved-records.js";

/** What one batch did so far (filled while it runs, reported once it committed). */
export interface Effects {
  versions: Map<string, number>;
  events: EventRecord[];
  touched: Set<string>;
  /** Servers whose record the batch wrote (not merely named by an event). */
  serverIds: Set<string>;
  /** Servers the batch purged, with where they lived (their tombstones). */
  purged: Map<string, { project: string; hostId: string }>;
  hostIds: Set<string>;
  /** host.take's new epochs, by lease name. */
  leaseEpochs: Map<string, number>;
  /** Tokens inserted or revoked (Committed.tokenIds; sent in the commit notice). */
  tokenIds: Set<string>;
  /** Pending deliveries webhook.enqueue dropped to stay within its cap. */
  droppedDeliveries: { id: string; urlKey: string }[];
}

export function newEffects(): Effects {
  return { versions: new Map(), events: [], touched: new Set(), serverIds: new Set(), purged: new Map(), hostIds: new Set(), leaseEpochs: new Map(), tokenIds: new Set(), droppedDeliveries: [] };
}

/**
 * commands_one_open refused a command: the batch's transaction is aborted, so
 * the store looks up the open command after ROLLBACK and throws the
 * ConflictError SQLite throws (toConflict).
 */
export class OpenCommandTaken extends Error {
  override readonly name = "OpenCommandTaken";
  constructor(readonly serverId: string) {
    super(`server ${serverId} already has an open command`);
  }

  toConflict(openId: string | undefined): ConflictError {
    return new ConflictError(`server ${this.serverId} already has an open command${openId ? ` (${openId})` : ""}; wait for it to finish or expire, then retry`);
  }
}

/**
 * The first key of the two-int advisory locks of hosts (lockInOrder; the
 * second is hashtext(host id)). The ledger's and the migrator's locks are
 * single int8 keys, a key space PostgreSQL keeps apart from two-int keys.
 */
const HOST_LOCK_SPACE = 0x62657274; // "bert"

/** The host whose observations or row an operation writes, if it is one of those. */
function hostOf(o: WriteOp): string | undefined {
  switch (o.op) {
    case "container.upsert":
    case "container.remove":
    case "container.removeServer":
    case "host.inventory":
    case "dataRootEntry.remove":
    // Host ownership too: a take and a fenced batch of the same host then lock in one order (host, then the lease row).
    case "host.take":
    case "host.renew":
    case "host.release":
    case "host.checkOwner":
      return o.hostId;
    case "dataDir.upsert":
      return o.dataDir.hostId;
    case "host.connected":
    case "host.heartbeat":
    case "host.offline":
    case "host.remove":
    case "host.schedule":
      return o.id;
    default:
      return undefined;
  }
}

/** Operations that write or lock one row: alone in a batch they cannot deadlock (lockInOrder). */
const SINGLE_ROW_OPS: ReadonlySet<WriteOp["op"]> = new Set([
  "server.status",
  "server.lifecycle",
  "server.resetDataInitialized",
  "server.check",
  "container.upsert",
  "container.remove",
  "dataDir.upsert",
  "dataRootEntry.remove",
  "host.connected",
  "host.heartbeat",
  "host.offline",
  "host.schedule",
  "command.sent",
  "command.finish",
  "host.take",
  "host.renew",
  "host.release",
  "host.checkOwner",
]);

/** Operations on an existing server row, named by `id` (lockInOrder). */
const SERVER_ROW_OPS: ReadonlySet<WriteOp["op"]> = new Set(["server.spec", "server.status", "server.lifecycle", "server.resetDataInitialized", "server.check", "server.delete"]);

/** The non-event operations of one batch, in order, on a client inside BEGIN. */
export class PgBatch {
  constructor(
    private readonly c: pg.ClientBase,
    private readonly secrets: SecretBox | undefined,
    readonly fx: Effects = newEffects(),
  ) {}

  private async q<R extends pg.QueryResultRow = Record<string, never>>(sql: string, args: unknown[] = []): Promise<pg.QueryResult<R>> {
    return this.c.query<R>(sql, args);
  }

  /**
   * Takes, before any operation runs and always in the same order, the locks a
   * batch of several writes would otherwise take in the order of its
   * operations: first each host it observes or updates (a transaction-level
   * advisory lock per host, in the order of the keys), then the server rows it
   * writes or checks (`FOR UPDATE`, in id order). Without it two batches
   * touching the same rows in opposite orders (two servers, two containers of
   * a host, a FOR SHARE check then an update) each hold a row the other waits
   * for: a deadlock the database breaks after deadlock_timeout by aborting one.
   * A host's observation writes come from its agent, so serialising them
   * costs nothing SQLite's single writer does not. A batch of one single-row
   * operation has no order to get wrong and pays no extra round trip. Rows no
   * order covers here (commands, alerts, ports) are left to commit's retry.
   */
  async lockInOrder(ops: readonly WriteOp[]): Promise<void> {
    const applied = ops.filter((o) => o.op !== "event.append");
    if (applied.length === 0 || (applied.length === 1 && SINGLE_ROW_OPS.has(applied[0]!.op))) return;
    const hosts = new Set<string>();
    const servers = new Set<string>();
    for (const o of applied) {
      const host = hostOf(o);
      if (host !== undefined) hosts.add(host);
      if (SERVER_ROW_OPS.has(o.op)) servers.add((o as { id: string }).id);
    }
    if (hosts.size > 0) {
      await this.q(
        `SELECT pg_advisory_xact_lock(${HOST_LOCK_SPACE}, k) FROM (SELECT DISTINCT hashtext(h) AS k FROM unnest($1::text[]) AS t(h) ORDER BY k) AS keys`,
        [[...hosts]],
      );
    }
    if (servers.size > 0) await this.q("SELECT 1 FROM servers WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE", [[...servers]]);
  }

  async apply(o: Exclude<WriteOp, { op: "event.append" }>): Promise<void> {
    const fx = this.fx;
    const version = (id: string, v: number | undefined) => {
      if (v === undefined) throw new NotFoundError("server", id);
      fx.versions.set(id, v);
      fx.serverIds.add(id);
    };
    switch (o.op) {
      case "server.insert":
        await this.insertServer(o.server);
        fx.versions.set(o.server.id, o.server.version ?? 1);
        fx.serverIds.add(o.server.id);
        return;
      case "server.spec":
        return version(o.id, await this.updateServerSpec(o.id, o.spec, o.generation, o.updatedAt, o.deletedAt, o.hostId, o.expectVersion));
      case "server.status":
        return version(
          o.id,
          await this.writeServer(
            o.id,
            "status_json = $1, phase = $2, data_initialized = $3",
            [toJsonString(ServerStatusSchema, o.status), Phase[o.status.phase] ?? "UNSPECIFIED", o.dataInitialized ? 1 : 0],
            o.expectVersion,
          ),
        );
      case "server.lifecycle":
        return version(o.id, await this.writeServer(o.id, "lifecycle_json = $1", [JSON.stringify(o.lifecycle)], o.expectVersion));
      case "server.resetDataInitialized":
        return version(o.id, await this.writeServer(o.id, "data_initialized = 0", [], o.expectVersion));
      case "server.check": {
        // FOR SHARE: the version read stays the version until COMMIT (a concurrent
        // writer waits for this batch), as SQLite's single writer guarantees.
        const { rows } = await this.q<{ name: string; version: number }>("SELECT name, version FROM servers WHERE id = $1 FOR SHARE", [o.id]);
        const s = rows[0];
        if (!s) throw new NotFoundError("server", o.id);
        if (s.version !== o.expectVersion) throw new ConflictError(`server ${s.name} was changed meanwhile (version ${s.version}, expected ${o.expectVersion}): read it again and retry`);
        return;
      }
      case "server.delete": {
        const r = await this.q<{ project: string; host_id: string }>("DELETE FROM servers WHERE id = $1 RETURNING project, host_id", [o.id]);
        const gone = r.rows[0];
        if (!gone) throw new NotFoundError("server", o.id);
        fx.purged.set(o.id, { project: gone.project, hostId: gone.host_id });
        await this.q("DELETE FROM server_ports WHERE server_id = $1", [o.id]);
        await this.q("DELETE FROM data_dirs WHERE server_id = $1", [o.id]);
        // As SqliteTables.deleteServerRecord: nothing may be resent for a server that no longer exists.
        await this.q("DELETE FROM commands WHERE server_id = $1", [o.id]);
        await this.q("DELETE FROM install_logs WHERE server_id = $1", [o.id]);
        await this.deleteUsage("server", o.id);
        fx.serverIds.add(o.id);
        return;
      }
      case "command.insert":
        try {
          await this.q(
            `INSERT INTO commands (id, server_id, host_id, kind, payload, state, created_at, deadline_at)
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7)`,
            [o.command.id, o.command.serverId, o.hostId, String(o.command.kind), Buffer.from(toBinary(CommandSchema, o.command)), o.createdAt, o.deadlineAt],
          );
        } catch (err) {
          // commands_one_open (migration 7): one operation at a time per server, whichever manager issues it.
          if (isUniqueViolation(err, "commands_one_open")) throw new OpenCommandTaken(o.command.serverId);
          throw err;
        }
        return;
      case "command.sent":
        await this.q("UPDATE commands SET state = 'sent', sent_at = $1 WHERE id = $2 AND state IN ('pending', 'sent')", [o.at, o.id]);
        return;
      case "command.finish": {
        const r = await this.q(
          "UPDATE commands SET state = $1, finished_at = $2, reason = $3, message = $4 WHERE id = $5 AND state IN ('pending', 'sent')",
          [o.state, o.at, o.reason, o.message, o.id],
        );
        if (r.rowCount !== 1) throw new ConflictError(`command ${o.id} is no longer open`);
        return;
      }
      case "container.upsert": {
        const sid = await this.writeContainer(o.hostId, o.container, toJsonString(ContainerInfoSchema, o.container), o.at);
        if (sid) fx.touched.add(sid);
        fx.hostIds.add(o.hostId);
        return;
      }
      case "container.remove": {
        const sid = await this.removeContainer(o.hostId, o.containerId);
        if (sid) fx.touched.add(sid);
        fx.hostIds.add(o.hostId);
        return;
      }
      case "container.removeServer":
        await this.q("DELETE FROM observed_containers WHERE host_id = $1 AND server_id = $2", [o.hostId, o.serverId]);
        if (o.adoptedContainerId) await this.removeContainer(o.hostId, o.adoptedContainerId);
        fx.touched.add(o.serverId);
        fx.hostIds.add(o.hostId);
        return;
      case "host.inventory":
        for (const id of await this.replaceHostInventory(o.hostId, o.containers, o.dataDirs, o.at, o.dataRootEntries, new Set(o.keep ?? []))) fx.touched.add(id);
        fx.hostIds.add(o.hostId);
        return;
      case "dataDir.upsert":
        await this.upsertDataDir(o.dataDir);
        fx.touched.add(o.dataDir.serverId);
        return;
      case "dataRootEntry.remove":
        await this.q("DELETE FROM data_root_entries WHERE host_id = $1 AND name = $2", [o.hostId, o.name]);
        fx.hostIds.add(o.hostId);
        return;
      case "host.insert":
        await this.q("INSERT INTO hosts (id, name, secret_hash, created_at) VALUES ($1, $2, $3, $4)", [o.id, o.name, o.secretHash, o.createdAt]);
        fx.hostIds.add(o.id);
        return;
      case "host.connected":
        await this.q(
          "UPDATE hosts SET online = 1, connected_since = $1, last_heartbeat = $1, facts_json = $2, name = COALESCE(NULLIF($3::text, ''), name) WHERE id = $4",
          [o.at, JSON.stringify(o.facts), o.facts.hostname ?? "", o.id],
        );
        fx.hostIds.add(o.id);
        return;
      case "host.heartbeat": {
        // Merged in JS as SQLite does (a key patched to undefined disappears); the row is locked
        // so a concurrent heartbeat's merge is not lost.
        const { rows } = await this.q<{ facts_json: string }>("SELECT facts_json FROM hosts WHERE id = $1 FOR UPDATE", [o.id]);
        if (rows[0]) {
          const facts = { ...(JSON.parse(rows[0].facts_json) as HostFacts), ...o.facts };
          await this.q("UPDATE hosts SET last_heartbeat = $1, facts_json = $2 WHERE id = $3", [o.at, JSON.stringify(facts), o.id]);
        }
        fx.hostIds.add(o.id);
        return;
      }
      case "host.offline":
        await this.q("UPDATE hosts SET online = 0, connected_since = NULL WHERE id = $1", [o.id]);
        fx.hostIds.add(o.id);
        return;
      case "host.offlineUnowned": {
        const r = await this.q<{ id: string }>(
          "UPDATE hosts SET online = 0, connected_since = NULL WHERE online = 1 AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.name = 'host:' || hosts.id AND l.expires_at > $1) RETURNING id",
          [o.at],
        );
        for (const row of r.rows) fx.hostIds.add(row.id);
        return;
      }
      case "host.schedule": {
        const text = encodeSchedule(o.schedule);
        const r =
          o.expect === undefined
            ? await this.q("UPDATE hosts SET schedule_json = $1 WHERE id = $2 AND removed_at IS NULL", [text, o.id])
            : await this.q("UPDATE hosts SET schedule_json = $1 WHERE id = $2 AND removed_at IS NULL AND schedule_json = $3", [text, o.id, encodeSchedule(o.expect)]);
        if (r.rowCount !== 1) {
          const { rows } = await this.q<{ removed_at: number | null }>("SELECT removed_at FROM hosts WHERE id = $1", [o.id]);
          if (!rows[0] || rows[0].removed_at !== null) throw new NotFoundError("host", o.id, "list hosts with HostService.ListHosts");
          throw new ConflictError(`host ${o.id}'s scheduling changed meanwhile (CordonHost, DrainHost, UncordonHost or its drain); read it again`);
        }
        fx.hostIds.add(o.id);
        return;
      }
      case "host.remove": {
        const r = await this.q("UPDATE hosts SET removed_at = $1, online = 0, connected_since = NULL WHERE id = $2 AND removed_at IS NULL", [o.at, o.id]);
        if (r.rowCount !== 1) throw new NotFoundError("host", o.id, "list hosts with HostService.ListHosts");
        await this.deleteHostRows(o.id);
        await this.deleteUsage("host", o.id);
        fx.hostIds.add(o.id);
        return;
      }
      case "enrollment.insert":
        await this.q("INSERT INTO enrollment_tokens (id, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4)", [o.id, o.tokenHash, o.createdAt, o.expiresAt]);
        return;
      case "enrollment.use": {
        const r = await this.q("UPDATE enrollment_tokens SET used_at = $1, used_by = $2 WHERE id = $3 AND used_at IS NULL", [o.at, o.hostId, o.id]);
        if (r.rowCount !== 1) throw new ConflictError("this enrollment token was already used; create a new one");
        return;
      }
      case "alert.insert": {
        const a = o.alert;
        await this.q(
          `INSERT INTO alerts (id, rule, subject, project, host_id, server_id, severity, state, message, first_seen, last_seen,
             resolved_at, acknowledged_by, acknowledged_at, muted_until)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
          [a.id, a.rule, a.subject, a.project, a.hostId, a.serverId, a.severity, a.state, a.message, a.firstSeen, a.lastSeen, a.resolvedAt, a.acknowledgedBy, a.acknowledgedAt, a.mutedUntil],
        ).catch((err: unknown) => {
          // alerts_one_firing (migration 7): another evaluation fired this rule on this subject first.
          throw isUniqueViolation(err, "alerts_one_firing") ? alertAlreadyFiring(a) : err;
        });
        return;
      }
      case "alert.touch":
        await this.q("UPDATE alerts SET last_seen = $1, message = $2, severity = $3 WHERE id = $4 AND state = 'firing'", [o.lastSeen, o.message, o.severity, o.id]);
        return;
      case "alert.resolve": {
        const r = await this.q("UPDATE alerts SET state = 'resolved', resolved_at = $1, last_seen = $1 WHERE id = $2 AND state = 'firing'", [o.at, o.id]);
        if (r.rowCount !== 1) throw new ConflictError(`alert ${o.id} is no longer firing`);
        return;
      }
      case "alert.acknowledge":
        await this.q("UPDATE alerts SET acknowledged_by = $1, acknowledged_at = $2 WHERE id = $3", [o.by, o.at, o.id]);
        return;
      case "alert.mute":
        await this.q("UPDATE alerts SET muted_until = $1 WHERE id = $2", [o.until, o.id]);
        return;
      case "token.insert": {
        const t = o.token;
        if (t.project !== null) await this.ensureProject(t.project, t.createdAt);
        await this.q(
          "INSERT INTO tokens (id, name, role, project, secret_hash, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
          [t.id, t.name, t.role, t.project, o.secretHash, t.createdAt, t.createdBy],
        );
        fx.tokenIds.add(t.id);
        return;
      }
      case "token.revoke": {
        const r = await this.q("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL", [o.at, o.id]);
        if (r.rowCount !== 1) throw new NotFoundError("token", o.id);
        fx.tokenIds.add(o.id);
        return;
      }
      case "token.touch":
        // Throttled by the caller (auth/tokens.ts TokenTouches); a failure fails this batch only.
        await this.q("UPDATE tokens SET last_used_at = $1 WHERE id = $2", [o.at, o.id]);
        return;
      case "project.ensure":
        await this.ensureProject(o.name, o.at);
        return;
      case "lease.acquire":
        await this.acquireLease(o.name, o.holder, o.ttlMs, o.at);
        return;
      case "lease.release":
        await this.q("DELETE FROM leases WHERE name = $1 AND holder = $2", [o.name, o.holder]);
        return;
      case "host.take": {
        // One statement: concurrent takes serialise on the row, each counting on from the one before.
        const name = hostLeaseName(o.hostId);
        const { rows } = await this.q<{ epoch: number }>(
          `INSERT INTO leases AS l (name, holder, epoch, expires_at) VALUES ($1, $2, 1, $3)
           ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, epoch = l.epoch + 1, expires_at = excluded.expires_at
           RETURNING epoch`,
          [name, o.holder, o.at + o.ttlMs],
        );
        fx.leaseEpochs.set(name, Number(rows[0]!.epoch));
        fx.hostIds.add(o.hostId);
        return;
      }
      case "host.renew": {
        const r = await this.q("UPDATE leases SET expires_at = $1 WHERE name = $2 AND holder = $3 AND epoch = $4", [o.at + o.ttlMs, hostLeaseName(o.hostId), o.holder, o.epoch]);
        if (r.rowCount !== 1) throw await this.ownershipLost(o);
        return;
      }
      case "host.release":
        await this.q("UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2 AND epoch = $3", [hostLeaseName(o.hostId), o.holder, o.epoch]);
        fx.hostIds.add(o.hostId);
        return;
      case "host.checkOwner": {
        // FOR SHARE: a take of this host waits until this batch ends (or, committed first, is what this reads).
        const { rows } = await this.q<{ holder: string; epoch: number; expires_at: number }>("SELECT holder, epoch, expires_at FROM leases WHERE name = $1 FOR SHARE", [hostLeaseName(o.hostId)]);
        const cur = rows[0];
        if (!cur || cur.holder !== o.holder || Number(cur.epoch) !== o.epoch || Number(cur.expires_at) <= o.at) throw await this.ownershipLost(o);
        return;
      }
      case "webhook.enqueue": {
        const d = o.delivery;
        await this.q(
          "INSERT INTO webhook_deliveries (id, url_key, body, attempts, next_attempt_at, last_error, created_at) VALUES ($1, $2, $3, 0, $4, '', $5)",
          [d.id, d.urlKey, d.body, d.nextAttemptAt, d.createdAt],
        );
        // As ClusterTables.enqueue: the oldest others beyond the cap go (only the leader enqueues).
        const { rows } = await this.q<{ id: string; url_key: string; created_at: number }>(
          `DELETE FROM webhook_deliveries w USING (
             SELECT id, url_key FROM webhook_deliveries WHERE NOT (id = $1 AND url_key = $2)
             ORDER BY created_at, id, url_key
             LIMIT GREATEST(0, (SELECT COUNT(*) FROM webhook_deliveries) - $3::int)) AS old
           WHERE w.id = old.id AND w.url_key = old.url_key
           RETURNING w.id, w.url_key, w.created_at`,
          [d.id, d.urlKey, Math.max(1, Math.floor(o.maxPending))],
        );
        // RETURNING has no order: oldest first, as SQLite reports them.
        rows.sort((a, b) => Number(a.created_at) - Number(b.created_at) || cmp(a.id, b.id) || cmp(a.url_key, b.url_key));
        fx.droppedDeliveries.push(...rows.map((r) => ({ id: r.id, urlKey: r.url_key })));
        return;
      }
      case "webhook.retry": {
        const r = await this.q(
          "UPDATE webhook_deliveries SET attempts = $1, next_attempt_at = $2, last_error = $3 WHERE id = $4 AND url_key = $5 AND attempts = $6",
          [o.attempt, o.nextAttemptAt, o.lastError, o.id, o.urlKey, o.attempt - 1],
        );
        if (r.rowCount !== 1) throw deliveryMoved(o.id, o.attempt);
        return;
      }
      case "webhook.done": {
        const r = await this.q("DELETE FROM webhook_deliveries WHERE id = $1 AND url_key = $2 AND attempts = $3", [o.id, o.urlKey, o.attempt - 1]);
        if (r.rowCount !== 1) throw deliveryMoved(o.id, o.attempt);
        return;
      }
      case "lease.pruneExpired":
        await this.q("DELETE FROM leases WHERE substr(name, 1, length($1::text)) = $1::text AND expires_at < $2", [o.prefix, o.before]);
        return;
      // Backups are not server writes: no version, no touched server (as SqliteStore).
      case "backupTarget.insert":
        await this.q(`INSERT INTO backup_targets (${BACKUP_TARGET_COLUMNS.join(", ")}) VALUES (${BACKUP_TARGET_COLUMNS.map((_, i) => `$${i + 1}`).join(", ")})`, backupTargetValues(o.target)).catch(
          (err: unknown) => {
            if (isUniqueViolation(err, "backup_targets_name_key")) throw backupTargetTaken(o.target, "name");
            if (isUniqueViolation(err, "backup_targets_pkey")) throw backupTargetTaken(o.target, "id");
            throw err;
          },
        );
        return;
      case "backupTarget.delete": {
        const r = await this.q("DELETE FROM backup_targets WHERE id = $1", [o.id]);
        if (r.rowCount !== 1) throw new NotFoundError("backup target", o.id);
        return;
      }
      case "backup.insert": {
        const cols = backupColumns(o.backup);
        await this.q(`INSERT INTO backups (${cols.map((c) => c.column).join(", ")}) VALUES (${cols.map((_, i) => `$${i + 1}`).join(", ")})`, cols.map((c) => c.value)).catch(
          (err: unknown) => {
            throw isUniqueViolation(err, "backups_pkey") ? backupTaken(o.backup.id) : err;
          },
        );
        return;
      }
      case "backup.update":
        await this.updateBackup(o.id, o.set, o.ifState);
        return;
      case "backup.delete": {
        // Locked: an unlock or a lock committing meanwhile is either before this (read here) or after it.
        const { rows } = await this.q<{ locked: number }>("SELECT locked FROM backups WHERE id = $1 FOR UPDATE", [o.id]);
        const cur = rows[0];
        if (!cur) throw new NotFoundError("backup", o.id);
        if (cur.locked === 1) throw backupLocked(o.id);
        await this.q("DELETE FROM backups WHERE id = $1", [o.id]);
        return;
      }
      case "schedule.insert":
        await this.q(`INSERT INTO schedules (${SCHEDULE_COLUMNS.join(", ")}) VALUES (${SCHEDULE_COLUMNS.map((_, i) => `$${i + 1}`).join(", ")})`, scheduleValues(o.schedule)).catch((err: unknown) => {
          if (isUniqueViolation(err, "schedules_project_name_key")) throw scheduleNameTaken(o.schedule);
          if (isUniqueViolation(err, "schedules_pkey")) throw new AlreadyExistsError(`schedule id ${o.schedule.id} is taken`);
          throw err;
        });
        return;
      case "schedule.update":
        await this.updateSchedule(o.schedule, o.expectVersion);
        return;
      case "savedQuery.insert":
        await this.q(`INSERT INTO saved_queries (${SAVED_QUERY_COLUMNS.join(", ")}) VALUES (${SAVED_QUERY_COLUMNS.map((_, i) => `$${i + 1}`).join(", ")})`, savedQueryValues(o.savedQuery)).catch((err: unknown) => {
          if (isUniqueViolation(err, "saved_queries_project_name_key")) throw savedQueryNameTaken(o.savedQuery);
          throw err;
        });
        return;
      case "savedQuery.update":
        await this.updateSavedQuery(o.savedQuery, o.expectVersion);
        return;
      case "savedQuery.delete": {
        const r = await this.q("DELETE FROM saved_queries WHERE id = $1", [o.id]);
        if (r.rowCount !== 1) throw new NotFoundError("saved query", o.id);
        return;
      }
      case "savedQuery.observe":
        await this.q("UPDATE saved_queries SET rows_since = CASE WHEN $1::bigint > 0 THEN COALESCE(rows_since, $2::bigint) ELSE NULL END, last_rows = $1::bigint, last_first = $3 WHERE id = $4", [o.rows, o.at, o.first, o.id]);
        return;

      case "schedule.delete": {
        const r = await this.q("DELETE FROM schedules WHERE id = $1", [o.id]);
        if (r.rowCount !== 1) throw new NotFoundError("schedule", o.id);
        await this.q("DELETE FROM schedule_runs WHERE schedule_id = $1", [o.id]);
        return;
      }
      case "scheduleRun.insert":
        await this.insertScheduleRun(o.run, o.keep);
        return;
      case "scheduleRun.finish": {
        const { rows } = await this.q<{ outcome: string }>("SELECT outcome FROM schedule_runs WHERE id = $1 FOR UPDATE", [o.id]);
        const cur = rows[0];
        if (!cur) throw new NotFoundError("schedule run", o.id);
        if (cur.outcome !== "running") throw new ConflictError(`schedule run ${o.id} is no longer running (${cur.outcome})`);
        const f = o.finish;
        await this.q("UPDATE schedule_runs SET finished_at = $1, outcome = $2, reason = $3, message = $4, targets_json = $5 WHERE id = $6", [f.finishedAt, f.outcome, f.reason, f.message, JSON.stringify(f.targets), o.id]);
        return;
      }
      case "installLog.record": {
        const cols = INSTALL_LOG_COLUMNS;
        await this.q(
          `INSERT INTO install_logs (${cols.join(", ")}) VALUES (${cols.map((_, i) => `$${i + 1}`).join(", ")}) ON CONFLICT (server_id, attempt) DO UPDATE SET ${cols.slice(2).map((c) => `${c} = excluded.${c}`).join(", ")}`,
          installLogValues(o.log),
        );
        await this.q(`DELETE FROM install_logs WHERE server_id = $1 AND attempt NOT IN (SELECT attempt FROM install_logs WHERE server_id = $1 ORDER BY attempt DESC LIMIT ${INSTALL_LOGS_KEPT})`, [o.log.serverId]);
        return;
      }
      case "usage.write":
        await this.writeUsage(o.buckets, o.pruneBefore, o.pruneLimit);
        return;
      // Templates are not server writes either (as SqliteStore).
      case "template.insert":
        await this.q(`INSERT INTO templates (${TEMPLATE_COLUMNS.join(", ")}) VALUES (${TEMPLATE_COLUMNS.map((_, i) => `$${i + 1}`).join(", ")})`, templateValues(o.template)).catch((err: unknown) => {
          if (isUniqueViolation(err, "templates_project_name_key")) throw templateTaken(o.template, "name");
          if (isUniqueViolation(err, "templates_pkey")) throw templateTaken(o.template, "id");
          throw err;
        });
        return;
      case "template.update": {
        const t = o.template;
        const { rows } = await this.q<{ version: string | number }>("SELECT version FROM templates WHERE id = $1 FOR UPDATE", [t.id]);
        const cur = rows[0];
        if (!cur) throw new NotFoundError("template", t.id);
        if (Number(cur.version) !== o.expectVersion) throw templateMoved(t.id, o.expectVersion, Number(cur.version));
        await this.q("UPDATE templates SET name = $1, version = $2, template_json = $3, built_in = $4, updated_at = $5 WHERE id = $6", [t.name, t.version, templateJson(t), t.builtIn ? 1 : 0, t.updatedAt, t.id]).catch(
          (err: unknown) => {
            if (isUniqueViolation(err, "templates_project_name_key")) throw templateTaken(t, "name");
            throw err;
          },
        );
        return;
      }
      case "template.delete": {
        const r = await this.q("DELETE FROM templates WHERE id = $1", [o.id]);
        if (r.rowCount !== 1) throw new NotFoundError("template", o.id);
        return;
      }
      case "meta.set":
        await setMeta(this.c, o.key, o.value);
        return;
      default: {
        const never: never = o;
        throw new Error(`unknown write operation ${JSON.stringify(never)}`);
      }
    }
  }

  // ---------------------------------------------------------------- leases

  /**
   * store.ts lease.acquire in one statement: the upsert's WHERE is the
   * precondition. Two managers racing for a free lease: the second INSERT
   * waits for the first to commit, then takes the conflict path, where the
   * WHERE sees the winner's row and updates nothing (the row stays locked
   * until this transaction ends, so the holder read for the error is the one
   * that refused it).
   */
  private async acquireLease(name: string, holder: string, ttlMs: number, at: number): Promise<void> {
    const { rowCount } = await this.q(
      `INSERT INTO leases AS l (name, holder, epoch, expires_at) VALUES ($1, $2, 1, $3)
       ON CONFLICT (name) DO UPDATE
         SET holder = excluded.holder,
             epoch = CASE WHEN l.holder = excluded.holder THEN l.epoch ELSE l.epoch + 1 END,
             expires_at = excluded.expires_at
         WHERE l.holder = excluded.holder OR l.expires_at <= $4`,
      [name, holder, at + ttlMs, at],
    );
    if (rowCount === 1) return;
    const { rows } = await this.q<{ holder: string; expires_at: number }>("SELECT holder, expires_at FROM leases WHERE name = $1", [name]);
    const cur = rows[0];
    if (!cur) throw new Error(`lease ${name} refused but not found`);
    throw new LeaseHeldError(name, cur.holder, cur.expires_at);
  }

  /** host.renew / host.checkOwner refused: says who holds the host now. */
  private async ownershipLost(o: { hostId: string; holder: string; epoch: number }): Promise<HostOwnershipLostError> {
    const { rows } = await this.q<{ holder: string; epoch: number; expires_at: number }>("SELECT holder, epoch, expires_at FROM leases WHERE name = $1", [hostLeaseName(o.hostId)]);
    const cur = rows[0];
    return new HostOwnershipLostError(o.hostId, o.holder, o.epoch, cur && { holder: cur.holder, epoch: Number(cur.epoch), expiresAt: Number(cur.expires_at) });
  }

  // ---------------------------------------------------------------- schedules

  /** store.ts schedule.update, as ScheduleTables.update; the row is locked for the version check. */
  private async updateSavedQuery(q: SavedQueryRecord, expectVersion: number): Promise<void> {
    const { rows } = await this.q<{ version: string | number }>("SELECT version FROM saved_queries WHERE id = $1 FOR UPDATE", [q.id]);
    const cur = rows[0];
    if (!cur) throw new NotFoundError("saved query", q.id);
    if (Number(cur.version) !== expectVersion) throw savedQueryMoved(q, expectVersion, Number(cur.version));
    const v = savedQueryValues(q);
    await this.q("UPDATE saved_queries SET name = $1, shared = $2, pinned = $3, alert_enabled = $4, spec_json = $5, version = $6, updated_at = $7, rows_since = $8, last_rows = $9, last_first = $10 WHERE id = $11", [
      q.name,
      v[5],
      v[6],
      v[7],
      v[8],
      q.version,
      q.updatedAt,
      q.rowsSince,
      q.lastRows,
      q.lastFirst,
      q.id,
    ]).catch((err: unknown) => {
      if (isUniqueViolation(err, "saved_queries_project_name_key")) throw savedQueryNameTaken(q);
      throw err;
    });
  }

  private async updateSchedule(s: ScheduleRecord, expectVersion: number): Promise<void> {
    const { rows } = await this.q<{ version: string | number }>("SELECT version FROM schedules WHERE id = $1 FOR UPDATE", [s.id]);
    const cur = rows[0];
    if (!cur) throw new NotFoundError("schedule", s.id);
    if (Number(cur.version) !== expectVersion) throw new ConflictError(`schedule "${s.name}" changed meanwhile (version ${cur.version}, not ${expectVersion}); read it again and retry`);
    const v = scheduleValues(s);
    await this.q("UPDATE schedules SET name = $1, server_id = $2, spec_json = $3, version = $4, active_since = $5, updated_at = $6 WHERE id = $7", [v[2], s.serverId, v[4], s.version, s.activeSince, s.updatedAt, s.id]).catch(
      (err: unknown) => {
        throw isUniqueViolation(err, "schedules_project_name_key") ? scheduleNameTaken(s) : err;
      },
    );
  }

  /**
   * store.ts scheduleRun.insert, as ScheduleTables.insertRun. The schedule's
   * row is updated (or locked) first: a DeleteSchedule committing meanwhile is
   * either before (NotFound) or after this batch.
   */
  private async insertScheduleRun(r: ScheduleRunRecord, keep: number): Promise<void> {
    const moved =
      r.trigger !== "manual"
        ? await this.q("UPDATE schedules SET last_tick_at = GREATEST(COALESCE(last_tick_at, $1), $1) WHERE id = $2", [r.scheduledFor, r.scheduleId])
        : await this.q("SELECT 1 FROM schedules WHERE id = $1 FOR SHARE", [r.scheduleId]);
    if (moved.rowCount !== 1) throw new NotFoundError("schedule", r.scheduleId);
    await this.q(`INSERT INTO schedule_runs (${SCHEDULE_RUN_COLUMNS.join(", ")}) VALUES (${SCHEDULE_RUN_COLUMNS.map((_, i) => `$${i + 1}`).join(", ")})`, scheduleRunValues(r)).catch((err: unknown) => {
      if (isUniqueViolation(err, "schedule_runs_tick")) throw new TickClaimedError(r.scheduleId, r.scheduledFor);
      if (isUniqueViolation(err, "schedule_runs_one_running")) throw new RunUnderWayError(r.scheduleId);
      throw err;
    });
    await this.q(
      "DELETE FROM schedule_runs WHERE id IN (SELECT id FROM schedule_runs WHERE schedule_id = $1 AND outcome <> 'running' ORDER BY started_at DESC, id DESC OFFSET $2)",
      [r.scheduleId, Math.max(0, Math.floor(keep))],
    );
  }

  // ---------------------------------------------------------------- backups

  /**
   * store.ts backup.update, as ServerBackupTables.update: the row is locked
   * while its state is checked, so the state read is the state updated (a
   * deadline's failure and an agent's result for one backup serialise here).
   */
  private async updateBackup(id: string, set: Partial<BackupRecord>, ifState: readonly BackupState[] | undefined): Promise<void> {
    const { rows } = await this.q<{ state: BackupState }>("SELECT state FROM backups WHERE id = $1 FOR UPDATE", [id]);
    const cur = rows[0];
    if (!cur) throw new NotFoundError("backup", id);
    if (ifState && !ifState.includes(cur.state)) throw backupStateMoved(id, cur.state, ifState);
    const cols = backupSetColumns(set);
    if (cols.length === 0) return;
    await this.q(`UPDATE backups SET ${cols.map((c, i) => `${c.column} = $${i + 1}`).join(", ")} WHERE id = $${cols.length + 1}`, [...cols.map((c) => c.value), id]);
  }

  // ---------------------------------------------------------------- servers

  private async insertServer(s: NewServerRecord): Promise<void> {
    try {
      await this.q(
        `INSERT INTO servers (id, project, name, host_id, generation, spec_json, status_json, phase,
           data_initialized, lifecycle_json, created_at, updated_at, deleted_at, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 1)`,
        [
          s.id,
          s.project,
          s.name,
          s.hostId,
          s.generation,
          this.specJson(s.id, s.spec),
          toJsonString(ServerStatusSchema, s.status),
          Phase[s.status.phase] ?? "UNSPECIFIED",
          s.dataInitialized ? 1 : 0,
          JSON.stringify(s.lifecycle),
          s.createdAt,
          s.updatedAt,
          s.deletedAt,
        ],
      );
    } catch (err) {
      // servers_project_name (migration 1): the backstop behind CreateServer's own look-up,
      // which another manager can pass at the same moment.
      if (isUniqueViolation(err, "servers_project_name")) throw new ServerNameTakenError(s.project, s.name);
      throw err;
    }
    await this.reservePorts(s.id, s.hostId, s.deletedAt === null ? s.spec.ports : []);
  }

  /** spec_json as written: secret env values sealed (sealSpec throws without a box). */
  private specJson(serverId: string, spec: ServerSpec): string {
    return toJsonString(ServerSpecSchema, sealSpec(serverId, spec, this.secrets));
  }

  private async updateServerSpec(
    id: string,
    spec: ServerSpec,
    generation: number,
    updatedAt: number,
    deletedAt: number | null,
    hostId: string,
    expectVersion: number | undefined,
  ): Promise<number | undefined> {
    // Locked: the reservations compared below are the ones this write replaces.
    const { rows } = await this.q<{ host_id: string; deleted_at: number | null; spec_json: string }>(
      "SELECT host_id, deleted_at, spec_json FROM servers WHERE id = $1 FOR UPDATE",
      [id],
    );
    const before = rows[0];
    const version = await this.writeServer(
      id,
      "spec_json = $1, generation = $2, updated_at = $3, deleted_at = $4, host_id = $5",
      [this.specJson(id, spec), generation, updatedAt, deletedAt, hostId],
      expectVersion,
    );
    // As SqliteTables.updateServerSpec: only a change of what is reserved re-reserves.
    const wanted = deletedAt === null ? spec.ports : [];
    const held = before && before.deleted_at === null ? portKeysOfSpecJson(before.spec_json) : "";
    if (version !== undefined && (before?.host_id !== hostId || held !== portKeys(wanted))) await this.reservePorts(id, hostId, wanted);
    return version;
  }

  /**
   * One UPDATE of a server row that increments its version, checked against
   * `expectVersion` when given. Under READ COMMITTED a concurrent writer of the
   * same row waits for this one and then re-checks `version = $n` against the
   * committed row: exactly one of two writers with the same expectation wins.
   */
  private async writeServer(id: string, set: string, args: unknown[], expectVersion: number | undefined): Promise<number | undefined> {
    const checked = expectVersion !== undefined;
    const n = args.length;
    const { rows } = await this.q<{ version: number }>(
      `UPDATE servers SET ${set}, version = version + 1 WHERE id = $${n + 1}${checked ? ` AND version = $${n + 2}` : ""} RETURNING version`,
      [...args, id, ...(checked ? [expectVersion] : [])],
    );
    if (rows[0]) return rows[0].version;
    if (!checked) return undefined;
    const now = (await this.q<{ name: string; version: number }>("SELECT name, version FROM servers WHERE id = $1", [id])).rows[0];
    if (!now) throw new NotFoundError("server", id, "it was purged; list servers with ServerService.ListServers");
    throw new ConflictError(`server "${now.name}" was changed by someone else (version ${now.version}, expected ${expectVersion}): read it again and retry`);
  }

  /** As SqliteTables.reservePorts; server_ports_pkey is the port rule across managers. */
  private async reservePorts(serverId: string, hostId: string, ports: readonly PortMapping[]): Promise<void> {
    await this.q("DELETE FROM server_ports WHERE server_id = $1", [serverId]);
    for (const key of new Set(ports.map((p) => `${p.hostPort}/${p.protocol === Protocol.UDP ? "udp" : "tcp"}`))) {
      const [port, protocol] = key.split("/") as [string, string];
      try {
        await this.q("INSERT INTO server_ports (host_id, protocol, host_port, server_id) VALUES ($1, $2, $3, $4)", [hostId, protocol, Number(port), serverId]);
      } catch (err) {
        if (isUniqueViolation(err, "server_ports_pkey")) {
          throw new PreconditionError(`port conflict on host ${hostId}: host port ${key} is already taken by another server; choose another host port (or free this one) and retry`);
        }
        throw err;
      }
    }
  }

  // ---------------------------------------------------------------- observations

  /** Ordered: not over an observation of a newer run (rows.ts, containerRunKey; the SQLite store's writeContainer). */
  private async writeContainer(hostId: string, c: ContainerInfo, json: string, now: number): Promise<string | null> {
    const serverId = c.labels[LABEL_SERVER] || null;
    await this.q(
      `INSERT INTO observed_containers (host_id, container_id, server_id, manager_id, state, info_json, observed_at, run_key)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
       ON CONFLICT (host_id, container_id) DO UPDATE SET
         server_id = excluded.server_id, manager_id = excluded.manager_id, state = excluded.state,
         info_json = excluded.info_json, observed_at = excluded.observed_at, run_key = excluded.run_key${ORDERED_UPSERT}`,
      [hostId, c.id, serverId, c.labels[LABEL_MANAGER] || null, c.state, json, now, containerRunKey(c)],
    );
    return serverId;
  }

  private async removeContainer(hostId: string, containerId: string): Promise<string | null> {
    const { rows } = await this.q<{ server_id: string | null }>("DELETE FROM observed_containers WHERE host_id = $1 AND container_id = $2 RETURNING server_id", [hostId, containerId]);
    return rows[0]?.server_id ?? null;
  }

  private async upsertDataDir(d: DataDirRecord): Promise<void> {
    await this.q(
      `INSERT INTO data_dirs (host_id, server_id, present, size_bytes, checked_at) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (host_id, server_id) DO UPDATE SET
         present = excluded.present, size_bytes = excluded.size_bytes, checked_at = excluded.checked_at`,
      [d.hostId, d.serverId, d.present ? 1 : 0, d.sizeBytes, d.checkedAt],
    );
  }

  /** writeContainer for many containers (distinct ids) in one statement: an inventory is one round trip, not one per container. */
  private async writeContainers(hostId: string, cs: readonly (ContainerInfo & { json: string; serverId: string | null })[], now: number): Promise<void> {
    if (cs.length === 0) return;
    await this.q(
      `INSERT INTO observed_containers (host_id, container_id, server_id, manager_id, state, info_json, observed_at, run_key)
       SELECT $1, c.id, c.server_id, c.manager_id, c.state, c.info_json, $2, c.run_key
       FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int8[]) AS c(id, server_id, manager_id, state, info_json, run_key)
       ON CONFLICT (host_id, container_id) DO UPDATE SET
         server_id = excluded.server_id, manager_id = excluded.manager_id, state = excluded.state,
         info_json = excluded.info_json, observed_at = excluded.observed_at, run_key = excluded.run_key`,
      [hostId, now, cs.map((c) => c.id), cs.map((c) => c.serverId), cs.map((c) => c.labels[LABEL_MANAGER] || null), cs.map((c) => c.state), cs.map((c) => c.json), cs.map((c) => String(containerRunKey(c)))],
    );
  }

  /** upsertDataDir for many records (distinct host and server) in one statement. */
  private async upsertDataDirs(ds: readonly DataDirRecord[]): Promise<void> {
    if (ds.length === 0) return;
    await this.q(
      `INSERT INTO data_dirs (host_id, server_id, present, size_bytes, checked_at)
       SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::int8[], $5::int8[])
       ON CONFLICT (host_id, server_id) DO UPDATE SET
         present = excluded.present, size_bytes = excluded.size_bytes, checked_at = excluded.checked_at`,
      [ds.map((d) => d.hostId), ds.map((d) => d.serverId), ds.map((d) => (d.present ? 1 : 0)), ds.map((d) => String(d.sizeBytes)), ds.map((d) => String(d.checkedAt))],
    );
  }

  /**
   * As SqliteTables.replaceHostInventory: makes the lists the complete picture
   * of the host and returns the servers whose observation changed. The host's
   * rows are read once up front instead of once per server.
   */
  private async replaceHostInventory(
    hostId: string,
    containers: ContainerInfo[],
    dataDirs: DataDirRecord[],
    now: number,
    dataRootEntries: DataRootEntry[] | undefined,
    keep: ReadonlySet<string>,
  ): Promise<Set<string>> {
    if (dataRootEntries) {
      await this.q("DELETE FROM data_root_entries WHERE host_id = $1", [hostId]);
      if (dataRootEntries.length > 0) {
        await this.q(
          `INSERT INTO data_root_entries (host_id, name, size_bytes, observed_at)
           SELECT $1, name, size_bytes, $2 FROM unnest($3::text[], $4::int8[]) AS e(name, size_bytes)
           ON CONFLICT (host_id, name) DO NOTHING`,
          [hostId, now, dataRootEntries.map((e) => e.name), dataRootEntries.map((e) => String(e.sizeBytes))],
        );
      }
    }
    const before = new Map<string, { serverId: string | null; json: string }>();
    const { rows: observed } = await this.q<{ container_id: string; server_id: string | null; info_json: string }>(
      "SELECT container_id, server_id, info_json FROM observed_containers WHERE host_id = $1",
      [hostId],
    );
    for (const r of observed) before.set(r.container_id, { serverId: r.server_id, json: r.info_json });
    const touched = new Set<string>();
    if (keep.size === 0) {
      await this.q("DELETE FROM observed_containers WHERE host_id = $1", [hostId]);
    } else {
      const gone: string[] = [];
      for (const [id, old] of before) {
        if (old.serverId && keep.has(old.serverId)) before.delete(id);
        else gone.push(id);
      }
      if (gone.length > 0) await this.q("DELETE FROM observed_containers WHERE host_id = $1 AND container_id = ANY($2::text[])", [hostId, gone]);
    }
    // Decided in the order the containers are listed, as SQLite's loop does; written
    // afterwards in one statement, the last listing of a container id winning as it does.
    const rows = new Map<string, ContainerInfo & { json: string; serverId: string | null }>();
    for (const c of containers) {
      if (keep.has(c.labels[LABEL_SERVER] ?? "")) continue;
      const json = toJsonString(ContainerInfoSchema, c);
      const sid = c.labels[LABEL_SERVER] || null;
      rows.delete(c.id);
      rows.set(c.id, { ...c, json, serverId: sid });
      const old = before.get(c.id);
      before.delete(c.id);
      if (old?.serverId && old.serverId !== sid) touched.add(old.serverId);
      if (sid && (old?.serverId !== sid || old.json !== json)) touched.add(sid);
    }
    for (const old of before.values()) if (old.serverId) touched.add(old.serverId);
    await this.writeContainers(hostId, [...rows.values()], now);

    const { rows: dirRows } = await this.q<{ server_id: string; present: number; size_bytes: number }>(
      "SELECT server_id, present, size_bytes FROM data_dirs WHERE host_id = $1",
      [hostId],
    );
    const known = new Map(dirRows.map((r) => [r.server_id, { present: r.present === 1, sizeBytes: r.size_bytes }]));
    const reported = new Set<string>();
    const dirs = new Map<string, DataDirRecord>();
    const writeDir = (d: DataDirRecord) => {
      const key = `${d.hostId}/${d.serverId}`;
      dirs.delete(key);
      dirs.set(key, d);
    };
    for (const reportedDir of dataDirs) {
      if (keep.has(reportedDir.serverId)) continue;
      const k = known.get(reportedDir.serverId);
      const d = withKnownSize(reportedDir, k);
      writeDir(d);
      known.set(d.serverId, { present: d.present, sizeBytes: d.sizeBytes });
      reported.add(d.serverId);
      if (!k || k.present !== d.present || k.sizeBytes !== d.sizeBytes) touched.add(d.serverId);
    }
    const onHost = new Set((await this.q<{ id: string }>("SELECT id FROM servers WHERE host_id = $1", [hostId])).rows.map((r) => r.id));
    for (const serverId of onHost) {
      if (reported.has(serverId) || keep.has(serverId)) continue;
      const k = known.get(serverId);
      if (k && !k.present) continue;
      writeDir({ hostId, serverId, present: false, sizeBytes: 0, checkedAt: now });
      known.set(serverId, { present: false, sizeBytes: 0 });
      touched.add(serverId);
    }
    await this.upsertDataDirs([...dirs.values()]);
    // Checks of directories of no server here last only while the host lists them.
    const forget = [...known.keys()].filter((serverId) => !reported.has(serverId) && !keep.has(serverId) && !onHost.has(serverId));
    if (forget.length > 0) await this.q("DELETE FROM data_dirs WHERE host_id = $1 AND server_id = ANY($2::text[])", [hostId, forget]);
    return touched;
  }

  // ---------------------------------------------------------------- hosts, projects

  /** As SqliteTables.deleteHostRows: what a removed host left behind (server records stay). */
  /**
   * store.ts usage.write: every bucket in one INSERT (a column array each,
   * unnested: no limit on parameters, one round trip), merged with a stored
   * part as SQLite merges it; buckets in key order, so two managers writing
   * some of the same keys lock them in one order. Then the pruning.
   */
  private async writeUsage(buckets: readonly UsageBucketRecord[], pruneBefore: number, pruneLimit: number): Promise<void> {
    if (buckets.length > 0) {
      for (const b of buckets) checkUsageBucket(b);
      const sorted = sortedUsageBuckets(buckets);
      const col = <T>(f: (b: UsageBucketRecord) => T) => sorted.map(f);
      await this.q(
        `INSERT INTO usage_buckets (${USAGE_COLUMNS})
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::int[], $5::float8[], $6::float8[], $7::float8[], $8::float8[], $9::float8[], $10::float8[], $11::float8[], $12::float8[], $13::float8[])
         ${usageUpsertClause("GREATEST")}`,
        [
          col((b) => b.kind),
          col((b) => b.subjectId),
          col((b) => b.at),
          col((b) => b.samples),
          col((b) => b.cpuPercent),
          col((b) => b.memoryBytes),
          col((b) => b.memoryMaxBytes),
          col((b) => b.memoryLimitBytes ?? null),
          col((b) => b.netRxBps),
          col((b) => b.netTxBps),
          col((b) => b.ioReadBps),
          col((b) => b.ioWriteBps),
          col((b) => b.pids),
        ],
      );
    }
    await this.q(
      "DELETE FROM usage_buckets WHERE (kind, subject_id, bucket_at) IN (SELECT kind, subject_id, bucket_at FROM usage_buckets WHERE bucket_at < $1 ORDER BY bucket_at LIMIT $2)",
      [pruneBefore, Math.max(0, Math.floor(pruneLimit))],
    );
  }

  /** As UsageTables.deleteSubject: each bucket start of the span up to the newest stored, a lookup of the key. */
  private async deleteUsage(kind: UsageSubjectKind, subjectId: string): Promise<void> {
    await this.q(
      `DELETE FROM usage_buckets WHERE bucket_at = ANY(ARRAY(
         SELECT generate_series(m, m - ${USAGE_SPAN_MAX_MS}, -${USAGE_BUCKET_MS}) FROM (SELECT MAX(bucket_at) AS m FROM usage_buckets) x WHERE m IS NOT NULL
       )) AND kind = $1 AND subject_id = $2`,
      [kind, subjectId],
    );
  }

  private async deleteHostRows(hostId: string): Promise<void> {
    for (const table of ["observed_containers", "data_dirs", "data_root_entries", "commands"]) {
      await this.q(`DELETE FROM ${table} WHERE host_id = $1`, [hostId]);
    }
    const orphanPrefix = `orphan:${hostId}/`;
    await this.q("DELETE FROM alerts WHERE subject = $1 OR substr(subject, 1, length($2::text)) = $2::text", [`host:${hostId}`, orphanPrefix]);
  }

  private async ensureProject(name: string, at: number): Promise<void> {
    await this.q("INSERT INTO projects (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", [name, at]);
  }
}

/** Byte order of two strings (as COLLATE "C" sorts them). */
function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Sets a meta value (insert or replace). */
export async function setMeta(c: Pick<pg.ClientBase, "query">, key: string, value: string): Promise<void> {
  await c.query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value", [key, value]);
}
