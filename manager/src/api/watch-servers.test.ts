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
import { newServer, testStore } from "../../testing/store.js";
import { errorInterceptor } from "./errors.js";
import { createWatchServers, RESUME_HEADER } from "./watch-servers.js";

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
async function setup(opts: { feed?: (contract: Store) => ServerChangeFeed } = {}) {
  const contract = await testStore();
  open.push(() => contract.close());
  const real = new Ledger(contract);
  open.push(real.follow(contract));
  const ledger = opts.feed ? ({ servers: opts.feed(contract) } as unknown as Ledger) : real;
  if (opts.feed) open.push(contract.onCommit((c) => c.serverIds.forEach((id) => ledger.servers.notify(id))));
  const client = (caller: Caller) => {
    const as: Interceptor = (next) => (req) => {
      req.contextValues.set(callerKey, caller);
      return next(req);
    };
    const t = createRouterTransport((r) => r.service(ServerService, { watchServers: createWatchServers({ store: contract, ledger }) }), {
      router: { interceptors: [errorInterceptor(createLogger("silent", "test")), as] },
    });
    return createClient(ServerService, t);
  };
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
    // Published before the watch resumes (each change is a read of the record: a round trip on PostgreSQL).
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
    let slow: { id: string; waiting: (() => void)[] } | undefined;
    const { insert, client, setPhase, ledger } = await setup({
      feed: (contract) =>
        new ServerChangeFeed(async (id) => {
          if (slow?.id === id) await new Promise<void>((r) => slow!.waiting.push(r));
          return contract.getServer(id);
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

    slow = { id: "srv_2", waiting: [] }; // the resume's read of srv_2 takes a while
    const ctl2 = new AbortController();
    const w2 = watch(c.watchServers({}, { signal: ctl2.signal, headers: { [RESUME_HEADER]: last.resumeToken } }));
    const resumed = w2.snapshot();
    await vi.waitFor(() => expect(slow!.waiting).toHaveLength(1));
    await setPhase("srv_3", Phase.STOPPED); // published while the resume still reads
    await new Promise((r) => setTimeout(r, 20));
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

  it("a project-scoped token cannot watch another project", async () => {
    const { client } = await setup();
    const err = await watch(client(TEAM_A).watchServers({ project: "b" }))
      .next()
      .catch((e: unknown) => e as Error);
    expect(String(err)).toMatch(/not found/);
  });
});
