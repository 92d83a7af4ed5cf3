// The ledger's order on a real PostgreSQL: a watcher reading `id > last` never
// skips an event that commits late when appends go through appendEvents, while
// the naive sequence INSERT (the control) does skip. The schema is the store's
// own (migratePostgres).
import pg from "pg";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { requirePostgres, useTestDatabase } from "../../../../test/harness/postgres-tests.js";
import { appendEvents, LEDGER_LOCK_KEY, readEventsAfter, stampServerChanges } from "./event-log.js";
import { migratePostgres } from "./migrate.js";

const provided = requirePostgres();

/** The naive append (the control): a sequence INSERT with no ordering lock. */
async function naiveAppend(client: pg.ClientBase, message: string): Promise<number> {
  const { rows } = await client.query<{ id: string }>("INSERT INTO events (time, type, message) VALUES ($1, 'test.naive', $2) RETURNING id", [Date.now(), message]);
  return Number(rows[0]!.id);
}

/** A promise with its settled state readable synchronously. */
function track<T>(p: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let done = false;
  const promise = p.finally(() => {
    done = true;
  });
  // A test that fails before awaiting it must not also leave an unhandled rejection behind.
  promise.catch(() => {});
  return { promise, settled: () => done };
}

/** Resolves once backend `pid` is waiting for the ledger's advisory lock (seen in pg_locks, not guessed from a timer). */
async function waitingForLedgerLock(observer: pg.Pool, pid: number): Promise<void> {
  // Well inside the test's timeout, so a missing wait fails with this message.
  const deadline = Date.now() + 3_000;
  for (;;) {
    const { rowCount } = await observer.query(
      `SELECT 1 FROM pg_locks
        WHERE pid = $1 AND locktype = 'advisory' AND NOT granted
          AND ((classid::int8 << 32) | objid::int8) = $2::int8`,
      [pid, LEDGER_LOCK_KEY.toString()],
    );
    if (rowCount) return;
    if (Date.now() > deadline) throw new Error(`backend ${pid} never waited for the ledger lock`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function backendPid(c: pg.ClientBase): Promise<number> {
  return (await c.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
}

/** Everything after `last`, read to the end in pages, as a watcher does. */
async function readAll(pool: pg.Pool, last: number): Promise<number[]> {
  const ids: number[] = [];
  for (;;) {
    const page = await readEventsAfter(pool, last, 100);
    if (page.length === 0) return ids;
    for (const e of page) ids.push(e.id);
    last = page[page.length - 1]!.id;
  }
}

/** A small deterministic PRNG (mulberry32): the same delays and rollbacks on every run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface LoadResult {
  committed: number[];
  rolledBack: number[];
  /** What a reader polling `id > last` during the run (and once after) saw, in order. */
  seen: number[];
  /** Committed ids the reader never saw: it had already moved past them. */
  skipped: number[];
  /** Reads during the run that returned events: the reader really interleaved with the writers. */
  livePolls: number;
  seconds: number;
}

/**
 * `writers` connections × `txPerWriter` transactions, each appending 1–3
 * events last, then pausing `maxDelayMs` at most before COMMIT, and rolling
 * back a `rollbackRate` share; one reader polls `id > last` meanwhile.
 */
async function runLoad(
  url: string,
  pool: pg.Pool,
  opts: { naive: boolean; writers: number; txPerWriter: number; maxDelayMs: number; rollbackRate: number; seed: number },
): Promise<LoadResult> {
  const clients: pg.Client[] = [];
  for (let w = 0; w < opts.writers; w++) {
    const c = new pg.Client({ connectionString: url });
    c.on("error", () => {});
    await c.connect();
    clients.push(c);
  }
  const committed: number[] = [];
  const rolledBack: number[] = [];
  const seen: number[] = [];
  let livePolls = 0;
  let writing = true;
  const started = performance.now();

  const writer = async (c: pg.Client, w: number): Promise<void> => {
    const rand = prng(opts.seed + w);
    for (let t = 0; t < opts.txPerWriter; t++) {
      const n = 1 + Math.floor(rand() * 3);
      await c.query("BEGIN");
      let ids: number[];
      if (opts.naive) {
        ids = [];
        for (let k = 0; k < n; k++) ids.push(await naiveAppend(c, `${w}:${t}:${k}`));
      } else {
        ids = await appendEvents(c, Array.from({ length: n }, (_, k) => ({ type: "test.load", message: `${w}:${t}:${k}` })));
      }
      const delay = rand() * opts.maxDelayMs;
      if (delay >= 1) await new Promise((r) => setTimeout(r, delay));
      else await new Promise((r) => setImmediate(r));
      if (rand() < opts.rollbackRate) {
        await c.query("ROLLBACK");
        rolledBack.push(...ids);
      } else {
        await c.query("COMMIT");
        committed.push(...ids);
      }
    }
  };

  const reader = async (): Promise<void> => {
    let last = 0;
    for (;;) {
      const more = writing;
      const page = await readEventsAfter(pool, last, 500);
      for (const e of page) {
        // The watcher's own check: ids arrive strictly increasing.
        if (e.id <= last) throw new Error(`reader got id ${e.id} after ${last}`);
        seen.push(e.id);
        last = e.id;
      }
      if (page.length > 0 && more) livePolls++;
      // One more read after the writers are done, then stop on an empty page.
      if (!more && page.length === 0) return;
      await new Promise((r) => setImmediate(r));
    }
  };

  try {
    const readerDone = reader();
    await Promise.all(clients.map((c, w) => writer(c, w)));
    const seconds = (performance.now() - started) / 1000;
    writing = false;
    await readerDone;
    const seenSet = new Set(seen);
    return { committed, rolledBack, seen, skipped: committed.filter((id) => !seenSet.has(id)).sort((a, b) => a - b), livePolls, seconds };
  } finally {
    writing = false;
    await Promise.all(clients.map((c) => c.end().catch(() => {})));
  }
}

describe.skipIf(!provided.url)("ledger order on PostgreSQL (appendEvents)", () => {
  const db = useTestDatabase("event_log");
  let pool: pg.Pool;
  const open: pg.Client[] = [];

  async function connect(): Promise<pg.Client> {
    const c = new pg.Client({ connectionString: db.url });
    c.on("error", () => {});
    await c.connect();
    open.push(c);
    return c;
  }

  beforeAll(async () => {
    pool = new pg.Pool({ connectionString: db.url, max: 4 });
    pool.on("error", () => {});
    await migratePostgres(pool);
  });
  beforeEach(async () => {
    for (const c of open.splice(0)) await c.end().catch(() => {});
    await pool.query("TRUNCATE events RESTART IDENTITY");
  });
  afterAll(async () => {
    for (const c of open.splice(0)) await c.end().catch(() => {});
    await pool?.end();
  });

  it("control: with a plain sequence INSERT a watcher reading `id > last` skips the event that commits late", async () => {
    const t1 = await connect();
    const t2 = await connect();
    await t1.query("BEGIN");
    const id1 = await naiveAppend(t1, "t1");
    await t2.query("BEGIN");
    const id2 = await naiveAppend(t2, "t2");
    await t2.query("COMMIT");
    expect(id1).toBeLessThan(id2);

    // The watcher sees T2's id while T1 is still open, and moves its cursor there.
    const seen = await readAll(pool, 0);
    expect(seen).toEqual([id2]);
    const last = seen[seen.length - 1]!;

    await t1.query("COMMIT");
    // T1's smaller id is now committed, but it is behind the cursor: the watcher never gets it.
    expect(await readAll(pool, last)).toEqual([]);
    expect(await readAll(pool, 0)).toEqual([id1, id2]);
  });

  it("appendEvents: a second appender waits until the first commits, ids come out in commit order, the watcher misses nothing", async () => {
    const t1 = await connect();
    const t2 = await connect();
    // Asked now: once t2 waits for the lock, its queries queue behind the wait.
    const pid2 = await backendPid(t2);
    const seen: number[] = [];
    let last = 0;
    const poll = async (): Promise<void> => {
      for (const id of await readAll(pool, last)) {
        seen.push(id);
        last = id;
      }
    };

    await t1.query("BEGIN");
    const ids1 = await appendEvents(t1, [{ type: "test.t1", message: "first" }]);
    await t2.query("BEGIN");
    const append2 = track(appendEvents(t2, [{ type: "test.t2", message: "second" }, { type: "test.t2", message: "third" }]));

    // T2 is blocked on the ledger lock (PostgreSQL says so), not merely slow.
    await waitingForLedgerLock(pool, pid2);
    expect(append2.settled()).toBe(false);
    await poll();
    expect(seen).toEqual([]);

    await t1.query("COMMIT");
    const ids2 = await append2.promise;
    // T2's ids were handed out after T1 committed: larger than T1's.
    expect(ids1).toEqual([1]);
    expect(ids2).toEqual([2, 3]);
    await poll();
    expect(seen).toEqual([1]);

    await t2.query("COMMIT");
    await poll();
    expect(seen).toEqual([1, 2, 3]);
    const events = await readEventsAfter(pool, 0, 10);
    expect(events.map((e) => [e.id, e.type, e.message])).toEqual([
      [1, "test.t1", "first"],
      [2, "test.t2", "second"],
      [3, "test.t2", "third"],
    ]);
  });

  it("a rollback after taking the lock releases it: the waiting appender proceeds, the rolled-back id stays a gap", async () => {
    const t1 = await connect();
    const t2 = await connect();
    // Asked now: once t2 waits for the lock, its queries queue behind the wait.
    const pid2 = await backendPid(t2);
    await t1.query("BEGIN");
    expect(await appendEvents(t1, [{ type: "test.rolled_back" }])).toEqual([1]);
    await t2.query("BEGIN");
    const append2 = track(appendEvents(t2, [{ type: "test.kept" }]));
    await waitingForLedgerLock(pool, pid2);
    expect(append2.settled()).toBe(false);

    await t1.query("ROLLBACK");
    expect(await append2.promise).toEqual([2]);
    await t2.query("COMMIT");
    expect((await readEventsAfter(pool, 0, 10)).map((e) => [e.id, e.type])).toEqual([[2, "test.kept"]]);
  });

  it("a writer whose connection dies while holding the lock releases it too (a manager killed mid-transaction)", async () => {
    const t1 = await connect();
    const t2 = await connect();
    // Asked now: once t2 waits for the lock, its queries queue behind the wait.
    const pid2 = await backendPid(t2);
    const pid1 = await backendPid(t1);
    await t1.query("BEGIN");
    await appendEvents(t1, [{ type: "test.lost" }]);
    await t2.query("BEGIN");
    const append2 = track(appendEvents(t2, [{ type: "test.kept" }]));
    await waitingForLedgerLock(pool, pid2);

    expect(append2.settled()).toBe(false);

    await pool.query("SELECT pg_terminate_backend($1)", [pid1]);
    expect(await append2.promise).toEqual([2]);
    await t2.query("COMMIT");
    expect((await readEventsAfter(pool, 0, 10)).map((e) => e.type)).toEqual(["test.kept"]);
  });

  it("server change positions: a second writer waits until the first commits, a reader going on from the last position never skips the first", async () => {
    await pool.query("TRUNCATE servers, server_tombstones");
    await pool.query("DELETE FROM meta WHERE key = 'server_change_seq'");
    for (const id of ["srv_a", "srv_b"]) {
      await pool.query(
        `INSERT INTO servers (id, project, name, host_id, generation, spec_json, status_json, phase, data_initialized, lifecycle_json, created_at, updated_at, deleted_at, version)
         VALUES ($1, 'p', $1, 'host_1', 1, '{}', '{}', 'RUNNING', 0, '{}', 1, 1, NULL, 1)`,
        [id],
      );
    }
    const positions = async (after: number) =>
      (await pool.query<{ id: string; change_seq: string }>("SELECT id, change_seq FROM servers WHERE change_seq > $1 ORDER BY change_seq", [after])).rows.map(
        (r) => `${r.id}@${Number(r.change_seq)}`,
      );
    const t1 = await connect();
    const t2 = await connect();
    const pid2 = await backendPid(t2);
    // T1 writes srv_a and is stamped first, then stalls before COMMIT (a slow manager).
    await t1.query("BEGIN");
    await t1.query("UPDATE servers SET version = version + 1 WHERE id = 'srv_a'");
    await stampServerChanges(t1, ["srv_a"], new Map(), 100);
    // T2 writes srv_b and would commit first.
    await t2.query("BEGIN");
    await t2.query("UPDATE servers SET version = version + 1 WHERE id = 'srv_b'");
    const stamp2 = track(stampServerChanges(t2, ["srv_b"], new Map(), 100));
    // T2 waits for the ledger lock (PostgreSQL says so), so it cannot take a position and commit before T1.
    await waitingForLedgerLock(pool, pid2);
    expect(stamp2.settled()).toBe(false);
    expect(await positions(0)).toEqual([]);

    await t1.query("COMMIT");
    await stamp2.promise;
    // The reader sees srv_a and moves on to its position; srv_b's comes after it.
    expect(await positions(0)).toEqual(["srv_a@1"]);
    await t2.query("COMMIT");
    expect(await positions(1)).toEqual(["srv_b@2"]);
  });

  it("refuses to append outside a transaction (the lock would order nothing) and writes nothing", async () => {
    const c = await connect();
    await expect(appendEvents(c, [{ type: "test.autocommit" }])).rejects.toThrow(/needs an open transaction.*BEGIN/);
    expect(await readEventsAfter(pool, 0, 10)).toEqual([]);
    // An empty batch takes no lock and needs no transaction.
    await expect(appendEvents(c, [])).resolves.toEqual([]);
  });

  it("under load (8 writers × 200 transactions, delays before COMMIT, rollbacks) a polling reader sees every committed event once, in id order; the naive INSERT skips some", async () => {
    const opts = { writers: 8, txPerWriter: 200, maxDelayMs: 2, rollbackRate: 0.1, seed: 16 };
    const locked = await runLoad(db.url, pool, { ...opts, naive: false });

    const committedSorted = [...locked.committed].sort((a, b) => a - b);
    expect(locked.seen).toEqual(committedSorted);
    expect(new Set(locked.seen).size).toBe(locked.seen.length);
    expect(locked.skipped).toEqual([]);
    expect(locked.seen.filter((id) => locked.rolledBack.includes(id))).toEqual([]);
    expect(locked.rolledBack.length).toBeGreaterThan(0);
    // Gaps are allowed, but only where a transaction rolled back.
    const all = new Set([...locked.committed, ...locked.rolledBack]);
    const max = Math.max(...all);
    expect(all.size).toBe(max);
    // The reader really read while the writers were writing.
    expect(locked.livePolls).toBeGreaterThan(20);

    await pool.query("TRUNCATE events RESTART IDENTITY");
    const naive = await runLoad(db.url, pool, { ...opts, naive: true });
    // The same load without the lock: committed events the reader had already passed.
    expect(naive.skipped.length).toBeGreaterThan(0);

    const rate = (r: LoadResult) => Math.round((r.committed.length + r.rolledBack.length) / r.seconds);
    console.log(
      `[event-log] with delays up to ${opts.maxDelayMs} ms before COMMIT: appendEvents ${rate(locked)} appends/s (${locked.committed.length} committed, ${locked.rolledBack.length} rolled back, ${locked.seconds.toFixed(2)} s, 0 skipped); ` +
        `naive INSERT ${rate(naive)} appends/s, ${naive.skipped.length} committed events skipped by the reader`,
    );
  }, 120_000);

  it("throughput: appendEvents against the naive INSERT with COMMIT right after the append (no delay)", async () => {
    const opts = { writers: 8, txPerWriter: 200, maxDelayMs: 0, rollbackRate: 0, seed: 7 };
    const locked = await runLoad(db.url, pool, { ...opts, naive: false });
    expect(locked.skipped).toEqual([]);
    expect(locked.seen).toEqual([...locked.committed].sort((a, b) => a - b));
    await pool.query("TRUNCATE events RESTART IDENTITY");
    const naive = await runLoad(db.url, pool, { ...opts, naive: true });
    const rate = (r: LoadResult) => Math.round(r.committed.length / r.seconds);
    const tx = (r: LoadResult) => Math.round((opts.writers * opts.txPerWriter) / r.seconds);
    console.log(
      `[event-log] COMMIT right after the append, ${opts.writers} writers: appendEvents ${rate(locked)} events/s (${tx(locked)} tx/s), naive INSERT ${rate(naive)} events/s (${tx(naive)} tx/s, ${naive.skipped.length} skipped)`,
    );
  }, 120_000);
});
