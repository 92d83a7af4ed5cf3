/**
 * An Aggregate answer shaped for the Explore chart and the table under it:
 * the groups' names (their key values joined; an empty value, a record whose
 * expression failed, shown as "(none)"), at most MAX_SERIES lines (the
 * largest groups; the rest summed as one "other" line), the x axis in
 * seconds, and the rows of the numbers table. Pure.
 */
import type { AggregateResponse } from "@berth/proto/berth/v1/query_pb.js";

/** The most lines drawn; more groups are summed into "other". */
export const MAX_SERIES = 8;

export interface ChartSeries {
  label: string;
  counts: number[];
  total: number;
}

export interface ChartData {
  /** Bucket starts, seconds since the epoch. */
  x: number[];
  /** Bucket width, seconds (0: one bucket). */
  interval: number;
  series: ChartSeries[];
  /** Groups summed into the last series ("other"), and groups the manager did not return. */
  folded: number;
  omitted: number;
  /** Every group (not folded), largest first: the table. */
  rows: ChartSeries[];
  matched: number;
  scanned: number;
}

/**
 * A group's name from its key values: "STOPPED · web-1"; one group without
 * grouping: "all". `nameOf` names a value the dashboard knows (a server's or
 * host's id, as `event.server_id` gives it) by its name.
 */
export function groupLabel(key: readonly string[], nameOf?: (value: string) => string | undefined): string {
  if (key.length === 0) return "all";
  return key.map((k) => (k === "" ? "(none)" : (nameOf?.(k) ?? k))).join(" · ");
}

const toSeconds = (t: { seconds: bigint; nanos: number } | undefined) => (t ? Number(t.seconds) + t.nanos / 1e9 : 0);

export function chartData(
  res: Pick<AggregateResponse, "bucketStarts" | "interval" | "groups" | "groupsOmitted" | "matched" | "scanned">,
  maxSeries = MAX_SERIES,
  nameOf?: (value: string) => string | undefined,
): ChartData {
  const x = res.bucketStarts.map(toSeconds);
  const n = x.length;
  const fit = (counts: readonly bigint[]) => Array.from({ length: n }, (_, i) => Number(counts[i] ?? 0n));
  // Largest first (the manager's order, kept when it is already so), then by name.
  const rows = res.groups
    .map((g) => ({ label: groupLabel(g.key, nameOf), counts: fit(g.counts), total: Number(g.total) }))
    .sort((a, b) => b.total - a.total || a.label.localeCompare(b.label));
  let series = rows;
  let folded = 0;
  if (rows.length > maxSeries) {
    const kept = rows.slice(0, maxSeries - 1);
    const rest = rows.slice(maxSeries - 1);
    folded = rest.length;
    const counts = Array.from({ length: n }, (_, i) => rest.reduce((s, r) => s + (r.counts[i] ?? 0), 0));
    series = [...kept, { label: `other (${rest.length} groups)`, counts, total: rest.reduce((s, r) => s + r.total, 0) }];
  }
  return { x, interval: toSeconds(res.interval), series, folded, omitted: res.groupsOmitted, rows, matched: Number(res.matched), scanned: Number(res.scanned) };
}

/** The per-bucket sums across groups (a panel's sparkline). */
export function bucketTotals(d: Pick<ChartData, "x" | "rows">): number[] {
  return d.x.map((_, i) => d.rows.reduce((s, r) => s + (r.counts[i] ?? 0), 0));
}

/** A round top for the y axis at or above `max` (1, 2, 5 × 10ⁿ; at least 1). */
export function niceCeiling(max: number): number {
  if (max <= 1) return 1;
  const p = 10 ** Math.floor(Math.log10(max));
  for (const m of [1, 2, 5, 10]) if (m * p >= max) return m * p;
  return 10 * p;
}

/** The points of an SVG polyline of `values` in a w × h box (y down), for a sparkline. */
export function sparkPoints(values: readonly number[], w: number, h: number): string {
  if (values.length === 0) return "";
  const top = Math.max(1, ...values);
  const step = values.length > 1 ? w / (values.length - 1) : 0;
  return values.map((v, i) => `${Math.round(i * step * 10) / 10},${Math.round((h - (v / top) * h) * 10) / 10}`).join(" ");
}
