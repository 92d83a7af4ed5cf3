import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { requirePostgres, useTestDatabase } from "../../../test/harness/postgres-tests.js";
import { newToken } from "../auth/tokens.js";
import { newServer } from "../../testing/store.js";
import { openStore } from "./open.js";
import { isSealed, openEnvValue, SecretBox } from "./secrets.js";
import { StoreUrlError } from "./store-url.js";

const pg = requirePostgres();

/** openStore on SQLite: a file path in the URL, created and migrated. */
describe("openStore", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "berth-open-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("opens a SQLite file from its URL, migrated, with every kind of record in one database", async () => {
    const path = join(dir, "sub", "berth.db");
    const opened = await openStore(`sqlite://${path}`);
    expect(existsSync(path)).toBe(true);
    expect(opened.engine).toBe("sqlite");
    expect(opened.description).toBe(`sqlite://${path}`);
    const { token, op } = newToken({ name: "t", role: "admin", project: null }, "test", 1);
    const { events } = await opened.commit([op, { op: "event.append", event: { type: "token.created", actor: "test", correlationId: token.id, message: "m" }, at: 2 }]);
    // Tokens, events and alerts are tables of one database: a batch wrote two of them, each is read back.
    expect((await opened.listNewestFirst({ project: null, limit: 10 })).map((e) => e.id)).toEqual([events[0]!.id]);
    expect((await opened.getToken(token.id))?.name).toBe("t");
    expect(await opened.listFiringAlerts()).toEqual([]);
    await opened.close();
    await opened.close(); // twice is harmless
    const again = await openStore(`sqlite://${path}`);
    expect(await again.countTokens()).toBe(1);
    expect(await again.lastEventId()).toBe(events[0]!.id);
    await again.close();
  });

  it("hands the secret key chooser the database's meta and seals with the box it returns; closes the database when it throws", async () => {
    const path = join(dir, "berth.db");
    const box = SecretBox.ephemeral();
    const opened = await openStore(`sqlite://${path}`, {
      secrets: async (meta) => {
        await meta.set("probe", "x");
        return box;
      },
    });
    expect(await opened.getMeta("probe")).toBe("x");
    const server = newServer({ id: "srv_aaaaaaaaaaaaaaaaaaaa", hostId: "host_1", spec: { env: { PW: "hunter2" }, secretEnv: ["PW"] } });
    await opened.commit([{ op: "server.insert", server }]);
    const stored = (await opened.getServer(server.id))!.spec.env.PW!;
    expect(isSealed(stored)).toBe(true);
    expect(openEnvValue(box, server.id, "PW", stored)).toBe("hunter2");
    await opened.close();
    await expect(
      openStore(`sqlite://${path}`, {
        secrets: () => {
          throw new Error("wrong key");
        },
      }),
    ).rejects.toThrow("wrong key");
  });

  it("refuses a URL it cannot parse", async () => {
    await expect(openStore("mysql://u@h/d")).rejects.toThrow(StoreUrlError);
  });
});

/** openStore on PostgreSQL (an empty database on the run's server); unreachable servers: postgres/pg-store.test.ts. */
describe.skipIf(!pg.url)("openStore on PostgreSQL", () => {
  const db = useTestDatabase("berth_open");

  it("opens a database from its URL, migrated; what one opening wrote, the next reads", async () => {
    const opened = await openStore(db.url);
    expect(opened.engine).toBe("postgres");
    expect(opened.description).toMatch(/^postgres:\/\//);
    const cluster = await opened.clusterId();
    const { token, op } = newToken({ name: "t", role: "admin", project: null }, "test", 1);
    const { events } = await opened.commit([op, { op: "event.append", event: { type: "token.created", actor: "test", correlationId: token.id, message: "m" }, at: 2 }]);
    await opened.close();
    const again = await openStore(db.url);
    try {
      expect(await again.countTokens()).toBe(1);
      expect(await again.lastEventId()).toBe(events[0]!.id);
      expect(await again.clusterId()).toBe(cluster);
    } finally {
      await again.close();
    }
  });
});
