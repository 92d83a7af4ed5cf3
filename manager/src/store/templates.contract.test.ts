/**
 * The store contract's server templates (store.ts template.* operations,
 * TemplateReads; migration 15), on the engine testStore() opens
 * (BERTH_TEST_STORE=sqlite|postgres): every field read back as written,
 * names unique per project (global = ""), updates conditioned on the version
 * read, listing by name filtered by project and paged, batches atomic.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { TemplateSchema, VariableKind } from "@berth/proto/berth/v1/template_pb.js";
import type { TemplateRecord } from "../domain/records.js";
import { AlreadyExistsError, ConflictError, NotFoundError } from "../errors.js";
import { expectTyped, rejection, testStore } from "../../testing/store.js";
import type { Store } from "./store.js";

const T0 = 1_700_000_000_000;
let store: Store;
beforeEach(async () => {
  store = await testStore();
});
afterEach(() => store.close());

function tpl(id: string, name: string, project = "default", o: Partial<TemplateRecord> = {}): TemplateRecord {
  return {
    id,
    project,
    name,
    version: 1,
    template: create(TemplateSchema, {
      name,
      description: `the ${name} template`,
      images: [{ image: "busybox:1.36", label: "BusyBox" }],
      startup: "sleep {{SECONDS}}",
      variables: [{ env: "SECONDS", defaultValue: "3600", userEditable: true, rule: { kind: VariableKind.INTEGER, min: 1, max: 86400 } }],
      ports: [{ containerPort: 8080 }],
      readyPattern: "^ready$",
    }),
    builtIn: false,
    createdAt: T0,
    updatedAt: T0,
    createdBy: "token:tok_admin",
    ...o,
  };
}

describe("templates in the store", () => {
  it("reads back every field as written, the columns winning over the JSON", async () => {
    const t = tpl("tpl_a", "sleeper", "", { builtIn: true, createdAt: T0 + 1, updatedAt: T0 + 2 });
    await store.commit([{ op: "template.insert", template: t }]);
    const got = (await store.getTemplate("tpl_a"))!;
    expect([got.id, got.project, got.name, got.version, got.builtIn, got.createdAt, got.updatedAt, got.createdBy]).toEqual(["tpl_a", "", "sleeper", 1, true, T0 + 1, T0 + 2, "token:tok_admin"]);
    expect(got.template.id).toBe("tpl_a");
    expect(got.template.version).toBe(1n);
    expect(got.template.builtIn).toBe(true);
    expect(got.template.startup).toBe("sleep {{SECONDS}}");
    expect(got.template.variables[0]!.rule!.max).toBe(86400);
    expect(got.template.images[0]!.label).toBe("BusyBox");
    expect(got.template.readyPattern).toBe("^ready$");
    expect((await store.findTemplateByName("", "sleeper"))?.id).toBe("tpl_a");
    expect(await store.findTemplateByName("default", "sleeper")).toBeUndefined();
    expect(await store.getTemplate("tpl_missing")).toBeUndefined();
  });

  it("keeps names unique per project: the same name in another project or globally is another template", async () => {
    await store.commit([{ op: "template.insert", template: tpl("tpl_a", "web", "default") }]);
    await store.commit([{ op: "template.insert", template: tpl("tpl_b", "web", "games") }]);
    await store.commit([{ op: "template.insert", template: tpl("tpl_c", "web", "") }]);
    const err = await rejection(store.commit([{ op: "template.insert", template: tpl("tpl_d", "web", "games") }]));
    expectTyped(err, AlreadyExistsError, Code.AlreadyExists);
    expect((err as Error).message).toMatch(/"web" already exists in project games/);
    expectTyped(await rejection(store.commit([{ op: "template.insert", template: tpl("tpl_a", "other") }])), AlreadyExistsError, Code.AlreadyExists);
  });

  it("updates only from the version read, and refuses a name taken in the project", async () => {
    await store.commit([{ op: "template.insert", template: tpl("tpl_a", "web") }, { op: "template.insert", template: tpl("tpl_b", "db") }]);
    const cur = (await store.getTemplate("tpl_a"))!;
    const next = { ...cur, version: 2, name: "web2", updatedAt: T0 + 50, template: create(TemplateSchema, { ...cur.template, startup: "sleep 5" }) };
    await store.commit([{ op: "template.update", template: next, expectVersion: 1 }]);
    const got = (await store.getTemplate("tpl_a"))!;
    expect([got.version, got.name, got.updatedAt, got.createdAt, got.template.startup]).toEqual([2, "web2", T0 + 50, T0, "sleep 5"]);

    const stale = await rejection(store.commit([{ op: "template.update", template: { ...next, version: 2 }, expectVersion: 1 }]));
    expectTyped(stale, ConflictError, Code.Aborted);
    expect((stale as Error).message).toMatch(/at version 2, not 1/);
    expectTyped(await rejection(store.commit([{ op: "template.update", template: { ...next, name: "db", version: 3 }, expectVersion: 2 }])), AlreadyExistsError, Code.AlreadyExists);
    expectTyped(await rejection(store.commit([{ op: "template.update", template: { ...next, id: "tpl_x" }, expectVersion: 1 }])), NotFoundError, Code.NotFound);
    expect((await store.getTemplate("tpl_a"))!.version).toBe(2);
  });

  it("deletes, and a missing one is NotFound", async () => {
    await store.commit([{ op: "template.insert", template: tpl("tpl_a", "web") }]);
    await store.commit([{ op: "template.delete", id: "tpl_a" }]);
    expect(await store.getTemplate("tpl_a")).toBeUndefined();
    expectTyped(await rejection(store.commit([{ op: "template.delete", id: "tpl_a" }])), NotFoundError, Code.NotFound);
  });

  it("lists by name then id, filtered by project, paged after a position", async () => {
    await store.commit([
      { op: "template.insert", template: tpl("tpl_c", "b-app", "default") },
      { op: "template.insert", template: tpl("tpl_a", "a-app", "") },
      { op: "template.insert", template: tpl("tpl_b", "b-app", "") },
      { op: "template.insert", template: tpl("tpl_d", "c-app", "games") },
    ]);
    const names = (ts: TemplateRecord[]) => ts.map((t) => `${t.project}/${t.name}/${t.id}`);
    expect(names(await store.listTemplates())).toEqual(["/a-app/tpl_a", "/b-app/tpl_b", "default/b-app/tpl_c", "games/c-app/tpl_d"]);
    expect(names(await store.listTemplates({ projects: ["", "default"] }))).toEqual(["/a-app/tpl_a", "/b-app/tpl_b", "default/b-app/tpl_c"]);
    expect(names(await store.listTemplates({ projects: ["", "default"], limit: 2 }))).toEqual(["/a-app/tpl_a", "/b-app/tpl_b"]);
    expect(names(await store.listTemplates({ projects: ["", "default"], after: { name: "b-app", id: "tpl_b" } }))).toEqual(["default/b-app/tpl_c"]);
    expect(await store.listTemplates({ projects: [] })).toEqual([]);
  });

  it("writes a batch whole or not at all", async () => {
    await store.commit([{ op: "template.insert", template: tpl("tpl_a", "web") }]);
    await rejection(store.commit([{ op: "template.insert", template: tpl("tpl_b", "db") }, { op: "template.delete", id: "tpl_missing" }]));
    expect(await store.getTemplate("tpl_b")).toBeUndefined();
  });
});
