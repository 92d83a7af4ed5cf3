/**
 * The run's PostgreSQL server as test files see it (started by
 * postgres-setup.ts), and a fresh database per test file:
 *
 *   const pg = requirePostgres();              // prints why, once, when skipped
 *   describe.skipIf(!pg.url)("on PostgreSQL", () => {
 *     const db = useTestDatabase("store");    // created in beforeAll, dropped in afterAll
 *     it("…", async () => { new pg.Pool({ connectionString: db.url }) … });
 *   });
 */
import { afterAll, beforeAll, inject } from "vitest";
import type { ProvidedPostgres } from "./postgres-setup.js";
import { createDatabase, dropDatabase, uniqueDatabaseName } from "./postgres.js";

let warned = false;

/** The run's server (url, binDir), or why there is none; the reason is printed once per file. */
export function requirePostgres(): ProvidedPostgres {
  const provided = inject("postgres");
  // Under CI a missing server fails the file (the global setup should already have failed the run):
  // a PostgreSQL suite must never pass there by being skipped.
  if (!provided.url && process.env.CI === "true") {
    throw new Error(`CI=true and no PostgreSQL server for this run: ${provided.unavailable ?? "none was provided"}`);
  }
  if (!provided.url && !warned) {
    warned = true;
    console.warn(`[berth] skipping PostgreSQL tests in this file: ${provided.unavailable ?? "no server was provided"}`);
  }
  return provided;
}

/**
 * Registers beforeAll/afterAll hooks giving the enclosing suite its own empty
 * database on the run's server; `url` is valid inside tests and hooks.
 */
export function useTestDatabase(prefix = "berth_test"): { readonly url: string; readonly name: string } {
  const name = uniqueDatabaseName(prefix);
  let url: string | undefined;
  beforeAll(async () => {
    const server = inject("postgres").url;
    if (!server) throw new Error("useTestDatabase needs the run's PostgreSQL server: guard the suite with describe.skipIf(!requirePostgres().url)");
    url = await createDatabase(server, name);
  });
  afterAll(async () => {
    const server = inject("postgres").url;
    if (url && server) await dropDatabase(server, name);
  });
  return {
    name,
    get url(): string {
      if (!url) throw new Error(`database ${name} is not created yet: use its url inside tests or hooks`);
      return url;
    },
  };
}
