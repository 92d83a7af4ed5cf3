/**
 * Aggregate's counts over time drawn by uPlot: one line per group (colours.ts),
 * a y axis from 0 to a round top, and a readout of the values under the
 * pointer. Loaded lazily (explore-chart.tsx). The canvas says nothing to a
 * screen reader: the legend and the table under it do.
 */
import { useEffect, useRef, useState } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { formatTime } from "../ui/format.js";
import { niceCeiling, type ChartData } from "./chart-data.js";
import { seriesColour } from "./colours.js";
import { followWidth } from "../ui/plot-size.js";

const DARK = "(prefers-color-scheme: dark)";

function palette() {
  const css = getComputedStyle(document.documentElement);
  const v = (name: string) => css.getPropertyValue(name).trim();
  return { muted: v("--muted"), border: v("--border") };
}

export function ExplorePlot({ data, height = 220 }: { data: ChartData; height?: number }) {
  const host = useRef<HTMLDivElement>(null);
  const readout = useRef<HTMLSpanElement>(null);
  const plot = useRef<uPlot | null>(null);
  const latest = useRef(data);
  latest.current = data;
  const [dark, setDark] = useState(() => window.matchMedia(DARK).matches);
  useEffect(() => {
    const m = window.matchMedia(DARK);
    const on = () => setDark(m.matches);
    m.addEventListener("change", on);
    return () => m.removeEventListener("change", on);
  }, []);
  const aligned = (d: ChartData): uPlot.AlignedData => [d.x, ...d.series.map((s) => s.counts)];
  const yMax = () => niceCeiling(Math.max(0, ...latest.current.series.flatMap((s) => s.counts)));
  const shape = `${data.series.map((s) => s.label).join("\n")}|${dark ? "dark" : "light"}`;

  useEffect(() => {
    const el = host.current!;
    const c = palette();
    const font = "11px system-ui, sans-serif";
    const axis = { stroke: c.muted, font, grid: { stroke: c.border, width: 1 }, ticks: { stroke: c.border, width: 1, size: 4 } };
    const d = latest.current;
    const span = (d.x[d.x.length - 1] ?? 0) - (d.x[0] ?? 0);
    const u = new uPlot(
      {
        width: Math.max(160, el.clientWidth),
        height,
        padding: [10, 24, 0, 0],
        legend: { show: false },
        cursor: { drag: { x: false, y: false }, points: { size: 6 } },
        scales: { x: { time: true }, y: { range: () => [0, yMax()] } },
        axes: [
          { ...axis, size: 30, values: (_u, vals) => vals.map((v) => (span > 2 * 86400 ? formatTime(v * 1000).slice(5, 10) : formatTime(v * 1000).slice(11, 16))) },
          { ...axis, size: 44, values: (_u, vals) => vals.map((v) => (Number.isInteger(v) ? String(v) : "")) },
        ],
        series: [{}, ...d.series.map((s, i) => ({ label: s.label, stroke: seriesColour(i), width: 1.75, points: { show: d.x.length <= 60, size: 4 } }))],
        hooks: {
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
              const parts = latest.current.series.map((s, k) => `${s.label} ${u.data[k + 1]?.[i!] ?? 0}`);
              out.textContent = `${formatTime(x * 1000)} · ${parts.join(" · ")}`;
            },
          ],
        },
      },
      aligned(d),
      el,
    );
    plot.current = u;
    const unfollow = followWidth(u, el, 160);
    return () => {
      unfollow();
      u.destroy();
      plot.current = null;
    };
    // Made again only when the groups or the scheme change; new counts go through setData below.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [shape, height]);

  useEffect(() => {
    plot.current?.setData(aligned(data));
  }, [data]);

  return (
    <div className="explore-plot">
      <div ref={host} className="explore-canvas" data-testid="explore-canvas" />
      <span className="usage-readout small" ref={readout} aria-hidden="true" />
    </div>
  );
}
