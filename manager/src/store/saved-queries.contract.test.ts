/**
 * The store contract's saved queries (store.ts savedQuery.* operations,
 * SavedQueryReads; migration 18), on the engine testStore() opens: records
 * read back as written, names unique per project (AlreadyExists), versions
 * checked (Aborted), the list's visibility, pinned and alert selections and
 * pages, and the alert runner's observations (rows_since kept while rows
 * come, cleared when none; the version does not move).
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { QuerySource, SavedQuerySpecSchema } from "@berth/proto/berth/v1/query_pb.js";
import { AlreadyExistsError, ConflictError, NotFoundError } from "../errors.js";
import { expectTyped, rejection, testStore } from "../../testing/store.js";
import type { SavedQueryRecord } from "../query/saved-records.js";
import type { Store } from "./store.js";

const T0 = 1_700_000_000_000;
let store: Store;
beforeEach(async () => {
  store = await testStore();
});
afterEach(() => store.close());

function sq(id: string, name: string, o: Partial<SavedQueryRecord> = {}): SavedQueryRecord {
  const shared = o.shared ?? false;
  return {
    id,
    project: "default",
    name,
    ownerTokenId: "tok_a",
    ownerName: "alice",
    shared,
    pinned: false,
    alertEnabled: false,
    spec: create(SavedQuerySpecSchema, { name, shared, query: { source: QuerySource.SERVERS, filter: 'server.status.phase == PHASE_FAILED' } }),
    version: 1,
    createdAt: T0,
    updatedAt: T0,
    rowsSince: null,
    lastRows: 0,
    lastFirst: "",
    ...o,
  };
}

describe("saved queries in the store", () => {
  it("reads a saved query back as written, by id and by name, and lists by project and name with selections and pages", async () => {
    await store.commit([
      { op: "savedQuery.insert", savedQuery: sq("sq_b", "crashed", { shared: true, pinned: true }) },
      { op: "savedQuery.insert", savedQuery: sq("sq_a", "mine", { ownerTokenId: "tok_b" }) },
      { op: "savedQuery.insert", savedQuery: sq("sq_c", "crashed", { project: "other", alertEnabled: true }) },
    ]);
    expect(await store.getSavedQuery("sq_b")).toEqual(sq("sq_b", "crashed", { shared: true, pinned: true }));
    expect((await store.findSavedQueryByName("other", "crashed"))?.id).toBe("sq_c");
    expect(await store.findSavedQueryByName("default", "nope")).toBeUndefined();
    expect((await store.listSavedQueries()).map((q) => q.id)).toEqual(["sq_b", "sq_a", "sq_c"]);
    expect((await store.listSavedQueries({ project: "default" })).map((q) => q.id)).toEqual(["sq_b", "sq_a"]);
    // tok_a sees the shared one and its own, not tok_b's private one.
    expect((await store.listSavedQueries({ visibleTo: "tok_a" })).map((q) => q.id)).toEqual(["sq_b", "sq_c"]);
    expect((await store.listSavedQueries({ pinnedOnly: true })).map((q) => q.id)).toEqual(["sq_b"]);
    expect((await store.listSavedQueries({ alertEnabled: true })).map((q) => q.id)).toEqual(["sq_c"]);
    expect((await store.listSavedQueries({ name: "crashed" })).map((q) => q.id)).toEqual(["sq_b", "sq_c"]);
    expect((await store.listSavedQueries({ limit: 1 })).map((q) => q.id)).toEqual(["sq_b"]);
    expect((await store.listSavedQueries({ after: { project: "default", name: "crashed" } })).map((q) => q.id)).toEqual(["sq_a", "sq_c"]);
  });

  it("refuses a name taken in the project (AlreadyExists), an update on a stale version (Aborted), and a missing one (NotFound)", async () => {
    await store.commit([{ op: "savedQuery.insert", savedQuery: sq("sq_a", "crashed") }, { op: "savedQuery.insert", savedQuery: sq("sq_b", "other") }]);
    const taken = await rejection(store.commit([{ op: "savedQuery.insert", savedQuery: sq("sq_c", "crashed") }]));
    expectTyped(taken, AlreadyExistsError, Code.AlreadyExists);
    expect((taken as Error).message).toContain('a saved query named "crashed" already exists in project "default"');
    // Another project may use the name.
    await store.commit([{ op: "savedQuery.insert", savedQuery: sq("sq_d", "crashed", { project: "other" }) }]);
    const next = sq("sq_a", "crashed-2", { version: 2, updatedAt: T0 + 5, shared: true, alertEnabled: true });
    await store.commit([{ op: "savedQuery.update", savedQuery: next, expectVersion: 1 }]);
    expect(await store.getSavedQuery("sq_a")).toEqual(next);
    expectTyped(await rejection(store.commit([{ op: "savedQuery.update", savedQuery: { ...next, version: 3 }, expectVersion: 1 }])), ConflictError, Code.Aborted);
    expectTyped(await rejection(store.commit([{ op: "savedQuery.update", savedQuery: { ...next, name: "other", version: 3 }, expectVersion: 2 }])), AlreadyExistsError, Code.AlreadyExists);
    expectTyped(await rejection(store.commit([{ op: "savedQuery.update", savedQuery: sq("sq_x", "x"), expectVersion: 1 }])), NotFoundError, Code.NotFound);
    await store.commit([{ op: "savedQuery.delete", id: "sq_a" }]);
    expect(await store.getSavedQuery("sq_a")).toBeUndefined();
    expectTyped(await rejection(store.commit([{ op: "savedQuery.delete", id: "sq_a" }])), NotFoundError, Code.NotFound);
  });

  it("records the alert runner's observations: rows_since set once and kept while rows come, cleared when none; the version stays", async () => {
    await store.commit([{ op: "savedQuery.insert", savedQuery: sq("sq_a", "crashed", { alertEnabled: true }) }]);
    await store.commit([{ op: "savedQuery.observe", id: "sq_a", at: T0 + 1000, rows: 2, first: "server a" }]);
    await store.commit([{ op: "savedQuery.observe", id: "sq_a", at: T0 + 2000, rows: 3, first: "server b" }]);
    let got = await store.getSavedQuery("sq_a");
    expect([got?.rowsSince, got?.lastRows, got?.lastFirst, got?.version]).toEqual([T0 + 1000, 3, "server b", 1]);
    await store.commit([{ op: "savedQuery.observe", id: "sq_a", at: T0 + 3000, rows: 0, first: "" }]);
    got = await store.getSavedQuery("sq_a");
    expect([got?.rowsSince, got?.lastRows, got?.lastFirst]).toEqual([null, 0, ""]);
    // A query deleted meanwhile: no error.
    await store.commit([{ op: "savedQuery.observe", id: "sq_gone", at: T0, rows: 1, first: "x" }]);
  });
});
