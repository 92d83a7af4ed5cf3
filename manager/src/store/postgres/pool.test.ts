// The store's connection pool (pool.ts) when PostgreSQL drops a connection
// that a transaction has checked out, between two of its statements (a server
// restart, a failover, a network cut): the process must not crash on the
// client's 'error' event, and the next statement fails as a connection error.
import pg from "pg";
import { describe, expect, it } from "vitest";
import { requirePostgres, useTestDatabase } from "../../../../test/harness/postgres-tests.js";
import { parseStoreUrl } from "../store-url.js";
import type { PostgresStoreUrl } from "./connection.js";
import { createStorePool, isConnectionError } from "./pool.js";

const provided = requirePostgres();

describe.skipIf(!provided.url)("the store's pool", () => {
  const db = useTestDatabase("pool");

  it("a checked-out connection the server terminates between statements: no crash, the next statement fails as a connection error", async () => {
    const pool = createStorePool(parseStoreUrl(db.url) as PostgresStoreUrl);
    const killer = new pg.Client({ connectionString: db.url });
    killer.on("error", () => {});
    await killer.connect();
    try {
      const client = await pool.connect();
      await client.query("BEGIN");
      const { rows } = await client.query<{ pid: number }>("SELECT pg_backend_pid() AS pid");
      const ended = new Promise((resolve) => client.once("end", resolve));
      // Without the pool's own listener, this 'error' event (no statement in flight) is unhandled: vitest fails the run.
      await killer.query("SELECT pg_terminate_backend($1)", [rows[0]!.pid]);
      await ended;
      const err = await client.query("SELECT 1").then(() => undefined, (e: unknown) => e);
      expect(isConnectionError(err), String(err)).toBe(true);
      client.release(true);
      // The pool opens a fresh connection for the next caller.
      expect((await pool.query<{ one: number }>("SELECT 1 AS one")).rows[0]!.one).toBe(1);
    } finally {
      await killer.end();
      await pool.end();
    }
  });
});
