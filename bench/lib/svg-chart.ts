/**
 * A line chart as SVG text, no chart library: lines over time, horizontal
 * target lines, shaded and labelled x-ranges (the bench's phases), marks for
 * moments with no value, a legend. Pure, so a test can read what it drew;
 * bench/lib/chart-files.ts turns it into a PNG.
 *
 * Elements a reader (or a test) can find: `<path class="line" data-label>`,
 * `<line class="target" data-value>`, `<rect class="phase" data-phase>` with
 * `<text class="phase-label">`, `<g class="y-axis" data-min data-max>`,
 * `<g class="x-axis" data-min data-max>`.
 */

export interface ChartLine {
  label: string;
  /** [x, y]; y null for "no value at this x" (a gap in the line, a mark on the top edge). */
  points: [number, number | null][];
}

export interface ChartTarget {
  value: number;
  label: string;
}

export interface ChartBand {
  label: string;
  from: number;
  to: number;
}

export interface ChartSpec {
  title: string;
  subtitle?: string;
  xLabel: string;
  yLabel: string;
  yScale: "linear" | "log";
  lines: ChartLine[];
  targets: ChartTarget[];
  bands: ChartBand[];
  /** Legend text for the marks of missing values (none drawn when absent). */
  gapLabel?: string;
  width?: number;
  height?: number;
}

/** The axes a spec gets: ranges, ticks and the mapping from data to pixels. */
export interface ChartScales {
  x: { min: number; max: number; ticks: number[] };
  y: { min: number; max: number; ticks: number[]; log: boolean };
  plot: { left: number; top: number; right: number; bottom: number };
  xOf(x: number): number;
  yOf(y: number): number;
}

/** Data lines: no reds or oranges, which mark the targets. */
const COLORS = ["#1f77b4", "#2ca02c", "#9467bd", "#17becf", "#8c564b", "#e377c2"];
const BAND_FILLS = ["#e8eef7", "#f3ece2", "#e6f2e6", "#f0e6f2"];
const TARGET_COLORS = ["#b00020", "#e07000", "#7a7a00"];
const FONT = "font-family=\"DejaVu Sans, Arial, sans-serif\"";
/** Rough width of a 12 px label character, to keep phase labels apart. */
const CHAR_PX = 7;

/**
 * Axis ranges and pixel mapping. x spans the data and the bands. y covers
 * the values and every target with some headroom: linear from 0 to a nice
 * step above, log from the decade at or below the smallest positive value
 * (at most 1) to the decade at or above the largest.
 */
export function chartScales(spec: ChartSpec): ChartScales {
  const width = spec.width ?? 1200;
  const height = spec.height ?? 560;
  const plot = { left: 80, top: 86, right: width - 30, bottom: height - 96 };
  const xs = [...spec.lines.flatMap((l) => l.points.map((p) => p[0])), ...spec.bands.flatMap((b) => [b.from, b.to])].filter(Number.isFinite);
  let xMin = xs.length ? Math.min(...xs) : 0;
  let xMax = xs.length ? Math.max(...xs) : 1;
  if (xMax <= xMin) xMax = xMin + 1;
  const xStep = niceStep((xMax - xMin) / 10);
  xMin = Math.floor(xMin / xStep) * xStep;
  xMax = Math.ceil(xMax / xStep) * xStep;
  const xTicks = range(xMin, xMax, xStep);

  const ys = [...spec.lines.flatMap((l) => l.points.map((p) => p[1]).filter((v): v is number => v !== null && Number.isFinite(v))), ...spec.targets.map((t) => t.value)];
  let y: ChartScales["y"];
  if (spec.yScale === "log") {
    const pos = ys.filter((v) => v > 0);
    const lo = Math.min(0, Math.floor(Math.log10(pos.length ? Math.min(...pos) : 1)));
    const hi = Math.max(lo + 1, Math.ceil(Math.log10(pos.length ? Math.max(...pos) : 10)));
    y = { min: 10 ** lo, max: 10 ** hi, ticks: range(lo, hi, 1).map((e) => 10 ** e), log: true };
  } else {
    const top = Math.max(1, ...ys) * 1.08;
    const step = niceStep(top / 8);
    const max = Math.ceil(top / step) * step;
    y = { min: 0, max, ticks: range(0, max, step), log: false };
  }
  const xOf = (v: number) => plot.left + ((v - xMin) / (xMax - xMin)) * (plot.right - plot.left);
  const yOf = (v: number) => {
    const f = y.log ? (Math.log10(Math.max(v, y.min)) - Math.log10(y.min)) / (Math.log10(y.max) - Math.log10(y.min)) : (v - y.min) / (y.max - y.min);
    return plot.bottom - Math.min(1, Math.max(0, f)) * (plot.bottom - plot.top);
  };
  return { x: { min: xMin, max: xMax, ticks: xTicks }, y, plot, xOf, yOf };
}

/** The chart as a standalone SVG document. */
export function renderLineChart(spec: ChartSpec): string {
  const width = spec.width ?? 1200;
  const height = spec.height ?? 560;
  const s = chartScales(spec);
  const { plot } = s;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT} font-size="12">`);
  out.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  out.push(`<text x="${plot.left}" y="24" font-size="17" font-weight="bold">${esc(spec.title)}</text>`);
  if (spec.subtitle) out.push(`<text x="${plot.left}" y="44" font-size="12" fill="#555">${esc(spec.subtitle)}</text>`);

  // Phases: shaded ranges, labels staggered into rows so narrow neighbours do not overlap.
  const rowsEnd: number[] = [];
  out.push(`<g class="bands">`);
  spec.bands.forEach((b, i) => {
    const x0 = s.xOf(b.from);
    const x1 = Math.max(s.xOf(b.to), x0 + 1);
    out.push(`<rect class="phase" data-phase="${esc(b.label)}" x="${f(x0)}" y="${plot.top}" width="${f(x1 - x0)}" height="${plot.bottom - plot.top}" fill="${BAND_FILLS[i % BAND_FILLS.length]}"/>`);
    const textW = b.label.length * CHAR_PX;
    const tx = Math.min(Math.max(x0 + 3, plot.left), plot.right - textW);
    let row = rowsEnd.findIndex((end) => end < tx);
    if (row < 0) row = rowsEnd.push(0) - 1;
    rowsEnd[row] = tx + textW + 6;
    const ty = plot.top - 8 - row * 15;
    out.push(`<line x1="${f(x0)}" y1="${ty + 3}" x2="${f(x0)}" y2="${plot.top}" stroke="#999" stroke-width="1"/>`);
    out.push(`<text class="phase-label" x="${f(tx)}" y="${ty}" fill="#333">${esc(b.label)}</text>`);
  });
  out.push(`</g>`);

  // Axes and grid.
  out.push(`<g class="y-axis" data-min="${s.y.min}" data-max="${s.y.max}">`);
  const grid = s.y.log ? s.y.ticks.flatMap((t) => [2, 5].map((m) => t * m)).filter((v) => v < s.y.max) : [];
  for (const g of grid) out.push(`<line x1="${plot.left}" y1="${f(s.yOf(g))}" x2="${plot.right}" y2="${f(s.yOf(g))}" stroke="#eee"/>`);
  for (const t of s.y.ticks) {
    const y = f(s.yOf(t));
    out.push(`<line x1="${plot.left}" y1="${y}" x2="${plot.right}" y2="${y}" stroke="#ddd"/>`);
    out.push(`<text class="y-tick" x="${plot.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${esc(tickLabel(t))}</text>`);
  }
  const midY = (plot.top + plot.bottom) / 2;
  out.push(`<text x="18" y="${f(midY)}" text-anchor="middle" transform="rotate(-90 18 ${f(midY)})">${esc(spec.yLabel)}</text>`);
  out.push(`</g>`);
  out.push(`<g class="x-axis" data-min="${s.x.min}" data-max="${s.x.max}">`);
  for (const t of s.x.ticks) {
    const x = f(s.xOf(t));
    out.push(`<line x1="${x}" y1="${plot.bottom}" x2="${x}" y2="${plot.bottom + 5}" stroke="#333"/>`);
    out.push(`<text class="x-tick" x="${x}" y="${plot.bottom + 18}" text-anchor="middle">${esc(tickLabel(t))}</text>`);
  }
  out.push(`<text x="${f((plot.left + plot.right) / 2)}" y="${plot.bottom + 38}" text-anchor="middle">${esc(spec.xLabel)}</text>`);
  out.push(`</g>`);
  out.push(`<rect x="${plot.left}" y="${plot.top}" width="${plot.right - plot.left}" height="${plot.bottom - plot.top}" fill="none" stroke="#333"/>`);

  // Targets, then the data on top.
  spec.targets.forEach((t, i) => {
    const y = f(s.yOf(t.value));
    const color = TARGET_COLORS[i % TARGET_COLORS.length];
    out.push(`<line class="target" data-value="${t.value}" x1="${plot.left}" y1="${y}" x2="${plot.right}" y2="${y}" stroke="${color}" stroke-width="1.5" stroke-dasharray="8 5"/>`);
    out.push(`<text class="target-label" x="${plot.right - 4}" y="${f(s.yOf(t.value) - 4)}" text-anchor="end" fill="${color}" stroke="#fff" stroke-width="3" paint-order="stroke">${esc(t.label)}</text>`);
  });
  spec.lines.forEach((l, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = [...l.points].sort((a, b) => a[0] - b[0]);
    let d = "";
    let pen = false;
    for (const [x, y] of pts) {
      if (y === null || !Number.isFinite(y)) {
        pen = false;
        continue;
      }
      d += `${pen ? "L" : "M"}${f(s.xOf(x))} ${f(s.yOf(y))}`;
      pen = true;
    }
    out.push(`<path class="line" data-label="${esc(l.label)}" d="${d}" fill="none" stroke="${color}" stroke-width="1.6" stroke-linejoin="round"/>`);
    if (spec.gapLabel) {
      for (const [x, y] of pts) {
        if (y !== null && Number.isFinite(y)) continue;
        out.push(`<line class="gap" x1="${f(s.xOf(x))}" y1="${plot.top}" x2="${f(s.xOf(x))}" y2="${plot.top + 8}" stroke="${color}" stroke-width="2"/>`);
      }
    }
  });

  // Legend under the x-axis label: lines, targets, gap marks.
  const entries: { label: string; color: string; kind: "line" | "target" | "gap" }[] = [
    ...spec.lines.map((l, i) => ({ label: l.label, color: COLORS[i % COLORS.length]!, kind: "line" as const })),
    ...spec.targets.map((t, i) => ({ label: t.label, color: TARGET_COLORS[i % TARGET_COLORS.length]!, kind: "target" as const })),
    ...(spec.gapLabel && spec.lines.some((l) => l.points.some((p) => p[1] === null)) ? [{ label: spec.gapLabel, color: "#555", kind: "gap" as const }] : []),
  ];
  let lx = plot.left;
  let ly = plot.bottom + 64;
  out.push(`<g class="legend">`);
  for (const e of entries) {
    const w = 34 + e.label.length * CHAR_PX + 18;
    if (lx + w > plot.right && lx > plot.left) {
      lx = plot.left;
      ly += 18;
    }
    if (e.kind === "gap") out.push(`<line x1="${lx + 13}" y1="${ly - 8}" x2="${lx + 13}" y2="${ly + 2}" stroke="${e.color}" stroke-width="2"/>`);
    else out.push(`<line x1="${lx}" y1="${ly - 4}" x2="${lx + 26}" y2="${ly - 4}" stroke="${e.color}" stroke-width="${e.kind === "line" ? 2.5 : 1.5}"${e.kind === "target" ? ` stroke-dasharray="8 5"` : ""}/>`);
    out.push(`<text class="legend-label" x="${lx + 32}" y="${ly}">${esc(e.label)}</text>`);
    lx += w;
  }
  out.push(`</g>`);
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}

/** 1, 2 or 5 × a power of ten, at least `raw`. */
function niceStep(raw: number): number {
  if (!(raw > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(raw));
  const m = raw / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

function range(from: number, to: number, step: number): number[] {
  const out: number[] = [];
  const n = Math.round((to - from) / step);
  for (let i = 0; i <= n; i++) out.push(round(from + i * step));
  return out;
}

function round(v: number): number {
  return Math.round(v * 1e6) / 1e6;
}

function tickLabel(v: number): string {
  return Math.abs(v) >= 1000 ? Math.round(v).toLocaleString("en") : String(round(v));
}

function f(v: number): string {
  return v.toFixed(1);
}

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}
