/**
 * BackupPolicies: what the backup_overdue alert reads. On a real store: the
 * one read at start, and how the ledger's backup and server events keep each
 * server current; with a fake store: another manager's commits (PostgreSQL's
 * change feed) and a resync.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { pino } from "pino";
import type { BackupPolicyFacts, BackupRecord } from "../domain/records.js";
import { newServer, testStore } from "../../testing/store.js";
import type { Committed, Store } from "../store/store.js";
import { BackupPolicies } from "./overdue.js";

const T0 = 1_700_000_000_000;
const silent = pino({ level: "silent" });
let store: Store;
beforeEach(async () => {
  store = await testStore();
});
afterEach(() => store.close());

function backup(id: string, serverId: string, state: BackupRecord["state"], finishedAt: number): BackupRecord {
  return {
    id, serverId, serverName: serverId, project: "default", hostId: "host_a", targetId: "bkt_x", key: `${serverId}/${id}.tar.gz`,
    state, reason: "", message: "", live: false, compression: "gzip", archiveBytes: 1, rawBytes: 1, files: 1, sha256: "",
    bytesDone: 0, bytesTotal: 0, locked: false, createdBy: "token:t", createdAt: finishedAt - 10, startedAt: finishedAt - 10, finishedAt,
  };
}

const event = (type: string, serverId: string) => ({ op: "event.append" as const, event: { type, serverId, message: "" }, at: T0 });
const withPolicy = (alertAfterHours: number) => ({ backupPolicy: { alertAfterHours } });
const seen = (p: BackupPolicies) => p.policies().map((v) => `${v.serverId} ${v.alertAfterHours}h ${v.newestSuccessAt === null ? "never" : v.newestSuccessAt - T0}`).sort();

describe("BackupPolicies", () => {
  it("at start: the live servers with an alert in their policy, each with its newest success", async () => {
    await store.commit([
      { op: "server.insert", server: newServer({ id: "srv_a", hostId: "host_a", spec: withPolicy(24), at: T0 }) },
      { op: "server.insert", server: newServer({ id: "srv_b", hostId: "host_a", spec: withPolicy(6), at: T0 }) },
      { op: "server.insert", server: newServer({ id: "srv_c", hostId: "host_a", at: T0 }) },
      { op: "backup.insert", backup: backup("bk_a1", "srv_a", "succeeded", T0 + 100) },
      { op: "backup.insert", backup: backup("bk_a2", "srv_a", "failed", T0 + 200) },
    ]);
    const p = new BackupPolicies(store, silent);
    await p.start();
    expect(seen(p)).toEqual(["srv_a 24h 100", "srv_b 6h never"]);
    p.stop();
  });

  it("follows the ledger: a success moves the newest, a cleared policy or a delete drops the server, a restore brings it back", async () => {
    await store.commit([{ op: "server.insert", server: newServer({ id: "srv_a", hostId: "host_a", spec: withPolicy(24), at: T0 }) }]);
    const p = new BackupPolicies(store, silent);
    await p.start();
    expect(seen(p)).toEqual(["srv_a 24h never"]);

    await store.commit([{ op: "backup.insert", backup: backup("bk_1", "srv_a", "succeeded", T0 + 50) }, event("backup.succeeded", "srv_a")]);
    await vi.waitFor(() => expect(seen(p)).toEqual(["srv_a 24h 50"]));

    const s = (await store.getServer("srv_a"))!;
    const update = (alertAfterHours: number, deletedAt: number | null, version: number) => ({
      op: "server.spec" as const, id: "srv_a", spec: { ...s.spec, backupPolicy: { ...s.spec.backupPolicy!, alertAfterHours } }, generation: 2, hostId: "host_a", deletedAt, updatedAt: T0, expectVersion: version,
    });
    await store.commit([update(0, null, s.version), event("server.updated", "srv_a")]);
    await vi.waitFor(() => expect(seen(p)).toEqual([]));

    await store.commit([update(12, null, s.version + 1), event("server.updated", "srv_a")]);
    await vi.waitFor(() => expect(seen(p)).toEqual(["srv_a 12h 50"]));

    await store.commit([update(12, T0 + 1, s.version + 2), event("server.deleted", "srv_a")]);
    await vi.waitFor(() => expect(seen(p)).toEqual([]));

    await store.commit([update(12, null, s.version + 3), event("server.restored", "srv_a")]);
    await vi.waitFor(() => expect(seen(p)).toEqual(["srv_a 12h 50"]));

    // Deleting the only success: never backed up again.
    await store.commit([{ op: "backup.delete", id: "bk_1" }, event("backup.deleted", "srv_a")]);
    await vi.waitFor(() => expect(seen(p)).toEqual(["srv_a 12h never"]));
    p.stop();
  });

  it("another manager's commits (heard through the change feed) update it; a resync reads everything again", async () => {
    let listener: ((c: Committed) => void) | undefined;
    const facts: BackupPolicyFacts[] = [{ serverId: "srv_a", serverName: "a", project: "p", hostId: "h", createdAt: T0, alertAfterHours: 24, newestSuccessAt: null }];
    const reads: (string | undefined)[] = [];
    const fake = {
      onCommit: (fn: (c: Committed) => void) => {
        listener = fn;
        return () => (listener = undefined);
      },
      backupPolicyFacts: async (serverId?: string) => {
        reads.push(serverId);
        return facts.filter((f) => serverId === undefined || f.serverId === serverId).map((f) => ({ ...f }));
      },
    };
    const p = new BackupPolicies(fake, silent);
    await p.start();
    expect(reads).toEqual([undefined]);

    facts[0]!.newestSuccessAt = T0 + 7;
    const remote = (type: string, serverId: string): Committed => ({
      events: [{ id: 1, type, serverId, hostId: "", project: "", reason: "", message: "", actor: "agent", correlationId: "", payload: {}, at: T0 } as never],
      serverIds: new Set(),
      hostIds: new Set(),
      remote: true,
    });
    listener!(remote("backup.succeeded", "srv_a"));
    await vi.waitFor(() => expect(p.policies()[0]?.newestSuccessAt).toBe(T0 + 7));
    // Events about other things read nothing.
    listener!(remote("phase.changed", "srv_a"));
    expect(reads).toEqual([undefined, "srv_a"]);

    facts.push({ serverId: "srv_b", serverName: "b", project: "p", hostId: "h", createdAt: T0, alertAfterHours: 1, newestSuccessAt: null });
    listener!({ events: [], serverIds: new Set(), hostIds: new Set(), remote: true, resync: true });
    await vi.waitFor(() => expect(p.policies().map((v) => v.serverId).sort()).toEqual(["srv_a", "srv_b"]));
    p.stop();
    expect(listener).toBeUndefined();
  });
});
