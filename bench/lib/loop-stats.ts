/**
 * The manager's event-loop delay as the benchmark reads it from
 * `/metrics?name=…` (docs/metrics.md): `berth_event_loop_delay_seconds`, a
 * histogram with one observation per second (that second's worst delay),
 * and the gauges of the last complete second. Pure parsing and arithmetic;
 * the sampling is in scale-bench.ts.
 */

/** The metrics the benchmark asks for, as a query string (prom-client sets heap used when it collects heap total: total comes first). */
export const LOOP_METRICS_QUERY = ["berth_event_loop_delay_seconds", "berth_event_loop_delay_max_seconds", "berth_event_loop_delay_p99_seconds", "nodejs_heap_size_total_bytes", "nodejs_heap_size_used_bytes"]
  .map((n) => `name=${n}`)
  .join("&");

/** A cumulative histogram: bucket upper bounds (seconds, ascending, last +Inf) and counts at or below each. */
export interface LoopHistogram {
  le: number[];
  cumulative: number[];
  count: number;
}

export interface LoopReading {
  histogram: LoopHistogram;
  /** The last complete second's worst delay and p99, seconds (undefined before the first second). */
  lastMaxS?: number | undefined;
  lastP99S?: number | undefined;
  /** V8 heap in use (live objects and garbage not yet collected), bytes: next to RSS, it tells a leak from a lazy collector. */
  heapUsedBytes?: number | undefined;
}

/** Reads the event-loop figures out of a /metrics text; undefined when the histogram is missing (an older manager). */
export function parseLoopMetrics(text: string): LoopReading | undefined {
  const buckets: [number, number][] = [];
  for (const m of text.matchAll(/^berth_event_loop_delay_seconds_bucket\{le="([^"]+)"\} (\S+)/gm)) {
    buckets.push([m[1] === "+Inf" ? Number.POSITIVE_INFINITY : Number(m[1]), Number(m[2])]);
  }
  const count = /^berth_event_loop_delay_seconds_count (\S+)/m.exec(text);
  if (!buckets.length || !count) return undefined;
  buckets.sort((a, b) => a[0] - b[0]);
  const gauge = (name: string) => {
    const g = new RegExp(`^${name} (\\S+)`, "m").exec(text);
    return g ? Number(g[1]) : undefined;
  };
  return {
    histogram: { le: buckets.map((b) => b[0]), cumulative: buckets.map((b) => b[1]), count: Number(count[1]) },
    lastMaxS: gauge("berth_event_loop_delay_max_seconds"),
    lastP99S: gauge("berth_event_loop_delay_p99_seconds"),
    heapUsedBytes: gauge("nodejs_heap_size_used_bytes"),
  };
}

/**
 * The seconds observed between two readings of one manager. A manager that
 * restarted in between (its count went down) counts from zero.
 */
export function histogramDelta(before: LoopHistogram | undefined, after: LoopHistogram): LoopHistogram {
  if (!before || after.count < before.count || before.le.length !== after.le.length) return after;
  return { le: after.le, cumulative: after.cumulative.map((c, i) => c - before.cumulative[i]!), count: after.count - before.count };
}

/**
 * The upper bound of the bucket holding the q-quantile of the observed
 * seconds' worst delays (q = 1: the worst second), seconds; NaN when no
 * second was observed, +Inf when it is above the largest bucket.
 */
export function quantileUpperBound(h: LoopHistogram, q: number): number {
  if (h.count <= 0) return Number.NaN;
  const rank = Math.ceil(q * h.count);
  const i = h.cumulative.findIndex((c) => c >= rank);
  return i < 0 ? Number.POSITIVE_INFINITY : h.le[i]!;
}

/** Observed seconds whose worst delay was above `s` (exact when `s` is a bucket bound). */
export function secondsAbove(h: LoopHistogram, s: number): number {
  const i = h.le.indexOf(s);
  return i < 0 ? Number.NaN : h.count - h.cumulative[i]!;
}
