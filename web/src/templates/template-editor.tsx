/**
 * The template editor (Templates page → New template / Edit / Copy): every
 * field of a template as a form (template-form-model.ts), saved with
 * CreateTemplate or UpdateTemplate (with the version it was read at: a
 * conflict offers to reload). The manager's field violations land on their
 * inputs. Preview renders the saved template with example values
 * (RenderTemplate) and shows the command, environment and ports, or the
 * problems. The editor stays open after a save, on the saved version.
 */
import { useEffect, useId, useRef, useState, type FormEvent, type ReactNode } from "react";
import { Code, ConnectError } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { HostPortMode, TemplateSchema, VariableKind, type Template } from "@berth/proto/berth/v1/template_pb.js";
import { RestartPolicy } from "@berth/proto/berth/v1/server_pb.js";
import { useSession } from "../app-context.js";
import { errorText } from "../api/client.js";
import { joinWords } from "../ui/format.js";
import { Modal } from "../ui/modal.js";
import { useToast } from "../ui/toast.js";
import { Field, fieldErrors, FieldError } from "../servers/spec-form.js";
import type { FieldProblem } from "../servers/spec-form-model.js";
import {
  emptyPort,
  emptyTemplateForm,
  emptyVariable,
  formFromTemplate,
  HOST_PORT_MODES,
  move,
  previewOf,
  problemsAfterEdit,
  problemsOfPreview,
  problemsOfSave,
  STOP_SIGNALS,
  templateFromForm,
  type PortForm,
  type TemplateForm,
  type VariableRow,
} from "./template-form-model.js";
import { initialValues, shownVariables, valuesToSend } from "./variable-form.js";
import { VariableField } from "./template-server-form.js";
import { scopeOf } from "./use-templates.js";

type Errs = ReturnType<typeof fieldErrors>;

/** The form without what does not matter for "unsaved changes" (row keys). */
function formKey(f: TemplateForm): string {
  return JSON.stringify({ ...f, variables: f.variables.map(({ key: _key, ...v }) => v) }, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v));
}

export function TemplateEditor(props: {
  /** The template to edit; undefined: a new one (from `start` when given, e.g. a copy). */
  template: Template | undefined;
  start?: TemplateForm;
  onClose: () => void;
  onSaved: (t: Template) => void;
}) {
  const { api, can } = useSession();
  const toast = useToast();
  const [saved, setSaved] = useState<Template | undefined>(props.template);
  const [form, setForm] = useState<TemplateForm>(() => (props.template ? formFromTemplate(props.template) : (props.start ?? emptyTemplateForm())));
  const [savedKey, setSavedKey] = useState(() => (props.template ? formKey(formFromTemplate(props.template)) : ""));
  const [problems, setProblems] = useState<FieldProblem[]>([]);
  const [attempt, setAttempt] = useState(0);
  const [busy, setBusy] = useState(false);
  const [conflict, setConflict] = useState<string>();
  const idBase = useId();
  const formId = `${idBase}-form`;
  const root = useRef<HTMLDivElement>(null);
  const errs = fieldErrors(problems, idBase);
  const dirty = formKey(form) !== savedKey;

  useEffect(() => {
    if (attempt === 0) return;
    const bad = root.current?.querySelector<HTMLElement>('[aria-invalid="true"]');
    if (bad) {
      bad.focus();
      // Its message is under it: keep both in sight.
      bad.scrollIntoView?.({ block: "center" });
    }
    else root.current?.querySelector(".problem-summary")?.scrollIntoView?.({ block: "nearest" });
  }, [attempt]);

  const edit = (next: TemplateForm) => {
    setProblems((ps) => problemsAfterEdit(ps, form, next));
    setForm(next);
  };
  const set = <K extends keyof TemplateForm>(k: K, v: TemplateForm[K]) => edit({ ...form, [k]: v });

  const load = (t: Template) => {
    setSaved(t);
    const f = formFromTemplate(t);
    setForm(f);
    setSavedKey(formKey(f));
    setProblems([]);
    setConflict(undefined);
  };

  const save = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setProblems([]);
    setConflict(undefined);
    try {
      const t = templateFromForm(form);
      const res = saved
        ? await api.templates.updateTemplate({ id: saved.id, template: { ...t, project: "" }, expectedVersion: saved.version })
        : await api.templates.createTemplate({ template: { ...t, project: can.project === null ? form.project.trim() : "" } });
      if (res.template) {
        load(res.template);
        props.onSaved(res.template);
        toast("ok", `${saved ? "Saved" : "Created"} template ${res.template.name} (version ${res.template.version})`);
      }
    } catch (err) {
      if (ConnectError.from(err).code === Code.Aborted) setConflict(ConnectError.from(err).rawMessage);
      else setProblems(problemsOfSave(err, form));
      setAttempt((n) => n + 1);
    } finally {
      setBusy(false);
    }
  };

  const reload = async () => {
    if (!saved) return;
    try {
      const { template } = await api.templates.getTemplate({ id: saved.id });
      if (template) load(template);
    } catch (err) {
      setProblems([{ field: undefined, message: errorText(err) }]);
    }
  };

  const general = problems.filter((p) => p.field === undefined);
  const fields = [...new Set(problems.flatMap((p) => (p.field === undefined ? [] : [p.field])))];
  const title = saved ? `Edit template ${saved.name}` : "New template";
  return (
    <Modal
      title={title}
      onClose={props.onClose}
      wide
      testId="template-editor"
      footer={
        <>
          <span className="muted small grow" role="status">
            {saved ? `${scopeOf(saved)} · version ${saved.version}${dirty ? " · unsaved changes" : ""}` : "not saved yet"}
          </span>
          <button type="button" className="button" onClick={props.onClose}>
            Close
          </button>
          <button type="submit" form={formId} className="button primary" disabled={busy}>
            {busy ? "Saving…" : saved ? "Save" : "Create template"}
          </button>
        </>
      }
    >
      <div ref={root}>
        <form id={formId} onSubmit={save} noValidate className="template-editor">
          <div className="form-grid">
            <Field label="Name" hint="1-100 characters, unique in its project" {...errs.field("name")}>
              <input value={form.name} onChange={(e) => set("name", e.target.value)} name="name" autoComplete="off" {...errs.control("name")} />
            </Field>
            {!saved && can.project === null ? (
              <Field label="Project" hint="empty: global (every project sees it; needs an all-projects admin)" {...errs.field("project")}>
                <input value={form.project} onChange={(e) => set("project", e.target.value)} name="project" autoComplete="off" placeholder="empty: global" {...errs.control("project")} />
              </Field>
            ) : (
              <Field label="Scope" hint={saved ? "a template stays in its project" : "your token's project"}>
                <input value={saved ? scopeOf(saved) : `project ${can.project ?? ""}`} disabled name="scope" />
              </Field>
            )}
            <Field label="Description" hint="plain text, shown in the picker" {...errs.field("description")} wide>
              <textarea value={form.description} onChange={(e) => set("description", e.target.value)} rows={2} name="description" {...errs.control("description")} />
            </Field>
            <ImagesEditor form={form} edit={edit} errs={errs} />
            <Field label="Startup" hint="the command line; {{VARIABLE}} is replaced by a variable's value ({{SERVER_MEMORY}}, {{SERVER_PORT}}, {{SERVER_IP}} are berth's). Empty: the image's own command." {...errs.field("startup")} wide>
              <textarea value={form.startup} onChange={(e) => set("startup", e.target.value)} rows={2} className="mono" spellCheck={false} name="startup" {...errs.control("startup")} />
            </Field>
            <label className="check wide">
              <input type="checkbox" checked={form.startupShell} onChange={(e) => set("startupShell", e.target.checked)} name="startup_shell" />
              Run the startup with /bin/sh -c (for &amp;&amp;, pipes, if …; a variable becomes &quot;$&#123;NAME&#125;&quot; from the environment)
            </label>
            <VariablesEditor form={form} edit={edit} errs={errs} />
            <PortsEditor form={form} edit={edit} errs={errs} />
            <Field label="Data mount path" hint="where the data directory is mounted; empty: /data" {...errs.field("data_mount_path")}>
              <input value={form.dataMountPath} onChange={(e) => set("dataMountPath", e.target.value)} className="mono" placeholder="/data" name="data_mount_path" {...errs.control("data_mount_path")} />
            </Field>
            <Field label="Restart policy" hint="when the container exits by itself" {...errs.field("restart_policy")}>
              <select value={form.restartPolicy} onChange={(e) => set("restartPolicy", Number(e.target.value) as RestartPolicy)} name="restart_policy" {...errs.control("restart_policy")}>
                <option value={RestartPolicy.NEVER}>never</option>
                <option value={RestartPolicy.ON_FAILURE}>on-failure</option>
                <option value={RestartPolicy.ALWAYS}>always</option>
              </select>
            </Field>
            <label className="check wide">
              <input type="checkbox" checked={form.console} onChange={(e) => set("console", e.target.checked)} name="console" />
              Console: keep stdin open, so commands can be sent to the server
            </label>
            <Field label="Stop command" hint="written to the console to stop the server (e.g. stop)" {...errs.field("stop_command")}>
              <input value={form.stopCommand} onChange={(e) => set("stopCommand", e.target.value)} className="mono" name="stop_command" {...errs.control("stop_command")} />
            </Field>
            <Field label="Stop signal" hint="a signal to stop it with instead (e.g. SIGINT)" {...errs.field("stop_signal")}>
              <select value={form.stopSignal} onChange={(e) => set("stopSignal", e.target.value)} name="stop_signal" {...errs.control("stop_signal")}>
                {STOP_SIGNALS.map((s) => (
                  <option key={s} value={s}>
                    {s || "none"}
                  </option>
                ))}
              </select>
            </Field>
            <Field label="Ready pattern" hint="a JavaScript regular expression: ready when a console or log line matches it. Empty: ready when running." {...errs.field("ready_pattern")} wide>
              <input value={form.readyPattern} onChange={(e) => set("readyPattern", e.target.value)} className="mono" spellCheck={false} name="ready_pattern" {...errs.control("ready_pattern")} />
            </Field>
            <fieldset className={`field wide${errs.bad("resources") ? " invalid" : ""}`}>
              <legend>Resource defaults</legend>
              <FieldError id={errs.errorId("resources")} text={errs.messageOf("resources")} />
              <div className="limits-grid">
                <Field label="Memory limit" hint="e.g. 512M or 2G; empty: none" {...errs.field("resources.memory_bytes")}>
                  <input value={form.memory} onChange={(e) => set("memory", e.target.value)} className="mono" placeholder="none" name="resources.memory_bytes" {...errs.control("resources.memory_bytes")} />
                </Field>
                <Field label="Memory + swap" hint="at least the memory limit" {...errs.field("resources.memory_swap_bytes")}>
                  <input value={form.memorySwap} onChange={(e) => set("memorySwap", e.target.value)} className="mono" placeholder="no swap" name="resources.memory_swap_bytes" {...errs.control("resources.memory_swap_bytes")} />
                </Field>
                <Field label="CPUs" hint="cores, e.g. 0.5 or 2" {...errs.field("resources.cpus")}>
                  <input value={form.cpus} onChange={(e) => set("cpus", e.target.value)} inputMode="decimal" placeholder="none" name="resources.cpus" {...errs.control("resources.cpus")} />
                </Field>
                <Field label="Process limit" hint="empty: the manager's default; none: no limit" {...errs.field("resources.pids_limit")}>
                  <input value={form.pidsLimit} onChange={(e) => set("pidsLimit", e.target.value)} placeholder="default" name="resources.pids_limit" {...errs.control("resources.pids_limit")} />
                </Field>
                <Field label="Disk quota" hint="of the data directory, e.g. 10G" {...errs.field("resources.disk_quota_bytes")}>
                  <input value={form.diskQuota} onChange={(e) => set("diskQuota", e.target.value)} className="mono" placeholder="none" name="resources.disk_quota_bytes" {...errs.control("resources.disk_quota_bytes")} />
                </Field>
              </div>
            </fieldset>
            <fieldset className={`field wide${errs.bad("install") ? " invalid" : ""}`}>
              <legend>Install</legend>
              <label className="check">
                <input type="checkbox" checked={form.install} onChange={(e) => set("install", e.target.checked)} name="install" />
                Run an install script once, before the first start (data directory at /mnt/server)
              </label>
              <FieldError id={errs.errorId("install")} text={errs.messageOf("install")} />
              {form.install && (
                <div className="form-grid">
                  <Field label="Install image" hint="e.g. alpine:3" {...errs.field("install.image")}>
                    <input value={form.installImage} onChange={(e) => set("installImage", e.target.value)} className="mono" spellCheck={false} name="install.image" {...errs.control("install.image")} />
                  </Field>
                  <Field label="Entrypoint" hint="the program that runs the script; empty: sh" {...errs.field("install.entrypoint")}>
                    <input value={form.installEntrypoint} onChange={(e) => set("installEntrypoint", e.target.value)} className="mono" placeholder="sh" name="install.entrypoint" {...errs.control("install.entrypoint")} />
                  </Field>
                  <Field label="Timeout (seconds)" hint="empty: 600; at most 21600" {...errs.field("install.timeout_seconds")}>
                    <input value={form.installTimeout} onChange={(e) => set("installTimeout", e.target.value)} inputMode="numeric" placeholder="600" name="install.timeout_seconds" {...errs.control("install.timeout_seconds")} />
                  </Field>
                  <Field label="Script" hint="the template's variables are in its environment" {...errs.field("install.script")} wide>
                    <textarea value={form.installScript} onChange={(e) => set("installScript", e.target.value)} rows={8} className="mono" spellCheck={false} name="install.script" {...errs.control("install.script")} />
                  </Field>
                </div>
              )}
            </fieldset>
          </div>
          {conflict && (
            <div className="notice" role="alert" data-testid="template-conflict">
              <p>{conflict}</p>
              <button type="button" className="button small" onClick={() => void reload()}>
                Reload the current version (drops your changes)
              </button>
            </div>
          )}
          {(general.length > 0 || fields.length > 0) && (
            <div className="error-box problem-summary" role="alert">
              {fields.length > 0 && (
                <p>
                  {fields.length === 1 ? "1 field needs" : `${fields.length} fields need`} a fix: <span className="mono">{fields.join(", ")}</span>.
                </p>
              )}
              {general.map((p, i) => (
                <p key={i}>{p.message}</p>
              ))}
            </div>
          )}
        </form>
        <TemplatePreview form={form} />
      </div>
    </Modal>
  );
}

function ImagesEditor({ form, edit, errs }: { form: TemplateForm; edit: (f: TemplateForm) => void; errs: Errs }) {
  const setRow = (i: number, patch: Partial<TemplateForm["images"][number]>) => edit({ ...form, images: form.images.map((r, j) => (j === i ? { ...r, ...patch } : r)) });
  return (
    <fieldset className={`field wide${errs.bad("images") ? " invalid" : ""}`}>
      <legend>Images</legend>
      <span className="hint">a server runs one of them; the first is the default</span>
      <FieldError id={errs.errorId("images")} text={errs.messageOf("images")} />
      {form.images.map((r, i) => (
        <div className="row-editor" key={i}>
          <Field label={`Image ${i + 1}`} {...errs.field(`images[${i}].image`)}>
            <input value={r.image} onChange={(e) => setRow(i, { image: e.target.value })} className="mono" spellCheck={false} placeholder="e.g. ghcr.io/org/app:1" name={`images[${i}].image`} {...errs.control(`images[${i}].image`)} />
          </Field>
          <Field label={`Label ${i + 1}`} {...errs.field(`images[${i}].label`)}>
            <input value={r.label} onChange={(e) => setRow(i, { label: e.target.value })} placeholder="e.g. Java 21" name={`images[${i}].label`} {...errs.control(`images[${i}].label`)} />
          </Field>
          <RowButtons what={`image ${i + 1}`} index={i} count={form.images.length} onMove={(to) => edit({ ...form, images: move(form.images, i, to) })} onRemove={() => edit({ ...form, images: form.images.filter((_, j) => j !== i) })} />
        </div>
      ))}
      <button type="button" className="button small add-row" onClick={() => edit({ ...form, images: [...form.images, { image: "", label: "" }] })}>
        Add image
      </button>
    </fieldset>
  );
}

function RowButtons(props: { what: string; index: number; count: number; onMove: (to: number) => void; onRemove: () => void }) {
  return (
    <span className="row-buttons">
      <button type="button" className="icon-button" aria-label={`Move ${props.what} up`} disabled={props.index === 0} onClick={() => props.onMove(props.index - 1)}>
        ↑
      </button>
      <button type="button" className="icon-button" aria-label={`Move ${props.what} down`} disabled={props.index === props.count - 1} onClick={() => props.onMove(props.index + 1)}>
        ↓
      </button>
      <button type="button" className="icon-button" aria-label={`Remove ${props.what}`} onClick={props.onRemove}>
        ×
      </button>
    </span>
  );
}

const KINDS: { kind: VariableKind; label: string }[] = [
  { kind: VariableKind.STRING, label: "text" },
  { kind: VariableKind.INTEGER, label: "whole number" },
  { kind: VariableKind.NUMBER, label: "number" },
  { kind: VariableKind.BOOLEAN, label: "boolean" },
  { kind: VariableKind.UNSPECIFIED, label: "no rule" },
];

function VariablesEditor({ form, edit, errs }: { form: TemplateForm; edit: (f: TemplateForm) => void; errs: Errs }) {
  const setVar = (i: number, patch: Partial<VariableRow>) => edit({ ...form, variables: form.variables.map((v, j) => (j === i ? { ...v, ...patch } : v)) });
  return (
    <fieldset className={`field wide${errs.bad("variables") ? " invalid" : ""}`}>
      <legend>Variables</legend>
      <span className="hint">values the operator fills in; each is also an environment variable of the container</span>
      <FieldError id={errs.errorId("variables")} text={errs.messageOf("variables")} />
      {form.variables.map((v, i) => {
        const k = (f: string) => `variables[${i}].${f}`;
        const input = (f: string, value: string, onChange: (x: string) => void, extra: Record<string, unknown> = {}) => (
          <input value={value} onChange={(e) => onChange(e.target.value)} name={k(f)} autoComplete="off" spellCheck={false} {...extra} {...errs.control(k(f))} />
        );
        return (
          <fieldset className="variable-editor" key={v.key} data-variable-row={i}>
            <legend>
              Variable {i + 1}
              {v.env ? `: ${v.env}` : ""}
            </legend>
            <div className="form-grid">
              <Field label="Env name" hint="letters, digits and _; used as {{NAME}}" {...errs.field(k("env"))}>
                {input("env", v.env, (x) => setVar(i, { env: x }), { className: "mono" })}
              </Field>
              <Field label="Label" hint="shown in the form; empty: the env name" {...errs.field(k("name"))}>
                {input("name", v.name, (x) => setVar(i, { name: x }))}
              </Field>
              <Field label="Description" {...errs.field(k("description"))} wide>
                {input("description", v.description, (x) => setVar(i, { description: x }))}
              </Field>
              <Field label="Default" hint={v.secret ? "a secret's default is kept with the template" : undefined} {...errs.field(k("default_value"))}>
                {input("default_value", v.defaultValue, (x) => setVar(i, { defaultValue: x }), { className: "mono" })}
              </Field>
              <div className="field checks">
                {(
                  [
                    ["required", "required"],
                    ["userEditable", "user-editable"],
                    ["hidden", "hidden"],
                    ["secret", "secret"],
                  ] as const
                ).map(([f, label]) => (
                  <label className="check" key={f}>
                    <input type="checkbox" checked={v[f]} onChange={(e) => setVar(i, { [f]: e.target.checked })} name={k(f)} /> {label}
                  </label>
                ))}
              </div>
              <Field label="Kind" {...errs.field(k("rule.kind"))}>
                <select value={v.rule.kind} onChange={(e) => setVar(i, { rule: { ...v.rule, kind: Number(e.target.value) as VariableKind } })} name={k("rule.kind")} {...errs.control(k("rule.kind"))}>
                  {KINDS.map((x) => (
                    <option key={x.kind} value={x.kind}>
                      {x.label}
                    </option>
                  ))}
                </select>
              </Field>
              <Field label="Regex" hint="a JavaScript regular expression the value must match (^…$ for all of it)" {...errs.field(k("rule.regex"))}>
                {input("rule.regex", v.rule.regex, (x) => setVar(i, { rule: { ...v.rule, regex: x } }), { className: "mono" })}
              </Field>
              <Field label="Min" hint="text: characters; numbers: value" {...errs.field(k("rule.min"))}>
                {input("rule.min", v.rule.min, (x) => setVar(i, { rule: { ...v.rule, min: x } }), { inputMode: "decimal" })}
              </Field>
              <Field label="Max" {...errs.field(k("rule.max"))}>
                {input("rule.max", v.rule.max, (x) => setVar(i, { rule: { ...v.rule, max: x } }), { inputMode: "decimal" })}
              </Field>
              <Field label="Allowed values" hint="one per line; empty: any value" {...errs.field(k("rule.allowed"))}>
                <textarea value={v.rule.allowed} onChange={(e) => setVar(i, { rule: { ...v.rule, allowed: e.target.value } })} rows={2} className="mono" spellCheck={false} name={k("rule.allowed")} {...errs.control(k("rule.allowed"))} />
              </Field>
              <label className="check">
                <input type="checkbox" checked={v.rule.nullable} onChange={(e) => setVar(i, { rule: { ...v.rule, nullable: e.target.checked } })} name={k("rule.nullable")} /> may be empty (nullable)
              </label>
            </div>
            <RowButtons
              what={`variable ${i + 1}`}
              index={i}
              count={form.variables.length}
              onMove={(to) => edit({ ...form, variables: move(form.variables, i, to) })}
              onRemove={() => edit({ ...form, variables: form.variables.filter((_, j) => j !== i) })}
            />
          </fieldset>
        );
      })}
      <button type="button" className="button small add-row" onClick={() => edit({ ...form, variables: [...form.variables, emptyVariable()] })}>
        Add variable
      </button>
    </fieldset>
  );
}

function PortsEditor({ form, edit, errs }: { form: TemplateForm; edit: (f: TemplateForm) => void; errs: Errs }) {
  const setPort = (i: number, patch: Partial<PortForm>) => edit({ ...form, ports: form.ports.map((p, j) => (j === i ? { ...p, ...patch } : p)) });
  return (
    <fieldset className={`field wide${errs.bad("ports") ? " invalid" : ""}`}>
      <legend>Ports</legend>
      <span className="hint">the container ports the server listens on, and how each host port is picked</span>
      <FieldError id={errs.errorId("ports")} text={errs.messageOf("ports")} />
      {form.ports.length === 0 && <p className="muted small">No ports.</p>}
      {form.ports.map((p, i) => {
        const k = (f: string) => `ports[${i}].${f}`;
        const num = (f: "containerPort" | "hostPort" | "hostPortMin" | "hostPortMax", key: string, label: string): ReactNode => (
          <Field label={label} {...errs.field(k(key))}>
            <input value={p[f]} onChange={(e) => setPort(i, { [f]: e.target.value })} inputMode="numeric" name={k(key)} {...errs.control(k(key))} />
          </Field>
        );
        return (
          <div className="row-editor port-editor" key={i} data-port-row={i}>
            <Field label={`Port ${i + 1} name`} {...errs.field(k("name"))}>
              <input value={p.name} onChange={(e) => setPort(i, { name: e.target.value })} placeholder="e.g. game" name={k("name")} {...errs.control(k("name"))} />
            </Field>
            {num("containerPort", "container_port", "Container port")}
            <Field label="Protocol" {...errs.field(k("protocol"))}>
              <select value={p.udp ? "udp" : "tcp"} onChange={(e) => setPort(i, { udp: e.target.value === "udp" })} name={k("protocol")}>
                <option value="tcp">tcp</option>
                <option value="udp">udp</option>
              </select>
            </Field>
            <Field label="Host port" {...errs.field(k("host_port_mode"))}>
              <select value={p.mode} onChange={(e) => setPort(i, { mode: Number(e.target.value) as HostPortMode })} name={k("host_port_mode")} {...errs.control(k("host_port_mode"))}>
                {HOST_PORT_MODES.map((m) => (
                  <option key={m.mode} value={m.mode}>
                    {m.label}
                  </option>
                ))}
              </select>
            </Field>
            {p.mode === HostPortMode.FIXED && num("hostPort", "host_port", "Fixed host port")}
            {p.mode === HostPortMode.RANGE && (
              <>
                {num("hostPortMin", "host_port_min", "From")}
                {num("hostPortMax", "host_port_max", "To")}
              </>
            )}
            <RowButtons what={`port ${i + 1}`} index={i} count={form.ports.length} onMove={(to) => edit({ ...form, ports: move(form.ports, i, to) })} onRemove={() => edit({ ...form, ports: form.ports.filter((_, j) => j !== i) })} />
          </div>
        );
      })}
      <button type="button" className="button small add-row" onClick={() => edit({ ...form, ports: [...form.ports, emptyPort()] })}>
        Add port
      </button>
    </fieldset>
  );
}

/**
 * RenderTemplate on the template as the form holds it (a draft: saved or
 * not) with example values: the command, environment and ports a server
 * would get, or the manager's problems (a bad value on its variable, the
 * draft's own problems under the preview).
 */
function TemplatePreview({ form }: { form: TemplateForm }) {
  const { api } = useSession();
  // The form as a Template; undefined while a number or size in it cannot be read (the save says which).
  const template = (() => {
    try {
      return create(TemplateSchema, templateFromForm(form));
    } catch {
      return undefined;
    }
  })();
  const [values, setValues] = useState<Record<string, string>>({});
  const [chosenImage, setImage] = useState("");
  const [result, setResult] = useState<ReturnType<typeof previewOf>>();
  const [problems, setProblems] = useState<FieldProblem[]>([]);
  const [busy, setBusy] = useState(false);
  const idBase = useId();
  const errs = fieldErrors(problems, idBase);
  const out = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (result || problems.length) out.current?.scrollIntoView?.({ block: "nearest" });
  }, [result, problems]);
  const image = template?.images.some((i) => i.image === chosenImage) ? chosenImage : (template?.images[0]?.image ?? "");

  const render = async () => {
    if (!template) return;
    setBusy(true);
    setProblems([]);
    setResult(undefined);
    try {
      const example = { ...initialValues(template), ...values };
      const { spec } = await api.templates.renderTemplate({ draft: template, draftVariables: valuesToSend(template, example), draftImage: image, name: "preview" });
      if (spec) setResult(previewOf(spec));
    } catch (err) {
      setProblems(problemsOfPreview(err));
    } finally {
      setBusy(false);
    }
  };

  const general = problems.filter((p) => p.field === undefined);
  return (
    <section className="template-preview" aria-labelledby={`${idBase}-title`} data-testid="template-preview">
      <h3 id={`${idBase}-title`}>Preview</h3>
      {!template ? (
        <p className="muted">Fix the fields that cannot be read (numbers, sizes) to preview.</p>
      ) : (
        <>
          <p className="muted small">Renders the template as the form holds it (saved or not) with these example values, as a new server would get it.</p>
          <div className="form-grid">
            <Field label="Image" {...errs.field("template.image")}>
              <select value={image} onChange={(e) => setImage(e.target.value)} name="previewImage">
                {template.images.map((i) => (
                  <option key={i.image} value={i.image}>
                    {i.label ? `${i.label} — ${i.image}` : i.image}
                  </option>
                ))}
              </select>
            </Field>
            {shownVariables(template)
              .filter((v) => v.env !== "")
              .map((v) => (
              <VariableField key={v.env} v={v} value={values[v.env] ?? v.defaultValue} onChange={(x) => (setValues((vs) => ({ ...vs, [v.env]: x })), setProblems([]))} errs={errs} />
            ))}
          </div>
          <button type="button" className="button" onClick={() => void render()} disabled={busy}>
            {busy ? "Rendering…" : "Preview"}
          </button>
          {general.length > 0 && (
            <div className="error-box" role="alert">
              {general.map((p, i) => (
                <p key={i}>{p.message}</p>
              ))}
            </div>
          )}
          {problems.some((p) => p.field !== undefined && p.field !== "template.image") && (
            <p className="error-box" role="alert">
              The manager refused {problems.filter((p) => p.field !== undefined && p.field !== "template.image").length === 1 ? "a value" : "some values"}: see the fields above.
            </p>
          )}
          {result && (
            <dl className="kv preview-result" data-testid="preview-result">
              <dt>Command</dt>
              <dd className="mono wrap" data-testid="preview-command">
                {result.command.length ? joinWords(result.command) : <span className="muted">the image&apos;s own</span>}
              </dd>
              <dt>Env</dt>
              <dd className="mono">
                {result.env.map(([k, v]) => (
                  <div key={k}>{`${k}=${v}`}</div>
                ))}
              </dd>
              <dt>Ports</dt>
              <dd className="mono">{result.ports.length ? result.ports.map((p) => <div key={p}>{p}</div>) : <span className="muted">none</span>}</dd>
            </dl>
          )}
          <div ref={out} />
        </>
      )}
    </section>
  );
}
