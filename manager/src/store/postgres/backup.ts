/**
 * An online backup of a PostgreSQL store with pg_dump, safe while managers run.
 *
 * One read-only REPEATABLE READ transaction exports its snapshot; pg_dump
 * dumps that very snapshot (--snapshot) and the summary's counts are read in
 * it too, so the line the CLI prints describes exactly what the file holds
 * (writes committed meanwhile are in neither). The archive is pg_dump's custom
 * format, written to a temporary file that pg_restore must be able to list,
 * then renamed into place: the target is never half-written.
 *
 * Restore (docs/reliability.md): pg_restore into an empty database, or with
 * --clean --if-exists over the old one, managers stopped.
 */
import { spawn } from "node:child_process";
import { accessSync, closeSync, constants, existsSync, fsyncSync, openSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import pg from "pg";
import { BackupError, type BackupSummary } from "../sqlite/backup.js";
import { describeStoreUrl } from "../store-url.js";
import { postgresConnectionString, type PostgresStoreUrl } from "./connection.js";
import { postgresSchemaVersion } from "./migrate.js";

export interface PostgresBackupOptions {
  /** Replace the target file if it exists. */
  force?: boolean;
  /** Take pg_dump and pg_restore from this directory only (default: the newest /usr/lib/postgresql/<major>/bin, then PATH). */
  binDir?: string;
}

/** Debian's PostgreSQL binaries, one directory per major version. */
const DEBIAN_ROOT = "/usr/lib/postgresql";

/**
 * Dumps the database of `url` into the file `to` (pg_dump --format=custom);
 * throws BackupError saying what to do when it cannot.
 */
export async function backupPostgresDatabase(url: PostgresStoreUrl, to: string, opts: PostgresBackupOptions = {}): Promise<BackupSummary> {
  const source = describeStoreUrl(url);
  const dest = resolve(to);
  if (!existsSync(dirname(dest))) throw new BackupError(`the directory ${dirname(dest)} does not exist; create it first`);
  if (existsSync(dest) && !opts.force) throw new BackupError(`${dest} exists; choose another name, or pass --force to replace it`);
  const pgDump = findPostgresClientTool("pg_dump", opts.binDir);
  const pgRestore = findPostgresClientTool("pg_restore", opts.binDir);

  const client = new pg.Client({ connectionString: postgresConnectionString(url, { password: true }), connectionTimeoutMillis: 10_000 });
  // A connection the server drops emits 'error'; without a listener it would crash the process.
  client.on("error", () => {});
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => {});
    throw new BackupError(`cannot connect to ${source}: ${describe(err)}; check that the server is up and the URL's user, password and database are right`);
  }
  const tmp = `${dest}.partial-${process.pid}`;
  try {
    await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    const snapshot = (await client.query<{ s: string }>("SELECT pg_export_snapshot() AS s")).rows[0]!.s;
    const schemaVersion = await postgresSchemaVersion(client);
    if (schemaVersion === 0) throw new BackupError(`${source} holds no berth schema (no schema_migrations table); is this the manager's database?`);
    const count = async (sql: string) => Number((await client.query<{ n: string }>(sql)).rows[0]!.n);
    const servers = await count("SELECT count(*) AS n FROM servers");
    const hosts = await count("SELECT count(*) AS n FROM hosts");
    const lastEventId = await count("SELECT coalesce(max(id), 0) AS n FROM events");

    rmSync(tmp, { force: true });
    // The dump holds what the database holds (env secrets): private from its first byte.
    // pg_dump writes into the existing file, which keeps this mode.
    closeSync(openSync(tmp, "wx", 0o600));
    const env: NodeJS.ProcessEnv = { ...process.env, PGCONNECT_TIMEOUT: process.env.PGCONNECT_TIMEOUT ?? "10" };
    // The password goes in the environment, never on a command line others can read.
    if (url.password !== undefined) env.PGPASSWORD = url.password;
    const dump = await run(
      pgDump,
      ["--format=custom", `--file=${tmp}`, `--snapshot=${snapshot}`, "--no-password", `--dbname=${postgresConnectionString(url, { password: false })}`],
      env,
    );
    if (dump.code !== 0) throw new BackupError(`pg_dump (${pgDump}) failed with exit code ${dump.code}: ${lastLines(dump.stderr)}`);
    const list = await run(pgRestore, ["--list", tmp], env);
    if (list.code !== 0) throw new BackupError(`the dump cannot be read back (pg_restore --list: ${lastLines(list.stderr)}); try again, and check the disk holding ${dirname(dest)}`);
    await client.query("COMMIT");

    fsyncPath(tmp);
    renameSync(tmp, dest);
    fsyncPath(dirname(dest));
    return { source, file: dest, bytes: statSync(dest).size, schemaVersion, servers, hosts, lastEventId };
  } catch (err) {
    rmSync(tmp, { force: true });
    if (err instanceof BackupError) throw err;
    throw new BackupError(`backing up ${source} failed: ${describe(err)}`);
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * The path of a PostgreSQL client program: from `binDir` only when given,
 * else the newest /usr/lib/postgresql/<major>/bin (pg_dump must be at least
 * as new as the server), else PATH. Throws BackupError naming the package.
 */
export function findPostgresClientTool(name: "pg_dump" | "pg_restore", binDir?: string): string {
  const dirs = binDir !== undefined ? [binDir] : [...debianBinDirs(), ...(process.env.PATH ?? "").split(":").filter(Boolean)];
  for (const dir of dirs) {
    const path = join(dir, name);
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // not here
    }
  }
  throw new BackupError(
    `${name} not found (looked in ${binDir ?? `${DEBIAN_ROOT}/*/bin and PATH`}); install the PostgreSQL client tools, ` +
      `as new as the server: apt-get install postgresql-client (Debian/Ubuntu)`,
  );
}

function debianBinDirs(): string[] {
  if (!existsSync(DEBIAN_ROOT)) return [];
  return readdirSync(DEBIAN_ROOT)
    .filter((d) => /^\d+(\.\d+)?$/.test(d))
    .sort((a, b) => Number(b) - Number(a))
    .map((d) => join(DEBIAN_ROOT, d, "bin"));
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stderr: string }> {
  return new Promise((resolveRun) => {
    const child = spawn(cmd, args, { env, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      // Keep the end: that is where the reason is.
      stderr = (stderr + d).slice(-8_000);
    });
    child.on("error", (err) => resolveRun({ code: -1, stderr: err.message }));
    child.on("close", (code, signal) => resolveRun({ code: code ?? -1, stderr: signal ? `${stderr}\nkilled by ${signal}` : stderr }));
  });
}

function lastLines(text: string, n = 5): string {
  return text.trim().split("\n").slice(-n).join(" / ") || "no message";
}

function describe(err: unknown): string {
  const e = err as Error & { code?: string };
  return `${e.code ? `${e.code}: ` : ""}${e.message ?? String(err)}`;
}

function fsyncPath(path: string): void {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
