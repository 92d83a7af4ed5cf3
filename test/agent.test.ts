/**
 * The agent as a host daemon, end to end with real processes and real Docker:
 * the host's facts, kill -9 in the middle of a create, data-path escapes,
 * TailLogs, a 30 s network partition between agent and manager (through a
 * TCP proxy), and a Docker engine restarted under a running agent (a private
 * dockerd of this file's own, never the shared one).
 */
import { existsSync, readFileSync } from "node:fs";
import { mkdir, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { cpus, hostname, totalmem } from "node:os";
import { join } from "node:path";
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { HostState, type Host } from "@berth/proto/berth/v1/host_pb.js";
import { ConditionStatus, DesiredState, Phase, type ServerSpec } from "@berth/proto/berth/v1/server_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import { dockerClient, ensureTestImage, startPrivateDockerd, TEST_IMAGE, type DockerEngine } from "./harness/docker-engine.js";
import { eventsFor } from "./harness/ledger.js";
import { enrollAgent, runAgent, startManager, tempDir, waitFor, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { startTcpProxy, type TcpProxy } from "./harness/tcp-proxy.js";
import { testDockerHost } from "./harness/engine.js";

/** Where the harness keeps private dockerds (see docker-engine.ts). */
const PRIVATE_ROOT = "/tmp/berth-docker";
const uid = () => `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 5)}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const dockerReachable = (h: Host) => h.conditions.find((c) => c.type === "DockerReachable");

/**
 * The first suite's manager: agents beat every second and are offline after 4 s of silence (the
 * defaults are 5 s and 15 s). An agent ignoring the Welcome's interval would beat every 5 s and
 * drop offline between beats.
 */
const HEARTBEAT_S = 1;
const AGENT_TIMEOUT_S = 4;

describe("the agent on its host", () => {
  const docker = dockerClient(testDockerHost());
  let dir: string;
  let manager: ManagerProc;
  let proxy: TcpProxy;
  let agent: Proc;
  let stateDir: string;
  let dataRoot: string;
  let hostId: string;
  const servers: string[] = [];

  /** Enrolls and runs an agent whose link goes through `managerUrl`. */
  async function enrollAndRun(managerUrl: string, sub: string, env: NodeJS.ProcessEnv = {}) {
    const d = join(dir, sub);
    await mkdir(d, { recursive: true });
    const st = join(d, "state");
    const root = join(d, "data");
    const { token } = await manager.hosts.createEnrollmentToken({});
    const e = await enrollAgent({ managerUrl, token, stateDir: st, dir: d, env });
    if (e.code !== 0) throw new Error(`enroll failed:\n${e.log}`);
    const id = (JSON.parse(readFileSync(join(st, "credentials.json"), "utf8")) as { hostId: string }).hostId;
    return { dir: d, stateDir: st, dataRoot: root, hostId: id, env, proc: runAgent({ dir: d, stateDir: st, dataRoot: root, env }) };
  }

  async function host(id = hostId): Promise<Host> {
    const { host } = await manager.hosts.getHost({ id });
    return host!;
  }

  async function createServer(spec: MessageInitShape<typeof ServerSpecSchema>): Promise<string> {
    const { server } = await manager.servers.createServer({ spec: { hostId, image: TEST_IMAGE, ...spec } as ServerSpec });
    servers.push(server!.id);
    return server!.id;
  }

  /** Commands of `serverId` the agent refused for its data path. */
  function refusals(serverId: string): number {
    return eventsFor(manager.dbPath, serverId).filter((e) => e.type === "command.failed" && e.reason === "DataPathRefused").length;
  }

  async function containersOf(serverId: string, d: Docker = docker) {
    return d.listContainers({ all: true, filters: { label: [`berth.server=${serverId}`] } });
  }

  beforeAll(async () => {
    dir = await tempDir("agent");
    manager = await startManager({ dir, args: ["--heartbeat-interval", String(HEARTBEAT_S), "--agent-timeout", String(AGENT_TIMEOUT_S)] });
    const port = Number(new URL(manager.url).port);
    proxy = await startTcpProxy("127.0.0.1", port);
    const a = await enrollAndRun(`http://${proxy.address}`, "a");
    ({ stateDir, dataRoot, hostId } = a);
    agent = a.proc;
    await waitFor("host online", async () => (await host()).state === HostState.ONLINE);
  });

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    await proxy?.close();
    for (const id of servers) {
      for (const c of await containersOf(id).catch(() => [])) await docker.getContainer(c.Id).remove({ force: true }).catch(() => {});
    }
  });

  it("shows the host's facts: name, versions, data root, disk, CPUs, memory, connected-since, heartbeat", async () => {
    const h = await host();
    expect(h.name).toBe(hostname());
    expect(h.agentVersion).toMatch(/^\d+\.\d+\.\d+/);
    expect(h.dockerVersion).toBe((await docker.version()).Version);
    expect(h.dataRoot).toBe(dataRoot);
    expect(h.dataRootFreeBytes).toBeGreaterThan(0n);
    expect(h.dataRootTotalBytes).toBeGreaterThanOrEqual(h.dataRootFreeBytes);
    expect(h.cpuCount).toBe(cpus().length);
    expect(h.memoryBytes).toBe(BigInt(totalmem()));
    expect(h.dockerReachable).toBe(true);
    expect(dockerReachable(h)).toMatchObject({ status: ConditionStatus.TRUE, reason: "Reachable" });
    const since = Number(h.connectedSince!.seconds);
    expect(since).toBeGreaterThan(Date.now() / 1000 - 120);
    // Heartbeats keep coming (every HEARTBEAT_S, as the manager's Welcome asked: at the agent's own
    // 5 s the host would drop offline between beats) while connected-since stays put.
    const beat = Number(h.lastHeartbeat!.seconds);
    const later = await waitFor("a heartbeat more than the agent timeout later", async () => {
      const n = await host();
      return Number(n.lastHeartbeat!.seconds) > beat + AGENT_TIMEOUT_S && n;
    }, 20_000, 500);
    expect(later.state).toBe(HostState.ONLINE);
    expect(Number(later.connectedSince!.seconds)).toBe(since);
  });

  it("kill -9 of the agent in the middle of a create: after a restart, one container and the operation completes", async () => {
    const name = `k9-${uid()}`;
    // Kill the agent the instant Docker reports the container created (before the agent starts it).
    const events = (await docker.getEvents({ filters: { type: ["container"], event: ["create"] } })) as NodeJS.ReadableStream & { destroy(): void };
    let killedAt = 0;
    events.on("data", (b: Buffer) => {
      if (!killedAt && b.toString().includes(`berth-${name}-`)) {
        killedAt = Date.now();
        process.kill(agent.pid, "SIGKILL");
      }
    });
    try {
      const id = await createServer({ name, command: ["sleep", "3600"] });
      await waitFor("the kill", async () => killedAt > 0, 20_000, 20);
      await agent.kill(); // reap it
      const orphaned = await containersOf(id);
      expect(orphaned).toHaveLength(1);

      agent = runAgent({ dir: join(dir, "a"), stateDir, dataRoot });
      const running = await waitForPhase(manager, id, Phase.RUNNING, 60_000);
      const after = await containersOf(id);
      expect(after).toHaveLength(1);
      expect(after[0]!.Id).toBe(orphaned[0]!.Id);
      expect(running.status!.containerId).toBe(orphaned[0]!.Id);
    } finally {
      events.destroy();
    }
  });

  it("refuses a data directory that was replaced by a symlink pointing out, and removes nothing outside", async () => {
    const id = await createServer({ name: `esc-${uid()}`, command: ["sleep", "3600"], desiredState: DesiredState.STOPPED });
    await waitForPhase(manager, id, Phase.STOPPED, 60_000);
    const outside = join(dir, "precious");
    await mkdir(outside);
    await writeFile(join(outside, "keep"), "do not delete");
    const dataDir = join(dataRoot, id);
    await rm(dataDir, { recursive: true });
    await symlink(outside, dataDir);

    await manager.servers.startServer({ id });
    const failed = await waitForPhase(manager, id, Phase.FAILED, 30_000);
    expect(failed.status!.reason).toBe("DataPathRefused");
    expect(failed.status!.message).toContain("symlink");

    await manager.servers.purgeServer({ id, removeData: true });
    // The start failed with it, and now the data removal does too.
    await waitFor("the refused data removal", async () => refusals(id) >= 2, 30_000);
    expect(readFileSync(join(outside, "keep"), "utf8")).toBe("do not delete");
    expect(existsSync(dataDir)).toBe(true); // the link itself is left for the operator to look at
  });

  it("TailLogs streams stdout and stderr as the container writes them, honours tail_lines, and ends cleanly", async () => {
    const script = 'echo ready; i=0; while true; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); sleep 0.2; done';
    const id = await createServer({ name: `logs-${uid()}`, command: ["sh", "-c", script] });
    await waitForPhase(manager, id, Phase.RUNNING, 60_000);

    // follow: lines arrive while the container writes them; cancelling ends the stream.
    const ac = new AbortController();
    const seen: { stream: string; text: string }[] = [];
    const follow = (async () => {
      try {
        for await (const r of manager.servers.tailLogs({ id, follow: true }, { signal: ac.signal })) {
          seen.push({ stream: r.stream, text: Buffer.from(r.data).toString() });
          if (seen.some((s) => s.text.includes("out 8"))) ac.abort();
        }
        return "ended";
      } catch (err) {
        return ConnectError.from(err).code === Code.Canceled ? "cancelled" : String(err);
      }
    })();
    expect(await follow).toBe("cancelled");
    const out = seen.filter((s) => s.stream === "stdout").map((s) => s.text).join("");
    const err = seen.filter((s) => s.stream === "stderr").map((s) => s.text).join("");
    expect(out).toMatch(/^ready\nout 0\nout 1\n/);
    expect(err).toMatch(/^err 0\nerr 1\n/);
    await waitFor("the agent to stop reading the log", async () => /"cancelled":true[^\n]*"log stream ended"|log stream ended[^\n]*"cancelled":true/.test(agent.log()), 10_000);

    // tail_lines without follow: the last N lines, then the stream ends by itself.
    const tail: string[] = [];
    for await (const r of manager.servers.tailLogs({ id, tailLines: 3 })) tail.push(Buffer.from(r.data).toString());
    expect(tail.join("").trimEnd().split("\n")).toHaveLength(3);
    expect(tail.join("")).toMatch(/(out|err) \d+\n$/);

    // follow ends by itself when the container stops.
    const ended = (async () => {
      let n = 0;
      for await (const _ of manager.servers.tailLogs({ id, follow: true, tailLines: 1 })) n++;
      return n;
    })();
    await sleep(1000);
    await manager.servers.stopServer({ id, timeoutSeconds: 2 });
    expect(await ended).toBeGreaterThan(0);

    // A name nobody has answers NotFound.
    const missing = await (async () => {
      for await (const _ of manager.servers.tailLogs({ id: `nope-${uid()}` }));
    })().catch((e: unknown) => ConnectError.from(e).code);
    expect(missing).toBe(Code.NotFound);
  });

  it("a 30 s partition between agent and manager: offline and Unknown, then converges after the heal", async () => {
    const keep = await createServer({ name: `p1-${uid()}`, command: ["sleep", "3600"] });
    const stop = await createServer({ name: `p2-${uid()}`, command: ["sleep", "3600"] });
    await waitForPhase(manager, keep, Phase.RUNNING, 60_000);
    await waitForPhase(manager, stop, Phase.RUNNING, 60_000);

    const cutAt = Date.now();
    proxy.cut("blackhole");
    // Nothing gets through, nothing is closed: the manager notices the silence (--agent-timeout).
    const offline = await waitFor("host offline", async () => {
      const h = await host();
      return h.state === HostState.OFFLINE && h;
    }, 25_000, 500);
    // Silence is counted from the agent's last message, which is no older than its last
    // heartbeat: the host goes offline AGENT_TIMEOUT_S (--agent-timeout) after that heartbeat at the
    // earliest, never at once. (Measured against the heartbeat the manager recorded, not
    // against the cut: on a loaded machine a heartbeat can lag its period.)
    const lastBeatMs = Number(offline.lastHeartbeat!.seconds) * 1000 + Math.floor(offline.lastHeartbeat!.nanos / 1e6);
    expect(lastBeatMs).toBeLessThanOrEqual(cutAt + 1_000);
    expect(Date.now() - lastBeatMs).toBeGreaterThanOrEqual(AGENT_TIMEOUT_S * 1000);
    const unknown = await waitForPhase(manager, keep, Phase.UNKNOWN, 5_000);
    expect(unknown.status!.conditions.find((c) => c.type === "HostConnected")?.status).toBe(ConditionStatus.FALSE);
    expect(dockerReachable(await host())).toMatchObject({ status: ConditionStatus.UNKNOWN });
    // An operator acts meanwhile: recorded now, applied when the host is back.
    await manager.servers.stopServer({ id: stop });
    await waitForPhase(manager, stop, Phase.UNKNOWN, 5_000);

    await sleep(Math.max(0, 30_000 - (Date.now() - cutAt)));
    proxy.heal();
    await waitFor("host online again", async () => (await host()).state === HostState.ONLINE, 60_000, 500);
    await waitForPhase(manager, keep, Phase.RUNNING, 30_000);
    const stopped = await waitForPhase(manager, stop, Phase.STOPPED, 30_000);
    expect((await docker.getContainer(stopped.status!.containerId).inspect()).State.Running).toBe(false);
    expect((await docker.getContainer((await waitForPhase(manager, keep, Phase.RUNNING)).status!.containerId).inspect()).State.Running).toBe(true);
    expect(await containersOf(keep)).toHaveLength(1);
  });
});

describe("the agent under a Docker engine restart", () => {
  let engine: DockerEngine;
  let priv: Docker;
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc | undefined;
  let hostId: string;
  let serverId: string | undefined;
  let release: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    // Another run of this file (a teammate's `npm test`) would stop the same engine under us: take turns.
    release = await exclusive(`${PRIVATE_ROOT}/agent-test.lock`, 540_000);
    engine = await ownPrivateDockerd();
    priv = dockerClient(engine.dockerHost);
    await ensureTestImage(priv);
    dir = await tempDir("agent-engine");
    manager = await startManager({ dir });
    const { token } = await manager.hosts.createEnrollmentToken({});
    const stateDir = join(dir, "state");
    const env = { DOCKER_HOST: engine.dockerHost };
    const e = await enrollAgent({ managerUrl: manager.url, token, stateDir, dir, env });
    if (e.code !== 0) throw new Error(e.log);
    hostId = (JSON.parse(readFileSync(join(stateDir, "credentials.json"), "utf8")) as { hostId: string }).hostId;
    agent = runAgent({ dir, stateDir, dataRoot: join(dir, "data"), env });
    await waitFor("host online", async () => (await manager.hosts.getHost({ id: hostId })).host?.state === HostState.ONLINE);
  }, 600_000);

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    try {
      if (engine) {
        const d = dockerClient(engine.dockerHost);
        const mine = serverId ? await d.listContainers({ all: true, filters: { label: [`berth.server=${serverId}`] } }).catch(() => []) : [];
        for (const c of mine) await d.getContainer(c.Id).remove({ force: true }).catch(() => {});
        await engine.stop();
      }
    } finally {
      await release?.();
    }
  });

  it("reports DockerReachable=False while the engine is down, then resyncs and restores the server", async () => {
    const { server } = await manager.servers.createServer({ spec: { name: `eng-${uid()}`, hostId, image: TEST_IMAGE, command: ["sleep", "3600"] } });
    const id = server!.id;
    serverId = id;
    await waitForPhase(manager, id, Phase.RUNNING, 60_000);
    const getHost = async () => (await manager.hosts.getHost({ id: hostId })).host!;

    await engine.stop();
    const down = await waitFor("DockerReachable=False", async () => {
      const h = await getHost();
      return dockerReachable(h)?.status === ConditionStatus.FALSE && h;
    }, 20_000, 250);
    expect(down.dockerReachable).toBe(false);
    expect(down.state).toBe(HostState.ONLINE); // the agent is fine, its engine is not
    expect(dockerReachable(down)?.message).toContain("cannot reach its Docker engine");
    // It stays down, reported as such by every heartbeat, without the agent giving up: the next
    // heartbeat (it writes the condition with it) still says False.
    const beatMs = (h: Host) => Number(h.lastHeartbeat!.seconds) * 1000 + Math.floor(h.lastHeartbeat!.nanos / 1e6);
    const later = await waitFor("a heartbeat after DockerReachable=False", async () => {
      const h = await getHost();
      return beatMs(h) > beatMs(down) && h;
    }, 20_000, 250);
    expect(dockerReachable(later)?.status).toBe(ConditionStatus.FALSE);

    engine = await startPrivateDockerd("agent-test");
    await waitFor("DockerReachable=True", async () => dockerReachable(await getHost())?.status === ConditionStatus.TRUE, 30_000, 250);
    // The container exited with the engine; desired is running, so berth starts it again (same container).
    const back = await waitForPhase(manager, id, Phase.RUNNING, 60_000);
    const list = await priv.listContainers({ all: true, filters: { label: [`berth.server=${id}`] } });
    expect(list).toHaveLength(1);
    expect(list[0]!.State).toBe("running");
    expect(back.status!.containerId).toBe(list[0]!.Id);
    const hostEvents = eventsFor(manager.dbPath, "").map((e) => e.type);
    expect(hostEvents).toContain("host.docker_unreachable");
    expect(hostEvents).toContain("host.docker_reachable");
    expect(agent!.log()).toMatch(/Docker events stream re-established; resyncing|Docker engine reachable again/);
  });
});

/**
 * This file's own private dockerd, started by this run: a daemon left over
 * by a crashed run is stopped first (its pid from its own pidfile), so that
 * stop() really stops it.
 */
async function ownPrivateDockerd(): Promise<DockerEngine> {
  let engine = await startPrivateDockerd("agent-test");
  if (engine.ownedPid) return engine;
  const pidFile = `${PRIVATE_ROOT}/agent-test/docker.pid`;
  const pid = Number(readFileSync(pidFile, "utf8").trim());
  if (pid > 0) {
    process.kill(pid, "SIGTERM");
    await waitFor("the leftover agent-test dockerd to exit", async () => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    }, 30_000, 250);
  }
  engine = await startPrivateDockerd("agent-test");
  if (!engine.ownedPid) throw new Error("could not take over the agent-test dockerd");
  return engine;
}

/**
 * A cross-process lock: a directory holding the owner's pid. A holder that
 * died is taken over. Resolves to the release function.
 */
async function exclusive(lockDir: string, timeoutMs: number): Promise<() => Promise<void>> {
  await mkdir(PRIVATE_ROOT, { recursive: true });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await mkdir(lockDir);
      await writeFile(join(lockDir, "pid"), String(process.pid));
      return () => rm(lockDir, { recursive: true, force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const owner = Number(await readFile(join(lockDir, "pid"), "utf8").catch(() => "0"));
    let alive = false;
    try {
      if (owner > 0) process.kill(owner, 0);
      alive = owner > 0;
    } catch {
      alive = false;
    }
    // No pid yet: the owner is between mkdir and writeFile (or died there, long ago).
    const stale = owner === 0 && Date.now() - ((await stat(lockDir).catch(() => undefined))?.mtimeMs ?? Date.now()) > 10_000;
    if ((!alive && owner > 0) || stale) await rm(lockDir, { recursive: true, force: true });
    if (Date.now() > deadline) throw new Error(`${lockDir} still held by pid ${owner} after ${timeoutMs / 1000}s`);
    await sleep(owner > 0 ? 1_000 : 200);
  }
}
