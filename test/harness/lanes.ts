/**
 * The two lanes of `npm run test:integration` (scripts/test-integration.ts): the
 * integration files run one at a time in each lane, the lanes at the same time,
 * against one Docker engine.
 *
 * Lane A: the "integration" project (SQLite) without the files below.
 * Lane B: the files below on SQLite, then the "integration-pg" project.
 *
 * Each file's resources are its own (a temp dir, loopback ports from freePorts(),
 * a manager whose id labels what it creates, private dockerds under names no
 * other file uses), so which files share the engine at a time does not matter to
 * what they assert. The split balances the lanes by their fresh-clone durations and
 * puts the files that mostly wait (partitions, backoffs, offline hosts) beside the
 * busy ones (npm install, 1 GiB transfers, the browser, the chaos campaign):
 * lane A about 650 s, lane B about 400 s + 240 s on PostgreSQL.
 *
 * A new integration file lands in lane A unless listed here.
 */
export const LANE_B_FILES: readonly string[] = [
  "test/access.test.ts",
  "test/agent.test.ts",
  "test/cookbook.test.ts",
  "test/data-backups.test.ts",
  "test/host-limits.test.ts",
  "test/ledger.test.ts",
  "test/lifecycle.test.ts",
  "test/logs-backpressure.test.ts",
  "test/orphans.test.ts",
];

/** BERTH_INTEGRATION_LANE: "a" or "b" when scripts/test-integration.ts runs a lane; unset runs every file. */
export function integrationLane(env: NodeJS.ProcessEnv = process.env): "a" | "b" | undefined {
  const lane = env.BERTH_INTEGRATION_LANE;
  if (lane === undefined || lane === "") return undefined;
  if (lane === "a" || lane === "b") return lane;
  throw new Error(`BERTH_INTEGRATION_LANE must be "a" or "b", got ${JSON.stringify(lane)}`);
}
