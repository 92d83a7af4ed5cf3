import type { TemplateFilter, TemplateRecord } from "../../domain/records.js";
import { NotFoundError } from "../../errors.js";
import { TEMPLATE_COLUMNS, templateFromRow, templateJson, templateMoved, templateTaken, templateValues, type TemplateRow } from "../rows.js";
import type { Db } from "./database.js";
import { isUniqueViolation } from "./tables.js";

/**
 * The SQL of server templates (store.ts template.* operations,
 * TemplateReads; migration 15). The same operations on PostgreSQL are in
 * postgres/pg-writes.ts and pg-store.ts. None of them is a server write.
 */
export class TemplateTables {
  constructor(private readonly db: Db) {}

  /** store.ts template.insert. */
  insert(t: TemplateRecord): void {
    try {
      this.db.prepare(`INSERT INTO templates (${TEMPLATE_COLUMNS.join(", ")}) VALUES (${TEMPLATE_COLUMNS.map(() => "?").join(", ")})`).run(...templateValues(t));
    } catch (err) {
      if (isUniqueViolation(err, "templates.project, templates.name")) throw templateTaken(t, "name");
      if (isUniqueViolation(err, "templates.id")) throw templateTaken(t, "id");
      throw err;
    }
  }

  /** store.ts template.update. */
  update(t: TemplateRecord, expectVersion: number): void {
    const cur = this.db.prepare("SELECT version FROM templates WHERE id = ?").get(t.id) as { version: number } | undefined;
    if (!cur) throw new NotFoundError("template", t.id);
    if (Number(cur.version) !== expectVersion) throw templateMoved(t.id, expectVersion, Number(cur.version));
    try {
      this.db
        .prepare("UPDATE templates SET name = ?, version = ?, template_json = ?, built_in = ?, updated_at = ? WHERE id = ?")
        .run(t.name, t.version, templateJson(t), t.builtIn ? 1 : 0, t.updatedAt, t.id);
    } catch (err) {
      if (isUniqueViolation(err, "templates.project, templates.name")) throw templateTaken(t, "name");
      throw err;
    }
  }

  /** store.ts template.delete. */
  delete(id: string): void {
    if (this.db.prepare("DELETE FROM templates WHERE id = ?").run(id).changes !== 1) throw new NotFoundError("template", id);
  }

  get(id: string): TemplateRecord | undefined {
    const r = this.db.prepare("SELECT * FROM templates WHERE id = ?").get(id) as TemplateRow | undefined;
    return r && templateFromRow(r);
  }

  findByName(project: string, name: string): TemplateRecord | undefined {
    const r = this.db.prepare("SELECT * FROM templates WHERE project = ? AND name = ?").get(project, name) as TemplateRow | undefined;
    return r && templateFromRow(r);
  }

  list(f: TemplateFilter = {}): TemplateRecord[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (f.projects) {
      if (f.projects.length === 0) return [];
      where.push(`project IN (${f.projects.map(() => "?").join(", ")})`);
      args.push(...f.projects);
    }
    if (f.after) {
      where.push("(name > ? OR (name = ? AND id > ?))");
      args.push(f.after.name, f.after.name, f.after.id);
    }
    const sql = `SELECT * FROM templates${where.length ? ` WHERE ${where.join(" AND ")}` : ""} ORDER BY name, id${f.limit !== undefined ? " LIMIT ?" : ""}`;
    if (f.limit !== undefined) args.push(f.limit);
    return (this.db.prepare(sql).all(...args) as TemplateRow[]).map(templateFromRow);
  }
}
