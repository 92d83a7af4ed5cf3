// backupStore on a PostgreSQL store, for real: pg_dump into a file, then the restore
// docs/reliability.md describes (pg_restore into a new database, or --clean over
// the old one) gives back the same rows, while writes go on during the backup.
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { createDatabase, dropDatabase, uniqueDatabaseName } from "../../../../test/harness/postgres.js";
import { requirePostgres } from "../../../../test/harness/postgres-tests.js";
import { MIGRATIONS } from "../migrations.js";
import { backupStore } from "../open.js";
import { BackupError } from "../sqlite/backup.js";
import { findPostgresClientTool } from "./backup.js";
import { migratePostgres } from "./migrate.js";

const provided = requirePostgres();
const T0 = 1_700_000_000_000;
const execFileAsync = promisify(execFile);

/** Every table's rows in a stable order, for comparing two databases. */
const TABLES: Record<string, string> = {
  meta: "key",
  hosts: "id",
  enrollment_tokens: "id",
  servers: "id",
  observed_containers: "host_id, container_id",
  data_dirs: "host_id, server_id",
  commands: "id",
  events: "id",
  projects: "name",
  tokens: "id",
  alerts: "id",
  data_root_entries: "host_id, name",
  server_ports: "host_id, protocol, host_port",
  backup_targets: "id",
  backups: "id",
  schema_migrations: "version",
};

describe.skipIf(!provided.url)("backupStore on PostgreSQL (pg_dump)", () => {
  const server = provided.url!;
  const made: string[] = [];
  const clients: pg.Client[] = [];
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "berth-pg-backup-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  afterAll(async () => {
    for (const c of clients.splice(0)) await c.end().catch(() => {});
    for (const name of made) await dropDatabase(server, name);
  });

  async function freshDatabase(): Promise<string> {
    const name = uniqueDatabaseName("backup");
    made.push(name);
    return createDatabase(server, name);
  }

  async function connect(url: string): Promise<pg.Client> {
    const c = new pg.Client({ connectionString: url });
    c.on("error", () => {});
    await c.connect();
    clients.push(c);
    return c;
  }

  /** A migrated database holding a little of everything. */
  async function populated(): Promise<{ url: string; c: pg.Client }> {
    const url = await freshDatabase();
    await migratePostgres(url);
    const c = await connect(url);
    await c.query("INSERT INTO meta (key, value) VALUES ('manager_id', 'mgr_1')");
    await c.query("INSERT INTO hosts (id, name, secret_hash, created_at, online, facts_json) VALUES ('host_a', 'a', 'h', $1, 1, '{\"cpus\":2}')", [T0]);
    for (const [id, name, port] of [["srv_a", "mc", 25565], ["srv_b", "db", 5432]] as const) {
      await c.query(
        `INSERT INTO servers (id, project, name, host_id, generation, spec_json, status_json, phase, created_at, updated_at)
         VALUES ($1, 'default', $2, 'host_a', 1, $3, '{}', 'RUNNING', $4, $4)`,
        [id, name, JSON.stringify({ name, ports: [{ hostPort: port }] }), T0],
      );
      await c.query("INSERT INTO server_ports (host_id, protocol, host_port, server_id) VALUES ('host_a', 'tcp', $1, $2)", [port, id]);
    }
    await c.query(
      "INSERT INTO commands (id, server_id, host_id, kind, payload, state, created_at, deadline_at) VALUES ('cmd_1', 'srv_a', 'host_a', '1', $1, 'pending', $2, $3)",
      [Buffer.from([0, 1, 2, 255]), T0, T0 + 1000],
    );
    await c.query("INSERT INTO tokens (id, name, role, secret_hash, created_at) VALUES ('tok_1', 'admin', 'admin', 'sha', $1)", [T0]);
    for (let i = 0; i < 3; i++) await c.query("INSERT INTO events (time, type, server_id) VALUES ($1, 'server.created', 'srv_a')", [T0 + i]);
    await c.query("INSERT INTO backup_targets (id, name, config_json, sealed_secret, created_at) VALUES ('btg_1', 'nas', '{\"kind\":\"directory\",\"path\":\"/mnt/nas\",\"shared\":true}', '', $1)", [T0]);
    await c.query(
      `INSERT INTO backups (id, server_id, server_name, project, host_id, target_id, key, state, compression, archive_bytes, locked, created_at, started_at, finished_at)
       VALUES ('bkp_1', 'srv_a', 'mc', 'default', 'host_a', 'btg_1', 'srv_a/bkp_1.tar.gz', 'succeeded', 'gzip', 12345678901, 1, $1, $1, $2)`,
      [T0, T0 + 5],
    );
    return { url, c };
  }

  async function rows(c: pg.Client): Promise<Record<string, unknown[]>> {
    const out: Record<string, unknown[]> = {};
    for (const [table, order] of Object.entries(TABLES)) {
      // applied_at is when this database applied it: compared as the rest of the row.
      out[table] = (await c.query(`SELECT * FROM ${table} ORDER BY ${order}`)).rows;
    }
    return out;
  }

  /** The documented restore, with the pg_restore next to the pg_dump backupStore uses. */
  async function pgRestore(args: string[]): Promise<void> {
    await execFileAsync(findPostgresClientTool("pg_restore"), ["--no-owner", "--exit-on-error", ...args]);
  }

  it("dumps a migrated database that pg_restore brings back into a new database row for row", async () => {
    const { url, c } = await populated();
    const to = join(dir, "berth.dump");
    const summary = await backupStore(url, to);
    expect(summary).toEqual({
      source: url.replace(/\/$/, ""),
      file: to,
      bytes: statSync(to).size,
      schemaVersion: MIGRATIONS.length,
      servers: 2,
      hosts: 1,
      lastEventId: 3,
    });
    expect(statSync(to).mode & 0o777).toBe(0o600);
    expect(readFileSync(to).subarray(0, 5).toString()).toBe("PGDMP"); // pg_dump's custom format
    expect(existsSync(`${to}.partial-${process.pid}`)).toBe(false);

    const restored = await freshDatabase();
    await pgRestore(["--dbname", restored, to]);
    const r = await connect(restored);
    expect(await rows(r)).toEqual(await rows(c));
    // The restored database is a working store: it is at the latest version already,
    // its invariants hold, and new event ids continue after the old ones.
    expect(await migratePostgres(restored)).toMatchObject({ from: MIGRATIONS.length, applied: [] });
    const dup = await r.query("INSERT INTO server_ports (host_id, protocol, host_port, server_id) VALUES ('host_a', 'tcp', 25565, 'srv_x')").catch((e: { constraint?: string }) => e.constraint);
    expect(dup).toBe("server_ports_pkey");
    expect((await r.query("INSERT INTO events (time, type) VALUES ($1, 'x') RETURNING id", [T0])).rows[0].id).toBe("4");
  });

  it("pg_restore --clean --if-exists over the same database puts back what the backup held", async () => {
    const { url, c } = await populated();
    const before = await rows(c);
    const to = join(dir, "berth.dump");
    await backupStore(url, to);
    // Changes after the backup: a server purged, events added.
    await c.query("DELETE FROM server_ports WHERE server_id = 'srv_b'");
    await c.query("DELETE FROM servers WHERE id = 'srv_b'");
    await c.query("INSERT INTO events (time, type) VALUES ($1, 'late')", [T0]);
    await pgRestore(["--clean", "--if-exists", "--dbname", url, to]);
    expect(await rows(c)).toEqual(before);
  });

  it("describes exactly what the file holds while writes go on during the backup", async () => {
    const { url } = await populated();
    const writer = await connect(url);
    let stop = false;
    let written = 0;
    const writing = (async () => {
      while (!stop) {
        await writer.query("INSERT INTO events (time, type) VALUES ($1, 'busy')", [T0]);
        written++;
      }
    })();
    const to = join(dir, "busy.dump");
    let summary;
    try {
      // Let the writer get going, so the backup starts in the middle of it.
      while (written < 20) await new Promise((r) => setTimeout(r, 5));
      summary = await backupStore(url, to);
    } finally {
      stop = true;
      await writing;
    }
    const restored = await freshDatabase();
    await pgRestore(["--dbname", restored, to]);
    const r = await connect(restored);
    const { rows: got } = await r.query<{ max: string; n: string }>("SELECT max(id) AS max, count(*) AS n FROM events");
    // The printed "events up to #N" is the restored ledger's last event, with no gap before it.
    expect(Number(got[0]!.max)).toBe(summary.lastEventId);
    expect(Number(got[0]!.n)).toBe(summary.lastEventId);
    expect(summary.lastEventId).toBeGreaterThan(3);
  });

  it("refuses an existing file unless forced, and replaces it whole when forced", async () => {
    const { url } = await populated();
    const to = join(dir, "berth.dump");
    writeFileSync(to, "keep me");
    const err = await backupStore(url, to).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackupError);
    expect((err as Error).message).toBe(`${to} exists; choose another name, or pass --force to replace it`);
    expect(readFileSync(to, "utf8")).toBe("keep me");
    await backupStore(url, to, { force: true });
    expect(readFileSync(to).subarray(0, 5).toString()).toBe("PGDMP");
  });

  it("says which package to install when pg_dump is missing, and writes nothing", async () => {
    const { url } = await populated();
    const empty = mkdtempSync(join(dir, "bin-"));
    const to = join(dir, "berth.dump");
    const err = await backupStore(url, to, { pgBinDir: empty }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackupError);
    expect((err as Error).message).toBe(`pg_dump not found (looked in ${empty}); install the PostgreSQL client tools, as new as the server: apt-get install postgresql-client (Debian/Ubuntu)`);
    expect(existsSync(to)).toBe(false);
  });

  it("refuses a database without berth's schema, and a server that does not answer, without a password in the message", async () => {
    const empty = await freshDatabase();
    const to = join(dir, "berth.dump");
    await expect(backupStore(empty, to)).rejects.toThrow(/holds no berth schema \(no schema_migrations table\); is this the manager's database\?$/);
    const down = await backupStore("postgres://berth:hunter2@127.0.0.1:1/berth", to).catch((e: unknown) => e);
    expect(down).toBeInstanceOf(BackupError);
    expect((down as Error).message).toMatch(/^cannot connect to postgres:\/\/berth:…@127\.0\.0\.1:1\/berth: .*ECONNREFUSED.*; check that the server is up/);
    expect((down as Error).message).not.toContain("hunter2");
    expect(existsSync(to)).toBe(false);
    expect(readdirSync(dir)).toEqual([]);
  });
});
