/**
 * The filter bars' advanced (CEL) mode, in a real browser against a real
 * manager, agent and Docker: on Servers a CEL filter on a label (set through
 * the API) shows only the matching server, is kept in the URL (`?cel=`) and
 * survives a reload; a syntax error shows the manager's message (and the
 * column) under the input while the table keeps its rows, and so does a
 * filter too costly (ResourceExhausted, with its advice); a field name is
 * completed from the suggestions. On Events a CEL filter on the type shows
 * only server events. axe finds nothing serious on either page in advanced
 * mode; a screenshot at 390 px.
 */

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "@connectrpc/connect";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { DesiredState } from "@berth/proto/berth/v1/server_pb.js";
import { dockerClient, TEST_IMAGE } from "../harness/docker-engine.js";
import { waitFor, type ManagerProc } from "../harness/processes.js";
import { type Browser, type Dashboard, row, screenshot, seriousViolations, startDashboard, stopDashboard, waitForExpression } from "./browser.js";
import { testDockerHost } from "../harness/engine.js";

const RUN = Date.now().toString(36).slice(-4);
const name = (s: string) => `cel-${RUN}-${s}`;
const PROD = 'server.spec.labels["tier"] == "prod"';

describe("dashboard CEL filters", () => {
  const docker = dockerClient(testDockerHost());
  let d: Dashboard | undefined;
  let manager: ManagerProc;
  let browser: Browser;
  const created: string[] = [];
  const page = () => browser.page;

  beforeAll(async () => {
    d = await startDashboard("explore-filters");
    ({ manager, browser } = d);
    for (const [n, labels] of [["prod", { tier: "prod" }], ["dev", { tier: "dev" }]] as const) {
      const { server } = await manager.servers.createServer({ spec: { name: name(n), image: TEST_IMAGE, desiredState: DesiredState.STOPPED, labels } });
      created.push(server!.id);
    }
  });

  afterAll(async () => {
    await stopDashboard(d, docker, created);
  });

  it("Servers: a CEL filter on a label shows only the matching server, is kept in the URL across a reload, and a syntax error keeps the rows", async () => {
    const p = page();
    await row(p, name("prod")).waitFor();
    await row(p, name("dev")).waitFor();

    await p.getByRole("button", { name: "Advanced (CEL)" }).click();
    const bar = p.getByRole("search", { name: "CEL filter" });
    const input = bar.getByRole("combobox", { name: "CEL" });
    expect(await input.getAttribute("spellcheck")).toBe("false");
    // A field name is completed from the descriptors' snake_case names.
    await input.fill("server.spec.lab");
    await bar.getByRole("listbox", { name: "Field suggestions" }).getByRole("option", { name: "server.spec.labels", exact: true }).click();
    expect(await input.inputValue()).toBe("server.spec.labels");
    // An example chip fills the input; Enter applies it.
    await bar.getByRole("button", { name: PROD, exact: true }).click();
    expect(await input.inputValue()).toBe(PROD);
    await input.press("Enter");
    await row(p, name("dev")).waitFor({ state: "detached" });
    await row(p, name("prod")).waitFor();
    expect(new URL(p.url()).searchParams.get("cel")).toBe(PROD);
    expect(new URL(p.url()).search).toContain("cel=");
    expect(await seriousViolations(p, "servers, advanced mode")).toEqual([]);

    await p.reload();
    await row(p, name("prod")).waitFor();
    await waitForExpression(p, `!document.querySelector('.vt-row[data-server-name="${name("dev")}"]')`);
    expect(await p.getByRole("search", { name: "CEL filter" }).getByRole("combobox", { name: "CEL" }).inputValue()).toBe(PROD);
    // The page's own filters still apply on top.
    await p.getByLabel("Search servers").fill("nothing-like-this");
    await row(p, name("prod")).waitFor({ state: "detached" });
    await p.getByLabel("Search servers").fill("");
    await row(p, name("prod")).waitFor();

    // A syntax error: the manager's message (line, column) under the input; the table keeps its rows.
    const bar2 = p.getByRole("search", { name: "CEL filter" });
    const input2 = bar2.getByRole("combobox", { name: "CEL" });
    await input2.fill(`${PROD} &&`);
    await bar2.getByRole("button", { name: "Apply" }).click();
    const err = bar2.getByTestId("cel-error");
    await err.waitFor();
    expect(await err.textContent()).toMatch(/filter: syntax error at line 1, column \d+/);
    expect(await input2.getAttribute("aria-invalid")).toBe("true");
    expect(await err.locator(".cel-caret").textContent()).toContain("^");
    await row(p, name("prod")).waitFor();
    expect(await row(p, name("dev")).count()).toBe(0);
    expect(await seriousViolations(p, "servers, advanced mode with an error")).toEqual([]);

    // Too costly: ResourceExhausted, with the manager's advice; the rows stay.
    const list = `[${Array.from({ length: 100 }, (_, i) => i).join(",")}]`;
    await input2.fill(`${list}.all(a, ${list}.all(b, ${list}.all(c, a + b + c >= 0)))`);
    await input2.press("Enter");
    await err.filter({ hasText: "Too costly" }).waitFor();
    expect(await err.textContent()).toContain("narrow the filter");
    await row(p, name("prod")).waitFor();
    expect(await row(p, name("dev")).count()).toBe(0);

    await input2.fill(`${PROD} &&`);
    await input2.press("Enter");
    await err.filter({ hasText: "syntax error" }).waitFor();
    await p.setViewportSize({ width: 390, height: 844 });
    await screenshot(p, "explore-filters-01-servers-390");
    await p.setViewportSize({ width: 1280, height: 900 });

    // Clear: back to the normal mode, every server.
    await bar2.getByRole("button", { name: /Clear/ }).click();
    await row(p, name("dev")).waitFor();
    expect(new URL(p.url()).searchParams.get("cel")).toBeNull();
    expect(await p.getByRole("search", { name: "CEL filter" }).count()).toBe(0);
  });

  it("Events: event.type.startsWith(\"server.\") shows only server events", async () => {
    const p = page();
    await p.getByRole("navigation", { name: "Pages" }).getByRole("link", { name: "Events" }).click();
    const list = p.getByRole("list", { name: "Events" });
    // The host's enrollment and the servers' creation are in the ledger.
    await list.locator('li[data-event-type^="host."]').first().waitFor();
    await p.getByRole("button", { name: "Advanced (CEL)" }).click();
    const bar = p.getByRole("search", { name: "CEL filter" });
    await bar.getByRole("button", { name: 'event.type.startsWith("server.")', exact: true }).click();
    await bar.getByRole("combobox", { name: "CEL" }).press("Enter");
    await waitForExpression(p, `!document.querySelector('ol.events li.event:not([data-event-type^="server."])') && !!document.querySelector('ol.events li[data-event-type="server.created"]')`);
    expect(new URL(p.url()).searchParams.get("cel")).toBe('event.type.startsWith("server.")');
    const types = await list.locator("li.event").evaluateAll((l) => l.map((e) => e.getAttribute("data-event-type")));
    expect(types.length).toBeGreaterThanOrEqual(2);
    expect(types.every((t) => t?.startsWith("server."))).toBe(true);
    expect(await seriousViolations(p, "events, advanced mode")).toEqual([]);

    // The live tail follows with the filter: a new server's creation arrives, its phase and command events do not.
    const { server: late } = await manager.servers.createServer({ spec: { name: name("late"), image: TEST_IMAGE, command: ["sleep", "600"], desiredState: DesiredState.RUNNING } });
    created.push(late!.id);
    await list.locator(`li[data-event-type="server.created"]:has-text("${name("late")}")`).waitFor();
    await waitFor("phase events of the late server", async () => {
      const { events } = await createClient(EventService, manager.transport(manager.adminToken)).listEvents({ serverId: late!.id, typePrefix: "phase.", pageSize: 5 });
      return events.length > 0;
    });
    await new Promise((r) => setTimeout(r, 500));
    const live = await list.locator("li.event").evaluateAll((l) => l.map((e) => e.getAttribute("data-event-type")));
    expect(live.length).toBe(types.length + 1);
    expect(live.every((t) => t?.startsWith("server."))).toBe(true);

    // A refused expression: the manager's message under the input, the events kept.
    await bar.getByRole("combobox", { name: "CEL" }).fill("event.typo == 1");
    await bar.getByRole("combobox", { name: "CEL" }).press("Enter");
    const err = bar.getByTestId("cel-error");
    await err.waitFor();
    expect(await err.textContent()).toContain("filter:");
    expect(await list.locator("li.event").count()).toBe(types.length + 1);
    await screenshot(p, "explore-filters-02-events");
  });
});
