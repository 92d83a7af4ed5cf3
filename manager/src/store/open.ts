/**
 * The one way into the store: `openStore(url)` picks the engine from the
 * `--store` URL (store-url.ts), opens it, brings its schema up to date and
 * returns the store contract (store.ts) over it. Nothing outside `store/`
 * opens a database or holds its handle.
 */
import { backupPostgresDatabase } from "./postgres/backup.js";
import { openPostgresStore } from "./postgres/pg-store.js";
import type { SecretBox } from "./secrets.js";
import { AlertTables } from "./sqlite/alert-tables.js";
import { backupSqliteDatabase, type BackupSummary } from "./sqlite/backup.js";
import { openDatabase } from "./sqlite/database.js";
import { EventTables } from "./sqlite/event-tables.js";
import { SqliteStore } from "./sqlite/sqlite-store.js";
import { SqliteTables } from "./sqlite/tables.js";
import { TokenTables } from "./sqlite/token-tables.js";
import { startWalCheckpointer, type WalCheckpointer } from "./sqlite/wal-checkpointer.js";
import { ClusterTables } from "./sqlite/cluster-tables.js";
import { ServerBackupTables } from "./sqlite/server-backup-tables.js";
import { TemplateTables } from "./sqlite/template-tables.js";
import { ScheduleTables } from "./sqlite/schedule-tables.js";
import { SavedQueryTables } from "./sqlite/saved-query-tables.js";
import { UsageTables } from "./sqlite/usage-tables.js";
import type { OpenStoreOptions, Store } from "./store.js";

export { StoreUnavailableError, type OpenStoreOptions, type StoreMeta } from "./store.js";
import { describeStoreUrl, parseStoreUrl, type StoreUrl } from "./store-url.js";

/**
 * Opens the store `url` names (text as given to --store, or parsed), applying
 * pending migrations. Throws StoreUrlError for a URL that does not parse.
 */
export async function openStore(url: string | StoreUrl, opts: OpenStoreOptions = {}): Promise<Store> {
  const parsed = typeof url === "string" ? parseStoreUrl(url) : url;
  if (parsed.engine === "postgres") return openPostgresStore(parsed, opts);
  return openSqliteStore(parsed, opts);
}

async function openSqliteStore(url: Extract<StoreUrl, { engine: "sqlite" }>, opts: OpenStoreOptions): Promise<SqliteStore> {
  const db = openDatabase(url.path, opts.onWarning ? { onWarning: opts.onWarning } : {});
  let secrets: SecretBox | undefined;
  try {
    if (opts.secrets) {
      const meta = new SqliteTables(db);
      secrets = await opts.secrets({ get: async (k) => meta.getMeta(k), set: async (k, v) => meta.setMeta(k, v) });
    }
  } catch (err) {
    db.close();
    throw err;
  }
  const tables = new SqliteTables(db, secrets);
  let checkpointer: WalCheckpointer | undefined;
  if (opts.checkpointInWorker && url.path !== ":memory:") {
    checkpointer = startWalCheckpointer(db, url.path, opts.onWarning ? { onWarning: opts.onWarning } : {});
  }
  return new SqliteStore(describeStoreUrl(url), tables, new EventTables(db), new AlertTables(db), new TokenTables(db), opts.onListenerError, new ClusterTables(db), new ServerBackupTables(db), checkpointer, new UsageTables(db), new TemplateTables(db), new ScheduleTables(db), new SavedQueryTables(db));
}

/**
 * An online, consistent copy of the store into the file `to` (refused when
 * it exists, unless `force`): a SQLite database file (sqlite/backup.ts), or
 * for PostgreSQL a pg_dump custom-format archive (postgres/backup.ts;
 * `pgBinDir` says where pg_dump is, default /usr/lib/postgresql/<major>/bin
 * then PATH). Throws BackupError (sqlite/backup.ts) with what to do.
 */
export async function backupStore(url: string | StoreUrl, to: string, opts: { force?: boolean; pgBinDir?: string } = {}): Promise<BackupSummary> {
  const parsed = typeof url === "string" ? parseStoreUrl(url) : url;
  if (parsed.engine === "postgres") {
    return backupPostgresDatabase(parsed, to, { force: opts.force ?? false, ...(opts.pgBinDir !== undefined ? { binDir: opts.pgBinDir } : {}) });
  }
  return backupSqliteDatabase(parsed.path, to, { force: opts.force ?? false });
}
