/**
 * The store contract (store.ts), through the contract only: what every engine
 * must do, run against the engine testStore() opens (BERTH_TEST_STORE=sqlite|postgres).
 *
 * This file: atomic batches and their typed errors, server records, optimistic
 * concurrency, and the invariants the database holds whichever manager writes
 * (one open command per server, a host port held by one server per host, unique
 * names per project). Observations and hosts: observations.contract.test.ts;
 * events, alerts, tokens, retention: ledger.contract.test.ts.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { CommandKind, CommandSchema, ContainerInfoSchema, type Command, type ContainerInfo } from "@berth/proto/berth/v1/agent_pb.js";
import { DesiredState, Phase, PortMappingSchema, Protocol, ServerStatusSchema, type PortMapping } from "@berth/proto/berth/v1/server_pb.js";
import { initialStatus, type AlertRecord, type TokenRecord } from "../domain/records.js";
import { findPortConflicts } from "../domain/port-conflicts.js";
import { AlreadyExistsError, BerthError, ConflictError, NotFoundError, PreconditionError, ServerNameTakenError } from "../errors.js";
import { expectTyped, newServer, rejection, testStore } from "../../testing/store.js";
import { isSealed } from "./secrets.js";
import type { Committed, IdPage, Store, WriteOp } from "./store.js";
import { readPages } from "./pages.js";

const HOST = "host_a";
let store: Store;
beforeEach(async () => {
  store = await testStore();
});
afterEach(() => store.close());

const tcp = (hostPort: number, protocol = Protocol.TCP, containerPort = hostPort): PortMapping => create(PortMappingSchema, { hostPort, containerPort, protocol });
const udp = (hostPort: number): PortMapping => tcp(hostPort, Protocol.UDP);
const command = (id: string, serverId: string, kind = CommandKind.ENSURE_RUNNING): Command => create(CommandSchema, { id, serverId, kind });
const ctr = (id: string, serverId: string): ContainerInfo => create(ContainerInfoSchema, { id, name: id, image: "busybox", state: "running", labels: { "berth.server": serverId, "berth.manager": "mgr_me" } });

function alert(id: string, o: Partial<AlertRecord> = {}): AlertRecord {
  return { id, rule: "host_offline", subject: `host:${HOST}`, project: "", hostId: HOST, serverId: "", severity: "warning", state: "firing", message: "offline", firstSeen: 1, lastSeen: 1, resolvedAt: null, acknowledgedBy: "", acknowledgedAt: null, mutedUntil: null, ...o };
}
function token(id: string, o: Partial<TokenRecord> = {}): TokenRecord {
  return { id, name: id, role: "viewer", project: "p", createdAt: 1, createdBy: "test", revokedAt: null, lastUsedAt: null, ...o };
}

const insert = (...o: Parameters<typeof newServer>): WriteOp => ({ op: "server.insert", server: newServer(...o) });
const cmdInsert = (id: string, serverId: string, createdAt = 1): WriteOp => ({ op: "command.insert", command: command(id, serverId), hostId: HOST, createdAt, deadlineAt: createdAt + 1000 });
const finish = (id: string, at: number, state: "succeeded" | "failed" | "expired" = "succeeded"): WriteOp => ({ op: "command.finish", id, state, at, reason: "", message: "" });

describe("commit: one atomic batch", () => {
  it("applies every operation, events after the rest, and reports versions, events and touched servers", async () => {
    const heard: Committed[] = [];
    store.onCommit((c) => heard.push(c));
    const r = await store.commit([
      // Listed first, applied last: the event explains the insert.
      { op: "event.append", event: { type: "server.created", project: "default", serverId: "srv_a", actor: "token:tok_1", payload: { n: 1 } }, at: 5 },
      insert({ id: "srv_a", hostId: HOST }),
      { op: "container.upsert", hostId: HOST, container: ctr("c1", "srv_a"), at: 5 },
      { op: "event.append", event: { type: "server.observed", serverId: "srv_a" }, at: 6 },
    ]);
    expect(r.versions).toEqual(new Map([["srv_a", 1]]));
    expect([...r.touchedServers]).toEqual(["srv_a"]);
    expect(r.events.map((e) => [e.type, e.time, e.project, e.serverId, e.actor, e.payloadJson])).toEqual([
      ["server.created", 5, "default", "srv_a", "token:tok_1", '{"n":1}'],
      ["server.observed", 6, "", "srv_a", "", "{}"],
    ]);
    expect(r.events[1]!.id).toBeGreaterThan(r.events[0]!.id);
    // The ids handed back are the ledger's.
    expect(await store.listNewestFirst({ project: null, limit: 10 })).toEqual([...r.events].reverse());
    expect(await store.lastEventId()).toBe(r.events[1]!.id);
    expect((await store.getServer("srv_a"))?.version).toBe(1);

    expect(heard).toHaveLength(1);
    expect(heard[0]!.events).toEqual(r.events);
    expect([...heard[0]!.serverIds]).toEqual(["srv_a"]);
    expect([...heard[0]!.hostIds]).toEqual([HOST]);
  });

  it("a batch sees its own earlier writes: an insert and its command, two writes of one server", async () => {
    const r = await store.commit([
      insert({ id: "srv_a", hostId: HOST }),
      { op: "server.lifecycle", id: "srv_a", lifecycle: { restartRequestedAt: 2 }, expectVersion: 1 },
      { op: "server.status", id: "srv_a", status: create(ServerStatusSchema, { phase: Phase.STARTING }), dataInitialized: true, expectVersion: 2 },
      cmdInsert("cmd_1", "srv_a"),
    ]);
    expect(r.versions.get("srv_a")).toBe(3);
    const s = (await store.getServer("srv_a"))!;
    expect([s.version, s.lifecycle.restartRequestedAt, s.status.phase, s.dataInitialized]).toEqual([3, 2, Phase.STARTING, true]);
    expect((await store.openCommandForServer("srv_a"))?.id).toBe("cmd_1");
  });

  it("an unsubscribed listener hears nothing more; one that throws does not fail the commit nor deafen the others", async () => {
    const heard: string[] = [];
    const off = store.onCommit(() => heard.push("first"));
    store.onCommit(() => {
      throw new Error("a listener's bug");
    });
    store.onCommit((c) => heard.push(c.events.map((e) => e.type).join()));
    await store.commit([{ op: "event.append", event: { type: "a" }, at: 1 }]);
    off();
    await store.commit([{ op: "event.append", event: { type: "b" }, at: 2 }]);
    expect(heard).toEqual(["first", "a", "b"]);
    expect(await store.lastEventId()).toBeGreaterThan(0);
  });

  it("an empty batch commits nothing and resolves empty", async () => {
    const r = await store.commit([]);
    expect([r.versions.size, r.events.length, r.touchedServers.size]).toEqual([0, 0, 0]);
    expect(await store.lastEventId()).toBe(0);
  });

  it("listeners hear each of many concurrent batches once, after it is readable; the ledger keeps each batch's events together", async () => {
    const heard: number[][] = [];
    const visible: Promise<number>[] = [];
    store.onCommit((c) => {
      heard.push(c.events.map((e) => e.id));
      visible.push(store.lastEventId());
    });
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        store.commit([
          { op: "event.append", event: { type: "t", message: `${i}a` }, at: i },
          { op: "event.append", event: { type: "t", message: `${i}b` }, at: i },
        ]),
      ),
    );
    // Heard as committed, each batch once. Not necessarily in id order: on PostgreSQL the
    // COMMITs of concurrent batches return in any order. Watches do not rely on it: they read
    // the ledger forward up to lastEventId() (api/event-service.ts), and the listeners only wake them.
    expect(heard.map((ids) => ids.join()).sort()).toEqual(results.map((r) => r.events.map((e) => e.id).join()).sort());
    // A batch's events are in the ledger by the time its listeners hear it.
    const seen = await Promise.all(visible);
    heard.forEach((ids, i) => expect(seen[i]!).toBeGreaterThanOrEqual(ids[1]!));
    // A batch's events are consecutive in the ledger: no other batch's between them.
    const ledger = await store.readForward({ project: null, afterId: 0, upToId: 1e12, limit: 100 });
    expect(ledger).toHaveLength(40);
    for (let i = 0; i < ledger.length; i += 2) expect(ledger[i + 1]!.message).toBe(ledger[i]!.message.replace("a", "b"));
  });

  describe("a refused batch writes nothing: no record, no event, no command, and tells no listener", () => {
    /**
     * Writes of every kind, to put before (and after) the failing operation:
     * none may survive the refusal.
     */
    const probe = (): WriteOp[] => [
      insert({ id: "srv_probe", hostId: HOST, spec: { ports: [tcp(9999)] } }),
      cmdInsert("cmd_probe", "srv_probe"),
      { op: "container.upsert", hostId: HOST, container: ctr("c_probe", "srv_probe"), at: 1 },
      { op: "dataDir.upsert", dataDir: { hostId: HOST, serverId: "srv_probe", present: true, sizeBytes: 1, checkedAt: 1 } },
      { op: "host.insert", id: "host_probe", name: "probe", secretHash: "probe", createdAt: 1 },
      { op: "enrollment.insert", id: "enr_probe", tokenHash: "enr-probe", createdAt: 1, expiresAt: 1000 },
      { op: "alert.insert", alert: alert("alr_probe", { rule: "probe", subject: "probe" }) },
      { op: "token.insert", token: token("tok_probe"), secretHash: "tok-probe" },
      { op: "meta.set", key: "probe", value: "1" },
      { op: "event.append", event: { type: "probe.written", serverId: "srv_probe" }, at: 1 },
    ];

    async function expectNoProbe(lastEvent: number): Promise<void> {
      expect(await store.getServer("srv_probe")).toBeUndefined();
      expect(await store.getCommand("cmd_probe")).toBeUndefined();
      expect(await store.observedContainer(HOST, "c_probe")).toBeUndefined();
      expect(await store.getDataDir(HOST, "srv_probe")).toBeUndefined();
      expect(await store.getHost("host_probe")).toBeUndefined();
      expect(await store.getEnrollmentToken("enr-probe")).toBeUndefined();
      expect(await store.getAlert("alr_probe")).toBeUndefined();
      expect(await store.getToken("tok_probe")).toBeUndefined();
      expect(await store.getMeta("probe")).toBeUndefined();
      expect(await store.lastEventId()).toBe(lastEvent);
      // Neither the name nor the port of the probe server is held.
      await store.commit([insert({ id: "srv_probe2", name: "srv_probe", hostId: HOST, spec: { ports: [tcp(9999)] } })]);
    }

    const cases: { name: string; setup: WriteOp[]; failing: WriteOp; cls: abstract new (...a: never[]) => BerthError; code: Code }[] = [
      {
        name: "a stale expected version",
        setup: [insert({ id: "srv_a", hostId: HOST }), { op: "server.lifecycle", id: "srv_a", lifecycle: { restartRequestedAt: 1 } }],
        failing: { op: "server.lifecycle", id: "srv_a", lifecycle: {}, expectVersion: 1 },
        cls: ConflictError,
        code: Code.Aborted,
      },
      {
        name: "a stale version check",
        setup: [insert({ id: "srv_a", hostId: HOST }), { op: "server.lifecycle", id: "srv_a", lifecycle: { restartRequestedAt: 1 } }],
        failing: { op: "server.check", id: "srv_a", expectVersion: 1 },
        cls: ConflictError,
        code: Code.Aborted,
      },
      { name: "a write of a server that is not there", setup: [], failing: { op: "server.status", id: "srv_none", status: initialStatus(), dataInitialized: false }, cls: NotFoundError, code: Code.NotFound },
      { name: "a delete of a server already gone", setup: [], failing: { op: "server.delete", id: "srv_none" }, cls: NotFoundError, code: Code.NotFound },
      { name: "a name taken in the project", setup: [insert({ id: "srv_a", name: "web", hostId: HOST })], failing: insert({ id: "srv_b", name: "web", hostId: "host_b" }), cls: ServerNameTakenError, code: Code.AlreadyExists },
      {
        name: "a host port taken",
        setup: [insert({ id: "srv_a", hostId: HOST, spec: { ports: [tcp(25565)] } })],
        failing: insert({ id: "srv_b", hostId: HOST, spec: { ports: [tcp(25565)] } }),
        cls: PreconditionError,
        code: Code.FailedPrecondition,
      },
      { name: "a second open command", setup: [insert({ id: "srv_a", hostId: HOST }), cmdInsert("cmd_1", "srv_a")], failing: cmdInsert("cmd_2", "srv_a", 2), cls: ConflictError, code: Code.Aborted },
      { name: "finishing a command no longer open", setup: [insert({ id: "srv_a", hostId: HOST }), cmdInsert("cmd_1", "srv_a"), finish("cmd_1", 2)], failing: finish("cmd_1", 3, "failed"), cls: ConflictError, code: Code.Aborted },
      {
        name: "an enrollment token used already",
        setup: [{ op: "enrollment.insert", id: "enr_1", tokenHash: "h1", createdAt: 1, expiresAt: 1000 }, { op: "enrollment.use", id: "enr_1", hostId: "host_x", at: 2 }],
        failing: { op: "enrollment.use", id: "enr_1", hostId: "host_y", at: 3 },
        cls: ConflictError,
        code: Code.Aborted,
      },
      { name: "resolving an alert no longer firing", setup: [{ op: "alert.insert", alert: alert("alr_1") }, { op: "alert.resolve", id: "alr_1", at: 2 }], failing: { op: "alert.resolve", id: "alr_1", at: 3 }, cls: ConflictError, code: Code.Aborted },
      { name: "revoking a token that does not exist", setup: [], failing: { op: "token.revoke", id: "tok_none", at: 1 }, cls: NotFoundError, code: Code.NotFound },
      { name: "removing a host that does not exist", setup: [], failing: { op: "host.remove", id: "host_none", at: 1 }, cls: NotFoundError, code: Code.NotFound },
    ];

    for (const c of cases) {
      it(`${c.name}: ${c.cls.name} (${Code[c.code]})`, async () => {
        if (c.setup.length) await store.commit(c.setup);
        const servers = await store.listServers({ includeDeleted: true });
        const lastEvent = await store.lastEventId();
        let heard = 0;
        store.onCommit(() => heard++);
        // The failing operation after writes of every kind, and before them.
        expectTyped(await rejection(store.commit([...probe(), c.failing])), c.cls, c.code);
        expectTyped(await rejection(store.commit([c.failing, ...probe()])), c.cls, c.code);
        expect(heard).toBe(0);
        expect(await store.listServers({ includeDeleted: true })).toEqual(servers);
        await expectNoProbe(lastEvent);
      });
    }
  });
});

describe("server records", () => {
  it("round-trip, found by id and by name within their project", async () => {
    const rec = newServer({
      id: "srv_rt",
      name: "rt",
      hostId: HOST,
      generation: 7,
      dataInitialized: true,
      lifecycle: { stopTimeoutSeconds: 30, restartRequestedAt: 11, lastExit: { cause: "crash", at: 12, exitCode: 137 }, crashTimes: [1, 2] },
      status: create(ServerStatusSchema, { phase: Phase.RUNNING, reason: "Running", observedGeneration: 7n }),
      spec: { desiredState: DesiredState.RUNNING, env: { A: "1" }, ports: [tcp(25565)], dataMountPath: "/data" },
      createdAt: 3,
      updatedAt: 4,
      deletedAt: 5,
    });
    await store.commit([{ op: "server.insert", server: rec }]);
    expect(await store.getServer("srv_rt")).toEqual({ ...rec, version: 1 });
    expect((await store.findServerByName("default", "rt"))?.id).toBe("srv_rt");
    expect(await store.findServerByName("other", "rt")).toBeUndefined();
    expect(await store.getServer("srv_none")).toBeUndefined();
    expect(await store.serverHostId("srv_rt")).toBe(rec.hostId);
    expect(await store.serverHostId("srv_none")).toBeUndefined();
  });

  it("keep secret env values sealed in the database: a reader gets the sealed value, never the plaintext", async () => {
    await store.commit([insert({ id: "srv_s", hostId: HOST, spec: { env: { PASSWORD: "hunter2", PLAIN: "x" }, secretEnv: ["PASSWORD"] } })]);
    const s = (await store.getServer("srv_s"))!;
    expect(s.spec.env.PLAIN).toBe("x");
    expect(s.spec.env.PASSWORD).not.toContain("hunter2");
    expect(isSealed(s.spec.env.PASSWORD!)).toBe(true);
  });

  it("listServers: newest first (ties by id), filters, and keyset pages without gaps or duplicates", async () => {
    const ops: WriteOp[] = [];
    for (let i = 0; i < 25; i++) {
      // Groups of up to 4 servers share a creation time; ids not in creation order.
      ops.push(insert({ id: `srv_${String.fromCharCode(97 + ((i * 7) % 26))}${i}`, name: `s${i}`, hostId: i % 3 ? HOST : "host_b", at: 100 + Math.floor(i / 4) }));
    }
    ops.push(insert({ id: "srv_deleted", name: "gone", hostId: HOST, at: 102, deletedAt: 200 }));
    ops.push(insert({ id: "srv_other", name: "other", project: "p2", hostId: HOST, at: 102 }));
    ops.push(insert({ id: "srv_running", name: "running", project: "p2", hostId: HOST, at: 1, status: create(ServerStatusSchema, { phase: Phase.RUNNING }) }));
    await store.commit(ops);

    const all = await store.listServers({ project: "default" });
    expect(all).toHaveLength(25);
    for (let i = 1; i < all.length; i++) {
      const [a, b] = [all[i - 1]!, all[i]!];
      expect(a.createdAt > b.createdAt || (a.createdAt === b.createdAt && a.id > b.id), `${a.id} before ${b.id}`).toBe(true);
    }
    const expected = all.map((s) => s.id);
    for (const limit of [1, 4, 7, 25, 30]) {
      const seen: string[] = [];
      let before: { createdAt: number; id: string } | undefined;
      for (let guard = 0; guard < 100; guard++) {
        const page = await store.listServers({ project: "default", before, limit });
        if (page.length === 0) break;
        expect(page.length).toBeLessThanOrEqual(limit);
        seen.push(...page.map((s) => s.id));
        before = { createdAt: page.at(-1)!.createdAt, id: page.at(-1)!.id };
      }
      expect(seen, `page size ${limit}`).toEqual(expected);
    }

    expect((await store.listServers({ project: "default", includeDeleted: true })).map((s) => s.id)).toContain("srv_deleted");
    expect((await store.listServers()).map((s) => s.id).sort()).toEqual([...expected, "srv_other", "srv_running"].sort());
    expect((await store.listServers({ hostId: "host_b" })).every((s) => s.hostId === "host_b")).toBe(true);
    expect(await store.listServers({ hostId: "host_b" })).toHaveLength(9);
    expect((await store.listServers({ phases: ["RUNNING"] })).map((s) => s.id)).toEqual(["srv_running"]);
    // Phases filter before the limit.
    expect((await store.listServers({ phases: ["RUNNING"], limit: 1 })).map((s) => s.id)).toEqual(["srv_running"]);
    expect(await store.listServers({ project: "nobody" })).toEqual([]);
  });

  it("spec and status writes change only their own fields", async () => {
    await store.commit([insert({ id: "srv_u", hostId: HOST, at: 9 })]);
    await store.commit([{ op: "server.status", id: "srv_u", status: create(ServerStatusSchema, { phase: Phase.STOPPED, reason: "Stopped" }), dataInitialized: true }]);
    const s1 = (await store.getServer("srv_u"))!;
    expect([s1.status.phase, s1.status.reason, s1.dataInitialized, s1.generation, s1.updatedAt, s1.spec.image]).toEqual([Phase.STOPPED, "Stopped", true, 1, 9, "busybox"]);
    await store.commit([{ op: "server.spec", id: "srv_u", spec: { ...s1.spec, image: "alpine" }, generation: 2, hostId: HOST, deletedAt: null, updatedAt: 20 }]);
    const s2 = (await store.getServer("srv_u"))!;
    expect([s2.spec.image, s2.generation, s2.updatedAt, s2.status.phase, s2.dataInitialized, s2.lifecycle]).toEqual(["alpine", 2, 20, Phase.STOPPED, true, {}]);
    await store.commit([{ op: "server.resetDataInitialized", id: "srv_u" }]);
    const s3 = (await store.getServer("srv_u"))!;
    expect([s3.dataInitialized, s3.status.phase, s3.spec.image]).toEqual([false, Phase.STOPPED, "alpine"]);
  });

  it("allocation per host: the limits of the servers not deleted, summed by the database; a server without limits counts 0", async () => {
    const GiB = 1024n ** 3n;
    await store.commit([
      insert({ id: "srv_1", hostId: HOST, spec: { resources: { cpus: 1.5, memoryBytes: 2n * GiB } } }),
      insert({ id: "srv_2", hostId: HOST, spec: { resources: { cpus: 0.25 } } }),
      insert({ id: "srv_3", hostId: HOST }),
      insert({ id: "srv_4", hostId: HOST, deletedAt: 5, spec: { resources: { cpus: 4, memoryBytes: 4n * GiB } } }),
      insert({ id: "srv_5", hostId: "host_b", spec: { resources: { memoryBytes: 3n * GiB + 1n } } }),
    ]);
    expect(await store.allocationByHost()).toEqual(
      new Map([
        [HOST, { servers: 3, cpus: 1.75, memoryBytes: Number(2n * GiB) }],
        ["host_b", { servers: 1, cpus: 0, memoryBytes: Number(3n * GiB + 1n) }],
      ]),
    );
  });

  it("listServers by labels: every pair must match, in the query (before the limit); keys with '.', '/' and an empty value", async () => {
    await store.commit([
      insert({ id: "srv_1", hostId: HOST, at: 1, spec: { labels: { tier: "prod", "example.com/game": "mc-1.20" } } }),
      insert({ id: "srv_2", hostId: HOST, at: 2, spec: { labels: { tier: "prod", canary: "" } } }),
      insert({ id: "srv_3", hostId: HOST, at: 3, spec: { labels: { tier: "dev" } } }),
      insert({ id: "srv_4", hostId: HOST, at: 4 }),
      insert({ id: "srv_5", hostId: HOST, at: 5, deletedAt: 6, spec: { labels: { tier: "prod" } } }),
    ]);
    const ids = async (labels: Record<string, string>, more: { limit?: number; includeDeleted?: boolean } = {}) => (await store.listServers({ labels, ...more })).map((s) => s.id);
    expect(await ids({ tier: "prod" })).toEqual(["srv_2", "srv_1"]);
    expect(await ids({ tier: "prod" }, { includeDeleted: true })).toEqual(["srv_5", "srv_2", "srv_1"]);
    expect(await ids({ tier: "prod" }, { limit: 1 })).toEqual(["srv_2"]);
    expect(await ids({ tier: "prod", "example.com/game": "mc-1.20" })).toEqual(["srv_1"]);
    expect(await ids({ canary: "" })).toEqual(["srv_2"]);
    expect(await ids({ tier: "staging" })).toEqual([]);
    expect(await ids({ nope: "" })).toEqual([]);
    expect(await ids({})).toEqual(["srv_4", "srv_3", "srv_2", "srv_1"]);
  });

  it("server sets: ids on a host include soft-deleted ones, counts per host do not; placements and facts", async () => {
    await store.commit([
      insert({ id: "srv_1", hostId: HOST, at: 1, spec: { image: "img:1", desiredState: DesiredState.RUNNING } }),
      insert({ id: "srv_2", hostId: HOST, deletedAt: 5, lifecycle: { adoptedContainerId: "c_adopted" } }),
      insert({ id: "srv_3", hostId: "host_b", project: "p2", lifecycle: { purge: { requestedAt: 1, removeData: false } }, status: create(ServerStatusSchema, { phase: Phase.FAILED, reason: "CrashLoop", observedGeneration: 1n }) }),
    ]);
    expect((await store.serverIdsOnHost(HOST)).sort()).toEqual(["srv_1", "srv_2"]);
    expect((await store.allServerIds()).sort()).toEqual(["srv_1", "srv_2", "srv_3"]);
    expect(await store.countServersByHost()).toEqual(new Map([[HOST, 1], ["host_b", 1]]));
    const placements = (await store.serverPlacements()).sort((a, b) => a.id.localeCompare(b.id));
    expect(placements).toEqual([
      { id: "srv_1", project: "default", name: "srv_1", hostId: HOST, image: "img:1", createdAt: 1 },
      { id: "srv_2", project: "default", name: "srv_2", hostId: HOST, image: "busybox", createdAt: 1, adoptedContainerId: "c_adopted" },
      { id: "srv_3", project: "p2", name: "srv_3", hostId: "host_b", image: "busybox", createdAt: 1 },
    ]);
    const facts = (await store.serverFacts()).sort((a, b) => a.id.localeCompare(b.id));
    expect(facts.map((f) => f.id)).toEqual(["srv_1", "srv_3"]);
    expect(facts[1]).toEqual({ id: "srv_3", name: "srv_3", project: "p2", hostId: "host_b", generation: 1, phase: "FAILED", desiredState: facts[1]!.desiredState, reason: "CrashLoop", observedGeneration: 1, purging: true, recentCrashes: 0, lastKnownPhase: "", lastKnownReason: "", diskQuotaBytes: 0, dataSizeBytes: 0 });
    expect(facts[0]).toMatchObject({ phase: "UNSPECIFIED", reason: "", observedGeneration: 0, purging: false });
    // A host away: what was seen before, and the crashes towards a loop, as the alert rules read them.
    await store.commit([
      insert({
        id: "srv_5",
        hostId: "host_b",
        status: create(ServerStatusSchema, { phase: Phase.UNKNOWN, reason: "HostOffline", lastKnownPhase: Phase.FAILED, lastKnownReason: "CrashLoop", crash: { recent: 3, limit: 5 } }),
      }),
    ]);
    expect((await store.serverFacts()).find((f) => f.id === "srv_5")).toMatchObject({ phase: "UNKNOWN", recentCrashes: 3, lastKnownPhase: "FAILED", lastKnownReason: "CrashLoop" });
    // The disk quota and the data size as measured, for the disk_quota rule.
    await store.commit([insert({ id: "srv_6", hostId: "host_b", spec: { resources: { diskQuotaBytes: 5_000_000n } }, status: create(ServerStatusSchema, { dataSizeBytes: 6_000_000n }) })]);
    expect((await store.serverFacts()).find((f) => f.id === "srv_6")).toMatchObject({ diskQuotaBytes: 5_000_000, dataSizeBytes: 6_000_000 });
    await store.commit([{ op: "server.delete", id: "srv_6" }]);
    await store.commit([{ op: "server.delete", id: "srv_5" }]);
    // The desired state as the spec stores it: its JSON name or number.
    expect(["DESIRED_STATE_RUNNING", DesiredState.RUNNING]).toContain(facts[0]!.desiredState);
    // Counted like the facts: soft-deleted ones are not.
    await store.commit([insert({ id: "srv_4", hostId: "host_b", project: "p2", status: create(ServerStatusSchema, { phase: Phase.FAILED, reason: "Exited" }) })]);
    expect(await store.serverCounts()).toEqual([
      { project: "default", phase: "UNSPECIFIED", count: 1 },
      { project: "p2", phase: "FAILED", count: 2 },
    ]);
  });

  it("placements and facts in pages: id order, at most the limit, after the given id; readPages reads them all", async () => {
    const ids = Array.from({ length: 7 }, (_, i) => `srv_p${i}`);
    // Inserted out of id order: the pages are in id order anyway.
    await store.commit([...ids].reverse().map((id) => insert({ id, hostId: HOST })));
    expect((await store.serverPlacements({ after: "", limit: 3 })).map((p) => p.id)).toEqual(ids.slice(0, 3));
    expect((await store.serverPlacements({ after: "srv_p2", limit: 3 })).map((p) => p.id)).toEqual(ids.slice(3, 6));
    expect((await store.serverFacts({ after: "srv_p5", limit: 3 })).map((f) => f.id)).toEqual(ids.slice(6));
    const reads: IdPage[] = [];
    const all = await readPages((page) => {
      reads.push(page);
      return store.serverFacts(page);
    }, 3);
    expect(all.map((f) => f.id)).toEqual(ids);
    expect(reads).toEqual([{ after: "", limit: 3 }, { after: "srv_p2", limit: 3 }, { after: "srv_p5", limit: 3 }]);
  });

  it("delete takes the record, its commands (open and finished), data directory check and ports with it; others stay", async () => {
    await store.commit([
      insert({ id: "srv_gone", hostId: HOST, spec: { ports: [tcp(25565)] } }),
      insert({ id: "srv_kept", hostId: HOST }),
      cmdInsert("cmd_done", "srv_gone"),
      finish("cmd_done", 2),
      cmdInsert("cmd_open", "srv_gone", 3),
      cmdInsert("cmd_other", "srv_kept"),
      { op: "dataDir.upsert", dataDir: { hostId: HOST, serverId: "srv_gone", present: true, sizeBytes: 5, checkedAt: 1 } },
    ]);
    const r = await store.commit([{ op: "server.delete", id: "srv_gone" }]);
    expect(r.versions.has("srv_gone")).toBe(false);
    expect(await store.getServer("srv_gone")).toBeUndefined();
    expect(await store.findServerByName("default", "srv_gone")).toBeUndefined();
    expect(await store.getCommand("cmd_done")).toBeUndefined();
    expect(await store.getCommand("cmd_open")).toBeUndefined();
    expect(await store.getDataDir(HOST, "srv_gone")).toBeUndefined();
    expect((await store.openCommandsForHost(HOST)).map((c) => c.id)).toEqual(["cmd_other"]);
    // Its name and port are free again.
    await store.commit([insert({ id: "srv_new", name: "srv_gone", hostId: HOST, spec: { ports: [tcp(25565)] } })]);
  });

  it("a duplicate id is refused and writes nothing", async () => {
    await store.commit([insert({ id: "srv_1", name: "one", hostId: HOST })]);
    expect(await rejection(store.commit([insert({ id: "srv_1", name: "other", hostId: HOST }), { op: "event.append", event: { type: "x" }, at: 1 }]))).toBeDefined();
    expect((await store.getServer("srv_1"))?.name).toBe("one");
    expect(await store.findServerByName("default", "other")).toBeUndefined();
    expect(await store.lastEventId()).toBe(0);
  });
});

describe("values round-trip at their real sizes", () => {
  // Times are ms since the epoch (beyond 32 bits), sizes reach terabytes, counts are numbers:
  // an engine whose driver hands back 64-bit integers as strings or bigints must convert them.
  const T = 1_764_000_000_000;
  const TB = 5 * 2 ** 40;

  it("times, sizes and counts read back as the numbers written", async () => {
    await store.commit([
      { op: "host.insert", id: HOST, name: "ä höst ✓", secretHash: "sh", createdAt: T },
      { op: "host.connected", id: HOST, facts: { hostname: "ä höst ✓", memoryBytes: TB, dataRootFreeBytes: TB + 1, cpuCount: 64 }, at: T + 1 },
      insert({ id: "srv_big", name: "名前 'quoted' \"x\"", hostId: HOST, at: T, deletedAt: null, lifecycle: { restartRequestedAt: T + 2, crashTimes: [T, T + 1] } }),
      { op: "command.insert", command: command("cmd_big", "srv_big"), hostId: HOST, createdAt: T + 3, deadlineAt: T + 3 + 600_000 },
      { op: "command.sent", id: "cmd_big", at: T + 4 },
      { op: "dataDir.upsert", dataDir: { hostId: HOST, serverId: "srv_big", present: true, sizeBytes: TB, checkedAt: T + 5 } },
      { op: "container.upsert", hostId: HOST, container: ctr("c_big", "srv_big"), at: T + 6 },
      { op: "enrollment.insert", id: "enr_big", tokenHash: "eh", createdAt: T, expiresAt: T + 3_600_000 },
      { op: "alert.insert", alert: alert("alr_big", { firstSeen: T, lastSeen: T + 7, mutedUntil: T + 8 }) },
      { op: "token.insert", token: token("tok_big", { createdAt: T }), secretHash: "th" },
      { op: "token.touch", id: "tok_big", at: T + 9 },
      { op: "event.append", event: { type: "t", message: "ünïcødé ✓ 'q'", payload: { big: TB, s: "名前" } }, at: T + 10 },
    ]);
    const h = (await store.getHost(HOST))!;
    expect([h.name, h.createdAt, h.connectedSince, h.lastHeartbeat, h.facts.memoryBytes, h.facts.dataRootFreeBytes]).toEqual(["ä höst ✓", T, T + 1, T + 1, TB, TB + 1]);
    const s = (await store.getServer("srv_big"))!;
    expect([s.name, s.createdAt, s.updatedAt, s.lifecycle.restartRequestedAt, s.lifecycle.crashTimes, s.version]).toEqual(['名前 \'quoted\' "x"', T, T, T + 2, [T, T + 1], 1]);
    expect((await store.findServerByName("default", '名前 \'quoted\' "x"'))?.id).toBe("srv_big");
    const c = (await store.getCommand("cmd_big"))!;
    expect([c.createdAt, c.deadlineAt, c.sentAt]).toEqual([T + 3, T + 600_003, T + 4]);
    await store.commit([finish("cmd_big", T + 11)]);
    expect((await store.getCommand("cmd_big"))?.finishedAt).toBe(T + 11);
    expect(await store.getDataDir(HOST, "srv_big")).toEqual({ hostId: HOST, serverId: "srv_big", present: true, sizeBytes: TB, checkedAt: T + 5 });
    expect((await store.observedContainer(HOST, "c_big"))?.observedAt).toBe(T + 6);
    expect(await store.getEnrollmentToken("eh")).toEqual({ id: "enr_big", expiresAt: T + 3_600_000, usedAt: null });
    expect(await store.getAlert("alr_big")).toMatchObject({ firstSeen: T, lastSeen: T + 7, mutedUntil: T + 8 });
    expect(await store.latestMute("host_offline", `host:${HOST}`)).toBe(T + 8);
    expect(await store.getToken("tok_big")).toMatchObject({ createdAt: T, lastUsedAt: T + 9 });
    const [e] = await store.listNewestFirst({ project: null, limit: 1 });
    expect([e!.time, e!.message, JSON.parse(e!.payloadJson)]).toEqual([T + 10, "ünïcødé ✓ 'q'", { big: TB, s: "名前" }]);
    expect(typeof e!.id).toBe("number");
    expect(typeof (await store.lastEventId())).toBe("number");
    expect(await store.countServersByHost()).toEqual(new Map([[HOST, 1]]));
    expect(await store.countTokens()).toBe(1);
    expect(await store.observedCounts(HOST)).toEqual({ total: 1, other: 0 });
    expect((await store.serverFacts())[0]).toMatchObject({ generation: 1, observedGeneration: 0 });
  });
});

describe("strings from outside: whatever a JS string holds is stored", () => {
  // Agents and callers send text berth stores as is (a container's labels and state, a
  // command's failure message, a status message quoting Docker): a NUL, or a lone surrogate
  // (what slicing a message in the middle of an emoji leaves), must neither fail the batch
  // nor break later reads (the alert rules read every server at every run).
  const write = (text: string): WriteOp[] => [
    { op: "command.finish", id: "cmd_1", state: "failed", at: 2, reason: "X", message: text },
    { op: "server.status", id: "srv_a", status: create(ServerStatusSchema, { phase: Phase.FAILED, reason: "ContainerFailed", message: text }), dataInitialized: false },
    { op: "container.upsert", hostId: HOST, container: create(ContainerInfoSchema, { id: "c1", name: text, image: "busybox", state: text, labels: { "berth.server": "srv_a", note: text } }), at: 2 },
    { op: "event.append", event: { type: "command.failed", serverId: "srv_a", message: text, payload: { message: text } }, at: 2 },
  ];
  /** Every place `write` put the text, as read back. */
  async function readBack(): Promise<(string | null | undefined)[]> {
    const c = await store.observedContainer(HOST, "c1");
    const [e] = await store.listNewestFirst({ project: null, limit: 1 });
    return [
      (await store.getCommand("cmd_1"))?.message,
      (await store.getServer("srv_a"))?.status.message,
      c?.state,
      c?.info.labels.note,
      e?.message,
      (JSON.parse(e!.payloadJson) as { message: string }).message,
    ];
  }

  // PostgreSQL's text cannot hold NUL ("invalid byte sequence for encoding UTF8: 0x00"), and
  // that failed the whole batch (an agent's command result never recorded). Every engine now
  // stores NUL as U+FFFD (rows.ts storableText): the batch goes through, one read-back everywhere,
  // and a backslash that merely looks like an escape is kept.
  it("NUL characters: the batch goes through, read back as U+FFFD on every engine", async () => {
    const text = "a\u0000b \\u0000 ✓";
    await store.commit([insert({ id: "srv_a", hostId: HOST }), cmdInsert("cmd_1", "srv_a")]);
    const r = await store.commit(write(text));
    const stored = "a\ufffdb \\u0000 ✓";
    expect(await readBack()).toEqual(Array(6).fill(stored));
    // What the commit reports (and listeners hear) is what is stored.
    expect(r.events.map((e) => e.message)).toEqual([stored]);
    expect((await store.serverFacts()).map((f) => [f.id, f.phase, f.reason])).toEqual([["srv_a", "FAILED", "ContainerFailed"]]);
    expect((await store.listServers()).map((s) => s.id)).toEqual(["srv_a"]);
  });

  it("NUL in a label's key, a reason, a server's spec: stored as U+FFFD, every read works", async () => {
    await store.commit([insert({ id: "srv_a", hostId: HOST }), cmdInsert("cmd_1", "srv_a")]);
    const spec = (await store.getServer("srv_a"))!.spec;
    await store.commit([
      { op: "container.upsert", hostId: HOST, container: create(ContainerInfoSchema, { id: "c1", name: "c1", labels: { "berth.server": "srv_a", "k\u0000": "v" } }), at: 2 },
      { op: "server.spec", id: "srv_a", spec: { ...spec, image: "img\u0000" }, generation: 2, hostId: HOST, deletedAt: null, updatedAt: 2 },
      { op: "server.status", id: "srv_a", status: create(ServerStatusSchema, { phase: Phase.FAILED, reason: "R\u0000" }), dataInitialized: false },
      { op: "command.finish", id: "cmd_1", state: "failed", at: 2, reason: "X\u0000", message: "" },
    ]);
    expect((await store.observedContainer(HOST, "c1"))?.info.labels).toEqual({ "berth.server": "srv_a", "k\ufffd": "v" });
    expect((await store.getServer("srv_a"))?.spec.image).toBe("img\ufffd");
    expect((await store.serverFacts()).map((f) => f.reason)).toEqual(["R\ufffd"]);
    expect((await store.getCommand("cmd_1"))?.reason).toBe("X\ufffd");
  });

  it("a look-up by text with a NUL in it (a name, an id, an event's type prefix) answers nothing found, never an error", async () => {
    await store.commit([insert({ id: "srv_a", hostId: HOST })]);
    expect(await store.getServer("srv_a\u0000")).toBeUndefined();
    expect(await store.findServerByName("default", "srv_a\u0000")).toBeUndefined();
    expect(await store.getHost("\u0000")).toBeUndefined();
    expect(await store.listServers({ project: "de\u0000fault" })).toEqual([]);
    expect(await store.listNewestFirst({ project: null, typePrefix: "server.\u0000", limit: 10 })).toEqual([]);
  });

  it("a lone surrogate in plain text (a command result, an event): stored, read back with it replaced", async () => {
    const text = "cut \ud83d";
    await store.commit([insert({ id: "srv_a", hostId: HOST }), cmdInsert("cmd_1", "srv_a")]);
    await store.commit([write(text)[0]!, write(text)[3]!]);
    expect((await store.getCommand("cmd_1"))?.message).toBe("cut \ufffd");
    expect((await store.listNewestFirst({ project: null, limit: 1 }))[0]?.message).toBe("cut \ufffd");
  });

  // A status (or spec, or container) is stored as protobuf JSON: a lone surrogate in one of its
  // strings was written as an escape, and then the record could not be decoded any more
  // ("invalid UTF8"): getServer, listServers and the alert rules threw on every read, for good.
  // Every engine now writes it as U+FFFD (rows.ts storableText), as plain columns already did.
  it("a lone surrogate in a status, a spec or a container's info: the batch goes through, U+FFFD in its place, every record readable", async () => {
    const text = "cut \ud83d";
    await store.commit([insert({ id: "srv_a", hostId: HOST }), cmdInsert("cmd_1", "srv_a")]);
    const spec = (await store.getServer("srv_a"))!.spec;
    await store.commit([...write(text), { op: "server.spec", id: "srv_a", spec: { ...spec, image: `img \udc00 😀` }, generation: 2, hostId: HOST, deletedAt: null, updatedAt: 2 }]);
    expect(await readBack()).toEqual(Array(6).fill("cut \ufffd"));
    const s = await store.getServer("srv_a");
    // A whole pair is text and stays.
    expect(s?.spec.image).toBe("img \ufffd 😀");
    expect((await store.listServers()).map((r) => r.status.message)).toEqual(["cut \ufffd"]);
    expect((await store.containersForServer(HOST, "srv_a")).map((c) => c.info.name)).toEqual(["cut \ufffd"]);
    expect((await store.serverFacts()).map((f) => f.id)).toEqual(["srv_a"]);
  });
});

describe("concurrency without preconditions", () => {
  // PostgreSQL locked the rows in opposite orders, the database aborted one batch as a deadlock
  // (40P01) and a writer that asserted nothing got ConflictError. The engine now locks a batch's
  // server rows in id order before writing them.
  it("writes of two servers in opposite orders, racing, all go through (no deadlock surfaces as an error)", async () => {
    await store.commit([insert({ id: "srv_a", hostId: HOST }), insert({ id: "srv_b", hostId: HOST })]);
    const rounds = 40;
    const write = (first: string, second: string, i: number) =>
      store.commit([
        { op: "server.lifecycle", id: first, lifecycle: { restartRequestedAt: i } },
        { op: "server.lifecycle", id: second, lifecycle: { restartRequestedAt: i } },
        { op: "event.append", event: { type: "t", message: String(i) }, at: i },
      ]);
    const results = await Promise.allSettled(Array.from({ length: rounds }, (_, i) => (i % 2 ? write("srv_a", "srv_b", i) : write("srv_b", "srv_a", i))));
    expect(results.filter((r) => r.status === "rejected").map((r) => String((r as PromiseRejectedResult).reason))).toEqual([]);
    expect((await store.getServer("srv_a"))!.version).toBe(1 + rounds);
    expect((await store.getServer("srv_b"))!.version).toBe(1 + rounds);
  });

  // Two containers of a host reported in opposite orders deadlocked on PostgreSQL: the engine
  // now serialises a host's observation batches (its agent's) before writing any row.
  it("container reports of one host in opposite orders, racing, all go through", async () => {
    await store.commit([{ op: "container.upsert", hostId: HOST, container: ctr("c1", "srv_1"), at: 0 }, { op: "container.upsert", hostId: HOST, container: ctr("c2", "srv_2"), at: 0 }]);
    const rounds = 12;
    const report = (first: string, second: string, at: number) =>
      store.commit([
        { op: "container.upsert", hostId: HOST, container: ctr(first, `srv_${first.slice(1)}`), at },
        { op: "container.upsert", hostId: HOST, container: ctr(second, `srv_${second.slice(1)}`), at },
        { op: "host.heartbeat", id: HOST, at, facts: {} },
      ]);
    const results = await Promise.allSettled(Array.from({ length: rounds }, (_, i) => (i % 2 ? report("c1", "c2", i + 1) : report("c2", "c1", i + 1))));
    expect(results.filter((r) => r.status === "rejected").map((r) => String((r as PromiseRejectedResult).reason))).toEqual([]);
    expect((await store.observedCounts(HOST)).total).toBe(2);
  });

  // Rows no lock order covers (here two commands marked sent in opposite orders) can still
  // deadlock on PostgreSQL, which aborts one batch: the engine runs it again (a batch is data,
  // its preconditions checked inside) rather than hand command.sent a ConflictError.
  it("commands marked sent in opposite orders, racing, all go through", async () => {
    await store.commit([insert({ id: "srv_1", hostId: HOST }), insert({ id: "srv_2", hostId: HOST })]);
    await store.commit([cmdInsert("cmd_1", "srv_1"), cmdInsert("cmd_2", "srv_2")]);
    const sent = (first: string, second: string, at: number) =>
      store.commit([
        { op: "command.sent", id: first, at },
        { op: "command.sent", id: second, at },
      ]);
    for (let round = 0; round < 3; round++) {
      const results = await Promise.allSettled([sent("cmd_1", "cmd_2", 10 + round), sent("cmd_2", "cmd_1", 10 + round)]);
      expect(results.filter((r) => r.status === "rejected").map((r) => String((r as PromiseRejectedResult).reason))).toEqual([]);
    }
    expect([(await store.getCommand("cmd_1"))?.sentAt, (await store.getCommand("cmd_2"))?.sentAt]).toEqual([12, 12]);
  });

  it("racing inventories and container reports of one host all go through; the host ends as one of them", async () => {
    const inv = (ids: string[], at: number): WriteOp => ({ op: "host.inventory", hostId: HOST, containers: ids.map((id) => ctr(id, `srv_${id}`)), dataDirs: [], at });
    const results = await Promise.allSettled([
      store.commit([inv(["c1", "c2"], 1)]),
      store.commit([inv(["c2", "c3"], 2)]),
      store.commit([{ op: "container.upsert", hostId: HOST, container: ctr("c2", "srv_c2"), at: 3 }]),
      store.commit([inv(["c1", "c3"], 4)]),
      store.commit([{ op: "container.upsert", hostId: HOST, container: ctr("c4", "srv_c4"), at: 5 }]),
    ]);
    expect(results.filter((r) => r.status === "rejected").map((r) => String((r as PromiseRejectedResult).reason))).toEqual([]);
    expect((await store.observedCounts(HOST)).total).toBeGreaterThanOrEqual(2);
  });

  it("the cluster id is made once, however many ask at the same time", async () => {
    const ids = await Promise.all(Array.from({ length: 8 }, () => store.clusterId()));
    expect(new Set(ids).size).toBe(1);
  });

  it("large batches: a host of 3,000 containers, 2,000 events in one commit", async () => {
    const containers = Array.from({ length: 3000 }, (_, i) => ctr(`c${i}`, `srv_${i % 500}`));
    const r = await store.commit([{ op: "host.inventory", hostId: HOST, containers, dataDirs: [], at: 1 }]);
    expect(r.touchedServers.size).toBe(500);
    expect(await store.observedCounts(HOST)).toEqual({ total: 3000, other: 3000 });
    const events = await store.commit(Array.from({ length: 2000 }, (_, i): WriteOp => ({ op: "event.append", event: { type: "t", message: String(i) }, at: i })));
    expect(events.events.map((e) => e.message)).toEqual(Array.from({ length: 2000 }, (_, i) => String(i)));
    expect(await store.lastEventId()).toBe(events.events.at(-1)!.id);
    // Not a timing assertion: room for an engine that pays a round trip per row on a shared CI machine.
  }, 60_000);
});

describe("optimistic concurrency on server records", () => {
  it("every kind of write increments the version and reports it", async () => {
    await store.commit([insert({ id: "srv_v", hostId: HOST })]);
    const s = (await store.getServer("srv_v"))!;
    expect(s.version).toBe(1);
    const v = async (op: WriteOp) => (await store.commit([op])).versions.get("srv_v");
    expect(await v({ op: "server.spec", id: "srv_v", spec: { ...s.spec, image: "alpine" }, generation: 2, hostId: HOST, deletedAt: null, updatedAt: 2 })).toBe(2);
    expect(await v({ op: "server.status", id: "srv_v", status: create(ServerStatusSchema, { phase: Phase.RUNNING }), dataInitialized: true })).toBe(3);
    expect(await v({ op: "server.lifecycle", id: "srv_v", lifecycle: { restartRequestedAt: 7 } })).toBe(4);
    expect(await v({ op: "server.resetDataInitialized", id: "srv_v" })).toBe(5);
    // With the current version, a write goes through.
    expect(await v({ op: "server.lifecycle", id: "srv_v", lifecycle: {}, expectVersion: 5 })).toBe(6);
    const now = (await store.getServer("srv_v"))!;
    expect([now.version, now.spec.image, now.status.phase, now.lifecycle, now.dataInitialized]).toEqual([6, "alpine", Phase.RUNNING, {}, false]);
    // A check writes nothing.
    expect((await store.commit([{ op: "server.check", id: "srv_v", expectVersion: 6 }])).versions.has("srv_v")).toBe(false);
    expect((await store.getServer("srv_v"))!.version).toBe(6);
  });

  it("a write with a stale expected version writes nothing and says to read again", async () => {
    await store.commit([insert({ id: "srv_v", name: "mc", hostId: HOST, spec: { ports: [tcp(25565)] } })]);
    const read = (await store.getServer("srv_v"))!;
    await store.commit([{ op: "server.lifecycle", id: "srv_v", lifecycle: { restartRequestedAt: 1 } }]); // someone else: version 2
    const current = (await store.getServer("srv_v"))!;
    const writes: [string, WriteOp][] = [
      ["spec", { op: "server.spec", id: "srv_v", spec: { ...read.spec, image: "alpine", ports: [tcp(25566)] }, generation: 2, hostId: HOST, deletedAt: null, updatedAt: 2, expectVersion: read.version }],
      ["status", { op: "server.status", id: "srv_v", status: create(ServerStatusSchema, { phase: Phase.FAILED }), dataInitialized: true, expectVersion: read.version }],
      ["lifecycle", { op: "server.lifecycle", id: "srv_v", lifecycle: {}, expectVersion: read.version }],
      ["data_initialized", { op: "server.resetDataInitialized", id: "srv_v", expectVersion: read.version }],
      ["check", { op: "server.check", id: "srv_v", expectVersion: read.version }],
    ];
    for (const [what, op] of writes) {
      const err = await rejection(store.commit([op]));
      expectTyped(err, ConflictError, Code.Aborted);
      expect((err as Error).message, what).toMatch(/mc.*version 2, expected 1.*read it again and retry/);
      expect(await store.getServer("srv_v"), what).toEqual(current);
    }
    // The refused spec write did not move the port reservation: 25566 is free, 25565 still held.
    await store.commit([insert({ id: "srv_w", hostId: HOST, spec: { ports: [tcp(25566)] } })]);
    expectTyped(await rejection(store.commit([insert({ id: "srv_x", hostId: HOST, spec: { ports: [tcp(25565)] } })])), PreconditionError, Code.FailedPrecondition);
  });

  it("a write with an expected version of a server that is gone: NotFoundError", async () => {
    for (const op of [
      { op: "server.lifecycle", id: "srv_none", lifecycle: {}, expectVersion: 1 },
      { op: "server.check", id: "srv_none", expectVersion: 1 },
      { op: "server.lifecycle", id: "srv_none", lifecycle: {} },
      { op: "server.resetDataInitialized", id: "srv_none" },
    ] satisfies WriteOp[]) {
      expectTyped(await rejection(store.commit([op])), NotFoundError, Code.NotFound);
    }
  });

  describe("racing commits: exactly one wins", () => {
    it("two writes of one server with the same expected version", async () => {
      await store.commit([insert({ id: "srv_r", hostId: HOST })]);
      for (let round = 0; round < 10; round++) {
        const v = (await store.getServer("srv_r"))!.version;
        const results = await Promise.allSettled(
          ["a", "b"].map((who) =>
            store.commit([
              { op: "server.lifecycle", id: "srv_r", lifecycle: { restartRequestedAt: round, stopTimeoutSeconds: who === "a" ? 1 : 2 }, expectVersion: v },
              { op: "event.append", event: { type: "server.restart_requested", serverId: "srv_r", actor: who }, at: round },
            ]),
          ),
        );
        const won = results.flatMap((r, i) => (r.status === "fulfilled" ? [i] : []));
        expect(won, `round ${round}`).toHaveLength(1);
        const lost = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
        expectTyped(lost.reason, ConflictError, Code.Aborted);
        const s = (await store.getServer("srv_r"))!;
        expect(s.version).toBe(v + 1);
        expect(s.lifecycle.stopTimeoutSeconds).toBe(won[0] === 0 ? 1 : 2);
      }
      // Only the winners' events are in the ledger.
      expect((await store.listNewestFirst({ project: null, limit: 100 })).length).toBe(10);
    });

    it("two commands for one server", async () => {
      await store.commit([insert({ id: "srv_r", hostId: HOST })]);
      const results = await Promise.allSettled([store.commit([cmdInsert("cmd_a", "srv_r")]), store.commit([cmdInsert("cmd_b", "srv_r")])]);
      expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
      expectTyped((results.find((r) => r.status === "rejected") as PromiseRejectedResult).reason, ConflictError, Code.Aborted);
      expect(await store.serverIdsWithOpenCommands()).toEqual(new Set(["srv_r"]));
      expect(await store.openCommandsForHost(HOST)).toHaveLength(1);
    });

    it("two creates of one name, and two servers on one port", async () => {
      const named = await Promise.allSettled([store.commit([insert({ id: "srv_1", name: "web", hostId: HOST })]), store.commit([insert({ id: "srv_2", name: "web", hostId: "host_b" })])]);
      expect(named.filter((r) => r.status === "fulfilled")).toHaveLength(1);
      expectTyped((named.find((r) => r.status === "rejected") as PromiseRejectedResult).reason, ServerNameTakenError, Code.AlreadyExists);
      const ported = await Promise.allSettled([
        store.commit([insert({ id: "srv_3", hostId: HOST, spec: { ports: [tcp(80)] } })]),
        store.commit([insert({ id: "srv_4", hostId: HOST, spec: { ports: [tcp(80)] } })]),
      ]);
      expect(ported.filter((r) => r.status === "fulfilled")).toHaveLength(1);
      expectTyped((ported.find((r) => r.status === "rejected") as PromiseRejectedResult).reason, PreconditionError, Code.FailedPrecondition);
      expect(await store.allServerIds()).toHaveLength(2);
    });

    it("a version check holds until its batch commits: a batch that decided on a version never lands after a change to it", async () => {
      for (let round = 0; round < 15; round++) {
        const id = `srv_${round}`;
        await store.commit([insert({ id, hostId: HOST })]);
        // The reconciler's batch: decided on version 1, writes a command, not the record.
        const decided = store.commit([
          { op: "server.check", id, expectVersion: 1 },
          cmdInsert(`cmd_${round}`, id),
          { op: "event.append", event: { type: "command.issued", serverId: id }, at: 1 },
        ]);
        // An operator's change of the same server at the same moment.
        const changed = store.commit([
          { op: "server.lifecycle", id, lifecycle: { restartRequestedAt: round }, expectVersion: 1 },
          { op: "event.append", event: { type: "server.restart_requested", serverId: id }, at: 1 },
        ]);
        const [d, c] = await Promise.allSettled([decided, changed]);
        for (const r of [d, c]) if (r.status === "rejected") expectTyped(r.reason, ConflictError, Code.Aborted);
        expect(d.status === "fulfilled" || c.status === "fulfilled", `round ${round}: one of them went through`).toBe(true);
        if (d.status === "fulfilled" && c.status === "fulfilled") {
          // Both went through only if the decided batch committed first (ledger ids are in commit order).
          expect(d.value.events[0]!.id, `round ${round}`).toBeLessThan(c.value.events[0]!.id);
        }
      }
    });

    it("a command decided on a server never outlives the server's deletion racing with it", async () => {
      for (let round = 0; round < 15; round++) {
        const id = `srv_${round}`;
        await store.commit([insert({ id, hostId: HOST })]);
        await Promise.allSettled([store.commit([{ op: "server.check", id, expectVersion: 1 }, cmdInsert(`cmd_${round}`, id)]), store.commit([{ op: "server.delete", id }])]);
        expect(await store.getServer(id)).toBeUndefined();
        expect(await store.getCommand(`cmd_${round}`), `round ${round}`).toBeUndefined();
      }
      expect(await store.serverIdsWithOpenCommands()).toEqual(new Set());
    });

    it("two results of one command, two uses of one enrollment token, two resolutions of one alert", async () => {
      await store.commit([
        insert({ id: "srv_r", hostId: HOST }),
        cmdInsert("cmd_1", "srv_r"),
        { op: "enrollment.insert", id: "enr_1", tokenHash: "h1", createdAt: 1, expiresAt: 1000 },
        { op: "alert.insert", alert: alert("alr_1") },
      ]);
      const pairs: [WriteOp, WriteOp][] = [
        [finish("cmd_1", 2, "succeeded"), finish("cmd_1", 2, "expired")],
        [{ op: "enrollment.use", id: "enr_1", hostId: "host_x", at: 2 }, { op: "enrollment.use", id: "enr_1", hostId: "host_y", at: 2 }],
        [{ op: "alert.resolve", id: "alr_1", at: 2 }, { op: "alert.resolve", id: "alr_1", at: 3 }],
      ];
      for (const [a, b] of pairs) {
        const results = await Promise.allSettled([store.commit([a]), store.commit([b])]);
        expect(results.filter((r) => r.status === "fulfilled"), a.op).toHaveLength(1);
        expectTyped((results.find((r) => r.status === "rejected") as PromiseRejectedResult).reason, ConflictError, Code.Aborted);
      }
      expect(["succeeded", "expired"]).toContain((await store.getCommand("cmd_1"))?.state);
    });
  });
});

describe("unique names per project", () => {
  it("refuses a second server of a name in a project, soft-deleted ones included, with the message CreateServer gives", async () => {
    await store.commit([insert({ id: "srv_1", name: "web", hostId: HOST })]);
    const err = await rejection(store.commit([insert({ id: "srv_2", name: "web", hostId: HOST, spec: { ports: [tcp(80)] } })]));
    expectTyped(err, ServerNameTakenError, Code.AlreadyExists);
    expect(err).toBeInstanceOf(AlreadyExistsError);
    expect((err as Error).message).toBe('a server named "web" already exists in project "default"; pick another name or update it');
    expect(await store.getServer("srv_2")).toBeUndefined();
    // Its port was not reserved.
    await store.commit([insert({ id: "srv_p", hostId: HOST, spec: { ports: [tcp(80)] } })]);

    // A soft-deleted server keeps its name (RestoreServer brings it back under it).
    await store.commit([insert({ id: "srv_3", name: "old", hostId: HOST, deletedAt: 1 })]);
    expectTyped(await rejection(store.commit([insert({ id: "srv_4", name: "old", hostId: HOST })])), ServerNameTakenError, Code.AlreadyExists);
    // Another project may use it.
    await store.commit([insert({ id: "srv_5", name: "web", project: "p2", hostId: HOST })]);
    expect((await store.findServerByName("p2", "web"))?.id).toBe("srv_5");
  });
});

describe("host ports: one server per host port and protocol", () => {
  it("refuses a server whose port another server on the host holds, and reserves none of its ports", async () => {
    await store.commit([insert({ id: "srv_first", hostId: HOST, spec: { ports: [tcp(25565), udp(25565)] } })]);
    const err = await rejection(store.commit([insert({ id: "srv_second", hostId: HOST, spec: { ports: [tcp(8080), tcp(25565)] } })]));
    expectTyped(err, PreconditionError, Code.FailedPrecondition);
    expect((err as Error).message).toBe("port conflict on host host_a: host port 25565/tcp is already taken by another server; choose another host port (or free this one) and retry");
    expect(await store.getServer("srv_second")).toBeUndefined();
    // 8080, listed before the clash, is not held.
    await store.commit([insert({ id: "srv_third", hostId: HOST, spec: { ports: [tcp(8080)] } })]);
  });

  it("matches the domain's rule: same host, same port, same protocol (unspecified is tcp), whatever the container port", async () => {
    const cases: { held: PortMapping[]; heldHost?: string; wanted: PortMapping[]; conflict: boolean }[] = [
      { held: [tcp(25565)], wanted: [tcp(25565)], conflict: true },
      { held: [tcp(25565)], wanted: [tcp(25565, Protocol.TCP, 1)], conflict: true },
      { held: [tcp(25565, Protocol.UNSPECIFIED)], wanted: [tcp(25565)], conflict: true },
      { held: [tcp(25565)], wanted: [tcp(25565, Protocol.UNSPECIFIED)], conflict: true },
      { held: [tcp(25565)], wanted: [udp(25565)], conflict: false },
      { held: [udp(53)], wanted: [udp(53)], conflict: true },
      { held: [tcp(25565)], wanted: [tcp(25566)], conflict: false },
      { held: [tcp(25565)], heldHost: "host_b", wanted: [tcp(25565)], conflict: false },
      { held: [], wanted: [tcp(80), tcp(80)], conflict: false },
    ];
    for (const [i, c] of cases.entries()) {
      const heldHost = c.heldHost ?? HOST;
      await store.commit([insert({ id: `srv_held${i}`, hostId: heldHost, spec: { ports: c.held } })]);
      const domain = heldHost === HOST && findPortConflicts(c.wanted, [{ name: "held", project: "default", ports: c.held }]).length > 0;
      expect(domain, `case ${i}: the store agrees with the domain`).toBe(c.conflict);
      const err = await store.commit([insert({ id: `srv_wanted${i}`, hostId: HOST, spec: { ports: c.wanted } })]).then(() => undefined, (e: unknown) => e);
      expect(err instanceof PreconditionError, `case ${i}`).toBe(c.conflict);
      // Clear the host for the next case.
      await store.commit([{ op: "server.delete", id: `srv_held${i}` }, ...(err ? [] : [{ op: "server.delete", id: `srv_wanted${i}` } as const])]);
    }
  });

  it("a soft-deleted server holds no port, and cannot be restored onto a port taken meanwhile", async () => {
    await store.commit([insert({ id: "srv_old", hostId: HOST, spec: { ports: [tcp(25565)] } })]);
    const old = (await store.getServer("srv_old"))!;
    await store.commit([{ op: "server.spec", id: "srv_old", spec: old.spec, generation: old.generation, hostId: HOST, deletedAt: 2, updatedAt: 2 }]);
    await store.commit([insert({ id: "srv_new", hostId: HOST, spec: { ports: [tcp(25565)] } })]);

    const deleted = (await store.getServer("srv_old"))!;
    const err = await rejection(store.commit([{ op: "server.spec", id: "srv_old", spec: deleted.spec, generation: deleted.generation, hostId: HOST, deletedAt: null, updatedAt: 3 }]));
    expectTyped(err, PreconditionError, Code.FailedPrecondition);
    expect((err as Error).message).toMatch(/host port 25565\/tcp/);
    expect(await store.getServer("srv_old")).toEqual(deleted);
    // A server inserted already deleted holds nothing either.
    await store.commit([insert({ id: "srv_gone", hostId: HOST, deletedAt: 1, spec: { ports: [tcp(25565)] } })]);
  });

  it("a spec update moves the reservation, a refused one changes nothing, a move to another host takes the ports along", async () => {
    await store.commit([insert({ id: "srv_a", hostId: HOST, spec: { ports: [tcp(25565)] } }), insert({ id: "srv_b", hostId: HOST, spec: { ports: [tcp(8080)] } })]);
    const a = (await store.getServer("srv_a"))!;
    const spec = (id: string, s: typeof a, ports: PortMapping[], hostId = s.hostId): WriteOp => ({ op: "server.spec", id, spec: { ...s.spec, ports, hostId }, generation: s.generation + 1, hostId, deletedAt: null, updatedAt: 5 });

    // Onto srv_b's port: refused, unchanged.
    expectTyped(await rejection(store.commit([spec("srv_a", a, [tcp(8080)])])), PreconditionError, Code.FailedPrecondition);
    expect(await store.getServer("srv_a")).toEqual(a);

    // Onto a free port: 25565 is released.
    await store.commit([spec("srv_a", a, [tcp(25566)])]);
    await store.commit([insert({ id: "srv_c", hostId: HOST, spec: { ports: [tcp(25565)] } })]);

    // Moved to another host (ReassignServer): held there, free here.
    const b = (await store.getServer("srv_b"))!;
    await store.commit([spec("srv_b", b, [tcp(8080)], "host_b")]);
    expectTyped(await rejection(store.commit([insert({ id: "srv_d", hostId: "host_b", spec: { ports: [tcp(8080)] } })])), PreconditionError, Code.FailedPrecondition);
    await store.commit([insert({ id: "srv_e", hostId: HOST, spec: { ports: [tcp(8080)] } })]);
  });
});

describe("commands", () => {
  it("round-trip; one open (pending or sent) per server; finished once; a late 'sent' changes nothing", async () => {
    await store.commit([insert({ id: "srv_a", hostId: HOST }), insert({ id: "srv_b", hostId: HOST })]);
    await store.commit([{ op: "command.insert", command: command("cmd_1", "srv_a", CommandKind.ENSURE_STOPPED), hostId: HOST, createdAt: 10, deadlineAt: 1010 }]);
    expect(await store.getCommand("cmd_1")).toEqual({
      id: "cmd_1",
      serverId: "srv_a",
      hostId: HOST,
      command: command("cmd_1", "srv_a", CommandKind.ENSURE_STOPPED),
      state: "pending",
      createdAt: 10,
      deadlineAt: 1010,
      sentAt: null,
      finishedAt: null,
      reason: null,
      message: null,
    });
    const err = await rejection(store.commit([cmdInsert("cmd_2", "srv_a", 11)]));
    expectTyped(err, ConflictError, Code.Aborted);
    expect((err as Error).message).toBe("server srv_a already has an open command (cmd_1); wait for it to finish or expire, then retry");
    expect(await store.getCommand("cmd_2")).toBeUndefined();

    // Sent is still open.
    await store.commit([{ op: "command.sent", id: "cmd_1", at: 12 }]);
    expect(await store.openCommandForServer("srv_a")).toMatchObject({ id: "cmd_1", state: "sent", sentAt: 12 });
    expectTyped(await rejection(store.commit([cmdInsert("cmd_3", "srv_a", 13)])), ConflictError, Code.Aborted);
    // Another server is not concerned.
    await store.commit([cmdInsert("cmd_b", "srv_b", 13)]);
    expect(await store.serverIdsWithOpenCommands()).toEqual(new Set(["srv_a", "srv_b"]));

    await store.commit([{ op: "command.finish", id: "cmd_1", state: "failed", at: 14, reason: "ImagePullFailed", message: "no such image" }]);
    expectTyped(await rejection(store.commit([finish("cmd_1", 15)])), ConflictError, Code.Aborted);
    expectTyped(await rejection(store.commit([finish("cmd_unknown", 15)])), ConflictError, Code.Aborted);
    await store.commit([{ op: "command.sent", id: "cmd_1", at: 16 }]);
    const c = (await store.getCommand("cmd_1"))!;
    expect([c.state, c.finishedAt, c.reason, c.message, c.sentAt]).toEqual(["failed", 14, "ImagePullFailed", "no such image", 12]);
    expect(await store.openCommandForServer("srv_a")).toBeUndefined();
    expect((await store.lastFinishedCommand("srv_a"))?.id).toBe("cmd_1");
    expect(await store.serverIdsWithOpenCommands()).toEqual(new Set(["srv_b"]));

    // Once finished, the next one goes in.
    await store.commit([cmdInsert("cmd_4", "srv_a", 17)]);
    expect((await store.openCommandForServer("srv_a"))?.id).toBe("cmd_4");
  });

  it("the last finished command is the one that finished last; open ones are listed per host, oldest first", async () => {
    await store.commit([insert({ id: "srv_a", hostId: HOST }), insert({ id: "srv_b", hostId: HOST })]);
    // cmd_1 finishes before cmd_2 is issued, yet by the clocks recorded it finished last (a result that came late).
    await store.commit([cmdInsert("cmd_1", "srv_a", 0), finish("cmd_1", 6, "failed")]);
    await store.commit([cmdInsert("cmd_2", "srv_a", 1), cmdInsert("cmd_3", "srv_b", 2)]);
    await store.commit([finish("cmd_2", 5)]);
    await store.commit([{ op: "command.insert", command: command("cmd_4", "srv_c"), hostId: "host_b", createdAt: 0, deadlineAt: 9 }]);
    expect((await store.lastFinishedCommand("srv_a"))?.id).toBe("cmd_1");
    expect(await store.lastFinishedCommand("srv_b")).toBeUndefined();
    expect((await store.openCommandsForHost(HOST)).map((c) => c.id)).toEqual(["cmd_3"]);
    expect((await store.openCommandsForHost("host_b")).map((c) => c.id)).toEqual(["cmd_4"]);
    expect(await store.openCommandsForHost("host_none")).toEqual([]);
  });
});

describe("meta and identity", () => {
  it("the cluster id is made once; meta values are set and replaced", async () => {
    const id = await store.clusterId();
    expect(id).toMatch(/^mgr_/);
    expect(await store.clusterId()).toBe(id);
    expect(await store.getMeta("k")).toBeUndefined();
    await store.commit([{ op: "meta.set", key: "k", value: "1" }]);
    await store.commit([{ op: "meta.set", key: "k", value: "2" }]);
    expect(await store.getMeta("k")).toBe("2");
    await store.probeWrite("probe-1", 1000);
    expect(await store.getMeta("write_probe")).toBe("probe-1");
  });

  it("says which engine it is", () => {
    expect(["sqlite", "postgres"]).toContain(store.engine);
    expect(store.description).not.toMatch(/password/i);
  });
});
