/**
 * Runs one schedule run: the schedule's tasks, in order, on each targeted
 * server, against an injected executor (the manager's server operations in
 * production, fakes in tests). Pure logic: no store, no clock of its own.
 *
 *   per server:  only_when_running? ── not running ──▶ skipped_not_running
 *                     │ running (or not asked)
 *                     ▼
 *                task 0 ─▶ task 1 ─▶ … ─▶ succeeded
 *                  │ fails: continue_on_failure? next task : the rest not_run ─▶ failed
 *                  │ deadline / shutdown: this task failed, the rest not_run ─▶ failed
 *
 * The run always ends with an outcome: it is never left "running".
 */

export type PowerAction = "start" | "stop" | "restart" | "rebuild";

/** One task of a schedule (ScheduleTask in proto/berth/v1/schedule.proto). */
export type ScheduleTaskSpec = { readonly continueOnFailure: boolean } & (
  | { readonly kind: "console_command"; readonly command: string }
  | { readonly kind: "power"; readonly action: PowerAction }
  | { readonly kind: "backup"; readonly target: string; readonly live: boolean }
  | { readonly kind: "wait"; readonly seconds: number }
);

/**
 * What the runner does to servers. Each call gets the run's signal (aborted
 * at the deadline or on shutdown); the runner does not wait for a call that
 * ignores it. A call that resolves succeeded (its string, if any, is the
 * task's message); one that rejects failed with its error's message.
 */
export interface ScheduleExecutor {
  isRunning(serverId: string, signal: AbortSignal): Promise<boolean>;
  consoleCommand(serverId: string, command: string, signal: AbortSignal): Promise<string | void>;
  power(serverId: string, action: PowerAction, signal: AbortSignal): Promise<string | void>;
  /** Absent: backup tasks fail, saying the manager cannot make them. */
  backup?(serverId: string, task: { target: string; live: boolean }, signal: AbortSignal): Promise<string | void>;
  /** Resolves after `ms`, or rejects once `signal` aborts. */
  sleep(ms: number, signal: AbortSignal): Promise<void>;
}

export type RunOutcome = "succeeded" | "failed" | "skipped_not_running";
export type TaskOutcome = "succeeded" | "failed" | "not_run";
export type RunTrigger = "tick" | "manual" | "catch_up";

export interface TaskResult {
  readonly index: number;
  readonly kind: ScheduleTaskSpec["kind"];
  readonly outcome: TaskOutcome;
  readonly message: string;
  /** ms; unset for tasks not run. */
  readonly startedAt?: number;
  readonly finishedAt?: number;
}

export interface TargetResult {
  readonly serverId: string;
  readonly outcome: RunOutcome;
  /** CamelCase: TaskFailed, NotRunning, DeadlineExceeded, ManagerShutdown, RunningCheckFailed; empty when it succeeded. */
  readonly reason: string;
  readonly message: string;
  readonly tasks: readonly TaskResult[];
}

/** A finished run, as the store records it (ScheduleRun). */
export interface RunRecord {
  readonly scheduleId: string;
  readonly trigger: RunTrigger;
  readonly scheduledFor: number;
  readonly startedAt: number;
  readonly finishedAt: number;
  readonly outcome: RunOutcome;
  readonly reason: string;
  readonly message: string;
  readonly targets: readonly TargetResult[];
}

export interface RunRequest {
  readonly scheduleId: string;
  readonly trigger: RunTrigger;
  readonly scheduledFor: number;
  /** The servers the target resolved to when the run started, in order. */
  readonly serverIds: readonly string[];
  readonly tasks: readonly ScheduleTaskSpec[];
  readonly onlyWhenRunning: boolean;
  /** The whole run must end within this; then the task under way fails (DeadlineExceeded). */
  readonly deadlineMs: number;
  /** Aborted when the manager shuts down: the run ends failed (ManagerShutdown). */
  readonly signal?: AbortSignal;
  /** Servers run at the same time (default 4). */
  readonly concurrency?: number;
}

export interface RunnerDeps {
  readonly executor: ScheduleExecutor;
  /** The injected clock (ms). */
  readonly now: () => number;
}

/** Why the run's signal aborted, in words and as a reason. */
interface Cut {
  readonly reason: "DeadlineExceeded" | "ManagerShutdown";
  readonly words: string;
}

/** Settles like `p`, or rejects as soon as `signal` aborts, whichever is first. */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    p.catch(() => {});
    return Promise.reject(new Error("aborted"));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new Error("aborted"));
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

function describeTask(t: ScheduleTaskSpec): string {
  switch (t.kind) {
    case "console_command":
      return `console command "${t.command}"`;
    case "power":
      return `power ${t.action}`;
    case "backup":
      return `backup${t.target ? ` to ${t.target}` : ""}`;
    case "wait":
      return `wait ${t.seconds} s`;
  }
}

async function runTask(t: ScheduleTaskSpec, serverId: string, executor: ScheduleExecutor, signal: AbortSignal): Promise<string> {
  switch (t.kind) {
    case "console_command":
      return (await executor.consoleCommand(serverId, t.command, signal)) || `sent "${t.command}"`;
    case "power":
      return (await executor.power(serverId, t.action, signal)) || `${t.action} asked for`;
    case "backup":
      if (!executor.backup) {
        throw new Error("backup tasks cannot run: this manager has no backup executor for schedules yet; remove the task or use BackupService.CreateBackup");
      }
      return (await executor.backup(serverId, { target: t.target, live: t.live }, signal)) || "backup asked for";
    case "wait":
      await executor.sleep(t.seconds * 1000, signal);
      return `waited ${t.seconds} s`;
  }
}

async function runTarget(req: RunRequest, serverId: string, deps: RunnerDeps, signal: AbortSignal, cut: () => Cut): Promise<TargetResult> {
  const notRun = (from: number, message: string): TaskResult[] =>
    req.tasks.slice(from).map((t, i) => ({ index: from + i, kind: t.kind, outcome: "not_run" as const, message }));
  if (signal.aborted) {
    const c = cut();
    return { serverId, outcome: "failed", reason: c.reason, message: `not started: ${c.words}`, tasks: notRun(0, `not run: ${c.words}`) };
  }
  if (req.onlyWhenRunning) {
    let running: boolean;
    try {
      running = await untilAborted(deps.executor.isRunning(serverId, signal), signal);
    } catch (e) {
      const [reason, message] = signal.aborted ? [cut().reason, `not started: ${cut().words}`] : ["RunningCheckFailed", `could not tell whether the server is running: ${(e as Error).message}`];
      return { serverId, outcome: "failed", reason, message, tasks: notRun(0, "not run: " + message) };
    }
    if (!running) {
      return { serverId, outcome: "skipped_not_running", reason: "NotRunning", message: "the server was not running (only_when_running)", tasks: notRun(0, "not run: the server was not running") };
    }
  }
  const results: TaskResult[] = [];
  let failed: { index: number; message: string } | undefined;
  for (const [index, t] of req.tasks.entries()) {
    if (signal.aborted) {
      const c = cut();
      results.push(...notRun(index, `not run: ${c.words}`));
      return { serverId, outcome: "failed", reason: c.reason, message: `cut short before task ${index} (${describeTask(t)}): ${c.words}`, tasks: results };
    }
    const startedAt = deps.now();
    try {
      const message = await untilAborted(runTask(t, serverId, deps.executor, signal), signal);
      results.push({ index, kind: t.kind, outcome: "succeeded", message, startedAt, finishedAt: deps.now() });
    } catch (e) {
      const finishedAt = deps.now();
      if (signal.aborted) {
        const c = cut();
        results.push({ index, kind: t.kind, outcome: "failed", message: `cut short: ${c.words}`, startedAt, finishedAt });
        results.push(...notRun(index + 1, `not run: ${c.words}`));
        return { serverId, outcome: "failed", reason: c.reason, message: `task ${index} (${describeTask(t)}) was cut short: ${c.words}`, tasks: results };
      }
      const message = (e as Error).message;
      results.push({ index, kind: t.kind, outcome: "failed", message, startedAt, finishedAt });
      failed ??= { index, message: `task ${index} (${describeTask(t)}) failed: ${message}` };
      if (!t.continueOnFailure) {
        results.push(...notRun(index + 1, `not run: task ${index} failed`));
        break;
      }
    }
  }
  if (failed) return { serverId, outcome: "failed", reason: "TaskFailed", message: failed.message, tasks: results };
  return { serverId, outcome: "succeeded", reason: "", message: `${results.length} task${results.length === 1 ? "" : "s"} succeeded`, tasks: results };
}

/**
 * Runs a schedule's tasks on each of its servers (a few at a time) and
 * returns the finished run. Never throws and never leaves the run under way:
 * a deadline or shutdown fails the task under way and marks the rest not run.
 *
 * The run's outcome: failed if any server's part failed (its reason, with
 * ManagerShutdown and DeadlineExceeded first); skipped_not_running if every
 * server was skipped; succeeded otherwise (some servers may have been
 * skipped: the message says how many). No servers at all: failed, NoServers.
 */
export async function runSchedule(req: RunRequest, deps: RunnerDeps): Promise<RunRecord> {
  const startedAt = deps.now();
  const ctl = new AbortController();
  const deadline = setTimeout(() => ctl.abort(), Math.max(0, req.deadlineMs));
  const onShutdown = () => ctl.abort();
  req.signal?.addEventListener("abort", onShutdown, { once: true });
  if (req.signal?.aborted) ctl.abort();
  const cut = (): Cut =>
    req.signal?.aborted
      ? { reason: "ManagerShutdown", words: "the manager shut down" }
      : { reason: "DeadlineExceeded", words: `the run's deadline (${req.deadlineMs >= 1000 ? `${Math.round(req.deadlineMs / 1000)} s` : `${req.deadlineMs} ms`}) passed` };
  try {
    if (req.serverIds.length === 0) {
      return { ...base(req, startedAt, deps.now()), outcome: "failed", reason: "NoServers", message: "the schedule's target matched no server", targets: [] };
    }
    const targets: TargetResult[] = new Array(req.serverIds.length);
    let next = 0;
    const worker = async () => {
      while (next < req.serverIds.length) {
        const i = next++;
        targets[i] = await runTarget(req, req.serverIds[i]!, deps, ctl.signal, cut);
      }
    };
    const width = Math.max(1, Math.min(req.concurrency ?? 4, req.serverIds.length));
    await Promise.all(Array.from({ length: width }, worker));
    return { ...base(req, startedAt, deps.now()), ...summarize(targets), targets };
  } finally {
    clearTimeout(deadline);
    req.signal?.removeEventListener("abort", onShutdown);
  }
}

function base(req: RunRequest, startedAt: number, finishedAt: number) {
  return { scheduleId: req.scheduleId, trigger: req.trigger, scheduledFor: req.scheduledFor, startedAt, finishedAt };
}

function summarize(targets: readonly TargetResult[]): { outcome: RunOutcome; reason: string; message: string } {
  const failed = targets.filter((t) => t.outcome === "failed");
  const skipped = targets.filter((t) => t.outcome === "skipped_not_running");
  const one = targets.length === 1;
  if (failed.length > 0) {
    const first = failed.find((t) => t.reason === "ManagerShutdown" || t.reason === "DeadlineExceeded") ?? failed[0]!;
    const message = one ? first.message : `${failed.length} of ${targets.length} servers failed; ${first.serverId}: ${first.message}`;
    return { outcome: "failed", reason: first.reason, message };
  }
  if (skipped.length === targets.length) {
    return { outcome: "skipped_not_running", reason: "NotRunning", message: one ? skipped[0]!.message : "no targeted server was running (only_when_running)" };
  }
  const ran = targets.length - skipped.length;
  const message = one ? targets[0]!.message : `${ran} server${ran === 1 ? "" : "s"} succeeded${skipped.length ? `, ${skipped.length} skipped (not running)` : ""}`;
  return { outcome: "succeeded", reason: "", message };
}
