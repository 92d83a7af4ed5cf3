import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { runBackupCommand } from "./backup-cli.js";
import { loadBackupSettings } from "./config/backup-settings.js";
import { ConfigError } from "./config/settings.js";
import { openDatabase } from "./store/sqlite/database.js";
import { MIGRATIONS } from "./store/migrations.js";
import { migratePostgres } from "./store/postgres/migrate.js";
import { requirePostgres, useTestDatabase } from "../../test/harness/postgres-tests.js";

const pgServer = requirePostgres();

/** Runs the command in-process and returns its exit code and what it printed. */
async function backupCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  const out = vi.spyOn(process.stdout, "write").mockImplementation((chunk) => ((stdout += String(chunk)), true));
  const err = vi.spyOn(process.stderr, "write").mockImplementation((chunk) => ((stderr += String(chunk)), true));
  try {
    return { code: await runBackupCommand(args, env), stdout, stderr };
  } finally {
    out.mockRestore();
    err.mockRestore();
  }
}

describe("berth-manager backup", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "berth-backup-cli-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("settings: --to, --store or BERTH_STORE, --db or BERTH_DB as sqlite://PATH, --force; unknown flags refused", () => {
    expect(loadBackupSettings(["--to", "/b.db"], {}).values).toMatchObject({ to: "/b.db", store: "sqlite://./data/berth.db", force: false });
    expect(loadBackupSettings(["--to", "/b.db"], { BERTH_DB: "/x.db" }).values.store).toBe("sqlite:///x.db");
    expect(loadBackupSettings(["--to", "/b.db"], { BERTH_STORE: "sqlite:///s.db" }).values.store).toBe("sqlite:///s.db");
    expect(loadBackupSettings(["--to", "/b.db", "--db", "/y.db", "--force"], { BERTH_DB: "/x.db" }).values).toMatchObject({ store: "sqlite:///y.db", force: true });
    expect(loadBackupSettings(["--to", "/b.db", "--store", "sqlite://./rel.db"], {}).values.store).toBe("sqlite://./rel.db");
    expect(() => loadBackupSettings(["--listen", "x"], {})).toThrow(ConfigError);
  });

  it("--store sqlite://PATH backs up that database", async () => {
    const dbPath = join(dir, "berth.db");
    openDatabase(dbPath).close();
    const to = join(dir, "copy.db");
    const r = await backupCli(["--to", to, "--store", `sqlite://${dbPath}`]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^backed up ${dbPath} to ${to} \\(\\d+ bytes, schema version \\d+: 0 servers, 0 hosts, events up to #0\\)\\n$`));
    const copy = new Database(to, { readonly: true });
    expect(copy.pragma("integrity_check", { simple: true })).toBe("ok");
    copy.close();
  });

  it("--store and --db together, or an unknown kind of store, is a usage error (exit 2) that copies nothing", async () => {
    const dbPath = join(dir, "berth.db");
    openDatabase(dbPath).close();
    const to = join(dir, "copy.db");

    const both = await backupCli(["--to", to, "--store", `sqlite://${dbPath}`, "--db", dbPath]);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/^berth-manager backup: use either --store \(BERTH_STORE\) or --db \(BERTH_DB\), not both; --db PATH is short for --store sqlite:\/\/PATH\n\nberth-manager backup: an online copy/);
    const mixed = await backupCli(["--to", to, "--db", dbPath], { BERTH_STORE: `sqlite://${dbPath}` });
    expect(mixed.code).toBe(2);
    expect(mixed.stderr).toContain("use either --store (BERTH_STORE) or --db (BERTH_DB), not both");

    const mysql = await backupCli(["--to", to, "--store", "mysql://u:hunter2@h/berth"]);
    expect(mysql.code).toBe(2);
    expect(mysql.stderr).toMatch(
      /^berth-manager backup: invalid --store \(BERTH_STORE\) "mysql:\/\/u:…@h\/berth" on the command line: unknown store "mysql:"; use sqlite:\/\/\/abs\/path\/berth\.db, sqlite:\/\/\.\/relative\/berth\.db or postgres:\/\/user@host:5432\/database\n\nberth-manager backup: an online copy/,
    );
    expect(mysql.stderr).not.toContain("hunter2");
    expect(existsSync(to)).toBe(false);
  });

  it("--help says how a PostgreSQL store is backed up and restored", async () => {
    const r = await backupCli(["--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("pg_dump --format=custom");
    expect(r.stdout).toContain("apt-get install postgresql-client");
    expect(r.stdout).toContain("pg_restore --no-owner --exit-on-error");
  });

  it("a PostgreSQL server that does not answer fails the backup (exit 1) in one line without the password", async () => {
    const to = join(dir, "copy.dump");
    const r = await backupCli(["--to", to, "--store", "postgres://berth:hunter2@127.0.0.1:1/berth"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^berth-manager backup: cannot connect to postgres:\/\/berth:…@127\.0\.0\.1:1\/berth: .*ECONNREFUSED.*\n$/);
    expect(r.stderr).not.toContain("hunter2");
    expect(existsSync(to)).toBe(false);
  });

  describe.skipIf(!pgServer.url)("on PostgreSQL", () => {
    const db = useTestDatabase("backup_cli");

    it("--store postgres://… dumps that database with pg_dump and prints what it holds", async () => {
      await migratePostgres(db.url);
      const to = join(dir, "copy.dump");
      const r = await backupCli(["--to", to, "--store", db.url]);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^backed up ${db.url.replace(/\/$/, "")} to ${to} \\(\\d+ bytes, schema version ${MIGRATIONS.length}: 0 servers, 0 hosts, events up to #0\\)\\n$`));
      expect(readFileSync(to).subarray(0, 5).toString()).toBe("PGDMP");
    });
  });
});
