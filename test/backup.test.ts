/**
 * Backup and restore against real processes and a real Docker engine:
 * `berth-manager backup` while the manager runs, then a restore of that
 * (older) backup. The reconciler re-converges on the restored desired state,
 * and a server created after the backup is not destroyed: its container
 * keeps running and shows up as an untracked orphan, which can be adopted.
 */
import { execFile } from "node:child_process";
import { copyFileSync, existsSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { OrphanKind, OrphanService } from "@berth/proto/berth/v1/orphan_pb.js";
import { DesiredState, Phase } from "@berth/proto/berth/v1/server_pb.js";
import { dockerClient, TEST_IMAGE } from "./harness/docker-engine.js";
import { REPO_ROOT, startAgent, startManager, tempDir, waitFor, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { MANAGER_BUNDLE } from "./harness/bundles.js";
import { testDockerHost } from "./harness/engine.js";

const SLEEPER = ["sh", "-c", "exec sleep 100000"];
const MANAGER_ARGS = ["--orphan-grace", "1"];

describe("backup and restore", () => {
  const docker = dockerClient(testDockerHost());
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc & { dataRoot: string };
  let managerId = "";

  beforeAll(async () => {
    dir = await tempDir("backup");
    manager = await startManager({ dir, args: MANAGER_ARGS });
    agent = await startAgent({ manager, dir });
    await waitFor("host online", async () => (await manager.hosts.listHosts({})).hosts.find((h) => h.state === 1));
  });

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    const mine = managerId ? await docker.listContainers({ all: true, filters: { label: [`berth.manager=${managerId}`] } }) : [];
    for (const c of mine) await docker.getContainer(c.Id).remove({ force: true }).catch(() => {});
    if (dir && !process.env.BERTH_KEEP_TEST_DIRS) rmSync(dir, { recursive: true, force: true });
  });

  const backup = (args: string[]) =>
    promisify(execFile)(process.execPath, [MANAGER_BUNDLE, "backup", ...args], { cwd: REPO_ROOT });

  it("a backup taken while the manager runs, restored later: older state comes back, newer servers become untracked orphans, nothing is destroyed", async () => {
    const uid = Date.now().toString(36);
    const spec = (name: string) => ({ name, image: TEST_IMAGE, command: SLEEPER, dataMountPath: "/data" });
    const { server: early } = await manager.servers.createServer({ spec: spec(`early-${uid}`) });
    const running = await waitForPhase(manager, early!.id, Phase.RUNNING, 60_000);
    managerId = (await docker.getContainer(running.status!.containerId).inspect()).Config.Labels["berth.manager"]!;

    // The backup, online.
    const file = join(dir, "berth-backup.db");
    const { stdout } = await backup(["--to", file, "--db", manager.dbPath]);
    expect(stdout).toMatch(new RegExp(`backed up .* to ${file} \\(\\d+ bytes, schema version \\d+: 1 servers, 1 hosts, events up to #\\d+\\)`));
    // It refuses to overwrite an existing backup.
    const again = await backup(["--to", file, "--db", manager.dbPath]).then(() => undefined, (e: { code: number; stderr: string }) => e);
    expect(again?.code).toBe(1);
    expect(again?.stderr).toMatch(/exists; choose another name, or pass --force/);

    // Life goes on after the backup: a new server, and the early one stopped.
    const { server: late } = await manager.servers.createServer({ spec: spec(`late-${uid}`) });
    const lateRunning = await waitForPhase(manager, late!.id, Phase.RUNNING, 60_000);
    const lateContainer = lateRunning.status!.containerId;
    writeFileSync(join(agent.dataRoot, late!.id, "precious"), "made after the backup");
    await manager.servers.stopServer({ id: early!.id, timeoutSeconds: 1 });
    await waitForPhase(manager, early!.id, Phase.STOPPED);

    // Restore: stop the manager, put the backup in place of the database (without the old -wal/-shm), start it.
    const port = Number(new URL(manager.url).port);
    await manager.stop();
    copyFileSync(file, manager.dbPath);
    for (const f of [`${manager.dbPath}-wal`, `${manager.dbPath}-shm`]) rmSync(f, { force: true });
    manager = await startManager({ dir, dbPath: manager.dbPath, port, args: MANAGER_ARGS });

    // The backup's desired state is the truth again: the early server runs (its same container, started again).
    const back = await waitForPhase(manager, early!.id, Phase.RUNNING, 60_000);
    expect(back.spec!.desiredState).toBe(DesiredState.RUNNING);
    expect(back.status!.containerId).toBe(running.status!.containerId);

    // The late server has no record, but nothing of it was destroyed: an untracked orphan.
    const missing = await manager.servers.getServer({ id: late!.id }).then(() => undefined, (e: unknown) => ConnectError.from(e));
    expect(missing?.code).toBe(Code.NotFound);
    const orphans = createClient(OrphanService, manager.transport(manager.adminToken));
    const orphan = await waitFor(
      "the late server's container listed as untracked",
      async () => (await orphans.listOrphans({})).orphans.find((o) => o.containerId === lateContainer),
      30_000,
      250,
    );
    expect(orphan).toMatchObject({ kind: OrphanKind.UNTRACKED, serverId: late!.id, state: "running", dataPath: join(agent.dataRoot, late!.id) });
    // Still there a while later: the reconciler leaves what it has no record of alone.
    await new Promise((r) => setTimeout(r, 3_000));
    expect((await docker.getContainer(lateContainer).inspect()).State.Running).toBe(true);
    expect(existsSync(join(agent.dataRoot, late!.id, "precious"))).toBe(true);

    // The way back: adopt it, same server id, same container, same data.
    const { server: adopted } = await orphans.adoptOrphan({ id: orphan.id, project: "default", name: `late-${uid}` });
    expect(adopted!.id).toBe(late!.id);
    expect(adopted!.status!.phase).toBe(Phase.RUNNING);
    expect(adopted!.status!.containerId).toBe(lateContainer);
  });
});
