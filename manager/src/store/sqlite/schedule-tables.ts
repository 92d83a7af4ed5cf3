import { AlreadyExistsError, ConflictError, NotFoundError } from "../../errors.js";
import {
  RunUnderWayError,
  SCHEDULE_COLUMNS,
  SCHEDULE_RUN_COLUMNS,
  scheduleFromRow,
  scheduleRunFromRow,
  scheduleRunValues,
  scheduleValues,
  TickClaimedError,
  type RunFinish,
  type ScheduleFilter,
  type ScheduleRecord,
  type ScheduleRow,
  type ScheduleRunPage,
  type ScheduleRunRecord,
  type ScheduleRunRow,
} from "../../schedules/records.js";
import type { Db } from "./database.js";
import { isUniqueViolation } from "./tables.js";

/** The schedule's name is taken in its project. */
export function scheduleNameTaken(s: ScheduleRecord): AlreadyExistsError {
  return new AlreadyExistsError(`schedule "${s.name}" already exists in project "${s.project}"; choose another name or update that one`);
}

/**
 * The SQL of schedules (store.ts schedule.* / scheduleRun.* operations,
 * ScheduleReads; migration "schedules"). The same on PostgreSQL is in
 * postgres/pg-writes.ts and pg-store.ts.
 */
export class ScheduleTables {
  constructor(private readonly db: Db) {}

  insert(s: ScheduleRecord): void {
    try {
      this.db.prepare(`INSERT INTO schedules (${SCHEDULE_COLUMNS.join(", ")}) VALUES (${SCHEDULE_COLUMNS.map(() => "?").join(", ")})`).run(...scheduleValues(s));
    } catch (err) {
      if (isUniqueViolation(err, "schedules.project, schedules.name")) throw scheduleNameTaken(s);
      if (isUniqueViolation(err, "schedules.id")) throw new AlreadyExistsError(`schedule id ${s.id} is taken`);
      throw err;
    }
  }

  update(s: ScheduleRecord, expectVersion: number): void {
    const cur = this.db.prepare("SELECT version FROM schedules WHERE id = ?").get(s.id) as { version: number } | undefined;
    if (!cur) throw new NotFoundError("schedule", s.id);
    if (Number(cur.version) !== expectVersion) throw new ConflictError(`schedule "${s.name}" changed meanwhile (version ${cur.version}, not ${expectVersion}); read it again and retry`);
    try {
      this.db
        .prepare("UPDATE schedules SET name = ?, server_id = ?, spec_json = ?, version = ?, active_since = ?, updated_at = ? WHERE id = ?")
        .run(...[scheduleValues(s)[2], s.serverId, scheduleValues(s)[4], s.version, s.activeSince, s.updatedAt, s.id]);
    } catch (err) {
      if (isUniqueViolation(err, "schedules.project, schedules.name")) throw scheduleNameTaken(s);
      throw err;
    }
  }

  delete(id: string): void {
    if (this.db.prepare("DELETE FROM schedules WHERE id = ?").run(id).changes !== 1) throw new NotFoundError("schedule", id);
    this.db.prepare("DELETE FROM schedule_runs WHERE schedule_id = ?").run(id);
  }

  insertRun(r: ScheduleRunRecord, keep: number): void {
    const tick = r.trigger !== "manual";
    const moved = tick
      ? this.db.prepare("UPDATE schedules SET last_tick_at = MAX(COALESCE(last_tick_at, ?), ?) WHERE id = ?").run(r.scheduledFor, r.scheduledFor, r.scheduleId).changes
      : (this.db.prepare("SELECT 1 FROM schedules WHERE id = ?").get(r.scheduleId) ? 1 : 0);
    if (moved !== 1) throw new NotFoundError("schedule", r.scheduleId);
    try {
      this.db.prepare(`INSERT INTO schedule_runs (${SCHEDULE_RUN_COLUMNS.join(", ")}) VALUES (${SCHEDULE_RUN_COLUMNS.map(() => "?").join(", ")})`).run(...scheduleRunValues(r));
    } catch (err) {
      if (isUniqueViolation(err, "schedule_runs.schedule_id, schedule_runs.scheduled_for")) throw new TickClaimedError(r.scheduleId, r.scheduledFor);
      if (isUniqueViolation(err, "schedule_runs.schedule_id")) throw new RunUnderWayError(r.scheduleId);
      throw err;
    }
    this.db
      .prepare(
        "DELETE FROM schedule_runs WHERE id IN (SELECT id FROM schedule_runs WHERE schedule_id = ? AND outcome <> 'running' ORDER BY started_at DESC, id DESC LIMIT -1 OFFSET ?)",
      )
      .run(r.scheduleId, Math.max(0, Math.floor(keep)));
  }

  finishRun(id: string, f: RunFinish): void {
    const cur = this.db.prepare("SELECT outcome FROM schedule_runs WHERE id = ?").get(id) as { outcome: string } | undefined;
    if (!cur) throw new NotFoundError("schedule run", id);
    if (cur.outcome !== "running") throw new ConflictError(`schedule run ${id} is no longer running (${cur.outcome})`);
    this.db.prepare("UPDATE schedule_runs SET finished_at = ?, outcome = ?, reason = ?, message = ?, targets_json = ? WHERE id = ?").run(f.finishedAt, f.outcome, f.reason, f.message, JSON.stringify(f.targets), id);
  }

  get(id: string): ScheduleRecord | undefined {
    const r = this.db.prepare("SELECT * FROM schedules WHERE id = ?").get(id) as ScheduleRow | undefined;
    return r && scheduleFromRow(r);
  }

  findByName(project: string, name: string): ScheduleRecord | undefined {
    const r = this.db.prepare("SELECT * FROM schedules WHERE project = ? AND name = ?").get(project, name) as ScheduleRow | undefined;
    return r && scheduleFromRow(r);
  }

  list(f: ScheduleFilter = {}): ScheduleRecord[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (f.project !== undefined) {
      where.push("project = ?");
      args.push(f.project);
    }
    if (f.serverId !== undefined) {
      where.push("server_id = ?");
      args.push(f.serverId);
    }
    if (f.afterName !== undefined) {
      where.push("name > ?");
      args.push(f.afterName);
    }
    const sql = "SELECT * FROM schedules" + (where.length ? ` WHERE ${where.join(" AND ")}` : "") + " ORDER BY project, name" + (f.limit ? ` LIMIT ${Math.max(0, Math.floor(f.limit))}` : "");
    return (this.db.prepare(sql).all(...args) as ScheduleRow[]).map(scheduleFromRow);
  }

  getRun(id: string): ScheduleRunRecord | undefined {
    const r = this.db.prepare("SELECT * FROM schedule_runs WHERE id = ?").get(id) as ScheduleRunRow | undefined;
    return r && scheduleRunFromRow(r);
  }

  listRuns(scheduleId: string, page: ScheduleRunPage): ScheduleRunRecord[] {
    const args: unknown[] = [scheduleId];
    let where = "schedule_id = ?";
    if (page.before) {
      where += " AND (started_at < ? OR (started_at = ? AND id < ?))";
      args.push(page.before.startedAt, page.before.startedAt, page.before.id);
    }
    return (this.db.prepare(`SELECT * FROM schedule_runs WHERE ${where} ORDER BY started_at DESC, id DESC LIMIT ${Math.max(0, Math.floor(page.limit))}`).all(...args) as ScheduleRunRow[]).map(scheduleRunFromRow);
  }

  running(scheduleId?: string): ScheduleRunRecord[] {
    const rows = scheduleId === undefined
      ? this.db.prepare("SELECT * FROM schedule_runs WHERE outcome = 'running' ORDER BY started_at, id").all()
      : this.db.prepare("SELECT * FROM schedule_runs WHERE outcome = 'running' AND schedule_id = ? ORDER BY started_at, id").all(scheduleId);
    return (rows as ScheduleRunRow[]).map(scheduleRunFromRow);
  }
}
