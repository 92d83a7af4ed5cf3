/**
 * `node --import tsx bench/charts.ts <results.json> [--out DIR]`: draws a
 * bench run's per-second manager series (event-loop delay and RSS over time,
 * phases shaded) as SVG and PNG into DIR (default docs/bench-charts/, where
 * the charts of the run recorded in docs/benchmarks.md are committed).
 * `npm run bench` calls the same code at its end, writing beside its results.
 */
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { writeChartsFromResults } from "./lib/chart-files.js";
import { REPO_ROOT } from "./lib/processes.js";

const USAGE = `node --import tsx bench/charts.ts <results.json> [--out DIR]

  <results.json>  a file bench/run.ts wrote (bench/results/<timestamp>.json)
  --out DIR       where the SVGs and PNGs go (default docs/bench-charts/)
`;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { out: { type: "string" }, help: { type: "boolean", short: "h", default: false } },
});
if (values.help || positionals.length !== 1) {
  process.stdout.write(USAGE);
  process.exit(values.help ? 0 : 2);
}

const out = resolve(values.out ?? join(REPO_ROOT, "docs", "bench-charts"));
const written = await writeChartsFromResults(resolve(positionals[0]!), out);
if (!written.files.length) {
  process.stderr.write(`charts: ${positionals[0]} has no per-second manager series (a run without the scale suite, or from before the series existed): nothing drawn\n`);
  process.exit(1);
}
for (const f of written.files) process.stdout.write(`${f}\n`);
if (written.pngSkipped) process.stderr.write(`charts: ${written.pngSkipped}\n`);
