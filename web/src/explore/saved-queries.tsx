/**
 * Saved queries on the Explore page: the side panel that lists them (open,
 * delete with a confirmation; whether each one's alert fires) and the Save
 * dialog (CreateSavedQuery, or UpdateSavedQuery of the one opened with the
 * version it was opened at: a query changed since answers ABORTED, and the
 * dialog offers to reload it). The manager's refusals land on the fields.
 */
import { useCallback, useEffect, useId, useState, type ReactNode } from "react";
import { Code, ConnectError } from "@connectrpc/connect";
import { Severity } from "@berth/proto/berth/v1/alert_pb.js";
import type { SavedQuery } from "@berth/proto/berth/v1/query_pb.js";
import { BadRequestSchema } from "@berth/proto/google/rpc/error_details_pb.js";
import { useSession } from "../app-context.js";
import { errorText } from "../api/client.js";
import { ConfirmDialog } from "../ui/confirm.js";
import { Modal } from "../ui/modal.js";
import { useToast } from "../ui/toast.js";
import { formatExplore, sameQuery, stateOfQuery, type ExploreState } from "./model.js";
import { checkSaveForm, emptySaveForm, formOfSaved, problemsOfRefusal, specOf, type SaveField, type SaveForm, type SaveProblem } from "./saved-model.js";

const SOURCE_NAME = ["", "servers", "hosts", "events"];

export function SavedQueriesPanel({
  version,
  openedId,
  onOpen,
  onClose,
  onDeleted,
}: {
  /** Changes when the list should be asked again (a query saved). */
  version: number;
  openedId: string | undefined;
  onOpen: (q: SavedQuery) => void;
  onClose: () => void;
  onDeleted: (id: string) => void;
}) {
  const { api, me, can } = useSession();
  const toast = useToast();
  const [list, setList] = useState<SavedQuery[]>();
  const [error, setError] = useState<string>();
  const [deleting, setDeleting] = useState<SavedQuery>();
  const [tick, setTick] = useState(0);
  const reload = useCallback(() => setTick((n) => n + 1), []);
  useEffect(() => {
    const abort = new AbortController();
    api.savedQueries
      .listSavedQueries({ pageSize: 1000 }, { signal: abort.signal })
      .then((r) => {
        setList(r.savedQueries);
        setError(undefined);
      })
      .catch((err: unknown) => !abort.signal.aborted && setError(errorText(err)));
    return () => abort.abort();
  }, [api, version, tick]);
  // Another's shared query: only an operator may delete it (the manager checks).
  const mayDelete = (q: SavedQuery) => q.ownerTokenId === me.id || can.operate;
  return (
    <aside className="saved-panel" id="saved-queries" aria-labelledby="saved-title">
      <div className="saved-head">
        <h2 id="saved-title">Saved queries</h2>
        <button type="button" className="button small ghost" onClick={reload}>
          Refresh
        </button>
        <button type="button" className="button small ghost" onClick={onClose} aria-label="Close saved queries">
          ✕
        </button>
      </div>
      {error && (
        <p className="error-box" role="alert">
          {error}
        </p>
      )}
      {list === undefined && !error && <p className="muted">Loading…</p>}
      {list?.length === 0 && <p className="muted">None yet. Save the page's query with Save query….</p>}
      <ul className="saved-list" aria-label="Saved queries">
        {list?.map((q) => (
          <li key={q.id} data-saved-name={q.spec?.name} className={q.id === openedId ? "current" : undefined}>
            <div className="saved-line">
              <button type="button" className="link strong" onClick={() => onOpen(q)} aria-current={q.id === openedId ? "true" : undefined}>
                {q.spec?.name}
              </button>
              {q.alertFiring && <span className="badge tone-bad">alert firing</span>}
              {q.spec?.alert?.enabled && !q.alertFiring && <span className="badge">alert</span>}
              {q.spec?.pinned && <span className="badge tone-info">pinned</span>}
              <span className="badge">{q.spec?.shared ? "shared" : "private"}</span>
            </div>
            {q.spec?.description && <div className="small">{q.spec.description}</div>}
            <div className="muted small">
              {SOURCE_NAME[q.spec?.query?.source ?? 0]}
              {q.spec?.query?.filter && (
                <>
                  {" · "}
                  <code className="saved-filter">{q.spec.query.filter}</code>
                </>
              )}{" "}
              · by {q.ownerName || q.ownerTokenId} {q.project && `· ${q.project}`}
            </div>
            <div className="saved-actions">
              <a
                href={`/explore${formatExplore(stateOfQuery(q.spec?.query, q.id))}`}
                className="small"
                onClick={(e) => {
                  if (e.metaKey || e.ctrlKey || e.shiftKey) return;
                  e.preventDefault();
                  onOpen(q);
                }}
              >
                Open
              </a>
              {mayDelete(q) && (
                <button type="button" className="link small danger" onClick={() => setDeleting(q)} aria-label={`Delete ${q.spec?.name}`}>
                  Delete
                </button>
              )}
            </div>
          </li>
        ))}
      </ul>
      {deleting && (
        <ConfirmDialog
          title={`Delete the saved query ${deleting.spec?.name}?`}
          confirmLabel="Delete"
          danger
          onClose={() => setDeleting(undefined)}
          onConfirm={async () => {
            try {
              await api.savedQueries.deleteSavedQuery({ id: deleting.id });
              toast("ok", `Deleted the saved query ${deleting.spec?.name}`);
              onDeleted(deleting.id);
              reload();
              return undefined;
            } catch (err) {
              return errorText(err);
            }
          }}
        >
          <p>
            It goes for everyone it is shared with{deleting.spec?.pinned ? ", and from the home page" : ""}
            {deleting.spec?.alert?.enabled ? "; its alert is resolved" : ""}. The page keeps showing its query until you change it.
          </p>
        </ConfirmDialog>
      )}
    </aside>
  );
}

/** The manager's refusal as problems on the form's fields. */
function problemsOf(err: unknown): SaveProblem[] {
  const e = ConnectError.from(err);
  if (e.code !== Code.InvalidArgument && e.code !== Code.AlreadyExists) return [{ field: undefined, message: errorText(err) }];
  const violations = e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations);
  const out = problemsOfRefusal(e.rawMessage, violations);
  // An existing name is the name's problem.
  return e.code === Code.AlreadyExists ? out.map((p) => ({ ...p, field: p.field ?? "name" })) : out;
}

export function SaveDialog({
  state,
  opened,
  onClose,
  onSaved,
  onReloaded,
}: {
  state: ExploreState;
  opened: SavedQuery | undefined;
  onClose: () => void;
  onSaved: (q: SavedQuery) => void;
  /** The opened query was changed by someone else and has been fetched again. */
  onReloaded: (q: SavedQuery) => void;
}) {
  const { api, can } = useSession();
  const toast = useToast();
  const ids = useId();
  const [form, setForm] = useState<SaveForm>(() => (opened ? formOfSaved(opened) : emptySaveForm()));
  const [problems, setProblems] = useState<SaveProblem[]>([]);
  const [busy, setBusy] = useState(false);
  const [conflict, setConflict] = useState(false);
  const edit = (patch: Partial<SaveForm>) => {
    setForm((f) => ({ ...f, ...patch }));
    const changed = Object.keys(patch) as SaveField[];
    setProblems((ps) => ps.filter((p) => p.field === undefined || !changed.includes(p.field)));
  };
  const problemOf = (f: SaveField) => problems.find((p) => p.field === f)?.message;
  const general = problems.filter((p) => p.field === undefined || p.field === "cel" || p.field === "group" || p.field === "query");
  const save = async (asNew: boolean) => {
    const local = checkSaveForm(form);
    if (local.length > 0) return setProblems(local);
    setBusy(true);
    setProblems([]);
    setConflict(false);
    try {
      const spec = specOf(state, form);
      const saved =
        opened && !asNew
          ? (await api.savedQueries.updateSavedQuery({ id: opened.id, spec, expectedVersion: opened.version })).savedQuery
          : (await api.savedQueries.createSavedQuery({ spec })).savedQuery;
      if (!saved) throw new Error("the manager did not answer with the saved query");
      toast("ok", `${opened && !asNew ? "Saved changes to" : "Saved"} ${saved.spec?.name}`);
      onSaved(saved);
      onClose();
    } catch (err) {
      if (ConnectError.from(err).code === Code.Aborted) setConflict(true);
      else setProblems(problemsOf(err));
    } finally {
      setBusy(false);
    }
  };
  const reload = async () => {
    if (!opened) return;
    try {
      const { savedQuery } = await api.savedQueries.getSavedQuery({ id: opened.id });
      if (savedQuery) {
        onReloaded(savedQuery);
        onClose();
      }
    } catch (err) {
      setProblems([{ field: undefined, message: errorText(err) }]);
    }
  };
  const changedQuery = opened !== undefined && !sameQuery(state, stateOfQuery(opened.spec?.query));
  const field = (key: SaveField, label: string, control: (p: { id: string; "aria-invalid": true | undefined; "aria-describedby": string | undefined }) => ReactNode, hint?: string) => {
    const problem = problemOf(key);
    const id = `${ids}-${key}`;
    return (
      <div className="field">
        <label className="label" htmlFor={id}>
          {label}
        </label>
        {control({ id, "aria-invalid": problem ? true : undefined, "aria-describedby": problem ? `${id}-error` : hint ? `${id}-hint` : undefined })}
        {problem ? (
          <p className="field-error" id={`${id}-error`}>
            {problem}
          </p>
        ) : (
          hint && (
            <p className="muted small" id={`${id}-hint`}>
              {hint}
            </p>
          )
        )}
      </div>
    );
  };
  return (
    <Modal
      title={opened ? `Save ${opened.spec?.name}` : "Save query"}
      onClose={onClose}
      testId="save-query"
      footer={
        <>
          <button type="button" className="button" onClick={onClose}>
            Cancel
          </button>
          {opened && (
            <button type="button" className="button" disabled={busy} onClick={() => void save(true)}>
              Save as new
            </button>
          )}
          <button type="button" className="button primary" disabled={busy} onClick={() => void save(false)}>
            {busy ? "Saving…" : opened ? "Save changes" : "Save"}
          </button>
        </>
      }
    >
      <form
        className="save-form"
        onSubmit={(e) => {
          e.preventDefault();
          void save(false);
        }}
      >
        <p className="muted small">
          {state.source}
          {state.cel ? (
            <>
              {" "}
              where <code>{state.cel}</code>
            </>
          ) : (
            ", every record"
          )}
          {state.view === "chart" && state.group.length > 0 && <> · grouped by {state.group.join(", ")}</>} · shown as {state.view}
          {changedQuery && " (changed since it was opened)"}
        </p>
        {conflict && (
          <div className="error-box" role="alert">
            This saved query was changed since you opened it. Reload it (your changes on this page are lost), or Save as new.{" "}
            <button type="button" className="button small" onClick={() => void reload()}>
              Reload
            </button>
          </div>
        )}
        {general.map((p, i) => (
          <p key={i} className="error-box" role="alert">
            {p.message}
          </p>
        ))}
        {field(
          "name",
          "Name",
          (a) => <input {...a} name="name" value={form.name} onChange={(e) => edit({ name: e.target.value })} autoComplete="off" spellCheck={false} data-autofocus />,
          "lowercase letters, digits and '-', e.g. crashed-this-week",
        )}
        {field("description", "Description", (a) => <textarea {...a} name="description" rows={2} value={form.description} onChange={(e) => edit({ description: e.target.value })} />)}
        <label className="check">
          <input type="checkbox" name="shared" checked={form.shared} disabled={!can.operate} onChange={(e) => edit({ shared: e.target.checked })} aria-describedby={`${ids}-shared-hint`} /> Shared with the
          project
        </label>
        <p className="muted small" id={`${ids}-shared-hint`}>
          {can.operate ? "Everyone who may read the project sees it; otherwise only you." : "Sharing needs the operator role: a viewer's queries are private."}
        </p>
        {problemOf("shared") && <p className="field-error">{problemOf("shared")}</p>}
        <label className="check">
          <input type="checkbox" name="pinned" checked={form.pinned} onChange={(e) => edit({ pinned: e.target.checked })} /> Pinned to the home page
        </label>
        {problemOf("pinned") && <p className="field-error">{problemOf("pinned")}</p>}
        <fieldset className="alert-fields">
          <legend>Alert</legend>
          <label className="check">
            <input type="checkbox" name="alert" checked={form.alert} disabled={!can.operate} onChange={(e) => edit({ alert: e.target.checked })} aria-describedby={`${ids}-alert-hint`} /> Fire an
            alert when it returns rows
          </label>
          <p className="muted small" id={`${ids}-alert-hint`}>
            {can.operate ? "Rows are records, or groups for a chart; it resolves when the query returns none." : "An alert needs the operator role."}
          </p>
          {form.alert && (
            <div className="form-row">
              {field("fireAfter", "Fire after", (a) => <input {...a} name="fire-after" value={form.fireAfter} onChange={(e) => edit({ fireAfter: e.target.value })} placeholder="5m" size={8} />, "rows for this long: 30s, 5m, 1h")}
              {field("severity", "Severity", (a) => (
                <select {...a} name="severity" value={form.severity} onChange={(e) => edit({ severity: Number(e.target.value) as Severity })}>
                  <option value={Severity.INFO}>info</option>
                  <option value={Severity.WARNING}>warning</option>
                  <option value={Severity.CRITICAL}>critical</option>
                </select>
              ))}
            </div>
          )}
        </fieldset>
        {/* Enter in a text field saves. */}
        <button type="submit" hidden />
      </form>
    </Modal>
  );
}
