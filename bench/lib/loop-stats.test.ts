import { describe, expect, it } from "vitest";
import { histogramDelta, parseLoopMetrics, quantileUpperBound, secondsAbove } from "./loop-stats.js";

/** What the manager's /metrics?name=… answers (prom-client's text format). */
function text(counts: number[], last: { max: number; p99: number }): string {
  const le = ["0.005", "0.01", "0.02", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf"];
  return [
    "# HELP berth_event_loop_delay_seconds …",
    "# TYPE berth_event_loop_delay_seconds histogram",
    ...le.map((l, i) => `berth_event_loop_delay_seconds_bucket{le="${l}"} ${counts[i]}`),
    `berth_event_loop_delay_seconds_sum 1.5`,
    `berth_event_loop_delay_seconds_count ${counts[counts.length - 1]}`,
    "# TYPE berth_event_loop_delay_max_seconds gauge",
    `berth_event_loop_delay_max_seconds ${last.max}`,
    `berth_event_loop_delay_p99_seconds ${last.p99}`,
    "",
  ].join("\n");
}

describe("the bench's event-loop figures from /metrics", () => {
  it("parses the histogram and the last second's gauges", () => {
    const r = parseLoopMetrics(text([0, 0, 10, 10, 10, 10, 10, 10, 10, 10, 10], { max: 0.0123, p99: 0.011 }))!;
    expect(r.histogram.count).toBe(10);
    expect(r.histogram.le.at(-1)).toBe(Number.POSITIVE_INFINITY);
    expect(r.lastMaxS).toBe(0.0123);
    expect(r.lastP99S).toBe(0.011);
    expect(parseLoopMetrics("berth_reconcile_queue_depth 0\n")).toBeUndefined();
  });

  it("a phase's figures come from the seconds observed during it", () => {
    const before = parseLoopMetrics(text([0, 0, 10, 10, 10, 10, 10, 10, 10, 10, 10], { max: 0, p99: 0 }))!.histogram;
    // During the phase: 97 quiet seconds, 2 of 30–50 ms, 1 of 0.25–0.5 s.
    const after = parseLoopMetrics(text([0, 0, 107, 109, 109, 109, 110, 110, 110, 110, 110], { max: 0, p99: 0 }))!.histogram;
    const d = histogramDelta(before, after);
    expect(d.count).toBe(100);
    expect(quantileUpperBound(d, 1)).toBe(0.5);
    expect(quantileUpperBound(d, 0.99)).toBe(0.05);
    expect(quantileUpperBound(d, 0.5)).toBe(0.02);
    expect(secondsAbove(d, 0.1)).toBe(1);
    expect(secondsAbove(d, 0.02)).toBe(3);
  });

  it("a restarted manager counts from zero; nothing observed is NaN; beyond the last bucket is +Inf", () => {
    const before = parseLoopMetrics(text([0, 0, 50, 50, 50, 50, 50, 50, 50, 50, 50], { max: 0, p99: 0 }))!.histogram;
    const restarted = parseLoopMetrics(text([0, 0, 3, 3, 3, 3, 3, 3, 3, 3, 4], { max: 0, p99: 0 }))!.histogram;
    const d = histogramDelta(before, restarted);
    expect(d.count).toBe(4);
    expect(quantileUpperBound(d, 1)).toBe(Number.POSITIVE_INFINITY);
    expect(quantileUpperBound(histogramDelta(before, before), 1)).toBeNaN();
  });
});
