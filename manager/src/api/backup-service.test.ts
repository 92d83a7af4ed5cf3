/**
 * BackupService against an in-process manager and a scripted agent: the
 * window between a backup's result (recorded: GetBackup says done) and the
 * reconcile that ends the server's operation.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { CommandKind } from "@berth/proto/berth/v1/agent_pb.js";
import { BackupService, BackupState } from "@berth/proto/berth/v1/backup_pb.js";
import { DesiredState, ServerService } from "@berth/proto/berth/v1/server_pb.js";
import { ScriptedAgent, startTestManager, type TestManager } from "../../testing/fuzz-kit.js";

describe("BackupService", () => {
  let tm: TestManager;
  let agent: ScriptedAgent;

  beforeAll(async () => {
    tm = await startTestManager();
    agent = await ScriptedAgent.enroll(tm);
    // Commands stay open until the test finishes them.
    agent.answerCommands = false;
    agent.connect(false);
    agent.send({ case: "hello", value: { hostname: "backups", agentVersion: "test", dockerVersion: "0", dataRoot: "/nonexistent", dockerReachable: true, backupDirs: ["/var/backups/berth-test"] } });
    agent.send({ case: "inventory", value: { dockerReachable: true } });
    await vi.waitFor(() => expect(tm.manager.hub.isConnected(agent.hostId)).toBe(true), { timeout: 5_000 });
  });

  afterAll(async () => {
    await agent?.close();
    await tm?.close();
  });

  it("a backup asked for right after the last one's result is not refused as under way: the reconcile that ends it runs first", async () => {
    const servers = createClient(ServerService, tm.transport());
    const backups = createClient(BackupService, tm.transport());
    const { server } = await servers.createServer({ spec: { name: "settles", image: "busybox:1", hostId: agent.hostId, desiredState: DesiredState.STOPPED } });
    await backups.createBackupTarget({ name: "dir", kind: { case: "directory", value: { path: "/var/backups/berth-test" } } });
    const store = tm.manager.store;
    // Whatever the reconciler sent for the new server first, finished, so the backup's command can go out.
    const settleOpen = async (kind?: CommandKind) => {
      const open = await vi.waitFor(async () => {
        const c = await store.openCommandForServer(server!.id);
        if (!c || (kind !== undefined && c.command.kind !== kind)) throw new Error(`no open ${kind === undefined ? "" : CommandKind[kind]} command yet`);
        return c;
      }, { timeout: 5_000 });
      return open;
    };

    const first = await settleOpen();
    await store.commit([{ op: "command.finish", id: first.id, state: "succeeded", at: Date.now(), reason: "", message: "" }]);
    const { backup } = await backups.createBackup({ server: server!.id, target: "dir", live: true });
    const cmd = await settleOpen(CommandKind.BACKUP_DATA);
    expect(cmd.command.backup?.backupId).toBe(backup!.id);
    // The result as agent-service records it (command and backup in one batch), without the
    // reconcile it queues: that is the window a script that waits for GetBackup lands in.
    const at = Date.now();
    await store.commit([
      { op: "command.finish", id: cmd.id, state: "succeeded", at, reason: "", message: "" },
      { op: "backup.update", id: backup!.id, set: { state: "succeeded", reason: "", message: "", finishedAt: at }, ifState: ["pending", "running"] },
    ]);
    expect((await backups.getBackup({ id: backup!.id })).backup!.state).toBe(BackupState.SUCCEEDED);
    expect((await store.getServer(server!.id))!.lifecycle.dataOp?.backupId).toBe(backup!.id);

    const next = await backups.createBackup({ server: server!.id, target: "dir", live: true }).catch((e: unknown) => ConnectError.from(e));
    expect(next).not.toBeInstanceOf(ConnectError);
    const again = (next as { backup?: { id: string } }).backup!;
    expect(again.id).not.toBe(backup!.id);
    expect((await store.getServer(server!.id))!.lifecycle.dataOp?.backupId).toBe(again.id);

    // An operation truly under way is still refused, naming it.
    const refused = await backups.createBackup({ server: server!.id, target: "dir", live: true }).catch((e: unknown) => ConnectError.from(e));
    expect(refused).toBeInstanceOf(ConnectError);
    expect((refused as ConnectError).code).toBe(Code.FailedPrecondition);
    expect((refused as ConnectError).rawMessage).toContain(`has a backup under way (backup ${again.id})`);
  });
});
