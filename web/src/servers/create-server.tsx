/** The create-server form: the contract's field rules are checked before sending (spec-rules.ts); the manager validates and picks a host; its messages land on the fields they name. */
import { useState, type FormEvent } from "react";
import { ConnectError } from "@connectrpc/connect";
import { useHosts, useSession, useWatch } from "../app-context.js";
import { errorText } from "../api/client.js";
import { ErrorText } from "../ui/error-box.js";
import { Modal } from "../ui/modal.js";
import { setParam } from "../ui/router.js";
import { useToast } from "../ui/toast.js";
import { Field, SpecFields } from "./spec-form.js";
import { checkSpecRules } from "./spec-rules.js";
import { emptyForm, fieldOfMessage, FormError, specFromForm, type FieldKey } from "./spec-form-model.js";

export function CreateServerDialog({ onClose }: { onClose: () => void }) {
  const { api, can } = useSession();
  const { hosts } = useHosts();
  const watch = useWatch();
  const toast = useToast();
  const [form, setForm] = useState(emptyForm);
  const [project, setProject] = useState(can.project ?? "default");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<{ message: string; field: FieldKey | undefined }>();
  const projects = [...new Set([...watch.servers.values()].map((s) => s.project))].sort();

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const spec = specFromForm(form);
      await checkSpecRules(spec);
      const { server } = await api.servers.createServer({ spec, project: can.project === null ? project.trim() : "" });
      toast("ok", `Created ${server?.spec?.name}; berth is bringing it up`);
      onClose();
      if (server) setParam("server", server.id, true);
    } catch (err) {
      if (err instanceof FormError) setError({ message: err.message, field: err.field });
      else setError({ message: errorText(err), field: fieldOfMessage(ConnectError.from(err).rawMessage) });
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
          <button type="submit" form="create-server-form" className="button primary" disabled={busy}>
            {busy ? "Creating…" : "Create server"}
          </button>
        </>
      }
    >
      <form id="create-server-form" onSubmit={submit} noValidate>
        <SpecFields
          form={form}
          onChange={setForm}
          mode="create"
          hosts={hosts}
          errorField={error?.field}
          errorMessage={error?.message}
          extra={
            can.project === null ? (
              <Field label="Project" hint="the tenant it belongs to">
                <input value={project} onChange={(e) => setProject(e.target.value)} list="known-projects" name="project" autoComplete="off" />
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
            )
          }
        />
        <ErrorText text={error?.message} />
      </form>
    </Modal>
  );
}
