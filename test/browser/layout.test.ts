/**
 * The dashboard's layout in a real browser: on a phone (390×844) every page
 * fits the screen and is reached through the pages menu, and server rows are
 * cards with what a phone user needs; on a laptop (1440×900) the servers
 * table fits without a sideways scrollbar, its internal columns are behind a
 * chooser that remembers, the connect address copies, and the row menu stays
 * on screen. One manager, one agent, three servers; screenshots land in
 * test-results/screenshots/layout-*.png.
 */
import { rm } from "node:fs/promises";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DesiredState, Phase } from "@berth/proto/berth/v1/server_pb.js";
import { dockerClient, removeBerthContainers, TEST_IMAGE } from "../harness/docker-engine.js";
import { freePorts, startAgent, startManager, tempDir, waitForPhase, waitForHostOnline, type ManagerProc, type Proc } from "../harness/processes.js";
import { launchBrowser, row, screenshot, signIn, type Browser } from "./browser.js";
import { testDockerHost } from "../harness/engine.js";

const RUN = Date.now().toString(36).slice(-4);
const name = (s: string) => `lay-${RUN}-${s}`;
const SLEEPER = ["sh", "-c", "exec sleep 100000"];
const PHONE = { width: 390, height: 844 };
const LAPTOP = { width: 1440, height: 900 };
const PAGES = ["Servers", "Hosts", "Alerts", "Events", "Backup targets", "Orphans", "Tokens"];

describe("dashboard layout", () => {
  const docker = dockerClient(testDockerHost());
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc;
  let browser: Browser;
  let hostName: string;
  let port: number;
  const created: string[] = [];
  const page = () => browser.page;

  /** Whether the page is wider than the screen (a sideways scroll of the whole document). */
  const overflow = async () =>
    (await page().evaluate(`({ scroll: document.documentElement.scrollWidth, inner: window.innerWidth })`)) as { scroll: number; inner: number };
  /** A box that must lie within the viewport's width (and height when `vertical`). */
  async function expectOnScreen(locator: ReturnType<Browser["page"]["locator"]>, vertical = false) {
    const box = (await locator.boundingBox())!;
    const vp = page().viewportSize()!;
    expect(box.x).toBeGreaterThanOrEqual(0);
    expect(box.x + box.width).toBeLessThanOrEqual(vp.width);
    if (vertical) {
      expect(box.y).toBeGreaterThanOrEqual(0);
      expect(box.y + box.height).toBeLessThanOrEqual(vp.height);
    }
  }

  beforeAll(async () => {
    dir = await tempDir("layout");
    manager = await startManager({ dir });
    agent = await startAgent({ manager, dir, extraArgs: ["--usage-interval", "1"] }); // usage figures in the rows and cards within seconds
    const host = await waitForHostOnline(manager);
    hostName = host.name || host.id;
    [port] = await freePorts(1);
    const make = async (n: string, o: { ports?: number[]; desiredState?: DesiredState; memoryBytes?: bigint } = {}) => {
      const { server } = await manager.servers.createServer({
        spec: {
          name: n,
          image: TEST_IMAGE,
          command: SLEEPER,
          dataMountPath: "/data",
          ports: (o.ports ?? []).map((p) => ({ hostPort: p, containerPort: 25565 })),
          ...(o.desiredState ? { desiredState: o.desiredState } : {}),
          ...(o.memoryBytes ? { resources: { memoryBytes: o.memoryBytes } } : {}),
        },
      });
      created.push(server!.id);
      return server!.id;
    };
    const web = await make(name("web"), { ports: [port!], memoryBytes: 64n * 1024n * 1024n });
    await make(name("quiet"), { desiredState: DesiredState.STOPPED });
    await make(name("spare"));
    await waitForPhase(manager, web, Phase.RUNNING);
    browser = await launchBrowser();
    browser.page.on("pageerror", (e) => console.error(`[page error] ${e.message}`));
    await page().setViewportSize(PHONE);
    await signIn(page(), manager.url, manager.adminToken);
  });

  afterAll(async () => {
    await browser?.close();
    await agent?.stop();
    await manager?.stop();
    await removeBerthContainers(docker, { managerId: manager?.managerId, serverIds: created });
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("on a phone, the pages menu reaches every page and no page is wider than the screen", async () => {
    const p = page();
    const menu = p.getByRole("button", { name: /Servers/, expanded: false });
    await menu.waitFor();
    // The top bar's controls are all on screen and the page links are not laid out beside them.
    await expectOnScreen(p.getByRole("button", { name: "Sign out" }));
    await expectOnScreen(p.getByTestId("watch-status"));
    expect(await p.getByRole("navigation", { name: "Pages" }).isVisible()).toBe(false);

    // Escape closes the menu and gives focus back to its button.
    await menu.click();
    const nav = p.getByRole("navigation", { name: "Pages" });
    await nav.waitFor();
    await p.keyboard.press("Escape");
    await nav.waitFor({ state: "hidden" });
    expect(await p.evaluate(`document.activeElement.getAttribute("aria-controls")`)).toBe("pages-nav");

    for (const label of PAGES) {
      await p.locator("button[aria-controls=pages-nav]").click();
      expect(await p.locator("button[aria-controls=pages-nav]").getAttribute("aria-expanded")).toBe("true");
      await expectOnScreen(nav.getByRole("link", { name: label, exact: true }));
      await nav.getByRole("link", { name: label, exact: true }).click();
      await nav.waitFor({ state: "hidden" }); // a new page closes the menu
      await p.locator("button[aria-controls=pages-nav]", { hasText: label }).waitFor();
      await p.locator("main h1").first().waitFor();
      await p.waitForTimeout(300); // the page's first answer lays it out
      const o = await overflow();
      expect(o.scroll, `${label} at 390 px`).toBeLessThanOrEqual(o.inner);
      await screenshot(p, `layout-phone-${label.toLowerCase().replace(/ /g, "-")}`);
    }
  });

  it("on a phone, a server is a card with its name, phase, connect address and primary action", async () => {
    const p = page();
    await p.locator("button[aria-controls=pages-nav]").click();
    await p.getByRole("navigation", { name: "Pages" }).getByRole("link", { name: "Servers", exact: true }).click();
    const card = row(p, name("web"));
    await card.locator('[data-testid="phase-badge"]', { hasText: "Running" }).waitFor();
    await expectOnScreen(card);
    for (const part of [card.locator(".c-name"), card.getByTestId("phase-badge"), card.getByRole("button", { name: "Stop" }), card.getByRole("button", { name: /More actions/ })]) {
      expect(await part.isVisible()).toBe(true);
      await expectOnScreen(part);
    }
    const address = card.getByLabel(/Connect address of/);
    expect(await address.isVisible()).toBe(true);
    expect(await address.inputValue()).toBe(`${hostName}:${port}`);
    // Its CPU and memory figures (without the bars) fit on the card.
    await card.getByTestId("usage-cpu").waitFor({ timeout: 15_000 });
    for (const part of [card.getByTestId("usage-cpu"), card.getByTestId("usage-memory")]) await expectOnScreen(part);
    expect(await card.locator(".meter-bar").first().isVisible()).toBe(false);
    // Internals stay out of the card.
    expect(await card.locator(".c-image").isVisible()).toBe(false);
    // A stopped server's card offers Start.
    expect(await row(p, name("quiet")).getByRole("button", { name: "Start" }).isVisible()).toBe(true);
    // Its menu opens on screen.
    await card.getByRole("button", { name: /More actions/ }).click();
    await expectOnScreen(p.getByRole("menu"), true);
    await screenshot(p, "layout-phone-servers-menu");
    await p.keyboard.press("Escape");
    const o = await overflow();
    expect(o.scroll).toBeLessThanOrEqual(o.inner);
  });

  it("on a laptop, the servers table fits, shows connect address and uptime, and keeps the row menu on screen", async () => {
    const p = page();
    await p.setViewportSize(LAPTOP);
    const r = row(p, name("web"));
    await r.locator(".c-connect").waitFor();
    expect(await p.locator("button[aria-controls=pages-nav]").isVisible()).toBe(false);
    expect(await p.getByRole("navigation", { name: "Pages" }).isVisible()).toBe(true);
    const scroll = (await p.evaluate(`(() => { const t = document.querySelector(".servers-table"); return { scroll: t.scrollWidth, client: t.clientWidth }; })()`)) as { scroll: number; client: number };
    expect(scroll.scroll).toBeLessThanOrEqual(scroll.client); // no sideways scrollbar in the table
    const o = await overflow();
    expect(o.scroll).toBeLessThanOrEqual(o.inner);

    expect(await r.getByLabel(/Connect address of/).inputValue()).toBe(`${hostName}:${port}`);
    await r.locator(".c-connect").getByRole("button", { name: "Copy" }).click();
    await r.locator(".c-connect").getByRole("button", { name: "Copied" }).waitFor();
    // Uptime counts from Docker's start time of the container, as the manager reports it.
    const { server } = await manager.servers.getServer({ id: name("web") });
    expect(server!.status!.startedTime).toBeDefined();
    expect(await r.locator(".c-uptime time").getAttribute("datetime")).toBe(new Date(timestampMs(server!.status!.startedTime!)).toISOString());
    expect(await r.locator(".c-uptime").textContent()).toMatch(/^\d+(s|m|h \d+m|h|d \d+h|d)$/);
    expect(await row(p, name("quiet")).locator(".c-uptime").textContent()).toBe("—");
    expect(await row(p, name("spare")).locator(".c-connect").textContent()).toBe("no port");
    // The memory figure against its limit is whole beside its bar, not cut to "576…".
    const memory = r.getByTestId("usage-memory").locator(".meter-text");
    await memory.waitFor({ timeout: 15_000 });
    expect(await memory.textContent()).toMatch(/^[\d.]+[BKMG]\/64M$/);
    const fit = (await memory.evaluate((el) => ({ scroll: el.scrollWidth, client: el.clientWidth }))) as { scroll: number; client: number };
    expect(fit.scroll, "the memory figure is cut").toBeLessThanOrEqual(fit.client);

    await r.getByRole("button", { name: /More actions/ }).click();
    await expectOnScreen(p.getByRole("menu"), true);
    await screenshot(p, "layout-laptop-servers");
    await p.keyboard.press("Escape");
  });

  it("the column chooser shows the Container column on request and remembers it", async () => {
    const p = page();
    await p.setViewportSize(LAPTOP);
    const header = p.getByRole("columnheader", { name: /Container/ });
    expect(await header.count()).toBe(0); // off by default
    expect(await row(p, name("web")).locator(".c-container").count()).toBe(0);
    await p.getByRole("button", { name: /^Columns/ }).click();
    await p.getByRole("group", { name: "More columns" }).getByLabel("Container").check();
    await header.waitFor();
    await row(p, name("web")).locator(".c-container").waitFor();
    await p.keyboard.press("Escape");
    await p.getByRole("group", { name: "More columns" }).waitFor({ state: "hidden" });

    await p.reload();
    await row(p, name("web")).waitFor();
    expect(await header.count()).toBe(1); // remembered
    await p.getByRole("button", { name: /^Columns/ }).click();
    await p.getByRole("group", { name: "More columns" }).getByLabel("Container").uncheck();
    await header.waitFor({ state: "detached" });
    await p.keyboard.press("Escape");
  });
});
