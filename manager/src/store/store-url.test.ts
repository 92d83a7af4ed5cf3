import { describe, expect, it } from "vitest";
import { chooseStoreUrl, describeStoreUrl, parseStoreUrl, redactStoreUrlText, storeFilesDir, StoreUrlError, type StoreUrl } from "./store-url.js";

const FORMS = "sqlite:///abs/path/berth.db, sqlite://./relative/berth.db or postgres://user@host:5432/database";
const PG = "use postgres://user@host:5432/database";

describe("parseStoreUrl", () => {
  const good: [string, StoreUrl][] = [
    ["sqlite:///var/lib/berth/berth.db", { engine: "sqlite", path: "/var/lib/berth/berth.db" }],
    ["sqlite://./data/berth.db", { engine: "sqlite", path: "./data/berth.db" }],
    ["sqlite://data/berth.db", { engine: "sqlite", path: "data/berth.db" }],
    ["sqlite://../up/b.db", { engine: "sqlite", path: "../up/b.db" }],
    ["sqlite://:memory:", { engine: "sqlite", path: ":memory:" }],
    ["SQLite:///x.db", { engine: "sqlite", path: "/x.db" }],
    ["  sqlite:///x.db ", { engine: "sqlite", path: "/x.db" }],
    ["sqlite:///dir with space/b.db", { engine: "sqlite", path: "/dir with space/b.db" }],
    ["postgres://berth@db.internal:6432/berth", { engine: "postgres", user: "berth", password: undefined, host: "db.internal", port: 6432, database: "berth", options: {} }],
    ["postgres://berth@db/berth", { engine: "postgres", user: "berth", password: undefined, host: "db", port: 5432, database: "berth", options: {} }],
    ["postgresql://a%40b:s%3Acret@10.0.0.5:5432/my%20db?sslmode=require", { engine: "postgres", user: "a@b", password: "s:cret", host: "10.0.0.5", port: 5432, database: "my db", options: { sslmode: "require" } }],
    ["postgres://u@[::1]:5433/d", { engine: "postgres", user: "u", password: undefined, host: "::1", port: 5433, database: "d", options: {} }],
  ];
  it.each(good)("%s", (text, want) => {
    expect(parseStoreUrl(text)).toEqual(want);
  });

  const bad: [string, string][] = [
    ["", `the store URL is empty; use ${FORMS}`],
    ["   ", `the store URL is empty; use ${FORMS}`],
    ["mysql://u@h/db", `unknown store "mysql:"; use ${FORMS}`],
    ["file:///x.db", `unknown store "file:"; use ${FORMS}`],
    ["/var/lib/berth.db", `is not a URL (for a file path use --db PATH, or sqlite://PATH); use ${FORMS}`],
    ["./data/berth.db", `is not a URL (for a file path use --db PATH, or sqlite://PATH); use ${FORMS}`],
    ["sqlite://", "names no database file; use sqlite:///abs/path/berth.db or sqlite://./relative/berth.db"],
    ["sqlite:/x.db", "a sqlite store URL starts with sqlite:// followed by the file path: sqlite:///abs/path/berth.db or sqlite://./relative/berth.db"],
    ["postgres:db", `needs // after the scheme; ${PG}`],
    ["postgres://db.internal/berth", `names no user; ${PG}`],
    ["postgres:///berth", `names no user; ${PG}`],
    ["postgres://u@/berth", `is not a valid URL (a port must be a number from 1 to 65535); ${PG}`],
    ["postgres://u@db.internal", `names no database; ${PG}`],
    ["postgres://u@db.internal/", `names no database; ${PG}`],
    ["postgres://u@db.internal/a/b", `names database "a/b", which cannot contain "/"; ${PG}`],
    ["postgres://u@db.internal:0/berth", `has port 0, which must be 1 to 65535; ${PG}`],
    ["postgres://u:hunter2@db.internal:99999/berth", `is not a valid URL (a port must be a number from 1 to 65535); ${PG}`],
    ["postgres://u:hunter2@db.internal:x/berth", `is not a valid URL (a port must be a number from 1 to 65535); ${PG}`],
  ];
  it.each(bad)("refuses %j", (text, message) => {
    let err: unknown;
    try {
      parseStoreUrl(text);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(StoreUrlError);
    expect((err as Error).message).toBe(message);
    expect((err as Error).message).not.toContain("hunter2");
  });
});

describe("chooseStoreUrl", () => {
  const cases: [string, { store?: string; db?: string }, string][] = [
    ["neither: the default", {}, "sqlite://./data/berth.db"],
    ["--store alone", { store: "sqlite:///a.db" }, "sqlite:///a.db"],
    ["--db PATH is sqlite://PATH", { db: "/var/lib/b.db" }, "sqlite:///var/lib/b.db"],
    ["--db relative", { db: "data/b.db" }, "sqlite://data/b.db"],
    ["--db :memory:", { db: ":memory:" }, "sqlite://:memory:"],
  ];
  it.each(cases)("%s", (_name, given, want) => {
    expect(chooseStoreUrl(given)).toBe(want);
    // What --db means parses back to the same file.
    if (given.db) expect(parseStoreUrl(chooseStoreUrl(given))).toEqual({ engine: "sqlite", path: given.db });
  });

  it("refuses both, naming both", () => {
    expect(() => chooseStoreUrl({ store: "sqlite:///a.db", db: "/b.db" })).toThrow(
      new StoreUrlError("use either --store (BERTH_STORE) or --db (BERTH_DB), not both; --db PATH is short for --store sqlite://PATH"),
    );
  });
});

describe("store URL display and files", () => {
  it("never shows a password", () => {
    expect(describeStoreUrl(parseStoreUrl("postgres://u:hunter2@h/d?sslmode=require"))).toBe("postgres://u:…@h:5432/d?sslmode=require");
    expect(describeStoreUrl(parseStoreUrl("postgres://u@[::1]/d"))).toBe("postgres://u@[::1]:5432/d");
    expect(describeStoreUrl(parseStoreUrl("sqlite://./x.db"))).toBe("sqlite://./x.db");
    expect(redactStoreUrlText("postgres://u:hunter2@h:99999/d")).toBe("postgres://u:…@h:99999/d");
    expect(redactStoreUrlText("sqlite:///a:b@c.db")).toBe("sqlite:///a:b@c.db");
  });

  it("keeps secret.key and tls/ next to a SQLite file, nowhere for memory or a server", () => {
    expect(storeFilesDir(parseStoreUrl("sqlite:///var/lib/berth/berth.db"))).toBe("/var/lib/berth");
    expect(storeFilesDir(parseStoreUrl("sqlite://./data/berth.db"))).toBe("./data");
    expect(storeFilesDir(parseStoreUrl("sqlite://:memory:"))).toBeUndefined();
    expect(storeFilesDir(parseStoreUrl("postgres://u@h/d"))).toBeUndefined();
  });
});
