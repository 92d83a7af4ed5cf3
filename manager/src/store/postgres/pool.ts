/**
 * The PostgreSQL store's connections and what its errors mean to the manager.
 *
 * One `pg.Pool` per store, behind a StorePool: a FIFO admission queue with as
 * many permits as the pool has connections. Waiting for a free connection is
 * the admission queue's business, never pg-pool's: pg-pool's
 * `connectionTimeoutMillis` covers both opening a connection and waiting in
 * its own queue for a checked-out one, so a merely busy pool used to fail
 * with "timeout exceeded when trying to connect" and be reported as an
 * unreachable database (two managers under load: 142,758 such errors while
 * PostgreSQL was up, each dropping an agent report and asking for a resync,
 * which added load). A caller holding a permit always finds an idle
 * connection or room for a new one, so that timeout now measures only a
 * real connection attempt.
 *
 *   caller ──▶ admission queue (FIFO, ≤ MAX_WAITING, ≤ WAIT_TIMEOUT_MS) ──▶ permit ──▶ pg.Pool ──▶ PostgreSQL
 *                 │ full / waited too long                                   (max permits = max connections)
 *                 ▼
 *              StorePoolBusyError
 *
 * int8 columns (ms timestamps, versions, counters, event ids, COUNT(*)) are
 * parsed as JavaScript numbers by a type override on this pool only, so the
 * row codecs in ../rows.ts serve both engines and no other user of `pg` in
 * the process is affected (pg.types is global).
 *
 * Errors are translated once, here, into the manager's typed errors:
 *
 *   40001 serialization_failure, 40P01 deadlock    the batch runs again (pg-store.ts commit); after
 *                                                  the last run, ConflictError (Aborted: read again, retry)
 *   class 08 (connection), 57P01–57P03 (shutdown,  UnavailableError "the database is
 *     crash, starting up), 53xxx (disk full, out     unreachable: …; retry"
 *     of connections), socket errors (ECONNREFUSED,
 *     ECONNRESET, …), "Connection terminated",
 *     a connection attempt over CONNECT_TIMEOUT_MS
 *   every connection busy for WAIT_TIMEOUT_MS, or  StorePoolBusyError (an UnavailableError, so the
 *     MAX_WAITING callers waiting already            API answers Unavailable and an agent's report is
 *                                                  dropped as in an outage) "the database connection
 *                                                  pool is busy (N waiting for M connections); retry…";
 *                                                  not a connection error: no client is discarded
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
/**
 * How long one connection attempt may take before the database counts as
 * unreachable. Only an attempt: waiting for a busy pool is WAIT_TIMEOUT_MS.
 */
const CONNECT_TIMEOUT_MS = 5_000;
/**
 * How long a caller may wait for one of the pool's connections. Generous:
 * waiting is what a busy pool should make callers do (backpressure), and a
 * statement berth runs takes milliseconds, so a wait this long means the
 * manager has far more concurrent work than its connections serve, not a
 * burst. It also stays above QUERY_TIMEOUT_MS, so the callers queued behind
 * a silent database hear "unreachable" from the statements ahead of them
 * before any of them hears "busy". Below the minutes a client would wait
 * for an answer before giving up on its own.
 */
const WAIT_TIMEOUT_MS = 30_000;
/**
 * How many callers may wait for a connection at once; beyond, a caller is
 * refused at once. Bounds the queue's memory (a few hundred bytes a waiter)
 * whatever clients do, and a queue this long would not drain within
 * WAIT_TIMEOUT_MS anyway.
 */
const MAX_WAITING = 10_000;
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

/** What pg-pool says once `end` was called; kept for callers still queued then, so they fail as before. */
const POOL_ENDED = "Cannot use a pool after calling end on the pool";

/**
 * Every one of the store's connections stayed busy for as long as a caller
 * may wait, or too many callers wait already. PostgreSQL is up: this is the
 * manager's own overload. Unavailable (retry with backoff), as an outage is
 * to the API and to an agent's stream, but with its own message, and not a
 * connection error: no connection is discarded for it.
 */
export class StorePoolBusyError extends UnavailableError {
  constructor(
    /** Callers waiting for a connection when this one was refused (itself included when it had waited). */
    readonly waiting: number,
    /** The pool's connections. */
    readonly connections: number,
    /** Why: it waited `WAIT_TIMEOUT_MS`-long, or the queue was full. */
    readonly reason: "timeout" | "queue-full",
    waitedMs: number,
  ) {
    super(
      `the database connection pool is busy (${waiting} waiting for ${connections} connection${connections === 1 ? "" : "s"}; ${
        reason === "timeout" ? `this request waited ${Math.round(waitedMs / 100) / 10} s` : "no room to wait"
      }); PostgreSQL is up but this manager has more concurrent work than its connections serve: retry with backoff, and if it persists spread the load over more managers or look for slow statements in pg_stat_activity`,
    );
  }
}

/** Limits of a StorePool (createStorePool); the defaults are the manager's. */
export interface StorePoolOptions {
  /** Connections, and so callers served at once. Default DEFAULT_POOL_SIZE. */
  max?: number;
  /** One connection attempt, before the database counts as unreachable. Default CONNECT_TIMEOUT_MS. */
  connectTimeoutMs?: number;
  /** Longest wait for a connection, before StorePoolBusyError. Default WAIT_TIMEOUT_MS. */
  waitTimeoutMs?: number;
  /** Most callers waiting at once; one more is refused with StorePoolBusyError. Default MAX_WAITING. */
  maxWaiting?: number;
}

/** How busy a StorePool is (for metrics and tests). */
export interface StorePoolStats {
  /** Connections (permits), as configured. */
  max: number;
  /** Callers holding a permit: running a query, holding a checked-out client, or connecting. */
  inUse: number;
  /** Callers queued for a permit. */
  waiting: number;
}

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * A FIFO semaphore: `max` permits, callers beyond that wait in arrival order,
 * each at most `waitTimeoutMs`, at most `maxWaiting` of them. A released
 * permit passes straight to the oldest waiter (no barging), so a steady
 * stream of newcomers cannot starve it.
 */
class AdmissionQueue {
  #inUse = 0;
  /** Insertion-ordered: the first is the oldest; a timed-out waiter leaves in O(1). */
  readonly #waiters = new Set<Waiter>();
  #closed = false;

  constructor(
    readonly max: number,
    private readonly waitTimeoutMs: number,
    private readonly maxWaiting: number,
  ) {}

  get inUse(): number {
    return this.#inUse;
  }

  get waiting(): number {
    return this.#waiters.size;
  }

  /**
   * Resolves once the caller holds a permit, which it gives back with
   * `release` exactly once. Decides synchronously whether the caller waits.
   */
  acquire(): Promise<void> {
    if (this.#closed) return Promise.reject(new Error(POOL_ENDED));
    if (this.#inUse < this.max && this.#waiters.size === 0) {
      this.#inUse++;
      return Promise.resolve();
    }
    if (this.#waiters.size >= this.maxWaiting) return Promise.reject(new StorePoolBusyError(this.#waiters.size, this.max, "queue-full", 0));
    const since = Date.now();
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          const waiting = this.#waiters.size;
          this.#waiters.delete(waiter);
          reject(new StorePoolBusyError(waiting, this.max, "timeout", Date.now() - since));
        }, this.waitTimeoutMs),
      };
      // Like pg-pool's own timers: a caller waiting does not by itself keep the process alive.
      waiter.timer.unref();
      this.#waiters.add(waiter);
    });
  }

  /** Gives a permit back: to the oldest waiter if there is one (the count in use stays), else to the pool. */
  release(): void {
    const next = this.#waiters.values().next();
    if (next.done) {
      this.#inUse--;
      return;
    }
    this.#waiters.delete(next.value);
    clearTimeout(next.value.timer);
    next.value.resolve();
  }

  /** Refuses every waiter and every later caller; permits held are still given back. */
  close(): void {
    this.#closed = true;
    for (const w of this.#waiters) {
      clearTimeout(w.timer);
      w.reject(new Error(POOL_ENDED));
    }
    this.#waiters.clear();
  }
}

/**
 * The store's connections: a `pg.Pool` behind a FIFO admission queue with
 * one permit per connection (see the file comment). Offers what the store
 * uses of `pg.Pool`: `query` (promise forms only), `connect` (a client whose
 * `release` gives its permit back exactly once) and `end`.
 */
export class StorePool {
  readonly #pool: pg.Pool;
  readonly #gate: AdmissionQueue;

  constructor(pool: pg.Pool, limits: { max: number; waitTimeoutMs: number; maxWaiting: number }) {
    this.#pool = pool;
    this.#gate = new AdmissionQueue(limits.max, limits.waitTimeoutMs, limits.maxWaiting);
  }

  /**
   * pg.Pool's `query`, once a permit is held; the permit is given back when
   * the statement settles, whatever its outcome. Callback and Submittable
   * forms are not offered (they would outlive the permit): TypeError.
   * Typed as pg.Pool's so the store's helpers take a StorePool or a client alike.
   */
  readonly query: pg.Pool["query"] = ((text: unknown, values?: unknown, cb?: unknown) => {
    if (typeof values === "function" || typeof cb === "function" || typeof (text as { submit?: unknown } | null)?.submit === "function") {
      throw new TypeError("StorePool.query takes a statement and its values and returns a promise; callbacks and Submittables are not supported");
    }
    return this.#query(text as string | pg.QueryConfig, values as unknown[] | undefined);
  }) as pg.Pool["query"];

  async #query(text: string | pg.QueryConfig, values: unknown[] | undefined): Promise<pg.QueryResult> {
    await this.#gate.acquire();
    try {
      return await this.#pool.query(text, values);
    } finally {
      this.#gate.release();
    }
  }

  /**
   * A client of its own, once a permit is held. Its `release(err?)` hands it
   * back to pg.Pool (discarded when `err` is given) and then the permit, in
   * that order, so the next caller finds the connection idle. A second
   * `release` of one checkout throws, as pg's does, and gives nothing back.
   */
  async connect(): Promise<pg.PoolClient> {
    await this.#gate.acquire();
    let client: pg.PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (err) {
      this.#gate.release();
      throw err;
    }
    // pg-pool sets a fresh `release` on every checkout, so this wraps this checkout's only.
    const giveBack = client.release.bind(client);
    let released = false;
    client.release = (err?: Error | boolean) => {
      if (released) throw new Error("Release called on client which has already been released to the pool.");
      released = true;
      try {
        giveBack(err);
      } finally {
        this.#gate.release();
      }
    };
    return client;
  }

  /**
   * Refuses the callers still waiting (with pg-pool's "Cannot use a pool
   * after calling end" error, as before the queue) and later ones, then ends
   * pg.Pool once the clients checked out are released.
   */
  async end(): Promise<void> {
    this.#gate.close();
    await this.#pool.end();
  }

  /** Permits in use and callers waiting, now. */
  stats(): StorePoolStats {
    return { max: this.#gate.max, inUse: this.#gate.inUse, waiting: this.#gate.waiting };
  }
}

/** A pool for the store at `url`. Nothing connects until the first query. */
export function createStorePool(url: PostgresStoreUrl, opts: StorePoolOptions = {}): StorePool {
  const max = opts.max ?? DEFAULT_POOL_SIZE;
  const pool = new pg.Pool({
    connectionString: postgresConnectionString(url, { password: true }),
    max,
    idleTimeoutMillis: IDLE_TIMEOUT_MS,
    // With a permit held (StorePool) pg-pool never queues a caller for a busy connection: this
    // bounds a connection attempt only.
    connectionTimeoutMillis: opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS,
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
  return new StorePool(pool, { max, waitTimeoutMs: opts.waitTimeoutMs ?? WAIT_TIMEOUT_MS, maxWaiting: opts.maxWaiting ?? MAX_WAITING });
}

/** SQLSTATE classes and codes that mean "the database cannot serve now", not "the request is wrong". */
const UNAVAILABLE_SQLSTATE = /^(08|53|57P0[123])/;
const SOCKET_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "ENOTFOUND", "EHOSTUNREACH", "ENETUNREACH", "EAI_AGAIN", "ECONNABORTED"]);
/**
 * pg's messages for a lost or refused connection. "timeout exceeded when
 * trying to connect" stays one: pg-pool says it when its connectionTimeoutMillis
 * passes with the caller in its own queue, which used to mean "every
 * connection checked out" too. Behind the admission queue a caller reaches
 * pg-pool only with a permit, so fewer than `max` clients are checked out:
 * it is queued there only when an idle client exists (handed over on the
 * next tick) or, when two callers raced for one idle client, while pg-pool
 * opens a new connection for the second. The timeout can then pass only
 * during a real connection attempt: the database is unreachable.
 */
const CONNECTION_MESSAGES = /Connection terminated|connection error and is not queryable|timeout exceeded when trying to connect|Connection terminated unexpectedly|Query read timeout/i;

/** The error lost the connection or found the server down (the write's outcome, if any, is unknown or void). */
export function isConnectionError(err: unknown): boolean {
  // A busy pool is the manager's overload, not a broken connection: no client is discarded for it.
  if (err instanceof StorePoolBusyError) return false;
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
