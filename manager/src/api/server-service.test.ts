import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport, type Interceptor } from "@connectrpc/connect";
import { afterEach, describe, expect, it, vi } from "vitest";
import { DesiredState, Phase, ServerService, ServerStatusSchema } from "@berth/proto/berth/v1/server_pb.js";
import { callerKey, type Caller } from "../auth/caller.js";
import { Ledger } from "../ledger/ledger.js";
import { AgentHub } from "../link/agent-hub.js";
import { createLogger } from "../log.js";
import { Reconciler } from "../reconcile/reconciler.js";
import type { Store, WriteOp } from "../store/store.js";
import { initialStatus } from "../domain/records.js";
import { newServer, testStore } from "../../testing/store.js";
import { errorInterceptor } from "./errors.js";
import { createServerService } from "./server-service.js";
import { WRITE_ATTEMPTS } from "../errors.js";

const ADMIN: Caller = { tokenId: "tok_admin", name: "admin", role: "admin", project: null };
const HOST = "host_aaaaaaaaaaaa";

const open: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of open.splice(0).reverse()) await f();
});

/**
 * ServerService over an in-memory store, with a reconciler whose host never
 * connects. `contract` wraps the store contract the service and the
 * reconciler use (to make reads fail or to slip a write in between); `store`
 * is the unwrapped contract, for reading what was stored.
 */
async function setup(opts: { contract?: (c: Store) => Store } = {}) {
  const raw = await testStore();
  const contract = opts.contract ? opts.contract(raw) : raw;
  const hub = new AgentHub();
  const ledger = new Ledger(raw);
  const unfollow = ledger.follow(raw);
  const log = createLogger("silent", "test");
  const managerId = await raw.clusterId();
  const reconciler = new Reconciler({ store: contract, hub, log, managerId, ledger });
  await raw.commit([{ op: "host.insert", id: HOST, name: "h", secretHash: "x".repeat(64), createdAt: 1 }]);
  open.push(async () => {
    reconciler.stop();
    unfollow();
    await raw.close();
  });
  const as: Interceptor = (next) => (req) => {
    req.contextValues.set(callerKey, ADMIN);
    return next(req);
  };
  const t = createRouterTransport((r) => r.service(ServerService, createServerService({ store: contract, hub, ledger, reconciler })), {
    router: { interceptors: [errorInterceptor(log), as] },
  });
  /** A server record as the reconciler would have left it, in `phase`, created at `createdAt`. */
  const insert = async (name: string, phase: Phase, createdAt: number, o: { dataInitialized?: boolean } = {}) => {
    const id = `srv_${name.padEnd(12, "a")}`;
    await raw.commit([
      {
        op: "server.insert",
        server: newServer({ id, name, hostId: HOST, status: create(ServerStatusSchema, { ...initialStatus(), phase }), dataInitialized: o.dataInitialized ?? false, at: createdAt }),
      },
    ]);
    return id;
  };
  return { store: raw, contract: raw, hub, ledger, reconciler, managerId, client: createClient(ServerService, t), insert };
}

/** The contract, with `before(ops)` run ahead of every commit (to slip in what another writer does meanwhile). */
function beforeCommit(c: Store, before: (ops: readonly WriteOp[]) => Promise<void>): Store {
  return new Proxy(c, {
    get(target, prop, receiver) {
      if (prop === "commit") return async (ops: readonly WriteOp[]) => (await before(ops), target.commit(ops));
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

const refusal = (p: Promise<unknown>) =>
  p.then(
    () => undefined,
    (e: unknown) => ConnectError.from(e),
  );

describe("ServerService.ListServers", () => {
  it("filters by phase before cutting the page: a page of one finds the running server behind newer stopped ones", async () => {
    const { client, insert } = await setup();
    const running = await insert("runner", Phase.RUNNING, 1_000);
    await insert("stoppeda", Phase.STOPPED, 2_000);
    await insert("stoppedb", Phase.STOPPED, 3_000);
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
    const { client, store } = await setup({
      contract: (c) =>
        new Proxy(c, {
          get(target, prop, receiver) {
            if (prop === "openCommandForServer" && failures > 0) {
              return async () => {
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
    await vi.waitFor(async () => expect((await store.getServer(server!.id))?.status.phase).toBe(Phase.UNKNOWN), { timeout: 4_000 });
  });

  it("the periodic resync reconciles every server without any trigger", async () => {
    const { store, contract, managerId, reconciler, insert } = await setup();
    const ids: string[] = [];
    for (const [i, n] of ["one", "two", "three"].entries()) ids.push(await insert(n, Phase.RUNNING, 1_000 + i));
    // A reconciler with a short period over the same store.
    const periodic = new Reconciler({ store: contract, hub: new AgentHub(), log: createLogger("silent", "test"), managerId, resyncIntervalMs: 300 });
    open.push(() => periodic.stop());
    void reconciler;
    periodic.startResync();
    // Each is reconciled: RUNNING recorded before, now Unknown (its host is not connected).
    await vi.waitFor(async () => expect(await Promise.all(ids.map(async (id) => (await store.getServer(id))?.status.phase))).toEqual([Phase.UNKNOWN, Phase.UNKNOWN, Phase.UNKNOWN]), { timeout: 4_000 });
  });
});

describe("ServerService.UpdateServer with expected_version", () => {
  it("a stale version answers Aborted and changes nothing; the current one updates and returns the next version", async () => {
    const { client, store, ledger } = await setup();
    const { server: created } = await client.createServer({ spec: { name: "mc", image: "busybox", hostId: HOST } });
    const read = (await client.getServer({ id: created!.id })).server!;
    expect(read.version).toBeGreaterThanOrEqual(1n);
    expect(read.version).toBe(BigInt((await store.getServer(read.id))!.version));

    // Someone else changes it after it was read.
    const other = await client.updateServer({ id: read.id, spec: { ...read.spec!, image: "alpine" } });
    expect(other.server!.version).toBeGreaterThan(read.version);
    const before = (await store.getServer(read.id))!;
    const events = (await ledger.list({ serverId: read.id })).length;

    const stale = await refusal(client.updateServer({ id: read.id, spec: { ...read.spec!, image: "nginx" }, expectedVersion: read.version }));
    expect(stale?.code).toBe(Code.Aborted);
    expect(stale?.rawMessage).toBe(`server "mc" was changed by someone else (version ${before.version}, expected ${read.version}): read it again and retry`);
    expect(await store.getServer(read.id)).toEqual(before);
    expect((await ledger.list({ serverId: read.id })).length).toBe(events);

    // Read again, retry: accepted.
    const fresh = (await client.getServer({ id: read.id })).server!;
    const ok = await client.updateServer({ id: read.id, spec: { ...fresh.spec!, image: "nginx" }, expectedVersion: fresh.version });
    expect(ok.server!.spec!.image).toBe("nginx");
    expect(ok.server!.version).toBeGreaterThan(fresh.version);
  });
});

describe("ServerService.RestoreServer", () => {
  it("refuses a server whose port another took while it was deleted, naming free ports, and changes nothing", async () => {
    const { client, store } = await setup();
    const ports = [{ containerPort: 25565, hostPort: 25565 }];
    const { server: first } = await client.createServer({ spec: { name: "mc", image: "busybox", hostId: HOST, ports } });
    await client.deleteServer({ id: first!.id });
    // A deleted server holds no ports: the next one may take them.
    await client.createServer({ spec: { name: "mc2", image: "busybox", hostId: HOST, ports } });
    const before = (await store.getServer(first!.id))!;

    const refused = await refusal(client.restoreServer({ id: first!.id }));
    expect(refused?.code).toBe(Code.FailedPrecondition);
    expect(refused?.rawMessage).toBe(`port conflict on host h: host port 25565/tcp is used by server "mc2" (try 25566)`);
    expect(await store.getServer(first!.id)).toEqual(before);
  });
});

describe("operator actions racing another writer", () => {
  /** Writes a status to `id` (as the reconciler does) right before the service's next commit that changes its spec, `times` times. */
  function reconcilerWritesFirst(id: () => string, times: number) {
    const slipped: number[] = [];
    const wrap = (c: Store) =>
      beforeCommit(c, async (ops) => {
        if (slipped.length >= times || !ops.some((o) => o.op === "server.spec" && o.id === id())) return;
        const s = (await c.getServer(id()))!;
        const r = await c.commit([{ op: "server.status", id: s.id, status: { ...s.status, message: `observed ${slipped.length + 1}` }, dataInitialized: s.dataInitialized }]);
        slipped.push(r.versions.get(s.id)!);
      });
    return { wrap, slipped };
  }

  it("a reconciler's status write between StopServer's read and its commit: the stop is decided again and accepted", async () => {
    let target = "";
    const race = reconcilerWritesFirst(() => target, 2);
    const { client, store, ledger, insert } = await setup({ contract: race.wrap });
    target = await insert("mc", Phase.RUNNING, 1_000);

    const { server } = await client.stopServer({ id: "mc", timeoutSeconds: 30 });
    expect(race.slipped).toHaveLength(2); // the first two commits lost the race
    expect(server!.spec!.desiredState).toBe(DesiredState.STOPPED);
    const rec = (await store.getServer(target))!;
    expect(rec.spec.desiredState).toBe(DesiredState.STOPPED);
    expect(rec.lifecycle.stopTimeoutSeconds).toBe(30);
    expect(rec.version).toBeGreaterThan(race.slipped[1]!);
    expect((await ledger.list({ serverId: target })).filter((e) => e.type === "server.stop_requested")).toHaveLength(1);
  });

  it("with the caller's expected_version the same race answers Aborted and writes nothing", async () => {
    let target = "";
    const race = reconcilerWritesFirst(() => target, 1);
    const { client, store, ledger, insert } = await setup({ contract: race.wrap });
    target = await insert("mc", Phase.STOPPED, 1_000);
    const read = (await client.getServer({ id: target })).server!;

    const err = await refusal(client.updateServer({ id: target, spec: { ...read.spec!, image: "alpine" }, expectedVersion: read.version }));
    expect(err?.code).toBe(Code.Aborted);
    expect(err?.rawMessage).toMatch(/was changed by someone else .*read it again and retry/);
    expect((await store.getServer(target))!.spec.image).toBe("busybox");
    expect((await ledger.list({ serverId: target })).filter((e) => e.type === "server.updated")).toHaveLength(0);
  });

  it("a record that keeps changing under the call: Aborted after a few attempts, saying to retry", async () => {
    let target = "";
    const race = reconcilerWritesFirst(() => target, Infinity);
    const { client, store, insert } = await setup({ contract: race.wrap });
    target = await insert("mc", Phase.STOPPED, 1_000);

    const err = await refusal(client.startServer({ id: target }));
    expect(err?.code).toBe(Code.Aborted);
    expect(err?.rawMessage).toMatch(/read it again and retry/);
    expect(race.slipped).toHaveLength(WRITE_ATTEMPTS);
    expect((await store.getServer(target))!.spec.desiredState).not.toBe(DesiredState.RUNNING);
  });
});

describe("ServerService.StartServer of a server whose data directory is gone", () => {
  it("refuses without allow_empty_data; with it, the start and the reset of the data flag are one write", async () => {
    const { client, contract, store, insert } = await setup();
    const id = await insert("mc", Phase.MISSING, 1_000, { dataInitialized: true });
    await contract.commit([{ op: "dataDir.upsert", dataDir: { hostId: HOST, serverId: id, present: false, sizeBytes: 0, checkedAt: 1 } }]);

    const err = await refusal(client.startServer({ id }));
    expect(err?.code).toBe(Code.FailedPrecondition);
    expect(err?.rawMessage).toMatch(/data directory of "mc" is gone .*allow_empty_data=true/);
    expect((await store.getServer(id))!.dataInitialized).toBe(true);

    const { server } = await client.startServer({ id, allowEmptyData: true });
    expect(server!.spec!.desiredState).toBe(DesiredState.RUNNING);
    expect((await store.getServer(id))!.dataInitialized).toBe(false);
  });
});

describe("ServerService.CreateServer, two at once", () => {
  it("with one name: one is created, the other answers AlreadyExists (checks interleave at their reads; the database's unique name is the backstop)", async () => {
    const { client, store } = await setup();
    const spec = { name: "mc", image: "busybox", hostId: HOST, ports: [{ containerPort: 25565, hostPort: 25565 }] };
    const answers = await Promise.all([refusal(client.createServer({ spec })), refusal(client.createServer({ spec: { ...spec, ports: [] } }))]);
    expect(answers.map((e) => (e ? Code[e.code] : "OK")).sort()).toEqual(["AlreadyExists", "OK"]);
    expect((await store.listServers({})).map((s) => s.name)).toEqual(["mc"]);
  });

  it("with one host port: one is created, the other answers FailedPrecondition naming the port", async () => {
    const { client, store } = await setup();
    const ports = [{ containerPort: 25565, hostPort: 25565 }];
    const answers = await Promise.all(["a", "b"].map((name) => refusal(client.createServer({ spec: { name, image: "busybox", hostId: HOST, ports } }))));
    expect(answers.map((e) => (e ? Code[e.code] : "OK")).sort()).toEqual(["FailedPrecondition", "OK"]);
    expect(answers.find((e) => e)?.rawMessage).toMatch(/25565/);
    expect(await store.listServers({})).toHaveLength(1);
  });
});
