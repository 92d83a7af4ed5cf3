/**
 * Templates: the project's and the global ones (ListTemplates), one in full
 * (images, startup, variables, ports, install, ready pattern), importing a
 * Pterodactyl or Pelican egg (ImportTemplate) with what of it was not taken
 * over, creating, editing and copying (template-editor.tsx), and deleting
 * (not built-ins). Viewers only read; operators import, create, edit and
 * delete their project's templates; global ones are offered to all-projects
 * admins only, as the manager decides (its PermissionDenied is shown).
 */
import { useState, type ChangeEvent } from "react";
import { HostPortMode, type ImportTemplateResponse, type Template, type TemplatePort, VariableKind } from "@berth/proto/berth/v1/template_pb.js";
import { Protocol } from "@berth/proto/berth/v1/server_pb.js";
import { useSession } from "../app-context.js";
import { errorText } from "../api/client.js";
import { ConfirmDialog } from "../ui/confirm.js";
import { ErrorBox, ErrorText } from "../ui/error-box.js";
import { Modal } from "../ui/modal.js";
import { useToast } from "../ui/toast.js";
import { scopeOf, useTemplates } from "./use-templates.js";
import { TemplateEditor } from "./template-editor.js";
import { copyForm, type TemplateForm } from "./template-form-model.js";

/** An egg file is at most 1 MiB (ImportTemplateRequest.content). */
const MAX_EGG_BYTES = 1 << 20;

export function TemplatesPage() {
  const { can, api } = useSession();
  const toast = useToast();
  const templates = useTemplates();
  const [viewing, setViewing] = useState<Template>();
  const [deleting, setDeleting] = useState<Template>();
  const [importing, setImporting] = useState(false);
  const [importProject, setImportProject] = useState("");
  const [imported, setImported] = useState<ImportTemplateResponse>();
  const [importError, setImportError] = useState<string>();
  const [editing, setEditing] = useState<{ template?: Template; start?: TemplateForm }>();
  const list = templates.templates ?? [];
  /** As the manager decides (template-apply.ts requireWritable): not built-in; a global one needs an all-projects admin. */
  const mayEdit = (t: Template) => can.operate && !t.builtIn && (t.project !== "" || can.infra);

  const importFile = async (e: ChangeEvent<HTMLInputElement>) => {
    const file = e.target.files?.[0];
    e.target.value = "";
    if (!file) return;
    setImportError(undefined);
    setImported(undefined);
    if (file.size > MAX_EGG_BYTES) {
      setImportError(`${file.name} is ${file.size} bytes; an egg file is at most 1 MiB`);
      return;
    }
    setImporting(true);
    try {
      const content = new Uint8Array(await file.arrayBuffer());
      const res = await api.templates.importTemplate({ content, project: can.project === null ? importProject.trim() : "" });
      setImported(res);
      toast("ok", `Imported template ${res.template?.name ?? ""}`);
      await templates.refresh();
    } catch (err) {
      setImportError(`${file.name}: ${errorText(err)}`);
    } finally {
      setImporting(false);
    }
  };

  return (
    <section className="page" aria-labelledby="templates-title">
      <div className="page-head">
        <div>
          <h1 id="templates-title">Templates</h1>
          <p className="summary">Recipes for servers: images, startup command, variables and ports. Pick one under New server → From a template.</p>
        </div>
        {can.operate && (
          <button type="button" className="button primary" onClick={() => setEditing({})}>
            New template
          </button>
        )}
      </div>
      {can.operate && (
        <div className="template-import" aria-label="Import an egg" role="group">
          <label className="field">
            <span className="label">Import an egg</span>
            <input type="file" accept=".json,.yaml,.yml,application/json" onChange={importFile} disabled={importing} name="egg" aria-describedby="egg-hint" />
            <span className="hint" id="egg-hint">
              A Pterodactyl (PTDL_v1, PTDL_v2 JSON) or Pelican (YAML) egg file, at most 1 MiB. {importing ? "Importing…" : ""}
            </span>
          </label>
          {can.project === null && (
            <label className="field">
              <span className="label">Into project</span>
              <input value={importProject} onChange={(e) => setImportProject(e.target.value)} placeholder="empty: global" autoComplete="off" name="importProject" />
              <span className="hint">empty: a global template (every project sees it)</span>
            </label>
          )}
          <ErrorText text={importError} />
        </div>
      )}
      {imported && <ImportResult result={imported} onView={(t) => setViewing(t)} onDismiss={() => setImported(undefined)} />}
      <ErrorBox error={templates.error} what="Could not list templates" />
      <div className="table-wrap">
        <table className="table templates stack-on-phone" aria-label="Templates">
          <thead>
            <tr>
              <th>Name</th>
              <th>Scope</th>
              <th>Version</th>
              <th>Description</th>
              <th aria-label="Actions" />
            </tr>
          </thead>
          <tbody>
            {list.map((t) => (
              <tr key={t.id} data-template-name={t.name}>
                <td>
                  <button type="button" className="link strong" onClick={() => setViewing(t)}>
                    {t.name}
                  </button>
                  {t.builtIn && (
                    <>
                      {" "}
                      <span className="badge tone-idle" title="Shipped with berth: read-only (copy it to change it)">
                        built-in
                      </span>
                    </>
                  )}
                  <div className="muted mono small">{t.id}</div>
                </td>
                <td>{scopeOf(t)}</td>
                <td>{String(t.version)}</td>
                <td className="small wrap">{t.description}</td>
                <td className="actions">
                  <button type="button" className="button small" onClick={() => setViewing(t)}>
                    View
                  </button>
                  {mayEdit(t) && (
                    <button type="button" className="button small" onClick={() => setEditing({ template: t })} aria-label={`Edit ${t.name}`}>
                      Edit
                    </button>
                  )}
                  {can.operate && (
                    <button type="button" className="button small" onClick={() => setEditing({ start: copyForm(t) })} aria-label={`Copy ${t.name}`} title="A new template with this one's content">
                      Copy
                    </button>
                  )}
                  {can.operate && !t.builtIn && (
                    <button type="button" className="button small danger-soft" onClick={() => setDeleting(t)}>
                      Delete
                    </button>
                  )}
                </td>
              </tr>
            ))}
            {templates.templates && list.length === 0 && (
              <tr>
                <td colSpan={5} className="empty">
                  No template yet.
                </td>
              </tr>
            )}
            {!templates.templates && !templates.error && (
              <tr>
                <td colSpan={5} className="muted">
                  Loading…
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
      {viewing && (
        <Modal title={`Template ${viewing.name}`} onClose={() => setViewing(undefined)} wide testId="template-view">
          <TemplateDetails t={viewing} />
        </Modal>
      )}
      {editing && (
        <TemplateEditor
          key={editing.template?.id ?? "new"}
          template={editing.template}
          {...(editing.start ? { start: editing.start } : {})}
          onClose={() => setEditing(undefined)}
          onSaved={() => void templates.refresh()}
        />
      )}
      {deleting && (
        <ConfirmDialog
          title={`Delete template ${deleting.name}?`}
          confirmLabel="Delete template"
          danger
          onClose={() => setDeleting(undefined)}
          onConfirm={async () => {
            try {
              await api.templates.deleteTemplate({ id: deleting.id });
            } catch (err) {
              return errorText(err);
            }
            toast("ok", `Deleted template ${deleting.name}`);
            if (imported?.template?.id === deleting.id) setImported(undefined);
            void templates.refresh();
            return undefined;
          }}
        >
          <p>
            berth forgets template <strong>{deleting.name}</strong>. Servers made from it keep running the spec rendered for them.
          </p>
        </ConfirmDialog>
      )}
    </section>
  );
}

/** What an import made, and what of the egg it did not take over (field and reason), in plain sight. */
function ImportResult(props: { result: ImportTemplateResponse; onView: (t: Template) => void; onDismiss: () => void }) {
  const { template, unmapped } = props.result;
  return (
    <section className="import-result" aria-labelledby="import-result-title" data-testid="import-result">
      <h2 id="import-result-title">
        Imported {template?.name} {template && <span className="muted small">({scopeOf(template)}, version {String(template.version)})</span>}
      </h2>
      {unmapped.length === 0 ? (
        <p>Everything in the egg was taken over.</p>
      ) : (
        <div className="notice" role="region" aria-label="Not imported">
          <p className="strong">
            {unmapped.length === 1 ? "1 part" : `${unmapped.length} parts`} of the egg could not be taken over; check whether the template still does what the egg did:
          </p>
          <table className="table compact" aria-label="Unmapped egg fields">
            <thead>
              <tr>
                <th>Egg field</th>
                <th>Why</th>
              </tr>
            </thead>
            <tbody>
              {unmapped.map((u, i) => (
                <tr key={i} data-unmapped-field={u.field}>
                  <td className="mono small">{u.field}</td>
                  <td className="small wrap">{u.reason}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <div className="actions">
        {template && (
          <button type="button" className="button small" onClick={() => props.onView(template)}>
            View template
          </button>
        )}
        <button type="button" className="button small" onClick={props.onDismiss}>
          Dismiss
        </button>
      </div>
    </section>
  );
}

function kindName(k: VariableKind | undefined): string {
  if (k === VariableKind.INTEGER) return "integer";
  if (k === VariableKind.NUMBER) return "number";
  if (k === VariableKind.BOOLEAN) return "boolean";
  return "text";
}

function portText(p: TemplatePort): string {
  const proto = p.protocol === Protocol.UDP ? "udp" : "tcp";
  const host =
    p.hostPortMode === HostPortMode.FIXED
      ? `host ${p.hostPort}`
      : p.hostPortMode === HostPortMode.RANGE
        ? `host: first free of ${p.hostPortMin}–${p.hostPortMax}`
        : p.hostPortMode === HostPortMode.NONE
          ? "not published"
          : "host: same number";
  return `${p.name ? `${p.name}: ` : ""}${p.containerPort}/${proto} (${host})`;
}

/** One template in full. */
export function TemplateDetails({ t }: { t: Template }) {
  return (
    <div className="template-details">
      <dl className="kv">
        <dt>Scope</dt>
        <dd>
          {scopeOf(t)}
          {t.builtIn ? " (built-in, read-only)" : ""}
        </dd>
        <dt>Version</dt>
        <dd>{String(t.version)}</dd>
        <dt>Description</dt>
        <dd className="wrap">{t.description || <span className="muted">none</span>}</dd>
        <dt>Images</dt>
        <dd>
          <ul className="plain">
            {t.images.map((i, n) => (
              <li key={i.image}>
                <span className="mono">{i.image}</span>
                {i.label && <span className="muted"> — {i.label}</span>}
                {n === 0 && <span className="muted"> (default)</span>}
              </li>
            ))}
          </ul>
        </dd>
        <dt>Startup</dt>
        <dd>
          {t.startup ? <code className="mono wrap">{t.startup}</code> : <span className="muted">the image&apos;s own command</span>}
          {t.startupShell && <span className="muted small"> (run with /bin/sh -c)</span>}
        </dd>
        <dt>Ports</dt>
        <dd>{t.ports.length === 0 ? <span className="muted">none</span> : <ul className="plain">{t.ports.map((p, i) => <li key={i}>{portText(p)}</li>)}</ul>}</dd>
        {t.console && (
          <>
            <dt>Console</dt>
            <dd>stdin kept open{t.stopCommand ? `; stop command "${t.stopCommand}"` : ""}</dd>
          </>
        )}
        {t.stopSignal && (
          <>
            <dt>Stop signal</dt>
            <dd className="mono">{t.stopSignal}</dd>
          </>
        )}
        {t.readyPattern && (
          <>
            <dt>Ready when</dt>
            <dd>
              a line matches <code className="mono">{t.readyPattern}</code>
            </dd>
          </>
        )}
        {t.install && (
          <>
            <dt>Install</dt>
            <dd>
              in <span className="mono">{t.install.image}</span> with {t.install.entrypoint || "sh"}, at most {t.install.timeoutSeconds || 600} s
              <pre className="mono small code-block">{t.install.script}</pre>
            </dd>
          </>
        )}
      </dl>
      <h3>Variables</h3>
      {t.variables.length === 0 ? (
        <p className="muted">None.</p>
      ) : (
        <table className="table compact" aria-label="Variables">
          <thead>
            <tr>
              <th>Variable</th>
              <th>Default</th>
              <th>Rule</th>
              <th>Flags</th>
            </tr>
          </thead>
          <tbody>
            {t.variables.map((v) => (
              <tr key={v.env}>
                <td>
                  <div className="strong">{v.name || v.env}</div>
                  <div className="mono small muted">{v.env}</div>
                  {v.description && <div className="small wrap">{v.description}</div>}
                </td>
                <td className="mono small">{v.secret ? "********" : v.defaultValue || <span className="muted">empty</span>}</td>
                <td className="small">
                  {kindName(v.rule?.kind)}
                  {v.rule?.allowed.length ? `, one of ${v.rule.allowed.join(", ")}` : ""}
                  {v.rule?.min !== undefined ? `, min ${v.rule.min}` : ""}
                  {v.rule?.max !== undefined ? `, max ${v.rule.max}` : ""}
                  {v.rule?.regex ? `, matches /${v.rule.regex}/` : ""}
                  {v.rule?.nullable ? ", may be empty" : ""}
                </td>
                <td className="small">{[v.required && "required", v.userEditable ? "editable" : "fixed", v.hidden && "hidden", v.secret && "secret"].filter(Boolean).join(", ")}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
