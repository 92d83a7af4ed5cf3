import type { Db } from "./database.js";
import type { EventQuery, EventRecord, EventScope } from "../../domain/records.js";
import { EVENT_COUNT_COLUMNS, type EventCountColumn, type EventCountQuery, type EventCountRow } from "../store.js";
import { eventFromRow, type EventRow } from "../rows.js";

/**
 * The ledger's reads and retention: filtered listing (newest first, keyset
 * pagination by id), forward reads for watches, and batched pruning. Appends
 * stay in `Store.appendEvent` so they join the callers' transactions. Portable
 * SQL: `substr` and plain comparisons, no SQLite-only functions.
 */
export class EventTables {
  constructor(private readonly db: Db) {}

  /** Newest first; `beforeId` continues a previous page. */
  listNewestFirst(q: EventQuery & { beforeId?: number; limit: number }): EventRecord[] {
    const { where, args } = this.filter(q);
    if (q.beforeId !== undefined) {
      where.push("id < ?");
      args.push(q.beforeId);
    }
    const sql = `SELECT * FROM events${where.length ? ` WHERE ${where.join(" AND ")}` : ""} ORDER BY id DESC LIMIT ${Math.floor(q.limit)}`;
    return (this.db.prepare(sql).all(...args) as EventRow[]).map(eventFromRow);
  }

  /** Oldest first, ids in (afterId, upToId]: a watch reads the ledger forward in bounded steps. */
  readForward(q: EventQuery & { afterId: number; upToId: number; limit: number }): EventRecord[] {
    const { where, args } = this.filter(q);
    where.push("id > ?", "id <= ?");
    args.push(q.afterId, q.upToId);
    const sql = `SELECT * FROM events WHERE ${where.join(" AND ")} ORDER BY id LIMIT ${Math.floor(q.limit)}`;
    return (this.db.prepare(sql).all(...args) as EventRow[]).map(eventFromRow);
  }

  /** The newest event id (0 when the ledger is empty). */
  lastId(): number {
    const row = this.db.prepare("SELECT MAX(id) AS id FROM events").get() as { id: number | null };
    return row.id ?? 0;
  }

  /** The oldest retained event id (0 when the ledger is empty). */
  firstId(): number {
    const row = this.db.prepare("SELECT MIN(id) AS id FROM events").get() as { id: number | null };
    return row.id ?? 0;
  }

  /** store.ts countEvents: GROUP BY bucket and columns, COUNT(*). */
  count(q: EventCountQuery): EventCountRow[] {
    const { where, args } = this.filter({ project: q.project, since: q.since, until: q.until });
    for (const c of q.where) {
      const col = column(c.column);
      if (c.op === "eq") {
        where.push(`${col} = ?`);
        args.push(c.value);
      } else {
        where.push(`${col} >= ? AND ${col} < ?`);
        args.push(c.value, prefixEnd(c.value));
      }
    }
    const bucket = q.bucketMs !== undefined ? `time / ${bucketWidth(q.bucketMs)}` : "0";
    const keys = q.groupBy.map((c, i) => `${column(c)} AS k${i}`);
    const groups = q.groupBy.map((_, i) => String(i + 2));
    const sql = `SELECT ${bucket} AS bucket, ${[...keys, "COUNT(*) AS n"].join(", ")} FROM events WHERE ${where.join(" AND ")} GROUP BY ${["1", ...groups].join(", ")} LIMIT ${Math.floor(q.limit)}`;
    const rows = this.db.prepare(sql).all(...args) as Record<string, string | number>[];
    return rows.map((r) => ({ bucket: Number(r.bucket), key: q.groupBy.map((_, i) => String(r[`k${i}`])), count: Number(r.n) }));
  }

  /** store.ts eventIdSpan. */
  idSpan(q: EventScope & { since: number; until: number }): { first: number; last: number } | undefined {
    const { where, args } = this.filter({ project: q.project, since: q.since, until: q.until });
    const row = this.db.prepare(`SELECT MIN(id + 0) AS first, MAX(id + 0) AS last FROM events WHERE ${where.join(" AND ")}`).get(...args) as { first: number | null; last: number | null };
    return row.first === null || row.last === null ? undefined : { first: row.first, last: row.last };
  }

  /** store.ts readEventWindow: by the primary key (`+time` keeps SQLite off the time index, which would sort the window). */
  readWindow(q: EventScope & { since: number; until: number; afterId: number; upToId: number; limit: number }): EventRecord[] {
    const where = ["id > ?", "id <= ?", "+time >= ?", "+time < ?"];
    const args: unknown[] = [q.afterId, q.upToId, q.since, q.until];
    if (q.project !== null) {
      where.push("project = ?");
      args.push(q.project);
    }
    const sql = `SELECT * FROM events WHERE ${where.join(" AND ")} ORDER BY id LIMIT ${Math.floor(q.limit)}`;
    return (this.db.prepare(sql).all(...args) as EventRow[]).map(eventFromRow);
  }

  /** Deletes at most `limit` of the oldest events older than `cutoff` (ms); returns how many. */
  pruneOlderThan(cutoff: number, limit: number): number {
    return this.db
      .prepare(`DELETE FROM events WHERE id IN (SELECT id FROM events WHERE time < ? ORDER BY id LIMIT ${Math.floor(limit)})`)
      .run(cutoff).changes;
  }

  /**
   * Deletes at most `limit` of the oldest events beyond the newest `keep`.
   * Ids are monotonic, so "older than the newest `keep` ids" is `id <= max - keep`:
   * no COUNT(*) over a million rows on every tick.
   */
  pruneBeyondCount(keep: number, limit: number): number {
    const cutoff = this.lastId() - Math.floor(keep);
    if (cutoff <= 0) return 0;
    return this.db
      .prepare(`DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id <= ? ORDER BY id LIMIT ${Math.floor(limit)})`)
      .run(cutoff).changes;
  }

  private filter(q: EventQuery): { where: string[]; args: unknown[] } {
    const where: string[] = [];
    const args: unknown[] = [];
    if (q.project !== null) {
      where.push("project = ?");
      args.push(q.project);
    }
    if (q.serverId) {
      where.push("server_id = ?");
      args.push(q.serverId);
    }
    if (q.hostId) {
      where.push("host_id = ?");
      args.push(q.hostId);
    }
    if (q.typePrefix) {
      // A range rather than LIKE: no wildcard escaping, and the (type, id) index applies.
      where.push("type >= ? AND type < ?");
      args.push(q.typePrefix, prefixEnd(q.typePrefix));
    }
    if (q.actor) {
      where.push("(actor = ? OR substr(actor, 1, ?) = ?)");
      args.push(q.actor, q.actor.length + 1, `${q.actor}:`);
    }
    if (q.since !== undefined) {
      where.push("time >= ?");
      args.push(q.since);
    }
    if (q.until !== undefined) {
      where.push("time < ?");
      args.push(q.until);
    }
    return { where, args };
  }
}

/** The smallest string greater than every string starting with `prefix`. */
function prefixEnd(prefix: string): string {
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}

/** A column name for SQL text: only the listed ones (never a caller's string). */
export function column(c: EventCountColumn): string {
  if (!(EVENT_COUNT_COLUMNS as readonly string[]).includes(c)) throw new Error(`not a countable events column: ${String(c)}`);
  return c;
}

/** A bucket width for SQL text: a whole, positive number of ms. */
export function bucketWidth(ms: number): number {
  if (!Number.isSafeInteger(ms) || ms <= 0) throw new Error(`bucket width ${ms} ms: a whole, positive number of ms`);
  return ms;
}
