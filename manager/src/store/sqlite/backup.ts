/**
 * An online copy of a SQLite store, safe while the manager runs.
 *
 * SQLite's backup API (better-sqlite3's `db.backup()`) is asked to copy every
 * page in one step, which it does inside one read transaction: the copy is
 * the database as of one moment, and in WAL mode the manager keeps writing
 * meanwhile (a copy made in many small steps would restart each time the
 * manager wrote, and might never finish on a busy manager). The copy is
 * checked with `PRAGMA integrity_check` and renamed into place only then.
 */
import { closeSync, existsSync, fsyncSync, openSync, renameSync, rmSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import Database from "better-sqlite3";

/** What a backup holds, for the line the CLI prints. */
export interface BackupSummary {
  /** The database copied (absolute). */
  source: string;
  file: string;
  bytes: number;
  schemaVersion: number;
  servers: number;
  hosts: number;
  lastEventId: number;
}

/** A backup that cannot be made; the message says why and what to do. */
export class BackupError extends Error {
  override readonly name = "BackupError";
}

/** Copies the SQLite database at `dbPath` to `to` (which must not exist yet unless `force`). */
export async function backupSqliteDatabase(dbPath: string, to: string, opts: { force?: boolean } = {}): Promise<BackupSummary> {
  const src = resolve(dbPath);
  const dest = resolve(to);
  if (!existsSync(src)) throw new BackupError(`no database at ${src}; pass --store sqlite://PATH or --db PATH (or set BERTH_STORE or BERTH_DB)`);
  if (src === dest) throw new BackupError("--to names the database itself; choose another file");
  if (!existsSync(dirname(dest))) throw new BackupError(`the directory ${dirname(dest)} does not exist; create it first`);
  if (existsSync(dest) && !opts.force) throw new BackupError(`${dest} exists; choose another name, or pass --force to replace it`);

  const tmp = `${dest}.partial-${process.pid}`;
  rmSync(tmp, { force: true });
  // The copy holds what the database holds (env secrets): private from its first byte.
  closeSync(openSync(tmp, "wx", 0o600));
  try {
    const db = new Database(src, { readonly: true, fileMustExist: true });
    try {
      db.pragma("busy_timeout = 5000");
      // The first step only starts the backup; the second copies every page at once.
      await db.backup(tmp, { progress: () => 0x7fffffff });
    } finally {
      db.close();
    }
    const copy = new Database(tmp, { fileMustExist: true });
    let summary: Omit<BackupSummary, "source" | "file" | "bytes">;
    try {
      const integrity = copy.pragma("integrity_check", { simple: true });
      if (integrity !== "ok") throw new BackupError(`the copy failed its integrity check (${String(integrity)}); the database itself may be damaged: run PRAGMA integrity_check on it`);
      const count = (table: string) => (copy.prepare(`SELECT count(*) FROM ${table}`).pluck().get() as number) ?? 0;
      summary = {
        schemaVersion: copy.pragma("user_version", { simple: true }) as number,
        servers: count("servers"),
        hosts: count("hosts"),
        lastEventId: (copy.prepare("SELECT coalesce(max(id), 0) FROM events").pluck().get() as number) ?? 0,
      };
    } finally {
      // Closing the last connection checkpoints the copy into one self-contained file.
      copy.close();
    }
    fsyncPath(tmp);
    renameSync(tmp, dest);
    fsyncPath(dirname(dest));
    return { source: src, file: dest, bytes: statSync(dest).size, ...summary };
  } catch (err) {
    for (const f of [tmp, `${tmp}-wal`, `${tmp}-shm`]) rmSync(f, { force: true });
    if (err instanceof BackupError) throw err;
    const e = err as Error & { code?: string };
    throw new BackupError(`backing up ${src} failed: ${e.code ? `${e.code}: ` : ""}${e.message}`);
  }
}

function fsyncPath(path: string): void {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
