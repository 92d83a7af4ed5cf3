/**
 * TemplateService: server templates per project and global, egg import, and
 * render previews (docs/templates.md). Viewers read the global templates and
 * their project's; operators change their project's; global templates need
 * an all-projects admin; built-in ones (templates/builtin.ts) are read-only.
 * Every change is one batch with its ledger event.
 */
import { clone, create } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  CreateTemplateResponseSchema,
  DeleteTemplateResponseSchema,
  GetTemplateResponseSchema,
  ImportTemplateResponseSchema,
  ListTemplatesResponseSchema,
  RenderTemplateResponseSchema,
  TemplateFormat,
  TemplateSchema,
  TemplateService,
  UnmappedFieldSchema,
  UpdateTemplateResponseSchema,
  type Template,
} from "@berth/proto/berth/v1/template_pb.js";
import { TemplateRefSchema } from "@berth/proto/berth/v1/server_pb.js";
import { actorOf, callerOf, checkProjectName, requireRole, type Caller } from "../auth/caller.js";
import type { TemplateRecord } from "../domain/records.js";
import { ConflictError, InvalidArgumentError, NotFoundError, PermissionDeniedError } from "../errors.js";
import { newId } from "../ids.js";
import type { Ledger } from "../ledger/ledger.js";
import type { Store } from "../store/store.js";
import { SECRET_MASK } from "../store/secrets.js";
import { importEgg } from "../templates/eggs.js";
import { renderTemplate } from "../templates/render.js";
import { loadVisibleTemplate, mayWriteGlobal, prefixed, requireStorable, requireWritable } from "./template-apply.js";
import { invalidArgument } from "./protovalidate.js";

export interface TemplateServiceDeps {
  store: Store;
  ledger: Ledger;
  now?: () => number;
}

const DEFAULT_PAGE = 100;
const MAX_PAGE = 1000;

/** The opaque next_page_token after the template `last` (by name, then id). */
function pageTokenAfter(last: TemplateRecord | undefined, more: boolean): string {
  return more && last ? Buffer.from(JSON.stringify([last.name, last.id])).toString("base64url") : "";
}

function positionOf(token: string): { name: string; id: string } | undefined {
  if (!token) return undefined;
  try {
    const v: unknown = JSON.parse(Buffer.from(token, "base64url").toString());
    if (Array.isArray(v) && v.length === 2 && typeof v[0] === "string" && typeof v[1] === "string" && v[1].startsWith("tpl_")) return { name: v[0], id: v[1] };
  } catch {
    // Not ours: refused below.
  }
  throw new InvalidArgumentError("page_token", "not a token returned by ListTemplates; omit it to start from the first page");
}

/**
 * The project a new template goes to. A project token's templates go to its
 * project ("" means it too); for an all-projects token "" means global
 * (admin only) and a name that project.
 */
export function templateProjectFor(caller: Caller, requested: string, field: string): string {
  const want = requested.trim();
  if (caller.project !== null) {
    if (want && want !== caller.project) throw new NotFoundError("project", want);
    return caller.project;
  }
  if (want) {
    try {
      return checkProjectName(want);
    } catch (err) {
      throw err instanceof InvalidArgumentError ? new InvalidArgumentError(field, err.violations[0]!.description) : err;
    }
  }
  if (!mayWriteGlobal(caller)) throw new PermissionDeniedError(`a global template (${field} empty) needs an all-projects admin token; token "${caller.name}" is ${caller.role}: set ${field} to a project`);
  return "";
}

/** A template as given, without what the manager assigns. */
function content(t: Template): Template {
  const c = clone(TemplateSchema, t);
  c.id = "";
  c.project = "";
  c.version = 0n;
  c.builtIn = false;
  c.createTime = undefined;
  c.updateTime = undefined;
  return c;
}

const where = (project: string) => (project ? `project ${project}` : "the global templates");

/**
 * RenderTemplate of a template not saved yet: checked as CreateTemplate
 * checks one (problems under "draft."), then rendered with the values
 * (problems on "draft_variables[…]" and "draft_image"). Reads nothing.
 */
function renderDraft(draft: Template, variables: Readonly<Record<string, string>>, image: string, name: string) {
  const t = content(draft);
  requireStorable(t, "draft");
  let spec;
  try {
    spec = renderTemplate(t, variables, { image, name });
  } catch (err) {
    if (!(err instanceof InvalidArgumentError)) throw err;
    throw invalidArgument(err.violations.map((v) => ({ field: /^(variables|image)\b/.test(v.field) ? `draft_${v.field}` : `draft.${v.field}`, message: v.description })));
  }
  const secret = new Set(spec.secretEnv);
  for (const k of secret) if (spec.env[k] !== undefined) spec.env[k] = SECRET_MASK;
  spec.template = create(TemplateRefSchema, { image: spec.image, variables: Object.fromEntries(Object.entries(variables).filter(([k]) => !secret.has(k))) });
  return create(RenderTemplateResponseSchema, { spec });
}

export function createTemplateService(deps: TemplateServiceDeps): ServiceImpl<typeof TemplateService> {
  const { store, ledger } = deps;
  const now = deps.now ?? Date.now;

  async function reread(id: string, fallback: TemplateRecord): Promise<Template> {
    return ((await store.getTemplate(id)) ?? fallback).template;
  }

  async function insert(ctx: HandlerContext, rec: TemplateRecord, type: "template.created" | "template.imported", message: string, payload?: unknown): Promise<Template> {
    const caller = callerOf(ctx);
    await store.commit([
      { op: "template.insert", template: rec },
      ledger.op({ type, project: rec.project, actor: actorOf(caller), correlationId: rec.id, message, ...(payload !== undefined ? { payload } : {}) }),
    ]);
    return reread(rec.id, rec);
  }

  return {
    async listTemplates(req, ctx) {
      const caller = callerOf(ctx);
      const want = req.project.trim();
      let projects: string[] | undefined;
      if (caller.project !== null) {
        if (want && want !== caller.project) throw new NotFoundError("project", want);
        projects = ["", caller.project];
      } else if (want) {
        projects = ["", checkProjectName(want)];
      }
      const limit = Math.min(req.pageSize || DEFAULT_PAGE, MAX_PAGE);
      const after = positionOf(req.pageToken);
      const rows = await store.listTemplates({ ...(projects ? { projects } : {}), ...(after ? { after } : {}), limit: limit + 1 });
      const page = rows.slice(0, limit);
      return create(ListTemplatesResponseSchema, { templates: page.map((r) => r.template), nextPageToken: pageTokenAfter(page.at(-1), rows.length > limit) });
    },

    async getTemplate(req, ctx) {
      return create(GetTemplateResponseSchema, { template: (await loadVisibleTemplate(store, callerOf(ctx), req.id)).template });
    },

    async createTemplate(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "CreateTemplate");
      const t = content(req.template!);
      requireStorable(t, "template");
      const project = templateProjectFor(caller, req.template!.project, "template.project");
      const at = now();
      const rec: TemplateRecord = { id: newId("tpl"), project, name: t.name, version: 1, template: t, builtIn: false, createdAt: at, updatedAt: at, createdBy: actorOf(caller) };
      return create(CreateTemplateResponseSchema, { template: await insert(ctx, rec, "template.created", `template "${rec.name}" created in ${where(project)} (version 1)`) });
    },

    async updateTemplate(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "UpdateTemplate");
      const cur = await loadVisibleTemplate(store, caller, req.id);
      requireWritable(caller, cur, "UpdateTemplate");
      if (req.expectedVersion !== undefined && BigInt(cur.version) !== req.expectedVersion) {
        throw new ConflictError(`template "${cur.name}" is at version ${cur.version}, not ${req.expectedVersion}: someone changed it since you read it; read it again and retry`);
      }
      const wantProject = req.template!.project.trim();
      if (wantProject && wantProject !== cur.project) throw new InvalidArgumentError("template.project", `an update keeps a template in ${where(cur.project)}; leave project empty or create a copy in ${wantProject}`);
      const t = content(req.template!);
      requireStorable(t, "template");
      const next: TemplateRecord = { ...cur, name: t.name, version: cur.version + 1, template: t, updatedAt: now() };
      await store.commit([
        { op: "template.update", template: next, expectVersion: cur.version },
        ledger.op({ type: "template.updated", project: cur.project, actor: actorOf(caller), correlationId: cur.id, message: `template "${next.name}" updated to version ${next.version}`, payload: { version: next.version } }),
      ]);
      return create(UpdateTemplateResponseSchema, { template: await reread(cur.id, next) });
    },

    async deleteTemplate(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "DeleteTemplate");
      const cur = await loadVisibleTemplate(store, caller, req.id);
      requireWritable(caller, cur, "DeleteTemplate");
      await store.commit([
        { op: "template.delete", id: cur.id },
        ledger.op({ type: "template.deleted", project: cur.project, actor: actorOf(caller), correlationId: cur.id, message: `template "${cur.name}" (version ${cur.version}) deleted; servers made from it keep running their spec` }),
      ]);
      return create(DeleteTemplateResponseSchema, {});
    },

    async importTemplate(req, ctx) {
      const caller = callerOf(ctx);
      requireRole(caller, "operator", "ImportTemplate");
      const project = templateProjectFor(caller, req.project, "project");
      // A bad egg is InvalidArgument naming "content" (or "format") with what to fix.
      const imported = importEgg(req.content, req.format);
      const t = imported.template;
      requireStorable(t, "template");
      const unmapped = imported.unmapped.map((u) => create(UnmappedFieldSchema, u));
      if (req.dryRun) return create(ImportTemplateResponseSchema, { template: { ...t, project }, unmapped });
      const at = now();
      const rec: TemplateRecord = { id: newId("tpl"), project, name: t.name, version: 1, template: content(t), builtIn: false, createdAt: at, updatedAt: at, createdBy: actorOf(caller) };
      const template = await insert(
        ctx,
        rec,
        "template.imported",
        `template "${rec.name}" imported into ${where(project)} from a ${TemplateFormat[imported.format] === "PELICAN_EGG" ? "Pelican" : "Pterodactyl"} egg (${imported.version}); ${unmapped.length} field(s) not taken over`,
        { format: TemplateFormat[imported.format], eggVersion: imported.version, unmapped: imported.unmapped },
      );
      return create(ImportTemplateResponseSchema, { template, unmapped });
    },

    async renderTemplate(req, ctx) {
      const caller = callerOf(ctx);
      if (req.draft) return renderDraft(req.draft, req.draftVariables, req.draftImage, req.name);
      if (!req.ref) throw new InvalidArgumentError("ref", "set ref (a stored template and its variables) or draft (a template not saved yet)");
      const ref = req.ref;
      const rec = await loadVisibleTemplate(store, caller, ref.templateId);
      let spec;
      try {
        spec = renderTemplate(rec.template, ref.variables, { image: ref.image, name: req.name });
      } catch (err) {
        throw prefixed(err, "ref.");
      }
      for (const k of spec.secretEnv) if (spec.env[k] !== undefined) spec.env[k] = SECRET_MASK;
      const secret = new Set(spec.secretEnv);
      spec.template = create(TemplateRefSchema, {
        templateId: rec.id,
        version: BigInt(rec.version),
        image: spec.image,
        variables: Object.fromEntries(Object.entries(ref.variables).filter(([k]) => !secret.has(k))),
      });
      return create(RenderTemplateResponseSchema, { spec });
    },
  };
}
