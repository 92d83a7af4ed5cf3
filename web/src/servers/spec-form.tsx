/**
 * The fields of a server spec, shared by the create form and the spec editor.
 * Every problem of a submit shows at once, on the field it names (the rest,
 * and a summary, under the form); focus moves to the first bad field, and a
 * field's problem goes away once its value changes. Port conflicts come with
 * the manager's suggested free port as a one-click fix.
 */
import { useEffect, useRef, type KeyboardEvent, type ReactNode } from "react";
import { Code, ConnectError } from "@connectrpc/connect";
import { DesiredState, RestartPolicy } from "@berth/proto/berth/v1/server_pb.js";
import type { Host } from "@berth/proto/berth/v1/host_pb.js";
import { HostState } from "@berth/proto/berth/v1/host_pb.js";
import { BadRequestSchema } from "@berth/proto/google/rpc/error_details_pb.js";
import { errorText } from "../api/client.js";
import {
  compareFields,
  fieldLabel,
  FormError,
  GIVABLE_CAPABILITIES,
  portSuggestions,
  problemsOfAnswer,
  type FieldKey,
  type FieldProblem,
  type SpecForm,
} from "./spec-form-model.js";

/**
 * The problems a failed submit brings to the form: a FormError's (what the
 * page checked itself), or the manager's answer — every field violation of an
 * InvalidArgument (its google.rpc.BadRequest detail), else its message; a
 * name already taken (AlreadyExists) on the name.
 */
export function problemsOfError(err: unknown, form?: Pick<SpecForm, "ports">): FieldProblem[] {
  if (err instanceof FormError) return [...err.problems];
  const e = ConnectError.from(err);
  // The one AlreadyExists of a spec: its name is taken in the project.
  if (e.code === Code.AlreadyExists) return [{ field: "name", message: e.rawMessage }];
  if (e.code !== Code.InvalidArgument) return [{ field: undefined, message: errorText(err) }];
  const violations = e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations);
  const problems = problemsOfAnswer({ message: e.rawMessage, violations }, form);
  return violations.length === 0 && problems[0]?.field === undefined ? [{ field: undefined, message: errorText(err) }] : problems;
}

/** How the fields show `problems`: marked invalid, with their message beside them (ids under `idBase`). */
export function fieldErrors(problems: readonly FieldProblem[], idBase: string) {
  const messageOf = (k: FieldKey) => {
    const own = problems.filter((p) => p.field === k).map((p) => p.message);
    return own.length ? own.join("; ") : undefined;
  };
  const bad = (k: FieldKey) => (problems.some((p) => p.field === k || p.field?.startsWith(`${k}.`)) ? true : undefined);
  const errorId = (k: FieldKey) => `${idBase}-err-${k.replace(/\W/g, "-")}`;
  return {
    messageOf,
    bad,
    errorId,
    /** The attributes of the control of field `k`. */
    control: (k: FieldKey) => ({ "aria-invalid": bad(k), "aria-describedby": messageOf(k) ? errorId(k) : undefined }),
    /** What `<Field>` takes to show `k`'s problem. */
    field: (k: FieldKey) => ({ invalid: bad(k), error: messageOf(k), errorId: errorId(k) }),
  };
}

export function SpecFields(props: {
  form: SpecForm;
  onChange: (f: SpecForm) => void;
  mode: "create" | "edit";
  hosts: Host[];
  /** The problems of the last submit still standing. */
  problems: readonly FieldProblem[];
  /** Changes on every failed submit: focus moves to the first field with a problem. */
  attempt: number;
  /** Ids for the fields' messages start with this (the same as `extra` used with `fieldErrors`). */
  idBase: string;
  extra?: ReactNode;
}) {
  const { form, onChange, problems } = props;
  const root = useRef<HTMLDivElement>(null);
  const errs = fieldErrors(problems, props.idBase);
  const { bad, control } = errs;
  const set = <K extends keyof SpecForm>(k: K, v: SpecForm[K]) => onChange({ ...form, [k]: v });
  const conflicts = problems.flatMap((p) => (p.field === undefined ? portSuggestions(p.message) : []));
  const setPort = (i: number, patch: Partial<SpecForm["ports"][number]>) => set("ports", form.ports.map((p, j) => (j === i ? { ...p, ...patch } : p)));
  useEffect(() => {
    if (props.attempt === 0) return;
    root.current?.querySelector<HTMLElement>('[aria-invalid="true"]')?.focus();
    // Only a new submit moves focus, not the problems going away as fields change.
  }, [props.attempt]);
  return (
    <div className="form-grid" ref={root}>
      <Field label="Name" hint="lowercase letters, digits and '-'" {...errs.field("name")}>
        <input value={form.name} onChange={(e) => set("name", e.target.value)} {...control("name")} required autoComplete="off" spellCheck={false} name="name" />
      </Field>
      {props.extra}
      <Field label="Host" hint={props.mode === "edit" ? "a server stays on its host" : "empty: the connected host with the fewest servers"} {...errs.field("hostId")}>
        <select value={form.hostId} onChange={(e) => set("hostId", e.target.value)} disabled={props.mode === "edit"} name="host" {...control("hostId")}>
          {props.mode === "create" && <option value="">Pick automatically</option>}
          {props.hosts.map((h) => (
            <option key={h.id} value={h.id}>
              {h.name || h.id} {h.state === HostState.ONLINE ? "" : "(offline)"}
            </option>
          ))}
          {props.mode === "edit" && !props.hosts.some((h) => h.id === form.hostId) && <option value={form.hostId}>{form.hostId}</option>}
        </select>
      </Field>
      <Field label="Data mount path" hint="the data directory, inside the container" {...errs.field("dataMountPath")}>
        <input value={form.dataMountPath} onChange={(e) => set("dataMountPath", e.target.value)} {...control("dataMountPath")} className="mono" name="dataMountPath" />
      </Field>
      <Field label="Image" hint='e.g. "postgres:16"' {...errs.field("image")} wide>
        <input value={form.image} onChange={(e) => set("image", e.target.value)} {...control("image")} required className="mono" spellCheck={false} name="image" />
      </Field>
      <ArgvEditor argv={form.command} onChange={(v) => set("command", v)} errs={errs} />
      <Field label="Environment" hint="one KEY=VALUE per line" {...errs.field("env")} wide>
        <textarea value={form.env} onChange={(e) => set("env", e.target.value)} {...control("env")} rows={2} className="mono" spellCheck={false} name="env" />
      </Field>
      <Field label="Secret keys" hint="env keys whose values are stored encrypted and shown as ********; leave ******** to keep a stored value" {...errs.field("secretEnv")} wide>
        <input value={form.secretEnv} onChange={(e) => set("secretEnv", e.target.value)} {...control("secretEnv")} className="mono" spellCheck={false} placeholder="DB_PASSWORD, API_TOKEN" name="secretEnv" />
      </Field>
      <Field label="Labels" hint="one key=value per line, e.g. tier=prod: they group servers (search tier=prod; a schedule's selector) and change nothing in the container" {...errs.field("labels")} wide>
        <textarea value={form.labels} onChange={(e) => set("labels", e.target.value)} {...control("labels")} rows={1} className="mono" spellCheck={false} name="labels" />
      </Field>
      <fieldset className={`field wide${bad("ports") ? " invalid" : ""}`}>
        <legend>Ports</legend>
        {form.ports.length === 0 && <p className="muted small">No published ports.</p>}
        <FieldError id={errs.errorId("ports")} text={errs.messageOf("ports")} />
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
                  {...control(`ports.${i}.host`)}
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
                  {...control(`ports.${i}.container`)}
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
              <FieldError id={errs.errorId(`ports.${i}.host`)} text={errs.messageOf(`ports.${i}.host`)} />
              <FieldError id={errs.errorId(`ports.${i}.container`)} text={errs.messageOf(`ports.${i}.container`)} />
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
      <Field label="Restart policy" hint="when the container exits by itself" {...errs.field("restartPolicy")}>
        <select value={form.restartPolicy} onChange={(e) => set("restartPolicy", Number(e.target.value) as RestartPolicy)} name="restartPolicy" {...control("restartPolicy")}>
          <option value={RestartPolicy.NEVER}>never</option>
          <option value={RestartPolicy.ON_FAILURE}>on-failure</option>
          <option value={RestartPolicy.ALWAYS}>always</option>
        </select>
      </Field>
      <Field label="Desired state" {...errs.field("desiredState")}>
        <select value={form.desiredState} onChange={(e) => set("desiredState", Number(e.target.value) as DesiredState)} name="desiredState" {...control("desiredState")}>
          <option value={DesiredState.RUNNING}>running</option>
          <option value={DesiredState.STOPPED}>stopped</option>
          <option value={DesiredState.PAUSED}>paused</option>
        </select>
      </Field>
      <label className="check field wide">
        <input type="checkbox" checked={form.console} onChange={(e) => set("console", e.target.checked)} name="console" />
        Console: keep the main process's stdin open, so the Console tab can send it commands (takes effect at the next restart)
      </label>
      {form.console && (
        <Field label="Stop command" hint="written to the console to stop the server (e.g. stop); then SIGTERM after the stop timeout" {...errs.field("stopCommand")}>
          <input value={form.stopCommand} onChange={(e) => set("stopCommand", e.target.value)} {...control("stopCommand")} placeholder="none: SIGTERM at once" className="mono" name="stopCommand" maxLength={4096} />
        </Field>
      )}
      <Field label="Log size" hint="rotate the container's log at this size (e.g. 10M); empty: the manager's default" {...errs.field("logMaxSize")}>
        <input value={form.logMaxSize} onChange={(e) => set("logMaxSize", e.target.value)} {...control("logMaxSize")} placeholder="default" className="mono" name="logMaxSize" />
      </Field>
      <Field label="Log files" hint="kept per container (1 to 20); empty: the manager's default" {...errs.field("logMaxFiles")}>
        <input value={form.logMaxFiles} onChange={(e) => set("logMaxFiles", e.target.value)} {...control("logMaxFiles")} inputMode="numeric" placeholder="default" name="logMaxFiles" />
      </Field>
      <fieldset className="field wide limits" aria-describedby="limits-hint">
        <legend>Resource limits</legend>
        <p className="muted small" id="limits-hint">
          Enforced by Docker; changed limits apply to the running container without a restart (removing one waits for the next restart). Empty: no limit.
        </p>
        <div className="limits-grid">
          <Field label="Memory limit" hint="e.g. 512M or 2G; past it the process is killed (OOMKilled)" {...errs.field("memLimit")}>
            <input value={form.memLimit} onChange={(e) => set("memLimit", e.target.value)} {...control("memLimit")} placeholder="none" className="mono" name="memLimit" />
          </Field>
          <Field label="Memory + swap" hint="at least the memory limit; empty: no swap" {...errs.field("memSwap")}>
            <input value={form.memSwap} onChange={(e) => set("memSwap", e.target.value)} {...control("memSwap")} placeholder="no swap" className="mono" name="memSwap" />
          </Field>
          <Field label="CPUs" hint="cores, e.g. 0.5 or 2" {...errs.field("cpus")}>
            <input value={form.cpus} onChange={(e) => set("cpus", e.target.value)} {...control("cpus")} inputMode="decimal" placeholder="none" name="cpus" />
          </Field>
          <Field label="CPU set" hint="the CPUs it may use, e.g. 0-3 or 0,2" {...errs.field("cpusetCpus")}>
            <input value={form.cpusetCpus} onChange={(e) => set("cpusetCpus", e.target.value)} {...control("cpusetCpus")} placeholder="all" className="mono" name="cpusetCpus" />
          </Field>
          <Field label="Process limit" hint="processes and threads; empty: the manager's default (512); none: no limit" {...errs.field("pidsLimit")}>
            <input value={form.pidsLimit} onChange={(e) => set("pidsLimit", e.target.value)} {...control("pidsLimit")} placeholder="default" name="pidsLimit" />
          </Field>
          <Field label="CPU weight" hint="under contention, 2 to 262144 (1024: Docker's default)" {...errs.field("cpuShares")}>
            <input value={form.cpuShares} onChange={(e) => set("cpuShares", e.target.value)} {...control("cpuShares")} inputMode="numeric" placeholder="default" name="cpuShares" />
          </Field>
          <Field label="IO weight" hint="10 to 1000" {...errs.field("blkioWeight")}>
            <input value={form.blkioWeight} onChange={(e) => set("blkioWeight", e.target.value)} {...control("blkioWeight")} inputMode="numeric" placeholder="default" name="blkioWeight" />
          </Field>
          <Field label="Disk quota" hint="of the data directory, e.g. 10G: a soft quota, checked against its measured size" {...errs.field("diskQuota")}>
            <input value={form.diskQuota} onChange={(e) => set("diskQuota", e.target.value)} {...control("diskQuota")} placeholder="none" className="mono" name="diskQuota" />
          </Field>
        </div>
        <label className="check">
          <input type="checkbox" checked={form.stopOverDiskQuota} onChange={(e) => set("stopOverDiskQuota", e.target.checked)} name="stopOverDiskQuota" disabled={!form.diskQuota.trim()} />
          Stop the server while its data is over the disk quota (it starts again once under it)
        </label>
      </fieldset>
      <fieldset className={`field wide${bad("capAdd") ? " invalid" : ""}`}>
        <legend>Capabilities to give back</legend>
        <p className="muted small">berth drops these by default; give one back only if the server needs it.</p>
        <FieldError id={errs.errorId("capAdd")} text={errs.messageOf("capAdd")} />
        {GIVABLE_CAPABILITIES.map((c) => (
          <label key={c} className="check">
            <input
              type="checkbox"
              checked={form.capAdd.includes(c)}
              onChange={(e) => set("capAdd", e.target.checked ? [...form.capAdd, c] : form.capAdd.filter((x) => x !== c))}
              name={`cap-${c}`}
              {...control("capAdd")}
            />{" "}
            <span className="mono">{c}</span>
          </label>
        ))}
      </fieldset>
    </div>
  );
}

/**
 * The command as the program gets it: one argument per row, no shell quoting,
 * so an argument may hold spaces, quotes or be empty. Enter adds the next
 * argument; Shift+Enter breaks the line inside one (a script for `sh -c`).
 */
function ArgvEditor(props: { argv: string[]; onChange: (argv: string[]) => void; errs: ReturnType<typeof fieldErrors> }) {
  const { argv, onChange, errs } = props;
  const box = useRef<HTMLFieldSetElement>(null);
  const focusRow = useRef<number | undefined>(undefined);
  useEffect(() => {
    if (focusRow.current === undefined) return;
    box.current?.querySelector<HTMLTextAreaElement>(`textarea[name="command.${focusRow.current}"]`)?.focus();
    focusRow.current = undefined;
  });
  const insertAfter = (i: number) => {
    focusRow.current = i + 1;
    onChange([...argv.slice(0, i + 1), "", ...argv.slice(i + 1)]);
  };
  const onKeyDown = (i: number) => (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (e.key !== "Enter" || e.shiftKey || e.nativeEvent.isComposing) return;
    e.preventDefault();
    insertAfter(i);
  };
  return (
    <fieldset className={`field wide argv${errs.bad("command") ? " invalid" : ""}`} ref={box}>
      <legend>Command</legend>
      <span className="hint">optional: the image&apos;s default when empty. One argument per row, exactly as the program gets it (no quoting); Enter adds the next one, Shift+Enter breaks a line inside one.</span>
      <FieldError id={errs.errorId("command")} text={errs.messageOf("command")} />
      <ol className="argv-rows">
        {argv.map((arg, i) => (
          <li key={i} className="argv-row">
            <textarea
              value={arg}
              rows={Math.min(8, arg.split("\n").length)}
              onChange={(e) => onChange(argv.map((a, j) => (j === i ? e.target.value : a)))}
              onKeyDown={onKeyDown(i)}
              className="mono"
              spellCheck={false}
              name={`command.${i}`}
              aria-label={`Argument ${i + 1}`}
              placeholder={i === 0 ? "program, e.g. sh" : "(empty argument)"}
              {...errs.control(`command.${i}`)}
            />
            <button type="button" className="icon-button" aria-label={`Remove argument ${i + 1}`} onClick={() => onChange(argv.filter((_, j) => j !== i))}>
              ×
            </button>
            <FieldError id={errs.errorId(`command.${i}`)} text={errs.messageOf(`command.${i}`)} />
          </li>
        ))}
      </ol>
      <button type="button" className="button small" onClick={() => insertAfter(argv.length - 1)}>
        Add argument
      </button>
    </fieldset>
  );
}

/** A field's problem, beside it (the control names it with aria-describedby). */
export function FieldError({ id, text }: { id: string; text: string | undefined }) {
  if (!text) return null;
  return (
    <span className="field-error" id={id}>
      {text}
    </span>
  );
}

/**
 * Under the form: how many fields need a fix (each shows its own problem),
 * and the problems about no field in full. Scrolls itself into view only when
 * no field has a problem (focus already went to the first bad field).
 */
export function ProblemSummary({ problems }: { problems: readonly FieldProblem[] }) {
  const ref = useRef<HTMLDivElement>(null);
  const fields = [...new Set(problems.flatMap((p) => (p.field === undefined ? [] : [p.field])))].sort(compareFields);
  const general = problems.filter((p) => p.field === undefined);
  useEffect(() => {
    if (fields.length === 0 && general.length > 0) ref.current?.scrollIntoView?.({ block: "nearest", behavior: "smooth" });
    // Only a new set of problems scrolls, not every render.
  }, [problems]);
  if (problems.length === 0) return null;
  return (
    <div className="error-box problem-summary" role="alert" ref={ref}>
      {fields.length > 0 && (
        <p>
          {fields.length === 1 ? "1 field needs" : `${fields.length} fields need`} a fix: {fields.map(fieldLabel).join(", ")}.
        </p>
      )}
      {general.map((p, i) => (
        <p key={i}>{p.message}</p>
      ))}
    </div>
  );
}

export function Field(props: {
  label: string;
  hint?: string;
  invalid?: boolean | undefined;
  /** The field's problem, shown under it; its control names `errorId` in aria-describedby. */
  error?: string | undefined;
  errorId?: string;
  wide?: boolean;
  children: ReactNode;
}) {
  return (
    <label className={`field${props.wide ? " wide" : ""}${props.invalid ? " invalid" : ""}`}>
      <span className="label">{props.label}</span>
      {props.children}
      {props.error && props.errorId && <FieldError id={props.errorId} text={props.error} />}
      {props.hint && <span className="hint">{props.hint}</span>}
    </label>
  );
}
