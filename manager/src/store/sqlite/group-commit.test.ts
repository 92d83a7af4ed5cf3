/**
 * SQLite's group commit (sqlite-store.ts commit): the batches of one
 * event-loop turn share one transaction, each in its own savepoint.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { create } from "@bufbuild/protobuf";
import { Phase, ServerStatusSchema } from "@berth/proto/berth/v1/server_pb.js";
import { ConflictError } from "../../errors.js";
import { newServer, testStore } from "../../../testing/store.js";
import type { Committed, Store, WriteOp } from "../store.js";
import { SqliteStore } from "./sqlite-store.js";

let store: SqliteStore;
beforeEach(async () => {
  const s: Store = await testStore({ engine: "sqlite" });
  if (!(s instanceof SqliteStore)) throw new Error("expected a SqliteStore");
  store = s;
});
afterEach(() => store.close());

const event = (serverId: string, message: string): WriteOp => ({ op: "event.append", event: { type: "server.created", serverId, project: "default", hostId: "host_a", actor: "test", reason: "Test", message }, at: 1 });

describe("group commit", () => {
  it("a batch is visible to reads at once, its promise resolves after the turn's COMMIT", async () => {
    const pending = store.commit([{ op: "server.insert", server: newServer({ id: "srv_a", hostId: "host_a" }) }]);
    let settled = false;
    void pending.then(() => (settled = true));
    // Applied: a read in the same turn sees it (a writer deciding from it meets no stale version).
    expect((await store.getServer("srv_a"))?.id).toBe("srv_a");
    expect(settled).toBe(false);
    await pending;
    expect(store.groupCommitStats().groups).toBeGreaterThan(0);
  });

  it("batches of one turn share one transaction; a failing batch is rolled back alone, the others commit and are heard in order", async () => {
    await store.commit([{ op: "server.insert", server: newServer({ id: "srv_a", hostId: "host_a" }) }]);
    const heard: Committed[] = [];
    store.onCommit((c) => heard.push(c));
    const before = store.groupCommitStats();

    const ops: Promise<unknown>[] = [];
    for (let i = 0; i < 50; i++) {
      // Batch 25 expects a version the server no longer has: its event must not be written either.
      const check: WriteOp[] = i === 25 ? [{ op: "server.check", id: "srv_a", expectVersion: 99 }] : [];
      ops.push(store.commit([...check, event("srv_a", `batch ${i}`)]));
    }
    const results = await Promise.allSettled(ops);

    const after = store.groupCommitStats();
    expect(after.groups - before.groups).toBe(1);
    // The failing batch was rolled back when it was applied: 49 in the group.
    expect(after.batches - before.batches).toBe(49);
    expect(results.filter((r) => r.status === "rejected").map((r) => (r as PromiseRejectedResult).reason)).toEqual([expect.any(ConflictError)]);
    expect((results[25] as PromiseRejectedResult).reason).toBeInstanceOf(ConflictError);
    const messages = heard.flatMap((c) => c.events.map((e) => e.message));
    expect(messages).toEqual([...Array(50).keys()].filter((i) => i !== 25).map((i) => `batch ${i}`));
    // Stored as heard: ids in commit order, nothing of batch 25.
    const stored = await store.readForward({ project: null, afterId: 0, upToId: Number.MAX_SAFE_INTEGER, limit: 100 });
    expect(stored.filter((e) => e.message.startsWith("batch ")).map((e) => e.message)).toEqual(messages);
  });

  it("each batch sees the batches before it in the group (preconditions hold in order)", async () => {
    await store.commit([{ op: "server.insert", server: newServer({ id: "srv_a", hostId: "host_a" }) }]);
    const s = (await store.getServer("srv_a"))!;
    const first = store.commit([{ op: "server.resetDataInitialized", id: "srv_a", expectVersion: s.version }]);
    const second = store.commit([{ op: "server.resetDataInitialized", id: "srv_a", expectVersion: s.version }]).catch((err: unknown) => err);
    const third = store.commit([{ op: "server.resetDataInitialized", id: "srv_a", expectVersion: s.version + 1 }]);
    expect((await first).versions.get("srv_a")).toBe(s.version + 1);
    expect(await second).toBeInstanceOf(ConflictError);
    expect((await third).versions.get("srv_a")).toBe(s.version + 2);
  });

  it("close writes what was committed before it", async () => {
    const pending = store.commit([event("srv_x", "just before close")]);
    const s2 = await testStore({ engine: "sqlite" });
    await s2.close();
    await store.close();
    await expect(pending).resolves.toMatchObject({ events: [expect.objectContaining({ message: "just before close" })] });
    await expect(store.commit([event("srv_x", "after")])).rejects.toThrow(/closed/);
    // afterEach closes again: harmless.
    store = { close: async () => {} } as unknown as SqliteStore;
  });
});

describe("decoded server records", () => {
  it("a record is decoded once and read again from memory until a batch writes it, committed or not", async () => {
    await store.commit([{ op: "server.insert", server: newServer({ id: "srv_a", hostId: "host_a" }) }]);
    const a = (await store.getServer("srv_a"))!;
    expect(await store.getServer("srv_a")).toBe(a);
    // Under test the kept record is frozen: a caller changing it instead of a copy fails.
    expect(() => {
      (a as { name: string }).name = "changed";
    }).toThrow(TypeError);

    // A batch that fails after writing the server: its write is rolled back, the record read again is the old one.
    const failing = store.commit([
      { op: "server.resetDataInitialized", id: "srv_a", expectVersion: a.version },
      { op: "server.check", id: "srv_a", expectVersion: a.version },
    ]);
    await expect(failing).rejects.toBeInstanceOf(ConflictError);
    const again = (await store.getServer("srv_a"))!;
    expect(again).toEqual(a);
    expect(again.version).toBe(a.version);

    const { versions } = await store.commit([{ op: "server.resetDataInitialized", id: "srv_a", expectVersion: a.version }]);
    expect((await store.getServer("srv_a"))!.version).toBe(versions.get("srv_a"));

    await store.commit([{ op: "server.delete", id: "srv_a" }]);
    expect(await store.getServer("srv_a")).toBeUndefined();
  });

  it("a status or lifecycle write carries the kept record forward without reading the row; other writes drop it", async () => {
    await store.commit([{ op: "server.insert", server: newServer({ id: "srv_a", hostId: "host_a" }) }]);
    const a = (await store.getServer("srv_a"))!;
    const tables = (store as unknown as { tables: { getServer(id: string): unknown } }).tables;
    const rowReads = vi.spyOn(tables, "getServer");

    const status = create(ServerStatusSchema, { ...a.status, phase: Phase.RUNNING, reason: "Running" });
    await store.commit([
      { op: "server.lifecycle", id: "srv_a", lifecycle: { restartCount: 2 }, expectVersion: a.version },
      { op: "server.status", id: "srv_a", status, dataInitialized: true },
    ]);
    rowReads.mockClear();
    const b = (await store.getServer("srv_a"))!;
    expect(rowReads).not.toHaveBeenCalled();
    expect([b.version, b.status.phase, b.dataInitialized, b.lifecycle]).toEqual([a.version + 2, Phase.RUNNING, true, { restartCount: 2 }]);

    // A spec write is not carried forward: the next read decodes the row.
    await store.commit([{ op: "server.spec", id: "srv_a", spec: { ...b.spec, image: "other" }, generation: b.generation + 1, hostId: b.hostId, deletedAt: null, updatedAt: 5, expectVersion: b.version }]);
    rowReads.mockClear();
    const c = (await store.getServer("srv_a"))!;
    expect(rowReads).toHaveBeenCalledTimes(1);
    expect([c.spec.image, c.status.phase, c.version]).toEqual(["other", Phase.RUNNING, b.version + 1]);
  });
});

