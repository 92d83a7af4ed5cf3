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

/** A due directory: its rank (see DirSizes.rank) and when it was last measured or tried. */
interface Candidate {
  id: string;
  rank: number;
  last: number;
}

/** `a` is measured before `b`: lower rank, then measured longer ago, then by name. */
function before(a: Candidate, b: Candidate): boolean {
  if (a.rank !== b.rank) return a.rank < b.rank;
  if (a.last !== b.last) return a.last < b.last;
  return a.id < b.id;
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
 *
 * Work goes in passes: one listing of the root queues the directories due
 * then, in that order; the next listing comes once they are all measured. A
 * directory created meanwhile waits for the next pass, unless it is marked
 * dirty.
 */
export class DirSizes {
  private readonly abort = new AbortController();
  private readonly dirty = new Set<string>();
  /** Directories whose last measurement failed: when, and the message logged for it. */
  private readonly failed = new Map<string, { at: number; message: string }>();
  private loop: Promise<void> | undefined;
  /** The current pass: the root's listing, due directories in measuring order, and those measured since it began. */
  private pass: { queue: string[]; head: number; taken: Set<string> } | undefined;
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
   * The directory to measure next, or undefined if none is due; asking twice
   * answers the same. Takes the head of the pass's queue, unless a dirty
   * directory ranks before it. Once the queue is spent, lists the root again
   * (one readdir) for the next pass and forgets whatever is no longer in it.
   */
  async next(): Promise<string | undefined> {
    let listed = false;
    if (!this.pass) {
      await this.startPass();
      listed = true;
    }
    for (;;) {
      const id = this.pick(this.now());
      if (id !== undefined) return id;
      if (listed) {
        // Nothing due in a fresh listing: the next call lists again (directories may appear).
        this.pass = undefined;
        return undefined;
      }
      await this.startPass();
      listed = true;
    }
  }

  /**
   * Lists the root once and queues its directories due now, in the order
   * they are measured: never measured, dirty, then due for a refresh (each
   * oldest first, then by name). One listing per pass, not per directory: at
   * 1,000 directories, per-directory listings were 1,000 readdirs of 1,000
   * entries and as many sorts per pass.
   */
  private async startPass(): Promise<void> {
    this.pass = undefined;
    const names = await this.root.list();
    await this.pace(1 + names.length);
    const ids = new Set(names.filter((d) => this.root.isServerId(d)));
    this.root.forgetSizesExcept(ids);
    for (const id of this.dirty) if (!ids.has(id)) this.dirty.delete(id);
    for (const id of this.failed.keys()) if (!ids.has(id)) this.failed.delete(id);
    const now = this.now();
    const due: Candidate[] = [];
    for (const id of ids) {
      const c = this.candidate(id, now);
      if (c) due.push(c);
    }
    const queue = due.sort((a, b) => (before(a, b) ? -1 : 1)).map((c) => c.id);
    this.pass = { queue, head: 0, taken: new Set() };
  }

  /**
   * The best due directory of the pass's queue and the dirty set, without
   * listing. The queue was ordered when the pass began; what changed since is
   * checked here: a queued directory measured meanwhile (a command's check) is
   * dropped, one marked dirty is also in the dirty set, which is scanned in
   * full (a directory created after the listing and marked dirty is measured
   * in this pass; one not marked waits for the next listing). A queued
   * directory removed meanwhile is still picked: its check finds it missing
   * and forgets its size.
   */
  private pick(now: number): string | undefined {
    const pass = this.pass!;
    let best: Candidate | undefined;
    while (pass.head < pass.queue.length) {
      const id = pass.queue[pass.head]!;
      best = pass.taken.has(id) ? undefined : this.candidate(id, now);
      if (best) break;
      pass.head++;
    }
    for (const id of this.dirty) {
      const c = this.candidate(id, now);
      if (c && (!best || before(c, best))) best = c;
    }
    return best?.id;
  }

  /** The directory's rank and last measurement if it is due now. */
  private candidate(id: string, now: number): Candidate | undefined {
    // A failed attempt counts as a measurement: the directory waits like the others.
    const last = Math.max(this.root.measuredAt(id) ?? -Infinity, this.failed.get(id)?.at ?? -Infinity);
    const rank = this.rank(id, now - last);
    return rank === undefined ? undefined : { id, rank, last };
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
    // Measured once per pass from the queue, even if gone (a missing directory stays never-measured).
    this.pass?.taken.add(id);
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
