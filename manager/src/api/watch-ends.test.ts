/**
 * How watches end, and server names in the event filters: what a script
 * sees through the API.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createContextValues, createHandlerContext, createRouterTransport, type Interceptor } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { EventService, WatchEventsRequestSchema } from "@berth/proto/berth/v1/event_pb.js";
import { ServerService, WatchServersRequestSchema } from "@berth/proto/berth/v1/server_pb.js";
import { callerKey, type Caller } from "../auth/caller.js";
import type { EventInput } from "../domain/records.js";
import { Ledger } from "../ledger/ledger.js";
import { createLogger } from "../log.js";
import type { Store } from "../store/store.js";
import { newServer, testStore } from "../../testing/store.js";
import { errorInterceptor } from "./errors.js";
import { createEventService } from "./event-service.js";
import { createWatchServers } from "./watch-servers.js";

const ADMIN: Caller = { tokenId: "tok_admin", name: "admin", role: "admin", project: null };
const TEAM_A: Caller = { tokenId: "tok_a", name: "a", role: "viewer", project: "a" };
const TEAM_B: Caller = { tokenId: "tok_b", name: "b", role: "viewer", project: "b" };

const open: Store[] = [];
afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
});

async function setup() {
  const contract = await testStore();
  open.push(contract);
  const ledger = new Ledger(contract);
  ledger.follow(contract);
  const service = createEventService({ ledger, store: contract });
  const client = (caller: Caller) => {
    const as: Interceptor = (next) => (req) => {
      req.contextValues.set(callerKey, caller);
      return next(req);
    };
    const t = createRouterTransport((r) => r.service(EventService, service), { router: { interceptors: [errorInterceptor(createLogger("silent", "test")), as] } });
    return createClient(EventService, t);
  };
  const addServer = (id: string, name: string, project: string) => contract.commit([{ op: "server.insert", server: newServer({ id, name, project, hostId: "host_a" }) }]);
  /** Appends an event as a writer does: one committed batch. */
  const append = (e: EventInput) => contract.commit([ledger.op(e)]);
  return { contract, ledger, service, client, addServer, append };
}

/** A handler context as the router makes it, for `caller`, with a deadline or a cancel signal. */
function context(method: "watchEvents" | "watchServers", caller: Caller, opts: { timeoutMs?: number; requestSignal?: AbortSignal }) {
  const values = createContextValues();
  values.set(callerKey, caller);
  const svc = method === "watchEvents" ? EventService : ServerService;
  return createHandlerContext({
    service: svc,
    method: method === "watchEvents" ? EventService.method.watchEvents : ServerService.method.watchServers,
    protocolName: "grpc",
    requestMethod: "POST",
    url: `http://test/${svc.typeName}/${method}`,
    contextValues: values,
    ...opts,
  });
}

/** Drains a watch; returns the error it ended with (undefined: it ended with OK). */
async function endOf(stream: AsyncIterable<unknown>): Promise<ConnectError | undefined> {
  try {
    for await (const _ of stream) {
      // Snapshot and live messages are not the point here.
    }
    return undefined;
  } catch (err) {
    return ConnectError.from(err);
  }
}

describe("watches ended by the caller", () => {
  it("WatchEvents past the caller's deadline ends with DEADLINE_EXCEEDED, not OK", async () => {
    const { service } = await setup();
    const ctx = context("watchEvents", ADMIN, { timeoutMs: 100 });
    const err = await endOf(service.watchEvents(create(WatchEventsRequestSchema, {}), ctx));
    expect(err?.code).toBe(Code.DeadlineExceeded);
  });

  it("WatchServers past the caller's deadline ends with DEADLINE_EXCEEDED; cancelled by the caller, CANCELED", async () => {
    const { contract, ledger } = await setup();
    const watch = createWatchServers({ store: contract, ledger });
    const timedOut = await endOf(watch(create(WatchServersRequestSchema, {}), context("watchServers", ADMIN, { timeoutMs: 100 })));
    expect(timedOut?.code).toBe(Code.DeadlineExceeded);

    const abort = new AbortController();
    setTimeout(() => abort.abort(), 50);
    const cancelled = await endOf(watch(create(WatchServersRequestSchema, {}), context("watchServers", ADMIN, { requestSignal: abort.signal })));
    expect(cancelled?.code).toBe(Code.Canceled);
  });
});

describe("ListEvents by server name", () => {
  it("takes a name like every other id field, within the caller's project", async () => {
    const { client, addServer, append } = await setup();
    await addServer("srv_aaaaaaaaaaaa", "web", "a");
    await addServer("srv_bbbbbbbbbbbb", "web", "b");
    await append({ type: "server.created", project: "a", serverId: "srv_aaaaaaaaaaaa", message: "a's web" });
    await append({ type: "server.created", project: "b", serverId: "srv_bbbbbbbbbbbb", message: "b's web" });

    const mine = await client(TEAM_A).listEvents({ serverId: "web" });
    expect(mine.events.map((e) => e.message)).toEqual(["a's web"]);
    expect((await client(TEAM_B).listEvents({ serverId: "web" })).events.map((e) => e.message)).toEqual(["b's web"]);
    // An all-projects admin must say which one.
    await expect(client(ADMIN).listEvents({ serverId: "web" })).rejects.toMatchObject({ code: Code.InvalidArgument });
    // Unknown names are NotFound, not an empty answer that looks like "nothing happened".
    await expect(client(TEAM_A).listEvents({ serverId: "nope" })).rejects.toMatchObject({ code: Code.NotFound });
    // Ids work as before, also for a server whose record is gone.
    await append({ type: "server.purged", project: "a", serverId: "srv_cccccccccccc", message: "gone" });
    expect((await client(TEAM_A).listEvents({ serverId: "srv_cccccccccccc" })).events.map((e) => e.message)).toEqual(["gone"]);
  });
});
