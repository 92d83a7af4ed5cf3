/**
 * The schedule editor's form and the schedules tab's words, without React:
 * a form from a ScheduleSpec and back (every problem the page can see itself
 * at once, on its field), the task list's add/remove/move, the manager's
 * field violations on the form's fields, and how runs and times are shown.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  PowerAction,
  ScheduleRunOutcome,
  ScheduleTaskOutcome,
  ScheduleTrigger,
  type ScheduleRun,
  type ScheduleSpec,
  type ScheduleSpecSchema,
  type ScheduleTarget,
  type ScheduleTask,
  type ScheduleTaskSchema,
} from "@berth/proto/berth/v1/schedule_pb.js";
import type { FieldKey, FieldProblem } from "./spec-form-model.js";

export type TaskKind = "console_command" | "power" | "backup" | "wait";

export const TASK_KINDS: readonly TaskKind[] = ["console_command", "wait", "power", "backup"];
export const TASK_KIND_LABEL: Record<TaskKind, string> = { console_command: "Console command", power: "Power action", backup: "Backup", wait: "Wait" };
export const POWER_ACTIONS: readonly PowerAction[] = [PowerAction.START, PowerAction.STOP, PowerAction.RESTART, PowerAction.REBUILD];
export const POWER_LABEL: Record<PowerAction, string> = {
  [PowerAction.UNSPECIFIED]: "—",
  [PowerAction.START]: "start",
  [PowerAction.STOP]: "stop",
  [PowerAction.RESTART]: "restart",
  [PowerAction.REBUILD]: "rebuild",
};

/** The contract's bounds (schedule.proto). */
export const MAX_TASKS = 50;
export const MAX_WAIT_SECONDS = 3600;
const NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** One row of the task list. `key` stays with the row when it moves (React's key); every kind's value is kept while another kind is chosen. */
export interface TaskRow {
  key: number;
  kind: TaskKind;
  command: string;
  action: PowerAction;
  backupTarget: string;
  backupLive: boolean;
  seconds: string;
  continueOnFailure: boolean;
}

export interface ScheduleForm {
  name: string;
  cron: string;
  timeZone: string;
  enabled: boolean;
  onlyWhenRunning: boolean;
  /** Not edited here; kept as it was so that an update does not change it. */
  missedRunGraceSeconds: number;
  tasks: TaskRow[];
}

let nextKey = 1;

export function newTask(kind: TaskKind = "console_command"): TaskRow {
  return { key: nextKey++, kind, command: "", action: PowerAction.RESTART, backupTarget: "", backupLive: false, seconds: "60", continueOnFailure: false };
}

/** A new schedule: every day at 04:00 in the browser's zone, enabled, one console command. */
export function emptyScheduleForm(zone = "UTC"): ScheduleForm {
  return { name: "", cron: "0 4 * * *", timeZone: zone, enabled: true, onlyWhenRunning: false, missedRunGraceSeconds: 0, tasks: [newTask()] };
}

function rowOfTask(t: ScheduleTask): TaskRow {
  const row = { ...newTask(), continueOnFailure: t.continueOnFailure };
  const k = t.kind;
  if (k.case === "consoleCommand") return { ...row, kind: "console_command", command: k.value.command };
  if (k.case === "power") return { ...row, kind: "power", action: k.value.action };
  if (k.case === "backup") return { ...row, kind: "backup", backupTarget: k.value.target, backupLive: k.value.live };
  if (k.case === "wait") return { ...row, kind: "wait", seconds: String(k.value.seconds) };
  return row;
}

export function formFromSchedule(spec: ScheduleSpec): ScheduleForm {
  return {
    name: spec.name,
    cron: spec.cron,
    timeZone: spec.timeZone || "UTC",
    enabled: spec.enabled,
    onlyWhenRunning: spec.onlyWhenRunning,
    missedRunGraceSeconds: spec.missedRunGraceSeconds,
    tasks: spec.tasks.map(rowOfTask),
  };
}

function taskOfRow(r: TaskRow, i: number, problems: FieldProblem[]): MessageInitShape<typeof ScheduleTaskSchema> {
  const base = { continueOnFailure: r.continueOnFailure };
  switch (r.kind) {
    case "console_command": {
      const command = r.command.trim();
      if (command === "") problems.push({ field: `tasks.${i}.command`, message: "write the console line to send (e.g. say Restarting in 60 seconds)" });
      else if (/[\r\n\0]/.test(r.command)) problems.push({ field: `tasks.${i}.command`, message: "one line: no line breaks" });
      else if (new TextEncoder().encode(command).length > 4096) problems.push({ field: `tasks.${i}.command`, message: "at most 4096 bytes" });
      return { ...base, kind: { case: "consoleCommand", value: { command } } };
    }
    case "power":
      if (!POWER_ACTIONS.includes(r.action)) problems.push({ field: `tasks.${i}.action`, message: "choose start, stop, restart or rebuild" });
      return { ...base, kind: { case: "power", value: { action: r.action } } };
    case "backup":
      return { ...base, kind: { case: "backup", value: { target: r.backupTarget.trim(), live: r.backupLive } } };
    case "wait": {
      const t = r.seconds.trim();
      const n = /^\d+$/.test(t) ? Number(t) : NaN;
      if (!(n >= 1 && n <= MAX_WAIT_SECONDS)) problems.push({ field: `tasks.${i}.seconds`, message: `wait 1 to ${MAX_WAIT_SECONDS} seconds, a whole number; for a longer pause, add several waits` });
      return { ...base, kind: { case: "wait", value: { seconds: Number.isFinite(n) ? n : 0 } } };
    }
  }
}

/**
 * The servers a schedule runs on, in words, seen from server `serverId`'s
 * drawer: undefined for that server alone (the usual case), otherwise the
 * selector's labels ("servers labelled tier=prod") or the whole project.
 */
export function describeTarget(target: ScheduleTarget | undefined, serverId: string): string | undefined {
  const k = target?.kind;
  if (!k || (k.case === "serverId" && k.value === serverId)) return undefined;
  if (k.case === "serverId") return `server ${k.value}`;
  if (k.case !== "selector") return undefined;
  const pairs = Object.entries(k.value.labels).sort(([a], [b]) => a.localeCompare(b)).map(([key, v]) => `${key}=${v}`);
  return pairs.length === 0 ? "every server of the project" : `every server labelled ${pairs.join(", ")}`;
}

/**
 * What the form would send, and every problem the page sees in it (empty:
 * send it). `target`: a new schedule's server id, or the edited schedule's
 * own target (kept as it is: a selector stays a selector).
 */
export function specFromScheduleForm(f: ScheduleForm, target: string | ScheduleTarget): { spec: MessageInitShape<typeof ScheduleSpecSchema>; problems: FieldProblem[] } {
  const problems: FieldProblem[] = [];
  const name = f.name.trim();
  if (!NAME_RE.test(name)) problems.push({ field: "name", message: "use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. nightly-restart)" });
  const cron = f.cron.trim();
  if (cron === "") problems.push({ field: "cron", message: 'write a cron expression, e.g. "0 4 * * *" (04:00 every day) or @daily' });
  if (f.tasks.length === 0) problems.push({ field: "tasks", message: "add a task: a schedule runs 1 to 50 tasks in order" });
  if (f.tasks.length > MAX_TASKS) problems.push({ field: "tasks", message: `at most ${MAX_TASKS} tasks` });
  const tasks = f.tasks.map((r, i) => taskOfRow(r, i, problems));
  return {
    spec: {
      name,
      target: typeof target === "string" ? { kind: { case: "serverId", value: target } } : target,
      cron,
      timeZone: f.timeZone.trim(),
      enabled: f.enabled,
      onlyWhenRunning: f.onlyWhenRunning,
      missedRunGraceSeconds: f.missedRunGraceSeconds,
      tasks,
    },
    problems,
  };
}

/** The task list with row `i` moved by `delta` (-1 up, +1 down); unchanged at either end. */
export function moveTask<T>(tasks: readonly T[], i: number, delta: -1 | 1): T[] {
  const j = i + delta;
  if (i < 0 || i >= tasks.length || j < 0 || j >= tasks.length) return [...tasks];
  const out = [...tasks];
  [out[i], out[j]] = [out[j]!, out[i]!];
  return out;
}

export function removeTask<T>(tasks: readonly T[], i: number): T[] {
  return tasks.filter((_, k) => k !== i);
}

const SPEC_FIELD: Record<string, FieldKey> = { name: "name", cron: "cron", time_zone: "timeZone", enabled: "enabled", only_when_running: "onlyWhenRunning", tasks: "tasks" };
const TASK_FIELD: Record<string, FieldKey> = { console_command: "command", power: "action", backup: "backupTarget", wait: "seconds" };

/**
 * The form field a path of the manager names: "spec.cron" and PreviewCron's
 * "cron" → "cron", "spec.time_zone" → "timeZone", "spec.tasks[2].wait.seconds"
 * → "tasks.2.seconds", "spec.tasks" → "tasks". Undefined: no field of the form.
 */
export function fieldOfSchedulePath(path: string): FieldKey | undefined {
  const m = /^(?:spec\.)?([a-z_]+)(?:\[(\d+)\](?:\.([a-z_]+))?)?/.exec(path);
  if (!m) return undefined;
  const [, head, index, sub] = m;
  if (head === "tasks" && index !== undefined) return sub && TASK_FIELD[sub] ? `tasks.${index}.${TASK_FIELD[sub]}` : `tasks.${index}`;
  return SPEC_FIELD[head!];
}

/**
 * The problems of a manager's InvalidArgument answer on the form's fields:
 * each field violation (else the message, by the field it starts with);
 * what names no field keeps its path so it still says what it is about.
 */
export function scheduleProblemsOfAnswer(answer: { message: string; violations: readonly { field: string; description: string }[] }): FieldProblem[] {
  if (answer.violations.length === 0) {
    const m = /^([a-z_.[\]0-9]+): /.exec(answer.message);
    const field = m ? fieldOfSchedulePath(m[1]!) : undefined;
    return [{ field, message: field && m ? answer.message.slice(m[0].length) : answer.message }];
  }
  return answer.violations.map((v) => {
    const field = fieldOfSchedulePath(v.field);
    return { field, message: field === undefined ? `${v.field}: ${v.description}` : v.description };
  });
}

function valueAt(f: ScheduleForm, key: FieldKey): unknown {
  const [head, index, cell] = key.split(".");
  if (head === "tasks") {
    if (index === undefined) return f.tasks.map((t) => t.key).join(",");
    const row = f.tasks[Number(index)];
    if (!row) return undefined;
    return cell ? `${row.key}:${row.kind}:${String(row[cell as keyof TaskRow])}` : JSON.stringify(row);
  }
  return (f as unknown as Record<string, unknown>)[head!];
}

/** The problems still standing after an edit: one goes away once its field's value changes (a moved or removed task's too). */
export function problemsAfterScheduleEdit(problems: readonly FieldProblem[], before: ScheduleForm, after: ScheduleForm): readonly FieldProblem[] {
  const left = problems.filter((p) => p.field === undefined || valueAt(before, p.field) === valueAt(after, p.field));
  return left.length === problems.length ? problems : left;
}

/** One line for a task: "console: say hi", "wait 60 s", "restart", "backup (live) to nightly". */
export function taskSummary(t: ScheduleTask): string {
  const k = t.kind;
  const tail = t.continueOnFailure ? " (continue on failure)" : "";
  if (k.case === "consoleCommand") return `console: ${k.value.command}${tail}`;
  if (k.case === "power") return `${POWER_LABEL[k.value.action] ?? "power"}${tail}`;
  if (k.case === "backup") return `backup${k.value.live ? " (live)" : ""}${k.value.target ? ` to ${k.value.target}` : ""}${tail}`;
  if (k.case === "wait") return `wait ${k.value.seconds} s${tail}`;
  return "?";
}

export type Tone = "ok" | "bad" | "busy" | "warn" | "idle";

export function runOutcomeName(o: ScheduleRunOutcome): string {
  switch (o) {
    case ScheduleRunOutcome.RUNNING:
      return "Running";
    case ScheduleRunOutcome.SUCCEEDED:
      return "Succeeded";
    case ScheduleRunOutcome.FAILED:
      return "Failed";
    case ScheduleRunOutcome.SKIPPED_NOT_RUNNING:
      return "Skipped (not running)";
    case ScheduleRunOutcome.MISSED:
      return "Missed";
    default:
      return "Unknown";
  }
}

export function runOutcomeTone(o: ScheduleRunOutcome): Tone {
  if (o === ScheduleRunOutcome.SUCCEEDED) return "ok";
  if (o === ScheduleRunOutcome.FAILED) return "bad";
  if (o === ScheduleRunOutcome.RUNNING) return "busy";
  if (o === ScheduleRunOutcome.MISSED) return "warn";
  return "idle";
}

export function taskOutcomeName(o: ScheduleTaskOutcome): string {
  if (o === ScheduleTaskOutcome.SUCCEEDED) return "succeeded";
  if (o === ScheduleTaskOutcome.FAILED) return "failed";
  if (o === ScheduleTaskOutcome.NOT_RUN) return "not run";
  return "running";
}

export function taskOutcomeTone(o: ScheduleTaskOutcome): Tone {
  if (o === ScheduleTaskOutcome.SUCCEEDED) return "ok";
  if (o === ScheduleTaskOutcome.FAILED) return "bad";
  if (o === ScheduleTaskOutcome.NOT_RUN) return "idle";
  return "busy";
}

export function triggerName(t: ScheduleTrigger): string {
  if (t === ScheduleTrigger.TICK) return "on time";
  if (t === ScheduleTrigger.MANUAL) return "run now";
  if (t === ScheduleTrigger.CATCH_UP) return "caught up";
  return "";
}

/** A run still under way: the history keeps polling while one is. */
export function isRunActive(r: Pick<ScheduleRun, "outcome"> | undefined): boolean {
  return r?.outcome === ScheduleRunOutcome.RUNNING;
}

/** A time as read in `zone`: "Mon 7 Dec 2026, 04:00 CET" (the zone's abbreviation, or its offset). A zone the browser does not know: UTC, said so. */
export function formatInZone(ms: number, zone: string): string {
  const opts: Intl.DateTimeFormatOptions = { weekday: "short", day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZoneName: "short" };
  let fmt: Intl.DateTimeFormat;
  try {
    fmt = new Intl.DateTimeFormat("en-GB", { ...opts, timeZone: zone || "UTC" });
  } catch {
    fmt = new Intl.DateTimeFormat("en-GB", { ...opts, timeZone: "UTC" });
  }
  return fmt.format(new Date(ms));
}

/** Zones for the time zone field's suggestions: the browser's list, else a few common ones; UTC first. */
export function timeZoneChoices(supported?: () => string[]): string[] {
  const common = ["UTC", "Europe/London", "Europe/Berlin", "Europe/Paris", "Europe/Moscow", "America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles", "America/Sao_Paulo", "Asia/Tokyo", "Asia/Shanghai", "Asia/Kolkata", "Asia/Singapore", "Australia/Sydney", "Pacific/Auckland"];
  let all: string[] = [];
  try {
    all = supported?.() ?? [];
  } catch {
    all = [];
  }
  return all.length ? ["UTC", ...all.filter((z) => z !== "UTC")] : common;
}
