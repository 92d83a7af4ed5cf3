/**
 * Templates in the dashboard, in a real browser against a real manager,
 * agent and Docker: the Templates page imports an egg file and shows what of
 * it was not taken over; New server → From a template makes a server from the
 * built-in `sleeper` with a variable filled in, which reaches Running and
 * shows its template in the drawer; a bad value is refused on its field, by
 * the page's own check and by the manager (a fixed variable whose default
 * breaks its rule: only the manager sees it).
 */
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { TemplateService, VariableKind } from "@berth/proto/berth/v1/template_pb.js";
import { dockerClient, removeBerthContainers, TEST_IMAGE } from "../harness/docker-engine.js";
import { startAgent, startManager, tempDir, waitFor, waitForHostOnline, type ManagerProc, type Proc } from "../harness/processes.js";
import { ensureWebBuilt, launchBrowser, screenshot, signIn, waitForRowPhase, type Browser } from "./browser.js";

const RUN = Date.now().toString(36).slice(-4);
const name = (s: string) => `tpl-${RUN}-${s}`;
const EGG = join(import.meta.dirname, "..", "fixtures", "eggs", "generic.ptdl_v1.json");

describe("dashboard templates", () => {
  const docker = dockerClient(inject("dockerHost"));
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc;
  let browser: Browser;
  const created: string[] = [];
  const page = () => browser.page;

  beforeAll(async () => {
    await ensureWebBuilt();
    dir = await tempDir("templates");
    manager = await startManager({ dir });
    agent = await startAgent({ manager, dir });
    await waitForHostOnline(manager);
    browser = await launchBrowser();
    browser.page.on("pageerror", (e) => console.error(`[page error] ${e.message}`));
    await signIn(page(), manager.url, manager.adminToken);
  });

  afterAll(async () => {
    await browser?.close();
    await agent?.stop();
    await manager?.stop();
    await removeBerthContainers(docker, { managerId: manager?.managerId, serverIds: created });
    if (dir) await rm(dir, { recursive: true, force: true });
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
});
