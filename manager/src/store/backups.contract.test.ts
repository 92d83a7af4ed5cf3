/**
 * The store contract's backup targets and server backups (store.ts
 * backupTarget.* / backup.* operations, BackupReads; migration 12), on the
 * engine testStore() opens (BERTH_TEST_STORE=sqlite|postgres): every field
 * read back as written, names unique, listing filtered and paged newest
 * first, updates with their state precondition, locked backups kept, and
 * batches atomic. Backups are not server writes: no server version moves.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import type { BackupRecord, BackupTargetRecord } from "../domain/records.js";
import { AlreadyExistsError, ConflictError, NotFoundError } from "../errors.js";
import { expectTyped, newServer, rejection, testStore } from "../../testing/store.js";
import type { Store, WriteOp } from "./store.js";

const T0 = 1_700_000_000_000;
let store: Store;
beforeEach(async () => {
  store = await testStore();
});
afterEach(() => store.close());

const directory = (id: string, name: string, o: Partial<BackupTargetRecord> = {}): BackupTargetRecord => ({
  id,
  name,
  config: { kind: "directory", path: `/srv/backups/${name}`, shared: true },
  sealedSecret: "",
  createdAt: T0,
  createdBy: "token:tok_admin",
  ...o,
});

const s3: BackupTargetRecord = {
  id: "btg_s3",
  name: "offsite",
  config: { kind: "s3", endpoint: "https://s3.example.net", bucket: "berth", prefix: "fleet/", region: "eu-west-1", pathStyle: true, accessKeyId: "AKIAEXAMPLE" },
  sealedSecret: "sealed:v1:abc",
  createdAt: T0 + 7,
  createdBy: "token:tok_ops",
};

function backup(id: string, o: Partial<BackupRecord> = {}): BackupRecord {
  const serverId = o.serverId ?? "srv_a";
  return {
    id,
    serverId,
    serverName: "mc",
    project: "default",
    hostId: "host_a",
    targetId: "btg_dir",
    key: `${serverId}/${id}.tar.gz`,
    state: "pending",
    reason: "",
    message: "",
    live: false,
    compression: "gzip",
    archiveBytes: 0,
    rawBytes: 0,
    files: 0,
    sha256: "",
    bytesDone: 0,
    bytesTotal: 0,
    locked: false,
    createdBy: "token:tok_admin",
    createdAt: T0,
    startedAt: null,
    finishedAt: null,
    ...o,
  };
}

/** Every field away from its default, so a column dropped or swapped on the way shows. */
const finished = backup("bkp_done", {
  serverId: "srv_b",
  serverName: "survival",
  project: "team-a",
  hostId: "host_b",
  targetId: "btg_s3",
  key: "srv_b/bkp_done.tar.gz",
  state: "succeeded",
  reason: "Completed",
  message: "archived 3 files",
  live: true,
  archiveBytes: 9_876_543_210,
  rawBytes: 12_345_678_901,
  files: 3,
  sha256: "a".repeat(64),
  bytesDone: 12_345_678_901,
  bytesTotal: 12_345_678_902,
  locked: true,
  createdBy: "token:tok_ops",
  createdAt: T0 + 1,
  startedAt: T0 + 2,
  finishedAt: T0 + 3,
});

const insertBackup = (b: BackupRecord): WriteOp => ({ op: "backup.insert", backup: b });

describe("backup targets", () => {
  it("reads back both kinds of config, the sealed secret and who made it; by id, by name, and listed by name", async () => {
    const dir = directory("btg_dir", "nas", { config: { kind: "directory", path: "/mnt/nas/berth", shared: false } });
    const r = await store.commit([{ op: "backupTarget.insert", target: s3 }, { op: "backupTarget.insert", target: dir }]);
    expect(r.versions.size).toBe(0);
    expect(await store.getBackupTarget("btg_dir")).toEqual(dir);
    expect(await store.getBackupTarget("btg_s3")).toEqual(s3);
    expect(await store.findBackupTargetByName("offsite")).toEqual(s3);
    expect(await store.findBackupTargetByName("nope")).toBeUndefined();
    expect(await store.getBackupTarget("btg_nope")).toBeUndefined();
    // "nas" < "offsite", though btg_dir was inserted second.
    expect((await store.listBackupTargets()).map((t) => t.name)).toEqual(["nas", "offsite"]);
  });

  it("refuses a second target of the same name with AlreadyExistsError and keeps the first", async () => {
    await store.commit([{ op: "backupTarget.insert", target: directory("btg_1", "nas") }]);
    const err = await rejection(store.commit([{ op: "backupTarget.insert", target: directory("btg_2", "nas", { config: { kind: "directory", path: "/other", shared: false } }) }]));
    expectTyped(err, AlreadyExistsError, Code.AlreadyExists);
    expect((err as Error).message).toMatch(/backup target named "nas" already exists/);
    expect(await store.getBackupTarget("btg_2")).toBeUndefined();
    expect((await store.findBackupTargetByName("nas"))?.id).toBe("btg_1");
  });

  it("deletes a target; deleting a missing one is NotFoundError", async () => {
    await store.commit([{ op: "backupTarget.insert", target: directory("btg_1", "nas") }]);
    await store.commit([{ op: "backupTarget.delete", id: "btg_1" }]);
    expect(await store.getBackupTarget("btg_1")).toBeUndefined();
    expect(await store.listBackupTargets()).toEqual([]);
    expectTyped(await rejection(store.commit([{ op: "backupTarget.delete", id: "btg_1" }])), NotFoundError, Code.NotFound);
  });
});

describe("backups", () => {
  it("reads back every field as written (flags, large sizes, times and their absence)", async () => {
    const pending = backup("bkp_new");
    await store.commit([insertBackup(finished), insertBackup(pending)]);
    expect(await store.getBackup("bkp_done")).toEqual(finished);
    expect(await store.getBackup("bkp_new")).toEqual(pending);
    expect(await store.getBackup("bkp_nope")).toBeUndefined();
  });

  it("refuses a second backup with the same id with AlreadyExistsError", async () => {
    await store.commit([insertBackup(backup("bkp_1"))]);
    expectTyped(await rejection(store.commit([insertBackup(backup("bkp_1", { serverId: "srv_other" }))])), AlreadyExistsError, Code.AlreadyExists);
    expect((await store.getBackup("bkp_1"))?.serverId).toBe("srv_a");
  });

  it("lists newest first, equal creation times by id descending; filters by server, project and states; pages before a (createdAt, id); limits", async () => {
    await store.commit([
      // Equal createdAt inserted in both orders (bkp_2 before bkp_3, bkp_6 after bkp_5): the id decides, not the insertion.
      insertBackup(backup("bkp_1", { createdAt: T0 + 1, state: "succeeded" })),
      insertBackup(backup("bkp_2", { createdAt: T0 + 2, state: "running" })),
      insertBackup(backup("bkp_3", { createdAt: T0 + 2, state: "failed" })),
      insertBackup(backup("bkp_4", { createdAt: T0 + 3, state: "pending", serverId: "srv_b", project: "team-a" })),
      insertBackup(backup("bkp_6", { createdAt: T0 + 4, state: "succeeded", serverId: "srv_c", project: "team-a" })),
      insertBackup(backup("bkp_5", { createdAt: T0 + 4, state: "deleting", serverId: "srv_c", project: "team-a" })),
    ]);
    const ids = (l: BackupRecord[]) => l.map((b) => b.id);
    expect(ids(await store.listBackups())).toEqual(["bkp_6", "bkp_5", "bkp_4", "bkp_3", "bkp_2", "bkp_1"]);
    expect(ids(await store.listBackups({ serverId: "srv_a" }))).toEqual(["bkp_3", "bkp_2", "bkp_1"]);
    expect(ids(await store.listBackups({ project: "team-a" }))).toEqual(["bkp_6", "bkp_5", "bkp_4"]);
    expect(ids(await store.listBackups({ project: "team-a", serverId: "srv_b" }))).toEqual(["bkp_4"]);
    expect(ids(await store.listBackups({ states: ["pending", "running", "deleting"] }))).toEqual(["bkp_5", "bkp_4", "bkp_2"]);
    expect(ids(await store.listBackups({ serverId: "srv_a", states: ["succeeded", "failed"] }))).toEqual(["bkp_3", "bkp_1"]);
    expect(ids(await store.listBackups({ limit: 2 }))).toEqual(["bkp_6", "bkp_5"]);
    expect(ids(await store.listBackups({ serverId: "srv_c" }))).toEqual(["bkp_6", "bkp_5"]);
    // The next page starts after the last one seen, even between two of equal createdAt.
    expect(ids(await store.listBackups({ before: { createdAt: T0 + 2, id: "bkp_3" }, limit: 10 }))).toEqual(["bkp_2", "bkp_1"]);
    expect(ids(await store.listBackups({ serverId: "srv_a", before: { createdAt: T0 + 2, id: "bkp_2" } }))).toEqual(["bkp_1"]);
    expect(await store.listBackups({ serverId: "srv_nope" })).toEqual([]);
  });

  it("an update changes only the fields it sets", async () => {
    await store.commit([insertBackup(backup("bkp_1", { message: "queued", bytesTotal: 500 }))]);
    await store.commit([{ op: "backup.update", id: "bkp_1", set: { state: "running", startedAt: T0 + 10, bytesDone: 100, live: true } }]);
    expect(await store.getBackup("bkp_1")).toEqual(backup("bkp_1", { message: "queued", bytesTotal: 500, state: "running", startedAt: T0 + 10, bytesDone: 100, live: true }));
    // Back to null and false: absent fields are left alone, present ones are written whatever their value.
    await store.commit([{ op: "backup.update", id: "bkp_1", set: { startedAt: null, live: false, message: "" } }]);
    expect(await store.getBackup("bkp_1")).toEqual(backup("bkp_1", { bytesTotal: 500, state: "running", bytesDone: 100 }));
  });

  it("ifState is a precondition: applied in one of the states, else ConflictError naming the backup, its state and the expected ones, and nothing changes", async () => {
    await store.commit([insertBackup(backup("bkp_1", { state: "running" }))]);
    await store.commit([{ op: "backup.update", id: "bkp_1", set: { state: "failed", reason: "DeadlineExceeded", finishedAt: T0 + 60 }, ifState: ["pending", "running"] }]);
    const failed = await store.getBackup("bkp_1");
    expect(failed).toMatchObject({ state: "failed", reason: "DeadlineExceeded", finishedAt: T0 + 60 });
    // The agent's result arrives after the deadline failed it: refused.
    const err = await rejection(store.commit([{ op: "backup.update", id: "bkp_1", set: { state: "succeeded", sha256: "b".repeat(64), finishedAt: T0 + 61 }, ifState: ["pending", "running"] }]));
    expectTyped(err, ConflictError, Code.Aborted);
    expect((err as Error).message).toMatch(/backup bkp_1 is failed, not pending or running/);
    expect(await store.getBackup("bkp_1")).toEqual(failed);
  });

  it("a locked backup cannot be deleted until it is unlocked", async () => {
    await store.commit([insertBackup(backup("bkp_1", { state: "succeeded", locked: true }))]);
    const err = await rejection(store.commit([{ op: "backup.delete", id: "bkp_1" }]));
    expectTyped(err, ConflictError, Code.Aborted);
    expect((err as Error).message).toMatch(/backup bkp_1 is locked/);
    expect((await store.getBackup("bkp_1"))?.locked).toBe(true);
    await store.commit([{ op: "backup.update", id: "bkp_1", set: { locked: false } }]);
    await store.commit([{ op: "backup.delete", id: "bkp_1" }]);
    expect(await store.getBackup("bkp_1")).toBeUndefined();
  });

  it("updating or deleting a missing backup is NotFoundError, with or without ifState", async () => {
    expectTyped(await rejection(store.commit([{ op: "backup.update", id: "bkp_nope", set: { message: "x" } }])), NotFoundError, Code.NotFound);
    expectTyped(await rejection(store.commit([{ op: "backup.update", id: "bkp_nope", set: {}, ifState: ["running"] }])), NotFoundError, Code.NotFound);
    expectTyped(await rejection(store.commit([{ op: "backup.delete", id: "bkp_nope" }])), NotFoundError, Code.NotFound);
  });

  it("counts the backups on a target, whatever their state", async () => {
    await store.commit([
      insertBackup(backup("bkp_1", { targetId: "btg_a", state: "succeeded" })),
      insertBackup(backup("bkp_2", { targetId: "btg_a", state: "failed" })),
      insertBackup(backup("bkp_3", { targetId: "btg_a", state: "deleting" })),
      insertBackup(backup("bkp_4", { targetId: "btg_b" })),
    ]);
    expect(await store.countBackupsOnTarget("btg_a")).toBe(3);
    expect(await store.countBackupsOnTarget("btg_b")).toBe(1);
    expect(await store.countBackupsOnTarget("btg_none")).toBe(0);
    await store.commit([{ op: "backup.delete", id: "bkp_2" }]);
    expect(await store.countBackupsOnTarget("btg_a")).toBe(2);
  });

  it("a batch whose later operation fails writes none of its backup operations", async () => {
    await store.commit([{ op: "backupTarget.insert", target: directory("btg_dir", "nas") }, insertBackup(backup("bkp_1", { locked: true }))]);
    const before = await store.lastEventId();
    const err = await rejection(
      store.commit([
        { op: "backupTarget.insert", target: s3 },
        insertBackup(backup("bkp_2")),
        { op: "backup.update", id: "bkp_1", set: { locked: false, message: "unlocked" } },
        { op: "backupTarget.delete", id: "btg_dir" },
        { op: "event.append", at: T0, event: { type: "backup.deleted", actor: "test" } },
        { op: "backup.delete", id: "bkp_missing" },
      ]),
    );
    expectTyped(err, NotFoundError, Code.NotFound);
    expect(await store.getBackupTarget("btg_s3")).toBeUndefined();
    expect(await store.getBackupTarget("btg_dir")).toBeDefined();
    expect(await store.getBackup("bkp_2")).toBeUndefined();
    expect(await store.getBackup("bkp_1")).toMatchObject({ locked: true, message: "" });
    expect(await store.lastEventId()).toBe(before);
  });

  it("is not a server write: the server's version stays and the commit reports no server", async () => {
    await store.commit([{ op: "server.insert", server: newServer({ id: "srv_a", hostId: "host_a" }) }]);
    const r = await store.commit([insertBackup(backup("bkp_1")), { op: "backup.update", id: "bkp_1", set: { state: "running" }, ifState: ["pending"] }]);
    expect(r.versions.size).toBe(0);
    expect(r.touchedServers.size).toBe(0);
    expect((await store.getServer("srv_a"))?.version).toBe(1);
  });
});

describe("backupPolicyFacts (the backup_overdue alert's reads)", () => {
  const policy = (alertAfterHours: number) => ({ backupPolicy: { keepLast: 3, alertAfterHours } });

  it("lists only live servers whose policy sets alert_after_hours, each with its newest success's finish time", async () => {
    await store.commit([
      { op: "server.insert", server: newServer({ id: "srv_a", hostId: "host_a", name: "alpha", project: "team-a", spec: policy(24), at: T0 }) },
      { op: "server.insert", server: newServer({ id: "srv_b", hostId: "host_b", spec: policy(6), at: T0 + 1 }) },
      // No alert in its policy, no policy, soft-deleted, being purged: none listed.
      { op: "server.insert", server: newServer({ id: "srv_c", hostId: "host_a", spec: policy(0) }) },
      { op: "server.insert", server: newServer({ id: "srv_d", hostId: "host_a" }) },
      { op: "server.insert", server: newServer({ id: "srv_e", hostId: "host_a", spec: policy(1), deletedAt: T0 }) },
      { op: "server.insert", server: newServer({ id: "srv_f", hostId: "host_a", spec: policy(1), lifecycle: { purge: { removeData: false, requestedAt: T0 } } }) },
      // srv_a: two successes (the later finish counts), a newer failure and a running one (ignored).
      insertBackup(backup("bkp_a1", { serverId: "srv_a", state: "succeeded", createdAt: T0 + 10, finishedAt: T0 + 100 })),
      insertBackup(backup("bkp_a2", { serverId: "srv_a", state: "succeeded", createdAt: T0 + 20, finishedAt: T0 + 200 })),
      insertBackup(backup("bkp_a3", { serverId: "srv_a", state: "failed", createdAt: T0 + 30, finishedAt: T0 + 300 })),
      insertBackup(backup("bkp_a4", { serverId: "srv_a", state: "running", createdAt: T0 + 40 })),
      insertBackup(backup("bkp_d1", { serverId: "srv_d", state: "succeeded", createdAt: T0, finishedAt: T0 + 5 })),
    ]);
    expect(await store.backupPolicyFacts()).toEqual([
      { serverId: "srv_a", serverName: "alpha", project: "team-a", hostId: "host_a", createdAt: T0, alertAfterHours: 24, newestSuccessAt: T0 + 200 },
      { serverId: "srv_b", serverName: "srv_b", project: "default", hostId: "host_b", createdAt: T0 + 1, alertAfterHours: 6, newestSuccessAt: null },
    ]);
    expect(await store.backupPolicyFacts("srv_b")).toEqual([expect.objectContaining({ serverId: "srv_b", newestSuccessAt: null })]);
    expect(await store.backupPolicyFacts("srv_c")).toEqual([]);
    expect(await store.backupPolicyFacts("srv_nope")).toEqual([]);
  });

  it("follows a policy change: cleared, the server is no longer listed", async () => {
    await store.commit([{ op: "server.insert", server: newServer({ id: "srv_a", hostId: "host_a", spec: policy(24) }) }]);
    const s = (await store.getServer("srv_a"))!;
    const spec = { ...s.spec, backupPolicy: { ...s.spec.backupPolicy!, alertAfterHours: 0 } };
    await store.commit([{ op: "server.spec", id: "srv_a", spec, generation: 2, hostId: "host_a", deletedAt: null, updatedAt: T0, expectVersion: s.version }]);
    expect(await store.backupPolicyFacts()).toEqual([]);
  });
});
