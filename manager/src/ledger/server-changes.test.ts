// The WatchServers feed over a real store (SQLite in `unit`, PostgreSQL in
// `unit-pg`): it tails the store's change order (servers.change_seq and
// tombstones, migration 10), so what it publishes and what a resume finds are
// the store's own positions, the same on every manager of one database.
import { afterEach, describe, expect, it, vi } from "vitest";
import { Phase } from "@berth/proto/berth/v1/server_pb.js";
import { initialStatus } from "../domain/records.js";
import { newServer, testStore } from "../../testing/store.js";
import type { Store } from "../store/store.js";
import { SERVER_CHANGES_HORIZON } from "../store/rows.js";
import { CHANGE_PAGE, ServerChangeFeed, type ServerChange } from "./server-changes.js";

const open: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of open.splice(0).reverse()) await f();
});

async function setup(opts: { source?: (store: Store) => ConstructorParameters<typeof ServerChangeFeed>[0]; onReadError?: (err: unknown) => void } = {}) {
  const store = await testStore();
  open.push(() => store.close());
  const feed = new ServerChangeFeed(opts.source ? opts.source(store) : store, { ...(opts.onReadError ? { onReadError: opts.onReadError } : {}) });
  open.push(() => feed.close());
  await feed.ready;
  const insert = (id: string) => store.commit([{ op: "server.insert", server: newServer({ id, hostId: "host_a", project: "p" }) }]);
  const setPhase = (id: string, phase: Phase) => store.commit([{ op: "server.status", id, status: { ...initialStatus(), phase }, dataInitialized: false }]);
  const purge = (id: string) => store.commit([{ op: "server.delete", id }]);
  return { store, feed, insert, setPhase, purge };
}

const seen = (batches: readonly (readonly ServerChange[])[]) =>
  batches.map((b) => b.map((c) => `${c.serverId}@${c.server ? `v${c.server.version}` : `gone:${c.project}/${c.hostId}`}`));

describe("ServerChangeFeed", () => {
  it("publishes each server changed since the last read once, at its latest position, in position order, to every subscriber", async () => {
    const { feed, insert, setPhase } = await setup();
    const a: ServerChange[][] = [];
    const b: ServerChange[][] = [];
    feed.subscribe((batch) => a.push([...batch]));
    feed.subscribe((batch) => b.push([...batch]));
    await insert("srv_1");
    await insert("srv_2");
    await setPhase("srv_1", Phase.RUNNING);
    await feed.flush();
    expect(seen(a)).toEqual([["srv_2@v1", "srv_1@v2"]]);
    expect(b).toEqual(a);
    const [first, second] = a[0]!;
    expect(second!.seq).toBeGreaterThan(first!.seq);
    expect(feed.currentSeq).toBe(second!.seq);

    // Nothing changed: nothing published. Then only what changed after the last read.
    await feed.flush();
    expect(a).toHaveLength(1);
    await setPhase("srv_2", Phase.STOPPED);
    await feed.flush();
    expect(seen(a.slice(1))).toEqual([["srv_2@v2"]]);
    expect(a[1]![0]!.seq).toBeGreaterThan(second!.seq);
  });

  it("a purged server comes as a tombstone, with the project and host it had", async () => {
    const { feed, insert, purge } = await setup();
    const got: ServerChange[][] = [];
    feed.subscribe((batch) => got.push([...batch]));
    await insert("srv_1");
    await feed.flush();
    await purge("srv_1");
    await feed.flush();
    expect(seen(got)).toEqual([["srv_1@v1"], ["srv_1@gone:p/host_a"]]);
  });

  it(`reads on in pages of ${CHANGE_PAGE}: a batch larger than a page is published whole, in order`, async () => {
    const { store, feed } = await setup();
    const got: ServerChange[] = [];
    feed.subscribe((batch) => got.push(...batch));
    const n = CHANGE_PAGE + 5;
    await store.commit(Array.from({ length: n }, (_, i) => ({ op: "server.insert" as const, server: newServer({ id: `srv_${i}`, hostId: "host_a" }) })));
    await feed.flush();
    expect(got).toHaveLength(n);
    expect(new Set(got.map((c) => c.serverId)).size).toBe(n);
    expect(got.map((c) => c.seq)).toEqual([...got.map((c) => c.seq)].sort((x, y) => x - y));
  });

  it("without subscribers it keeps up with the head only; a watch subscribing later gets only what changes after", async () => {
    const { store, feed, insert, setPhase } = await setup();
    await insert("srv_1");
    await insert("srv_2");
    await feed.flush();
    expect(feed.currentSeq).toBe(await store.serverChangeHead());
    const got: ServerChange[][] = [];
    feed.subscribe((batch) => got.push([...batch]));
    await setPhase("srv_2", Phase.RUNNING);
    await feed.flush();
    expect(seen(got)).toEqual([["srv_2@v2"]]);
  });

  it("a read that fails is reported and tried again; nothing is skipped", async () => {
    let failing = 1;
    const errors: unknown[] = [];
    const { feed, insert } = await setup({
      source: (store) => ({
        serverChangeHead: () => store.serverChangeHead(),
        serverChangesSince: (after, limit) => (failing-- > 0 ? Promise.reject(new Error("disk I/O error")) : store.serverChangesSince(after, limit)),
      }),
      onReadError: (err) => errors.push(err),
    });
    const got: ServerChange[] = [];
    feed.subscribe((batch) => got.push(...batch));
    await insert("srv_1");
    await feed.flush();
    expect(got).toEqual([]);
    expect(errors.map(String)).toEqual(["Error: disk I/O error"]);
    // Tried again on its own (READ_RETRY_MS): wait for the evidence, not a fixed time.
    await vi.waitFor(() => expect(got.map((c) => c.serverId)).toEqual(["srv_1"]), { timeout: 5_000 });
  });

  it("a subscriber that throws is reported; the others get the batch and later batches still flow", async () => {
    const store = await testStore();
    open.push(() => store.close());
    const errors: unknown[] = [];
    const feed = new ServerChangeFeed(store, { onSubscriberError: (err) => errors.push(err) });
    open.push(() => feed.close());
    await feed.ready;
    feed.subscribe(() => {
      throw new Error("watch bug");
    });
    const got: ServerChange[][] = [];
    feed.subscribe((batch) => got.push([...batch]));
    await store.commit([{ op: "server.insert", server: newServer({ id: "srv_1", hostId: "host_a" }) }]);
    await expect(feed.flush()).resolves.toBeUndefined();
    await store.commit([{ op: "server.status", id: "srv_1", status: initialStatus(), dataInitialized: true }]);
    await feed.flush();
    expect(seen(got)).toEqual([["srv_1@v1"], ["srv_1@v2"]]);
    expect(errors.map(String)).toEqual(["Error: watch bug", "Error: watch bug"]);
  });
});

describe("ServerChangeFeed.changesSince (resume)", () => {
  it("each server changed after the position once, with its latest record; tombstones too; nothing from the future or before the horizon", async () => {
    const { store, feed, insert, setPhase, purge } = await setup();
    await insert("srv_1");
    await insert("srv_2");
    const from = await store.serverChangeHead();
    await setPhase("srv_1", Phase.RUNNING);
    await setPhase("srv_1", Phase.STOPPED);
    await purge("srv_2");
    await insert("srv_3");
    const head = await store.serverChangeHead();

    const since = await feed.changesSince(from);
    expect(seen([since!.changes])).toEqual([["srv_1@v3", "srv_2@gone:p/host_a", "srv_3@v1"]]);
    expect(since!.upTo).toBe(head);
    expect(await feed.changesSince(head)).toEqual({ changes: [], upTo: head });
    // A token beyond the head: another database's (or garbage).
    expect(await feed.changesSince(head + 1)).toBeUndefined();
    // Tombstones before the horizon were dropped: a resume from before it cannot be complete.
    await store.commit([{ op: "meta.set", key: SERVER_CHANGES_HORIZON, value: String(from + 1) }]);
    expect(await feed.changesSince(from)).toBeUndefined();
    expect((await feed.changesSince(from + 1))?.changes.map((c) => c.serverId)).toEqual(["srv_1", "srv_2", "srv_3"]);
  });

  it("tokens carry only the position; anything else is not a token", async () => {
    const { feed } = await setup();
    expect(feed.parseToken(feed.token(42))).toBe(42);
    expect(feed.parseToken("garbage")).toBeUndefined();
    expect(feed.parseToken(Buffer.from("w3abc:12").toString("base64url"))).toBeUndefined();
    expect(feed.parseToken(Buffer.from("seq:99999999999999999999").toString("base64url"))).toBeUndefined();
  });
});
