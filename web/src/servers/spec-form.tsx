/**
 * The fields of a server spec, shared by the create form and the spec editor.
 * The manager validates; its message is shown under the form and the field it
 * names is marked. Port conflicts come with the manager's suggested free port
 * as a one-click fix.
 */
import type { ReactNode } from "react";
import { DesiredState, RestartPolicy } from "@berth/proto/berth/v1/server_pb.js";
import type { Host } from "@berth/proto/berth/v1/host_pb.js";
import { HostState } from "@berth/proto/berth/v1/host_pb.js";
import { GIVABLE_CAPABILITIES, portSuggestions, type FieldKey, type SpecForm } from "./spec-form-model.js";

export function SpecFields(props: {
  form: SpecForm;
  onChange: (f: SpecForm) => void;
  mode: "create" | "edit";
  hosts: Host[];
  errorField: FieldKey | undefined;
  errorMessage: string | undefined;
  extra?: ReactNode;
}) {
  const { form, onChange, errorField } = props;
  const set = <K extends keyof SpecForm>(k: K, v: SpecForm[K]) => onChange({ ...form, [k]: v });
  const bad = (k: FieldKey) => (errorField === k || errorField?.startsWith(`${k}.`) ? true : undefined);
  const conflicts = props.errorMessage ? portSuggestions(props.errorMessage) : [];
  const setPort = (i: number, patch: Partial<SpecForm["ports"][number]>) => set("ports", form.ports.map((p, j) => (j === i ? { ...p, ...patch } : p)));
  return (
    <div className="form-grid">
      <Field label="Name" hint="lowercase letters, digits and '-'" invalid={bad("name")}>
        <input value={form.name} onChange={(e) => set("name", e.target.value)} aria-invalid={bad("name")} required autoComplete="off" spellCheck={false} name="name" />
      </Field>
      {props.extra}
      <Field label="Host" hint={props.mode === "edit" ? "a server stays on its host" : "empty: the connected host with the fewest servers"} invalid={bad("hostId")}>
        <select value={form.hostId} onChange={(e) => set("hostId", e.target.value)} disabled={props.mode === "edit"} name="host">
          {props.mode === "create" && <option value="">Pick automatically</option>}
          {props.hosts.map((h) => (
            <option key={h.id} value={h.id}>
              {h.name || h.id} {h.state === HostState.ONLINE ? "" : "(offline)"}
            </option>
          ))}
          {props.mode === "edit" && !props.hosts.some((h) => h.id === form.hostId) && <option value={form.hostId}>{form.hostId}</option>}
        </select>
      </Field>
      <Field label="Data mount path" hint="the data directory, inside the container" invalid={bad("dataMountPath")}>
        <input value={form.dataMountPath} onChange={(e) => set("dataMountPath", e.target.value)} aria-invalid={bad("dataMountPath")} className="mono" name="dataMountPath" />
      </Field>
      <Field label="Image" hint='e.g. "postgres:16"' invalid={bad("image")} wide>
        <input value={form.image} onChange={(e) => set("image", e.target.value)} aria-invalid={bad("image")} required className="mono" spellCheck={false} name="image" />
      </Field>
      <Field label="Command" hint="optional; words split like a shell: sh -c 'exec sleep 1000'" invalid={bad("command")} wide>
        <input value={form.command} onChange={(e) => set("command", e.target.value)} aria-invalid={bad("command")} className="mono" spellCheck={false} name="command" />
      </Field>
      <Field label="Environment" hint="one KEY=VALUE per line" invalid={bad("env")} wide>
        <textarea value={form.env} onChange={(e) => set("env", e.target.value)} aria-invalid={bad("env")} rows={2} className="mono" spellCheck={false} name="env" />
      </Field>
      <Field label="Secret keys" hint="env keys whose values are stored encrypted and shown as ********; leave ******** to keep a stored value" invalid={bad("secretEnv")} wide>
        <input value={form.secretEnv} onChange={(e) => set("secretEnv", e.target.value)} aria-invalid={bad("secretEnv")} className="mono" spellCheck={false} placeholder="DB_PASSWORD, API_TOKEN" name="secretEnv" />
      </Field>
      <fieldset className={`field wide${bad("ports") ? " invalid" : ""}`}>
        <legend>Ports</legend>
        {form.ports.length === 0 && <p className="muted small">No published ports.</p>}
        {form.ports.map((p, i) => {
          const conflict = conflicts.find((c) => String(c.port) === p.host.trim() && c.udp === p.udp);
          return (
            <div className="port-row" key={i}>
              <label>
                <span className="sr-only">Host port {i + 1}</span>
                <input
                  value={p.host}
                  onChange={(e) => setPort(i, { host: e.target.value })}
                  inputMode="numeric"
                  placeholder="host"
                  aria-invalid={bad(`ports.${i}.host`) || (conflict ? true : undefined)}
                  aria-label={`Host port ${i + 1}`}
                />
              </label>
              <span aria-hidden="true">→</span>
              <label>
                <span className="sr-only">Container port {i + 1}</span>
                <input
                  value={p.container}
                  onChange={(e) => setPort(i, { container: e.target.value })}
                  inputMode="numeric"
                  placeholder="container"
                  aria-invalid={bad(`ports.${i}.container`)}
                  aria-label={`Container port ${i + 1}`}
                />
              </label>
              <select value={p.udp ? "udp" : "tcp"} onChange={(e) => setPort(i, { udp: e.target.value === "udp" })} aria-label={`Protocol ${i + 1}`}>
                <option value="tcp">tcp</option>
                <option value="udp">udp</option>
              </select>
              <button type="button" className="icon-button" aria-label={`Remove port ${i + 1}`} onClick={() => set("ports", form.ports.filter((_, j) => j !== i))}>
                ×
              </button>
              {conflict && (
                <span className="conflict">
                  used by {conflict.usedBy}
                  {conflict.suggestion !== undefined && (
                    <button type="button" className="button small" onClick={() => setPort(i, { host: String(conflict.suggestion) })}>
                      Use {conflict.suggestion}
                    </button>
                  )}
                </span>
              )}
            </div>
          );
        })}
        <button type="button" className="button small add-port" onClick={() => set("ports", [...form.ports, { host: "", container: "", udp: false }])}>
          Add port
        </button>
      </fieldset>
      <Field label="Restart policy" hint="when the container exits by itself" invalid={bad("restartPolicy")}>
        <select value={form.restartPolicy} onChange={(e) => set("restartPolicy", Number(e.target.value) as RestartPolicy)} name="restartPolicy">
          <option value={RestartPolicy.NEVER}>never</option>
          <option value={RestartPolicy.ON_FAILURE}>on-failure</option>
          <option value={RestartPolicy.ALWAYS}>always</option>
        </select>
      </Field>
      <Field label="Desired state" invalid={bad("desiredState")}>
        <select value={form.desiredState} onChange={(e) => set("desiredState", Number(e.target.value) as DesiredState)} name="desiredState">
          <option value={DesiredState.RUNNING}>running</option>
          <option value={DesiredState.STOPPED}>stopped</option>
          <option value={DesiredState.PAUSED}>paused</option>
        </select>
      </Field>
      <Field label="Log size" hint="rotate the container's log at this size (e.g. 10M); empty: the manager's default" invalid={bad("logMaxSize")}>
        <input value={form.logMaxSize} onChange={(e) => set("logMaxSize", e.target.value)} aria-invalid={bad("logMaxSize")} placeholder="default" className="mono" name="logMaxSize" />
      </Field>
      <Field label="Log files" hint="kept per container (1 to 20); empty: the manager's default" invalid={bad("logMaxFiles")}>
        <input value={form.logMaxFiles} onChange={(e) => set("logMaxFiles", e.target.value)} aria-invalid={bad("logMaxFiles")} inputMode="numeric" placeholder="default" name="logMaxFiles" />
      </Field>
      <fieldset className={`field wide${bad("capAdd") ? " invalid" : ""}`}>
        <legend>Capabilities to give back</legend>
        <p className="muted small">berth drops these by default; give one back only if the server needs it.</p>
        {GIVABLE_CAPABILITIES.map((c) => (
          <label key={c} className="check">
            <input
              type="checkbox"
              checked={form.capAdd.includes(c)}
              onChange={(e) => set("capAdd", e.target.checked ? [...form.capAdd, c] : form.capAdd.filter((x) => x !== c))}
              name={`cap-${c}`}
            />{" "}
            <span className="mono">{c}</span>
          </label>
        ))}
      </fieldset>
    </div>
  );
}

export function Field(props: { label: string; hint?: string; invalid?: boolean | undefined; wide?: boolean; children: ReactNode }) {
  return (
    <label className={`field${props.wide ? " wide" : ""}${props.invalid ? " invalid" : ""}`}>
      <span className="label">{props.label}</span>
      {props.children}
      {props.hint && <span className="hint">{props.hint}</span>}
    </label>
  );
}
