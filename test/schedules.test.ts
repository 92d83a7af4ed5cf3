/**
 * Schedules end to end against real Docker (issue 21, docs/schedules.md):
 * RunScheduleNow runs a schedule's tasks through the same paths as the
 * operators' RPCs: a console command reaches the server's stdin, a restart
 * restarts its container, each recorded in the ledger as the schedule; the
 * run's record and events say each task's outcome. only_when_running on a
 * stopped server skips the run and says why. A schedule every minute is run
 * by the manager's own loop (it leads) at the minute, as a TICK.
 */
import { createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { Phase, ServerService, type ServerSpec, type WatchConsoleResponse } from "@berth/proto/berth/v1/server_pb.js";
import { PowerAction, ScheduleRunOutcome, ScheduleService, ScheduleTaskOutcome, ScheduleTrigger, type ScheduleRun } from "@berth/proto/berth/v1/schedule_pb.js";
import { dockerClient, removeBerthContainers, TEST_IMAGE } from "./harness/docker-engine.js";
import { removeTestDir, startAgent, startManager, tempDir, waitFor, waitForHostOnline, waitForPhase, type ManagerProc, type Proc } from "./harness/processes.js";
import { testDockerHost } from "./harness/engine.js";

const uid = () => `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 5)}`;
const ECHO = ["sh", "-c", 'echo "ready $$"; while read l; do echo "got $l"; done'];

/** A WatchConsole call collecting its output; markers as [marker: message]. */
function watch(servers: ReturnType<typeof createClient<typeof ServerService>>, id: string) {
  const ac = new AbortController();
  const got: WatchConsoleResponse[] = [];
  const done = (async () => {
    try {
      for await (const m of servers.watchConsole({ id, backlogLines: 10 }, { signal: ac.signal })) got.push(m);
    } catch {
      // aborted
    }
  })();
  const text = () => got.map((m) => (m.marker ? `[${m.marker}: ${m.message}]\n` : Buffer.from(m.data).toString())).join("");
  return { text, stop: async () => (ac.abort(), await done) };
}

describe("schedules", () => {
  const docker = dockerClient(testDockerHost());
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc;
  let schedules: ReturnType<typeof createClient<typeof ScheduleService>>;
  let events: ReturnType<typeof createClient<typeof EventService>>;
  const ids: string[] = [];

  beforeAll(async () => {
    dir = await tempDir("schedules");
    manager = await startManager({ dir });
    agent = await startAgent({ manager, dir });
    await waitForHostOnline(manager);
    schedules = createClient(ScheduleService, manager.transport(manager.adminToken));
    events = createClient(EventService, manager.transport(manager.adminToken));
  });

  afterAll(async () => {
    await agent?.stop();
    await manager?.stop();
    await removeBerthContainers(docker, { serverIds: ids });
    await removeTestDir(dir);
  });

  async function server(spec: Partial<ServerSpec>) {
    const { server } = await manager.servers.createServer({ spec: { name: `sch-${uid()}`, image: TEST_IMAGE, command: ECHO, console: true, ...spec } as ServerSpec });
    ids.push(server!.id);
    return server!;
  }

  async function finished(scheduleId: string, runId: string): Promise<ScheduleRun> {
    let run: ScheduleRun | undefined;
    await waitFor(
      "the run to end",
      async () => {
        run = (await schedules.listScheduleRuns({ id: scheduleId })).runs.find((r) => r.id === runId);
        return run !== undefined && run.outcome !== ScheduleRunOutcome.RUNNING;
      },
      90_000,
    );
    return run!;
  }

  it("RunScheduleNow: a console command reaches the server, then its container restarts; the run, its events and the actions are the schedule's", async () => {
    const s = await server({});
    await waitForPhase(manager, s.id, Phase.RUNNING, 60_000);
    const started = async () => {
      const info = (await docker.listContainers({ all: true, filters: { label: [`berth.server=${s.id}`] } }))[0]!;
      return { id: info.Id, state: info.State, startedAt: (await docker.getContainer(info.Id).inspect()).State.StartedAt };
    };
    const before = await started();
    const w = watch(manager.servers, s.id);
    await waitFor("the console's backlog", async () => /ready \d+/.test(w.text()), 15_000);

    const { schedule } = await schedules.createSchedule({
      spec: {
        name: "warn-then-restart",
        target: { kind: { case: "serverId", value: s.spec!.name } },
        cron: "0 4 * * *",
        timeZone: "Europe/Berlin",
        enabled: true,
        tasks: [{ kind: { case: "consoleCommand", value: { command: "say restarting now" } } }, { kind: { case: "wait", value: { seconds: 1 } } }, { kind: { case: "power", value: { action: PowerAction.RESTART } } }],
      },
    });
    expect(schedule!.spec!.target!.kind).toEqual({ case: "serverId", value: s.id });
    expect(schedule!.nextRunTime).toBeDefined();

    const { run } = await schedules.runScheduleNow({ id: "warn-then-restart" });
    expect(run!.trigger).toBe(ScheduleTrigger.MANUAL);
    const done = await finished(schedule!.id, run!.id);
    expect([ScheduleRunOutcome[done.outcome], done.reason, done.message]).toEqual(["SUCCEEDED", "", "3 tasks succeeded"]);
    expect(done.targets[0]!.tasks.map((t) => [t.kind, ScheduleTaskOutcome[t.outcome]])).toEqual([
      ["console_command", "SUCCEEDED"],
      ["wait", "SUCCEEDED"],
      ["power", "SUCCEEDED"],
    ]);

    // The console saw the line, then the container was restarted (a new run of the process).
    await waitFor("the line and the restart on the console", async () => w.text().includes("got say restarting now\n") && (w.text().match(/ready \d+/g) ?? []).length >= 2, 60_000).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; the console said:\n${w.text()}`);
    });
    expect(w.text()).toMatch(/got say restarting now\n(.*\n)*\[container_stopped: [^\]]*\]\n(.*\n)*\[container_started: [^\]]*\]\nready \d+\n/);
    await w.stop();
    await waitForPhase(manager, s.id, Phase.RUNNING, 60_000);
    // Restarted: the same container started again (a later start time), or a new one.
    const after = await started();
    expect(after.state).toBe("running");
    expect(after.id !== before.id || Date.parse(after.startedAt) > Date.parse(before.startedAt)).toBe(true);

    // The actions are recorded as the schedule's, through the same paths as an operator's.
    const actor = `schedule:${schedule!.id}`;
    const serverEvents = (await events.listEvents({ serverId: s.id })).events;
    expect(serverEvents.find((e) => e.type === "console.command")?.actor).toBe(actor);
    expect(serverEvents.find((e) => e.type === "server.restart_requested")?.actor).toBe(actor);
    const runEvents = (await events.listEvents({ typePrefix: "schedule.run_" })).events.filter((e) => e.correlationId === schedule!.id);
    expect(runEvents.map((e) => e.type).sort()).toEqual(["schedule.run_started", "schedule.run_succeeded"]);
    expect(runEvents.find((e) => e.type === "schedule.run_succeeded")!.payloadJson).toContain('"console_command"');

    // The schedule shows its last run.
    const got = (await schedules.getSchedule({ id: schedule!.id })).schedule!;
    expect(got.lastRun?.id).toBe(run!.id);
  });

  it("only_when_running on a stopped server: the run is skipped (SKIPPED_NOT_RUNNING) and the console command is not sent", async () => {
    const s = await server({});
    await waitForPhase(manager, s.id, Phase.RUNNING, 60_000);
    await manager.servers.stopServer({ id: s.id });
    await waitForPhase(manager, s.id, Phase.STOPPED, 60_000);
    const { schedule } = await schedules.createSchedule({
      spec: {
        name: `skip-${uid()}`.slice(0, 40),
        target: { kind: { case: "serverId", value: s.id } },
        cron: "*/5 * * * *",
        enabled: true,
        onlyWhenRunning: true,
        tasks: [{ kind: { case: "consoleCommand", value: { command: "say hi" } } }],
      },
    });
    const { run } = await schedules.runScheduleNow({ id: schedule!.id });
    const done = await finished(schedule!.id, run!.id);
    expect([ScheduleRunOutcome[done.outcome], done.reason]).toEqual(["SKIPPED_NOT_RUNNING", "NotRunning"]);
    expect(done.targets[0]!.tasks.map((t) => ScheduleTaskOutcome[t.outcome])).toEqual(["NOT_RUN"]);
    const skipped = (await events.listEvents({ typePrefix: "schedule.run_skipped" })).events.filter((e) => e.correlationId === schedule!.id);
    expect(skipped.map((e) => e.reason)).toEqual(["NotRunning"]);
    expect((await events.listEvents({ serverId: s.id, typePrefix: "console." })).events).toEqual([]);
  });

  it("the leader's loop runs a tick on its own: a schedule every minute runs once at the next minute (TICK), the console sees the line", async () => {
    const s = await server({});
    await waitForPhase(manager, s.id, Phase.RUNNING, 60_000);
    const w = watch(manager.servers, s.id);
    await waitFor("the console's backlog", async () => /ready \d+/.test(w.text()), 15_000);
    const { schedule } = await schedules.createSchedule({
      spec: { name: `tick-${uid()}`.slice(0, 40), target: { kind: { case: "serverId", value: s.id } }, cron: "* * * * *", enabled: true, tasks: [{ kind: { case: "consoleCommand", value: { command: "tick tock" } } }] },
    });
    const due = Number(schedule!.nextRunTime!.seconds) * 1000;
    let runs: ScheduleRun[] = [];
    await waitFor("the tick's run", async () => (runs = (await schedules.listScheduleRuns({ id: schedule!.id })).runs).some((r) => r.outcome === ScheduleRunOutcome.SUCCEEDED), 90_000);
    const run = runs.find((r) => r.outcome === ScheduleRunOutcome.SUCCEEDED)!;
    expect(run.trigger).toBe(ScheduleTrigger.TICK);
    expect(Number(run.scheduledFor!.seconds) * 1000).toBe(due);
    // Started at its time (the timer, not a poll): within a few seconds of the minute.
    expect(Number(run.startTime!.seconds) * 1000 - due).toBeLessThan(5_000);
    await waitFor("the line on the console", async () => w.text().includes("got tick tock\n"), 15_000);
    await schedules.deleteSchedule({ id: schedule!.id });
    await w.stop();
  });
});
