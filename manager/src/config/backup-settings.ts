/**
 * The settings of `berth-manager backup` (see settings.ts for how a table
 * becomes flags, environment variables and --help).
 */
import { defineSettings, loadSettings, renderSettingsHelp, type LoadedSettings, type SettingValues } from "./settings.js";
import { effectiveStoreUrl, storeSettings } from "./store-settings.js";

export const BACKUP_SETTINGS = defineSettings({
  to: {
    kind: "string",
    group: "Backup",
    arg: "FILE",
    flagOnly: true,
    help: "write the backup to FILE (a SQLite database file, or for PostgreSQL a pg_dump custom-format archive); refused if FILE exists, unless --force",
  },
  ...storeSettings("Backup"),
  force: { kind: "boolean", group: "Backup", flagOnly: true, default: false, help: "replace FILE if it exists" },
  help: { kind: "boolean", group: "Backup", short: "h", flagOnly: true, default: false, help: "show this help and exit" },
});

export type BackupSettings = SettingValues<typeof BACKUP_SETTINGS>;

/**
 * Reads `berth-manager backup`'s settings (flags > environment > defaults);
 * throws ConfigError naming a bad one. `store` is then the store to copy,
 * whichever of --store and --db named it.
 */
export function loadBackupSettings(argv: readonly string[], env: NodeJS.ProcessEnv): LoadedSettings<typeof BACKUP_SETTINGS> {
  const loaded = loadSettings(BACKUP_SETTINGS, { argv, env });
  return { ...loaded, values: { ...loaded.values, store: effectiveStoreUrl(loaded.values, loaded.sources) } };
}

export function backupUsage(): string {
  return `berth-manager backup: an online copy of the manager's database

Usage: berth-manager backup --to FILE [--store URL | --db PATH] [--force]

Safe while the manager runs: SQLite's online backup copies the database as
of one moment (a single read transaction; the manager keeps writing). The
copy is checked (PRAGMA integrity_check) and written to a temporary file
renamed to FILE at the end, so FILE is never half-written.

PostgreSQL (--store postgres://…): pg_dump --format=custom of one snapshot,
checked with pg_restore --list, written the same way. Needs PostgreSQL's
client tools as new as the server (apt-get install postgresql-client).

${renderSettingsHelp(BACKUP_SETTINGS)}
Restore (docs/reliability.md): stop the manager, copy FILE over the database
and delete the database's -wal and -shm files, start the manager. Servers
created after the backup show up as untracked orphans, not destroyed.
PostgreSQL: stop the managers, then pg_restore --no-owner --exit-on-error
-d URL FILE into an empty database, or add --clean --if-exists to restore
over the existing one.
`;
}
