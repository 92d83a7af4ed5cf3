/**
 * Exponential backoff with full jitter (AWS architecture blog): the delay for
 * attempt n is uniform in [0, min(cap, base * 2^n)], so a fleet of agents that
 * lost the manager at the same moment does not reconnect in lockstep.
 *
 * With `boundByOutage`, the ceiling is also at most the time since the first
 * failure after the last reset (at least `base`): attempts that fail at once
 * (a refused connection fails within a millisecond) no longer run the
 * exponent up, so a manager back after a 1.5 s restart is not met by delays
 * drawn from 8-16 s. The delays still grow about as fast in time (each one is
 * at most the outage so far, which a wait then roughly doubles) and stay
 * jittered, so a long outage ends with the same spread as before.
 */
export class Backoff {
  private attempt = 0;
  private since: number | undefined;

  constructor(
    private readonly baseMs = 500,
    private readonly capMs = 30_000,
    private readonly random: () => number = Math.random,
    private readonly opts: { boundByOutage?: boolean; now?: () => number } = {},
  ) {}

  /** The delay before the next attempt; each call counts as one more failure. */
  next(): number {
    let ceiling = Math.min(this.capMs, this.baseMs * 2 ** Math.min(this.attempt, 30));
    if (this.opts.boundByOutage) {
      const now = (this.opts.now ?? Date.now)();
      this.since ??= now;
      ceiling = Math.min(ceiling, Math.max(this.baseMs, now - this.since));
    }
    this.attempt++;
    return Math.floor(this.random() * ceiling);
  }

  reset(): void {
    this.attempt = 0;
    this.since = undefined;
  }
}
