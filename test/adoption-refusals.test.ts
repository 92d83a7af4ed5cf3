/**
 * Issue 15 against a real Docker engine: what AdoptOrphan refuses (host
 * directories outside --adoptable-path, another server's data directory,
 * containers with privileges berth never grants) leaves no record, event or
 * alert behind; and a secret env value reaches the container while the
 * database never holds it and every reader sees it masked.
 */
import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import type Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { AccessService, Role } from "@berth/proto/berth/v1/access_pb.js";
import { AlertService } from "@berth/proto/berth/v1/alert_pb.js";
import { OrphanService, type Orphan } from "@berth/proto/berth/v1/orphan_pb.js";
import { Phase, ServerService } from "@berth/proto/berth/v1/server_pb.js";
import { dockerClient, removeBerthContainers, TEST_IMAGE } from "./harness/docker-engine.js";
import { removeTestDir, startAgent, startManager, tempDir, waitFor, waitForHostOnline, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { testDockerHost } from "./harness/engine.js";

const SLEEPER = ["sh", "-c", "exec sleep 100000"];
const SECRET = "pw-9f3c1e7a-never-at-rest";

describe("adoption refusals and secret env on real Docker", () => {
  const docker = dockerClient(testDockerHost());
  let dir: string;
  let allowed: string;
  let manager: ManagerProc;
  let agent: Proc & { dataRoot: string; stateDir: string };
  let orphans: Client<typeof OrphanService>;
  let hostId: string;
  const containers: string[] = [];
  let n = 0;

  beforeAll(async () => {
    dir = await tempDir("adoption-refusals");
    allowed = join(dir, "games");
    mkdirSync(allowed);
    manager = await startManager({ dir, args: ["--orphan-grace", "0", "--adoptable-path", allowed] });
    agent = await startAgent({ manager, dir });
    hostId = (await waitForHostOnline(manager)).id;
    orphans = createClient(OrphanService, manager.transport(manager.adminToken));
  });

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    await removeBerthContainers(docker, { managerId: manager?.managerId, containerIds: containers });
    await removeTestDir(dir);
  });

  const uniq = (p: string) => `${p}-${Date.now().toString(36)}-${n++}`;
  const errorOf = async (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => ConnectError.from(e));

  async function handmade(host: Docker.ContainerCreateOptions["HostConfig"], binds: { source: string; target: string }[] = [], start = true): Promise<Orphan> {
    const c = await docker.createContainer({
      name: uniq("handmade"),
      Image: TEST_IMAGE,
      Cmd: SLEEPER,
      HostConfig: { Init: true, Mounts: binds.map((m) => ({ Type: "bind" as const, Source: m.source, Target: m.target })), ...host },
    });
    containers.push(c.id);
    if (start) await c.start();
    await manager.hosts.resyncHost({ id: hostId });
    return (await waitFor("the orphan", async () => (await orphans.listOrphans({ includeUnmanaged: true })).orphans.find((o) => o.containerId === c.id), 15_000, 50))!;
  }

  /** After a refusal: no record under that name, no adoption event, no alert about it; the container still runs. */
  async function nothingLeft(name: string, o: Orphan, running = true): Promise<void> {
    const db = new Database(manager.dbPath, { readonly: true, fileMustExist: true });
    try {
      expect(db.prepare("SELECT COUNT(*) AS n FROM servers WHERE name = ?").get(name)).toEqual({ n: 0 });
      expect(db.prepare("SELECT COUNT(*) AS n FROM events WHERE type LIKE 'orphan.adopt%' AND correlation_id = ?").get(o.id)).toEqual({ n: 0 });
    } finally {
      db.close();
    }
    const alerts = await createClient(AlertService, manager.transport(manager.adminToken)).listAlerts({});
    expect(alerts.alerts.some((a) => a.message.includes(name))).toBe(false);
    expect((await docker.getContainer(o.containerId).inspect()).State.Running).toBe(running);
  }

  it("move_data of a root-only host directory outside --adoptable-path: refused, naming the setting, nothing written", async () => {
    const secretDir = join(dir, uniq("root-only"));
    mkdirSync(secretDir);
    writeFileSync(join(secretDir, "shadow"), "root:x:0:0");
    chmodSync(secretDir, 0o700);
    for (const source of [secretDir, "/etc"]) {
      const o = await handmade({}, [{ source, target: "/data" }]);
      const name = uniq("etc");
      const err = await errorOf(orphans.adoptOrphan({ id: o.id, project: "default", name, moveData: true }));
      expect(err?.code).toBe(Code.FailedPrecondition);
      expect(err?.rawMessage).toContain(`the mount source ${source} is outside berth's data root`);
      expect(err?.rawMessage).toContain("--adoptable-path");
      await nothingLeft(name, o);
    }
  });

  it("move_data of another server's data directory (another project's): refused", async () => {
    const beta = (await manager.servers.createServer({ project: "beta", spec: { name: uniq("beta-db"), image: TEST_IMAGE, command: SLEEPER } })).server!;
    await waitForPhase(manager, beta.id, Phase.RUNNING);
    const o = await handmade({}, [{ source: join(agent.dataRoot, beta.id), target: "/data" }]);
    const name = uniq("thief");
    const err = await errorOf(orphans.adoptOrphan({ id: o.id, project: "alpha", name, moveData: true }));
    expect(err?.code).toBe(Code.FailedPrecondition);
    expect(err?.rawMessage).toContain(`is the data directory of server ${beta.spec!.name} (${beta.id})`);
    await nothingLeft(name, o);
    // The data root itself is refused too.
    const root = await handmade({}, [{ source: agent.dataRoot, target: "/data" }]);
    expect((await errorOf(orphans.adoptOrphan({ id: root.id, project: "alpha", name, moveData: true })))?.rawMessage).toContain("is berth's data root itself");
    await nothingLeft(name, root);
  });

  it("a container with host network, host PID and CAP_SYS_ADMIN: refused in place and with force; one inside the allow-list is adopted", async () => {
    const o = await handmade({ NetworkMode: "host", PidMode: "host", CapAdd: ["SYS_ADMIN"] });
    const name = uniq("hostnet");
    for (const req of [{}, { force: true }]) {
      const err = await errorOf(orphans.adoptOrphan({ id: o.id, project: "default", name, ...req }));
      expect(err?.code).toBe(Code.FailedPrecondition);
      expect(err?.rawMessage).toContain("runs with privileges berth never gives a server: added capabilities beyond berth's allow-list (SYS_ADMIN)");
      expect(err?.rawMessage).toMatch(/network mode "host"; pid mode "host"/);
    }
    await nothingLeft(name, o);
    // (This nested engine cannot start a privileged container: it is adopted, or not, as created.)
    for (const [host, start] of [
      [{ Privileged: true }, false],
      [{ Devices: [{ PathOnHost: "/dev/null", PathInContainer: "/dev/xnull", CgroupPermissions: "rwm" }] }, true],
      [{ SecurityOpt: ["apparmor=unconfined", "seccomp=unconfined"] }, true],
    ] as const) {
      const p = await handmade(host, [], start);
      expect((await errorOf(orphans.adoptOrphan({ id: p.id, project: "default", name })))?.rawMessage).toMatch(/privileges berth never gives a server/);
      await nothingLeft(name, p, start);
    }

    // The control: a directory under --adoptable-path moves in.
    const world = join(allowed, uniq("world"));
    mkdirSync(world);
    writeFileSync(join(world, "level.dat"), "blocks");
    const ok = await handmade({}, [{ source: world, target: "/data" }]);
    const { server } = await orphans.adoptOrphan({ id: ok.id, project: "default", name: uniq("world"), moveData: true });
    await waitForPhase(manager, server!.id, Phase.RUNNING);
    expect(readFileSync(join(agent.dataRoot, server!.id, "level.dat"), "utf8")).toBe("blocks");
  });

  it("a move_data copy the agent refuses (a FIFO in an allowed directory): the record is rolled back, nothing left but the failure event", async () => {
    const world = join(allowed, uniq("with-fifo"));
    mkdirSync(world);
    writeFileSync(join(world, "level.dat"), "blocks");
    execFileSync("mkfifo", [join(world, "pipe")]);
    const o = await handmade({}, [{ source: world, target: "/data" }]);
    const name = uniq("fifo");
    // Validation passes (the path is allowed): the manager writes the record, then the agent refuses the FIFO.
    const err = await errorOf(orphans.adoptOrphan({ id: o.id, project: "default", name, moveData: true }));
    const failed = await waitFor("the adoption rolled back", async () => {
      const db = new Database(manager.dbPath, { readonly: true, fileMustExist: true });
      try {
        const rows = (db.prepare("SELECT COUNT(*) AS n FROM servers WHERE name = ?").get(name) as { n: number }).n;
        const event = db.prepare("SELECT message FROM events WHERE type = 'orphan.adopt_failed' AND correlation_id = ?").get(o.id) as { message: string } | undefined;
        return rows === 0 && event;
      } finally {
        db.close();
      }
    }, 30_000, 100);
    expect(failed.message).toContain(`server ${name} was not adopted and its record is removed`);
    if (err) expect([Code.FailedPrecondition, Code.Aborted, Code.Unavailable]).toContain(err.code);
    const alerts = await createClient(AlertService, manager.transport(manager.adminToken)).listAlerts({});
    expect(alerts.alerts.some((a) => a.message.includes(name))).toBe(false);
    // The container and its data are untouched.
    expect((await docker.getContainer(o.containerId).inspect()).State.Running).toBe(true);
    expect(readFileSync(join(world, "level.dat"), "utf8")).toBe("blocks");
  });

  it("a secret env value: in the container (docker inspect), never in the database or its WAL, masked for a viewer and an admin", async () => {
    const name = uniq("secret");
    const created = await manager.servers.createServer({ spec: { name, image: TEST_IMAGE, command: SLEEPER, env: { DB_PASSWORD: SECRET, MODE: "plain" }, secretEnv: ["DB_PASSWORD"] } });
    expect(created.server!.spec!.env.DB_PASSWORD).toBe("********");
    const running = await waitForPhase(manager, created.server!.id, Phase.RUNNING);
    const env = (await docker.getContainer(running.status!.containerId).inspect()).Config.Env;
    expect(env).toContain(`DB_PASSWORD=${SECRET}`);
    const { secret: viewer } = await createClient(AccessService, manager.transport(manager.adminToken)).createToken({ name: uniq("v"), role: Role.VIEWER, project: "default" });
    for (const token of [viewer, manager.adminToken]) {
      const c = createClient(ServerService, manager.transport(token));
      expect((await c.getServer({ id: running.id })).server!.spec!.env).toEqual({ DB_PASSWORD: "********", MODE: "plain" });
    }
    // UpdateServer with what GetServer showed keeps the value (applied now: the container is recreated with it).
    const shown = (await manager.servers.getServer({ id: running.id })).server!.spec!;
    await manager.servers.updateServer({ id: running.id, spec: { ...shown, env: { ...shown.env, MODE: "changed" } }, applyNow: true });
    const after = await waitFor("recreated with the new spec", async () => {
      const s = (await manager.servers.getServer({ id: running.id })).server!;
      return s.status!.phase === Phase.RUNNING && s.status!.containerId !== running.status!.containerId ? s : undefined;
    }, 30_000);
    expect((await docker.getContainer(after!.status!.containerId).inspect()).Config.Env).toEqual(expect.arrayContaining([`DB_PASSWORD=${SECRET}`, "MODE=changed"]));
    // At rest: neither the database file nor its WAL holds the value (grep -c counts 0 lines).
    for (const f of [manager.dbPath, `${manager.dbPath}-wal`]) {
      expect(readFileSync(f).includes(SECRET)).toBe(false);
      expect(execFileSync("sh", ["-c", `grep -c -a -- '${SECRET}' '${f}' || true`]).toString().trim()).toBe("0");
    }
    const db = new Database(manager.dbPath, { readonly: true, fileMustExist: true });
    const row = db.prepare("SELECT spec_json FROM servers WHERE id = ?").get(running.id) as { spec_json: string };
    db.close();
    expect(JSON.parse(row.spec_json).env.DB_PASSWORD).toMatch(/^enc:v1:/);
  });
});
