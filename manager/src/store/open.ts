/**
 * The one way into the store: `openStore(url)` picks the engine from the
 * `--store` URL (store-url.ts), opens it, brings its schema up to date and
 * returns the stores the manager and its CLIs use, over one connection.
 * Nothing outside `store/` opens a database or holds its handle.
 */
import { AlertTables } from "./sqlite/alert-tables.js";
import { openDatabase } from "./sqlite/database.js";
import { EventTables } from "./sqlite/event-tables.js";
import { backupPostgresDatabase } from "./postgres/backup.js";
import type { SecretBox } from "./secrets.js";
import { backupSqliteDatabase, type BackupSummary } from "./sqlite/backup.js";
import type { Store } from "./store.js";
import { SqliteStore } from "./sqlite/sqlite-store.js";
import { SqliteTables } from "./sqlite/tables.js";
import { describeStoreUrl, parseStoreUrl, type StoreUrl } from "./store-url.js";
import { TokenTables } from "./sqlite/token-tables.js";

/** The stores over one open database. */
export interface OpenedStore {
  readonly url: StoreUrl;
  /** The URL for logs and messages (no password). */
  readonly description: string;
  readonly store: SqliteTables;
  readonly events: EventTables;
  readonly alerts: AlertTables;
  readonly tokens: TokenTables;
  /**
   * The store contract (contract.ts) over the same database: asynchronous reads, writes as one batch.
   * Code moves to it from the table classes above one module at a time (issue 16); they go once all have.
   */
  readonly contract: Store;
  /** Closes the database; the stores are unusable afterwards. */
  close(): void;
}

/** The meta values the secret key check reads and writes before the stores exist. */
export interface StoreMeta {
  get(key: string): string | undefined;
  set(key: string, value: string): void;
}

export interface OpenStoreOptions {
  /** Something worth an operator's attention that does not stop the store (e.g. a directory others can read). */
  onWarning?: (message: string) => void;
  /**
   * Chooses the key sealing secret env values, given the database's meta
   * (where the key check lives). When it throws, the database is closed
   * and the error passes through. Without it, writing a secret env value throws.
   */
  secrets?: (meta: StoreMeta) => SecretBox;
  /** A listener of committed batches threw (a bug: the write stands, the listener missed it). */
  onListenerError?: (err: unknown) => void;
}

/** The store URL names an engine this build does not have; the message says what to use instead. */
export class StoreUnavailableError extends Error {
  override readonly name = "StoreUnavailableError";
}

/**
 * Opens the store `url` names (text as given to --store, or parsed), applying
 * pending migrations. Throws StoreUrlError for a URL that does not parse and
 * StoreUnavailableError for an engine this build lacks.
 */
export function openStore(url: string | StoreUrl, opts: OpenStoreOptions = {}): OpenedStore {
  const parsed = typeof url === "string" ? parseStoreUrl(url) : url;
  if (parsed.engine !== "sqlite") throw postgresUnavailable(parsed);
  const db = openDatabase(parsed.path, opts.onWarning ? { onWarning: opts.onWarning } : {});
  let secrets: SecretBox | undefined;
  try {
    if (opts.secrets) {
      const meta = new SqliteTables(db);
      secrets = opts.secrets({ get: (k) => meta.getMeta(k), set: (k, v) => meta.setMeta(k, v) });
    }
  } catch (err) {
    db.close();
    throw err;
  }
  const store = new SqliteTables(db, secrets);
  const events = new EventTables(db);
  const alerts = new AlertTables(db);
  const tokens = new TokenTables(db);
  return {
    url: parsed,
    description: describeStoreUrl(parsed),
    store,
    events,
    alerts,
    tokens,
    contract: new SqliteStore(store, events, alerts, tokens, opts.onListenerError),
    close() {
      if (db.open) db.close();
    },
  };
}

/**
 * An online, consistent copy of the store into the file `to` (refused when
 * it exists, unless `force`): a SQLite database file (sqlite-backup.ts), or
 * for PostgreSQL a pg_dump custom-format archive (postgres/backup.ts;
 * `pgBinDir` says where pg_dump is, default /usr/lib/postgresql/<major>/bin
 * then PATH). Throws BackupError (sqlite-backup.ts) with what to do.
 */
export async function backupStore(url: string | StoreUrl, to: string, opts: { force?: boolean; pgBinDir?: string } = {}): Promise<BackupSummary> {
  const parsed = typeof url === "string" ? parseStoreUrl(url) : url;
  if (parsed.engine === "postgres") {
    return backupPostgresDatabase(parsed, to, { force: opts.force ?? false, ...(opts.pgBinDir !== undefined ? { binDir: opts.pgBinDir } : {}) });
  }
  return backupSqliteDatabase(parsed.path, to, { force: opts.force ?? false });
}

function postgresUnavailable(url: StoreUrl): StoreUnavailableError {
  return new StoreUnavailableError(
    `the PostgreSQL store is not yet available in this build (${describeStoreUrl(url)}); use --store sqlite:///path/berth.db`,
  );
}
