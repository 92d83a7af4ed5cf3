/**
 * TemplateService and servers made from templates, through a whole manager
 * in-process (startTestManager: real auth, request validation and store, on
 * SQLite and PostgreSQL) with a scripted agent for a host: CRUD with roles
 * and projects, versions and optimistic concurrency, egg import, render
 * previews, unsafe regular expressions refused, the built-in catalogue, and
 * CreateServer/UpdateServer/GetServer with a template.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessService, Role } from "@berth/proto/berth/v1/access_pb.js";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { ConditionStatus, DesiredState, ServerService } from "@berth/proto/berth/v1/server_pb.js";
import { HostPortMode, TemplateFormat, TemplateService, VariableKind, type Template } from "@berth/proto/berth/v1/template_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { TemplateSchema } from "@berth/proto/berth/v1/template_pb.js";
import { BadRequestSchema } from "@berth/proto/google/rpc/error_details_pb.js";
import { ScriptedAgent, startTestManager, type TestManager } from "../../testing/fuzz-kit.js";
import { BUILTIN_TEMPLATES, ensureBuiltinTemplates } from "../templates/builtin.js";
import { Ledger } from "../ledger/ledger.js";

const FIXTURES = fileURLToPath(new URL("../../../test/fixtures/eggs/", import.meta.url));
const fixture = (name: string) => new Uint8Array(readFileSync(FIXTURES + name));

let tm: TestManager;
let agent: ScriptedAgent;
const tokens: Record<string, string> = {};

beforeAll(async () => {
  tm = await startTestManager();
  agent = await ScriptedAgent.enroll(tm);
  agent.connect();
  const access = createClient(AccessService, tm.transport());
  for (const [name, role, project] of [
    ["viewer", Role.VIEWER, "default"],
    ["operator", Role.OPERATOR, "default"],
    ["games-operator", Role.OPERATOR, "games"],
    ["project-admin", Role.ADMIN, "default"],
  ] as const) {
    tokens[name] = (await access.createToken({ name, role, project })).secret;
  }
});

afterAll(async () => {
  await agent?.close();
  await tm?.close();
});

const templates = (token?: string) => createClient(TemplateService, tm.transport(token));
const servers = (token?: string) => createClient(ServerService, tm.transport(token));

async function refusal(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("the call was not refused");
}
const fields = (err: ConnectError) => err.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));

let seq = 0;
function web(o: MessageInitShape<typeof TemplateSchema> = {}): MessageInitShape<typeof TemplateSchema> {
  return {
    name: `web-${++seq}`,
    images: [{ image: "busybox:1" }, { image: "busybox:1.36" }],
    startup: "httpd -f -p {{PORT}} -h {{ROOT}}",
    variables: [
      { env: "PORT", defaultValue: "8080", userEditable: true, rule: { kind: VariableKind.INTEGER, min: 1024, max: 65535 } },
      { env: "ROOT", defaultValue: "/data", userEditable: false },
      { env: "TOKEN", defaultValue: "", userEditable: true, secret: true },
    ],
    ports: [{ containerPort: 8080, hostPortMode: HostPortMode.NONE }],
    ...o,
  };
}

describe("TemplateService: CRUD, roles and projects", () => {
  it("creates version 1 in the caller's project, updates to version 2 with expected_version, deletes; each a ledger event", async () => {
    const op = templates(tokens.operator);
    const { template: t } = await op.createTemplate({ template: web({ description: "first" }) });
    expect([t!.project, t!.version, t!.builtIn, t!.id.startsWith("tpl_")]).toEqual(["default", 1n, false, true]);
    expect(t!.createTime).toBeDefined();

    const { template: u } = await op.updateTemplate({ id: t!.id, template: { ...web({ name: t!.name, description: "second" }) }, expectedVersion: 1n });
    expect([u!.version, u!.description, u!.id]).toEqual([2n, "second", t!.id]);
    const stale = await refusal(op.updateTemplate({ id: t!.id, template: web({ name: t!.name }), expectedVersion: 1n }));
    expect(stale.code).toBe(Code.Aborted);
    expect(stale.message).toMatch(/version 2, not 1.*read it again/);
    expect((await op.getTemplate({ id: t!.id })).template!.description).toBe("second");

    await op.deleteTemplate({ id: t!.id });
    expect((await refusal(op.getTemplate({ id: t!.id }))).code).toBe(Code.NotFound);

    const { events } = await createClient(EventService, tm.transport()).listEvents({ pageSize: 1000, typePrefix: "template." });
    const mine = events.filter((e) => e.correlationId === t!.id).map((e) => e.type);
    expect(mine).toEqual(expect.arrayContaining(["template.created", "template.updated", "template.deleted"]));
  });

  it("keeps names unique per project: AlreadyExists in the same project, fine in another", async () => {
    const tpl = web();
    await templates(tokens.operator).createTemplate({ template: tpl });
    expect((await refusal(templates(tokens.operator).createTemplate({ template: tpl }))).code).toBe(Code.AlreadyExists);
    const { template } = await templates(tokens["games-operator"]).createTemplate({ template: tpl });
    expect(template!.project).toBe("games");
  });

  it("hides another project's template (NotFound) and lists global + own project, paged by name", async () => {
    const { template: games } = await templates(tokens["games-operator"]).createTemplate({ template: web() });
    // One call at a time: calls made up front would reject before they are awaited (unhandled).
    for (const call of [
      () => templates(tokens.operator).getTemplate({ id: games!.id }),
      () => templates(tokens.operator).updateTemplate({ id: games!.id, template: web({ name: games!.name }) }),
      () => templates(tokens.operator).deleteTemplate({ id: games!.id }),
      () => templates(tokens.operator).renderTemplate({ ref: { templateId: games!.id } }),
    ]) {
      expect((await refusal(call())).code).toBe(Code.NotFound);
    }
    const seen: Template[] = [];
    let pageToken = "";
    do {
      const page = await templates(tokens.viewer).listTemplates({ pageSize: 2, pageToken });
      expect(page.templates.length).toBeLessThanOrEqual(2);
      seen.push(...page.templates);
      pageToken = page.nextPageToken;
    } while (pageToken);
    expect(new Set(seen.map((t) => t.project))).toEqual(new Set(["", "default"]));
    expect(seen.map((t) => t.name)).toEqual([...seen.map((t) => t.name)].sort());
    expect(seen.some((t) => t.name === "sleeper" && t.builtIn)).toBe(true);
    expect((await refusal(templates(tokens.viewer).listTemplates({ project: "games" }))).code).toBe(Code.NotFound);
    expect((await refusal(templates(tokens.viewer).listTemplates({ pageToken: "bogus" }))).code).toBe(Code.InvalidArgument);
    // An all-projects admin sees every project.
    const all = await templates().listTemplates({ pageSize: 1000 });
    expect(all.templates.some((t) => t.id === games!.id)).toBe(true);
  });

  it("lets viewers read but not write; global templates only for an all-projects admin; built-ins are read-only", async () => {
    expect((await refusal(templates(tokens.viewer).createTemplate({ template: web() }))).code).toBe(Code.PermissionDenied);
    const { template: global } = await templates().createTemplate({ template: web() });
    expect(global!.project).toBe("");
    // A project token's "" is its own project, never global.
    expect((await templates(tokens.operator).createTemplate({ template: web() })).template!.project).toBe("default");
    const denied = await refusal(templates(tokens["project-admin"]).updateTemplate({ id: global!.id, template: web({ name: global!.name }) }));
    expect(denied.code).toBe(Code.PermissionDenied);
    expect(denied.message).toMatch(/global.*all-projects admin/);
    expect((await refusal(templates(tokens.operator).deleteTemplate({ id: global!.id }))).code).toBe(Code.PermissionDenied);
    expect((await templates(tokens.viewer).getTemplate({ id: global!.id })).template!.name).toBe(global!.name);

    const { templates: list } = await templates().listTemplates({ pageSize: 1000 });
    const sleeper = list.find((t) => t.name === "sleeper" && t.project === "")!;
    const ro = await refusal(templates().deleteTemplate({ id: sleeper.id }));
    expect(ro.code).toBe(Code.FailedPrecondition);
    expect(ro.message).toMatch(/built into berth.*copy it with CreateTemplate/);
    expect((await refusal(templates().updateTemplate({ id: sleeper.id, template: web({ name: "sleeper" }) }))).code).toBe(Code.FailedPrecondition);
  });

  it("refuses bad templates with InvalidArgument naming the field", async () => {
    const op = templates(tokens.operator);
    const cases: [MessageInitShape<typeof TemplateSchema>, string, RegExp][] = [
      [web({ startup: "run {{NOPE}}" }), "template.startup", /\{\{NOPE\}\} is not a variable/],
      [web({ images: [] }), "template.images", /./],
      [web({ variables: [{ env: "X", rule: { regex: "^(a+)+$" } }], startup: "" }), "template.variables[0].rule.regex", /refused: .*nested quantifier/],
      [web({ readyPattern: "(x)\\1" }), "template.ready_pattern", /refused: .*backreference/],
      [web({ readyPattern: "x".repeat(600) }), "template.ready_pattern", /./],
    ];
    for (const [t, field, msg] of cases) {
      const err = await refusal(op.createTemplate({ template: t }));
      expect(err.code, field).toBe(Code.InvalidArgument);
      expect(fields(err), field).toContain(field);
      expect(err.message, field).toMatch(msg);
    }
  });
});

describe("TemplateService: import and render", () => {
  it("imports the Paper-like egg, persisted, with the unmapped list; dry_run creates nothing", async () => {
    const op = templates(tokens.operator);
    const dry = await op.importTemplate({ content: fixture("paper-like.ptdl_v2.json"), dryRun: true });
    expect(dry.template!.id).toBe("");
    const before = (await op.listTemplates({ pageSize: 1000 })).templates.length;
    const res = await op.importTemplate({ content: fixture("paper-like.ptdl_v2.json"), format: TemplateFormat.PTERODACTYL_EGG });
    expect((await op.listTemplates({ pageSize: 1000 })).templates.length).toBe(before + 1);
    expect(res.template!.id).toMatch(/^tpl_/);
    expect(res.template!.project).toBe("default");
    expect(res.unmapped.length).toBeGreaterThan(0);
    expect(res.unmapped).toEqual(dry.unmapped);
    const got = (await op.getTemplate({ id: res.template!.id })).template!;
    expect(got.variables.map((v) => v.env)).toEqual(dry.template!.variables.map((v) => v.env));
    const { events } = await createClient(EventService, tm.transport()).listEvents({ pageSize: 1000, typePrefix: "template." });
    expect(events.find((e) => e.correlationId === got.id)?.type).toBe("template.imported");
    // The same egg again: its name is taken in the project.
    expect((await refusal(op.importTemplate({ content: fixture("paper-like.ptdl_v2.json") }))).code).toBe(Code.AlreadyExists);
    // Garbage: InvalidArgument naming content.
    const bad = await refusal(op.importTemplate({ content: new TextEncoder().encode("{nope") }));
    expect([bad.code, fields(bad)[0]]).toEqual([Code.InvalidArgument, "content"]);
  });

  it("refuses an egg whose variable regex can backtrack catastrophically, naming the variable's rule", async () => {
    const egg = JSON.parse(readFileSync(FIXTURES + "paper-like.ptdl_v2.json", "utf8")) as { name: string; variables: { rules: string }[] };
    egg.name = "evil";
    egg.variables[0]!.rules = "required|regex:/^([a-z]+)*$/";
    const err = await refusal(templates(tokens.operator).importTemplate({ content: new TextEncoder().encode(JSON.stringify(egg)) }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(fields(err)).toEqual(["variables[0].rules"]);
    expect(err.message).toMatch(/nested quantifier/);
  });

  it("renders a preview with secrets masked, and names a bad variable", async () => {
    const { template: t } = await templates(tokens.operator).createTemplate({ template: web() });
    const { spec } = await templates(tokens.viewer).renderTemplate({ ref: { templateId: t!.id, variables: { PORT: "9090", TOKEN: "s3cret" }, image: "busybox:1.36" }, name: "preview" });
    expect(spec!.command).toEqual(["httpd", "-f", "-p", "9090", "-h", "/data"]);
    expect(spec!.image).toBe("busybox:1.36");
    expect(spec!.env.TOKEN).toBe("********");
    expect(spec!.template!.variables).toEqual({ PORT: "9090" });
    expect(spec!.template!.version).toBe(1n);
    const err = await refusal(templates(tokens.viewer).renderTemplate({ ref: { templateId: t!.id, variables: { PORT: "80" } } }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(fields(err)).toEqual(['ref.variables["PORT"]']);
    expect(err.message).toMatch(/at least 1024/);
  });
});

describe("RenderTemplate of a draft (an editor's unsaved changes)", () => {
  it("renders a template that is not stored, names its problems under draft. and draft_variables, and stores nothing", async () => {
    const before = (await templates(tokens.viewer).listTemplates({})).templates.length;
    const { spec } = await templates(tokens.viewer).renderTemplate({ draft: web(), draftVariables: { PORT: "9090", TOKEN: "s3cret" }, draftImage: "busybox:1.36", name: "preview" });
    expect(spec!.command).toEqual(["httpd", "-f", "-p", "9090", "-h", "/data"]);
    expect(spec!.image).toBe("busybox:1.36");
    expect(spec!.env.TOKEN).toBe("********");
    expect(spec!.template!.variables).toEqual({ PORT: "9090" });
    expect([spec!.template!.templateId, spec!.template!.version]).toEqual(["", 0n]);
    // A bad value, a bad template (a placeholder without a variable), and neither/both of ref and draft.
    const value = await refusal(templates(tokens.viewer).renderTemplate({ draft: web(), draftVariables: { PORT: "80" } }));
    expect([value.code, fields(value)]).toEqual([Code.InvalidArgument, ['draft_variables["PORT"]']]);
    const image = await refusal(templates(tokens.viewer).renderTemplate({ draft: web(), draftImage: "nginx:1" }));
    expect([image.code, fields(image)]).toEqual([Code.InvalidArgument, ["draft_image"]]);
    const broken = await refusal(templates(tokens.viewer).renderTemplate({ draft: { ...web(), startup: "httpd -p {{NOPE}}" } }));
    expect([broken.code, fields(broken)]).toEqual([Code.InvalidArgument, ["draft.startup"]]);
    const neither = await refusal(templates(tokens.viewer).renderTemplate({ name: "x" }));
    expect(neither.code).toBe(Code.InvalidArgument);
    expect(neither.message).toMatch(/set ref .* or draft/);
    const both = await refusal(templates(tokens.viewer).renderTemplate({ ref: { templateId: "tpl_x" }, draft: web() }));
    expect(both.code).toBe(Code.InvalidArgument);
    expect((await templates(tokens.viewer).listTemplates({})).templates.length).toBe(before);
  });
});

describe("servers from templates", () => {
  it("creates a server from a template: rendered spec with the record of template, version and variables", async () => {
    const { template: t } = await templates(tokens.operator).createTemplate({ template: web() });
    const { server } = await servers(tokens.operator).createServer({
      spec: { name: `tw-${seq}`, hostId: agent.hostId, desiredState: DesiredState.STOPPED },
      template: { templateId: t!.id, variables: { PORT: "9000", TOKEN: "hunter2" }, image: "busybox:1.36" },
    });
    const spec = server!.spec!;
    expect([spec.image, spec.command, spec.env.PORT, spec.env.ROOT, spec.env.TOKEN, spec.secretEnv, spec.dataMountPath]).toEqual([
      "busybox:1.36",
      ["httpd", "-f", "-p", "9000", "-h", "/data"],
      "9000",
      "/data",
      "********",
      ["TOKEN"],
      "/data",
    ]);
    expect(spec.template).toMatchObject({ templateId: t!.id, version: 1n, image: "busybox:1.36", variables: { PORT: "9000" } });
    // The secret is stored sealed, not in the template reference.
    const rows = await tm.rows(`SELECT spec_json FROM servers WHERE id = '${server!.id}'`);
    expect(String(rows[0]![0])).not.toContain("hunter2");
  });

  it("refuses bad variables naming the variable, and spec fields the template gives", async () => {
    const { template: t } = await templates(tokens.operator).createTemplate({ template: web() });
    const bad = await refusal(servers(tokens.operator).createServer({ spec: { name: "bad-vars", hostId: agent.hostId }, template: { templateId: t!.id, variables: { PORT: "abc", NOPE: "1" } } }));
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(fields(bad).sort()).toEqual(['template.variables["NOPE"]', 'template.variables["PORT"]']);
    expect(bad.message).toMatch(/whole number/);
    const ro = await refusal(servers(tokens.operator).createServer({ spec: { name: "bad-vars", hostId: agent.hostId }, template: { templateId: t!.id, variables: { ROOT: "/etc" } } }));
    expect(fields(ro)).toEqual(['template.variables["ROOT"]']);
    const both = await refusal(servers(tokens.operator).createServer({ spec: { name: "bad-vars", image: "busybox:1", command: ["sh"] }, template: { templateId: t!.id } }));
    expect(fields(both)).toEqual(["spec.image", "spec.command"]);
    const img = await refusal(servers(tokens.operator).createServer({ spec: { name: "bad-vars", hostId: agent.hostId }, template: { templateId: t!.id, image: "alpine:3" } }));
    expect(fields(img)).toEqual(["template.image"]);
    // Without a template, an image is still required.
    const noImage = await refusal(servers(tokens.operator).createServer({ spec: { name: "no-image", hostId: agent.hostId } }));
    expect([noImage.code, fields(noImage)]).toEqual([Code.InvalidArgument, ["spec.image"]]);
    // Another project's template is not found.
    const { template: games } = await templates(tokens["games-operator"]).createTemplate({ template: web() });
    expect((await refusal(servers(tokens.operator).createServer({ spec: { name: "other", hostId: agent.hostId }, template: { templateId: games!.id } }))).code).toBe(Code.NotFound);
    expect((await servers(tokens.operator).listServers({})).servers.some((s) => s.spec!.name === "bad-vars")).toBe(false);
  });

  it("shows TemplateOutdated when the template moves on or is deleted; UpdateServer with template re-renders from the latest, keeping the secret", async () => {
    const op = templates(tokens.operator);
    const { template: t } = await op.createTemplate({ template: web() });
    const name = `out-${seq}`;
    const { server } = await servers(tokens.operator).createServer({
      spec: { name, hostId: agent.hostId, desiredState: DesiredState.STOPPED },
      template: { templateId: t!.id, variables: { PORT: "9001", TOKEN: "keep-me" } },
    });
    const outdated = async () => (await servers(tokens.viewer).getServer({ id: server!.id })).server!.status!.conditions.find((c) => c.type === "TemplateOutdated");
    expect(await outdated()).toBeUndefined();

    await op.updateTemplate({ id: t!.id, template: web({ name: t!.name, startup: "httpd -f -v -p {{PORT}} -h {{ROOT}}" }) });
    const c = await outdated();
    expect([c?.status, c?.reason]).toEqual([ConditionStatus.TRUE, "TemplateUpdated"]);
    expect(c!.message).toMatch(/version 2; this server was rendered from version 1/);
    const listed = (await servers(tokens.viewer).listServers({})).servers.find((s) => s.id === server!.id)!;
    expect(listed.status!.conditions.some((x) => x.type === "TemplateOutdated")).toBe(true);
    // The server's spec is what was rendered; the new startup is not applied by itself.
    expect((await servers(tokens.viewer).getServer({ id: server!.id })).server!.spec!.command).not.toContain("-v");

    // An update with a spec only keeps the template record (whatever the request says).
    const cur = (await servers(tokens.operator).getServer({ id: server!.id })).server!;
    const kept = await servers(tokens.operator).updateServer({ id: server!.id, spec: { ...cur.spec!, template: undefined, env: { ...cur.spec!.env } } });
    expect(kept.server!.spec!.template?.version).toBe(1n);

    // UpdateServer with template: rendered from the latest version, new variables, the secret kept.
    const { server: updated } = await servers(tokens.operator).updateServer({ id: server!.id, spec: { name, desiredState: DesiredState.STOPPED }, template: { templateId: t!.id, variables: { PORT: "9002" } } });
    expect(updated!.spec!.command).toEqual(["httpd", "-f", "-v", "-p", "9002", "-h", "/data"]);
    expect(updated!.spec!.template).toMatchObject({ version: 2n, variables: { PORT: "9002" } });
    expect(updated!.spec!.env.TOKEN).toBe("********");
    expect(await outdated()).toBeUndefined();
    const badUpdate = await refusal(servers(tokens.operator).updateServer({ id: server!.id, spec: { name }, template: { templateId: t!.id, variables: { PORT: "1" } } }));
    expect(fields(badUpdate)).toEqual(['template.variables["PORT"]']);

    await op.deleteTemplate({ id: t!.id });
    const gone = await outdated();
    expect(gone?.reason).toBe("TemplateDeleted");
    // The server itself is untouched.
    expect((await servers(tokens.viewer).getServer({ id: server!.id })).server!.spec!.command).toEqual(["httpd", "-f", "-v", "-p", "9002", "-h", "/data"]);
  });

  it("creates a server from the built-in busybox-httpd: RANGE ports pick the first free host port", async () => {
    const { templates: list } = await templates().listTemplates({ pageSize: 1000 });
    const httpd = list.find((t) => t.name === "busybox-httpd" && t.builtIn)!;
    const make = (name: string) =>
      servers(tokens.operator).createServer({ spec: { name, hostId: agent.hostId, desiredState: DesiredState.STOPPED }, template: { templateId: httpd.id, variables: { WELCOME: "hi" } } });
    const a = (await make("httpd-a")).server!;
    const b = (await make("httpd-b")).server!;
    expect(a.spec!.ports.map((p) => p.hostPort)).toEqual([18080]);
    expect(b.spec!.ports.map((p) => p.hostPort)).toEqual([18081]);
    expect(a.spec!.command[0]).toBe("/bin/sh");
    expect(a.spec!.env.WELCOME).toBe("hi");
  });
});

describe("built-in templates", () => {
  it("are installed at start, and a second start changes nothing", async () => {
    const { templates: list } = await templates().listTemplates({ pageSize: 1000 });
    for (const def of BUILTIN_TEMPLATES) {
      const t = list.find((x) => x.name === def.name && x.project === "");
      expect([t?.builtIn, t?.version], def.name).toEqual([true, 1n]);
    }
    const again = await ensureBuiltinTemplates(tm.manager.store, new Ledger(tm.manager.store));
    expect(again).toEqual({ created: [], updated: [] });
  });

  it("are created again when deleted behind berth's back, and updated (version + 1, same id) when their definition differs", async () => {
    const store = tm.manager.store;
    const sleeper = (await store.findTemplateByName("", "sleeper"))!;
    const echo = (await store.findTemplateByName("", "console-echo"))!;
    await store.commit([{ op: "template.delete", id: sleeper.id }]);
    await store.commit([{ op: "template.update", template: { ...echo, version: echo.version + 1, template: { ...echo.template, startup: "cat" } }, expectVersion: echo.version }]);
    expect(await ensureBuiltinTemplates(store, new Ledger(store))).toEqual({ created: ["sleeper"], updated: ["console-echo"] });
    const back = (await store.findTemplateByName("", "sleeper"))!;
    expect([back.builtIn, back.version, back.id === sleeper.id]).toEqual([true, 1, false]);
    const fixed = (await store.findTemplateByName("", "console-echo"))!;
    expect([fixed.id, fixed.version, fixed.template.startup]).toEqual([echo.id, echo.version + 2, BUILTIN_TEMPLATES.find((t) => t.name === "console-echo")!.startup]);
  });
});
