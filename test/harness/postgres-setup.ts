/**
 * Vitest globalSetup of the root config, so it runs once per `vitest run`
 * whichever projects (unit, integration) are selected: one PostgreSQL server for
 * every test file, handed to them as inject("postgres") (see postgres-tests.ts).
 *
 * - BERTH_TEST_PG_URL set: that server is used (it must answer), none is started.
 * - Otherwise a private server is started (postgres.ts); Debian's `postgresql` is
 *   apt-installed first when the binaries are missing and this is root.
 * - No binaries: with CI=true the run fails saying how to install them; without
 *   CI the tests that need PostgreSQL are skipped and say why.
 */
import type { TestProject } from "vitest/node";
import { connectError, ensurePostgresBin, findPostgresBin, POSTGRES_INSTALL_HINT, startPostgres } from "./postgres.js";

/** What test files get from inject("postgres"). */
export interface ProvidedPostgres {
  /** Superuser URL of the run's server (its maintenance database); absent when unavailable. */
  url?: string;
  /** initdb/pg_ctl directory, for tests that start servers of their own; absent when there are none. */
  binDir?: string;
  /** Why there is no server (only without CI: with CI=true the run fails instead). */
  unavailable?: string;
}

declare module "vitest" {
  export interface ProvidedContext {
    postgres: ProvidedPostgres;
  }
}

/** Starts or finds the server; the returned teardown stops it only if this run started it. */
export default async function setup(project: TestProject): Promise<(() => Promise<void>) | undefined> {
  const t0 = Date.now();
  const ci = isCi();
  const external = process.env.BERTH_TEST_PG_URL;
  if (external) {
    const err = await connectError(external, 5_000);
    if (err) throw new Error(`BERTH_TEST_PG_URL=${redact(external)} does not answer: ${err}. Start that server, or unset BERTH_TEST_PG_URL to let the tests start their own.`);
    // Binaries are optional here (only tests starting servers of their own need them): never installed.
    const binDir = findPostgresBin();
    project.provide("postgres", { url: external, ...(binDir ? { binDir } : {}) });
    console.log(`[berth] postgres: using BERTH_TEST_PG_URL ${redact(external)}`);
    return undefined;
  }

  const bin = await ensurePostgresBin();
  if ("missing" in bin) {
    const reason = `${bin.missing}; ${POSTGRES_INSTALL_HINT}`;
    if (ci) throw new Error(`PostgreSQL is required with CI=true and is missing: ${reason}`);
    console.warn(`[berth] postgres: tests that need PostgreSQL are SKIPPED: ${reason}`);
    project.provide("postgres", { unavailable: reason });
    return undefined;
  }

  // A server that cannot start is a broken setup, not a missing dependency: fail, CI or not.
  const server = await startPostgres({ binDir: bin.binDir });
  project.provide("postgres", { url: server.url, binDir: bin.binDir });
  console.log(`[berth] postgres ${server.url} (data ${server.dataDir}, pid ${await server.pid()}) ready in ${Date.now() - t0} ms`);
  return () => server.stop();
}

function isCi(): boolean {
  const v = process.env.CI;
  return v !== undefined && v !== "" && v !== "0" && v.toLowerCase() !== "false";
}

/** A URL without its password, for logs. */
function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "(unparsable URL)";
  }
}
