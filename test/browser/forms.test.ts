/**
 * The spec forms and the delete notice in a real browser against a real
 * manager and agent: every problem of a submit shows at once on its field
 * (the page's own checks and the manager's google.rpc.BadRequest alike),
 * focus goes to the first, a field's problem clears once it is edited; the
 * command is an argv that keeps arguments with spaces exactly; a delete says
 * so in a toast whose Undo restores the server.
 */
import { rm } from "node:fs/promises";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { DesiredState } from "@berth/proto/berth/v1/server_pb.js";
import { dockerClient, removeBerthContainers, TEST_IMAGE } from "../harness/docker-engine.js";
import { startAgent, startManager, tempDir, waitFor, waitForHostOnline, type ManagerProc, type Proc } from "../harness/processes.js";
import { launchBrowser, row, signIn, type Browser } from "./browser.js";
import { testDockerHost } from "../harness/engine.js";

const RUN = Date.now().toString(36).slice(-4);
const name = (s: string) => `fm-${RUN}-${s}`;

describe("forms", () => {
  const docker = dockerClient(testDockerHost());
  let dir: string;
  let manager: ManagerProc;
  let agent: Proc & { dataRoot: string };
  let browser: Browser;
  const created: string[] = [];

  const page = () => browser.page;
  /** The `name` attribute of the element with focus. */
  const focused = () => page().evaluate(`document.activeElement && document.activeElement.getAttribute("name")`);
  /** The problem shown beside a control (the element its aria-describedby names), or null. */
  const problemOf = (selector: string) =>
    page().evaluate(`(() => {
      const el = document.querySelector(${JSON.stringify(selector)});
      const id = el && el.getAttribute("aria-describedby");
      const msg = id && document.getElementById(id);
      return msg ? msg.textContent : null;
    })()`) as Promise<string | null>;

  beforeAll(async () => {
    dir = await tempDir("forms");
    manager = await startManager({ dir });
    agent = await startAgent({ manager, dir });
    await waitForHostOnline(manager);
    browser = await launchBrowser();
    browser.page.on("pageerror", (e) => console.error(`[page error] ${e.message}`));
    await signIn(page(), manager.url, manager.adminToken);
  });

  beforeEach(async () => {
    if (!browser) return;
    for (let i = 0; i < 3 && (await page().locator(".backdrop, .drawer, .menu").count()) > 0; i++) await page().keyboard.press("Escape");
  });

  afterAll(async () => {
    await browser?.close();
    await agent?.stop();
    await manager?.stop();
    await removeBerthContainers(docker, { managerId: manager?.managerId, serverIds: created });
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("a create with two bad fields shows both problems at once, focuses the first, and editing a field clears its problem", async () => {
    const p = page();
    await p.getByRole("button", { name: "New server" }).click();
    const dialog = p.getByTestId("create-server");
    // Both break the contract's rules: the page says so before sending.
    await dialog.locator("input[name=name]").fill("Bad Name");
    await dialog.locator("input[name=image]").fill("Not An Image");
    await dialog.getByRole("button", { name: "Create server" }).click();
    expect(await dialog.getByRole("alert").textContent()).toContain("2 fields need a fix: Name, Image");
    expect(await dialog.locator("input[name=name]").getAttribute("aria-invalid")).toBe("true");
    expect(await dialog.locator("input[name=image]").getAttribute("aria-invalid")).toBe("true");
    expect(await problemOf("input[name=name]")).toBeTruthy();
    expect(await problemOf("input[name=image]")).toBeTruthy();
    expect(await focused()).toBe("name");
    await p.screenshot({ path: "/tmp/forms-create-errors.png" });

    // Editing the name clears its problem only.
    await dialog.locator("input[name=name]").fill(name("ok"));
    expect(await dialog.locator("input[name=name]").getAttribute("aria-invalid")).toBeNull();
    expect(await problemOf("input[name=name]")).toBeNull();
    expect(await dialog.locator("input[name=image]").getAttribute("aria-invalid")).toBe("true");

    // What only the manager checks (a '..' in the mount path, one host port twice) comes back as
    // field violations, all at once, on their fields; focus goes to the first in the form.
    await dialog.locator("input[name=image]").fill(TEST_IMAGE);
    await dialog.locator("input[name=dataMountPath]").fill("/data/../etc");
    for (let i = 1; i <= 2; i++) {
      await dialog.getByRole("button", { name: "Add port" }).click();
      await dialog.getByLabel(`Host port ${i}`).fill("9000");
    }
    const creates: string[] = [];
    const onRequest = (r: { url(): string }) => void (r.url().includes("/CreateServer") && creates.push(r.url()));
    p.on("request", onRequest);
    await dialog.getByRole("button", { name: "Create server" }).click();
    await dialog.locator("input[name=dataMountPath][aria-invalid=true]").waitFor();
    p.off("request", onRequest);
    expect(creates.length).toBe(1);
    expect(await dialog.getByRole("alert").textContent()).toContain("2 fields need a fix: Data mount path, Host port 2");
    expect(await problemOf("input[name=dataMountPath]")).toContain("without '..'");
    expect(await problemOf('[aria-label="Host port 2"]')).toContain("already used by ports[0]");
    expect(await dialog.getByLabel("Host port 1").getAttribute("aria-invalid")).toBeNull();
    expect(await focused()).toBe("dataMountPath");
    await p.screenshot({ path: "/tmp/forms-manager-errors.png" });
    await dialog.getByRole("button", { name: "Cancel" }).click();
    expect((await manager.servers.listServers({})).servers.filter((s) => s.spec?.name === name("ok"))).toEqual([]);
  });

  it("the command is an argv: an argument with spaces round-trips through create and the spec editor exactly", async () => {
    const p = page();
    const argv = ["sh", "-c", `echo "hello  world" 'x y'; exec sleep 100000`];
    await p.getByRole("button", { name: "New server" }).click();
    const dialog = p.getByTestId("create-server");
    await dialog.locator("input[name=name]").fill(name("argv"));
    await dialog.locator("input[name=image]").fill(TEST_IMAGE);
    await dialog.locator("select[name=desiredState]").selectOption({ label: "stopped" });
    await dialog.getByRole("button", { name: "Add argument" }).click();
    for (const [i, arg] of argv.entries()) {
      if (i > 0) await dialog.getByLabel(`Argument ${i}`, { exact: true }).press("Enter");
      await dialog.getByLabel(`Argument ${i + 1}`, { exact: true }).fill(arg);
    }
    await dialog.getByRole("button", { name: "Create server" }).click();
    await dialog.waitFor({ state: "detached" });
    const s = (await manager.servers.getServer({ id: name("argv") })).server!;
    created.push(s.id);
    expect(s.spec!.command).toEqual(argv);

    // The editor shows it row by row, and saving it as shown changes nothing of it.
    const drawer = p.getByTestId("server-drawer");
    await drawer.getByRole("tab", { name: "Edit spec" }).click();
    const rows = drawer.locator("textarea[name^='command.']");
    expect(await rows.count()).toBe(3);
    expect(await Promise.all([0, 1, 2].map((i) => rows.nth(i).inputValue()))).toEqual(argv);
    await drawer.locator("textarea[name=env]").fill("A=1");
    await drawer.getByRole("button", { name: "Save spec" }).click();
    await waitFor("saved", async () => (await manager.servers.getServer({ id: s.id })).server!.spec!.env.A === "1");
    expect((await manager.servers.getServer({ id: s.id })).server!.spec!.command).toEqual(argv);
    await drawer.getByRole("button", { name: "Close details" }).click();
  });

  it("labels: a key the manager refuses is shown on Labels; saved labels find the server in the search", async () => {
    const p = page();
    await p.getByRole("button", { name: "New server" }).click();
    const dialog = p.getByTestId("create-server");
    await dialog.locator("input[name=name]").fill(name("labels"));
    await dialog.locator("input[name=image]").fill(TEST_IMAGE);
    await dialog.locator("select[name=desiredState]").selectOption({ label: "stopped" });
    await dialog.locator("textarea[name=labels]").fill("Tier=prod");
    await dialog.getByRole("button", { name: "Create server" }).click();
    await dialog.locator("textarea[name=labels][aria-invalid=true]").waitFor();
    expect(await problemOf("textarea[name=labels]")).toContain("a label key is 1-63 lowercase letters");
    await dialog.locator("textarea[name=labels]").fill("tier=prod\nexample.com/game=mc");
    await dialog.getByRole("button", { name: "Create server" }).click();
    await dialog.waitFor({ state: "detached" });
    const s = (await manager.servers.getServer({ id: name("labels") })).server!;
    created.push(s.id);
    expect(s.spec!.labels).toEqual({ tier: "prod", "example.com/game": "mc" });
    const drawer = p.getByTestId("server-drawer");
    await drawer.getByRole("tab", { name: "Overview" }).click();
    expect(await drawer.getByTestId("server-labels").innerText()).toBe("example.com/game=mc\ntier=prod");
    await drawer.getByRole("button", { name: "Close details" }).click();
    // The search matches key=value words: this server, not the others of this file.
    const search = p.getByRole("searchbox", { name: "Search servers" });
    await search.fill("tier=prod");
    await waitFor("only the labelled server listed", async () => (await p.locator(".vt-row").count()) === 1 && (await row(p, name("labels")).count()) === 1);
    await search.fill("tier=dev");
    await waitFor("no server listed", async () => (await p.locator(".vt-row").count()) === 0);
    await search.fill("");
  });

  it("delete shows a toast whose Undo restores the server", async () => {
    const p = page();
    const { server } = await manager.servers.createServer({ spec: { name: name("undo"), image: TEST_IMAGE, dataMountPath: "/data", desiredState: DesiredState.STOPPED } });
    created.push(server!.id);
    await row(p, name("undo")).waitFor();
    await row(p, name("undo")).getByRole("button", { name: `More actions for ${name("undo")}` }).click();
    await p.getByRole("menuitem", { name: "Delete" }).click();
    await p.getByRole("dialog", { name: `Delete ${name("undo")}?` }).getByRole("button", { name: "Delete", exact: true }).click();
    const toast = p.locator(".toast", { hasText: `Deleted ${name("undo")}` });
    await toast.waitFor();
    await row(p, name("undo")).waitFor({ state: "detached", timeout: 20_000 });
    expect((await manager.servers.getServer({ id: server!.id })).server!.deleteTime).toBeDefined();
    await p.screenshot({ path: "/tmp/forms-delete-toast.png" });

    await toast.getByRole("button", { name: "Undo" }).click();
    await p.locator(".toast", { hasText: `Restored ${name("undo")}` }).waitFor();
    await row(p, name("undo")).waitFor({ timeout: 20_000 });
    expect((await manager.servers.getServer({ id: server!.id })).server!.deleteTime).toBeUndefined();
  });
});
