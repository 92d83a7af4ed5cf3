import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { defineConfig } from "vitest/config";

/**
 * Unit test files that take their store from testStore(), sharedTestStores() or twoManagerStores() (manager/testing/store.ts)
 * or a whole manager from startTestManager() (manager/testing/fuzz-kit.ts): they run
 * once per engine, SQLite in "unit" and PostgreSQL in "unit-pg".
 */
function storeTests(dir: string): string[] {
  const found: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile() || !e.name.endsWith(".test.ts")) continue;
    const path = join(e.parentPath, e.name);
    if (/\b(testStore|sharedTestStores|twoManagerStores|startTestManager)\(/.test(readFileSync(path, "utf8"))) found.push(path);
  }
  return found.sort();
}

/**
 * `npm test` runs every project in one `vitest run`, three files at a time:
 * the projects share one pool (Vitest groups projects of equal maxWorkers),
 * so unit files fill the time integration files spend waiting on Docker,
 * timers and child processes. `BERTH_TEST_WORKERS` sets the count (every
 * project must have the same). docs/testing.md has the measurements.
 */
const WORKERS = Number(process.env.BERTH_TEST_WORKERS ?? 3);
/**
 * A unit test's timeout catches a hang, not a slow machine: the property
 * tests over PostgreSQL take 3-5 s here with other files running, against
 * Vitest's default of 5 s.
 */
const UNIT = { maxWorkers: WORKERS, testTimeout: 30_000, hookTimeout: 60_000 };

/**
 * Each integration worker has a Docker engine of its own
 * (test/harness/global-setup.ts starts one per worker; a file finds its
 * engine with testDockerHost()), so the containers an agent under test sees
 * are still only its own file's.
 */
const INTEGRATION = {
  globalSetup: ["test/harness/global-setup.ts"],
  setupFiles: ["test/harness/worker-engine.ts"],
  maxWorkers: WORKERS,
  testTimeout: 120_000,
  hookTimeout: 180_000,
};

export default defineConfig({
  test: {
    // Root-level: runs once per `vitest run`, whichever projects are selected; every
    // project inherits what it provides (inject("postgres")).
    globalSetup: ["test/harness/postgres-setup.ts"],
    projects: [
      {
        test: {
          name: "unit",
          include: ["manager/src/**/*.test.ts", "manager/testing/**/*.test.ts", "agent/src/**/*.test.ts", "agent/testing/**/*.test.ts", "web/src/**/*.test.ts", "bench/lib/**/*.test.ts"],
          env: { BERTH_TEST_STORE: "sqlite" },
          ...UNIT,
        },
      },
      {
        test: {
          name: "unit-pg",
          include: storeTests("manager/src"),
          env: { BERTH_TEST_STORE: "postgres" },
          ...UNIT,
        },
      },
      {
        test: {
          name: "integration",
          include: ["test/**/*.test.ts"],
          // Several managers need PostgreSQL: it runs in integration-pg only.
          exclude: ["**/node_modules/**", "test/managers.test.ts"],
          env: { BERTH_TEST_STORE: "sqlite" },
          ...INTEGRATION,
        },
      },
      {
        test: {
          name: "integration-pg",
          // The integration files whose subject is the store's part in a running manager:
          // the whole path from API to agent and back, and the ledger, on PostgreSQL.
          include: ["test/skeleton.test.ts", "test/lifecycle.test.ts", "test/ledger.test.ts", "test/managers.test.ts", "test/data-backups.test.ts"],
          env: { BERTH_TEST_STORE: "postgres" },
          ...INTEGRATION,
        },
      },
    ],
  },
});
