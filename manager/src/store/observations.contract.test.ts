/**
 * The store contract (store.ts) for hosts, enrollment and what agents observe
 * (containers, data directories, data-root entries), through the contract only,
 * on the engine testStore() opens (BERTH_TEST_STORE=sqlite|postgres).
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { CommandSchema, ContainerInfoSchema, type ContainerInfo } from "@berth/proto/berth/v1/agent_pb.js";
import type { AlertRecord, DataDirRecord } from "../domain/records.js";
import { ConflictError, NotFoundError } from "../errors.js";
import { expectTyped, newServer, rejection, testStore } from "../../testing/store.js";
import type { Store, WriteOp } from "./store.js";

const HOST = "host_a";
let store: Store;
beforeEach(async () => {
  store = await testStore();
});
afterEach(() => store.close());

/** A container labelled for `serverId` by `managerId` (none: not berth's). */
function ctr(id: string, serverId: string | null, state = "running", managerId = "mgr_me"): ContainerInfo {
  const labels: Record<string, string> = serverId ? { "berth.server": serverId, "berth.manager": managerId } : {};
  return create(ContainerInfoSchema, { id, name: id, image: "busybox", state, labels });
}
const dir = (serverId: string, o: Partial<DataDirRecord> = {}): DataDirRecord => ({ hostId: HOST, serverId, present: true, sizeBytes: 10, checkedAt: 1, ...o });
const inventory = (o: Partial<Extract<WriteOp, { op: "host.inventory" }>> = {}): WriteOp => ({ op: "host.inventory", hostId: HOST, containers: [], dataDirs: [], at: 1, ...o });
const touched = async (ops: WriteOp[]) => [...(await store.commit(ops)).touchedServers].sort();

describe("observed containers", () => {
  it("upsert updates in place, remove forgets; both report the server they touched", async () => {
    expect(await touched([{ op: "container.upsert", hostId: HOST, container: ctr("c1", "srv_a"), at: 1 }])).toEqual(["srv_a"]);
    expect(await touched([{ op: "container.upsert", hostId: HOST, container: ctr("c1", "srv_a", "paused"), at: 2 }])).toEqual(["srv_a"]);
    const c = await store.observedContainer(HOST, "c1");
    expect(c).toEqual({ hostId: HOST, containerId: "c1", serverId: "srv_a", managerId: "mgr_me", state: "paused", info: ctr("c1", "srv_a", "paused"), observedAt: 2 });
    expect(await store.containersForServer(HOST, "srv_a")).toEqual([c]);
    expect(await touched([{ op: "container.upsert", hostId: HOST, container: ctr("cx", null), at: 1 }])).toEqual([]);
    expect((await store.observedContainer(HOST, "cx"))?.serverId).toBeNull();

    expect(await touched([{ op: "container.remove", hostId: HOST, containerId: "c1" }])).toEqual(["srv_a"]);
    expect(await touched([{ op: "container.remove", hostId: HOST, containerId: "c1" }])).toEqual([]);
    expect(await store.containersForServer(HOST, "srv_a")).toEqual([]);
    expect(await store.observedContainer(HOST, "c1")).toBeUndefined();
  });

  it("an upsert about an older run of the container than the one stored is not written; an inventory replaces whatever it lists", async () => {
    const run = (state: string, startedMs: number, finishedMs = 0) =>
      create(ContainerInfoSchema, {
        ...ctr("c1", "srv_a", state),
        ...(startedMs ? { startedTime: timestampFromMs(startedMs) } : {}),
        ...(finishedMs ? { finishedTime: timestampFromMs(finishedMs) } : {}),
      });
    const state = async () => (await store.observedContainer(HOST, "c1"))?.state;
    const upsert = (c: ContainerInfo, at: number) => store.commit([{ op: "container.upsert", hostId: HOST, container: c, at }]);
    const T = 1_765_000_000_123;
    await upsert(run("running", T), 1);
    // The run ended ("die"); then a snapshot taken while it still ran arrives: the exit stays.
    await upsert(run("exited", T, T + 50), 2);
    const r = await upsert(run("running", T), 3);
    expect(await state()).toBe("exited");
    expect((await store.observedContainer(HOST, "c1"))?.observedAt).toBe(2);
    // Still reported as touching its server: the reconciler reads what is stored and finds nothing new.
    expect([...r.touchedServers]).toEqual(["srv_a"]);
    // A new run (started later) is newer than the old run's exit; the old exit is then older than it.
    await upsert(run("running", T + 1_000, T + 50), 4);
    expect(await state()).toBe("running");
    await upsert(run("exited", T, T + 50), 5);
    expect(await state()).toBe("running");
    // The same run in the same stage: arrival order (paused, unpaused).
    await upsert(run("paused", T + 1_000, T + 50), 6);
    expect(await state()).toBe("paused");
    await upsert(run("running", T + 1_000, T + 50), 7);
    expect(await state()).toBe("running");
    // Without a start time (never started; an observer that does not say) there is no order: written.
    await upsert(run("created", 0), 8);
    expect(await state()).toBe("created");
    // And what it wrote orders nothing: a run seen again is written.
    await upsert(run("exited", T, T + 50), 9);
    expect(await state()).toBe("exited");
    // An inventory is the complete picture: it replaces the row even with an older run (the
    // agent link keeps inventories from undoing newer observations, link/observation-order.ts).
    await upsert(run("running", T + 2_000), 10);
    await store.commit([inventory({ containers: [run("exited", T, T + 50)], at: 11 })]);
    expect(await state()).toBe("exited");
    // And what the inventory stored orders the upserts after it.
    await upsert(run("running", T), 12);
    expect(await state()).toBe("exited");
  });

  it("removeServer forgets every container of the server on the host (any manager's) and the adopted one", async () => {
    await store.commit([
      { op: "container.upsert", hostId: HOST, container: ctr("c1", "srv_a"), at: 1 },
      { op: "container.upsert", hostId: HOST, container: ctr("c2", "srv_a", "exited", "mgr_other"), at: 1 },
      { op: "container.upsert", hostId: HOST, container: ctr("c_adopted", null), at: 1 },
      { op: "container.upsert", hostId: HOST, container: ctr("c_kept", null), at: 1 },
      { op: "container.upsert", hostId: "host_b", container: ctr("c3", "srv_a"), at: 1 },
    ]);
    expect(await touched([{ op: "container.removeServer", hostId: HOST, serverId: "srv_a", adoptedContainerId: "c_adopted" }])).toEqual(["srv_a"]);
    expect(await store.containersForServer(HOST, "srv_a")).toEqual([]);
    expect(await store.observedContainer(HOST, "c_adopted")).toBeUndefined();
    expect(await store.observedContainer(HOST, "c_kept")).toBeDefined();
    expect((await store.containersForServer("host_b", "srv_a")).map((c) => c.containerId)).toEqual(["c3"]);
  });

  it("orphan candidates: anything but a server's own container (labelled by this manager, for a server on that host)", async () => {
    await store.commit([
      { op: "server.insert", server: newServer({ id: "srv_a", hostId: HOST }) },
      { op: "container.upsert", hostId: HOST, container: ctr("c_own", "srv_a"), at: 1 },
      { op: "container.upsert", hostId: HOST, container: ctr("c_other_mgr", "srv_a", "running", "mgr_other"), at: 1 },
      { op: "container.upsert", hostId: HOST, container: ctr("c_gone_server", "srv_gone"), at: 1 },
      { op: "container.upsert", hostId: "host_b", container: ctr("c_wrong_host", "srv_a"), at: 1 },
      { op: "container.upsert", hostId: HOST, container: ctr("c_unlabelled", null), at: 1 },
    ]);
    const ids = async (unlabelled: boolean) => (await store.listOrphanCandidates("mgr_me", unlabelled)).map((c) => `${c.hostId}/${c.containerId}`);
    expect(await ids(false)).toEqual([`${HOST}/c_gone_server`, `${HOST}/c_other_mgr`, "host_b/c_wrong_host"]);
    expect(await ids(true)).toEqual([`${HOST}/c_gone_server`, `${HOST}/c_other_mgr`, `${HOST}/c_unlabelled`, "host_b/c_wrong_host"]);
    // Counted per host: all stored, and those labelled for no server of that host.
    expect(await store.observedCounts(HOST)).toEqual({ total: 4, other: 1 });
    expect(await store.observedCounts("host_b")).toEqual({ total: 1, other: 1 });
    expect(await store.observedCounts("host_none")).toEqual({ total: 0, other: 0 });
  });

  it("orphan candidates and data-root entries a range of hosts at a time: from ≤ host < to, no end without `to`", async () => {
    const hosts = ["host_a", "host_b", "host_c", "host_d"];
    for (const h of hosts) {
      await store.commit([
        { op: "container.upsert", hostId: h, container: ctr(`c_${h}`, "srv_gone"), at: 1 },
        inventory({ hostId: h, containers: [ctr(`c_${h}`, "srv_gone")], dataRootEntries: [{ name: `d_${h}`, sizeBytes: 1 }] }),
      ]);
    }
    const candidates = async (range?: { from: string; to?: string }) => (await store.listOrphanCandidates("mgr_me", false, range)).map((c) => c.hostId);
    const entries = async (hosts?: string | { from: string; to?: string }) => (await store.listDataRootEntries(hosts)).map((e) => e.hostId);
    expect(await candidates({ from: "", to: "host_b" })).toEqual(["host_a"]);
    expect(await candidates({ from: "host_b", to: "host_d" })).toEqual(["host_b", "host_c"]);
    expect(await candidates({ from: "host_d" })).toEqual(["host_d"]);
    expect(await candidates()).toEqual(hosts);
    expect(await entries({ from: "", to: "host_b" })).toEqual(["host_a"]);
    expect(await entries({ from: "host_b", to: "host_d" })).toEqual(["host_b", "host_c"]);
    expect(await entries({ from: "host_c" })).toEqual(["host_c", "host_d"]);
    expect(await entries("host_b")).toEqual(["host_b"]);
  });
});

describe("host inventory: the complete picture of a host", () => {
  it("drops containers no longer reported, touches only servers whose observation changed, leaves other hosts alone", async () => {
    await store.commit([
      { op: "container.upsert", hostId: HOST, container: ctr("c1", "srv_a"), at: 1 },
      { op: "container.upsert", hostId: HOST, container: ctr("c2", "srv_b"), at: 1 },
      { op: "container.upsert", hostId: HOST, container: ctr("c3", null), at: 1 },
      { op: "container.upsert", hostId: HOST, container: ctr("c6", "srv_f"), at: 1 },
      { op: "container.upsert", hostId: "host_b", container: ctr("c4", "srv_c"), at: 1 },
      { op: "dataDir.upsert", dataDir: dir("srv_a", { checkedAt: 1 }) },
    ]);
    // srv_a changed, srv_b lost its container, srv_d has a first data report, srv_e is new; srv_f is as it was.
    expect(await touched([inventory({ containers: [ctr("c1", "srv_a", "exited"), ctr("c5", "srv_e"), ctr("c6", "srv_f")], dataDirs: [dir("srv_d", { present: false, sizeBytes: 0, checkedAt: 2 })], at: 2 })])).toEqual(["srv_a", "srv_b", "srv_d", "srv_e"]);
    expect(await store.containersForServer(HOST, "srv_b")).toEqual([]);
    expect(await store.observedContainer(HOST, "c3")).toBeUndefined();
    expect((await store.containersForServer(HOST, "srv_a")).map((c) => [c.containerId, c.state, c.observedAt])).toEqual([["c1", "exited", 2]]);
    expect((await store.containersForServer("host_b", "srv_c")).map((c) => c.containerId)).toEqual(["c4"]);
    expect(await store.getDataDir(HOST, "srv_d")).toEqual(dir("srv_d", { present: false, sizeBytes: 0, checkedAt: 2 }));

    // The same picture again touches nothing.
    expect(await touched([inventory({ containers: [ctr("c1", "srv_a", "exited"), ctr("c5", "srv_e"), ctr("c6", "srv_f")], dataDirs: [dir("srv_d", { present: false, sizeBytes: 0, checkedAt: 3 })], at: 3 })])).toEqual([]);
    // An empty one clears the host.
    expect(await touched([inventory({ at: 4 })])).toEqual(["srv_a", "srv_e", "srv_f"]);
    expect(await store.observedCounts(HOST)).toEqual({ total: 0, other: 0 });
  });

  it("data directories: a server of the host not listed is recorded as gone; others' checks last only while listed; `keep` is left alone", async () => {
    await store.commit([{ op: "server.insert", server: newServer({ id: "srv_mine", hostId: HOST }) }]);
    await store.commit([inventory({ dataDirs: [dir("srv_mine"), dir("srv_foreign"), dir("srv_later")] })]);
    expect((await store.getDataDir(HOST, "srv_foreign"))?.present).toBe(true);

    // srv_later was observed after this inventory was taken: its check and container stay as they are.
    await store.commit([{ op: "container.upsert", hostId: HOST, container: ctr("c_later", "srv_later"), at: 2 }]);
    await store.commit([inventory({ dataDirs: [dir("srv_mine")], at: 2, keep: ["srv_later"] })]);
    expect(await store.getDataDir(HOST, "srv_foreign")).toBeUndefined();
    expect((await store.getDataDir(HOST, "srv_later"))?.present).toBe(true);
    expect((await store.containersForServer(HOST, "srv_later")).map((c) => c.containerId)).toEqual(["c_later"]);
    expect((await store.getDataDir(HOST, "srv_mine"))?.present).toBe(true);

    // The host's own server's directory gone from the list is recorded as gone, not forgotten.
    expect(await touched([inventory({ at: 3 })])).toEqual(["srv_later", "srv_mine"]);
    expect(await store.getDataDir(HOST, "srv_mine")).toMatchObject({ present: false, sizeBytes: 0, checkedAt: 3 });
  });

  it("an unmeasured size (the agent just started) keeps the size known; a directory never seen gets 0", async () => {
    await store.commit([{ op: "server.insert", server: newServer({ id: "srv_mine", hostId: HOST }) }]);
    await store.commit([inventory({ dataDirs: [dir("srv_mine", { sizeBytes: 4096 })] })]);
    // Not a change: nothing to reconcile, and the size shown stays.
    expect(await touched([inventory({ dataDirs: [dir("srv_mine", { sizeBytes: 0, sizeUnknown: true, checkedAt: 2 })], at: 2 })])).toEqual([]);
    expect(await store.getDataDir(HOST, "srv_mine")).toEqual({ hostId: HOST, serverId: "srv_mine", present: true, sizeBytes: 4096, checkedAt: 2 });
    expect(await touched([inventory({ dataDirs: [dir("srv_mine", { sizeBytes: 8192, checkedAt: 3 })], at: 3 })])).toEqual(["srv_mine"]);
    expect((await store.getDataDir(HOST, "srv_mine"))?.sizeBytes).toBe(8192);

    await store.commit([inventory({ dataDirs: [dir("srv_mine", { sizeBytes: 8192 }), dir("srv_new", { sizeBytes: 0, sizeUnknown: true })], at: 4 })]);
    expect(await store.getDataDir(HOST, "srv_new")).toEqual({ hostId: HOST, serverId: "srv_new", present: true, sizeBytes: 0, checkedAt: 1 });
  });

  // PostgreSQL writes an inventory's containers and directories in one statement each: a
  // container or directory listed twice must still end as its last listing, as row by row.
  it("a container or a data directory listed twice in one inventory: the last listing is stored, touched once", async () => {
    expect(
      await touched([
        inventory({
          containers: [ctr("c1", "srv_a", "created"), ctr("c2", "srv_b"), ctr("c1", "srv_c", "running")],
          dataDirs: [dir("srv_d", { sizeBytes: 1 }), dir("srv_d", { sizeBytes: 2 })],
          at: 2,
        }),
      ]),
    ).toEqual(["srv_a", "srv_b", "srv_c", "srv_d"]);
    expect(await store.observedContainer(HOST, "c1")).toMatchObject({ serverId: "srv_c", state: "running", observedAt: 2 });
    expect(await store.observedCounts(HOST)).toEqual({ total: 2, other: 2 });
    expect(await store.getDataDir(HOST, "srv_d")).toEqual(dir("srv_d", { sizeBytes: 2 }));
  });

  it("data-root entries are replaced by each inventory that lists them, and removed one by one", async () => {
    await store.commit([inventory({ dataRootEntries: [{ name: "srv_a", sizeBytes: 5 }, { name: "lost+found", sizeBytes: 0 }] })]);
    await store.commit([{ op: "host.inventory", hostId: "host_b", containers: [], dataDirs: [], at: 1, dataRootEntries: [{ name: "x", sizeBytes: 1 }] }]);
    expect(await store.listDataRootEntries(HOST)).toEqual([
      { hostId: HOST, name: "lost+found", sizeBytes: 0 },
      { hostId: HOST, name: "srv_a", sizeBytes: 5 },
    ]);
    expect((await store.listDataRootEntries()).map((e) => `${e.hostId}/${e.name}`)).toEqual([`${HOST}/lost+found`, `${HOST}/srv_a`, "host_b/x"]);
    // An inventory without the list leaves it as it was.
    await store.commit([inventory({ at: 2 })]);
    expect(await store.listDataRootEntries(HOST)).toHaveLength(2);
    await store.commit([inventory({ at: 3, dataRootEntries: [{ name: "srv_b", sizeBytes: 7 }] })]);
    expect(await store.listDataRootEntries(HOST)).toEqual([{ hostId: HOST, name: "srv_b", sizeBytes: 7 }]);
    await store.commit([{ op: "dataRootEntry.remove", hostId: HOST, name: "srv_b" }]);
    expect(await store.listDataRootEntries(HOST)).toEqual([]);
  });
});

describe("hosts", () => {
  it("insert, connect (the agent's hostname names it), heartbeat patches facts, offline, every unowned host offline", async () => {
    await store.commit([{ op: "host.insert", id: HOST, name: "a", secretHash: "sh", createdAt: 1 }, { op: "host.insert", id: "host_b", name: "b", secretHash: "sh2", createdAt: 2 }]);
    expect(await store.getHost(HOST)).toEqual({ id: HOST, name: "a", secretHash: "sh", createdAt: 1, removedAt: null, online: false, connectedSince: null, lastHeartbeat: null, facts: {}, schedule: { unschedulable: false } });
    await store.commit([{ op: "host.connected", id: HOST, facts: { hostname: "box1", cpuCount: 4, dockerReachable: true }, at: 10 }]);
    await store.commit([{ op: "host.heartbeat", id: HOST, at: 20, facts: { dataRootFreeBytes: 99 } }]);
    expect(await store.getHost(HOST)).toMatchObject({ name: "box1", online: true, connectedSince: 10, lastHeartbeat: 20, facts: { hostname: "box1", cpuCount: 4, dockerReachable: true, dataRootFreeBytes: 99 } });
    // A connect without a hostname keeps the name.
    await store.commit([{ op: "host.connected", id: "host_b", facts: {}, at: 11 }]);
    expect((await store.getHost("host_b"))?.name).toBe("b");
    expect((await store.listHosts()).map((h) => h.id)).toEqual([HOST, "host_b"]);

    await store.commit([{ op: "host.offline", id: HOST }]);
    expect(await store.getHost(HOST)).toMatchObject({ online: false, connectedSince: null, lastHeartbeat: 20 });
    expect((await store.getHost("host_b"))?.online).toBe(true);
    // No host is owned (no host.take): a start marks every one offline, and says which were online.
    const c = new Promise<ReadonlySet<string>>((resolve) => {
      const off = store.onCommit((x) => {
        off();
        resolve(x.hostIds);
      });
    });
    await store.commit([{ op: "host.offlineUnowned", at: 30 }]);
    expect([...(await c)]).toEqual(["host_b"]);
    expect((await store.listHosts()).map((h) => h.online)).toEqual([false, false]);
  });

  it("remove: marked removed once (its credential refused), off the list; what was observed on it goes, its server records stay", async () => {
    const hostAlert = (id: string, subject: string): AlertRecord => ({ id, rule: "r", subject, project: "", hostId: HOST, serverId: "", severity: "warning", state: "firing", message: "", firstSeen: 1, lastSeen: 1, resolvedAt: null, acknowledgedBy: "", acknowledgedAt: null, mutedUntil: null });
    await store.commit([
      { op: "host.insert", id: HOST, name: "a", secretHash: "sh", createdAt: 1 },
      { op: "host.insert", id: "host_b", name: "b", secretHash: "sh2", createdAt: 2 },
      { op: "host.connected", id: HOST, facts: {}, at: 2 },
      { op: "server.insert", server: newServer({ id: "srv_a", hostId: HOST }) },
      { op: "command.insert", command: create(CommandSchema, { id: "cmd_1", serverId: "srv_a" }), hostId: HOST, createdAt: 1, deadlineAt: 100 },
      { op: "container.upsert", hostId: HOST, container: ctr("c1", "srv_a"), at: 1 },
      { op: "container.upsert", hostId: "host_b", container: ctr("c2", "srv_b"), at: 1 },
      { op: "dataDir.upsert", dataDir: dir("srv_a") },
      { op: "alert.insert", alert: hostAlert("alr_host", `host:${HOST}`) },
      { op: "alert.insert", alert: hostAlert("alr_orphan", `orphan:${HOST}/c9`) },
      { op: "alert.insert", alert: hostAlert("alr_other", "host:host_b") },
      { op: "host.inventory", hostId: HOST, containers: [ctr("c1", "srv_a")], dataDirs: [dir("srv_a")], dataRootEntries: [{ name: "srv_a", sizeBytes: 1 }], at: 1 },
    ]);
    const r = await store.commit([{ op: "host.remove", id: HOST, at: 50 }]);
    expect(r.versions.size).toBe(0);
    expect(await store.getHost(HOST)).toMatchObject({ removedAt: 50, online: false, connectedSince: null });
    expect((await store.listHosts()).map((h) => h.id)).toEqual(["host_b"]);
    expect(await store.observedCounts(HOST)).toEqual({ total: 0, other: 0 });
    expect(await store.getDataDir(HOST, "srv_a")).toBeUndefined();
    expect(await store.listDataRootEntries(HOST)).toEqual([]);
    expect(await store.getCommand("cmd_1")).toBeUndefined();
    expect(await store.getAlert("alr_host")).toBeUndefined();
    expect(await store.getAlert("alr_orphan")).toBeUndefined();
    expect(await store.getAlert("alr_other")).toBeDefined();
    expect(await store.observedCounts("host_b")).toEqual({ total: 1, other: 1 });
    // Server records stay (stranded on a removed host).
    expect((await store.getServer("srv_a"))?.hostId).toBe(HOST);

    expectTyped(await rejection(store.commit([{ op: "host.remove", id: HOST, at: 60 }])), NotFoundError, Code.NotFound);
    expect((await store.getHost(HOST))?.removedAt).toBe(50);
  });
});

describe("host scheduling (host.schedule)", () => {
  const drain = { parallel: 2, target: "", startedAt: 5, actor: "token:tok_1:ops" };
  it("round-trips on every host read, changes nothing else, and back to schedulable reads as the default", async () => {
    await store.commit([{ op: "host.insert", id: HOST, name: "a", secretHash: "sh", createdAt: 1 }, { op: "host.insert", id: "host_b", name: "b", secretHash: "sh2", createdAt: 2 }]);
    await store.commit([{ op: "host.connected", id: HOST, facts: { cpuCount: 4 }, at: 3 }]);
    const heard: ReadonlySet<string>[] = [];
    store.onCommit((c) => heard.push(c.hostIds));
    const failed = [{ serverId: "srv_x", name: "x", reason: "no host has ports 25565/tcp free" }];
    const r = await store.commit([{ op: "host.schedule", id: HOST, schedule: { unschedulable: true, drain: { ...drain, failed, message: "1 of 3 moved" } } }]);
    expect([...r.hostIds]).toEqual([HOST]);
    expect(heard.map((h) => [...h])).toEqual([[HOST]]);
    expect((await store.getHost(HOST))?.schedule).toEqual({ unschedulable: true, drain: { ...drain, failed, message: "1 of 3 moved" } });
    expect((await store.listHosts()).map((h) => [h.id, h.schedule.unschedulable, h.schedule.drain?.parallel])).toEqual([
      [HOST, true, 2],
      ["host_b", false, undefined],
    ]);
    expect(await store.getHost(HOST)).toMatchObject({ online: true, facts: { cpuCount: 4 }, connectedSince: 3 });
    // A heartbeat or reconnect leaves it as it was.
    await store.commit([{ op: "host.heartbeat", id: HOST, at: 9, facts: { dataRootFreeBytes: 1 } }, { op: "host.connected", id: HOST, facts: {}, at: 10 }]);
    expect((await store.getHost(HOST))?.schedule.unschedulable).toBe(true);
    await store.commit([{ op: "host.schedule", id: HOST, schedule: { unschedulable: false } }]);
    expect((await store.getHost(HOST))?.schedule).toEqual({ unschedulable: false });
  });

  it("with expect: written only while the schedule is still the one read, else ConflictError and nothing changes", async () => {
    await store.commit([{ op: "host.insert", id: HOST, name: "a", secretHash: "sh", createdAt: 1 }]);
    const read = (await store.getHost(HOST))!.schedule;
    await store.commit([{ op: "host.schedule", id: HOST, schedule: { unschedulable: true, drain }, expect: read }]);
    // The first writer changed it: a writer that read the old one is refused.
    const stale = rejection(store.commit([{ op: "host.schedule", id: HOST, schedule: { unschedulable: false }, expect: read }, { op: "event.append", event: { type: "host.uncordoned", hostId: HOST }, at: 6 }]));
    expectTyped(await stale, ConflictError, Code.Aborted);
    expect((await store.getHost(HOST))?.schedule).toEqual({ unschedulable: true, drain });
    expect(await store.lastEventId()).toBe(0);
    // Reading again and writing with that works, as often as it is the same.
    const now = (await store.getHost(HOST))!.schedule;
    await store.commit([{ op: "host.schedule", id: HOST, schedule: { unschedulable: true, drain: { ...drain, message: "0 of 1 moved" } }, expect: now }]);
    expect((await store.getHost(HOST))?.schedule.drain?.message).toBe("0 of 1 moved");
  });

  it("an unknown or removed host: NotFound, nothing written", async () => {
    await store.commit([{ op: "host.insert", id: HOST, name: "a", secretHash: "sh", createdAt: 1 }, { op: "host.remove", id: HOST, at: 2 }]);
    for (const id of [HOST, "host_nope"]) {
      expectTyped(await rejection(store.commit([{ op: "host.schedule", id, schedule: { unschedulable: true } }])), NotFoundError, Code.NotFound);
      expectTyped(await rejection(store.commit([{ op: "host.schedule", id, schedule: { unschedulable: true }, expect: { unschedulable: false } }])), NotFoundError, Code.NotFound);
    }
    expect((await store.getHost(HOST))?.schedule).toEqual({ unschedulable: false });
  });
});

describe("enrollment tokens", () => {
  it("single use: the first use wins, later ones are refused with ConflictError (Aborted)", async () => {
    await store.commit([{ op: "enrollment.insert", id: "enr_1", tokenHash: "hash1", createdAt: 1, expiresAt: 3600 }]);
    expect(await store.getEnrollmentToken("hash1")).toEqual({ id: "enr_1", expiresAt: 3600, usedAt: null });
    await store.commit([{ op: "enrollment.use", id: "enr_1", hostId: HOST, at: 10 }]);
    for (const hostId of ["host_b", HOST]) {
      const err = await rejection(store.commit([{ op: "enrollment.use", id: "enr_1", hostId, at: 20 }]));
      expectTyped(err, ConflictError, Code.Aborted);
      expect((err as Error).message).toMatch(/already used; create a new one/);
    }
    expect((await store.getEnrollmentToken("hash1"))?.usedAt).toBe(10);
    expectTyped(await rejection(store.commit([{ op: "enrollment.use", id: "enr_nope", hostId: HOST, at: 1 }])), ConflictError, Code.Aborted);
    expect(await store.getEnrollmentToken("nope")).toBeUndefined();
  });
});
