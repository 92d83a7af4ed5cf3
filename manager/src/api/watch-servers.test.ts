import { createClient, createRouterTransport, type Interceptor } from "@connectrpc/connect";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  DesiredState,
  Phase,
  ServerService,
  WatchChange,
  type WatchServersResponse,
} from "@berth/proto/berth/v1/server_pb.js";
import { callerKey, type Caller } from "../auth/caller.js";
import { Ledger } from "../ledger/ledger.js";
import { ServerChangeFeed } from "../ledger/server-changes.js";
import { createLogger } from "../log.js";
import type { Store } from "../store/store.js";
import { initialStatus, type NewServerRecord } from "../domain/records.js";
import { newServer, testStore, twoManagerStores } from "../../testing/store.js";
import { errorInterceptor } from "./errors.js";
import { createWatchServers, RESUME_HEADER, SNAPSHOT_PAGE } from "./watch-servers.js";

const ADMIN: Caller = { tokenId: "tok_admin", name: "admin", role: "admin", project: null };
const TEAM_A: Caller = { tokenId: "tok_a", name: "a", role: "viewer", project: "a" };

function server(id: string, o: Partial<NewServerRecord> = {}): NewServerRecord {
  return newServer({
    id,
    hostId: "host_1",
    name: id.replace(/^srv_/, "s-").replace(/_/g, "-"),
    project: "a",
    spec: { desiredState: DesiredState.RUNNING, dataMountPath: "/data" },
    status: { ...initialStatus(), phase: Phase.RUNNING },
    ...o,
  });
}

const open: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of open.splice(0).reverse()) await f();
});

/**
 * WatchServers over an in-memory store: writes go through the store contract
 * and reach the watch as they do in the manager (the ledger follows committed
 * batches). `feed` replaces the ledger's feed (to control its reads).
 */
async function setup(opts: { feed?: (contract: Store) => ServerChangeFeed; manual?: boolean } = {}) {
  const contract = await testStore();
  open.push(() => contract.close());
  const real = new Ledger(contract);
  open.push(real.follow(contract));
  const ledger = opts.feed ? ({ servers: opts.feed(contract) } as unknown as Ledger) : real;
  if (opts.feed) {
    // `manual`: the test publishes with flush() itself.
    if (!opts.manual) open.push(contract.onCommit((c) => c.serverIds.size > 0 && ledger.servers.changed()));
    open.push(() => ledger.servers.close());
  }
  open.push(() => real.servers.close());
  const client = (caller: Caller) => clientFor(contract, ledger, caller);
  /** A server created (and published) before what the test watches. */
  const insert = async (s: NewServerRecord) => {
    await contract.commit([{ op: "server.insert", server: s }]);
    await ledger.servers.flush();
  };
  /** What the reconciler does: write the status (the committed batch wakes the watches). */
  const setPhase = async (id: string, phase: Phase) => {
    const s = (await contract.getServer(id))!;
    await contract.commit([{ op: "server.status", id, status: { ...s.status, phase }, dataInitialized: false }]);
  };
  const purge = (id: string, project = "a") =>
    contract.commit([{ op: "server.delete", id }, real.op({ type: "server.purged", project, serverId: id, hostId: "host_1" })]);
  return { contract, ledger, client, insert, setPhase, purge };
}

/** A ServerService client calling WatchServers over `store` and `ledger` as `caller`. */
function clientFor(store: Store, ledger: Ledger, caller: Caller) {
  const as: Interceptor = (next) => (req) => {
    req.contextValues.set(callerKey, caller);
    return next(req);
  };
  const t = createRouterTransport((r) => r.service(ServerService, { watchServers: createWatchServers({ store, ledger }) }), {
    router: { interceptors: [errorInterceptor(createLogger("silent", "test")), as] },
  });
  return createClient(ServerService, t);
}

/** A watch whose messages can be awaited one by one. */
function watch(stream: AsyncIterable<WatchServersResponse>) {
  const it = stream[Symbol.asyncIterator]();
  return {
    next: async (): Promise<WatchServersResponse> => (await it.next()).value as WatchServersResponse,
    /** Messages up to and including SNAPSHOT_END. */
    async snapshot(): Promise<WatchServersResponse[]> {
      const out: WatchServersResponse[] = [];
      for (;;) {
        const m = (await it.next()).value as WatchServersResponse;
        out.push(m);
        if (m.change === WatchChange.SNAPSHOT_END) return out;
      }
    },
  };
}

const label = (m: WatchServersResponse) => `${WatchChange[m.change]}${m.server ? ` ${m.server.id}` : ""}`;

describe("ServerService.WatchServers", () => {
  it("sends a snapshot, then one message per change, with resume tokens", async () => {
    const { insert, client, setPhase } = await setup();
    await insert(server("srv_1"));
    await insert(server("srv_2", { project: "b" }));
    const ctl = new AbortController();
    const w = watch(client(TEAM_A).watchServers({}, { signal: ctl.signal }));
    const snap = await w.snapshot();
    expect(snap.map(label)).toEqual(["SNAPSHOT srv_1", "SNAPSHOT_END"]);
    expect(snap[0]!.resumeToken).toBe("");
    expect(snap[1]!.resumeToken).not.toBe("");

    const t0 = Date.now();
    await setPhase("srv_1", Phase.STOPPING);
    await setPhase("srv_2", Phase.STOPPING); // another project: not sent
    const m = await w.next();
    expect(Date.now() - t0).toBeLessThan(100);
    expect(label(m)).toBe("UPSERT srv_1");
    expect(m.server!.status!.phase).toBe(Phase.STOPPING);
    expect(m.resumeToken).not.toBe(snap[1]!.resumeToken);
    ctl.abort();
  });

  it("a snapshot larger than a page is read in pages, newest first; a server changed between two reads comes after SNAPSHOT_END as it is now", async () => {
    const { contract, ledger, setPhase } = await setup();
    const count = 2 * SNAPSHOT_PAGE + 100;
    const ids = Array.from({ length: count }, (_, i) => `srv_${String(i).padStart(5, "0")}`);
    await contract.commit(ids.map((id, i) => ({ op: "server.insert", server: server(id, { createdAt: 1_000 + i, updatedAt: 1_000 + i }) })));
    await ledger.servers.flush();
    const oldest = ids[0]!;
    const reads: (number | undefined)[] = [];
    const paged = {
      serverChangeHead: () => contract.serverChangeHead(),
      listServers: async (f: Parameters<Store["listServers"]>[0]) => {
        reads.push(f?.limit);
        const page = await contract.listServers(f);
        // Between the first and the second read: the oldest server (in the last page) stops.
        if (reads.length === 1) await setPhase(oldest, Phase.STOPPED);
        return page;
      },
    } as unknown as Store;
    const ctl = new AbortController();
    open.push(() => ctl.abort());
    const w = watch(clientFor(paged, ledger, ADMIN).watchServers({}, { signal: ctl.signal }));
    const snap = await w.snapshot();
    expect(reads).toEqual([SNAPSHOT_PAGE, SNAPSHOT_PAGE, SNAPSHOT_PAGE]);
    expect(snap.map(label)).toEqual([...[...ids].reverse().map((id) => `SNAPSHOT ${id}`), "SNAPSHOT_END"]);
    // Whatever the page showed, the change after the snapshot's position follows it.
    const next = await w.next();
    expect([label(next), next.server?.status?.phase]).toEqual([`UPSERT ${oldest}`, Phase.STOPPED]);
  });

  it("coalesces a burst for one server into one message with the latest state", async () => {
    const { insert, client, setPhase } = await setup();
    await insert(server("srv_1"));
    const ctl = new AbortController();
    const w = watch(client(ADMIN).watchServers({}, { signal: ctl.signal }));
    await w.snapshot();
    await setPhase("srv_1", Phase.STOPPING);
    await setPhase("srv_1", Phase.STOPPED);
    await setPhase("srv_1", Phase.STARTING);
    await insert(server("srv_2"));
    await setPhase("srv_2", Phase.RUNNING);
    const a = await w.next();
    const b = await w.next();
    expect([label(a), label(b)]).toEqual(["UPSERT srv_1", "UPSERT srv_2"]);
    expect(a.server!.status!.phase).toBe(Phase.STARTING);
    ctl.abort();
  });

  it("filters by host and phase on the server side; leaving the filter is a DELETE", async () => {
    const { insert, client, setPhase, purge } = await setup();
    await insert(server("srv_1"));
    await insert(server("srv_2", { hostId: "host_2" }));
    await insert(server("srv_3", { status: { ...initialStatus(), phase: Phase.STOPPED } }));
    const ctl = new AbortController();
    const w = watch(client(ADMIN).watchServers({ hostId: "host_1", phases: [Phase.RUNNING] }, { signal: ctl.signal }));
    expect((await w.snapshot()).map(label)).toEqual(["SNAPSHOT srv_1", "SNAPSHOT_END"]);
    await setPhase("srv_2", Phase.STOPPED); // other host
    await setPhase("srv_3", Phase.RUNNING); // enters the filter
    expect(label(await w.next())).toBe("UPSERT srv_3");
    await setPhase("srv_1", Phase.STOPPED); // leaves it
    expect(label(await w.next())).toBe("DELETE srv_1");
    // Purged: the record is gone; the ledger event says where it lived.
    await purge("srv_3");
    const gone = await w.next();
    expect(label(gone)).toBe("DELETE srv_3");
    expect(gone.server!.project).toBe("a");
    ctl.abort();
  });

  it("resumes from a token: only what changed since, then SNAPSHOT_END; an unknown token gets a full snapshot", async () => {
    const { insert, client, setPhase, purge, ledger } = await setup();
    for (const id of ["srv_1", "srv_2", "srv_3"]) await insert(server(id));
    const c = client(ADMIN);
    const ctl = new AbortController();
    const w = watch(c.watchServers({}, { signal: ctl.signal }));
    await w.snapshot();
    await setPhase("srv_1", Phase.STOPPING);
    const last = await w.next();
    ctl.abort();

    // While disconnected.
    await setPhase("srv_2", Phase.STOPPING);
    await setPhase("srv_2", Phase.STOPPED);
    await purge("srv_3");
    // Published before the watch resumes (a read of the store: a round trip on PostgreSQL).
    await ledger.servers.flush();

    const ctl2 = new AbortController();
    const w2 = watch(c.watchServers({}, { signal: ctl2.signal, headers: { [RESUME_HEADER]: last.resumeToken } }));
    const resumed = await w2.snapshot();
    expect(resumed.map(label)).toEqual(["UPSERT srv_2", "DELETE srv_3", "SNAPSHOT_END"]);
    expect(resumed[0]!.server!.status!.phase).toBe(Phase.STOPPED);
    ctl2.abort();

    const ctl3 = new AbortController();
    const w3 = watch(c.watchServers({}, { signal: ctl3.signal, headers: { [RESUME_HEADER]: "bm90LWEtdG9rZW4" } }));
    expect((await w3.snapshot()).map(label)).toEqual(["SNAPSHOT srv_2", "SNAPSHOT srv_1", "SNAPSHOT_END"]);
    ctl3.abort();
  });

  it("a resume whose reads are slow sends what it missed before what changed meanwhile: tokens only go forward", async () => {
    /** The resume's read (from its token's position) answers only when released; the feed's own reads are not held. */
    let slow: { from: number; waiting: (() => void)[] } | undefined;
    const { insert, client, setPhase, ledger } = await setup({
      feed: (contract) =>
        new ServerChangeFeed({
          serverChangeHead: () => contract.serverChangeHead(),
          serverChangesSince: async (after, limit) => {
            // Read first, answer late: the answer is what the store held when asked.
            const page = await contract.serverChangesSince(after, limit);
            if (slow?.from === after) await new Promise<void>((r) => slow!.waiting.push(r));
            return page;
          },
        }),
    });
    const feed = ledger.servers;
    for (const id of ["srv_1", "srv_2", "srv_3"]) await insert(server(id));
    const c = client(ADMIN);
    const ctl = new AbortController();
    const w = watch(c.watchServers({}, { signal: ctl.signal }));
    await w.snapshot();
    await setPhase("srv_1", Phase.STOPPING);
    const last = await w.next();
    ctl.abort();
    await setPhase("srv_2", Phase.STOPPED); // missed while away
    await feed.flush();

    slow = { from: feed.parseToken(last.resumeToken)!, waiting: [] };
    const ctl2 = new AbortController();
    const w2 = watch(c.watchServers({}, { signal: ctl2.signal, headers: { [RESUME_HEADER]: last.resumeToken } }));
    const resumed = w2.snapshot();
    await vi.waitFor(() => expect(slow!.waiting).toHaveLength(1));
    await setPhase("srv_3", Phase.STOPPED); // published while the resume still reads
    await feed.flush();
    const waiting = slow.waiting;
    slow = undefined;
    for (const f of waiting) f();

    const got = await resumed;
    expect(got.map(label)).toEqual(["UPSERT srv_2", "UPSERT srv_3", "SNAPSHOT_END"]);
    const seqs = got.map((m) => feed.parseToken(m.resumeToken)!);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(got[0]!.server!.status!.phase).toBe(Phase.STOPPED);
    ctl2.abort();
  });

  it("a snapshot shows each server once: a change the snapshot already shows is not sent again, a later one is", async () => {
    const { insert, client, setPhase, ledger } = await setup({ feed: (contract) => new ServerChangeFeed(contract), manual: true });
    await insert(server("srv_1"));
    await setPhase("srv_1", Phase.STOPPING); // committed, not yet published by the feed
    const ctl = new AbortController();
    const w = watch(client(ADMIN).watchServers({}, { signal: ctl.signal }));
    const snap = await w.snapshot();
    expect(snap.map(label)).toEqual(["SNAPSHOT srv_1", "SNAPSHOT_END"]);
    expect(snap[0]!.server!.status!.phase).toBe(Phase.STOPPING);
    await ledger.servers.flush(); // publishes the STOPPING change the snapshot showed
    await setPhase("srv_1", Phase.STOPPED);
    await ledger.servers.flush();
    const m = await w.next();
    expect(label(m)).toBe("UPSERT srv_1");
    expect(m.server!.status!.phase).toBe(Phase.STOPPED);
    ctl.abort();
  });

  it("a token from one manager resumes on another manager of the same database", async () => {
    const { stores, close } = await twoManagerStores();
    open.push(close);
    const [a, b] = stores;
    const ledgers = stores.map((st) => {
      const l = new Ledger(st);
      open.push(l.follow(st));
      open.push(() => l.servers.close());
      return l;
    });
    for (const id of ["srv_1", "srv_2"]) await a.commit([{ op: "server.insert", server: server(id) }]);
    const setPhase = async (st: Store, id: string, phase: Phase) =>
      st.commit([{ op: "server.status", id, status: { ...(await st.getServer(id))!.status, phase }, dataInitialized: false }]);

    const ctl = new AbortController();
    const w = watch(clientFor(a, ledgers[0]!, ADMIN).watchServers({}, { signal: ctl.signal }));
    expect((await w.snapshot()).map(label)).toEqual(["SNAPSHOT srv_2", "SNAPSHOT srv_1", "SNAPSHOT_END"]);
    await setPhase(a, "srv_1", Phase.STOPPING);
    const last = await w.next();
    expect(label(last)).toBe("UPSERT srv_1");
    ctl.abort();

    // While away: a change on B, a purge on A.
    await setPhase(b, "srv_2", Phase.STOPPED);
    await a.commit([{ op: "server.delete", id: "srv_1" }]);

    const ctl2 = new AbortController();
    const w2 = watch(clientFor(b, ledgers[1]!, ADMIN).watchServers({}, { signal: ctl2.signal, headers: { [RESUME_HEADER]: last.resumeToken } }));
    const resumed = await w2.snapshot();
    expect(resumed.map(label)).toEqual(["UPSERT srv_2", "DELETE srv_1", "SNAPSHOT_END"]);
    expect(resumed[0]!.server!.status!.phase).toBe(Phase.STOPPED);
    // And on from there, B's watch hears what A commits.
    await a.commit([{ op: "server.insert", server: server("srv_3") }]);
    expect(label(await w2.next())).toBe("UPSERT srv_3");
    ctl2.abort();
  });

  it("heartbeats: only when asked, after each quiet stretch, even while changes the watch filters out keep coming; beyond 300 s is InvalidArgument", async () => {
    const { insert, client, setPhase } = await setup();
    await insert(server("srv_1"));
    await insert(server("srv_2", { hostId: "host_2" }));
    const ctl = new AbortController();
    open.push(() => ctl.abort());
    const w = watch(client(TEAM_A).watchServers({ hostId: "host_1", heartbeatSeconds: 1 }, { signal: ctl.signal }));
    await w.snapshot();
    // A server of the project on another host changes every 200 ms: the watch wakes, sends nothing, and still beats.
    let flip = false;
    const writes: Promise<void>[] = [];
    const churn = setInterval(() => writes.push(setPhase("srv_2", (flip = !flip) ? Phase.STOPPED : Phase.RUNNING)), 200);
    open.push(() => clearInterval(churn));
    const t0 = performance.now();
    const beat = await w.next();
    expect(label(beat)).toBe("HEARTBEAT");
    expect(beat.resumeToken).toBe("");
    expect(performance.now() - t0).toBeGreaterThanOrEqual(900);
    expect(label(await w.next())).toBe("HEARTBEAT");
    // A change goes out as usual and restarts the quiet stretch.
    await setPhase("srv_1", Phase.STOPPED);
    expect(label(await w.next())).toBe("UPSERT srv_1");
    expect(label(await w.next())).toBe("HEARTBEAT");
    clearInterval(churn);
    await Promise.all(writes); // a write still under way would reach the next watch

    // Without heartbeat_seconds: nothing at all while nothing changes.
    const quiet = new AbortController();
    open.push(() => quiet.abort());
    const q = watch(client(TEAM_A).watchServers({}, { signal: quiet.signal }));
    await q.snapshot();
    const none = await Promise.race([q.next().then(label), new Promise((r) => setTimeout(() => r("nothing"), 1500))]);
    expect(none).toBe("nothing");

    await expect(watch(client(TEAM_A).watchServers({ heartbeatSeconds: 301 })).next()).rejects.toMatchObject({ code: 3, rawMessage: expect.stringContaining("heartbeat_seconds") });
    // Its waits alone (three 1 s beats, the 1.5 s quiet check) take 4.5 s: the default 5 s left no room
    // for the setup, and it timed out in two fresh runs on PostgreSQL under load.
  }, 30_000);

  it("a project-scoped token cannot watch another project", async () => {
    const { client } = await setup();
    const err = await watch(client(TEAM_A).watchServers({ project: "b" }))
      .next()
      .catch((e: unknown) => e as Error);
    expect(String(err)).toMatch(/not found/);
  });
});
