import { describe, expect, it } from "vitest";
import { benchCharts, phaseBands, type ResultsForCharts } from "./bench-charts.js";
import { chartScales, renderLineChart } from "./svg-chart.js";

const COLUMNS = ["unix ms", "phase", "manager", "event-loop max ms (last second)", "event-loop p99 ms (last second)", "seconds observed (histogram count)", "RSS MB"];
const T0 = Date.parse("2026-12-05T14:00:00Z");

/**
 * Two managers sampled every second through setup, a connect storm, its
 * settling, a mass stop and a restart; manager 1 gives no answer at second 4
 * (a stalled loop). Event-loop max per second: 10 ms, 300 ms in the storm
 * (manager 2: 450 ms), 50 ms in the mass stop; RSS grows to 1,800 MB.
 */
function synthetic(): ResultsForCharts {
  const phases: [string, number][] = [["setup", 2], ["connect storm", 5], ["after connect storm", 2], ["mass stop", 3], ["restart", 3]];
  const rows: (number | string | null)[][] = [];
  let t = 0;
  for (const [phase, n] of phases) {
    for (let i = 0; i < n; i++, t++) {
      for (const m of [1, 2]) {
        const loop = phase === "connect storm" ? (m === 2 ? 450 : 300) : phase === "mass stop" ? 50 : 10;
        const stalled = m === 1 && t === 4;
        rows.push([T0 + t * 1000, phase, m, stalled ? null : loop, stalled ? null : loop / 2, t, 200 + t * 100]);
      }
    }
  }
  // The bench pushes a stalled manager's row when its read returns: out of order.
  rows.reverse();
  return {
    startedAt: new Date(T0).toISOString(),
    mode: "quick",
    sizes: { "scale agents": 500, "scale servers per agent": 20, "scale stores": "postgres-2" },
    series: [{ suite: "scale", name: "managers every second", columns: COLUMNS, rows }],
  };
}

/** `<tag … attr="value" …>` elements of one class, as attribute maps. */
function elements(svg: string, cls: string): Record<string, string>[] {
  return [...svg.matchAll(new RegExp(`<\\w+ class="${cls}"([^>]*)>`, "g"))].map((m) => Object.fromEntries([...m[1]!.matchAll(/([\w-]+)="([^"]*)"/g)].map((a) => [a[1]!, a[2]!])));
}

function texts(svg: string, cls: string): string[] {
  return [...svg.matchAll(new RegExp(`<text class="${cls}"[^>]*>([^<]*)</text>`, "g"))].map((m) => m[1]!);
}

describe("bench charts: a run's per-second series as SVG", () => {
  it("draws an event-loop chart and an RSS chart per store, named after the store", () => {
    const charts = benchCharts(synthetic());
    expect(charts.map((c) => c.name)).toEqual(["postgres-2-event-loop", "postgres-2-rss"]);
    const multi = benchCharts({ series: [{ ...synthetic().series![0]!, suite: "scale:sqlite" }, { ...synthetic().series![0]!, suite: "scale:postgres-2" }] });
    expect(multi.map((c) => c.name)).toEqual(["sqlite-event-loop", "sqlite-rss", "postgres-2-event-loop", "postgres-2-rss"]);
    expect(benchCharts({ series: [] })).toEqual([]);
    expect(benchCharts({})).toEqual([]);
  });

  it("event loop: one line per manager, the 100 ms and 20 ms targets where the axis puts them, a log axis covering the worst second", () => {
    const chart = benchCharts(synthetic()).find((c) => c.name.endsWith("event-loop"))!;
    const svg = renderLineChart(chart.spec);
    const s = chartScales(chart.spec);

    const lines = elements(svg, "line");
    expect(lines.map((l) => l["data-label"])).toEqual(["manager 1", "manager 2"]);
    // Manager 1 has a stalled second: its line breaks there (two runs), and the gap is marked.
    expect(lines[0]!.d!.match(/M/g)).toHaveLength(2);
    expect(lines[1]!.d!.match(/M/g)).toHaveLength(1);
    expect(elements(svg, "gap")).toHaveLength(1);
    expect(svg).toContain("no /metrics answer that second");

    // Log y from 1 ms (the decade below the smallest value, at most 1) to 1,000 ms (above the 450 ms second).
    expect(s.y).toMatchObject({ log: true, min: 1, max: 1000, ticks: [1, 10, 100, 1000] });
    expect(texts(svg, "y-tick")).toEqual(["1", "10", "100", "1,000"]);
    const targets = elements(svg, "target");
    expect(targets.map((t) => Number(t["data-value"]))).toEqual([100, 20]);
    const top = s.plot.top;
    const bottom = s.plot.bottom;
    // 100 ms is two thirds of the way up a 1–1,000 log axis; 20 ms at log10(20)/3.
    expect(Number(targets[0]!.y1)).toBeCloseTo(bottom - ((bottom - top) * 2) / 3, 0);
    expect(Number(targets[1]!.y1)).toBeCloseTo(bottom - ((bottom - top) * Math.log10(20)) / 3, 0);
    // Manager 2's worst point (450 ms) is drawn at the y of 450 ms.
    const ys = [...lines[1]!.d!.matchAll(/[ML][\d.]+ ([\d.]+)/g)].map((m) => Number(m[1]));
    expect(Math.min(...ys)).toBeCloseTo(s.yOf(450), 0);
    expect(s.yOf(450)).toBeCloseTo(bottom - ((bottom - top) * Math.log10(450)) / 3, 0);
  });

  it("shades and labels the measured phases, not setup or the settling after a phase", () => {
    const chart = benchCharts(synthetic()).find((c) => c.name.endsWith("event-loop"))!;
    const svg = renderLineChart(chart.spec);
    expect(texts(svg, "phase-label")).toEqual(["connect storm", "mass stop", "restart"]);
    // x in seconds since the first sample; a phase's band runs to one second after its last sample.
    expect(chart.spec.bands).toEqual([
      { label: "connect storm", from: 2, to: 7 },
      { label: "mass stop", from: 9, to: 12 },
      { label: "restart", from: 12, to: 15 },
    ]);
    const s = chartScales(chart.spec);
    // 0–15 s of data: ticks every 2 s (about ten), the axis ends on the tick after 15.
    expect(s.x).toEqual({ min: 0, max: 16, ticks: [0, 2, 4, 6, 8, 10, 12, 14, 16] });
    expect(texts(svg, "x-tick")).toEqual(["0", "2", "4", "6", "8", "10", "12", "14", "16"]);
    const storm = elements(svg, "phase").find((b) => b["data-phase"] === "connect storm")!;
    expect(Number(storm.x)).toBeCloseTo(s.xOf(2), 0);
    expect(Number(storm.width)).toBeCloseTo(s.xOf(7) - s.xOf(2), 0);
  });

  it("RSS: linear MB axis from 0 above the highest value, the 1.0 GB and 1.5 GB targets", () => {
    const chart = benchCharts(synthetic()).find((c) => c.name.endsWith("rss"))!;
    const svg = renderLineChart(chart.spec);
    const s = chartScales(chart.spec);
    expect(s.y.log).toBe(false);
    expect(s.y.min).toBe(0);
    // The last sample is 200 + 14 × 100 = 1,600 MB; the axis ends on a tick above it.
    expect(s.y.max).toBeGreaterThanOrEqual(1600);
    expect(s.y.max).toBeLessThanOrEqual(2000);
    expect(s.y.ticks.at(-1)).toBe(s.y.max);
    const targets = elements(svg, "target");
    expect(targets.map((t) => Number(t["data-value"]))).toEqual([1536, 1024]);
    expect(Number(targets[1]!.y1)).toBeCloseTo(s.plot.bottom - ((s.plot.bottom - s.plot.top) * 1024) / s.y.max, 0);
    expect(elements(svg, "line").map((l) => l["data-label"])).toEqual(["manager 1", "manager 2"]);
    expect(elements(svg, "gap")).toHaveLength(0);
    expect(svg).toContain("RSS, MB");
    expect(texts(svg, "legend-label")).toEqual(["manager 1", "manager 2", "target: peak ≤ 1.5 GB (1,536 MB)", "target: converged ≤ 1.0 GB (1,024 MB)"]);
  });

  it("one manager: a single line called manager; labels are escaped", () => {
    const one = synthetic();
    one.series![0]!.rows = one.series![0]!.rows.filter((r) => r[2] === 1);
    one.series![0]!.rows[0]![1] = "a <b> & \"c\"";
    const chart = benchCharts(one).find((c) => c.name.endsWith("rss"))!;
    const svg = renderLineChart(chart.spec);
    expect(elements(svg, "line").map((l) => l["data-label"])).toEqual(["manager"]);
    expect(svg).toContain("a &lt;b&gt; &amp; &quot;c&quot;");
    expect(svg).not.toContain("<b>");
  });

  it("phaseBands joins consecutive samples of one phase and leaves setup and settling out", () => {
    expect(phaseBands([[0, "setup"], [1, "event churn"], [2, "event churn"], [3, "after event churn"], [4, "event churn"]])).toEqual([
      { label: "event churn", from: 1, to: 3 },
      { label: "event churn", from: 4, to: 5 },
    ]);
  });
});
