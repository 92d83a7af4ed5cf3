import { chmodSync, closeSync, existsSync, mkdirSync, openSync, statSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { MIGRATIONS } from "../migrations.js";

export type Db = Database.Database;

/**
 * Opens (creating if needed) the SQLite database in WAL mode and applies the
 * pending migrations. `:memory:` is accepted for unit tests.
 */
export function openDatabase(path: string, opts: { onWarning?: (message: string) => void } = {}): Db {
  if (path !== ":memory:") protectDatabaseFiles(path, opts.onWarning);
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
      db.exec(MIGRATIONS[v]!.sqlite);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}


/** The database holds spec env values (secrets among them): only its owner may read it. */
const FILE_MODE = 0o600;
const DIR_MODE = 0o700;

/**
 * Makes the database file (and its -wal/-shm companions, which SQLite creates
 * with the database file's mode) 0600 whatever the umask, and creates its
 * directory 0700. An existing directory that others can enter is left as it is
 * (it may be the operator's working directory) with a warning, since the files
 * in it are private anyway.
 */
function protectDatabaseFiles(path: string, warn: (message: string) => void = () => {}): void {
  const dir = dirname(path);
  if (!existsSync(dir)) {
    mkdirSync(dir, { recursive: true, mode: DIR_MODE });
    chmodSync(dir, DIR_MODE); // mkdir's mode is filtered by the umask
  } else if ((statSync(dir).mode & 0o077) !== 0) {
    warn(`the database directory ${dir} is accessible to other users (mode ${(statSync(dir).mode & 0o777).toString(8)}); the database files are 0600, but consider chmod 700 ${dir}`);
  }
  // Create the file before SQLite does, so it never exists with a looser mode.
  closeSync(openSync(path, "a", FILE_MODE));
  for (const f of [path, `${path}-wal`, `${path}-shm`]) {
    if (existsSync(f) && (statSync(f).mode & 0o777) !== FILE_MODE) chmodSync(f, FILE_MODE);
  }
}
