/**
 * What a flush of the usage history costs on SQLite (a file database in WAL
 * mode, as the manager runs it): 10,000 servers' 5-minute buckets written in
 * one batch (usage-feed.ts flush, store usage.write), the wall and CPU time of
 * each flush printed. By default the table starts empty and holds 3 flushes;
 * BERTH_USAGE_FLUSH_FULL=1 first fills it with a whole day (288 buckets per
 * server, 2.88 million rows, a few minutes) so the flush measured is the
 * steady state: 10,000 rows in, 10,000 pruned. docs/resources.md quotes it.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { afterAll, describe, expect, it } from "vitest";
import { UsageReportSchema } from "@berth/proto/berth/v1/agent_pb.js";
import { openStore } from "../store/open.js";
import type { UsageBucketRecord } from "../store/store.js";
import { COARSE_STEP_MS } from "./history.js";
import { FLUSH_DELAY_MS, STORE_KEEP_MS, UsageFeed } from "./usage-feed.js";

const KEYS = 10_000;
const FULL = process.env.BERTH_USAGE_FLUSH_FULL === "1";
const T0 = Math.floor(1_700_000_000_000 / COARSE_STEP_MS) * COARSE_STEP_MS;

describe("the usage flush's cost on SQLite", () => {
  const dir = mkdtempSync(join(tmpdir(), "berth-usage-flush-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it(`writes ${KEYS.toLocaleString("en")} servers' buckets in one batch`, async () => {
    const store = await openStore(`sqlite://${join(dir, "berth.db")}`);
    try {
      const ids = Array.from({ length: KEYS }, (_, i) => `srv_${String(i).padStart(6, "0")}`);
      const placed = new Set(ids);
      let start = T0;
      if (FULL) {
        // A day of buckets already stored, the oldest about to be pruned.
        for (let b = 0; b < 300; b++) {
          const at = T0 + b * COARSE_STEP_MS;
          const rows: UsageBucketRecord[] = ids.map((id) => ({ kind: "server", subjectId: id, at, samples: 30, cpuPercent: 12.5, memoryBytes: 1e8, memoryMaxBytes: 1.2e8, memoryLimitBytes: 5e8, netRxBps: 1000, netTxBps: 2000, ioReadBps: 0, ioWriteBps: 4096, pids: 7 }));
          await store.commit([{ op: "usage.write", buckets: rows, pruneBefore: 0, pruneLimit: 0 }]);
        }
        start = T0 + 300 * COARSE_STEP_MS;
      }
      const clock = { now: start };
      const feed = new UsageFeed({ projectOf: async () => "default", store, now: () => clock.now });
      const report = create(UsageReportSchema, {
        containers: ids.map((serverId) => ({ serverId, containerId: `c_${serverId}`, sample: { time: timestampFromMs(1), cpuPercent: 12.5, memoryBytes: 100_000_000n, memoryLimitBytes: 500_000_000n, pids: 7 } })),
      });
      const figures: string[] = [];
      for (let round = 0; round < 3; round++) {
        const bucket = start + round * COARSE_STEP_MS;
        // Two reports in the bucket (one is enough to make it), as agents report every 10 s.
        for (const t of [bucket + 1000, bucket + 11_000]) {
          clock.now = t;
          // One report of 10,000 containers exceeds MAX_CONTAINERS: split as 5,000-container hosts.
          for (let h = 0; h < KEYS / 5000; h++) {
            const part = create(UsageReportSchema, { containers: report.containers.slice(h * 5000, (h + 1) * 5000) });
            await feed.record(`host_${h}`, part, placed);
          }
        }
        clock.now = bucket + COARSE_STEP_MS + FLUSH_DELAY_MS;
        const cpu = process.cpuUsage();
        const t0 = performance.now();
        const written = await feed.flush();
        const wall = performance.now() - t0;
        const used = process.cpuUsage(cpu);
        expect(written).toBe(KEYS);
        figures.push(`flush ${round + 1}: ${written} buckets, ${wall.toFixed(1)} ms wall, ${((used.user + used.system) / 1000).toFixed(1)} ms CPU`);
      }
      const stored = await store.usageBuckets("server", ids[0]!, clock.now - 26 * 3_600_000, clock.now);
      // A day and its margin at most, when full (a round prunes as many as it writes, and more).
      expect(stored.length).toBeLessThanOrEqual(FULL ? STORE_KEEP_MS / COARSE_STEP_MS + 3 : 3);
      console.log(`[usage flush, SQLite file, ${FULL ? "a day stored" : "empty table"}] ${figures.join("; ")}`);
    } finally {
      await store.close();
    }
  }, FULL ? 1_800_000 : 120_000);
});
