import { USAGE_COLUMNS, usageBucketFromRow, usageUpsertClause, type UsageBucketRow } from "../rows.js";
import type { UsageBucketRecord, UsageSubjectKind } from "../store.js";
import type { Db } from "./database.js";

/** The SQL of the usage history (store.ts usage.write, usageBuckets; migration 14). */
export class UsageTables {
  constructor(private readonly db: Db) {}

  /** store.ts usage.write: inside the batch's transaction, one prepared statement run per bucket. */
  write(buckets: readonly UsageBucketRecord[], pruneBefore: number, pruneLimit: number): void {
    const insert = this.db.prepare(`INSERT INTO usage_buckets (${USAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ${usageUpsertClause("MAX")}`);
    for (const b of buckets) {
      insert.run(b.kind, b.subjectId, b.at, b.samples, b.cpuPercent, b.memoryBytes, b.memoryMaxBytes, b.memoryLimitBytes ?? null, b.netRxBps, b.netTxBps, b.ioReadBps, b.ioWriteBps, b.pids);
    }
    this.db
      .prepare(
        "DELETE FROM usage_buckets WHERE (kind, subject_id, bucket_at) IN (SELECT kind, subject_id, bucket_at FROM usage_buckets WHERE bucket_at < ? ORDER BY bucket_at LIMIT ?)",
      )
      .run(pruneBefore, Math.max(0, Math.floor(pruneLimit)));
  }

  buckets(kind: UsageSubjectKind, subjectId: string, after: number): UsageBucketRecord[] {
    return (
      this.db.prepare(`SELECT ${USAGE_COLUMNS} FROM usage_buckets WHERE kind = ? AND subject_id = ? AND bucket_at > ? ORDER BY bucket_at`).all(kind, subjectId, after) as UsageBucketRow[]
    ).map(usageBucketFromRow);
  }

  /** A purged server's or a removed host's buckets. */
  deleteSubject(kind: UsageSubjectKind, subjectId: string): void {
    this.db.prepare("DELETE FROM usage_buckets WHERE kind = ? AND subject_id = ?").run(kind, subjectId);
  }
}
