/**
 * One server, explained: spec, status and conditions (live from the watch),
 * its usage over the last hour or day, its event timeline (ledger, live), its logs (TailLogs), its console, its
 * data directory (FileService), its backups, its schedules, and the spec editor.
 * The open server and tab live in the URL (?server=…&tab=…).
 */
import { Fragment, useEffect, useId, useRef, useState, type FormEvent } from "react";
import { ConditionStatus, Phase, RestartPolicy, type Server } from "@berth/proto/berth/v1/server_pb.js";
import { useActions, useFiringAlerts, useHosts, useSession, useWatch } from "../app-context.js";
import { EventTimeline } from "../events/event-timeline.js";
import { RelTime } from "../ui/clock.js";
import { formatBytes, formatTime, joinWords, tsMs } from "../ui/format.js";
import { moveFocusWithArrows, useTabTrap } from "../ui/focus.js";
import { setParam, useLocation } from "../ui/router.js";
import { useToast } from "../ui/toast.js";
import { BackupsTab } from "./backups-tab.js";
import { SchedulesTab } from "./schedules-tab.js";
import { CloneDialog } from "./clone-dialog.js";
import { LogsView } from "./logs-view.js";
import { ConsoleTab } from "./console-tab.js";
import { CrashMark } from "./crash-mark.js";
import { FilesTab } from "./files-tab.js";
import { ACTION_LABEL, ACTION_PENDING_LABEL, conditionTone, crashing, desiredName, lastSeen, isConverging, isDeleted, phaseBadge, phaseName, reasonText, targetPhase, type ServerAction } from "./model.js";
import { limitRows } from "./limits-model.js";
import { OperationProgress } from "./operation-progress.js";
import { allowedActions } from "./server-actions.js";
import { Field, ProblemSummary, problemsOfError, SpecFields } from "./spec-form.js";
import { checkSpecRules } from "./spec-rules.js";
import { formFromSpec, problemsAfterEdit, specFromForm, type FieldProblem, type SpecForm } from "./spec-form-model.js";
import { portsText } from "./table-query.js";
import { TransferDialog } from "./transfer-dialog.js";
import { UsageHistory } from "./usage-view.js";
import { ServerTemplatePanel } from "../templates/server-template-panel.js";
import { InstallPanel } from "./install-panel.js";

const TABS = ["overview", "usage", "events", "logs", "console", "files", "backups", "schedules", "edit"] as const;
type Tab = (typeof TABS)[number];
const TAB_LABEL: Record<Tab, string> = { overview: "Overview", usage: "Usage", events: "Events", logs: "Logs", console: "Console", files: "Files", backups: "Backups", schedules: "Schedules", edit: "Edit spec" };

export function DetailDrawer({ id, onClose, onAction }: { id: string; onClose: () => void; onAction: (s: Server, a: ServerAction) => void }) {
  const { can } = useSession();
  const watch = useWatch();
  const { pending, errors } = useActions();
  const { stuck } = useFiringAlerts();
  const { names } = useHosts();
  const loc = useLocation();
  const tabParam = new URLSearchParams(loc.search).get("tab");
  const tab: Tab = (TABS as readonly string[]).includes(tabParam ?? "") && (tabParam !== "edit" || can.operate) ? (tabParam as Tab) : "overview";
  const s = watch.servers.get(id) ?? [...watch.servers.values()].find((x) => x.spec?.name === id);
  const [moving, setMoving] = useState(false);
  const [cloning, setCloning] = useState(false);

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.key === "Escape" && !document.querySelector(".backdrop")) onClose();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [onClose]);

  // Focus moves into the drawer when it opens and goes back to what opened it
  // (the row's name, a button) when it closes; Tab stays inside meanwhile.
  const box = useRef<HTMLElement>(null);
  const shown = useRef(id);
  shown.current = id;
  useEffect(() => {
    const opener = document.activeElement instanceof HTMLElement && document.activeElement !== document.body ? document.activeElement : null;
    box.current?.focus();
    return () => {
      const back = opener?.isConnected ? opener : document.querySelector<HTMLElement>(`.vt-row[data-server-id="${CSS.escape(shown.current)}"] .c-name button`);
      back?.focus();
    };
  }, []); // the opener is what had focus when the drawer first opened; switching servers keeps it
  useTabTrap(box, () => !document.querySelector(".backdrop, .menu"));

  const p = s ? pending.get(s.id) : undefined;
  const err = s ? errors.get(s.id) : undefined;
  const acts = s && !p ? allowedActions(s, can) : [];
  return (
    <aside className="drawer" role="dialog" aria-modal="false" aria-label={`Server ${s?.spec?.name ?? id}`} data-testid="server-drawer" ref={box} tabIndex={-1}>
      <header className="drawer-head">
        <div className="drawer-title">
          <h2>{s?.spec?.name ?? id}</h2>
          {s && (
            <span className="muted mono small" title="server id">
              {s.id}
            </span>
          )}
        </div>
        <button type="button" className="icon-button" aria-label="Close details" onClick={onClose}>
          ×
        </button>
      </header>
      {!s ? (
        <div className="drawer-body">
          <p className="muted">{watch.loaded ? "This server is gone (purged), or your token cannot see it." : "Loading…"}</p>
        </div>
      ) : (
        <>
          <div className="drawer-status">
            <span className={`badge large tone-${phaseBadge(s).tone}`}>{phaseBadge(s).text}</span>
            {p ? (
              <span className="mark pending">
                <span className="spinner" aria-hidden="true" />
                {p.action === "update" ? "applying…" : ACTION_PENDING_LABEL[p.action]}
              </span>
            ) : s.status?.operation ? (
              <OperationProgress op={s.status.operation} />
            ) : s.status?.crash && crashing(s) ? (
              <CrashMark crash={s.status.crash} />
            ) : stuck.has(s.id) ? (
              <span className="mark stuck">stuck → {targetPhase(s)}</span>
            ) : isConverging(s) ? (
              <span className="mark converging">
                <span className="spinner" aria-hidden="true" />→ {targetPhase(s)}
              </span>
            ) : null}
            {lastSeen(s) ? (
              <span className="reason last-seen">last seen {lastSeen(s)}</span>
            ) : (
              s.status?.reason && s.status.reason !== phaseName(s.status.phase) && <span className={`reason${s.status.phase === Phase.FAILED ? " failed" : ""}`}>{reasonText(s.status.reason)}</span>
            )}
            <span className="grow" />
            {acts.map((a) => (
              <button key={a} type="button" className={`button small${a === "purge" || a === "delete" ? " danger-soft" : ""}`} onClick={() => onAction(s, a)}>
                {ACTION_LABEL[a]}
              </button>
            ))}
            {can.operate && !isDeleted(s) && (
              <>
                <span title={s.status?.operation ? "A backup, restore or move of this server is under way" : "Move the server and its data to another host"}>
                  <button type="button" className="button small" disabled={s.status?.operation !== undefined} onClick={() => setMoving(true)}>
                    Move…
                  </button>
                </span>
                <button type="button" className="button small" title="A new server with this spec and a copy of its data" onClick={() => setCloning(true)}>
                  Clone…
                </button>
              </>
            )}
          </div>
          {s.status?.message && <p className="status-message">{s.status.message}</p>}
          {err && (
            <p className="error-box" role="alert">
              {err}
            </p>
          )}
          {/* One tab stop (the open tab's); arrow keys move along the tabs, Enter opens one. */}
          <nav className="tabs" role="tablist" aria-label="Server details" onKeyDown={(e) => moveFocusWithArrows(e, "[role=tab]")}>
            {TABS.filter((t) => t !== "edit" || can.operate).map((t) => (
              <button
                key={t}
                type="button"
                role="tab"
                aria-selected={tab === t}
                tabIndex={tab === t ? 0 : -1}
                className={tab === t ? "active" : ""}
                onClick={() => setParam("tab", t === "overview" ? undefined : t)}
              >
                {TAB_LABEL[t]}
              </button>
            ))}
          </nav>
          {/* Focusable: the panel scrolls, and the keyboard must scroll it even where it holds no control (the overview). */}
          <div className="drawer-body" role="tabpanel" aria-label={TAB_LABEL[tab]} tabIndex={0}>
            {tab === "overview" && <Overview s={s} hostName={names.get(s.spec?.hostId ?? "") ?? s.spec?.hostId ?? ""} onAction={onAction} />}
            {tab === "usage" && <UsageHistory key={s.id} subject={{ case: "server", value: s.id }} name={s.spec?.name ?? s.id} />}
            {tab === "events" && <EventTimeline filter={{ serverId: s.id }} live compact />}
            {tab === "logs" && <LogsView server={s} />}
            {tab === "console" && <ConsoleTab key={s.id} server={s} />}
            {tab === "files" && <FilesTab key={s.id} server={s} />}
            {tab === "backups" && <BackupsTab key={s.id} server={s} />}
            {tab === "schedules" && <SchedulesTab key={s.id} server={s} />}
            {tab === "edit" && <EditSpec key={s.id} s={s} />}
          </div>
          {moving && <TransferDialog server={s} onClose={() => setMoving(false)} />}
          {cloning && <CloneDialog source={s} onClose={() => setCloning(false)} />}
        </>
      )}
    </aside>
  );
}

function Overview({ s, hostName, onAction }: { s: Server; hostName: string; onAction: (s: Server, a: ServerAction) => void }) {
  const spec = s.spec;
  const st = s.status;
  const env = Object.entries(spec?.env ?? {}).sort(([a], [b]) => a.localeCompare(b));
  const labels = Object.entries(spec?.labels ?? {}).sort(([a], [b]) => a.localeCompare(b));
  const limitsId = useId();
  return (
    <>
      <ServerTemplatePanel s={s} onAction={onAction} />
      <InstallPanel s={s} />
      <div className="two-col">
        <section>
          <h3>Spec</h3>
          <dl className="kv">
            <dt>Image</dt>
            <dd className="mono">{spec?.image}</dd>
            <dt>Command</dt>
            <dd className="mono">{spec?.command.length ? joinWords(spec.command) : <span className="muted">image default</span>}</dd>
            <dt>Env</dt>
            <dd className="mono">{env.length ? env.map(([k, v]) => <div key={k}>{`${k}=${v}`}</div>) : <span className="muted">none</span>}</dd>
            <dt>Ports</dt>
            <dd className="mono">{portsText(s) || <span className="muted">none</span>}</dd>
            <dt>Data mount</dt>
            <dd className="mono">{spec?.dataMountPath}</dd>
            <dt>Restart policy</dt>
            <dd>{restartName(spec?.restartPolicy)}</dd>
            <dt>Ready when</dt>
            <dd className="mono" data-testid="server-ready-pattern">
              {spec?.readyPattern ? `a line matches /${spec.readyPattern}/` : <span className="muted">the container runs</span>}
            </dd>
            <dt>Stop signal</dt>
            <dd className="mono">{spec?.stopSignal || <span className="muted">SIGTERM</span>}</dd>
            <dt>Desired state</dt>
            <dd>{desiredName(spec?.desiredState)}</dd>
            <dt>Host</dt>
            <dd title={spec?.hostId}>{hostName}</dd>
            <dt>Project</dt>
            <dd>{s.project}</dd>
            <dt>Labels</dt>
            <dd className="mono" data-testid="server-labels">
              {labels.length ? labels.map(([k, v]) => <div key={k}>{`${k}=${v}`}</div>) : <span className="muted">none</span>}
            </dd>
            <dt>Generation</dt>
            <dd>
              {s.generation.toString()} <span className="muted">(observed {st?.observedGeneration.toString() ?? "0"})</span>
            </dd>
          </dl>
        </section>
        <section>
          <h3>Observed</h3>
          <dl className="kv">
            <dt>Container</dt>
            <dd className="mono">{st?.containerId ? st.containerId.slice(0, 12) : <span className="muted">none</span>}</dd>
            <dt>Docker state</dt>
            <dd>{st?.containerState || <span className="muted">—</span>}</dd>
            <dt>Data</dt>
            <dd>{st?.dataExists ? `present${st.dataSizeBytes > 0n ? `, ${formatBytes(st.dataSizeBytes)}` : ""}` : "none"}</dd>
            <dt>Restarts</dt>
            <dd>{st?.restartCount ?? 0}</dd>
            <dt>Last change</dt>
            <dd>
              <RelTime ms={tsMs(st?.lastChangeTime)} /> <span className="muted">{st?.lastChangeCause}</span>
            </dd>
            <dt>Created</dt>
            <dd>{formatTime(tsMs(s.createTime))}</dd>
            <dt>Updated</dt>
            <dd>{formatTime(tsMs(s.updateTime))}</dd>
            {s.deleteTime && (
              <>
                <dt>Deleted</dt>
                <dd>{formatTime(tsMs(s.deleteTime))}</dd>
              </>
            )}
          </dl>
        </section>
      </div>
      <section aria-labelledby={`${limitsId}-title`} data-testid="overview-limits">
        <h3 id={`${limitsId}-title`}>Limits</h3>
        <dl className="kv limits">
          {limitRows(s).map((r) => (
            <Fragment key={r.label}>
              <dt>{r.label}</dt>
              <dd className={r.unset ? "muted" : undefined}>{r.value}</dd>
            </Fragment>
          ))}
        </dl>
      </section>
      <h3>Conditions</h3>
      <table className="table conditions" aria-label="Conditions">
        <thead>
          <tr>
            <th>Type</th>
            <th>Status</th>
            <th>Reason</th>
            <th>Message</th>
            <th>Since</th>
          </tr>
        </thead>
        <tbody>
          {(st?.conditions ?? []).map((c) => (
            <tr key={c.type}>
              <td className="strong">{c.type}</td>
              <td>
                <span className={`cond cond-${conditionTone(s, c.type, c.status)}`} data-testid={`cond-${c.type}`}>
                  {ConditionStatus[c.status]}
                </span>
              </td>
              <td className="mono">{c.reason}</td>
              <td>{c.message}</td>
              <td>
                <RelTime ms={tsMs(c.lastTransitionTime)} />
              </td>
            </tr>
          ))}
          {(st?.conditions.length ?? 0) === 0 && (
            <tr>
              <td colSpan={5} className="muted">
                No conditions yet.
              </td>
            </tr>
          )}
        </tbody>
      </table>
    </>
  );
}

function restartName(p: RestartPolicy | undefined): string {
  switch (p) {
    case RestartPolicy.NEVER:
      return "never";
    case RestartPolicy.ON_FAILURE:
      return "on-failure";
    case RestartPolicy.ALWAYS:
      return "always";
    default:
      return "—";
  }
}

function EditSpec({ s }: { s: Server }) {
  const { api, actions } = useSession();
  const { hosts } = useHosts();
  const toast = useToast();
  const [form, setForm] = useState<SpecForm>(() => formFromSpec(s.spec!));
  const [applyNow, setApplyNow] = useState(false);
  const [busy, setBusy] = useState(false);
  const [problems, setProblems] = useState<readonly FieldProblem[]>([]);
  const [attempt, setAttempt] = useState(0);
  const idBase = useId();
  const [baseGen, setBaseGen] = useState(s.generation);
  /** An edit drops the problems of the fields it changed. */
  const edit = (next: SpecForm) => {
    setProblems((ps) => problemsAfterEdit(ps, form, next));
    setForm(next);
  };
  const changedMeanwhile = s.generation !== baseGen;

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setProblems([]);
    try {
      // Fields the form does not edit (the backup policy) are kept as they are.
      const spec = { ...specFromForm(form), ...(s.spec?.backupPolicy ? { backupPolicy: s.spec.backupPolicy } : {}) };
      await checkSpecRules(spec, form);
      const { server } = await api.servers.updateServer({ id: s.id, spec, applyNow });
      if (server) {
        actions.trackUpdate(s, server.generation);
        setBaseGen(server.generation);
        setForm(formFromSpec(server.spec!));
      }
      toast("ok", `Saved ${s.spec?.name} (generation ${server?.generation})`);
    } catch (err) {
      setProblems(problemsOfError(err, form));
      setAttempt((n) => n + 1);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form onSubmit={submit} noValidate className="edit-spec">
      <SpecFields
        form={form}
        onChange={edit}
        mode="edit"
        hosts={hosts}
        problems={problems}
        attempt={attempt}
        idBase={idBase}
        extra={
          <Field label="Project" hint="a server stays in its project">
            <input value={s.project} disabled />
          </Field>
        }
      />
      <label className="check">
        <input type="checkbox" checked={applyNow} onChange={(e) => setApplyNow(e.target.checked)} /> Apply now (recreate the container at once; otherwise at the next restart)
      </label>
      {changedMeanwhile && (
        <p className="notice">
          The spec changed meanwhile (generation {s.generation.toString()}).{" "}
          <button
            type="button"
            className="link"
            onClick={() => {
              setForm(formFromSpec(s.spec!));
              setProblems([]);
              setBaseGen(s.generation);
            }}
          >
            Load the current spec
          </button>
        </p>
      )}
      <ProblemSummary problems={problems} />
      <div className="form-actions">
        <button type="submit" className="button primary" disabled={busy}>
          {busy ? "Saving…" : "Save spec"}
        </button>
        <button
          type="button"
          className="button"
          onClick={() => {
            setForm(formFromSpec(s.spec!));
            setProblems([]);
          }}
        >
          Reset
        </button>
      </div>
    </form>
  );
}
