import type { BackupRecord, ServerRecord } from "../domain/records.js";

/** The row of a backup of `s` just asked for (Pending), archived as `<server id>/<backup id>.tar.gz`. */
export function pendingBackup(s: Pick<ServerRecord, "id" | "name" | "project" | "hostId">, targetId: string, backupId: string, at: number, actor: string, o: { live: boolean; message: string }): BackupRecord {
  return {
    id: backupId,
    serverId: s.id,
    serverName: s.name,
    project: s.project,
    hostId: s.hostId,
    targetId,
    key: `${s.id}/${backupId}.tar.gz`,
    state: "pending",
    reason: "",
    message: o.message,
    live: o.live,
    compression: "gzip",
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
