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
import { CommandKind, CommandSchema } from "@berth/proto/berth/v1/agent_pb.js";
import { Protocol, ServerSpecSchema, PortMappingSchema } from "@berth/proto/berth/v1/server_pb.js";
import { requirePostgres, useTestDatabase } from "../../../../test/harness/postgres-tests.js";
import { startTcpProxy } from "../../../../test/harness/tcp-proxy.js";
import { testStore } from "../../../testing/store.js";
import { initialStatus, type NewServerRecord } from "../../domain/records.js";
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
  command: create(CommandSchema, { id, serverId, kind: CommandKind.START }),
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
