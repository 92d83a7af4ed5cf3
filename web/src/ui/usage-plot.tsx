/**
 * A time chart drawn by uPlot (a canvas): a few lines over a fixed window, a
 * dashed limit line, axes in the theme's colours, and a readout of the
 * values under the pointer. Loaded lazily (usage-view.tsx) so the main bundle
 * does not carry it. The canvas says nothing to a screen reader: the figure
 * around it names the chart and captions its latest values in words.
 */
import { useEffect, useRef, useState } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { formatTime } from "./format.js";
import { followWidth } from "./plot-size.js";

export interface UsagePlotProps {
  /** x in seconds, then one list per line (null: nothing measured). */
  data: [number[], ...(number | null)[][]];
  lines: readonly { label: string; tone: "accent" | "ok" }[];
  /** The window, ms. */
  t0: number;
  t1: number;
  yMax: number;
  yText: (v: number) => string;
  limit?: number | undefined;
  warn?: boolean;
  height?: number;
}

const DARK = "(prefers-color-scheme: dark)";

/** The theme's colours, read from the page's custom properties. */
function palette() {
  const css = getComputedStyle(document.documentElement);
  const v = (name: string) => css.getPropertyValue(name).trim();
  return { accent: v("--accent"), ok: v("--ok-fg"), warn: v("--warn-fg"), muted: v("--muted"), border: v("--border"), text: v("--text") };
}

export function UsagePlot(p: UsagePlotProps) {
  const host = useRef<HTMLDivElement>(null);
  const readout = useRef<HTMLSpanElement>(null);
  const plot = useRef<uPlot | null>(null);
  // The latest props, read by the chart's scales and hooks (made once per shape and scheme).
  const latest = useRef(p);
  latest.current = p;
  const [dark, setDark] = useState(() => window.matchMedia(DARK).matches);
  useEffect(() => {
    const m = window.matchMedia(DARK);
    const on = () => setDark(m.matches);
    m.addEventListener("change", on);
    return () => m.removeEventListener("change", on);
  }, []);

  const shape = `${p.lines.map((l) => `${l.label}:${l.tone}`).join(",")}|${p.warn ? "warn" : ""}|${dark ? "dark" : "light"}`;
  useEffect(() => {
    const el = host.current!;
    const c = palette();
    const font = "11px system-ui, sans-serif";
    const axis = { stroke: c.muted, font, grid: { stroke: c.border, width: 1 }, ticks: { stroke: c.border, width: 1, size: 4 } };
    const lineColour = (tone: "accent" | "ok", i: number) => (i === 0 && latest.current.warn ? c.warn : tone === "ok" ? c.ok : c.accent);
    const u = new uPlot(
      {
        width: Math.max(120, el.clientWidth),
        height: latest.current.height ?? 130,
        padding: [10, 10, 0, 0],
        legend: { show: false },
        cursor: { drag: { x: false, y: false }, points: { size: 6 } },
        scales: {
          x: { time: true, range: () => [latest.current.t0 / 1000, latest.current.t1 / 1000] },
          y: { range: () => [0, latest.current.yMax] },
        },
        axes: [
          // Times of day, "17:30" (uPlot's default adds a date line below that the axis has no room for).
          { ...axis, size: 28, values: (_u, vals) => vals.map((v) => formatTime(v * 1000).slice(11, 16)) },
          // Quarters of the scale: its top is a round figure (niceMax), so are they (25 %, 256 KiB).
          { ...axis, size: 66, splits: () => [0, 0.25, 0.5, 0.75, 1].map((f) => f * latest.current.yMax), values: (_u, vals) => vals.map((v) => latest.current.yText(v)) },
        ],
        series: [{}, ...latest.current.lines.map((l, i) => ({ label: l.label, stroke: lineColour(l.tone, i), width: 1.75, spanGaps: false, points: { show: false } }))],
        hooks: {
          draw: [
            (u) => {
              const limit = latest.current.limit;
              if (limit === undefined) return;
              const y = Math.round(u.valToPos(Math.min(limit, latest.current.yMax), "y", true));
              const ctx = u.ctx;
              ctx.save();
              ctx.strokeStyle = c.warn;
              ctx.lineWidth = 1.5 * devicePixelRatio;
              ctx.setLineDash([5 * devicePixelRatio, 4 * devicePixelRatio]);
              ctx.beginPath();
              ctx.moveTo(u.bbox.left, y);
              ctx.lineTo(u.bbox.left + u.bbox.width, y);
              ctx.stroke();
              ctx.restore();
            },
          ],
          setCursor: [
            (u) => {
              const i = u.cursor.idx;
              const out = readout.current;
              if (!out) return;
              const x = i === null || i === undefined ? undefined : u.data[0][i];
              if (x === undefined) {
                out.textContent = "";
                return;
              }
              const parts = latest.current.lines.map((l, k) => {
                const v = u.data[k + 1]?.[i!];
                return `${l.label} ${v === null || v === undefined ? "—" : latest.current.yText(v)}`;
              });
              out.textContent = `${formatTime(x * 1000).slice(11)} · ${parts.join(" · ")}`;
            },
          ],
        },
      },
      latest.current.data,
      el,
    );
    plot.current = u;
    const unfollow = followWidth(u, el, 120);
    return () => {
      unfollow();
      u.destroy();
      plot.current = null;
    };
    // Made again only when the lines, the warning or the scheme change; new data goes through setData below.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [shape]);

  useEffect(() => {
    plot.current?.setData(p.data);
  }, [p.data, p.t0, p.t1, p.yMax, p.limit]);

  return (
    <div className="usage-plot">
      <div ref={host} className="usage-canvas" data-testid="usage-canvas" />
      <span className="usage-readout small" ref={readout} aria-hidden="true" />
    </div>
  );
}
