// The PostgreSQL engine's own risks, on the run's real server: constraint
// violations become the same typed errors (and messages) as on SQLite, a failed
// batch leaves nothing behind, concurrent writers race for real, the cluster id
// is made once per database, secrets are sealed at rest, int8 arrives as a
// number, and an unreachable or lost database is reported as Unavailable.
// General store behaviour is the contract suite's (store.contract.test.ts).
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { CommandKind, CommandSchema, ContainerInfoSchema, type ContainerInfo } from "@berth/proto/berth/v1/agent_pb.js";
import { DesiredState, Phase, Protocol, ServerSpecSchema, ServerStatusSchema, PortMappingSchema } from "@berth/proto/berth/v1/server_pb.js";
import { requirePostgres, useTestDatabase } from "../../../../test/harness/postgres-tests.js";
import { startTcpProxy } from "../../../../test/harness/tcp-proxy.js";
import { testStore } from "../../../testing/store.js";
import { initialStatus, type AlertRecord, type NewServerRecord } from "../../domain/records.js";
import { BerthError, ConflictError, PreconditionError, ServerNameTakenError, UnavailableError } from "../../errors.js";
import { openStore } from "../open.js";
import { isSealed, SecretBox, SecretKeyError } from "../secrets.js";
import type { Store, WriteOp } from "../store.js";

const provided = requirePostgres();

const HOST = "host_aaaaaaaaaaaa";
/** A time beyond 2^31: an int8 parsed as anything but a number would show. */
const T0 = 1_700_000_000_000;

function server(id: string, name: string, o: { hostPorts?: number[]; secret?: string } = {}): NewServerRecord {
  return {
    id,
    project: "default",
    name,
    hostId: HOST,
    generation: 1,
    spec: create(ServerSpecSchema, {
      name,
      hostId: HOST,
      image: "busybox",
      ports: (o.hostPorts ?? []).map((p) => create(PortMappingSchema, { hostPort: p, containerPort: 25565, protocol: Protocol.TCP })),
      ...(o.secret !== undefined ? { env: { PASSWORD: o.secret }, secretEnv: ["PASSWORD"] } : {}),
    }),
    status: initialStatus(),
    dataInitialized: false,
    lifecycle: {},
    createdAt: T0,
    updatedAt: T0,
    deletedAt: null,
    version: 1,
  };
}

const command = (id: string, serverId: string): WriteOp => ({
  op: "command.insert",
  command: create(CommandSchema, { id, serverId, kind: CommandKind.ENSURE_RUNNING }),
  hostId: HOST,
  createdAt: T0,
  deadlineAt: T0 + 60_000,
});

const failure = (p: Promise<unknown>): Promise<unknown> => p.then(() => undefined, (e: unknown) => e);

/** Resolves once `check` holds, polling (evidence, not a timer); fails with `what` after 5 s. */
async function until(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`never happened: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

const opened: Store[] = [];
afterEach(async () => {
  for (const s of opened.splice(0)) await s.close();
});

/** A store on a fresh database of `engine`, closed (and dropped) after the test. */
async function fresh(engine: "sqlite" | "postgres"): Promise<Store> {
  const s = await testStore({ engine });
  opened.push(s);
  return s;
}

describe.skipIf(!provided.url)("PostgresStore", () => {
  const db = useTestDatabase("berth_pgstore");
  const secrets = () => new SecretBox(randomBytes(32));
  /** A store on this file's database (shared by the tests: ids are unique per test). */
  async function open(url = db.url, opts: Parameters<typeof openStore>[1] = { secrets }): Promise<Store> {
    const s = await openStore(url, opts);
    opened.push(s);
    return s;
  }
  async function raw<R extends pg.QueryResultRow>(sql: string, args: unknown[] = []): Promise<R[]> {
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    try {
      return (await c.query<R>(sql, args)).rows;
    } finally {
      await c.end();
    }
  }

  it("returns int8 columns as numbers, with the override on its own pool only (pg.types is untouched)", async () => {
    const s = await open();
    const r = await s.commit([{ op: "server.insert", server: server("srv_int8", "int8") }, { op: "event.append", event: { type: "server.created", serverId: "srv_int8" }, at: T0 }]);
    const rec = (await s.getServer("srv_int8"))!;
    expect(rec.createdAt).toBe(T0);
    expect(rec.version).toBe(1);
    expect(typeof (await s.lastEventId())).toBe("number");
    expect(await s.lastEventId()).toBe(r.events[0]!.id);
    expect((await s.listNewestFirst({ project: null, limit: 1 }))[0]!.time).toBe(T0);
    expect((await s.countServersByHost()).get(HOST)).toBeTypeOf("number");
    expect(await s.observedCounts(HOST)).toEqual({ total: 0, other: 0 });
    // Other users of pg in the process still get int8 as text.
    expect(pg.types.getTypeParser(20, "text")("9007199254740993")).toBe("9007199254740993");
  });

  it("maps each constraint violation to SQLite's typed error, with SQLite's message", async () => {
    // The same scenario on both engines: every failure must be the same class and message.
    const scenario = async (s: Store) => {
      await s.commit([{ op: "server.insert", server: server("srv_c1", "taken", { hostPorts: [25565] }) }]);
      await s.commit([command("cmd_c1", "srv_c1")]);
      const errors = [
        await failure(s.commit([{ op: "server.insert", server: server("srv_c2", "taken") }])),
        await failure(s.commit([{ op: "server.insert", server: server("srv_c3", "other", { hostPorts: [25565] }) }])),
        await failure(s.commit([command("cmd_c2", "srv_c1")])),
        await failure(s.commit([{ op: "server.lifecycle", id: "srv_c1", lifecycle: { restartRequestedAt: 1 }, expectVersion: 7 }])),
      ];
      return errors.map((e) => [(e as Error).constructor.name, (e as Error).message]);
    };
    const onPostgres = await scenario(await fresh("postgres"));
    expect(onPostgres.map(([cls]) => cls)).toEqual([ServerNameTakenError.name, PreconditionError.name, ConflictError.name, ConflictError.name]);
    // The open command's id is named even though the violation aborted the transaction.
    expect(onPostgres[2]![1]).toContain("(cmd_c1)");
    expect(onPostgres).toEqual(await scenario(await fresh("sqlite")));
  });

  it("writes nothing of a failed batch, events included, and the next event is still read after the last one", async () => {
    const s = await open();
    await s.commit([{ op: "server.insert", server: server("srv_f1", "f1") }, command("cmd_f1", "srv_f1")]);
    const last = await s.lastEventId();
    let heard = 0;
    s.onCommit(() => heard++);
    const err = await failure(
      s.commit([
        { op: "server.insert", server: server("srv_f2", "f2", { hostPorts: [30000] }) },
        { op: "server.lifecycle", id: "srv_f1", lifecycle: { restartRequestedAt: 5 } },
        { op: "event.append", event: { type: "server.created", serverId: "srv_f2" }, at: T0 },
        command("cmd_f2", "srv_f1"),
      ]),
    );
    expect(err).toBeInstanceOf(ConflictError);
    expect(heard).toBe(0);
    expect(await s.getServer("srv_f2")).toBeUndefined();
    expect((await s.getServer("srv_f1"))!.version).toBe(1);
    expect(await raw("SELECT * FROM server_ports WHERE server_id = 'srv_f2'")).toEqual([]);
    expect(await s.lastEventId()).toBe(last);
    // The rolled-back batch burnt an id; the next batch's events come after it and a
    // reader at `last` sees them: a gap, never a hole that fills in later.
    const ok = await s.commit([
      { op: "event.append", event: { type: "a", serverId: "srv_f1" }, at: T0 + 1 },
      { op: "event.append", event: { type: "b", serverId: "srv_f1" }, at: T0 + 2 },
    ]);
    expect(ok.events.map((e) => [e.type, e.time])).toEqual([["a", T0 + 1], ["b", T0 + 2]]);
    expect(ok.events[0]!.id).toBeGreaterThan(last);
    expect(ok.events[1]!.id).toBeGreaterThan(ok.events[0]!.id);
    const read = await s.readForward({ project: null, afterId: last, upToId: await s.lastEventId(), limit: 10 });
    expect(read).toEqual(ok.events);
  });

  it("lets exactly one of two concurrent writers with the same expected version win, every round", async () => {
    const [a, b] = [await open(), await open()];
    await a.commit([{ op: "server.insert", server: server("srv_race", "race") }]);
    for (let round = 0; round < 20; round++) {
      const v = (await a.getServer("srv_race"))!.version;
      const results = await Promise.allSettled(
        [a, b].map((s, i) =>
          s.commit([
            { op: "server.lifecycle", id: "srv_race", lifecycle: { restartRequestedAt: round * 2 + i }, expectVersion: v },
            { op: "event.append", event: { type: "race", serverId: "srv_race" }, at: T0 },
          ]),
        ),
      );
      const won = results.filter((r) => r.status === "fulfilled");
      const lost = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
      expect(won).toHaveLength(1);
      expect(lost).toHaveLength(1);
      expect(lost[0]!.reason).toBeInstanceOf(ConflictError);
      expect((lost[0]!.reason as BerthError).code).toBe(Code.Aborted);
      expect((await a.getServer("srv_race"))!.version).toBe(v + 1);
    }
  });

  it("makes one cluster id per database, even for two managers opening it at the same moment", async () => {
    const name = `berth_pgstore_cid_${randomBytes(4).toString("hex")}`;
    await raw(`CREATE DATABASE ${name}`);
    const url = db.url.replace(/\/[^/?]+(\?|$)/, `/${name}$1`);
    try {
      // Both migrate the empty database and race for the id.
      const [a, b] = await Promise.all([open(url), open(url)]);
      const [ida, idb] = await Promise.all([a.clusterId(), b.clusterId()]);
      expect(ida).toMatch(/^mgr_/);
      expect(idb).toBe(ida);
      const c = await open(url);
      expect(await c.clusterId()).toBe(ida);
    } finally {
      for (const s of opened.splice(0)) await s.close();
      await raw(`DROP DATABASE ${name} WITH (FORCE)`);
    }
  });

  it("seals secret env values at rest, and refuses to write one without a key", async () => {
    const s = await open();
    await s.commit([{ op: "server.insert", server: server("srv_sec", "sec", { secret: "hunter2" }) }]);
    await s.commit([{ op: "server.spec", id: "srv_sec", spec: server("srv_sec", "sec", { secret: "swordfish" }).spec, generation: 2, hostId: HOST, deletedAt: null, updatedAt: T0 }]);
    const [row] = await raw<{ spec_json: string }>("SELECT spec_json FROM servers WHERE id = 'srv_sec'");
    expect(row!.spec_json).not.toContain("hunter2");
    expect(row!.spec_json).not.toContain("swordfish");
    expect(isSealed((JSON.parse(row!.spec_json) as { env: { PASSWORD: string } }).env.PASSWORD)).toBe(true);

    const keyless = await open(db.url, {});
    const err = await failure(keyless.commit([{ op: "server.insert", server: server("srv_sec2", "sec2", { secret: "x" }) }]));
    expect(err).toBeInstanceOf(SecretKeyError);
    expect(await keyless.getServer("srv_sec2")).toBeUndefined();
  });

  it("gives the secrets hook the meta table, and closes its connections when the hook throws", async () => {
    const s = await open(db.url, {
      secrets: async (meta) => {
        await meta.set("hook_probe", "seen");
        return new SecretBox(randomBytes(32));
      },
    });
    expect(await s.getMeta("hook_probe")).toBe("seen");

    const appName = `berth-hook-${randomBytes(4).toString("hex")}`;
    const url = `${db.url}${db.url.includes("?") ? "&" : "?"}application_name=${appName}`;
    const err = await failure(
      openStore(url, {
        secrets: async (meta) => {
          expect(await meta.get("hook_probe")).toBe("seen");
          throw new Error("wrong key");
        },
      }),
    );
    expect((err as Error).message).toBe("wrong key");
    await until(async () => (await raw("SELECT 1 FROM pg_stat_activity WHERE application_name = $1", [appName])).length === 0, "the failed open's connections closed");
  });

  it("waits at most lockWaitMs for the probe's lock, then reports PostgreSQL's lock timeout", async () => {
    const s = await open();
    await s.probeWrite("first", 1_000);
    expect(await s.getMeta("write_probe")).toBe("first");
    const holder = new pg.Client({ connectionString: db.url });
    await holder.connect();
    try {
      await holder.query("BEGIN");
      await holder.query("UPDATE meta SET value = 'held' WHERE key = 'write_probe'");
      const err = (await failure(s.probeWrite("second", 50))) as Error & { code?: string };
      expect(err.code).toBe("55P03");
      await holder.query("ROLLBACK");
      await s.probeWrite("third", 1_000);
      expect(await s.getMeta("write_probe")).toBe("third");
    } finally {
      await holder.end();
    }
  });

  it("closes idempotently; a closed store answers nothing", async () => {
    const s = await openStore(db.url, { secrets });
    await s.close();
    await s.close();
    await expect(s.getServer("srv_x")).rejects.toThrow();
  });

  it("fails to open an unreachable database with UnavailableError naming the URL but never its password", async () => {
    const port = await freePort();
    const err = (await failure(openStore(`postgres://berth:s3cret-pw@127.0.0.1:${port}/berth`, {}))) as Error;
    expect(err).toBeInstanceOf(UnavailableError);
    expect(err.message).toContain(`cannot open the PostgreSQL store postgres://berth:…@127.0.0.1:${port}/berth`);
    expect(err.message).toContain("ECONNREFUSED");
    expect(err.message).not.toContain("s3cret-pw");
  });

  it("answers UnavailableError while the database is unreachable, and recovers by itself after", async () => {
    const target = new URL(db.url);
    const proxy = await startTcpProxy(target.hostname, Number(target.port));
    try {
      target.host = proxy.address;
      const s = await open(target.toString());
      await s.commit([{ op: "server.insert", server: server("srv_down", "down") }]);
      proxy.cut("reset");
      const read = await failure(s.getServer("srv_down"));
      expect(read).toBeInstanceOf(UnavailableError);
      expect((read as Error).message).toMatch(/^the database is unreachable: .*; retry/);
      const write = await failure(s.commit([{ op: "server.lifecycle", id: "srv_down", lifecycle: { restartRequestedAt: 1 } }]));
      expect(write).toBeInstanceOf(UnavailableError);
      proxy.heal();
      expect((await s.getServer("srv_down"))!.version).toBe(1);
      await s.commit([{ op: "server.lifecycle", id: "srv_down", lifecycle: { restartRequestedAt: 1 } }]);
      expect((await s.getServer("srv_down"))!.version).toBe(2);
    } finally {
      for (const s of opened.splice(0)) await s.close();
      await proxy.close();
    }
  });
});

// ------------------------------------------------------------------ the same answers as SQLite

function ctr(id: string, serverId: string | null, managerId: string | null, state = "running"): ContainerInfo {
  const labels: Record<string, string> = {};
  if (serverId) labels["berth.server"] = serverId;
  if (managerId) labels["berth.manager"] = managerId;
  return create(ContainerInfoSchema, { id, name: id, image: "busybox", state, labels });
}

function alert(id: string, o: Partial<AlertRecord>): AlertRecord {
  return {
    id,
    rule: "host_offline",
    subject: `host:${HOST}`,
    project: "",
    hostId: HOST,
    serverId: "",
    severity: "warning",
    state: "firing",
    message: "m",
    firstSeen: T0,
    lastSeen: T0,
    resolvedAt: null,
    acknowledgedBy: "",
    acknowledgedAt: null,
    mutedUntil: null,
    ...o,
  };
}

/** Batches touching every table, none failing (a rolled-back batch burns an event id on PostgreSQL only). */
function parityBatches(): WriteOp[][] {
  const at = (n: number) => T0 + n * 1000;
  const srv = (id: string, name: string, project: string, created: number, ports: number[]) => ({ ...server(id, name, { hostPorts: ports }), project, createdAt: at(created), updatedAt: at(created) });
  const running = create(ServerStatusSchema, { phase: Phase.RUNNING, reason: "Started", observedGeneration: 2n });
  return [
    [
      { op: "host.insert", id: HOST, name: "h1", secretHash: "hash1", createdAt: at(0) },
      { op: "host.insert", id: "host_b", name: "h2", secretHash: "hash2", createdAt: at(0) },
      { op: "host.connected", id: HOST, facts: { hostname: "alpha", cpuCount: 4 }, at: at(1) },
      { op: "host.heartbeat", id: HOST, at: at(2), facts: { dataRootFreeBytes: 5_000_000_000 } },
      { op: "event.append", event: { type: "host.connected", hostId: HOST, actor: "system" }, at: at(1) },
    ],
    [
      { op: "server.insert", server: srv("srv_p1", "one", "default", 1, [25565]) },
      { op: "server.insert", server: srv("srv_p2", "two", "default", 1, [25566]) },
      { op: "server.insert", server: srv("srv_p3", "three", "team", 2, []) },
      { op: "server.insert", server: srv("srv_p4", "four", "team", 3, [25567]) },
      { op: "event.append", event: { type: "server.created", project: "default", serverId: "srv_p1", actor: "token:tok_a:ci" }, at: at(1) },
      { op: "event.append", event: { type: "server.created", project: "default", serverId: "srv_p2", actor: "token:tok_a" }, at: at(1) },
      { op: "event.append", event: { type: "server.created", project: "team", serverId: "srv_p3", actor: "token:tok_ab" }, at: at(2) },
    ],
    [
      { op: "server.status", id: "srv_p1", status: running, dataInitialized: true, expectVersion: 1 },
      { op: "server.spec", id: "srv_p2", spec: create(ServerSpecSchema, { name: "two", hostId: HOST, image: "busybox:2", desiredState: DesiredState.STOPPED, ports: [] }), generation: 2, hostId: HOST, deletedAt: null, updatedAt: at(4) },
      { op: "server.lifecycle", id: "srv_p3", lifecycle: { purge: { requestedAt: at(4) } } as never },
      { op: "server.spec", id: "srv_p4", spec: server("srv_p4", "four").spec, generation: 2, hostId: HOST, deletedAt: at(5), updatedAt: at(5) },
      { op: "event.append", event: { type: "server.deleted", project: "team", serverId: "srv_p4", payload: { why: "test" } }, at: at(5) },
    ],
    [
      command("cmd_p1", "srv_p1"),
      command("cmd_p2", "srv_p2"),
      { op: "command.sent", id: "cmd_p1", at: at(6) },
      { op: "command.finish", id: "cmd_p2", state: "failed", at: at(6), reason: "Boom", message: "it broke" },
      { op: "event.append", event: { type: "command.issued", serverId: "srv_p1" }, at: at(6) },
    ],
    [
      {
        op: "host.inventory",
        hostId: HOST,
        containers: [ctr("c1", "srv_p1", "mgr_me"), ctr("c2", null, null, "exited"), ctr("c3", "srv_gone", "mgr_me"), ctr("c4", "srv_p2", "mgr_other"), ctr("c5", "srv_p2", null)],
        dataDirs: [{ hostId: HOST, serverId: "srv_p1", present: true, sizeBytes: 4096, checkedAt: at(7) }, { hostId: HOST, serverId: "srv_zz", present: true, sizeBytes: 1, checkedAt: at(7) }],
        dataRootEntries: [{ name: "srv_p1", sizeBytes: 4096 }, { name: "lost+found", sizeBytes: 0 }],
        at: at(7),
      },
      { op: "container.upsert", hostId: "host_b", container: ctr("c9", "srv_p1", "mgr_me"), at: at(7) },
    ],
    [
      { op: "alert.insert", alert: alert("alr_1", {}) },
      { op: "alert.insert", alert: alert("alr_2", { rule: "server_crashloop", subject: "server:srv_p1", project: "default", serverId: "srv_p1", firstSeen: at(1), lastSeen: at(3) }) },
      { op: "alert.insert", alert: alert("alr_3", { rule: "disk_low", subject: `host:${HOST}`, firstSeen: at(2), lastSeen: at(2) }) },
      { op: "alert.resolve", id: "alr_3", at: at(8) },
      { op: "alert.mute", id: "alr_1", until: at(100) },
      { op: "alert.acknowledge", id: "alr_2", by: "token:tok_a", at: at(8) },
      { op: "alert.touch", id: "alr_1", lastSeen: at(9), message: "still", severity: "critical" },
    ],
    [
      { op: "token.insert", token: { id: "tok_a", name: "ci", role: "admin" as never, project: null, createdAt: at(1), createdBy: "", revokedAt: null, lastUsedAt: null }, secretHash: "sh_a" },
      { op: "token.insert", token: { id: "tok_b", name: "team", role: "operator" as never, project: "team", createdAt: at(1), createdBy: "tok_a", revokedAt: null, lastUsedAt: null }, secretHash: "sh_b" },
      { op: "token.revoke", id: "tok_b", at: at(9) },
      { op: "token.touch", id: "tok_a", at: at(9) },
      { op: "project.ensure", name: "other", at: at(9) },
      { op: "enrollment.insert", id: "enr_1", tokenHash: "th1", createdAt: at(1), expiresAt: at(2) },
      { op: "enrollment.insert", id: "enr_2", tokenHash: "th2", createdAt: at(1), expiresAt: at(100) },
      { op: "enrollment.use", id: "enr_2", hostId: "host_b", at: at(3) },
      { op: "meta.set", key: "k", value: "v" },
    ],
  ];
}

/** Every read of the contract, as plain data. */
async function readAll(s: Store): Promise<Record<string, unknown>> {
  const all = { project: null };
  const events = (q: Parameters<Store["listNewestFirst"]>[0]) => s.listNewestFirst(q);
  return {
    servers: await s.listServers(),
    serversDeleted: await s.listServers({ includeDeleted: true }),
    serversTeam: await s.listServers({ project: "team", includeDeleted: true }),
    serversRunning: await s.listServers({ phases: ["RUNNING", "STOPPED"] }),
    serversPage: await s.listServers({ includeDeleted: true, before: { createdAt: T0 + 2000, id: "srv_p3" }, limit: 1 }),
    server: await s.getServer("srv_p1"),
    byName: await s.findServerByName("team", "three"),
    onHost: (await s.serverIdsOnHost(HOST)).sort(),
    allIds: (await s.allServerIds()).sort(),
    byHost: [...(await s.countServersByHost())],
    placements: (await s.serverPlacements()).sort((a, b) => a.id.localeCompare(b.id)),
    facts: (await s.serverFacts()).sort((a, b) => a.id.localeCompare(b.id)),
    hosts: await s.listHosts(),
    host: await s.getHost(HOST),
    enrollment: [await s.getEnrollmentToken("th1"), await s.getEnrollmentToken("th2")],
    containers: await s.containersForServer(HOST, "srv_p2"),
    observed: await s.observedContainer(HOST, "c2"),
    orphans: await s.listOrphanCandidates("mgr_me", false),
    orphansAll: await s.listOrphanCandidates("mgr_me", true),
    counts: await s.observedCounts(HOST),
    dataDirs: [await s.getDataDir(HOST, "srv_p1"), await s.getDataDir(HOST, "srv_p2"), await s.getDataDir(HOST, "srv_zz")],
    rootEntries: [await s.listDataRootEntries(), await s.listDataRootEntries("host_b")],
    commands: [await s.getCommand("cmd_p1"), await s.openCommandForServer("srv_p1"), await s.lastFinishedCommand("srv_p2"), await s.openCommandsForHost(HOST), [...(await s.serverIdsWithOpenCommands())]],
    eventsAll: await events({ ...all, limit: 100 }),
    eventsProject: await events({ project: "default", limit: 100 }),
    eventsPrefix: await events({ ...all, typePrefix: "server.", limit: 100 }),
    eventsActor: await events({ ...all, actor: "token:tok_a", limit: 100 }),
    eventsTime: await events({ ...all, since: T0 + 1000, until: T0 + 5000, limit: 100 }),
    eventsPage: await events({ ...all, beforeId: 4, limit: 2 }),
    eventsServerHost: [await events({ ...all, serverId: "srv_p1", limit: 100 }), await events({ ...all, hostId: HOST, limit: 100 })],
    forward: await s.readForward({ ...all, afterId: 1, upToId: 5, limit: 3 }),
    eventBounds: [await s.firstEventId(), await s.lastEventId()],
    alerts: [await s.getAlert("alr_1"), await s.listFiringAlerts(), await s.latestMute("host_offline", `host:${HOST}`)],
    alertLists: [
      await s.listAlerts({ includeResolved: true, project: null, sharedRules: [], limit: 10 }),
      await s.listAlerts({ includeResolved: false, project: "default", sharedRules: [], limit: 10 }),
      await s.listAlerts({ includeResolved: true, project: "default", sharedRules: ["disk_low"], limit: 10 }),
    ],
    tokens: [await s.countTokens(), await s.findTokenBySecretHash("sh_a"), await s.getToken("tok_b"), await s.listTokens(), await s.listTokens({ project: "team" })],
    meta: await s.getMeta("k"),
  };
}

describe.skipIf(!provided.url)("PostgresStore answers as SqliteStore does", () => {
  it("gives every read the same answer after the same batches, with the same commit results", async () => {
    const engines = [await fresh("sqlite"), await fresh("postgres")];
    const results: unknown[][] = [[], []];
    for (const batch of parityBatches()) {
      for (const [i, s] of engines.entries()) {
        const r = await s.commit(batch);
        results[i]!.push({ versions: [...r.versions], events: r.events, touched: [...r.touchedServers].sort() });
      }
    }
    expect(results[1]).toEqual(results[0]);
    const [onSqlite, onPostgres] = [await readAll(engines[0]!), await readAll(engines[1]!)];
    for (const key of Object.keys(onSqlite)) expect({ [key]: onPostgres[key] }).toEqual({ [key]: onSqlite[key] });

    // Retention: the same counts, bounded by the limit.
    const prunes = async (s: Store) => [
      await s.pruneEventsOlderThan(T0 + 2000, 2),
      await s.pruneEventsBeyondCount(2, 100),
      await s.pruneFinishedCommands(T0 + 100_000, 10),
      await s.pruneEnrollmentTokens(T0 + 50_000, 1),
      await s.pruneResolvedAlerts(T0 + 100_000, 10),
    ];
    expect(await prunes(engines[1]!)).toEqual(await prunes(engines[0]!));
    expect(await readAll(engines[1]!)).toEqual(await readAll(engines[0]!));
  });
});
