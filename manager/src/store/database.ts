import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { MIGRATIONS } from "./migrations.js";

export type Db = Database.Database;

/**
 * Opens (creating if needed) the SQLite database in WAL mode and applies the
 * pending migrations. `:memory:` is accepted for unit tests.
 */
export function openDatabase(path: string): Db {
  if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
  const db = new Database(path);
  db.pragma("journal_mode = WAL");
  // NORMAL is durable across application crashes in WAL mode; only an OS crash
  // can lose the last transactions, which the reconciler re-derives from agents.
  db.pragma("synchronous = NORMAL");
  db.pragma("busy_timeout = 5000");
  migrate(db);
  cacheStatements(db);
  return db;
}

/** Distinct SQL texts kept prepared (dynamic ones, e.g. with a LIMIT, come and go). */
const STATEMENT_CACHE_SIZE = 500;

/**
 * Makes `db.prepare(sql)` return the statement prepared for the same text
 * before. The stores call `prepare` on every query, and compiling the SQL
 * each time was the manager's largest single cost under load (16% of its CPU
 * in the scale benchmark's connect storm, docs/benchmarks.md). Reusing a
 * statement is safe for `run`/`get`/`all`; no code here iterates a statement
 * or changes its modes (`pluck`, `raw`, `expand`, `bind`), which a shared
 * statement would carry over to the next caller.
 */
function cacheStatements(db: Db): void {
  const prepare = db.prepare.bind(db);
  const cache = new Map<string, ReturnType<Db["prepare"]>>();
  db.prepare = ((sql: string) => {
    let stmt = cache.get(sql);
    if (stmt) {
      // Most recently used last, so the oldest is evicted first.
      cache.delete(sql);
    } else {
      stmt = prepare(sql);
      if (cache.size >= STATEMENT_CACHE_SIZE) cache.delete(cache.keys().next().value!);
    }
    cache.set(sql, stmt);
    return stmt;
  }) as Db["prepare"];
}

function migrate(db: Db): void {
  const current = db.pragma("user_version", { simple: true }) as number;
  if (current > MIGRATIONS.length) {
    throw new Error(
      `database schema version ${current} is newer than this manager knows (${MIGRATIONS.length}); run a newer berth-manager`,
    );
  }
  for (let v = current; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]!);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}
