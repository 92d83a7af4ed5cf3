/**
 * Browser harness for the dashboard tests: Debian's chromium (apt-installed
 * when missing, as root) driven by playwright-core, a dashboard build that is
 * not older than its sources, sign-in, and screenshots under
 * test-results/screenshots/.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import type Dockerode from "dockerode";
import { removeBerthContainers } from "../harness/docker-engine.js";
import { REPO_ROOT, startAgent, startManager, tempDir, waitForHostOnline, type ManagerProc, type Proc } from "../harness/processes.js";

const run = promisify(execFile);

export const CHROMIUM = "/usr/bin/chromium";
export const SCREENSHOTS = join(REPO_ROOT, "test-results", "screenshots");
const WEB = join(REPO_ROOT, "web");

/** Installs Debian's chromium when /usr/bin/chromium is missing (root only; apt-get update once if needed). */
export async function ensureChromium(): Promise<string> {
  if (existsSync(CHROMIUM)) return CHROMIUM;
  if (process.getuid?.() !== 0) throw new Error(`${CHROMIUM} is missing and this is not root: apt-get install -y chromium`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive", PATH: `${process.env.PATH ?? ""}:/usr/sbin:/usr/bin:/sbin:/bin` };
  const install = () => run("apt-get", ["install", "-y", "--no-install-recommends", "chromium"], { env, maxBuffer: 64 * 1024 * 1024 });
  try {
    await install();
  } catch {
    await run("apt-get", ["update"], { env, maxBuffer: 64 * 1024 * 1024 });
    await install();
  }
  if (!existsSync(CHROMIUM)) throw new Error(`apt-get installed chromium but ${CHROMIUM} is still missing`);
  return CHROMIUM;
}

function newestMtime(path: string): number {
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let max = st.mtimeMs;
  for (const name of readdirSync(path)) max = Math.max(max, newestMtime(join(path, name)));
  return max;
}

/**
 * Builds the dashboard when its build is older than its sources. `npm test`
 * builds it before the tests; the integration projects' global setup calls
 * this before any file runs, so `vitest run <file>` gets a build as new as
 * the sources too.
 */
export async function ensureWebBuilt(): Promise<void> {
  const built = join(WEB, "dist", "index.html");
  const sources = Math.max(newestMtime(join(WEB, "src")), newestMtime(join(WEB, "index.html")), newestMtime(join(WEB, "vite.config.ts")));
  if (existsSync(built) && statSync(built).mtimeMs >= sources) return;
  await run(join(REPO_ROOT, "node_modules", ".bin", "vite"), ["build", "web", "--logLevel", "warn"], { cwd: REPO_ROOT });
}

export interface Browser {
  context: BrowserContext;
  page: Page;
  close(): Promise<void>;
}

/** Chromium headless with a fresh profile, one page at 1600×900. */
export async function launchBrowser(): Promise<Browser> {
  const executablePath = await ensureChromium();
  const profile = await mkdtemp(join(tmpdir(), "berth-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-quic",
    ],
    viewport: { width: 1600, height: 900 },
    deviceScaleFactor: 1,
    colorScheme: "light",
    reducedMotion: "reduce",
  });
  const page = context.pages()[0] ?? (await context.newPage());
  return {
    context,
    page,
    async close() {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/** Opens the dashboard and signs in with `token`; resolves when the top bar shows who it is. */
export async function signIn(page: Page, baseUrl: string, token: string, path = "/servers"): Promise<void> {
  await page.goto(baseUrl + path);
  await page.getByLabel("Token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByTestId("whoami").waitFor();
}

export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const path = join(SCREENSHOTS, `${name}.png`);
  await page.screenshot({ path });
  return path;
}

/** The row of a server in the table, by name. */
export function row(page: Page, name: string) {
  return page.locator(`.vt-row[data-server-name="${name}"]`);
}

/** Waits until a server's row shows `phase` (the watch's truth). */
export async function waitForRowPhase(page: Page, name: string, phase: string, timeout = 30_000): Promise<void> {
  await page.locator(`.vt-row[data-server-name="${name}"][data-phase="${phase}"]`).waitFor({ timeout });
}

/**
 * Waits until `expression` is truthy in the page. Unlike page.waitForFunction with a
 * string, this evaluates through the DevTools protocol, which the dashboard's
 * Content-Security-Policy (no eval) does not block.
 */
export async function waitForExpression(page: Page, expression: string, timeout = 30_000): Promise<void> {
  const deadline = Date.now() + timeout;
  while (!(await page.evaluate(expression))) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for: ${expression}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: { target: unknown[]; failureSummary?: string }[];
}

/**
 * Runs axe-core on the page as it is (injected through the DevTools protocol,
 * which the dashboard's CSP does not block) and returns its serious and
 * critical violations, one line each with the elements they concern.
 */
export async function seriousViolations(page: Page, where: string): Promise<string[]> {
  if (!(await page.evaluate("typeof window.axe !== 'undefined'"))) await page.evaluate(AXE_SOURCE);
  const violations = (await page.evaluate(`window.axe.run(document, { resultTypes: ["violations"] }).then((r) => r.violations)`)) as AxeViolation[];
  return violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${where}: ${v.id} (${v.impact}: ${v.help}) at ${v.nodes.map((n) => JSON.stringify(n.target)).join(", ")}`);
}

/** What a dashboard test file runs against: its temp dir, a manager, an agent, a signed-in browser. */
export interface Dashboard {
  dir: string;
  manager: ManagerProc;
  agent: Proc & { dataRoot: string };
  browser: Browser;
}

/**
 * A fresh dashboard for one test file: a manager and an
 * agent in a temp dir (`prefix`) with the host online, a browser signed in
 * as admin (page errors printed). What started is stopped again when a later
 * step fails.
 */
export async function startDashboard(prefix: string): Promise<Dashboard> {
  const d: Partial<Dashboard> = { dir: await tempDir(prefix) };
  try {
    d.manager = await startManager({ dir: d.dir! });
    d.agent = await startAgent({ manager: d.manager, dir: d.dir! });
    await waitForHostOnline(d.manager);
    d.browser = await launchBrowser();
    d.browser.page.on("pageerror", (e) => console.error(`[page error] ${e.message}`));
    await signIn(d.browser.page, d.manager.url, d.manager.adminToken);
    return d as Dashboard;
  } catch (err) {
    await stopDashboard(d, undefined, []);
    throw err;
  }
}

/** Stops what startDashboard started and removes the containers of `serverIds` (and of the manager) and the temp dir. */
export async function stopDashboard(d: Partial<Dashboard> | undefined, docker: Dockerode | undefined, serverIds: readonly string[]): Promise<void> {
  await d?.browser?.close();
  await d?.agent?.stop();
  await d?.manager?.stop();
  if (docker) await removeBerthContainers(docker, { managerId: d?.manager?.managerId, serverIds: [...serverIds] });
  if (d?.dir) await rm(d.dir, { recursive: true, force: true });
}
