/**
 * "New server" from a template: pick one (the project's and the global ones),
 * one of its images, and fill in its variables, as a form generated from the
 * template (variable-form.ts). The page checks the values against the rules
 * first; the manager checks again, and its InvalidArgument on
 * `template.variables["X"]` shows on X's field. CreateServer gets the name,
 * host and the template reference; the template gives the rest.
 */
import { useEffect, useId, useRef, useState, type FormEvent, type ReactNode } from "react";
import type { TemplateVariable } from "@berth/proto/berth/v1/template_pb.js";
import { HostState } from "@berth/proto/berth/v1/host_pb.js";
import { useHosts, useSession } from "../app-context.js";
import { ErrorBox } from "../ui/error-box.js";
import { Field, fieldErrors, FieldError } from "../servers/spec-form.js";
import type { FieldProblem } from "../servers/spec-form-model.js";
import { checkboxValue, checkValue, checkValues, initialValues, problemsOfTemplateError, inputOf, isChecked, shownVariables, valuesToSend, variableField } from "./variable-form.js";
import { scopeOf, useTemplates } from "./use-templates.js";

const NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function TemplateServerForm(props: {
  formId: string;
  /** The project field (as the scratch form shows it) and its value. */
  projectField: ReactNode;
  project: string;
  /** A project's template makes servers in that project: picking one sets the project (all-projects tokens). */
  onProject: (project: string) => void;
  onBusy: (busy: boolean) => void;
  onCreated: (serverId: string | undefined, name: string) => void;
}) {
  const { api, can } = useSession();
  const { hosts } = useHosts();
  const templates = useTemplates();
  const [templateId, setTemplateId] = useState("");
  const [image, setImage] = useState("");
  const [name, setName] = useState("");
  const [hostId, setHostId] = useState("");
  const [values, setValues] = useState<Record<string, string>>({});
  const [problems, setProblems] = useState<FieldProblem[]>([]);
  const [attempt, setAttempt] = useState(0);
  const idBase = useId();
  const root = useRef<HTMLDivElement>(null);
  const errs = fieldErrors(problems, idBase);
  const list = templates.templates ?? [];
  const template = list.find((t) => t.id === templateId);

  useEffect(() => {
    if (attempt === 0) return;
    root.current?.querySelector<HTMLElement>('[aria-invalid="true"]')?.focus();
  }, [attempt]);

  const pick = (id: string) => {
    const t = list.find((x) => x.id === id);
    setTemplateId(id);
    if (t && t.project !== "" && can.project === null) props.onProject(t.project);
    setImage(t?.images[0]?.image ?? "");
    setValues(t ? initialValues(t) : {});
    setProblems((ps) => ps.filter((p) => p.field === "name" || p.field === "hostId" || p.field === "project"));
  };
  const setValue = (env: string, value: string) => {
    setValues((vs) => ({ ...vs, [env]: value }));
    setProblems((ps) => ps.filter((p) => p.field !== variableField(env)));
  };

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const found: FieldProblem[] = [];
    if (!template) found.push({ field: "template.id", message: "pick a template" });
    if (!NAME.test(name.trim())) found.push({ field: "name", message: "use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. web-1)" });
    if (template) found.push(...checkValues(template, values));
    if (found.length > 0 || !template) {
      setProblems(found);
      setAttempt((n) => n + 1);
      return;
    }
    props.onBusy(true);
    setProblems([]);
    try {
      const { server } = await api.servers.createServer({
        spec: { name: name.trim(), hostId },
        project: can.project === null ? props.project.trim() : "",
        template: { templateId: template.id, image, variables: valuesToSend(template, values) },
      });
      props.onCreated(server?.id, server?.spec?.name ?? name.trim());
    } catch (err) {
      setProblems(problemsOfTemplateError(err));
      setAttempt((n) => n + 1);
    } finally {
      props.onBusy(false);
    }
  };

  const general = problems.filter((p) => p.field === undefined);
  const fieldCount = new Set(problems.flatMap((p) => (p.field === undefined ? [] : [p.field]))).size;
  return (
    <form id={props.formId} onSubmit={submit} noValidate>
      <div className="form-grid" ref={root}>
        <Field label="Template" hint="the project's templates and the global ones" {...errs.field("template.id")} wide>
          <select value={templateId} onChange={(e) => pick(e.target.value)} name="template" {...errs.control("template.id")}>
            <option value="">{templates.templates ? "Pick a template…" : "Loading…"}</option>
            {list.map((t) => (
              <option key={t.id} value={t.id}>
                {t.name} ({scopeOf(t)}
                {t.builtIn ? ", built-in" : ""})
              </option>
            ))}
          </select>
        </Field>
        <ErrorBox error={templates.error} what="Could not list templates" />
        {template && (
          <p className="field wide muted small template-description" data-testid="template-description">
            {template.description || "No description."}
          </p>
        )}
        <Field label="Name" hint="lowercase letters, digits and '-'" {...errs.field("name")}>
          <input value={name} onChange={(e) => (setName(e.target.value), setProblems((ps) => ps.filter((p) => p.field !== "name")))} required autoComplete="off" spellCheck={false} name="name" {...errs.control("name")} />
        </Field>
        {props.projectField}
        <Field label="Host" hint="empty: the connected host with the fewest servers" {...errs.field("hostId")}>
          <select value={hostId} onChange={(e) => setHostId(e.target.value)} name="host" {...errs.control("hostId")}>
            <option value="">Pick automatically</option>
            {hosts.map((h) => (
              <option key={h.id} value={h.id}>
                {h.name || h.id} {h.state === HostState.ONLINE ? "" : "(offline)"}
              </option>
            ))}
          </select>
        </Field>
        {template && (
          <Field label="Image" hint="one of the template's images" {...errs.field("template.image")}>
            <select value={image} onChange={(e) => setImage(e.target.value)} name="templateImage" {...errs.control("template.image")}>
              {template.images.map((i) => (
                <option key={i.image} value={i.image}>
                  {i.label ? `${i.label} — ${i.image}` : i.image}
                </option>
              ))}
            </select>
          </Field>
        )}
        {template && shownVariables(template).length > 0 && (
          <fieldset className="field wide template-variables">
            <legend>Variables</legend>
            <div className="form-grid">
              {shownVariables(template).map((v) => (
                <VariableField key={v.env} v={v} value={values[v.env] ?? v.defaultValue} onChange={(x) => setValue(v.env, x)} errs={errs} />
              ))}
            </div>
          </fieldset>
        )}
      </div>
      {(general.length > 0 || fieldCount > 0) && (
        <div className="error-box problem-summary" role="alert">
          {fieldCount > 0 && <p>{fieldCount === 1 ? "1 field needs" : `${fieldCount} fields need`} a fix.</p>}
          {general.map((p, i) => (
            <p key={i}>{p.message}</p>
          ))}
        </div>
      )}
    </form>
  );
}

/** One variable's input, by its rule; read-only when the operator may not set it. */
export function VariableField(props: {
  v: TemplateVariable;
  value: string;
  onChange: (value: string) => void;
  errs: ReturnType<typeof fieldErrors>;
  /** A value that stands for "unchanged" (a stored secret's mask): not checked. */
  kept?: string;
  /** Extra help after the variable's own (e.g. how to keep a secret). */
  note?: string;
}) {
  const { v, value, onChange, errs } = props;
  const key = variableField(v.env);
  const input = inputOf(v);
  const label = `${v.name || v.env}${v.required ? " *" : ""}`;
  const hint = [v.description, v.userEditable ? "" : "set by the template (read-only)", v.required ? "required" : "", `env ${v.env}`, props.note ?? ""].filter(Boolean).join(" · ");
  const readOnly = !v.userEditable;
  // The page's own check, shown as the value changes once it was edited away from the default.
  const live = !readOnly && value !== v.defaultValue && value !== props.kept ? checkValue(v, value) : undefined;
  const message = errs.messageOf(key) ?? (live ? `${v.name || v.env} ${live}` : undefined);
  const control = { "aria-invalid": message ? true : undefined, "aria-describedby": message ? errs.errorId(key) : undefined, "aria-required": v.required || undefined, "data-variable": v.env } as const;
  if (input.type === "checkbox") {
    return (
      <label className={`check field${message ? " invalid" : ""}`}>
        <input type="checkbox" checked={isChecked(value)} disabled={readOnly} onChange={(e) => onChange(checkboxValue(e.target.checked, v.defaultValue))} name={`var-${v.env}`} {...control} />
        {label}
        <FieldError id={errs.errorId(key)} text={message} />
        <span className="hint">{hint}</span>
      </label>
    );
  }
  return (
    <Field label={label} hint={hint} invalid={message ? true : undefined} error={message} errorId={errs.errorId(key)}>
      {input.type === "select" ? (
        <select value={value} disabled={readOnly} onChange={(e) => onChange(e.target.value)} name={`var-${v.env}`} {...control}>
          {!input.options.includes(value) && <option value={value}>{value === "" ? "(none)" : value}</option>}
          {input.options.map((o) => (
            <option key={o} value={o}>
              {o}
            </option>
          ))}
        </select>
      ) : input.type === "number" ? (
        <input type="number" step={input.step} min={input.min} max={input.max} value={value} readOnly={readOnly} onChange={(e) => onChange(e.target.value)} name={`var-${v.env}`} {...control} />
      ) : (
        <input type={input.secret ? "password" : "text"} value={value} readOnly={readOnly} onChange={(e) => onChange(e.target.value)} name={`var-${v.env}`} autoComplete={input.secret ? "new-password" : "off"} spellCheck={false} {...control} />
      )}
    </Field>
  );
}
