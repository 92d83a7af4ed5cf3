import { Cron } from "croner";
import { InvalidArgumentError } from "../errors.js";

/**
 * Cron expressions of schedules (docs/schedules.md): five fields, minute hour
 * day-of-month month day-of-week, or a nickname (@daily, ...), read in an IANA
 * time zone. croner does the arithmetic, DST included; this file checks
 * expressions first so a mistake is reported by field with what it allows,
 * and says them in English.
 */

/** One field of a five-field expression. */
interface CronField {
  readonly name: string;
  readonly min: number;
  readonly max: number;
  /** Names allowed for numbers (JAN=1, SUN=0), upper case. */
  readonly names?: Readonly<Record<string, number>>;
  /** What else croner allows in the field (checked by croner). */
  readonly special?: RegExp;
  readonly allowed: string;
}

const MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const MONTH_NAMES = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
const DAY_NAMES = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

const FIELDS: readonly CronField[] = [
  { name: "minute", min: 0, max: 59, allowed: "0-59" },
  { name: "hour", min: 0, max: 23, allowed: "0-23" },
  { name: "day-of-month", min: 1, max: 31, special: /[LW]/i, allowed: "1-31, L (last day) or nW (nearest weekday)" },
  { name: "month", min: 1, max: 12, names: Object.fromEntries(MONTHS.map((m, i) => [m, i + 1])), allowed: "1-12 or JAN-DEC" },
  {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: Object.fromEntries(DAYS.map((d, i) => [d, i])),
    special: /[L#+]/i,
    allowed: "0-7 (0 and 7 are Sunday), SUN-SAT, d#n (nth weekday) or dL (last weekday)",
  },
];

/** The nicknames croner expands, and what they stand for. */
export const CRON_NICKNAMES: Readonly<Record<string, string>> = {
  "@yearly": "0 0 1 1 *",
  "@annually": "0 0 1 1 *",
  "@monthly": "0 0 1 * *",
  "@weekly": "0 0 * * 0",
  "@daily": "0 0 * * *",
  "@midnight": "0 0 * * *",
  "@hourly": "0 * * * *",
};

const FORMAT = "five fields, minute hour day-of-month month day-of-week (e.g. 0 4 * * * for 04:00 every day), or @hourly, @daily, @weekly, @monthly or @yearly";

/** A checked expression in its zone, ready for next-run arithmetic. */
export interface ParsedCron {
  /** As given, trimmed, whitespace collapsed. */
  readonly expression: string;
  /** The canonical IANA name ("UTC" for empty). */
  readonly timeZone: string;
  readonly cron: Cron;
}

/**
 * Checks an IANA time zone and returns its canonical name ("UTC" for empty).
 * UTC offsets such as +01:00 are refused: a zone has the DST rules.
 * @throws InvalidArgumentError naming `field`
 */
export function checkTimeZone(timeZone: string, field = "time_zone"): string {
  const tz = timeZone.trim();
  if (tz === "") return "UTC";
  if (/^[+-]\d/.test(tz) || /^(UTC|GMT)[+-]/i.test(tz)) {
    throw new InvalidArgumentError(field, `"${tz}" is an offset, not a time zone: use an IANA zone such as Europe/Berlin or America/New_York, whose DST rules berth follows`);
  }
  try {
    return new Intl.DateTimeFormat("en-US", { timeZone: tz }).resolvedOptions().timeZone;
  } catch {
    throw new InvalidArgumentError(field, `unknown time zone "${tz}": use an IANA zone such as Europe/Berlin, America/New_York or UTC`);
  }
}

/** Checks one field's value, throwing a message that names the field. */
function checkField(field: CronField, text: string): void {
  const bad = (why: string): never => {
    throw new Error(`${field.name} field "${text}": ${why}; it allows ${field.allowed}, *, lists (a,b), ranges (a-b) and steps (*/n, a-b/n)`);
  };
  const number = (token: string): number => {
    const named = field.names?.[token.toUpperCase()];
    if (named !== undefined) return named;
    if (!/^\d+$/.test(token)) bad(`"${token}" is not a number`);
    const n = Number(token);
    if (n < field.min || n > field.max) bad(`${n} is out of range`);
    return n;
  };
  for (const item of text.split(",")) {
    if (item === "") bad("an empty list item");
    // croner's extensions (L, W, #, +) are checked by croner itself.
    if (field.special?.test(item)) continue;
    const m = /^([^/]+)(?:\/(.*))?$/.exec(item);
    if (!m) bad(`"${item}" is not understood`);
    const [, base, step] = m!;
    if (step !== undefined) {
      if (!/^\d+$/.test(step) || Number(step) < 1) bad(`the step in "${item}" must be a whole number of at least 1`);
      if (Number(step) > field.max - field.min + 1) bad(`the step ${step} is larger than the field's range`);
    }
    if (base === "*" || base === "?") continue;
    const range = base!.split("-");
    if (range.length > 2) bad(`"${base}" is not a range a-b`);
    const lo = number(range[0]!);
    if (range.length === 2) {
      const hi = number(range[1]!);
      if (lo > hi) bad(`the range ${base} goes backwards`);
    } else if (step !== undefined) {
      bad(`a step needs * or a range before it (*/${step} or ${base}-${field.max}/${step})`);
    }
  }
}

/** The five fields of an expression, nicknames expanded. Throws Error with the reason. */
function fieldsOf(expression: string): string[] {
  if (expression.startsWith("@")) {
    const fields = CRON_NICKNAMES[expression.toLowerCase()];
    if (!fields) {
      throw new Error(`unknown nickname "${expression}"${expression.toLowerCase() === "@reboot" ? " (@reboot has no time: berth runs schedules on a clock)" : ""}; use ${FORMAT}`);
    }
    return fields.split(" ");
  }
  const parts = expression.split(" ");
  if (parts.length !== 5) {
    throw new Error(
      `${parts.length} field${parts.length === 1 ? "" : "s"} given; use ${FORMAT}${parts.length === 6 ? " (a seconds field is not supported)" : ""}`,
    );
  }
  parts.forEach((p, i) => checkField(FIELDS[i]!, p));
  return parts;
}

/**
 * Checks a cron expression and time zone and readies them for next-run
 * arithmetic.
 * @throws InvalidArgumentError on `cron_field` or `zone_field`, saying which cron field is wrong and what it allows.
 */
export function parseCron(expression: string, timeZone: string, fields: { cron?: string; timeZone?: string } = {}): ParsedCron {
  const cronField = fields.cron ?? "cron";
  const expr = expression.trim().replace(/\s+/g, " ");
  if (expr === "") throw new InvalidArgumentError(cronField, `empty; use ${FORMAT}`);
  try {
    fieldsOf(expr);
  } catch (e) {
    throw new InvalidArgumentError(cronField, `"${expr}": ${(e as Error).message}`);
  }
  const tz = checkTimeZone(timeZone, fields.timeZone ?? "time_zone");
  try {
    // paused: a pattern to compute with, never a timer.
    const cron = new Cron(expr, { timezone: tz, mode: "5-part", paused: true });
    return { expression: expr, timeZone: tz, cron };
  } catch (e) {
    const why = (e as Error).message.replace(/^CronPattern:\s*/, "").replace(/\.$/, "");
    throw new InvalidArgumentError(cronField, `"${expr}": ${why} (docs/schedules.md lists the syntax)`);
  }
}

/**
 * The first `n` run times strictly after `after` (ms since the epoch), in
 * real time. DST (croner's rules, as Vixie cron): a time of day a
 * spring-forward skips runs at the first time after the gap (for an
 * expression with one minute and one hour), and a time of day a fall-back
 * repeats runs once, at its first occurrence; expressions with steps, lists or
 * ranges in minute or hour skip the gap and run in both passes of the
 * repeated hour.
 */
export function nextRuns(parsed: ParsedCron, after: number, n: number): number[] {
  return parsed.cron.nextRuns(n, new Date(after)).map((d) => d.getTime());
}

/** The next run time strictly after `after`, or undefined when there is none (e.g. 30 February). */
export function nextRun(parsed: ParsedCron, after: number): number | undefined {
  return nextRuns(parsed, after, 1)[0];
}

/** The latest run time at or before `at`, or undefined. */
export function previousRun(parsed: ParsedCron, at: number): number | undefined {
  // croner's previousRuns is strictly before its reference: step one ms past `at`.
  return parsed.cron.previousRuns(1, new Date(at + 1))[0]?.getTime();
}

// ---- English ---------------------------------------------------------------

const pad = (n: number) => String(n).padStart(2, "0");
const plain = (s: string) => /^\d+$/.test(s);

/** "a", "a and b", "a, b and c". */
function joinAnd(items: string[]): string {
  return items.length <= 1 ? (items[0] ?? "") : `${items.slice(0, -1).join(", ")} and ${items.at(-1)}`;
}

/** A list of plain numbers ("1,15"), or undefined. */
function numbers(field: string, names?: Readonly<Record<string, number>>): number[] | undefined {
  const out: number[] = [];
  for (const item of field.split(",")) {
    const named = names?.[item.toUpperCase()];
    if (named !== undefined) out.push(named);
    else if (plain(item)) out.push(Number(item));
    else return undefined;
  }
  return out;
}

/** "Monday", "Monday and Friday", "Monday through Friday". */
function weekdays(field: string): string | undefined {
  const names = FIELDS[4]!.names;
  const range = /^(\w+)-(\w+)$/.exec(field);
  if (range) {
    const [a, b] = [numbers(range[1]!, names)?.[0], numbers(range[2]!, names)?.[0]];
    if (a === undefined || b === undefined) return undefined;
    if (a === 1 && b === 5) return "on weekdays";
    return `on ${DAY_NAMES[a]} through ${DAY_NAMES[b]}`;
  }
  const list = numbers(field, names);
  if (!list) return undefined;
  if (list.length === 2 && list.includes(6) && (list.includes(0) || list.includes(7))) return "on weekends";
  return `on ${joinAnd(list.map((d) => DAY_NAMES[d]!))}`;
}

/** When in the day: "At 04:00", "Every 15 minutes", ...; `daily` says whether "every day" should follow. */
function timeOfDay(minute: string, hour: string): { text: string; daily: boolean } | undefined {
  const minuteStep = /^\*\/(\d+)$/.exec(minute);
  const hourStep = /^\*\/(\d+)$/.exec(hour);
  const minutes = numbers(minute);
  const hours = numbers(hour);
  if (minute === "*" && hour === "*") return { text: "Every minute", daily: false };
  if (minuteStep && hour === "*") return { text: minuteStep[1] === "1" ? "Every minute" : `Every ${minuteStep[1]} minutes`, daily: false };
  if (minutes?.length === 1) {
    const m = minutes[0]!;
    if (hour === "*") return { text: m === 0 ? "Every hour, on the hour" : `Every hour at minute ${m}`, daily: false };
    if (hourStep) return { text: `Every ${hourStep[1]} hours at minute ${m} (from 00:${pad(m)})`, daily: false };
    const hourRange = /^(\d+)-(\d+)$/.exec(hour);
    if (hourRange) return { text: `Every hour at minute ${m} from ${pad(+hourRange[1]!)}:${pad(m)} to ${pad(+hourRange[2]!)}:${pad(m)}`, daily: false };
  }
  if (minutes && hours && minutes.length * hours.length <= 6) {
    const times = hours.flatMap((h) => minutes.map((m) => h * 60 + m)).sort((a, b) => a - b);
    return { text: `At ${joinAnd(times.map((t) => `${pad(Math.floor(t / 60))}:${pad(t % 60)}`))}`, daily: true };
  }
  return undefined;
}

/**
 * The expression in English, e.g. "At 04:00 every day", "Every 15 minutes",
 * "At 04:00 on Monday", "At 00:00 on day 1 of the month"; the expression
 * itself for shapes it has no words for (L, W, #, day-of-month together with
 * day-of-week, ...). Expects a checked expression (parseCron).
 */
export function describeCron(expression: string): string {
  const expr = expression.trim().replace(/\s+/g, " ");
  const fields = expr.startsWith("@") ? CRON_NICKNAMES[expr.toLowerCase()]?.split(" ") : expr.split(" ");
  if (!fields || fields.length !== 5) return expr;
  const [minute, hour, dom, month, dow] = fields.map((f) => (f === "?" ? "*" : f)) as [string, string, string, string, string];
  const time = timeOfDay(minute, hour);
  if (!time) return expr;
  let days: string | undefined;
  if (dom === "*" && month === "*" && dow === "*") days = time.daily ? "every day" : "";
  else if (dom === "*" && month === "*") days = weekdays(dow);
  else if (dow === "*") {
    const doms = numbers(dom);
    const months = month === "*" ? undefined : numbers(month, FIELDS[3]!.names);
    if (month !== "*" && !months) return expr;
    if (!doms && dom !== "*") return expr;
    const monthText = months ? joinAnd(months.map((m) => MONTH_NAMES[m - 1]!)) : undefined;
    if (dom === "*") days = `every day in ${monthText}`;
    else if (monthText) days = `on ${joinAnd(doms!.map(String))} ${monthText}`;
    else days = `on day${doms!.length > 1 ? "s" : ""} ${joinAnd(doms!.map(String))} of the month`;
  }
  if (days === undefined) return expr;
  return days ? `${time.text} ${days}` : time.text;
}

/** What PreviewCron answers: the next `count` run times after `now` (0: 5, at most 50), the English and the zone. */
export function previewCron(expression: string, timeZone: string, count: number, now: number): { nextRunTimes: number[]; description: string; timeZone: string } {
  const parsed = parseCron(expression, timeZone);
  const n = count === 0 ? 5 : Math.min(count, 50);
  return { nextRunTimes: nextRuns(parsed, now, n), description: describeCron(parsed.expression), timeZone: parsed.timeZone };
}
