import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, createRouterTransport, type Interceptor } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { EventService, type Event } from "@berth/proto/berth/v1/event_pb.js";
import { callerKey, type Caller } from "../auth/caller.js";
import type { EventInput } from "../domain/records.js";
import { Ledger } from "../ledger/ledger.js";
import { createLogger } from "../log.js";
import { testStore } from "../../testing/store.js";
import { errorInterceptor } from "./errors.js";
import { createEventService } from "./event-service.js";

const ADMIN: Caller = { tokenId: "tok_admin", name: "admin", role: "admin", project: null };
const TEAM_A: Caller = { tokenId: "tok_a", name: "a", role: "viewer", project: "a" };

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0)) await f();
});

async function setup(now: () => number = Date.now) {
  const contract = await testStore();
  cleanup.push(() => contract.close());
  const ledger = new Ledger(contract, now);
  ledger.follow(contract);
  /** Commits events as a writer does: one batch, listeners told once it committed. */
  const append = (...es: EventInput[]) => contract.commit(es.map((e) => ledger.op(e)));
  const client = (caller: Caller) => {
    const as: Interceptor = (next) => (req) => {
      req.contextValues.set(callerKey, caller);
      return next(req);
    };
    const t = createRouterTransport((r) => r.service(EventService, createEventService({ ledger, store: contract })), {
      router: { interceptors: [errorInterceptor(createLogger("silent", "test")), as] },
    });
    return createClient(EventService, t);
  };
  return { contract, ledger, append, client };
}

const ids = (evs: Event[]) => evs.map((e) => Number(e.id));

/** Collects `n` events from a watch, then cancels it. */
async function take(stream: AsyncIterable<{ event?: Event }>, n: number): Promise<Event[]> {
  const out: Event[] = [];
  if (n === 0) return out;
  for await (const m of stream) {
    out.push(m.event!);
    if (out.length >= n) break;
  }
  return out;
}

describe("EventService.ListEvents", () => {
  it("filters by server, host, type prefix, actor and time; newest first; pages with a cursor", async () => {
    let t = 1000;
    const { append, client } = await setup(() => t);
    for (let i = 0; i < 30; i++) {
      t = 1000 + i * 10;
      await append({
        type: i % 3 === 0 ? "command.issued" : i % 3 === 1 ? "command.succeeded" : "phase.changed",
        project: "a",
        serverId: i % 2 ? "srv_odd" : "srv_even",
        hostId: "host_1",
        actor: i % 3 === 1 ? "agent" : "reconciler",
      });
    }
    const c = client(ADMIN);
    const all = await c.listEvents({ pageSize: 1000 });
    expect(ids(all.events)).toEqual(Array.from({ length: 30 }, (_, i) => 30 - i));
    expect(all.nextPageToken).toBe("");

    expect((await c.listEvents({ serverId: "srv_odd" })).events.every((e) => e.serverId === "srv_odd")).toBe(true);
    const cmds = await c.listEvents({ typePrefix: "command." });
    expect(cmds.events).toHaveLength(20);
    expect(cmds.events.every((e) => e.type.startsWith("command."))).toBe(true);
    expect((await c.listEvents({ typePrefix: "command.s" })).events).toHaveLength(10);
    expect((await c.listEvents({ actor: "agent" })).events).toHaveLength(10);
    expect((await c.listEvents({ hostId: "host_2" })).events).toHaveLength(0);
    const window = await c.listEvents({ since: timestampFromMs(1100), until: timestampFromMs(1150) });
    expect(ids(window.events)).toEqual([15, 14, 13, 12, 11]);

    // Pages: 7 + 7 + 7 + 7 + 2, no overlap, no gap.
    const seen: number[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const p = await c.listEvents({ pageSize: 7, pageToken });
      seen.push(...ids(p.events));
      pageToken = p.nextPageToken;
      pages++;
    } while (pageToken);
    expect(pages).toBe(5);
    expect(seen).toEqual(ids(all.events));

    const bad = await c.listEvents({ pageToken: "nonsense" }).catch((e: unknown) => ConnectError.from(e));
    expect((bad as ConnectError).code).toBe(Code.InvalidArgument);
  });

  it("scopes to the caller's project: host, orphan and project-less token events go to all-projects tokens only", async () => {
    const { append, client } = await setup();
    await append({ type: "server.created", project: "a", serverId: "srv_a" });
    await append({ type: "server.created", project: "b", serverId: "srv_b" });
    await append({ type: "host.connected", hostId: "host_1" });
    await append({ type: "token.created", correlationId: "tok_x" });
    await append({ type: "token.created", project: "a", correlationId: "tok_y" });
    for (const e of hostLevel) await append(e);
    const mine = await client(TEAM_A).listEvents({});
    expect(mine.events.map((e) => `${e.type}:${e.project}`)).toEqual(["token.created:a", "server.created:a"]);
    expect(mine.events.every((e) => e.project === "a")).toBe(true);
    // Filters cannot widen the scope: asking for the host or the type still answers nothing of it.
    expect((await client(TEAM_A).listEvents({ hostId: "host_1" })).events).toHaveLength(0);
    expect((await client(TEAM_A).listEvents({ typePrefix: "orphan." })).events).toHaveLength(0);
    const all = await client(ADMIN).listEvents({});
    expect(all.events).toHaveLength(5 + hostLevel.length);
    expect(all.events.map((e) => e.type)).toEqual(expect.arrayContaining(["alert.fired", "orphan.destroyed", "host.connected"]));
  });
});

/** Project-less events about a shared host that name other tenants' containers and images. */
const hostLevel = [
  { type: "alert.fired", hostId: "host_1", reason: "OrphanFound", message: "untracked container beta-secret-db (postgres:16) on host h1" },
  { type: "orphan.destroyed", hostId: "host_1", message: "container beta-secret-db (image postgres:16) removed" },
  { type: "host.disconnected", hostId: "host_1" },
];

describe("EventService.WatchEvents", () => {
  it("replays after after_id, then follows live, with no gap and no duplicate at the seam", async () => {
    const { append, client } = await setup();
    // 1,200 events written 100 per batch (one round trip each on PostgreSQL, not 1,200).
    for (let i = 0; i < 1200; i += 100) await append(...Array.from({ length: 100 }, (_, k) => ({ type: "phase.changed", serverId: `srv_${(i + k) % 7}` })));
    const c = client(ADMIN);
    const ctl = new AbortController();
    const stream = c.watchEvents({ afterId: 100n }, { signal: ctl.signal });
    // Keep appending while the watch is replaying (the replay reads in batches of 500).
    let appended = 0;
    const writes: Promise<unknown>[] = [];
    const writer = setInterval(() => {
      writes.push(append(...Array.from({ length: 20 }, () => ({ type: "command.issued", serverId: "srv_live" }))));
      appended += 20;
    }, 1);
    const got = await take(
      (async function* () {
        for await (const m of stream) {
          yield m;
          if (appended >= 400) clearInterval(writer);
        }
      })(),
      1100 + 400,
    );
    clearInterval(writer);
    ctl.abort();
    // Every write committed before the store closes (on PostgreSQL a commit takes a round trip).
    await Promise.all(writes);
    expect(ids(got)).toEqual(Array.from({ length: 1500 }, (_, i) => 101 + i));
  });

  it("a client that reconnects with its last id misses nothing", async () => {
    const { append, client } = await setup();
    const c = client(ADMIN);
    for (let i = 0; i < 5; i++) await append({ type: "server.created", serverId: `srv_${i}` });
    const ctl = new AbortController();
    const s1 = c.watchEvents({ afterId: 2n }, { signal: ctl.signal });
    const part = await take(s1, 3);
    ctl.abort();
    // Events while disconnected.
    for (let i = 0; i < 4; i++) await append({ type: "server.deleted", serverId: `srv_${i}` });
    const last = part[part.length - 1]!.id;
    const ctl2 = new AbortController();
    const rest = await take(c.watchEvents({ afterId: last }, { signal: ctl2.signal }), 4);
    ctl2.abort();
    expect([...ids(part), ...ids(rest)]).toEqual([3, 4, 5, 6, 7, 8, 9]);
  });

  it("after_id 0 follows new events only; filters and project scope apply live", async () => {
    const { append, client } = await setup();
    await append({ type: "server.created", project: "a", serverId: "srv_a" });
    const ctl = new AbortController();
    const stream = client(TEAM_A).watchEvents({ typePrefix: "server." }, { signal: ctl.signal });
    const got = take(stream, 2);
    await new Promise((r) => setTimeout(r, 20));
    await append({ type: "server.created", project: "b", serverId: "srv_b" });
    await append({ type: "command.issued", project: "a", serverId: "srv_a" });
    await append({ type: "server.deleted", project: "a", serverId: "srv_a" });
    await append({ type: "server.restored", project: "a", serverId: "srv_a" });
    const evs = await got;
    ctl.abort();
    expect(evs.map((e) => e.type)).toEqual(["server.deleted", "server.restored"]);
  });

  it("a project viewer's watch replays and follows its project's events only; an all-projects admin's sees the host's too", async () => {
    const { append, client } = await setup();
    await append({ type: "server.created", project: "a", serverId: "srv_a" }); // id 1: the replays start after it
    for (const e of hostLevel) await append(e);
    await append({ type: "server.created", project: "b", serverId: "srv_b" });
    await append({ type: "server.updated", project: "a", serverId: "srv_a" });
    const ctl = new AbortController();
    const viewer = take(client(TEAM_A).watchEvents({ afterId: 1n }, { signal: ctl.signal }), 2);
    const admin = take(client(ADMIN).watchEvents({ afterId: 1n }, { signal: ctl.signal }), 2 * hostLevel.length + 4);
    // Not needed for the result (after_id replays whatever the watches have not seen yet): it
    // gives them time to subscribe, so the events below usually arrive live and the live path is covered too.
    await new Promise((r) => setTimeout(r, 20));
    for (const e of hostLevel) await append(e);
    await append({ type: "server.stopped", project: "b", serverId: "srv_b" });
    await append({ type: "server.started", project: "a", serverId: "srv_a" });
    const [mine, all] = await Promise.all([viewer, admin]);
    ctl.abort();
    // Replayed (server.updated) then live (server.started): nothing project-less, nothing of b.
    expect(mine.map((e) => `${e.type}:${e.project}`)).toEqual(["server.updated:a", "server.started:a"]);
    expect(all.filter((e) => e.project === "").map((e) => e.type)).toEqual([...hostLevel, ...hostLevel].map((e) => e.type));
  });

  it("heartbeats: only when asked, after each quiet stretch, even while events the watch filters out keep coming; beyond 300 s is InvalidArgument", async () => {
    const { append, client } = await setup();
    const ctl = new AbortController();
    cleanup.push(async () => ctl.abort());
    const it = client(TEAM_A).watchEvents({ typePrefix: "server.", heartbeatSeconds: 1 }, { signal: ctl.signal })[Symbol.asyncIterator]();
    const next = async () => {
      const m = (await it.next()).value as { event?: Event; heartbeat: boolean };
      return m.heartbeat ? "heartbeat" : m.event!.type;
    };
    // Events of another project every 200 ms: the watch wakes, reads, sends nothing, and still beats.
    const writes: Promise<unknown>[] = [];
    const churn = setInterval(() => writes.push(append({ type: "server.updated", project: "b", serverId: "srv_b" })), 200);
    cleanup.push(async () => clearInterval(churn));
    const t0 = performance.now();
    expect(await next()).toBe("heartbeat");
    expect(performance.now() - t0).toBeGreaterThanOrEqual(900);
    await append({ type: "server.created", project: "a", serverId: "srv_a" });
    expect(await next()).toBe("server.created");
    expect(await next()).toBe("heartbeat");
    clearInterval(churn);
    await Promise.all(writes); // an append still under way would reach the next watch

    // Without heartbeat_seconds: nothing while nothing happens.
    const quiet = new AbortController();
    cleanup.push(async () => quiet.abort());
    const q = client(TEAM_A).watchEvents({}, { signal: quiet.signal })[Symbol.asyncIterator]();
    const none = await Promise.race([q.next().then(() => "something"), new Promise((r) => setTimeout(() => r("nothing"), 1500))]);
    expect(none).toBe("nothing");

    const err = await take(client(ADMIN).watchEvents({ heartbeatSeconds: 301 }), 1).catch((e: unknown) => ConnectError.from(e));
    expect((err as ConnectError).code).toBe(Code.InvalidArgument);
    expect((err as ConnectError).rawMessage).toContain("heartbeat_seconds");
  });

  it("refuses a negative after_id", async () => {
    const { client } = await setup();
    const err = await take(client(ADMIN).watchEvents({ afterId: -1n }), 1).catch((e: unknown) => ConnectError.from(e));
    expect((err as ConnectError).code).toBe(Code.InvalidArgument);
  });
});
