/**
 * The Explore page in a real browser against a real manager, agent and
 * Docker: a servers table with a CEL filter (and a refused filter's message
 * under the input, the suggestions driven by the keyboard); an events chart
 * grouped by type whose counts are the stops and starts the test caused (and
 * what ListEvents says); Copy link's URL restores the view; a query saved
 * (the manager's refusal of a bad name on the Name field), reopened from the
 * list, updated, refused when changed since it was opened (ABORTED → reload),
 * pinned and shown as a panel on /servers, deleted; 390 px; axe.
 */

import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "@connectrpc/connect";
import { Role } from "@berth/proto/berth/v1/access_pb.js";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { SavedQueryService } from "@berth/proto/berth/v1/query_pb.js";
import { DesiredState, Phase, RestartPolicy, ServerService } from "@berth/proto/berth/v1/server_pb.js";
import { dockerClient, TEST_IMAGE } from "../harness/docker-engine.js";
import { waitFor, type ManagerProc } from "../harness/processes.js";
import { type Browser, type Dashboard, screenshot, seriousViolations, signIn, startDashboard, stopDashboard, waitForExpression } from "./browser.js";
import { testDockerHost } from "../harness/engine.js";

const RUN = Date.now().toString(36).slice(-4);
const name = (s: string) => `exp-${RUN}-${s}`;
const PROD = 'server.spec.labels["tier"] == "prod"';

describe("dashboard Explore page", () => {
  const docker = dockerClient(testDockerHost());
  let d: Dashboard | undefined;
  let manager: ManagerProc;
  let browser: Browser;
  const created: string[] = [];
  let busyId = "";
  const page = () => browser.page;
  const tableRow = (table: string, server: string) => page().getByRole("table", { name: table }).locator(`tr[data-server-name="${server}"]`);
  const celInput = () => page().getByRole("search", { name: "CEL filter" }).getByRole("combobox", { name: "CEL" });
  const chartTotals = async () =>
    Object.fromEntries(
      await page()
        .getByTestId("chart-table")
        .locator("tbody tr")
        .evaluateAll((rows) => rows.map((r) => [r.getAttribute("data-group"), Number(r.querySelector('[data-testid="group-total"]')?.textContent)])),
    ) as Record<string, number>;

  beforeAll(async () => {
    d = await startDashboard("explore");
    ({ manager, browser } = d);
    await browser.context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: manager.url });
    for (const [n, labels] of [["prod", { tier: "prod" }], ["dev", { tier: "dev" }]] as const) {
      const { server } = await manager.servers.createServer({ spec: { name: name(n), image: TEST_IMAGE, command: ["sleep", "600"], desiredState: DesiredState.STOPPED, labels } });
      created.push(server!.id);
    }
    busyId = created[0]!;
  });

  afterAll(async () => {
    await stopDashboard(d, docker, created);
  });

  const phaseIs = async (id: string, phase: Phase) => (await manager.servers.getServer({ id })).server?.status?.phase === phase;

  it("servers: a CEL filter narrows the live table, a refused one shows its column, suggestions follow the arrow keys", async () => {
    const p = page();
    await p.getByRole("navigation", { name: "Pages" }).getByRole("link", { name: "Explore" }).click();
    await p.getByRole("heading", { name: "Explore" }).waitFor();
    await tableRow("Servers", name("prod")).waitFor();
    await tableRow("Servers", name("dev")).waitFor();

    // Arrow keys walk the suggestions (the input names the chosen one), Enter takes it, Escape closes the list.
    const input = celInput();
    await input.fill("server.spec.lab");
    const list = p.getByRole("listbox", { name: "Field suggestions" });
    await list.getByRole("option").first().waitFor();
    expect(await input.getAttribute("aria-expanded")).toBe("true");
    expect(await input.getAttribute("aria-activedescendant")).toBeNull();
    await input.press("ArrowDown");
    const first = await input.getAttribute("aria-activedescendant");
    expect(first).toBeTruthy();
    expect(await p.locator(`[id="${first}"]`).getAttribute("aria-selected")).toBe("true");
    await input.press("ArrowDown");
    const second = await input.getAttribute("aria-activedescendant");
    expect(second).not.toBe(first);
    await input.press("ArrowUp");
    expect(await input.getAttribute("aria-activedescendant")).toBe(first);
    const chosen = await p.locator(`[id="${first}"]`).textContent();
    await input.press("Enter");
    expect(await input.inputValue()).toBe(chosen);
    // Taking a suggestion does not apply the filter.
    expect(new URL(p.url()).searchParams.get("cel")).toBeNull();
    await input.fill("server.spec.lab");
    await list.getByRole("option").first().waitFor();
    await input.press("Escape");
    await list.waitFor({ state: "hidden" });
    expect(await input.getAttribute("aria-expanded")).toBe("false");
    expect(await p.getByRole("heading", { name: "Explore" }).count()).toBe(1);

    await input.fill(PROD);
    await input.press("Enter");
    await tableRow("Servers", name("dev")).waitFor({ state: "detached" });
    await tableRow("Servers", name("prod")).waitFor();
    const url = new URL(p.url());
    expect(url.pathname).toBe("/explore");
    expect(url.searchParams.get("source")).toBe("servers");
    expect(url.searchParams.get("cel")).toBe(PROD);
    expect(await seriousViolations(p, "explore, servers table")).toEqual([]);

    // A syntax error: the manager's message with its column marked; the rows stay.
    await input.fill(`${PROD} &&`);
    await input.press("Enter");
    const err = p.getByTestId("cel-error");
    await err.waitFor();
    expect(await err.textContent()).toMatch(/filter: syntax error at line 1, column \d+/);
    expect(await err.locator(".cel-caret").textContent()).toContain("^");
    expect(await input.getAttribute("aria-invalid")).toBe("true");
    await tableRow("Servers", name("prod")).waitFor();
    expect(await tableRow("Servers", name("dev")).count()).toBe(0);
    expect(await seriousViolations(p, "explore, refused filter")).toEqual([]);

    // A server's name opens its drawer.
    await input.fill(PROD);
    await input.press("Enter");
    await err.waitFor({ state: "detached" });
    await tableRow("Servers", name("prod")).getByRole("button", { name: name("prod") }).click();
    await p.getByTestId("server-drawer").waitFor();
    expect(new URL(p.url()).searchParams.get("server")).toBe(created[0]);
    await p.keyboard.press("Escape");
    await waitForExpression(p, "!new URL(location.href).searchParams.has('server')");

    // Hosts: ListHosts with the filter.
    await p.getByLabel("Source").selectOption("hosts");
    await p.getByRole("table", { name: "Hosts" }).locator("tr[data-host-id]").first().waitFor();
    await celInput().fill("host.draining");
    await celInput().press("Enter");
    await p.getByText("No host matches.").waitFor();
    expect(new URL(p.url()).searchParams.get("source")).toBe("hosts");

    // 390 px: the servers table stacks, nothing wider than the screen; the saved-queries panel above it.
    await p.setViewportSize({ width: 390, height: 844 });
    try {
      await p.goto(`${manager.url}/explore?source=servers&view=table&cel=${encodeURIComponent(PROD)}`);
      await tableRow("Servers", name("prod")).waitFor();
      await p.getByRole("button", { name: "Saved queries" }).click();
      await p.getByRole("complementary", { name: "Saved queries" }).waitFor();
      expect((await p.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")) as number).toBeLessThanOrEqual(0);
      expect(await seriousViolations(p, "explore servers at 390 px")).toEqual([]);
      await screenshot(p, "explore-00-servers-390");
    } finally {
      await p.setViewportSize({ width: 1600, height: 900 });
    }
  });

  it("events: a chart grouped by type counts the stops and starts, as ListEvents does; Copy link restores it; pinned, it is a panel on /servers", async () => {
    const p = page();
    // Caused: started, stopped, started, stopped (waiting for each to settle).
    for (const [act, phase] of [["start", Phase.RUNNING], ["stop", Phase.STOPPED], ["start", Phase.RUNNING], ["stop", Phase.STOPPED]] as const) {
      if (act === "start") await manager.servers.startServer({ id: busyId });
      else await manager.servers.stopServer({ id: busyId });
      await waitFor(`${name("prod")} ${act}`, () => phaseIs(busyId, phase), 60_000);
    }
    const filter = `event.server_id == "${busyId}" && event.type.startsWith("server.")`;
    await p.goto(`${manager.url}/explore`);
    await p.getByLabel("Source").selectOption("events");
    await p.getByRole("group", { name: "View" }).getByRole("button", { name: "Chart" }).click();
    await celInput().fill(filter);
    await celInput().press("Enter");
    await p.getByLabel("Group by 1").fill("event.type");
    await p.getByLabel("Bucket").selectOption("300");
    await p.getByLabel("Window (the last)").selectOption("3600");
    await p.getByRole("button", { name: "Update chart" }).click();
    await waitForExpression(p, `!!document.querySelector('[data-testid="chart-table"] tr[data-group="server.stop_requested"]')`);
    const totals = await chartTotals();
    expect(totals).toEqual({ "server.created": 1, "server.start_requested": 2, "server.stop_requested": 2 });
    // The same as counting ListEvents' answer.
    const { events } = await createClient(EventService, manager.transport(manager.adminToken)).listEvents({ serverId: busyId, typePrefix: "server.", pageSize: 1000 });
    const counted: Record<string, number> = {};
    for (const e of events) counted[e.type] = (counted[e.type] ?? 0) + 1;
    expect(totals).toEqual(counted);
    await p.getByTestId("explore-canvas").locator("canvas").first().waitFor();
    expect(await p.getByRole("list", { name: "Legend" }).getByRole("listitem").count()).toBe(3);
    expect(await seriousViolations(p, "explore, events chart")).toEqual([]);
    await screenshot(p, "explore-01-events-chart");

    // Copy link: the URL says it all; opened again it shows the same chart.
    await p.getByTestId("copy-link").click();
    await p.getByTestId("copy-link").filter({ hasText: "Copied" }).waitFor();
    const link = (await p.evaluate("navigator.clipboard.readText()")) as string;
    const u = new URL(link);
    expect(Object.fromEntries(u.searchParams)).toMatchObject({ source: "events", view: "chart", cel: filter, group: "event.type", interval: "300", window: "3600" });
    await p.getByRole("navigation", { name: "Pages" }).getByRole("link", { name: "Servers" }).click();
    await p.getByRole("heading", { name: "Servers" }).waitFor();
    await p.goto(link);
    await waitForExpression(p, `!!document.querySelector('[data-testid="chart-table"] tr[data-group="server.stop_requested"]')`);
    expect(await chartTotals()).toEqual(totals);
    expect(await celInput().inputValue()).toBe(filter);
    expect(await p.getByLabel("Group by 1").inputValue()).toBe("event.type");
    expect(await p.getByLabel("Bucket").inputValue()).toBe("300");
    expect(await p.getByRole("group", { name: "View" }).getByRole("button", { name: "Chart" }).getAttribute("aria-pressed")).toBe("true");

    // A group-by expression the manager refuses: its message under the group-by inputs, the chart kept.
    await p.getByLabel("Group by 2").fill("event.no_such_field");
    await p.getByRole("button", { name: "Update chart" }).click();
    const groupError = p.locator(".chart-form .field-error");
    await groupError.waitFor();
    expect(await groupError.textContent()).toContain("group_by[1]");
    expect(await p.getByLabel("Group by 2").getAttribute("aria-invalid")).toBe("true");
    expect(await chartTotals()).toEqual(totals);
    await p.getByLabel("Group by 2").fill("");
    await p.getByRole("button", { name: "Update chart" }).click();
    await groupError.waitFor({ state: "detached" });

    // Saved and pinned, the chart is a panel on the home page: its total, its groups, a line per bucket.
    await p.getByRole("button", { name: "Save query…" }).click();
    const dialog = p.getByTestId("save-query");
    await dialog.getByLabel("Name").fill(name("stops"));
    await dialog.getByLabel("Pinned to the home page").check();
    await dialog.getByRole("button", { name: "Save", exact: true }).click();
    await dialog.waitFor({ state: "detached" });
    await p.getByRole("navigation", { name: "Pages" }).getByRole("link", { name: "Servers" }).click();
    const pinned = p.getByRole("region", { name: "Pinned queries" }).locator(`[data-pinned="${name("stops")}"]`);
    await expect.poll(() => pinned.getByTestId("pinned-figure").textContent()).toBe("5 in 3 groups");
    expect(await pinned.locator("svg.sparkline").getAttribute("aria-label")).toMatch(/^per bucket: (0, )+\d/);
    await createClient(SavedQueryService, manager.transport(manager.adminToken)).deleteSavedQuery({ id: name("stops") });
  });

  it("the four questions of docs/explore.md from the dashboard: crashes per server (by name), a token's changes, servers without data, stops by cause", async () => {
    const p = page();
    const hostId = (await manager.hosts.listHosts({})).hosts[0]!.id;
    // A server that crashes once (exit 3, never restarted).
    const { server: crash } = await manager.servers.createServer({ spec: { name: name("crash"), image: TEST_IMAGE, command: ["sh", "-c", "sleep 1; exit 3"], restartPolicy: RestartPolicy.NEVER } });
    created.push(crash!.id);
    // A change made with a token named ci-deploy.
    const { secret } = await manager.access.createToken({ name: `ci-deploy-${RUN}`, role: Role.OPERATOR, project: "default" });
    const { server: ci } = await createClient(ServerService, manager.transport(secret)).createServer({ spec: { name: name("ci"), image: TEST_IMAGE, command: ["sleep", "600"], desiredState: DesiredState.STOPPED } });
    created.push(ci!.id);
    // A server stopped through berth, then its data directory removed from the host.
    const { server: lost } = await manager.servers.createServer({ spec: { name: name("lost"), image: TEST_IMAGE, command: ["sleep", "600"] } });
    created.push(lost!.id);
    await waitFor("lost to run", () => phaseIs(lost!.id, Phase.RUNNING), 60_000);
    await manager.servers.stopServer({ id: lost!.id });
    await waitFor("lost to stop", () => phaseIs(lost!.id, Phase.STOPPED), 60_000);
    expect(existsSync(join(d!.agent.dataRoot, lost!.id))).toBe(true);
    rmSync(join(d!.agent.dataRoot, lost!.id), { recursive: true, force: true });
    await waitFor("lost's data to be missed", async () => (await manager.servers.getServer({ id: lost!.id })).server?.status?.dataExists === false, 60_000);
    await waitFor("the crash", async () => (await createClient(EventService, manager.transport(manager.adminToken)).listEvents({ serverId: crash!.id, typePrefix: "container.died" })).events.length > 0, 60_000);
    const open = (q: Record<string, string | string[]>) => {
      const u = new URLSearchParams();
      for (const [k, v] of Object.entries(q)) for (const x of [v].flat()) u.append(k, x);
      return p.goto(`${manager.url}/explore?${u}`);
    };

    // 1. Crashes per server this week (at least 1 here; the page's question says 4): the group is the server's name.
    await open({ source: "events", view: "chart", cel: 'event.type == "container.died"', group: "event.server_id", interval: "86400", window: "604800", min: "1" });
    await waitForExpression(p, `!!document.querySelector('[data-testid="chart-table"] tr[data-group="${name("crash")}"]')`);
    expect(await chartTotals()).toEqual({ [name("crash")]: 1 });

    // 2. What the ci-deploy token changed: the events whose actor is that token.
    await open({ source: "events", view: "table", cel: `event.actor.endsWith(":ci-deploy-${RUN}")` });
    const events = p.getByRole("table", { name: "Events" });
    await events.getByText("server.created").first().waitFor();
    expect(await events.locator("tbody tr").count()).toBe(1);
    expect(await events.locator("tbody tr").first().textContent()).toContain(name("ci"));

    // 3. Servers on the host without a data directory: only lost.
    await open({ source: "servers", view: "table", cel: `server.spec.host_id == "${hostId}" && !server.status.data_exists` });
    await tableRow("Servers", name("lost")).waitFor();
    await expect.poll(() => p.getByRole("table", { name: "Servers" }).locator("tr[data-server-name]").count()).toBe(1);

    // 4. Stops per hour over the last day, by cause (here of lost, stopped through berth once: reason Stopped).
    await open({ source: "events", view: "chart", cel: `event.type == "phase.changed" && event.message.contains("→ STOPPED") && event.server_id == "${lost!.id}"`, group: "event.reason", interval: "3600", window: "86400" });
    await waitForExpression(p, `!!document.querySelector('[data-testid="chart-table"] tr[data-group]')`);
    expect(await chartTotals()).toEqual({ Stopped: 1 });
    expect(await seriousViolations(p, "explore, stops by cause")).toEqual([]);
  });

  it("saved queries: save (a bad name refused on its field), reopen from the list, update, a stale update, pin to home, delete", async () => {
    const p = page();
    const saved = createClient(SavedQueryService, manager.transport(manager.adminToken));
    const qname = name("prod");
    await p.goto(`${manager.url}/explore?source=servers&view=table&cel=${encodeURIComponent(PROD)}`);
    await tableRow("Servers", name("prod")).waitFor();
    await p.getByRole("button", { name: "Save query…" }).click();
    const dialog = p.getByTestId("save-query");
    await dialog.getByLabel("Name").fill("Stops This Hour");
    await dialog.getByRole("button", { name: "Save", exact: true }).click();
    // The manager's refusal lands on the Name field.
    await waitForExpression(p, `document.querySelector('[data-testid="save-query"] input[name="name"]')?.getAttribute('aria-invalid') === 'true'`);
    expect(await dialog.locator(".field-error").first().textContent()).toMatch(/lowercase/);
    await dialog.getByLabel("Name").fill(qname);
    await dialog.getByLabel("Description").fill("the prod servers");
    await dialog.getByLabel("Pinned to the home page").check();
    expect(await dialog.getByLabel("Shared with the project").isDisabled()).toBe(false);
    await dialog.getByLabel("Shared with the project").check();
    expect(await seriousViolations(p, "explore, save dialog")).toEqual([]);
    await dialog.getByRole("button", { name: "Save", exact: true }).click();
    await dialog.waitFor({ state: "detached" });
    await p.getByTestId("opened-query").filter({ hasText: qname }).waitFor();
    const stored = (await saved.getSavedQuery({ id: qname })).savedQuery!;
    expect(stored.spec).toMatchObject({ name: qname, pinned: true, description: "the prod servers", query: { filter: PROD } });
    expect(new URL(p.url()).searchParams.get("saved")).toBe(stored.id);

    // Reopen from the list on a fresh Explore page.
    await p.getByRole("navigation", { name: "Pages" }).getByRole("link", { name: "Explore" }).click();
    await waitForExpression(p, "!new URL(location.href).searchParams.has('saved')");
    await p.getByRole("button", { name: "Saved queries" }).click();
    const panel = p.getByRole("complementary", { name: "Saved queries" });
    await tableRow("Servers", name("dev")).waitFor();
    await panel.locator(`li[data-saved-name="${qname}"]`).getByRole("button", { name: qname, exact: true }).click();
    await tableRow("Servers", name("dev")).waitFor({ state: "detached" });
    await tableRow("Servers", name("prod")).waitFor();
    expect(await celInput().inputValue()).toBe(PROD);
    expect(new URL(p.url()).searchParams.get("saved")).toBe(stored.id);

    // Update: the version it was opened at.
    await p.getByRole("button", { name: "Save…" }).click();
    await dialog.getByLabel("Description").fill("changed from the dashboard");
    await dialog.getByRole("button", { name: "Save changes" }).click();
    await dialog.waitFor({ state: "detached" });
    const v2 = (await saved.getSavedQuery({ id: qname })).savedQuery!;
    expect(v2.spec?.description).toBe("changed from the dashboard");
    expect(v2.version).toBeGreaterThan(stored.version);

    // Changed elsewhere since: ABORTED, and the dialog offers to reload.
    await saved.updateSavedQuery({ id: v2.id, spec: { ...v2.spec!, description: "changed elsewhere" } });
    await p.getByRole("button", { name: "Save…" }).click();
    await dialog.getByLabel("Description").fill("mine");
    await dialog.getByRole("button", { name: "Save changes" }).click();
    await dialog.getByText(/changed since you opened it/).waitFor();
    await dialog.getByRole("button", { name: "Reload" }).click();
    await dialog.waitFor({ state: "detached" });
    await p.getByText("changed elsewhere").first().waitFor();

    // Pinned: a panel on the home page, linking back.
    await p.getByRole("navigation", { name: "Pages" }).getByRole("link", { name: "Servers" }).click();
    const pinned = p.getByRole("region", { name: "Pinned queries" }).locator(`[data-pinned="${qname}"]`);
    await pinned.waitFor();
    await expect.poll(() => pinned.getByTestId("pinned-figure").textContent()).toBe("1 server");
    expect(await seriousViolations(p, "servers with a pinned query")).toEqual([]);
    await p.setViewportSize({ width: 390, height: 844 });
    await screenshot(p, "explore-02-pinned-390");
    await p.setViewportSize({ width: 1600, height: 900 });
    await pinned.getByRole("link", { name: qname }).click();
    await p.getByTestId("opened-query").filter({ hasText: qname }).waitFor();

    // Delete, confirmed.
    await p.getByRole("button", { name: "Saved queries" }).click();
    await panel.getByRole("button", { name: `Delete ${qname}` }).click();
    await p.getByRole("dialog").getByRole("button", { name: "Delete" }).click();
    await panel.locator(`li[data-saved-name="${qname}"]`).waitFor({ state: "detached" });
    await expect(saved.getSavedQuery({ id: qname })).rejects.toThrow(/not.?found/i);
    await p.getByRole("navigation", { name: "Pages" }).getByRole("link", { name: "Servers" }).click();
    await p.getByRole("heading", { name: "Servers" }).waitFor();
    await new Promise((r) => setTimeout(r, 500));
    expect(await p.getByRole("region", { name: "Pinned queries" }).count()).toBe(0);
  });

  it("a viewer saves a private query: Shared and the alert are disabled with a hint; the query is theirs only", async () => {
    const { secret: viewer } = await manager.access.createToken({ name: name("viewer"), role: Role.VIEWER, project: "default" });
    // A new tab: the signed-in token is per tab (sessionStorage).
    const tab = await browser.context.newPage();
    try {
      await signIn(tab, manager.url, viewer, `/explore?source=servers&view=table&cel=${encodeURIComponent(PROD)}`);
      await tab.getByRole("table", { name: "Servers" }).locator(`tr[data-server-name="${name("prod")}"]`).waitFor();
      await tab.getByRole("button", { name: "Save query…" }).click();
      const dialog = tab.getByTestId("save-query");
      expect(await dialog.getByLabel("Shared with the project").isDisabled()).toBe(true);
      expect(await dialog.getByText("Sharing needs the operator role").count()).toBe(1);
      expect(await dialog.getByLabel("Fire an alert when it returns rows").isDisabled()).toBe(true);
      await dialog.getByLabel("Name").fill(name("mine"));
      await dialog.getByRole("button", { name: "Save", exact: true }).click();
      await dialog.waitFor({ state: "detached" });
      await tab.getByTestId("opened-query").filter({ hasText: name("mine") }).waitFor();
      const { savedQuery } = await createClient(SavedQueryService, manager.transport(viewer)).getSavedQuery({ id: name("mine") });
      expect(savedQuery?.spec).toMatchObject({ shared: false, query: { filter: PROD } });
    } finally {
      await tab.close();
    }
  });

  it("at 390 px the page fits and axe finds nothing serious", async () => {
    const p = page();
    await p.setViewportSize({ width: 390, height: 844 });
    try {
      await p.goto(`${manager.url}/explore?source=events&view=chart&group=event.type&interval=300&window=3600&cel=${encodeURIComponent(`event.server_id == "${busyId}"`)}`);
      await p.getByTestId("chart-table").waitFor();
      await p.getByTestId("explore-canvas").locator("canvas").first().waitFor();
      const overflow = (await p.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")) as number;
      expect(overflow).toBeLessThanOrEqual(0);
      expect(await seriousViolations(p, "explore at 390 px")).toEqual([]);
      await screenshot(p, "explore-03-chart-390");
      await p.getByRole("group", { name: "View" }).getByRole("button", { name: "Table" }).click();
      await p.getByRole("table", { name: "Events" }).locator("tr[data-event-type]").first().waitFor();
      expect((await p.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")) as number).toBeLessThanOrEqual(0);
      expect(await seriousViolations(p, "explore events table at 390 px")).toEqual([]);
    } finally {
      await p.setViewportSize({ width: 1600, height: 900 });
    }
  });
});
