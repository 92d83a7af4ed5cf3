/**
 * The manager's event-loop delay, for /metrics and the benchmark: how long
 * work queued on the loop (an RPC, an agent's message, a keepalive) waited
 * because something else held the thread.
 *
 * A `perf_hooks.monitorEventLoopDelay` monitor (a 10 ms libuv timer) is read
 * and reset once per interval (1 s). Each interval becomes:
 * - one observation of `berth_event_loop_delay_seconds`: the interval's
 *   worst delay. The histogram therefore counts seconds by their worst stall
 *   (monotonic, so any scraper at any cadence gets exact per-window counts
 *   from bucket deltas, and several scrapers do not disturb each other);
 * - `berth_event_loop_delay_max_seconds`, `…_p50_seconds`, `…_p99_seconds`:
 *   the last complete interval's max and percentiles (overwritten each
 *   interval, not reset by scrapes).
 *
 * Why a probe besides the monitor: `reset()` forgets the monitor's previous
 * tick, so a stall that starts right after a reset (before the monitor's
 * next tick) is never recorded. Until the monitor has recorded again, a
 * chain of 1 ms timers measures how late it fires, and the interval's max
 * includes that.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from "node:perf_hooks";
import { Gauge, Histogram, type Registry } from "prom-client";

export interface EventLoopDelayOptions {
  /** Length of one interval, ms (default 1000). */
  intervalMs?: number | undefined;
  /** The monitor's sampling timer, ms (default 10). */
  resolutionMs?: number | undefined;
}

/** One interval's figures, seconds. */
export interface EventLoopInterval {
  maxS: number;
  p50S: number;
  p99S: number;
}

export class EventLoopDelay {
  readonly histogram: Histogram;
  private readonly maxGauge: Gauge;
  private readonly p50Gauge: Gauge;
  private readonly p99Gauge: Gauge;
  private readonly intervalMs: number;
  private readonly resolutionMs: number;
  private monitor: IntervalHistogram | undefined;
  private timer: NodeJS.Timeout | undefined;
  private probe: NodeJS.Timeout | undefined;
  /** Worst lateness of the post-reset probe in the current interval, ns. */
  private probeMaxNs = 0;

  constructor(registry: Registry, options: EventLoopDelayOptions = {}) {
    this.intervalMs = options.intervalMs ?? 1000;
    this.resolutionMs = options.resolutionMs ?? 10;
    const registers = [registry];
    this.histogram = new Histogram({
      name: "berth_event_loop_delay_seconds",
      help: "The manager's event-loop delay: one observation per second, the worst delay (monitorEventLoopDelay, 10 ms resolution) in that second.",
      buckets: [0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    this.maxGauge = new Gauge({ name: "berth_event_loop_delay_max_seconds", help: "The worst event-loop delay in the last complete second.", registers });
    this.p50Gauge = new Gauge({ name: "berth_event_loop_delay_p50_seconds", help: "The median event-loop delay in the last complete second.", registers });
    this.p99Gauge = new Gauge({ name: "berth_event_loop_delay_p99_seconds", help: "The 99th percentile of the event-loop delay in the last complete second.", registers });
  }

  /** Starts measuring; one interval's figures every intervalMs. Does not keep the process alive. */
  start(): void {
    if (this.monitor) return;
    this.monitor = monitorEventLoopDelay({ resolution: this.resolutionMs });
    this.monitor.enable();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
  }

  /** Stops the timers and the monitor (manager shutdown). */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.probe) clearTimeout(this.probe);
    this.monitor?.disable();
    this.timer = this.probe = this.monitor = undefined;
  }

  /**
   * Closes the current interval: records its figures and starts the next
   * one. The timer calls it every interval; tests call it directly.
   * Undefined when not started or when nothing was measured yet.
   */
  sample(): EventLoopInterval | undefined {
    const m = this.monitor;
    if (!m) return undefined;
    const counted = m.count > 0;
    const maxNs = Math.max(counted ? m.max : 0, this.probeMaxNs);
    const r = counted || maxNs > 0 ? { maxS: maxNs / 1e9, p50S: counted ? m.percentile(50) / 1e9 : maxNs / 1e9, p99S: counted ? m.percentile(99) / 1e9 : maxNs / 1e9 } : undefined;
    m.reset();
    this.probeMaxNs = 0;
    this.armProbe();
    if (!r) return undefined;
    this.histogram.observe(r.maxS);
    this.maxGauge.set(r.maxS);
    this.p50Gauge.set(r.p50S);
    this.p99Gauge.set(r.p99S);
    return r;
  }

  /** 1 ms timers, each measuring how late it fires, until the monitor records again. */
  private armProbe(): void {
    if (this.probe) clearTimeout(this.probe);
    const armedAt = process.hrtime.bigint();
    this.probe = setTimeout(() => {
      this.probe = undefined;
      this.probeMaxNs = Math.max(this.probeMaxNs, Number(process.hrtime.bigint() - armedAt));
      if (this.monitor && this.monitor.count === 0) this.armProbe();
    }, 1);
    this.probe.unref();
  }
}
