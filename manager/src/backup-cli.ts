/**
 * `berth-manager backup --to FILE [--store URL | --db PATH]`: an online copy
 * of the manager's store, safe while the manager runs. How the copy is made
 * is the store engine's business (store/sqlite-backup.ts for SQLite,
 * store/postgres/backup.ts's pg_dump for PostgreSQL).
 */
import { backupUsage, loadBackupSettings } from "./config/backup-settings.js";
import { ConfigError } from "./config/settings.js";
import { backupStore } from "./store/open.js";
import { BackupError } from "./store/sqlite/backup.js";

/** `berth-manager backup ...`; returns the process exit code (2: usage, 1: the backup failed). */
export async function runBackupCommand(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  let settings;
  try {
    settings = loadBackupSettings(args, env).values;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`berth-manager backup: ${err.message}\n\n${backupUsage()}`);
    return 2;
  }
  if (settings.help) {
    process.stdout.write(backupUsage());
    return 0;
  }
  if (!settings.to) {
    process.stderr.write(`berth-manager backup: --to FILE is required\n\n${backupUsage()}`);
    return 2;
  }
  try {
    const s = await backupStore(settings.store, settings.to, { force: settings.force });
    process.stdout.write(
      `backed up ${s.source} to ${s.file} (${s.bytes} bytes, schema version ${s.schemaVersion}: ` +
        `${s.servers} servers, ${s.hosts} hosts, events up to #${s.lastEventId})\n`,
    );
    return 0;
  } catch (err) {
    if (!(err instanceof BackupError)) throw err;
    process.stderr.write(`berth-manager backup: ${err.message}\n`);
    return 1;
  }
}
