import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { openDatabase } from "../store/database.js";
import { Store } from "../store/store.js";
import { WriteProbe, type ProbeResult } from "./write-probe.js";

describe("WriteProbe", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it("succeeds on a writable database, writes one meta row, and restores the busy timeout", () => {
    const db = openDatabase(":memory:");
    const results: ProbeResult[] = [];
    const probe = new WriteProbe(new Store(db), { intervalMs: 60_000, onResult: (r) => results.push(r), now: () => 42 });
    const r = probe.check();
    expect(r.ok).toBe(true);
    expect(r.error).toBe("");
    expect(results).toHaveLength(1);
    expect(db.prepare("SELECT value FROM meta WHERE key = 'write_probe'").get()).toEqual({ value: "42" });
    expect(db.pragma("busy_timeout", { simple: true })).toBe(5000);
    probe.check();
    expect(db.prepare("SELECT count(*) AS n FROM meta WHERE key = 'write_probe'").get()).toEqual({ n: 1 });
  });

  it("fails, quickly, while another connection holds the write lock, and recovers when it is released", () => {
    const dir = mkdtempSync(join(tmpdir(), "berth-probe-"));
    dirs.push(dir);
    const path = join(dir, "berth.db");
    const db = openDatabase(path);
    const other = new Database(path);
    const seen: [boolean, boolean | undefined][] = [];
    const probe = new WriteProbe(new Store(db), { intervalMs: 60_000, lockWaitMs: 50, onResult: (r, prev) => seen.push([r.ok, prev?.ok]) });
    other.exec("BEGIN IMMEDIATE");
    const t0 = Date.now();
    const locked = probe.check();
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(locked.ok).toBe(false);
    expect(locked.error).toMatch(/SQLITE_BUSY/);
    expect(db.inTransaction).toBe(false);
    expect(db.pragma("busy_timeout", { simple: true })).toBe(5000);
    other.exec("COMMIT");
    expect(probe.check().ok).toBe(true);
    expect(seen).toEqual([
      [false, undefined],
      [true, false],
    ]);
    other.close();
    db.close();
  });

  it("reports a closed database instead of throwing", () => {
    const db = openDatabase(":memory:");
    const probe = new WriteProbe(new Store(db), { intervalMs: 60_000, onResult: () => {} });
    expect(probe.check().ok).toBe(true);
    db.close();
    expect(probe.check()).toMatchObject({ ok: false, error: "database closed" });
  });

  it("writes nothing inside another transaction and keeps its last answer", () => {
    const db = openDatabase(":memory:");
    const store = new Store(db);
    let t = 0;
    const probe = new WriteProbe(store, { intervalMs: 60_000, onResult: () => {}, now: () => ++t });
    expect(probe.check().ok).toBe(true);
    const inside = store.transaction(() => probe.check());
    expect(inside.ok).toBe(true);
    expect(store.getMeta("write_probe")).toBe("1");
    db.close();
  });
});
