import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { AlertTables } from "../store/sqlite/alert-tables.js";
import { openDatabase, type Db } from "../store/sqlite/database.js";
import { EventTables } from "../store/sqlite/event-tables.js";
import { SqliteStore } from "../store/sqlite/sqlite-store.js";
import { SqliteTables } from "../store/sqlite/tables.js";
import { TokenTables } from "../store/sqlite/token-tables.js";
import type { Store } from "../store/store.js";
import { testStore } from "../../testing/store.js";
import { WriteProbe, type ProbeResult } from "./write-probe.js";

/**
 * The SQLite store contract over `db`, whose connection the SQLite-only tests
 * inspect (its busy timeout, its rows): what the probe leaves behind on that engine.
 */
function contractOver(db: Db) {
  const tables = new SqliteTables(db);
  return { tables, contract: new SqliteStore("sqlite://test", tables, new EventTables(db), new AlertTables(db), new TokenTables(db)) };
}

describe("WriteProbe on the test engine", () => {
  let store: Store | undefined;
  afterEach(async () => {
    await store?.close();
    store = undefined;
  });

  it("succeeds on a writable store and writes its value where getMeta reads it", async () => {
    store = await testStore();
    const results: ProbeResult[] = [];
    let now = 42;
    const probe = new WriteProbe(store, { intervalMs: 60_000, onResult: (r) => results.push(r), now: () => now });
    const r = await probe.check();
    expect(r).toMatchObject({ ok: true, error: "" });
    expect(results).toEqual([r]);
    expect(await store.getMeta("write_probe")).toBe("42");
    now = 43;
    expect((await probe.check()).ok).toBe(true);
    expect(await store.getMeta("write_probe")).toBe("43");
  });

  it("reports a closed store instead of throwing", async () => {
    const s = await testStore();
    const probe = new WriteProbe(s, { intervalMs: 60_000, onResult: () => {} });
    expect((await probe.check()).ok).toBe(true);
    await s.close();
    const r = await probe.check();
    expect(r.ok).toBe(false);
    expect(r.error).not.toBe("");
    if (s.engine === "sqlite") expect(r.error).toBe("database closed");
  });
});

describe("WriteProbe on SQLite (the connection's busy timeout and lock)", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it("succeeds on a writable database, writes one meta row, and restores the busy timeout", async () => {
    const db = openDatabase(":memory:");
    const results: ProbeResult[] = [];
    const probe = new WriteProbe(contractOver(db).contract, { intervalMs: 60_000, onResult: (r) => results.push(r), now: () => 42 });
    const r = await probe.check();
    expect(r.ok).toBe(true);
    expect(r.error).toBe("");
    expect(results).toHaveLength(1);
    expect(db.prepare("SELECT value FROM meta WHERE key = 'write_probe'").get()).toEqual({ value: "42" });
    expect(db.pragma("busy_timeout", { simple: true })).toBe(5000);
    await probe.check();
    expect(db.prepare("SELECT count(*) AS n FROM meta WHERE key = 'write_probe'").get()).toEqual({ n: 1 });
    db.close();
  });

  it("fails, quickly, while another connection holds the write lock, and recovers when it is released", async () => {
    const dir = mkdtempSync(join(tmpdir(), "berth-probe-"));
    dirs.push(dir);
    const path = join(dir, "berth.db");
    const db = openDatabase(path);
    const other = new Database(path);
    const seen: [boolean, boolean | undefined][] = [];
    const probe = new WriteProbe(contractOver(db).contract, { intervalMs: 60_000, lockWaitMs: 50, onResult: (r, prev) => seen.push([r.ok, prev?.ok]) });
    other.exec("BEGIN IMMEDIATE");
    const t0 = Date.now();
    const locked = await probe.check();
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(locked.ok).toBe(false);
    expect(locked.error).toMatch(/SQLITE_BUSY/);
    expect(db.inTransaction).toBe(false);
    expect(db.pragma("busy_timeout", { simple: true })).toBe(5000);
    other.exec("COMMIT");
    expect((await probe.check()).ok).toBe(true);
    expect(seen).toEqual([
      [false, undefined],
      [true, false],
    ]);
    other.close();
    db.close();
  });
});

describe("WriteProbe", () => {
  it("runs one probe at a time: a check while one is waiting gets that one's answer", async () => {
    let calls = 0;
    let release!: () => void;
    const slow = {
      probeWrite: () => {
        calls++;
        return new Promise<void>((r) => (release = r));
      },
    };
    const results: ProbeResult[] = [];
    const probe = new WriteProbe(slow, { intervalMs: 60_000, onResult: (r) => results.push(r) });
    const a = probe.check();
    const b = probe.check();
    release();
    expect(await a).toBe(await b);
    expect([calls, results.length]).toEqual([1, 1]);
    const c = probe.check();
    release();
    await c;
    expect(calls).toBe(2);
  });
});
