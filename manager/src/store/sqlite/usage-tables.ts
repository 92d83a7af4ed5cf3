import { checkUsageBucket, sortedUsageBuckets, USAGE_COLUMNS, usageBucketFromRow, usageBucketStarts, usageUpsertClause, type UsageBucketRow } from "../rows.js";
import { USAGE_BUCKET_MS, USAGE_SPAN_MAX_MS, type UsageBucketRecord, type UsageSubjectKind } from "../store.js";
import type { Db } from "./database.js";

/** The bucket starts of a span, from ? to ? (inclusive), as a subquery: each a lookup of the primary key. */
const SERIES = `WITH RECURSIVE b(t) AS (SELECT ? UNION ALL SELECT t + ${USAGE_BUCKET_MS} FROM b WHERE t + ${USAGE_BUCKET_MS} <= ?) SELECT t FROM b`;
/** The bucket starts of the last USAGE_SPAN_MAX_MS up to the newest bucket stored (none when the table is empty). */
const RECENT = `WITH RECURSIVE b(t) AS (SELECT MAX(bucket_at) FROM usage_buckets UNION ALL SELECT t - ${USAGE_BUCKET_MS} FROM b WHERE t - ${USAGE_BUCKET_MS} >= (SELECT MAX(bucket_at) FROM usage_buckets) - ${USAGE_SPAN_MAX_MS}) SELECT t FROM b WHERE t IS NOT NULL`;

/** The SQL of the usage history (store.ts usage.write, usageBuckets; migration 14). */
export class UsageTables {
  constructor(private readonly db: Db) {}

  /** store.ts usage.write: inside the batch's transaction, one prepared statement run per bucket, in key order (appended at the table's end). */
  write(buckets: readonly UsageBucketRecord[], pruneBefore: number, pruneLimit: number): void {
    for (const b of buckets) checkUsageBucket(b);
    const insert = this.db.prepare(`INSERT INTO usage_buckets (${USAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ${usageUpsertClause("MAX")}`);
    for (const b of sortedUsageBuckets(buckets)) {
      insert.run(b.kind, b.subjectId, b.at, b.samples, b.cpuPercent, b.memoryBytes, b.memoryMaxBytes, b.memoryLimitBytes ?? null, b.netRxBps, b.netTxBps, b.ioReadBps, b.ioWriteBps, b.pids);
    }
    this.db
      .prepare(
        "DELETE FROM usage_buckets WHERE (bucket_at, kind, subject_id) IN (SELECT bucket_at, kind, subject_id FROM usage_buckets WHERE bucket_at < ? ORDER BY bucket_at LIMIT ?)",
      )
      .run(pruneBefore, Math.max(0, Math.floor(pruneLimit)));
  }

  buckets(kind: UsageSubjectKind, subjectId: string, after: number, upTo: number): UsageBucketRecord[] {
    const starts = usageBucketStarts(after, upTo);
    if (starts.length === 0) return [];
    return (
      this.db
        .prepare(`SELECT ${USAGE_COLUMNS} FROM usage_buckets WHERE bucket_at IN (${SERIES}) AND kind = ? AND subject_id = ? ORDER BY bucket_at`)
        .all(starts[0], starts.at(-1), kind, subjectId) as UsageBucketRow[]
    ).map(usageBucketFromRow);
  }

  /** A purged server's or a removed host's buckets (those older than the span are pruned by age). */
  deleteSubject(kind: UsageSubjectKind, subjectId: string): void {
    this.db.prepare(`DELETE FROM usage_buckets WHERE bucket_at IN (${RECENT}) AND kind = ? AND subject_id = ?`).run(kind, subjectId);
  }
}
