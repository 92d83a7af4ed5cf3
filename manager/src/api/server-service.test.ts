import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport, type Interceptor } from "@connectrpc/connect";
import { afterEach, describe, expect, it, vi } from "vitest";
import { Phase, ServerService, ServerSpecSchema, ServerStatusSchema } from "@berth/proto/berth/v1/server_pb.js";
import { callerKey, type Caller } from "../auth/caller.js";
import { Ledger } from "../ledger/ledger.js";
import { AgentHub } from "../link/agent-hub.js";
import { createLogger } from "../log.js";
import { Reconciler } from "../reconcile/reconciler.js";
import { openDatabase } from "../store/database.js";
import { Store } from "../store/store.js";
import { initialStatus } from "../domain/records.js";
import { errorInterceptor } from "./errors.js";
import { createServerService } from "./server-service.js";

const ADMIN: Caller = { tokenId: "tok_admin", name: "admin", role: "admin", project: null };
const HOST = "host_aaaaaaaaaaaa";

const open: (() => void)[] = [];
afterEach(() => {
  for (const f of open.splice(0)) f();
});

function setup(opts: { store?: (s: Store) => Store } = {}) {
  const raw = new Store(openDatabase(":memory:"));
  const store = opts.store ? opts.store(raw) : raw;
  const hub = new AgentHub();
  const ledger = new Ledger(store);
  const log = createLogger("silent", "test");
  const reconciler = new Reconciler({ store, hub, log, managerId: raw.managerId(), ledger });
  raw.insertHost({ id: HOST, name: "h", secretHash: "x".repeat(64), createdAt: 1 });
  open.push(() => {
    reconciler.stop();
    raw.close();
  });
  const as: Interceptor = (next) => (req) => {
    req.contextValues.set(callerKey, ADMIN);
    return next(req);
  };
  const t = createRouterTransport((r) => r.service(ServerService, createServerService({ store, hub, ledger, reconciler })), {
    router: { interceptors: [errorInterceptor(log), as] },
  });
  /** A server record as the reconciler would have left it, in `phase`, created at `createdAt`. */
  const insert = (name: string, phase: Phase, createdAt: number) => {
    const id = `srv_${name.padEnd(12, "a")}`;
    raw.insertServer({
      id,
      project: "default",
      name,
      hostId: HOST,
      generation: 1,
      spec: create(ServerSpecSchema, { name, hostId: HOST, image: "busybox" }),
      status: create(ServerStatusSchema, { ...initialStatus(), phase }),
      dataInitialized: false,
      lifecycle: {},
      createdAt,
      updatedAt: createdAt,
      deletedAt: null,
    });
    return id;
  };
  return { store: raw, hub, ledger, reconciler, client: createClient(ServerService, t), insert };
}

describe("ServerService.ListServers", () => {
  it("filters by phase before cutting the page: a page of one finds the running server behind newer stopped ones", async () => {
    const { client, insert } = setup();
    const running = insert("runner", Phase.RUNNING, 1_000);
    insert("stoppeda", Phase.STOPPED, 2_000);
    insert("stoppedb", Phase.STOPPED, 3_000);
    const first = await client.listServers({ phases: [Phase.RUNNING], pageSize: 1 });
    expect(first.servers.map((s) => s.id)).toEqual([running]);
    expect(first.nextPageToken).toBe("");

    // Pages of a filtered listing: every match once, tokens until the last.
    const stopped: string[] = [];
    let token = "";
    let pages = 0;
    do {
      const r = await client.listServers({ phases: [Phase.STOPPED, Phase.STOPPED], pageSize: 1, pageToken: token });
      stopped.push(...r.servers.map((s) => s.id));
      token = r.nextPageToken;
      pages++;
    } while (token && pages < 10);
    expect(stopped).toEqual(["srv_stoppedbaaaa", "srv_stoppedaaaaa"]);
    expect((await client.listServers({ phases: [Phase.FAILED] })).servers).toEqual([]);
  });
});

describe("API calls reconcile through the work queue", () => {
  it("a reconcile that fails right after an accepted change: the call still answers, and the reconcile is retried", async () => {
    let failures = 1;
    const { client, store } = setup({
      store: (s) =>
        new Proxy(s, {
          get(target, prop, receiver) {
            if (prop === "openCommandForServer" && failures > 0) {
              return () => {
                failures--;
                throw new Error("SQLITE_BUSY: database is locked");
              };
            }
            const v = Reflect.get(target, prop, receiver) as unknown;
            return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
          },
        }),
    });
    const { server } = await client.createServer({ spec: { name: "web", image: "busybox", hostId: HOST } });
    expect(server?.status?.phase).toBe(Phase.PENDING);
    // The retry (200 ms backoff) reconciles it: the host is not connected, so Unknown.
    await vi.waitFor(() => expect(store.getServer(server!.id)?.status.phase).toBe(Phase.UNKNOWN), { timeout: 4_000 });
  });

  it("the periodic resync reconciles every server without any trigger", async () => {
    const { store, reconciler, insert } = setup();
    const ids = ["one", "two", "three"].map((n, i) => insert(n, Phase.RUNNING, 1_000 + i));
    // A reconciler with a short period over the same store.
    const periodic = new Reconciler({ store, hub: new AgentHub(), log: createLogger("silent", "test"), managerId: store.managerId(), resyncIntervalMs: 300 });
    open.push(() => periodic.stop());
    void reconciler;
    periodic.startResync();
    // Each is reconciled: RUNNING recorded before, now Unknown (its host is not connected).
    await vi.waitFor(() => expect(ids.map((id) => store.getServer(id)?.status.phase)).toEqual([Phase.UNKNOWN, Phase.UNKNOWN, Phase.UNKNOWN]), { timeout: 4_000 });
  });
});

describe("ServerService.UpdateServer with expected_version", () => {
  it("a stale version answers Aborted and changes nothing; the current one updates and returns the next version", async () => {
    const { client, store } = setup();
    const { server: created } = await client.createServer({ spec: { name: "mc", image: "busybox", hostId: HOST } });
    const read = (await client.getServer({ id: created!.id })).server!;
    expect(read.version).toBeGreaterThanOrEqual(1n);
    expect(read.version).toBe(BigInt(store.getServer(read.id)!.version));

    // Someone else changes it after it was read.
    const other = await client.updateServer({ id: read.id, spec: { ...read.spec!, image: "alpine" } });
    expect(other.server!.version).toBeGreaterThan(read.version);
    const before = store.getServer(read.id)!;
    const events = store.listEvents({ serverId: read.id }).length;

    const stale = await client.updateServer({ id: read.id, spec: { ...read.spec!, image: "nginx" }, expectedVersion: read.version }).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(stale?.code).toBe(Code.Aborted);
    expect(stale?.rawMessage).toBe(`server "mc" was changed by someone else (version ${before.version}, expected ${read.version}): read it again and retry`);
    expect(store.getServer(read.id)).toEqual(before);
    expect(store.listEvents({ serverId: read.id }).length).toBe(events);

    // Read again, retry: accepted.
    const fresh = (await client.getServer({ id: read.id })).server!;
    const ok = await client.updateServer({ id: read.id, spec: { ...fresh.spec!, image: "nginx" }, expectedVersion: fresh.version });
    expect(ok.server!.spec!.image).toBe("nginx");
    expect(ok.server!.version).toBeGreaterThan(fresh.version);
  });
});

describe("ServerService.RestoreServer", () => {
  it("refuses a server whose port another took while it was deleted, naming free ports, and changes nothing", async () => {
    const { client, store } = setup();
    const ports = [{ containerPort: 25565, hostPort: 25565 }];
    const { server: first } = await client.createServer({ spec: { name: "mc", image: "busybox", hostId: HOST, ports } });
    await client.deleteServer({ id: first!.id });
    // A deleted server holds no ports: the next one may take them.
    await client.createServer({ spec: { name: "mc2", image: "busybox", hostId: HOST, ports } });
    const before = store.getServer(first!.id)!;

    const refused = await client.restoreServer({ id: first!.id }).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(refused?.code).toBe(Code.FailedPrecondition);
    expect(refused?.rawMessage).toBe(`port conflict on host ${HOST}: host port 25565/tcp is used by server "mc2" (try 25566)`);
    expect(store.getServer(first!.id)).toEqual(before);
  });
});
