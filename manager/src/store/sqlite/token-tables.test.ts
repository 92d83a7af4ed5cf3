import { describe, expect, it } from "vitest";
import { hashSecret } from "../../ids.js";
import { openDatabase } from "./database.js";
import { TokenTables } from "./token-tables.js";

function fresh() {
  const db = openDatabase(":memory:");
  return { db, tokens: new TokenTables(db) };
}

describe("TokenTables", () => {
  it("creates tokens with a brt_ secret and stores only its SHA-256", () => {
    const { db, tokens } = fresh();
    expect(tokens.count()).toBe(0);
    const { token, secret } = tokens.create({ name: "ci", role: "operator", project: "web", createdBy: "test", now: 1000 });
    expect(secret).toMatch(/^brt_[A-Za-z0-9_-]{43}$/);
    expect(token).toMatchObject({ name: "ci", role: "operator", project: "web", createdAt: 1000, revokedAt: null, createdBy: "test" });
    expect(token.id).toMatch(/^tok_/);
    const row = db.prepare("SELECT * FROM tokens").get() as Record<string, unknown>;
    expect(row.secret_hash).toBe(hashSecret(secret));
    expect(JSON.stringify(row)).not.toContain(secret.slice(4));
    expect(tokens.count()).toBe(1);
  });

  it("finds a token by its secret only", () => {
    const { tokens } = fresh();
    const { token, secret } = tokens.create({ name: "a", role: "viewer", project: "p", createdBy: "", now: 1 });
    expect(tokens.findBySecret(secret)?.id).toBe(token.id);
    expect(tokens.findBySecret(`${secret}x`)).toBeUndefined();
    expect(tokens.findBySecret("brt_nope")).toBeUndefined();
  });

  it("records new projects and keeps all-projects tokens without one", () => {
    const { db, tokens } = fresh();
    tokens.create({ name: "a", role: "viewer", project: "games", createdBy: "", now: 5 });
    tokens.create({ name: "b", role: "operator", project: "games", createdBy: "", now: 6 });
    tokens.create({ name: "root", role: "admin", project: null, createdBy: "", now: 7 });
    const projects = (db.prepare("SELECT name FROM projects ORDER BY name").all() as { name: string }[]).map((r) => r.name);
    expect(projects).toEqual(["default", "games"]);
    expect(tokens.list().map((t) => t.name)).toEqual(["a", "b", "root"]);
    expect(tokens.list({ project: "games" }).map((t) => t.name)).toEqual(["a", "b"]);
    expect(tokens.list().find((t) => t.name === "root")?.project).toBeNull();
  });

  it("records use at most once a minute per token", () => {
    const { tokens } = fresh();
    const { token } = tokens.create({ name: "a", role: "viewer", project: "p", createdBy: "", now: 0 });
    tokens.touch(token.id, 1_000);
    tokens.touch(token.id, 30_000);
    expect(tokens.get(token.id)?.lastUsedAt).toBe(1_000);
    tokens.touch(token.id, 61_000);
    expect(tokens.get(token.id)?.lastUsedAt).toBe(61_000);
  });

  it("a use that cannot be recorded (disk full, read-only) does not fail; it is recorded at the next use", () => {
    const { db, tokens } = fresh();
    const { token } = tokens.create({ name: "a", role: "viewer", project: "p", createdBy: "", now: 0 });
    db.pragma("query_only = ON");
    expect(() => tokens.touch(token.id, 1_000)).not.toThrow();
    db.pragma("query_only = OFF");
    tokens.touch(token.id, 2_000);
    expect(tokens.get(token.id)?.lastUsedAt).toBe(2_000);
  });
});
