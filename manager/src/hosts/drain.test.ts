import { afterEach, describe, expect, it } from "vitest";
import { pino } from "pino";
import { Protocol } from "@berth/proto/berth/v1/server_pb.js";
import type { DataOp, HostDrain, HostRecord, HostSchedule, ServerRecord } from "../domain/records.js";
import { Ledger } from "../ledger/ledger.js";
import type { Store } from "../store/store.js";
import { newServer, testStore } from "../../testing/store.js";
import { drainSchedule, HostDrains, MAX_DRAIN_PARALLEL, planDrain, type TransferStarter } from "./drain.js";

const HOST = "host_src";
const T0 = 1_000_000;

/** A data operation of the kind the transfers add ("transfer"; DataOp.kind does not list it yet). */
const transferOp = { kind: "transfer" } as unknown as DataOp;
const backupOp = { kind: "backup" } as unknown as DataOp;

function server(id: string, o: Partial<ServerRecord> = {}): ServerRecord {
  return { ...newServer({ id, hostId: HOST }), version: 1, ...o };
}

function host(drain: Partial<HostDrain> | undefined): HostRecord {
  const schedule: HostSchedule = drain ? { unschedulable: true, drain: { parallel: 2, target: "", startedAt: T0, actor: "token:tok_1:ops", ...drain } } : { unschedulable: true };
  return { id: HOST, name: "src", secretHash: "", createdAt: 1, removedAt: null, online: true, connectedSince: 1, lastHeartbeat: 1, facts: {}, schedule };
}

const ids = (xs: readonly ServerRecord[]) => xs.map((s) => s.id);

describe("planDrain", () => {
  it("starts as many as parallel allows, in id order, and is not finished while servers are left", () => {
    const p = planDrain(host({}), [server("srv_c"), server("srv_a"), server("srv_b")], T0);
    expect(ids(p.start)).toEqual(["srv_a", "srv_b"]);
    expect(p).toMatchObject({ underWay: 0, waiting: 3, moved: 0, finished: false, message: "0 of 3 moved" });
  });

  it("transfers under way, or asked for and not answered yet, take slots", () => {
    const servers = [server("srv_a", { lifecycle: { dataOp: transferOp } }), server("srv_b"), server("srv_c"), server("srv_d")];
    expect(ids(planDrain(host({ started: ["srv_a"] }), servers, T0).start)).toEqual(["srv_b"]);
    const p = planDrain(host({ started: ["srv_a", "srv_b"] }), servers, T0, new Set(["srv_b"]));
    expect(p.start).toEqual([]);
    expect(p).toMatchObject({ underWay: 2, finished: false, message: "0 of 4 moved; 2 under way" });
    expect(ids(planDrain(host({ parallel: 4 }), servers, T0).start)).toEqual(["srv_b", "srv_c", "srv_d"]);
    // More than the limit is never used, whatever the record says.
    const many = Array.from({ length: 40 }, (_, i) => server(`srv_${String(i).padStart(2, "0")}`));
    expect(planDrain(host({ parallel: 100 }), many, T0).start).toHaveLength(MAX_DRAIN_PARALLEL);
  });

  it("counts moved servers, skips failed ones, and judges a started one no longer under way as ended", () => {
    const servers = [server("srv_b"), server("srv_c"), server("srv_d")];
    const p = planDrain(host({ started: ["srv_a", "srv_b"], failed: [{ serverId: "srv_c", name: "srv_c", reason: "x" }] }), servers, T0);
    expect(ids(p.ended)).toEqual(["srv_b"]);
    expect(ids(p.start)).toEqual(["srv_d"]);
    expect(p.message).toBe("1 of 4 moved; 2 failed (DrainHost again retries them)");
  });

  it("waits for a server busy with a backup: not started, not finished", () => {
    const p = planDrain(host({}), [server("srv_a", { lifecycle: { dataOp: backupOp } })], T0);
    expect(p.start).toEqual([]);
    expect(p.finished).toBe(false);
  });

  it("finishes when nothing is under way or left to try, saying what stays: failed and soft-deleted servers", () => {
    const servers = [server("srv_f"), server("srv_del", { deletedAt: 5 }), server("srv_elsewhere", { hostId: "host_b" })];
    const p = planDrain(host({ started: ["srv_a"], failed: [{ serverId: "srv_f", name: "f", reason: "x" }] }), servers, T0 + 120_000);
    expect(p.finished).toBe(true);
    expect(p.start).toEqual([]);
    expect(p.message).toBe("drain finished after 2 min: 1 of 2 moved; 1 failed (DrainHost again retries them); 1 soft-deleted left on the host (purge or restore them)");
    // Soft-deleted servers are never started.
    expect(planDrain(host({}), [server("srv_del", { deletedAt: 5 })], T0).start).toEqual([]);
  });

  it("a host without a drain has nothing to do", () => {
    expect(planDrain(host(undefined), [server("srv_a")], T0)).toMatchObject({ start: [], finished: true, message: "" });
  });
});

describe("drainSchedule (DrainHost)", () => {
  it("a new drain starts now by its caller; again, it keeps start and moves, takes the new settings and retries failed servers", () => {
    expect(drainSchedule({ unschedulable: false }, { parallel: 3, target: "bt_1", actor: "token:a", now: 7 })).toEqual({
      unschedulable: true,
      drain: { parallel: 3, target: "bt_1", startedAt: 7, actor: "token:a", message: "drain started" },
    });
    const running = host({ started: ["srv_moved", "srv_failed"], failed: [{ serverId: "srv_failed", name: "f", reason: "x" }] }).schedule;
    const again = drainSchedule(running, { parallel: 5, target: "", actor: "token:b", now: T0 + 99 });
    expect(again.drain).toEqual({ parallel: 5, target: "", startedAt: T0, actor: "token:tok_1:ops", started: ["srv_moved"], message: "drain settings changed; failed servers are tried again" });
    // The failed server is started again by the next step.
    expect(ids(planDrain({ ...host({}), schedule: again }, [server("srv_failed")], T0).start)).toEqual(["srv_failed"]);
  });
});

describe("HostDrains", () => {
  const cleanup: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0)) await f();
  });

  /**
   * A store with the source host (draining, parallel 2) and three others: host_b (schedulable,
   * holding port 25565), host_c (connected but cordoned), host_d (schedulable, offline).
   * The starter does what a transfer does first: marks the server's data operation a transfer.
   */
  async function setup(o: { starter?: "ok" | "throws" | "none"; drain?: Partial<HostDrain>; sourceOnline?: boolean } = {}) {
    const store = await testStore();
    cleanup.push(() => store.close());
    const ledger = new Ledger(store);
    const connected = new Set(["host_b", "host_c", ...(o.sourceOnline === false ? [] : [HOST])]);
    const presence = { isConnected: (id: string) => connected.has(id), connectedHostIds: () => [...connected] };
    await store.commit([
      ...[HOST, "host_b", "host_c", "host_d"].map((id, i) => ({ op: "host.insert" as const, id, name: id.slice(5), secretHash: "", createdAt: i + 1 })),
      { op: "host.schedule", id: "host_c", schedule: { unschedulable: true } },
      { op: "host.schedule", id: HOST, schedule: { unschedulable: true, drain: { parallel: 2, target: "", startedAt: T0, actor: "token:tok_1:ops", ...o.drain } } },
      { op: "server.insert", server: newServer({ id: "srv_port", hostId: "host_b", spec: { ports: [{ hostPort: 25565, containerPort: 25565, protocol: Protocol.TCP }] } }) },
    ]);
    const calls: { serverId: string; to: string; by: string; target?: string | undefined }[] = [];
    const starter: TransferStarter = {
      async transfer(by, serverId, to, opts) {
        calls.push({ serverId, to, by: `${by.actor} (${by.name})`, target: opts.target });
        if (o.starter === "throws") throw new Error("the destination host's disk is full");
        const s = (await store.getServer(serverId))!;
        await store.commit([{ op: "server.lifecycle", id: serverId, lifecycle: { ...s.lifecycle, dataOp: transferOp } }]);
      },
    };
    const drains = new HostDrains({ store, presence, ledger, log: pino({ level: "silent" }), starter: o.starter === "none" ? undefined : starter, now: () => T0 + 60_000 });
    cleanup.push(() => drains.stop());
    const pass = async () => {
      await drains.runOnce();
      await drains.settled();
    };
    return { store, drains, calls, pass, connected };
  }

  const addServers = (store: Store, ...servers: Parameters<typeof newServer>[0][]) => store.commit(servers.map((s) => ({ op: "server.insert" as const, server: newServer(s) })));
  /** The transfer of `id` succeeded: the server is on `to`, its data operation over. */
  const moved = async (store: Store, id: string, to: string) => {
    const s = (await store.getServer(id))!;
    await store.commit([
      { op: "server.spec", id, spec: { ...s.spec, hostId: to }, generation: s.generation, hostId: to, deletedAt: null, updatedAt: T0 },
      { op: "server.lifecycle", id, lifecycle: {} },
    ]);
  };
  /** The transfer of `id` failed: it stays on the source, its data operation over, the transfer's event says why. */
  const failed = async (store: Store, id: string, why: string) => {
    await store.commit([
      { op: "server.lifecycle", id, lifecycle: {} },
      { op: "event.append", event: { type: "server.transfer_failed", serverId: id, hostId: HOST, reason: "TargetFull", message: why }, at: T0 + 1 },
    ]);
  };
  const drainOf = async (store: Store) => (await store.getHost(HOST))!.schedule;
  const events = async (store: Store) => (await store.listNewestFirst({ project: null, typePrefix: "host.drain", limit: 20 })).reverse().map((e) => `${e.type} ${e.serverId}: ${e.message}`);

  it("moves the servers parallel at a time to connected, schedulable hosts with their ports free; records what cannot move; finishes cordoned", async () => {
    const { store, calls, pass } = await setup();
    await addServers(store, { id: "srv_a", hostId: HOST }, { id: "srv_b", hostId: HOST }, { id: "srv_c", hostId: HOST, spec: { ports: [{ hostPort: 25565, containerPort: 25565, protocol: Protocol.TCP }] } });

    await pass();
    // host_c is cordoned, host_d offline: only host_b takes servers.
    expect(calls).toEqual([
      { serverId: "srv_a", to: "host_b", by: "token:tok_1:ops (DrainHost src)", target: undefined },
      { serverId: "srv_b", to: "host_b", by: "token:tok_1:ops (DrainHost src)", target: undefined },
    ]);
    expect((await drainOf(store)).drain).toMatchObject({ started: ["srv_a", "srv_b"], message: "0 of 3 moved; 2 under way" });
    // Level-based: another pass with both under way starts nothing.
    await pass();
    expect(calls).toHaveLength(2);

    await moved(store, "srv_a", "host_b");
    await pass();
    // srv_c's port is taken on host_b, the only host that could take it.
    expect(calls).toHaveLength(2);
    expect((await drainOf(store)).drain?.failed).toEqual([{ serverId: "srv_c", name: "srv_c", reason: "no connected, schedulable host has its ports free" }]);

    // The last transfer under way fails: nothing is left to try, the drain finishes in the same step.
    await failed(store, "srv_b", "host b's disk filled up");
    await pass();
    expect(calls).toHaveLength(2);
    expect(await drainOf(store)).toEqual({ unschedulable: true });
    expect(await events(store)).toEqual([
      "host.drain_server_failed srv_c: drain of host src: server srv_c stays on it: no connected, schedulable host has its ports free",
      "host.drain_server_failed srv_b: drain of host src: server srv_b stays on it: TargetFull: host b's disk filled up",
      "host.drain_finished : host src: drain finished after 1 min: 1 of 3 moved; 2 failed (DrainHost again retries them); it stays cordoned until UncordonHost",
    ]);
    // Finished: nothing more happens.
    await pass();
    expect(calls).toHaveLength(2);
    expect(await events(store)).toHaveLength(3);
  });

  it("servers sent in one step count at their destination: they spread over the least-loaded hosts", async () => {
    const { store, calls, pass, connected } = await setup();
    connected.add("host_d");
    await addServers(store, { id: "srv_a", hostId: HOST }, { id: "srv_b", hostId: HOST });
    await pass();
    // host_d has no server, host_b one: srv_a goes to host_d, which then has one too (ties by id).
    expect(calls.map((c) => [c.serverId, c.to])).toEqual([
      ["srv_a", "host_d"],
      ["srv_b", "host_b"],
    ]);
  });

  it("a transfer that does not start is recorded failed and not tried again by this drain", async () => {
    const { store, calls, pass } = await setup({ starter: "throws", drain: { target: "bt_1" } });
    await addServers(store, { id: "srv_a", hostId: HOST });
    await pass();
    expect(calls).toEqual([{ serverId: "srv_a", to: "host_b", by: "token:tok_1:ops (DrainHost src)", target: "bt_1" }]);
    expect((await drainOf(store)).drain?.failed).toEqual([{ serverId: "srv_a", name: "srv_a", reason: "the transfer did not start: the destination host's disk is full" }]);
    await pass();
    expect(calls).toHaveLength(1);
    expect((await drainOf(store)).drain).toBeUndefined();
    expect((await events(store)).map((e) => e.split(" ")[0])).toEqual(["host.drain_server_failed", "host.drain_finished"]);
  });

  it("the drain ended (UncordonHost) while a transfer is under way: no new transfer starts", async () => {
    const { store, calls, pass } = await setup({ drain: { parallel: 1 } });
    await addServers(store, { id: "srv_a", hostId: HOST }, { id: "srv_b", hostId: HOST });
    await pass();
    expect(calls.map((c) => c.serverId)).toEqual(["srv_a"]);
    await store.commit([{ op: "host.schedule", id: HOST, schedule: { unschedulable: false } }]);
    await moved(store, "srv_a", "host_b");
    await pass();
    expect(calls).toHaveLength(1);
    expect(await drainOf(store)).toEqual({ unschedulable: false });
  });

  it("waits, starting nothing and failing nothing, while the host is offline or no other host can take servers", async () => {
    const { store, calls, pass, connected } = await setup({ sourceOnline: false });
    await addServers(store, { id: "srv_a", hostId: HOST });
    await pass();
    expect(calls).toEqual([]);
    expect((await drainOf(store)).drain).toMatchObject({ message: "0 of 1 moved; waiting for the host's agent to connect" });
    connected.add(HOST);
    connected.delete("host_b");
    await pass();
    expect(calls).toEqual([]);
    expect((await drainOf(store)).drain).toMatchObject({ message: "0 of 1 moved; waiting for another schedulable host to connect" });
    expect((await drainOf(store)).drain?.failed).toBeUndefined();
    connected.add("host_b");
    await pass();
    expect(calls.map((c) => c.to)).toEqual(["host_b"]);
  });

  it("without a transfer starter it is not available and does nothing", async () => {
    const { store, drains, pass } = await setup({ starter: "none" });
    await addServers(store, { id: "srv_a", hostId: HOST });
    expect(drains.available).toBe(false);
    const before = await drainOf(store);
    await pass();
    expect(await drainOf(store)).toEqual(before);
  });
});
