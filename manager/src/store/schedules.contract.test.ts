/**
 * The store contract's schedules (store.ts schedule.* / scheduleRun.*
 * operations, ScheduleReads; migration "schedules"), on the engine
 * testStore() opens: records read back as written, names unique per project,
 * versions checked, a tick claimed once (also by two managers' stores on one
 * database), one run under way per schedule, runs pruned to the newest N,
 * and a schedule's runs gone with it.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { PowerAction, ScheduleSpecSchema } from "@berth/proto/berth/v1/schedule_pb.js";
import { AlreadyExistsError, ConflictError, NotFoundError } from "../errors.js";
import { expectTyped, rejection, testStore, twoManagerStores } from "../../testing/store.js";
import { RunUnderWayError, TickClaimedError, type ScheduleRecord, type ScheduleRunRecord } from "../schedules/records.js";
import type { Store } from "./store.js";

const T0 = 1_700_000_000_000;
let store: Store;
beforeEach(async () => {
  store = await testStore();
});
afterEach(() => store.close());

function schedule(id: string, name: string, o: Partial<ScheduleRecord> = {}): ScheduleRecord {
  return {
    id,
    project: "default",
    name,
    serverId: "srv_aaaa",
    spec: create(ScheduleSpecSchema, {
      name,
      target: { kind: { case: "serverId", value: "srv_aaaa" } },
      cron: "0 4 * * *",
      timeZone: "Europe/Berlin",
      enabled: true,
      tasks: [{ kind: { case: "consoleCommand", value: { command: "say hi" } } }, { kind: { case: "power", value: { action: PowerAction.RESTART } } }],
    }),
    version: 1,
    activeSince: T0,
    lastTickAt: null,
    createdAt: T0,
    updatedAt: T0,
    ...o,
  };
}

function run(id: string, o: Partial<ScheduleRunRecord> = {}): ScheduleRunRecord {
  return {
    id,
    scheduleId: "sch_a",
    trigger: "tick",
    scheduledFor: T0 + 60_000,
    startedAt: T0 + 60_000,
    finishedAt: null,
    outcome: "running",
    reason: "",
    message: "",
    targets: [],
    missedCount: 0,
    firstMissedAt: null,
    requestedBy: "",
    holder: "mi_a",
    ...o,
  };
}

describe("schedules in the store", () => {
  it("reads a schedule back as written, by id and by name, and lists by project and name", async () => {
    await store.commit([{ op: "schedule.insert", schedule: schedule("sch_b", "nightly") }, { op: "schedule.insert", schedule: schedule("sch_a", "backup", { serverId: "srv_bbbb" }) }, { op: "schedule.insert", schedule: schedule("sch_c", "nightly", { project: "other" }) }]);
    const got = await store.getSchedule("sch_b");
    expect(got).toEqual(schedule("sch_b", "nightly"));
    expect((await store.findScheduleByName("other", "nightly"))?.id).toBe("sch_c");
    expect((await store.listSchedules({ project: "default" })).map((s) => s.name)).toEqual(["backup", "nightly"]);
    expect((await store.listSchedules()).map((s) => s.id)).toEqual(["sch_a", "sch_b", "sch_c"]);
    expect((await store.listSchedules({ serverId: "srv_bbbb" })).map((s) => s.id)).toEqual(["sch_a"]);
    expect((await store.listSchedules({ project: "default", afterName: "backup" })).map((s) => s.id)).toEqual(["sch_b"]);
  });

  it("refuses a name taken in the project (AlreadyExists), and an update on a stale version (Aborted)", async () => {
    await store.commit([{ op: "schedule.insert", schedule: schedule("sch_a", "nightly") }]);
    expectTyped(await rejection(store.commit([{ op: "schedule.insert", schedule: schedule("sch_b", "nightly") }])), AlreadyExistsError, Code.AlreadyExists);
    const next = { ...schedule("sch_a", "nightly"), version: 2, activeSince: T0 + 5, updatedAt: T0 + 5, lastTickAt: 123 };
    await store.commit([{ op: "schedule.update", schedule: next, expectVersion: 1 }]);
    const got = await store.getSchedule("sch_a");
    expect(got?.version).toBe(2);
    expect(got?.activeSince).toBe(T0 + 5);
    expect(got?.lastTickAt).toBeNull(); // the store keeps lastTickAt
    expectTyped(await rejection(store.commit([{ op: "schedule.update", schedule: { ...next, version: 3 }, expectVersion: 1 }])), ConflictError, Code.Aborted);
    expectTyped(await rejection(store.commit([{ op: "schedule.update", schedule: schedule("sch_x", "x"), expectVersion: 1 }])), NotFoundError, Code.NotFound);
  });

  it("claims a tick once: a second run or missed record for the same tick is TickClaimedError, and lastTickAt moves forward only", async () => {
    await store.commit([{ op: "schedule.insert", schedule: schedule("sch_a", "nightly") }]);
    await store.commit([{ op: "scheduleRun.insert", run: run("schr_a", { outcome: "succeeded", finishedAt: T0 + 61_000 }), keep: 100 }]);
    expect(await rejection(store.commit([{ op: "scheduleRun.insert", run: run("schr_b", { outcome: "missed", finishedAt: T0 }), keep: 100 }]))).toBeInstanceOf(TickClaimedError);
    expect((await store.getSchedule("sch_a"))?.lastTickAt).toBe(T0 + 60_000);
    // An older missed record does not move it back; a manual run at the same instant is no tick.
    await store.commit([{ op: "scheduleRun.insert", run: run("schr_c", { scheduledFor: T0, startedAt: T0 + 61_000, outcome: "missed", finishedAt: T0 + 61_000 }), keep: 100 }]);
    await store.commit([{ op: "scheduleRun.insert", run: run("schr_d", { trigger: "manual", startedAt: T0 + 62_000, outcome: "succeeded", finishedAt: T0 + 62_000 }), keep: 100 }]);
    expect((await store.getSchedule("sch_a"))?.lastTickAt).toBe(T0 + 60_000);
    expect((await store.listScheduleRuns("sch_a", { limit: 10 })).map((r) => r.id)).toEqual(["schr_d", "schr_c", "schr_a"]);
  });

  it("keeps one run under way per schedule, finishes it once, and lists runs newest first with pages", async () => {
    await store.commit([{ op: "schedule.insert", schedule: schedule("sch_a", "nightly") }]);
    await store.commit([{ op: "scheduleRun.insert", run: run("schr_a"), keep: 100 }]);
    expect(await rejection(store.commit([{ op: "scheduleRun.insert", run: run("schr_b", { trigger: "manual", startedAt: T0 + 70_000 }), keep: 100 }]))).toBeInstanceOf(RunUnderWayError);
    expect((await store.runningScheduleRuns()).map((r) => r.id)).toEqual(["schr_a"]);
    const targets = [{ serverId: "srv_aaaa", outcome: "succeeded" as const, reason: "", message: "2 tasks succeeded", tasks: [{ index: 0, kind: "console_command" as const, outcome: "succeeded" as const, message: "sent", startedAt: T0 + 60_001, finishedAt: T0 + 60_002 }] }];
    await store.commit([{ op: "scheduleRun.finish", id: "schr_a", finish: { finishedAt: T0 + 61_000, outcome: "succeeded", reason: "", message: "ok", targets } }]);
    expect(await store.getScheduleRun("schr_a")).toEqual(run("schr_a", { finishedAt: T0 + 61_000, outcome: "succeeded", message: "ok", targets }));
    expectTyped(await rejection(store.commit([{ op: "scheduleRun.finish", id: "schr_a", finish: { finishedAt: T0, outcome: "failed", reason: "ManagerRestarted", message: "", targets: [] } }])), ConflictError, Code.Aborted);
    expect(await store.runningScheduleRuns("sch_a")).toEqual([]);
    await store.commit([{ op: "scheduleRun.insert", run: run("schr_b", { trigger: "manual", startedAt: T0 + 70_000, outcome: "succeeded", finishedAt: T0 + 70_001 }), keep: 100 }]);
    const page1 = await store.listScheduleRuns("sch_a", { limit: 1 });
    expect(page1.map((r) => r.id)).toEqual(["schr_b"]);
    const page2 = await store.listScheduleRuns("sch_a", { before: { startedAt: page1[0]!.startedAt, id: page1[0]!.id }, limit: 5 });
    expect(page2.map((r) => r.id)).toEqual(["schr_a"]);
  });

  it("keeps the newest `keep` finished runs of a schedule, pruning older ones on write (others' runs untouched)", async () => {
    await store.commit([{ op: "schedule.insert", schedule: schedule("sch_a", "nightly") }, { op: "schedule.insert", schedule: schedule("sch_b", "other") }]);
    await store.commit([{ op: "scheduleRun.insert", run: run("schr_other", { scheduleId: "sch_b", outcome: "succeeded", finishedAt: T0 }), keep: 3 }]);
    for (let i = 0; i < 6; i++) {
      await store.commit([{ op: "scheduleRun.insert", run: run(`schr_${"abcdef"[i]}`, { scheduledFor: T0 + i * 60_000, startedAt: T0 + i * 60_000, outcome: "succeeded", finishedAt: T0 + i * 60_000 + 1 }), keep: 3 }]);
    }
    expect((await store.listScheduleRuns("sch_a", { limit: 10 })).map((r) => r.id)).toEqual(["schr_f", "schr_e", "schr_d"]);
    expect((await store.listScheduleRuns("sch_b", { limit: 10 })).map((r) => r.id)).toEqual(["schr_other"]);
    // The pruned ticks stay claimed by lastTickAt: the loop never runs them again.
    expect((await store.getSchedule("sch_a"))?.lastTickAt).toBe(T0 + 5 * 60_000);
  });

  it("deletes a schedule with its runs; a run for a schedule that is gone is NotFound", async () => {
    await store.commit([{ op: "schedule.insert", schedule: schedule("sch_a", "nightly") }, { op: "scheduleRun.insert", run: run("schr_a"), keep: 100 }]);
    await store.commit([{ op: "schedule.delete", id: "sch_a" }]);
    expect(await store.getSchedule("sch_a")).toBeUndefined();
    expect(await store.getScheduleRun("schr_a")).toBeUndefined();
    expectTyped(await rejection(store.commit([{ op: "schedule.delete", id: "sch_a" }])), NotFoundError, Code.NotFound);
    expectTyped(await rejection(store.commit([{ op: "scheduleRun.insert", run: run("schr_b"), keep: 100 }])), NotFoundError, Code.NotFound);
    expectTyped(await rejection(store.commit([{ op: "scheduleRun.finish", id: "schr_a", finish: { finishedAt: T0, outcome: "failed", reason: "", message: "", targets: [] } }])), NotFoundError, Code.NotFound);
  });
});

describe("two managers' stores on one database", () => {
  it("claim a tick at the same moment: exactly one insert wins, the other is TickClaimedError", async () => {
    const two = await twoManagerStores();
    try {
      const [a, b] = two.stores;
      await a.commit([{ op: "schedule.insert", schedule: schedule("sch_a", "nightly") }]);
      const results = await Promise.allSettled([
        a.commit([{ op: "scheduleRun.insert", run: run("schr_a", { holder: "mi_a" }), keep: 100 }]),
        b.commit([{ op: "scheduleRun.insert", run: run("schr_b", { holder: "mi_b" }), keep: 100 }]),
      ]);
      expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
      const failed = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
      expect(failed.reason).toBeInstanceOf(ConflictError);
      expect((await b.listScheduleRuns("sch_a", { limit: 10 }))).toHaveLength(1);
    } finally {
      await two.close();
    }
  });
});
