/**
 * The reconciler under host ownership (reconciler.ts `ownership`,
 * cluster/host-ownership.ts), two managers as two stores on one database
 * (BERTH_TEST_STORE=sqlite|postgres): a manager reconciles only servers of
 * hosts it may, its batches are fenced by its ownership term, and the
 * commands it sends carry its stream's epoch.
 */
import { afterEach, describe, expect, it } from "vitest";
import { pino } from "pino";
import type { Command, ManagerMessage } from "@berth/proto/berth/v1/agent_pb.js";
import { DesiredState } from "@berth/proto/berth/v1/server_pb.js";
import { HostOwnershipLostError } from "../errors.js";
import { HostOwnership } from "../cluster/host-ownership.js";
import { AgentHub } from "../link/agent-hub.js";
import type { Store } from "../store/store.js";
import { newServer, sameDatabase, testStore } from "../../testing/store.js";
import { Reconciler } from "./reconciler.js";

const HOST = "host_aaaaaaaaaaaa";
const SERVER = "srv_bbbbbbbbbbbb";
const T0 = 1_700_000_000_000;
const log = pino({ level: "silent" });

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

/** Manager A (store a, its reconciler, its agent stream for HOST) and manager B's store on the same database. */
async function setup() {
  const a = await testStore();
  cleanup.push(() => a.close());
  const b = await sameDatabase(a);
  cleanup.push(() => b.close());
  await a.commit([{ op: "host.insert", id: HOST, name: "host-a", secretHash: "x".repeat(64), createdAt: T0 }]);
  await a.commit([
    {
      op: "server.insert",
      server: newServer({ id: SERVER, hostId: HOST, name: "mc", at: T0, spec: { image: "itzg/minecraft-server:latest", dataMountPath: "/data", desiredState: DesiredState.RUNNING } }),
    },
  ]);
  const ownA = new HostOwnership({ store: a, holder: "mi_a", log, isLeader: () => false, now: () => T0 });
  const ownB = new HostOwnership({ store: b, holder: "mi_b", log, isLeader: () => false, now: () => T0 });
  const hub = new AgentHub();
  const sent: ManagerMessage[] = [];
  const epoch = await ownA.take(HOST);
  hub.attach({ hostId: HOST, ready: true, lastSeen: T0, ownerEpoch: epoch, send: (m) => sent.push(m), close() {} });
  const rec = new Reconciler({ store: a, hub, log, managerId: await a.clusterId(), now: () => T0, ownership: ownA });
  cleanup.push(() => rec.stop());
  const commands = () => sent.flatMap((m): Command[] => (m.body.case === "command" ? [m.body.value] : []));
  return { a, b, ownA, ownB, rec, commands };
}

async function snapshot(store: Store) {
  return { server: await store.getServer(SERVER), open: await store.openCommandForServer(SERVER), lastEvent: await store.lastEventId() };
}

describe("Reconciler with host ownership", () => {
  it("the owner decides and sends the command under its epoch", async () => {
    const { a, rec, commands } = await setup();
    await rec.reconcile(SERVER, "test");
    expect(await a.openCommandForServer(SERVER)).toBeDefined();
    expect(commands()).toHaveLength(1);
    expect(commands()[0]!.ownerEpoch).toBe(1n);
  });

  it("a manager that lost the host (not noticed yet) has its reconcile batch refused with a ConflictError and writes nothing", async () => {
    const { a, ownB, rec, commands } = await setup();
    // The agent moved to manager B: B takes the host; A has not renewed since.
    await ownB.take(HOST);
    const before = await snapshot(a);
    await expect(rec.reconcile(SERVER, "test")).rejects.toBeInstanceOf(HostOwnershipLostError);
    expect(await snapshot(a)).toEqual(before);
    expect(before.open).toBeUndefined();
    expect(commands()).toEqual([]);
  });

  it("through the queue, a refused fence makes the manager drop the host (onLost) and leave the server to its owner", async () => {
    const { a, ownA, ownB, rec, commands } = await setup();
    await ownB.take(HOST);
    const before = await snapshot(a);
    const lost = new Promise<string>((resolve) => ownA.onLost((hostId) => resolve(hostId)));
    rec.queue.add(SERVER, "test");
    expect(await lost).toBe(HOST);
    await rec.queue.idle();
    expect(ownA.owns(HOST)).toBe(false);
    expect(await snapshot(a)).toEqual(before);
    expect(commands()).toEqual([]);
  });

  it("an exit reported to a manager that lost the host adopts nothing and makes it drop the host", async () => {
    const { a, ownA, ownB, rec } = await setup();
    await ownB.take(HOST);
    const before = await snapshot(a);
    await rec.noteExit(SERVER, "stopped_externally", 0, T0);
    expect(await snapshot(a)).toEqual(before);
    expect(ownA.owns(HOST)).toBe(false);
  });

  it("a record drop (a purge finished, retention, or an API's forced purge) by a manager that lost the host is refused, drops nothing, and makes it drop the host", async () => {
    const { a, ownA, ownB, rec } = await setup();
    await ownB.take(HOST);
    const s = (await a.getServer(SERVER))!;
    await expect(rec.dropRecord(s, { actor: "reconciler", reason: "Purged", message: "purged" }, "test")).rejects.toBeInstanceOf(HostOwnershipLostError);
    expect(await a.getServer(SERVER)).toBeDefined();
    expect(ownA.owns(HOST)).toBe(false);
  });

  it("a server of a host another manager owns (noticed) is not reconciled here at all", async () => {
    const { a, ownA, ownB, rec, commands } = await setup();
    await ownB.take(HOST);
    await ownA.renewAll();
    const before = await snapshot(a);
    expect(await rec.reconcile(SERVER, "test")).toEqual({});
    expect(await snapshot(a)).toEqual(before);
    expect(commands()).toEqual([]);
  });
});
