import { describe, expect, it } from "vitest";
import { InvalidArgumentError } from "../errors.js";
import { checkTimeZone, describeCron, nextRuns, parseCron, previewCron, previousRun } from "./cron.js";

const iso = (ms: number[]) => ms.map((t) => new Date(t).toISOString());
const at = (s: string) => Date.parse(s);

function problem(expr: string, tz = "UTC"): InvalidArgumentError {
  try {
    parseCron(expr, tz);
  } catch (e) {
    expect(e).toBeInstanceOf(InvalidArgumentError);
    return e as InvalidArgumentError;
  }
  throw new Error(`"${expr}" in ${tz} was accepted`);
}

describe("parseCron: what is refused, and the message says which field and what it allows", () => {
  it.each([
    ["0 24 * * *", 'hour field "24": 24 is out of range; it allows 0-23'],
    ["60 * * * *", 'minute field "60": 60 is out of range; it allows 0-59'],
    ["0 0 0 * *", 'day-of-month field "0": 0 is out of range; it allows 1-31'],
    ["0 0 32 * *", 'day-of-month field "32": 32 is out of range'],
    ["0 0 * 13 *", 'month field "13": 13 is out of range; it allows 1-12 or JAN-DEC'],
    ["0 0 * * 8", 'day-of-week field "8": 8 is out of range; it allows 0-7 (0 and 7 are Sunday)'],
    ["0 0 * * MOON", 'day-of-week field "MOON": "MOON" is not a number'],
    ["x 0 * * *", 'minute field "x": "x" is not a number'],
    ["0 5-3 * * *", 'hour field "5-3": the range 5-3 goes backwards'],
    ["*/0 * * * *", 'minute field "*/0": the step in "*/0" must be a whole number of at least 1'],
    ["*/61 * * * *", "the step 61 is larger than the field's range"],
    ["5/10 * * * *", "a step needs * or a range before it (*/10 or 5-59/10)"],
    ["0 0,,1 * * *", 'hour field "0,,1": an empty list item'],
    ["0 0 * * * *", "6 fields given; use five fields, minute hour day-of-month month day-of-week"],
    ["0 0 * * * *", "(a seconds field is not supported)"],
    ["0 0 *", "3 fields given"],
    ["@reboot", "@reboot has no time"],
    ["@sometimes", 'unknown nickname "@sometimes"'],
    ["0 0 * * FRI#6", "nth weekday out of range"],
    ["   ", "empty; use five fields"],
  ])("%j: %s", (expr, words) => {
    const e = problem(expr);
    expect(e.field).toBe("cron");
    expect(e.message).toContain(words);
  });

  it("names the request's fields when told them", () => {
    expect(() => parseCron("0 24 * * *", "UTC", { cron: "spec.cron" })).toThrow(/^spec\.cron: "0 24 \* \* \*": hour field/);
    try {
      parseCron("0 4 * * *", "Mars/Olympus", { timeZone: "spec.time_zone" });
      expect.unreachable();
    } catch (e) {
      expect((e as InvalidArgumentError).field).toBe("spec.time_zone");
    }
  });

  it.each([
    "0 4 * * *",
    "*/15 * * * *",
    "0 4 * * MON-FRI",
    "0 4 1,15 * *",
    "0 0 1 JAN *",
    "0 4 L * *",
    "0 4 15W * *",
    "0 4 * * FRI#2",
    "0 4 * * 5L",
    "0 4 1 * +MON",
    "0 4 ? * 7",
    "0 9-17/2 * * *",
    "@daily",
    "@HOURLY",
  ])("accepts %j", (expr) => {
    expect(parseCron(expr, "UTC").expression).toBe(expr);
  });

  it("day of month OR day of week, as classic cron; + before the day of week makes it AND", () => {
    const after = at("2026-01-01T12:00:00Z"); // a Thursday; 1 June is the first 1st of 2026 that is a Monday
    expect(iso(nextRuns(parseCron("0 4 1 * 1", "UTC"), after, 2))).toEqual(["2026-01-05T04:00:00.000Z", "2026-01-12T04:00:00.000Z"]);
    expect(iso(nextRuns(parseCron("0 4 1 * +1", "UTC"), after, 1))).toEqual(["2026-06-01T04:00:00.000Z"]);
  });

  it("collapses whitespace", () => {
    expect(parseCron("  0   4 * *\t*  ", "UTC").expression).toBe("0 4 * * *");
  });
});

describe("checkTimeZone", () => {
  it.each([
    ["", "UTC"],
    ["UTC", "UTC"],
    ["Europe/Berlin", "Europe/Berlin"],
    ["europe/berlin", "Europe/Berlin"],
    ["America/New_York", "America/New_York"],
  ])("%j is %j", (tz, canonical) => {
    expect(checkTimeZone(tz)).toBe(canonical);
  });

  it.each([
    ["Mars/Olympus", 'unknown time zone "Mars/Olympus": use an IANA zone such as Europe/Berlin'],
    ["+01:00", '"+01:00" is an offset, not a time zone'],
    ["UTC+2", '"UTC+2" is an offset, not a time zone'],
  ])("refuses %j", (tz, words) => {
    expect(() => checkTimeZone(tz)).toThrow(words);
  });
});

describe("nextRuns", () => {
  it("reads the expression in its zone", () => {
    const after = at("2026-01-05T00:00:00Z"); // a Monday, winter (CET = UTC+1, EST = UTC-5)
    expect(iso(nextRuns(parseCron("0 4 * * *", "Europe/Berlin"), after, 2))).toEqual(["2026-01-05T03:00:00.000Z", "2026-01-06T03:00:00.000Z"]);
    expect(iso(nextRuns(parseCron("0 4 * * *", "America/New_York"), after, 1))).toEqual(["2026-01-05T09:00:00.000Z"]);
    expect(iso(nextRuns(parseCron("0 4 * * *", ""), after, 1))).toEqual(["2026-01-05T04:00:00.000Z"]);
    expect(iso(nextRuns(parseCron("*/15 * * * *", "UTC"), after, 3))).toEqual(["2026-01-05T00:15:00.000Z", "2026-01-05T00:30:00.000Z", "2026-01-05T00:45:00.000Z"]);
    expect(iso(nextRuns(parseCron("0 4 * * 1", "UTC"), at("2026-01-05T05:00:00Z"), 1))).toEqual(["2026-01-12T04:00:00.000Z"]);
  });

  it("is strictly after its start; previousRun is at or before", () => {
    const p = parseCron("0 4 * * *", "UTC");
    expect(iso(nextRuns(p, at("2026-01-05T04:00:00Z"), 1))).toEqual(["2026-01-06T04:00:00.000Z"]);
    expect(iso([previousRun(p, at("2026-01-05T04:00:00Z"))!])).toEqual(["2026-01-05T04:00:00.000Z"]);
    expect(iso([previousRun(p, at("2026-01-05T03:59:59.999Z"))!])).toEqual(["2026-01-04T04:00:00.000Z"]);
  });

  it("DST spring forward (Europe/Berlin, 29 March 2026, 02:00 -> 03:00): a 02:30 run runs at 03:00 that day, once", () => {
    const runs = nextRuns(parseCron("30 2 * * *", "Europe/Berlin"), at("2026-03-28T12:00:00Z"), 3);
    // 28 March is CET: the 29th's 02:30 does not exist, the first time after the gap is 03:00 CEST (01:00Z).
    expect(iso(runs)).toEqual(["2026-03-29T01:00:00.000Z", "2026-03-30T00:30:00.000Z", "2026-03-31T00:30:00.000Z"]);
  });

  it("DST spring forward: an every-30-minutes schedule skips the missing hour", () => {
    const runs = nextRuns(parseCron("*/30 * * * *", "Europe/Berlin"), at("2026-03-29T00:15:00Z"), 3);
    // 01:30 CET (00:30Z), then 03:00 CEST (01:00Z): 02:00 and 02:30 do not exist.
    expect(iso(runs)).toEqual(["2026-03-29T00:30:00.000Z", "2026-03-29T01:00:00.000Z", "2026-03-29T01:30:00.000Z"]);
  });

  it("DST fall back (America/New_York, 1 November 2026, 02:00 -> 01:00): a 01:30 run runs once, at the first 01:30", () => {
    const runs = nextRuns(parseCron("30 1 * * *", "America/New_York"), at("2026-10-31T12:00:00Z"), 3);
    // 01:30 EDT (05:30Z) runs; 01:30 EST (06:30Z), an hour later, does not.
    expect(iso(runs)).toEqual(["2026-11-01T05:30:00.000Z", "2026-11-02T06:30:00.000Z", "2026-11-03T06:30:00.000Z"]);
  });

  it("DST fall back: an every-30-minutes schedule runs in both passes of the repeated hour", () => {
    const runs = nextRuns(parseCron("*/30 * * * *", "Europe/Berlin"), at("2026-10-24T23:45:00Z"), 4);
    // 02:00 and 02:30 CEST (00:00Z, 00:30Z), then 02:00 and 02:30 again in CET (01:00Z, 01:30Z).
    expect(iso(runs)).toEqual(["2026-10-25T00:00:00.000Z", "2026-10-25T00:30:00.000Z", "2026-10-25T01:00:00.000Z", "2026-10-25T01:30:00.000Z"]);
  });

  it("DST fall back (Europe/Berlin, 25 October 2026, 03:00 -> 02:00): a 02:30 run runs once", () => {
    const runs = nextRuns(parseCron("30 2 * * *", "Europe/Berlin"), at("2026-10-24T12:00:00Z"), 2);
    expect(iso(runs)).toEqual(["2026-10-25T00:30:00.000Z", "2026-10-26T01:30:00.000Z"]);
  });
});

describe("describeCron", () => {
  it.each([
    ["0 4 * * *", "At 04:00 every day"],
    ["@daily", "At 00:00 every day"],
    ["@midnight", "At 00:00 every day"],
    ["*/15 * * * *", "Every 15 minutes"],
    ["* * * * *", "Every minute"],
    ["*/1 * * * *", "Every minute"],
    ["0 4 * * 1", "At 04:00 on Monday"],
    ["0 4 * * MON", "At 04:00 on Monday"],
    ["0 4 * * 0", "At 04:00 on Sunday"],
    ["0 4 * * 7", "At 04:00 on Sunday"],
    ["@weekly", "At 00:00 on Sunday"],
    ["0 4 * * 1,5", "At 04:00 on Monday and Friday"],
    ["0 4 * * 1-5", "At 04:00 on weekdays"],
    ["0 4 * * MON-FRI", "At 04:00 on weekdays"],
    ["0 4 * * 2-4", "At 04:00 on Tuesday through Thursday"],
    ["0 10 * * 0,6", "At 10:00 on weekends"],
    ["30 4,16 * * *", "At 04:30 and 16:30 every day"],
    ["0,30 9 * * *", "At 09:00 and 09:30 every day"],
    ["5 * * * *", "Every hour at minute 5"],
    ["@hourly", "Every hour, on the hour"],
    ["5 */2 * * *", "Every 2 hours at minute 5 (from 00:05)"],
    ["0 9-17 * * 1-5", "Every hour at minute 0 from 09:00 to 17:00 on weekdays"],
    ["*/10 * * * 6", "Every 10 minutes on Saturday"],
    ["0 0 1 * *", "At 00:00 on day 1 of the month"],
    ["@monthly", "At 00:00 on day 1 of the month"],
    ["0 4 1,15 * *", "At 04:00 on days 1 and 15 of the month"],
    ["@yearly", "At 00:00 on 1 January"],
    ["0 12 25 DEC *", "At 12:00 on 25 December"],
    ["0 4 * 7 *", "At 04:00 every day in July"],
    // Shapes without words: the expression itself.
    ["0 4 L * *", "0 4 L * *"],
    ["0 4 * * FRI#2", "0 4 * * FRI#2"],
    ["0 4 1 * 1", "0 4 1 * 1"],
    ["*/5 9-17 * * *", "*/5 9-17 * * *"],
    ["0,15,30,45 0,6,12,18 * * *", "0,15,30,45 0,6,12,18 * * *"],
  ])("%j: %j", (expr, words) => {
    parseCron(expr, "UTC");
    expect(describeCron(expr)).toBe(words);
  });
});

describe("previewCron", () => {
  it("answers the next runs after now, the English and the canonical zone; 0 means 5", () => {
    const p = previewCron("0 4 * * 1", "europe/berlin", 0, at("2026-01-05T12:00:00Z"));
    expect(p.description).toBe("At 04:00 on Monday");
    expect(p.timeZone).toBe("Europe/Berlin");
    expect(iso(p.nextRunTimes)).toEqual(["2026-01-12T03:00:00.000Z", "2026-01-19T03:00:00.000Z", "2026-01-26T03:00:00.000Z", "2026-02-02T03:00:00.000Z", "2026-02-09T03:00:00.000Z"]);
    expect(previewCron("@hourly", "", 2, at("2026-01-05T12:00:00Z")).nextRunTimes).toHaveLength(2);
  });

  it("refuses what parseCron refuses", () => {
    expect(() => previewCron("0 4 * * *", "Nowhere/Town", 5, 0)).toThrow(/unknown time zone "Nowhere\/Town"/);
  });
});
