/**
 * The campaign's own read-only look into berth's database, beside berth (never
 * through it): open commands, the ledger, the relations the schema does not
 * declare. One implementation per engine, the same questions:
 *
 *   SQLite      the database file on the campaign's tmpfs (better-sqlite3, read-only)
 *   PostgreSQL  the campaign's database on its private server (a small pg pool)
 */
import Database from "better-sqlite3";
import pg from "pg";

export interface OpenCommand {
  id: string;
  serverId: string;
  deadlineAt: number;
  kind: string;
}

export interface StoreProbe {
  /** "sqlite" or "postgres". */
  readonly engine: "sqlite" | "postgres";
  /** Commands of live servers still pending or sent. */
  openCommands(): Promise<OpenCommand[]>;
  /** command.issued events per server. */
  commandsIssued(): Promise<Map<string, number>>;
  /** Servers whose purge was requested (server.purge_requested in the ledger). */
  purgeRequested(): Promise<Set<string>>;
  /**
   * The ledger's ids in the order the engine stored them where it can tell (SQLite:
   * rowid, i.e. insertion order), else in id order (PostgreSQL keeps no insertion
   * order; the watchers check the order of delivery there).
   */
  eventIds(): Promise<number[]>;
  /** Counts of server.* events by "<server id> <type>". */
  serverEventCounts(): Promise<Map<string, number>>;
  /** The engine's own consistency check ("ok" when clean); undefined where the engine has none to run here. */
  integrity(): Promise<string | undefined>;
  /** Relations between tables the schema does not declare, with the rows breaking them. */
  brokenRelations(): Promise<[string, string[]][]>;
  /** server.deleted and server.restored of one server, in ledger order. */
  deleteHistory(serverId: string): Promise<string[]>;
  /** The cluster id berth labels its containers with (meta.manager_id). */
  managerId(): Promise<string>;
  close(): Promise<void>;
}

/** Relations between tables, as queries that list the rows breaking them (the same text on both engines). */
const RELATIONS: [string, string][] = [
  ["servers on unknown hosts", "SELECT id FROM servers WHERE host_id NOT IN (SELECT id FROM hosts)"],
  ["open commands of unknown servers", "SELECT id FROM commands WHERE state IN ('pending', 'sent') AND server_id NOT IN (SELECT id FROM servers)"],
  ["observed containers of unknown hosts", "SELECT container_id FROM observed_containers WHERE host_id NOT IN (SELECT id FROM hosts)"],
];

const OPEN_COMMANDS =
  "SELECT c.id, c.server_id AS \"serverId\", c.deadline_at AS \"deadlineAt\", c.kind FROM commands c JOIN servers s ON s.id = c.server_id WHERE c.state IN ('pending', 'sent')";
const COMMANDS_ISSUED = "SELECT server_id AS s, count(*) AS n FROM events WHERE type = 'command.issued' GROUP BY server_id";
const PURGE_REQUESTED = "SELECT DISTINCT server_id AS s FROM events WHERE type = 'server.purge_requested'";
const DELETE_HISTORY = "SELECT type FROM events WHERE server_id = $1 AND type IN ('server.deleted', 'server.restored') ORDER BY id";
const SERVER_EVENTS = "SELECT server_id AS s, type AS t, count(*) AS n FROM events WHERE type LIKE 'server.%' GROUP BY server_id, type";

/** A probe of the SQLite file `dbPath` (opened read-only per question, so berth's writer is never held up). */
export function sqliteProbe(dbPath: string): StoreProbe {
  const read = <T>(fn: (db: Database.Database) => T): Promise<T> => {
    const db = new Database(dbPath, { readonly: true, fileMustExist: true });
    try {
      return Promise.resolve(fn(db));
    } finally {
      db.close();
    }
  };
  return {
    engine: "sqlite",
    openCommands: () => read((db) => db.prepare(OPEN_COMMANDS).all() as OpenCommand[]),
    commandsIssued: () => read((db) => new Map((db.prepare(COMMANDS_ISSUED).all() as { s: string; n: number }[]).map((r) => [r.s, r.n]))),
    purgeRequested: () => read((db) => new Set(db.prepare(PURGE_REQUESTED).pluck().all() as string[])),
    eventIds: () => read((db) => db.prepare("SELECT id FROM events ORDER BY rowid").pluck().all() as number[]),
    serverEventCounts: () =>
      read((db) => new Map((db.prepare(SERVER_EVENTS).all() as { s: string; t: string; n: number }[]).map((r) => [`${r.s} ${r.t}`, r.n]))),
    deleteHistory: (id) => read((db) => db.prepare(DELETE_HISTORY.replace("$1", "?")).pluck().all(id) as string[]),
    integrity: () => read((db) => String(db.pragma("integrity_check", { simple: true }))),
    brokenRelations: () => read((db) => RELATIONS.map(([what, sql]) => [what, db.prepare(sql).pluck().all() as string[]])),
    managerId: () => read((db) => (db.prepare("SELECT value FROM meta WHERE key = 'manager_id'").pluck().get() as string | undefined) ?? ""),
    close: () => Promise.resolve(),
  };
}

/**
 * A probe of the PostgreSQL database `url`. Its pool survives the database-restart
 * fault: a dropped idle connection is an 'error' event (ignored: the next question
 * opens a new one), a question asked while the server is down rejects.
 */
export function postgresProbe(url: string): StoreProbe {
  const pool = new pg.Pool({ connectionString: url, max: 2, connectionTimeoutMillis: 5_000, idleTimeoutMillis: 10_000 });
  pool.on("error", () => {});
  const rows = async <R>(sql: string): Promise<R[]> => (await pool.query(sql)).rows as R[];
  // int8 and count(*) arrive as strings (this pool sets no type parser: pg.types is process-wide).
  const num = (v: unknown) => Number(v);
  return {
    engine: "postgres",
    openCommands: async () =>
      (await rows<{ id: string; serverId: string; deadlineAt: string; kind: string }>(OPEN_COMMANDS)).map((r) => ({ ...r, deadlineAt: num(r.deadlineAt) })),
    commandsIssued: async () => new Map((await rows<{ s: string; n: string }>(COMMANDS_ISSUED)).map((r) => [r.s, num(r.n)])),
    purgeRequested: async () => new Set((await rows<{ s: string }>(PURGE_REQUESTED)).map((r) => r.s)),
    eventIds: async () => (await rows<{ id: string }>("SELECT id FROM events ORDER BY id")).map((r) => num(r.id)),
    serverEventCounts: async () => new Map((await rows<{ s: string; t: string; n: string }>(SERVER_EVENTS)).map((r) => [`${r.s} ${r.t}`, num(r.n)])),
    deleteHistory: async (id) => (await pool.query<{ type: string }>(DELETE_HISTORY, [id])).rows.map((r) => r.type),
    integrity: () => Promise.resolve(undefined),
    brokenRelations: async () => Promise.all(RELATIONS.map(async ([what, sql]): Promise<[string, string[]]> => [what, (await pool.query({ text: sql, rowMode: "array" })).rows.map((r: unknown[]) => String(r[0]))])),
    managerId: async () => (await rows<{ value: string }>("SELECT value FROM meta WHERE key = 'manager_id'"))[0]?.value ?? "",
    close: () => pool.end(),
  };
}
