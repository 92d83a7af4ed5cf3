/**
 * The charts of a bench run, from its results JSON: for every per-second
 * manager series (one per store configuration), the event-loop delay (each
 * second's worst, log ms, targets 100 ms and 20 ms) and the RSS (MB, targets
 * 1.0 GB converged and 1.5 GB peak) over time, phases shaded, one line per
 * manager. Pure: chart-files.ts writes them.
 */
import type { Series } from "./report.js";
import type { ChartBand, ChartLine, ChartSpec } from "./svg-chart.js";

/** The parts of bench/results/<timestamp>.json the charts read. */
export interface ResultsForCharts {
  startedAt?: string;
  mode?: string;
  sizes?: Record<string, number | string>;
  series?: Series[];
}

export interface BenchChart {
  /** File name without extension, e.g. `sqlite-event-loop`. */
  name: string;
  spec: ChartSpec;
}

/** The phases a bench run shades; the rest ("setup", "after …" settling) stay white. */
const MEASURED_PHASE = (p: string) => p !== "setup" && !p.startsWith("after ");

/** The event-loop delay and RSS charts of every manager series in a run, in the order of its series. */
export function benchCharts(results: ResultsForCharts): BenchChart[] {
  const charts: BenchChart[] = [];
  for (const s of results.series ?? []) {
    const col = (name: string) => s.columns.findIndex((c) => c.startsWith(name));
    const at = col("unix ms");
    const phase = col("phase");
    const manager = col("manager");
    const loopMax = col("event-loop max ms");
    const rss = col("RSS MB");
    if (at < 0 || phase < 0 || manager < 0 || !s.rows.length) continue;
    const rows = [...s.rows].filter((r) => typeof r[at] === "number").sort((a, b) => (a[at] as number) - (b[at] as number));
    if (!rows.length) continue;
    const t0 = rows[0]![at] as number;
    const sec = (r: (typeof rows)[number]) => ((r[at] as number) - t0) / 1000;
    const bands = phaseBands(rows.map((r) => [sec(r), String(r[phase])]));
    const managers = [...new Set(rows.map((r) => String(r[manager])))].sort((a, b) => Number(a) - Number(b));
    const lines = (c: number): ChartLine[] =>
      managers.map((m) => ({
        label: managers.length > 1 ? `manager ${m}` : "manager",
        points: rows.filter((r) => String(r[manager]) === m).map((r) => [sec(r), typeof r[c] === "number" ? (r[c] as number) : null]),
      }));
    const store = storeLabel(s, results);
    const name = store.replace(/[^A-Za-z0-9._-]+/g, "-");
    const subtitle = [
      `store ${store}`,
      managers.length > 1 ? `${managers.length} managers` : "one manager",
      sizeNote(results.sizes),
      results.mode ? `${results.mode} run` : "",
      results.startedAt ? `started ${results.startedAt.replace("T", " ").replace(/\.\d+Z$/, " UTC")}` : "",
    ]
      .filter(Boolean)
      .join(" · ");
    // What both charts of a store share: the run, the time axis, the phases.
    const common = { subtitle, xLabel: "seconds since the scale suite's first sample", bands };
    if (loopMax >= 0) {
      charts.push({
        name: `${name}-event-loop`,
        spec: {
          ...common,
          title: "Manager event-loop delay: the worst delay of each second",
          yLabel: "event-loop delay, ms (log scale)",
          yScale: "log",
          lines: lines(loopMax),
          targets: [
            { value: 100, label: "target: max ≤ 100 ms" },
            { value: 20, label: "target: p99 of the seconds ≤ 20 ms" },
          ],
          gapLabel: "no /metrics answer that second (stalled or down)",
        },
      });
    }
    if (rss >= 0) {
      charts.push({
        name: `${name}-rss`,
        spec: {
          ...common,
          title: "Manager resident memory (RSS)",
          yLabel: "RSS, MB",
          yScale: "linear",
          lines: lines(rss),
          targets: [
            { value: 1536, label: "target: peak ≤ 1.5 GB (1,536 MB)" },
            { value: 1024, label: "target: converged ≤ 1.0 GB (1,024 MB)" },
          ],
        },
      });
    }
  }
  return charts;
}

/**
 * Consecutive samples of one measured phase as a band from its first sample
 * to one second after its last (each sample stands for the second before
 * the next one).
 */
export function phaseBands(samples: [number, string][]): ChartBand[] {
  const bands: ChartBand[] = [];
  let open: ChartBand | undefined;
  for (const [t, p] of samples) {
    if (open && open.label === p) {
      open.to = Math.max(open.to, t + 1);
      continue;
    }
    open = MEASURED_PHASE(p) ? { label: p, from: t, to: t + 1 } : undefined;
    if (open) bands.push(open);
  }
  return bands;
}

/** `scale:postgres-2` → postgres-2; plain `scale` is the run's only store (sqlite unless --stores named another). */
function storeLabel(s: Series, results: ResultsForCharts): string {
  const fromSuite = /^scale:(.+)$/.exec(s.suite)?.[1];
  if (fromSuite) return fromSuite;
  const stores = results.sizes?.["scale stores"];
  return typeof stores === "string" && stores && !stores.includes(",") ? stores : "sqlite";
}

function sizeNote(sizes: Record<string, number | string> | undefined): string {
  const agents = sizes?.["scale agents"];
  const per = sizes?.["scale servers per agent"];
  if (typeof agents !== "number" || typeof per !== "number") return "";
  return `${agents.toLocaleString("en")} hosts × ${per} servers`;
}
