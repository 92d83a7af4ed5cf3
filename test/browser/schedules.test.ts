/**
 * The drawer's Schedules tab, in a real browser against a real manager,
 * agent and Docker (docs/schedules.md, "Dashboard"): an operator creates a
 * schedule with the cron preview (PreviewCron's words and next five times in
 * the schedule's zone) and an ordered task list, sees it listed with its next
 * run, runs it now and watches the run's task outcomes arrive while the
 * container restarts; a bad cron shows the manager's message on the field; a
 * save on a stale version offers a reload; on a phone the tab and the editor
 * fit the screen; a viewer reads everything with no control that changes
 * anything; delete asks first. axe finds no serious violation on the tab or
 * the editor.
 */

import { createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Role } from "@berth/proto/berth/v1/access_pb.js";
import { PowerAction, ScheduleService } from "@berth/proto/berth/v1/schedule_pb.js";
import { Phase, type ServerSpec } from "@berth/proto/berth/v1/server_pb.js";
import { dockerClient, TEST_IMAGE } from "../harness/docker-engine.js";
import { waitFor, waitForPhase, type ManagerProc } from "../harness/processes.js";
import { type Browser, type Dashboard, row, screenshot, seriousViolations, signIn, startDashboard, stopDashboard, waitForRowPhase } from "./browser.js";
import type { Page } from "playwright-core";
import { testDockerHost } from "../harness/engine.js";

const RUN = Date.now().toString(36).slice(-4);
const SERVER = `sched-${RUN}`;
const ECHO = ["sh", "-c", 'echo "ready $$"; while read l; do echo "got $l"; done'];

describe("dashboard schedules", () => {
  const docker = dockerClient(testDockerHost());
  let d: Dashboard | undefined;
  let manager: ManagerProc;
  let browser: Browser;
  let serverId: string;
  const page = () => browser.page;

  beforeAll(async () => {
    d = await startDashboard("web-schedules");
    ({ manager, browser } = d);
    const { server } = await manager.servers.createServer({ spec: { name: SERVER, image: TEST_IMAGE, command: ECHO, console: true } as ServerSpec });
    serverId = server!.id;
    await waitForPhase(manager, serverId, Phase.RUNNING, 60_000);
  });

  afterAll(async () => {
    await stopDashboard(d, docker, serverId ? [serverId] : []);
  });

  async function openTab(p: Page) {
    await waitForRowPhase(p, SERVER, "Running");
    await row(p, SERVER).locator(".c-image").click();
    const drawer = p.getByTestId("server-drawer");
    await drawer.getByRole("tab", { name: "Schedules" }).click();
    return drawer;
  }

  async function startedAt(): Promise<string> {
    const info = (await docker.listContainers({ all: true, filters: { label: [`berth.server=${serverId}`] } }))[0]!;
    return (await docker.getContainer(info.Id).inspect()).State.StartedAt;
  }

  it("creates a schedule with a live cron preview and an ordered task list; it is listed with its next run", async () => {
    const p = page();
    const drawer = await openTab(p);
    await drawer.getByText("No schedules on this server yet.").waitFor();
    expect(await seriousViolations(p, "schedules tab (empty)")).toEqual([]);

    await drawer.getByRole("button", { name: "New schedule…" }).click();
    const editor = p.getByTestId("schedule-editor");
    await editor.locator("input[name=name]").fill("daily-restart");
    await editor.locator("input[name=cron]").fill("0 4 * * *");
    await editor.locator("input[name=timeZone]").fill("Europe/Berlin");
    await editor.locator("input[name=task-0-command]").fill("say restarting in 1 minute");
    // Added in the wrong order, then moved: restart, then the wait before it.
    await editor.getByRole("button", { name: "+ Power action" }).click();
    expect(await editor.locator("select[name=task-1-action]").inputValue()).toBe(String(PowerAction.RESTART));
    await editor.getByRole("button", { name: "+ Wait" }).click();
    await editor.locator("input[name=task-2-seconds]").fill("1");
    await editor.getByRole("button", { name: "Move task 3 up" }).click();
    expect(await editor.locator("input[name=task-1-seconds]").inputValue()).toBe("1");
    expect(await editor.locator("select[name=task-2-action]").count()).toBe(1);
    expect(await editor.getByRole("button", { name: "Move task 1 up" }).isDisabled()).toBe(true);
    expect(await editor.getByRole("button", { name: "Move task 3 down" }).isDisabled()).toBe(true);

    // The preview: PreviewCron's words and the next five times, read in Berlin.
    const description = editor.getByTestId("cron-description");
    await description.filter({ hasText: "At 04:00 every day" }).waitFor();
    expect(await description.textContent()).toContain("Europe/Berlin");
    const times = await editor.getByRole("list", { name: "Next run times" }).locator("li").allTextContents();
    expect(times).toHaveLength(5);
    for (const t of times) expect(t).toMatch(/04:00 (CET|CEST|GMT\+1|GMT\+2)/);
    expect(await seriousViolations(p, "schedule editor")).toEqual([]);
    await screenshot(p, "schedules-01-editor");

    await editor.getByRole("button", { name: "Create schedule" }).click();
    await editor.waitFor({ state: "detached" });
    const item = drawer.locator('li.schedule[data-schedule-name="daily-restart"]');
    await item.getByTestId("schedule-description").filter({ hasText: "At 04:00 every day" }).waitFor();
    expect(await item.textContent()).toContain("0 4 * * *");
    expect(await item.textContent()).toContain("(Europe/Berlin)");
    expect(await item.getByTestId("schedule-next-run").textContent()).toMatch(/04:00/);
    expect(await item.getByTestId("schedule-last-run").textContent()).toBe("never");
    expect(await item.locator(".schedule-tasks li").allTextContents()).toEqual(["console: say restarting in 1 minute", "wait 1 s", "restart"]);

    // What the manager stored is what the form said, in that order.
    const schedules = createClient(ScheduleService, manager.transport(manager.adminToken));
    const { schedule } = await schedules.getSchedule({ id: "daily-restart" });
    expect(schedule!.spec!.target!.kind).toEqual({ case: "serverId", value: serverId });
    expect(schedule!.spec!.timeZone).toBe("Europe/Berlin");
    expect(schedule!.spec!.tasks.map((t) => t.kind.case)).toEqual(["consoleCommand", "wait", "power"]);
    expect(await seriousViolations(p, "schedules tab")).toEqual([]);
    await screenshot(p, "schedules-02-listed");
  });

  it("Run now: the run shows in the history with each task's outcome, and the container restarted", async () => {
    const p = page();
    const drawer = p.getByTestId("server-drawer");
    const item = drawer.locator('li.schedule[data-schedule-name="daily-restart"]');
    const before = await startedAt();
    await item.getByRole("button", { name: "Run now" }).click();
    const history = item.getByRole("region", { name: "Runs of daily-restart" });
    const run = history.locator("li.run").first();
    await run.waitFor();
    // Polled while running, until it is done.
    await history.locator('li.run[data-run-outcome="Succeeded"]').waitFor({ timeout: 60_000 });
    const tasks = await run.locator(".run-tasks li").evaluateAll((lis) => lis.map((li) => [li.getAttribute("data-task-outcome"), li.textContent]));
    expect(tasks.map(([o]) => o)).toEqual(["succeeded", "succeeded", "succeeded"]);
    expect(tasks.map(([, text]) => text)).toEqual([expect.stringContaining("1. console: say restarting in 1 minute"), expect.stringContaining("2. wait 1 s"), expect.stringContaining("3. restart")]);
    expect(await run.textContent()).toContain("run now by");
    await item.getByTestId("schedule-last-run").filter({ hasText: "Succeeded" }).waitFor({ timeout: 10_000 });
    await waitFor("the container to restart", async () => (await startedAt()) !== before, 60_000);
    await screenshot(p, "schedules-03-run");
  });

  it("a bad cron shows the manager's message on the field; a stale save offers a reload", async () => {
    const p = page();
    const drawer = p.getByTestId("server-drawer");
    const item = drawer.locator('li.schedule[data-schedule-name="daily-restart"]');
    await item.getByRole("button", { name: "Edit…" }).click();
    const editor = p.getByTestId("schedule-editor");
    const cron = editor.locator("input[name=cron]");
    expect(await cron.inputValue()).toBe("0 4 * * *");
    await cron.fill("0 24 * * *");
    // PreviewCron's InvalidArgument, on the field, while typing.
    await waitFor("the preview's refusal on the field", async () => ((await cron.getAttribute("aria-invalid")) === "true" ? true : undefined));
    const describedBy = (await cron.getAttribute("aria-describedby"))!;
    expect(await editor.locator(`[id="${describedBy}"]`).textContent()).toContain('hour field "24": 24 is out of range');
    // Saving anyway: the manager refuses it, on the same field.
    await editor.getByRole("button", { name: "Save schedule" }).click();
    await editor.locator(".problem-summary").filter({ hasText: "Cron expression" }).waitFor();
    expect(await cron.getAttribute("aria-invalid")).toBe("true");
    expect(await seriousViolations(p, "schedule editor with a bad cron")).toEqual([]);
    await screenshot(p, "schedules-04-bad-cron");

    // Someone else changes the schedule meanwhile: the save is refused (Aborted) with a reload offer.
    const schedules = createClient(ScheduleService, manager.transport(manager.adminToken));
    const cur = (await schedules.getSchedule({ id: "daily-restart" })).schedule!;
    await schedules.updateSchedule({ id: cur.id, spec: { ...cur.spec!, cron: "30 5 * * *" } });
    await cron.fill("0 3 * * *");
    await editor.getByRole("button", { name: "Save schedule" }).click();
    const conflict = editor.getByTestId("schedule-conflict");
    await conflict.waitFor();
    expect(await conflict.textContent()).toContain("read it again and retry");
    await conflict.getByRole("button", { name: /Reload/ }).click();
    await conflict.waitFor({ state: "detached" });
    expect(await cron.inputValue()).toBe("30 5 * * *");
    await editor.getByRole("button", { name: "Cancel" }).click();
    await editor.waitFor({ state: "detached" });
    await item.getByTestId("schedule-description").filter({ hasText: "At 05:30 every day" }).waitFor();
  });

  it("on a phone the tab and the editor fit the screen", async () => {
    const p = page();
    const drawer = p.getByTestId("server-drawer");
    const overflow = async () => (await p.evaluate(`(() => { const d = document.querySelector(".drawer"); const m = document.querySelector(".modal-body"); return [document.documentElement.scrollWidth, d.scrollWidth - d.clientWidth, m ? m.scrollWidth - m.clientWidth : 0]; })()`)) as [number, number, number];
    await p.setViewportSize({ width: 390, height: 844 });
    try {
      const item = drawer.locator('li.schedule[data-schedule-name="daily-restart"]');
      await item.waitFor();
      const quiet = await p.addStyleTag({ content: ".toast { visibility: hidden; }" });
      const [doc, inDrawer] = await overflow();
      expect(doc).toBeLessThanOrEqual(390);
      expect(inDrawer).toBeLessThanOrEqual(0);
      await screenshot(p, "schedules-05-phone-tab");
      await item.getByRole("button", { name: "Edit…" }).click();
      const editor = p.getByTestId("schedule-editor");
      await editor.locator("input[name=task-0-command]").waitFor();
      const [page2, , inModal] = await overflow();
      expect(page2).toBeLessThanOrEqual(390);
      expect(inModal).toBeLessThanOrEqual(0);
      await screenshot(p, "schedules-06-phone-editor");
      await editor.getByRole("button", { name: "Cancel" }).click();
      await quiet.evaluate((el) => el.remove());
    } finally {
      await p.setViewportSize({ width: 1600, height: 900 });
    }
  });

  it("a viewer reads the schedules and their runs, with no control that changes them", async () => {
    const { secret: viewer } = await manager.access.createToken({ name: `sched-viewer-${RUN}`, role: Role.VIEWER, project: "default" });
    const tab = await browser.context.newPage();
    try {
      await signIn(tab, manager.url, viewer);
      const drawer = await openTab(tab);
      const item = drawer.locator('li.schedule[data-schedule-name="daily-restart"]');
      await item.getByTestId("schedule-description").filter({ hasText: "At 05:30 every day" }).waitFor();
      expect(await item.getByTestId("schedule-last-run").textContent()).toContain("Succeeded");
      for (const label of ["New schedule…", "Run now", "Edit…", "Delete…"]) expect(await drawer.getByRole("button", { name: label }).count()).toBe(0);
      await item.getByRole("button", { name: "History" }).click();
      await item.locator('li.run[data-run-outcome="Succeeded"]').waitFor();
      expect(await seriousViolations(tab, "schedules tab (viewer)")).toEqual([]);
      await screenshot(tab, "schedules-07-viewer");
    } finally {
      await tab.close();
    }
  });

  it("delete asks first, then the schedule is gone", async () => {
    const p = page();
    const drawer = p.getByTestId("server-drawer");
    const item = drawer.locator('li.schedule[data-schedule-name="daily-restart"]');
    await item.getByRole("button", { name: "Delete…" }).click();
    const confirm = p.getByRole("dialog", { name: "Delete schedule daily-restart?" });
    await confirm.getByRole("button", { name: "Cancel" }).click();
    await confirm.waitFor({ state: "detached" });
    await item.waitFor();
    await item.getByRole("button", { name: "Delete…" }).click();
    await confirm.getByRole("button", { name: "Delete schedule" }).click();
    await item.waitFor({ state: "detached" });
    await drawer.getByText("No schedules on this server yet.").waitFor();
    const schedules = createClient(ScheduleService, manager.transport(manager.adminToken));
    expect((await schedules.listSchedules({})).schedules).toEqual([]);
  });
});
