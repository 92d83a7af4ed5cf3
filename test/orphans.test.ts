/**
 * Orphans against real processes and a real Docker engine: containers and
 * data made behind berth's back (by hand, with the Docker API), listed,
 * adopted and destroyed; servers stranded by RemoveHost, reassigned or dropped.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { OrphanKind, OrphanService, type Orphan } from "@berth/proto/berth/v1/orphan_pb.js";
import { DesiredState, Phase, ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import { specHash } from "../manager/src/reconcile/spec-hash.js";
import { dockerClient, removeBerthContainers, TEST_IMAGE } from "./harness/docker-engine.js";
import { eventsFor } from "./harness/ledger.js";
import { removeTestDir, startAgent, startManager, tempDir, waitFor, waitForHostOnline, waitForLines, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { testDockerHost } from "./harness/engine.js";

const SLEEPER = ["sh", "-c", "date >> /data/starts 2>/dev/null; exec sleep 100000"];
/** The grace period this manager runs with (--orphan-grace). */
const GRACE_S = 2;

describe("orphans", () => {
  const docker = dockerClient(testDockerHost());
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc & { dataRoot: string; stateDir: string };
  let orphans: Client<typeof OrphanService>;
  let managerId: string;
  let hostId: string;
  const containers: string[] = [];
  let n = 0;

  beforeAll(async () => {
    dir = await tempDir("orphans");
    // The move_data test copies from a directory in `dir`: the admin allows it (--adoptable-path).
    manager = await startManager({ dir, args: ["--orphan-grace", String(GRACE_S), "--adoptable-path", dir] });
    agent = await startAgent({ manager, dir });
    hostId = (await waitForHostOnline(manager)).id;
    orphans = createClient(OrphanService, manager.transport(manager.adminToken));
    managerId = manager.managerId;
  });

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    await removeBerthContainers(docker, { managerId, containerIds: containers });
    await removeTestDir(dir);
  });

  const uniq = (p: string) => `${p}-${Date.now().toString(36)}-${n++}`;
  /** A server id in berth's format that no record has. */
  const serverId = () => `srv_${Array.from({ length: 12 }, () => "abcdefghijklmnopqrstuvwxyz234567"[Math.floor(Math.random() * 32)]).join("")}`;

  /** Creates and starts a container by hand, as someone working behind berth's back would. */
  async function handmade(opts: { labels?: Record<string, string>; mounts?: { source: string; target: string }[]; name?: string }): Promise<string> {
    const c = await docker.createContainer({
      name: opts.name ?? uniq("handmade"),
      Image: TEST_IMAGE,
      Cmd: SLEEPER,
      Labels: opts.labels ?? {},
      HostConfig: { Init: true, Mounts: (opts.mounts ?? []).map((m) => ({ Type: "bind" as const, Source: m.source, Target: m.target })) },
    });
    containers.push(c.id);
    await c.start();
    return c.id;
  }

  /** Labels exactly as berth puts them for `spec` of server `id`. */
  function berthLabels(id: string, manager = managerId): Record<string, string> {
    const hash = specHash(create(ServerSpecSchema, { image: TEST_IMAGE, command: SLEEPER, dataMountPath: "/data" }));
    return { "berth.manager": manager, "berth.server": id, "berth.generation": "1", "berth.spec-hash": hash };
  }

  const list = async (includeUnmanaged = false) => (await orphans.listOrphans({ includeUnmanaged })).orphans;
  const byContainer = async (containerId: string, includeUnmanaged = false) => (await list(includeUnmanaged)).find((o) => o.containerId === containerId);
  const waitListed = (what: string, find: (os: Orphan[]) => Orphan | undefined, includeUnmanaged = false, timeoutMs = 15_000) =>
    waitFor(what, async () => find(await list(includeUnmanaged)), timeoutMs, 50);
  const exists = async (containerId: string) => docker.getContainer(containerId).inspect().then(() => true, () => false);
  const errorOf = async (p: Promise<unknown>) => {
    try {
      await p;
      return undefined;
    } catch (e) {
      return ConnectError.from(e);
    }
  };
  /** Unlabelled containers and new directories are only seen at a full inventory: ask for one. */
  const resync = () => manager.hosts.resyncHost({ id: hostId });

  it("a container with this manager's labels and no record: not listed inside the grace period, then untracked within a second", async () => {
    const sid = serverId();
    const t0 = Date.now();
    const id = await handmade({ labels: berthLabels(sid) });
    // Inside the grace period: seen (the Docker event arrives within milliseconds), not flagged.
    await new Promise((r) => setTimeout(r, 300));
    expect(await byContainer(id)).toBeUndefined();
    await new Promise((r) => setTimeout(r, GRACE_S * 1000 - (Date.now() - t0) - 400));
    expect(await byContainer(id)).toBeUndefined();
    const o = await waitListed("the untracked container", (os) => os.find((x) => x.containerId === id));
    expect(Date.now() - (t0 + GRACE_S * 1000)).toBeLessThan(1000);
    expect(o).toMatchObject({ kind: OrphanKind.UNTRACKED, hostId, serverId: sid, image: TEST_IMAGE, state: "running" });
    expect(o.id).toMatch(/^orp_[a-z2-7]{20}$/);
    expect(o.labels["berth.manager"]).toBe(managerId);
    expect(o.reason).toMatch(/no record/);
    expect(Number(o.createTime!.seconds) * 1000).toBeGreaterThanOrEqual(Math.floor(t0 / 1000) * 1000 - 1000);
    // The same orphan keeps its id.
    expect((await byContainer(id))!.id).toBe(o.id);
  });

  it("adopting an untracked container: a Running server with the same id, the same container kept running, its data kept", async () => {
    const sid = serverId();
    const data = join(agent.dataRoot, sid);
    mkdirSync(data);
    writeFileSync(join(data, "precious.txt"), "keep me");
    const id = await handmade({ labels: berthLabels(sid), mounts: [{ source: data, target: "/data" }] });
    await resync();
    const o = await waitListed("untracked with its data", (os) => os.find((x) => x.containerId === id && x.dataPath === data));

    const name = uniq("adopted");
    const { server, warnings } = await orphans.adoptOrphan({ id: o.id, project: "default", name });
    expect(warnings).toEqual([]);
    expect(server!.id).toBe(sid);
    expect(server!.project).toBe("default");
    expect(server!.spec).toMatchObject({ name, image: TEST_IMAGE, command: SLEEPER, dataMountPath: "/data", hostId, desiredState: DesiredState.RUNNING });
    // Right after: Running, on the very same container (its spec hash matches).
    expect(server!.status!.phase).toBe(Phase.RUNNING);
    expect(server!.status!.containerId).toBe(id);
    // It was made without berth's default pids limit: that is set live (docker update), on the same running container.
    await waitFor("the limits applied", async () => (await manager.servers.getServer({ id: sid })).server!.status!.conditions.find((c) => c.type === "SpecApplied")?.status === 1 /* TRUE */, 30_000);
    expect((await manager.servers.getServer({ id: sid })).server!.status!.containerId).toBe(id);
    expect((await docker.getContainer(id).inspect()).HostConfig.PidsLimit).toBe(512);
    expect(server!.status!.dataExists).toBe(true);
    expect((await docker.getContainer(id).inspect()).State.Running).toBe(true);
    expect(readFileSync(join(data, "precious.txt"), "utf8")).toBe("keep me");
    const events = eventsFor(manager.dbPath, sid);
    expect(events.find((e) => e.type === "orphan.adopted")?.actor).toMatch(/^token:/);
    expect(await byContainer(id)).toBeUndefined();

    // It is a server like any other now.
    await manager.servers.stopServer({ id: sid, timeoutSeconds: 1 });
    await waitForPhase(manager, sid, Phase.STOPPED);
    expect((await docker.getContainer(id).inspect()).State.Running).toBe(false);
  });

  it("destroying an untracked container: dry run removes nothing, then the container goes and its data stays (a stray directory now, removable)", async () => {
    const sid = serverId();
    const data = join(agent.dataRoot, sid);
    mkdirSync(data);
    writeFileSync(join(data, "db"), "rows");
    const id = await handmade({ labels: berthLabels(sid), mounts: [{ source: data, target: "/data" }] });
    await resync();
    const o = await waitListed("untracked with its data", (os) => os.find((x) => x.containerId === id && x.dataPath === data));

    const dry = await orphans.destroyOrphan({ id: o.id, dryRun: true });
    expect(dry.removed).toHaveLength(1);
    expect(dry.removed[0]).toContain(id.slice(0, 12));
    expect(dry.kept.join("\n")).toContain(data);
    expect(await exists(id)).toBe(true);
    const withData = await orphans.destroyOrphan({ id: o.id, dryRun: true, removeData: true });
    expect(withData.removed.join("\n")).toContain(data);
    expect(existsSync(data)).toBe(true);
    expect((await byContainer(id))?.id).toBe(o.id);

    const done = await orphans.destroyOrphan({ id: o.id });
    expect(done.removed).toEqual(dry.removed);
    expect(await exists(id)).toBe(false);
    expect(readFileSync(join(data, "db"), "utf8")).toBe("rows");
    expect(await byContainer(id)).toBeUndefined();

    // What is left is a stray data directory, removed only when asked.
    const stray = (await list()).find((x) => x.kind === OrphanKind.STRAY_DATA && x.dataPath === data)!;
    expect(stray).toBeDefined();
    expect(stray.reason).toMatch(/no record/);
    const refused = await errorOf(orphans.destroyOrphan({ id: stray.id }));
    expect(refused?.code).toBe(Code.InvalidArgument);
    expect(refused?.rawMessage).toMatch(/remove_data/);
    await orphans.destroyOrphan({ id: stray.id, removeData: true });
    expect(existsSync(data)).toBe(false);
    expect((await list()).some((x) => x.id === stray.id)).toBe(false);
  });

  it("a stray data directory that is no server's appears and can be removed", async () => {
    const name = uniq("leftover");
    mkdirSync(join(agent.dataRoot, name));
    writeFileSync(join(agent.dataRoot, name, "file"), "x");
    await resync();
    const o = await waitListed("the stray directory", (os) => os.find((x) => x.kind === OrphanKind.STRAY_DATA && x.dataPath.endsWith(`/${name}`)));
    expect(o).toMatchObject({ hostId, containerId: "", dataPath: join(agent.dataRoot, name) });
    expect((await orphans.destroyOrphan({ id: o.id, dryRun: true, removeData: true })).removed).toEqual([expect.stringContaining(join(agent.dataRoot, name))]);
    expect(existsSync(join(agent.dataRoot, name))).toBe(true);
    const r = await orphans.destroyOrphan({ id: o.id, removeData: true });
    expect(r.removed).toHaveLength(1);
    expect(existsSync(join(agent.dataRoot, name))).toBe(false);
    const events = (await manager.access.whoAmI({})).token!;
    const db = new Database(manager.dbPath, { readonly: true });
    const row = db.prepare("SELECT actor, correlation_id FROM events WHERE type = 'orphan.destroyed' AND correlation_id = ?").get(o.id) as { actor: string } | undefined;
    db.close();
    expect(row?.actor).toBe(`token:${events.id}:${events.name}`);
  });

  it("a container of another berth manager is foreign: never destroyed or adopted without force", async () => {
    const id = await handmade({ labels: berthLabels(serverId(), "mgr_someoneelse") });
    const o = await waitListed("the foreign container", (os) => os.find((x) => x.containerId === id));
    expect(o.kind).toBe(OrphanKind.FOREIGN);
    expect(o.reason).toContain("mgr_someoneelse");

    for (const attempt of [orphans.destroyOrphan({ id: o.id }), orphans.destroyOrphan({ id: o.id, removeData: true }), orphans.adoptOrphan({ id: o.id, project: "default", name: uniq("nope") })]) {
      const err = await errorOf(attempt);
      expect(err?.code).toBe(Code.FailedPrecondition);
      expect(err?.rawMessage).toMatch(/force/);
    }
    expect(await exists(id)).toBe(true);
    // Even a dry run says it needs force.
    expect((await errorOf(orphans.destroyOrphan({ id: o.id, dryRun: true })))?.code).toBe(Code.FailedPrecondition);

    await orphans.destroyOrphan({ id: o.id, force: true });
    expect(await exists(id)).toBe(false);
  });

  it("unmanaged containers are listed only when asked, and adopt in place: Running at once, berth's own container after a restart", async () => {
    const id = await handmade({ name: uniq("plain") });
    await resync();
    const o = await waitListed("the unmanaged container", (os) => os.find((x) => x.containerId === id), true);
    expect(o.kind).toBe(OrphanKind.UNMANAGED);
    expect(o.labels).toEqual({});
    expect(await byContainer(id, false)).toBeUndefined();

    const name = uniq("plain");
    const { server } = await orphans.adoptOrphan({ id: o.id, project: "default", name });
    expect(server!.status!.phase).toBe(Phase.RUNNING);
    expect(server!.status!.containerId).toBe(id);
    expect(server!.spec!.command).toEqual(SLEEPER);
    expect(await byContainer(id, true)).toBeUndefined();

    // Docker labels cannot change: the first restart recreates it as berth's own container.
    await manager.servers.restartServer({ id: server!.id });
    const restarted = await waitFor("a labelled container", async () => {
      const { server: s } = await manager.servers.getServer({ id: server!.id });
      return s!.status!.phase === Phase.RUNNING && s!.status!.containerId !== id ? s : undefined;
    });
    expect(await exists(id)).toBe(false);
    const labels = (await docker.getContainer(restarted!.status!.containerId).inspect()).Config.Labels;
    expect(labels).toMatchObject({ "berth.manager": managerId, "berth.server": server!.id });
    expect(restarted!.status!.conditions.find((c) => c.type === "SpecApplied")?.status).toBe(1 /* TRUE */);
  });

  it("an unmanaged container with data outside the data root: refused with an explanation, or moved with move_data", async () => {
    const outside = join(dir, uniq("outside"));
    mkdirSync(outside);
    writeFileSync(join(outside, "world.dat"), "blocks");
    const id = await handmade({ mounts: [{ source: outside, target: "/data" }] });
    await waitForLines(join(outside, "starts"), 1);
    await resync();
    const o = await waitListed("the unmanaged container", (os) => os.find((x) => x.containerId === id), true);

    const name = uniq("moved");
    const refused = await errorOf(orphans.adoptOrphan({ id: o.id, project: "default", name }));
    expect(refused?.code).toBe(Code.FailedPrecondition);
    expect(refused?.rawMessage).toContain(outside);
    expect(refused?.rawMessage).toMatch(/move_data/);
    expect((await docker.getContainer(id).inspect()).State.Running).toBe(true);

    const { server } = await orphans.adoptOrphan({ id: o.id, project: "default", name, moveData: true });
    expect(server!.spec!.dataMountPath).toBe("/data");
    const running = await waitForPhase(manager, server!.id, Phase.RUNNING);
    expect(running.status!.containerId).not.toBe(id);
    expect(await exists(id)).toBe(false);
    // The copy is the server's data (the new container started with it); the original stays.
    expect(readFileSync(join(agent.dataRoot, server!.id, "world.dat"), "utf8")).toBe("blocks");
    expect(await waitForLines(join(agent.dataRoot, server!.id, "starts"), 2)).toBe(2);
    expect(readFileSync(join(outside, "world.dat"), "utf8")).toBe("blocks");
    expect(eventsFor(manager.dbPath, server!.id).map((e) => e.type)).toEqual(expect.arrayContaining(["orphan.adopted", "command.issued", "command.succeeded"]));
    expect((await list(true)).some((x) => x.containerId === id)).toBe(false);
  });

  it("servers stranded by RemoveHost: reassigned to a host that has their data, or dropped", async () => {
    const dirB = join(dir, "host-b");
    mkdirSync(dirB);
    const agentB = await startAgent({ manager, dir: dirB });
    const hostB = (await waitFor("host B online", async () => (await manager.hosts.listHosts({})).hosts.find((h) => h.state === 1 && h.id !== hostId)))!.id;
    const make = async (desiredState: DesiredState) =>
      (await manager.servers.createServer({ spec: { name: uniq("stranded"), image: TEST_IMAGE, command: SLEEPER, hostId: hostB, desiredState } })).server!;
    const s1 = await make(DesiredState.RUNNING);
    const s2 = await make(DesiredState.STOPPED);
    const c1 = (await waitForPhase(manager, s1.id, Phase.RUNNING)).status!.containerId;
    await waitForLines(join(agentB.dataRoot, s1.id, "starts"), 1);
    const c2 = (await waitForPhase(manager, s2.id, Phase.STOPPED)).status!.containerId;
    containers.push(c1, c2);

    await manager.hosts.removeHost({ id: hostB });
    await waitFor("agent B to exit", async () => agentB.child.exitCode !== null);
    // The host is gone for good; so are its containers (both agents share one engine here).
    for (const c of [c1, c2]) await docker.getContainer(c).remove({ force: true });
    const stranded = (await orphans.listOrphans({ kinds: [OrphanKind.STRANDED] })).orphans;
    const o1 = stranded.find((o) => o.serverId === s1.id)!;
    const o2 = stranded.find((o) => o.serverId === s2.id)!;
    expect(o1).toMatchObject({ hostId: hostB, image: TEST_IMAGE, dataPath: join(agentB.dataRoot, s1.id) });
    expect(o1.reason).toMatch(/removed/);
    expect(o2).toBeDefined();

    // Host A does not have s1's data yet.
    const noData = await errorOf(orphans.reassignServer({ id: o1.id, hostId }));
    expect(noData?.code).toBe(Code.FailedPrecondition);
    expect(noData?.rawMessage).toContain(join(agent.dataRoot, s1.id));
    // Bring it over (as an operator would, with rsync or a restore), and let the agent list it.
    execFileSync("cp", ["-a", join(agentB.dataRoot, s1.id), join(agent.dataRoot, s1.id)]);
    await resync();
    await waitListed("the copied directory, stray until the server moves", (os) => os.find((x) => x.kind === OrphanKind.STRAY_DATA && x.dataPath === join(agent.dataRoot, s1.id)));
    const { server: moved } = await orphans.reassignServer({ id: s1.id, hostId });
    expect(moved!.spec!.hostId).toBe(hostId);
    expect(moved!.generation).toBe(s1.generation + 1n);
    const back = await waitForPhase(manager, s1.id, Phase.RUNNING);
    expect(back.status!.containerId).not.toBe(c1);
    expect(await waitForLines(join(agent.dataRoot, s1.id, "starts"), 2)).toBe(2);
    expect(eventsFor(manager.dbPath, s1.id).find((e) => e.type === "server.reassigned")?.actor).toMatch(/^token:/);
    const after = await list();
    expect(after.some((x) => x.serverId === s1.id)).toBe(false);

    // s2: dropped. A dry run names the record and what stays on the removed host.
    const dry = await orphans.destroyOrphan({ id: o2.id, dryRun: true });
    expect(dry.removed).toEqual([expect.stringContaining(s2.id)]);
    expect(dry.kept.join("\n")).toContain(join(agentB.dataRoot, s2.id));
    expect((await manager.servers.getServer({ id: s2.id })).server).toBeDefined();
    await orphans.destroyOrphan({ id: o2.id });
    expect((await errorOf(manager.servers.getServer({ id: s2.id })))?.code).toBe(Code.NotFound);
    expect(eventsFor(manager.dbPath, s2.id).map((e) => e.type)).toEqual(expect.arrayContaining(["orphan.destroyed", "server.purged"]));
  });

  it("answers unknown and malformed orphan ids precisely", async () => {
    expect((await errorOf(orphans.destroyOrphan({ id: "orp_aaaaaaaaaaaaaaaaaaaa", dryRun: true })))?.code).toBe(Code.NotFound);
    const bad = await errorOf(orphans.adoptOrphan({ id: "nope", project: "default", name: "x" }));
    expect(bad?.code).toBe(Code.InvalidArgument);
    expect(bad?.rawMessage).toMatch(/^id: /);
  });
});
