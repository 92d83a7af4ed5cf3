/**
 * The full server lifecycle against real processes and a real Docker engine:
 * every operation, and every kind of drift made behind berth's back.
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { DesiredState, Phase, RestartPolicy, type Server, type ServerSpec } from "@berth/proto/berth/v1/server_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import { dockerClient, removeBerthContainers, TEST_IMAGE } from "./harness/docker-engine.js";
import { eventsFor } from "./harness/ledger.js";
import { removeTestDir, runAgent, startAgent, startManager, tempDir, waitFor, waitForHostOnline, waitForLines, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { testDockerHost } from "./harness/engine.js";

type SpecInit = MessageInitShape<typeof ServerSpecSchema>;

/** A container that runs until stopped and writes a marker into its data dir. */
const SLEEPER = ["sh", "-c", "date >> /data/starts; exec sleep 100000"];

describe("server lifecycle", () => {
  const docker = dockerClient(testDockerHost());
  let dir: string;
  let dbPath: string;
  let manager: ManagerProc;
  let agent: Proc & { dataRoot: string; stateDir: string };
  const created: string[] = [];
  let n = 0;
  // A start's deadline well above what a start takes with three test files at a time on two
  // cores (4 s failed ordinary starts with StartTimeout there); the StartTimeout test waits it out
  // with its agent frozen, so a silent agent is disconnected only well after that deadline (at
  // the default 15 s the host went offline first, and its server Unknown, not Failed).
  const START_TIMEOUT_S = 15;
  const managerArgs = ["--start-timeout", String(START_TIMEOUT_S), "--agent-timeout", "60", "--crash-backoff", "1", "--delete-retention", "3600"];

  beforeAll(async () => {
    dir = await tempDir("lifecycle");
    dbPath = join(dir, "berth.db");
    manager = await startManager({ dir, dbPath, args: managerArgs });
    agent = await startAgent({ manager, dir });
    await waitForHostOnline(manager);
  });

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    await removeBerthContainers(docker, { serverIds: created });
    await removeTestDir(dir);
  });

  async function createServer(spec: Partial<SpecInit> = {}, phase = Phase.RUNNING): Promise<Server> {
    const init = { name: `lc-${Date.now().toString(36)}-${n++}`, image: TEST_IMAGE, command: SLEEPER, ...spec } as SpecInit;
    const { server } = await manager.servers.createServer({ spec: init });
    created.push(server!.id);
    const ready = await waitForPhase(manager, server!.id, phase);
    // Running is the container's state, not the shell's progress: the SLEEPER
    // may not have written its line yet.
    if (phase === Phase.RUNNING && spec.command === undefined) await startsReach(server!.id, 1);
    return ready;
  }

  /** Waits until the SLEEPER of `id` has written `count` start lines, then checks there are not more. */
  async function startsReach(id: string, count: number): Promise<void> {
    expect(await waitForLines(join(agent.dataRoot, id, "starts"), count)).toBe(count);
  }

  async function containersOf(id: string) {
    return docker.listContainers({ all: true, filters: { label: [`berth.server=${id}`] } });
  }

  const get = async (id: string) => (await manager.servers.getServer({ id })).server!;
  const cond = (s: Server, type: string) => s.status!.conditions.find((c) => c.type === type);
  const types = (id: string) => eventsFor(dbPath, id).map((e) => e.type);
  const codeOf = async (p: Promise<unknown>) => {
    try {
      await p;
      return undefined;
    } catch (e) {
      return ConnectError.from(e);
    }
  };

  it("docker stop behind berth's back: observed within a second, desired becomes stopped (drift.adopted)", async () => {
    const s = await createServer();
    const t0 = Date.now();
    await docker.getContainer(s.status!.containerId).stop({ t: 1 });
    const stopped = await waitForPhase(manager, s.id, Phase.STOPPED, 10_000);
    expect(Date.now() - t0).toBeLessThan(1000 + 1500); // docker stop itself takes ~1 s with t=1
    expect(stopped.spec!.desiredState).toBe(DesiredState.STOPPED);
    expect(stopped.generation).toBe(s.generation + 1n);
    expect(types(s.id)).toContain("drift.adopted");
    // Nothing restarts it, and it says who stopped it until someone acts through berth.
    await new Promise((r) => setTimeout(r, 1500));
    expect((await get(s.id)).status).toMatchObject({ phase: Phase.STOPPED, reason: "StoppedOutsideBerth" });
    await manager.servers.stopServer({ id: s.id });
    await waitFor("a stop asked through berth reads as plain Stopped", async () => ((await get(s.id)).status!.reason === "Stopped" ? true : undefined));
  });

  it("docker stop right after berth's own restart is still the operator's stop (drift.adopted), not taken for berth's", async () => {
    const s = await createServer();
    await manager.servers.restartServer({ id: s.id });
    await startsReach(s.id, 2);
    const restarted = await waitForPhase(manager, s.id, Phase.RUNNING, 10_000);
    // Well within the 10 s after the restart's own stop in which its late "die" still counts as berth's.
    await docker.getContainer(restarted.status!.containerId).stop({ t: 1 });
    const stopped = await waitFor("desired stopped, adopted from the operator's stop", async () => {
      const x = await get(s.id);
      return x.spec!.desiredState === DesiredState.STOPPED ? x : undefined;
    }, 10_000);
    expect(types(s.id)).toContain("drift.adopted");
    await waitForPhase(manager, s.id, Phase.STOPPED, 10_000);
    // Not restarted: the SLEEPER wrote no third start.
    await new Promise((r) => setTimeout(r, 1500));
    expect((await get(s.id)).status).toMatchObject({ phase: Phase.STOPPED, reason: "StoppedOutsideBerth" });
    await startsReach(s.id, 2);
    expect(stopped.generation).toBeGreaterThan(restarted.generation);
  });

  it("docker kill with restart policy always: berth heals it (drift.healed)", async () => {
    const s = await createServer({ restartPolicy: RestartPolicy.ALWAYS });
    const first = s.status!.containerId;
    await docker.getContainer(first).kill();
    await waitFor("healed", async () => {
      const x = await get(s.id);
      return x.status!.phase === Phase.RUNNING && types(s.id).includes("drift.healed") ? x : undefined;
    });
    const x = await get(s.id);
    expect(x.spec!.desiredState).toBe(DesiredState.RUNNING);
    expect(x.status!.containerId).toBe(first); // the same container, restarted
  });

  it("docker kill -s HUP (a reload) is not a stop: a crash right after it restarts per policy", async () => {
    // The process ignores HUP, then crashes (exit 3) when /data/crash appears.
    const script = "rm -f /data/crash; trap '' HUP; date >> /data/starts; while [ ! -f /data/crash ]; do sleep 0.1; done; exit 3";
    const s = await createServer({ command: ["sh", "-c", script], restartPolicy: RestartPolicy.ON_FAILURE });
    const starts = join(agent.dataRoot, s.id, "starts");
    // Running in Docker's eyes may precede the script's trap: wait for the line it writes after it.
    await waitForLines(starts, 1);
    const beforeHup = eventsFor(dbPath, s.id).at(-1)!.id;
    await docker.getContainer(s.status!.containerId).kill({ signal: "SIGHUP" });
    writeFileSync(join(agent.dataRoot, s.id, "crash"), "");
    // The agent reports in order: once the crash is recorded, so is whatever the HUP led to.
    await waitFor("the crash recorded", async () => types(s.id).includes("container.died"), 15_000);
    expect(await waitForLines(starts, 2, 15_000)).toBe(2);
    const back = await waitForPhase(manager, s.id, Phase.RUNNING, 10_000);
    expect(back.spec!.desiredState).toBe(DesiredState.RUNNING);
    expect(types(s.id)).toContain("container.died");
    expect(types(s.id)).not.toContain("drift.adopted");
    // Never stopped since the HUP: the only phases it passed through are the crash's way back (Starting, then Running).
    const since = eventsFor(dbPath, s.id).filter((e) => e.id > beforeHup && e.type === "phase.changed").map((e) => /→ (\w+):/.exec(e.message)?.[1]);
    expect(since.filter((to) => to !== "STARTING" && to !== "RUNNING"), `phases since the HUP: ${since.join(", ")}`).toEqual([]);
  });

  it("docker rm behind berth's back: Missing, then StartServer recreates it with the same data", async () => {
    const s = await createServer();
    const dataDir = join(agent.dataRoot, s.id);
    writeFileSync(join(dataDir, "keep.txt"), "precious");
    await docker.getContainer(s.status!.containerId).remove({ force: true });
    const missing = await waitForPhase(manager, s.id, Phase.MISSING, 10_000);
    expect(cond(missing, "ContainerExists")?.status).toBe(2 /* FALSE */);
    expect(cond(missing, "DataPresent")?.status).toBe(1 /* TRUE */);
    // It stays Missing: berth does not recreate containers on its own.
    await new Promise((r) => setTimeout(r, 1000));
    expect((await get(s.id)).status!.phase).toBe(Phase.MISSING);
    expect(await containersOf(s.id)).toHaveLength(0);

    await manager.servers.startServer({ id: s.id });
    const back = await waitForPhase(manager, s.id, Phase.RUNNING);
    expect(back.status!.containerId).not.toBe(s.status!.containerId);
    expect(readFileSync(join(dataDir, "keep.txt"), "utf8")).toBe("precious");
    await startsReach(s.id, 2);
  });

  it("data directory deleted behind berth's back: DataLost, never recreated silently", async () => {
    const s = await createServer();
    await manager.servers.stopServer({ id: s.id, timeoutSeconds: 1 });
    await waitForPhase(manager, s.id, Phase.STOPPED);
    await docker.getContainer(s.status!.containerId).remove({ force: true });
    rmSync(join(agent.dataRoot, s.id), { recursive: true, force: true });
    await manager.hosts.resyncHost({ id: s.spec!.hostId });
    const lost = await waitForPhase(manager, s.id, Phase.DATA_LOST, 10_000);
    expect(lost.status!.reason).toBe("DataDirectoryMissing");
    expect(types(s.id)).toContain("data.lost");

    const err = await codeOf(manager.servers.startServer({ id: s.id }));
    expect(err?.code).toBe(Code.FailedPrecondition);
    expect(err?.rawMessage).toMatch(/purge/i);
    expect(existsSync(join(agent.dataRoot, s.id))).toBe(false);

    await manager.servers.startServer({ id: s.id, allowEmptyData: true });
    await waitForPhase(manager, s.id, Phase.RUNNING);
    expect(existsSync(join(agent.dataRoot, s.id))).toBe(true);
  });

  it("a crashing container restarts with backoff, then goes Failed/CrashLoop after 5 crashes", async () => {
    const { server } = await manager.servers.createServer({
      spec: { name: `crash-${Date.now().toString(36)}`, image: TEST_IMAGE, command: ["sh", "-c", "date +%s >> /data/runs; exit 3"] },
    });
    created.push(server!.id);
    // Backoff base 1 s: 1, 2, 4, 8 s between the first five runs, so at least 15 s in all.
    // The deadline is not a speed target: each cycle also waits for Docker (slower on a
    // busy machine), so it only bounds a hang. The backoff itself is checked from the
    // container's own clock below.
    const failed = await waitForPhase(manager, server!.id, Phase.FAILED, 120_000);
    expect(failed.status!.reason).toBe("CrashLoop");
    expect(failed.status!.restartCount).toBeGreaterThanOrEqual(4);
    const runs = readFileSync(join(agent.dataRoot, server!.id, "runs"), "utf8").trim().split("\n");
    expect(runs.length).toBe(5);
    const at = runs.map(Number);
    const gaps = at.slice(1).map((t, i) => t - at[i]!);
    // Whole seconds from `date +%s`: a gap of d seconds reads as d-1 at worst.
    gaps.forEach((gap, i) => expect(gap, `gap ${i + 1} of ${gaps.join(", ")} s`).toBeGreaterThanOrEqual(2 ** i - 1));
    expect(types(server!.id).filter((t) => t === "container.died").length).toBe(5);
    // A Failed server accepts Start (and fails again, the command is still broken).
    await manager.servers.startServer({ id: server!.id });
    expect(await waitForLines(join(agent.dataRoot, server!.id, "runs"), 6)).toBe(6);
  });

  it("a clean exit under on-failure adopts desired stopped", async () => {
    const s = await createServer({ command: ["sh", "-c", "sleep 1; exit 0"] }, Phase.RUNNING);
    const stopped = await waitForPhase(manager, s.id, Phase.STOPPED, 10_000);
    expect(stopped.spec!.desiredState).toBe(DesiredState.STOPPED);
  });

  it("an image that does not exist: Failed/ImagePullFailed with Docker's message; Delete still works", async () => {
    const { server } = await manager.servers.createServer({ spec: { name: `noimg-${Date.now().toString(36)}`, image: "berth-test/does-not-exist:404" } });
    created.push(server!.id);
    const failed = await waitForPhase(manager, server!.id, Phase.FAILED, 30_000);
    expect(failed.status!.reason).toBe("ImagePullFailed");
    expect(failed.status!.message).toContain("berth-test/does-not-exist:404");
    await manager.servers.deleteServer({ id: server!.id });
    await waitForPhase(manager, server!.id, Phase.DELETED);
  });

  it("a start that does not reach running by its deadline: Failed/StartTimeout, then Start retries", async () => {
    const s = await createServer({}, Phase.RUNNING);
    await manager.servers.stopServer({ id: s.id, timeoutSeconds: 1 });
    await waitForPhase(manager, s.id, Phase.STOPPED);
    // Freeze the agent so the start command cannot complete by its deadline (START_TIMEOUT_S).
    process.kill(agent.pid, "SIGSTOP");
    try {
      await manager.servers.startServer({ id: s.id });
      const failed = await waitForPhase(manager, s.id, Phase.FAILED, (START_TIMEOUT_S + 15) * 1000);
      expect(failed.status!.reason).toBe("StartTimeout");
    } finally {
      process.kill(agent.pid, "SIGCONT");
    }
    // The late result does not resurrect the expired command; an explicit Start converges.
    await waitForHostOnline(manager);
    await manager.servers.startServer({ id: s.id });
    await waitForPhase(manager, s.id, Phase.RUNNING);
    expect(await containersOf(s.id)).toHaveLength(1);
  });

  it("update shows PendingRestart; restart applies the new spec; apply_now applies at once", async () => {
    const s = await createServer({ env: { V: "1" } });
    const spec: SpecInit = { ...(s.spec as ServerSpec), env: { V: "2" } };
    const { server: updated } = await manager.servers.updateServer({ id: s.id, spec });
    expect(updated!.generation).toBe(s.generation + 1n);
    const pending = await waitFor("PendingRestart", async () => {
      const x = await get(s.id);
      return cond(x, "SpecApplied")?.reason === "PendingRestart" ? x : undefined;
    });
    expect(pending.status!.phase).toBe(Phase.RUNNING);

    await manager.servers.restartServer({ id: s.id });
    const applied = await waitFor("spec applied", async () => {
      const x = await get(s.id);
      return x.status!.phase === Phase.RUNNING && cond(x, "SpecApplied")?.status === 1 ? x : undefined;
    });
    expect((await docker.getContainer(applied.status!.containerId).inspect()).Config.Env).toContain("V=2");
    expect(applied.status!.observedGeneration).toBe(applied.generation);

    const { server: now } = await manager.servers.updateServer({ id: s.id, spec: { ...spec, env: { V: "3" } }, applyNow: true });
    const three = await waitFor("V=3 running", async () => {
      const x = await get(s.id);
      if (x.status!.phase !== Phase.RUNNING || !x.status!.containerId) return undefined;
      const env = (await docker.getContainer(x.status!.containerId).inspect()).Config.Env;
      return env.includes("V=3") ? x : undefined;
    });
    expect(three.generation).toBe(now!.generation);
    expect(await containersOf(s.id)).toHaveLength(1);
  });

  it("rebuild recreates the container and keeps the data; pause and resume", async () => {
    const s = await createServer();
    const rebuilt = await manager.servers.rebuildServer({ id: s.id });
    expect(rebuilt.server).toBeDefined();
    const after = await waitFor("new container", async () => {
      const x = await get(s.id);
      return x.status!.phase === Phase.RUNNING && x.status!.containerId && x.status!.containerId !== s.status!.containerId ? x : undefined;
    });
    await startsReach(s.id, 2);
    await manager.servers.pauseServer({ id: s.id });
    await waitForPhase(manager, s.id, Phase.PAUSED);
    expect((await docker.getContainer(after.status!.containerId).inspect()).State.Paused).toBe(true);
    await manager.servers.resumeServer({ id: s.id });
    await waitForPhase(manager, s.id, Phase.RUNNING);
  });

  it("delete keeps data and record; restore brings it back stopped; start recreates it", async () => {
    const s = await createServer();
    await manager.servers.deleteServer({ id: s.id });
    const deleted = await waitForPhase(manager, s.id, Phase.DELETED);
    expect(deleted.deleteTime).toBeDefined();
    await waitFor("container removed", async () => (await containersOf(s.id)).length === 0);
    expect(existsSync(join(agent.dataRoot, s.id, "starts"))).toBe(true);
    // Hidden from the default list, shown with show_deleted.
    expect((await manager.servers.listServers({})).servers.some((x) => x.id === s.id)).toBe(false);
    expect((await manager.servers.listServers({ showDeleted: true })).servers.some((x) => x.id === s.id)).toBe(true);
    expect((await codeOf(manager.servers.startServer({ id: s.id })))?.code).toBe(Code.FailedPrecondition);

    await manager.servers.restoreServer({ id: s.id });
    const restored = await waitForPhase(manager, s.id, Phase.MISSING);
    expect(restored.spec!.desiredState).toBe(DesiredState.STOPPED);
    await manager.servers.startServer({ id: s.id });
    await waitForPhase(manager, s.id, Phase.RUNNING);
    await startsReach(s.id, 2);
  });

  it("purge removes record and container; data only with remove_data", async () => {
    const keep = await createServer();
    await manager.servers.purgeServer({ id: keep.id });
    await waitFor("record gone", async () => (await codeOf(manager.servers.getServer({ id: keep.id })))?.code === Code.NotFound);
    expect(await containersOf(keep.id)).toHaveLength(0);
    expect(existsSync(join(agent.dataRoot, keep.id, "starts"))).toBe(true);

    const drop = await createServer();
    await manager.servers.purgeServer({ id: drop.id, removeData: true });
    await waitFor("record gone", async () => (await codeOf(manager.servers.getServer({ id: drop.id })))?.code === Code.NotFound);
    expect(await containersOf(drop.id)).toHaveLength(0);
    expect(existsSync(join(agent.dataRoot, drop.id))).toBe(false);
    expect(types(drop.id)).toEqual(expect.arrayContaining(["server.purge_requested", "server.purged"]));
  });

  it("host offline: servers show Unknown (never Stopped); reconnect reconciles them", async () => {
    const s = await createServer();
    await agent.kill();
    const unknown = await waitForPhase(manager, s.id, Phase.UNKNOWN, 20_000);
    expect(cond(unknown, "HostConnected")?.status).toBe(2 /* FALSE */);
    // Meanwhile the container is stopped on the host; the reconnect must see it.
    await docker.getContainer(s.status!.containerId).stop({ t: 1 });
    const next = runAgent({ dir, stateDir: agent.stateDir, dataRoot: agent.dataRoot });
    agent = Object.assign(next, { dataRoot: agent.dataRoot, stateDir: agent.stateDir });
    // Desired is still running and nothing told berth it was stopped on purpose: it starts it again.
    await waitForPhase(manager, s.id, Phase.RUNNING, 20_000);
    expect(await containersOf(s.id)).toHaveLength(1);
  });

  it("manager killed in the middle of an operation: resumes from the database, no duplicates", async () => {
    const { server } = await manager.servers.createServer({ spec: { name: `mid-${Date.now().toString(36)}`, image: TEST_IMAGE, command: SLEEPER } });
    created.push(server!.id);
    await manager.kill();
    manager = await startManager({ dir, dbPath, args: managerArgs, port: Number(new URL(manager.url).port) });
    await waitForPhase(manager, server!.id, Phase.RUNNING, 40_000);
    expect(await containersOf(server!.id)).toHaveLength(1);
  });

  it("20 concurrent start/stop/restart calls end consistent with the last accepted desired state", async () => {
    const s = await createServer();
    const ops = Array.from({ length: 20 }, (_, i) => ["start", "stop", "restart"][i % 3]!);
    const results = await Promise.all(
      ops.map(async (op) => {
        const res =
          op === "start" ? await manager.servers.startServer({ id: s.id }) : op === "stop" ? await manager.servers.stopServer({ id: s.id, timeoutSeconds: 1 }) : await manager.servers.restartServer({ id: s.id });
        return res.server!;
      }),
    );
    // The last accepted change is the one with the highest update time; its desired state must win.
    const last = results.reduce((a, b) => (Number(b.updateTime!.seconds) * 1e9 + b.updateTime!.nanos > Number(a.updateTime!.seconds) * 1e9 + a.updateTime!.nanos ? b : a));
    const want = last.spec!.desiredState === DesiredState.STOPPED ? Phase.STOPPED : Phase.RUNNING;
    const final = await waitForPhase(manager, s.id, want, 60_000);
    expect(final.spec!.desiredState).toBe((await get(s.id)).spec!.desiredState);
    expect(await containersOf(s.id)).toHaveLength(1);
  });
});
