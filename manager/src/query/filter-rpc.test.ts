/**
 * CEL filters on the list and watch RPCs, through the services over a real
 * store (both engines: the unit and unit-pg projects): scoping first, paging
 * against a brute-force filter, watches sending a server that stops matching as DELETE.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport, type Interceptor } from "@connectrpc/connect";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { HostService } from "@berth/proto/berth/v1/host_pb.js";
import { Phase, ServerSchema, ServerService, ServerStatusSchema, WatchChange, type Server, type WatchServersResponse } from "@berth/proto/berth/v1/server_pb.js";
import { callerKey, type Caller } from "../auth/caller.js";
import { initialStatus } from "../domain/records.js";
import { Ledger } from "../ledger/ledger.js";
import { AgentHub } from "../link/agent-hub.js";
import { createLogger } from "../log.js";
import { Reconciler } from "../reconcile/reconciler.js";
import { addHost, stubReconciler } from "../../testing/agent-stream.js";
import { assertEachSeed, seedsLabel } from "../../testing/fuzz-kit.js";
import { newServer, testStore } from "../../testing/store.js";
import { errorInterceptor } from "../api/errors.js";
import { createEventService } from "../api/event-service.js";
import { createHostService } from "../api/host-service.js";
import { createServerService } from "../api/server-service.js";
import { compileFilter, FilterRun } from "./cel.js";
import { filterPage } from "./filter-page.js";

const ADMIN: Caller = { tokenId: "tok_admin", name: "admin", role: "admin", project: null };
const TEAM_A: Caller = { tokenId: "tok_a", name: "a", role: "viewer", project: "a" };
const HOST = "host_aaaaaaaaaaaa";

const open: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of open.splice(0).reverse()) await f();
});

async function setup() {
  const store = await testStore();
  const hub = new AgentHub();
  const ledger = new Ledger(store);
  const unfollow = ledger.follow(store);
  const log = createLogger("silent", "test");
  const reconciler = new Reconciler({ store, hub, log, managerId: await store.clusterId(), ledger });
  await addHost(store, HOST);
  open.push(async () => {
    reconciler.stop();
    unfollow();
    ledger.servers.close();
    await store.close();
  });
  const transport = (caller: Caller) => {
    const as: Interceptor = (next) => (req) => {
      req.contextValues.set(callerKey, caller);
      return next(req);
    };
    return createRouterTransport(
      (r) => {
        r.service(ServerService, createServerService({ store, hub, ledger, reconciler }));
        r.service(EventService, createEventService({ ledger, store }));
        r.service(HostService, createHostService({ store, hub, ledger, reconciler: stubReconciler(), advertiseUrl: "http://test", drains: { available: true } }));
      },
      { router: { interceptors: [errorInterceptor(log), as] } },
    );
  };
  const clients = (caller: Caller) => {
    const t = transport(caller);
    return { servers: createClient(ServerService, t), events: createClient(EventService, t), hosts: createClient(HostService, t) };
  };
  let n = 0;
  const insert = async (o: { project?: string; phase?: Phase; labels?: Record<string, string>; at?: number } = {}) => {
    const id = serverId(n++);
    await store.commit([
      {
        op: "server.insert",
        server: newServer({ id, hostId: HOST, project: o.project ?? "a", spec: { labels: o.labels ?? {} }, status: create(ServerStatusSchema, { ...initialStatus(), phase: o.phase ?? Phase.RUNNING }), at: o.at ?? n }),
      },
      ledger.op({ type: "server.created", project: o.project ?? "a", serverId: id, hostId: HOST, actor: "test", message: `created ${id}` }),
    ]);
    await ledger.servers.flush();
    return id;
  };
  const other = (project: string) => store.commit([ledger.op({ type: "test.other", project, actor: "test", message: "not a server event" })]);
  return { store, ledger, clients, insert, other };
}

/** A distinct server id for each n (letters only: ids are [a-z2-7]). */
function serverId(n: number): string {
  let out = "";
  for (let i = 0; i < 12; i++, n = Math.floor(n / 26)) out = String.fromCharCode(97 + (n % 26)) + out;
  return `srv_${out}`;
}

async function code(p: Promise<unknown>): Promise<{ code: Code; message: string }> {
  try {
    await p;
  } catch (err) {
    const ce = ConnectError.from(err);
    return { code: ce.code, message: ce.rawMessage };
  }
  throw new Error("expected the call to fail");
}

/** Every page of a filtered ListServers. */
async function allPages(list: (token: string) => Promise<{ servers: Server[]; nextPageToken: string }>) {
  const out: string[] = [];
  let pages = 0;
  for (let token = ""; ; ) {
    const r = await list(token);
    pages++;
    out.push(...r.servers.map((s) => s.id));
    if (!r.nextPageToken) return { ids: out, pages };
    token = r.nextPageToken;
  }
}

describe("filters on ListServers, ListEvents, ListHosts", () => {
  it("scoping comes first: `true` sees no more than the caller's project; another project's id finds nothing", async () => {
    const { clients, insert } = await setup();
    const mine = await insert({ project: "a" });
    const theirs = await insert({ project: "b" });
    const a = clients(TEAM_A);
    expect((await a.servers.listServers({ filter: "true" })).servers.map((s) => s.id)).toEqual([mine]);
    expect((await a.servers.listServers({ filter: `server.id == "${theirs}"` })).servers).toEqual([]);
    expect((await a.servers.listServers({ filter: 'server.project == "b"' })).servers).toEqual([]);
    expect((await a.events.listEvents({ filter: "true" })).events.map((e) => e.serverId)).toEqual([mine]);
    expect((await a.events.listEvents({ filter: `event.server_id == "${theirs}"` })).events).toEqual([]);
    // An all-projects admin sees both.
    expect((await clients(ADMIN).servers.listServers({ filter: "true" })).servers).toHaveLength(2);
  });

  it("filters by phase and labels; the other request fields still apply", async () => {
    const { clients, insert } = await setup();
    const failedProd = await insert({ phase: Phase.FAILED, labels: { tier: "prod" } });
    await insert({ phase: Phase.FAILED, labels: { tier: "dev" } });
    await insert({ phase: Phase.RUNNING, labels: { tier: "prod" } });
    const c = clients(ADMIN).servers;
    const r = await c.listServers({ filter: 'server.status.phase == PHASE_FAILED && server.spec.labels["tier"] == "prod"' });
    expect(r.servers.map((s) => s.id)).toEqual([failedProd]);
    expect((await c.listServers({ filter: 'server.spec.labels["tier"] == "prod"', phases: [Phase.RUNNING] })).servers).toHaveLength(1);
    // A server without the label does not match (the missing key is an error on that row).
    await insert({ phase: Phase.FAILED });
    expect((await c.listServers({ filter: 'server.spec.labels["tier"] != "dev"' })).servers).toHaveLength(2);
  });

  it("a bad filter is InvalidArgument on `filter`; a costly one ResourceExhausted", async () => {
    const { clients, insert } = await setup();
    await insert();
    const c = clients(ADMIN);
    const syntax = await code(c.servers.listServers({ filter: "server.id ==" }));
    expect(syntax.code).toBe(Code.InvalidArgument);
    expect(syntax.message).toMatch(/^filter: syntax error at line 1, column \d+/);
    expect((await code(c.events.listEvents({ filter: "event.nope" }))).message).toContain("berth.v1.Event has no field 'nope'");
    expect((await code(c.hosts.listHosts({ filter: "host.name" }))).message).toContain("must be bool");
    const list = `[${Array.from({ length: 400 }, (_, i) => i).join(",")}]`;
    const costly = await code(c.servers.listServers({ filter: `${list}.all(x, ${list}.all(y, y >= 0))` }));
    expect(costly.code).toBe(Code.ResourceExhausted);
    expect(costly.message).toMatch(/narrow the filter/);
  });

  it("a costly filter over many rows never holds the event loop for long: the call yields between rows", async () => {
    const { clients, store } = await setup();
    await store.commit(
      Array.from({ length: 300 }, (_, i) => ({
        op: "server.insert" as const,
        server: newServer({ id: serverId(1000 + i), hostId: HOST, project: "a", at: i + 1 }),
      })),
    );
    // About 8,000 steps a row: under the row budget; the call's may run out near the end.
    const list = `[${Array.from({ length: 40 }, (_, i) => i).join(",")}]`;
    let last = performance.now();
    let worst = 0;
    let turns = 0;
    const timer = setInterval(() => {
      const t = performance.now();
      worst = Math.max(worst, t - last);
      last = t;
      turns++;
    }, 5);
    const t0 = performance.now();
    try {
      const res = await clients(ADMIN)
        .servers.listServers({ filter: `${list}.all(x, ${list}.all(y, y >= 0))`, pageSize: 1000 })
        .then((r) => `${r.servers.length} servers`, (err) => Code[ConnectError.from(err).code]);
      // Either outcome is fine (the call's budget may run out on a slow machine); the loop kept turning.
      expect(["300 servers", "ResourceExhausted"]).toContain(res);
    } finally {
      clearInterval(timer);
    }
    // Also the stretch up to the answer (a call that never yielded would have held the loop all along).
    worst = Math.max(worst, performance.now() - last);
    const took = performance.now() - t0;
    // Other work got a turn about every SLICE_MS of evaluation: on a machine this busy (2 cores shared
    // with other test runs), a turn's wall time stretches, so the count is the robust measure.
    expect(turns, `${turns} turns in ${took.toFixed(0)} ms, longest gap ${worst.toFixed(0)} ms`).toBeGreaterThanOrEqual(Math.min(10, Math.floor(took / 100)));
    expect(worst).toBeLessThan(400);
  });

  it("ListEvents: by type, actor and time, paged", async () => {
    const { clients, insert } = await setup();
    for (let i = 0; i < 5; i++) await insert();
    const c = clients(ADMIN).events;
    const r = await allPages(async (pageToken) => {
      const res = await c.listEvents({ filter: 'event.type.startsWith("server.") && event.time > now - duration("1h")', pageSize: 2, pageToken });
      return { servers: res.events.map((e) => ({ id: e.serverId }) as Server), nextPageToken: res.nextPageToken };
    });
    expect(r.ids).toHaveLength(5);
    expect(r.pages).toBe(3);
    expect((await c.listEvents({ filter: 'event.actor == "someone else"' })).events).toEqual([]);
  });

  it("ListHosts", async () => {
    const { clients, store } = await setup();
    await addHost(store, "host_bbbbbbbbbbbb");
    const c = clients(ADMIN).hosts;
    expect((await c.listHosts({})).hosts).toHaveLength(2);
    expect((await c.listHosts({ filter: 'host.id == "host_bbbbbbbbbbbb"' })).hosts.map((h) => h.id)).toEqual(["host_bbbbbbbbbbbb"]);
    expect((await c.listHosts({ filter: "host.state == HOST_STATE_ONLINE" })).hosts).toEqual([]);
  });
});

describe(`filtered pages against a brute-force filter over random fleets${seedsLabel()}`, () => {
  const fleet = fc.array(fc.record({ project: fc.constantFrom("a", "b"), phase: fc.constantFrom(Phase.RUNNING, Phase.FAILED, Phase.STOPPED), tier: fc.constantFrom("prod", "dev", undefined) }), { maxLength: 25 });
  const filters = fc.constantFrom("true", "false", "server.status.phase == PHASE_FAILED", 'server.spec.labels["tier"] == "prod"', '!("tier" in server.spec.labels) || server.status.phase != PHASE_RUNNING');

  it("ListServers: every page of a filter, concatenated, is the filter applied to the whole (scoped) list", async () => {
    await assertEachSeed(
      fc.asyncProperty(fleet, filters, fc.integer({ min: 1, max: 6 }), fc.constantFrom(ADMIN, TEAM_A), async (servers, filter, pageSize, caller) => {
        const { clients, insert } = await setup();
        try {
          for (const s of servers) await insert({ project: s.project, phase: s.phase, labels: s.tier ? { tier: s.tier } : {} });
          const c = clients(caller).servers;
          const all = (await c.listServers({ pageSize: 1000 })).servers;
          const f = compileFilter("server", filter);
          const want = all.filter((s) => f.test(s, new FilterRun())).map((s) => s.id);
          const got = await allPages((pageToken) => c.listServers({ filter, pageSize, pageToken }));
          expect(got.ids).toEqual(want);
        } finally {
          for (const f of open.splice(0).reverse()) await f();
        }
      }),
      { numRuns: 12 },
    );
  });

  it("filterPage reads at most the scan limit per page and continues after the last row read", async () => {
    const servers = fc.array(fc.constantFrom("prod", "dev"), { maxLength: 60 });
    await assertEachSeed(
      fc.asyncProperty(servers, fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 10 }), fc.integer({ min: 1, max: 7 }), async (tiers, pageSize, scanLimit, readBatch) => {
        const rows = tiers.map((tier, i) => ({ i, msg: create(ServerSchema, { id: `s${i}`, spec: { labels: { tier } } }) }));
        const f = compileFilter("server", 'server.spec.labels["tier"] == "prod"');
        const got: string[] = [];
        let after: (typeof rows)[number] | undefined;
        for (let calls = 0; ; calls++) {
          expect(calls).toBeLessThanOrEqual(rows.length + 1);
          let read = 0;
          const page = await filterPage({
            read: async (a, n) => {
              const from = a ? a.i + 1 : 0;
              const out = rows.slice(from, from + n);
              read += Math.min(out.length, n - 1);
              return out;
            },
            convert: (rs) => rs.map((r) => r.msg),
            filter: f,
            run: new FilterRun(),
            pageSize,
            after,
            scanLimit,
            readBatch,
          });
          expect(page.items.length).toBeLessThanOrEqual(pageSize);
          expect(read).toBeLessThanOrEqual(scanLimit);
          got.push(...page.items.map((s) => s.id));
          if (!page.continueAfter) break;
          after = page.continueAfter;
        }
        expect(got).toEqual(rows.filter((r) => tiers[r.i] === "prod").map((r) => r.msg.id));
      }),
      { numRuns: 300 },
    );
  });
});


describe("WatchServers with a filter", () => {
  it("sends the matching snapshot, then a server that stops matching as DELETE and one that starts as UPSERT; scoping first", async () => {
    const { clients, insert, store } = await setup();
    const failed = await insert({ phase: Phase.FAILED });
    const running = await insert({ phase: Phase.RUNNING });
    const other = await insert({ project: "b", phase: Phase.FAILED });
    const ctl = new AbortController();
    open.push(() => ctl.abort());
    const it = clients(TEAM_A).servers.watchServers({ filter: "server.status.phase == PHASE_FAILED" }, { signal: ctl.signal })[Symbol.asyncIterator]();
    const next = async () => (await it.next()).value as WatchServersResponse;
    const label = (m: WatchServersResponse) => `${WatchChange[m.change]}${m.server ? ` ${m.server.id}` : ""}`;
    expect(label(await next())).toBe(`SNAPSHOT ${failed}`);
    expect(label(await next())).toBe("SNAPSHOT_END");
    const setPhase = async (id: string, phase: Phase) => {
      const s = (await store.getServer(id))!;
      await store.commit([{ op: "server.status", id, status: { ...s.status, phase }, dataInitialized: false }]);
    };
    await setPhase(failed, Phase.RUNNING);
    expect(label(await next())).toBe(`DELETE ${failed}`);
    await setPhase(other, Phase.RUNNING);
    await setPhase(other, Phase.FAILED);
    await setPhase(running, Phase.FAILED);
    expect(label(await next())).toBe(`UPSERT ${running}`);
  });

  it("a bad filter ends the watch with InvalidArgument before any message", async () => {
    const { clients } = await setup();
    const e = await code((async () => {
      for await (const _ of clients(ADMIN).servers.watchServers({ filter: "server.spec.nope" })) break;
    })());
    expect(e.code).toBe(Code.InvalidArgument);
    expect(e.message).toContain("ServerSpec has no field 'nope'");
  });
});

describe("WatchEvents with a filter", () => {
  it("replays and follows only matching events of the caller's project", async () => {
    const { clients, insert, other } = await setup();
    const first = await insert({ labels: { tier: "prod" } });
    await insert({ project: "b" });
    const ctl = new AbortController();
    open.push(() => ctl.abort());
    const it = clients(TEAM_A).events.watchEvents({ afterId: 0n, filter: 'event.type == "server.created"' }, { signal: ctl.signal })[Symbol.asyncIterator]();
    // after_id 0 follows new events only: add some after the watch started.
    const got = (async () => {
      const out: string[] = [];
      for (;;) {
        const m = (await it.next()).value;
        out.push(`${m.event.type} ${m.event.serverId}`);
        if (out.length === 2) return out;
      }
    })();
    await new Promise((r) => setTimeout(r, 100));
    const second = await insert({ project: "a" });
    await other("a");
    await insert({ project: "b" });
    const third = await insert({ project: "a" });
    expect(await got).toEqual([`server.created ${second}`, `server.created ${third}`]);
    expect(first).not.toBe(second);
  });
});
