/**
 * Transfers and clones (ServerService.TransferServer/CloneServer) between
 * real hosts: agent A on the shared engine, agents B and C on private
 * dockerds (C's data root a small tmpfs), a directory every host mounts
 * as the shared backup target, and an S3-compatible server (s3rver).
 *
 * The invariant of every failure: the server's data exists intact on at
 * least one host, the server is back in its desired state on its source,
 * the transfer ends Failed with its reason, and nothing is left behind.
 */
import { createHash, randomBytes } from "node:crypto";
import { execFile, execFileSync } from "node:child_process";
import { promisify } from "node:util";
import { createReadStream, existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { BackupService, BackupState } from "@berth/proto/berth/v1/backup_pb.js";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { AlertService } from "@berth/proto/berth/v1/alert_pb.js";
import { DesiredState, Phase, Protocol, type Server } from "@berth/proto/berth/v1/server_pb.js";
import { dockerClient, ensureTestImage, removeBerthContainers, startPrivateDockerd, TEST_IMAGE, type DockerEngine } from "./harness/docker-engine.js";
import { S3RVER_KEY, TestS3Server } from "../agent/testing/s3-server.js";
import { startTcpProxy, type TcpProxy } from "./harness/tcp-proxy.js";
import { removeTestDir, runAgent, startAgent, startManager, tempDir, waitFor, type ManagerProc, type Proc } from "./harness/processes.js";
import { testDockerHost } from "./harness/engine.js";

const execFileAsync = promisify(execFile);
const SLEEPER = ["sh", "-c", "exec sleep 100000"];
type AgentProc = Proc & { dataRoot: string; stateDir: string };

async function codeOf(p: Promise<unknown>): Promise<{ code: Code; message: string }> {
  try {
    await p;
  } catch (err) {
    const e = ConnectError.from(err);
    return { code: e.code, message: e.rawMessage };
  }
  throw new Error("expected the call to fail");
}

/** Relative path → sha256 of every file under `dir` (streamed: a 1 GiB file is never held in memory). */
async function tree(dir: string, base = ""): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of readdirSync(join(dir, base), { withFileTypes: true })) {
    const rel = base ? `${base}/${e.name}` : e.name;
    if (e.isDirectory()) Object.assign(out, await tree(dir, rel));
    else {
      const h = createHash("sha256");
      for await (const chunk of createReadStream(join(dir, rel))) h.update(chunk as Buffer);
      out[rel] = h.digest("hex");
    }
  }
  return out;
}

/**
 * `mb` MiB of random bytes at `path`, written by head in a child process: the
 * test's own event loop keeps serving the TCP proxy host B dials through.
 */
async function writeRandom(path: string, mb: number): Promise<void> {
  await execFileAsync("sh", ["-c", 'head -c "$1" /dev/urandom > "$2"', "sh", String(mb * 1024 * 1024), path]);
}

/** `mb` MiB of log-like text at `path` (compresses well: a large world moves without gzip being the bottleneck). */
async function writeText(path: string, mb: number): Promise<void> {
  await execFileAsync("sh", ["-c", 'yes "[12:00:01] [Server thread/INFO]: Saving chunks for level ServerLevel[world]" | head -c "$1" > "$2"', "sh", String(mb * 1024 * 1024), path]);
}

/** Completed objects s3rver stores under `dir` (its multipart upload parts excluded). */
function storedObjects(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true }).map(String).filter((f) => !f.startsWith("._S3rver_uploads"));
}

describe("transfers and clones between hosts", () => {
  let dir: string;
  let shared: string;
  let manager: ManagerProc;
  let engineB: DockerEngine;
  let engineC: DockerEngine;
  const dockers: Docker[] = [];
  const agents: Record<"a" | "b" | "c", AgentProc> = {} as never;
  const hostIds: Record<"a" | "b" | "c", string> = { a: "", b: "", c: "" };
  const engines: Record<"a" | "b" | "c", string> = { a: "", b: "", c: "" };
  let proxyB: TcpProxy;
  let backups: Client<typeof BackupService>;
  let events: Client<typeof EventService>;
  let alerts: Client<typeof AlertService>;
  let s3: TestS3Server;
  const uid = Date.now().toString(36);
  const small = () => join(dir, "c-data");

  function agentArgs(): string[] {
    return ["--backup-dir", shared];
  }

  async function addAgent(key: "a" | "b" | "c", dockerHost: string, opts: { managerUrls?: string[]; dataRoot?: string } = {}): Promise<void> {
    const before = new Set((await manager.hosts.listHosts({})).hosts.map((h) => h.id));
    const adir = join(dir, key);
    mkdirSync(adir, { recursive: true });
    agents[key] = await startAgent({ manager, dir: adir, dockerHost, dataRoot: opts.dataRoot ?? join(dir, `${key}-data`), ...(opts.managerUrls ? { managerUrls: opts.managerUrls } : {}), extraArgs: agentArgs() });
    engines[key] = dockerHost;
    const h = await waitFor(`host ${key} online`, async () => (await manager.hosts.listHosts({})).hosts.find((x) => !before.has(x.id) && x.state === 1), 30_000);
    hostIds[key] = h.id;
  }

  function restartAgent(key: "a" | "b" | "c", managerUrls?: string[]): void {
    const a = agents[key];
    const proc = runAgent({ dir: join(dir, key), stateDir: a.stateDir, dataRoot: a.dataRoot, env: { DOCKER_HOST: engines[key] }, extraArgs: [...agentArgs(), ...(managerUrls ? ["--manager", managerUrls.join(",")] : [])] });
    agents[key] = { ...proc, dataRoot: a.dataRoot, stateDir: a.stateDir };
  }

  beforeAll(async () => {
    dir = await tempDir("data-transfers");
    shared = join(dir, "shared");
    mkdirSync(shared, { recursive: true });
    engineB = await startPrivateDockerd("transfer-b");
    engineC = await startPrivateDockerd("transfer-c");
    for (const e of [engineB, engineC]) {
      const d = dockerClient(e.dockerHost);
      await ensureTestImage(d);
      dockers.push(d);
    }
    dockers.push(dockerClient(testDockerHost()));
    // A cut link is noticed after --agent-timeout (15 s by default), and only then does the
    // transfer's grace run out: 5 s of silence (five 1 s heartbeats) says the same here.
    manager = await startManager({ dir, args: ["--alert-interval", "1", "--transfer-offline-grace", "5", "--heartbeat-interval", "1", "--agent-timeout", "5"] });
    const u = new URL(manager.url);
    proxyB = await startTcpProxy(u.hostname, Number(u.port));
    await addAgent("a", testDockerHost());
    await addAgent("b", engineB.dockerHost, { managerUrls: [`${u.protocol}//${proxyB.address}`] });
    // Host C's data root is a small tmpfs: a transfer there runs out of space.
    mkdirSync(small(), { recursive: true });
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=48m", "tmpfs", small()]);
    await addAgent("c", engineC.dockerHost, { dataRoot: small() });
    backups = createClient(BackupService, manager.transport(manager.adminToken));
    events = createClient(EventService, manager.transport(manager.adminToken));
    alerts = createClient(AlertService, manager.transport(manager.adminToken));
    await backups.createBackupTarget({ name: `shared-${uid}`, kind: { case: "directory", value: { path: shared, shared: true } } });
    s3 = await TestS3Server.start(["berth"]);
  }, 180_000);

  afterAll(async () => {
    for (const a of Object.values(agents)) await a?.stop();
    await manager?.stop();
    await proxyB?.close();
    await s3?.close();
    for (const d of dockers) if (manager?.managerId) await removeBerthContainers(d, { managerId: manager.managerId }).catch(() => {});
    await engineB?.stop();
    await engineC?.stop();
    if (dir && existsSync(small())) {
      try {
        execFileSync("umount", [small()]);
      } catch {
        // not mounted
      }
    }
    await removeTestDir(dir);
  });

  async function serverOn(key: "a" | "b" | "c", name: string, opts: { mb?: number; textMb?: number; ports?: number[]; stopped?: boolean } = {}): Promise<{ id: string; name: string; before: Record<string, string> }> {
    const { server } = await manager.servers.createServer({
      spec: {
        name: `${name}-${uid}`,
        hostId: hostIds[key],
        image: TEST_IMAGE,
        command: SLEEPER,
        dataMountPath: "/data",
        ports: (opts.ports ?? []).map((p) => ({ hostPort: p, containerPort: 80, protocol: Protocol.TCP })),
        ...(opts.stopped ? { desiredState: DesiredState.STOPPED } : {}),
      },
    });
    await settled(server!.id, opts.stopped ? Phase.STOPPED : Phase.RUNNING, 60_000);
    const data = join(agents[key].dataRoot, server!.id);
    mkdirSync(join(data, "world/region"), { recursive: true });
    writeFileSync(join(data, "server.properties"), `motd=${name}\n`);
    for (let i = 0; i < 50; i++) writeFileSync(join(data, "world/region", `r.${i}.mca`), randomBytes(2048 + i));
    if (opts.mb) await writeRandom(join(data, "big.bin"), opts.mb);
    if (opts.textMb) await writeText(join(data, "logs.txt"), opts.textMb);
    return { id: server!.id, name: server!.spec!.name, before: await tree(data) };
  }

  /** Waits until server `id` is in `phase` with no data operation under way. */
  async function settled(id: string, phase: Phase, timeoutMs: number): Promise<Server> {
    return waitFor(`server ${id} ${Phase[phase]} with nothing under way`, async () => {
      const srv = (await manager.servers.getServer({ id })).server!;
      return srv.status?.phase === phase && !srv.status.operation ? srv : undefined;
    }, timeoutMs);
  }

  async function get(id: string): Promise<Server> {
    return (await manager.servers.getServer({ id })).server!;
  }

  async function eventTypes(id: string): Promise<string[]> {
    return (await events.listEvents({ serverId: id, pageSize: 500 })).events.map((e) => e.type);
  }

  /** The server is back on `key` in Running, with its data as before, and the transfer failed with `reason`. */
  async function backOn(key: "a" | "b" | "c", s: { id: string; before: Record<string, string> }, reason: RegExp): Promise<void> {
    const failed = await waitFor("the transfer to fail", async () => (await events.listEvents({ serverId: s.id, pageSize: 500 })).events.find((e) => e.type === "server.transfer_failed"), 120_000);
    expect(failed.reason).toMatch(reason);
    await waitFor("the server running on its source again", async () => {
      const srv = await get(s.id);
      return srv.spec?.hostId === hostIds[key] && srv.status?.phase === Phase.RUNNING && !srv.status.operation;
    }, 90_000);
    expect(await tree(join(agents[key].dataRoot, s.id))).toEqual(s.before);
    // And an alert says so until the next transfer.
    const alert = await waitFor("the transfer_failed alert", async () => (await alerts.listAlerts({})).alerts.find((a) => a.rule === "transfer_failed" && a.subject === `server:${s.id}`), 30_000);
    expect(alert.message).toContain(failed.reason);
  }

  it("refuses what cannot work, with the reason and what to do", async () => {
    const s = await serverOn("a", "refused", { ports: [18731] });
    const same = await codeOf(manager.servers.transferServer({ id: s.id, host: hostIds.a }));
    expect(same.code).toBe(Code.FailedPrecondition);
    expect(same.message).toContain("already");
    expect((await codeOf(manager.servers.transferServer({ id: s.id, host: "host_nope" }))).code).toBe(Code.NotFound);
    // A host's own directory cannot carry data to another host.
    await backups.createBackupTarget({ name: `own-${uid}`, kind: { case: "directory", value: { path: join(shared, "own") } } });
    const own = await codeOf(manager.servers.transferServer({ id: s.id, host: hostIds.b, target: `own-${uid}` }));
    expect(own.code).toBe(Code.FailedPrecondition);
    expect(own.message).toContain("not shared");
    // The server's host port is taken on the target (by a stopped server: both engines run on this
    // machine, so a running one could not bind it).
    await serverOn("b", "port-holder", { ports: [18731], stopped: true });
    const clash = await codeOf(manager.servers.transferServer({ id: s.id, host: hostIds.b }));
    expect(clash.code).toBe(Code.FailedPrecondition);
    expect(clash.message).toContain("18731");
    expect((await get(s.id)).spec?.hostId).toBe(hostIds.a);
    expect((await get(s.id)).status?.operation).toBeUndefined();
  });

  it("drains a host: cordoned, its servers moved to the other schedulable host a few at a time; one whose ports are taken everywhere is listed as failed", async () => {
    // C (the small tmpfs host) is cordoned: nothing new goes there, whichever way.
    await manager.hosts.cordonHost({ id: hostIds.c });
    const placed = await codeOf(manager.servers.createServer({ spec: { name: `on-c-${uid}`, hostId: hostIds.c, image: TEST_IMAGE, command: SLEEPER } }));
    expect(placed.code).toBe(Code.FailedPrecondition);
    expect(placed.message).toContain("cordoned");
    const one = await serverOn("a", "drain-one");
    const two = await serverOn("a", "drain-two", { stopped: true });
    const refused = (await manager.servers.listServers({ hostId: hostIds.a })).servers.find((x) => x.spec?.name === `refused-${uid}`)!;
    const { host } = await manager.hosts.drainHost({ id: hostIds.a, parallel: 2, target: `shared-${uid}` });
    expect(host?.unschedulable).toBe(true);
    expect(host?.draining).toBe(true);
    const finished = await waitFor("the drain to finish", async () => (await events.listEvents({ hostId: hostIds.a, typePrefix: "host.drain_finished", pageSize: 5 })).events[0], 240_000, 500);
    expect(finished.message).toContain("2");
    for (const [s, phase] of [[one, Phase.RUNNING], [two, Phase.STOPPED]] as const) {
      const srv = await settled(s.id, phase, 60_000);
      expect(srv.spec?.hostId).toBe(hostIds.b);
      expect(await tree(join(agents.b.dataRoot, s.id))).toEqual(s.before);
    }
    // The server no other host can take (its port is published by one on B) stays, and is named.
    expect((await get(refused.id)).spec?.hostId).toBe(hostIds.a);
    const failedOnes = (await events.listEvents({ hostId: hostIds.a, typePrefix: "host.drain_server_failed", pageSize: 10 })).events;
    expect(failedOnes.some((e) => e.serverId === refused.id)).toBe(true);
    const after = (await manager.hosts.getHost({ id: hostIds.a })).host!;
    expect(after.unschedulable).toBe(true);
    expect(after.draining).toBe(false);
    await manager.hosts.uncordonHost({ id: hostIds.a });
    await manager.hosts.uncordonHost({ id: hostIds.c });
    expect((await manager.hosts.getHost({ id: hostIds.a })).host?.unschedulable).toBe(false);
  });

  it("moves a server with 1 GiB of data to another host: verified, running there, nothing left on the source", async () => {
    // 1 GiB: 128 MiB of random bytes and 896 MiB of text.
    const s = await serverOn("b", "big", { mb: 128, textMb: 896 });
    const { backupId } = await manager.servers.transferServer({ id: s.id, host: hostIds.a });
    // Progress shows on the status while it runs.
    const seen = await waitFor("transfer progress", async () => {
      const op = (await get(s.id)).status?.operation;
      return op && op.kind === "transfer" && op.bytesDone > 0n ? op : undefined;
    }, 120_000, 50);
    expect(seen.sourceHost).toBe(hostIds.b);
    expect(seen.targetHost).toBe(hostIds.a);
    await waitFor("the server running on the new host", async () => {
      const srv = await get(s.id);
      return srv.spec?.hostId === hostIds.a && srv.status?.phase === Phase.RUNNING && !srv.status.operation;
    }, 600_000, 200);
    expect(await tree(join(agents.a.dataRoot, s.id))).toEqual(s.before);
    // The source copy goes: container and data directory.
    await waitFor("the source copy removed", async () => !existsSync(join(agents.b.dataRoot, s.id)), 60_000);
    await waitFor("the source container removed", async () => (await dockers[0]!.listContainers({ all: true, filters: { label: [`berth.server=${s.id}`] } })).length === 0, 30_000);
    const types = await eventTypes(s.id);
    expect(types).toEqual(expect.arrayContaining(["server.transfer_requested", "server.transfer_moved", "server.transfer_succeeded", "server.copy_removed"]));
    // The archive it travelled as is a backup like any other, usable on the new host.
    const { backup } = await backups.getBackup({ id: backupId });
    expect(backup?.state).toBe(BackupState.SUCCEEDED);
    expect(backup?.rawBytes).toBeGreaterThanOrEqual(1024n * 1024n * 1024n);
    // Free the disk for the tests that follow.
    await manager.servers.purgeServer({ id: s.id, removeData: true });
    await backups.deleteBackup({ id: backupId });
  }, 900_000);

  it("through S3, keeping the source copy for a while: the stopped source stays until then", async () => {
    const SECRET = `s3-secret-${uid}`;
    await backups.createBackupTarget({ name: `s3-${uid}`, kind: { case: "s3", value: { endpoint: s3.endpoint, bucket: "berth", prefix: "t/", region: "us-east-1", pathStyle: true, accessKeyId: S3RVER_KEY.accessKeyId, secretAccessKey: SECRET } } });
    const s = await serverOn("a", "via-s3");
    await manager.servers.stopServer({ id: s.id });
    await settled(s.id, Phase.STOPPED, 30_000);
    await manager.servers.transferServer({ id: s.id, host: hostIds.b, target: `s3-${uid}`, keepSourceHours: 1 });
    await waitFor("stopped on the new host", async () => {
      const srv = await get(s.id);
      return srv.spec?.hostId === hostIds.b && srv.status?.phase === Phase.STOPPED && !srv.status.operation;
    }, 120_000);
    expect(await tree(join(agents.b.dataRoot, s.id))).toEqual(s.before);
    // Kept on the source, and not reported as an orphan meanwhile.
    expect(await tree(join(agents.a.dataRoot, s.id))).toEqual(s.before);
  });

  it("the source agent killed mid-archive: the transfer fails, the server runs on its source with its data", async () => {
    const s = await serverOn("a", "kill-source", { mb: 150 });
    await manager.servers.transferServer({ id: s.id, host: hostIds.b });
    await waitFor("archiving under way", async () => {
      const op = (await get(s.id)).status?.operation;
      return op && op.stage === "Copying" && op.bytesDone > 0n;
    }, 60_000, 20);
    await agents.a.kill();
    restartAgent("a");
    await backOn("a", s, /AgentRestarted/);
  });

  it("the target agent killed mid-restore and gone: the transfer fails after a grace, the server runs on its source; the partial copy goes when the target returns", async () => {
    const s = await serverOn("a", "kill-target", { mb: 300 });
    await manager.servers.transferServer({ id: s.id, host: hostIds.b });
    await waitFor("restoring on the target", async () => {
      const srv = await get(s.id);
      return srv.spec?.hostId === hostIds.b && srv.status?.operation && srv.status.operation.bytesDone > 0n;
    }, 120_000, 20);
    await agents.b.kill();
    await backOn("a", s, /TargetHostOffline/);
    const u = new URL(manager.url);
    restartAgent("b", [`${u.protocol}//${proxyB.address}`]);
    await waitFor("the partial copy removed from the target", async () => (await eventTypes(s.id)).includes("server.copy_removed"), 120_000);
    expect(existsSync(join(agents.b.dataRoot, s.id))).toBe(false);
  });

  it("the link to the target cut mid-restore: the transfer fails, the server runs on its source", async () => {
    const s = await serverOn("a", "cut-link", { mb: 300 });
    await manager.servers.transferServer({ id: s.id, host: hostIds.b });
    await waitFor("restoring on the target", async () => {
      const srv = await get(s.id);
      return srv.spec?.hostId === hostIds.b && srv.status?.operation && srv.status.operation.bytesDone > 0n;
    }, 120_000, 20);
    proxyB.cut("blackhole");
    try {
      await backOn("a", s, /TargetHostOffline/);
    } finally {
      proxyB.heal();
    }
    await waitFor("the partial copy removed from the target", async () => (await eventTypes(s.id)).includes("server.copy_removed"), 120_000);
  });

  it("the target's disk fills: the transfer fails, the server runs on its source, nothing is left on the target", async () => {
    const s = await serverOn("a", "full-target", { mb: 80 });
    await manager.servers.transferServer({ id: s.id, host: hostIds.c });
    await backOn("a", s, /Full|NoSpace|ENOSPC|Restore/i);
    await waitFor("nothing left on the target", async () => !existsSync(join(small(), s.id)) && readdirSync(small()).every((e) => !e.includes(s.id.slice(4))), 60_000);
  });

  it("the S3 server killed mid-upload: the transfer fails, no object is left, the server runs on its source", async () => {
    const s = await serverOn("a", "kill-s3", { mb: 150 });
    await manager.servers.transferServer({ id: s.id, host: hostIds.b, target: `s3-${uid}` });
    await waitFor("uploading", async () => {
      const op = (await get(s.id)).status?.operation;
      return op && op.stage === "Copying" && op.bytesDone > 0n;
    }, 60_000, 20);
    await s3.stop();
    try {
      await backOn("a", s, /TargetUnreachable|BackupFailed/);
    } finally {
      await s3.restart();
    }
    expect(storedObjects(join(s3.directory, "berth")).filter((k) => k.includes(s.id))).toEqual([]);
  });

  it("clones a server: from a backup onto the same host, and from a fresh backup onto another host with clashing ports moved", async () => {
    const s = await serverOn("a", "origin", { ports: [18741] });
    const { backup } = await backups.createBackup({ server: s.id, target: `shared-${uid}` });
    await waitFor("the backup", async () => (await backups.getBackup({ id: backup!.id })).backup?.state === BackupState.SUCCEEDED, 60_000);
    const one = await manager.servers.cloneServer({ source: s.id, name: `copy-one-${uid}`, fromBackup: backup!.id });
    expect(one.server?.spec?.ports[0]?.hostPort).not.toBe(18741);
    await settled(one.server!.id, Phase.STOPPED, 60_000);
    expect(await tree(join(agents.a.dataRoot, one.server!.id))).toEqual(s.before);
    // Stopped: both engines share this machine's ports, and the source keeps 18741 bound.
    const two = await manager.servers.cloneServer({ source: s.id, name: `copy-two-${uid}`, host: hostIds.b, desiredState: DesiredState.STOPPED });
    expect(two.server?.spec?.ports[0]?.hostPort).toBe(18741);
    await settled(two.server!.id, Phase.STOPPED, 120_000);
    expect(await tree(join(agents.b.dataRoot, two.server!.id))).toEqual(s.before);
    // The source stopped for the copy and runs again.
    await settled(s.id, Phase.RUNNING, 60_000);
    const taken = await codeOf(manager.servers.cloneServer({ source: s.id, name: `copy-two-${uid}` }));
    expect(taken.code).toBe(Code.AlreadyExists);
  });
});
