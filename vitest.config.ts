import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { defineConfig } from "vitest/config";
import { integrationLane, LANE_B_FILES } from "./test/harness/lanes.js";

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
 * What runs where (`npm test`, after lint, typecheck and the web build):
 * - unit, then unit-pg: one vitest run, one file at a time (vitest's default on 2 cores).
 * - integration and integration-pg: scripts/test-integration.ts runs two lanes at once
 *   (test/harness/lanes.ts): lane A is "integration" minus LANE_B_FILES, lane B is
 *   LANE_B_FILES on SQLite and then "integration-pg". BERTH_INTEGRATION_LANE picks a lane's
 *   files of "integration"; unset, `vitest run --project integration` runs all of them.
 */
const lane = integrationLane();

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
        },
      },
      {
        test: {
          name: "unit-pg",
          include: storeTests("manager/src"),
          env: { BERTH_TEST_STORE: "postgres" },
        },
      },
      {
        test: {
          name: "integration",
          include: lane === "b" ? [...LANE_B_FILES] : ["test/**/*.test.ts"],
          // Several managers need PostgreSQL: it runs in integration-pg only.
          exclude: ["**/node_modules/**", "test/managers.test.ts", ...(lane === "a" ? LANE_B_FILES : [])],
          env: { BERTH_TEST_STORE: "sqlite" },
          globalSetup: ["test/harness/global-setup.ts"],
          testTimeout: 120_000,
          hookTimeout: 180_000,
          // Real processes and one Docker engine: files run one at a time.
          fileParallelism: false,
        },
      },
      {
        test: {
          name: "integration-pg",
          // The integration files whose subject is the store's part in a running manager:
          // the whole path from API to agent and back, and the ledger, on PostgreSQL.
          include: ["test/skeleton.test.ts", "test/lifecycle.test.ts", "test/ledger.test.ts", "test/managers.test.ts", "test/data-backups.test.ts"],
          env: { BERTH_TEST_STORE: "postgres" },
          globalSetup: ["test/harness/global-setup.ts"],
          testTimeout: 120_000,
          hookTimeout: 180_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
