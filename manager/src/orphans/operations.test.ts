import { afterEach, describe, expect, it, vi } from "vitest";
import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { pino } from "pino";
import {
  CommandKind,
  CommandResultSchema,
  ContainerInfoSchema,
  MountPointSchema,
  type Command,
  type ManagerMessage,
} from "@berth/proto/berth/v1/agent_pb.js";
import { OrphanKind } from "@berth/proto/berth/v1/orphan_pb.js";
import { DesiredState } from "@berth/proto/berth/v1/server_pb.js";
import { Ledger } from "../ledger/ledger.js";
import { AgentHub } from "../link/agent-hub.js";
import { COMMAND_DEADLINE_MS } from "../reconcile/plan.js";
import { Reconciler } from "../reconcile/reconciler.js";
import type { Store } from "../store/store.js";
import { newServer, testStore } from "../../testing/store.js";
import type { OrphanFinding } from "./classify.js";
import { OrphanOperations } from "./operations.js";

const HOST = "host_aaaaaaaaaaaa";
const GONE = "host_gggggggggggg";
const T0 = 1_700_000_000_000;
const BY = { actor: "token:admin", name: "admin" };

interface Harness {
  store: Store;
  hub: AgentHub;
  rec: Reconciler;
  ops: OrphanOperations;
  /** Every command the host was sent, in order. */
  sent: Command[];
  events: () => Promise<{ type: string; actor: string; reason: string; message: string; serverId: string; correlationId: string }[]>;
}

const open: Harness[] = [];
afterEach(async () => {
  for (const h of open.splice(0)) {
    await h.rec.stop();
    await h.store.close();
  }
});

/** A manager with one connected host whose agent answers an inspection with `web`'s config. */
async function setup(): Promise<Harness> {
  const store = await testStore();
  const now = () => T0;
  const log = pino({ level: "silent" });
  const hub = new AgentHub();
  const ledger = new Ledger(store, now);
  ledger.follow(store);
  const sent: Command[] = [];
  await store.commit([
    { op: "host.insert", id: HOST, name: "host-a", secretHash: "x".repeat(64), createdAt: T0 },
    { op: "host.connected", id: HOST, facts: { dataRoot: "/var/lib/berth" }, at: T0 },
  ]);
  hub.attach({
    hostId: HOST,
    ready: true,
    lastSeen: T0,
    close() {},
    send: (m: ManagerMessage) => {
      if (m.body.case !== "command") return;
      const c = m.body.value;
      sent.push(c);
      if (c.kind === CommandKind.INSPECT_CONTAINER) {
        const container = create(ContainerInfoSchema, {
          id: c.containerId,
          name: "web",
          image: "img:1",
          state: "running",
          command: ["serve"],
          mounts: ["/srv/web:/data"],
          mountPoints: [create(MountPointSchema, { source: "/srv/web", destination: "/data", type: "bind" })],
        });
        queueMicrotask(() => hub.deliverResult(HOST, create(CommandResultSchema, { commandId: c.id, success: true, container })));
      }
      if (c.kind === CommandKind.REMOVE_CONTAINER) queueMicrotask(() => hub.deliverResult(HOST, create(CommandResultSchema, { commandId: c.id, success: true })));
    },
  });
  const rec = new Reconciler({ store, hub, log, managerId: await store.clusterId(), ledger, now });
  const ops = new OrphanOperations({ store, hub, ledger, reconciler: rec, log, now, adoptablePaths: ["/srv"] });
  const h: Harness = {
    store,
    hub,
    rec,
    ops,
    sent,
    events: async () => (await ledger.list({})).map((e) => ({ type: e.type, actor: e.actor, reason: e.reason, message: e.message, serverId: e.serverId, correlationId: e.correlationId })),
  };
  open.push(h);
  return h;
}

function finding(o: Partial<OrphanFinding>): OrphanFinding {
  return {
    id: "orp_aaaaaaaaaaaaaaaaaaaa",
    kind: OrphanKind.UNMANAGED,
    hostId: HOST,
    containerId: "c0ffee0123456789",
    containerName: "web",
    image: "img:1",
    state: "running",
    createTimeMs: 0,
    labels: {},
    ports: [],
    mounts: ["/srv/web:/data"],
    reason: "",
    dataDir: "",
    dataPath: "",
    dataSizeBytes: 0,
    serverId: "",
    managerLabel: "",
    project: "",
    serverName: "",
    ...o,
  };
}

describe("OrphanOperations", () => {
  it("adopting with move_data: the copy is the new server's one command in flight, issued and sent by the reconciler; a failed copy takes the record back out", async () => {
    const h = await setup();
    const { server } = await h.ops.adopt(BY, finding({}), { project: "default", name: "web", moveData: true, dataMountPath: "", force: false });

    // Stored as the server's in-flight command with the COPY_DATA deadline, and sent once.
    const open = await h.store.openCommandForServer(server.id);
    expect(open?.command.kind).toBe(CommandKind.COPY_DATA);
    expect(open?.deadlineAt).toBe(T0 + COMMAND_DEADLINE_MS[CommandKind.COPY_DATA]);
    expect(open?.state).toBe("sent");
    const copies = h.sent.filter((c) => c.kind === CommandKind.COPY_DATA);
    expect(copies).toHaveLength(1);
    expect(copies[0]).toMatchObject({ id: open?.id, serverId: server.id, containerId: "c0ffee0123456789", mountPath: "/data", orphanAction: true });
    // The reconcile the adoption waits for sends nothing else while the copy runs.
    expect(h.sent.filter((c) => c.serverId === server.id)).toHaveLength(1);
    const issued = (await h.events()).filter((e) => e.serverId === server.id && e.type === "command.issued");
    expect(issued).toEqual([expect.objectContaining({ actor: "manager", reason: "CopyingData", correlationId: open?.id })]);
    expect((await h.events()).map((e) => e.type)).toEqual(expect.arrayContaining(["command.issued", "orphan.adopted"]));

    h.hub.deliverResult(HOST, create(CommandResultSchema, { commandId: open!.id, success: false, reason: "CopyFailed", message: "disk full" }));
    await vi.waitFor(async () => expect(await h.store.getServer(server.id)).toBeUndefined());

    expect(await h.store.getServer(server.id)).toBeUndefined();
    const after = (await h.events()).filter((e) => e.serverId === server.id);
    expect(after.find((e) => e.type === "orphan.adopt_failed")).toMatchObject({ actor: "manager", reason: "CopyFailed", correlationId: "orp_aaaaaaaaaaaaaaaaaaaa" });
    expect(after.find((e) => e.type === "orphan.adopt_failed")?.message).toContain("(disk full); server web was not adopted and its record is removed");
    expect(after.some((e) => e.type === "server.purged")).toBe(false);
  });

  it("removing an orphan container: a one-off command through the reconciler, with orphan_action and a 60 s deadline, never stored", async () => {
    const h = await setup();
    const done = await h.ops.destroy(BY, finding({}), { removeData: false, force: false });

    expect(done.removed).toEqual([expect.stringContaining("container web (c0ffee012345")]);
    expect(h.sent).toHaveLength(1);
    const [c] = h.sent;
    expect(c).toMatchObject({ kind: CommandKind.REMOVE_CONTAINER, containerId: "c0ffee0123456789", orphanAction: true, serverId: "" });
    expect(timestampMs(c!.deadline!)).toBe(T0 + 60_000);
    expect(await h.store.getCommand(c!.id)).toBeUndefined();
    expect((await h.events()).map((e) => e.type)).toEqual(["orphan.destroyed"]);
  });

  it("destroying a stranded server drops its record with server.purged, then records orphan.destroyed", async () => {
    const h = await setup();
    const id = "srv_strandedstrand";
    await h.store.commit([
      { op: "host.insert", id: GONE, name: "host-gone", secretHash: "y".repeat(64), createdAt: T0 },
      {
        op: "server.insert",
        server: newServer({ id, hostId: GONE, name: "old", spec: { image: "img:1", dataMountPath: "/data", desiredState: DesiredState.RUNNING }, dataInitialized: true, at: T0 }),
      },
    ]);
    const f = finding({ id: "orp_bbbbbbbbbbbbbbbbbbbb", kind: OrphanKind.STRANDED, hostId: GONE, containerId: "", containerName: "", mounts: [], serverId: id, serverName: "old", project: "default" });

    await h.ops.destroy(BY, f, { removeData: false, force: false });

    expect(await h.store.getServer(id)).toBeUndefined();
    expect(h.sent).toHaveLength(0);
    expect(await h.events()).toEqual([
      expect.objectContaining({
        type: "server.purged",
        serverId: id,
        actor: "token:admin",
        reason: "StrandedDestroyed",
        message: "record dropped: its host host-gone was removed (DestroyOrphan); any data there stays",
      }),
      expect.objectContaining({ type: "orphan.destroyed", serverId: id, reason: "STRANDED" }),
    ]);
    // The record is dropped once: a second drop finds nothing and records nothing.
    expect(await h.rec.dropRecord({ id, name: "old", project: "default", hostId: GONE }, { actor: "x", reason: "Again", message: "again" }, "test")).toBe(false);
    expect((await h.events()).filter((e) => e.type === "server.purged")).toHaveLength(1);
  });
});
