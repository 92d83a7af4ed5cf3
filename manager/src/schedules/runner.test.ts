import { describe, expect, it } from "vitest";
import { runSchedule, type RunRequest, type ScheduleExecutor, type ScheduleTaskSpec } from "./runner.js";

/** Never settles by itself; rejects when `signal` aborts (or never, when told to ignore it). */
function hang(signal: AbortSignal, ignoreSignal = false): Promise<never> {
  return new Promise((_, reject) => {
    if (!ignoreSignal) signal.addEventListener("abort", () => reject(new Error("aborted by signal")), { once: true });
  });
}

interface FakeOptions {
  running?: Record<string, boolean>;
  /** "server:command" or "server:action" that fail, with this message. */
  failing?: Record<string, string>;
  /** Calls that never finish ("server:wait", "server:restart", ...). */
  hanging?: string[];
  /** Hanging calls ignore the signal. */
  deaf?: boolean;
  noBackup?: boolean;
}

/** An executor that does nothing but write down what it was asked, in order. */
function fakeExecutor(o: FakeOptions = {}) {
  const calls: string[] = [];
  const act = async (key: string, signal: AbortSignal, ok?: string): Promise<string | void> => {
    calls.push(key);
    if (o.hanging?.includes(key)) return hang(signal, o.deaf);
    const failure = o.failing?.[key];
    if (failure) throw new Error(failure);
    return ok;
  };
  const executor: ScheduleExecutor = {
    isRunning: async (id) => {
      calls.push(`${id}:isRunning`);
      return o.running?.[id] ?? true;
    },
    consoleCommand: (id, command, signal) => act(`${id}:${command}`, signal),
    power: (id, action, signal) => act(`${id}:${action}`, signal),
    // Waits are instant unless a test replaces this.
    sleep: async () => {},
  };
  if (!o.noBackup) executor.backup = (id, t, signal) => act(`${id}:backup${t.target ? `:${t.target}` : ""}`, signal, `backup bk_1 of ${id} asked for`);
  return { executor, calls };
}

/** A clock that moves one second each time it is read. */
function tickingClock(start = 1_000_000) {
  let t = start;
  return () => (t += 1000);
}

const cmd = (command: string, continueOnFailure = false): ScheduleTaskSpec => ({ kind: "console_command", command, continueOnFailure });
const power = (action: "start" | "stop" | "restart" | "rebuild", continueOnFailure = false): ScheduleTaskSpec => ({ kind: "power", action, continueOnFailure });
const wait = (seconds: number, continueOnFailure = false): ScheduleTaskSpec => ({ kind: "wait", seconds, continueOnFailure });

function request(over: Partial<RunRequest>): RunRequest {
  return { scheduleId: "sch_1", trigger: "tick", scheduledFor: 1_000_000, serverIds: ["srv_a"], tasks: [], onlyWhenRunning: false, deadlineMs: 60_000, ...over };
}

/** Each task's outcome and message, per server, for tables. */
const outcomes = (r: Awaited<ReturnType<typeof runSchedule>>) => r.targets.map((t) => [t.serverId, t.outcome, t.reason, t.tasks.map((x) => `${x.index} ${x.kind} ${x.outcome}: ${x.message}`)]);

describe("runSchedule", () => {
  it("runs the tasks in order and records each one's outcome and times", async () => {
    const { executor, calls } = fakeExecutor();
    const slept: number[] = [];
    executor.sleep = async (ms) => void slept.push(ms);
    const run = await runSchedule(request({ tasks: [cmd("say restart in 5 minutes"), wait(300), cmd("save-all"), power("restart")] }), { executor, now: tickingClock() });
    expect(calls).toEqual(["srv_a:say restart in 5 minutes", "srv_a:save-all", "srv_a:restart"]);
    expect(slept).toEqual([300_000]);
    expect(run).toMatchObject({ scheduleId: "sch_1", trigger: "tick", scheduledFor: 1_000_000, outcome: "succeeded", reason: "", message: "4 tasks succeeded" });
    expect(outcomes(run)).toEqual([
      [
        "srv_a",
        "succeeded",
        "",
        [
          '0 console_command succeeded: sent "say restart in 5 minutes"',
          "1 wait succeeded: waited 300 s",
          '2 console_command succeeded: sent "save-all"',
          "3 power succeeded: restart asked for",
        ],
      ],
    ]);
    const t = run.targets[0]!.tasks;
    expect(run.startedAt).toBeLessThan(t[0]!.startedAt!);
    for (const x of t) expect(x.finishedAt).toBeGreaterThan(x.startedAt!);
    expect(run.finishedAt).toBeGreaterThan(t[3]!.finishedAt!);
  });

  it("a failed task without continue_on_failure stops the server's tasks: the rest are not run", async () => {
    const { executor, calls } = fakeExecutor({ failing: { "srv_a:say hi": "the server's spec has no console: set console and rebuild" } });
    const run = await runSchedule(request({ tasks: [cmd("say hi"), power("restart")] }), { executor, now: tickingClock() });
    expect(calls).toEqual(["srv_a:say hi"]);
    expect(run).toMatchObject({ outcome: "failed", reason: "TaskFailed", message: 'task 0 (console command "say hi") failed: the server\'s spec has no console: set console and rebuild' });
    expect(outcomes(run)[0]![3]).toEqual(["0 console_command failed: the server's spec has no console: set console and rebuild", "1 power not_run: not run: task 0 failed"]);
    expect(run.targets[0]!.tasks[1]!.startedAt).toBeUndefined();
  });

  it("continue_on_failure goes on after a failure; the run still counts as failed", async () => {
    const { executor, calls } = fakeExecutor({ failing: { "srv_a:say hi": "no console" } });
    const run = await runSchedule(request({ tasks: [cmd("say hi", true), power("restart")] }), { executor, now: tickingClock() });
    expect(calls).toEqual(["srv_a:say hi", "srv_a:restart"]);
    expect(run).toMatchObject({ outcome: "failed", reason: "TaskFailed" });
    expect(outcomes(run)[0]![3]).toEqual(["0 console_command failed: no console", "1 power succeeded: restart asked for"]);
  });

  it("only_when_running: a stopped server is skipped at the start, nothing is done to it", async () => {
    const { executor, calls } = fakeExecutor({ running: { srv_a: false } });
    const run = await runSchedule(request({ onlyWhenRunning: true, tasks: [cmd("say hi"), power("restart")] }), { executor, now: tickingClock() });
    expect(calls).toEqual(["srv_a:isRunning"]);
    expect(run).toMatchObject({ outcome: "skipped_not_running", reason: "NotRunning", message: "the server was not running (only_when_running)" });
    expect(outcomes(run)[0]![3]).toEqual(["0 console_command not_run: not run: the server was not running", "1 power not_run: not run: the server was not running"]);
  });

  it("only_when_running: a running server runs; without the flag the state is not even asked", async () => {
    const a = fakeExecutor({ running: { srv_a: true } });
    expect((await runSchedule(request({ onlyWhenRunning: true, tasks: [power("stop")] }), { executor: a.executor, now: tickingClock() })).outcome).toBe("succeeded");
    expect(a.calls).toEqual(["srv_a:isRunning", "srv_a:stop"]);
    const b = fakeExecutor({ running: { srv_a: false } });
    expect((await runSchedule(request({ tasks: [power("start")] }), { executor: b.executor, now: tickingClock() })).outcome).toBe("succeeded");
    expect(b.calls).toEqual(["srv_a:start"]);
  });

  it("only_when_running: a failed check fails the server's run, saying why", async () => {
    const { executor } = fakeExecutor();
    executor.isRunning = async () => {
      throw new Error('server "srv_a" not found');
    };
    const run = await runSchedule(request({ onlyWhenRunning: true, tasks: [power("stop")] }), { executor, now: tickingClock() });
    expect(run).toMatchObject({ outcome: "failed", reason: "RunningCheckFailed", message: 'could not tell whether the server is running: server "srv_a" not found' });
  });

  it("a backup task without a backup executor fails with a message that says so", async () => {
    const { executor } = fakeExecutor({ noBackup: true });
    const run = await runSchedule(request({ tasks: [{ kind: "backup", target: "s3", live: false, continueOnFailure: false }] }), { executor, now: tickingClock() });
    expect(run.outcome).toBe("failed");
    expect(run.targets[0]!.tasks[0]!.message).toMatch(/^backup tasks cannot run: this manager has no backup executor for schedules yet; remove the task or use BackupService\.CreateBackup$/);
  });

  it("a backup task with an executor passes target and live, and keeps its message", async () => {
    const { executor, calls } = fakeExecutor();
    const run = await runSchedule(request({ tasks: [{ kind: "backup", target: "s3", live: true, continueOnFailure: false }] }), { executor, now: tickingClock() });
    expect(calls).toEqual(["srv_a:backup:s3"]);
    expect(outcomes(run)[0]![3]).toEqual(["0 backup succeeded: backup bk_1 of srv_a asked for"]);
  });

  it("the deadline cuts the task under way short: failed (DeadlineExceeded), the rest not run, never left running", async () => {
    const { executor } = fakeExecutor({ hanging: ["srv_a:restart"] });
    const run = await runSchedule(request({ deadlineMs: 30, tasks: [cmd("say bye"), power("restart"), cmd("say back")] }), { executor, now: tickingClock() });
    expect(run).toMatchObject({ outcome: "failed", reason: "DeadlineExceeded", message: "task 1 (power restart) was cut short: the run's deadline (30 ms) passed" });
    expect(outcomes(run)[0]![3]).toEqual([
      '0 console_command succeeded: sent "say bye"',
      "1 power failed: cut short: the run's deadline (30 ms) passed",
      "2 console_command not_run: not run: the run's deadline (30 ms) passed",
    ]);
    expect(run.finishedAt).toBeGreaterThan(run.startedAt);
  });

  it("a call that ignores the signal does not hold the run past its deadline", async () => {
    const { executor } = fakeExecutor({ hanging: ["srv_a:restart"], deaf: true });
    const run = await runSchedule(request({ deadlineMs: 30, tasks: [power("restart")] }), { executor, now: tickingClock() });
    expect(run).toMatchObject({ outcome: "failed", reason: "DeadlineExceeded" });
  });

  it("manager shutdown (the signal) ends a waiting run as failed (ManagerShutdown)", async () => {
    const { executor, calls } = fakeExecutor();
    executor.sleep = (_ms, signal) => hang(signal);
    const shutdown = new AbortController();
    const pending = runSchedule(request({ signal: shutdown.signal, tasks: [cmd("say restart in 5 minutes"), wait(300), power("restart")] }), { executor, now: tickingClock() });
    await new Promise((r) => setTimeout(r, 10));
    shutdown.abort();
    const run = await pending;
    expect(calls).toEqual(["srv_a:say restart in 5 minutes"]);
    expect(run).toMatchObject({ outcome: "failed", reason: "ManagerShutdown", message: "task 1 (wait 300 s) was cut short: the manager shut down" });
    expect(outcomes(run)[0]![3]).toEqual(['0 console_command succeeded: sent "say restart in 5 minutes"', "1 wait failed: cut short: the manager shut down", "2 power not_run: not run: the manager shut down"]);
  });

  it("a signal already aborted runs nothing", async () => {
    const { executor, calls } = fakeExecutor();
    const run = await runSchedule(request({ signal: AbortSignal.abort(), tasks: [power("restart")] }), { executor, now: tickingClock() });
    expect(calls).toEqual([]);
    expect(run).toMatchObject({ outcome: "failed", reason: "ManagerShutdown", message: "not started: the manager shut down" });
  });

  it("several servers: each runs the whole list; one failing fails the run, naming it", async () => {
    const { executor, calls } = fakeExecutor({ failing: { "srv_b:restart": "host h2 is offline" } });
    const run = await runSchedule(request({ serverIds: ["srv_a", "srv_b", "srv_c"], concurrency: 1, tasks: [cmd("save-all"), power("restart")] }), { executor, now: tickingClock() });
    expect(calls).toEqual(["srv_a:save-all", "srv_a:restart", "srv_b:save-all", "srv_b:restart", "srv_c:save-all", "srv_c:restart"]);
    expect(run.targets.map((t) => [t.serverId, t.outcome])).toEqual([
      ["srv_a", "succeeded"],
      ["srv_b", "failed"],
      ["srv_c", "succeeded"],
    ]);
    expect(run).toMatchObject({ outcome: "failed", reason: "TaskFailed", message: "1 of 3 servers failed; srv_b: task 1 (power restart) failed: host h2 is offline" });
  });

  it("several servers with only_when_running: some skipped is still a success; all skipped is skipped", async () => {
    const some = fakeExecutor({ running: { srv_b: false } });
    const r1 = await runSchedule(request({ serverIds: ["srv_a", "srv_b"], onlyWhenRunning: true, tasks: [power("restart")] }), { executor: some.executor, now: tickingClock() });
    expect(r1).toMatchObject({ outcome: "succeeded", message: "1 server succeeded, 1 skipped (not running)" });
    const none = fakeExecutor({ running: { srv_a: false, srv_b: false } });
    const r2 = await runSchedule(request({ serverIds: ["srv_a", "srv_b"], onlyWhenRunning: true, tasks: [power("restart")] }), { executor: none.executor, now: tickingClock() });
    expect(r2).toMatchObject({ outcome: "skipped_not_running", reason: "NotRunning", message: "no targeted server was running (only_when_running)" });
  });

  it("runs at most `concurrency` servers at once", async () => {
    let inFlight = 0;
    let most = 0;
    const { executor } = fakeExecutor();
    executor.power = async () => {
      most = Math.max(most, ++inFlight);
      await new Promise((r) => setTimeout(r, 5));
      inFlight--;
    };
    const run = await runSchedule(request({ serverIds: ["a", "b", "c", "d", "e", "f"], concurrency: 2, tasks: [power("restart")] }), { executor, now: tickingClock() });
    expect(run.outcome).toBe("succeeded");
    expect(most).toBe(2);
  });

  it("no servers (a selector that matched none): failed, NoServers", async () => {
    const { executor } = fakeExecutor();
    const run = await runSchedule(request({ serverIds: [], tasks: [power("restart")] }), { executor, now: tickingClock() });
    expect(run).toMatchObject({ outcome: "failed", reason: "NoServers", message: "the schedule's target matched no server", targets: [] });
  });
});
