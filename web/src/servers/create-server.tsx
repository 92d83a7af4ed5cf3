/**
 * The create-server form: the contract's field rules are checked before
 * sending (spec-rules.ts); the manager validates and picks a host. Every
 * problem of a submit lands on the field it names at once.
 */
import { useId, useState, type FormEvent } from "react";
import { useHosts, useSession, useWatch } from "../app-context.js";
import { Modal } from "../ui/modal.js";
import { setParam } from "../ui/router.js";
import { useToast } from "../ui/toast.js";
import { Field, fieldErrors, ProblemSummary, problemsOfError, SpecFields } from "./spec-form.js";
import { checkSpecRules } from "./spec-rules.js";
import { TemplateServerForm } from "../templates/template-server-form.js";
import { emptyForm, problemsAfterEdit, specFromForm, type FieldProblem, type SpecForm } from "./spec-form-model.js";

export function CreateServerDialog({ onClose }: { onClose: () => void }) {
  const { api, can } = useSession();
  const { hosts } = useHosts();
  const watch = useWatch();
  const toast = useToast();
  const [form, setForm] = useState(emptyForm);
  const [project, setProject] = useState(can.project ?? "default");
  const [busy, setBusy] = useState(false);
  const [problems, setProblems] = useState<readonly FieldProblem[]>([]);
  const [attempt, setAttempt] = useState(0);
  const [source, setSource] = useState<"scratch" | "template">("scratch");
  const idBase = useId();
  const errs = fieldErrors(problems, idBase);
  /** An edit drops the problems of the fields it changed. */
  const edit = (next: SpecForm, nextProject = project) => {
    setProblems((ps) => problemsAfterEdit(ps, { ...form, project }, { ...next, project: nextProject }));
    setForm(next);
    setProject(nextProject);
  };
  const projects = [...new Set([...watch.servers.values()].map((s) => s.project))].sort();

  const projectField =
    can.project === null ? (
      <Field label="Project" hint="the tenant it belongs to" {...errs.field("project")}>
        <input value={project} onChange={(e) => edit(form, e.target.value)} list="known-projects" name="project" autoComplete="off" {...errs.control("project")} />
        <datalist id="known-projects">
          {projects.map((p) => (
            <option key={p} value={p} />
          ))}
        </datalist>
      </Field>
    ) : (
      <Field label="Project">
        <input value={can.project} disabled />
      </Field>
    );

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setProblems([]);
    try {
      const spec = specFromForm(form);
      await checkSpecRules(spec, form);
      const { server } = await api.servers.createServer({ spec, project: can.project === null ? project.trim() : "" });
      toast("ok", `Created ${server?.spec?.name}; berth is bringing it up`);
      onClose();
      if (server) setParam("server", server.id, true);
    } catch (err) {
      setProblems(problemsOfError(err, form));
      setAttempt((n) => n + 1);
    } finally {
      setBusy(false);
    }
  };

  return (
    <Modal
      title="New server"
      onClose={onClose}
      wide
      testId="create-server"
      footer={
        <>
          <button type="button" className="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" form={source === "template" ? "create-server-template-form" : "create-server-form"} className="button primary" disabled={busy}>
            {busy ? "Creating…" : "Create server"}
          </button>
        </>
      }
    >
      <div className="segmented" role="radiogroup" aria-label="Start from">
        <label className={`check${source === "scratch" ? " on" : ""}`}>
          <input type="radio" name="source" value="scratch" checked={source === "scratch"} onChange={() => setSource("scratch")} /> From scratch
        </label>
        <label className={`check${source === "template" ? " on" : ""}`}>
          <input type="radio" name="source" value="template" checked={source === "template"} onChange={() => setSource("template")} /> From a template
        </label>
      </div>
      {source === "template" ? (
        <TemplateServerForm
          formId="create-server-template-form"
          project={project}
          onProject={(p) => edit(form, p)}
          projectField={projectField}
          onBusy={setBusy}
          onCreated={(id, name) => {
            toast("ok", `Created ${name}; berth is bringing it up`);
            onClose();
            if (id) setParam("server", id, true);
          }}
        />
      ) : (
        <form id="create-server-form" onSubmit={submit} noValidate>
          <SpecFields form={form} onChange={edit} mode="create" hosts={hosts} problems={problems} attempt={attempt} idBase={idBase} extra={projectField} />
          <ProblemSummary problems={problems} />
        </form>
      )}
    </Modal>
  );
}
