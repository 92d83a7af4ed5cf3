/**
 * ScheduleService's handlers against a real store (testStore(): SQLite in
 * "unit", PostgreSQL in "unit-pg") and a scheduler with a recording
 * executor: CRUD with roles and projects, expected_version, the checks of a
 * spec (cron, zone, target, selector), RunScheduleNow and its one-at-a-time
 * rule, ListScheduleRuns pages, DeleteSchedule cutting a run short, PreviewCron,
 * and the ledger events of every change and run.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { create, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { Code, createContextValues, createHandlerContext, type HandlerContext } from "@connectrpc/connect";
import {
  PowerAction,
  ScheduleRunOutcome,
  ScheduleService,
  ScheduleSpecSchema,
  ScheduleTaskOutcome,
  ScheduleTrigger,
  CreateScheduleRequestSchema,
  UpdateScheduleRequestSchema,
  type ScheduleSpec,
} from "@berth/proto/berth/v1/schedule_pb.js";
import { callerKey, type Caller } from "../auth/caller.js";
import { BerthError } from "../errors.js";
import { Ledger } from "../ledger/ledger.js";
import { createLogger } from "../log.js";
import { Scheduler } from "../schedules/scheduler.js";
import type { ScheduleExecutor } from "../schedules/runner.js";
import type { Store } from "../store/store.js";
import { newServer, testStore } from "../../testing/store.js";
import { createScheduleService } from "./schedule-service.js";

const T0 = Date.UTC(2026, 0, 1, 0, 30);
let clock = T0;
const now = () => clock;

const ADMIN: Caller = { tokenId: "tok_admin", name: "admin", role: "admin", project: null };
const OPERATOR: Caller = { tokenId: "tok_op", name: "op", role: "operator", project: "default" };
const VIEWER: Caller = { tokenId: "tok_view", name: "view", role: "viewer", project: "default" };
const BETA: Caller = { tokenId: "tok_beta", name: "beta", role: "operator", project: "beta" };

function ctx(caller: Caller, method: keyof typeof ScheduleService.method): HandlerContext {
  return createHandlerContext({
    service: ScheduleService,
    method: ScheduleService.method[method],
    protocolName: "connect",
    requestMethod: "POST",
    url: `http://test/berth.v1.ScheduleService/${method}`,
    contextValues: createContextValues().set(callerKey, caller),
  });
}

type SpecInit = MessageInitShape<typeof ScheduleSpecSchema>;
function spec(o: SpecInit = {}): ScheduleSpec {
  const base: SpecInit = {
    name: "nightly",
    target: { kind: { case: "serverId", value: "web" } },
    cron: "0  4 * * *",
    timeZone: "europe/berlin",
    enabled: true,
    tasks: [{ kind: { case: "consoleCommand", value: { command: "say bye" } } }, { kind: { case: "power", value: { action: PowerAction.RESTART } } }],
  };
  return create(ScheduleSpecSchema, { ...base, ...o } as SpecInit);
}

/** The gRPC code a call was refused with, and its message. */
async function refused(p: Promise<unknown>): Promise<[string, string]> {
  try {
    await p;
  } catch (err) {
    if (err instanceof BerthError) return [Code[err.code], err.message];
    throw err;
  }
  throw new Error("the call was not refused");
}

let store: Store;
let calls: string[];
let gate: Promise<void> | undefined;
/** The handlers, typed as what they answer (messages made with create()). */
type Service = { [K in keyof typeof ScheduleService.method]: (req: MessageShape<(typeof ScheduleService.method)[K]["input"]>, ctx: HandlerContext) => Promise<MessageShape<(typeof ScheduleService.method)[K]["output"]>> };
let service: Service;
let scheduler: Scheduler;

beforeEach(async () => {
  clock = T0;
  calls = [];
  gate = undefined;
  store = await testStore();
  await store.commit([
    { op: "server.insert", server: newServer({ id: "srv_aaaa", name: "web", hostId: "host_a" }) },
    { op: "server.insert", server: newServer({ id: "srv_bbbb", name: "web", hostId: "host_a", project: "beta" }) },
  ]);
  const ledger = new Ledger(store, now);
  const executor: ScheduleExecutor = {
    isRunning: async () => true,
    consoleCommand: async (id, c) => {
      calls.push(`console ${id} ${c}`);
      await gate;
    },
    power: async (id, a) => void calls.push(`power ${id} ${a}`),
    sleep: async () => {},
  };
  scheduler = new Scheduler({ store, ledger, log: createLogger("silent", "test"), holder: "mi_a", executor: () => executor, isHolderLive: async () => true, now });
  service = createScheduleService({ store, ledger, scheduler, now }) as unknown as Service;
});
afterEach(async () => {
  await scheduler.stop();
  await store.close();
});

const events = async () => (await store.listNewestFirst({ project: null, typePrefix: "schedule.", limit: 50 })).reverse().map((e) => `${e.type} ${e.actor}${e.reason ? ` ${e.reason}` : ""}`);

describe("ScheduleService", () => {
  it("creates a schedule: the server resolved to its id, the cron and zone as stored, version 1, its next run; a ledger event", async () => {
    const { schedule } = await service.createSchedule(create(CreateScheduleRequestSchema, { spec: spec() }), ctx(OPERATOR, "createSchedule"));
    expect(schedule!.project).toBe("default");
    expect(schedule!.spec!.target!.kind).toEqual({ case: "serverId", value: "srv_aaaa" });
    expect([schedule!.spec!.cron, schedule!.spec!.timeZone, schedule!.version]).toEqual(["0 4 * * *", "Europe/Berlin", 1n]);
    // 04:00 in Berlin (UTC+1 in January) is 03:00 UTC.
    expect(Number(schedule!.nextRunTime!.seconds) * 1000).toBe(Date.UTC(2026, 0, 1, 3));
    expect(schedule!.lastRun).toBeUndefined();
    expect(await events()).toEqual(["schedule.created token:tok_op:op"]);
    // By name too, and listed (also filtered by its server).
    expect((await service.getSchedule({ id: "nightly" } as never, ctx(VIEWER, "getSchedule"))).schedule!.id).toBe(schedule!.id);
    expect((await service.listSchedules({ project: "", server: "web", pageSize: 0, pageToken: "" } as never, ctx(VIEWER, "listSchedules"))).schedules.map((s) => s.spec!.name)).toEqual(["nightly"]);
  });

  it("refuses a viewer's changes, a name taken, a bad cron or zone, and another project's server, each with its code", async () => {
    const mk = (caller: Caller, s: ScheduleSpec, project = "") => service.createSchedule(create(CreateScheduleRequestSchema, { spec: s, project }), ctx(caller, "createSchedule"));
    expect(await refused(mk(VIEWER, spec()))).toEqual(["PermissionDenied", expect.stringContaining("CreateSchedule needs the operator role")]);
    await mk(OPERATOR, spec());
    expect((await refused(mk(OPERATOR, spec())))[0]).toBe("AlreadyExists");
    expect(await refused(mk(OPERATOR, spec({ name: "b", cron: "61 * * * *" })))).toEqual(["InvalidArgument", expect.stringContaining("spec.cron")]);
    expect(await refused(mk(OPERATOR, spec({ name: "b", timeZone: "Mars/Olympus" })))).toEqual(["InvalidArgument", expect.stringContaining("spec.time_zone")]);
    // An operator of beta sees only beta's "web"; asking for default answers NotFound.
    expect((await refused(mk(BETA, spec(), "default")))[0]).toBe("NotFound");
    const beta = await mk(BETA, spec());
    expect(beta.schedule!.spec!.target!.kind).toEqual({ case: "serverId", value: "srv_bbbb" });
    // Every server of the project (an empty selector) is accepted.
    const all = await mk(OPERATOR, spec({ name: "all", target: { kind: { case: "selector", value: {} } } }));
    expect(all.schedule!.spec!.target!.kind.case).toBe("selector");
    // Servers with labels (a selector with labels is kept as given).
    const mc = await mk(OPERATOR, spec({ name: "mc", target: { kind: { case: "selector", value: { labels: { game: "mc" } } } } }));
    expect(mc.schedule!.spec!.target!.kind).toEqual({ case: "selector", value: expect.objectContaining({ labels: { game: "mc" } }) });
    // Listed for a server: the schedules naming it and the selectors it matches (web has no labels: not "mc").
    const forServer = async (server: string) =>
      (await service.listSchedules({ project: "", server, pageSize: 0, pageToken: "" } as never, ctx(VIEWER, "listSchedules"))).schedules.map((x) => x.spec!.name);
    expect(await forServer("web")).toEqual(["all", "nightly"]);
    await store.commit([{ op: "server.insert", server: newServer({ id: "srv_cccc", name: "mc-1", hostId: "host_a", spec: { labels: { game: "mc", tier: "prod" } } }) }]);
    expect(await forServer("mc-1")).toEqual(["all", "mc"]);
  });

  it("updates with expected_version (Aborted when stale); a changed cron counts ticks from the update, other changes keep them", async () => {
    const { schedule } = await service.createSchedule(create(CreateScheduleRequestSchema, { spec: spec() }), ctx(OPERATOR, "createSchedule"));
    const update = (s: ScheduleSpec, expectedVersion?: bigint) => service.updateSchedule(create(UpdateScheduleRequestSchema, { id: "nightly", spec: s, ...(expectedVersion !== undefined ? { expectedVersion } : {}) }), ctx(OPERATOR, "updateSchedule"));
    clock = T0 + 1000;
    await update(spec({ onlyWhenRunning: true }), 1n);
    expect((await store.getSchedule(schedule!.id))!.activeSince).toBe(T0);
    expect((await refused(update(spec(), 1n)))[0]).toBe("Aborted");
    clock = T0 + 2000;
    const { schedule: u } = await update(spec({ cron: "@hourly" }), 2n);
    expect([u!.version, u!.spec!.cron]).toEqual([3n, "@hourly"]);
    expect((await store.getSchedule(schedule!.id))!.activeSince).toBe(T0 + 2000);
    expect((await refused(service.updateSchedule(create(UpdateScheduleRequestSchema, { id: "nightly", spec: spec() }), ctx(BETA, "updateSchedule"))))[0]).toBe("NotFound");
    expect(await events()).toEqual(["schedule.created token:tok_op:op", "schedule.updated token:tok_op:op", "schedule.updated token:tok_op:op"]);
  });

  it("RunScheduleNow runs the tasks once (MANUAL, requested_by), refuses a second run while one is under way, and the run shows in ListScheduleRuns and as the last run", async () => {
    const { schedule } = await service.createSchedule(create(CreateScheduleRequestSchema, { spec: spec({ enabled: false }) }), ctx(OPERATOR, "createSchedule"));
    let release!: () => void;
    gate = new Promise((r) => (release = r));
    const { run } = await service.runScheduleNow({ id: "nightly" } as never, ctx(OPERATOR, "runScheduleNow"));
    expect([run!.trigger, run!.outcome, run!.requestedBy]).toEqual([ScheduleTrigger.MANUAL, ScheduleRunOutcome.RUNNING, "token:tok_op:op"]);
    expect(await refused(service.runScheduleNow({ id: "nightly" } as never, ctx(OPERATOR, "runScheduleNow")))).toEqual(["FailedPrecondition", expect.stringContaining("has a run under way")]);
    expect((await refused(service.runScheduleNow({ id: "nightly" } as never, ctx(VIEWER, "runScheduleNow"))))[0]).toBe("PermissionDenied");
    release();
    await scheduler.idle();
    expect(calls).toEqual(["console srv_aaaa say bye", "power srv_aaaa restart"]);
    const { runs } = await service.listScheduleRuns({ id: schedule!.id, pageSize: 0, pageToken: "" } as never, ctx(VIEWER, "listScheduleRuns"));
    expect(runs.map((r) => [ScheduleRunOutcome[r.outcome], r.targets[0]!.tasks.map((t) => `${t.kind} ${ScheduleTaskOutcome[t.outcome]}`)])).toEqual([["SUCCEEDED", ["console_command SUCCEEDED", "power SUCCEEDED"]]]);
    expect((await service.getSchedule({ id: "nightly" } as never, ctx(VIEWER, "getSchedule"))).schedule!.lastRun!.id).toBe(run!.id);
    // Disabled: no next run time.
    expect((await service.getSchedule({ id: "nightly" } as never, ctx(VIEWER, "getSchedule"))).schedule!.nextRunTime).toBeUndefined();
    expect(await events()).toEqual(["schedule.created token:tok_op:op", `schedule.run_started schedule:${schedule!.id} manual`, `schedule.run_succeeded schedule:${schedule!.id}`]);
  });

  it("pages runs newest first", async () => {
    const { schedule } = await service.createSchedule(create(CreateScheduleRequestSchema, { spec: spec() }), ctx(OPERATOR, "createSchedule"));
    for (let i = 0; i < 3; i++) {
      clock = T0 + i * 1000;
      await service.runScheduleNow({ id: "nightly" } as never, ctx(OPERATOR, "runScheduleNow"));
      await scheduler.idle();
    }
    const page = (token: string) => service.listScheduleRuns({ id: schedule!.id, pageSize: 2, pageToken: token } as never, ctx(VIEWER, "listScheduleRuns"));
    const p1 = await page("");
    const p2 = await page(p1.nextPageToken);
    expect([...p1.runs, ...p2.runs].map((r) => Number(r.startTime!.seconds))).toEqual([T0 / 1000 + 2, T0 / 1000 + 1, T0 / 1000]);
    expect(p2.nextPageToken).toBe("");
    expect((await refused(page("garbage")))[0]).toBe("InvalidArgument");
  });

  it("DeleteSchedule removes the schedule and its runs, cutting a run under way short (ScheduleDeleted)", async () => {
    const { schedule } = await service.createSchedule(create(CreateScheduleRequestSchema, { spec: spec() }), ctx(OPERATOR, "createSchedule"));
    gate = new Promise(() => {});
    await service.runScheduleNow({ id: "nightly" } as never, ctx(OPERATOR, "runScheduleNow"));
    await service.deleteSchedule({ id: "nightly" } as never, ctx(OPERATOR, "deleteSchedule"));
    await scheduler.idle();
    expect(await store.getSchedule(schedule!.id)).toBeUndefined();
    expect(await store.listScheduleRuns(schedule!.id, { limit: 10 })).toEqual([]);
    expect((await events()).slice(-2)).toEqual(["schedule.run_failed token:tok_op:op ScheduleDeleted", "schedule.deleted token:tok_op:op"]);
    expect((await refused(service.getSchedule({ id: "nightly" } as never, ctx(ADMIN, "getSchedule"))))[0]).toBe("NotFound");
  });

  it("PreviewCron answers the next run times, the English and the zone; a bad expression is InvalidArgument naming the field", async () => {
    const p = await service.previewCron({ cron: "0 4 * * *", timeZone: "Europe/Berlin", count: 2 } as never, ctx(VIEWER, "previewCron"));
    expect(p.nextRunTimes.map((t) => new Date(Number(t.seconds) * 1000).toISOString())).toEqual(["2026-01-01T03:00:00.000Z", "2026-01-02T03:00:00.000Z"]);
    expect([p.description, p.timeZone]).toEqual(["At 04:00 every day", "Europe/Berlin"]);
    expect(await refused(service.previewCron({ cron: "0 4 * *", timeZone: "", count: 0 } as never, ctx(VIEWER, "previewCron")))).toEqual(["InvalidArgument", expect.stringContaining("4 fields given")]);
  });

  it("lists a project's schedules by name in pages; an all-projects admin sees every project", async () => {
    for (const name of ["c", "a", "b"]) await service.createSchedule(create(CreateScheduleRequestSchema, { spec: spec({ name }) }), ctx(OPERATOR, "createSchedule"));
    await service.createSchedule(create(CreateScheduleRequestSchema, { spec: spec({ name: "z" }) }), ctx(BETA, "createSchedule"));
    const list = (caller: Caller, token: string) => service.listSchedules({ project: "", server: "", pageSize: 2, pageToken: token } as never, ctx(caller, "listSchedules"));
    const p1 = await list(VIEWER, "");
    const p2 = await list(VIEWER, p1.nextPageToken);
    expect([...p1.schedules, ...p2.schedules].map((s) => s.spec!.name)).toEqual(["a", "b", "c"]);
    expect(p2.nextPageToken).toBe("");
    const all = await service.listSchedules({ project: "", server: "", pageSize: 0, pageToken: "" } as never, ctx(ADMIN, "listSchedules"));
    expect(all.schedules.map((s) => `${s.project}/${s.spec!.name}`)).toEqual(["beta/z", "default/a", "default/b", "default/c"]);
  });
});
