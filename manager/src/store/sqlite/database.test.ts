import { chmodSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { openDatabase } from "./database.js";

const mode = (p: string) => statSync(p).mode & 0o777;

describe("openDatabase file modes", () => {
  const dirs: string[] = [];
  let oldUmask: number | undefined;
  afterEach(() => {
    if (oldUmask !== undefined) process.umask(oldUmask);
    oldUmask = undefined;
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it("keeps the database, its WAL and shared memory 0600 and a new directory 0700 under a permissive umask", () => {
    const base = mkdtempSync(join(tmpdir(), "berth-db-modes-"));
    dirs.push(base);
    oldUmask = process.umask(0);
    const path = join(base, "fresh", "berth.db");
    const db = openDatabase(path);
    db.prepare("INSERT INTO meta (key, value) VALUES ('t', 'x')").run();
    expect(mode(join(base, "fresh"))).toBe(0o700);
    expect(mode(path)).toBe(0o600);
    expect(mode(`${path}-wal`)).toBe(0o600);
    expect(mode(`${path}-shm`)).toBe(0o600);
    db.close();
  });

  it("tightens an existing world-readable database and warns about an open directory", () => {
    const base = mkdtempSync(join(tmpdir(), "berth-db-modes-"));
    dirs.push(base);
    oldUmask = process.umask(0o022);
    const path = join(base, "berth.db");
    openDatabase(path).close();
    chmodSync(path, 0o644);
    chmodSync(base, 0o755);
    const warnings: string[] = [];
    const db = openDatabase(path, { onWarning: (m) => warnings.push(m) });
    expect(mode(path)).toBe(0o600);
    expect(warnings.join("\n")).toMatch(/accessible to other users \(mode 755\).*chmod 700/);
    db.close();
  });
});
