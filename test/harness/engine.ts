/**
 * The Docker engine of this test worker (global-setup.ts starts one per
 * worker): VITEST_POOL_ID n, from 1 to the project's maxWorkers, takes the
 * n-th. Two files never run at the same time on one worker, so a file has
 * its engine to itself.
 */
import { inject } from "vitest";

/** "unix:///..." of this worker's engine. */
export function testDockerHost(): string {
  const hosts = inject("dockerHosts");
  if (!hosts?.length) throw new Error("no Docker engine provided: run this file in an integration project (test/harness/global-setup.ts)");
  const pool = Number(process.env.VITEST_POOL_ID ?? "1");
  if (!Number.isInteger(pool) || pool < 1) throw new Error(`VITEST_POOL_ID=${process.env.VITEST_POOL_ID}: expected a worker number from 1`);
  const host = hosts[pool - 1];
  if (!host) throw new Error(`worker ${pool} has no Docker engine: global setup started ${hosts.length} (the project's maxWorkers)`);
  return host;
}
