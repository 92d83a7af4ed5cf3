import type { BackupRecord, ServerRecord } from "../domain/records.js";
import { PreconditionError } from "../errors.js";
import type { Reconciler } from "../reconcile/reconciler.js";
import type { ServerReads } from "../store/store.js";

/**
 * Where a new backup's archive goes in its target. The agent compresses by
 * the suffix (".tar.zst": zstd, anything else: gzip), so a backup made
 * before zstd keeps its ".tar.gz" key and stays readable.
 */
export function backupKey(serverId: string, backupId: string): string {
  return `${serverId}/${backupId}.tar.zst`;
}

/** The row of a backup of `s` just asked for (Pending), archived at backupKey (zstd). */
export function pendingBackup(s: Pick<ServerRecord, "id" | "name" | "project" | "hostId">, targetId: string, backupId: string, at: number, actor: string, o: { live: boolean; message: string }): BackupRecord {
  return {
    id: backupId,
    serverId: s.id,
    serverName: s.name,
    project: s.project,
    hostId: s.hostId,
    targetId,
    key: backupKey(s.id, backupId),
    state: "pending",
    reason: "",
    message: o.message,
    live: o.live,
    compression: "zstd",
    archiveBytes: 0,
    rawBytes: 0,
    files: 0,
    sha256: "",
    bytesDone: 0,
    bytesTotal: 0,
    locked: false,
    createdBy: actor,
    createdAt: at,
    startedAt: null,
    finishedAt: null,
  };
}

/**
 * `s` once the reconciler has folded in a data command that may just have
 * finished. A command's result records the backup's outcome (GetBackup says
 * done) in one batch and the reconcile it queues ends the server's dataOp in
 * the next; a new operation asked for in between would be refused as "under
 * way" while the backup it names reads as finished. With a dataOp recorded,
 * that reconcile runs now and the server is read again; without one, `s` is
 * returned as it is.
 */
export async function withDataOpSettled(
  s: ServerRecord,
  deps: { reconciler: Pick<Reconciler, "reconcileNow">; store: Pick<ServerReads, "getServer"> },
  what: string,
): Promise<ServerRecord> {
  if (!s.lifecycle.dataOp) return s;
  await deps.reconciler.reconcileNow(s.id, `${what} asked for while a ${s.lifecycle.dataOp.kind} was recorded`);
  return (await deps.store.getServer(s.id)) ?? s;
}

/**
 * Refuses a new data operation on `s` (a backup, restore, transfer or a
 * clone's fresh backup) now: purging, deleted, another one under way, or
 * its host away (refused rather than queued), naming what to do instead.
 */
export function requireDataOpAllowed(s: ServerRecord, what: string, isConnected: (hostId: string) => boolean): void {
  if (s.lifecycle.purge) throw new PreconditionError(`server "${s.name}" is being purged; ${what} is not possible`);
  if (s.deletedAt !== null) throw new PreconditionError(`server "${s.name}" is deleted; restore it first with ServerService.RestoreServer`);
  const op = s.lifecycle.dataOp;
  if (op) throw new PreconditionError(`server "${s.name}" has a ${op.kind} under way (backup ${op.backupId}); wait for it to finish (GetBackup, or the server's status.operation)`);
  if (!isConnected(s.hostId)) {
    throw new PreconditionError(`the host of server "${s.name}" (${s.hostId}) is offline; a ${what} needs its agent, so it is refused rather than queued: try again once the host is back (HostService.GetHost)`);
  }
}
