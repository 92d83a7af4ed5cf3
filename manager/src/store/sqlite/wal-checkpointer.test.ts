/**
 * WAL checkpoints on a worker thread (wal-checkpointer.ts): the main
 * connection's automatic checkpoint is off, the worker keeps the WAL
 * bounded, and when the worker dies the automatic checkpoint comes back.
 */
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { openStore } from "../open.js";
import { openDatabase, type Db } from "./database.js";
import { startWalCheckpointer, type WalCheckpointer } from "./wal-checkpointer.js";
import { SqliteTables } from "./tables.js";

const MiB = 1024 * 1024;
const dirs: string[] = [];
const opened: { db: Db; checkpointer: WalCheckpointer }[] = [];
afterEach(async () => {
  for (const o of opened.splice(0)) {
    await o.checkpointer.stop();
    if (o.db.open) o.db.close();
  }
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function dbPath(): string {
  const dir = mkdtempSync(join(tmpdir(), "berth-wal-"));
  dirs.push(dir);
  return join(dir, "berth.db");
}

function start(path: string, opts: Parameters<typeof startWalCheckpointer>[2] = {}) {
  const db = openDatabase(path);
  const warnings: string[] = [];
  const checkpointer = startWalCheckpointer(db, path, { intervalMs: 20, onWarning: (m) => warnings.push(m), ...opts });
  opened.push({ db, checkpointer });
  return { db, checkpointer, warnings };
}

/**
 * Writes `mib` MiB through `db`, one 256 KiB transaction at a time, or all
 * in one transaction (`oneTransaction`: the WAL then surely grows by all of
 * it, since the worker's checkpoints cannot reset the WAL in the middle).
 */
function write(db: Db, mib: number, tag: string, oneTransaction = false): void {
  const insert = db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)");
  const value = "x".repeat(64 * 1024);
  const batch = (i: number) => {
    for (let j = 0; j < 4; j++) insert.run(`${tag}-${i}-${j}`, value);
  };
  if (oneTransaction) {
    db.transaction(() => {
      for (let i = 0; i < mib * 4; i++) batch(i);
    })();
    return;
  }
  for (let i = 0; i < mib * 4; i++) db.transaction(() => batch(i))();
}

const walSize = (path: string) => statSync(`${path}-wal`, { throwIfNoEntry: false })?.size ?? 0;

describe("WAL checkpoints on a worker", () => {
  it("turns the main connection's automatic checkpoint off; the worker checkpoints and truncates a large WAL", async () => {
    const path = dbPath();
    const { db, warnings } = start(path, { truncateBytes: 2 * MiB });
    expect(db.pragma("wal_autocheckpoint", { simple: true })).toBe(0);
    write(db, 8, "a", true);
    expect(walSize(path)).toBeGreaterThan(8 * MiB);
    // Nobody else checkpoints: the WAL is emptied only by the worker's TRUNCATE.
    await vi.waitFor(() => expect(walSize(path)).toBe(0), { timeout: 10_000, interval: 20 });
    // And it keeps the WAL bounded as writes go on, not just once: without it 8 MiB more would
    // stay there. (Its PASSIVE checkpoints may let SQLite reuse the WAL from its start between
    // these transactions, so the file need not pass the truncation size again.)
    write(db, 8, "b");
    await vi.waitFor(() => expect(walSize(path)).toBeLessThanOrEqual(2 * MiB), { timeout: 10_000, interval: 20 });
    expect(db.prepare("SELECT count(*) AS n FROM meta WHERE key LIKE 'b-%'").get()).toEqual({ n: 8 * 16 });
    expect(warnings).toEqual([]);
  }, 30_000);

  it("the store's group transaction, which reads before it writes, is never refused by the worker's TRUNCATE (SQLITE_BUSY failed a whole group)", async () => {
    const path = dbPath();
    // TRUNCATE on every pass (any WAL is "large"), as often as the worker can.
    const { db } = start(path, { intervalMs: 1, truncateBytes: 1 });
    const tables = new SqliteTables(db);
    const read = db.prepare("SELECT count(*) AS n FROM meta");
    const insert = db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)");
    const errors = new Map<string, number>();
    let groups = 0;
    const until = Date.now() + 1500;
    while (Date.now() < until) {
      // One event-loop turn of group commit: BEGIN, reads and writes of the turn's batches, COMMIT.
      try {
        tables.begin();
        read.get();
        for (let i = 0; i < 20; i++) insert.run(`k${i}`, "x".repeat(200));
        tables.commitTransaction();
        groups++;
      } catch (err) {
        const code = (err as { code?: string }).code ?? String(err);
        errors.set(code, (errors.get(code) ?? 0) + 1);
        if (tables.inTransaction()) tables.rollbackTransaction();
      }
      // The worker gets its turn between groups, as it does between the manager's turns.
      await new Promise((r) => setImmediate(r));
    }
    // With a deferred BEGIN, this loop met about 10,000 SQLITE_BUSY in its 1.5 s.
    expect(Object.fromEntries(errors)).toEqual({});
    expect(groups).toBeGreaterThan(50);
  });

  it("a worker that dies puts the automatic checkpoint back on the main connection and says so", async () => {
    const path = dbPath();
    const { db, checkpointer, warnings } = start(path);
    await checkpointer.worker.terminate();
    await vi.waitFor(() => expect(warnings.join("\n")).toMatch(/WAL checkpoint worker stopped \(exit code \d+\).*wal_autocheckpoint = 1000/));
    expect(db.pragma("wal_autocheckpoint", { simple: true })).toBe(1000);
  });

  it("a worker that cannot open the database falls back the same way", async () => {
    const path = dbPath();
    const db = openDatabase(path);
    const warnings: string[] = [];
    const checkpointer = startWalCheckpointer(db, join(path, "..", "missing", "berth.db"), { onWarning: (m) => warnings.push(m) });
    opened.push({ db, checkpointer });
    await vi.waitFor(() => expect(warnings.join("\n")).toMatch(/WAL checkpoint worker stopped \(.*directory does not exist.*\).*wal_autocheckpoint = 1000/), { timeout: 10_000 });
    expect(db.pragma("wal_autocheckpoint", { simple: true })).toBe(1000);
  }, 15_000);

  it("stop() ends the worker and closes its connection, so the main connection's close checkpoints and removes the WAL", async () => {
    const path = dbPath();
    const { db, checkpointer, warnings } = start(path);
    write(db, 1, "a");
    await checkpointer.stop();
    expect(checkpointer.worker.threadId).toBe(-1);
    db.close();
    expect(existsSync(`${path}-wal`)).toBe(false);
    // Stopping is not dying: no fallback, no warning.
    expect(warnings).toEqual([]);
  });

  it("a store opened with checkpointInWorker joins its worker on close", async () => {
    const path = dbPath();
    const warnings: string[] = [];
    const store = await openStore(`sqlite://${path}`, { checkpointInWorker: true, onWarning: (m) => warnings.push(m) });
    // The schema is in the WAL (only page 1 in the file): the file grows once the worker, connected, has checkpointed.
    const opened = statSync(path).size;
    await store.commit([{ op: "event.append", event: { type: "server.created", serverId: "srv_a", project: "default", hostId: "host_a", actor: "test", reason: "Test", message: "m" }, at: 1 }]);
    await vi.waitFor(() => expect(statSync(path).size).toBeGreaterThan(opened), { timeout: 10_000, interval: 20 });
    await store.close();
    // The worker's connection was closed first: the store's was the last, and its close removed the WAL.
    expect(existsSync(`${path}-wal`)).toBe(false);
    expect(warnings).toEqual([]);
  }, 15_000);
});
