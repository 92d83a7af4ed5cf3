import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { CommandKind, CommandSchema, ContainerInfoSchema, DataPolicy } from "@berth/proto/berth/v1/agent_pb.js";
import { DataRoot } from "./data/data-root.js";
import { BackupDirs } from "./data/backup-dir.js";
import { BackupJobs, type JobProgress } from "./data/backup-jobs.js";
import { Executor, refusal } from "./executor.js";
import { RuntimeError } from "./runtime/container-runtime.js";
import { SimRuntime } from "../testing/sim-runtime.js";

const FAST = { create: 1, start: 1, stop: 1, kill: 1, remove: 1, pause: 1, unpause: 1, inspect: 0, list: 0, pull: 1 };
const NOW = 1_700_000_000_000;
const MGR = "mgr_mine";

const named = (labels: Record<string, string>) => create(ContainerInfoSchema, { id: "c1", name: "web", labels });

/** Data roots of the executors made by simExecutor, removed after each test. */
const roots: string[] = [];
afterEach(async () => {
  for (const r of roots.splice(0)) await rm(r, { recursive: true, force: true });
});

/** An Executor on a simulated engine, with a fresh data root. */
async function simExecutor() {
  const root = await mkdtemp(join(tmpdir(), "berth-exec-"));
  roots.push(root);
  const data = new DataRoot(root);
  await data.init();
  const rt = new SimRuntime({ latencies: FAST, images: ["sim/app:1"] });
  const executor = new Executor(rt, data, pino({ level: "silent" }), () => {}, { managerId: () => MGR, now: () => Date.now() });
  return { rt, executor };
}

describe("refusal: commands the agent must not apply", () => {
  it.each([
    ["a deadline in the past", { kind: CommandKind.ENSURE_RUNNING, deadline: timestampFromMs(NOW - 1) }, undefined, "DeadlineExceeded"],
    ["a deadline in the future", { kind: CommandKind.ENSURE_RUNNING, deadline: timestampFromMs(NOW + 60_000) }, undefined, undefined],
    ["no deadline", { kind: CommandKind.ENSURE_STOPPED }, undefined, undefined],
    ["remove another manager's container", { kind: CommandKind.REMOVE_CONTAINER, containerId: "c1" }, named({ "berth.manager": "mgr_other" }), "NotThisManagers"],
    ["remove an unlabelled container", { kind: CommandKind.REMOVE_CONTAINER, containerId: "c1" }, named({}), "NotThisManagers"],
    ["inspect an unlabelled container", { kind: CommandKind.INSPECT_CONTAINER, containerId: "c1" }, named({}), "NotThisManagers"],
    ["copy data out of an unlabelled container", { kind: CommandKind.COPY_DATA, containerId: "c1" }, named({}), "NotThisManagers"],
    ["remove this manager's container", { kind: CommandKind.REMOVE_CONTAINER, containerId: "c1" }, named({ "berth.manager": MGR }), undefined],
    ["remove an unlabelled container on an explicit orphan action", { kind: CommandKind.REMOVE_CONTAINER, containerId: "c1", orphanAction: true }, named({}), undefined],
    ["an orphan action past its deadline", { kind: CommandKind.REMOVE_CONTAINER, containerId: "c1", orphanAction: true, deadline: timestampFromMs(NOW - 5_000) }, named({}), "DeadlineExceeded"],
    ["remove a container that is already gone", { kind: CommandKind.REMOVE_CONTAINER, containerId: "c1" }, undefined, undefined],
  ] as const)("%s → %s", (_what, cmd, container, want) => {
    expect(refusal(create(CommandSchema, { id: "cmd_1", ...cmd }), container, { id: MGR, now: NOW })?.reason).toBe(want);
  });
});

describe("Executor refuses, on a (simulated) engine", () => {
  const setup = simExecutor;

  it("a resent command past its deadline: not applied, a result that says why", async () => {
    const { rt, executor } = await setup();
    const result = await executor.execute(
      create(CommandSchema, {
        id: "cmd_late",
        serverId: "srv_aaaaaaaaaaaa",
        kind: CommandKind.ENSURE_RUNNING,
        dataPolicy: DataPolicy.CREATE,
        deadline: timestampFromMs(Date.now() - 10_000),
        container: { name: "berth-a", image: "sim/app:1", specHash: "h1", labels: { "berth.server": "srv_aaaaaaaaaaaa", "berth.spec-hash": "h1" } },
      }),
    );
    expect(result).toMatchObject({ success: false, reason: "DeadlineExceeded" });
    expect(result.message).toMatch(/after its deadline; not applied/);
    expect(await rt.list()).toEqual([]);
  });

  it("another manager's container survives a remove; an explicit orphan action removes it", async () => {
    const { rt, executor } = await setup();
    const id = await rt.create({ name: "theirs", image: "sim/app:1", command: [], env: {}, labels: { "berth.manager": "mgr_other", "berth.server": "srv_bbbbbbbbbbbb" }, ports: [], dataDir: "/d", mountPath: "/data" });
    const remove = (cmdId: string, orphanAction: boolean) => executor.execute(create(CommandSchema, { id: cmdId, kind: CommandKind.REMOVE_CONTAINER, containerId: id, orphanAction }));
    expect(await remove("cmd_1", false)).toMatchObject({ success: false, reason: "NotThisManagers" });
    expect(await rt.inspect(id)).toBeDefined();
    expect(await remove("cmd_2", true)).toMatchObject({ success: true });
    expect(await rt.inspect(id)).toBeUndefined();
  });

  it("an engine that does not answer the inspect fails the command; nothing is removed", async () => {
    const { rt, executor } = await setup();
    const id = await rt.create({ name: "theirs", image: "sim/app:1", command: [], env: {}, labels: { "berth.manager": "mgr_other", "berth.server": "srv_bbbbbbbbbbbb" }, ports: [], dataDir: "/d", mountPath: "/data" });
    rt.inspect = async () => {
      throw new RuntimeError("DockerTimeout", "docker inspect did not answer within 30s; is the Docker engine hung?");
    };
    let removes = 0;
    rt.remove = async () => {
      removes++;
    };
    const result = await executor.execute(create(CommandSchema, { id: "cmd_1", kind: CommandKind.REMOVE_CONTAINER, containerId: id }));
    expect(result).toMatchObject({ success: false, reason: "DockerTimeout" });
    expect(result.message).toMatch(/did not answer/);
    expect(removes).toBe(0);
  });
});

describe("Executor fences commands by the host's ownership epoch", () => {
  const setup = simExecutor;
  const ensure = (id: string, ownerEpoch: bigint, server = "srv_aaaaaaaaaaaa") =>
    create(CommandSchema, {
      id,
      serverId: server,
      kind: CommandKind.ENSURE_RUNNING,
      dataPolicy: DataPolicy.CREATE,
      ownerEpoch,
      container: { name: `berth-${server}`, image: "sim/app:1", specHash: "h1", labels: { "berth.server": server, "berth.spec-hash": "h1", "berth.manager": MGR } },
    });

  it("a command older than the epoch a manager welcomed the agent with is refused, reported, and not applied", async () => {
    const { rt, executor } = await setup();
    executor.observeOwnerEpoch(5n);
    const result = await executor.execute(ensure("cmd_stale", 4n));
    expect(result).toMatchObject({ commandId: "cmd_stale", success: false, reason: "StaleOwner" });
    expect(result.message).toMatch(/epoch 4, but a manager took this host at epoch 5; not applied/);
    expect(await rt.list()).toEqual([]);
    // The owner's own epoch (and newer) runs.
    expect(await executor.execute(ensure("cmd_owner", 5n))).toMatchObject({ success: true });
    expect(await rt.list()).toHaveLength(1);
  });

  it("the newest epoch seen in any command fences the older ones, even a resend of an id the agent already ran", async () => {
    const { rt, executor } = await setup();
    expect(await executor.execute(ensure("cmd_a", 3n))).toMatchObject({ success: true });
    expect(await executor.execute(ensure("cmd_b", 4n, "srv_bbbbbbbbbbbb"))).toMatchObject({ success: true });
    expect(executor.ownerEpoch).toBe(4n);
    // The manager of epoch 3 (it lost the host) resends cmd_a: refused, not the cached success.
    expect(await executor.execute(ensure("cmd_a", 3n))).toMatchObject({ success: false, reason: "StaleOwner" });
    expect(await executor.execute(ensure("cmd_c", 0n, "srv_cccccccccccc"))).toMatchObject({ success: false, reason: "StaleOwner" });
    expect((await rt.list()).map((c) => c.labels["berth.server"]).sort()).toEqual(["srv_aaaaaaaaaaaa", "srv_bbbbbbbbbbbb"]);
  });

  it("a command waiting in line when a newer owner's command arrives is refused at its turn; the new owner's resend of that id then runs", async () => {
    const { rt, executor } = await setup();
    // The first command of the server is held inside the engine's start until released.
    let entered!: () => void;
    let release!: () => void;
    const inStart = new Promise<void>((r) => (entered = r));
    const gate = new Promise<void>((r) => (release = r));
    const start = rt.start.bind(rt);
    rt.start = async (id: string) => {
      entered();
      await gate;
      return start(id);
    };
    const first = executor.execute(ensure("cmd_1", 1n));
    await inStart;
    // The second waits in line behind it; then the new owner's command arrives.
    const queued = executor.execute(create(CommandSchema, { ...ensure("cmd_2", 1n), kind: CommandKind.ENSURE_STOPPED }));
    const taken = executor.execute(ensure("cmd_3", 2n));
    release();
    expect(await first).toMatchObject({ success: true });
    expect(await queued).toMatchObject({ success: false, reason: "StaleOwner" });
    expect(await taken).toMatchObject({ success: true });
    expect((await rt.list())[0]).toMatchObject({ state: "running" });
    // The new owner resumes the open command cmd_2 under its own epoch: it runs now.
    expect(await executor.execute(create(CommandSchema, { ...ensure("cmd_2", 2n), kind: CommandKind.ENSURE_STOPPED }))).toMatchObject({ success: true });
    expect((await rt.list())[0]).toMatchObject({ state: "exited" });
  });
});

describe("Executor: backups and restores (BackupJobs on real files)", () => {
  let root: string | undefined;
  afterEach(async () => {
    if (root) await rm(root, { recursive: true, force: true });
  });

  async function setup() {
    root = await mkdtemp(join(tmpdir(), "berth-exec-bk-"));
    const data = new DataRoot(join(root, "data"));
    await data.init();
    const dirs = new BackupDirs([join(root, "backups")]);
    const progress: JobProgress[] = [];
    const jobs = new BackupJobs(data, dirs, (p) => progress.push(p));
    const rt = new SimRuntime({ latencies: FAST, images: ["sim/app:1"] });
    const executor = new Executor(rt, data, pino({ level: "silent" }), () => {}, { managerId: () => MGR, now: () => Date.now() }, jobs);
    return { rt, executor, data, progress, backups: join(root, "backups") };
  }

  const SRV = "srv_aaaaaaaaaaaa";
  const job = (backups: string, o: { sha256?: string } = {}) => ({ backupId: "bk_x", location: { kind: { case: "directory" as const, value: backups } }, key: `${SRV}/bk_x.tar.gz`, ...o });

  it("backs up, then restores into a fresh directory swapped in, keeping the replaced data as a safety copy", async () => {
    const { executor, data, progress, backups } = await setup();
    await mkdir(join(data.root, SRV));
    await writeFile(join(data.root, SRV, "world.dat"), "v1");
    const done = await executor.execute(create(CommandSchema, { id: "cmd_bk", serverId: SRV, kind: CommandKind.BACKUP_DATA, backup: job(backups) }));
    expect(done).toMatchObject({ success: true });
    expect(done.archive?.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(progress.at(-1)).toMatchObject({ commandId: "cmd_bk", stage: "Copying" });
    await writeFile(join(data.root, SRV, "world.dat"), "v2");
    const restored = await executor.execute(
      create(CommandSchema, { id: "cmd_restore", serverId: SRV, kind: CommandKind.RESTORE_DATA, dataDir: `${SRV}.cmd_restore`, backup: job(backups, { sha256: done.archive!.sha256 }) }),
    );
    expect(restored, `${restored.reason}: ${restored.message}`).toMatchObject({ success: true });
    expect(await readFile(join(data.root, SRV, "world.dat"), "utf8")).toBe("v1");
    expect(await readFile(join(data.root, ".berth-previous", `${SRV}.cmd_restore`, "world.dat"), "utf8")).toBe("v2");
    expect(await executor.execute(create(CommandSchema, { id: "cmd_dp", serverId: SRV, kind: CommandKind.DISCARD_PREVIOUS_DATA, dataDir: `${SRV}.cmd_restore` }))).toMatchObject({ success: true });
    expect(await readdir(join(data.root, ".berth-previous"))).toEqual([]);
  });

  it("a restore whose archive does not match its checksum changes nothing", async () => {
    const { executor, data, backups } = await setup();
    await mkdir(join(data.root, SRV));
    await writeFile(join(data.root, SRV, "world.dat"), "v1");
    expect(await executor.execute(create(CommandSchema, { id: "cmd_bk", serverId: SRV, kind: CommandKind.BACKUP_DATA, backup: job(backups) }))).toMatchObject({ success: true });
    await writeFile(join(data.root, SRV, "world.dat"), "v2");
    const r = await executor.execute(create(CommandSchema, { id: "cmd_restore", serverId: SRV, kind: CommandKind.RESTORE_DATA, dataDir: `${SRV}.cmd_restore`, backup: job(backups, { sha256: "0".repeat(64) }) }));
    expect(r).toMatchObject({ success: false, reason: "ChecksumMismatch" });
    expect(await readFile(join(data.root, SRV, "world.dat"), "utf8")).toBe("v2");
  });

  it("a backup or restore resent as attach_only to an agent that never had it fails with AgentRestarted instead of starting over", async () => {
    const { executor, data, backups } = await setup();
    await mkdir(join(data.root, SRV));
    const r = await executor.execute(create(CommandSchema, { id: "cmd_bk", serverId: SRV, kind: CommandKind.BACKUP_DATA, backup: job(backups), attachOnly: true }));
    expect(r).toMatchObject({ success: false, reason: "AgentRestarted" });
    expect(await readdir(backups).catch(() => [])).toEqual([]);
  });

  it("a restore is refused while the container runs", async () => {
    const { executor, data, backups } = await setup();
    expect(
      await executor.execute(create(CommandSchema, { id: "cmd_run", serverId: SRV, kind: CommandKind.ENSURE_RUNNING, dataPolicy: DataPolicy.CREATE, container: { image: "sim/app:1", labels: { "berth.manager": MGR, "berth.server": SRV }, specHash: "h" } })),
    ).toMatchObject({ success: true });
    await writeFile(join(data.root, SRV, "world.dat"), "v1");
    const r = await executor.execute(create(CommandSchema, { id: "cmd_restore", serverId: SRV, kind: CommandKind.RESTORE_DATA, dataDir: `${SRV}.cmd_restore`, backup: job(backups, { sha256: "0".repeat(64) }) }));
    expect(r).toMatchObject({ success: false, reason: "ContainerRunning" });
  });
});

describe("Executor: which exits are berth's own", () => {
  async function setup() {
    const { rt, executor } = await simExecutor();
    let n = 0;
    const command = (kind: CommandKind) =>
      executor.execute(
        create(CommandSchema, {
          id: `cmd_${++n}`,
          serverId: SRV,
          kind,
          dataPolicy: DataPolicy.CREATE,
          container: { name: "berth-web", image: "sim/app:1", specHash: "h1", labels: { "berth.server": SRV, "berth.spec-hash": "h1", "berth.manager": MGR } },
        }),
      );
    return { rt, executor, command };
  }
  const SRV = "srv_exitsexitsaa";

  it("a restart's exit is berth's once: the container's next exit (an operator's docker stop right after) is not", async () => {
    const { executor, command } = await setup();
    const started = await command(CommandKind.ENSURE_RUNNING);
    const id = started.container!.id;
    expect(executor.takeExpectedExit(id)).toBe(false);
    const restarted = await command(CommandKind.RESTART);
    expect(restarted).toMatchObject({ success: true, container: { id, state: "running" } });
    // The restart's "die", reported after the call: berth's own.
    expect(executor.takeExpectedExit(id)).toBe(true);
    // Any later exit of the running container is someone else's (it was 10 s of them before).
    expect(executor.takeExpectedExit(id)).toBe(false);
  });

  it("an exit reported while berth's stop runs takes the expectation; the end of the call does not put it back", async () => {
    const { rt, executor, command } = await setup();
    const id = (await command(CommandKind.ENSURE_RUNNING)).container!.id;
    const taken: boolean[] = [];
    const ac = new AbortController();
    // As the agent does: each "die" asks whether it was berth's.
    await rt.subscribe((e) => {
      if (e.action === "die" && e.containerId === id) taken.push(executor.takeExpectedExit(id));
    }, ac.signal);
    await command(CommandKind.RESTART);
    await new Promise((r) => setTimeout(r, 20));
    ac.abort();
    expect(taken).toEqual([true]);
    expect(executor.takeExpectedExit(id)).toBe(false);
  });
});
