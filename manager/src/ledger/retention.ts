import type { Logger } from "../log.js";
import type { Retention } from "../store/store.js";

export interface RetentionConfig {
  /** Events older than this are pruned (default 30 days). */
  maxAgeMs: number;
  /** At most this many of the newest events are kept (default 1,000,000). */
  maxRows: number;
  /** Rows deleted per step: small, so a step never holds the database for long. */
  batchSize: number;
  /** Pause between steps once nothing is left to prune. */
  intervalMs: number;
  /** Finished commands older than this are pruned, except each server's latest (default 7 days). */
  commandMaxAgeMs: number;
  /** Enrollment tokens used or expired longer ago than this are pruned (default 1 day). */
  enrollmentTokenMaxAgeMs: number;
}

export const DEFAULT_RETENTION: RetentionConfig = {
  maxAgeMs: 30 * 24 * 3600_000,
  maxRows: 1_000_000,
  batchSize: 1000,
  intervalMs: 60_000,
  commandMaxAgeMs: 7 * 24 * 3600_000,
  enrollmentTokenMaxAgeMs: 24 * 3600_000,
};

/** Pause between steps while a backlog is being drained: lets the reconciler and API run in between. */
const DRAIN_PAUSE_MS = 20;

/**
 * Prunes the event ledger by age and by count, finished commands and spent
 * enrollment tokens by age, in small batches on a timer. Each step is a few
 * bounded deletions (a few milliseconds for 1,000 rows); a large backlog (a
 * lowered limit, a long-stopped manager) is drained one step at a time with
 * pauses in between, never in one long transaction. One step at a time: the
 * next is scheduled only once the last has finished.
 */
export class EventRetention {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly store: Retention,
    private readonly config: RetentionConfig,
    private readonly log?: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  /** One step: at most `batchSize` rows, the oldest first. Resolves with how many were deleted. */
  async pruneOnce(): Promise<number> {
    const { batchSize, maxAgeMs, maxRows } = this.config;
    const now = this.now();
    let deleted = await this.store.pruneEventsOlderThan(now - maxAgeMs, batchSize);
    if (deleted < batchSize) deleted += await this.store.pruneEventsBeyondCount(maxRows, batchSize - deleted);
    if (deleted < batchSize) deleted += await this.store.pruneFinishedCommands(now - this.config.commandMaxAgeMs, batchSize - deleted);
    if (deleted < batchSize) deleted += await this.store.pruneEnrollmentTokens(now - this.config.enrollmentTokenMaxAgeMs, batchSize - deleted);
    return deleted;
  }

  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => this.tick(), delayMs);
    this.timer.unref();
  }

  private tick(): void {
    this.timer = undefined;
    this.pruneOnce().then(
      (deleted) => {
        if (deleted > 0) this.log?.debug({ deleted }, "retention pruned old events, commands and enrollment tokens");
        this.schedule(deleted >= this.config.batchSize ? DRAIN_PAUSE_MS : this.config.intervalMs);
      },
      (err: unknown) => {
        this.log?.warn({ err }, "event retention step failed; retrying later");
        this.schedule(this.config.intervalMs);
      },
    );
  }
}
