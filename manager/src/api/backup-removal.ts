/**
 * Where a host reaches a backup target, and the removal of a backup (its
 * archive through an agent that can reach it, then its row): shared by
 * BackupService.DeleteBackup and the retention of backups (backups/retention.ts).
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { posix } from "node:path";
import { CommandKind, CommandSchema, type BackupJobSchema, type CommandResult } from "@berth/proto/berth/v1/agent_pb.js";
import type { HostPresence } from "../cluster/presence.js";
import type { BackupLocationRecord, BackupRecord, BackupTargetRecord } from "../domain/records.js";
import { NotFoundError, PreconditionError, UnavailableError } from "../errors.js";
import { newId } from "../ids.js";
import type { Ledger } from "../ledger/ledger.js";
import type { AgentHub } from "../link/agent-hub.js";
import { locationOf } from "../reconcile/reconciler.js";
import type { Store, WriteOp } from "../store/store.js";

/** How long a removal waits for the agent. */
const REMOVE_ANSWER_MS = 120_000;

/**
 * Has the agent of `hostId` remove the archive `job` names (REMOVE_BACKUP,
 * idempotent; in S3 also a multipart upload of it left behind) and answers
 * its result; rejects when the host cannot be reached or does not answer in time.
 */
export function requestArchiveRemoval(hub: Pick<AgentHub, "request">, hostId: string, job: MessageInitShape<typeof BackupJobSchema>, serverId: string, now: number): Promise<CommandResult> {
  const command = create(CommandSchema, { id: newId("cmd"), kind: CommandKind.REMOVE_BACKUP, serverId, backup: job, deadline: timestampFromMs(now + REMOVE_ANSWER_MS) });
  return hub.request(hostId, command, REMOVE_ANSWER_MS);
}

/** Whether `path` is one of `roots` or inside one (both absolute, normalised). */
export function underBackupRoot(path: string, roots: readonly string[]): boolean {
  return roots.some((r) => {
    const root = posix.normalize(r).replace(/\/+$/, "") || "/";
    return path === root || path.startsWith(root === "/" ? "/" : `${root}/`);
  });
}

/**
 * Where host `hostId` reads and writes archives of `t`: S3-compatible
 * storage from anywhere; a directory only when the host's agent allows it
 * (--backup-dir), else FailedPrecondition naming the flag.
 */
export async function backupLocationOn(store: Pick<Store, "getHost">, t: BackupTargetRecord, hostId: string): Promise<BackupLocationRecord> {
  if (t.config.kind === "s3") {
    const { kind: _s3, ...c } = t.config;
    return { s3: { targetId: t.id, ...c, sealedSecret: t.sealedSecret } };
  }
  const roots = (await store.getHost(hostId))?.facts.backupDirs ?? [];
  if (!underBackupRoot(t.config.path, roots)) {
    throw new PreconditionError(
      roots.length === 0
        ? `the agent of host ${hostId} writes backups nowhere (no --backup-dir, or an agent older than backups); start it with --backup-dir ${t.config.path}`
        : `the agent of host ${hostId} writes backups only under ${roots.join(", ")} (its --backup-dir), and target "${t.name}" is ${t.config.path}; add --backup-dir ${t.config.path} to that agent or use another target`,
    );
  }
  return { directory: t.config.path };
}

export interface BackupRemovalDeps {
  store: Store;
  hub: AgentHub;
  presence: HostPresence;
  ledger: Ledger;
  now: () => number;
}

export class BackupRemoval {
  constructor(private readonly deps: BackupRemovalDeps) {}

  /**
   * Removes backup `b`: refused (FailedPrecondition) when locked or not
   * finished; a failed one has nothing in its target and just goes; a
   * succeeded one is marked deleting, its archive removed by an agent that
   * can reach it (the host that made it; for a shared directory or S3 any
   * connected one), then it goes, with `backup.deleted` by `actor`. When no
   * agent can do it now, or it fails, the backup is kept as it was.
   */
  async remove(b: BackupRecord, actor: string, why = ""): Promise<void> {
    const { store, hub, presence, ledger, now } = this.deps;
    if (b.locked) throw new PreconditionError(`backup ${b.id} is locked; unlock it first (BackupService.LockBackup with locked=false)`);
    if (b.state === "pending" || b.state === "running") {
      throw new PreconditionError(`backup ${b.id} is ${b.state}; wait for it to finish (it fails at its deadline at the latest), then delete it`);
    }
    const deleted = (message: string): WriteOp[] => [
      { op: "backup.delete", id: b.id },
      ledger.op({ type: "backup.deleted", project: b.project, serverId: b.serverId, hostId: b.hostId, actor, correlationId: b.id, message: why ? `${message} (${why})` : message }),
    ];
    if (b.state === "failed") {
      // Nothing of a failed backup is left in its target (the agent removes what it wrote).
      await store.commit(deleted(`backup ${b.id} (failed) deleted`));
      return;
    }
    const target = await store.getBackupTarget(b.targetId);
    if (!target) throw new NotFoundError("backup target", b.targetId, "list targets with BackupService.ListBackupTargets");
    // The host that made it holds a directory's archive; on a shared directory, or in S3, any
    // connected host that can reach the target will do.
    const anywhere = target.config.kind === "s3" || target.config.shared;
    const candidates = [b.hostId, ...(anywhere ? presence.connectedHostIds().filter((h) => h !== b.hostId) : [])];
    let hostId: string | undefined;
    let location: BackupLocationRecord | undefined;
    for (const h of candidates) {
      if (!hub.isConnected(h)) continue;
      location = await backupLocationOn(store, target, h).catch(() => undefined);
      if (location) {
        hostId = h;
        break;
      }
    }
    if (!hostId || !location) {
      throw new PreconditionError(
        presence.isConnected(b.hostId) && !hub.isConnected(b.hostId)
          ? `host ${b.hostId}, which holds backup ${b.id}, is connected to another manager; send DeleteBackup to that manager`
          : `host ${b.hostId}, which holds backup ${b.id}, is offline; delete it once the host is back`,
      );
    }
    if (b.state !== "deleting") await store.commit([{ op: "backup.update", id: b.id, set: { state: "deleting" }, ifState: ["succeeded"] }]);
    let outcome: { success: boolean; reason: string; message: string };
    try {
      outcome = await requestArchiveRemoval(hub, hostId, { backupId: b.id, location: locationOf(location), key: b.key }, b.serverId, now());
    } catch (err) {
      await store.commit([{ op: "backup.update", id: b.id, set: { state: "succeeded" }, ifState: ["deleting"] }]);
      throw new UnavailableError(`the agent of host ${hostId} did not remove backup ${b.id}: ${err instanceof Error ? err.message : String(err)}; it is kept, try again`);
    }
    if (!outcome.success) {
      await store.commit([{ op: "backup.update", id: b.id, set: { state: "succeeded" }, ifState: ["deleting"] }]);
      throw new PreconditionError(`the agent of host ${hostId} could not remove backup ${b.id} (${outcome.reason}): ${outcome.message}; it is kept`);
    }
    await store.commit(deleted(`backup ${b.id} deleted from target "${target.name}" (${b.key}, through host ${hostId})`));
  }
}
