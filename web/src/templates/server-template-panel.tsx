/**
 * The template part of a server's Overview (detail drawer): the template it
 * was made from and the version its spec was rendered from; when the
 * template moved on (the TemplateOutdated condition, which GetServer adds and
 * the watch does not carry) "version N is available" with Apply, which
 * renders the spec again from the current version (UpdateServer with
 * `template`); when it is gone, the manager's message. "Edit variables"
 * changes the server's values the same way. What UpdateServer changed
 * applies at the next restart or rebuild: while the container runs the older
 * spec (SpecApplied False, PendingRestart) the panel offers "Rebuild now".
 */
import { useEffect, useId, useState, type FormEvent } from "react";
import { Code, ConnectError } from "@connectrpc/connect";
import { ConditionStatus, type Condition, type Server } from "@berth/proto/berth/v1/server_pb.js";
import type { Template } from "@berth/proto/berth/v1/template_pb.js";
import { useSession } from "../app-context.js";
import { errorText } from "../api/client.js";
import { fieldErrors } from "../servers/spec-form.js";
import type { FieldProblem } from "../servers/spec-form-model.js";
import type { ServerAction } from "../servers/model.js";
import { useToast } from "../ui/toast.js";
import { checkValues, initialValues, problemsOfTemplateError, shownVariables, valuesToSend, variableField } from "./variable-form.js";
import { VariableField } from "./template-server-form.js";

/** What a secret's stored value is shown as; sent back, it keeps the stored value. */
const SECRET_MASK = "********";

export function ServerTemplatePanel({ s, onAction }: { s: Server; onAction: (s: Server, a: ServerAction) => void }) {
  const { api, can } = useSession();
  const toast = useToast();
  const ref = s.spec?.template;
  const id = ref?.templateId ?? "";
  // undefined: loading; null: gone (or not visible).
  const [template, setTemplate] = useState<Template | null>();
  const [outdated, setOutdated] = useState<Condition>();
  const [busy, setBusy] = useState(false);
  /** What the last Apply or variables change did, and the generation it made (shown until the container runs it). */
  const [result, setResult] = useState<{ text: string; generation: bigint }>();
  const [error, setError] = useState<string>();
  const [editing, setEditing] = useState(false);
  const [reloads, setReloads] = useState(0);
  const titleId = useId();

  useEffect(() => {
    if (!id) return;
    let live = true;
    api.templates.getTemplate({ id }).then(
      (r) => live && setTemplate(r.template ?? null),
      (err) => live && setTemplate(ConnectError.from(err).code === Code.NotFound ? null : undefined),
    );
    // The condition is computed when read: the watch does not carry it.
    api.servers.getServer({ id: s.id }).then(
      (r) => live && setOutdated(r.server?.status?.conditions.find((c) => c.type === "TemplateOutdated" && c.status === ConditionStatus.TRUE)),
      () => undefined,
    );
    return () => {
      live = false;
    };
  }, [api, id, s.id, s.generation, ref?.version, reloads]);

  const pending = s.status?.conditions.find((c) => c.type === "SpecApplied" && c.status === ConditionStatus.FALSE && c.reason === "PendingRestart");
  // Once the reconciler saw the change and the container runs it, the result has nothing left to say.
  const showResult = result && !(!pending && (s.status?.observedGeneration ?? 0n) >= result.generation);
  const newer = outdated?.reason === "TemplateUpdated" && template ? template : undefined;
  const gone = outdated?.reason === "TemplateDeleted" || template === null;

  const apply = async () => {
    if (!ref || !s.spec || !newer) return;
    setBusy(true);
    setError(undefined);
    setResult(undefined);
    try {
      const { server } = await api.servers.updateServer({
        id: s.id,
        spec: s.spec,
        template: { templateId: ref.templateId, image: ref.image, variables: ref.variables },
        expectedVersion: s.version,
      });
      const v = server?.spec?.template?.version ?? newer.version;
      setResult({
        text: `The spec is now rendered from version ${v} (generation ${server?.generation ?? "?"}). It takes effect when the server is next started, restarted or rebuilt.`,
        generation: server?.generation ?? 0n,
      });
      toast("ok", `Applied template ${newer.name} version ${v} to ${s.spec.name}`);
      setReloads((n) => n + 1);
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };

  if (!ref?.templateId) return null;
  return (
    <section className="server-template" aria-labelledby={titleId}>
      <h3 id={titleId}>Template</h3>
      <p data-testid="server-template">
        <span className="strong">{template ? template.name : <span className="mono">{id}</span>}</span> <span className="muted">version {ref.version.toString()}</span>
        {template && !newer && !gone && <span className="muted small"> (current)</span>}
      </p>
      {newer && (
        <div className="notice" role="note" data-testid="template-outdated">
          <p className="strong">
            Template {newer.name} v{newer.version.toString()} is available (server on v{ref.version.toString()}).
          </p>
          <p className="small">It keeps running the spec rendered from v{ref.version.toString()}. Apply renders its spec again from v{newer.version.toString()} with its variables; the container changes at the next start, restart or rebuild.</p>
          {can.operate && (
            <button type="button" className="button small primary" disabled={busy} onClick={() => void apply()}>
              {busy ? "Applying…" : `Apply v${newer.version.toString()}`}
            </button>
          )}
        </div>
      )}
      {gone && (
        <div className="notice" role="note" data-testid="template-outdated">
          {outdated?.message ?? `Template ${id} is gone; this server keeps running the spec rendered from it.`}
        </div>
      )}
      {error && (
        <p className="error-box" role="alert">
          {error}
        </p>
      )}
      {showResult && (
        <p className="ok-box" role="status" data-testid="template-result">
          {result.text}
        </p>
      )}
      {pending && (
        <div className="notice" role="note" data-testid="template-pending">
          <p>Not applied yet: {pending.message || "the container runs an older spec; restart or rebuild to apply it"}.</p>
          {can.operate && (
            <button type="button" className="button small" onClick={() => onAction(s, "rebuild")}>
              Rebuild now
            </button>
          )}
        </div>
      )}
      {template && can.operate && !editing && shownVariables(template).length > 0 && (
        <button type="button" className="button small" onClick={() => setEditing(true)}>
          Edit variables
        </button>
      )}
      {template && editing && (
        <VariablesForm
          s={s}
          template={template}
          onDone={(done) => {
            setEditing(false);
            if (done) {
              setResult(done);
              setReloads((n) => n + 1);
            }
          }}
        />
      )}
    </section>
  );
}

/**
 * The server's variable values as a form (the template's current variables;
 * a stored secret shows as ******** and is kept unless changed), sent with
 * UpdateServer; the manager's `template.variables["X"]` lands on X.
 */
function VariablesForm({ s, template, onDone }: { s: Server; template: Template; onDone: (done?: { text: string; generation: bigint }) => void }) {
  const { api } = useSession();
  const toast = useToast();
  const ref = s.spec!.template!;
  const stored = new Set(s.spec!.secretEnv);
  const kept = (env: string) => template.variables.some((v) => v.env === env && v.secret) && stored.has(env);
  const [values, setValues] = useState<Record<string, string>>(() => {
    const out = initialValues(template);
    for (const [k, v] of Object.entries(ref.variables)) if (k in out) out[k] = v;
    for (const k of Object.keys(out)) if (kept(k)) out[k] = SECRET_MASK;
    return out;
  });
  const [problems, setProblems] = useState<FieldProblem[]>([]);
  const [busy, setBusy] = useState(false);
  const idBase = useId();
  const errs = fieldErrors(problems, idBase);
  const newer = template.version > ref.version;

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const found = checkValues(template, values).filter((p) => !template.variables.some((v) => variableField(v.env) === p.field && kept(v.env) && values[v.env] === SECRET_MASK));
    if (found.length > 0) {
      setProblems(found);
      return;
    }
    setBusy(true);
    setProblems([]);
    try {
      const { server } = await api.servers.updateServer({
        id: s.id,
        spec: s.spec!,
        template: { templateId: ref.templateId, image: ref.image, variables: valuesToSend(template, values) },
        expectedVersion: s.version,
      });
      toast("ok", `Saved the variables of ${s.spec!.name}`);
      onDone({
        text: `Variables saved: the spec is rendered again from version ${server?.spec?.template?.version ?? template.version} (generation ${server?.generation ?? "?"}); it takes effect when the server is next started, restarted or rebuilt.`,
        generation: server?.generation ?? 0n,
      });
    } catch (err) {
      setProblems(problemsOfTemplateError(err));
    } finally {
      setBusy(false);
    }
  };

  const shown = new Set(shownVariables(template).map((v) => variableField(v.env)));
  // A problem of a variable the form does not show (hidden and fixed) is listed under it.
  const general = problems.filter((p) => p.field === undefined || !shown.has(p.field));
  return (
    <form className="server-variables" onSubmit={submit} noValidate aria-label="Edit variables" data-testid="server-variables">
      {newer && <p className="notice small">Saving renders the spec from the template&apos;s current version {template.version.toString()} (the server is on {ref.version.toString()}).</p>}
      <div className="form-grid">
        {shownVariables(template).map((v) => (
          <VariableField
            key={v.env}
            v={v}
            value={values[v.env] ?? v.defaultValue}
            onChange={(x) => {
              setValues((vs) => ({ ...vs, [v.env]: x }));
              setProblems((ps) => ps.filter((p) => p.field !== variableField(v.env)));
            }}
            errs={errs}
            {...(kept(v.env) ? { kept: SECRET_MASK, note: "leave ******** to keep the stored value" } : {})}
          />
        ))}
      </div>
      {general.length > 0 && (
        <div className="error-box" role="alert">
          {general.map((p, i) => (
            <p key={i}>{p.message}</p>
          ))}
        </div>
      )}
      <div className="form-actions">
        <button type="submit" className="button primary small" disabled={busy}>
          {busy ? "Saving…" : "Save variables"}
        </button>
        <button type="button" className="button small" onClick={() => onDone()}>
          Cancel
        </button>
      </div>
    </form>
  );
}
