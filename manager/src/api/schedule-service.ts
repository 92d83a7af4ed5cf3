/**
 * ScheduleService (docs/schedules.md): schedules' CRUD, their runs, and cron
 * previews. Runs themselves are the scheduler's (schedules/scheduler.ts): its
 * loop runs ticks on the leading manager; RunScheduleNow runs on the manager
 * that took the call. Viewers read; operators write in their project.
 */
import { clone, create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  CreateScheduleResponseSchema,
  DeleteScheduleResponseSchema,
  GetScheduleResponseSchema,
  ListScheduleRunsResponseSchema,
  ListSchedulesResponseSchema,
  PreviewCronResponseSchema,
  RunScheduleNowResponseSchema,
  ScheduleRunOutcome,
  ScheduleRunSchema,
  ScheduleSchema,
  ScheduleSpecSchema,
  ScheduleTargetSchema,
  ScheduleService,
  ScheduleTaskOutcome,
  ScheduleTrigger,
  UpdateScheduleResponseSchema,
  type Schedule,
  type ScheduleRun,
  type ScheduleSpec,
} from "@berth/proto/berth/v1/schedule_pb.js";
import { actorOf, callerOf, canSee, projectFor, requireRole, type Caller } from "../auth/caller.js";
import { AlreadyExistsError, ConflictError, InvalidArgumentError, NotFoundError, PreconditionError } from "../errors.js";
import { newId } from "../ids.js";
import type { Ledger } from "../ledger/ledger.js";
import type { Store } from "../store/store.js";
import type { ServerRecord } from "../domain/records.js";
import { parseCron, previewCron } from "../schedules/cron.js";
import { RunUnderWayError, type ScheduleRecord, type ScheduleRunRecord, type StoredRunOutcome } from "../schedules/records.js";
import { nextRunTime, type Scheduler } from "../schedules/scheduler.js";
import type { RunTrigger, TaskOutcome } from "../schedules/runner.js";
import { loadVisibleServer } from "./find-server.js";
import { pageTokenAfter, positionOfPageToken } from "./page-token.js";

export interface ScheduleServiceDeps {
  store: Store;
  ledger: Ledger;
  scheduler: Scheduler;
  now?: () => number;
}

const MAX_PAGE = 1000;

const TRIGGER: Record<RunTrigger, ScheduleTrigger> = { tick: ScheduleTrigger.TICK, manual: ScheduleTrigger.MANUAL, catch_up: ScheduleTrigger.CATCH_UP };
const OUTCOME: Record<StoredRunOutcome, ScheduleRunOutcome> = {
  running: ScheduleRunOutcome.RUNNING,
  succeeded: ScheduleRunOutcome.SUCCEEDED,
  failed: ScheduleRunOutcome.FAILED,
  skipped_not_running: ScheduleRunOutcome.SKIPPED_NOT_RUNNING,
  missed: ScheduleRunOutcome.MISSED,
};
const TASK_OUTCOME: Record<TaskOutcome, ScheduleTaskOutcome> = { succeeded: ScheduleTaskOutcome.SUCCEEDED, failed: ScheduleTaskOutcome.FAILED, not_run: ScheduleTaskOutcome.NOT_RUN };

export function scheduleRunToProto(r: ScheduleRunRecord): ScheduleRun {
  return create(ScheduleRunSchema, {
    id: r.id,
    scheduleId: r.scheduleId,
    trigger: TRIGGER[r.trigger],
    scheduledFor: timestampFromMs(r.scheduledFor),
    startTime: timestampFromMs(r.startedAt),
    ...(r.finishedAt !== null ? { finishTime: timestampFromMs(r.finishedAt) } : {}),
    outcome: OUTCOME[r.outcome],
    reason: r.reason,
    message: r.message,
    targets: r.targets.map((t) => ({
      serverId: t.serverId,
      outcome: OUTCOME[t.outcome],
      message: t.message,
      tasks: t.tasks.map((k) => ({
        index: k.index,
        kind: k.kind,
        outcome: TASK_OUTCOME[k.outcome],
        message: k.message,
        ...(k.startedAt !== undefined ? { startTime: timestampFromMs(k.startedAt) } : {}),
        ...(k.finishedAt !== undefined ? { finishTime: timestampFromMs(k.finishedAt) } : {}),
      })),
    })),
    missedCount: r.missedCount,
    ...(r.firstMissedAt !== null ? { firstMissedTime: timestampFromMs(r.firstMissedAt) } : {}),
    requestedBy: r.requestedBy,
  });
}

export function scheduleToProto(s: ScheduleRecord, lastRun: ScheduleRunRecord | undefined, now: number): Schedule {
  const next = nextRunTime(s, now);
  return create(ScheduleSchema, {
    id: s.id,
    project: s.project,
    spec: s.spec,
    ...(lastRun ? { lastRun: scheduleRunToProto(lastRun) } : {}),
    ...(next !== undefined ? { nextRunTime: timestampFromMs(next) } : {}),
    createTime: timestampFromMs(s.createdAt),
    updateTime: timestampFromMs(s.updatedAt),
    version: BigInt(s.version),
  });
}

/** ListSchedules' page token: the last name of the page, in its project. */
function nameToken(project: string, name: string): string {
  return Buffer.from(`sch:${project}/${name}`).toString("base64url");
}

function nameOfToken(token: string): { project: string; name: string } | undefined {
  if (!token) return undefined;
  const m = /^sch:([a-z0-9-]+)\/([a-z0-9-]+)$/.exec(Buffer.from(token, "base64url").toString());
  if (!m) throw new InvalidArgumentError("page_token", "not a token returned by ListSchedules; omit it to start from the first page");
  return { project: m[1]!, name: m[2]! };
}

export function createScheduleService(deps: ScheduleServiceDeps): ServiceImpl<typeof ScheduleService> {
  const { store, ledger, scheduler } = deps;
  const now = deps.now ?? Date.now;

  /** A schedule by id, or by name in the caller's project (an all-projects admin's bare name must be unambiguous). */
  async function find(caller: Caller, idOrName: string): Promise<ScheduleRecord> {
    const key = idOrName.trim();
    let s = await store.getSchedule(key);
    if (!s) {
      if (caller.project !== null) s = await store.findScheduleByName(caller.project, key);
      else {
        const matches = (await store.listSchedules()).filter((x) => x.name === key);
        if (matches.length > 1) throw new InvalidArgumentError("id", `name "${key}" exists in several projects (${matches.map((m) => m.project).join(", ")}); use the schedule id`);
        s = matches[0];
      }
    }
    if (!s || !canSee(caller, s.project)) throw new NotFoundError("schedule", key, "list schedules with ScheduleService.ListSchedules");
    return s;
  }

  async function toProto(s: ScheduleRecord): Promise<Schedule> {
    const [last] = await store.listScheduleRuns(s.id, { limit: 1 });
    return scheduleToProto(s, last, now());
  }

  /**
   * The spec as stored: its cron and zone checked (the zone's canonical name,
   * the expression's spacing normalised), its target server resolved to an id
   * in `project`. Returns it with that server id ('' for a selector).
   */
  async function checkSpec(caller: Caller, project: string, spec: ScheduleSpec): Promise<{ spec: ScheduleSpec; serverId: string }> {
    const parsed = parseCron(spec.cron, spec.timeZone, { cron: "spec.cron", timeZone: "spec.time_zone" });
    const out = clone(ScheduleSpecSchema, spec);
    out.cron = parsed.expression;
    out.timeZone = parsed.timeZone;
    const t = spec.target?.kind;
    let serverId = "";
    if (t?.case === "serverId") {
      const s = await loadVisibleServer(store, { ...caller, project }, t.value);
      if (s.project !== project) throw new InvalidArgumentError("spec.target.server_id", `server "${t.value}" is in project "${s.project}", not "${project}"; a schedule runs on servers of its own project`);
      if (s.deletedAt !== null) throw new PreconditionError(`server "${s.name}" is deleted; restore it first, or choose another server`);
      serverId = s.id;
      out.target = create(ScheduleTargetSchema, { kind: { case: "serverId", value: s.id } });
    } else if (t?.case === "selector") {
      if (t.value.project && t.value.project !== project) {
        throw new InvalidArgumentError("spec.target.selector.project", `a schedule runs on servers of its own project ("${project}"); leave it empty or set "${project}"`);
      }
    } else {
      throw new InvalidArgumentError("spec.target", "set server_id (one server) or selector (the servers of the project with its labels; no labels: every server)");
    }
    return { spec: out, serverId };
  }

  /**
   * The schedules that run on a server: those naming it, and its project's
   * selectors whose labels it carries (a deleted server is selected by none).
   */
  async function schedulesOfServer(server: ServerRecord): Promise<ScheduleRecord[]> {
    const labels = server.spec.labels;
    return (await store.listSchedules({ project: server.project })).filter((s) => {
      const t = s.spec.target?.kind;
      if (t?.case === "serverId") return s.serverId === server.id;
      if (t?.case !== "selector" || server.deletedAt !== null) return false;
      return Object.entries(t.value.labels).every(([k, v]) => Object.hasOwn(labels, k) && labels[k] === v);
    });
  }

  return {
    async listSchedules(req, ctx) {
      const caller = callerOf(ctx);
      const limit = Math.min(req.pageSize || 100, MAX_PAGE);
      const project = caller.project ?? (req.project.trim() || undefined);
      if (caller.project !== null) projectFor(caller, req.project);
      const after = nameOfToken(req.pageToken);
      // Paged by name within one project; across projects (an all-projects admin) the token holds the project too.
      const listed = req.server.trim() ? await schedulesOfServer(await loadVisibleServer(store, caller, req.server)) : await store.listSchedules(project !== undefined ? { project } : {});
      const rows = listed.filter((s) => !after || s.project > after.project || (s.project === after.project && s.name > after.name));
      const page = rows.slice(0, limit);
      const last = page.at(-1);
      return create(ListSchedulesResponseSchema, {
        schedules: await Promise.all(page.map(toProto)),
        nextPageToken: rows.length > limit && last ? nameToken(last.project, last.name) : "",
      });
    },

    async getSchedule(req, ctx) {
      return create(GetScheduleResponseSchema, { schedule: await toProto(await find(callerOf(ctx), req.id)) });
    },

    async createSchedule(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "CreateSchedule");
      const project = projectFor(caller, req.project);
      const { spec, serverId } = await checkSpec(caller, project, req.spec!);
      if (await store.findScheduleByName(project, spec.name)) throw new AlreadyExistsError(`schedule "${spec.name}" already exists in project "${project}"; choose another name or update that one`);
      const at = now();
      const rec: ScheduleRecord = { id: newId("sch"), project, name: spec.name, serverId, spec, version: 1, activeSince: at, lastTickAt: null, createdAt: at, updatedAt: at };
      await store.commit([
        { op: "schedule.insert", schedule: rec },
        ledger.op({ type: "schedule.created", project, ...(serverId ? { serverId } : {}), correlationId: rec.id, actor: actorOf(caller), message: `schedule "${rec.name}" created: "${spec.cron}" (${spec.timeZone}), ${spec.tasks.length} task${spec.tasks.length === 1 ? "" : "s"}${spec.enabled ? "" : ", disabled"}` }),
      ]);
      return create(CreateScheduleResponseSchema, { schedule: await toProto(rec) });
    },

    async updateSchedule(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "UpdateSchedule");
      const cur = await find(caller, req.id);
      if (req.expectedVersion !== undefined && Number(req.expectedVersion) !== cur.version) {
        throw new ConflictError(`schedule "${cur.name}" is at version ${cur.version}, not ${req.expectedVersion}; read it again and retry`);
      }
      const { spec, serverId } = await checkSpec(caller, cur.project, req.spec!);
      const at = now();
      // Ticks count from the update when what decides them changed: none before it is run or missed.
      const clockChanged = spec.cron !== cur.spec.cron || spec.timeZone !== cur.spec.timeZone || spec.enabled !== cur.spec.enabled;
      const rec: ScheduleRecord = { ...cur, name: spec.name, serverId, spec, version: cur.version + 1, activeSince: clockChanged ? at : cur.activeSince, updatedAt: at };
      await store.commit([
        { op: "schedule.update", schedule: rec, expectVersion: cur.version },
        ledger.op({ type: "schedule.updated", project: cur.project, ...(serverId ? { serverId } : {}), correlationId: cur.id, actor: actorOf(caller), message: `schedule "${rec.name}" updated: "${spec.cron}" (${spec.timeZone}), ${spec.tasks.length} task${spec.tasks.length === 1 ? "" : "s"}${spec.enabled ? "" : ", disabled"}` }),
      ]);
      return create(UpdateScheduleResponseSchema, { schedule: await toProto((await store.getSchedule(cur.id)) ?? rec) });
    },

    async deleteSchedule(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "DeleteSchedule");
      const s = await find(caller, req.id);
      const running = await store.runningScheduleRuns(s.id);
      await store.commit([
        { op: "schedule.delete", id: s.id },
        ...running.map((r) =>
          ledger.op({ type: "schedule.run_failed", project: s.project, correlationId: s.id, actor: actorOf(caller), reason: "ScheduleDeleted", message: `schedule "${s.name}": run ${r.id} cut short: the schedule was deleted`, payload: { runId: r.id, trigger: r.trigger, scheduledFor: new Date(r.scheduledFor).toISOString(), targets: r.targets } }),
        ),
        ledger.op({ type: "schedule.deleted", project: s.project, ...(s.serverId ? { serverId: s.serverId } : {}), correlationId: s.id, actor: actorOf(caller), message: `schedule "${s.name}" deleted with its run history` }),
      ]);
      scheduler.cancelSchedule(s.id);
      return create(DeleteScheduleResponseSchema, {});
    },

    async runScheduleNow(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "RunScheduleNow");
      const s = await find(caller, req.id);
      try {
        const run = await scheduler.runNow(s, actorOf(caller));
        return create(RunScheduleNowResponseSchema, { run: scheduleRunToProto(run) });
      } catch (err) {
        if (err instanceof RunUnderWayError) {
          throw new PreconditionError(`schedule "${s.name}" has a run under way; wait for it to end (ListScheduleRuns) and ask again`);
        }
        throw err;
      }
    },

    async listScheduleRuns(req, ctx) {
      const s = await find(callerOf(ctx), req.id);
      const limit = Math.min(req.pageSize || 100, MAX_PAGE);
      const before = positionOfPageToken(req.pageToken, "schr", "ListScheduleRuns");
      const rows = await store.listScheduleRuns(s.id, { ...(before ? { before: { startedAt: before.createdAt, id: before.id } } : {}), limit: limit + 1 });
      const page = rows.slice(0, limit);
      const last = page.at(-1);
      return create(ListScheduleRunsResponseSchema, { runs: page.map(scheduleRunToProto), nextPageToken: pageTokenAfter(last && { createdAt: last.startedAt, id: last.id }, rows.length > limit) });
    },

    async previewCron(req, ctx) {
      callerOf(ctx);
      const p = previewCron(req.cron, req.timeZone, req.count, now());
      return create(PreviewCronResponseSchema, { nextRunTimes: p.nextRunTimes.map(timestampFromMs), description: p.description, timeZone: p.timeZone });
    },
  };
}
