// The numbered migrations on a real PostgreSQL (the run's server, test/harness):
// a fresh database reaches the latest version, its schema matches SQLite's after
// the same list (names, columns, indexes, constraints), the invariants of
// migration 7 hold, an older database upgrades the way SQLite's does, and two
// managers starting at once never both migrate.
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { create, toJsonString } from "@bufbuild/protobuf";
import { PortMappingSchema, Protocol, ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import { createDatabase, dropDatabase, uniqueDatabaseName } from "../../../../test/harness/postgres.js";
import { requirePostgres } from "../../../../test/harness/postgres-tests.js";
import { openDatabase } from "../sqlite/database.js";
import { MIGRATIONS } from "../migrations.js";
import { migratePostgres, SchemaMigrationError } from "./migrate.js";

const provided = requirePostgres();
const LATEST = MIGRATIONS.length;
const T0 = 1_700_000_000_000;

describe.skipIf(!provided.url)("PostgreSQL migrations", () => {
  const server = provided.url!;
  const made: string[] = [];
  const clients: pg.Client[] = [];
  afterAll(async () => {
    for (const c of clients.splice(0)) await c.end().catch(() => {});
    for (const name of made) await dropDatabase(server, name);
  });

  /** A new empty database (created with `extra` CREATE DATABASE options when given and supported). */
  async function freshDatabase(extra?: string): Promise<string> {
    const name = uniqueDatabaseName("migrate");
    made.push(name);
    if (extra) {
      const admin = await connect(server);
      try {
        await admin.query(`CREATE DATABASE "${name}" TEMPLATE template0 ENCODING 'UTF8' ${extra}`);
        const u = new URL(server);
        u.pathname = `/${name}`;
        return u.toString();
      } catch {
        // A server without that option (an external one, say): a plain database still tests the rest.
      } finally {
        await admin.end();
      }
    }
    return createDatabase(server, name);
  }

  async function connect(url: string): Promise<pg.Client> {
    const c = new pg.Client({ connectionString: url });
    c.on("error", () => {});
    await c.connect();
    clients.push(c);
    return c;
  }

  async function versions(c: pg.Client): Promise<number[]> {
    return (await c.query<{ version: number }>("SELECT version FROM schema_migrations ORDER BY version")).rows.map((r) => r.version);
  }

  it("brings a fresh database to the latest version, one schema_migrations row per version, and a second run applies nothing", async () => {
    const url = await freshDatabase();
    const applied: number[] = [];
    const first = await migratePostgres(url, { onApplied: (v) => applied.push(v) });
    const all = MIGRATIONS.map((_, i) => i + 1);
    expect(first).toEqual({ from: 0, to: LATEST, applied: all });
    expect(applied).toEqual(all);
    const c = await connect(url);
    const rows = (await c.query<{ version: number; description: string }>("SELECT version, description FROM schema_migrations ORDER BY version")).rows;
    expect(rows).toEqual(MIGRATIONS.map((m, i) => ({ version: i + 1, description: m.description })));
    // A pool works as well as a URL, and an up-to-date database is left as it is.
    const pool = new pg.Pool({ connectionString: url, max: 1 });
    try {
      expect(await migratePostgres(pool)).toEqual({ from: LATEST, to: LATEST, applied: [] });
    } finally {
      await pool.end();
    }
    expect(await versions(c)).toEqual(all);
  });

  it("two managers migrating one fresh database at once both succeed, and each version is applied exactly once", async () => {
    const url = await freshDatabase();
    const [a, b] = await Promise.all([migratePostgres(url), migratePostgres(url)]);
    expect(a.to).toBe(LATEST);
    expect(b.to).toBe(LATEST);
    // Between them they applied every version, none twice.
    expect([...a.applied, ...b.applied].sort((x, y) => x - y)).toEqual(MIGRATIONS.map((_, i) => i + 1));
    expect(await versions(await connect(url))).toEqual(MIGRATIONS.map((_, i) => i + 1));
  });

  it("refuses a database from a newer schema and changes nothing", async () => {
    const url = await freshDatabase();
    await migratePostgres(url);
    const c = await connect(url);
    await c.query("INSERT INTO schema_migrations (version, description) VALUES ($1, 'from the future')", [LATEST + 1]);
    const err = await migratePostgres(url).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SchemaMigrationError);
    expect((err as Error).message).toMatch(new RegExp(`schema version ${LATEST + 1} is newer than this manager knows \\(${LATEST}\\); run a newer berth-manager`));
  });

  it("rolls a failing migration back whole and says at which version the database stays", async () => {
    const url = await freshDatabase();
    await migratePostgres(url, { to: 3 });
    const c = await connect(url);
    // Something in the way of migration 4's last statement (it creates alerts, then indexes on events).
    await c.query("CREATE INDEX events_type ON events (time)");
    const err = await migratePostgres(url).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SchemaMigrationError);
    expect((err as Error).message).toMatch(/^PostgreSQL migration 4 \(alerts, and event indexes for ledger filters and retention\) failed and was rolled back, the database stays at version 3: 42P07 relation "events_type" already exists$/);
    expect(await versions(c)).toEqual([1, 2, 3]);
    // Nothing of migration 4 stayed behind, not even the statements before the failing one.
    expect((await c.query("SELECT to_regclass('alerts') AS t, to_regclass('events_time') AS i")).rows).toEqual([{ t: null, i: null }]);
    // Once the obstacle is gone the same call finishes the job.
    await c.query("DROP INDEX events_type");
    expect(await migratePostgres(url)).toMatchObject({ from: 3, to: LATEST, applied: MIGRATIONS.slice(3).map((_, i) => i + 4) });
  });

  it("builds the same tables, columns, indexes and constraints as SQLite (types mapped as migrations.ts lists)", async () => {
    const url = await freshDatabase();
    await migratePostgres(url);
    const c = await connect(url);
    const sqlite = openDatabase(":memory:");
    try {
      const fromPg = await postgresSchema(c);
      const fromSqlite = sqliteSchema(sqlite);
      expect(Object.keys(fromPg.tables).sort()).toEqual(Object.keys(fromSqlite.tables).sort());
      for (const table of Object.keys(fromSqlite.tables)) expect({ table, columns: fromPg.tables[table] }).toEqual({ table, columns: fromSqlite.tables[table] });
      expect(fromPg.indexes).toEqual(fromSqlite.indexes);
      // The names the store maps violations by.
      const names = fromPg.indexes.map((i) => i.name);
      expect(names).toEqual(expect.arrayContaining(["commands_one_open", "server_ports_pkey", "servers_project_name", "alerts_one_firing"]));
      // Text compares as bytes, as in SQLite, whatever the database's locale.
      expect(fromPg.textCollations).toEqual(["C"]);
    } finally {
      sqlite.close();
    }
  });

  it("holds migration 7's invariants: a violation names the constraint the store maps", async () => {
    const url = await freshDatabase();
    await migratePostgres(url);
    const c = await connect(url);
    const violation = (p: Promise<unknown>) =>
      p.then(
        () => "accepted",
        (e: { code?: string; constraint?: string }) => `${e.code} ${e.constraint}`,
      );

    const insertCommand = "INSERT INTO commands (id, server_id, host_id, kind, payload, state, created_at, deadline_at) VALUES ($1, $2, 'host_a', '1', $3, $4, $5, $6)";
    await c.query(insertCommand, ["cmd_1", "srv_a", Buffer.from([1, 2]), "pending", T0, T0 + 1000]);
    expect(await violation(c.query(insertCommand, ["cmd_2", "srv_a", Buffer.from([3]), "sent", T0 + 1, T0 + 1000]))).toBe("23505 commands_one_open");
    // Finished commands and other servers' are not limited.
    await c.query(insertCommand, ["cmd_3", "srv_a", Buffer.from([4]), "succeeded", T0 + 2, T0 + 1000]);
    await c.query(insertCommand, ["cmd_4", "srv_b", Buffer.from([5]), "pending", T0 + 3, T0 + 1000]);
    expect((await c.query("SELECT payload FROM commands WHERE id = 'cmd_1'")).rows[0].payload).toEqual(Buffer.from([1, 2]));

    const reserve = "INSERT INTO server_ports (host_id, protocol, host_port, server_id) VALUES ($1, $2, $3, $4)";
    await c.query(reserve, ["host_a", "tcp", 25565, "srv_a"]);
    expect(await violation(c.query(reserve, ["host_a", "tcp", 25565, "srv_b"]))).toBe("23505 server_ports_pkey");
    await c.query(reserve, ["host_a", "udp", 25565, "srv_b"]);
    await c.query(reserve, ["host_b", "tcp", 25565, "srv_c"]);

    const insertServer =
      "INSERT INTO servers (id, project, name, host_id, generation, spec_json, status_json, phase, created_at, updated_at) VALUES ($1, $2, $3, 'host_a', 1, '{}', '{}', 'PENDING', $4, $4)";
    await c.query(insertServer, ["srv_a", "default", "mc", T0]);
    expect(await violation(c.query(insertServer, ["srv_b", "default", "mc", T0]))).toBe("23505 servers_project_name");
    await c.query(insertServer, ["srv_c", "other", "mc", T0]);
    // Every server starts at version 1.
    expect((await c.query("SELECT DISTINCT version::int AS v FROM servers")).rows).toEqual([{ v: 1 }]);

    // Event ids come from the identity column, in insertion order.
    const ev = await c.query<{ id: string }>("INSERT INTO events (time, type) VALUES ($1, 'a'), ($1, 'b') RETURNING id", [T0]);
    expect(ev.rows.map((r) => Number(r.id))).toEqual([1, 2]);
  });

  it("upgrades a database stopped at version 6 with awkward rows exactly as SQLite does", async () => {
    // An ICU collation orders "cmd_B" after "cmd_a", unlike SQLite's bytes: the migration must not care.
    const url = await freshDatabase("LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'");
    expect(await migratePostgres(url, { to: 6 })).toMatchObject({ to: 6, applied: [1, 2, 3, 4, 5, 6] });
    const c = await connect(url);
    const sqlite = new Database(":memory:");
    try {
      for (const m of MIGRATIONS.slice(0, 6)) sqlite.exec(m.sqlite);
      for (const s of V6_SERVERS) {
        const values = [s.id, s.name, s.host, s.spec, s.createdAt, s.createdAt, s.deletedAt];
        const sql = "INSERT INTO servers (id, project, name, host_id, generation, spec_json, status_json, phase, created_at, updated_at, deleted_at) VALUES (?, 'default', ?, ?, 1, ?, '{}', 'RUNNING', ?, ?, ?)";
        sqlite.prepare(sql).run(...values);
        await c.query(dollars(sql), values);
      }
      for (const k of V6_COMMANDS) {
        const sql = "INSERT INTO commands (id, server_id, host_id, kind, payload, state, created_at, deadline_at, finished_at) VALUES (?, ?, 'host_a', '1', ?, ?, ?, ?, ?)";
        const values = [k.id, k.server, Buffer.from(k.id), k.state, k.createdAt, T0 + 1000, k.finishedAt];
        sqlite.prepare(sql).run(...values);
        await c.query(dollars(sql), values);
      }

      const before = Date.now();
      expect(await migratePostgres(url)).toMatchObject({ from: 6, to: LATEST, applied: MIGRATIONS.slice(6).map((_, i) => i + 7) });
      sqlite.exec(MIGRATIONS[6]!.sqlite);
      const after = Date.now();

      const commandsSql = "SELECT id, state, reason, message FROM commands ORDER BY id";
      const pgCommands = (await c.query(commandsSql)).rows;
      expect(pgCommands).toEqual(sqlite.prepare(commandsSql).all());
      // What that is: the newest open command of each server stays open, ties broken by the greater id in byte order.
      expect(pgCommands.filter((r) => r.state === "pending" || r.state === "sent").map((r) => r.id)).toEqual(["cmd_a", "cmd_hand", "cmd_newer"]);
      expect(pgCommands.filter((r) => r.reason === "Superseded").map((r) => r.id)).toEqual(["cmd_B", "cmd_older"]);
      const finished = await c.query<{ finished_at: string }>("SELECT finished_at FROM commands WHERE reason = 'Superseded'");
      for (const r of finished.rows) {
        expect(Number(r.finished_at)).toBeGreaterThanOrEqual(before - 1000);
        expect(Number(r.finished_at)).toBeLessThanOrEqual(after + 1000);
      }

      const portsSql = "SELECT host_id, protocol, host_port, server_id FROM server_ports ORDER BY host_id, host_port, protocol";
      const pgPorts = (await c.query(portsSql)).rows;
      expect(pgPorts).toEqual(sqlite.prepare(portsSql).all());
      expect(pgPorts.map((r) => `${r.host_id} ${r.host_port}/${r.protocol}=${r.server_id}`)).toEqual([
        "host_a 7777/udp=srv_hand",
        "host_a 8080/tcp=srv_later",
        "host_a 25565/tcp=srv_B",
        "host_a 25565/udp=srv_B",
        "host_a 25570/tcp=srv_B",
        "host_b 25565/tcp=srv_b",
      ]);
      const versionSql = "SELECT id, version FROM servers ORDER BY id";
      expect((await c.query(versionSql)).rows.map((r) => ({ id: r.id, version: Number(r.version) }))).toEqual(sqlite.prepare(versionSql).all());
    } finally {
      sqlite.close();
    }
  });
});

const spec = (hostId: string, ports: { hostPort: number; protocol?: Protocol }[]) =>
  toJsonString(ServerSpecSchema, create(ServerSpecSchema, { hostId, image: "busybox", ports: ports.map((p) => create(PortMappingSchema, { ...p, containerPort: p.hostPort })) }));

/** Servers as an older version could leave them: clashing ports, equal creation times, JSON in unusual forms. */
const V6_SERVERS = [
  // Equal creation times: the smaller id in byte order ("srv_B" < "srv_a") keeps the port.
  { id: "srv_B", name: "b-upper", host: "host_a", spec: spec("host_a", [{ hostPort: 25565 }, { hostPort: 25565, protocol: Protocol.UDP }, { hostPort: 25570 }]), createdAt: T0, deletedAt: null },
  { id: "srv_a", name: "a-lower", host: "host_a", spec: spec("host_a", [{ hostPort: 25565, protocol: Protocol.UNSPECIFIED }, { hostPort: 25570, protocol: Protocol.TCP }]), createdAt: T0, deletedAt: null },
  { id: "srv_later", name: "later", host: "host_a", spec: spec("host_a", [{ hostPort: 25565 }, { hostPort: 8080 }]), createdAt: T0 + 1, deletedAt: null },
  { id: "srv_deleted", name: "deleted", host: "host_a", spec: spec("host_a", [{ hostPort: 9000 }]), createdAt: T0, deletedAt: T0 + 5 },
  { id: "srv_b", name: "b", host: "host_b", spec: spec("host_b", [{ hostPort: 25565 }]), createdAt: T0 + 2, deletedAt: null },
  // Protocol as its number and the port as a string (both valid protobuf JSON).
  { id: "srv_hand", name: "hand", host: "host_a", spec: '{"hostId":"host_a","ports":[{"hostPort":"7777","containerPort":7777,"protocol":2}]}', createdAt: T0 + 3, deletedAt: null },
  { id: "srv_noports", name: "noports", host: "host_a", spec: "{}", createdAt: T0 + 4, deletedAt: null },
];

const V6_COMMANDS = [
  { id: "cmd_done", server: "srv_B", state: "succeeded", createdAt: T0, finishedAt: T0 + 1 },
  { id: "cmd_older", server: "srv_B", state: "pending", createdAt: T0 + 2, finishedAt: null },
  { id: "cmd_newer", server: "srv_B", state: "sent", createdAt: T0 + 3, finishedAt: null },
  // Equal creation times: the greater id in byte order stays open ("cmd_a" > "cmd_B").
  { id: "cmd_B", server: "srv_later", state: "pending", createdAt: T0 + 4, finishedAt: null },
  { id: "cmd_a", server: "srv_later", state: "pending", createdAt: T0 + 4, finishedAt: null },
  { id: "cmd_hand", server: "srv_hand", state: "pending", createdAt: T0 + 5, finishedAt: null },
];

/** SQLite's `?` placeholders as PostgreSQL's `$n`. */
function dollars(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

interface ColumnShape {
  name: string;
  type: string;
  notNull: boolean;
  default: string | null;
}

interface IndexShape {
  table: string;
  /** Explicit indexes by their own name; PRIMARY KEY and UNIQUE as PostgreSQL names them (<table>_pkey, <table>_<columns>_key). */
  name: string;
  unique: boolean;
  columns: string[];
  /** A partial index's predicate as its column and quoted values ("state:pending,sent"), or null. */
  where: string | null;
}

/**
 * The PostgreSQL type each SQLite declared type becomes (migrations.ts): the
 * schema comparison expects exactly this. events.id, SQLite's INTEGER PRIMARY
 * KEY AUTOINCREMENT, is a bigint identity column.
 */
const PG_TYPE_OF_SQLITE: Record<string, string> = { TEXT: "text", BIGINT: "bigint", INTEGER: "integer", BLOB: "bytea", REAL: "double precision" };
const SPECIAL_COLUMNS: Record<string, string> = { "events.id": "bigint identity" };

function predicate(text: string | null): string | null {
  if (!text) return null;
  const column = /^[\s(]*([a-z_]+)/.exec(text)?.[1] ?? "?";
  const values = [...text.matchAll(/'([^']*)'/g)].map((m) => m[1]!).sort();
  return `${column}:${values.join(",")}`;
}

const byName = (a: IndexShape, b: IndexShape) => (a.table + a.name < b.table + b.name ? -1 : 1);

function sqliteSchema(db: Database.Database): { tables: Record<string, ColumnShape[]>; indexes: IndexShape[] } {
  const tables: Record<string, ColumnShape[]> = {};
  const indexes: IndexShape[] = [];
  const names = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").all() as { name: string }[]).map((r) => r.name);
  for (const table of names) {
    const cols = db.prepare(`PRAGMA table_info(${table})`).all() as { name: string; type: string; notnull: number; dflt_value: string | null; pk: number }[];
    tables[table] = cols.map((c) => ({
      name: c.name,
      type: SPECIAL_COLUMNS[`${table}.${c.name}`] ?? PG_TYPE_OF_SQLITE[c.type] ?? `unmapped ${c.type}`,
      // A PRIMARY KEY column is NOT NULL in PostgreSQL; SQLite's (other than INTEGER) merely should be.
      notNull: c.notnull === 1 || c.pk > 0,
      default: c.dflt_value,
    }));
    const pk = cols.filter((c) => c.pk > 0).sort((a, b) => a.pk - b.pk).map((c) => c.name);
    if (pk.length) indexes.push({ table, name: `${table}_pkey`, unique: true, columns: pk, where: null });
    for (const ix of db.prepare(`PRAGMA index_list(${table})`).all() as { name: string; unique: number; origin: string }[]) {
      if (ix.origin === "pk") continue; // listed from table_info above
      const columns = (db.prepare(`PRAGMA index_info(${ix.name})`).all() as { seqno: number; name: string }[]).sort((a, b) => a.seqno - b.seqno).map((c) => c.name);
      const sql = (db.prepare("SELECT sql FROM sqlite_master WHERE name = ?").get(ix.name) as { sql: string | null } | undefined)?.sql ?? null;
      const where = sql && /\bWHERE\b/i.test(sql) ? sql.slice(sql.search(/\bWHERE\b/i) + 5) : null;
      const name = ix.origin === "u" ? `${table}_${columns.join("_")}_key` : ix.name;
      indexes.push({ table, name, unique: ix.unique === 1, columns, where: predicate(where) });
    }
  }
  return { tables, indexes: indexes.sort(byName) };
}

async function postgresSchema(c: pg.Client): Promise<{ tables: Record<string, ColumnShape[]>; indexes: IndexShape[]; textCollations: string[] }> {
  const cols = await c.query<{ table_name: string; column_name: string; data_type: string; is_nullable: string; column_default: string | null; is_identity: string }>(
    `SELECT table_name, column_name, data_type, is_nullable, column_default, is_identity
     FROM information_schema.columns
     WHERE table_schema = current_schema() AND table_name <> 'schema_migrations'
     ORDER BY table_name, ordinal_position`,
  );
  const tables: Record<string, ColumnShape[]> = {};
  for (const r of cols.rows) {
    (tables[r.table_name] ??= []).push({
      name: r.column_name,
      type: r.is_identity === "YES" ? `${r.data_type} identity` : r.data_type,
      notNull: r.is_nullable === "NO",
      // '{}'::text → '{}': the cast is how PostgreSQL shows a typed default.
      default: r.column_default === null ? null : r.column_default.replace(/::[a-z ]+$/, ""),
    });
  }
  const ix = await c.query<{ table: string; name: string; unique: boolean; primary: boolean; constraint_name: string | null; columns: string[]; predicate: string | null }>(
    `SELECT t.relname AS table, ic.relname AS name, i.indisunique AS unique, i.indisprimary AS primary, con.conname AS constraint_name,
            (SELECT array_agg(a.attname::text ORDER BY k.ord)
               FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k (attnum, ord)
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum) AS columns,
            pg_get_expr(i.indpred, i.indrelid) AS predicate
     FROM pg_index i
     JOIN pg_class ic ON ic.oid = i.indexrelid
     JOIN pg_class t ON t.oid = i.indrelid
     JOIN pg_namespace n ON n.oid = t.relnamespace
     LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.contype IN ('p', 'u')
     WHERE n.nspname = current_schema() AND t.relname <> 'schema_migrations'`,
  );
  const indexes = ix.rows.map((r) => {
    // A PRIMARY KEY or UNIQUE constraint and its index share one name: the one a violation reports.
    if (r.constraint_name !== null && r.constraint_name !== r.name) throw new Error(`constraint ${r.constraint_name} has index ${r.name}`);
    return { table: r.table, name: r.name, unique: r.unique, columns: r.columns, where: predicate(r.predicate) };
  });
  const coll = await c.query<{ c: string | null }>(
    `SELECT DISTINCT collation_name AS c FROM information_schema.columns
     WHERE table_schema = current_schema() AND table_name <> 'schema_migrations' AND data_type = 'text'`,
  );
  return { tables, indexes: indexes.sort(byName), textCollations: coll.rows.map((r) => r.c ?? "default") };
}
