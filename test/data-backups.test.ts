/**
 * Backups of servers' data directories (BackupService) against real
 * processes and a real Docker engine: a directory target, a backup that
 * stops the server for the copy and starts it again, a restore that swaps
 * the data back and discards the safety copy once the server runs, and the
 * failures: the agent killed mid-backup (Failed/AgentRestarted, no partial
 * archive), a deadline (Failed/DeadlineExceeded), the host offline, a
 * target the agent does not allow, locked backups, another server's backup.
 */
import { createHash, randomBytes } from "node:crypto";
import { execFile, execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { BackupService, BackupState, type Backup } from "@berth/proto/berth/v1/backup_pb.js";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { AlertService } from "@berth/proto/berth/v1/alert_pb.js";
import { BackupPolicySchema, Phase } from "@berth/proto/berth/v1/server_pb.js";
import { create } from "@bufbuild/protobuf";
import { dockerClient, ensureBinary, TEST_IMAGE } from "./harness/docker-engine.js";
import { S3Target } from "../agent/src/data/s3-target.js";
import { S3RVER_KEY, TestS3Server } from "../agent/testing/s3-server.js";
import { runAgent, startAgent, startManager, tempDir, waitFor, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { testDockerHost } from "./harness/engine.js";

const SLEEPER = ["sh", "-c", "exec sleep 100000"];

async function codeOf(p: Promise<unknown>): Promise<{ code: Code; message: string }> {
  try {
    await p;
  } catch (err) {
    const e = ConnectError.from(err);
    return { code: e.code, message: e.rawMessage };
  }
  throw new Error("expected the call to fail");
}

/** Relative path → sha256 of every file under `dir` (directories as "dir"). */
function tree(dir: string, base = ""): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of readdirSync(join(dir, base), { withFileTypes: true })) {
    const rel = base ? `${base}/${e.name}` : e.name;
    if (e.isDirectory()) {
      out[rel] = "dir";
      Object.assign(out, tree(dir, rel));
    } else out[rel] = createHash("sha256").update(readFileSync(join(dir, rel))).digest("hex");
  }
  return out;
}

function writeRandom(path: string, mb: number): void {
  const chunk = 1024 * 1024;
  const parts: Buffer[] = [];
  for (let i = 0; i < mb; i++) parts.push(randomBytes(chunk));
  writeFileSync(path, Buffer.concat(parts));
}

describe("backups of data directories", () => {
  const docker = dockerClient(testDockerHost());
  let dir: string;
  let backupDir: string;
  let manager: ManagerProc;
  let agent: Proc & { dataRoot: string; stateDir: string };
  let backups: Client<typeof BackupService>;
  let events: Client<typeof EventService>;
  const uid = Date.now().toString(36);

  beforeAll(async () => {
    await ensureBinary("zstd", "zstd"); // tar --zstd reads the archives as an operator would
    dir = await tempDir("data-backups");
    backupDir = join(dir, "backups");
    manager = await startManager({ dir, args: ["--backup-retention-interval", "1", "--alert-interval", "1"] });
    agent = await startAgent({ manager, dir, extraArgs: ["--backup-dir", backupDir] });
    await waitFor("host online", async () => (await manager.hosts.listHosts({})).hosts.find((h) => h.state === 1));
    backups = createClient(BackupService, manager.transport(manager.adminToken));
    events = createClient(EventService, manager.transport(manager.adminToken));
  });

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    const mine = manager?.managerId ? await docker.listContainers({ all: true, filters: { label: [`berth.manager=${manager.managerId}`] } }) : [];
    for (const c of mine) await docker.getContainer(c.Id).remove({ force: true }).catch(() => {});
    if (dir && !process.env.BERTH_KEEP_TEST_DIRS) rmSync(dir, { recursive: true, force: true });
  });

  async function runningServer(name: string): Promise<{ id: string; data: string }> {
    const { server } = await manager.servers.createServer({ spec: { name: `${name}-${uid}`, image: TEST_IMAGE, command: SLEEPER, dataMountPath: "/data" } });
    await waitForPhase(manager, server!.id, Phase.RUNNING, 60_000);
    return { id: server!.id, data: join(agent.dataRoot, server!.id) };
  }

  async function finished(id: string, timeoutMs = 120_000): Promise<Backup> {
    return waitFor(
      `backup ${id} to finish`,
      async () => {
        const { backup } = await backups.getBackup({ id });
        return backup && (backup.state === BackupState.SUCCEEDED || backup.state === BackupState.FAILED) ? backup : undefined;
      },
      timeoutMs,
    );
  }

  function partials(): string[] {
    if (!existsSync(backupDir)) return [];
    const found: string[] = [];
    for (const f of readdirSync(backupDir, { recursive: true })) found.push(String(f));
    return found;
  }

  it("refuses bad targets and a target the agent does not allow", async () => {
    const bad = await codeOf(backups.createBackupTarget({ name: "Bad Name", kind: { case: "directory", value: { path: backupDir } } }));
    expect(bad.code).toBe(Code.InvalidArgument);
    const rel = await codeOf(backups.createBackupTarget({ name: `rel-${uid}`, kind: { case: "directory", value: { path: "backups" } } }));
    expect(rel.code).toBe(Code.InvalidArgument);
    await backups.createBackupTarget({ name: `elsewhere-${uid}`, kind: { case: "directory", value: { path: join(dir, "not-allowed") } } });
    const dup = await codeOf(backups.createBackupTarget({ name: `elsewhere-${uid}`, kind: { case: "directory", value: { path: join(dir, "x") } } }));
    expect(dup.code).toBe(Code.AlreadyExists);
    const s = await runningServer("refused");
    const refused = await codeOf(backups.createBackup({ server: s.id, target: `elsewhere-${uid}` }));
    expect(refused.code).toBe(Code.FailedPrecondition);
    expect(refused.message).toContain("--backup-dir");
    const missing = await codeOf(backups.createBackup({ server: s.id, target: "no-such-target" }));
    expect(missing.code).toBe(Code.NotFound);
    // Nothing was recorded for the refused backups, and the server never stopped.
    expect((await backups.listBackups({ server: s.id })).backups).toHaveLength(0);
    expect((await manager.servers.getServer({ id: s.id })).server?.status?.phase).toBe(Phase.RUNNING);
    await backups.deleteBackupTarget({ id: `elsewhere-${uid}` });
  });

  it("backs up with the server stopped for the copy, restores it, and discards the safety copy once the server runs", async () => {
    const { target } = await backups.createBackupTarget({ name: `local-${uid}`, kind: { case: "directory", value: { path: backupDir } } });
    const s = await runningServer("roundtrip");
    mkdirSync(join(s.data, "world/region"), { recursive: true });
    writeFileSync(join(s.data, "server.properties"), "motd=hello\n");
    writeFileSync(join(s.data, "world/level.dat"), randomBytes(4096));
    writeRandom(join(s.data, "world/region/r.0.0.mca"), 8);
    writeFileSync(join(s.data, "cache.tmp"), "left out");
    const before = tree(s.data);

    const { backup } = await backups.createBackup({ server: s.id, target: target!.id, ignore: ["*.tmp"] });
    expect(backup?.state === BackupState.PENDING || backup?.state === BackupState.RUNNING).toBe(true);
    const done = await finished(backup!.id);
    expect(done.state, `${done.reason}: ${done.message}`).toBe(BackupState.SUCCEEDED);
    expect(Number(done.files)).toBeGreaterThanOrEqual(3);
    // The archive is in the directory, zstd-compressed, with the recorded checksum and size, readable by tar.
    expect(done.key).toBe(`${s.id}/${done.id}.tar.zst`);
    expect(done.compression).toBe("zstd");
    const file = join(backupDir, done.key);
    const bytes = readFileSync(file);
    expect(createHash("sha256").update(bytes).digest("hex")).toBe(done.sha256);
    expect(BigInt(bytes.length)).toBe(done.archiveBytes);
    const { stdout: listing } = await promisify(execFile)("tar", ["--zstd", "-tf", file]);
    expect(listing).toContain("world/region/r.0.0.mca");
    expect(listing).not.toContain("cache.tmp");
    // The server was stopped for the copy and runs again; its desired state never changed.
    const back = await waitForPhase(manager, s.id, Phase.RUNNING, 60_000);
    expect(back.spec?.desiredState).toBe(1);
    const { events: ledger } = await events.listEvents({ serverId: s.id, pageSize: 200 });
    const types = ledger.map((e) => `${e.type}:${e.reason}`);
    expect(types).toContain("backup.requested:");
    expect(types).toContain("backup.succeeded:Succeeded");
    expect(types.some((t) => t.startsWith("phase.changed:StoppingForBackup"))).toBe(true);

    // Change the data, then restore: the backed-up tree comes back (without the ignored file).
    rmSync(join(s.data, "server.properties"));
    writeFileSync(join(s.data, "new-file"), "after the backup");
    const { server: restoring } = await backups.restoreBackup({ server: s.id, backupId: done.id });
    expect(restoring?.status?.operation?.kind).toBe("restore");
    await waitFor("the restore to finish", async () => {
      const { events: l } = await events.listEvents({ serverId: s.id, pageSize: 50 });
      return l.find((e) => e.type === "backup.restored" || e.type === "backup.restore_failed");
    }, 60_000);
    await waitForPhase(manager, s.id, Phase.RUNNING, 60_000);
    const expected = { ...before };
    delete expected["cache.tmp"];
    expect(tree(s.data)).toEqual(expected);
    // The safety copy of the replaced data goes once the server runs again.
    const previous = join(agent.dataRoot, ".berth-previous");
    await waitFor("the safety copy to be discarded", async () => !existsSync(previous) || readdirSync(previous).length === 0, 30_000);
    const after = (await manager.servers.getServer({ id: s.id })).server!;
    expect(after.status?.operation).toBeUndefined();

    // Locked backups are never deleted; unlocked, the archive goes with the backup.
    await backups.lockBackup({ id: done.id, locked: true });
    expect((await codeOf(backups.deleteBackup({ id: done.id }))).code).toBe(Code.FailedPrecondition);
    expect(existsSync(file)).toBe(true);
    await backups.lockBackup({ id: done.id, locked: false });
    await backups.deleteBackup({ id: done.id });
    expect(existsSync(file)).toBe(false);
    expect((await codeOf(backups.getBackup({ id: done.id }))).code).toBe(Code.NotFound);
  });

  it("retention: with keep_last=1 an older backup goes (archive and record) once a newer one succeeded; a locked one stays", async () => {
    const s = await runningServer("retained");
    const { server } = await manager.servers.getServer({ id: s.id });
    // The policy's ignore patterns apply to every backup that names none of its own.
    await manager.servers.updateServer({ id: s.id, spec: { ...server!.spec!, backupPolicy: create(BackupPolicySchema, { keepLast: 1, ignore: ["*.log"] }) } });
    writeFileSync(join(s.data, "x"), "data");
    writeFileSync(join(s.data, "noise.log"), "left out by the policy");
    const make = async () => finished((await backups.createBackup({ server: s.id, target: `local-${uid}`, live: true })).backup!.id);
    const first = await make();
    const { stdout: listing } = await promisify(execFile)("tar", ["--zstd", "-tf", join(backupDir, first.key)]);
    expect(listing).toContain("x");
    expect(listing).not.toContain("noise.log");
    const second = await make();
    expect([first.state, second.state]).toEqual([BackupState.SUCCEEDED, BackupState.SUCCEEDED]);
    const list = async () => (await backups.listBackups({ server: s.id })).backups.map((b) => b.id);
    await waitFor("retention to remove the older backup", async () => !(await list()).includes(first.id), 30_000);
    expect(existsSync(join(backupDir, first.key))).toBe(false);
    await backups.lockBackup({ id: second.id, locked: true });
    const third = await make();
    const fourth = await make();
    // The third goes like the first did (that shows a retention run after it); the locked second,
    // beyond keep_last too, stays, and so does the newest.
    await waitFor("retention to remove the third backup", async () => !(await list()).includes(third.id), 30_000);
    expect((await list()).sort()).toEqual([second.id, fourth.id].sort());
    const { events: ledger } = await events.listEvents({ serverId: s.id, pageSize: 100 });
    expect(ledger.some((e) => e.type === "backup.deleted" && e.actor === "retention" && e.correlationId === first.id)).toBe(true);
  });

  it("a restore of another server's backup, or of an unfinished one, is refused", async () => {
    const a = await runningServer("owner");
    const b = await runningServer("other");
    writeFileSync(join(a.data, "x"), "a's data");
    const { backup } = await backups.createBackup({ server: a.id, target: `local-${uid}`, live: true });
    const done = await finished(backup!.id);
    expect(done.state).toBe(BackupState.SUCCEEDED);
    expect(done.live).toBe(true);
    const wrong = await codeOf(backups.restoreBackup({ server: b.id, backupId: done.id }));
    expect(wrong.code).toBe(Code.FailedPrecondition);
    expect(wrong.message).toContain("not of");
    expect(readdirSync(b.data)).toEqual([]);
  });

  it("an agent killed mid-backup: the backup fails with AgentRestarted, no partial archive is left, the server runs again", async () => {
    const s = await runningServer("killed");
    for (let i = 0; i < 6; i++) writeRandom(join(s.data, `blob-${i}`), 40);
    const { backup } = await backups.createBackup({ server: s.id, target: `local-${uid}` });
    await waitFor("the backup to make progress", async () => {
      const { backup: b } = await backups.getBackup({ id: backup!.id });
      return b && b.bytesDone > 0n && b.state === BackupState.RUNNING;
    }, 60_000, 20);
    await agent.kill();
    expect(partials().some((p) => p.includes(".partial-"))).toBe(true);
    const restarted = runAgent({ dir, stateDir: agent.stateDir, dataRoot: agent.dataRoot, extraArgs: ["--backup-dir", backupDir] });
    agent = { ...restarted, dataRoot: agent.dataRoot, stateDir: agent.stateDir };
    const failed = await finished(backup!.id, 60_000);
    expect(failed.state).toBe(BackupState.FAILED);
    expect(failed.reason).toBe("AgentRestarted");
    expect(partials()).not.toContainEqual(expect.stringContaining(backup!.id));
    await waitForPhase(manager, s.id, Phase.RUNNING, 60_000);
  });

  it("a backup past its deadline fails with DeadlineExceeded and leaves nothing in the target", async () => {
    const s = await runningServer("deadline");
    for (let i = 0; i < 8; i++) writeRandom(join(s.data, `blob-${i}`), 40);
    const { backup } = await backups.createBackup({ server: s.id, target: `local-${uid}`, live: true, timeoutSeconds: 1 });
    const failed = await finished(backup!.id, 60_000);
    expect(failed.state).toBe(BackupState.FAILED);
    expect(failed.reason).toBe("DeadlineExceeded");
    await waitFor("no partial archive left", async () => !partials().some((p) => p.includes(backup!.id)), 30_000);
    expect((await manager.servers.getServer({ id: s.id })).server?.status?.phase).toBe(Phase.RUNNING);
    // The failure is an alert (a warning) until a newer backup succeeds.
    const alerts = createClient(AlertService, manager.transport(manager.adminToken));
    const firing = async () => (await alerts.listAlerts({})).alerts.find((a) => a.rule === "backup_failed" && a.subject === `server:${s.id}`);
    const alert = await waitFor("the backup_failed alert", firing, 30_000);
    expect(alert.message).toContain("DeadlineExceeded");
    rmSync(join(s.data, "blob-0"));
    for (let i = 1; i < 8; i++) rmSync(join(s.data, `blob-${i}`));
    const ok = await finished((await backups.createBackup({ server: s.id, target: `local-${uid}`, live: true })).backup!.id);
    expect(ok.state).toBe(BackupState.SUCCEEDED);
    await waitFor("the backup_failed alert to resolve", async () => !(await firing()), 30_000);
  });

  it("a target whose disk fills: the backup fails with TargetFull, nothing is left there, the server runs again", async () => {
    // A small tmpfs inside the agent's backup directory (so the agent allows it).
    const small = join(backupDir, "small");
    mkdirSync(small, { recursive: true });
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=8m", "tmpfs", small]);
    try {
      await backups.createBackupTarget({ name: `small-${uid}`, kind: { case: "directory", value: { path: small } } });
      const s = await runningServer("full");
      writeRandom(join(s.data, "blob"), 20);
      const { backup } = await backups.createBackup({ server: s.id, target: `small-${uid}` });
      const failed = await finished(backup!.id, 60_000);
      expect(failed.state).toBe(BackupState.FAILED);
      expect(failed.reason).toBe("TargetFull");
      const left = readdirSync(small, { recursive: true }).map(String).filter((f) => f.endsWith(".gz") || f.includes(".partial-"));
      expect(left).toEqual([]);
      await waitForPhase(manager, s.id, Phase.RUNNING, 60_000);
    } finally {
      execFileSync("umount", [small]);
    }
  });

  describe("in S3-compatible storage (s3rver on loopback)", () => {
    let s3: TestS3Server;
    const SECRET = `s3-secret-${uid}`;
    const client = () => new S3Target({ endpoint: s3.endpoint, bucket: "berth", prefix: "backups/", region: "us-east-1", pathStyle: true, accessKeyId: S3RVER_KEY.accessKeyId, secretAccessKey: SECRET });

    beforeAll(async () => {
      s3 = await TestS3Server.start(["berth"]);
    });
    afterAll(async () => {
      await s3?.close();
    });

    async function objectBytes(key: string): Promise<Buffer | undefined> {
      const t = client();
      try {
        const chunks: Buffer[] = [];
        for await (const c of await t.download(key)) chunks.push(c as Buffer);
        return Buffer.concat(chunks);
      } catch (err) {
        if ((err as { reason?: string }).reason === "ArchiveMissing") return undefined;
        throw err;
      } finally {
        t.destroy();
      }
    }

    it("backs up into a bucket, restores from it, deletes it; the secret key is never returned or logged", async () => {
      // s3rver checks the access key id only, so any secret passes; it must still never leave the manager but to the agent.
      const { target } = await backups.createBackupTarget({
        name: `s3-${uid}`,
        kind: { case: "s3", value: { endpoint: s3.endpoint, bucket: "berth", prefix: "backups", region: "us-east-1", pathStyle: true, accessKeyId: S3RVER_KEY.accessKeyId, secretAccessKey: SECRET } },
      });
      expect(target?.kind.case === "s3" && target.kind.value.secretAccessKey).toBe("********");
      expect((await backups.listBackupTargets({})).targets.map((t) => (t.kind.case === "s3" ? t.kind.value.secretAccessKey : ""))).not.toContain(SECRET);
      const bad = await codeOf(backups.createBackupTarget({ name: `s3-bad-${uid}`, kind: { case: "s3", value: { endpoint: "ftp://x", bucket: "berth", accessKeyId: "a", secretAccessKey: "b" } } }));
      expect(bad.code).toBe(Code.InvalidArgument);

      const s = await runningServer("s3");
      writeFileSync(join(s.data, "save.dat"), "before");
      writeRandom(join(s.data, "region.mca"), 12);
      const before = tree(s.data);
      const { backup } = await backups.createBackup({ server: s.id, target: `s3-${uid}` });
      const done = await finished(backup!.id);
      expect(done.state, `${done.reason}: ${done.message}`).toBe(BackupState.SUCCEEDED);
      const stored = await objectBytes(done.key);
      expect(stored && createHash("sha256").update(stored).digest("hex")).toBe(done.sha256);
      await waitForPhase(manager, s.id, Phase.RUNNING, 60_000);

      writeFileSync(join(s.data, "save.dat"), "after");
      await backups.restoreBackup({ server: s.id, backupId: done.id });
      await waitFor("the restore from S3", async () => {
        const { events: l } = await events.listEvents({ serverId: s.id, pageSize: 50 });
        return l.find((e) => e.type === "backup.restored" || e.type === "backup.restore_failed");
      }, 60_000);
      await waitForPhase(manager, s.id, Phase.RUNNING, 60_000);
      expect(tree(s.data)).toEqual(before);

      await backups.deleteBackup({ id: done.id });
      expect(await objectBytes(done.key)).toBeUndefined();
      const logs = readFileSync(join(dir, "manager.log"), "utf8") + readFileSync(join(dir, "agent.log"), "utf8");
      expect(logs).not.toContain(SECRET);
    });

    it("the S3 server dies mid-upload: the backup fails, no object is left, the server runs again", async () => {
      const s = await runningServer("s3-dies");
      for (let i = 0; i < 4; i++) writeRandom(join(s.data, `blob-${i}`), 40);
      const { backup } = await backups.createBackup({ server: s.id, target: `s3-${uid}`, live: true });
      await waitFor("the upload to make progress", async () => {
        const { backup: b } = await backups.getBackup({ id: backup!.id });
        return b && b.bytesDone > 0n;
      }, 60_000, 20);
      await s3.stop();
      const failed = await finished(backup!.id, 90_000);
      await s3.restart();
      expect(failed.state).toBe(BackupState.FAILED);
      expect(failed.reason).toBe("TargetUnreachable");
      expect(await objectBytes(failed.key)).toBeUndefined();
      expect((await manager.servers.getServer({ id: s.id })).server?.status?.phase).toBe(Phase.RUNNING);
    });
  });

  it("a backup of a server whose host is offline is refused, not queued", async () => {
    const s = await runningServer("offline");
    await agent.stop();
    await waitForPhase(manager, s.id, Phase.UNKNOWN, 30_000);
    const refused = await codeOf(backups.createBackup({ server: s.id, target: `local-${uid}` }));
    expect(refused.code).toBe(Code.FailedPrecondition);
    expect(refused.message).toContain("offline");
    expect((await backups.listBackups({ server: s.id })).backups).toHaveLength(0);
    const restarted = runAgent({ dir, stateDir: agent.stateDir, dataRoot: agent.dataRoot, extraArgs: ["--backup-dir", backupDir] });
    agent = { ...restarted, dataRoot: agent.dataRoot, stateDir: agent.stateDir };
    await waitForPhase(manager, s.id, Phase.RUNNING, 60_000);
  });
});
