/**
 * The schedule loop (docs/schedules.md): on the manager holding the leader
 * lease, it wakes at the next due tick (a timer, re-armed when a schedule
 * changes), decides what is due (due.ts), claims each tick by inserting its
 * run row (the store's unique (schedule_id, scheduled_for) lets exactly one
 * insert win, across managers and restarts), and runs the tasks (runner.ts)
 * against the manager's server operations (executor.ts). RunScheduleNow runs
 * through the same path on whichever manager took the call.
 *
 *   start ─▶ recover (runs of dead managers still "running" → failed, ManagerRestarted)
 *         ─▶ pass: per enabled schedule ─ missed record? ─ claim tick ─ run (in the background)
 *         ─▶ timer at the soonest next tick (at most MAX_SLEEP_MS), or a schedule.* event
 */
import { ConflictError, NotFoundError } from "../errors.js";
import { newId } from "../ids.js";
import type { Ledger } from "../ledger/ledger.js";
import type { Logger } from "../log.js";
import type { Store, WriteOp } from "../store/store.js";
import { dueTicks } from "./due.js";
import { RunUnderWayError, SCHEDULE_RUNS_KEPT, TickClaimedError, type ScheduleRecord, type ScheduleRunRecord } from "./records.js";
import { runSchedule, type PowerAction, type RunRecord, type RunTrigger, type ScheduleExecutor, type ScheduleTaskSpec } from "./runner.js";
import { PowerAction as ProtoPower, type ScheduleSpec } from "@berth/proto/berth/v1/schedule_pb.js";

/** A run's deadline: the longest task list (50 waits of an hour) fits, with room for its other tasks. */
export const RUN_DEADLINE_MS = 52 * 3_600_000;
/** The loop looks again at least this often even with nothing due (a clock that jumped, a missed wake-up). */
export const MAX_SLEEP_MS = 15 * 60_000;

/** Timers, injectable with the clock (tests). */
export interface Timers {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

const REAL_TIMERS: Timers = {
  set: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clear: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface SchedulerDeps {
  store: Store;
  ledger: Ledger;
  log: Logger;
  /** This manager process (LeaderLease.holder): recorded on the runs it runs. */
  holder: string;
  /** The server operations a schedule's tasks call, acting as that schedule. */
  executor: (schedule: ScheduleRecord) => ScheduleExecutor;
  /** Whether the manager process `holder` still runs (its runs still "running" are really under way). */
  isHolderLive: (holder: string) => Promise<boolean>;
  now?: () => number;
  timers?: Timers;
  deadlineMs?: number;
  keepRuns?: number;
}

const POWER: Record<number, PowerAction> = { [ProtoPower.START]: "start", [ProtoPower.STOP]: "stop", [ProtoPower.RESTART]: "restart", [ProtoPower.REBUILD]: "rebuild" };

/** The runner's tasks of a spec. */
export function tasksOf(spec: ScheduleSpec): ScheduleTaskSpec[] {
  return spec.tasks.map((t): ScheduleTaskSpec => {
    const c = { continueOnFailure: t.continueOnFailure };
    switch (t.kind.case) {
      case "consoleCommand":
        return { ...c, kind: "console_command", command: t.kind.value.command };
      case "power":
        return { ...c, kind: "power", action: POWER[t.kind.value.action] ?? "restart" };
      case "backup":
        return { ...c, kind: "backup", target: t.kind.value.target, live: t.kind.value.live };
      case "wait":
        return { ...c, kind: "wait", seconds: t.kind.value.seconds };
      default:
        throw new Error("a schedule task without a kind");
    }
  });
}

/** due.ts's view of a stored schedule. */
export function dueView(s: ScheduleRecord) {
  return { id: s.id, cron: s.spec.cron, timeZone: s.spec.timeZone || "UTC", enabled: s.spec.enabled, missedRunGraceSeconds: s.spec.missedRunGraceSeconds, activeSince: s.activeSince };
}

/** The next tick of a schedule at `now` (undefined while disabled). */
export function nextRunTime(s: ScheduleRecord, now: number): number | undefined {
  try {
    return dueTicks({ schedule: dueView(s), lastTick: s.lastTickAt ?? undefined, now }).nextRunTime;
  } catch {
    return undefined;
  }
}

export class Scheduler {
  readonly #d: SchedulerDeps;
  readonly #now: () => number;
  readonly #timers: Timers;
  #running = false;
  /** stop() was called: no timer is armed until start() again (pass() alone, in tests, still arms). */
  #stopped = false;
  #timer: unknown;
  #passing: Promise<void> | undefined;
  #again = false;
  #unsubscribe: (() => void) | undefined;
  /** Runs under way on this manager, by run id: their shutdown signal and their end. */
  readonly #runs = new Map<string, { ctl: AbortController; done: Promise<void>; scheduleId: string }>();

  constructor(deps: SchedulerDeps) {
    this.#d = deps;
    this.#now = deps.now ?? Date.now;
    this.#timers = deps.timers ?? REAL_TIMERS;
  }

  /** Starts the loop (this manager leads): recovers runs of dead managers, then passes. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#stopped = false;
    // A schedule created, changed or deleted (here or, on PostgreSQL, on another manager) re-arms the timer.
    // A schedule deleted on another manager cuts its run here short too (the
    // deleting manager already ended the run's row); after a resync, any run
    // whose schedule is gone.
    this.#unsubscribe = this.#d.store.onCommit((c) => {
      for (const e of c.events) if (e.type === "schedule.deleted" && e.correlationId) this.cancelSchedule(e.correlationId);
      if (c.resync) void this.#cancelRunsOfDeleted();
      if (c.resync || c.events.some((e) => e.type === "schedule.created" || e.type === "schedule.updated" || e.type === "schedule.deleted")) this.wake();
    });
    void this.#recover().finally(() => this.wake());
  }

  /** Stops the loop; with `abortRuns`, runs under way are cut short (ManagerShutdown) and awaited. */
  async stop(abortRuns = true): Promise<void> {
    this.#running = false;
    this.#stopped = true;
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
    if (this.#timer !== undefined) this.#timers.clear(this.#timer);
    this.#timer = undefined;
    await this.#passing;
    if (abortRuns) {
      for (const r of this.#runs.values()) r.ctl.abort();
      await this.idle();
    }
  }

  /** Resolves once every run under way on this manager has ended (tests). */
  async idle(): Promise<void> {
    while (this.#runs.size > 0) await Promise.all([...this.#runs.values()].map((r) => r.done));
  }

  /** Cuts short the runs under way here whose schedule is gone. */
  async #cancelRunsOfDeleted(): Promise<void> {
    const ids = new Set([...this.#runs.values()].map((r) => r.scheduleId));
    for (const id of ids) {
      try {
        if ((await this.#d.store.getSchedule(id)) === undefined) this.cancelSchedule(id);
      } catch (err) {
        this.#d.log.warn({ err, schedule: id }, "could not check whether a schedule under way still exists");
      }
    }
  }

  /** Cuts short this manager's runs of a deleted schedule (their rows are gone with it). */
  cancelSchedule(scheduleId: string): void {
    for (const r of this.#runs.values()) if (r.scheduleId === scheduleId) r.ctl.abort(new Error("ScheduleDeleted"));
  }

  /** Passes now (coalesced with a pass under way). */
  wake(): void {
    if (!this.#running) return;
    if (this.#passing) {
      this.#again = true;
      return;
    }
    this.#passing = (async () => {
      do {
        this.#again = false;
        try {
          await this.pass();
        } catch (err) {
          this.#d.log.warn({ err }, "schedule pass failed; trying again shortly");
          this.#arm(this.#now() + 5_000);
        }
      } while (this.#again && this.#running);
    })().finally(() => (this.#passing = undefined));
  }

  #arm(at: number): void {
    if (this.#stopped) return;
    if (this.#timer !== undefined) this.#timers.clear(this.#timer);
    const ms = Math.min(Math.max(at - this.#now(), 0), MAX_SLEEP_MS);
    this.#timer = this.#timers.set(() => {
      this.#timer = undefined;
      this.wake();
    }, ms);
  }

  /**
   * One pass over every schedule: records missed ticks, claims and starts the
   * due ones, and arms the timer at the soonest next tick. Runs go on in the
   * background (idle() awaits them).
   */
  async pass(): Promise<void> {
    const now = this.#now();
    let soonest = now + MAX_SLEEP_MS;
    for (const s of await this.#d.store.listSchedules()) {
      if (!s.spec.enabled) continue;
      let plan;
      try {
        plan = dueTicks({ schedule: dueView(s), lastTick: s.lastTickAt ?? undefined, now });
      } catch (err) {
        this.#d.log.warn({ err, schedule: s.id }, "schedule's cron or time zone no longer parses; skipping it");
        continue;
      }
      if (plan.nextRunTime !== undefined) soonest = Math.min(soonest, plan.nextRunTime);
      if (plan.missed) {
        const m = plan.missed;
        // Recorded a millisecond "before" the run of this pass, so it sorts before it (runs list by start time).
        const run = this.#row(s, "tick", m.scheduledFor, now - 1, {
          outcome: "missed",
          finishedAt: now - 1,
          reason: "Missed",
          message: `${m.count}${m.countCapped ? "+" : ""} tick${m.count === 1 ? "" : "s"} from ${new Date(m.firstMissed).toISOString()} to ${new Date(m.scheduledFor).toISOString()} not run: no manager ran then, and ${m.count === 1 ? "it is" : "they are"} older than the grace period (${s.spec.missedRunGraceSeconds} s)`,
          missedCount: m.count,
          firstMissedAt: m.firstMissed,
        });
        await this.#claim(s, run, [
          this.#d.ledger.op({
            type: "schedule.ticks_missed",
            project: s.project,
            correlationId: s.id,
            actor: `schedule:${s.id}`,
            reason: "Missed",
            message: `schedule "${s.name}": ${run.message}`,
            payload: { runId: run.id, count: m.count, countCapped: m.countCapped, firstMissed: new Date(m.firstMissed).toISOString(), lastMissed: new Date(m.scheduledFor).toISOString() },
          }),
        ]);
      }
      if (plan.run) await this.#start(s, plan.run.trigger, plan.run.scheduledFor, "");
    }
    this.#arm(soonest);
  }

  /** RunScheduleNow: a manual run, started now; answers its row (running). RunUnderWayError when one is under way. */
  async runNow(s: ScheduleRecord, requestedBy: string): Promise<ScheduleRunRecord> {
    const run = await this.#start(s, "manual", this.#now(), requestedBy);
    if (!run) throw new RunUnderWayError(s.id);
    return run;
  }

  #row(s: ScheduleRecord, trigger: RunTrigger, scheduledFor: number, now: number, more: Partial<ScheduleRunRecord> = {}): ScheduleRunRecord {
    return {
      id: newId("schr"),
      scheduleId: s.id,
      trigger,
      scheduledFor,
      startedAt: now,
      finishedAt: null,
      outcome: "running",
      reason: "",
      message: "",
      targets: [],
      missedCount: 0,
      firstMissedAt: null,
      requestedBy: "",
      holder: "",
      ...more,
    };
  }

  /** Inserts `run` with `events`: false when the tick was already claimed (another manager, or before a restart). */
  async #claim(s: ScheduleRecord, run: ScheduleRunRecord, events: WriteOp[]): Promise<boolean> {
    try {
      await this.#d.store.commit([{ op: "scheduleRun.insert", run, keep: this.#d.keepRuns ?? SCHEDULE_RUNS_KEPT }, ...events]);
      return true;
    } catch (err) {
      if (err instanceof TickClaimedError) return false;
      // Deleted meanwhile: the loop skips it; RunScheduleNow answers NotFound.
      if (err instanceof NotFoundError && run.trigger !== "manual") return false;
      throw err;
    }
  }

  /** The servers a schedule's target names now. */
  async #servers(s: ScheduleRecord): Promise<string[]> {
    const t = s.spec.target?.kind;
    if (t?.case === "serverId") return [s.serverId || t.value];
    if (t?.case === "selector") {
      const project = t.value.project || s.project;
      return (await this.#d.store.listServers({ project, labels: t.value.labels })).map((x) => x.id);
    }
    return [];
  }

  /**
   * Claims and starts one run; undefined when it could not start here (the
   * tick was claimed elsewhere; a manual run while one is under way).
   * A tick while another run of the schedule is under way is recorded as
   * failed (PreviousRunUnderWay): runs of one schedule never overlap.
   */
  async #start(s: ScheduleRecord, trigger: RunTrigger, scheduledFor: number, requestedBy: string): Promise<ScheduleRunRecord | undefined> {
    const now = this.#now();
    const actor = `schedule:${s.id}`;
    const serverIds = await this.#servers(s);
    const run = this.#row(s, trigger, scheduledFor, now, { requestedBy, holder: this.#d.holder });
    const words = trigger === "manual" ? `run now (asked by ${requestedBy})` : trigger === "catch_up" ? `catch-up of the tick at ${new Date(scheduledFor).toISOString()}` : `tick at ${new Date(scheduledFor).toISOString()}`;
    try {
      const claimed = await this.#claim(s, run, [
        this.#d.ledger.op({
          type: "schedule.run_started",
          project: s.project,
          correlationId: s.id,
          actor,
          reason: trigger,
          message: `schedule "${s.name}": ${words} on ${serverIds.length} server${serverIds.length === 1 ? "" : "s"}`,
          payload: { runId: run.id, trigger, scheduledFor: new Date(scheduledFor).toISOString(), servers: serverIds },
        }),
      ]);
      if (!claimed) return undefined;
    } catch (err) {
      if (!(err instanceof RunUnderWayError)) throw err;
      if (trigger === "manual") return undefined;
      const message = "the previous run of this schedule was still under way; this tick was not run";
      await this.#claim(s, { ...run, outcome: "failed", finishedAt: now, reason: "PreviousRunUnderWay", message, holder: "" }, [
        this.#d.ledger.op({ type: "schedule.run_failed", project: s.project, correlationId: s.id, actor, reason: "PreviousRunUnderWay", message: `schedule "${s.name}": ${words}: ${message}`, payload: { runId: run.id, trigger, scheduledFor: new Date(scheduledFor).toISOString(), targets: [] } }),
      ]);
      return undefined;
    }
    const ctl = new AbortController();
    const done = this.#execute(s, run, serverIds, ctl.signal)
      .catch((err: unknown) => this.#d.log.error({ err, schedule: s.id, run: run.id }, "a schedule run could not be recorded"))
      .finally(() => this.#runs.delete(run.id));
    this.#runs.set(run.id, { ctl, done, scheduleId: s.id });
    return run;
  }

  async #execute(s: ScheduleRecord, run: ScheduleRunRecord, serverIds: string[], signal: AbortSignal): Promise<void> {
    const executor = this.#d.executor(s);
    let rec: RunRecord = await runSchedule(
      { scheduleId: s.id, trigger: run.trigger, scheduledFor: run.scheduledFor, serverIds, tasks: tasksOf(s.spec), onlyWhenRunning: s.spec.onlyWhenRunning, deadlineMs: this.#d.deadlineMs ?? RUN_DEADLINE_MS, signal },
      { executor, now: this.#now },
    );
    if (signal.aborted && signal.reason instanceof Error && signal.reason.message === "ScheduleDeleted") {
      rec = { ...rec, outcome: "failed", reason: "ScheduleDeleted", message: "the schedule was deleted during the run" };
    }
    const words = run.trigger === "manual" ? "run now" : run.trigger === "catch_up" ? "catch-up run" : "run";
    try {
      await this.#d.store.commit([
        { op: "scheduleRun.finish", id: run.id, finish: { finishedAt: rec.finishedAt, outcome: rec.outcome, reason: rec.reason, message: rec.message, targets: [...rec.targets] } },
        this.#d.ledger.op({
          type: rec.outcome === "succeeded" ? "schedule.run_succeeded" : rec.outcome === "failed" ? "schedule.run_failed" : "schedule.run_skipped",
          project: s.project,
          correlationId: s.id,
          actor: `schedule:${s.id}`,
          reason: rec.reason,
          message: `schedule "${s.name}": ${words} ${rec.outcome === "skipped_not_running" ? "skipped" : rec.outcome}: ${rec.message}`,
          payload: { runId: run.id, trigger: run.trigger, scheduledFor: new Date(run.scheduledFor).toISOString(), targets: rec.targets },
        }),
      ]);
    } catch (err) {
      // Deleted meanwhile, or failed by a manager that thought this one dead: its record stands.
      if (err instanceof NotFoundError || err instanceof ConflictError) {
        this.#d.log.info({ schedule: s.id, run: run.id, err: (err as Error).message }, "schedule run ended but its record is gone or already ended");
        return;
      }
      throw err;
    }
  }

  /** Runs left "running" by a manager that is gone: failed, ManagerRestarted. */
  async #recover(): Promise<void> {
    try {
      for (const r of await this.#d.store.runningScheduleRuns()) {
        if (this.#runs.has(r.id) || (r.holder !== this.#d.holder && (await this.#d.isHolderLive(r.holder)))) continue;
        if (r.holder === this.#d.holder) continue;
        const s = await this.#d.store.getSchedule(r.scheduleId);
        const message = "the manager running it stopped before the run ended; tasks may have run partly";
        try {
          await this.#d.store.commit([
            { op: "scheduleRun.finish", id: r.id, finish: { finishedAt: this.#now(), outcome: "failed", reason: "ManagerRestarted", message, targets: r.targets } },
            this.#d.ledger.op({
              type: "schedule.run_failed",
              ...(s ? { project: s.project } : {}),
              correlationId: r.scheduleId,
              actor: `schedule:${r.scheduleId}`,
              reason: "ManagerRestarted",
              message: `schedule "${s?.name ?? r.scheduleId}": run ${r.id} failed: ${message}`,
              payload: { runId: r.id, trigger: r.trigger, scheduledFor: new Date(r.scheduledFor).toISOString(), targets: r.targets },
            }),
          ]);
        } catch (err) {
          if (!(err instanceof ConflictError || err instanceof NotFoundError)) throw err;
        }
      }
    } catch (err) {
      this.#d.log.warn({ err }, "could not mark schedule runs of stopped managers failed; trying at the next start");
    }
  }
}
