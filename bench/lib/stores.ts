/**
 * The stores the scale suite can run on (`--stores`): the embedded SQLite
 * file (the default, one manager), or PostgreSQL with one or several
 * managers sharing one database. PostgreSQL is a private server this run
 * starts (test/harness/postgres.ts: initdb template + pg_ctl, as the
 * `postgres` user when root), one fresh database per configuration, stopped
 * when the run ends.
 */
import { execFile } from "node:child_process";
import { chmod, mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { sqliteStoreUrl } from "../../manager/src/store/store-url.js";
import { createDatabase, dropDatabase, startPostgres, uniqueDatabaseName, type PostgresServer } from "../../test/harness/postgres.js";

/** One column of the side-by-side table: which engine, how many managers. */
export interface StoreConfig {
  /** As given to --stores: sqlite, postgres, postgres-N. */
  label: string;
  engine: "sqlite" | "postgres";
  managers: number;
}

/** What a configuration runs on, once provisioned for one suite run. */
export interface ProvisionedStore {
  config: StoreConfig;
  /** The URL the seed opens (openStore). */
  url: string;
  /** How startManager is pointed at it: `--db PATH` for SQLite (as before), else `--store URL`. */
  manager: { dbPath: string } | { store: string; secretKeyFile: string };
  /** Removes what provisioning made outside the suite's temp dir (the database). */
  release(): Promise<void>;
}

export const STORES_HELP = "sqlite (one manager on a SQLite file), postgres (one manager), postgres-N (N managers on one database)";

/** Parses `--stores sqlite,postgres,postgres-2`; throws a message naming the bad entry. */
export function parseStores(text: string): StoreConfig[] {
  const out: StoreConfig[] = [];
  for (const raw of text.split(",").map((s) => s.trim()).filter(Boolean)) {
    const m = /^(sqlite|postgres)(?:-(\d+))?$/.exec(raw);
    const managers = m?.[2] === undefined ? 1 : Number(m[2]);
    if (!m || managers < 1 || (m[1] === "sqlite" && managers !== 1)) {
      throw new Error(`--stores: "${raw}" is not one of ${STORES_HELP}`);
    }
    if (out.some((c) => c.label === raw)) throw new Error(`--stores: "${raw}" is listed twice`);
    out.push({ label: raw, engine: m[1] as StoreConfig["engine"], managers });
  }
  if (out.length === 0) throw new Error(`--stores names no store; use ${STORES_HELP}`);
  return out;
}

/**
 * PostgreSQL settings for the bench: durable writes (fsync, full pages),
 * commits not waiting for their WAL flush (synchronous_commit off) — the
 * same promise as the SQLite store's WAL with synchronous=NORMAL (a crash of
 * the process loses nothing; a power cut may lose the last commits). The
 * harness's test defaults (fsync off) would flatter PostgreSQL.
 */
const BENCH_PG_SETTINGS = { fsync: "on", full_page_writes: "on", synchronous_commit: "off" };

let server: Promise<PostgresServer> | undefined;

/** The run's PostgreSQL server, started on first use. */
function postgres(): Promise<PostgresServer> {
  server ??= startPostgres({ settings: BENCH_PG_SETTINGS });
  return server;
}

/** Where the run's PostgreSQL keeps its data (for the report's notes), if one was started. */
export async function postgresDataDir(): Promise<string | undefined> {
  return server?.then((s) => s.dataDir).catch(() => undefined);
}

/**
 * Stops the run's PostgreSQL server, if one was started, and removes it.
 * With `keep`, its data directory is first copied (`cp -a`: the `postgres`
 * user must still own it) to a directory of its own in the temp dir, since
 * the harness sweeps servers of finished processes from its root; resolves
 * to that directory. Safe to call twice.
 */
export async function stopPostgres(opts: { keep?: boolean } = {}): Promise<string | undefined> {
  const s = server;
  server = undefined;
  if (!s) return undefined;
  const pg = await s;
  let kept: string | undefined;
  if (opts.keep) {
    await pg.stopServer();
    kept = await mkdtemp(join(tmpdir(), "berth-bench-postgres-"));
    // mkdtemp makes it 0700: the postgres user must reach the data directory inside.
    await chmod(kept, 0o755);
    await promisify(execFile)("cp", ["-a", pg.dataDir, join(kept, "data")]);
  }
  await pg.stop();
  return kept;
}

/** Makes the store of one configuration: a file in `dir`, or a fresh PostgreSQL database. */
export async function provisionStore(config: StoreConfig, dir: string): Promise<ProvisionedStore> {
  if (config.engine === "sqlite") {
    const dbPath = join(dir, "berth.db");
    return { config, url: sqliteStoreUrl(dbPath), manager: { dbPath }, release: async () => {} };
  }
  const pg = await postgres();
  const name = uniqueDatabaseName(`berth_bench_${config.label.replace(/[^a-z0-9]/g, "_")}`);
  const url = await createDatabase(pg.url, name);
  return {
    config,
    url,
    // Several managers of one database must share its secret key; the first start creates it.
    manager: { store: url, secretKeyFile: join(dir, "secret.key") },
    release: () => dropDatabase(pg.url, name),
  };
}
