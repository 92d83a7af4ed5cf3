// The store's connection pool (pool.ts) on a real PostgreSQL server:
// - a busy pool makes callers wait, in arrival order, for as long as
//   WAIT_TIMEOUT_MS and never reports the database as unreachable for it
//   (pg-pool alone did, after its connect timeout: a collapse spiral under load);
// - waiting too long, or with the queue full, is a "busy" Unavailable that is
//   not a connection error, so no client is discarded for it;
// - no permit leaks on any error path;
// - when PostgreSQL drops a connection that a transaction has checked out,
//   between two of its statements (a server restart, a failover, a network cut),
//   the process does not crash on the client's 'error' event, and the next
//   statement fails as a connection error.
import pg from "pg";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { requirePostgres, useTestDatabase } from "../../../../test/harness/postgres-tests.js";
import { UnavailableError } from "../../errors.js";
import { parseStoreUrl } from "../store-url.js";
import type { PostgresStoreUrl } from "./connection.js";
import { createStorePool, isConnectionError, storeError, StorePoolBusyError, type StorePool, type StorePoolOptions } from "./pool.js";

const provided = requirePostgres();

/** Statements of the pools under test block on this advisory lock while the test holds it. */
const LOCK = 4242;
const BLOCKED = `SELECT pg_advisory_xact_lock(${LOCK})`;

/** Resolves once `cond` holds, checking every 10 ms (the test's timeout bounds it). */
async function until(cond: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await cond())) await new Promise((r) => setTimeout(r, 10));
}

/** What `p` settled with, without throwing. */
function outcome<T>(p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; err: unknown }> {
  return p.then(
    (value) => ({ ok: true as const, value }),
    (err: unknown) => ({ ok: false as const, err }),
  );
}

describe.skipIf(!provided.url)("the store's pool", () => {
  const db = useTestDatabase("pool");
  const url = () => parseStoreUrl(db.url) as PostgresStoreUrl;
  /** The test's own connection, outside any pool: holds LOCK and watches pg_stat_activity. */
  let holder: pg.Client;
  const pools: StorePool[] = [];

  beforeEach(async () => {
    holder = new pg.Client({ connectionString: db.url });
    holder.on("error", () => {});
    await holder.connect();
  });

  afterEach(async () => {
    await holder.end();
    await Promise.all(pools.splice(0).map((p) => p.end().catch(() => {})));
  });

  function open(opts: StorePoolOptions): StorePool {
    const pool = createStorePool(url(), opts);
    pools.push(pool);
    return pool;
  }

  const lock = () => holder.query("SELECT pg_advisory_lock($1)", [LOCK]);
  const unlock = () => holder.query("SELECT pg_advisory_unlock($1)", [LOCK]);
  /** Statements of this database blocked on LOCK right now, as the server sees them. */
  const blockedOnServer = async () =>
    (
      await holder.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query = $1", [BLOCKED])
    ).rows[0]!.n;

  it("a caller waiting for a busy pool longer than the connect timeout waits on, and gets its connection (not 'unreachable')", async () => {
    const connectTimeoutMs = 500;
    const pool = open({ max: 2, connectTimeoutMs });
    await lock();
    const statements = [0, 1, 2].map(() => outcome(pool.query(BLOCKED)));
    await until(async () => (await blockedOnServer()) === 2);
    // The condition under test is time passing: the third caller has waited well beyond the
    // connect timeout (pg-pool alone rejects it then, "timeout exceeded when trying to connect").
    let settled: unknown;
    void statements[2]!.then((o) => (settled = o.ok ? "ok" : o.err));
    await new Promise((r) => setTimeout(r, 3 * connectTimeoutMs));
    expect(settled).toBeUndefined();
    expect(pool.stats()).toEqual({ max: 2, inUse: 2, waiting: 1 });
    await unlock();
    for (const o of await Promise.all(statements)) expect(o.ok, o.ok ? "" : String(o.err)).toBe(true);
    expect(pool.stats()).toEqual({ max: 2, inUse: 0, waiting: 0 });
  });

  it("waiting beyond the wait limit rejects with 'busy' (counts named), an Unavailable that is not a connection error", async () => {
    const pool = open({ max: 1, waitTimeoutMs: 200 });
    await lock();
    const first = outcome(pool.query(BLOCKED));
    await until(async () => (await blockedOnServer()) === 1);
    const err = await pool.query("SELECT 1").then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(StorePoolBusyError);
    expect(err).toBeInstanceOf(UnavailableError);
    expect((err as Error).message).toMatch(/^the database connection pool is busy \(1 waiting for 1 connection; this request waited 0\.\d s\).*retry/);
    expect((err as Error).message).not.toMatch(/unreachable/);
    expect(isConnectionError(err)).toBe(false);
    expect(storeError(err)).toBe(err);
    await unlock();
    expect((await first).ok).toBe(true);
    expect(pool.stats()).toEqual({ max: 1, inUse: 0, waiting: 0 });
  });

  it("with the waiting queue full, one more caller is refused at once with 'busy'", async () => {
    const pool = open({ max: 1, maxWaiting: 1, waitTimeoutMs: 60_000 });
    await lock();
    const first = outcome(pool.query(BLOCKED));
    const second = outcome(pool.query("SELECT 2 AS n"));
    expect(pool.stats()).toEqual({ max: 1, inUse: 1, waiting: 1 });
    // Refused without waiting (the wait limit is a minute, beyond the test's timeout).
    const err = await pool.query("SELECT 3").then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(StorePoolBusyError);
    expect((err as Error).message).toMatch(/^the database connection pool is busy \(1 waiting for 1 connection; no room to wait\)/);
    expect(isConnectionError(err)).toBe(false);
    await unlock();
    expect((await first).ok).toBe(true);
    const s = await second;
    expect(s.ok && s.value.rows[0]).toEqual({ n: 2 });
  });

  it("callers get connections in the order they asked for them", async () => {
    const pool = open({ max: 1 });
    const held = await pool.connect();
    const order: number[] = [];
    const waiters = [0, 1, 2, 3, 4].map((i) =>
      pool.connect().then((c) => {
        order.push(i);
        c.release();
      }),
    );
    expect(pool.stats().waiting).toBe(5);
    held.release();
    await Promise.all(waiters);
    expect(order).toEqual([0, 1, 2, 3, 4]);
  });

  it("no permit is lost or doubled on error paths: after them the pool still serves max statements at once, and no more", async () => {
    const pool = open({ max: 2 });
    // A statement that fails.
    for (let i = 0; i < 3; i++) await expect(pool.query("SELECT 1/0")).rejects.toMatchObject({ code: "22012" });
    // A statement that fails on a checked-out client, released as broken.
    const c1 = await pool.connect();
    const err = await c1.query("SELECT * FROM no_such_table").then(() => undefined, (e: Error) => e);
    c1.release(err);
    // A client released twice: the second throws, as pg's, and gives back nothing more.
    const c2 = await pool.connect();
    c2.release();
    expect(() => c2.release()).toThrow(/already been released/);
    // Callback forms would outlive their permit: refused before taking one.
    expect(() => pool.query("SELECT 1", [], () => {})).toThrow(TypeError);
    expect(pool.stats()).toEqual({ max: 2, inUse: 0, waiting: 0 });

    await lock();
    const statements = [0, 1, 2].map(() => outcome(pool.query(BLOCKED)));
    // Two run at once on the server (no permit lost), the third waits (none doubled).
    await until(async () => (await blockedOnServer()) === 2);
    expect(pool.stats()).toEqual({ max: 2, inUse: 2, waiting: 1 });
    await unlock();
    for (const o of await Promise.all(statements)) expect(o.ok).toBe(true);
  });

  it("a failed connection attempt gives its permit back", async () => {
    const pool = createStorePool({ ...url(), database: `${db.name}_missing` }, { max: 1, waitTimeoutMs: 200 });
    try {
      // Each attempt fails with the server's answer (3D000: no such database), never 'busy'.
      for (let i = 0; i < 3; i++) await expect(pool.connect()).rejects.toMatchObject({ code: "3D000" });
      expect(pool.stats()).toEqual({ max: 1, inUse: 0, waiting: 0 });
    } finally {
      await pool.end();
    }
  });

  it("ending the pool refuses the callers still waiting, and waits for the clients checked out", async () => {
    const pool = createStorePool(url(), { max: 1 });
    const held = await pool.connect();
    const waiting = outcome(pool.connect());
    let ended = false;
    const ending = pool.end().then(() => (ended = true));
    const w = await waiting;
    expect(w.ok ? "connected" : String(w.err)).toMatch(/Cannot use a pool after calling end/);
    expect(ended).toBe(false);
    held.release();
    await ending;
    await expect(pool.query("SELECT 1")).rejects.toThrow(/Cannot use a pool after calling end/);
  });

  it("a checked-out connection the server terminates between statements: no crash, the next statement fails as a connection error", async () => {
    const pool = open({});
    const client = await pool.connect();
    await client.query("BEGIN");
    const { rows } = await client.query<{ pid: number }>("SELECT pg_backend_pid() AS pid");
    const ended = new Promise((resolve) => client.once("end", resolve));
    // Without the pool's own listener, this 'error' event (no statement in flight) is unhandled: vitest fails the run.
    await holder.query("SELECT pg_terminate_backend($1)", [rows[0]!.pid]);
    await ended;
    const err = await client.query("SELECT 1").then(() => undefined, (e: unknown) => e);
    expect(isConnectionError(err), String(err)).toBe(true);
    client.release(true);
    // The pool opens a fresh connection for the next caller.
    expect((await pool.query<{ one: number }>("SELECT 1 AS one")).rows[0]!.one).toBe(1);
  });
});
