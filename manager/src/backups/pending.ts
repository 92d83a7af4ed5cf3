import type { BackupRecord, ServerRecord } from "../domain/records.js";

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
