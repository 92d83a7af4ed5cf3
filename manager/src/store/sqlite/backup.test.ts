import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { EventInput } from "../../domain/records.js";
import { openStore } from "../open.js";
import { backupSqliteDatabase, BackupError } from "./backup.js";

/** Creates an empty, migrated store database at `path`, as a manager's first start does. */
async function createDatabase(path: string): Promise<void> {
  await (await openStore(`sqlite://${path}`)).close();
}

describe("online backup of a SQLite store", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "berth-backup-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("copies a database that is being written to: the copy is complete, consistent and self-contained", async () => {
    const dbPath = join(dir, "berth.db");
    const store = await openStore(`sqlite://${dbPath}`);
    const append = (event: EventInput) => store.commit([{ op: "event.append", event, at: Date.now() }]);
    for (let i = 0; i < 500; i++) await append({ type: "token.created", actor: "cli", message: `event ${i} ${"x".repeat(200)}` });
    // The manager keeps writing while the backup runs.
    let writes = 0;
    const during: Promise<unknown>[] = [];
    const writer = setInterval(() => {
      for (let i = 0; i < 50; i++, writes++) during.push(append({ type: "token.created", actor: "cli", message: `during backup ${writes}` }));
    }, 1);
    const s = await backupSqliteDatabase(dbPath, join(dir, "copy.db"));
    clearInterval(writer);
    await Promise.all(during);
    await store.close();

    expect(s.file).toBe(join(dir, "copy.db"));
    expect(s.source).toBe(dbPath);
    expect(s.lastEventId).toBeGreaterThanOrEqual(500);
    expect(s.schemaVersion).toBeGreaterThan(0);
    // No temporary file left, and no -wal beside the copy: one file holds everything.
    expect(readdirSync(dir).filter((f) => f.startsWith("copy.db"))).toEqual(["copy.db"]);
    const copy = new Database(join(dir, "copy.db"), { readonly: true });
    expect(copy.pragma("integrity_check", { simple: true })).toBe("ok");
    const ids = copy.prepare("SELECT id FROM events ORDER BY id").pluck().all() as number[];
    // A snapshot: every id up to the last one copied, none missing.
    expect(ids.length).toBe(s.lastEventId);
    expect(ids[ids.length - 1]).toBe(s.lastEventId);
    copy.close();
    // The copy opens as a manager database (migrations already applied), holding what was copied.
    const restored = await openStore(`sqlite://${join(dir, "copy.db")}`);
    expect(await restored.lastEventId()).toBe(s.lastEventId);
    await restored.close();
  });

  it("works on a stopped manager's database too", async () => {
    const dbPath = join(dir, "berth.db");
    await createDatabase(dbPath);
    const s = await backupSqliteDatabase(dbPath, join(dir, "copy.db"));
    expect(s.servers).toBe(0);
    expect(existsSync(join(dir, "copy.db"))).toBe(true);
  });

  it("refuses to overwrite, to copy a missing database, or to write into a missing directory", async () => {
    const dbPath = join(dir, "berth.db");
    await createDatabase(dbPath);
    writeFileSync(join(dir, "exists.db"), "keep me");
    await expect(backupSqliteDatabase(dbPath, join(dir, "exists.db"))).rejects.toThrow(/exists; choose another name, or pass --force/);
    await expect(backupSqliteDatabase(join(dir, "nope.db"), join(dir, "c.db"))).rejects.toThrow(/no database at/);
    await expect(backupSqliteDatabase(dbPath, join(dir, "no/such/dir/c.db"))).rejects.toThrow(BackupError);
    await expect(backupSqliteDatabase(dbPath, dbPath)).rejects.toThrow(/names the database itself/);
    // --force replaces it.
    await backupSqliteDatabase(dbPath, join(dir, "exists.db"), { force: true });
    expect(new Database(join(dir, "exists.db")).pragma("integrity_check", { simple: true })).toBe("ok");
  });
});
