import type { BackupFilter, BackupPolicyFacts, BackupRecord, BackupState, BackupTargetRecord } from "../../domain/records.js";
import { NotFoundError } from "../../errors.js";
import {
  BACKUP_TARGET_COLUMNS,
  backupColumns,
  backupFromRow,
  backupLocked,
  backupSetColumns,
  backupStateMoved,
  backupTaken,
  backupTargetFromRow,
  backupTargetTaken,
  backupTargetValues,
  type BackupRow,
  type BackupTargetRow,
  policyFactsFromRow,
  type PolicyFactsRow,
} from "../rows.js";
import type { Db } from "./database.js";
import { isUniqueViolation } from "./tables.js";

/**
 * The SQL of server backups (store.ts backupTarget.* / backup.* operations,
 * BackupReads; migration 12): where archives go and what was archived. Not
 * sqlite/backup.ts, which copies the database itself. The same operations on
 * PostgreSQL are in postgres/pg-writes.ts and pg-store.ts. None of them is a
 * server write: no server version moves.
 */
export class ServerBackupTables {
  constructor(private readonly db: Db) {}

  /** store.ts backupTarget.insert. */
  insertTarget(t: BackupTargetRecord): void {
    try {
      this.db.prepare(`INSERT INTO backup_targets (${BACKUP_TARGET_COLUMNS.join(", ")}) VALUES (${BACKUP_TARGET_COLUMNS.map(() => "?").join(", ")})`).run(...backupTargetValues(t));
    } catch (err) {
      if (isUniqueViolation(err, "backup_targets.name")) throw backupTargetTaken(t, "name");
      if (isUniqueViolation(err, "backup_targets.id")) throw backupTargetTaken(t, "id");
      throw err;
    }
  }

  /** store.ts backupTarget.delete. */
  deleteTarget(id: string): void {
    if (this.db.prepare("DELETE FROM backup_targets WHERE id = ?").run(id).changes !== 1) throw new NotFoundError("backup target", id);
  }

  /** store.ts backup.insert. */
  insert(b: BackupRecord): void {
    const cols = backupColumns(b);
    try {
      this.db.prepare(`INSERT INTO backups (${cols.map((c) => c.column).join(", ")}) VALUES (${cols.map(() => "?").join(", ")})`).run(...cols.map((c) => c.value));
    } catch (err) {
      if (isUniqueViolation(err, "backups.id")) throw backupTaken(b.id);
      throw err;
    }
  }

  /** store.ts backup.update: the precondition first, then the fields present in `set`. */
  update(id: string, set: Partial<BackupRecord>, ifState: readonly BackupState[] | undefined): void {
    const cur = this.db.prepare("SELECT state FROM backups WHERE id = ?").get(id) as { state: BackupState } | undefined;
    if (!cur) throw new NotFoundError("backup", id);
    if (ifState && !ifState.includes(cur.state)) throw backupStateMoved(id, cur.state, ifState);
    const cols = backupSetColumns(set);
    if (cols.length === 0) return;
    this.db.prepare(`UPDATE backups SET ${cols.map((c) => `${c.column} = ?`).join(", ")} WHERE id = ?`).run(...cols.map((c) => c.value), id);
  }

  /** store.ts backup.delete. */
  delete(id: string): void {
    const cur = this.db.prepare("SELECT locked FROM backups WHERE id = ?").get(id) as { locked: number } | undefined;
    if (!cur) throw new NotFoundError("backup", id);
    if (cur.locked === 1) throw backupLocked(id);
    this.db.prepare("DELETE FROM backups WHERE id = ?").run(id);
  }

  getTarget(id: string): BackupTargetRecord | undefined {
    const r = this.db.prepare("SELECT * FROM backup_targets WHERE id = ?").get(id) as BackupTargetRow | undefined;
    return r && backupTargetFromRow(r);
  }

  findTargetByName(name: string): BackupTargetRecord | undefined {
    const r = this.db.prepare("SELECT * FROM backup_targets WHERE name = ?").get(name) as BackupTargetRow | undefined;
    return r && backupTargetFromRow(r);
  }

  listTargets(): BackupTargetRecord[] {
    return (this.db.prepare("SELECT * FROM backup_targets ORDER BY name").all() as BackupTargetRow[]).map(backupTargetFromRow);
  }

  get(id: string): BackupRecord | undefined {
    const r = this.db.prepare("SELECT * FROM backups WHERE id = ?").get(id) as BackupRow | undefined;
    return r && backupFromRow(r);
  }

  /** Newest first (created_at, then id, descending), as listServers pages. */
  list(f: BackupFilter = {}): BackupRecord[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (f.serverId !== undefined) {
      where.push("server_id = ?");
      args.push(f.serverId);
    }
    if (f.project !== undefined) {
      where.push("project = ?");
      args.push(f.project);
    }
    if (f.states && f.states.length > 0) {
      where.push(`state IN (${f.states.map(() => "?").join(", ")})`);
      args.push(...f.states);
    }
    if (f.before) {
      where.push("(created_at < ? OR (created_at = ? AND id < ?))");
      args.push(f.before.createdAt, f.before.createdAt, f.before.id);
    }
    const sql =
      "SELECT * FROM backups" +
      (where.length ? ` WHERE ${where.join(" AND ")}` : "") +
      " ORDER BY created_at DESC, id DESC" +
      (f.limit ? ` LIMIT ${Math.max(0, Math.floor(f.limit))}` : "");
    return (this.db.prepare(sql).all(...args) as BackupRow[]).map(backupFromRow);
  }

  countOnTarget(targetId: string): number {
    return (this.db.prepare("SELECT COUNT(*) AS n FROM backups WHERE target_id = ?").get(targetId) as { n: number }).n;
  }

  /**
   * store.ts backupPolicyFacts: one pass over the servers (json_extract, no
   * record decoded) and, only for those with the policy, one probe of the
   * backups_server index each.
   */
  policyFacts(serverId?: string): BackupPolicyFacts[] {
    const rows = this.db
      .prepare(
        `SELECT s.id, s.name, s.project, s.host_id, s.created_at, s.alert_after_hours,
           (SELECT MAX(COALESCE(b.finished_at, b.created_at)) FROM backups b WHERE b.server_id = s.id AND b.state = 'succeeded') AS newest_success_at
         FROM (SELECT id, name, project, host_id, created_at,
                 CAST(COALESCE(json_extract(spec_json, '$.backupPolicy.alertAfterHours'), 0) AS INTEGER) AS alert_after_hours
               FROM servers
               WHERE deleted_at IS NULL AND json_extract(lifecycle_json, '$.purge') IS NULL${serverId === undefined ? "" : " AND id = ?"}) s
         WHERE s.alert_after_hours > 0
         ORDER BY s.id`,
      )
      .all(...(serverId === undefined ? [] : [serverId])) as PolicyFactsRow[];
    return rows.map(policyFactsFromRow);
  }
}
