/**
 * Templates in the dashboard, in a real browser against a real manager,
 * agent and Docker: the Templates page imports an egg file and shows what of
 * it was not taken over; New server → From a template makes a server from the
 * built-in `sleeper` with a variable filled in, which reaches Running and
 * shows its template in the drawer; a bad value is refused on its field, by
 * the page's own check and by the manager (a fixed variable whose default
 * breaks its rule: only the manager sees it). The editor makes a template
 * (a bad regex refused on its field by the manager, a Preview of the saved
 * one), a server is made from it, the template is edited, and the server's
 * Overview offers the new version: Apply renders its spec again, Rebuild now
 * makes the container run it; its variables are changed from the drawer.
 * axe finds nothing serious on the page, the editor and the drawer's
 * template section.
 */

import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TemplateService, VariableKind } from "@berth/proto/berth/v1/template_pb.js";
import { dockerClient, TEST_IMAGE } from "../harness/docker-engine.js";
import { waitFor, type ManagerProc } from "../harness/processes.js";
import { type Browser, type Dashboard, row, screenshot, seriousViolations, startDashboard, stopDashboard, waitForRowPhase } from "./browser.js";
import { testDockerHost } from "../harness/engine.js";

const RUN = Date.now().toString(36).slice(-4);
const name = (s: string) => `tpl-${RUN}-${s}`;
const EGG = join(import.meta.dirname, "..", "fixtures", "eggs", "generic.ptdl_v1.json");

describe("dashboard templates", () => {
  const docker = dockerClient(testDockerHost());
  let d: Dashboard | undefined;
  let manager: ManagerProc;
  let browser: Browser;
  const created: string[] = [];
  const page = () => browser.page;

  beforeAll(async () => {
    d = await startDashboard("templates");
    ({ manager, browser } = d);
  });

  afterAll(async () => {
    await stopDashboard(d, docker, created);
  });

  it("lists the built-ins and imports an egg file, showing its unmapped fields", async () => {
    const p = page();
    await p.getByRole("navigation", { name: "Pages" }).getByRole("link", { name: "Templates" }).click();
    const table = p.getByRole("table", { name: "Templates" });
    const sleeper = table.locator('tr[data-template-name="sleeper"]');
    await sleeper.waitFor();
    expect(await sleeper.textContent()).toContain("built-in");
    expect(await sleeper.textContent()).toContain("global");
    // A built-in cannot be deleted.
    expect(await sleeper.getByRole("button", { name: "Delete" }).count()).toBe(0);

    await p.locator("input[type=file][name=egg]").setInputFiles(EGG);
    const result = p.getByTestId("import-result");
    await result.waitFor();
    expect(await result.getByRole("heading").textContent()).toContain("Generic bot");
    const unmapped = result.getByRole("region", { name: "Not imported" });
    expect(await unmapped.locator("tr[data-unmapped-field]").evaluateAll((rows) => rows.map((r) => r.getAttribute("data-unmapped-field")))).toEqual(["author"]);
    await table.locator('tr[data-template-name="Generic bot"]').waitFor();
    await screenshot(p, "templates-01-import");

    // Viewing it shows its variables and rules.
    await result.getByRole("button", { name: "View template" }).click();
    const view = p.getByTestId("template-view");
    expect(await view.getByRole("table", { name: "Variables" }).textContent()).toContain("WORKERS");
    expect(await view.textContent()).toContain("ghcr.io/example/python:3.12");
    await p.keyboard.press("Escape");
    await view.waitFor({ state: "detached" });

    // And it can be deleted, after a confirmation.
    await table.locator('tr[data-template-name="Generic bot"]').getByRole("button", { name: "Delete" }).click();
    await p.getByRole("dialog", { name: "Delete template Generic bot?" }).getByRole("button", { name: "Delete template" }).click();
    await table.locator('tr[data-template-name="Generic bot"]').waitFor({ state: "detached" });
  });

  it("creates a server from the sleeper template with a variable, refusing a bad value on its field first", async () => {
    const p = page();
    await p.getByRole("navigation", { name: "Pages" }).getByRole("link", { name: "Servers" }).click();
    await p.getByRole("button", { name: "New server" }).click();
    const dialog = p.getByTestId("create-server");
    await dialog.getByLabel("From a template").check();
    const tpl = dialog.locator("select[name=template]");
    await tpl.locator("option", { hasText: "sleeper" }).waitFor({ state: "attached" });
    await tpl.selectOption({ label: "sleeper (global, built-in)" });
    expect(await dialog.getByTestId("template-description").textContent()).toContain("sleeps");
    await dialog.locator("select[name=templateImage]").selectOption(TEST_IMAGE);
    await dialog.locator("input[name=name]").fill(name("nap"));
    const seconds = dialog.locator("input[data-variable=SECONDS]");
    expect(await seconds.getAttribute("type")).toBe("number");
    expect(await seconds.inputValue()).toBe("86400");

    const creates: string[] = [];
    const onRequest = (r: { url(): string }) => void (r.url().includes("/CreateServer") && creates.push(r.url()));
    p.on("request", onRequest);
    await seconds.fill("0");
    await dialog.getByRole("button", { name: "Create server" }).click();
    expect(await seconds.getAttribute("aria-invalid")).toBe("true");
    const describedBy = (await seconds.getAttribute("aria-describedby"))!;
    expect(await dialog.locator(`[id="${describedBy}"]`).textContent()).toContain("must be at least 1");
    p.off("request", onRequest);
    expect(creates).toEqual([]);
    await screenshot(p, "templates-02-bad-variable");

    await seconds.fill("5000");
    expect(await seconds.getAttribute("aria-invalid")).toBeNull();
    await dialog.getByRole("button", { name: "Create server" }).click();
    await dialog.waitFor({ state: "detached" });
    const s = (await manager.servers.getServer({ id: name("nap") })).server!;
    created.push(s.id);
    expect(s.spec!.template!.variables).toEqual({ SECONDS: "5000" });
    expect(s.spec!.image).toBe(TEST_IMAGE);
    expect(s.spec!.command).toEqual(["sleep", "5000"]);
    await waitForRowPhase(p, name("nap"), "Running");
    // The drawer (opened by the create) names the template and its version.
    const line = p.getByTestId("server-template");
    await line.filter({ hasText: "sleeper" }).waitFor();
    expect(await line.textContent()).toContain("version 1");
    // Its spec list says when it counts as ready and how it is stopped (the sleeper template sets neither).
    expect(await p.getByTestId("server-ready-pattern").textContent()).toBe("the container runs");
    await p.getByRole("button", { name: "Close details" }).click();
  });

  it("shows the manager's refusal of a variable on that variable's field", async () => {
    // A fixed variable whose default breaks its own rule: the page does not check
    // what the operator cannot change, the manager refuses it, naming the variable.
    const templates = createClient(TemplateService, manager.transport(manager.adminToken));
    await templates.createTemplate({
      template: {
        project: "default",
        name: name("fixed"),
        images: [{ image: TEST_IMAGE }],
        startup: "sleep 1000",
        variables: [{ env: "MODE", name: "Mode", defaultValue: "BAD1", userEditable: false, rule: { kind: VariableKind.STRING, regex: "^[a-z]+$" } }],
      },
    });
    const p = page();
    await p.getByRole("button", { name: "New server" }).click();
    const dialog = p.getByTestId("create-server");
    await dialog.getByLabel("From a template").check();
    const tpl = dialog.locator("select[name=template]");
    await tpl.locator("option", { hasText: name("fixed") }).waitFor({ state: "attached" });
    await tpl.selectOption({ label: `${name("fixed")} (project default)` });
    await dialog.locator("input[name=name]").fill(name("bad"));
    const mode = dialog.locator("input[data-variable=MODE]");
    expect(await mode.getAttribute("readonly")).not.toBeNull();
    await dialog.getByRole("button", { name: "Create server" }).click();
    await waitFor("the manager's refusal on the field", async () => ((await mode.getAttribute("aria-invalid")) === "true" ? true : undefined));
    const describedBy = (await mode.getAttribute("aria-describedby"))!;
    expect(await dialog.locator(`[id="${describedBy}"]`).textContent()).toMatch(/default does not fit/);
    await screenshot(p, "templates-03-manager-refusal");
    await dialog.getByRole("button", { name: "Cancel" }).click();
    expect((await manager.servers.listServers({})).servers.map((s) => s.spec?.name)).not.toContain(name("bad"));
  });

  it("creates a template in the editor: the manager's refusal of a bad regex lands on its field; Preview renders the form as it is, saved or not", async () => {
    const p = page();
    await p.getByRole("navigation", { name: "Pages" }).getByRole("link", { name: "Templates" }).click();
    await p.getByRole("table", { name: "Templates" }).locator('tr[data-template-name="sleeper"]').waitFor();
    expect(await seriousViolations(p, "templates page")).toEqual([]);
    await p.getByRole("button", { name: "New template" }).click();
    const editor = p.getByTestId("template-editor");
    await editor.locator("input[name=name]").fill(name("napper"));
    await editor.locator("input[name=project]").fill("default");
    await editor.locator('input[name="images[0].image"]').fill(TEST_IMAGE);
    await editor.locator("textarea[name=startup]").fill("sleep {{NAP}}");
    await editor.getByRole("button", { name: "Add variable" }).click();
    await editor.locator('input[name="variables[0].env"]').fill("NAP");
    await editor.locator('input[name="variables[0].name"]').fill("Nap seconds");
    await editor.locator('input[name="variables[0].default_value"]').fill("3600");
    const regex = editor.locator('input[name="variables[0].rule.regex"]');
    await regex.fill("^([0-9]+$");
    expect(await seriousViolations(p, "template editor")).toEqual([]);

    // The page does not check the pattern; the manager does, naming template.variables[0].rule.regex.
    await editor.getByRole("button", { name: "Create template" }).click();
    await waitFor("the manager's refusal on the regex field", async () => ((await regex.getAttribute("aria-invalid")) === "true" ? true : undefined));
    expect(await editor.locator(`[id="${await regex.getAttribute("aria-describedby")}"]`).textContent()).toMatch(/not a valid JavaScript regular expression/);
    await screenshot(p, "templates-04-editor-bad-regex");
    await regex.fill("^[0-9]{1,6}$");
    expect(await regex.getAttribute("aria-invalid")).toBeNull();
    await editor.getByRole("button", { name: "Create template" }).click();
    await editor.getByRole("status").filter({ hasText: "version 1" }).waitFor();
    const templates = createClient(TemplateService, manager.transport(manager.adminToken));
    const made = (await templates.listTemplates({})).templates.find((t) => t.name === name("napper"))!;
    expect(made.project).toBe("default");
    expect(made.startup).toBe("sleep {{NAP}}");
    expect(made.variables.map((v) => [v.env, v.defaultValue, v.rule?.regex, v.userEditable])).toEqual([["NAP", "3600", "^[0-9]{1,6}$", true]]);

    // Preview: the template rendered with example values.
    const preview = editor.getByTestId("template-preview");
    await preview.locator("input[data-variable=NAP]").fill("42");
    await preview.getByRole("button", { name: "Preview" }).click();
    await preview.getByTestId("preview-command").filter({ hasText: "sleep 42" }).waitFor();
    expect(await preview.getByTestId("preview-result").textContent()).toContain("NAP=42");
    expect(await seriousViolations(p, "template editor with preview")).toEqual([]);
    await screenshot(p, "templates-05-editor-preview");
    // An unsaved change is what Preview renders (a draft); nothing is stored.
    await editor.locator("textarea[name=startup]").fill("nice sleep {{NAP}}");
    await preview.getByRole("button", { name: "Preview" }).click();
    await preview.getByTestId("preview-command").filter({ hasText: "nice sleep 42" }).waitFor();
    expect((await templates.getTemplate({ id: made.id })).template!.startup).toBe("sleep {{NAP}}");
    await editor.locator("textarea[name=startup]").fill("sleep {{NAP}}");
    await editor.getByRole("button", { name: "Close", exact: true }).click();
    await editor.waitFor({ state: "detached" });
    await p.getByRole("table", { name: "Templates" }).locator(`tr[data-template-name="${name("napper")}"]`).waitFor();
  });

  it("offers a newer template version in the server's Overview: Apply renders the spec again, Rebuild now runs it; variables change from the drawer", async () => {
    const p = page();
    // A server from the new template, with its defaults.
    await p.getByRole("navigation", { name: "Pages" }).getByRole("link", { name: "Servers" }).click();
    await p.getByRole("button", { name: "New server" }).click();
    const dialog = p.getByTestId("create-server");
    await dialog.getByLabel("From a template").check();
    const tpl = dialog.locator("select[name=template]");
    await tpl.locator("option", { hasText: name("napper") }).waitFor({ state: "attached" });
    await tpl.selectOption({ label: `${name("napper")} (project default)` });
    await dialog.locator("input[name=name]").fill(name("nap2"));
    await dialog.getByRole("button", { name: "Create server" }).click();
    await dialog.waitFor({ state: "detached" });
    const first = (await manager.servers.getServer({ id: name("nap2") })).server!;
    created.push(first.id);
    expect(first.spec!.command).toEqual(["sleep", "3600"]);
    await waitForRowPhase(p, name("nap2"), "Running");
    await p.getByRole("button", { name: "Close details" }).click();

    // Edit the template: a new default and another startup. Someone else saves it
    // meanwhile (version 2): the save is refused as a conflict, and Reload loads theirs.
    await p.getByRole("navigation", { name: "Pages" }).getByRole("link", { name: "Templates" }).click();
    await p.getByRole("table", { name: "Templates" }).locator(`tr[data-template-name="${name("napper")}"]`).getByRole("button", { name: "Edit" }).click();
    const editor = p.getByTestId("template-editor");
    const templates = createClient(TemplateService, manager.transport(manager.adminToken));
    const v1 = (await templates.listTemplates({})).templates.find((t) => t.name === name("napper"))!;
    await templates.updateTemplate({ id: v1.id, template: { ...v1, project: "", description: "changed elsewhere" }, expectedVersion: 1n });
    const edits = async () => {
      await editor.locator('input[name="variables[0].default_value"]').fill("7200");
      await editor.locator("textarea[name=startup]").fill('sh -c "exec sleep {{NAP}}"');
      await editor.getByRole("button", { name: "Save" }).click();
    };
    await edits();
    const conflict = editor.getByTestId("template-conflict");
    await conflict.waitFor();
    expect(await conflict.textContent()).toContain("not 1");
    await conflict.getByRole("button", { name: /Reload/ }).click();
    await conflict.waitFor({ state: "detached" });
    expect(await editor.locator("textarea[name=description]").inputValue()).toBe("changed elsewhere");
    expect(await editor.locator('input[name="variables[0].default_value"]').inputValue()).toBe("3600");
    await edits();
    await editor.getByRole("status").filter({ hasText: "version 3" }).waitFor();
    await editor.getByRole("button", { name: "Close", exact: true }).click();

    // The server's Overview says so, and applies it.
    await p.getByRole("navigation", { name: "Pages" }).getByRole("link", { name: "Servers" }).click();
    await row(p, name("nap2")).locator(".c-name button").click();
    const drawer = p.getByTestId("server-drawer");
    const outdated = drawer.getByTestId("template-outdated");
    await outdated.filter({ hasText: `Template ${name("napper")} v3 is available (server on v1)` }).waitFor();
    expect(await seriousViolations(p, "drawer template section (outdated)")).toEqual([]);
    await screenshot(p, "templates-06-drawer-outdated");
    await outdated.getByRole("button", { name: "Apply v3" }).click();
    await drawer.getByTestId("template-result").waitFor();
    const applied = (await manager.servers.getServer({ id: first.id })).server!;
    expect(applied.spec!.template!.version).toBe(3n);
    expect(applied.spec!.command).toEqual(["sh", "-c", "exec sleep 7200"]);
    expect(applied.spec!.env.NAP).toBe("7200");
    // Not outdated any more; the container still runs version 1's spec until a rebuild.
    await outdated.waitFor({ state: "detached" });
    expect(await drawer.getByTestId("server-template").textContent()).toContain("version 3");
    const before = applied.status!.containerId;
    expect((await docker.getContainer(before).inspect()).Config.Cmd).toEqual(["sleep", "3600"]);
    const pendingBox = drawer.getByTestId("template-pending");
    await pendingBox.waitFor({ timeout: 30_000 });
    expect(await seriousViolations(p, "drawer template section (pending restart)")).toEqual([]);
    await screenshot(p, "templates-07-drawer-applied");
    await pendingBox.getByRole("button", { name: "Rebuild now" }).click();
    await p.getByRole("dialog", { name: `Rebuild ${name("nap2")}?` }).getByRole("button", { name: "Rebuild" }).click();
    const rebuilt = await waitFor("the rebuilt container", async () => {
      const s = (await manager.servers.getServer({ id: first.id })).server!;
      return s.status?.containerId && s.status.containerId !== before && s.status.containerState === "running" ? s.status.containerId : undefined;
    }, 60_000);
    const info = await docker.getContainer(rebuilt).inspect();
    expect(info.Config.Cmd).toEqual(["sh", "-c", "exec sleep 7200"]);
    expect(info.Config.Env).toContain("NAP=7200");
    await pendingBox.waitFor({ state: "detached", timeout: 30_000 });

    // Change a variable from the drawer: the page's own check first, then UpdateServer.
    await drawer.getByRole("button", { name: "Edit variables" }).click();
    const form = drawer.getByTestId("server-variables");
    const nap = form.locator("input[data-variable=NAP]");
    expect(await nap.inputValue()).toBe("7200");
    await nap.fill("1234567");
    await form.getByRole("button", { name: "Save variables" }).click();
    expect(await nap.getAttribute("aria-invalid")).toBe("true");
    expect(await form.locator(`[id="${await nap.getAttribute("aria-describedby")}"]`).textContent()).toContain("must match");
    expect(await seriousViolations(p, "drawer variables form")).toEqual([]);
    await screenshot(p, "templates-08-drawer-variables");
    await nap.fill("900");
    await form.getByRole("button", { name: "Save variables" }).click();
    await form.waitFor({ state: "detached" });
    const changed = (await manager.servers.getServer({ id: first.id })).server!;
    expect(changed.spec!.template!.variables).toEqual({ NAP: "900" });
    expect(changed.spec!.command).toEqual(["sh", "-c", "exec sleep 900"]);

    // Narrow screens: the drawer's template section and the editor.
    await p.setViewportSize({ width: 390, height: 844 });
    await screenshot(p, "templates-09-drawer-390");
    await p.setViewportSize({ width: 1600, height: 900 });
    await p.getByRole("button", { name: "Close details" }).click();
    await p.getByRole("navigation", { name: "Pages" }).getByRole("link", { name: "Templates" }).click();
    await p.setViewportSize({ width: 390, height: 844 });
    await p.getByRole("table", { name: "Templates" }).locator(`tr[data-template-name="${name("napper")}"]`).getByRole("button", { name: "Edit" }).click();
    await screenshot(p, "templates-10-editor-390");
    await p.getByTestId("template-editor").getByRole("button", { name: "Close", exact: true }).click();
    await p.setViewportSize({ width: 1600, height: 900 });
  });
});
