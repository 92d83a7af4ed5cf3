/**
 * The real executor's own decisions (executor.ts): a backup task with no
 * target named takes the first target by name, and fails clearly when there
 * is none; calls go to the handlers as the schedule (operator of its
 * project, actor schedule:<id>); whether a server runs is its phase.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import { Phase, ServerStatusSchema } from "@berth/proto/berth/v1/server_pb.js";
import { ScheduleSpecSchema } from "@berth/proto/berth/v1/schedule_pb.js";
import { callerKey, type Caller } from "../auth/caller.js";
import type { Store } from "../store/store.js";
import { newServer, testStore } from "../../testing/store.js";
import type { ScheduleRecord } from "./records.js";
import { scheduleExecutor } from "./executor.js";

const s: ScheduleRecord = {
  id: "sch_a",
  project: "default",
  name: "nightly",
  serverId: "srv_aaaa",
  spec: create(ScheduleSpecSchema, { name: "nightly" }),
  version: 1,
  activeSince: 0,
  lastTickAt: null,
  createdAt: 0,
  updatedAt: 0,
};

let store: Store;
beforeEach(async () => {
  store = await testStore();
});
afterEach(() => store.close());

describe("the schedule executor", () => {
  it("a backup task without a target uses the first target by name, and fails saying what to do when there is none", async () => {
    const asked: { target: string; caller: Caller | undefined }[] = [];
    const x = scheduleExecutor(
      {
        store,
        servers: {},
        backups: {
          createBackup: async (req, ctx: HandlerContext) => {
            asked.push({ target: req.target, caller: ctx.values.get(callerKey) });
            return { backup: { id: "bk_1" } };
          },
        },
      },
      s,
    );
    const signal = new AbortController().signal;
    await expect(x.backup!("srv_aaaa", { target: "", live: false }, signal)).rejects.toThrow("no backup target exists: create one with BackupService.CreateBackupTarget, or remove the backup task");
    const target = (id: string, name: string) => ({ op: "backupTarget.insert" as const, target: { id, name, config: { kind: "directory" as const, path: "/b", shared: false }, sealedSecret: "", createdAt: 0, createdBy: "t" } });
    await store.commit([target("bkt_z", "zeta"), target("bkt_a", "alpha")]);
    expect(await x.backup!("srv_aaaa", { target: "", live: true }, signal)).toBe("backup bk_1 asked for");
    expect(await x.backup!("srv_aaaa", { target: "zeta", live: false }, signal)).toBe("backup bk_1 asked for");
    expect(asked.map((a) => a.target)).toEqual(["bkt_a", "zeta"]);
    expect(asked[0]!.caller).toEqual({ tokenId: "", name: "schedule nightly", role: "operator", project: "default", actor: "schedule:sch_a" });
  });

  it("a server is running when its phase is RUNNING; a deleted or missing one fails the check", async () => {
    await store.commit([
      { op: "server.insert", server: newServer({ id: "srv_aaaa", hostId: "host_a", status: create(ServerStatusSchema, { phase: Phase.RUNNING }) }) },
      { op: "server.insert", server: newServer({ id: "srv_bbbb", hostId: "host_a", status: create(ServerStatusSchema, { phase: Phase.STOPPED }) }) },
    ]);
    const x = scheduleExecutor({ store, servers: {}, backups: { createBackup: async () => ({}) } }, s);
    const signal = new AbortController().signal;
    expect(await x.isRunning("srv_aaaa", signal)).toBe(true);
    expect(await x.isRunning("srv_bbbb", signal)).toBe(false);
    await expect(x.isRunning("srv_gone", signal)).rejects.toThrow("server srv_gone no longer exists");
  });
});
