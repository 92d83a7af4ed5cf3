/**
 * The PostgreSQL store's connections and what its errors mean to the manager.
 *
 * One `pg.Pool` per store. int8 columns (ms timestamps, versions, counters,
 * event ids, COUNT(*)) are parsed as JavaScript numbers by a type override on
 * this pool only, so the row codecs in ../rows.ts serve both engines and no
 * other user of `pg` in the process is affected (pg.types is global).
 *
 * Errors are translated once, here, into the manager's typed errors:
 *
 *   40001 serialization_failure, 40P01 deadlock    the batch runs again (pg-store.ts commit); after
 *                                                  the last run, ConflictError (Aborted: read again, retry)
 *   class 08 (connection), 57P01–57P03 (shutdown,  UnavailableError "the database is
 *     crash, starting up), 53xxx (disk full, out     unreachable: …; retry"
 *     of connections), socket errors (ECONNREFUSED,
 *     ECONNRESET, …), "Connection terminated"
 *
 * Unique violations (23505) are mapped where the statement is issued, by
 * constraint name, because only the operation knows which name or port it
 * was writing (pg-writes.ts).
 */
import pg from "pg";
import { BerthError, ConflictError, UnavailableError } from "../../errors.js";
import { postgresConnectionString, type PostgresStoreUrl } from "./connection.js";

/** Connections per store: enough for a manager's concurrent reads and a few batches at once. */
export const DEFAULT_POOL_SIZE = 10;
/** An idle connection is closed after this long: a store that is not used costs no server process. */
const IDLE_TIMEOUT_MS = 10_000;
/** How long a connection attempt may take before the database counts as unreachable. */
const CONNECT_TIMEOUT_MS = 5_000;
/**
 * How long one statement may wait for its answer, measured by the client: a
 * database that went silent (a network partition, a frozen server) is
 * noticed after this, not after TCP's minutes of retransmissions, so callers
 * get Unavailable and an agent's stream stays responsive. Far above any
 * statement berth runs in normal operation.
 */
const QUERY_TIMEOUT_MS = 10_000;

const INT8_OID = 20;

/** int8 text as a number; a value beyond 2^53 would silently lose digits, so it is refused. */
function parseInt8(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new RangeError(`int8 value ${text} is beyond 2^53 and does not fit a JavaScript number`);
  return n;
}

/** pg's type parsers with int8 as a number, for one pool (never set on the global pg.types). */
const storeTypes = {
  getTypeParser(oid: number, format?: "text" | "binary") {
    if (oid === INT8_OID && format !== "binary") return parseInt8;
    return pg.types.getTypeParser(oid, format);
  },
} as pg.CustomTypesConfig;

/** A pool for the store at `url`. Nothing connects until the first query. */
export function createStorePool(url: PostgresStoreUrl, opts: { max?: number } = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString: postgresConnectionString(url, { password: true }),
    max: opts.max ?? DEFAULT_POOL_SIZE,
    idleTimeoutMillis: IDLE_TIMEOUT_MS,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    query_timeout: QUERY_TIMEOUT_MS,
    keepAlive: true,
    types: storeTypes,
    application_name: "berth-manager",
  });
  // An idle connection the server drops (restart, failover) emits 'error' on the pool;
  // without a listener that would crash the process. The pool discards the connection,
  // and the next query opens a new one.
  pool.on("error", () => {});
  // A connection lost while checked out (a transaction between two of its statements, when
  // PostgreSQL restarts or the network drops it) emits 'error' on the client itself, where the
  // pool listens no longer: without a listener of our own that crashes the process. The
  // statement in flight, or the next one, fails with the connection error, which the store
  // maps to Unavailable and which releases the client as broken.
  pool.on("connect", (client) => client.on("error", () => {}));
  return pool;
}

/** SQLSTATE classes and codes that mean "the database cannot serve now", not "the request is wrong". */
const UNAVAILABLE_SQLSTATE = /^(08|53|57P0[123])/;
const SOCKET_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "ENOTFOUND", "EHOSTUNREACH", "ENETUNREACH", "EAI_AGAIN", "ECONNABORTED"]);
const CONNECTION_MESSAGES = /Connection terminated|connection error and is not queryable|timeout exceeded when trying to connect|Connection terminated unexpectedly|Query read timeout/i;

/** The error lost the connection or found the server down (the write's outcome, if any, is unknown or void). */
export function isConnectionError(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown } | null;
  if (typeof e?.code === "string" && (SOCKET_CODES.has(e.code) || UNAVAILABLE_SQLSTATE.test(e.code))) return true;
  return typeof e?.message === "string" && CONNECTION_MESSAGES.test(e.message);
}

/** The PostgreSQL error `err` (SQLSTATE and constraint), if it is one. */
export function pgErrorOf(err: unknown): { code: string; constraint?: string } | undefined {
  const e = err as { code?: unknown; constraint?: unknown } | null;
  if (typeof e?.code !== "string" || !/^[0-9A-Z]{5}$/.test(e.code)) return undefined;
  return { code: e.code, ...(typeof e.constraint === "string" ? { constraint: e.constraint } : {}) };
}

/** A unique violation (23505) of the constraint or unique index `name`. */
export function isUniqueViolation(err: unknown, name: string): boolean {
  const p = pgErrorOf(err);
  return p?.code === "23505" && p.constraint === name;
}

/**
 * The database aborted the transaction to break a deadlock (40P01) or a
 * serialization failure (40001): nothing of it was written, and running the
 * same transaction again is safe (the store does, pg-store.ts commit).
 */
export function isTransactionAborted(err: unknown): boolean {
  const code = pgErrorOf(err)?.code;
  return code === "40001" || code === "40P01";
}

/**
 * The manager's error for what `pg` threw: typed errors pass through,
 * concurrency failures become ConflictError, a lost or refused connection
 * UnavailableError; anything else passes through unchanged (a bug: Internal).
 */
export function storeError(err: unknown): unknown {
  if (err instanceof BerthError) return err;
  if (isTransactionAborted(err)) {
    const code = pgErrorOf(err)?.code;
    return new ConflictError(`the database kept aborting this write because concurrent ones conflicted with it (${code === "40P01" ? "deadlock" : "serialization failure"}); read again and retry`);
  }
  if (isConnectionError(err)) {
    const e = err as Error & { code?: string };
    const detail = `${e.code && !e.message.includes(e.code) ? `${e.code} ` : ""}${e.message}`;
    const u = new UnavailableError(`the database is unreachable: ${detail}; retry when it is back`);
    u.cause = err;
    return u;
  }
  return err;
}
