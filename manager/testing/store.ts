/**
 * Stores for tests: a fresh, migrated store on either engine behind the store
 * contract (store/store.ts), with a secret box so specs with secret env values
 * can be written, and record fixtures.
 */
import { randomBytes } from "node:crypto";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import type { Code } from "@connectrpc/connect";
import { expect, inject } from "vitest";
import type { BerthError } from "../src/errors.js";
import { initialStatus, type NewServerRecord } from "../src/domain/records.js";
import { createDatabase, dropDatabase, uniqueDatabaseName } from "../../test/harness/postgres.js";
import { openStore } from "../src/store/open.js";
import type { Store } from "../src/store/store.js";
import { SecretBox } from "../src/store/secrets.js";

/** Which engine `testStore()` opens: BERTH_TEST_STORE=postgres (the unit-pg project) or SQLite (default). */
export type TestEngine = "sqlite" | "postgres";

export function testEngine(): TestEngine {
  const v = process.env.BERTH_TEST_STORE ?? "sqlite";
  if (v !== "sqlite" && v !== "postgres") throw new Error(`BERTH_TEST_STORE=${v}: use sqlite or postgres`);
  return v;
}

/**
 * A fresh, empty, migrated store on the test engine (testEngine()), with a
 * secret box: an in-memory SQLite database, or a new database on the run's
 * PostgreSQL server (test/harness/postgres-setup.ts) that `close()` drops.
 * Tests written against it run on both engines (vitest projects unit and unit-pg).
 */
export async function testStore(opts: { engine?: TestEngine } = {}): Promise<Store> {
  const engine = opts.engine ?? testEngine();
  const box = new SecretBox(randomBytes(32));
  const secrets = () => box;
  if (engine === "sqlite") return openStore("sqlite://:memory:", { secrets });
  const server = inject("postgres").url;
  if (!server) throw new Error(`BERTH_TEST_STORE=postgres needs the run's PostgreSQL server: ${inject("postgres").unavailable ?? "none was provided"}`);
  const name = uniqueDatabaseName("berth_unit");
  const url = await createDatabase(server, name);
  let store: Store;
  try {
    store = await openStore(url, { secrets });
  } catch (err) {
    await dropDatabase(server, name);
    throw err;
  }
  const close = store.close.bind(store);
  const opened = Object.assign(store, {
    async close() {
      await close();
      await dropDatabase(server, name);
    },
  });
  databases.set(opened, { url, box });
  return opened;
}

/** The database and secret box of each PostgreSQL store testStore() made (for sameDatabase). */
const databases = new WeakMap<Store, { url: string; box: SecretBox }>();

/**
 * Another store on the same database as `store` (from testStore()), as a
 * second manager opens it: on PostgreSQL a store with its own pool on the
 * same database; on SQLite (an in-memory database only one connection can
 * see) the same store, whose close() does nothing. Close it before `store`.
 */
export async function sameDatabase(store: Store): Promise<Store> {
  const db = databases.get(store);
  if (db === undefined) {
    if (store.engine !== "sqlite") throw new Error("sameDatabase needs a store made by testStore()");
    return new Proxy(store, {
      get(target, key) {
        if (key === "close") return async () => {};
        const v: unknown = Reflect.get(target, key, target);
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
  }
  return openStore(db.url, { secrets: () => db.box });
}

/**
 * `count` PostgreSQL stores on ONE fresh database, as that many managers open
 * it (openStore on the same URL, one secret key): what one commits, the others
 * read and hear (remote onCommit). `close()` closes them all, then drops the database.
 */
export async function sharedTestStores(count = 2): Promise<{ stores: Store[]; close(): Promise<void> }> {
  const server = inject("postgres").url;
  if (!server) throw new Error(`sharedTestStores needs the run's PostgreSQL server: ${inject("postgres").unavailable ?? "none was provided"}`);
  const name = uniqueDatabaseName("berth_shared");
  const url = await createDatabase(server, name);
  const box = new SecretBox(randomBytes(32));
  const stores: Store[] = [];
  const close = async () => {
    for (const s of stores.splice(0)) await s.close();
    await dropDatabase(server, name);
  };
  try {
    for (let i = 0; i < count; i++) stores.push(await openStore(url, { secrets: () => box }));
  } catch (err) {
    await close();
    throw err;
  }
  return { stores, close };
}

/**
 * Two managers' stores on one database, on the engine testStore() opens:
 * PostgreSQL, two stores (the second hears the first through the change
 * feed, remote onCommit); SQLite, one manager per file, the same store twice
 * (only the local path is exercised there). `close()` closes both.
 */
export async function twoManagerStores(): Promise<{ stores: [Store, Store]; close(): Promise<void> }> {
  if (testEngine() === "postgres") {
    const shared = await sharedTestStores(2);
    return { stores: [shared.stores[0]!, shared.stores[1]!], close: shared.close };
  }
  const a = await testStore();
  const b = await sameDatabase(a);
  return {
    stores: [a, b],
    close: async () => {
      await b.close();
      await a.close();
    },
  };
}

/**
 * A server record for tests, to insert with `{ op: "server.insert", server: newServer(...) }`:
 * project "default", the given id, name (default: the id) and host, spec from `spec`
 * (name, host id and image "busybox" filled in), initial status, never started.
 */
export function newServer(o: { id: string; hostId: string; name?: string; project?: string; spec?: MessageInitShape<typeof ServerSpecSchema>; at?: number } & Partial<Omit<NewServerRecord, "spec">>): NewServerRecord {
  const { id, hostId, name = o.id, project = "default", spec, at = 1, ...rest } = o;
  return {
    id,
    project,
    name,
    hostId,
    generation: 1,
    spec: create(ServerSpecSchema, { name, hostId, image: "busybox", ...spec }),
    status: initialStatus(),
    dataInitialized: false,
    lifecycle: {},
    createdAt: at,
    updatedAt: at,
    deletedAt: null,
    ...rest,
  };
}

/** What `p` rejected with; fails the test when it resolved (a commit that should have been refused went through). */
export async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error("expected the commit to be refused, it went through");
}

/** The error is this domain error and carries this gRPC code (what callers see). */
export function expectTyped(err: unknown, cls: abstract new (...a: never[]) => BerthError, code: Code): void {
  expect(err).toBeInstanceOf(cls);
  expect((err as BerthError).code).toBe(code);
}
