import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { ContainerInfoSchema, MountPointSchema, type ContainerInfo } from "@berth/proto/berth/v1/agent_pb.js";
import { OrphanKind } from "@berth/proto/berth/v1/orphan_pb.js";
import { DesiredState, PortMappingSchema, Protocol, RestartPolicy } from "@berth/proto/berth/v1/server_pb.js";
import { BerthError } from "../errors.js";
import { formatBytes } from "../domain/limits.js";
import { planAdoption, planDestroy, refuseAdoption } from "./actions.js";
import type { OrphanFinding } from "./classify.js";

const ROOT = "/var/lib/berth";

function finding(o: Partial<OrphanFinding>): OrphanFinding {
  return {
    id: "orp_aaaaaaaaaaaaaaaaaaaa",
    kind: OrphanKind.UNTRACKED,
    hostId: "host_a",
    containerId: "c0ffee0123456789",
    containerName: "web",
    image: "img:1",
    state: "running",
    createTimeMs: 0,
    labels: {},
    ports: [],
    mounts: [],
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

function info(o: { mounts?: [string, string, string?, boolean?][]; state?: string; labels?: Record<string, string>; unsupported?: string[] } = {}): ContainerInfo {
  return create(ContainerInfoSchema, {
    id: "c0ffee0123456789",
    name: "web",
    image: "img:1",
    state: o.state ?? "running",
    labels: o.labels ?? {},
    command: ["serve"],
    env: { MODE: "prod" },
    ports: [
      create(PortMappingSchema, { hostPort: 8080, containerPort: 80, protocol: Protocol.TCP }),
      create(PortMappingSchema, { hostPort: 0, containerPort: 81, protocol: Protocol.TCP }),
    ],
    unsupported: o.unsupported ?? [],
    mounts: (o.mounts ?? []).map(([s, d]) => `${s}:${d}`),
    mountPoints: (o.mounts ?? []).map(([source, destination, type, readOnly]) => create(MountPointSchema, { source, destination, type: type ?? "bind", readOnly: readOnly ?? false })),
  });
}

const codeOf = (fn: () => unknown) => {
  try {
    fn();
    return undefined;
  } catch (err) {
    return err instanceof BerthError ? { code: err.code, message: err.message } : { code: -1, message: String(err) };
  }
};
const req = { moveData: false, dataMountPath: "", force: false, adoptablePaths: ["/srv"] };

describe("planAdoption", () => {
  it("untracked: the record takes the container's server id and generation, its data mount and actual config", () => {
    const f = finding({ serverId: "srv_abcd", dataDir: "srv_abcd" });
    const p = planAdoption(f, info({ mounts: [[`${ROOT}/srv_abcd`, "/var/data"]], labels: { "berth.generation": "7" } }), ROOT, req);
    expect(p).toMatchObject({ mode: "same-id", serverId: "srv_abcd", generation: 7, dataPresent: true, warnings: [] });
    expect(p.spec).toMatchObject({ image: "img:1", command: ["serve"], env: { MODE: "prod" }, dataMountPath: "/var/data", desiredState: DesiredState.RUNNING, restartPolicy: RestartPolicy.ON_FAILURE });
    // A random host port cannot be a berth spec (the agent names it in `unsupported`).
    expect(p.spec.ports.map((x) => x.hostPort)).toEqual([8080]);
  });

  it("untracked without its data mount: /data, with a warning; other mounts are named as dropped", () => {
    const p = planAdoption(finding({ serverId: "srv_abcd" }), info({ mounts: [["/etc/app", "/config"]], state: "exited" }), ROOT, req);
    expect(p.spec.dataMountPath).toBe("/data");
    expect(p.spec.desiredState).toBe(DesiredState.STOPPED);
    expect(p.dataPresent).toBe(false);
    expect(p.warnings.join("\n")).toMatch(/no mount of its data directory/);
    expect(p.warnings.join("\n")).toMatch(/\/etc\/app → \/config/);
  });

  it("unmanaged without mounts: bound in place", () => {
    const p = planAdoption(finding({ kind: OrphanKind.UNMANAGED }), info({ state: "paused", unsupported: ["a TTY"] }), ROOT, req);
    expect(p).toMatchObject({ mode: "bind", serverId: "", generation: 1, dataPresent: false });
    expect(p.spec.desiredState).toBe(DesiredState.PAUSED);
    expect(p.warnings).toEqual(["a TTY: lost when berth recreates the container"]);
  });

  it("unmanaged with data outside the data root: refused, saying move_data copies it (the source stays)", () => {
    const err = codeOf(() => planAdoption(finding({ kind: OrphanKind.UNMANAGED }), info({ mounts: [["/srv/web", "/data"]] }), ROOT, req));
    expect(err?.code).toBe(Code.FailedPrecondition);
    expect(err?.message).toContain("/srv/web");
    expect(err?.message).toMatch(/outside berth's data root \/var\/lib\/berth/);
    expect(err?.message).toMatch(/move_data=true/);
    expect(err?.message).toMatch(/original stays/);
  });

  it("move_data: copy mode, recreated running with the copy mounted where the data was", () => {
    const p = planAdoption(finding({ kind: OrphanKind.UNMANAGED }), info({ mounts: [["/srv/web", "/data"], ["/run/x", "/tmpfs", "tmpfs"]] }), ROOT, { ...req, moveData: true });
    expect(p).toMatchObject({ mode: "copy", copyMountPath: "/data", dataPresent: true });
    expect(p.spec.dataMountPath).toBe("/data");
    expect(p.spec.desiredState).toBe(DesiredState.RUNNING);
    expect(p.warnings.join("\n")).toMatch(/tmpfs mount at \/tmpfs/);
  });

  it("several mounts: data_mount_path must choose; a wrong one is an invalid argument naming the mounts", () => {
    const two = info({ mounts: [["/srv/a", "/a"], ["/srv/b", "/b"]] });
    const f = finding({ kind: OrphanKind.UNMANAGED });
    expect(codeOf(() => planAdoption(f, two, ROOT, { ...req, moveData: true }))?.message).toMatch(/2 mounts.*data_mount_path/);
    const wrong = codeOf(() => planAdoption(f, two, ROOT, { ...req, moveData: true, dataMountPath: "/c" }));
    expect(wrong?.code).toBe(Code.InvalidArgument);
    expect(wrong?.message).toMatch(/^data_mount_path: .*\/srv\/a → \/a, \/srv\/b → \/b/);
    const p = planAdoption(f, two, ROOT, { ...req, moveData: true, dataMountPath: "/b" });
    expect(p.copyMountPath).toBe("/b");
    expect(p.warnings.join("\n")).toMatch(/\/srv\/a → \/a: berth mounts only the data directory/);
  });

  it.each([
    ["/etc: outside the data root, not adoptable", "/etc", /\/etc is outside berth's data root \/var\/lib\/berth and not under an adoptable path.*--adoptable-path DIR \(BERTH_ADOPTABLE_PATH; now: \/srv\)/],
    ["a sibling whose name starts like an adoptable path", "/srvx/data", /not under an adoptable path/],
    ["'..' back out of an adoptable path", "/srv/../etc", /\/etc is outside/],
    ["the data root itself", ROOT, /is berth's data root itself/],
    ["another server's data directory", `${ROOT}/srv_other`, /is the data directory of server beta-db \(srv_other\)/],
    ["a subdirectory of another server's data", `${ROOT}/srv_other/world`, /is the data directory of server beta-db/],
  ])("move_data refuses %s before anything is written", (_name, source, message) => {
    const err = codeOf(() =>
      planAdoption(finding({ kind: OrphanKind.UNMANAGED }), info({ mounts: [[source, "/data"]] }), ROOT, {
        ...req,
        moveData: true,
        dataDirOwner: (e) => (e === "srv_other" ? "beta-db (srv_other)" : undefined),
      }),
    );
    expect(err?.code).toBe(Code.FailedPrecondition);
    expect(err?.message).toMatch(message);
  });

  it("move_data copies a data-root directory no record owns, and nothing outside it by default", () => {
    const f = finding({ kind: OrphanKind.UNMANAGED });
    expect(planAdoption(f, info({ mounts: [[`${ROOT}/old-world`, "/data"]] }), ROOT, { ...req, moveData: true, adoptablePaths: [], dataDirOwner: () => undefined }).mode).toBe("copy");
    expect(codeOf(() => planAdoption(f, info({ mounts: [["/srv/web", "/data"]] }), ROOT, { ...req, moveData: true, adoptablePaths: [] }))?.message).toMatch(/none set/);
  });

  it("refuses a container with privileges berth never grants, in every mode, force or not", () => {
    const privileged = info({ unsupported: ['privilege: network mode "host"', 'privilege: pid mode "host"', "privilege: added capabilities beyond berth's allow-list (SYS_ADMIN)", "a TTY"] });
    for (const [f, r] of [
      [finding({ kind: OrphanKind.UNMANAGED }), req],
      [finding({ kind: OrphanKind.FOREIGN }), { ...req, force: true }],
      [finding({ serverId: "srv_abcd" }), req],
    ] as const) {
      const err = codeOf(() => planAdoption(f, privileged, ROOT, r));
      expect(err?.code).toBe(Code.FailedPrecondition);
      expect(err?.message).toMatch(/runs with privileges berth never gives a server: network mode "host"; pid mode "host"; added capabilities beyond berth's allow-list \(SYS_ADMIN\)\. Recreate it without them/);
    }
  });

  it("a read-only mount is never the data", () => {
    const err = codeOf(() => planAdoption(finding({ kind: OrphanKind.UNMANAGED }), info({ mounts: [["/srv/conf", "/conf", "bind", true]] }), ROOT, { ...req, moveData: true }));
    expect(err?.message).toMatch(/read-only/);
  });

  it("refuses stray data, stranded servers, and foreign containers without force", () => {
    expect(codeOf(() => refuseAdoption(finding({ kind: OrphanKind.STRAY_DATA, dataPath: "/x" }), false))?.message).toMatch(/no configuration to adopt/);
    expect(codeOf(() => refuseAdoption(finding({ kind: OrphanKind.STRANDED, serverName: "s" }), true))?.message).toMatch(/ReassignServer/);
    expect(codeOf(() => refuseAdoption(finding({ kind: OrphanKind.FOREIGN, managerLabel: "mgr_x" }), false))).toMatchObject({ code: Code.FailedPrecondition, message: expect.stringMatching(/mgr_x.*force=true/) });
    expect(codeOf(() => refuseAdoption(finding({ kind: OrphanKind.FOREIGN }), true))).toBeUndefined();
    const p = planAdoption(finding({ kind: OrphanKind.FOREIGN }), info(), ROOT, { ...req, force: true });
    expect(p.mode).toBe("bind");
  });
});

describe("planDestroy", () => {
  it("a container: removed; its data directory kept unless remove_data; outside mounts always kept", () => {
    const f = finding({ dataDir: "srv_a", dataPath: `${ROOT}/srv_a`, dataSizeBytes: 3 * 1024 * 1024, mounts: [`${ROOT}/srv_a:/data`, "/srv/shared:/shared"] });
    const keep = planDestroy(f, "a", { removeData: false, force: false });
    expect(keep.actions).toEqual([{ what: "container", containerId: f.containerId }]);
    expect(keep.removed).toEqual(["container web (c0ffee012345, img:1, running) on host a"]);
    expect(keep.kept).toEqual([
      `data directory ${ROOT}/srv_a, 3 MiB on host a: set remove_data to delete it`,
      "/srv/shared (mounted by the container): berth never deletes anything outside the server's data directory",
    ]);
    const all = planDestroy(f, "a", { removeData: true, force: false });
    expect(all.actions).toEqual([
      { what: "container", containerId: f.containerId },
      { what: "data", name: "srv_a" },
    ]);
    expect(all.removed[1]).toBe(`data directory ${ROOT}/srv_a, 3 MiB on host a`);
    expect(all.kept).toHaveLength(1);
  });

  it("foreign needs force, even to look", () => {
    const f = finding({ kind: OrphanKind.FOREIGN, managerLabel: "mgr_other" });
    expect(codeOf(() => planDestroy(f, "a", { removeData: false, force: false }))?.code).toBe(Code.FailedPrecondition);
    expect(planDestroy(f, "a", { removeData: false, force: true }).actions).toHaveLength(1);
  });

  it("stray data is only data; a stranded server is its record", () => {
    const stray = finding({ kind: OrphanKind.STRAY_DATA, containerId: "", dataDir: "junk", dataPath: `${ROOT}/junk` });
    expect(planDestroy(stray, "a", { removeData: true, force: false }).actions).toEqual([{ what: "data", name: "junk" }]);
    expect(planDestroy(stray, "a", { removeData: false, force: false }).actions).toEqual([]);
    const stranded = finding({ kind: OrphanKind.STRANDED, containerId: "", serverId: "srv_s", serverName: "s", project: "p", dataPath: "/d/srv_s" });
    const p = planDestroy(stranded, "gone", { removeData: true, force: false });
    expect(p.actions).toEqual([{ what: "record", serverId: "srv_s" }]);
    expect(p.removed).toEqual(["server record s (srv_s, project p)"]);
    expect(p.kept[0]).toMatch(/\/d\/srv_s on removed host gone/);
  });

  it("formats sizes", () => {
    expect([formatBytes(12), formatBytes(2048), formatBytes(5 * 2 ** 30)]).toEqual(["12 bytes", "2 KiB", "5 GiB"]);
  });
});
