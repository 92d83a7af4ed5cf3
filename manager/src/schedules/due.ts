import { nextRun, parseCron, previousRun, type ParsedCron } from "./cron.js";

/**
 * What a schedule should do now: the pure decision the schedule loop makes on
 * every pass, and once at start after the manager was down (docs/schedules.md,
 * "Exactly once, and missed runs").
 *
 *   last recorded tick ──┬── ticks since ──┬── the latest one ≤ now
 *   (or activeSince)     │                 │
 *                        │   older ones:   │  ≤ 60 s late: run (tick)
 *                        │   ONE missed    │  ≤ grace late: run (catch_up)
 *                        │   record        │  older: part of the missed record
 *
 * At most one run per pass, never a burst; every run and missed record has a
 * tick id that the store keeps unique, so a pass repeated after a crash (or
 * by a second manager) cannot run a tick twice.
 */

/** A tick run this late or less is on time (trigger tick), whatever the grace. */
export const ON_TIME_MS = 60_000;
/** Missed ticks are counted up to this many (a per-minute schedule down for weeks): counting is croner arithmetic, ~0.1 ms a tick. */
export const MAX_MISSED_COUNT = 1000;

/** The part of a schedule the decision reads. */
export interface DueSchedule {
  readonly id: string;
  readonly cron: string;
  readonly timeZone: string;
  readonly enabled: boolean;
  readonly missedRunGraceSeconds: number;
  /**
   * Ticks count from here (ms): when the schedule was created, or when its
   * cron, time zone or enabled flag last changed. Ticks before it are neither
   * run nor missed: editing a schedule never triggers a catch-up.
   */
  readonly activeSince: number;
}

export interface DueInput {
  readonly schedule: DueSchedule;
  /** scheduled_for of the schedule's latest tick, catch-up or missed record (ms); undefined: none yet. */
  readonly lastTick: number | undefined;
  /** The injected clock's now (ms). */
  readonly now: number;
}

/** One tick: when it was due and the key that makes it happen once. */
export interface Tick {
  readonly scheduledFor: number;
  /** schedule id + scheduled_for: unique in the store for tick, catch-up and missed records. */
  readonly tickId: string;
}

export interface DuePlan {
  /** The tick to run now, if any. */
  readonly run?: Tick & { readonly trigger: "tick" | "catch_up" };
  /**
   * Ticks that will not run, as one record keyed by the last of them (so the
   * run after it stays newer). Record it before the run.
   */
  readonly missed?: Tick & {
    readonly firstMissed: number;
    /** How many ticks, at most MAX_MISSED_COUNT (then `countCapped`). */
    readonly count: number;
    readonly countCapped: boolean;
  };
  /** The next tick after now (and after the last recorded one); undefined while disabled or when there is none. */
  readonly nextRunTime?: number;
}

/** The unique key of a schedule's tick. */
export function tickId(scheduleId: string, scheduledFor: number): string {
  return `${scheduleId}@${new Date(scheduledFor).toISOString()}`;
}

function tick(scheduleId: string, scheduledFor: number): Tick {
  return { scheduledFor, tickId: tickId(scheduleId, scheduledFor) };
}

/** Ticks from `first` to `last`, both included and both ticks, counted up to MAX_MISSED_COUNT. */
function countTicks(parsed: ParsedCron, first: number, last: number): { count: number; capped: boolean } {
  let count = 1;
  let cursor = first;
  while (cursor < last) {
    if (count >= MAX_MISSED_COUNT) return { count, capped: true };
    const next = nextRun(parsed, cursor);
    if (next === undefined || next > last) break;
    cursor = next;
    count++;
  }
  return { count, capped: false };
}

/**
 * Decides what is due for a schedule at `now`. Pure: the clock, the last
 * recorded tick and the schedule come in; the store records what comes out.
 *
 * - Ticks after max(last recorded tick, activeSince) and at or before now are due.
 * - The latest of them runs if it is at most max(grace, 60 s) late (trigger
 *   tick within 60 s, catch_up after); the others, and the latest too when it
 *   is older, become ONE missed record.
 * - A clock that went back (now before the last tick) finds nothing due, so a
 *   recorded tick is never run again.
 * - Disabled: nothing is due and nothing is missed.
 */
export function dueTicks(input: DueInput): DuePlan {
  const { schedule, lastTick, now } = input;
  if (!schedule.enabled) return {};
  const parsed = parseCron(schedule.cron, schedule.timeZone);
  const from = Math.max(lastTick ?? Number.NEGATIVE_INFINITY, schedule.activeSince);
  const nextRunTime = nextRun(parsed, Math.max(now, from));
  const latest = previousRun(parsed, now);
  if (latest === undefined || latest <= from) return { nextRunTime };
  // The first tick after `from`; at most `latest`, which is after `from`.
  const first = nextRun(parsed, from)!;
  const late = now - latest;
  const window = Math.max(schedule.missedRunGraceSeconds * 1000, ON_TIME_MS);
  const runIt = late <= window;
  const lastMissed = runIt ? (first < latest ? previousRun(parsed, latest - 1) : undefined) : latest;
  const plan: { -readonly [K in keyof DuePlan]: DuePlan[K] } = { nextRunTime };
  if (lastMissed !== undefined) {
    const { count, capped } = countTicks(parsed, first, lastMissed);
    plan.missed = { ...tick(schedule.id, lastMissed), firstMissed: first, count, countCapped: capped };
  }
  if (runIt) plan.run = { ...tick(schedule.id, latest), trigger: late <= ON_TIME_MS ? "tick" : "catch_up" };
  return plan;
}
