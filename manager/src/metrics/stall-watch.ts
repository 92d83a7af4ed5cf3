/**
 * Logs each time something held the event loop for at least `thresholdMs`,
 * with when: the berth_event_loop_delay_* metrics say how bad the worst
 * second was, this says which moment, so it can be matched with a CPU
 * profile (`node --cpu-prof` samples carry the same monotonic clock, in µs:
 * `bench/profile-summary.ts <profile> --stalls-log manager.log` prints what
 * ran in each logged stall).
 *
 * A timer fires every `tickMs`; a firing that comes `thresholdMs` or more
 * after the one before it (less the tick) is a stall. At most one line per
 * `logEveryMs`: stalls in between are counted into the next line, so a
 * manager that is overloaded for minutes writes a line a second, not a flood.
 */
import type { Logger } from "../log.js";

export interface StallWatchOptions {
  thresholdMs?: number;
  tickMs?: number;
  logEveryMs?: number;
}

/** Stalls this long are logged (the manager's target for the worst delay is 100 ms). */
export const STALL_LOG_MS = 250;

export class StallWatch {
  private timer: NodeJS.Timeout | undefined;
  private last = 0n;
  private lastLoggedAt = -Infinity;
  /** Stalls seen since the last line, and the longest of them. */
  private unlogged = 0;
  private readonly thresholdMs: number;
  private readonly tickMs: number;
  private readonly logEveryMs: number;

  constructor(
    private readonly log: Pick<Logger, "warn">,
    opts: StallWatchOptions = {},
  ) {
    this.thresholdMs = opts.thresholdMs ?? STALL_LOG_MS;
    this.tickMs = opts.tickMs ?? 10;
    this.logEveryMs = opts.logEveryMs ?? 1000;
  }

  /** Starts watching; does not keep the process alive. */
  start(): void {
    if (this.timer) return;
    this.last = process.hrtime.bigint();
    this.timer = setInterval(() => this.tick(), this.tickMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private tick(): void {
    const now = process.hrtime.bigint();
    const blockedMs = Number(now - this.last) / 1e6 - this.tickMs;
    const startUs = Number(this.last / 1000n);
    this.last = now;
    if (blockedMs < this.thresholdMs) return;
    this.unlogged++;
    const at = Number(now / 1_000_000n);
    if (at - this.lastLoggedAt < this.logEveryMs) return;
    this.log.warn(
      { blockedMs: Math.round(blockedMs), startUs, endUs: Number(now / 1000n), stalls: this.unlogged },
      `the event loop was blocked for ${Math.round(blockedMs)} ms (nothing else ran meanwhile: API calls, agents' messages and keepalives waited)`,
    );
    this.lastLoggedAt = at;
    this.unlogged = 0;
  }
}
