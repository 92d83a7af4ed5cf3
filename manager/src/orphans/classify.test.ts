import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { ContainerInfoSchema, MountPointSchema, type ContainerInfo } from "@berth/proto/berth/v1/agent_pb.js";
import { OrphanKind } from "@berth/proto/berth/v1/orphan_pb.js";
import { classifyOrphans, entryUnder, orphanId, type OrphanInput } from "./classify.js";

const NOW = 1_700_000_000_000;
const ME = "mgr_me";
const ROOT = "/var/lib/berth";

function container(id: string, o: { labels?: Record<string, string>; ageMs?: number; mounts?: string[]; state?: string } = {}): ContainerInfo {
  return create(ContainerInfoSchema, {
    id,
    name: `name-${id}`,
    image: "img:1",
    state: o.state ?? "running",
    labels: o.labels ?? {},
    createdTime: timestampFromMs(NOW - (o.ageMs ?? 10 * 60_000)),
    mounts: o.mounts ?? [],
    mountPoints: (o.mounts ?? []).map((m) => {
      const [source, destination] = m.split(":");
      return create(MountPointSchema, { type: "bind", source: source!, destination: destination! });
    }),
  });
}

const mine = (server: string) => ({ "berth.manager": ME, "berth.server": server });

function input(o: Partial<OrphanInput> = {}): OrphanInput {
  return {
    managerId: ME,
    now: NOW,
    graceMs: 60_000,
    includeUnmanaged: false,
    hosts: [
      { id: "host_a", name: "a", removedAt: null, connected: true, dataRoot: ROOT },
      { id: "host_b", name: "b", removedAt: null, connected: true, dataRoot: ROOT },
    ],
    servers: [{ id: "srv_known", project: "p", name: "known", hostId: "host_a", image: "img:1", createdAt: NOW - 1e6 }],
    containers: [],
    dataRootEntries: [],
    busyServerIds: new Set(),
    busyContainerIds: new Set(),
    ...o,
  };
}

const kinds = (i: OrphanInput) => classifyOrphans(i).map((f) => `${OrphanKind[f.kind]} ${f.hostId} ${f.containerId || f.dataDir || f.serverId}`);

describe("classifyOrphans", () => {
  it("a server's own container on its host is not an orphan", () => {
    expect(kinds(input({ containers: [{ hostId: "host_a", info: container("c1", { labels: mine("srv_known") }) }] }))).toEqual([]);
  });

  it("this manager's label without a record is untracked; a copy on another host than the record's too", () => {
    const out = classifyOrphans(
      input({
        containers: [
          { hostId: "host_a", info: container("c1", { labels: mine("srv_gone") }) },
          { hostId: "host_b", info: container("c2", { labels: mine("srv_known") }) },
        ],
      }),
    );
    expect(out.map((f) => [OrphanKind[f.kind], f.containerId, f.serverId])).toEqual([
      ["UNTRACKED", "c1", "srv_gone"],
      ["UNTRACKED", "c2", "srv_known"],
    ]);
    expect(out[0]!.reason).toMatch(/no record/);
    expect(out[1]!.reason).toMatch(/stale copy/);
  });

  it("another manager's labels, or a berth.server label alone, are foreign", () => {
    const out = classifyOrphans(
      input({
        containers: [
          { hostId: "host_a", info: container("c1", { labels: { "berth.manager": "mgr_other", "berth.server": "srv_x" } }) },
          { hostId: "host_a", info: container("c2", { labels: { "berth.server": "srv_y" } }) },
        ],
      }),
    );
    expect(out.map((f) => OrphanKind[f.kind])).toEqual(["FOREIGN", "FOREIGN"]);
    expect(out[0]!.reason).toContain("mgr_other");
  });

  it("containers without berth labels only when asked, except one AdoptOrphan bound to a server", () => {
    const containers = [
      { hostId: "host_a", info: container("plain") },
      { hostId: "host_a", info: container("bound") },
    ];
    const servers = [...input().servers, { id: "srv_adopted", project: "p", name: "adopted", hostId: "host_a", image: "img:1", createdAt: 0, adoptedContainerId: "bound" }];
    expect(kinds(input({ containers, servers }))).toEqual([]);
    expect(kinds(input({ containers, servers, includeUnmanaged: true }))).toEqual(["UNMANAGED host_a plain"]);
  });

  it("nothing younger than the grace period, and nothing with a command in flight", () => {
    const containers = [
      { hostId: "host_a", info: container("young", { labels: mine("srv_a"), ageMs: 59_000 }) },
      { hostId: "host_a", info: container("old", { labels: mine("srv_b"), ageMs: 61_000 }) },
      { hostId: "host_a", info: container("busy", { labels: mine("srv_c") }) },
      { hostId: "host_a", info: container("copying") },
      { hostId: "host_a", info: container("young-foreign", { labels: { "berth.manager": "mgr_x", "berth.server": "srv_z" }, ageMs: 1000 }) },
    ];
    const i = input({ containers, busyServerIds: new Set(["srv_c"]), busyContainerIds: new Set(["copying"]), includeUnmanaged: true });
    expect(kinds(i)).toEqual(["UNTRACKED host_a old"]);
    // The grace is the manager's setting.
    expect(kinds({ ...i, graceMs: 0 })).toContain("UNTRACKED host_a young");
  });

  it("offline and removed hosts are not judged: their last observations may be stale", () => {
    const hosts = [
      { id: "host_a", name: "a", removedAt: null, connected: false, dataRoot: ROOT },
      { id: "host_b", name: "b", removedAt: NOW - 1000, connected: false, dataRoot: ROOT },
    ];
    const containers = [
      { hostId: "host_a", info: container("c1", { labels: mine("srv_gone") }) },
      { hostId: "host_b", info: container("c2", { labels: mine("srv_gone2") }) },
    ];
    const dataRootEntries = [{ hostId: "host_a", name: "srv_stray", sizeBytes: 0 }];
    expect(kinds(input({ hosts, containers, dataRootEntries, servers: [] }))).toEqual([]);
  });

  it("stray data: directories no server of this host owns and no container uses", () => {
    const out = classifyOrphans(
      input({
        dataRootEntries: [
          { hostId: "host_a", name: "srv_known", sizeBytes: 10 },
          { hostId: "host_a", name: "srv_purged", sizeBytes: 2048 },
          { hostId: "host_a", name: "junk", sizeBytes: 0 },
          { hostId: "host_a", name: ".copy-srv_new", sizeBytes: 0 },
          { hostId: "host_a", name: "lost+found", sizeBytes: 0 },
          { hostId: "host_a", name: "used-by-someone", sizeBytes: 0 },
          { hostId: "host_a", name: "srv_busy", sizeBytes: 0 },
          { hostId: "host_b", name: "srv_known", sizeBytes: 10 },
        ],
        containers: [{ hostId: "host_a", info: container("c9", { labels: { "berth.manager": "mgr_other", "berth.server": "srv_other" }, mounts: [`${ROOT}/used-by-someone/sub:/data`] }) }],
        busyServerIds: new Set(["srv_busy"]),
      }),
    );
    const stray = out.filter((f) => f.kind === OrphanKind.STRAY_DATA);
    expect(stray.map((f) => [f.hostId, f.dataDir, f.dataPath, f.dataSizeBytes])).toEqual([
      ["host_a", "junk", `${ROOT}/junk`, 0],
      ["host_a", "srv_purged", `${ROOT}/srv_purged`, 2048],
      ["host_b", "srv_known", `${ROOT}/srv_known`, 10],
    ]);
    expect(stray[0]!.reason).toMatch(/not a server's data directory/);
    expect(stray[1]!.reason).toMatch(/no record/);
    expect(stray[2]!.reason).toMatch(/leftover copy/);
    // The foreign container's data is part of that orphan, not stray.
    expect(out.find((f) => f.containerId === "c9")!.dataDir).toBe("used-by-someone");
  });

  it("an untracked container carries its data directory (mounted or named after its server)", () => {
    const out = classifyOrphans(
      input({
        containers: [
          { hostId: "host_a", info: container("c1", { labels: mine("srv_one"), mounts: [`${ROOT}/srv_one:/data`, "/etc/app:/config"] }) },
          { hostId: "host_a", info: container("c2", { labels: mine("srv_two") }) },
          { hostId: "host_a", info: container("c3", { labels: mine("srv_three") }) },
        ],
        dataRootEntries: [
          { hostId: "host_a", name: "srv_one", sizeBytes: 1 },
          { hostId: "host_a", name: "srv_two", sizeBytes: 2 },
        ],
      }),
    );
    expect(out.map((f) => [f.containerId, f.dataPath, f.dataSizeBytes])).toEqual([
      ["c1", `${ROOT}/srv_one`, 1],
      ["c2", `${ROOT}/srv_two`, 2],
      ["c3", "", 0],
    ]);
  });

  it("servers whose host was removed are stranded, soft-deleted ones too", () => {
    const out = classifyOrphans(
      input({
        hosts: [
          { id: "host_a", name: "a", removedAt: null, connected: true, dataRoot: ROOT },
          { id: "host_gone", name: "gone", removedAt: NOW - 5000, connected: false, dataRoot: "/srv/berth" },
        ],
        servers: [
          { id: "srv_here", project: "p", name: "here", hostId: "host_a", image: "img:1", createdAt: 1 },
          { id: "srv_lost", project: "games", name: "lost", hostId: "host_gone", image: "img:2", createdAt: 2 },
        ],
      }),
    );
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({ kind: OrphanKind.STRANDED, hostId: "host_gone", serverId: "srv_lost", image: "img:2", dataPath: "/srv/berth/srv_lost", project: "games", serverName: "lost", createTimeMs: 2 });
    expect(out[0]!.reason).toMatch(/ReassignServer/);
  });

  it("ids are stable and distinct per thing", () => {
    const i = input({ includeUnmanaged: true, containers: [{ hostId: "host_a", info: container("c1") }], dataRootEntries: [{ hostId: "host_a", name: "x", sizeBytes: 0 }] });
    const a = classifyOrphans(i).map((f) => f.id);
    expect(classifyOrphans(i).map((f) => f.id)).toEqual(a);
    expect(new Set(a).size).toBe(2);
    expect(a.every((id) => /^orp_[a-z2-7]{20}$/.test(id))).toBe(true);
    expect(orphanId("container/host_a/c1")).not.toBe(orphanId("container/host_b/c1"));
  });

  it("entryUnder finds the directory directly under the root", () => {
    expect(entryUnder(ROOT, `${ROOT}/srv_a`)).toBe("srv_a");
    expect(entryUnder(ROOT, `${ROOT}/srv_a/deep/er`)).toBe("srv_a");
    expect(entryUnder(`${ROOT}/`, `${ROOT}/x`)).toBe("x");
    expect(entryUnder(ROOT, "/var/lib/berthother/x")).toBe("");
    expect(entryUnder(ROOT, ROOT)).toBe("");
    expect(entryUnder("", "/x")).toBe("");
  });
});
