/**
 * BackupHealth on a real store: what it reads at start, and how the ledger's
 * backup events keep it current (the backup_failed alert reads it).
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { pino } from "pino";
import type { BackupRecord } from "../domain/records.js";
import { testStore } from "../../testing/store.js";
import type { Store } from "../store/store.js";
import { BackupHealth } from "./health.js";

const T0 = 1_700_000_000_000;
let store: Store;
beforeEach(async () => {
  store = await testStore();
});
afterEach(() => store.close());

function backup(id: string, serverId: string, createdAt: number, state: BackupRecord["state"], reason = ""): BackupRecord {
  return {
    id, serverId, serverName: `name-${serverId}`, project: "default", hostId: "host_a", targetId: "bkt_x", key: `${serverId}/${id}.tar.gz`,
    state, reason, message: reason ? "it went wrong" : "", live: false, compression: "gzip", archiveBytes: 0, rawBytes: 0, files: 0, sha256: "",
    bytesDone: 0, bytesTotal: 0, locked: false, createdBy: "token:t", createdAt, startedAt: null, finishedAt: null,
  };
}

const event = (type: string, serverId: string) => ({ op: "event.append" as const, event: { type, serverId, message: "" }, at: T0 });

describe("BackupHealth", () => {
  it("at start: a server whose newest finished backup failed, not one whose failure was followed by a success", async () => {
    await store.commit([
      { op: "backup.insert", backup: backup("bk_a1", "srv_a", T0, "failed", "TargetFull") },
      { op: "backup.insert", backup: backup("bk_b1", "srv_b", T0, "failed", "AgentRestarted") },
      { op: "backup.insert", backup: backup("bk_b2", "srv_b", T0 + 10, "succeeded") },
      // Still running: not finished, does not hide the failure before it.
      { op: "backup.insert", backup: backup("bk_a2", "srv_a", T0 + 20, "running") },
    ]);
    const health = new BackupHealth(store, pino({ level: "silent" }));
    await health.start();
    expect(health.failures().map((f) => `${f.serverId} ${f.backupId} ${f.reason}`)).toEqual(["srv_a bk_a1 TargetFull"]);
    health.stop();
  });

  it("follows the ledger: a failure shows, a newer success clears it, deleting the failed one clears it", async () => {
    const health = new BackupHealth(store, pino({ level: "silent" }));
    await health.start();
    expect(health.failures()).toEqual([]);
    await store.commit([{ op: "backup.insert", backup: backup("bk_1", "srv_a", T0, "failed", "DeadlineExceeded") }, event("backup.failed", "srv_a")]);
    await vi.waitFor(() => expect(health.failures().map((f) => f.backupId)).toEqual(["bk_1"]));
    await store.commit([{ op: "backup.insert", backup: backup("bk_2", "srv_a", T0 + 5, "succeeded") }, event("backup.succeeded", "srv_a")]);
    await vi.waitFor(() => expect(health.failures()).toEqual([]));
    await store.commit([{ op: "backup.insert", backup: backup("bk_3", "srv_a", T0 + 9, "failed", "TargetFull") }, event("backup.failed", "srv_a")]);
    await vi.waitFor(() => expect(health.failures().map((f) => f.backupId)).toEqual(["bk_3"]));
    await store.commit([{ op: "backup.delete", id: "bk_3" }, event("backup.deleted", "srv_a")]);
    await vi.waitFor(() => expect(health.failures()).toEqual([]));
    health.stop();
  });
});
