import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { afterEach, describe, expect, it } from "vitest";
import { CommandKind, CommandSchema, ContainerInfoSchema, type ContainerInfo } from "@berth/proto/berth/v1/agent_pb.js";
import { OrphanKind } from "@berth/proto/berth/v1/orphan_pb.js";
import { DesiredState } from "@berth/proto/berth/v1/server_pb.js";
import type { Lifecycle, NewServerRecord } from "../domain/records.js";
import type { Store } from "../store/store.js";
import { newServer, testStore } from "../../testing/store.js";
import { OrphanDetector } from "./detector.js";

const NOW = 1_700_000_000_000;
const stores: Store[] = [];
afterEach(async () => {
  await Promise.all(stores.splice(0).map((s) => s.close()));
});

function server(id: string, hostId: string, lifecycle: Lifecycle = {}): NewServerRecord {
  return newServer({
    id,
    hostId,
    name: id.replace("srv_", "s-"),
    spec: { name: id, image: "img:1", desiredState: DesiredState.RUNNING, dataMountPath: "/data" },
    dataInitialized: true,
    lifecycle,
    at: NOW - 1e6,
  });
}

function ctr(id: string, labels: Record<string, string> = {}): ContainerInfo {
  return create(ContainerInfoSchema, { id, name: id, image: "img:1", state: "running", labels, createdTime: timestampFromMs(NOW - 600_000) });
}

/** The store as the agent service leaves it after inventories of host_a (online) and host_gone (removed). */
async function fleet() {
  const store = await testStore();
  stores.push(store);
  const me = await store.clusterId();
  await store.commit([
    { op: "host.insert", id: "host_a", name: "a", secretHash: "x", createdAt: 0 },
    { op: "host.connected", id: "host_a", facts: { dataRoot: "/var/lib/berth" }, at: NOW },
    { op: "host.insert", id: "host_gone", name: "gone", secretHash: "y", createdAt: 0 },
    { op: "host.connected", id: "host_gone", facts: { dataRoot: "/srv/berth" }, at: NOW },
    { op: "server.insert", server: server("srv_here", "host_a") },
    { op: "server.insert", server: server("srv_bound", "host_a", { adoptedContainerId: "c-bound" }) },
    { op: "server.insert", server: server("srv_lost", "host_gone") },
    { op: "server.insert", server: server("srv_copying", "host_a") },
  ]);
  await store.commit([{
    op: "host.inventory",
    hostId: "host_a",
    containers: [
      ctr("c-here", { "berth.manager": me, "berth.server": "srv_here" }),
      ctr("c-untracked", { "berth.manager": me, "berth.server": "srv_purged" }),
      ctr("c-foreign", { "berth.manager": "mgr_other", "berth.server": "srv_theirs" }),
      ctr("c-plain"),
      ctr("c-bound"),
      ctr("c-source"),
    ],
    dataDirs: [],
    at: NOW,
    dataRootEntries: [
      { name: "srv_here", sizeBytes: 5 },
      { name: "srv_purged", sizeBytes: 7 },
      { name: "notes", sizeBytes: 0 },
    ],
  }]);
  // An adoption copying c-source's data is in flight.
  await store.commit([{
    op: "command.insert",
    command: create(CommandSchema, { id: "cmd_copy", serverId: "srv_copying", kind: CommandKind.COPY_DATA, containerId: "c-source", mountPath: "/data" }),
    hostId: "host_a",
    createdAt: NOW,
    deadlineAt: NOW + 3_600_000,
  }]);
  // host_gone is removed (RemoveHost) with a server still on it.
  await store.commit([{ op: "host.remove", id: "host_gone", at: NOW - 1000 }]);
  return { store, me };
}

describe("OrphanDetector over the store", () => {
  it("reads observations and records and classifies them", async () => {
    const { store, me } = await fleet();
    const d = new OrphanDetector({ store, isConnected: (id) => id === "host_a", managerId: me, now: () => NOW });
    const list = async (includeUnmanaged: boolean) => (await d.find({ includeUnmanaged })).map((f) => `${OrphanKind[f.kind]} ${f.containerId || f.dataDir}`);
    expect(await list(false)).toEqual(["UNTRACKED c-untracked", "FOREIGN c-foreign", "STRAY_DATA notes", "STRANDED srv_lost"]);
    expect(await list(true)).toContain("UNMANAGED c-plain");
    expect(await list(true)).not.toContain("UNMANAGED c-bound");
    expect(await list(true)).not.toContain("UNMANAGED c-source");
    const untracked = (await d.find({ includeUnmanaged: false }))[0]!;
    expect(untracked).toMatchObject({ dataDir: "srv_purged", dataPath: "/var/lib/berth/srv_purged", dataSizeBytes: 7 });
  });

  it("gives the alert rule untracked containers and stranded servers only", async () => {
    const { store, me } = await fleet();
    const d = new OrphanDetector({ store, isConnected: (id) => id === "host_a", managerId: me, now: () => NOW });
    expect(await d.alertViews()).toEqual([
      { hostId: "host_a", kind: "container", id: "c-untracked", reason: "untracked" },
      { hostId: "host_gone", kind: "server", id: "srv_lost", reason: "stranded" },
    ]);
  });

  it("finds what is on every host of a fleet read a range of hosts at a time", async () => {
    const store = await testStore();
    stores.push(store);
    const me = await store.clusterId();
    // 120 hosts: three ranges of HOSTS_PER_READ (50); an untracked container on hosts in each.
    const hosts = Array.from({ length: 120 }, (_, i) => `host_${String(i).padStart(3, "0")}`);
    for (const h of hosts) {
      await store.commit([
        { op: "host.insert", id: h, name: h, secretHash: "x", createdAt: 0 },
        { op: "host.connected", id: h, facts: { dataRoot: "/var/lib/berth" }, at: NOW },
      ]);
    }
    const withOrphan = [hosts[0]!, hosts[60]!, hosts[119]!];
    for (const h of withOrphan) {
      await store.commit([{ op: "host.inventory", hostId: h, containers: [ctr(`c-${h}`, { "berth.manager": me, "berth.server": "srv_purged" })], dataDirs: [], at: NOW, dataRootEntries: [{ name: "notes", sizeBytes: 0 }] }]);
    }
    const d = new OrphanDetector({ store, isConnected: () => true, managerId: me, now: () => NOW });
    const found = (await d.find({ includeUnmanaged: false })).map((f) => `${OrphanKind[f.kind]} ${f.hostId}`);
    expect(found.filter((f) => f.startsWith("UNTRACKED")).sort()).toEqual(withOrphan.map((h) => `UNTRACKED ${h}`));
    expect(found.filter((f) => f.startsWith("STRAY_DATA")).sort()).toEqual(withOrphan.map((h) => `STRAY_DATA ${h}`));
  });

  it("a later inventory replaces the directory list", async () => {
    const { store } = await fleet();
    await store.commit([{ op: "host.inventory", hostId: "host_a", containers: [], dataDirs: [], at: NOW, dataRootEntries: [{ name: "other", sizeBytes: 0 }] }]);
    expect(await store.listDataRootEntries("host_a")).toEqual([{ hostId: "host_a", name: "other", sizeBytes: 0 }]);
    await store.commit([{ op: "dataRootEntry.remove", hostId: "host_a", name: "other" }]);
    expect(await store.listDataRootEntries()).toEqual([]);
  });
});
