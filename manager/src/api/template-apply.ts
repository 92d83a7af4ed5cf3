/**
 * Templates as the API uses them: who sees and changes which template, the
 * checks a template passes before it is stored, and a server's spec rendered
 * from a template (CreateServer / UpdateServer with `template`, and
 * TemplateService.RenderTemplate). docs/templates.md.
 */
import { clone, create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ConditionSchema, ConditionStatus, ServerSpecSchema, ServerStatusSchema, TemplateRefSchema, type Server, type ServerSpec, type TemplateRef } from "@berth/proto/berth/v1/server_pb.js";
import { TemplateSchema, type Template } from "@berth/proto/berth/v1/template_pb.js";
import { canSee, hasRole, type Caller } from "../auth/caller.js";
import type { TemplateRecord } from "../domain/records.js";
import { InvalidArgumentError, NotFoundError, PermissionDeniedError, PreconditionError } from "../errors.js";
import type { Store } from "../store/store.js";
import { SECRET_MASK } from "../store/secrets.js";
import { checkTemplate, renderTemplate } from "../templates/render.js";
import { invalidArgument, ruleProblems, type Problem } from "./protovalidate.js";

/** The condition GetServer/ListServers add to a server whose template moved on (or is gone). */
export const TEMPLATE_OUTDATED = "TemplateOutdated";

const LIST_HINT = "list templates with TemplateService.ListTemplates";

/** The template `id` as `caller` may see it (global, or of a project it sees); NotFound otherwise. */
export async function loadVisibleTemplate(store: Store, caller: Caller, id: string, inProject?: string): Promise<TemplateRecord> {
  const rec = await store.getTemplate(id.trim());
  const visible = rec && (rec.project === "" || (canSee(caller, rec.project) && (inProject === undefined || rec.project === inProject)));
  if (!rec || !visible) throw new NotFoundError("template", id, LIST_HINT);
  return rec;
}

/** May `caller` change global templates? Only an all-projects admin. */
export function mayWriteGlobal(caller: Caller): boolean {
  return caller.project === null && hasRole(caller, "admin");
}

/**
 * Refuses a change to `rec` the caller may not make: built-in templates are
 * read-only; global ones need an all-projects admin. (Its visibility was
 * checked by loadVisibleTemplate.)
 */
export function requireWritable(caller: Caller, rec: TemplateRecord, action: string): void {
  if (rec.builtIn) throw new PreconditionError(`template "${rec.name}" is built into berth and cannot be changed or deleted (${action}); copy it with CreateTemplate and change the copy`);
  if (rec.project === "" && !mayWriteGlobal(caller)) {
    throw new PermissionDeniedError(`template "${rec.name}" is global: ${action} needs an all-projects admin token; token "${caller.name}" is ${caller.project === null ? caller.role : `scoped to project ${caller.project}`}`);
  }
}

/**
 * Every problem of a template about to be stored: the contract's field rules
 * (an imported template did not pass through the request's validation) and
 * checkTemplate's (placeholders, variables, regular expressions), with field
 * paths under `prefix`. Throws one InvalidArgument naming each.
 */
export function requireStorable(t: Template, prefix: string): void {
  const problems: Problem[] = [
    ...ruleProblems(TemplateSchema, t, prefix),
    ...checkTemplate(t).map((v) => ({ field: `${prefix}.${v.field}`, message: v.description })),
  ];
  if (problems.length > 0) throw invalidArgument(problems);
}

/** The same InvalidArgument with every field under `prefix` (e.g. "template."). */
export function prefixed(err: unknown, prefix: string): unknown {
  if (!(err instanceof InvalidArgumentError)) return err;
  return invalidArgument(err.violations.map((v) => ({ field: `${prefix}${v.field}`, message: v.description })));
}

/** The spec fields a template gives (CreateServerRequest.spec must leave them empty). */
const TEMPLATE_FIELDS = [
  ["image", (s: ServerSpec) => s.image !== ""],
  ["command", (s: ServerSpec) => s.command.length > 0],
  ["env", (s: ServerSpec) => Object.keys(s.env).length > 0],
  ["secret_env", (s: ServerSpec) => s.secretEnv.length > 0],
  ["ports", (s: ServerSpec) => s.ports.length > 0],
  ["data_mount_path", (s: ServerSpec) => s.dataMountPath !== ""],
  ["stop_command", (s: ServerSpec) => s.stopCommand !== ""],
  ["console", (s: ServerSpec) => s.console],
  ["restart_policy", (s: ServerSpec) => s.restartPolicy !== 0],
  ["install", (s: ServerSpec) => s.install !== undefined],
  ["ready_pattern", (s: ServerSpec) => s.readyPattern !== ""],
  ["stop_signal", (s: ServerSpec) => s.stopSignal !== ""],
] as const;

/** Refuses a CreateServerRequest spec that sets what its template gives. */
export function requireTemplateFieldsEmpty(spec: ServerSpec): void {
  const set = TEMPLATE_FIELDS.filter(([, has]) => has(spec)).map(([f]) => f);
  if (set.length === 0) return;
  throw invalidArgument(
    set.map((f) => ({ field: `spec.${f}`, message: `comes from the template; leave it empty (choose the image with template.image, give values with template.variables), or create the server from a whole spec without template` })),
  );
}

export interface RenderForServer {
  /** The spec the request gave: name, host, desired state and what templates do not set. */
  base: ServerSpec;
  /** The server's stored spec (UpdateServer): secret variables left out or "********" keep their stored values. */
  stored?: ServerSpec;
  /** The template must be global or of this project (the server's). */
  project: string;
  /** Host ports taken on the server's host, as "25565/tcp": RANGE ports pick around them. */
  takenHostPorts?: ReadonlySet<string>;
}

/**
 * The spec a server gets from `ref`: the template rendered with the values
 * given (InvalidArgument naming `template.variables["X"]` for a bad one), the
 * template's fields over `base`'s, and the record of it (spec.template: the
 * template's id and current version, the image, the values given except
 * secret ones, which are only in the secret env).
 */
export async function renderForServer(store: Store, caller: Caller, ref: TemplateRef, o: RenderForServer): Promise<{ spec: ServerSpec; template: TemplateRecord }> {
  const rec = await loadVisibleTemplate(store, caller, ref.templateId, o.project);
  let t = rec.template;
  const values: Record<string, string> = { ...ref.variables };
  const kept: string[] = [];
  if (o.stored) {
    // A secret the caller did not send again keeps the stored value; it is not checked again (it was when given).
    const relaxed = clone(TemplateSchema, t);
    for (const v of relaxed.variables) {
      if (!v.secret || o.stored.env[v.env] === undefined || !o.stored.secretEnv.includes(v.env)) continue;
      if (Object.hasOwn(values, v.env) && values[v.env] !== SECRET_MASK) continue;
      delete values[v.env];
      v.required = false;
      v.rule = undefined;
      kept.push(v.env);
    }
    t = relaxed;
  }
  let rendered: ServerSpec;
  try {
    rendered = renderTemplate(t, values, { image: ref.image, name: o.base.name, ...(o.base.resources ? { resources: o.base.resources } : {}), ...(o.takenHostPorts ? { takenHostPorts: o.takenHostPorts } : {}) });
  } catch (err) {
    throw prefixed(err, "template.");
  }
  const env = { ...rendered.env };
  for (const k of kept) env[k] = SECRET_MASK;
  const secret = new Set(rec.template.variables.filter((v) => v.secret).map((v) => v.env));
  const given: Record<string, string> = {};
  for (const [k, v] of Object.entries(ref.variables)) if (!secret.has(k)) given[k] = v;
  const spec = clone(ServerSpecSchema, o.base);
  Object.assign(spec, {
    image: rendered.image,
    command: rendered.command,
    env,
    secretEnv: rendered.secretEnv,
    ports: rendered.ports,
    dataMountPath: rendered.dataMountPath,
    stopCommand: rendered.stopCommand,
    console: rendered.console,
    restartPolicy: rendered.restartPolicy,
    readyPattern: rendered.readyPattern,
    stopSignal: rendered.stopSignal,
    resources: rendered.resources,
    install: rendered.install,
    template: create(TemplateRefSchema, { templateId: rec.id, version: BigInt(rec.version), image: rendered.image, variables: given }),
  });
  return { spec, template: rec };
}

/**
 * Adds the TemplateOutdated condition to servers made from a template that
 * has a newer version now, or is gone (the server keeps running its rendered
 * spec either way). Reads each template once.
 */
export async function markOutdatedTemplates(store: Pick<Store, "getTemplate">, servers: readonly Server[]): Promise<void> {
  const cache = new Map<string, Promise<TemplateRecord | undefined>>();
  for (const s of servers) {
    const ref = s.spec?.template;
    if (!ref?.templateId || !s.status) continue;
    let p = cache.get(ref.templateId);
    if (!p) cache.set(ref.templateId, (p = store.getTemplate(ref.templateId)));
    const rec = await p;
    if (rec && BigInt(rec.version) <= ref.version) continue;
    // The status may be the store's cached record (frozen under test): a copy gets the condition.
    s.status = clone(ServerStatusSchema, s.status);
    s.status.conditions.push(
      create(ConditionSchema, {
        type: TEMPLATE_OUTDATED,
        status: ConditionStatus.TRUE,
        reason: rec ? "TemplateUpdated" : "TemplateDeleted",
        message: rec
          ? `template "${rec.name}" is at version ${rec.version}; this server was rendered from version ${ref.version}. It keeps running that spec; apply the new version with UpdateServer (template with its variables), then restart or rebuild`
          : `template ${ref.templateId} (version ${ref.version}) was deleted; this server keeps running the spec rendered from it`,
        ...(rec ? { lastTransitionTime: timestampFromMs(rec.updatedAt) } : {}),
        observedGeneration: s.generation,
      }),
    );
  }
}
