/**
 * Writes a bench run's charts (bench-charts.ts) as SVG, and as PNG through a
 * headless Chromium screenshot of that SVG. Without Chromium the SVGs are
 * still written and the caller hears how to get the PNGs.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { benchCharts, type ResultsForCharts } from "./bench-charts.js";
import { renderLineChart } from "./svg-chart.js";

/** Debian's chromium, as the dashboard tests use it (test/browser/browser.ts). */
export const CHROMIUM = process.env.BERTH_CHROMIUM ?? "/usr/bin/chromium";

export interface WrittenCharts {
  /** Every file written, SVG and PNG. */
  files: string[];
  /** Why no PNG was written, when none was (the SVGs are there). */
  pngSkipped?: string;
}

/** Reads a results JSON and writes its charts into `outDir`; no series: nothing written. */
export async function writeChartsFromResults(resultsPath: string, outDir: string): Promise<WrittenCharts> {
  const results = JSON.parse(readFileSync(resultsPath, "utf8")) as ResultsForCharts;
  return writeCharts(results, outDir);
}

/** Writes `<name>.svg` and `<name>.png` per chart of the run into `outDir`. */
export async function writeCharts(results: ResultsForCharts, outDir: string): Promise<WrittenCharts> {
  const charts = benchCharts(results);
  if (!charts.length) return { files: [] };
  mkdirSync(outDir, { recursive: true });
  const files: string[] = [];
  const svgs = charts.map((c) => {
    const svg = renderLineChart(c.spec);
    const path = join(outDir, `${c.name}.svg`);
    writeFileSync(path, svg);
    files.push(path);
    return { name: c.name, svg, width: c.spec.width ?? 1200, height: c.spec.height ?? 560 };
  });
  if (!existsSync(CHROMIUM)) {
    return { files, pngSkipped: `${CHROMIUM} is missing, so only SVGs were written: install it (apt-get install -y chromium) or set BERTH_CHROMIUM, then run node --import tsx bench/charts.ts <results.json>` };
  }
  // Imported here: a run without Chromium (or without the web workspace's devDependencies) still gets its SVGs.
  let chromium: typeof import("playwright-core").chromium;
  try {
    ({ chromium } = await import("playwright-core"));
  } catch (err) {
    return { files, pngSkipped: `playwright-core did not load (${(err as Error).message}), so only SVGs were written: npm install, then run node --import tsx bench/charts.ts <results.json>` };
  }
  const profile = await mkdtemp(join(tmpdir(), "berth-charts-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
    deviceScaleFactor: 1,
  });
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    for (const c of svgs) {
      await page.setViewportSize({ width: c.width, height: c.height });
      await page.setContent(`<!doctype html><html><body style="margin:0;background:#fff">${c.svg}</body></html>`);
      const path = join(outDir, `${c.name}.png`);
      await page.locator("svg").first().screenshot({ path });
      files.push(path);
    }
  } finally {
    await context.close();
    await rm(profile, { recursive: true, force: true });
  }
  return { files };
}
