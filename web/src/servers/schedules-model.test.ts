import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { PowerAction, ScheduleRunOutcome, ScheduleSpecSchema, ScheduleTargetSchema, ScheduleTaskOutcome, ScheduleTaskSchema } from "@berth/proto/berth/v1/schedule_pb.js";
import {
  describeTarget,
  emptyScheduleForm,
  fieldOfSchedulePath,
  formatInZone,
  formFromSchedule,
  isRunActive,
  moveTask,
  newTask,
  problemsAfterScheduleEdit,
  removeTask,
  runOutcomeName,
  runOutcomeTone,
  scheduleProblemsOfAnswer,
  specFromScheduleForm,
  taskOutcomeTone,
  taskSummary,
  timeZoneChoices,
  type ScheduleForm,
} from "./schedules-model.js";

function form(over: Partial<ScheduleForm> = {}): ScheduleForm {
  return {
    ...emptyScheduleForm("Europe/Berlin"),
    name: "daily-restart",
    tasks: [
      { ...newTask("console_command"), command: "say restarting in 1 minute" },
      { ...newTask("wait"), seconds: "60" },
      { ...newTask("power"), action: PowerAction.RESTART, continueOnFailure: true },
    ],
    ...over,
  };
}

describe("schedule form ↔ spec", () => {
  it("sends every task kind in order, on the server, with its zone and flags", () => {
    const f = form({ tasks: [...form().tasks, { ...newTask("backup"), backupTarget: " nightly ", backupLive: true }], onlyWhenRunning: true, missedRunGraceSeconds: 900 });
    const { spec, problems } = specFromScheduleForm(f, "srv_1");
    expect(problems).toEqual([]);
    const msg = create(ScheduleSpecSchema, spec);
    expect(msg.name).toBe("daily-restart");
    expect(msg.cron).toBe("0 4 * * *");
    expect(msg.timeZone).toBe("Europe/Berlin");
    expect(msg.enabled).toBe(true);
    expect(msg.onlyWhenRunning).toBe(true);
    expect(msg.missedRunGraceSeconds).toBe(900);
    expect(msg.target?.kind).toEqual({ case: "serverId", value: "srv_1" });
    expect(msg.tasks.map(taskSummary)).toEqual(["console: say restarting in 1 minute", "wait 60 s", "restart (continue on failure)", "backup (live) to nightly"]);
  });

  it("reads a stored spec back into the same form (round trip)", () => {
    const { spec } = specFromScheduleForm(form(), "srv_1");
    const back = formFromSchedule(create(ScheduleSpecSchema, spec));
    const strip = (f: ScheduleForm) => ({ ...f, tasks: f.tasks.map(({ key: _k, ...rest }) => rest) });
    expect(strip(back)).toEqual(strip(form()));
    // An empty zone is UTC, as the manager reads it.
    expect(formFromSchedule(create(ScheduleSpecSchema, { ...spec, timeZone: "" })).timeZone).toBe("UTC");
  });

  it("an edited schedule keeps its own target: a selector stays a selector; the drawer says which servers it runs on", () => {
    const selector = create(ScheduleTargetSchema, { kind: { case: "selector", value: { labels: { tier: "prod", game: "mc" } } } });
    expect(specFromScheduleForm(form(), selector).spec.target).toBe(selector);
    expect(specFromScheduleForm(form(), "srv_1").spec.target).toEqual({ kind: { case: "serverId", value: "srv_1" } });
    expect(describeTarget(selector, "srv_1")).toBe("every server labelled game=mc, tier=prod");
    expect(describeTarget(create(ScheduleTargetSchema, { kind: { case: "selector", value: {} } }), "srv_1")).toBe("every server of the project");
    expect(describeTarget(create(ScheduleTargetSchema, { kind: { case: "serverId", value: "srv_1" } }), "srv_1")).toBeUndefined();
    expect(describeTarget(create(ScheduleTargetSchema, { kind: { case: "serverId", value: "srv_2" } }), "srv_1")).toBe("server srv_2");
  });

  it("names every problem it sees at once, each on its field", () => {
    const f = form({
      name: "Daily Restart",
      cron: "  ",
      tasks: [{ ...newTask("console_command"), command: "  " }, { ...newTask("wait"), seconds: "0" }, { ...newTask("wait"), seconds: "1.5" }, { ...newTask("wait"), seconds: "3601" }, { ...newTask("console_command"), command: "a\nb" }],
    });
    const fields = specFromScheduleForm(f, "srv_1").problems.map((p) => p.field);
    expect(fields).toEqual(["name", "cron", "tasks.0.command", "tasks.1.seconds", "tasks.2.seconds", "tasks.3.seconds", "tasks.4.command"]);
    expect(specFromScheduleForm(form({ tasks: [] }), "s").problems).toEqual([{ field: "tasks", message: expect.stringContaining("add a task") }]);
    expect(specFromScheduleForm(form({ tasks: [{ ...newTask("wait"), seconds: "1" }, { ...newTask("wait"), seconds: "3600" }] }), "s").problems).toEqual([]);
  });
});

describe("task list", () => {
  it("moves a task up or down and leaves the ends alone", () => {
    expect(moveTask(["a", "b", "c"], 2, -1)).toEqual(["a", "c", "b"]);
    expect(moveTask(["a", "b", "c"], 0, 1)).toEqual(["b", "a", "c"]);
    expect(moveTask(["a", "b", "c"], 0, -1)).toEqual(["a", "b", "c"]);
    expect(moveTask(["a", "b", "c"], 2, 1)).toEqual(["a", "b", "c"]);
    expect(removeTask(["a", "b", "c"], 1)).toEqual(["a", "c"]);
  });

  it("keeps each row's key with the row as it moves", () => {
    const f = form();
    const moved = moveTask(f.tasks, 2, -1);
    expect(moved.map((t) => t.key)).toEqual([f.tasks[0]!.key, f.tasks[2]!.key, f.tasks[1]!.key]);
    expect(new Set(f.tasks.map((t) => t.key)).size).toBe(3);
  });
});

describe("the manager's answers on the form", () => {
  it("puts field violations on their fields, PreviewCron's and CreateSchedule's alike", () => {
    expect(fieldOfSchedulePath("spec.cron")).toBe("cron");
    expect(fieldOfSchedulePath("cron")).toBe("cron");
    expect(fieldOfSchedulePath("time_zone")).toBe("timeZone");
    expect(fieldOfSchedulePath("spec.time_zone")).toBe("timeZone");
    expect(fieldOfSchedulePath("spec.name")).toBe("name");
    expect(fieldOfSchedulePath("spec.tasks")).toBe("tasks");
    expect(fieldOfSchedulePath("spec.tasks[2].wait.seconds")).toBe("tasks.2.seconds");
    expect(fieldOfSchedulePath("spec.tasks[0].console_command.command")).toBe("tasks.0.command");
    expect(fieldOfSchedulePath("spec.tasks[1]")).toBe("tasks.1");
    expect(fieldOfSchedulePath("spec.target.server_id")).toBeUndefined();
    const problems = scheduleProblemsOfAnswer({
      message: "spec.cron: …",
      violations: [
        { field: "spec.cron", description: '"0 24 * * *": hour field "24": 24 is out of range' },
        { field: "spec.target.server_id", description: "server gone" },
      ],
    });
    expect(problems).toEqual([
      { field: "cron", message: '"0 24 * * *": hour field "24": 24 is out of range' },
      { field: undefined, message: "spec.target.server_id: server gone" },
    ]);
  });

  it("without violations, takes the field from the message's start", () => {
    expect(scheduleProblemsOfAnswer({ message: 'time_zone: unknown time zone "Mars/Olympus": use an IANA zone', violations: [] })).toEqual([
      { field: "timeZone", message: 'unknown time zone "Mars/Olympus": use an IANA zone' },
    ]);
    expect(scheduleProblemsOfAnswer({ message: "something else", violations: [] })).toEqual([{ field: undefined, message: "something else" }]);
  });

  it("drops a problem once its field changes, a moved task's too", () => {
    const before = form();
    const problems = [
      { field: "cron", message: "bad" },
      { field: "tasks.1.seconds", message: "bad wait" },
      { field: undefined, message: "general" },
    ];
    expect(problemsAfterScheduleEdit(problems, before, { ...before, name: "other" })).toBe(problems);
    expect(problemsAfterScheduleEdit(problems, before, { ...before, cron: "0 5 * * *" }).map((p) => p.field)).toEqual(["tasks.1.seconds", undefined]);
    expect(problemsAfterScheduleEdit(problems, before, { ...before, tasks: moveTask(before.tasks, 1, 1) }).map((p) => p.field)).toEqual(["cron", undefined]);
  });
});

describe("runs and times", () => {
  it("names and colours outcomes; polls only while running", () => {
    expect(runOutcomeName(ScheduleRunOutcome.SKIPPED_NOT_RUNNING)).toBe("Skipped (not running)");
    expect(runOutcomeTone(ScheduleRunOutcome.FAILED)).toBe("bad");
    expect(runOutcomeTone(ScheduleRunOutcome.SUCCEEDED)).toBe("ok");
    expect(taskOutcomeTone(ScheduleTaskOutcome.NOT_RUN)).toBe("idle");
    expect(isRunActive({ outcome: ScheduleRunOutcome.RUNNING })).toBe(true);
    expect(isRunActive({ outcome: ScheduleRunOutcome.SUCCEEDED })).toBe(false);
    expect(isRunActive(undefined)).toBe(false);
  });

  it("shows a time as read in the schedule's zone", () => {
    const ms = Date.UTC(2026, 0, 5, 3, 0); // 04:00 in Berlin (CET)
    expect(formatInZone(ms, "Europe/Berlin")).toMatch(/5 Jan 2026.*04:00/);
    expect(formatInZone(ms, "UTC")).toMatch(/03:00/);
    expect(formatInZone(ms, "Not/AZone")).toMatch(/03:00 UTC/);
  });

  it("summarises tasks in words", () => {
    expect(taskSummary(create(ScheduleTaskSchema, { kind: { case: "power", value: { action: PowerAction.REBUILD } } }))).toBe("rebuild");
    expect(taskSummary(create(ScheduleTaskSchema, { kind: { case: "backup", value: {} } }))).toBe("backup");
  });

  it("suggests the browser's zones with UTC first, else common ones", () => {
    expect(timeZoneChoices(() => ["Europe/Berlin", "UTC"])).toEqual(["UTC", "Europe/Berlin"]);
    expect(timeZoneChoices(() => [])).toContain("Europe/Berlin");
    expect(
      timeZoneChoices(() => {
        throw new Error("no");
      })[0],
    ).toBe("UTC");
  });
});
