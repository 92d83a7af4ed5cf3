/**
 * Brings a PostgreSQL database's schema up to date with the numbered list in
 * ../migrations.ts (its `postgres` texts).
 *
 * The version lives in the table schema_migrations (one row per applied
 * version), PostgreSQL's stand-in for SQLite's PRAGMA user_version. Each
 * migration runs in its own transaction, which first takes a transaction-level
 * advisory lock and only then reads the version: several managers starting at
 * once on one database queue on the lock, and each migration is applied by
 * exactly one of them (the others find it applied and go on or return). A
 * migration that fails rolls back whole; the database stays at the version
 * before it.
 */
import pg from "pg";
import { MIGRATIONS } from "../migrations.js";

/**
 * The advisory lock key every migrator takes ("berth" in ASCII): one migration
 * at a time per database. Not the ledger's (LEDGER_LOCK_KEY, event-log.ts).
 */
export const MIGRATION_LOCK_KEY = 0x6265727468n;

/** What one migratePostgres call found and did. */
export interface PostgresMigrationResult {
  /** The version the database was at when this call first looked. */
  from: number;
  /** The version it is at now. */
  to: number;
  /** The versions this call applied (another manager may have applied the rest). */
  applied: number[];
}

/** The schema cannot be brought up to date; the message says why and what to do. */
export class SchemaMigrationError extends Error {
  override readonly name = "SchemaMigrationError";
}

export interface MigratePostgresOptions {
  /** Stop at this version instead of the latest (tests build older databases with it). */
  to?: number;
  /** Called after each version this call commits. */
  onApplied?: (version: number, description: string) => void;
}

/**
 * Applies the pending migrations to the database of `target`: a pool (one
 * connection is checked out for the duration), a connected client, or a
 * connection URL (a connection of its own, closed at the end). Throws
 * SchemaMigrationError for a database newer than this build or a migration
 * that fails; connection errors pass through.
 */
export async function migratePostgres(target: pg.Pool | pg.ClientBase | string, opts: MigratePostgresOptions = {}): Promise<PostgresMigrationResult> {
  if (typeof target === "string") {
    const client = new pg.Client({ connectionString: target });
    // A connection the server drops emits 'error'; without a listener it would crash the process.
    client.on("error", () => {});
    await client.connect();
    try {
      return await migrateWith(client, opts);
    } finally {
      await client.end().catch(() => {});
    }
  }
  if (target instanceof pg.Pool) {
    const client = await target.connect();
    try {
      return await migrateWith(client, opts);
    } finally {
      client.release();
    }
  }
  return migrateWith(target, opts);
}

/**
 * The schema version of the database `client` is connected to: the highest
 * applied migration, 0 for a database that has never been migrated.
 */
export async function postgresSchemaVersion(client: pg.ClientBase): Promise<number> {
  const { rows } = await client.query<{ present: boolean }>("SELECT to_regclass('schema_migrations') IS NOT NULL AS present");
  if (!rows[0]?.present) return 0;
  const v = await client.query<{ v: number }>("SELECT coalesce(max(version), 0)::int AS v FROM schema_migrations");
  return v.rows[0]?.v ?? 0;
}

async function migrateWith(client: pg.ClientBase, opts: MigratePostgresOptions): Promise<PostgresMigrationResult> {
  const latest = MIGRATIONS.length;
  const goal = opts.to ?? latest;
  if (!Number.isInteger(goal) || goal < 0 || goal > latest) throw new RangeError(`migration target ${goal} is not between 0 and ${latest}`);
  let from: number | undefined;
  const applied: number[] = [];
  for (;;) {
    await client.query("BEGIN");
    let applying: number | undefined;
    try {
      // Held until COMMIT/ROLLBACK: the version read below cannot change under us.
      await client.query("SELECT pg_advisory_xact_lock($1)", [MIGRATION_LOCK_KEY.toString()]);
      await client.query(
        `CREATE TABLE IF NOT EXISTS schema_migrations (
           version     INTEGER PRIMARY KEY,
           description TEXT NOT NULL,
           applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
         )`,
      );
      const current = await postgresSchemaVersion(client);
      from ??= current;
      if (current > latest) {
        throw new SchemaMigrationError(
          `database schema version ${current} is newer than this manager knows (${latest}); run a newer berth-manager`,
        );
      }
      if (current >= goal) {
        await client.query("COMMIT");
        return { from, to: current, applied };
      }
      applying = current + 1;
      const m = MIGRATIONS[current]!;
      await client.query(m.postgres);
      await client.query("INSERT INTO schema_migrations (version, description) VALUES ($1, $2)", [applying, m.description]);
      await client.query("COMMIT");
    } catch (err) {
      await client.query("ROLLBACK").catch(() => {});
      if (applying === undefined) throw err;
      const e = err as Error & { code?: string };
      throw new SchemaMigrationError(
        `PostgreSQL migration ${applying} (${MIGRATIONS[applying - 1]!.description}) failed and was rolled back, ` +
          `the database stays at version ${applying - 1}: ${e.code ? `${e.code} ` : ""}${e.message}`,
        { cause: err },
      );
    }
    applied.push(applying);
    opts.onApplied?.(applying, MIGRATIONS[applying - 1]!.description);
  }
}
