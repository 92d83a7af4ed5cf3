import type { WebhookDeliveryRecord } from "../../domain/records.js";
import { deliveryMoved, webhookDeliveryFromRow, type WebhookDeliveryRow } from "../rows.js";
import type { Db } from "./database.js";

/**
 * The SQL of the work several managers of one database share beyond the
 * records (store.ts webhook.* operations, countLiveLeases): pending webhook
 * deliveries (migration 9) and counting live presence leases. SQLite has one
 * manager per file, so here they only make retries survive a restart; the
 * same operations on PostgreSQL (postgres/pg-writes.ts) hand them between managers.
 */
export class ClusterTables {
  constructor(private readonly db: Db) {}

  /** Inserts the delivery; deletes the oldest others beyond `maxPending` and returns them. */
  enqueue(d: Omit<WebhookDeliveryRecord, "attempts" | "lastError">, maxPending: number): { id: string; urlKey: string }[] {
    this.db
      .prepare("INSERT INTO webhook_deliveries (id, url_key, body, attempts, next_attempt_at, last_error, created_at) VALUES (?, ?, ?, 0, ?, '', ?)")
      .run(d.id, d.urlKey, d.body, d.nextAttemptAt, d.createdAt);
    const n = (this.db.prepare("SELECT COUNT(*) AS n FROM webhook_deliveries").get() as { n: number }).n;
    const excess = n - Math.max(1, Math.floor(maxPending));
    if (excess <= 0) return [];
    const drop = this.db
      .prepare("SELECT id, url_key FROM webhook_deliveries WHERE NOT (id = ? AND url_key = ?) ORDER BY created_at, id, url_key LIMIT ?")
      .all(d.id, d.urlKey, excess) as { id: string; url_key: string }[];
    const del = this.db.prepare("DELETE FROM webhook_deliveries WHERE id = ? AND url_key = ?");
    for (const r of drop) del.run(r.id, r.url_key);
    return drop.map((r) => ({ id: r.id, urlKey: r.url_key }));
  }

  /** store.ts webhook.retry. */
  retry(id: string, urlKey: string, attempt: number, nextAttemptAt: number, lastError: string): void {
    const r = this.db
      .prepare("UPDATE webhook_deliveries SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ? AND url_key = ? AND attempts = ?")
      .run(attempt, nextAttemptAt, lastError, id, urlKey, attempt - 1);
    if (r.changes !== 1) throw deliveryMoved(id, attempt);
  }

  /** store.ts webhook.done. */
  done(id: string, urlKey: string, attempt: number): void {
    const r = this.db.prepare("DELETE FROM webhook_deliveries WHERE id = ? AND url_key = ? AND attempts = ?").run(id, urlKey, attempt - 1);
    if (r.changes !== 1) throw deliveryMoved(id, attempt);
  }

  due(at: number, limit: number): WebhookDeliveryRecord[] {
    return (
      this.db
        .prepare("SELECT * FROM webhook_deliveries WHERE next_attempt_at <= ? ORDER BY next_attempt_at, created_at, id, url_key LIMIT ?")
        .all(at, Math.max(0, Math.floor(limit))) as WebhookDeliveryRow[]
    ).map(webhookDeliveryFromRow);
  }

  nextAt(): number | undefined {
    return (this.db.prepare("SELECT MIN(next_attempt_at) AS t FROM webhook_deliveries").get() as { t: number | null }).t ?? undefined;
  }

  count(): number {
    return (this.db.prepare("SELECT COUNT(*) AS n FROM webhook_deliveries").get() as { n: number }).n;
  }

  /** Leases named `prefix…` not expired at `at`. */
  countLiveLeases(prefix: string, at: number): number {
    return (this.db.prepare("SELECT COUNT(*) AS n FROM leases WHERE substr(name, 1, length(?)) = ? AND expires_at > ?").get(prefix, prefix, at) as { n: number }).n;
  }

  /** store.ts lease.pruneExpired. */
  pruneExpiredLeases(prefix: string, before: number): void {
    this.db.prepare("DELETE FROM leases WHERE substr(name, 1, length(?)) = ? AND expires_at < ?").run(prefix, prefix, before);
  }
}
