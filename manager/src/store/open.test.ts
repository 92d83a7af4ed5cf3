import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openStore, StoreUnavailableError } from "./open.js";
import { SecretBox } from "./secrets.js";
import { StoreUrlError } from "./store-url.js";

describe("openStore", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "berth-open-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("opens a SQLite file from its URL, migrated, with every store over one database", () => {
    const path = join(dir, "sub", "berth.db");
    const opened = openStore(`sqlite://${path}`);
    expect(existsSync(path)).toBe(true);
    expect(opened.description).toBe(`sqlite://${path}`);
    const { token } = opened.tokens.create({ name: "t", role: "admin", project: null, createdBy: "test", now: 1 });
    const id = opened.store.appendEvent({ type: "token.created", actor: "test", correlationId: token.id, message: "m" }, 2);
    // A write through one store is read through another: the same database.
    expect(opened.events.listNewestFirst({ project: null, limit: 10 }).map((e) => e.id)).toContain(id);
    expect(opened.alerts.listFiring()).toEqual([]);
    opened.close();
    opened.close(); // twice is harmless
    const again = openStore(`sqlite://${path}`);
    expect(again.tokens.count()).toBe(1);
    again.close();
  });

  it("hands the secret key chooser the database's meta, and closes the database when it throws", () => {
    const path = join(dir, "berth.db");
    const box = SecretBox.ephemeral();
    const opened = openStore(`sqlite://${path}`, {
      secrets: (meta) => {
        meta.set("probe", "x");
        return box;
      },
    });
    expect(opened.store.secrets).toBe(box);
    expect(opened.store.getMeta("probe")).toBe("x");
    opened.close();
    expect(() => openStore(`sqlite://${path}`, { secrets: () => { throw new Error("wrong key"); } })).toThrow("wrong key");
  });

  it("refuses a URL it cannot parse, and PostgreSQL, which this build does not have yet", () => {
    expect(() => openStore("mysql://u@h/d")).toThrow(StoreUrlError);
    expect(() => openStore("postgres://u:pw@h/d")).toThrow(
      new StoreUnavailableError("the PostgreSQL store is not yet available in this build (postgres://u:…@h:5432/d); use --store sqlite:///path/berth.db"),
    );
  });
});
