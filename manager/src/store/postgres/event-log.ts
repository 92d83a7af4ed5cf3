/**
 * The event ledger's order on PostgreSQL: event ids that become visible in the
 * order they were handed out, so a watcher reading `WHERE id > last` never
 * skips an event that commits late.
 *
 * The problem. `events.id` comes from a sequence. A sequence value is taken at
 * INSERT and becomes visible at COMMIT, and transactions commit in any order:
 * T1 takes id 10, T2 takes id 11 and commits first, a watcher reads 11,
 * advances its cursor to 11, and never reads 10 once T1 commits. SQLite has no
 * such window (one writer at a time), so WatchEvents, ListEvents' page tokens
 * and the retention cut (`id <= max - keep`) all assume ids are seen in order.
 *
 * The rule. `appendEvents` takes a transaction-level advisory lock on
 * LEDGER_LOCK_KEY before it inserts, and it runs as the LAST statements of the
 * writer's transaction. The lock is held until COMMIT or ROLLBACK, so the next
 * appending transaction gets its ids only after this one has ended. PostgreSQL
 * makes a committing transaction visible (ProcArrayEndTransaction) before it
 * releases its locks (CommitTransaction in xact.c says so, for this reason),
 * hence every snapshot that sees a later id also sees every committed earlier
 * id: ids are handed out in commit order, and `id > last` is a lossless cursor.
 * Rolled-back transactions still burn their ids: ids may have gaps, but a gap
 * never fills in later.
 *
 * The cost. Appending transactions serialise for the insert plus the COMMIT
 * (its WAL flush, and a synchronous standby's acknowledgement when there is
 * one); everything before the events (reads, spec and status writes) still
 * runs concurrently. Events come last for a second reason: after taking the
 * lock a transaction waits for no other lock, so the ledger lock cannot take
 * part in a deadlock. (docs/design.md, "Ledger order on PostgreSQL", has the
 * measured figure.)
 *
 * The alternative not taken: stamp each row with its transaction id
 * (`xid8`, `pg_current_xact_id()`) and let readers read only below the
 * snapshot horizon (`xid < pg_snapshot_xmin(pg_current_snapshot())`), ordered
 * by (xid, id). Writers would never wait for each other, but:
 *  - the horizon is held back by the oldest open transaction of ANY kind on the
 *    server (a long report, a session idle in transaction), so every live watch
 *    on every manager stalls for as long as that transaction stays open;
 *  - the resume cursor becomes a pair (xid, id), while clients already keep a
 *    single event id (WatchEvents `after_id`, ListEvents page tokens), and id
 *    order would no longer be delivery order, so "after id N" would mean
 *    nothing and `id <= max - keep` retention could cut unread events.
 * berth's writes are small and group-committed, so a short serialised section
 * is the cheaper price than watches that stall on someone else's transaction.
 *
 * Every row of `events` must be inserted through appendEvents: an INSERT
 * without the lock reopens the window. No other code may use LEDGER_LOCK_KEY.
 */
import type pg from "pg";
import type { EventInput, EventRecord } from "../../domain/records.js";
import { eventFromRow, SERVER_CHANGE_COUNTER, SERVER_CHANGES_HORIZON, type EventRow } from "../rows.js";

/**
 * The advisory lock key that orders ledger appends: the ASCII bytes of
 * "berthevt" as a bigint, unlikely to clash with another application's keys
 * in a shared database.
 */
export const LEDGER_LOCK_KEY = 0x6265727468657674n;

/** Something that answers queries: a pool or a client. */
export type Queryable = Pick<pg.ClientBase, "query">;

/**
 * Appends `events` in the caller's open transaction, as its last statements,
 * and resolves to their ids in input order (ascending). Waits while another
 * transaction that appended is still open; the caller must COMMIT or ROLLBACK
 * right after, since every other appender waits until it does.
 *
 * Throws when `client` is not inside a transaction: the lock would be
 * released at the end of its own statement and order nothing.
 */
export async function appendEvents(client: pg.ClientBase, events: readonly EventInput[], now: number = Date.now()): Promise<number[]> {
  if (events.length === 0) return [];
  const status = client.getTransactionStatus();
  if (status !== "T") {
    throw new Error(
      `appendEvents needs an open transaction (the connection's state is ${status ?? "unknown"}): run BEGIN first and COMMIT right after, or the ledger lock orders nothing`,
    );
  }
  await client.query("SELECT pg_advisory_xact_lock($1::int8)", [LEDGER_LOCK_KEY.toString()]);
  const cols = {
    time: [] as string[],
    project: [] as string[],
    serverId: [] as string[],
    hostId: [] as string[],
    type: [] as string[],
    reason: [] as string[],
    message: [] as string[],
    actor: [] as string[],
    correlationId: [] as string[],
    payloadJson: [] as string[],
  };
  for (const e of events) {
    cols.time.push(String(now));
    cols.project.push(e.project ?? "");
    cols.serverId.push(e.serverId ?? "");
    cols.hostId.push(e.hostId ?? "");
    cols.type.push(e.type);
    cols.reason.push(e.reason ?? "");
    cols.message.push(e.message ?? "");
    cols.actor.push(e.actor ?? "");
    cols.correlationId.push(e.correlationId ?? "");
    cols.payloadJson.push(JSON.stringify(e.payload ?? {}));
  }
  // One statement for the whole batch: fewer round trips while the lock is held.
  // ORDER BY n makes the sequence hand out ids in input order.
  const { rows } = await client.query<{ id: string }>(
    `INSERT INTO events (time, project, server_id, host_id, type, reason, message, actor, correlation_id, payload_json)
     SELECT time, project, server_id, host_id, type, reason, message, actor, correlation_id, payload_json
       FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])
            WITH ORDINALITY AS e(time, project, server_id, host_id, type, reason, message, actor, correlation_id, payload_json, n)
      ORDER BY n
     RETURNING id`,
    [cols.time, cols.project, cols.serverId, cols.hostId, cols.type, cols.reason, cols.message, cols.actor, cols.correlationId, cols.payloadJson],
  );
  return rows.map((r) => toId(r.id)).sort((a, b) => a - b);
}

/**
 * Gives each server the transaction wrote the next change positions
 * (servers.change_seq, migration 10), or a tombstone for one it purged
 * (`purged`), under the ledger lock: like event ids, positions then become
 * visible in the order they were given, so a reader going on from the last
 * position it saw (store.ts serverChangesSince) never skips a change that
 * commits later. Run it after the transaction's other writes, right before
 * its events and COMMIT (it holds the lock until then). Positions come
 * from a counter in meta (SERVER_CHANGE_COUNTER), moved on after the lock is
 * taken, so they have no gaps. Besides that row, which only holders of the
 * ledger lock write, it touches only rows the transaction already wrote, so it
 * waits for no row lock while it holds the ledger lock. Drops the oldest tombstones beyond `keep` and moves the
 * horizon past them.
 */
export async function stampServerChanges(
  client: pg.ClientBase,
  ids: Iterable<string>,
  purged: ReadonlyMap<string, { project: string; hostId: string }>,
  keep: number,
): Promise<void> {
  const live: string[] = [];
  const gone: string[] = [];
  for (const id of ids) (purged.has(id) ? gone : live).push(id);
  if (live.length === 0 && gone.length === 0) return;
  await client.query("SELECT pg_advisory_xact_lock($1::int8)", [LEDGER_LOCK_KEY.toString()]);
  // The counter moves on by the batch's count; `head` is where it stood.
  const { rows } = await client.query<{ value: string }>(
    `INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = (meta.value::int8 + $2::int8)::text RETURNING value`,
    [SERVER_CHANGE_COUNTER, String(live.length + gone.length)],
  );
  const head = Number(rows[0]!.value) - live.length - gone.length;
  if (live.length > 0) {
    await client.query(
      "UPDATE servers AS s SET change_seq = $2::int8 + c.n FROM unnest($1::text[]) WITH ORDINALITY AS c(id, n) WHERE s.id = c.id",
      [live, head],
    );
  }
  if (gone.length === 0) return;
  await client.query(
    `INSERT INTO server_tombstones (server_id, project, host_id, change_seq)
     SELECT c.id, c.project, c.host_id, $4::int8 + c.n FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS c(id, project, host_id, n)
     ON CONFLICT (server_id) DO UPDATE SET change_seq = excluded.change_seq`,
    [gone, gone.map((id) => purged.get(id)!.project), gone.map((id) => purged.get(id)!.hostId), head + live.length],
  );
  const dropped = await client.query<{ m: string | number | null }>(
    `WITH d AS (DELETE FROM server_tombstones WHERE change_seq <= (SELECT change_seq FROM server_tombstones ORDER BY change_seq DESC LIMIT 1 OFFSET ${Math.floor(keep)}) RETURNING change_seq)
     SELECT MAX(change_seq) AS m FROM d`,
  );
  const horizon = dropped.rows[0]?.m;
  if (horizon !== null && horizon !== undefined) {
    await client.query(
      "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
      [SERVER_CHANGES_HORIZON, String(Number(horizon))],
    );
  }
}

/**
 * Up to `limit` events with ids above `afterId`, oldest first: the read behind
 * WatchEvents and forward listing. Lossless when every append went through
 * appendEvents: pass the last id returned as the next `afterId`.
 */
export async function readEventsAfter(db: Queryable, afterId: number, limit: number): Promise<EventRecord[]> {
  const { rows } = await db.query<PgEventRow>(`SELECT * FROM events WHERE id > $1 ORDER BY id LIMIT $2`, [afterId, Math.max(0, Math.floor(limit))]);
  return rows.map(eventFromPgRow);
}

/** An `events` row as `pg` returns it: int8 columns arrive as strings. */
type PgEventRow = Omit<EventRow, "id" | "time"> & { id: string; time: string };

function eventFromPgRow(r: PgEventRow): EventRecord {
  return eventFromRow({ ...r, id: toId(r.id), time: Number(r.time) });
}

/** An int8 id as a number; ids beyond 2^53 would lose digits, so they are refused rather than rounded. */
function toId(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new Error(`event id ${v} is beyond 2^53: the ledger's ids no longer fit a JavaScript number`);
  return n;
}
