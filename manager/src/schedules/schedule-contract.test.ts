import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { PowerAction, PreviewCronRequestSchema, ScheduleSpecSchema, type ScheduleSpec } from "@berth/proto/berth/v1/schedule_pb.js";
import { ruleProblems } from "../api/protovalidate.js";

/** A daily restart with a console warning first: the example. */
type SpecInit = MessageInitShape<typeof ScheduleSpecSchema>;

function spec(over: SpecInit = {}): ScheduleSpec {
  const base: SpecInit = {
    name: "nightly-restart",
    target: { kind: { case: "serverId", value: "srv_abcd" } },
    cron: "0 4 * * *",
    timeZone: "Europe/Berlin",
    enabled: true,
    tasks: [
      { kind: { case: "consoleCommand", value: { command: "say restarting in 60 seconds" } } },
      { kind: { case: "wait", value: { seconds: 60 } } },
      { kind: { case: "power", value: { action: PowerAction.RESTART } } },
    ],
  };
  return create(ScheduleSpecSchema, { ...base, ...over } as SpecInit);
}

describe("schedule.proto's rules (protovalidate)", () => {
  it("a daily restart with a console warning is valid", () => {
    expect(ruleProblems(ScheduleSpecSchema, spec())).toEqual([]);
  });

  it.each<[string, SpecInit, string, RegExp]>([
    ["a bad name", { name: "Nightly Restart" }, "name", /lowercase letters, digits and '-'/],
    ["no target", { target: undefined }, "target", /required/],
    ["no tasks", { tasks: [] }, "tasks", /1 to 50 tasks, run in order/],
    ["an empty cron", { cron: "" }, "cron", /a cron expression of at most 256 characters/],
    ["a grace over 7 days", { missedRunGraceSeconds: 604801 }, "missed_run_grace_seconds", /0 to 604800 seconds \(7 days\)/],
    ["a two-line console command", { tasks: [{ kind: { case: "consoleCommand", value: { command: "say a\nstop" } } }] }, "tasks[0].console_command.command", /one non-empty line/],
    ["an empty console command", { tasks: [{ kind: { case: "consoleCommand", value: { command: "" } } }] }, "tasks[0].console_command.command", /one non-empty line/],
    ["a wait of 0 s", { tasks: [{ kind: { case: "wait", value: { seconds: 0 } } }] }, "tasks[0].wait.seconds", /wait 1 to 3600 seconds/],
    ["a wait over an hour", { tasks: [{ kind: { case: "wait", value: { seconds: 3601 } } }] }, "tasks[0].wait.seconds", /for a longer pause, put several waits in a row/],
    ["a power task without an action", { tasks: [{ kind: { case: "power", value: { action: PowerAction.UNSPECIFIED } } }] }, "tasks[0].power.action", /choose an action: POWER_ACTION_START/],
    ["a task of no kind", { tasks: [{ kind: { case: undefined } }] }, "tasks[0].kind", /required/],
  ])("refuses %s", (_, over, field, words) => {
    const problems = ruleProblems(ScheduleSpecSchema, spec(over));
    expect(problems.map((p) => p.field)).toContain(field);
    expect(problems.find((p) => p.field === field)!.message).toMatch(words);
  });

  it("PreviewCron: at most 50 run times", () => {
    expect(ruleProblems(PreviewCronRequestSchema, create(PreviewCronRequestSchema, { cron: "@daily", count: 50 }))).toEqual([]);
    expect(ruleProblems(PreviewCronRequestSchema, create(PreviewCronRequestSchema, { cron: "@daily", count: 51 })).map((p) => p.field)).toEqual(["count"]);
  });
});
