import { fromJsonString, toJsonString } from "@bufbuild/protobuf";
import { ScheduleSpecSchema, type ScheduleSpec } from "@berth/proto/berth/v1/schedule_pb.js";
import { ConflictError } from "../errors.js";
import type { RunTrigger, TargetResult } from "./runner.js";

/**
 * A stored schedule (migration "schedules"): the operator's spec as protobuf
 * JSON and what the manager keeps of it. `serverId` is the target server's
 * id ('' for a selector), so ListSchedules can filter by server.
 */
export interface ScheduleRecord {
  id: string;
  project: string;
  name: string;
  serverId: string;
  spec: ScheduleSpec;
  /** Counts changes of the record (UpdateScheduleRequest.expected_version). */
  version: number;
  /** Ticks count from here (due.ts DueSchedule.activeSince). */
  activeSince: number;
  /**
   * scheduled_for of the latest tick, catch-up or missed record ever written
   * (kept here, not read from the runs, which are pruned); null: none yet.
   */
  lastTickAt: number | null;
  createdAt: number;
  updatedAt: number;
}

export type StoredRunOutcome = "running" | "succeeded" | "failed" | "skipped_not_running" | "missed";

/** One run of a schedule, or a record of missed ticks (ScheduleRun). */
export interface ScheduleRunRecord {
  id: string;
  scheduleId: string;
  /** Missed records have trigger "tick". */
  trigger: RunTrigger;
  scheduledFor: number;
  startedAt: number;
  finishedAt: number | null;
  outcome: StoredRunOutcome;
  reason: string;
  message: string;
  targets: TargetResult[];
  missedCount: number;
  firstMissedAt: number | null;
  requestedBy: string;
  /** The manager process running it (LeaderLease.holder); '' for records never running. */
  holder: string;
}

/** How many runs a schedule keeps (older ones are pruned by scheduleRun.insert). */
export const SCHEDULE_RUNS_KEPT = 100;

/** A tick already has its run or missed record (another manager, or this one before a restart, claimed it). */
export class TickClaimedError extends ConflictError {
  constructor(scheduleId: string, scheduledFor: number) {
    super(`schedule ${scheduleId}'s tick at ${new Date(scheduledFor).toISOString()} already has a run`);
  }
}

/** The schedule already has a run under way (at most one at a time). */
export class RunUnderWayError extends ConflictError {
  constructor(scheduleId: string) {
    super(`schedule ${scheduleId} already has a run under way; wait for it to finish (ListScheduleRuns)`);
  }
}

// ------------------------------------------------------------------ rows (both engines)

export interface ScheduleRow {
  id: string;
  project: string;
  name: string;
  server_id: string;
  spec_json: string;
  version: number | string;
  active_since: number | string;
  last_tick_at: number | string | null;
  created_at: number | string;
  updated_at: number | string;
}

export interface ScheduleRunRow {
  id: string;
  schedule_id: string;
  run_trigger: string;
  scheduled_for: number | string;
  started_at: number | string;
  finished_at: number | string | null;
  outcome: string;
  reason: string;
  message: string;
  targets_json: string;
  missed_count: number | string;
  first_missed_at: number | string | null;
  requested_by: string;
  holder: string;
}

const num = (v: number | string): number => Number(v);
const numOrNull = (v: number | string | null): number | null => (v === null ? null : Number(v));

export const SCHEDULE_COLUMNS = ["id", "project", "name", "server_id", "spec_json", "version", "active_since", "last_tick_at", "created_at", "updated_at"] as const;

export function scheduleValues(s: ScheduleRecord): unknown[] {
  return [s.id, s.project, s.name, s.serverId, toJsonString(ScheduleSpecSchema, s.spec), s.version, s.activeSince, s.lastTickAt, s.createdAt, s.updatedAt];
}

export function scheduleFromRow(r: ScheduleRow): ScheduleRecord {
  return {
    id: r.id,
    project: r.project,
    name: r.name,
    serverId: r.server_id,
    spec: fromJsonString(ScheduleSpecSchema, r.spec_json, { ignoreUnknownFields: true }),
    version: num(r.version),
    activeSince: num(r.active_since),
    lastTickAt: numOrNull(r.last_tick_at),
    createdAt: num(r.created_at),
    updatedAt: num(r.updated_at),
  };
}

export const SCHEDULE_RUN_COLUMNS = [
  "id",
  "schedule_id",
  "run_trigger",
  "scheduled_for",
  "started_at",
  "finished_at",
  "outcome",
  "reason",
  "message",
  "targets_json",
  "missed_count",
  "first_missed_at",
  "requested_by",
  "holder",
] as const;

export function scheduleRunValues(r: ScheduleRunRecord): unknown[] {
  return [r.id, r.scheduleId, r.trigger, r.scheduledFor, r.startedAt, r.finishedAt, r.outcome, r.reason, r.message, JSON.stringify(r.targets), r.missedCount, r.firstMissedAt, r.requestedBy, r.holder];
}

export function scheduleRunFromRow(r: ScheduleRunRow): ScheduleRunRecord {
  return {
    id: r.id,
    scheduleId: r.schedule_id,
    trigger: r.run_trigger as RunTrigger,
    scheduledFor: num(r.scheduled_for),
    startedAt: num(r.started_at),
    finishedAt: numOrNull(r.finished_at),
    outcome: r.outcome as StoredRunOutcome,
    reason: r.reason,
    message: r.message,
    targets: JSON.parse(r.targets_json) as TargetResult[],
    missedCount: num(r.missed_count),
    firstMissedAt: numOrNull(r.first_missed_at),
    requestedBy: r.requested_by,
    holder: r.holder,
  };
}

/** What a finished run writes over its running row (scheduleRun.finish). */
export type RunFinish = Pick<ScheduleRunRecord, "finishedAt" | "outcome" | "reason" | "message" | "targets">;

/** ListSchedules' filter: one project's (or every) schedule, by project and name, after `afterName` in `project`. */
export interface ScheduleFilter {
  project?: string;
  serverId?: string;
  /** Names after this one (a page: needs `project`). */
  afterName?: string;
  limit?: number;
}

/** ListScheduleRuns' page: newest first by (startedAt, id), those before `before`. */
export interface ScheduleRunPage {
  before?: { startedAt: number; id: string };
  limit: number;
}
