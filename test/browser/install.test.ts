/**
 * Install scripts in the dashboard, in a real browser against a real
 * manager, agent and Docker: a server whose install script fails the first
 * time (exit 3) reads "install failed" in its row and counts as needing
 * attention; the drawer's Install section shows the failure and the log
 * (Show log); Reinstall (after a confirmation) runs the script again, the
 * server reaches Running and the section shows the success and both
 * attempts; a viewer reads the log with no Reinstall; a stopped server is
 * reinstalled and stays stopped, and a refusal (the server started behind
 * the open confirmation) shows the manager's message; a server made from a
 * template with an install shows its install running in the drawer the
 * create opens. axe finds nothing serious in the drawer with the log open;
 * screenshots at desktop and phone width.
 */

import { createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Role } from "@berth/proto/berth/v1/access_pb.js";
import { InstallState, Phase } from "@berth/proto/berth/v1/server_pb.js";
import { TemplateService } from "@berth/proto/berth/v1/template_pb.js";
import { dockerClient, TEST_IMAGE } from "../harness/docker-engine.js";
import { waitForPhase, type ManagerProc } from "../harness/processes.js";
import { type Browser, type Dashboard, row, screenshot, seriousViolations, signIn, startDashboard, stopDashboard, waitForRowPhase } from "./browser.js";
import type { Page } from "playwright-core";
import { testDockerHost } from "../harness/engine.js";

const RUN = Date.now().toString(36).slice(-4);
const SERVER = `inst-${RUN}-jar`;
// Fails the first time only: the second run finds the marker the first one left.
const SCRIPT = "echo fetching server.jar\nif [ -e /mnt/server/marker ]; then echo done; exit 0; fi\ntouch /mnt/server/marker\nexit 3";

describe("dashboard install scripts", () => {
  const docker = dockerClient(testDockerHost());
  let d: Dashboard | undefined;
  let manager: ManagerProc;
  let browser: Browser;
  const created: string[] = [];
  const page = () => browser.page;

  async function openDrawer(p: Page, name: string) {
    await row(p, name).locator(".c-name button").click();
    const drawer = p.getByTestId("server-drawer");
    await drawer.getByRole("heading", { name, exact: true }).waitFor();
    return drawer;
  }

  beforeAll(async () => {
    d = await startDashboard("install-web");
    ({ manager, browser } = d);
    const { server } = await manager.servers.createServer({
      spec: { name: SERVER, image: TEST_IMAGE, command: ["sleep", "3600"], install: { image: TEST_IMAGE, script: SCRIPT, timeoutSeconds: 60 } },
    });
    created.push(server!.id);
    await waitForPhase(manager, server!.id, Phase.FAILED, 60_000);
  });

  afterAll(async () => {
    await stopDashboard(d, docker, created);
  });

  it("a failed install reads 'install failed' in its row and needs attention", async () => {
    const p = page();
    await waitForRowPhase(p, SERVER, "Failed");
    const r = row(p, SERVER);
    expect(await r.getByTestId("phase-badge").textContent()).toBe("Failed");
    expect(await r.getByTestId("phase-badge").getAttribute("class")).toContain("tone-bad");
    const reason = r.getByTestId("phase-reason");
    expect(await reason.textContent()).toBe("install failed");
    expect(await reason.getAttribute("class")).toContain("failed");
    expect(await reason.getAttribute("title")).toMatch(/exited with code 3/);
    expect(await p.getByTestId("servers-summary").textContent()).toMatch(/1 need attention/);
    await p.getByLabel("Filter by phase").selectOption("attention");
    await r.waitFor();
    await p.getByLabel("Filter by phase").selectOption("");
  });

  it("the drawer shows the failure, its log, and Reinstall runs the script again until the server runs", async () => {
    const p = page();
    const drawer = await openDrawer(p, SERVER);
    // The drawer's head says it in words too.
    expect(await drawer.locator(".drawer-status .reason").textContent()).toBe("install failed");
    const section = drawer.getByTestId("server-install");
    const state = section.getByTestId("install-state");
    expect(await state.textContent()).toBe("failed: exit code 3");
    expect(await section.getByTestId("install-attempt").textContent()).toBe("1");
    expect(await section.textContent()).toContain(TEST_IMAGE);
    expect(await section.textContent()).toContain("60 s");

    await section.getByRole("button", { name: "Show log" }).click();
    const log = section.getByTestId("install-log");
    const first = log.locator("article[data-attempt='1']");
    await first.waitFor();
    expect(await first.locator("pre").textContent()).toContain("fetching server.jar");
    expect(await first.textContent()).toContain("exit code 3");
    expect(await seriousViolations(p, "drawer with the install log open")).toEqual([]);
    await screenshot(p, "install-01-failed-log");
    await p.setViewportSize({ width: 390, height: 844 });
    try {
      await section.scrollIntoViewIfNeeded();
      // Nothing of the section sticks out of the phone's width.
      const right = await section.evaluate((el) => Math.max(...[el, ...el.querySelectorAll("*")].map((e) => e.getBoundingClientRect().right)));
      expect(right).toBeLessThanOrEqual(390);
      await screenshot(p, "install-02-failed-phone");
    } finally {
      await p.setViewportSize({ width: 1600, height: 900 });
    }

    await section.getByRole("button", { name: "Reinstall…" }).click();
    const confirm = p.getByRole("dialog", { name: `Reinstall ${SERVER}?` });
    expect(await confirm.textContent()).toContain("/mnt/server");
    await screenshot(p, "install-03-confirm");
    await confirm.getByRole("button", { name: "Reinstall", exact: true }).click();
    await confirm.waitFor({ state: "detached" });
    // The result: a toast (the inline note lasts until attempt 2 has finished, which may be at once).
    await p.locator(".toasts").filter({ hasText: `Reinstall of ${SERVER} requested` }).waitFor();
    // The state moves on (pending, running) and ends in a success; the server runs.
    await section.locator("[data-install-state=succeeded]").waitFor({ timeout: 60_000 });
    await waitForRowPhase(p, SERVER, "Running", 60_000);
    expect(await state.textContent()).toMatch(/^succeeded at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
    expect(await section.getByTestId("install-attempt").textContent()).toBe("2");
    // The open log was read again: both attempts, newest first.
    await log.locator("article[data-attempt='2']").waitFor();
    expect(await log.locator("article").evaluateAll((els) => els.map((e) => e.getAttribute("data-attempt")))).toEqual(["2", "1"]);
    const second = log.locator("article[data-attempt='2']");
    expect(await second.locator("pre").textContent()).toContain("done");
    expect(await second.textContent()).toContain("exit code 0");
    // A succeeded install of a running server is not reinstalled: the button says why.
    expect(await section.getByRole("button", { name: "Reinstall…" }).isDisabled()).toBe(true);
    expect(await section.getByTestId("reinstall-blocked").textContent()).toMatch(/must be stopped \(it is running\)/);
    await screenshot(p, "install-04-succeeded");
    await p.getByRole("button", { name: "Close details" }).click();
  });

  it("a viewer reads the install log, with no Reinstall", async () => {
    const { secret: viewer } = await manager.access.createToken({ name: `inst-viewer-${RUN}`, role: Role.VIEWER, project: "default" });
    const tab = await browser.context.newPage();
    try {
      await signIn(tab, manager.url, viewer);
      const drawer = await openDrawer(tab, SERVER);
      const section = drawer.getByTestId("server-install");
      await section.getByRole("button", { name: "Show log" }).click();
      await section.locator("article[data-attempt='1'] pre").filter({ hasText: "fetching server.jar" }).waitFor();
      expect(await section.locator("article").count()).toBe(2);
      expect(await section.getByRole("button", { name: /Reinstall/ }).count()).toBe(0);
      expect(await seriousViolations(tab, "install section (viewer)")).toEqual([]);
      await screenshot(tab, "install-04b-viewer");
    } finally {
      await tab.close();
    }
  });

  it("a stopped server is reinstalled and stays stopped; the manager's refusal shows as it comes", async () => {
    const p = page();
    await manager.servers.stopServer({ id: SERVER });
    await waitForRowPhase(p, SERVER, "Stopped", 30_000);
    const drawer = await openDrawer(p, SERVER);
    const section = drawer.getByTestId("server-install");
    const button = section.getByRole("button", { name: "Reinstall…" });
    await section.getByTestId("reinstall-blocked").waitFor({ state: "detached" });
    expect(await button.isDisabled()).toBe(false);

    // Started behind the dialog's back: the manager refuses, and the dialog says why.
    await button.click();
    const confirm = p.getByRole("dialog", { name: `Reinstall ${SERVER}?` });
    expect(await confirm.textContent()).toContain("stays stopped until you start it");
    await manager.servers.startServer({ id: SERVER });
    await waitForRowPhase(p, SERVER, "Running", 30_000);
    await confirm.getByRole("button", { name: "Reinstall", exact: true }).click();
    await confirm.getByText(/^FailedPrecondition: .*must be stopped.*StopServer/).waitFor();
    await screenshot(p, "install-05-refused");
    await confirm.getByRole("button", { name: "Cancel" }).click();
    await confirm.waitFor({ state: "detached" });

    await manager.servers.stopServer({ id: SERVER });
    await waitForRowPhase(p, SERVER, "Stopped", 30_000);
    await button.click();
    await confirm.getByRole("button", { name: "Reinstall", exact: true }).click();
    await confirm.waitFor({ state: "detached" });
    await section.getByTestId("install-attempt").filter({ hasText: /^3$/ }).waitFor({ timeout: 60_000 });
    await section.locator("[data-install-state=succeeded]").waitFor({ timeout: 60_000 });
    expect((await manager.servers.getServer({ id: SERVER })).server!.status!.install).toMatchObject({ state: InstallState.SUCCEEDED, attempt: 3 });
    await waitForRowPhase(p, SERVER, "Stopped");
    await p.getByRole("button", { name: "Close details" }).click();
  });

  it("a server made from a template with an install shows its install running in the drawer", async () => {
    const templates = createClient(TemplateService, manager.transport(manager.adminToken));
    const tname = `inst-${RUN}-tpl`;
    await templates.createTemplate({
      template: { project: "default", name: tname, images: [{ image: TEST_IMAGE }], startup: "sleep 3600", install: { image: TEST_IMAGE, script: "echo preparing\nsleep 6\necho ready", timeoutSeconds: 120 } },
    });
    const p = page();
    await p.getByRole("button", { name: "New server" }).click();
    const dialog = p.getByTestId("create-server");
    await dialog.getByLabel("From a template").check();
    const tpl = dialog.locator("select[name=template]");
    await tpl.locator("option", { hasText: tname }).waitFor({ state: "attached" });
    await tpl.selectOption((await tpl.locator("option", { hasText: tname }).getAttribute("value"))!);
    const name = `inst-${RUN}-made`;
    await dialog.locator("input[name=name]").fill(name);
    await dialog.getByRole("button", { name: "Create server" }).click();
    await dialog.waitFor({ state: "detached" });
    const s = (await manager.servers.getServer({ id: name })).server!;
    created.push(s.id);
    // The drawer the create opened shows the install under way, then done.
    const section = p.getByTestId("server-drawer").getByTestId("server-install");
    await section.locator("[data-install-state=running]").waitFor({ timeout: 30_000 });
    expect(await section.getByTestId("install-state").textContent()).toMatch(/^running for \d+ s$/);
    await screenshot(p, "install-06-template-running");
    await section.locator("[data-install-state=succeeded]").waitFor({ timeout: 60_000 });
    await waitForRowPhase(p, name, "Running", 60_000);
    expect((await manager.servers.getServer({ id: name })).server!.status!.install!.state).toBe(InstallState.SUCCEEDED);
  });
});
