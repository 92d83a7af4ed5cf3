import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import type { DataRoot } from "./data-root.js";

/**
 * The sizer's budget: directory entries (readdir calls and the entries they
 * return, each file lstat'ed) per second, over all directories together.
 */
export const SIZE_ENTRIES_PER_SECOND = 5_000;
/** The budget is spent in ticks of this length: at most a tick's share, then a pause. */
const TICK_MS = 100;
/** Every directory is measured again once its size is this old. */
export const SIZE_REFRESH_MS = 5 * 60_000;
/** A dirty directory (its container stopped, a command ran) waits at least this long after its last measurement. */
export const SIZE_MIN_REMEASURE_MS = 60_000;
/** How long the sizer waits when no directory is due. */
const IDLE_MS = 5_000;

export interface DirSizesOptions {
  entriesPerSecond?: number;
  refreshMs?: number;
  minRemeasureMs?: number;
  idleMs?: number;
  now?: () => number;
  /** Waits `ms`, rejecting when `signal` aborts (tests count the pauses). */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

/**
 * Measures the server data directories in the background, one at a time,
 * within SIZE_ENTRIES_PER_SECOND, so the periodic inventory can report each
 * directory's last known size (DataRoot.checkCached) instead of walking it.
 *
 * Order: directories never measured, then dirty ones (markDirty) measured at
 * least minRemeasureMs ago, then the one measured longest ago once it is
 * refreshMs old. Commands still walk on demand (DataRoot.check), which
 * refreshes the cache too. Directories that are gone are forgotten.
 */
export class DirSizes {
  private readonly abort = new AbortController();
  private readonly dirty = new Set<string>();
  /** Directories whose last measurement failed: when, and the message logged for it. */
  private readonly failed = new Map<string, { at: number; message: string }>();
  private loop: Promise<void> | undefined;
  /** The root's listing failed and that was logged (once, until it lists again). */
  private rootWarned = false;
  private readonly perTick: number;
  /** Entries spent in the current tick. */
  private spent = 0;
  private readonly refreshMs: number;
  private readonly minRemeasureMs: number;
  private readonly idleMs: number;
  private readonly now: () => number;
  private readonly sleep: (ms: number, signal: AbortSignal) => Promise<void>;

  constructor(
    private readonly root: DataRoot,
    private readonly log: Logger,
    opts: DirSizesOptions = {},
  ) {
    this.perTick = Math.max(1, Math.floor(((opts.entriesPerSecond ?? SIZE_ENTRIES_PER_SECOND) * TICK_MS) / 1000));
    this.refreshMs = opts.refreshMs ?? SIZE_REFRESH_MS;
    this.minRemeasureMs = opts.minRemeasureMs ?? SIZE_MIN_REMEASURE_MS;
    this.idleMs = opts.idleMs ?? IDLE_MS;
    this.now = opts.now ?? Date.now;
    this.sleep = opts.sleep ?? ((ms, signal) => sleep(ms, undefined, { signal }));
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Stops the loop (an ongoing walk stops at its next pause); resolves once it has. */
  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
  }

  /** The directory changed more than its age says (its container stopped, a command ran on it): measure it sooner. */
  markDirty(serverId: string): void {
    if (this.root.isServerId(serverId)) this.dirty.add(serverId);
  }

  /**
   * The directory to measure next, or undefined if none is due. Lists the
   * root (one readdir) and forgets whatever is no longer in it.
   */
  async next(): Promise<string | undefined> {
    const names = await this.root.list();
    await this.pace(1 + names.length);
    const ids = new Set(names.filter((d) => this.root.isServerId(d)));
    this.root.forgetSizesExcept(ids);
    for (const id of this.dirty) if (!ids.has(id)) this.dirty.delete(id);
    for (const id of this.failed.keys()) if (!ids.has(id)) this.failed.delete(id);
    const now = this.now();
    let best: { id: string; rank: number; last: number } | undefined;
    for (const id of [...ids].sort()) {
      // A failed attempt counts as a measurement: the directory waits like the others.
      const last = Math.max(this.root.measuredAt(id) ?? -Infinity, this.failed.get(id)?.at ?? -Infinity);
      const rank = this.rank(id, now - last);
      if (rank === undefined) continue;
      if (!best || rank < best.rank || (rank === best.rank && last < best.last)) best = { id, rank, last };
    }
    return best?.id;
  }

  /** 0 never measured, 1 dirty, 2 due for its refresh; undefined: not due. */
  private rank(id: string, age: number): number | undefined {
    if (age === Infinity) return 0;
    if (this.dirty.has(id) && age >= this.minRemeasureMs) return 1;
    if (age >= this.refreshMs) return 2;
    return undefined;
  }

  /** Measures the next due directory within the budget; false if none was due. */
  async measureNext(): Promise<boolean> {
    const id = await this.next();
    if (id === undefined) return false;
    this.dirty.delete(id);
    try {
      await this.root.check(id, (n) => this.pace(n));
      this.failed.delete(id);
    } catch (err) {
      if (this.abort.signal.aborted) throw err;
      // Skipped until it is due again; logged once per message, not at every retry.
      const message = err instanceof Error ? err.message : String(err);
      if (this.failed.get(id)?.message !== message) this.log.warn({ server: id, err: message }, "could not measure data directory; reporting its last known size");
      this.failed.set(id, { at: this.now(), message });
    }
    return true;
  }

  /** Counts `entries` against the current tick; for every tick's share spent, waits a tick. */
  private async pace(entries: number): Promise<void> {
    this.spent += entries;
    while (this.spent >= this.perTick) {
      this.spent -= this.perTick;
      await this.sleep(TICK_MS, this.abort.signal);
    }
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal;
    while (!signal.aborted) {
      try {
        const measured = await this.measureNext();
        this.rootWarned = false;
        if (!measured) await this.sleep(this.idleMs, signal);
      } catch (err) {
        if (signal.aborted) return;
        // Listing the root failed (measureNext handles a directory's own errors): try again later.
        if (!this.rootWarned) this.log.warn({ err: err instanceof Error ? err.message : String(err) }, "could not list the data root to measure its directories; retrying");
        this.rootWarned = true;
        await this.sleep(this.idleMs, signal).catch(() => {});
      }
    }
  }
}
