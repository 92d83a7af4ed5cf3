// The cross-manager change feed (pg-listen.ts): two PostgresStores on one
// database stand for two managers. What one commits reaches the other's
// onCommit as a remote batch with its full events; a store ignores its own
// notices; remote batches arrive in commit (= event id) order; a lost LISTEN
// connection comes back by itself and says resync; a notice too large for
// NOTIFY becomes a resync marker; the ledger on one manager publishes the
// other's events. PostgreSQL-only by nature: runs in the unit-pg project
// (sharedTestStores( puts it there) and is skipped in the SQLite one.
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { requirePostgres } from "../../../../test/harness/postgres-tests.js";
import { newServer, sharedTestStores, testEngine } from "../../../testing/store.js";
import type { EventInput } from "../../domain/records.js";
import { Ledger } from "../../ledger/ledger.js";
import { wakeForRemoteCommits } from "../../reconcile/remote-commits.js";
import type { Committed, Store, WriteOp } from "../store.js";
import { decodeCommitNotice, encodeCommitNotice, NOTICE_CAP_BYTES } from "./pg-listen.js";
import type { PostgresStore } from "./pg-store.js";

const provided = requirePostgres();
const HOST = "host_aaaaaaaaaaaa";

/** Every Committed a store's onCommit hears, and a way to wait for one that matches. */
function heard(store: Store) {
  const all: Committed[] = [];
  const waiters: { match: (c: Committed) => boolean; resolve: (c: Committed) => void }[] = [];
  store.onCommit((c) => {
    all.push(c);
    for (const w of waiters.splice(0)) {
      if (w.match(c)) w.resolve(c);
      else waiters.push(w);
    }
  });
  return {
    all,
    /** Resolves with the first batch (already heard or still to come) that matches; fails after 5 s. */
    next(match: (c: Committed) => boolean, what: string): Promise<Committed> {
      const seen = all.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`never heard: ${what}`)), 5_000);
        waiters.push({ match, resolve: (c) => (clearTimeout(t), resolve(c)) });
      });
    },
  };
}

const event = (e: EventInput, at = 1_000): WriteOp => ({ op: "event.append", event: e, at });

let cleanup: (() => Promise<void>) | undefined;
afterEach(async () => {
  await cleanup?.();
  cleanup = undefined;
});

async function twoManagers(): Promise<[Store, Store]> {
  const shared = await sharedTestStores(2);
  cleanup = shared.close;
  return [shared.stores[0]!, shared.stores[1]!];
}

describe("commit notices", () => {
  it("carry the sender, the event range and the ids, or a resync marker when the ids would not fit the cap", () => {
    const small = encodeCommitNotice({ from: "store_a", events: { first: 7, last: 9 }, serverIds: ["srv_1"], hostIds: [HOST] });
    expect(decodeCommitNotice(small)).toEqual({ from: "store_a", events: { first: 7, last: 9 }, serverIds: ["srv_1"], hostIds: [HOST], resync: false });
    const many = Array.from({ length: 500 }, (_, i) => `srv_${String(i).padStart(12, "x")}`);
    const big = encodeCommitNotice({ from: "store_a", events: { first: 7, last: 9 }, serverIds: many, hostIds: [] });
    expect(Buffer.byteLength(big)).toBeLessThanOrEqual(NOTICE_CAP_BYTES);
    expect(decodeCommitNotice(big)).toEqual({ from: "store_a", events: { first: 7, last: 9 }, serverIds: [], hostIds: [], resync: true });
  });

  it("that are not berth's are a resync from nobody", () => {
    expect(decodeCommitNotice("hello")).toEqual({ from: "", serverIds: [], hostIds: [], resync: true });
  });
});

describe.skipIf(!provided.url || testEngine() !== "postgres")("the change feed between two managers", () => {
  it("brings A's commit to B's onCommit with its full events and server ids, and A does not hear it twice", async () => {
    const [a, b] = await twoManagers();
    const onA = heard(a);
    const onB = heard(b);
    const t0 = performance.now();
    let tHeard = 0;
    b.onCommit((c) => {
      if (!tHeard && c.serverIds.has("srv_feed1")) tHeard = performance.now();
    });
    const r = await a.commit([
      { op: "server.insert", server: newServer({ id: "srv_feed1", hostId: HOST }) },
      event({ type: "server.created", project: "default", serverId: "srv_feed1", hostId: HOST, actor: "tester", message: "made on A", payload: { n: 1 } }),
    ]);
    const tCommitted = performance.now();
    const remote = await onB.next((c) => c.events.some((e) => e.serverId === "srv_feed1"), "A's server.created on B");
    console.info(`[pg-listen] A's commit() took ${(tCommitted - t0).toFixed(1)} ms; B's onCommit heard it ${(tHeard - t0).toFixed(1)} ms after commit() started`);
    expect(remote.remote).toBe(true);
    expect(remote.resync).toBeUndefined();
    expect(remote.events).toEqual(r.events); // the same full EventRecords A's own listeners heard
    expect([...remote.serverIds]).toEqual(["srv_feed1"]);
    // A heard it once, locally; its own notice was ignored (a later commit on B proves A's feed is live).
    await b.commit([event({ type: "token.created", actor: "tester" })]);
    await onA.next((c) => c.events.some((e) => e.type === "token.created"), "B's commit on A");
    expect(onA.all.filter((c) => c.events.some((e) => e.serverId === "srv_feed1"))).toEqual([{ events: r.events, serverIds: new Set(["srv_feed1"]), hostIds: new Set() }]);
    expect(onB.all.filter((c) => c.events.some((e) => e.type === "token.created")).map((c) => c.remote)).toEqual([undefined]);
  });

  it("delivers A's commits to B in event id order, each once", async () => {
    const [a, b] = await twoManagers();
    const onB = heard(b);
    // Concurrent batches: they commit in some order, and B must hear them in exactly that (id) order.
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => a.commit([event({ type: "test.order", message: `m${i}` }), event({ type: "test.order", message: `m${i}b` })])));
    const ids = results.flatMap((r) => r.events.map((e) => e.id)).sort((x, y) => x - y);
    await onB.next(() => onB.all.flatMap((c) => c.events).length >= ids.length, "all 40 events on B");
    const got = onB.all.flatMap((c) => c.events.map((e) => e.id));
    expect(got).toEqual(ids);
  });

  it("reconnects by itself after its LISTEN connection is killed, says resync, and hears later commits", async () => {
    const [a, b] = await twoManagers();
    const onB = heard(b);
    const pid = (b as PostgresStore).listenerPid;
    expect(pid).toBeTypeOf("number");
    await kill(pid!);
    const resync = await onB.next((c) => c.resync === true, "a resync on B after its LISTEN connection was killed");
    expect(resync).toMatchObject({ remote: true, events: [] });
    expect((b as PostgresStore).listenerPid).not.toBe(pid);
    const r = await a.commit([event({ type: "test.after", message: "after the reconnect" })]);
    const later = await onB.next((c) => c.events.some((e) => e.type === "test.after"), "a commit after the reconnect");
    expect(later.events).toEqual(r.events);
  });

  it("carries ids with quotes, backslashes and non-ASCII text through the notice as written", async () => {
    const [a, b] = await twoManagers();
    const onB = heard(b);
    const id = "srv_q'uo\\te\"é😀";
    await a.commit([{ op: "server.insert", server: newServer({ id, hostId: HOST }) }]);
    const c = await onB.next((x) => x.remote === true && x.serverIds.size > 0, "the odd id on B");
    expect([...c.serverIds]).toEqual([id]);
  });

  it("sends a resync marker, still with the events, for a batch writing more servers than a notice can name", async () => {
    const [a, b] = await twoManagers();
    const onB = heard(b);
    const servers = Array.from({ length: 300 }, (_, i) => ({ op: "server.insert" as const, server: newServer({ id: `srv_many${String(i).padStart(4, "0")}`, hostId: HOST }) }));
    const r = await a.commit([...servers, event({ type: "test.many", message: "300 servers" })]);
    const c = await onB.next((x) => x.events.some((e) => e.type === "test.many"), "the big batch on B");
    expect(c).toMatchObject({ remote: true, resync: true });
    expect(c.serverIds.size).toBe(0);
    expect(c.events).toEqual(r.events);
  });

  it("lets a ledger following B publish A's events to its subscribers (what WatchEvents rings on) and their servers to WatchServers", async () => {
    const [a, b] = await twoManagers();
    const ledgerB = new Ledger(b);
    ledgerB.follow(b);
    await ledgerB.servers.ready;
    const seen: number[] = [];
    ledgerB.subscribe((id) => seen.push(id));
    const changed: string[] = [];
    ledgerB.servers.subscribe((batch) => changed.push(...batch.map((ch) => ch.serverId)));
    const ledgerA = new Ledger(a);
    const r = await a.commit([{ op: "server.insert", server: newServer({ id: "srv_ledger", hostId: HOST }) }, ledgerA.op({ type: "server.created", serverId: "srv_ledger", hostId: HOST, project: "default" })]);
    await until(() => seen.includes(r.events[0]!.id) && changed.includes("srv_ledger"), "A's event and server on B's ledger");
  });

  it("after the feed reconnects, wakes a ledger's resync listeners; WatchServers' feed has what A wrote while B was not listening", async () => {
    const [a, b] = await twoManagers();
    const ledgerB = new Ledger(b);
    ledgerB.follow(b);
    await ledgerB.servers.ready;
    let resyncs = 0;
    ledgerB.onResync(() => resyncs++);
    const changed: string[] = [];
    ledgerB.servers.subscribe((batch) => changed.push(...batch.map((ch) => ch.serverId)));
    await kill((b as PostgresStore).listenerPid!);
    // Committed while B's LISTEN connection is gone (its notice may never reach B): the feed
    // reads the store's change order on from its position when the resync wakes it.
    await a.commit([{ op: "server.insert", server: newServer({ id: "srv_while_away", hostId: HOST }) }]);
    await until(() => resyncs === 1 && changed.includes("srv_while_away"), "a resync on B's ledger and srv_while_away published");
    ledgerB.servers.close();
  });

  it("wakes B's reconciler for the servers A wrote, not for B's own writes, and for every server on a resync", async () => {
    const [a, b] = await twoManagers();
    const queued: [string, string][] = [];
    wakeForRemoteCommits(b, { enqueue: (id, cause) => queued.push([id, cause]) });
    const onB = heard(b);
    await b.commit([{ op: "server.insert", server: newServer({ id: "srv_onb", hostId: HOST }) }]);
    await a.commit([{ op: "server.insert", server: newServer({ id: "srv_ona", hostId: HOST }) }]);
    await onB.next((c) => c.serverIds.has("srv_ona"), "A's server on B");
    expect(queued).toEqual([["srv_ona", "changed by another manager"]]);
    await kill((b as PostgresStore).listenerPid!);
    await until(() => queued.length === 3, "both servers queued after the resync");
    expect(queued.slice(1).map(([id]) => id).sort()).toEqual(["srv_ona", "srv_onb"]);
  });
});

/** Ends the server process `pid` (pg_terminate_backend, as the run's superuser), as a database restart would. */
async function kill(pid: number): Promise<void> {
  const c = new pg.Client({ connectionString: provided.url! });
  await c.connect();
  try {
    const { rows } = await c.query<{ ok: boolean }>("SELECT pg_terminate_backend($1) AS ok", [pid]);
    expect(rows[0]?.ok).toBe(true);
  } finally {
    await c.end();
  }
}

/** Resolves once `check` holds, polling (evidence, not a timer); fails with `what` after 5 s. */
async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`never happened: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
