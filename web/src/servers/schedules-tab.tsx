/**
 * A server's schedules (ScheduleService, docs/schedules.md): each with its
 * cron expression in words (PreviewCron), time zone, flags, tasks, last run
 * and next run; its run history with every task's outcome. Operators create,
 * edit, delete and run one now; viewers read. The list and an open history
 * are refreshed every 2 s only while a run is under way.
 */
import { useCallback, useEffect, useId, useRef, useState, type FormEvent } from "react";
import { Code, ConnectError } from "@connectrpc/connect";
import { PowerAction, type Schedule, type ScheduleRun } from "@berth/proto/berth/v1/schedule_pb.js";
import type { Server } from "@berth/proto/berth/v1/server_pb.js";
import { BadRequestSchema } from "@berth/proto/google/rpc/error_details_pb.js";
import { useSession } from "../app-context.js";
import { errorText } from "../api/client.js";
import { RelTime } from "../ui/clock.js";
import { ConfirmDialog } from "../ui/confirm.js";
import { ErrorBox } from "../ui/error-box.js";
import { formatTime, tsMs } from "../ui/format.js";
import { Modal } from "../ui/modal.js";
import { useToast } from "../ui/toast.js";
import { Field, fieldErrors } from "./spec-form.js";
import type { FieldProblem } from "./spec-form-model.js";
import {
  emptyScheduleForm,
  formatInZone,
  describeTarget,
  formFromSchedule,
  isRunActive,
  moveTask,
  newTask,
  POWER_ACTIONS,
  POWER_LABEL,
  problemsAfterScheduleEdit,
  removeTask,
  runOutcomeName,
  runOutcomeTone,
  scheduleProblemsOfAnswer,
  specFromScheduleForm,
  TASK_KIND_LABEL,
  TASK_KINDS,
  taskOutcomeName,
  taskOutcomeTone,
  taskSummary,
  timeZoneChoices,
  triggerName,
  MAX_TASKS,
  type ScheduleForm,
  type TaskKind,
  type TaskRow,
} from "./schedules-model.js";

const FOLLOW_MS = 2000;
const PREVIEW_DEBOUNCE_MS = 350;
const HISTORY_PAGE = 10;

/** The server's schedules; refreshed every 2 s while `follow` or a last run is under way. */
function useSchedules(server: Server, follow: boolean) {
  const { api } = useSession();
  const [state, setState] = useState<{ schedules: Schedule[] | undefined; error: unknown }>({ schedules: undefined, error: undefined });
  const seq = useRef(0);
  const refresh = useCallback(async () => {
    const mine = ++seq.current;
    try {
      const res = await api.schedules.listSchedules({ project: server.project, server: server.id, pageSize: 1000 });
      if (mine === seq.current) setState({ schedules: res.schedules, error: undefined });
    } catch (error) {
      if (mine === seq.current) setState((s) => ({ ...s, error }));
    }
  }, [api, server.id, server.project]);
  const moving = follow || (state.schedules ?? []).some((s) => isRunActive(s.lastRun));
  useEffect(() => {
    void refresh();
    if (!moving) return;
    const timer = setInterval(() => void refresh(), FOLLOW_MS);
    return () => clearInterval(timer);
  }, [refresh, moving]);
  return { ...state, refresh };
}

/** The English of each cron expression and zone (PreviewCron), fetched once per pair. */
function useDescriptions(schedules: Schedule[] | undefined): ReadonlyMap<string, string> {
  const { api } = useSession();
  const [known, setKnown] = useState<ReadonlyMap<string, string>>(new Map());
  const asked = useRef(new Set<string>());
  useEffect(() => {
    for (const s of schedules ?? []) {
      const key = `${s.spec?.cron}\u0000${s.spec?.timeZone}`;
      if (!s.spec || asked.current.has(key)) continue;
      asked.current.add(key);
      api.schedules.previewCron({ cron: s.spec.cron, timeZone: s.spec.timeZone, count: 1 }).then(
        (r) => setKnown((m) => new Map(m).set(key, r.description)),
        () => asked.current.delete(key),
      );
    }
  }, [api, schedules]);
  return known;
}

export function SchedulesTab({ server }: { server: Server }) {
  const { api, can } = useSession();
  const toast = useToast();
  const [following, setFollowing] = useState(false);
  const list = useSchedules(server, following);
  const descriptions = useDescriptions(list.schedules);
  const [editing, setEditing] = useState<Schedule | "new">();
  const [deleting, setDeleting] = useState<Schedule>();
  const [history, setHistory] = useState<ReadonlySet<string>>(new Set());
  const [runErrors, setRunErrors] = useState<ReadonlyMap<string, string>>(new Map());
  const schedules = list.schedules ?? [];

  const runNow = async (s: Schedule) => {
    setRunErrors((m) => new Map([...m].filter(([k]) => k !== s.id)));
    try {
      await api.schedules.runScheduleNow({ id: s.id });
      toast("ok", `Running schedule ${s.spec?.name ?? s.id}`);
      setHistory((h) => new Set(h).add(s.id));
      setFollowing(true);
      await list.refresh();
    } catch (err) {
      setRunErrors((m) => new Map(m).set(s.id, errorText(err)));
    }
  };
  // Following a run started here stops once no last run is under way.
  useEffect(() => {
    if (following && list.schedules && !list.schedules.some((s) => isRunActive(s.lastRun))) setFollowing(false);
  }, [following, list.schedules]);

  return (
    <div className="schedules">
      <div className="schedules-head">
        <h3>Schedules</h3>
        <span className="grow" />
        {can.operate && (
          <button type="button" className="button small primary" onClick={() => setEditing("new")}>
            New schedule…
          </button>
        )}
      </div>
      <p className="muted small">Tasks run on this server on a clock: a console command, a power action, a backup, a wait, in order.</p>
      <ErrorBox error={list.error} what="Could not list schedules" />
      {!list.schedules && !list.error && <p className="muted">Loading…</p>}
      {list.schedules && schedules.length === 0 && <p className="muted empty-inline">No schedules on this server yet.</p>}
      {schedules.length > 0 && (
        <ul className="schedule-list" aria-label="Schedules">
          {schedules.map((s) => (
            <ScheduleItem
              key={s.id}
              s={s}
              serverId={server.id}
              description={descriptions.get(`${s.spec?.cron}\u0000${s.spec?.timeZone}`)}
              historyOpen={history.has(s.id)}
              runError={runErrors.get(s.id)}
              onToggleHistory={() =>
                setHistory((h) => {
                  const n = new Set(h);
                  if (!n.delete(s.id)) n.add(s.id);
                  return n;
                })
              }
              onRunNow={() => void runNow(s)}
              onEdit={() => setEditing(s)}
              onDelete={() => setDeleting(s)}
            />
          ))}
        </ul>
      )}
      {editing && (
        <ScheduleEditor
          server={server}
          schedule={editing === "new" ? undefined : editing}
          onClose={() => {
            setEditing(undefined);
            // The editor may have read a newer version (a reload after a conflict).
            void list.refresh();
          }}
          onSaved={async (saved) => {
            setEditing(undefined);
            toast("ok", `${editing === "new" ? "Created" : "Saved"} schedule ${saved.spec?.name ?? ""}`);
            await list.refresh();
          }}
        />
      )}
      {deleting && (
        <ConfirmDialog
          title={`Delete schedule ${deleting.spec?.name ?? deleting.id}?`}
          confirmLabel="Delete schedule"
          danger
          onClose={() => setDeleting(undefined)}
          onConfirm={async () => {
            try {
              await api.schedules.deleteSchedule({ id: deleting.id });
            } catch (err) {
              return errorText(err);
            }
            toast("ok", `Deleted schedule ${deleting.spec?.name ?? deleting.id}`);
            void list.refresh();
            return undefined;
          }}
        >
          <p>
            berth forgets schedule <strong>{deleting.spec?.name}</strong> and its run history; a run of it under way is cut short. The ledger keeps its events.
          </p>
        </ConfirmDialog>
      )}
    </div>
  );
}

function ScheduleItem(props: {
  s: Schedule;
  serverId: string;
  description: string | undefined;
  historyOpen: boolean;
  runError: string | undefined;
  onToggleHistory: () => void;
  onRunNow: () => void;
  onEdit: () => void;
  onDelete: () => void;
}) {
  const { s } = props;
  const { can } = useSession();
  const spec = s.spec;
  const zone = spec?.timeZone || "UTC";
  const last = s.lastRun;
  const next = tsMs(s.nextRunTime);
  const running = isRunActive(last);
  const historyId = useId();
  const targetWords = describeTarget(spec?.target, props.serverId);
  return (
    <li className="schedule" data-schedule-name={spec?.name}>
      <div className="schedule-head">
        <span className="strong">{spec?.name}</span>
        <span className={`badge tone-${spec?.enabled ? "ok" : "idle"}`}>{spec?.enabled ? "enabled" : "disabled"}</span>
        {spec?.onlyWhenRunning && (
          <span className="badge tone-idle" title="Runs only if the server is running when the run starts">
            only when running
          </span>
        )}
      </div>
      <dl className="kv compact schedule-facts">
        {targetWords !== undefined && (
          <>
            <dt>Runs on</dt>
            <dd data-testid="schedule-target">{targetWords}</dd>
          </>
        )}
        <dt>When</dt>
        <dd>
          <span className="mono">{spec?.cron}</span> <span className="muted">·</span> <span data-testid="schedule-description">{props.description ?? "…"}</span> <span className="muted">({zone})</span>
        </dd>
        <dt>Tasks</dt>
        <dd>
          <ol className="schedule-tasks">
            {spec?.tasks.map((t, i) => (
              <li key={i}>{taskSummary(t)}</li>
            ))}
          </ol>
        </dd>
        <dt>Last run</dt>
        <dd data-testid="schedule-last-run">
          {last ? (
            <>
              <span className={`badge tone-${runOutcomeTone(last.outcome)}`}>{runOutcomeName(last.outcome)}</span> <RelTime ms={tsMs(last.startTime)} />{" "}
              <span className="muted small">{triggerName(last.trigger)}</span>
            </>
          ) : (
            <span className="muted">never</span>
          )}
        </dd>
        <dt>Next run</dt>
        <dd data-testid="schedule-next-run">
          {next !== undefined ? (
            <>
              {formatInZone(next, zone)} <span className="muted">(<RelTime ms={next} />)</span>
            </>
          ) : (
            <span className="muted">none while disabled</span>
          )}
        </dd>
      </dl>
      <div className="schedule-actions">
        <button type="button" className="button small" aria-expanded={props.historyOpen} aria-controls={historyId} onClick={props.onToggleHistory}>
          {props.historyOpen ? "Hide history" : "History"}
        </button>
        {can.operate && (
          <>
            <span className="grow" />
            <span title={running ? "A run of this schedule is under way" : undefined}>
              <button type="button" className="button small" disabled={running} onClick={props.onRunNow}>
                {running ? "Running…" : "Run now"}
              </button>
            </span>
            <button type="button" className="button small" onClick={props.onEdit}>
              Edit…
            </button>
            <button type="button" className="button small danger-soft" onClick={props.onDelete}>
              Delete…
            </button>
          </>
        )}
      </div>
      {props.runError && (
        <p className="error-box" role="alert">
          {props.runError}
        </p>
      )}
      {props.historyOpen && <RunHistory id={historyId} s={s} />}
    </li>
  );
}

/** The schedule's newest runs with every task's outcome; refreshed while one is under way, and when the schedule's last run changes. */
function RunHistory({ id, s }: { id: string; s: Schedule }) {
  const { api } = useSession();
  const [runs, setRuns] = useState<ScheduleRun[]>();
  const [error, setError] = useState<unknown>();
  const lastKey = `${s.lastRun?.id}:${s.lastRun?.outcome}`;
  const refresh = useCallback(async () => {
    try {
      setRuns((await api.schedules.listScheduleRuns({ id: s.id, pageSize: HISTORY_PAGE })).runs);
      setError(undefined);
    } catch (err) {
      setError(err);
    }
  }, [api, s.id]);
  const active = (runs ?? []).some(isRunActive);
  useEffect(() => {
    void refresh();
    if (!active) return;
    const timer = setInterval(() => void refresh(), FOLLOW_MS);
    return () => clearInterval(timer);
  }, [refresh, active, lastKey]);
  const zone = s.spec?.timeZone || "UTC";
  return (
    <section className="schedule-history" id={id} aria-label={`Runs of ${s.spec?.name ?? s.id}`}>
      <ErrorBox error={error} what="Could not list runs" />
      {!runs && !error && <p className="muted small">Loading runs…</p>}
      {runs && runs.length === 0 && <p className="muted small">No runs yet.</p>}
      {runs && runs.length > 0 && (
        <ul className="run-list" aria-label="Runs">
          {runs.map((r) => (
            <li key={r.id} className="run" data-run-outcome={runOutcomeName(r.outcome)}>
              <div className="run-head">
                <span className={`badge tone-${runOutcomeTone(r.outcome)}`}>{runOutcomeName(r.outcome)}</span>
                <span title={formatTime(tsMs(r.startTime))}>{formatInZone(tsMs(r.scheduledFor) ?? 0, zone)}</span>
                <span className="muted small">
                  {triggerName(r.trigger)}
                  {r.requestedBy ? ` by ${r.requestedBy}` : ""}
                </span>
              </div>
              {(r.reason || r.message) && (
                <p className="small run-message">
                  {r.reason && <span className="mono">{r.reason}</span>} {r.message}
                </p>
              )}
              {r.missedCount > 0 && (
                <p className="small muted">
                  {r.missedCount} tick{r.missedCount === 1 ? "" : "s"} missed{r.firstMissedTime ? `, from ${formatInZone(tsMs(r.firstMissedTime) ?? 0, zone)}` : ""}
                </p>
              )}
              {r.targets.map((t) => (
                <ol key={t.serverId} className="run-tasks" aria-label="Task outcomes">
                  {t.tasks.map((k) => (
                    <li key={k.index} data-task-outcome={taskOutcomeName(k.outcome)}>
                      <span className={`badge tone-${taskOutcomeTone(k.outcome)}`}>{taskOutcomeName(k.outcome)}</span> <span>{taskLabel(s, k.index, k.kind)}</span>
                      {k.message && <span className="muted small"> — {k.message}</span>}
                    </li>
                  ))}
                </ol>
              ))}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

/** A run's task by its index in the (current) spec, when it is still of that kind; else its kind. */
function taskLabel(s: Schedule, index: number, kind: string): string {
  const t = s.spec?.tasks[index];
  const same = t && ({ consoleCommand: "console_command", power: "power", backup: "backup", wait: "wait" } as Record<string, string>)[t.kind.case ?? ""] === kind;
  return `${index + 1}. ${same ? taskSummary(t) : kind.replace("_", " ")}`;
}

// ---------------------------------------------------------------------------
// The editor

interface Preview {
  description: string;
  times: number[];
  zone: string;
}

function browserZone(): string {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  } catch {
    return "UTC";
  }
}

const ZONES = timeZoneChoices(() => (Intl as unknown as { supportedValuesOf?: (k: string) => string[] }).supportedValuesOf?.("timeZone") ?? []);

/** An error of the manager as problems on the form's fields. */
function problemsOf(err: unknown): FieldProblem[] {
  const e = ConnectError.from(err);
  if (e.code === Code.AlreadyExists) return [{ field: "name", message: e.rawMessage }];
  if (e.code !== Code.InvalidArgument) return [{ field: undefined, message: errorText(err) }];
  const violations = e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations);
  return scheduleProblemsOfAnswer({ message: e.rawMessage, violations });
}

const FIELD_LABEL: Record<string, string> = { name: "Name", cron: "Cron expression", timeZone: "Time zone", tasks: "Tasks" };

function ScheduleEditor(props: { server: Server; schedule: Schedule | undefined; onClose: () => void; onSaved: (s: Schedule) => Promise<void> }) {
  const { server } = props;
  const { api } = useSession();
  const [base, setBase] = useState(props.schedule);
  const [form, setForm] = useState<ScheduleForm>(() => (props.schedule?.spec ? formFromSchedule(props.schedule.spec) : emptyScheduleForm(browserZone())));
  const [problems, setProblems] = useState<readonly FieldProblem[]>([]);
  const [conflict, setConflict] = useState<string>();
  const [busy, setBusy] = useState(false);
  const [preview, setPreview] = useState<Preview>();
  const [previewProblems, setPreviewProblems] = useState<FieldProblem[]>([]);
  const [previewing, setPreviewing] = useState(false);
  const idBase = useId();
  const formId = `${idBase}-form`;
  const zonesId = `${idBase}-zones`;
  const root = useRef<HTMLFormElement>(null);
  const [attempt, setAttempt] = useState(0);

  // The live preview: PreviewCron once the expression and zone rest for a moment.
  useEffect(() => {
    const cron = form.cron.trim();
    if (!cron) {
      setPreview(undefined);
      setPreviewProblems([]);
      return;
    }
    let live = true;
    setPreviewing(true);
    const timer = setTimeout(() => {
      api.schedules.previewCron({ cron, timeZone: form.timeZone.trim(), count: 5 }).then(
        (r) => {
          if (!live) return;
          setPreview({ description: r.description, times: r.nextRunTimes.map((t) => tsMs(t) ?? 0), zone: r.timeZone });
          setPreviewProblems([]);
          setPreviewing(false);
        },
        (err) => {
          if (!live) return;
          setPreview(undefined);
          setPreviewProblems(problemsOf(err));
          setPreviewing(false);
        },
      );
    }, PREVIEW_DEBOUNCE_MS);
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [api, form.cron, form.timeZone]);

  // After a failed save, focus goes to the first field with a problem.
  useEffect(() => {
    if (attempt === 0) return;
    root.current?.querySelector<HTMLElement>("[aria-invalid=true]")?.focus();
  }, [attempt]);

  const all = [...problems, ...previewProblems.filter((p) => !problems.some((q) => q.field === p.field && q.message === p.message))];
  const errs = fieldErrors(all, idBase);
  const edit = (next: ScheduleForm) => {
    setProblems((p) => problemsAfterScheduleEdit(p, form, next));
    setForm(next);
  };
  const set = <K extends keyof ScheduleForm>(k: K, v: ScheduleForm[K]) => edit({ ...form, [k]: v });
  const setTask = (i: number, patch: Partial<TaskRow>) => edit({ ...form, tasks: form.tasks.map((t, k) => (k === i ? { ...t, ...patch } : t)) });

  const submit = async (e?: FormEvent) => {
    e?.preventDefault();
    const { spec, problems: own } = specFromScheduleForm(form, props.schedule?.spec?.target ?? server.id);
    setConflict(undefined);
    if (own.length > 0) {
      setProblems(own);
      setAttempt((a) => a + 1);
      return;
    }
    setBusy(true);
    try {
      const saved = base
        ? (await api.schedules.updateSchedule({ id: base.id, spec, expectedVersion: base.version })).schedule
        : (await api.schedules.createSchedule({ spec, project: server.project })).schedule;
      setProblems([]);
      if (saved) await props.onSaved(saved);
    } catch (err) {
      if (ConnectError.from(err).code === Code.Aborted) {
        setConflict(ConnectError.from(err).rawMessage);
      } else {
        setProblems(problemsOf(err));
        setAttempt((a) => a + 1);
      }
    } finally {
      setBusy(false);
    }
  };

  const reload = async () => {
    if (!base) return;
    try {
      const { schedule } = await api.schedules.getSchedule({ id: base.id });
      if (schedule?.spec) {
        setBase(schedule);
        setForm(formFromSchedule(schedule.spec));
        setProblems([]);
        setConflict(undefined);
      }
    } catch (err) {
      setConflict(errorText(err));
    }
  };

  const fieldsWithProblems = [...new Set(all.flatMap((p) => (p.field === undefined ? [] : [p.field.startsWith("tasks.") ? `Task ${Number(p.field.split(".")[1]) + 1}` : (FIELD_LABEL[p.field] ?? p.field)])))];
  const general = problems.filter((p) => p.field === undefined);
  return (
    <Modal
      title={base ? `Edit schedule ${base.spec?.name ?? ""}` : "New schedule"}
      onClose={props.onClose}
      wide
      testId="schedule-editor"
      footer={
        <>
          <button type="button" className="button" onClick={props.onClose}>
            Cancel
          </button>
          <button type="submit" form={formId} className="button primary" disabled={busy}>
            {busy ? "Saving…" : base ? "Save schedule" : "Create schedule"}
          </button>
        </>
      }
    >
      <form id={formId} ref={root} onSubmit={submit} noValidate className="schedule-form">
        <div className="form-grid">
          <Field label="Name" hint="lowercase letters, digits and '-' (e.g. nightly-restart)" {...errs.field("name")}>
            <input value={form.name} onChange={(e) => set("name", e.target.value)} autoComplete="off" spellCheck={false} name="name" {...errs.control("name")} />
          </Field>
          <Field label="Time zone" hint="an IANA zone, e.g. Europe/Berlin; empty: UTC" {...errs.field("timeZone")}>
            <input value={form.timeZone} onChange={(e) => set("timeZone", e.target.value)} list={zonesId} autoComplete="off" spellCheck={false} name="timeZone" {...errs.control("timeZone")} />
          </Field>
          <datalist id={zonesId}>
            {ZONES.map((z) => (
              <option key={z} value={z} />
            ))}
          </datalist>
          <Field label="Cron expression" hint="minute hour day-of-month month day-of-week, or @daily, @weekly …" wide {...errs.field("cron")}>
            <input value={form.cron} onChange={(e) => set("cron", e.target.value)} autoComplete="off" spellCheck={false} className="mono" name="cron" {...errs.control("cron")} />
          </Field>
        </div>
        <div className="cron-preview" aria-live="polite" data-testid="cron-preview">
          {preview ? (
            <>
              <p className="strong" data-testid="cron-description">
                {preview.description}
                <span className="muted"> ({preview.zone})</span>
              </p>
              <ol className="cron-times" aria-label="Next run times">
                {preview.times.map((t) => (
                  <li key={t}>{formatInZone(t, preview.zone)}</li>
                ))}
              </ol>
            </>
          ) : (
            <p className="muted small">{previewing ? "Checking…" : previewProblems.length ? "No preview: fix the expression or time zone." : ""}</p>
          )}
        </div>
        <div className="schedule-flags">
          <label className="check">
            <input type="checkbox" checked={form.enabled} onChange={(e) => set("enabled", e.target.checked)} name="enabled" /> Enabled (off: only Run now runs it)
          </label>
          <label className="check">
            <input type="checkbox" checked={form.onlyWhenRunning} onChange={(e) => set("onlyWhenRunning", e.target.checked)} name="onlyWhenRunning" /> Only when the server is running
          </label>
        </div>
        <fieldset className={`field task-editor${errs.bad("tasks") && errs.messageOf("tasks") ? " invalid" : ""}`}>
          <legend>Tasks, in order</legend>
          {errs.messageOf("tasks") && (
            <span className="field-error" id={errs.errorId("tasks")}>
              {errs.messageOf("tasks")}
            </span>
          )}
          <ol className="task-rows">
            {form.tasks.map((t, i) => (
              <TaskEditorRow
                key={t.key}
                t={t}
                i={i}
                count={form.tasks.length}
                errs={errs}
                onChange={(patch) => setTask(i, patch)}
                onMove={(d) => edit({ ...form, tasks: moveTask(form.tasks, i, d) })}
                onRemove={() => edit({ ...form, tasks: removeTask(form.tasks, i) })}
              />
            ))}
          </ol>
          <div className="task-add">
            {TASK_KINDS.map((k) => (
              <button key={k} type="button" className="button small" disabled={form.tasks.length >= MAX_TASKS} onClick={() => edit({ ...form, tasks: [...form.tasks, newTask(k)] })}>
                + {TASK_KIND_LABEL[k]}
              </button>
            ))}
          </div>
        </fieldset>
        {conflict && (
          <div className="error-box" role="alert" data-testid="schedule-conflict">
            <p>{conflict}</p>
            <button type="button" className="button small" onClick={() => void reload()}>
              Reload the schedule (your edits are lost)
            </button>
          </div>
        )}
        {(fieldsWithProblems.length > 0 || general.length > 0) && (
          <div className="error-box problem-summary" role="alert">
            {fieldsWithProblems.length > 0 && <p>Fix: {fieldsWithProblems.join(", ")}.</p>}
            {general.map((p, i) => (
              <p key={i}>{p.message}</p>
            ))}
          </div>
        )}
      </form>
    </Modal>
  );
}

function TaskEditorRow(props: {
  t: TaskRow;
  i: number;
  count: number;
  errs: ReturnType<typeof fieldErrors>;
  onChange: (patch: Partial<TaskRow>) => void;
  onMove: (delta: -1 | 1) => void;
  onRemove: () => void;
}) {
  const { t, i, errs } = props;
  const n = i + 1;
  const key = (cell: string) => `tasks.${i}.${cell}`;
  const rowProblem = errs.messageOf(`tasks.${i}`);
  return (
    <li className="task-row" data-task-index={i}>
      <div className="task-main">
        <span className="task-number" aria-hidden="true">
          {n}.
        </span>
        <label className="field task-kind">
          <span className="label">Task {n}</span>
          <select value={t.kind} onChange={(e) => props.onChange({ kind: e.target.value as TaskKind })} name={`task-${i}-kind`}>
            {TASK_KINDS.map((k) => (
              <option key={k} value={k}>
                {TASK_KIND_LABEL[k]}
              </option>
            ))}
          </select>
        </label>
        {t.kind === "console_command" && (
          <Field label="Command" {...errs.field(key("command"))}>
            <input value={t.command} onChange={(e) => props.onChange({ command: e.target.value })} placeholder="say Restarting in 60 seconds" spellCheck={false} autoComplete="off" name={`task-${i}-command`} className="mono" {...errs.control(key("command"))} />
          </Field>
        )}
        {t.kind === "power" && (
          <Field label="Action" {...errs.field(key("action"))}>
            <select value={t.action} onChange={(e) => props.onChange({ action: Number(e.target.value) as PowerAction })} name={`task-${i}-action`} {...errs.control(key("action"))}>
              {POWER_ACTIONS.map((a) => (
                <option key={a} value={a}>
                  {POWER_LABEL[a]}
                </option>
              ))}
            </select>
          </Field>
        )}
        {t.kind === "wait" && (
          <Field label="Seconds" {...errs.field(key("seconds"))}>
            <input type="number" min={1} max={3600} step={1} value={t.seconds} onChange={(e) => props.onChange({ seconds: e.target.value })} name={`task-${i}-seconds`} {...errs.control(key("seconds"))} />
          </Field>
        )}
        {t.kind === "backup" && (
          <>
            <Field label="Backup target" hint="id or name; empty: the first target" {...errs.field(key("backupTarget"))}>
              <input value={t.backupTarget} onChange={(e) => props.onChange({ backupTarget: e.target.value })} autoComplete="off" spellCheck={false} name={`task-${i}-target`} {...errs.control(key("backupTarget"))} />
            </Field>
            <label className="check">
              <input type="checkbox" checked={t.backupLive} onChange={(e) => props.onChange({ backupLive: e.target.checked })} /> Live copy
            </label>
          </>
        )}
      </div>
      <div className="task-controls">
        <label className="check">
          <input type="checkbox" checked={t.continueOnFailure} onChange={(e) => props.onChange({ continueOnFailure: e.target.checked })} /> Continue on failure
        </label>
        <span className="grow" />
        <button type="button" className="button small" aria-label={`Move task ${n} up`} disabled={i === 0} onClick={() => props.onMove(-1)}>
          ↑
        </button>
        <button type="button" className="button small" aria-label={`Move task ${n} down`} disabled={i === props.count - 1} onClick={() => props.onMove(1)}>
          ↓
        </button>
        <button type="button" className="button small danger-soft" aria-label={`Remove task ${n}`} onClick={props.onRemove}>
          Remove
        </button>
      </div>
      {rowProblem && (
        <span className="field-error" id={errs.errorId(`tasks.${i}`)}>
          {rowProblem}
        </span>
      )}
    </li>
  );
}
