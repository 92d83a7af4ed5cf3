import { describe, expect, it } from "vitest";
import { dueTicks, MAX_MISSED_COUNT, tickId, type DuePlan, type DueSchedule } from "./due.js";

const at = (hhmmss: string, day = "2026-01-05") => Date.parse(`${day}T${hhmmss}Z`);
const iso = (ms: number | undefined) => (ms === undefined ? undefined : new Date(ms).toISOString());

function schedule(over: Partial<DueSchedule> = {}): DueSchedule {
  return { id: "sch_1", cron: "0 * * * *", timeZone: "UTC", enabled: true, missedRunGraceSeconds: 1800, activeSince: at("00:00:00", "2026-01-01"), ...over };
}

/** The plan in words, for tables: run and missed as ISO times. */
function summary(p: DuePlan) {
  return {
    run: p.run && `${p.run.trigger} ${iso(p.run.scheduledFor)}`,
    missed: p.missed && `${p.missed.count} from ${iso(p.missed.firstMissed)} to ${iso(p.missed.scheduledFor)}`,
    next: iso(p.nextRunTime),
  };
}

describe("dueTicks (hourly at minute 0, UTC, grace 30 min unless the case says)", () => {
  it.each<[string, Partial<DueSchedule>, string | undefined, string, ReturnType<typeof summary>]>([
    [
      "a normal tick, seen 5 s late, runs",
      {},
      "03:00:00",
      "04:00:05",
      { run: "tick 2026-01-05T04:00:00.000Z", missed: undefined, next: "2026-01-05T05:00:00.000Z" },
    ],
    ["between ticks nothing is due", {}, "04:00:00", "04:30:00", { run: undefined, missed: undefined, next: "2026-01-05T05:00:00.000Z" }],
    [
      "the pass after the run was recorded runs nothing again (exactly once)",
      {},
      "04:00:00",
      "04:00:30",
      { run: undefined, missed: undefined, next: "2026-01-05T05:00:00.000Z" },
    ],
    [
      "manager down for 3 ticks, back inside the grace: ONE catch-up run of the latest, the 2 older missed",
      {},
      "01:00:00",
      "04:10:00",
      { run: "catch_up 2026-01-05T04:00:00.000Z", missed: "2 from 2026-01-05T02:00:00.000Z to 2026-01-05T03:00:00.000Z", next: "2026-01-05T05:00:00.000Z" },
    ],
    [
      "manager down for 3 ticks, back outside the grace: no run, all 3 missed in one record",
      {},
      "01:00:00",
      "04:45:00",
      { run: undefined, missed: "3 from 2026-01-05T02:00:00.000Z to 2026-01-05T04:00:00.000Z", next: "2026-01-05T05:00:00.000Z" },
    ],
    [
      "down for exactly one tick, inside the grace: a catch-up, nothing missed",
      {},
      "03:00:00",
      "04:20:00",
      { run: "catch_up 2026-01-05T04:00:00.000Z", missed: undefined, next: "2026-01-05T05:00:00.000Z" },
    ],
    [
      "grace 0: a tick is still run if at most 60 s late",
      { missedRunGraceSeconds: 0 },
      "03:00:00",
      "04:01:00",
      { run: "tick 2026-01-05T04:00:00.000Z", missed: undefined, next: "2026-01-05T05:00:00.000Z" },
    ],
    [
      "grace 0: a tick 61 s late is missed",
      { missedRunGraceSeconds: 0 },
      "03:00:00",
      "04:01:01",
      { run: undefined, missed: "1 from 2026-01-05T04:00:00.000Z to 2026-01-05T04:00:00.000Z", next: "2026-01-05T05:00:00.000Z" },
    ],
    [
      "the clock jumped back before the last tick: nothing runs, the next run is after the last tick",
      {},
      "04:00:00",
      "02:30:00",
      { run: undefined, missed: undefined, next: "2026-01-05T05:00:00.000Z" },
    ],
    [
      "the clock jumped back, still after the last tick: nothing runs twice",
      {},
      "04:00:00",
      "04:00:00",
      { run: undefined, missed: undefined, next: "2026-01-05T05:00:00.000Z" },
    ],
    [
      "cron edited at 10:05 to 0 10 * * * (last tick 04:00 of the old cron): today's 10:00 is before the edit, not a catch-up",
      { cron: "0 10 * * *", activeSince: at("10:05:00") },
      "04:00:00",
      "10:06:00",
      { run: undefined, missed: undefined, next: "2026-01-06T10:00:00.000Z" },
    ],
    [
      "cron edited at 03:20 to 30 * * * *: its first tick is 03:30",
      { cron: "30 * * * *", activeSince: at("03:20:00") },
      "03:00:00",
      "03:30:10",
      { run: "tick 2026-01-05T03:30:00.000Z", missed: undefined, next: "2026-01-05T04:30:00.000Z" },
    ],
    [
      "re-enabled at 04:30 after being off since before 01:00: the ticks while off are neither run nor missed",
      { activeSince: at("04:30:00") },
      "00:00:00",
      "04:31:00",
      { run: undefined, missed: undefined, next: "2026-01-05T05:00:00.000Z" },
    ],
    ["disabled: nothing due, nothing missed, no next run", { enabled: false }, "01:00:00", "04:45:00", { run: undefined, missed: undefined, next: undefined }],
    [
      "a new schedule (no run yet) created at 03:20: its first tick is 04:00",
      { activeSince: at("03:20:00") },
      undefined,
      "03:20:30",
      { run: undefined, missed: undefined, next: "2026-01-05T04:00:00.000Z" },
    ],
    [
      "a new schedule, first tick",
      { activeSince: at("03:20:00") },
      undefined,
      "04:00:02",
      { run: "tick 2026-01-05T04:00:00.000Z", missed: undefined, next: "2026-01-05T05:00:00.000Z" },
    ],
    [
      "in a time zone: 0 4 * * * in Europe/Berlin is 03:00Z in winter",
      { cron: "0 4 * * *", timeZone: "Europe/Berlin" },
      "03:00:00",
      "03:00:10",
      { run: undefined, missed: undefined, next: "2026-01-06T03:00:00.000Z" },
    ],
  ])("%s", (_, over, last, now, want) => {
    expect(summary(dueTicks({ schedule: schedule(over), lastTick: last === undefined ? undefined : at(last), now: at(now) }))).toEqual(want);
  });

  it("a tick's id is the schedule and its time: the same tick always gets the same key", () => {
    const plan = dueTicks({ schedule: schedule(), lastTick: at("01:00:00"), now: at("04:10:00") });
    expect(plan.run?.tickId).toBe("sch_1@2026-01-05T04:00:00.000Z");
    expect(plan.missed?.tickId).toBe("sch_1@2026-01-05T03:00:00.000Z");
    expect(tickId("sch_1", at("04:00:00"))).toBe(plan.run?.tickId);
    // The same pass again (the manager crashed before recording anything) decides the same keys.
    expect(dueTicks({ schedule: schedule(), lastTick: at("01:00:00"), now: at("04:12:00") })).toMatchObject({ run: { tickId: plan.run?.tickId }, missed: { tickId: plan.missed?.tickId } });
  });

  it("after the missed record is written but not the run, the next pass still runs the latest tick, and records nothing missed twice", () => {
    const first = dueTicks({ schedule: schedule(), lastTick: at("01:00:00"), now: at("04:10:00") });
    const again = dueTicks({ schedule: schedule(), lastTick: first.missed!.scheduledFor, now: at("04:11:00") });
    expect(summary(again)).toEqual({ run: "catch_up 2026-01-05T04:00:00.000Z", missed: undefined, next: "2026-01-05T05:00:00.000Z" });
  });

  it(`a month down with a per-minute schedule counts at most ${MAX_MISSED_COUNT} missed ticks, in one record`, () => {
    const plan = dueTicks({ schedule: schedule({ cron: "* * * * *", missedRunGraceSeconds: 0 }), lastTick: at("00:00:00", "2026-01-01"), now: at("00:00:30", "2026-02-01") });
    expect(plan.run?.scheduledFor).toBe(at("00:00:00", "2026-02-01"));
    expect(plan.missed).toMatchObject({ count: MAX_MISSED_COUNT, countCapped: true, firstMissed: at("00:01:00", "2026-01-01"), scheduledFor: at("23:59:00", "2026-01-31") });
  });
});

/**
 * The schedule loop in miniature: a pass every `stepMs` from `start` to `end`,
 * recording what each pass decides the way the store will (missed first, then
 * the run; a tick id at most once). The schedule is created at `start`; passes
 * in `down` are skipped (no manager).
 */
function simulate(over: Partial<DueSchedule>, start: number, end: number, stepMs: number, down?: [number, number]) {
  const s = schedule({ ...over, activeSince: start });
  const keys = new Set<string>();
  const runs: string[] = [];
  const missed: string[] = [];
  let lastTick: number | undefined;
  for (let now = start; now <= end; now += stepMs) {
    if (down && now >= down[0] && now < down[1]) continue;
    const plan = dueTicks({ schedule: s, lastTick, now });
    for (const rec of [plan.missed, plan.run]) {
      if (!rec) continue;
      if (keys.has(rec.tickId)) throw new Error(`tick ${rec.tickId} decided twice`);
      keys.add(rec.tickId);
      lastTick = Math.max(lastTick ?? 0, rec.scheduledFor);
    }
    if (plan.missed) missed.push(`${plan.missed.count}..${iso(plan.missed.scheduledFor)}`);
    if (plan.run) runs.push(`${plan.run.trigger} ${iso(plan.run.scheduledFor)}`);
  }
  return { runs, missed };
}

describe("dueTicks over time (passes every 20 s)", () => {
  it("runs every tick of a day exactly once (a pass every 50 s here)", () => {
    const { runs, missed } = simulate({ cron: "*/15 * * * *" }, at("00:00:00"), at("23:59:59"), 50_000);
    expect(runs).toHaveLength(95); // 00:15 .. 23:45: created at 00:00, its first tick is the one after
    expect(missed).toEqual([]);
    expect(new Set(runs).size).toBe(runs.length);
  });

  it("a manager down 01:05-04:10 runs 04:00 once as a catch-up and records 02:00-03:00 as missed, never a burst", () => {
    const { runs, missed } = simulate({}, at("00:30:00"), at("05:30:00"), 20_000, [at("01:05:00"), at("04:10:00")]);
    expect(runs).toEqual(["tick 2026-01-05T01:00:00.000Z", "catch_up 2026-01-05T04:00:00.000Z", "tick 2026-01-05T05:00:00.000Z"]);
    expect(missed).toEqual(["2..2026-01-05T03:00:00.000Z"]);
  });

  it("DST fall back in Europe/Berlin: a 02:30 run runs once on 25 October", () => {
    const s = { cron: "30 2 * * *", timeZone: "Europe/Berlin", missedRunGraceSeconds: 0 };
    const { runs, missed } = simulate(s, at("22:00:00", "2026-10-24"), at("04:00:00", "2026-10-25"), 20_000);
    expect(runs).toEqual(["tick 2026-10-25T00:30:00.000Z"]);
    expect(missed).toEqual([]);
  });

  it("DST spring forward in Europe/Berlin: a 02:30 run runs at 03:00 on 29 March", () => {
    const s = { cron: "30 2 * * *", timeZone: "Europe/Berlin", missedRunGraceSeconds: 0 };
    const { runs, missed } = simulate(s, at("22:00:00", "2026-03-28"), at("04:00:00", "2026-03-29"), 20_000);
    expect(runs).toEqual(["tick 2026-03-29T01:00:00.000Z"]);
    expect(missed).toEqual([]);
  });
});
