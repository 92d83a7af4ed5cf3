import { NotFoundError } from "../../errors.js";
import { SAVED_QUERY_COLUMNS, savedQueryFromRow, savedQueryMoved, savedQueryNameTaken, savedQueryValues, type SavedQueryFilter, type SavedQueryRecord, type SavedQueryRow } from "../../query/saved-records.js";
import type { Db } from "./database.js";
import { isUniqueViolation } from "./tables.js";

/**
 * The SQL of saved queries (store.ts savedQuery.* operations,
 * SavedQueryReads; migration 18). The same on PostgreSQL is in
 * postgres/pg-writes.ts and pg-store.ts.
 */
export class SavedQueryTables {
  constructor(private readonly db: Db) {}

  insert(q: SavedQueryRecord): void {
    try {
      this.db.prepare(`INSERT INTO saved_queries (${SAVED_QUERY_COLUMNS.join(", ")}) VALUES (${SAVED_QUERY_COLUMNS.map(() => "?").join(", ")})`).run(...savedQueryValues(q));
    } catch (err) {
      if (isUniqueViolation(err, "saved_queries.project, saved_queries.name")) throw savedQueryNameTaken(q);
      throw err;
    }
  }

  update(q: SavedQueryRecord, expectVersion: number): void {
    const cur = this.db.prepare("SELECT version FROM saved_queries WHERE id = ?").get(q.id) as { version: number } | undefined;
    if (!cur) throw new NotFoundError("saved query", q.id);
    if (Number(cur.version) !== expectVersion) throw savedQueryMoved(q, expectVersion, Number(cur.version));
    try {
      this.db
        .prepare("UPDATE saved_queries SET name = ?, shared = ?, pinned = ?, alert_enabled = ?, spec_json = ?, version = ?, updated_at = ?, rows_since = ?, last_rows = ?, last_first = ? WHERE id = ?")
        .run(...savedQueryValues(q).slice(2, 3), ...savedQueryValues(q).slice(5, 9), q.version, q.updatedAt, q.rowsSince, q.lastRows, q.lastFirst, q.id);
    } catch (err) {
      if (isUniqueViolation(err, "saved_queries.project, saved_queries.name")) throw savedQueryNameTaken(q);
      throw err;
    }
  }

  delete(id: string): void {
    if (this.db.prepare("DELETE FROM saved_queries WHERE id = ?").run(id).changes !== 1) throw new NotFoundError("saved query", id);
  }

  observe(id: string, at: number, rows: number, first: string): void {
    this.db
      .prepare("UPDATE saved_queries SET rows_since = CASE WHEN ? > 0 THEN COALESCE(rows_since, ?) ELSE NULL END, last_rows = ?, last_first = ? WHERE id = ?")
      .run(rows, at, rows, first, id);
  }

  get(id: string): SavedQueryRecord | undefined {
    const r = this.db.prepare("SELECT * FROM saved_queries WHERE id = ?").get(id) as SavedQueryRow | undefined;
    return r && savedQueryFromRow(r);
  }

  findByName(project: string, name: string): SavedQueryRecord | undefined {
    const r = this.db.prepare("SELECT * FROM saved_queries WHERE project = ? AND name = ?").get(project, name) as SavedQueryRow | undefined;
    return r && savedQueryFromRow(r);
  }

  list(f: SavedQueryFilter = {}): SavedQueryRecord[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (f.project !== undefined) {
      where.push("project = ?");
      args.push(f.project);
    }
    if (f.name !== undefined) {
      where.push("name = ?");
      args.push(f.name);
    }
    if (f.visibleTo !== undefined) {
      where.push("(shared = 1 OR owner_token_id = ?)");
      args.push(f.visibleTo);
    }
    if (f.pinnedOnly) where.push("pinned = 1");
    if (f.alertEnabled !== undefined) {
      where.push("alert_enabled = ?");
      args.push(f.alertEnabled ? 1 : 0);
    }
    if (f.after) {
      where.push("(project > ? OR (project = ? AND name > ?))");
      args.push(f.after.project, f.after.project, f.after.name);
    }
    let sql = `SELECT * FROM saved_queries${where.length ? ` WHERE ${where.join(" AND ")}` : ""} ORDER BY project, name`;
    if (f.limit !== undefined) {
      sql += " LIMIT ?";
      args.push(f.limit);
    }
    return (this.db.prepare(sql).all(...args) as SavedQueryRow[]).map(savedQueryFromRow);
  }
}
